"""DefineEmbedding: a drop-in token embedding, Map -> (n -> d) -> DeFINE unit -> [B, T, m]. Pure torch.

Map (docs/design.md#method): a lookup table Embedding(V, n) (init N(0, n^-0.5), padding row 0), followed by a
bias-free n -> d projection when d != n; or fairseq's AdaptiveInput with band 0 of width n and every band projected to
d (fairseq is imported only for this Map). Unit: `define_unit.py`; with `transform="none"` there is no unit, and the
Map's d-dim output goes to the model through a bias-free d -> m projection when d != m: the control of every
comparison, which counts and computes exactly like fairseq's adaptive-input model of the same sizes.

Beyond the paper, two ways to skip work that the token-wise unit makes redundant:
- **dedupe** (training and validation; on by default): the unit runs once per *unique* id of the batch, then a
  gather spreads the rows. Outputs and gradients equal the per-position computation. With dropout inside the unit,
  every occurrence of a token in a batch shares one dropout mask (per-position masks need `dedupe=False`).
- **inference table** (paper §3.4; on by default): `prepare_for_inference()` — which fairseq calls through
  `make_generation_fast_` in generate, interactive, eval-lm and the hub — arms a V x m table of all unit outputs,
  built at the first forward in eval mode without autograd and then looked up. Lifecycle: the table is dropped by
  `train(True)`, `load_state_dict`, device/dtype moves (`.to`, `.cuda`, `.half`, ...), rebuilt under another
  autocast dtype, and rebuilt when any parameter changed in place since it was built (each lookup compares the
  parameters' version counters: an optimizer step on a prepared model in eval mode is never served a stale table).
  Plain `eval()` (fairseq's validation calls it on every batch) never builds it: that path dedupes. A write through
  `p.data` bypasses version counters (torch gives `.data` its own); call `prepare_for_inference()` after one.

Units (`--define-transform`): the paper's (`define_unit.py`: define and its ablations) or the authors' released
code's (`authors_unit.py`: authors), which also brings their Map treatment: a lookup Map's output times sqrt(n)
(std 1) and a locked Map dropout (one mask per sequence, `--define-map-dropout`); its output enters the model with
no sqrt(m) (`wants_host_scale`; with `--define-host-scale` it is calibrated like the paper's unit, below, and the host
applies its own scale), and its padding output is f(0) as in their code. `--define-residual` adds the
unit to the control's path through a zero-initialised gate: out = control(e) + gate * unit(e).

Output scale: fairseq multiplies token embeddings by sqrt(m) (unless `--no-scale-embedding`), which assumes
embeddings like its nn.Embedding, std m^-0.5. At init the unit's output std over a sample of the vocabulary is
measured and brought to m^-0.5: by a fixed factor after Reduce (`output_scale="factor"`, the default: Reduce keeps
its Xavier init, so an optimizer step moves its weights by a normal fraction) or by scaling Reduce's initial weights
(`"weights"`, v1's way: Reduce then starts at a small fraction of its Xavier std and an Adam step is large against
it). Padding positions are exact zeros.
"""

from dataclasses import replace
import math
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fairseq_define.modules.authors_unit import AuthorsDefineUnit
from fairseq_define.modules.define_config import DefineConfig
from fairseq_define.modules.define_unit import DefineUnit

VERSION = 2  # state-dict layout; 1 (no `version`, no `unit.output_scale`) is upgraded on load


