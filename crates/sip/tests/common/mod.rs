//! Shared helpers for UA tests: a scripted peer building raw SIP text.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    dead_code,
    missing_docs
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use frontdoor_sip::message::{SipMessage, parse};
use frontdoor_sip::sdp::{Codec, Direction, LocalMedia};
use frontdoor_sip::{Transmit, Transport, UaConfig, UaEvent, UserAgent};

pub const PEER: &str = "10.0.0.2:5062";
pub const SDP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

pub fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

pub fn ua() -> (UserAgent, Instant) {
    let cfg = UaConfig {
        local_addr: "10.0.0.1:5060".parse().unwrap(),
        contact_host: "10.0.0.1".into(),
        ..UaConfig::default()
    };
    (UserAgent::with_seed(cfg, 42), Instant::now())
}

pub fn local_media() -> LocalMedia {
    LocalMedia {
        address: "10.0.0.1".parse().unwrap(),
        port: 20000,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        telephone_event: true,
        ptime_ms: 20,
        direction: Direction::SendRecv,
    }
}

/// A request from the peer. `to_tag` empty = none.
pub fn request(
    method: &str,
    call_id: &str,
    branch: &str,
    cseq: u32,
    to_tag: &str,
    extra: &str,
    body: &str,
) -> String {
    let to = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    let cseq_method = method;
    format!(
        "{method} sip:ring@10.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP {PEER};branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@10.0.0.2>;tag=alicetag\r\n\
To: <sip:ring@10.0.0.1>{to}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {cseq_method}\r\n\
Contact: <sip:alice@{PEER}>\r\n\
{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub fn invite(call_id: &str, branch: &str) -> String {
    request("INVITE", call_id, branch, 1, "", "", SDP_OFFER)
}

pub fn send(ua: &mut UserAgent, now: Instant, msg: &str) {
    ua.handle_datagram(now, Transport::Udp, peer(), msg.as_bytes());
}

pub fn drain(ua: &mut UserAgent) -> Vec<Transmit> {
    std::iter::from_fn(|| ua.poll_transmit()).collect()
}

pub fn events(ua: &mut UserAgent) -> Vec<UaEvent> {
    std::iter::from_fn(|| ua.poll_event()).collect()
}

pub fn parsed(t: &Transmit) -> SipMessage {
    parse(&t.payload).unwrap()
}

pub fn status(t: &Transmit) -> Option<u16> {
    match parsed(t) {
        SipMessage::Response(r) => Some(r.status),
        SipMessage::Request(_) => None,
    }
}

pub fn statuses(ts: &[Transmit]) -> Vec<u16> {
    ts.iter().filter_map(status).collect()
}

pub fn response(t: &Transmit) -> frontdoor_sip::message::Response {
    match parsed(t) {
        SipMessage::Response(r) => r,
        SipMessage::Request(_) => panic!("not a response"),
    }
}

pub fn req_of(t: &Transmit) -> frontdoor_sip::message::Request {
    match parsed(t) {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("not a request"),
    }
}

/// Run all timers up to `until`, collecting transmissions with their times.
pub fn run_until(ua: &mut UserAgent, until: Instant) -> Vec<(Instant, Transmit)> {
    let mut out = vec![];
    while let Some(t) = ua.poll_timeout() {
        if t > until {
            break;
        }
        ua.handle_timeout(t);
        for x in drain(ua) {
            out.push((t, x));
        }
    }
    out
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The call handle from the first IncomingCall event.
pub fn incoming(evs: &[UaEvent]) -> frontdoor_sip::CallHandle {
    evs.iter()
        .find_map(|e| {
            if let UaEvent::IncomingCall { call, .. } = e {
                Some(*call)
            } else {
                None
            }
        })
        .expect("IncomingCall")
}
