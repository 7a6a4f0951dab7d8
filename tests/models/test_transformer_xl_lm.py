"""define_transformer_xl: parameter counts of the paper's rows, tying, memory through bptt_lm, incremental
decoding, the define_bptt_nll criterion, and the fairseq CLI (train, eval-lm with and without memory)."""

import json
import math
import os
import random
import re

import pytest
import torch
from fairseq.criterions.cross_entropy import CrossEntropyCriterion
from fairseq.sequence_generator import SequenceGenerator

import fairseq_define.plugin  # noqa: F401
from fairseq_define.criterions.bptt_nll import BPTTNLLCriterion
from fairseq_define.models import transformer_xl_lm  # noqa: F401  (registers the model and archs)
from fairseq_define.params import build_model, count_parts
from tests import cli

WT103_V = 267_735


def tiny(*flags, vocab=300, seed=0, dtype=torch.float64):
    """The tiny arch on a `vocab`-symbol dictionary (bptt_lm task), in eval mode, in double precision."""
    torch.manual_seed(seed)
    argv = ["--arch", "define_transformer_xl_tiny", "--task", "bptt_lm", "--vocab-size", str(vocab),
            "--tokens-per-sample", "6", *map(str, flags)]
    model, task = build_model(argv, device="cpu")
    return model.to(dtype).eval(), task


def random_tokens(task, B, T, seed=1):
    d = task.target_dictionary
    g = torch.Generator().manual_seed(seed)
    return torch.randint(d.nspecial, len(d), (B, T), generator=g)


# ---------------------------------------------------------------- parameter counts (paper §5, meta device)
def counts(*flags):
    model, _ = build_model([*flags, "--vocab-size", str(WT103_V)], device="meta")
    return count_parts(model)


def test_context_of_the_d_model_384_model():
    c = counts("--arch", "define_transformer_xl_wt103", "--define-preset", "paper")  # Table 2's unit
    assert c["context"] == 36_250_420
    assert c["define"] == 2_097_204  # N = 3, k = 4096, d = 384 -> m = 384 at g_max = 128 (paper: 1.92M)
    # Map: V x 128 table + 128 -> 384; output: bias [V], 3 cluster logits, the head band's own 384 -> 128
    assert c["map"] == WT103_V * 128 + 128 * 384
    assert c["output"] == WT103_V + 3 * 128 + 3 + 384 * 128


def test_adaptive_input_baseline_n_384_total():
    c = counts("--arch", "define_transformer_xl_wt103", "--define-transform", "none", "--define-map-dim", "384")
    assert c["total"] == 139_329_550
    assert c["context"] == 36_250_420 and c["define"] == 0
    assert c["output"] == WT103_V + 3 * 384 + 3  # n == d: no projections, the table is tied


def test_standard_transformer_xl_wt103_total():
    c = counts("--arch", "transformer_xl_wt103")
    assert c["total"] == 151_107_538
    assert c["context"] == 16 * (410 * 3 * 410 + 2 * 410 * 410 + 2 * 410 * 2100 + 2100 + 410 + 4 * 410) + 2 * 410
    assert c["map"] == WT103_V * 410


def test_parts_add_up_and_the_context_is_exactly_the_stack():
    model, _ = build_model(["--arch", "define_transformer_xl_wt103", "--vocab-size", "30000"], device="meta")
    c = count_parts(model)
    assert c["total"] == sum(p.numel() for p in model.parameters())
    assert c["context"] == sum(p.numel() for p in model.decoder.xl.parameters())
    assert c["define"] == sum(p.numel() for p in model.decoder.embed_tokens.unit.parameters())


# ---------------------------------------------------------------- tying
def test_softmax_is_tied_to_the_map_table_and_projection():
    model, _ = tiny("--adaptive-cutoff", "50,120")
    emb, softmax = model.decoder.embed_tokens, model.decoder.adaptive_softmax
    assert softmax.weight is emb.map.weight  # the table itself, [V, n]
    assert softmax.proj is emb.map_proj.weight  # n -> d input map, used transposed (d -> n) at the output
    assert softmax.tie_projs == [False, True, True] and list(softmax.own_projs.keys()) == ["0"]
    assert softmax.bounds == [0, 50, 120, 300]
    model, _ = tiny("--adaptive-cutoff", "50,120", "--tie-head-proj")
    assert model.decoder.adaptive_softmax.tie_projs == [True, True, True]
    assert len(model.decoder.adaptive_softmax.own_projs) == 0
    model, _ = tiny("--define-transform", "none", "--define-map-dim", "64")  # n == d == m: nothing to project
    assert model.decoder.adaptive_softmax.band_projection(0) is None
    assert model.decoder.embed_tokens.map_proj is None and model.decoder.project_out_dim is None


