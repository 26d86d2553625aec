//! The IVR end to end: SIPp callers whose RFC 4733 digits walk the sample hotline, caller
//! recognition from the customer store, voicemail recording, the call records in SQLite, the
//! `check` and `customers import` commands, and hot reload of an edited dialplan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Dirs, Server, invite_expecting_failure, of_type, repo_root, scenario, sipp, test_dir,
};
use frontdoor_media::g711::G711;
use frontdoor_store::{CallId, CustomerStore, E164, SqliteStore};

const ALICE: &str = "+14155550123";
const VICTOR: &str = "+14155550199";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_frontdoor"))
}

/// A pcap of one caller's RTP: PCMU audio (a quiet 440 Hz tone) every 20 ms for `total_ms`,
/// and each `(at_ms, key)` as an RFC 4733 event instead of audio: a start packet (marker),
/// continuation packets for 160 ms, then three end packets — every digit with its own RTP
/// timestamp (its start time), PT 101, one SSRC and one sequence for everything.
fn write_call_pcap(path: &Path, digits: &[(u32, char)], total_ms: u32) {
    let tone: Vec<i16> = (0..160)
        .map(|n| {
            (3000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(n) / 8000.0).sin()) as i16
        })
        .collect();
    let audio = G711::Pcmu.encode(&tone).to_vec();
    let mut packets: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut seq: u16 = 2000;
    let base_ts: u32 = 80_000;
    let slots = total_ms / 20;
    let mut slot = 0;
    let mut first = true;
    let mut pending: Vec<(u32, char)> = digits.to_vec();
    pending.sort();
    let mut next_digit = pending.into_iter().peekable();
    while slot < slots {
        let at_ms = slot * 20;
        if let Some(&(d_ms, key)) = next_digit.peek() {
            if d_ms <= at_ms {
                next_digit.next();
                let code: u8 = match key {
                    '0'..='9' => key as u8 - b'0',
                    '*' => 10,
                    '#' => 11,
                    _ => panic!("no key {key}"),
                };
                let ts = base_ts.wrapping_add(slot * 160);
                // 8 packets of 20 ms, then 3 end packets.
                for k in 0..11u32 {
                    let end = k >= 8;
                    let duration = (k.min(7) + 1) * 160;
                    let mut rtp = vec![0x80, 101 | if k == 0 { 0x80 } else { 0 }];
                    rtp.extend_from_slice(&seq.to_be_bytes());
                    rtp.extend_from_slice(&ts.to_be_bytes());
                    rtp.extend_from_slice(&0x4242_4242u32.to_be_bytes());
                    rtp.extend_from_slice(&[code, if end { 0x80 | 10 } else { 10 }]);
                    rtp.extend_from_slice(&(duration as u16).to_be_bytes());
                    packets.push((u64::from((slot + k) * 20) * 1000, rtp));
                    seq = seq.wrapping_add(1);
                }
                slot += 11;
                continue;
            }
        }
        let mut rtp = vec![0x80, if first { 0x80 } else { 0 }];
        first = false;
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&base_ts.wrapping_add(slot * 160).to_be_bytes());
        rtp.extend_from_slice(&0x4242_4242u32.to_be_bytes());
        rtp.extend_from_slice(&audio);
        packets.push((u64::from(at_ms) * 1000, rtp));
        seq = seq.wrapping_add(1);
        slot += 1;
    }
    common::write_pcap(path, &packets);
}

/// Runs one SIPp call from `caller` to `number` playing `digits`, hanging up after `total_ms`.
#[allow(clippy::too_many_arguments)]
fn call(
    server: &Server,
    tag: &str,
    local_port: u16,
    media_port: u16,
    caller: &str,
    number: &str,
    digits: &[(u32, char)],
    total_ms: u32,
) {
    let pcap = format!("{tag}.pcap");
    write_call_pcap(&server.dir.join(&pcap), digits, total_ms);
    let template = std::fs::read_to_string(scenario("ivr-dtmf.xml")).unwrap();
    let xml = template
        .replace("__CALLER__", caller)
        .replace("__PCAP__", &pcap)
        .replace("__PAUSE_MS__", &(total_ms + 500).to_string());
    let sf = server.dir.join(format!("{tag}.xml"));
    std::fs::write(&sf, xml).unwrap();
    sipp(
        server,
        local_port,
        media_port,
        &["-sf", sf.to_str().unwrap(), "-s", number, "-m", "1"],
    );
}

