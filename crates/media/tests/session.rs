//! End-to-end tests of `MediaSession` with simulated time and a simulated remote.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use frontdoor_media::call::{DropReason, MediaConfig, MediaEvent, MediaSession, RxOutcome};
use frontdoor_media::dtmf::rfc4733::{encode_event_payload, parse_telephone_event};
use frontdoor_media::dtmf::{Digit, DtmfSource};
use frontdoor_media::g711::{G711, Ptime};
use frontdoor_media::latch::LatchMode;
use frontdoor_media::prompt::Prompt;
use frontdoor_media::rtp::{PayloadMap, RtpSender, parse_rtp};
use frontdoor_media::{PayloadType, Ssrc};
use proptest::prelude::*;

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const SDP: &str = "192.0.2.10:40000";
const TE: u8 = 101;

fn session(t: Instant, te: bool, latch: LatchMode) -> MediaSession {
    let mut cfg = MediaConfig::new(G711::Pcmu, addr(SDP), Ssrc(0xF00D));
    cfg.telephone_event = if te { PayloadType::new(TE) } else { None };
    cfg.latch = latch;
    cfg.initial_seq = 1000;
    cfg.initial_ts = 5000;
    MediaSession::new(t, cfg)
}

fn dtmf_tone(d: char, ms: usize) -> Vec<i16> {
    let rows = [697.0f32, 770.0, 852.0, 941.0];
    let cols = [1209.0f32, 1336.0, 1477.0, 1633.0];
    let keys = ["123A", "456B", "789C", "*0#D"];
    let (r, c) = keys
        .iter()
        .enumerate()
        .find_map(|(r, k)| k.find(d).map(|c| (r, c)))
        .unwrap();
    (0..ms * 8)
        .map(|i| {
            let t = i as f32 / 8000.0;
            (5000.0 * (2.0 * std::f32::consts::PI * rows[r] * t).sin()
                + 5000.0 * (2.0 * std::f32::consts::PI * cols[c] * t).sin()) as i16
        })
        .collect()
}

/// Drive the session for `ticks` × 20 ms, feeding one remote packet per tick from
/// `remote` (if any), collecting our outgoing packets and events.
struct Sim {
    t0: Instant,
    tick: u64,
    sent: Vec<Bytes>,
    events: Vec<MediaEvent>,
}

