"""DeFINE in an AWD-LSTM on WikiText-2: the shapes of the paper's Table 1c and Table 1a, one small context model.

    python -m examples.language_model.lstm_wikitext2 [--data ../shared/data/wikitext-2] [--only baseline define-128]
    python -m examples.language_model.lstm_wikitext2 --max-update 400 --workdir /tmp/lstm --results /tmp/results

Context model (every row, `CONTEXT`): a 3-layer AWD-LSTM m = 256 -> 512 -> 512 -> 256 (a scaled-down
400 -> 1150 -> 1150 -> 400: 4,466,688 LSTM parameters against PTB's 20.2M), its output tied to the Map, with every
AWD-LSTM regulariser on (DropConnect on the hidden-to-hidden weights, locked dropout on the input / between layers /
on the output, embedding dropout over token types, AR 2 / TAR 1 in `ar_tar_cross_entropy` /
`ar_tar_adaptive_loss`), trained through the stateful truncated-BPTT task (`--task bptt_lm`: 20 streams, BPTT 70,
the hidden state carried across batches). Rows (`rows()`):
- Table 1c shape, a full softmax tied to a lookup Map:
  `baseline`: a V x 256 table (n = m = 256, `--define-transform none`), 13,019,648 parameters at V = 33,280;
  `define-128`: a V x 128 Map + DeFINE (k = 1024, N = 7, g_max = 64: Table 1c's unit, the spec's PTB
  configuration with m = 256: groups 64, 32, ..., 1 over widths 256, 384, ..., 1024, so the last HGT layer mixes
  every channel; 1,940,608 unit parameters), the LSTM's output projected 256 -> 128 and scored against the Map
  table: 10,733,184 parameters, 17.6 % fewer than `baseline` (the paper's 24M -> 20M is 17 %).
- Table 1a pair, an adaptive Map (cutoffs 5000, 20000 of WikiText-2's 33k words, factor 4: bands 256, 64, 16 wide)
  tied to an adaptive softmax, n = m = 256:
  `adaptive-256`: no unit (`--define-transform none`: fairseq's adaptive input), 6,940,160 parameters;
  `adaptive-256-define`: + DeFINE N = 3, k = 1024, g_max = 32 (the light Table-1a unit of `define_lstm_wt103`:
  groups 32, 16, 8; 437,120 parameters), 7,377,280 parameters.
- The recommended unit (issue #24; `RECOMMENDED`, examples/recipes.py: the authors' unit, k = 1024, N = 3,
  g_max = 32, each weight matrix's Adam step by fan-in) in both shapes: `authors-128-fan-in` (the Table-1c row's
  Map and softmax) and `adaptive-256-authors-fan-in` (the Table-1a row's).
(Counts from `fairseq-define-params`; `main` prints them and checks the define row's saving.)
Diagnosis (`diagnosis_rows()`, run only when named in --only, scored on validation only):
`adaptive-256-define-unit-lr1` and `adaptive-256-define-unit-lr0.1`, the Table-1a DeFINE row with the unit's
Adam steps at 1x (the paper's plain parameters) and 0.1x instead of 0.3x; `adaptive-256-no-dropout` and
`adaptive-256-define-no-dropout`, the Table-1a pair with every dropout off (AR / TAR kept);
`adaptive-256-authors-residual-fan-in` and `authors-128-residual-fan-in`, the recommended unit's rows starting as
their controls (`--define-residual`).

Recipe (`RECIPE`), the same for every row: Adam (0.9, 0.999), lr 3e-3, 200 warm-up updates then a cosine decay
to 0 at --max-update, gradient clipping 0.25 (AWD-LSTM's), seed 1. Why Adam and not NT-ASGD: a 30-minute run on
2 CPU cores sees well under one epoch of WikiText-2 (2.09M tokens, 1,492 updates of 20 x 70 tokens), and NT-ASGD
only starts averaging after more than 5 non-improving end-of-epoch validations (salesforce's trigger), so in this
budget it is plain SGD at a constant lr 30, which needs hundreds of epochs to converge (AWD-LSTM trains 750). Adam
with a schedule that ends at the budget gets much further in a fixed number of updates (the choice of Merity et
al.'s WikiText-103 recipe, too), and the dropouts are about half of salesforce's WikiText-2 values (dropouti 0.3,
dropouth 0.1, dropout 0.2, wdrop 0.25, dropoute 0.05 against 0.65, 0.2, 0.4, 0.5, 0.1): a sub-epoch run underfits,
so full-strength regularisation would only slow it down. (Not tuned: runs longer than a few dozen updates were
not possible while this was written.) The PTB recipe with NT-ASGD and the paper's hyper-parameters is
examples/language_model/ptb/train.sh.

Budget: --max-update defaults to `MAX_UPDATE` = 1000 updates (1.4M tokens, 2/3 of an epoch) for every row, chosen
from one-thread CPU time (baseline 1.80 s an update) to fit 30 minutes per row. On 2 free cores the study's runs
took less: 919 s of training (baseline), 833 s (define-128), 366 s (adaptive-256), 345 s (adaptive-256-define),
and fairseq-eval-lm on valid + test (460k tokens, forward only) about 3 minutes more for the full-softmax rows.
Validation runs every 250 updates on the first 30 x 10 x 70 = 21k valid tokens (curves
only); the final numbers come from fairseq-eval-lm on checkpoint_last.pt over the whole valid and test sets
(`--task bptt_lm`, 10 streams, 70-token segments, the state carried). With NT-ASGD (not used here) the
checkpoint's weights would be the averaged ones once averaging started.

Each row keeps its checkpoints under WORKDIR/lstm_wikitext2/NAME and writes its fairseq log and result.json under
RESULTS/lstm_wikitext2/NAME; a finished row is skipped. The table goes to RESULTS/lstm_wikitext2.json
(`{"rows": [...]}`, the fields of examples/language_model/study.py).
"""

