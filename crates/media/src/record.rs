//! [`CallRecorder`]: a call leg recorded in stereo, sans-IO, with DTMF masking.
//!
//! * **Left** = what the caller sent: each accepted audio packet is decoded and placed by its
//!   RTP timestamp (reordering-safe; a lost packet leaves silence, never concealment).
//! * **Right** = what the engine sent to the caller: every outgoing RTP packet is tapped where
//!   [`crate::call::MediaSession::poll_rtp`] builds it (prompts, echo, hold audio, and any
//!   audio a bridge feeds into the leg's outgoing path). An RFC 4733 event packet we send is
//!   silence.
//!
//! Both channels share one 8 kHz timeline, clocked by the outgoing stream: every 20 ms tick
//! advances it by one frame. The caller's stream is anchored to it when its first packet
//! arrives (and re-anchored on a new SSRC, a timestamp jump, or when its clock drifts so far
//! that its packets keep arriving behind the window).
//!
//! **DTMF masking** (when [`RecordConfig::mask_dtmf`]): the audio of a key press is replaced by
//! silence on both channels, with [`RecordConfig::guard`] either side:
//! * RFC 4733 events by their RTP timestamp and duration (each event packet extends the span);
//! * in-band tones: every 10 ms block of either channel is tested for a dual tone (one DTMF
//!   row and one column frequency carrying most of the block's energy, Goertzel at the exact
//!   frequencies); two such blocks in a row are masked (a digit lasts ≥ 40 ms, a lone block is
//!   speech); a detected in-band digit also masks the last [`LOOKBACK`] of audio;
//! * SIP INFO digits (no timestamp): the [`LOOKBACK`] before the INFO and its duration after.
//!
//! Memory is bounded: audio is held only until it can no longer change (a late packet, a mask
//! arriving after its audio), then handed out as chunks of interleaved 16-bit PCM
//! ([`CallRecorder::poll_chunk`], [`CHUNK_FRAMES`] frames each) for the driver to write to a
//! file off its packet path. The recording stops growing at [`RecordConfig::max_duration`].

use std::collections::VecDeque;
use std::time::Duration;

use crate::Ssrc;
use crate::dtmf::inband::{COL_FREQS, DBM0_REF_AMPLITUDE, ROW_FREQS};
use crate::dtmf::{DtmfEvent, DtmfSource};
use crate::g711::SAMPLE_RATE;

/// Frames (one sample per channel) per chunk handed out: 250 ms.
pub const CHUNK_FRAMES: usize = 2000;
/// How long audio is held before it is final: a caller's packet later than this (relative to
/// the outgoing clock) is dropped, and masks may reach this far back.
pub const SETTLE: Duration = Duration::from_millis(300);
/// How far back an INFO or in-band digit masks (at most what is still held).
pub const LOOKBACK: Duration = Duration::from_millis(300);
/// How far ahead of the outgoing clock a caller's packet may be placed before re-anchoring.
pub const MAX_AHEAD: Duration = Duration::from_millis(500);
/// Default silence added either side of a masked digit.
pub const DEFAULT_GUARD: Duration = Duration::from_millis(40);
/// In-band gate: block length (10 ms).
pub const GATE_BLOCK: usize = 80;
/// In-band gate: share of a block's energy the two DTMF tones must carry.
pub const GATE_ENERGY_RATIO: f32 = 0.7;
/// In-band gate: minimum level of each tone, dBm0 (6 dB below the detector's −30 dBm0).
pub const GATE_MIN_LEVEL_DBM0: f32 = -36.0;
/// In-band gate: largest level difference between the two tones, dB.
pub const GATE_MAX_TWIST_DB: f32 = 10.0;
/// Consecutive late caller packets after which the caller's stream is re-anchored (drift).
const LATE_RESYNC: u32 = 10;
/// An open (not yet ended) RFC 4733 event masks this much beyond its current duration.
const OPEN_EVENT_EXTRA: Duration = Duration::from_millis(200);
/// Masks kept at most (merged when they overlap; old ones leave with the audio).
const MAX_MASKS: usize = 64;

fn frames(d: Duration) -> u64 {
    u64::try_from(d.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000).unwrap_or(u64::MAX)
}

