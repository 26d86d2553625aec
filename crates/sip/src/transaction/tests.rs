#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]
//! State machine and timer tests with simulated time.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::message::{SipMessage, parse};

fn cfg() -> TimerConfig {
    TimerConfig::default()
}

fn resp(status: u16) -> Response {
    let s = format!(
        "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    match parse(s.as_bytes()).unwrap() {
        SipMessage::Response(r) => r,
        SipMessage::Request(_) => unreachable!(),
    }
}

fn ack_tpl() -> AckTemplate {
    AckTemplate {
        uri: "sip:c@d".into(),
        via: "SIP/2.0/UDP h;branch=z9hG4bKa".into(),
        from: "<sip:a@b>;tag=1".into(),
        call_id: "x".into(),
        cseq: 1,
        routes: vec![],
    }
}

fn sends(out: &[TxAction]) -> usize {
    out.iter()
        .filter(|a| matches!(a, TxAction::Send(_)))
        .count()
}

fn has(out: &[TxAction], a: &TxAction) -> bool {
    out.iter().any(|x| x == a)
}

#[test]
fn invite_client_timer_a_doubles_and_b_times_out() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = InviteClient::new(
        t0,
        Bytes::from_static(b"INV"),
        ack_tpl(),
        false,
        cfg(),
        &mut out,
    );
    assert_eq!(sends(&out), 1);
    let mut expected = t0 + Duration::from_millis(500);
    let mut interval = Duration::from_millis(500);
    for _ in 0..6 {
        let at = tx.timer(TimerKind::A).unwrap();
        assert_eq!(at, expected);
        out.clear();
        tx.on_timer(at, TimerKind::A, at, &mut out);
        assert_eq!(sends(&out), 1);
        interval *= 2;
        expected = at + interval;
    }
    let b = tx.timer(TimerKind::B).unwrap();
    assert_eq!(b, t0 + Duration::from_secs(32));
    out.clear();
    tx.on_timer(b, TimerKind::B, b, &mut out);
    assert!(has(&out, &TxAction::Timeout));
    assert!(has(&out, &TxAction::Terminated));
    assert_eq!(tx.state(), TxState::Terminated);
}

#[test]
fn invite_client_non2xx_acks_and_timer_d() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = InviteClient::new(
        t0,
        Bytes::from_static(b"INV"),
        ack_tpl(),
        false,
        cfg(),
        &mut out,
    );
    out.clear();
    tx.on_response(t0, resp(180), &mut out);
    assert_eq!(tx.state(), TxState::Proceeding);
    assert!(tx.timer(TimerKind::A).is_none());
    out.clear();
    tx.on_response(t0, resp(486), &mut out);
    assert_eq!(tx.state(), TxState::Completed);
    let ack = out
        .iter()
        .find_map(|a| {
            if let TxAction::Send(b) = a {
                Some(b.clone())
            } else {
                None
            }
        })
        .unwrap();
    let SipMessage::Request(ack) = parse(&ack).unwrap() else {
        panic!()
    };
    assert_eq!(ack.method, crate::message::Method::Ack);
    assert_eq!(ack.to_tag(), Some("2"));
    assert_eq!(ack.cseq().seq, 1);
    // retransmitted 486 -> ACK again, not to TU
    out.clear();
    tx.on_response(t0, resp(486), &mut out);
    assert_eq!(sends(&out), 1);
    assert!(!out.iter().any(|a| matches!(a, TxAction::Response(_))));
    let d = tx.timer(TimerKind::D).unwrap();
    assert_eq!(d, t0 + Duration::from_secs(32));
    out.clear();
    tx.on_timer(d, TimerKind::D, d, &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
}

