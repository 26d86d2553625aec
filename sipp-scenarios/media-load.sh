#!/usr/bin/env bash
# Media load: N concurrent G.711 calls against frontdoor pinned to one core, or the same socket
# layout against a bare UDP reflector (the floor of this box).
#
#   sipp-scenarios/media-load.sh CALLS [SECONDS]              # engine
#   sipp-scenarios/media-load.sh --baseline CALLS [SECONDS]   # reflector baseline
#
# Engine: builds the release binaries, starts `frontdoor serve` pinned to core $SERVER_CPU
# (default 0) with `[media] threads = 1` (a temporary TOML), then runs rtpload pinned to core
# $LOAD_CPU (default 1); rtpload binds one UDP socket per call, runs SIPp (inheriting the pin)
# with sipp-scenarios/uac-rtpload.xml to place CALLS calls to `answer` at $RATE calls/s (default
# 200) held for SECONDS (default 20), streams PCMU to the engine and measures the engine's RTP.
# Printed: rtpload's report (loss, duplicates, reordering, pacing jitter from kernel receive
# timestamps, the engine's own media.stats), the engine's CPU % of one core over the window
# when every call is up (/proc/PID/stat), its RSS growth / calls (/proc/PID/status), and the
# kernel's UDP receive-buffer errors.
# Baseline: `reflector` (one socket per call, epoll + recvmmsg/sendmmsg, nothing else) pinned to
# $SERVER_CPU instead of frontdoor; rtpload sends to it directly for SECONDS (no SIPp).
#
# Exit status: rtpload's (non-zero when SIPp failed or nothing was received).
# Environment: SERVER_CPU, LOAD_CPU, RATE, PORT (SIP, default 5070), OUT (log directory),
# FRONTDOOR_BIN / RTPLOAD_BIN / REFLECTOR_BIN (skip the build), CARGO_TARGET_DIR,
# RT=1 to run both sides SCHED_FIFO (`chrt -f 10`, needs CAP_SYS_NICE) so that other work on a
# shared box (compilers) cannot preempt them — say so when quoting such figures. SIPp then runs
# SCHED_OTHER (`chrt -o 0`) so that it never delays rtpload's packet clock (SIPP_FIFO=1: SIPp
# keeps SCHED_FIFO too, for runs where SCHED_OTHER would starve it).
# SPIN=1: a SCHED_IDLE busy loop on each of the two CPUs for the run, so that the vCPUs never
# halt: on a KVM guest waking a halted vCPU is slow, and the engine (which sleeps and wakes
# 1,000+ times a second) pays for it in CPU time and tail latency. SCHED_IDLE runs only when
# nothing else wants the CPU.
# RX_POLL_MS: rtpload's receive polling period (default 1; 0 = sleep in epoll_wait, which on
# loopback makes the engine pay for waking rtpload in every send). REFL_POLL_MS: the same for
# the reflector (default 0: echo at once).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=engine
if [ "${1:-}" = "--baseline" ]; then MODE=baseline; shift; fi
CALLS=${1:?usage: media-load.sh [--baseline] CALLS [SECONDS]}
SECS=${2:-20}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
RATE=${RATE:-200}
PORT=${PORT:-5070}
LOAD_BASE=${LOAD_BASE:-40000}
REFL_BASE=${REFL_BASE:-20000}
OUT=${OUT:-sipp-scenarios/out/media-load-$MODE-$CALLS-$$}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Two sockets per call in the engine, one per call in rtpload and the reflector, plus SIPp's.
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

SPINNERS=()
if [ "${SPIN:-0}" = 1 ]; then
  for c in "$SERVER_CPU" "$LOAD_CPU"; do
    chrt -i 0 taskset -c "$c" timeout $((SECS + 300)) sh -c 'while :; do :; done' &
    SPINNERS+=($!)
  done
fi
stop_spinners() { for p in "${SPINNERS[@]}"; do kill "$p" 2>/dev/null || true; done; }

