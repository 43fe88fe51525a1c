#!/usr/bin/env bash
# The side-by-side harness of BENCH.md in one command: direct (load straight to the standalone
# sandbox), gateway (fikra-gateway with the full policy, state in Redis) and nginx (a plain
# keep-alive reverse proxy to the same sandbox), interleaved, repeated, medians.
#
# Phases: (a) unary saturation, closed loop, fikra-loadgen and wrk; (b) latency at fixed rates,
# open loop (coordinated-omission corrected), added p50/p99 over direct; (c) streaming, time to
# first token and inter-event delay, gateway vs direct; (d) refusals: 401 (unknown key) and 429
# (deny entry of an account over its RPM) vs proxied requests/s; (e) RSS per idle keep-alive
# connection, gateway and nginx; (f) Redis commands per admitted, 401 and 429 request; (g) CPU
# time per response at a fixed rate (CPU_RATE, 10000/s): gateway leased, gateway with a capped
# key (the store on every request), nginx, and the gateway's 401, 429 and 402 refusals.
#
# Pinning (BENCH.md): the proxy under test alone on CPU 1 with one worker; load generators,
# sandboxes and Redis on CPU 0. Each run records both CPUs' busy share; when CPU 0 is saturated
# the figure is a lower bound for every contender.
#
# Knobs (environment): DURATION seconds per run (5), WARMUP seconds (1), ROUNDS (3), CONNECTIONS
# for (a) and (b) (64), RATES for (b) ("auto": 25/50/80 % of nginx's median loadgen
# saturation in (a), else of the slowest contender's; or e.g. "5000 10000 20000"), PLOT_RATE (the middle rate), STREAMS connections for
# (c) (64), STREAM_RATE streams started per second in (c) (120, open loop; 0: closed loop, which
# starts all streams on the same sandbox timer tick), IDLE_CONNECTIONS for (e) (10000), COUNT requests for (f) (2000), STORE (redis or
# embedded), PHASES (abcdefg), CPU_RATE for (g), EPOLL_CONTENDER (1 adds the gateway on epoll to (a)), UPSTREAM
# (sandbox, or canned: the unary model's upstream is a second nginx on CPU 0 answering every chat
# completion with one fixed body, the sandbox's own answer fetched at start, so the upstream costs
# CPU 0 little; streaming still uses the paced sandbox), COMMIT (for an exported tree).
# Writes loadtest/results/<date>-<commit>.md and .svg.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
duration="${DURATION:-5}"; warmup="${WARMUP:-1}"; rounds="${ROUNDS:-3}"; connections="${CONNECTIONS:-64}"
rates="${RATES:-auto}"; streams="${STREAMS:-64}"; stream_rate="${STREAM_RATE:-120}"; idle="${IDLE_CONNECTIONS:-10000}"; count="${COUNT:-2000}"
store="${STORE:-redis}"; phases="${PHASES:-abcdefg}"; upstream="${UPSTREAM:-sandbox}"
case "$upstream" in sandbox|canned) ;; *) echo "harness: UPSTREAM is sandbox or canned, not '$upstream'" >&2; exit 2;; esac
command_line="DURATION=$duration WARMUP=$warmup ROUNDS=$rounds CONNECTIONS=$connections RATES='$rates' STREAMS=$streams STREAM_RATE=$stream_rate IDLE_CONNECTIONS=$idle COUNT=$count STORE=$store PHASES=$phases CPU_RATE=${CPU_RATE:-10000} EPOLL_CONTENDER=${EPOLL_CONTENDER:-0} UPSTREAM=$upstream loadtest/harness.sh"
export PATH="$PATH:/usr/sbin"

# Open files: each side of every idle connection is a descriptor, plus upstream connections.
need_files=$((idle + 4096))
if [ "$(ulimit -n)" -lt "$need_files" ]; then
  ulimit -n "$need_files" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if [ "$(ulimit -n)" -lt "$need_files" ]; then
  idle=$(( $(ulimit -n) - 4096 ))
  echo "harness: open-file limit $(ulimit -n); IDLE_CONNECTIONS lowered to $idle" >&2
fi

cargo build --release --quiet
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/release/fikra-gateway"; loadgen="$target/release/fikra-loadgen"
# COMMIT names the source when it is not a git checkout (an exported tree: `git archive HEAD`).
if [ -n "${COMMIT:-}" ]; then
  commit=$COMMIT; dirty=" (exported tree)"
else
  commit=$(git rev-parse --short HEAD)
  dirty=$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock loadtest 2>/dev/null && echo "" || echo " (working tree differs from the commit)")
fi
work=$(mktemp -d)
records="$work/records.jsonl"; : > "$records"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. loadtest/common.sh
redis_port=$(free_port); sandbox_port=$(free_port); stream_port=$(free_port)
gateway_port=$(free_port); admin_port=$(free_port); nginx_port=$(free_port); nginx_stream_port=$(free_port)

# --- processes -------------------------------------------------------------------------------
mkdir -p "$work/redis"
taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save '' \
  --appendonly yes --appendfsync everysec --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
taskset -c 0 "$bin" sandbox --listen "127.0.0.1:$sandbox_port" --workers 1 2>"$work/sandbox.log" &
pids+=($!)
# The streaming upstream: a paced answer (first token after 20 ms, then 100 tokens/s, 32 tokens).
# Its content events are stamped (when the request came, when the event left), so the load
# generator can take the sandbox's own wait, rounded to its 1 ms timer, out of the first token.
taskset -c 0 "$bin" sandbox --listen "127.0.0.1:$stream_port" --workers 1 --ttft-ms 20 \
  --tokens-per-second 100 --output-tokens 32 --stamp-events on 2>"$work/stream-sandbox.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

