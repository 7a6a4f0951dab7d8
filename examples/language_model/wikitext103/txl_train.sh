#!/usr/bin/env bash
# WikiText-103 on GPUs: Transformer-XL with DeFINE (paper Table 2), or without, on the data of prepare.sh.
#   bash examples/language_model/wikitext103/txl_train.sh define [N]  # define_transformer_xl_wt103, Map n = N (128)
#   bash examples/language_model/wikitext103/txl_train.sh map [N]     # the same, --define-transform none (N: 384)
#   bash examples/language_model/wikitext103/txl_train.sh standard    # transformer_xl_wt103 (d_model 410, 151.11M)
# Further arguments are appended to fairseq-train's (e.g. --fp16), EVAL_ARGS to fairseq-eval-lm's; DATA, SAVE and
# GPUS (default: the visible GPUs) are read from the environment.
# Transformer-XL base's hyper-parameters (Dai et al., run_wt103_base.sh): Adam, lr 2.5e-4, no warm-up, cosine
# decay to 0 over 200k updates, gradient clipping 0.25, dropout 0.1, segments of 150 tokens with a memory of 150,
# 60 streams per update in all (--batch-size is the streams of one GPU: 60 / GPUS, rounded down). Evaluation as
# the paper's: segments of 64 tokens, memory 640, relative distances clamped at 400, same_length, on the test set.
# A dry run of every flag on CPU (WikiText-2, a tiny model, 2 updates):
#   DATA=runs/wikitext-2-bin SAVE=/tmp/txl-dry EVAL_ARGS=--cpu bash examples/language_model/wikitext103/txl_train.sh \
#     define 16 --decoder-layers 1 --decoder-embed-dim 32 --decoder-attention-heads 2 --decoder-head-dim 16 \
#     --decoder-ffn-embed-dim 64 --define-expand-dim 64 --define-max-groups 4 --max-update 2 --batch-size 2 \
#     --batch-size-valid 2 --max-valid-steps 2 --cpu
set -euo pipefail
MODEL=${1:-define}
if [ $# -gt 0 ]; then shift; fi
N=""
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then N=$1; shift; fi
DATA=${DATA:-runs/wikitext-103/data-bin}
GPUS=${GPUS:-$( (nvidia-smi -L 2>/dev/null || true) | wc -l)}
if [ "$GPUS" -lt 1 ]; then GPUS=1; fi
EVAL_ARGS=${EVAL_ARGS:-}
BIN=$(dirname "$(command -v python)")
case "$MODEL" in
  define) N=${N:-128}; MODEL_ARGS=(--arch define_transformer_xl_wt103 --define-map-dim "$N") ;;
  map) N=${N:-384}; MODEL_ARGS=(--arch define_transformer_xl_wt103 --define-map-dim "$N" --define-transform none) ;;
  standard) N=410; MODEL_ARGS=(--arch transformer_xl_wt103) ;;
  *) echo "usage: $0 define|map [N] | standard  [fairseq-train arguments]" >&2; exit 2 ;;
esac
SAVE=${SAVE:-runs/wikitext-103/checkpoints-txl-$MODEL-$N}
"$BIN/fairseq-train" "$DATA" --user-dir fairseq_define --task bptt_lm "${MODEL_ARGS[@]}" \
    --tokens-per-sample 150 --mem-len 150 --batch-size $((60 / GPUS)) --batch-size-valid 10 \
    --distributed-world-size "$GPUS" --ddp-backend legacy_ddp \
    --criterion define_bptt_nll --optimizer adam --lr 0.00025 --lr-scheduler cosine --max-update 200000 \
    --clip-norm 0.25 --dropout 0.1 --attention-dropout 0.0 --seed 1 --num-workers 0 \
    --save-dir "$SAVE" --no-epoch-checkpoints --validate-interval-updates 4000 --save-interval-updates 4000 \
    --keep-interval-updates 1 --log-format simple --log-interval 200 "$@"
# shellcheck disable=SC2086
"$BIN/fairseq-eval-lm" "$DATA" --user-dir fairseq_define --task bptt_lm --path "$SAVE/checkpoint_best.pt" \
    --gen-subset test --tokens-per-sample 64 --batch-size 10 --num-workers 0 \
    --model-overrides "{'mem_len': 640, 'clamp_len': 400, 'same_length': True}" $EVAL_ARGS
