#!/usr/bin/env bash
# WikiText-103: the LSTM language model of DeFINE Table 1a, with DeFINE or without, on the data of prepare.sh.
#   bash examples/language_model/wikitext103/lstm_train.sh define     # define_lstm_wt103: + DeFINE N = 3 (33.05M)
#   bash examples/language_model/wikitext103/lstm_train.sh adaptive   # lstm_wt103: adaptive input only (32.61M)
# Both: 4 layers 256 -> 1024 -> 1024 -> 1024 -> 256, adaptive input n = m = 256 (cutoffs 20000,40000,200000,
# factor 4) tied to an adaptive softmax. Any further arguments are appended to fairseq-train's (e.g. --cpu, or
# --max-update / sizes for a dry run); EVAL_ARGS to fairseq-eval-lm's.
# The recipe is salesforce/awd-lstm-lm's WikiText-103 command (Merity et al. 2018, "An analysis of neural language modeling at multiple scales", whose
# dropouts the archs use: 0.1 input / hidden / output, no weight or embedding dropout, no AR/TAR, no weight
# decay): Adam lr 1e-3 for 12 epochs, then 1e-4 (`--when 12`), 14 epochs, 60 streams of BPTT 140, gradient
# clipping 0.25 (its default), validation on 10 streams, the best checkpoint scored on the test set with 1 stream
# (its test_batch_size).
# The lr list holds one value per epoch (fairseq's fixed schedule keeps the last one).
set -euo pipefail
MODEL=${1:-define}
if [ $# -gt 0 ]; then shift; fi
DATA=${DATA:-runs/wikitext-103/data-bin}
EVAL_ARGS=${EVAL_ARGS:-}
BIN=$(dirname "$(command -v python)")
case "$MODEL" in
  define) ARCH=define_lstm_wt103 ;;
  adaptive) ARCH=lstm_wt103 ;;
  *) echo "usage: $0 define|adaptive  [fairseq-train arguments]" >&2; exit 2 ;;
esac
SAVE=${SAVE:-runs/wikitext-103/checkpoints-lstm-$MODEL}
LR=0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.0001
"$BIN/fairseq-train" "$DATA" --user-dir fairseq_define --task bptt_lm --arch "$ARCH" \
    --criterion ar_tar_adaptive_loss --ar-alpha 0 --tar-beta 0 --ddp-backend legacy_ddp \
    --optimizer adam --adam-betas "(0.9,0.999)" --lr "$LR" --lr-scheduler fixed --weight-decay 0 \
    --clip-norm 0.25 --batch-size 60 --batch-size-valid 10 --tokens-per-sample 140 --max-epoch 14 \
    --seed 1111 --num-workers 0 --save-dir "$SAVE" --no-epoch-checkpoints --log-format simple --log-interval 200 "$@"
# shellcheck disable=SC2086
"$BIN/fairseq-eval-lm" "$DATA" --user-dir fairseq_define --task bptt_lm --path "$SAVE/checkpoint_best.pt" \
    --gen-subset test --batch-size 1 --tokens-per-sample 140 --num-workers 0 $EVAL_ARGS
