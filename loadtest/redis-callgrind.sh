#!/usr/bin/env bash
# Redis's instructions per admitted small-account request, from callgrind: redis-server runs
# under `valgrind --tool=callgrind` (CPU 0), the gateway normally (one worker, CPU 1), and a key
# with a spend cap far above anything spent (never leased, like cpu-per-request.sh CAPPED=1), so
# every request is one FCALL to admit and one to settle. Warms up with WARMUP_REQUESTS
# (100), zeroes the counters and INFO commandstats, sends REQUESTS (500) over one connection
# (one request at a time: each FCALL arrives alone, as it would under light load), dumps, and
# prints the instructions per request: the whole process, and inside `call` (the command
# dispatch, every FCALL and the commands the Functions run) and the commands per request.
# BIN: the gateway (default $CARGO_TARGET_DIR/release/fikra-gateway; built if it is the default).
# Output file: $OUT (callgrind.out.redis). No timing is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${REQUESTS:-500}"; warmup="${WARMUP_REQUESTS:-100}"; out="${OUT:-$PWD/callgrind.out.redis}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
bin="${BIN:-$target/release/fikra-gateway}"; loadgen="$target/release/fikra-loadgen"
[ -n "${BIN:-}" ] || cargo build --release --quiet
. loadtest/common.sh
scratch
redis_port=$(free_port); sandbox_port=$(free_port); gateway_port=$(free_port); admin_port=$(free_port)
rm -f "$out" "$out".*
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" redis-server --port "$redis_port" --bind 127.0.0.1 \
  --dir "$work" --save '' --appendonly no >/dev/null 2>"$work/redis.log" &
redis_pid=$!; pids+=("$redis_pid")
taskset -c 0 "$bin" sandbox --listen "127.0.0.1:$sandbox_port" --workers 1 2>/dev/null &
pids+=($!)
for _ in $(seq 300); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
# Redis under valgrind answers tens of times slower: a long command deadline (no call times out
# and is voided), and heartbeats as rare as allowed (fewer background calls in the count).
{
  bench_config "$gateway_port" "$admin_port" "$sandbox_port"
  printf '[store]\nredis_url = "redis://127.0.0.1:%s"\ncommand_timeout_ms = 5000\n' "$redis_port"
  printf 'node_beat_interval_ms = 10000\nnode_dead_after_ms = 20000\n'
} > "$work/gateway.toml"
export FIKRA_ADMIN_TOKEN=bench-admin-token
taskset -c 1 "$bin" serve --config "$work/gateway.toml" >/dev/null 2>"$work/gateway.log" &
pids+=($!)
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.1; done
auth="Authorization: Bearer $FIKRA_ADMIN_TOKEN"
curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts" -H "$auth" -d '{"id":"bench","signup_credit_usd":"1000000"}' >/dev/null
key=$(curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts/bench/keys" -H "$auth" \
  -d '{"kind":"live","spend_cap_usd":"999999","spend_cap_period":"lifetime"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
lg=(taskset -c 1 "$loadgen" --threads 1 --connections 1 --url "http://127.0.0.1:$gateway_port/v1/chat/completions" --header "Authorization: Bearer $key")
"${lg[@]}" --requests "$warmup" >/dev/null
redis-cli -p "$redis_port" config resetstat >/dev/null
callgrind_control -z "$redis_pid" >/dev/null
result=$("${lg[@]}" --requests "$requests")
callgrind_control -d "$redis_pid" >/dev/null
stats=$(redis-cli -p "$redis_port" info commandstats | tr -d '\r')
echo "$result"
served=$(echo "$result" | python3 -c 'import json,sys; print(json.load(sys.stdin)["responses"])')
dump=$(ls -t "$out".* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
# (`|| true`: awk leaving early closes the pipe, which is no failure under pipefail.)
call=$(callgrind_annotate --inclusive=yes --threshold=100 "$dump" 2>/dev/null | awk '/:call \[/ {gsub(",", "", $1); print $1; exit}' || true)
echo "dump $dump, $served requests"
echo "redis instructions per request: $((total / served)) in all, $(( ${call:-0} / served )) inside call()"
echo "commands per request (INFO commandstats, calls; the FCALL (fcall) and the commands the Functions run):"
echo "$stats" | awk -F'[:=,]' -v n="$served" '/^cmdstat_/ {sub("cmdstat_", "", $1); printf "  %-12s %8d calls  %.3f per request\n", $1, $3, $3 / n; total += $3} END {printf "  %-12s %8d calls  %.3f per request\n", "all", total, total / n}'
echo "--- inclusive (per request) ---"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | grep -E '^\s*[0-9,]+ \(' | head -30 \
  | awk -v n="$served" '{ir=$1; gsub(",", "", ir); $1=""; $2=""; printf "%10d %s\n", ir / n, $0}' || true
