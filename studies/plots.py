"""Figures of docs/results.md, redrawn from the committed result files and logs (`studies.store`).

    python -m studies plots

For each perplexity study (`STUDIES`) with finished rows: OUT/STUDY_valid_ppl.png (valid perplexity against
updates and against training wall time, every row), OUT/STUDY_params.png (parameters split into map, DeFINE, context
and output), OUT/STUDY_grad_norms.png (per-part gradient norms of the rows that recorded them), OUT/STUDY_FIGURE.png
for each `FOCUS` entry (the curves of a few rows), OUT/STUDY_frontier.png (test perplexity against parameters, per
family; `studies.docs.FRONTIERS`); for translation, OUT/results/figures/mt_multi30k_valid.png
(valid loss and greedy valid BLEU against updates). OUT is docs/.
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from studies import translation  # noqa: E402
from studies.store import REPO, Store, valid_curve  # noqa: E402

STUDIES = ("lm_wikitext2", "lm_wikitext2_diagnosis", "txl_wikitext2", "lstm_wikitext2")
# Figures of a few runs of a study, beside the one of every run: (study, figure name, runs).
FOCUS = [("lm_wikitext2_diagnosis", "start_and_steps",
          ["map-256", "define-256", "define-256-unit-lr0.3", "define-256-fan-in", "define-256-residual",
           "define-256-residual-fan-in", "authors-256", "authors-256-unit-lr0.3", "authors-256-fan-in",
           "authors-256-residual", "authors-256-residual-fan-in", "map-64", "authors-64", "authors-64-unit-lr0.3",
           "authors-64-fan-in"])]


def plot_curves(store: Store, study: str, runs, out_dir: str, figure: str = "valid_ppl"):
    """Valid perplexity of `runs` against updates and against training wall time."""
    fig, (by_update, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax in (by_update, by_time):
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # up to 20 runs, each its own colour
    for name in runs:
        points = valid_curve(store.log(study, name))
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


def plot_params(study: str, runs, out_dir: str):
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


def plot_grad_norms(store: Store, study: str, runs, out_dir: str):
    """Per-part gradient norms (runs with a grad_norms.json): one panel per part, one line per run."""
    paths = {name: store.path(study, name, "grad_norms.json") for name in runs}
    records = {name: json.load(open(path)) for name, path in paths.items() if os.path.isfile(path)}
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m studies plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=Store().root)
    parser.add_argument("--out", default=os.path.join(REPO, "docs"))
    args = parser.parse_args(argv)
    store = Store(args.results)
    for study in STUDIES:
        runs = store.rows(study)
        if not runs:
            continue
        written = [plot_curves(store, study, runs, args.out), plot_params(study, runs, args.out),
                   plot_grad_norms(store, study, runs, args.out)]
        written += [plot_curves(store, study, {name: runs[name] for name in names if name in runs}, args.out,
                                figure) for focus_study, figure, names in FOCUS if focus_study == study]
        print(f"{study}: wrote {', '.join(path for path in written if path)}")
    from studies.docs import FRONTIERS, frontier_rows
    from studies.frontier import plot_frontier

    for model, study, families, widths in FRONTIERS:
        rows = frontier_rows(study, families, widths)
        if rows:
            path = plot_frontier(rows, os.path.join(args.out, f"{study}_frontier.png"),
                                 title=f"{model}: test perplexity against parameters")
            print(f"{study}: wrote {path}")
    figure = translation.plot(store, os.path.join(args.results, "figures", "mt_multi30k_valid.png"))
    if figure:
        print(f"mt_multi30k: wrote {figure}")


if __name__ == "__main__":
    main()
