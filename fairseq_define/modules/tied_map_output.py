"""The output layer tied to a lookup Map (pure torch): x [*, d] -> logits [*, V] = (x [P^T]) E^T [+ b].

E is the Map table [V, n] and P the Map's n -> d projection [d, n] (when d != n): the embedding's own Parameters,
not copies (registered here as `weight` and `proj_weight`, so a checkpoint names them under the output layer too).
`b` [V] is this layer's own per-token bias (the AWD-LSTM decoder's; the Transformer models have none).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class TiedMapOutput(nn.Module):
    """x [*, d] -> logits [*, V], scored against the Map table after d -> n (the transpose of the Map's projection).

    Args:
        embedding: the `DefineEmbedding` whose lookup Map is tied.
        bias: add a per-token output bias [V] of this layer's own.
    """

    def __init__(self, embedding: nn.Module, bias: bool = False):
        super().__init__()
        if embedding.is_adaptive:
            raise ValueError("TiedMapOutput needs a lookup Map; an adaptive Map goes with an adaptive softmax")
        if embedding.map_proj is None and not bias:
            raise ValueError("TiedMapOutput needs a lookup Map with an n -> d projection (--define-input-dim != "
                             "--define-map-dim) or a bias; otherwise the output is the Map table itself")
        self.weight = embedding.map.weight
        self.proj_weight = embedding.map_proj.weight if embedding.map_proj is not None else None
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings, dtype=self.weight.dtype)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj_weight is not None:
            x = F.linear(x, self.proj_weight.t())
        return F.linear(x, self.weight, self.bias)
