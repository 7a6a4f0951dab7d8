"""The DeFINE translation model: shared and separate embeddings, the tied output, incremental decoding, the paper's
architectures (the Multi30k study end to end: tests/test_multi30k_study.py)."""

import pytest
import torch

from fairseq_define.models.define_transformer import DefineTransformerModel
from fairseq_define.params import build_model


def build(*flags, vocab=120):
    model, _ = build_model(["--arch", "define_transformer_tiny", "--vocab-size", str(vocab), "--share-all-embeddings",
                            "--dropout", "0", *map(str, flags)], device="cpu")
    return model


def test_share_all_embeddings_shares_map_and_unit():
    model = build()
    assert isinstance(model, DefineTransformerModel)
    encoder_embed, decoder_embed = model.encoder.embed_tokens, model.decoder.embed_tokens
    assert encoder_embed is decoder_embed
    assert model.decoder.output_projection.weight is encoder_embed.map.weight  # scored in the Map's space
    assert model.decoder.project_out_dim.weight.shape == (32, 64)


@pytest.mark.parametrize("transform", ["define", "none"])
def test_map_projected_to_d_is_shared_and_scores_through_the_transposed_projection(transform):
    """The Table-2 Map in translation: n = 16 projected to d = 64 = m, shared by encoder, decoder and output."""
    from fairseq_define.modules.tied_map_output import TiedMapOutput

    model = build("--define-map-dim", 16, "--define-input-dim", 64, "--define-transform", transform,
                  "--define-separate-units")
    encoder_embed, decoder_embed = model.encoder.embed_tokens, model.decoder.embed_tokens
    assert encoder_embed.map is decoder_embed.map and encoder_embed.map_proj is decoder_embed.map_proj
    output = model.decoder.output_projection
    assert isinstance(output, TiedMapOutput) and output.weight is encoder_embed.map.weight
    assert model.decoder.project_out_dim is None  # m == d
    tokens = torch.randint(4, 120, (2, 5))
    logits, _ = model(tokens, torch.full((2,), 5), tokens)
    assert logits.shape == (2, 5, 120)


def test_separate_units_share_only_the_map():
    model = build("--define-separate-units")
    encoder_embed, decoder_embed = model.encoder.embed_tokens, model.decoder.embed_tokens
    assert encoder_embed is not decoder_embed and encoder_embed.unit is not decoder_embed.unit
    assert encoder_embed.map is decoder_embed.map
    assert model.decoder.output_projection.weight is encoder_embed.map.weight
    names = {n for n, _ in model.named_parameters()}
    assert "decoder.embed_tokens.unit.reduce.weight" in names and "decoder.embed_tokens.map.weight" not in names


def test_share_decoder_input_output_only():
    model, _ = build_model(["--arch", "define_transformer_tiny", "--vocab-size", "120", "--task", "translation",
                            "--share-decoder-input-output-embed"], device="cpu")
    assert model.encoder.embed_tokens is not model.decoder.embed_tokens
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.map.weight


def test_incremental_decoding_equals_full_decoder_forward():
    torch.manual_seed(0)
    model = build()
    model.eval()
    src = torch.randint(4, 120, (2, 7))
    src_lengths = torch.tensor([7, 7])
    prev = torch.randint(4, 120, (2, 9))
    with torch.no_grad():
        encoder_out = model.encoder(src, src_lengths=src_lengths)
        full, _ = model.decoder(prev, encoder_out=encoder_out)
        state = {}
        steps = [model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)[0]
                 for t in range(prev.shape[1])]
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("arch,embed", [("define_transformer_wmt_en_de", 512),
                                        ("define_transformer_vaswani_wmt_en_de_big", 1024),
                                        ("define_transformer_iwslt_de_en", 512)])
def test_paper_archs_build_with_the_papers_unit(arch, embed):
    model, _ = build_model(["--arch", arch, "--vocab-size", "32768", "--share-all-embeddings"])  # meta device
    unit = model.encoder.embed_tokens.unit
    assert [s.out_features for s in unit.specs] == [432, 728, 1024] and unit.output_dim == embed
    assert model.encoder.embed_tokens.map.weight.shape == (32768, 128)


def test_pretrained_embed_path_is_refused():
    with pytest.raises(ValueError, match="embed-path"):
        build("--encoder-embed-path", "/nonexistent")
