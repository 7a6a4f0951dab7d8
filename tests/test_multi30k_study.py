"""examples/translation/multi30k.py end to end on a Multi30k slice (tiny models, 3 epochs): the rows train, are
scored on every test sentence with both checkpoint choices, paired bootstrap tests, a resumed rerun; the study's
fairseq commands run in this process (`tests.conftest.examples_in_process`), fairseq-generate once as a command
line, fairseq-interactive and the hub on the trained checkpoint (the diagnosis row:
tests/test_multi30k_diagnosis.py)."""

import importlib
import json
import os
import re
from types import SimpleNamespace

import pytest
import torch

from examples.translation import pipeline as mt_pipeline
from fairseq_define.modules.define_embedding import DefineEmbedding
from tests import cli
from tests.conftest import examples_in_process

TINY_FLAGS = ("--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 64 --decoder-embed-dim 64 "
              "--encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 --encoder-attention-heads 2 "
              "--decoder-attention-heads 2 --lr 0.003 --warmup-updates 20 --max-tokens 1024")
TINY_DEFINE_FLAGS = "--define-map-dim 32 --define-input-dim 64 --define-expand-dim 128"
STUDY_ROWS = ("baseline", "map-128", "define-128", "authors-128-fan-in")
RESULT_FIELDS = {"name", "n", "transform", "params", "define_params", "bleu", "chrf", "valid_loss", "updates",
                 "train_wall_s", "checkpoint"}


def load_example():
    return importlib.import_module("examples.translation.multi30k")


def example_args(data, root, *more):
    """The study on the slice: tiny models (the rows' flags, then these overrides), 3 epochs (of ~35 updates of
    1,024 tokens), the average of the last 2 epoch checkpoints, greedy translations (the study's beam 5 is
    overridden: what is tested is the pipeline, not the search)."""
    return ["--data", data, "--workdir", os.path.join(root, "runs"), "--results", os.path.join(root, "results"),
            "--vocab-size", "1000", "--max-epoch", "3", "--average", "2", "--extra", TINY_FLAGS,
            "--define-extra", TINY_DEFINE_FLAGS, "--generate-extra", "--beam 1 --max-len-a 1.2 --max-len-b 10", *more]


@pytest.fixture(scope="module")
def example_run(multi30k_slice, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("m30k-run"))
    with examples_in_process():
        rows = load_example().main(example_args(multi30k_slice, root))
    return SimpleNamespace(root=root, workdir=os.path.join(root, "runs", "mt_multi30k"), rows=rows,
                           results=os.path.join(root, "results", "mt_multi30k"))


def row_result(run, name):
    with open(os.path.join(run.results, name, "result.json")) as f:
        return json.load(f)


