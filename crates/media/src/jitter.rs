//! Adaptive jitter buffer and packet-loss concealment.
//!
//! **Policy** (frame based, one frame per ptime tick, sans-IO):
//! * Packets are slotted by extended sequence number in a fixed ring of [`CAPACITY`]
//!   slots (payload bytes are copied into the slot: no allocation per packet).
//! * Playout starts (and restarts after an underrun) once `target` frames are buffered;
//!   each [`JitterBuffer::pop`] then returns the next sequence number in order.
//! * A packet whose sequence number was already played (or skipped) is **late** and
//!   dropped; a second copy of a buffered packet is a **duplicate** and dropped.
//! * A missing frame at its playout tick is **concealed**: [`Plc`] repeats the last good
//!   frame fading from 100 % to 50 %, then 50 % to 0 %, then plays silence.
//! * The target depth is `ceil(4 × jitter / ptime) + 1` frames, clamped to
//!   `[min_delay, max_delay]`, where jitter is the RFC 3550 interarrival jitter estimate
//!   computed from arrival times (`now`) and RTP timestamps.
//! * When the buffer holds more than `target + 2` frames (jitter went down, or a burst
//!   arrived) one frame is discarded at most every 10 ticks to shrink latency gently;
//!   when it runs dry the buffer goes back to buffering, which grows the delay to the new
//!   target.
//! * A sequence jump of more than [`CAPACITY`] ahead, or [`LATE_RESYNC`] consecutive late
//!   packets (sender restart), flushes and resyncs.

use std::time::{Duration, Instant};

use crate::g711::{MAX_FRAME_SAMPLES, Ptime, SAMPLE_RATE};
use crate::{PayloadType, SeqNo};

/// Ring capacity in frames (≥ max delay / min ptime: 200 ms / 10 ms = 20, with headroom).
pub const CAPACITY: usize = 64;
/// Multiplier applied to the jitter estimate to get the target delay.
pub const JITTER_MULTIPLIER: f64 = 4.0;
/// Frames above target tolerated before shrinking.
pub const SHRINK_SLACK: usize = 2;
/// Consecutive late packets after which the buffer assumes the sender restarted its
/// sequence numbers and resynchronises.
pub const LATE_RESYNC: u32 = 25;
/// Minimum ticks between two shrink (frame-discard) operations.
pub const SHRINK_INTERVAL: u32 = 10;

/// Jitter buffer configuration.
#[derive(Debug, Clone, Copy)]
pub struct JitterConfig {
    /// Frame duration.
    pub ptime: Ptime,
    /// Minimum playout delay (default 40 ms).
    pub min_delay: Duration,
    /// Maximum playout delay (default 200 ms).
    pub max_delay: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            ptime: Ptime::DEFAULT,
            min_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
        }
    }
}

/// Result of [`JitterBuffer::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Queued,
    /// Its playout time has passed: dropped.
    Late,
    /// Already buffered: dropped.
    Duplicate,
    /// Payload larger than a 60 ms frame: dropped.
    TooLarge,
    /// Far ahead of the playout point: buffer flushed and resynchronised on this packet.
    Resync,
}

/// One tick's output of [`JitterBuffer::pop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// Still filling up to the target depth (play comfort silence).
    Buffering,
    /// The next frame in sequence.
    Frame {
        /// Payload type of the frame.
        pt: PayloadType,
        /// Extended sequence number.
        seq: SeqNo,
        /// RTP timestamp.
        timestamp: u32,
        /// Encoded payload.
        payload: &'a [u8],
    },
    /// The frame for this tick is missing (lost or not yet arrived): conceal it.
    Missing,
}

/// Jitter buffer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames played.
    pub played: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Packets dropped as late.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicate: u64,
    /// Frames discarded to shrink the delay.
    pub shrunk: u64,
    /// Resynchronisations (large sequence jumps).
    pub resyncs: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    seq: Option<SeqNo>,
    pt: PayloadType,
    timestamp: u32,
    len: u16,
    data: [u8; MAX_FRAME_SAMPLES],
}

