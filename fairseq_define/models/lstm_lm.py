"""DeFINE LSTM language model (`--arch define_lstm_lm` and named archs): AWD-LSTM (Merity et al. 2018) and the
WikiText-103 LSTM of DeFINE Table 1a, with a DefineEmbedding as the input and the output tied to its Map.

    tokens -> DefineEmbedding (Map [+ n -> d] [+ unit d -> m]) -> embedding type dropout (--dropoute)
           -> LSTMStack m -> h_1 -> ... -> m (locked dropout --dropouti/--dropouth/--dropout, DropConnect --wdrop)
           -> [m -> d] -> output tied to the Map

Output (docs/design.md#method), always tied to the Map:
- lookup Map: logits = ((x W_out)[P^T]) E^T + b, with x the last LSTM layer's m-dim output, W_out the m -> d
  `project_out_dim` (absent when m == d), P the Map's n -> d projection (absent when d == n), E the V x n Map table
  and b a per-token output bias (V parameters, as in AWD-LSTM's decoder).
- adaptive Map (`--adaptive-softmax-cutoff`): the Map is fairseq's AdaptiveInput with those cutoffs and factor
  (--adaptive-softmax-factor), and the output is fairseq's `AdaptiveSoftmax(adaptive_inputs=embed_tokens,
  tie_proj=True)`: every band's table and tail projection are the Map's; the head's 3 (= #clusters) cluster logits
  have their own d-wide weights; no biases. Use `--criterion adaptive_loss` or `ar_tar_adaptive_loss` (and
  `--ddp-backend legacy_ddp`).
  I/O convention (the one that gives DeFINE Table 1a's counts exactly, e.g. 9,253,212 at n = d = 256,
  V = 267,735): band 0 has NO n -> d projection when n == d (it is the identity; fairseq's AdaptiveInput always
  builds one, 65,536 more parameters at n = 256). `--adaptive-input-band0-proj` restores fairseq's projection.

Parameter names keep `fairseq_define.params.count_parts` exact: `decoder.embed_tokens.*` is the map (and the unit),
`decoder.project_out_dim`, `decoder.output_projection.bias` and `decoder.adaptive_softmax.*` the output, and the
context is exactly the LSTM stack `decoder.lstm.*`.

State (`bptt_lm` contract, `StreamStateMixin`): without `incremental_state`, `forward` continues the (h, c) of the
current mode ("train" / "valid") and stores the new state detached; a stored state whose batch size differs from
the batch's (e.g. with fairseq's `language_modeling` task, whose batches are independent) is dropped and the batch
starts from zeros. With `incremental_state` (SequenceGenerator: fairseq-generate, interactive, hub sampling) the
(h, c) lives there, only the last token is fed once a state exists, and the stream state is left alone.
In training the decoder returns `extra["ar_tar"] = (dropped_last, raw_last)` for `ar_tar_cross_entropy`.

Embedding dropout (`--dropoute`, AWD-LSTM's `embedded_dropout`): in training, the embedding is computed on the
batch's unique ids, whole rows (token types) are dropped with `embedding_type_dropout` and the rest scaled by
1 / (1 - p), then gathered: a dropped type is zero at every position of the batch. For `--define-transform none`
without projections this equals dropping rows of the table; with a unit, it drops the unit's output rows.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import (
    FairseqIncrementalDecoder,
    FairseqLanguageModel,
    register_model,
    register_model_architecture,
)
from fairseq.modules import AdaptiveSoftmax
from fairseq.utils import safe_getattr

from fairseq_define.models.cutoffs import parse_cutoffs
from fairseq_define.models.define_options import (
    DefineEmbeddingConfig,
    build_define_embedding,
    paper_sizes,
    set_dataclass_defaults,
)
from fairseq_define.modules.awd_lstm import LSTMStack, embedding_type_dropout
from fairseq_define.modules.define_embedding import DefineEmbedding
from fairseq_define.modules.stream_state import StreamStateMixin
from fairseq_define.modules.tied_map_output import TiedMapOutput

FAMILY = "define_lstm_lm"
MAX_POSITIONS = 1_000_000  # an LSTM has no position limit; fairseq wants a number


@dataclass
class DefineLSTMLanguageModelConfig(DefineEmbeddingConfig):
    decoder_embed_dim: int = field(
        default=400, metadata={"help": "m: the embedding's output width, the first LSTM layer's input and the last "
                                       "LSTM layer's output width"})
    lstm_hidden_sizes: str = field(
        default="1150,1150", metadata={"help": "comma-separated hidden sizes of the inner LSTM layers (the first "
                                               "layer reads m, the last writes m): '1150,1150' is 3 layers "
                                               "m -> 1150 -> 1150 -> m; '' is one layer m -> m"})
    dropouti: float = field(default=0.4, metadata={"help": "locked dropout on the LSTM's input (the embedding)"})
    dropouth: float = field(default=0.25, metadata={"help": "locked dropout between LSTM layers"})
    dropout: float = field(default=0.4, metadata={"help": "locked dropout on the last LSTM layer's output"})
    wdrop: float = field(default=0.5, metadata={"help": "DropConnect on the LSTM hidden-to-hidden weights"})
    dropoute: float = field(
        default=0.1, metadata={"help": "embedding dropout: drop whole token types of the batch (on the embedding "
                                       "output over the batch's unique ids)"})
    adaptive_softmax_cutoff: Optional[str] = field(
        default=None, metadata={"help": "comma-separated band cutoffs, e.g. '20000,40000,200000': the Map is an "
                                        "adaptive input with these bands and the output an adaptive softmax tied "
                                        "to it (criterion adaptive_loss / ar_tar_adaptive_loss); none: a lookup "
                                        "Map and a full softmax tied to it"})
    adaptive_softmax_factor: float = field(
        default=4.0, metadata={"help": "band-width divisor of the adaptive Map / softmax"})
    adaptive_softmax_dropout: float = field(
        default=0.0, metadata={"help": "dropout inside the adaptive softmax's tail bands"})
    adaptive_input_band0_proj: bool = field(
        default=False, metadata={"help": "keep fairseq AdaptiveInput's n -> d projection of band 0 when n == d "
                                         "(default: band 0 is the identity then, the paper's I/O count)"})


def parse_sizes(text) -> List[int]:
    """'1150,1150' -> [1150, 1150]; '' or None -> []."""
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        return [int(s) for s in text]
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--lstm-hidden-sizes={text!r} must be comma-separated positive integers") from None
    if any(s < 1 for s in sizes):
        raise ValueError(f"--lstm-hidden-sizes={text!r} must be comma-separated positive integers")
    return sizes


class IdentityBandProjection(nn.Identity):
    """Band 0 of an adaptive Map without an n -> d projection (n == d). `weight` is None, so that
    `AdaptiveInput.weights_for_band(0)` returns (table, None), which fairseq's tied AdaptiveSoftmax head accepts."""

    weight = None


