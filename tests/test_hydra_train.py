"""fairseq-hydra-train runs the DeFINE LM and translation models from the YAML configs shipped in examples/."""

import os

import pytest
import torch

from examples.common import PLUGIN, REPO, fairseq
from examples.common import run as run_command
from tests import cli
from tests.conftest import data_dir

pytestmark = pytest.mark.slow  # fairseq-hydra-train trains, a process per run


def hydra_train(config_dir, config_name, data, save_dir, *overrides):
    command = fairseq("hydra-train", "--config-dir", os.path.join(REPO, config_dir), "--config-name", config_name,
                      f"task.data={data}", f"common.user_dir={PLUGIN}", f"checkpoint.save_dir={save_dir}",
                      "optimization.max_update=6", *overrides, user_dir=False)
    out = run_command(command, echo=False, timeout=600)
    return out.stdout + out.stderr, torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=False)


@pytest.fixture(scope="module")
def translation_data(tmp_path_factory):
    """The first 400 Multi30k en-de training pairs (and 50 for validation), words, one joint dictionary."""
    source, raw = data_dir("multi30k"), tmp_path_factory.mktemp("m30k-hydra")
    for split, name, count in (("train", "train", 400), ("valid", "val", 50)):
        for lang in ("en", "de"):
            lines = open(os.path.join(source, f"{name}.{lang}"), encoding="utf-8").readlines()[:count]
            (raw / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    binary = raw / "bin"
    cli.call("preprocess", "--source-lang", "en", "--target-lang", "de", "--trainpref", raw / "train",
             "--validpref", raw / "valid", "--joined-dictionary", "--destdir", binary, "--workers", 1)
    return binary


def test_hydra_trains_the_lm(tmp_path):
    data = cli.wikitext_slice(data_dir("wikitext-2"), str(tmp_path / "wt2"), lines=(400, 40, 40))
    log, state = hydra_train("examples/language_model/config", "define_transformer_lm_tiny", data, tmp_path / "ckpt")
    assert "num_updates 6" in log
    model = state["cfg"]["model"]
    assert model["_name"] == "define_transformer_lm" and model["define_map_dim"] == 32
    weights = state["model"]
    # the YAML's DeFINE unit was built, and the bare arch derived the tied output's width (d = n = 32), which the
    # m -> d projection and the Map both show
    assert "decoder.embed_tokens.unit.layers.0.weight" in weights
    assert weights["decoder.embed_tokens.map.weight"].shape[1] == 32
    assert weights["decoder.project_out_dim.weight"].shape == (32, 64)


def test_hydra_trains_the_translation_model(tmp_path, translation_data):
    log, state = hydra_train("examples/translation/config", "define_transformer_tiny", translation_data,
                             tmp_path / "ckpt")
    assert "num_updates 6" in log
    model = state["cfg"]["model"]
    assert model["_name"] == "define_transformer" and model["share_all_embeddings"]
    weights = state["model"]
    assert "encoder.embed_tokens.unit.layers.0.weight" in weights
    # one Map and one unit for encoder, decoder and output (separate units would start and stay different)
    for name in ("map.weight", "unit.layers.0.weight"):
        assert torch.equal(weights[f"encoder.embed_tokens.{name}"], weights[f"decoder.embed_tokens.{name}"])
    # the bare arch derived the decoder's sizes from the encoder's
    assert weights["decoder.layers.0.fc1.weight"].shape == (128, 64)


def test_a_typo_in_the_model_config_is_an_error(tmp_path, translation_data):
    with pytest.raises(Exception, match="define_mapdim"):
        hydra_train("examples/translation/config", "define_transformer_tiny", translation_data, tmp_path / "ckpt",
                    "+model.define_mapdim=16")
