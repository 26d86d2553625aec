//! RFC 4733 telephone-events: receive (one digit per event) and send.
//!
//! The 4-byte payload is (de)coded here: the workspace lockfile pins `audio-codec`
//! 0.4.11, whose `telephone_event` module has no payload helpers (0.4.13 added them).
//!
//! **Receive rule.** An event is identified by `(event code, RTP timestamp)` — RFC 4733
//! §2.5.1.2: every packet of one event carries the timestamp of the event's start. The
//! digit is reported exactly once, when the first end packet arrives (so the duration and
//! volume are final); the usual end-packet triplicates and any retransmissions are
//! recognised by their key and ignored. If the end packets are all lost, the digit is
//! reported when the next event starts or when no packet for it arrived for
//! [`EVENT_TIMEOUT`] ([`TelephoneEventReceiver::poll_timeout`]). A new timestamp is a new
//! key, so pressing the same key twice gives two digits.

use std::time::{Duration, Instant};

use super::{Digit, DtmfEvent, DtmfSource};
use crate::MediaError;

/// A decoded telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code (0–15 are DTMF digits).
    pub event: u8,
    /// E bit: last packet(s) of the event.
    pub end: bool,
    /// Volume, 0..=63 (−dBm0).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

/// Parse `event(8) | E R volume(6) | duration(16)`. Several 4-byte blocks (RFC 4733
/// §2.5.1.5 packing) → the last one, which is the current event.
pub fn parse_telephone_event(data: &[u8]) -> Option<EventPayload> {
    if data.len() < 4 || data.len() % 4 != 0 {
        return None;
    }
    let b = data.get(data.len() - 4..)?;
    match *b {
        [event, flags, d0, d1] => Some(EventPayload {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        }),
        _ => None,
    }
}

/// Encode one telephone-event payload.
pub fn encode_event_payload(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
    let [d0, d1] = duration.to_be_bytes();
    [event, if end { 0x80 } else { 0 } | (volume & 0x3F), d0, d1]
}

/// RTP clock of telephone-event/8000.
pub const EVENT_CLOCK: u32 = 8000;
/// An event with no update for this long (end packets lost) is reported anyway.
pub const EVENT_TIMEOUT: Duration = Duration::from_millis(500);
/// How many finished event keys are remembered for de-duplication.
const DONE_KEYS: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Current {
    key: (u8, u32),
    duration: u16,
    volume: u8,
    last_seen: Instant,
}

/// Receives telephone-event payloads and reports one [`DtmfEvent`] per event.
#[derive(Debug, Clone, Default)]
pub struct TelephoneEventReceiver {
    current: Option<Current>,
    done: [Option<(u8, u32)>; DONE_KEYS],
    done_pos: usize,
}

fn to_event(c: &Current, at: Instant) -> Option<DtmfEvent> {
    Some(DtmfEvent {
        digit: Digit::from_event(c.key.0)?,
        source: DtmfSource::Rfc4733,
        at,
        duration: Some(Duration::from_micros(
            u64::from(c.duration) * 1_000_000 / u64::from(EVENT_CLOCK),
        )),
        volume: Some(c.volume),
    })
}

impl TelephoneEventReceiver {
    /// A fresh receiver.
    pub fn new() -> Self {
        Self::default()
    }

    fn finish(&mut self, c: Current, at: Instant) -> Option<DtmfEvent> {
        if let Some(slot) = self.done.get_mut(self.done_pos) {
            *slot = Some(c.key);
        }
        self.done_pos = (self.done_pos + 1) % DONE_KEYS;
        to_event(&c, at)
    }

    /// Handle one telephone-event RTP packet. Returns up to two digits: a previous event
    /// whose end packets were lost (flushed because a new event began) and this one, if
    /// this packet ends it.
    pub fn on_packet(
        &mut self,
        now: Instant,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<[Option<DtmfEvent>; 2], MediaError> {
        let ev = parse_telephone_event(payload).ok_or(MediaError::BadTelephoneEvent)?;
        let mut out = [None, None];
        if ev.event > 15 {
            // flash-hook and other non-DTMF events: valid, not a digit
            return Ok(out);
        }
        let key = (ev.event, timestamp);
        if self.done.contains(&Some(key)) {
            return Ok(out); // redundant end packet / retransmission
        }
        match self.current {
            Some(ref mut c) if c.key == key => {
                c.duration = c.duration.max(ev.duration);
                c.volume = ev.volume;
                c.last_seen = now;
            }
            prev => {
                if let Some(p) = prev {
                    out[0] = self.finish(p, now);
                }
                self.current = Some(Current {
                    key,
                    duration: ev.duration,
                    volume: ev.volume,
                    last_seen: now,
                });
            }
        }
        if ev.end {
            if let Some(c) = self.current.take() {
                out[1] = self.finish(c, now);
            }
        }
        Ok(out)
    }

    /// Report an event whose end packets never came.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<DtmfEvent> {
        let c = self.current?;
        if now.saturating_duration_since(c.last_seen) >= EVENT_TIMEOUT {
            self.current = None;
            self.finish(c, now)
        } else {
            None
        }
    }

