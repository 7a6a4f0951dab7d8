"""Checkpoints written before the model refactor (tests/fixtures/v2, made by its make_fixture.py with that
code) load into today's models and score the fixed tokens identically, up to float32 rounding (1e-5, as the v1
fixture's test: the kernels' summation order depends on the machine and its thread count)."""

import os

import pytest
import torch

import fairseq_define.plugin  # noqa: F401  (registers the models)
from tests.conftest import REPO_ROOT

FIXTURE = os.path.join(REPO_ROOT, "tests", "fixtures", "v2")


@pytest.mark.parametrize("name", ["lstm", "txl", "transformer_lm"])
def test_checkpoint_before_the_refactor_loads_and_scores_identically(name):
    from fairseq import checkpoint_utils

    expected = torch.load(os.path.join(FIXTURE, "expected.pt"))
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([os.path.join(FIXTURE, f"{name}.pt")],
                                                                 arg_overrides={"data": FIXTURE})
    model = models[0].eval()
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(expected["tokens"]), log_probs=True)
    assert lprobs.shape == (2, 10, 24)
    torch.testing.assert_close(lprobs, expected[name], rtol=0, atol=1e-5)
