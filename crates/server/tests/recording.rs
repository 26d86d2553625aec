//! Call recording end to end: a real caller (SIPp, raw sockets), the real server, and the WAV
//! files it writes, decoded and checked here.
//!
//! Ports: SIP 25120-25129, SIPp 25250-25259, RTP 26500-26599 (servers 26500-26519,
//! 26530-26549, 26560-26579, 26580-26599; SIPp media 26520 and 26550).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{RawCall, Server, dtmf_pcm, of_type, repo_root, scenario, sipp, write_rtp_pcap};
use frontdoor_media::g711::G711;
use frontdoor_media::prompt::Prompt;

const CALLER_HZ: f64 = 1850.0;
const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// A decoded WAV: the format fields and the samples per channel.
struct Wav {
    channels: u16,
    rate: u32,
    bits: u16,
    left: Vec<i16>,
    right: Vec<i16>,
}

/// Parses a RIFF/WAVE file by hand, checking every size field against the file.
fn read_wav(path: &Path) -> Wav {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap());
    assert!(b.len() >= 44, "{} bytes", b.len());
    assert_eq!(&b[0..4], b"RIFF");
    assert_eq!(
        u32_at(4) as usize,
        b.len() - 8,
        "RIFF size matches the file"
    );
    assert_eq!(&b[8..16], b"WAVEfmt ");
    assert_eq!(u32_at(16), 16);
    assert_eq!(u16_at(20), 1, "PCM");
    let (channels, rate, bits) = (u16_at(22), u32_at(24), u16_at(34));
    assert_eq!(u32_at(28), rate * u32::from(channels) * u32::from(bits / 8));
    assert_eq!(u16_at(32), channels * bits / 8);
    assert_eq!(&b[36..40], b"data");
    assert_eq!(
        u32_at(40) as usize,
        b.len() - 44,
        "data size matches the file"
    );
    let samples: Vec<i16> = b[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    Wav {
        channels,
        rate,
        bits,
        left: samples.iter().step_by(2).copied().collect(),
        right: samples.iter().skip(1).step_by(2).copied().collect(),
    }
}

/// Energy of the sine at `freq` in `x` (Goertzel), comparable with [`energy`].
fn tone_energy(x: &[i16], freq: f64) -> f64 {
    let c = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0f64, 0f64);
    for &v in x {
        let s = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    2.0 * (s1 * s1 + s2 * s2 - c * s1 * s2) / x.len().max(1) as f64
}

fn energy(x: &[i16]) -> f64 {
    x.iter().map(|&v| f64::from(v).powi(2)).sum()
}

/// 10 ms blocks holding a DTMF digit: a row and a column tone, each above −40 dBm0, together
/// most of the block's energy.
fn dtmf_blocks(x: &[i16]) -> usize {
    let min = (22_710.0f64 * 0.01).powi(2) / 2.0 * 80.0;
    x.chunks(80)
        .filter(|b| {
            let row = ROWS.iter().map(|&f| tone_energy(b, f)).fold(0.0, f64::max);
            let col = COLS.iter().map(|&f| tone_energy(b, f)).fold(0.0, f64::max);
            row > min && col > min && row + col > 0.5 * energy(b)
        })
        .count()
}

/// 10 ms blocks where the caller's tone carries most of the energy.
fn caller_blocks(x: &[i16]) -> usize {
    x.chunks(80)
        .filter(|b| energy(b) > 1e5 && tone_energy(b, CALLER_HZ) > 0.8 * energy(b))
        .count()
}

fn sine(freq: f64, amp: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

/// The welcome prompt as the server sends it in PCMU, decoded.
fn welcome_pcmu() -> Vec<i16> {
    let p = Prompt::load(&repo_root().join("prompts/welcome.wav")).unwrap();
    G711::Pcmu.decode(p.encoded(G711::Pcmu))
}

fn stopped_event(server: &Server) -> serde_json::Value {
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "recording.stopped"
    })
}

