"""Guarded, minimal shims for fairseq 0.12 on current torch and numpy. Each does nothing where it is not needed."""

import argparse


def allow_namespace_checkpoints():
    """torch >= 2.6 loads checkpoints with `weights_only=True`, which refuses the `argparse.Namespace` that legacy
    fairseq checkpoints (e.g. translation models built from `add_args` flags) store under "args". Allow that one
    class; everything else stays under torch's safe unpickler."""
    import torch.serialization

    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals([argparse.Namespace])


def allow_numpy_in_checkpoints():
    """fairseq's `--eval-bleu` keeps numpy arrays and scalars (sacreBLEU's n-gram counts) in its meters, which go into
    every checkpoint; torch >= 2.6's weights-only loading refuses them (resume, fairseq-generate). Allow numpy's
    array/scalar reconstructors and dtypes: data, not code (an object array's items still go through the same
    restricted unpickler)."""
    import numpy as np
    import numpy.dtypes
    import torch.serialization

    if not hasattr(torch.serialization, "add_safe_globals"):
        return
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [getattr(numpy.dtypes, name) for name in dir(numpy.dtypes) if name.endswith("DType")]
    torch.serialization.add_safe_globals([multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes])


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
    allow_numpy_in_checkpoints()
    restore_numpy_compat_long()
