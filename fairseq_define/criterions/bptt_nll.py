"""`define_bptt_nll`: negative log-likelihood through the model's adaptive softmax `nll`, never building [B, T, V].

For models whose decoder holds a softmax with ``nll(hidden [N, d], target [N]) -> [N]`` as ``adaptive_softmax``
(`TiedAdaptiveLogSoftmax`, e.g. `define_transformer_xl`) and whose ``net_output[0]`` is that softmax's input.
Only the non-padding positions are scored (``bptt_lm`` pads the ends of short rows in the last batch).

Same numbers and logs as fairseq's ``cross_entropy`` (which scores the same model through
``get_normalized_probs`` and a [B, T, V] tensor): the summed loss in nats, ``sample_size`` = ntokens (or the
number of rows with ``--sentence-avg``); logged in base 2: ``loss`` (per sample_size unit), ``nll_loss`` (per
token, always) and ``ppl`` = 2 ** nll_loss.
"""

from dataclasses import dataclass

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from fairseq_define.criterions.nll_metrics import log_loss_nll_ppl


@dataclass
class BPTTNLLCriterionConfig(FairseqDataclass):
    sentence_avg: bool = II("optimization.sentence_avg")


def softmax_of(model):
    softmax = getattr(getattr(model, "decoder", model), "adaptive_softmax", None)
    if softmax is None or not callable(getattr(softmax, "nll", None)):
        raise TypeError(f"define_bptt_nll: {type(model).__name__} has no decoder.adaptive_softmax with an "
                        "nll(hidden, target) method; use --criterion cross_entropy or adaptive_loss")
    return softmax


@register_criterion("define_bptt_nll", dataclass=BPTTNLLCriterionConfig)
class BPTTNLLCriterion(FairseqCriterion):
    def __init__(self, task, sentence_avg: bool):
        super().__init__(task)
        self.sentence_avg = sentence_avg

    def compute_loss(self, model, net_output, sample, reduce: bool = True) -> torch.Tensor:
        """Summed NLL in nats (reduce) or per position [B * T] with 0 at padding (not reduce)."""
        hidden = net_output[0]
        target = model.get_targets(sample, net_output)
        if hidden.shape[:-1] != target.shape:
            raise ValueError(f"define_bptt_nll: features {tuple(hidden.shape)} do not match the target "
                             f"{tuple(target.shape)}")
        keep = target.ne(self.padding_idx)
        nll = softmax_of(model).nll(hidden[keep], target[keep])
        if reduce:
            return nll.sum()
        full = nll.new_zeros(target.shape)
        full[keep] = nll
        return full.view(-1)

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        log_loss_nll_ppl(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
