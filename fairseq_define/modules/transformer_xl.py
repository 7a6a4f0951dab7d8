"""Transformer-XL decoder stack (Dai et al., 2019) in pure torch: relative positions and segment memory.

A port of the "relative partial learnable" attention (attn_type 0) of kimiyoung/transformer-xl
`pytorch/mem_transformer.py`, with the same parameters and the same arithmetic, but batch-first:

- hidden states are ``[B, T, d_model]``; a memory is ``[B, M, d_model]``; keys run over ``K = M + T``
  positions, memory first (key j is the stream position ``j - M`` relative to the segment start).
- score(i, j) = (q_i + u) . k_j + (q_i + v) . r_{i+M-j}: u = ``r_w_bias`` and v = ``r_r_bias`` ``[H, Dh]``, r the
  sinusoid of the distance projected by ``r_net``. The relative shift turns the ``[T, K]`` table of
  (query, distance) scores into (query, key) scores; entries above the causal diagonal are garbage and masked.
- masks are boolean ``[T, K]``, True = "may not attend".
- no parameter is a position table, so any segment and memory length works; ``clamp_len > 0`` caps distances.

Conventions taken from the reference, kept on purpose:
- the input (an embedding, already scaled) gets dropout, then the stack; the output gets dropout too. There is
  no final LayerNorm: each sublayer has its own (``pre_lnorm``: LN before attention / FF and a plain residual;
  otherwise residual then LN).
- the memory of layer l is the last ``mem_len`` *inputs* of layer l (layer 0: the dropped-out embeddings),
  detached. The reference also keeps the last layer's output (n_layer + 1 tensors) but never reads it; here
  ``new_mems`` has exactly ``n_layer`` tensors, ``new_mems[l]`` being what layer l attends over next segment.
- ``same_length``: every query sees the same number of keys (``mem_len``, counting itself, once the memory is
  full), as the reference's evaluation mode.
- u and v are shared across layers (owned by the stack) unless ``untie_r`` (then every attention owns its own).
"""

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

INIT_STD = 0.02  # the reference's `init_std` for weights and u, v (train.py, init "normal")


def rel_shift(scores: torch.Tensor) -> torch.Tensor:
    """[..., T, K] scores indexed (query i, distance column c) -> [..., T, K] indexed (query i, key j).

    Column c holds distance K-1-c (positions are given in decreasing order). Key j of query i is at distance
    i + M - j (M = K - T), i.e. column T-1-i+j: shifting row i right by T-1-i. Done with one pad and two views,
    as in the reference (valid for j <= i + M; the rest wraps around and must be masked)."""
    *lead, T, K = scores.shape
    padded = F.pad(scores, (1, 0))  # [..., T, K+1]
    return padded.view(*lead, K + 1, T)[..., 1:, :].reshape(*lead, T, K)


