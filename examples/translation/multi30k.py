"""Does DeFINE deliver in translation? The paper's MT comparison at Multi30k size (en->de), resumable row by row.

    python -m examples.translation.multi30k [--data ../shared/data/multi30k]     # baseline, map-128, define-128
    python -m examples.translation.multi30k --only define-64                     # the optional row
    python -m examples.translation.multi30k --test PREFIX [--test PREFIX2]       # also score PREFIX.en -> PREFIX.de
    python -m examples.translation.multi30k --plot-only                          # figures from the committed logs

One context model for every row (3+3 post-norm layers, 256 wide, FFN 1024, 4 heads), one joint sentencepiece
vocabulary shared by encoder, decoder and output (`--share-all-embeddings`), the same recipe, seed and budget.
Rows (`ROWS`):
- `baseline`: fairseq's `--arch transformer`, a V x 256 table;
- `map-128`: a V x 128 Map projected to d = m = 256, no unit (`--define-transform none`); the tied output scores
  in the Map's space through the transposed projection;
- `define-128`: the same Map + the paper's unit (k = 1024, N = 3, g_max = 32: 437,120 parameters; the paper's MT
  unit takes n = 128 directly with g_max = 4, 1.36M);
- `define-64`: the same with n = 64 (run only when named with --only);
- `authors-128-fan-in`: the same Map + the recommended unit (issue #24; examples/recipes.py: the authors' unit,
  k = 1024, N = 3, g_max = 32, each weight matrix's Adam step by fan-in).
Diagnosis rows (`DIAGNOSIS`; run only when named with --only, scored on the valid set, never on test):
- `define-128-unit-lr0.3`: `define-128` with the unit's Adam steps at 0.3x (`--define-unit-lr-scale 0.3`, the
  Transformer LM study's fix);
- `authors-128-residual-fan-in`: `authors-128-fan-in` starting as its control (`--define-residual`).

Steps (examples/translation/pipeline.py): joint BPE with sentencepiece on the training text of both languages,
fairseq-preprocess with a joined dictionary, fairseq-train (`RECIPE`: fairseq's IWSLT recipe scaled to Multi30k,
epoch checkpoints kept, valid loss and greedy valid BLEU each epoch), then for two checkpoints, the average of the
last 5 epoch checkpoints and checkpoint_best.pt (lowest valid loss): valid loss (fairseq-validate), fairseq-generate on
every test2016 sentence (beam 5), sacreBLEU BLEU (with its brevity penalty and length ratio) and chrF with their
signatures; each `--test PREFIX` is scored too; and the same beam-5 scores on the valid set (`valid_scores`: the
length question is checked there, not on test).
The rows of `PAIRS` are compared with sacreBLEU's paired bootstrap test (1,000 resamples) on their test
translations.

Checkpoints go to WORKDIR/mt_multi30k/ROW (fairseq resumes an interrupted run from checkpoint_last.pt); the fairseq
log, result.json and the translations go to RESULTS/mt_multi30k/ROW (committed): a row with a result.json is
skipped (a missing `--test` score is added to it while its checkpoints remain), so the study resumes row by row
across sessions. The table and the paired tests go to RESULTS/mt_multi30k.json and the curves to
RESULTS/figures/mt_multi30k_valid.png.
"""

import argparse
import json
import os
import re
import sys

from examples.common import REPO, SHARED_DATA, TRAIN_LINE, fairseq, run, train_wall_seconds, words_per_second
from examples.recipes import SMALL_MT_CONTEXT, recommended_unit
from examples.translation import pipeline as mt_pipeline

TAG = "mt_multi30k"
SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
UNIT = ["--define-transform", "define", "--define-expand-dim", "1024", "--define-depth", "3",
        "--define-max-groups", "32"]


def map_row(n, unit=()):
    """A Map of width n projected to d = m = 256, with `unit` (default: none), shared by encoder, decoder, output."""
    return ["--arch", "define_transformer", *SMALL_MT_CONTEXT, "--share-all-embeddings", "--define-map-dim", str(n),
            "--define-input-dim", "256", *(unit or ["--define-transform", "none"])]


