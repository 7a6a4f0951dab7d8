"""NT-ASGD: the non-monotone trigger, SGD before it, the average after it, swapping, fairseq plumbing and resume."""

import copy
import random
from argparse import Namespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf

from fairseq.optim import build_optimizer
from fairseq.optim.lr_scheduler import build_lr_scheduler
from fairseq.optim.sgd import SGD as FairseqSGD
from fairseq.data import Dictionary
from fairseq_define.optim.nt_asgd import NTASGD, FairseqNTASGD, NTASGDTrigger, nonmono_trigger
from fairseq_define.tasks.bptt_lm import BPTTLMConfig, BPTTLMTask

LOSSES = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.9]


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def make_batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 4, generator=g), torch.randn(5, 2, generator=g)) for _ in range(n)]


def train_step(model, opt, x, y):
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    opt.step()


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_params(model, expected):
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)


def mean(iterates):
    return [torch.stack(ps).mean(0) for ps in zip(*iterates)]


# ---- the trigger --------------------------------------------------------------------------------------------------


def test_nonmono_trigger_on_hand_made_sequence():
    fired = [nonmono_trigger(LOSSES[:i], LOSSES[i], 2) for i in range(len(LOSSES))]
    # 3.1 is the first loss worse than the best (3.0) of the losses more than 2 checks back
    assert fired == [False, False, False, False, False, True, False]
    fired0 = [nonmono_trigger(LOSSES[:i], LOSSES[i], 0) for i in range(len(LOSSES))]
    assert fired0 == [False, False, False, True, True, True, False]
    assert not nonmono_trigger([5.0, 4.0, 3.0], 5.0, 2)  # equal to the best is not worse (strict, as salesforce)
    assert nonmono_trigger([5.0, 4.0, 3.0], 5.01, 2)


def test_nonmono_trigger_matches_salesforce_condition():
    rng = random.Random(0)
    for _ in range(200):
        history = [rng.uniform(1, 2) for _ in range(rng.randint(0, 12))]
        loss = rng.uniform(1, 2)
        for n in range(1, 6):
            salesforce = len(history) > n and loss > min(history[:-n])
            assert nonmono_trigger(history, loss, n) == salesforce


def test_optimizer_fires_once_at_the_trigger():
    model = make_model()
    opt = NTASGD(model.parameters(), lr=0.1, nonmono=2)
    fired = []
    for loss, (x, y) in zip(LOSSES, make_batches(len(LOSSES))):
        train_step(model, opt, x, y)
        fired.append(opt.observe_validation_loss(loss))
        assert opt.is_averaging == (len(fired) >= 6)
    assert fired == [False, False, False, False, False, True, False]
    assert opt.averaging_since == 6 and opt.val_losses == LOSSES


# ---- the updates --------------------------------------------------------------------------------------------------


def test_sgd_before_and_average_of_iterates_after_the_trigger():
    model, ref = make_model(), make_model()
    opt = NTASGD(model.parameters(), lr=0.3, weight_decay=0.01, nonmono=1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.3, weight_decay=0.01)
    batches = make_batches(10)
    for x, y in batches[:4]:
        train_step(model, opt, x, y)
        train_step(ref, ref_opt, x, y)
        assert_params(model, snapshot(ref))  # plain SGD before the trigger
    assert not opt.is_averaging and all("ax" not in opt.state[p] for p in model.parameters())
    assert opt.observe_validation_loss(1.0) is False
    assert opt.observe_validation_loss(0.5) is False
    assert opt.observe_validation_loss(1.5) is True  # 1.5 > min([1.0])
    iterates = []
    for x, y in batches[4:]:
        train_step(model, opt, x, y)
        train_step(ref, ref_opt, x, y)
        iterates.append(snapshot(model))
        assert_params(model, snapshot(ref))  # the raw weights still follow SGD
        for p, expected in zip(model.parameters(), mean(iterates)):
            torch.testing.assert_close(opt.state[p]["ax"], expected, rtol=1e-6, atol=1e-7)
    assert opt.num_averaged == 6


def test_t0_starts_averaging_at_that_step():
    model = make_model()
    opt = NTASGD(model.parameters(), lr=0.2, t0=3)
    iterates = []
    for i, (x, y) in enumerate(make_batches(6)):
        train_step(model, opt, x, y)
        assert opt.is_averaging == (i >= 3)
        if i >= 3:
            iterates.append(snapshot(model))
    assert opt.averaging_since == 3
    for p, expected in zip(model.parameters(), mean(iterates)):
        torch.testing.assert_close(opt.state[p]["ax"], expected)