class PositionalEmbedding(nn.Module):
    """Sinusoids of (possibly clamped) distances: [K] -> [K, d_model], as [sin | cos] (reference order)."""

    def __init__(self, d_model: int):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"PositionalEmbedding: d_model={d_model} must be even")
        inv_freq = 1.0 / (10000 ** (torch.arange(0.0, d_model, 2.0) / d_model))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(distances, self.inv_freq.to(distances.dtype))
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class RelativeMultiheadAttention(nn.Module):
    """Multi-head self-attention over [memory ; segment] with relative positions (Transformer-XL).

    Parameters: ``qkv_net`` d_model -> 3*H*Dh, ``r_net`` d_model -> H*Dh, ``o_net`` H*Dh -> d_model (all without
    bias), ``layer_norm`` over d_model, and ``r_w_bias``, ``r_r_bias`` [H, Dh] only when ``own_biases``.
    """

    def __init__(self, d_model: int, n_head: int, d_head: int, dropout: float = 0.0, dropatt: float = 0.0,
                 pre_lnorm: bool = False, own_biases: bool = False):
        super().__init__()
        self.n_head, self.d_head, self.pre_lnorm = n_head, d_head, pre_lnorm
        self.scale = d_head ** -0.5
        self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head, bias=False)
        self.r_net = nn.Linear(d_model, n_head * d_head, bias=False)
        self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
        self.layer_norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.dropatt = nn.Dropout(dropatt)
        if own_biases:
            self.r_w_bias = nn.Parameter(torch.empty(n_head, d_head))
            self.r_r_bias = nn.Parameter(torch.empty(n_head, d_head))
            nn.init.normal_(self.r_w_bias, std=INIT_STD)
            nn.init.normal_(self.r_r_bias, std=INIT_STD)
        else:
            self.r_w_bias = self.r_r_bias = None

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, attn_mask: torch.Tensor,
                mem: Optional[torch.Tensor] = None, r_w_bias: Optional[torch.Tensor] = None,
                r_r_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x [B, T, d_model], pos_emb [K, d_model] (distances K-1 ... 0), attn_mask [T, K] bool (True = masked),
        mem [B, M, d_model] or None (K = M + T), r_w_bias / r_r_bias [H, Dh] (ignored when the layer owns its
        own) -> [B, T, d_model]."""
        if self.r_w_bias is not None:
            r_w_bias, r_r_bias = self.r_w_bias, self.r_r_bias
        if r_w_bias is None or r_r_bias is None:
            raise ValueError("RelativeMultiheadAttention: pass r_w_bias and r_r_bias (the layer owns none)")
        B, T, _ = x.shape
        H, Dh = self.n_head, self.d_head
        context = x if mem is None else torch.cat([mem, x], dim=1)  # [B, K, d_model]
        K = context.size(1)
        if self.pre_lnorm:
            context = self.layer_norm(context)
        q, k, v = self.qkv_net(context).chunk(3, dim=-1)
        q = q[:, -T:].view(B, T, H, Dh)
        k, v = k.view(B, K, H, Dh), v.view(B, K, H, Dh)
        r = self.r_net(pos_emb).view(K, H, Dh)

        content = torch.einsum("bihd,bjhd->bhij", q + r_w_bias, k)  # [B, H, T, K]  (a) + (c)
        position = rel_shift(torch.einsum("bihd,jhd->bhij", q + r_r_bias, r))  # (b) + (d)
        scores = (content + position) * self.scale
        scores = scores.masked_fill(attn_mask, float("-inf"))
        probs = self.dropatt(scores.softmax(dim=-1))
        out = torch.einsum("bhij,bjhd->bihd", probs, v).reshape(B, T, H * Dh)
        out = self.drop(self.o_net(out))
        return x + out if self.pre_lnorm else self.layer_norm(x + out)


class PositionwiseFF(nn.Module):
    """d_model -> d_inner -> d_model with biases, ReLU and dropout, residual, one LayerNorm (pre or post)."""

    def __init__(self, d_model: int, d_inner: int, dropout: float = 0.0, pre_lnorm: bool = False):
        super().__init__()
        self.pre_lnorm = pre_lnorm
        self.core = nn.Sequential(
            nn.Linear(d_model, d_inner), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(d_inner, d_model), nn.Dropout(dropout),
        )
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_model] -> [..., d_model]"""
        if self.pre_lnorm:
            return x + self.core(self.layer_norm(x))
        return self.layer_norm(x + self.core(x))


class TransformerXLLayer(nn.Module):
    """One decoder layer: relative attention then position-wise FF."""

    def __init__(self, d_model: int, n_head: int, d_head: int, d_inner: int, dropout: float = 0.0,
                 dropatt: float = 0.0, pre_lnorm: bool = False, own_biases: bool = False):
        super().__init__()
        self.attn = RelativeMultiheadAttention(d_model, n_head, d_head, dropout, dropatt, pre_lnorm, own_biases)
        self.ff = PositionwiseFF(d_model, d_inner, dropout, pre_lnorm)

    def forward(self, x, pos_emb, attn_mask, mem=None, r_w_bias=None, r_r_bias=None):
        """Same arguments as RelativeMultiheadAttention.forward; [B, T, d_model] -> [B, T, d_model]."""
        return self.ff(self.attn(x, pos_emb, attn_mask, mem, r_w_bias, r_r_bias))


