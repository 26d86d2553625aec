//! REGISTER through the UA into the registrar, and the UAC answering 401/407 challenges.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use frontdoor_sip::auth::{
    self, Algorithm, Challenge, ClientCredentials, DigestConfig, DigestServer, UserSecret, Verdict,
};
use frontdoor_sip::message::{HeaderName, Method, Response};
use frontdoor_sip::registrar::{Registrar, RegistrarConfig, RegistrarEvent};
use frontdoor_sip::{EndCause, UaEvent, UserAgent};

fn digest_server(t0: Instant, algorithms: Vec<Algorithm>) -> DigestServer {
    DigestServer::new(
        DigestConfig {
            realm: "frontdoor".into(),
            secret: [9; 32],
            nonce_ttl: Duration::from_secs(300),
            algorithms,
        },
        t0,
    )
}

fn setup() -> (UserAgent, Registrar, Instant) {
    let (mut ua, t0) = common::ua();
    ua.set_accept_register(true);
    let mut reg = Registrar::new(
        RegistrarConfig::default(),
        digest_server(t0, vec![Algorithm::Sha256, Algorithm::Md5]),
    );
    reg.set_user("alice", UserSecret::password("wonderland"));
    reg.set_user("bob", UserSecret::password("builder"));
    (ua, reg, t0)
}

