"""studies/runner.py and studies/store.py with a fake command runner: rows train, score, resume and tabulate without
fairseq; a row is added in one line; the store reads fairseq's json and simple logs alike."""

import json
import subprocess

import pytest

from studies.runner import Study, describe, run_study, trained_to_budget
from studies.store import Store, log_records, train_wall_seconds, valid_curve

JSON_LOG = """\
2026-12-08 03:00:00 | INFO | fairseq_cli.train | Start iterating over samples
2026-12-08 03:01:40 | INFO | valid | {"epoch": 1, "valid_loss": "7.5", "valid_ppl": "181.02", \
"valid_num_updates": "200"}
2026-12-08 03:02:00 | INFO | train | {"epoch": 1, "train_loss": "7.2", "train_ppl": "147.03", "train_num_updates": \
"250", "train_train_wall": "110"}
"""
SIMPLE_LOG = """\
2026-12-08 03:00:00 | INFO | fairseq_cli.train | Start iterating over samples
2026-12-08 03:01:40 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 7.5 | ppl 181.02 | num_updates 200
2026-12-08 03:02:00 | INFO | train | epoch 001 | loss 7.2 | ppl 147.03 | num_updates 250 | train_wall 110
"""


@pytest.mark.parametrize("log", [JSON_LOG, SIMPLE_LOG], ids=["json", "simple"])
def test_store_reads_json_and_simple_logs_alike(log):
    valid, train = list(log_records(log, "valid")), list(log_records(log, "train"))
    assert valid[0]["ppl"] == 181.02 and valid[0]["num_updates"] == 200
    assert train[0]["num_updates"] == 250 and train[0]["epoch"] == 1
    assert train_wall_seconds(log) == 110
    assert valid_curve(log) == [(200, 100.0, 181.02)]  # seconds since the start of training
    assert trained_to_budget(log, max_update=250, max_epoch=None)
    assert not trained_to_budget(log, max_update=251, max_epoch=None)
    assert trained_to_budget(log, max_update=None, max_epoch=1)


class FakeFairseq:
    """A command runner that plays fairseq-train (a json log, a checkpoint holding the run's seed) and
    fairseq-eval-lm (perplexity 100 + seed + 0.5), and records every command."""

    def __init__(self):
        self.commands = []

    def __call__(self, command, log=None, **_):
        command = [str(c) for c in command]
        self.commands.append(command)
        tool = command[2]
        if tool == "fairseq_cli.train":
            updates = int(command[len(command) - 1 - command[::-1].index("--max-update") + 1])
            seed = command[len(command) - 1 - command[::-1].index("--seed") + 1]  # the last --seed wins
            with open(command[command.index("--save-dir") + 1] + "/checkpoint_last.pt", "w") as f:
                f.write(seed)
            with open(log, "a") as f:
                f.write(JSON_LOG.replace('"250"', f'"{updates}"'))
            return subprocess.CompletedProcess(command, 0, "", "")
        assert tool == "fairseq_cli.eval_lm", command
        seed = open(command[command.index("--path") + 1]).read()
        return subprocess.CompletedProcess(command, 0, f"| Perplexity: {100 + int(seed)}.5\n", "")


def toy_study(data_bin):
    from studies.language_models import perplexities

    rows = {"map-8": ["--define-map-dim", "8", "--define-transform", "none"],
            "recommended-8": ["--define-map-dim", "8", "--define-preset", "recommended"]}
    rows["recommended-8-seed2"] = [*rows["recommended-8"], "--seed", "2"]  # a row added in one line
    return Study("toy", rows, ["--seed", "1", "--lr", "0.1"], lambda data, workdir, runner: data_bin,
                 perplexities(), data=data_bin, max_update=5,
                 diagnosis={"map-8-lr1": [*rows["map-8"], "--lr", "1"]})


def counts(data_bin, flags):
    unit = 0 if "none" in flags else 100
    return {"total": 1000 + unit, "map": 800, "define": unit, "context": 200, "output": 0}


