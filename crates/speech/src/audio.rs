//! Audio preparation for recognition: resampling, voice-activity detection, trimming,
//! level normalisation and silence padding.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::error::SpeechError;

/// Whisper's input sample rate.
pub const WHISPER_RATE: u32 = 16_000;

/// Convert signed 16-bit PCM to f32 in [-1, 1).
pub fn i16_to_f32(pcm: &[i16]) -> Vec<f32> {
    pcm.iter().map(|&s| f32::from(s) / 32768.0).collect()
}

/// Convert f32 samples to signed 16-bit PCM (clipping).
pub fn f32_to_i16(samples: &[f32]) -> Vec<i16> {
    // the clamp makes the cast lossless in range
    #[allow(clippy::cast_possible_truncation)]
    samples
        .iter()
        .map(|&s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Resample mono audio with rubato's FFT resampler (band-limited; fixed ratio).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, SpeechError> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    if !(4_000..=192_000).contains(&from) || !(4_000..=192_000).contains(&to) {
        return Err(SpeechError::Audio(format!(
            "unsupported resampling {from} -> {to} Hz"
        )));
    }
    let chunk = 1024.min(samples.len().max(64));
    let mut rs = Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
        .map_err(|e| SpeechError::Audio(format!("resampler {from} -> {to} Hz: {e}")))?;
    let input = InterleavedSlice::new(samples, 1, samples.len())
        .map_err(|e| SpeechError::Audio(e.to_string()))?;
    let out = rs
        .process_all(&input, samples.len(), None)
        .map_err(|e| SpeechError::Audio(format!("resampling {from} -> {to} Hz: {e}")))?;
    Ok(out.take_data())
}

/// Settings of the energy voice-activity detector and of the padding around speech.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrepConfig {
    /// Frame length of the detector, ms.
    pub frame_ms: u32,
    /// Absolute floor: frames quieter than this (dBFS) are never speech.
    pub min_speech_dbfs: f32,
    /// Frames must also be this much louder (dB) than the estimated noise floor.
    pub snr_db: f32,
    /// Frames louder than this (dBFS) are speech whatever the noise floor.
    pub always_speech_dbfs: f32,
    /// Less speech than this (ms) counts as no input.
    pub min_speech_ms: u32,
    /// Audio kept before the first / after the last speech frame, ms.
    pub keep_ms: u32,
    /// Digital silence added before the speech, ms.
    pub pad_before_ms: u32,
    /// Digital silence added after the speech, ms.
    pub pad_after_ms: u32,
    /// Target RMS level of the speech part, dBFS (quiet lines are amplified).
    pub target_dbfs: f32,
}

impl Default for PrepConfig {
    fn default() -> Self {
        Self {
            frame_ms: 20,
            min_speech_dbfs: -50.0,
            snr_db: 12.0,
            always_speech_dbfs: -30.0,
            min_speech_ms: 100,
            keep_ms: 200,
            pad_before_ms: 500,
            pad_after_ms: 1000,
            target_dbfs: -20.0,
        }
    }
}

/// Audio ready for Whisper.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// 16 kHz mono f32, padded.
    pub samples: Vec<f32>,
    /// Speech found by the detector, ms.
    pub speech_ms: u32,
}

fn dbfs(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let ms = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    10.0 * (ms.max(1e-12)).log10()
}

