"""fairseq_define: DeFINE (Deep Factorized Input Token Embeddings, Mehta et al., ICLR 2020) for fairseq.

- As a fairseq plugin: ``fairseq-train --user-dir fairseq_define ...`` (or the path of the installed package).
  Registration has one path, `fairseq_define.plugin`; in-process, ``import fairseq_define.plugin``.
- As plain PyTorch: ``from fairseq_define.modules import DefineEmbedding`` imports neither fairseq nor its shims.
"""

import sys

__version__ = "0.2.0"

# fairseq's --user-dir imports this package after fairseq itself (and then only tasks/*, models/*): register the
# plugin then. A plain-PyTorch import (fairseq not loaded) must not pull fairseq in, hence the test.
if "fairseq" in sys.modules:
    from fairseq_define import plugin  # noqa: F401
