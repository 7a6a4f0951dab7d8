"""Properties of DefineEmbedding over random configurations (hypothesis): the parameters it has are what its
accounting reports and what the schedule's formula gives; dedupe computes what the per-position path computes;
the inference table holds the uncached outputs; a random invalid configuration raises a one-line ValueError
naming a flag, never another exception."""

from dataclasses import fields

import re

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fairseq_define.modules.authors_unit import authors_layers
from fairseq_define.modules.define_config import ACTIVATIONS, NORMS, OUTPUT_SCALES, TRANSFORMS, DefineConfig
from fairseq_define.modules.define_embedding import DefineEmbedding

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLAGS = [DefineConfig.flag(f.name) for f in fields(DefineConfig)]


@st.composite
def valid_embeddings(draw):
    """(DefineEmbedding args: V, m, config) for a random valid lookup-Map configuration, unit or none."""
    g_max = draw(st.sampled_from([1, 2, 4, 8]))
    n = 8 * draw(st.integers(1, 6))
    d = draw(st.sampled_from([None, 8 * g_max * draw(st.integers(1, 3))]))
    width = n if d is None else d
    config = dict(map_dim=n, input_dim=d, max_groups=g_max, transform=draw(st.sampled_from(TRANSFORMS)),
                  depth=draw(st.integers(1, 4)), expand_dim=width + 8 * g_max * draw(st.integers(0, 4)),
                  norm=draw(st.sampled_from(NORMS)), activation=draw(st.sampled_from(ACTIVATIONS)),
                  reduce_skip=draw(st.booleans()), output_scale=draw(st.sampled_from(OUTPUT_SCALES)),
                  unit_lr_scale=draw(st.sampled_from([1.0, 0.3, "fan-in"])), cache_chunk=draw(st.integers(1, 64)))
    config["residual"] = config["transform"] != "none" and draw(st.booleans())
    V, m = draw(st.integers(5, 60)), draw(st.integers(1, 48))
    try:
        cfg = DefineConfig(**config)
        if cfg.is_authors:
            authors_layers(cfg, m)
    except ValueError:  # a width the schedule's groups do not divide: not this strategy's business
        assume(False)
    return V, m, cfg


def unit_formula(cfg: DefineConfig, m: int) -> int:
    """Parameters of the unit from its schedule: per HGT layer in*out/g weights, out biases, 2*out/g LayerNorm;
    Reduce (k [+ d]) * m + m. The authors' unit: an input layer d -> m // 2 and an output layer (m + m // 2) -> m
    around its layers, each with a LayerNorm of its output width."""
    ln = 2 if cfg.norm == "ln" else 0
    if cfg.is_authors:
        p = m // 2
        total = cfg.unit_input_dim * p + p + ln * p + (m + p) * m + m + ln * m
        for spec in authors_layers(cfg, m):
            total += spec.in_features * spec.out_features // spec.groups + spec.out_features
            total += ln * spec.out_features // spec.groups
        return total
    total = 0
    for spec in cfg.schedule():
        total += spec.in_features * spec.out_features // spec.groups + spec.out_features
        total += 2 * spec.out_features // spec.groups if cfg.norm == "ln" else 0
    reduce_in = cfg.expand_dim + (cfg.unit_input_dim if cfg.reduce_skip else 0)
    return total + reduce_in * m + m


def unit_and_tokens(args, seed):
    """The embedding of a drawn configuration with a unit (others are skipped), and tokens [3, 11] with repeats."""
    V, m, cfg = args
    assume(cfg.has_unit)
    torch.manual_seed(seed)
    tokens = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(seed))
    return DefineEmbedding(V, 1, m, config=cfg), tokens


