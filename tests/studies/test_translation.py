"""studies/translation.py: the Multi30k study's rows, the length penalty chosen on valid, the committed table read
back, and the tiny study end to end on a Multi30k slice (two test rows, one diagnosis row, an extra test set, the
paired test, a rerun, the trained model through fairseq-interactive and the hub), its fairseq commands run in this
process by `tests.cli.run_in_process`."""

import gzip
import os
import re
from types import SimpleNamespace

import pytest
import torch

from examples.translation import pipeline
from studies import translation
from studies.catalog import study as catalog_study
from studies.runner import run_study, table_rows
from studies.store import Store, log_records
from studies.units import NO_UNIT, RECOMMENDED
from tests.cli import run_in_process

SEEDED = ("map-128", "recommended-128")
RUN_ROWS = ("map-128", "recommended-128", "define-128-unit-lr0.3")  # the rows the end-to-end test trains
CHOICES = ("average-last-2", "best")  # the tiny study's checkpoint choices


@pytest.mark.parametrize("tiny", [False, True])
def test_rows_are_derived_from_the_main_rows(tiny):
    study = translation.mt_multi30k(tiny=tiny)
    rows, diagnosis = study.rows, study.diagnosis
    map_row = rows["map-128"]
    assert map_row[-len(NO_UNIT):] == NO_UNIT
    assert rows["recommended-128"] == map_row[:-len(NO_UNIT)] + RECOMMENDED
    for name in SEEDED:
        for seed in (2, 3):
            assert rows[f"{name}-seed{seed}"] == [*rows[name], "--seed", str(seed)]  # after the recipe's --seed 1
    assert diagnosis == {"define-128-unit-lr0.3": [*rows["define-128"], "--define-unit-lr-scale", "0.3"],
                         "authors-128-residual-fan-in": [*rows["authors-128-fan-in"], "--define-residual"],
                         "authors-128-fan-in-host-scale": [*rows["authors-128-fan-in"], "--define-host-scale"]}
    assert study.default == ("baseline", "map-128", "define-128", "authors-128-fan-in", "recommended-128")
    assert set(study.default) <= set(rows) and set(diagnosis).isdisjoint(rows)
    assert {name for pair in translation.PAIRS for name in pair} <= set(rows)  # pairs of rows scored on test
    # the same rows as the old study, fairseq's translation task, its recipe, epoch checkpoints to average
    assert study.train[:2] == ["--task", "translation"] and study.train[2:2 + len(translation.RECIPE)] == \
        translation.RECIPE
    averaged = 2 if tiny else translation.AVERAGED
    assert study.train[study.train.index("--keep-last-epochs") + 1] == str(averaged)
    assert study.budget() == ["--max-epoch", str(2 if tiny else translation.MAX_EPOCH)]


def test_tiny_study_has_the_same_rows_on_a_smaller_model():
    full, tiny = translation.mt_multi30k(), catalog_study("mt_multi30k", tiny=True, tests=["extra"])
    assert list(tiny.rows) == list(full.rows) and list(tiny.diagnosis) == list(full.diagnosis)
    for name, flags in tiny.every_row.items():
        widths = {flag: flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag.endswith("-dim")}
        assert widths["--encoder-embed-dim"] == widths["--decoder-embed-dim"] == "64"
        if "--define-map-dim" in widths:  # a quarter of the full row's Map
            full_flags = full.every_row[name]
            assert int(widths["--define-map-dim"]) * 4 == int(full_flags[full_flags.index("--define-map-dim") + 1])


@pytest.mark.slow
def test_every_row_builds_its_model():
    from fairseq_define.params import build_model, count_parts

    study = translation.mt_multi30k()
    for name, flags in ((name, flags) for name, flags in study.every_row.items() if "-seed" not in name):
        parts = count_parts(build_model(["--vocab-size", "8000", *flags])[0])
        assert (parts["define"] > 0) == (name.startswith(("define", "authors", "recommended"))), name
        assert (parts["map"] == 8000 * 256) == (name == "baseline"), name


