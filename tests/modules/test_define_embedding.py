from dataclasses import FrozenInstanceError, replace

import pytest
import torch

from fairseq_define.modules.define_config import DefineConfig
from fairseq_define.modules.define_embedding import DefineEmbedding
from tests.conftest import REPO_ROOT, requires_cuda

V, PAD = 50, 1


def small(**kwargs):
    args = dict(num_embeddings=V, padding_idx=PAD, map_dim=16, expand_dim=64, depth=3, max_groups=4, embedding_dim=24)
    args.update(kwargs)
    torch.manual_seed(0)
    return DefineEmbedding(**args)


def set_option(emb, **options):
    emb.config = replace(emb.config, **options)


def tokens(batch=4, time=7, vocab=V):
    torch.manual_seed(1)
    t = torch.randint(2, vocab, (batch, time))
    t[0, -2:] = PAD
    t[-1, 0] = t[0, 1]  # repeated ids across the batch
    return t


@pytest.mark.parametrize("g_max,weights", [(4, 1_618_496), (16, 797_840)])
def test_accounting_mt_config_spec_values(g_max, weights):
    emb = DefineEmbedding(1000, PAD, map_dim=128, expand_dim=1024, depth=3, max_groups=g_max, embedding_dim=512)
    rows = emb.accounting()
    unit = [r for r in rows if r["group"] == "define"]
    assert sum(r["weights"] for r in unit) == weights
    assert sum(r["biases"] for r in unit) == 2_696
    assert [r["part"] for r in rows] == ["map", "hgt.1", "hgt.2", "hgt.3", "reduce"]
    assert rows[0]["weights"] == 1000 * 128 and rows[0]["macs_per_token"] == 0
    assert all(r["macs_per_token"] == r["weights"] for r in unit)


def test_accounting_ptb_config_spec_value():
    emb = DefineEmbedding(100, PAD, map_dim=128, expand_dim=1024, depth=7, max_groups=64, embedding_dim=400)
    assert sum(r["weights"] for r in emb.accounting() if r["group"] == "define") == 2_079_744


def test_accounting_counts_layer_norms():
    emb = DefineEmbedding(1000, PAD, map_dim=128, expand_dim=1024, depth=3, max_groups=4, embedding_dim=512, norm="ln")
    norms = [r["norm"] for r in emb.accounting()]
    assert norms == [0, 2 * 432 // 4, 2 * 728 // 2, 2 * 1024, 0]


def test_output_shape_and_padding_zeros():
    emb = small(dropout=0.0)
    t = tokens()
    y = emb(t)
    assert y.shape == (4, 7, 24)
    assert torch.equal(y[0, -2:], torch.zeros(2, 24))
    assert (y[0, :-2].abs().sum(-1) > 0).all()
    y.sum().backward()
    emb.eval()
    with torch.no_grad():
        assert torch.equal(emb(t)[0, -2:], torch.zeros(2, 24))


@pytest.mark.parametrize("norm,activation", [("ln", "gelu"), ("none", "none")])
@pytest.mark.parametrize("transform", ["define", "linear"])
def test_output_scale_after_fairseq_scaling_is_sane(norm, activation, transform):
    torch.manual_seed(0)
    emb = DefineEmbedding(5000, PAD, map_dim=128, expand_dim=1024, depth=3, max_groups=4, embedding_dim=512,
                          norm=norm, activation=activation, transform=transform)
    t = torch.randint(2, 5000, (8, 256))
    scaled = emb(t) * 512 ** 0.5  # what fairseq's embed_scale does
    assert 0.5 <= scaled.std().item() <= 2.0


def run_grads(emb, t):
    emb.zero_grad()
    y = emb(t)
    y.backward(torch.randn_like(y, generator=torch.Generator().manual_seed(3)))
    return y.detach(), {n: p.grad.clone() for n, p in emb.named_parameters()}


@pytest.mark.parametrize("kwargs", [{}, {"adaptive_cutoff": [10, 30], "adaptive_factor": 2}])
def test_dedupe_outputs_and_gradients_equal_per_position(kwargs):
    emb = small(**kwargs).double()
    t = tokens()
    y1, g1 = run_grads(emb, t)
    set_option(emb, dedupe=False)
    y2, g2 = run_grads(emb, t)
    torch.testing.assert_close(y1, y2)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], msg=name)


def test_dedupe_shares_dropout_mask_per_token():
    emb = small(dropout=0.5)
    t = torch.tensor([[5, 5, 5, 7]])
    y = emb(t)
    assert torch.equal(y[0, 0], y[0, 1]) and torch.equal(y[0, 1], y[0, 2])
    set_option(emb, dedupe=False)
    torch.manual_seed(0)
    y = emb(t)
    assert not torch.equal(y[0, 0], y[0, 1])