/// A REGISTER from alice's phone (the peer).
fn register(user: &str, call_id: &str, cseq: u32, branch: &str, extra: &str) -> String {
    format!(
        "REGISTER sip:10.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP {PEER};branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:{user}@10.0.0.1>;tag=regtag\r\n\
To: <sip:{user}@10.0.0.1>\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n\
{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Delivers REGISTERs to the registrar and its answers to the UA; returns what the UA sent.
fn exchange(ua: &mut UserAgent, reg: &mut Registrar, now: Instant, msg: &str) -> Vec<Response> {
    send(ua, now, msg);
    for ev in events(ua) {
        if let UaEvent::Register {
            tx,
            request,
            source,
            transport,
        } = ev
        {
            let r = reg.handle_register(now, &request, source, transport);
            let headers: Vec<(&str, &str)> =
                r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            ua.respond(now, tx, r.status, &headers).unwrap();
        }
    }
    drain(ua).iter().map(response).collect()
}

fn header_values<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers
        .0
        .iter()
        .filter(|h| h.name.matches(name))
        .map(|h| h.value.as_str())
        .collect()
}

fn authorization(r: &Response, user: &str, pass: &str, nc: u32, prefer_md5: bool) -> String {
    let values = header_values(r, "WWW-Authenticate");
    let ch = if prefer_md5 {
        values
            .iter()
            .map(|v| Challenge::parse(v).unwrap())
            .find(|c| c.algorithm == Algorithm::Md5)
            .unwrap()
    } else {
        Challenge::select(values).unwrap()
    };
    let creds = ClientCredentials {
        username: user.into(),
        password: pass.into(),
    };
    let a = auth::authorize(&ch, &creds, "REGISTER", "sip:10.0.0.1", b"", "cn0nce", nc);
    format!("Authorization: {}\r\n", a.to_header_value())
}

fn frontdoor_sip_request(method: &str, call_id: &str, branch: &str) -> String {
    request(method, call_id, branch, 1, "", "", "")
}

fn reg_events(reg: &mut Registrar) -> Vec<RegistrarEvent> {
    std::iter::from_fn(|| reg.poll_event()).collect()
}

#[test]
fn register_challenge_then_200_with_contacts_refresh_and_expiry() {
    let (mut ua, mut reg, t0) = setup();
    let contact = "Contact: <sip:alice@10.0.0.2:5062>\r\nExpires: 120\r\n";
    let out = exchange(
        &mut ua,
        &mut reg,
        t0,
        &register("alice", "r1", 1, "z9hG4bKr1", contact),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, 401);
    assert!(out[0].to_tag().is_some(), "final response carries a To tag");
    // Via stamped with where the request really came from (RFC 3581).
    assert_eq!(out[0].via().rport(), Some(5062));
    assert_eq!(out[0].via().received(), Some("10.0.0.2"));
    let ch = header_values(&out[0], "WWW-Authenticate");
    assert_eq!(ch.len(), 2);
    assert!(ch[0].contains("SHA-256") && ch[1].contains("MD5"));
    assert!(reg_events(&mut reg).is_empty());
    assert_eq!(reg.contacts("alice").len(), 0);

    // SHA-256 credentials.
    let authz = authorization(&out[0], "alice", "wonderland", 1, false);
    assert!(authz.contains("algorithm=SHA-256"));
    let out = exchange(
        &mut ua,
        &mut reg,
        t0,
        &register("alice", "r1", 2, "z9hG4bKr2", &format!("{contact}{authz}")),
    );
    assert_eq!(out[0].status, 200);
    assert_eq!(
        header_values(&out[0], "Contact"),
        vec!["<sip:alice@10.0.0.2:5062>;expires=120"]
    );
    let evs = reg_events(&mut reg);
    assert!(
        matches!(&evs[..], [RegistrarEvent::Registered { user, expires: 120, refresh: false, contacts: 1, algorithm: Algorithm::Sha256, .. }] if user == "alice"),
        "{evs:?}"
    );
    // A retransmission of that REGISTER is answered by the transaction, not the registrar.
    let out = exchange(
        &mut ua,
        &mut reg,
        t0,
        &register("alice", "r1", 2, "z9hG4bKr2", &format!("{contact}{authz}")),
    );
    assert_eq!(out[0].status, 200);
    assert!(reg_events(&mut reg).is_empty());
    assert_eq!(reg.stats().accepted, 1);

    // A second contact (MD5 this time, expires as a Contact parameter).
    let t1 = t0 + Duration::from_secs(30);
    let out = exchange(
        &mut ua,
        &mut reg,
        t1,
        &register("alice", "r2", 1, "z9hG4bKr3", ""),
    );
    let authz = authorization(&out[0], "alice", "wonderland", 1, true);
    assert!(authz.contains("algorithm=MD5"));
    let out = exchange(
        &mut ua,
        &mut reg,
        t1,
        &register(
            "alice",
            "r2",
            2,
            "z9hG4bKr4",
            &format!("Contact: <sip:alice@10.0.0.3:5070>;expires=600\r\n{authz}"),
        ),
    );
    assert_eq!(out[0].status, 200);
    let mut listed = header_values(&out[0], "Contact");
    listed.sort();
    assert_eq!(
        listed,
        vec![
            "<sip:alice@10.0.0.2:5062>;expires=90",
            "<sip:alice@10.0.0.3:5070>;expires=600"
        ]
    );
    assert_eq!(reg.contacts("alice").len(), 2);
    reg_events(&mut reg);

    // Expiry is driven by `now`: the first contact goes at t0+120.
    assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_secs(120)));
    reg.handle_timeout(t0 + Duration::from_secs(119));
    assert!(reg_events(&mut reg).is_empty());
    reg.handle_timeout(t0 + Duration::from_secs(120));
    assert_eq!(
        reg_events(&mut reg),
        vec![RegistrarEvent::Expired {
            user: "alice".into(),
            contact: "sip:alice@10.0.0.2:5062".into(),
            contacts: 1
        }]
    );
    assert_eq!(reg.contacts("alice").len(), 1);
    reg.handle_timeout(t1 + Duration::from_secs(600));
    assert!(matches!(
        &reg_events(&mut reg)[..],
        [RegistrarEvent::Expired { contacts: 0, .. }]
    ));
    assert_eq!(reg.registered_users(), 0);
}

/// Registers `contacts` for alice with a fresh challenge; returns the 200.
fn registered(
    ua: &mut UserAgent,
    reg: &mut Registrar,
    now: Instant,
    call_id: &str,
    cseq: u32,
    extra: &str,
) -> Response {
    let b1 = format!("z9hG4bK{call_id}{cseq}a");
    let b2 = format!("z9hG4bK{call_id}{cseq}b");
    let out = exchange(ua, reg, now, &register("alice", call_id, cseq, &b1, extra));
    assert_eq!(out[0].status, 401);
    let authz = authorization(&out[0], "alice", "wonderland", 1, false);
    let out = exchange(
        ua,
        reg,
        now,
        &register("alice", call_id, cseq + 1, &b2, &format!("{extra}{authz}")),
    );
    out.into_iter().next().unwrap()
}

