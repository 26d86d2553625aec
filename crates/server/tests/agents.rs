//! Agents' phones registering with digest authentication against the real binary: SIPp
//! (MD5, the only algorithm SIPp implements) and a raw-UDP client using SHA-256.
//! Ports: SIP 25130-25139, SIPp 25260-25279, media 26600-26699.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{Server, of_type, scenario, sipp};
use frontdoor_sip::auth::{self, Algorithm, Challenge, ClientCredentials};

const AGENTS: &str = r#"
[agents]
min_expires = 1
[[agents.agent]]
id = "agent-alice"
username = "alice"
password = "wonderland"
skills = ["sales", "en"]
extension = "201"
[[agents.agent]]
id = "agent-bob"
username = "bob"
ha1_md5 = "HA1_MD5"
ha1_sha256 = "HA1_SHA256"
skills = ["support"]
"#;

/// Agents config; bob is configured by HA1 only (no password in the file).
fn agents_config(algorithms: &str) -> String {
    let md5 = auth::ha1(Algorithm::Md5, "bob", "frontdoor", "builder");
    let sha = auth::ha1(Algorithm::Sha256, "bob", "frontdoor", "builder");
    format!(
        "[sip]\nauth_algorithms = {algorithms}\n{}",
        AGENTS.replace("HA1_MD5", &md5).replace("HA1_SHA256", &sha)
    )
}

