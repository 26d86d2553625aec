//! Shared helpers for end-to-end tests: start the real `frontdoor` binary on 127.0.0.1, drive
//! it with real peers (SIPp, raw sockets) and read its event stream.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A scenario file under `sipp-scenarios/`.
pub fn scenario(name: &str) -> String {
    repo_root()
        .join("sipp-scenarios")
        .join(name)
        .display()
        .to_string()
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub sip_port: u16,
    pub dir: PathBuf,
    pub events_path: PathBuf,
}

/// Speech rendered by espeak-ng, shared by every test server (renders once per machine).
pub fn tts_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tts-cache")
}

/// The config text with `[ivr] tts_cache` pointing at the shared cache, and the piper voice
/// loaded only when a text is not in that cache (`piper_preload = false`): dozens of test
/// servers each loading it at start would only burn CPU.
fn with_tts_cache(config: &str) -> String {
    // A test may ask for the voice at start (`piper_preload = true` in its own `[ivr]`).
    let preload = if config.contains("piper_preload") {
        ""
    } else {
        "piper_preload = false\n"
    };
    // A test may keep its own cache (`tts_cache` in its own `[ivr]`).
    let line = if config.contains("tts_cache") {
        preload.to_owned()
    } else {
        format!(
            "tts_cache = {:?}\n{preload}",
            tts_cache().display().to_string()
        )
    };
    if config.contains("[ivr]\n") {
        config.replacen("[ivr]\n", &format!("[ivr]\n{line}"), 1)
    } else {
        format!("{config}\n[ivr]\n{line}")
    }
}

