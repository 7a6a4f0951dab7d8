import math
import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from fairseq_define.models.define_transformer_lm import DefineTransformerLanguageModel
from fairseq_define.modules.define_embedding import DefineEmbedding
from fairseq_define.params import build_model
from tests import cli
from tests.conftest import data_dir

TINY = ["--arch", "define_transformer_lm_gpt2_tiny", "--define-preset", "paper", "--tokens-per-sample", 64]
TRAIN = TINY + ["--task", "language_modeling", "--max-tokens", 1024, "--optimizer", "adam", "--lr", 0.002,
                "--log-format", "simple", "--log-interval", 10, "--no-epoch-checkpoints", "--cpu", "--seed", 1]
ADAPTIVE = ["--adaptive-input", "--adaptive-input-cutoff", "500,2000", "--adaptive-softmax-cutoff", "500,2000",
            "--tie-adaptive-weights", "--tie-adaptive-proj", "--criterion", "adaptive_loss",
            "--ddp-backend", "legacy_ddp"]


@pytest.fixture(scope="module")
def wikitext(tmp_path_factory):
    return cli.wikitext_slice(data_dir("wikitext-2"), str(tmp_path_factory.mktemp("wt2")))


@pytest.fixture(scope="module")
def trained(wikitext, tmp_path_factory):
    save_dir = str(tmp_path_factory.mktemp("ckpt"))
    return save_dir, cli.call("train", wikitext, *TRAIN, "--max-update", 30, "--save-dir", save_dir)


def last_update(log):
    return max(int(n) for n in re.findall(r"num_updates[ =|]+(\d+)", log))


@pytest.mark.slow
def test_train_builds_define_embedding_and_learns(trained):
    save_dir, log = trained
    assert last_update(log) == 30
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), map_location="cpu")
    assert "decoder.embed_tokens.unit.layers.0.weight" in state["model"]
    losses = [float(x) for x in re.findall(r"train_inner \| .* loss=([\d.]+)", log)]
    assert len(losses) >= 2 and losses[-1] < losses[0]


@pytest.mark.slow
def test_eval_lm_reports_perplexity_below_uniform(trained, wikitext):
    """fairseq-eval-lm as a command line."""
    save_dir, _ = trained
    out = cli.run("eval_lm", wikitext, "--path", os.path.join(save_dir, "checkpoint_last.pt"),
                  "--tokens-per-sample", 64, "--cpu", "--gen-subset", "test", "--max-tokens", 2048)
    ppl = float(re.search(r"Perplexity: ([\d.]+)", out.stdout + out.stderr).group(1))
    vocab = sum(1 for _ in open(os.path.join(wikitext, "dict.txt"))) + 4
    assert 1 < ppl < vocab


@pytest.mark.slow
def test_interactive_samples_a_continuation(trained, wikitext):
    """fairseq-interactive as a command line."""
    save_dir, _ = trained
    out = cli.run("interactive", wikitext, "--task", "language_modeling", "--path",
                  os.path.join(save_dir, "checkpoint_last.pt"), "--cpu", "--beam", 1, "--sampling", "--seed", 3,
                  "--max-len-b", 8, stdin="the game\n")
    hypothesis = [line for line in out.stdout.splitlines() if line.startswith("H-0")]
    assert hypothesis and hypothesis[0].split("\t")[2].startswith("the game ")


@pytest.mark.slow
def test_hub_sample_and_score(trained, wikitext):
    from fairseq.models.transformer_lm import TransformerLanguageModel

    save_dir, _ = trained
    lm = TransformerLanguageModel.from_pretrained(save_dir, "checkpoint_last.pt", data_name_or_path=wikitext,
                                                  user_dir=cli.PLUGIN)
    lm.eval()
    torch.manual_seed(0)
    text = lm.sample("the game", beam=1, sampling=True, sampling_topk=10, min_len=5, max_len_b=8)  # no early </s>
    assert text.startswith("the game") and len(text.split()) > 2
    scored = lm.score("the game is")
    assert scored["positional_scores"].numel() == len(scored["tokens"]) >= 3
    assert torch.isfinite(scored["positional_scores"]).all()
    assert isinstance(lm.models[0].decoder.embed_tokens, DefineEmbedding)


@pytest.mark.slow
def test_resume_continues_the_run(trained, wikitext, tmp_path):
    save_dir, _ = trained
    resumed = str(tmp_path / "resume")
    os.makedirs(resumed)
    import shutil

    shutil.copy(os.path.join(save_dir, "checkpoint_last.pt"), resumed)
    log = cli.call("train", wikitext, *TRAIN, "--max-update", 40, "--save-dir", resumed)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 30 updates\)", log)
    assert last_update(log) == 40