def test_cutoffs_beyond_the_vocabulary_are_dropped_and_d_neq_m_projects_out():
    model, _ = tiny()  # the tiny defaults 2000,10000 on 300 symbols: one softmax
    assert model.decoder.adaptive_softmax.bounds == [0, 300]
    model, _ = tiny("--adaptive-cutoff", "100,5000", "--define-input-dim", "48")
    assert model.decoder.adaptive_softmax.bounds == [0, 100, 300]
    assert tuple(model.decoder.project_out_dim.weight.shape) == (48, 64)  # m -> d
    assert tuple(model.decoder.adaptive_softmax.proj.shape) == (48, 32)


def test_scaled_embedding_and_normalized_probs():
    model, task = tiny("--adaptive-cutoff", "50,120", "--define-preset", "paper")  # a unit the host scales
    tokens = random_tokens(task, 2, 5)
    dec = model.decoder
    assert dec.embed_scale == pytest.approx(8.0)
    assert torch.allclose(dec.embed(tokens), dec.embed_tokens(tokens) * 8.0)
    assert tiny("--no-scale-embedding", "--define-preset", "paper")[0].decoder.embed_scale == 1.0
    assert tiny()[0].decoder.embed_scale == 1.0  # the default, the recommended unit: its output enters as it is
    with torch.no_grad():
        out = model(tokens)
        assert out[0].shape == (2, 5, 64)  # d-dim features; the softmax is applied by get_normalized_probs
        lprobs = model.get_normalized_probs(out, log_probs=True)
        probs = model.get_normalized_probs(out, log_probs=False)
    assert lprobs.shape == (2, 5, 300)
    assert torch.allclose(lprobs.exp().sum(-1), torch.ones(2, 5, dtype=lprobs.dtype))
    assert torch.allclose(probs, lprobs.exp())


def test_state_dict_round_trip():
    model, task = tiny("--adaptive-cutoff", "50,120", seed=0)
    other, _ = tiny("--adaptive-cutoff", "50,120", seed=1)
    tokens = random_tokens(task, 2, 5)
    other.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(model(tokens)[0], other(tokens)[0])
    assert other.decoder.adaptive_softmax.weight is other.decoder.embed_tokens.map.weight  # still tied


# ---------------------------------------------------------------- memory (bptt_lm contract)
def test_stream_memory_continues_the_previous_batch():
    """Two segments of T with mem_len >= T == one pass over 2T; state per mode, reset by reset_stream_state."""
    model, task = tiny("--mem-len", "6")
    tokens = random_tokens(task, 3, 12)
    with torch.no_grad():
        whole = model(tokens)[0]
        model.reset_stream_state()
        first = model(tokens[:, :6])[0]
        second = model(tokens[:, 6:])[0]
        assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-10)
        mems = model.decoder.get_stream_state("valid")
        assert len(mems) == 2 and mems[0].shape == (3, 6, 64) and not mems[0].requires_grad
        assert model.decoder.get_stream_state("train") is None  # eval mode only touched "valid"
        again = model(tokens[:, 6:])[0]  # continues the memory: differs from a fresh start
        model.reset_stream_state("valid")
        fresh = model(tokens[:, 6:])[0]
    assert not torch.allclose(again, second)
    assert not torch.allclose(fresh, whole[:, 6:])  # without memory the second segment sees less
    model.train()
    model(tokens[:, :6])[0].sum().backward()  # training state stored detached
    assert model.decoder.get_stream_state("train")[0].grad_fn is None
    model.reset_stream_state()
    assert model.decoder.get_stream_state("train") is None and model.decoder.get_stream_state("valid") is None


def test_mem_len_zero_keeps_no_state():
    model, task = tiny("--mem-len", "0")
    tokens = random_tokens(task, 2, 8)
    with torch.no_grad():
        a = model(tokens)[0]
        b = model(tokens)[0]
    assert model.decoder.get_stream_state() is None and torch.equal(a, b)


# ---------------------------------------------------------------- incremental decoding
@pytest.mark.parametrize("flags", [[], ["--same-length", "--mem-len", "8"], ["--decoder-normalize-before",
                                                                           "--untie-r", "--clamp-len", "3"]])
