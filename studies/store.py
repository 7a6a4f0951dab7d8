"""The results store: every study's committed files under docs/results/, and the one reader of them.

    docs/results/STUDY/ROW/result.json     the row's numbers (parameters, scores, flags, recipe)
    docs/results/STUDY/ROW/train.log       fairseq-train's log (--log-format json; rows before it: simple)
    docs/results/STUDY/ROW/eval-SUBSET.txt the output of the command that scored the row on SUBSET
    docs/results/STUDY.json                the study's table, {"rows": [...]}, redrawn after every run

The plots, the docs generator and the tests read results through `Store`; `log_records` reads fairseq's logs.
"""

import datetime
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "docs", "results")


@dataclass(frozen=True)
class Store:
    """The result files under `root` (default docs/results)."""

    root: str = RESULTS

    def row_dir(self, study: str, row: str) -> str:
        return os.path.join(self.root, study, row)

    def path(self, study: str, row: str, name: str = "result.json") -> str:
        return os.path.join(self.row_dir(study, row), name)

    def has(self, study: str, row: str) -> bool:
        """Whether row `row` of `study` has finished (its result.json exists)."""
        return os.path.isfile(self.path(study, row))

    def result(self, study: str, row: str) -> dict:
        with open(self.path(study, row)) as f:
            return json.load(f)

    def write(self, study: str, row: str, result: dict):
        os.makedirs(self.row_dir(study, row), exist_ok=True)
        with open(self.path(study, row), "w") as f:
            json.dump(result, f, indent=2)

    def rows(self, study: str, order: Optional[List[str]] = None) -> Dict[str, dict]:
        """{row: result} of every finished row of `study`: those of `order` first, in its order, then the rest by
        name."""
        folder = os.path.join(self.root, study)
        names = sorted(n for n in os.listdir(folder) if self.has(study, n)) if os.path.isdir(folder) else []
        order = list(order or [])
        names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
        return {name: self.result(study, name) for name in names}

    def studies(self) -> List[str]:
        """The studies with at least one finished row."""
        if not os.path.isdir(self.root):
            return []
        return sorted(s for s in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, s))
                      and any(self.has(s, r) for r in os.listdir(os.path.join(self.root, s))))

    def table(self, study: str) -> dict:
        """RESULTS/STUDY.json: {"rows": [...]} (and what else the study keeps there, e.g. paired tests)."""
        with open(os.path.join(self.root, f"{study}.json"), encoding="utf-8") as f:
            return json.load(f)

    def write_table(self, study: str, rows: List[dict], **more):
        """RESULTS/STUDY.json's rows (and `more` entries, e.g. paired_bootstrap=[...]); its other entries are kept."""
        path = os.path.join(self.root, f"{study}.json")
        table = self.table(study) if os.path.isfile(path) else {}
        with open(path, "w") as f:
            json.dump({**table, "rows": rows, **more}, f, indent=2)

    def log(self, study: str, row: str) -> str:
        """The row's fairseq-train log ("" if it has none)."""
        path = self.path(study, row, "train.log")
        return open(path, encoding="utf-8").read() if os.path.isfile(path) else ""


# A fairseq-train log line with a record of `kind` (train, valid, train_inner): its JSON form (--log-format json)
# "... | INFO | valid | {...}" or its simple form "... | INFO | valid | epoch 001 | valid on 'valid' subset | loss 5.1
# | ppl 34.2 | ...", also in Python's default logging format ("INFO:valid:...", fairseq run inside another program).
_RECORD = re.compile(r"(?:\| INFO \| (\w+) \| |^INFO:(\w+):)(.*)$")


def log_records(log: str, kind: str) -> Iterator[dict]:
    """Every `kind` record (train, valid or train_inner) of a fairseq-train log, as {key: value} with the keys of
    the simple format (the json format's "valid_" / "train_" prefixes dropped), numbers as floats, e.g.
    {"epoch": 1.0, "loss": 5.1, "ppl": 34.2, "num_updates": 200.0, "train_wall": 61.0}."""
    for line in log.splitlines():
        match = _RECORD.search(line)
        if not match or (match.group(1) or match.group(2)) != kind:
            continue
        body = match.group(3).strip()
        if body.startswith("{"):  # fairseq's json end-of-epoch records prefix every key but epoch with the kind
            items = [(key[len(kind) + 1:] if key.startswith(kind + "_") else key, value)
                     for key, value in json.loads(body).items()]
        else:
            items = [part.strip().split(" ", 1) for part in body.split(" | ") if " " in part.strip()]
        yield {key: _number(value) for key, value in items}


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def train_wall_seconds(log: str) -> float:
    """fairseq's own training time (validation excluded): the sum of its per-epoch train_wall over every process of
    a resumed run (each logs only the epochs it ran)."""
    return float(sum(r.get("train_wall", 0.0) for r in log_records(log, "train")))


def valid_curve(log: str, metric: str = "ppl") -> List[tuple]:
    """[(updates, training seconds or None, metric)] of every validation in a fairseq-train log that has `metric`.
    Seconds count from the first "Start iterating over samples" and go on across the processes of a resumed run
    (None without timestamps, e.g. in Python's default logging format)."""
    start, offset, last, points = None, 0.0, 0.0, []
    for line in log.splitlines():
        stamp = _STAMP.match(line)
        if stamp and "Start iterating over samples" in line:
            start, offset = datetime.datetime.fromisoformat(stamp.group(1)), last
            continue
        records = list(log_records(line, "valid"))
        if not records or metric not in records[0]:
            continue
        seconds = None
        if stamp and start is not None:
            seconds = last = offset + (datetime.datetime.fromisoformat(stamp.group(1)) - start).total_seconds()
        points.append((int(records[0]["num_updates"]), seconds, records[0][metric]))
    return points


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \| ")