fn import(data: &Path, csv: &str, name: &str) -> std::process::Output {
    let file = data.parent().unwrap().join(name);
    std::fs::write(&file, csv).unwrap();
    bin()
        .args(["customers", "import"])
        .arg(&file)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

/// Events of one call (by Call-ID).
fn of_call<'a>(events: &'a [serde_json::Value], call_id: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["call_id"] == call_id).collect()
}

fn call_ids_in_order(events: &[serde_json::Value]) -> Vec<String> {
    of_type(events, "ivr.started")
        .iter()
        .map(|e| e["call_id"].as_str().unwrap().to_owned())
        .collect()
}

fn says(events: &[&serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "ivr.say")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_caller_walks_the_hotline_menus_and_is_recognised_when_calling_again() {
    let dir = test_dir("ivr-walk-data");
    let data = dir.join("data");
    let out = import(
        &data,
        &format!("phone,name,tier,vip,language\n{ALICE},Alice Chen,gold,no,en\n"),
        "customers.csv",
    );
    assert!(out.status.success(), "{out:?}");
    let server = Server::start_with(
        "ivr-walk",
        25090,
        (38000, 38199),
        // The second call's "Welcome back, NAME" is rendered by piper on demand: load the
        // voice at start so that render does not include loading it.
        "[ivr]\npiper_preload = true\n",
        Dirs {
            data: Some(data.clone()),
            ..Dirs::default()
        },
    );
    // "1" during the greeting (type-ahead: English), "1" account services, the 8-digit
    // account number, "9" back, "2" cards, "9" back; then the caller hangs up.
    let mut digits = vec![(700, '1'), (1700, '1')];
    for (i, d) in "12345678".chars().enumerate() {
        digits.push((2600 + 300 * i as u32, d));
    }
    digits.extend([(5600, '9'), (6600, '2'), (7600, '9')]);
    call(
        &server,
        "walk1",
        25190,
        26200,
        ALICE,
        "18005550100",
        &digits,
        8600,
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "store.call_recorded"
    });
    // The same number again: a returning customer, greeted by name.
    call(
        &server,
        "walk2",
        25190,
        26200,
        ALICE,
        "18005550100",
        // The key comes after the greeting: a key during a prompt that is still being
        // rendered stops it before it is spoken (no `ivr.say`).
        &[(4000, '1')],
        5000,
    );
    server.wait_count(Duration::from_secs(10), 2, |e| {
        e["type"] == "store.call_recorded"
    });
    let events = server.events();
    let ids = call_ids_in_order(&events);
    assert_eq!(ids.len(), 2, "two IVR calls");
    let first = of_call(&events, &ids[0]);
    let second = of_call(&events, &ids[1]);

    let rec = |evs: &[&serde_json::Value]| {
        evs.iter()
            .find(|e| e["type"] == "ivr.recognition")
            .map(|e| e["caller"].as_str().unwrap().to_owned())
    };
    assert_eq!(rec(&first).as_deref(), Some("new"));
    assert_eq!(rec(&second).as_deref(), Some("returning"));
    assert!(
        says(&first).contains(&"Welcome to Frontdoor Bank.".to_owned()),
        "{:?}",
        says(&first)
    );
    assert_eq!(
        says(&second).first().map(String::as_str),
        Some("Welcome back, Alice Chen."),
        "{:?}",
        says(&second)
    );
    // English is spoken by piper (a dynamic text, "Welcome back, NAME", rendered on demand):
    // the voice on the event, and the renders in the shared speech cache (espeak-ng
    // fallback renders would be stored as en-us-*.wav).
    let welcome_back = second.iter().find(|e| e["type"] == "ivr.say").unwrap();
    assert_eq!(welcome_back["voice"], "piper:en_US-joe-medium");
    let piper_renders = std::fs::read_dir(common::tts_cache())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("piper_en_US-joe-medium-")
        })
        .count();
    assert!(
        piper_renders > 5,
        "{piper_renders} piper renders in the cache"
    );
    let caller = second.iter().find(|e| e["type"] == "store.caller").unwrap();
    assert_eq!(caller["number"], ALICE);
    assert_eq!(caller["known"], true);
    assert_eq!(caller["previous_calls"], 1);

    // The menu walk on the event stream: one gather per step, the account number redacted.
    let gathers: Vec<(String, String)> = first
        .iter()
        .filter(|e| e["type"] == "ivr.gather" && e["failure"].is_null())
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_owned(),
                e["digits"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("language", "1"),
        ("main_menu", "1"),
        ("account_number", "[redacted]"),
        ("account_menu", "9"),
        ("main_menu", "2"),
        ("cards_menu", "9"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(gathers, want);
    let text = std::fs::read_to_string(&server.events_path).unwrap();
    assert!(
        !text.contains("12345678"),
        "the account number never reaches the event stream"
    );
    let ended = first.iter().find(|e| e["type"] == "ivr.ended").unwrap();
    assert_eq!(ended["outcome"], "abandoned");
    assert_eq!(ended["step"], "main_menu");

    let status = server.terminate();
    assert!(status.success());
    // The call records in SQLite.
    let store = SqliteStore::open(&data.join("frontdoor.db")).unwrap();
    let alice = E164::try_from(ALICE.to_owned()).unwrap();
    assert_eq!(store.call_count(&alice).unwrap(), 2);
    let r = store
        .call(&CallId(ids[0].clone()))
        .unwrap()
        .expect("a call record");
    assert_eq!(r.caller.as_ref(), Some(&alice));
    assert_eq!(r.dialed, "18005550100");
    assert_eq!(r.outcome, "abandoned");
    assert!(r.answered_at.is_some() && r.ended_at.is_some());
    assert!(r.started_at <= r.answered_at.unwrap() && r.answered_at <= r.ended_at);
    assert_eq!(
        r.ivr_path,
        [
            "answer",
            "recognise",
            "greeting",
            "greet_new",
            "language",
            "set_english",
            "main_menu",
            "account_number",
            "account_menu",
            "main_menu",
            "cards_menu",
            "main_menu"
        ]
    );
    let stored: Vec<(String, String)> = r
        .digits
        .iter()
        .map(|d| (d.step.clone(), d.digits.clone()))
        .collect();
    assert_eq!(stored, want);
    let r2 = store.call(&CallId(ids[1].clone())).unwrap().unwrap();
    assert!(
        r2.ivr_path.contains(&"greet_returning".to_owned()),
        "{:?}",
        r2.ivr_path
    );
}

#[test]
fn a_vip_is_routed_by_the_dialplan_and_leaves_a_voicemail() {
    let dir = test_dir("ivr-vip-data");
    let data = dir.join("data");
    let out = import(
        &data,
        &format!("phone,name,tier,vip\n{VICTOR},Victor Li,platinum,yes\n"),
        "vip.csv",
    );
    assert!(out.status.success(), "{out:?}");
    let server = Server::start_with(
        "ivr-vip",
        25091,
        (38200, 38399),
        "",
        Dirs {
            data: Some(data.clone()),
            ..Dirs::default()
        },
    );
    // The VIP greeting cannot be interrupted; "1" (leave a message) is pressed every 2 s
    // until the "agents busy" menu takes it; "#" ends the recording.
    let mut digits: Vec<(u32, char)> = (0..6).map(|i| (1500 + 2000 * i, '1')).collect();
    digits.push((15_000, '#'));
    call(
        &server, "vip", 25191, 26210, VICTOR, "4000", &digits, 17_000,
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "store.call_recorded"
    });
    let events = server.events();
    let id = call_ids_in_order(&events).pop().unwrap();
    let evs = of_call(&events, &id);
    let find = |ty: &str| {
        evs.iter()
            .find(|e| e["type"] == ty)
            .unwrap_or_else(|| panic!("no {ty} in {evs:#?}"))
    };
    assert_eq!(find("ivr.recognition")["caller"], "vip");
    assert!(evs.iter().any(|e| e["type"] == "ivr.route"
        && e["step"] == "recognise"
        && e["to"] == "vip_greeting"));
    assert_eq!(
        says(&evs)[0],
        "Welcome back, Victor Li. Connecting you to your private banking team."
    );
    let enq = find("ivr.enqueue");
    assert_eq!(enq["queue"], "vip");
    assert_eq!(enq["result"], "failed");
    let saved = find("ivr.recording_saved");
    let rel = saved["path"].as_str().unwrap();
    assert!(
        rel.starts_with("voicemail/") && rel.ends_with(".wav"),
        "{rel}"
    );
    let ms = saved["duration_ms"].as_u64().unwrap();
    assert!((2000..=14_000).contains(&ms), "{saved}");
    assert!(saved["error"].is_null());
    let recorded = find("ivr.recorded");
    assert_eq!(recorded["path"], rel);
    // The WAV: mono 8 kHz 16-bit, the caller's tone in it.
    let wav = std::fs::read(data.join("recordings").join(rel)).unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 1, "mono");
    assert_eq!(
        u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]),
        8000
    );
    assert_eq!(u16::from_le_bytes([wav[34], wav[35]]), 16);
    let pcm: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(
        pcm.len() as u64,
        ms * 8,
        "length matches the reported duration"
    );
    let loud = pcm.iter().filter(|s| s.unsigned_abs() > 1500).count();
    assert!(
        loud > pcm.len() / 4,
        "the caller's audio is recorded ({loud} of {})",
        pcm.len()
    );
    assert!(
        says(&evs).contains(&"Thank you. We will call you back.".to_owned()),
        "{:?}",
        says(&evs)
    );

    server.terminate();
    let store = SqliteStore::open(&data.join("frontdoor.db")).unwrap();
    let r = store.call(&CallId(id)).unwrap().unwrap();
    for step in [
        "vip_greeting",
        "vip_queue",
        "agents_busy",
        "voicemail",
        "voicemail_thanks",
    ] {
        assert!(
            r.ivr_path.contains(&step.to_owned()),
            "{step} in {:?}",
            r.ivr_path
        );
    }
}

