"""The metrics the plugin's criteria log, in base 2 as fairseq's: `loss` per sample_size unit, `nll_loss` per
token (the plain NLL, always) and `ppl` = 2 ** nll_loss."""

import math

from fairseq import utils
from fairseq.logging import metrics


def summed(logging_outputs, key):
    return utils.item(sum(log.get(key, 0) for log in logging_outputs))


def log_loss_nll_ppl(logging_outputs) -> int:
    """Log loss, nll_loss and ppl; returns the summed sample_size (for further per-sample_size metrics)."""
    sample_size, ntokens = summed(logging_outputs, "sample_size"), summed(logging_outputs, "ntokens")
    metrics.log_scalar("loss", summed(logging_outputs, "loss") / sample_size / math.log(2), sample_size, round=3)
    metrics.log_scalar("nll_loss", summed(logging_outputs, "nll_loss") / ntokens / math.log(2), ntokens, round=3)
    metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
    return sample_size
