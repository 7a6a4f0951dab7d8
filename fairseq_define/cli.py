"""Running fairseq's console scripts from Python, and the one data-preparation step the WikiText-2 runs share."""

import os
import subprocess
import sys
from typing import Sequence


def tool(name: str) -> str:
    """Path of a fairseq console script next to this Python (works inside and outside a virtualenv)."""
    return os.path.join(os.path.dirname(sys.executable), name)


def run(command: Sequence[str], stream=False) -> subprocess.CompletedProcess:
    """Run a command, printing it first; with `stream`, also echo its output as it comes (training progress)."""
    command = [str(c) for c in command]
    print("$ " + " ".join(command), flush=True)
    if stream:
        lines = []
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
            for line in process.stdout:
                lines.append(line)
                if " | INFO | train" in line or "Error" in line:  # progress lines and errors, not the config dump
                    print(line, end="", flush=True)
        out = subprocess.CompletedProcess(command, process.returncode, "".join(lines), "")
    else:
        out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"command failed ({out.returncode}): {' '.join(command)}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def preprocess_wikitext(raw: str, dest: str) -> str:
    """Binarize WikiText (wiki.{train,valid,test}.tokens in `raw`) into `dest` with fairseq-preprocess, once."""
    if not os.path.isfile(os.path.join(dest, "test.bin")):
        if not os.path.isfile(os.path.join(raw, "wiki.train.tokens")):
            sys.exit(f"WikiText-2 not found in {raw}: download wikitext-2-v1 (Merity et al. 2016, e.g. the copy in "
                     f"pytorch/examples' word_language_model/data/wikitext-2) and pass its folder (--data / DATA=)")
        run([tool("fairseq-preprocess"), "--only-source", "--trainpref", f"{raw}/wiki.train.tokens",
             "--validpref", f"{raw}/wiki.valid.tokens", "--testpref", f"{raw}/wiki.test.tokens",
             "--destdir", dest, "--workers", "2"])
    return dest
