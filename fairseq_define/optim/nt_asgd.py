"""NT-ASGD (Merity, Keskar & Socher, ICLR 2018): SGD that starts averaging its iterates when validation stalls.

Reference: salesforce/awd-lstm-lm `main.py`. Plain SGD (with L2 weight decay, as `torch.optim.SGD`) runs until the
non-monotone trigger fires: a validation loss is worse than the best of the losses observed *more than* `nonmono`
checks earlier (`len(history) > nonmono and loss > min(history[:-nonmono])`, strict `>`). From then on the
parameters keep following SGD, and the optimizer keeps `ax`, the mean of the iterates (the parameters after each
step) since the trigger; the averaged weights are the ones to evaluate and ship. (`torch.optim.ASGD` with t0=0, which
salesforce uses, restarts its average at the second step after the switch; here the average includes the first.)

Why not `torch.optim.swa_utils.AveragedModel`: it computes the same running mean (`ax += (p - ax) / n`, here
`ax.lerp_(p, 1 / n)`), but it keeps the average in a deep copy of the *model*, outside the optimizer. A fairseq
optimizer is built from the parameters alone (no model), its state is what `last_optimizer_state` checkpoints and
restores, and validation must see the average in the model's own parameters (fairseq validates and saves the model
it trains). Keeping `ax` per parameter in the optimizer state gives all three: resume continues the exact average,
and swapping in is a copy per parameter, with no second model in memory.

Plugged into fairseq:
- `--optimizer nt_asgd` (`FairseqNTASGD`): flags `--lr`, `--weight-decay`, `--nt-asgd-nonmono` (5),
  `--nt-asgd-t0` (start averaging after this many updates whatever the trigger; default: trigger only).
- `--lr-scheduler nt_asgd_trigger` (`NTASGDTrigger`): a constant learning rate whose `step(epoch, val_loss)`, which
  fairseq's train loop calls at the end of every epoch with the first validation subset's loss
  (`trainer.lr_step(epoch, valid_losses[0])`), forwards that loss to the optimizer. That is the only place where
  fairseq hands a validation loss to the optimizer side, and it matches salesforce's one check per epoch.
- Evaluating and saving the averaged weights: `FairseqNTASGD.swap_in_average_for_evaluation(model)` copies the
  averages into the model's parameters (stashing the raw ones in the optimizer state); `FairseqNTASGD.zero_grad()`,
  which the trainer calls at the start of every train step, copies the raw ones back. The `bptt_lm` task calls the
  swap-in from `begin_valid_epoch` with the optimizer of its latest train step (no process-global state: each
  trainer's task holds its own). In fairseq the checkpoint is saved right after validation, so from the trigger on:
    * validation losses, `checkpoint_best` selection and the `model` weights in every checkpoint are the averaged
      ones: `fairseq-eval-lm` on any checkpoint scores the averaged model, like salesforce's saved model;
    * the raw SGD iterate travels in `last_optimizer_state` (per-parameter `raw`, with `ax`), so resuming from
      `checkpoint_last.pt` continues the exact raw trajectory (the first train step swaps the raw weights back).
  Without validation before a save (`--disable-validation`), or with a task that never calls the swap-in (any
  task but `bptt_lm`), checkpoints hold the raw weights and the average only lives in `last_optimizer_state` (`ax`).
  Not supported: `--fp16`/`--bf16`/`--amp` wrappers (their fp32 copies are not the model's parameters).
- With another `--lr-scheduler` no validation loss reaches the optimizer: only `--nt-asgd-t0` starts averaging.
- Resuming: fairseq saves a checkpoint before it calls `lr_step`, so the validation loss of the epoch a checkpoint
  was saved at is not in the restored trigger history (fairseq's own `reduce_lr_on_plateau` has the same gap); the
  trigger may then fire one check later than in an uninterrupted run. `--reset-optimizer` drops the average and the
  raw weights (training goes on from the averaged `model` weights with a fresh, non-averaging optimizer).
"""

import math
from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence

import torch
import torch.nn as nn
from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler


