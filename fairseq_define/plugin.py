"""The one place the plugin registers with fairseq: importing this module applies the shims (`compat`) once and
imports every module that registers a model, task, criterion, optimizer or scheduler. Idempotent (Python imports a
module once); fairseq's registries are process-global, so every path goes through here:

- `--user-dir fairseq_define` (fairseq imports the package, whose ``__init__`` imports this module);
- in-process use (tests, `fairseq_define.params`, the hub): ``import fairseq_define.plugin``.
"""

from fairseq_define import compat

compat.apply()

from fairseq_define.criterions import ar_tar_cross_entropy, bptt_nll  # noqa: E402,F401
from fairseq_define.models import define_transformer, define_transformer_lm, lstm_lm, transformer_xl_lm  # noqa: E402,F401,E501
from fairseq_define.optim import nt_asgd  # noqa: E402,F401
from fairseq_define.tasks import bptt_lm  # noqa: E402,F401
