"""DefineEmbedding: a drop-in fairseq token embedding, Map -> DeFINE unit -> [B, T, m].

Map: a lookup table Embedding(V, n) (init N(0, n^-0.5), padding row 0) or fairseq's AdaptiveInput with output
dim n (`adaptive_cutoff`). Unit: see `define_unit.py`.

Beyond the paper, two ways to skip work that the token-wise unit makes redundant:
- **dedupe** (training; on by default): the unit runs once per *unique* id of the batch, then a gather spreads the
  rows. Outputs and gradients are identical to the per-position computation. With dropout inside the unit, every
  occurrence of a token in a batch then shares one dropout mask (per-position masks need `dedupe=False`).
- **cache** (inference, paper §3.4; on by default): in eval mode with autograd off, the V x m table of all unit
  outputs is built lazily (in chunks of `cache_chunk` ids) and looked up. It is rebuilt whenever a parameter may
  have changed: `train()`, or any change of a parameter's storage, version counter (in-place updates such as
  optimizer steps and `load_state_dict`), dtype or device.

Output scale: fairseq multiplies token embeddings by sqrt(m) (unless `--no-scale-embedding`), which assumes
embeddings initialised like its nn.Embedding, N(0, m^-0.5). At init, Reduce is rescaled so that the unit's
output has std m^-0.5 over the vocabulary; after fairseq's scaling the embedding then has unit std at init,
whatever the norm/activation/transform. Padding positions are exact zeros.
"""

from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fairseq_define.modules.define_unit import DefineUnit