impl Sim {
    fn new(t0: Instant) -> Self {
        Sim {
            t0,
            tick: 0,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }
    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.tick * 20)
    }
    fn step(&mut self, s: &mut MediaSession, incoming: &[(SocketAddr, Bytes)]) -> Vec<RxOutcome> {
        let now = self.now();
        let out = incoming
            .iter()
            .map(|(a, p)| s.handle_rtp(now, *a, p))
            .collect();
        s.handle_timeout(now);
        while let Some(p) = s.poll_rtp(now) {
            self.sent.push(p);
        }
        while let Some(e) = s.poll_event() {
            self.events.push(e);
        }
        self.tick += 1;
        out
    }
    fn digits(&self) -> Vec<(char, DtmfSource)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Dtmf(d) => Some((d.digit.as_char(), d.source)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn echo_with_inband_dtmf_over_rollover() {
    let t = t0();
    let mut s = session(t, false, LatchMode::Sdp);
    assert!(s.inband_enabled());
    s.set_echo(true);
    let remote = addr(SDP);
    // caller: silence, '5' for 100 ms, silence, '#' for 80 ms, silence; seq/ts wrap mid-call
    let mut audio = vec![0i16; 1600];
    audio.extend(dtmf_tone('5', 100));
    audio.extend(vec![0i16; 1600]);
    audio.extend(dtmf_tone('#', 80));
    audio.extend(vec![0i16; 3200]);
    let mut tx = RtpSender::new(Ssrc(0xCA11E4), PayloadType::PCMU, 65530, u32::MAX - 1000);
    let frames = G711::Pcmu.encode_frames(&audio, Ptime::DEFAULT);
    let mut sim = Sim::new(t);
    for f in &frames {
        let p = tx.audio_packet(f, 160);
        let r = sim.step(&mut s, &[(remote, p)]);
        assert_eq!(r, vec![RxOutcome::Audio]);
    }
    for _ in 0..5 {
        sim.step(&mut s, &[]);
    }
    assert_eq!(
        sim.digits(),
        vec![('5', DtmfSource::Inband), ('#', DtmfSource::Inband)]
    );
    let st = s.stats();
    assert_eq!(st.packets.packets_received, frames.len() as u64);
    assert_eq!(st.packets.lost, 0);
    assert_eq!(
        st.packets.dropped_foreign + st.packets.dropped_malformed + st.packets.dropped_late,
        0
    );
    // echo: what we sent back is the caller's audio, delayed by the jitter buffer
    let pm = PayloadMap::g711(G711::Pcmu, None);
    let echoed: Vec<u8> = sim
        .sent
        .iter()
        .flat_map(|p| parse_rtp(p, &pm).unwrap().payload.to_vec())
        .collect();
    let sent: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
    let pos = echoed
        .windows(160)
        .position(|w| w == &sent[1600..1760])
        .unwrap();
    assert_eq!(pos % 160, 0);
    assert_eq!(&echoed[pos..pos + 1600], &sent[1600..3200]);
    // our own stream: consecutive seq from 1000, ts from 5000 in steps of 160
    let first = parse_rtp(&sim.sent[0], &pm).unwrap();
    let last = parse_rtp(sim.sent.last().unwrap(), &pm).unwrap();
    assert_eq!(
        (first.seq, first.timestamp, first.marker),
        (1000, 5000, true)
    );
    assert_eq!(last.seq, 1000 + sim.sent.len() as u16 - 1);
    assert_eq!(last.timestamp, 5000 + 160 * (sim.sent.len() as u32 - 1));
}

#[test]
fn nat_latching_and_bad_packets_are_counted() {
    let t = t0();
    let mut s = session(t, true, LatchMode::nat());
    let nat = addr("203.0.113.7:51000");
    let evil = addr("198.51.100.66:4444");
    let mut tx = RtpSender::new(Ssrc(77), PayloadType::PCMU, 10, 0);
    let mut sim = Sim::new(t);
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        let p = tx.audio_packet(&[0xFF; 160], 160);
        outcomes.extend(sim.step(&mut s, &[(nat, p)]));
    }
    assert_eq!(
        &outcomes[..2],
        &[RxOutcome::Dropped(DropReason::Foreign); 2]
    );
    assert_eq!(
        outcomes[2],
        RxOutcome::Audio,
        "third in-sequence packet latches"
    );
    assert!(sim.events.contains(&MediaEvent::Latched(nat)));
    assert_eq!(s.remote_addr(), nat);
    // an attacker's in-sequence stream is dropped and counted, never played
    let mut etx = RtpSender::new(Ssrc(666), PayloadType::PCMU, 500, 0);
    for _ in 0..10 {
        let p = etx.audio_packet(&[0x00; 160], 160);
        let q = tx.audio_packet(&[0xFF; 160], 160);
        let r = sim.step(&mut s, &[(evil, p), (nat, q)]);
        assert_eq!(
            r,
            vec![RxOutcome::Dropped(DropReason::Foreign), RxOutcome::Audio]
        );
    }
    assert_eq!(s.remote_addr(), nat);
    // malformed: short, version 1, unknown PT
    let now = sim.now();
    assert_eq!(
        s.handle_rtp(now, nat, &[0x80, 0, 0]),
        RxOutcome::Dropped(DropReason::Malformed)
    );
    let mut v1 = tx.audio_packet(&[0xFF; 160], 160).to_vec();
    v1[0] = (v1[0] & 0x3F) | 0x40;
    assert_eq!(
        s.handle_rtp(now, nat, &v1),
        RxOutcome::Dropped(DropReason::Malformed)
    );
    let mut g729 = tx.audio_packet(&[0xFF; 20], 160).to_vec();
    g729[1] = 18;
    assert_eq!(
        s.handle_rtp(now, nat, &g729),
        RxOutcome::Dropped(DropReason::UnknownPayloadType)
    );
    // comfort noise is valid
    let mut cn = tx.audio_packet(&[0x40], 160).to_vec();
    cn[1] = 13;
    assert_eq!(s.handle_rtp(now, nat, &cn), RxOutcome::ComfortNoise);
    let st = s.stats().packets;
    assert_eq!(st.dropped_foreign, 2 + 10);
    assert_eq!(st.dropped_malformed, 3);
    assert_eq!(st.dropped_unknown_pt, 1);
    assert_eq!(st.comfort_noise, 1);
}