/// SIPp calls `answer` (welcome prompt, then hold audio) and plays 0.8 s of a 1850 Hz tone,
/// the keys 4111 in-band, 0.8 s of the tone again; after its BYE the WAV is read back.
fn record_sipp_call(
    name: &str,
    sip_port: u16,
    sipp_port: (u16, u16),
    rtp: (u16, u16),
    mask: bool,
) -> (Server, serde_json::Value, Wav) {
    let config =
        format!("[recording]\nenabled = true\nnumbers = [\"answer\"]\nmask_dtmf = {mask}\n");
    let server = Server::start(name, sip_port, rtp, &config);
    let mut pcm = sine(CALLER_HZ, 6000.0, 6400);
    pcm.extend(dtmf_pcm("4111", 80, 80, 5000.0));
    pcm.extend(sine(CALLER_HZ, 6000.0, 6400));
    let frames: Vec<Vec<u8>> = pcm
        .chunks(160)
        .map(|c| G711::Pcmu.encode(c).to_vec())
        .collect();
    write_rtp_pcap(&server.dir.join("inband-dtmf.pcap"), 0, 20, &frames);
    sipp(
        &server,
        sipp_port.0,
        sipp_port.1,
        &[
            "-sf",
            &scenario("dtmf-inband.xml"),
            "-s",
            "answer",
            "-m",
            "1",
        ],
    );
    let ev = stopped_event(&server);
    let wav = read_wav(Path::new(ev["path"].as_str().unwrap()));
    (server, ev, wav)
}

#[test]
fn recorded_call_is_stereo_caller_left_prompt_right_and_digits_masked() {
    let (server, ev, wav) =
        record_sipp_call("rec-mask", 25120, (25250, 26520), (26500, 26519), true);
    let events = server.events();
    let started = of_type(&events, "recording.started");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["mask_dtmf"], true);
    assert_eq!(ev["reason"], "call_ended");
    assert!(ev["error"].is_null(), "{ev}");
    let path = PathBuf::from(ev["path"].as_str().unwrap());
    assert!(
        path.starts_with(server.dir.join("data/recordings/calls")),
        "{}",
        path.display()
    );
    assert_eq!((wav.channels, wav.rate, wav.bits), (2, 8000, 16));
    // the call lasted ~3.7 s (SIPp pauses 200 + 3500 ms after the ACK)
    let secs = wav.left.len() as f64 / 8000.0;
    assert!((3.0..6.0).contains(&secs), "{secs} s");
    assert_eq!(
        ev["duration_ms"].as_u64().unwrap(),
        wav.left.len() as u64 / 8
    );
    assert_eq!(
        ev["bytes"].as_u64().unwrap(),
        44 + wav.left.len() as u64 * 4
    );

    // The engine heard the four keys; the recording holds none of them.
    let digits: Vec<&str> = of_type(&events, "dtmf")
        .iter()
        .map(|e| e["digit"].as_str().unwrap())
        .collect();
    assert_eq!(digits, ["4", "1", "1", "1"]);
    assert_eq!(ev["masked_digits"], 4);
    assert_eq!(dtmf_blocks(&wav.left), 0, "DTMF left in the caller channel");
    assert_eq!(dtmf_blocks(&wav.right), 0);
    let masked_ms = ev["masked_ms"].as_u64().unwrap();
    assert!((4 * 80..1500).contains(&masked_ms), "masked {masked_ms} ms");

    // Left: the caller's tone, before and after the keys (1.6 s sent; masking may eat a
    // little of its edges).
    let tone = caller_blocks(&wav.left);
    assert!(
        (100..=165).contains(&tone),
        "{tone} blocks of the caller's tone"
    );
    // Right: the welcome prompt exactly as sent, and none of the caller's tone.
    let welcome = welcome_pcmu();
    let probe = &welcome[..4000];
    let at = (0..1600)
        .find(|&off| wav.right.get(off..off + probe.len()) == Some(probe))
        .expect("the welcome prompt at the start of the right channel");
    assert!(at < 800, "prompt starts {at} samples in");
    assert_eq!(caller_blocks(&wav.right), 0);
    assert!(tone_energy(&wav.right, CALLER_HZ) * 100.0 < tone_energy(&wav.left, CALLER_HZ));
}

