#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test, and the interoperability
# check of our certificates with an independent COSE implementation.
#
# Installs what the tests need when it is missing, so it passes on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# CI builds once from a clean clone: incremental compilation would only double the disk used.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "toolchain"
cargo --version
df -h . | awk 'NR==2 {print "disk: " $4 " free on " $6}'
rustup component add clippy rustfmt >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

step "OpenSSL headers (TLS to ScyllaDB, feature scylla-tls, and the CQL test node's TLS listener)"
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; }; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config
fi
echo "OpenSSL $(pkg-config --modversion openssl)"

# One feature set for clippy and the tests, so the workspace is built once: the binary with TLS
# to ScyllaDB, as deploy/Dockerfile builds it.
FEATURES=(--features vaxcamp/scylla-tls)

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked "${FEATURES[@]}" -- -D warnings

step "tmux (the console's end-to-end test drives it)"
command -v tmux >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux; }
# With tmux installed here, the console's terminal tests must run, never skip.
export VAXCAMP_REQUIRE_TMUX=1

step "ClickHouse (the analytics tests run against a real server)"
if ! command -v clickhouse-server >/dev/null 2>&1 && ! command -v clickhouse >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server
fi
command -v curl >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; }
# Our own server on a free loopback port with a temporary data directory, never the system
# service; stopped however this script ends.
eval "$(bash tests/support/clickhouse.sh start)"
trap 'bash tests/support/clickhouse.sh stop "$VAXCAMP_TEST_CLICKHOUSE_DIR"' EXIT
export VAXCAMP_REQUIRE_CLICKHOUSE=1
echo "ClickHouse $(curl -fsS "$VAXCAMP_TEST_CLICKHOUSE/?query=SELECT%20version()") at $VAXCAMP_TEST_CLICKHOUSE"

step "cargo test"
cargo test --workspace --locked "${FEATURES[@]}"

step "analytics SQL on a current ClickHouse (chDB's engine behind tests/support/clickhouse_current.py)"
# Debian's ClickHouse is 18.16; the same contract tests run again on a current release, served
# over HTTP from the engine chDB embeds (PyPI), so SQL that only old releases accept fails here.
CHDB_VENV=target/chdb-venv
if ! "$CHDB_VENV/bin/python" -c "import chdb, lz4" >/dev/null 2>&1; then
    python3 -m venv "$CHDB_VENV"
    "$CHDB_VENV/bin/pip" install --quiet --disable-pip-version-check chdb==4.4.0 lz4
fi
CHDB_DIR="$(mktemp -d /tmp/vaxcamp-chdb.XXXXXX)"
"$CHDB_VENV/bin/python" tests/support/clickhouse_current.py --path "$CHDB_DIR/data" >"$CHDB_DIR/log" 2>&1 &
CHDB_PID=$!
trap 'kill "$CHDB_PID" 2>/dev/null || true; rm -rf "$CHDB_DIR"; bash tests/support/clickhouse.sh stop "$VAXCAMP_TEST_CLICKHOUSE_DIR"' EXIT
for _ in $(seq 1 300); do
    grep -q '^listening on' "$CHDB_DIR/log" && break
    kill -0 "$CHDB_PID" 2>/dev/null || { cat "$CHDB_DIR/log"; exit 1; }
    sleep 0.1
done
CURRENT_CLICKHOUSE="$(grep -o 'http://127.0.0.1:[0-9]*' "$CHDB_DIR/log")" || { cat "$CHDB_DIR/log"; exit 1; }
head -1 "$CHDB_DIR/log"
VAXCAMP_TEST_CLICKHOUSE="$CURRENT_CLICKHOUSE" cargo test --workspace --locked "${FEATURES[@]}" --test backends --test shipper

step "certificates verify with an independent COSE implementation (pycose)"
if ! python3 -c "import pycose, base45, cbor2" >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check pycose base45 cbor2
fi
python3 certify/interop/verify_pycose.py --vectors certify/testdata/vectors.json certify/testdata/trust_list.json

step "all tests passed"
du -sh target 2>/dev/null | awk '{print "target/ holds " $1}' || true
