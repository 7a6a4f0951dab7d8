import math

import pytest
import torch

from fairseq_define.modules.group_linear import GroupLinear, from_group_major, regroup, to_group_major
from tests.conftest import requires_cuda

SHAPES = [(8, 8, 1), (12, 20, 1), (16, 16, 4), (8, 24, 2), (32, 16, 8), (24, 48, 3)]


def dense_reference(glt: GroupLinear) -> torch.Tensor:
    """The block-diagonal [in, out] matrix equal to the GLT."""
    return torch.block_diag(*glt.weight.unbind(0))


@pytest.mark.parametrize("in_features,out_features,groups", SHAPES)
def test_matches_block_diagonal_dense_outputs_and_gradients(in_features, out_features, groups):
    torch.manual_seed(0)
    glt = GroupLinear(in_features, out_features, groups).double()
    with torch.no_grad():
        glt.bias.normal_()
    x = torch.randn(3, 5, in_features, dtype=torch.double, requires_grad=True)
    grad = torch.randn(3, 5, out_features, dtype=torch.double)

    y = glt(x)
    y.backward(grad)
    ours = (y.detach(), x.grad.clone(), glt.weight.grad.clone(), glt.bias.grad.clone())

    x.grad = None
    weight = glt.weight.detach().clone().requires_grad_()
    bias = glt.bias.detach().clone().requires_grad_()
    dense = torch.block_diag(*weight.unbind(0))
    y_ref = x @ dense + bias.reshape(-1)
    y_ref.backward(grad)
    assert y.shape == (3, 5, out_features)
    torch.testing.assert_close(ours[0], y_ref.detach())
    torch.testing.assert_close(ours[1], x.grad)
    torch.testing.assert_close(ours[2], weight.grad)
    torch.testing.assert_close(ours[3], bias.grad)