def test_lenpen_with_the_highest_valid_bleu_is_chosen():
    def grid(*bleus):
        return {lenpen: {"bleu": bleu, "brevity_penalty": 1.0} for lenpen, bleu in zip(translation.LENPEN_GRID,
                                                                                         bleus)}

    assert translation.choose_lenpen(grid(30.0, 31.0, 32.0, 33.5, 33.0, 32.9)) == 1.2
    assert translation.choose_lenpen(grid(35.0, 31.0, 32.0, 33.5, 33.0, 32.9)) == 0.6
    assert translation.choose_lenpen(dict(reversed(grid(1, 2, 3, 4, 5, 6).items()))) == 1.6  # not by order
    assert translation.choose_lenpen(grid(33.0, 33.0, 33.0, 33.0, 30.0, 30.0)) == 1.0  # a tie: the default
    assert translation.choose_lenpen(grid(30.0, 33.0, 30.0, 33.0, 30.0, 30.0)) == 0.8  # then the nearer, smaller


def test_committed_results_read_back_as_their_table():
    """The committed rows (scored before the length penalty was chosen) give the committed table's entries."""
    store = Store()
    if not store.has(translation.STUDY, "baseline"):
        pytest.skip("no committed Multi30k results")

    def without_lenpen(rows):
        return [{k: v for k, v in row.items() if k != "lenpen"} for row in rows]

    rows = table_rows(translation.mt_multi30k(), store)
    assert without_lenpen(rows) == without_lenpen(store.table(translation.STUDY)["rows"])
    assert {(r["name"], r["checkpoint"]) for r in rows} >= {("baseline", "average-last-5"), ("baseline", "best")}


class RecordingRunner:
    """`run_in_process`, remembering each command's fairseq tool."""

    def __init__(self):
        self.tools = []

    def __call__(self, command, log=None):
        self.tools.append(str(command[2]))
        return run_in_process(command, log=log, echo=False)


