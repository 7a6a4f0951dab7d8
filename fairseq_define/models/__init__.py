"""DeFINE models, registered with fairseq on import (fairseq's --user-dir also imports this folder's modules)."""

from fairseq_define import compat

compat.apply()

from fairseq_define.models import define_transformer, define_transformer_lm, lstm_lm, transformer_xl_lm  # noqa: E402,F401,E501
