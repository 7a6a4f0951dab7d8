"""One runner for every study: a `Study` is data (rows of flags, a recipe, a data preparation and a score hook), and
`run_study` trains and scores the rows it names, one after another, resumably.

Each row keeps its checkpoints under WORKDIR/STUDY/ROW (fairseq resumes an interrupted run from
checkpoint_last.pt) and writes train.log (fairseq's json log), the eval outputs and result.json under
RESULTS/STUDY/ROW (`store.Store`); a row with a result.json is not run again, so a study resumes row by row and may
span sessions. Commands go through an injectable `runner` (`examples.common.run` by default; tests pass another).
"""

import gzip
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

from examples.common import fairseq
from examples.common import run as run_command
from studies import store as results

Runner = Callable[..., object]  # runner(command, log=None) -> an object with .stdout (and .stderr)
TABLE_FIELDS = ("name", "n", "d", "transform", "params", "define_params", "valid_ppl", "test_ppl", "updates",
                "train_wall_s")


@dataclass(frozen=True)
class Trained:
    """What a score hook gets: the row, where its checkpoints and files are, and how to run commands."""

    name: str
    flags: List[str]
    data_bin: str
    save_dir: str
    out_dir: str
    subsets: Sequence[str]  # ("valid",) for a diagnosis row, ("valid", "test") for the others
    runner: Runner

    def run_kept(self, command: list, name: str):
        """Run `command` and keep what it printed as OUT_DIR/NAME (gzipped if NAME ends in .gz); returns what the
        runner returned."""
        out = self.runner(command)
        text = (out.stdout or "") + (getattr(out, "stderr", "") or "")
        data = text.encode("utf-8")
        with open(os.path.join(self.out_dir, name), "wb") as f:
            f.write(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
        return out

    def output(self, command: list, name: str) -> str:
        """Run `command`, keep its output as OUT_DIR/NAME and return it."""
        out = self.run_kept(command, name)
        return (out.stdout or "") + (getattr(out, "stderr", "") or "")


@dataclass(frozen=True)
class Study:
    """A study: `rows` {name: model flags} run by default, `diagnosis` rows run only by name and scored on
    validation only; every row trains with `train` (+ the budget) on the data `prepare(data, workdir, runner)`
    returns, and `score(trained)` returns its scores (e.g. {"valid_ppl": ..., "test_ppl": ...})."""

    name: str
    rows: Dict[str, List[str]]
    train: List[str]
    prepare: Callable[[str, str, Runner], str]
    score: Callable[[Trained], dict]
    data: str
    max_update: Optional[int] = None
    max_epoch: Optional[int] = None
    diagnosis: Dict[str, List[str]] = field(default_factory=dict)
    wrap: Optional[Callable[[list, str], list]] = None  # rewrites a row's fairseq-train command (out_dir given)
    # a finished row's entry (or entries) in RESULTS/STUDY.json (default: its TABLE_FIELDS)
    table: Optional[Callable[[dict], Union[dict, List[dict]]]] = None
    # after the rows: more entries of RESULTS/STUDY.json beside its table (e.g. {"paired_bootstrap": [...]})
    finish: Optional[Callable[["Study", results.Store, list], dict]] = None
    default: Optional[Sequence[str]] = None  # the rows run when none are named (default: every row of `rows`)

    @property
    def every_row(self) -> Dict[str, List[str]]:
        return {**self.rows, **self.diagnosis}

    def budget(self, max_update: Optional[int] = None, max_epoch: Optional[int] = None) -> List[str]:
        updates, epochs = max_update or self.max_update, max_epoch or self.max_epoch
        return [*(["--max-update", str(updates)] if updates else []), *(["--max-epoch", str(epochs)] if epochs else [])]


def last_value(flags: Sequence[str], name: str, default=None):
    """The value of the last `name` in `flags` (the one fairseq uses), else `default`."""
    values = [flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag == name]
    return values[-1] if values else default


def describe(flags: Sequence[str]) -> dict:
    """n (the input table's width), d (the unit's input) and the unit of the model that `flags` build."""
    if last_value(flags, "--define-map-dim") is None:  # a stock fairseq model: a V x m table
        n = int(last_value(flags, "--encoder-embed-dim", last_value(flags, "--decoder-embed-dim")))
        return {"n": n, "d": n, "transform": "table"}
    n = int(last_value(flags, "--define-map-dim"))
    preset = last_value(flags, "--define-preset")
    transform = last_value(flags, "--define-transform", preset or "define")
    return {"n": n, "d": int(last_value(flags, "--define-input-dim", n)), "transform": transform}


def parameters(data_bin: str, flags: Sequence[str]) -> dict:
    """Parameter counts per part (total, map, define, context, output) of the model `flags` build on `data_bin`."""
    from fairseq_define.params import build_model, count_parts

    model, _ = build_model(["--data", data_bin, *[f for f in flags if f != "--cpu"]])
    return dict(count_parts(model))


def trained_to_budget(log: str, max_update: Optional[int], max_epoch: Optional[int]) -> bool:
    """Whether the run of `log` reached its budget (fairseq would take one more step past --max-update when asked
    to resume a finished run; a killed process leaves its epoch unlogged)."""
    last = list(results.log_records(log, "train"))
    if not last:
        return False
    epoch, updates = last[-1].get("epoch", 0), last[-1].get("num_updates", 0)
    return bool((max_epoch and epoch >= max_epoch) or (max_update and updates >= max_update))


def run_row(study: Study, name: str, data_bin: str, workdir: str, store: results.Store, runner: Runner = run_command,
            max_update: Optional[int] = None, max_epoch: Optional[int] = None,
            count: Callable[[str, Sequence[str]], dict] = parameters) -> dict:
    """Train row `name` of `study` (resuming), score it and write its result.json; a finished row is returned as
    it is."""
    if store.has(study.name, name):
        print(f"[{name}] done already: {store.path(study.name, name)}", flush=True)
        return store.result(study.name, name)
    flags = study.every_row[name]
    out_dir, save_dir = store.row_dir(study.name, name), os.path.join(workdir, study.name, name)
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(save_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "train.log")
    budget = study.budget(max_update, max_epoch)
    arguments = [*study.train, *budget, *flags]  # a row's flags come last: they win (e.g. --seed, --max-update)
    updates, epochs = last_value(arguments, "--max-update"), last_value(arguments, "--max-epoch")
    print(f"[{name}]", flush=True)
    if not trained_to_budget(store.log(study.name, name), updates and int(updates), epochs and int(epochs)):
        command = fairseq("train", data_bin, *arguments, "--log-format", "json", "--save-dir", save_dir)
        runner(study.wrap(command, out_dir) if study.wrap else command, log=log_path)
    log = store.log(study.name, name)
    subsets = ("valid",) if name in study.diagnosis else ("valid", "test")
    scores = study.score(Trained(name, list(flags), data_bin, save_dir, out_dir, subsets, runner))
    records = list(results.log_records(log, "train"))
    counts = count(data_bin, flags)
    result = {"name": name, **describe(flags), "params": counts["total"], "define_params": counts["define"],
              "parts": counts, **scores,
              "updates": int(records[-1]["num_updates"]) if records else None,
              "epochs": int(records[-1]["epoch"]) if records else None,
              "train_wall_s": results.train_wall_seconds(log), "scored_on": subsets[-1],
              "flags": list(flags), "train_args": [*study.train, *budget]}
    store.write(study.name, name, result)
    print(f"[{name}] {', '.join(f'{k} {v}' for k, v in scores.items() if isinstance(v, (int, float)))}, "
          f"{counts['total']:,} parameters, {result['train_wall_s']:.0f} s", flush=True)
    return result


def table_entry(result: dict) -> dict:
    return {key: result.get(key) for key in TABLE_FIELDS}


def table_rows(study: Study, store: results.Store) -> List[dict]:
    """The entries of RESULTS/STUDY.json's table: those of every finished row, in the study's order."""
    entries = [(study.table or table_entry)(r) for r in store.rows(study.name, list(study.every_row)).values()]
    return [e for entry in entries for e in (entry if isinstance(entry, list) else [entry])]


def write_table(study: Study, store: results.Store, **more) -> List[dict]:
    """RESULTS/STUDY.json from every finished row (in the study's order) and `more` entries, printed; returns its
    rows."""
    rows = table_rows(study, store)
    store.write_table(study.name, rows, **more)
    keys = [k for k in rows[0] if k != "name"] if rows else []
    width = max([12] + [len(r["name"]) + 2 for r in rows])
    print(f"\n{'row':<{width}}" + "".join(f"{k[:13]:>14}" for k in keys))
    for r in rows:
        print(f"{r['name']:<{width}}" + "".join(f"{_show(r[k]):>14}" for k in keys))
    return rows


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)[:13]


def run_study(study: Study, only: Optional[Sequence[str]] = None, data: Optional[str] = None,
              workdir: str = os.path.join(results.REPO, "runs"), store: Optional[results.Store] = None,
              runner: Runner = run_command, max_update: Optional[int] = None, max_epoch: Optional[int] = None,
              count: Callable[[str, Sequence[str]], dict] = parameters) -> List[dict]:
    """Run the rows `only` names (default: `study.default`, else every row of `study.rows`) one after another, then
    redraw the study's table; returns the rows' results. Unknown row names raise a ValueError listing the study's
    rows."""
    unknown = [name for name in only or [] if name not in study.every_row]
    if unknown:
        raise ValueError(f"unknown rows {unknown} of study {study.name}; rows: {', '.join(study.every_row)}")
    store = store or results.Store()
    data_bin = study.prepare(os.path.abspath(data or study.data), workdir, runner)
    finished = [run_row(study, name, data_bin, workdir, store, runner, max_update, max_epoch, count)
                for name in only or study.default or study.rows]
    write_table(study, store, **(study.finish(study, store, finished) if study.finish else {}))
    return finished
