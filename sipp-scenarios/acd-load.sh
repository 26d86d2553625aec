#!/usr/bin/env bash
# ACD load with SIPp callers and SIPp agents' phones, against a release build of frontdoor.
#
#   sipp-scenarios/acd-load.sh RATE DURATION_S [AGENTS]
#
# Callers (acd-caller.xml) arrive at RATE calls/s for DURATION_S seconds. The generated
# dialplan answers, says a short greeting and queues them (`enqueue` to queue "general", skill
# "en"); the ACD offers each to an agent, the engine rings the agent's registered phone
# (acd-agent.xml: 180, answers after 2 s, -rtp_echo, waits for BYE) and bridges caller and
# agent. Callers hang up HOLD_S (default 30) seconds after the bridge (their pause covers the
# greeting and the ring too); agents wrap up for WRAP_S (default 1) seconds. Little's law: the
# default AGENTS is RATE x (HOLD_S + greeting + 2 s ring + WRAP_S + margin) = RATE x 38.4
# (3,840 at 100/s).
#
# The agents (agentN / pw-N, all with skill "en") register with digest auth (MD5) through
# acd-register.py, separate processes that register from the ports their UAS will listen on
# and exit (one SIPp instance cannot REGISTER and then accept INVITEs with new Call-IDs, and
# SIPp's [authentication] takes no per-call credentials from an injection file), then UAS_PROCS
# (default 4) SIPp agent processes on SIP ports AGENT_PORT.. (default 44000-44003) each serve
# a share of the agents. Ports: engine SIP $PORT (44090), caller SIPp 44004 (media 44060),
# agents' SIPp media 44020 + 10k, engine RTP RTP_PORTS (default "12000-21999,61000-65499":
# two ranges outside the OS's ephemeral range 32768-60999; a call leg takes an even port and
# the odd one above it, and 100/s x 30 s means ~3,000 callers + 3,000 agent legs at once).
#
# The engine runs pinned to CPU $SERVER_CPU (default 0) with `[media] threads = 1`; all SIPp
# processes on $SIPP_CPU (default 1). `ulimit -n` is raised to the hard limit (65536 wanted:
# SIPp and the engine hold thousands of sockets).
#
# Printed: calls attempted / bridged / failed (SIPp's and the event stream's view), bridges/s
# over the steady window (from 10 s to DURATION_S after the first bridge: mean, median, the
# slowest and fastest second, each second's count), agent count, ports, the engine's CPU % of one core over the run (from
# /proc/PID/stat), its RSS, the load average, and INVITE→bridge latency p50/p90/p99
# (`call.received` → `acd.answered` of the same Call-ID in the --events stream; includes the
# greeting and the agents' 2 s ring). Exit status non-zero when any call failed or was not
# bridged. The report is also written to $OUT/report.txt. Environment: PORT, RTP_PORTS, SERVER_CPU, SIPP_CPU, HOLD_S, WRAP_S, UAS_PROCS,
# AGENT_PORT, OUT, FRONTDOOR_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${1:?usage: acd-load.sh RATE DURATION_S [AGENTS]}
DURATION=${2:?usage: acd-load.sh RATE DURATION_S [AGENTS]}
HOLD_S=${HOLD_S:-30}
WRAP_S=${WRAP_S:-1}
AGENTS=${3:-$(awk -v r="$RATE" 'BEGIN { printf "%d", r * 38.4 + 0.5 }')}
PORT=${PORT:-44090}
AGENT_PORT=${AGENT_PORT:-44000}
UAS_PROCS=${UAS_PROCS:-4}
CALLER_PORT=${CALLER_PORT:-44004}
RTP_PORTS=${RTP_PORTS:-12000-21999,61000-65499}
SERVER_CPU=${SERVER_CPU:-0}
SIPP_CPU=${SIPP_CPU:-1}
CALLS=$((RATE * DURATION))
OUT=${OUT:-sipp-scenarios/out/acd-load-$RATE-$$}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SCEN=$(pwd)/sipp-scenarios
exec > >(tee "$OUT/report.txt") 2>&1

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ -z "${FRONTDOOR_BIN:-}" ]; then
  cargo build --release --locked -q -p frontdoor
  FRONTDOOR_BIN=target/release/frontdoor
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# --- configuration, agents, dialplan -------------------------------------------------------
{
  cat <<TOML
[sip]
auth_algorithms = ["MD5"]

[media]
threads = 1
rtp_ports = "$RTP_PORTS"
rtp_timeout_s = $((HOLD_S + 120))   # the callers send no RTP of their own

[acd]
offer_timeout_s = 15.0
max_no_answer = 3

[[acd.queues]]
id = 1
name = "general"
wrap_up_s = $WRAP_S.0
announce_every_s = 600.0

[agents]
max_expires = 7200
TOML
  for i in $(seq 1 "$AGENTS"); do
    printf '[[agents.agent]]\nid = "a%d"\nusername = "agent%d"\npassword = "pw-%d"\nqueues = ["general"]\nskills = ["en"]\nauto_login = true\n' "$i" "$i" "$i"
  done
} >"$OUT/frontdoor.toml"
mkdir -p "$OUT/dialplans"
cat >"$OUT/dialplans/acd-load.toml" <<'TOML'
name = "acd-load"