/// What to record and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordConfig {
    /// Replace key presses by silence.
    pub mask_dtmf: bool,
    /// The recording stops growing after this long ([`CallRecorder::is_full`]).
    pub max_duration: Duration,
    /// Silence added either side of a masked digit.
    pub guard: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            mask_dtmf: true,
            max_duration: Duration::from_secs(4 * 3600),
            guard: DEFAULT_GUARD,
        }
    }
}

/// Totals of a finished recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordingSummary {
    /// Frames recorded (8000 per second).
    pub frames: u64,
    /// Key presses reported while recording with masking on.
    pub masked_digits: u32,
    /// Frames replaced by silence.
    pub masked_frames: u64,
    /// Caller packets dropped because they came too late to place.
    pub late_packets: u64,
}

impl RecordingSummary {
    /// Length of the recording.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.frames.saturating_mul(1_000_000) / u64::from(SAMPLE_RATE))
    }
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: Ssrc,
    ts: u32,
    pos: u64,
}

/// A stereo recording in progress (see the module docs).
#[derive(Debug)]
pub struct CallRecorder {
    cfg: RecordConfig,
    max_frames: u64,
    settle: u64,
    guard: u64,
    /// Frames `[flushed, flushed + buf.len())`, `[left, right]`.
    buf: VecDeque<[i16; 2]>,
    /// Everything before this position has been handed out.
    flushed: u64,
    /// Everything before this position has been through the in-band gate (and is final).
    gated: u64,
    /// The outgoing clock: frames the engine has sent since the start.
    head: u64,
    anchor: Option<Anchor>,
    late_run: u32,
    /// Half-open spans `[start, end)` of frames to silence.
    masks: Vec<(u64, u64)>,
    chunks: VecDeque<Vec<i16>>,
    summary: RecordingSummary,
    gate: Gate,
    /// The last gated block held a dual tone.
    prev_tone: bool,
    /// The RFC 4733 event in progress: its span, extended beyond its current duration until
    /// its end packet makes it exact.
    open_event: Option<OpenEvent>,
    /// The last event that ended (its late packets no longer extend it).
    ended_event: Option<(Ssrc, u32)>,
}

#[derive(Debug, Clone, Copy)]
struct OpenEvent {
    key: (Ssrc, u32),
    start: u64,
    stop: u64,
}

impl CallRecorder {
    /// A recording starting now (position 0 of the timeline is the next outgoing frame).
    pub fn new(cfg: RecordConfig) -> Self {
        Self {
            max_frames: frames(cfg.max_duration),
            settle: frames(SETTLE),
            guard: frames(cfg.guard),
            cfg,
            buf: VecDeque::new(),
            flushed: 0,
            gated: 0,
            head: 0,
            anchor: None,
            late_run: 0,
            masks: Vec::new(),
            chunks: VecDeque::new(),
            summary: RecordingSummary::default(),
            gate: Gate::new(),
            prev_tone: false,
            open_event: None,
            ended_event: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RecordConfig {
        &self.cfg
    }

    /// Frames on the timeline so far.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// The maximum length is reached: nothing more is recorded; finish it.
    pub fn is_full(&self) -> bool {
        self.head >= self.max_frames
    }

    /// Where the caller's timestamp `ts` lies on the timeline (anchoring a new stream).
    fn place(&mut self, ssrc: Ssrc, ts: u32) -> i64 {
        let a = match self.anchor {
            Some(a) if a.ssrc == ssrc => a,
            _ => self.reanchor(ssrc, ts),
        };
        let delta = i64::from(ts.wrapping_sub(a.ts) as i32);
        i64::try_from(a.pos)
            .unwrap_or(i64::MAX)
            .saturating_add(delta)
    }

    fn reanchor(&mut self, ssrc: Ssrc, ts: u32) -> Anchor {
        let a = Anchor {
            ssrc,
            ts,
            pos: self.head,
        };
        self.anchor = Some(a);
        self.late_run = 0;
        a
    }

    /// Decoded audio the caller sent in the packet with RTP timestamp `ts`.
    pub fn caller_audio(&mut self, ssrc: Ssrc, ts: u32, pcm: &[i16]) {
        let mut pos = self.place(ssrc, ts);
        let gated = i64::try_from(self.gated).unwrap_or(i64::MAX);
        let ahead = i64::try_from(self.head.saturating_add(frames(MAX_AHEAD))).unwrap_or(i64::MAX);
        if pos < gated {
            self.summary.late_packets += 1;
            self.late_run += 1;
            if self.late_run < LATE_RESYNC {
                return;
            }
            // The caller's clock runs slow against ours (or jumped back): start over here.
            self.reanchor(ssrc, ts);
            pos = i64::try_from(self.head).unwrap_or(i64::MAX);
        } else if pos > ahead {
            self.reanchor(ssrc, ts);
            pos = i64::try_from(self.head).unwrap_or(i64::MAX);
        } else {
            self.late_run = 0;
        }
        let Ok(pos) = u64::try_from(pos) else { return };
        self.write(pos, 0, pcm);
    }

    /// Audio the engine sent to the caller (one outgoing packet's worth); advances the clock.
    pub fn engine_audio(&mut self, pcm: &[i16]) {
        if self.is_full() {
            return;
        }
        let n = (pcm.len() as u64).min(self.max_frames - self.head);
        self.write(self.head, 1, pcm);
        self.head += n;
        self.pump();
    }

    /// `n` frames of engine silence (a telephone-event packet, nothing to send).
    pub fn engine_silence(&mut self, n: usize) {
        const ZEROS: [i16; crate::g711::MAX_FRAME_SAMPLES] = [0; crate::g711::MAX_FRAME_SAMPLES];
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len());
            self.engine_audio(ZEROS.get(..k).unwrap_or_default());
            left -= k;
        }
    }

