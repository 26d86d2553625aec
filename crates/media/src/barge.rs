//! Barge-in: deciding, while a prompt plays, that the caller started speaking — without being
//! fooled by the prompt itself leaking back into the caller's stream (line/handset echo).
//!
//! The engine knows what it plays. [`EchoTracker`] keeps the level of every outgoing frame for
//! the last [`EchoConfig::window`] (240 ms: line echo delay 0–60 ms + network round trip +
//! jitter-buffer delay) and an estimate of the echo path's gain (−ERL, echo return loss). The
//! echo expected in the current incoming frame is then at most *the loudest outgoing frame of
//! the window + gain* ([`EchoTracker::echo_db`]) — an upper bound whatever the exact delay.
//!
//! The gain estimate starts at the worst case the engine is built for ([`EchoConfig::initial_erl_db`],
//! 12 dB) and adapts from what comes back while the prompt plays: it rises at most 1 dB per frame
//! when the incoming level exceeds the current estimate without clearing the speech margin (so a
//! caller's rising onset cannot ratchet it up faster than the onset rises), and decays 0.05 dB per
//! frame (2.5 dB/s) towards smaller observed ratios: on a 30 dB ERL line it drops below −20 dB
//! within 4 s, making barge-in more sensitive; on a 12 dB line it stays there. (0.1 dB/frame
//! converged faster but let the echo of loud prompt syllables come within 2 dB of the
//! threshold; 0.05 keeps it ≥ 3.6 dB clear, see the tests.)
//!
//! [`BargeInDetector`]: a frame is a *candidate* when its level is above the absolute minimum
//! ([`BargeInConfig::min_db`]), [`BargeInConfig::above_noise_db`] above the noise floor, and
//! [`BargeInConfig::echo_margin_db`] above the echo estimate. Barge-in fires on the
//! [`BargeInConfig::confirm_frames`]th consecutive candidate (2 by default: 40 ms of audio, i.e.
//! the decision is taken at the end of the packetisation interval that follows the onset's).
//! One frame alone is not enough: a line click or a single loud echo frame of a badly estimated
//! echo path would stop the prompt; two consecutive frames of a click/echo spike are rare while
//! every spoken syllable lasts ≥ 60 ms. DTMF tones are candidates too: a key press also barges in.

use crate::vad::{FrameStats, NoiseFloor, SILENCE_DB, power, to_db};
use std::time::Duration;

/// Frames of outgoing history kept (640 ms at 20 ms).
const HISTORY: usize = 32;

/// Echo estimator settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoConfig {
    /// How far back an outgoing frame can echo (default 240 ms; at most 640 ms).
    pub window: Duration,
    /// Echo return loss assumed until measured, dB (default 12: the worst the engine handles).
    pub initial_erl_db: f32,
    /// Smallest ERL the estimate may reach (default 6 dB).
    pub min_erl_db: f32,
    /// Largest ERL the estimate may reach (default 40 dB).
    pub max_erl_db: f32,
    /// Observations this far above the estimate are taken as the caller, not echo (default 6 dB).
    pub double_talk_db: f32,
    /// Largest rise of the estimate per frame, dB (default 1).
    pub rise_db: f32,
    /// Decay of the estimate per frame, dB (default 0.05).
    pub decay_db: f32,
    /// Outgoing frames below this level are no reference (default −50 dBFS).
    pub min_reference_db: f32,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            window: Duration::from_millis(240),
            initial_erl_db: 12.0,
            min_erl_db: 6.0,
            max_erl_db: 40.0,
            double_talk_db: 6.0,
            rise_db: 1.0,
            decay_db: 0.05,
            min_reference_db: -50.0,
        }
    }
}

/// What the engine sent recently, and how loud it comes back (see the module docs).
#[derive(Debug, Clone)]
pub struct EchoTracker {
    cfg: EchoConfig,
    /// Outgoing frame levels, dBFS (ring).
    history: [f32; HISTORY],
    head: usize,
    window_frames: usize,
    gain_db: f32,
}

impl EchoTracker {
    /// A tracker assuming `cfg.initial_erl_db` until it has measured the line.
    pub fn new(cfg: EchoConfig, frame: Duration) -> Self {
        let frame_ms = frame.as_millis().max(1);
        let window_frames = (cfg.window.as_millis().div_ceil(frame_ms) as usize).clamp(1, HISTORY);
        EchoTracker {
            history: [SILENCE_DB; HISTORY],
            head: 0,
            window_frames,
            gain_db: -cfg.initial_erl_db.clamp(cfg.min_erl_db, cfg.max_erl_db),
            cfg,
        }
    }

