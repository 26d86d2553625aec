//! The ACD end to end: a SIPp caller reaches an `enqueue` step, the ACD offers it to a logged-in
//! agent whose phone (a SIPp UAS that registered with digest auth from the same port) is rung
//! by the engine, answered and bridged with the caller; the caller hanging up while the agent
//! rings cancels the agent leg; without agents logged in the step's `on_failure` runs.
//!
//! Ports: SIP 25300-25304, SIPp/pjsua/API/webhook 25320-25329, media 27000-27199.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dirs, Server, of_type, queue_plan, scenario, sipp, test_dir, write_rtp_pcap};
use frontdoor_media::g711::G711;

fn config(offer_timeout_s: f64, auto_login: bool) -> String {
    format!(
        "[sip]\nauth_algorithms = [\"MD5\"]\n[acd]\noffer_timeout_s = {offer_timeout_s}\n\
         [[acd.queues]]\nid = 1\nname = \"general\"\nwrap_up_s = 30.0\n\
         [[agents.agent]]\nid = \"a1\"\nusername = \"agent1\"\npassword = \"secret-1\"\n\
         queues = [\"general\"]\nauto_login = {auto_login}\n"
    )
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

/// A webhook receiver on 127.0.0.1:`port`: answers one POST with 200 and hands over its
/// headers (lower-cased names) and raw body.
fn webhook_receiver(
    port: u16,
) -> std::sync::mpsc::Receiver<(std::collections::HashMap<String, String>, Vec<u8>)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut headers = std::collections::HashMap::new();
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
        let mut w = stream;
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        let _ = tx.send((headers, body));
    });
    rx
}

fn start(name: &str, sip_port: u16, rtp: (u16, u16), config: &str) -> Server {
    let plans = test_dir(&format!("{name}-plans"));
    std::fs::write(plans.join("acd.toml"), queue_plan("acd-test")).unwrap();
    Server::start_with(
        name,
        sip_port,
        rtp,
        config,
        Dirs {
            dialplans: plans,
            data: None,
        },
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
            "300",
            "-m",
            "1",
        ],
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "agent.registered" && e["agent"] == "a1"
    });
}

