//! Caller audio for the speech tests and the speech-call benchmark: piper speech over quiet
//! line noise, as a PCMU pcap for SIPp's `play_pcap_audio`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::Path;
use std::time::Duration;

use frontdoor_media::g711::G711;

use crate::common::repo_root;

pub fn piper() -> &'static std::sync::Mutex<frontdoor_speech::PiperSynthesizer> {
    static PIPER: std::sync::OnceLock<std::sync::Mutex<frontdoor_speech::PiperSynthesizer>> =
        std::sync::OnceLock::new();
    PIPER.get_or_init(|| {
        let paths = frontdoor_speech::PiperPaths::from_models_dir(&repo_root().join("models"));
        let mut s = frontdoor_speech::PiperSynthesizer::load(&paths, Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!("cannot load the piper voice (run scripts/models/fetch): {e}")
            });
        s.set_noise(0.0, 0.0);
        std::sync::Mutex::new(s)
    })
}

/// `text` spoken by piper at 8 kHz.
pub fn speak(text: &str) -> Vec<i16> {
    let mut p = piper().lock().unwrap_or_else(|e| e.into_inner());
    frontdoor_speech::Synthesizer::synthesize(&mut *p, text, 8000)
        .unwrap_or_else(|e| panic!("piper failed on {text:?}: {e}"))
}

/// A caller's line: quiet noise (about -60 dBFS) for `total_ms`, with each `(at_ms, text)`
/// spoken by piper at that time.
pub fn line_pcm(total_ms: u32, speech: &[(u32, &str)]) -> Vec<i16> {
    let mut seed: u32 = 0x1234_5678;
    let mut pcm: Vec<i16> = (0..total_ms * 8)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((seed >> 16) as i16 as i32 * 40 / 32768) as i16
        })
        .collect();
    for &(at_ms, text) in speech {
        let voice = speak(text);
        let at = (at_ms * 8) as usize;
        for (i, s) in voice.iter().enumerate() {
            if let Some(x) = pcm.get_mut(at + i) {
                *x = x.saturating_add(*s);
            }
        }
    }
    pcm
}

/// PCMU pcap of `pcm` for SIPp's `play_pcap_audio`.
pub fn write_line_pcap(path: &Path, pcm: &[i16]) {
    let frames: Vec<Vec<u8>> = pcm
        .chunks(160)
        .map(|c| G711::Pcmu.encode(c).to_vec())
        .collect();
    crate::common::write_rtp_pcap(path, 0, 20, &frames);
}
