#!/usr/bin/env bash
# Downloads the llama-cpp-python source package (it vendors llama.cpp: its tokenizer test
# vocabularies and the sources of the llama-bench peer) to the path given, unless it is there.
# By URL from PyPI's JSON API: `pip download` of an sdist would try to build it (minutes of
# CMake) just to read its metadata.
#
#   scripts/fetch-llama-cpp-sdist.sh VERSION OUT.tar.gz
set -euo pipefail
version="$1"
out="$2"
[ -s "$out" ] && exit 0
api="https://pypi.org/pypi/llama-cpp-python/json"
url="$(curl -sSf "$api" | python3 -c '
import json, sys, urllib.parse
d = json.load(sys.stdin)
files = d.get("releases", {}).get(sys.argv[2]) or d["urls"]
rel = [u["url"] for u in files if u["packagetype"] == "sdist"][0]
print(urllib.parse.urljoin(sys.argv[1], rel))' "$api" "$version")"
curl -sSfL -o "$out.tmp" "$url"
mv "$out.tmp" "$out"
