//! Digest authentication and the registrar: a challenge (one HMAC nonce, two header values),
//! checking MD5 and SHA-256 credentials (nonce HMAC + digest + nonce-count table), and a whole
//! authenticated REGISTER (challenge round trip, then the 200 with a binding) through the UA
//! and the registrar.
//!
//! `cargo bench -p frontdoor-benches --bench auth -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use frontdoor_sip::auth::{
    self, Algorithm, Challenge, ClientCredentials, DigestConfig, DigestServer, UserSecret, Verdict,
};
use frontdoor_sip::message::{SipMessage, parse};
use frontdoor_sip::registrar::{Registrar, RegistrarConfig};
use frontdoor_sip::{Transport, UaConfig, UaEvent, UserAgent};

fn digest(t0: Instant) -> DigestServer {
    DigestServer::new(
        DigestConfig {
            realm: "frontdoor".into(),
            secret: [5; 32],
            nonce_ttl: Duration::from_secs(300),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        },
        t0,
    )
}

fn creds() -> ClientCredentials {
    ClientCredentials {
        username: "alice".into(),
        password: "wonderland".into(),
    }
}

fn lookup(u: &str) -> Option<UserSecret> {
    (u == "alice").then(|| UserSecret::password("wonderland"))
}

fn bench_digest(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut srv = digest(t0);
    c.bench_function("auth: challenge (nonce + SHA-256 and MD5 headers)", |b| {
        b.iter(|| black_box(srv.challenges(t0, false)))
    });
    for (i, name) in [(0usize, "SHA-256"), (1, "MD5")] {
        // One nonce, an increasing nonce-count: every check is a fresh, valid one.
        let ch = Challenge::parse(&srv.challenges(t0, false)[i]).unwrap();
        let mut nc = 0u32;
        c.bench_function(&format!("auth: verify {name} credentials"), |b| {
            b.iter(|| {
                nc += 1;
                let a = auth::authorize(&ch, &creds(), "REGISTER", "sip:127.0.0.1", b"", "cn", nc);
                let v = a.to_header_value();
                let verdict = srv.verify(t0, "REGISTER", [v.as_str()], lookup);
                assert!(matches!(verdict, Verdict::Ok { .. }));
            })
        });
    }
}

fn register(n: u64, cseq: u32, extra: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-reg-{n}-{cseq}\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@127.0.0.1>;tag=r{n}\r\n\
To: <sip:alice@127.0.0.1>\r\n\
Call-ID: reg-{n}@127.0.0.1\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: <sip:alice@127.0.0.1:{}>;expires=600\r\n\
{extra}Content-Length: 0\r\n\r\n",
        10_000 + n % 5
    )
    .into_bytes()
}

fn bench_register(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut ua = UserAgent::new(UaConfig {
        local_addr: "127.0.0.1:5060".parse().unwrap(),
        contact_host: "127.0.0.1".into(),
        ..UaConfig::default()
    });
    ua.set_accept_register(true);
    let mut reg = Registrar::new(RegistrarConfig::default(), digest(t0));
    reg.set_user("alice", UserSecret::password("wonderland"));
    let peer: SocketAddr = "127.0.0.1:5061".parse().unwrap();
    let mut n = 0u64;
    let step = |ua: &mut UserAgent, reg: &mut Registrar, msg: &[u8]| -> Vec<u8> {
        ua.handle_datagram(t0, Transport::Udp, peer, msg);
        while let Some(ev) = ua.poll_event() {
            if let UaEvent::Register {
                tx,
                request,
                source,
                transport,
            } = ev
            {
                let r = reg.handle_register(t0, &request, source, transport);
                let h: Vec<(&str, &str)> =
                    r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                ua.respond(t0, tx, r.status, &h).unwrap();
            }
        }
        while reg.poll_event().is_some() {}
        ua.poll_transmit().unwrap().payload.to_vec()
    };
    c.bench_function(
        "registrar: REGISTER → 401, authorized REGISTER → 200 (SHA-256, UA + registrar)",
        |b| {
            b.iter(|| {
                n += 1;
                let r401 = step(&mut ua, &mut reg, &register(n, 1, ""));
                let SipMessage::Response(r401) = parse(&r401).unwrap() else {
                    panic!("a response")
                };
                let ch = Challenge::select(
                    r401.headers
                        .0
                        .iter()
                        .filter(|h| h.name.matches("WWW-Authenticate"))
                        .map(|h| h.value.as_str()),
                )
                .unwrap();
                let a = auth::authorize(
                    &ch,
                    &creds(),
                    "REGISTER",
                    "sip:127.0.0.1:5060",
                    b"",
                    "cn",
                    1,
                );
                let ok = step(
                    &mut ua,
                    &mut reg,
                    &register(n, 2, &format!("Authorization: {}\r\n", a.to_header_value())),
                );
                assert!(ok.starts_with(b"SIP/2.0 200"));
            })
        },
    );
}

criterion_group!(benches, bench_digest, bench_register);
criterion_main!(benches);