    fn write(&mut self, pos: u64, ch: usize, pcm: &[i16]) {
        if pos < self.flushed || pos >= self.max_frames {
            return;
        }
        let end = (pos + pcm.len() as u64).min(self.max_frames);
        let need = usize::try_from(end - self.flushed).unwrap_or(usize::MAX);
        if self.buf.len() < need {
            self.buf.resize(need, [0, 0]);
        }
        let start = usize::try_from(pos - self.flushed).unwrap_or(usize::MAX);
        for (frame, s) in self.buf.range_mut(start..need).zip(pcm) {
            if let Some(x) = frame.get_mut(ch) {
                *x = *s;
            }
        }
    }

    /// One RFC 4733 telephone-event packet from the caller (every packet, not just the end:
    /// each extends the masked span).
    pub fn caller_event(&mut self, ssrc: Ssrc, ts: u32, duration: u16, end: bool) {
        if !self.cfg.mask_dtmf {
            return;
        }
        let pos = self.place(ssrc, ts);
        let Ok(pos) = u64::try_from(pos) else { return };
        let key = (ssrc, ts);
        let (start, stop) = (
            pos.saturating_sub(self.guard),
            pos + u64::from(duration) + self.guard,
        );
        let open = self.open_event.filter(|o| o.key == key);
        if end || self.ended_event == Some(key) {
            // The exact span: the end packet carries the final duration.
            if end {
                self.ended_event = Some(key);
            }
            if open.is_some() {
                self.open_event = None;
            }
            self.mask(open.map_or(start, |o| o.start.min(start)), stop);
            return;
        }
        let stop = stop + frames(OPEN_EVENT_EXTRA);
        match open {
            Some(o) => {
                self.open_event = Some(OpenEvent {
                    key,
                    start: o.start.min(start),
                    stop: o.stop.max(stop),
                });
            }
            None => {
                // A new event: one whose end never came keeps its extended span.
                if let Some(old) = self.open_event.take() {
                    self.mask(old.start, old.stop);
                }
                self.open_event = Some(OpenEvent { key, start, stop });
            }
        }
    }

    /// A key press was reported (de-duplicated across sources): counted, and for INFO and
    /// in-band digits the audio around now is masked (RFC 4733 events mask by timestamp).
    pub fn digit(&mut self, ev: &DtmfEvent) {
        if !self.cfg.mask_dtmf {
            return;
        }
        self.summary.masked_digits += 1;
        let after = match ev.source {
            DtmfSource::Rfc4733 => return,
            DtmfSource::Info => ev.duration.unwrap_or_default(),
            DtmfSource::Inband => Duration::ZERO,
        };
        let start = self.head.saturating_sub(frames(LOOKBACK));
        let stop = self.head + frames(after) + self.guard;
        self.mask(start, stop);
    }

