"""fairseq's command-line tools with the plugin (examples.common's runner), and a small WikiText-2 slice."""

import os

from examples.common import PLUGIN, fairseq
from examples.common import run as run_command

__all__ = ["PLUGIN", "run", "wikitext_slice"]


def run(tool, *args, check=True, stdin=None, timeout=600, user_dir=True):
    """`fairseq-<tool> args` in a subprocess (tool: train, eval_lm, generate, interactive, preprocess), with the
    plugin unless `user_dir` is False; returns the CompletedProcess (stdout and stderr as text)."""
    return run_command(fairseq(tool.replace("_", "-"), *args, user_dir=user_dir), echo=False, check=check,
                       stdin=stdin, timeout=timeout)


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
