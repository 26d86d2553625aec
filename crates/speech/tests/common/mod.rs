//! Test helpers: model location, espeak-ng synthesis, telephone-band conversion, timeouts.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use frontdoor_speech::audio::{f32_to_i16, i16_to_f32, resample};
use frontdoor_speech::{MODELS_DIR_ENV, TINY_EN, WhisperModel};

/// `$FRONTDOOR_MODELS_DIR`, else the repository's `models/`.
pub fn models_dir() -> PathBuf {
    std::env::var_os(MODELS_DIR_ENV).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"),
        PathBuf::from,
    )
}

/// The tiny.en model, loaded once per test binary. Panics (fails the test) with the loader's
/// message, which names the file and `scripts/models/fetch`, when it is missing or corrupt.
pub fn tiny_en() -> &'static WhisperModel {
    static MODEL: OnceLock<WhisperModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = models_dir().join(TINY_EN);
        WhisperModel::load(&path)
            .unwrap_or_else(|e| panic!("cannot load the recognition model: {e}"))
    })
}

/// Run `f` on a thread; fail the test if it takes longer than `secs`.
pub fn with_timeout<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not finish within {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// Parse a 16-bit PCM mono WAV; returns (samples, rate).
pub fn parse_wav(bytes: &[u8]) -> (Vec<i16>, u32) {
    assert!(
        bytes.len() > 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "not a WAV file"
    );
    let mut pos = 12;
    let mut rate = 0;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &bytes[pos + 8..];
        if id == b"fmt " {
            let channels = u16::from_le_bytes(body[2..4].try_into().unwrap());
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
            let bits = u16::from_le_bytes(body[14..16].try_into().unwrap());
            assert!(
                channels == 1 && bits == 16,
                "want mono 16-bit, got {channels} ch {bits} bit"
            );
        } else if id == b"data" {
            // espeak-ng writes 0x7fffffff-ish lengths when streaming to stdout: clamp
            let len = len.min(body.len());
            let pcm = body[..len]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (pcm, rate);
        }
        pos += 8 + len + (len & 1);
    }
    panic!("WAV without data chunk");
}

/// Synthesise `text` with espeak-ng (Debian package espeak-ng); returns (samples, rate).
pub fn espeak(text: &str, voice: &str, words_per_minute: u32) -> (Vec<i16>, u32) {
    let out = Command::new("espeak-ng")
        .args([
            "-v",
            voice,
            "-s",
            &words_per_minute.to_string(),
            "--stdout",
            text,
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run espeak-ng ({e}); install it: apt-get install espeak-ng")
        });
    assert!(
        out.status.success(),
        "espeak-ng failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wav(&out.stdout)
}

/// G.711 mu-law encode (ITU-T G.711, with the 0x84 bias).
pub fn ulaw_encode(s: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut v = i32::from(s);
    let sign = if v < 0 { 0x80 } else { 0 };
    if v < 0 {
        v = -v;
    }
    v = v.min(CLIP) + BIAS;
    let exponent = (7 - (v.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (v >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// G.711 mu-law decode.
pub fn ulaw_decode(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0f);
    let v = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -v } else { v }) as i16
}

/// The telephone path: resample to 8 kHz, G.711 mu-law encode + decode, surround with
/// `lead_ms` / `tail_ms` of line silence (mu-law idle, i.e. zero after decoding).
pub fn telephone(pcm: &[i16], rate: u32, lead_ms: u32, tail_ms: u32) -> Vec<i16> {
    let narrow = f32_to_i16(&resample(&i16_to_f32(pcm), rate, 8000).unwrap());
    let mut out = vec![0i16; (8 * lead_ms) as usize];
    out.extend(narrow.iter().map(|&s| ulaw_decode(ulaw_encode(s))));
    out.extend(std::iter::repeat_n(0i16, (8 * tail_ms) as usize));
    out
}

/// espeak-ng phrase as it arrives from a G.711 call: 8 kHz, mu-law, 300 ms lead, 500 ms tail.
pub fn phone_phrase(text: &str) -> Vec<i16> {
    let (pcm, rate) = espeak(text, "en-us", 150);
    telephone(&pcm, rate, 300, 500)
}

/// Scale by `gain_db` and add white line noise at `noise_dbfs` RMS (deterministic LCG).
pub fn degrade(pcm: &[i16], gain_db: f32, noise_dbfs: Option<f32>) -> Vec<i16> {
    let gain = 10f32.powf(gain_db / 20.0);
    // uniform in [-a, a] has RMS a / sqrt(3)
    let amp = noise_dbfs.map_or(0.0, |d| 10f32.powf(d / 20.0) * 32768.0 * 3f32.sqrt());
    let mut state: u32 = 0x1234_5678;
    pcm.iter()
        .map(|&s| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let u = (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            (f32::from(s) * gain + u * amp)
                .round()
                .clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}
