//! Agents on real phones, end to end (docs/acd.md): skills routing, forking to every
//! registered phone of an agent, the screen pop's caller context (webhook, WebSocket event and
//! desk phone), webhook retries that never hold a call up, the WebSocket event stream, and
//! feature codes dialed from an agent's phone. Peers are SIPp processes and a WebSocket client.
//!
//! Ports (this file only): SIP 42000-42009, SIPp signalling 42020-42059, API 42060-42064,
//! webhook receivers 42065-42069, the server's media 42100-42999, SIPp media 43000-43999.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/speech_audio.rs"]
mod speech_audio;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Dirs, Server, of_type, scenario, sipp, test_dir};
use frontdoor_media::g711::G711;

const ALICE: &str = "+14155550123";

/// Dialed numbers: 6001 needs `zh`, 6002 needs `fr` (nobody has it), 6003 walks a menu and a
/// sensitive PIN before the queue, anything else goes straight to the queue.
const PLAN: &str = r##"
name = "acd-phones"

[[route]]
number = "6001"
flow = "zh"

[[route]]
number = "6002"
flow = "fr"

[[route]]
number = "6003"
flow = "ivr"

[[route]]
default = true
flow = "queue"

[flows.queue]
start = "answer"

[flows.queue.steps.answer]
verb = "answer"
next = "q"

[flows.queue.steps.q]
verb = "enqueue"
queue = "general"
on_failure = "busy"

[flows.queue.steps.busy]
verb = "say"
text = "Nobody is here."
next = "bye"

[flows.queue.steps.bye]
verb = "hangup"
reason = "no agent"

[flows.zh]
start = "answer"

[flows.zh.steps.answer]
verb = "answer"
next = "q"

[flows.zh.steps.q]
verb = "enqueue"
queue = "general"
skills = { zh = 3 }
on_failure = "bye"

[flows.zh.steps.bye]
verb = "hangup"
reason = "no agent"

[flows.fr]
start = "answer"

[flows.fr.steps.answer]
verb = "answer"
next = "q"

[flows.fr.steps.q]
verb = "enqueue"
queue = "general"
skills = { fr = 1 }
on_failure = "bye"

[flows.fr.steps.bye]
verb = "hangup"
reason = "no agent"

[flows.ivr]
start = "answer"

[flows.ivr.steps.answer]
verb = "answer"
next = "menu"

[flows.ivr.steps.menu]
verb = "menu"
say = "Press 1."
options = { "1" = "pin" }
retries = 2
timeout = 6
fallback = "q"

[flows.ivr.steps.pin]
verb = "gather"
say = "Enter your PIN."
min_digits = 4
max_digits = 4
terminator = "#"
timeout = 8
inter_digit_timeout = 4
var = "pin"
sensitive = true
retries = 1
on_failure = "q"
next = "q"

[flows.ivr.steps.q]
verb = "enqueue"
queue = "general"
on_failure = "bye"

[flows.ivr.steps.bye]
verb = "hangup"
reason = "no agent"
"##;

/// agent-answer.xml checks the screen pop link of this base.
const DESK: &str = "[screenpop]\nurl_base = \"http://desk.example/pop\"\n";

/// `[sip]`, `[acd]` with one queue, and the agents given as (id, username, skills TOML).
fn config(offer_timeout_s: f64, wrap_up_s: f64, agents: &[(&str, &str, &str)]) -> String {
    let mut c = format!(
        "[sip]\nauth_algorithms = [\"MD5\"]\n[acd]\noffer_timeout_s = {offer_timeout_s}\n\
         max_no_answer = 1\n\
         [[acd.queues]]\nid = 1\nname = \"general\"\nwrap_up_s = {wrap_up_s}\n"
    );
    for (id, user, skills) in agents {
        c.push_str(&format!(
            "[[agents.agent]]\nid = \"{id}\"\nusername = \"{user}\"\npassword = \"pw-{user}\"\n\
             skills = {skills}\nqueues = [\"general\"]\nauto_login = true\n"
        ));
    }
    c
}

fn start(name: &str, sip_port: u16, rtp: (u16, u16), config: &str, data: Option<&Path>) -> Server {
    let plans = test_dir(&format!("{name}-plans"));
    std::fs::write(plans.join("acd.toml"), PLAN).unwrap();
    Server::start_with(
        name,
        sip_port,
        rtp,
        config,
        Dirs {
            dialplans: plans,
            data: data.map(Path::to_path_buf),
        },
    )
}

/// Phone `user` (agent `agent`) registers its contact 127.0.0.1:`port` with digest auth.
fn register(server: &Server, port: u16, media: u16, user: &str, agent: &str) {
    let before = server
        .events()
        .iter()
        .filter(|e| e["type"] == "agent.registered" && e["agent"] == agent)
        .count();
    sipp(
        server,
        port,
        media,
        &[
            "-sf",
            &scenario("register.xml"),
            "-s",
            user,
            "-au",
            user,
            "-ap",
            &format!("pw-{user}"),
            "-key",
            "expires",
            "300",
            "-m",
            "1",
        ],
    );
    server.wait_count(Duration::from_secs(10), before + 1, |e| {
        e["type"] == "agent.registered" && e["agent"] == agent
    });
}

