"""define_lstm_lm: exact parameter counts of the paper's LSTM models, stream state through `bptt_lm`, embedding type
dropout, incremental decoding, learning, and the fairseq CLI (train with AR/TAR + NT-ASGD, eval-lm)."""

import json
import math
import os
import random

import pytest
import torch
import torch.nn.functional as F
from fairseq.criterions.adaptive_loss import AdaptiveLoss
from fairseq.criterions.cross_entropy import CrossEntropyCriterion

import fairseq_define.plugin  # noqa: F401  (registers the task, criteria, optimizer)
import fairseq_define.models.lstm_lm  # noqa: F401  (registers define_lstm_lm and its archs)
from fairseq_define.models.lstm_lm import DefineLSTMLanguageModel, IdentityBandProjection
from fairseq_define.modules.define_embedding import DefineEmbedding
from fairseq_define.modules.tied_map_output import TiedMapOutput
from fairseq_define.params import build_model, count_parts
from fairseq_define.tasks.bptt_lm import BPTTLMConfig, BPTTLMTask
from tests import cli

WORDS = 20  # the synthetic language: w_{i+1} follows w_i (mod 20); lines start anywhere and end at random
ADAPTIVE = ["--adaptive-softmax-cutoff", "8,16"]  # bands [0, 8) [8, 16) [16, 24) of the 24-symbol dictionary


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lstm_lm")
    rng = random.Random(0)
    for split, lines in (("train", 400), ("valid", 60), ("test", 60)):
        with open(root / f"{split}.txt", "w") as f:
            for _ in range(lines):
                start, length = rng.randrange(WORDS), rng.randint(3, 15)
                f.write(" ".join(f"w{(start + i) % WORDS}" for i in range(length)) + "\n")
    cli.call("preprocess", "--only-source", "--trainpref", root / "train.txt", "--validpref", root / "valid.txt",
             "--testpref", root / "test.txt", "--destdir", root / "bin", "--workers", "1")
    return str(root / "bin")


def make_task(data_dir, tokens_per_sample):
    task = BPTTLMTask.setup_task(BPTTLMConfig(data=data_dir, tokens_per_sample=tokens_per_sample))
    for split in ("train", "valid"):
        task.load_dataset(split)
    return task


def tiny(data_dir, *flags, seed=0):
    torch.manual_seed(seed)
    model, _ = build_model(["--arch", "define_awd_lstm_tiny", "--data", data_dir, "--task", "bptt_lm",
                            *map(str, flags)], device="cpu")
    return model


def batches(task, split, rows):
    itr = task.get_batch_iterator(task.dataset(split), max_sentences=rows)
    return list(itr.next_epoch_itr(shuffle=False))


def meta_counts(arch, vocab, *flags):
    model, _ = build_model(["--arch", arch, "--vocab-size", str(vocab), *flags], device="meta")
    assert sum(p.numel() for p in model.parameters()) == count_parts(model)["total"]
    return dict(count_parts(model))


def lstm_count(sizes):
    """PyTorch LSTM parameters of a stack: 4h(in + h) + 8h per layer."""
    return sum(4 * h * (i + h) + 8 * h for i, h in zip(sizes, sizes[1:]))


# ---------------------------------------------------------------------------------------------------- counts
def test_awd_lstm_ptb_count():
    counts = meta_counts("awd_lstm_ptb", 10_000)
    assert counts["total"] == 24_221_600
    assert counts["context"] == lstm_count([400, 1150, 1150, 400]) == 20_211_600
    assert counts["map"] == 10_000 * 400 and counts["output"] == 10_000  # tied table + per-token output bias
    assert counts["define"] == 0


