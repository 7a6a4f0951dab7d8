"""bptt_lm: every token a target exactly once, rows continue across batches, no pad counted, per-mode state.

The identity checked: over one epoch (all shards together) the non-pad targets, read row by row in batch order,
are exactly the split's token sequence (every line with its eos), so ``sum(ntokens) == dataset.sizes.sum()``;
the source of each target is the token before it in the split (eos for the very first token).
"""

import json
import os
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fairseq.criterions.cross_entropy import CrossEntropyCriterion
from fairseq.data import data_utils

from fairseq_define.modules.stream_state import StreamStateMixin
from fairseq_define.tasks.bptt_lm import BPTTLMConfig, BPTTLMTask, TokenStream, concatenate_items, row_layout
from tests.cli import call
from tests.conftest import REPO_ROOT
from tests.tasks.stream_lstm import StreamLSTMConfig, StreamLSTMLanguageModel


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bptt")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(30)]
    for split, lines in (("train", 120), ("valid", 40)):
        with open(root / f"{split}.txt", "w") as f:
            for _ in range(lines):
                f.write(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) + "\n")
    call("preprocess", "--only-source", "--trainpref", root / "train.txt", "--validpref", root / "valid.txt",
         "--destdir", root / "bin", "--workers", "1")
    return str(root / "bin")


def make_task(data_dir, tokens_per_sample):
    task = BPTTLMTask.setup_task(BPTTLMConfig(data=data_dir, tokens_per_sample=tokens_per_sample))
    task.load_dataset("train")
    task.load_dataset("valid")
    return task


def split_tokens(task, split):
    """The split as fairseq stores it, item by item (independent of the task's reading)."""
    data = data_utils.load_indexed_dataset(os.path.join(task.cfg.data, split), task.dictionary)
    return torch.cat([data[i] for i in range(len(data))]), int(data.sizes.sum())


def epoch_samples(task, split, rows, num_shards=1, shard_id=0, shuffle=True):
    itr = task.get_batch_iterator(task.dataset(split), max_sentences=rows, num_shards=num_shards,
                                  shard_id=shard_id)
    return list(itr.next_epoch_itr(shuffle=shuffle))


def rows_of(samples, pad):
    """Per row: (sources, targets) over the epoch, pads dropped."""
    rows = []
    for b in range(samples[0]["target"].size(0)):
        src = torch.cat([s["net_input"]["src_tokens"][b] for s in samples])
        tgt = torch.cat([s["target"][b] for s in samples])
        keep = tgt.ne(pad)
        rows.append((src[keep], tgt[keep]))
    return rows


# ---------------------------------------------------------------- layout
@pytest.mark.parametrize("rows,T,shards", [(3, 5, 1), (4, 7, 2), (1, 10_000, 1), (5, 1, 1), (2, 9, 3)])
def test_one_epoch_targets_every_token_exactly_once(data_dir, rows, T, shards):
    task = make_task(data_dir, T)
    pad, eos = task.dictionary.pad(), task.dictionary.eos()
    for split in ("train", "valid"):
        tokens, n_tokens = split_tokens(task, split)
        all_rows, ntokens, n_batches = [], 0, set()
        for shard in range(shards):
            samples = epoch_samples(task, split, rows, shards, shard)
            n_batches.add(len(samples))
            ntokens += sum(s["ntokens"] for s in samples)
            all_rows += rows_of(samples, pad)
        assert len(n_batches) == 1  # every shard takes the same number of steps
        assert ntokens == n_tokens == len(tokens) == len(task.dataset(split))
        targets = torch.cat([tgt for _, tgt in all_rows])
        assert torch.equal(targets, tokens)
        sources = torch.cat([src for src, _ in all_rows])
        assert torch.equal(sources, torch.cat([torch.tensor([eos]), tokens[:-1]]))


