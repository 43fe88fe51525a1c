# Sourced by the loadtest scripts: what each of them needs to start a gateway the same way.
# It starts nothing itself.

# A scratch directory ($work) and the processes to stop ($pids: add each with pids+=($!)), both
# cleaned up when the calling script exits.
scratch() {
  work=$(mktemp -d)
  pids=()
  trap 'for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# A TCP port free on 127.0.0.1 right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The bench gateway's config on stdout: one worker listening on GATEWAY_PORT (admin on
# ADMIN_PORT), SERVER_LINES added to [server], the model fikra-flash served by the sandbox on
# SANDBOX_PORT, and account `bench` with BENCH_RPM (default 100000000: leased) and a TPM no
# request reaches. Callers append further tables ([store], more overrides) after it.
# Usage: bench_config GATEWAY_PORT ADMIN_PORT SANDBOX_PORT [SERVER_LINES] [BENCH_RPM]
bench_config() {
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
workers = 1
${4:-}
[[upstreams]]
name = "sbx"
base_url = "http://127.0.0.1:$3/v1"
[[models]]
id = "fikra-flash"
upstream = "sbx"
upstream_model = "bench/upstream-model"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192
[[account_overrides]]
account = "bench"
rpm = ${5:-100000000}
tpm = 100000000000
TOML
}

# A canned upstream: nginx on CPU 0 answering every request with the fixed bytes the sandbox on
# SANDBOX_PORT answered to BODY (fetched once here, the model renamed to the upstream's), so the
# upstream costs CPU 0 little. Prints the port it listens on; its pid goes to DIR/launcher.pid
# for the caller to stop. Usage: start_canned_upstream SANDBOX_PORT BODY DIR
start_canned_upstream() {
  local sandbox_port=$1 body=$2 dir=$3 answer port
  mkdir -p "$dir"
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$sandbox_port/" && break; sleep 0.1; done
  answer=$(curl -sf "http://127.0.0.1:$sandbox_port/v1/chat/completions" -H 'content-type: application/json' \
    -d "${body/fikra-flash/bench/upstream-model}")
  case "$answer" in *"'"*|*'\'*|"") echo "canned upstream: the sandbox's answer cannot be canned: '$answer'" >&2; return 1;; esac
  port=$(free_port)
  cat > "$dir/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections $(( $(ulimit -n) - 100 )); }
http {
    access_log off;
    client_body_temp_path $dir/body;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { default_type application/json; return 200 '$answer'; }
    }
}
NGINX
  taskset -c 0 nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/stderr.log" >/dev/null &
  echo $! > "$dir/launcher.pid"
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  echo "$port"
}
