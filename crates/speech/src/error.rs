//! Errors of the speech crate.

use std::path::PathBuf;

/// What to do when a model file is missing or damaged.
pub const FETCH_HINT: &str = "run scripts/models/fetch (downloads, converts and checksums the models into models/; \
     set FRONTDOOR_MODELS_DIR to use another folder)";

/// Errors from loading models, preparing audio or running recognition/synthesis.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// The model file does not exist (or is not readable).
    #[error("speech model {path} is missing ({source}); fix: {FETCH_HINT}")]
    ModelMissing {
        /// The file that was looked for.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The model file exists but is not a valid model of the expected kind.
    #[error(
        "speech model {path} is corrupt or not the expected format: {reason}; fix: delete it and {FETCH_HINT}"
    )]
    ModelCorrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The inference engine failed.
    #[error("{engine} failed: {message}")]
    Engine {
        /// "whisper", "piper", ...
        engine: &'static str,
        /// The engine's error.
        message: String,
    },
    /// The audio given cannot be processed (e.g. unsupported sample rate).
    #[error("audio: {0}")]
    Audio(String),
    /// The intent training data cannot be used (unreadable, malformed, or its embeddings are
    /// missing).
    #[error("intent training data {path}: {reason}")]
    Training {
        /// The training file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A timed operation did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
}