#[test]
fn unregister_star_min_expires_ordering_and_queries() {
    let (mut ua, mut reg, t0) = setup();
    let two = "Contact: <sip:a@10.0.0.2:1>, <sip:a@10.0.0.2:2>;expires=300\r\n";
    let ok = registered(&mut ua, &mut reg, t0, "c1", 1, two);
    assert_eq!(ok.status, 200);
    assert_eq!(header_values(&ok, "Contact").len(), 2);
    assert_eq!(reg_events(&mut reg).len(), 2);

    // Too short: 423 with Min-Expires, nothing changed.
    let ok = registered(
        &mut ua,
        &mut reg,
        t0,
        "c2",
        1,
        "Contact: <sip:a@10.0.0.2:3>;expires=10\r\n",
    );
    assert_eq!(ok.status, 423);
    assert_eq!(header_values(&ok, "Min-Expires"), vec!["60"]);
    assert_eq!(reg.contacts("alice").len(), 2);

    // Too long: shortened to max_expires (3600).
    let ok = registered(
        &mut ua,
        &mut reg,
        t0,
        "c3",
        1,
        "Contact: <sip:a@10.0.0.2:4>;expires=99999\r\n",
    );
    assert_eq!(ok.status, 200);
    assert!(header_values(&ok, "Contact").contains(&"<sip:a@10.0.0.2:4>;expires=3600"));
    reg_events(&mut reg);

    // Same Call-ID, lower CSeq than the binding's: 500, binding kept.
    let ok = registered(
        &mut ua,
        &mut reg,
        t0,
        "c1",
        0,
        "Contact: <sip:a@10.0.0.2:1>;expires=0\r\n",
    );
    assert_eq!(ok.status, 500);
    assert_eq!(reg.contacts("alice").len(), 3);

    // expires=0 on one contact removes only it.
    let ok = registered(
        &mut ua,
        &mut reg,
        t0,
        "c1",
        5,
        "Contact: <sip:a@10.0.0.2:1>;expires=0\r\n",
    );
    assert_eq!(ok.status, 200);
    assert_eq!(header_values(&ok, "Contact").len(), 2);
    assert!(matches!(
        &reg_events(&mut reg)[..],
        [RegistrarEvent::Unregistered { contacts: 2, .. }]
    ));

    // A query (no Contact) lists the bindings.
    let ok = registered(&mut ua, &mut reg, t0, "c9", 1, "");
    assert_eq!(ok.status, 200);
    assert_eq!(header_values(&ok, "Contact").len(), 2);
    assert!(reg_events(&mut reg).is_empty());

    // `*` needs Expires: 0 and no other contact.
    let ok = registered(&mut ua, &mut reg, t0, "c1", 7, "Contact: *\r\n");
    assert_eq!(ok.status, 400);
    let ok = registered(
        &mut ua,
        &mut reg,
        t0,
        "c1",
        9,
        "Contact: *, <sip:a@10.0.0.2:9>\r\nExpires: 0\r\n",
    );
    assert_eq!(ok.status, 400);
    let ok = registered(
        &mut ua,
        &mut reg,
        t0,
        "c1",
        11,
        "Contact: *\r\nExpires: 0\r\n",
    );
    assert_eq!(ok.status, 200);
    assert!(header_values(&ok, "Contact").is_empty());
    let evs = reg_events(&mut reg);
    assert_eq!(evs.len(), 2);
    assert!(
        evs.iter()
            .all(|e| matches!(e, RegistrarEvent::Unregistered { .. }))
    );
    assert_eq!(reg.registered_users(), 0);
    // Nothing left to expire.
    reg.handle_timeout(t0 + Duration::from_secs(4000));
    assert!(reg_events(&mut reg).is_empty());
}

