"""What the examples, studies, benchmarks and tests share: the one way to run fairseq's tools, WikiText preparation,
and eval-lm's perplexity (fairseq's training logs are read by `studies.store`). Import as `examples.common` from the
repository root (run scripts as `python -m examples....`)."""

import os
import re
import subprocess
import sys
from typing import Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(REPO, "fairseq_define")
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")


def fairseq(tool: str, *args, user_dir: bool = True) -> list:
    """The command line of fairseq-`tool` (train, eval-lm, generate, ...) run by this Python, with the plugin
    (unless `user_dir` is False, or for preprocess, which takes none)."""
    module = "fairseq_cli." + tool.replace("-", "_")
    plugin = ["--user-dir", PLUGIN] if user_dir and tool != "preprocess" else []
    return [sys.executable, "-m", module, *map(str, args), *plugin]


def run(command: Sequence, log: Optional[str] = None, echo: bool = True, check: bool = True, stdin: str = None,
        timeout: float = None) -> subprocess.CompletedProcess:
    """Run `command` (printed first unless `echo` is False). Output is captured and returned; with `log`, it is also
    appended to that file as it comes, and fairseq's progress lines are echoed. A failure raises with the output's
    tail (unless `check` is False)."""
    command = [str(c) for c in command]
    if echo:
        print("$ " + " ".join(command), flush=True)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if log is None:
        out = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout, env=env)
    else:
        lines = []
        with open(log, "a") as sink, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, env=env) as process:
            for line in process.stdout:
                lines.append(line)
                sink.write(line)
                sink.flush()
                if echo and (" | INFO | train" in line or " | INFO | valid" in line or "Error" in line):
                    print(line, end="", flush=True)
        out = subprocess.CompletedProcess(command, process.returncode, "".join(lines), "")
    if check and out.returncode:
        raise RuntimeError(f"command failed ({out.returncode}): {' '.join(command)}\n"
                           f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def preprocess_wikitext(raw: str, dest: str, runner=None) -> str:
    """Binarize WikiText (wiki.{train,valid,test}.tokens in `raw`) into `dest` with fairseq-preprocess (run by
    `runner`, default `run`), once."""
    if not os.path.isfile(os.path.join(dest, "test.bin")):
        if not os.path.isfile(os.path.join(raw, "wiki.train.tokens")):
            sys.exit(f"WikiText-2 not found in {raw}: download wikitext-2-v1 (Merity et al. 2016, e.g. the copy in "
                     f"pytorch/examples' word_language_model/data/wikitext-2) and pass its folder (--data / DATA=)")
        (runner or run)(fairseq("preprocess", "--only-source", "--trainpref", f"{raw}/wiki.train.tokens",
                                "--validpref", f"{raw}/wiki.valid.tokens", "--testpref", f"{raw}/wiki.test.tokens",
                                "--destdir", dest, "--workers", "2"))
    return dest


def perplexity(output: str) -> float:
    """The perplexity that fairseq-eval-lm printed."""
    return float(re.search(r"Perplexity: ([\d.]+)", output).group(1))


def eval_lm(data_bin: str, checkpoint: str, subset: str, *extra) -> float:
    """fairseq-eval-lm perplexity of `checkpoint` on `subset` (128-token blocks, no context window by default)."""
    out = run(fairseq("eval-lm", data_bin, "--path", checkpoint, "--gen-subset", subset, "--tokens-per-sample", 128,
                      "--max-tokens", 4096, "--cpu", *extra))
    return perplexity(out.stdout + out.stderr)