#[test]
fn bridge_to_a_target_that_never_answers_fails_the_caller_with_480() {
    // The hotline's `bridge` route points at a port nothing listens on: the outgoing leg
    // rings out after `[bridge] timeout_s` and the caller gets 480.
    let server = Server::start(
        "ivr-bridge",
        25093,
        (38600, 38699),
        "[bridge]\ntimeout_s = 1\n",
    );
    assert_eq!(invite_expecting_failure(&server, 25193, "bridge"), 480);
    let failed = server.wait_event(Duration::from_secs(5), |e| e["type"] == "bridge.failed");
    assert_eq!(failed["reason"], "no_answer");
    assert_eq!(failed["status"], 480);
    let events = server.events();
    let legs = of_type(&events, "leg.created");
    assert_eq!(legs.len(), 1);
    assert_eq!(
        legs[0]["to"], "sip:bridge@127.0.0.1:5070",
        "the dialplan route's `to`"
    );
    assert!(
        of_type(&events, "ivr.started").is_empty(),
        "built-ins bypass the interpreter"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            // dialplans/intents/: training data of the speech step
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn hot_reload_applies_valid_edits_to_new_calls_and_rejects_invalid_ones() {
    let dir = test_dir("ivr-reload-plans");
    let plans = dir.join("dialplans");
    copy_dir(&repo_root().join("dialplans"), &plans);
    let server = Server::start_with(
        "ivr-reload",
        25092,
        (38400, 38599),
        "",
        Dirs {
            dialplans: plans.clone(),
            data: None,
        },
    );
    let hotline = plans.join("hotline.toml");
    let original = std::fs::read_to_string(&hotline).unwrap();
    let old_cards = "To report a lost or stolen card, press 1.";
    let edited = original
        .replace(
            "en = \"Welcome to Frontdoor Bank.\"",
            "en = \"Welcome to the edited bank.\"",
        )
        .replace(
            old_cards,
            "Edited cards menu. To report a lost card, press 1.",
        );
    assert_ne!(original, edited);
    // Call A starts on version 1 and reaches the cards menu ("1" English, "2" cards) only
    // after the edit is live: it keeps hearing version 1. Call B, started after the reload,
    // hears version 2.
    std::thread::scope(|s| {
        let a = s.spawn(|| {
            call(
                &server,
                "reload-a",
                25192,
                26220,
                "anonymous",
                "5000",
                &[(700, '1'), (6500, '2')],
                8000,
            );
        });
        server.wait_event(Duration::from_secs(10), |e| e["type"] == "ivr.started");
        std::fs::write(&hotline, &edited).unwrap();
        let loaded = server.wait_event(Duration::from_secs(30), |e| {
            e["type"] == "dialplan.loaded" && e["version"] == 2
        });
        assert_eq!(loaded["dialplans"][0], "hotline");
        call(
            &server,
            "reload-b",
            25195,
            26240,
            "anonymous",
            "5000",
            &[],
            1500,
        );
        a.join().unwrap();
    });
    server.wait_count(Duration::from_secs(10), 2, |e| e["type"] == "ivr.ended");
    {
        let events = server.events();
        let ids = call_ids_in_order(&events);
        let a = says(&of_call(&events, &ids[0]));
        assert_eq!(
            a.first().map(String::as_str),
            Some("Welcome to Frontdoor Bank."),
            "{a:?}"
        );
        assert!(
            a.iter().any(|t| t.starts_with(old_cards)),
            "the call in progress keeps its version: {a:?}"
        );
        let b = says(&of_call(&events, &ids[1]));
        assert_eq!(
            b.first().map(String::as_str),
            Some("Welcome to the edited bank."),
            "{b:?}"
        );
    }

    // An invalid edit: rejected with its diagnostics, the edited version stays.
    let broken = edited.replacen("verb = \"menu\"", "verb = \"menuu\"", 1);
    std::fs::write(&hotline, &broken).unwrap();
    let rejected = server.wait_event(Duration::from_secs(30), |e| {
        e["type"] == "dialplan.rejected"
    });
    let diags = rejected["diagnostics"].to_string();
    assert!(diags.contains("hotline.toml:"), "{diags}");
    assert!(diags.contains("unknown verb"), "{diags}");
    call(
        &server,
        "reload-c",
        25192,
        26220,
        "anonymous",
        "5000",
        &[],
        1500,
    );
    server.wait_count(Duration::from_secs(10), 3, |e| e["type"] == "ivr.ended");
    let events = server.events();
    let ids = call_ids_in_order(&events);
    assert_eq!(ids.len(), 3);
    let c = says(&of_call(&events, &ids[2]));
    assert_eq!(
        c.first().map(String::as_str),
        Some("Welcome to the edited bank."),
        "{c:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "dialplan.loaded" && e["version"] == 3),
        "the broken edit was not loaded"
    );
    // Rejected once, not every poll.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(of_type(&server.events(), "dialplan.rejected").len(), 1);
}

#[test]
fn serve_refuses_to_start_on_an_invalid_dialplan() {
    let dir = test_dir("ivr-refuse");
    let plans = dir.join("dialplans");
    copy_dir(&repo_root().join("dialplans"), &plans);
    std::fs::copy(
        repo_root().join("crates/ivr/tests/fixtures/bad-unknown-verb.toml"),
        plans.join("bad.toml"),
    )
    .unwrap();
    let mut child = bin()
        .args([
            "serve",
            "--sip",
            "127.0.0.1:25094",
            "--rtp-ports",
            "38700-38799",
        ])
        .arg("--dialplans")
        .arg(&plans)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--prompts")
        .arg(repo_root().join("prompts"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("serve did not refuse the invalid dialplan");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("bad.toml:"), "{err}");
    assert!(err.contains("unknown verb"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

fn fixtures() -> PathBuf {
    repo_root().join("crates/ivr/tests/fixtures")
}

#[test]
fn check_reports_every_broken_fixture_with_file_and_line() {
    let out = bin()
        .arg("check")
        .arg(fixtures())
        .arg("--prompts")
        .arg(fixtures().join("prompts"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = 0;
    for e in std::fs::read_dir(fixtures()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("bad-") {
            continue;
        }
        n += 1;
        let needle = format!("{name}:");
        let line = text
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("{name} not reported:\n{text}"));
        let rest = &line[line.find(&needle).unwrap() + needle.len()..];
        let mut parts = rest.split(':');
        let l: usize = parts.next().unwrap().parse().expect("a line number");
        let c: usize = parts.next().unwrap().parse().expect("a column");
        assert!(l >= 1 && c >= 1, "{line}");
    }
    assert!(n >= 10, "{n} fixtures");
    // One file, one problem.
    let out = bin()
        .arg("check")
        .arg(fixtures().join("bad-unknown-verb.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad-unknown-verb.toml:"), "{text}");
    assert!(text.contains("hint: did you mean `play`?"), "{text}");
}

#[test]
fn check_accepts_the_shipped_dialplans() {
    let out = bin()
        .arg("check")
        .arg(repo_root().join("dialplans"))
        .arg("--prompts")
        .arg(repo_root().join("prompts"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ok (1 dialplan: hotline)"), "{text}");
}

#[test]
fn customers_import_reports_bad_rows_and_keeps_the_good_ones() {
    let dir = test_dir("ivr-import");
    let data = dir.join("data");
    let out = import(
        &data,
        "phone,name,tier,vip,language\n\
         +14155550123,Alice Chen,gold,no,en\n\
         not-a-number,Bad Phone,,no,en\n\
         (415) 555-0177,Carol Wu,,maybe,zh\n\
         415-555-0188,Dan Ng,,yes,zh\n",
        "mixed.csv",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("mixed.csv:3: error: invalid phone"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mixed.csv:4: error: vip must be"),
        "{stdout}"
    );
    assert!(
        stdout.contains("imported 2 customer(s), rejected 2 row(s)"),
        "{stdout}"
    );
    let store = SqliteStore::open(&data.join("frontdoor.db")).unwrap();
    assert_eq!(store.customer_count().unwrap(), 2);
    let dan = store
        .customer(&E164::try_from("+14155550188".to_owned()).unwrap())
        .unwrap()
        .expect("national format normalised with the default region");
    assert!(dan.vip);
    assert_eq!(dan.language.as_deref(), Some("zh"));
    // A file without a phone column fails as a whole.
    let out = import(&data, "name\nx\n", "nophone.csv");
    assert_eq!(out.status.code(), Some(1));
}

const MINI: &str = r#"
name = "mini"

[[route]]
number = "7000"
flow = "queue"

[[route]]
number = "7001"
flow = "xfer"

[flows.queue]
start = "answer"

[flows.queue.steps.answer]
verb = "answer"
next = "q"

[flows.queue.steps.q]
verb = "enqueue"
queue = "sales"

[flows.xfer]
start = "answer"

[flows.xfer.steps.answer]
verb = "answer"
next = "t"

[flows.xfer.steps.t]
verb = "transfer"
to = "sip:bob@127.0.0.1:5070"
timeout = 1
on_failure = "sorry"

[flows.xfer.steps.sorry]
verb = "say"
text = "The transfer failed."
next = "bye"

[flows.xfer.steps.bye]
verb = "hangup"
"#;

/// Without `[acd]` configured: an `enqueue` without `on_failure` hears "All agents are busy" from the
/// driver and is hung up. A `transfer` to a target that never answers (nothing listens there)
/// is cancelled after its `timeout` and goes to its `on_failure`.
#[test]
fn enqueue_fails_without_an_acd_configured_and_an_unanswered_transfer_goes_to_on_failure() {
    let dir = test_dir("ivr-mini-plans");
    std::fs::write(dir.join("mini.toml"), MINI).unwrap();
    let server = Server::start_with(
        "ivr-mini",
        25095,
        (38800, 38899),
        "",
        Dirs {
            dialplans: dir.clone(),
            data: None,
        },
    );
    for number in ["7000", "7001"] {
        sipp(
            &server,
            25196,
            26250,
            &[
                "-sf",
                &scenario("uac-wait-bye.xml"),
                "-s",
                number,
                "-m",
                "1",
            ],
        );
    }
    server.wait_count(Duration::from_secs(10), 2, |e| {
        e["type"] == "store.call_recorded"
    });
    let events = server.events();
    let ids = call_ids_in_order(&events);
    assert_eq!(ids.len(), 2);
    let q = of_call(&events, &ids[0]);
    assert_eq!(says(&q), ["All agents are busy. Please call again later."]);
    let enq = q.iter().find(|e| e["type"] == "ivr.enqueue").unwrap();
    assert_eq!(enq["queue"], "sales");
    assert_eq!(enq["reason"], "no acd", "no [acd] in this config");
    let ended = q.iter().find(|e| e["type"] == "ivr.ended").unwrap();
    assert_eq!(ended["outcome"], "route_failed");
    let t = of_call(&events, &ids[1]);
    assert!(t.iter().any(|e| e["type"] == "ivr.transfer"
        && e["result"] == "failed"
        && e["reason"] == "no_answer"));
    let leg = events
        .iter()
        .find(|e| e["type"] == "leg.created")
        .expect("the transfer placed a call");
    assert_eq!(leg["to"], "sip:bob@127.0.0.1:5070");
    assert!(
        t.iter()
            .any(|e| e["type"] == "ivr.route" && e["step"] == "t" && e["to"] == "sorry")
    );
    assert_eq!(says(&t), ["The transfer failed."]);
    let ended = t.iter().find(|e| e["type"] == "ivr.ended").unwrap();
    assert_eq!(ended["outcome"], "hung_up");
    for id in &ids {
        let c = of_call(&events, id);
        let end = c.iter().find(|e| e["type"] == "call.ended").unwrap();
        assert_eq!(end["cause"], "local_bye", "the IVR hung up");
    }
}

const STREAMED: &str = r#"
name = "streamed"

[[route]]
default = true
flow = "talk"

[flows.talk]
start = "answer"

[flows.talk.steps.answer]
verb = "answer"
next = "long"

[flows.talk.steps.long]
verb = "say"
text = "Hello caller {caller.number}. Thank you for calling Frontdoor Bank today. Your call is important to us, and an adviser will be with you very shortly."
next = "done"

[flows.talk.steps.done]
verb = "gather"
say = "That is all."
max_digits = 1
timeout = 20
next = "done"
"#;

/// A text with variables that is not cached is synthesised by piper chunk by chunk: the call
/// hears the first chunk as soon as it is ready and the rest follows without a gap in the
/// flow. The next step starts only once the WHOLE text has played (the chunks are queued
/// behind each other, a prompt end between two chunks does not end the say), and the whole
/// text is cached afterwards.
#[test]
fn a_long_dynamic_say_starts_with_its_first_chunk_and_plays_whole() {
    let dir = test_dir("ivr-streamed-plans");
    std::fs::write(dir.join("streamed.toml"), STREAMED).unwrap();
    // A speech cache of this test only: what is in it was rendered by this server.
    let cache = dir.join("tts-cache");
    let server = Server::start_with(
        "ivr-streamed",
        25097,
        (38900, 38999),
        &format!(
            "[ivr]\npiper_preload = true\ntts_cache = {:?}\n",
            cache.display().to_string()
        ),
        Dirs {
            dialplans: dir.clone(),
            data: None,
        },
    );
    // A caller number of this run only (the text is new to the voice's caches anyway).
    let caller = format!(
        "+1555{:07}",
        (std::process::id() as u64 * 7919 + u64::from(Instant::now().elapsed().subsec_nanos()))
            % 10_000_000
    );
    call(
        &server,
        "streamed",
        25197,
        26270,
        &caller,
        "100",
        &[],
        16_000,
    );
    server.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "store.call_recorded"
    });
    let events = server.events();
    let said: Vec<&serde_json::Value> = of_type(&events, "ivr.say");
    let long = said
        .iter()
        .find(|e| e["text"].as_str().unwrap().starts_with("Hello caller"))
        .unwrap_or_else(|| panic!("{said:?}"));
    assert_eq!(long["voice"], "piper:en_US-joe-medium");
    assert_eq!(long["cache"], "rendered");
    let done = said
        .iter()
        .find(|e| e["text"] == "That is all.")
        .unwrap_or_else(|| panic!("{said:?}"));
    let ts = |e: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().unwrap()).unwrap()
    };
    // The whole text is cached now: its length is what the caller had to hear.
    let whole = frontdoor_speech::split_chunks(long["text"].as_str().unwrap());
    assert!(whole.len() >= 4, "{whole:?}");
    // The longest piper render in the test's cache is this text (written when its last
    // chunk was synthesised; the other is "That is all.").
    let (cached, written) = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let meta = e.metadata().unwrap();
            name.starts_with("piper_en_US-joe-medium-")
                .then_some((meta.len(), meta.modified().unwrap()))
        })
        .max_by_key(|(len, _)| *len)
        .unwrap();
    // 16-bit 8 kHz WAV: bytes / 16 per millisecond.
    let whole_ms = (cached.saturating_sub(44) / 16) as i64;
    assert!(
        whole_ms > 6_000,
        "the longest fresh render is {whole_ms} ms"
    );
    let played_ms = (ts(done) - ts(long)).num_milliseconds();
    assert!(
        played_ms >= whole_ms - 300,
        "the next step started {played_ms} ms after the say began; the whole text lasts {whole_ms} ms"
    );
    // Streaming: the say began before the whole text existed (it is written to the cache
    // when the last chunk is ready).
    let written = chrono::DateTime::<chrono::Utc>::from(written);
    let lead_ms = (written - ts(long).with_timezone(&chrono::Utc)).num_milliseconds();
    eprintln!(
        "first audio after {} ms; whole text {whole_ms} ms, cached {lead_ms} ms after the say began, next step after {played_ms} ms",
        long["wait_ms"]
    );
    assert!(
        lead_ms > 0,
        "the whole text was ready {} ms before the say began",
        -lead_ms
    );
}
