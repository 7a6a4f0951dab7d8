import glob
import importlib
import json
import os
import sys

import pytest


def load(relative):
    return importlib.import_module(relative[:-len(".py")].replace("/", "."))


def test_wmt14_training_data_is_concatenated_and_filtered(tmp_path):
    wmt = load("examples/translation/wmt14_en_de.py")
    orig = tmp_path / "orig"
    pairs = {
        "training/europarl-v7.de-en": [("a b c", "x y z"), ("", "leer")],
        "commoncrawl.de-en": [("one", " ".join(["w"] * 30)), ("ok then", "gut dann")],
        "training/news-commentary-v12.de-en": [(" ".join(["v"] * 300), " ".join(["v"] * 300))],
    }
    for corpus, lines in pairs.items():
        (orig / corpus).parent.mkdir(parents=True, exist_ok=True)
        for index, lang in enumerate(("en", "de")):
            (orig / f"{corpus}.{lang}").write_text("".join(pair[index] + "\n" for pair in lines), encoding="utf-8")
    wmt.concatenate_training_data(str(orig), str(tmp_path / "raw"))
    assert (tmp_path / "raw" / "train.en").read_text().splitlines() == ["a b c", "ok then"]
    assert (tmp_path / "raw" / "train.de").read_text().splitlines() == ["x y z", "gut dann"]



def test_valid_curves_are_read_from_fairseq_logs():
    from studies.store import valid_curve

    log = (
        "2026-11-24 05:00:00 | INFO | fairseq_cli.train | Start iterating over samples\n"
        "2026-11-24 05:00:30 | INFO | train_inner | epoch 001:     25 / 1020 loss=13.3, ppl=10170.2\n"
        "2026-11-24 05:01:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.518 | ppl 733.09 | "
        "wps 4158.1 | wpb 2047.2 | bsz 16 | num_updates 100\n"
        "2026-11-24 05:02:30 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.1 | ppl 548.75 | "
        "wps 4158.1 | wpb 2047.2 | bsz 16 | num_updates 200 | best_loss 9.1\n"
        # ar_tar_cross_entropy / define_bptt_nll (the LSTM and Transformer-XL studies): more fields before ppl
        "2026-11-24 05:03:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.307 | nll_loss 9.2 | "
        "ar 0.1 | tar 0.03 | ppl 588.13 | wps 4417.5 | wpb 700 | bsz 10 | num_updates 250\n"
    )
    assert valid_curve(log) == [(100, 60.0, 733.09), (200, 150.0, 548.75), (250, 180.0, 588.13)]


def test_grad_norms_records_every_part_during_fairseq_training(tmp_path):
    import json

    from examples.common import run
    from tests import cli
    from tests.conftest import data_dir

    data = cli.wikitext_slice(data_dir("wikitext-2"), str(tmp_path / "wt2"), lines=(300, 30, 30))
    out = tmp_path / "grad_norms.json"
    log = run([sys.executable, "-m", "examples.language_model.grad_norms", out, data, "--user-dir", cli.PLUGIN,
         "--task", "language_modeling", "--arch", "define_transformer_lm_gpt2_tiny", "--tokens-per-sample", 32,
         "--max-tokens", 256, "--optimizer", "adam", "--lr", 0.001, "--max-update", 20, "--cpu",
         "--save-dir", tmp_path / "ckpt", "--no-save"], echo=False).stdout
    assert "| INFO | train | epoch 001" in log  # fairseq's own log format, which the study's parsers read
    record = json.loads(out.read_text())
    assert record["updates"] == [10, 20]
    for part in ("map", "define", "context", "output"):
        assert len(record[part]) == 2 and all(value > 0 for value in record[part]), part


