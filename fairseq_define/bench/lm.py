"""Language-model training speed: a small DeFINE LM vs the same context model with adaptive input.

    python -m fairseq_define.bench lm --data ../shared/data/wikitext-2 --json bench-results/lm.json

Both models (fairseq_define.recipes: 2 layers, 256 wide, adaptive softmax tied to the input) train on the same
real WikiText-2 batches (fairseq's language_modeling task, --max-tokens 2048), one full training step each
(forward, adaptive loss, backward, Adam step) in interleaved rounds; words/s = target tokens / median time.
"""

import os

import torch

from fairseq_define.cli import preprocess_wikitext
from fairseq_define.bench.timing import meta, print_table, time_interleaved
from fairseq_define.params import build_model
from fairseq_define.recipes import SMALL_ADAPTIVE_LM, SMALL_DEFINE_LM


def add_arguments(parser):
    parser.add_argument("--data", default="../shared/data/wikitext-2", help="folder with wiki.{train,valid,test}.tokens")
    parser.add_argument("--cache", default="bench-results/wikitext-2-bin", help="where the binarized data is kept")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, cycled over rounds")
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed call")


def run(args, device, dtype):
    from fairseq.criterions.adaptive_loss import AdaptiveLoss
    from fairseq import utils

    data = preprocess_wikitext(os.path.abspath(args.data), args.cache)
    torch.manual_seed(0)
    models = {}
    for name, flags in (("define", SMALL_DEFINE_LM), ("adaptive", SMALL_ADAPTIVE_LM)):
        model, task = build_model(["--data", data, *flags], device="cpu")
        models[name] = model.to(device, dtype)
    task.load_dataset("train")
    iterator = task.get_batch_iterator(task.dataset("train"), max_tokens=args.max_tokens, seed=1,
                                       required_batch_size_multiple=8).next_epoch_itr(shuffle=True)
    batches = [utils.move_to_cuda(next(iterator)) if device.type == "cuda" else next(iterator)
               for _ in range(args.batches)]
    criterion = AdaptiveLoss(task, sentence_avg=False)
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    state = {"define": 0, "adaptive": 0}

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
    # both models step through the same batches in the same order: call i uses batches i*steps ... i*steps+steps-1
    calls = args.rounds + 2  # the timer's 2 warm-up calls included
    words = [sum(batches[(i * args.steps + j) % len(batches)]["ntokens"] for j in range(args.steps)) for i in range(calls)]
    mean_words = sum(words) / calls
    wps = {name: mean_words / (ms[name] / 1e3) for name in models}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    rows = [{"model": name, "ms_per_call": ms[name], "wps": wps[name], "params": params[name]} for name in models]
    print_table(rows, [("model", "model", "{}"), ("ms_per_call", f"ms / {args.steps} steps", "{:.1f}"),
                       ("wps", "words/s", "{:.0f}"), ("params", "params", "{:,}")])
    ratio = wps["define"] / wps["adaptive"]
    print(f"ratio wps_define / wps_adaptive = {ratio:.3f}")
    return {"meta": dict(meta(device, dtype, args.rounds), max_tokens=args.max_tokens, steps_per_call=args.steps,
                         define_flags=SMALL_DEFINE_LM, adaptive_flags=SMALL_ADAPTIVE_LM, params=params),
            "wps_define": wps["define"], "wps_adaptive": wps["adaptive"], "ratio": ratio}