def test_rows_train_score_resume_and_tabulate(tmp_path, capsys):
    fake, store = FakeFairseq(), Store(str(tmp_path / "results"))
    study = toy_study(str(tmp_path))
    finished = run_study(study, data=str(tmp_path), workdir=str(tmp_path / "work"), store=store, runner=fake,
                         count=counts)
    assert [r["name"] for r in finished] == ["map-8", "recommended-8", "recommended-8-seed2"]
    trains = [c for c in fake.commands if c[2] == "fairseq_cli.train"]
    assert len(trains) == 3
    for command in trains:  # recipe, budget, then the row's flags (they win), fairseq's json log
        assert command.index("--max-update") < command.index("--define-map-dim")
        assert "--log-format" in command and command[command.index("--log-format") + 1] == "json"
    seeded = store.result("toy", "recommended-8-seed2")
    assert seeded["test_ppl"] == 102.5 and seeded["valid_ppl"] == 102.5 and seeded["updates"] == 5
    assert seeded["transform"] == "recommended" and seeded["define_params"] == 100
    assert seeded["train_wall_s"] == 110 and seeded["scored_on"] == "test"
    for subset in ("valid", "test"):  # the output each perplexity came from is kept beside result.json
        assert "Perplexity: 102.5" in open(store.path("toy", "recommended-8-seed2", f"eval-{subset}.txt")).read()
    table = json.loads((tmp_path / "results" / "toy.json").read_text())["rows"]
    assert [r["name"] for r in table] == ["map-8", "recommended-8", "recommended-8-seed2"]

    # a diagnosis row runs only by name and is scored on validation only; finished rows are not run again
    again = run_study(study, only=["map-8", "map-8-lr1"], data=str(tmp_path), workdir=str(tmp_path / "work"),
                      store=store, runner=fake, count=counts)
    assert len([c for c in fake.commands if c[2] == "fairseq_cli.train"]) == 4
    assert again[0] == finished[0] and "done already" in capsys.readouterr().out
    assert again[1]["test_ppl"] is None and again[1]["scored_on"] == "valid"
    assert not (tmp_path / "results" / "toy" / "map-8-lr1" / "eval-test.txt").exists()
    lr = [c for c in fake.commands if c[2] == "fairseq_cli.train"][-1]
    assert lr[len(lr) - 1 - lr[::-1].index("--lr") + 1] == "1"  # the row's --lr comes after the recipe's


def test_an_interrupted_row_resumes_without_training_past_its_budget(tmp_path):
    fake, store = FakeFairseq(), Store(str(tmp_path / "results"))
    study = toy_study(str(tmp_path))
    (tmp_path / "results" / "toy" / "map-8").mkdir(parents=True)
    (tmp_path / "work" / "toy" / "map-8").mkdir(parents=True)
    (tmp_path / "work" / "toy" / "map-8" / "checkpoint_last.pt").write_text("1")
    # trained to the budget, killed before scoring: scored now, not trained again
    (tmp_path / "results" / "toy" / "map-8" / "train.log").write_text(JSON_LOG.replace('"250"', '"5"'))
    result = run_study(study, only=["map-8"], data=str(tmp_path), workdir=str(tmp_path / "work"), store=store,
                       runner=fake, count=counts)[0]
    assert not [c for c in fake.commands if c[2] == "fairseq_cli.train"]
    assert result["valid_ppl"] == 101.5


def test_unknown_rows_name_the_study_rows(tmp_path):
    with pytest.raises(ValueError, match="unknown rows \\['nope'\\] of study toy; rows: map-8, recommended-8"):
        run_study(toy_study(str(tmp_path)), only=["nope"], runner=FakeFairseq(), store=Store(str(tmp_path)))


def test_describe_reads_the_last_flag():
    assert describe(["--define-map-dim", "64", "--define-input-dim", "256", "--define-preset", "recommended"]) == \
        {"n": 64, "d": 256, "transform": "recommended"}
    assert describe(["--define-map-dim", "64", "--define-transform", "authors", "--define-transform", "none"]) == \
        {"n": 64, "d": 64, "transform": "none"}
    assert describe(["--arch", "transformer_lm_big", "--decoder-embed-dim", "256"]) == \
        {"n": 256, "d": 256, "transform": "table"}