@pytest.mark.parametrize("in_features,out_features,groups", SHAPES)
def test_group_major_entry_equals_row_major(in_features, out_features, groups):
    glt = GroupLinear(in_features, out_features, groups).double()
    x = torch.randn(7, in_features, dtype=torch.double)
    y_gm = glt.forward_group_major(to_group_major(x, groups))
    assert y_gm.shape == (groups, 7, out_features // groups)
    torch.testing.assert_close(from_group_major(y_gm), glt(x))


def test_layout_helpers():
    x = torch.arange(2 * 8).view(2, 8).float()
    gm = to_group_major(x, 4)
    assert gm.shape == (4, 2, 2) and gm.data_ptr() == x.data_ptr()  # a view
    torch.testing.assert_close(from_group_major(gm), x)
    # regroup 4 -> 2 groups equals splitting the row-major tensor into 2 chunks
    torch.testing.assert_close(regroup(gm, 2), to_group_major(x, 2))
    torch.testing.assert_close(regroup(gm, 1), to_group_major(x, 1))


def test_no_bias():
    glt = GroupLinear(8, 4, 2, bias=False).double()
    x = torch.randn(5, 8, dtype=torch.double)
    assert glt.bias is None
    torch.testing.assert_close(glt(x), x @ dense_reference(glt))


@pytest.mark.parametrize("groups", [1, 4])
def test_gradcheck_float64(groups):
    glt = GroupLinear(8, 12, groups).double()
    x = torch.randn(4, 8, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(glt, (x,))
    x_gm = torch.randn(groups, 4, 8 // groups, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(glt.forward_group_major, (x_gm,))


@pytest.mark.parametrize("groups", [1, 4])
def test_gradcheck_parameters_float64(groups):
    glt = GroupLinear(8, 12, groups).double()
    x = torch.randn(4, 8, dtype=torch.double)

    def fn(weight, bias):
        return torch.func.functional_call(glt, {"weight": weight, "bias": bias}, (x,))

    w = glt.weight.detach().clone().requires_grad_()
    b = glt.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (w, b))


def test_initialisation_is_per_block_xavier():
    torch.manual_seed(0)
    glt = GroupLinear(1024, 1024, 16)
    fan_in = fan_out = 1024 // 16
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert glt.weight.abs().max() <= bound
    assert glt.weight.abs().max() > 0.95 * bound
    # the uniform(-b, b) std is b / sqrt(3)
    assert abs(glt.weight.std().item() - bound / math.sqrt(3)) < 0.01 * bound
    assert torch.count_nonzero(glt.bias) == 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("groups", [1, 4])
def test_device_and_precision_close_to_cpu_fp32(device, dtype, groups):
    torch.manual_seed(0)
    glt = GroupLinear(64, 32, groups)
    x = torch.randn(16, 64)
    with torch.no_grad():
        expected = x.double() @ dense_reference(glt).double() + glt.bias.reshape(-1).double()
    out = glt.to(device, dtype)(x.to(device, dtype))
    assert out.dtype == dtype and out.device.type == device
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(out.float().cpu(), expected.float(), atol=tol, rtol=tol)
    out.float().sum().backward()
    assert glt.weight.grad is not None and glt.weight.grad.dtype == dtype


@pytest.mark.parametrize("groups", [1, 4])
def test_cpu_autocast_bf16_and_double_backward(groups):
    torch.manual_seed(0)
    glt = GroupLinear(32, 16, groups)
    x = torch.randn(8, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = glt(x)
        y_gm = glt.forward_group_major(to_group_major(x, groups))
    assert y.dtype == torch.bfloat16 and y_gm.dtype == torch.bfloat16
    expected = x @ dense_reference(glt) + glt.bias.reshape(-1)
    torch.testing.assert_close(y.float(), expected, atol=5e-2, rtol=5e-2)
    y.float().pow(2).sum().backward()
    assert glt.weight.grad.dtype == torch.float32 and torch.isfinite(glt.weight.grad).all()
    # double backward (e.g. a gradient penalty) goes through the kernel
    x64 = torch.randn(3, 32, dtype=torch.double, requires_grad=True)
    glt64 = GroupLinear(32, 16, groups).double()
    assert torch.autograd.gradgradcheck(lambda v: torch.tanh(glt64(v)), (x64,))


def test_state_dict_round_trip_strict():
    a, b = GroupLinear(16, 8, 4), GroupLinear(16, 8, 4)
    assert set(a.state_dict()) == {"weight", "bias"}
    assert a.state_dict()["weight"].shape == (4, 4, 2)
    assert a.state_dict()["bias"].shape == (4, 1, 2)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(3, 16)
    torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_features=10, out_features=8, groups=4), "in_features=10 is not divisible by groups=4"),
        (dict(in_features=8, out_features=10, groups=4), "out_features=10 is not divisible by groups=4"),
        (dict(in_features=8, out_features=8, groups=0), "groups=0 must be a positive integer"),
    ],
)
def test_construction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupLinear(**kwargs)


def test_input_errors():
    glt = GroupLinear(8, 8, 2)
    with pytest.raises(ValueError, match="last dimension 6, expected 8"):
        glt(torch.randn(3, 6))
    with pytest.raises(ValueError, match="floating-point"):
        glt(torch.ones(3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected shape \[groups=2"):
        glt.forward_group_major(torch.randn(4, 3, 4))


def test_non_contiguous_input_and_partial_gradients():
    torch.manual_seed(0)
    glt = GroupLinear(8, 12, 4).double()
    base = torch.randn(8, 5, dtype=torch.double)
    x = base.t().requires_grad_(False)  # [5, 8], non-contiguous
    torch.testing.assert_close(glt(x), x @ dense_reference(glt) + glt.bias.reshape(-1))
    glt.weight.requires_grad_(False)
    glt.bias.requires_grad_(False)
    x = x.clone().requires_grad_()
    glt(x).sum().backward()
    torch.testing.assert_close(x.grad, dense_reference(glt).sum(1).expand(5, 8))
    glt.weight.requires_grad_(True)
    x = x.detach()
    glt(x).sum().backward()
    assert glt.weight.grad is not None and glt.bias.grad is None
