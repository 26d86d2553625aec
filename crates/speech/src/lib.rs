//! Offline speech for Frontdoor.
//!
//! * Recognition: [`Recognizer`], implemented by [`WhisperRecognizer`] (whisper.cpp through
//!   whisper-rs, ggml models made by `scripts/models/fetch`). Recognition is *constrained*: the
//!   caller says what it expects ([`Expectation`]: intents with example phrases, digit strings,
//!   yes/no); the expectation biases Whisper (initial prompt) and the transcript is mapped onto the
//!   best alternative with a score and a reject threshold ([`Outcome`]).
//! * Audio: telephone audio (8 kHz) is checked for speech (energy VAD), trimmed, normalised,
//!   resampled to 16 kHz (rubato) and padded with silence; Whisper's encoder context is sized to
//!   the clip instead of its 30 s window.
//!
//! * Synthesis (feature `piper`): [`Synthesizer`], implemented by `PiperSynthesizer` (piper
//!   voices on ONNX Runtime), resampled to the call's rate (8 kHz).
//!
//! See docs/speech.md for the pipeline, the model conversion and measured timings.

pub mod audio;
pub mod error;
pub mod grammar;
pub mod model;
pub mod nlu;
#[cfg(feature = "piper")]
pub mod synth;
pub mod whisper;

use std::path::PathBuf;
use std::time::Duration;

pub use error::SpeechError;
pub use grammar::{Expectation, Hypothesis, Interpretation, Outcome};
#[cfg(feature = "piper")]
pub use synth::{
    PiperOptions, PiperPaths, PiperSynthesizer, debian_espeak_data_dir, split_chunks,
    split_chunks_first,
};
pub use whisper::{Transcript, WhisperConfig, WhisperModel, WhisperRecognizer};

/// Environment variable naming the models folder (default: `models/` in the repository).
pub const MODELS_DIR_ENV: &str = "FRONTDOOR_MODELS_DIR";
/// File name of the default English recognition model inside the models folder.
pub const TINY_EN: &str = "ggml-tiny.en.bin";
/// File name of the multilingual base model (`scripts/models/fetch --base`).
pub const BASE: &str = "ggml-base.bin";

/// The models folder: `$FRONTDOOR_MODELS_DIR`, else `models` under the current directory.
pub fn models_dir() -> PathBuf {
    std::env::var_os(MODELS_DIR_ENV).map_or_else(|| PathBuf::from("models"), PathBuf::from)
}

/// The result of one recognition.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognition {
    /// No input / no match / match.
    pub outcome: Outcome,
    /// What the engine heard (empty when no speech was detected).
    pub transcript: String,
    /// Mean probability of the transcript's tokens (0..=1), an engine-side confidence.
    pub asr_probability: f32,
    /// More words than the speech could hold and not a clean repetition (likely a hallucination);
    /// scores were weighted down (x0.8).
    pub suspect: bool,
    /// Speech detected in the audio, ms.
    pub speech_ms: u32,
    /// Length of the audio given, ms.
    pub audio_ms: u32,
    /// Wall time spent, including audio preparation.
    pub elapsed: Duration,
}

impl Recognition {
    /// Real-time factor: processing time / audio length.
    pub fn real_time_factor(&self) -> f32 {
        self.elapsed.as_secs_f32() / (self.audio_ms.max(1) as f32 / 1000.0)
    }
}

/// Speech recognition constrained by what the dialplan expects.
pub trait Recognizer: Send {
    /// Recognise mono 16-bit PCM at `sample_rate` (8000 for G.711 calls) against `expect`.
    fn recognize(
        &mut self,
        pcm: &[i16],
        sample_rate: u32,
        expect: &Expectation,
    ) -> Result<Recognition, SpeechError>;
}

/// Text to speech.
pub trait Synthesizer: Send {
    /// Synthesise `text` as mono 16-bit PCM at `sample_rate` (8000 for G.711 calls).
    fn synthesize(&mut self, text: &str, sample_rate: u32) -> Result<Vec<i16>, SpeechError>;
}
