import argparse
import io

import numpy as np
import torch

import fairseq_define.plugin  # noqa: F401  (applies the shims)


def test_namespace_checkpoint_loads_with_default_weights_only():
    buffer = io.BytesIO()
    torch.save({"args": argparse.Namespace(arch="x", lr=[0.1]), "model": {"w": torch.ones(2)}}, buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert state["args"].arch == "x" and torch.equal(state["model"]["w"], torch.ones(2))


def test_checkpoint_with_numpy_meters_loads_with_default_weights_only():
    # what --eval-bleu's meters put in a checkpoint: arrays of n-gram counts and numpy scalars
    buffer = io.BytesIO()
    torch.save({"counts": np.array([10, 7, 5, 3]), "sys_len": np.int64(42), "ratio": np.float64(0.5)}, buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert state["counts"].tolist() == [10, 7, 5, 3] and state["sys_len"] == 42 and state["ratio"] == 0.5


def test_numpy_compat_long_is_int64():
    assert np.compat.long is np.int64 or np.dtype(np.compat.long) == np.dtype(np.int64)


def test_fairseq_token_block_dataset_eos_mode_works():
    from fairseq.data import TokenBlockDataset

    class Lines(torch.utils.data.Dataset):
        data = [torch.tensor([4, 5, 2]), torch.tensor([6, 2])]

        def __getitem__(self, i):
            return self.data[i]

        def __len__(self):
            return len(self.data)

    ds = TokenBlockDataset(Lines(), [3, 2], block_size=None, pad=1, eos=2, break_mode="eos")
    assert [ds[i].tolist() for i in range(len(ds))] == [[4, 5, 2], [6, 2]]