def nonmono_trigger(history: Sequence[float], loss: float, nonmono: int) -> bool:
    """True when `loss` is worse than the best of the losses observed more than `nonmono` checks ago.

    history: the earlier validation losses, oldest first (not including `loss`)."""
    earlier = history[: max(len(history) - nonmono, 0)]
    return len(earlier) > 0 and loss > min(earlier)


class NTASGD(torch.optim.Optimizer):
    """SGD (lr, L2 `weight_decay`) that averages its iterates once averaging has started (pure torch).

    Averaging starts with `start_averaging()`, when `observe_validation_loss` sees the non-monotone trigger fire, or
    at step `t0` if given. Per parameter, `state[p]["ax"]` is then the mean of p after each step since the start.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, nonmono: int = 5, t0: Optional[int] = None):
        if lr < 0 or weight_decay < 0 or nonmono < 0:
            raise ValueError(f"invalid NT-ASGD settings lr={lr}, weight_decay={weight_decay}, nonmono={nonmono}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.nonmono = nonmono
        self.t0 = t0
        self.num_steps = 0  # steps taken
        self.averaging_since: Optional[int] = None  # num_steps when averaging started
        self.num_averaged = 0  # iterates in the average
        self.val_losses: List[float] = []  # every observed validation loss, oldest first

    def _params(self) -> Iterator[torch.Tensor]:
        for group in self.param_groups:
            yield from group["params"]

    @property
    def is_averaging(self) -> bool:
        return self.averaging_since is not None

    @property
    def is_swapped_in(self) -> bool:
        """True while the averaged weights sit in the parameters (the raw ones stashed in `state[p]["raw"]`)."""
        return any("raw" in self.state[p] for p in self._params())

    @torch.no_grad()
    def start_averaging(self) -> None:
        """Start averaging from the next step on (no-op if already averaging)."""
        if self.is_averaging:
            return
        self.averaging_since, self.num_averaged = self.num_steps, 0
        for p in self._params():
            self.state[p]["ax"] = p.detach().clone()  # placeholder until the first averaged step replaces it

    def observe_validation_loss(self, loss: float) -> bool:
        """Record one validation loss (lower is better); start averaging and return True if the trigger fires."""
        fired = not self.is_averaging and nonmono_trigger(self.val_losses, loss, self.nonmono)
        if fired:
            self.start_averaging()
        self.val_losses.append(float(loss))
        return fired

    @torch.no_grad()
    def step(self, closure=None):
        if self.is_swapped_in:
            raise RuntimeError("NT-ASGD step with the averaged weights swapped in; call swap_out_average() first")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.t0 is not None and self.num_steps >= self.t0:
            self.start_averaging()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("NT-ASGD does not support sparse gradients")
                d_p = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
                p.add_(d_p, alpha=-group["lr"])
        self.num_steps += 1
        if self.is_averaging:
            self.num_averaged += 1
            for p in self._params():  # a parameter without a gradient still contributes its (unchanged) value
                self.state[p]["ax"].lerp_(p, 1.0 / self.num_averaged)  # running mean of the iterates
        return loss

    @torch.no_grad()
    def swap_in_average(self) -> bool:
        """Copy the averaged weights into the parameters, stashing the raw ones. Returns whether the averaged weights
        are now in place (False before averaging has started; idempotent)."""
        if not self.is_averaging:
            return False
        for p in self._params():
            state = self.state[p]
            if "raw" not in state:
                state["raw"] = p.detach().clone()
                p.copy_(state["ax"])
        return True

    @torch.no_grad()
    def swap_out_average(self) -> None:
        """Put the raw weights back (no-op if they are in place)."""
        for p in self._params():
            raw = self.state[p].pop("raw", None)
            if raw is not None:
                p.copy_(raw)

    @contextmanager
    def averaged_parameters(self):
        """`with opt.averaged_parameters(): evaluate(model)`: the averaged weights inside, the raw ones after.
        Before averaging has started the parameters are left alone."""
        swapped = not self.is_swapped_in and self.swap_in_average()
        try:
            yield
        finally:
            if swapped:
                self.swap_out_average()

    def state_dict(self):
        state = super().state_dict()
        state["nt_asgd"] = {
            "num_steps": self.num_steps,
            "averaging_since": self.averaging_since,
            "num_averaged": self.num_averaged,
            "val_losses": list(self.val_losses),
        }
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop("nt_asgd", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.num_steps = extra["num_steps"]
            self.averaging_since = extra["averaging_since"]
            self.num_averaged = extra["num_averaged"]
            self.val_losses = list(extra["val_losses"])


@dataclass
class NTASGDConfig(FairseqDataclass):
    weight_decay: float = field(default=0.0, metadata={"help": "L2 weight decay (added to the gradient, as torch SGD)"})
    nt_asgd_nonmono: int = field(
        default=5,
        metadata={"help": "start averaging when a validation loss is worse than the best one of more than this many "
                  "checks ago (forwarded by --lr-scheduler nt_asgd_trigger)"},
    )
    nt_asgd_t0: Optional[int] = field(
        default=None, metadata={"help": "start averaging after this many updates, whatever the trigger"}
    )
    lr: List[float] = II("optimization.lr")


@register_optimizer("nt_asgd", dataclass=NTASGDConfig)
class FairseqNTASGD(FairseqOptimizer):
    """fairseq wrapper of `NTASGD`; `zero_grad()` first swaps the raw weights back (see the module docstring)."""

    def __init__(self, cfg: NTASGDConfig, params):
        super().__init__(cfg)
        self._optimizer = NTASGD(params, nonmono=cfg.nt_asgd_nonmono, t0=cfg.nt_asgd_t0, **self.optimizer_config)

    @property
    def optimizer_config(self):
        lr = self.cfg.lr[0] if isinstance(self.cfg.lr, Collection) else self.cfg.lr
        return {"lr": lr, "weight_decay": self.cfg.weight_decay}

    def zero_grad(self):
        self._optimizer.swap_out_average()
        super().zero_grad()

    def observe_validation_loss(self, loss: float) -> bool:
        return self._optimizer.observe_validation_loss(loss)

    @property
    def is_averaging(self) -> bool:
        return self._optimizer.is_averaging

    def averaged_parameters(self):
        return self._optimizer.averaged_parameters()

    def swap_in_average_for_evaluation(self, model: nn.Module) -> bool:
        """If this optimizer trains `model` and is averaging, put the averaged weights into `model` (idempotent);
        they stay until the next `zero_grad()` (the start of the next train step). Returns whether they are in
        place. `bptt_lm` calls it from `begin_valid_epoch`."""
        if not self.is_averaging:
            return False
        model_params = {id(p) for p in model.parameters()}
        if not any(id(p) in model_params for p in self._optimizer._params()):
            return False
        return self._optimizer.swap_in_average()


@dataclass
class NTASGDTriggerConfig(FairseqDataclass):
    lr: List[float] = II("optimization.lr")
    maximize_best_checkpoint_metric: bool = II("checkpoint.maximize_best_checkpoint_metric")


@register_lr_scheduler("nt_asgd_trigger", dataclass=NTASGDTriggerConfig)
class NTASGDTrigger(FairseqLRScheduler):
    """Constant learning rate `--lr`; forwards every end-of-epoch validation loss to `--optimizer nt_asgd`."""

    def __init__(self, cfg: NTASGDTriggerConfig, optimizer):
        super().__init__(cfg, optimizer)
        if not isinstance(optimizer, FairseqNTASGD):
            raise ValueError(
                "--lr-scheduler nt_asgd_trigger needs --optimizer nt_asgd (and no --fp16/--bf16/--amp/--use-bmuf), "
                f"got {type(optimizer).__name__}"
            )
        self.lr = cfg.lr[0] if isinstance(cfg.lr, Collection) else cfg.lr
        self.sign = -1.0 if cfg.maximize_best_checkpoint_metric else 1.0

    def step(self, epoch, val_loss=None):
        super().step(epoch, val_loss)
        if val_loss is not None and math.isfinite(val_loss):
            self.optimizer.observe_validation_loss(self.sign * val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        self.optimizer.set_lr(self.lr)
        return self.lr