/// Server starts are serialised within a test binary: the first one renders the speech
/// cache, the others read it.
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A temporary directory for a test.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("frontdoor-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where a test server takes its dialplans and keeps its data.
pub struct Dirs {
    /// Dialplan directory (default: the repository's `dialplans/`).
    pub dialplans: PathBuf,
    /// Data directory (default: `data` in the test's directory).
    pub data: Option<PathBuf>,
}

impl Default for Dirs {
    fn default() -> Self {
        Dirs {
            dialplans: repo_root().join("dialplans"),
            data: None,
        }
    }
}

impl Server {
    /// Starts `frontdoor serve` on 127.0.0.1:`sip_port` with an optional config text.
    pub fn start(name: &str, sip_port: u16, rtp: (u16, u16), config: &str) -> Server {
        Self::start_with(name, sip_port, rtp, config, Dirs::default())
    }

    /// Like [`Server::start`], with the dialplan and data directories given.
    pub fn start_with(
        name: &str,
        sip_port: u16,
        rtp: (u16, u16),
        config: &str,
        dirs: Dirs,
    ) -> Server {
        let dir = test_dir(name);
        let events_path = dir.join("events.jsonl");
        let config_path = dir.join("frontdoor.toml");
        std::fs::write(&config_path, with_tts_cache(config)).unwrap();
        let data = dirs.data.unwrap_or_else(|| dir.join("data"));
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let child = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
            .args(["serve", "--sip", &format!("127.0.0.1:{sip_port}")])
            .arg("--config")
            .arg(&config_path)
            .arg("--events")
            .arg(&events_path)
            .args(["--rtp-ports", &format!("{}-{}", rtp.0, rtp.1)])
            .arg("--prompts")
            .arg(repo_root().join("prompts"))
            .arg("--dialplans")
            .arg(&dirs.dialplans)
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start frontdoor");
        let server = Server {
            child,
            sip_port,
            dir,
            events_path,
        };
        server.wait_event(Duration::from_secs(90), |e| e["type"] == "server.started");
        server
    }

    /// The events written so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.events_path).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}"))
            })
            .collect()
    }

    /// Waits until an event matching `pred` appears; panics after `timeout`.
    pub fn wait_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if Instant::now() > end {
                panic!("event not seen within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `count` events match `pred`.
    pub fn wait_count(
        &self,
        timeout: Duration,
        count: usize,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let end = Instant::now() + timeout;
        loop {
            let found: Vec<_> = self.events().into_iter().filter(|e| pred(e)).collect();
            if found.len() >= count {
                return found;
            }
            if Instant::now() > end {
                panic!("only {} of {count} events within {timeout:?}", found.len());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("server did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs SIPp against the server, returning its output. `args` come after the target address.
pub fn sipp(server: &Server, local_port: u16, media_port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new("sipp");
    cmd.arg(format!("127.0.0.1:{}", server.sip_port))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &local_port.to_string(),
            "-mp",
            &media_port.to_string(),
        ])
        .args([
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
            "-trace_err",
        ])
        .args(args)
        .current_dir(&server.dir)
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .expect("sipp must be installed (Debian package sip-tester; scripts/setup)");
    if !out.status.success() {
        let mut msg = Vec::new();
        let _ = writeln!(msg, "sipp {args:?} failed: {:?}", out.status);
        msg.extend_from_slice(&out.stdout);
        msg.extend_from_slice(&out.stderr);
        for entry in std::fs::read_dir(&server.dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with("_errors.log") {
                msg.extend_from_slice(&std::fs::read(entry.path()).unwrap_or_default());
            }
        }
        panic!(
            "{}\nserver log:\n{}",
            String::from_utf8_lossy(&msg),
            server.log()
        );
    }
    out
}

/// Events of one type.
pub fn of_type<'a>(events: &'a [serde_json::Value], ty: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// Writes a pcap (Ethernet/IPv4/UDP) of RTP packets, one every `ptime_ms`, as SIPp's
/// `play_pcap_audio` replays them.
pub fn write_rtp_pcap(path: &Path, payload_type: u8, ptime_ms: u32, frames: &[Vec<u8>]) {
    let samples = ptime_ms * 8;
    let packets: Vec<(u64, Vec<u8>)> = frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let i = i as u32;
            let mut rtp = vec![0x80, payload_type & 0x7f];
            if i == 0 {
                rtp[1] |= 0x80;
            }
            rtp.extend_from_slice(&(1000u16.wrapping_add(i as u16)).to_be_bytes());
            rtp.extend_from_slice(&(160_000u32.wrapping_add(i * samples)).to_be_bytes());
            rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            rtp.extend_from_slice(frame);
            (u64::from(i) * u64::from(ptime_ms) * 1000, rtp)
        })
        .collect();
    write_pcap(path, &packets);
}

/// 8 kHz PCM of DTMF `keys`: each tone `on_ms` long at `amplitude` per frequency, then `off_ms`
/// of silence.
pub fn dtmf_pcm(keys: &str, on_ms: u32, off_ms: u32, amplitude: f64) -> Vec<i16> {
    let mut pcm = vec![0i16; 1600]; // 200 ms of lead-in silence
    for k in keys.chars() {
        let (lo, hi) = match k {
            '1' => (697.0, 1209.0),
            '2' => (697.0, 1336.0),
            '3' => (697.0, 1477.0),
            '4' => (770.0, 1209.0),
            '5' => (770.0, 1336.0),
            '6' => (770.0, 1477.0),
            '7' => (852.0, 1209.0),
            '8' => (852.0, 1336.0),
            '9' => (852.0, 1477.0),
            '*' => (941.0, 1209.0),
            '0' => (941.0, 1336.0),
            '#' => (941.0, 1477.0),
            _ => panic!("no DTMF key {k}"),
        };
        for n in 0..on_ms * 8 {
            let t = f64::from(n) / 8000.0;
            let v = amplitude
                * ((2.0 * std::f64::consts::PI * lo * t).sin()
                    + (2.0 * std::f64::consts::PI * hi * t).sin());
            pcm.push(v as i16);
        }
        pcm.extend(std::iter::repeat_n(0i16, (off_ms * 8) as usize));
    }
    pcm
}

/// A minimal SIP caller over raw UDP, for tests that need to see or send the RTP themselves.
pub struct RawCall {
    pub sip: std::net::UdpSocket,
    pub rtp: std::net::UdpSocket,
    pub call_id: String,
    pub to_header: String,
    pub server_rtp: std::net::SocketAddr,
    pub invite_text: String,
}

impl RawCall {
    /// INVITEs `number`, offering PCMU + telephone-event with RTP on a fresh local port; waits
    /// for the 200 and ACKs it.
    pub fn invite(server: &Server, sip_port: u16, number: &str) -> RawCall {
        let sip = std::net::UdpSocket::bind(("127.0.0.1", sip_port)).unwrap();
        sip.connect(("127.0.0.1", server.sip_port)).unwrap();
        sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtp_port = rtp.local_addr().unwrap().port();
        let call_id = format!("raw-{number}-{sip_port}@127.0.0.1");
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
        );
        let invite = format!(
            "INVITE sip:{number}@127.0.0.1:{sp} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK-raw-{sip_port}-1\r\nFrom: <sip:raw@127.0.0.1:{sip_port}>;tag=raw{sip_port}\r\nTo: <sip:{number}@127.0.0.1:{sp}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:raw@127.0.0.1:{sip_port}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len(),
            sp = server.sip_port
        );
        sip.send(invite.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = sip.recv(&mut buf).expect("a response to the INVITE");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with("SIP/2.0 200") {
                let to_header = text
                    .lines()
                    .find(|l| l.starts_with("To:"))
                    .unwrap()
                    .to_owned();
                let port: u16 = text
                    .lines()
                    .find(|l| l.starts_with("m=audio "))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|p| p.parse().ok())
                    .expect("an SDP answer with m=audio");
                let call = RawCall {
                    sip,
                    rtp,
                    call_id,
                    to_header,
                    server_rtp: ([127, 0, 0, 1], port).into(),
                    invite_text: invite,
                };
                call.send_in_dialog("ACK", 1);
                return call;
            }
            assert!(
                text.starts_with("SIP/2.0 1"),
                "unexpected answer to INVITE: {text}"
            );
        }
    }

    /// Sends an in-dialog request (no body).
    pub fn send_in_dialog(&self, method: &str, cseq: u32) {
        let port = self.sip.local_addr().unwrap().port();
        let req_uri = self
            .invite_text
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned();
        let msg = format!(
            "{method} {req_uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-raw-{port}-{cseq}-{method}\r\nFrom: <sip:raw@127.0.0.1:{port}>;tag=raw{port}\r\n{}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.to_header, self.call_id
        );
        self.sip.send(msg.as_bytes()).unwrap();
    }

    /// Hangs up with BYE and waits for its 200.
    pub fn bye(&self) {
        self.send_in_dialog("BYE", 2);
        let mut buf = [0u8; 4096];
        loop {
            let n = self.sip.recv(&mut buf).expect("a 200 for the BYE");
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("SIP/2.0 200") && text.contains("BYE") {
                return;
            }
        }
    }
}