unary_body='{"model":"fikra-flash","max_tokens":16,"messages":[{"role":"user","content":"Habari ya asubuhi?"}]}'
# The unary model's upstream port: the sandbox, or (UPSTREAM=canned) an nginx returning the
# sandbox's answer to this body as fixed bytes.
unary_port=$sandbox_port
if [ "$upstream" = canned ]; then
  canned_port=$(start_canned_upstream "$sandbox_port" "$unary_body" "$work/canned")
  pids+=($(cat "$work/canned/launcher.pid"))
  unary_port=$canned_port
fi

write_config() { # $1 = redis | embedded
  bench_config "$gateway_port" "$admin_port" "$unary_port"
  if [ "$1" = redis ]; then printf '[store]\nredis_url = "redis://127.0.0.1:%s"\nkey_prefix = "bench"\n' "$redis_port"; fi
  cat <<TOML
[[upstreams]]
name = "sbx-stream"
base_url = "http://127.0.0.1:$stream_port/v1"
[[models]]
id = "fikra-stream"
upstream = "sbx-stream"
upstream_model = "bench/stream-model"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192
[[account_overrides]]
account = "tiny"
rpm = 1
tpm = 100000
# Below LEASE_MIN_RPM (1,200): never leased, two FCALLs per admitted request.
[[account_overrides]]
account = "small"
rpm = 1100
tpm = 100000000
TOML
}
export FIKRA_ADMIN_TOKEN=bench-admin-token
start_gateway() {
  write_config "$1" > "$work/gateway.toml"
  # The access log is formatted and written as in production, to /dev/null: a full run makes
  # gigabytes of lines, which would otherwise land in the harness's own report on stdout.
  taskset -c 1 "$bin" serve --config "$work/gateway.toml" >/dev/null 2>"$work/gateway.log" &
  gateway_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && return 0; sleep 0.1; done
  return 1
}
if ! start_gateway "$store"; then
  if [ "$store" = redis ]; then
    echo "harness: the gateway did not become ready on the Redis store; falling back to embedded" >&2
    tail -5 "$work/gateway.log" >&2
    kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true
    store="embedded (Redis store failed to start)"
    start_gateway embedded || { echo "harness: gateway failed to start" >&2; cat "$work/gateway.log" >&2; exit 1; }
  else
    echo "harness: gateway failed to start" >&2; cat "$work/gateway.log" >&2; exit 1
  fi
fi
pids+=("$gateway_pid")
# EPOLL_CONTENDER=1: a second gateway, same config and store, on the epoll driver, in phase (a)
# (what io_uring is worth). It shares CPU 1 but is idle while the others run.
saturation_contenders="direct gateway nginx"
if [ "${EPOLL_CONTENDER:-0}" = 1 ]; then
  epoll_port=$(free_port); epoll_admin=$(free_port)
  sed -e "s/127.0.0.1:$gateway_port/127.0.0.1:$epoll_port/" -e "s/127.0.0.1:$admin_port/127.0.0.1:$epoll_admin/" \
    "$work/gateway.toml" > "$work/gateway-epoll.toml"
  taskset -c 1 env MONOIO_FORCE_LEGACY_DRIVER=1 "$bin" serve --config "$work/gateway-epoll.toml" >/dev/null 2>"$work/gateway-epoll.log" &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$epoll_admin/readyz" >/dev/null && break; sleep 0.1; done
  saturation_contenders="direct gateway gateway-epoll nginx"
