#!/usr/bin/env bash
# Download the Penn Treebank (Mikolov's preprocessed copy, 10k words, the one salesforce/awd-lstm-lm's getdata.sh
# uses) and binarize it for fairseq, on your machine.
#   bash examples/language_model/ptb/prepare.sh [DEST=runs/ptb]
# Dictionary: fairseq's 4 specials (<s>, <pad>, </s>, <unk>; the corpus's own <unk> maps to fairseq's) + 9,999 words:
# V = 10,003 (--padding-factor 1; salesforce's V = 10,000 counts <eos> and <unk> but no <s>/<pad>).
set -euo pipefail
DEST=${1:-runs/ptb}
BIN=$(dirname "$(command -v python)")
mkdir -p "$DEST" && cd "$DEST"
if [ ! -f penn/train.txt ]; then
  python -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], 'simple-examples.tgz')" \
      http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz
  python -c "import tarfile; tarfile.open('simple-examples.tgz').extractall('.')"
  mkdir -p penn
  for split in train valid test; do cp "simple-examples/data/ptb.$split.txt" "penn/$split.txt"; done
fi
"$BIN/fairseq-preprocess" --only-source --padding-factor 1 \
    --trainpref penn/train.txt --validpref penn/valid.txt --testpref penn/test.txt --destdir data-bin --workers 4
echo "binarized into $DEST/data-bin (dictionary: $(wc -l < data-bin/dict.txt) words + 4 specials)"
