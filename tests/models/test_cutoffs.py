"""One parser of adaptive band cutoffs for every model, whose errors name the flag that model takes."""

import pytest

import fairseq_define.plugin  # noqa: F401
from fairseq_define.models.cutoffs import parse_cutoffs
from fairseq_define.params import build_model


def test_every_spelling_of_a_list_parses_alike():
    assert parse_cutoffs("20000,40000", "--x") == parse_cutoffs("[20000, 40000]", "--x") == [20000, 40000]
    assert parse_cutoffs((5, 9), "--x") == [5, 9]
    assert parse_cutoffs(None, "--x") == parse_cutoffs("", "--x") == []


@pytest.mark.parametrize("arch,flags,message", [
    ("define_awd_lstm_tiny", ["--adaptive-softmax-cutoff", "8,40"],
     "--adaptive-softmax-cutoff=8,40 must be strictly increasing positive ids, each <= the vocabulary size 24"),
    ("define_awd_lstm_tiny", ["--adaptive-softmax-cutoff", "16,8"],
     "--adaptive-softmax-cutoff=16,8 must be strictly increasing positive ids"),
    ("define_transformer_lm_gpt2_tiny", ["--adaptive-input", "--adaptive-input-cutoff", "16,8"],
     "--adaptive-input-cutoff=16,8 must be strictly increasing positive ids"),
    ("define_transformer_xl_tiny", ["--adaptive-cutoff", "16,x"], "--adaptive-cutoff=16,x must be comma-separated"),
], ids=["lstm-beyond-vocabulary", "lstm-order", "transformer-lm", "transformer-xl"])
def test_a_bad_cutoff_is_a_one_line_error_naming_the_models_flag(arch, flags, message):
    with pytest.raises(ValueError) as error:
        build_model(["--arch", arch, "--vocab-size", "24", *flags])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
