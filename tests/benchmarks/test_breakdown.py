"""The breakdown's FLOP counting against hand-computed numbers, and its split of a profiled step into parts."""

import pytest
import torch

from benchmarks.breakdown import PARTS, forward_macs, model_shapes, profile_parts, step_flops

SHAPES = {"layers": 100, "attention": 4, "decoder_proj": 10, "map_cutoffs": [10, 20], "map_bands": [6, 2],
          "map_out": 3, "unit": 50, "dedupe": True, "softmax_cutoffs": [10, 20], "head": 30, "tails": [7]}
STATS = {"positions": 8, "block": 4, "unique": 5, "input_bands": [6, 2], "unique_bands": [4, 1],
         "target_bands": [5, 3]}


def test_forward_macs_by_hand():
    assert forward_macs(SHAPES, STATS) == {
        "context": 8 * (100 + 4 * 4 + 10),  # every position: layers, attention over the 4-token block, projections
        "map": 4 * 6 + 1 * 2 + 5 * 3,  # the unique ids of each band, then the d -> m projection of each
        "unit": 5 * 50,  # the unit on the 5 unique ids
        "output": 8 * 30 + 3 * 7,  # the head everywhere, the tail on the 3 targets of band 1
    }
    without_dedupe = forward_macs({**SHAPES, "dedupe": False}, STATS)
    assert without_dedupe["map"] == 6 * 6 + 2 * 2 + 8 * 3 and without_dedupe["unit"] == 8 * 50


def test_step_flops_are_six_times_the_macs():
    flops = step_flops(SHAPES, STATS)
    assert flops == {"context": 6048, "map": 246, "unit": 1500, "output": 1566, "total": 9360}


def test_model_shapes_by_hand():
    from fairseq_define.params import build_model

    model, _ = build_model([
        "--arch", "define_transformer_lm", "--vocab-size", "104", "--decoder-layers", "1", "--decoder-embed-dim", "16",
        "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample", "8",
        "--adaptive-input", "--adaptive-input-cutoff", "20,60", "--adaptive-softmax-cutoff", "20,60",
        "--tie-adaptive-weights", "--tie-adaptive-proj", "--define-map-dim", "16", "--define-transform", "define",
        "--define-depth", "1", "--define-expand-dim", "32", "--define-max-groups", "2"], device="meta")
    assert model_shapes(model) == {
        "layers": 4 * 16 * 16 + 2 * 16 * 32,  # q, k, v, out; the FFN
        "attention": 2 * 16,
        "decoder_proj": 0,  # m = d = 16: no projection in or out
        "map_cutoffs": [20, 60, 104], "map_bands": [16 * 16, 4 * 16, 1 * 16],  # band widths 16, 16/4, 16/16 -> d
        "map_out": 0,
        "unit": 16 * 32 // 2 + 32 * 16,  # one GLT 16 -> 32 in 2 groups, Reduce 32 -> 16
        "dedupe": True,
        "softmax_cutoffs": [20, 60, 104],
        "head": 20 * 16 + 16 * 2,  # the tied shortlist, two cluster logits
        "tails": [16 * 4 + 40 * 4, 16 * 1 + 44 * 1],  # tied projection d -> band width, then the band's rows
    }


@pytest.fixture
def embedding():
    from fairseq_define.modules.define_embedding import DefineEmbedding

    torch.manual_seed(0)
    return DefineEmbedding(50, 1, 16, map_dim=8, expand_dim=32, depth=2, max_groups=2, unit_lr_scale=0.5)


def test_profiled_parts_add_up_to_the_step(embedding):
    tokens = torch.randint(2, 50, (4, 16))

    def take_step():
        embedding.zero_grad(set_to_none=True)
        embedding(tokens).square().sum().backward()

    parts = profile_parts(embedding, take_step, steps=2)
    assert set(parts) == {*PARTS, "step"}
    for part in ("unit_forward", "unit_backward", "parametrization", "dedupe"):
        assert parts[part] > 0, part
    assert sum(parts[part] for part in PARTS) == pytest.approx(parts["step"])
    assert parts["rest"] >= 0
    assert not any(hook for m in embedding.modules() for hook in (m._forward_hooks, m._forward_pre_hooks))
