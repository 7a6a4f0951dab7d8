#!/usr/bin/env bash
# Penn Treebank: AWD-LSTM (Merity et al. 2018) with DeFINE (paper Table 1c) or without, on the data of prepare.sh.
#   bash examples/language_model/ptb/train.sh define     # define_awd_lstm_ptb: n = 128, k = 1024, N = 7, g_max 64
#   bash examples/language_model/ptb/train.sh baseline   # awd_lstm_ptb: a 400-wide table tied to the softmax
# Any further arguments are appended to fairseq-train's (e.g. --cpu, or --max-update / sizes for a dry run);
# EVAL_ARGS to fairseq-eval-lm's. Hyper-parameters: salesforce/awd-lstm-lm's PTB command (`main.py --batch_size 20
# --data data/penn --dropouti 0.4 --dropouth 0.25 --seed 141`, its defaults otherwise) run for the paper's 750
# epochs: 3 layers 400 -> 1150 -> 1150 -> 400, dropouts 0.4 / 0.25 / 0.4 (input / hidden / output), wdrop 0.5,
# dropoute 0.1 (the archs' defaults), AR 2, TAR 1, NT-ASGD with lr 30, non-monotone interval 5 (one check per
# epoch), weight decay 1.2e-6, gradient clipping 0.25, 20 streams, BPTT 70, validation on 10 streams.
# Differences: the BPTT length is fixed at 70 (salesforce draws it around 70 and rescales the lr), and
# salesforce's separate fine-tuning stage (finetune.py) is not part of this recipe.
# From the NT-ASGD trigger on, validation and the checkpoints' model weights are the averaged ones, so
# checkpoint_best.pt is salesforce's saved model; it is scored on the test set with 1 stream (salesforce's
# test_batch_size) and 70-token segments, the state carried.
set -euo pipefail
MODEL=${1:-define}
if [ $# -gt 0 ]; then shift; fi
DATA=${DATA:-runs/ptb/data-bin}
EVAL_ARGS=${EVAL_ARGS:-}
BIN=$(dirname "$(command -v python)")
case "$MODEL" in
  define) ARCH=define_awd_lstm_ptb ;;
  baseline) ARCH=awd_lstm_ptb ;;
  *) echo "usage: $0 define|baseline  [fairseq-train arguments]" >&2; exit 2 ;;
esac
SAVE=${SAVE:-runs/ptb/checkpoints-$MODEL}
"$BIN/fairseq-train" "$DATA" --user-dir fairseq_define --task bptt_lm --arch "$ARCH" \
    --criterion ar_tar_cross_entropy --ar-alpha 2 --tar-beta 1 \
    --optimizer nt_asgd --lr 30 --lr-scheduler nt_asgd_trigger --nt-asgd-nonmono 5 --weight-decay 1.2e-6 \
    --clip-norm 0.25 --batch-size 20 --batch-size-valid 10 --tokens-per-sample 70 --max-epoch 750 \
    --seed 141 --num-workers 0 --save-dir "$SAVE" --no-epoch-checkpoints --log-format simple --log-interval 100 "$@"
# shellcheck disable=SC2086
"$BIN/fairseq-eval-lm" "$DATA" --user-dir fairseq_define --task bptt_lm --path "$SAVE/checkpoint_best.pt" \
    --gen-subset test --batch-size 1 --tokens-per-sample 70 --num-workers 0 $EVAL_ARGS