/// A phone listening on its registered contact's port, in the background, running `xml` (a
/// path) once.
fn phone(server: &Server, port: u16, media: u16, xml: &str, echo: bool) -> Child {
    let mut cmd = Command::new("sipp");
    cmd.arg(format!("127.0.0.1:{}", server.sip_port))
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-mp", &media.to_string()])
        .args(["-sf", xml, "-m", "1"])
        .args([
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
            "-trace_err",
        ])
        .current_dir(&server.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if echo {
        cmd.arg("-rtp_echo");
    }
    let child = cmd.spawn().expect("sipp must be installed");
    // Let it bind its port before anything is offered.
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn wait_exit(server: &Server, mut child: Child, within: Duration, what: &str) {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "{what}: SIPp exited {s:?}\n{}", server.log());
            return;
        }
        if t0.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: SIPp did not finish within {within:?}\n{}",
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pcap of the caller's RTP: a 440 Hz PCMU tone every 20 ms for `total_ms`, each `(at_ms,
/// key)` sent as an RFC 4733 event instead (start, continuation, three end packets).
fn write_call_pcap(path: &Path, digits: &[(u32, char)], total_ms: u32) {
    let tone: Vec<i16> = (0..160)
        .map(|n| {
            (3000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(n) / 8000.0).sin()) as i16
        })
        .collect();
    let audio = G711::Pcmu.encode(&tone).to_vec();
    let mut packets: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut seq: u16 = 3000;
    let base_ts: u32 = 80_000;
    let mut pending: Vec<(u32, char)> = digits.to_vec();
    pending.sort();
    let mut next = pending.into_iter().peekable();
    let mut slot = 0;
    while slot < total_ms / 20 {
        if let Some(&(at, key)) = next.peek() {
            if at <= slot * 20 {
                next.next();
                let code: u8 = match key {
                    '0'..='9' => key as u8 - b'0',
                    '*' => 10,
                    '#' => 11,
                    _ => panic!("no key {key}"),
                };
                let ts = base_ts.wrapping_add(slot * 160);
                for k in 0..11u32 {
                    let end = k >= 8;
                    let duration = (k.min(7) + 1) * 160;
                    let mut rtp = vec![0x80, 101 | if k == 0 { 0x80 } else { 0 }];
                    rtp.extend_from_slice(&seq.to_be_bytes());
                    rtp.extend_from_slice(&ts.to_be_bytes());
                    rtp.extend_from_slice(&0x5151_5151u32.to_be_bytes());
                    rtp.extend_from_slice(&[code, if end { 0x80 | 10 } else { 10 }]);
                    rtp.extend_from_slice(&(duration as u16).to_be_bytes());
                    packets.push((u64::from((slot + k) * 20) * 1000, rtp));
                    seq = seq.wrapping_add(1);
                }
                slot += 11;
                continue;
            }
        }
        let mut rtp = vec![0x80, if slot == 0 { 0x80 } else { 0 }];
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&base_ts.wrapping_add(slot * 160).to_be_bytes());
        rtp.extend_from_slice(&0x5151_5151u32.to_be_bytes());
        rtp.extend_from_slice(&audio);
        packets.push((u64::from(slot * 20) * 1000, rtp));
        seq = seq.wrapping_add(1);
        slot += 1;
    }
    common::write_pcap(path, &packets);
}

/// A SIPp caller from `ALICE` to `number`: audio (and `digits`) for `total_ms`, then BYE.
#[allow(clippy::too_many_arguments)]
fn caller(
    server: &Server,
    tag: &str,
    port: u16,
    media: u16,
    number: &str,
    digits: &[(u32, char)],
    total_ms: u32,
) {
    let pcap = format!("{tag}.pcap");
    write_call_pcap(&server.dir.join(&pcap), digits, total_ms);
    let xml = std::fs::read_to_string(scenario("ivr-dtmf.xml"))
        .unwrap()
        .replace("__CALLER__", ALICE)
        .replace("__PCAP__", &pcap)
        .replace("__PAUSE_MS__", &(total_ms + 500).to_string());
    let sf = server.dir.join(format!("{tag}.xml"));
    std::fs::write(&sf, xml).unwrap();
    sipp(
        server,
        port,
        media,
        &["-sf", sf.to_str().unwrap(), "-s", number, "-m", "1"],
    );
}

fn position(events: &[serde_json::Value], pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("event missing; events: {events:#?}"))
}

