"""fairseq-define-export: small trained DeFINE models exported to stock fairseq checkpoints, then used by stock
fairseq in a fresh interpreter that never imports the plugin (no --user-dir): same eval-lm perplexity, same
generate hypotheses and BLEU, same hub scores as the original with the plugin (run in-process)."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from fairseq_define import export
from fairseq_define.params import build_model
from tests import cli
from tests.conftest import data_dir
from tests.test_params import run_installed

LM = ["--task", "language_modeling", "--arch", "define_transformer_lm_gpt2_tiny", "--tokens-per-sample", 64]
TRAIN = ["--max-tokens", 1024, "--optimizer", "adam", "--lr", 0.003, "--log-format", "simple", "--cpu", "--seed", 1,
         "--no-epoch-checkpoints", "--no-save-optimizer-state", "--disable-validation", "--max-update", 8]
ADAPTIVE = ["--adaptive-input", "--adaptive-input-cutoff", "500,2000", "--adaptive-softmax-cutoff", "500,2000",
            "--tie-adaptive-weights", "--tie-adaptive-proj", "--criterion", "adaptive_loss",
            "--ddp-backend", "legacy_ddp"]
LOOKUP_D_NE_N = ["--define-map-dim", 32, "--define-input-dim", 48]  # scored against the Map through P^T
MT = ["--task", "translation", "--arch", "define_transformer_tiny", "--share-all-embeddings", "--define-map-dim", 32,
      "--define-input-dim", 64, "--define-expand-dim", 128, "--encoder-layers", 1, "--decoder-layers", 1,
      "--encoder-ffn-embed-dim", 128, "--decoder-ffn-embed-dim", 128, "--encoder-attention-heads", 2,
      "--decoder-attention-heads", 2, "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", 0.1]
GENERATE = ["--gen-subset", "test", "--beam", 4, "--cpu", "--max-tokens", 2048, "--required-batch-size-multiple", 1,
            "--max-len-a", 1.2, "--max-len-b", 10]

# Runs in a fresh interpreter: a fairseq_cli tool (argv: tool, args...) or a hub snippet (argv: "-c", code), then
# reports whether anything imported the plugin.
STOCK_RUNNER = """
import runpy, sys
tool, rest = sys.argv[1], sys.argv[2:]
try:
    if tool == "-c":
        exec(rest[0])
    else:
        sys.argv = [tool] + rest
        runpy.run_module("fairseq_cli." + tool, run_name="__main__")
finally:
    print("PLUGIN_IMPORTED=%s" % ("fairseq_define" in sys.modules), flush=True)
"""

# fairseq 0.12's TokenBlockDataset (LM hub scoring) uses np.compat.long, gone in numpy 2: a stock-fairseq issue that
# the plugin's compat shim fixes for its users; a plugin-free consumer needs the same line (docs/export.md)
NUMPY_COMPAT = "import numpy, types\nnumpy.compat = getattr(numpy, 'compat', types.SimpleNamespace(long=numpy.int64))\n"


def stock(tmp_dir, tool, *args):
    """stdout + stderr of `tool` run by stock fairseq: a fresh interpreter, cwd outside the repository, no
    PYTHONPATH, no --user-dir; fails if the plugin was imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONWARNINGS"] = "ignore"
    out = subprocess.run([sys.executable, "-c", STOCK_RUNNER, tool, *map(str, args)], cwd=tmp_dir, env=env,
                         capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "PLUGIN_IMPORTED=False" in log, log[-3000:]
    return log


def parse(tool, argv):
    """fairseq's config for `tool` (train, eval_lm, generate) from its command line, with the plugin registered."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_define.plugin  # noqa: F401

    parser = {"train": options.get_training_parser, "eval_lm": options.get_eval_lm_parser,
              "generate": options.get_generation_parser}[tool]()
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, [str(a) for a in argv]))


def train(data, save_dir, *flags):
    """fairseq-train in-process (with the plugin); returns the last checkpoint's path."""
    from fairseq_cli import train as fairseq_train

    fairseq_train.main(parse("train", [data, *flags, "--save-dir", save_dir]))
    return os.path.join(save_dir, "checkpoint_last.pt")


def exported(checkpoint, out_dir, capsys):
    """Run fairseq-define-export IN OUT; returns (OUT, the printed report)."""
    out = os.path.join(out_dir, "exported.pt")
    capsys.readouterr()
    export.main([checkpoint, out])
    return out, capsys.readouterr().out


def first_lines(path, count):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()][:count]


@pytest.fixture(scope="module")
def wikitext(tmp_path_factory):
    return cli.wikitext_slice(data_dir("wikitext-2"), str(tmp_path_factory.mktemp("wt2")), lines=(400, 60, 60))