def test_state_dict_round_trip_strict_has_no_cache():
    a, b = small(), small(max_groups=4)
    torch.manual_seed(5)
    b = DefineEmbedding(V, PAD, map_dim=16, expand_dim=64, depth=3, max_groups=4, embedding_dim=24)
    a.eval()
    with torch.no_grad():
        a(tokens())
    keys = set(a.state_dict())
    assert not any("cache" in k for k in keys)
    b.load_state_dict(a.state_dict(), strict=True)
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(tokens()), b(tokens()))


def test_gradcheck_float64():
    emb = small(norm="ln", activation="gelu").double()
    t = tokens(2, 3)
    weights = emb.map.weight.detach().clone().requires_grad_()

    def fn(weight):
        return torch.func.functional_call(emb, {"map.weight": weight}, (t,))

    assert torch.autograd.gradcheck(fn, (weights,))


def test_fairseq_contract_attributes():
    emb = small()
    assert emb.embedding_dim == 24 and emb.padding_idx == PAD
    assert emb.weight is emb.map.weight and emb.weight.shape == (V, 16)
    with pytest.raises(AttributeError, match="lookup table"):
        emb.weights_for_band(0)
    adaptive = small(adaptive_cutoff=[10, 30], adaptive_factor=2)
    emb0, proj0 = adaptive.weights_for_band(0)
    assert emb0.shape == (10, 16)
    assert adaptive.weights_for_band(1)[0].shape == (20, 8)
    assert not hasattr(adaptive, "weight")
    with pytest.raises(AttributeError, match="the Map is adaptive .*weights_for_band"):
        _ = adaptive.weight


def test_adaptive_map_pads_zero_and_counts():
    emb = small(adaptive_cutoff=[10, 30], adaptive_factor=2)
    t = tokens()
    y = emb(t)
    assert torch.equal(y[0, -2:], torch.zeros(2, 24))
    rows = emb.accounting()
    assert rows[0]["weights"] == 10 * 16 + 16 * 16 + 20 * 8 + 8 * 16 + 20 * 4 + 4 * 16


@pytest.mark.parametrize("bad", [-1, V, V + 10])
@pytest.mark.parametrize("mode", ["dedupe", "plain", "cache"])
def test_out_of_range_ids_raise(bad, mode):
    emb = small()
    t = tokens()
    t[1, 1] = bad
    set_option(emb, dedupe=mode == "dedupe")
    if mode == "cache":
        emb.prepare_for_inference()
        emb.eval()
        ctx = torch.no_grad()
    else:
        ctx = torch.enable_grad()
    with ctx, pytest.raises(ValueError, match=f"token id {bad} is outside the vocabulary \\[0, {V}\\)"):
        emb(t)


def test_non_integer_tokens_raise():
    with pytest.raises(ValueError, match="integer tensor of ids"):
        small()(torch.randn(2, 3))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(map_dim=100, expand_dim=256, max_groups=8),
         "--define-map-dim=100 must be divisible by the 8 groups of HGT layer 1"),
        (dict(padding_idx=V), f"padding_idx={V} must be in"),
        (dict(adaptive_cutoff=[30, 10]), "--adaptive-input-cutoff=30,10 must be strictly increasing"),
        (dict(adaptive_cutoff=[10, 30], adaptive_factor=32), "--adaptive-input-factor=32 leaves band 1"),
        (dict(num_embeddings=0), "num_embeddings=0"),
    ],
)
def test_construction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_empty_batch():
    assert small()(torch.zeros(0, 5, dtype=torch.long)).shape == (0, 5, 24)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu_and_cache(dtype):
    emb = small()
    t = tokens()
    expected = emb(t).detach()
    emb = emb.to("cuda", dtype)
    y = emb(t.cuda())
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(y.float().cpu(), expected, atol=tol, rtol=tol)
    emb.prepare_for_inference()
    emb.eval()
    with torch.no_grad():
        torch.testing.assert_close(emb(t.cuda()).float().cpu(), expected, atol=tol, rtol=tol)
    assert emb.cache_nbytes > 0


def test_shared_map_is_used_and_checked():
    first = small()
    second = DefineEmbedding(V, PAD, map_dim=16, expand_dim=64, depth=3, max_groups=4, embedding_dim=24,
                             shared_map=first)
    assert second.map is first.map and second.unit is not first.unit
    assert second(tokens()).shape == (4, 7, 24)
    with pytest.raises(ValueError, match="shared_map has widths n=16, d=16; this embedding needs n=32, d=32"):
        DefineEmbedding(V, PAD, map_dim=32, expand_dim=64, depth=3, max_groups=4, embedding_dim=24, shared_map=first)


