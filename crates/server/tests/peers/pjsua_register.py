#!/usr/bin/env python3
"""A real softphone (PJSIP 2.15 through pjsua2) registering with Frontdoor.

It answers the registrar's digest challenge itself (PJSIP supports SHA-256 and MD5 and picks
among the challenges), optionally unregisters, and prints one JSON line per registration
state change. Exit status 0 when every step got the status expected.

    python pjsua_register.py --server 127.0.0.1:5060 --user alice --password pw \
        --local-port 5070 [--expect 200] [--unregister]

Installed by scripts/setup into a virtual environment under the cargo target directory
(PyPI package pjsua2-python, a binary wheel of PJSIP).
"""
import argparse
import json
import sys
import time

import pjsua2 as pj


class Account(pj.Account):
    def __init__(self):
        super().__init__()
        self.states = []

    def onRegState(self, prm):
        info = self.getInfo()
        self.states.append(prm.code)
        print(
            json.dumps(
                {
                    "code": prm.code,
                    "reason": prm.reason,
                    "active": info.regIsActive,
                    "expires": info.regExpiresSec,
                }
            ),
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="registrar host:port")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--local-port", type=int, required=True)
    ap.add_argument("--expires", type=int, default=60)
    ap.add_argument("--expect", type=int, default=200)
    ap.add_argument("--unregister", action="store_true")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2 frontdoor-test"
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = args.local_port
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{args.user}@{args.server}"
    acfg.regConfig.registrarUri = f"sip:{args.server}"
    acfg.regConfig.timeoutSec = args.expires
    acfg.regConfig.retryIntervalSec = 0
    acfg.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", args.user, 0, args.password)
    )
    acc = Account()
    acc.create(acfg)

    def wait_states(n):
        end = time.time() + args.timeout
        while len(acc.states) < n and time.time() < end:
            ep.libHandleEvents(20)
        return len(acc.states) >= n

    ok = wait_states(1) and acc.states[0] == args.expect
    if ok and args.unregister:
        acc.setRegistration(False)
        ok = wait_states(2) and acc.states[1] == 200
    # Let the last response's transaction settle, then stop without another REGISTER.
    end = time.time() + 0.2
    while time.time() < end:
        ep.libHandleEvents(20)
    acc.shutdown()
    ep.libDestroy()
    print(json.dumps({"done": ok, "states": acc.states}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
