"""Does DeFINE deliver? The paper's Table 2 / Table 1a comparison on WikiText-2: rows that differ only by the unit.

    python -m examples.language_model.wikitext2_study [--data ../shared/data/wikitext-2] [--only map-256 define-256]
    python -m examples.language_model.wikitext2_study --study diagnosis   # short matched runs: why, when it loses
    python -m examples.plot_results                                       # tables and figures from the results

One context model for every row (2 pre-norm layers, 256 wide, FFN 1024, 4 heads, 128-token blocks, dropout 0.1),
the same recipe, updates, tokens and seed. Rows (`ROWS`):
- `standard`: a V x 256 table tied to the output;
- `map-n`, n in {256, 128, 64}: an adaptive lookup (cutoffs 5000,20000, factor 4) of width n projected to
  d = m = 256, no unit (`--define-transform none`: fairseq's adaptive input), tied adaptive softmax;
- `define-n`: the same Map + DeFINE (k = 1024, N = 3, g_max = 32: the paper's light Table-1a unit);
- `define-64-n-space`: DeFINE on the 64-wide Map with d = 64, so the tied softmax scores 64-dim states (v1's recipe).

Each run keeps its checkpoints under WORKDIR/NAME (fairseq resumes an interrupted run from checkpoint_last.pt) and
writes its fairseq log and result.json (parameters, valid and test perplexity from fairseq-eval-lm, training wall
time) under RESULTS/NAME, which are committed: a finished run is skipped, so the study resumes run by run and may
span sessions. The table goes to RESULTS.json (`{"rows": [...]}`).
"""

import argparse
import json
import os

from examples.common import REPO, SHARED_DATA, eval_lm, fairseq, preprocess_wikitext, run, train_wall_seconds

CONTEXT = ["--decoder-layers", "2", "--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "1024",
           "--decoder-attention-heads", "4", "--decoder-normalize-before", "--tokens-per-sample", "128",
           "--dropout", "0.1"]
TIED_ADAPTIVE = ["--adaptive-input", "--adaptive-input-cutoff", "5000,20000", "--adaptive-softmax-cutoff",
                 "5000,20000", "--tie-adaptive-weights", "--tie-adaptive-proj",
                 "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp"]
UNIT = ["--define-transform", "define", "--define-expand-dim", "1024", "--define-depth", "3",
        "--define-max-groups", "32", "--define-norm", "ln", "--define-activation", "gelu",
        "--define-output-scale", "factor"]
RECIPE = ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "0.003", "--lr-scheduler", "cosine",
          "--warmup-updates", "100", "--warmup-init-lr", "1e-7", "--clip-norm", "1.0", "--max-tokens", "2048",
          "--cpu", "--seed", "1", "--log-format", "simple", "--log-interval", "50", "--no-epoch-checkpoints",
          "--validate-interval-updates", "200", "--save-interval-updates", "200", "--keep-interval-updates", "1",
          "--max-valid-steps", "25"]  # curves on the first 51k valid tokens; final numbers from eval-lm


def map_row(n, d=256, unit=()):
    return {"n": n, "d": d, "flags": ["--arch", "define_transformer_lm", *CONTEXT, *TIED_ADAPTIVE,
                                      "--define-map-dim", str(n), "--define-input-dim", str(d),
                                      *(unit or ["--define-transform", "none"])]}


ROWS = {
    "map-256": map_row(256),
    "define-256": map_row(256, unit=UNIT),
    "map-64": map_row(64),
    "define-64": map_row(64, unit=UNIT),
    "map-128": map_row(128),
    "define-128": map_row(128, unit=UNIT),
    "standard": {"n": 256, "d": 256, "flags": ["--arch", "transformer_lm_big", *CONTEXT,
                                               "--share-decoder-input-output-embed"]},
    "define-64-n-space": map_row(64, d=64, unit=UNIT),
}
# Short matched runs at n = 256 (same recipe, --max-update 1000 = one epoch, gradient norms per part recorded):
# what holds DeFINE back. `recipe` flags come after RECIPE's, so they win.
DIAGNOSIS = {
    "map-256": map_row(256),
    "define-256": map_row(256, unit=UNIT),
    "map-256-lr1e-3": dict(map_row(256), recipe=["--lr", "0.001"]),
    "define-256-lr1e-3": dict(map_row(256, unit=UNIT), recipe=["--lr", "0.001"]),
    "map-256-lr1e-2": dict(map_row(256), recipe=["--lr", "0.01"]),
    "define-256-lr1e-2": dict(map_row(256, unit=UNIT), recipe=["--lr", "0.01"]),
    "define-256-scale-weights": map_row(256, unit=[*UNIT, "--define-output-scale", "weights"]),
    "linear-256": map_row(256, unit=[*UNIT, "--define-transform", "linear", "--define-depth", "1",
                                     "--define-expand-dim", "256", "--define-norm", "none",
                                     "--define-activation", "none"]),
    "define-256-reduce-skip": map_row(256, unit=[*UNIT, "--define-reduce-skip"]),
    "define-256-map-dropout": map_row(256, unit=[*UNIT, "--define-map-dropout", "0.1"]),
}
STUDIES = {"main": (ROWS, 2000), "diagnosis": (DIAGNOSIS, 1000)}


