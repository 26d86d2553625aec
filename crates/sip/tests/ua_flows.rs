//! End-to-end UA behaviour with simulated time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::*;
use frontdoor_sip::message::{HeaderName, Method};
use frontdoor_sip::{EndCause, UaEvent};

#[test]
fn invite_ring_answer_ack_bye() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("c1", "z9hG4bKinv1"));
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![100]);
    assert_eq!(out[0].destination, peer());
    let r100 = response(&out[0]);
    assert_eq!(r100.via().rport(), Some(5062));
    assert_eq!(r100.via().received(), Some("10.0.0.2"));
    let evs = events(&mut ua);
    let call = incoming(&evs);
    match &evs[0] {
        UaEvent::IncomingCall {
            request_user,
            from_display,
            offer,
            ..
        } => {
            assert_eq!(request_user, "ring");
            assert_eq!(from_display.as_deref(), Some("Alice"));
            assert!(offer.is_some());
        }
        e => panic!("{e:?}"),
    }
    ua.ring(t0, call).unwrap();
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![180]);
    let tag = response(&out[0]).to_tag().unwrap().to_owned();
    let media = ua.answer(t0, call, &local_media()).unwrap().unwrap();
    assert_eq!(media.remote, Some("10.0.0.2:4000".parse().unwrap()));
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![200]);
    let ok = response(&out[0]);
    assert_eq!(ok.to_tag(), Some(tag.as_str()));
    assert!(ok.has_sdp());
    assert!(ok.contact().is_some());
    send(
        &mut ua,
        t0,
        &request("ACK", "c1", "z9hG4bKack1", 1, &tag, "", ""),
    );
    assert!(drain(&mut ua).is_empty());
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallAnswered {
            call,
            ack_sdp: None
        }]
    );
    // No 2xx retransmission after the ACK.
    assert!(run_until(&mut ua, t0 + secs(10.0)).is_empty());
    let t1 = t0 + secs(10.0);
    send(
        &mut ua,
        t1,
        &request("BYE", "c1", "z9hG4bKbye1", 2, &tag, "", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![200]);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::RemoteBye
        }]
    );
    // BYE retransmission answered by the transaction, no new event.
    send(
        &mut ua,
        t1,
        &request("BYE", "c1", "z9hG4bKbye1", 2, &tag, "", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![200]);
    assert!(events(&mut ua).is_empty());
    assert_eq!(ua.stats().active_calls, 0);
    run_until(&mut ua, t1 + secs(60.0));
    assert_eq!(ua.stats().active_transactions, 0);
}

#[test]
fn retransmitted_invite_gets_last_response_not_a_new_call() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("c2", "z9hG4bKr"));
    drain(&mut ua);
    let call = incoming(&events(&mut ua));
    send(&mut ua, t0, &invite("c2", "z9hG4bKr"));
    assert_eq!(statuses(&drain(&mut ua)), vec![100]);
    ua.ring(t0, call).unwrap();
    drain(&mut ua);
    send(&mut ua, t0, &invite("c2", "z9hG4bKr"));
    assert_eq!(statuses(&drain(&mut ua)), vec![180]);
    assert!(events(&mut ua).is_empty());
    assert_eq!(ua.stats().active_calls, 1);
    assert_eq!(ua.stats().retransmissions_received, 2);
}

#[test]
fn cancel_while_ringing() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("c3", "z9hG4bKc"));
    let call = incoming(&events(&mut ua));
    ua.ring(t0, call).unwrap();
    drain(&mut ua);
    send(
        &mut ua,
        t0,
        &request("CANCEL", "c3", "z9hG4bKc", 1, "", "", ""),
    );
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![200, 487]);
    assert_eq!(response(&out[0]).cseq().method, Method::Cancel);
    assert_eq!(response(&out[1]).cseq().method, Method::Invite);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::Cancelled
        }]
    );
    let tag = response(&out[1]).to_tag().unwrap().to_owned();
    // ACK for the 487 is absorbed by the transaction; 487 retransmissions stop.
    send(
        &mut ua,
        t0,
        &request("ACK", "c3", "z9hG4bKc", 1, &tag, "", ""),
    );
    assert!(drain(&mut ua).is_empty());
    assert!(run_until(&mut ua, t0 + secs(40.0)).is_empty());
    assert!(ua.hangup(t0, call).is_err());
    assert_eq!(ua.stats().active_transactions, 0);
}

#[test]
fn unacked_487_is_retransmitted_by_timer_g() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("c3b", "z9hG4bKc"));
    let call = incoming(&events(&mut ua));
    drain(&mut ua);
    ua.reject(t0, call, 486, Some(30)).unwrap();
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![486]);
    assert_eq!(
        response(&out[0]).header(&HeaderName::RetryAfter),
        Some("30")
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::Rejected(486)
        }]
    );
    let re = run_until(&mut ua, t0 + secs(3.6));
    let times: Vec<f64> = re.iter().map(|(t, _)| (*t - t0).as_secs_f64()).collect();
    assert_eq!(times, vec![0.5, 1.5, 3.5]);
}

