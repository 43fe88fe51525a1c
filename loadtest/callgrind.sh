#!/usr/bin/env bash
# Instructions per unary request through the gateway (full policy), from callgrind: noise-free
# before/after figures for one code path (BENCH.md). Starts Redis (or the embedded store with
# STORE=embedded) and the standalone sandbox on CPU 0, the gateway with one worker under
# `valgrind --tool=callgrind` on CPU 1 (epoll driver); warms up with WARMUP_REQUESTS, zeroes the counters, sends
# REQUESTS (2000) with fikra-loadgen (16 connections), dumps, and prints the top inclusive and
# self costs divided by the request count. Output file: $OUT (callgrind.out.gateway).
# CONTENDER picks the request measured, as in harness.sh phase (g): `proxied` (default, the
# leased bench account), `401` (a key nobody issued), `429` (account `tiny` at 1 RPM, answered
# by its deny entry after one admitted request) or `402` (account `broke`, an empty wallet).
# RPM: the bench account's limit (100000000: leased). An account of 1100 RPM is too small for
# leases, so every request is an admit and a settle on the store; keep WARMUP_REQUESTS +
# REQUESTS under it (e.g. RPM=1100 WARMUP_REQUESTS=200 REQUESTS=800).
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${REQUESTS:-2000}"; contender="${CONTENDER:-proxied}"; warmup="${WARMUP_REQUESTS:-300}"; store="${STORE:-redis}"; out="${OUT:-$PWD/callgrind.out.gateway}"
cargo build --release --quiet
target="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target/release/fikra-gateway"; loadgen="$target/release/fikra-loadgen"
. loadtest/common.sh
scratch
redis_port=$(free_port); sandbox_port=$(free_port); gateway_port=$(free_port); admin_port=$(free_port)
taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no >/dev/null 2>&1 &
pids+=($!)
taskset -c 0 "$bin" sandbox --listen "127.0.0.1:$sandbox_port" --workers 1 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
{
  bench_config "$gateway_port" "$admin_port" "$sandbox_port" "" "${RPM:-100000000}"
  [ "$store" = redis ] && printf '[store]\nredis_url = "redis://127.0.0.1:%s"\n' "$redis_port"
  cat <<TOML
[[account_overrides]]
account = "tiny"
rpm = 1
tpm = 100000
TOML
} > "$work/gateway.toml"
export FIKRA_ADMIN_TOKEN=bench-admin-token
rm -f "$out" "$out".*
# The epoll driver: under valgrind the io_uring driver never finishes starting (valgrind does not
# model the kernel writing the shared rings), so the profile is of the epoll path.
taskset -c 1 env MONOIO_FORCE_LEGACY_DRIVER=1 valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve --config "$work/gateway.toml" >"$work/access.log" 2>"$work/gateway.log" &
gateway_pid=$!; pids+=("$gateway_pid")
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.1; done
auth="Authorization: Bearer $FIKRA_ADMIN_TOKEN"
curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts" -H "$auth" -d '{"id":"bench","signup_credit_usd":"1000000"}' >/dev/null
new_key() { curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts/$1/keys" -H "$auth" -d '{"kind":"live"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'; }
url="http://127.0.0.1:$gateway_port/v1/chat/completions"
case "$contender" in
  proxied) key=$(new_key bench) ;;
  401) key="fk_live_$(printf 'Q%.0s' $(seq 32))" ;;
  429)
    curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts" -H "$auth" -d '{"id":"tiny","signup_credit_usd":"1000"}' >/dev/null
    key=$(new_key tiny)
    # The one request the minute allows; every later one is refused (by the deny entry once written).
    curl -s -o /dev/null -X POST "$url" -H "Authorization: Bearer $key" -d '{"model":"fikra-flash","max_tokens":16,"messages":[{"role":"user","content":"Habari ya asubuhi?"}]}' ;;
  402)
    curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts" -H "$auth" -d '{"id":"broke","signup_credit_usd":"0"}' >/dev/null
    key=$(new_key broke) ;;
  *) echo "CONTENDER must be proxied, 401, 429 or 402" >&2; exit 2 ;;
esac
taskset -c 0 "$loadgen" --threads 1 --connections 16 --requests "$warmup" --url "$url" --header "Authorization: Bearer $key" >/dev/null
callgrind_control -z "$gateway_pid" >/dev/null
result=$(taskset -c 0 "$loadgen" --threads 1 --connections 16 --requests "$requests" --url "$url" --header "Authorization: Bearer $key")
callgrind_control -d "$gateway_pid" >/dev/null
echo "$result"
grep -i "driver" "$work/gateway.log" | head -2 || true
dump=$(ls -t "$out".* | head -1)
served=$(echo "$result" | python3 -c 'import json,sys; print(json.load(sys.stdin)["responses"])')
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "contender $contender, dump $dump: $total instructions for $served requests = $((total / served)) per request"
echo "--- inclusive (per request) ---"
# (`|| true`: `head` closing the pipe early is not a failure under pipefail.)
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | grep -E '^\s*[0-9,]+ \(' | head -25 \
  | awk -v n="$served" '{ir=$1; gsub(",", "", ir); $1=""; $2=""; printf "%10d %s\n", ir / n, $0}' || true
echo "--- self (per request) ---"
callgrind_annotate --threshold=100 "$dump" 2>/dev/null | grep -E '^\s*[0-9,]+ \(' | head -25 \
  | awk -v n="$served" '{ir=$1; gsub(",", "", ir); $1=""; $2=""; printf "%10d %s\n", ir / n, $0}' || true
