import os

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("FAIRSEQ_DEFINE_DATA", os.path.join(REPO_ROOT, "..", "shared", "data"))

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def data_dir(name):
    path = os.path.join(SHARED_DATA, name)
    if not os.path.isdir(path):
        pytest.skip(f"real data not found at {path} (set FAIRSEQ_DEFINE_DATA)")
    return path
