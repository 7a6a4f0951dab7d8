"""The WikiText-2 language-model studies as data: each pair of rows differs only by the DeFINE unit.

    python -m studies run lm_wikitext2 [--only map-256 recommended-256]
    python -m studies run lstm_wikitext2 --tiny --max-update 8 --workdir /tmp/w --results /tmp/r

- `lm_wikitext2`: a Transformer LM (2 pre-norm layers, 256 wide, FFN 1024, 4 heads, 128-token blocks, dropout 0.1)
  with an adaptive Map (cutoffs 5000,20000, factor 4) of width n projected to d = m = 256 and a tied adaptive
  softmax; Adam 3e-3, cosine, 2,000 updates. `standard` is fairseq's model with a V x 256 table.
- `lm_wikitext2_diagnosis`: short matched runs of the same model (1,000 updates, one epoch; per-part gradient norms
  recorded), scored on validation only: what holds a unit back, and what fixes it.
- `txl_wikitext2`: a Transformer-XL (4 post-norm layers, 256 wide, memory 64) with a V x n lookup Map projected to
  256 and a tied adaptive softmax (div_val 1); the paper's Table 2 pairs; Adam 1e-3, 2,500 updates; eval-lm with
  memory (segments 32, memory 256, clamp 160, same_length).
- `lstm_wikitext2`: an AWD-LSTM (256 -> 512 -> 512 -> 256, every regulariser on) in the shapes of the paper's
  Table 1c (a full softmax tied to a lookup Map; `baseline` a V x 256 table) and Table 1a (an adaptive Map and
  softmax, n = m = 256); Adam 3e-3, 1,000 updates (2/3 of an epoch).

Row names: `map-n` (the control: the Map alone), `define-n` (the paper's unit), `recommended-n` (the recommended
preset), `authors-n-fan-in` (the authors' unit with fan-in steps, the recommended unit before its output matched the
host's scale); a `-seedS` suffix runs the row with --seed S, `-4x` with four times the updates.
Data: WikiText-2's raw files are binarized once into WORKDIR/wikitext-2-bin (or pass a binarized folder).
"""

import os
from typing import Dict, List

from examples.common import SHARED_DATA, fairseq, perplexity, preprocess_wikitext
from examples.recipes import ADAPTIVE_LOSS, SMALL_LM_CONTEXT, TIED_ADAPTIVE
from studies.runner import Study, Trained
from studies.units import NO_UNIT, RECOMMENDED, authors_fan_in, authors_unit, paper_unit

WIKITEXT2 = os.path.join(SHARED_DATA, "wikitext-2")


def wikitext_bin(data: str, workdir: str, runner) -> str:
    """DATA itself if it is binarized (has dict.txt), else WikiText's raw files binarized into
    WORKDIR/wikitext-2-bin (once)."""
    if os.path.isfile(os.path.join(data, "dict.txt")):
        return data
    return preprocess_wikitext(data, os.path.join(workdir, "wikitext-2-bin"), runner)


def perplexities(*eval_args: str):
    """The score hook of a perplexity study: fairseq-eval-lm on checkpoint_last.pt for each subset (`eval_args`
    after the defaults: 128-token blocks), its output kept as eval-SUBSET.txt."""
    def score(row: Trained) -> dict:
        checkpoint = os.path.join(row.save_dir, "checkpoint_last.pt")
        scores = {"valid_ppl": None, "test_ppl": None}
        for subset in row.subsets:
            command = fairseq("eval-lm", row.data_bin, "--path", checkpoint, "--gen-subset", subset,
                              "--tokens-per-sample", 128, "--max-tokens", 4096, "--cpu", *eval_args)
            scores[f"{subset}_ppl"] = perplexity(row.output(command, f"eval-{subset}.txt"))
        return scores
    return score


