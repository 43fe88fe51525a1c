#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a fresh Debian machine:
#   1. installs what the tests need (Python's official openai SDK and pytest, pinned; Node's
#      official openai SDK, pinned by tests/sdk-node/package-lock.json; nginx; redis-server;
#      promtool; Node.js and npm when missing);
#   2. checks formatting and lints;
#   3. runs every Rust test and both SDK conformance suites (Python, Node) twice: on the
#      io_uring driver (where the kernel allows it) and forced onto epoll
#      (MONOIO_FORCE_LEGACY_DRIVER=1);
#   4. builds the fuzz targets and runs each for 10 seconds (installing cargo-fuzz if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
# nginx plays a real TLS upstream (tests/tls_upstream.rs); redis-server backs tests/redis_client.rs.
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# promtool (from Debian's prometheus package) checks the /metrics exposition (tests/observability.rs).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# Node.js runs the Node SDK suite (tests/sdk-node, node:test). Debian 12's nodejs is 18.20; the
# suite is verified on Node 20 (the pinned openai 7.59.0 itself declares Node >= 22, so npm warns).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "the Node SDK suite needs Node.js >= 18 (node:test, fetch); found $(node --version)" >&2
  exit 1
fi
npm ci --prefix tests/sdk-node --no-audit --no-fund --loglevel=error >/dev/null

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo build --quiet --bins

export FIKRA_GATEWAY_BIN="$PWD/target/debug/fikra-gateway"
for driver in default epoll; do
  if [ "$driver" = epoll ]; then export MONOIO_FORCE_LEGACY_DRIVER=1; else unset MONOIO_FORCE_LEGACY_DRIVER; fi
  echo "== driver: $driver: Rust tests"
  cargo test --quiet -- --test-threads=2
  echo "== driver: $driver: OpenAI SDK conformance"
  python3 -m pytest -q tests/sdk
  echo "== driver: $driver: OpenAI Node SDK conformance"
  node --test tests/sdk-node/
done

# The parsers' fuzz targets (cargo-fuzz on the nightly toolchain), built and run briefly each;
# the long runs are reported in the closing notes (tests/fuzz/README.md).
echo "== fuzz targets, 10 s each"
unset MONOIO_FORCE_LEGACY_DRIVER
bash tests/fuzz/run.sh 10
