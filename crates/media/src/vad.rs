//! Endpointing (voice activity detection) on the caller's decoded 8 kHz audio, and the frame
//! measurements it shares with barge-in detection ([`crate::barge`]).
//!
//! [`Endpointer`] is fed one frame per packetisation interval (20 ms = 160 samples) with the
//! frame's position on the caller's playout clock (samples since some origin, RTP time) and
//! reports [`VadEvent`]s: speech started (at its onset, not at the moment it was confirmed),
//! speech ended after a trailing silence or at the maximum utterance length, and no input. It
//! keeps the utterance's samples, with a pre-roll before the onset, for the recogniser
//! ([`Endpointer::take_utterance`]). Memory is bounded: the buffer is sized once from the
//! configuration (pre-roll + maximum length + trailing silence).
//!
//! **Decision per frame** (see docs/speech-in-calls.md for the figures):
//! * level = mean square of the frame relative to full scale, in dB (`dBFS`; a full-scale
//!   square wave is 0 dB, a full-scale sine −3 dB);
//! * an adaptive noise floor follows the level down quickly (30 % of the gap per frame) and up
//!   slowly ([`VadConfig::floor_rise_db`] per frame, 2.5 dB/s by default), and only while no
//!   speech is in progress, so stationary noise of any level is learnt and long speech is not;
//! * a frame is *speech* when its level is [`VadConfig::start_db`] above the floor, above the
//!   absolute minimum [`VadConfig::min_db`], above the echo estimate (when the caller of
//!   [`Endpointer::push_with_echo`] gives one) and not a DTMF dual tone ([`FrameStats::tonal`]);
//!   once speech is in progress the threshold drops to [`VadConfig::continue_db`] (hysteresis);
//! * speech starts after [`VadConfig::start_frames`] consecutive speech frames (60 ms by
//!   default: one click or a key-press burst is not speech), ends after
//!   [`VadConfig::end_silence`] without speech frames.

use std::collections::VecDeque;
use std::time::Duration;

use crate::dtmf::inband::{COL_FREQS, ROW_FREQS};
use crate::g711::SAMPLE_RATE;

/// Level reported for digital silence, dBFS.
pub const SILENCE_DB: f32 = -100.0;

/// Samples in `d` at 8 kHz.
pub fn samples_of(d: Duration) -> u64 {
    (d.as_micros() as u64).saturating_mul(u64::from(SAMPLE_RATE)) / 1_000_000
}

/// Milliseconds of `samples` at 8 kHz.
pub fn ms_of(samples: u64) -> u64 {
    samples / (u64::from(SAMPLE_RATE) / 1000)
}

/// What one frame measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameStats {
    /// Mean-square level, dBFS ([`SILENCE_DB`] for digital silence).
    pub db: f32,
    /// ≥ 75 % of the frame's energy sits in one DTMF row and one column frequency: a key tone,
    /// not speech.
    pub tonal: bool,
}

/// Mean square of `pcm` relative to full scale (0..=1).
pub fn power(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return 0.0;
    }
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / pcm.len() as f64 / (32768.0 * 32768.0)) as f32
}

/// `power` in dB, floored at [`SILENCE_DB`].
pub fn to_db(power: f32) -> f32 {
    if power <= 1e-10 {
        SILENCE_DB
    } else {
        (10.0 * power.log10()).max(SILENCE_DB)
    }
}

/// Energies of `pcm` in the eight DTMF frequencies (rows, then columns), by eight Goertzel
/// filters run side by side in one pass: `2/N·|X(f)|²` (equals `Σx²` for a pure tone at f).
fn dtmf_energies(pcm: &[i16]) -> [f32; 8] {
    let mut coeff = [0f32; 8];
    for (c, f) in coeff
        .iter_mut()
        .zip(ROW_FREQS.iter().chain(COL_FREQS.iter()))
    {
        *c = 2.0 * (2.0 * std::f32::consts::PI * f / SAMPLE_RATE as f32).cos();
    }
    let mut s1 = [0f32; 8];
    let mut s2 = [0f32; 8];
    for &x in pcm {
        let x = f32::from(x);
        for ((a, b), c) in s1.iter_mut().zip(s2.iter_mut()).zip(coeff.iter()) {
            let s = x + c * *a - *b;
            *b = *a;
            *a = s;
        }
    }
    let n = pcm.len().max(1) as f32;
    let mut out = [0f32; 8];
    for (((o, a), b), c) in out.iter_mut().zip(s1).zip(s2).zip(coeff) {
        *o = 2.0 * (a * a + b * b - c * a * b).max(0.0) / n;
    }
    out
}

