//! Sans-IO SIP core: framing, RFC 3261/6026 transactions, dialogs, user agent and RFC 3264 offer/answer.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod framing;
pub mod message;
pub mod sdp;
pub mod transaction;