[[route]]
default = true
flow = "queue"

[flows.queue]
start = "answer"

[flows.queue.steps.answer]
verb = "answer"
next = "greet"

[flows.queue.steps.greet]
verb = "say"
text = "Please hold."
next = "q"

[flows.queue.steps.q]
verb = "enqueue"
queue = "general"
skills = { en = 1 }
on_failure = "busy"

[flows.queue.steps.busy]
verb = "hangup"
reason = "no agent"
TOML
# Agents split over the UAS processes: agent i registers from AGENT_PORT + (i-1) % UAS_PROCS.
for k in $(seq 0 $((UAS_PROCS - 1))); do
  { echo SEQUENTIAL; for i in $(seq $((k + 1)) "$UAS_PROCS" "$AGENTS"); do echo "agent$i;pw-$i"; done; } >"$OUT/agents-$k.csv"
done

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

: >"$OUT/events.jsonl"
taskset -c "$SERVER_CPU" "$FRONTDOOR_BIN" serve --sip "127.0.0.1:$PORT" --config "$OUT/frontdoor.toml" \
  --dialplans "$OUT/dialplans" --data-dir "$OUT/data" --events "$OUT/events.jsonl" 2>"$OUT/server.log" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 600); do grep -q server.started "$OUT/events.jsonl" 2>/dev/null && break; sleep 0.1; done
grep -q server.started "$OUT/events.jsonl" || { echo "frontdoor did not start:"; tail -20 "$OUT/server.log"; exit 1; }
echo "acd-load: $RATE calls/s for ${DURATION} s ($CALLS calls), $AGENTS agents, hold ${HOLD_S} s, wrap-up ${WRAP_S} s; $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg); ulimit -n $(ulimit -n)"

# --- agents register (separate processes), then their SIPp UAS ------------------------------------
T_REG=$(date +%s.%N)
REG_PIDS=()
for k in $(seq 0 $((UAS_PROCS - 1))); do
  n=$(($(wc -l <"$OUT/agents-$k.csv") - 1))
  taskset -c "$SIPP_CPU" python3 "$SCEN/acd-register.py" "127.0.0.1:$PORT" $((AGENT_PORT + k)) \
    "$OUT/agents-$k.csv" 7200 >"$OUT/register-$k.out" 2>&1 </dev/null &
  REG_PIDS+=($!)
done
REG_FAIL=0
for p in "${REG_PIDS[@]}"; do wait "$p" || REG_FAIL=$((REG_FAIL + 1)); done
REGISTERED=$(grep -c '"agent.registered"' "$OUT/events.jsonl" || true)
cat "$OUT"/register-*.out | sed 's/^/  /'
echo "  registered     : $REGISTERED/$AGENTS agents in $(awk -v a="$T_REG" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s ($REG_FAIL register processes failed)"
if [ "$REGISTERED" -ne "$AGENTS" ] || [ "$REG_FAIL" -ne 0 ]; then
  echo "agents did not all register; see $OUT"; exit 1
