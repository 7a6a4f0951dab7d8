"""examples/language_model/lstm_wikitext2.py: the AWD-LSTM study runs end to end (tiny sizes, a WikiText-2 slice) and
writes its table; at the real sizes its DeFINE row has >= 15 % fewer parameters than the baseline."""

import json
import os

from fairseq_define.params import build_model, count_parts
from tests.conftest import data_dir

WIKITEXT2_VOCAB = 33_280  # fairseq's dictionary of WikiText-2's training set: 33,276 types + 4 specials


def totals(study, vocab):
    counts = {}
    for name, row in study.items():
        model, _ = build_model(["--vocab-size", str(vocab), *row["flags"]], device="meta")
        counts[name] = dict(count_parts(model))
    return counts


def test_real_sizes_table_1c_saving_and_table_1a_pair():
    from examples.language_model.lstm_wikitext2 import rows

    study = rows()
    assert list(study) == ["baseline", "define-128", "adaptive-256", "adaptive-256-define", "authors-128-fan-in",
                           "adaptive-256-authors-fan-in"]
    counts = totals(study, WIKITEXT2_VOCAB)
    base, define = counts["baseline"], counts["define-128"]
    assert base["context"] == define["context"] == counts["adaptive-256"]["context"] == 4_466_688  # one context
    assert base["define"] == 0 and base["map"] == WIKITEXT2_VOCAB * 256
    assert define["map"] == WIKITEXT2_VOCAB * 128 and define["define"] == 1_940_608
    assert base["total"] == 13_019_648 and define["total"] == 10_733_184
    assert define["total"] <= 0.85 * base["total"]  # the Table 1c shape: >= 15 % fewer parameters
    adaptive, adaptive_define = counts["adaptive-256"], counts["adaptive-256-define"]
    assert adaptive["define"] == 0 and adaptive_define["define"] == 437_120  # Table 1a's N = 3 unit
    # bands 5000 x 256, 15000 x 64, 13280 x 16, tail projections (64 + 16) x 256, 2 cluster logits x 256
    assert adaptive["map"] + adaptive["output"] == 2_473_472 and adaptive["total"] == 6_940_160
    assert adaptive_define["total"] == 6_940_160 + 437_120
    # the recommended unit (the authors', k = 1024, N = 3, g_max = 32) in both shapes, every other part the same
    authors, adaptive_authors = counts["authors-128-fan-in"], counts["adaptive-256-authors-fan-in"]
    assert {k: v for k, v in authors.items() if k not in ("define", "total")} == \
        {k: v for k, v in define.items() if k not in ("define", "total")}
    assert authors["define"] == 793_312 and authors["total"] <= 0.75 * base["total"]
    assert adaptive_authors["define"] == 809_696 and adaptive_authors["total"] == 6_940_160 + 809_696
    for name in ("authors-128-fan-in", "adaptive-256-authors-fan-in"):
        flags = study[name]["flags"]
        assert flags[-2:] == ["--define-unit-lr-scale", "fan-in"] and "authors" in flags


def test_diagnosis_rows_change_one_thing():
    from examples.language_model.lstm_wikitext2 import NO_DROPOUT, diagnosis_rows, rows

    study, diagnosis = rows(), diagnosis_rows()
    assert list(diagnosis) == ["adaptive-256-define-unit-lr1", "adaptive-256-define-unit-lr0.1",
                               "adaptive-256-no-dropout", "adaptive-256-define-no-dropout",
                               "adaptive-256-authors-residual-fan-in", "authors-128-residual-fan-in"]
    for name, row in diagnosis.items():  # a later flag wins over the study's (--define-unit-lr-scale 0.3, dropouts)
        if "-unit-lr" in name:
            assert row["flags"][:-2] == study["adaptive-256-define"]["flags"]
            assert row["flags"][-2:] == ["--define-unit-lr-scale", name.split("lr")[-1]]
        elif "-residual" in name:
            assert row["flags"] == study[name.replace("-residual", "")]["flags"] + ["--define-residual"]
        else:
            assert row["flags"] == study[name.replace("-no-dropout", "")]["flags"] + NO_DROPOUT


def test_tiny_study_runs_and_writes_its_table(tmp_path, fairseq_in_process):
    from examples.language_model import lstm_wikitext2

    # the first lines of WikiText-2, raw: the script binarizes them itself (into WORKDIR/wikitext-2-bin), as it
    # does with the real data set (no subprocess timeout either, unlike tests.cli.wikitext_slice)
    raw, results, workdir = tmp_path / "wt2", tmp_path / "results", tmp_path / "runs"
    raw.mkdir()
    for split, count in (("train", 1000), ("valid", 100), ("test", 100)):
        with open(os.path.join(data_dir("wikitext-2"), f"wiki.{split}.tokens"), encoding="utf-8") as f:
            (raw / f"wiki.{split}.tokens").write_text("".join(line for _, line in zip(range(count), f)),
                                                     encoding="utf-8")
    finished = lstm_wikitext2.main(["--data", str(raw), "--workdir", str(workdir), "--results", str(results),
                                    "--tiny", "--max-update", "8"])
    data = workdir / "wikitext-2-bin"
    names = ["baseline", "define-16", "adaptive-32", "adaptive-32-define", "authors-16-fan-in",
             "adaptive-32-authors-fan-in"]
    assert [r["name"] for r in finished] == names
    table = json.load(open(results / "lstm_wikitext2.json"))["rows"]
    assert [r["name"] for r in table] == names
    vocab = len(open(os.path.join(data, "dict.txt")).readlines()) + 4
    for row in table:
        assert set(row) == {"name", "n", "d", "transform", "params", "define_params", "valid_ppl", "test_ppl",
                            "updates", "train_wall_s"}
        assert row["updates"] == 8
        assert 1 < row["valid_ppl"] < 2 * vocab and 1 < row["test_ppl"] < 2 * vocab
        unit = "define" if "define" in row["name"] else "authors" if "authors" in row["name"] else "none"
        assert row["transform"] == unit and (row["define_params"] > 0) == (unit != "none")
        assert (results / "lstm_wikitext2" / row["name"] / "train.log").is_file()
        assert (workdir / "lstm_wikitext2" / row["name"] / "checkpoint_last.pt").is_file()
    by_name = {r["name"]: r for r in table}
    assert by_name["define-16"]["n"] == 16 and by_name["baseline"]["n"] == 32
    # a second call finds every row done and only rewrites the table
    again = lstm_wikitext2.main(["--data", str(raw), "--workdir", str(workdir), "--results", str(results), "--tiny",
                                 "--max-update", "8", "--only", "baseline"])
    assert again[0]["valid_ppl"] == by_name["baseline"]["valid_ppl"]