    /// Record one outgoing frame (the PCM actually sent).
    pub fn push_outgoing(&mut self, pcm: &[i16]) {
        self.push_outgoing_db(to_db(power(pcm)));
    }

    /// Record one outgoing frame by level (dBFS); [`SILENCE_DB`] for silence / nothing sent.
    pub fn push_outgoing_db(&mut self, db: f32) {
        self.head = (self.head + 1) % HISTORY;
        if let Some(slot) = self.history.get_mut(self.head) {
            *slot = db;
        }
    }

    /// The loudest outgoing frame of the window, dBFS.
    pub fn reference_db(&self) -> f32 {
        (0..self.window_frames)
            .filter_map(|k| self.history.get((self.head + HISTORY - k) % HISTORY))
            .copied()
            .fold(SILENCE_DB, f32::max)
    }

    /// The current estimate of the echo path's loss (ERL), dB.
    pub fn erl_db(&self) -> f32 {
        -self.gain_db
    }

    /// Upper bound of the echo in the current incoming frame, dBFS ([`SILENCE_DB`] when
    /// nothing was played in the window).
    pub fn echo_db(&self) -> f32 {
        let r = self.reference_db();
        if r < self.cfg.min_reference_db {
            SILENCE_DB
        } else {
            r + self.gain_db
        }
    }

    /// Learn from the level of the incoming frame (call after using [`EchoTracker::echo_db`]
    /// for it).
    pub fn observe(&mut self, incoming_db: f32) {
        let r = self.reference_db();
        if r < self.cfg.min_reference_db {
            return;
        }
        let obs = incoming_db - r;
        let g = self.gain_db;
        let next = if obs >= g + self.cfg.double_talk_db {
            g // the caller talks: not echo
        } else if obs > g {
            g + (obs - g).min(self.cfg.rise_db)
        } else {
            (g - self.cfg.decay_db).max(obs)
        };
        self.gain_db = next.clamp(-self.cfg.max_erl_db, -self.cfg.min_erl_db);
    }
}

/// Barge-in settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BargeInConfig {
    /// Consecutive candidate frames that fire (default 2; 1..=5).
    pub confirm_frames: u32,
    /// Never below this level, dBFS (default −45).
    pub min_db: f32,
    /// Above the noise floor by, dB (default 9).
    pub above_noise_db: f32,
    /// Above the echo estimate by, dB (default 6).
    pub echo_margin_db: f32,
    /// The echo estimator.
    pub echo: EchoConfig,
}

impl Default for BargeInConfig {
    fn default() -> Self {
        BargeInConfig {
            confirm_frames: 2,
            min_db: -45.0,
            above_noise_db: 9.0,
            echo_margin_db: 6.0,
            echo: EchoConfig::default(),
        }
    }
}

/// Barge-in detected. Positions are samples on the caller's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BargeIn {
    /// First sample of the first candidate frame.
    pub at: u64,
    /// End of the frame that confirmed it (the decision's time).
    pub detected_at: u64,
}

/// Decides barge-in on the caller's stream (see the module docs).
#[derive(Debug, Clone)]
pub struct BargeInDetector {
    cfg: BargeInConfig,
    floor: NoiseFloor,
    run: u32,
    onset: u64,
}