#[test]
fn wrong_password_unknown_user_foreign_aor_stale_and_garbage() {
    let (mut ua, mut reg, t0) = setup();
    let contact = "Contact: <sip:alice@10.0.0.2:5062>\r\n";
    let out = exchange(
        &mut ua,
        &mut reg,
        t0,
        &register("alice", "w1", 1, "z9hG4bKw1", contact),
    );
    // Wrong password: 403, every time.
    for (i, n) in [(2u32, 1u32), (3, 2)] {
        let authz = authorization(&out[0], "alice", "guess", n, false);
        let r = exchange(
            &mut ua,
            &mut reg,
            t0,
            &register(
                "alice",
                "w1",
                i,
                &format!("z9hG4bKw{i}x"),
                &format!("{contact}{authz}"),
            ),
        );
        assert_eq!(r[0].status, 403);
    }
    // Unknown user: 403 as well (no hint which part was wrong).
    let out = exchange(
        &mut ua,
        &mut reg,
        t0,
        &register("mallory", "m1", 1, "z9hG4bKm1", contact),
    );
    assert_eq!(out[0].status, 401);
    let authz = authorization(&out[0], "mallory", "x", 1, false);
    let r = exchange(
        &mut ua,
        &mut reg,
        t0,
        &register(
            "mallory",
            "m1",
            2,
            "z9hG4bKm2",
            &format!("{contact}{authz}"),
        ),
    );
    assert_eq!(r[0].status, 403);
    // Bob's right password does not register alice's AOR.
    let out = exchange(
        &mut ua,
        &mut reg,
        t0,
        &register("alice", "b1", 1, "z9hG4bKb1", contact),
    );
    let authz = authorization(&out[0], "bob", "builder", 1, false);
    let r = exchange(
        &mut ua,
        &mut reg,
        t0,
        &register("alice", "b1", 2, "z9hG4bKb2", &format!("{contact}{authz}")),
    );
    assert_eq!(r[0].status, 403);
    assert_eq!(reg.contacts("alice").len(), 0);
    assert_eq!(reg.stats().forbidden, 4);

    // Right password on an expired nonce: 401 stale=true, then it works.
    let out = exchange(
        &mut ua,
        &mut reg,
        t0,
        &register("alice", "s1", 1, "z9hG4bKs1", contact),
    );
    let authz = authorization(&out[0], "alice", "wonderland", 1, false);
    let late = t0 + Duration::from_secs(301);
    let r = exchange(
        &mut ua,
        &mut reg,
        late,
        &register("alice", "s1", 2, "z9hG4bKs2", &format!("{contact}{authz}")),
    );
    assert_eq!(r[0].status, 401);
    let ch = Challenge::select(header_values(&r[0], "WWW-Authenticate")).unwrap();
    assert!(ch.stale);
    let authz = authorization(&r[0], "alice", "wonderland", 1, false);
    let r = exchange(
        &mut ua,
        &mut reg,
        late,
        &register("alice", "s1", 3, "z9hG4bKs3", &format!("{contact}{authz}")),
    );
    assert_eq!(r[0].status, 200);

    // Garbage credentials: 400, not a panic.
    let r = exchange(
        &mut ua,
        &mut reg,
        late,
        &register(
            "alice",
            "g1",
            1,
            "z9hG4bKg1",
            &format!("{contact}Authorization: Digest realm=\"frontdoor\", username=\r\n"),
        ),
    );
    assert_eq!(r[0].status, 400);
    // OPTIONS lists REGISTER among the methods.
    send(
        &mut ua,
        late,
        &frontdoor_sip_request("OPTIONS", "o1", "z9hG4bKo1"),
    );
    let out = drain(&mut ua);
    assert!(
        response(&out[0])
            .header(&HeaderName::Allow)
            .unwrap()
            .contains("REGISTER")
    );
    // Without accept_register the UA answers 405.
    let (mut plain, t) = common::ua();
    send(
        &mut plain,
        t,
        &register("alice", "p1", 1, "z9hG4bKp1", contact),
    );
    assert_eq!(statuses(&drain(&mut plain)), vec![405]);
    assert!(events(&mut plain).is_empty());
    send(
        &mut plain,
        t,
        &frontdoor_sip_request("OPTIONS", "o2", "z9hG4bKo2"),
    );
    let out = drain(&mut plain);
    assert!(
        !response(&out[0])
            .header(&HeaderName::Allow)
            .unwrap()
            .contains("REGISTER")
    );
}

// ----- UAC: answering 401/407 -----

