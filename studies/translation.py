"""Does DeFINE deliver in translation? The paper's MT comparison at Multi30k size (en->de), as data.

    python -m studies run mt_multi30k                        # baseline map-128 define-128 authors-128-fan-in
                                                             # recommended-128
    python -m studies run mt_multi30k --only map-128-seed2   # any other row, by name
    python -m studies run mt_multi30k --test PREFIX          # also score PREFIX.en -> PREFIX.de (new rows)
    python -m studies run mt_multi30k --tiny --workdir /tmp/w --results /tmp/r   # tiny models, for tests

One context model for every row (3+3 post-norm layers, 256 wide, FFN 1024, 4 heads), one joint sentencepiece
vocabulary (8,000 pieces) shared by encoder, decoder and output (`--share-all-embeddings`), the same recipe, seed
and budget (10 epochs). Rows (`translation_rows`):
- `baseline`: fairseq's `--arch transformer`, a V x 256 table;
- `map-128`: a V x 128 Map projected to d = m = 256, no unit; the tied output scores in the Map's space through the
  transposed projection;
- `define-128`, `define-64`: the same Map (n = 128, 64) + the paper's unit (k = 1024, N = 3, g_max = 32);
- `authors-128-fan-in`: the same Map + the authors' unit with each weight matrix's Adam step by fan-in;
- `recommended-128`: the same Map + the recommended preset (`--define-preset recommended`);
- `<row>-seedS`: `map-128` and `recommended-128` with --seed 2 and 3.
Diagnosis rows (scored on valid only): `define-128-unit-lr0.3`, `authors-128-residual-fan-in` (starting as its
control) and `authors-128-fan-in-host-scale` (its output matched to the host's embedding scale).

Scoring (`bleu_scores`), for two checkpoints, the average of the last 5 epoch checkpoints (average-last-5.pt) and
checkpoint_best.pt (lowest valid loss): the valid loss (fairseq-validate, kept as validate-CHOICE.txt); beam-5
translations of the valid set for each length penalty of `LENPEN_GRID`, the one with the highest valid BLEU chosen;
with it, the test set (and each extra test set) translated and scored with sacreBLEU (BLEU with its brevity penalty
and length ratio, chrF, signatures). Every fairseq-generate output is kept gzipped (generate-SUBSET.CHOICE...txt.gz),
the chosen translations as hypotheses[.valid].CHOICE.txt. The pairs of `PAIRS` are compared with sacreBLEU's paired
bootstrap test (1,000 resamples) on their test translations, in RESULTS/mt_multi30k.json beside the table.
"""

import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from examples.common import SHARED_DATA, fairseq
from examples.recipes import SMALL_MT_CONTEXT
from examples.translation import pipeline
from studies.language_models import variants
from studies.runner import Runner, Study, Trained
from studies.store import Store, valid_curve
from studies.units import NO_UNIT, RECOMMENDED, authors_fan_in, paper_unit

STUDY = "mt_multi30k"
MULTI30K = os.path.join(SHARED_DATA, "multi30k")
SOURCE, TARGET = "en", "de"
SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}  # split -> Multi30k's file name
VOCAB_SIZE = 8000
MAX_EPOCH = 10
# fairseq's IWSLT'14 de-en recipe (Adam 0.9/0.98, inverse_sqrt, dropout 0.3, weight decay 1e-4, label smoothing
# 0.1, 4096 tokens a batch) with a higher peak lr (1e-3, not 5e-4) and a shorter warmup (400 updates, about 3 of
# Multi30k's 132-update epochs) for a budget of 10 epochs, 1,320 updates. Validation each epoch logs the valid loss
# and a greedy valid BLEU (--eval-bleu, beam 1: the curves' BLEU; the reported scores are beam 5).
RECIPE = [
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "0.0", "--lr", "0.001",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400", "--warmup-init-lr", "1e-07",
    "--dropout", "0.3", "--weight-decay", "0.0001", "--criterion", "label_smoothed_cross_entropy",
    "--label-smoothing", "0.1", "--max-tokens", "4096", "--seed", "1", "--cpu", "--log-interval", "50",
    "--eval-bleu", "--eval-bleu-args", '{"beam": 1}', "--eval-bleu-remove-bpe", "sentencepiece",
]
BEAM = 5
LENPEN_GRID = (0.6, 0.8, 1.0, 1.2, 1.4, 1.6)  # the length penalties tried on valid, for each checkpoint
AVERAGED = 5  # epoch checkpoints averaged (and kept)
DEFAULT_ROWS = ("baseline", "map-128", "define-128", "authors-128-fan-in", "recommended-128")
# (system, control): the rows compared with sacreBLEU's paired bootstrap test on their test translations
PAIRS = (("define-128", "map-128"), ("define-128", "baseline"), ("map-128", "baseline"), ("define-64", "map-128"),
         ("authors-128-fan-in", "map-128"), ("authors-128-fan-in", "baseline"), ("recommended-128", "map-128"),
         ("recommended-128", "baseline"))

