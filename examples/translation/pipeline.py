"""Raw parallel text to a sacreBLEU score through fairseq's CLIs, one function per step.

Used by the Multi30k study (studies/translation.py, runs here) and examples/translation/wmt14_en_de.py (for GPU
machines), and by the tests, so the WMT recipe goes through the code paths that the Multi30k run exercises:

    spm = train_sentencepiece([train.en, train.de], workdir/spm, vocab_size)   # joint BPE (sentencepiece)
    encode_splits(spm, raw_prefixes, workdir/spm-text, "en", "de")              # text -> pieces
    data_bin = preprocess(workdir/spm-text, workdir/data-bin, "en", "de")       # joined dictionary
    train(data_bin, save_dir, model_flags, recipe_flags)                        # fairseq-train
    average_checkpoints(last_epoch_checkpoints(save_dir, 5), averaged)          # as the paper's baselines
    hypotheses = generate(data_bin, checkpoint, "test")                         # beam search, detokenized
    scores = score(hypotheses, references)                                       # sacreBLEU BLEU + chrF
"""

import os
import re
from typing import Dict, List, Sequence

from examples.common import fairseq, run

# The recipe shared by the baseline and the DeFINE model (Multi30k-sized; dropout and label smoothing as in
# fairseq's IWSLT recipe).
RECIPE = [
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "0.0", "--lr", "0.001",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400", "--dropout", "0.3", "--weight-decay", "0.0001",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "4096",
    "--share-all-embeddings", "--seed", "1",
]


def train_sentencepiece(inputs: Sequence[str], model_prefix: str, vocab_size: int, **options) -> str:
    """A joint BPE model over `inputs` (the training text of both languages); returns the .model path.
    `options` go to sentencepiece's trainer (e.g. input_sentence_size for large corpora)."""
    import sentencepiece as spm

    model = model_prefix + ".model"
    if not os.path.isfile(model):
        os.makedirs(os.path.dirname(model_prefix), exist_ok=True)
        spm.SentencePieceTrainer.train(
            input=",".join(inputs), model_prefix=model_prefix, vocab_size=vocab_size, model_type="bpe",
            character_coverage=1.0, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, num_threads=2,
            minloglevel=2, **options,
        )
    return model


