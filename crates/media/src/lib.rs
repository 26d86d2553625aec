//! Sans-IO media core: RTP/RTCP, G.711, DTMF (RFC 4733, SIP INFO, in-band), jitter buffer, prompts.
//!
//! Nothing in this crate reads a clock, opens a socket or sleeps: every function that needs
//! the time takes `now: Instant` as an argument, packets come in as byte slices and go out
//! as [`bytes::Bytes`]. The tokio driver owns the sockets and the timers and calls
//! [`call::MediaSession`] (or the individual building blocks) with what arrived.
//!
//! Module map:
//! * [`g711`] — μ-law / A-law frame coding (wraps `audio-codec`), [`g711::Ptime`].
//! * [`rtp`] — [`rtp::RtpSender`] and receive-side parsing/validation, per-stream stats.
//! * [`latch`] — symmetric RTP with probation-based latching (no RTP bleed).
//! * [`jitter`] — adaptive jitter buffer and packet-loss concealment.
//! * [`rtcp`] — RFC 3550 receive statistics, SR/RR generation and parsing.
//! * [`dtmf`] — RFC 4733 telephone-events, SIP INFO bodies, in-band Goertzel detection,
//!   and de-duplication across the three sources.
//! * [`prompt`] — decode/resample/pre-encode prompt files once, share them across calls.
//! * [`record`] — [`record::CallRecorder`]: stereo call recording with DTMF masking.
//! * [`call`] — [`call::MediaSession`], one per call leg, tying it all together.
//! * [`bridge`] — [`bridge::Relay`]: RTP relay between two bridged legs (header rewrite,
//!   PCMU ↔ PCMA, ptime re-framing, RFC 4733 pass-through).
#![warn(missing_docs)]

pub mod barge;
pub mod bridge;
pub mod call;
pub mod dtmf;
mod error;
pub mod g711;
pub mod jitter;
pub mod latch;
pub mod prompt;
pub mod record;
pub mod rtcp;
pub mod rtp;
#[cfg(test)]
mod testutil;
mod types;
pub mod vad;

pub use error::MediaError;
pub use types::{PayloadType, SeqNo, SeqUnwrapper, Ssrc};