def variants(rows: Dict[str, List[str]], seeds=(), longer=None, **names) -> Dict[str, List[str]]:
    """Rows derived from `rows`: `<name>-seedS` for each of `names`' rows and seed S, `<name>-4x` with `longer`
    (the flags of a 4x budget)."""
    out = {}
    for name in names.get("seeded", ()):
        out.update({f"{name}-seed{s}": [*rows[name], "--seed", str(s)] for s in seeds})
    for name in names.get("stretched", ()):
        out[f"{name}-4x"] = [*rows[name], *longer]
    return out


# ---- Transformer LM ------------------------------------------------------------------------------------------
LM_TRAIN = ["--task", "language_modeling", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "0.003",
            "--lr-scheduler", "cosine", "--warmup-updates", "100", "--warmup-init-lr", "1e-7", "--clip-norm", "1.0",
            "--max-tokens", "2048", "--cpu", "--seed", "1", "--log-interval", "50", "--no-epoch-checkpoints",
            "--validate-interval-updates", "200", "--save-interval-updates", "200", "--keep-interval-updates", "1",
            "--max-valid-steps", "25"]  # curves on the first 51k valid tokens; final numbers from eval-lm
LM_PLAIN = [*paper_unit(), "--define-norm", "ln", "--define-activation", "gelu", "--define-output-scale", "factor"]
LM_PAPER = [*LM_PLAIN, "--define-unit-lr-scale", "0.3"]  # the define-n rows: the paper's unit at 0.3x the step
LM_LINEAR = [*LM_PLAIN, "--define-transform", "linear", "--define-depth", "1", "--define-expand-dim", "256",
             "--define-norm", "none", "--define-activation", "none"]  # the adaptive input times two 256 x 256 maps


def lm_row(n: int, unit=NO_UNIT, d: int = 256) -> List[str]:
    return ["--arch", "define_transformer_lm", *SMALL_LM_CONTEXT, *TIED_ADAPTIVE, *ADAPTIVE_LOSS,
            "--define-map-dim", str(n), "--define-input-dim", str(d), *unit]


LM_ROWS = {
    "map-256": lm_row(256),
    "define-256": lm_row(256, LM_PAPER),
    "define-256-unit-lr1": lm_row(256, LM_PLAIN),
    "map-128": lm_row(128),
    "define-128": lm_row(128, LM_PAPER),
    "map-64": lm_row(64),
    "define-64": lm_row(64, LM_PAPER),
    "standard": ["--arch", "transformer_lm_big", *SMALL_LM_CONTEXT, "--share-decoder-input-output-embed"],
    "define-64-n-space": lm_row(64, LM_PAPER, d=64),
    **{f"authors-{n}": lm_row(n, [*authors_unit(256), "--define-unit-lr-scale", "0.3"]) for n in (256, 128, 64)},
    **{f"authors-{n}-fan-in": lm_row(n, authors_fan_in(256)) for n in (256, 128, 64)},
    **{f"recommended-{n}": lm_row(n, RECOMMENDED) for n in (256, 128, 64)},
    # the frontier's widths beyond 64-256
    **{f"{kind}-{n}": lm_row(n, unit) for n in (32, 512) for kind, unit in (("map", NO_UNIT), ("recommended",
                                                                                           RECOMMENDED))},
}
LM_ROWS.update(variants(LM_ROWS, seeds=(2, 3), seeded=("map-128", "recommended-128")))
LM_ROWS.update(variants(LM_ROWS, longer=["--max-update", "8000"], stretched=("map-256", "recommended-256")))


def lm_wikitext2() -> Study:
    return Study("lm_wikitext2", LM_ROWS, LM_TRAIN, wikitext_bin, perplexities(), WIKITEXT2, max_update=2000)