def test_incremental_decoding_equals_the_full_forward(flags):
    model, task = tiny("--adaptive-cutoff", "50,120", *flags)
    tokens = random_tokens(task, 2, 10)
    with torch.no_grad():
        full = model(tokens)[0]
        assert model.decoder.get_stream_state() is not None
        stream_before = model.decoder.get_stream_state()
        state = {}
        steps = [model(tokens[:, :t + 1], incremental_state=state)[0][:, -1] for t in range(10)]
        assert torch.allclose(torch.stack(steps, 1), full, atol=1e-10)
        state = {}  # a prefix at once, then one token at a time
        head = model(tokens[:, :4], incremental_state=state)[0]
        tail = [model(tokens[:, :t + 1], incremental_state=state)[0] for t in range(4, 10)]
        assert torch.allclose(torch.cat([head] + tail, 1), full, atol=1e-10)
    assert model.decoder.get_stream_state() is stream_before  # incremental calls leave the stream alone


def test_incremental_memory_is_a_window_of_mem_len_plus_tokens_per_sample():
    model, task = tiny("--mem-len", "2")  # tokens_per_sample 6: each step sees at most 8 keys
    L, W = 14, 8
    tokens = random_tokens(task, 2, L)
    dec = model.decoder
    p, j = torch.arange(L)[:, None], torch.arange(L)[None, :]
    band = (j > p) | (j <= p - W)
    with torch.no_grad():
        h, _ = dec.xl(dec.embed(tokens), None, attn_mask=band)
        expected = dec.features(h)
        state = {}
        steps = [model(tokens[:, :t + 1], incremental_state=state)[0][:, -1] for t in range(L)]
    assert torch.allclose(torch.stack(steps, 1), expected, atol=1e-10)
    assert state and all(m.size(1) == W - 1 for k, m in next(iter(state.values())).items() if k != "seen")


@pytest.mark.parametrize("beam", [1, 3])
def test_sequence_generator_scores_equal_the_full_forward(beam):
    """fairseq's SequenceGenerator (incremental, with reordering for beams): each hypothesis' positional scores
    are the full forward's log-probabilities of its tokens."""
    model, task = tiny("--adaptive-cutoff", "50,120", dtype=torch.float32)
    d = task.target_dictionary
    prefix = random_tokens(task, 2, 3)
    sample = {"net_input": {"src_tokens": prefix, "src_lengths": torch.tensor([3, 3])}}
    generator = SequenceGenerator([model], d, beam_size=beam, max_len_b=9, min_len=9)
    hypos = generator.generate([model], sample, prefix_tokens=prefix)
    for b in range(2):
        for hypo in hypos[b]:
            out = hypo["tokens"]
            assert torch.equal(out[:3], prefix[b])
            source = torch.cat([torch.tensor([d.eos()]), out[:-1]])[None]
            with torch.no_grad():
                model.reset_stream_state()
                lprobs = model.get_normalized_probs(model(source), log_probs=True)[0]
            expected = lprobs.gather(1, out[:, None]).squeeze(1)
            assert torch.allclose(hypo["positional_scores"], expected, atol=1e-4)


# ---------------------------------------------------------------- criterion
def test_bptt_nll_equals_cross_entropy_without_full_log_probs(monkeypatch):
    model, task = tiny("--adaptive-cutoff", "50,120")
    pad = task.target_dictionary.pad()
    tokens = random_tokens(task, 3, 7)
    target = random_tokens(task, 3, 7, seed=2)
    target[2, 4:] = pad  # bptt_lm pads the ends of short rows
    sample = {"net_input": {"src_tokens": tokens, "src_lengths": target.ne(pad).sum(1)}, "target": target,
              "ntokens": int(target.ne(pad).sum()), "nsentences": 3}
    with torch.no_grad():
        ce_loss, ce_size, ce_log = CrossEntropyCriterion(task, sentence_avg=False)(model, sample)
        model.reset_stream_state()
        criterion = BPTTNLLCriterion(task, sentence_avg=False)

        def refuse(*args, **kwargs):
            raise AssertionError("define_bptt_nll built the full [B, T, V] log-probabilities")

        monkeypatch.setattr(model.decoder.adaptive_softmax, "log_prob", refuse)
        loss, size, log = criterion(model, sample)
        model.reset_stream_state()
        per_token, _, _ = criterion(model, sample, reduce=False)
    assert size == ce_size == sample["ntokens"] == 18
    assert float(loss) == pytest.approx(float(ce_loss), rel=1e-10)
    assert per_token.shape == (21,) and torch.all(per_token.view(3, 7)[2, 4:] == 0)
    assert float(per_token.sum()) == pytest.approx(float(loss), rel=1e-10)