impl Slot {
    const EMPTY: Slot = Slot {
        seq: None,
        pt: PayloadType::PCMU,
        timestamp: 0,
        len: 0,
        data: [0; MAX_FRAME_SAMPLES],
    };
}

/// The adaptive jitter buffer (see the module docs for the policy).
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Box<[Slot; CAPACITY]>,
    count: usize,
    playing: bool,
    /// Playout has begun (anything below `next` is late from now on).
    started: bool,
    /// Next sequence number to play (everything below has been played or skipped).
    next: Option<SeqNo>,
    target: usize,
    // RFC 3550 jitter estimator (timestamp units)
    epoch: Option<Instant>,
    last_transit: Option<i64>,
    jitter: f64,
    ticks_since_shrink: u32,
    consecutive_late: u32,
    stats: JitterStats,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("count", &self.count)
            .field("playing", &self.playing)
            .field("next", &self.next)
            .field("target", &self.target)
            .field("jitter", &self.jitter)
            .field("stats", &self.stats)
            .finish()
    }
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(cfg: JitterConfig) -> Self {
        let mut jb = JitterBuffer {
            cfg,
            slots: Box::new([Slot::EMPTY; CAPACITY]),
            count: 0,
            playing: false,
            started: false,
            next: None,
            target: 1,
            epoch: None,
            last_transit: None,
            jitter: 0.0,
            ticks_since_shrink: 0,
            consecutive_late: 0,
            stats: JitterStats::default(),
        };
        jb.target = jb.min_frames();
        jb
    }

    fn frames_for(&self, d: Duration) -> usize {
        let pt = u128::from(self.cfg.ptime.ms().max(1));
        d.as_millis().div_ceil(pt).clamp(1, CAPACITY as u128 / 2) as usize
    }

    fn min_frames(&self) -> usize {
        self.frames_for(self.cfg.min_delay)
    }

    fn max_frames(&self) -> usize {
        self.frames_for(self.cfg.max_delay).max(self.min_frames())
    }

    /// Current target depth in frames.
    pub fn target_frames(&self) -> usize {
        self.target
    }

    /// Current target delay.
    pub fn target_delay(&self) -> Duration {
        self.cfg.ptime.duration() * self.target as u32
    }

    /// Frames currently buffered.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Interarrival jitter estimate in RTP timestamp units (8 kHz).
    pub fn jitter_ts_units(&self) -> f64 {
        self.jitter
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Forget all packets and timing (new SSRC).
    pub fn reset(&mut self) {
        let stats = self.stats;
        *self = JitterBuffer::new(self.cfg);
        self.stats = stats;
    }

    fn update_jitter(&mut self, now: Instant, timestamp: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = now.saturating_duration_since(epoch).as_micros() as i64
            * i64::from(SAMPLE_RATE)
            / 1_000_000;
        // transit is only used in differences, so 32-bit wrap of the timestamp is handled by
        // computing the difference in wrapping u32 arithmetic.
        let transit = arrival.wrapping_sub(i64::from(timestamp));
        if let Some(prev) = self.last_transit {
            let d = (transit - prev) as i32; // wrap-safe difference
            let d = f64::from(d).abs();
            if d < f64::from(SAMPLE_RATE) * 10.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        let jitter_ms = self.jitter * 1000.0 / f64::from(SAMPLE_RATE);
        let frames = (JITTER_MULTIPLIER * jitter_ms / f64::from(self.cfg.ptime.ms().max(1))).ceil()
            as usize
            + 1;
        self.target = frames.clamp(self.min_frames(), self.max_frames());
    }

    /// Insert a packet that arrived at `now`.
    pub fn push(
        &mut self,
        now: Instant,
        seq: SeqNo,
        timestamp: u32,
        pt: PayloadType,
        payload: &[u8],
    ) -> PushOutcome {
        if payload.len() > MAX_FRAME_SAMPLES {
            return PushOutcome::TooLarge;
        }
        let mut outcome = PushOutcome::Queued;
        if self.next.is_some_and(|n| seq >= n) {
            self.consecutive_late = 0;
        }
        if let Some(next) = self.next {
            if seq < next {
                if self.started {
                    self.consecutive_late += 1;
                    if self.consecutive_late < LATE_RESYNC {
                        self.stats.late += 1;
                        return PushOutcome::Late;
                    }
                    // the sender jumped backwards (restart with the same SSRC): resync
                    self.flush();
                    self.started = false;
                    self.stats.resyncs += 1;
                    outcome = PushOutcome::Resync;
                }
                // nothing played yet: playout simply starts earlier
                self.next = Some(seq);
            } else if seq.0 - next.0 >= CAPACITY as u64 {
                self.flush();
                self.started = false;
                self.stats.resyncs += 1;
                self.next = Some(seq);
                outcome = PushOutcome::Resync;
            }
        } else {
            self.next = Some(seq);
        }
        let idx = (seq.0 % CAPACITY as u64) as usize;
        let Some(slot) = self.slots.get_mut(idx) else {
            return PushOutcome::TooLarge;
        };
        if slot.seq == Some(seq) {
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        if slot.seq.is_none() {
            self.count += 1;
        }
        slot.seq = Some(seq);
        slot.pt = pt;
        slot.timestamp = timestamp;
        slot.len = payload.len() as u16;
        if let Some(dst) = slot.data.get_mut(..payload.len()) {
            dst.copy_from_slice(payload);
        }
        if !self.playing {
            // while buffering, playout starts at the lowest sequence number seen
            if let Some(n) = self.next {
                if seq < n {
                    self.next = Some(seq);
                }
            }
        }
        self.update_jitter(now, timestamp);
        outcome
    }

    fn flush(&mut self) {
        for s in self.slots.iter_mut() {
            s.seq = None;
        }
        self.count = 0;
        self.playing = false;
        self.consecutive_late = 0;
    }

    fn take(&mut self, seq: SeqNo) -> Option<usize> {
        let idx = (seq.0 % CAPACITY as u64) as usize;
        let slot = self.slots.get_mut(idx)?;
        if slot.seq == Some(seq) {
            slot.seq = None;
            self.count = self.count.saturating_sub(1);
            Some(idx)
        } else {
            None
        }
    }

    /// Lowest buffered sequence number ≥ `from`.
    fn lowest_from(&self, from: SeqNo) -> Option<SeqNo> {
        self.slots
            .iter()
            .filter_map(|s| s.seq)
            .filter(|s| *s >= from)
            .min()
    }

    /// Take the frame for this playout tick (call once per ptime).
    pub fn pop(&mut self, _now: Instant) -> Playout<'_> {
        if !self.playing {
            if self.count >= self.target && self.count > 0 {
                self.playing = true;
                self.started = true;
                let from = self.next.unwrap_or_default();
                self.next = self.lowest_from(from).or(self.next);
                self.ticks_since_shrink = 0;
            } else {
                return Playout::Buffering;
            }
        }
        let Some(mut next) = self.next else {
            self.playing = false;
            return Playout::Buffering;
        };
        self.ticks_since_shrink = self.ticks_since_shrink.saturating_add(1);
        // shrink: too much buffered for the current target → skip the oldest frame
        if self.count > self.target + SHRINK_SLACK && self.ticks_since_shrink >= SHRINK_INTERVAL {
            if self.take(next).is_some() {
                self.stats.shrunk += 1;
            }
            next = next.next();
            self.ticks_since_shrink = 0;
        }
        self.next = Some(next.next());
        match self.take(next) {
            Some(idx) => {
                self.stats.played += 1;
                match self.slots.get(idx) {
                    Some(slot) => Playout::Frame {
                        pt: slot.pt,
                        seq: next,
                        timestamp: slot.timestamp,
                        payload: slot.data.get(..usize::from(slot.len)).unwrap_or_default(),
                    },
                    None => Playout::Missing,
                }
            }
            None => {
                self.stats.concealed += 1;
                if self.count == 0 {
                    // underrun: rebuild depth to the (possibly larger) target before resuming
                    self.playing = false;
                }
                Playout::Missing
            }
        }
    }
}

/// Packet-loss concealment on decoded PCM: repeat the last good frame with a fade
/// (100 %→50 %, then 50 %→0 %), then silence.
#[derive(Clone)]
pub struct Plc {
    last: [i16; MAX_FRAME_SAMPLES],
    len: usize,
    consecutive: u32,
}

impl std::fmt::Debug for Plc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plc")
            .field("len", &self.len)
            .field("consecutive", &self.consecutive)
            .finish()
    }
}