#[test]
fn cancel_without_match_is_481_and_stray_ack_is_dropped() {
    let (mut ua, t0) = ua();
    send(
        &mut ua,
        t0,
        &request("CANCEL", "nope", "z9hG4bKx", 1, "", "", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![481]);
    send(
        &mut ua,
        t0,
        &request("ACK", "nope", "z9hG4bKy", 1, "sometag", "", ""),
    );
    send(
        &mut ua,
        t0,
        &request("ACK", "nope", "z9hG4bKz", 1, "", "", ""),
    );
    assert!(drain(&mut ua).is_empty());
}

#[test]
fn ok_retransmission_schedule_then_bye_on_ack_timeout() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("c4", "z9hG4bKo"));
    let call = incoming(&events(&mut ua));
    drain(&mut ua);
    ua.answer(t0, call, &local_media()).unwrap();
    assert_eq!(statuses(&drain(&mut ua)), vec![200]);
    let out = run_until(&mut ua, t0 + secs(40.0));
    let oks: Vec<f64> = out
        .iter()
        .filter(|(_, t)| status(t) == Some(200))
        .map(|(at, _)| (*at - t0).as_secs_f64())
        .collect();
    // T1, 2T1, 4T1, then capped at T2 = 4 s: 0.5, 1.5, 3.5, 7.5, 11.5, ... < 32.
    assert_eq!(
        oks,
        vec![0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    let byes: Vec<_> = out.iter().filter(|(_, t)| status(t).is_none()).collect();
    assert!(!byes.is_empty());
    assert_eq!((byes[0].0 - t0).as_secs_f64(), 32.0);
    let bye = req_of(&byes[0].1);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri, "sip:alice@10.0.0.2:5062");
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::AckTimeout
        }]
    );
}

#[test]
fn options_with_max_forwards_zero_gets_200() {
    let (mut ua, t0) = ua();
    let m = request("OPTIONS", "o1", "z9hG4bKopt", 1, "", "", "")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    send(&mut ua, t0, &m);
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![200]);
    let r = response(&out[0]);
    assert!(r.header(&HeaderName::Allow).unwrap().contains("INVITE"));
    assert_eq!(r.header(&HeaderName::Accept), Some("application/sdp"));
    assert_eq!(r.header(&HeaderName::Supported), Some("timer"));
}