/// The agent's phone, listening on the registered contact's port, in the background.
fn agent_phone(server: &Server, port: u16, media: u16, xml: &str, echo: bool) -> Child {
    let mut cmd = Command::new("sipp");
    cmd.arg(format!("127.0.0.1:{}", server.sip_port))
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-mp", &media.to_string()])
        .args(["-sf", &scenario(xml), "-m", "1"])
        .args([
            "-nostdin",
            "-timeout",
            "40s",
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

fn wait_exit(mut child: Child, within: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent's SIPp did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A caller (SIPp, PCMU audio from a pcap for `ms`, then BYE) through the queue flow.
fn caller(server: &Server, tag: &str, port: u16, media: u16, ms: u32) {
    let tone: Vec<i16> = (0..160)
        .map(|n| {
            (3000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(n) / 8000.0).sin()) as i16
        })
        .collect();
    let frame = G711::Pcmu.encode(&tone).to_vec();
    let frames: Vec<Vec<u8>> = (0..ms / 20).map(|_| frame.clone()).collect();
    let pcap = format!("{tag}.pcap");
    write_rtp_pcap(&server.dir.join(&pcap), 0, 20, &frames);
    let xml = std::fs::read_to_string(scenario("ivr-dtmf.xml"))
        .unwrap()
        .replace("__CALLER__", "+14155550123")
        .replace("__PCAP__", &pcap)
        .replace("__PAUSE_MS__", &(ms + 500).to_string());
    let sf: PathBuf = server.dir.join(format!("{tag}.xml"));
    std::fs::write(&sf, xml).unwrap();
    sipp(
        server,
        port,
        media,
        &["-sf", sf.to_str().unwrap(), "-s", "5000", "-m", "1"],
    );
}

fn position(events: &[serde_json::Value], pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("event missing; events: {events:#?}"))
}

#[test]
fn a_queued_caller_is_bridged_to_the_agent_who_answers_then_the_agent_wraps_up() {
    let pops = webhook_receiver(25326);
    let screenpop = "[screenpop]\nurl = \"http://127.0.0.1:25326/pop\"\nsecret = \"pop-secret\"\n\
                     url_base = \"http://desk.example/pop\"\n";
    let server = start(
        "acd-answer",
        25300,
        (27000, 27019),
        &format!("{screenpop}{}", config(10.0, true)),
    );
    register(&server, 25320, 27050);
    let phone = agent_phone(&server, 25320, 27060, "agent-answer.xml", true);
    caller(&server, "answer", 25321, 27080, 5000);
    let status = wait_exit(phone, Duration::from_secs(20));
    assert!(
        status.success(),
        "the agent's phone got the call and the BYE: {status:?}\n{}",
        server.log()
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "agent.state" && e["agent"] == "a1" && e["state"] == "wrap_up"
    });
    let events = server.events();
    let enq = position(&events, |e| e["type"] == "acd.enqueued");
    let caller_id = events[enq]["call_id"].as_str().unwrap().to_owned();
    assert_eq!(events[enq]["queue"], "general");
    let offered = position(&events, |e| e["type"] == "acd.offered");
    let o = &events[offered];
    assert_eq!(o["agent"], "a1");
    assert_eq!(o["contact"], "sip:agent1@127.0.0.1:25320");
    assert_eq!(o["screen_pop"]["call_id"], caller_id.as_str());
    assert_eq!(o["screen_pop"]["queue"], "general");
    assert_eq!(o["screen_pop"]["caller_number"], "+14155550123");
    let leg_id = o["leg_call_id"].as_str().unwrap().to_owned();
    let answered = position(&events, |e| e["type"] == "acd.answered");
    assert_eq!(events[answered]["leg_call_id"], leg_id.as_str());
    let bridged = position(&events, |e| {
        e["type"] == "bridge.bridged" && e["call_id"] == caller_id.as_str()
    });
    assert!(enq < offered && offered < answered && answered < bridged);
    // RTP both ways: the caller's audio reached the agent and the agent's (echoed) came back.
    let unbridged = of_type(&events, "bridge.unbridged");
    let u = unbridged
        .iter()
        .find(|e| e["call_id"] == caller_id.as_str() || e["call_id"] == leg_id.as_str())
        .expect("the bridge reported its counters");
    for k in ["audio_in", "audio_out", "peer_audio_in", "peer_audio_out"] {
        assert!(u[k].as_u64().unwrap() > 50, "{k} = {} in {u}", u[k]);
    }
    // The caller's BYE ended both legs.
    let ended: Vec<_> = of_type(&events, "call.ended");
    let cause = |id: &str| {
        ended
            .iter()
            .find(|e| e["call_id"] == id)
            .map(|e| e["cause"].as_str().unwrap().to_owned())
    };
    assert_eq!(cause(&caller_id).as_deref(), Some("remote_bye"));
    assert_eq!(cause(&leg_id).as_deref(), Some("bridge_peer_ended"));
    let states: Vec<&str> = of_type(&events, "agent.state")
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["available", "offered", "on_call", "wrap_up"]);
    // The screen pop reached the webhook, signed.
    let (headers, body) = pops.recv_timeout(Duration::from_secs(10)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    frontdoor::screenpop::verify(
        b"pop-secret",
        &headers["x-frontdoor-timestamp"],
        &body,
        &headers["x-frontdoor-signature"],
        now,
        Duration::from_secs(300),
    )
    .expect("the signature verifies");
    let pop: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(pop["call_id"], caller_id.as_str());
    assert_eq!(pop["agent"], "a1");
    // The caller's context (an unknown first-time caller straight to the queue; the full
    // context is checked in acd_phones.rs).
    assert_eq!(pop["queue"], "general");
    assert_eq!(pop["caller_number"], "+14155550123");
    assert_eq!(pop["ivr_path"], serde_json::json!(["answer", "q"]));
    assert_eq!(pop["digits"], serde_json::json!([]));
    assert!(
        pop["customer"].is_null() && pop["transcript"].is_null(),
        "{pop}"
    );
    assert_eq!(pop["previous_calls"], 0);
    assert_eq!(pop["callback"], false);
    assert!(pop["waited_s"].as_u64().unwrap() < 10, "{pop}");
    assert_eq!(
        pop, o["screen_pop"],
        "the webhook and the event carry the same pop"
    );
    server.wait_event(Duration::from_secs(5), |e| {
        e["type"] == "screenpop.delivered" && e["status"] == 200
    });
    let ivr_end = events
        .iter()
        .find(|e| e["type"] == "ivr.ended" && e["call_id"] == caller_id.as_str())
        .unwrap();
    assert_eq!(ivr_end["outcome"], "queued", "{ivr_end}");
    assert_eq!(ivr_end["agent"], "a1", "{ivr_end}");
}

#[test]
fn a_caller_hanging_up_while_the_agent_rings_cancels_the_agent_leg() {
    // The agent logs in through the agent API (no auto_login).
    let api = "[api]\nlisten = \"127.0.0.1:25325\"\nkeys = [\"k1\"]\n";
    let server = start(
        "acd-cancel",
        25301,
        (27100, 27119),
        &format!("{api}{}", config(20.0, false)),
    );
    let (status, body) = http(25325, "POST", "/api/v1/agents/a1/login");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "available", "{body}");
    register(&server, 25322, 27150);
    let phone = agent_phone(&server, 25322, 27160, "agent-ring-cancel.xml", false);
    caller(&server, "cancel", 25323, 27180, 2500);
    let status = wait_exit(phone, Duration::from_secs(20));
    assert!(
        status.success(),
        "the agent's phone saw the CANCEL: {status:?}\n{}",
        server.log()
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "acd.offer_cancelled" && e["reason"] == "abandoned"
    });
    let events = server.events();
    let ab = position(&events, |e| e["type"] == "acd.abandoned");
    assert_eq!(events[ab]["reason"], "hung_up");
    let leg = position(&events, |e| e["type"] == "acd.offered");
    let leg_id = events[leg]["leg_call_id"].as_str().unwrap();
    let end = events
        .iter()
        .find(|e| e["type"] == "call.ended" && e["call_id"] == leg_id)
        .unwrap();
    assert_eq!(end["talk_ms"], 0, "the agent leg was never answered: {end}");
    assert_eq!(end["cause"], "bridge_peer_ended", "{end}");
    assert!(of_type(&events, "acd.answered").is_empty());
    let states: Vec<&str> = of_type(&events, "agent.state")
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["available", "offered", "available"],
        "the agent is available again"
    );
    let (status, agents) = http(25325, "GET", "/api/v1/agents");
    assert_eq!(status, 200);
    assert_eq!(agents[0]["id"], "a1");
    assert_eq!(agents[0]["state"], "available", "{agents}");
}