fi
UAS_PIDS=()
for k in $(seq 0 $((UAS_PROCS - 1))); do
  (cd "$OUT" && exec taskset -c "$SIPP_CPU" sipp "127.0.0.1:$PORT" -sf "$SCEN/acd-agent.xml" -i 127.0.0.1 \
    -p $((AGENT_PORT + k)) -mp $((44020 + 10 * k)) -rtp_echo -buff_size 4194304 -max_socket 8192 -nostdin \
    -timeout $((DURATION + HOLD_S + 180))s -trace_err -error_file "agent-$k.err" -trace_stat -stf "agent-$k.csv" -fd 1 \
    >/dev/null 2>"agent-$k.stderr" </dev/null) &
  UAS_PIDS+=($!)
  PIDS+=($!)
done
sleep 1

# --- callers -------------------------------------------------------------------------------------
CPU0=$(cpu_ticks "$SERVER")
T0=$(date +%s.%N)
set +e
(cd "$OUT" && exec taskset -c "$SIPP_CPU" sipp "127.0.0.1:$PORT" -sf "$SCEN/acd-caller.xml" -s queue -i 127.0.0.1 \
  -p "$CALLER_PORT" -mp 44060 -r "$RATE" -m "$CALLS" -l $((RATE * (HOLD_S + 20))) -d $(((HOLD_S + 3) * 1000)) \
  -buff_size 4194304 -max_socket 8192 -nostdin -timeout $((DURATION + HOLD_S + 120))s \
  -trace_err -error_file caller.err -trace_stat -stf caller.csv -fd 1 -trace_screen -screen_file caller-screen.log \
  >/dev/null 2>caller.stderr </dev/null)
CALLER_RC=$?
set -e
T1=$(date +%s.%N)
CPU1=$(cpu_ticks "$SERVER")
RSS=$(awk '/VmRSS/{print $2}' "/proc/$SERVER/status")
HWM=$(awk '/VmHWM/{print $2}' "/proc/$SERVER/status")
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
sleep 2
for p in "${UAS_PIDS[@]}"; do kill -USR1 "$p" 2>/dev/null || true; done
sleep 1
kill -TERM "$SERVER"; wait "$SERVER" || true
for p in "${UAS_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
trap - EXIT

# SIPp -trace_stat CSV: the named column of the last line.
stat_col() { awk -F';' -v c="$2" 'NR==1 { for (i=1;i<=NF;i++) if ($i==c) n=i; next } { v=$n } END { print v+0 }' "$1"; }
C_OK=$(stat_col "$OUT/caller.csv" 'SuccessfulCall(C)')
C_FAIL=$(stat_col "$OUT/caller.csv" 'FailedCall(C)')
C_RETR=$(stat_col "$OUT/caller.csv" 'Retransmissions(C)')
A_OK=0; A_FAIL=0; A_RETR=0
for k in $(seq 0 $((UAS_PROCS - 1))); do
  A_OK=$((A_OK + $(stat_col "$OUT/agent-$k.csv" 'SuccessfulCall(C)')))
  A_FAIL=$((A_FAIL + $(stat_col "$OUT/agent-$k.csv" 'FailedCall(C)')))
  A_RETR=$((A_RETR + $(stat_col "$OUT/agent-$k.csv" 'Retransmissions(C)')))
done
ELAPSED=$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.1f", b-a}')
CPU_PCT=$(awk -v t="$((CPU1 - CPU0))" -v hz="$(getconf CLK_TCK)" -v s="$ELAPSED" 'BEGIN{printf "%.1f", 100*t/hz/s}')

