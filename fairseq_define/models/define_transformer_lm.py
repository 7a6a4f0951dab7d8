"""DeFINE Transformer language model: fairseq's TransformerLanguageModel with a DefineEmbedding as its input.

Input (docs/design.md#method, Table 2): the Map (a V x n table, or fairseq's AdaptiveInput with `--adaptive-input`,
band 0 n wide) projected to d = `--define-input-dim` (default n), then the unit d -> ... -> k -> m (or, with
`--define-transform none`, d -> m only if d != m: fairseq's own adaptive-input model, the control).

Output side (docs/design.md#method), tied to the Map: the decoder's m-dim state is projected m -> d and scored in
the Map's space: by an adaptive softmax tied to the adaptive Map (`--adaptive-input --tie-adaptive-weights`, with
`--tie-adaptive-proj` for the band projections), or against the Map table with `--share-decoder-input-output-embed`
(after d -> n, the transpose of the Map's projection, when d != n).
"""

import logging
from dataclasses import dataclass, field
from typing import Optional

from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import Linear, TransformerDecoder
from fairseq.models.transformer_lm import (
    DEFAULT_MAX_TARGET_POSITIONS,
    TransformerLanguageModel,
    TransformerLanguageModelConfig,
    base_lm_architecture,
    transformer_lm_baevski_wiki103,
    transformer_lm_gpt2_tiny,
)
from fairseq.utils import safe_getattr

from fairseq_define.models.cutoffs import parse_cutoffs
from fairseq_define.models.decoder_dims import check_decoder_dims
from fairseq_define.models.define_options import (
    DefineEmbeddingConfig,
    build_define_embedding,
    derive_unset,
    match_host_scale,
    paper_sizes,
    set_define_defaults,
    unit_input_dim,
    writable,
)
from fairseq_define.modules.tied_map_output import TiedMapOutput

FAMILY = "define_transformer_lm"

logger = logging.getLogger(__name__)


@dataclass
class DefineTransformerLanguageModelConfig(TransformerLanguageModelConfig, DefineEmbeddingConfig):
    # derived when not given (fairseq's dataclass has a fixed 512, which only its architecture functions correct)
    decoder_output_dim: Optional[int] = field(default=None, metadata={
        "help": "decoder output dimension (default: d when the output is tied to the Map, else --decoder-embed-dim)"})
    decoder_input_dim: Optional[int] = field(default=None, metadata={
        "help": "decoder input dimension (default and only value: --decoder-embed-dim)"})