    fn mask(&mut self, start: u64, stop: u64) {
        let start = start.max(self.flushed);
        if stop <= start {
            return;
        }
        if let Some(last) = self.masks.last_mut() {
            if start <= last.1 && stop >= last.0 {
                *last = (last.0.min(start), last.1.max(stop));
                return;
            }
        }
        if self.masks.len() >= MAX_MASKS {
            // Pathological input: widen the last span rather than grow without bound.
            if let Some(last) = self.masks.last_mut() {
                *last = (last.0.min(start), last.1.max(stop));
            }
            return;
        }
        self.masks.push((start, stop));
    }

    fn masked(&self, pos: u64) -> bool {
        self.masks.iter().any(|&(a, b)| pos >= a && pos < b)
            || self
                .open_event
                .is_some_and(|o| pos >= o.start && pos < o.stop)
    }

    /// Gates what has settled, hands out what can no longer change.
    fn pump(&mut self) {
        while self.gated + GATE_BLOCK as u64 + self.settle <= self.head {
            self.gate_block(GATE_BLOCK);
        }
        while self.gated >= self.flushed + CHUNK_FRAMES as u64 + self.guard {
            self.emit(CHUNK_FRAMES);
        }
    }

    fn gate_block(&mut self, len: usize) {
        let at = self.gated;
        self.gated += len as u64;
        if !self.cfg.mask_dtmf {
            return;
        }
        let Ok(off) = usize::try_from(at - self.flushed) else {
            return;
        };
        let tone = [0usize, 1].iter().any(|&ch| {
            self.gate
                .dual_tone(self.buf.range(off..).take(len).map(|f| f[ch]))
        });
        // Two blocks in a row (20 ms; a digit lasts at least 40 ms): one alone is speech.
        if tone && self.prev_tone {
            let from = at.saturating_sub(GATE_BLOCK as u64 + self.guard);
            self.mask(from, at + len as u64 + self.guard);
        }
        self.prev_tone = tone;
    }

    fn emit(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        if n == 0 {
            return;
        }
        let mut out = Vec::with_capacity(n * 2);
        for i in 0..n {
            let pos = self.flushed + i as u64;
            let [l, r] = self.buf.get(i).copied().unwrap_or_default();
            if self.masked(pos) {
                self.summary.masked_frames += 1;
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&[l, r]);
            }
        }
        self.buf.drain(..n);
        self.flushed += n as u64;
        self.summary.frames = self.flushed;
        let flushed = self.flushed;
        self.masks.retain(|&(_, b)| b > flushed);
        self.chunks.push_back(out);
    }

    /// The next chunk of interleaved stereo PCM (left, right, left, ...) to write.
    pub fn poll_chunk(&mut self) -> Option<Vec<i16>> {
        self.chunks.pop_front()
    }

    /// Ends the recording at the current position: the chunks still held (interleaved, in
    /// order, concatenated) and the totals.
    pub fn finish(mut self) -> (Vec<i16>, RecordingSummary) {
        while self.gated < self.head {
            let len = usize::try_from(self.head - self.gated)
                .unwrap_or(GATE_BLOCK)
                .min(GATE_BLOCK);
            self.gate_block(len);
        }
        let held = usize::try_from(self.head - self.flushed).unwrap_or(0);
        self.buf.truncate(held);
        self.emit(held);
        let mut out = Vec::new();
        for c in self.chunks.drain(..) {
            out.extend_from_slice(&c);
        }
        (out, self.summary)
    }
}

/// The in-band gate: Goertzel at the eight DTMF frequencies over one block.
#[derive(Debug)]
struct Gate {
    /// `2·cos(ω)` per frequency (rows then columns).
    coeff: [f32; 8],
    min_tone_energy: f32,
    max_twist: f32,
}

impl Gate {
    fn new() -> Self {
        let mut coeff = [0f32; 8];
        for (c, f) in coeff
            .iter_mut()
            .zip(ROW_FREQS.iter().chain(COL_FREQS.iter()))
        {
            let w = 2.0 * std::f64::consts::PI * f64::from(*f) / f64::from(SAMPLE_RATE);
            *c = (2.0 * w.cos()) as f32;
        }
        let amp = DBM0_REF_AMPLITUDE * 10f32.powf(GATE_MIN_LEVEL_DBM0 / 20.0);
        Self {
            coeff,
            // a sine of amplitude A carries A²·N/2 over N samples
            min_tone_energy: amp * amp * GATE_BLOCK as f32 / 2.0,
            max_twist: 10f32.powf(GATE_MAX_TWIST_DB / 10.0),
        }
    }