ROWS = {
    "baseline": ["--arch", "transformer", *SMALL_MT_CONTEXT, "--share-all-embeddings"],
    "map-128": map_row(128),
    "define-128": map_row(128, UNIT),
    "define-64": map_row(64, UNIT),
    # the recommended unit (issue #24: the authors' unit, k = 1024, N = 3, g_max = 32, steps by fan-in)
    "authors-128-fan-in": map_row(128, recommended_unit(256)),
}
DIAGNOSIS = {  # a main row + one flag (a later flag overrides an earlier one)
    "define-128-unit-lr0.3": [*ROWS["define-128"], "--define-unit-lr-scale", "0.3"],
    # the recommended unit starting as its control: out = control(e) + gate * unit(e), gate 0 at init
    "authors-128-residual-fan-in": [*ROWS["authors-128-fan-in"], "--define-residual"],
}
ROWS.update(DIAGNOSIS)
DEFAULT_ROWS = ("baseline", "map-128", "define-128", "authors-128-fan-in")
# (system, control): the rows compared with sacreBLEU's paired bootstrap test on test2016
PAIRS = (("define-128", "map-128"), ("define-128", "baseline"), ("map-128", "baseline"), ("define-64", "map-128"),
         ("authors-128-fan-in", "map-128"), ("authors-128-fan-in", "baseline"))
# fairseq's IWSLT'14 de-en recipe (Adam 0.9/0.98, inverse_sqrt, dropout 0.3, weight decay 1e-4, label smoothing
# 0.1, 4096 tokens a batch) with a higher peak lr (1e-3, not 5e-4) and a shorter warmup (400 updates, about 3 of
# Multi30k's 132-update epochs, not 4000) for a budget of 10 epochs, 1,320 updates, 34-38 minutes on 2 CPU cores.
# Validation each epoch logs the valid loss and a greedy valid BLEU (fairseq's --eval-bleu, beam 1 to keep it cheap:
# the curves' BLEU; the reported scores are beam 5 on test). Its meters keep numpy arrays in every checkpoint, which
# fairseq_define.compat lets torch's weights-only loading read.
RECIPE = [
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "0.0", "--lr", "0.001",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400", "--warmup-init-lr", "1e-07",
    "--dropout", "0.3", "--weight-decay", "0.0001", "--criterion", "label_smoothed_cross_entropy",
    "--label-smoothing", "0.1", "--max-tokens", "4096", "--seed", "1", "--cpu", "--log-interval", "50",
    "--eval-bleu", "--eval-bleu-args", '{"beam": 1}', "--eval-bleu-remove-bpe", "sentencepiece",
]
MAX_EPOCH = 10


def prepare(data: str, workdir: str, vocab_size: int, src: str, tgt: str):
    """Joint sentencepiece model, encoded text and binarized data (each made once); returns (data_bin, spm model)."""
    for name in SPLITS.values():
        for lang in (src, tgt):
            if not os.path.isfile(os.path.join(data, f"{name}.{lang}")):
                sys.exit(f"missing {os.path.join(data, f'{name}.{lang}')} (pass --data DIR with Multi30k's "
                         f"{', '.join(SPLITS.values())} .{src}/.{tgt} files)")
    spm = mt_pipeline.train_sentencepiece([os.path.join(data, f"{SPLITS['train']}.{lang}") for lang in (src, tgt)],
                                          os.path.join(workdir, "spm", f"joint{vocab_size}"), vocab_size)
    text = os.path.join(workdir, "spm-text")
    if not os.path.isfile(os.path.join(text, f"test.{tgt}")):
        mt_pipeline.encode_splits(spm, {split: os.path.join(data, name) for split, name in SPLITS.items()}, text,
                                  src, tgt)
    return mt_pipeline.preprocess(text, os.path.join(workdir, "data-bin"), src, tgt), spm