#[test]
fn error_responses_481_483_501_420_405() {
    let (mut ua, t0) = ua();
    send(
        &mut ua,
        t0,
        &request("BYE", "x1", "z9hG4bK1", 2, "unknown", "", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![481]);
    let m = invite("x2", "z9hG4bK2").replace("Max-Forwards: 70", "Max-Forwards: 0");
    send(&mut ua, t0, &m);
    assert_eq!(statuses(&drain(&mut ua)), vec![483]);
    send(
        &mut ua,
        t0,
        &request("FOO", "x3", "z9hG4bK3", 1, "", "", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![501]);
    send(
        &mut ua,
        t0,
        &request(
            "INVITE",
            "x4",
            "z9hG4bK4",
            1,
            "",
            "Require: 100rel, timer\r\n",
            SDP_OFFER,
        ),
    );
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![420]);
    assert_eq!(
        response(&out[0]).header(&HeaderName::Unsupported),
        Some("100rel")
    );
    send(
        &mut ua,
        t0,
        &request("REGISTER", "x5", "z9hG4bK5", 1, "", "", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![405]);
    assert!(events(&mut ua).is_empty());
    assert_eq!(ua.stats().active_calls, 0);
}

/// RFC 3261 §8.2.2.3: every request but ACK and CANCEL is checked against Require, OPTIONS
/// and in-dialog requests included; known methods only (unknown ones get 501 first, §8.2.1).
#[test]
fn require_with_unknown_option_tag_is_420_for_every_method() {
    let (mut ua, t0) = ua();
    send(
        &mut ua,
        t0,
        &request("OPTIONS", "r1", "z9hG4bKr1", 1, "", "Require: foo\r\n", ""),
    );
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![420]);
    let r = response(&out[0]);
    assert_eq!(r.header(&HeaderName::Unsupported), Some("foo"));
    assert!(r.to_tag().is_some());
    // Understood option tags are fine.
    send(
        &mut ua,
        t0,
        &request(
            "OPTIONS",
            "r2",
            "z9hG4bKr2",
            1,
            "",
            "Require: timer\r\n",
            "",
        ),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![200]);
    // Unknown method: 501 before the Require check.
    send(
        &mut ua,
        t0,
        &request("FOO", "r3", "z9hG4bKr3", 1, "", "Require: foo\r\n", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![501]);

    // In a dialog: BYE and INFO with an unknown Require get 420 and leave the call up.
    let (call, tag) = established(&mut ua, t0, "r4", "");
    send(
        &mut ua,
        t0,
        &request(
            "BYE",
            "r4",
            "z9hG4bKr4b",
            2,
            &tag,
            "Require: foo, bar\r\n",
            "",
        ),
    );
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![420]);
    assert_eq!(
        response(&out[0]).header(&HeaderName::Unsupported),
        Some("foo, bar")
    );
    send(
        &mut ua,
        t0,
        &request("INFO", "r4", "z9hG4bKr4i", 3, &tag, "Require: foo\r\n", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![420]);
    assert!(events(&mut ua).is_empty());
    assert_eq!(ua.stats().active_calls, 1);
    // ACK and CANCEL are never checked: an ACK with Require is absorbed, a CANCEL matching no
    // transaction gets its usual 481.
    send(
        &mut ua,
        t0,
        &request("ACK", "r4", "z9hG4bKr4a", 2, &tag, "Require: foo\r\n", ""),
    );
    assert!(statuses(&drain(&mut ua)).is_empty());
    send(
        &mut ua,
        t0,
        &request("CANCEL", "r5", "z9hG4bKr5", 1, "", "Require: foo\r\n", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![481]);
    // Without the Require the BYE ends the call.
    send(
        &mut ua,
        t0,
        &request("BYE", "r4", "z9hG4bKr4c", 4, &tag, "", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![200]);
    assert!(
        events(&mut ua)
            .iter()
            .any(|e| matches!(e, frontdoor_sip::UaEvent::CallEnded { call: c, .. } if *c == call))
    );
}

fn established(
    ua: &mut frontdoor_sip::UserAgent,
    t0: std::time::Instant,
    cid: &str,
    extra: &str,
) -> (frontdoor_sip::CallHandle, String) {
    send(
        ua,
        t0,
        &request(
            "INVITE",
            cid,
            &format!("z9hG4bKe{cid}"),
            1,
            "",
            extra,
            SDP_OFFER,
        ),
    );
    let call = incoming(&events(ua));
    drain(ua);
    ua.answer(t0, call, &local_media()).unwrap();
    let out = drain(ua);
    let tag = response(&out[0]).to_tag().unwrap().to_owned();
    send(
        ua,
        t0,
        &request("ACK", cid, &format!("z9hG4bKa{cid}"), 1, &tag, "", ""),
    );
    drain(ua);
    events(ua);
    (call, tag)
}

#[test]
fn session_timer_422_and_expiry() {
    let (mut ua, t0) = ua();
    send(
        &mut ua,
        t0,
        &request(
            "INVITE",
            "s1",
            "z9hG4bKs1",
            1,
            "",
            "Session-Expires: 60\r\n",
            SDP_OFFER,
        ),
    );
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![422]);
    assert_eq!(response(&out[0]).header(&HeaderName::MinSe), Some("90"));
    let tag = response(&out[0]).to_tag().unwrap().to_owned();
    send(
        &mut ua,
        t0,
        &request("ACK", "s1", "z9hG4bKs1", 1, &tag, "", ""),
    );

    let (call, _tag) = established(
        &mut ua,
        t0,
        "s2",
        "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
    );
    // expiry at 120 - min(32, 40) = 88 s
    let out = run_until(&mut ua, t0 + secs(87.0));
    assert!(out.is_empty());
    let out = run_until(&mut ua, t0 + secs(88.2));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0 - t0).as_secs_f64(), 88.0);
    assert_eq!(req_of(&out[0].1).method, Method::Bye);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::SessionExpired
        }]
    );
}

#[test]
fn session_timer_refresh_keeps_call() {
    let (mut ua, t0) = ua();
    let (call, tag) = established(
        &mut ua,
        t0,
        "s3",
        "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
    );
    let t1 = t0 + secs(50.0);
    assert!(run_until(&mut ua, t1).is_empty());
    send(
        &mut ua,
        t1,
        &request(
            "UPDATE",
            "s3",
            "z9hG4bKupd",
            2,
            &tag,
            "Session-Expires: 90;refresher=uac\r\n",
            "",
        ),
    );
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(
        response(&out[0]).header(&HeaderName::SessionExpires),
        Some("90;refresher=uac")
    );
    assert!(
        run_until(&mut ua, t0 + secs(100.0))
            .iter()
            .all(|(_, t)| status(t).is_some())
    );
    assert!(events(&mut ua).is_empty());
    let out = run_until(&mut ua, t1 + secs(61.0));
    assert!(out.iter().any(|(_, t)| status(t).is_none()));
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::SessionExpired
        }]
    );
}

