//! Broken input into the UserAgent: never a panic; answerable requests get 400, the rest is
//! dropped silently and counted.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::*;
use frontdoor_sip::framing::StreamFramer;
use frontdoor_sip::message::HeaderName;
use frontdoor_sip::{Transport, UaConfig, UserAgent};
use proptest::prelude::*;

fn base() -> String {
    invite("mal1", "z9hG4bKmal")
}

/// Feed and return the statuses sent back.
fn feed(msg: &[u8]) -> (Vec<u16>, frontdoor_sip::UaStats, usize) {
    let (mut ua, t0) = ua();
    ua.handle_datagram(t0, Transport::Udp, peer(), msg);
    let out = drain(&mut ua);
    let evs = events(&mut ua).len();
    (statuses(&out), ua.stats(), evs)
}

fn assert_400(msg: &str) {
    let (mut ua, t0) = ua();
    ua.handle_datagram(t0, Transport::Udp, peer(), msg.as_bytes());
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![400], "for message:\n{msg}");
    let r = response(&out[0]);
    assert!(r.header(&HeaderName::Warning).is_some());
    assert!(r.to_tag().is_some());
    assert_eq!(out[0].destination, peer());
    assert!(events(&mut ua).is_empty());
    assert_eq!(ua.stats().bad_requests_sent, 1);
}

fn assert_dropped(msg: &[u8]) {
    let (st, stats, evs) = feed(msg);
    assert!(
        st.is_empty(),
        "unexpected output {st:?} for {:?}",
        String::from_utf8_lossy(msg)
    );
    assert_eq!(evs, 0);
    assert_eq!(stats.parse_drops, 1, "{:?}", String::from_utf8_lossy(msg));
}

#[test]
fn negative_content_length_is_400() {
    assert_400(&base().replace("Content-Length: ", "Content-Length: -"));
}

#[test]
fn non_numeric_and_huge_content_length_are_400() {
    let b = base();
    let cl = b
        .split("Content-Length: ")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .next()
        .unwrap()
        .to_owned();
    assert_400(&b.replace(&format!("Content-Length: {cl}"), "Content-Length: abc"));
    assert_400(&b.replace(
        &format!("Content-Length: {cl}"),
        "Content-Length: 99999999999999999999",
    ));
    assert_400(&b.replace(&format!("Content-Length: {cl}"), "Content-Length: 100000"));
}

#[test]
fn truncated_body_is_400() {
    let b = base();
    assert_400(&b[..b.len() - 20]);
}

#[test]
fn header_without_colon_is_400() {
    assert_400(&base().replace("Max-Forwards: 70\r\n", "Max-Forwards 70\r\nGarbageLine\r\n"));
}

#[test]
fn bad_max_forwards_and_cseq_method_mismatch_are_400() {
    assert_400(&base().replace("Max-Forwards: 70", "Max-Forwards: seventy"));
    assert_400(&base().replace("CSeq: 1 INVITE", "CSeq: 1 BYE"));
}

