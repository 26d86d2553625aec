//! Sans-IO SIP core: framing, RFC 3261/6026 transactions, dialogs, user agent and RFC 3264
//! offer/answer.
//!
//! Nothing in this crate touches a socket or a clock: the driver feeds received messages and
//! the current time in, and drains messages to send, application events and the next timer
//! deadline out.
//!
//! * [`message`]: parsing (rsip parses; we frame and check Content-Length first, and still
//!   answer 400 when rsip rejects a request whose core headers are readable) and serializers;
//! * [`framing`]: UDP datagram handling and the TCP [`framing::StreamFramer`];
//! * [`transaction`]: the four RFC 3261 §17 machines (with RFC 6026), timers as data;
//! * [`dialog`]: dialog state and in-dialog request building;
//! * [`ua`]: the [`UserAgent`] transaction user;
//! * [`sdp`]: RFC 3264 offer/answer for G.711;
//! * [`auth`]: Digest authentication (RFC 7616/8760), server and client side;
//! * [`registrar`]: the RFC 3261 §10.3 registrar and location service.
//!
//! # Driver loop
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//! use frontdoor_sip::{Transport, UaConfig, UaEvent, UserAgent};
//! use frontdoor_sip::sdp::{Codec, Direction, LocalMedia};
//!
//! # #[allow(clippy::disallowed_methods)]
//! # fn main() -> std::io::Result<()> {
//! let socket = UdpSocket::bind("0.0.0.0:5060")?;
//! let mut ua = UserAgent::new(UaConfig {
//!     local_addr: "192.0.2.10:5060".parse().unwrap(),
//!     contact_host: "192.0.2.10".into(),
//!     ..UaConfig::default()
//! });
//! let media = LocalMedia {
//!     address: "192.0.2.10".parse().unwrap(),
//!     port: 40000,
//!     codecs: vec![Codec::Pcmu, Codec::Pcma],
//!     telephone_event: true,
//!     ptime_ms: 20,
//!     direction: Direction::SendRecv,
//! };
//! let mut buf = vec![0u8; 65535];
//! loop {
//!     // Sleep until the next SIP timer (or a packet).
//!     let now = Instant::now();
//!     let wait = ua.poll_timeout().map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
//!     socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
//!     if let Ok((n, from)) = socket.recv_from(&mut buf) {
//!         ua.handle_datagram(Instant::now(), Transport::Udp, from, &buf[..n]);
//!     }
//!     ua.handle_timeout(Instant::now());
//!     while let Some(ev) = ua.poll_event() {
//!         if let UaEvent::IncomingCall { call, .. } = ev {
//!             let now = Instant::now();
//!             let _ = ua.ring(now, call);
//!             let _ = ua.answer(now, call, &media);
//!         }
//!     }
//!     while let Some(t) = ua.poll_transmit() {
//!         // TCP: send on the connection whose peer is `t.destination` (open one if none).
//!         socket.send_to(&t.payload, t.destination)?;
//!     }
//! }
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod dialog;
pub mod framing;
pub mod message;
pub mod registrar;
pub mod sdp;
pub mod transaction;
pub mod ua;

pub use dialog::{Branch, CallId, DialogId};
pub use ua::{
    CallHandle, EndCause, Presentation, ServerTx, Transmit, Transport, UaConfig, UaError, UaEvent,
    UaStats, UserAgent,
};