def test_example_scores_every_test_sentence_for_every_row_and_both_checkpoints(example_run, multi30k_slice):
    valid_references = mt_pipeline.read_lines(os.path.join(multi30k_slice, "val.de"))
    with open(os.path.join(example_run.results + ".json")) as f:
        table = json.load(f)["rows"]
    assert table == example_run.rows
    assert [(r["name"], r["checkpoint"]) for r in table] == [(name, choice) for name in STUDY_ROWS
                                                            for choice in ("average-last-2", "best")]
    for entry in table:
        assert RESULT_FIELDS <= set(entry) and 0.0 <= entry["bleu"] <= 100.0 and 0.0 < entry["chrf"] <= 100.0
        assert entry["updates"] > 3 * 20 and entry["train_wall_s"] >= 0 and entry["valid_loss"] > 0
    for name in STUDY_ROWS:
        result = row_result(example_run, name)
        assert result["parts"]["total"] == sum(result["parts"][p] for p in ("map", "define", "context", "output"))
        assert os.path.getsize(os.path.join(example_run.results, name, "train.log")) > 0
        for choice, scores in result["scores"].items():
            assert scores["sentences"] == 100
            assert "nrefs:1" in scores["bleu_signature"] and "tok:13a" in scores["bleu_signature"]
            assert "nc:6" in scores["chrf_signature"]
            assert 0.0 < scores["brevity_penalty"] <= 1.0 and scores["length_ratio"] > 0
            hypotheses = mt_pipeline.read_lines(os.path.join(example_run.results, name, f"hypotheses.{choice}.txt"))
            assert len(hypotheses) == 100 and "▁" not in "".join(hypotheses)  # detokenized
        # the same checkpoints scored on the valid set too (the length question is asked there)
        assert set(result["valid_scores"]) == set(result["scores"])
        for choice, scores in result["valid_scores"].items():
            assert scores["sentences"] == 100 and 0.0 < scores["brevity_penalty"] <= 1.0
            hypotheses = mt_pipeline.read_lines(os.path.join(example_run.results, name,
                                                             f"hypotheses.valid.{choice}.txt"))
            assert mt_pipeline.score(hypotheses, valid_references)["bleu"] == scores["bleu"]
    baseline, map_row, define, authors = (row_result(example_run, name) for name in STUDY_ROWS)
    assert [r["transform"] for r in (baseline, map_row, define, authors)] == ["table", "none", "define", "authors"]
    assert [r["n"] for r in (baseline, map_row, define, authors)] == [64, 32, 32, 32]  # the tiny overrides
    assert baseline["define_params"] == map_row["define_params"] == 0 < define["define_params"]
    flags = authors["flags"]
    assert 0 < authors["define_params"] and flags[flags.index("--define-unit-lr-scale") + 1] == "fan-in"
    assert map_row["parts"]["map"] == define["parts"]["map"] == authors["parts"]["map"] < baseline["parts"]["map"]
    assert map_row["parts"]["context"] == define["parts"]["context"] == baseline["parts"]["context"]
    # the valid loss of each epoch, drawn from the logs
    curve = load_example().valid_curve(os.path.join(example_run.results, "define-128", "train.log"))
    assert [u for u, _, _ in curve] == [define["updates"] // 3 * epoch for epoch in (1, 2, 3)]
    assert curve[-1][1] < curve[0][1]
    assert all(bleu is not None and 0.0 <= bleu <= 100.0 for _, _, bleu in curve)  # --eval-bleu's greedy BLEU
    assert os.path.isfile(os.path.join(example_run.root, "results", "figures", "mt_multi30k_valid.png"))


def test_paired_bootstrap_compares_the_rows_on_their_test_translations(example_run):
    with open(os.path.join(example_run.results + ".json")) as f:
        pairs = json.load(f)["paired_bootstrap"]
    choices = ("average-last-2", "best")
    assert [(t["system"], t["control"], t["checkpoint"]) for t in pairs] == [
        (system, control, choice) for system, control in (("define-128", "map-128"), ("define-128", "baseline"),
                                                          ("map-128", "baseline"), ("authors-128-fan-in", "map-128"),
                                                          ("authors-128-fan-in", "baseline")) for choice in choices]
    bleu = {(r["name"], r["checkpoint"]): r["bleu"] for r in example_run.rows}
    for t in pairs:
        difference = bleu[t["system"], t["checkpoint"]] - bleu[t["control"], t["checkpoint"]]
        assert t["bleu_delta"] == pytest.approx(difference, abs=0.011)
        assert 0.0 < t["bleu_p"] <= 1.0 and 0.0 < t["chrf_p"] <= 1.0
        assert "bs:1000" in t["bleu_signature"] and "nc:6" in t["chrf_signature"]


def test_lengths_of_a_row_scored_before_they_were_recorded_come_from_its_translations(example_run, multi30k_slice):
    study = load_example()
    references = mt_pipeline.read_lines(os.path.join(multi30k_slice, "test_2016_flickr.de"))
    result = row_result(example_run, "define-128")
    old = {choice: {k: v for k, v in scores.items() if k not in ("brevity_penalty", "length_ratio")}
           for choice, scores in result["scores"].items()}
    results_dir = os.path.dirname(example_run.results)
    assert study.add_lengths({**result, "scores": old}, results_dir, references)
    assert old == result["scores"]  # the same brevity penalty and length ratio as scored at the time
    assert not study.add_lengths(result, results_dir, references)  # nothing to add
    wrong = {choice: dict(scores, bleu=scores["bleu"] + 1) for choice, scores in old.items()}
    for scores in wrong.values():
        del scores["brevity_penalty"], scores["length_ratio"]
    with pytest.raises(ValueError, match="gives BLEU"):  # translations that are not the scored ones
        study.add_lengths({**result, "scores": wrong}, results_dir, references)


def test_paired_bootstrap_p_value_separates_a_real_difference_from_noise():
    references = [f"a man rides a red bike number {i} down the street" for i in range(200)]
    near = [r if i % 10 else r.replace("red", "blue") for i, r in enumerate(references)]
    far = [r if i % 10 else "a dog" for i, r in enumerate(references)]
    worse = mt_pipeline.paired_bootstrap(near, far, references, samples=200)
    assert worse["bleu_delta"] < 0 and worse["chrf_delta"] < 0 and worse["bleu_p"] < 0.05
    elsewhere = [r if i % 10 != 5 else r.replace("red", "blue") for i, r in enumerate(references)]  # as many errors
    level = mt_pipeline.paired_bootstrap(near, elsewhere, references, samples=200)
    assert abs(level["bleu_delta"]) < 0.5 and level["bleu_p"] > 0.2


def test_averaged_checkpoint_is_the_mean_of_the_last_epoch_checkpoints(example_run):
    save_dir = os.path.join(example_run.workdir, "define-128")
    scores = row_result(example_run, "define-128")["scores"]["average-last-2"]
    assert scores["averaged"] == ["checkpoint2.pt", "checkpoint3.pt"]
    load = lambda name: torch.load(os.path.join(save_dir, name), map_location="cpu")["model"]  # noqa: E731
    averaged, last = load(scores["checkpoint"]), load("checkpoint_last.pt")
    epochs = [load(name) for name in scores["averaged"]]
    key = "encoder.embed_tokens.unit.layers.0.weight"
    assert torch.allclose(averaged[key], (epochs[0][key] + epochs[1][key]) / 2, atol=1e-6)
    assert not torch.equal(averaged[key], epochs[0][key]) and not torch.equal(averaged[key], last[key])
    # the DeFINE rows share one embedding: an n = 32 Map projected to d = 64, a unit, and no m -> d projection
    assert averaged["encoder.embed_tokens.map.weight"].shape[1] == 32
    assert averaged["encoder.embed_tokens.map_proj.weight"].shape == (64, 32)
    assert "decoder.project_out_dim.weight" not in averaged


def test_interactive_translates_from_the_checkpoint(example_run):
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=os.path.join(example_run.workdir, "spm", "joint1000.model"))
    line = " ".join(processor.encode("A man is riding a bike.", out_type=str))
    out = cli.call("interactive", os.path.join(example_run.workdir, "data-bin"), "--path",
                   os.path.join(example_run.workdir, "define-128", "checkpoint_best.pt"), "--source-lang", "en",
                   "--target-lang", "de", "--beam", 2, "--max-len-b", 10, "--remove-bpe", "sentencepiece", "--cpu",
                   stdin=line + "\n")
    assert any(line.startswith("H-0\t") for line in out.splitlines())