class TransformerXLDecoderStack(nn.Module):
    """n_layer Transformer-XL layers over already-embedded input, with segment memory.

    ``forward(x [B, T, d_model], mems) -> (h [B, T, d_model], new_mems)``. ``mems``: None (no memory yet) or a
    list of ``n_layer`` tensors [B, M, d_model] (all with the same M; M = 0 is allowed). ``new_mems``: the last
    ``mem_len`` inputs of every layer over [mems ; this segment], detached (None when ``mem_len == 0``).
    Parameters: the layers, plus ``r_w_bias`` / ``r_r_bias`` [n_head, d_head] unless ``untie_r``.
    """

    def __init__(self, n_layer: int, d_model: int, n_head: int, d_head: int, d_inner: int, dropout: float = 0.0,
                 dropatt: float = 0.0, pre_lnorm: bool = False, untie_r: bool = False, mem_len: int = 0,
                 clamp_len: int = -1, same_length: bool = False):
        super().__init__()
        self.n_layer, self.d_model, self.n_head, self.d_head = n_layer, d_model, n_head, d_head
        self.mem_len, self.clamp_len, self.same_length = mem_len, clamp_len, same_length
        self.pos_emb = PositionalEmbedding(d_model)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerXLLayer(d_model, n_head, d_head, d_inner, dropout, dropatt, pre_lnorm, own_biases=untie_r)
            for _ in range(n_layer)
        )
        if untie_r:
            self.r_w_bias = self.r_r_bias = None
        else:
            self.r_w_bias = nn.Parameter(torch.empty(n_head, d_head))
            self.r_r_bias = nn.Parameter(torch.empty(n_head, d_head))
        self.reset_parameters()

    def reset_parameters(self):
        """The reference's "normal" init: linear weights and u, v ~ N(0, 0.02), biases 0, LayerNorm (1, 0)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, RelativeMultiheadAttention) and module.r_w_bias is not None:
                nn.init.normal_(module.r_w_bias, std=INIT_STD)
                nn.init.normal_(module.r_r_bias, std=INIT_STD)
        if self.r_w_bias is not None:
            nn.init.normal_(self.r_w_bias, std=INIT_STD)
            nn.init.normal_(self.r_r_bias, std=INIT_STD)

    def causal_mask(self, T: int, M: int, device=None) -> torch.Tensor:
        """[T, K] bool, True = masked: query i (stream position M + i among the keys) sees keys j <= M + i; with
        ``same_length`` also only the last ``mem_len`` of them (the reference's formula: all keys while
        K <= mem_len, otherwise keys j > i - (mem_len - M))."""
        K = M + T
        ones = torch.ones(T, K, dtype=torch.bool, device=device)
        mask = ones.triu(1 + M)
        if self.same_length:
            mask_len = K - self.mem_len
            shift = T - mask_len if mask_len > 0 else T
            mask = mask | ones.tril(-shift)
        return mask

    def forward(self, x: torch.Tensor, mems: Optional[List[torch.Tensor]] = None,
                attn_mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[List[torch.Tensor]]]:
        """x [B, T, d_model], mems None or n_layer x [B, M, d_model] -> (h [B, T, d_model], new_mems).

        ``attn_mask`` [T, M+T] bool (True = masked) replaces `causal_mask` (e.g. to reproduce a segmented
        computation in one pass); it must keep every query's own position visible."""
        T = x.size(1)
        if mems is not None and len(mems) != self.n_layer:
            raise ValueError(f"TransformerXLDecoderStack: {len(mems)} mems for {self.n_layer} layers")
        M = 0 if mems is None else mems[0].size(1)
        if attn_mask is None:
            attn_mask = self.causal_mask(T, M, device=x.device)
        distances = torch.arange(M + T - 1, -1, -1.0, device=x.device, dtype=x.dtype)
        if self.clamp_len > 0:
            distances = distances.clamp(max=self.clamp_len)
        pos_emb = self.drop(self.pos_emb(distances))

        h = self.drop(x)
        inputs = []
        for i, layer in enumerate(self.layers):
            inputs.append(h)
            mem = None if mems is None or M == 0 else mems[i]
            h = layer(h, pos_emb, attn_mask, mem, self.r_w_bias, self.r_r_bias)
        return self.drop(h), self._update_mems(inputs, mems)

    @torch.no_grad()
    def _update_mems(self, inputs: List[torch.Tensor], mems: Optional[List[torch.Tensor]]):
        """Last mem_len positions of [old memory ; this segment's input], per layer, detached."""
        if self.mem_len <= 0:
            return None
        if mems is None:
            return [h[:, -self.mem_len:].detach() for h in inputs]
        return [torch.cat([m, h], dim=1)[:, -self.mem_len:].detach() for m, h in zip(mems, inputs)]