@pytest.mark.slow
def test_adaptive_map_with_tied_adaptive_softmax_trains(wikitext, tmp_path):
    assert last_update(cli.call("train", wikitext, *TRAIN, *ADAPTIVE, "--max-update", 5, "--save-dir", tmp_path)) == 5
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu")["model"]
    assert "decoder.project_out_dim.weight" in state and state["decoder.project_out_dim.weight"].shape == (32, 64)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_gloo_training(wikitext, tmp_path):
    """Two CPU processes, one per rank (README: "Distributed training on CPU"): each rank reads its own shard of
    batches, gradients are all-reduced, so an update sees world_size x max-tokens and rank 0 saves the checkpoint."""
    port = free_port()
    common = [wikitext, *TRAIN, "--max-update", 6, "--save-dir", tmp_path, "--distributed-backend", "gloo",
              "--ddp-backend", "legacy_ddp", "--distributed-no-spawn", "--distributed-world-size", 2,
              "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--user-dir", cli.PLUGIN]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen([sys.executable, "-m", "fairseq_cli.train", *map(str, common),
                               "--distributed-rank", str(rank)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for rank in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert last_update(logs[0]) == 6
    wpb = [float(x) for x in re.findall(r"wpb[ =]+([\d.]+)", logs[0])]
    assert wpb and max(wpb) > 1024  # two ranks' batches per update
    assert os.path.exists(tmp_path / "checkpoint_last.pt")


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--define-map-dim", 100, "--define-max-groups", 8], "--define-map-dim=100 must be divisible by the 8 groups"),
        (["--define-max-groups", 6], "--define-max-groups=6 must be a power of two"),
        (["--define-expand-dim", 16], "--define-expand-dim=16 must be >= the unit's input width 32 (--define-map-dim)"),
        (["--define-norm", "bn"], "argument --define-norm: invalid choice: 'bn'"),
    ],
)
def test_bad_define_values_give_a_one_line_error_naming_the_flag(wikitext, tmp_path, flags, expected, capsys):
    """fairseq-train's last line of stderr: the exception's one-line message (or argparse's error)."""
    with pytest.raises((ValueError, SystemExit)) as error:
        cli.call("train", wikitext, *TRAIN, *flags, "--max-update", 1, "--save-dir", tmp_path)
    if error.type is SystemExit:  # argparse printed its error and exited
        assert error.value.code != 0
        last_line = [line for line in capsys.readouterr().err.splitlines() if line.strip()][-1]
    else:
        last_line = str(error.value)
        assert "\n" not in last_line
    assert expected in last_line, last_line


def build(*flags, vocab=200):
    model, task = build_model(["--arch", "define_transformer_lm_gpt2_tiny", "--define-preset", "paper",
                               "--vocab-size", str(vocab),
                               *map(str, flags)], device="cpu")
    return model


SMALL_ADAPTIVE = ["--adaptive-input", "--adaptive-input-cutoff", "50,100", "--adaptive-softmax-cutoff", "50,100",
                  "--tie-adaptive-weights", "--tie-adaptive-proj"]


@pytest.mark.parametrize("flags", [[], SMALL_ADAPTIVE], ids=["lookup", "adaptive"])
def test_incremental_decoding_equals_full_forward(flags):
    torch.manual_seed(0)
    model = build(*flags)
    model.eval()
    tokens = torch.randint(4, 200, (2, 12))
    with torch.no_grad():
        full, _ = model(tokens)
        state = {}
        steps = [model.decoder(tokens[:, : t + 1], incremental_state=state)[0] for t in range(tokens.shape[1])]
    incremental = torch.cat(steps, dim=1)
    assert (incremental - full).abs().max() <= 1e-5


def test_lookup_map_output_is_scored_against_the_map_table():
    model = build()
    decoder = model.decoder
    assert isinstance(model, DefineTransformerLanguageModel)
    assert decoder.output_projection.weight is decoder.embed_tokens.weight
    assert decoder.project_out_dim.weight.shape == (32, 64)  # m -> n


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--define-transform", "define"], ["--define-reduce-skip", "--define-dropout", 0.1],
                                   ["--define-transform", "none"],
                                   ["--define-transform", "hgt", "--define-map-dropout", 0.1]],
                         ids=["define", "reduce-skip-dropout", "none", "hgt-map-dropout"])
def test_unit_options_train_on_real_data(wikitext, tmp_path, flags):
    assert last_update(cli.call("train", wikitext, *TRAIN, *flags, "--max-update", 3, "--save-dir", tmp_path)) == 3
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu")["model"]
    has_unit = "none" not in flags
    assert ("decoder.embed_tokens.unit.reduce.weight" in state) == has_unit


def test_bare_arch_goes_through_base_architecture():
    model, _ = build_model(["--arch", "define_transformer_lm", "--vocab-size", "200", "--decoder-embed-dim", "64",
                            "--decoder-layers", "1", "--decoder-attention-heads", "2", "--define-map-dim", "32",
                            "--define-expand-dim", "64", "--define-preset", "paper"], device="cpu")
    assert model.decoder.project_out_dim is None  # decoder_output_dim follows --decoder-embed-dim
    assert model.decoder.output_projection.weight.shape == (200, 64)
    assert math.isclose(model.decoder.embed_scale, 8.0)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--define-map-dropout", 0.1, "--define-dropout", 0.1],
                                   ["--define-residual", "--define-unit-lr-scale", "fan-in"]],
                         ids=["authors-dropouts", "authors-residual-fan-in"])
def test_authors_unit_trains_reloads_and_scores(wikitext, tmp_path, flags):
    authors = ["--define-transform", "authors", "--define-max-groups", "2", "--define-activation", "swish"]
    out = cli.run("train", wikitext, *TRAIN, *authors, *flags, "--max-update", 3, "--save-dir", tmp_path)
    assert last_update(out.stdout + out.stderr) == 3
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu")["model"]
    assert "decoder.embed_tokens.unit.output_layer.weight" in state or \
        "decoder.embed_tokens.unit.output_layer.parametrizations.weight.original" in state
    assert ("decoder.embed_tokens.gate" in state) == ("--define-residual" in flags)
    out = cli.run("eval_lm", wikitext, "--path", tmp_path / "checkpoint_last.pt", "--tokens-per-sample", 64, "--cpu",
                  "--gen-subset", "valid", "--max-tokens", 2048)
    assert float(re.search(r"Perplexity: ([\d.]+)", out.stdout + out.stderr).group(1)) > 1