fn register(
    server: &Server,
    port: u16,
    scenario_name: &str,
    user: &str,
    pass: &str,
    extra: &[&str],
) {
    let sf = scenario(scenario_name);
    let mut args = vec![
        "-sf",
        sf.as_str(),
        "-s",
        user,
        "-au",
        user,
        "-ap",
        pass,
        "-m",
        "1",
    ];
    args.extend_from_slice(extra);
    let out = sipp(server, port, 26660 + (port - 25260) * 2, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Successful call"), "{stdout}");
}

/// SIPp phones: register (MD5 digest, HA1-only and password users), 403 for a wrong password
/// and an unknown user every time, unregister with `*`, and a registration expiring.
#[test]
fn sipp_register_md5_forbidden_unregister_and_expiry() {
    // SIPp answers the first challenge it reads, and only knows MD5: offer MD5 first.
    let server = Server::start(
        "agents-sipp",
        25130,
        (26600, 26629),
        &agents_config(r#"["MD5", "SHA-256"]"#),
    );
    register(
        &server,
        25260,
        "register.xml",
        "alice",
        "wonderland",
        &["-key", "expires", "120"],
    );
    let ev = server.wait_event(Duration::from_secs(5), |e| e["type"] == "agent.registered");
    assert_eq!(ev["agent"], "agent-alice");
    assert_eq!(ev["username"], "alice");
    assert_eq!(ev["contact"], "sip:alice@127.0.0.1:25260");
    assert_eq!(ev["expires"], 120);
    assert_eq!(ev["source"], "127.0.0.1:25260");
    assert_eq!(ev["refresh"], false);
    assert_eq!(ev["contacts"], 1);
    assert_eq!(ev["auth"], "MD5", "SIPp implements MD5 only");
    assert!(ev.get("call_id").is_none(), "a server event");

    // Bob is configured by HA1 only and registers over TCP; a second phone for alice makes
    // two contacts.
    register(
        &server,
        25261,
        "register.xml",
        "bob",
        "builder",
        &["-key", "expires", "600", "-t", "t1"],
    );
    register(
        &server,
        25262,
        "register.xml",
        "alice",
        "wonderland",
        &["-key", "expires", "300"],
    );
    let regs = server.wait_count(Duration::from_secs(5), 3, |e| {
        e["type"] == "agent.registered"
    });
    assert_eq!(regs[1]["agent"], "agent-bob");
    assert_eq!(regs[2]["contacts"], 2);

    // Wrong password: challenged, then 403, three times over; an unknown user likewise.
    let sf = scenario("register-forbidden.xml");
    let out = sipp(
        &server,
        25263,
        26680,
        &[
            "-sf", &sf, "-s", "alice", "-au", "alice", "-ap", "guess", "-m", "3", "-l", "1",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Successful call"));
    sipp(
        &server,
        25264,
        26682,
        &[
            "-sf", &sf, "-s", "mallory", "-au", "mallory", "-ap", "x", "-m", "1",
        ],
    );
    let failed = server.wait_count(Duration::from_secs(5), 4, |e| {
        e["type"] == "agent.register_failed"
    });
    assert!(failed.iter().all(|e| e["status"] == 403), "{failed:?}");
    assert_eq!(failed[3]["user"], "mallory");

    // Contact: * removes both of alice's phones, not bob's.
    register(&server, 25265, "unregister.xml", "alice", "wonderland", &[]);
    let gone = server.wait_count(Duration::from_secs(5), 2, |e| {
        e["type"] == "agent.unregistered"
    });
    assert!(gone.iter().all(|e| e["agent"] == "agent-alice"));
    assert_eq!(gone[1]["contacts"], 0);

    // A registration that is not refreshed expires.
    register(
        &server,
        25266,
        "register.xml",
        "alice",
        "wonderland",
        &["-key", "expires", "2"],
    );
    let exp = server.wait_event(Duration::from_secs(6), |e| e["type"] == "agent.expired");
    assert_eq!(exp["contact"], "sip:alice@127.0.0.1:25266");
    assert_eq!(exp["contacts"], 0);

    let events = server.events();
    assert_eq!(of_type(&events, "agent.registered").len(), 4);
    assert_eq!(
        of_type(&events, "agent.expired").len(),
        1,
        "bob's registration is still up"
    );
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

/// Sends `msg` and returns the final response text.
fn exchange(sock: &UdpSocket, msg: &str) -> String {
    sock.send(msg.as_bytes()).unwrap();
    let mut buf = [0u8; 8192];
    loop {
        let n = sock.recv(&mut buf).expect("a response");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

fn register_text(port: u16, server: u16, user: &str, cseq: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1:{server} SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-raw-reg-{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:{user}@127.0.0.1:{server}>;tag=raw{port}\r\n\
To: <sip:{user}@127.0.0.1:{server}>\r\n\
Call-ID: raw-register-{port}@127.0.0.1\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: <sip:{user}@127.0.0.1:{port}>;expires=60\r\n\
{extra}Content-Length: 0\r\n\r\n"
    )
}

fn status_of(text: &str) -> u16 {
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// SHA-256 digest (RFC 8760) end to end, chosen by the client among the two challenges; an
/// HA1-only user; replayed credentials challenged again; garbage credentials get 400 and
/// someone else's AOR 403, and the server keeps serving.
#[test]
fn raw_client_registers_with_sha256_and_garbage_is_refused() {
    let server = Server::start(
        "agents-sha256",
        25131,
        (26630, 26659),
        &agents_config(r#"["SHA-256", "MD5"]"#),
    );
    let sock = UdpSocket::bind("127.0.0.1:25270").unwrap();
    sock.connect(("127.0.0.1", 25131)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (i, (user, pass)) in [("bob", "builder"), ("alice", "wonderland")]
        .into_iter()
        .enumerate()
    {
        let cseq = 1 + 2 * i as u32;
        let r401 = exchange(&sock, &register_text(25270, 25131, user, cseq, ""));
        assert_eq!(status_of(&r401), 401, "{r401}");
        let challenges: Vec<&str> = r401
            .lines()
            .filter_map(|l| l.strip_prefix("WWW-Authenticate: "))
            .collect();
        assert_eq!(challenges.len(), 2, "{r401}");
        let ch = Challenge::select(challenges).unwrap();
        assert_eq!(ch.algorithm, Algorithm::Sha256);
        let creds = ClientCredentials {
            username: user.into(),
            password: pass.into(),
        };
        let a = auth::authorize(
            &ch,
            &creds,
            "REGISTER",
            "sip:127.0.0.1:25131",
            b"",
            "rawcnonce",
            1,
        );
        let ok = exchange(
            &sock,
            &register_text(
                25270,
                25131,
                user,
                cseq + 1,
                &format!("Authorization: {}\r\n", a.to_header_value()),
            ),
        );
        assert_eq!(status_of(&ok), 200, "{ok}");
        assert!(
            ok.contains(&format!("Contact: <sip:{user}@127.0.0.1:25270>;expires=60")),
            "{ok}"
        );
        // The same credentials again (same nonce and nc) are a replay: challenged anew.
        let replay = exchange(
            &sock,
            &register_text(
                25270,
                25131,
                user,
                cseq + 10,
                &format!("Authorization: {}\r\n", a.to_header_value()),
            ),
        );
        assert_eq!(status_of(&replay), 401, "{replay}");
    }
    let regs = server.wait_count(Duration::from_secs(5), 2, |e| {
        e["type"] == "agent.registered"
    });
    assert_eq!(regs[0]["agent"], "agent-bob");
    assert_eq!(regs[1]["agent"], "agent-alice");
    assert!(regs.iter().all(|e| e["auth"] == "SHA-256"), "{regs:?}");

    // Malformed credentials: 400 with a Warning, never a crash.
    for garbage in [
        "Authorization: Digest username=\"alice\", realm=\"frontdoor\", nonce=\"x\r\n",
        "Authorization: Digest ,,,\r\n",
        "Authorization: Digest username=alice, realm=frontdoor, nonce=n, uri=u, response=zz, qop=auth, nc=1, cnonce=c\r\n",
    ] {
        let r = exchange(&sock, &register_text(25270, 25131, "alice", 50, garbage));
        assert!(matches!(status_of(&r), 400), "{garbage}: {r}");
    }
    // Registering someone else's address-of-record with one's own password: 403.
    let r401 = exchange(&sock, &register_text(25270, 25131, "alice", 60, ""));
    let ch = Challenge::select(
        r401.lines()
            .filter_map(|l| l.strip_prefix("WWW-Authenticate: ")),
    )
    .unwrap();
    let creds = ClientCredentials {
        username: "bob".into(),
        password: "builder".into(),
    };
    let a = auth::authorize(&ch, &creds, "REGISTER", "sip:127.0.0.1:25131", b"", "c", 1);
    let r = exchange(
        &sock,
        &register_text(
            25270,
            25131,
            "alice",
            61,
            &format!("Authorization: {}\r\n", a.to_header_value()),
        ),
    );
    assert_eq!(status_of(&r), 403, "{r}");
    // The server is still serving.
    let r = exchange(&sock, &register_text(25270, 25131, "alice", 70, ""));
    assert_eq!(status_of(&r), 401);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

/// The pjsua2 softphone's Python, installed by scripts/setup under the target directory.
fn pjsua_python() -> std::path::PathBuf {
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

fn pjsua_register(server: &Server, args: &[&str]) -> String {
    let script = common::repo_root().join("crates/server/tests/peers/pjsua_register.py");
    let out = std::process::Command::new(pjsua_python())
        .arg(script)
        .args(["--server", &format!("127.0.0.1:{}", server.sip_port)])
        .args(args)
        .output()
        .expect("run the pjsua2 softphone");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pjsua2 {args:?}: {:?}\n{stdout}\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    stdout
}

/// A real softphone (PJSIP 2.15 via pjsua2) registers with SHA-256 digest (RFC 8760) chosen
/// from the server's challenges, unregisters, and is refused with 403 on a wrong password.
#[test]
fn pjsua2_softphone_registers_with_sha256_and_unregisters() {
    let server = Server::start(
        "agents-pjsua",
        25132,
        (26684, 26699),
        &agents_config(r#"["SHA-256", "MD5"]"#),
    );
    let out = pjsua_register(
        &server,
        &[
            "--user",
            "bob",
            "--password",
            "builder",
            "--local-port",
            "25275",
            "--expires",
            "120",
            "--unregister",
        ],
    );
    assert!(out.contains(r#""done": true"#), "{out}");
    let reg = server.wait_event(Duration::from_secs(5), |e| e["type"] == "agent.registered");
    assert_eq!(reg["agent"], "agent-bob", "bob is configured by HA1 only");
    assert_eq!(reg["auth"], "SHA-256");
    assert_eq!(reg["expires"], 120);
    assert!(
        reg["contact"]
            .as_str()
            .unwrap()
            .starts_with("sip:bob@127.0.0.1:25275"),
        "{reg}"
    );
    let unreg = server.wait_event(Duration::from_secs(5), |e| {
        e["type"] == "agent.unregistered"
    });
    assert_eq!(unreg["contact"], reg["contact"]);
    assert_eq!(unreg["contacts"], 0);

    let out = pjsua_register(
        &server,
        &[
            "--user",
            "alice",
            "--password",
            "not-her-password",
            "--local-port",
            "25276",
            "--expect",
            "403",
        ],
    );
    assert!(out.contains(r#""states": [403]"#), "{out}");
    let failed = server.wait_event(Duration::from_secs(5), |e| {
        e["type"] == "agent.register_failed"
    });
    assert_eq!(failed["status"], 403);
    assert_eq!(failed["source"], "127.0.0.1:25276");
    assert_eq!(
        of_type(&server.events(), "agent.registered").len(),
        1,
        "the wrong password never registered"
    );
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

/// Nonce expiry on the real binary: right credentials on an expired nonce get 401 with
/// `stale=true` (not 403), and the phone's retry with the fresh nonce registers.
#[test]
fn expired_nonce_is_stale_then_registers() {
    let server = Server::start(
        "agents-stale",
        25133,
        (26674, 26679),
        &agents_config(r#"["SHA-256", "MD5"]"#).replace("[sip]\n", "[sip]\nnonce_ttl_s = 1\n"),
    );
    let sock = UdpSocket::bind("127.0.0.1:25271").unwrap();
    sock.connect(("127.0.0.1", 25133)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let creds = ClientCredentials {
        username: "alice".into(),
        password: "wonderland".into(),
    };
    let challenge = |text: &str| {
        Challenge::select(
            text.lines()
                .filter_map(|l| l.strip_prefix("WWW-Authenticate: ")),
        )
        .unwrap()
    };
    let r401 = exchange(&sock, &register_text(25271, 25133, "alice", 1, ""));
    let ch = challenge(&r401);
    assert!(!ch.stale);
    std::thread::sleep(Duration::from_millis(1500));
    let a = auth::authorize(&ch, &creds, "REGISTER", "sip:127.0.0.1:25133", b"", "c1", 1);
    let stale = exchange(
        &sock,
        &register_text(
            25271,
            25133,
            "alice",
            2,
            &format!("Authorization: {}\r\n", a.to_header_value()),
        ),
    );
    assert_eq!(status_of(&stale), 401, "{stale}");
    let ch2 = challenge(&stale);
    assert!(ch2.stale, "{stale}");
    assert_ne!(ch2.nonce, ch.nonce);
    // The same expired nonce with a wrong password is a 403, never `stale`.
    let bad = ClientCredentials {
        username: "alice".into(),
        password: "nope".into(),
    };
    let a = auth::authorize(&ch, &bad, "REGISTER", "sip:127.0.0.1:25133", b"", "c1", 2);
    let r = exchange(
        &sock,
        &register_text(
            25271,
            25133,
            "alice",
            3,
            &format!("Authorization: {}\r\n", a.to_header_value()),
        ),
    );
    assert_eq!(status_of(&r), 403, "{r}");
    let a = auth::authorize(
        &ch2,
        &creds,
        "REGISTER",
        "sip:127.0.0.1:25133",
        b"",
        "c2",
        1,
    );
    let ok = exchange(
        &sock,
        &register_text(
            25271,
            25133,
            "alice",
            4,
            &format!("Authorization: {}\r\n", a.to_header_value()),
        ),
    );
    assert_eq!(status_of(&ok), 200, "{ok}");
    server.wait_event(Duration::from_secs(5), |e| e["type"] == "agent.registered");
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}
