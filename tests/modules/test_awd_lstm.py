"""AWD-LSTM blocks: weight drop, locked dropout, embedding (type) dropout, the stateful stack, parameter counts."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fairseq_define.modules.awd_lstm import (
    LockedDropout,
    LSTMStack,
    WeightDropLSTM,
    embedding_dropout,
    embedding_type_dropout,
)


def lstm_count(n_in, h):
    return 4 * h * (n_in + h) + 8 * h


def n_params(module):
    return sum(p.numel() for p in module.parameters())  # parameters() counts a tied tensor once


# ---- WeightDropLSTM -----------------------------------------------------------------------------------------------


def plain_copy(wd: WeightDropLSTM) -> nn.LSTM:
    lstm = nn.LSTM(wd.input_size, wd.hidden_size, batch_first=True)
    lstm.load_state_dict(wd.lstm.state_dict())
    return lstm


def test_weight_drop_parameters_are_plain_lstm_parameters():
    wd = WeightDropLSTM(7, 5, weight_dropout=0.5)
    names = {n for n, _ in wd.named_parameters()}
    assert names == {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0"}
    assert n_params(wd) == lstm_count(7, 5)


def test_weight_drop_is_dropconnect_on_weight_hh_and_gradient_reaches_raw_weight():
    torch.manual_seed(0)
    wd = WeightDropLSTM(3, 8, weight_dropout=0.5).train()
    x = torch.randn(2, 6, 3)
    torch.manual_seed(1)
    out, (h, c) = wd(x)
    # the same mask by hand: reseed and drop the raw weight the way the module does
    torch.manual_seed(1)
    dropped = F.dropout(wd.lstm.weight_hh_l0.detach(), p=0.5, training=True)
    ref = plain_copy(wd)
    with torch.no_grad():
        ref.weight_hh_l0.copy_(dropped)
    ref_out, (ref_h, ref_c) = ref(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(c, ref_c)

    out.pow(2).sum().backward()
    grad = wd.lstm.weight_hh_l0.grad
    assert grad is not None
    dropped_entries = dropped == 0
    assert 0.3 < dropped_entries.float().mean() < 0.7
    assert torch.all(grad[dropped_entries] == 0)  # a dropped connection gets no gradient
    assert torch.all(grad[~dropped_entries] != 0)  # the kept ones do, through the raw weight
    assert wd.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_weight_drop_train_calls_differ_eval_is_plain_lstm():
    torch.manual_seed(0)
    wd = WeightDropLSTM(4, 6, weight_dropout=0.5)
    x = torch.randn(3, 5, 4)
    wd.train()
    a, _ = wd(x)
    b, _ = wd(x)
    assert not torch.allclose(a, b)
    wd.eval()
    e1, (h1, c1) = wd(x)
    e2, _ = wd(x)
    assert torch.equal(e1, e2)
    ref, (ref_h, ref_c) = plain_copy(wd)(x)
    torch.testing.assert_close(e1, ref)
    torch.testing.assert_close(h1, ref_h)
    torch.testing.assert_close(c1, ref_c)


def test_weight_drop_zero_is_plain_lstm_in_training():
    torch.manual_seed(0)
    wd = WeightDropLSTM(4, 6, weight_dropout=0.0).train()
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(wd(x)[0], plain_copy(wd)(x)[0])


# ---- LockedDropout ------------------------------------------------------------------------------------------------


def test_locked_dropout_mask_constant_over_time():
    torch.manual_seed(0)
    p = 0.4
    drop = LockedDropout(p).train()
    x = torch.ones(4, 12, 16)
    y = drop(x)
    assert torch.equal(y, y[:, :1, :].expand_as(y))  # same mask at every time step
    values = y.unique()
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(1 / (1 - p))
    assert not torch.equal(y[0, 0], y[1, 0])  # one mask per sequence, not per batch
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(LockedDropout(0.0).train()(x), x)


def test_locked_dropout_scales_kept_entries():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 10)
    y = LockedDropout(0.25).train()(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)


def test_locked_dropout_is_the_hand_written_mask_drawn_as_before():
    """F.dropout1d over the channels of x [B, C, T] draws the [B, C] mask in the order the hand-written [B, 1, C]
    mask (the code before it) did: the same seed gives the identical output and gradient."""
    x = torch.randn(3, 7, 5, requires_grad=True)
    torch.manual_seed(3)
    y = LockedDropout(0.3).train()(x)
    torch.manual_seed(3)
    by_hand = x * (x.new_empty(3, 1, 5).bernoulli_(0.7) / 0.7)
    assert torch.equal(y, by_hand)
    (gy,) = torch.autograd.grad(y.sum(), x)
    (gh,) = torch.autograd.grad(by_hand.sum(), x)
    assert torch.equal(gy, gh)


# ---- embedding dropout --------------------------------------------------------------------------------------------


def test_embedding_type_dropout_drops_whole_types_and_scales():
    torch.manual_seed(0)
    p = 0.5
    tokens = torch.tensor([[3, 5, 3, 9, 5, 3], [9, 9, 1, 3, 5, 1]])
    unique, inverse = tokens.unique(return_inverse=True)  # [U], [B, T]
    rows = torch.randn(unique.numel(), 8) + 5.0  # [U, m], no exact zeros
    dropped_any = kept_any = False
    for _ in range(20):
        out = embedding_type_dropout(rows, p, training=True)
        row_dropped = (out == 0).all(dim=1)
        torch.testing.assert_close(out[~row_dropped], rows[~row_dropped] / (1 - p))
        assert torch.all((out == 0).any(dim=1) == row_dropped)  # a row is dropped whole or not at all
        dropped_any |= bool(row_dropped.any())
        kept_any |= bool((~row_dropped).any())
        # after the gather, a dropped type is zero at every position of the batch
        per_position = out[inverse]  # [B, T, m]
        for u, tok in enumerate(unique.tolist()):
            zero_at = (per_position[tokens == tok] == 0).all(dim=-1)
            assert torch.all(zero_at == row_dropped[u])
    assert dropped_any and kept_any
    assert torch.equal(embedding_type_dropout(rows, p, training=False), rows)


def test_embedding_dropout_on_full_table_matches_salesforce():
    torch.manual_seed(0)
    p = 0.3
    emb = nn.Embedding(40, 6)
    tokens = torch.randint(0, 40, (3, 9))
    torch.manual_seed(7)
    masked = embedding_dropout(emb.weight, p, training=True)
    # salesforce: mask = bernoulli(1 - p) of shape [V, 1] / (1 - p), broadcast over the row
    torch.manual_seed(7)
    mask = emb.weight.new_empty(40, 1).bernoulli_(1 - p) / (1 - p)
    torch.testing.assert_close(masked, emb.weight * mask)
    looked_up = F.embedding(tokens, masked)
    looked_up.sum().backward()
    assert torch.all(emb.weight.grad[mask.squeeze(1) == 0] == 0)
    assert torch.equal(embedding_dropout(emb.weight, p, training=False), emb.weight)


# ---- LSTMStack ----------------------------------------------------------------------------------------------------


def test_stack_carried_state_two_halves_equal_one_pass():
    torch.manual_seed(0)
    stack = LSTMStack([5, 11, 7, 5], dropouti=0.3, dropouth=0.3, dropout=0.3, wdrop=0.5).eval()
    x = torch.randn(2, 10, 5)
    full = stack(x)
    first = stack(x[:, :6])
    second = stack(x[:, 6:], first.state)
    torch.testing.assert_close(torch.cat([first.output, second.output], dim=1), full.output)
    for (h, c), (fh, fc) in zip(second.state, full.state):
        torch.testing.assert_close(h, fh)
        torch.testing.assert_close(c, fc)
    # and the carried state matters: starting the second half from zeros gives something else
    assert not torch.allclose(stack(x[:, 6:]).output, full.output[:, 6:])
    zeros = stack.zero_state(2, x)
    torch.testing.assert_close(stack(x, zeros).output, full.output)


def test_stack_outputs_for_ar_tar_and_state_detach():
    torch.manual_seed(0)
    sizes = [5, 9, 4]
    stack = LSTMStack(sizes, dropouti=0.2, dropouth=0.5, dropout=0.5, wdrop=0.2).train()
    x = torch.randn(3, 8, 5)
    out = stack(x)
    assert out.output.shape == (3, 8, 4)
    assert [r.shape[-1] for r in out.raw_outputs] == sizes[1:]
    assert [d.shape[-1] for d in out.dropped_outputs] == sizes[1:]
    assert out.dropped_outputs[-1] is out.output
    assert [s[0].shape for s in out.state] == [(1, 3, 9), (1, 3, 4)]
    # last layer: dropped = raw * a locked mask (constant over time)
    ratio_mask = (out.output != 0).float()
    assert torch.equal(ratio_mask, ratio_mask[:, :1].expand_as(ratio_mask))
    kept = out.output != 0
    torch.testing.assert_close(out.output[kept], out.raw_outputs[-1][kept] / 0.5)
    assert not kept.all()
    assert all(not h.requires_grad and not c.requires_grad for h, c in out.state)
    attached = stack(x, detach_state=False)
    assert all(h.requires_grad and c.requires_grad for h, c in attached.state)
    stack.eval()
    ev = stack(x)
    for raw, dropped in zip(ev.raw_outputs, ev.dropped_outputs):
        assert torch.equal(raw, dropped)


def test_stack_rejects_wrong_state_length():
    stack = LSTMStack([4, 6, 4])
    with pytest.raises(ValueError):
        stack(torch.randn(1, 3, 4), stack.zero_state(1, torch.zeros(1))[:1])


# ---- parameter counts (meta device) -------------------------------------------------------------------------------


def test_awd_lstm_ptb_counts():
    with torch.device("meta"):
        stack = LSTMStack([400, 1150, 1150, 400], dropouti=0.65, dropouth=0.3, dropout=0.4, wdrop=0.5)
        embedding = nn.Embedding(10000, 400)
        decoder = nn.Linear(400, 10000)
        decoder.weight = embedding.weight  # tied
    per_layer = [n_params(layer) for layer in stack.layers]
    assert per_layer == [7_139_200, 10_589_200, 2_483_200]
    assert per_layer == [lstm_count(400, 1150), lstm_count(1150, 1150), lstm_count(1150, 400)]
    assert n_params(stack) == 20_211_600
    model = nn.ModuleList([embedding, stack, decoder])
    assert n_params(model) == 20_211_600 + 10000 * 400 + 10000 == 24_221_600


@pytest.mark.parametrize("m, expected", [(256, 23_357_440), (384, 24_734_720), (512, 26_243_072)])
def test_wikitext103_lstm_context_counts(m, expected):
    with torch.device("meta"):
        stack = LSTMStack([m, 1024, 1024, 1024, m])
    assert n_params(stack) == expected
    assert expected == lstm_count(m, 1024) + 2 * lstm_count(1024, 1024) + lstm_count(1024, m)
