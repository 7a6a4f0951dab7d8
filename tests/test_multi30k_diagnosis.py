"""The Multi30k study's diagnosis row (examples/translation/multi30k.py --only define-128-unit-lr0.3) on the slice of
tests/test_multi30k_study.py, in a file of its own so that `make test`'s workers run it beside that file's study."""

import os

import torch

from examples.translation import pipeline as mt_pipeline
from tests.test_multi30k_study import example_args, load_example


def test_diagnosis_row_runs_only_when_named_and_is_scored_on_valid_not_test(multi30k_slice, tmp_path,
                                                                          fairseq_in_process):
    study = load_example()
    assert set(study.DIAGNOSIS).isdisjoint(study.DEFAULT_ROWS)
    variant, plain = study.ROWS["define-128-unit-lr0.3"], study.ROWS["define-128"]
    assert variant[:len(plain)] == plain and variant[len(plain):] == ["--define-unit-lr-scale", "0.3"]
    for lang in ("en", "de"):  # an extra test set, which a diagnosis row must not score either
        (tmp_path / f"extra.{lang}").write_text("A dog.\n", encoding="utf-8")
    root = str(tmp_path / "study")
    rows = study.main(example_args(multi30k_slice, root, "--only", "define-128-unit-lr0.3", "--max-epoch", "2",
                                   "--test", str(tmp_path / "extra")))
    assert [(r["name"], r["checkpoint"], r["scored_on"]) for r in rows] == [
        ("define-128-unit-lr0.3", choice, "valid") for choice in ("average-last-2", "best")]
    assert all(r["extra_tests"] == {} for r in rows)
    out_dir, save_dir = (os.path.join(root, d, "mt_multi30k", "define-128-unit-lr0.3") for d in ("results", "runs"))
    references = mt_pipeline.read_lines(os.path.join(multi30k_slice, "val.de"))
    for choice in ("average-last-2", "best"):
        assert not os.path.exists(os.path.join(out_dir, f"hypotheses.{choice}.txt"))  # no test translations
        hypotheses = mt_pipeline.read_lines(os.path.join(out_dir, f"hypotheses.valid.{choice}.txt"))
        assert rows[0 if choice == "average-last-2" else 1]["bleu"] == round(
            mt_pipeline.score(hypotheses, references)["bleu"], 2)  # scored against the valid references
    trained = torch.load(os.path.join(save_dir, "checkpoint_best.pt"), map_location="cpu", weights_only=False)
    assert float(trained["cfg"]["model"]["define_unit_lr_scale"]) == 0.3  # (a string where the flag is parsed)
    assert any(".unit." in key and ".parametrizations." in key for key in trained["model"])  # the scaled steps