def encode_splits(spm_model: str, raw: Dict[str, str], out_dir: str, src: str, tgt: str):
    """raw: split name -> path prefix of the raw files (prefix.src, prefix.tgt); writes out_dir/split.lang."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=spm_model)
    os.makedirs(out_dir, exist_ok=True)
    for split, prefix in raw.items():
        for lang in (src, tgt):
            with open(f"{prefix}.{lang}", encoding="utf-8") as fin, \
                    open(os.path.join(out_dir, f"{split}.{lang}"), "w", encoding="utf-8") as fout:
                for line in fin:
                    fout.write(" ".join(processor.encode(line.strip(), out_type=str)) + "\n")


def preprocess(text_dir: str, dest_dir: str, src: str, tgt: str, splits=("train", "valid", "test"),
               runner=run) -> str:
    """fairseq-preprocess with a joined dictionary (needed by --share-all-embeddings); commands go through
    `runner`."""
    if not os.path.isfile(os.path.join(dest_dir, f"dict.{src}.txt")):
        prefixes = {"train": "--trainpref", "valid": "--validpref", "test": "--testpref"}
        args = [a for split in splits for a in (prefixes[split], os.path.join(text_dir, split))]
        runner(fairseq("preprocess", "--source-lang", src, "--target-lang", tgt, *args, "--destdir", dest_dir,
                        "--joined-dictionary", "--workers", "2"))
    return dest_dir


def train(data_bin: str, save_dir: str, model_flags: Sequence[str], recipe=RECIPE, extra: Sequence[str] = (),
          log: str = None) -> str:
    """fairseq-train (epoch checkpoints as the recipe and `extra` say); returns its log, also appended to `log`."""
    os.makedirs(save_dir, exist_ok=True)
    out = run(fairseq("train", data_bin, "--task", "translation", *model_flags, *recipe, "--save-dir", save_dir,
                      "--log-format", "simple", *extra), log=log or os.path.join(save_dir, "train.log"))
    return out.stdout


def last_epoch_checkpoints(save_dir: str, count: int) -> List[str]:
    """The `count` epoch checkpoints (checkpointN.pt) of the highest epochs in `save_dir`, oldest first."""
    epochs = sorted(int(m.group(1)) for name in os.listdir(save_dir)
                    if (m := re.fullmatch(r"checkpoint(\d+)\.pt", name)))
    if len(epochs) < count:
        raise FileNotFoundError(f"{save_dir} has {len(epochs)} epoch checkpoints, {count} needed to average (train "
                                f"without --no-epoch-checkpoints, keeping at least {count}: --keep-last-epochs)")
    return [os.path.join(save_dir, f"checkpoint{epoch}.pt") for epoch in epochs[-count:]]


def average_checkpoints(paths: Sequence[str], out: str) -> str:
    """Write to `out` the checkpoint whose model weights are the mean of those of `paths` (the rest is the last
    one's), as fairseq's scripts/average_checkpoints.py does; returns `out`."""
    import torch

    import fairseq_define.plugin  # noqa: F401  (its shims: translation checkpoints keep their flags as an
    # argparse.Namespace, and numpy --eval-bleu meters)
    states = [torch.load(path, map_location="cpu") for path in paths]
    averaged = states[-1]
    for key, value in averaged["model"].items():
        if value.is_floating_point():
            total = sum(state["model"][key].double() for state in states)
            averaged["model"][key] = total.div(len(states)).to(value.dtype)
    torch.save(averaged, out)
    return out


def generate(data_bin: str, checkpoint: str, subset: str = "test", beam: int = 5,
             extra: Sequence[str] = (), runner=run) -> List[str]:
    """Detokenized hypotheses of every sentence of `subset`, in corpus order (fairseq-generate run by `runner`).

    `--required-batch-size-multiple 1`: otherwise fairseq drops a last batch that is not a multiple of 8.
    """
    out = runner(fairseq("generate", data_bin, "--path", checkpoint, "--gen-subset", subset, "--beam", beam,
                         "--remove-bpe", "sentencepiece", "--required-batch-size-multiple", 1, "--max-tokens", 8000,
                         *extra))
    detok = {}
    for line in out.stdout.splitlines():
        match = re.match(r"^D-(\d+)\t[^\t]*\t(.*)$", line)
        if match:
            detok[int(match.group(1))] = match.group(2)
    if sorted(detok) != list(range(len(detok))):
        raise RuntimeError(f"fairseq-generate returned {len(detok)} hypotheses with gaps in their ids")
    return [detok[i] for i in range(len(detok))]


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """sacreBLEU BLEU (with its brevity penalty and hypothesis / reference length ratio) and chrF of detokenized
    text, with their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": bleu_score.score, "chrf": chrf_score.score, "brevity_penalty": bleu_score.bp,
            "length_ratio": bleu_score.sys_len / bleu_score.ref_len, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "sentences": len(hypotheses)}


def paired_bootstrap(control: Sequence[str], system: Sequence[str], references: Sequence[str],
                     samples: int = 1000) -> dict:
    """sacreBLEU's paired bootstrap test (as `sacrebleu --paired-bs`: `samples` resamples, its fixed seed) of
    `system`'s BLEU and chrF against `control`'s on the same sentences: each metric's difference and p-value."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    if not len(control) == len(system) == len(references):
        raise ValueError(f"{len(control)} and {len(system)} hypotheses for {len(references)} references")
    signatures, scores = PairedTest([("control", list(control)), ("system", list(system))],
                                    {"bleu": BLEU(), "chrf": CHRF()}, [list(references)], test_type="bs",
                                    n_samples=samples)()
    out = {}
    for key, (name, signature) in zip(("bleu", "chrf"), signatures.items()):
        control_result, system_result = scores[name]
        out.update({f"{key}_delta": float(system_result.score - control_result.score),
                    f"{key}_p": float(system_result.p_value), f"{key}_signature": str(signature)})
    return out


def read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]