    /// Whether an event is in progress (useful to mute in-band audio while it lasts).
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }
}

/// One outgoing telephone-event packet (the caller wraps it with
/// [`crate::rtp::RtpSender::event_packet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// 4-byte RFC 4733 payload.
    pub payload: [u8; 4],
    /// Marker bit (first packet of the event).
    pub marker: bool,
    /// RTP timestamp: the event's start.
    pub timestamp: u32,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    digit: Digit,
    volume: u8,
    total: u16,
    elapsed: u32,
    start_ts: u32,
    started: bool,
    ends_sent: u8,
}

/// Number of end packets sent (RFC 4733 §2.5.1.4 recommends three).
pub const END_PACKETS: u8 = 3;
/// Default tone duration for sent digits.
pub const DEFAULT_DURATION: Duration = Duration::from_millis(100);
/// Default volume (−dBm0).
pub const DEFAULT_VOLUME: u8 = 10;
/// Ticks of audio between two queued digits.
pub const INTER_DIGIT_TICKS: u8 = 3;

/// Sends digits as RFC 4733 events, one packet per ptime tick: a start packet with the
/// marker, updates with the growing duration, then [`END_PACKETS`] end packets; all with
/// the timestamp of the event start.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    ptime_samples: u32,
    queue: std::collections::VecDeque<(Digit, Duration, u8)>,
    active: Option<Active>,
    gap: u8,
}

impl DtmfSender {
    /// A sender ticking every `ptime_samples` (160 for 20 ms).
    pub fn new(ptime_samples: u32) -> Self {
        DtmfSender {
            ptime_samples: ptime_samples.max(1),
            queue: Default::default(),
            active: None,
            gap: 0,
        }
    }

    /// Queue a digit.
    pub fn send(&mut self, digit: Digit, duration: Duration, volume: u8) {
        self.queue.push_back((digit, duration, volume.min(63)));
    }

    /// Whether an event is being sent (audio must be suppressed this tick).
    pub fn is_busy(&self) -> bool {
        self.active.is_some() || (self.gap == 0 && !self.queue.is_empty())
    }

