"""The project's main job (`make demo`): train a small DeFINE language model on WikiText-2 with fairseq's CLIs.

    python -m examples.language_model.wikitext2_demo [--data ../shared/data/wikitext-2] [--workdir runs/demo]

The model is the default configuration (examples/recipes.py `SMALL_DEFINE_LM`: no --define-* unit flag): a 64-wide
adaptive Map projected to the 256-wide context, the Transformer LM's default unit (the recommended preset: the
authors' unit, steps by fan-in), the adaptive softmax tied to it and scoring 256-d states: the WikiText-2 study's
`authors-64-fan-in` row, trained for 450 updates instead of 2,000. Steps, each a real fairseq command printed before
it runs: fairseq-preprocess (once), fairseq-train (progress every 25 updates), fairseq-eval-lm on the test set; then
the parameter breakdown of this model beside its control (the same Map without a unit) and fairseq's adaptive input
(python -m fairseq_define.params), one sampled sentence through the hub interface, and the study's full-length
perplexities of the three (read from docs/results/lm_wikitext2.json) to say what the short run's number means. About
3 minutes on 2 CPU cores (183 s measured, preprocessing included).
"""

import argparse
import json
import os
import sys
import time

from examples.common import PLUGIN, REPO, SHARED_DATA, eval_lm, fairseq, preprocess_wikitext, run
from examples.recipes import ADAPTIVE_LOSS, SMALL_ADAPTIVE_LM, SMALL_CONTROL_LM, SMALL_DEFINE_LM

# (column, flags, the same model's row in the WikiText-2 study)
MODELS = [("DeFINE", SMALL_DEFINE_LM, "authors-64-fan-in"), ("same Map, no unit", SMALL_CONTROL_LM, "map-64"),
          ("adaptive input", SMALL_ADAPTIVE_LM, "map-256")]
STUDY_TABLE = os.path.join(REPO, "docs", "results", "lm_wikitext2.json")


def study_perplexities() -> dict:
    """{study row: (test ppl, updates)} of MODELS' rows in the committed WikiText-2 study table (empty if absent)."""
    if not os.path.isfile(STUDY_TABLE):
        return {}
    rows = {r["name"]: r for r in json.load(open(STUDY_TABLE))["rows"]}
    return {row: (rows[row]["test_ppl"], rows[row]["updates"]) for _, _, row in MODELS if row in rows}


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

    counts = {name: json.loads(run([sys.executable, "-m", "fairseq_define.params", "--data", data_bin, *model,
                                    "--json"]).stdout) for name, model, _ in MODELS}

    import torch
    from fairseq.models.transformer_lm import TransformerLanguageModel

    lm = TransformerLanguageModel.from_pretrained(save_dir, "checkpoint_last.pt", data_name_or_path=data_bin,
                                                  user_dir=PLUGIN)
    lm.eval()
    torch.manual_seed(0)
    sample = lm.sample("The history of", beam=1, sampling=True, sampling_topk=20, max_len_b=30)

    print("\n=== fairseq_define demo: DeFINE Transformer LM on WikiText-2 ===")
    print(f"test perplexity (fairseq-eval-lm, {args.max_update} updates): {perplexity:.2f}")
    print("\nparameters (python -m fairseq_define.params)  " + "".join(f"{name:>19}" for name, _, _ in MODELS))
    for part in ("map", "define", "context", "output", "total"):
        print(f"  {part:<44}" + "".join(f"{counts[name][part]:>19,}" for name, _, _ in MODELS))
    study = study_perplexities()
    if study:
        print("\nthe same models trained longer in the WikiText-2 study (docs/results/lm_wikitext2.json), test ppl:")
        for name, _, row in MODELS:
            if row in study:
                print(f"  {name:<20}{study[row][0]:>8.2f}  ({row}, {study[row][1]:,} updates)")
        (_, _, define), (_, _, control) = MODELS[:2]
        if define in study and control in study:
            print(f"DeFINE / its control (the same Map without the unit): {study[define][0] / study[control][0]:.3f}x"
                  f" there; a {args.max_update}-update run stops well above those perplexities")
    print(f"\nsample: {sample}")
    print(f"\ndone in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