#[test]
fn ok_contains_session_expires_and_require() {
    let (mut ua, t0) = ua();
    send(
        &mut ua,
        t0,
        &request(
            "INVITE",
            "s4",
            "z9hG4bKs4",
            1,
            "",
            "Supported: timer\r\nSession-Expires: 1800\r\n",
            SDP_OFFER,
        ),
    );
    let call = incoming(&events(&mut ua));
    drain(&mut ua);
    ua.answer(t0, call, &local_media()).unwrap();
    let ok = response(&drain(&mut ua)[0]);
    assert_eq!(
        ok.header(&HeaderName::SessionExpires),
        Some("1800;refresher=uac")
    );
    assert_eq!(ok.header(&HeaderName::Require), Some("timer"));
}

#[test]
fn late_offer_answer_in_ack() {
    let (mut ua, t0) = ua();
    send(
        &mut ua,
        t0,
        &request("INVITE", "l1", "z9hG4bKl", 1, "", "", ""),
    );
    let evs = events(&mut ua);
    let call = incoming(&evs);
    assert!(matches!(&evs[0], UaEvent::IncomingCall { offer: None, .. }));
    drain(&mut ua);
    assert_eq!(ua.answer(t0, call, &local_media()).unwrap(), None);
    let ok = response(&drain(&mut ua)[0]);
    assert!(ok.has_sdp(), "our offer in the 200");
    let tag = ok.to_tag().unwrap().to_owned();
    let answer = SDP_OFFER.replace("0 8 101", "0 101");
    let ack = request("ACK", "l1", "z9hG4bKla", 1, &tag, "", &answer);
    send(&mut ua, t0, &ack);
    let evs = events(&mut ua);
    assert!(matches!(
        &evs[0],
        UaEvent::CallAnswered {
            ack_sdp: Some(_),
            ..
        }
    ));
    assert!(matches!(&evs[1], UaEvent::MediaUpdate { .. }));
}

#[test]
fn not_acceptable_offer_gets_488() {
    let (mut ua, t0) = ua();
    let offer = SDP_OFFER
        .replace("0 8 101", "18")
        .replace("a=rtpmap:101 telephone-event/8000\r\n", "");
    send(
        &mut ua,
        t0,
        &request("INVITE", "n1", "z9hG4bKn", 1, "", "", &offer),
    );
    let call = incoming(&events(&mut ua));
    drain(&mut ua);
    assert_eq!(
        ua.answer(t0, call, &local_media()),
        Err(frontdoor_sip::UaError::NotAcceptable)
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![488]);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::Rejected(488)
        }]
    );
}

#[test]
fn shedding_gives_503_without_call() {
    let (mut ua, t0) = ua();
    ua.set_shedding(Some(5));
    send(&mut ua, t0, &invite("sh", "z9hG4bKsh"));
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![503]);
    assert_eq!(response(&out[0]).header(&HeaderName::RetryAfter), Some("5"));
    assert!(events(&mut ua).is_empty());
    // retransmission: same 503, not counted as a new call
    send(&mut ua, t0, &invite("sh", "z9hG4bKsh"));
    assert_eq!(statuses(&drain(&mut ua)), vec![503]);
    assert_eq!(ua.stats().shed, 1);
    ua.set_shedding(None);
    send(&mut ua, t0, &invite("sh2", "z9hG4bKsh2"));
    assert_eq!(statuses(&drain(&mut ua)), vec![100]);
}

#[test]
fn reinvite_hold_info_and_cseq_check() {
    let (mut ua, t0) = ua();
    let (call, tag) = established(&mut ua, t0, "r1", "");
    let hold = SDP_OFFER
        .replace("a=sendrecv", "a=sendonly")
        .replace("o=- 1 1", "o=- 1 2");
    send(
        &mut ua,
        t0,
        &request("INVITE", "r1", "z9hG4bKre", 2, &tag, "", &hold),
    );
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![200]);
    let body = String::from_utf8(response(&out[0]).body.to_vec()).unwrap();
    assert!(body.contains("a=recvonly"), "{body}");
    let evs = events(&mut ua);
    assert!(matches!(&evs[0], UaEvent::Reinvite { offer: Some(_), .. }));
    match &evs[1] {
        UaEvent::MediaUpdate { media, .. } => {
            assert_eq!(media.direction, frontdoor_sip::sdp::Direction::RecvOnly)
        }
        e => panic!("{e:?}"),
    }
    send(
        &mut ua,
        t0,
        &request("ACK", "r1", "z9hG4bKrea", 2, &tag, "", ""),
    );
    assert!(drain(&mut ua).is_empty());
    assert!(events(&mut ua).is_empty(), "no second CallAnswered");
    let info = request("INFO", "r1", "z9hG4bKinfo", 3, &tag, "", "").replace(
        "Content-Length: 0",
        "Content-Type: application/dtmf-relay\r\nContent-Length: 10",
    ) + "Signal=5\r\n";
    send(&mut ua, t0, &info);
    assert_eq!(statuses(&drain(&mut ua)), vec![200]);
    match &events(&mut ua)[0] {
        UaEvent::Info {
            content_type, body, ..
        } => {
            assert_eq!(content_type, "application/dtmf-relay");
            assert_eq!(&body[..], b"Signal=5\r\n");
        }
        e => panic!("{e:?}"),
    }
    // lower CSeq → 500
    send(
        &mut ua,
        t0,
        &request("INFO", "r1", "z9hG4bKold", 2, &tag, "", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![500]);
    // hangup → BYE
    ua.hangup(t0, call).unwrap();
    let out = drain(&mut ua);
    assert_eq!(req_of(&out[0]).method, Method::Bye);
    assert_eq!(req_of(&out[0]).cseq().seq, 1);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::LocalBye
        }]
    );
}

