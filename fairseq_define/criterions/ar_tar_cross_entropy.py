"""Cross-entropy + AR/TAR activation regularisation (Merity, Keskar & Socher, ICLR 2018; salesforce/awd-lstm-lm).

In training:  loss = NLL + sample_size * (alpha * AR + beta * TAR), with
    AR  = mean(dropped_last ** 2)                          (activation regularisation, on the dropped output)
    TAR = mean((raw_last[:, t] - raw_last[:, t - 1]) ** 2)  (temporal AR, on the raw output, within the batch)
NLL is fairseq's summed token loss, which the trainer divides by `sample_size`, so the gradient is that of
salesforce's `mean CE + alpha * AR + beta * TAR`. The means run over the non-padding positions (TAR: over the
pairs of consecutive non-padding positions), which equals salesforce's plain `.mean()` without padding.
In eval mode the loss is the plain NLL, as in salesforce's `evaluate`.

Two criteria: `ar_tar_cross_entropy` (full softmax, subclass of `cross_entropy`) and `ar_tar_adaptive_loss`
(adaptive softmax, subclass of `adaptive_loss`; needs `--ddp-backend legacy_ddp`). Flags: `--ar-alpha` (2),
`--tar-beta` (1).

The model's contract: `model(**net_input)` returns `(output, extra)` with
    extra["ar_tar"] = (dropped_last [B, T, C], raw_last [B, T, C])
batch-first and aligned with `sample["target"]` [B, T]: the last LSTM layer's output after its (locked) dropout and
before it (`LSTMStack` output: `(out.dropped_outputs[-1], out.raw_outputs[-1])`). It is only read in training.

Logged (base 2, as fairseq): `loss` (regularised in training), `nll_loss` and `ppl` (always the plain NLL), `ar` and
`tar` (the weighted terms alpha * AR and beta * TAR, so that loss = nll_loss + ar + tar when sample_size is the
token count). (NT-ASGD's average is put into the model for validation by the `bptt_lm` task, not here.)
"""

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.adaptive_loss import AdaptiveLoss, AdaptiveLossConfig
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig
from fairseq.logging import metrics

from fairseq_define.criterions.nll_metrics import log_loss_nll_ppl, summed


def ar_tar_penalties(
    dropped_last: torch.Tensor, raw_last: torch.Tensor, mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """dropped_last, raw_last [B, T, C]; mask [B, T] (True = real token) or None -> (AR, TAR), scalar means.

    AR = mean over real positions and channels of dropped_last^2; TAR = mean over consecutive real pairs and
    channels of (raw_last[:, t] - raw_last[:, t - 1])^2 (0 when T < 2)."""
    if mask is None:
        mask = dropped_last.new_ones(dropped_last.shape[:2], dtype=torch.bool)
    channels = dropped_last.size(-1)
    m = mask.unsqueeze(-1).to(dropped_last.dtype)
    ar = (dropped_last.pow(2) * m).sum() / (m.sum() * channels).clamp(min=1)
    pairs = (mask[:, 1:] & mask[:, :-1]).unsqueeze(-1).to(raw_last.dtype)
    tar = ((raw_last[:, 1:] - raw_last[:, :-1]).pow(2) * pairs).sum() / (pairs.sum() * channels).clamp(min=1)
    return ar, tar


class _ARTARMixin:
    """Adds alpha * AR + beta * TAR to a fairseq criterion's summed loss; the parent computes the NLL."""

    ar_alpha: float
    tar_beta: float

    def forward(self, model, sample, reduce=True):
        captured = []
        handle = model.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            nll, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        finally:
            handle.remove()
        logging_output["nll_loss"] = nll.data
        if not model.training or (self.ar_alpha == 0 and self.tar_beta == 0):
            return nll, sample_size, logging_output
        if not reduce:
            raise ValueError("AR/TAR needs reduce=True in training")
        extra = captured[-1][1]
        if not isinstance(extra, dict) or "ar_tar" not in extra:
            raise KeyError("AR/TAR criteria need the model to return extra['ar_tar'] = (dropped_last, raw_last)")
        dropped_last, raw_last = extra["ar_tar"]
        target = sample["target"]
        if dropped_last.shape[:2] != target.shape or raw_last.shape[:2] != target.shape:
            raise ValueError(
                f"extra['ar_tar'] must be batch-first [B, T, C] like the target {tuple(target.shape)}, got "
                f"{tuple(dropped_last.shape)} and {tuple(raw_last.shape)}"
            )
        ar, tar = ar_tar_penalties(dropped_last, raw_last, target.ne(self.padding_idx))
        ar_term, tar_term = self.ar_alpha * ar * sample_size, self.tar_beta * tar * sample_size
        loss = nll + ar_term + tar_term
        logging_output.update(loss=loss.data, ar=ar_term.data, tar=tar_term.data)
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        sample_size = log_loss_nll_ppl(logging_outputs)
        if any("ar" in log for log in logging_outputs):  # same units as `loss`: loss = nll_loss + ar + tar
            for key in ("ar", "tar"):
                metrics.log_scalar(key, summed(logging_outputs, key) / sample_size / math.log(2), sample_size, round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


@dataclass
class ARTARCrossEntropyConfig(CrossEntropyCriterionConfig):
    ar_alpha: float = field(default=2.0, metadata={"help": "weight of AR, mean(dropped_last ** 2)"})
    tar_beta: float = field(default=1.0, metadata={"help": "weight of TAR, mean((raw_t - raw_{t-1}) ** 2)"})


@register_criterion("ar_tar_cross_entropy", dataclass=ARTARCrossEntropyConfig)
class ARTARCrossEntropyCriterion(_ARTARMixin, CrossEntropyCriterion):
    """Full-softmax cross-entropy + alpha * AR + beta * TAR (see the module docstring for the model contract)."""

    def __init__(self, task, sentence_avg, ar_alpha=2.0, tar_beta=1.0):
        super().__init__(task, sentence_avg)
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta


@dataclass
class ARTARAdaptiveLossConfig(AdaptiveLossConfig):
    ar_alpha: float = field(default=2.0, metadata={"help": "weight of AR, mean(dropped_last ** 2)"})
    tar_beta: float = field(default=1.0, metadata={"help": "weight of TAR, mean((raw_t - raw_{t-1}) ** 2)"})


@register_criterion("ar_tar_adaptive_loss", dataclass=ARTARAdaptiveLossConfig)
class ARTARAdaptiveLoss(_ARTARMixin, AdaptiveLoss):
    """Adaptive-softmax loss + alpha * AR + beta * TAR (see the module docstring for the model contract)."""

    def __init__(self, task, sentence_avg, ar_alpha=2.0, tar_beta=1.0):
        super().__init__(task, sentence_avg)
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta

    @classmethod
    def build_criterion(cls, cfg: ARTARAdaptiveLossConfig, task):
        criterion = super().build_criterion(cfg, task)  # keeps AdaptiveLoss's DDP-backend check
        criterion.ar_alpha, criterion.tar_beta = cfg.ar_alpha, cfg.tar_beta
        return criterion
