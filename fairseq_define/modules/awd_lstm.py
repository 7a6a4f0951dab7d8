"""AWD-LSTM building blocks (Merity, Keskar & Socher, ICLR 2018), pure torch (no fairseq).

Reference: salesforce/awd-lstm-lm (`weight_drop.py`, `locked_dropout.py`, `embed_regularize.py`, `model.py`).
All tensors are batch-first: [B, T, C].

- `WeightDropLSTM`: one LSTM layer with DropConnect on its hidden-to-hidden weights. salesforce's `WeightDrop`
  (delete the parameter, re-set a plain tensor each call) breaks on torch >= 1.4; here the dropped weight is
  passed with `torch.func.functional_call`, so the parameter keeps its standard name and receives the gradient.
- `LockedDropout`: variational dropout, one mask per sequence shared across time.
- `embedding_dropout` / `embedding_type_dropout`: drop whole rows (token types) of an embedding table, or of
  the per-unique-id rows a DeFINE embedding computes before its gather.
- `LSTMStack`: embedded input -> per-layer WeightDropLSTMs with locked dropout on the input (dropouti), between
  layers (dropouth) and on the output (dropout); carries (h, c) across calls and returns the raw and dropped
  per-layer outputs that AR/TAR need (AR on `dropped_outputs[-1]`, TAR on `raw_outputs[-1]`).

Parameter counts are plain PyTorch LSTM counts: 4h(in + h) + 8h per layer (two bias vectors).
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

LSTMState = Tuple[torch.Tensor, torch.Tensor]  # (h [1, B, H], c [1, B, H])


class WeightDropLSTM(nn.Module):
    """One batch-first LSTM layer with DropConnect (probability `weight_dropout`) on `weight_hh_l0`.

    One layer per module, as in AWD-LSTM, so that each layer can have its own input and hidden size; stack them
    with `LSTMStack`. In training a fresh mask is drawn on every forward (one per batch, shared by all time
    steps); in eval the raw weight is used. Parameters are those of the inner `nn.LSTM` (`lstm.weight_ih_l0`,
    `lstm.weight_hh_l0`, `lstm.bias_ih_l0`, `lstm.bias_hh_l0`).
    """

    def __init__(self, input_size: int, hidden_size: int, weight_dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=1, batch_first=True)
        self.weight_dropout = weight_dropout

    @property
    def input_size(self) -> int:
        return self.lstm.input_size

    @property
    def hidden_size(self) -> int:
        return self.lstm.hidden_size

    def forward(self, x: torch.Tensor, state: Optional[LSTMState] = None) -> Tuple[torch.Tensor, LSTMState]:
        """x [B, T, input_size], state (h, c) each [1, B, hidden_size] or None (zeros)
        -> (output [B, T, hidden_size], (h, c) each [1, B, hidden_size])."""
        if self.training and self.weight_dropout > 0:
            dropped = F.dropout(self.lstm.weight_hh_l0, p=self.weight_dropout, training=True)
            return functional_call(self.lstm, {"weight_hh_l0": dropped}, (x, state))
        return self.lstm(x, state)

    def extra_repr(self) -> str:
        return f"weight_dropout={self.weight_dropout}"


class LockedDropout(nn.Module):
    """Variational dropout: x [B, T, C] -> [B, T, C], one Bernoulli mask [B, 1, C] per sequence, shared across
    time, kept entries scaled by 1 / (1 - p). Identity in eval or when p == 0. It is `F.dropout1d` over the
    channels of x [B, C, T] (the same mask, drawn in the same order: a test checks the two are identical)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return F.dropout1d(x.transpose(1, 2), self.p, training=True).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _drop_rows(rows: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """rows [R, C] -> [R, C] with whole rows zeroed with probability p and the kept rows scaled by 1 / (1 - p)."""
    if not training or p == 0:
        return rows
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    mask = rows.new_empty(rows.size(0), 1).bernoulli_(1 - p) / (1 - p)
    return rows * mask


def embedding_dropout(weight: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Embedding dropout on a full table (salesforce's `embedded_dropout`): weight [V, n] -> masked [V, n].

    Look tokens up in the result (`F.embedding(tokens, embedding_dropout(emb.weight, p, self.training))`): a
    dropped row removes that token type from the whole batch."""
    return _drop_rows(weight, p, training)


def embedding_type_dropout(unique_rows: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Embedding dropout for an embedding computed on the batch's unique ids, before the gather.

    unique_rows [U, m] (one row per unique token id of the batch) -> [U, m]. Dropping a unique row drops that
    token type at every position of the batch, which is what `embedding_dropout` does to a full table (the
    types absent from the batch do not matter); kept rows are scaled by 1 / (1 - p)."""
    return _drop_rows(unique_rows, p, training)


class LSTMStackOutput(NamedTuple):
    output: torch.Tensor  # [B, T, sizes[-1]]: last layer's output after locked dropout `dropout`
    state: List[LSTMState]  # per layer (h, c), each [1, B, H_l]
    raw_outputs: List[torch.Tensor]  # per layer, the LSTM output before dropout, [B, T, H_l]
    dropped_outputs: List[torch.Tensor]  # per layer, after dropouth (last: after dropout); [-1] is `output`


class LSTMStack(nn.Module):
    """The AWD-LSTM context: embedded input [B, T, sizes[0]] -> hidden [B, T, sizes[-1]].

    Args:
        sizes: [input, hidden_1, ..., output]; layer l maps sizes[l] -> sizes[l + 1]. AWD-LSTM on PTB is
            [400, 1150, 1150, 400]; the WikiText-103 LSTM of DeFINE Table 1a is [m, 1024, 1024, 1024, m].
        dropouti: locked dropout on the input (salesforce `dropouti`).
        dropouth: locked dropout between layers (`dropouth`).
        dropout: locked dropout on the last layer's output (`dropout`).
        wdrop: DropConnect on every layer's hidden-to-hidden weights (`wdrop`).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        dropouti: float = 0.0,
        dropouth: float = 0.0,
        dropout: float = 0.0,
        wdrop: float = 0.0,
    ):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input and at least one layer size, got {list(sizes)}")
        self.sizes = list(sizes)
        self.layers = nn.ModuleList(
            WeightDropLSTM(n_in, n_out, weight_dropout=wdrop) for n_in, n_out in zip(self.sizes, self.sizes[1:])
        )
        self.drop_input = LockedDropout(dropouti)
        self.drop_between = LockedDropout(dropouth)
        self.drop_output = LockedDropout(dropout)

    def zero_state(self, batch_size: int, like: torch.Tensor) -> List[LSTMState]:
        """Per layer (h, c) of zeros, each [1, batch_size, H_l], with the dtype and device of `like`."""
        return [
            (like.new_zeros(1, batch_size, layer.hidden_size), like.new_zeros(1, batch_size, layer.hidden_size))
            for layer in self.layers
        ]

    def forward(
        self,
        x: torch.Tensor,
        state: Optional[List[LSTMState]] = None,
        detach_state: bool = True,
    ) -> LSTMStackOutput:
        """x [B, T, sizes[0]]; state: the `state` of the previous call (same B) or None (zeros).

        Returns `LSTMStackOutput`; its `state` is detached (truncated BPTT) unless `detach_state=False`."""
        if state is None:
            state = [None] * len(self.layers)
        elif len(state) != len(self.layers):
            raise ValueError(f"state has {len(state)} layers, the stack has {len(self.layers)}")
        h = self.drop_input(x)
        new_state, raw_outputs, dropped_outputs = [], [], []
        for i, layer in enumerate(self.layers):
            raw, layer_state = layer(h, state[i])
            raw_outputs.append(raw)
            new_state.append(tuple(s.detach() for s in layer_state) if detach_state else layer_state)
            h = self.drop_output(raw) if i == len(self.layers) - 1 else self.drop_between(raw)
            dropped_outputs.append(h)
        return LSTMStackOutput(h, new_state, raw_outputs, dropped_outputs)
