//! End to end against SIPp (Debian `sip-tester`): the real binary, real SIP over UDP and TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Server, of_type, scenario, sipp};

/// The SIPp smoke: a few hundred standard UAC calls over UDP, 0 failed, and every call seen
/// received, answered and ended by BYE on the event stream, exactly once each.
#[test]
fn smoke_uac_udp_300_calls() {
    let server = Server::start("smoke", 25060, (30000, 30999), "");
    let out = sipp(
        &server,
        25160,
        26000,
        &[
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "answer",
            "-m",
            "300",
            "-r",
            "100",
            "-l",
            "100",
            "-d",
            "200",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Successful call"), "{stdout}");
    let ended = server.wait_count(Duration::from_secs(10), 300, |e| e["type"] == "call.ended");
    let events = server.events();
    let received = of_type(&events, "call.received");
    let answered = of_type(&events, "call.answered");
    assert_eq!(received.len(), 300);
    assert_eq!(answered.len(), 300);
    assert_eq!(ended.len(), 300);
    assert!(
        ended.iter().all(|e| e["cause"] == "remote_bye"),
        "{ended:?}"
    );
    let ids: HashSet<&str> = ended
        .iter()
        .map(|e| e["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 300, "each call ends exactly once");
    // Sequence numbers are unique and increasing.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // Every RTP port was given back.
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

/// The same call flow over TCP.
#[test]
fn uac_over_tcp() {
    let server = Server::start("tcp", 25061, (31000, 31999), "");
    sipp(
        &server,
        25161,
        26010,
        &[
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "answer",
            "-t",
            "t1",
            "-m",
            "50",
            "-r",
            "50",
            "-d",
            "100",
        ],
    );
    let ended = server.wait_count(Duration::from_secs(10), 50, |e| e["type"] == "call.ended");
    assert!(ended.iter().all(|e| e["cause"] == "remote_bye"));
    let received = of_type(&server.events(), "call.received").len();
    assert_eq!(received, 50);
    assert!(
        of_type(&server.events(), "call.received")
            .iter()
            .all(|e| e["transport"] == "tcp")
    );
}

/// CANCEL while the `ring` number rings: 200 for the CANCEL, 487 for the INVITE.
#[test]
fn cancel_while_ringing() {
    let server = Server::start("cancel", 25062, (32000, 32999), "");
    sipp(
        &server,
        25162,
        26020,
        &[
            "-sf",
            &scenario("cancel.xml"),
            "-s",
            "ring",
            "-m",
            "20",
            "-r",
            "20",
        ],
    );
    let ended = server.wait_count(Duration::from_secs(10), 20, |e| e["type"] == "call.ended");
    assert!(
        ended
            .iter()
            .all(|e| e["cause"] == "cancelled" && e["status"] == 487),
        "{ended:?}"
    );
    assert!(
        of_type(&server.events(), "call.answered").is_empty(),
        "a cancelled call is never answered"
    );
}

/// OPTIONS with Max-Forwards 0 is answered 200 with Allow (checked by the scenario).
#[test]
fn options_ping() {
    let server = Server::start("options", 25063, (33000, 33999), "");
    sipp(
        &server,
        25163,
        26030,
        &[
            "-sf",
            &scenario("options.xml"),
            "-s",
            "frontdoor",
            "-m",
            "20",
            "-r",
            "50",
        ],
    );
    assert!(
        of_type(&server.events(), "call.received").is_empty(),
        "OPTIONS creates no call"
    );
}

/// SIGTERM with calls ringing: the server ends them and exits 0.
#[test]
fn sigterm_ends_calls_and_exits_zero() {
    let server = Server::start("sigterm", 25064, (34000, 34999), "");
    // Start 3 ringing calls in the background and let them ring.
    let mut child = std::process::Command::new("sipp")
        .arg("127.0.0.1:25064")
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            "25164",
            "-mp",
            "26040",
            "-nostdin",
            "-timeout",
            "30s",
        ])
        .args([
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "ring",
            "-m",
            "3",
            "-r",
            "10",
        ])
        .current_dir(&server.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sipp");
    server.wait_count(Duration::from_secs(10), 3, |e| e["type"] == "call.ringing");
    let events_path = server.events_path.clone();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(events_path).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(of_type(&events, "server.stopping").len(), 1);
    assert_eq!(
        of_type(&events, "call.ended").len(),
        3,
        "every ringing call ended at shutdown"
    );
    assert_eq!(of_type(&events, "server.stopped").len(), 1);
}

/// INVITEs from a source outside the trunk allow-list are refused with 403.
#[test]
fn trunk_allow_list_refuses_others() {
    let server = Server::start(
        "trunks",
        25065,
        (35000, 35999),
        "[trunks]\nallow = [\"192.0.2.0/24\"]\n",
    );
    let out = std::process::Command::new("sipp")
        .arg("127.0.0.1:25065")
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            "25165",
            "-mp",
            "26050",
            "-nostdin",
            "-timeout",
            "20s",
        ])
        .args([
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "answer",
            "-m",
            "5",
            "-r",
            "10",
        ])
        .current_dir(&server.dir)
        .output()
        .expect("sipp");
    assert!(
        !out.status.success(),
        "calls from a non-allowed source must fail"
    );
    let rejected = server.wait_count(Duration::from_secs(5), 5, |e| e["type"] == "call.rejected");
    assert_eq!(rejected.len(), 5);
    assert!(rejected.iter().all(|e| e["status"] == 403));
}
