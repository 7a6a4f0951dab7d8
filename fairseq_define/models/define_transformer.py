"""DeFINE Transformer for translation: fairseq's TransformerModel with DeFINE units as encoder and decoder inputs.

The standard recipes' flags work unchanged: with `--share-all-embeddings` the encoder and decoder share one
DefineEmbedding (its Map table and its unit; `--define-separate-units` gives each side its own unit over the one
shared Map), and the decoder scores in the Map's space (decoder output m -> d, then d -> n through the transposed Map
projection when d != n, against the Map table), as it also does with `--share-decoder-input-output-embed`.
"""

import argparse
import inspect
from dataclasses import MISSING, field, make_dataclass
from typing import Optional

from omegaconf import OmegaConf

from fairseq.dataclass import FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerModel
from fairseq.models.transformer.transformer_legacy import (
    tiny_architecture,
    transformer_iwslt_de_en,
    transformer_vaswani_wmt_en_de_big,
    transformer_wmt_en_de,
)
from fairseq.utils import safe_getattr

from fairseq_define.models.decoder_dims import check_decoder_dims
from fairseq_define.models.define_options import (
    DefineEmbeddingConfig,
    build_define_embedding,
    derive_unset,
    match_host_scale,
    paper_sizes,
    set_define_defaults,
    unit_input_dim,
)
from fairseq_define.modules.tied_map_output import TiedMapOutput

# Options that fairseq's architecture functions derive from others when they are not given; unset (None) here.
FAMILY = "define_transformer"
DERIVED = {
    "decoder_embed_dim": "--encoder-embed-dim",
    "decoder_ffn_embed_dim": "--encoder-ffn-embed-dim",
    "decoder_input_dim": "--decoder-embed-dim",
    "decoder_output_dim": "d when the output is tied to the Map, else --decoder-embed-dim",
}


def _flat_transformer_fields():
    """fairseq's TransformerConfig under the flat names of `--arch transformer` (encoder.embed_dim ->
    encoder_embed_dim, quant_noise.pq -> quant_noise_pq): (flat name, dataclass field) for each option."""
    for name, f in TransformerConfig.__dataclass_fields__.items():
        if inspect.isclass(f.type) and issubclass(f.type, FairseqDataclass):
            for sub_name, sub in f.type.__dataclass_fields__.items():
                yield f"{name}_{sub_name}", sub
        else:
            yield name, f


def _fields():
    for name, f in _flat_transformer_fields():
        if name.startswith("_") or "_name" in name:
            continue
        if name in DERIVED:
            yield name, Optional[int], field(default=None, metadata={
                "help": f"{f.metadata.get('help', name)} (default: {DERIVED[name]})"})
        elif f.default_factory is not MISSING:
            yield name, f.type, field(default_factory=f.default_factory, metadata=f.metadata)
        else:
            yield name, f.type, field(default=f.default, metadata=f.metadata)
    yield "define_separate_units", bool, field(default=False, metadata={
        "help": "DeFINE: with --share-all-embeddings, share only the Map table; each side its own unit"})


DefineTransformerConfig = make_dataclass("DefineTransformerConfig", list(_fields()), bases=(DefineEmbeddingConfig,))
DefineTransformerConfig.__doc__ = ("fairseq's Transformer options (flat, as `--arch transformer` takes them) and the "
                                   "--define-* options: the one config of `--arch define_transformer`, from the "
                                   "command line or a fairseq-hydra-train YAML.")


@register_model("define_transformer", dataclass=DefineTransformerConfig)
class DefineTransformerModel(TransformerModel):
    @classmethod
    def add_args(cls, parser):
        gen_parser_from_dataclass(parser, DefineTransformerConfig(), delete_default=True)

    @classmethod
    def build_model(cls, args, task):
        if OmegaConf.is_config(args):  # fairseq's legacy TransformerModel carries extra options only in a Namespace
            args = argparse.Namespace(**OmegaConf.to_container(args, resolve=True))
        # the options a bare `--arch define_transformer` or a hydra config leaves unset
        derive_unset(args, decoder_embed_dim=args.encoder_embed_dim, decoder_ffn_embed_dim=args.encoder_ffn_embed_dim)
        define_translation_defaults(args)
        derive_unset(args, decoder_input_dim=args.decoder_embed_dim, decoder_output_dim=args.decoder_embed_dim)
        model = super().build_model(args, task)
        match_host_scale(model.encoder)
        match_host_scale(model.decoder)
        return model

    @classmethod
    def build_embedding(cls, args, dictionary, embed_dim, path=None):
        if path:
            raise ValueError("--encoder-embed-path/--decoder-embed-path (pretrained embeddings) need a lookup table, "
                             "not a DeFINE unit")
        return build_define_embedding(args, dictionary, embed_dim, FAMILY)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        if safe_getattr(args, "share_all_embeddings", False) and safe_getattr(args, "define_separate_units", False):
            # the one Map table, and a unit of the decoder's own
            embed_tokens = build_define_embedding(args, tgt_dict, args.decoder_embed_dim, FAMILY,
                                                  shared_map=embed_tokens)
        tied = safe_getattr(args, "share_all_embeddings", False) \
            or safe_getattr(args, "share_decoder_input_output_embed", False)
        check_decoder_dims(args, tied)
        decoder = super().build_decoder(args, tgt_dict, embed_tokens)
        if tied and embed_tokens.map_proj is not None:
            decoder.output_projection = TiedMapOutput(embed_tokens)
        return decoder


def define_translation_defaults(args):
    """define_* defaults, and a decoder output in the Map's d-dim space when the output is tied to the Map."""
    set_define_defaults(args)
    args.define_separate_units = safe_getattr(args, "define_separate_units", False)
    if safe_getattr(args, "share_all_embeddings", False) \
            or safe_getattr(args, "share_decoder_input_output_embed", False):
        derive_unset(args, decoder_output_dim=unit_input_dim(args))


@register_model_architecture("define_transformer", "define_transformer_wmt_en_de")
def define_transformer_wmt_en_de(args):
    """transformer_wmt_en_de (6+6 layers, 512 wide) with the paper's unit: n = 128, k = 1024, N = 3."""
    define_translation_defaults(args)
    transformer_wmt_en_de(args)


@register_model_architecture("define_transformer", "define_transformer_vaswani_wmt_en_de_big")
def define_transformer_vaswani_wmt_en_de_big(args):
    """transformer_vaswani_wmt_en_de_big (6+6 layers, 1024 wide) with n = 128, k = 1024, N = 3."""
    define_translation_defaults(args)
    transformer_vaswani_wmt_en_de_big(args)


@register_model_architecture("define_transformer", "define_transformer_iwslt_de_en")
def define_transformer_iwslt_de_en(args):
    """transformer_iwslt_de_en (6+6 layers, 512 wide, FFN 1024, 4 heads) with n = 128, k = 1024, N = 3."""
    define_translation_defaults(args)
    transformer_iwslt_de_en(args)


@register_model_architecture("define_transformer", "define_transformer_tiny")
def define_transformer_tiny(args):
    """transformer_tiny (2+2 layers, 64 wide) with n = 32, k = 128, N = 2. For tests and CPU smoke runs."""
    args.define_map_dim = safe_getattr(args, "define_map_dim", 32)
    paper_sizes(args, FAMILY, define_expand_dim=128, define_depth=2)
    define_translation_defaults(args)
    tiny_architecture(args)