def test_define_awd_lstm_ptb_count():
    counts = meta_counts("define_awd_lstm_ptb", 10_000)
    # unit: spec §2 PTB config weights, + biases (sum of k_l, 256..1024 step 128, + m) + per-group LN (2 k_l / g_l)
    widths, groups = list(range(256, 1025, 128)), [64, 32, 16, 8, 4, 2, 1]
    unit = 2_079_744 + sum(widths) + 400 + sum(2 * k // g for k, g in zip(widths, groups))
    assert counts["define"] == unit == 2_088_208
    assert counts["map"] == 10_000 * 128
    assert counts["output"] == 400 * 128 + 10_000  # m -> n, then the tied Map table + bias
    assert counts["context"] == 20_211_600
    assert counts["total"] == 23_641_008  # the paper's "20M" is not reachable with this context


def test_lstm_wt103_counts():
    counts = meta_counts("lstm_wt103", 267_735)
    assert counts["context"] == lstm_count([256, 1024, 1024, 1024, 256]) == 23_357_440
    # I/O convention of Table 1a: band tables (256, 64, 16, 4 wide), tail projections n_i -> 256 shared by input and
    # output, NO band-0 projection (n == d), and the adaptive softmax head's 3 cluster logits (3 x 256)
    tables = 20_000 * 256 + 20_000 * 64 + 160_000 * 16 + 67_735 * 4
    projections = (64 + 16 + 4) * 256
    assert counts["map"] == tables + projections and counts["output"] == 3 * 256
    assert counts["map"] + counts["output"] == 9_253_212
    assert counts["total"] == 32_610_652  # paper: 32.61M
    with_proj = meta_counts("lstm_wt103", 267_735, "--adaptive-input-band0-proj")  # fairseq's AdaptiveInput
    assert with_proj["map"] - counts["map"] == 256 * 256


def test_define_lstm_wt103_count():
    counts = meta_counts("define_lstm_wt103", 267_735)
    assert counts["map"] + counts["output"] == 9_253_212 and counts["context"] == 23_357_440
    # groups 32, 16, 8; widths 512, 768, 1024 (256 + l * 768 / 3); inputs 256, 512 + 256, 768 + 256
    weights = 256 * 512 // 32 + 768 * 768 // 16 + 1024 * 1024 // 8 + 1024 * 256
    biases = 512 + 768 + 1024 + 256
    norms = 2 * (512 // 32 + 768 // 16 + 1024 // 8)
    assert counts["define"] == weights + biases + norms == 437_120  # paper's unit: 0.41M
    assert counts["total"] == 33_047_772  # paper: 33.02M


def test_tiny_arch_is_small_and_tied(data_dir):
    model = tiny(data_dir)
    decoder = model.decoder
    assert isinstance(model, DefineLSTMLanguageModel)
    assert isinstance(decoder.embed_tokens, DefineEmbedding) and decoder.embed_tokens.unit is not None
    assert isinstance(decoder.output_projection, TiedMapOutput)
    assert decoder.output_projection.weight is decoder.embed_tokens.map.weight
    assert [layer.hidden_size for layer in decoder.lstm.layers] == [64, 32]
    counts = count_parts(model)
    assert counts["context"] == lstm_count([32, 64, 32])
    assert counts["output"] == 32 * 16 + len(decoder.dictionary)


def test_flags_override_the_arch(data_dir):
    V = 24
    plain = tiny(data_dir, "--define-transform", "none", "--define-map-dim", 32, "--lstm-hidden-sizes", "48,40")
    assert plain.decoder.embed_tokens.unit is None and plain.decoder.project_out_dim is None  # n = d = m = 32
    assert [layer.hidden_size for layer in plain.decoder.lstm.layers] == [48, 40, 32]
    counts = count_parts(plain)
    assert counts["define"] == 0 and counts["map"] == V * 32 and counts["output"] == V
    assert counts["context"] == lstm_count([32, 48, 40, 32])

    # d != n: the Map's n -> d projection is tied on the output too (m -> d -> n -> table)
    projected = tiny(data_dir, "--define-input-dim", 24)
    decoder = projected.decoder
    assert decoder.output_projection.proj_weight is decoder.embed_tokens.map_proj.weight
    counts = count_parts(projected)
    assert counts["output"] == 32 * 24 + V and counts["map"] == V * 16 + 16 * 24
    projected.eval()
    tokens = torch.randint(4, 24, (2, 5))
    with torch.no_grad():
        projected.reset_stream_state()
        logits = projected(tokens)[0]
        projected.reset_stream_state()
        features = projected(tokens, features_only=True)[0]  # [B, T, d]
    manual = features @ decoder.embed_tokens.map_proj.weight @ decoder.embed_tokens.map.weight.t()
    torch.testing.assert_close(logits, manual + decoder.output_projection.bias)

    with pytest.raises(ValueError, match="lstm-hidden-sizes"):
        tiny(data_dir, "--lstm-hidden-sizes", "64,x")
    bare = meta_counts("define_lstm_lm", 10_000)  # the bare model name goes through the base architecture
    assert bare["context"] == 20_211_600 and bare["define"] > 0


# ---------------------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("flags", [[], ADAPTIVE], ids=["lookup", "adaptive"])
def test_carried_state_equals_one_long_pass(data_dir, flags):
    """Validation through bptt_lm in blocks of 5 with the carried (h, c) == each row scored in one pass ==
    fairseq-eval-lm's scorer; the training state is left alone."""
    from fairseq_cli.eval_lm import eval_lm

    task = make_task(data_dir, 5)
    model = tiny(data_dir, *flags)
    criterion = CrossEntropyCriterion(task, sentence_avg=False)  # full log-probs, adaptive softmax or not
    samples = batches(task, "valid", rows=3)
    assert len(samples) > 3

    model.train()
    model(samples[0]["net_input"]["src_tokens"])  # leaves a training state behind
    train_state = model.decoder.get_stream_state("train")
    assert train_state is not None
    task.begin_valid_epoch(1, model)
    loss_sum = ntokens = 0
    for s in samples:
        loss, sample_size, _ = task.valid_step(s, model, criterion)
        loss_sum, ntokens = loss_sum + float(loss), ntokens + sample_size
    assert model.decoder.get_stream_state("train") is train_state

    source = torch.cat([s["net_input"]["src_tokens"] for s in samples], dim=1)
    target = torch.cat([s["target"] for s in samples], dim=1)
    model.eval()
    model.reset_stream_state("valid")
    with torch.no_grad():
        out = model(source)
        lprobs = model.get_normalized_probs(out, log_probs=True)
    pad = task.dictionary.pad()
    whole = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)[target.ne(pad)].sum()
    assert ntokens == int(target.ne(pad).sum())
    assert loss_sum == pytest.approx(float(whole), rel=1e-5)

    # without the carried state the blocks score differently (the state matters)
    model.reset_stream_state()
    with torch.no_grad():
        first = model(samples[1]["net_input"]["src_tokens"])
        model.reset_stream_state()
        model(samples[0]["net_input"]["src_tokens"])
        carried = model(samples[1]["net_input"]["src_tokens"])
    assert not torch.allclose(first[0], carried[0])

    model.reset_stream_state()
    itr = task.eval_lm_dataloader(task.dataset("valid"), batch_size=3, num_workers=0)
    result = eval_lm([model], task.source_dictionary, itr, target_dictionary=task.target_dictionary)
    assert result["loss"] == pytest.approx(loss_sum / ntokens / math.log(2), rel=1e-5)


def test_adaptive_loss_agrees_with_the_log_probs_up_to_fairseqs_tail_pad_quirk(data_dir):
    """fairseq's adaptive_loss (and ar_tar_adaptive_loss) scores the adaptive softmax of this model as its
    log-probabilities do, except for fairseq's quirk: the within-band term log p(w | band) of a tail target whose
    index inside its band equals the padding index (tokens cutoff_i + pad) is dropped, because `adaptive_loss`
    applies `ignore_index=padding_idx` to the shifted tail targets too (the cluster term is kept)."""
    task = make_task(data_dir, 6)
    model = tiny(data_dir, *ADAPTIVE)
    model.eval()
    pad = task.dictionary.pad()
    sample = batches(task, "valid", rows=4)[0]
    with torch.no_grad():
        model.reset_stream_state()
        loss, _, _ = AdaptiveLoss(task, sentence_avg=False)(model, sample)
        model.reset_stream_state()
        lprobs = model.get_normalized_probs(model(sample["net_input"]["src_tokens"]), log_probs=True)
    target = sample["target"]
    token_nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    expected = token_nll[target.ne(pad)].sum()
    quirks = 0
    for start, end in ((8, 16), (16, 24)):
        hit = target == start + pad
        quirks += int(hit.sum())
        band_lse = lprobs[..., start:end].logsumexp(-1)  # log p(band)
        expected -= (token_nll - (-band_lse))[hit].sum()  # -log p(w | band) = -log p(w) + log p(band)
    assert quirks > 0
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_training_forward_returns_ar_tar_and_detached_state(data_dir):
    model = tiny(data_dir)
    model.train()
    tokens = torch.randint(4, 24, (3, 7))
    logits, extra = model(tokens)
    assert logits.shape == (3, 7, len(model.decoder.dictionary))
    dropped, raw = extra["ar_tar"]
    assert dropped.shape == raw.shape == (3, 7, 32) and dropped.requires_grad
    state = model.decoder.get_stream_state("train")
    assert len(state) == 2 and not any(t.requires_grad for layer in state for t in layer)
    logits.sum().backward()  # gradients stop at the batch boundary: a second batch backpropagates on its own
    logits2, _ = model(tokens)
    logits2.sum().backward()
    # a batch of another size (independent batches, e.g. the language_modeling task) starts from zeros
    model.eval()
    with torch.no_grad():
        model.reset_stream_state()
        fresh, extra = model(tokens[:2])
        model.reset_stream_state()
        model(tokens)  # a 3-row valid state
        other_size, _ = model(tokens[:2])
    assert "ar_tar" not in extra
    assert torch.allclose(fresh, other_size)
    assert model.decoder.get_stream_state("valid")[0][0].size(1) == 2


def test_embedding_type_dropout_drops_whole_types(data_dir):
    model = tiny(data_dir, "--dropouti", 0, "--dropoute", 0.5, "--define-dropout", 0)
    seen = []
    model.decoder.lstm.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    pad = model.decoder.dictionary.pad()
    tokens = torch.randint(4, 24, (4, 30))
    tokens[0, -3:] = pad
    model.eval()
    with torch.no_grad():
        clean = model.decoder.embed_tokens(tokens)
    torch.manual_seed(1)
    model.train()
    model(tokens)
    x = seen[-1]
    kept = dropped = 0
    for token in tokens.unique().tolist():
        rows, reference = x[tokens == token], clean[tokens == token]
        if token == pad:
            assert rows.abs().max() == 0
        elif rows.abs().max() == 0:
            dropped += 1
        else:
            torch.testing.assert_close(rows, reference / 0.5)  # every occurrence kept, scaled by 1 / (1 - p)
            kept += 1
    assert kept and dropped


# ---------------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("flags", [[], ADAPTIVE], ids=["lookup", "adaptive"])
def test_incremental_decoding_equals_full_forward(data_dir, flags):
    model = tiny(data_dir, *flags)
    model.eval()
    tokens = torch.randint(4, 24, (3, 9))
    tokens[:, 0] = model.decoder.dictionary.eos()
    with torch.no_grad():
        model.reset_stream_state()
        full = model.get_normalized_probs(model(tokens), log_probs=True)
        model.reset_stream_state()
        incremental_state = {}
        order = torch.tensor([2, 0, 1])
        for t in range(1, tokens.size(1) + 1):
            if t == 5:  # beam search reorders the hypotheses: the state follows
                model.decoder.reorder_incremental_state_scripting(incremental_state, order)
                tokens, full = tokens[order], full[order]
            out = model.decoder(tokens[:, :t], incremental_state=incremental_state)
            assert out[0].size(1) == 1  # only the new token is fed once a state exists
            step = model.get_normalized_probs(out, log_probs=True)
            torch.testing.assert_close(step[:, 0], full[:, t - 1], rtol=1e-5, atol=1e-5)
    assert model.decoder.get_stream_state("valid") is None  # incremental decoding leaves the stream alone


@pytest.mark.parametrize("flags", [[], ADAPTIVE], ids=["lookup", "adaptive"])
def test_sequence_generator_beam_scores_match_the_model(data_dir, flags):
    """fairseq's SequenceGenerator (generate / interactive / hub sampling) with beam 3: each hypothesis's positional
    scores are the model's log-probabilities of that hypothesis scored in one pass."""
    from fairseq.sequence_generator import SequenceGenerator

    task = make_task(data_dir, 5)
    model = tiny(data_dir, *flags)
    model.eval()
    model.decoder.embed_tokens.prepare_for_inference()  # as make_generation_fast_: the cached V x m table
    dictionary = task.target_dictionary
    generator = SequenceGenerator([model], dictionary, beam_size=3, max_len_b=8)
    src = torch.tensor([[dictionary.index("w3")], [dictionary.index("w11")]])
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([1, 1])}}
    with torch.no_grad():
        hypos = generator.generate([model], sample, prefix_tokens=src)
        for b, beams in enumerate(hypos):
            assert len(beams) == 3
            assert all(h["tokens"][0] == src[b, 0] for h in beams)
            for h in beams:
                tokens = h["tokens"]
                inputs = torch.cat([torch.tensor([dictionary.eos()]), tokens[:-1]]).unsqueeze(0)
                model.reset_stream_state()
                lprobs = model.get_normalized_probs(model(inputs), log_probs=True)[0]
                expected = lprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
                torch.testing.assert_close(h["positional_scores"][1:], expected[1:], rtol=1e-4, atol=1e-4)