#[test]
fn without_masking_the_digits_are_in_the_recording() {
    let (server, ev, wav) =
        record_sipp_call("rec-nomask", 25121, (25251, 26550), (26530, 26549), false);
    assert_eq!(
        of_type(&server.events(), "recording.started")[0]["mask_dtmf"],
        false
    );
    assert_eq!(ev["masked_digits"], 0);
    assert_eq!(ev["masked_ms"], 0);
    // four 80 ms keys → about 4 × 7 blocks fully inside a tone
    let keys = dtmf_blocks(&wav.left);
    assert!((24..=40).contains(&keys), "{keys} DTMF blocks");
    assert!(caller_blocks(&wav.left) >= 150);
}

/// Sleeps until packet `i` of a 20 ms stream started at `start` is due (real-time pacing
/// that does not drift when a sleep overshoots on a loaded box).
fn pace(start: std::time::Instant, i: usize) {
    let due = start + Duration::from_millis(20 * i as u64);
    let now = std::time::Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// Answers SIP requests the server sends to the raw caller (its BYE) with 200 OK.
fn answer_requests(call: &RawCall, within: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let end = std::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    call.sip
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while std::time::Instant::now() < end {
        let Ok(n) = call.sip.recv(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let method = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        if method.starts_with("SIP/") {
            continue;
        }
        let keep: Vec<&str> = text
            .lines()
            .filter(|l| {
                ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                    .iter()
                    .any(|h| l.starts_with(h))
            })
            .collect();
        let resp = format!(
            "SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n",
            keep.join("\r\n")
        );
        call.sip.send(resp.as_bytes()).unwrap();
        seen.push(method.clone());
        if method == "BYE" {
            break;
        }
    }
    seen
}

/// A caller whose RTP stops: the server hangs up on the RTP timeout and the WAV is complete
/// and valid; a second call hits `max_duration_s` (5 s) and its recording stops there; a third
/// is up when the server shuts down and its file is closed before the exit.
#[test]
fn abrupt_end_and_max_duration_leave_valid_files() {
    let server = Server::start(
        "rec-abrupt",
        25122,
        (26560, 26579),
        "[media]\nrtp_timeout_s = 2\n[recording]\nenabled = true\nmax_duration_s = 5\n",
    );
    let send_tone = |call: &RawCall, ms: u32| {
        let pcm = sine(CALLER_HZ, 6000.0, ms as usize * 8);
        let start = std::time::Instant::now();
        for (i, f) in pcm.chunks(160).enumerate() {
            pace(start, i);
            let mut pkt = vec![0x80, 0, 0, 0];
            pkt[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            pkt.extend_from_slice(&(i as u32 * 160).to_be_bytes());
            pkt.extend_from_slice(&0xabcdu32.to_be_bytes());
            pkt.extend_from_slice(&G711::Pcmu.encode(f));
            call.rtp.send_to(&pkt, call.server_rtp).unwrap();
        }
    };
    // 1: one second of RTP, then nothing until the server gives up (2 s later).
    let call = RawCall::invite(&server, 25123, "answer");
    send_tone(&call, 1000);
    let methods = answer_requests(&call, Duration::from_secs(8));
    assert_eq!(
        methods.last().map(String::as_str),
        Some("BYE"),
        "{methods:?}"
    );
    let ended = server.wait_event(Duration::from_secs(5), |e| e["type"] == "call.ended");
    assert_eq!(ended["cause"], "rtp_timeout");
    let ev = stopped_event(&server);
    assert_eq!(ev["reason"], "call_ended");
    let wav = read_wav(Path::new(ev["path"].as_str().unwrap()));
    assert_eq!((wav.channels, wav.rate, wav.bits), (2, 8000, 16));
    let secs = wav.left.len() as f64 / 8000.0;
    assert!((2.5..5.0).contains(&secs), "{secs} s");
    let tone = caller_blocks(&wav.left);
    assert!((90..=100).contains(&tone), "{tone} blocks of 1 s of tone");

    // 2: a call longer than max_duration_s.
    let call = RawCall::invite(&server, 25124, "echo");
    send_tone(&call, 6000);
    let ev = server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "recording.stopped" && e["reason"] == "max_duration"
    });
    call.bye();
    assert_eq!(ev["duration_ms"], 5000);
    let wav = read_wav(Path::new(ev["path"].as_str().unwrap()));
    assert_eq!(wav.left.len(), 40_000);
    // echo: the caller's tone on the left and, a jitter-buffer delay later, on the right
    assert!(caller_blocks(&wav.left) >= 450);
    assert!(caller_blocks(&wav.right) >= 400);

    // 3: a call still up when the server is told to stop: it is hung up and its file closed
    // before the server exits.
    let call = RawCall::invite(&server, 25129, "answer");
    send_tone(&call, 500);
    let dir = server.dir.clone();
    let events_path = server.events_path.clone();
    std::thread::scope(|s| {
        let answering = s.spawn(|| answer_requests(&call, Duration::from_secs(10)));
        assert!(server.terminate().success());
        assert_eq!(
            answering.join().unwrap().last().map(String::as_str),
            Some("BYE")
        );
    });
    let text = std::fs::read_to_string(&events_path).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stopped = of_type(&events, "recording.stopped");
    assert_eq!(stopped.len(), 3, "{}", dir.display());
    let last = stopped[2];
    assert_eq!(last["reason"], "call_ended");
    let pos = |ty: &str| events.iter().position(|e| e["type"] == ty).unwrap();
    assert!(events.iter().position(|e| std::ptr::eq(e, last)).unwrap() < pos("server.stopped"));
    let wav = read_wav(Path::new(last["path"].as_str().unwrap()));
    assert!(caller_blocks(&wav.left) >= 40, "the half second of tone");
}

/// A phone that sends RFC 4733 events *and* keeps sending audio during the key press (the
/// leaky case): the event's span, found by its RTP timestamp and duration, is silence.
#[test]
fn rfc4733_digits_are_masked_by_timestamp() {
    let server = Server::start(
        "rec-rfc4733",
        25125,
        (26580, 26599),
        "[recording]\nenabled = true\nnumbers = [\"answer\"]\n",
    );
    let call = RawCall::invite(&server, 25126, "answer");
    let voice = sine(300.0, 6000.0, 24_000); // 3 s
    let mut seq = 0u16;
    let mut packet = |pt: u8, marker: bool, ts: u32, payload: &[u8]| {
        let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x5151u32.to_be_bytes());
        p.extend_from_slice(payload);
        seq = seq.wrapping_add(1);
        p
    };
    // the key '7' from ts 8000 for 200 ms (1600 units), three end packets
    let start = std::time::Instant::now();
    for (i, f) in voice.chunks(160).enumerate() {
        pace(start, i);
        let ts = i as u32 * 160;
        let audio = packet(0, false, ts, &G711::Pcmu.encode(f));
        call.rtp.send_to(&audio, call.server_rtp).unwrap();
        if (8000..=9600).contains(&ts) {
            let dur = (ts - 8000 + 160).min(1600) as u16;
            let end = ts == 9600;
            for _ in 0..if end { 3 } else { 1 } {
                let mut ev = vec![7u8, if end { 0x80 | 10 } else { 10 }];
                ev.extend_from_slice(&dur.to_be_bytes());
                let p = packet(101, ts == 8000, 8000, &ev);
                call.rtp.send_to(&p, call.server_rtp).unwrap();
            }
        }
    }
    call.bye();
    let ev = stopped_event(&server);
    let digits: Vec<(String, String)> = of_type(&server.events(), "dtmf")
        .iter()
        .map(|e| {
            (
                e["digit"].as_str().unwrap().to_owned(),
                e["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(digits, [("7".to_owned(), "rfc4733".to_owned())]);
    assert_eq!(ev["masked_digits"], 1);
    let wav = read_wav(Path::new(ev["path"].as_str().unwrap()));
    // 10 ms blocks of the caller's channel between its first and last voice block: exactly
    // one silent run, the event (200 ms) plus the guards (2 × 40 ms) = 28 blocks, give or
    // take block alignment.
    let voiced: Vec<bool> = wav
        .left
        .chunks(80)
        .map(|b| energy(b) > 1e5 && tone_energy(b, 300.0) > 0.5 * energy(b))
        .collect();
    let first = voiced.iter().position(|&v| v).unwrap();
    let last = voiced.iter().rposition(|&v| v).unwrap();
    let mut runs: Vec<u64> = Vec::new();
    let mut run = 0;
    for &v in &voiced[first..=last] {
        if v {
            if run > 0 {
                runs.push(run);
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    // The key's run; any other gap must be a packet the server reported as too late to place
    // (a stalled sender on a loaded box), 2 blocks each.
    let key = *runs.iter().max().unwrap();
    assert!((26..=31).contains(&key), "silent run of {key} blocks");
    let others: u64 = runs.iter().sum::<u64>() - key;
    let late = ev["late_packets"].as_u64().unwrap();
    assert!(
        others <= 2 * late,
        "unexplained silent runs {runs:?} ({late} late packets)"
    );
    assert!(last - first >= 280, "3 s of voice, {} blocks", last - first);
}

/// The dialplan starts and stops the recording (`record_call`): only the prompt played in
/// between is in the file, sample-exact.
#[test]
fn dialplan_record_call_starts_and_stops_the_recording() {
    let dir = common::test_dir("rec-dialplan-plans");
    std::fs::write(
        dir.join("rec.toml"),
        "name = \"rec\"\ndefault_language = \"en\"\n[[route]]\ndefault = true\nflow = \"main\"\n\
         [flows.main]\nstart = \"a\"\n\
         [flows.main.steps.a]\nverb = \"answer\"\nnext = \"before\"\n\
         [flows.main.steps.before]\nverb = \"play\"\nfile = \"welcome.wav\"\nnext = \"start\"\n\
         [flows.main.steps.start]\nverb = \"record_call\"\naction = \"start\"\nnext = \"during\"\n\
         [flows.main.steps.during]\nverb = \"play\"\nfile = \"you-pressed.wav\"\nnext = \"stop\"\n\
         [flows.main.steps.stop]\nverb = \"record_call\"\naction = \"stop\"\nnext = \"after\"\n\
         [flows.main.steps.after]\nverb = \"play\"\nfile = \"digit-5.wav\"\nnext = \"bye\"\n\
         [flows.main.steps.bye]\nverb = \"hangup\"\n",
    )
    .unwrap();
    let server = Server::start_with(
        "rec-dialplan",
        25127,
        (26556, 26559),
        "[recording]\nenabled = true\nnumbers = [\"nobody\"]\n",
        common::Dirs {
            dialplans: dir,
            ..common::Dirs::default()
        },
    );
    let call = RawCall::invite(&server, 25128, "4000");
    let methods = answer_requests(&call, Duration::from_secs(20));
    assert_eq!(
        methods.last().map(String::as_str),
        Some("BYE"),
        "{methods:?}"
    );
    let ev = stopped_event(&server);
    assert_eq!(ev["reason"], "stopped");
    let wav = read_wav(Path::new(ev["path"].as_str().unwrap()));
    let prompt = Prompt::load(&repo_root().join("prompts/you-pressed.wav")).unwrap();
    let sent = G711::Pcmu.decode(prompt.encoded(G711::Pcmu));
    // the whole prompt, from within the first 100 ms, and little else
    let at = (0..800)
        .find(|&off| wav.right.get(off..off + sent.len()) == Some(&sent[..]))
        .expect("the prompt played between start and stop, sample-exact");
    let extra = wav.right.len() - sent.len();
    assert!(
        extra < 2400,
        "{at} samples before, {extra} around the prompt"
    );
    // nothing of the prompts before and after
    assert!(wav.right[..at].iter().all(|&s| s == 0));
    assert!(wav.right[at + sent.len()..].iter().all(|&s| s.abs() < 64));
}
