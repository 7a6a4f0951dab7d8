"""The benchmarks run and write the documented JSON (tiny sizes; no timing is asserted)."""

import json

from fairseq_define.bench.__main__ import main
from tests.conftest import data_dir


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
    assert set(result["ms"]) == {"define", "define_no_dedupe", "reference_define", "adaptive_input", "embedding",
                                 "define_cached_eval", "embedding_eval"}
    assert set(result["params"]) == {"define", "define_no_dedupe", "reference_define", "adaptive_input", "embedding"}
    assert 0 < result["unique_per_batch"] <= 128
