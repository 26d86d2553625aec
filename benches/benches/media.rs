//! Media hot paths, one iteration = one 20 ms packet:
//! * `rx_parse_decode_inband`: RTP parse+validate → PCMU decode → in-band DTMF detector;
//! * `rx_parse_decode_inband_tone`: the same with a DTMF tone in every packet (worst case:
//!   every analysis window runs the full coherent analysis);
//! * `session_tick_inband`: a whole `MediaSession` tick — `handle_rtp` (latch, stats,
//!   jitter-buffer insert) + `poll_rtp` (jitter pop, decode, PLC, in-band DTMF, prompt
//!   frame, RTP packetisation);
//! * `session_tick_inband_recording`: the same tick while the call is recorded (stereo, DTMF
//!   masking on);
//! * `jitter_push_pop`: jitter buffer insert + playout;
//! * `tx_packetize`: `RtpSender::audio_packet` for a 160-byte PCMU frame.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    clippy::disallowed_methods
)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use frontdoor_media::call::{InbandMode, MediaConfig, MediaSession};
use frontdoor_media::dtmf::InbandDetector;
use frontdoor_media::g711::{G711, Ptime};
use frontdoor_media::jitter::{JitterBuffer, JitterConfig};
use frontdoor_media::prompt::Prompt;
use frontdoor_media::record::RecordConfig;
use frontdoor_media::rtp::{PayloadMap, RtpSender, parse_rtp};
use frontdoor_media::{PayloadType, SeqNo, Ssrc};

/// 1 s of speech-like audio (a few harmonics with vibrato) plus noise, as PCMU frames.
fn frames() -> Vec<bytes::Bytes> {
    let mut x: u32 = 12345;
    let pcm: Vec<i16> = (0..8000)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let f0 = 140.0 + 20.0 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            let s: f32 = (1..8)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() * 3000.0 / h as f32)
                .sum();
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            s as i16 + ((x >> 16) as i16 >> 6)
        })
        .collect();
    G711::Pcmu.encode_frames(&pcm, Ptime::DEFAULT)
}

