"""Transformer-XL language model (Dai et al., 2019) with a DeFINE input, for fairseq: `define_transformer_xl`.

The paper's Transformer-XL rows (DeFINE Table 2) as one fairseq model:

    tokens -> DefineEmbedding -> x sqrt(d_model) -> TransformerXLDecoderStack (memory) -> [m -> d] -> tied
    adaptive softmax (d -> n, scored against the Map table)

Input. A `DefineEmbedding` whose Map is ONE lookup table [V, n] (the reference's div_val = 1 `AdaptiveEmbedding`:
every band n wide, so the bands are row ranges of one table) followed by one bias-free n -> d projection when
d != n (d = `--define-input-dim`, default `--decoder-embed-dim`); then the DeFINE unit d -> ... -> k -> m, or, with
`--define-transform none` (the baselines), nothing (a d -> m projection only if d != m). The vocabulary bands
live in the softmax (`--adaptive-cutoff`), not in the Map: fairseq's AdaptiveInput would give every band its own
n -> d projection (even when n == d), which is not Transformer-XL's parameterisation (and not its count).

Scale. The embedding is multiplied by sqrt(d_model) in both rows (with and without DeFINE), as Transformer-XL's
AdaptiveEmbedding (`emb_scale = d_proj ** 0.5`) and fairseq do; `--no-scale-embedding` turns it off. This is
consistent for both rows because DefineEmbedding produces fairseq-scaled vectors either way: the lookup table is
initialised N(0, n^-0.5) and the unit's output is calibrated to std m^-0.5, so the stack's input has std ~1.

Output. `TiedAdaptiveLogSoftmax` (module `decoder.adaptive_softmax`) over the Map table itself, with the Map's
n -> d projection (its weight [d, n], i.e. the transpose of the input map) tied to the tail bands; the head band
keeps its own d -> n projection as in the reference's WikiText-103 setting (`--tie-head-proj` ties it too). If
d != m, a bias-free `decoder.project_out_dim` m -> d comes first. Own output parameters: a per-token bias [V],
the cluster logits, untied projections. `net_output[0]` is the d-dim feature (never logits): fairseq's
`get_normalized_probs` applies the softmax (`adaptive_softmax.get_log_prob`, eval-lm and generation), the
criterion `define_bptt_nll` calls its `nll` (training, no [B, T, V] tensor).

State (the `bptt_lm` contract, `StreamStateMixin`): without `incremental_state`, `forward` continues the memory
of the current mode ("train" / "valid") and stores the new one detached. With `incremental_state`
(SequenceGenerator: the whole prefix at every step), only the tokens not seen yet are run, against a cache of
earlier positions kept in `incremental_state`: the last `mem_len + tokens_per_sample - 1` positions, so that the
newest token sees at most `mem_len + tokens_per_sample` keys, the widest context a position sees in training.
For a prefix that fits that window, incremental decoding equals one full forward (without stream memory).

Parameter names (for `fairseq_define.params.count_parts`): `decoder.embed_tokens.*` (map / define),
`decoder.xl.*` (the stack: context), `decoder.adaptive_softmax.*` and `decoder.project_out_dim.*` (output).
"""

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from fairseq.models import (
    FairseqIncrementalDecoder,
    FairseqLanguageModel,
    register_model,
    register_model_architecture,
)
from fairseq.utils import safe_getattr
from omegaconf import II

from fairseq_define.models.cutoffs import parse_cutoffs
from fairseq_define.models.define_options import (
    DefineEmbeddingConfig,
    define_config,
    define_field,
    match_host_scale,
    paper_sizes,
    set_dataclass_defaults,
)
from fairseq_define.modules.define_embedding import DefineEmbedding
from fairseq_define.modules.stream_state import StreamStateMixin
from fairseq_define.modules.tied_adaptive_softmax import TiedAdaptiveLogSoftmax
from fairseq_define.modules.transformer_xl import TransformerXLDecoderStack

logger = logging.getLogger(__name__)

FAMILY = "define_transformer_xl"
MAX_POSITIONS = 1_000_000  # relative positions: no table bounds the length


