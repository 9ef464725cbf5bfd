#!/usr/bin/env bash
# Small public datasets the examples train on, fetched from PyPI packages into a cache
# (never committed):
#   $TESSERA_DATASETS/digits.csv   the scikit-learn digits (1797 8x8 images, 64 pixels 0-16 and
#                                  the label per line), from the scikit-learn wheel
#   $TESSERA_DATASETS/botchan.txt  Natsume Soseki's "Botchan" in English (public domain, ~280 KB),
#                                  from the sentencepiece source package
# Default $TESSERA_DATASETS: .cache/datasets. Skips what is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${TESSERA_DATASETS:-$root/.cache/datasets}"
mkdir -p "$dest"
wheels="$dest/wheels"

digits="$dest/digits.csv"
if [ ! -s "$digits" ]; then
    echo "fetching the digits dataset (scikit-learn wheel, ~13 MB)" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux2014_x86_64 --dest "$wheels" "scikit-learn==1.5.2"
    python3 - "$wheels"/scikit_learn-1.5.2-*.whl "$digits" <<'PY'
import gzip, io, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz"))
open(sys.argv[2] + ".tmp", "wb").write(data)
PY
    mv "$digits.tmp" "$digits"
fi
botchan="$dest/botchan.txt"
if [ ! -s "$botchan" ]; then
    echo "fetching botchan.txt (sentencepiece source package, ~2.6 MB)" >&2
    python3 -m pip download --quiet --no-deps --no-binary=:all: --dest "$wheels" "sentencepiece==0.2.0"
    python3 - "$wheels"/sentencepiece-0.2.0.tar.gz "$botchan" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    data = t.extractfile("sentencepiece-0.2.0/test/botchan.txt").read()
open(sys.argv[2] + ".tmp", "wb").write(data)
PY
    mv "$botchan.tmp" "$botchan"
fi
echo "datasets in $dest" >&2
