import json
import os
import shutil
import subprocess
import sys

import pytest

from fairseq_define.params import build_model, count_parts
from tests.conftest import REPO_ROOT


def params_json(*args):
    out = subprocess.run([sys.executable, "-m", "fairseq_define.params", *map(str, args), "--json"],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_stock_wiki103_adaptive_input_map_matches_spec():
    counts = params_json("--arch", "transformer_lm_wiki103", "--vocab-size", 267744)
    assert counts["map"] == 45_391_872
    assert counts["define"] == 0
    assert counts["total"] == counts["map"] + counts["context"] + counts["output"]


def test_define_wiki103_map_is_the_narrow_adaptive_input_and_parts_add_up():
    counts = params_json("--arch", "define_transformer_lm_wiki103", "--vocab-size", 267744)
    # AdaptiveInput with output dim n = 128: bands 20000x128 + 128x128, 40000x32 + 32x128, 207744x8 + 8x128
    assert counts["map"] == 20000 * 128 + 128 * 128 + 40000 * 32 + 32 * 128 + 207744 * 8 + 8 * 128
    assert counts["define"] > 0
    assert sum(counts[p] for p in ("map", "define", "context", "output")) == counts["total"]


@pytest.mark.parametrize("arch", ["define_transformer_lm_gpt2_tiny", "transformer_lm_gpt2_tiny"])
def test_counts_cover_every_parameter_once(arch):
    model, _ = build_model(["--arch", arch, "--vocab-size", "300"], device="cpu")
    counts = count_parts(model)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert counts["total"] == sum(unique.values())


def test_define_unit_counted_as_define_and_tied_output_not_double_counted():
    model, _ = build_model(["--arch", "define_transformer_lm_gpt2_tiny", "--vocab-size", "300"], device="cpu")
    counts = count_parts(model)
    embed = model.decoder.embed_tokens
    assert counts["define"] == sum(p.numel() for p in embed.unit.parameters())
    assert counts["map"] == 300 * 32
    assert counts["output"] == 64 * 32  # only the m -> n projection: the output matrix is the Map table


def installed_command(name):
    """The path of the console command `name` that the package installs (next to this Python, or on PATH)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    path = path if os.path.isfile(path) else shutil.which(name)
    assert path, f"{name} is not installed: pip install -e . (make install) installs the package's commands"
    return path


def run_installed(name, *args, cwd=REPO_ROOT):
    return subprocess.run([installed_command(name), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_installed_command_exits_0_with_the_counts():
    out = run_installed("fairseq-define-params", "--arch", "define_transformer_lm_gpt2_tiny", "--vocab-size", 300,
                        "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    model, _ = build_model(["--arch", "define_transformer_lm_gpt2_tiny", "--vocab-size", "300"], device="meta")
    assert counts == dict(count_parts(model))


@pytest.mark.parametrize("args,message", [
    (["--arch", "transformer_lm"], "give exactly one of --data DIR or --vocab-size V"),
    (["--vocab-size", 300], "the following arguments are required: --arch/-a"),
])
def test_a_command_line_without_a_model_is_one_line_on_stderr_and_exit_2(args, message):
    out = run_installed("fairseq-define-params", *args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [f"fairseq-define-params: error: {message}"]


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--define-preset", "paper", "--define-max-groups", 6], "--define-max-groups=6 must be a power of two"),
    (["--arch", "no_such_arch"], "unknown --arch no_such_arch"),
])
def test_a_bad_flag_or_value_is_a_one_line_error_and_exit_2(args, message):
    """After fairseq's import (whose own log lines go to stderr first) the error is still one line, the last."""
    out = run_installed("fairseq-define-params", "--arch", "define_transformer_lm_gpt2_tiny", "--vocab-size", 300,
                        *args)
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert errors == [out.stderr.splitlines()[-1]] and errors[0].startswith("fairseq-define-params: error: ")
    assert message in errors[0]


def test_layers_of_the_authors_unit_and_its_host_scale():
    """`--layers` lists the authors' unit layer by layer (spec §9 (b) on d = 256), and the model feeds its output
    to the decoder without the sqrt(m) scale, while --define-residual keeps the control's scale."""
    flags = ["--arch", "define_transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "256",
             "--decoder-attention-heads", "4", "--define-map-dim", "256", "--define-transform", "authors",
             "--define-expand-dim", "1024", "--define-depth", "3", "--define-max-groups", "32",
             "--define-activation", "swish", "--vocab-size", "300"]
    counts = params_json(*flags, "--layers")
    rows = counts["layers"]["decoder.embed_tokens"]
    assert [(r["part"], r["params"]) for r in rows if r["group"] == "define"] == [
        ("input", 33_152), ("glt.1", 19_296), ("glt.2", 362_496), ("glt.3", 295_680), ("output", 99_072)]
    assert counts["define"] == 809_696
    model, _ = build_model(flags, device="cpu")
    assert model.decoder.embed_scale == 1.0
    model, _ = build_model([*flags, "--define-residual"], device="cpu")
    assert model.decoder.embed_scale == 16.0 and counts["define"] + 256 == count_parts(model)["define"]


@pytest.mark.parametrize("arch,stacks", [("define_transformer_tiny", ("encoder", "decoder")),
                                         ("define_transformer_xl_tiny", ("decoder",))])
def test_authors_unit_enters_every_host_unscaled(arch, stacks):
    flags = ["--arch", arch, "--define-transform", "authors", "--define-map-dim", "32", "--define-max-groups", "2",
             "--vocab-size", "300"]
    model, _ = build_model(flags, device="meta")
    for stack in stacks:
        assert getattr(model, stack).embed_scale == 1.0
    model, _ = build_model(flags[:-2] + ["--define-residual", "--vocab-size", "300"], device="meta")
    assert all(getattr(model, stack).embed_scale > 1.0 for stack in stacks)

pytestmark = pytest.mark.slow