    /// Whether one row and one column tone carry most of the block's energy.
    fn dual_tone(&self, samples: impl Iterator<Item = i16>) -> bool {
        let mut s1 = [0f32; 8];
        let mut s2 = [0f32; 8];
        let mut energy = 0f32;
        let mut n = 0usize;
        let mut block = [0f32; GATE_BLOCK];
        for (d, x) in block.iter_mut().zip(samples) {
            *d = f32::from(x);
            energy += *d * *d;
            n += 1;
        }
        // Quieter than one tone at the minimum level: no digit (silence costs no filters).
        if n < GATE_BLOCK / 2 || energy < self.min_tone_energy * n as f32 / GATE_BLOCK as f32 {
            return false;
        }
        for &x in block.get(..n).unwrap_or_default() {
            for k in 0..8 {
                let s = x + self.coeff[k] * s1[k] - s2[k];
                s2[k] = s1[k];
                s1[k] = s;
            }
        }
        // tone energy estimate: 2·|X|²/N
        let mut tone = [0f32; 8];
        for k in 0..8 {
            let p = s1[k] * s1[k] + s2[k] * s2[k] - self.coeff[k] * s1[k] * s2[k];
            tone[k] = 2.0 * p.max(0.0) / n as f32;
        }
        let best = |t: &[f32]| t.iter().copied().fold(0f32, f32::max);
        let row = best(tone.get(..4).unwrap_or_default());
        let col = best(tone.get(4..).unwrap_or_default());
        let min = self.min_tone_energy * n as f32 / GATE_BLOCK as f32;
        row >= min
            && col >= min
            && row.max(col) <= row.min(col) * self.max_twist
            && row + col >= GATE_ENERGY_RATIO * energy
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dtmf::Digit;
    use crate::dtmf::inband::dtmf_tone;
    use crate::testutil::t0;

    const S: Ssrc = Ssrc(7);

    fn sine(freq: f64, amp: f64, n: usize, phase0: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + phase0) as f64 / 8000.0;
                (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    /// Goertzel power share of `freq` in `x`.
    fn power_at(x: &[i16], freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0f64, 0f64);
        for &v in x {
            let s = f64::from(v) + c * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let p = s1 * s1 + s2 * s2 - c * s1 * s2;
        2.0 * p / x.len().max(1) as f64
    }

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
    }

    fn split(pcm: &[i16]) -> (Vec<i16>, Vec<i16>) {
        (
            pcm.iter().step_by(2).copied().collect(),
            pcm.iter().skip(1).step_by(2).copied().collect(),
        )
    }

    fn run_all(rec: &mut CallRecorder) -> Vec<i16> {
        let mut out = Vec::new();
        while let Some(c) = rec.poll_chunk() {
            out.extend(c);
        }
        out
    }

    fn finish(mut rec: CallRecorder) -> (Vec<i16>, Vec<i16>, RecordingSummary) {
        let mut all = run_all(&mut rec);
        let (rest, sum) = rec.finish();
        all.extend(rest);
        let (l, r) = split(&all);
        (l, r, sum)
    }

    /// Does any 10 ms block of `x` contain both tones of a DTMF digit above −40 dBm0?
    fn has_dtmf(x: &[i16]) -> bool {
        x.chunks(80).any(|b| {
            let row = ROW_FREQS
                .iter()
                .map(|&f| power_at(b, f64::from(f)))
                .fold(0.0, f64::max);
            let col = COL_FREQS
                .iter()
                .map(|&f| power_at(b, f64::from(f)))
                .fold(0.0, f64::max);
            let min = (22710.0f64 * 0.01).powi(2) / 2.0 * 80.0;
            row > min && col > min && row + col > 0.5 * energy(b)
        })
    }

    #[test]
    fn both_channels_on_one_timeline_with_reordering_and_loss() {
        let mut rec = CallRecorder::new(RecordConfig {
            mask_dtmf: false,
            ..RecordConfig::default()
        });
        let caller = sine(440.0, 8000.0, 8000, 0); // 1 s
        let engine = sine(1000.0, 6000.0, 8000, 0);
        // 50 frames; the caller's packets arrive with a swap every 5 and #17 lost.
        let mut order: Vec<usize> = (0..50).collect();
        for i in (0..45).step_by(5) {
            order.swap(i + 1, i + 2);
        }
        let base_ts = 4_294_960_000u32; // wraps during the call
        for (tick, &i) in order.iter().enumerate() {
            if i != 17 {
                let ts = base_ts.wrapping_add(i as u32 * 160);
                rec.caller_audio(S, ts, &caller[i * 160..(i + 1) * 160]);
            }
            rec.engine_audio(&engine[tick * 160..(tick + 1) * 160]);
        }
        let (l, r, sum) = finish(rec);
        assert_eq!(sum.frames, 8000);
        assert_eq!(l.len(), 8000);
        assert_eq!(r, engine, "right = exactly what was sent");
        for i in 0..50 {
            let frame = &l[i * 160..(i + 1) * 160];
            if i == 17 {
                assert!(frame.iter().all(|&s| s == 0), "a lost packet is silence");
            } else {
                assert_eq!(frame, &caller[i * 160..(i + 1) * 160], "frame {i} in place");
            }
        }
        assert_eq!(sum.late_packets, 0);
        assert_eq!(sum.masked_frames, 0);
    }

    #[test]
    fn chunks_come_out_while_recording_and_memory_stays_bounded() {
        let mut rec = CallRecorder::new(RecordConfig::default());
        let tone = sine(1000.0, 5000.0, 160, 0);
        let mut total = 0;
        for i in 0..3000u32 {
            // 60 s
            rec.caller_audio(S, i * 160, &tone);
            rec.engine_audio(&tone);
            while let Some(c) = rec.poll_chunk() {
                assert_eq!(c.len(), CHUNK_FRAMES * 2);
                total += c.len() / 2;
            }
            assert!(
                rec.buf.len() <= CHUNK_FRAMES + frames(SETTLE + MAX_AHEAD) as usize + 400,
                "held {} frames",
                rec.buf.len()
            );
        }
        let (rest, sum) = rec.finish();
        assert_eq!(total + rest.len() / 2, 480_000);
        assert_eq!(sum.frames, 480_000);
    }

    #[test]
    fn max_duration_caps_the_recording() {
        let mut rec = CallRecorder::new(RecordConfig {
            max_duration: Duration::from_millis(500),
            ..RecordConfig::default()
        });
        let f = sine(500.0, 3000.0, 160, 0);
        for i in 0..100u32 {
            rec.caller_audio(S, i * 160, &f);
            rec.engine_audio(&f);
        }
        assert!(rec.is_full());
        let (l, r, sum) = finish(rec);
        assert_eq!((l.len(), r.len(), sum.frames), (4000, 4000, 4000));
    }

    #[test]
    fn caller_stream_starting_late_and_new_ssrc_are_anchored_to_the_clock() {
        let mut rec = CallRecorder::new(RecordConfig {
            mask_dtmf: false,
            ..RecordConfig::default()
        });
        let silence = [0i16; 160];
        let a = [1000i16; 160];
        let b = [2000i16; 160];
        for tick in 0..40u32 {
            if (10..20).contains(&tick) {
                rec.caller_audio(S, 50_000 + (tick - 10) * 160, &a);
            }
            if tick >= 25 {
                // new stream, unrelated timestamps
                rec.caller_audio(Ssrc(99), 9_000_000 + (tick - 25) * 160, &b);
            }
            rec.engine_audio(&silence);
        }
        let (l, _, _) = finish(rec);
        assert!(l[..1600].iter().all(|&s| s == 0));
        assert!(l[1600..3200].iter().all(|&s| s == 1000));
        assert!(l[3200..4000].iter().all(|&s| s == 0));
        assert!(l[4000..].iter().all(|&s| s == 2000));
    }

    #[test]
    fn drifting_caller_clock_is_reanchored_not_silenced() {
        let mut rec = CallRecorder::new(RecordConfig {
            mask_dtmf: false,
            ..RecordConfig::default()
        });
        let a = [1000i16; 160];
        let silence = [0i16; 160];
        // The caller's timestamps step 1 s back once (a broken sender); after a few late
        // packets we follow it.
        for tick in 0..200u32 {
            let ts = if tick < 100 {
                tick * 160
            } else {
                (tick - 50) * 160
            };
            rec.caller_audio(S, ts, &a);
            rec.engine_audio(&silence);
        }
        let (l, _, sum) = finish(rec);
        assert_eq!(u64::from(LATE_RESYNC), sum.late_packets);
        let silent = l.chunks(160).filter(|f| f.iter().all(|&s| s == 0)).count();
        assert!(silent <= LATE_RESYNC as usize + 1, "{silent} silent frames");
    }

    #[test]
    fn inband_dtmf_is_masked_on_both_channels_and_the_rest_kept() {
        for mask in [true, false] {
            let mut rec = CallRecorder::new(RecordConfig {
                mask_dtmf: mask,
                ..RecordConfig::default()
            });
            // caller: 1 s of 300 Hz, keys "4111" (70 ms on, 80 ms off), 1 s of 300 Hz
            let mut caller = sine(300.0, 6000.0, 8000, 0);
            for d in "4111".chars() {
                caller.extend(dtmf_tone(Digit::from_char(d).unwrap(), 560, 7000.0));
                caller.extend(std::iter::repeat_n(0i16, 640));
            }
            let key_span = (8000, caller.len());
            caller.extend(sine(300.0, 6000.0, 8000, 0));
            caller.truncate(caller.len() / 160 * 160);
            let engine = sine(1800.0, 5000.0, caller.len(), 0);
            for (i, f) in caller.chunks(160).enumerate() {
                rec.caller_audio(S, i as u32 * 160, f);
                rec.engine_audio(&engine[i * 160..(i + 1) * 160]);
            }
            let (l, r, sum) = finish(rec);
            assert_eq!(l.len(), caller.len());
            assert_eq!(has_dtmf(&l), !mask, "mask {mask}");
            if mask {
                // the keys' span (plus guards) is silent on both channels, the rest intact
                let g = 320;
                for ch in [&l, &r] {
                    assert!(
                        ch[key_span.0..key_span.1 - 640]
                            .chunks(80)
                            .filter(|b| b.iter().all(|&s| s == 0))
                            .count()
                            >= 4 * 7,
                        "each 70 ms tone silenced"
                    );
                }
                assert_eq!(&l[..key_span.0 - g], &caller[..key_span.0 - g]);
                assert_eq!(&l[key_span.1 + g..], &caller[key_span.1 + g..]);
                assert_eq!(&r[..key_span.0 - g], &engine[..key_span.0 - g]);
                assert!(sum.masked_frames >= 4 * 560);
                assert!(sum.masked_frames <= 4 * (560 + 2 * 320 + 160));
            } else {
                assert_eq!(l, caller);
                assert_eq!(r, engine);
            }
        }
    }

    #[test]
    fn rfc4733_events_mask_by_timestamp_even_reordered() {
        let mut rec = CallRecorder::new(RecordConfig::default());
        // The phone keeps sending audio (a 300 Hz tone stands in for speech, and an in-band
        // leak would be caught by the gate anyway) while an event covers ts 8000..8800.
        let audio = sine(300.0, 6000.0, 16_000, 0);
        for i in 0..100u32 {
            let ts = i * 160;
            if (8000..8800).contains(&ts) {
                // event packets every 20 ms, the last three are end packets; one arrives late
                let dur = (ts - 8000 + 160) as u16;
                if ts != 8320 {
                    rec.caller_event(S, 8000, dur, false);
                }
            } else {
                rec.caller_audio(S, ts, &audio[ts as usize..ts as usize + 160]);
            }
            if ts == 8800 {
                rec.caller_event(S, 8000, 800, true);
                rec.caller_event(S, 8000, 320, false); // the late one
            }
            rec.engine_audio(&[500; 160]);
        }
        rec.digit(&DtmfEvent {
            digit: Digit::from_char('5').unwrap(),
            source: DtmfSource::Rfc4733,
            at: t0(),
            duration: Some(Duration::from_millis(100)),
            volume: None,
        });
        let (l, r, sum) = finish(rec);
        assert_eq!(sum.masked_digits, 1);
        let g = 320;
        assert!(l[8000 - g..8800 + g].iter().all(|&s| s == 0));
        assert!(r[8000 - g..8800 + g].iter().all(|&s| s == 0));
        assert!(r[..8000 - g].iter().all(|&s| s == 500));
        // exact once the end packet came: nothing masked beyond the event and its guard,
        // even with a late packet of the event arriving after its end
        assert!(r[8800 + g..].iter().all(|&s| s == 500));
        assert_eq!(&l[..8000 - g], &audio[..8000 - g]);
        assert_eq!(&l[8800 + g..], &audio[8800 + g..]);
        assert_eq!(sum.masked_frames, 800 + 2 * g as u64);
    }

    #[test]
    fn an_event_whose_end_never_came_keeps_its_extended_span() {
        let mut rec = CallRecorder::new(RecordConfig::default());
        for i in 0..100u32 {
            let ts = i * 160;
            if (4000..4800).contains(&ts) {
                rec.caller_event(S, 4000, (ts - 4000 + 160) as u16, false);
            }
            if ts == 8000 {
                // the next key: the first event's span stays extended
                rec.caller_event(S, 8000, 160, true);
            }
            rec.caller_audio(S, ts, &[900; 160]);
            rec.engine_audio(&[900; 160]);
        }
        let (l, _, sum) = finish(rec);
        let (g, extra) = (320, frames(OPEN_EVENT_EXTRA) as usize);
        assert!(l[4000 - g..4800 + g + extra].iter().all(|&s| s == 0));
        assert!(l[4800 + g + extra..8000 - g].iter().all(|&s| s == 900));
        assert_eq!(
            sum.masked_frames as usize,
            (800 + 2 * g + extra) + (160 + 2 * g)
        );
    }

    #[test]
    fn info_digit_masks_the_recent_past_and_its_duration() {
        let mut rec = CallRecorder::new(RecordConfig::default());
        let audio = [700i16; 160];
        for i in 0..100u32 {
            rec.caller_audio(S, i * 160, &audio);
            rec.engine_audio(&audio);
            if i == 49 {
                rec.digit(&DtmfEvent {
                    digit: Digit::from_char('#').unwrap(),
                    source: DtmfSource::Info,
                    at: t0(),
                    duration: Some(Duration::from_millis(100)),
                    volume: None,
                });
            }
        }
        let (l, r, sum) = finish(rec);
        assert_eq!(sum.masked_digits, 1);
        let head = 50 * 160;
        let (a, b) = (head - frames(LOOKBACK) as usize, head + 800 + 320);
        assert!(l[a..b].iter().all(|&s| s == 0) && r[a..b].iter().all(|&s| s == 0));
        assert!(l[..a].iter().all(|&s| s == 700) && l[b..].iter().all(|&s| s == 700));
    }

    #[test]
    fn the_gate_leaves_speech_prompts_almost_untouched() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts");
        let (lib, _) = crate::prompt::PromptLibrary::load_dir(&dir, &["welcome"]).unwrap();
        let mut pcm = Vec::new();
        for name in lib.names() {
            pcm.extend(
                crate::g711::G711::Pcmu
                    .decode(lib.get(name).unwrap().encoded(crate::g711::G711::Pcmu)),
            );
        }
        assert!(pcm.len() > 8000 * 10);
        let mut rec = CallRecorder::new(RecordConfig::default());
        for (i, f) in pcm.chunks(160).enumerate() {
            rec.caller_audio(S, i as u32 * 160, f);
            rec.engine_audio(f);
        }
        let (_, _, sum) = finish(rec);
        assert!(
            sum.masked_frames * 200 <= sum.frames,
            "masked {} of {} frames of speech",
            sum.masked_frames,
            sum.frames
        );
    }

