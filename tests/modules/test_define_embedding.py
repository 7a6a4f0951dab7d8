import pytest
import torch

from fairseq_define.modules.define_embedding import DefineEmbedding
from tests.conftest import requires_cuda

V, PAD = 50, 1


def small(**kwargs):
    args = dict(num_embeddings=V, padding_idx=PAD, map_dim=16, expand_dim=64, depth=3, max_groups=4, embedding_dim=24)
    args.update(kwargs)
    torch.manual_seed(0)
    return DefineEmbedding(**args)


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
    unit = [r for r in rows if r["part"] != "map"]
    assert sum(r["weights"] for r in unit) == weights
    assert sum(r["biases"] for r in unit) == 2_696
    assert [r["part"] for r in rows] == ["map", "hgt.1", "hgt.2", "hgt.3", "reduce"]
    assert rows[0]["weights"] == 1000 * 128 and rows[0]["macs_per_token"] == 0
    assert all(r["macs_per_token"] == r["weights"] for r in unit)


def test_accounting_ptb_config_spec_value():
    emb = DefineEmbedding(100, PAD, map_dim=128, expand_dim=1024, depth=7, max_groups=64, embedding_dim=400)
    assert sum(r["weights"] for r in emb.accounting() if r["part"] != "map") == 2_079_744


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
    emb.dedupe = True
    y1, g1 = run_grads(emb, t)
    emb.dedupe = False
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
    emb.dedupe = False
    torch.manual_seed(0)
    y = emb(t)
    assert not torch.equal(y[0, 0], y[0, 1])


def test_cache_equals_uncached_and_is_used_only_in_eval_without_grad():
    emb = small()
    t = tokens()
    emb.eval()
    with torch.no_grad():
        emb.cache = False
        expected = emb(t)
        assert emb.cache_nbytes == 0
        emb.cache = True
        cached = emb(t)
    assert emb.cache_nbytes == V * 24 * 4
    torch.testing.assert_close(cached, expected, rtol=0, atol=1e-6)
    # with grad enabled, the cache is bypassed so gradients flow
    y = emb(t)
    assert y.requires_grad


def test_cache_built_in_bounded_chunks():
    emb = small(cache_chunk=7)
    emb.eval()
    with torch.no_grad():
        table = emb.cache_table()
        expected = emb.embed_ids(torch.arange(V))
    torch.testing.assert_close(table, expected)


def test_cache_invalidated_by_optimizer_step_load_state_dict_and_train():
    emb = small()
    t = tokens()
    emb.eval()
    with torch.no_grad():
        before = emb(t)
    # an optimizer step changes parameters in place
    emb.train()
    opt = torch.optim.SGD(emb.parameters(), lr=0.5)
    emb(t).pow(2).sum().backward()
    emb.eval()
    with torch.no_grad():
        emb(t)  # builds a table
    opt.step()
    with torch.no_grad():
        emb.cache = False
        fresh = emb(t)
        emb.cache = True
        after_step = emb(t)
    torch.testing.assert_close(after_step, fresh, rtol=0, atol=1e-6)
    assert not torch.allclose(after_step, before)
    # load_state_dict copies in place
    other = small()
    other.load_state_dict({k: v + 0.01 for k, v in emb.state_dict().items()})
    emb.load_state_dict(other.state_dict())
    with torch.no_grad():
        loaded = emb(t)
        emb.cache = False
        expected = emb(t)
    torch.testing.assert_close(loaded, expected, rtol=0, atol=1e-6)
    emb.cache = True
    emb.train()
    assert emb.cache_nbytes == 0


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
    emb.dedupe = mode == "dedupe"
    if mode == "cache":
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
        (dict(map_dim=100, expand_dim=256, max_groups=8), "map_dim=100 must be divisible by the 8 groups of HGT layer 1"),
        (dict(padding_idx=V), f"padding_idx={V} must be in"),
        (dict(adaptive_cutoff=[30, 10]), "adaptive_cutoff=.* must be strictly increasing"),
        (dict(adaptive_cutoff=[10, 30], adaptive_factor=32), "adaptive_factor=32"),
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
    emb.eval()
    with torch.no_grad():
        torch.testing.assert_close(emb(t.cuda()).float().cpu(), expected, atol=tol, rtol=tol)


def test_shared_map_is_used_and_checked():
    first = small()
    second = DefineEmbedding(V, PAD, map_dim=16, expand_dim=64, depth=3, max_groups=4, embedding_dim=24,
                             shared_map=first.map)
    assert second.map is first.map and second.unit is not first.unit
    assert second(tokens()).shape == (4, 7, 24)
    with pytest.raises(ValueError, match="shared_map has dimension 16, expected map_dim=32"):
        DefineEmbedding(V, PAD, map_dim=32, expand_dim=64, depth=3, max_groups=4, embedding_dim=24, shared_map=first.map)
