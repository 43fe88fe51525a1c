#!/usr/bin/env bash
# idle-memory.sh: resident memory per idle client connection, and nothing else (the logic of
# harness.sh's phase (e) without the load phases, so it is safe on a shared machine: RSS does not
# depend on load). Starts the sandbox and a 1-worker gateway (embedded store; STORE below),
# serves a few warm-up requests on 8 connections (then closes them), reads the gateway's VmRSS,
# opens IDLE_CONNECTIONS connections one by one (fresh: nothing sent), reads it again, sends one
# chat completion on each (REQUESTS_PER_CONNECTION, back to back) and reads its answer
# (keep-alive), and reads it a third time. Prints one JSON line with the KiB per fresh and per
# keep-alive connection.
# STORE=redis keeps the accounts in a Redis started here instead: the embedded store keeps every
# request's usage record in the gateway (its ledger, about 128 bytes a request), which the
# keep-alive figure would otherwise count as connection memory (0.13 KiB at 10,000 requests).
#
#   loadtest/idle-memory.sh                                   # release build, io_uring if allowed
#   MONOIO_FORCE_LEGACY_DRIVER=1 loadtest/idle-memory.sh      # the epoll driver
#   BIN=/path/to/fikra-gateway IDLE_CONNECTIONS=2000 loadtest/idle-memory.sh
#   STORE=redis loadtest/idle-memory.sh                      # usage records kept in Redis
#   REQUESTS_PER_CONNECTION=2 loadtest/idle-memory.sh        # back to back: a busy client each
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
idle="${IDLE_CONNECTIONS:-10000}"; store="${STORE:-embedded}"; per_connection="${REQUESTS_PER_CONNECTION:-1}"
ulimit -n "$(ulimit -Hn)"
if [ $(( $(ulimit -n) - 512 )) -lt "$idle" ]; then
  idle=$(( $(ulimit -n) - 512 ))
  echo "idle-memory: open-file limit $(ulimit -n); IDLE_CONNECTIONS lowered to $idle" >&2
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bin fikra-gateway
  BIN="${CARGO_TARGET_DIR:-$root/target}/release/fikra-gateway"
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. "$root/loadtest/common.sh"
sandbox_port=$(free_port); gateway_port=$(free_port); admin_port=$(free_port); redis_port=$(free_port)
if [ "$store" = redis ]; then
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

"$BIN" sandbox --listen "127.0.0.1:$sandbox_port" --workers 1 2>"$work/sandbox.log" &
pids+=($!)
{
  bench_config "$gateway_port" "$admin_port" "$sandbox_port"
  [ "$store" = redis ] && printf '[store]\nredis_url = "redis://127.0.0.1:%s"\n' "$redis_port"
} > "$work/gateway.toml"
export FIKRA_ADMIN_TOKEN=idle-memory-admin-token
"$BIN" serve --config "$work/gateway.toml" >"$work/access.log" 2>"$work/gateway.log" &
gateway_pid=$!; pids+=("$gateway_pid")
ready=0
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && { ready=1; break; }; sleep 0.1; done
[ "$ready" = 1 ] || { echo "idle-memory: the gateway did not become ready" >&2; cat "$work/gateway.log" >&2; exit 1; }
auth="Authorization: Bearer $FIKRA_ADMIN_TOKEN"
curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts" -H "$auth" -d '{"id":"bench","signup_credit_usd":"1000000"}' >/dev/null
key=$(curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts/bench/keys" -H "$auth" -d '{"kind":"live"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
driver=$(grep -o 'runs on [a-z_]*' "$work/gateway.log" | head -1 | sed 's/runs on //')
body='{"model":"fikra-flash","max_tokens":16,"messages":[{"role":"user","content":"Habari ya asubuhi?"}]}'

python3 - "$gateway_pid" "$gateway_port" "$idle" "$key" "$body" "$driver" "$store" "$per_connection" <<'PY'
import json, socket, sys, time
pid, port, count, key, body, driver, store = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5].encode(), sys.argv[6], sys.argv[7]
per_connection = int(sys.argv[8])
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
def exchange(s):
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("idle-memory: the gateway closed a connection")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += s.recv(65536)
    return head.split(b" ")[1].decode()
# Warm-up: the worker's pools, caches and upstream connection exist before the first reading.
warm = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
for _ in range(25):
    for s in warm:
        exchange(s)
for s in warm:
    s.close()
time.sleep(1)
base = rss_kib()
sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
time.sleep(1)
connected = rss_kib()
statuses = {}
for s in sockets:
    for _ in range(per_connection):
        status = exchange(s)
        statuses[status] = statuses.get(status, 0) + 1
time.sleep(1)
served = rss_kib()
for s in sockets:
    s.close()
time.sleep(1)
print(json.dumps({"driver": driver, "store": store, "connections": count, "requests_per_connection": per_connection, "rss_base_kib": base, "rss_connected_kib": connected,
    "rss_served_kib": served, "rss_after_close_kib": rss_kib(),
    "kib_per_fresh_connection": round((connected - base) / count, 3),
    "kib_per_keepalive_connection": round((served - base) / count, 3), "statuses": statuses}))
PY
