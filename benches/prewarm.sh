#!/usr/bin/env bash
# Warm upstream sessions: the first reply with and without `upstream.prewarm`, against an
# echo upstream that takes SETUP_MS to accept a session (a real model's TLS + WebSocket
# handshake and session setup take hundreds of ms). Prints, per run, `callgate loadtest
# --stamped`: the first frame's round trip (start → upstream ready → the echo back) and the
# gateway's own histograms (start → upstream open, model → carrier latency). Not run in CI.
#
#   benches/prewarm.sh [CALLS] [SETUP_MS]      (defaults: 50 calls, 300 ms)
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-50}
SETUP_MS=${2:-300}
cargo build --release --quiet
cargo bench --bench relay --no-run --quiet 2>/dev/null
BENCH=$(ls -t target/release/deps/relay-* | grep -v '\.d$' | head -1)
ECHO_SETUP_MS=$SETUP_MS taskset -c 1 "$BENCH" echo 18611 & ECHO=$!
trap 'kill $ECHO 2>/dev/null || true' EXIT
sleep 0.5
for prewarm in 0 "$CALLS"; do
  CALLGATE_LISTEN=127.0.0.1:18613 CALLGATE_UPSTREAM_URL=ws://127.0.0.1:18611 \
    CALLGATE_UPSTREAM__PREWARM=$prewarm \
    CALLGATE_SECURITY__UPGRADES_PER_IP_PER_SECOND=10000 CALLGATE_SECURITY__UPGRADE_BURST_PER_IP=10000 \
    CALLGATE_RECORDS__PATH=$(mktemp -d)/calls.db RUST_LOG=warn taskset -c 0 target/release/callgate >/dev/null 2>&1 & GATE=$!
  # Time for the pool to fill (it opens 16 sessions at a time, each taking SETUP_MS).
  sleep $(( 1 + (CALLS / 16 + 1) * SETUP_MS / 1000 + 1 ))
  echo "== upstream.prewarm = $prewarm ($CALLS calls, upstream setup $SETUP_MS ms)"
  taskset -c 1 target/release/callgate loadtest --stamped --calls "$CALLS" --duration 5 \
    --ramp-ms 20 --url ws://127.0.0.1:18613/twilio | grep -v "^done"
  kill $GATE
  wait $GATE 2>/dev/null || true
done
