//! RFC 3261 §17 transaction state machines, amended by RFC 6026.
//!
//! The machines are pure: every input takes `now` and appends [`TxAction`]s to an output
//! vector. Timers are data ([`TimerKind`] + deadline); the owner keeps them in a heap and
//! calls `on_timer` when one is due. A timer is still valid only if
//! `machine.timer(kind) == Some(deadline)` (lazy deletion).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::{Response, SipMessage};

mod client;
mod server;

pub use client::{AckTemplate, InviteClient, NonInviteClient};
pub use server::{InviteServer, NonInviteServer};

/// RFC 3261 timer names (plus RFC 6026 L and M).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// INVITE client request retransmit.
    A,
    /// INVITE client transaction timeout.
    B,
    /// INVITE client wait for response retransmits.
    D,
    /// Non-INVITE client request retransmit.
    E,
    /// Non-INVITE client transaction timeout.
    F,
    /// INVITE server final response retransmit.
    G,
    /// INVITE server wait for ACK.
    H,
    /// INVITE server wait for ACK retransmits.
    I,
    /// Non-INVITE server wait for request retransmits.
    J,
    /// Non-INVITE client wait for response retransmits.
    K,
    /// INVITE server Accepted state linger (RFC 6026).
    L,
    /// INVITE client Accepted state linger (RFC 6026).
    M,
}

const TIMER_COUNT: usize = 12;

impl TimerKind {
    fn index(self) -> usize {
        self as usize
    }
}

/// T1/T2/T4 values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum duration a message remains in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// Armed timers of one machine.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerSlots([Option<Instant>; TIMER_COUNT]);

impl TimerSlots {
    pub(crate) fn arm(&mut self, kind: TimerKind, at: Instant, out: &mut Vec<TxAction>) {
        self.0[kind.index()] = Some(at);
        out.push(TxAction::Arm(kind, at));
    }
    pub(crate) fn cancel(&mut self, kind: TimerKind) {
        self.0[kind.index()] = None;
    }
    pub(crate) fn get(&self, kind: TimerKind) -> Option<Instant> {
        self.0[kind.index()]
    }
    /// Consume the timer if `deadline` is the armed one.
    pub(crate) fn take_due(&mut self, kind: TimerKind, deadline: Instant) -> bool {
        if self.0[kind.index()] == Some(deadline) {
            self.0[kind.index()] = None;
            true
        } else {
            false
        }
    }
    pub(crate) fn clear(&mut self) {
        self.0 = [None; TIMER_COUNT];
    }
}

/// What a transaction wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxAction {
    /// (Re)transmit these bytes to the transaction's peer.
    Send(Bytes),
    /// Arm a timer.
    Arm(TimerKind, Instant),
    /// Client: pass this response to the TU.
    Response(Box<Response>),
    /// Server: an ACK arrived in the Accepted state (RFC 6026) — pass to the TU.
    PassAck,
    /// Client: timer B/F fired; server: timer H fired (no ACK for a non-2xx final).
    Timeout,
    /// The transaction is over: remove it.
    Terminated,
}

/// Transaction states (union of all four machines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// INVITE client: request sent, nothing received.
    Calling,
    /// Non-INVITE client/server initial state.
    Trying,
    /// Provisional response seen/sent.
    Proceeding,
    /// Final non-2xx (or non-INVITE final) seen/sent.
    Completed,
    /// INVITE server: ACK for the non-2xx received.
    Confirmed,
    /// RFC 6026: 2xx seen/sent.
    Accepted,
    /// Finished.
    Terminated,
}

/// Whether a response is a retransmission-worthy final.
pub(crate) fn is_final(status: u16) -> bool {
    status >= 200
}

/// Convenience used by tests: parse a message produced by a machine.
pub fn parse_sent(bytes: &Bytes) -> Option<SipMessage> {
    crate::message::parse(bytes).ok()
}

#[cfg(test)]
mod tests;