#[test]
fn hangup_unanswered_incoming_sends_480() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("h1", "z9hG4bKh"));
    let call = incoming(&events(&mut ua));
    drain(&mut ua);
    ua.hangup(t0, call).unwrap();
    assert_eq!(statuses(&drain(&mut ua)), vec![480]);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::Rejected(480)
        }]
    );
}

#[test]
fn responses_without_rport_go_to_sent_by() {
    let (mut ua, t0) = ua();
    let m = request("OPTIONS", "p1", "z9hG4bKp", 1, "", "", "")
        .replace(";rport", "")
        .replace(PEER, "10.0.0.9");
    send(&mut ua, t0, &m);
    let out = drain(&mut ua);
    assert_eq!(out[0].destination, "10.0.0.9:5060".parse().unwrap());
}

#[test]
fn rfc2543_matching_without_magic_cookie() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("old", "oldbranch1"));
    let call = incoming(&events(&mut ua));
    drain(&mut ua);
    send(&mut ua, t0, &invite("old", "oldbranch1"));
    assert_eq!(statuses(&drain(&mut ua)), vec![100]);
    assert!(events(&mut ua).is_empty());
    ua.reject(t0, call, 603, None).unwrap();
    let tag = response(&drain(&mut ua)[0]).to_tag().unwrap().to_owned();
    send(
        &mut ua,
        t0,
        &request("ACK", "old", "oldbranch1", 1, &tag, "", ""),
    );
    assert!(drain(&mut ua).is_empty());
    assert!(
        run_until(&mut ua, t0 + secs(10.0)).is_empty(),
        "ACK stopped timer G"
    );
}

fn uac_setup() -> (
    frontdoor_sip::UserAgent,
    std::time::Instant,
    frontdoor_sip::CallHandle,
    frontdoor_sip::message::Request,
) {
    let (mut ua, t0) = ua();
    let call = ua
        .invite(t0, "sip:bob@10.0.0.2:5062", peer(), "ring", &local_media())
        .unwrap();
    let out = drain(&mut ua);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].destination, peer());
    let inv = req_of(&out[0]);
    assert_eq!(inv.method, Method::Invite);
    assert_eq!(inv.max_forwards(), Some(70));
    assert!(inv.has_sdp());
    (ua, t0, call, inv)
}

fn resp_to(inv: &frontdoor_sip::message::Request, status: u16, tag: &str, body: &str) -> String {
    let via = inv.header(&HeaderName::Via).unwrap();
    let from = inv.header(&HeaderName::From).unwrap();
    let to = inv.header(&HeaderName::To).unwrap();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "SIP/2.0 {status} X\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to};tag={tag}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n\
Contact: <sip:bob@10.0.0.2:5062>\r\nRecord-Route: <sip:proxy1;lr>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        inv.call_id(),
        inv.cseq().seq,
        inv.cseq().method,
        body.len()
    )
}

#[test]
fn uac_invite_200_ack_bye() {
    let (mut ua, t0, call, inv) = uac_setup();
    // Timer A retransmits the INVITE until a response.
    let re = run_until(&mut ua, t0 + secs(0.6));
    assert_eq!(re.len(), 1);
    send(&mut ua, t0, &resp_to(&inv, 180, "bobtag", ""));
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::OutgoingProgress { call, status: 180 }]
    );
    send(&mut ua, t0, &resp_to(&inv, 200, "bobtag", SDP_OFFER));
    let out = drain(&mut ua);
    assert_eq!(out.len(), 1);
    let ack = req_of(&out[0]);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.cseq().seq, inv.cseq().seq);
    assert_eq!(ack.uri, "sip:bob@10.0.0.2:5062");
    assert_eq!(ack.route(), vec!["<sip:proxy1;lr>"]);
    let evs = events(&mut ua);
    assert!(matches!(
        &evs[0],
        UaEvent::OutgoingAnswered {
            answer: Some(_),
            ..
        }
    ));
    assert!(matches!(&evs[1], UaEvent::MediaUpdate { .. }));
    // 2xx retransmission → same ACK again
    send(&mut ua, t0, &resp_to(&inv, 200, "bobtag", SDP_OFFER));
    let out = drain(&mut ua);
    assert_eq!(req_of(&out[0]).method, Method::Ack);
    ua.hangup(t0, call).unwrap();
    let out = drain(&mut ua);
    let bye = req_of(&out[0]);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.to_tag(), Some("bobtag"));
    assert_eq!(bye.cseq().seq, 2);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::LocalBye
        }]
    );
}