#[test]
fn missing_core_headers_are_dropped() {
    let b = base();
    assert_dropped(b.replace("Call-ID: mal1\r\n", "").as_bytes());
    assert_dropped(b.replace("CSeq: 1 INVITE\r\n", "").as_bytes());
    assert_dropped(b.replace("CSeq: 1 INVITE", "CSeq: x INVITE").as_bytes());
    let no_via: String = b
        .lines()
        .filter(|l| !l.starts_with("Via:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_dropped(no_via.as_bytes());
    assert_dropped(b.replace("From: ", "X-From: ").as_bytes());
    assert_dropped(b.replace("To: ", "X-To: ").as_bytes());
}

#[test]
fn garbage_and_bad_start_lines_are_dropped() {
    assert_dropped(b"\x00\x01\x02\xff\xfe garbage");
    assert_dropped(b"HELLO WORLD\r\n\r\n");
    assert_dropped(base().replace("SIP/2.0\r\n", "SIP/3.0\r\n").as_bytes());
    assert_dropped(b"INVITE\r\n\r\n");
    let (st, stats, _) = feed(b"\r\n\r\n");
    assert!(st.is_empty());
    assert_eq!(stats.parse_drops, 0, "keepalives are not drops");
    assert_eq!(stats.messages_in, 0);
}

#[test]
fn truncated_headers_without_blank_line() {
    // Complete core headers but no CRLFCRLF: answerable.
    let b = base();
    let head = b.split("\r\n\r\n").next().unwrap();
    assert_400(head);
    // Cut in the middle of the Call-ID line: core incomplete → dropped.
    let cut = &b[..b.find("Call-ID").unwrap() + 4];
    assert_dropped(cut.as_bytes());
}

#[test]
fn malformed_ack_never_answered() {
    let m = request("ACK", "a1", "z9hG4bKack", 1, "t", "", "")
        .replace("Content-Length: 0", "Content-Length: -1");
    let (st, stats, _) = feed(m.as_bytes());
    assert!(st.is_empty());
    assert_eq!(stats.parse_drops, 1);
}

#[test]
fn malformed_responses_are_dropped() {
    assert_dropped(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_dropped(b"SIP/2.0 9999 Huh\r\n\r\n");
}

#[test]
fn oversized_message_is_refused() {
    let (mut ua, t0) = {
        let cfg = UaConfig {
            max_message_size: 300,
            ..UaConfig::default()
        };
        (UserAgent::with_seed(cfg, 1), std::time::Instant::now())
    };
    ua.handle_datagram(t0, Transport::Udp, peer(), base().as_bytes());
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![513]);
    assert!(events(&mut ua).is_empty());
}

#[test]
fn binary_body_is_fine() {
    let mut m = request("INFO", "b1", "z9hG4bKb", 2, "", "", "")
        .replace("Content-Length: 0", "Content-Length: 4")
        .into_bytes();
    m.extend_from_slice(&[0, 159, 146, 150]);
    let (st, _, _) = feed(&m);
    assert_eq!(st, vec![481]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let (mut ua, t0) = ua();
        ua.handle_datagram(t0, Transport::Udp, peer(), &data);
        ua.handle_datagram(t0, Transport::Tcp, peer(), &data);
        ua.handle_timeout(t0 + std::time::Duration::from_secs(100));
        while ua.poll_transmit().is_some() {}
    }

    #[test]
    fn mutated_invites_never_panic(
        cut in 0usize..900,
        pos in 0usize..900,
        byte in any::<u8>(),
        insert in "[ -~\\r\\n]{0,12}",
    ) {
        let mut m = base().into_bytes();
        let p = pos.min(m.len());
        m.splice(p..p, insert.bytes());
        if let Some(b) = m.get_mut(pos % 700) { *b = byte; }
        m.truncate(cut.max(1).min(m.len()));
        let (mut ua, t0) = ua();
        ua.handle_datagram(t0, Transport::Udp, peer(), &m);
        for t in drain(&mut ua) {
            // Whatever we send must itself be parsable.
            prop_assert!(frontdoor_sip::message::parse(&t.payload).is_ok());
        }
        while let Some(e) = ua.poll_event() {
            if let frontdoor_sip::UaEvent::IncomingCall { call, .. } = e {
                let _ = ua.answer(t0, call, &local_media());
            }
        }
        ua.handle_timeout(t0 + std::time::Duration::from_secs(40));
    }

    #[test]
    fn stream_framer_into_ua_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 0..6), with_msg in any::<bool>()) {
        let (mut ua, t0) = ua();
        let mut f = StreamFramer::new(2048);
        for c in &chunks {
            f.push(c);
            if with_msg { f.push(base().as_bytes()); }
            while let Some(r) = f.next_message() {
                if let Ok(m) = r { ua.handle_datagram(t0, Transport::Tcp, peer(), &m); }
            }
        }
    }
}