echo "  callers        : $CALLS attempted, $C_OK successful, $C_FAIL failed, $C_RETR retransmissions (SIPp, caller rc $CALLER_RC)"
echo "  agents' phones : $A_OK calls answered and ended, $A_FAIL failed, $A_RETR retransmissions (SIPp, $UAS_PROCS processes)"
(python3 - "$OUT/events.jsonl" "$DURATION" "$CALLS" <<'PY' | tee "$OUT/summary.txt"
import json, sys
from datetime import datetime
path, duration, calls = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def ts(e):
    return datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
received, answered, bridged, abandoned, refused, counts = {}, {}, 0, {}, {}, {}
for line in open(path):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    t = e.get("type")
    counts[t] = counts.get(t, 0) + 1
    cid = e.get("call_id")
    if t == "call.received" and cid:
        received[cid] = ts(e)
    elif t == "acd.answered" and cid:
        answered[cid] = ts(e)
    elif t == "acd.abandoned":
        abandoned[e.get("reason")] = abandoned.get(e.get("reason"), 0) + 1
    elif t == "acd.refused":
        refused[e.get("reason")] = refused.get(e.get("reason"), 0) + 1
lat = sorted(answered[c] - received[c] for c in answered if c in received)
first = min(answered.values()) if answered else 0.0
# steady window: from 10 s after the first bridge to DURATION_S after it (the arrivals last
# DURATION_S; bridges follow them by the greeting and the 2 s ring)
w0, w1 = first + 10.0, first + duration
per_s = {}
for c, t in answered.items():
    if w0 <= t < w1:
        per_s[int(t - w0)] = per_s.get(int(t - w0), 0) + 1
secs = int(w1 - w0)
rates = [per_s.get(i, 0) for i in range(secs)]
def pct(p):
    return lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] * 1000 if lat else float("nan")
print(f"  bridged        : {len(answered)}/{calls} callers bridged to an agent (acd.answered), "
      f"{counts.get('bridge.bridged', 0)} bridge.bridged events, acd.enqueued {counts.get('acd.enqueued', 0)}, "
      f"acd.refused {refused or 0}, acd.abandoned {abandoned or 0}")
if rates:
    srt = sorted(rates)
    print(f"  bridges/s      : {sum(rates) / len(rates):.1f} mean over the steady window ({secs} s from 10 s after the first bridge), "
          f"per second: median {srt[len(srt) // 2]}, slowest {srt[0]}, fastest {srt[-1]}, {sum(1 for r in rates if r < 0.9 * calls / duration)} s under 90 % of RATE")
    print("  per second     : " + " ".join(str(r) for r in rates))
print(f"  INVITE->bridge : p50 {pct(50):.0f} ms, p90 {pct(90):.0f} ms, p99 {pct(99):.0f} ms, max {lat[-1] * 1000 if lat else float('nan'):.0f} ms "
      f"(call.received -> acd.answered; greeting + 2 s ring included)")
print(f"BRIDGED={len(answered)}")
PY
) | grep -v '^BRIDGED='
BRIDGED=$(sed -n 's/^BRIDGED=//p' "$OUT/summary.txt")
echo "  engine         : ${CPU_PCT} % of CPU $SERVER_CPU over ${ELAPSED} s (SIPp on CPU $SIPP_CPU), RSS $((RSS / 1024)) MiB (peak $((HWM / 1024)) MiB)"
echo "  agents         : $AGENTS (skill en, wrap-up ${WRAP_S} s); ports: engine SIP 127.0.0.1:$PORT, RTP $RTP_PORTS; agents' SIPp SIP $AGENT_PORT-$((AGENT_PORT + UAS_PROCS - 1)), media 44020+10k; callers' SIPp $CALLER_PORT, media 44060"
echo "  load average   : $LOAD at the end of the calls (now $(cut -d' ' -f1-3 /proc/loadavg))"
echo "  logs           : $OUT"
if [ "$C_FAIL" -ne 0 ] || [ "$A_FAIL" -ne 0 ] || [ "$C_OK" -ne "$CALLS" ] || [ "$BRIDGED" -ne "$CALLS" ]; then
  echo "FAILED: not every call was bridged cleanly"
  exit 1
fi