/// Whether the frame is a DTMF dual tone (≥ 75 % of its energy in the strongest row plus the
/// strongest column frequency).
pub fn is_dtmf_like(pcm: &[i16]) -> bool {
    let total: f32 = pcm.iter().map(|&s| f32::from(s) * f32::from(s)).sum();
    if total <= 0.0 {
        return false;
    }
    let e = dtmf_energies(pcm);
    let (rows, cols) = e.split_at(4);
    let best = |x: &[f32]| x.iter().copied().fold(0.0f32, f32::max);
    (best(rows) + best(cols)) / total >= 0.75
}

impl FrameStats {
    /// Measure one frame.
    pub fn of(pcm: &[i16]) -> FrameStats {
        let db = to_db(power(pcm));
        FrameStats {
            db,
            // quiet frames cannot carry a key press worth excluding; skip the 8 Goertzels
            tonal: db > -50.0 && is_dtmf_like(pcm),
        }
    }
}

/// An adaptive noise floor: follows the level down fast and up slowly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseFloor {
    db: Option<f32>,
    rise_db: f32,
}

impl NoiseFloor {
    /// A floor rising at most `rise_db` per frame.
    pub fn new(rise_db: f32) -> Self {
        NoiseFloor { db: None, rise_db }
    }

    /// The current floor (the first frame's level until updated; [`SILENCE_DB`] before).
    pub fn db(&self) -> f32 {
        self.db.unwrap_or(SILENCE_DB)
    }

    /// Learn from one frame that is not speech.
    pub fn update(&mut self, level_db: f32) {
        let floor = match self.db {
            None => level_db,
            Some(f) if level_db < f => f + 0.3 * (level_db - f),
            Some(f) => f + self.rise_db.min(level_db - f),
        };
        self.db = Some(floor.max(SILENCE_DB));
    }
}

/// Endpointer settings. Out-of-range values are clamped by [`Endpointer::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Silence after speech that ends the utterance (default 800 ms; 200 ms..=5 s).
    pub end_silence: Duration,
    /// Longest utterance (default 15 s; 1..=60 s): the utterance is ended there.
    pub max_utterance: Duration,
    /// No speech this long after [`Endpointer::arm_no_input`] → [`VadEvent::NoInput`]
    /// (default 5 s).
    pub no_input: Duration,
    /// Audio kept before the onset (default 300 ms; at most 1 s).
    pub pre_roll: Duration,
    /// Trailing silence kept at the end of the utterance (default 200 ms).
    pub tail: Duration,
    /// Consecutive speech frames that start an utterance (default 3 = 60 ms).
    pub start_frames: u32,
    /// Speech when this far above the noise floor, dB (default 9).
    pub start_db: f32,
    /// Speech continues while this far above the noise floor, dB (default 6).
    pub continue_db: f32,
    /// Never speech below this level, dBFS (default −50).
    pub min_db: f32,
    /// Speech must also be this far above the echo estimate, dB (default 6).
    pub echo_margin_db: f32,
    /// Noise-floor rise per frame, dB (default 0.05 = 2.5 dB/s at 20 ms).
    pub floor_rise_db: f32,
    /// Silence inside an utterance after which [`VadEvent::SpeechPaused`] is reported (the
    /// utterance so far may then be recognised speculatively); zero (the default) = off. Off
    /// as well when not shorter than [`VadConfig::end_silence`].
    pub speculate: Duration,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            end_silence: Duration::from_millis(800),
            max_utterance: Duration::from_secs(15),
            no_input: Duration::from_secs(5),
            pre_roll: Duration::from_millis(300),
            tail: Duration::from_millis(200),
            start_frames: 3,
            start_db: 9.0,
            continue_db: 6.0,
            min_db: -50.0,
            echo_margin_db: 6.0,
            floor_rise_db: 0.05,
            speculate: Duration::ZERO,
        }
    }
}

