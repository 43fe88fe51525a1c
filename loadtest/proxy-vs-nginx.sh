#!/usr/bin/env bash
# Unary requests per second, side by side in one run (BENCH.md): wrk straight to the sandbox
# ("direct"), through fikra-gateway with the full policy on the embedded store ("gateway"), and
# through nginx as a plain keep-alive reverse proxy ("nginx"), rounds interleaved, medians.
# Pinning: sandbox and wrk on CPU 0, the proxy under test alone on CPU 1, one worker each.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-5s}"; rounds="${ROUNDS:-3}"; connections="${CONNECTIONS:-64}"
cargo build --release --quiet
bin=$PWD/target/release/fikra-gateway
work=$(mktemp -d)
cleanup() { for pid in $(jobs -p); do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. loadtest/common.sh
sandbox_port=$(free_port); gateway_port=$(free_port); admin_port=$(free_port); nginx_port=$(free_port)

taskset -c 0 "$bin" sandbox --listen "127.0.0.1:$sandbox_port" 2>"$work/sandbox.log" &
bench_config "$gateway_port" "$admin_port" "$sandbox_port" > "$work/gateway.toml"
export FIKRA_ADMIN_TOKEN=bench-admin-token
taskset -c 1 "$bin" serve --config "$work/gateway.toml" 2>"$work/gateway.log" &
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    upstream sandbox { server 127.0.0.1:$sandbox_port; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / { proxy_pass http://sandbox; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
NGINX
taskset -c 1 /usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.1; done
auth="Authorization: Bearer $FIKRA_ADMIN_TOKEN"
curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts" -H "$auth" -d '{"id":"bench","signup_credit_usd":"1000000"}' >/dev/null
FIKRA_KEY=$(curl -sf -X POST "http://127.0.0.1:$admin_port/admin/accounts/bench/keys" -H "$auth" -d '{"kind":"live"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
export FIKRA_KEY

declare -A url=([direct]="http://127.0.0.1:$sandbox_port" [gateway]="http://127.0.0.1:$gateway_port" [nginx]="http://127.0.0.1:$nginx_port")
declare -A results
cpu_busy() { awk '/^cpu[01] /{print $1, $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
for name in direct gateway nginx; do taskset -c 0 wrk -t2 -c"$connections" -d2s -s loadtest/chat.lua "${url[$name]}/v1/chat/completions" >/dev/null; done
for round in $(seq "$rounds"); do
  for name in direct gateway nginx; do
    before=$(cpu_busy)
    out=$(taskset -c 0 wrk -t2 -c"$connections" -d"$duration" --latency -s loadtest/chat.lua "${url[$name]}/v1/chat/completions")
    after=$(cpu_busy)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    errors=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    cpu=$(paste <(echo "$before") <(echo "$after") | awk '{printf "%s %.0f%% ", $1, 100*($5-$2)/($6-$3)}')
    results[$name]+="$rps "
    echo "round $round $name: $rps req/s p50 $p50 p99 $p99 non-2xx ${errors:-0} cpu: $cpu"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
direct=$(echo "${results[direct]}" | median); gateway=$(echo "${results[gateway]}" | median); nginx=$(echo "${results[nginx]}" | median)
echo "median req/s: direct $direct, gateway $gateway, nginx $nginx"
awk -v g="$gateway" -v n="$nginx" -v d="$direct" 'BEGIN {printf "gateway/nginx = %.2f, gateway/direct = %.2f, nginx/direct = %.2f\n", g/n, g/d, n/d}'
