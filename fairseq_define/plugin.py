"""Registers everything the plugin adds to fairseq (importing this module imports fairseq and applies the shims)."""

from fairseq_define import compat

compat.apply()

from fairseq_define import models, tasks  # noqa: E402,F401
from fairseq_define.tasks import bptt_lm  # noqa: E402,F401
from fairseq_define.criterions import ar_tar_cross_entropy, bptt_nll  # noqa: E402,F401
from fairseq_define.optim import nt_asgd  # noqa: E402,F401