#[test]
fn rfc4733_and_info_dedup_through_session() {
    let t = t0();
    let mut s = session(t, true, LatchMode::Sdp);
    assert!(!s.inband_enabled());
    let remote = addr(SDP);
    let mut tx = RtpSender::new(Ssrc(5), PayloadType::PCMU, 0, 0);
    let te = PayloadType::new(TE).unwrap();
    let mut sim = Sim::new(t);
    // press '7': start, updates, 3 end packets; also an INFO for the same press
    let ev_ts = 8000;
    let pk = |end: bool, dur: u16, m: bool, tx: &mut RtpSender| {
        tx.event_packet(te, m, ev_ts, &encode_event_payload(7, end, 10, dur))
    };
    let script = [
        (false, 160, true),
        (false, 320, false),
        (false, 480, false),
        (true, 640, false),
        (true, 640, false),
        (true, 640, false),
    ];
    for (end, dur, m) in script {
        let p = pk(end, dur, m, &mut tx);
        sim.step(&mut s, &[(remote, p)]);
    }
    s.handle_info(
        sim.now(),
        "application/dtmf-relay",
        b"Signal=7\r\nDuration=80\r\n",
    )
    .unwrap();
    // a new press of the same key (new timestamp) → a second digit
    let p = tx.event_packet(te, true, 16000, &encode_event_payload(7, true, 10, 640));
    sim.step(&mut s, &[(remote, p)]);
    // an INFO for another key
    s.handle_info(sim.now(), "application/dtmf", b"*").unwrap();
    assert!(s.handle_info(sim.now(), "application/dtmf", b"x").is_err());
    sim.step(&mut s, &[]);
    assert_eq!(
        sim.digits(),
        vec![
            ('7', DtmfSource::Rfc4733),
            ('7', DtmfSource::Rfc4733),
            ('*', DtmfSource::Info)
        ]
    );
    let d = sim
        .events
        .iter()
        .find_map(|e| {
            if let MediaEvent::Dtmf(d) = e {
                Some(*d)
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(d.duration, Some(Duration::from_millis(80)));
    assert_eq!(d.volume, Some(10));
}

#[test]
fn sending_dtmf_and_prompts() {
    let t = t0();
    let mut s = session(t, true, LatchMode::Sdp);
    let prompt = Prompt::from_pcm("beep", &dtmf_tone('1', 100));
    s.play(prompt.clone());
    let mut sim = Sim::new(t);
    for _ in 0..5 {
        sim.step(&mut s, &[]);
    }
    s.send_dtmf(
        Digit::from_char('9').unwrap(),
        Some(Duration::from_millis(60)),
    )
    .unwrap();
    for _ in 0..10 {
        sim.step(&mut s, &[]);
    }
    let pm = PayloadMap::g711(G711::Pcmu, PayloadType::new(TE));
    let pkts: Vec<_> = sim
        .sent
        .iter()
        .map(|p| parse_rtp(p, &pm).unwrap())
        .collect();
    // first 5 packets: the prompt's frames, byte for byte
    for (i, p) in pkts.iter().take(5).enumerate() {
        assert_eq!(
            p.payload,
            &prompt.encoded(G711::Pcmu)[i * 160..(i + 1) * 160]
        );
    }
    // then the event: 60 ms → 2 updates + 3 ends, same timestamp, marker on the first
    let evs: Vec<_> = pkts.iter().filter(|p| p.payload_type.get() == TE).collect();
    assert_eq!(evs.len(), 5);
    assert!(evs[0].marker && !evs[1].marker);
    assert!(evs.iter().all(|p| p.timestamp == evs[0].timestamp));
    assert_eq!(evs[0].timestamp, 5000 + 5 * 160);
    let ends = evs
        .iter()
        .filter(|p| parse_telephone_event(p.payload).unwrap().end)
        .count();
    assert_eq!(ends, 3);
    // audio resumes with the marker bit and a timestamp that kept running
    let after = pkts
        .iter()
        .skip_while(|p| p.payload_type.get() != TE)
        .find(|p| p.payload_type.get() == 0)
        .unwrap();
    assert!(after.marker);
    assert_eq!(after.timestamp, evs[0].timestamp + 5 * 160);
    // sequence numbers are consecutive across audio and events
    for w in pkts.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
    }
    // no DTMF sender without a negotiated telephone-event
    let mut plain = session(t, false, LatchMode::Sdp);
    assert!(
        plain
            .send_dtmf(Digit::from_char('1').unwrap(), None)
            .is_err()
    );
}

#[test]
fn media_timeout_and_hold() {
    let t = t0();
    let mut s = session(t, true, LatchMode::Sdp);
    let mut tx = RtpSender::new(Ssrc(5), PayloadType::PCMU, 0, 0);
    s.handle_rtp(t, addr(SDP), &tx.audio_packet(&[0xFF; 160], 160));
    assert!(!s.media_timeout(t + Duration::from_secs(29)));
    assert!(s.media_timeout(t + Duration::from_secs(30)));
    s.set_hold(true, t + Duration::from_secs(30));
    assert!(!s.media_timeout(t + Duration::from_secs(100)));
    s.set_hold(false, t + Duration::from_secs(100));
    assert!(!s.media_timeout(t + Duration::from_secs(110)));
    // foreign packets do not keep the call alive
    for i in 0..10 {
        s.handle_rtp(
            t + Duration::from_secs(120 + i),
            addr("10.9.9.9:1"),
            &tx.audio_packet(&[0xFF; 160], 160),
        );
    }
    assert!(s.media_timeout(t + Duration::from_secs(131)));
}

#[test]
fn rtcp_reports_are_emitted_and_parsed() {
    let t = t0();
    let mut s = session(t, true, LatchMode::Sdp);
    let mut tx = RtpSender::new(Ssrc(5), PayloadType::PCMU, 0, 0);
    let mut sim = Sim::new(t);
    let mut reports = Vec::new();
    for _ in 0..700 {
        let p = tx.audio_packet(&[0xFF; 160], 160);
        sim.step(&mut s, &[(addr(SDP), p)]);
        if let Some(r) = s.poll_rtcp(sim.now()) {
            reports.push(r);
        }
    }
    // 14 s: first report at 2.5 s, then every 5 s (7.5, 12.5)
    assert_eq!(reports.len(), 3);
    let pk = rtc_rtcp::packet::unmarshal(&mut &reports[0][..]).unwrap();
    let sr = pk[0]
        .as_any()
        .downcast_ref::<rtc_rtcp::sender_report::SenderReport>()
        .unwrap();
    assert_eq!(sr.ssrc, 0xF00D);
    assert_eq!(sr.reports[0].ssrc, 5);
    assert_eq!(sr.reports[0].fraction_lost, 0);
    assert!(
        s.handle_rtcp(sim.now(), addr("10.1.1.1:40001"), &reports[0])
            .is_err()
    );
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), v2 in any::<bool>(), pt in prop_oneof![Just(0u8), Just(8u8), Just(13u8), Just(101u8), any::<u8>()]) {
        let t = t0();
        let mut s = session(t, true, LatchMode::nat());
        let mut data = data;
        if v2 && data.len() >= 2 {
            data[0] = (data[0] & 0x3F) | 0x80;
            data[1] = (data[1] & 0x80) | (pt & 0x7F);
        }
        let _ = s.handle_rtp(t, addr(SDP), &data);
        let _ = s.handle_rtp(t, addr("1.2.3.4:5"), &data);
        let _ = s.handle_rtcp(t, addr(SDP), &data);
        let _ = s.poll_rtp(t);
        let _ = s.poll_rtp(t + Duration::from_millis(20));
    }
}

