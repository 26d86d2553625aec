//! Frontdoor: a SIP/RTP telephony engine with an embedded IVR and a skill-based ACD.
//!
//! This crate is the thin tokio driver over the sans-IO cores (`frontdoor-sip`, ...): it owns
//! sockets, timers and tasks, and turns the cores' outputs into packets and events.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod agents;
pub mod api;
pub mod calls;
pub mod config;
pub mod desk;
pub mod driver;
pub mod events;
pub mod media;
pub mod plans;
pub mod ports;
pub mod recording;
pub mod screenpop;
pub mod speech;
pub mod store;
pub mod tts;
