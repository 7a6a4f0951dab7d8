"""The authors' unit (--define-transform authors) against the figures of spec authors-unit.md, and against a
reference forward written from the spec's step table with explicit per-group loops."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairseq_define.modules.authors_unit import AuthorsDefineUnit, authors_groups, authors_layers, authors_widths
from fairseq_define.modules.define_config import DefineConfig
from fairseq_define.modules.define_embedding import DefineEmbedding


def authors_config(d, k, depth, max_groups, **options):
    return DefineConfig(map_dim=d, expand_dim=k, depth=depth, max_groups=max_groups, transform="authors", **options)


# spec §3: every N x G cell, as instantiated from the authors' modules
SCHEDULE = {
    (3, 2): [1, 2, 1], (3, 4): [4, 2, 1], (3, 8): [4, 2, 1], (3, 16): [4, 2, 1],
    (4, 2): [2, 1, 2, 1], (4, 4): [1, 4, 2, 1], (4, 8): [8, 4, 2, 1], (4, 16): [8, 4, 2, 1],
    (5, 2): [1, 2, 1, 2, 1], (5, 4): [2, 1, 4, 2, 1], (5, 8): [1, 8, 4, 2, 1], (5, 16): [16, 8, 4, 2, 1],
    (7, 2): [1, 2, 1, 2, 1, 2, 1], (7, 4): [1, 4, 2, 1, 4, 2, 1], (7, 8): [4, 2, 1, 8, 4, 2, 1],
    (7, 16): [2, 1, 16, 8, 4, 2, 1],
}


@pytest.mark.parametrize("depth,max_groups", sorted(SCHEDULE))
def test_schedule_table_of_the_spec(depth, max_groups):
    assert authors_groups(depth, max_groups) == SCHEDULE[depth, max_groups]


@pytest.mark.parametrize(
    "d,m,k,max_groups,outputs,inputs",
    [
        (128, 512, 1024, 16, [640, 1024, 512], [256, 896, 1280]),  # (a)
        (256, 256, 1024, 32, [576, 1024, 256], [128, 704, 1152]),  # (b)
    ],
)
def test_widths_of_the_worked_examples(d, m, k, max_groups, outputs, inputs):
    specs = authors_layers(authors_config(d, k, 3, max_groups), m)
    assert [s.out_features for s in specs] == outputs
    assert [s.in_features for s in specs] == inputs
    assert [s.groups for s in specs] == [4, 2, 1]


@pytest.mark.parametrize("start,stop,depth", [(256, 1024, 3), (128, 1000, 7), (200, 333, 5), (64, 4096, 11),
                                              (300, 100, 4), (1, 2, 9)])
def test_widths_truncate_numpy_linspace(start, stop, depth):
    assert authors_widths(start, stop, depth) == np.linspace(start, stop, depth).astype(int)[1:].tolist()


# spec §9: per layer (params of weights + bias + LN) and the unit's total
COUNTS = [
    (dict(d=128, k=1024, max_groups=16), 512, [33_536, 41_920, 460_800, 656_896, 394_752], 1_587_904),
    (dict(d=256, k=1024, max_groups=32), 256, [33_152, 19_296, 362_496, 295_680, 99_072], 809_696),
]


@pytest.mark.parametrize("sizes,m,layers,total", COUNTS)
def test_parameter_counts_of_the_spec(sizes, m, layers, total):
    unit = AuthorsDefineUnit(authors_config(sizes["d"], sizes["k"], 3, sizes["max_groups"]), m)
    assert sum(p.numel() for p in unit.parameters()) == total
    emb = DefineEmbedding(1000, 1, m, map_dim=sizes["d"], expand_dim=sizes["k"], depth=3,
                          max_groups=sizes["max_groups"], transform="authors")
    rows = [r for r in emb.accounting() if r["group"] == "define"]
    assert [r["part"] for r in rows] == ["input", "glt.1", "glt.2", "glt.3", "output"]
    assert [r["params"] for r in rows] == layers
    assert sum(p.numel() for p in emb.unit.parameters()) == total


def test_grouped_layers_get_xavier_on_the_3d_weight():
    """(a) layer 1 [4, 64, 160]: bound sqrt(6 / (64 * 160 + 640)) = 0.0235; layer 2 [2, 448, 512]: 0.0051;
    dense layers: the ordinary Xavier bound sqrt(6 / (in + out)); biases 0."""
    torch.manual_seed(0)
    unit = AuthorsDefineUnit(authors_config(128, 1024, 3, 16), 512)
    expected = [math.sqrt(6 / (64 * 160 + 640)), math.sqrt(6 / (448 * 512 + 1024)), math.sqrt(6 / (1280 + 512))]
    assert expected[0] == pytest.approx(0.0235, abs=1e-4) and expected[1] == pytest.approx(0.0051, abs=1e-4)
    for layer, bound in zip(unit.layers, expected):
        w = layer.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
        assert torch.all(layer.bias == 0)
    w = unit.output_layer.weight
    assert w.abs().max() <= math.sqrt(6 / (768 + 512)) and w.abs().max() > 0.95 * math.sqrt(6 / (768 + 512))


def reference_forward(unit: AuthorsDefineUnit, e: torch.Tensor) -> torch.Tensor:
    """The spec's step table, literally: x = act(LN(Linear(e))); per layer, group j of the input (contiguous
    chunks) through its own block, per-group LN, act; the mixer [x_1 ; y_1 ; ... ; x_g ; y_g] for the next layer
    (g of the next layer); [x ; y_N] into the output layer. Dropout 0."""
    act = unit.activation

    def finish(h, norm):
        return act(norm(h))

    x = finish(F.linear(e, unit.input_layer.weight, unit.input_layer.bias), unit.input_norm)
    h = x
    for index, (spec, layer, norm) in enumerate(zip(unit.specs, unit.layers, unit.norms)):
        g = spec.groups
        if g == 1:
            y = finish(F.linear(h, layer.weight, layer.bias), norm)
        else:
            chunks = h.chunk(g, dim=1)
            y = torch.cat([finish(chunks[j] @ layer.weight[j] + layer.bias[j], norm) for j in range(g)], dim=1)
        if index == len(unit.specs) - 1:
            h = y
        else:
            g_next = unit.specs[index + 1].groups
            xs, ys = x.chunk(g_next, dim=1), y.chunk(g_next, dim=1)
            h = torch.cat([part for j in range(g_next) for part in (xs[j], ys[j])], dim=1)
    return finish(F.linear(torch.cat([x, h], dim=1), unit.output_layer.weight, unit.output_layer.bias),
                  unit.output_norm)


@pytest.mark.parametrize("depth,max_groups", [(3, 32), (4, 4), (5, 8), (2, 1)])
def test_forward_equals_the_reference(depth, max_groups):
    torch.manual_seed(0)
    unit = AuthorsDefineUnit(authors_config(64, 256, depth, max_groups, activation="swish"), 48)
    with torch.no_grad():  # non-trivial norms and biases, so that the layout of every tensor matters
        for p in unit.parameters():
            p.add_(0.1 * torch.randn_like(p))
    e = torch.randn(11, 64)
    torch.testing.assert_close(unit(e), reference_forward(unit, e), atol=2e-6, rtol=1e-5)


def trained_like(emb):
    with torch.no_grad():
        for p in emb.unit.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return emb


def test_embedding_scales_a_lookup_map_by_sqrt_n_and_pads_with_f_of_zero():
    torch.manual_seed(0)
    emb = trained_like(DefineEmbedding(40, 1, 32, map_dim=16, expand_dim=64, depth=3, max_groups=4,
                                       transform="authors", activation="swish"))
    ids = torch.tensor([[3, 1, 7], [1, 9, 3]])
    expected = emb.unit(emb.map.weight[ids.view(-1)] * 4.0).view(2, 3, 32)
    torch.testing.assert_close(emb(ids), expected)
    padding = emb(ids)[ids == 1]
    assert padding.abs().max() > 0  # f(0): a learned constant, not masked (as in the authors' code)
    torch.testing.assert_close(padding[0], padding[1])
    assert not emb.wants_host_scale and DefineEmbedding(40, 1, 32, map_dim=16, transform="authors",
                                                          residual=True).wants_host_scale


def test_dedupe_equals_per_position_and_the_table_equals_uncached():
    torch.manual_seed(0)
    emb = trained_like(DefineEmbedding(60, 1, 32, map_dim=16, expand_dim=64, depth=4, max_groups=4,
                                       transform="authors"))
    ids = torch.randint(0, 60, (5, 9))
    ids[0, :3] = ids[1, 2]
    deduped = emb(ids)
    deduped.pow(2).sum().backward()
    grads = [p.grad.clone() for p in emb.parameters()]
    emb.zero_grad()
    per_position = emb.embed_ids(ids)
    per_position.pow(2).sum().backward()
    torch.testing.assert_close(deduped, per_position)
    for g, p in zip(grads, emb.parameters()):
        torch.testing.assert_close(g, p.grad)
    emb.eval()
    emb.prepare_for_inference()
    with torch.no_grad():
        torch.testing.assert_close(emb(ids), per_position.detach())
    assert emb.cache_nbytes == 60 * 32 * 4


def test_locked_map_dropout_is_one_mask_per_sequence_and_dedupe_keeps_it():
    """Training: a token repeated inside a sequence gets one output; the same token in another sequence another
    (a different mask); deduping over (sequence, id) pairs gives the per-position outputs for the same masks."""
    emb = DefineEmbedding(30, 1, 16, map_dim=8, expand_dim=32, depth=2, max_groups=2, transform="authors",
                          map_dropout=0.5)
    emb.train()
    ids = torch.tensor([[5, 5, 6, 5], [5, 7, 5, 6]])
    torch.manual_seed(3)
    deduped = emb(ids)
    torch.testing.assert_close(deduped[0, 0], deduped[0, 1])
    torch.testing.assert_close(deduped[0, 0], deduped[0, 3])
    assert not torch.allclose(deduped[0, 0], deduped[1, 0])
    emb.config = replace(emb.config, dedupe=False)
    torch.manual_seed(3)
    torch.testing.assert_close(emb(ids), deduped)
    emb.eval()
    torch.testing.assert_close(emb(ids)[0, 0], emb(ids)[1, 0])


@pytest.mark.parametrize(
    "options,m,match",
    [
        (dict(depth=1), 32, "--define-depth=1 must be >= 2 with --define-transform=authors"),
        (dict(map_dim=15, max_groups=1), 32, "--define-map-dim=15 must be even"),
        (dict(map_dim=24, max_groups=16), 32, "--define-map-dim=24 must be divisible by --define-max-groups=16"),
        (dict(map_dim=16, input_dim=20, max_groups=8), 32, "--define-input-dim=20 must be divisible by"),
        (dict(map_dim=32, max_groups=8), 20, "--define-max-groups=8 gives GLT layer 1 of the authors' unit 4 groups, "
                                              "which do not divide its input-layer width m // 2 = 10"),
        (dict(map_dim=32, max_groups=4, depth=4), 12, "GLT layer 2 of the authors' unit 4 groups"),
    ],
)
def test_configurations_the_authors_code_rejects_raise_one_line_errors(options, m, match):
    args = dict(num_embeddings=30, padding_idx=1, embedding_dim=m, expand_dim=64, depth=3, max_groups=4,
                transform="authors")
    args.update(options)
    with pytest.raises(ValueError, match=match) as error:
        DefineEmbedding(**args)
    assert "\n" not in str(error.value)


def test_non_power_of_two_cap_is_accepted_as_by_the_authors():
    unit = AuthorsDefineUnit(authors_config(48, 256, 3, 12), 64)
    assert [s.groups for s in unit.specs] == [4, 2, 1]


def test_residual_without_a_unit_is_an_error():
    with pytest.raises(ValueError, match="--define-residual=True adds a unit to the control's path; "
                                         "--define-transform=none has none"):
        DefineConfig(transform="none", residual=True)