#[test]
fn without_agents_logged_in_the_enqueue_step_fails_to_its_on_failure() {
    let server = start("acd-empty", 25302, (27190, 27193), &config(10.0, false));
    // The engine hangs up after the on_failure step: a caller that waits for the BYE.
    sipp(
        &server,
        25324,
        27196,
        &[
            "-sf",
            &scenario("uac-wait-bye.xml"),
            "-s",
            "5000",
            "-m",
            "1",
        ],
    );
    server.wait_event(Duration::from_secs(10), |e| e["type"] == "ivr.ended");
    let events = server.events();
    let enq = &events[position(&events, |e| e["type"] == "ivr.enqueue")];
    assert_eq!(enq["result"], "failed");
    assert_eq!(enq["reason"], "no agents logged in");
    assert!(
        of_type(&events, "ivr.say")
            .iter()
            .any(|e| e["text"] == "Nobody is here."),
        "the on_failure step spoke"
    );
    assert!(of_type(&events, "acd.enqueued").is_empty());
}

#[test]
fn a_waiting_caller_hears_its_position_while_an_unregistered_agent_is_skipped() {
    // The agent is logged in but its phone never registered: each offer is refused at once
    // ("not_registered"), after max_no_answer of them the agent is paused and the caller waits,
    // hearing its position every second.
    let cfg = config(10.0, true).replace(
        "wrap_up_s = 30.0\n",
        "wrap_up_s = 30.0\nannounce_every_s = 1.0\n",
    );
    let server = start("acd-wait", 25303, (27120, 27129), &cfg);
    // long enough for the first announcement to be synthesised on a loaded box
    caller(&server, "wait", 25327, 27170, 6000);
    server.wait_event(Duration::from_secs(10), |e| e["type"] == "acd.abandoned");
    let events = server.events();
    let refused = of_type(&events, "acd.refused");
    assert!(!refused.is_empty(), "the unregistered agent was skipped");
    assert!(refused.iter().all(|e| e["reason"] == "not_registered"));
    assert!(
        of_type(&events, "agent.state")
            .iter()
            .any(|e| e["state"] == "paused"),
        "max_no_answer paused the agent"
    );
    let positions = of_type(&events, "acd.position");
    assert!(
        positions.len() >= 2,
        "announced every second: {positions:?}"
    );
    assert!(positions.iter().all(|e| e["position"] == 1));
    let spoken: Vec<&str> = of_type(&events, "ivr.say")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .filter(|t| t.starts_with("You are number 1 in line."))
        .collect();
    assert!(!spoken.is_empty(), "the caller heard its position");
    let ab = of_type(&events, "acd.abandoned");
    assert_eq!(ab[0]["reason"], "hung_up");
    assert!(ab[0]["waited_ms"].as_u64().unwrap() >= 2000);
}

