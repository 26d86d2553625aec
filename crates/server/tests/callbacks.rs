//! Callbacks that keep their place, end to end against the real binary: SIPp callers ask for a
//! callback during hold (keys as SIP INFO) and are hung up on; an agent's SIPp phone is called
//! first and hears the whisper, then the customer is dialed through a SIPp "carrier" that
//! challenges with 407 (the digest is recomputed here), and the bridge carries audio; the
//! callback is served before a live caller who queued after it. A restart after SIGKILL keeps
//! the callbacks and their order, and each number is dialed exactly once.
//!
//! Ports: SIP 40000 / 40100 / 40200 / 40300 / 40400, SIPp phones, callers and carriers
//! 40010-40099, 40110-40199, 40210-40299, 40310-40399 and 40410-40499, API 40025 / 40125 /
//! 40225 / 40325 / 40425, media 41000-41899.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dirs, Server, of_type, scenario, sipp, test_dir, write_rtp_pcap};
use frontdoor_media::g711::G711;

const PLAN: &str = r#"
name = "callback-test"

[[route]]
default = true
flow = "queue"

[flows.queue]
start = "answer"

[flows.queue.steps.answer]
verb = "answer"
next = "why"

[flows.queue.steps.why]
verb = "set"
vars = { reason = "card_payment" }
next = "q"

[flows.queue.steps.q]
verb = "enqueue"
queue = "general"
on_failure = "bye"

[flows.queue.steps.bye]
verb = "hangup"
reason = "no agent"
"#;

fn config(api: u16, carrier: u16, retry_delay_s: u64) -> String {
    format!(
        "[sip]\nauth_algorithms = [\"MD5\"]\n[media]\nrtp_timeout_s = 120\n\
         [acd]\noffer_timeout_s = 15.0\ncallback_max_attempts = 3\n\
         [[acd.queues]]\nid = 1\nname = \"general\"\nwrap_up_s = 1.0\nannounce_every_s = 300.0\n\
         [[agents.agent]]\nid = \"a1\"\nusername = \"agent1\"\npassword = \"secret-1\"\n\
         queues = [\"general\"]\nauto_login = false\n\
         [api]\nlisten = \"127.0.0.1:{api}\"\nkeys = [\"k1\"]\n\
         [callbacks]\nqueues = [\"general\"]\nkey = \"1\"\nretry_delay_s = {retry_delay_s}\n\
         ring_timeout_s = 20\n\
         [outbound]\nuri = \"sip:127.0.0.1:{carrier}\"\nusername = \"cbtrunk\"\n\
         password = \"trunk-secret\"\ncaller_id = \"+15550100\"\ndisplay_name = \"Frontdoor\"\n"
    )
}

fn start(name: &str, sip_port: u16, rtp: (u16, u16), config: &str, data: &Path) -> Server {
    let plans = test_dir(&format!("{name}-plans"));
    std::fs::write(plans.join("cb.toml"), PLAN).unwrap();
    Server::start_with(
        name,
        sip_port,
        rtp,
        config,
        Dirs {
            dialplans: plans,
            data: Some(data.to_owned()),
        },
    )
}

/// One HTTP/1.1 request to the API with key `k1`; returns (status, JSON body).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
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

/// The agent's phone registers `agent1` with digest auth from 127.0.0.1:`port`.
fn register(server: &Server, port: u16, media: u16) {
    sipp(
        server,
        port,
        media,
        &[
            "-sf",
            &scenario("register.xml"),
            "-s",
            "agent1",
            "-au",
            "agent1",
            "-ap",
            "secret-1",
            "-key",
            "expires",
            "600",
            "-m",
            "1",
        ],
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "agent.registered" && e["agent"] == "a1"
    });
}

