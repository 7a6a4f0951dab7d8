"""WMT'14 en->de with a DeFINE Transformer (paper Table 3: n=128, k=1024, m=512, N=3), for GPU machines.

    python -m examples.translation.wmt14_en_de --workdir runs/wmt14 [--arch define_transformer_wmt_en_de]
    python -m examples.translation.wmt14_en_de --workdir runs/wmt14-base --arch transformer_wmt_en_de  # baseline

Downloads the standard training data (Europarl v7, Common Crawl, News Commentary v12; newstest2013 for
validation) on your machine, takes newstest2014 (`wmt14/full`) from sacreBLEU, then runs the same steps as
the Multi30k study, studies/translation.py (examples/translation/pipeline.py: joint sentencepiece BPE,
fairseq-preprocess with a joined dictionary, fairseq-train, fairseq-generate, sacreBLEU). Training flags follow
fairseq's examples/scaling_nmt recipe for one GPU (update-freq 8 ~ 8 GPUs); allow about a day on one recent GPU.
"""

import argparse
import os
import subprocess
import sys
import tarfile
import urllib.request

from examples.common import REPO
from examples.translation import pipeline as mt_pipeline

ARCHIVES = {
    "training-parallel-europarl-v7.tgz": "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz",
    "training-parallel-commoncrawl.tgz": "http://statmt.org/wmt13/training-parallel-commoncrawl.tgz",
    "training-parallel-nc-v12.tgz": "http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz",
    "dev.tgz": "http://data.statmt.org/wmt17/translation-task/dev.tgz",
}
TRAIN_CORPORA = ["training/europarl-v7.de-en", "commoncrawl.de-en", "training/news-commentary-v12.de-en"]
VALID = "dev/newstest2013"
RECIPE = [
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "0.0", "--lr", "0.0007",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000", "--warmup-init-lr", "1e-07", "--dropout", "0.1",
    "--weight-decay", "0.0", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--max-tokens", "4096", "--update-freq", "8", "--share-all-embeddings", "--fp16", "--max-update", "100000",
    "--keep-last-epochs", "5",
]


def download(orig: str):
    os.makedirs(orig, exist_ok=True)
    for name, url in ARCHIVES.items():
        path = os.path.join(orig, name)
        if not os.path.isfile(path):
            print(f"downloading {url}", flush=True)
            urllib.request.urlretrieve(url, path + ".part")
            os.replace(path + ".part", path)
        with tarfile.open(path) as archive:
            archive.extractall(orig)


def concatenate_training_data(orig: str, raw: str, max_len: int = 250, ratio: float = 1.5 * 1.5 * 1.5 * 1.5):
    """raw/train.{en,de}: the three corpora, dropping empty, over-long and badly length-mismatched pairs."""
    os.makedirs(raw, exist_ok=True)
    kept = 0
    with open(os.path.join(raw, "train.en"), "w", encoding="utf-8") as out_en, \
            open(os.path.join(raw, "train.de"), "w", encoding="utf-8") as out_de:
        for corpus in TRAIN_CORPORA:
            with open(os.path.join(orig, f"{corpus}.en"), encoding="utf-8") as f_en, \
                    open(os.path.join(orig, f"{corpus}.de"), encoding="utf-8") as f_de:
                for en, de in zip(f_en, f_de):
                    en, de = en.strip(), de.strip()
                    n_en, n_de = len(en.split()), len(de.split())
                    if 0 < n_en <= max_len and 0 < n_de <= max_len and max(n_en, n_de) <= ratio * min(n_en, n_de) + 5:
                        out_en.write(en + "\n")
                        out_de.write(de + "\n")
                        kept += 1
    print(f"{kept} training pairs")


def sacrebleu_test_set(raw: str):
    for side, lang in (("src", "en"), ("ref", "de")):
        out = subprocess.run([sys.executable, "-m", "sacrebleu", "-t", "wmt14/full", "-l", "en-de", "--echo", side],
                             capture_output=True, text=True, check=True)
        with open(os.path.join(raw, f"test.{lang}"), "w", encoding="utf-8") as f:
            f.write(out.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "wmt14"))
    parser.add_argument("--arch", default="define_transformer_wmt_en_de")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--extra", default="", help="more fairseq-train flags")
    args = parser.parse_args(argv)

    orig, raw = os.path.join(args.workdir, "orig"), os.path.join(args.workdir, "raw")
    if not os.path.isfile(os.path.join(raw, "test.de")):
        download(orig)
        concatenate_training_data(orig, raw)
        for lang in ("en", "de"):
            os.replace(os.path.join(orig, f"{VALID}.{lang}"), os.path.join(raw, f"valid.{lang}"))
        sacrebleu_test_set(raw)
    spm = mt_pipeline.train_sentencepiece([os.path.join(raw, "train.en"), os.path.join(raw, "train.de")],
                                          os.path.join(args.workdir, "spm", f"joint{args.vocab_size}"), args.vocab_size,
                                          input_sentence_size=10_000_000, shuffle_input_sentence=True)
    text = os.path.join(args.workdir, "spm-text")
    if not os.path.isfile(os.path.join(text, "test.de")):
        mt_pipeline.encode_splits(spm, {s: os.path.join(raw, s) for s in ("train", "valid", "test")}, text, "en", "de")
    data_bin = mt_pipeline.preprocess(text, os.path.join(args.workdir, "data-bin"), "en", "de")
    save_dir = os.path.join(args.workdir, "checkpoints")
    mt_pipeline.train(data_bin, save_dir, ["--arch", args.arch, *args.extra.split()], recipe=RECIPE)
    checkpoint = mt_pipeline.average_checkpoints(mt_pipeline.last_epoch_checkpoints(save_dir, 5),
                                                 os.path.join(save_dir, "checkpoint_avg5.pt"))  # the paper's baselines
    hypotheses = mt_pipeline.generate(data_bin, checkpoint, "test", beam=4, extra=["--lenpen", "0.6"])
    scores = mt_pipeline.score(hypotheses, mt_pipeline.read_lines(os.path.join(raw, "test.de")))
    print(f"BLEU {scores['bleu']:.2f} ({scores['bleu_signature']})\n"
          f"chrF {scores['chrf']:.2f} ({scores['chrf_signature']})")


if __name__ == "__main__":
    main()
