"""Guarded, minimal shims for fairseq 0.12 on current torch and numpy. Each does nothing where it is not needed."""

import argparse


def allow_namespace_checkpoints():
    """torch >= 2.6 loads checkpoints with `weights_only=True`, which refuses the `argparse.Namespace` that legacy
    fairseq checkpoints (e.g. translation models built from `add_args` flags) store under "args". Allow that one
    class; everything else stays under torch's safe unpickler."""
    import torch.serialization

    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals([argparse.Namespace])


def restore_numpy_compat_long():
    """numpy 2 removed `np.compat`; fairseq's TokenBlockDataset (`--sample-break-mode eos`, LM interactive, hub
    sampling) and LanguagePairDataset still use `np.compat.long`, which was numpy's default integer (int64)."""
    import numpy as np

    try:
        np.compat  # noqa: B018
    except AttributeError:
        import types

        np.compat = types.SimpleNamespace(long=np.int64)


def apply():
    allow_namespace_checkpoints()
    restore_numpy_compat_long()
