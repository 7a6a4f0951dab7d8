"""`bptt_lm`: language modelling over one continuous stream with truncated BPTT and state carried across batches.

A rewrite of fairseq's `examples/truncated_bptt` task (Transformer-XL / LSTM style training and evaluation)
without its defects: there every block's last target is a pad (the next block's first token is never scored)
and counted in ``ntokens``, and the model keeps one memory for training and validation alike. (That task is
not imported: its package also registers a `transformer_xl` model that wraps HF transformers.)

Data layout. A split (fairseq's binarized ``{split}.bin/.idx``, every line ending in eos) is one stream of
N tokens ``w_0 .. w_{N-1}``. The targets are exactly those N tokens; the source of ``w_p`` is ``w_{p-1}``, and
the source of ``w_0`` is eos (the stream "starts after a line end", as fairseq's TokenBlockDataset does). The
targets are cut into R = batch size x shards contiguous rows, the first N mod R rows one token longer
(``row_layout``); shard k takes rows ``k*B .. k*B+B-1``. Batch i holds columns ``[i*T, (i+1)*T)`` of its rows
(T = ``--tokens-per-sample``): ``src_tokens`` and ``target`` are [B, T] (the last batch may be narrower), so
row b of batch i+1 continues row b of batch i exactly where it ended. Rows that end early are right-padded in
the last batch; pads are never counted in ``ntokens`` and are ignored by fairseq's criteria (``ignore_index``).
Hence: over one epoch, summed over all shards, every token of the split is a target exactly once and
``sum(ntokens) == N``. Batches come in order (never shuffled) and every shard gets the same number of batches.

Batch size. The number of rows per shard is ``--batch-size`` (``--batch-size-valid`` for validation, the
``--batch-size`` of fairseq-eval-lm), or else ``--max-tokens // --tokens-per-sample``.

Model-side contract (`fairseq_define.modules.stream_state.StreamStateMixin` implements the bookkeeping):
- the model keeps one stream state per mode, ``"train"`` while ``model.training`` and ``"valid"`` otherwise
  (validation and fairseq-eval-lm both call ``model.eval()``); the two never mix.
- ``forward(src_tokens, src_lengths=None, incremental_state=None, ...)`` called WITHOUT ``incremental_state``
  continues the state of the current mode (Transformer-XL memory, LSTM (h, c), ...) and stores the new one
  detached: gradients stop at batch boundaries, activations of earlier batches are freed. Calls WITH an
  ``incremental_state`` (SequenceGenerator) must use that instead and leave the stream state alone.
- ``reset_stream_state(mode)`` forgets the state of ``mode`` ("train" / "valid"; None: both). The task calls it
  at ``begin_epoch`` ("train"), ``begin_valid_epoch`` ("valid"), and before the first batch of every pass over
  a split (``sample["block"] == 0``; this also covers several validation subsets in a row). A model without it
  still trains (a warning is logged), each batch then being scored without the previous ones.
- the state is per shard (each worker keeps its own rows) and is not checkpointed: a run resumed mid-epoch
  continues the stream at the next batch (fairseq's iterator state), with an empty state.
- fairseq-eval-lm: load the checkpoint with ``--task bptt_lm`` (``--tokens-per-sample`` and ``--batch-size``
  choose the evaluation segment length and the number of streams; ``--context-window`` is refused, memory
  replaces it). SequenceScorer calls ``model(**net_input)`` per batch in order and then
  ``model.get_normalized_probs(net_output, log_probs=True, sample=sample)``: the model must return a net_output
  fairseq can normalise (logits [B, T, V], or features with an ``adaptive_softmax`` on the decoder) and must
  carry its memory across those calls by the rule above. With batch size B, the result equals the validation
  loss of the trainer at the same T and B. Memory length changes go through ``--model-overrides``.
- generation (fairseq-interactive, the hub's ``sample``): prompts are built as fairseq's language_modeling task
  builds them (``build_dataset_for_inference``, ``inference_step``) and batched by fairseq's default iterator;
  the model decodes with an ``incremental_state`` and leaves the stream state alone.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np
import torch
from fairseq import utils
from fairseq.data import Dictionary, FairseqDataset, data_utils, iterators
from fairseq.data.indexed_dataset import MMapIndexedDataset
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from fairseq.tasks.language_modeling import LanguageModelingTask
from omegaconf import II

from fairseq_define.modules.stream_state import TRAIN, VALID

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- the stream and its batches
def row_layout(n_tokens: int, n_rows: int) -> Tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) [n_rows] of n_rows contiguous rows covering n_tokens; the first n_tokens % n_rows rows
    are one token longer."""
    if n_rows < 1 or n_tokens < n_rows:
        raise ValueError(f"bptt_lm: cannot cut {n_tokens} tokens into {n_rows} rows (batch size x shards)")
    lengths = np.full(n_rows, n_tokens // n_rows, dtype=np.int64)
    lengths[: n_tokens % n_rows] += 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return starts, lengths


def concatenate_items(data) -> Tuple[np.ndarray, object]:
    """All items of an indexed dataset in order, as one 1-D integer array, and the object that must stay alive
    while the array is used. For fairseq's mmap format this is a zero-copy view of the .bin file (its items are
    stored back to back); otherwise the items are concatenated."""
    if isinstance(data, MMapIndexedDataset) and len(data) > 0:
        first_pointer = int(data._index[0][0])
        tokens = np.frombuffer(data._bin_buffer, dtype=data._index.dtype, count=int(data.sizes.sum()),
                               offset=first_pointer)
        return tokens, data
    if len(data) == 0:
        return np.zeros(0, dtype=np.int64), None
    return np.concatenate([np.asarray(data[i]) for i in range(len(data))]), None


class TokenStream(FairseqDataset):
    """One split as one stream: ``len(stream)`` targets ``w_0 .. w_{N-1}``, source of ``w_p`` = ``w_{p-1}``
    (eos for p = 0). Item p is the pair ``LongTensor([source_p, target_p])``."""

    def __init__(self, tokens: np.ndarray, eos: int, keep_alive=None):
        super().__init__()
        self.tokens, self.eos = tokens, eos
        self._keep_alive = keep_alive  # owner of the memory `tokens` views (an mmap closed when it is freed)

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, positions: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        """(source, target) LongTensors of the shape of `positions` (stream positions in [0, N))."""
        target = self.tokens[positions].astype(np.int64)
        source = np.where(positions > 0, self.tokens[np.maximum(positions - 1, 0)], self.eos).astype(np.int64)
        return torch.from_numpy(source), torch.from_numpy(target)

    def __getitem__(self, index: int) -> torch.Tensor:
        source, target = self.take(np.array([index]))
        return torch.cat([source, target])


class BPTTBlocks(FairseqDataset):
    """The batches of one shard of a `TokenStream` (see the module docstring): item i = batch i, the columns
    ``[i*T, (i+1)*T)`` of this shard's ``rows`` rows, as {"id": i, "source": [B, w], "target": [B, w]}."""

    def __init__(self, stream: TokenStream, rows: int, block_len: int, pad: int, num_shards: int = 1,
                 shard_id: int = 0):
        super().__init__()
        if block_len < 1:
            raise ValueError(f"bptt_lm: --tokens-per-sample must be positive, got {block_len}")
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"bptt_lm: shard {shard_id} of {num_shards}")
        self.stream, self.rows, self.block_len, self.pad = stream, rows, block_len, pad
        starts, lengths = row_layout(len(stream), rows * num_shards)
        self.longest_row = int(lengths.max())  # the same for every shard: equal batch counts
        mine = slice(shard_id * rows, (shard_id + 1) * rows)
        self.starts, self.lengths = starts[mine], lengths[mine]

    def __len__(self) -> int:
        return -(-self.longest_row // self.block_len)

    def __getitem__(self, index: int) -> dict:
        begin = index * self.block_len
        columns = np.arange(begin, min(begin + self.block_len, self.longest_row))
        valid = columns[None, :] < self.lengths[:, None]  # [B, w]
        positions = self.starts[:, None] + columns[None, :]
        source = torch.full(valid.shape, self.pad, dtype=torch.long)
        target = torch.full(valid.shape, self.pad, dtype=torch.long)
        mask = torch.from_numpy(valid)
        source[mask], target[mask] = self.stream.take(positions[valid])
        return {"id": index, "source": source, "target": target}

    def collater(self, items) -> dict:
        """[one item] -> a fairseq sample: net_input.src_tokens / target [B, w], ntokens = non-pad targets."""
        if len(items) == 0:
            return {}
        assert len(items) == 1, "bptt_lm: every dataset item is a whole batch"
        item = items[0]
        source, target = item["source"], item["target"]
        lengths = target.ne(self.pad).sum(dim=1)
        return {
            "id": torch.full((source.size(0),), item["id"], dtype=torch.long),
            "block": item["id"],
            "nsentences": source.size(0),
            "ntokens": int(lengths.sum()),
            "net_input": {"src_tokens": source, "src_lengths": lengths},
            "target": target,
        }


# ---------------------------------------------------------------- the task
@dataclass
class BPTTLMConfig(FairseqDataclass):
    data: str = field(default="???", metadata={"help": "data directory: dict.txt and binarized splits"})
    tokens_per_sample: int = field(
        default=150, metadata={"help": "BPTT length: target tokens per row in each batch (Transformer-XL tgt_len)"}
    )
    max_target_positions: int = II("task.tokens_per_sample")


@register_task("bptt_lm", dataclass=BPTTLMConfig)
class BPTTLMTask(FairseqTask):
    """Truncated-BPTT language modelling over continuous streams; see the module docstring."""

    def __init__(self, cfg: BPTTLMConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self._warned_stateless = False
        self._optimizer = None  # the optimizer of the latest train step (this task's trainer), for validation

    @classmethod
    def setup_task(cls, cfg: BPTTLMConfig, **kwargs):
        paths = utils.split_paths(cfg.data)
        if not paths:
            raise ValueError("bptt_lm: --data / task.data is empty")
        dictionary = Dictionary.load(os.path.join(paths[0], "dict.txt"))
        logger.info(f"dictionary: {len(dictionary)} types")
        return cls(cfg, dictionary)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    @property
    def output_dictionary(self):  # the name fairseq's language_modeling task uses
        return self.dictionary

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        split_path = os.path.join(paths[(epoch - 1) % len(paths)], split)
        data = data_utils.load_indexed_dataset(split_path, self.dictionary, combine=combine)
        if data is None:
            raise FileNotFoundError(f"bptt_lm: dataset not found: {split} ({split_path})")
        tokens, owner = concatenate_items(data)
        self.datasets[split] = TokenStream(tokens, eos=self.dictionary.eos(), keep_alive=owner)
        logger.info(f"{split}: {len(tokens):,} tokens in one stream")

    def rows_per_shard(self, max_sentences: Optional[int], max_tokens: Optional[int]) -> int:
        if max_sentences:
            return int(max_sentences)
        if max_tokens:
            return max(int(max_tokens) // self.cfg.tokens_per_sample, 1)
        raise ValueError("bptt_lm: give --batch-size (the number of parallel streams) or --max-tokens")

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1, num_shards=1,
                           shard_id=0, num_workers=0, epoch=1, data_buffer_size=0, disable_iterator_cache=False,
                           skip_remainder_batch=False, grouped_shuffling=False, update_epoch_batch_itr=False):
        """Batches of `BPTTBlocks` in order. Sharding is done on rows (not by dealing batches to workers),
        nothing is shuffled, filtered or dropped (`max_positions`, `required_batch_size_multiple`,
        `skip_remainder_batch` and `grouped_shuffling` do not apply). Any other dataset (the prompts of
        `build_dataset_for_inference`) is batched by fairseq's default."""
        if not isinstance(dataset, TokenStream):
            return super().get_batch_iterator(
                dataset, max_tokens=max_tokens, max_sentences=max_sentences, max_positions=max_positions,
                ignore_invalid_inputs=ignore_invalid_inputs,
                required_batch_size_multiple=required_batch_size_multiple, seed=seed, num_shards=num_shards,
                shard_id=shard_id, num_workers=num_workers, epoch=epoch, data_buffer_size=data_buffer_size,
                disable_iterator_cache=disable_iterator_cache, skip_remainder_batch=skip_remainder_batch,
                grouped_shuffling=grouped_shuffling, update_epoch_batch_itr=update_epoch_batch_itr)
        rows = self.rows_per_shard(max_sentences, max_tokens)
        blocks = BPTTBlocks(dataset, rows, self.cfg.tokens_per_sample, self.dictionary.pad(), num_shards, shard_id)
        return iterators.EpochBatchIterator(
            dataset=blocks,
            collate_fn=blocks.collater,
            batch_sampler=[[i] for i in range(len(blocks))],
            seed=seed,
            num_workers=num_workers,
            epoch=epoch,
            buffer_size=data_buffer_size,
            disable_shuffling=True,
        )

    def eval_lm_dataloader(self, dataset, max_tokens: Optional[int] = 36000, batch_size: Optional[int] = None,
                           max_positions: Optional[int] = None, num_shards: int = 1, shard_id: int = 0,
                           num_workers: int = 1, data_buffer_size: int = 10, context_window: int = 0):
        if context_window > 0:
            raise ValueError("bptt_lm: --context-window does not apply; the model's memory gives the context "
                             "(change its length with --model-overrides)")
        return self.get_batch_iterator(dataset, max_tokens=max_tokens, max_sentences=batch_size,
                                       num_shards=num_shards, shard_id=shard_id, num_workers=num_workers,
                                       data_buffer_size=data_buffer_size).next_epoch_itr(shuffle=False)

    # -------------------------------------------------------- generation (fairseq-interactive, hub sample)
    # fairseq's language_modeling prompts: each prompt with eos prepended as the source and a pad appended to the
    # target, one prompt per sample; the prompt (without its leading eos) is the generator's prefix. Generation
    # decodes with an ``incremental_state``: the stream state of training / validation is not used or changed.
    build_dataset_for_inference = LanguageModelingTask.build_dataset_for_inference
    inference_step = LanguageModelingTask.inference_step

    @property
    def args(self):
        """The config, under the name fairseq's language_modeling methods read it by (`add_bos_token`: unset)."""
        return self.cfg

    # -------------------------------------------------------- stream state hand-off
    def reset_stream_state(self, model, mode: str):
        reset = getattr(model, "reset_stream_state", None)
        if reset is not None:
            reset(mode)
        elif not self._warned_stateless:
            self._warned_stateless = True
            logger.warning(f"bptt_lm: {type(model).__name__} has no reset_stream_state(mode); it carries no state "
                           "across batches, so each batch is scored without the previous ones")

    def begin_epoch(self, epoch, model):
        self.reset_stream_state(model, TRAIN)

    def begin_valid_epoch(self, epoch, model):
        """Reset the validation stream; validate (and then save) NT-ASGD's average once it has started: an
        optimizer with `swap_in_average_for_evaluation` (`--optimizer nt_asgd`) puts it into the model until its
        next `zero_grad()`."""
        self.reset_stream_state(model, VALID)
        swap_in = getattr(self._optimizer, "swap_in_average_for_evaluation", None)
        if swap_in is not None:
            swap_in(model)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self._optimizer = optimizer
        if sample.get("block") == 0:
            self.reset_stream_state(model, TRAIN)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        if sample.get("block") == 0:
            self.reset_stream_state(model, VALID)
        return super().valid_step(sample, model, criterion)