def test_state_dict_round_trip(data_dir):
    model = tiny(data_dir, *ADAPTIVE)
    assert isinstance(model.decoder.embed_tokens.map.embeddings[0][1], IdentityBandProjection)
    state = model.state_dict()
    assert not any(k.startswith("decoder.embed_tokens.map.embeddings.0.1") for k in state)
    other = tiny(data_dir, *ADAPTIVE, seed=1)
    other.load_state_dict(state, strict=True)
    tokens = torch.randint(4, 24, (2, 6))
    model.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[0], other(tokens)[0])


# ---------------------------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_trained_model_uses_its_input(data_dir):
    """A few epochs of Adam on the successor language: the model beats itself with its embedding zeroed (which can
    only learn the unigram / length statistics) on held-back text."""
    task = make_task(data_dir, 16)
    model = tiny(data_dir)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    pad = task.dictionary.pad()
    train = batches(task, "train", rows=8)

    def nll(samples):
        model.eval()
        model.reset_stream_state()
        total = count = 0
        with torch.no_grad():
            for s in samples:
                logits = model(s["net_input"]["src_tokens"])[0]
                total += float(F.cross_entropy(logits.transpose(1, 2), s["target"], ignore_index=pad,
                                               reduction="sum"))
                count += s["ntokens"]
        return total / count

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only add contention
    try:
        for _ in range(6):
            model.train()
            model.reset_stream_state("train")
            for s in train:
                logits, _ = model(s["net_input"]["src_tokens"])
                loss = F.cross_entropy(logits.transpose(1, 2), s["target"], ignore_index=pad)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    valid = batches(task, "valid", rows=4)
    trained = nll(valid)
    handle = model.decoder.embed_tokens.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
    try:
        zeroed = nll(valid)
    finally:
        handle.remove()
    assert trained < math.log(WORDS)  # better than uniform over the words
    assert trained < zeroed - 1.0, (trained, zeroed)


