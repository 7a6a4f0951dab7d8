"""fairseq_define: DeFINE (Deep Factorized Input Token Embeddings, Mehta et al., ICLR 2020) for fairseq.

Load with ``fairseq-train --user-dir fairseq_define ...`` (or the path of the installed package).
"""

from fairseq_define import compat

compat.apply()

from fairseq_define import models  # noqa: E402,F401  (registers the models even when imported before --user-dir)

__version__ = "0.1.0"
