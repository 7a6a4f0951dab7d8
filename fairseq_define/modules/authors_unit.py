"""The DeFINE unit of the authors' released code (sacmehta/delight, `DExTraUnit(is_iclr_version=True)` inside
`DExTraEmb`, the `--define-iclr` option), written from its description (docs/authors-unit.md). It
differs from the paper's unit (`define_unit.py`) in structure, not only in settings:

    e [R, d] -> input layer Linear(d -> p) + LN + act + dropout = x            (p = m // 2)
             -> N GLT layers; layer l reads x (l = 1) or mix(x, y_{l-1}) (l >= 2), widths linspace(p, k, N)
                rounded up, the last one dense (k + p) -> m; each + per-group LN + act + dropout
             -> output layer Linear(m + p -> m) on [x ; y_N] + LN + act + dropout      -> [R, m]

`mix(x, y)` with g = the next layer's groups lays out [x_1 ; y_1 ; ... ; x_g ; y_g] (contiguous chunks, x first),
so group j of the next GLT reads [x_j ; y_j]. The group schedule is capped by G and cycles for deep stacks
(`authors_groups`). GLT weights with g > 1 get Xavier on the 3-D tensor [g, in/g, out/g] (torch's fans of a 3-D
tensor: fan_in = in/g * out/g, fan_out = out); dense layers (g = 1) are `nn.Linear` with Xavier; biases 0.
The output is act(LN(.)), O(1) per coordinate: no output scale, and the host adds no sqrt(m) (`DefineEmbedding`
tells it through `scale_by_host`).
"""

from dataclasses import dataclass
from typing import List

import torch
import torch.nn as nn

from fairseq_define.modules.define_config import DefineConfig
from fairseq_define.modules.define_unit import ACTIVATIONS
from fairseq_define.modules.group_linear import GroupLinear, from_group_major, to_group_major
from fairseq_define.modules.step_scale import scale_steps


@dataclass(frozen=True)
class AuthorsLayerSpec:
    """One GLT layer of the authors' unit: `in_features -> out_features` with `groups` groups."""

    in_features: int
    out_features: int
    groups: int


def authors_groups(depth: int, max_groups: int) -> List[int]:
    """g_1 .. g_N: doublings counted from the last layer (always 1 group), each capped by G; a count over G
    restarts the doubling (the cycling of docs/authors-unit.md: N = 4, G = 4 gives [1, 4, 2, 1])."""
    groups, exponent = [], 0
    for _ in range(depth):
        g = 2 ** exponent
        if g <= max_groups:
            exponent += 1
        else:
            g, exponent = 1, 1
        groups.append(g)
    return groups[::-1]


def authors_widths(start: int, stop: int, depth: int) -> List[int]:
    """numpy.linspace(start, stop, depth).astype(int)[1:] in plain Python (the same float64 arithmetic:
    start + i * ((stop - start) / (depth - 1)), the last point exactly `stop`, truncated toward zero)."""
    step = (stop - start) / (depth - 1)
    points = [int(i * step + start) for i in range(depth - 1)] + [int(stop)]
    return points[1:]