# ---------------------------------------------------------------------------------------------------- CLI
def json_lines(log, key):
    return [json.loads(line.split("| ")[-1]) for line in log.splitlines() if f'"{key}"' in line]


@pytest.mark.slow
def test_cli_train_with_ar_tar_and_nt_asgd_then_eval_lm(data_dir, tmp_path):
    common = [data_dir, "--task", "bptt_lm", "--tokens-per-sample", 12, "--batch-size", 4, "--cpu",
              "--num-workers", 0]
    save = tmp_path / "ckpt"
    log = cli.call("train", *common, "--arch", "define_awd_lstm_tiny", "--criterion", "ar_tar_cross_entropy",
                   "--optimizer", "nt_asgd", "--lr", 5, "--lr-scheduler", "nt_asgd_trigger", "--clip-norm", 0.25,
                   "--max-epoch", 2, "--save-dir", save, "--no-epoch-checkpoints", "--log-format", "json",
                   "--log-interval", 1, "--seed", 1)
    inner = json_lines(log, "ar")
    # AR is positive at every step; TAR (the change of h between steps) can round to 0 at fairseq's 4 decimals
    assert inner and all(float(x["ar"]) > 0 and float(x["tar"]) >= 0 for x in inner)
    assert sum(float(x["tar"]) > 0 for x in inner) > 0.9 * len(inner)
    valid = json_lines(log, "valid_loss")
    assert len(valid) == 2
    losses = [float(v["valid_loss"]) for v in valid]
    assert losses[1] < losses[0] < math.log2(len(open(os.path.join(data_dir, "dict.txt")).readlines()) + 4)
    state = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert "decoder.embed_tokens.unit.layers.0.weight" in state["model"]
    assert state["cfg"]["model"]["_name"] == "define_awd_lstm_tiny"

    out = cli.call("eval_lm", *common, "--path", save / "checkpoint_last.pt", "--gen-subset", "valid")
    line = next(line for line in out.splitlines() if "Loss (base 2)" in line)
    assert float(line.split("Loss (base 2): ")[1].split(",")[0]) == pytest.approx(losses[-1], abs=2e-3)


@pytest.mark.slow
def test_cli_tiny_defaults_train_with_adam(data_dir, tmp_path):
    """The documented minimal command: only the data, the batch size and the run length besides the arch."""
    out = cli.call("train", data_dir, "--task", "bptt_lm", "--arch", "define_awd_lstm_tiny", "--optimizer", "adam",
                   "--lr", "1e-3", "--batch-size", 4, "--max-update", 3, "--save-dir", tmp_path / "ckpt",
                   "--log-format", "json", "--log-interval", 1)
    updates = [int(x["train_num_updates"]) for x in json_lines(out, "train_num_updates")]
    assert updates and updates[-1] == 3
