//! RFC 3264 offer/answer scenarios for `frontdoor_sip::sdp`.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use frontdoor_sip::sdp::{
    Codec, Direction, LocalMedia, MalformedSdp, NegotiatedMedia, SdpError, SdpSession,
    accept_answer, answer, offer,
};
use proptest::prelude::*;

fn local() -> LocalMedia {
    LocalMedia {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 30000,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        telephone_event: true,
        ptime_ms: 20,
        direction: Direction::SendRecv,
    }
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Builds an offer from `\n`-separated lines, with CRLF line ends.
fn sdp(lines: &str) -> Vec<u8> {
    let mut out = String::new();
    for l in lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// Checks the answer's line structure: CRLF everywhere, mandatory lines in RFC 4566 order.
fn assert_well_formed(body: &[u8]) {
    let s = text(body);
    assert!(s.ends_with("\r\n"), "no final CRLF: {s:?}");
    assert!(!s.replace("\r\n", "").contains('\n'), "bare LF: {s:?}");
    let kinds: Vec<char> = s
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            assert_eq!(l.as_bytes().get(1), Some(&b'='), "bad line {l:?}");
            l.chars().next().unwrap()
        })
        .collect();
    assert_eq!(&kinds[..3], &['v', 'o', 's']);
    assert!(kinds.contains(&'c') && kinds.contains(&'t') && kinds.contains(&'m'));
}

fn m_lines(body: &[u8]) -> Vec<String> {
    text(body)
        .split("\r\n")
        .filter(|l| l.starts_with("m="))
        .map(str::to_owned)
        .collect()
}

fn origin_version(body: &[u8]) -> u64 {
    let o = text(body)
        .split("\r\n")
        .find(|l| l.starts_with("o="))
        .unwrap();
    o.split(' ').nth(2).unwrap().parse().unwrap()
}

const SIPP_OFFER: &str = "
    v=0
    o=user1 53655765 2353687637 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 6000 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
";