#[test]
fn a_caller_needing_zh_is_offered_only_to_the_agent_with_zh() {
    // a1 speaks English, a2 Mandarin at level 5 (the step needs 3); both are logged in and
    // registered, only a2's phone listens. An offer to a1 would show up as acd.offered (and
    // fail on its silent contact).
    let cfg = format!(
        "{DESK}{}",
        config(
            10.0,
            30.0,
            &[
                ("a1", "agent1", "[\"en\"]"),
                ("a2", "agent2", "[\"zh:5\", \"en:2\"]"),
            ],
        )
    );
    let server = start("phones-skills", 42000, (42100, 42149), &cfg, None);
    register(&server, 42020, 43000, "agent1", "a1");
    register(&server, 42022, 43010, "agent2", "a2");
    let zh_phone = phone(&server, 42022, 43020, &scenario("agent-answer.xml"), true);
    caller(&server, "zh", 42024, 43040, "6001", &[], 4000);
    wait_exit(
        &server,
        zh_phone,
        Duration::from_secs(30),
        "the zh agent's phone",
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "agent.state" && e["agent"] == "a2" && e["state"] == "wrap_up"
    });
    let events = server.events();
    let enq = &events[position(&events, |e| e["type"] == "acd.enqueued")];
    assert_eq!(enq["skills"], serde_json::json!([["zh", 3]]), "{enq}");
    let offered = of_type(&events, "acd.offered");
    assert!(!offered.is_empty());
    assert!(
        offered.iter().all(|e| e["agent"] == "a2"),
        "only the zh agent is offered the caller: {offered:#?}"
    );
    let answered = of_type(&events, "acd.answered");
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0]["agent"], "a2");
    assert!(
        of_type(&events, "agent.state")
            .iter()
            .filter(|e| e["agent"] == "a1")
            .all(|e| e["state"] == "available"),
        "a1 was never offered anything"
    );

    // Nobody has `fr`: the enqueue step fails at once (its on_failure hangs up).
    sipp(
        &server,
        42026,
        43060,
        &[
            "-sf",
            &scenario("uac-wait-bye.xml"),
            "-s",
            "6002",
            "-m",
            "1",
        ],
    );
    let failed = server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "ivr.enqueue" && e["result"] == "failed"
    });
    assert_eq!(failed["reason"], "no skilled agent logged in", "{failed}");
    assert_eq!(of_type(&server.events(), "acd.enqueued").len(), 1);
}

