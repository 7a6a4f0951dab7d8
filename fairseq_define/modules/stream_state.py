"""The model side of a stream's state (pure torch): one detached state per mode, carried across batches.

`fairseq_define.tasks.bptt_lm` (truncated BPTT over one continuous stream) resets it; the LSTM and Transformer-XL
decoders keep their (h, c) / memory in it. The contract is written out in `bptt_lm`'s module docstring.
"""

from typing import Optional

import torch

TRAIN, VALID = "train", "valid"


def detach_state(state):
    """The same nest of tensors (lists, tuples, dicts), every tensor detached."""
    if torch.is_tensor(state):
        return state.detach()
    if isinstance(state, (list, tuple)):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state


class StreamStateMixin:
    """Mix into a model (or decoder) to keep one detached stream state per mode: "train" while `self.training`,
    "valid" otherwise.

    In ``forward`` (without incremental_state): ``state = self.get_stream_state()`` (None at a stream start),
    compute, then ``self.set_stream_state(new_state)``. The state is any nest of tensors (lists, tuples,
    dicts); it is stored detached and is not part of the state dict. If the mixin sits on a submodule (e.g. the
    decoder), forward ``reset_stream_state`` from the model.
    """

    @property
    def _stream_states(self) -> dict:
        return vars(self).setdefault("_stream_state_by_mode", {})

    def stream_mode(self) -> str:
        return TRAIN if self.training else VALID

    def get_stream_state(self, mode: Optional[str] = None):
        return self._stream_states.get(mode or self.stream_mode())

    def set_stream_state(self, state, mode: Optional[str] = None):
        self._stream_states[mode or self.stream_mode()] = detach_state(state)

    def reset_stream_state(self, mode: Optional[str] = None):
        """Forget the state of `mode` ("train" / "valid"; None: both)."""
        if mode is None:
            self._stream_states.clear()
        else:
            self._stream_states.pop(mode, None)