@SETTINGS
@given(valid_embeddings(), st.integers(0, 2**16))
def test_counted_parameters_equal_the_accounting_and_the_schedules_formula(args, seed):
    V, m, cfg = args
    torch.manual_seed(seed)
    emb = DefineEmbedding(V, 1, m, config=cfg)
    counted = sum(p.numel() for p in emb.parameters())
    assert counted == sum(row["params"] for row in emb.accounting())
    n, d = cfg.map_dim, cfg.unit_input_dim
    expected = V * n + (n * d if d != n else 0)
    expected += unit_formula(cfg, m) if cfg.has_unit else 0
    if not cfg.has_unit or cfg.residual:  # the control's path: d -> m when d != m (and the gate)
        expected += (d * m if d != m else 0) + (m if cfg.residual else 0)
    assert counted == expected


@SETTINGS
@given(valid_embeddings(), st.integers(0, 2**16))
def test_dedupe_equals_the_per_position_computation(args, seed):
    emb, tokens = unit_and_tokens(args, seed)
    # in float64: the two paths sum a repeated id's gradient in different orders, which in float32 leaves errors of
    # ~1e-7 of the gradient's largest entry, more than any fixed tolerance allows on its near-cancelling entries
    emb.double().train()  # no dropout configured: deterministic in training
    deduped = emb(tokens)
    (grad_deduped,) = torch.autograd.grad(deduped.pow(2).sum(), emb.map.weight)
    per_position = emb.embed_ids(tokens)
    (grad_per_position,) = torch.autograd.grad(per_position.pow(2).sum(), emb.map.weight)
    torch.testing.assert_close(deduped, per_position)
    torch.testing.assert_close(grad_deduped, grad_per_position)


@SETTINGS
@given(valid_embeddings(), st.integers(0, 2**16))
def test_inference_table_equals_the_uncached_outputs(args, seed):
    emb, tokens = unit_and_tokens(args, seed)
    emb.eval()
    with torch.no_grad():
        uncached = emb.embed_ids(tokens)
        emb.prepare_for_inference()
        cached = emb(tokens)
    assert emb.cache_nbytes == emb.num_embeddings * emb.embedding_dim * 4  # the table was built and used
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-6)


def any_value(f):
    """A value of the type the field's flag delivers, valid or not."""
    if f.metadata["choices"]:
        return st.one_of(st.sampled_from(list(f.metadata["choices"])), st.text(max_size=6))
    if f.type is bool or f.default in (True, False):
        return st.booleans()
    if f.type is float or isinstance(f.default, float):
        return st.one_of(st.floats(-1.0, 2.0), st.just(float("nan")))
    if f.name == "adaptive_cutoff":
        return st.one_of(st.none(), st.lists(st.integers(-5, 80), min_size=1, max_size=3).map(tuple))
    if f.name == "input_dim":
        return st.one_of(st.none(), st.integers(-4, 96))
    return st.integers(-4, 96)


@SETTINGS
@given(st.data(), st.integers(2, 60), st.integers(1, 32))
def test_a_random_invalid_configuration_is_a_value_error_naming_a_flag(data, V, m):
    chosen = data.draw(st.lists(st.sampled_from(fields(DefineConfig)), min_size=1, max_size=4,
                                unique_by=lambda f: f.name))
    options = {f.name: data.draw(any_value(f), label=f.name) for f in chosen}
    options.setdefault("expand_dim", 64)  # keep the valid ones small
    try:
        cfg = DefineConfig(**options)
        DefineEmbedding(V, 1, m, config=cfg)
    except ValueError as error:
        message = str(error)
        assert "\n" not in message and any(message.startswith(flag + "=") for flag in FLAGS), message
    # any other exception fails the test


@pytest.mark.parametrize("options,flag", [
    ({"max_groups": 6}, "--define-max-groups=6"),
    ({"map_dim": 0}, "--define-map-dim=0"),
    ({"dropout": 1.0}, "--define-dropout=1.0"),
    ({"transform": "bogus"}, "--define-transform=bogus"),
    ({"expand_dim": 8, "map_dim": 16}, "--define-expand-dim=8"),
    ({"transform": "\n\u2028"}, "--define-transform='\\n\\u2028'"),  # unprintable: the repr, on one line
])
def test_known_invalid_configurations_name_their_flag(options, flag):
    with pytest.raises(ValueError, match="^" + re.escape(flag)):
        DefineConfig(**options)
