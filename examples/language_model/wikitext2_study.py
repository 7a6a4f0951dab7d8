"""Matched WikiText-2 comparison: one context model with four inputs, same updates, tokens and seed.

    python examples/language_model/wikitext2_study.py [--data ../shared/data/wikitext-2] [--workdir runs/study-lm]
        [--max-update 800] [--only define-ln-gelu ...]

Inputs (fairseq_define.recipes.LM_STUDY): a standard tied embedding table, fairseq's adaptive input with a tied
adaptive softmax (cutoffs 5000,20000, factor 4), and DeFINE behind the same adaptive Map and softmax, as the
paper-literal linear unit (norm none, activation none) and with per-group LayerNorm + GELU. Each run writes
WORKDIR/NAME/{train.log,result.json}; finished runs are skipped, so the script resumes. Results: parameters
(python -m fairseq_define.params), training words/s, valid and test perplexity from fairseq-eval-lm.
"""

import argparse
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from fairseq_define.cli import preprocess_wikitext, tool  # noqa: E402
from fairseq_define.recipes import ADAPTIVE_LOSS, LM_STUDY  # noqa: E402

PLUGIN = os.path.join(REPO, "fairseq_define")
TRAINING = ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", "100", "--clip-norm", "1.0", "--max-tokens", "2048", "--cpu", "--seed", "1",
            "--log-format", "simple", "--log-interval", "25", "--no-epoch-checkpoints", "--no-save-optimizer-state",
            "--max-valid-steps", "25"]  # learning curves on the first 51k valid tokens; final numbers from eval-lm


def perplexity(data_bin, checkpoint, subset):
    out = subprocess.run([tool("fairseq-eval-lm"), data_bin, "--user-dir", PLUGIN, "--path", checkpoint,
                          "--gen-subset", subset, "--tokens-per-sample", "128", "--max-tokens", "4096", "--cpu"],
                         capture_output=True, text=True, check=True)
    return float(re.search(r"Perplexity: ([\d.]+)", out.stdout + out.stderr).group(1))


def train_words_per_second(log):
    return float(re.findall(r"\| train \| .*?\| wps ([\d.]+)", log)[-1])


def run_one(name, flags, data_bin, workdir, max_update, validate_every):
    out_dir = os.path.join(workdir, name)
    result_path = os.path.join(out_dir, "result.json")
    if os.path.isfile(result_path):
        print(f"[{name}] done already: {result_path}")
        return json.load(open(result_path))
    os.makedirs(out_dir, exist_ok=True)
    criterion = ADAPTIVE_LOSS if "--adaptive-input" in flags else []
    command = [tool("fairseq-train"), data_bin, "--user-dir", PLUGIN, "--task", "language_modeling", *flags,
               *criterion, *TRAINING, "--max-update", str(max_update), "--validate-interval-updates",
               str(validate_every), "--save-dir", out_dir, "--save-interval-updates", str(max_update)]
    print(f"[{name}] $ " + " ".join(command), flush=True)
    log_path = os.path.join(out_dir, "train.log")
    with open(log_path, "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    log = open(log_path).read()
    checkpoint = os.path.join(out_dir, "checkpoint_last.pt")
    counts = json.loads(subprocess.run([sys.executable, "-m", "fairseq_define.params", "--data", data_bin, *flags,
                                        "--json"], capture_output=True, text=True, check=True, cwd=REPO).stdout)
    result = {"name": name, "flags": flags, "max_update": max_update, "params": counts,
              "train_wps": train_words_per_second(log), "valid_ppl": perplexity(data_bin, checkpoint, "valid"),
              "test_ppl": perplexity(data_bin, checkpoint, "test")}
    json.dump(result, open(result_path, "w"), indent=2)
    print(f"[{name}] valid ppl {result['valid_ppl']:.2f}, test ppl {result['test_ppl']:.2f}, "
          f"{result['train_wps']:.0f} words/s, {counts['total']:,} parameters", flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "wikitext-2"))
    parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "study-lm"))
    parser.add_argument("--max-update", type=int, default=800)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--only", nargs="+", choices=list(LM_STUDY), help="run only these inputs")
    args = parser.parse_args(argv)
    data_bin = preprocess_wikitext(os.path.abspath(args.data), os.path.join(args.workdir, "data-bin"))
    results = [run_one(name, LM_STUDY[name], data_bin, args.workdir, args.max_update, args.validate_every)
               for name in (args.only or LM_STUDY)]
    print(f"\n{'input':<16}{'params':>12}{'map':>12}{'define':>10}{'words/s':>9}{'valid ppl':>11}{'test ppl':>10}")
    for r in results:
        p = r["params"]
        print(f"{r['name']:<16}{p['total']:>12,}{p['map']:>12,}{p['define']:>10,}{r['train_wps']:>9.0f}"
              f"{r['valid_ppl']:>11.2f}{r['test_ppl']:>10.2f}")


if __name__ == "__main__":
    main()