#[test]
fn an_agent_with_two_phones_rings_both_the_first_to_answer_wins_the_other_is_cancelled() {
    let cfg = format!("{DESK}{}", config(10.0, 0.0, &[("a1", "agent1", "[]")]));
    let server = start("phones-fork", 42001, (42150, 42199), &cfg, None);
    // Two phones registered as the same agent.
    register(&server, 42028, 43100, "agent1", "a1");
    register(&server, 42030, 43110, "agent1", "a1");
    let desk = phone(&server, 42028, 43120, &scenario("agent-answer.xml"), true);
    let soft = phone(
        &server,
        42030,
        43130,
        &scenario("agent-ring-cancel.xml"),
        false,
    );
    caller(&server, "fork", 42032, 43140, "5000", &[], 4000);
    wait_exit(
        &server,
        desk,
        Duration::from_secs(30),
        "the answering phone",
    );
    wait_exit(
        &server,
        soft,
        Duration::from_secs(30),
        "the cancelled phone",
    );
    // The caller, the answered leg and the cancelled one.
    server.wait_count(Duration::from_secs(10), 3, |e| e["type"] == "call.ended");
    let events = server.events();
    let offered = of_type(&events, "acd.offered");
    assert_eq!(offered.len(), 1, "{offered:#?}");
    let o = offered[0];
    let mut contacts: Vec<&str> = o["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    contacts.sort();
    assert_eq!(
        contacts,
        ["sip:agent1@127.0.0.1:42028", "sip:agent1@127.0.0.1:42030"]
    );
    let legs: Vec<&str> = o["leg_call_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(legs.len(), 2);
    let answered = of_type(&events, "acd.answered");
    assert_eq!(answered.len(), 1);
    let winner = answered[0]["leg_call_id"].as_str().unwrap();
    let loser = legs.iter().find(|l| **l != winner).unwrap();
    let ended = |id: &str| {
        events
            .iter()
            .find(|e| e["type"] == "call.ended" && e["call_id"] == id)
            .unwrap_or_else(|| panic!("no call.ended for {id}"))
    };
    assert_eq!(ended(loser)["cause"], "answered_elsewhere");
    assert_eq!(ended(loser)["talk_ms"], 0);
    assert_eq!(ended(winner)["cause"], "bridge_peer_ended");
    assert!(of_type(&events, "acd.refused").is_empty());
    let u = of_type(&events, "bridge.unbridged");
    assert!(u.iter().any(|u| u["audio_in"].as_u64().unwrap() > 50));
}

#[test]
fn a_phone_whose_answer_crosses_the_cancel_is_acked_and_hung_up() {
    let cfg = format!("{DESK}{}", config(10.0, 0.0, &[("a1", "agent1", "[]")]));
    let server = start("phones-late", 42007, (42450, 42499), &cfg, None);
    register(&server, 42054, 43600, "agent1", "a1");
    register(&server, 42056, 43610, "agent1", "a1");
    let desk = phone(&server, 42054, 43620, &scenario("agent-answer.xml"), true);
    let late = phone(
        &server,
        42056,
        43630,
        &scenario("agent-late-answer.xml"),
        false,
    );
    caller(&server, "late", 42058, 43640, "5000", &[], 4000);
    wait_exit(
        &server,
        desk,
        Duration::from_secs(30),
        "the answering phone",
    );
    // Its 2xx after the CANCEL was ACKed and got a BYE (the scenario fails otherwise).
    wait_exit(&server, late, Duration::from_secs(30), "the late phone");
    server.wait_count(Duration::from_secs(10), 3, |e| e["type"] == "call.ended");
    let events = server.events();
    assert_eq!(of_type(&events, "acd.answered").len(), 1);
    assert_eq!(
        of_type(&events, "bridge.bridged").len(),
        2,
        "one bridge (an event per leg), the late phone was never bridged"
    );
    let winner = of_type(&events, "acd.answered")[0]["leg_call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let loser = of_type(&events, "acd.offered")[0]["leg_call_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .find(|l| *l != winner)
        .unwrap();
    let end = events
        .iter()
        .find(|e| e["type"] == "call.ended" && e["call_id"] == loser.as_str())
        .unwrap();
    assert_eq!(end["cause"], "answered_elsewhere", "{end}");
}

#[test]
fn when_every_phone_of_the_agent_refuses_the_offer_is_refused_once() {
    let cfg = config(10.0, 0.0, &[("a1", "agent1", "[]")]);
    let server = start("phones-refuse", 42002, (42200, 42249), &cfg, None);
    register(&server, 42034, 43200, "agent1", "a1");
    register(&server, 42036, 43210, "agent1", "a1");
    // Busy on both phones; one reject slower than the other.
    let slow = std::fs::read_to_string(scenario("uas-reject.xml"))
        .unwrap()
        .replace(
            "<recv request=\"INVITE\" crlf=\"true\"/>",
            "<recv request=\"INVITE\" crlf=\"true\"/><pause milliseconds=\"1500\"/>",
        );
    let slow_path = server.dir.join("slow-reject.xml");
    std::fs::write(&slow_path, slow).unwrap();
    let p1 = phone(&server, 42034, 43220, &scenario("uas-reject.xml"), false);
    let p2 = phone(&server, 42036, 43230, slow_path.to_str().unwrap(), false);
    caller(&server, "refuse", 42038, 43240, "5000", &[], 4000);
    wait_exit(&server, p1, Duration::from_secs(30), "the first busy phone");
    wait_exit(
        &server,
        p2,
        Duration::from_secs(30),
        "the second busy phone",
    );
    server.wait_event(Duration::from_secs(10), |e| e["type"] == "acd.abandoned");
    let events = server.events();
    let offered = of_type(&events, "acd.offered");
    assert_eq!(
        offered.len(),
        1,
        "max_no_answer = 1 pauses the agent after one refusal"
    );
    let legs: Vec<&str> = offered[0]["leg_call_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(legs.len(), 2);
    let refused = of_type(&events, "acd.refused");
    assert_eq!(refused.len(), 1, "one refusal for the offer: {refused:#?}");
    assert_eq!(refused[0]["reason"], "rejected");
    assert_eq!(refused[0]["status"], 486);
    let refused_at = position(&events, |e| e["type"] == "acd.refused");
    for leg in &legs {
        let end = position(&events, |e| {
            e["type"] == "call.ended" && e["call_id"] == *leg
        });
        assert_eq!(events[end]["cause"], "remote_rejected");
        assert!(end < refused_at, "both phones refused before the offer was");
    }
    assert!(
        of_type(&events, "agent.state")
            .iter()
            .any(|e| e["state"] == "paused")
    );
}

/// A webhook receiver on 127.0.0.1:`port` answering the POSTs with `statuses` in turn; hands
/// over (arrival, headers with lower-cased names, raw body) of each.
type Pop = (Instant, HashMap<String, String>, Vec<u8>);
fn webhook_receiver(port: u16, statuses: &'static [u16]) -> mpsc::Receiver<Pop> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for status in statuses {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("POST /pop "), "{line}");
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
            let len: usize = headers["content-length"].parse().unwrap();
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let at = Instant::now();
            let mut w = stream;
            w.write_all(
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            let _ = tx.send((at, headers, body));
        }
    });
    rx
}

fn verify(pop: &Pop) -> serde_json::Value {
    let (_, headers, body) = pop;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    frontdoor::screenpop::verify(
        b"pop-secret",
        &headers["x-frontdoor-timestamp"],
        body,
        &headers["x-frontdoor-signature"],
        now,
        Duration::from_secs(300),
    )
    .expect("the signature verifies");
    serde_json::from_slice(body).unwrap()
}

/// A WebSocket client of /api/v1/events: every text message, parsed, in order.
fn websocket(port: u16) -> mpsc::Receiver<serde_json::Value> {
    use tokio_tungstenite::tungstenite;
    let (mut ws, _) =
        tungstenite::connect(format!("ws://127.0.0.1:{port}/api/v1/events?api_key=k1"))
            .expect("the WebSocket upgrade with the API key");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(msg) = ws.read() {
            if let tungstenite::Message::Text(t) = msg {
                if tx.send(serde_json::from_str(t.as_str()).unwrap()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn the_screen_pop_carries_the_callers_context_is_retried_and_the_websocket_sees_the_call() {
    // Alice is a gold customer who called once before.
    let dir = test_dir("phones-pop-data");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    {
        use frontdoor_store::{CallId, CallRecord, Customer, CustomerStore, E164, SqliteStore};
        let store = SqliteStore::open(&data.join("frontdoor.db")).unwrap();
        let alice = E164::try_from(ALICE.to_owned()).unwrap();
        store
            .upsert_customer(&Customer {
                number: alice.clone(),
                name: "Alice Chen".into(),
                tier: Some("gold".into()),
                vip: false,
                language: Some("en".into()),
                notes: String::new(),
            })
            .unwrap();
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-20T09:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        store
            .record_call(&CallRecord {
                call_id: CallId("earlier@test".into()),
                caller: Some(alice),
                dialed: "6003".into(),
                started_at: t,
                answered_at: Some(t),
                ended_at: Some(t),
                ivr_path: vec!["answer".into()],
                digits: vec![],
                outcome: "abandoned".into(),
            })
            .unwrap();
    }
    // The first POST is answered 500, the retry (3 s later) 200.
    let pops = webhook_receiver(42065, &[500, 200]);
    let extra = "[screenpop]\nurl = \"http://127.0.0.1:42065/pop\"\nsecret = \"pop-secret\"\n\
                 url_base = \"http://desk.example/pop\"\nattempts = 3\nbackoff_ms = 3000\n\
                 [api]\nlisten = \"127.0.0.1:42060\"\nkeys = [\"k1\"]\n";
    let cfg = format!("{extra}{}", config(10.0, 30.0, &[("a1", "agent1", "[]")]));
    let server = start("phones-pop", 42003, (42250, 42299), &cfg, Some(&data));
    let ws = websocket(42060);
    register(&server, 42040, 43300, "agent1", "a1");
    // The desk phone must show "Alice Chen [gold]" and the pop header (else its scenario
    // fails).
    let xml = std::fs::read_to_string(scenario("agent-answer.xml"))
        .unwrap()
        .replace("\\+14155550123", "Alice Chen \\[gold\\]")
        .replace(
            "assign_to=\"callinfo\"/>",
            "assign_to=\"callinfo\"/>\n      <ereg regexp=\"X-Frontdoor-Pop: tier=gold;vip=0;calls=1;waited=[0-9]+\" search_in=\"msg\" check_it=\"true\" assign_to=\"pop\"/>",
        )
        .replace("variables=\"display,callinfo\"", "variables=\"display,callinfo,pop\"");
    let xml_path = server.dir.join("agent-context.xml");
    std::fs::write(&xml_path, xml).unwrap();
    let desk = phone(&server, 42040, 43310, xml_path.to_str().unwrap(), true);
    // Menu "1", then the PIN 4321# (sensitive), then the queue; 14 s of audio in all.
    let mut digits = vec![(2500, '1')];
    for (i, d) in "4321#".chars().enumerate() {
        digits.push((6000 + 300 * i as u32, d));
    }
    caller(&server, "pop", 42042, 43320, "6003", &digits, 14_000);
    wait_exit(
        &server,
        desk,
        Duration::from_secs(40),
        "the agent's desk phone",
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "screenpop.delivered"
    });
    let events = server.events();

    // The webhook: a 500, then the retry with a valid signature; the caller was bridged to
    // the agent before the retry went out (delivery never holds the call).
    let first = pops.recv_timeout(Duration::from_secs(5)).unwrap();
    let second = pops.recv_timeout(Duration::from_secs(5)).unwrap();
    let pop1 = verify(&first);
    let pop = verify(&second);
    assert_eq!(pop1, pop, "the retry carries the same pop");
    assert!(second.0 - first.0 >= Duration::from_millis(2500));
    let delivered = position(&events, |e| e["type"] == "screenpop.delivered");
    assert_eq!(events[delivered]["attempts"], 2);
    assert_eq!(events[delivered]["status"], 200);
    let bridged = position(&events, |e| e["type"] == "bridge.bridged");
    assert!(
        bridged < delivered,
        "bridged while the webhook was still being retried"
    );

    // The caller's context.
    let caller_id = events[position(&events, |e| e["type"] == "acd.enqueued")]["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pop["call_id"], caller_id.as_str());
    assert_eq!(pop["agent"], "a1");
    assert_eq!(pop["queue"], "general");
    assert_eq!(pop["caller_number"], ALICE);
    assert_eq!(
        pop["caller_display"], "Caller",
        "the INVITE's From display name"
    );
    assert_eq!(pop["customer"]["name"], "Alice Chen");
    assert_eq!(pop["customer"]["tier"], "gold");
    assert_eq!(pop["customer"]["vip"], false);
    assert_eq!(pop["previous_calls"], 1);
    assert_eq!(pop["last_call"], "2026-11-20T09:30:00+00:00");
    assert_eq!(
        pop["ivr_path"],
        serde_json::json!(["answer", "menu", "pin", "q"])
    );
    assert_eq!(
        pop["digits"],
        serde_json::json!([
            {"step": "menu", "digits": "1", "sensitive": false},
            {"step": "pin", "digits": "[redacted]", "sensitive": true}
        ])
    );
    assert!(pop["transcript"].is_null(), "no speech turn: {pop}");
    assert_eq!(pop["callback"], false);
    assert!(pop["waited_s"].as_u64().unwrap() < 10, "{pop}");
    let text = std::fs::read_to_string(&server.events_path).unwrap();
    assert!(!text.contains("4321"), "the PIN never reaches the events");
    assert!(!String::from_utf8_lossy(&second.2).contains("4321"));

    // The WebSocket saw the call: enqueued → offered (with the same pop) → answered, and the
    // agent's state changes, in order.
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let end = Instant::now() + Duration::from_secs(15);
    while !seen
        .iter()
        .any(|e| e["type"] == "agent.state" && e["state"] == "wrap_up")
    {
        let left = end.saturating_duration_since(Instant::now());
        match ws.recv_timeout(left) {
            Ok(e) => seen.push(e),
            Err(_) => panic!("the WebSocket stopped short: {seen:#?}"),
        }
    }
    let at = |ty: &str, state: Option<&str>| {
        seen.iter()
            .position(|e| e["type"] == ty && state.is_none_or(|s| e["state"] == s))
            .unwrap_or_else(|| panic!("{ty} {state:?} not on the WebSocket: {seen:#?}"))
    };
    let (enq, off, ans) = (
        at("acd.enqueued", None),
        at("acd.offered", None),
        at("acd.answered", None),
    );
    let (s_off, s_on, s_wrap) = (
        at("agent.state", Some("offered")),
        at("agent.state", Some("on_call")),
        at("agent.state", Some("wrap_up")),
    );
    assert!(enq < off && off < ans, "{seen:#?}");
    assert!(s_off < s_on && s_on < s_wrap, "{seen:#?}");
    assert_eq!(
        seen[off]["screen_pop"], pop,
        "the WebSocket carries the pop"
    );
    assert_eq!(seen[off]["call_id"], caller_id.as_str());
    assert_eq!(seen[ans]["agent"], "a1");
    // The same objects as the --events file.
    let file_offer = &events[position(&events, |e| e["type"] == "acd.offered")];
    assert_eq!(&seen[off], file_offer);
}

/// The agent's phone dials `code` (digest-challenged with 407, answered, hung up by the engine).
fn dial_feature(server: &Server, port: u16, media: u16, code: &str, user: &str, password: &str) {
    sipp(
        server,
        port,
        media,
        &[
            "-sf",
            &scenario("agent-feature-code.xml"),
            "-s",
            code,
            "-key",
            "fc_user",
            user,
            "-au",
            user,
            "-ap",
            password,
            "-m",
            "1",
        ],
    );
}

#[test]
fn feature_codes_dialed_from_the_agents_phone_change_its_state() {
    // Codes of our own for pause/ready; the defaults for logout/login.
    let cfg = format!(
        "[agents.feature_codes]\npause = \"*71\"\nready = \"*72\"\npause_code = 4\n{}",
        config(10.0, 0.0, &[("a1", "agent1", "[]")])
    )
    .replacen(
        "[acd]",
        "[api]\nlisten = \"127.0.0.1:42061\"\nkeys = [\"k1\"]\n[acd]",
        1,
    );
    let server = start("phones-features", 42004, (42300, 42349), &cfg, None);
    register(&server, 42044, 43400, "agent1", "a1");
    let states = || -> Vec<String> {
        of_type(&server.events(), "agent.state")
            .iter()
            .map(|e| e["state"].as_str().unwrap().to_owned())
            .collect()
    };
    dial_feature(&server, 42044, 43410, "*71", "agent1", "pw-agent1");
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "agent.state" && e["state"] == "paused"
    });
    let paused = of_type(&server.events(), "agent.state")
        .into_iter()
        .find(|e| e["state"] == "paused")
        .cloned()
        .unwrap();
    assert_eq!(paused["detail"]["reason"]["code"], 4, "{paused}");
    dial_feature(&server, 42044, 43410, "*72", "agent1", "pw-agent1");
    dial_feature(&server, 42044, 43410, "*23", "agent1", "pw-agent1");
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "agent.state" && e["state"] == "logged_out"
    });
    // Some phones percent-encode the star.
    dial_feature(&server, 42044, 43410, "%2A24", "agent1", "pw-agent1");
    server.wait_count(Duration::from_secs(10), 3, |e| {
        e["type"] == "agent.state" && e["state"] == "available"
    });
    assert_eq!(
        states(),
        [
            "available",
            "paused",
            "available",
            "logged_out",
            "available"
        ]
    );
    let events = server.events();
    let features = of_type(&events, "agent.feature");
    let challenged = features
        .iter()
        .filter(|e| e["result"] == "challenged")
        .count();
    let ok: Vec<(&str, &str)> = features
        .iter()
        .filter(|e| e["result"] == "ok")
        .map(|e| (e["code"].as_str().unwrap(), e["op"].as_str().unwrap()))
        .collect();
    assert_eq!(
        challenged, 4,
        "every INVITE was challenged first: {features:#?}"
    );
    assert_eq!(
        ok,
        [
            ("*71", "pause"),
            ("*72", "ready"),
            ("*23", "logout"),
            ("%2A24", "login")
        ]
    );
    assert!(
        features
            .iter()
            .all(|e| e["result"] != "ok" || e["agent"] == "a1")
    );
    // Each authenticated call was answered and hung up by the engine after its tone.
    let done = of_type(&events, "call.ended")
        .iter()
        .filter(|e| e["cause"] == "feature_done")
        .count();
    assert_eq!(done, 4);
    // ... after its spoken confirmation.
    let said: Vec<&str> = of_type(&events, "ivr.say")
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        said,
        [
            "You are paused.",
            "You are ready.",
            "You are logged out.",
            "You are logged in."
        ]
    );
    // The API agrees.
    let (status, agents) = http(42061, "GET", "/api/v1/agents");
    assert_eq!(status, 200);
    assert_eq!(agents[0]["state"], "available", "{agents}");

    // A wrong password is refused (403) and changes nothing.
    let out = Command::new("sipp")
        .arg(format!("127.0.0.1:{}", server.sip_port))
        .args(["-i", "127.0.0.1", "-p", "42046", "-mp", "43420"])
        .args(["-sf", &scenario("agent-feature-code.xml"), "-s", "*71"])
        .args(["-key", "fc_user", "agent1", "-au", "agent1", "-ap", "wrong"])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .current_dir(&server.dir)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the scenario expects a 200, it got a 403"
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "agent.feature" && e["result"] == "forbidden"
    });
    assert_eq!(states().last().map(String::as_str), Some("available"));
}