def test_bptt_nll_logs_base_2_loss_and_ppl():
    from fairseq.logging import metrics

    logs = [{"loss": torch.tensor(10.0), "nll_loss": torch.tensor(10.0), "ntokens": 5, "sample_size": 5},
            {"loss": torch.tensor(4.0), "nll_loss": torch.tensor(4.0), "ntokens": 2, "sample_size": 2}]
    with metrics.aggregate() as agg:
        BPTTNLLCriterion.reduce_metrics(logs)
        values = agg.get_smoothed_values()
    assert values["loss"] == pytest.approx(2.0 / math.log(2), abs=1e-3)
    assert values["nll_loss"] == pytest.approx(2.0 / math.log(2), abs=1e-3)
    assert values["ppl"] == pytest.approx(math.e ** 2, abs=0.05)


# ---------------------------------------------------------------- fairseq command line
def binarize(root, splits):
    for split, lines in splits.items():
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    cli.call("preprocess", "--only-source", "--trainpref", os.path.join(root, "train.txt"), "--validpref",
             os.path.join(root, "valid.txt"), "--destdir", os.path.join(root, "bin"), "--workers", 1)
    return os.path.join(root, "bin")


def valid_losses(log):
    return [float(json.loads(line.split("| ")[-1])["valid_loss"]) for line in log.splitlines()
            if '"valid_loss"' in line]


def eval_lm_loss(data, checkpoint, *flags):
    out = cli.call("eval_lm", data, "--task", "bptt_lm", "--path", checkpoint, "--gen-subset", "valid", "--cpu",
                   "--num-workers", 0, *flags)
    return float(re.search(r"Loss \(base 2\): ([\d.]+)", out).group(1))


TRAIN = ["--task", "bptt_lm", "--arch", "define_transformer_xl_tiny", "--optimizer", "adam", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def periodic(tmp_path_factory):
    """A tiny repetitive corpus: the same 37 words (6 types) on every line. Inside a segment of 8 a position is
    ambiguous until a few words have been seen; with memory every position is predictable."""
    root = str(tmp_path_factory.mktemp("xl_periodic"))
    rng = random.Random(0)
    line = " ".join(rng.choice([f"w{i}" for i in range(6)]) for _ in range(37))
    data = binarize(root, {"train": [line] * 110, "valid": [line] * 12})
    save = os.path.join(root, "ckpt")
    log = cli.call("train", data, *TRAIN, "--tokens-per-sample", 8, "--batch-size", 4, "--max-epoch", 2,
                   "--save-dir", save, "--no-epoch-checkpoints", "--cpu", "--num-workers", 0, "--seed", 1,
                   "--log-format", "json", "--log-interval", 50)
    return data, os.path.join(save, "checkpoint_last.pt"), log


@pytest.mark.slow
def test_cli_trains_and_eval_lm_memory_lowers_perplexity(periodic):
    data, checkpoint, log = periodic
    updates = max(int(n) for n in re.findall(r'"train_num_updates": "?(\d+)', log))
    assert updates == 2 * math.ceil(math.ceil(110 * 38 / 4) / 8)  # 2 epochs of blocks of 8 columns of 4 rows
    valid = valid_losses(log)
    assert len(valid) == 2 and valid[1] < valid[0] < math.log2(6)
    common = ["--tokens-per-sample", 8, "--batch-size", 4]
    with_memory = eval_lm_loss(data, checkpoint, *common)
    without = eval_lm_loss(data, checkpoint, *common, "--model-overrides", "{'mem_len': 0}")
    assert with_memory == pytest.approx(valid[-1], abs=2e-3)  # eval-lm == the trainer's validation
    assert 2 ** with_memory < 0.5 * 2 ** without  # memory at least halves the perplexity here


@pytest.mark.slow
def test_cli_trains_with_the_defaults_bands_and_define_bptt_nll(tmp_path):
    """Default --tokens-per-sample (150), a vocabulary with the tiny arch's first band (2000), define_bptt_nll:
    logs ppl, and eval-lm (full softmax through get_normalized_probs) reproduces its validation loss."""
    rng = random.Random(1)
    words = [f"v{i}" for i in range(2600)]
    weights = [1.0 / (i + 1) for i in range(len(words))]
    lines = {split: [" ".join(rng.choices(words, weights, k=rng.randint(5, 25))) for _ in range(count)]
             for split, count in (("train", 400), ("valid", 60))}
    lines["train"].append(" ".join(words))  # every word in the dictionary
    data = binarize(str(tmp_path), lines)
    save = tmp_path / "ckpt"
    log = cli.call("train", data, *TRAIN, "--criterion", "define_bptt_nll", "--batch-size", 2, "--max-update", 3,
                   "--save-dir", save, "--no-epoch-checkpoints", "--cpu", "--num-workers", 0, "--seed", 1,
                   "--log-format", "json", "--log-interval", 1, "--disable-validation")
    assert "cutoffs=[2000]" in log  # 2000 kept, 10000 dropped: a two-band softmax
    inner = [json.loads(line.split("| ")[-1]) for line in log.splitlines()
             if '"loss"' in line and '"ppl"' in line and '"num_updates"' in line]  # train_inner lines
    assert inner and all(float(x["ppl"]) == pytest.approx(2 ** float(x["loss"]), rel=2e-2) for x in inner)
    assert float(inner[0]["loss"]) > 8  # about log2(V) at the start
    loss = eval_lm_loss(data, save / "checkpoint_last.pt", "--tokens-per-sample", 150, "--batch-size", 2)
    assert 0 < loss < math.log2(2604) + 1


@pytest.mark.slow
def test_cli_interactive_samples_with_incremental_memory(periodic):
    """fairseq-interactive (the LM sampling path of fairseq's tools, here with --task language_modeling; with
    --task bptt_lm in the next test) decodes incrementally with beam 2; its printed positional scores (base 2)
    equal the full forward of the same tokens."""
    from fairseq import checkpoint_utils

    data, checkpoint, _ = periodic
    prompt = open(os.path.join(os.path.dirname(data), "valid.txt")).readline().split()[:5]
    out = cli.call("interactive", data, "--task", "language_modeling", "--path", checkpoint, "--cpu", "--beam", 2,
                   "--max-len-b", 16, stdin=" ".join(prompt) + "\n")
    lines = out.splitlines()
    words = next(line for line in lines if line.startswith("H-0")).split("\t")[2].split()
    scores = torch.tensor([float(x) for x in next(line for line in lines if line.startswith("P-0")).split("\t")[1]
                           .split()])
    assert words[:5] == prompt and len(words) > 5 and len(scores) == len(words) + 1  # + the final eos
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint])
    model, d = models[0].eval(), task.target_dictionary
    ids = torch.tensor([d.index(w) for w in words] + [d.eos()])
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(torch.cat([ids.new_tensor([d.eos()]), ids[:-1]])[None]),
                                            log_probs=True)[0]
    expected = lprobs.gather(1, ids[:, None]).squeeze(1) / math.log(2)  # interactive prints base 2
    assert torch.allclose(expected, scores, atol=2e-4)