@pytest.fixture(scope="module")
def study_run(multi30k_slice, tmp_path_factory):
    """The tiny study's RUN_ROWS trained and scored (with a 30-sentence extra test set), then run again."""
    root = tmp_path_factory.mktemp("mt-study")
    for lang in ("en", "de"):
        lines = pipeline.read_lines(os.path.join(multi30k_slice, f"val.{lang}"))[:30]
        (root / f"extra30.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster, above all on a shared machine
    try:
        study = translation.mt_multi30k(tiny=True, tests=(str(root / "extra30"),))
        store, workdir = Store(str(root / "results")), str(root / "runs")
        first, again = RecordingRunner(), RecordingRunner()
        results = run_study(study, RUN_ROWS, multi30k_slice, workdir, store, runner=first)
        rerun = run_study(study, RUN_ROWS, multi30k_slice, workdir, store, runner=again)
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(study=study, store=store, results=results, rerun=rerun, first=first, again=again,
                           workdir=os.path.join(workdir, translation.STUDY), slice=multi30k_slice)


def kept(run, row, name):
    return run.store.path(translation.STUDY, row, name)


def generated(path):
    """The detokenized hypotheses of a kept fairseq-generate output, in corpus order."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = dict(re.findall(r"^D-(\d+)\t[^\t]*\t(.*)$", f.read(), flags=re.M))
    return [lines[str(i)] for i in range(len(lines))]


@pytest.mark.slow
def test_rows_are_scored_with_the_lenpen_chosen_on_valid(study_run):
    references = {split: pipeline.read_lines(os.path.join(study_run.slice, f"{name}.de"))
                  for split, name in (("valid", "val"), ("test", "test_2016_flickr"))}
    assert [r["name"] for r in study_run.results] == list(RUN_ROWS)
    for result in study_run.results[:2]:
        name = result["name"]
        assert result["scored_on"] == "test" and set(result["scores"]) == set(CHOICES)
        assert result["scores"]["average-last-2"]["averaged"] == ["checkpoint1.pt", "checkpoint2.pt"]
        assert os.path.isfile(os.path.join(study_run.workdir, name, "average-last-2.pt"))
        assert log_records(open(kept(study_run, name, "train.log")).read(), "train")  # fairseq's json log
        for choice in CHOICES:
            scores, valid = result["scores"][choice], result["valid_scores"][choice]
            grid, lenpen = result["lenpen_grid"][choice], result["lenpen"][choice]
            # the grid, each point's valid BLEU and brevity penalty, and the best of it chosen
            assert list(grid) == [str(p) for p in translation.TINY_LENPEN_GRID]
            assert lenpen == translation.choose_lenpen({float(p): s for p, s in grid.items()})
            assert grid[str(lenpen)] == {"bleu": valid["bleu"], "brevity_penalty": valid["brevity_penalty"]}
            for point in translation.TINY_LENPEN_GRID:
                output = generated(kept(study_run, name, f"generate-valid.{choice}.lenpen{point}.txt.gz"))
                assert pipeline.score(output, references["valid"])["bleu"] == grid[str(point)]["bleu"]
            # the chosen valid translations and the test ones, kept, give the recorded scores
            hypotheses = pipeline.read_lines(kept(study_run, name, f"hypotheses.valid.{choice}.txt"))
            assert pipeline.score(hypotheses, references["valid"]) == valid
            hypotheses = pipeline.read_lines(kept(study_run, name, f"hypotheses.{choice}.txt"))
            assert generated(kept(study_run, name, f"generate-test.{choice}.txt.gz")) == hypotheses
            assert {k: scores[k] for k in valid} == pipeline.score(hypotheses, references["test"])
            assert scores["sentences"] == 100 and "nrefs:1" in scores["bleu_signature"]
            assert 0.0 <= scores["brevity_penalty"] <= 1.0 and scores["length_ratio"] > 0
            with open(kept(study_run, name, f"validate-{choice}.txt")) as f:  # the valid loss's source
                losses = re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", f.read())
            assert float(losses[-1]) == scores["valid_loss"]
            assert scores["checkpoint"] == ("checkpoint_best.pt" if choice == "best" else "average-last-2.pt")
            extra = result["extra_tests"]["extra30"][choice]
            assert extra["sentences"] == 30
            assert pipeline.read_lines(kept(study_run, name, f"hypotheses.extra30.{choice}.txt")) == generated(
                kept(study_run, name, f"generate-extra30.{choice}.txt.gz"))
    recommended = study_run.results[1]
    assert (recommended["transform"], recommended["n"]) == ("recommended", 32) and recommended["define_params"] > 0


@pytest.mark.slow
def test_a_diagnosis_row_is_scored_on_valid_only(study_run):
    result = study_run.results[2]
    assert result["scored_on"] == "valid" and result["extra_tests"] == {}
    assert result["flags"][-2:] == ["--define-unit-lr-scale", "0.3"]
    for choice in CHOICES:
        assert {k: result["scores"][choice][k] for k in result["valid_scores"][choice]} == \
            result["valid_scores"][choice]
        for name in (f"hypotheses.{choice}.txt", f"generate-test.{choice}.txt.gz",
                     f"hypotheses.extra30.{choice}.txt"):
            assert not os.path.exists(kept(study_run, "define-128-unit-lr0.3", name))
        assert os.path.isfile(kept(study_run, "define-128-unit-lr0.3", f"hypotheses.valid.{choice}.txt"))


@pytest.mark.slow
def test_table_and_paired_test_of_the_rows_scored_on_test(study_run, tmp_path):
    table = study_run.store.table(translation.STUDY)
    assert [(r["name"], r["checkpoint"], r["scored_on"]) for r in table["rows"]] == [
        (name, choice, "valid" if name in study_run.study.diagnosis else "test") for name in RUN_ROWS
        for choice in CHOICES]
    assert all(r["lenpen"] in translation.TINY_LENPEN_GRID for r in table["rows"])
    pairs = table["paired_bootstrap"]
    assert [(t["system"], t["control"], t["checkpoint"]) for t in pairs] == [
        ("recommended-128", "map-128", choice) for choice in CHOICES]  # the only pair of PAIRS that ran
    bleu = {(r["name"], r["checkpoint"]): r["bleu"] for r in table["rows"]}
    for t in pairs:
        assert t["bleu_delta"] == pytest.approx(bleu["recommended-128", t["checkpoint"]] -
                                                bleu["map-128", t["checkpoint"]], abs=0.011)
        assert 0.0 < t["bleu_p"] <= 1.0 and "bs:1000" in t["bleu_signature"]
    figure = translation.plot(study_run.store, str(tmp_path / "valid.png"))
    assert figure and os.path.getsize(figure) > 0


@pytest.mark.slow
def test_a_second_run_skips_the_finished_rows(study_run):
    assert "fairseq_cli.train" in study_run.first.tools and "fairseq_cli.preprocess" in study_run.first.tools
    assert study_run.again.tools == []  # no command: the data is prepared and every row has its result.json
    assert study_run.rerun == study_run.results
    assert study_run.store.table(translation.STUDY)["paired_bootstrap"]


@pytest.mark.slow
def test_averaged_checkpoint_is_the_mean_of_the_last_epoch_checkpoints(study_run):
    save_dir = os.path.join(study_run.workdir, "recommended-128")

    def weights(name):
        return torch.load(os.path.join(save_dir, name), map_location="cpu", weights_only=False)["model"]

    averaged, last = weights("average-last-2.pt"), weights("checkpoint_last.pt")
    epochs = [weights(name) for name in ("checkpoint1.pt", "checkpoint2.pt")]
    key = "encoder.embed_tokens.map.weight"
    assert averaged[key].shape[1] == 32  # the tiny row's Map, a quarter of 128
    assert torch.allclose(averaged[key], (epochs[0][key] + epochs[1][key]) / 2, atol=1e-6)
    assert not torch.equal(averaged[key], last[key])


@pytest.mark.slow
def test_the_trained_define_model_translates_through_interactive_and_the_hub(study_run):
    import sentencepiece

    from fairseq.models.transformer import TransformerModel
    from fairseq_define.modules.define_embedding import DefineEmbedding
    from tests import cli

    data_bin, spm = (os.path.join(study_run.workdir, name) for name in ("data-bin", "spm/joint500.model"))
    save_dir = os.path.join(study_run.workdir, "recommended-128")
    pieces = " ".join(sentencepiece.SentencePieceProcessor(model_file=spm).encode("A dog runs.", out_type=str))
    out = cli.call("interactive", data_bin, "--path", os.path.join(save_dir, "checkpoint_best.pt"),
                   "--source-lang", "en", "--target-lang", "de", "--beam", 2, "--max-len-b", 10,
                   "--remove-bpe", "sentencepiece", "--cpu", stdin=pieces + "\n")
    assert any(line.startswith("H-0\t") for line in out.splitlines())
    model = TransformerModel.from_pretrained(save_dir, "checkpoint_last.pt", data_name_or_path=data_bin,
                                             user_dir=cli.PLUGIN, bpe="sentencepiece", sentencepiece_model=spm)
    model.eval()
    assert isinstance(model.models[0].encoder.embed_tokens, DefineEmbedding)
    translated = model.translate("A dog runs in the grass.", beam=2, max_len_b=10)
    assert isinstance(translated, str) and "\u2581" not in translated  # detokenized


def test_paired_bootstrap_p_value_separates_a_real_difference_from_noise():
    references = [f"a man rides a red bike number {i} down the street" for i in range(200)]
    near = [r if i % 10 else r.replace("red", "blue") for i, r in enumerate(references)]
    far = [r if i % 10 else "a dog" for i, r in enumerate(references)]
    worse = pipeline.paired_bootstrap(near, far, references, samples=200)
    assert worse["bleu_delta"] < 0 and worse["chrf_delta"] < 0 and worse["bleu_p"] < 0.05
    elsewhere = [r if i % 10 != 5 else r.replace("red", "blue") for i, r in enumerate(references)]  # as many errors
    level = pipeline.paired_bootstrap(near, elsewhere, references, samples=200)
    assert abs(level["bleu_delta"]) < 0.5 and level["bleu_p"] > 0.2


def test_table_has_an_entry_per_checkpoint_choice_with_its_lenpen():
    scores = {"bleu": 30.123, "chrf": 55.5, "valid_loss": 4.5, "brevity_penalty": 0.95}
    result = {"name": "recommended-128", "n": 128, "transform": "recommended", "params": 10, "define_params": 2,
              "updates": 1320, "train_wall_s": 60.0, "scored_on": "test",
              "scores": {"average-last-5": scores, "best": scores},
              "valid_scores": {"average-last-5": {"bleu": 31.0, "brevity_penalty": 0.97}},
              "lenpen": {"average-last-5": 1.4, "best": 1.2}}
    entries = translation.table_entries(result)
    assert [(e["checkpoint"], e["lenpen"], e["bleu"], e["valid"]) for e in entries] == [
        ("average-last-5", 1.4, 30.12, {"bleu": 31.0, "brevity_penalty": 0.97}), ("best", 1.2, 30.12, None)]
