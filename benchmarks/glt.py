"""GLT benchmark: this GroupLinear vs the authors' transposing layout vs a dense linear (the roofline).

    python -m benchmarks glt --json bench-results/glt.json

Forward + backward of a 1024 -> 1024 layer on `tokens` rows, for g in {1, 2, 4, 8, 16}. `ours` is GroupLinear's
row-major entry (row-major in and out, the same contract as the reference); `ours_group_major` is its group-major
entry as used inside the DeFINE unit (input already group-major, output left group-major); `strided` is a custom
autograd function whose batched matmuls write straight into strided views of the row-major output (kept here, not
in the package: inside the unit the group-major stack is faster).
useful FLOPs = 6 * tokens * in * out / g (forward, grad-input, grad-weight).
"""

import torch
from torch.autograd.function import once_differentiable

from benchmarks.timing import meta, print_table, time_interleaved
from fairseq_define.modules.group_linear import GroupLinear, to_group_major


class StridedRowMajorGLT(torch.autograd.Function):
    """y [R, g*o] = GLT(x [R, g*i]) with weight [g, i, o] and bias [g, 1, o] (or None).

    Each group's matmul reads x through a [g, R, i] strided view and writes into a [g, R, o] strided view of the
    row-major output, and the backward does the same for the input gradient.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        groups, in_width, out_width = weight.shape
        rows = x.shape[0]
        x_groups = x.view(rows, groups, in_width).transpose(0, 1)
        y = x.new_empty(rows, groups, out_width)
        if bias is None:
            torch.bmm(x_groups, weight, out=y.transpose(0, 1))
        else:
            torch.baddbmm(bias, x_groups, weight, out=y.transpose(0, 1))
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return y.view(rows, groups * out_width)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        groups, in_width, out_width = weight.shape
        rows = x.shape[0]
        grad_groups = grad_y.reshape(rows, groups, out_width).transpose(0, 1)  # [g, R, o] view
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = x.new_empty(rows, groups, in_width)
            torch.bmm(grad_groups, weight.transpose(1, 2), out=grad_x.transpose(0, 1))
            grad_x = grad_x.view(rows, groups * in_width)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(x.view(rows, groups, in_width).permute(1, 2, 0), grad_groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_groups.sum(1, keepdim=True)
        return grad_x, grad_weight, grad_bias



def reference_glt(x, weight, bias, groups):
    """The layout of the authors' public code: view -> transpose -> bmm -> + bias -> transpose -> contiguous."""
    rows = x.shape[0]
    x = x.view(rows, groups, -1).transpose(0, 1)
    y = torch.bmm(x, weight) + bias
    return y.transpose(0, 1).contiguous().view(rows, -1)


def add_arguments(parser):
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8, 16])


def run(args, device, dtype):
    features = args.features
    rows = []
    for tokens in args.tokens:
        for groups in args.groups:
            torch.manual_seed(0)
            glt = GroupLinear(features, features, groups).to(device, dtype)
            dense = torch.nn.Linear(features, features).to(device, dtype)
            weight = glt.weight.detach().clone().requires_grad_()
            bias = glt.bias.detach().clone().requires_grad_()
            x = torch.randn(tokens, features, device=device, dtype=dtype, requires_grad=True)
            grad = torch.randn(tokens, features, device=device, dtype=dtype)
            x_gm = to_group_major(x.detach(), groups).contiguous().requires_grad_()
            grad_gm = to_group_major(grad, groups).contiguous()

            candidates = {
                "ours": lambda: glt(x).backward(grad),
                "strided": lambda: StridedRowMajorGLT.apply(x, glt.weight, glt.bias).backward(grad),
                "ours_group_major": lambda: glt.forward_group_major(x_gm).backward(grad_gm),
                "reference": lambda: reference_glt(x, weight, bias, groups).backward(grad),
                "dense": lambda: dense(x).backward(grad),
            }
            ms = time_interleaved(candidates, device, rounds=args.rounds)
            useful_gflop = 6 * tokens * features * features / groups / 1e9
            dense_gflop = 6 * tokens * features * features / 1e9
            rows.append({
                "tokens": tokens,
                "groups": groups,
                "ms_ours": ms["ours"],
                "ms_ours_group_major": ms["ours_group_major"],
                "ms_strided": ms["strided"],
                "ms_reference": ms["reference"],
                "ms_dense": ms["dense"],
                "speedup_vs_reference": ms["reference"] / ms["ours"],
                "speedup_group_major_vs_reference": ms["reference"] / ms["ours_group_major"],
                "fraction_of_dense": (useful_gflop / ms["ours"]) / (dense_gflop / ms["dense"]),
            })
            print(f"  tokens={tokens} g={groups}: ours {ms['ours']:.2f} ms, reference {ms['reference']:.2f} ms",
                  flush=True)
    print_table(rows, COLUMNS)
    return {"meta": meta(device, dtype, args.rounds), "rows": rows}


COLUMNS = [
    ("tokens", "tokens", "{}"),
    ("groups", "g", "{}"),
    ("ms_ours", "ours ms", "{:.2f}"),
    ("ms_ours_group_major", "ours(gm) ms", "{:.2f}"),
    ("ms_strided", "strided ms", "{:.2f}"),
    ("ms_reference", "reference ms", "{:.2f}"),
    ("ms_dense", "dense ms", "{:.2f}"),
    ("speedup_vs_reference", "speedup", "{:.2f}"),
    ("speedup_group_major_vs_reference", "speedup(gm)", "{:.2f}"),
    ("fraction_of_dense", "frac dense", "{:.2f}"),
]