def authors_layers(config: DefineConfig, output_dim: int) -> List[AuthorsLayerSpec]:
    """The N GLT layers (docs/authors-unit.md) for the unit's input width d = config.unit_input_dim,
    k = config.expand_dim, G = config.max_groups and the model width m = output_dim; p = m // 2. Raises a one-line
    ValueError naming the flags for widths the authors' code could not build (their GroupLinear calls exit(-1))."""
    p, k, depth, m = output_dim // 2, config.expand_dim, config.depth, output_dim
    if p < 1:
        raise config.error("transform", f"needs a model width m >= 2 (its input layer is m // 2 wide), got m = {m}")
    groups = authors_groups(depth, config.max_groups)
    for layer, g in enumerate(groups, start=1):
        if p % g:
            raise config.error("max_groups", f"gives GLT layer {layer} of the authors' unit {g} groups, which do not "
                                             f"divide its input-layer width m // 2 = {p} (m = {m}, the model width); "
                                             f"use a model width divisible by {2 * g} or a smaller cap")
    raw = authors_widths(p, k, depth)
    specs, previous = [], None
    for layer, g in enumerate(groups, start=1):
        if layer < depth:
            quantum = max(g, groups[layer], 8)
            width = -(-raw[layer - 1] // quantum) * quantum
        else:
            width = m
        in_features = p if layer == 1 else previous + p
        specs.append(AuthorsLayerSpec(in_features, width, g))
        previous = width
    return specs


class AuthorsDefineUnit(nn.Module):
    """The authors' unit: e [R, d] -> [R, m] (module docstring). Parameters by role, in forward order:
    `input_layer` (+ `input_norm`), `layers[l]` (+ `norms[l]`), `output_layer` (+ `output_norm`)."""

    def __init__(self, config: DefineConfig, output_dim: int):
        super().__init__()
        if not config.is_authors:
            raise ValueError(f"AuthorsDefineUnit needs {config.flag('transform')}=authors, got {config.transform}")
        if not isinstance(output_dim, int):
            raise ValueError(f"output_dim={output_dim!r} must be an integer")
        self.input_dim, self.expand_dim, self.output_dim = config.unit_input_dim, config.expand_dim, output_dim
        self.proj_dim = output_dim // 2
        self.specs = authors_layers(config, output_dim)
        norm = (lambda width: nn.LayerNorm(width)) if config.norm == "ln" else (lambda width: nn.Identity())
        self.input_layer = nn.Linear(self.input_dim, self.proj_dim)
        self.input_norm = norm(self.proj_dim)
        self.layers = nn.ModuleList(
            nn.Linear(s.in_features, s.out_features) if s.groups == 1 else GroupLinear(s.in_features, s.out_features,
                                                                                         s.groups)
            for s in self.specs
        )
        self.norms = nn.ModuleList(norm(s.out_features // s.groups) for s in self.specs)
        self.output_layer = nn.Linear(output_dim + self.proj_dim, output_dim)
        self.output_norm = norm(output_dim)
        self.activation = ACTIVATIONS[config.activation]()
        self.dropout = nn.Dropout(config.dropout)
        for layer in (self.input_layer, *self.layers, self.output_layer):
            nn.init.xavier_uniform_(layer.weight)  # on GroupLinear's [g, in/g, out/g]: the 3-D fans
            nn.init.zeros_(layer.bias)

    def _finish(self, h: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        return self.dropout(self.activation(norm(h)))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """e [R, d] -> [R, m]."""
        x = self._finish(self.input_layer(e), self.input_norm)  # [R, p]
        h = x
        for index, (spec, layer, norm) in enumerate(zip(self.specs, self.layers, self.norms)):
            if spec.groups == 1:
                y = self._finish(layer(h), norm)  # [R, o_l]
            else:  # per-group LayerNorm over each group's o_l/g features
                y = from_group_major(self._finish(layer.forward_group_major(to_group_major(h, spec.groups)), norm))
            last = index == len(self.specs) - 1
            h = y if last else mix(x, y, self.specs[index + 1].groups)  # [R, p + o_l]: the next layer's input
        return self._finish(self.output_layer(torch.cat([x, h], dim=1)), self.output_norm)

    def scale_steps(self, rule):
        """Scale the parameters' Adam steps by `rule` (a number, or "fan-in"); see `step_scale.scale_steps`."""
        scale_steps(self, rule, self.input_dim)

    def extra_repr(self) -> str:
        return (f"groups={[s.groups for s in self.specs]}, widths={self.input_dim} -> {self.proj_dim} -> "
                f"{[s.out_features for s in self.specs]} -> {self.output_dim}")


def mix(x: torch.Tensor, y: torch.Tensor, groups: int) -> torch.Tensor:
    """x [R, p], y [R, o] -> [R, p + o] laid out [x_1 ; y_1 ; ... ; x_g ; y_g] (g = `groups` contiguous chunks)."""
    rows = x.shape[0]
    return torch.cat([x.view(rows, groups, -1), y.view(rows, groups, -1)], dim=2).view(rows, -1)

