"""fairseq's tools for the tests: in this process (`call`, the default: no interpreter start-up or fairseq import
per run) or as the command line (`run`, for the tests about the command line itself), and a WikiText-2 slice."""

import contextlib
import importlib
import io
import logging
import os
import subprocess
import sys
import traceback

from examples.common import PLUGIN, fairseq
from examples.common import run as run_command

__all__ = ["PLUGIN", "call", "run", "run_in_process", "wikitext_slice"]

LOADING_TOOLS = ("train", "validate", "generate", "eval_lm", "interactive")  # the tools with --num-workers
LOG_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"  # fairseq_cli's own


def run(tool, *args, check=True, stdin=None, timeout=600, user_dir=True):
    """`fairseq-<tool> args` in a subprocess (tool: train, eval_lm, generate, interactive, preprocess), with the
    plugin unless `user_dir` is False; returns the CompletedProcess (stdout and stderr as text)."""
    return run_command(fairseq(tool.replace("_", "-"), *args, user_dir=user_dir), echo=False, check=check,
                       stdin=stdin, timeout=timeout)


def call(tool, *args, stdin=None, user_dir=True) -> str:
    """`fairseq-<tool> args` run in this process (`fairseq_cli.<tool>.cli_main` on the same argv as `run`);
    returns what the command prints: its log lines in fairseq's format, then stdout. Errors raise as they are."""
    return _cli_main(tool.replace("-", "_"), fairseq(tool.replace("_", "-"), *args, user_dir=user_dir)[3:], stdin)


def _cli_main(tool, argv, stdin=None) -> str:
    import fairseq_define.plugin  # noqa: F401  (fairseq's registries are per process: register once)

    module = importlib.import_module("fairseq_cli." + tool)
    _forget_earlier_runs()
    if tool in LOADING_TOOLS and "--num-workers" not in map(str, argv):
        # data loading in this process: the same batches, without a loader worker process per epoch iterator, whose
        # shutdown in a long-lived process waits up to 5 s each (most of an in-process study's time)
        argv = [*argv, "--num-workers", 0]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    root, own = logging.getLogger(), logging.getLogger(module.__name__)
    saved = root.level, list(own.handlers), sys.argv, sys.stdin  # preprocess adds a file handler per run
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    sys.argv = [module.__name__, *map(str, argv)]
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out):
            module.cli_main()
    finally:
        root.removeHandler(handler)
        for extra in set(own.handlers) - set(saved[1]):
            own.removeHandler(extra)
            extra.close()
        root.level, _, sys.argv, sys.stdin = saved
    return out.getvalue()


def _forget_earlier_runs():
    """What a fresh process starts without: fairseq keeps the best validation loss seen (which decides whether
    checkpoint_best.pt is written) and the early-stopping count as attributes of its functions."""
    from fairseq import checkpoint_utils
    from fairseq_cli import train

    for function, names in ((checkpoint_utils.save_checkpoint, ("best",)),
                            (train.should_stop_early, ("best", "num_runs"))):
        for name in names:
            if hasattr(function, name):
                delattr(function, name)


def run_in_process(command, log=None, echo=True, check=True, stdin=None, timeout=None):
    """A drop-in for `examples.common.run` (monkeypatched into the examples by the study tests): a fairseq_cli
    command runs in this process, as `call`; any other command as a subprocess. Returns a CompletedProcess whose
    stdout is what the command would print (appended to `log` if given)."""
    command = [str(c) for c in command]
    if command[:2] != [sys.executable, "-m"] or not command[2].startswith("fairseq_cli."):
        return run_command(command, log=log, echo=echo, check=check, stdin=stdin, timeout=timeout)
    if echo:
        print("$ " + " ".join(command), flush=True)
    returncode, stderr = 0, ""
    try:
        text = _cli_main(command[2][len("fairseq_cli."):], command[3:], stdin)
    except (Exception, SystemExit) as error:
        if check:
            raise
        text, returncode, stderr = "", 1, "".join(traceback.format_exception(error))
    if log is not None:
        with open(log, "a") as sink:
            sink.write(text + stderr)
    return subprocess.CompletedProcess(command, returncode, text, stderr)


def wikitext_slice(source_dir, dest_dir, lines=(1500, 150, 150)):
    """The first lines of WikiText-2 train/valid/test, binarized with fairseq-preprocess into dest_dir/bin."""
    raw = os.path.join(dest_dir, "raw")
    os.makedirs(raw, exist_ok=True)
    for split, count in zip(("train", "valid", "test"), lines):
        with open(os.path.join(source_dir, f"wiki.{split}.tokens"), encoding="utf-8") as src, \
                open(os.path.join(raw, f"{split}.txt"), "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i >= count:
                    break
                dst.write(line)
    binary = os.path.join(dest_dir, "bin")
    call("preprocess", "--only-source", "--trainpref", f"{raw}/train.txt", "--validpref", f"{raw}/valid.txt",
         "--testpref", f"{raw}/test.txt", "--destdir", binary, "--workers", 1)
    return binary
