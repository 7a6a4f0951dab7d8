"""Inference speed: a full validation pass and a full fairseq-eval-lm pass, DeFINE vs the same model without the unit.

    python -m benchmarks eval --data ../shared/data/wikitext-2 --json bench-results/eval.json

The models are the study's `define-n` and `map-n` rows (the lm_wikitext2 study, studies/language_models.py; same n, Map
and context). `validation` is what fairseq-train's validation does per batch (model.eval(), no grad, the task's
valid_step with the adaptive loss) over the whole valid split: DeFINE runs its unit on each batch's unique ids.
`eval_lm` is fairseq-eval-lm's path: prepare_for_inference_ (which arms DeFINE's inference table), then fairseq's
SequenceScorer over the whole split (128-token blocks): DeFINE looks its outputs up. The table's build time and
bytes are reported on their own. `eval_lm exported-n` is the same pass over the stock fairseq model that
fairseq-define-export makes of define-n (docs/export.md): an nn.Embedding(V, m) of the unit's outputs, no plugin
code in the forward. Passes are interleaved; targets: define / map <= 1.05 for both, exported / map <= 1.05.
"""

import argparse
import os
import time

import torch

from benchmarks.lm import batches_of, load_models, row_flags
from benchmarks.timing import meta, print_table, synchronize, time_interleaved
from examples.common import preprocess_wikitext
from fairseq_define.export import export_model, max_logprob_difference
from fairseq_define.params import build_model_and_config


def add_arguments(parser):
    parser.add_argument("--data", default="../shared/data/wikitext-2",
                        help="folder with wiki.{train,valid,test}.tokens")
    parser.add_argument("--cache", default="bench-results/wikitext-2-bin", help="where the binarized data is kept")
    parser.add_argument("--map-dim", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--batches", type=int, default=0, help="score only the first BATCHES batches (0: all)")


def run(args, device, dtype):
    from fairseq.criterions.adaptive_loss import AdaptiveLoss
    from fairseq.sequence_scorer import SequenceScorer

    data = preprocess_wikitext(os.path.abspath(args.data), args.cache)
    names = [f"define-{args.map_dim}", f"map-{args.map_dim}"]
    models, task = load_models(data, names, device, dtype)
    batches = batches_of(task, "valid", args.max_tokens, args.batches, device)
    criterion = AdaptiveLoss(task, sentence_avg=False)
    tokens = sum(b["ntokens"] for b in batches)

    def validation(model):
        def full_pass():
            for sample in batches:
                model.eval()  # as trainer.valid_step does, on every batch
                with torch.no_grad():
                    task.valid_step(sample, model, criterion)
        return full_pass

    inference = {name: load_models(data, [name], device, dtype)[0][name] for name in names}
    table = {}
    for model in inference.values():
        model.prepare_for_inference_(argparse.Namespace(generation=argparse.Namespace(beam=1)))  # eval-lm's call
        embedding = model.decoder.embed_tokens
        if getattr(embedding, "unit", None) is not None:
            synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                embedding.inference_table()
            synchronize(device)
            table = {"build_ms": (time.perf_counter() - start) * 1e3, "nbytes": embedding.cache_nbytes}
    stock = exported(inference[names[0]], names[0], data, device, dtype)
    stock.prepare_for_inference_(argparse.Namespace(generation=argparse.Namespace(beam=1)))
    scorer = SequenceScorer(task.target_dictionary)

    def eval_lm(model):
        def full_pass():
            for sample in batches:
                with torch.no_grad():
                    scorer.generate([model], sample)
        return full_pass

    candidates = {f"validation {name}": validation(models[name]) for name in names}
    candidates.update({f"eval_lm {name}": eval_lm(inference[name]) for name in names})
    exported_name = f"exported-{args.map_dim}"
    candidates[f"eval_lm {exported_name}"] = eval_lm(stock)
    ms = time_interleaved(candidates, device, rounds=args.rounds, warmup=1)
    define, control = names
    ratios = {"validation": ms[f"validation {define}"] / ms[f"validation {control}"],
              "eval_lm": ms[f"eval_lm {define}"] / ms[f"eval_lm {control}"],
              "eval_lm_exported_vs_map": ms[f"eval_lm {exported_name}"] / ms[f"eval_lm {control}"],
              "eval_lm_exported_vs_define": ms[f"eval_lm {exported_name}"] / ms[f"eval_lm {define}"]}
    rows = [{"pass": key, "ms": value, "tokens_per_s": tokens / (value / 1e3)} for key, value in ms.items()]
    print(f"WikiText-2 valid: {len(batches)} batches, {tokens} tokens")
    print_table(rows, [("pass", "pass", "{}"), ("ms", "ms", "{:.0f}"), ("tokens_per_s", "tokens/s", "{:.0f}")])
    print(f"define / map: validation {ratios['validation']:.3f}, eval-lm {ratios['eval_lm']:.3f}; inference table "
          f"built in {table['build_ms']:.0f} ms, {table['nbytes'] / 2**20:.1f} MiB")
    print(f"eval-lm exported / map {ratios['eval_lm_exported_vs_map']:.3f}, exported / define (table) "
          f"{ratios['eval_lm_exported_vs_define']:.3f}")
    return {"meta": dict(meta(device, dtype, args.rounds), tokens=tokens, batches=len(batches),
                         models=names + [exported_name]),
            "ms": ms, "ratios": ratios, "inference_table": table}


def exported(model, name, data, device, dtype):
    """The stock fairseq model that fairseq-define-export makes of `model`, the study's row `name`, checked equal."""
    _, task, model_cfg = build_model_and_config(["--data", data, *row_flags(name)], device="meta")
    stock, _, _ = export_model(model, model_cfg, task)
    stock = stock.to(device, dtype).eval()
    difference = max_logprob_difference(model, stock, len(task.target_dictionary))
    if not difference <= 1e-3:
        raise RuntimeError(f"exported {name} differs from the original by {difference:.3g} in log-probability")
    return stock
