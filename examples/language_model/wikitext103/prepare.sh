#!/usr/bin/env bash
# Download WikiText-103 (word level) and binarize it for fairseq, on your machine (about 500 MB of text).
#   bash examples/language_model/wikitext103/prepare.sh [DEST=runs/wikitext-103]
set -euo pipefail
DEST=${1:-runs/wikitext-103}
BIN=$(dirname "$(command -v python)")
mkdir -p "$DEST" && cd "$DEST"
if [ ! -f wikitext-103/wiki.train.tokens ]; then
  for url in https://wikitext.smerity.com/wikitext-103-v1.zip \
             https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip; do
    python -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], 'wikitext-103-v1.zip')" "$url" && break
  done
  python -c "import zipfile; zipfile.ZipFile('wikitext-103-v1.zip').extractall('.')"
fi
"$BIN/fairseq-preprocess" --only-source \
    --trainpref wikitext-103/wiki.train.tokens --validpref wikitext-103/wiki.valid.tokens \
    --testpref wikitext-103/wiki.test.tokens --destdir data-bin --workers 16
echo "binarized into $DEST/data-bin (dictionary: $(wc -l < data-bin/dict.txt) words + 4 specials)"
