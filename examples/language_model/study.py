"""What every language-model study in examples/ shares: train one row, score it, record it, tabulate the rows.

A study is a dict of rows {name: {"n", "d", "flags": model flags}} and a training command (task, recipe). Each
row keeps its checkpoints under WORKDIR/NAME (fairseq resumes an interrupted run from checkpoint_last.pt) and
writes its fairseq log and result.json under RESULTS/NAME, which are committed: a finished row is skipped, so a
study resumes row by row and may span sessions.
"""

import argparse
import json
import os
from typing import Callable, Dict, Optional, Sequence

from examples.common import REPO, SHARED_DATA, eval_lm, fairseq, preprocess_wikitext, run, train_wall_seconds

FIELDS = ("name", "n", "d", "transform", "params", "define_params", "valid_ppl", "test_ppl", "updates",
          "train_wall_s")


def study_arguments(doc: str, max_update: int, budget: str, tiny_arch: str) -> argparse.ArgumentParser:
    """The command line every WikiText-2 study takes: --data, --workdir, --results, --max-update, --only, --tiny."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(SHARED_DATA, "wikitext-2"),
                        help="folder with wiki.{train,valid,test}.tokens, or a fairseq-preprocess'd folder "
                             "(dict.txt, {train,valid,test}.bin/.idx)")
    parser.add_argument("--workdir", default=os.path.join(REPO, "runs"))
    parser.add_argument("--results", default=os.path.join(REPO, "docs", "results"))
    parser.add_argument("--max-update", type=int, default=max_update,
                        help=f"updates per row (default {max_update}: {budget})")
    parser.add_argument("--only", nargs="+", help="run only these rows")
    parser.add_argument("--tiny", action="store_true",
                        help=f"the same rows on {tiny_arch}'s sizes (for tests and trials)")
    return parser


def check_only(parser: argparse.ArgumentParser, only: Optional[Sequence[str]], rows: dict, label: str = "rows"):
    """A parser error naming the --only rows that `rows` does not have (and listing the LABEL it has)."""
    unknown = set(only or []) - set(rows)
    if unknown:
        parser.error(f"--only: unknown rows {sorted(unknown)}; {label}: {', '.join(rows)}")


def wikitext_bin(data: str, workdir: str) -> str:
    """DATA itself if it is binarized (has dict.txt), else WikiText-2's raw files binarized into
    WORKDIR/wikitext-2-bin (once)."""
    data = os.path.abspath(data)
    if os.path.isfile(os.path.join(data, "dict.txt")):
        return data
    return preprocess_wikitext(data, os.path.join(workdir, "wikitext-2-bin"))


def parameters(data_bin: str, flags: Sequence[str]) -> dict:
    """Parameter counts per part (total, map, define, context, output) of the model `flags` build on `data_bin`."""
    from fairseq_define.params import build_model, count_parts

    model, _ = build_model(["--data", data_bin, *[f for f in flags if f != "--cpu"]])
    return count_parts(model)


def transform_of(flags: Sequence[str]) -> str:
    """The row's --define-transform (the last one given wins), or "table" for a model without a DeFINE embedding."""
    if "--define-transform" not in flags:
        return "table"
    return flags[len(flags) - 1 - list(flags)[::-1].index("--define-transform") + 1]


def with_flags(row: dict, *flags: str) -> dict:
    """`row` with `flags` appended to its flags (a later flag overrides an earlier one): a diagnosis variant."""
    return {**row, "flags": [*row["flags"], *flags]}


def run_row(name: str, row: dict, data_bin: str, save_dir: str, out_dir: str, train_args: Sequence[str],
            score_test: bool = True, eval_args: Sequence[str] = (),
            wrap: Optional[Callable[[list, str], list]] = None) -> dict:
    """Train row `name` (`fairseq-train DATA_BIN <row flags> <train_args> --save-dir SAVE_DIR`, its log appended to
    OUT_DIR/train.log), then score checkpoint_last.pt with fairseq-eval-lm (`eval_args` added) on valid (and test
    if `score_test`) and write OUT_DIR/result.json. A row whose result.json exists is returned as it is.
    `wrap(command, out_dir)` may rewrite the training command (e.g. to record gradient norms)."""
    result_path = os.path.join(out_dir, "result.json")
    if os.path.isfile(result_path):
        print(f"[{name}] done already: {result_path}", flush=True)
        return json.load(open(result_path))
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(save_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "train.log")
    print(f"[{name}]", flush=True)
    command = fairseq("train", data_bin, *row["flags"], *train_args, "--save-dir", save_dir)
    run(wrap(command, out_dir) if wrap else command, log=log_path)
    checkpoint = os.path.join(save_dir, "checkpoint_last.pt")
    counts = parameters(data_bin, row["flags"])
    updates = int(train_args[list(train_args).index("--max-update") + 1])
    result = {"name": name, "n": row["n"], "d": row["d"], "transform": transform_of(row["flags"]),
              "params": counts["total"], "define_params": counts["define"], "parts": counts,
              "valid_ppl": eval_lm(data_bin, checkpoint, "valid", *eval_args),
              "test_ppl": eval_lm(data_bin, checkpoint, "test", *eval_args) if score_test else None,
              "updates": updates, "train_wall_s": train_wall_seconds(open(log_path).read()),
              "flags": list(row["flags"]), "train_args": list(train_args)}
    json.dump(result, open(result_path, "w"), indent=2)
    print(f"[{name}] valid ppl {result['valid_ppl']:.2f}, {counts['total']:,} parameters, "
          f"{result['train_wall_s']:.0f} s", flush=True)
    return result


def run_study(args: argparse.Namespace, rows: Dict[str, dict], diagnosis: Dict[str, dict], data_bin: str, tag: str,
              train_args: Sequence[str], eval_args: Sequence[str] = ()) -> list:
    """Run the rows named by `args.only` (default: every row of `rows`; the `diagnosis` rows run only when named, and
    are scored on validation only) one after another, then write the table of every finished row."""
    every_row = {**rows, **diagnosis}
    finished = [run_row(name, every_row[name], data_bin, os.path.join(args.workdir, tag, name),
                        os.path.join(args.results, tag, name), train_args, score_test=name not in diagnosis,
                        eval_args=eval_args)
                for name in args.only or rows]
    write_table(every_row, args.results, tag)
    return finished


def write_table(rows: Dict[str, dict], results_dir: str, tag: str) -> Dict[str, dict]:
    """Collect every finished row of `rows` (also those of earlier invocations) from RESULTS_DIR/TAG/<row>, write
    RESULTS_DIR/TAG.json ({"rows": [...]}, FIELDS of each) and print the table."""
    table = {}
    for name in rows:
        path = os.path.join(results_dir, tag, name, "result.json")
        if os.path.isfile(path):
            table[name] = json.load(open(path))
    with open(os.path.join(results_dir, f"{tag}.json"), "w") as f:
        json.dump({"rows": [{k: r.get(k) for k in FIELDS} for r in table.values()]}, f, indent=2)
    print(f"\n{'row':<26}{'params':>12}{'define':>10}{'valid ppl':>11}{'test ppl':>10}{'train s':>9}")
    for r in table.values():
        test = "-" if r["test_ppl"] is None else f"{r['test_ppl']:.2f}"
        print(f"{r['name']:<26}{r['params']:>12,}{r['define_params']:>10,}{r['valid_ppl']:>11.2f}"
              f"{test:>10}{r['train_wall_s']:>9.0f}")
    return table
