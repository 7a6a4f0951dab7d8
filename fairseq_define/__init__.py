"""fairseq_define: DeFINE (Deep Factorized Input Token Embeddings, Mehta et al., ICLR 2020) for fairseq.

- As a fairseq plugin: ``fairseq-train --user-dir fairseq_define ...`` (or the path of the installed package);
  fairseq imports this package with fairseq already loaded, and the models, tasks, criterions and optimizers are
  registered (`fairseq_define.plugin`). In-process, ``import fairseq_define.plugin`` does the same.
- As plain PyTorch: ``from fairseq_define.modules import DefineEmbedding`` imports neither fairseq nor its shims.
"""

import sys

__version__ = "0.2.0"

if "fairseq" in sys.modules:  # loaded by fairseq (--user-dir) or after it: register the plugin
    from fairseq_define import plugin  # noqa: F401
