"""DefineEmbedding v2 inside fairseq: the Table-2 Map's parameter counts, the inference table's lifecycle through
fairseq's own code paths (optimizer, validation, beam search, eval-lm), old checkpoints, and a control that a
broken embedding would fail."""

import os

import pytest
import torch

import fairseq_define.plugin  # noqa: F401  (registers the models in this process)
from fairseq_define.modules.define_embedding import DefineEmbedding
from fairseq_define.modules.tied_map_output import TiedMapOutput
from fairseq_define.modules.define_unit import DefineUnit
from fairseq_define.params import build_model, count_parts
from tests import cli
from tests.conftest import REPO_ROOT, data_dir

V = 300
ADAPTIVE = ["--adaptive-input", "--adaptive-input-cutoff", "50,100", "--adaptive-softmax-cutoff", "50,100",
            "--tie-adaptive-weights", "--tie-adaptive-proj"]


PAPER = ["--define-preset", "paper"]  # the paper's unit (the unit these tests count); a flag given too overrides it


def build(*flags, arch="define_transformer_lm_gpt2_tiny", vocab=V, device="cpu"):
    preset = PAPER if arch.startswith("define_") else []
    model, _ = build_model(["--arch", arch, "--vocab-size", str(vocab), *preset, *map(str, flags)], device=device)
    return model


# parameter counts of every Map x unit combination (gpt2_tiny: m = 64) --------------------------------------------

def adaptive_map(n, d, vocab=V, cutoff=(50, 100), factor=4):
    """fairseq AdaptiveInput(n -> d): band i is (size_i x n/4^i) + (n/4^i x d)."""
    edges, total = (0, *cutoff, vocab), 0
    for band in range(len(edges) - 1):
        width = int(n // factor ** band)
        total += (edges[band + 1] - edges[band]) * width + width * d
    return total


@pytest.mark.parametrize("transform", ["define", "none"])
@pytest.mark.parametrize("n,d", [(32, 32), (32, 64), (16, 48)])
def test_lookup_map_counts(transform, n, d):
    model = build("--define-map-dim", n, "--define-input-dim", d, "--define-transform", transform)
    counts, emb, m = count_parts(model), model.decoder.embed_tokens, 64
    assert counts["map"] == V * n + (n * d if d != n else 0) + (d * m if transform == "none" and d != m else 0)
    assert counts["define"] == (sum(p.numel() for p in emb.unit.parameters()) if transform == "define" else 0)
    assert counts["output"] == (m * d if d != m else 0)  # m -> d; the table and n <-> d projection are shared
    if d != n:
        assert isinstance(model.decoder.output_projection, TiedMapOutput)
    assert counts["total"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("transform", ["define", "none"])
@pytest.mark.parametrize("n,d", [(64, 64), (32, 64), (16, 32)])
def test_adaptive_map_counts(transform, n, d):
    model = build(*ADAPTIVE, "--define-map-dim", n, "--define-input-dim", d, "--define-transform", transform)
    counts, emb, m = count_parts(model), model.decoder.embed_tokens, 64
    assert counts["map"] == adaptive_map(n, d) + (d * m if transform == "none" and d != m else 0)
    assert counts["define"] == (sum(p.numel() for p in emb.unit.parameters()) if transform == "define" else 0)
    # the softmax: m -> d if they differ, band 0's d -> n head projection if they differ, 2 cluster logits
    assert counts["output"] == (m * d if d != m else 0) + (d * n if d != n else 0) + 2 * d


@pytest.mark.parametrize("flags", [ADAPTIVE, []], ids=["adaptive", "lookup"])
def test_transform_none_counts_like_fairseqs_own_model(flags):
    """fairseq can build its tied models only with n = d = m; there the no-unit control must count the same."""
    ours = count_parts(build(*flags, "--define-map-dim", 64, "--define-transform", "none"))
    stock_flags = flags if flags else ["--share-decoder-input-output-embed"]
    theirs = count_parts(build(*stock_flags, arch="transformer_lm_gpt2_tiny"))
    assert ours == theirs


def test_paper_table2_row_shape():
    """n = 64 adaptive lookup projected to d = m = 64 ... the rows of Table 2 differ only by the unit."""
    with_unit = count_parts(build(*ADAPTIVE, "--define-map-dim", 16, "--define-input-dim", 64))
    without = count_parts(build(*ADAPTIVE, "--define-map-dim", 16, "--define-input-dim", 64,
                                "--define-transform", "none"))
    assert with_unit["define"] > 0 and without["define"] == 0
    for part in ("map", "context", "output"):
        assert with_unit[part] == without[part]


# errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,message", [
    (["--decoder-output-dim", 64], "--decoder-output-dim=64 contradicts the output tied to the Map, which scores "
                                   "d=32-dim states"),
    (["--decoder-input-dim", 48], "--decoder-input-dim=48 has no place in a DeFINE model"),
    (["--quant-noise-pq", 0.1], "--quant-noise-pq is not supported by the DeFINE models"),
    (["--define-preset", "paper", "--define-input-dim", 30],
     "--define-input-dim=30 must be divisible by the 4 groups of HGT layer 1"),
])
def test_contradicting_flags_are_one_line_errors(flags, message):
    with pytest.raises(ValueError, match=message):
        build(*flags)