#[test]
fn pcma_30ms_ptime_end_to_end() {
    let t = t0();
    let mut cfg = MediaConfig::new(G711::Pcma, addr(SDP), Ssrc(0xA1));
    cfg.ptime = Ptime::from_ms(30).unwrap();
    cfg.telephone_event = None;
    let mut s = MediaSession::new(t, cfg);
    s.set_echo(true);
    let mut audio = vec![0i16; 2400];
    audio.extend(dtmf_tone('D', 90));
    audio.extend(vec![0i16; 4800]);
    let frames = G711::Pcma.encode_frames(&audio, Ptime::from_ms(30).unwrap());
    let mut tx = RtpSender::new(Ssrc(0xB2), PayloadType::PCMA, 0, 0);
    let mut sent = Vec::new();
    let mut digits = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        let now = t + Duration::from_millis(30 * k as u64);
        assert_eq!(
            s.handle_rtp(now, addr(SDP), &tx.audio_packet(f, 240)),
            RxOutcome::Audio
        );
        while let Some(p) = s.poll_rtp(now) {
            sent.push(p);
        }
        while let Some(MediaEvent::Dtmf(d)) = s.poll_event() {
            digits.push((d.digit.as_char(), d.source));
        }
    }
    assert_eq!(digits, vec![('D', DtmfSource::Inband)]);
    assert_eq!(sent.len(), frames.len());
    let pm = PayloadMap::g711(G711::Pcma, None);
    let p: Vec<_> = sent.iter().map(|b| parse_rtp(b, &pm).unwrap()).collect();
    assert!(
        p.iter()
            .all(|p| p.payload.len() == 240 && p.payload_type == PayloadType::PCMA)
    );
    assert_eq!(p[1].timestamp - p[0].timestamp, 240);
    assert_eq!(s.stats().playout_delay, Duration::from_millis(60));
}