def binarize_test(prefix: str, spm: str, data_bin: str, workdir: str, src: str, tgt: str) -> str:
    """PREFIX.src/.tgt encoded with the study's sentencepiece model and binarized with its dictionary as the `test`
    subset of WORKDIR/test-NAME (once); returns that folder."""
    dest = os.path.join(workdir, "test-" + os.path.basename(prefix))
    if not os.path.isfile(os.path.join(dest, f"test.{src}-{tgt}.{tgt}.bin")):
        text = os.path.join(dest, "spm-text")
        mt_pipeline.encode_splits(spm, {"test": prefix}, text, src, tgt)
        dicts = [a for lang, flag in ((src, "--srcdict"), (tgt, "--tgtdict"))
                 for a in (flag, os.path.join(data_bin, f"dict.{lang}.txt"))]
        run(fairseq("preprocess", "--source-lang", src, "--target-lang", tgt, "--testpref",
                    os.path.join(text, "test"), "--destdir", dest, *dicts, "--workers", "2"))
    return dest


def last_value(flags, name, default=None):
    """The value of the last `name` in `flags` (the one fairseq uses), else `default`."""
    values = [flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag == name]
    return values[-1] if values else default


def describe(flags) -> dict:
    """n (the input table's width), d and the unit of the model that `flags` build."""
    if last_value(flags, "--arch") == "transformer":
        n = int(last_value(flags, "--encoder-embed-dim"))
        return {"n": n, "d": n, "transform": "table"}
    n = int(last_value(flags, "--define-map-dim"))
    return {"n": n, "d": int(last_value(flags, "--define-input-dim", n)),
            "transform": last_value(flags, "--define-transform", "define")}


def parameters(data_bin: str, flags) -> dict:
    """Parameter counts per part (fairseq_define.params) of the model that fairseq-train `flags` build."""
    from fairseq_define.params import build_model, count_parts

    model, _ = build_model(["--data", data_bin, *flags])
    return dict(count_parts(model))