class DefineEmbedding(nn.Module):
    """tokens [*] (int64 ids in [0, V)) -> [*, embedding_dim].

    Args:
        num_embeddings: vocabulary size V.
        padding_idx: id whose output is exactly zero.
        embedding_dim: m, the output width (the model width).
        config: the DeFINE options (`DefineConfig`); keyword `options` override its fields, e.g.
            `DefineEmbedding(V, 1, 512, map_dim=128, expand_dim=1024)`.
        shared_map: another DefineEmbedding whose Map (table and n -> d projection) this one uses, e.g. the
            encoder's in translation with shared embeddings; the unit stays this embedding's own.
    """

    def __init__(self, num_embeddings: int, padding_idx: Optional[int], embedding_dim: int,
                 config: Optional[DefineConfig] = None, shared_map: Optional["DefineEmbedding"] = None, **options):
        super().__init__()
        cfg = replace(config or DefineConfig(), **options)
        if not isinstance(num_embeddings, int) or num_embeddings < 1:
            raise ValueError(f"num_embeddings={num_embeddings!r} must be a positive integer")
        if padding_idx is not None and not 0 <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx={padding_idx} must be in [0, num_embeddings={num_embeddings})")
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim={embedding_dim!r} must be a positive integer")
        self.config = cfg
        self.num_embeddings, self.padding_idx, self.embedding_dim = num_embeddings, padding_idx, embedding_dim
        self.map_dim, self.input_dim = cfg.map_dim, cfg.unit_input_dim
        if shared_map is None:
            self.map = build_map(num_embeddings, padding_idx, cfg)
            self.map_proj = (nn.Linear(cfg.map_dim, self.input_dim, bias=False)
                             if self.input_dim != cfg.map_dim and cfg.adaptive_cutoff is None else None)
        else:
            if (shared_map.map_dim, shared_map.input_dim) != (cfg.map_dim, self.input_dim):
                raise ValueError(f"shared_map has widths n={shared_map.map_dim}, d={shared_map.input_dim}; this "
                                 f"embedding needs n={cfg.map_dim}, d={self.input_dim}")
            self.map, self.map_proj = shared_map.map, shared_map.map_proj
        self.map_dropout = nn.Dropout(0.0 if cfg.is_authors else cfg.map_dropout)  # authors: locked, in forward
        self.unit = build_unit(cfg, embedding_dim)
        # the authors' unit reads the lookup Map's output times sqrt(n) (std 1); an adaptive Map's as it is
        self.unit_input_scale = math.sqrt(cfg.map_dim) if cfg.is_authors and cfg.adaptive_cutoff is None else 1.0
        has_control = self.unit is None or cfg.residual  # the --define-transform none path
        self.out_proj = (nn.Linear(self.input_dim, embedding_dim, bias=False)
                         if has_control and self.input_dim != embedding_dim else None)
        # --define-residual: out = control(e) + gate * unit(e), gate = 0 at init (the model starts as its control)
        self.gate = nn.Parameter(torch.zeros(embedding_dim)) if self.unit is not None and cfg.residual else None
        # --define-host-scale: the authors' unit's output times a fixed factor, measured at init (std m^-0.5)
        self.register_buffer("host_factor", torch.ones(()) if self.unit is not None and cfg.host_scale else None)
        self.register_buffer("version", torch.tensor(VERSION))
        self._table: Optional[torch.Tensor] = None
        self._table_key = None
        self._inference = False
        if self.unit is not None:
            if not cfg.is_authors or cfg.host_scale:
                self._calibrate_output_scale()
            if cfg.unit_lr_scale != 1:
                self.unit.scale_steps(cfg.unit_lr_scale)

    # fairseq integration ------------------------------------------------------------------------------------

    @property
    def is_adaptive(self) -> bool:
        return not isinstance(self.map, nn.Embedding)

    @property
    def wants_host_scale(self) -> bool:
        """Whether the host model should multiply this embedding's output by its usual sqrt(m): True but for the
        authors' unit without --define-residual or --define-host-scale, whose output enters the model as it is (as
        in DeLighT); the models set their `embed_scale` to 1 then."""
        return not (self.config.is_authors and not self.config.residual and not self.config.host_scale)

    def __getattr__(self, name: str):
        if name == "weight":  # the Map table [V, n], for `--share-*-embed(dings)`; not a property, so that the
            if self.is_adaptive:  # message survives nn.Module.__getattr__
                raise AttributeError("DefineEmbedding.weight: the Map is adaptive (--adaptive-input) and has no "
                                     "single table; tie an adaptive softmax to it with weights_for_band(i)")
            return self.map.weight
        return super().__getattr__(name)

    def weights_for_band(self, band: int):
        """(embedding weight, projection or None) of AdaptiveInput band `band`, for a tied AdaptiveSoftmax."""
        if not self.is_adaptive:
            raise AttributeError("DefineEmbedding.weights_for_band: the Map is a lookup table, not adaptive")
        return self.map.weights_for_band(band)

    def make_generation_fast_(self, **kwargs):
        """Called by fairseq's `prepare_for_inference_` (generate, interactive, eval-lm, hub)."""
        self.prepare_for_inference()

    # forward ------------------------------------------------------------------------------------------------

    def embed_ids(self, ids: torch.Tensor, map_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ids [*] -> [*, m], computed position by position (no table). `map_mask` ([*, d] or broadcastable): the
        authors' locked Map dropout mask, multiplied into e. Padding rows are exactly zero, except with the
        authors' unit, whose padding output is f(0) as in their code."""
        e = self.map(ids)
        if self.map_proj is not None:
            e = self.map_proj(e)
        e = self.map_dropout(e) if map_mask is None else e * map_mask
        if self.unit is None:
            return self._control(e)
        out = self.unit(e.reshape(-1, self.input_dim) * self.unit_input_scale).view(*ids.shape, self.embedding_dim)
        if self.host_factor is not None:
            out = out * self.host_factor
        if self.gate is not None:
            out = self._control(e) + self.gate * out
        if self.padding_idx is not None and not self.config.is_authors:
            out = out.masked_fill((ids == self.padding_idx).unsqueeze(-1), 0.0)
        return out

    def _control(self, e: torch.Tensor) -> torch.Tensor:
        """What --define-transform none hands the model: e [*, d] -> [*, m] (d -> m when d != m)."""
        return e if self.out_proj is None else self.out_proj(e)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [*] (integer ids in [0, V); [B, T] in the fairseq models) -> [*, m]."""
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.is_complex() \
                or tokens.dtype == torch.bool:
            kind = tokens.dtype if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"DefineEmbedding: tokens must be an integer tensor of ids, got {kind}")
        if tokens.numel() == 0:
            return self.embed_ids(tokens)
        self._check_ids(tokens)
        if self._uses_table():
            return F.embedding(tokens, self.inference_table())
        mask = self._locked_map_mask(tokens)
        if mask is not None:
            return self._embed_with_locked_mask(tokens, mask)
        if self.unit is None or not self.config.dedupe:
            return self.embed_ids(tokens)
        ids, inverse = torch.unique(tokens, return_inverse=True)
        return F.embedding(inverse, self.embed_ids(ids))

    def _locked_map_mask(self, tokens: torch.Tensor) -> Optional[torch.Tensor]:
        """The authors' Map dropout in training: one mask [S, d] per sequence (S = tokens.shape[0], the batch of
        the batch-first fairseq models; each id its own row for 1-D tokens), scaled 1 / (1 - p). None otherwise."""
        p = self.config.map_dropout
        if not (self.config.is_authors and self.training and p > 0):
            return None
        weight = next(self.map.parameters())
        keep = torch.full((tokens.shape[0], self.input_dim), 1.0 - p, device=weight.device, dtype=weight.dtype)
        return torch.bernoulli(keep) / (1.0 - p)

    def _embed_with_locked_mask(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens [S, *] with a mask [S, d] per sequence -> [S, *, m]. With dedupe, the unit runs once per unique
        (sequence, id) pair, the pairs whose inputs are equal."""
        sequence = torch.arange(tokens.shape[0], device=tokens.device).view(-1, *[1] * (tokens.dim() - 1))
        if not self.config.dedupe:
            return self.embed_ids(tokens, mask[sequence.expand_as(tokens)])
        pairs, inverse = torch.unique(sequence * self.num_embeddings + tokens, return_inverse=True)
        rows = self.embed_ids(pairs % self.num_embeddings, mask[pairs // self.num_embeddings])
        return F.embedding(inverse, rows)

    def _check_ids(self, tokens: torch.Tensor):
        """A clear error for ids outside [0, V), without a host-device synchronisation on accelerators."""
        if tokens.device.type == "cpu":
            low, high = (int(x) for x in torch.aminmax(tokens))
            if low < 0 or high >= self.num_embeddings:
                raise ValueError(f"DefineEmbedding: token id {low if low < 0 else high} is outside the vocabulary "
                                 f"[0, {self.num_embeddings}); the data and the model's dictionary disagree")
        else:
            torch._assert_async(((tokens >= 0) & (tokens < self.num_embeddings)).all(),
                                f"DefineEmbedding: a token id is outside the vocabulary [0, {self.num_embeddings})")

    # inference table ----------------------------------------------------------------------------------------

    def prepare_for_inference(self):
        """Arm the V x m inference table (built at the next forward in eval mode without autograd)."""
        self._inference = self.unit is not None and self.config.cache
        self._drop_table()

    def _uses_table(self) -> bool:
        return self._inference and not self.training and not torch.is_grad_enabled()

    def _table_context(self):
        """What the table depends on besides the ids: device, dtype, autocast dtype, and every parameter's storage
        and version counter (an in-place update, e.g. an optimizer step on the prepared model, bumps it)."""
        weight = next(self.map.parameters())
        device_type = weight.device.type
        autocast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        versions = tuple((p.data_ptr(), p._version) for p in self.parameters())
        return weight.device, weight.dtype, autocast, versions

    def inference_table(self) -> torch.Tensor:
        """The V x m table of unit outputs, built in chunks of `cache_chunk` ids (bounded peak memory), and rebuilt
        when a parameter changed in place since (`_table_context`)."""
        if self.unit is None:
            raise RuntimeError("DefineEmbedding.inference_table: --define-transform none has no unit to tabulate")
        key = self._table_context()
        if self._table is None or self._table_key != key:
            self._drop_table()
            device, chunk = key[0], self.config.cache_chunk
            with torch.no_grad():
                self._table = torch.cat([
                    self.embed_ids(torch.arange(start, min(start + chunk, self.num_embeddings), device=device))
                    for start in range(0, self.num_embeddings, chunk)
                ])
            self._table_key = key
        return self._table

    def _drop_table(self):
        self._table, self._table_key = None, None

    @property
    def cache_nbytes(self) -> int:
        """Bytes held by the inference table (0 when not built)."""
        return 0 if self._table is None else self._table.numel() * self._table.element_size()

    def train(self, mode: bool = True):
        if mode:
            self._inference = False
            self._drop_table()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .half(), ...
        self._drop_table()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._drop_table()
        if prefix + "version" not in state_dict:  # layout 1: the output scale was folded into Reduce's weights
            state_dict[prefix + "version"] = torch.tensor(VERSION)
            if self.unit is not None:
                state_dict.setdefault(prefix + "unit.output_scale", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # init -----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _calibrate_output_scale(self, sample: int = 4096):
        """Bring the unit's output std over (a sample of) the vocabulary to m^-0.5 (see the module docstring): the
        paper's unit by `output_scale`, the authors' by `host_factor`."""
        weight = next(self.unit.parameters())
        if weight.is_meta:  # built on the meta device (e.g. for counting): nothing to measure
            return
        was_training = self.training
        self.eval()
        ids = torch.randperm(self.num_embeddings, device=weight.device)[:sample]
        if self.padding_idx is not None:
            ids = ids[ids != self.padding_idx]
        e = self.map(ids)
        if self.map_proj is not None:
            e = self.map_proj(e)
        std = self.unit(e * self.unit_input_scale).std() if ids.numel() > 1 else torch.zeros(())
        if std > 0:
            factor = self.embedding_dim ** -0.5 / std
            if self.host_factor is not None:
                self.host_factor.fill_(factor)
            elif self.config.output_scale == "factor":
                self.unit.output_scale.fill_(factor)
            else:
                self.unit.reduce.weight.mul_(factor)
        self.train(was_training)

    # accounting -----------------------------------------------------------------------------------------------

    def accounting(self) -> List[dict]:
        """Parameters and multiply-accumulates per token of each part, read off the built modules.

        Rows {"part", "group", "weights", "biases", "norm", "params", "macs_per_token"}, group "map" (the Map:
        table(s), n -> d projection(s), the control's d -> m projection) or "define" (hgt.1 .. hgt.N and reduce;
        for the authors' unit input, glt.1 .. glt.N and output; the residual gate).
        MACs count the uncached unit (0 per token with the inference table). For an adaptive Map they are band 0's
        projection (the most frequent tokens; rarer bands cost less).
        """
        def row(part, group, modules, macs=None):
            weights = sum(m.weight.numel() for m in modules if getattr(m, "weight", None) is not None)
            biases = sum(m.bias.numel() for m in modules if m is not None and getattr(m, "bias", None) is not None)
            return {"part": part, "group": group, "weights": weights, "biases": biases, "norm": 0,
                    "macs_per_token": weights if macs is None else macs}

        if self.is_adaptive:
            tables = [band[0] for band in self.map.embeddings]
            projections = [band[1] for band in self.map.embeddings]
            first = getattr(projections[0], "weight", None)  # None: band 0 is not projected (n == d)
            rows = [row("map", "map", tables + projections, macs=0 if first is None else first.numel())]
        else:
            rows = [row("map", "map", [self.map], macs=0)]
            if self.map_proj is not None:
                rows.append(row("map_proj", "map", [self.map_proj]))
        if self.out_proj is not None:
            rows.append(row("out_proj", "map", [self.out_proj]))
        if isinstance(self.unit, AuthorsDefineUnit):
            unit = self.unit
            layers = [("input", unit.input_layer, unit.input_norm)]
            layers += [(f"glt.{i + 1}", glt, norm) for i, (glt, norm) in enumerate(zip(unit.layers, unit.norms))]
            layers.append(("output", unit.output_layer, unit.output_norm))
        elif self.unit is not None:
            layers = [(f"hgt.{i + 1}", glt, norm)
                      for i, (glt, norm) in enumerate(zip(self.unit.layers, self.unit.norms))]
            layers.append(("reduce", self.unit.reduce, None))
        else:
            layers = []
        for part, layer, norm in layers:
            rows.append(row(part, "define", [layer]))
            rows[-1]["norm"] = 0 if norm is None else sum(p.numel() for p in norm.parameters())
        if self.gate is not None:
            rows.append({"part": "gate", "group": "define", "weights": self.gate.numel(), "biases": 0, "norm": 0,
                         "macs_per_token": self.gate.numel()})
        for r in rows:
            r["params"] = r["weights"] + r["biases"] + r["norm"]
        return rows


def build_unit(cfg: DefineConfig, output_dim: int) -> Optional[nn.Module]:
    """The unit `--define-transform` names: the paper's (`DefineUnit`), the authors' (`AuthorsDefineUnit`), or None."""
    if not cfg.has_unit:
        return None
    return AuthorsDefineUnit(cfg, output_dim) if cfg.is_authors else DefineUnit(cfg, output_dim)


def build_map(num_embeddings: int, padding_idx: Optional[int], cfg: DefineConfig) -> nn.Module:
    """The Map: nn.Embedding(V, n), or fairseq's AdaptiveInput (band 0 n wide, every band projected to d)."""
    if cfg.adaptive_cutoff is None:
        table = nn.Embedding(num_embeddings, cfg.map_dim, padding_idx=padding_idx)
        nn.init.normal_(table.weight, mean=0.0, std=cfg.map_dim ** -0.5)
        if padding_idx is not None:
            nn.init.zeros_(table.weight[padding_idx])
        return table
    cutoff = list(cfg.adaptive_cutoff)
    if cutoff[0] < 1 or any(b <= a for a, b in zip(cutoff, cutoff[1:])) or cutoff[-1] > num_embeddings:
        raise cfg.error("adaptive_cutoff", f"must be strictly increasing positive ids, each <= the vocabulary "
                                           f"size {num_embeddings}")
    if cutoff[-1] < num_embeddings:
        cutoff.append(num_embeddings)
    for band in range(1, len(cutoff)):
        if int(cfg.map_dim // cfg.adaptive_factor ** band) < 1:
            raise cfg.error("adaptive_factor", f"leaves band {band} of {cfg.flag('map_dim')}={cfg.map_dim} with no "
                                               f"dimensions; use a smaller factor or fewer cutoffs")
    from fairseq.modules.adaptive_input import AdaptiveInput

    return AdaptiveInput(num_embeddings, padding_idx, cfg.map_dim, cfg.adaptive_factor, cfg.unit_input_dim, cutoff,
                         q_noise=0, qn_block_size=8)