    /// The packet for this tick, if an event is being sent. `media_ts` is the timestamp
    /// the next audio packet would carry; it becomes the event timestamp on the first tick.
    pub fn next(&mut self, media_ts: u32) -> Option<EventPacket> {
        if self.active.is_none() {
            if self.gap > 0 {
                self.gap -= 1;
                return None;
            }
            let (digit, dur, volume) = self.queue.pop_front()?;
            let total = (dur.as_millis() as u64 * u64::from(EVENT_CLOCK) / 1000)
                .clamp(1, u64::from(u16::MAX)) as u16;
            self.active = Some(Active {
                digit,
                volume,
                total,
                elapsed: 0,
                start_ts: media_ts,
                started: false,
                ends_sent: 0,
            });
        }
        let a = self.active.as_mut()?;
        let marker = !a.started;
        a.started = true;
        let pkt = if a.elapsed + self.ptime_samples < u32::from(a.total) {
            a.elapsed += self.ptime_samples;
            EventPacket {
                payload: encode_event_payload(a.digit.event(), false, a.volume, a.elapsed as u16),
                marker,
                timestamp: a.start_ts,
            }
        } else {
            a.ends_sent += 1;
            EventPacket {
                payload: encode_event_payload(a.digit.event(), true, a.volume, a.total),
                marker,
                timestamp: a.start_ts,
            }
        };
        if a.ends_sent >= END_PACKETS {
            self.active = None;
            self.gap = INTER_DIGIT_TICKS;
        }
        Some(pkt)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pl(event: u8, end: bool, dur: u16) -> [u8; 4] {
        encode_event_payload(event, end, 10, dur)
    }

    fn digits(
        r: &mut TelephoneEventReceiver,
        now: Instant,
        pkts: &[(u32, [u8; 4])],
    ) -> Vec<(char, u64)> {
        let mut out = Vec::new();
        for (ts, p) in pkts {
            for e in r.on_packet(now, *ts, p).unwrap().into_iter().flatten() {
                out.push((e.digit.as_char(), e.duration.unwrap().as_millis() as u64));
            }
        }
        out
    }

    #[test]
    fn one_digit_per_event_with_triplicate_end() {
        let t0 = crate::testutil::t0();
        let mut r = TelephoneEventReceiver::new();
        let ts = 16000;
        let got = digits(
            &mut r,
            t0,
            &[
                (ts, pl(5, false, 160)),
                (ts, pl(5, false, 320)),
                (ts, pl(5, false, 320)), // duplicate update
                (ts, pl(5, false, 480)),
                (ts, pl(5, true, 800)),
                (ts, pl(5, true, 800)),
                (ts, pl(5, true, 800)),
            ],
        );
        assert_eq!(got, vec![('5', 100)]);
        // late retransmitted end packet after the fact: still nothing
        assert_eq!(digits(&mut r, t0, &[(ts, pl(5, true, 800))]), vec![]);
    }

    #[test]
    fn same_digit_twice_and_new_event() {
        let t0 = crate::testutil::t0();
        let mut r = TelephoneEventReceiver::new();
        let got = digits(
            &mut r,
            t0,
            &[
                (1000, pl(1, false, 160)),
                (1000, pl(1, true, 640)),
                (1000, pl(1, true, 640)),
                (2000, pl(1, false, 160)), // same key again, new timestamp → second digit
                (2000, pl(1, true, 640)),
                (2000, pl(1, true, 640)),
                (2000, pl(1, true, 640)),
                (3000, pl(11, false, 160)), // '#', end packets lost
                (4000, pl(10, true, 400)),  // '*' new event flushes '#'
            ],
        );
        assert_eq!(got, vec![('1', 80), ('1', 80), ('#', 20), ('*', 50)]);
    }

    #[test]
    fn lost_end_reported_on_timeout() {
        let t0 = crate::testutil::t0();
        let mut r = TelephoneEventReceiver::new();
        r.on_packet(t0, 500, &pl(9, false, 320)).unwrap();
        assert!(r.in_progress());
        assert!(r.poll_timeout(t0 + Duration::from_millis(100)).is_none());
        let e = r.poll_timeout(t0 + EVENT_TIMEOUT).unwrap();
        assert_eq!(
            (e.digit.as_char(), e.source, e.volume),
            ('9', DtmfSource::Rfc4733, Some(10))
        );
        // a straggler end packet for the timed-out event is ignored
        assert_eq!(
            r.on_packet(t0, 500, &pl(9, true, 800)).unwrap(),
            [None, None]
        );
    }

    #[test]
    fn malformed_payloads() {
        let t0 = crate::testutil::t0();
        let mut r = TelephoneEventReceiver::new();
        assert!(r.on_packet(t0, 0, &[1, 2, 3]).is_err());
        assert!(r.on_packet(t0, 0, &[]).is_err());
        assert_eq!(
            r.on_packet(t0, 0, &pl(16, true, 100)).unwrap(),
            [None, None]
        ); // flash
    }

    #[test]
    fn sender_sequence() {
        let mut s = DtmfSender::new(160);
        s.send(
            Digit::from_char('7').unwrap(),
            Duration::from_millis(100),
            10,
        );
        assert!(s.is_busy());
        let mut pkts = Vec::new();
        let mut ts = 8000u32;
        while let Some(p) = s.next(ts) {
            pkts.push(p);
            ts += 160;
        }
        // 100 ms = 800 samples: updates at 160..640 (4), then 3 end packets
        assert_eq!(pkts.len(), 7);
        assert!(pkts[0].marker && pkts.iter().skip(1).all(|p| !p.marker));
        assert!(pkts.iter().all(|p| p.timestamp == 8000));
        let parsed: Vec<_> = pkts
            .iter()
            .map(|p| parse_telephone_event(&p.payload).unwrap())
            .collect();
        assert_eq!(
            parsed.iter().map(|e| e.duration).collect::<Vec<_>>(),
            vec![160, 320, 480, 640, 800, 800, 800]
        );
        assert_eq!(parsed.iter().filter(|e| e.end).count(), 3);
        assert!(parsed.iter().all(|e| e.event == 7 && e.volume == 10));
        // and the receiver makes exactly one digit of it
        let t0 = crate::testutil::t0();
        let mut r = TelephoneEventReceiver::new();
        let got: Vec<_> = pkts
            .iter()
            .flat_map(|p| {
                r.on_packet(t0, p.timestamp, &p.payload)
                    .unwrap()
                    .into_iter()
                    .flatten()
            })
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].duration, Some(Duration::from_millis(100)));
    }
}