/// Detect speech, trim, normalise, resample to 16 kHz and pad. `None` means no speech (no input).
pub fn prepare(pcm: &[i16], rate: u32, cfg: &PrepConfig) -> Result<Option<Prepared>, SpeechError> {
    if rate == 0 {
        return Err(SpeechError::Audio("sample rate 0".into()));
    }
    let samples = i16_to_f32(pcm);
    let frame = (rate * cfg.frame_ms / 1000).max(1) as usize;
    let levels: Vec<f32> = samples.chunks(frame).map(dbfs).collect();
    if levels.is_empty() {
        return Ok(None);
    }
    // noise floor: 10th percentile of frame levels
    let mut sorted = levels.clone();
    sorted.sort_by(f32::total_cmp);
    let floor = sorted[sorted.len() / 10];
    // floor + SNR, but never above `always_speech_dbfs`: a clip that is speech from end to end
    // has a high "floor" and would otherwise count as silence
    let threshold = cfg
        .min_speech_dbfs
        .max((floor + cfg.snr_db).min(cfg.always_speech_dbfs));
    let speech: Vec<bool> = levels.iter().map(|&l| l > threshold).collect();
    let n_speech = speech.iter().filter(|&&s| s).count();
    let speech_ms = u32::try_from(n_speech)
        .unwrap_or(u32::MAX)
        .saturating_mul(cfg.frame_ms);
    if speech_ms < cfg.min_speech_ms {
        return Ok(None);
    }
    let first = speech.iter().position(|&s| s).unwrap_or(0);
    let last = speech.iter().rposition(|&s| s).unwrap_or(0);
    let keep = (rate * cfg.keep_ms / 1000) as usize;
    let start = (first * frame).saturating_sub(keep);
    let end = ((last + 1) * frame + keep).min(samples.len());
    let mut cut = samples[start..end].to_vec();

    // level: RMS of the speech frames to target_dbfs, peak limited to 0.95
    let speech_level = {
        let (mut sum, mut n) = (0.0f32, 0usize);
        for (i, chunk) in samples.chunks(frame).enumerate() {
            if speech[i] {
                sum += chunk.iter().map(|s| s * s).sum::<f32>();
                n += chunk.len();
            }
        }
        10.0 * (sum / n.max(1) as f32).max(1e-12).log10()
    };
    let peak = cut.iter().fold(0.0f32, |m, s| m.max(s.abs())).max(1e-6);
    let gain = 10f32
        .powf((cfg.target_dbfs - speech_level) / 20.0)
        .min(0.95 / peak);
    cut.iter_mut().for_each(|s| *s *= gain);

    let cut16 = resample(&cut, rate, WHISPER_RATE)?;
    let before = (WHISPER_RATE * cfg.pad_before_ms / 1000) as usize;
    let after = (WHISPER_RATE * cfg.pad_after_ms / 1000) as usize;
    let mut out = Vec::with_capacity(before + cut16.len() + after);
    out.resize(before, 0.0);
    out.extend_from_slice(&cut16);
    out.resize(before + cut16.len() + after, 0.0);
    Ok(Some(Prepared {
        samples: out,
        speech_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, ms: u32, amp: f32) -> Vec<i16> {
        let n = (rate * ms / 1000) as usize;
        f32_to_i16(
            &(0..n)
                .map(|i| amp * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / rate as f32).sin())
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn resample_doubles_length_8k_to_16k() {
        let x = i16_to_f32(&tone(8000, 500, 0.5));
        let y = resample(&x, 8000, 16000).expect("resample");
        assert!((y.len() as i64 - 8000).abs() <= 2, "len {}", y.len());
        // tone level preserved (RMS of 0.5 sine = 0.354)
        let rms = (y[1000..7000].iter().map(|s| s * s).sum::<f32>() / 6000.0).sqrt();
        assert!((rms - 0.354).abs() < 0.02, "rms {rms}");
    }

    #[test]
    fn silence_is_no_input() {
        let pcm = vec![0i16; 8000];
        assert_eq!(
            prepare(&pcm, 8000, &PrepConfig::default()).expect("prep"),
            None
        );
        // line noise at -60 dBFS is still no input
        let noise: Vec<i16> = (0..8000)
            .map(|i| if i % 2 == 0 { 33 } else { -33 })
            .collect();
        assert_eq!(
            prepare(&noise, 8000, &PrepConfig::default()).expect("prep"),
            None
        );
    }

    #[test]
    fn speech_is_trimmed_and_padded() {
        let mut pcm = vec![0i16; 8000];
        pcm.extend(tone(8000, 400, 0.3));
        pcm.extend(vec![0i16; 8000]);
        let cfg = PrepConfig::default();
        let p = prepare(&pcm, 8000, &cfg).expect("prep").expect("speech");
        assert!((380..=420).contains(&p.speech_ms), "speech {}", p.speech_ms);
        let expect = (cfg.pad_before_ms + 400 + 2 * cfg.keep_ms + cfg.pad_after_ms) as usize * 16;
        assert!(
            (p.samples.len() as i64 - expect as i64).abs() < 400,
            "{} vs {expect}",
            p.samples.len()
        );
        assert!(
            p.samples[..(cfg.pad_before_ms as usize * 16)]
                .iter()
                .all(|&s| s == 0.0)
        );
    }

    #[test]
    fn speech_without_any_pause_is_speech() {
        let pcm = tone(8000, 1500, 0.3);
        let p = prepare(&pcm, 8000, &PrepConfig::default()).expect("prep");
        assert!(p.is_some_and(|p| p.speech_ms >= 1400));
    }

    #[test]
    fn zero_rate_is_an_error() {
        assert!(prepare(&[1, 2, 3], 0, &PrepConfig::default()).is_err());
    }
}