/// The pjsua2 softphone's Python, installed by scripts/setup under the target directory.
fn pjsua_python() -> PathBuf {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let python = target.join("pjsua-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it installs pjsua2-python into <target>/pjsua-venv)",
        python.display()
    );
    python
}

/// RMS of the 16-bit PCM samples of a WAV's `data` chunk.
fn wav_rms(path: &std::path::Path) -> f64 {
    let bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk");
    let pcm = &bytes[at + 8..];
    let n = pcm.len() / 2;
    assert!(n > 8000, "at least half a second recorded ({n} samples)");
    let sum: f64 = pcm
        .chunks_exact(2)
        .map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])).powi(2))
        .sum();
    (sum / n as f64).sqrt()
}

/// A real softphone as the agent: pjsua2 (PJSIP 2.15) registers with SHA-256 digest, is offered
/// the queued caller (display name and Call-Info shown), answers after 1 s and plays a prompt
/// while recording what it hears: the caller's tone reaches its recording, its audio reaches
/// the caller through the bridge.
#[test]
fn a_pjsua2_softphone_agent_answers_the_queued_caller_with_audio_both_ways() {
    let cfg = config(10.0, true).replace(
        "auth_algorithms = [\"MD5\"]",
        "auth_algorithms = [\"SHA-256\", \"MD5\"]",
    );
    let cfg = format!("[screenpop]\nurl_base = \"http://desk.example/pop\"\n{cfg}");
    let server = start("acd-pjsua", 25304, (27020, 27039), &cfg);
    let heard = server.dir.join("heard.wav");
    let script = common::repo_root().join("scripts/agents/pjsua_agent.py");
    let play = common::repo_root().join("prompts/welcome.wav");
    let agent = Command::new(pjsua_python())
        .arg(script)
        .args(["--registrar", "127.0.0.1:25304", "--user", "agent1"])
        .args([
            "--password",
            "secret-1",
            "--port",
            "25328",
            "--rtp-port",
            "27040",
        ])
        .args(["--answer-after", "1", "--calls", "1", "--timeout", "40"])
        .arg("--play")
        .arg(&play)
        .arg("--record")
        .arg(&heard)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the pjsua2 agent");
    let reg = server.wait_event(Duration::from_secs(20), |e| {
        e["type"] == "agent.registered" && e["agent"] == "a1"
    });
    assert_eq!(reg["auth"], "SHA-256");
    caller(&server, "pjsua", 25329, 27090, 5000);
    let out = agent.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // The script's verdict: its `done` line (pjsua2-python may crash in libDestroy after it,
    // so the process exit status says nothing about the call).
    let done = lines
        .iter()
        .find(|e| e["event"] == "done")
        .unwrap_or_else(|| {
            panic!(
                "pjsua2 agent ({:?}): {stdout}
{}",
                out.status,
                server.log()
            )
        });
    assert_eq!(done["status"], 0, "{stdout}");
    assert_eq!(done["answered"], 1, "{stdout}");
    assert_eq!(done["ended"], 1, "{stdout}");
    let incoming = lines.iter().find(|e| e["event"] == "incoming").unwrap();
    assert!(
        incoming["remote"]
            .as_str()
            .unwrap()
            .starts_with("\"+14155550123\" <sip:"),
        "{incoming}"
    );
    assert!(
        incoming["call_info"]
            .as_str()
            .unwrap()
            .starts_with("<http://desk.example/pop/"),
        "{incoming}"
    );
    assert!(lines.iter().any(|e| e["event"] == "answered"));
    let events = server.events();
    assert_eq!(of_type(&events, "acd.answered").len(), 1);
    let u = of_type(&events, "bridge.unbridged")[0];
    for k in ["audio_in", "audio_out", "peer_audio_in", "peer_audio_out"] {
        assert!(u[k].as_u64().unwrap() > 50, "{k} = {} in {u}", u[k]);
    }
    // The caller's 440 Hz tone (amplitude 3000, RMS ~2100) reached the agent's recording.
    let rms = wav_rms(&heard);
    assert!(rms > 500.0, "the agent heard the caller: RMS {rms:.0}");
}