# the Table-2 Map: n -> d, and the no-unit control ---------------------------------------------------------------

def test_lookup_map_projects_n_to_d_and_counts():
    emb = small(map_dim=16, input_dim=32, expand_dim=64)
    assert emb.map_proj.weight.shape == (32, 16) and emb.map_proj.bias is None
    assert emb.unit.specs[0].in_features == 32
    rows = {r["part"]: r["params"] for r in emb.accounting()}
    assert rows["map"] == V * 16 and rows["map_proj"] == 16 * 32
    assert sum(rows.values()) == sum(p.numel() for p in emb.parameters())


def test_tied_map_output_scores_after_the_transposed_projection():
    from fairseq_define.modules import TiedMapOutput

    emb = small(map_dim=16, input_dim=32, expand_dim=64)
    out = TiedMapOutput(emb)
    assert out.weight is emb.map.weight and out.proj_weight is emb.map_proj.weight
    x = torch.randn(5, 32)
    torch.testing.assert_close(out(x), x @ emb.map_proj.weight @ emb.map.weight.t())
    with pytest.raises(ValueError, match="needs a lookup Map with an n -> d projection"):
        TiedMapOutput(small())


@pytest.mark.parametrize("input_dim,m", [(24, 24), (32, 24)])
def test_transform_none_is_the_map_alone(input_dim, m):
    emb = small(map_dim=16, input_dim=input_dim, embedding_dim=m, transform="none")
    assert emb.unit is None
    t = tokens()
    expected = emb.map(t) @ emb.map_proj.weight.t()
    if input_dim != m:
        expected = expected @ emb.out_proj.weight.t()
    else:
        assert emb.out_proj is None
    torch.testing.assert_close(emb(t), expected)
    assert all(r["group"] == "map" for r in emb.accounting())


def test_transform_none_adaptive_equals_fairseqs_adaptive_input():
    from fairseq.modules.adaptive_input import AdaptiveInput

    emb = small(map_dim=16, input_dim=24, embedding_dim=24, transform="none", adaptive_cutoff=[10, 30],
                adaptive_factor=2)
    reference = AdaptiveInput(V, PAD, 16, 2, 24, [10, 30, V], q_noise=0, qn_block_size=8)
    assert sum(p.numel() for p in emb.parameters()) == sum(p.numel() for p in reference.parameters())
    reference.load_state_dict({k[len("map."):]: v for k, v in emb.state_dict().items() if k.startswith("map.")})
    t = tokens()
    torch.testing.assert_close(emb(t), reference(t))


# the inference table ------------------------------------------------------------------------------------------

class UnitRows:
    """Counts the rows the unit computes (a forward hook)."""

    def __init__(self, emb):
        self.rows = 0
        emb.unit.register_forward_hook(lambda module, args, out: setattr(self, "rows", self.rows + out.shape[0]))


def uncached(emb, t):
    with torch.no_grad():
        return emb.embed_ids(t)


def test_plain_eval_dedupes_and_never_builds_a_table():
    emb = small()
    counter = UnitRows(emb)
    emb.eval()
    t = tokens()
    with torch.no_grad():
        for _ in range(3):
            y = emb(t)
    assert emb.cache_nbytes == 0
    assert counter.rows == 3 * t.unique().numel()
    torch.testing.assert_close(y, uncached(emb, t))


def test_prepared_table_is_built_once_and_equals_uncached():
    emb = small(cache_chunk=7)
    counter = UnitRows(emb)
    emb.prepare_for_inference()
    emb.eval()
    t = tokens()
    with torch.no_grad():
        first, second = emb(t), emb(t)
    assert counter.rows == V  # the whole vocabulary once, then lookups only
    assert emb.cache_nbytes == V * 24 * 4
    torch.testing.assert_close(first, uncached(emb, t), rtol=0, atol=1e-6)
    assert torch.equal(first, second)
    assert emb(t).requires_grad  # with autograd on, the table is bypassed so gradients flow


def prepared(emb):
    emb.prepare_for_inference()
    emb.eval()
    with torch.no_grad():
        emb(tokens())
    assert emb.cache_nbytes > 0
    return emb


