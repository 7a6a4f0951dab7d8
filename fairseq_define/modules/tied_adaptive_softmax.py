"""Tied projected adaptive log-softmax with equal band widths (Transformer-XL's `ProjectedAdaptiveLogSoftmax`,
div_val = 1), in pure torch.

Vocabulary bands ``[0, c_0) [c_0, c_1) ... [c_{C-1}, V)``: the head scores the shortlist (band 0) plus one
logit per tail cluster; tail band i (1-based) is scored by its own softmax, and
``log p(w) = log p_head(cluster i) + log p_tail_i(w)``. With div_val = 1 every band is ``n`` wide, so all the
output rows are slices of ONE table ``[V, n]`` -- tied to an external table (the input Map), passed as the
Parameter itself or as a callable returning it (for a table exposed through a property) -- and of ONE per-token
bias ``[V]`` (the reference's single ``out_layers[0]``). Own parameters: ``bias`` [V], ``cluster_weight`` [C, n],
``cluster_bias`` [C], and any untied projections.

Projections (only when ``d_model != n``): band i maps the hidden state ``h`` [d_model] to ``h @ P_i`` [n] with
``P_i`` [d_model, n] (the reference's ``out_projs[i]``; an input projection used as ``F.linear(e, P)`` maps n ->
d_model, so the same P ties both sides). ``tie_projs[i]`` says whether band i uses the external ``proj`` or its
own Parameter; the default is the reference's WikiText-103 setting ``[False] + [True] * C``: the head keeps its
own projection, every tail band uses the tied one.

Cluster logit order: tail band i uses head column ``c_0 + i - 1`` (``cluster_weight[i - 1]``). (The reference
reads column ``-i``, i.e. the clusters in reverse order; the two are the same model up to a permutation of
``cluster_weight`` rows.)

``nll(hidden, target)`` never builds [N, V]: each tail softmax runs only over the rows whose target is in that
band. ``log_prob(hidden)`` (also as fairseq's ``get_log_prob``) returns the full [N, V] distribution, for
generation and scoring.
"""

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

TableLike = Union[nn.Parameter, Callable[[], torch.Tensor]]
PROJ_INIT_STD = 0.01  # the reference's `proj_init_std` for untied projections


