"""Perplexity against parameters: what the control family needs to match each DeFINE row, as a table and a figure.

Rows are finished study rows of one model: dicts with "name", "family" ("control" or a DeFINE family such as
"recommended"), "n", "params" (total), "define_params", "test_ppl" and, where known, "map_params" (the embedding Map's).
"""

import math
from dataclasses import dataclass

CONTROL_FAMILY = "control"
BELOW_BEST = "below the best control"
ABOVE_WORST = "above the worst control"
TOO_FEW_CONTROLS = "fewer than two controls"


@dataclass(frozen=True)
class EqualPerplexity:
    """One DeFINE row against the control curve: the control parameters at its test perplexity and the saving."""

    name: str
    family: str
    n: int | None
    params: int
    test_ppl: float
    control_params: float | None  # what the control family needs for test_ppl; None outside the controls' range
    saving_pct: float | None  # 100 * (1 - params / control_params); negative when the unit costs parameters
    note: str = ""


def _segment_distance(log_params, log_a, log_b):
    """How far log_params lies from the interval between log_a and log_b (0 inside it)."""
    low, high = min(log_a, log_b), max(log_a, log_b)
    return max(low - log_params, 0.0, log_params - high)


def _params_at_ppl(controls, ppl, params):
    """Control parameters at perplexity `ppl`, log-linear in params between the two bracketing control points
    (controls: (params, ppl) sorted by params). Returns (control params, note); control params None outside the range.
    Where the curve is not monotone, the bracketing segment nearest to `params` (in log params) is used."""
    ppls = [p for _, p in controls]
    if ppl < min(ppls):
        return None, BELOW_BEST
    if ppl > max(ppls):
        return None, ABOVE_WORST
    segments = [(a, b) for a, b in zip(controls, controls[1:]) if min(a[1], b[1]) <= ppl <= max(a[1], b[1])]
    monotone = all(b[1] <= a[1] for a, b in zip(controls, controls[1:]))
    log_params = math.log(params)
    (params_a, ppl_a), (params_b, ppl_b) = min(
        segments, key=lambda s: _segment_distance(log_params, math.log(s[0][0]), math.log(s[1][0])))
    if ppl_a == ppl_b:  # a flat segment: the cheaper control already reaches ppl
        needed = min(params_a, params_b)
    else:
        fraction = (ppl_a - ppl) / (ppl_a - ppl_b)
        needed = math.exp(math.log(params_a) + fraction * (math.log(params_b) - math.log(params_a)))
    segment = f"{_millions(params_a)}-{_millions(params_b)}"
    note = "" if monotone else f"controls not monotone: nearest bracketing segment {segment}"
    return needed, note


def equal_perplexity_savings(rows, control_family=CONTROL_FAMILY):
    """For every row outside `control_family` (in input order), the parameters the control family needs to reach
    its test perplexity and the saving in percent, as EqualPerplexity records. Interpolation is linear in
    log(params) between the neighbouring control points (sorted by params) that bracket the row's perplexity; a row
    below the best or above the worst control gets control_params and saving_pct None and a note saying which."""
    controls = sorted((r["params"], r["test_ppl"]) for r in rows if r["family"] == control_family)
    results = []
    for row in rows:
        if row["family"] == control_family:
            continue
        if len(controls) < 2:
            needed, note = None, TOO_FEW_CONTROLS
        else:
            needed, note = _params_at_ppl(controls, row["test_ppl"], row["params"])
        saving = None if needed is None else 100.0 * (1.0 - row["params"] / needed)
        results.append(EqualPerplexity(row["name"], row["family"], row.get("n"), row["params"], row["test_ppl"],
                                       needed, saving, note))
    return results


def _millions(params):
    return f"{params / 1e6:.2f}M"


def savings_markdown(results):
    """EqualPerplexity records as a markdown table: row, n, params, test ppl, control params at equal ppl, saving %,
    note ("-" where a value is missing)."""
    lines = ["| row | n | params | test ppl | control params at equal ppl | saving % | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.name} | {'-' if r.n is None else r.n} | {_millions(r.params)} | {r.test_ppl:.2f} | "
                     f"{'-' if r.control_params is None else _millions(r.control_params)} | "
                     f"{'-' if r.saving_pct is None else f'{r.saving_pct:+.1f}'} | {r.note} |")
    return "\n".join(lines) + "\n"


def embedding_share(row):
    """The share of (map_params + define_params) in the row's params; map_params counts 0 where missing."""
    return ((row.get("map_params") or 0) + (row.get("define_params") or 0)) / row["params"]


def plot_frontier(rows, path, title="test perplexity against parameters"):
    """Test perplexity against total parameters (log x), one line per family, marker area proportional to the
    embedding's share of the parameters (left), and that share in percent (right); saved as a PNG at `path`,
    which is returned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({r["family"] for r in rows}, key=lambda f: (f != CONTROL_FAMILY, f))
    with_map = any(r.get("map_params") is not None for r in rows)
    what = "Map + DeFINE" if with_map else "DeFINE"
    fig, (ax_ppl, ax_share) = plt.subplots(1, 2, figsize=(12, 4.5))
    for family in families:
        points = sorted((r for r in rows if r["family"] == family), key=lambda r: r["params"])
        params = [r["params"] for r in points]
        shares = [embedding_share(r) for r in points]
        style = "--" if family == CONTROL_FAMILY else "-"
        (line,) = ax_ppl.plot(params, [r["test_ppl"] for r in points], style, label=family)
        ax_ppl.scatter(params, [r["test_ppl"] for r in points], s=[15 + 400 * s for s in shares],
                       color=line.get_color(), alpha=0.6, zorder=3)
        for r in points:
            if r.get("n") is not None:
                ax_ppl.annotate(f"n={r['n']}", (r["params"], r["test_ppl"]), fontsize=7,
                                xytext=(4, 4), textcoords="offset points")
        ax_share.plot(params, [100 * s for s in shares], style, marker="o", color=line.get_color(), label=family)
    ax_ppl.set(xscale="log", xlabel="total parameters", ylabel="test perplexity",
               title=f"{title}\n(marker area ~ {what} share of parameters)")
    ax_share.set(xscale="log", xlabel="total parameters", ylabel=f"{what} parameters (% of total)",
                 title=f"{what} share of parameters")
    for ax in (ax_ppl, ax_share):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
