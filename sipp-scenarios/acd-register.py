#!/usr/bin/env python3
"""Registers many agents' phones with digest auth (MD5, qop=auth) from one local UDP port, for
acd-load.sh. SIPp cannot do this from an injection file: its [authentication] keyword does
not take [fieldN] credentials (SIPp 3.6.1 sends `agent1[authentication username= ...]` as
text), and one SIPp instance cannot REGISTER and then accept INVITEs with new Call-IDs in one
scenario either; so this separate process registers, exits, and the agents' SIPp UAS then
listens on the same port (the registered contact).

    acd-register.py SERVER_HOST:PORT LOCAL_PORT AGENTS.csv [EXPIRES]

AGENTS.csv: one `user;password` a line (a first line SEQUENTIAL, as for SIPp, is skipped).
Keeps up to 64 registrations in flight; retransmits after 500 ms (RFC 3261 timer E, not
doubled: loopback). Exit status 0 when every agent got 200 with its contact bound.
"""
import hashlib
import os
import re
import socket
import sys
import time


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def main():
    server, local_port, csv = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    expires = int(sys.argv[4]) if len(sys.argv) > 4 else 3600
    host, port = server.rsplit(":", 1)
    dest = (host, int(port))
    agents = []
    for line in open(csv):
        line = line.strip()
        if not line or line == "SEQUENTIAL":
            continue
        user, pw = line.split(";", 1)
        agents.append((user, pw))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", local_port))
    sock.settimeout(0.05)
    local = f"127.0.0.1:{local_port}"
    pid = os.getpid()

    def request(i, cseq, auth):
        user, _ = agents[i]
        return (
            f"REGISTER sip:{server} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local};branch=z9hG4bK-{pid}-{i}-{cseq}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{server}>;tag={pid}-{i}\r\n"
            f"To: <sip:{user}@{server}>\r\n"
            f"Call-ID: reg-{pid}-{i}@127.0.0.1\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{local}>\r\n"
            f"Expires: {expires}\r\n"
            + (f"Authorization: {auth}\r\n" if auth else "")
            + "User-Agent: frontdoor acd-register.py\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def authorization(i, challenge):
        user, pw = agents[i]
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
        realm, nonce = params["realm"], params["nonce"]
        uri = f"sip:{server}"
        ha1 = md5(f"{user}:{realm}:{pw}")
        ha2 = md5(f"REGISTER:{uri}")
        cnonce, nc = f"{pid:x}{i:x}", "00000001"
        resp = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        opaque = f', opaque="{params["opaque"]}"' if "opaque" in params else ""
        return (
            f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"{opaque}'
        )

    pending = {}  # i -> (bytes sent, sent at, tries)
    done, failed, nxt = set(), {}, 0
    t_end = time.monotonic() + 60 + len(agents) / 100
    while (nxt < len(agents) or pending) and time.monotonic() < t_end:
        while nxt < len(agents) and len(pending) < 64:
            msg = request(nxt, 1, None)
            sock.sendto(msg, dest)
            pending[nxt] = (msg, time.monotonic(), 1)
            nxt += 1
        try:
            data, _ = sock.recvfrom(65535)
        except socket.timeout:
            data = None
        now = time.monotonic()
        if data:
            text = data.decode(errors="replace")
            m = re.search(r"^Call-ID:\s*reg-\d+-(\d+)@", text, re.M | re.I)
            code = int(text.split(" ", 2)[1]) if text.startswith("SIP/2.0 ") else 0
            if m and int(m.group(1)) in pending and code >= 200:
                i = int(m.group(1))
                cseq = int(re.search(r"^CSeq:\s*(\d+)", text, re.M | re.I).group(1))
                if code == 401 and cseq == 1:
                    ch = re.search(r"^WWW-Authenticate:\s*(.*)$", text, re.M | re.I).group(1)
                    msg = request(i, 2, authorization(i, ch.strip()))
                    sock.sendto(msg, dest)
                    pending[i] = (msg, now, 1)
                elif code == 200 and cseq == 2 and re.search(r"^Contact:.*expires=\d+", text, re.M | re.I):
                    done.add(i)
                    del pending[i]
                elif cseq == 2 or code != 401:
                    failed[i] = text.splitlines()[0]
                    del pending[i]
        for i, (msg, at, tries) in list(pending.items()):
            if now - at > 0.5:
                if tries >= 7:
                    failed[i] = "timeout"
                    del pending[i]
                else:
                    sock.sendto(msg, dest)
                    pending[i] = (msg, now, tries + 1)
    for i in pending:
        failed[i] = "timeout"
    print(f"registered {len(done)}/{len(agents)} from port {local_port}; failed {len(failed)}")
    for i, why in list(failed.items())[:10]:
        print(f"  {agents[i][0]}: {why}")
    return 0 if len(done) == len(agents) else 1


if __name__ == "__main__":
    sys.exit(main())