@pytest.fixture(scope="module")
def multi30k(tmp_path_factory):
    source, root = data_dir("multi30k"), tmp_path_factory.mktemp("m30k")
    for split, name, count in (("train", "train", 600), ("valid", "val", 40), ("test", "test_2016_flickr", 40)):
        for lang in ("de", "en"):
            lines = first_lines(os.path.join(source, f"{name}.{lang}"), count)
            (root / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    binary = str(root / "bin")
    cli.run("preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", root / "train", "--validpref",
            root / "valid", "--testpref", root / "test", "--destdir", binary, "--joined-dictionary",
            "--thresholdsrc", 2, "--thresholdtgt", 2, "--workers", 1)
    return binary, [line for line in first_lines(root / "test.de", 5)]


def trained_lm(wikitext, tmp_path_factory, flags):
    from types import SimpleNamespace

    root = tmp_path_factory.mktemp("lm")
    checkpoint = train(wikitext, str(root / "define"), *LM, *TRAIN, *flags)
    return SimpleNamespace(root=root, checkpoint=checkpoint, out=str(root / "stock" / "exported.pt"))


@pytest.fixture(scope="module", params=["adaptive", "lookup-d-ne-n"])
def lm(request, wikitext, tmp_path_factory):
    return trained_lm(wikitext, tmp_path_factory, ADAPTIVE if request.param == "adaptive" else LOOKUP_D_NE_N)


def plugin_hub_scores(hub_class, checkpoint, data, sentences):
    hub = hub_class.from_pretrained(os.path.dirname(checkpoint), os.path.basename(checkpoint),
                                    data_name_or_path=data, user_dir=cli.PLUGIN)
    hub.eval()
    return [hub.score(s)["positional_scores"] for s in sentences]


def test_lm_export_runs_in_stock_fairseq_with_the_same_perplexity_and_scores(lm, wikitext, capsys):
    from fairseq.models.transformer_lm import TransformerLanguageModel
    from fairseq_cli import eval_lm

    out, report = exported(lm.checkpoint, os.path.dirname(lm.out), capsys)
    assert re.search(r"params: [\d,]+ -> [\d,]+ \(\+[\d,]+\); larger: the V x m table", report), report
    assert re.search(r"bytes:  parameters [\d,]+ -> [\d,]+; file [\d,]+ -> [\d,]+", report), report
    assert re.search(r"time:   [\d.]+ s", report) and "max |log p| difference" in report, report

    state = torch.load(out, map_location="cpu", weights_only=True)  # what stock fairseq's loader does
    assert state["cfg"]["model"]["_name"] == "transformer_lm_gpt2_tiny" and state["cfg"]["common"]["user_dir"] is None
    assert not any(k.startswith("define_") for k in state["cfg"]["model"])
    vocab = len(open(os.path.join(wikitext, "dict.txt")).readlines()) + 4
    assert state["model"]["decoder.embed_tokens.weight"].shape == (vocab, 64)
    assert not any(".unit." in k or ".map." in k for k in state["model"])

    flags = ["--tokens-per-sample", 64, "--cpu", "--gen-subset", "test", "--max-tokens", 2048]
    stock_log = stock(lm.root, "eval_lm", wikitext, "--path", out, *flags)
    plugin = eval_lm.main(parse("eval_lm", [wikitext, "--path", lm.checkpoint, *flags]))
    stock_ppl = re.search(r"Perplexity: ([\d.]+)", stock_log).group(1)
    assert stock_ppl == f"{plugin['perplexity']:.2f}"
    print(f"eval-lm perplexity: plugin {plugin['perplexity']:.2f}, stock {stock_ppl}")

    sentences = [" ".join(line.split()[:40]) for line in first_lines(os.path.join(os.path.dirname(wikitext), "raw",
                                                                                 "valid.txt"), 5)]  # < 64 tokens
    scores = os.path.join(lm.root, "stock_scores.pt")
    stock(lm.root, "-c", NUMPY_COMPAT + "import torch\n"
          "from fairseq.models.transformer_lm import TransformerLanguageModel as M\n"
          f"lm = M.from_pretrained({os.path.dirname(out)!r}, 'exported.pt', data_name_or_path={wikitext!r}).eval()\n"
          f"torch.save([lm.score(s)['positional_scores'] for s in {sentences!r}], {scores!r})")
    expected = plugin_hub_scores(TransformerLanguageModel, lm.checkpoint, wikitext, sentences)
    got = torch.load(scores)
    assert [g.shape for g in got] == [e.shape for e in expected]
    difference = max(float((g - e).abs().max()) for g, e in zip(got, expected))
    print(f"max log-prob difference (hub scores, {sum(e.numel() for e in expected)} tokens): {difference:.2e}")
    assert difference < 1e-4


@pytest.fixture(scope="module")
def mt(multi30k, tmp_path_factory):
    from types import SimpleNamespace

    data, sentences = multi30k
    root = tmp_path_factory.mktemp("mt")
    checkpoint = train(data, str(root / "define"), *MT, *TRAIN[:-1], 12)
    return SimpleNamespace(root=root, data=data, sentences=sentences, checkpoint=checkpoint)


def test_translation_export_generates_the_same_hypotheses_in_stock_fairseq(mt, capsys):
    from fairseq.models.transformer import TransformerModel
    from fairseq_cli import generate

    out, report = exported(mt.checkpoint, str(mt.root / "stock"), capsys)
    assert "one tensor in the file" in report, report
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert state["cfg"]["model"]["_name"] == "transformer_tiny"
    assert not state["cfg"]["model"]["share_all_embeddings"]
    enc, dec = state["model"]["encoder.embed_tokens.weight"], state["model"]["decoder.embed_tokens.weight"]
    assert enc.data_ptr() == dec.data_ptr()  # stored once

    stock_log = stock(mt.root, "generate", mt.data, "--path", out, *GENERATE)
    results = str(mt.root / "plugin-results")
    generate.main(parse("generate", [mt.data, "--path", mt.checkpoint, *GENERATE, "--results-path", results]))
    with open(os.path.join(results, "generate-test.txt"), encoding="utf-8") as f:
        plugin_log = f.read()

    def hypotheses(log):
        return sorted(line for line in log.splitlines() if line.startswith("H-"))

    def bleu(log):
        return re.search(r"BLEU4 = ([\d.]+)", log).group(1)

    assert len(hypotheses(stock_log)) == 40 and hypotheses(stock_log) == hypotheses(plugin_log)  # tokens and scores
    assert bleu(stock_log) == bleu(plugin_log)
    print(f"generate: 40 identical hypotheses, BLEU {bleu(stock_log)} both")

    translations = str(mt.root / "stock_translations.json")
    stock(mt.root, "-c", "import json\nfrom fairseq.models.transformer import TransformerModel as M\n"
          f"mt = M.from_pretrained({os.path.dirname(out)!r}, 'exported.pt', data_name_or_path={mt.data!r}).eval()\n"
          f"json.dump(mt.translate({mt.sentences!r}, beam=2), open({translations!r}, 'w'))")
    hub = TransformerModel.from_pretrained(os.path.dirname(mt.checkpoint), "checkpoint_last.pt",
                                           data_name_or_path=mt.data, user_dir=cli.PLUGIN).eval()
    with open(translations) as f:
        assert json.load(f) == hub.translate(mt.sentences, beam=2)


# the installed command: exit status 0 on success, 2 and one line on stderr on an error -------------------------

def export_command(*args, cwd):
    return run_installed("fairseq-define-export", *args, cwd=cwd)


def assert_one_line_error(out, message, only_line=True):
    """Exit status 2, no traceback, nothing on stdout, and the error `fairseq-define-export: error: ...message...` as
    the one line on stderr (`only_line`) or its last, after fairseq's own import-time log lines."""
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr, out.stderr[-3000:]
    if only_line:
        assert len(lines) == 1, out.stderr[-3000:]
    assert lines[-1].startswith("fairseq-define-export: error: ") and message in lines[-1], lines[-1]


@pytest.mark.parametrize("lm", ["adaptive"], indirect=True)
def test_installed_command_exits_0_and_writes_a_checkpoint_that_loads(lm, tmp_path):
    out = export_command(lm.checkpoint, tmp_path / "model.pt", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "fairseq-define-export: error" not in out.stderr, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["arch"] == "transformer_lm_gpt2_tiny" and report["max_logprob_difference"] < 1e-4
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert state["cfg"]["model"]["_name"] == "transformer_lm_gpt2_tiny" and state["cfg"]["common"]["user_dir"] is None
    assert report["file_bytes"]["after"] == os.path.getsize(tmp_path / "model.pt")


@pytest.mark.parametrize("args,message", [
    ([], "the following arguments are required: checkpoint, out"),
    (["IN.pt", "OUT.pt", "--bogus"], "unrecognized arguments: --bogus"),
    (["missing.pt", "OUT.pt"], "no checkpoint file missing.pt"),
    (["IN.pt", "OUT.pt", "--data", "no-such-folder"], "--data no-such-folder is not a folder"),
])
def test_bad_arguments_are_one_line_on_stderr_and_exit_2(tmp_path, args, message):
    (tmp_path / "IN.pt").write_bytes(b"")
    assert_one_line_error(export_command(*args, cwd=tmp_path), message)
    assert not (tmp_path / "OUT.pt").exists()


def test_a_file_that_is_no_checkpoint_is_a_one_line_error_and_exit_2(tmp_path):
    (tmp_path / "IN.pt").write_text("not a checkpoint\n")
    assert_one_line_error(export_command("IN.pt", "OUT.pt", cwd=tmp_path), "cannot read IN.pt as a fairseq checkpoint",
                          only_line=False)
    assert sorted(os.listdir(tmp_path)) == ["IN.pt"]


def test_an_architecture_without_a_stock_twin_is_a_one_line_error_and_exit_2(wikitext, tmp_path):
    checkpoint = train(wikitext, str(tmp_path / "xl"), "--task", "bptt_lm", "--arch", "define_transformer_xl_tiny",
                       "--tokens-per-sample", 16, "--batch-size", 2, *TRAIN[2:-1], 1)
    out = export_command(checkpoint, "OUT.pt", cwd=tmp_path)
    assert_one_line_error(out, "TransformerXLLanguageModel has no stock fairseq twin", only_line=False)
    assert not (tmp_path / "OUT.pt").exists()


# without training: the command's choices and refusals, on models built in memory -------------------------------

def built(tmp_path, *flags, vocab=300):
    """(model, its cfg.model as a checkpoint holds it, task) of an untrained tiny DeFINE LM, built in memory."""
    from omegaconf import OmegaConf

    from fairseq import tasks
    from fairseq_define.params import _write_dictionary

    _write_dictionary(str(tmp_path / "dict.txt"), vocab)
    cfg = parse("train", [tmp_path, "--task", "language_modeling", "--arch", "define_transformer_lm_gpt2_tiny",
                          "--cpu", *flags])
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model).eval()
    return model, OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True), task