def test_consecutive_batches_continue_each_other_row_by_row(data_dir):
    task = make_task(data_dir, 6)
    pad = task.dictionary.pad()
    samples = epoch_samples(task, "train", rows=4)
    assert [s["block"] for s in samples] == list(range(len(samples)))
    for prev, cur in zip(samples, samples[1:]):
        prev_tgt, cur_src = prev["target"], cur["net_input"]["src_tokens"]
        assert prev_tgt.size(1) == 6
        live = cur["target"][:, 0].ne(pad)
        # the first source of a row in batch i+1 is the last target of that row in batch i
        assert torch.equal(cur_src[live, 0], prev_tgt[live, -1])
    for s in samples:  # inside a batch, sources are the targets shifted right by one
        src, tgt = s["net_input"]["src_tokens"], s["target"]
        inner = tgt[:, 1:].ne(pad)  # where the next position is real
        assert torch.equal(src[:, 1:][inner], tgt[:, :-1][inner])


def test_batches_are_never_shuffled(data_dir):
    task = make_task(data_dir, 5)
    itr = task.get_batch_iterator(task.dataset("train"), max_sentences=3)
    first = [s["block"] for s in itr.next_epoch_itr(shuffle=True)]
    second = [s["block"] for s in itr.next_epoch_itr(shuffle=True)]
    assert first == second == list(range(len(first)))


def test_ntokens_counts_no_pad(data_dir):
    task = make_task(data_dir, 7)
    pad = task.dictionary.pad()
    _, n_tokens = split_tokens(task, "train")
    rows = 3 if n_tokens % 3 else 4
    assert n_tokens % rows  # some rows are one token shorter: the last batch has pads
    samples = epoch_samples(task, "train", rows)
    for s in samples:
        assert s["ntokens"] == int(s["target"].ne(pad).sum()) == int(s["net_input"]["src_lengths"].sum())
        assert s["nsentences"] == rows
    last = samples[-1]
    assert last["target"].eq(pad).any() and last["ntokens"] < last["target"].numel()
    assert not any(s["target"].eq(pad).any() for s in samples[:-1])


def test_row_layout_and_batch_size_from_max_tokens(data_dir):
    starts, lengths = row_layout(10, 4)
    assert lengths.tolist() == [3, 3, 2, 2] and starts.tolist() == [0, 3, 6, 8]
    with pytest.raises(ValueError):
        row_layout(3, 4)
    task = make_task(data_dir, 5)
    itr = task.get_batch_iterator(task.dataset("valid"), max_tokens=23)
    assert next(iter(itr.next_epoch_itr()))["target"].size(0) == 23 // 5
    with pytest.raises(ValueError):
        task.get_batch_iterator(task.dataset("valid"))
    with pytest.raises(ValueError):
        task.eval_lm_dataloader(task.dataset("valid"), batch_size=2, context_window=4)


def test_mmap_fast_path_reads_the_same_stream(data_dir):
    task = make_task(data_dir, 5)
    tokens, _ = split_tokens(task, "train")
    data = data_utils.load_indexed_dataset(os.path.join(data_dir, "train"), task.dictionary)
    fast, owner = concatenate_items(data)
    assert owner is data and np.array_equal(fast, tokens.numpy())
    slow, _ = concatenate_items(list(data[i] for i in range(len(data))))
    assert np.array_equal(slow, tokens.numpy())
    stream = TokenStream(fast, eos=task.dictionary.eos(), keep_alive=owner)
    assert stream[0].tolist() == [task.dictionary.eos(), int(tokens[0])]
    assert stream[5].tolist() == [int(tokens[4]), int(tokens[5])]


# ---------------------------------------------------------------- state hand-off
class Stateful(StreamStateMixin, torch.nn.Linear):
    def __init__(self):
        super().__init__(2, 2)