def interactive_hypothesis(data, checkpoint, task, prompt):
    out = cli.call("interactive", data, "--task", task, "--path", checkpoint, "--cpu", "--beam", 2, "--max-len-b", 16,
                   stdin=" ".join(prompt) + "\n")
    lines = out.splitlines()
    return (next(line for line in lines if line.startswith("H-0")).split("\t")[1:],
            next(line for line in lines if line.startswith("P-0")).split("\t")[1])


@pytest.mark.slow
def test_interactive_and_hub_sample_with_the_bptt_lm_task(periodic):
    """With `--task bptt_lm` (the checkpoint's own task), fairseq-interactive builds its prompts with the task's
    build_dataset_for_inference / inference_step and gives the same hypothesis and scores as with
    language_modeling; the hub interface (`from_pretrained(...).sample`) decodes the same beam and samples, and
    generation leaves the stream memory alone."""
    from fairseq_define.models.transformer_xl_lm import TransformerXLLanguageModel

    data, checkpoint, _ = periodic
    prompt = open(os.path.join(os.path.dirname(data), "valid.txt")).readline().split()[:5]
    bptt = interactive_hypothesis(data, checkpoint, "bptt_lm", prompt)
    assert bptt == interactive_hypothesis(data, checkpoint, "language_modeling", prompt)
    (score, text), positional = bptt
    assert text.split()[:5] == prompt and len(text.split()) > 5

    hub = TransformerXLLanguageModel.from_pretrained(os.path.dirname(checkpoint), os.path.basename(checkpoint),
                                                     data, user_dir=cli.PLUGIN)
    assert type(hub.task).__name__ == "BPTTLMTask"
    assert hub.sample(" ".join(prompt), beam=2, max_len_b=16) == text
    torch.manual_seed(0)
    sampled = hub.sample([" ".join(prompt)] * 2, beam=1, sampling=True, sampling_topk=3, max_len_b=10)
    assert len(sampled) == 2 and all(s.split()[:5] == prompt and len(s.split()) > 5 for s in sampled)
    assert hub.models[0].decoder.get_stream_state("valid") is None  # incremental decoding: no stream state
