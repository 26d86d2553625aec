//! Broken SIP over the wire to the real server: answerable garbage gets 400, unparsable bytes
//! are dropped, and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::Server;

const SILENCE: Duration = Duration::from_millis(500);

/// Sends `msg` and waits for one datagram back: up to 3 s when an answer is expected (a loaded
/// CI box may be slow), 500 ms when silence is (nothing may come at all).
fn exchange(sock: &UdpSocket, msg: &[u8]) -> Option<String> {
    exchange_within(sock, msg, Duration::from_secs(3))
}

fn exchange_within(sock: &UdpSocket, msg: &[u8], wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send(msg).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

fn request(method: &str, extra: &str, body: &str, cl: &str) -> Vec<u8> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{method} sip:answer@127.0.0.1:25070 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:25170;branch=z9hG4bK-{method}-{n}\r\n\
         From: <sip:t@127.0.0.1>;tag=abc\r\n\
         To: <sip:answer@127.0.0.1>\r\n\
         Call-ID: malformed-{method}-{n}@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Max-Forwards: 70\r\n\
         {extra}Content-Length: {cl}\r\n\r\n{body}"
    )
    .into_bytes()
}

#[test]
fn malformed_requests_get_400_or_are_dropped_and_the_server_survives() {
    let server = Server::start("malformed", 25070, (36000, 36999), "");
    let sock = UdpSocket::bind("127.0.0.1:25170").unwrap();
    sock.connect("127.0.0.1:25070").unwrap();

    // Binary garbage: dropped, no answer.
    assert_eq!(
        exchange_within(&sock, &[0xff, 0x00, 0x13, 0x37, 0x80, 0x81], SILENCE),
        None
    );
    // A start line and nothing else: dropped.
    assert_eq!(
        exchange_within(&sock, b"INVITE sip:x SIP/2.0\r\n\r\n", SILENCE),
        None
    );
    // Negative Content-Length: answerable, 400.
    let r = exchange(&sock, &request("OPTIONS", "", "", "-5"))
        .expect("a 400 for a negative Content-Length");
    assert!(r.starts_with("SIP/2.0 400"), "{r}");
    // Content-Length larger than the body: 400.
    let r = exchange(&sock, &request("OPTIONS", "", "abc", "9999"))
        .expect("a 400 for a truncated body");
    assert!(r.starts_with("SIP/2.0 400"), "{r}");
    // Unknown method: 501.
    let r = exchange(&sock, &request("FROB", "", "", "0")).expect("a 501");
    assert!(r.starts_with("SIP/2.0 501"), "{r}");
    // INVITE with Max-Forwards 0: 483 Too Many Hops.
    let invite = String::from_utf8(request("INVITE", "", "", "0"))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    let r = exchange(&sock, invite.as_bytes()).expect("a 483");
    assert!(r.starts_with("SIP/2.0 483"), "{r}");
    // ACK the 483 (same branch, the To tag from the response) so it is not retransmitted.
    let to = r
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("To in the 483")
        .to_owned();
    let ack = invite
        .replace("INVITE sip:", "ACK sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace("To: <sip:answer@127.0.0.1>", &to);
    assert_eq!(
        exchange_within(&sock, ack.as_bytes(), SILENCE),
        None,
        "nothing answers an ACK"
    );
    // BYE for a dialog that does not exist: 481.
    let r = exchange(&sock, &request("BYE", "", "", "0").replace_to_tag())
        .expect("a 481 for an unknown dialog");
    assert!(r.starts_with("SIP/2.0 481"), "{r}");
    // Unknown Require option-tag: 420 with Unsupported.
    let r = exchange(&sock, &request("OPTIONS", "Require: foo-bar\r\n", "", "0")).expect("a 420");
    assert!(r.starts_with("SIP/2.0 420"), "{r}");
    assert!(r.contains("Unsupported: foo-bar"), "{r}");
    // And the server still answers a good OPTIONS.
    let r = exchange(&sock, &request("OPTIONS", "", "", "0")).expect("a 200");
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    let status = server.terminate();
    assert!(status.success());
}

trait ToTag {
    fn replace_to_tag(self) -> Vec<u8>;
}
impl ToTag for Vec<u8> {
    fn replace_to_tag(self) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replace(
                "To: <sip:answer@127.0.0.1>",
                "To: <sip:answer@127.0.0.1>;tag=nosuch",
            )
            .into_bytes()
    }
}
