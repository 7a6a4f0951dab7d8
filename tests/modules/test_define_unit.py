import pytest
import torch

from fairseq_define.modules.define_config import DefineConfig
from fairseq_define.modules.define_unit import DefineUnit
from fairseq_define.modules.group_linear import from_group_major


def hgt_schedule(map_dim, expand_dim, depth, max_groups, transform="define"):
    return DefineConfig(map_dim=map_dim, expand_dim=expand_dim, depth=depth, max_groups=max_groups,
                        transform=transform).schedule()


def build_unit(map_dim, expand_dim, depth, max_groups, output_dim, **options):
    config = DefineConfig(map_dim=map_dim, expand_dim=expand_dim, depth=depth, max_groups=max_groups, **options)
    return DefineUnit(config, output_dim)


def test_schedule_mt_config_matches_spec():
    specs = hgt_schedule(map_dim=128, expand_dim=1024, depth=3, max_groups=4)
    assert [s.groups for s in specs] == [4, 2, 1]
    assert [s.in_features for s in specs] == [128, 560, 856]
    assert [s.out_features for s in specs] == [432, 728, 1024]


def test_schedule_ptb_config_matches_spec():
    specs = hgt_schedule(map_dim=128, expand_dim=1024, depth=7, max_groups=64)
    assert [s.groups for s in specs] == [64, 32, 16, 8, 4, 2, 1]
    assert [s.out_features for s in specs] == list(range(256, 1025, 128))


@pytest.mark.parametrize(
    "transform,groups,inputs",
    [
        ("linear", [1, 1, 1], [128, 432, 728]),
        ("glt", [4, 4, 4], [128, 432, 728]),
        ("hgt", [4, 2, 1], [128, 432, 728]),
        ("define-nomix", [4, 2, 1], [128, 560, 856]),
        ("define", [4, 2, 1], [128, 560, 856]),
    ],
)
def test_schedule_ablations(transform, groups, inputs):
    specs = hgt_schedule(128, 1024, 3, 4, transform)
    assert [s.groups for s in specs] == groups
    assert [s.in_features for s in specs] == inputs
    assert specs[-1].out_features == 1024


def naive_define_unit(unit: DefineUnit, e: torch.Tensor) -> torch.Tensor:
    """Per-group loops straight from the paper: group j of layer l >= 2 reads [e_j ; h_j]."""
    h = None
    for layer, (spec, glt, norm) in enumerate(zip(unit.specs, unit.layers, unit.norms)):
        g = spec.groups
        e_chunks = e.chunk(g, dim=1)
        outs = []
        for j in range(g):
            x = e_chunks[j] if layer == 0 else torch.cat([e_chunks[j], h.chunk(g, dim=1)[j]], dim=1)
            outs.append(unit.activation(norm(x @ glt.weight[j] + glt.bias[j, 0])))
        h = torch.cat(outs, dim=1)
    return unit.reduce(h)


@pytest.mark.parametrize("norm,activation", [("none", "none"), ("ln", "gelu")])
@pytest.mark.parametrize("max_groups,depth", [(4, 3), (16, 3), (8, 5)])
def test_mixer_matches_naive_per_group_implementation(norm, activation, max_groups, depth):
    torch.manual_seed(0)
    unit = build_unit(32, 128, depth, max_groups, 24, norm=norm, activation=activation).double()
    e = torch.randn(6, 32, dtype=torch.double)
    torch.testing.assert_close(unit(e), naive_define_unit(unit, e))


def jacobian_from_e(unit: DefineUnit, layer: int) -> torch.Tensor:
    """|d out_layer / d e| > 0 as [out_features, n] (paths through earlier layers included)."""
    def layer_output(e):
        h = e
        for i, glt in enumerate(unit.layers):
            h = glt.forward_group_major(unit.layer_input(i, e, h))
            if i == layer:
                return from_group_major(h)[0]

    e = torch.randn(1, unit.input_dim, dtype=torch.double)
    return torch.autograd.functional.jacobian(layer_output, e)[:, 0, :].abs() > 0


def direct_jacobian_from_e(unit: DefineUnit, layer: int) -> torch.Tensor:
    """|d out_layer / d e| > 0 holding the previous layer's output fixed: the skip connection alone."""
    e0 = torch.randn(1, unit.input_dim, dtype=torch.double)
    h = e0
    for i in range(layer):
        h = unit.layers[i].forward_group_major(unit.layer_input(i, e0, h)).detach()

    def direct(e):
        return from_group_major(unit.layers[layer].forward_group_major(unit.layer_input(layer, e, h)))[0]

    return torch.autograd.functional.jacobian(direct, e0)[:, 0, :].abs() > 0


def make_unit(transform):
    torch.manual_seed(0)
    return build_unit(16, 64, 3, 4, 8, norm="none", activation="none", transform=transform).double()


def test_define_skip_is_group_wise():
    unit = make_unit("define")
    direct = direct_jacobian_from_e(unit, 1)  # layer 2: 2 groups, e split in 2 chunks of 8
    out_per_group = unit.specs[1].out_features // 2
    assert direct[:out_per_group, :8].all() and not direct[:out_per_group, 8:].any()
    assert direct[out_per_group:, 8:].all() and not direct[out_per_group:, :8].any()


@pytest.mark.parametrize("transform", ["hgt", "glt", "linear"])
def test_no_skip_transforms_see_e_only_through_layer_one(transform):
    unit = make_unit(transform)
    for layer in (1, 2):
        assert not direct_jacobian_from_e(unit, layer).any()
    assert jacobian_from_e(unit, 2).any()