/// Writes a pcap (Ethernet/IPv4/UDP, 127.0.0.1:4000 → :6000) of RTP packets, each with its
/// capture time in microseconds from the start, as SIPp's `play_pcap_audio` replays them.
pub fn write_pcap(path: &Path, packets: &[(u64, Vec<u8>)]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (t_us, rtp) in packets {
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut pkt = vec![0u8; 12];
        pkt.extend_from_slice(&[0x08, 0x00]);
        pkt.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        pkt.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        pkt.extend_from_slice(&4000u16.to_be_bytes());
        pkt.extend_from_slice(&6000u16.to_be_bytes());
        pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(rtp);
        out.extend_from_slice(&((1_700_000_000 + t_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        out.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        out.extend_from_slice(&pkt);
    }
    std::fs::write(path, out).unwrap();
}

/// Sends an INVITE (PCMU + telephone-event offer) for `number` from 127.0.0.1:`sip_port` and
/// waits for its final response, which must be a failure (≥ 300); ACKs it and returns the
/// status.
pub fn invite_expecting_failure(server: &Server, sip_port: u16, number: &str) -> u16 {
    let sip = std::net::UdpSocket::bind(("127.0.0.1", sip_port)).unwrap();
    sip.connect(("127.0.0.1", server.sip_port)).unwrap();
    sip.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let call_id = format!("fail-{number}-{sip_port}@127.0.0.1");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    let branch = format!("z9hG4bK-fail-{sip_port}");
    let via = format!("Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch={branch}");
    let from = format!("From: <sip:raw@127.0.0.1:{sip_port}>;tag=f{sip_port}");
    let uri = format!("sip:{number}@127.0.0.1:{}", server.sip_port);
    let invite = format!(
        "INVITE {uri} SIP/2.0\r\n{via}\r\n{from}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:raw@127.0.0.1:{sip_port}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sip.send(invite.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = sip.recv(&mut buf).expect("a final response to the INVITE");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {text}"));
        if status < 200 {
            continue;
        }
        assert!(status >= 300, "expected a failure, got {text}");
        let to = text.lines().find(|l| l.starts_with("To:")).unwrap();
        let ack = format!(
            "ACK {uri} SIP/2.0\r\n{via}\r\n{from}\r\n{to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        sip.send(ack.as_bytes()).unwrap();
        return status;
    }
}

/// A dialplan named `name` whose every number goes to the queue `general`: answer, then
/// `enqueue`; when nobody can take the call, "Nobody is here." and a hang-up.
pub fn queue_plan(name: &str) -> String {
    format!(
        r#"
name = "{name}"

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
"#
    )
}