fn challenge_response(
    inv: &frontdoor_sip::message::Request,
    status: u16,
    challenges: &[String],
) -> String {
    let via = inv.header(&HeaderName::Via).unwrap();
    let from = inv.header(&HeaderName::From).unwrap();
    let to = inv.header(&HeaderName::To).unwrap();
    let name = if status == 407 {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    let mut h = String::new();
    for c in challenges {
        h.push_str(&format!("{name}: {c}\r\n"));
    }
    format!(
        "SIP/2.0 {status} Auth\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to};tag=carrier\r\nCall-ID: {}\r\n\
CSeq: {} INVITE\r\n{h}Content-Length: 0\r\n\r\n",
        inv.call_id(),
        inv.cseq().seq,
    )
}

fn ok_response(inv: &frontdoor_sip::message::Request) -> String {
    let via = inv.header(&HeaderName::Via).unwrap();
    let from = inv.header(&HeaderName::From).unwrap();
    let to = inv.header(&HeaderName::To).unwrap();
    format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to};tag=carrier\r\nCall-ID: {}\r\n\
CSeq: {} INVITE\r\nContact: <sip:bob@10.0.0.2:5062>\r\nContent-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP_OFFER}",
        inv.call_id(),
        inv.cseq().seq,
        SDP_OFFER.len()
    )
}

fn carrier_lookup(u: &str) -> Option<UserSecret> {
    (u == "trunk").then(|| UserSecret::password("s3cret"))
}

fn trunk_creds() -> ClientCredentials {
    ClientCredentials {
        username: "trunk".into(),
        password: "s3cret".into(),
    }
}

#[test]
fn uac_answers_407_with_proxy_authorization_and_gets_through() {
    let (mut ua, t0) = common::ua();
    let mut carrier = digest_server(t0, vec![Algorithm::Sha256, Algorithm::Md5]);
    let call = ua
        .invite(
            t0,
            "sip:+15551234@10.0.0.2:5062",
            peer(),
            "ring",
            &local_media(),
        )
        .unwrap();
    ua.set_call_credentials(call, trunk_creds()).unwrap();
    let inv1 = req_of(&drain(&mut ua)[0]);
    send(
        &mut ua,
        t0,
        &challenge_response(&inv1, 407, &carrier.challenges(t0, false)),
    );
    let out = drain(&mut ua);
    assert_eq!(out.len(), 2, "ACK for the 407, then the new INVITE");
    let ack = req_of(&out[0]);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.cseq().seq, 1);
    assert_eq!(ack.branch(), inv1.branch());
    let inv2 = req_of(&out[1]);
    assert_eq!(inv2.method, Method::Invite);
    assert_eq!(inv2.cseq().seq, 2);
    assert_eq!(inv2.call_id(), inv1.call_id());
    assert_eq!(inv2.from_tag(), inv1.from_tag());
    assert_ne!(inv2.branch(), inv1.branch());
    assert_eq!(inv2.to_tag(), None);
    assert_eq!(inv2.body, inv1.body);
    let pa: Vec<&str> = inv2
        .headers
        .0
        .iter()
        .filter(|h| h.name.matches("Proxy-Authorization"))
        .map(|h| h.value.as_str())
        .collect();
    assert_eq!(pa.len(), 1);
    assert!(
        pa[0].contains("algorithm=SHA-256"),
        "the stronger challenge is used"
    );
    // The carrier's verifier accepts it.
    assert_eq!(
        carrier.verify(t0, "INVITE", pa.iter().copied(), carrier_lookup),
        Verdict::Ok {
            username: "trunk".into(),
            algorithm: Algorithm::Sha256
        }
    );
    assert!(events(&mut ua).is_empty(), "no CallEnded for the challenge");
    // A retransmitted 407 is absorbed (the old transaction re-ACKs it).
    send(
        &mut ua,
        t0,
        &challenge_response(&inv1, 407, &carrier.challenges(t0, false)),
    );
    let out = drain(&mut ua);
    assert_eq!(out.len(), 1);
    assert_eq!(req_of(&out[0]).method, Method::Ack);
    assert!(events(&mut ua).is_empty());
    // The authorized INVITE is retransmitted by its own timer A.
    let re = run_until(&mut ua, t0 + secs(0.6));
    assert_eq!(re.len(), 1);
    assert_eq!(req_of(&re[0].1).cseq().seq, 2);
    send(&mut ua, t0, &ok_response(&inv2));
    let out = drain(&mut ua);
    let ack = req_of(&out[0]);
    assert_eq!((ack.method.clone(), ack.cseq().seq), (Method::Ack, 2));
    assert!(matches!(
        &events(&mut ua)[0],
        UaEvent::OutgoingAnswered { call: c, .. } if *c == call
    ));
    // In-dialog requests continue from the INVITE's CSeq.
    ua.hangup(t0, call).unwrap();
    let bye = req_of(&drain(&mut ua)[0]);
    assert_eq!((bye.method.clone(), bye.cseq().seq), (Method::Bye, 3));
}