@register_model("define_transformer_lm", dataclass=DefineTransformerLanguageModelConfig)
class DefineTransformerLanguageModel(TransformerLanguageModel):
    @classmethod
    def build_model(cls, args, task):
        """As TransformerLanguageModel.build_model, with a DefineEmbedding in place of its closed choice of
        embeddings, and the output kept in the Map's n-dim space when it is tied to the Map."""
        with writable(args):  # the options a bare `--arch define_transformer_lm` or a hydra config leaves unset
            define_base_lm_architecture(args)  # also derives the decoder input/output dims left unset
        tied = args.tie_adaptive_weights or args.share_decoder_input_output_embed
        if args.decoder_layers_to_keep:
            args.decoder_layers = len(args.decoder_layers_to_keep.split(","))
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(args, "tokens_per_sample", DEFAULT_MAX_TARGET_POSITIONS)
        if safe_getattr(args, "character_embeddings", False):
            raise ValueError("--character-embeddings cannot be combined with a DeFINE model")

        adaptive_cutoff = None
        if args.adaptive_input:
            adaptive_cutoff = parse_cutoffs(args.adaptive_input_cutoff, "--adaptive-input-cutoff") or None
        if args.tie_adaptive_weights:
            if not args.adaptive_input:
                raise ValueError("--tie-adaptive-weights needs --adaptive-input (the DeFINE Map is then adaptive)")
            if args.adaptive_softmax_cutoff != args.adaptive_input_cutoff:
                raise ValueError(
                    f"--adaptive-softmax-cutoff={args.adaptive_softmax_cutoff} must equal "
                    f"--adaptive-input-cutoff={args.adaptive_input_cutoff} with --tie-adaptive-weights"
                )
            if args.adaptive_softmax_factor != args.adaptive_input_factor:
                raise ValueError(
                    f"--adaptive-softmax-factor={args.adaptive_softmax_factor} must equal "
                    f"--adaptive-input-factor={args.adaptive_input_factor} with --tie-adaptive-weights"
                )
        if args.share_decoder_input_output_embed and args.adaptive_input:
            raise ValueError(
                "--share-decoder-input-output-embed needs a lookup Map; "
                "with --adaptive-input use --tie-adaptive-weights"
            )
        check_decoder_dims(args, tied)
        d = unit_input_dim(args)
        embed_tokens = build_define_embedding(
            args, task.source_dictionary, args.decoder_embed_dim, FAMILY, adaptive_cutoff, args.adaptive_input_factor
        )
        decoder = match_host_scale(TransformerDecoder(args, task.target_dictionary, embed_tokens, no_encoder_attn=True))
        if args.tie_adaptive_weights and decoder.project_out_dim is None and args.decoder_embed_dim != d:
            # fairseq builds no m -> d projection when adaptive weights are tied (it assumes m == d)
            decoder.project_out_dim = Linear(args.decoder_embed_dim, d, bias=False)
        if args.share_decoder_input_output_embed and embed_tokens.map_proj is not None:
            decoder.output_projection = TiedMapOutput(embed_tokens)
        return cls(decoder)


def define_lm_defaults(args):
    """define_* defaults, and a decoder output in the Map's d-dim space when the output is tied to the Map.
    Call before the stock architecture function, which would set decoder_output_dim = decoder_embed_dim."""
    set_define_defaults(args)
    if safe_getattr(args, "tie_adaptive_weights", False) \
            or safe_getattr(args, "share_decoder_input_output_embed", False):
        derive_unset(args, decoder_output_dim=unit_input_dim(args))


def define_base_lm_architecture(args):
    define_lm_defaults(args)
    base_lm_architecture(args)


@register_model_architecture("define_transformer_lm", "define_transformer_lm_wiki103")
def define_transformer_lm_wiki103(args):
    """fairseq's transformer_lm_wiki103 (16 layers, 1024 wide, adaptive input/softmax 20000,60000, tied) with
    DeFINE behind the adaptive-input Map: n = 128, k = 4096, N = 3 (the paper's WikiText-103 setting)."""
    args.define_map_dim = safe_getattr(args, "define_map_dim", 128)
    paper_sizes(args, FAMILY, define_expand_dim=4096, define_depth=3)
    args.adaptive_input = safe_getattr(args, "adaptive_input", True)  # as transformer_lm_baevski_wiki103 sets
    args.tie_adaptive_weights = safe_getattr(args, "tie_adaptive_weights", True)
    define_lm_defaults(args)
    transformer_lm_baevski_wiki103(args)


@register_model_architecture("define_transformer_lm", "define_transformer_lm_gpt2_tiny")
def define_transformer_lm_gpt2_tiny(args):
    """fairseq's transformer_lm_gpt2_tiny (2 layers, 64 wide) with a small DeFINE unit: n = 32, k = 128, N = 2,
    scored against the lookup Map (unless --adaptive-input). For tests and CPU smoke runs."""
    args.define_map_dim = safe_getattr(args, "define_map_dim", 32)
    paper_sizes(args, FAMILY, define_expand_dim=128, define_depth=2)
    if not safe_getattr(args, "adaptive_input", False):
        args.share_decoder_input_output_embed = safe_getattr(args, "share_decoder_input_output_embed", True)
    define_lm_defaults(args)
    transformer_lm_gpt2_tiny(args)
