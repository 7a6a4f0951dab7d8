"""--define-preset: a preset sets every unit option of its recipe; a flag given too wins; each model family builds
its default preset when no unit is configured."""

import pytest

from fairseq_define.models.define_options import DEFAULT_PRESETS
from fairseq_define.modules.define_config import PRESETS, DefineConfig, preset_options
from fairseq_define.params import build_model, build_model_and_config

LM = ["--vocab-size", "500", "--arch", "define_transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "64",
      "--decoder-ffn-embed-dim", "128", "--decoder-attention-heads", "2", "--define-map-dim", "32",
      "--define-input-dim", "64"]


def unit_config(*flags, base=LM):
    """The built unit's DefineConfig, and the model's flags as the checkpoint stores them."""
    model, _, stored = build_model_and_config([*base, *flags], device="meta")
    return model.decoder.embed_tokens.config, stored


def test_python_presets_spell_each_recipe_once():
    recommended = DefineConfig.preset("recommended", 256, map_dim=64, input_dim=256)
    assert (recommended.transform, recommended.expand_dim, recommended.depth, recommended.max_groups) == \
        ("authors", 1024, 3, 32)
    assert (recommended.activation, recommended.unit_lr_scale, recommended.host_scale) == ("swish", "fan-in", False)
    assert DefineConfig.preset("recommended", 256, map_dim=64, activation="gelu").activation == "gelu"
    assert DefineConfig.preset("recommended", 32, map_dim=16).max_groups == 16  # the authors' unit needs d % G == 0
    paper = DefineConfig.preset("paper", 512, map_dim=128)
    assert (paper.transform, paper.activation, paper.unit_lr_scale, paper.host_scale) == ("define", "gelu", 1.0, False)
    with pytest.raises(ValueError, match="--define-preset=bogus is not one of paper, recommended"):
        preset_options("bogus", 256, 256)


@pytest.mark.parametrize("preset", PRESETS)
def test_the_flag_builds_what_the_python_preset_builds(preset):
    config, stored = unit_config("--define-preset", preset)
    expected = DefineConfig.preset(preset, 64, map_dim=32, input_dim=64)
    for name, value in preset_options(preset, 64, 64).items():
        assert getattr(config, name) == getattr(expected, name) == value, name
    assert stored["define_preset"] == preset  # a checkpoint keeps the preset's name


def test_a_flag_given_too_wins_over_the_preset():
    config, _ = unit_config("--define-preset", "recommended", "--define-activation", "gelu",
                            "--define-expand-dim", "96")
    assert (config.transform, config.activation, config.expand_dim) == ("authors", "gelu", 96)


def test_without_unit_flags_each_family_builds_its_default_preset():
    config, _ = unit_config()
    default = DEFAULT_PRESETS["define_transformer_lm"]
    for name, value in preset_options(default, 64, 64).items():
        assert getattr(config, name) == value, name
    control, _ = unit_config("--define-transform", "none")  # a unit configured by hand: no preset
    assert control.transform == "none" and control.unit_lr_scale == 1.0


def test_an_architecture_sizes_the_paper_unit_but_not_another_preset():
    tiny = ["--vocab-size", "500", "--arch", "define_transformer_lm_gpt2_tiny"]
    paper, _ = unit_config("--define-preset", "paper", base=tiny)
    assert (paper.expand_dim, paper.depth) == (128, 2)  # the architecture's sizes for the paper's unit
    recommended, _ = unit_config("--define-preset", "recommended", base=tiny)
    assert (recommended.expand_dim, recommended.depth) == (4 * 64, 3)  # the preset's, from the model width


def test_a_bad_preset_is_an_error_naming_the_flag():
    with pytest.raises(ValueError, match="--define-preset"):
        build_model([*LM, "--define-preset", "bogus"], device="meta")