#[test]
fn sipp_default_offer() {
    let mut session = SdpSession::with_id(1234);
    let (body, media) = answer(&sdp(SIPP_OFFER), &local(), &mut session).unwrap();
    assert_eq!(
        media,
        NegotiatedMedia {
            remote: Some(sa("127.0.0.1:6000")),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event_pt: None,
            ptime_ms: 20,
            direction: Direction::SendRecv,
        }
    );
    assert_well_formed(&body);
    let s = text(&body);
    assert!(s.starts_with(
        "v=0\r\no=- 1234 0 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    ));
    assert!(s.contains("m=audio 30000 RTP/AVP 0\r\n"));
    assert!(s.contains("a=rtpmap:0 PCMU/8000\r\n"));
    assert!(s.contains("a=ptime:20\r\n"));
    assert!(s.contains("a=sendrecv\r\n"));
    assert!(!s.contains("telephone-event"));
}

#[test]
fn sipp_offer_without_rtpmap_uses_static_pt() {
    let offer = sdp(
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0",
    );
    let (_, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.codec, Codec::Pcmu);
    assert_eq!(media.payload_type, 0);
}

#[test]
fn lf_only_offer_is_accepted() {
    let offer =
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 8\n";
    let (body, media) = answer(offer.as_bytes(), &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.codec, Codec::Pcma);
    assert_well_formed(&body);
}

#[test]
fn pcma_only_offer() {
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=call
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/AVP 8
        a=rtpmap:8 PCMA/8000
    ");
    let (body, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.codec, Codec::Pcma);
    assert_eq!(media.payload_type, 8);
    assert_eq!(media.remote, Some(sa("198.51.100.7:40000")));
    assert_eq!(m_lines(&body), vec!["m=audio 30000 RTP/AVP 8"]);
    assert!(text(&body).contains("a=rtpmap:8 PCMA/8000\r\n"));
}

#[test]
fn pcmu_pcma_telephone_event() {
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/AVP 0 8 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=ptime:20
        a=sendrecv
    ");
    let (body, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.codec, Codec::Pcmu);
    assert_eq!(media.telephone_event_pt, Some(101));
    assert_well_formed(&body);
    let s = text(&body);
    assert_eq!(m_lines(&body), vec!["m=audio 30000 RTP/AVP 0 101"]);
    assert!(s.contains("a=rtpmap:101 telephone-event/8000\r\n"));
    assert!(s.contains("a=fmtp:101 0-16\r\n"));

    // Without local DTMF support the event PT is not answered.
    let mut no_dtmf = local();
    no_dtmf.telephone_event = false;
    let (body, media) = answer(&offer, &no_dtmf, &mut SdpSession::default()).unwrap();
    assert_eq!(media.telephone_event_pt, None);
    assert_eq!(m_lines(&body), vec!["m=audio 30000 RTP/AVP 0"]);
}

#[test]
fn offerer_order_wins_over_ours() {
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/AVP 18 8 0
        a=rtpmap:18 G729/8000
    ");
    // We prefer PCMU, but the offer lists PCMA first (G.729 is unsupported).
    let (_, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.codec, Codec::Pcma);
    // A codec not in local.codecs is skipped even if offered first.
    let mut ulaw_only = local();
    ulaw_only.codecs = vec![Codec::Pcmu];
    let (_, media) = answer(&offer, &ulaw_only, &mut SdpSession::default()).unwrap();
    assert_eq!(media.codec, Codec::Pcmu);
}

#[test]
fn dynamic_payload_type_mapping() {
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/AVP 96 97 98
        a=rtpmap:96 opus/48000/2
        a=rtpmap:97 pcma/8000
        a=rtpmap:98 telephone-event/8000
        a=fmtp:98 0-15
    ");
    let (body, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.codec, Codec::Pcma);
    assert_eq!(media.payload_type, 97, "answer reuses the offer's PT");
    assert_eq!(media.telephone_event_pt, Some(98));
    let s = text(&body);
    assert_eq!(m_lines(&body), vec!["m=audio 30000 RTP/AVP 97 98"]);
    assert!(s.contains("a=rtpmap:97 PCMA/8000\r\n"));
    assert!(s.contains("a=fmtp:98 0-15\r\n"));
}

#[test]
fn rtpmap_overrides_static_number() {
    // PT 8 remapped to something else must not be taken as PCMA.
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/AVP 8 0
        a=rtpmap:8 L16/8000
    ");
    let (_, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!((media.codec, media.payload_type), (Codec::Pcmu, 0));
}

#[test]
fn video_and_audio_keep_m_line_count() {
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=video 50000 RTP/AVP 96
        a=rtpmap:96 H264/90000
        m=audio 40000 RTP/AVP 8 0
        m=audio 40002 RTP/AVP 0
    ");
    let (body, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.remote, Some(sa("198.51.100.7:40000")));
    assert_eq!(media.codec, Codec::Pcma);
    assert_eq!(
        m_lines(&body),
        vec![
            "m=video 0 RTP/AVP 96",
            "m=audio 30000 RTP/AVP 8",
            "m=audio 0 RTP/AVP 0",
        ]
    );
    assert_well_formed(&body);
}

#[test]
fn srtp_audio_is_rejected_and_plain_audio_taken() {
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/SAVP 0
        m=audio 40002 RTP/AVP 0
    ");
    let (body, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.remote, Some(sa("198.51.100.7:40002")));
    assert_eq!(
        m_lines(&body),
        vec!["m=audio 0 RTP/SAVP 0", "m=audio 30000 RTP/AVP 0"]
    );
}

#[test]
fn no_common_codec_is_not_acceptable() {
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/AVP 18 9 101
        a=rtpmap:18 G729/8000
        a=rtpmap:9 G722/8000
        a=rtpmap:101 telephone-event/8000
        m=video 50000 RTP/AVP 96
    ");
    let mut session = SdpSession::with_id(9);
    let err = answer(&offer, &local(), &mut session).unwrap_err();
    assert!(matches!(err, SdpError::NotAcceptable));
    assert_eq!(err.status_code(), 488);

    let video_only = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=video 50000 RTP/AVP 96
    ");
    assert!(matches!(
        answer(&video_only, &local(), &mut session),
        Err(SdpError::NotAcceptable)
    ));
}

#[test]
fn malformed_offers_are_400_not_panics() {
    let mut session = SdpSession::default();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xffhello world".to_vec()),
        ("text garbage", b"this is not sdp".to_vec()),
        ("empty", Vec::new()),
        (
            "missing m=",
            sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0"),
        ),
        (
            "bad port",
            sdp(
                "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 70000 RTP/AVP 0",
            ),
        ),
        (
            "non-numeric port",
            sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio abc RTP/AVP 0"),
        ),
        (
            "no c= anywhere",
            sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0"),
        ),
        (
            "bad address",
            sdp(
                "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 999.1.1.1\nt=0 0\nm=audio 4000 RTP/AVP 0",
            ),
        ),
        (
            "family mismatch",
            sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 ::1\nt=0 0\nm=audio 4000 RTP/AVP 0"),
        ),
        (
            "m= before o=",
            sdp("v=0\nm=audio 4000 RTP/AVP 0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0"),
        ),
    ];
    for (name, body) in cases {
        match answer(&body, &local(), &mut session) {
            Err(e @ SdpError::Malformed(_)) => assert_eq!(e.status_code(), 400, "{name}"),
            other => panic!("{name}: expected Malformed, got {other:?}"),
        }
    }
    assert!(matches!(
        answer(
            &sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0"),
            &local(),
            &mut session
        ),
        Err(SdpError::Malformed(MalformedSdp::NoMedia))
    ));
    assert!(matches!(
        answer(b"\xff\xfe", &local(), &mut session),
        Err(SdpError::Malformed(MalformedSdp::NotUtf8))
    ));
}

#[test]
fn session_level_connection_and_media_level_override() {
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/AVP 0
        c=IN IP4 203.0.113.5
    ");
    let (_, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.remote, Some(sa("203.0.113.5:40000")));

    let media_only = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        t=0 0
        m=audio 40000 RTP/AVP 0
        c=IN IP6 2001:db8::5
    ");
    let (_, media) = answer(&media_only, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.remote, Some(sa("[2001:db8::5]:40000")));
}

#[test]
fn ipv6_local_address() {
    let mut l = local();
    l.address = "2001:db8::10".parse().unwrap();
    let (body, _) = answer(&sdp(SIPP_OFFER), &l, &mut SdpSession::default()).unwrap();
    let s = text(&body);
    assert!(s.contains("o=- 0 0 IN IP6 2001:db8::10\r\n"));
    assert!(s.contains("c=IN IP6 2001:db8::10\r\n"));
}

#[test]
fn direction_mapping() {
    let base = "v=0\no=- 5 5 IN IP4 198.51.100.7\ns=-\nc=IN IP4 198.51.100.7\nt=0 0\nm=audio 40000 RTP/AVP 0\n";
    let cases = [
        ("a=sendonly", Direction::SendRecv, Direction::RecvOnly),
        ("a=recvonly", Direction::SendRecv, Direction::SendOnly),
        ("a=inactive", Direction::SendRecv, Direction::Inactive),
        ("a=sendrecv", Direction::SendRecv, Direction::SendRecv),
        ("", Direction::SendRecv, Direction::SendRecv),
        ("a=sendrecv", Direction::SendOnly, Direction::SendOnly),
        ("a=sendrecv", Direction::Inactive, Direction::Inactive),
        // Both sides holding: nothing flows.
        ("a=sendonly", Direction::SendOnly, Direction::Inactive),
    ];
    for (attr, ours, expected) in cases {
        let mut l = local();
        l.direction = ours;
        let offer = sdp(&format!("{base}{attr}"));
        let (body, media) = answer(&offer, &l, &mut SdpSession::default()).unwrap();
        assert_eq!(media.direction, expected, "{attr} / {ours:?}");
        assert!(
            text(&body).contains(&format!("a={}\r\n", expected.as_str())),
            "{attr}: {}",
            text(&body)
        );
    }
}

#[test]
fn session_level_direction_and_media_override() {
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        a=sendonly
        m=audio 40000 RTP/AVP 0
    ");
    let (_, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.direction, Direction::RecvOnly);

    let overridden = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        a=sendonly
        m=audio 40000 RTP/AVP 0
        a=inactive
    ");
    let (_, media) = answer(&overridden, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.direction, Direction::Inactive);
}

#[test]
fn ptime_handling() {
    let with = |ptime: &str| {
        let offer = sdp(&format!(
            "v=0\no=- 5 5 IN IP4 198.51.100.7\ns=-\nc=IN IP4 198.51.100.7\nt=0 0\nm=audio 40000 RTP/AVP 0\n{ptime}"
        ));
        let (body, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
        assert!(text(&body).contains(&format!("a=ptime:{}\r\n", media.ptime_ms)));
        media.ptime_ms
    };
    assert_eq!(with("a=ptime:30"), 30);
    assert_eq!(with("a=ptime:10"), 10);
    assert_eq!(with("a=ptime:60"), 60);
    assert_eq!(with("a=ptime:25"), 20);
    assert_eq!(with("a=ptime:90"), 20);
    assert_eq!(with("a=ptime:0"), 20);
    assert_eq!(with("a=ptime:abc"), 20);
    assert_eq!(with(""), 20);
}

#[test]
fn hold_and_resume_reinvite() {
    let initial = sdp("
        v=0
        o=alice 100 1 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/AVP 0 101
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=sendrecv
    ");
    let hold_sendonly = sdp("
        v=0
        o=alice 100 2 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 40000 RTP/AVP 0 101
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=sendonly
    ");
    let hold_old_style = sdp("
        v=0
        o=alice 100 3 IN IP4 198.51.100.7
        s=-
        c=IN IP4 0.0.0.0
        t=0 0
        m=audio 40000 RTP/AVP 0 101
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
    ");
    let mut session = SdpSession::with_id(777);
    let l = local();

    let (a1, m1) = answer(&initial, &l, &mut session).unwrap();
    assert_eq!(origin_version(&a1), 0);
    assert_eq!(m1.direction, Direction::SendRecv);

    let (a2, m2) = answer(&hold_sendonly, &l, &mut session).unwrap();
    assert_eq!(m2.direction, Direction::RecvOnly);
    assert_eq!(
        m2.remote,
        Some(sa("198.51.100.7:40000")),
        "MOH still comes from there"
    );
    assert!(text(&a2).contains("a=recvonly\r\n"));
    assert_eq!(origin_version(&a2), 1, "content changed → version+1");

    let (a3, m3) = answer(&hold_old_style, &l, &mut session).unwrap();
    assert_eq!(m3.remote, None);
    assert_eq!(m3.direction, Direction::RecvOnly, "nowhere to send to");
    assert_eq!(
        origin_version(&a3),
        1,
        "same answer content as a2 → same version"
    );

    // Resume.
    let (a4, m4) = answer(&initial, &l, &mut session).unwrap();
    assert_eq!(m4, m1);
    assert!(text(&a4).contains("a=sendrecv\r\n"));
    assert_eq!(origin_version(&a4), 2);
    assert_eq!(session.version(), 2);
    assert_eq!(session.id(), 777);
}

#[test]
fn version_bump_rules() {
    let mut session = SdpSession::with_id(55);
    let l = local();
    // Session refresh re-INVITEs with identical offers keep the version.
    let (a1, _) = answer(&sdp(SIPP_OFFER), &l, &mut session).unwrap();
    let (a2, _) = answer(&sdp(SIPP_OFFER), &l, &mut session).unwrap();
    assert_eq!(a1, a2);
    assert_eq!(origin_version(&a2), 0);
    // The peer changing its own o= version alone does not change our content.
    let bumped_remote = text(&sdp(SIPP_OFFER)).replace("2353687637", "2353687638");
    let (a3, _) = answer(bumped_remote.as_bytes(), &l, &mut session).unwrap();
    assert_eq!(origin_version(&a3), 0);
    // A new local port changes our content.
    let mut moved = l.clone();
    moved.port = 30002;
    let (a4, _) = answer(&sdp(SIPP_OFFER), &moved, &mut session).unwrap();
    assert_eq!(origin_version(&a4), 1);
    // A rejected offer does not touch the session.
    assert!(answer(b"nonsense", &moved, &mut session).is_err());
    let (a5, _) = answer(&sdp(SIPP_OFFER), &moved, &mut session).unwrap();
    assert_eq!(origin_version(&a5), 1);
    // Our own offer in the same session keeps counting from there.
    let o = offer(&moved, &mut session);
    assert_eq!(origin_version(&o), 2);
    assert!(text(&o).starts_with("v=0\r\no=- 55 2 "));
}

#[test]
fn offer_then_accept_answer_round_trip() {
    let alice = local();
    let mut bob = local();
    bob.address = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20));
    bob.port = 42000;
    bob.codecs = vec![Codec::Pcma, Codec::Pcmu];
    bob.ptime_ms = 30;

    let mut alice_session = SdpSession::with_id(1);
    let o = offer(&alice, &mut alice_session);
    assert_well_formed(&o);
    let s = text(&o);
    assert!(s.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"), "{s}");
    assert!(s.contains("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"));
    assert!(s.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
    assert!(s.contains("a=ptime:20\r\na=sendrecv\r\n"));

    let (ans, bob_media) = answer(&o, &bob, &mut SdpSession::with_id(2)).unwrap();
    // Bob follows the offerer's preference (PCMU first) even though he prefers PCMA.
    assert_eq!(bob_media.codec, Codec::Pcmu);
    assert_eq!(bob_media.remote, Some(sa("192.0.2.10:30000")));
    assert_eq!(bob_media.ptime_ms, 20, "offered ptime honoured");

    let alice_media = accept_answer(&ans, &alice).unwrap();
    assert_eq!(
        alice_media,
        NegotiatedMedia {
            remote: Some(sa("203.0.113.20:42000")),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event_pt: Some(101),
            ptime_ms: 20,
            direction: Direction::SendRecv,
        }
    );
}

#[test]
fn accept_answer_hold_and_errors() {
    let alice = local();
    let answer_with = |extra: &str, conn: &str, port: u16| {
        sdp(&format!(
            "v=0\no=- 9 9 IN IP4 203.0.113.20\ns=-\nc=IN IP4 {conn}\nt=0 0\nm=audio {port} RTP/AVP 8\n{extra}"
        ))
    };
    let m = accept_answer(&answer_with("a=recvonly", "203.0.113.20", 42000), &alice).unwrap();
    assert_eq!(m.direction, Direction::SendOnly);
    assert_eq!(m.codec, Codec::Pcma);
    let m = accept_answer(&answer_with("", "0.0.0.0", 42000), &alice).unwrap();
    assert_eq!(m.remote, None);
    let m = accept_answer(&answer_with("", "203.0.113.20", 0), &alice).unwrap();
    assert_eq!((m.remote, m.direction), (None, Direction::Inactive));

    let mut ulaw_only = local();
    ulaw_only.codecs = vec![Codec::Pcmu];
    assert!(matches!(
        accept_answer(&answer_with("", "203.0.113.20", 42000), &ulaw_only),
        Err(SdpError::NotAcceptable)
    ));
    assert!(matches!(
        accept_answer(b"v=0\r\n", &alice),
        Err(SdpError::Malformed(_))
    ));
}

#[test]
fn all_audio_disabled_reoffer_answers_port_zero() {
    let offer = sdp("
        v=0
        o=- 5 6 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 0 RTP/AVP 0
    ");
    let (body, media) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    assert_eq!(media.remote, None);
    assert_eq!(media.direction, Direction::Inactive);
    assert_eq!(m_lines(&body), vec!["m=audio 0 RTP/AVP 0"]);
}

#[test]
fn answer_parses_back_with_accept_answer() {
    // The answer we generate must itself be acceptable SDP for the offerer.
    let offer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=video 50000 RTP/AVP 96
        m=audio 40000 RTP/AVP 96 101
        a=rtpmap:96 PCMA/8000
        a=rtpmap:101 telephone-event/8000
        a=sendonly
    ");
    let (body, _) = answer(&offer, &local(), &mut SdpSession::default()).unwrap();
    let back = accept_answer(&body, &local()).unwrap();
    assert_eq!(back.codec, Codec::Pcma);
    assert_eq!(back.payload_type, 96);
    assert_eq!(back.telephone_event_pt, Some(101));
    assert_eq!(back.remote, Some(sa("192.0.2.10:30000")));
    // Our answer said recvonly; seen from the offerer that is sendonly.
    assert_eq!(back.direction, Direction::SendOnly);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn answer_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = answer(&body, &local(), &mut SdpSession::default());
        let _ = accept_answer(&body, &local());
    }

    #[test]
    fn answer_never_panics_on_sdp_like_text(
        body in "v=0\r\no=- 1 1 IN IP[46] [0-9a-f.:]{1,12}\r\ns=-\r\n([cmtab]=[ -~]{0,30}\r?\n){0,12}",
    ) {
        let _ = answer(body.as_bytes(), &local(), &mut SdpSession::default());
        let _ = accept_answer(body.as_bytes(), &local());
    }

    #[test]
    fn answer_never_panics_on_mutated_sdp(
        cut in 0usize..400,
        insert in proptest::collection::vec(any::<u8>(), 0..16),
        line in "[vosctma]=[ -~]{0,40}",
    ) {
        let mut body = sdp("
            v=0
            o=- 5 5 IN IP4 198.51.100.7
            s=-
            c=IN IP4 198.51.100.7
            t=0 0
            m=audio 40000 RTP/AVP 0 8 101
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-16
            a=ptime:20
            m=video 50000 RTP/AVP 96
        ");
        let at = cut.min(body.len());
        body.splice(at..at, insert);
        let _ = answer(&body, &local(), &mut SdpSession::default());
        let mut with_line = sdp(SIPP_OFFER);
        with_line.extend_from_slice(line.as_bytes());
        with_line.extend_from_slice(b"\r\n");
        if let Ok((ans, _)) = answer(&with_line, &local(), &mut SdpSession::default()) {
            // Whatever we answer must parse back.
            prop_assert!(accept_answer(&ans, &local()).is_ok());
        }
    }
}