impl VadConfig {
    fn clamped(mut self) -> Self {
        let clamp = |d: Duration, lo: u64, hi: u64| {
            d.clamp(Duration::from_millis(lo), Duration::from_millis(hi))
        };
        self.end_silence = clamp(self.end_silence, 200, 5_000);
        self.max_utterance = clamp(self.max_utterance, 1_000, 60_000);
        self.no_input = clamp(self.no_input, 500, 120_000);
        self.pre_roll = clamp(self.pre_roll, 0, 1_000);
        self.tail = self.tail.min(self.end_silence);
        self.start_frames = self.start_frames.clamp(1, 10);
        if self.speculate >= self.end_silence {
            self.speculate = Duration::ZERO;
        }
        self
    }
}

/// Why an utterance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// [`VadConfig::end_silence`] of silence after speech.
    Silence,
    /// [`VadConfig::max_utterance`] reached.
    MaxLength,
}

/// What the endpointer decided. Positions are samples on the caller's clock (8 kHz).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech started; `at` is the first sample of the first speech frame (the onset).
    SpeechStarted {
        /// Onset position.
        at: u64,
    },
    /// The utterance is complete: fetch it with [`Endpointer::take_utterance`].
    SpeechEnded {
        /// Onset position.
        start: u64,
        /// End of the last speech frame.
        end: u64,
        /// Why it ended.
        reason: EndReason,
        /// Position of the frame that decided it (`end` + trailing silence, or the limit).
        decided_at: u64,
    },
    /// [`VadConfig::speculate`] of silence inside the utterance: it may be over. The audio up
    /// to now is [`Endpointer::utterance_so_far`] (the same samples `take_utterance` gives
    /// if the utterance ends at this pause and `speculate` ≥ [`VadConfig::tail`]).
    SpeechPaused {
        /// Position of the frame that decided the pause.
        at: u64,
        /// End of the last speech frame.
        end: u64,
    },
    /// Speech again after a [`VadEvent::SpeechPaused`]: the utterance goes on.
    SpeechResumed {
        /// Start of the frame with speech.
        at: u64,
    },
    /// No speech within [`VadConfig::no_input`] of arming.
    NoInput {
        /// Position where the timer ran out.
        at: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Listening {
        run: u32,
        onset: u64,
    },
    Speech {
        start: u64,
        last_end: u64,
        silence: u64,
        paused: bool,
    },
    Done,
}

/// The endpointer of one speech turn (see the module docs).
#[derive(Debug)]
pub struct Endpointer {
    cfg: VadConfig,
    floor: NoiseFloor,
    phase: Phase,
    /// Recent audio while listening (pre-roll + the unconfirmed onset frames).
    ring: VecDeque<i16>,
    ring_cap: usize,
    utterance: Vec<i16>,
    utterance_cap: usize,
    no_input_from: Option<u64>,
    last_pos: u64,
}

impl Endpointer {
    /// A new turn with `cfg` (clamped to sane ranges). No-input is not timed until
    /// [`Endpointer::arm_no_input`].
    pub fn new(cfg: VadConfig) -> Self {
        let cfg = cfg.clamped();
        let frames = cfg.start_frames as usize * MAX_FRAME;
        let ring_cap = samples_of(cfg.pre_roll) as usize + frames;
        let utterance_cap = ring_cap
            + samples_of(cfg.max_utterance) as usize
            + samples_of(cfg.end_silence) as usize
            + MAX_FRAME;
        Endpointer {
            floor: NoiseFloor::new(cfg.floor_rise_db),
            phase: Phase::Listening { run: 0, onset: 0 },
            ring: VecDeque::with_capacity(ring_cap),
            ring_cap,
            utterance: Vec::new(),
            utterance_cap,
            no_input_from: None,
            last_pos: 0,
            cfg,
        }
    }

    /// The (clamped) configuration.
    pub fn config(&self) -> &VadConfig {
        &self.cfg
    }

    /// Start the no-input timer at `pos` (typically when the prompt has finished). Arming
    /// again restarts it; it never fires once speech has started.
    pub fn arm_no_input(&mut self, pos: u64) {
        self.no_input_from = Some(pos);
    }

    /// Whether the no-input timer runs.
    pub fn no_input_armed(&self) -> bool {
        self.no_input_from.is_some()
    }

