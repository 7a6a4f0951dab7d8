"""GLT benchmark: this GroupLinear vs the authors' transposing layout vs a dense linear (the roofline).

    python -m fairseq_define.bench glt --json bench-results/glt.json

Forward + backward of a 1024 -> 1024 layer on `tokens` rows, for g in {1, 2, 4, 8, 16}. `ours` is GroupLinear's
row-major entry (row-major in and out, the same contract as the reference); `ours_group_major` is its group-major
entry as used inside the DeFINE unit (input already group-major, output left group-major).
useful FLOPs = 6 * tokens * in * out / g (forward, grad-input, grad-weight).
"""

import torch
import torch.nn.functional as F

from fairseq_define.bench.timing import meta, print_table, time_interleaved, write_json
from fairseq_define.modules.group_linear import GroupLinear, to_group_major


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
                "ms_reference": ms["reference"],
                "ms_dense": ms["dense"],
                "speedup_vs_reference": ms["reference"] / ms["ours"],
                "speedup_group_major_vs_reference": ms["reference"] / ms["ours_group_major"],
                "fraction_of_dense": (useful_gflop / ms["ours"]) / (dense_gflop / ms["dense"]),
            })
            print(f"  tokens={tokens} g={groups}: ours {ms['ours']:.2f} ms, reference {ms['reference']:.2f} ms", flush=True)
    print_table(rows, COLUMNS)
    return {"meta": meta(device, dtype, args.rounds), "rows": rows}


COLUMNS = [
    ("tokens", "tokens", "{}"),
    ("groups", "g", "{}"),
    ("ms_ours", "ours ms", "{:.2f}"),
    ("ms_ours_group_major", "ours(gm) ms", "{:.2f}"),
    ("ms_reference", "reference ms", "{:.2f}"),
    ("ms_dense", "dense ms", "{:.2f}"),
    ("speedup_vs_reference", "speedup", "{:.2f}"),
    ("speedup_group_major_vs_reference", "speedup(gm)", "{:.2f}"),
    ("fraction_of_dense", "frac dense", "{:.2f}"),
]