#[test]
fn uac_second_challenge_rejects_stale_retries_and_no_credentials_rejects() {
    // Wrong password: the carrier challenges again (not stale) → the call is rejected.
    let (mut ua, t0) = common::ua();
    let mut carrier = digest_server(t0, vec![Algorithm::Md5]);
    ua.set_credentials("frontdoor", trunk_creds());
    let call = ua
        .invite(
            t0,
            "sip:+1555@10.0.0.2:5062",
            peer(),
            "ring",
            &local_media(),
        )
        .unwrap();
    let inv1 = req_of(&drain(&mut ua)[0]);
    send(
        &mut ua,
        t0,
        &challenge_response(&inv1, 401, &carrier.challenges(t0, false)),
    );
    let inv2 = req_of(&drain(&mut ua)[1]);
    assert!(
        inv2.headers
            .get_by_str("Authorization")
            .unwrap()
            .contains("algorithm=MD5")
    );
    send(
        &mut ua,
        t0,
        &challenge_response(&inv2, 401, &carrier.challenges(t0, false)),
    );
    let out = drain(&mut ua);
    assert_eq!(out.len(), 1);
    assert_eq!(req_of(&out[0]).method, Method::Ack);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::RemoteRejected(401)
        }]
    );

    // Stale nonce: retried (CSeq 3), then answered.
    let (mut ua, t0) = common::ua();
    let mut carrier = digest_server(t0, vec![Algorithm::Md5]);
    let call = ua
        .invite(
            t0,
            "sip:+1555@10.0.0.2:5062",
            peer(),
            "ring",
            &local_media(),
        )
        .unwrap();
    ua.set_call_credentials(call, trunk_creds()).unwrap();
    let inv1 = req_of(&drain(&mut ua)[0]);
    send(
        &mut ua,
        t0,
        &challenge_response(&inv1, 407, &carrier.challenges(t0, false)),
    );
    let inv2 = req_of(&drain(&mut ua)[1]);
    send(
        &mut ua,
        t0,
        &challenge_response(&inv2, 407, &carrier.challenges(t0, true)),
    );
    let inv3 = req_of(&drain(&mut ua)[1]);
    assert_eq!(inv3.cseq().seq, 3);
    send(&mut ua, t0, &ok_response(&inv3));
    assert!(matches!(
        &events(&mut ua)[0],
        UaEvent::OutgoingAnswered { .. }
    ));
    let _ = call;

    // No credentials for the realm: the 407 ends the call.
    let (mut ua, t0) = common::ua();
    ua.set_credentials("another-realm", trunk_creds());
    let call = ua
        .invite(
            t0,
            "sip:+1555@10.0.0.2:5062",
            peer(),
            "ring",
            &local_media(),
        )
        .unwrap();
    let inv1 = req_of(&drain(&mut ua)[0]);
    send(
        &mut ua,
        t0,
        &challenge_response(&inv1, 407, &carrier.challenges(t0, false)),
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::RemoteRejected(407)
        }]
    );
    // A malformed challenge is treated like none.
    let (mut ua, t0) = common::ua();
    let call = ua
        .invite(
            t0,
            "sip:+1555@10.0.0.2:5062",
            peer(),
            "ring",
            &local_media(),
        )
        .unwrap();
    ua.set_call_credentials(call, trunk_creds()).unwrap();
    let inv1 = req_of(&drain(&mut ua)[0]);
    send(
        &mut ua,
        t0,
        &challenge_response(&inv1, 407, &["Digest realm=\"x".to_string()]),
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::CallEnded {
            call,
            cause: EndCause::RemoteRejected(407)
        }]
    );
}