fn bench(c: &mut Criterion) {
    let frames = frames();
    let mut g = c.benchmark_group("media");
    g.throughput(Throughput::Elements(1));

    // RTP parse → decode → in-band detect
    {
        let pm = PayloadMap::g711(G711::Pcmu, None);
        let mut tx = RtpSender::new(Ssrc(1), PayloadType::PCMU, 0, 0);
        let pkts: Vec<_> = frames.iter().map(|f| tx.audio_packet(f, 160)).collect();
        let mut det = InbandDetector::new();
        let now = Instant::now();
        let mut pcm = [0i16; 160];
        let mut i = 0usize;
        let mut digits = 0u32;
        g.bench_function("rx_parse_decode_inband", |b| {
            b.iter(|| {
                let p = &pkts[i % pkts.len()];
                i += 1;
                let r = parse_rtp(black_box(p), &pm).unwrap();
                G711::Pcmu.decode_into(r.payload, &mut pcm);
                det.process(now, &pcm, |_| digits += 1);
            })
        });
        assert_eq!(digits, 0, "no false digits on the bench audio");
    }

    // Worst case for the detector: a DTMF tone present in every packet (full analysis runs)
    {
        let pm = PayloadMap::g711(G711::Pcmu, None);
        let tone: Vec<i16> = (0..8000)
            .map(|i| {
                let t = i as f32 / 8000.0;
                (6000.0 * (2.0 * std::f32::consts::PI * 770.0 * t).sin()
                    + 6000.0 * (2.0 * std::f32::consts::PI * 1336.0 * t).sin())
                    as i16
            })
            .collect();
        let mut tx = RtpSender::new(Ssrc(1), PayloadType::PCMU, 0, 0);
        let pkts: Vec<_> = G711::Pcmu
            .encode_frames(&tone, Ptime::DEFAULT)
            .iter()
            .map(|f| tx.audio_packet(f, 160))
            .collect();
        let mut det = InbandDetector::new();
        let now = Instant::now();
        let mut pcm = [0i16; 160];
        let mut i = 0usize;
        let mut digits = 0u32;
        g.bench_function("rx_parse_decode_inband_tone", |b| {
            b.iter(|| {
                let p = &pkts[i % pkts.len()];
                i += 1;
                let r = parse_rtp(black_box(p), &pm).unwrap();
                G711::Pcmu.decode_into(r.payload, &mut pcm);
                det.process(now, &pcm, |_| digits += 1);
            })
        });
        assert!(
            digits <= 1,
            "one continuous tone = at most one digit (0 when filtered out)"
        );
    }

    // A whole MediaSession tick with in-band DTMF on (no telephone-event negotiated)
    {
        let remote: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let t0 = Instant::now();
        let mut cfg = MediaConfig::new(G711::Pcmu, remote, Ssrc(9));
        cfg.telephone_event = None;
        cfg.inband = InbandMode::Auto;
        let mut s = MediaSession::new(t0, cfg);
        assert!(s.inband_enabled());
        let pcm = G711::Pcmu.decode(&frames.iter().flat_map(|f| f.to_vec()).collect::<Vec<u8>>());
        s.set_idle_audio(Some(Prompt::from_pcm("hold", &pcm)));
        let mut tx = RtpSender::new(Ssrc(2), PayloadType::PCMU, 0, 0);
        let mut k = 0u64;
        g.bench_function("session_tick_inband", |b| {
            b.iter(|| {
                let now = t0 + Duration::from_millis(20 * k);
                let p = tx.audio_packet(&frames[(k as usize) % frames.len()], 160);
                k += 1;
                black_box(s.handle_rtp(now, remote, &p));
                black_box(s.poll_rtp(now));
                while s.poll_event().is_some() {}
            })
        });
        let st = s.stats();
        assert_eq!(st.packets.dropped_late + st.packets.dropped_malformed, 0);
    }

    // The same tick while the call is recorded in stereo with DTMF masking (decode of both
    // directions, in-band gate, chunking; the chunks are dropped here, a file write in the
    // server happens on the recording thread)
    {
        let remote: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let t0 = Instant::now();
        let mut cfg = MediaConfig::new(G711::Pcmu, remote, Ssrc(9));
        cfg.telephone_event = None;
        cfg.inband = InbandMode::Auto;
        let mut s = MediaSession::new(t0, cfg);
        let pcm = G711::Pcmu.decode(&frames.iter().flat_map(|f| f.to_vec()).collect::<Vec<u8>>());
        s.set_idle_audio(Some(Prompt::from_pcm("hold", &pcm)));
        s.start_recording(RecordConfig {
            max_duration: Duration::from_secs(86_400),
            ..RecordConfig::default()
        });
        let mut tx = RtpSender::new(Ssrc(2), PayloadType::PCMU, 0, 0);
        let mut k = 0u64;
        let mut chunks = 0u64;
        g.bench_function("session_tick_inband_recording", |b| {
            b.iter(|| {
                let now = t0 + Duration::from_millis(20 * k);
                let p = tx.audio_packet(&frames[(k as usize) % frames.len()], 160);
                k += 1;
                black_box(s.handle_rtp(now, remote, &p));
                black_box(s.poll_rtp(now));
                while s.poll_event().is_some() {}
                while let Some(c) = s.poll_recording() {
                    chunks += black_box(c).len() as u64;
                }
            })
        });
        assert!(s.is_recording() && chunks > 0);
    }

    // Jitter buffer insert + playout
    {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let payload = [0xFFu8; 160];
        let mut k = 0u64;
        g.bench_function("jitter_push_pop", |b| {
            b.iter(|| {
                let now = t0 + Duration::from_millis(20 * k);
                jb.push(
                    now,
                    SeqNo(k + 1),
                    (k as u32) * 160,
                    PayloadType::PCMU,
                    black_box(&payload),
                );
                black_box(jb.pop(now));
                k += 1;
            })
        });
    }

    // Sender packetisation
    {
        let mut tx = RtpSender::new(Ssrc(3), PayloadType::PCMU, 0, 0);
        let f = &frames[0];
        g.bench_function("tx_packetize", |b| {
            b.iter(|| black_box(tx.audio_packet(black_box(f), 160)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
