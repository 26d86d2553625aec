//! Everything the UA sends must be accepted by an independent SIP parser (rsip).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::*;
use frontdoor_sip::Transmit;

fn check(ts: &[Transmit]) {
    for t in ts {
        let s = std::str::from_utf8(&t.payload).unwrap();
        let m = rsip::SipMessage::try_from(s);
        assert!(m.is_ok(), "rsip rejects:\n{s}\n{m:?}");
    }
}

#[test]
fn uas_and_uac_output_parses_with_rsip() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("x1", "z9hG4bKx1"));
    let call = incoming(&events(&mut ua));
    ua.ring(t0, call).unwrap();
    ua.answer(t0, call, &local_media()).unwrap();
    let out = drain(&mut ua);
    check(&out);
    let tag = response(&out[2]).to_tag().unwrap().to_owned();
    send(
        &mut ua,
        t0,
        &request("ACK", "x1", "z9hG4bKx1a", 1, &tag, "", ""),
    );
    ua.hangup(t0, call).unwrap();
    check(&drain(&mut ua));
    send(
        &mut ua,
        t0,
        &request("OPTIONS", "x2", "z9hG4bKx2", 1, "", "", ""),
    );
    send(
        &mut ua,
        t0,
        &request("FOO", "x3", "z9hG4bKx3", 1, "", "", ""),
    );
    send(
        &mut ua,
        t0,
        &invite("x4", "z9hG4bKx4").replace("Content-Length: ", "Content-Length: -"),
    );
    check(&drain(&mut ua));
    let c2 = ua
        .invite(t0, "sip:bob@10.0.0.2:5062", peer(), "ring", &local_media())
        .unwrap();
    ua.hangup(t0, c2).unwrap();
    check(&drain(&mut ua));
}