def test_swap_in_and_out_restores_raw_weights():
    model = make_model()
    opt = NTASGD(model.parameters(), lr=0.5, t0=0)
    batches = make_batches(4)
    iterates = []
    for x, y in batches[:3]:
        train_step(model, opt, x, y)
        iterates.append(snapshot(model))
    raw = snapshot(model)
    average = mean(iterates)
    assert not all(torch.equal(a, r) for a, r in zip(average, raw))
    with opt.averaged_parameters():
        assert_params(model, average)
        assert opt.is_swapped_in
        with pytest.raises(RuntimeError):
            opt.step()  # gradients of the averaged weights must never update the raw ones
    assert not opt.is_swapped_in
    for p, r in zip(model.parameters(), raw):
        assert torch.equal(p.detach(), r)
    assert opt.swap_in_average() and opt.swap_in_average()  # idempotent: the stash keeps the raw weights
    opt.swap_out_average()
    for p, r in zip(model.parameters(), raw):
        assert torch.equal(p.detach(), r)


def test_averaged_parameters_before_the_trigger_leaves_weights_alone():
    model = make_model()
    opt = NTASGD(model.parameters(), lr=0.5)
    train_step(model, opt, *make_batches(1)[0])
    before = snapshot(model)
    with opt.averaged_parameters():
        assert not opt.is_swapped_in
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)


# ---- fairseq: registration, the trigger scheduler, the train/validate/save/resume cycle ---------------------------


def build_fairseq(model, lr=0.3, nonmono=1, maximize=False):
    opt = build_optimizer(
        OmegaConf.create({"_name": "nt_asgd", "lr": [lr], "weight_decay": 0.0, "nt_asgd_nonmono": nonmono,
                          "nt_asgd_t0": None}),
        list(model.parameters()),
    )
    sched = build_lr_scheduler(
        OmegaConf.create({"_name": "nt_asgd_trigger", "lr": [lr], "maximize_best_checkpoint_metric": maximize}), opt
    )
    return opt, sched


def test_fairseq_registration_and_constant_lr():
    model = make_model()
    opt, sched = build_fairseq(model, lr=0.25, nonmono=3)
    assert isinstance(opt, FairseqNTASGD) and isinstance(sched, NTASGDTrigger)
    assert opt.optimizer.nonmono == 3 and opt.get_lr() == 0.25
    opt.set_lr(1.0)
    assert sched.step_update(10) == 0.25 and opt.get_lr() == 0.25
    with pytest.raises(ValueError):
        build_lr_scheduler(
            OmegaConf.create({"_name": "nt_asgd_trigger", "lr": [0.1], "maximize_best_checkpoint_metric": False}),
            FairseqSGD(Namespace(lr=[0.1], momentum=0.0, weight_decay=0.0), list(model.parameters())),
        )


def test_scheduler_forwards_validation_losses():
    opt, sched = build_fairseq(make_model(), nonmono=2)
    for epoch, loss in enumerate(LOSSES[:5], 1):
        sched.step(epoch, loss)
        sched.step(epoch, None)  # epochs without validation are ignored
    assert not opt.is_averaging and opt.optimizer.val_losses == LOSSES[:5]
    sched.step(6, LOSSES[5])
    assert opt.is_averaging
    # a metric to maximise (e.g. accuracy): a drop below the best of 2+ checks ago fires
    opt_max, sched_max = build_fairseq(make_model(), nonmono=1, maximize=True)
    for epoch, acc in enumerate([0.1, 0.2, 0.3, 0.35], 1):
        sched_max.step(epoch, acc)
    assert not opt_max.is_averaging
    sched_max.step(5, 0.25)
    assert opt_max.is_averaging


def run_epoch(model, opt, batches, iterates=None):
    model.train()
    for x, y in batches:
        opt.zero_grad()  # what fairseq's trainer does first in every train step
        F.mse_loss(model(x), y).backward()
        opt.step()
        if iterates is not None and opt.is_averaging:
            iterates.append(snapshot(model))


