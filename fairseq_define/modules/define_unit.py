"""The DeFINE unit: Expand (Hierarchical Group Transformation with the DeFINE skip) -> Reduce.

Spec §1 (Mehta et al., ICLR 2020). With n = map dim, k = expand dim, N = depth, layer l (1-based) is a GLT with
g_l = max(g_max // 2^(l-1), 1) groups and output width k_l = n + l*(k - n)/N rounded up to a multiple of
max(g_l, g_{l+1}, 8) (k_N = k). From layer 2 on, the DeFINE skip ("mixer") splits e and the previous output h
into g_l chunks each, and group j reads [e_j ; h_j].

Activations stay group-major ([g, R, width/g]) through the whole stack: the mixer is one concatenation along the
feature dimension, and per-group LayerNorm is an ordinary LayerNorm over the last dimension.
"""

from dataclasses import dataclass
from typing import List

import torch
import torch.nn as nn

from fairseq_define.modules.group_linear import GroupLinear, from_group_major, regroup, to_group_major

TRANSFORMS = ("define", "define-nomix", "hgt", "glt", "linear")
NORMS = ("none", "ln")
ACTIVATIONS = {"none": nn.Identity, "gelu": nn.GELU, "swish": nn.SiLU, "relu": nn.ReLU}


@dataclass(frozen=True)
class HGTLayerSpec:
    """One Expand layer: a GLT `in_features -> out_features` with `groups` groups."""

    in_features: int
    out_features: int
    groups: int


def hgt_schedule(map_dim: int, expand_dim: int, depth: int, max_groups: int, transform: str = "define") -> List[HGTLayerSpec]:
    """Widths and groups of the N Expand layers (spec §1.2), with every divisibility rule checked.

    Errors name the argument, its value and a fix. Example (MT config): n=128, k=1024, N=3, g_max=4 gives groups
    [4, 2, 1], inputs [128, 560, 856], outputs [432, 728, 1024].
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform={transform!r} is not one of {', '.join(TRANSFORMS)}")
    for name, value in (("map_dim", map_dim), ("expand_dim", expand_dim), ("depth", depth), ("max_groups", max_groups)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if max_groups & (max_groups - 1):
        raise ValueError(f"max_groups={max_groups} must be a power of two (the group count halves every layer), e.g. {1 << (max_groups.bit_length() - 1)}")
    if expand_dim < map_dim:
        raise ValueError(f"expand_dim={expand_dim} must be >= map_dim={map_dim}: the HGT expands n -> k")

    def groups_of(layer: int) -> int:  # 1-based; layer depth + 1 counts as a single group (Reduce)
        if layer > depth or transform == "linear":
            return 1
        if transform == "glt":
            return max_groups
        return max(max_groups >> (layer - 1), 1)

    specs, previous = [], map_dim
    for layer in range(1, depth + 1):
        groups = groups_of(layer)
        if layer == depth:
            width = expand_dim
            if width % groups:
                raise ValueError(
                    f"expand_dim={expand_dim} must be divisible by the {groups} groups of HGT layer {layer}; "
                    f"use a multiple of {groups}, or a smaller max_groups or larger depth"
                )
        else:
            quantum = max(groups, groups_of(layer + 1), 8)
            exact = map_dim * depth + layer * (expand_dim - map_dim)  # N * (n + l (k - n) / N)
            width = -(-exact // (depth * quantum)) * quantum
        mixes = layer >= 2 and transform in ("define", "define-nomix")
        in_features = previous + map_dim if mixes else previous
        if layer == 1 and map_dim % groups:
            raise ValueError(
                f"map_dim={map_dim} must be divisible by the {groups} groups of HGT layer 1; "
                f"use a multiple of {groups} or a smaller max_groups"
            )
        if mixes and transform == "define" and map_dim % groups:
            raise ValueError(
                f"map_dim={map_dim} must be divisible by the {groups} groups of HGT layer {layer} "
                f"(the DeFINE skip splits e into {groups} chunks); use a multiple of {groups} or a smaller max_groups"
            )
        if in_features % groups:
            raise ValueError(
                f"HGT layer {layer} input width {in_features} (map_dim + previous width) is not divisible by its "
                f"{groups} groups; choose map_dim as a multiple of {groups}"
            )
        specs.append(HGTLayerSpec(in_features, width, groups))
        previous = width
    return specs


class DefineUnit(nn.Module):
    """Expand + Reduce: e [R, n] -> [R, m].

    Between layers: per-group LayerNorm (`norm="ln"`, affine shared by the groups of a layer, 2*k_l/g_l
    parameters, as in the authors' code), an activation and dropout. `norm="none", activation="none",
    dropout=0` is the paper-literal purely linear unit.
    """

    def __init__(
        self,
        map_dim: int,
        expand_dim: int,
        depth: int,
        max_groups: int,
        output_dim: int,
        norm: str = "ln",
        activation: str = "gelu",
        dropout: float = 0.0,
        reduce_skip: bool = False,
        transform: str = "define",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not one of {', '.join(NORMS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        if not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(f"output_dim={output_dim!r} must be a positive integer")
        self.map_dim, self.expand_dim, self.output_dim = map_dim, expand_dim, output_dim
        self.transform, self.reduce_skip = transform, reduce_skip
        self.specs = hgt_schedule(map_dim, expand_dim, depth, max_groups, transform)
        self.layers = nn.ModuleList(GroupLinear(s.in_features, s.out_features, s.groups) for s in self.specs)
        self.norms = nn.ModuleList(
            nn.LayerNorm(s.out_features // s.groups) if norm == "ln" else nn.Identity() for s in self.specs
        )
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.reduce = nn.Linear(expand_dim + (map_dim if reduce_skip else 0), output_dim)
        nn.init.xavier_uniform_(self.reduce.weight)
        nn.init.zeros_(self.reduce.bias)

    def layer_input(self, layer: int, e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Group-major input of Expand layer `layer` (0-based) from e [R, n] and the previous output h."""
        groups = self.specs[layer].groups
        if layer == 0:
            return to_group_major(e, groups)
        if self.transform == "define":  # the DeFINE skip: group j reads [e_j ; h_j]
            return torch.cat([to_group_major(e, groups), regroup(h, groups)], dim=2)
        if self.transform == "define-nomix":  # [e ; h], then contiguous grouping
            return to_group_major(torch.cat([e, from_group_major(h)], dim=1), groups)
        return regroup(h, groups)  # hgt, glt, linear: no skip

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """e [R, n] -> [R, m]."""
        h = e
        for layer, (glt, norm) in enumerate(zip(self.layers, self.norms)):
            h = self.dropout(self.activation(norm(glt.forward_group_major(self.layer_input(layer, e, h)))))
        h = from_group_major(h)
        if self.reduce_skip:
            h = torch.cat([h, e], dim=1)
        return self.reduce(h)

    def part_counts(self):
        """(name, weights, biases, norm parameters) of every Expand layer and of Reduce."""
        rows = []
        for i, (spec, norm) in enumerate(zip(self.specs, self.norms)):
            norm_params = sum(p.numel() for p in norm.parameters())
            rows.append((f"hgt.{i + 1}", spec.in_features * spec.out_features // spec.groups, spec.out_features, norm_params))
        rows.append(("reduce", self.reduce.weight.numel(), self.reduce.bias.numel(), 0))
        return rows

    def extra_repr(self) -> str:
        return (
            f"transform={self.transform}, groups={[s.groups for s in self.specs]}, "
            f"widths={[self.map_dim] + [s.out_features for s in self.specs]} -> {self.output_dim}"
        )