def valid_loss(data_bin: str, checkpoint: str) -> float:
    """fairseq-validate's loss (label-smoothed, base 2, as the training log's) of `checkpoint` on the valid set."""
    out = run(fairseq("validate", data_bin, "--path", checkpoint, "--task", "translation", "--valid-subset", "valid",
                      "--max-tokens", 8000, "--cpu"))
    return float(re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", out.stdout + out.stderr)[-1])


def translate_and_score(data_bin: str, checkpoint: str, references, hypotheses_path: str, generate_extra,
               subset: str = "test") -> dict:
    """Beam-5 translations of every sentence of `data_bin`'s `subset`, saved, and their sacreBLEU scores."""
    hypotheses = mt_pipeline.generate(data_bin, checkpoint, subset, extra=["--cpu", *generate_extra])
    with open(hypotheses_path, "w", encoding="utf-8") as f:
        f.write("\n".join(hypotheses) + "\n")
    return mt_pipeline.score(hypotheses, references)


def target_lines(args, split: str):
    """The target side of Multi30k's `split` (train, valid or test) in args.data."""
    return mt_pipeline.read_lines(os.path.join(args.data, f"{SPLITS[split]}.{args.tgt}"))


def score_each_checkpoint(result: dict, save_dir: str, data_bin: str, subset: str, references, hypotheses_prefix: str,
                          generate_extra) -> dict:
    """{choice: scores} of the translations of `data_bin`'s `subset` by each checkpoint of result["scores"] (in
    save_dir), saved to HYPOTHESES_PREFIX.CHOICE.txt."""
    return {choice: translate_and_score(data_bin, os.path.join(save_dir, scores["checkpoint"]), references,
                                        f"{hypotheses_prefix}.{choice}.txt", generate_extra, subset)
            for choice, scores in result["scores"].items()}


def score_extra_tests(result: dict, save_dir: str, tests: dict, generate_extra) -> bool:
    """Add to result["extra_tests"] the scores of each test set of `tests` (name -> (data_bin, references)) it
    lacks, for the checkpoints of result["scores"]; returns whether any was added."""
    missing = {name: test for name, test in tests.items() if name not in result.setdefault("extra_tests", {})}
    for name, (test_bin, test_references) in missing.items():
        result["extra_tests"][name] = score_each_checkpoint(result, save_dir, test_bin, "test", test_references,
                                                            os.path.join(save_dir, f"hypotheses.{name}"),
                                                            generate_extra)
    return bool(missing)


def score_valid(result: dict, data_bin: str, save_dir: str, out_dir: str, args) -> bool:
    """Add result["valid_scores"]: beam-5 BLEU (brevity penalty, length ratio) and chrF on every valid sentence for
    each checkpoint of result["scores"], its translations to out_dir/hypotheses.valid.CHOICE.txt, if the row lacks
    them and was scored on test (a diagnosis row's scores are valid ones); returns whether they were added."""
    if "valid_scores" in result or result.get("scored_on", "test") != "test":
        return False
    result["valid_scores"] = score_each_checkpoint(result, save_dir, data_bin, "valid", target_lines(args, "valid"),
                                                   os.path.join(out_dir, "hypotheses.valid"),
                                                   args.generate_extra.split())
    return True


def last_epoch_line(log: str):
    """(epoch, updates) of the last per-epoch `train` line of a fairseq-train log, else None."""
    lines = re.findall(TRAIN_LINE + r"epoch (\d+) .*?\| num_updates (\d+)", log)
    return tuple(map(int, lines[-1])) if lines else None


def trained(log: str, max_epoch: int, max_update) -> bool:
    """Whether the run of `log` reached the budget (its last epoch line is written at the budget's end, also when
    --max-update stops it mid-epoch; a killed process leaves its epoch unfinished and unlogged)."""
    last = last_epoch_line(log)
    return last is not None and (last[0] >= max_epoch or (max_update is not None and last[1] >= max_update))


def train_row(name, flags, data_bin, save_dir, log_path, budget, args) -> str:
    """fairseq-train row `name` up to the budget, resuming from its checkpoint_last.pt; returns the whole log."""
    log = open(log_path).read() if os.path.isfile(log_path) else ""
    if trained(log, args.max_epoch, args.max_update):  # fairseq would take one more step past --max-update
        print(f"[{name}] trained already ({log_path})", flush=True)
        return log
    mt_pipeline.train(data_bin, save_dir, flags, recipe=RECIPE, extra=budget, log=log_path)
    return open(log_path).read()


def score_checkpoints(data_bin: str, save_dir: str, out_dir: str, args, subset: str = "test") -> dict:
    """BLEU and chrF on every sentence of `subset` (test2016 or, for a diagnosis row, valid; beam 5) and valid loss
    of the average of the last `args.average` epoch checkpoints (written now) and of checkpoint_best.pt, keyed
    "average-last-N" and "best"; the translations go to out_dir/hypotheses[.SUBSET].CHOICE.txt."""
    references = target_lines(args, subset)
    prefix = "hypotheses" if subset == "test" else f"hypotheses.{subset}"
    epochs = mt_pipeline.last_epoch_checkpoints(save_dir, args.average)
    choices = {f"average-last-{args.average}": mt_pipeline.average_checkpoints(
        epochs, os.path.join(save_dir, f"average-last-{args.average}.pt")),
        "best": os.path.join(save_dir, "checkpoint_best.pt")}
    scores = {choice: dict(translate_and_score(data_bin, path, references,
                                               os.path.join(out_dir, f"{prefix}.{choice}.txt"),
                                               args.generate_extra.split(), subset),
                           valid_loss=valid_loss(data_bin, path), checkpoint=os.path.basename(path))
              for choice, path in choices.items()}
    scores[f"average-last-{args.average}"]["averaged"] = [os.path.basename(path) for path in epochs]
    return scores


def run_one(name, flags, data_bin, save_dir, out_dir, budget, args, tests) -> dict:
    """Train and score row `name` and write out_dir/result.json; a row that has one is not trained again (only the
    extra tests and valid scores it lacks are added, while its checkpoints remain). A diagnosis row is scored on the
    valid set only."""
    result_path = os.path.join(out_dir, "result.json")
    subset, tests = ("valid", {}) if name in DIAGNOSIS else ("test", tests)
    if os.path.isfile(result_path):
        print(f"[{name}] done already: {result_path}", flush=True)
        result = json.load(open(result_path))
        if all(os.path.isfile(os.path.join(save_dir, s["checkpoint"])) for s in result["scores"].values()):
            added = [score_extra_tests(result, save_dir, tests, args.generate_extra.split()),
                     score_valid(result, data_bin, save_dir, out_dir, args)]
            if any(added):
                json.dump(result, open(result_path, "w"), indent=2)
        return result
    print(f"[{name}]", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    log = train_row(name, flags, data_bin, save_dir, os.path.join(out_dir, "train.log"), budget, args)
    model_flags = [*flags, *args.extra.split()]
    counts = parameters(data_bin, model_flags)
    epochs, updates = last_epoch_line(log)
    result = {"name": name, **describe(model_flags), "params": counts["total"], "define_params": counts["define"],
              "parts": counts, "epochs": epochs, "updates": updates, "train_wall_s": train_wall_seconds(log),
              "train_words_per_s": words_per_second(log), "scored_on": subset,
              "scores": score_checkpoints(data_bin, save_dir, out_dir, args, subset),
              "flags": flags, "recipe": [*RECIPE, *budget]}
    score_extra_tests(result, save_dir, tests, args.generate_extra.split())
    score_valid(result, data_bin, save_dir, out_dir, args)
    json.dump(result, open(result_path, "w"), indent=2)
    return result


def summary(results) -> list:
    """One entry per row per checkpoint choice, as RESULTS/mt_multi30k.json holds them."""
    rows = []
    for r in results:
        for choice, s in r["scores"].items():
            rows.append({"name": r["name"], "n": r["n"], "transform": r["transform"], "params": r["params"],
                         "define_params": r["define_params"], "bleu": round(s["bleu"], 2), "chrf": round(s["chrf"], 2),
                         "valid_loss": s["valid_loss"], "updates": r["updates"], "train_wall_s": r["train_wall_s"],
                         "checkpoint": choice, "scored_on": r.get("scored_on", "test"),
                         "brevity_penalty": s.get("brevity_penalty"),
                         "valid": {k: r["valid_scores"][choice][k] for k in ("bleu", "brevity_penalty")}
                         if "valid_scores" in r else None,
                         "extra_tests": {t: {"bleu": round(c[choice]["bleu"], 2), "chrf": round(c[choice]["chrf"], 2)}
                                         for t, c in r.get("extra_tests", {}).items()}})
    return rows


def paired_tests(results, results_dir: str, references) -> list:
    """sacreBLEU's paired bootstrap test on test2016 of each pair of `PAIRS` (system, control) among the finished
    `results`, for each checkpoint choice, from the translations under RESULTS/mt_multi30k/ROW."""
    by_name = {r["name"]: r for r in results if r.get("scored_on", "test") == "test"}
    tests = []
    for system, control in (pair for pair in PAIRS if set(pair) <= set(by_name)):
        for choice in by_name[system]["scores"]:
            paths = [os.path.join(results_dir, TAG, name, f"hypotheses.{choice}.txt") for name in (system, control)]
            if all(os.path.isfile(path) for path in paths):
                system_text, control_text = (mt_pipeline.read_lines(path) for path in paths)
                tests.append({"system": system, "control": control, "checkpoint": choice,
                              **mt_pipeline.paired_bootstrap(control_text, system_text, references)})
    return tests


def add_lengths(result: dict, results_dir: str, references) -> bool:
    """Add the brevity penalty and length ratio to the test scores of a row scored before they were recorded, from
    its committed test translations (the BLEU they give must be the recorded one); returns whether any was added."""
    added = False
    for choice, scores in result["scores"].items():
        path = os.path.join(results_dir, TAG, result["name"], f"hypotheses.{choice}.txt")
        if "brevity_penalty" not in scores and result.get("scored_on", "test") == "test" and os.path.isfile(path):
            again = mt_pipeline.score(mt_pipeline.read_lines(path), references)
            if abs(again["bleu"] - scores["bleu"]) > 1e-9:
                raise ValueError(f"{path} gives BLEU {again['bleu']}, its result.json {scores['bleu']}")
            scores.update(brevity_penalty=again["brevity_penalty"], length_ratio=again["length_ratio"])
            added = True
    return added


def finished(results_dir: str) -> list:
    """The result.json of every finished row under RESULTS/mt_multi30k, in ROWS order (then any other)."""
    study = os.path.join(results_dir, TAG)
    names = sorted(os.listdir(study), key=lambda n: (list(ROWS).index(n) if n in ROWS else len(ROWS), n)) \
        if os.path.isdir(study) else []
    return [json.load(open(os.path.join(study, n, "result.json"))) for n in names
            if os.path.isfile(os.path.join(study, n, "result.json"))]


def valid_curve(log_path: str) -> list:
    """[(updates, valid loss, valid BLEU or None)] of each validation in a fairseq-train log."""
    points = []
    for line in open(log_path, encoding="utf-8"):
        if m := re.search(r"valid on 'valid' subset \| loss ([\d.]+) .*?\| num_updates (\d+)", line):
            bleu = re.search(r"\| bleu ([\d.]+)", line)
            points.append((int(m.group(2)), float(m.group(1)), float(bleu.group(1)) if bleu else None))
    return points


def plot(results_dir: str):
    """Valid loss (and valid BLEU, where a run logged it with --eval-bleu) against updates for every row with a
    train.log, to RESULTS/figures/mt_multi30k_valid.png; returns its path (None without any curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = os.path.join(results_dir, TAG)
    curves = {name: valid_curve(os.path.join(study, name, "train.log")) for name in
              (sorted(os.listdir(study)) if os.path.isdir(study) else [])
              if os.path.isfile(os.path.join(study, name, "train.log"))}
    curves = {name: points for name, points in curves.items() if points}
    if not curves:
        return None
    with_bleu = any(bleu is not None for points in curves.values() for _, _, bleu in points)
    fig, axes = plt.subplots(1, 2 if with_bleu else 1, figsize=(12 if with_bleu else 6.5, 4.5), squeeze=False)
    for name, points in curves.items():
        style = "--" if name.startswith("map") else ":" if name == "baseline" else "-"
        updates, loss, bleu = zip(*points)
        axes[0][0].plot(updates, loss, style, marker="o", markersize=3, label=name)
        if with_bleu and None not in bleu:
            axes[0][1].plot(updates, bleu, style, marker="o", markersize=3, label=name)
    axes[0][0].set(xlabel="updates", ylabel="valid loss (label-smoothed, base 2)", title="Multi30k en-de: valid loss")
    if with_bleu:
        axes[0][1].set(xlabel="updates", ylabel="valid BLEU (greedy)", title="valid BLEU (greedy, --eval-bleu)")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.join(results_dir, "figures"), exist_ok=True)
    path = os.path.join(results_dir, "figures", f"{TAG}_valid.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_table(rows):
    """The summary rows as a table (BLEU of each extra test set in the last columns)."""
    extra = sorted({t for r in rows for t in r["extra_tests"]})
    width = max([12] + [len(r["name"]) + 2 for r in rows])
    print(f"\n{'row':<{width}}{'checkpoint':<16}{'params':>11}{'define':>9}{'on':>6}{'BLEU':>7}{'chrF':>7}"
          f"{'valid loss':>11}{'updates':>8}{'train s':>9}" + "".join(f"{t[:14]:>16}" for t in extra))
    for r in rows:
        print(f"{r['name']:<{width}}{r['checkpoint']:<16}{r['params']:>11,}{r['define_params']:>9,}"
              f"{r['scored_on']:>6}{r['bleu']:>7.2f}"
              f"{r['chrf']:>7.2f}{r['valid_loss']:>11.3f}{r['updates']:>8}{r['train_wall_s']:>9.0f}"
              + "".join(f"{r['extra_tests'][t]['bleu']:>16.2f}" if t in r["extra_tests"] else f"{'-':>16}"
                        for t in extra))


def print_pairs(pairs):
    """The paired bootstrap tests as a table: each metric's difference (system - control) and p-value."""
    width = max([12] + [len(t[k]) + 2 for t in pairs for k in ("system", "control")])
    if pairs:
        print(f"\n{'system':<{width}}{'control':<{width}}{'checkpoint':<16}{'dBLEU':>7}{'p':>7}{'dchrF':>7}{'p':>7}")
    for t in pairs:
        print(f"{t['system']:<{width}}{t['control']:<{width}}{t['checkpoint']:<16}{t['bleu_delta']:>+7.2f}"
              f"{t['bleu_p']:>7.3f}{t['chrf_delta']:>+7.2f}{t['chrf_p']:>7.3f}")


def parse_args(argv):
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(SHARED_DATA, "multi30k"))
    parser.add_argument("--workdir", default=os.path.join(REPO, "runs"), help="checkpoints: WORKDIR/mt_multi30k")
    parser.add_argument("--results", default=os.path.join(REPO, "docs", "results"))
    parser.add_argument("--only", nargs="+", choices=list(ROWS),
                        help=f"rows to run (default: {' '.join(DEFAULT_ROWS)})")
    parser.add_argument("--max-epoch", type=int, default=MAX_EPOCH, help="training budget in epochs")
    parser.add_argument("--max-update", type=int, help="training budget in updates (also; whichever comes first)")
    parser.add_argument("--average", type=int, default=5, help="epoch checkpoints averaged (and kept)")
    parser.add_argument("--test", action="append", default=[], metavar="PREFIX",
                        help="also score PREFIX.SRC -> PREFIX.TGT (repeatable); stored under extra_tests[basename]")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    parser.add_argument("--extra", default="", help="more fairseq-train flags for every row (after the recipe's, so "
                        "they win), e.g. '--encoder-layers 1 --decoder-layers 1'")
    parser.add_argument("--define-extra", default="", help="more flags for the DeFINE rows, e.g. '--define-map-dim 32'")
    parser.add_argument("--generate-extra", default="", help="more fairseq-generate flags, e.g. '--max-len-b 50'")
    parser.add_argument("--plot-only", action="store_true", help="only draw the curves and print the table")
    return parser.parse_args(argv)


def main(argv=None):
    """Run the rows not finished yet, write RESULTS/mt_multi30k.json and the figure; returns the summary rows."""
    args = parse_args(argv)
    if not args.plot_only:
        args.data = os.path.abspath(args.data)
        workdir = os.path.join(args.workdir, TAG)
        data_bin, spm = prepare(args.data, workdir, args.vocab_size, args.src, args.tgt)
        tests = {os.path.basename(p): (binarize_test(p, spm, data_bin, workdir, args.src, args.tgt),
                                       mt_pipeline.read_lines(f"{p}.{args.tgt}")) for p in args.test}
        budget = ["--max-epoch", str(args.max_epoch), "--keep-last-epochs", str(max(5, args.average)),
                  *(["--max-update", str(args.max_update)] if args.max_update else []), *args.extra.split()]
        for name in args.only or DEFAULT_ROWS:
            define = last_value(ROWS[name], "--arch") == "define_transformer"
            flags = [*ROWS[name], *(args.define_extra.split() if define else [])]
            run_one(name, flags, data_bin, os.path.join(workdir, name), os.path.join(args.results, TAG, name), budget,
                    args, tests)
    results, pairs = finished(args.results), None
    if not args.plot_only:
        references = target_lines(args, "test")
        for result in results:
            if add_lengths(result, args.results, references):
                with open(os.path.join(args.results, TAG, result["name"], "result.json"), "w") as f:
                    json.dump(result, f, indent=2)
        pairs = paired_tests(results, args.results, references)
    rows = summary(results)
    if pairs is not None:
        with open(os.path.join(args.results, f"{TAG}.json"), "w") as f:
            json.dump({"rows": rows, "paired_bootstrap": pairs}, f, indent=2)
        print_pairs(pairs)
    figure = plot(args.results)
    if figure:
        print(f"wrote {figure}")
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
