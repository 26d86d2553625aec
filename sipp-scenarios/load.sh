#!/usr/bin/env bash
# SIPp load run against a release build of frontdoor, both on loopback.
#
#   sipp-scenarios/load.sh RATE [CALLS] [SCENARIO] [EXTRA SIPP ARGS...]
#
# Starts `frontdoor serve` pinned to core $SERVER_CPU (default 0), runs SIPp pinned to core
# $SIPP_CPU (default 1) at RATE calls/s for CALLS calls (default 10*RATE) with -d 0, and prints:
# SIPp's successful/failed calls and retransmissions, the achieved call rate, INVITE->200
# response-time percentiles (from -trace_rtt), the server's CPU time per call, its RSS, and the
# kernel's UDP receive-buffer errors during the run. Exit status 0 when no call failed.
# FRONTDOOR_ARGS adds arguments to `frontdoor serve` (e.g. "--config my.toml").
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${1:?usage: load.sh RATE [CALLS] [SCENARIO] [EXTRA SIPP ARGS...]}
CALLS=${2:-$((RATE * 10))}
SCEN=${3:-sipp-scenarios/uac.xml}
shift $(( $# < 3 ? $# : 3 ))
SERVER_CPU=${SERVER_CPU:-0}
SIPP_CPU=${SIPP_CPU:-1}
PORT=${PORT:-5070}
OUT=${OUT:-sipp-scenarios/out/load-$RATE-$$}
mkdir -p "$OUT"

if [ -z "${FRONTDOOR_BIN:-}" ]; then
  cargo build --release --locked -q -p frontdoor
  FRONTDOOR_BIN=target/release/frontdoor
fi

snmp_rcvbuf() { awk '/^Udp:/{ if (h) { for (i=1;i<=NF;i++) if (n[i]=="RcvbufErrors") print $i; exit } else { for (i=1;i<=NF;i++) n[i]=$i; h=1 } }' /proc/net/snmp; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Datagrams the kernel dropped on frontdoor's own SIP socket (/proc/net/udp "drops" column).
sip_drops() { awk -v p="$(printf ':%04X' "$PORT")" '$2 ~ p"$" { print $NF; exit }' /proc/net/udp; }

taskset -c "$SERVER_CPU" "$FRONTDOOR_BIN" serve --sip "127.0.0.1:$PORT" --rtp-ports 10000-59999 \
  --events "$OUT/events.jsonl" ${FRONTDOOR_ARGS:-} 2>"$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q server.started "$OUT/events.jsonl" 2>/dev/null && break; sleep 0.05; done

RCV0=$(snmp_rcvbuf)
CPU0=$(cpu_ticks $SERVER)
T0=$(date +%s.%N)
set +e
(cd "$OUT" && taskset -c "$SIPP_CPU" sipp "127.0.0.1:$PORT" -sf "$OLDPWD/$SCEN" -s answer -i 127.0.0.1 \
  -r "$RATE" -m "$CALLS" -d 0 -l $((RATE * 4 > 1000 ? RATE * 4 : 1000)) -buff_size 4194304 -max_socket 4096 \
  -nostdin -timeout $((CALLS / RATE + 60))s -trace_screen -trace_rtt -rtt_freq 200 -trace_stat -fd 1 "$@" \
  >/dev/null 2>"$OUT/sipp.stderr")
SIPP_RC=$?
set -e
T1=$(date +%s.%N)
CPU1=$(cpu_ticks $SERVER)
RCV1=$(snmp_rcvbuf)
SIPDROPS=$(sip_drops)
RSS=$(awk '/VmRSS/{print $2}' /proc/$SERVER/status)
HWM=$(awk '/VmHWM/{print $2}' /proc/$SERVER/status)
kill -TERM $SERVER; wait $SERVER || true
trap - EXIT

SCREEN=$(ls "$OUT"/*_screen.log | head -1)
RTT=$(ls "$OUT"/*_rtt.csv 2>/dev/null | head -1 || true)
STAT=$(ls "$OUT"/*_.csv "$OUT"/*[0-9].csv 2>/dev/null | grep -v rtt | head -1 || true)
python3 - "$SCREEN" "${RTT:-}" "${STAT:-}" "$RATE" "$CALLS" "$T0" "$T1" "$CPU0" "$CPU1" "$(getconf CLK_TCK)" \
  "$RSS" "$HWM" "$RCV0" "$RCV1" "$SERVER_CPU" "$SIPP_CPU" "$SIPP_RC" "${SIPDROPS:-0}" <<'PY'
import re, sys, csv
screen, rtt, stat, rate, calls, t0, t1, c0, c1, hz, rss, hwm, r0, r1, scpu, pcpu, rc, sipdrops = sys.argv[1:]
text = open(screen, errors="replace").read()
def counter(name):
    m = re.findall(name + r"\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return int(m[-1]) if m else None
ok = counter("Successful call"); failed = counter("Failed call")
retrans = None
if stat:
    rows = list(csv.reader(open(stat), delimiter=";"))
    if len(rows) >= 2:
        h = rows[0]; last = rows[-1]
        if "Retransmissions(C)" in h:
            retrans = int(last[h.index("Retransmissions(C)")])
        if "SuccessfulCall(C)" in h:
            ok = int(last[h.index("SuccessfulCall(C)")]); failed = int(last[h.index("FailedCall(C)")])
samples = []
if rtt:
    for line in open(rtt):
        parts = line.strip().split(";")
        if len(parts) >= 2:
            try: samples.append(float(parts[1]))
            except ValueError: pass
samples.sort()
def pct(p):
    return samples[min(len(samples) - 1, int(p / 100 * len(samples)))] if samples else float("nan")
wall = float(t1) - float(t0)
cpu_s = (int(c1) - int(c0)) / int(hz)
done = ok or 0
print(f"offered rate        : {rate} calls/s, {calls} calls")
print(f"successful calls    : {ok}")
print(f"failed calls        : {failed}")
print(f"retransmissions     : {retrans}")
print(f"achieved rate       : {done / wall:.0f} calls/s over {wall:.1f} s")
print(f"INVITE->200 (ms)    : p50 {pct(50):.3f}  p90 {pct(90):.3f}  p99 {pct(99):.3f}  max {samples[-1] if samples else float('nan'):.3f}  ({len(samples)} samples)")
print(f"server CPU          : {cpu_s:.2f} s = {cpu_s / wall * 100:.0f} % of one core, {cpu_s / max(done,1) * 1e6:.1f} us per call")
print(f"server RSS          : {int(rss)/1024:.1f} MiB (peak {int(hwm)/1024:.1f} MiB)")
print(f"UDP RcvbufErrors    : {int(r1) - int(r0)} on the host (SIPp's sockets included); {sipdrops} on frontdoor's SIP socket")
print(f"pinned              : frontdoor on CPU {scpu}, sipp on CPU {pcpu}")
print(f"sipp exit status    : {rc}")
PY
grep "frontdoor stopped" "$OUT/server.log" | sed "s/^/server: /" || true
exit $SIPP_RC
