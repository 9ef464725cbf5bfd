#!/usr/bin/env bash
# Instructions per graph op, counted with callgrind (deterministic, unlike timings on this VM):
# one all_sum node on a no-op communicator (built, input dropped, evaluated) and one op of a
# chain of 100 adds on 1000 floats. Usage: scripts/count-op-instructions.sh [ITERATIONS]
# Needs valgrind (apt install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20000}"
chains=$(( n / 100 > 0 ? n / 100 : 1 ))
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt install valgrind)" >&2; exit 1; }
cargo build --release -q -p tessera-core --example op_instructions
bin="${CARGO_TARGET_DIR:-target}/release/examples/op_instructions"
count() { # FUNCTION MODE ITERATIONS -> instructions inside FUNCTION
  valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect="op_instructions::$1" \
    "$bin" "$2" "$3" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
a=$(count timed_all_sum all_sum "$n")
c=$(count timed_chain chain "$chains")
echo "all_sum node (build + eval, no-op communicator): $(( a / n )) instructions per op ($n ops)"
echo "chain of 100 adds on 1000 f32: $(( c / (chains * 100) )) instructions per op ($chains chains)"
