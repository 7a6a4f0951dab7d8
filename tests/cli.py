"""Run fairseq's command-line tools (as installed next to this Python) with the plugin, and a WikiText-2 slice."""

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

PLUGIN = os.path.join(REPO_ROOT, "fairseq_define")
TOOLS = {
    "preprocess": "fairseq_cli.preprocess",
    "train": "fairseq_cli.train",
    "eval_lm": "fairseq_cli.eval_lm",
    "generate": "fairseq_cli.generate",
    "interactive": "fairseq_cli.interactive",
}


def run(tool, *args, check=True, stdin=None, timeout=600, user_dir=True):
    """`fairseq-<tool> args` in a subprocess; returns the CompletedProcess (stdout and stderr as text)."""
    command = [sys.executable, "-m", TOOLS[tool], *map(str, args)]
    if user_dir and tool != "preprocess":
        command += ["--user-dir", PLUGIN]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


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
    run("preprocess", "--only-source", "--trainpref", f"{raw}/train.txt", "--validpref", f"{raw}/valid.txt",
        "--testpref", f"{raw}/test.txt", "--destdir", binary, "--workers", 1)
    return binary