class TiedAdaptiveLogSoftmax(nn.Module):
    """Adaptive log-softmax whose output table is an external [V, n] table.

    Args:
        weight: the output table [V, n]: an ``nn.Parameter`` (registered here as ``self.weight`` -- the very same
            object, so a model's ``parameters()`` lists it once) or a callable returning the current table (then
            ``self.weight`` calls it; nothing is registered).
        cutoffs: increasing band starts ``0 < c_0 < ... < V`` (e.g. [20000, 40000, 200000]); empty: a plain
            softmax over the tied table.
        d_model: width of the hidden states; None or n: no projections.
        proj: the external projection [d_model, n] (Parameter or callable), needed when a band is tied to it.
        tie_projs: per band (1 + len(cutoffs) booleans), whether it uses ``proj``; default [False] + [True] * C
            when ``proj`` is given, else all False (every band its own projection).
    """

    def __init__(self, weight: TableLike, cutoffs: Sequence[int], d_model: Optional[int] = None,
                 proj: Optional[TableLike] = None, tie_projs: Optional[Sequence[bool]] = None):
        super().__init__()
        self._weight_fn = self._register_tied("weight", weight)
        V, n = self.weight.shape
        cutoffs = list(cutoffs)
        if any(a >= b for a, b in zip([0] + cutoffs, cutoffs + [V])):
            raise ValueError(f"TiedAdaptiveLogSoftmax: cutoffs {cutoffs} must increase strictly within (0, {V})")
        self.num_embeddings, self.embed_dim = V, n
        self.bounds = [0] + cutoffs + [V]  # band i covers [bounds[i], bounds[i + 1])
        self.n_clusters = len(cutoffs)
        device, dtype = self.weight.device, self.weight.dtype
        self.bias = nn.Parameter(torch.zeros(V, device=device, dtype=dtype))
        self.cluster_weight = nn.Parameter(torch.zeros(self.n_clusters, n, device=device, dtype=dtype))
        self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters, device=device, dtype=dtype))

        self.d_model = n if d_model is None else d_model
        n_bands = self.n_clusters + 1
        self.own_projs = nn.ParameterDict()
        self.tie_projs = [False] * n_bands
        self._proj_fn = None
        if self.d_model != n:
            if tie_projs is None:
                tie_projs = [False] + [True] * self.n_clusters if proj is not None else [False] * n_bands
            if len(tie_projs) != n_bands:
                raise ValueError(f"TiedAdaptiveLogSoftmax: tie_projs needs {n_bands} entries, got {len(tie_projs)}")
            if any(tie_projs):
                if proj is None:
                    raise ValueError("TiedAdaptiveLogSoftmax: tie_projs asks for the external proj, none given")
                self._proj_fn = self._register_tied("proj", proj)
                if tuple(self.proj.shape) != (self.d_model, n):
                    raise ValueError(f"TiedAdaptiveLogSoftmax: proj must be [{self.d_model}, {n}], "
                                     f"got {list(self.proj.shape)}")
            self.tie_projs = [bool(t) for t in tie_projs]
            for band, tied in enumerate(self.tie_projs):
                if not tied:
                    p = nn.Parameter(torch.empty(self.d_model, n, device=device, dtype=dtype))
                    nn.init.normal_(p, std=PROJ_INIT_STD)
                    self.own_projs[str(band)] = p

    def _register_tied(self, name: str, source: TableLike):
        """Register a tied Parameter under `name` and return None, or return the callable that yields it."""
        if isinstance(source, nn.Parameter):
            self.register_parameter(name, source)
            return None
        if isinstance(source, nn.Module) or not callable(source):
            raise TypeError(f"TiedAdaptiveLogSoftmax: {name} must be an nn.Parameter or a callable returning one")
        return source

    def __getattr__(self, name: str):
        # `weight` / `proj` given as callables: resolved on every access, so they follow the owner's table.
        fn = self.__dict__.get(f"_{name}_fn") if name in ("weight", "proj") else None
        if fn is not None:
            return fn()
        return super().__getattr__(name)

    def band_projection(self, band: int) -> Optional[torch.Tensor]:
        """P_band [d_model, n], or None when there are no projections."""
        if self.d_model == self.embed_dim:
            return None
        return self.proj if self.tie_projs[band] else self.own_projs[str(band)]

    def _logits(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, band: int) -> torch.Tensor:
        """hidden [N, d_model] -> [N, rows of weight]"""
        proj = self.band_projection(band)
        if proj is not None:
            hidden = hidden @ proj
        return F.linear(hidden, weight, bias)

    def _head_log_probs(self, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """[N, d_model] -> [N, c_0 + C]: shortlist words, then the C clusters."""
        c0 = self.bounds[1]
        head_weight = torch.cat([weight[:c0], self.cluster_weight], dim=0)
        head_bias = torch.cat([self.bias[:c0], self.cluster_bias], dim=0)
        return self._logits(hidden, head_weight, head_bias, 0).log_softmax(dim=-1)

    def _tail_log_probs(self, hidden: torch.Tensor, weight: torch.Tensor, band: int) -> torch.Tensor:
        """[N, d_model] -> [N, band width]: log p(w | cluster `band`)."""
        lo, hi = self.bounds[band], self.bounds[band + 1]
        return self._logits(hidden, weight[lo:hi], self.bias[lo:hi], band).log_softmax(dim=-1)

    def nll(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """hidden [..., d_model], target [...] (ids in [0, V)) -> -log p(target) [...], band by band."""
        shape = target.shape
        hidden, target = hidden.reshape(-1, hidden.size(-1)), target.reshape(-1)
        if hidden.size(0) != target.size(0):
            raise ValueError(f"TiedAdaptiveLogSoftmax.nll: {hidden.size(0)} hidden rows, {target.size(0)} targets")
        weight = self.weight
        head = self._head_log_probs(hidden, weight)
        nll = hidden.new_zeros(target.shape)
        c0 = self.bounds[1]
        in_head = target < c0
        rows = in_head.nonzero().squeeze(1)
        nll.index_copy_(0, rows, -head[rows].gather(1, target[rows, None]).squeeze(1))
        for band in range(1, self.n_clusters + 1):
            lo, hi = self.bounds[band], self.bounds[band + 1]
            rows = ((target >= lo) & (target < hi)).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            tail = self._tail_log_probs(hidden[rows], weight, band)
            log_p = head[rows, c0 + band - 1] + tail.gather(1, (target[rows] - lo)[:, None]).squeeze(1)
            nll.index_copy_(0, rows, -log_p)
        return nll.view(shape)

    forward = nll

    def log_prob(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., d_model] -> log-probabilities [..., V] (the full distribution)."""
        lead = hidden.shape[:-1]
        hidden = hidden.reshape(-1, hidden.size(-1))
        weight = self.weight
        head = self._head_log_probs(hidden, weight)
        c0 = self.bounds[1]
        parts = [head[:, :c0]]
        for band in range(1, self.n_clusters + 1):
            parts.append(head[:, c0 + band - 1, None] + self._tail_log_probs(hidden, weight, band))
        return torch.cat(parts, dim=-1).view(*lead, self.num_embeddings)

    def get_log_prob(self, input: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """fairseq's ``AdaptiveSoftmax.get_log_prob`` signature, so that a decoder holding this module as
        ``adaptive_softmax`` gets [B, T, V] log-probabilities from ``get_normalized_probs`` (eval-lm, generation).
        ``target`` is not needed. (Training goes through `nll`: fairseq's ``adaptive_loss`` criterion expects
        another forward and does not apply.)"""
        return self.log_prob(input)

    def extra_repr(self) -> str:
        return (f"V={self.num_embeddings}, n={self.embed_dim}, d_model={self.d_model}, cutoffs={self.bounds[1:-1]}, "
                f"tie_projs={self.tie_projs}")