import sys

from examples.language_model.study import (
    check_only,
    parameters,
    run_study,
    study_arguments,
    wikitext_bin,
    with_flags,
)
from examples.recipes import recommended_unit

TAG = "lstm_wikitext2"
MAX_UPDATE = 1000  # updates per row: 6 to 16 minutes of training on 2 CPU cores (module docstring)
M = 256

CONTEXT = ["--arch", "define_lstm_lm", "--decoder-embed-dim", str(M), "--lstm-hidden-sizes", "512,512",
           "--dropouti", "0.3", "--dropouth", "0.1", "--dropout", "0.2", "--wdrop", "0.25", "--dropoute", "0.05"]
# the tiny model of the tests and of quick trials (define_awd_lstm_tiny's sizes: m = 32, 32 -> 64 -> 32)
TINY_CONTEXT = ["--arch", "define_lstm_lm", "--decoder-embed-dim", "32", "--lstm-hidden-sizes", "64",
                "--dropouti", "0.1", "--dropouth", "0.1", "--dropout", "0.1", "--wdrop", "0.1", "--dropoute", "0.05"]
FULL_SOFTMAX = ["--criterion", "ar_tar_cross_entropy", "--ar-alpha", "2", "--tar-beta", "1"]
ADAPTIVE = ["--adaptive-softmax-factor", "4", "--criterion", "ar_tar_adaptive_loss", "--ar-alpha", "2",
            "--tar-beta", "1", "--ddp-backend", "legacy_ddp"]
NO_UNIT = ["--define-transform", "none"]
NO_DROPOUT = ["--dropouti", "0", "--dropouth", "0", "--dropout", "0", "--wdrop", "0", "--dropoute", "0"]
# At Adam lr 3e-3 the unit's weights take 0.3x the step of the rest (`--define-unit-lr-scale`): the fix the
# Transformer-LM study (lm_wikitext2) found for exactly this learning rate.
TABLE_1C_UNIT = ["--define-transform", "define", "--define-expand-dim", "1024", "--define-depth", "7",
                 "--define-max-groups", "64", "--define-unit-lr-scale", "0.3"]
TABLE_1A_UNIT = ["--define-transform", "define", "--define-expand-dim", "1024", "--define-depth", "3",
                 "--define-max-groups", "32", "--define-unit-lr-scale", "0.3"]
# the tiny model's units: k = 64, N = 2, g_max = 4 (define_awd_lstm_tiny's)
TINY_UNIT = ["--define-transform", "define", "--define-expand-dim", "64", "--define-depth", "2",
             "--define-max-groups", "4"]
# The recommended unit (issue #24: the Transformer-LM study's verdict, the same flags in every model) in both shapes:
# the authors' unit, k = 4 x 256, N = 3, g_max = 32, each weight matrix's Adam step by fan-in (not 0.3x); the tiny
# model's with g_max = 4.
RECOMMENDED, TINY_RECOMMENDED = recommended_unit(M), recommended_unit(32, max_groups=4)

RECIPE = ["--task", "bptt_lm", "--tokens-per-sample", "70", "--batch-size", "20", "--batch-size-valid", "10",
          "--optimizer", "adam", "--adam-betas", "(0.9,0.999)", "--lr", "0.003", "--lr-scheduler", "cosine",
          "--warmup-updates", "200", "--warmup-init-lr", "1e-7", "--clip-norm", "0.25", "--cpu", "--seed", "1",
          "--num-workers", "0", "--log-format", "simple", "--log-interval", "50", "--no-epoch-checkpoints",
          "--validate-interval-updates", "250", "--save-interval-updates", "250", "--keep-interval-updates", "1",
          "--max-valid-steps", "30"]  # curves on the first 21k valid tokens; final numbers from eval-lm