def drop_band0_projection(embedding: DefineEmbedding) -> bool:
    """Replace band 0's n -> d projection of an adaptive Map by the identity when n == d. Returns whether it did."""
    if not embedding.is_adaptive:
        return False
    first = embedding.map.embeddings[0]
    if first[0].embedding_dim != embedding.input_dim or isinstance(first[1], IdentityBandProjection):
        return False
    first[1] = IdentityBandProjection()
    return True


class DefineLSTMDecoder(StreamStateMixin, FairseqIncrementalDecoder):
    """tokens [B, T] -> (logits [B, T, V] or, with an adaptive softmax, features [B, T, d], extra).

    Args:
        dictionary: the vocabulary.
        embed_tokens: the DefineEmbedding (output width m = sizes[0]).
        sizes: LSTM widths [m, h_1, ..., m].
        dropouti, dropouth, dropout, wdrop: AWD-LSTM's locked dropouts and DropConnect (`LSTMStack`).
        dropoute: embedding type dropout (training only).
        adaptive_cutoff: band cutoffs of the adaptive Map (then a tied AdaptiveSoftmax), or None.
        adaptive_factor, adaptive_dropout: the AdaptiveSoftmax's factor and tail dropout.
    """

    def __init__(self, dictionary, embed_tokens: DefineEmbedding, sizes: List[int], dropouti: float = 0.0,
                 dropouth: float = 0.0, dropout: float = 0.0, wdrop: float = 0.0, dropoute: float = 0.0,
                 adaptive_cutoff: Optional[List[int]] = None, adaptive_factor: float = 4.0,
                 adaptive_dropout: float = 0.0):
        super().__init__(dictionary)
        if sizes[0] != embed_tokens.embedding_dim or sizes[-1] != embed_tokens.embedding_dim:
            raise ValueError(f"LSTM sizes {sizes} must start and end with the embedding width "
                             f"{embed_tokens.embedding_dim} (--decoder-embed-dim)")
        if not 0.0 <= dropoute < 1.0:
            raise ValueError(f"--dropoute={dropoute} must be in [0, 1)")
        self.embed_tokens = embed_tokens  # registered first: tied parameters are named (and counted) as the map's
        self.dropoute = dropoute
        self.lstm = LSTMStack(sizes, dropouti=dropouti, dropouth=dropouth, dropout=dropout, wdrop=wdrop)
        m, d = sizes[-1], embed_tokens.input_dim
        self.project_out_dim = nn.Linear(m, d, bias=False) if m != d else None
        if adaptive_cutoff is not None:
            if not embed_tokens.is_adaptive:
                raise ValueError("an adaptive softmax needs an adaptive Map (the same cutoffs)")
            self.adaptive_softmax = AdaptiveSoftmax(len(dictionary), d, list(adaptive_cutoff), adaptive_dropout,
                                                    factor=adaptive_factor, adaptive_inputs=embed_tokens,
                                                    tie_proj=True)
            self.output_projection = None
        else:
            self.adaptive_softmax = None
            self.output_projection = TiedMapOutput(embed_tokens, bias=True)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, prev_output_tokens, src_lengths=None, incremental_state=None, features_only: bool = False,
                **unused):
        x, extra = self.extract_features(prev_output_tokens, incremental_state=incremental_state)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> [B, T, m], with embedding type dropout in training."""
        if not (self.training and self.dropoute > 0):
            return self.embed_tokens(tokens)
        ids, inverse = torch.unique(tokens, return_inverse=True)
        rows = embedding_type_dropout(self.embed_tokens.embed_ids(ids), self.dropoute, training=True)
        return F.embedding(inverse, rows)

    def extract_features(self, prev_output_tokens, incremental_state=None, **unused):
        """tokens [B, T] -> (features [B, T, d], extra). See the module docstring for the state rules."""
        tokens = prev_output_tokens
        if incremental_state is not None:
            cached = self.get_incremental_state(incremental_state, "lstm_state")
            state = None
            if cached is not None:
                tokens = tokens[:, -1:]
                state = [(cached[f"h{i}"], cached[f"c{i}"]) for i in range(len(self.lstm.layers))]
        else:
            state = self.get_stream_state()
            if state is not None and state[0][0].size(1) != tokens.size(0):
                state = None  # a batch of other streams (other batch size): start from zeros
        out = self.lstm(self.embed(tokens), state)
        if incremental_state is not None:
            new_state: Dict[str, Optional[torch.Tensor]] = {}
            for i, (h, c) in enumerate(out.state):
                new_state[f"h{i}"], new_state[f"c{i}"] = h, c
            self.set_incremental_state(incremental_state, "lstm_state", new_state)
        else:
            self.set_stream_state(out.state)
        extra = {"attn": None, "inner_states": None}
        if self.training:
            extra["ar_tar"] = (out.dropped_outputs[-1], out.raw_outputs[-1])
        x = out.output
        if self.project_out_dim is not None:
            x = self.project_out_dim(x)
        return x, extra

    def output_layer(self, features, **unused):
        """features [B, T, d] -> logits [B, T, V]; with an adaptive softmax, the features themselves (fairseq's
        adaptive criteria and `get_normalized_probs` call the adaptive softmax)."""
        if self.adaptive_softmax is not None:
            return features
        return self.output_projection(features)

    def reorder_incremental_state(self, incremental_state, new_order):
        cached = self.get_incremental_state(incremental_state, "lstm_state")
        if cached is None:
            return
        reordered = {key: value.index_select(1, new_order) for key, value in cached.items()}
        self.set_incremental_state(incremental_state, "lstm_state", reordered)

    def max_positions(self):
        return MAX_POSITIONS


@register_model("define_lstm_lm", dataclass=DefineLSTMLanguageModelConfig)
class DefineLSTMLanguageModel(FairseqLanguageModel):
    """AWD-LSTM-style language model with a DeFINE (or plain, `--define-transform none`) input embedding and an
    output tied to its Map. See the module docstring."""

    @classmethod
    def build_model(cls, args, task):
        base_lstm_lm_architecture_defaults(args)
        dictionary = task.target_dictionary
        if task.source_dictionary is not None and len(task.source_dictionary) != len(dictionary):
            raise ValueError("define_lstm_lm ties input and output: the source and target dictionaries must agree")
        m = int(args.decoder_embed_dim)
        sizes = [m] + parse_sizes(args.lstm_hidden_sizes) + [m]
        cutoff = parse_cutoffs(args.adaptive_softmax_cutoff, "--adaptive-softmax-cutoff", len(dictionary)) or None
        factor = float(args.adaptive_softmax_factor)
        embed_tokens = build_define_embedding(args, dictionary, m, FAMILY, adaptive_cutoff=cutoff,
                                              adaptive_factor=factor)
        if cutoff is not None and not args.adaptive_input_band0_proj:
            drop_band0_projection(embed_tokens)
        decoder = DefineLSTMDecoder(
            dictionary, embed_tokens, sizes, dropouti=args.dropouti, dropouth=args.dropouth, dropout=args.dropout,
            wdrop=args.wdrop, dropoute=args.dropoute, adaptive_cutoff=cutoff, adaptive_factor=factor,
            adaptive_dropout=args.adaptive_softmax_dropout,
        )
        return cls(decoder)

    def reset_stream_state(self, mode: Optional[str] = None):
        """Forget the carried (h, c) of `mode` ("train" / "valid"; None: both). Called by the `bptt_lm` task."""
        self.decoder.reset_stream_state(mode)


# ------------------------------------------------------------------------------------------------ architectures
def base_lstm_lm_architecture_defaults(args):
    """Every model flag an architecture or the user left unset, at the dataclass defaults (AWD-LSTM on PTB's
    sizes and dropouts, the DefineConfig defaults for the unit)."""
    set_dataclass_defaults(args, DefineLSTMLanguageModelConfig)


def base_lstm_lm_architecture(args):
    base_lstm_lm_architecture_defaults(args)


@register_model_architecture("define_lstm_lm", "awd_lstm_ptb")
def awd_lstm_ptb(args):
    """AWD-LSTM on Penn Treebank (Merity et al. 2018; DeFINE Table 1c baseline): 3 layers 400 -> 1150 -> 1150 -> 400,
    a 400-wide lookup table tied to the softmax (+ a V-sized output bias), no unit. 24,221,600 parameters at
    V = 10,000. Dropouts: dropouti 0.4, dropouth 0.25, dropout 0.4, wdrop 0.5, dropoute 0.1 (salesforce's PTB
    command). Train with `--criterion ar_tar_cross_entropy` (alpha 2, beta 1) and `--optimizer nt_asgd --lr 30
    --lr-scheduler nt_asgd_trigger --weight-decay 1.2e-6 --batch-size 20 --tokens-per-sample 70 --clip-norm 0.25`."""
    args.define_transform = safe_getattr(args, "define_transform", "none")
    args.define_map_dim = safe_getattr(args, "define_map_dim", 400)
    args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", 400)
    args.lstm_hidden_sizes = safe_getattr(args, "lstm_hidden_sizes", "1150,1150")
    args.dropouti = safe_getattr(args, "dropouti", 0.4)
    args.dropouth = safe_getattr(args, "dropouth", 0.25)
    args.dropout = safe_getattr(args, "dropout", 0.4)
    args.wdrop = safe_getattr(args, "wdrop", 0.5)
    args.dropoute = safe_getattr(args, "dropoute", 0.1)
    base_lstm_lm_architecture(args)


@register_model_architecture("define_lstm_lm", "define_awd_lstm_ptb")
def define_awd_lstm_ptb(args):
    """AWD-LSTM on PTB with DeFINE (Table 1c): Map n = 128 (d = n), k = 1024, N = 7, g_max = 64 (the PTB
    example of docs/design.md#design-notes: groups 64 .. 1, widths 256 .. 1024, 2,079,744 unit weights), m = 400;
    the output is 400 -> 128 and scored against the Map table (+ output bias). 23,641,008 parameters at V = 10,000:
    context 20,211,600, Map 1,280,000, unit 2,088,208 (2,079,744 weights + 4,880 biases + 3,584 LayerNorm), output
    61,200 (400 x 128 + bias 10,000). The paper says "20M", which its text does not determine (the context alone is
    20.2M)."""
    args.define_transform = safe_getattr(args, "define_transform", "define")
    args.define_map_dim = safe_getattr(args, "define_map_dim", 128)
    args.define_expand_dim = safe_getattr(args, "define_expand_dim", 1024)
    args.define_depth = safe_getattr(args, "define_depth", 7)
    args.define_max_groups = safe_getattr(args, "define_max_groups", 64)
    awd_lstm_ptb(args)


@register_model_architecture("define_lstm_lm", "lstm_wt103")
def lstm_wt103(args):
    """The WikiText-103 LSTM of DeFINE Table 1a (adaptive-input baseline): 4 layers 256 -> 1024 -> 1024 -> 1024 ->
    256, adaptive input n = d = m = 256 with cutoffs 20000, 40000, 200000, factor 4, tied to an adaptive softmax
    (band tables and tail projections). Context 23,357,440, I/O 9,253,212 at V = 267,735 (band 0 without an
    n -> d projection). Dropouts: salesforce's WikiText-103 settings (0.1 input/hidden/output, no weight or
    embedding dropout); train with `--criterion ar_tar_adaptive_loss --ar-alpha 0 --tar-beta 0` (or adaptive_loss)
    and `--ddp-backend legacy_ddp`."""
    args.define_transform = safe_getattr(args, "define_transform", "none")
    args.define_map_dim = safe_getattr(args, "define_map_dim", 256)
    args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", 256)
    args.lstm_hidden_sizes = safe_getattr(args, "lstm_hidden_sizes", "1024,1024,1024")
    args.adaptive_softmax_cutoff = safe_getattr(args, "adaptive_softmax_cutoff", "20000,40000,200000")
    args.adaptive_softmax_factor = safe_getattr(args, "adaptive_softmax_factor", 4.0)
    args.dropouti = safe_getattr(args, "dropouti", 0.1)
    args.dropouth = safe_getattr(args, "dropouth", 0.1)
    args.dropout = safe_getattr(args, "dropout", 0.1)
    args.wdrop = safe_getattr(args, "wdrop", 0.0)
    args.dropoute = safe_getattr(args, "dropoute", 0.0)
    base_lstm_lm_architecture(args)


@register_model_architecture("define_lstm_lm", "define_lstm_wt103")
def define_lstm_wt103(args):
    """lstm_wt103 + DeFINE (Table 1a, N = 3 row): n = m = 256, k = 1024, N = 3, g_max = 32 (groups 32, 16, 8: a
    0.437M unit, the closest schedule to the paper's 0.41M; g_max 4 would give 1.64M). 33,047,772 parameters at
    V = 267,735 (paper: 33.02M)."""
    args.define_transform = safe_getattr(args, "define_transform", "define")
    args.define_expand_dim = safe_getattr(args, "define_expand_dim", 1024)
    args.define_depth = safe_getattr(args, "define_depth", 3)
    args.define_max_groups = safe_getattr(args, "define_max_groups", 32)
    lstm_wt103(args)


@register_model_architecture("define_lstm_lm", "define_awd_lstm_tiny")
def define_awd_lstm_tiny(args):
    """A tiny DeFINE AWD-LSTM for tests and CPU runs: m = 32, 2 layers 32 -> 64 -> 32, Map n = 16, unit k = 64,
    N = 2, g_max = 4, output 32 -> 16 scored against the Map table; light dropouts."""
    args.define_map_dim = safe_getattr(args, "define_map_dim", 16)
    paper_sizes(args, FAMILY, define_expand_dim=64, define_depth=2, define_max_groups=4)
    args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", 32)
    args.lstm_hidden_sizes = safe_getattr(args, "lstm_hidden_sizes", "64")
    args.dropouti = safe_getattr(args, "dropouti", 0.1)
    args.dropouth = safe_getattr(args, "dropouth", 0.1)
    args.dropout = safe_getattr(args, "dropout", 0.1)
    args.wdrop = safe_getattr(args, "wdrop", 0.1)
    args.dropoute = safe_getattr(args, "dropoute", 0.05)
    base_lstm_lm_architecture(args)
