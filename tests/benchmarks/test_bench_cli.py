"""The benchmarks run and write the documented JSON (tiny sizes; no timing is asserted)."""

import json
import os

import pytest

from benchmarks.__main__ import main
from examples.common import preprocess_wikitext
from tests.conftest import data_dir, examples_in_process

pytestmark = pytest.mark.slow  # the benchmarks' command line, on real data


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """WikiText-2 binarized once (fairseq-preprocess in this process) for the lm and eval benchmarks' --cache."""
    path = str(tmp_path_factory.mktemp("wt2-bin"))
    with examples_in_process():
        preprocess_wikitext(data_dir("wikitext-2"), path)
    assert os.path.isfile(os.path.join(path, "test.bin"))
    return path


def test_glt_bench_writes_rows(tmp_path):
    path = tmp_path / "glt.json"
    main(["glt", "--features", "64", "--tokens", "32", "--groups", "1", "4", "--rounds", "1", "--json", str(path)])
    result = json.loads(path.read_text())
    assert {"torch", "threads"} <= set(result["meta"])
    assert [(r["tokens"], r["groups"]) for r in result["rows"]] == [(32, 1), (32, 4)]
    for row in result["rows"]:
        assert {"ms_ours", "ms_reference", "ms_dense", "speedup_vs_reference", "fraction_of_dense"} <= set(row)
        assert row["ms_ours"] > 0


def test_embedding_bench_writes_all_candidates(tmp_path):
    path = tmp_path / "embedding.json"
    main(["embedding", "--data", data_dir("wikitext-2"), "--blocks", "2", "--block-size", "64", "--batches", "2",
          "--map-dim", "32", "--expand-dim", "64", "--embed-dim", "32", "--rounds", "1", "--json", str(path)])
    result = json.loads(path.read_text())
    assert set(result["ms"]) == {"define", "define_no_dedupe", "reference_define", "map_only", "adaptive_input",
                                 "embedding", "define_cached_eval", "embedding_eval", "define_cached_step",
                                 "bare_table_step"}
    assert "define_cached_step_vs_bare_table_step" in result["ratios"]  # the cost of the staleness check
    assert set(result["params"]) == {"define", "define_no_dedupe", "reference_define", "map_only", "adaptive_input",
                                     "embedding"}
    assert result["params"]["define"] > result["params"]["map_only"]
    assert result["meta"]["cache_nbytes"] > 0  # the inference-mode candidate used its table
    assert 0 < result["unique_per_batch"] <= 128


def test_lm_bench_times_what_users_run_against_the_control(tmp_path, cache):
    path = tmp_path / "lm.json"
    main(["lm", "--data", data_dir("wikitext-2"), "--cache", cache, "--max-tokens", "256",
          "--batches", "1", "--steps", "1", "--rounds", "1", "--map-dims", "64", "--json", str(path)])
    result = json.loads(path.read_text())
    kinds = ("define", "recommended", "default")
    assert set(result["ms_per_step"]) == {"map-64", *(f"{kind}-64" for kind in kinds)}
    assert set(result["ratios"]) == {f"{kind}_64_vs_map_64" for kind in kinds}
    params, flags = result["meta"]["params"], result["meta"]["flags"]
    assert all(params[f"{kind}-64"] > params["map-64"] for kind in kinds)
    assert "--define-transform" not in flags["default-64"]  # the architecture's default unit
    assert flags["default-64"] + ["--define-transform", "none"] == flags["map-64"]


def test_breakdown_splits_the_step_and_counts_the_floor(tmp_path, cache):
    path = tmp_path / "breakdown.json"
    main(["breakdown", "--data", data_dir("wikitext-2"), "--cache", cache, "--max-tokens", "256", "--batches", "1",
          "--steps", "1", "--rounds", "1", "--profile-steps", "1", "--map-dims", "64", "--kinds", "recommended",
          "--json", str(path)])
    result = json.loads(path.read_text())
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"map-64", "recommended-64"}
    control, unit = rows["map-64"], rows["recommended-64"]
    assert control["flops"]["unit"] == 0 and control["floor_vs_map"] == 1
    assert unit["flops"]["unit"] > 0 and unit["floor_vs_map"] > 1
    assert sum(unit["time_share"].values()) == pytest.approx(1)
    assert unit["time_share"]["unit_forward"] > 0 and unit["time_share"]["parametrization"] > 0
    assert 0 < result["batch"]["recommended-64"]["unique"] <= 256


def test_eval_bench_reports_both_passes_and_the_table(tmp_path, cache):
    path = tmp_path / "eval.json"
    main(["eval", "--data", data_dir("wikitext-2"), "--cache", cache, "--map-dim", "64",
          "--max-tokens", "512", "--batches", "2", "--rounds", "1", "--json", str(path)])
    result = json.loads(path.read_text())
    assert set(result["ratios"]) == {"validation", "eval_lm", "eval_lm_exported_vs_map", "eval_lm_exported_vs_define"}
    assert set(result["ms"]) == {f"{p} {m}-64" for p in ("validation", "eval_lm") for m in ("define", "map")} | {
        "eval_lm exported-64"}  # the stock model that fairseq-define-export makes of define-64
    vocab = sum(1 for _ in open(os.path.join(cache, "dict.txt"))) + 4  # fairseq's 4 special symbols
    assert result["inference_table"]["nbytes"] == vocab * 256 * 4  # V x m float32