/// A SIPp process in the background (phones, the carrier, live callers).
fn background(server: &Server, target: Option<u16>, port: u16, media: u16, args: &[&str]) -> Child {
    let mut cmd = Command::new("sipp");
    if let Some(t) = target {
        cmd.arg(format!("127.0.0.1:{t}"));
    }
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-mp", &media.to_string()])
        .args(args)
        .args([
            "-nostdin",
            "-timeout",
            "150s",
            "-timeout_error",
            "-trace_err",
        ])
        .current_dir(&server.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("sipp must be installed");
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn wait_exit(server: &Server, mut child: Child, what: &str, within: Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(
                s.success(),
                "{what} failed: {s:?}\nSIPp errors:\n{}\nserver log:\n{}",
                sipp_errors(&server.dir),
                server.log()
            );
            return;
        }
        if t0.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {within:?}\nserver log:\n{}",
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sipp_errors(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with("_errors.log") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// One SIP INFO carrying `digit` (application/dtmf-relay), CSeq `cseq`, then a pause.
fn info(digit: char, cseq: u32, pause_ms: u32) -> String {
    format!(
        r#"  <send retrans="500">
    <![CDATA[
      INFO sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:__CALLER__@[local_ip]:[local_port]>;tag=[pid]CbTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Contact: <sip:__CALLER__@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=160
    ]]>
  </send>
  <recv response="200"/>
  <pause milliseconds="{pause_ms}"/>
"#
    )
}

/// A caller `from` who waits `wait_ms` in the queue, then presses `keys` (one INFO each) and
/// must be hung up on by the engine.
fn request_callback(server: &Server, tag: &str, port: u16, media: u16, from: &str, keys: &str) {
    request_callback_after(server, tag, port, media, from, keys, 2500);
}

/// [`request_callback`], the first key `wait_ms` after the answer.
fn request_callback_after(
    server: &Server,
    tag: &str,
    port: u16,
    media: u16,
    from: &str,
    keys: &str,
    wait_ms: u32,
) {
    let infos: String = keys
        .chars()
        .enumerate()
        .map(|(i, d)| info(d, 2 + u32::try_from(i).unwrap(), 700))
        .collect();
    let xml = std::fs::read_to_string(scenario("callback-request.xml"))
        .unwrap()
        .replace("__INFOS__", &infos)
        .replace("__CALLER__", from)
        .replace("__WAIT_MS__", &wait_ms.to_string());
    let sf: PathBuf = server.dir.join(format!("{tag}.xml"));
    std::fs::write(&sf, xml).unwrap();
    sipp(
        server,
        port,
        media,
        &["-sf", sf.to_str().unwrap(), "-s", "5000", "-m", "1"],
    );
}

fn tone_frames(ms: u32, hz: f64) -> Vec<Vec<u8>> {
    let tone: Vec<i16> = (0..160)
        .map(|n| (3000.0 * (2.0 * std::f64::consts::PI * hz * f64::from(n) / 8000.0).sin()) as i16)
        .collect();
    let frame = G711::Pcmu.encode(&tone).to_vec();
    (0..ms / 20).map(|_| frame.clone()).collect()
}

/// A live caller (+14155550199) who stays `ms` on the line sending a tone, then hangs up.
fn live_caller(server: &Server, port: u16, media: u16, ms: u32) -> Child {
    write_rtp_pcap(
        &server.dir.join("live.pcap"),
        0,
        20,
        &tone_frames(2000, 440.0),
    );
    let xml = std::fs::read_to_string(scenario("ivr-dtmf.xml"))
        .unwrap()
        .replace("__CALLER__", "+14155550199")
        .replace("__PCAP__", "live.pcap")
        .replace("__PAUSE_MS__", &ms.to_string());
    let sf = server.dir.join("live.xml");
    std::fs::write(&sf, xml).unwrap();
    background(
        server,
        Some(server.sip_port),
        port,
        media,
        &["-sf", sf.to_str().unwrap(), "-s", "5000", "-m", "1"],
    )
}

/// The carrier (407, then the customer answers and talks `talk_ms`), `calls` calls.
fn carrier(
    server: &Server,
    port: u16,
    media: u16,
    number_re: &str,
    calls: u32,
    talk_ms: u32,
) -> Child {
    write_rtp_pcap(
        &server.dir.join("customer.pcap"),
        0,
        20,
        &tone_frames(talk_ms, 1000.0),
    );
    let xml = std::fs::read_to_string(scenario("carrier-407.xml"))
        .unwrap()
        .replace("__NUMBER_RE__", number_re)
        .replace("__PCAP__", "customer.pcap")
        .replace("__TALK_MS__", &(talk_ms + 300).to_string());
    let sf = server.dir.join("carrier.xml");
    std::fs::write(&sf, xml).unwrap();
    background(
        server,
        None,
        port,
        media,
        &[
            "-sf",
            sf.to_str().unwrap(),
            "-m",
            &calls.to_string(),
            "-trace_logs",
        ],
    )
}

fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The carrier's log lines: (Request-URI, Proxy-Authorization), each digest recomputed here
/// (RFC 2617 qop=auth, MD5) from the trunk's password.
fn carrier_auths(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("carrier") && name.ends_with("_logs.log")) {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let Some(rest) = line.split("CARRIER-AUTH ").nth(1) else {
                continue;
            };
            let (ruri, header) = rest.split_once('|').unwrap();
            let params = header.trim().strip_prefix("Digest ").unwrap();
            let field = |k: &str| -> String {
                params
                    .split(',')
                    .map(str::trim)
                    .find_map(|p| p.strip_prefix(&format!("{k}=")))
                    .unwrap_or_else(|| panic!("{k} missing in {header}"))
                    .trim_matches('"')
                    .to_owned()
            };
            assert_eq!(field("uri"), ruri, "digest uri is the Request-URI");
            let ha1 = md5_hex(&format!(
                "{}:{}:trunk-secret",
                field("username"),
                field("realm")
            ));
            let ha2 = md5_hex(&format!("INVITE:{ruri}"));
            let expect = md5_hex(&format!(
                "{ha1}:{}:{}:{}:{}:{ha2}",
                field("nonce"),
                field("nc"),
                field("cnonce"),
                field("qop")
            ));
            assert_eq!(field("response"), expect, "digest response of {header}");
            out.push(ruri.to_owned());
        }
    }
    out
}

fn position(events: &[serde_json::Value], pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("event missing; events: {events:#?}"))
}

