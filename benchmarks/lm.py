"""Language-model training speed: the study's `define-n` and `map-n` rows (same Map, with and without the unit).

    python -m benchmarks lm --data ../shared/data/wikitext-2 --json bench-results/lm.json

The models are the rows of examples/language_model/wikitext2_study.py (2 layers, 256 wide, adaptive lookup of
width n projected to d = m = 256, tied adaptive softmax), at n = 256 and n = 64. Every model takes full training
steps (forward, adaptive loss, backward, Adam step) on the same real WikiText-2 batches (--max-tokens 2048), in
interleaved rounds; the ratio is define-n's step time over map-n's (target <= 1.03, paper 860 / 855 ms).
"""

import os

import torch

from benchmarks.timing import meta, print_table, time_interleaved
from examples.common import preprocess_wikitext
from examples.language_model.wikitext2_study import ROWS
from fairseq_define.params import build_model


def add_arguments(parser):
    parser.add_argument("--data", default="../shared/data/wikitext-2",
                        help="folder with wiki.{train,valid,test}.tokens")
    parser.add_argument("--cache", default="bench-results/wikitext-2-bin", help="where the binarized data is kept")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--map-dims", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, cycled over rounds")
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed call")


def row_flags(name):
    """The model flags of the study's row `name` (without its training-only flags)."""
    return [f for f in ROWS[name]["flags"] if f not in ("--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp")]


def load_models(data, names, device, dtype):
    """{name: model} of the study's rows, and their task."""
    models = {}
    for name in names:
        torch.manual_seed(0)
        model, task = build_model(["--data", data, *row_flags(name)], device="cpu")
        models[name] = model.to(device, dtype)
    return models, task


def batches_of(task, split, max_tokens, count, device):
    from fairseq import utils

    task.load_dataset(split)
    iterator = task.get_batch_iterator(task.dataset(split), max_tokens=max_tokens, seed=1,
                                       required_batch_size_multiple=8).next_epoch_itr(shuffle=split == "train")
    batches = [next(iterator) for _ in range(count)] if count else list(iterator)
    return [utils.move_to_cuda(b) for b in batches] if device.type == "cuda" else batches


def run(args, device, dtype):
    from fairseq.criterions.adaptive_loss import AdaptiveLoss

    data = preprocess_wikitext(os.path.abspath(args.data), args.cache)
    names = [f"{kind}-{n}" for n in args.map_dims for kind in ("define", "map")]
    models, task = load_models(data, names, device, dtype)
    batches = batches_of(task, "train", args.max_tokens, args.batches, device)
    criterion = AdaptiveLoss(task, sentence_avg=False)
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    state = {name: 0 for name in models}

    def trainer(name):
        model, optimizer = models[name], optimizers[name]
        model.train()

        def steps():
            for _ in range(args.steps):
                sample = batches[state[name] % len(batches)]
                state[name] += 1
                optimizer.zero_grad()
                loss, _, _ = criterion(model, sample)
                loss.backward()
                optimizer.step()
        return steps

    ms = time_interleaved({name: trainer(name) for name in models}, device, rounds=args.rounds)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    rows = [{"model": name, "ms_per_step": ms[name] / args.steps, "params": params[name],
             "vs_map": ms[name] / ms["map-" + name.split("-")[1]]} for name in models]
    print_table(rows, [("model", "model", "{}"), ("ms_per_step", "ms / step", "{:.1f}"),
                       ("params", "params", "{:,}"), ("vs_map", "/ map-n", "{:.3f}")])
    ratios = {f"define_{n}_vs_map_{n}": ms[f"define-{n}"] / ms[f"map-{n}"] for n in args.map_dims}
    for key, value in ratios.items():
        print(f"{key} = {value:.3f}")
    return {"meta": dict(meta(device, dtype, args.rounds), max_tokens=args.max_tokens, steps_per_call=args.steps,
                         params=params, flags={name: ROWS[name]["flags"] for name in models}),
            "ms_per_step": {name: ms[name] / args.steps for name in models}, "ratios": ratios}