    /// Speech is in progress (started, not yet ended).
    pub fn in_speech(&self) -> bool {
        matches!(self.phase, Phase::Speech { .. })
    }

    /// The turn is over (an utterance ended or no input).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The current noise floor, dBFS.
    pub fn noise_floor_db(&self) -> f32 {
        self.floor.db()
    }

    /// The collected utterance (pre-roll + speech + a short tail); empty before
    /// [`VadEvent::SpeechEnded`] or after it was taken.
    pub fn take_utterance(&mut self) -> Vec<i16> {
        std::mem::take(&mut self.utterance)
    }

    /// A copy of the utterance up to now, cut like [`Endpointer::take_utterance`] cuts it at
    /// the end (trailing silence beyond [`VadConfig::tail`] left out); empty outside speech.
    /// For a speculative recognition at [`VadEvent::SpeechPaused`] (once per pause, off the
    /// per-frame path).
    pub fn utterance_so_far(&self) -> Vec<i16> {
        let Phase::Speech { silence, .. } = self.phase else {
            return Vec::new();
        };
        let drop = silence.saturating_sub(samples_of(self.cfg.tail)) as usize;
        let keep = self.utterance.len().saturating_sub(drop);
        self.utterance.get(..keep).unwrap_or_default().to_vec()
    }

    /// Feed one frame starting at sample position `pos`.
    pub fn push(&mut self, pos: u64, pcm: &[i16]) -> Option<VadEvent> {
        let stats = FrameStats::of(pcm);
        self.push_analyzed(pos, pcm, stats, None)
    }

    /// Feed one frame with the level the engine's own audio is expected to leak back at
    /// (`echo_db`, dBFS, from [`crate::barge::EchoTracker::echo_db`]): speech must exceed it
    /// by [`VadConfig::echo_margin_db`].
    pub fn push_with_echo(&mut self, pos: u64, pcm: &[i16], echo_db: f32) -> Option<VadEvent> {
        let stats = FrameStats::of(pcm);
        self.push_analyzed(pos, pcm, stats, Some(echo_db))
    }

    /// [`Endpointer::push`] with the frame already measured.
    pub fn push_analyzed(
        &mut self,
        pos: u64,
        pcm: &[i16],
        stats: FrameStats,
        echo_db: Option<f32>,
    ) -> Option<VadEvent> {
        let len = pcm.len() as u64;
        let end = pos + len;
        self.last_pos = end;
        let echo_ok = |margin: f32| echo_db.is_none_or(|e| stats.db >= e + margin);
        match self.phase {
            Phase::Done => None,
            Phase::Listening { run, onset } => {
                if self.floor.db.is_none() {
                    // the line's first frame: its level is all we know of the noise
                    self.floor.update(stats.db);
                }
                let speech = !stats.tonal
                    && stats.db >= self.cfg.min_db
                    && stats.db >= self.floor.db() + self.cfg.start_db
                    && echo_ok(self.cfg.echo_margin_db);
                // echo-dominated frames say nothing about the line noise
                if !speech && echo_ok(0.0) && !stats.tonal {
                    self.floor.update(stats.db);
                }
                self.ring_push(pcm);
                if speech {
                    let onset = if run == 0 { pos } else { onset };
                    let run = run + 1;
                    if run >= self.cfg.start_frames {
                        self.begin_utterance(end - onset);
                        self.phase = Phase::Speech {
                            start: onset,
                            last_end: end,
                            silence: 0,
                            paused: false,
                        };
                        return Some(VadEvent::SpeechStarted { at: onset });
                    }
                    self.phase = Phase::Listening { run, onset };
                } else {
                    self.phase = Phase::Listening { run: 0, onset: 0 };
                }
                if let Some(from) = self.no_input_from
                    && end.saturating_sub(from) >= samples_of(self.cfg.no_input)
                {
                    self.phase = Phase::Done;
                    return Some(VadEvent::NoInput { at: end });
                }
                None
            }
            Phase::Speech {
                start,
                last_end,
                silence,
                paused,
            } => {
                let speech = !stats.tonal
                    && stats.db >= self.cfg.min_db
                    && stats.db >= self.floor.db() + self.cfg.continue_db
                    && echo_ok(self.cfg.echo_margin_db);
                let room = self.utterance_cap.saturating_sub(self.utterance.len());
                self.utterance
                    .extend_from_slice(pcm.get(..pcm.len().min(room)).unwrap_or_default());
                let (last_end, silence) = if speech {
                    (end, 0)
                } else {
                    (last_end, silence + len)
                };
                if silence >= samples_of(self.cfg.end_silence) {
                    self.finish_utterance(silence);
                    return Some(VadEvent::SpeechEnded {
                        start,
                        end: last_end,
                        reason: EndReason::Silence,
                        decided_at: end,
                    });
                }
                if end.saturating_sub(start) >= samples_of(self.cfg.max_utterance) {
                    self.finish_utterance(silence);
                    return Some(VadEvent::SpeechEnded {
                        start,
                        end: last_end,
                        reason: EndReason::MaxLength,
                        decided_at: end,
                    });
                }
                let speculate = samples_of(self.cfg.speculate);
                let (paused, event) = if speech && paused {
                    (false, Some(VadEvent::SpeechResumed { at: pos }))
                } else if !speech && !paused && speculate > 0 && silence >= speculate {
                    let ev = VadEvent::SpeechPaused {
                        at: end,
                        end: last_end,
                    };
                    (true, Some(ev))
                } else {
                    (paused, None)
                };
                self.phase = Phase::Speech {
                    start,
                    last_end,
                    silence,
                    paused,
                };
                event
            }
        }
    }