def test_fairseq_cycle_validates_and_saves_the_average_and_resumes_the_raw_trajectory():
    model = make_model()
    opt, sched = build_fairseq(model, nonmono=1)
    epochs = [make_batches(3, seed=s) for s in range(6)]
    val_losses = [1.0, 2.0, 1.5, 9.9, 9.9, 9.9]  # fires at the end of epoch 3 (1.5 > min([1.0]))
    iterates, checkpoints = [], []
    for epoch, (batches, val) in enumerate(zip(epochs, val_losses), 1):
        run_epoch(model, opt, batches, iterates)
        raw = snapshot(model)
        model.eval()  # validation: bptt_lm's begin_valid_epoch calls the swap-in
        swapped = opt.swap_in_average_for_evaluation(model)
        assert swapped == (epoch > 3)
        if swapped:
            assert_params(model, mean(iterates))  # validation sees the mean of the iterates since the trigger
        else:
            assert_params(model, raw)
        # checkpoint save right after validation (trainer.state_dict): the model as it is, the optimizer state
        checkpoints.append(copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "raw": raw}))
        sched.step(epoch, val)  # trainer.lr_step(epoch, valid_losses[0])
    assert opt.optimizer.averaging_since == 3 * 3 and opt.optimizer.num_averaged == len(iterates) == 9

    # the last checkpoint's `model` (what fairseq-eval-lm loads) is the average, not the raw iterate
    saved = list(checkpoints[-1]["model"].values())
    for s, a, r in zip(saved, mean(iterates), checkpoints[-1]["raw"]):
        torch.testing.assert_close(s, a, rtol=1e-6, atol=1e-7)
        assert not torch.equal(s, r)

    # resume from the epoch-5 checkpoint and train epoch 6: identical to the uninterrupted run
    resumed = make_model(seed=123)
    resumed_opt, _ = build_fairseq(resumed, nonmono=1)
    resumed.load_state_dict(checkpoints[4]["model"])
    resumed_opt.load_state_dict(checkpoints[4]["opt"])
    assert resumed_opt.optimizer.is_swapped_in and resumed_opt.is_averaging
    # fairseq saves before lr_step: the saved epoch's own validation loss is not in the history (documented)
    assert resumed_opt.optimizer.val_losses == val_losses[:4] and resumed_opt.optimizer.num_steps == 15
    run_epoch(resumed, resumed_opt, epochs[5])  # its first zero_grad puts the raw weights back
    assert_params(resumed, checkpoints[5]["raw"])
    for p, q in zip(resumed_opt.optimizer._params(), opt.optimizer._params()):
        torch.testing.assert_close(resumed_opt.optimizer.state[p]["ax"], opt.optimizer.state[q]["ax"])


def test_swap_in_for_evaluation_ignores_other_models():
    model = make_model()
    opt, _ = build_fairseq(model)
    opt.optimizer.start_averaging()
    train_step(model, opt, *make_batches(1)[0])
    assert not opt.swap_in_average_for_evaluation(make_model(seed=5))
    assert not opt.optimizer.is_swapped_in
    assert opt.swap_in_average_for_evaluation(model)
    opt.zero_grad()
    assert not opt.optimizer.is_swapped_in


class FairseqLike(nn.Module):
    """make_model's network with what fairseq's task.train_step calls on a model."""

    def __init__(self, seed):
        super().__init__()
        self.net = make_model(seed)

    def forward(self, x):
        return self.net(x)

    def set_num_updates(self, num_updates):
        pass


def test_the_task_validates_the_average_of_its_own_trainers_optimizer():
    """Two trainers in one process: bptt_lm's begin_valid_epoch swaps in the average of the optimizer its own
    train steps used, never the other's (no process-global optimizer)."""
    runs = []
    for seed in (0, 1):
        model = FairseqLike(seed)
        opt, _ = build_fairseq(model, nonmono=1)
        opt.optimizer.start_averaging()
        task = BPTTLMTask(BPTTLMConfig(data="unused", tokens_per_sample=5), Dictionary())
        runs.append((model, opt, task))
    for model, opt, task in runs:
        x, y = make_batches(1, seed=7)[0]
        opt.zero_grad()
        task.train_step({"x": x, "y": y}, model, lambda m, s: (F.mse_loss(m(s["x"]), s["y"]), 1, {}), opt, 0)
        opt.step()
    for (model, opt, task), (_, other, _) in zip(runs, runs[::-1]):
        raw = snapshot(model)
        model.eval()
        task.begin_valid_epoch(1, model)
        assert opt.optimizer.is_swapped_in and not other.optimizer.is_swapped_in
        opt.zero_grad()
        assert_params(model, raw)
    plain_task = BPTTLMTask(BPTTLMConfig(data="unused", tokens_per_sample=5), Dictionary())
    plain_task.begin_valid_epoch(1, runs[0][0])  # before any train step: nothing to swap in
    assert not runs[0][1].optimizer.is_swapped_in
