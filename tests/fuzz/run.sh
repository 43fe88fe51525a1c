#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10; the closing notes use 600), from the
# repository root: bash tests/fuzz/run.sh [SECONDS]. Needs the nightly toolchain and cargo-fuzz
# (installed here if missing). A crash stops the run with the failing input in
# tests/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-10}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --quiet --locked cargo-fuzz
targets=(request_head chunked_body chat_request upstream_answer sse_events upstream_head redis_reply)
cargo +nightly fuzz build --fuzz-dir tests/fuzz -O
for target in "${targets[@]}"; do
  cargo +nightly fuzz run --fuzz-dir tests/fuzz -O "$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
    | grep -E '^stat::number_of_executed_units|^Done' | sed "s/^/$target: /"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz target $target failed"; exit 1; }
done