impl BargeInDetector {
    /// A detector with `cfg` (`confirm_frames` clamped to 1..=5).
    pub fn new(mut cfg: BargeInConfig) -> Self {
        cfg.confirm_frames = cfg.confirm_frames.clamp(1, 5);
        BargeInDetector {
            cfg,
            floor: NoiseFloor::new(0.05),
            run: 0,
            onset: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &BargeInConfig {
        &self.cfg
    }

    /// The noise floor learnt so far, dBFS.
    pub fn noise_floor_db(&self) -> f32 {
        self.floor.db()
    }

    /// Forget a partial onset (a new prompt starts).
    pub fn reset(&mut self) {
        self.run = 0;
    }

    /// Judge one incoming frame (already measured) against `echo_db`, the echo estimate for
    /// it ([`EchoTracker::echo_db`]).
    pub fn push(
        &mut self,
        pos: u64,
        len: usize,
        stats: FrameStats,
        echo_db: f32,
    ) -> Option<BargeIn> {
        if !stats.db.is_finite() {
            return None;
        }
        let mut floor = self.floor.db();
        if floor == SILENCE_DB && stats.db > SILENCE_DB {
            self.floor.update(stats.db);
            floor = self.floor.db();
        }
        let candidate = stats.db >= self.cfg.min_db
            && stats.db >= floor + self.cfg.above_noise_db
            && stats.db >= echo_db + self.cfg.echo_margin_db;
        if !candidate {
            if stats.db < echo_db {
                // echo-dominated: says nothing about the line noise
            } else {
                self.floor.update(stats.db);
            }
            self.run = 0;
            return None;
        }
        if self.run == 0 {
            self.onset = pos;
        }
        self.run += 1;
        if self.run >= self.cfg.confirm_frames {
            self.run = 0;
            return Some(BargeIn {
                at: self.onset,
                detected_at: pos + len as u64,
            });
        }
        None
    }

    /// Measure `pcm`, judge it against `echo` and let `echo` learn from it.
    pub fn push_incoming(
        &mut self,
        pos: u64,
        pcm: &[i16],
        echo: &mut EchoTracker,
    ) -> Option<BargeIn> {
        let stats = FrameStats::of(pcm);
        let r = self.push(pos, pcm.len(), stats, echo.echo_db());
        echo.observe(stats.db);
        r
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::vad::tests::{at_level, espeak, mix, noise, welcome};

    const FRAME: usize = 160;

    /// The engine's prompt: prompts/welcome.wav followed by a spoken menu prompt, at −20 dBFS.
    fn prompt() -> Vec<i16> {
        let mut p = welcome();
        p.extend(vec![0i16; 1600]);
        p.extend(espeak(
            "In a few words, how can I help you today? You can also press zero for an agent.",
        ));
        at_level(&p, -20.0)
    }

    fn attenuate(pcm: &[i16], db: f32) -> Vec<i16> {
        let g = 10f32.powf(-db / 20.0);
        pcm.iter().map(|&s| (f32::from(s) * g) as i16).collect()
    }

    /// Run a prompt with its echo (ERL `erl_db`, `delay_ms`), line noise, and optionally the
    /// caller's speech from `caller.1` on; returns the first barge-in, the ERL estimate and the
    /// highest level of an incoming frame above the echo estimate, dB (how close the echo came
    /// to the `echo_margin_db` threshold).
    fn simulate(
        prompt: &[i16],
        erl_db: f32,
        delay_ms: usize,
        noise_db: f32,
        caller: Option<(&[i16], usize)>,
    ) -> (Option<BargeIn>, f32, f32) {
        let delay = delay_ms * 8;
        let total = prompt.len() + delay + 8000;
        let mut incoming = noise(total, noise_db, (erl_db as u64) * 100 + delay_ms as u64);
        let echo = attenuate(prompt, erl_db);
        mix(&mut incoming, &echo, delay);
        if let Some((speech, at)) = caller {
            mix(&mut incoming, speech, at);
        }
        let mut tracker = EchoTracker::new(EchoConfig::default(), Duration::from_millis(20));
        let mut det = BargeInDetector::new(BargeInConfig::default());
        let mut closest = f32::NEG_INFINITY;
        for (i, frame) in incoming.chunks(FRAME).enumerate() {
            let out = prompt.get(i * FRAME..(i + 1) * FRAME).unwrap_or(&[]);
            tracker.push_outgoing(out);
            let e = tracker.echo_db();
            let level = to_db(power(frame));
            if e > SILENCE_DB && level > -45.0 {
                closest = closest.max(level - e);
            }
            if let Some(b) = det.push_incoming((i * FRAME) as u64, frame, &mut tracker) {
                return (Some(b), tracker.erl_db(), closest);
            }
        }
        (None, tracker.erl_db(), closest)
    }

    const ERLS: [f32; 5] = [12.0, 15.0, 20.0, 25.0, 30.0];
    const DELAYS: [usize; 7] = [0, 10, 20, 30, 40, 50, 60];

    #[test]
    fn prompt_echo_does_not_barge_in() {
        let p = prompt();
        // 0-60 ms line echo, and 120 / 200 ms: the same behind a network round trip and the
        // jitter buffer's delay (the window covers 240 ms)
        for erl in ERLS {
            let mut worst = f32::NEG_INFINITY;
            for delay in DELAYS.into_iter().chain([120, 200]) {
                for noise_db in [-60.0, -50.0] {
                    let (b, est, closest) = simulate(&p, erl, delay, noise_db, None);
                    assert_eq!(
                        b, None,
                        "ERL {erl} dB, delay {delay} ms, noise {noise_db}: estimate {est}"
                    );
                    worst = worst.max(closest);
                }
            }
            // the threshold is the echo estimate + 6 dB: the echo must stay clear of it
            assert!(
                worst < 3.0,
                "ERL {erl}: echo came within {} dB of barging in",
                6.0 - worst
            );
            eprintln!(
                "ERL {erl} dB: loudest echo frame {worst:.1} dB relative to the estimate (threshold +6 dB)"
            );
        }
    }

    /// Latency = end of the confirming frame − start of the caller's first frame above
    /// −40 dBFS (clean signal). Vowel/nasal onsets ("I", "agent") are confirmed in 2 frames
    /// (40 ms, the minimum) or 3 at 12 dB ERL; a fricative onset ("ch" of "check") is quieter
    /// than the prompt's echo on a 12–25 dB ERL line, so the decision waits for the vowel
    /// (≤ 130 ms measured).
    #[test]
    fn caller_speech_over_the_echo_barges_in_fast() {
        let p = prompt();
        for (text, voice_db, at, max_ms) in [
            ("I lost my card", -22.0, 8000usize, 60),
            ("agent please", -24.0, 20000, 60),
            ("check my balance", -26.0, 30000, 140),
        ] {
            let speech = at_level(&espeak(text), voice_db);
            let onset = at
                + speech
                    .chunks(FRAME)
                    .position(|f| to_db(power(f)) > -40.0)
                    .unwrap()
                    * FRAME;
            let mut worst = 0;
            for erl in ERLS {
                for delay in DELAYS {
                    let (b, est, _) = simulate(&p, erl, delay, -55.0, Some((&speech, at)));
                    let b = b.unwrap_or_else(|| {
                        panic!("{text:?} at {voice_db} dB, ERL {erl}, delay {delay}: no barge-in (estimate {est})")
                    });
                    assert!(
                        b.at + 160 >= onset as u64,
                        "{text:?} ERL {erl} delay {delay}: fired before the caller spoke: {b:?} onset {onset}"
                    );
                    let ms = (b.detected_at - onset as u64) / 8;
                    assert!(
                        ms <= max_ms,
                        "{text:?} at {voice_db} dB, ERL {erl}, delay {delay}: latency {ms} ms"
                    );
                    worst = worst.max(ms);
                }
            }
            eprintln!(
                "{text:?} at {voice_db} dBFS: worst barge-in latency {worst} ms over ERL 12-30 dB, delay 0-60 ms"
            );
        }
    }

    /// The confirmation window: a single loud frame (a line click) during the prompt does not
    /// stop it; 40 ms of an in-band key tone does.
    #[test]
    fn a_click_does_not_barge_in_but_a_key_tone_does() {
        let p = prompt();
        let mut click = vec![0i16; 160];
        for (i, s) in click.iter_mut().enumerate() {
            *s = if i % 2 == 0 { 12000 } else { -12000 };
        }
        let (b, _, _) = simulate(&p, 20.0, 40, -55.0, Some((&click, 16000)));
        assert_eq!(b, None, "a 20 ms click barged in");
        let tone = crate::vad::tests::dtmf(&[(770.0, 1336.0)], -20.0);
        let (b, _, _) = simulate(&p, 20.0, 40, -55.0, Some((&tone, 16000)));
        let b = b.expect("a key tone must barge in");
        assert!(b.at >= 16000 && b.detected_at <= 16000 + 480, "{b:?}");
    }

    #[test]
    fn erl_estimate_converges_towards_the_line() {
        let p = prompt();
        let (_, est30, _) = simulate(&p, 30.0, 40, -60.0, None);
        let (_, est12, _) = simulate(&p, 12.0, 40, -60.0, None);
        assert!(est30 > 18.0, "ERL 30 line estimated at {est30}");
        assert!(
            (10.0..=15.0).contains(&est12),
            "ERL 12 line estimated at {est12}"
        );
    }

    #[test]
    fn silence_and_noise_alone_do_not_barge_in() {
        let quiet = vec![0i16; 16000];
        for noise_db in [-70.0, -50.0, -35.0] {
            let (b, _, _) = simulate(&quiet, 30.0, 0, noise_db, None);
            assert_eq!(b, None, "noise {noise_db}");
        }
    }
}