@pytest.mark.parametrize("scale,no_scale", [(8.0, False), (1.0, True), (3.0, True)])
def test_embed_scale_carries_over_or_is_folded_into_the_table(tmp_path, scale, no_scale):
    model, model_cfg, task = built(tmp_path)
    model.decoder.embed_scale = scale  # e.g. a transform whose model must not scale by sqrt(m)
    stock, cfg, report = export.export_model(model, model_cfg, task)
    assert cfg["no_scale_embedding"] is no_scale and stock.decoder.embed_scale == (1.0 if no_scale else 8.0)
    assert export.max_logprob_difference(model, stock, 300) < 1e-5


def test_transformer_xl_and_lstm_are_refused_with_a_one_line_message():
    for arch in ("define_transformer_xl_wt103", "define_awd_lstm_tiny"):
        model, task = build_model(["--arch", arch, "--vocab-size", "1000", "--task", "bptt_lm"], device="meta")
        with pytest.raises(export.ExportError, match=r"has no stock fairseq twin; fairseq-define-export takes"):
            export.export_model(model, {}, task)


def test_adaptive_band_narrower_in_stock_fairseq_is_an_error_naming_it(tmp_path):
    model, _, _ = built(tmp_path, "--adaptive-input", "--adaptive-input-cutoff", "50,100",
                        "--adaptive-softmax-cutoff", "50,100", "--tie-adaptive-weights", "--define-map-dim", 32,
                        "--define-input-dim", 16)  # band 1: 32 // 4 = 8 wide; stock: d // 4 = 4
    with pytest.raises(export.ExportError, match=r"adaptive softmax band 1 is 8 wide; .* = 4 wide"):
        export.untied_adaptive_softmax(model.decoder.adaptive_softmax, 4.0)


@pytest.mark.parametrize("tie_proj", [True, False])
def test_tied_adaptive_softmax_with_d_ne_n_becomes_an_untied_one_with_the_same_outputs(tmp_path, tie_proj):
    model, model_cfg, task = built(tmp_path, "--adaptive-input", "--adaptive-input-cutoff", "50,100",
                                   "--adaptive-softmax-cutoff", "50,100", "--tie-adaptive-weights",
                                   *(["--tie-adaptive-proj"] if tie_proj else []), "--define-map-dim", 32,
                                   "--define-input-dim", 48)  # head: d -> n projection; tails 8, 2 wide -> 12, 3
    stock, cfg, report = export.export_model(model, model_cfg, task)
    softmax = stock.decoder.adaptive_softmax
    assert type(softmax.head) is torch.nn.Linear and softmax.head.weight.shape == (52, 48)
    assert [tuple(t[0].weight.shape) for t in softmax.tail] == [(12, 48), (3, 48)]
    assert not cfg["tie_adaptive_weights"] and not cfg["adaptive_input"] and cfg["decoder_output_dim"] == 48
    assert export.max_logprob_difference(model, stock, 300) < 1e-5

pytestmark = pytest.mark.slow
