//! Smoke runs of the media load tools at a small scale (50 calls × 4 s), as a test: `rtpload`
//! against the real `frontdoor` binary (SIPp places the calls), and `rtpload` against
//! `reflector`. The bounds are loose — the CI box has two loaded cores — but any real loss,
//! duplicate or a stall shows.
//!
//! Which `frontdoor` binary: `$FRONTDOOR_BIN` when set; otherwise the one next to this test's
//! own binaries (`<target>/<profile>/frontdoor`), which `cargo test --workspace` has just
//! built (crates/server's tests need it). Run alone (`cargo test -p frontdoor-benches`), the
//! test first runs `cargo build -p frontdoor` into a separate target directory
//! (`<target>/rtpload-smoke`), because the outer cargo may still hold the lock on its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SIP_PORT: u16 = 25090;
const ENGINE_RTP: (u16, u16) = (38000, 38399);
const LOAD_BASE: u16 = 38400;
const REFLECTOR_BASE: u16 = 38800;
const REFLECTOR_LOAD_BASE: u16 = 39200;
const CALLS: usize = 50;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn frontdoor_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FRONTDOOR_BIN") {
        return PathBuf::from(p);
    }
    let rtpload = Path::new(env!("CARGO_BIN_EXE_rtpload"));
    let profile_dir = rtpload.parent().unwrap();
    let sibling = profile_dir.join("frontdoor");
    if sibling.exists() {
        return sibling;
    }
    let target = profile_dir.parent().unwrap().join("rtpload-smoke");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "-q", "-p", "frontdoor"])
        .env("CARGO_TARGET_DIR", &target);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build -p frontdoor");
    assert!(status.success(), "cargo build -p frontdoor failed");
    target
        .join(if release { "release" } else { "debug" })
        .join("frontdoor")
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtpload-smoke-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kills a child on drop (a failed assertion must not leave a server behind).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path, needle: &str, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn run_rtpload(dir: &Path, args: &[String]) -> Value {
    let json = dir.join("rtpload.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rtpload"))
        .current_dir(repo_root())
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run rtpload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "rtpload failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

fn assert_media(r: &Value, what: &str) {
    let rx = &r["received"];
    let loss = rx["loss_pct"].as_f64().unwrap();
    assert!(loss < 1.0, "{what}: loss {loss} %: {rx}");
    assert!(
        rx["packets"].as_u64().unwrap() > 0,
        "{what}: nothing received"
    );
    assert_eq!(rx["duplicates"], 0, "{what}: duplicates: {rx}");
    let p99 = rx["jitter"]["p99_us"].as_u64().unwrap();
    assert!(p99 < 10_000, "{what}: pacing jitter p99 {p99} µs: {rx}");
    assert_eq!(rx["no_kernel_timestamp"], 0, "{what}: no kernel timestamps");
    for call in r["per_call"].as_array().unwrap() {
        assert!(
            call["received"].as_u64().unwrap() > 0,
            "{what}: a call received nothing: {call}"
        );
    }
}

#[test]
fn rtpload_against_frontdoor() {
    let dir = test_dir("engine");
    let events = dir.join("events.jsonl");
    let config = dir.join("frontdoor.toml");
    std::fs::write(
        &config,
        format!(
            "[media]\nthreads = 1\nrtp_ports = \"{}-{}\"\n",
            ENGINE_RTP.0, ENGINE_RTP.1
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let server = Command::new(frontdoor_bin())
        .current_dir(repo_root())
        .args(["serve", "--sip", &format!("127.0.0.1:{SIP_PORT}")])
        .arg("--config")
        .arg(&config)
        .arg("--events")
        .arg(&events)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start frontdoor");
    let mut server = Guard(server);
    // As the server tests (tests/common): the start prepares the sample hotline (55 texts,
    // the intent classifier's training), which in a debug build beside the other test's load
    // has taken over 20 s.
    assert!(
        wait_for(&events, "server.started", Duration::from_secs(90)),
        "frontdoor did not start: {}",
        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
    );
    let r = run_rtpload(
        &dir,
        &[
            format!("--calls={CALLS}"),
            "--seconds=4".into(),
            "--rate=50".into(),
            format!("--sip=127.0.0.1:{SIP_PORT}"),
            format!("--events={}", events.display()),
            format!("--base={LOAD_BASE}"),
            format!("--pid={}", server.0.id()),
            format!("--out-dir={}", dir.display()),
        ],
    );
    assert_eq!(r["answered"], CALLS, "{}", r["sipp"]);
    assert_eq!(r["sipp"]["failed"], 0, "{}", r["sipp"]);
    assert_eq!(r["sipp"]["successful"], CALLS, "{}", r["sipp"]);
    assert_media(&r, "frontdoor");
    // The engine's side: every call's media.stats, and what we sent arrived.
    let sent = &r["sent"];
    assert_eq!(sent["engine_stats_calls"], CALLS, "{sent}");
    let engine_in = sent["engine_packets_in"].as_f64().unwrap();
    let engine_lost = sent["engine_lost"].as_f64().unwrap();
    assert!(engine_in > 0.0, "{sent}");
    assert!(
        engine_lost <= engine_in * 0.01,
        "engine lost {engine_lost} of {engine_in}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status();
    let _ = server.0.wait();
}

#[test]
fn rtpload_against_reflector() {
    let dir = test_dir("reflector");
    let refl = Command::new(env!("CARGO_BIN_EXE_reflector"))
        .args([
            format!("--base={REFLECTOR_BASE}"),
            format!("--calls={CALLS}"),
            "--seconds=60".into(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("reflector.log")).unwrap())
        .spawn()
        .expect("start reflector");
    let refl = Guard(refl);
    assert!(
        wait_for(
            &dir.join("reflector.log"),
            "sockets",
            Duration::from_secs(10)
        ),
        "reflector did not start: {}",
        std::fs::read_to_string(dir.join("reflector.log")).unwrap_or_default()
    );
    let r = run_rtpload(
        &dir,
        &[
            format!("--calls={CALLS}"),
            "--seconds=4".into(),
            format!("--reflector-ports={REFLECTOR_BASE}"),
            format!("--base={REFLECTOR_LOAD_BASE}"),
            format!("--pid={}", refl.0.id()),
        ],
    );
    assert_media(&r, "reflector");
    let sent = r["sent"]["packets"].as_u64().unwrap();
    let received = r["received"]["packets"].as_u64().unwrap();
    assert!(
        received * 100 >= sent * 99,
        "reflector: sent {sent}, received {received}"
    );
}