# the inference table through fairseq's code paths ---------------------------------------------------------------

@pytest.fixture()
def unit_rows(monkeypatch):
    """Counts the rows every DefineUnit computes (less the output-scale measurement when a model is built), and
    the inference tables built, in this process."""
    counter = {"rows": 0, "tables": 0, "calibrating": False}
    unit_forward, build_table = DefineUnit.forward, DefineEmbedding.inference_table
    calibrate = DefineEmbedding._calibrate_output_scale

    def counting_forward(self, e):
        counter["rows"] += 0 if counter["calibrating"] else e.shape[0]
        return unit_forward(self, e)

    def flagged_calibrate(self, *args):
        counter["calibrating"] = True
        try:
            return calibrate(self, *args)
        finally:
            counter["calibrating"] = False

    def counting_table(self):
        if self._table is None:
            counter["tables"] += 1
        return build_table(self)

    monkeypatch.setattr(DefineUnit, "forward", counting_forward)
    monkeypatch.setattr(DefineEmbedding, "inference_table", counting_table)
    monkeypatch.setattr(DefineEmbedding, "_calibrate_output_scale", flagged_calibrate)
    return counter


def test_fairseq_optimizer_step_between_two_validation_lookups():
    """fairseq's Adam writes through p.data; the lookup after the step must see the new parameters."""
    from omegaconf import OmegaConf

    from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig

    torch.manual_seed(0)
    model = build()
    emb = model.decoder.embed_tokens
    config = OmegaConf.structured(FairseqAdamConfig(lr=[0.05], tpu=False))
    optimizer = FairseqAdam(config, list(model.parameters()))
    tokens = torch.randint(4, V, (2, 10))
    model.train()
    model(tokens)[0].logsumexp(-1).mean().backward()
    model.eval()
    with torch.no_grad():
        before = emb(tokens)
    optimizer.step()
    with torch.no_grad():
        after = emb(tokens)
        fresh = emb.embed_ids(tokens)
    torch.testing.assert_close(after, fresh, rtol=0, atol=1e-6)
    assert (after - before).abs().max() > 1e-3


def trained_checkpoint(wikitext, save_dir):
    cli.call("train", wikitext, "--task", "language_modeling", "--arch", "define_transformer_lm_gpt2_tiny", *PAPER,
             "--tokens-per-sample", 64, "--max-tokens", 1024, "--optimizer", "adam", "--lr", 0.002, "--cpu",
             "--max-update", 4, "--save-dir", save_dir, "--no-epoch-checkpoints", "--seed", 1)
    return os.path.join(save_dir, "checkpoint_last.pt")


@pytest.fixture(scope="module")
def wikitext(tmp_path_factory):
    return cli.wikitext_slice(data_dir("wikitext-2"), str(tmp_path_factory.mktemp("wt2")))


@pytest.fixture(scope="module")
def checkpoint(wikitext, tmp_path_factory):
    return trained_checkpoint(wikitext, str(tmp_path_factory.mktemp("ckpt")))


@pytest.mark.slow
def test_beam_search_and_scoring_use_one_table(checkpoint, wikitext, unit_rows):
    from fairseq.models.transformer_lm import TransformerLanguageModel

    lm = TransformerLanguageModel.from_pretrained(os.path.dirname(checkpoint), "checkpoint_last.pt",
                                                  data_name_or_path=wikitext, user_dir=cli.PLUGIN)
    vocab = len(lm.task.source_dictionary)
    lm.sample("the game", beam=4, max_len_b=6)
    lm.score("the game is on")
    lm.sample("in the", beam=2, max_len_b=4)
    assert unit_rows["tables"] == 1 and unit_rows["rows"] == vocab  # the unit ran once per vocabulary entry
    assert lm.models[0].decoder.embed_tokens.cache_nbytes == vocab * 64 * 4


