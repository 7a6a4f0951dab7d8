"""DeFINE Transformer for translation: fairseq's TransformerModel with DeFINE units as encoder and decoder inputs.

The standard recipes' flags work unchanged: with `--share-all-embeddings` the encoder and decoder share one
DefineEmbedding (its Map table and its unit; `--define-separate-units` gives each side its own unit over the one
shared Map), and the decoder scores in the Map's space (decoder output m -> d, then d -> n through the transposed Map
projection when d != n, against the Map table), as it also does with `--share-decoder-input-output-embed`.
"""

from dataclasses import dataclass, field

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer.transformer_legacy import (
    base_architecture,
    tiny_architecture,
    transformer_iwslt_de_en,
    transformer_vaswani_wmt_en_de_big,
    transformer_wmt_en_de,
)
from fairseq.utils import safe_getattr

from fairseq_define.models.define_options import (
    DefineEmbeddingConfig,
    build_define_embedding,
    set_define_defaults,
    unit_input_dim,
)
from fairseq_define.modules.define_embedding import TiedMapOutput


@dataclass
class DefineTranslationConfig(DefineEmbeddingConfig):
    define_separate_units: bool = field(
        default=False,
        metadata={"help": "DeFINE: with --share-all-embeddings, share only the Map table; each side its own unit"},
    )


@register_model("define_transformer")
class DefineTransformerModel(TransformerModel):
    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        gen_parser_from_dataclass(parser, DefineTranslationConfig(), delete_default=True)

    @classmethod
    def build_embedding(cls, args, dictionary, embed_dim, path=None):
        if path:
            raise ValueError("--encoder-embed-path/--decoder-embed-path (pretrained embeddings) need a lookup table, "
                             "not a DeFINE unit")
        return build_define_embedding(args, dictionary, embed_dim)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        if safe_getattr(args, "share_all_embeddings", False) and safe_getattr(args, "define_separate_units", False):
            # the one Map table, and a unit of the decoder's own
            embed_tokens = build_define_embedding(args, tgt_dict, args.decoder_embed_dim, shared_map=embed_tokens)
        tied = safe_getattr(args, "share_all_embeddings", False) or safe_getattr(args, "share_decoder_input_output_embed", False)
        if tied and args.decoder_output_dim != unit_input_dim(args):
            raise ValueError(
                f"--decoder-output-dim={args.decoder_output_dim} contradicts the output tied to the Map, which "
                f"scores d={unit_input_dim(args)}-dim states (--define-input-dim / --define-map-dim); drop --decoder-output-dim"
            )
        if safe_getattr(args, "decoder_input_dim", args.decoder_embed_dim) != args.decoder_embed_dim:
            raise ValueError(
                f"--decoder-input-dim={args.decoder_input_dim} has no place in a DeFINE model: its input is "
                f"--decoder-embed-dim={args.decoder_embed_dim} wide; set the Map with --define-map-dim and the "
                f"unit's input with --define-input-dim"
            )
        decoder = super().build_decoder(args, tgt_dict, embed_tokens)
        if tied and embed_tokens.map_proj is not None:
            decoder.output_projection = TiedMapOutput(embed_tokens)
        return decoder


def define_translation_defaults(args):
    """define_* defaults, and a decoder output in the Map's d-dim space when the output is tied to the Map."""
    set_define_defaults(args)
    args.define_separate_units = safe_getattr(args, "define_separate_units", False)
    if safe_getattr(args, "share_all_embeddings", False) or safe_getattr(args, "share_decoder_input_output_embed", False):
        args.decoder_output_dim = safe_getattr(args, "decoder_output_dim", unit_input_dim(args))


@register_model_architecture("define_transformer", "define_transformer")
def define_base_architecture(args):
    define_translation_defaults(args)
    base_architecture(args)


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
    args.define_expand_dim = safe_getattr(args, "define_expand_dim", 128)
    args.define_depth = safe_getattr(args, "define_depth", 2)
    define_translation_defaults(args)
    tiny_architecture(args)
