"""--define-unit-lr-scale: a number c scales every unit parameter's Adam step; fan-in scales each weight matrix's
by min(1, d / F) (F its per-group fan-in, d the unit's input width) and leaves biases and LayerNorm at 1."""

import pytest
import torch

from fairseq_define.modules.authors_unit import AuthorsDefineUnit
from fairseq_define.modules.define_config import DefineConfig
from fairseq_define.modules.define_unit import DefineUnit
from fairseq_define.modules.step_scale import fan_in, step_scales

LR = 1e-2


def effective_steps(unit_class, rule, **sizes):
    """{parameter name: max |change| / lr of the effective tensor} after one Adam step on a toy loss (Adam's first
    step is lr * sign(gradient) per element, whatever the gradient's scale), with the plain unit's first step
    measured alongside to check that only the step size changed."""
    steps = []
    for scale in (1.0, rule):
        torch.manual_seed(0)
        unit = unit_class(DefineConfig(**sizes), 48)
        if scale != 1.0:
            unit.scale_steps(scale)
        effective = dict(unit.named_parameters())  # stored tensors; the effective ones are read below
        names = [n.replace("parametrizations.", "").replace(".original", "") for n in effective]
        before = {n: t.detach().clone() for n, t in zip(names, effective_tensors(unit, names))}
        optimizer = torch.optim.Adam(unit.parameters(), lr=LR, eps=1e-12)
        torch.manual_seed(1)
        unit(torch.randn(16, sizes["map_dim"])).sin().sum().backward()
        optimizer.step()
        with torch.no_grad():
            steps.append({n: ((t - before[n]).abs().max() / LR).item()
                          for n, t in zip(names, effective_tensors(unit, names))})
    return steps


def effective_tensors(unit, names):
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        yield getattr(unit.get_submodule(module_name), attribute)


@pytest.mark.parametrize("unit_class,transform", [(DefineUnit, "define"), (AuthorsDefineUnit, "authors")])
def test_fan_in_scales_each_matrix_by_min_1_d_over_f(unit_class, transform):
    sizes = dict(map_dim=32, expand_dim=256, depth=3, max_groups=4, transform=transform)
    plain, scaled = effective_steps(unit_class, "fan-in", **sizes)
    unit = unit_class(DefineConfig(**sizes), 48)
    matrices = {f"{name}.weight": min(1.0, 32 / fan_in(module)) for name, module in unit.named_modules()
                if hasattr(module, "in_features") and name}
    assert any(s < 1 for s in matrices.values()) and any(s == 1 for s in matrices.values())
    for name, step in scaled.items():
        expected = matrices.get(name, 1.0)  # biases and LayerNorm: 1
        assert step == pytest.approx(expected * plain[name], rel=1e-3), name
        assert plain[name] == pytest.approx(1.0, rel=1e-3), name


def test_a_number_scales_every_parameter():
    sizes = dict(map_dim=32, expand_dim=256, depth=3, max_groups=4)
    plain, scaled = effective_steps(DefineUnit, 0.3, **sizes)
    for name, step in scaled.items():
        assert step == pytest.approx(0.3 * plain[name], rel=1e-3), name


def test_fan_in_values_of_the_study_units():
    """d = 256, k = 1024, N = 3, g_max = 32. The paper's unit: per-group fan-ins 8, 48, 128 and Reduce's 1,024, so
    only Reduce moves slower (0.25x). The authors' unit: 256, 32, 352, 1,152 and the output layer's 384."""
    paper = DefineUnit(DefineConfig(map_dim=256, expand_dim=1024, depth=3, max_groups=32), 256)
    assert [(fan_in(m), s) for m, _, s in step_scales(paper, "fan-in", 256)] == [(1024, 0.25)]
    authors = AuthorsDefineUnit(DefineConfig(map_dim=256, expand_dim=1024, depth=3, max_groups=32,
                                             transform="authors"), 256)
    assert [(fan_in(m), s) for m, _, s in step_scales(authors, "fan-in", 256)] == [
        (352, 256 / 352), (1152, 256 / 1152), (384, 256 / 384)]


def test_the_flag_takes_a_number_or_fan_in():
    assert DefineConfig(unit_lr_scale="fan-in").unit_lr_scale == "fan-in"
    assert DefineConfig(unit_lr_scale="0.3").unit_lr_scale == 0.3 == DefineConfig(unit_lr_scale=0.3).unit_lr_scale
    with pytest.raises(ValueError, match="--define-unit-lr-scale=fanin is neither a positive number nor fan-in"):
        DefineConfig(unit_lr_scale="fanin")
    with pytest.raises(ValueError, match="--define-unit-lr-scale=-1.0 must be positive"):
        DefineConfig(unit_lr_scale=-1.0)