#[test]
fn invite_client_2xx_accepted_timer_m() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = InviteClient::new(
        t0,
        Bytes::from_static(b"INV"),
        ack_tpl(),
        false,
        cfg(),
        &mut out,
    );
    out.clear();
    tx.on_response(t0, resp(200), &mut out);
    assert_eq!(tx.state(), TxState::Accepted);
    assert_eq!(sends(&out), 0, "ACK for 2xx is not the transaction's job");
    out.clear();
    tx.on_response(t0, resp(200), &mut out);
    assert!(
        out.iter().any(|a| matches!(a, TxAction::Response(_))),
        "2xx retransmission passes to TU"
    );
    let m = tx.timer(TimerKind::M).unwrap();
    assert_eq!(m, t0 + Duration::from_secs(32));
    // stale timer (wrong deadline) is ignored
    out.clear();
    tx.on_timer(m, TimerKind::M, t0, &mut out);
    assert!(out.is_empty());
    tx.on_timer(m, TimerKind::M, m, &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
}

#[test]
fn invite_client_reliable_no_a_and_zero_d() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = InviteClient::new(
        t0,
        Bytes::from_static(b"INV"),
        ack_tpl(),
        true,
        cfg(),
        &mut out,
    );
    assert!(tx.timer(TimerKind::A).is_none());
    assert!(tx.timer(TimerKind::B).is_some());
    out.clear();
    tx.on_response(t0, resp(503), &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
    assert_eq!(sends(&out), 1);
}

#[test]
fn non_invite_client_timer_e_caps_at_t2_and_f() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = NonInviteClient::new(t0, Bytes::from_static(b"BYE"), false, cfg(), &mut out);
    let expect = [500u64, 1000, 2000, 4000, 4000, 4000];
    let mut now = t0;
    for ms in expect {
        let at = tx.timer(TimerKind::E).unwrap();
        assert_eq!(at - now, Duration::from_millis(ms));
        now = at;
        out.clear();
        tx.on_timer(now, TimerKind::E, at, &mut out);
        assert_eq!(sends(&out), 1);
    }
    // provisional: E goes to T2
    out.clear();
    tx.on_response(now, resp(100), &mut out);
    assert_eq!(tx.state(), TxState::Proceeding);
    let at = tx.timer(TimerKind::E).unwrap();
    tx.on_timer(at, TimerKind::E, at, &mut out);
    assert_eq!(tx.timer(TimerKind::E).unwrap() - at, Duration::from_secs(4));
    let f = tx.timer(TimerKind::F).unwrap();
    assert_eq!(f, t0 + Duration::from_secs(32));
    out.clear();
    tx.on_timer(f, TimerKind::F, f, &mut out);
    assert!(has(&out, &TxAction::Timeout));
}

#[test]
fn non_invite_client_final_timer_k() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = NonInviteClient::new(t0, Bytes::from_static(b"BYE"), false, cfg(), &mut out);
    out.clear();
    tx.on_response(t0, resp(200), &mut out);
    assert_eq!(tx.state(), TxState::Completed);
    assert!(tx.timer(TimerKind::E).is_none());
    let k = tx.timer(TimerKind::K).unwrap();
    assert_eq!(k, t0 + Duration::from_secs(5));
    out.clear();
    tx.on_response(t0, resp(200), &mut out);
    assert!(out.is_empty(), "retransmitted final absorbed");
    tx.on_timer(k, TimerKind::K, k, &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
    // reliable: K = 0
    let mut out = vec![];
    let mut tx = NonInviteClient::new(t0, Bytes::from_static(b"BYE"), true, cfg(), &mut out);
    assert!(tx.timer(TimerKind::E).is_none());
    tx.on_response(t0, resp(200), &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
}

#[test]
fn invite_server_non2xx_timer_g_h() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = InviteServer::new(false, cfg());
    tx.send_response(t0, 100, Bytes::from_static(b"100"), &mut out);
    assert_eq!(tx.state(), TxState::Proceeding);
    out.clear();
    assert!(tx.on_retransmission(&mut out));
    assert_eq!(out, vec![TxAction::Send(Bytes::from_static(b"100"))]);
    out.clear();
    tx.send_response(t0, 486, Bytes::from_static(b"486"), &mut out);
    assert_eq!(tx.state(), TxState::Completed);
    let mut now = t0;
    for ms in [500u64, 1000, 2000, 4000, 4000] {
        let g = tx.timer(TimerKind::G).unwrap();
        assert_eq!(g - now, Duration::from_millis(ms));
        now = g;
        out.clear();
        tx.on_timer(now, TimerKind::G, g, &mut out);
        assert_eq!(out[0], TxAction::Send(Bytes::from_static(b"486")));
    }
    let h = tx.timer(TimerKind::H).unwrap();
    assert_eq!(h, t0 + Duration::from_secs(32));
    out.clear();
    tx.on_timer(h, TimerKind::H, h, &mut out);
    assert!(has(&out, &TxAction::Timeout));
    assert_eq!(tx.state(), TxState::Terminated);
}

