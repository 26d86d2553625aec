//! SIP hot path: parse an INVITE (our framing and Content-Length checks, rsip's parser), run
//! it through the user agent (transaction + 100 Trying), answer a retransmitted INVITE from
//! the transaction, a whole call (INVITE/180/200/ACK/BYE/200, SDP offer/answer included)
//! through the UA, and the SDP answer alone.
//!
//! `cargo bench -p frontdoor-benches --bench sip -- --warm-up-time 1 --measurement-time 3`;
//! the product goal is 10,000 whole calls/s on one core (≤ 100 µs per whole call).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use frontdoor_sip::sdp::{Codec, Direction, LocalMedia};
use frontdoor_sip::{CallHandle, Transport, UaConfig, UaEvent, UserAgent};

const SDP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn invite(n: u64) -> Vec<u8> {
    format!(
        "INVITE sip:answer@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1-0\r\n\
From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag00{n}\r\n\
To: answer <sip:answer@127.0.0.1:5060>\r\n\
Call-ID: {n}-4242@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@127.0.0.1:5061\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
    .into_bytes()
}

fn in_dialog(method: &str, n: u64, to_tag: &str, cseq: u32) -> Vec<u8> {
    format!(
        "{method} sip:answer@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-{cseq}-{method}\r\n\
From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag00{n}\r\n\
To: answer <sip:answer@127.0.0.1:5060>;tag={to_tag}\r\n\
Call-ID: {n}-4242@127.0.0.1\r\n\
CSeq: {cseq} {method}\r\n\
Contact: sip:sipp@127.0.0.1:5061\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn peer() -> SocketAddr {
    "127.0.0.1:5061".parse().unwrap()
}

fn ua() -> UserAgent {
    UserAgent::new(UaConfig {
        local_addr: "127.0.0.1:5060".parse().unwrap(),
        contact_host: "127.0.0.1".into(),
        ..UaConfig::default()
    })
}

fn local_media() -> LocalMedia {
    LocalMedia {
        address: "127.0.0.1".parse().unwrap(),
        port: 10000,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        telephone_event: true,
        ptime_ms: 20,
        direction: Direction::SendRecv,
    }
}

/// Drains the UA; returns the to-tag of the last response and the new call, if any.
fn drain(ua: &mut UserAgent) -> (Option<String>, Option<CallHandle>) {
    let mut tag = None;
    let mut call = None;
    while let Some(t) = ua.poll_transmit() {
        let text = std::str::from_utf8(&t.payload).unwrap_or("");
        if let Some(to) = text.lines().find(|l| l.starts_with("To:"))
            && let Some(p) = to.find(";tag=")
        {
            tag = Some(to[p + 5..].trim().to_owned());
        }
        black_box(t);
    }
    while let Some(e) = ua.poll_event() {
        if let UaEvent::IncomingCall { call: c, .. } = e {
            call = Some(c);
        }
    }
    (tag, call)
}

fn benches(c: &mut Criterion) {
    let inv = invite(1);
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse INVITE", |b| {
        b.iter(|| black_box(frontdoor_sip::message::parse(black_box(&inv)).unwrap()))
    });

    // A new INVITE through the UA: parse, match (miss), new server transaction, 100 Trying,
    // IncomingCall event. Time is simulated and advanced so transactions get freed.
    g.bench_function("UA new INVITE -> 100 Trying", |b| {
        let mut ua = ua();
        let mut now = Instant::now();
        let invites: Vec<Vec<u8>> = (0..4096).map(invite).collect();
        let mut i = 0usize;
        b.iter(|| {
            let msg = &invites[i % invites.len()];
            i += 1;
            if i.is_multiple_of(invites.len()) {
                // Everything from the last round times out and is freed.
                now += Duration::from_secs(300);
                ua.handle_timeout(now);
                drain(&mut ua);
                ua = self::ua();
            }
            ua.handle_datagram(now, Transport::Udp, peer(), msg);
            while let Some(t) = ua.poll_transmit() {
                black_box(t);
            }
            while let Some(e) = ua.poll_event() {
                black_box(e);
            }
        })
    });

    // A retransmitted INVITE: matched to its transaction, last response sent again.
    g.bench_function("UA INVITE retransmission", |b| {
        let mut ua = ua();
        let now = Instant::now();
        ua.handle_datagram(now, Transport::Udp, peer(), &inv);
        let (_, call) = drain(&mut ua);
        ua.ring(now, call.expect("IncomingCall")).unwrap();
        drain(&mut ua);
        b.iter(|| {
            ua.handle_datagram(now, Transport::Udp, peer(), black_box(&inv));
            while let Some(t) = ua.poll_transmit() {
                black_box(t);
            }
        })
    });

    // A whole call: INVITE, 180 + 200 with SDP answer, ACK, BYE, 200.
    g.bench_function("UA whole call (INVITE..BYE)", |b| {
        let mut ua = ua();
        let mut now = Instant::now();
        let local = local_media();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            if n.is_multiple_of(4096) {
                now += Duration::from_secs(300);
                ua.handle_timeout(now);
                drain(&mut ua);
            }
            ua.handle_datagram(now, Transport::Udp, peer(), &invite(n));
            let (_, call) = drain(&mut ua);
            let call = call.expect("IncomingCall");
            ua.ring(now, call).unwrap();
            ua.answer(now, call, &local).unwrap();
            let (tag, _) = drain(&mut ua);
            let tag = tag.expect("to-tag");
            ua.handle_datagram(now, Transport::Udp, peer(), &in_dialog("ACK", n, &tag, 1));
            ua.handle_datagram(now, Transport::Udp, peer(), &in_dialog("BYE", n, &tag, 2));
            drain(&mut ua);
        })
    });

    // The SDP answer to the INVITE's offer (part of the whole call above).
    g.bench_function("SDP answer", |b| {
        let local = local_media();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let mut session = frontdoor_sip::sdp::SdpSession::with_id(n);
            black_box(
                frontdoor_sip::sdp::answer(black_box(SDP.as_bytes()), &local, &mut session)
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(sip, benches);
criterion_main!(sip);