def test_stream_state_is_kept_per_mode_detached_and_reset_by_the_task(data_dir):
    task = make_task(data_dir, 5)
    model = Stateful()
    x = torch.ones(2, requires_grad=True)
    model.train()
    model.set_stream_state({"h": [x * 2]})
    assert model.stream_mode() == "train" and not model.get_stream_state()["h"][0].requires_grad
    model.eval()
    assert model.get_stream_state() is None
    model.set_stream_state((x * 3,))
    task.begin_epoch(2, model)  # forgets the training state only
    assert model.get_stream_state("train") is None and model.get_stream_state("valid") is not None
    model.set_stream_state((x,), mode="train")
    task.begin_valid_epoch(2, model)  # forgets the validation state only
    assert model.get_stream_state("valid") is None and model.get_stream_state("train") is not None
    assert "_stream_state_by_mode" not in str(model.state_dict().keys())

    samples = epoch_samples(task, "valid", rows=2)
    calls = []
    criterion = lambda m, s: calls.append(m.get_stream_state()) or (torch.zeros(()), 1, {})  # noqa: E731
    model.set_stream_state((x,))  # left over from an earlier pass (e.g. another validation subset)
    task.valid_step(samples[0], model, criterion)
    task.valid_step(samples[1], model, criterion)
    assert calls[0] is None  # the first batch of a pass starts from an empty state
    model.set_stream_state((x,))
    task.valid_step(samples[1], model, criterion)
    assert calls[-1] is not None  # later batches continue it


def test_a_stateless_model_trains_with_a_warning(data_dir, caplog):
    task = make_task(data_dir, 5)
    task.begin_epoch(1, torch.nn.Linear(2, 2))
    assert "no reset_stream_state" in caplog.text


def lstm_model(task, seed=0):
    torch.manual_seed(seed)
    return StreamLSTMLanguageModel.build_model(StreamLSTMConfig(dim=8), task)


def test_stateful_blocks_equal_whole_rows_and_eval_lm(data_dir):
    """Validation in blocks with state == each row scored in one pass == fairseq-eval-lm's scorer."""
    from fairseq_cli.eval_lm import eval_lm

    task = make_task(data_dir, 6)
    pad = task.dictionary.pad()
    model = lstm_model(task)
    criterion = CrossEntropyCriterion(task, sentence_avg=False)

    samples = epoch_samples(task, "valid", rows=3)
    model.train()
    model.decoder.set_stream_state(("not", "used"))  # a training state that validation must not touch
    task.begin_valid_epoch(1, model)
    loss_sum = ntokens = 0
    for s in samples:
        loss, sample_size, log = task.valid_step(s, model, criterion)
        loss_sum, ntokens = loss_sum + float(loss), ntokens + sample_size
    assert model.decoder.get_stream_state("train") == ("not", "used")

    source = torch.cat([s["net_input"]["src_tokens"] for s in samples], dim=1)
    target = torch.cat([s["target"] for s in samples], dim=1)
    with torch.no_grad():
        logits, _ = model.decoder(source, carry_state=False)
    whole_rows = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=pad, reduction="sum")
    assert ntokens == split_tokens(task, "valid")[1]
    assert loss_sum == pytest.approx(float(whole_rows), rel=1e-5)

    model.reset_stream_state()  # a fresh model, as fairseq-eval-lm loads it
    itr = task.eval_lm_dataloader(task.dataset("valid"), batch_size=3, num_workers=0)
    result = eval_lm([model], task.source_dictionary, itr, target_dictionary=task.target_dictionary)
    assert result["loss"] == pytest.approx(loss_sum / ntokens / np.log(2), rel=1e-5)