#[test]
fn invite_server_ack_confirmed_timer_i() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = InviteServer::new(false, cfg());
    tx.send_response(t0, 487, Bytes::from_static(b"487"), &mut out);
    tx.on_ack(t0, &mut out);
    assert_eq!(tx.state(), TxState::Confirmed);
    assert!(tx.timer(TimerKind::G).is_none());
    out.clear();
    assert!(!tx.on_retransmission(&mut out));
    let i = tx.timer(TimerKind::I).unwrap();
    assert_eq!(i, t0 + Duration::from_secs(5));
    tx.on_timer(i, TimerKind::I, i, &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
    // reliable: no G, I = 0
    let mut out = vec![];
    let mut tx = InviteServer::new(true, cfg());
    tx.send_response(t0, 487, Bytes::from_static(b"487"), &mut out);
    assert!(tx.timer(TimerKind::G).is_none());
    assert!(tx.timer(TimerKind::H).is_some());
    tx.on_ack(t0, &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
}

#[test]
fn invite_server_2xx_accepted_timer_l() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = InviteServer::new(false, cfg());
    tx.send_response(t0, 200, Bytes::from_static(b"200"), &mut out);
    assert_eq!(tx.state(), TxState::Accepted);
    out.clear();
    assert!(
        !tx.on_retransmission(&mut out),
        "INVITE retransmission absorbed in Accepted"
    );
    tx.send_response(t0, 200, Bytes::from_static(b"200"), &mut out);
    assert_eq!(sends(&out), 1, "TU 2xx retransmissions go out");
    out.clear();
    tx.on_ack(t0, &mut out);
    assert_eq!(out, vec![TxAction::PassAck]);
    let l = tx.timer(TimerKind::L).unwrap();
    assert_eq!(l, t0 + Duration::from_secs(32));
    out.clear();
    tx.on_timer(l, TimerKind::L, l, &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
}

#[test]
fn non_invite_server_timer_j() {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut tx = NonInviteServer::new(false, cfg());
    assert!(!tx.on_retransmission(&mut out));
    tx.send_response(t0, 200, Bytes::from_static(b"200"), &mut out);
    assert_eq!(tx.state(), TxState::Completed);
    out.clear();
    assert!(tx.on_retransmission(&mut out));
    let j = tx.timer(TimerKind::J).unwrap();
    assert_eq!(j, t0 + Duration::from_secs(32));
    out.clear();
    tx.on_timer(j, TimerKind::J, j, &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
    let mut tx = NonInviteServer::new(true, cfg());
    tx.send_response(t0, 200, Bytes::from_static(b"200"), &mut out);
    assert_eq!(tx.state(), TxState::Terminated);
}

#[test]
fn custom_t1_scales_timers() {
    let t0 = Instant::now();
    let c = TimerConfig {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        t4: Duration::from_secs(1),
    };
    let mut out = vec![];
    let tx = NonInviteClient::new(t0, Bytes::new(), false, c, &mut out);
    assert_eq!(
        tx.timer(TimerKind::F).unwrap(),
        t0 + Duration::from_millis(6400)
    );
}