def _diagnosis_rows() -> Dict[str, List[str]]:
    lr = {"-lr1e-3": ["--lr", "0.001"], "-lr1e-2": ["--lr", "0.01"]}  # after the recipe's lr: they win
    rows = {"map-256": lm_row(256), "define-256": lm_row(256, LM_PLAIN)}
    rows.update({f"{name}{suffix}": [*rows[name], *flags] for name in ("map-256", "define-256")
                 for suffix, flags in lr.items()})
    rows.update({
        "define-256-scale-weights": lm_row(256, [*LM_PLAIN, "--define-output-scale", "weights"]),
        "linear-256": lm_row(256, LM_LINEAR),
        "define-256-reduce-skip": lm_row(256, [*LM_PLAIN, "--define-reduce-skip"]),
        "define-256-map-dropout": lm_row(256, [*LM_PLAIN, "--define-map-dropout", "0.1"]),
        "define-256-depth7": lm_row(256, [*LM_PLAIN, "--define-depth", "7"]),
        "define-256-paper-linear": lm_row(256, [*LM_PLAIN, "--define-norm", "none", "--define-activation", "none"]),
        "define-256-unit-lr0.3": lm_row(256, [*LM_PLAIN, "--define-unit-lr-scale", "0.3"]),
        "linear-256-unit-lr0.3": lm_row(256, [*LM_LINEAR, "--define-unit-lr-scale", "0.3"]),
        "linear-256-unit-lr0.1": lm_row(256, [*LM_LINEAR, "--define-unit-lr-scale", "0.1"]),
        "map-64": lm_row(64),
        "define-64": lm_row(64, LM_PLAIN),
        "define-64-unit-lr0.3": lm_row(64, [*LM_PLAIN, "--define-unit-lr-scale", "0.3"]),
    })
    steps = {"": [], "-unit-lr0.3": ["--define-unit-lr-scale", "0.3"], "-fan-in": ["--define-unit-lr-scale", "fan-in"],
             "-residual": ["--define-residual"],
             "-residual-unit-lr0.3": ["--define-residual", "--define-unit-lr-scale", "0.3"],
             "-residual-fan-in": ["--define-residual", "--define-unit-lr-scale", "fan-in"]}
    for unit_name, unit in (("define", LM_PLAIN), ("linear", LM_LINEAR), ("authors", authors_unit(256))):
        for n in (256, 64) if unit_name != "linear" else (256,):
            for suffix, flags in steps.items():
                rows.setdefault(f"{unit_name}-{n}{suffix}", lm_row(n, [*unit, *flags]))
    rows.update({f"authors-{n}-fan-in-host-scale": lm_row(n, [*authors_fan_in(256), "--define-host-scale"])
                 for n in (256, 64)})
    return rows


def lm_wikitext2_diagnosis() -> Study:
    diagnosis = _diagnosis_rows()
    return Study("lm_wikitext2_diagnosis", {}, LM_TRAIN, wikitext_bin, perplexities(), WIKITEXT2, max_update=1000,
                 diagnosis=diagnosis, wrap=record_grad_norms)


def record_grad_norms(command: list, out_dir: str) -> list:
    """The same fairseq-train, in a process that records per-part gradient norms to OUT_DIR/grad_norms.json."""
    return [command[0], "-m", "examples.language_model.grad_norms", os.path.join(out_dir, "grad_norms.json"),
            *command[3:]]


# ---- Transformer-XL -----------------------------------------------------------------------------------------
def txl_context(m: int, bptt: int, layers: int, heads: int, head_dim: int, ffn: int) -> List[str]:
    return ["--arch", "define_transformer_xl", "--decoder-layers", str(layers), "--decoder-embed-dim", str(m),
            "--decoder-attention-heads", str(heads), "--decoder-head-dim", str(head_dim), "--decoder-ffn-embed-dim",
            str(ffn), "--dropout", "0.1", "--attention-dropout", "0.0", "--mem-len", str(bptt),
            "--adaptive-cutoff", "5000,20000"]