@pytest.mark.slow
def test_fairseq_train_and_eval_lm_cli_agree(data_dir, tmp_path):
    """fairseq-train (1 epoch) then fairseq-eval-lm on its checkpoint: eval-lm reproduces the validation loss."""
    import tests.tasks.stream_lstm  # noqa: F401  (registers the bptt_test_lstm model)

    common = [data_dir, "--task", "bptt_lm", "--tokens-per-sample", "6", "--cpu", "--num-workers", "0",
              "--batch-size", "3"]
    save = tmp_path / "ckpt"
    log = call("train", *common, "--arch", "bptt_test_lstm", "--optimizer", "adam", "--lr", "0.01",
               "--max-epoch", "1", "--save-dir", save, "--no-epoch-checkpoints", "--log-format", "json",
               "--log-interval", "1", "--seed", "1")
    valid = [json.loads(line.split("| ")[-1]) for line in log.splitlines() if '"valid_loss"' in line]
    assert len(valid) == 1
    _, n_train = split_tokens(make_task(data_dir, 6), "train")
    epoch_end = [json.loads(line.split("| ")[-1]) for line in log.splitlines() if '"train_num_updates"' in line]
    longest_row = -(-n_train // 3)
    assert int(epoch_end[-1]["train_num_updates"]) == -(-longest_row // 6)  # one update per block of 6 columns
    out = call("eval_lm", *common, "--path", save / "checkpoint_last.pt", "--gen-subset", "valid")
    line = next(line for line in out.splitlines() if "Loss (base 2)" in line)
    eval_loss = float(line.split("Loss (base 2): ")[1].split(",")[0])
    assert eval_loss == pytest.approx(float(valid[0]["valid_loss"]), abs=1e-3)


# ---------------------------------------------------------------- fairseq-train: resume, two ranks
RECORDER = '''"""Test plugin: the DeFINE plugin, with bptt_lm's train_step recording every batch it trains on."""
import json
import os
import sys

sys.path.insert(0, {repo!r})
import fairseq_define.plugin  # noqa: E402,F401  (bptt_lm, define_transformer_xl_tiny, ...)
import torch.distributed as dist  # noqa: E402
from fairseq_define.tasks.bptt_lm import BPTTLMTask  # noqa: E402

_train_step = BPTTLMTask.train_step


def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
    loss, sample_size, log = _train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    with open(os.environ["BPTT_RECORD"] + "." + str(rank), "a") as f:
        f.write(json.dumps({{"update": int(update_num), "block": int(sample["block"]), "dummy": bool(ignore_grad),
                            "src": sample["net_input"]["src_tokens"].tolist(), "tgt": sample["target"].tolist(),
                            "ntokens": int(sample["ntokens"]), "loss": float(loss)}}) + "\\n")
    return loss, sample_size, log


BPTTLMTask.train_step = train_step
'''

TXL = ["--task", "bptt_lm", "--arch", "define_transformer_xl_tiny", "--optimizer", "adam", "--lr", "1e-3",
       "--tokens-per-sample", "5", "--batch-size", "3", "--cpu", "--num-workers", "0", "--seed", "1",
       "--disable-validation", "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1"]


@pytest.fixture
def recorder(tmp_path):
    """(--user-dir of the recording plugin, read(name, rank) -> the recorded batches of run `name`)."""
    plugin = tmp_path / "bptt_record_plugin"
    plugin.mkdir()
    (plugin / "__init__.py").write_text(RECORDER.format(repo=REPO_ROOT))

    def read(name, rank=0):
        path = tmp_path / f"{name}.{rank}"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return str(plugin), read


def train_recorded(plugin, record, *flags, rank):
    """fairseq-train FLAGS --distributed-rank RANK as a command line with the recording plugin, batches recorded
    to RECORD.<rank>; returns the process (started, not waited for)."""
    env = dict(os.environ, BPTT_RECORD=str(record), PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "fairseq_cli.train", *map(str, flags), "--user-dir", plugin]
    return subprocess.Popen(command + ["--distributed-rank", str(rank)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


@pytest.fixture
def recorded(monkeypatch):
    """train(name, *flags): fairseq-train FLAGS in this process, bptt_lm's train_step recording every batch under
    `name` (as the RECORDER plugin does for the subprocesses); returns the log. records[name]: the batches."""
    records = {}
    current = []
    original = BPTTLMTask.train_step

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        loss, sample_size, log = original(self, sample, model, criterion, optimizer, update_num, ignore_grad)
        records.setdefault(current[-1], []).append(
            {"update": int(update_num), "block": int(sample["block"]), "dummy": bool(ignore_grad),
             "src": sample["net_input"]["src_tokens"].tolist(), "tgt": sample["target"].tolist(),
             "ntokens": int(sample["ntokens"]), "loss": float(loss)})
        return loss, sample_size, log

    monkeypatch.setattr(BPTTLMTask, "train_step", train_step)

    def train(name, *flags):
        current.append(name)
        return call("train", *flags)

    return train, records


@pytest.mark.slow
def test_resume_from_a_mid_epoch_checkpoint_continues_the_stream(data_dir, tmp_path, recorded):
    """Train 5 updates (a checkpoint every 2 and at the stop, mid-epoch), resume to 9: the resumed run trains on
    batches 5..8, its first batch continues each row of the last batch before the stop, and (no memory, no
    dropout: each update depends only on its batch and the restored weights / Adam state) its losses equal those
    of an uninterrupted 9-update run."""
    train, records = recorded
    flags = [data_dir, *TXL, "--mem-len", 0, "--dropout", 0, "--save-interval-updates", 2]
    train("whole", *flags, "--max-update", 9, "--save-dir", tmp_path / "whole_ckpt")
    save = tmp_path / "ckpt"
    train("first", *flags, "--max-update", 5, "--save-dir", save)
    log = train("resumed", *flags, "--max-update", 9, "--save-dir", save)
    assert "Loaded checkpoint" in log and "(epoch 1 @ 5 updates)" in log
    whole, first, resumed = records["whole"], records["first"], records["resumed"]
    pad = BPTTLMTask.setup_task(BPTTLMConfig(data=data_dir, tokens_per_sample=5)).dictionary.pad()
    n_blocks = len(epoch_samples(make_task(data_dir, 5), "train", rows=3))
    assert n_blocks > 9  # the stop (5) and the end (9) are mid-epoch
    assert [b["block"] for b in whole] == list(range(9)) and not any(b["dummy"] for b in whole)
    assert [b["block"] for b in first] == list(range(5))
    assert [b["block"] for b in resumed] == list(range(5, 9))
    last, nxt = torch.tensor(first[-1]["tgt"]), torch.tensor(resumed[0]["src"])
    assert torch.equal(nxt[:, 0], last[:, -1]) and last.ne(pad).all()  # row b continues row b
    for a, b in zip(whole, first + resumed):
        assert a["src"] == b["src"] and a["tgt"] == b["tgt"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_gloo_training_scores_every_token_once_per_epoch(data_dir, tmp_path, recorder):
    """Two CPU processes (gloo, legacy_ddp, one rank each) train the tiny Transformer-XL for one epoch: each rank
    reads its own rows (shard), both take the same number of steps, and the targets of the two ranks together,
    row by row, are the training split exactly once."""
    plugin, read = recorder
    flags = [data_dir, *TXL, "--max-epoch", 1, "--save-dir", tmp_path / "ckpt", "--distributed-backend", "gloo",
             "--ddp-backend", "legacy_ddp", "--distributed-no-spawn", "--distributed-world-size", 2,
             "--distributed-init-method", f"tcp://127.0.0.1:{free_port()}"]
    procs = [train_recorded(plugin, tmp_path / "ddp", *flags, rank=rank) for rank in (0, 1)]
    logs = [p.communicate(timeout=1800)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "no reset_stream_state" not in logs[0] + logs[1]  # the task reaches the model through the DDP wrapper
    batches = [read("ddp", rank) for rank in (0, 1)]
    assert not any(b["dummy"] for b in batches[0] + batches[1])
    n_blocks = len(epoch_samples(make_task(data_dir, 5), "train", rows=3, num_shards=2))
    assert [b["block"] for b in batches[0]] == [b["block"] for b in batches[1]] == list(range(n_blocks))
    assert [b["update"] for b in batches[0]] == list(range(n_blocks))
    epoch_end = [json.loads(line.split("| ")[-1]) for line in logs[0].splitlines() if '"train_num_updates"' in line]
    assert int(epoch_end[-1]["train_num_updates"]) == n_blocks  # one update = one batch of each rank
    task = make_task(data_dir, 5)
    pad = task.dictionary.pad()
    tokens, n_tokens = split_tokens(task, "train")
    rows = []
    for rank in (0, 1):
        tgt = torch.cat([torch.tensor(b["tgt"]) for b in batches[rank]], dim=1)  # [3, columns] of this rank
        rows += [row[row.ne(pad)] for row in tgt]
    assert torch.equal(rows[0][:5], tokens[:5]) and not torch.equal(rows[0], rows[3])  # different rows per rank
    assert torch.equal(torch.cat(rows), tokens)
    assert sum(b["ntokens"] for b in batches[0] + batches[1]) == n_tokens
    assert os.path.exists(tmp_path / "ckpt" / "checkpoint_last.pt")
