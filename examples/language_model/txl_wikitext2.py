"""DeFINE in a Transformer-XL on WikiText-2: the paper's Table 2 pairs at n = 256 and n = 64, one small context model.

    python -m examples.language_model.txl_wikitext2 [--data ../shared/data/wikitext-2] [--only map-256 define-256]
    python -m examples.language_model.txl_wikitext2 --max-update 400 --workdir /tmp/txl --results /tmp/results

Context model (every row, `CONTEXT`): a native Transformer-XL (`--arch define_transformer_xl`, post-norm as
Transformer-XL base) scaled down to 2 CPU cores: 4 layers, d_model m = 256, 4 heads x 64, d_inner 1024, dropout
0.1, memory 64 = the BPTT length 64, relative distances unclamped in training; its output is the tied adaptive
softmax (cutoffs 5000, 20000 of WikiText-2's 33,280 symbols, every band n wide: Transformer-XL's div_val 1)
scored against the Map table. 3,417,600 context parameters. Rows (`rows()`), Table 2's pairs at the same d = m:
- `map-n`, n in {256, 64}: the Map, one V x n lookup table, projected n -> d = 256 (no projection at n = 256),
  and no unit (`--define-transform none`: Transformer-XL's adaptive input with div_val 1);
- `define-n`: the same Map + the DeFINE unit d = 256 -> k = 1024 -> m = 256, N = 3, g_max = 32 (`UNIT`);
- `authors-n-fan-in`: the same Map + the recommended unit (`RECOMMENDED`, examples/recipes.py: the authors' unit of
  the same sizes, each weight matrix's Adam step by fan-in), added by issue #24.
Diagnosis (`diagnosis_rows()`, run only by name, e.g. `--only define-256-unit-lr0.3`, scored on validation only):
`define-256-unit-lr0.3`, `define-256` with the unit's Adam steps at 0.3x, the Transformer-LM study's fix.

Why g_max = 32: the unit is 437,120 parameters (12.8 % of the context) and its widest layer has k / g_max = 32
channels per group, as the paper's Table-2 unit (k = 4096, g_max = 128, 2,097,204 parameters,
`define_transformer_xl_wt103`); it is also the unit of the Transformer-LM and AWD-LSTM WikiText-2 studies
(lm_wikitext2, lstm_wikitext2: the light Table-1a unit), so the three studies compare. (g_max 16: 609,536;
64: 350,912; 8: 954,368.) Totals at V = 33,280: map-256 11,971,074, define-256 12,408,194, map-64 5,613,698,
define-64 6,050,818 (`fairseq-define-params`; `main` prints them). The unit keeps its plain parameters
(`--define-unit-lr-scale` 1) and the default `--define-output-scale factor`: in the Transformer-LM diagnosis
(lm_wikitext2_diagnosis) the plain unit trained like the control at Adam lr 1e-3, this recipe's learning rate;
the 0.3x step was needed at lr 3e-3.

Recipe (`RECIPE`), the same for every row: `--task bptt_lm` (16 streams, segments of 64 tokens, the memory
carried from batch to batch), `--criterion define_bptt_nll` (no [B, T, V] log-probabilities), Adam (0.9, 0.999),
lr 1e-3 (Transformer-XL's 2.5e-4 is for 200k updates), 100 warm-up updates then a cosine decay to 0 at
--max-update, gradient clipping 0.25 (Transformer-XL's), seed 1. Validation every 250 updates on the first
16 x 40 x 64 = 41k valid tokens (curves only).

Evaluation (`EVAL`): fairseq-eval-lm on checkpoint_last.pt over the whole valid and test sets, with memory, in the
paper's style scaled down (WikiText-103: train tgt 150 / mem 150, eval tgt 64 / mem 640 / clamp 400 /
same_length): segments of 32 tokens, memory 256, distances clamped at 160, same_length, 8 streams, through
`--task bptt_lm` and `--model-overrides`.

Budget: --max-update defaults to `MAX_UPDATE` = 2500 updates (2.56M tokens, 1.2 epochs): about 19 minutes of
training per row on 2 free CPU cores, about 24 minutes with the validations and the two fairseq-eval-lm passes
(measured; see the comment at `MAX_UPDATE`).

Each row keeps its checkpoints under WORKDIR/txl_wikitext2/NAME and writes its fairseq log and result.json under
RESULTS/txl_wikitext2/NAME; a finished row is skipped. The table goes to RESULTS/txl_wikitext2.json
(`{"rows": [...]}`, the fields of examples/language_model/study.py). `--tiny` runs the same rows on
define_transformer_xl_tiny's sizes (tests and trials).
"""

from examples.language_model.study import (
    check_only,
    parameters,
    run_study,
    study_arguments,
    wikitext_bin,
    with_flags,
)
from examples.recipes import recommended_unit

TAG = "txl_wikitext2"
# Updates per row: about 19 minutes of training on 2 free CPU cores, about 24 minutes a row in all. Measured here on
# define-256 (the costliest row; 16 x 64 tokens an update): 0.44 s per update (fairseq's ups 2.25 over a 40-update
# run on the idle machine; the same as estimated from CPU time while the machine was shared: 0.82 CPU-s an update
# on one thread, against 0.78 for the lm_wikitext2 map-256 row, which trains at 0.42 s an update), so 2500 updates
# take about 1,100 s; the 10 validations (40 batches each) and checkpoints about 2 minutes more; fairseq-eval-lm
# with memory 256 scores the 217,646 valid tokens in 85 s, the test set in about 100 s.
MAX_UPDATE = 2500
M = 256
BPTT = 64  # --tokens-per-sample = --mem-len in training