impl Default for Plc {
    fn default() -> Self {
        Plc {
            last: [0; MAX_FRAME_SAMPLES],
            len: 0,
            consecutive: 0,
        }
    }
}

impl Plc {
    /// Remember a correctly received frame.
    pub fn good(&mut self, pcm: &[i16]) {
        let n = pcm.len().min(MAX_FRAME_SAMPLES);
        if let (Some(dst), Some(src)) = (self.last.get_mut(..n), pcm.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.len = n;
        self.consecutive = 0;
    }

    /// Fill `out` with the concealment for one missing frame.
    pub fn conceal(&mut self, out: &mut [i16]) {
        self.consecutive = self.consecutive.saturating_add(1);
        let k = self.consecutive as f32;
        let g0 = (1.0 - (k - 1.0) * 0.5).max(0.0);
        let g1 = (1.0 - k * 0.5).max(0.0);
        let n = out.len();
        if self.len == 0 || g0 == 0.0 {
            out.fill(0);
            return;
        }
        for (i, o) in out.iter_mut().enumerate() {
            let src = self.last.get(i % self.len).copied().unwrap_or(0);
            let g = g0 + (g1 - g0) * (i as f32 / n as f32);
            *o = (f32::from(src) * g) as i16;
        }
    }

    /// Consecutive frames concealed so far.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PT: PayloadType = PayloadType::PCMU;

    fn frame(seq: u64) -> [u8; 160] {
        [(seq % 251) as u8; 160]
    }

    fn played_seq(p: Playout<'_>) -> Option<u64> {
        match p {
            Playout::Frame { seq, payload, .. } => {
                assert_eq!(payload, &frame(seq.0)[..]);
                Some(seq.0)
            }
            _ => None,
        }
    }

    /// Simulated 20 ms clock.
    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn reorder_is_fixed() {
        let t0 = crate::testutil::t0();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // arrival order 1, 3, 2, 4, 6, 5 (all within the buffer depth)
        let order = [1u64, 3, 2, 4, 6, 5, 7, 8];
        for (i, s) in order.iter().enumerate() {
            assert_eq!(
                jb.push(
                    at(t0, 20 * i as u64),
                    SeqNo(*s),
                    (*s as u32) * 160,
                    PT,
                    &frame(*s)
                ),
                PushOutcome::Queued
            );
        }
        let mut out = Vec::new();
        for i in 0..8 {
            out.push(played_seq(jb.pop(at(t0, 200 + 20 * i))));
        }
        assert_eq!(out, (1..=8).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn loss_is_concealed_and_late_dropped() {
        let t0 = crate::testutil::t0();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut plc = Plc::default();
        let mut t = 0;
        let mut played = Vec::new();
        // steady stream with seq 4 lost, seq 7 arriving far too late
        for s in 1u64..=12 {
            if s != 4 && s != 7 {
                jb.push(at(t0, t), SeqNo(s), s as u32 * 160, PT, &frame(s));
            }
            if s == 11 {
                assert_eq!(
                    jb.push(at(t0, t), SeqNo(7), 7 * 160, PT, &frame(7)),
                    PushOutcome::Late
                );
            }
            match jb.pop(at(t0, t)) {
                Playout::Frame { seq, .. } => {
                    plc.good(&[1000; 160]);
                    played.push(Some(seq.0))
                }
                Playout::Missing => {
                    let mut pcm = [0i16; 160];
                    plc.conceal(&mut pcm);
                    assert_eq!(pcm[0], 1000); // first concealed frame starts at full level
                    assert!(pcm[159] < 600);
                    played.push(None)
                }
                Playout::Buffering => {}
            }
            t += 20;
        }
        // target is 2 frames (40 ms): playout starts at tick 2 with seq 1
        assert_eq!(played.first(), Some(&Some(1)));
        assert!(played.contains(&None));
        assert!(!played.contains(&Some(4)));
        assert!(!played.contains(&Some(7)));
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.stats().concealed, 2);
        // duplicates
        assert_eq!(
            jb.push(at(t0, t), SeqNo(12), 12 * 160, PT, &frame(12)),
            PushOutcome::Duplicate
        );
    }

    #[test]
    fn plc_fades_to_silence() {
        let mut plc = Plc::default();
        plc.good(&[8000; 160]);
        let mut a = [0i16; 160];
        plc.conceal(&mut a);
        let mut b = [0i16; 160];
        plc.conceal(&mut b);
        let mut c = [1i16; 160];
        plc.conceal(&mut c);
        assert!(a[0] == 8000 && a[159] > 3900);
        assert!(b[0] <= 4000 && b[159] < 100);
        assert!(c.iter().all(|&x| x == 0));
    }

    #[test]
    fn target_adapts_to_jitter() {
        let t0 = crate::testutil::t0();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert_eq!(jb.target_frames(), 2);
        // packets every 20 ms of media but arrivals alternate ±30 ms around nominal
        for s in 0u64..200 {
            let jitter_ms = if s % 2 == 0 { 0 } else { 60 };
            jb.push(
                at(t0, s * 20 + jitter_ms),
                SeqNo(s + 1),
                s as u32 * 160,
                PT,
                &frame(s + 1),
            );
            let _ = jb.pop(at(t0, s * 20 + jitter_ms));
        }
        let high = jb.target_frames();
        assert!(high > 4, "target {high}");
        assert!(high <= 10, "clamped to 200 ms, got {high}");
        // then a quiet network: the target comes back down
        for s in 200u64..600 {
            jb.push(
                at(t0, s * 20 + 60),
                SeqNo(s + 1),
                s as u32 * 160,
                PT,
                &frame(s + 1),
            );
            let _ = jb.pop(at(t0, s * 20 + 60));
        }
        assert!(
            jb.target_frames() < high,
            "{} !< {high}",
            jb.target_frames()
        );
        assert!(
            jb.len() <= jb.target_frames() + SHRINK_SLACK + 1,
            "shrunk to target: {}",
            jb.len()
        );
    }

    #[test]
    fn big_jump_resyncs() {
        let t0 = crate::testutil::t0();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for s in 1u64..=3 {
            jb.push(at(t0, s * 20), SeqNo(s), 0, PT, &frame(s));
        }
        assert_eq!(
            jb.push(at(t0, 80), SeqNo(5000), 0, PT, &frame(5000)),
            PushOutcome::Resync
        );
        assert_eq!(jb.len(), 1);
        assert_eq!(
            jb.push(at(t0, 80), SeqNo(1), 0, PT, &[0; 481]),
            PushOutcome::TooLarge
        );
        // a sender that jumps backwards is resynchronised after LATE_RESYNC late packets
        for s in 5000u64..5010 {
            jb.push(at(t0, 100), SeqNo(s), 0, PT, &frame(s));
            let _ = jb.pop(at(t0, 100));
        }
        let mut outcomes = Vec::new();
        for s in 100u64..100 + u64::from(LATE_RESYNC) {
            outcomes.push(jb.push(at(t0, 300), SeqNo(s), 0, PT, &frame(s)));
        }
        assert!(
            outcomes[..outcomes.len() - 1]
                .iter()
                .all(|o| *o == PushOutcome::Late)
        );
        assert_eq!(outcomes.last(), Some(&PushOutcome::Resync));
    }
}