def test_define_nomix_skip_is_plain_concatenation_with_contiguous_groups():
    unit = make_unit("define-nomix")
    direct = direct_jacobian_from_e(unit, 1)  # input [e(16) ; h(k1)], 2 contiguous groups of (16 + k1)/2
    half = (16 + unit.specs[0].out_features) // 2
    out_per_group = unit.specs[1].out_features // 2
    assert half > 16  # all of e lies in the first group's chunk
    assert direct[:out_per_group].all()
    assert not direct[out_per_group:].any()


def test_hgt_first_layer_is_block_diagonal():
    unit = make_unit("hgt")
    jac = jacobian_from_e(unit, 0)  # 4 groups: output group j reads e chunk j only
    rows, cols = unit.specs[0].out_features // 4, 4
    for j in range(4):
        assert jac[j * rows:(j + 1) * rows, j * cols:(j + 1) * cols].all()
        assert jac[j * rows:(j + 1) * rows].sum() == rows * cols


def test_reduce_skip_widens_reduce():
    unit = build_unit(16, 64, 2, 2, 8, reduce_skip=True)
    assert unit.reduce.in_features == 64 + 16
    assert unit(torch.randn(3, 16)).shape == (3, 8)


def test_gradcheck_float64():
    torch.manual_seed(0)
    unit = build_unit(8, 32, 3, 4, 6, norm="ln", activation="gelu").double()
    e = torch.randn(3, 8, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(unit, (e,))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(map_dim=100, max_groups=8), "--define-map-dim=100 must be divisible by the 8 groups of HGT layer 1"),
        (dict(map_dim=4, max_groups=8, expand_dim=64), "--define-map-dim=4 must be divisible by the 8 groups"),
        (dict(map_dim=64, input_dim=100, max_groups=8), "--define-input-dim=100 must be divisible by the 8 groups"),
        (dict(max_groups=6), "--define-max-groups=6 must be a power of two"),
        (dict(expand_dim=64, map_dim=128), "--define-expand-dim=64 must be >= the unit's input width 128 "
                                           r"\(--define-map-dim\)"),
        (dict(expand_dim=1030, max_groups=16, depth=2),
         "--define-expand-dim=1030 must be divisible by the 8 groups of HGT layer 2"),
        (dict(depth=0), "--define-depth=0 must be a positive integer"),
        (dict(transform="bogus"), "--define-transform=bogus is not one of define, define-nomix"),
        (dict(norm="bn"), "--define-norm=bn is not one of"),
        (dict(activation="tanh"), "--define-activation=tanh is not one of"),
        (dict(dropout=1.5), r"--define-dropout=1.5 must be in \[0, 1\)"),
        (dict(map_dropout=-0.1), r"--define-map-dropout=-0.1 must be in \[0, 1\)"),
        (dict(cache_chunk=0), "--define-cache-chunk=0 must be a positive integer"),
        (dict(unit_lr_scale=0.0), "--define-unit-lr-scale=0.0 must be positive"),
    ],
)
def test_construction_errors_name_the_flag(kwargs, match):
    args = dict(map_dim=128, expand_dim=1024, depth=3, max_groups=4, output_dim=512)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        build_unit(**args)


def test_unit_input_width_is_d():
    unit = build_unit(64, 1024, 3, 32, 256, input_dim=256)
    assert unit.input_dim == 256 and unit.specs[0].in_features == 256
    assert unit(torch.randn(3, 256)).shape == (3, 256)
    with pytest.raises(ValueError, match="--define-transform=none has no unit"):
        DefineUnit(DefineConfig(transform="none"), 8)


def test_divisible_map_dims_pass():
    # n divisible by g_1 implies every later g_l divides n (the counts halve)
    for map_dim in (8, 24, 40):
        specs = hgt_schedule(map_dim, 256, 4, 8)
        assert [s.groups for s in specs] == [8, 4, 2, 1]
        assert all(s.in_features % s.groups == 0 and s.out_features % s.groups == 0 for s in specs)


def test_scale_steps_keeps_the_function_and_scales_adam_steps():
    """unit_lr_scale c: same outputs and gradients w.r.t. the effective weights; one Adam step moves every effective
    weight c times as far (Adam's first step is lr * sign(g), whatever the gradient's scale)."""
    units = []
    for scale in (1.0, 0.25):
        torch.manual_seed(0)
        unit = build_unit(64, 256, 3, 4, 96)
        if scale != 1:
            unit.scale_steps(scale)
        units.append(unit)
    e = torch.randn(10, 64)
    outputs = [unit(e) for unit in units]
    torch.testing.assert_close(outputs[0], outputs[1])
    before = [[p.detach().clone() for p in (u.layers[0].weight, u.reduce.weight, u.norms[0].weight)] for u in units]
    for unit, out in zip(units, outputs):
        optimizer = torch.optim.Adam(unit.parameters(), lr=1e-2, eps=1e-12)
        out.pow(2).sum().backward()
        optimizer.step()
    with torch.no_grad():
        after = [[u.layers[0].weight, u.reduce.weight, u.norms[0].weight] for u in units]
        for p0, p1, q0, q1 in zip(before[0], after[0], before[1], after[1]):
            plain, scaled = (p1 - p0).abs(), (q1 - q0).abs()
            torch.testing.assert_close(scaled, 0.25 * plain, atol=1e-7, rtol=1e-4)
    assert "layers.0.parametrizations.weight.original" in units[1].state_dict()