fi
auth="Authorization: Bearer $FIKRA_ADMIN_TOKEN"
new_key() { # $1 = account id
  curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts" -H "$auth" -d "{\"id\":\"$1\",\"signup_credit_usd\":\"1000000\"}" >/dev/null
  curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts/$1/keys" -H "$auth" -d '{"kind":"live"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
bench_key=$(new_key bench); tiny_key=$(new_key tiny); small_key=$(new_key small)
unknown_key="fk_live_$(printf 'Q%.0s' $(seq 32))"

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections $(( $(ulimit -n) - 100 )); }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream sandbox { server 127.0.0.1:$unary_port; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$nginx_port backlog=4096;
        location / { proxy_pass http://sandbox; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
    # (c): the paced streaming sandbox, each event passed on as it comes.
    upstream stream_sandbox { server 127.0.0.1:$stream_port; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$nginx_stream_port backlog=4096;
        location / { proxy_pass http://stream_sandbox; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    }
}
NGINX
taskset -c 1 nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' 2>"$work/nginx/stderr.log" &
nginx_pid=$!; pids+=("$nginx_pid")
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break; sleep 0.1; done

stream_body='{"model":"fikra-stream","max_tokens":32,"stream":true,"messages":[{"role":"user","content":"Habari ya asubuhi? Niambie hadithi fupi kuhusu Nairobi."}]}'
printf '%s' "$unary_body" > "$work/unary.json"; printf '%s' "$stream_body" > "$work/stream.json"
declare -A url=([direct]="http://127.0.0.1:$unary_port/v1/chat/completions"
  [gateway]="http://127.0.0.1:$gateway_port/v1/chat/completions"
  [nginx]="http://127.0.0.1:$nginx_port/v1/chat/completions")
[ -n "${epoll_port:-}" ] && url[gateway-epoll]="http://127.0.0.1:$epoll_port/v1/chat/completions"
cat > "$work/chat.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $bench_key"
wrk.body = '$unary_body'
LUA

# --- measuring -------------------------------------------------------------------------------
cpu_ticks() { awk '/^cpu[01] /{printf "%s %s ", $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
cpu_share() { # before after -> "cpu0 cpu1" busy percent
  python3 -c 'import sys; b=list(map(int,sys.argv[1].split())); a=list(map(int,sys.argv[2].split())); print(" ".join("%.0f" % (100*(a[i]-b[i])/max(1,a[i+1]-b[i+1])) for i in (0,2)))' "$1" "$2"
}
record() { # phase contender round tool cpu0 cpu1 extra-json result-json
  printf '{"phase":"%s","contender":"%s","round":%s,"tool":"%s","cpu0":%s,"cpu1":%s,%s"result":%s}\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" >> "$records"
}
# run_loadgen phase contender round extra-json url key body loadgen-args...
run_loadgen() {
  local phase=$1 contender=$2 round=$3 extra=$4 target_url=$5 key=$6 body=$7; shift 7
  local before after out share
  before=$(cpu_ticks)
  out=$(taskset -c 0 "$loadgen" --threads 1 --url "$target_url" --body "$body" --header "Authorization: Bearer $key" "$@")
  after=$(cpu_ticks); share=$(cpu_share "$before" "$after")
  record "$phase" "$contender" "$round" loadgen ${share% *} ${share#* } "$extra" "$out"
  echo "$out"
}
run_wrk() { # phase contender round
  local before after out share
  before=$(cpu_ticks)
  out=$(taskset -c 0 wrk -t1 -c"$connections" -d"${duration}s" --latency -s "$work/chat.lua" "${url[$2]}")
  after=$(cpu_ticks); share=$(cpu_share "$before" "$after")
  out=$(echo "$out" | python3 -c '
import json, re, sys
text = sys.stdin.read()
def micros(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return round(float(n) * {"us": 1, "ms": 1e3, "s": 1e6}[unit])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
lat = {p: micros(re.search(r"^\s+%s%%\s+(\S+)" % p, text, re.M).group(1)) for p in ("50", "99")}
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
print(json.dumps({"requests_per_s": rps, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
  "errors": sum(map(int, errors.groups())) if errors else 0, "latency": {"p50_us": lat["50"], "p99_us": lat["99"]}}))')
  record "$1" "$2" "$3" wrk ${share% *} ${share#* } "" "$out"
  echo "$out"
}
summary() { python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); l=r.get("latency") or {}; print("%.0f req/s p50 %s us p99 %s us non-2xx %s errors %s" % (r["requests_per_s"], l.get("p50_us"), l.get("p99_us"), r["non_2xx"], r["errors"]))'; }
median_of() { # phase contender tool field(python expr on r) [extra filter expr]
  python3 - "$records" "$@" <<'PY'
import json, statistics, sys
path, phase, contender, tool, field = sys.argv[1:6]
cond = sys.argv[6] if len(sys.argv) > 6 else "True"
values = []
for line in open(path):
    rec = json.loads(line)
    if rec["phase"] == phase and rec["contender"] == contender and rec["tool"] == tool and eval(cond):
        r = rec["result"]
        values.append(eval(field))
print(statistics.median(values) if values else 0)
PY
}

# Warm-up: every path once, so pools, caches and Redis scripts are hot.
for name in $saturation_contenders; do
  run_loadgen warmup "$name" 0 "" "${url[$name]}" "$bench_key" "$work/unary.json" --connections "$connections" --duration-s 2 --warmup-s 0 >/dev/null
done

# (a) unary saturation, closed loop.
if [[ $phases == *a* ]]; then
  echo "== (a) unary saturation: $connections connections, ${duration}s, $rounds rounds"
  for round in $(seq "$rounds"); do
    for name in $saturation_contenders; do
      echo "  round $round $name loadgen: $(run_loadgen a "$name" "$round" "" "${url[$name]}" "$bench_key" "$work/unary.json" --connections "$connections" --duration-s "$duration" --warmup-s "$warmup" | summary)"
      echo "  round $round $name wrk:     $(run_wrk a "$name" "$round" | summary)"
    done
  done
fi

# (b) latency at fixed rates, open loop.
if [[ $phases == *b* ]]; then
  if [ "$rates" = auto ]; then
    # The issue's points: 50 % and 80 % of nginx's median saturation (fikra-loadgen), and 25 %
    # for the quiet end; the slowest contender's when nginx was not measured.
    reference=$(median_of a nginx loadgen 'r["requests_per_s"]')
    if [ "${reference%.*}" -le 0 ]; then
      reference=$(for name in direct gateway nginx; do median_of a "$name" loadgen 'r["requests_per_s"]'; done | sort -n | head -1)
    fi
    [ "${reference%.*}" -gt 0 ] || reference=20000
    rates=$(python3 -c "s=$reference; print(' '.join(str(max(1000, int(s*f/1000)*1000)) for f in (0.25, 0.5, 0.8)))")
  fi
  read -ra rate_list <<< "$rates"
  plot_rate="${PLOT_RATE:-${rate_list[$(( ${#rate_list[@]} / 2 ))]}}"
  echo "== (b) latency at fixed rates: $rates requests/s, $connections connections, ${duration}s, $rounds rounds"
  for rate in "${rate_list[@]}"; do
    for round in $(seq "$rounds"); do
      for name in direct gateway nginx; do
        echo "  $rate/s round $round $name: $(run_loadgen b "$name" "$round" "\"rate\":$rate," "${url[$name]}" "$bench_key" "$work/unary.json" --connections "$connections" --duration-s "$duration" --warmup-s "$warmup" --rate "$rate" | summary)"
      done
    done
  done
fi

# (c) streaming: time to first token and between events, gateway and nginx vs direct.
if [[ $phases == *c* ]]; then
  echo "== (c) streaming: $streams connections, $stream_rate streams/s (sandbox: 20 ms to first token, 100 tokens/s, 32 tokens), ${duration}s, $rounds rounds"
  stream_url_direct="http://127.0.0.1:$stream_port/v1/chat/completions"
  for round in $(seq "$rounds"); do
    for name in direct gateway nginx; do
      target_url=${url[gateway]}; [ "$name" = direct ] && target_url=$stream_url_direct
      [ "$name" = nginx ] && target_url="http://127.0.0.1:$nginx_stream_port/v1/chat/completions"
      out=$(run_loadgen c "$name" "$round" "" "$target_url" "$bench_key" "$work/stream.json" --connections "$streams" --rate "$stream_rate" --duration-s "$duration" --warmup-s "$warmup")
      echo "  round $round $name: $(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); f=r["time_to_first_event"] or {}; o=r.get("first_event_outside_upstream") or {}; b=r["between_events"] or {}; print("%.0f streams/s first token p50 %s p99 %s us (outside the sandbox p50 %s), between events p50 %s p99 %s us, non-2xx %s" % (r["requests_per_s"], f.get("p50_us"), f.get("p99_us"), o.get("p50_us"), b.get("p50_us"), b.get("p99_us"), r["non_2xx"]))')"
    done
  done
fi

# (d) refusals vs proxied, gateway only.
if [[ $phases == *d* ]]; then
  echo "== (d) refusals: 401 (unknown key), 429 (deny entry: account 'tiny' at 1 RPM), vs proxied; $connections connections, ${duration}s, $rounds rounds"
  curl -s -o /dev/null -X POST "${url[gateway]}" -H "Authorization: Bearer $tiny_key" -d "$unary_body"
  for round in $(seq "$rounds"); do
    echo "  round $round proxied: $(run_loadgen d proxied "$round" "" "${url[gateway]}" "$bench_key" "$work/unary.json" --connections "$connections" --duration-s "$duration" --warmup-s "$warmup" | summary)"
    echo "  round $round 401:     $(run_loadgen d 401 "$round" "" "${url[gateway]}" "$unknown_key" "$work/unary.json" --connections "$connections" --duration-s "$duration" --warmup-s "$warmup" | summary)"
    echo "  round $round 429:     $(run_loadgen d 429 "$round" "" "${url[gateway]}" "$tiny_key" "$work/unary.json" --connections "$connections" --duration-s "$duration" --warmup-s "$warmup" | summary)"
  done
fi

# (e) resident memory per idle keep-alive connection.
if [[ $phases == *e* ]]; then
  echo "== (e) memory: $idle idle keep-alive connections (each served one request first)"
  nginx_worker=$(pgrep -P "$nginx_pid" | head -1)
  for name in gateway nginx; do
    pid=$gateway_pid; [ "$name" = nginx ] && pid=$nginx_worker
    port=$gateway_port; [ "$name" = nginx ] && port=$nginx_port
    out=$(taskset -c 0 python3 - "$pid" "$port" "$idle" "$bench_key" "$unary_body" <<'PY'
import json, socket, sys, time
pid, port, count, key, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5].encode()
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
time.sleep(1)
base = rss_kib()
sockets = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    sockets.append(s)
time.sleep(1)
connected = rss_kib()
statuses = {}
for s in sockets:
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += s.recv(65536)
    status = head.split(b" ")[1].decode()
    statuses[status] = statuses.get(status, 0) + 1
time.sleep(1)
served = rss_kib()
for s in sockets:
    s.close()
time.sleep(1)
print(json.dumps({"connections": count, "rss_base_kib": base, "rss_connected_kib": connected, "rss_served_kib": served,
    "rss_after_close_kib": rss_kib(), "kib_per_fresh_connection": (connected - base) / count,
    "kib_per_keepalive_connection": (served - base) / count, "statuses": statuses}))
PY
)
    record e "$name" 1 python 0 0 "" "$out"
    echo "  $name (pid $pid): $(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("RSS %d KiB -> %d KiB connected -> %d KiB after one request each: %.2f KiB/fresh connection, %.2f KiB/keep-alive connection; statuses %s" % (r["rss_base_kib"], r["rss_connected_kib"], r["rss_served_kib"], r["kib_per_fresh_connection"], r["kib_per_keepalive_connection"], r["statuses"]))')"
  done
fi

# (f) Redis commands per request.
if [[ $phases == *f* ]]; then
  if [ "$store" = redis ]; then
    echo "== (f) Redis commands per request: $count requests of each kind, 16 connections"
    commandstats() { redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' | python3 -c '
import json, re, sys
calls = {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\S+?):calls=(\d+)", sys.stdin.read())}
print(json.dumps(calls))'; }
    # MONITOR tells the gateway's own commands from those FCALL runs inside Redis (shown with
    # the "lua" client); INFO commandstats counts both, so it gives the work done per request.
    # admitted-small: an account too small for leases (at most 1,000 requests: its RPM is 1,100);
    # admitted-leased: the high-limit bench account for 2 s after one second of traffic, so each
    # worker holds a lease sized from its rate (the window also pays the warm-up's records).
    for kind in background admitted-small admitted-leased 401 429; do
      if [ "$kind" = admitted-small ]; then
        # One request per connection first: the worker's key cache learns the key.
        taskset -c 0 "$loadgen" --threads 1 --url "${url[gateway]}" --body "$work/unary.json" --header "Authorization: Bearer $small_key" --connections 16 --requests 16 >/dev/null
      fi
      if [ "$kind" = admitted-leased ]; then
        taskset -c 0 "$loadgen" --threads 1 --url "${url[gateway]}" --body "$work/unary.json" --header "Authorization: Bearer $bench_key" --connections 16 --duration-s 1 >/dev/null
      fi
      redis-cli -p "$redis_port" monitor > "$work/monitor-$kind.log" & monitor_pid=$!
      sleep 0.5
      before=$(commandstats); started=$(date +%s.%N)
      case $kind in
        background) sleep 2; out='{"responses":0,"non_2xx":0,"errors":0,"requests_per_s":0}' ;;
        admitted-small) out=$(taskset -c 0 "$loadgen" --threads 1 --url "${url[gateway]}" --body "$work/unary.json" --header "Authorization: Bearer $small_key" --connections 16 --requests "$(( count < 1000 ? count : 1000 ))") ;;
        admitted-leased) out=$(taskset -c 0 "$loadgen" --threads 1 --url "${url[gateway]}" --body "$work/unary.json" --header "Authorization: Bearer $bench_key" --connections 16 --duration-s 2) ;;
        401) out=$(taskset -c 0 "$loadgen" --threads 1 --url "${url[gateway]}" --body "$work/unary.json" --header "Authorization: Bearer $unknown_key" --connections 16 --requests "$count") ;;
        429) out=$(taskset -c 0 "$loadgen" --threads 1 --url "${url[gateway]}" --body "$work/unary.json" --header "Authorization: Bearer $tiny_key" --connections 16 --requests "$count") ;;
      esac
      after=$(commandstats); seconds=$(python3 -c "import time; print(time.time() - $started)")
      sleep 0.5; kill -TERM "$monitor_pid" 2>/dev/null || true; wait "$monitor_pid" 2>/dev/null || true
      line=$(python3 - "$before" "$after" "$out" "$seconds" "$work/monitor-$kind.log" <<'PY'
import json, re, sys
before, after, run, seconds = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), float(sys.argv[4])
delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
delta = {k: v for k, v in delta.items() if v and k not in ("info", "monitor")}
sent = {}
for line in open(sys.argv[5], errors="replace"):
    m = re.match(r'[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
    if m and m.group(1) != "lua" and m.group(2).lower() not in ("info", "monitor"):
        sent[m.group(2).lower()] = sent.get(m.group(2).lower(), 0) + 1
print(json.dumps({"responses": run["responses"], "non_2xx": run["non_2xx"], "errors": run["errors"], "seconds": seconds,
    "sent": sum(sent.values()), "sent_by_command": sent, "executed": sum(delta.values()),
    "fcall": delta.get("fcall", 0) + delta.get("fcall_ro", 0), "executed_by_command": delta}))
PY
)
      record f "$kind" 1 loadgen 0 0 "" "$line"
      echo "  $kind: $line"
    done
  else
    echo "== (f) skipped: the gateway runs on the $store store"
  fi
fi

# (g) CPU time per request at a fixed open-loop rate (BENCH.md: far steadier than throughput on
# a shared machine): utime+stime of every thread of the process under test (the gateway; nginx's
# worker) from /proc over the run, divided by its responses. Contenders: the gateway on the
# leased bench account, the gateway on a key with a spend cap (never leased: an admit and a
# settle on the store for every request, the "small account" path), nginx proxying, and the
# gateway's refusals: 401 (a key nobody issued), 429 (tiny's deny entry), 402 (an empty wallet).
# With UPSTREAM=canned also nginx-fixed: the canned upstream's own worker, moved to CPU 1 for its
# run, answering its fixed bytes: the least a server pays per request here (one read, one write),
# beside the refusals.
if [[ $phases == *g* ]]; then
  cpu_rate="${CPU_RATE:-10000}"
  echo "== (g) CPU per request at $cpu_rate requests/s, $connections connections, ${duration}s, $rounds rounds"
  proc_ticks() { cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{s+=$14+$15} END{print s+0}'; }
  nginx_worker=$(pgrep -P "$nginx_pid" | head -1)
  capped_key=$(curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts/bench/keys" -H "$auth" \
    -d '{"kind":"live","spend_cap_usd":"999999","spend_cap_period":"lifetime"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts" -H "$auth" -d '{"id":"broke","signup_credit_usd":"0"}' >/dev/null
  broke_key=$(curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts/broke/keys" -H "$auth" -d '{"kind":"live"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  declare -A cpu_key=([gateway]=$bench_key [gateway-capped]=$capped_key [nginx]=$bench_key [401]=$unknown_key [429]=$tiny_key [402]=$broke_key)
  tck=$(getconf CLK_TCK)
  cpu_contenders="gateway gateway-capped nginx 401 429 402"
  if [ "$upstream" = canned ]; then
    cpu_contenders="$cpu_contenders nginx-fixed"; cpu_key[nginx-fixed]=$bench_key
    canned_worker=$(pgrep -P "$(cat "$work/canned/launcher.pid")" | head -1)
  fi
  for round in $(seq "$rounds"); do
    for name in $cpu_contenders; do
      pid=$gateway_pid; target_url=${url[gateway]}
      if [ "$name" = nginx ]; then pid=$nginx_worker; target_url=${url[nginx]}; fi
      # On CPU 1 for its own run, as the proxies are (a wake-up on the load generator's CPU costs less).
      if [ "$name" = nginx-fixed ]; then pid=$canned_worker; target_url=${url[direct]}; taskset -pc 1 "$pid" >/dev/null; fi
      # One request per connection first, so every path is warm (key cache, deny entry, lease).
      taskset -c 0 "$loadgen" --threads 1 --url "$target_url" --body "$work/unary.json" --header "Authorization: Bearer ${cpu_key[$name]}" --connections "$connections" --duration-s 1 --rate "$cpu_rate" >/dev/null
      t0=$(proc_ticks "$pid")
      out=$(run_loadgen g "$name" "$round" "\"rate\":$cpu_rate,\"ticks_before\":$t0," "$target_url" "${cpu_key[$name]}" "$work/unary.json" --connections "$connections" --duration-s "$duration" --warmup-s 0 --rate "$cpu_rate")
      t1=$(proc_ticks "$pid")
      us=$(echo "$out" | python3 -c "import json,sys; r=json.load(sys.stdin); print(round(($t1-$t0)/$tck*1e6/max(1,r['responses']),2))")
      # The CPU figure joins the run's record (the last line written).
      python3 - "$records" "$us" <<'PY'
import json, sys
path, us = sys.argv[1], float(sys.argv[2])
lines = open(path).read().splitlines()
last = json.loads(lines[-1]); last["cpu_us_per_response"] = us
lines[-1] = json.dumps(last)
open(path, "w").write("\n".join(lines) + "\n")
PY
      [ "$name" = nginx-fixed ] && taskset -pc 0 "$pid" >/dev/null
      echo "  round $round $name: $us µs CPU per response ($(echo "$out" | summary))"
    done
  done
fi

# --- report ----------------------------------------------------------------------------------
mkdir -p loadtest/results
stem="loadtest/results/$(date +%Y-%m-%d)-$commit"
[ "$upstream" = canned ] && stem="$stem-canned"
versions="$(uname -r); $(nginx -v 2>&1); $(redis-server --version | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(rustc -V)"
cp "$records" "$stem.records.jsonl"  # kept if the report below fails
python3 - "$records" "$stem" "$command_line" "$commit$dirty" "$store" "$versions" "${plot_rate:-}" "$root/loadtest/plot_latency.py" <<'PY'
import json, statistics, subprocess, sys
from collections import defaultdict
path, stem, command, commit, store, versions, plot_rate, plotter = sys.argv[1:9]
recs = [json.loads(l) for l in open(path)]
def sel(phase, contender=None, tool=None, rate=None):
    return [r for r in recs if r["phase"] == phase and (contender is None or r["contender"] == contender)
            and (tool is None or r["tool"] == tool) and (rate is None or r.get("rate") == rate)]
def med(rows, f):
    def value(result):
        try:
            return f(result)
        except (KeyError, TypeError):  # a run with no answers has null percentiles
            return None
    vals = [value(r["result"]) for r in rows]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
def fmt(v, d=0):
    return "n/a" if v is None else f"{v:,.{d}f}"
def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}"
def cpu0_max(rows):
    return max((r["cpu0"] for r in rows), default=0)
out, table = [], []
out.append(f"# Load test {stem.split('/')[-1]}\n")
out.append(f"- command: `{command}`\n- commit: {commit}\n- store: {store}\n- versions: {versions}")
out.append("- layout: gateway (1 worker) and nginx (1 worker) on CPU 1; fikra-loadgen (1 thread), wrk (1 thread), "
           "sandboxes (1 worker each) and Redis on CPU 0. Medians over rounds; a run whose CPU 0 was >= 95 % busy is a "
           "lower bound for every contender.\n")
if "UPSTREAM=canned" in command:
    out.append("- upstream of the unary model (and of nginx and direct): a second nginx on CPU 0 returning the sandbox's "
               "answer as fixed bytes (UPSTREAM=canned); streaming (c) still uses the paced sandbox.\n")
rps_a = {}
if sel("a"):
    out.append("## (a) Unary saturation (closed loop)\n")
    out.append("| contender | loadgen req/s | wrk req/s | loadgen p50 µs | loadgen p99 µs | non-2xx + errors | max CPU 0 % | max CPU 1 % |")
    out.append("|---|---|---|---|---|---|---|---|")
    for c in ("direct", "gateway", "gateway-epoll", "nginx"):
        if not sel("a", c):
            continue
        lg, wk = sel("a", c, "loadgen"), sel("a", c, "wrk")
        rps_a[c] = (med(lg, lambda r: r["requests_per_s"]), med(wk, lambda r: r["requests_per_s"]))
        bad = sum(r["result"]["non_2xx"] + r["result"]["errors"] for r in lg + wk)
        out.append(f"| {c} | {fmt(rps_a[c][0])} | {fmt(rps_a[c][1])} | {fmt(med(lg, lambda r: r['latency']['p50_us']))} | "
                   f"{fmt(med(lg, lambda r: r['latency']['p99_us']))} | {bad} | {cpu0_max(lg + wk)} | {max((r['cpu1'] for r in lg + wk), default=0)} |")
    for i, tool in enumerate(("loadgen", "wrk")):
        table.append((f"(a) unary saturation req/s, {tool}", rps_a["direct"][i], rps_a["gateway"][i], rps_a["nginx"][i],
                      ratio(rps_a["gateway"][i], rps_a["nginx"][i]), ">= 1.1"))
        if "gateway-epoll" in rps_a:
            table.append((f"(a) gateway on epoll req/s, {tool}", None, rps_a["gateway-epoll"][i], None,
                          f"io_uring/epoll = {ratio(rps_a['gateway'][i], rps_a['gateway-epoll'][i])}", ""))
    out.append("")
rates = sorted({r["rate"] for r in sel("b")})
curves = {}
if rates:
    out.append("## (b) Latency at fixed rates (open loop, coordinated-omission corrected)\n")
    out.append("| rate/s | contender | achieved/s | p50 µs | p99 µs | p99.9 µs | max µs | added p50 µs | added p99 µs | max CPU 0 % |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for rate in rates:
        base = {p: med(sel("b", "direct", rate=rate), lambda r, p=p: r["latency"][p]) for p in ("p50_us", "p99_us")}
        for c in ("direct", "gateway", "nginx"):
            rows = sel("b", c, rate=rate)
            m = {p: med(rows, lambda r, p=p: r["latency"][p]) for p in ("p50_us", "p99_us", "p999_us", "max_us")}
            add = {p: (m[p] - base[p]) if c != "direct" and m[p] is not None and base[p] is not None else None for p in base}
            out.append(f"| {rate} | {c} | {fmt(med(rows, lambda r: r['requests_per_s']))} | {fmt(m['p50_us'])} | {fmt(m['p99_us'])} | "
                       f"{fmt(m['p999_us'])} | {fmt(m['max_us'])} | {fmt(add['p50_us'])} | {fmt(add['p99_us'])} | {cpu0_max(rows)} |")
            if c != "direct":
                curves.setdefault(rate, {})[c] = add
            else:
                curves.setdefault(rate, {})["direct_p99"] = m["p99_us"]
            if str(rate) == plot_rate and rows:
                # The round with the median p99 gives the plotted curve.
                rows = sorted(rows, key=lambda r: r["result"]["latency"]["p99_us"])
                curves.setdefault("plot", {})[c] = rows[len(rows) // 2]["result"]
    for rate in rates:
        g, n = curves[rate]["gateway"], curves[rate]["nginx"]
        table.append((f"(b) added p50 µs over direct at {rate}/s", None, g["p50_us"], n["p50_us"], "", ""))
        table.append((f"(b) added p99 µs over direct at {rate}/s (direct: its own p99)", curves[rate]["direct_p99"], g["p99_us"], n["p99_us"],
                      "met" if g["p99_us"] is not None and n["p99_us"] is not None and g["p99_us"] <= n["p99_us"] else "not met", "gateway <= nginx"))
    out.append("")
if sel("c"):
    out.append("## (c) Streaming (sandbox: 20 ms to first token, 100 tokens/s, 32 tokens)\n")
    out.append("| contender | streams/s | first token p50 µs | p99 µs | between events p50 µs | p99 µs | whole stream p50 µs | first token outside the sandbox p50 µs | p99 µs | non-2xx + errors |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    st = {}
    for c in ("direct", "gateway", "nginx"):
        rows = sel("c", c)
        if not rows:
            continue
        st[c] = [med(rows, lambda r: r["requests_per_s"]), med(rows, lambda r: (r["time_to_first_event"] or {}).get("p50_us")),
                 med(rows, lambda r: (r["time_to_first_event"] or {}).get("p99_us")), med(rows, lambda r: (r["between_events"] or {}).get("p50_us")),
                 med(rows, lambda r: (r["between_events"] or {}).get("p99_us")), med(rows, lambda r: r["latency"]["p50_us"]),
                 med(rows, lambda r: (r.get("first_event_outside_upstream") or {}).get("p50_us")),
                 med(rows, lambda r: (r.get("first_event_outside_upstream") or {}).get("p99_us"))]
        bad = sum(r["result"]["non_2xx"] + r["result"]["errors"] for r in rows)
        out.append(f"| {c} | " + " | ".join(fmt(v) for v in st[c]) + f" | {bad} |")
    d, g = st["direct"], st["gateway"]
    n = st.get("nginx")
    if d[1] and g[1]:
        added_first, added_between = g[1] - d[1], (g[4] or 0) - (d[4] or 0)
        nginx_between = (n[4] or 0) - (d[4] or 0) if n else None
        if d[6] is not None and g[6] is not None:
            # The stamped figure: the sandbox's own wait (20 ms, rounded up to its 1 ms timer
            # tick, which closed-loop streams hit at a phase locked to their own path) taken out.
            added_outside = g[6] - d[6]
            nginx_outside = n[6] - d[6] if n and n[6] is not None else None
            table.append(("(c) added first-token p50 µs (outside the sandbox's wait)", None, added_outside, nginx_outside,
                          "met" if added_outside <= 50 else "not met", "<= 50 µs"))
            table.append(("(c) added first-token p50 µs, raw (includes the timer's phase)", None, added_first,
                          n[1] - d[1] if n and n[1] else None, "", ""))
        else:
            table.append(("(c) added first-token p50 µs", None, added_first, None,
                          "met" if added_first <= 50 else "not met", "<= 50 µs"))
        table.append(("(c) added between-events p99 µs", None, added_between, nginx_between,
                      "met" if added_between <= 100 else "not met", "<= 100 µs"))
    out.append("")
if sel("d"):
    out.append("## (d) Refusals vs proxied (gateway alone on CPU 1, so per core)\n")
    out.append("| kind | req/s | statuses non-2xx / responses | max CPU 0 % | max CPU 1 % |")
    out.append("|---|---|---|---|---|")
    dd = {}
    for c in ("proxied", "401", "429"):
        rows = sel("d", c)
        dd[c] = med(rows, lambda r: r["requests_per_s"])
        out.append(f"| {c} | {fmt(dd[c])} | {sum(r['result']['non_2xx'] for r in rows)} / {sum(r['result']['responses'] for r in rows)} | "
                   f"{cpu0_max(rows)} | {max((r['cpu1'] for r in rows), default=0)} |")
    for c in ("401", "429"):
        table.append((f"(d) {c} req/s vs proxied", None, dd[c], None, f"{ratio(dd[c], dd['proxied'])} x proxied", ">= 3 x"))
    out.append("")
if sel("e"):
    out.append("## (e) Resident memory per idle keep-alive connection\n")
    out.append("| process | connections | RSS before KiB | connected KiB | after one request each KiB | KiB/fresh conn | KiB/keep-alive conn | statuses |")
    out.append("|---|---|---|---|---|---|---|---|")
    mem = {}
    for c in ("gateway", "nginx"):
        for r in sel("e", c):
            x = r["result"]; mem[c] = x["kib_per_keepalive_connection"]
            out.append(f"| {c} | {x['connections']} | {x['rss_base_kib']} | {x['rss_connected_kib']} | {x['rss_served_kib']} | "
                       f"{x['kib_per_fresh_connection']:.2f} | {x['kib_per_keepalive_connection']:.2f} | {x['statuses']} |")
    table.append(("(e) KiB per idle keep-alive connection", None, mem.get("gateway"), mem.get("nginx"),
                  "met" if mem.get("gateway") is not None and mem["gateway"] <= 2 else "not met", "<= 2 KiB"))
    out.append("")
if sel("f"):
    out.append("## (f) Redis commands per request\n")
    out.append("*Sent*: commands the gateway sent (from `MONITOR`, commands run inside functions excluded). "
               "*Executed*: `INFO commandstats` delta, which also counts every `redis.call` inside `FCALL`. "
               "`background` is 2 s with no traffic.\n")
    out.append("| kind | responses | non-2xx | seconds | sent | sent per request | FCALL per request | executed per request | sent by command | executed by command |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    # The verdicts subtract what the background run did per second (heartbeats, the reaper) over
    # each run's seconds: those calls are no request's.
    bg = next((r["result"] for r in sel("f") if r["contender"] == "background"), None)
    def rate_of(field):
        return bg[field] / bg["seconds"] if bg and bg["seconds"] else 0
    for r in sel("f"):
        x = r["result"]; n = x["responses"]
        per = x["sent"] / n if n else None; fper = x["fcall"] / n if n else None; eper = x["executed"] / n if n else None
        if n and r["contender"] != "background":
            per = max(x["sent"] - rate_of("sent") * x["seconds"], 0) / n
            fper = max(x["fcall"] - rate_of("fcall") * x["seconds"], 0) / n
            eper = max(x["executed"] - rate_of("executed") * x["seconds"], 0) / n
        out.append(f"| {r['contender']} | {n} | {x['non_2xx']} | {x['seconds']:.1f} | {x['sent']} | {fmt(per, 3)} | {fmt(fper, 3)} | {fmt(eper, 2)} | "
                   f"`{json.dumps(x['sent_by_command'])}` | `{json.dumps(x['executed_by_command'])}` |")
        if r["contender"] != "background":
            limit = {"admitted-small": 2, "admitted-leased": 0.1}.get(r["contender"])
            verdict = "" if limit is None else ("met" if per is not None and per <= limit else "not met")
            table.append((f"(f) Redis commands sent per {r['contender']} request", None, per, None, verdict,
                           f"<= {limit}" if limit is not None else ""))
            if r["contender"] == "admitted-small" and eper is not None:
                inside = eper - fper
                table.append(("(f) Redis commands executed inside the Functions per admitted-small request", None, inside,
                               None, "met" if inside <= 12 else "not met", "<= 12"))
                table.append(("(f) Redis commands executed per admitted-small request, FCALLs included", None, eper, None,
                               "", ""))
    out.append("")
if sel("g"):
    out.append("## (g) CPU time per response at a fixed rate\n")
    out.append("utime+stime of every thread of the process under test (the gateway; nginx's worker) over the run, "
               "from `/proc/<pid>/task/*/stat`, divided by its responses. `gateway` is the leased bench account, "
               "`gateway-capped` a key with a spend cap (never leased: admit and settle on the store per request), "
               "401/429/402 the gateway's refusals, nginx-fixed (UPSTREAM=canned) the canned upstream's worker answering "
               "fixed bytes: one read and one write per request, no proxying.\n")
    out.append("| contender | rate | responses (median) | non-2xx | CPU µs per response (median) | runs | max CPU 0 % |")
    out.append("|---|---|---|---|---|---|---|")
    cpu = {}
    for c in ("gateway", "gateway-capped", "nginx", "401", "429", "402", "nginx-fixed"):
        rows = sel("g", c)
        if not rows:
            continue
        vals = sorted(r["cpu_us_per_response"] for r in rows if "cpu_us_per_response" in r)
        cpu[c] = statistics.median(vals) if vals else None
        out.append(f"| {c} | {rows[0].get('rate')} | {fmt(med(rows, lambda x: x['responses']))} | "
                   f"{sum(r['result']['non_2xx'] for r in rows)} | {fmt(cpu[c], 2)} | {', '.join(f'{v:.2f}' for v in vals)} | {cpu0_max(rows)} |")
    nginx_cpu = cpu.get("nginx")
    def against(c, limit, label):
        value = cpu.get(c)
        r = value / nginx_cpu if value and nginx_cpu else None
        verdict = "n/a" if r is None else f"{r:.2f} x nginx: " + ("met" if r <= limit else "not met")
        table.append((f"(g) CPU µs per {label}", None, value, nginx_cpu, verdict, f"<= {limit:g} x nginx's proxied"))
    against("gateway", 0.9, "proxied request, leased account")
    against("gateway-capped", 1.2, "proxied request, store on every request")
    for c in ("401", "429", "402"):
        against(c, 1 / 3, f"{c} refusal")
    if cpu.get("nginx-fixed") and nginx_cpu:
        fixed = cpu["nginx-fixed"]
        table.append(("(g) CPU µs per fixed answer, nginx-fixed (floor for a refusal)", None, None, fixed,
                      f"{fixed / nginx_cpu:.2f} x nginx's proxied", ""))
    out.append("")
lines = ["| measure | direct | gateway | nginx | ratio / verdict | target |", "|---|---|---|---|---|---|"]
for name, d, g, n, rt, tg in table:
    lines.append(f"| {name} | {fmt(d) if not isinstance(d, str) else d} | {fmt(g, 2 if isinstance(g, float) and g < 100 else 0)} | "
                 f"{fmt(n, 2 if isinstance(n, float) and n < 100 else 0)} | {rt} | {tg} |")
ratio_table = "\n".join(lines)
print("\n" + ratio_table + "\n")
report = out[:3] + ["## Ratio table\n", ratio_table, ""] + out[3:]
if "plot" in curves:
    files = []
    for c, result in curves["plot"].items():
        f = f"{stem}-{c}.json"
        with open(f, "w") as fh:
            json.dump(result, fh)
        files.append(f"{c}={f}")
    svg = f"{stem}-latency.svg"
    subprocess.run(["python3", plotter, "--title", f"Unary latency at {plot_rate} requests/s (open loop)", "--out", svg] + files, check=True)
    for f in files:
        import os; os.remove(f.split("=", 1)[1])
    report.append(f"## Latency percentile curves at {plot_rate} requests/s\n\n![latency]({svg.split('/')[-1]})\n")
report.append("## Raw records\n\n<details><summary>one JSON line per run</summary>\n\n```")
report += [json.dumps(r) for r in recs]
report.append("```\n</details>\n")
with open(f"{stem}.md", "w") as fh:
    fh.write("\n".join(report))
print(f"wrote {stem}.md")
PY
rm -f "$stem.records.jsonl"
