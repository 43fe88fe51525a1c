#!/usr/bin/env bash
# Requests per second of the core paths with wrk at 64 connections, pinned per BENCH.md:
# the gateway (one worker) alone on CPU 1, wrk on CPU 0. Prints one line per path.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/fikra-gateway
duration="${DURATION:-10s}"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 10000)); admin=$((port + 1))
cat > "$work/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
workers = 1
[[account_overrides]]
account = "bench"
rpm = 100000000
tpm = 100000000000
TOML
export FIKRA_ADMIN_TOKEN=bench-admin-token
taskset -c 1 "$bin" serve --config "$work/gateway.toml" 2>"$work/gateway.log" &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
auth="Authorization: Bearer $FIKRA_ADMIN_TOKEN"
curl -sf -X POST "http://127.0.0.1:$admin/admin/accounts" -H "$auth" -d '{"id":"bench","signup_credit_usd":"1000000"}' >/dev/null
FIKRA_KEY=$(curl -sf -X POST "http://127.0.0.1:$admin/admin/accounts/bench/keys" -H "$auth" -d '{"kind":"live"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
export FIKRA_KEY
cpu_busy() { awk '/^cpu[01] /{print $1, $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
for script in chat unauthorized; do
  taskset -c 0 wrk -t2 -c64 -d2s -s "loadtest/$script.lua" "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
  before=$(cpu_busy)
  result=$(taskset -c 0 wrk -t2 -c64 -d"$duration" -s "loadtest/$script.lua" "http://127.0.0.1:$port/v1/chat/completions")
  after=$(cpu_busy)
  cpu=$(paste <(echo "$before") <(echo "$after") | awk '{printf "%s %.0f%% ", $1, 100*($5-$2)/($6-$3)}')
  rps=$(echo "$result" | awk '/Requests\/sec/ {print $2}')
  non2xx=$(echo "$result" | awk '/Non-2xx/ {print $5}')
  echo "$script: ${rps} requests/s (non-2xx: ${non2xx:-0}) wrk -t2 -c64 -d$duration, gateway 1 worker on CPU 1; busy: $cpu"
done
