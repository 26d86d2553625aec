#!/usr/bin/env bash
# Bridged-call load: PAIRS callers dial `bridge`; the engine places one outgoing leg per call to
# a SIPp UAS and relays the media between the two legs. rtpload (as in media-load.sh) is the
# callers' RTP and meters what comes back; the callees' RTP is a `reflector` (one socket per
# call, like the engine's legs) that echoes each packet, so every caller packet crosses the
# engine twice: caller → A leg → relay → B leg → reflector → B leg → relay → A leg → caller.
#
#   sipp-scenarios/bridge-load.sh PAIRS [SECONDS]
#
# The engine runs pinned to core $SERVER_CPU (default 0) with `[media] threads = 1`; rtpload, its
# SIPp UAC, the SIPp UAS and the reflector share core $LOAD_CPU (default 1). Printed: rtpload's
# report (loss, duplicates, pacing jitter with kernel timestamps, the engine's CPU % over the
# window with every pair up, RSS growth ÷ calls = ÷ pairs here) and the reflector's counts.
# Environment: as media-load.sh (SERVER_CPU, LOAD_CPU, RATE, PORT, OUT, RT, SIPP_FIFO,
# FRONTDOOR_BIN, RTPLOAD_BIN, REFLECTOR_BIN, CARGO_TARGET_DIR), plus UAS_PORT (default 5072) and
# REFL_BASE (default 20000), UAS_SCENARIO (default uas-load.xml, PCMU/20 ms like the callers:
# payload copied; uas-load-pcma.xml: PCMA/30 ms, every frame transcoded and re-framed).
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${1:?usage: bridge-load.sh PAIRS [SECONDS]}
SECS=${2:-20}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
RATE=${RATE:-100}
PORT=${PORT:-5070}
UAS_PORT=${UAS_PORT:-5072}
LOAD_BASE=${LOAD_BASE:-40000}
REFL_BASE=${REFL_BASE:-20000}
OUT=${OUT:-sipp-scenarios/out/bridge-load-$PAIRS-$$}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${FRONTDOOR_BIN:-}" ] || [ -z "${RTPLOAD_BIN:-}" ] || [ -z "${REFLECTOR_BIN:-}" ]; then
  cargo build --release -q -p frontdoor -p frontdoor-benches --bins
fi
FRONTDOOR_BIN=${FRONTDOOR_BIN:-$TARGET/release/frontdoor}
RTPLOAD_BIN=${RTPLOAD_BIN:-$TARGET/release/rtpload}
REFLECTOR_BIN=${REFLECTOR_BIN:-$TARGET/release/reflector}

PRIO=()
SIPP_WRAP=()
if [ "${RT:-0}" = 1 ]; then
  PRIO=(chrt -f 10)
  if [ "${SIPP_FIFO:-0}" != 1 ]; then SIPP_WRAP=(--sipp-wrapper "chrt -o 0"); fi
fi
echo "bridge-load: $PAIRS pairs, ${SECS} s; $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg)${PRIO:+; ${PRIO[*]}}"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The callees' RTP: one reflector socket per call, REFL_BASE + 2i, announced by the UAS.
"${PRIO[@]}" taskset -c "$LOAD_CPU" "$REFLECTOR_BIN" --base "$REFL_BASE" --calls "$PAIRS" \
  --seconds $((SECS + 120)) >"$OUT/reflector.out" 2>"$OUT/reflector.log" &
REFL=$!
PIDS+=("$REFL")
for _ in $(seq 200); do grep -q sockets "$OUT/reflector.log" 2>/dev/null && break; sleep 0.05; done
grep -q sockets "$OUT/reflector.log" || { echo "reflector did not start:"; cat "$OUT/reflector.log"; exit 1; }
{ echo SEQUENTIAL; for i in $(seq 0 $((PAIRS - 1))); do echo "$((REFL_BASE + 2 * i))"; done; } >"$OUT/uas-ports.csv"
SCEN="$(pwd)/sipp-scenarios/${UAS_SCENARIO:-uas-load.xml}"
# SIPp writes its error log into the directory it runs in: $OUT.
(cd "$OUT" && exec taskset -c "$LOAD_CPU" sipp -sf "$SCEN" -inf uas-ports.csv \
  -i 127.0.0.1 -p "$UAS_PORT" -m "$PAIRS" -nostdin -trace_err -timeout $((SECS + 120))s \
  >uas.out 2>&1 </dev/null) &
UAS=$!
PIDS+=("$UAS")

cat >"$OUT/frontdoor.toml" <<TOML
[media]
threads = 1
rtp_ports = "10000-19999"

[bridge]
target = "sip:uas@127.0.0.1:$UAS_PORT"
timeout_s = 30
TOML
: >"$OUT/events.jsonl"
"${PRIO[@]}" taskset -c "$SERVER_CPU" "$FRONTDOOR_BIN" serve --sip "127.0.0.1:$PORT" --config "$OUT/frontdoor.toml" \
  --events "$OUT/events.jsonl" 2>"$OUT/server.log" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 200); do grep -q server.started "$OUT/events.jsonl" 2>/dev/null && break; sleep 0.05; done
grep -q server.started "$OUT/events.jsonl" || { echo "frontdoor did not start:"; cat "$OUT/server.log"; exit 1; }

set +e
"${PRIO[@]}" taskset -c "$LOAD_CPU" "$RTPLOAD_BIN" --calls "$PAIRS" --seconds "$SECS" --rate "$RATE" \
  --number bridge --sip "127.0.0.1:$PORT" --events "$OUT/events.jsonl" --pid "$SERVER" \
  --base "$LOAD_BASE" --rx-poll-ms "${RX_POLL_MS:-1}" "${SIPP_WRAP[@]}" \
  --out-dir "$OUT" --json "$OUT/rtpload.json"
RC=$?
set -e
kill -TERM "$SERVER"; wait "$SERVER" || true
UAS_RC=0
wait "$UAS" || UAS_RC=$?
kill "$REFL" 2>/dev/null || true
echo "  frontdoor      : pinned to CPU $SERVER_CPU, [media] threads = 1; rtpload + SIPp UAC/UAS + reflector on CPU $LOAD_CPU"
echo "  bridged pairs  : $(grep -c '"bridge.bridged"' "$OUT/events.jsonl" | awk '{print $1/2}'), SIPp UAS exit $UAS_RC"
grep -h '"server.stopped"' "$OUT/events.jsonl" | sed 's/^/  server.stopped : /' || true
echo "  logs           : $OUT"
exit $RC