def test_generate_command_line_translates_the_test_set(example_run):
    """fairseq-generate as a command line (the study runs it in-process): every test sentence gets a hypothesis."""
    out = cli.run("generate", os.path.join(example_run.workdir, "data-bin"), "--path",
                  os.path.join(example_run.workdir, "define-128", "checkpoint_best.pt"), "--gen-subset", "test",
                  "--beam", 1, "--max-len-b", 10, "--batch-size", 100, "--required-batch-size-multiple", 1,
                  "--remove-bpe", "sentencepiece", "--cpu")
    hypotheses = [line for line in out.stdout.splitlines() if line.startswith("H-")]
    assert len(hypotheses) == 100 and "▁" not in "".join(hypotheses)


def test_hub_from_pretrained_translates(example_run):
    from fairseq.models.transformer import TransformerModel

    workdir = example_run.workdir
    model = TransformerModel.from_pretrained(os.path.join(workdir, "define-128"), "checkpoint_last.pt",
                                             data_name_or_path=os.path.join(workdir, "data-bin"),
                                             user_dir=cli.PLUGIN, bpe="sentencepiece",
                                             sentencepiece_model=os.path.join(workdir, "spm", "joint1000.model"))
    model.eval()
    out = model.translate("A dog runs in the grass.", beam=2, max_len_b=10)
    assert isinstance(out, str) and "▁" not in out
    assert isinstance(model.models[0].encoder.embed_tokens, DefineEmbedding)


def test_rerun_skips_finished_rows_resumes_an_unfinished_one_and_adds_extra_tests(example_run, multi30k_slice,
                                                                                  tmp_path, fairseq_in_process):
    """Run last: it changes the study. map-128 lost its result.json (as if killed before scoring) and the budget
    grows to 4 epochs: fairseq resumes it from its checkpoint_last.pt (end of epoch 3), the finished rows are
    skipped, and every row gets the scores of the extra test set."""
    for lang in ("en", "de"):
        lines = mt_pipeline.read_lines(os.path.join(multi30k_slice, f"val.{lang}"))[:30]
        (tmp_path / f"extra30.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = {name: row_result(example_run, name) for name in STUDY_ROWS}
    logs = {name: open(os.path.join(example_run.results, name, "train.log")).read() for name in STUDY_ROWS}
    os.remove(os.path.join(example_run.results, "map-128", "result.json"))
    rows = load_example().main(example_args(multi30k_slice, example_run.root, "--max-epoch", "4",
                                            "--test", str(tmp_path / "extra30")))
    for name in ("baseline", "define-128", "authors-128-fan-in"):  # not trained again
        assert open(os.path.join(example_run.results, name, "train.log")).read() == logs[name]
        assert row_result(example_run, name)["updates"] == before[name]["updates"]
    resumed = open(os.path.join(example_run.results, "map-128", "train.log")).read()
    updates = before["map-128"]["updates"]
    assert resumed.startswith(logs["map-128"])
    assert re.search(rf"Loaded checkpoint \S*checkpoint_last.pt \(epoch 4 @ {updates} updates\)",
                     resumed[len(logs["map-128"]):])  # the start of epoch 4
    after = row_result(example_run, "map-128")
    assert after["epochs"] == 4 and after["updates"] > updates
    assert after["scores"]["average-last-2"]["averaged"] == ["checkpoint3.pt", "checkpoint4.pt"]
    for name in STUDY_ROWS:
        extra = row_result(example_run, name)["extra_tests"]["extra30"]
        assert set(extra) == {"average-last-2", "best"} and all(s["sentences"] == 30 for s in extra.values())
    assert len(rows) == 8 and all(set(r["extra_tests"]) == {"extra30"} for r in rows)
