#!/usr/bin/env bash
# CPU time per proxied request of two gateway builds side by side (BENCH.md, "CPU time per
# request"): utime+stime of all the gateway's threads (/proc/PID/task/*/stat) over a fixed-rate
# open-loop run, divided by the responses. Embedded store by default, one worker on CPU 1; the
# sandbox and fikra-loadgen on CPU 0; rounds interleaved A, B, A, B, ...
# STORE=redis: a fresh redis-server per round (on CPU 0), and the Redis side reported too: its
# CPU per response (/proc ticks) and the FCALL time Redis itself counts (INFO commandstats usec,
# commands inside the Functions included) per response. CAPPED=1: the key has a spend cap far above
# anything spent, so it is never leased: every request is an admit and a settle on the store
# (the "small account" path); without it the busy account runs on leases. CANNED=1: the upstream
# is nginx answering fixed bytes (common.sh's start_canned_upstream) instead of the sandbox.
# Usage: BEFORE=path/to/fikra-gateway [AFTER=target/release/fikra-gateway] [RATE=6000] [DUR=10]
#        [ROUNDS=5] [STORE=redis] [CAPPED=1] [CANNED=1] [BEFORE_SERVER=..] [AFTER_SERVER=..] loadtest/cpu-per-request.sh
#        (build both with cargo build --release first). BEFORE_SERVER / AFTER_SERVER: extra
#        [server] lines for that side, to compare settings of one build, e.g.
#        BEFORE=target/release/fikra-gateway BEFORE_SERVER='io_uring_task_work = "immediate"'.
#        BEFORE_ENV / AFTER_ENV: environment for that side's gateway, e.g.
#        BEFORE_ENV=MONOIO_FORCE_LEGACY_DRIVER=1 (the epoll driver).
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${BEFORE:?the build to compare against}; AFTER=${AFTER:-$PWD/target/release/fikra-gateway}
loadgen=$PWD/target/release/fikra-loadgen; work=$(mktemp -d)
RATE=${RATE:-6000}; DUR=${DUR:-10}; ROUNDS=${ROUNDS:-5}; STORE=${STORE:-embedded}; CAPPED=${CAPPED:-0}
export FIKRA_ADMIN_TOKEN=bench-admin-token
. loadtest/common.sh
sp=$(free_port)
taskset -c 0 "$AFTER" sandbox --listen 127.0.0.1:$sp --workers 1 2>/dev/null & spid=$!
trap 'kill $spid $(cat $work/canned/launcher.pid 2>/dev/null) 2>/dev/null; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ticks() { cat /proc/$1/task/*/stat | awk '{s+=$14+$15} END{print s}'; }
echo '{"model":"fikra-flash","messages":[{"role":"user","content":"habari ya asubuhi"}],"max_tokens":16}' > $work/body.json
up=$sp
if [ "${CANNED:-0}" = 1 ]; then up=$(start_canned_upstream $sp "$(cat $work/body.json)" $work/canned); fi
for round in $(seq $ROUNDS); do
 for name in before after; do
  bin=$AFTER; server_extra=${AFTER_SERVER:-}; env_extra=${AFTER_ENV:-}
  if [ $name = before ]; then bin=$BEFORE; server_extra=${BEFORE_SERVER:-}; env_extra=${BEFORE_ENV:-}; fi
  gp=$(free_port); ap=$(free_port)
  store_section=""
  if [ "$STORE" = redis ]; then
   rp=$(free_port)
   taskset -c 0 redis-server --port $rp --save '' --appendonly no --daemonize no >/dev/null 2>&1 & rpid=$!
   for _ in $(seq 50); do redis-cli -p $rp ping >/dev/null 2>&1 && break; sleep 0.1; done
   store_section=$(printf '[store]\nredis_url = "redis://127.0.0.1:%s"\nkey_prefix = "bench"\n' $rp)
  fi
  { bench_config $gp $ap $up "$server_extra"; echo "$store_section"; } > $work/g.toml
  env $env_extra taskset -c 1 $bin serve --config $work/g.toml >/dev/null 2>&1 & gpid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$ap/readyz >/dev/null && break; sleep 0.1; done
  curl -sf -X POST http://127.0.0.1:$ap/admin/accounts -H "Authorization: Bearer bench-admin-token" -d '{"id":"bench","signup_credit_usd":"1000000"}' >/dev/null
  key=$(curl -sf -X POST http://127.0.0.1:$ap/admin/accounts/bench/keys -H "Authorization: Bearer bench-admin-token" -d "$([ "$CAPPED" = 1 ] && echo '{"kind":"live","spend_cap_usd":"999999","spend_cap_period":"lifetime"}' || echo '{"kind":"live"}')" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  lg=(taskset -c 0 "$loadgen" --threads 1 --url http://127.0.0.1:$gp/v1/chat/completions --body $work/body.json --header "Authorization: Bearer $key" --connections 64)
  "${lg[@]}" --duration-s 2 --warmup-s 0 --rate $RATE >/dev/null
  if [ "$STORE" = redis ]; then redis-cli -p $rp config resetstat >/dev/null; r0=$(ticks $rpid); fi
  t0=$(ticks $gpid)
  out=$("${lg[@]}" --duration-s $DUR --warmup-s 0 --rate $RATE)
  t1=$(ticks $gpid)
  redis_part=""
  if [ "$STORE" = redis ]; then
   r1=$(ticks $rpid)
   usec=$(redis-cli -p $rp info commandstats | tr -d '\r' | awk -F'[=,]' '/^cmdstat_fcall:/{print $4}')
  fi
  n=$(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r.get("responses", r.get("completed", r.get("requests", 0))))')
  tck=$(getconf CLK_TCK)
  if [ "$STORE" = redis ]; then
   redis_part=" redis_cpu_us_per_req=$(python3 -c "print(round(($r1-$r0)/$tck*1e6/max($n,1),2))") redis_fcall_usec_per_req=$(python3 -c "print(round(${usec:-0}/max($n,1),2))")"
  fi
  echo "$round $name rate=$RATE responses=$n cpu_us_per_req=$(python3 -c "print(round(($t1-$t0)/$tck*1e6/max($n,1),2))")$redis_part"
  kill -TERM $gpid; wait $gpid 2>/dev/null || true
  if [ "$STORE" = redis ]; then kill $rpid; wait $rpid 2>/dev/null || true; fi
 done
done