    fn ring_push(&mut self, pcm: &[i16]) {
        for &s in pcm {
            if self.ring.len() >= self.ring_cap {
                self.ring.pop_front();
            }
            self.ring.push_back(s);
        }
    }

    /// Start the utterance with the pre-roll and the `onset_len` samples of the onset frames.
    fn begin_utterance(&mut self, onset_len: u64) {
        let keep = (samples_of(self.cfg.pre_roll) + onset_len) as usize;
        let excess = self.ring.len().saturating_sub(keep);
        self.ring.drain(..excess);
        self.utterance = Vec::with_capacity(self.utterance_cap);
        self.utterance.extend(self.ring.drain(..));
    }

    fn finish_utterance(&mut self, silence: u64) {
        let drop = silence.saturating_sub(samples_of(self.cfg.tail)) as usize;
        let keep = self.utterance.len().saturating_sub(drop);
        self.utterance.truncate(keep);
        self.phase = Phase::Done;
    }
}

/// Largest frame the endpointer expects (60 ms at 8 kHz).
const MAX_FRAME: usize = 480;

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::g711::G711;
    use crate::prompt::Prompt;
    use rand::{Rng, SeedableRng};
    use std::path::{Path, PathBuf};

    /// `text` spoken by espeak-ng, decoded as a caller would send it (8 kHz, through μ-law).
    pub(crate) fn espeak(text: &str) -> Vec<i16> {
        let dir = std::env::temp_dir().join(format!("frontdoor-vad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let name: String = text
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{name}-{n}.wav"));
        let st = std::process::Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "160", "-w"])
            .arg(&path)
            .arg(text)
            .status()
            .unwrap_or_else(|e| {
                panic!("espeak-ng is needed for the VAD tests (apt-get install espeak-ng): {e}")
            });
        assert!(st.success(), "espeak-ng failed for {text:?}");
        let p = Prompt::load(&path).unwrap();
        G711::Pcmu.decode(p.encoded(G711::Pcmu))
    }

    /// prompts/welcome.wav (the engine's own prompt), decoded.
    pub(crate) fn welcome() -> Vec<i16> {
        let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts/welcome.wav");
        let p = Prompt::load(&path).unwrap();
        G711::Pcmu.decode(p.encoded(G711::Pcmu))
    }

    /// Scale `pcm` so its active (non-silent frame) level is `db` dBFS.
    pub(crate) fn at_level(pcm: &[i16], db: f32) -> Vec<i16> {
        let active: Vec<f32> = pcm
            .chunks(160)
            .map(power)
            .filter(|&p| to_db(p) > -50.0)
            .collect();
        let mean = active.iter().sum::<f32>() / active.len().max(1) as f32;
        let gain = 10f32.powf((db - to_db(mean)) / 20.0);
        pcm.iter()
            .map(|&s| (f32::from(s) * gain).clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    /// Gaussian-ish white noise at `db` dBFS (mean square).
    pub(crate) fn noise(n: usize, db: f32, seed: u64) -> Vec<i16> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let rms = 32768.0 * 10f32.powf(db / 20.0);
        (0..n)
            .map(|_| {
                // sum of 4 uniforms: variance 4/12 per unit range
                let u: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
                (u * rms * (3.0f32).sqrt()).clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    pub(crate) fn mix(a: &mut [i16], b: &[i16], at: usize) {
        for (x, y) in a.iter_mut().skip(at).zip(b) {
            *x = (i32::from(*x) + i32::from(*y)).clamp(-32768, 32767) as i16;
        }
    }

    /// DTMF digit tones: `digits` of 100 ms with 100 ms gaps, each tone at `db` dBFS.
    pub(crate) fn dtmf(digits: &[(f32, f32)], db: f32) -> Vec<i16> {
        let amp = 32768.0 * 10f32.powf(db / 20.0) * 2f32.sqrt();
        let mut out = Vec::new();
        for &(lo, hi) in digits {
            for n in 0..800 {
                let t = n as f32 / 8000.0;
                let s = amp
                    * ((2.0 * std::f32::consts::PI * lo * t).sin()
                        + (2.0 * std::f32::consts::PI * hi * t).sin());
                out.push(s.clamp(-32768.0, 32767.0) as i16);
            }
            out.extend(std::iter::repeat_n(0i16, 800));
        }
        out
    }

    fn run(ep: &mut Endpointer, pcm: &[i16]) -> Vec<VadEvent> {
        let mut out = Vec::new();
        for (i, f) in pcm.chunks(160).enumerate() {
            if let Some(e) = ep.push(i as u64 * 160, f) {
                out.push(e);
            }
        }
        out
    }

    /// First 20 ms frame of the clean signal above −40 dBFS: where the speech really starts.
    fn true_onset(pcm: &[i16], offset: usize) -> u64 {
        let i = pcm
            .chunks(160)
            .position(|f| to_db(power(f)) > -40.0)
            .unwrap();
        (offset + i * 160) as u64
    }

    /// Line noise at −60 dBFS with loud noise bursts (the "speech") at −20 dBFS: `(start, len)`
    /// in ms.
    fn bursts(total_ms: usize, spans: &[(usize, usize)]) -> Vec<i16> {
        let mut pcm = noise(total_ms * 8, -60.0, 7);
        for (i, &(at, len)) in spans.iter().enumerate() {
            mix(&mut pcm, &noise(len * 8, -20.0, 100 + i as u64), at * 8);
        }
        pcm
    }

    /// Feeds `pcm` frame by frame; at each `SpeechPaused` takes a copy of the utterance so far.
    fn run_speculating(ep: &mut Endpointer, pcm: &[i16]) -> (Vec<VadEvent>, Vec<Vec<i16>>) {
        let mut events = Vec::new();
        let mut copies = Vec::new();
        for (i, f) in pcm.chunks(160).enumerate() {
            if let Some(e) = ep.push(i as u64 * 160, f) {
                if matches!(e, VadEvent::SpeechPaused { .. }) {
                    copies.push(ep.utterance_so_far());
                }
                events.push(e);
            }
        }
        (events, copies)
    }

    fn speculating(ms: u64) -> VadConfig {
        VadConfig {
            speculate: Duration::from_millis(ms),
            ..VadConfig::default()
        }
    }

    #[test]
    fn a_pause_is_reported_and_speech_after_it_resumes_the_utterance() {
        // speech 1 s, a 400 ms gap (a pause, not the end), speech 600 ms, then silence
        let pcm = bursts(4_000, &[(500, 1_000), (1_900, 600)]);
        let mut ep = Endpointer::new(speculating(200));
        let (events, mut copies) = run_speculating(&mut ep, &pcm);
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                VadEvent::SpeechStarted { .. } => "started",
                VadEvent::SpeechPaused { .. } => "paused",
                VadEvent::SpeechResumed { .. } => "resumed",
                VadEvent::SpeechEnded { .. } => "ended",
                VadEvent::NoInput { .. } => "no_input",
            })
            .collect();
        assert_eq!(kinds, ["started", "paused", "resumed", "paused", "ended"]);
        // the first pause is 200 ms after the first burst's end, the resume at the second
        let VadEvent::SpeechPaused { at, end } = events[1] else {
            unreachable!()
        };
        assert!((1_480 * 8..=1_520 * 8).contains(&end), "end {end}");
        assert_eq!(at - end, 200 * 8, "paused after exactly 200 ms of silence");
        let VadEvent::SpeechResumed { at } = events[2] else {
            unreachable!()
        };
        assert!((1_880 * 8..=1_920 * 8).contains(&at), "resumed at {at}");
        // the copy at the first pause is the first burst only; the one at the last pause is
        // exactly the utterance the end gives (so a speculative result stands for it)
        assert!(copies[0].len() < copies[1].len());
        let last = copies.pop().unwrap();
        assert_eq!(ep.take_utterance(), last);
        assert!(!last.is_empty());
    }

    #[test]
    fn speculation_is_off_by_default_and_when_not_shorter_than_the_end_silence() {
        let pcm = bursts(4_000, &[(500, 1_000), (1_900, 600)]);
        for cfg in [VadConfig::default(), speculating(800), speculating(1_000)] {
            let mut ep = Endpointer::new(cfg);
            let (events, copies) = run_speculating(&mut ep, &pcm);
            assert!(copies.is_empty(), "{cfg:?}: {events:?}");
            assert_eq!(events.len(), 2, "{events:?}");
            assert!(matches!(events[1], VadEvent::SpeechEnded { .. }));
        }
        assert_eq!(
            Endpointer::new(speculating(800)).config().speculate,
            Duration::ZERO
        );
        // outside speech there is nothing so far
        assert!(
            Endpointer::new(speculating(200))
                .utterance_so_far()
                .is_empty()
        );
    }

    #[test]
    fn speech_after_silence_is_endpointed() {
        let speech = at_level(&espeak("I lost my credit card yesterday"), -22.0);
        let mut line = vec![0i16; 8000 + speech.len() + 16000];
        let n = noise(line.len(), -60.0, 1);
        mix(&mut line, &n, 0);
        mix(&mut line, &speech, 8000);
        let onset = true_onset(&speech, 8000);
        let mut ep = Endpointer::new(VadConfig::default());
        ep.arm_no_input(0);
        let evs = run(&mut ep, &line);
        assert_eq!(evs.len(), 2, "{evs:?}");
        let VadEvent::SpeechStarted { at } = evs[0] else {
            panic!("{evs:?}")
        };
        assert!(at.abs_diff(onset) <= 320, "onset {at} vs {onset}");
        let VadEvent::SpeechEnded {
            start,
            end,
            reason,
            decided_at,
        } = evs[1]
        else {
            panic!("{evs:?}")
        };
        assert_eq!(reason, EndReason::Silence);
        assert_eq!(start, at);
        // the speech's last loud frame
        let last = speech
            .chunks(160)
            .rposition(|f| to_db(power(f)) > -40.0)
            .unwrap();
        let true_end = 8000 + (last as u64 + 1) * 160;
        assert!(end.abs_diff(true_end) <= 1600, "end {end} vs {true_end}");
        assert_eq!(decided_at - end, samples_of(Duration::from_millis(800)));
        let utt = ep.take_utterance();
        // pre-roll 300 ms + speech + 200 ms tail, within a frame or two
        let expect = (end - start) as usize + 2400 + 1600;
        assert!(
            utt.len().abs_diff(expect) <= 480,
            "{} vs {expect}",
            utt.len()
        );
        assert!(ep.is_done());
    }

    #[test]
    fn silence_gives_no_input_at_the_timeout() {
        let line = noise(8000 * 8, -65.0, 2);
        let mut ep = Endpointer::new(VadConfig::default());
        ep.arm_no_input(8000);
        let evs = run(&mut ep, &line);
        assert_eq!(
            evs,
            vec![VadEvent::NoInput {
                at: 8000 + 5 * 8000
            }]
        );
        assert!(ep.take_utterance().is_empty());
    }

    #[test]
    fn white_noise_at_any_level_is_not_speech() {
        for (i, db) in [-60.0, -45.0, -35.0, -25.0, -15.0].into_iter().enumerate() {
            let line = noise(8000 * 6, db, 10 + i as u64);
            let mut ep = Endpointer::new(VadConfig::default());
            ep.arm_no_input(0);
            let evs = run(&mut ep, &line);
            assert_eq!(
                evs,
                vec![VadEvent::NoInput { at: 40_000 }],
                "noise at {db} dB"
            );
            assert!(
                (ep.noise_floor_db() - db).abs() < 3.0,
                "floor {}",
                ep.noise_floor_db()
            );
        }
    }

    #[test]
    fn speech_in_noise_is_found_at_20_db_snr_and_at_10() {
        for (noise_db, seed) in [(-45.0, 3), (-35.0, 4)] {
            let speech = at_level(&espeak("check my balance please"), -25.0);
            let mut line = noise(16000 + speech.len() + 16000, noise_db, seed);
            mix(&mut line, &speech, 16000);
            let onset = true_onset(&speech, 16000);
            let mut ep = Endpointer::new(VadConfig::default());
            let evs = run(&mut ep, &line);
            let Some(VadEvent::SpeechStarted { at }) = evs.first().copied() else {
                panic!("noise {noise_db}: {evs:?}")
            };
            assert!(
                at.abs_diff(onset) <= 800,
                "noise {noise_db}: onset {at} vs {onset}"
            );
            assert!(
                matches!(
                    evs.get(1),
                    Some(VadEvent::SpeechEnded {
                        reason: EndReason::Silence,
                        ..
                    })
                ),
                "noise {noise_db}: {evs:?}"
            );
        }
    }

    #[test]
    fn dtmf_tones_are_not_speech() {
        let keys = [
            (697.0, 1209.0),
            (770.0, 1336.0),
            (852.0, 1477.0),
            (941.0, 1336.0),
            (697.0, 1633.0),
        ];
        for db in [-10.0, -20.0, -30.0] {
            let mut line = vec![0i16; 4000];
            line.extend(dtmf(&keys, db));
            line.extend(vec![0i16; 4000]);
            let n = noise(line.len(), -60.0, 5);
            mix(&mut line, &n, 0);
            let mut ep = Endpointer::new(VadConfig::default());
            let evs = run(&mut ep, &line);
            assert!(evs.is_empty(), "tones at {db} dB: {evs:?}");
        }
    }

    #[test]
    fn max_utterance_cuts_long_speech_and_memory_is_bounded() {
        let speech = at_level(
            &espeak(
                "I would like to talk to somebody about my account and my card and my loan and everything else that I have with your bank",
            ),
            -20.0,
        );
        let mut line = vec![0i16; 4000];
        line.extend(&speech);
        let cfg = VadConfig {
            max_utterance: Duration::from_secs(2),
            ..VadConfig::default()
        };
        let mut ep = Endpointer::new(cfg);
        let evs = run(&mut ep, &line);
        let Some(VadEvent::SpeechEnded {
            start,
            reason: EndReason::MaxLength,
            decided_at,
            ..
        }) = evs.get(1).copied()
        else {
            panic!("{evs:?}")
        };
        assert_eq!(decided_at - start, 16000, "cut at exactly 2 s");
        let utt = ep.take_utterance();
        assert!(
            utt.len() <= 2400 + 480 + 16000 + 6400 + 480,
            "{}",
            utt.len()
        );
        assert!(utt.capacity() <= ep.utterance_cap);
        assert_eq!(evs.len(), 2, "one turn only: {evs:?}");
    }

    #[test]
    fn a_click_is_not_speech() {
        let mut line = noise(8000 * 2, -60.0, 6);
        for s in line.iter_mut().skip(8000).take(100) {
            *s = 20000;
        }
        let mut ep = Endpointer::new(VadConfig::default());
        assert!(run(&mut ep, &line).is_empty());
    }

    #[test]
    fn config_is_clamped() {
        let ep = Endpointer::new(VadConfig {
            end_silence: Duration::ZERO,
            max_utterance: Duration::from_secs(3600),
            pre_roll: Duration::from_secs(10),
            start_frames: 0,
            ..VadConfig::default()
        });
        assert_eq!(ep.config().end_silence, Duration::from_millis(200));
        assert_eq!(ep.config().max_utterance, Duration::from_secs(60));
        assert_eq!(ep.config().pre_roll, Duration::from_secs(1));
        assert_eq!(ep.config().start_frames, 1);
    }
}