#[test]
fn uac_remote_rejection_and_timeout() {
    let (mut ua, t0, call, inv) = uac_setup();
    send(&mut ua, t0, &resp_to(&inv, 486, "bobtag", ""));
    let out = drain(&mut ua);
    assert_eq!(
        req_of(&out[0]).method,
        Method::Ack,
        "transaction ACKs the non-2xx"
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::RemoteRejected(486)
        }]
    );

    let (mut ua, t0, call, _inv) = uac_setup();
    run_until(&mut ua, t0 + secs(33.0));
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::Timeout
        }]
    );
}

#[test]
fn uac_cancel_early_call() {
    let (mut ua, t0, call, inv) = uac_setup();
    send(&mut ua, t0, &resp_to(&inv, 180, "bobtag", ""));
    events(&mut ua);
    ua.hangup(t0, call).unwrap();
    let out = drain(&mut ua);
    let cancel = req_of(&out[0]);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.branch(), inv.branch());
    assert_eq!(cancel.cseq().seq, inv.cseq().seq);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::LocalBye
        }]
    );
    send(&mut ua, t0, &resp_to(&inv, 487, "bobtag", ""));
    let out = drain(&mut ua);
    assert_eq!(req_of(&out[0]).method, Method::Ack);
    assert!(events(&mut ua).is_empty(), "CallEnded only once");
    assert_eq!(ua.stats().active_calls, 0);
}

#[test]
fn uac_large_invite_goes_tcp_and_bye_from_remote() {
    let (mut ua, t0) = ua();
    let long = format!("sip:{}@10.0.0.2", "a".repeat(1400));
    let call = ua
        .invite(t0, &long, peer(), "ring", &local_media())
        .unwrap();
    let out = drain(&mut ua);
    assert_eq!(out[0].transport, frontdoor_sip::Transport::Tcp);
    assert!(req_of(&out[0]).via().transport == "TCP");
    assert!(
        run_until(&mut ua, t0 + secs(1.0)).is_empty(),
        "no timer A over TCP"
    );
    let _ = call;
}

#[test]
fn many_calls_leave_no_state() {
    let (mut ua, t0) = ua();
    for i in 0..500 {
        let cid = format!("m{i}");
        let (call, tag) = established(&mut ua, t0, &cid, "");
        send(
            &mut ua,
            t0,
            &request("BYE", &cid, &format!("z9hG4bKmb{i}"), 2, &tag, "", ""),
        );
        drain(&mut ua);
        assert_eq!(
            events(&mut ua),
            vec![UaEvent::CallEnded {
                call,
                cause: EndCause::RemoteBye
            }]
        );
    }
    assert_eq!(ua.stats().active_calls, 0);
    run_until(&mut ua, t0 + secs(100.0));
    assert_eq!(ua.stats().active_transactions, 0);
    assert!(ua.poll_timeout().is_none());
}

#[test]
fn session_timer_uas_refresher_sends_update() {
    let (mut ua, t0) = ua();
    let (call, _tag) = established(
        &mut ua,
        t0,
        "su",
        "Supported: timer\r\nSession-Expires: 100;refresher=uas\r\n",
    );
    let out = run_until(&mut ua, t0 + secs(50.1));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0 - t0).as_secs_f64(), 50.0);
    let upd = req_of(&out[0].1);
    assert_eq!(upd.method, Method::Update);
    assert_eq!(
        upd.header(&HeaderName::SessionExpires),
        Some("100;refresher=uas")
    );
    // Peer answers 200: call continues.
    let via = upd.header(&HeaderName::Via).unwrap();
    let resp = format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: su\r\nCSeq: {} UPDATE\r\nContent-Length: 0\r\n\r\n",
        upd.header(&HeaderName::From).unwrap(),
        upd.header(&HeaderName::To).unwrap(),
        upd.cseq().seq
    );
    send(&mut ua, t0 + secs(50.2), &resp);
    assert!(events(&mut ua).is_empty());
    // Next refresh gets 481 → call ends.
    let out = run_until(&mut ua, t0 + secs(100.1));
    let upd = req_of(&out.last().unwrap().1);
    assert_eq!(upd.method, Method::Update);
    let resp = format!(
        "SIP/2.0 481 No\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: su\r\nCSeq: {} UPDATE\r\nContent-Length: 0\r\n\r\n",
        upd.header(&HeaderName::Via).unwrap(),
        upd.header(&HeaderName::From).unwrap(),
        upd.header(&HeaderName::To).unwrap(),
        upd.cseq().seq
    );
    send(&mut ua, t0 + secs(100.2), &resp);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::SessionExpired
        }]
    );
}