#[test]
fn a_callback_keeps_its_place_calls_the_agent_first_then_the_customer_through_a_407_carrier() {
    let data = test_dir("cb-e2e-data");
    let server = start(
        "cb-e2e",
        40000,
        (41000, 41199),
        &config(40025, 40010, 1),
        &data,
    );
    register(&server, 40020, 40060);
    // Logged in but paused: callers can queue, nobody is offered yet.
    assert_eq!(http(40025, "POST", "/api/v1/agents/a1/login", "").0, 200);
    assert_eq!(
        http(40025, "POST", "/api/v1/agents/a1/pause", r#"{"code":1}"#).0,
        200
    );
    // The caller asks (key 1), confirms its number (1), is told when and hung up on.
    request_callback(&server, "ask", 40021, 40070, "+14155550123", "11");
    let requested = server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "callback.requested"
    });
    assert_eq!(requested["number"], "+14155550123");
    assert_eq!(requested["queue"], "general");
    assert_eq!(requested["position"], 1);
    let cb_id = requested["callback_id"].as_i64().unwrap();
    let cb_entry = requested["entry"].as_u64().unwrap();
    let asker = requested["call_id"].as_str().unwrap().to_owned();
    let events = server.events();
    let asked = position(&events, |e| {
        e["type"] == "callback.asked" && e["call_id"] == asker.as_str()
    });
    assert_eq!(events[asked]["trigger"], "key");
    // The question reads the number back (when it was rendered before the caller's answer:
    // a late render is dropped rather than played over the goodbye).
    if let Some(q) = events.iter().find(|e| {
        e["type"] == "ivr.say"
            && e["call_id"] == asker.as_str()
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains("Press 1 to confirm"))
    }) {
        assert!(
            q["text"]
                .as_str()
                .unwrap()
                .starts_with("We will call you back on 4 1 5 5 5 5 0 1 2 3"),
            "{q}"
        );
    }
    // Stored first, told after.
    let stored = position(&events, |e| e["type"] == "callback.requested");
    let told = position(&events, |e| {
        e["type"] == "ivr.say"
            && e["call_id"] == asker.as_str()
            && e["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Thank you. We will call you back"))
    });
    assert!(asked < stored && stored < told);
    assert!(
        events.iter().any(|e| e["type"] == "call.ended"
            && e["call_id"] == asker.as_str()
            && e["cause"] == "callback_requested"),
        "the engine hung up after telling the caller"
    );
    // Stored before the caller was told, in line.
    let (s, list) = http(40025, "GET", "/api/v1/callbacks", "");
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], cb_id);
    assert_eq!(list[0]["state"], "waiting");
    assert_eq!(list[0]["context"]["reason"], "card_payment");

    // A live caller queues behind it.
    let live = live_caller(&server, 40022, 40080, 40_000);
    let live_enq = server.wait_event(Duration::from_secs(15), |e| {
        e["type"] == "acd.enqueued" && e["entry"].as_u64() != Some(cb_entry)
    });
    let live_entry = live_enq["entry"].as_u64().unwrap();

    // The agent's phone takes two calls (the callback, then the live caller); the carrier one.
    let phone = background(
        &server,
        Some(server.sip_port),
        40020,
        40060,
        &[
            "-sf",
            &scenario("agent-callback.xml"),
            "-m",
            "2",
            "-rtp_echo",
        ],
    );
    let carrier = carrier(&server, 40010, 40090, r"\+14155550123", 1, 3000);
    assert_eq!(http(40025, "POST", "/api/v1/agents/a1/ready", "").0, 200);

    wait_exit(&server, carrier, "the carrier", Duration::from_secs(90));
    wait_exit(
        &server,
        phone,
        "the agent's phone",
        Duration::from_secs(120),
    );
    wait_exit(&server, live, "the live caller", Duration::from_secs(90));

    let events = server.events();
    let ev = |pred: &dyn Fn(&serde_json::Value) -> bool| position(&events, pred);
    let claimed = ev(&|e| e["type"] == "callback.attempt" && e["stage"] == "claimed");
    let agent_leg = ev(&|e| e["type"] == "callback.attempt" && e["stage"] == "agent_leg");
    let whisper = ev(&|e| e["type"] == "callback.attempt" && e["stage"] == "whisper");
    let customer = ev(&|e| e["type"] == "callback.attempt" && e["stage"] == "customer_leg");
    let served = ev(&|e| e["type"] == "callback.outcome" && e["outcome"] == "served");
    let live_offered =
        ev(&|e| e["type"] == "acd.offered" && e["entry"].as_u64() == Some(live_entry));
    assert!(
        claimed < agent_leg && agent_leg < whisper && whisper < customer && customer < served,
        "claim, agent first, whisper, then the customer"
    );
    assert!(
        served < live_offered,
        "the callback was served in its place, before the caller who queued after it"
    );
    assert_eq!(events[served]["callback_id"], cb_id);
    assert_eq!(events[claimed]["attempt"], 1);
    assert_eq!(events[claimed]["agent"], "a1");
    // The whisper told the agent who and why.
    let agent_leg_id = events[agent_leg]["leg_call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The agent's screen pop for the callback: the asking call's context, flagged.
    let cb_offer =
        &events[ev(&|e| e["type"] == "acd.offered" && e["entry"].as_u64() == Some(cb_entry))];
    assert!(claimed < ev(&|e| e["type"] == "acd.offered" && e["entry"].as_u64() == Some(cb_entry)));
    assert_eq!(cb_offer["leg_call_id"], agent_leg_id.as_str());
    let pop = &cb_offer["screen_pop"];
    assert_eq!(pop["callback"], true, "{pop}");
    assert_eq!(pop["agent"], "a1");
    assert_eq!(pop["queue"], "general");
    assert_eq!(pop["caller_number"], "+14155550123");
    assert_eq!(pop["call_id"], asker.as_str(), "the call that asked");
    assert!(
        pop["ivr_path"].as_array().is_some_and(|p| !p.is_empty()),
        "{pop}"
    );
    assert_eq!(events[live_offered]["screen_pop"]["callback"], false);
    let said = events
        .iter()
        .find(|e| e["type"] == "ivr.say" && e["call_id"] == agent_leg_id.as_str())
        .expect("the whisper was spoken to the agent");
    let text = said["text"].as_str().unwrap();
    assert!(
        text.starts_with("Callback for the caller at 4 1 5 5 5 5 0 1 2 3")
            && text.contains("about card payment"),
        "{text}"
    );
    // The bridge carried audio both ways (the customer talks, the agent's phone echoes).
    let customer_leg_id = events[customer]["leg_call_id"].as_str().unwrap().to_owned();
    let u = of_type(&events, "bridge.unbridged")
        .into_iter()
        .find(|e| {
            e["call_id"] == customer_leg_id.as_str()
                || e["peer_call_id"] == customer_leg_id.as_str()
        })
        .expect("the callback bridge reported its counters");
    for k in ["audio_in", "audio_out", "peer_audio_in", "peer_audio_out"] {
        assert!(u[k].as_u64().unwrap() > 50, "{k} = {} in {u}", u[k]);
    }
    // The carrier's 407 was answered with a digest that verifies, for the callback number.
    let auths = carrier_auths(&server.dir);
    assert_eq!(auths.len(), 1, "{auths:?}");
    assert!(
        auths[0].starts_with("sip:+14155550123@127.0.0.1:40010"),
        "{auths:?}"
    );
    // The store says served, with one attempt by a1.
    let (s, one) = http(40025, "GET", &format!("/api/v1/callbacks/{cb_id}"), "");
    assert_eq!(s, 200);
    assert_eq!(one["state"], "served", "{one}");
    let log = one["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 1, "{one}");
    assert_eq!(log[0]["outcome"], "served");
    assert_eq!(log[0]["agent"], "a1");
    assert_eq!(
        http(40025, "GET", "/api/v1/callbacks", "").1,
        serde_json::json!([])
    );
    // The live caller was then bridged to the agent.
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "acd.answered" && e["entry"].as_u64() == Some(live_entry))
    );
}