/// One HTTP/1.1 request to the agent API with key `k1`; returns (status, JSON body).
fn http(port: u16, method: &str, path: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status: u16 = out[9..12].parse().unwrap();
    let (_, body) = out.split_once("\r\n\r\n").unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Sends key `key` as RFC 4733 events (PT 101): a start packet, continuations for 160 ms,
/// three end packets, one every 20 ms.
fn send_key(call: &common::RawCall, key: char, seq: &mut u16, ts: u32) {
    let code: u8 = match key {
        '0'..='9' => key as u8 - b'0',
        '*' => 10,
        '#' => 11,
        _ => panic!("no key {key}"),
    };
    for k in 0..11u32 {
        let end = k >= 8;
        let duration = (k.min(7) + 1) * 160;
        let mut rtp = vec![0x80, 101 | if k == 0 { 0x80 } else { 0 }];
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&ts.to_be_bytes());
        rtp.extend_from_slice(&0x7777_7777u32.to_be_bytes());
        rtp.extend_from_slice(&[code, if end { 0x80 | 10 } else { 10 }]);
        rtp.extend_from_slice(&(duration as u16).to_be_bytes());
        call.rtp.send_to(&rtp, call.server_rtp).unwrap();
        *seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_sample_hotline_queues_a_caller_who_presses_0_with_hold_music_and_position() {
    // The hotline's agent path is only open in the contact centre's hours (Asia/Shanghai):
    // a copy of it open around the clock.
    let plan = std::fs::read_to_string(common::repo_root().join("dialplans/hotline.toml"))
        .unwrap()
        .lines()
        .map(|l| {
            let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .iter()
                .find(|d| l.starts_with(&format!("{d} = ")));
            match day {
                Some(d) => format!("{d} = \"00:00-24:00\""),
                None if l.starts_with("holidays = ") => "holidays = []".to_owned(),
                None => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("sun = \"00:00-24:00\""));
    let plans = test_dir("phones-hotline-plans");
    std::fs::write(plans.join("hotline.toml"), plan).unwrap();
    // The general queue needs `banking` (the hotline's agent_queue step); the only such agent
    // is paused, so the caller waits, hearing hold music and its position every 2 s.
    let cfg = "[api]\nlisten = \"127.0.0.1:42062\"\nkeys = [\"k1\"]\n\
               [acd]\noffer_timeout_s = 10.0\n\
               [[acd.queues]]\nid = 1\nname = \"general\"\nannounce_every_s = 2.0\n\
               [[acd.queues]]\nid = 2\nname = \"card_security\"\n\
               [[agents.agent]]\nid = \"a1\"\nusername = \"agent1\"\npassword = \"pw\"\n\
               skills = [\"banking\"]\nqueues = [\"general\"]\nauto_login = true\n";
    let server = Server::start_with(
        "phones-hotline",
        42005,
        (42350, 42399),
        cfg,
        Dirs {
            dialplans: plans,
            data: None,
        },
    );
    let (status, body) = http(42062, "POST", "/api/v1/agents/a1/pause");
    assert_eq!(status, 200, "{body}");
    let call = common::RawCall::invite(&server, 42048, "18005550100");
    // "0" at the language menu: agent_check (open) → agent_queue.
    server.wait_event(Duration::from_secs(20), |e| {
        e["type"] == "ivr.step" && e["step"] == "language"
    });
    let mut seq = 100u16;
    send_key(&call, '0', &mut seq, 16_000);
    let enq = server.wait_event(Duration::from_secs(20), |e| e["type"] == "acd.enqueued");
    assert_eq!(enq["queue"], "general");
    assert_eq!(enq["skills"], serde_json::json!([["banking", 1]]));
    // Three seconds of what the caller hears from now on: hold music (RTP, not silence).
    call.rtp
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let t0 = Instant::now();
    let (mut packets, mut energy, mut samples) = (0u32, 0f64, 0u64);
    while t0.elapsed() < Duration::from_secs(3) {
        let Ok((n, _)) = call.rtp.recv_from(&mut buf) else {
            continue;
        };
        if n <= 12 || buf[1] & 0x7f != 0 {
            continue;
        }
        packets += 1;
        for s in G711::Pcmu.decode(&buf[12..n]) {
            energy += f64::from(s) * f64::from(s);
            samples += 1;
        }
    }
    let rms = (energy / samples.max(1) as f64).sqrt();
    assert!(packets > 100, "{packets} RTP packets in 3 s");
    assert!(
        rms > 200.0,
        "the caller hears hold music, not silence: RMS {rms:.0}"
    );
    // Its position, announced every 2 s (spoken over the hold music).
    server.wait_count(Duration::from_secs(15), 2, |e| e["type"] == "acd.position");
    let said = server.wait_event(Duration::from_secs(15), |e| {
        e["type"] == "ivr.say"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("You are number 1 in line."))
    });
    assert_eq!(said["language"], "en");
    call.bye();
    let ab = server.wait_event(Duration::from_secs(10), |e| e["type"] == "acd.abandoned");
    assert_eq!(ab["reason"], "hung_up");
    let events = server.events();
    let positions = of_type(&events, "acd.position");
    assert!(positions.iter().all(|e| e["position"] == 1));
    assert!(
        of_type(&events, "acd.offered").is_empty(),
        "the agent is paused"
    );
    let steps: Vec<&str> = of_type(&events, "ivr.step")
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert!(
        steps.ends_with(&["language", "agent_check", "agent_queue"]),
        "{steps:?}"
    );
}

#[test]
fn a_caller_who_asked_for_an_agent_by_voice_reaches_the_agent_with_the_transcript() {
    // The sample hotline's speech front door (number `speech`, whatever the hours): "I want
    // to speak to an agent" → the `agent` intent → `enqueue` general (skills banking = 1).
    let model = common::repo_root().join("models/ggml-tiny.en.bin");
    assert!(
        model.is_file(),
        "{} is missing: run scripts/models/fetch",
        model.display()
    );
    let cfg = format!(
        "{DESK}[speech]\nworkers = 1\nmodel = {:?}\n[acd]\noffer_timeout_s = 10.0\n\
         [[acd.queues]]\nid = 1\nname = \"general\"\n\
         [[agents.agent]]\nid = \"a1\"\nusername = \"agent1\"\npassword = \"pw-agent1\"\n\
         skills = [\"banking:3\"]\nqueues = [\"general\"]\nauto_login = true\n\
         [sip]\nauth_algorithms = [\"MD5\"]\n",
        model.display().to_string()
    );
    let server = Server::start("phones-speech", 42006, (42400, 42449), &cfg);
    register(&server, 42050, 43500, "agent1", "a1");
    let desk = phone(&server, 42050, 43510, &scenario("agent-answer.xml"), true);
    let pcm = speech_audio::line_pcm(16_000, &[(1_500, "I want to speak to an agent.")]);
    let pcap = "speech.pcap";
    speech_audio::write_line_pcap(&server.dir.join(pcap), &pcm);
    let xml = std::fs::read_to_string(scenario("ivr-dtmf.xml"))
        .unwrap()
        .replace("__CALLER__", ALICE)
        .replace("__PCAP__", pcap)
        .replace("__PAUSE_MS__", "16500");
    let sf = server.dir.join("speech-caller.xml");
    std::fs::write(&sf, xml).unwrap();
    sipp(
        &server,
        42052,
        43520,
        &["-sf", sf.to_str().unwrap(), "-s", "speech", "-m", "1"],
    );
    wait_exit(&server, desk, Duration::from_secs(30), "the agent's phone");
    let events = server.events();
    let turns = of_type(&events, "ivr.speech");
    assert!(!turns.is_empty(), "a speech turn: {}", server.log());
    let offered = of_type(&events, "acd.offered");
    assert_eq!(offered.len(), 1, "{offered:#?}");
    let pop = &offered[0]["screen_pop"];
    let transcript = pop["transcript"]
        .as_str()
        .unwrap_or_else(|| panic!("a transcript in the pop: {pop}"));
    assert!(
        transcript.to_lowercase().contains("agent"),
        "the caller's words: {transcript:?}"
    );
    assert_eq!(
        transcript, turns[0]["transcript"],
        "the IVR's (redacted) transcript"
    );
    assert!(
        pop["ivr_path"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "speech_main"),
        "{pop}"
    );
    assert_eq!(of_type(&events, "acd.answered").len(), 1);
}