EVAL = ["--task", "bptt_lm", "--batch-size", "10", "--tokens-per-sample", "70", "--num-workers", "0"]


def widths(tiny: bool = False) -> tuple:
    """(m, n of the Table-1c DeFINE rows): the context model's width and the small Map's."""
    return (32, 16) if tiny else (M, 128)


def rows(tiny: bool = False) -> dict:
    """The study's rows {name: {"n", "d", "flags"}}; `tiny`: the same rows on define_awd_lstm_tiny's sizes (and
    adaptive cutoffs 500, 2000, for the small dictionaries of test slices)."""
    m, small = widths(tiny)
    context, cutoff = (TINY_CONTEXT, "500,2000") if tiny else (CONTEXT, "5000,20000")
    table_1c, table_1a, recommended = ((TINY_UNIT, TINY_UNIT, TINY_RECOMMENDED) if tiny
                                       else (TABLE_1C_UNIT, TABLE_1A_UNIT, RECOMMENDED))

    def row(n, *flags):
        return {"n": n, "d": n, "flags": [*context, "--define-map-dim", str(n), *flags]}

    return {
        "baseline": row(m, *FULL_SOFTMAX, *NO_UNIT),
        f"define-{small}": row(small, *FULL_SOFTMAX, *table_1c),
        f"adaptive-{m}": row(m, "--adaptive-softmax-cutoff", cutoff, *ADAPTIVE, *NO_UNIT),
        f"adaptive-{m}-define": row(m, "--adaptive-softmax-cutoff", cutoff, *ADAPTIVE, *table_1a),
        f"authors-{small}-fan-in": row(small, *FULL_SOFTMAX, *recommended),
        f"adaptive-{m}-authors-fan-in": row(m, "--adaptive-softmax-cutoff", cutoff, *ADAPTIVE, *recommended),
    }


def diagnosis_rows(tiny: bool = False) -> dict:
    """Rows run only when named in --only and scored on validation only: the Table-1a DeFINE row with the unit's
    Adam steps at 1x (the paper's plain parameters) and 0.1x instead of the study's 0.3x; the Table-1a pair with
    every dropout off (`NO_DROPOUT`); and the recommended unit's rows starting as their controls
    (`--define-residual`: out = control(e) + gate * unit(e), gate 0 at init), the rest unchanged (a later flag
    overrides an earlier one)."""
    study, (m, small) = rows(tiny), widths(tiny)
    plain, define = f"adaptive-{m}", f"adaptive-{m}-define"
    unit_steps = {f"{define}-unit-lr{scale}": with_flags(study[define], "--define-unit-lr-scale", scale)
                  for scale in ("1", "0.1")}
    residual = {f"{name}-residual-fan-in": with_flags(study[f"{name}-fan-in"], "--define-residual")
                for name in (f"{plain}-authors", f"authors-{small}")}
    return {**unit_steps, f"{plain}-no-dropout": with_flags(study[plain], *NO_DROPOUT),
            f"{define}-no-dropout": with_flags(study[define], *NO_DROPOUT), **residual}


def check_saving(data_bin: str, study: dict) -> float:
    """Print the Table-1c pair's parameter counts and return the define row's saving (1 - define / baseline)."""
    define_name = next(name for name in study if name.startswith("define-"))
    base, define = (parameters(data_bin, study[name]["flags"]) for name in ("baseline", define_name))
    saving = 1 - define["total"] / base["total"]
    print(f"baseline {base['total']:,} parameters, {define_name} {define['total']:,} (unit {define['define']:,}): "
          f"{100 * saving:.1f} % fewer", flush=True)
    return saving


def main(argv=None):
    parser = study_arguments(__doc__, MAX_UPDATE, "6 to 16 minutes of training on 2 CPU cores",
                             "define_awd_lstm_tiny")
    args = parser.parse_args(argv)
    study, diagnosis = rows(args.tiny), diagnosis_rows(args.tiny)
    check_only(parser, args.only, {**study, **diagnosis})
    data_bin = wikitext_bin(args.data, args.workdir)
    saving = check_saving(data_bin, study)
    if not args.tiny and saving < 0.15:
        sys.exit(f"the define row has {100 * saving:.1f} % fewer parameters than the baseline; the Table 1c shape "
                 f"needs >= 15 % (WikiText-2's 33k-word vocabulary gives 17.6 %)")
    train_args = [*RECIPE, "--max-update", str(args.max_update)]
    return run_study(args, study, diagnosis, data_bin, TAG, train_args, EVAL)


if __name__ == "__main__":
    main()
