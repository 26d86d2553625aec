//! Bridging end to end: a caller dials the `bridge` test number, the engine places an outgoing
//! call to a real SIPp UAS and relays the media between the two legs.
//!
//! Ports (this file only): SIP 25100-25119, SIPp 25200-25239, RTP 26300-26499 (servers:
//! 26300-26399, 26420-26449, 26470-26499; SIPp media ports 26400-26419 and 26450-26463, 4
//! apart, since `-rtp_echo` also binds the port + 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{RawCall, Server, invite_expecting_failure, of_type, repo_root, scenario, tts_cache};
use frontdoor_media::g711::G711;

/// A SIPp UAS running in the background (one call), echoing RTP to its sender.
struct Uas {
    child: Child,
    log: std::path::PathBuf,
}

impl Uas {
    fn start(dir: &Path, scenario_file: &str, port: u16, media_port: u16) -> Uas {
        let log = dir.join(format!("uas-{port}.log"));
        let child = Command::new("sipp")
            .args(["-sf", &scenario(scenario_file)])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &media_port.to_string(), "-rtp_echo"])
            .args(["-m", "1", "-nostdin", "-trace_err", "-timeout", "40s"])
            .args(["-timeout_error"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("sipp must be installed (Debian package sip-tester; scripts/setup)");
        // SIPp needs a moment to bind its sockets.
        std::thread::sleep(Duration::from_millis(300));
        Uas { child, log }
    }

    /// Waits for SIPp to finish its one call; panics unless it succeeded.
    fn wait_ok(mut self, dir: &Path) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let errors: String = std::fs::read_dir(dir)
                    .unwrap()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect();
                assert!(
                    status.success(),
                    "SIPp UAS failed ({status}): {}\n{errors}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
                return;
            }
            assert!(Instant::now() < end, "SIPp UAS did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(target_port: u16) -> String {
    format!("[bridge]\ntarget = \"sip:uas@127.0.0.1:{target_port}\"\ntimeout_s = 10\n")
}

fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&0x00C0_FFEEu32.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// What came back on the caller's RTP socket.
struct Received {
    packets: Vec<Vec<u8>>,
}

/// Collects everything arriving on `sock` until `stop`.
fn receiver(sock: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Received> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut packets = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                packets.push(buf[..n].to_vec());
            }
        }
        Received { packets }
    })
}

