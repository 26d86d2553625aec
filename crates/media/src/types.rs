//! Small typed wrappers used across the crate.

use std::fmt;

/// RTP synchronisation source identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// RTP payload type (7 bits, 0..=127).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// PCMU (G.711 μ-law), static payload type 0.
    pub const PCMU: PayloadType = PayloadType(0);
    /// PCMA (G.711 A-law), static payload type 8.
    pub const PCMA: PayloadType = PayloadType(8);
    /// Comfort noise (RFC 3389), static payload type 13.
    pub const CN: PayloadType = PayloadType(13);
    /// The conventional dynamic payload type for telephone-event/8000.
    pub const TELEPHONE_EVENT_DEFAULT: PayloadType = PayloadType(101);

    /// A payload type; `None` when `pt > 127`.
    pub const fn new(pt: u8) -> Option<Self> {
        if pt <= 127 {
            Some(PayloadType(pt))
        } else {
            None
        }
    }

    /// The 7-bit value.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An extended (64-bit) RTP sequence number: the 16-bit wire value plus the number of
/// times it has wrapped (`cycles << 16 | seq`), so ordering survives 65535 → 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The 16-bit value as carried on the wire.
    pub const fn wire(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }

    /// The number of 16-bit wraps.
    pub const fn cycles(self) -> u64 {
        self.0 >> 16
    }

    /// The next sequence number.
    pub const fn next(self) -> SeqNo {
        SeqNo(self.0.wrapping_add(1))
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Extends 16-bit wire sequence numbers to [`SeqNo`], choosing for each packet the
/// extended value closest to the highest one seen so far (so reordering across the
/// 65535 → 0 wrap is handled in both directions).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqUnwrapper {
    highest: Option<u64>,
}

impl SeqUnwrapper {
    /// A fresh unwrapper; the first packet defines cycle 1 (so that a late packet from
    /// "before" the first one still has a non-negative extended number).
    pub const fn new() -> Self {
        SeqUnwrapper { highest: None }
    }

    /// Extend `seq`, updating the highest value seen.
    pub fn unwrap(&mut self, seq: u16) -> SeqNo {
        let ext = self.peek(seq);
        match self.highest {
            Some(h) if h >= ext.0 => {}
            _ => self.highest = Some(ext.0),
        }
        ext
    }

    /// Extend `seq` without updating state.
    pub fn peek(&self, seq: u16) -> SeqNo {
        match self.highest {
            None => SeqNo((1u64 << 16) | u64::from(seq)),
            Some(h) => {
                let delta = seq.wrapping_sub(h as u16) as i16;
                SeqNo(h.saturating_add_signed(i64::from(delta)))
            }
        }
    }

    /// Highest extended sequence number seen.
    pub fn highest(&self) -> Option<SeqNo> {
        self.highest.map(SeqNo)
    }

    /// Forget everything (new SSRC).
    pub fn reset(&mut self) {
        self.highest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwrap_rollover_both_ways() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(65534);
        let b = u.unwrap(65535);
        let c = u.unwrap(0);
        let late = u.unwrap(65533);
        let d = u.unwrap(1);
        assert_eq!(b.0, a.0 + 1);
        assert_eq!(c.0, b.0 + 1);
        assert_eq!(late.0, a.0 - 1);
        assert_eq!(d.0, c.0 + 1);
        assert_eq!(c.wire(), 0);
        assert_eq!(c.cycles(), a.cycles() + 1);
        assert_eq!(u.highest(), Some(d));
    }

    #[test]
    fn payload_type_range() {
        assert!(PayloadType::new(127).is_some());
        assert!(PayloadType::new(128).is_none());
    }
}
