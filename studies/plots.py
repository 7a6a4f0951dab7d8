"""Figures and tables for docs/results.md, redrawn from the committed logs and result files of the studies.

    python -m examples.plot_results [--results docs/results] [--out docs]

For each study folder RESULTS/STUDY (`STUDIES`: lm_wikitext2, lm_wikitext2_diagnosis, txl_wikitext2, lstm_wikitext2)
with runs NAME/{train.log,result.json}:
writes OUT/STUDY_valid_ppl.png (valid perplexity against updates and against training wall time, every run) and
OUT/STUDY_params.png (parameters split into map, DeFINE, context and output), OUT/STUDY_grad_norms.png (per-part
gradient norms of the runs that recorded them), OUT/STUDY_FIGURE.png for each `FOCUS` entry (the valid curves of a
few runs), and prints the table in Markdown.
"""

import argparse
import datetime
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STUDIES = ("lm_wikitext2", "lm_wikitext2_diagnosis", "txl_wikitext2", "lstm_wikitext2")
# Figures of a few runs of a study, beside the one of every run: (study, figure name, runs).
FOCUS = [("lm_wikitext2_diagnosis", "start_and_steps",
          ["map-256", "define-256", "define-256-unit-lr0.3", "define-256-fan-in", "define-256-residual",
           "define-256-residual-fan-in", "authors-256", "authors-256-unit-lr0.3", "authors-256-fan-in",
           "authors-256-residual", "authors-256-residual-fan-in", "map-64", "authors-64", "authors-64-unit-lr0.3",
           "authors-64-fan-in"])]
# (the criterions of the bptt_lm studies log nll_loss, ar, tar between loss and ppl; ppl is the NLL's)
VALID = re.compile(r"^(?:(\S+ \S+) \| INFO \| valid \| |INFO:valid:)"
                   r"epoch \d+ \| valid on 'valid' subset \| loss [\d.]+ \| "
                   r"(?:\w+ [\d.]+ \| )*ppl ([\d.]+).*\| num_updates (\d+)")
START = re.compile(r"^(\S+ \S+) \| INFO \| fairseq_cli.train \| Start iterating over samples")


def valid_curve(log_path):
    """[(updates, seconds of training or None, valid ppl)] from a fairseq-train log (--log-format simple). A resumed
    run appends a new process to the log; its clock continues from the previous process's last point. Lines in
    Python's default logging format (no timestamps) give no seconds."""
    start, offset, last, points = None, 0.0, 0.0, []
    for line in open(log_path, encoding="utf-8"):
        if m := START.match(line):
            start, offset = datetime.datetime.fromisoformat(m.group(1)), last
        elif m := VALID.match(line):
            seconds = None
            if m.group(1) and start is not None:
                seconds = last = offset + (datetime.datetime.fromisoformat(m.group(1)) - start).total_seconds()
            points.append((int(m.group(3)), seconds, float(m.group(2))))
    return points


def finished_runs(study_dir):
    """{name: result} of the finished runs, in the order of the study's table (STUDY_DIR.json), then by name."""
    names = sorted(d for d in os.listdir(study_dir) if os.path.isfile(os.path.join(study_dir, d, "result.json")))
    table = study_dir.rstrip("/") + ".json"
    if os.path.isfile(table):
        order = [row["name"] for row in json.load(open(table))["rows"]]
        names.sort(key=lambda name: (order.index(name) if name in order else len(order), name))
    return {name: json.load(open(os.path.join(study_dir, name, "result.json"))) for name in names}


def plot_curves(study, study_dir, runs, out_dir, figure="valid_ppl"):
    fig, (by_update, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax in (by_update, by_time):
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # up to 20 runs, each its own colour
    for name in runs:
        points = valid_curve(os.path.join(study_dir, name, "train.log"))
        if points:
            updates, seconds, ppl = zip(*points)
            style = "--" if name.startswith("map") or name == "standard" else "-"
            by_update.plot(updates, ppl, style, marker="o", markersize=3, label=name)
            if None not in seconds:
                by_time.plot([s / 60 for s in seconds], ppl, style, marker="o", markersize=3, label=name)
    by_update.set(xlabel="updates", ylabel="valid perplexity (training-time validation)", yscale="log",
                  title=f"{study}: valid perplexity")
    by_time.set(xlabel="wall time (minutes, 2 CPU cores)", title="against wall time")
    by_update.legend(fontsize=8)
    for ax in (by_update, by_time):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{study}_{figure}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_params(study, runs, out_dir):
    fig, ax = plt.subplots(figsize=(9, 4))
    bottom = [0.0] * len(runs)
    for part in ("map", "define", "context", "output"):
        values = [r["parts"][part] / 1e6 for r in runs.values()]
        ax.bar(list(runs), values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set(ylabel="parameters (millions)", title=f"{study}: where the parameters are")
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, f"{study}_params.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_grad_norms(study, study_dir, runs, out_dir):
    """Per-part gradient norms (runs with a grad_norms.json): one panel per part, one line per run."""
    records = {name: json.load(open(os.path.join(study_dir, name, "grad_norms.json"))) for name in runs
               if os.path.isfile(os.path.join(study_dir, name, "grad_norms.json"))}
    if not records:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharex=True)
    for ax, part in zip(axes, ("map", "define", "context", "output")):
        for name, record in records.items():
            if any(record[part]):
                ax.plot(record["updates"], record[part], label=name, linewidth=1)
        ax.set(title=f"{part}", xlabel="updates", yscale="log")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("gradient norm (summed token losses)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{study}_grad_norms.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(runs):
    lines = ["| row | n | d | unit | params | map | DeFINE | context | output | train s | valid ppl | test ppl |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs.items():
        p = r["parts"]
        test = "-" if r.get("test_ppl") is None else f"{r['test_ppl']:.2f}"
        lines.append(f"| {name} | {r['n']} | {r['d']} | {r['transform']} | {p['total']:,} | {p['map']:,} | "
                     f"{p['define']:,} | {p['context']:,} | {p['output']:,} | {r['train_wall_s']:.0f} | "
                     f"{r['valid_ppl']:.2f} | {test} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=os.path.join("docs", "results"))
    parser.add_argument("--out", default="docs")
    args = parser.parse_args(argv)
    for study in STUDIES:
        study_dir = os.path.join(args.results, study)
        runs = finished_runs(study_dir) if os.path.isdir(study_dir) else {}
        if not runs:
            continue
        written = [plot_curves(study, study_dir, runs, args.out), plot_params(study, runs, args.out),
                   plot_grad_norms(study, study_dir, runs, args.out)]
        written += [plot_curves(study, study_dir, {name: runs[name] for name in names if name in runs}, args.out,
                                figure) for focus_study, figure, names in FOCUS if focus_study == study]
        written = [path for path in written if path]
        print(f"## {study}\n\nwrote {', '.join(written)}\n\n{markdown_table(runs)}\n")


if __name__ == "__main__":
    main()
