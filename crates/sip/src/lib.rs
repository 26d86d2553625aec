//! Sans-IO SIP core: framing, RFC 3261/6026 transactions, dialogs, user agent and RFC 3264 offer/answer.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod dialog;
pub mod framing;
pub mod message;
pub mod sdp;
pub mod transaction;
pub mod ua;

pub use dialog::{Branch, CallId, DialogId};
pub use ua::{
    CallHandle, EndCause, Transmit, Transport, UaConfig, UaError, UaEvent, UaStats, UserAgent,
};
