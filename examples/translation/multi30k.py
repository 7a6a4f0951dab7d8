"""Multi30k en->de, raw text to sacreBLEU: the baseline Transformer and the DeFINE one, same recipe.

    python -m examples.translation.multi30k --model both [--data ../shared/data/multi30k] [--workdir runs/multi30k]

Steps (examples/translation/pipeline.py): joint BPE with sentencepiece on the training text of both languages, encode,
fairseq-preprocess with a joined dictionary, fairseq-train (pipeline.RECIPE), fairseq-generate
on test2016 (beam 5, every sentence), detokenize, sacreBLEU BLEU and chrF against the raw references. Prints the
scores with their signatures and the parameter counts, and writes WORKDIR/results.json (and the training logs,
WORKDIR/train-MODEL.log, and hypotheses).
"""

import argparse
import json
import os
import subprocess
import sys
import time

from examples.common import REPO, SHARED_DATA, words_per_second
from examples.recipes import SMALL_MT_BASELINE, SMALL_MT_DEFINE
from examples.translation import pipeline as mt_pipeline

MODELS = {"baseline": SMALL_MT_BASELINE, "define": SMALL_MT_DEFINE}
SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}


def prepare(data: str, workdir: str, vocab_size: int, src: str, tgt: str, splits=SPLITS) -> str:
    for split, name in splits.items():
        for lang in (src, tgt):
            if not os.path.isfile(os.path.join(data, f"{name}.{lang}")):
                sys.exit(f"missing {os.path.join(data, f'{name}.{lang}')} (pass --data DIR with Multi30k's "
                         f"{', '.join(splits.values())} .{src}/.{tgt} files)")
    spm = mt_pipeline.train_sentencepiece([os.path.join(data, f"{splits['train']}.{lang}") for lang in (src, tgt)],
                                          os.path.join(workdir, "spm", f"joint{vocab_size}"), vocab_size)
    text = os.path.join(workdir, "spm-text")
    if not os.path.isfile(os.path.join(text, f"test.{tgt}")):
        mt_pipeline.encode_splits(spm, {split: os.path.join(data, name) for split, name in splits.items()}, text, src, tgt)
    return mt_pipeline.preprocess(text, os.path.join(workdir, "data-bin"), src, tgt)


def parameter_counts(data_bin: str, model_flags) -> dict:
    out = subprocess.run([sys.executable, "-m", "fairseq_define.params", "--data", data_bin, *model_flags,
                          "--share-all-embeddings", "--json"], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(SHARED_DATA, "multi30k"))
    parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "multi30k"))
    parser.add_argument("--model", choices=["baseline", "define", "both"], default="both")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-update", type=int, default=3000)
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    parser.add_argument("--extra", default="", help="more fairseq-train flags for both models (after the recipe's, so "
                        "they win), e.g. '--encoder-layers 6 --decoder-layers 6'")
    parser.add_argument("--define-extra", default="", help="more flags for the DeFINE model, e.g. '--define-map-dim 128'")
    parser.add_argument("--generate-extra", default="", help="more fairseq-generate flags, e.g. '--max-len-b 50'")
    args = parser.parse_args(argv)

    data_bin = prepare(os.path.abspath(args.data), args.workdir, args.vocab_size, args.src, args.tgt)
    references = mt_pipeline.read_lines(os.path.join(args.data, f"{SPLITS['test']}.{args.tgt}"))
    results = {}
    for name in (["baseline", "define"] if args.model == "both" else [args.model]):
        model_flags = MODELS[name] + (args.define_extra.split() if name == "define" else [])
        flags = model_flags + args.extra.split()
        save_dir = os.path.join(args.workdir, f"checkpoints-{name}")
        start = time.time()
        log = mt_pipeline.train(data_bin, save_dir, model_flags,
                                extra=["--no-epoch-checkpoints", *args.extra.split(), "--max-update", args.max_update,
                                       "--cpu"])
        train_seconds = time.time() - start
        with open(os.path.join(args.workdir, f"train-{name}.log"), "w") as f:
            f.write(log)
        hypotheses = mt_pipeline.generate(data_bin, os.path.join(save_dir, "checkpoint_last.pt"), "test",
                                          extra=["--cpu", *args.generate_extra.split()])
        results[name] = dict(mt_pipeline.score(hypotheses, references), params=parameter_counts(data_bin, flags),
                             train_wps=words_per_second(log), train_seconds=train_seconds, flags=flags)
        r = results[name]
        print(f"\n[{name}] BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}  on {r['sentences']} test2016 sentences, "
              f"{r['params']['total']:,} parameters, {r['train_wps']:.0f} words/s")
        print(f"  {r['bleu_signature']}\n  {r['chrf_signature']}")
        with open(os.path.join(args.workdir, f"hypotheses-{name}.{args.tgt}"), "w", encoding="utf-8") as f:
            f.write("\n".join(hypotheses) + "\n")
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("\n" + f"{'model':<10}{'BLEU':>7}{'chrF':>7}{'total params':>15}{'map':>12}{'define':>10}{'words/s':>9}")
    for name, r in results.items():
        p = r["params"]
        print(f"{name:<10}{r['bleu']:>7.2f}{r['chrf']:>7.2f}{p['total']:>15,}{p['map']:>12,}{p['define']:>10,}{r['train_wps']:>9.0f}")
    return results


if __name__ == "__main__":
    main()
