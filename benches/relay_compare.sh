#!/usr/bin/env bash
# callgate beside a minimal relay, same load, same machine: frame round trip (p50/p99) and
# CPU per call-second and RSS of the process under test, pinned to core 0 with the load on
# core 1 (and the echo upstream on core 1 too); for callgate also the latency it added, from
# its own histograms. Not run in CI.
#
#   benches/relay_compare.sh [CALLS] [SECONDS]      (defaults: 100 calls, 20 s)
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-100}
SECONDS_=${2:-20}
cargo build --release --quiet
cargo bench --bench relay --no-run --quiet 2>/dev/null
BENCH=$(ls -t target/release/deps/relay-* | grep -v '\.d$' | head -1)
GW=${GW:-target/release/callgate}
TCK=$(getconf CLK_TCK)
taskset -c 1 "$BENCH" echo 18601 & ECHO=$!
trap 'kill $ECHO 2>/dev/null || true' EXIT
sleep 0.5
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
anon() { awk '/RssAnon/ {print $2}' /proc/$1/status; }
run() { # name pid url [metrics url, "" for none]
  local t0 t1 out idle peak
  # Warm up first (10 calls, 2 s), so that the idle sample already holds the code and the
  # allocator's arenas a call touches once: what grows after that is per call.
  taskset -c 1 target/release/callgate loadtest --stamped --calls 10 --duration 2 --ramp-ms 10 \
    --url "$3" --metrics "" >/dev/null
  sleep 1
  idle=$(rss "$2")
  idle_anon=$(anon "$2")
  t0=$(cpu "$2")
  ( sleep $((SECONDS_ / 2 + 1)); rss "$2" > /tmp/relay-compare-peak; anon "$2" > /tmp/relay-compare-anon ) &
  # The project's stamped load (callgate loadtest --stamped), starts spread over a second.
  out=$(taskset -c 1 target/release/callgate loadtest --stamped --calls "$CALLS" --duration "$SECONDS_" \
    --ramp-ms $((1000 / CALLS)) --url "$3" --metrics "${4:-}" | grep -v -e "^done" -e "stamped calls of")
  t1=$(cpu "$2")
  peak=$(cat /tmp/relay-compare-peak)
  peak_anon=$(cat /tmp/relay-compare-anon)
  # VmRSS also counts code pages first touched under load; RssAnon is what was allocated.
  echo "$1: $out"
  echo "  $1: cpu $(echo "scale=3; ($t1-$t0)*1000/$TCK/($CALLS*$SECONDS_)" | bc) ms per call-second; rss idle $idle KiB, mid-run $peak KiB ($(( (peak - idle) / CALLS )) KiB per call; anonymous $(( (peak_anon - idle_anon) / CALLS )) KiB per call)"
}
taskset -c 0 "$BENCH" relay 18602 ws://127.0.0.1:18601 & RELAY=$!
sleep 0.5
run "minimal relay" $RELAY ws://127.0.0.1:18602/twilio ""
kill $RELAY
CALLGATE_LISTEN=127.0.0.1:18603 CALLGATE_UPSTREAM_URL=ws://127.0.0.1:18601 \
  CALLGATE_SECURITY__UPGRADES_PER_IP_PER_SECOND=10000 CALLGATE_SECURITY__UPGRADE_BURST_PER_IP=10000 \
  CALLGATE_RECORDS__PATH=$(mktemp -d)/calls.db RUST_LOG=warn taskset -c 0 "$GW" >/dev/null 2>&1 & GATE=$!
sleep 1
run "callgate (defaults)" $GATE ws://127.0.0.1:18603/twilio http://127.0.0.1:18603/metrics
kill $GATE