#[test]
fn hangup_while_reinviting_with_credentials_cancels_the_new_invite() {
    let (mut ua, t0) = common::ua();
    let mut carrier = digest_server(t0, vec![Algorithm::Md5]);
    let call = ua
        .invite(
            t0,
            "sip:+1555@10.0.0.2:5062",
            peer(),
            "ring",
            &local_media(),
        )
        .unwrap();
    ua.set_call_credentials(call, trunk_creds()).unwrap();
    let inv1 = req_of(&drain(&mut ua)[0]);
    send(
        &mut ua,
        t0,
        &challenge_response(&inv1, 407, &carrier.challenges(t0, false)),
    );
    let inv2 = req_of(&drain(&mut ua)[1]);
    ua.hangup(t0, call).unwrap();
    assert!(drain(&mut ua).is_empty(), "CANCEL waits for a provisional");
    let via = inv2.header(&HeaderName::Via).unwrap();
    let from = inv2.header(&HeaderName::From).unwrap();
    let to = inv2.header(&HeaderName::To).unwrap();
    send(
        &mut ua,
        t0,
        &format!(
            "SIP/2.0 180 Ringing\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to};tag=c\r\nCall-ID: {}\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n",
            inv2.call_id()
        ),
    );
    let cancel = req_of(&drain(&mut ua)[0]);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.cseq().seq, 2);
    assert_eq!(cancel.branch(), inv2.branch());
}

// ----- properties -----

#[derive(Debug, Clone)]
enum Op {
    /// Register contact `c` (0..4) with `expires` (Contact param) on call-id `cid` (0..2).
    Bind { c: u8, expires: u32, cid: u8 },
    /// expires=0 for contact `c`.
    Unbind { c: u8, cid: u8 },
    /// Contact: * / Expires: 0.
    Star { cid: u8 },
    /// Time passes.
    Wait { secs: u16 },
    /// A REGISTER with garbage in Contact / Expires / Authorization.
    Garbage {
        contact: String,
        expires: String,
        authz: String,
    },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0u8..5, prop_oneof![Just(0u32), 1u32..200, Just(100_000)], 0u8..2)
            .prop_map(|(c, expires, cid)| Op::Bind { c, expires, cid }),
        1 => (0u8..5, 0u8..2).prop_map(|(c, cid)| Op::Unbind { c, cid }),
        1 => (0u8..2).prop_map(|cid| Op::Star { cid }),
        2 => (0u16..400).prop_map(|secs| Op::Wait { secs }),
        1 => ("[ -~]{0,40}", "[ -~]{0,8}", "[ -~]{0,60}")
            .prop_map(|(contact, expires, authz)| Op::Garbage { contact, expires, authz }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any sequence of (authenticated) registrations, removals, garbage and time: no panic,
    /// the contacts a user has always match the events (registered − unregistered − expired),
    /// never exceed `max_contacts`, and none outlives its expiry.
    #[test]
    fn registrar_sequences_keep_their_invariants(ops in proptest::collection::vec(op(), 1..40)) {
        let (mut ua, t0) = common::ua();
        ua.set_accept_register(true);
        let mut reg = Registrar::new(
            RegistrarConfig { max_contacts: 3, ..RegistrarConfig::default() },
            digest_server(t0, vec![Algorithm::Md5]),
        );
        reg.set_user("alice", UserSecret::password("wonderland"));
        let mut now = t0;
        let mut cseq = [1u32, 1u32];
        let mut live: i64 = 0;
        let mut branch = 0u64;
        for op in ops {
            let (cid, extra) = match &op {
                Op::Bind { c, expires, cid } => (
                    *cid,
                    format!("Contact: <sip:alice@10.0.0.{c}:5060>;expires={expires}\r\n"),
                ),
                Op::Unbind { c, cid } => (
                    *cid,
                    format!("Contact: <sip:alice@10.0.0.{c}:5060>;expires=0\r\n"),
                ),
                Op::Star { cid } => (*cid, "Contact: *\r\nExpires: 0\r\n".to_owned()),
                Op::Wait { secs } => {
                    now += Duration::from_secs(u64::from(*secs));
                    reg.handle_timeout(now);
                    (0, String::new())
                }
                Op::Garbage { contact, expires, authz } => (
                    0,
                    format!("Contact: {contact}\r\nExpires: {expires}\r\nAuthorization: Digest {authz}\r\n"),
                ),
            };
            if !matches!(op, Op::Wait { .. }) {
                let call_id = format!("prop-{cid}");
                let i = usize::from(cid);
                branch += 1;
                let first = register("alice", &call_id, cseq[i], &format!("z9hG4bKp{branch}a"), &extra);
                cseq[i] += 1;
                let out = exchange(&mut ua, &mut reg, now, &first);
                if matches!(op, Op::Garbage { .. }) {
                    // Whatever it was, it got one answer (or was dropped as unparsable).
                    proptest::prop_assert!(out.len() <= 1);
                } else {
                    proptest::prop_assert_eq!(out[0].status, 401);
                    let authz = authorization(&out[0], "alice", "wonderland", 1, false);
                    let second = register(
                        "alice",
                        &call_id,
                        cseq[i],
                        &format!("z9hG4bKp{branch}b"),
                        &format!("{extra}{authz}"),
                    );
                    cseq[i] += 1;
                    let out = exchange(&mut ua, &mut reg, now, &second);
                    proptest::prop_assert!(
                        matches!(out[0].status, 200 | 403 | 423),
                        "{:?}: {}", op, out[0].status
                    );
                    if out[0].status == 200 {
                        proptest::prop_assert_eq!(
                            header_values(&out[0], "Contact").len(),
                            reg.contacts("alice").len()
                        );
                    }
                }
            }
            for ev in reg_events(&mut reg) {
                match ev {
                    RegistrarEvent::Registered { refresh, .. } => live += i64::from(!refresh),
                    RegistrarEvent::Unregistered { .. } | RegistrarEvent::Expired { .. } => live -= 1,
                }
            }
            let bindings = reg.contacts("alice");
            proptest::prop_assert_eq!(live, bindings.len() as i64);
            proptest::prop_assert!(bindings.len() <= 3);
            proptest::prop_assert!(bindings.iter().all(|b| b.expires_at > now));
            proptest::prop_assert!(
                bindings.iter().all(|b| b.expires_at <= now + Duration::from_secs(3600))
            );
        }
    }
}

