//! End-to-end media: real RTP from SIPp's shipped pcaps and from pcaps these tests generate,
//! DTMF by RFC 4733, SIP INFO and in-band tones asserted on the event stream, Frontdoor's own
//! RTP checked by a receiver, bad RTP, and the RTP timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{RawCall, Server, dtmf_pcm, of_type, scenario, sipp, write_rtp_pcap};
use frontdoor_media::g711::G711;

fn digits(events: &[serde_json::Value]) -> Vec<(String, String)> {
    of_type(events, "dtmf")
        .iter()
        .map(|e| {
            (
                e["digit"].as_str().unwrap().to_owned(),
                e["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn copy_pcaps(server: &Server, names: &[&str]) {
    for n in names {
        std::fs::copy(format!("/usr/share/sip-tester/{n}"), server.dir.join(n))
            .unwrap_or_else(|e| panic!("SIPp's {n} (Debian sip-tester): {e}"));
    }
}

#[test]
fn rfc4733_digits_from_sipp_pcaps_once_each_in_order() {
    let server = Server::start("rfc4733", 25080, (37000, 37099), "");
    copy_pcaps(
        &server,
        &[
            "dtmf_2833_1.pcap",
            "dtmf_2833_5.pcap",
            "dtmf_2833_9.pcap",
            "dtmf_2833_pound.pcap",
        ],
    );
    sipp(
        &server,
        25180,
        26080,
        &[
            "-sf",
            &scenario("dtmf-rfc4733.xml"),
            "-s",
            "digits",
            "-m",
            "1",
        ],
    );
    server.wait_event(Duration::from_secs(5), |e| e["type"] == "media.stats");
    let events = server.events();
    let got = digits(&events);
    let want: Vec<(String, String)> = ["1", "5", "9", "#"]
        .iter()
        .map(|d| ((*d).to_owned(), "rfc4733".to_owned()))
        .collect();
    assert_eq!(got, want);
    // The `digits` number reads each key back.
    let plays: Vec<Vec<String>> = of_type(&events, "media.play")
        .iter()
        .map(|e| {
            e["prompts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(plays.first().unwrap(), &vec!["welcome".to_owned()]);
    assert!(
        plays.contains(&vec!["you-pressed".to_owned(), "digit-5".to_owned()]),
        "{plays:?}"
    );
    assert!(
        plays.contains(&vec!["you-pressed".to_owned(), "digit-pound".to_owned()]),
        "{plays:?}"
    );
}

#[test]
fn sip_info_digits() {
    let server = Server::start("info", 25081, (37100, 37199), "");
    sipp(
        &server,
        25181,
        26090,
        &["-sf", &scenario("dtmf-info.xml"), "-s", "answer", "-m", "1"],
    );
    server.wait_event(Duration::from_secs(5), |e| e["type"] == "media.stats");
    let want: Vec<(String, String)> = ["4", "7", "#"]
        .iter()
        .map(|d| ((*d).to_owned(), "info".to_owned()))
        .collect();
    assert_eq!(digits(&server.events()), want);
}

#[test]
fn inband_digits_from_generated_tones() {
    let server = Server::start("inband", 25082, (37200, 37299), "");
    // "2580" as PCMU tones, 60 ms on / 60 ms off, about -10 dBm0 per tone.
    let pcm = dtmf_pcm("2580", 60, 60, 5000.0);
    let frames: Vec<Vec<u8>> = pcm
        .chunks(160)
        .map(|c| G711::Pcmu.encode(c).to_vec())
        .collect();
    write_rtp_pcap(&server.dir.join("inband-dtmf.pcap"), 0, 20, &frames);
    sipp(
        &server,
        25182,
        26100,
        &[
            "-sf",
            &scenario("dtmf-inband.xml"),
            "-s",
            "answer",
            "-m",
            "1",
        ],
    );
    server.wait_event(Duration::from_secs(5), |e| e["type"] == "media.stats");
    let want: Vec<(String, String)> = ["2", "5", "8", "0"]
        .iter()
        .map(|d| ((*d).to_owned(), "inband".to_owned()))
        .collect();
    assert_eq!(digits(&server.events()), want);
}

/// SIPp's 7 s of A-law speech (30 ms packets): all received, nothing dropped, and no digit
/// is heard in speech.
#[test]
fn pcma_speech_is_received_and_never_read_as_digits() {
    let server = Server::start("pcma", 25083, (37300, 37399), "");
    copy_pcaps(&server, &["g711a.pcap"]);
    sipp(
        &server,
        25183,
        26110,
        &[
            "-sf",
            &scenario("pcma-audio.xml"),
            "-s",
            "answer",
            "-m",
            "1",
        ],
    );
    let stats = server.wait_event(Duration::from_secs(5), |e| e["type"] == "media.stats");
    let events = server.events();
    assert_eq!(of_type(&events, "call.answered")[0]["codec"], "PCMA");
    assert!(stats["packets_in"].as_u64().unwrap() >= 230, "{stats}");
    assert_eq!(stats["dropped_malformed"], 0, "{stats}");
    assert!(
        digits(&events).is_empty(),
        "no false digits on speech: {:?}",
        digits(&events)
    );
}

/// Frontdoor's RTP, as a receiver sees it: well-formed RTP v2 PCMU, one SSRC, consecutive
/// sequence numbers, timestamps +160 per packet, marker on the first, paced at 20 ms; and bad
/// RTP sent to it (short, version 1, unknown payload type) is dropped and counted while the
/// call goes on, and RTP from a foreign source is refused by the kernel (connected socket).
#[test]
fn outgoing_rtp_is_well_formed_and_paced_and_bad_rtp_is_harmless() {
    let server = Server::start("rtp", 25084, (37400, 37499), "");
    let call = RawCall::invite(&server, 25184, "answer");
    call.rtp
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut packets = Vec::new();
    let start = Instant::now();
    let mut sent = 0u16;
    while packets.len() < 100 {
        let n = call.rtp.recv(&mut buf).expect("RTP from frontdoor");
        packets.push((Instant::now(), buf[..n].to_vec()));
        // Our own (valid) RTP keeps the call alive, one packet per received one.
        let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd];
        pkt[2..4].copy_from_slice(&sent.to_be_bytes());
        pkt[4..8].copy_from_slice(&(u32::from(sent) * 160).to_be_bytes());
        pkt.extend_from_slice(&[0xff; 160]);
        call.rtp.send_to(&pkt, call.server_rtp).unwrap();
        sent += 1;
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    let first = &packets[0].1;
    assert_eq!(first[0] >> 6, 2, "RTP version 2");
    assert_eq!(first[1] & 0x80, 0x80, "marker bit on the first packet");
    let ssrc = &first[8..12];
    for w in packets.windows(2) {
        let (a, b) = (&w[0].1, &w[1].1);
        assert_eq!(b[0] >> 6, 2);
        assert_eq!(b[1] & 0x7f, 0, "PCMU");
        assert_eq!(b.len(), 12 + 160, "20 ms of G.711");
        assert_eq!(&b[8..12], ssrc, "one SSRC");
        let sa = u16::from_be_bytes([a[2], a[3]]);
        let sb = u16::from_be_bytes([b[2], b[3]]);
        assert_eq!(sb, sa.wrapping_add(1), "consecutive sequence numbers");
        let ta = u32::from_be_bytes([a[4], a[5], a[6], a[7]]);
        let tb = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        assert_eq!(
            tb,
            ta.wrapping_add(160),
            "timestamps advance 160 per packet"
        );
    }
    // Pacing: 99 intervals averaging 20 ms (15..25 ms allows a loaded 2-core CI box; a wrong ptime (10 or 30 ms) or a stalled sender fails).
    let span = packets.last().unwrap().0 - packets[0].0;
    let mean = span.as_secs_f64() / 99.0 * 1000.0;
    assert!((15.0..25.0).contains(&mean), "mean interval {mean:.2} ms");
    // Bad RTP: short, version 1, unknown PT, and valid RTP from a foreign source.
    call.rtp
        .send_to(&[0x80, 0x00, 0x01], call.server_rtp)
        .unwrap();
    let mut v1 = vec![0x40, 0, 0, 9, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd];
    v1.extend_from_slice(&[0xff; 160]);
    call.rtp.send_to(&v1, call.server_rtp).unwrap();
    let mut pt = vec![0x80, 96, 0, 10, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd];
    pt.extend_from_slice(&[0xff; 160]);
    call.rtp.send_to(&pt, call.server_rtp).unwrap();
    // The RTP socket is connected to the SDP address (no NAT latching): the kernel refuses a
    // foreign source outright, with ICMP port unreachable, before the engine sees it.
    let foreign = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    foreign.connect(call.server_rtp).unwrap();
    foreign
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut f = vec![0x80, 0, 0, 11, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44];
    f.extend_from_slice(&[0xff; 160]);
    foreign.send(&f).unwrap();
    let refused = foreign.recv(&mut [0u8; 64]).unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    // The call still sends media after the garbage.
    for _ in 0..10 {
        call.rtp
            .recv(&mut buf)
            .expect("RTP goes on after bad input");
    }
    call.bye();
    let stats = server.wait_event(Duration::from_secs(5), |e| e["type"] == "media.stats");
    assert_eq!(stats["dropped_foreign"], 0, "{stats}");
    assert!(stats["dropped_malformed"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["dropped_unknown_pt"], 1, "{stats}");
    assert!(stats["packets_out"].as_u64().unwrap() >= 100, "{stats}");
    let ended = server.wait_event(Duration::from_secs(5), |e| e["type"] == "call.ended");
    assert_eq!(ended["cause"], "remote_bye");
}

/// A caller whose RTP never comes is hung up with a BYE after `rtp_timeout_s`.
#[test]
fn rtp_timeout_hangs_up_a_dead_call() {
    let server = Server::start(
        "rtptimeout",
        25085,
        (37500, 37599),
        "[media]\nrtp_timeout_s = 1\n",
    );
    let call = RawCall::invite(&server, 25185, "answer");
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let bye = loop {
        let n = call
            .sip
            .recv(&mut buf)
            .expect("a BYE from frontdoor after the RTP timeout");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("BYE ") {
            break text;
        }
    };
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert!(bye.contains(&call.call_id));
    let ended = server.wait_event(Duration::from_secs(5), |e| e["type"] == "call.ended");
    assert_eq!(ended["cause"], "rtp_timeout");
}

/// A burst of RTP far larger than one read batch (good packets and garbage interleaved, sent
/// back to back) is read completely: every datagram is counted, the call goes on.
#[test]
fn a_burst_of_good_and_bad_rtp_is_read_completely() {
    let server = Server::start("rtpburst", 27084, (27400, 27499), "");
    let call = RawCall::invite(&server, 27184, "answer");
    call.rtp
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    call.rtp.recv(&mut buf).expect("RTP from frontdoor");
    let (mut good, mut bad) = (0u64, 0u64);
    for i in 0..120u16 {
        if i % 4 == 3 {
            call.rtp
                .send_to(&[0x80, 0x00, 0x01], call.server_rtp)
                .unwrap();
            bad += 1;
        } else {
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd];
            pkt[2..4].copy_from_slice(&i.to_be_bytes());
            pkt[4..8].copy_from_slice(&(u32::from(i) * 160).to_be_bytes());
            pkt.extend_from_slice(&[0xff; 160]);
            call.rtp.send_to(&pkt, call.server_rtp).unwrap();
            good += 1;
        }
    }
    for _ in 0..10 {
        call.rtp
            .recv(&mut buf)
            .expect("RTP goes on after the burst");
    }
    call.bye();
    let stats = server.wait_event(Duration::from_secs(5), |e| e["type"] == "media.stats");
    assert_eq!(stats["packets_in"], good, "{stats}");
    assert_eq!(stats["dropped_malformed"], bad, "{stats}");
    let ended = server.wait_event(Duration::from_secs(5), |e| e["type"] == "call.ended");
    assert_eq!(ended["cause"], "remote_bye");
}
