#!/usr/bin/env bash
# Soak: many concurrent calls for many minutes against the embedded loopback upstream,
# sampling the gateway's RSS, open file descriptors and tokio tasks. Not run in CI (the short
# version is tests/soak.rs). Loopback only; counts and durations are bounded.
#
#   benches/soak.sh [CALLS] [MINUTES]        (defaults: 100 calls, 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-100}
MINUTES=${2:-10}
PORT=${PORT:-18990}
FIXTURE=tests/fixtures/audio/caller-booking-8k-mulaw.wav
cargo build --release --quiet
BIN=target/release/callgate
CALLGATE_LISTEN=127.0.0.1:$PORT CALLGATE_SECURITY__MESSAGES_PER_SECOND=1000 RUST_LOG=warn "$BIN" >/tmp/callgate-soak.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
sleep 1
sample() {
  local rss fds tasks
  rss=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
  fds=$(ls /proc/$PID/fd | wc -l)
  tasks=$(curl -s http://127.0.0.1:$PORT/healthz | sed -n 's/.*"tasks":\([0-9]*\).*/\1/p')
  echo "$(date +%s) rss_kib=$rss fds=$fds tasks=${tasks:-?}"
}
echo "baseline: $(sample)"
"$BIN" loadtest --calls "$CALLS" --duration $((MINUTES * 60)) --ramp-ms 100 \
  --url ws://127.0.0.1:$PORT/twilio --play "$FIXTURE" >/tmp/callgate-soak-load.log 2>&1 &
LOAD=$!
: >/tmp/callgate-soak-samples.log
while kill -0 $LOAD 2>/dev/null; do
  sample | tee -a /tmp/callgate-soak-samples.log
  sleep 10
done
wait $LOAD || true
cat /tmp/callgate-soak-load.log
sleep 2
echo "after: $(sample)"
# RSS drift after warm-up: first sample after the first minute vs the last sample under load.
awk -v warm=6 'NR==warm {split($2,a,"="); first=a[2]} {split($2,b,"="); last=b[2]} END {
  if (first > 0) printf "rss drift after warm-up: %.1f%% (%d → %d KiB)\n", (last-first)*100/first, first, last }' \
  /tmp/callgate-soak-samples.log
