"""Group-linear transformation (GLT): a block-diagonal linear map computed with one batched matmul.

The input's features are split into `groups` contiguous, equal chunks; chunk j goes through its own affine map
W_j (in/g -> out/g); the results are concatenated. The groups are the batch dimension of a single
`torch.baddbmm` (bias fused), so the cost is one call whatever g is.

Two entry points, one kernel (`torch.baddbmm` over group-major operands, so autocast, double backward and
`torch.compile` work as for any built-in op):
- group-major ``[g, R, in/g] -> [g, R, out/g]`` (`forward_group_major`): what the DeFINE unit runs. A stack of
  GLTs stays group-major from its first layer to its last, so no transpose or copy is made between layers
  (`to_group_major` / `from_group_major` convert at the two ends);
- row-major ``[..., in] -> [..., out]`` (`forward`), for use as an ordinary layer: the same kernel between a
  strided view of the input and one copy of the output back to row-major (none when g == 1).
A row-major custom autograd function that writes straight into strided output views was measured too
(`benchmarks/glt.py`); it was slower than the group-major stack inside the unit, so the package does not use it.
"""

import math

import torch
import torch.nn as nn


def to_group_major(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[..., F] -> [groups, R, F/groups], R = prod(leading dims). A view (no copy) when x is contiguous."""
    features = x.shape[-1]
    return x.reshape(-1, groups, features // groups).transpose(0, 1)


def from_group_major(x: torch.Tensor) -> torch.Tensor:
    """[g, R, F/g] -> [R, F] (row-major, contiguous). Free when g == 1."""
    groups, rows, width = x.shape
    if groups == 1:
        return x[0]
    return x.transpose(0, 1).reshape(rows, groups * width)


def regroup(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Group-major [g, R, c] -> [groups, R, (g/groups)*c], where new group j holds old groups j*r ... j*r+r-1
    (r = g/groups): the contiguous feature chunks of the row-major [R, g*c] tensor, without going through it."""
    g, rows, width = x.shape
    if g == groups:
        return x
    ratio = g // groups
    return x.reshape(groups, ratio, rows, width).transpose(1, 2).reshape(groups, rows, ratio * width)


class GroupLinear(nn.Module):
    """Block-diagonal linear layer with `groups` blocks: in_features*out_features/groups weights.

    Parameters: ``weight`` [g, in/g, out/g], ``bias`` [g, 1, out/g]. Each block is initialised on its own
    (Xavier-uniform with fan_in = in/g, fan_out = out/g), so that every block behaves like an ordinary
    in/g -> out/g linear layer at init.
    """

    def __init__(self, in_features: int, out_features: int, groups: int = 1, bias: bool = True, device=None,
                 dtype=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features), ("groups", groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GroupLinear: {name}={value!r} must be a positive integer")
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if value % groups:
                raise ValueError(
                    f"GroupLinear: {name}={value} is not divisible by groups={groups}; "
                    f"choose {name} as a multiple of {groups} or fewer groups"
                )
        self.in_features = in_features
        self.out_features = out_features
        self.groups = groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(groups, in_features // groups, out_features // groups, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(groups, 1, out_features // groups, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        fan_in, fan_out = self.weight.shape[1:]
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _check_input(self, x: torch.Tensor, width: int, where: str):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"GroupLinear.{where}: input must be a floating-point tensor, got {kind}")
        if x.shape[-1] != width:
            raise ValueError(
                f"GroupLinear.{where}: input has last dimension {x.shape[-1]}, expected {width} "
                f"(in_features={self.in_features}, groups={self.groups}); got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Row-major: x [..., in_features] -> [..., out_features]."""
        self._check_input(x, self.in_features, "forward")
        leading = x.shape[:-1]
        y = self.forward_group_major(to_group_major(x.reshape(-1, self.in_features), self.groups))
        return from_group_major(y).view(*leading, self.out_features)

    def forward_group_major(self, x: torch.Tensor) -> torch.Tensor:
        """Group-major: x [g, R, in/g] -> [g, R, out/g]."""
        self._check_input(x, self.in_features // self.groups, "forward_group_major")
        if x.dim() != 3 or x.shape[0] != self.groups:
            raise ValueError(
                f"GroupLinear.forward_group_major: expected shape [groups={self.groups}, R, "
                f"{self.in_features // self.groups}], got {tuple(x.shape)}"
            )
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}, "
                f"bias={self.bias is not None}")
