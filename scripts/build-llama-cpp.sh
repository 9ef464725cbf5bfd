#!/usr/bin/env bash
# Builds llama.cpp's llama-bench from the llama-cpp-python source package (the peer for
# `tessera bench llm`) into .cache/llama.cpp. About 15 minutes on 2 cores; never run in CI.
#
#   scripts/fetch-models.sh && scripts/build-llama-cpp.sh
#   .cache/llama.cpp/build/bin/llama-bench -m .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf -t 2 -p 512 -n 128
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="$root/.cache"
src="$cache/llama.cpp"
version=0.3.36
tarball="$cache/llama_cpp_python-$version.tar.gz"
if [ ! -d "$src" ]; then
    "$root/scripts/fetch-llama-cpp-sdist.sh" "$version" "$tarball"
    mkdir -p "$src.tmp"
    tar -xzf "$tarball" -C "$src.tmp" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
    mv "$src.tmp" "$src"
fi
# CMake from PyPI when the system has none.
if ! command -v cmake >/dev/null; then
    venv="$cache/cmake-venv"
    [ -x "$venv/bin/cmake" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet cmake; }
    export PATH="$venv/bin:$PATH"
fi
# Without AMX: on a Xeon VM with AMX (2026-11-27) this llama.cpp's AMX kernels died with SIGILL
# at their first `tilezero` in an OpenMP worker (ggml's tinygemm_kernel_amx, q4_1), so
# llama-bench could not run at all; -mno-amx-* keeps -march=native's other extensions.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build "$src/build" --target llama-bench -j "$(nproc)"
echo "built $src/build/bin/llama-bench" >&2
