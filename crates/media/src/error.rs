//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in the media core. Bad input is reported through this
/// type (or counted in stats) — it never panics.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Datagram shorter than an RTP/RTCP header (or than its CSRC/extension/padding says).
    #[error("packet too short ({0} bytes)")]
    ShortPacket(usize),
    /// RTP/RTCP version field is not 2.
    #[error("bad RTP version {0}")]
    BadVersion(u8),
    /// Payload type not in the negotiated set.
    #[error("payload type {0} not negotiated")]
    UnknownPayloadType(u8),
    /// Packet from a source other than the one we accept media from.
    #[error("packet from foreign source")]
    ForeignSource,
    /// Error from the rtc-rtp / rtc-rtcp (un)marshalling code.
    #[error("rtp/rtcp codec: {0}")]
    Wire(#[from] rtc_shared::error::Error),
    /// Packetisation interval outside 10..=60 ms.
    #[error("invalid ptime {0} ms (must be 10..=60)")]
    InvalidPtime(u32),
    /// Frame length does not match the codec/ptime.
    #[error("invalid frame length {0}")]
    InvalidFrame(usize),
    /// Malformed RFC 4733 telephone-event payload.
    #[error("malformed telephone-event payload")]
    BadTelephoneEvent,
    /// Character that is not a DTMF digit (0-9, *, #, A-D).
    #[error("not a DTMF digit: {0:?}")]
    InvalidDigit(String),
    /// SIP INFO content type not recognised as DTMF.
    #[error("unsupported SIP INFO content type {0:?}")]
    UnsupportedInfoContentType(String),
    /// SIP INFO DTMF body could not be parsed.
    #[error("malformed SIP INFO DTMF body: {0}")]
    MalformedInfoBody(&'static str),
    /// A prompt file could not be opened or decoded.
    #[error("prompt {path}: {reason}")]
    Prompt {
        /// The file.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// A prompt that the dialplan needs is missing from the library.
    #[error("required prompt {name:?} missing from {dir}")]
    PromptMissing {
        /// Prompt name (file stem).
        name: String,
        /// Directory searched.
        dir: PathBuf,
    },
    /// Resampler construction or processing failed.
    #[error("resampler: {0}")]
    Resample(String),
}