def txl_train(bptt: int) -> List[str]:
    return ["--task", "bptt_lm", "--tokens-per-sample", str(bptt), "--batch-size", "16", "--batch-size-valid", "16",
            "--criterion", "define_bptt_nll", "--optimizer", "adam", "--adam-betas", "(0.9,0.999)", "--lr", "0.001",
            "--lr-scheduler", "cosine", "--warmup-updates", "100", "--warmup-init-lr", "1e-7", "--clip-norm", "0.25",
            "--cpu", "--seed", "1", "--num-workers", "0", "--log-interval", "50", "--no-epoch-checkpoints",
            "--validate-interval-updates", "250", "--save-interval-updates", "250", "--keep-interval-updates", "1",
            "--max-valid-steps", "40"]


def txl_eval(bptt: int) -> List[str]:
    """eval-lm with memory: segments of bptt / 2, memory 4 x bptt, distances clamped at 2.5 x bptt, same_length."""
    overrides = f"{{'mem_len': {4 * bptt}, 'clamp_len': {5 * bptt // 2}, 'same_length': True}}"
    return ["--task", "bptt_lm", "--tokens-per-sample", str(bptt // 2), "--batch-size", "8", "--num-workers", "0",
            "--model-overrides", overrides]


def txl_wikitext2(tiny: bool = False) -> Study:
    """`tiny`: the same rows on define_transformer_xl_tiny's sizes (2 layers, m = 64, memory 32), for tests."""
    m, bptt = (64, 32) if tiny else (256, 64)
    context = txl_context(m, bptt, *((2, 4, 16, 128) if tiny else (4, 4, 64, 1024)))
    paper, authors = paper_unit(4 * m, 3, 8 if tiny else 32), authors_fan_in(m, 8 if tiny else 32)

    def row(n, *unit):
        return [*context, "--define-map-dim", str(n), "--define-input-dim", str(m), *unit]

    rows = {"map-256": row(256, *NO_UNIT), "define-256": row(256, *paper), "map-64": row(64, *NO_UNIT),
            "define-64": row(64, *paper), "authors-256-fan-in": row(256, *authors),
            "authors-64-fan-in": row(64, *authors),
            **{f"recommended-{n}": row(n, *RECOMMENDED) for n in (256, 64)},
            **{f"{kind}-{n}": row(n, *unit) for n in (128, 512) for kind, unit in (("map", NO_UNIT),
                                                                                    ("recommended", RECOMMENDED))}}
    rows.update(variants(rows, longer=["--max-update", "10000"], stretched=("map-64", "recommended-64")))
    diagnosis = {"define-256-unit-lr0.3": [*rows["define-256"], "--define-unit-lr-scale", "0.3"],
                 "authors-64-residual-fan-in": [*rows["authors-64-fan-in"], "--define-residual"],
                 "authors-64-fan-in-host-scale": [*rows["authors-64-fan-in"], "--define-host-scale"]}
    return Study("txl_wikitext2", rows, txl_train(bptt), wikitext_bin, perplexities(*txl_eval(bptt)), WIKITEXT2,
                 max_update=2500, diagnosis=diagnosis)


# ---- AWD-LSTM -----------------------------------------------------------------------------------------------
LSTM_TRAIN = ["--task", "bptt_lm", "--tokens-per-sample", "70", "--batch-size", "20", "--batch-size-valid", "10",
              "--optimizer", "adam", "--adam-betas", "(0.9,0.999)", "--lr", "0.003", "--lr-scheduler", "cosine",
              "--warmup-updates", "200", "--warmup-init-lr", "1e-7", "--clip-norm", "0.25", "--cpu", "--seed", "1",
              "--num-workers", "0", "--log-interval", "50", "--no-epoch-checkpoints",
              "--validate-interval-updates", "250", "--save-interval-updates", "250", "--keep-interval-updates", "1",
              "--max-valid-steps", "30"]  # curves on the first 21k valid tokens; final numbers from eval-lm
LSTM_EVAL = ["--task", "bptt_lm", "--batch-size", "10", "--tokens-per-sample", "70", "--num-workers", "0"]
LSTM_NO_DROPOUT = ["--dropouti", "0", "--dropouth", "0", "--dropout", "0", "--wdrop", "0", "--dropoute", "0"]


def lstm_wikitext2(tiny: bool = False) -> Study:
    """`tiny`: the same rows on define_awd_lstm_tiny's sizes (m = 32, 32 -> 64 -> 32), for tests."""
    m, small = (32, 16) if tiny else (256, 128)
    hidden, drops = ("64", ("0.1", "0.1", "0.1", "0.1", "0.05")) if tiny else ("512,512", ("0.3", "0.1", "0.2",
                                                                                           "0.25", "0.05"))
    context = ["--arch", "define_lstm_lm", "--decoder-embed-dim", str(m), "--lstm-hidden-sizes", hidden,
               *[a for flag, v in zip(("--dropouti", "--dropouth", "--dropout", "--wdrop", "--dropoute"), drops)
                 for a in (flag, v)]]
    full_softmax = ["--criterion", "ar_tar_cross_entropy", "--ar-alpha", "2", "--tar-beta", "1"]
    adaptive = ["--adaptive-softmax-cutoff", "500,2000" if tiny else "5000,20000", "--adaptive-softmax-factor", "4",
                "--criterion", "ar_tar_adaptive_loss", "--ar-alpha", "2", "--tar-beta", "1",
                "--ddp-backend", "legacy_ddp"]
    if tiny:
        table_1c = table_1a = [*paper_unit(64, 2, 4)[:-2], "--define-max-groups", "4"]
        authors = authors_fan_in(32, max_groups=4)
    else:
        table_1c = [*paper_unit(1024, 7, 64), "--define-unit-lr-scale", "0.3"]
        table_1a = [*paper_unit(1024, 3, 32), "--define-unit-lr-scale", "0.3"]
        authors = authors_fan_in(256)

    def row(n, *flags):
        return [*context, "--define-map-dim", str(n), *flags]

    a, plain, define = f"adaptive-{m}", f"adaptive-{m}", f"adaptive-{m}-define"
    rows = {"baseline": row(m, *full_softmax, *NO_UNIT),
            f"define-{small}": row(small, *full_softmax, *table_1c),
            plain: row(m, *adaptive, *NO_UNIT),
            define: row(m, *adaptive, *table_1a),
            f"authors-{small}-fan-in": row(small, *full_softmax, *authors),
            f"{a}-authors-fan-in": row(m, *adaptive, *authors),
            f"recommended-{small}": row(small, *full_softmax, *RECOMMENDED),
            f"{a}-recommended": row(m, *adaptive, *RECOMMENDED)}
    rows.update(variants(rows, seeds=(2, 3), seeded=(plain, f"{a}-recommended")))
    rows.update(variants(rows, longer=["--max-update", "4000"], stretched=(plain, f"{a}-recommended")))
    diagnosis = {
        **{f"{define}-unit-lr{s}": [*rows[define], "--define-unit-lr-scale", s] for s in ("1", "0.1")},
        f"{plain}-no-dropout": [*rows[plain], *LSTM_NO_DROPOUT],
        f"{define}-no-dropout": [*rows[define], *LSTM_NO_DROPOUT],
        **{f"{name}-residual-fan-in": [*rows[f"{name}-fan-in"], "--define-residual"]
           for name in (f"{a}-authors", f"authors-{small}")},
        **{f"{name}-fan-in-host-scale": [*rows[f"{name}-fan-in"], "--define-host-scale"]
           for name in (f"{a}-authors", f"authors-{small}")},
    }
    return Study("lstm_wikitext2", rows, LSTM_TRAIN, wikitext_bin, perplexities(*LSTM_EVAL), WIKITEXT2,
                 max_update=1000, diagnosis=diagnosis)
