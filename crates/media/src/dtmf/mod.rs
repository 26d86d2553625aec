//! DTMF from three sources — RFC 4733 telephone-events ([`rfc4733`]), SIP INFO bodies
//! ([`info`]) and in-band tones ([`inband`]) — and [`dedup::DtmfDedup`], which merges them.

use std::fmt;
use std::time::{Duration, Instant};

use crate::MediaError;

pub mod dedup;
pub mod inband;
pub mod info;
pub mod rfc4733;

pub use dedup::DtmfDedup;
pub use inband::InbandDetector;
pub use rfc4733::{DtmfSender, TelephoneEventReceiver};

/// A DTMF digit: RFC 4733 event codes 0–15 (`0`–`9`, `*`=10, `#`=11, `A`–`D`=12–15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digit(u8);

impl Digit {
    /// From an RFC 4733 event code (0..=15).
    pub const fn from_event(code: u8) -> Option<Digit> {
        if code <= 15 { Some(Digit(code)) } else { None }
    }

    /// From a character (`0-9 * # A-D`, case-insensitive).
    pub fn from_char(c: char) -> Option<Digit> {
        let code = match c {
            '0'..='9' => c as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => c as u8 - b'A' + 12,
            'a'..='d' => c as u8 - b'a' + 12,
            _ => return None,
        };
        Some(Digit(code))
    }

    /// The RFC 4733 event code.
    pub const fn event(self) -> u8 {
        self.0
    }

    /// The character.
    pub const fn as_char(self) -> char {
        match self.0 {
            0..=9 => (b'0' + self.0) as char,
            10 => '*',
            11 => '#',
            12..=15 => (b'A' + self.0 - 12) as char,
            _ => '?',
        }
    }

    /// All 16 digits in keypad order of event codes.
    pub fn all() -> impl Iterator<Item = Digit> {
        (0..16).map(Digit)
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

impl TryFrom<char> for Digit {
    type Error = MediaError;
    fn try_from(c: char) -> Result<Self, Self::Error> {
        Digit::from_char(c).ok_or_else(|| MediaError::InvalidDigit(c.to_string()))
    }
}

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfSource {
    /// RFC 4733 telephone-event RTP packets.
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    Info,
    /// In-band tones detected in the decoded audio.
    Inband,
}

/// One detected key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// The digit.
    pub digit: Digit,
    /// Where it came from.
    pub source: DtmfSource,
    /// When it was recognised.
    pub at: Instant,
    /// Tone duration, when known (RFC 4733 end, INFO `Duration=`, in-band at least the
    /// detection time).
    pub duration: Option<Duration>,
    /// RFC 4733 volume (0..=63, −dBm0), when known.
    pub volume: Option<u8>,
}
