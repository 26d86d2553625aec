//! Merging DTMF from several sources.
//!
//! **Policy.**
//! * In-band detection should run only when no telephone-event payload type was
//!   negotiated ([`DtmfDedup::inband_wanted`]); [`crate::call::MediaSession`] follows that.
//! * If the same digit arrives from two *different* sources within [`DEFAULT_WINDOW`]
//!   (e.g. a gateway that sends RFC 4733 and leaves the tone in the audio, or RFC 4733
//!   plus SIP INFO), it counts once: the first report wins and the later one is dropped.
//!   Each accepted report can absorb at most one report from each other source, so a key
//!   pressed twice still gives two digits.
//! * Reports from the *same* source are never merged here: each source already reports
//!   one digit per key press.
//!
//! The window is measured between the two reports' `at` times. RFC 4733 reports at the
//! end of the tone and in-band at its start + ~40 ms, so the window must exceed the
//! longest tone expected; 500 ms covers normal key presses (≤ 300 ms).

use std::time::Duration;

use super::{DtmfEvent, DtmfSource};

/// Default matching window.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(500);
const HISTORY: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Accepted {
    event: DtmfEvent,
    /// Sources that have already been merged into this report.
    absorbed: [bool; 3],
}

fn idx(s: DtmfSource) -> usize {
    match s {
        DtmfSource::Rfc4733 => 0,
        DtmfSource::Info => 1,
        DtmfSource::Inband => 2,
    }
}

/// De-duplicates digits across [`DtmfSource`]s.
#[derive(Debug, Clone)]
pub struct DtmfDedup {
    window: Duration,
    telephone_event_negotiated: bool,
    history: [Option<Accepted>; HISTORY],
    pos: usize,
    suppressed: u64,
}

impl DtmfDedup {
    /// A merger; `telephone_event_negotiated` says whether RFC 4733 was agreed in SDP.
    pub fn new(telephone_event_negotiated: bool) -> Self {
        DtmfDedup {
            window: DEFAULT_WINDOW,
            telephone_event_negotiated,
            history: [None; HISTORY],
            pos: 0,
            suppressed: 0,
        }
    }

    /// Change the matching window.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Whether the in-band detector should run (no telephone-event negotiated).
    pub fn inband_wanted(&self) -> bool {
        !self.telephone_event_negotiated
    }

    /// Reports dropped as duplicates so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Offer a report; returns it if it is a new digit, `None` if it duplicates a report
    /// from another source.
    pub fn accept(&mut self, ev: DtmfEvent) -> Option<DtmfEvent> {
        let me = idx(ev.source);
        for a in self.history.iter_mut().flatten() {
            let close = if ev.at >= a.event.at {
                ev.at - a.event.at
            } else {
                a.event.at - ev.at
            };
            if a.event.digit == ev.digit
                && a.event.source != ev.source
                && close <= self.window
                && !a.absorbed[me]
            {
                a.absorbed[me] = true;
                self.suppressed += 1;
                return None;
            }
        }
        let mut absorbed = [false; 3];
        absorbed[me] = true;
        if let Some(slot) = self.history.get_mut(self.pos) {
            *slot = Some(Accepted {
                event: ev,
                absorbed,
            });
        }
        self.pos = (self.pos + 1) % HISTORY;
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::Digit;
    use std::time::Instant;

    fn ev(c: char, s: DtmfSource, at: Instant) -> DtmfEvent {
        DtmfEvent {
            digit: Digit::from_char(c)
                .unwrap_or(Digit::from_event(0).unwrap_or_else(|| unreachable!())),
            source: s,
            at,
            duration: None,
            volume: None,
        }
    }

    #[test]
    fn both_sources_count_once_and_repeats_count_twice() {
        let t0 = crate::testutil::t0();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut d = DtmfDedup::new(true);
        assert!(!d.inband_wanted());
        let mut got = Vec::new();
        let seq = [
            ev('1', DtmfSource::Inband, ms(40)),
            ev('1', DtmfSource::Rfc4733, ms(200)), // same press, other source → dropped
            ev('1', DtmfSource::Inband, ms(440)),  // second press
            ev('1', DtmfSource::Rfc4733, ms(600)), // its RFC 4733 twin → dropped
            ev('2', DtmfSource::Rfc4733, ms(900)),
            ev('2', DtmfSource::Rfc4733, ms(1000)), // same source twice → two digits
            ev('3', DtmfSource::Rfc4733, ms(1200)),
            ev('3', DtmfSource::Inband, ms(2000)), // too far apart → a new digit
        ];
        for e in seq {
            if let Some(e) = d.accept(e) {
                got.push((e.digit.as_char(), e.source));
            }
        }
        assert_eq!(
            got,
            vec![
                ('1', DtmfSource::Inband),
                ('1', DtmfSource::Inband),
                ('2', DtmfSource::Rfc4733),
                ('2', DtmfSource::Rfc4733),
                ('3', DtmfSource::Rfc4733),
                ('3', DtmfSource::Inband)
            ]
        );
        assert_eq!(d.suppressed(), 2);
        assert!(DtmfDedup::new(false).inband_wanted());
    }
}
