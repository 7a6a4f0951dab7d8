"""Transformer-XL stack and tied adaptive softmax: memory, causality, relative positions, parameter counts."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from fairseq_define.modules.tied_adaptive_softmax import TiedAdaptiveLogSoftmax
from fairseq_define.modules.transformer_xl import PositionalEmbedding, TransformerXLDecoderStack

SMALL = dict(n_layer=3, d_model=16, n_head=2, d_head=5, d_inner=24)
WT103_V = 267_735
WT103_CUTOFFS = [20000, 40000, 200000]


def small_stack(**kwargs):
    torch.manual_seed(0)
    config = {**SMALL, **kwargs}
    stack = TransformerXLDecoderStack(**config).double().eval()
    with torch.no_grad():  # LayerNorms away from (1, 0), so that their parameters matter in the tests
        for module in stack.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return stack


def stream(B=2, L=12, d=SMALL["d_model"], seed=1):
    return torch.randn(B, L, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def window_mask(L, seg_len, mem_len):
    """[L, L] True = masked: what segmented processing lets position p see (keys from the memory start)."""
    p = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    first_visible = (p // seg_len * seg_len - mem_len).clamp(min=0)
    return (j > p) | (j < first_visible)


def unique_numel(*modules):
    params = {id(p): p for m in modules for p in m.parameters()}
    return sum(p.numel() for p in params.values())


# ---------------------------------------------------------------- memory and positions
@pytest.mark.parametrize("pre_lnorm", [False, True])
@pytest.mark.parametrize("seg_len,mem_len", [(4, 4), (4, 8), (3, 5)])
def test_segments_with_memory_equal_one_pass_with_the_same_window(pre_lnorm, seg_len, mem_len):
    stack = small_stack(pre_lnorm=pre_lnorm, mem_len=mem_len)
    x = stream(L=12)
    mems, outs = None, []
    for s in range(0, 12, seg_len):
        h, mems = stack(x[:, s:s + seg_len], mems)
        outs.append(h)
    segmented = torch.cat(outs, dim=1)
    one_pass, _ = stack(x, attn_mask=window_mask(12, seg_len, mem_len))
    torch.testing.assert_close(segmented, one_pass, rtol=0, atol=1e-10)


def test_same_length_segments_equal_a_sliding_window():
    mem_len = seg_len = 4
    stack = small_stack(mem_len=mem_len, same_length=True)
    x = stream(L=12)
    mems, outs = None, []
    for s in range(0, 12, seg_len):
        h, mems = stack(x[:, s:s + seg_len], mems)
        outs.append(h)
    p, j = torch.arange(12)[:, None], torch.arange(12)[None, :]
    sliding = (j > p) | (j <= p - mem_len)  # every query sees itself and the mem_len - 1 keys before it
    one_pass, _ = stack(x, attn_mask=sliding)
    torch.testing.assert_close(torch.cat(outs, dim=1), one_pass, rtol=0, atol=1e-10)


def test_same_length_mask_gives_every_query_mem_len_keys():
    stack = small_stack(mem_len=6, same_length=True)
    visible = (~stack.causal_mask(T=4, M=6)).sum(dim=1)
    assert visible.tolist() == [6, 6, 6, 6]
    assert (~stack.causal_mask(T=4, M=0)).sum(dim=1).tolist() == [1, 2, 3, 4]  # K <= mem_len: plain causal


@pytest.mark.parametrize("pre_lnorm", [False, True])
def test_one_token_at_a_time_equals_the_full_forward(pre_lnorm):
    stack = small_stack(pre_lnorm=pre_lnorm, mem_len=10)
    x = stream(L=10)
    full, full_mems = stack(x)
    mems, outs = None, []
    for t in range(10):
        h, mems = stack(x[:, t:t + 1], mems)
        outs.append(h)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=0, atol=1e-10)
    for a, b in zip(mems, full_mems):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_new_mems_are_the_detached_last_inputs_of_every_layer():
    stack = small_stack(mem_len=5)
    x = stream(L=7).requires_grad_()
    h, mems = stack(x)
    assert len(mems) == SMALL["n_layer"]
    assert all(m.shape == (2, 5, SMALL["d_model"]) and not m.requires_grad for m in mems)
    torch.testing.assert_close(mems[0], x[:, -5:].detach())  # layer 0's input is the (dropout-free) input
    inputs = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args: inputs.append(args[0])) for layer in stack.layers]
    stack(x)
    for hook in hooks:
        hook.remove()
    for m, inp in zip(mems, inputs):
        torch.testing.assert_close(m, inp[:, -5:].detach())
    _, longer = stack(stream(L=3, seed=2), mems)
    torch.testing.assert_close(longer[0][:, :2], x[:, -2:].detach())  # memory slides by the segment length
    assert TransformerXLDecoderStack(**SMALL, mem_len=0)(stream(L=3).float())[1] is None


def naive_layer_attention(attn, x, mem, u, v, clamp_len=-1):
    """Relative attention of one layer written with an explicit [T, K] table of distances (post-norm)."""
    context = torch.cat([mem, x], dim=1)
    B, T, _ = x.shape
    K, H, Dh = context.size(1), attn.n_head, attn.d_head
    M = K - T
    q, k, val = attn.qkv_net(context).chunk(3, dim=-1)
    q = q[:, -T:].view(B, T, H, Dh)
    k, val = k.view(B, K, H, Dh), val.view(B, K, H, Dh)
    pos = PositionalEmbedding(x.size(-1)).double()
    scores = torch.full((B, H, T, K), float("-inf"), dtype=x.dtype)
    for i in range(T):
        for j in range(M + i + 1):
            distance = float(M + i - j)
            if clamp_len > 0:
                distance = min(distance, clamp_len)
            r = attn.r_net(pos(torch.tensor([distance], dtype=x.dtype))).view(H, Dh)
            scores[:, :, i, j] = ((q[:, i] + u) * k[:, j]).sum(-1) + ((q[:, i] + v) * r).sum(-1)
    probs = (scores * attn.scale).softmax(-1)
    out = torch.einsum("bhij,bjhd->bihd", probs, val).reshape(B, T, H * Dh)
    return attn.layer_norm(x + attn.o_net(out))


@pytest.mark.parametrize("clamp_len", [-1, 2])
def test_relative_attention_matches_an_explicit_distance_table(clamp_len):
    stack = small_stack(mem_len=3, clamp_len=clamp_len)
    attn = stack.layers[0].attn
    x, mem = stream(L=4), stream(L=3, seed=5)
    distances = torch.arange(6.0, -1, -1, dtype=torch.float64)
    if clamp_len > 0:
        distances = distances.clamp(max=clamp_len)
    got = attn(x, stack.pos_emb(distances), stack.causal_mask(4, 3), mem, stack.r_w_bias, stack.r_r_bias)
    want = naive_layer_attention(attn, x, mem, stack.r_w_bias, stack.r_r_bias, clamp_len)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_clamp_len_at_or_beyond_the_longest_distance_changes_nothing():
    x = stream(L=6)
    mems = [stream(L=4, seed=s) for s in range(SMALL["n_layer"])]
    reference, _ = small_stack(mem_len=4)(x, mems)  # longest distance: 4 + 6 - 1 = 9
    for clamp_len in (9, 50):
        clamped, _ = small_stack(mem_len=4, clamp_len=clamp_len)(x, mems)
        assert torch.equal(clamped, reference)
    clamped, _ = small_stack(mem_len=4, clamp_len=3)(x, mems)
    assert not torch.allclose(clamped, reference)


def test_causal_a_future_input_does_not_change_past_outputs():
    stack = small_stack(mem_len=4)
    x = stream(L=8)
    mems = [stream(L=4, seed=s) for s in range(SMALL["n_layer"])]
    h, _ = stack(x, mems)
    changed = x.clone()
    changed[:, 5] += 1.0
    h2, _ = stack(changed, mems)
    torch.testing.assert_close(h2[:, :5], h[:, :5], rtol=0, atol=0)
    assert not torch.allclose(h2[:, 5], h[:, 5])


@pytest.mark.parametrize("untie_r,pre_lnorm", [(False, False), (True, True)])
def test_gradients_reach_u_v_and_every_layer(untie_r, pre_lnorm):
    stack = small_stack(untie_r=untie_r, pre_lnorm=pre_lnorm, mem_len=3).train()
    mems = [stream(L=3, seed=s) for s in range(SMALL["n_layer"])]
    h, _ = stack(stream(L=5), mems)
    h.pow(2).sum().backward()
    for name, p in stack.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    names = {name for name, _ in stack.named_parameters()}
    if untie_r:
        assert stack.r_w_bias is None and "layers.2.attn.r_r_bias" in names
    else:
        assert {"r_w_bias", "r_r_bias"} <= names and not any("attn.r_w_bias" in n for n in names)


def test_dropout_is_active_in_training_only():
    stack = small_stack(dropout=0.5, dropatt=0.5)
    x = stream(L=5)
    assert torch.equal(stack(x)[0], stack(x)[0])
    stack.train()
    assert not torch.equal(stack(x)[0], stack(x)[0])


def test_attention_width_differs_from_d_model():
    stack = TransformerXLDecoderStack(n_layer=1, d_model=38, n_head=10, d_head=41, d_inner=20)
    attn = stack.layers[0].attn
    assert attn.qkv_net.weight.shape == (3 * 410, 38) and attn.o_net.weight.shape == (38, 410)
    assert attn.r_net.weight.shape == (410, 38) and stack.r_w_bias.shape == (10, 41)
    assert attn.qkv_net.bias is None and attn.o_net.bias is None and attn.r_net.bias is None
    assert stack(torch.randn(2, 3, 38))[0].shape == (2, 3, 38)


# ---------------------------------------------------------------- parameter counts (paper Table 2)
def wt103_context(d_model, d_inner, untie_r=False):
    return TransformerXLDecoderStack(n_layer=16, d_model=d_model, n_head=10, d_head=41, d_inner=d_inner,
                                     untie_r=untie_r)


def test_transformer_xl_context_parameter_counts():
    with torch.device("meta"):
        assert unique_numel(wt103_context(384, 1920)) == 36_250_420
        assert unique_numel(wt103_context(384, 1920, untie_r=True)) == 36_262_720


@pytest.mark.parametrize("d_model,d_inner,total", [(384, 1920, 139_329_550), (410, 2100, 151_107_538)])
def test_transformer_xl_totals_with_tied_adaptive_softmax(d_model, d_inner, total):
    with torch.device("meta"):
        table = nn.Embedding(WT103_V, d_model)
        softmax = TiedAdaptiveLogSoftmax(table.weight, WT103_CUTOFFS, d_model=d_model)
        context = wt103_context(d_model, d_inner)
    assert unique_numel(softmax) - table.weight.numel() == WT103_V + 3 * (d_model + 1)
    assert unique_numel(table, softmax, context) == total


# ---------------------------------------------------------------- tied adaptive softmax
def small_softmax(d_model=8, n=8, **kwargs):
    torch.manual_seed(0)
    table = nn.Embedding(50, n).double()
    proj = nn.Parameter(torch.randn(d_model, n, dtype=torch.float64) * 0.3) if d_model != n else None
    softmax = TiedAdaptiveLogSoftmax(table.weight, [10, 20, 35], d_model=d_model, proj=proj, **kwargs).double()
    with torch.no_grad():
        for p in (softmax.bias, softmax.cluster_weight, softmax.cluster_bias):
            p.normal_()
    return table, proj, softmax


@pytest.mark.parametrize("d_model", [8, 12])
def test_nll_equals_the_gathered_log_prob_and_rows_normalise(d_model):
    table, proj, softmax = small_softmax(d_model=d_model)
    hidden = torch.randn(40, d_model, dtype=torch.float64)
    target = torch.randint(0, 50, (40,))
    target[:4] = torch.tensor([0, 10, 20, 49])  # every band
    log_prob = softmax.log_prob(hidden)
    assert log_prob.shape == (40, 50)
    torch.testing.assert_close(log_prob.exp().sum(-1), torch.ones(40, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(softmax.nll(hidden, target), -log_prob.gather(1, target[:, None]).squeeze(1),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(softmax(hidden.view(4, 10, -1), target.view(4, 10)),
                               softmax.nll(hidden, target).view(4, 10))
    torch.testing.assert_close(softmax.get_log_prob(hidden.view(4, 10, -1)), log_prob.view(4, 10, 50))


def test_softmax_weight_is_the_passed_table_and_gradients_flow():
    table, proj, softmax = small_softmax(d_model=12)
    assert softmax.weight is table.weight
    assert softmax.band_projection(0) is softmax.own_projs["0"]
    assert all(softmax.band_projection(b) is proj for b in (1, 2, 3))
    hidden = torch.randn(30, 12, dtype=torch.float64)
    target = torch.arange(30) + 15
    softmax.nll(hidden, target).sum().backward()
    for p in (table.weight, proj, softmax.own_projs["0"], softmax.bias, softmax.cluster_weight,
              softmax.cluster_bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    model = nn.ModuleDict({"embed": table, "softmax": softmax})
    assert sum(p.numel() for p in model.parameters()) == unique_numel(table, softmax)


def test_softmax_accepts_a_callable_table_and_untied_projections():
    table = nn.Embedding(50, 8).double()
    softmax = TiedAdaptiveLogSoftmax(lambda: table.weight, [10], d_model=6, tie_projs=[False, False]).double()
    assert softmax.weight is table.weight and "weight" not in dict(softmax.named_parameters())
    assert set(softmax.own_projs) == {"0", "1"}
    table.weight = nn.Parameter(torch.randn(50, 8, dtype=torch.float64))  # follows a replaced table
    assert softmax.weight is table.weight
    hidden = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(softmax.log_prob(hidden).exp().sum(-1), torch.ones(5, dtype=torch.float64))


def test_softmax_without_clusters_is_a_plain_tied_softmax():
    table = nn.Embedding(30, 8).double()
    softmax = TiedAdaptiveLogSoftmax(table.weight, []).double()
    hidden = torch.randn(6, 8, dtype=torch.float64)
    want = torch.log_softmax(hidden @ table.weight.T + softmax.bias, dim=-1)
    torch.testing.assert_close(softmax.log_prob(hidden), want)
    target = torch.arange(6) * 5
    torch.testing.assert_close(softmax.nll(hidden, target), -want.gather(1, target[:, None]).squeeze(1))


def test_softmax_rejects_bad_arguments():
    table = nn.Embedding(30, 8)
    with pytest.raises(ValueError):
        TiedAdaptiveLogSoftmax(table.weight, [10, 5])
    with pytest.raises(ValueError):
        TiedAdaptiveLogSoftmax(table.weight, [10, 30])
    with pytest.raises(ValueError):  # tied projection asked for, none given
        TiedAdaptiveLogSoftmax(table.weight, [10], d_model=6, tie_projs=[False, True])
    with pytest.raises(TypeError):
        TiedAdaptiveLogSoftmax(table, [10])


# ---------------------------------------------------------------- no fairseq
@pytest.mark.slow
def test_modules_are_pure_torch():
    """Each file runs on its own without importing fairseq (one fresh process for all)."""
    import fairseq_define.modules as modules

    folder = os.path.dirname(modules.__file__)
    paths = [os.path.join(folder, f"{name}.py") for name in
             ("transformer_xl", "tied_adaptive_softmax", "tied_map_output", "stream_state")]
    code = ("import importlib.util, sys\n"
            f"for path in {paths!r}:\n"
            "    spec = importlib.util.spec_from_file_location('m', path)\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "assert not any(m.split('.')[0] == 'fairseq' for m in sys.modules), 'fairseq imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
