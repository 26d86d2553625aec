//! Shared helpers for end-to-end tests: start the real `frontdoor` binary on 127.0.0.1, drive
//! it with real peers (SIPp, raw sockets) and read its event stream.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A scenario file under `sipp-scenarios/`.
pub fn scenario(name: &str) -> String {
    repo_root().join("sipp-scenarios").join(name).display().to_string()
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub sip_port: u16,
    pub dir: PathBuf,
    pub events_path: PathBuf,
}

impl Server {
    /// Starts `frontdoor serve` on 127.0.0.1:`sip_port` with an optional config text.
    pub fn start(name: &str, sip_port: u16, rtp: (u16, u16), config: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("frontdoor-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let events_path = dir.join("events.jsonl");
        let config_path = dir.join("frontdoor.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
            .args(["serve", "--sip", &format!("127.0.0.1:{sip_port}")])
            .arg("--config")
            .arg(&config_path)
            .arg("--events")
            .arg(&events_path)
            .args(["--rtp-ports", &format!("{}-{}", rtp.0, rtp.1)])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start frontdoor");
        let server = Server { child, sip_port, dir, events_path };
        server.wait_event(Duration::from_secs(20), |e| e["type"] == "server.started");
        server
    }

    /// The events written so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.events_path).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
            .collect()
    }

    /// Waits until an event matching `pred` appears; panics after `timeout`.
    pub fn wait_event(&self, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
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
    pub fn wait_count(&self, timeout: Duration, count: usize, pred: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
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
        .args(["-i", "127.0.0.1", "-p", &local_port.to_string(), "-mp", &media_port.to_string()])
        .args(["-nostdin", "-timeout", "60s", "-timeout_error", "-trace_err"])
        .args(args)
        .current_dir(&server.dir)
        .stdin(Stdio::null());
    let out = cmd.output().expect("sipp must be installed (Debian package sip-tester; scripts/setup)");
    if !out.status.success() {
        let mut msg = Vec::new();
        let _ = writeln!(msg, "sipp {args:?} failed: {:?}", out.status);
        msg.extend_from_slice(&out.stdout);
        msg.extend_from_slice(&out.stderr);
        for entry in std::fs::read_dir(&server.dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with("_errors.log") {
                msg.extend_from_slice(&std::fs::read(entry.path()).unwrap_or_default());
            }
        }
        panic!("{}\nserver log:\n{}", String::from_utf8_lossy(&msg), server.log());
    }
    out
}

/// Events of one type.
pub fn of_type<'a>(events: &'a [serde_json::Value], ty: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}