CONTEXT = ["--arch", "define_transformer_xl", "--decoder-layers", "4", "--decoder-embed-dim", str(M),
           "--decoder-attention-heads", "4", "--decoder-head-dim", "64", "--decoder-ffn-embed-dim", "1024",
           "--dropout", "0.1", "--attention-dropout", "0.0", "--mem-len", str(BPTT),
           "--adaptive-cutoff", "5000,20000"]
# the tiny model of the tests and of quick trials (define_transformer_xl_tiny's sizes: 2 layers, m = 64,
# 4 heads x 16, d_inner 128, memory 32 = the BPTT length)
TINY_M, TINY_BPTT = 64, 32
TINY_CONTEXT = ["--arch", "define_transformer_xl", "--decoder-layers", "2", "--decoder-embed-dim", str(TINY_M),
                "--decoder-attention-heads", "4", "--decoder-head-dim", "16", "--decoder-ffn-embed-dim", "128",
                "--dropout", "0.1", "--attention-dropout", "0.0", "--mem-len", str(TINY_BPTT),
                "--adaptive-cutoff", "5000,20000"]
NO_UNIT = ["--define-transform", "none"]
UNIT = ["--define-transform", "define", "--define-expand-dim", str(4 * M), "--define-depth", "3",
        "--define-max-groups", "32"]
# the tiny model's unit: k = 4 x 64, N = 3, g_max = 8
TINY_UNIT = ["--define-transform", "define", "--define-expand-dim", str(4 * TINY_M), "--define-depth", "3",
             "--define-max-groups", "8"]
# The recommended unit (issue #24: the Transformer-LM study's verdict, the same flags in every model): the authors'
# unit, k = 4 x 256, N = 3, g_max = 32, each weight matrix's Adam step by fan-in; the tiny model's with g_max = 8.
RECOMMENDED, TINY_RECOMMENDED = recommended_unit(M), recommended_unit(TINY_M, max_groups=8)


def recipe(bptt: int = BPTT) -> list:
    return ["--task", "bptt_lm", "--tokens-per-sample", str(bptt), "--batch-size", "16", "--batch-size-valid", "16",
            "--criterion", "define_bptt_nll", "--optimizer", "adam", "--adam-betas", "(0.9,0.999)", "--lr", "0.001",
            "--lr-scheduler", "cosine", "--warmup-updates", "100", "--warmup-init-lr", "1e-7", "--clip-norm", "0.25",
            "--cpu", "--seed", "1", "--num-workers", "0", "--log-format", "simple", "--log-interval", "50",
            "--no-epoch-checkpoints", "--validate-interval-updates", "250", "--save-interval-updates", "250",
            "--keep-interval-updates", "1", "--max-valid-steps", "40"]  # curves only; final numbers from eval-lm


def eval_args(bptt: int = BPTT) -> list:
    """fairseq-eval-lm with memory: segments of bptt / 2, memory 4 x bptt, distances clamped at 2.5 x bptt,
    same_length (the paper's 64 / 640 / 400 at BPTT 150, scaled down)."""
    overrides = f"{{'mem_len': {4 * bptt}, 'clamp_len': {5 * bptt // 2}, 'same_length': True}}"
    return ["--task", "bptt_lm", "--tokens-per-sample", str(bptt // 2), "--batch-size", "8", "--num-workers", "0",
            "--model-overrides", overrides]


RECIPE, EVAL = recipe(), eval_args()


def rows(tiny: bool = False) -> dict:
    """The study's rows {name: {"n", "d", "flags"}}; `tiny`: the same rows on define_transformer_xl_tiny's sizes."""
    m, context, unit, recommended = ((TINY_M, TINY_CONTEXT, TINY_UNIT, TINY_RECOMMENDED) if tiny
                                     else (M, CONTEXT, UNIT, RECOMMENDED))

    def row(n, *flags):
        return {"n": n, "d": m, "flags": [*context, "--define-map-dim", str(n), "--define-input-dim", str(m),
                                          *flags]}

    return {
        "map-256": row(256, *NO_UNIT),
        "define-256": row(256, *unit),
        "map-64": row(64, *NO_UNIT),
        "define-64": row(64, *unit),
        "authors-256-fan-in": row(256, *recommended),
        "authors-64-fan-in": row(64, *recommended),
    }


def diagnosis_rows(tiny: bool = False) -> dict:
    """Rows run only when named in --only and scored on validation only: `define-256` with the Transformer-LM
    study's fix, the unit's Adam steps at 0.3x (`--define-unit-lr-scale 0.3`), the rest of the row unchanged."""
    return {"define-256-unit-lr0.3": with_flags(rows(tiny)["define-256"], "--define-unit-lr-scale", "0.3")}


def print_counts(data_bin: str, study: dict):
    for name, row in study.items():
        c = parameters(data_bin, row["flags"])
        print(f"{name:<12}{c['total']:>12,} parameters (map {c['map']:,}, define {c['define']:,}, "
              f"context {c['context']:,}, output {c['output']:,})", flush=True)


def main(argv=None):
    parser = study_arguments(__doc__, MAX_UPDATE, "about 25 minutes of training on 2 CPU cores",
                             "define_transformer_xl_tiny")
    args = parser.parse_args(argv)
    study, diagnosis = rows(args.tiny), diagnosis_rows(args.tiny)
    every_row = {**study, **diagnosis}
    check_only(parser, args.only, every_row)
    data_bin = wikitext_bin(args.data, args.workdir)
    print_counts(data_bin, {name: every_row[name] for name in args.only or study})
    bptt = TINY_BPTT if args.tiny else BPTT
    train_args = [*recipe(bptt), "--max-update", str(args.max_update)]
    return run_study(args, study, diagnosis, data_bin, TAG, train_args, eval_args(bptt))


if __name__ == "__main__":
    main()