def parameters(data_bin, flags):
    from fairseq_define.params import build_model, count_parts

    model, _ = build_model(["--data", data_bin, *[f for f in flags if f not in ("--cpu",)]])
    return count_parts(model)


def run_one(name, row, data_bin, workdir, results, max_update, score_test, record_grad_norms):
    out_dir, save_dir = os.path.join(results, name), os.path.join(workdir, name)
    result_path = os.path.join(out_dir, "result.json")
    if os.path.isfile(result_path):
        print(f"[{name}] done already: {result_path}", flush=True)
        return json.load(open(result_path))
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(save_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "train.log")
    print(f"[{name}]", flush=True)  # the log is appended to: a resumed run continues it
    recipe = [*RECIPE, *row.get("recipe", []), "--max-update", max_update, "--save-dir", save_dir]
    command = fairseq("train", data_bin, "--task", "language_modeling", *row["flags"], *recipe)
    if record_grad_norms:  # the same fairseq-train, in a process that records per-part gradient norms
        command[1:3] = ["-m", "examples.language_model.grad_norms", os.path.join(out_dir, "grad_norms.json")]
    run(command, log=log_path)
    log = open(log_path).read()
    checkpoint = os.path.join(save_dir, "checkpoint_last.pt")
    counts = parameters(data_bin, row["flags"])
    result = {"name": name, "n": row["n"], "d": row["d"], "transform": transform_of(row["flags"]),
              "params": counts["total"], "define_params": counts["define"], "parts": counts,
              "valid_ppl": eval_lm(data_bin, checkpoint, "valid"),
              "test_ppl": eval_lm(data_bin, checkpoint, "test") if score_test else None,
              "updates": max_update, "train_wall_s": train_wall_seconds(log), "flags": row["flags"],
              "recipe": recipe[:-2]}
    json.dump(result, open(result_path, "w"), indent=2)
    print(f"[{name}] valid ppl {result['valid_ppl']:.2f}, {counts['total']:,} parameters, "
          f"{result['train_wall_s']:.0f} s", flush=True)
    return result


def transform_of(flags):
    if "--define-transform" not in flags:
        return "table"
    return flags[len(flags) - 1 - flags[::-1].index("--define-transform") + 1]  # the last one given wins


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(SHARED_DATA, "wikitext-2"))
    parser.add_argument("--study", choices=list(STUDIES), default="main")
    parser.add_argument("--workdir", default=os.path.join(REPO, "runs"))
    parser.add_argument("--results", default=os.path.join(REPO, "docs", "results"))
    parser.add_argument("--max-update", type=int, help="default: 2000 (main, about 2 epochs), 1000 (diagnosis)")
    parser.add_argument("--only", nargs="+", help="run only these rows")
    args = parser.parse_args(argv)
    rows, max_update = STUDIES[args.study]
    max_update = args.max_update or max_update
    unknown = set(args.only or []) - set(rows)
    if unknown:
        parser.error(f"--only: unknown rows {sorted(unknown)}; rows of --study {args.study}: {', '.join(rows)}")
    tag = "lm_wikitext2" if args.study == "main" else "lm_wikitext2_diagnosis"
    data_bin = preprocess_wikitext(os.path.abspath(args.data), os.path.join(args.workdir, "wikitext-2-bin"))
    results = os.path.join(args.results, tag)
    diagnosis = args.study == "diagnosis"  # diagnosis runs choose on validation only, and record gradient norms
    finished = [run_one(name, rows[name], data_bin, os.path.join(args.workdir, tag), results, max_update,
                        score_test=not diagnosis, record_grad_norms=diagnosis)
                for name in (args.only or rows)]
    table = {}
    for name in rows:  # every finished row, also those of earlier invocations
        path = os.path.join(results, name, "result.json")
        if os.path.isfile(path):
            table[name] = json.load(open(path))
    fields = ("name", "n", "d", "transform", "params", "define_params", "valid_ppl", "test_ppl", "updates",
              "train_wall_s")
    with open(os.path.join(args.results, f"{tag}.json"), "w") as f:
        json.dump({"rows": [{k: r[k] for k in fields} for r in table.values()]}, f, indent=2)
    print(f"\n{'row':<26}{'params':>12}{'define':>10}{'valid ppl':>11}{'test ppl':>10}{'train s':>9}")
    for r in table.values():
        test = "-" if r["test_ppl"] is None else f"{r['test_ppl']:.2f}"
        print(f"{r['name']:<26}{r['params']:>12,}{r['define_params']:>10,}{r['valid_ppl']:>11.2f}"
              f"{test:>10}{r['train_wall_s']:>9.0f}")
    return finished


if __name__ == "__main__":
    main()