@dataclass
class TransformerXLLanguageModelConfig(DefineEmbeddingConfig):
    decoder_layers: int = field(default=16, metadata={"help": "number of Transformer-XL layers (n_layer)"})
    decoder_embed_dim: int = field(default=384, metadata={"help": "model width d_model (m)"})
    decoder_attention_heads: int = field(default=10, metadata={"help": "attention heads (n_head)"})
    decoder_head_dim: int = field(default=41, metadata={"help": "width of each head (d_head)"})
    decoder_ffn_embed_dim: int = field(default=1920, metadata={"help": "position-wise FF width (d_inner)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the input, positions, sublayers, output"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention probabilities (dropatt)"})
    decoder_normalize_before: bool = field(default=False, metadata={"help": "pre-norm layers (pre_lnorm)"})
    untie_r: bool = field(default=False, metadata={"help": "per-layer position biases u, v (else shared)"})
    mem_len: int = field(default=150, metadata={"help": "memory length (positions per layer kept across batches); "
                                                        "0: no memory"})
    clamp_len: int = field(default=-1, metadata={"help": "cap relative distances at this value (-1: no cap)"})
    same_length: bool = field(default=False, metadata={"help": "every query attends over the same number of keys"})
    adaptive_cutoff: str = field(default="20000,40000,200000", metadata={
        "help": "comma-separated band cutoffs of the tied adaptive softmax (cutoffs >= the vocabulary size are "
                "dropped); empty: one softmax"})
    tie_head_proj: bool = field(default=False, metadata={
        "help": "also tie the head band's d -> n projection to the Map's (the reference ties the tail bands only)"})
    no_scale_embedding: bool = field(default=False, metadata={"help": "do not multiply embeddings by sqrt(d_model)"})
    tokens_per_sample: int = II("task.tokens_per_sample")
    # DeFINE (Table 2): Map n = 128 projected to d = d_model (--define-input-dim unset), unit N = 3, k = 4096.
    # g_max = 128: the schedule's unit is then 2.10M parameters, the nearest to the paper's 1.92M (g_max 64: 2.61M;
    # 256 does not divide d).
    define_map_dim: int = define_field("define_map_dim", 128)
    # d defaults to m here, to n in the other DeFINE models: Transformer-XL's AdaptiveEmbedding projects its table to
    # d_model (d_proj) and its tied softmax scores d_model-wide states, so the paper's Table-2 rows (and every
    # checkpoint of this model) have d = m; the others follow fairseq's models, whose tied output scores n-wide ones.
    define_input_dim: Optional[int] = field(default=None, metadata={
        "help": "DeFINE: d, the width of the Map's output (n -> d projection); default here: --decoder-embed-dim "
                "(Transformer-XL's projection to d_model), not --define-map-dim as in the other DeFINE models"})
    # the paper's unit's sizes here (k = 4096, N = 3, g_max = 128): base_transformer_xl_architecture


def cutoffs_within(value, vocab_size: int) -> List[int]:
    """`--adaptive-cutoff` (see `parse_cutoffs`) less the cutoffs at or beyond the vocabulary, dropped with a
    warning, so that one architecture runs on any vocabulary."""
    cutoffs = parse_cutoffs(value, "--adaptive-cutoff")
    kept = [c for c in cutoffs if c < vocab_size]
    if len(kept) < len(cutoffs):
        logger.warning(f"--adaptive-cutoff={value}: dropped the cutoffs >= the vocabulary size {vocab_size}, "
                       f"keeping {kept or 'none (one softmax)'}")
    return kept


@contextmanager
def _memory_length(stack: TransformerXLDecoderStack, mem_len: int):
    saved = stack.mem_len
    stack.mem_len = mem_len
    try:
        yield
    finally:
        stack.mem_len = saved


class TransformerXLDecoder(StreamStateMixin, FairseqIncrementalDecoder):
    """tokens [B, T] -> (features [B, T, d], None), with Transformer-XL memory; see the module docstring."""

    def __init__(self, cfg, dictionary, embed_tokens: DefineEmbedding):
        super().__init__(dictionary)
        m = cfg.decoder_embed_dim
        if embed_tokens.embedding_dim != m:
            raise ValueError(f"the embedding is {embed_tokens.embedding_dim} wide, --decoder-embed-dim is {m}")
        if embed_tokens.is_adaptive:
            raise ValueError("define_transformer_xl needs a lookup Map (the bands are in the softmax: "
                             "--adaptive-cutoff)")
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(m)
        match_host_scale(self)
        self.padding_idx = dictionary.pad()
        self.window = max(int(cfg.mem_len), 0) + int(safe_getattr(cfg, "tokens_per_sample", 150))
        self.xl = TransformerXLDecoderStack(
            n_layer=cfg.decoder_layers, d_model=m, n_head=cfg.decoder_attention_heads, d_head=cfg.decoder_head_dim,
            d_inner=cfg.decoder_ffn_embed_dim, dropout=cfg.dropout, dropatt=cfg.attention_dropout,
            pre_lnorm=cfg.decoder_normalize_before, untie_r=cfg.untie_r, mem_len=cfg.mem_len,
            clamp_len=cfg.clamp_len, same_length=cfg.same_length,
        )
        d = embed_tokens.input_dim
        self.project_out_dim = nn.Linear(m, d, bias=False) if d != m else None
        cutoffs = cutoffs_within(cfg.adaptive_cutoff, len(dictionary))
        map_proj = embed_tokens.map_proj  # nn.Linear(n, d): weight [d, n], i.e. P [d_model = d, n]
        tie_projs = None
        if map_proj is not None:
            tie_projs = [bool(cfg.tie_head_proj)] + [True] * len(cutoffs)
        self.adaptive_softmax = TiedAdaptiveLogSoftmax(
            embed_tokens.map.weight, cutoffs, d_model=d,
            proj=None if map_proj is None else map_proj.weight, tie_projs=tie_projs,
        )
        self._warned_batch = False

    # ---------------------------------------------------------------- forward
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(tokens) * self.embed_scale

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.project_out_dim is None else self.project_out_dim(h)

    def forward(self, prev_output_tokens: torch.Tensor, src_lengths=None,
                incremental_state: Optional[Dict[str, Dict[str, Optional[torch.Tensor]]]] = None,
                features_only: bool = False, **unused):
        """prev_output_tokens [B, T] -> (features [B, T, d], None). Features either way: the adaptive softmax is
        applied by `get_normalized_probs` or by the criterion (`features_only` is accepted for fairseq's API)."""
        if incremental_state is not None:
            return self._forward_incremental(prev_output_tokens, incremental_state), None
        mems = self._stream_mems(prev_output_tokens.size(0))
        h, new_mems = self.xl(self.embed(prev_output_tokens), mems)
        self.set_stream_state(new_mems)
        return self.features(h), None

    def _stream_mems(self, batch_size: int) -> Optional[List[torch.Tensor]]:
        mems = self.get_stream_state()
        if mems is not None and mems[0].size(0) != batch_size:
            if not self._warned_batch:
                self._warned_batch = True
                logger.warning(f"define_transformer_xl: the memory holds {mems[0].size(0)} streams, this batch has "
                               f"{batch_size}; starting from an empty memory (bptt_lm keeps the batch size fixed)")
            return None
        return mems

    def _forward_incremental(self, tokens: torch.Tensor, incremental_state) -> torch.Tensor:
        cache = self.get_incremental_state(incremental_state, "xl") or {}
        seen = int(cache["seen"]) if "seen" in cache else 0
        mems = [cache[f"mem{i}"] for i in range(self.xl.n_layer)] if seen > 0 else None
        new = tokens[:, seen:]
        if new.size(1) == 0:
            raise ValueError(f"define_transformer_xl: incremental step without a new token ({seen} already seen)")
        M = 0 if mems is None else mems[0].size(1)
        mask = self.xl.causal_mask(new.size(1), M, device=tokens.device)  # with the model's mem_len (same_length)
        with _memory_length(self.xl, max(self.window - 1, 1)):
            h, new_mems = self.xl(self.embed(new), mems, attn_mask=mask)
        state = {f"mem{i}": mem for i, mem in enumerate(new_mems)}
        state["seen"] = torch.tensor(seen + new.size(1))
        self.set_incremental_state(incremental_state, "xl", state)
        return self.features(h)

    @torch.jit.unused
    def reorder_incremental_state(self, incremental_state, new_order: torch.Tensor):
        cache = self.get_incremental_state(incremental_state, "xl")
        if cache is None:
            return
        state = {k: (v if k == "seen" else v.index_select(0, new_order)) for k, v in cache.items()}
        self.set_incremental_state(incremental_state, "xl", state)

    def max_positions(self) -> int:
        return MAX_POSITIONS

    def output_layer(self, features, **kwargs):
        return features


@register_model("define_transformer_xl", dataclass=TransformerXLLanguageModelConfig)
class TransformerXLLanguageModel(FairseqLanguageModel):
    """Transformer-XL LM with a DefineEmbedding input and a tied adaptive softmax; see the module docstring."""

    @classmethod
    def build_model(cls, cfg, task):
        base_transformer_xl_architecture(cfg)
        d = cfg.define_input_dim or cfg.decoder_embed_dim  # the default d = m: see the config's define_input_dim
        if cfg.decoder_embed_dim % 2:
            raise ValueError(f"--decoder-embed-dim={cfg.decoder_embed_dim} must be even (sinusoid positions)")
        config = define_config(cfg, cfg.decoder_embed_dim, FAMILY, input_dim=d)
        dictionary = task.target_dictionary
        embed_tokens = DefineEmbedding(len(dictionary), dictionary.pad(), cfg.decoder_embed_dim, config=config)
        return cls(TransformerXLDecoder(cfg, dictionary, embed_tokens))

    def reset_stream_state(self, mode: Optional[str] = None):
        self.decoder.reset_stream_state(mode)

    def max_positions(self):
        return MAX_POSITIONS


def base_transformer_xl_architecture(args):
    """The dataclass defaults (the paper's DeFINE Transformer-XL, Table 2), for the legacy argparse path, where an
    architecture sets what the user did not. User flags and checkpoint values win."""
    paper_sizes(args, FAMILY, define_expand_dim=4096, define_depth=3, define_max_groups=128)
    set_dataclass_defaults(args, TransformerXLLanguageModelConfig)


@register_model_architecture("define_transformer_xl", "define_transformer_xl_wt103")
def define_transformer_xl_wt103(args):
    """Paper Table 2, DeFINE rows: 16 layers, d_model 384, 10 heads x 41, d_inner 1920, cutoffs 20000,40000,200000,
    Map n = 128 (`--define-map-dim`) projected to d = 384, DeFINE N = 3, k = 4096, g_max = 128. With
    `--define-transform none` the Table 2 adaptive-input baselines (n = 384: 139,329,550 parameters at V =
    267,735)."""
    base_transformer_xl_architecture(args)


@register_model_architecture("define_transformer_xl", "transformer_xl_wt103")
def transformer_xl_wt103(args):
    """The standard Transformer-XL base on WikiText-103 (Dai et al.; paper Table 2's "standard" row, 151.11M): 16
    layers, d_model 410, 10 heads x 41, d_inner 2100, tied adaptive softmax (div_val 1) with cutoffs
    20000,40000,200000, no DeFINE unit, n = d = d_model."""
    args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", 410)
    args.decoder_ffn_embed_dim = safe_getattr(args, "decoder_ffn_embed_dim", 2100)
    args.define_transform = safe_getattr(args, "define_transform", "none")
    args.define_map_dim = safe_getattr(args, "define_map_dim", args.decoder_embed_dim)
    base_transformer_xl_architecture(args)


@register_model_architecture("define_transformer_xl", "define_transformer_xl_tiny")
def define_transformer_xl_tiny(args):
    """For tests and CPU runs: 2 layers, d_model 64, 4 heads x 16, d_inner 128, memory 32, cutoffs 2000,10000
    (dropped on smaller vocabularies), DeFINE n = 32 -> d = 64, N = 2, k = 128, g_max = 4."""
    args.decoder_layers = safe_getattr(args, "decoder_layers", 2)
    args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", 64)
    args.decoder_attention_heads = safe_getattr(args, "decoder_attention_heads", 4)
    args.decoder_head_dim = safe_getattr(args, "decoder_head_dim", 16)
    args.decoder_ffn_embed_dim = safe_getattr(args, "decoder_ffn_embed_dim", 128)
    args.mem_len = safe_getattr(args, "mem_len", 32)
    args.adaptive_cutoff = safe_getattr(args, "adaptive_cutoff", "2000,10000")
    args.define_map_dim = safe_getattr(args, "define_map_dim", 32)
    paper_sizes(args, FAMILY, define_expand_dim=128, define_depth=2, define_max_groups=4)
    base_transformer_xl_architecture(args)
