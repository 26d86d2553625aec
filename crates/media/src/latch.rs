//! Symmetric RTP with safe latching ("strict RTP" / no RTP bleed).
//!
//! **Rule.** Media is sent to, and accepted from, the address in the remote SDP. In
//! [`LatchMode::Nat`] (the remote is behind NAT and its SDP address is not reachable), a
//! *new* source address is latched only after it has delivered [`DEFAULT_PROBATION`]
//! (3, configurable) consecutive, in-sequence packets (same SSRC, each `seq = prev + 1`).
//! The first packet from a source therefore never latches; packets during probation are
//! dropped. Everything from any other source is dropped and counted as foreign.
//!
//! 3 is one more than RFC 3550's `MIN_SEQUENTIAL = 2` (Appendix A.1) because here the
//! decision redirects our outgoing media, not just statistics: with 3 an attacker must
//! guess the SSRC-independent sequence of three packets arriving before the real stream's
//! next one, and a stray/late stream from a previous call (RTP bleed) cannot steal the
//! session with a single burst. At 20 ms ptime it costs 40–60 ms of audio at call start.
//!
//! While the current source (the latched one, or the SDP address itself when media does
//! arrive from it) is live, no other source can take over; only after it has been silent
//! for `relatch_after` (default 1 s — e.g. the remote's NAT binding changed) can another
//! source latch, and only through the same probation. A re-INVITE calls [`Latch::reset`] with the new SDP address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Ssrc;

/// Default number of consecutive in-sequence packets before latching to a new source.
pub const DEFAULT_PROBATION: u8 = 3;
/// Default silence of the latched source before another may take over.
pub const DEFAULT_RELATCH_AFTER: Duration = Duration::from_secs(1);

/// How to pick the remote media address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchMode {
    /// Send to and accept only from the SDP address.
    Sdp,
    /// Start with the SDP address; latch to a new source after `probation` consecutive
    /// in-sequence packets from it.
    Nat {
        /// Consecutive in-sequence packets required (minimum 2; values below are raised to 2).
        probation: u8,
        /// Silence of the current source after which another may take over.
        relatch_after: Duration,
    },
}

impl LatchMode {
    /// NAT mode with the defaults.
    pub const fn nat() -> Self {
        LatchMode::Nat {
            probation: DEFAULT_PROBATION,
            relatch_after: DEFAULT_RELATCH_AFTER,
        }
    }
}

/// Outcome of [`Latch::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchDecision {
    /// From the current remote: process it.
    Accept,
    /// This packet completed probation: we now send to (and accept from) its source.
    Latched,
    /// From another source (or still on probation): drop and count as foreign.
    Foreign,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    addr: SocketAddr,
    ssrc: Ssrc,
    last_seq: u16,
    count: u8,
}

/// Latching state for one RTP stream.
#[derive(Debug, Clone)]
pub struct Latch {
    mode: LatchMode,
    sdp: SocketAddr,
    current: SocketAddr,
    latched: bool,
    last_from_current: Option<Instant>,
    candidate: Option<Candidate>,
}

impl Latch {
    /// A latch that starts out sending to `sdp_addr`.
    pub fn new(mode: LatchMode, sdp_addr: SocketAddr) -> Self {
        let mode = match mode {
            LatchMode::Nat {
                probation,
                relatch_after,
            } => LatchMode::Nat {
                probation: probation.max(2),
                relatch_after,
            },
            m => m,
        };
        Latch {
            mode,
            sdp: sdp_addr,
            current: sdp_addr,
            latched: false,
            last_from_current: None,
            candidate: None,
        }
    }

    /// New SDP address (re-INVITE): forget any latch.
    pub fn reset(&mut self, sdp_addr: SocketAddr) {
        *self = Latch::new(self.mode, sdp_addr);
    }

    /// Where to send media now.
    pub fn remote(&self) -> SocketAddr {
        self.current
    }

    /// The address from the SDP.
    pub fn sdp_addr(&self) -> SocketAddr {
        self.sdp
    }

    /// Whether we latched away from the SDP address (or confirmed it by probation).
    pub fn is_latched(&self) -> bool {
        self.latched
    }

