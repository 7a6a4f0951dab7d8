"""AR/TAR criteria: loss = NLL + sample_size * (alpha * AR + beta * TAR) by hand; logged nll is the plain NLL."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf

from fairseq.criterions import build_criterion
from fairseq.data import Dictionary
from fairseq.logging import metrics
from fairseq.modules import AdaptiveSoftmax
from fairseq.optim import build_optimizer
from fairseq_define.criterions.ar_tar_cross_entropy import (
    ARTARAdaptiveLoss,
    ARTARCrossEntropyCriterion,
    ar_tar_penalties,
)
from fairseq_define.modules.awd_lstm import LSTMStack

V, C = 11, 6
PAD = Dictionary().pad()


class TinyLM(nn.Module):
    """Embedding -> LSTMStack -> full softmax, or (adaptive=True) the hidden states for an adaptive softmax."""

    def __init__(self, adaptive=False):
        super().__init__()
        self.embed = nn.Embedding(V, C, padding_idx=PAD)
        self.stack = LSTMStack([C, 8, C], dropouti=0.1, dropouth=0.3, dropout=0.4, wdrop=0.2)
        self.out = nn.Linear(C, V)
        self.decoder = nn.Module()
        self.decoder.adaptive_softmax = AdaptiveSoftmax(V, C, [5], dropout=0.0) if adaptive else None
        self.adaptive = adaptive

    def forward(self, src_tokens, src_lengths=None):
        o = self.stack(self.embed(src_tokens))
        extra = {"ar_tar": (o.dropped_outputs[-1], o.raw_outputs[-1])}
        return (o.output if self.adaptive else self.out(o.output)), extra

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return F.log_softmax(net_output[0], dim=-1)

    def get_targets(self, sample, net_output):
        return sample["target"]


def make_sample(pad=True, adaptive=False):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(4, V, (3, 7), generator=g)
    target = torch.randint(4, V, (3, 7), generator=g)
    if adaptive:
        # fairseq's AdaptiveLoss passes ignore_index=pad to the tail bands too, so the word whose index inside its
        # band equals pad (id cutoff + 1 = 6 here) only gets its cluster term: keep it out of the hand-made check
        target[target == 5 + PAD] = 7
    if pad:
        tokens[2, 5:] = PAD
        target[2, 5:] = PAD
        target[1, 6] = PAD
    return {
        "id": torch.arange(3),
        "net_input": {"src_tokens": tokens, "src_lengths": tokens.ne(PAD).sum(1)},
        "target": target,
        "ntokens": int(target.ne(PAD).sum()),
        "nsentences": 3,
    }


def make_criterion(name, alpha=2.0, beta=1.0):
    cfg = {"_name": name, "sentence_avg": False, "ar_alpha": alpha, "tar_beta": beta}
    if name == "ar_tar_adaptive_loss":
        cfg["ddp_backend"] = "legacy_ddp"
    return build_criterion(OmegaConf.create(cfg), SimpleNamespace(target_dictionary=Dictionary()))


def by_hand(model, sample, seed):
    """(NLL sum, AR, TAR) of the forward pass drawn with `seed`, computed position by position."""
    torch.manual_seed(seed)
    x, extra = model(**sample["net_input"])
    dropped, raw = extra["ar_tar"]
    target = sample["target"]
    if model.adaptive:
        lprobs = model.decoder.adaptive_softmax.get_log_prob(x, None)
    else:
        lprobs = F.log_softmax(x, dim=-1)
    nll = F.nll_loss(lprobs.reshape(-1, V), target.reshape(-1), ignore_index=PAD, reduction="sum")
    real = [(b, t) for b in range(target.size(0)) for t in range(target.size(1)) if target[b, t] != PAD]
    ar = sum(dropped[b, t].pow(2).sum() for b, t in real) / (len(real) * C)
    pairs = [(b, t) for b, t in real if t > 0 and target[b, t - 1] != PAD]
    tar = sum((raw[b, t] - raw[b, t - 1]).pow(2).sum() for b, t in pairs) / (len(pairs) * C)
    return nll, ar, tar


def logged(criterion, logging_output):
    with metrics.aggregate(new_root=True) as agg:
        criterion.reduce_metrics([logging_output])
        return agg.get_smoothed_values()


@pytest.mark.parametrize("name, adaptive", [("ar_tar_cross_entropy", False), ("ar_tar_adaptive_loss", True)])
def test_training_loss_is_nll_plus_ar_plus_tar(name, adaptive):
    torch.manual_seed(0)
    model = TinyLM(adaptive=adaptive).train()
    criterion = make_criterion(name, alpha=2.0, beta=1.0)
    assert isinstance(criterion, ARTARAdaptiveLoss if adaptive else ARTARCrossEntropyCriterion)
    assert (criterion.ar_alpha, criterion.tar_beta) == (2.0, 1.0)
    sample = make_sample(adaptive=adaptive)
    torch.manual_seed(42)
    loss, sample_size, log = criterion(model, sample)
    nll, ar, tar = by_hand(model, sample, seed=42)
    ntokens = sample["ntokens"]
    assert sample_size == ntokens == 18
    assert ar > 0 and tar > 0
    torch.testing.assert_close(loss.sum(), nll + ntokens * (2.0 * ar + 1.0 * tar))
    torch.testing.assert_close(log["nll_loss"].sum(), nll.detach())
    torch.testing.assert_close(log["ar"], (ntokens * 2.0 * ar).detach())
    torch.testing.assert_close(log["tar"], (ntokens * tar).detach())
    values = logged(criterion, log)
    assert values["nll_loss"] == pytest.approx(nll.item() / ntokens / math.log(2), abs=1e-3)
    assert values["ppl"] == pytest.approx(2 ** values["nll_loss"], rel=1e-3)
    assert values["loss"] == pytest.approx(loss.item() / ntokens / math.log(2), abs=1e-3)
    assert values["loss"] > values["nll_loss"]
    assert values["ar"] == pytest.approx(2.0 * ar.item() / math.log(2), abs=1e-4)
    assert values["loss"] == pytest.approx(values["nll_loss"] + values["ar"] + values["tar"], abs=2e-3)
    loss.sum().backward()
    assert model.stack.layers[-1].lstm.weight_hh_l0.grad.abs().sum() > 0


def test_without_padding_penalties_are_salesforce_means():
    torch.manual_seed(0)
    dropped, raw = torch.randn(4, 9, 5), torch.randn(4, 9, 5)
    ar, tar = ar_tar_penalties(dropped, raw)
    # salesforce (time-major [T, B, C]): h.pow(2).mean() and (h[1:] - h[:-1]).pow(2).mean()
    torch.testing.assert_close(ar, dropped.transpose(0, 1).pow(2).mean())
    raw_tm = raw.transpose(0, 1)
    torch.testing.assert_close(tar, (raw_tm[1:] - raw_tm[:-1]).pow(2).mean())
    assert ar_tar_penalties(dropped[:, :1], raw[:, :1])[1] == 0  # one step: no pairs


def test_alpha_beta_weights_and_zero_is_plain_cross_entropy():
    torch.manual_seed(0)
    model = TinyLM().train()
    sample = make_sample()
    plain = build_criterion(OmegaConf.create({"_name": "cross_entropy", "sentence_avg": False}),
                            SimpleNamespace(target_dictionary=Dictionary()))
    torch.manual_seed(5)
    ref_loss, _, _ = plain(model, sample)
    torch.manual_seed(5)
    loss0, _, log0 = make_criterion("ar_tar_cross_entropy", alpha=0.0, beta=0.0)(model, sample)
    torch.testing.assert_close(loss0, ref_loss)
    assert "ar" not in log0
    torch.manual_seed(5)
    loss_a, _, log_a = make_criterion("ar_tar_cross_entropy", alpha=3.0, beta=0.0)(model, sample)
    torch.manual_seed(5)
    loss_b, _, log_b = make_criterion("ar_tar_cross_entropy", alpha=0.0, beta=0.5)(model, sample)
    _, ar, tar = by_hand(model, sample, seed=5)
    n = sample["ntokens"]
    torch.testing.assert_close(loss_a, ref_loss + n * 3.0 * ar)
    torch.testing.assert_close(loss_b, ref_loss + n * 0.5 * tar)
    assert log_a["tar"] == 0 and log_b["ar"] == 0


def test_eval_loss_is_plain_nll():
    torch.manual_seed(0)
    model = TinyLM().eval()
    sample = make_sample()
    loss, sample_size, log = make_criterion("ar_tar_cross_entropy")(model, sample)
    nll, _, _ = by_hand(model, sample, seed=0)
    torch.testing.assert_close(loss, nll)
    torch.testing.assert_close(log["loss"], log["nll_loss"])
    assert "ar" not in log
    values = logged(make_criterion("ar_tar_cross_entropy"), log)
    assert values["loss"] == values["nll_loss"]


def test_missing_or_misshaped_extra_is_an_error():
    class NoExtra(TinyLM):
        def forward(self, src_tokens, src_lengths=None):
            return super().forward(src_tokens)[0], {"attn": [None]}

    class TimeMajor(TinyLM):
        def forward(self, src_tokens, src_lengths=None):
            x, extra = super().forward(src_tokens)
            return x, {"ar_tar": tuple(h.transpose(0, 1) for h in extra["ar_tar"])}

    criterion = make_criterion("ar_tar_cross_entropy")
    with pytest.raises(KeyError):
        criterion(NoExtra().train(), make_sample())
    with pytest.raises(ValueError):
        criterion(TimeMajor().train(), make_sample())
    criterion(NoExtra().eval(), make_sample())  # eval never reads extra["ar_tar"]


def test_eval_scores_the_model_as_it_is_without_touching_the_weights():
    """The criterion has no side effect on the weights: with NT-ASGD averaging, an eval-mode loss scores the raw
    weights (the bptt_lm task swaps the average in for validation, see tests/optim), the average only inside
    `averaged_parameters()`."""
    torch.manual_seed(0)
    model = TinyLM().train()
    opt = build_optimizer(
        OmegaConf.create({"_name": "nt_asgd", "lr": [0.5], "weight_decay": 0.0, "nt_asgd_nonmono": 5,
                          "nt_asgd_t0": 0}),
        list(model.parameters()),
    )
    criterion = make_criterion("ar_tar_cross_entropy")
    sample = make_sample(pad=False)
    for _ in range(3):
        opt.zero_grad()
        criterion(model, sample)[0].backward()
        opt.step()
    raw = [p.detach().clone() for p in model.parameters()]
    model.eval()
    with opt.averaged_parameters():
        averaged, _, _ = criterion(model, sample)
    assert not opt.optimizer.is_swapped_in
    loss, _, _ = criterion(model, sample)
    assert not opt.optimizer.is_swapped_in
    assert all(torch.equal(p.detach(), r) for p, r in zip(model.parameters(), raw))
    assert not torch.allclose(loss, averaged)  # the average differs from the raw iterate after 3 steps