class DefineEmbedding(nn.Module):
    """tokens [B, T] (int64) -> [B, T, embedding_dim].

    Args:
        num_embeddings: vocabulary size V.
        padding_idx: id whose output is exactly zero.
        map_dim: n, width of the Map.
        expand_dim: k, width of the last HGT layer.
        depth: N, number of HGT layers.
        max_groups: g_max, groups of the first HGT layer (a power of two).
        embedding_dim: m, output width (the model width).
        norm, activation, dropout: between HGT layers (`none`, `none`, 0 = paper-literal linear unit).
        reduce_skip: feed [h ; e] to Reduce.
        transform: `define`, `define-nomix`, `hgt`, `glt` or `linear` (ablations, spec §1).
        adaptive_cutoff: if given, the Map is fairseq's AdaptiveInput with these cutoffs (e.g. [20000, 60000]).
        adaptive_factor: AdaptiveInput's band-width divisor.
        dedupe: compute the unit on the batch's unique ids in training.
        cache: look up a V x m table in eval mode without autograd.
        cache_chunk: ids per chunk when building the cache table (bounds its peak memory).
        shared_map: use this Map module (another DefineEmbedding's `.map`, e.g. the encoder's) instead of building
            one; the unit stays this embedding's own.
    """

    def __init__(
        self,
        num_embeddings: int,
        padding_idx: Optional[int],
        map_dim: int = 128,
        expand_dim: int = 1024,
        depth: int = 3,
        max_groups: int = 4,
        embedding_dim: int = 512,
        norm: str = "ln",
        activation: str = "gelu",
        dropout: float = 0.0,
        reduce_skip: bool = False,
        transform: str = "define",
        adaptive_cutoff: Optional[Sequence[int]] = None,
        adaptive_factor: float = 4.0,
        dedupe: bool = True,
        cache: bool = True,
        cache_chunk: int = 16384,
        shared_map: Optional[nn.Module] = None,
    ):
        super().__init__()
        if not isinstance(num_embeddings, int) or num_embeddings < 1:
            raise ValueError(f"num_embeddings={num_embeddings!r} must be a positive integer")
        if padding_idx is not None and not 0 <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx={padding_idx} must be in [0, num_embeddings={num_embeddings})")
        if cache_chunk < 1:
            raise ValueError(f"cache_chunk={cache_chunk} must be positive")
        self.num_embeddings = num_embeddings
        self.padding_idx = padding_idx
        self.embedding_dim = embedding_dim
        self.map_dim = map_dim
        self.dedupe = dedupe
        self.cache = cache
        self.cache_chunk = cache_chunk
        if shared_map is None:
            shared_map = self._build_map(num_embeddings, padding_idx, map_dim, adaptive_cutoff, adaptive_factor)
        elif getattr(shared_map, "embedding_dim", None) != map_dim:
            raise ValueError(f"shared_map has dimension {getattr(shared_map, 'embedding_dim', None)}, expected map_dim={map_dim}")
        self.map = shared_map
        self.unit = DefineUnit(
            map_dim, expand_dim, depth, max_groups, embedding_dim,
            norm=norm, activation=activation, dropout=dropout, reduce_skip=reduce_skip, transform=transform,
        )
        self._cache_table: Optional[torch.Tensor] = None
        self._cache_key = None
        self._calibrate_output_scale()

    @staticmethod
    def _build_map(num_embeddings, padding_idx, map_dim, adaptive_cutoff, adaptive_factor) -> nn.Module:
        if adaptive_cutoff is None:
            table = nn.Embedding(num_embeddings, map_dim, padding_idx=padding_idx)
            nn.init.normal_(table.weight, mean=0.0, std=map_dim ** -0.5)
            if padding_idx is not None:
                nn.init.zeros_(table.weight[padding_idx])
            return table
        cutoff = [int(c) for c in adaptive_cutoff]
        if not cutoff or any(b <= a for a, b in zip(cutoff, cutoff[1:])) or cutoff[0] < 1 or cutoff[-1] > num_embeddings:
            raise ValueError(
                f"adaptive_cutoff={cutoff} must be strictly increasing positive ids, each <= num_embeddings={num_embeddings}"
            )
        if cutoff[-1] < num_embeddings:
            cutoff.append(num_embeddings)
        for band in range(1, len(cutoff)):
            if int(map_dim // adaptive_factor ** band) < 1:
                raise ValueError(
                    f"adaptive_factor={adaptive_factor} leaves band {band} of map_dim={map_dim} with no dimensions; "
                    f"use a smaller factor or fewer cutoffs"
                )
        from fairseq.modules import AdaptiveInput

        return AdaptiveInput(num_embeddings, padding_idx, map_dim, adaptive_factor, map_dim, cutoff, q_noise=0, qn_block_size=8)

    # fairseq integration ------------------------------------------------------------------------------------

    @property
    def weight(self) -> torch.Tensor:
        """The Map table [V, n], shared with the output layer by `--share-*-embed(dings)`."""
        if self.is_adaptive:
            raise AttributeError("DefineEmbedding.weight: the Map is adaptive; tie it with weights_for_band(i)")
        return self.map.weight

    def weights_for_band(self, band: int):
        """(embedding weight, projection or None) of AdaptiveInput band `band`, for a tied AdaptiveSoftmax."""
        if not self.is_adaptive:
            raise AttributeError("DefineEmbedding.weights_for_band: the Map is a lookup table, not adaptive")
        return self.map.weights_for_band(band)

    @property
    def is_adaptive(self) -> bool:
        return not isinstance(self.map, nn.Embedding)

    # forward ------------------------------------------------------------------------------------------------

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Unit outputs of a 1-D tensor of ids [U] -> [U, m], padding rows exactly zero."""
        e = self.map(ids)
        out = self.unit(e.reshape(-1, self.map_dim))
        if self.padding_idx is not None:
            out = out.masked_fill(ids.reshape(-1, 1) == self.padding_idx, 0.0)
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [*] (integer ids in [0, V)) -> [*, m]."""
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            kind = tokens.dtype if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"DefineEmbedding: tokens must be an integer tensor of ids, got {kind}")
        if tokens.numel() == 0:
            return self.unit.reduce.weight.new_zeros(*tokens.shape, self.embedding_dim)
        if self.cache and not self.training and not torch.is_grad_enabled():
            self._check_ids(*torch.aminmax(tokens))
            return F.embedding(tokens, self.cache_table())
        if self.dedupe:
            ids, inverse = torch.unique(tokens, sorted=True, return_inverse=True)
            self._check_ids(ids[0], ids[-1])
            return F.embedding(inverse, self.embed_ids(ids))
        self._check_ids(*torch.aminmax(tokens))
        return self.embed_ids(tokens.reshape(-1)).view(*tokens.shape, self.embedding_dim)

    def _check_ids(self, lowest: torch.Tensor, highest: torch.Tensor):
        low, high = int(lowest), int(highest)
        if low < 0 or high >= self.num_embeddings:
            bad = low if low < 0 else high
            raise ValueError(
                f"DefineEmbedding: token id {bad} is outside the vocabulary [0, {self.num_embeddings}); "
                f"the data and the dictionary the model was built with disagree"
            )

    # inference cache ----------------------------------------------------------------------------------------

    def _parameter_key(self):
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())

    def cache_table(self) -> torch.Tensor:
        """The V x m table of unit outputs, (re)built if any parameter may have changed since it was built."""
        key = self._parameter_key()
        if self._cache_table is None or key != self._cache_key:
            self._cache_table = None  # free the stale table before building the new one
            with torch.no_grad():
                device = next(self.parameters()).device
                chunks = [
                    self.embed_ids(torch.arange(start, min(start + self.cache_chunk, self.num_embeddings), device=device))
                    for start in range(0, self.num_embeddings, self.cache_chunk)
                ]
                self._cache_table = torch.cat(chunks)
            self._cache_key = key
        return self._cache_table

    def invalidate_cache(self):
        self._cache_table, self._cache_key = None, None

    @property
    def cache_nbytes(self) -> int:
        """Bytes held by the inference cache (0 when not built)."""
        table = self._cache_table
        return 0 if table is None else table.numel() * table.element_size()

    def train(self, mode: bool = True):
        self.invalidate_cache()
        return super().train(mode)

    # init -----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _calibrate_output_scale(self, sample: int = 4096):
        """Rescale Reduce so that the unit's output std over (a sample of) the vocabulary is m^-0.5."""
        if self.unit.reduce.weight.is_meta:  # built on the meta device (e.g. for counting): nothing to scale
            return
        was_training = self.training
        self.unit.eval()
        ids = torch.randperm(self.num_embeddings, device=self.unit.reduce.weight.device)[:sample]
        if self.padding_idx is not None:
            ids = ids[ids != self.padding_idx]
        if ids.numel() > 0:
            std = self.unit(self.map(ids)).std()
            if std > 0:
                self.unit.reduce.weight.mul_(self.embedding_dim ** -0.5 / std)
        self.unit.train(was_training)
        self.invalidate_cache()

    # accounting -----------------------------------------------------------------------------------------------

    def accounting(self) -> List[dict]:
        """Parameters and multiply-accumulates per token of each part: map, hgt.1 .. hgt.N, reduce.

        Each row: {"part", "weights", "biases", "norm", "params", "macs_per_token"}. MACs count the uncached unit
        (with the inference cache, the unit costs 0 MACs per token). For an adaptive Map, the MACs are those of
        band 0's projection (the most frequent tokens; rarer bands cost less).
        """
        if self.is_adaptive:
            tables = sum(band[0].weight.numel() for band in self.map.embeddings)
            projections = sum(band[1].weight.numel() for band in self.map.embeddings)
            map_row = {"part": "map", "weights": tables + projections, "biases": 0, "norm": 0,
                       "macs_per_token": self.map.embeddings[0][1].weight.numel()}
        else:
            map_row = {"part": "map", "weights": self.map.weight.numel(), "biases": 0, "norm": 0, "macs_per_token": 0}
        rows = [map_row]
        for name, weights, biases, norm in self.unit.part_counts():
            rows.append({"part": name, "weights": weights, "biases": biases, "norm": norm, "macs_per_token": weights})
        for row in rows:
            row["params"] = row["weights"] + row["biases"] + row["norm"]
        assert sum(r["params"] for r in rows) == sum(p.numel() for p in self.parameters()), "accounting out of date"
        return rows