@pytest.mark.slow
def test_eval_lm_builds_one_table(checkpoint, wikitext, unit_rows):
    cli.call("eval_lm", wikitext, "--path", checkpoint, "--cpu", "--gen-subset", "valid", "--tokens-per-sample", 16,
             "--max-tokens", 64)
    vocab = sum(1 for _ in open(os.path.join(wikitext, "dict.txt"))) + 4
    assert unit_rows["tables"] == 1 and unit_rows["rows"] == vocab


@pytest.mark.slow
def test_validation_never_builds_a_table(wikitext, tmp_path, unit_rows):
    cli.call("train", wikitext, "--task", "language_modeling", "--arch", "define_transformer_lm_gpt2_tiny", *PAPER,
             "--tokens-per-sample", 16, "--max-tokens", 256, "--optimizer", "adam", "--lr", 0.002, "--cpu",
             "--max-update", 2, "--validate-interval-updates", 1, "--max-valid-steps", 3, "--save-dir", tmp_path,
             "--no-save", "--seed", 1)
    assert unit_rows["tables"] == 0 and unit_rows["rows"] > 0


# checkpoints -----------------------------------------------------------------------------------------------------

def test_version_1_checkpoint_loads_and_scores_identically():
    """tests/fixtures/v1: a tiny LM trained by the v1 code (adaptive Map, before DefineConfig and the output-scale
    buffer), with its log-probs on fixed tokens."""
    from fairseq import checkpoint_utils

    fixture = os.path.join(REPO_ROOT, "tests", "fixtures", "v1")
    expected = torch.load(os.path.join(fixture, "expected.pt"))
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([os.path.join(fixture, "lm_checkpoint.pt")],
                                                                 arg_overrides={"data": fixture})
    model = models[0].eval()
    assert int(model.decoder.embed_tokens.version) == 2
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(expected["lm_tokens"]), log_probs=True)
    torch.testing.assert_close(lprobs, expected["lm_lprobs"], rtol=0, atol=1e-5)


# a control that a broken embedding fails -------------------------------------------------------------------------

def train_and_validate(model, task, zero_embedding, updates=120, seed=0):
    from fairseq.criterions.cross_entropy import CrossEntropyCriterion

    torch.manual_seed(seed)
    if zero_embedding:
        model.decoder.embed_tokens.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    criterion = CrossEntropyCriterion(task, sentence_avg=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = task.get_batch_iterator(task.dataset("train"), max_tokens=1024, seed=seed).next_epoch_itr(shuffle=True)
    model.train()
    for step, sample in zip(range(updates), batches):
        optimizer.zero_grad()
        loss, sample_size, _ = criterion(model, sample)
        (loss / sample_size).backward()
        if step == 0:
            first_grads = {name: 0.0 if p.grad is None else p.grad.abs().sum().item()
                           for name, p in model.named_parameters()}
        optimizer.step()
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for sample in task.get_batch_iterator(task.dataset("valid"), max_tokens=2048).next_epoch_itr(shuffle=False):
            loss, sample_size, _ = criterion(model, sample)
            total, tokens = total + loss.item(), tokens + sample_size
    return total / tokens, first_grads


@pytest.mark.slow
def test_trained_define_model_beats_a_zeroed_embedding(wikitext):
    losses = {}
    for zero in (False, True):
        model, task = build_model(["--data", wikitext, "--arch", "define_transformer_lm_gpt2_tiny", *PAPER,
                                   "--tokens-per-sample", "64"], device="cpu")
        for split in ("train", "valid"):
            task.load_dataset(split)
        losses[zero], grads = train_and_validate(model, task, zero_embedding=zero)
        if not zero:
            emb = model.decoder.embed_tokens
            reached = ["map.weight"] + [f"unit.layers.{i}.weight" for i in range(len(emb.unit.layers))] + \
                      ["unit.reduce.weight"]
            for name in reached:
                assert grads["decoder.embed_tokens." + name] > 0, name
    assert losses[False] < losses[True] - 0.1, losses  # nats per token on held-back text
