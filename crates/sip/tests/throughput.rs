//! Rough single-core throughput check of the full UAS call flow
//! (INVITE/100/180/200/ACK/BYE/200, SDP offer/answer included). Run with
//! `cargo test --release -p frontdoor-sip --test throughput -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use frontdoor_sip::{Transport, UaEvent};

#[test]
#[ignore]
fn calls_per_second() {
    let n = 50_000;
    let invites: Vec<String> = (0..n)
        .map(|i| {
            request(
                "INVITE",
                &format!("tp{i}"),
                &format!("z9hG4bKi{i}"),
                1,
                "",
                "",
                SDP_OFFER,
            )
        })
        .collect();
    let (mut ua, t0) = ua();
    let media = local_media();
    let src = peer();
    let mut now = t0;
    let start = Instant::now();
    let mut out_bytes = 0usize;
    for (i, inv) in invites.iter().enumerate() {
        now += Duration::from_millis(1);
        ua.handle_timeout(now);
        ua.handle_datagram(now, Transport::Udp, src, inv.as_bytes());
        let ev = ua.poll_event();
        let Some(UaEvent::IncomingCall { call, .. }) = ev else {
            panic!("{i}: {ev:?} {:?}", ua.stats())
        };
        ua.ring(now, call).unwrap();
        ua.answer(now, call, &media).unwrap();
        let mut tag = String::new();
        while let Some(t) = ua.poll_transmit() {
            out_bytes += t.payload.len();
            if tag.is_empty() && t.payload.starts_with(b"SIP/2.0 200") {
                let s = std::str::from_utf8(&t.payload).unwrap();
                let to = s.find("\r\nTo:").unwrap();
                let i = to + s[to..].find(";tag=").unwrap() + 5;
                let rest = &s[i..];
                let e = rest.find(['\r', ';', ',']).unwrap();
                tag = rest[..e].to_owned();
            }
        }
        let cid = format!("tp{i}");
        let ack = request("ACK", &cid, &format!("z9hG4bKa{i}"), 1, &tag, "", "");
        ua.handle_datagram(now, Transport::Udp, src, ack.as_bytes());
        let bye = request("BYE", &cid, &format!("z9hG4bKb{i}"), 2, &tag, "", "");
        ua.handle_datagram(now, Transport::Udp, src, bye.as_bytes());
        while let Some(t) = ua.poll_transmit() {
            out_bytes += t.payload.len();
        }
        while ua.poll_event().is_some() {}
    }
    let el = start.elapsed();
    let s = ua.stats();
    println!(
        "{n} calls in {el:?}: {:.0} calls/s; active tx {} calls {}; out {out_bytes} B",
        n as f64 / el.as_secs_f64(),
        s.active_transactions,
        s.active_calls
    );
    assert_eq!(s.active_calls, 0);
}

#[test]
#[ignore]
fn sdp_answer_per_second() {
    let n = 50_000;
    let media = local_media();
    let start = Instant::now();
    let mut total = 0;
    for i in 0..n {
        let mut s = frontdoor_sip::sdp::SdpSession::with_id(i);
        let (b, _) = frontdoor_sip::sdp::answer(SDP_OFFER.as_bytes(), &media, &mut s).unwrap();
        total += b.len();
    }
    let el = start.elapsed();
    println!(
        "sdp::answer: {:.0}/s ({total} B)",
        n as f64 / el.as_secs_f64()
    );
}

#[test]
#[ignore]
fn parse_per_second() {
    let n = 200_000;
    let inv = invite("parse", "z9hG4bKparse");
    let start = Instant::now();
    for _ in 0..n {
        let m = frontdoor_sip::message::parse(inv.as_bytes()).unwrap();
        std::hint::black_box(m);
    }
    let el = start.elapsed();
    println!("parse INVITE: {:.0}/s", n as f64 / el.as_secs_f64());
}