#[test]
fn tcp_call_has_no_retransmissions_and_transport_error_ends_it() {
    let (mut ua, t0) = ua();
    let inv = invite("tcp1", "z9hG4bKtcp").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    ua.handle_datagram(t0, frontdoor_sip::Transport::Tcp, peer(), inv.as_bytes());
    let out = drain(&mut ua);
    assert_eq!(out[0].transport, frontdoor_sip::Transport::Tcp);
    let call = incoming(&events(&mut ua));
    ua.answer(t0, call, &local_media()).unwrap();
    assert_eq!(statuses(&drain(&mut ua)), vec![200]);
    // No 2xx retransmission over TCP.
    assert!(run_until(&mut ua, t0 + secs(20.0)).is_empty());
    ua.handle_transport_error(t0 + secs(20.0), frontdoor_sip::Transport::Tcp, peer());
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::TransportError
        }]
    );
    assert_eq!(ua.stats().active_calls, 0);
}

#[test]
fn update_and_options_in_dialog() {
    let (mut ua, t0) = ua();
    let (_call, tag) = established(&mut ua, t0, "ud", "");
    send(
        &mut ua,
        t0,
        &request("OPTIONS", "ud", "z9hG4bKudo", 2, &tag, "", ""),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![200]);
    send(
        &mut ua,
        t0,
        &request("UPDATE", "ud", "z9hG4bKudu", 3, &tag, "", SDP_OFFER),
    );
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![200]);
    assert!(response(&out[0]).has_sdp());
    assert!(matches!(&events(&mut ua)[0], UaEvent::MediaUpdate { .. }));
}

#[test]
fn bye_in_early_dialog_gets_200_and_invite_487() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("eb", "z9hG4bKeb"));
    let call = incoming(&events(&mut ua));
    ua.ring(t0, call).unwrap();
    let tag = response(&drain(&mut ua)[1]).to_tag().unwrap().to_owned();
    send(
        &mut ua,
        t0,
        &request("BYE", "eb", "z9hG4bKebb", 2, &tag, "", ""),
    );
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![200, 487]);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::RemoteBye
        }]
    );
}

#[test]
fn merged_request_on_other_branch_gets_482() {
    let (mut ua, t0) = ua();
    send(&mut ua, t0, &invite("mg", "z9hG4bKmg1"));
    let call = incoming(&events(&mut ua));
    drain(&mut ua);
    send(&mut ua, t0, &invite("mg", "z9hG4bKmg2"));
    assert_eq!(statuses(&drain(&mut ua)), vec![482]);
    assert!(events(&mut ua).is_empty());
    ua.reject(t0, call, 486, None).unwrap();
    drain(&mut ua);
    events(&mut ua);
    // After the call is gone a new INVITE with that Call-ID is a new call again.
    send(
        &mut ua,
        t0,
        &invite("mg", "z9hG4bKmg3").replace("CSeq: 1 INVITE", "CSeq: 2 INVITE"),
    );
    assert_eq!(statuses(&drain(&mut ua)), vec![100]);
}

/// Establishes an outgoing call answered by bob; returns the UA with its queues drained.
fn uac_established() -> (
    frontdoor_sip::UserAgent,
    std::time::Instant,
    frontdoor_sip::CallHandle,
) {
    let (mut ua, t0, call, inv) = uac_setup();
    send(&mut ua, t0, &resp_to(&inv, 200, "bobtag", SDP_OFFER));
    drain(&mut ua);
    events(&mut ua);
    (ua, t0, call)
}