# The tiny variant (tests and trials): 1+1 layers, 64 wide, Maps a quarter as wide, a 500-piece vocabulary,
# 2 epochs of 1,024-token batches, the average of the last 2, three length penalties, translations capped at
# 1.2 x source + 10 tokens.
TINY_CONTEXT = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "64",
                "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
                "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
TINY_RECIPE = ["--lr", "0.003", "--warmup-updates", "20", "--max-tokens", "1024",
               "--eval-bleu-args", '{"beam": 1, "max_len_a": 1.2, "max_len_b": 10}']
TINY_GENERATE = ["--max-len-a", "1.2", "--max-len-b", "10"]
TINY_LENPEN_GRID = (0.6, 1.6)


def translation_rows(context: List[str], m: int, map_scale: int = 1):
    """(rows, diagnosis rows) {name: fairseq-train flags} on a context model `m` wide (`context`: its flags); a
    row named `*-n` has a Map n / `map_scale` wide, shared by encoder, decoder and output."""
    def map_row(n: int, unit=NO_UNIT) -> List[str]:
        return ["--arch", "define_transformer", *context, "--share-all-embeddings", "--define-map-dim",
                str(n // map_scale), "--define-input-dim", str(m), *unit]

    rows = {
        "baseline": ["--arch", "transformer", *context, "--share-all-embeddings"],
        "map-128": map_row(128),
        "define-128": map_row(128, paper_unit(4 * m)),
        "define-64": map_row(64, paper_unit(4 * m)),
        "authors-128-fan-in": map_row(128, authors_fan_in(m)),
        "recommended-128": map_row(128, RECOMMENDED),
    }
    rows.update(variants(rows, seeds=(2, 3), seeded=("map-128", "recommended-128")))
    diagnosis = {  # a main row + one flag (a later flag overrides an earlier one)
        "define-128-unit-lr0.3": [*rows["define-128"], "--define-unit-lr-scale", "0.3"],
        "authors-128-residual-fan-in": [*rows["authors-128-fan-in"], "--define-residual"],
        "authors-128-fan-in-host-scale": [*rows["authors-128-fan-in"], "--define-host-scale"],
    }
    return rows, diagnosis


def mt_multi30k(tiny: bool = False, tests: tuple = ()) -> Study:
    """The Multi30k study; `tiny`: the same rows on tiny models (TINY_*); `tests`: extra test-set prefixes
    (PREFIX.en, PREFIX.de), scored on every new test row."""
    if tiny:
        rows, diagnosis = translation_rows(TINY_CONTEXT, 64, map_scale=4)
        vocab_size, averaged, max_epoch, lenpens, generate_flags = 500, 2, 2, TINY_LENPEN_GRID, TINY_GENERATE
    else:
        rows, diagnosis = translation_rows(SMALL_MT_CONTEXT, 256)
        vocab_size, averaged, max_epoch, lenpens, generate_flags = VOCAB_SIZE, AVERAGED, MAX_EPOCH, LENPEN_GRID, []
    train = ["--task", "translation", *RECIPE, "--keep-last-epochs", str(averaged), *(TINY_RECIPE if tiny else [])]
    prepared = {}  # the data folder `prepare` made (for `finish`, which reads the test references)

    def prepare(data: str, workdir: str, runner: Runner) -> str:
        prepared["data_bin"] = prepare_multi30k(data, os.path.join(workdir, STUDY), vocab_size, tests, runner)
        return prepared["data_bin"]

    def finish(study: Study, store: Store, finished: list) -> dict:
        references = pipeline.read_lines(reference_path(prepared["data_bin"], "test"))
        pairs = paired_tests(store, study, references)
        print_pairs(pairs)
        return {"paired_bootstrap": pairs}

    score = bleu_scores(averaged, lenpens, generate_flags=generate_flags, tests=tests)
    return Study(STUDY, rows, train, prepare, score, MULTI30K, max_epoch=max_epoch, diagnosis=diagnosis,
                 table=table_entries, finish=finish, default=DEFAULT_ROWS)


# ---- data ---------------------------------------------------------------------------------------------------
def prepare_multi30k(data: str, workdir: str, vocab_size: int, tests: Sequence[str], runner: Runner) -> str:
    """A joint sentencepiece model (WORKDIR/spm), the encoded text (WORKDIR/spm-text), the binarized data
    (WORKDIR/data-bin), a copy of the valid and test references (WORKDIR/references) and each extra test set
    binarized with the study's dictionary (WORKDIR/test-NAME), each made once; returns the data-bin folder."""
    for name in SPLITS.values():
        for lang in (SOURCE, TARGET):
            if not os.path.isfile(os.path.join(data, f"{name}.{lang}")):
                sys.exit(f"missing {os.path.join(data, f'{name}.{lang}')} (pass --data DIR with Multi30k's "
                         f"{', '.join(SPLITS.values())} .{SOURCE}/.{TARGET} files)")
    spm = pipeline.train_sentencepiece([os.path.join(data, f"{SPLITS['train']}.{lang}") for lang in (SOURCE, TARGET)],
                                       os.path.join(workdir, "spm", f"joint{vocab_size}"), vocab_size)
    text = os.path.join(workdir, "spm-text")
    if not os.path.isfile(os.path.join(text, f"test.{TARGET}")):
        pipeline.encode_splits(spm, {split: os.path.join(data, name) for split, name in SPLITS.items()}, text,
                               SOURCE, TARGET)
    data_bin = pipeline.preprocess(text, os.path.join(workdir, "data-bin"), SOURCE, TARGET, runner=runner)
    for split in ("valid", "test"):
        copy_once(os.path.join(data, f"{SPLITS[split]}.{TARGET}"), reference_path(data_bin, split))
    for prefix in tests:
        binarize_test(prefix, spm, data_bin, runner)
    return data_bin


def copy_once(source: str, dest: str):
    if not os.path.isfile(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(source, dest)


def reference_path(data_bin: str, split: str) -> str:
    """The target side of Multi30k's `split` (valid or test), as `prepare_multi30k` copied it beside `data_bin`."""
    return os.path.join(os.path.dirname(data_bin), "references", f"{split}.{TARGET}")


def extra_test_bin(data_bin: str, prefix: str) -> str:
    """The folder of extra test set PREFIX, beside `data_bin`: its `test` subset and its reference."""
    return os.path.join(os.path.dirname(data_bin), "test-" + os.path.basename(prefix))


def binarize_test(prefix: str, spm: str, data_bin: str, runner: Runner) -> str:
    """PREFIX.en/.de encoded with the study's sentencepiece model and binarized with its dictionary as the `test`
    subset of `extra_test_bin` (once), with a copy of PREFIX.de; returns that folder."""
    dest = extra_test_bin(data_bin, prefix)
    if not os.path.isfile(os.path.join(dest, f"test.{SOURCE}-{TARGET}.{TARGET}.bin")):
        text = os.path.join(dest, "spm-text")
        pipeline.encode_splits(spm, {"test": prefix}, text, SOURCE, TARGET)
        dicts = [a for lang, flag in ((SOURCE, "--srcdict"), (TARGET, "--tgtdict"))
                 for a in (flag, os.path.join(data_bin, f"dict.{lang}.txt"))]
        runner(fairseq("preprocess", "--source-lang", SOURCE, "--target-lang", TARGET, "--testpref",
                       os.path.join(text, "test"), "--destdir", dest, *dicts, "--workers", "2"))
    copy_once(f"{prefix}.{TARGET}", os.path.join(dest, f"reference.{TARGET}"))
    return dest


# ---- scores -------------------------------------------------------------------------------------------------
def choose_lenpen(grid: Dict[float, dict]) -> float:
    """The length penalty of `grid` ({lenpen: scores}) with the highest BLEU; on a tie, the one nearest 1.0
    (fairseq's default), then the smaller."""
    return max(grid, key=lambda lenpen: (grid[lenpen]["bleu"], -abs(lenpen - 1.0), -lenpen))


def write_lines(path: str, lines: Sequence[str]):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


@dataclass(frozen=True)
class Translator:
    """Beam search with one checkpoint of a row, its outputs kept in the row's folder."""

    row: Trained
    checkpoint: str
    beam: int
    generate_flags: Sequence[str]

    def scores(self, data_bin: str, subset: str, lenpen: float, references: Sequence[str], output: str,
               hypotheses: Optional[str] = None) -> tuple:
        """(hypotheses, sacreBLEU scores) of every sentence of `data_bin`'s `subset` translated with `lenpen`;
        fairseq-generate's output kept as OUTPUT (gzipped), the hypotheses as HYPOTHESES if given."""
        lines = pipeline.generate(data_bin, self.checkpoint, subset, beam=self.beam,
                                  extra=["--cpu", "--lenpen", lenpen, *self.generate_flags],
                                  runner=lambda command, log=None: self.row.run_kept(command, output))
        if hypotheses:
            write_lines(os.path.join(self.row.out_dir, hypotheses), lines)
        return lines, pipeline.score(lines, references)


def valid_loss(row: Trained, checkpoint: str, output: str) -> float:
    """fairseq-validate's loss (label-smoothed, base 2, as the training log's) of `checkpoint` on the valid set,
    its output kept as OUT_DIR/OUTPUT."""
    text = row.output(fairseq("validate", row.data_bin, "--path", checkpoint, "--task", "translation",
                              "--valid-subset", "valid", "--max-tokens", 8000, "--log-format", "simple", "--cpu"),
                      output)
    return float(re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", text)[-1])


def bleu_scores(averaged: int = AVERAGED, lenpens: Sequence[float] = LENPEN_GRID, beam: int = BEAM,
                generate_flags: Sequence[str] = (), tests: Sequence[str] = ()) -> Callable[[Trained], dict]:
    """The score hook: for each checkpoint choice (the average of the last `averaged` epoch checkpoints, written
    now, and checkpoint_best.pt), its valid loss, the length penalty of `lenpens` with the highest valid BLEU (beam
    `beam`), and with it the scores on test (and each extra test set of `tests`), or on valid alone for a diagnosis
    row. Returns {"scores", "valid_scores", "extra_tests", "scored_on", "lenpen": {choice: chosen},
    "lenpen_grid": {choice: {lenpen: {bleu, brevity_penalty}}}}."""
    def score(row: Trained) -> dict:
        on_test = "test" in row.subsets
        valid_references = pipeline.read_lines(reference_path(row.data_bin, "valid"))
        result = {"scores": {}, "valid_scores": {}, "extra_tests": {}, "scored_on": row.subsets[-1], "lenpen": {},
                  "lenpen_grid": {}}
        epochs = pipeline.last_epoch_checkpoints(row.save_dir, averaged)
        average = f"average-last-{averaged}"  # the mean of the last epoch checkpoints, written now
        choices = {average: pipeline.average_checkpoints(epochs, os.path.join(row.save_dir, f"{average}.pt")),
                   "best": os.path.join(row.save_dir, "checkpoint_best.pt")}
        for choice, checkpoint in choices.items():
            translator = Translator(row, checkpoint, beam, generate_flags)
            loss = valid_loss(row, checkpoint, f"validate-{choice}.txt")
            grid = {lenpen: translator.scores(row.data_bin, "valid", lenpen, valid_references,
                                              f"generate-valid.{choice}.lenpen{lenpen}.txt.gz")
                    for lenpen in lenpens}
            chosen = choose_lenpen({lenpen: scores for lenpen, (_, scores) in grid.items()})
            write_lines(os.path.join(row.out_dir, f"hypotheses.valid.{choice}.txt"), grid[chosen][0])
            result["lenpen"][choice] = chosen
            result["lenpen_grid"][choice] = {str(lenpen): {"bleu": scores["bleu"],
                                                           "brevity_penalty": scores["brevity_penalty"]}
                                             for lenpen, (_, scores) in grid.items()}
            result["valid_scores"][choice] = grid[chosen][1]
            scores = grid[chosen][1]
            if on_test:
                _, scores = translator.scores(row.data_bin, "test", chosen,
                                              pipeline.read_lines(reference_path(row.data_bin, "test")),
                                              f"generate-test.{choice}.txt.gz", f"hypotheses.{choice}.txt")
                for prefix in tests:
                    name, folder = os.path.basename(prefix), extra_test_bin(row.data_bin, prefix)
                    references = pipeline.read_lines(os.path.join(folder, f"reference.{TARGET}"))
                    result["extra_tests"].setdefault(name, {})[choice] = translator.scores(
                        folder, "test", chosen, references, f"generate-{name}.{choice}.txt.gz",
                        f"hypotheses.{name}.{choice}.txt")[1]
            result["scores"][choice] = {**scores, "valid_loss": loss, "checkpoint": os.path.basename(checkpoint)}
        result["scores"][average]["averaged"] = [os.path.basename(path) for path in epochs]
        return result
    return score


# ---- table, paired tests, figure ----------------------------------------------------------------------------
def table_entries(result: dict) -> List[dict]:
    """A finished row's entries in RESULTS/mt_multi30k.json: one per checkpoint choice."""
    entries = []
    for choice, s in result["scores"].items():
        valid = result.get("valid_scores", {}).get(choice)
        entries.append({
            "name": result["name"], "n": result["n"], "transform": result["transform"], "params": result["params"],
            "define_params": result["define_params"], "bleu": round(s["bleu"], 2), "chrf": round(s["chrf"], 2),
            "valid_loss": s["valid_loss"], "updates": result["updates"], "train_wall_s": result["train_wall_s"],
            "checkpoint": choice, "scored_on": result.get("scored_on", "test"),
            "brevity_penalty": s.get("brevity_penalty"),
            "valid": {k: valid[k] for k in ("bleu", "brevity_penalty")} if valid else None,
            "extra_tests": {name: {"bleu": round(c[choice]["bleu"], 2), "chrf": round(c[choice]["chrf"], 2)}
                            for name, c in result.get("extra_tests", {}).items()},
            "lenpen": result.get("lenpen", {}).get(choice)})
    return entries


def paired_tests(store: Store, study: Study, references: Sequence[str]) -> List[dict]:
    """sacreBLEU's paired bootstrap test of each pair of `PAIRS` (system, control) among the finished rows scored on
    test, for each checkpoint choice, on their test translations (RESULTS/STUDY/ROW/hypotheses.CHOICE.txt)."""
    results = store.rows(study.name, list(study.every_row))
    tested = {name for name, r in results.items() if r.get("scored_on", "test") == "test"}
    tests = []
    for system, control in (pair for pair in PAIRS if set(pair) <= tested):
        for choice in results[system]["scores"]:
            paths = [store.path(study.name, name, f"hypotheses.{choice}.txt") for name in (system, control)]
            if all(os.path.isfile(path) for path in paths):
                system_text, control_text = (pipeline.read_lines(path) for path in paths)
                tests.append({"system": system, "control": control, "checkpoint": choice,
                              **pipeline.paired_bootstrap(control_text, system_text, references)})
    return tests


def print_pairs(pairs: List[dict]):
    """The paired bootstrap tests as a table: each metric's difference (system - control) and p-value."""
    if not pairs:
        return
    width = max(len(t[k]) + 2 for t in pairs for k in ("system", "control"))
    print(f"\n{'system':<{width}}{'control':<{width}}{'checkpoint':<16}{'dBLEU':>7}{'p':>7}{'dchrF':>7}{'p':>7}")
    for t in pairs:
        print(f"{t['system']:<{width}}{t['control']:<{width}}{t['checkpoint']:<16}{t['bleu_delta']:>+7.2f}"
              f"{t['bleu_p']:>7.3f}{t['chrf_delta']:>+7.2f}{t['chrf_p']:>7.3f}")


def plot(store: Store, out_path: str, study: str = STUDY) -> Optional[str]:
    """Valid loss (and greedy valid BLEU, where a run logged it with --eval-bleu) against updates for every finished
    row of `study` with a train.log, to OUT_PATH; returns it (None without any curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: (valid_curve(store.log(study, name), "loss"), valid_curve(store.log(study, name), "bleu"))
              for name in store.rows(study)}
    curves = {name: curve for name, curve in curves.items() if curve[0]}
    if not curves:
        return None
    with_bleu = any(bleu for _, bleu in curves.values())
    fig, axes = plt.subplots(1, 2 if with_bleu else 1, figsize=(12 if with_bleu else 6.5, 4.5), squeeze=False)
    for name, (loss, bleu) in curves.items():
        style = "--" if name.startswith("map") else ":" if name == "baseline" else "-"
        for ax, points in zip(axes[0], (loss, bleu)):
            if points:
                ax.plot([u for u, _, _ in points], [v for _, _, v in points], style, marker="o", markersize=3,
                        label=name)
    axes[0][0].set(xlabel="updates", ylabel="valid loss (label-smoothed, base 2)", title="Multi30k en-de: valid loss")
    if with_bleu:
        axes[0][1].set(xlabel="updates", ylabel="valid BLEU (greedy)", title="valid BLEU (greedy, --eval-bleu)")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