/// Goertzel power of `freq` in `x`, as the energy of a sine at that frequency.
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

fn sine(freq: f64, amp: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

#[test]
fn stereo_recording_through_the_session_masks_inband_digits() {
    use frontdoor_media::record::RecordConfig;
    let t = t0();
    let mut s = session(t, false, LatchMode::Sdp);
    let remote = addr(SDP);
    // The engine plays 3 s of 1000 Hz; the caller sends 440 Hz, keys '4' for 100 ms, 440 Hz.
    let prompt = sine(1000.0, 6000.0, 24_000);
    s.play(Prompt::from_pcm("tone", &prompt));
    s.start_recording(RecordConfig::default());
    let mut audio = sine(440.0, 7000.0, 8000);
    audio.extend(dtmf_tone('4', 100));
    audio.extend(sine(440.0, 7000.0, 8000 - 800));
    let mut tx = RtpSender::new(Ssrc(0xCA11E4), PayloadType::PCMU, 100, 1234);
    let mut packets: Vec<Bytes> = G711::Pcmu
        .encode_frames(&audio, Ptime::DEFAULT)
        .iter()
        .map(|f| tx.audio_packet(f, 160))
        .collect();
    // reordered pairs and one loss
    for i in (0..packets.len() - 1).step_by(7) {
        packets.swap(i, i + 1);
    }
    packets.remove(30);
    let mut sim = Sim::new(t);
    let mut wav = Vec::new();
    for p in &packets {
        sim.step(&mut s, &[(remote, p.clone())]);
        while let Some(c) = s.poll_recording() {
            wav.extend(c);
        }
    }
    for _ in 0..10 {
        sim.step(&mut s, &[]);
    }
    let (rest, sum) = s.stop_recording().unwrap();
    wav.extend(rest);
    assert!(!s.is_recording());
    // the engine still gets the digit; the recording does not have it
    assert_eq!(sim.digits(), vec![('4', DtmfSource::Inband)]);
    assert_eq!(sum.masked_digits, 1);
    let left: Vec<i16> = wav.iter().step_by(2).copied().collect();
    let right: Vec<i16> = wav.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(left.len() as u64, sum.frames);
    assert_eq!(sum.frames, sim.sent.len() as u64 * 160);
    // right: exactly what was sent, decoded (outside the masked span)
    let pm = PayloadMap::g711(G711::Pcmu, None);
    let sent: Vec<i16> = sim
        .sent
        .iter()
        .flat_map(|p| G711::Pcmu.decode(parse_rtp(p, &pm).unwrap().payload))
        .collect();
    let differing = right.iter().zip(&sent).filter(|(a, b)| a != b).count();
    assert!(differing > 0 && differing as u64 <= sum.masked_frames);
    // left: the caller's tone, no digit anywhere, and the masked span is short
    for (i, block) in left.chunks(80).enumerate() {
        let row = tone_energy(block, 770.0);
        let col = tone_energy(block, 1209.0);
        let energy: f64 = block.iter().map(|&v| f64::from(v).powi(2)).sum();
        assert!(
            row < 1e4 * 80.0 || col < 1e4 * 80.0 || row + col < 0.5 * energy,
            "DTMF left in the recording at block {i}: {row} {col} {sum:?}"
        );
    }
    let first_half = &left[..4000];
    let energy: f64 = first_half.iter().map(|&v| f64::from(v).powi(2)).sum();
    assert!(tone_energy(first_half, 440.0) > 0.8 * energy);
    assert!(
        sum.masked_frames >= 800 && sum.masked_frames < 8000,
        "{sum:?}"
    );
    // the right channel carries the prompt, not the caller
    assert!(tone_energy(&right[..8000], 1000.0) > 100.0 * tone_energy(&right[..8000], 440.0));
}

/// Two bridged sessions: what one accepts is relayed on the other's stream (its SSRC, its
/// sequence numbers continuing from its prompt), the pacing tick sends nothing meanwhile, and
/// a foreign source is still refused (no relaying of RTP bleed).
#[test]
fn bridged_sessions_relay_on_each_others_stream() {
    use frontdoor_media::bridge::Relay;
    let t = t0();
    let mut a = session(t, true, LatchMode::Sdp);
    let mut cfg = MediaConfig::new(G711::Pcma, addr("192.0.2.20:50000"), Ssrc(0xB0B));
    cfg.ptime = Ptime::from_ms(30).unwrap();
    cfg.initial_seq = 7;
    let mut b = MediaSession::new(t, cfg);
    // B sends one frame of its own (a prompt / silence) before the bridge.
    let before = b.poll_rtp(t).unwrap();
    let before = parse_rtp(&before, b.payload_map()).unwrap();
    a.set_bridged(true);
    b.set_bridged(true);
    assert!(a.is_bridged());
    let mut a_to_b = Relay::new(b.relay_target());
    let mut out = Vec::new();
    let mut sender = RtpSender::new(Ssrc(0xCA11), PayloadType::PCMU, 1, 0);
    for i in 0..3u32 {
        let now = t + Duration::from_millis(u64::from(i) * 20);
        let pkt = sender.audio_packet(&[0xFF; 160], 160);
        let got = a
            .relay_rtp(now, addr(SDP), &pkt)
            .expect("accepted for the relay");
        b.relay_out(&mut a_to_b, &got, &mut out);
        assert!(
            a.poll_rtp(now + Duration::from_millis(20)).is_none(),
            "no own frames"
        );
    }
    // 3 × 20 ms in → 2 × 30 ms out, PCMA, on B's SSRC right after its own frame.
    assert_eq!(out.len(), 2);
    for (i, p) in out.iter().enumerate() {
        let p = parse_rtp(p, b.payload_map()).unwrap();
        assert_eq!(p.ssrc, Ssrc(0xB0B));
        assert_eq!(p.seq, before.seq.wrapping_add(1 + i as u16));
        assert_eq!(
            p.timestamp,
            before.timestamp.wrapping_add(240 * (1 + i as u32))
        );
        assert_eq!(p.payload_type, PayloadType::PCMA);
        assert_eq!(p.payload.len(), 240);
    }
    assert_eq!(b.stats().packets.packets_sent, 3);
    assert_eq!(a.stats().packets.packets_received, 3);
    // RTP bleed from another address is dropped, not relayed.
    let stray = sender.audio_packet(&[0xFF; 160], 160);
    assert!(a.relay_rtp(t, addr("198.51.100.1:4000"), &stray).is_none());
    // Unbridged, A plays again.
    a.set_bridged(false);
    assert!(a.poll_rtp(t + Duration::from_secs(1)).is_some());
}

#[test]
fn sip_info_digit_is_masked_in_the_recording_and_still_reported() {
    use frontdoor_media::record::{LOOKBACK, RecordConfig};
    let t = t0();
    let mut s = session(t, true, LatchMode::Sdp);
    let remote = addr(SDP);
    s.start_recording(RecordConfig::default());
    let voice = sine(300.0, 6000.0, 16_000); // 2 s
    let mut tx = RtpSender::new(Ssrc(77), PayloadType::PCMU, 0, 0);
    let mut sim = Sim::new(t);
    let mut wav = Vec::new();
    for (i, f) in G711::Pcmu
        .encode_frames(&voice, Ptime::DEFAULT)
        .iter()
        .enumerate()
    {
        if i == 50 {
            s.handle_info(
                sim.now(),
                "application/dtmf-relay",
                b"Signal=9\r\nDuration=100\r\n",
            )
            .unwrap();
        }
        let p = tx.audio_packet(f, 160);
        sim.step(&mut s, &[(remote, p)]);
        while let Some(c) = s.poll_recording() {
            wav.extend(c);
        }
    }
    let (rest, sum) = s.stop_recording().unwrap();
    wav.extend(rest);
    assert_eq!(sim.digits(), vec![('9', DtmfSource::Info)]);
    assert_eq!(sum.masked_digits, 1);
    // one silent span: the lookback before the INFO, its 100 ms and the guard after
    let left: Vec<i16> = wav.iter().step_by(2).copied().collect();
    let silent: Vec<usize> = left
        .chunks(80)
        .enumerate()
        .filter(|(_, b)| b.iter().all(|&v| v == 0))
        .map(|(i, _)| i)
        .collect();
    let first_voice = left
        .chunks(80)
        .position(|b| b.iter().any(|&v| v != 0))
        .unwrap();
    let inner: Vec<usize> = silent.into_iter().filter(|&i| i > first_voice).collect();
    let want = (LOOKBACK.as_millis() as usize + 100 + 40) / 10;
    assert!(
        inner.len() >= want - 1 && inner.len() <= want + 1,
        "{} silent blocks, want {want}",
        inner.len()
    );
    assert_eq!(
        inner.last().unwrap() - inner[0] + 1,
        inner.len(),
        "one span"
    );
    assert_eq!(sum.masked_frames as usize, want * 80);
}

/// A driver chooses a session's phase with `set_next_tick`; after a stall longer than the
/// backlog the session skips the missed ticks (one packet, no burst) but stays on its phase,
/// and after a short delay it catches up packet by packet.
#[test]
fn a_stalled_session_skips_missed_ticks_but_keeps_its_phase() {
    let t = t0();
    let mut s = session(t, true, LatchMode::Sdp);
    assert_eq!(s.ptime(), Ptime::DEFAULT);
    let ms = Duration::from_millis;
    let start = t + ms(7);
    s.set_next_tick(start);
    assert!(s.poll_rtp(t).is_none(), "nothing before the chosen tick");
    assert!(s.poll_rtp(start).is_some());
    assert!(s.poll_rtp(start).is_none());
    assert_eq!(s.poll_timeout(), start + ms(20));
    // Stalled for 10 ptimes and 3 ms: one packet now, the next on the old grid.
    let late = start + ms(20 * 10 + 3);
    assert!(s.poll_rtp(late).is_some());
    assert!(s.poll_rtp(late).is_none(), "no burst after a stall");
    assert_eq!(s.poll_timeout(), start + ms(20 * 11), "phase kept");
    // Exactly on a grid point when stalled: that point's packet now, the next one ptime later.
    let on_grid = start + ms(20 * 20);
    assert!(s.poll_rtp(on_grid).is_some());
    assert!(s.poll_rtp(on_grid).is_none());
    assert_eq!(s.poll_timeout(), start + ms(20 * 21));
    // Late by two ticks and 1 ms (within the backlog): those packets are sent, in order.
    let behind = start + ms(20 * 23 + 1);
    let mut sent = Vec::new();
    while let Some(p) = s.poll_rtp(behind) {
        sent.push(p);
    }
    assert_eq!(sent.len(), 3, "ticks 21, 22 and 23");
    assert_eq!(s.poll_timeout(), start + ms(20 * 24));
    let seqs: Vec<u16> = sent
        .iter()
        .map(|p| u16::from_be_bytes([p[2], p[3]]))
        .collect();
    assert_eq!(seqs, [1003, 1004, 1005], "consecutive sequence numbers");
}

/// RTCP is built only when due (the driver may call `poll_rtcp` on every tick).
#[test]
fn rtcp_only_when_due() {
    let t = t0();
    let mut s = session(t, true, LatchMode::Sdp);
    assert!(s.poll_rtcp(t).is_none());
    let first_report = (1..=600)
        .map(|k| t + Duration::from_millis(20 * k))
        .find(|&now| {
            while s.poll_rtp(now).is_some() {}
            s.poll_rtcp(now).is_some()
        })
        .expect("an RTCP report within 12 s");
    // RFC 3550 §6.2: the first report half an interval (5 s) in.
    assert_eq!(first_report, t + Duration::from_millis(2500));
    assert!(s.poll_rtcp(first_report).is_none(), "once per interval");
}
