#!/usr/bin/env bash
# WikiText-103 on GPUs: fairseq's adaptive-input recipe (README.adaptive_inputs.md), with DeFINE or without.
#   bash examples/language_model/wikitext103/train.sh define    # define_transformer_lm_wiki103
#   bash examples/language_model/wikitext103/train.sh adaptive  # stock transformer_lm_wiki103 (the baseline)
# The recipe's effective batch is 8 GPUs x 3072 tokens x --update-freq 3; on G GPUs use --update-freq $((24 / G)).
set -euo pipefail
MODEL=${1:-define}
DATA=${DATA:-runs/wikitext-103/data-bin}
UPDATE_FREQ=${UPDATE_FREQ:-3}
BIN=$(dirname "$(command -v python)")
case "$MODEL" in
  define) ARCH=define_transformer_lm_wiki103 ;;
  adaptive) ARCH=transformer_lm_wiki103 ;;
  *) echo "usage: $0 define|adaptive" >&2; exit 2 ;;
esac
"$BIN/fairseq-train" "$DATA" --user-dir fairseq_define --task language_modeling \
    --save-dir "runs/wikitext-103/checkpoints-$MODEL" --arch "$ARCH" \
    --max-update 286000 --lr 1.0 --t-mult 2 --lr-period-updates 270000 --lr-scheduler cosine --lr-shrink 0.75 \
    --warmup-updates 16000 --warmup-init-lr 1e-07 --stop-min-lr 1e-09 --optimizer nag --min-lr 0.0001 \
    --clip-norm 0.1 --criterion adaptive_loss --max-tokens 3072 --update-freq "$UPDATE_FREQ" \
    --tokens-per-sample 3072 --seed 1 --sample-break-mode none --skip-invalid-size-inputs-valid-test \
    --ddp-backend legacy_ddp --fp16
"$BIN/fairseq-eval-lm" "$DATA" --user-dir fairseq_define --path "runs/wikitext-103/checkpoints-$MODEL/checkpoint_best.pt" \
    --gen-subset test --tokens-per-sample 3072 --context-window 2560 --max-tokens 3072 --softmax-batch 1024