snmp_rcvbuf() { awk '/^Udp:/{ if (h) { for (i=1;i<=NF;i++) if (n[i]=="RcvbufErrors") print $i; exit } else { for (i=1;i<=NF;i++) n[i]=$i; h=1 } }' /proc/net/snmp; }

echo "media-load: $MODE, $CALLS calls, ${SECS} s; $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg)${PRIO:+; ${PRIO[*]}}${SPINNERS:+; SCHED_IDLE spinners}"
RCV0=$(snmp_rcvbuf)

if [ "$MODE" = engine ]; then
  cat >"$OUT/frontdoor.toml" <<EOF
[media]
threads = 1
rtp_ports = "10000-29999"
EOF
  : >"$OUT/events.jsonl"
  "${PRIO[@]}" taskset -c "$SERVER_CPU" "$FRONTDOOR_BIN" serve --sip "127.0.0.1:$PORT" --config "$OUT/frontdoor.toml" \
    --events "$OUT/events.jsonl" 2>"$OUT/server.log" &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true; stop_spinners' EXIT
  for _ in $(seq 200); do grep -q server.started "$OUT/events.jsonl" 2>/dev/null && break; sleep 0.05; done
  grep -q server.started "$OUT/events.jsonl" || { echo "frontdoor did not start:"; cat "$OUT/server.log"; exit 1; }
  set +e
  "${PRIO[@]}" taskset -c "$LOAD_CPU" "$RTPLOAD_BIN" --calls "$CALLS" --seconds "$SECS" --rate "$RATE" \
    --sip "127.0.0.1:$PORT" --events "$OUT/events.jsonl" --pid "$SERVER" --base "$LOAD_BASE" \
    --rx-poll-ms "${RX_POLL_MS:-1}" "${SIPP_WRAP[@]}" \
    --out-dir "$OUT" --json "$OUT/rtpload.json"
  RC=$?
  set -e
  kill -TERM "$SERVER"; wait "$SERVER" || true
  trap - EXIT
  echo "  frontdoor      : pinned to CPU $SERVER_CPU, [media] threads = 1; rtpload + SIPp on CPU $LOAD_CPU"
  grep -h '"server.stopped"' "$OUT/events.jsonl" | sed 's/^/  server.stopped : /' || true
else
  "${PRIO[@]}" taskset -c "$SERVER_CPU" "$REFLECTOR_BIN" --base "$REFL_BASE" --calls "$CALLS" \
    --seconds $((SECS + 3)) --poll-ms "${REFL_POLL_MS:-0}" >"$OUT/reflector.out" 2>"$OUT/reflector.log" &
  REFL=$!
  trap 'kill $REFL 2>/dev/null || true; stop_spinners' EXIT
  for _ in $(seq 200); do grep -q sockets "$OUT/reflector.log" 2>/dev/null && break; sleep 0.05; done
  grep -q sockets "$OUT/reflector.log" || { echo "reflector did not start:"; cat "$OUT/reflector.log"; exit 1; }
  set +e
  "${PRIO[@]}" taskset -c "$LOAD_CPU" "$RTPLOAD_BIN" --calls "$CALLS" --seconds "$SECS" \
    --reflector-ports "$REFL_BASE" --pid "$REFL" --base "$LOAD_BASE" --json "$OUT/rtpload.json" \
    --rx-poll-ms "${RX_POLL_MS:-1}"
  RC=$?
  set -e
  wait "$REFL" 2>/dev/null || true   # exits by itself (--seconds) and prints its counts
  trap - EXIT
  echo "  reflector      : pinned to CPU $SERVER_CPU (poll ${REFL_POLL_MS:-0} ms: $(cat "$OUT/reflector.out")); rtpload on CPU $LOAD_CPU"
fi
stop_spinners
RCV1=$(snmp_rcvbuf)
echo "  UDP RcvbufErrors (kernel, whole box): $((RCV1 - RCV0))"
echo "  logs           : $OUT"
exit $RC