def test_table_dropped_by_train_load_state_dict_and_moves():
    emb = prepared(small())
    emb.train()
    assert emb.cache_nbytes == 0
    emb.eval()
    with torch.no_grad():
        emb(tokens())
    assert emb.cache_nbytes == 0  # train() disarms it: plain eval again

    emb = prepared(small())
    other = small()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    emb.load_state_dict(other.state_dict())
    assert emb.cache_nbytes == 0
    t = tokens()
    with torch.no_grad():
        torch.testing.assert_close(emb(t), uncached(other, t), rtol=0, atol=1e-6)

    emb = prepared(small())
    emb.double()
    assert emb.cache_nbytes == 0
    with torch.no_grad():
        assert emb(tokens()).dtype == torch.float64


def test_in_place_update_in_plain_eval_is_seen_by_the_next_lookup():
    """fairseq's optimizers write through p.data (no version bump); plain eval never holds a table to go stale."""
    emb = small()
    emb.eval()
    t = tokens()
    with torch.no_grad():
        before = emb(t)
        for p in emb.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
        after = emb(t)
    torch.testing.assert_close(after, uncached(emb, t), rtol=0, atol=1e-6)
    assert (after - before).abs().max() > 1e-3


def test_table_rebuilt_under_another_autocast_dtype():
    emb = prepared(small())
    t = tokens()
    with torch.no_grad():
        fp32 = emb(t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = emb(t)
        again = emb(t)
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), fp32, atol=5e-2, rtol=5e-2)
    assert again.dtype == torch.float32 and torch.equal(again, fp32)


def test_cache_option_off_never_builds():
    emb = small(cache=False)
    emb.prepare_for_inference()
    emb.eval()
    with torch.no_grad():
        emb(tokens())
    assert emb.cache_nbytes == 0


# output scale and checkpoints --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["factor", "weights"])
def test_output_scale_modes_give_std_m_to_the_minus_half(mode):
    torch.manual_seed(0)
    emb = DefineEmbedding(2000, PAD, 256, map_dim=64, expand_dim=512, output_scale=mode)
    with torch.no_grad():
        std = emb(torch.arange(2, 2000)).std().item()
    assert abs(std * 256 ** 0.5 - 1) < 0.1
    reduce = emb.unit.reduce.weight
    xavier_std = (2 / (reduce.shape[0] + reduce.shape[1])) ** 0.5
    if mode == "factor":
        assert abs(reduce.std().item() / xavier_std - 1) < 0.05 and emb.unit.output_scale.item() < 0.5
    else:
        assert reduce.std().item() < 0.5 * xavier_std and emb.unit.output_scale.item() == 1.0


def test_a_saved_state_dict_is_loaded_as_the_current_layout():
    """A state dict saved now keeps its calibrated output scale on load; only one without a version (layout 1,
    whose scale was folded into Reduce's weights) gets the scale 1."""
    state = small().state_dict()
    scale = state["unit.output_scale"].item()
    torch.manual_seed(1)
    loaded = DefineEmbedding(V, PAD, map_dim=16, expand_dim=64, depth=3, max_groups=4, embedding_dim=24)
    assert loaded.unit.output_scale.item() not in (scale, 1.0)  # each calibrated at init, on its own weights
    loaded.load_state_dict(state, strict=True)
    assert loaded.unit.output_scale.item() == scale
    unversioned = {k: v for k, v in state.items() if k not in ("version", "unit.output_scale")}
    loaded.load_state_dict(unversioned, strict=True)
    assert loaded.unit.output_scale.item() == 1.0


def test_version_1_state_dict_loads_and_scores_identically():
    """tests/fixtures/v1/expected.pt was written by the v1 code (before DefineConfig): its state dict has no
    `version` and no `unit.output_scale`."""
    import os

    fixture = torch.load(os.path.join(REPO_ROOT, "tests", "fixtures", "v1", "expected.pt"))
    state = fixture["embedding_state"]
    assert "version" not in state and "unit.output_scale" not in state
    emb = DefineEmbedding(50, 1, 24, map_dim=16, expand_dim=64, depth=3, max_groups=4, output_scale="factor")
    emb.load_state_dict(state, strict=True)
    assert emb.unit.output_scale.item() == 1.0
    emb.eval()
    with torch.no_grad():
        torch.testing.assert_close(emb(fixture["embedding_tokens"]), fixture["embedding_out"], rtol=0, atol=1e-6)


def test_config_is_the_single_source_of_options():
    cfg = DefineConfig(map_dim=64, expand_dim=256)
    emb = DefineEmbedding(V, PAD, 24, config=cfg, depth=2)
    assert emb.config == replace(cfg, depth=2) and len(emb.unit.layers) == 2
    with pytest.raises(FrozenInstanceError):
        cfg.map_dim = 3  # frozen
    assert DefineConfig.flag("dedupe") == "--define-no-dedupe"
    assert DefineConfig.flag("adaptive_cutoff") == "--adaptive-input-cutoff"


