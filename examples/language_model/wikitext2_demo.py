"""The project's main job (`make demo`): train a small DeFINE language model on WikiText-2 with fairseq's CLIs.

    python -m examples.language_model.wikitext2_demo [--data ../shared/data/wikitext-2] [--workdir runs/demo]

Steps, each a real fairseq command printed before it runs: fairseq-preprocess (once), fairseq-train (progress
every 25 updates), fairseq-eval-lm on the test set; then the parameter breakdown of this model next to the same
context model with fairseq's adaptive input (python -m fairseq_define.params), and one sampled sentence through
the hub interface. About 5-6 minutes on 2 CPU cores.
"""

import argparse
import json
import os
import sys
import time

from examples.common import PLUGIN, SHARED_DATA, eval_lm, fairseq, preprocess_wikitext, run
from examples.recipes import ADAPTIVE_LOSS, SMALL_ADAPTIVE_LM, SMALL_DEFINE_LM


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(SHARED_DATA, "wikitext-2"),
                        help="folder with wiki.{train,valid,test}.tokens")
    parser.add_argument("--workdir", default=os.path.join("runs", "demo"))
    parser.add_argument("--max-update", type=int, default=450)
    args = parser.parse_args()
    start = time.time()

    data_bin = preprocess_wikitext(os.path.abspath(args.data), os.path.join(args.workdir, "data-bin"))

    save_dir = os.path.join(args.workdir, "checkpoints")
    os.makedirs(save_dir, exist_ok=True)
    run(fairseq("train", data_bin, "--task", "language_modeling", *SMALL_DEFINE_LM, *ADAPTIVE_LOSS,
         "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "100", "--clip-norm", "1.0", "--max-tokens", "2048", "--max-update", str(args.max_update),
         "--cpu", "--seed", "1", "--log-format", "simple", "--log-interval", "25", "--save-dir", save_dir,
         "--no-epoch-checkpoints", "--disable-validation"), log=os.path.join(save_dir, "train.log"))

    perplexity = eval_lm(data_bin, os.path.join(save_dir, "checkpoint_last.pt"), "test")

    counts = {}
    for name, model in (("DeFINE", SMALL_DEFINE_LM), ("adaptive input", SMALL_ADAPTIVE_LM)):
        counts[name] = json.loads(run([sys.executable, "-m", "fairseq_define.params", "--data", data_bin, *model,
                                       "--json"]).stdout)

    import torch
    from fairseq.models.transformer_lm import TransformerLanguageModel

    lm = TransformerLanguageModel.from_pretrained(save_dir, "checkpoint_last.pt", data_name_or_path=data_bin,
                                                  user_dir=PLUGIN)
    lm.eval()
    torch.manual_seed(0)
    sample = lm.sample("The history of", beam=1, sampling=True, sampling_topk=20, max_len_b=30)

    print("\n=== fairseq_define demo: DeFINE Transformer LM on WikiText-2 ===")
    print(f"test perplexity (fairseq-eval-lm, {args.max_update} updates): {perplexity:.2f}")
    print(f"\nparameters (python -m fairseq_define.params)   {'DeFINE':>12}  {'adaptive input':>14}")
    for part in ("map", "define", "context", "output", "total"):
        print(f"  {part:<44}{counts['DeFINE'][part]:>12,}  {counts['adaptive input'][part]:>14,}")
    print(f"\nsample: {sample}")
    print(f"\ndone in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