def test_average_checkpoints_means_the_model_weights(tmp_path):
    import os

    import torch

    from examples.translation.pipeline import average_checkpoints, last_epoch_checkpoints
    from tests.conftest import REPO_ROOT

    state = torch.load(os.path.join(REPO_ROOT, "tests", "fixtures", "v1", "lm_checkpoint.pt"))
    key = "decoder.embed_tokens.unit.reduce.weight"
    for epoch, shift in ((1, 100.0), (2, 1.0), (3, 2.0), (4, 6.0)):
        state["model"][key] = torch.full_like(state["model"][key], shift)
        torch.save(state, tmp_path / f"checkpoint{epoch}.pt")
    paths = last_epoch_checkpoints(str(tmp_path), 3)
    assert [os.path.basename(p) for p in paths] == ["checkpoint2.pt", "checkpoint3.pt", "checkpoint4.pt"]
    averaged = torch.load(average_checkpoints(paths, str(tmp_path / "avg.pt")))
    assert torch.equal(averaged["model"][key], torch.full_like(state["model"][key], 3.0))
    with pytest.raises(FileNotFoundError, match="4 epoch checkpoints, 5 needed"):
        last_epoch_checkpoints(str(tmp_path), 5)


def test_parsers_read_both_log_formats(tmp_path):
    from studies.store import train_wall_seconds, valid_curve

    log = tmp_path / "train.log"
    log.write_text(
        "INFO:valid:epoch 001 | valid on 'valid' subset | loss 8.7 | ppl 423.68 | wps 1 | wpb 2 | bsz 16 | "
        "num_updates 200\n"
        "INFO:train:epoch 001 | loss 8.593 | ppl 386.27 | wps 1971.1 | ups 0.96 | wpb 2000 | bsz 16 | "
        "num_updates 1000 | lr 0.0003 | gnorm 0.55 | clip 2.9 | train_wall 989 | wall 1039\n"
        "2026-11-24 05:00:00 | INFO | train | epoch 002 | loss 7.4 | ppl 172.73 | wps 3753 | ups 1.83 | "
        "wpb 1000 | bsz 16 | num_updates 2000 | lr 0.0003 | gnorm 0.58 | clip 0 | train_wall 11 | wall 1826\n"
    )
    text = log.read_text()
    assert valid_curve(text) == [(200, None, 423.68)]
    assert train_wall_seconds(text) == 1000.0


def test_the_recommended_preset_is_the_unit_the_authors_fan_in_rows_ran():
    """Every committed `authors-*-fan-in` row ran exactly the unit `--define-preset recommended` builds (so those rows
    are the preset's first seed), and `make demo` trains the Transformer LM's default, the same unit."""
    from examples import recipes
    from fairseq_define.models.define_options import DEFAULT_PRESETS
    from fairseq_define.modules.define_config import DefineConfig
    from studies.runner import last_value
    from tests.conftest import REPO_ROOT

    checked = 0
    for study in ("lm_wikitext2", "txl_wikitext2", "lstm_wikitext2", "mt_multi30k"):
        for path in glob.glob(os.path.join(REPO_ROOT, "docs", "results", study, "*authors-*-fan-in", "result.json")):
            flags = json.load(open(path))["flags"]
            n, d = int(last_value(flags, "--define-map-dim")), last_value(flags, "--define-input-dim")
            ran = DefineConfig(map_dim=n, input_dim=d and int(d), transform="authors",
                               expand_dim=int(last_value(flags, "--define-expand-dim")),
                               depth=int(last_value(flags, "--define-depth")),
                               max_groups=int(last_value(flags, "--define-max-groups")),
                               norm=last_value(flags, "--define-norm"),
                               activation=last_value(flags, "--define-activation"),
                               unit_lr_scale=last_value(flags, "--define-unit-lr-scale"))
            assert ran == DefineConfig.preset("recommended", 256, map_dim=n, input_dim=d and int(d)), path
            checked += 1
    assert checked >= 3  # the Transformer-LM study's three rows at least
    assert DEFAULT_PRESETS["define_transformer_lm"] == "recommended"
    assert not any(flag.startswith("--define-") and flag not in ("--define-map-dim", "--define-input-dim")
                   for flag in recipes.SMALL_DEFINE_LM[::2] + recipes.SMALL_DEFINE_LM[1::2])
    assert recipes.SMALL_CONTROL_LM == [*recipes.SMALL_MAP, "--define-transform", "none"]


pytestmark = pytest.mark.slow