#[test]
fn callbacks_survive_sigkill_in_order_and_each_number_is_dialed_once() {
    let data = test_dir("cb-restart-data");
    // The second caller is a VIP customer: its callback goes first (class 1).
    let csv = data.join("customers.csv");
    std::fs::write(&csv, "phone,name,vip\n+14155550122,Ada Lovelace,yes\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
        .args(["customers", "import"])
        .arg(&csv)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cfg = config(40125, 40110, 1);
    let mut server = start("cb-restart", 40100, (41200, 41399), &cfg, &data);
    assert_eq!(http(40125, "POST", "/api/v1/agents/a1/login", "").0, 200);
    assert_eq!(
        http(40125, "POST", "/api/v1/agents/a1/pause", r#"{"code":1}"#).0,
        200
    );
    let numbers = ["+14155550121", "+14155550122", "+14155550123"];
    for (i, n) in numbers.iter().enumerate() {
        let i16 = u16::try_from(i).unwrap();
        request_callback(
            &server,
            &format!("ask{i}"),
            40121 + i16,
            40170 + 6 * i16,
            n,
            "11",
        );
        server.wait_count(Duration::from_secs(10), i + 1, |e| {
            e["type"] == "callback.requested"
        });
    }
    let (_, before) = http(40125, "GET", "/api/v1/callbacks", "");
    let order = |list: &serde_json::Value| -> Vec<(i64, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_i64().unwrap(),
                    c["number"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let before = order(&before);
    // Line order: the VIP first, then the others in the order they queued.
    let line = ["+14155550122", "+14155550121", "+14155550123"];
    assert_eq!(
        before.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
        line,
        "VIP first, then request order"
    );
    // SIGKILL: no shutdown path runs.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = start("cb-restart-2", 40100, (41200, 41399), &cfg, &data);
    let (_, after) = http(40125, "GET", "/api/v1/callbacks", "");
    assert_eq!(
        order(&after),
        before,
        "the same callbacks in the same order"
    );
    let restored: Vec<i64> = server
        .wait_count(Duration::from_secs(5), 3, |e| {
            e["type"] == "callback.queued" && e["reason"] == "restored"
        })
        .iter()
        .map(|e| e["callback_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        restored,
        before.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        "back in the queue in line order"
    );
    let (_, queues) = http(40125, "GET", "/api/v1/queues", "");
    assert_eq!(queues[0]["waiting"], 3, "{queues}");

    register(&server, 40120, 40160);
    let phone = background(
        &server,
        Some(server.sip_port),
        40120,
        40160,
        &[
            "-sf",
            &scenario("agent-callback.xml"),
            "-m",
            "3",
            "-rtp_echo",
        ],
    );
    let carrier = carrier(&server, 40110, 40190, r"\+1415555012[123]", 3, 1500);
    assert_eq!(http(40125, "POST", "/api/v1/agents/a1/login", "").0, 200);
    wait_exit(&server, carrier, "the carrier", Duration::from_secs(150));
    wait_exit(&server, phone, "the agent's phone", Duration::from_secs(60));

    // Each number dialed exactly once, in line order, each digest correct.
    let dialed: Vec<String> = carrier_auths(&server.dir)
        .iter()
        .map(|u| {
            u.trim_start_matches("sip:")
                .split('@')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(dialed, line, "each number once, in line order");
    let events = server.events();
    let served: Vec<i64> = of_type(&events, "callback.outcome")
        .iter()
        .filter(|e| e["outcome"] == "served")
        .map(|e| e["callback_id"].as_i64().unwrap())
        .collect();
    assert_eq!(served, before.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    // The agent heard who it was: the VIP by name.
    assert!(
        events.iter().any(|e| e["type"] == "ivr.say"
            && e["text"].as_str().is_some_and(
                |t| t.starts_with("Callback for Ada Lovelace, VIP, about card payment")
            )),
        "the whisper names the VIP"
    );
    for (id, _) in &before {
        let (_, one) = http(40125, "GET", &format!("/api/v1/callbacks/{id}"), "");
        assert_eq!(one["state"], "served", "{one}");
        assert_eq!(one["attempt_log"].as_array().unwrap().len(), 1, "{one}");
    }
    assert_eq!(
        http(40125, "GET", "/api/v1/callbacks", "").1,
        serde_json::json!([])
    );
}

#[test]
fn a_busy_customer_is_retried_in_its_place_and_the_api_cancels_and_reschedules() {
    let data = test_dir("cb-retry-data");
    let server = start(
        "cb-retry",
        40200,
        (41400, 41599),
        &config(40225, 40210, 3),
        &data,
    );
    register(&server, 40220, 40260);
    assert_eq!(http(40225, "POST", "/api/v1/agents/a1/login", "").0, 200);
    assert_eq!(
        http(40225, "POST", "/api/v1/agents/a1/pause", r#"{"code":1}"#).0,
        200
    );
    request_callback(&server, "ask1", 40221, 40270, "+14155550131", "11");
    // The second caller keys in another number: 2, the digits, #, then confirms.
    request_callback(
        &server,
        "ask2",
        40222,
        40276,
        "+14155550132",
        "124155550142#1",
    );
    request_callback(&server, "ask3", 40223, 40282, "+14155550133", "11");
    server.wait_count(Duration::from_secs(10), 3, |e| {
        e["type"] == "callback.requested"
    });
    let (_, list) = http(40225, "GET", "/api/v1/callbacks", "");
    let list = list.as_array().unwrap().clone();
    let numbers: Vec<&str> = list.iter().map(|c| c["number"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["+14155550131", "+14155550142", "+14155550133"]);
    let id = |i: usize| list[i]["id"].as_i64().unwrap();

    // Cancel the third: it leaves the store's line and the queue; twice is a conflict.
    let (s, c) = http(40225, "DELETE", &format!("/api/v1/callbacks/{}", id(2)), "");
    assert_eq!((s, c["state"].as_str()), (200, Some("cancelled")), "{c}");
    assert_eq!(
        http(40225, "DELETE", &format!("/api/v1/callbacks/{}", id(2)), "").0,
        409
    );
    assert_eq!(http(40225, "DELETE", "/api/v1/callbacks/999", "").0, 404);
    // Reschedule the second an hour later: it leaves the queue until then, keeping its place.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (s, r) = http(
        40225,
        "POST",
        &format!("/api/v1/callbacks/{}/reschedule", id(1)),
        &format!(r#"{{"not_before":"{later}"}}"#),
    );
    assert_eq!(s, 200, "{r}");
    assert!(r["not_before"].is_string(), "{r}");
    assert_eq!(
        http(
            40225,
            "POST",
            &format!("/api/v1/callbacks/{}/reschedule", id(1)),
            "{bad"
        )
        .0,
        400
    );
    let (_, queues) = http(40225, "GET", "/api/v1/queues", "");
    assert_eq!(
        queues[0]["waiting"], 1,
        "only the first waits now: {queues}"
    );

    // First attempt: the customer is busy. The retry after 3 s reaches it.
    let busy = background(
        &server,
        None,
        40210,
        40290,
        &["-sf", &scenario("carrier-busy.xml"), "-m", "1"],
    );
    let phone = background(
        &server,
        Some(server.sip_port),
        40220,
        40260,
        &[
            "-sf",
            &scenario("agent-callback.xml"),
            "-m",
            "2",
            "-rtp_echo",
        ],
    );
    assert_eq!(http(40225, "POST", "/api/v1/agents/a1/ready", "").0, 200);
    wait_exit(&server, busy, "the busy carrier", Duration::from_secs(60));
    let carrier = carrier(&server, 40210, 40290, r"\+14155550131", 1, 1500);
    wait_exit(&server, carrier, "the carrier", Duration::from_secs(90));
    wait_exit(&server, phone, "the agent's phone", Duration::from_secs(60));

    let events = server.events();
    let outcomes: Vec<&serde_json::Value> = of_type(&events, "callback.outcome")
        .into_iter()
        .filter(|e| e["callback_id"] == id(0))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[0]["outcome"], "failed");
    assert_eq!(outcomes[0]["reason"], "busy");
    assert_eq!(outcomes[0]["status"], 486);
    assert!(outcomes[0]["retry_at"].is_string());
    assert_eq!(outcomes[1]["outcome"], "served");
    let f = position(&events, |e| {
        e["type"] == "callback.outcome" && e["outcome"] == "failed"
    });
    let back = position(&events, |e| {
        e["type"] == "callback.queued" && e["reason"] == "retry" && e["callback_id"] == id(0)
    });
    let s = position(&events, |e| {
        e["type"] == "callback.outcome" && e["outcome"] == "served"
    });
    assert!(f < back && back < s);
    let (_, one) = http(40225, "GET", &format!("/api/v1/callbacks/{}", id(0)), "");
    let log = one["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{one}");
    assert_eq!(
        (log[0]["outcome"].as_str(), log[0]["detail"].as_str()),
        (Some("failed"), Some("busy"))
    );
    assert_eq!(log[1]["outcome"], "served");
    // Only the first number reached the carrier: the rescheduled and the cancelled were not
    // dialed.
    assert_eq!(carrier_auths(&server.dir).len(), 1);
    let (_, left) = http(40225, "GET", "/api/v1/callbacks", "");
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["id"], id(1));
    assert_eq!(left[0]["number"], "+14155550142");
    assert_eq!(left[0]["state"], "waiting");
    // Rescheduled to now, it rejoins the queue at once.
    let (s, _) = http(
        40225,
        "POST",
        &format!("/api/v1/callbacks/{}/reschedule", id(1)),
        r#"{"not_before":null}"#,
    );
    assert_eq!(s, 200);
    server.wait_event(Duration::from_secs(5), |e| {
        e["type"] == "callback.queued" && e["reason"] == "rescheduled" && e["callback_id"] == id(1)
    });
}

#[test]
fn customer_first_dials_the_customer_then_rings_the_agent_and_bridges() {
    let data = test_dir("cb-cf-data");
    let cfg = config(40325, 40310, 1).replace(
        "ring_timeout_s = 20\n",
        "ring_timeout_s = 20\ncustomer_first = [\"general\"]\n",
    );
    let server = start("cb-cf", 40300, (41600, 41799), &cfg, &data);
    register(&server, 40320, 40360);
    assert_eq!(http(40325, "POST", "/api/v1/agents/a1/login", "").0, 200);
    assert_eq!(
        http(40325, "POST", "/api/v1/agents/a1/pause", r#"{"code":1}"#).0,
        200
    );
    request_callback(&server, "ask", 40321, 40370, "+14155550123", "11");
    let requested = server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "callback.requested"
    });
    let cb_id = requested["callback_id"].as_i64().unwrap();
    let phone = background(
        &server,
        Some(server.sip_port),
        40320,
        40360,
        &[
            "-sf",
            &scenario("agent-callback.xml"),
            "-m",
            "1",
            "-rtp_echo",
        ],
    );
    let carrier = carrier(&server, 40310, 40390, r"\+14155550123", 1, 5000);
    assert_eq!(http(40325, "POST", "/api/v1/agents/a1/ready", "").0, 200);
    wait_exit(&server, carrier, "the carrier", Duration::from_secs(90));
    wait_exit(&server, phone, "the agent's phone", Duration::from_secs(60));

    let events = server.events();
    let stage = |s: &str| {
        position(&events, |e| {
            e["type"] == "callback.attempt" && e["stage"] == s && e["callback_id"] == cb_id
        })
    };
    let (claimed, customer, agent) = (stage("claimed"), stage("customer_leg"), stage("agent_leg"));
    let served = position(&events, |e| {
        e["type"] == "callback.outcome" && e["outcome"] == "served"
    });
    assert!(
        claimed < customer && customer < agent && agent < served,
        "customer first, then the agent"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "callback.attempt" && e["stage"] == "whisper"),
        "no whisper in customer-first mode"
    );
    let customer_leg = events[customer]["leg_call_id"].as_str().unwrap().to_owned();
    assert!(
        events.iter().any(|e| e["type"] == "ivr.say"
            && e["call_id"] == customer_leg.as_str()
            && e["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Hello, this is your requested callback"))),
        "the customer was asked to hold"
    );
    let u = of_type(&events, "bridge.unbridged")
        .into_iter()
        .find(|e| {
            e["call_id"] == customer_leg.as_str() || e["peer_call_id"] == customer_leg.as_str()
        })
        .expect("the callback bridge reported its counters");
    for k in ["audio_in", "audio_out", "peer_audio_in", "peer_audio_out"] {
        assert!(u[k].as_u64().unwrap() > 50, "{k} = {} in {u}", u[k]);
    }
    assert_eq!(carrier_auths(&server.dir).len(), 1);
    let (_, one) = http(40325, "GET", &format!("/api/v1/callbacks/{cb_id}"), "");
    assert_eq!(one["state"], "served", "{one}");
    // The agent's call ended in wrap-up (the ACD saw the whole call).
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "agent.state" && e["state"] == "wrap_up"
    });
}

#[test]
fn the_overflow_rule_offers_a_callback_to_a_caller_who_waited_too_long() {
    let data = test_dir("cb-overflow-data");
    // No key in this queue: only the ACD's overflow rule offers the callback.
    let cfg = config(40425, 40410, 1)
        .replace(
            "[callbacks]\nqueues = [\"general\"]",
            "[callbacks]\nqueues = []",
        )
        .replace(
            "[[agents.agent]]",
            "[[acd.queues.overflow]]\nafter_s = 2.0\naction = { kind = \"offer_callback\" }\n\
             [[agents.agent]]",
        );
    let server = start("cb-overflow", 40400, (41800, 41899), &cfg, &data);
    assert_eq!(http(40425, "POST", "/api/v1/agents/a1/login", "").0, 200);
    assert_eq!(
        http(40425, "POST", "/api/v1/agents/a1/pause", r#"{"code":1}"#).0,
        200
    );
    // After 2 s in line the engine offers; the caller confirms with 1 alone.
    request_callback_after(&server, "ask", 40421, 40470, "+14155550123", "1", 4500);
    let requested = server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "callback.requested"
    });
    assert_eq!(requested["number"], "+14155550123");
    let asker = requested["call_id"].as_str().unwrap().to_owned();
    let events = server.events();
    let asked = position(&events, |e| {
        e["type"] == "callback.asked" && e["call_id"] == asker.as_str()
    });
    assert_eq!(events[asked]["trigger"], "overflow");
    assert_eq!(events[asked]["number_known"], true);
    let key = position(&events, |e| {
        e["type"] == "dtmf" && e["call_id"] == asker.as_str()
    });
    assert!(asked < key, "the offer came before the caller's key");
    // The question (if it was rendered before the key: it is dropped once answered).
    if let Some(q) = events.iter().find(|e| {
        e["type"] == "ivr.say"
            && e["call_id"] == asker.as_str()
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains("We will call you back on"))
    }) {
        assert!(
            q["text"].as_str().unwrap().starts_with(
                "All our agents are still busy. We can call you back instead. We will call you back on 4 1 5"
            ),
            "{q}"
        );
    }
    let (_, list) = http(40425, "GET", "/api/v1/callbacks", "");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (_, queues) = http(40425, "GET", "/api/v1/queues", "");
    assert_eq!(
        queues[0]["waiting"], 1,
        "the callback keeps the caller's place: {queues}"
    );
}