    /// Decide about a packet from `source` with `ssrc`/`seq` (already parsed and valid).
    pub fn check(
        &mut self,
        now: Instant,
        source: SocketAddr,
        ssrc: Ssrc,
        seq: u16,
    ) -> LatchDecision {
        if source == self.current {
            self.last_from_current = Some(now);
            // a packet from the current source clears any half-way candidate only if it
            // is the same address; other candidates keep their probation count.
            return LatchDecision::Accept;
        }
        let LatchMode::Nat {
            probation,
            relatch_after,
        } = self.mode
        else {
            return LatchDecision::Foreign;
        };
        // A live current source (latched, or the SDP address itself) cannot be displaced.
        if let Some(t) = self.last_from_current {
            if now.saturating_duration_since(t) < relatch_after {
                self.candidate = None;
                return LatchDecision::Foreign;
            }
        }
        match &mut self.candidate {
            Some(c) if c.addr == source && c.ssrc == ssrc && seq == c.last_seq.wrapping_add(1) => {
                c.last_seq = seq;
                c.count = c.count.saturating_add(1);
                if c.count >= probation {
                    self.current = source;
                    self.latched = true;
                    self.last_from_current = Some(now);
                    self.candidate = None;
                    return LatchDecision::Latched;
                }
            }
            _ => {
                // first packet from this source (or out of sequence): start probation
                self.candidate = Some(Candidate {
                    addr: source,
                    ssrc,
                    last_seq: seq,
                    count: 1,
                });
            }
        }
        LatchDecision::Foreign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    #[test]
    fn first_packet_never_latches() {
        let now = crate::testutil::t0();
        let sdp = addr("10.0.0.1:4000");
        let nat = addr("203.0.113.5:31000");
        let mut l = Latch::new(LatchMode::nat(), sdp);
        assert_eq!(l.check(now, nat, Ssrc(7), 100), LatchDecision::Foreign);
        assert_eq!(l.remote(), sdp);
        assert_eq!(l.check(now, nat, Ssrc(7), 101), LatchDecision::Foreign);
        assert_eq!(l.check(now, nat, Ssrc(7), 102), LatchDecision::Latched);
        assert_eq!(l.remote(), nat);
        assert_eq!(l.check(now, nat, Ssrc(7), 103), LatchDecision::Accept);
    }

    #[test]
    fn out_of_sequence_restarts_probation_and_foreign_dropped() {
        let now = crate::testutil::t0();
        let sdp = addr("10.0.0.1:4000");
        let a = addr("203.0.113.5:31000");
        let evil = addr("198.51.100.9:5000");
        let mut l = Latch::new(LatchMode::nat(), sdp);
        assert_eq!(l.check(now, a, Ssrc(7), 10), LatchDecision::Foreign);
        assert_eq!(l.check(now, a, Ssrc(7), 12), LatchDecision::Foreign); // gap: restart
        assert_eq!(l.check(now, a, Ssrc(7), 13), LatchDecision::Foreign);
        assert_eq!(l.check(now, a, Ssrc(8), 14), LatchDecision::Foreign); // ssrc change: restart
        assert_eq!(l.check(now, a, Ssrc(8), 15), LatchDecision::Foreign);
        assert_eq!(l.check(now, a, Ssrc(8), 16), LatchDecision::Latched);
        // an attacker streaming in sequence cannot take over a live stream
        for i in 0..10u16 {
            let t = now + Duration::from_millis(20 * u64::from(i));
            assert_eq!(l.check(t, a, Ssrc(8), 17 + i), LatchDecision::Accept);
            assert_eq!(l.check(t, evil, Ssrc(9), 500 + i), LatchDecision::Foreign);
        }
        assert_eq!(l.remote(), a);
        // after the current source has been silent past relatch_after, probation applies again
        let later = now + Duration::from_secs(3);
        assert_eq!(l.check(later, evil, Ssrc(9), 600), LatchDecision::Foreign);
        assert_eq!(l.check(later, evil, Ssrc(9), 601), LatchDecision::Foreign);
        assert_eq!(l.check(later, evil, Ssrc(9), 602), LatchDecision::Latched);
    }

    #[test]
    fn live_sdp_source_cannot_be_hijacked() {
        let now = crate::testutil::t0();
        let sdp = addr("10.0.0.1:4000");
        let evil = addr("198.51.100.9:5000");
        let mut l = Latch::new(LatchMode::nat(), sdp);
        for i in 0..20u16 {
            let t = now + Duration::from_millis(20 * u64::from(i));
            assert_eq!(l.check(t, sdp, Ssrc(1), i), LatchDecision::Accept);
            assert_eq!(l.check(t, evil, Ssrc(2), 100 + i), LatchDecision::Foreign);
        }
        assert_eq!(l.remote(), sdp);
    }

    #[test]
    fn sdp_mode_never_latches() {
        let now = crate::testutil::t0();
        let sdp = addr("10.0.0.1:4000");
        let other = addr("10.0.0.2:4000");
        let mut l = Latch::new(LatchMode::Sdp, sdp);
        for s in 0..10 {
            assert_eq!(l.check(now, other, Ssrc(1), s), LatchDecision::Foreign);
        }
        assert_eq!(l.check(now, sdp, Ssrc(1), 11), LatchDecision::Accept);
        assert_eq!(l.remote(), sdp);
    }
}
