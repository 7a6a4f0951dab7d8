"""examples/language_model/txl_wikitext2.py end to end on a WikiText-2 slice: the tiny rows train through
`--task bptt_lm`, fairseq-eval-lm scores them with memory, the study writes its result files and table."""

import json
import os
import re

import pytest

from examples.language_model import txl_wikitext2 as study
from examples.language_model.study import FIELDS
from tests import cli
from tests.conftest import data_dir


@pytest.fixture(scope="module")
def wikitext(tmp_path_factory):
    return cli.wikitext_slice(data_dir("wikitext-2"), str(tmp_path_factory.mktemp("txl_wt2")), lines=(300, 40, 40))


def test_rows_are_the_table_2_pairs_at_the_same_d():
    rows = study.rows()
    assert list(rows) == ["map-256", "define-256", "map-64", "define-64", "authors-256-fan-in", "authors-64-fan-in"]
    for name, row in rows.items():
        flags = row["flags"]
        assert row["d"] == 256 and row["n"] == int(name.split("-")[1])
        assert flags[flags.index("--define-map-dim") + 1] == str(row["n"])
        assert flags[flags.index("--define-input-dim") + 1] == flags[flags.index("--decoder-embed-dim") + 1] == "256"
        assert flags[flags.index("--define-transform") + 1] == name.split("-")[0].replace("map", "none")
        assert flags[:len(study.CONTEXT)] == study.CONTEXT  # one context model
    for tiny in (False, True):
        train = study.recipe(study.TINY_BPTT if tiny else study.BPTT)
        assert train[train.index("--task") + 1] == "bptt_lm"
        assert train[train.index("--criterion") + 1] == "define_bptt_nll"


def test_tiny_study_trains_scores_with_memory_and_writes_the_table(wikitext, tmp_path, capsys, fairseq_in_process):
    results = tmp_path / "results"
    finished = study.main(["--data", wikitext, "--workdir", str(tmp_path / "work"), "--results", str(results),
                           "--tiny", "--max-update", "8"])
    printed = capsys.readouterr().out
    names = ["map-256", "define-256", "map-64", "define-64", "authors-256-fan-in", "authors-64-fan-in"]
    assert [r["name"] for r in finished] == names
    table = json.loads((results / "txl_wikitext2.json").read_text())["rows"]
    assert [r["name"] for r in table] == names
    for row in table:
        assert set(row) == set(FIELDS)
        assert row["updates"] == 8 and row["d"] == study.TINY_M and row["train_wall_s"] >= 0
        assert 1 < row["valid_ppl"] < 1e5 and 1 < row["test_ppl"] < 1e5
        assert (row["define_params"] > 0) == (row["transform"] != "none")
        assert os.path.isfile(results / "txl_wikitext2" / row["name"] / "train.log")
        assert os.path.isfile(tmp_path / "work" / "txl_wikitext2" / row["name"] / "checkpoint_last.pt")
    by_name = {r["name"]: r for r in table}
    for n in (256, 64):  # the pairs differ by the unit only
        plain = by_name[f"map-{n}"]
        for define in (by_name[f"define-{n}"], by_name[f"authors-{n}-fan-in"]):
            assert define["params"] - plain["params"] == define["define_params"]
    log = (results / "txl_wikitext2" / "define-64" / "train.log").read_text()
    assert "num_updates 8" in log and "bptt_lm" in log

    # every fairseq-eval-lm ran through bptt_lm with the memory overrides, on valid and test
    evals = [line for line in printed.splitlines() if line.startswith("$ ") and "fairseq_cli.eval_lm" in line]
    assert len(evals) == 2 * len(names)
    mem, clamp = 4 * study.TINY_BPTT, 5 * study.TINY_BPTT // 2
    for line in evals:
        assert "--task bptt_lm" in line and f"--tokens-per-sample {study.TINY_BPTT // 2}" in line.split("--cpu")[1]
        assert f"{{'mem_len': {mem}, 'clamp_len': {clamp}, 'same_length': True}}" in line
    # ... and the memory is what the recorded perplexity used: without it eval-lm gives another number
    checkpoint = tmp_path / "work" / "txl_wikitext2" / "define-64" / "checkpoint_last.pt"
    args = study.eval_args(study.TINY_BPTT)
    no_memory = args[:args.index("--model-overrides")] + ["--model-overrides", "{'mem_len': 0}"]
    out = cli.call("eval_lm", wikitext, "--path", checkpoint, "--gen-subset", "valid", "--cpu", *no_memory)
    without = float(re.search(r"Perplexity: ([\d.]+)", out).group(1))
    assert without != by_name["define-64"]["valid_ppl"]

    again = study.main(["--data", wikitext, "--workdir", str(tmp_path / "work"), "--results", str(results), "--tiny",
                        "--max-update", "8", "--only", "map-64", "define-256-unit-lr0.3"])
    assert again[0] == next(r for r in finished if r["name"] == "map-64")  # a finished row is not run again
    assert "done already" in capsys.readouterr().out
    diagnosis = again[1]  # the diagnosis row: define-256 + the unit's 0.3x step, scored on validation only
    flags = diagnosis["flags"]
    assert flags[:-2] == study.rows(tiny=True)["define-256"]["flags"]
    assert flags[-2:] == ["--define-unit-lr-scale", "0.3"]
    assert diagnosis["test_ppl"] is None and 1 < diagnosis["valid_ppl"] < 1e5
    table = json.loads((results / "txl_wikitext2.json").read_text())["rows"]
    assert [r["name"] for r in table] == [*names, "define-256-unit-lr0.3"]
