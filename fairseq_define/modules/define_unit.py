"""The DeFINE unit: Expand (Hierarchical Group Transformation with the DeFINE skip) -> Reduce.

The paper's unit (Mehta et al., ICLR 2020; docs/design.md#method). With d = the unit's input width, k = expand dim,
N = depth, layer l (1-based) is a GLT with g_l = max(g_max // 2^(l-1), 1) groups and output width
k_l = d + l*(k - d)/N rounded up to a multiple of max(g_l, g_{l+1}, 8) (k_N = k); `DefineConfig.schedule` computes
and checks it. From layer 2 on, the DeFINE skip ("mixer") splits e and the previous output h into g_l chunks each,
and group j reads [e_j ; h_j].

Activations stay group-major ([g, R, width/g]) through the whole stack: the mixer is one concatenation along the
feature dimension, per-group LayerNorm is an ordinary LayerNorm over the last dimension, and the only layout
changes are at the two ends (`GroupLinear.forward_group_major` is the kernel; see `group_linear.py`).
"""

import torch
import torch.nn as nn

from fairseq_define.modules.define_config import DefineConfig
from fairseq_define.modules.group_linear import GroupLinear, from_group_major, regroup, to_group_major
from fairseq_define.modules.step_scale import scale_steps

ACTIVATIONS = {"none": nn.Identity, "gelu": nn.GELU, "swish": nn.SiLU, "relu": nn.ReLU}


class DefineUnit(nn.Module):
    """Expand + Reduce: e [R, d] -> [R, m].

    Between layers: per-group LayerNorm (`norm="ln"`, affine shared by the groups of a layer, 2*k_l/g_l
    parameters, as in the authors' code), an activation and dropout. `norm="none", activation="none",
    dropout=0` is the paper-literal purely linear unit. Reduce's output is multiplied by `output_scale`, a
    persistent scalar buffer (1 unless `config.output_scale == "factor"`, see `DefineEmbedding`).
    """

    def __init__(self, config: DefineConfig, output_dim: int):
        super().__init__()
        if not config.has_unit:
            raise ValueError(f"{config.flag('transform')}=none has no unit")
        if not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(f"output_dim={output_dim!r} must be a positive integer")
        self.input_dim, self.expand_dim, self.output_dim = config.unit_input_dim, config.expand_dim, output_dim
        self.transform, self.reduce_skip = config.transform, config.reduce_skip
        self.specs = config.schedule()
        self.layers = nn.ModuleList(GroupLinear(s.in_features, s.out_features, s.groups) for s in self.specs)
        self.norms = nn.ModuleList(
            nn.LayerNorm(s.out_features // s.groups) if config.norm == "ln" else nn.Identity() for s in self.specs
        )
        self.activation = ACTIVATIONS[config.activation]()
        self.dropout = nn.Dropout(config.dropout)
        self.reduce = nn.Linear(self.expand_dim + (self.input_dim if self.reduce_skip else 0), output_dim)
        nn.init.xavier_uniform_(self.reduce.weight)
        nn.init.zeros_(self.reduce.bias)
        self.register_buffer("output_scale", torch.ones(()))

    def layer_input(self, layer: int, e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Group-major input of Expand layer `layer` (0-based) from e [R, d] and the previous output h."""
        groups = self.specs[layer].groups
        if layer == 0:
            return to_group_major(e, groups)
        if self.transform == "define":  # the DeFINE skip: group j reads [e_j ; h_j]
            return torch.cat([to_group_major(e, groups), regroup(h, groups)], dim=2)
        if self.transform == "define-nomix":  # [e ; h], then contiguous grouping
            return to_group_major(torch.cat([e, from_group_major(h)], dim=1), groups)
        return regroup(h, groups)  # hgt, glt, linear: no skip

    def expand(self, e: torch.Tensor) -> torch.Tensor:
        """e [R, d] -> the last HGT layer's output [R, k] (row-major), Reduce's input without the skip."""
        h = e
        for layer, (glt, norm) in enumerate(zip(self.layers, self.norms)):
            h = self.dropout(self.activation(norm(glt.forward_group_major(self.layer_input(layer, e, h)))))
        return from_group_major(h)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """e [R, d] -> [R, m]."""
        h = self.expand(e)
        if self.reduce_skip:
            h = torch.cat([h, e], dim=1)
        return self.reduce(h) * self.output_scale

    def scale_steps(self, rule):
        """Scale the parameters' Adam steps by `rule` (a number c, or "fan-in"); see `step_scale.scale_steps`.
        Call once, after the weights are initialised."""
        scale_steps(self, rule, self.input_dim)

    def extra_repr(self) -> str:
        return (
            f"transform={self.transform}, groups={[s.groups for s in self.specs]}, "
            f"widths={[self.input_dim] + [s.out_features for s in self.specs]} -> {self.output_dim}"
        )