@pytest.mark.slow
def test_modules_import_without_fairseq():
    import subprocess
    import sys

    code = ("import sys; from fairseq_define.modules import DefineEmbedding, DefineUnit, GroupLinear; "
            "import torch; DefineEmbedding(10, 1, 8, map_dim=8, expand_dim=16)(torch.tensor([[2, 3]])); "
            "print('fairseq' in sys.modules, hasattr(__import__('numpy'), 'compat'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("transform", ["define", "authors"])
def test_prepared_model_updated_in_eval_mode_is_never_served_a_stale_table(transform):
    """A hub model (prepared for inference) fine-tuned in the user's own loop without train(): each lookup checks
    the parameters' version counters, so the next forward after an optimizer step rebuilds the table."""
    emb = prepared(small(transform=transform, max_groups=2))
    t = tokens()
    optimizer = torch.optim.Adam(emb.parameters(), lr=1e-2)
    emb.embed_ids(t).pow(2).sum().backward()  # a loss with autograd on (the table is bypassed)
    optimizer.step()
    with torch.no_grad():
        after = emb(t)
        torch.testing.assert_close(after, uncached(emb, t), rtol=0, atol=1e-6)
        emb.unit.layers[0].weight.mul_(1.5)  # any in-place write through the parameter itself
        torch.testing.assert_close(emb(t), uncached(emb, t), rtol=0, atol=1e-6)
    assert emb.cache_nbytes > 0  # still the table path, rebuilt


@pytest.mark.parametrize("transform", ["define", "authors"])
@pytest.mark.parametrize("adaptive,input_dim,m", [(False, None, 16), (False, 32, 24), (True, 24, 24)])
def test_residual_starts_as_the_control_and_every_unit_tensor_moves(transform, adaptive, input_dim, m):
    """--define-residual: with the control's Map (and d -> m projection) copied in, the model is the control at
    init (<= 1e-6); after a few Adam steps every unit tensor and the gate have moved."""
    sizes = dict(num_embeddings=V, padding_idx=PAD, embedding_dim=m, map_dim=16, input_dim=input_dim,
                 adaptive_cutoff=(20, 40) if adaptive else None, adaptive_factor=2.0)
    torch.manual_seed(0)
    control = DefineEmbedding(transform="none", **sizes)
    residual = DefineEmbedding(transform=transform, residual=True, expand_dim=64, depth=3, max_groups=2, **sizes)
    missing = residual.load_state_dict(control.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("unit.", "gate")) for k in missing)
    t = tokens()
    torch.testing.assert_close(residual(t), control(t), rtol=0, atol=1e-6)
    before = {n: p.detach().clone() for n, p in residual.named_parameters() if n.startswith(("unit.", "gate"))}
    optimizer = torch.optim.Adam(residual.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        residual(t).sin().sum().backward()
        optimizer.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in residual.named_parameters() if n in before}
    assert all(change > 0 for change in moved.values()), [n for n, c in moved.items() if c == 0]
    residual.eval()
    residual.prepare_for_inference()
    with torch.no_grad():
        torch.testing.assert_close(residual(t), uncached(residual, t), rtol=0, atol=1e-6)
    parts = {r["part"]: r["params"] for r in residual.accounting()}
    assert parts["gate"] == m and sum(p.numel() for p in residual.parameters()) == sum(parts.values())


def test_host_scale_brings_the_authors_unit_to_an_embedding_scale():
    torch.manual_seed(0)
    options = dict(map_dim=32, transform="authors", expand_dim=128, depth=3, max_groups=4, activation="swish")
    plain = DefineEmbedding(500, 1, 64, config=DefineConfig(**options))
    torch.manual_seed(0)
    scaled = DefineEmbedding(500, 1, 64, config=DefineConfig(**options, host_scale=True))
    ids = torch.arange(2, 500)
    assert not plain.wants_host_scale and scaled.wants_host_scale  # the host then applies its sqrt(m)
    assert abs(scaled(ids).std().item() - 64 ** -0.5) < 0.1 * 64 ** -0.5  # calibrated over the vocabulary
    torch.testing.assert_close(scaled(ids), plain(ids) * scaled.host_factor)  # the same unit, times a fixed factor
    restored = DefineEmbedding(500, 1, 64, config=DefineConfig(**options, host_scale=True))
    restored.load_state_dict(scaled.state_dict())  # the factor is part of the checkpoint
    torch.testing.assert_close(restored(ids), scaled(ids))
    with pytest.raises(ValueError, match="^--define-host-scale=True applies to --define-transform=authors only"):
        DefineConfig(map_dim=32, host_scale=True)
