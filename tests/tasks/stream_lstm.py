"""A tiny stateful LSTM LM that implements the `bptt_lm` model-side contract (test helper, registered as
`bptt_test_lstm`)."""

from dataclasses import dataclass

import torch.nn as nn
from fairseq.dataclass import FairseqDataclass
from fairseq.models import FairseqDecoder, FairseqLanguageModel, register_model

from fairseq_define.modules.stream_state import StreamStateMixin


class StreamLSTMDecoder(StreamStateMixin, FairseqDecoder):
    def __init__(self, dictionary, dim):
        super().__init__(dictionary)
        self.embed = nn.Embedding(len(dictionary), dim, padding_idx=dictionary.pad())
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.out = nn.Linear(dim, len(dictionary))

    def forward(self, src_tokens, src_lengths=None, carry_state=True, **unused):
        """src_tokens [B, T] -> (logits [B, T, V], None); continues and updates the stream state of the mode."""
        state = self.get_stream_state() if carry_state else None
        h, new_state = self.lstm(self.embed(src_tokens), state)
        if carry_state:
            self.set_stream_state(new_state)
        return self.out(h), None


@dataclass
class StreamLSTMConfig(FairseqDataclass):
    dim: int = 16


@register_model("bptt_test_lstm", dataclass=StreamLSTMConfig)
class StreamLSTMLanguageModel(FairseqLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        return cls(StreamLSTMDecoder(task.target_dictionary, cfg.dim))

    def reset_stream_state(self, mode=None):
        self.decoder.reset_stream_state(mode)
