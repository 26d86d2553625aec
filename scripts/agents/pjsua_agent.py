#!/usr/bin/env python3
"""A real softphone as a Frontdoor agent: pjsua2 (PyPI `pjsua2-python`) registers with digest
authentication, answers offered calls after a delay, plays a WAV into the call, records what
it hears, and prints one JSON object per line for every step, so tests can assert on them.

    scripts/agents/pjsua_agent.py --registrar 127.0.0.1:5060 --user alice --password secret \
        --port 25300 --answer-after 1 --play tone.wav --record heard.wav --calls 1 --timeout 60

Events (stdout): registered {code, expires}, incoming {from, display, call_info, call_id},
answered, media {codec}, disconnected {code, reason, seconds}, done, error {message}.
Exit status 0 when --calls calls were answered and ended (or registration alone with
--calls 0), 1 on timeout or registration failure.
Run it with the venv scripts/setup makes: ${CARGO_TARGET_DIR:-target}/pjsua-venv/bin/python.
"""

import argparse
import json
import sys
import time

import pjsua2 as pj


def emit(kind, **fields):
    fields["event"] = kind
    fields["t"] = round(time.monotonic(), 3)
    print(json.dumps(fields), flush=True)


class Agent(pj.Account):
    def __init__(self, opts):
        super().__init__()
        self.opts = opts
        self.reg_code = None
        self.calls = []
        self.answered = 0
        self.ended = 0

    def onRegState(self, prm):
        info = self.getInfo()
        self.reg_code = prm.code
        emit("registered", code=prm.code, reason=prm.reason, expires=info.regExpiresSec,
             active=info.regIsActive)

    def onIncomingCall(self, prm):
        call = AgentCall(self, prm.callId)
        self.calls.append(call)
        ci = call.getInfo()
        rdata = prm.rdata.wholeMsg
        call_info = None
        for line in rdata.splitlines():
            if line.lower().startswith("call-info:"):
                call_info = line.split(":", 1)[1].strip()
        emit("incoming", remote=ci.remoteUri, call_id=ci.callIdString, call_info=call_info)
        ring = pj.CallOpParam()
        ring.statusCode = 180
        call.answer(ring)
        call.answer_at = time.monotonic() + self.opts.answer_after


class AgentCall(pj.Call):
    def __init__(self, acc, call_id):
        super().__init__(acc, call_id)
        self.acc = acc
        self.answer_at = None
        self.hangup_at = None
        self.player = None
        self.recorder = None
        self.started = None
        self.gone = False

    def onCallState(self, prm):
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.started = time.monotonic()
            self.acc.answered += 1
            emit("answered", call_id=ci.callIdString)
            if self.acc.opts.talk:
                self.hangup_at = self.started + self.acc.opts.talk
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            secs = time.monotonic() - self.started if self.started else 0.0
            emit("disconnected", call_id=ci.callIdString, code=ci.lastStatusCode,
                 reason=ci.lastReason, seconds=round(secs, 3))
            self.acc.ended += 1
            self.gone = True

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            am = self.getAudioMedia(i)
            opts = self.acc.opts
            if opts.play and self.player is None:
                self.player = pj.AudioMediaPlayer()
                self.player.createPlayer(opts.play)  # loops by default
                self.player.startTransmit(am)
            if opts.record and self.recorder is None:
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(opts.record)
                am.startTransmit(self.recorder)
            try:
                codec = self.getStreamInfo(i).codecName
            except pj.Error:
                codec = None
            emit("media", call_id=ci.callIdString, codec=codec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registrar", required=True, help="host:port of Frontdoor")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--realm", default="*")
    ap.add_argument("--port", type=int, required=True, help="local SIP UDP port")
    ap.add_argument("--rtp-port", type=int, default=0,
                    help="first local RTP port (0: PJSIP's default, 4000 up)")
    ap.add_argument("--answer-after", type=float, default=1.0)
    ap.add_argument("--talk", type=float, default=0.0,
                    help="hang up after this many seconds of talk (0: wait for BYE)")
    ap.add_argument("--play", help="WAV to send into each call")
    ap.add_argument("--record", help="WAV to record the first call into")
    ap.add_argument("--calls", type=int, default=1, help="calls to take before exiting")
    ap.add_argument("--expires", type=int, default=300)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--unregister", action="store_true", help="unregister before exiting")
    opts = ap.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = opts.port
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    # G.711 only, as a carrier-grade desk phone would offer.
    for c in ep.codecEnum2():
        prio = {"PCMU/8000/1": 255, "PCMA/8000/1": 254}.get(c.codecId, 0)
        ep.codecSetPriority(c.codecId, prio)

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{opts.user}@{opts.registrar}"
    acfg.regConfig.registrarUri = f"sip:{opts.registrar}"
    acfg.regConfig.timeoutSec = opts.expires
    acfg.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", opts.realm, opts.user, 0, opts.password))
    acfg.sipConfig.contactForced = f"<sip:{opts.user}@127.0.0.1:{opts.port}>"
    acfg.natConfig.sdpNatRewriteUse = False
    acfg.natConfig.viaRewriteUse = False
    acfg.natConfig.contactRewriteUse = False
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    if opts.rtp_port:
        acfg.mediaConfig.transportConfig.port = opts.rtp_port
        acfg.mediaConfig.transportConfig.portRange = 10
    acc = Agent(opts)
    acc.create(acfg)

    deadline = time.monotonic() + opts.timeout
    status = 1
    unregistering = False
    try:
        while time.monotonic() < deadline:
            ep.libHandleEvents(10)
            now = time.monotonic()
            if acc.reg_code is not None and acc.reg_code >= 300:
                emit("error", message=f"registration failed with {acc.reg_code}")
                break
            for call in list(acc.calls):
                if call.gone:
                    continue
                if call.answer_at is not None and now >= call.answer_at:
                    call.answer_at = None
                    ok = pj.CallOpParam()
                    ok.statusCode = 200
                    call.answer(ok)
                if call.hangup_at is not None and now >= call.hangup_at:
                    call.hangup_at = None
                    call.hangup(pj.CallOpParam())
            done_calls = opts.calls > 0 and acc.ended >= opts.calls
            registered_only = opts.calls == 0 and acc.reg_code == 200
            if (done_calls or registered_only) and not unregistering:
                if opts.unregister:
                    unregistering = True
                    acc.setRegistration(False)
                    stop_at = time.monotonic() + 3
                    while time.monotonic() < stop_at and acc.getInfo().regIsActive:
                        ep.libHandleEvents(10)
                status = 0
                break
        if status != 0:
            emit("error", message="timed out")
    finally:
        emit("done", answered=acc.answered, ended=acc.ended, status=status)
        for call in acc.calls:
            call.player = None
            call.recorder = None
        acc.calls = []
        acc.shutdown()
        ep.libDestroy()
    return status


if __name__ == "__main__":
    sys.exit(main())
