import importlib
import os

import pytest
import torch

from examples.translation import pipeline as mt_pipeline
from fairseq_define.models.define_transformer import DefineTransformerModel
from fairseq_define.modules.define_embedding import DefineEmbedding
from fairseq_define.params import build_model
from tests import cli
from tests.conftest import data_dir

TINY_FLAGS = ("--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 64 --decoder-embed-dim 64 "
              "--encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 --encoder-attention-heads 2 "
              "--decoder-attention-heads 2 --lr 0.003 --warmup-updates 20")
TINY_DEFINE_FLAGS = "--define-map-dim 32 --define-expand-dim 128"


def load_example():
    return importlib.import_module("examples.translation.multi30k")


@pytest.fixture(scope="module")
def multi30k_slice(tmp_path_factory):
    source = data_dir("multi30k")
    dest = tmp_path_factory.mktemp("m30k-raw")
    for name, count in (("train", 3000), ("val", 100), ("test_2016_flickr", 100)):
        for lang in ("en", "de"):
            with open(os.path.join(source, f"{name}.{lang}"), encoding="utf-8") as f:
                lines = [next(f) for _ in range(count)]
            (dest / f"{name}.{lang}").write_text("".join(lines), encoding="utf-8")
    return str(dest)


@pytest.fixture(scope="module")
def example_run(multi30k_slice, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("m30k-run"))
    results = load_example().main(["--data", multi30k_slice, "--workdir", workdir, "--model", "both",
                                   "--vocab-size", "1000", "--max-update", "60", "--extra", TINY_FLAGS, "--define-extra", TINY_DEFINE_FLAGS,
                                   "--generate-extra", "--max-len-a 1.2 --max-len-b 10"])
    return workdir, results


def test_example_scores_every_test_sentence_for_both_models(example_run):
    workdir, results = example_run
    assert set(results) == {"baseline", "define"}
    for name, result in results.items():
        assert result["sentences"] == 100
        assert 0.0 <= result["bleu"] <= 100.0 and 0.0 < result["chrf"] <= 100.0
        assert "nrefs:1" in result["bleu_signature"] and "tok:13a" in result["bleu_signature"]
        assert result["params"]["total"] == sum(result["params"][p] for p in ("map", "define", "context", "output"))
        hypotheses = mt_pipeline.read_lines(os.path.join(workdir, f"hypotheses-{name}.de"))
        assert len(hypotheses) == 100 and "▁" not in "".join(hypotheses)  # detokenized
    assert results["baseline"]["params"]["define"] == 0 and results["define"]["params"]["define"] > 0
    assert results["define"]["params"]["map"] < results["baseline"]["params"]["map"]


def test_checkpoint_uses_shared_define_embedding(example_run):
    workdir, _ = example_run
    state = torch.load(os.path.join(workdir, "checkpoints-define", "checkpoint_last.pt"), map_location="cpu")
    model = state["model"]
    assert "encoder.embed_tokens.unit.layers.0.weight" in model
    assert model["encoder.embed_tokens.map.weight"].shape[1] == 32  # the Map is n-dim
    assert "decoder.project_out_dim.weight" in model and model["decoder.project_out_dim.weight"].shape == (32, 64)


def test_interactive_translates_from_the_checkpoint(example_run):
    workdir, _ = example_run
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=os.path.join(workdir, "spm", "joint1000.model"))
    line = " ".join(processor.encode("A man is riding a bike.", out_type=str))
    out = cli.run("interactive", os.path.join(workdir, "data-bin"), "--path",
                  os.path.join(workdir, "checkpoints-define", "checkpoint_last.pt"), "--source-lang", "en",
                  "--target-lang", "de", "--beam", 2, "--max-len-b", 10, "--remove-bpe", "sentencepiece", "--cpu",
                  stdin=line + "\n")
    assert any(l.startswith("H-0\t") for l in out.stdout.splitlines())


def test_hub_from_pretrained_translates(example_run):
    from fairseq.models.transformer import TransformerModel

    workdir, _ = example_run
    model = TransformerModel.from_pretrained(os.path.join(workdir, "checkpoints-define"), "checkpoint_last.pt",
                                             data_name_or_path=os.path.join(workdir, "data-bin"),
                                             user_dir=cli.PLUGIN, bpe="sentencepiece",
                                             sentencepiece_model=os.path.join(workdir, "spm", "joint1000.model"))
    model.eval()
    out = model.translate("A dog runs in the grass.", beam=2, max_len_b=10)
    assert isinstance(out, str) and "▁" not in out
    assert isinstance(model.models[0].encoder.embed_tokens, DefineEmbedding)


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
    from fairseq_define.modules.define_embedding import TiedMapOutput

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