    #[test]
    fn dtmf_through_pcmu_at_low_level_is_still_gated() {
        let g = Gate::new();
        for d in Digit::all() {
            // −25 dBm0 per tone, PCMU round trip, every 10 ms block inside the tone
            let amp = 22710.0 * 10f32.powf(-25.0 / 20.0);
            let tone = dtmf_tone(d, 800, amp);
            let wire = crate::g711::G711::Pcmu.decode(&crate::g711::G711::Pcmu.encode(&tone));
            for b in wire.chunks(GATE_BLOCK) {
                assert!(g.dual_tone(b.iter().copied()), "digit {d}");
            }
        }
        // off-nominal by the ±1.5 % a detector must accept
        for k in [0.985, 1.015] {
            let a = sine(f64::from(ROW_FREQS[2]) * k, 6000.0, 800, 0);
            let b = sine(f64::from(COL_FREQS[1]) * k, 6000.0, 800, 0);
            let mix: Vec<i16> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
            assert!(
                mix.chunks(GATE_BLOCK)
                    .all(|c| g.dual_tone(c.iter().copied())),
                "{k}"
            );
        }
        assert!(
            !g.dual_tone(sine(697.0, 8000.0, 80, 0).into_iter()),
            "one tone is not a digit"
        );
        assert!(!g.dual_tone([0i16; 80].into_iter()));
    }
}