fn goertzel(pcm: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s = f64::from(x) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// Sends `ms` of a `freq` tone as PCMU 20 ms packets, paced in real time.
fn send_tone(sock: &UdpSocket, to: SocketAddr, freq: f64, ms: u32, seq: &mut u16, ts: &mut u32) {
    let start = Instant::now();
    for i in 0..ms / 20 {
        let pcm: Vec<i16> = (0..160u32)
            .map(|n| {
                let t = f64::from(*ts + n) / 8000.0;
                (6000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect();
        let payload = G711::Pcmu.encode(&pcm);
        sock.send_to(&rtp(0, i == 0, *seq, *ts, &payload), to)
            .unwrap();
        *seq = seq.wrapping_add(1);
        *ts = ts.wrapping_add(160);
        let due = start + Duration::from_millis(u64::from(i + 1) * 20);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

/// Sends digit `event` as RFC 4733 (PT 101): 5 updates then 3 end packets, 20 ms apart.
fn send_digit(sock: &UdpSocket, to: SocketAddr, event: u8, seq: &mut u16, ts: &mut u32) {
    for i in 0..8u16 {
        let end = i >= 5;
        let duration = 160 * (i.min(4) + 1);
        let mut payload = vec![event, if end { 0x80 | 10 } else { 10 }];
        payload.extend_from_slice(&duration.to_be_bytes());
        sock.send_to(&rtp(101, i == 0, *seq, *ts, &payload), to)
            .unwrap();
        *seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    *ts = ts.wrapping_add(800);
}

fn call_ids(server: &Server) -> (String, String) {
    let events = server.events();
    let caller = of_type(&events, "call.received")[0]["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let leg = of_type(&events, "leg.created")[0]["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (caller, leg)
}

#[test]
fn pcmu_20_caller_bridged_to_pcma_30_callee_audio_dtmf_and_caller_bye() {
    let server = Server::start("bridge-pcma", 25100, (26300, 26339), &config(25201));
    let uas = Uas::start(&server.dir, "uas-pcma.xml", 25201, 26400);
    let call = RawCall::invite(&server, 25202, "bridge");
    server.wait_event(Duration::from_secs(5), |e| e["type"] == "bridge.bridged");
    let (caller_id, leg_id) = call_ids(&server);
    let answered = server.wait_event(Duration::from_secs(1), |e| e["type"] == "leg.answered");
    assert_eq!(answered["codec"], "PCMA");
    assert_eq!(answered["ptime_ms"], 30);

    let stop = Arc::new(AtomicBool::new(false));
    let rx = receiver(call.rtp.try_clone().unwrap(), stop.clone());
    // 1.2 s of a 1 kHz tone in PCMU/20: it crosses the bridge as PCMA/30 to SIPp, which
    // echoes it, and comes back transcoded and re-framed again.
    let (mut seq, mut ts) = (100u16, 8000u32);
    send_tone(&call.rtp, call.server_rtp, 1000.0, 1200, &mut seq, &mut ts);
    send_digit(&call.rtp, call.server_rtp, 5, &mut seq, &mut ts);
    send_tone(&call.rtp, call.server_rtp, 1000.0, 200, &mut seq, &mut ts);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let got = rx.join().unwrap();

    // Audio back on the caller's leg: PCMU, 20 ms, one SSRC, consecutive sequence numbers.
    let audio: Vec<&Vec<u8>> = got.packets.iter().filter(|p| p[1] & 0x7f == 0).collect();
    assert!(
        audio.len() >= 40,
        "only {} audio packets came back",
        audio.len()
    );
    let ssrc = &audio[0][8..12];
    assert!(audio.iter().all(|p| &p[8..12] == ssrc), "one SSRC");
    assert!(audio.iter().all(|p| p.len() == 12 + 160), "20 ms frames");
    let seqs: Vec<u16> = got
        .packets
        .iter()
        .map(|p| u16::from_be_bytes([p[2], p[3]]))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "continuous sequence numbers across audio and events: {seqs:?}"
    );
    // The content: a 1 kHz tone, not noise or silence.
    let pcm: Vec<i16> = audio
        .iter()
        .flat_map(|p| G711::Pcmu.decode(&p[12..]))
        .collect();
    let (on, off1, off2) = (
        goertzel(&pcm, 1000.0),
        goertzel(&pcm, 700.0),
        goertzel(&pcm, 1400.0),
    );
    assert!(
        on > 50.0 * off1 && on > 50.0 * off2,
        "the 1 kHz tone survives PCMU→PCMA/30→PCMU/20 ({on:e} vs {off1:e}, {off2:e})"
    );
    let energy: f64 = pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len() as f64;
    assert!(energy.sqrt() > 1500.0, "RMS {} too low", energy.sqrt());

    // The digit crossed as RFC 4733 both ways: the callee's leg decoded it from SIPp's echo
    // (payload type 96 there), and it came back to the caller on payload type 101.
    let events: Vec<&Vec<u8>> = got.packets.iter().filter(|p| p[1] & 0x7f == 101).collect();
    assert!(
        events.len() >= 6,
        "{} telephone-event packets",
        events.len()
    );
    assert!(events.iter().all(|p| p[12] == 5));
    assert!(
        events.iter().filter(|p| p[13] & 0x80 != 0).count() >= 3,
        "end packets relayed"
    );
    let digit = |id: &str| {
        let id = id.to_owned();
        server.wait_event(Duration::from_secs(3), move |e| {
            e["type"] == "dtmf" && e["call_id"] == id.as_str()
        })
    };
    let on_leg = digit(&leg_id);
    assert_eq!(on_leg["digit"], "5");
    assert_eq!(on_leg["source"], "rfc4733");
    assert_eq!(digit(&caller_id)["digit"], "5");

    call.bye();
    uas.wait_ok(&server.dir);
    let ended = server.wait_count(Duration::from_secs(5), 2, |e| e["type"] == "call.ended");
    let cause = |id: &str| {
        ended
            .iter()
            .find(|e| e["call_id"] == id)
            .map(|e| e["cause"].as_str().unwrap().to_owned())
    };
    assert_eq!(cause(&caller_id).as_deref(), Some("remote_bye"));
    assert_eq!(cause(&leg_id).as_deref(), Some("bridge_peer_ended"));
    let unbridged = server.wait_event(Duration::from_secs(3), |e| e["type"] == "bridge.unbridged");
    for k in [
        "audio_in",
        "audio_out",
        "transcoded",
        "peer_audio_in",
        "peer_audio_out",
    ] {
        assert!(unbridged[k].as_u64().unwrap() > 20, "{k}: {unbridged}");
    }
    assert!(unbridged["events"].as_u64().unwrap() >= 8, "{unbridged}");
    assert!(
        unbridged["peer_events"].as_u64().unwrap() >= 6,
        "{unbridged}"
    );
    // 20 ms in, 30 ms out: two packets in for three out... the other way round.
    let (ain, aout) = (
        unbridged["audio_in"].as_u64().unwrap() as f64,
        unbridged["audio_out"].as_u64().unwrap() as f64,
    );
    let ratio = ain / aout;
    assert!(
        (1.3..1.7).contains(&ratio),
        "20 ms → 30 ms re-framing: {ain} in, {aout} out"
    );
}

/// Answers an in-dialog request with 200 OK.
fn ok_to(sock: &UdpSocket, req: &str) {
    let mut lines = String::from("SIP/2.0 200 OK\r\n");
    for l in req.lines() {
        if ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
            .iter()
            .any(|h| l.starts_with(h))
        {
            lines.push_str(l.trim_end());
            lines.push_str("\r\n");
        }
    }
    lines.push_str("Content-Length: 0\r\n\r\n");
    sock.send(lines.as_bytes()).unwrap();
}

#[test]
fn callee_bye_ends_the_caller_and_rtp_flows_both_ways() {
    let server = Server::start("bridge-bye", 25101, (26340, 26379), &config(25203));
    let uas = Uas::start(&server.dir, "uas-bye.xml", 25203, 26416);
    let call = RawCall::invite(&server, 25204, "bridge");
    server.wait_event(Duration::from_secs(5), |e| e["type"] == "bridge.bridged");
    let (caller_id, leg_id) = call_ids(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let rx = receiver(call.rtp.try_clone().unwrap(), stop.clone());
    let (mut seq, mut ts) = (1u16, 0u32);
    send_tone(&call.rtp, call.server_rtp, 440.0, 1000, &mut seq, &mut ts);
    // The callee hangs up (2.5 s after answering): the engine's BYE reaches the caller.
    call.sip
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let bye = loop {
        let n = call.sip.recv(&mut buf).expect("a BYE for the caller");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("BYE ") {
            break text;
        }
    };
    ok_to(&call.sip, &bye);
    stop.store(true, Ordering::Relaxed);
    let got = rx.join().unwrap();
    let echoed = got.packets.iter().filter(|p| p[1] & 0x7f == 0).count();
    assert!(
        echoed >= 30,
        "{echoed} packets came back through the bridge"
    );
    uas.wait_ok(&server.dir);
    let ended = server.wait_count(Duration::from_secs(5), 2, |e| e["type"] == "call.ended");
    let cause = |id: &str| {
        ended
            .iter()
            .find(|e| e["call_id"] == id)
            .map(|e| e["cause"].as_str().unwrap().to_owned())
    };
    assert_eq!(cause(&leg_id).as_deref(), Some("remote_bye"));
    assert_eq!(cause(&caller_id).as_deref(), Some("bridge_peer_ended"));
    let unbridged = server.wait_event(Duration::from_secs(3), |e| e["type"] == "bridge.unbridged");
    assert_eq!(
        unbridged["call_id"],
        leg_id.as_str(),
        "the leg that hung up"
    );
    assert_eq!(unbridged["transcoded"], 0, "PCMU/20 on both legs: copied");
}

#[test]
fn callee_rejects_and_the_caller_gets_its_status() {
    let server = Server::start("bridge-reject", 25102, (26470, 26479), &config(25205));
    let uas = Uas::start(&server.dir, "uas-reject.xml", 25205, 26408);
    assert_eq!(invite_expecting_failure(&server, 25206, "bridge"), 486);
    uas.wait_ok(&server.dir);
    let failed = server.wait_event(Duration::from_secs(3), |e| e["type"] == "bridge.failed");
    assert_eq!(failed["leg_status"], 486);
    assert_eq!(failed["status"], 486);
    assert_eq!(failed["reason"], "rejected");
    let events = server.events();
    assert!(
        of_type(&events, "call.answered").is_empty(),
        "never answered"
    );
    assert!(of_type(&events, "bridge.bridged").is_empty());
    let ended = server.wait_count(Duration::from_secs(3), 2, |e| e["type"] == "call.ended");
    assert!(
        ended
            .iter()
            .any(|e| e["cause"] == "remote_rejected" && e["status"] == 486)
    );
    assert!(
        ended
            .iter()
            .any(|e| e["cause"] == "rejected" && e["status"] == 486)
    );
}

/// Sends a re-INVITE with `direction` from the raw caller and ACKs its 200.
fn reinvite(call: &RawCall, cseq: u32, direction: &str) {
    let port = call.sip.local_addr().unwrap().port();
    let rtp_port = call.rtp.local_addr().unwrap().port();
    let uri = call
        .invite_text
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let sdp = format!(
        "v=0\r\no=- 1 {cseq} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    );
    let msg = format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-re-{port}-{cseq}\r\nFrom: <sip:raw@127.0.0.1:{port}>;tag=raw{port}\r\n{}\r\nCall-ID: {}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:raw@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        call.to_header,
        call.call_id,
        sdp.len()
    );
    call.sip.send(msg.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = call
            .sip
            .recv(&mut buf)
            .expect("a response to the re-INVITE");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") && text.contains(&format!("CSeq: {cseq} INVITE")) {
            break;
        }
        assert!(text.starts_with("SIP/2.0 1"), "unexpected: {text}");
    }
    call.send_in_dialog("ACK", cseq);
}

#[test]
fn hold_and_resume_are_propagated_to_the_callee() {
    let server = Server::start("bridge-hold", 25103, (26480, 26499), &config(25207));
    let uas = Uas::start(&server.dir, "uas-hold.xml", 25207, 26412);
    let call = RawCall::invite(&server, 25208, "bridge");
    server.wait_event(Duration::from_secs(5), |e| e["type"] == "bridge.bridged");
    let (caller_id, _) = call_ids(&server);
    reinvite(&call, 2, "sendonly");
    let hold = server.wait_event(Duration::from_secs(3), |e| e["type"] == "bridge.hold");
    assert_eq!(hold["call_id"], caller_id.as_str());
    assert_eq!(hold["direction"], "sendonly");
    assert_eq!(hold["propagated"], true);
    // The callee answered our re-INVITE: its leg is now sendonly on our side.
    server.wait_event(Duration::from_secs(3), |e| {
        e["type"] == "call.media_changed" && e["direction"] == "sendonly"
    });
    reinvite(&call, 3, "sendrecv");
    server.wait_count(Duration::from_secs(3), 2, |e| e["type"] == "bridge.hold");
    let resumed = of_type(&server.events(), "bridge.hold")[1].clone();
    assert_eq!(resumed["direction"], "sendrecv");
    assert_eq!(resumed["propagated"], true);
    // SIPp checked that it saw a=sendonly, then a=sendrecv (check_it), and gets the BYE.
    call.send_in_dialog("BYE", 4);
    uas.wait_ok(&server.dir);
    server.wait_count(Duration::from_secs(5), 2, |e| e["type"] == "call.ended");
}

/// Runs `frontdoor call` with `args`; returns (exit success, stdout events, stderr).
fn frontdoor_call(
    name: &str,
    sip_port: u16,
    rtp: &str,
    args: &[&str],
) -> (bool, Vec<serde_json::Value>, String) {
    let dir = common::test_dir(name);
    let cfg = dir.join("frontdoor.toml");
    std::fs::write(
        &cfg,
        format!(
            "[bridge]\ntimeout_s = 5\n[ivr]\ntts_cache = {:?}\n",
            tts_cache().display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
        .arg("call")
        .args(args)
        .args([
            "--sip",
            &format!("127.0.0.1:{sip_port}"),
            "--rtp-ports",
            rtp,
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("--prompts")
        .arg(repo_root().join("prompts"))
        .arg("--dialplans")
        .arg(repo_root().join("dialplans"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .output()
        .expect("run frontdoor call");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event {l:?}: {e}")))
        .collect();
    (
        out.status.success(),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn frontdoor_call_plays_to_a_sipp_uas_and_hangs_up_after_the_duration() {
    let dir = common::test_dir("bridge-call-uas");
    let uas = Uas::start(&dir, "uas.xml", 25211, 26404);
    let (ok, events, stderr) = frontdoor_call(
        "bridge-call",
        25105,
        "26420-26429",
        &["sip:uas@127.0.0.1:25211", "--duration", "1.5"],
    );
    assert!(ok, "frontdoor call failed: {stderr}");
    uas.wait_ok(&dir);
    let answered = of_type(&events, "leg.answered");
    assert_eq!(answered.len(), 1, "{events:?}");
    assert_eq!(answered[0]["codec"], "PCMU");
    let ended = of_type(&events, "call.ended");
    assert_eq!(ended[0]["cause"], "duration");
    let talk = ended[0]["talk_ms"].as_u64().unwrap();
    assert!((1400..3000).contains(&talk), "talked {talk} ms");
    // The welcome prompt went out and SIPp echoed it back.
    let stats = of_type(&events, "media.stats");
    assert!(stats[0]["packets_out"].as_u64().unwrap() >= 60, "{stats:?}");
    assert!(stats[0]["packets_in"].as_u64().unwrap() >= 50, "{stats:?}");
}

#[test]
fn frontdoor_call_bridges_two_uases_and_fails_on_rejection() {
    let dir = common::test_dir("bridge-call-two");
    let a = Uas::start(&dir, "uas.xml", 25212, 26450);
    let b = Uas::start(&dir, "uas-pcma.xml", 25213, 26454);
    let (ok, events, stderr) = frontdoor_call(
        "bridge-call-two",
        25106,
        "26430-26439",
        &[
            "sip:a@127.0.0.1:25212",
            "--bridge-to",
            "sip:b@127.0.0.1:25213",
            "--duration",
            "1",
        ],
    );
    assert!(ok, "frontdoor call --bridge-to failed: {stderr}");
    a.wait_ok(&dir);
    b.wait_ok(&dir);
    let bridged = of_type(&events, "bridge.bridged");
    assert_eq!(bridged.len(), 2, "{events:?}");
    assert!(bridged.iter().all(|e| e["transcoding"] == true));
    assert!(
        bridged
            .iter()
            .any(|e| e["media"] == "PCMA/30" && e["peer_media"] == "PCMU/20")
    );
    assert_eq!(of_type(&events, "call.ended").len(), 2);

    let c = Uas::start(&dir, "uas-reject.xml", 25214, 26458);
    let (ok, events, stderr) = frontdoor_call(
        "bridge-call-busy",
        25107,
        "26440-26449",
        &["sip:c@127.0.0.1:25214"],
    );
    assert!(!ok, "a rejected call must fail");
    assert!(stderr.contains("rejected with 486"), "{stderr}");
    c.wait_ok(&dir);
    let ended = of_type(&events, "call.ended");
    assert_eq!(ended[0]["cause"], "remote_rejected");
    assert_eq!(ended[0]["status"], 486);
}

const XFER: &str = r#"
name = "xfer"

[[route]]
number = "7100"
flow = "xfer"

[flows.xfer]
start = "answer"

[flows.xfer.steps.answer]
verb = "answer"
next = "t"

[flows.xfer.steps.t]
verb = "transfer"
to = "sip:agent@127.0.0.1:25215"
timeout = 5
on_failure = "bye"

[flows.xfer.steps.bye]
verb = "hangup"
"#;

/// The IVR's `transfer` verb uses the same bridge: the flow answers, the engine calls the
/// target and bridges; the interpreter ends with `transferred` and the media flows.
#[test]
fn an_ivr_transfer_is_bridged_to_the_target() {
    let plans = common::test_dir("bridge-xfer-plans");
    std::fs::write(plans.join("xfer.toml"), XFER).unwrap();
    let server = Server::start_with(
        "bridge-xfer",
        25104,
        (26380, 26399),
        "",
        common::Dirs {
            dialplans: plans,
            data: None,
        },
    );
    let uas = Uas::start(&server.dir, "uas.xml", 25215, 26460);
    let call = RawCall::invite(&server, 25216, "7100");
    let xfer = server.wait_event(Duration::from_secs(10), |e| e["type"] == "ivr.transfer");
    assert_eq!(xfer["result"], "connected");
    assert_eq!(xfer["to"], "sip:agent@127.0.0.1:25215");
    let ended = server.wait_event(Duration::from_secs(3), |e| e["type"] == "ivr.ended");
    assert_eq!(ended["outcome"], "transferred");
    let stop = Arc::new(AtomicBool::new(false));
    let rx = receiver(call.rtp.try_clone().unwrap(), stop.clone());
    let (mut seq, mut ts) = (1u16, 0u32);
    send_tone(&call.rtp, call.server_rtp, 800.0, 600, &mut seq, &mut ts);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let pcm: Vec<i16> = rx
        .join()
        .unwrap()
        .packets
        .iter()
        .filter(|p| p[1] & 0x7f == 0)
        .flat_map(|p| G711::Pcmu.decode(&p[12..]))
        .collect();
    assert!(
        goertzel(&pcm, 800.0) > 50.0 * goertzel(&pcm, 1200.0),
        "the caller's tone comes back from the target's echo"
    );
    call.bye();
    uas.wait_ok(&server.dir);
    server.wait_count(Duration::from_secs(5), 2, |e| e["type"] == "call.ended");
}