#[test]
fn uac_reinvite_hold_resume_2xx_retransmission_and_failure() {
    let (mut ua, t0, call) = uac_established();
    assert!(ua.call_id(call).is_some_and(|id| !id.is_empty()));
    let mut hold = local_media();
    hold.direction = frontdoor_sip::sdp::Direction::SendOnly;
    ua.reinvite(t0, call, &hold).unwrap();
    assert_eq!(
        ua.reinvite(t0, call, &hold),
        Err(frontdoor_sip::UaError::InvalidState),
        "one re-INVITE at a time"
    );
    let out = drain(&mut ua);
    assert_eq!(out.len(), 1);
    let re = req_of(&out[0]);
    assert_eq!(re.method, Method::Invite);
    assert_eq!(re.uri, "sip:bob@10.0.0.2:5062", "to the remote target");
    assert_eq!(re.cseq().seq, 2);
    assert_eq!(re.to_tag(), Some("bobtag"));
    assert_eq!(re.route(), vec!["<sip:proxy1;lr>"]);
    assert!(re.header(&HeaderName::Contact).is_some());
    let body = String::from_utf8_lossy(&re.body).into_owned();
    assert!(body.contains("a=sendonly"), "{body}");
    // Timer A retransmits it until answered.
    assert_eq!(run_until(&mut ua, t0 + secs(0.6)).len(), 1);
    let answer = SDP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
    let ok = resp_to(&re, 200, "bobtag", &answer).replace(";tag=bobtag;tag=bobtag", ";tag=bobtag");
    send(&mut ua, t0, &ok);
    let out = drain(&mut ua);
    assert_eq!(out.len(), 1);
    let ack = req_of(&out[0]);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.cseq().seq, 2, "the ACK carries the re-INVITE's CSeq");
    match events(&mut ua).as_slice() {
        [UaEvent::MediaUpdate { call: c, media }] => {
            assert_eq!(*c, call);
            assert_eq!(media.direction, frontdoor_sip::sdp::Direction::SendOnly);
        }
        other => panic!("expected a MediaUpdate, got {other:?}"),
    }
    // A retransmitted 2xx gets the same ACK again and no second event.
    send(&mut ua, t0, &ok);
    let out = drain(&mut ua);
    assert_eq!(out.len(), 1);
    assert_eq!(req_of(&out[0]).method, Method::Ack);
    assert!(events(&mut ua).is_empty());

    // Resume, and the peer refuses (glare): ReinviteFailed, the call stays up.
    ua.reinvite(t0, call, &local_media()).unwrap();
    let re = req_of(&drain(&mut ua)[0]);
    assert_eq!(re.cseq().seq, 3);
    assert!(String::from_utf8_lossy(&re.body).contains("a=sendrecv"));
    let busy = resp_to(&re, 491, "bobtag", "").replace(";tag=bobtag;tag=bobtag", ";tag=bobtag");
    send(&mut ua, t0, &busy);
    let out = drain(&mut ua);
    assert_eq!(req_of(&out[0]).method, Method::Ack, "non-2xx ACKed");
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::ReinviteFailed { call, status: 491 }]
    );
    assert_eq!(ua.stats().active_calls, 1);
    // A new attempt is allowed after the failure.
    ua.reinvite(t0, call, &local_media()).unwrap();
    assert_eq!(req_of(&drain(&mut ua)[0]).cseq().seq, 4);
}

#[test]
fn uac_reinvite_timeout_ends_the_call_with_bye() {
    let (mut ua, t0, call) = uac_established();
    ua.reinvite(t0, call, &local_media()).unwrap();
    drain(&mut ua);
    let out = run_until(&mut ua, t0 + secs(40.0));
    assert!(
        out.iter()
            .any(|(_, t)| matches!(parsed(t), frontdoor_sip::message::SipMessage::Request(r) if r.method == Method::Bye)),
        "BYE after the re-INVITE timed out"
    );
    assert!(events(&mut ua).contains(&UaEvent::CallEnded {
        call,
        cause: EndCause::Timeout
    }));
    assert_eq!(
        ua.reinvite(t0, call, &local_media()),
        Err(frontdoor_sip::UaError::UnknownCall)
    );
}

#[test]
fn a_407_carries_the_challenges_and_proxy_authorization_reaches_the_application() {
    let (mut ua, t0) = ua();
    let creds = "Digest username=\"agent1\", realm=\"frontdoor\", nonce=\"n\", uri=\"sip:*21@h\", response=\"r\"";
    send(
        &mut ua,
        t0,
        &request(
            "INVITE",
            "fc1",
            "z9hG4bKfc",
            1,
            "",
            &format!("Proxy-Authorization: {creds}\r\n"),
            SDP_OFFER,
        ),
    );
    let evs = events(&mut ua);
    let Some(UaEvent::IncomingCall { call, headers, .. }) = evs.first() else {
        panic!("{evs:?}");
    };
    assert!(
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("Proxy-Authorization") && v == creds),
        "{headers:?}"
    );
    drain(&mut ua);
    let challenges = [
        "Digest realm=\"frontdoor\", nonce=\"a\", algorithm=SHA-256, qop=\"auth\"",
        "Digest realm=\"frontdoor\", nonce=\"a\", algorithm=MD5, qop=\"auth\"",
    ];
    ua.reject_with_headers(
        t0,
        *call,
        407,
        &challenges.map(|c| ("Proxy-Authenticate", c)),
    )
    .unwrap();
    let out = drain(&mut ua);
    assert_eq!(statuses(&out), vec![407]);
    let text = String::from_utf8_lossy(&out[0].payload).into_owned();
    for c in challenges {
        assert!(
            text.contains(&format!("Proxy-Authenticate: {c}\r\n")),
            "{text}"
        );
    }
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call: *call,
            cause: EndCause::Rejected(407)
        }]
    );
}
