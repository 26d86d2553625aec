//! Per-frame cost of a speech turn on the media worker: frame measurement (level + DTMF-tone
//! check), echo tracking, barge-in decision and endpointing, over 20 ms frames of noisy
//! speech-like audio. Prints ns per frame and how many concurrent listening calls one core
//! could carry at that cost.
//!
//! `cargo run --release -p frontdoor-media --example vad_bench`
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use frontdoor_media::barge::{BargeInConfig, BargeInDetector, EchoConfig, EchoTracker};
use frontdoor_media::vad::{Endpointer, FrameStats, VadConfig};

fn main() {
    // 10 s of a 200 Hz-modulated tone burst pattern over noise: speech-like on/off energy
    let n = 8000 * 10;
    let mut seed = 1u32;
    let pcm: Vec<i16> = (0..n)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed as f32 / u32::MAX as f32 - 0.5) * 200.0;
            let on = (i / 2400) % 3 != 2;
            let voice = if on {
                3000.0 * (i as f32 * 0.157).sin() * (1.0 + (i as f32 * 0.0251).sin())
            } else {
                0.0
            };
            (noise + voice) as i16
        })
        .collect();
    let prompt: Vec<i16> = pcm.iter().rev().copied().collect();
    let frames = pcm.len() / 160;
    let rounds = 50;
    let t = Instant::now();
    let mut events = 0usize;
    for _ in 0..rounds {
        let mut vad = Endpointer::new(VadConfig {
            max_utterance: Duration::from_secs(60),
            end_silence: Duration::from_secs(5),
            ..VadConfig::default()
        });
        let mut echo = EchoTracker::new(EchoConfig::default(), Duration::from_millis(20));
        let mut barge = BargeInDetector::new(BargeInConfig::default());
        for i in 0..frames {
            let f = &pcm[i * 160..(i + 1) * 160];
            // the engine plays a prompt during the second half only
            if i < frames / 2 {
                echo.push_outgoing(&[0; 160]);
            } else {
                echo.push_outgoing(&prompt[i * 160..(i + 1) * 160]);
            }
            let stats = FrameStats::of(f);
            let e = echo.echo_db();
            events += usize::from(barge.push((i * 160) as u64, 160, stats, e).is_some());
            echo.observe(stats.db);
            events += usize::from(
                vad.push_analyzed((i * 160) as u64, f, stats, Some(e))
                    .is_some(),
            );
        }
    }
    let per = t.elapsed().as_nanos() as f64 / (rounds * frames) as f64;
    println!(
        "speech turn (level + DTMF-tone check + echo tracker + barge-in + endpointer): {per:.0} ns per 20 ms frame \
         ({} frames, {events} events); one core keeps up with {:.0} listening calls",
        rounds * frames,
        20_000_000.0 / per
    );
}
