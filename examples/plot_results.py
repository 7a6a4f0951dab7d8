"""Figures for docs/results.md, drawn from fairseq's training logs and the studies' result files.

    python examples/plot_results.py --lm runs/study-lm --out docs

Writes OUT/lm_valid_ppl.png (valid perplexity against updates and against wall time, one line per input) and
OUT/lm_params.png (parameters of each model, split into map, DeFINE, context and output), and prints the
results table in Markdown.
"""

import argparse
import datetime
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

VALID = re.compile(r"^(\S+ \S+) \| INFO \| valid \| epoch \d+ \| valid on 'valid' subset \| loss [\d.]+ \| ppl ([\d.]+)"
                   r".*\| num_updates (\d+)")
START = re.compile(r"^(\S+ \S+) \| INFO \| fairseq_cli.train \| Start iterating over samples")


def valid_curve(log_path):
    """[(updates, seconds since training started, valid ppl)] from a fairseq-train log (--log-format simple)."""
    start, points = None, []
    for line in open(log_path, encoding="utf-8"):
        if start is None and (m := START.match(line)):
            start = datetime.datetime.fromisoformat(m.group(1))
        elif (m := VALID.match(line)) and start is not None:
            seconds = (datetime.datetime.fromisoformat(m.group(1)) - start).total_seconds()
            points.append((int(m.group(3)), seconds, float(m.group(2))))
    return points


def plot_lm(study_dir, out_dir):
    runs = sorted(d for d in os.listdir(study_dir) if os.path.isfile(os.path.join(study_dir, d, "result.json")))
    fig, (by_update, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name in runs:
        points = valid_curve(os.path.join(study_dir, name, "train.log"))
        if points:
            updates, seconds, ppl = zip(*points)
            by_update.plot(updates, ppl, marker="o", label=name)
            by_time.plot([s / 60 for s in seconds], ppl, marker="o", label=name)
    by_update.set(xlabel="updates", ylabel="valid perplexity", yscale="log", title="WikiText-2: valid perplexity")
    by_time.set(xlabel="wall time (minutes, 2 CPU cores)", title="against wall time")
    by_update.legend()
    for ax in (by_update, by_time):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "lm_valid_ppl.png"), dpi=110)

    results = [json.load(open(os.path.join(study_dir, name, "result.json"))) for name in runs]
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0] * len(results)
    for part in ("map", "define", "context", "output"):
        values = [r["params"][part] / 1e6 for r in results]
        ax.bar(runs, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set(ylabel="parameters (millions)", title="WikiText-2 models: where the parameters are")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "lm_params.png"), dpi=110)


def markdown_table(study_dir):
    rows = ["| input | params | map | DeFINE | context | output | train words/s | valid ppl | test ppl |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(os.listdir(study_dir)):
        path = os.path.join(study_dir, name, "result.json")
        if os.path.isfile(path):
            r = json.load(open(path))
            p = r["params"]
            rows.append(f"| {name} | {p['total']:,} | {p['map']:,} | {p['define']:,} | {p['context']:,} | "
                        f"{p['output']:,} | {r['train_wps']:,.0f} | {r['valid_ppl']:.2f} | {r['test_ppl']:.2f} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", default="runs/study-lm", help="workdir of examples/language_model/wikitext2_study.py")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    plot_lm(args.lm, args.out)
    print(f"wrote {args.out}/lm_valid_ppl.png, {args.out}/lm_params.png\n")
    print(markdown_table(args.lm))


if __name__ == "__main__":
    main()
