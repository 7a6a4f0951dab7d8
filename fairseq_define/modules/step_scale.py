"""Per-parameter step sizes for Adam-type optimizers, as a torch parametrization (no optimizer change).

A parameter W with scale s is stored as W / s and multiplied back in the forward: the function, the initial values
and the gradient w.r.t. W are unchanged, but an optimizer whose step ignores the gradient's scale (Adam) moves the
stored tensor by ~lr, so W moves by ~s * lr (SGD: s^2 * lr). Two rules (`--define-unit-lr-scale`):
- a number c: every parameter of the module at c;
- "fan-in": each weight matrix at min(1, d / F), F its per-group fan-in (in/g of a GLT, `in_features` of a
  Linear) and d the unit's input width; biases and LayerNorm at 1. This is muP's Adam rule for hidden matrices
  (Yang et al. 2021, "Tensor Programs V", Table 3: the step of a hidden weight scales as 1 / fan_in), with the
  unit's input width as the base width, so the first layers of a unit keep the model's step.
"""

from typing import Iterator, Tuple, Union

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from fairseq_define.modules.define_config import FAN_IN
from fairseq_define.modules.group_linear import GroupLinear


def fan_in(module: nn.Module) -> int:
    """The per-group fan-in of a Linear or GroupLinear weight."""
    if isinstance(module, GroupLinear):
        return module.in_features // module.groups
    return module.in_features


def step_scales(module: nn.Module, rule: Union[float, str], input_dim: int) -> Iterator[Tuple[nn.Module, str, float]]:
    """(submodule, parameter name, scale) for every parameter of `module` whose scale is not 1."""
    for sub in module.modules():
        for name, _ in list(sub.named_parameters(recurse=False)):
            if rule == FAN_IN:
                is_matrix = name == "weight" and isinstance(sub, (nn.Linear, GroupLinear))
                scale = min(1.0, input_dim / fan_in(sub)) if is_matrix else 1.0
            else:
                scale = float(rule)
            if scale != 1.0:
                yield sub, name, scale


def scale_steps(module: nn.Module, rule: Union[float, str], input_dim: int):
    """Register the step-scaling parametrization on `module`'s parameters by `rule` (module docstring). Call once,
    after the weights are initialised."""
    for sub, name, scale in list(step_scales(module, rule, input_dim)):
        parametrize.register_parametrization(sub, name, Scaled(scale))


class Scaled(nn.Module):
    """stored X -> scale * X."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored * self.scale

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"