#[test]
fn a_presented_invite_keeps_its_display_name_and_call_info_across_an_auth_retry() {
    let (mut ua, t0) = common::ua();
    let mut carrier = digest_server(t0, vec![Algorithm::Md5]);
    let presentation = frontdoor_sip::Presentation {
        display_name: Some("\"Alice \\\"A\\\" Smith\"".into()),
        headers: vec![(
            "Call-Info".into(),
            "<http://desk.example/pop/x>;purpose=info".into(),
        )],
    };
    let call = ua
        .invite_presented(
            t0,
            "sip:agent1@10.0.0.2:5062",
            peer(),
            "frontdoor",
            &local_media(),
            presentation,
        )
        .unwrap();
    ua.set_call_credentials(call, trunk_creds()).unwrap();
    let inv1 = req_of(&drain(&mut ua)[0]);
    let header = |r: &frontdoor_sip::message::Request, name: &str| {
        r.headers
            .0
            .iter()
            .find(|h| h.name.matches(name))
            .map(|h| h.value.clone())
    };
    let from = header(&inv1, "From").unwrap();
    assert!(
        from.starts_with("\"Alice \\\"A\\\" Smith\" <sip:frontdoor@"),
        "{from}"
    );
    assert_eq!(
        header(&inv1, "Call-Info").as_deref(),
        Some("<http://desk.example/pop/x>;purpose=info")
    );
    send(
        &mut ua,
        t0,
        &challenge_response(&inv1, 407, &carrier.challenges(t0, false)),
    );
    let out = drain(&mut ua);
    let inv2 = req_of(&out[1]);
    assert_eq!(inv2.cseq().seq, 2);
    assert_eq!(header(&inv2, "From"), Some(from));
    assert_eq!(header(&inv2, "Call-Info"), header(&inv1, "Call-Info"));
    // Values that would break the request are refused, nothing is sent.
    for bad in [
        frontdoor_sip::Presentation {
            display_name: Some("\"x\"\r\nVia: evil".into()),
            headers: vec![],
        },
        frontdoor_sip::Presentation {
            display_name: Some("no quotes".into()),
            headers: vec![],
        },
        frontdoor_sip::Presentation {
            display_name: None,
            headers: vec![("Call Info".into(), "x".into())],
        },
        frontdoor_sip::Presentation {
            display_name: None,
            headers: vec![("Call-Info".into(), "a\r\nb".into())],
        },
    ] {
        let r = ua.invite_presented(
            t0,
            "sip:agent1@10.0.0.2:5062",
            peer(),
            "frontdoor",
            &local_media(),
            bad,
        );
        assert!(
            matches!(r, Err(frontdoor_sip::UaError::InvalidHeader(_))),
            "{r:?}"
        );
    }
    assert!(drain(&mut ua).is_empty());
}
