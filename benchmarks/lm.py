"""Language-model training speed: what users run (the default unit, the presets) against the same Map alone.

    python -m benchmarks lm --data ../shared/data/wikitext-2 --json bench-results/lm.json

The models are the rows of the lm_wikitext2 study (studies/language_models.py) (2 layers, 256 wide, adaptive lookup of
width n projected to d = m = 256, tied adaptive softmax), at n = 256 and n = 64:
- `map-n`: the control, the Map alone (`--define-transform none`);
- `define-n`: the paper's unit as the study runs it (`--define-unit-lr-scale 0.3`);
- `recommended-n`: `--define-preset recommended`;
- `default-n`: `map-n`'s flags without `--define-transform none`, i.e. the unit that
  `DEFAULT_PRESETS["define_transformer_lm"]` builds when a user gives no unit flag at all.
Every model takes full training steps (forward, adaptive loss, backward, Adam step) on the same real WikiText-2
batches (--max-tokens 2048), in interleaved rounds; each ratio is a row's step time over map-n's (paper 860 / 855 ms).
"""

import os

import torch

from benchmarks.timing import meta, print_table, time_interleaved
from examples.common import preprocess_wikitext
from studies.language_models import LM_ROWS
from fairseq_define.params import build_model

KINDS = ("map", "define", "recommended", "default")  # map first: the control every ratio divides by
TRAINING_ONLY = ("--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp")


def add_arguments(parser):
    parser.add_argument("--data", default="../shared/data/wikitext-2",
                        help="folder with wiki.{train,valid,test}.tokens")
    parser.add_argument("--cache", default="bench-results/wikitext-2-bin", help="where the binarized data is kept")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--map-dims", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS[1:]), choices=KINDS[1:],
                        help="the rows timed beside map-n (the control, always timed)")
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, cycled over rounds")
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed call")


def study_flags(name):
    """The fairseq-train flags of benchmark row `name`: the study's row, or for `default-n` map-n's flags without
    `--define-transform none` (the architecture's default unit)."""
    kind, n = name.rsplit("-", 1)
    if kind != "default":
        return list(LM_ROWS[name])
    flags = list(LM_ROWS[f"map-{n}"])
    at = next(i for i in range(len(flags) - 1) if flags[i:i + 2] == ["--define-transform", "none"])
    return flags[:at] + flags[at + 2:]


def row_flags(name):
    """The model flags of row `name` (without its training-only flags)."""
    return [f for f in study_flags(name) if f not in TRAINING_ONLY]


def row_names(map_dims, kinds):
    """map-n first, then the chosen kinds, for each n."""
    return [f"{kind}-{n}" for n in map_dims for kind in ("map", *[k for k in kinds if k != "map"])]


def load_models(data, names, device, dtype):
    """{name: model} of the rows `names` (built with seed 0), and their task."""
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


def trainers(models, task, batches, steps):
    """{name: a callable taking `steps` full training steps (Adam, lr 1e-4) of models[name]}, cycling `batches`."""
    from fairseq.criterions.adaptive_loss import AdaptiveLoss

    criterion = AdaptiveLoss(task, sentence_avg=False)
    state = {name: 0 for name in models}

    def trainer(name):
        model = models[name]
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        model.train()

        def run_steps():
            for _ in range(steps):
                sample = batches[state[name] % len(batches)]
                state[name] += 1
                optimizer.zero_grad()
                loss, _, _ = criterion(model, sample)
                loss.backward()
                optimizer.step()
        return run_steps
    return {name: trainer(name) for name in models}


def run(args, device, dtype):
    data = preprocess_wikitext(os.path.abspath(args.data), args.cache)
    names = row_names(args.map_dims, args.kinds)
    models, task = load_models(data, names, device, dtype)
    batches = batches_of(task, "train", args.max_tokens, args.batches, device)
    ms = time_interleaved(trainers(models, task, batches, args.steps), device, rounds=args.rounds)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    control = {name: "map-" + name.rsplit("-", 1)[1] for name in models}
    rows = [{"model": name, "ms_per_step": ms[name] / args.steps, "params": params[name],
             "vs_map": ms[name] / ms[control[name]]} for name in models]
    print_table(rows, [("model", "model", "{}"), ("ms_per_step", "ms / step", "{:.1f}"),
                       ("params", "params", "{:,}"), ("vs_map", "/ map-n", "{:.3f}")])
    ratios = {f"{name.replace('-', '_')}_vs_{control[name].replace('-', '_')}": ms[name] / ms[control[name]]
              for name in models if name != control[name]}
    for key, value in ratios.items():
        print(f"{key} = {value:.3f}")
    return {"meta": dict(meta(device, dtype, args.rounds), max_tokens=args.max_tokens, steps_per_call=args.steps,
                         params=params, flags={name: study_flags(name) for name in models}),
            "ms_per_step": {name: ms[name] / args.steps for name in models}, "ratios": ratios}
