//! In-band DTMF detection on decoded 8 kHz audio.
//!
//! **Method.** The signal is cut into 5 ms sub-blocks (40 samples). For each of the
//! eight DTMF frequencies the sub-block's DFT coefficient `S` is computed (a Goertzel-style
//! single-bin DFT, as a dot product with precomputed cos/sin tables). Every 5 ms a 20 ms
//! analysis window (the last 4 sub-blocks) is evaluated:
//!
//! * the strongest row and column frequencies are picked (sum of sub-block powers);
//! * for those two, the phase advance between consecutive sub-blocks gives the actual
//!   tone frequency (the advance is `2π·f·40/8000` per sub-block), and the sub-blocks are
//!   summed coherently after de-rotating by that advance — a 160-sample DFT centred on the
//!   measured frequency, so off-nominal tones inside the tolerance lose no level;
//! * the window is *valid* for a digit when all the acceptance tests below pass.
//!
//! A digit is reported once [`MIN_VALID_WINDOWS`] consecutive windows are valid for it
//! (which a tone of ≥ [`MIN_TONE_MS`] always produces and a 30 ms tone never does), and
//! the detector then needs [`REARM_WINDOWS`] consecutive windows without that digit
//! (a gap) before it can report again: one report per tone.
//!
//! **Acceptance figures** (all explicit constants below):
//!
//! | test | figure |
//! |---|---|
//! | frequency deviation, accepted | ≤ ±1.5 % ([`FREQ_ACCEPT`]) |
//! | frequency deviation, rejected | ≥ ±3.5 % ([`FREQ_REJECT`]); the decision threshold is ±2.5 % ([`FREQ_LIMIT`]) |
//! | minimum duration | 40 ms ([`MIN_TONE_MS`]); 30 ms tones are not reported |
//! | normal twist (column tone weaker than row tone) | ≤ 8 dB ([`TWIST_NORMAL_DB`]) |
//! | reverse twist (row tone weaker than column tone) | ≤ 4 dB ([`TWIST_REVERSE_DB`]) |
//! | minimum level per tone | −30 dBm0 ([`MIN_TONE_LEVEL_DBM0`]) |
//! | (row + column tone power) / total power | ≥ 0.80 ([`MIN_ENERGY_RATIO`]) |
//! | re-arm gap | 4 windows without the digit (≈ 20 ms of silence/other audio) |

use std::time::Instant;

use super::{Digit, DtmfEvent, DtmfSource};

/// Row (low group) frequencies, Hz.
pub const ROW_FREQS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// Column (high group) frequencies, Hz.
pub const COL_FREQS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Frequency deviation that is always accepted (fraction of nominal).
pub const FREQ_ACCEPT: f32 = 0.015;
/// Frequency deviation that is always rejected (fraction of nominal).
pub const FREQ_REJECT: f32 = 0.035;
/// Decision threshold on the measured deviation (midway between accept and reject).
pub const FREQ_LIMIT: f32 = 0.025;
/// Minimum tone duration that is reported.
pub const MIN_TONE_MS: u32 = 40;
/// Maximum normal twist (row louder than column), dB.
pub const TWIST_NORMAL_DB: f32 = 8.0;
/// Maximum reverse twist (column louder than row), dB.
pub const TWIST_REVERSE_DB: f32 = 4.0;
/// Minimum level of each tone, dBm0.
pub const MIN_TONE_LEVEL_DBM0: f32 = -30.0;
/// Peak amplitude (16-bit linear) of a 0 dBm0 sine (G.711: full scale = +3.17 dBm0).
pub const DBM0_REF_AMPLITUDE: f32 = 22_710.0;
/// Minimum share of the window's energy in the two tones.
pub const MIN_ENERGY_RATIO: f32 = 0.80;
/// Sub-block length (5 ms at 8 kHz) = analysis hop.
pub const SUB_BLOCK: usize = 40;
/// Sub-blocks per analysis window (20 ms).
pub const WINDOW_SUBS: usize = 4;
/// Consecutive valid windows needed to report a digit. A window is valid once the tone
/// covers ≥ 16 ms of it (energy ratio 0.8), so a tone of `D` ms yields `(D − 12) / 5`
/// (± 1) valid windows: 40 ms → ≥ 5, 30 ms → ≤ 4.
pub const MIN_VALID_WINDOWS: u32 = 5;
/// Consecutive windows without the digit needed before the same or another digit can be
/// reported again.
pub const REARM_WINDOWS: u32 = 4;

const SAMPLE_RATE: f32 = 8000.0;

#[derive(Debug, Clone, Copy, Default)]
struct SubBlock {
    re: [f32; 8],
    im: [f32; 8],
    energy: f32,
}

/// Goertzel-based in-band DTMF detector for one 8 kHz audio stream.
#[derive(Clone)]
pub struct InbandDetector {
    /// Shared per-frequency tables, computed once per process.
    tables: &'static Tables,
    buf: [f32; SUB_BLOCK],
    fill: usize,
    hist: [SubBlock; WINDOW_SUBS],
    hist_pos: usize,
    hist_len: usize,
    candidate: Option<Digit>,
    run: u32,
    reported: Option<Digit>,
    quiet: u32,
    min_power: f32,
    twist_normal: f32,
    twist_reverse: f32,
}

/// Goertzel/DFT tables of the eight DTMF frequencies: the same for every detector, so they
/// are computed once (a detector is created per call; a thousand sin/cos per call showed up
/// in the engine's profile under load).
#[derive(Debug)]
struct Tables {
    /// `cos[n][k]`: sample-major so the inner loop runs over the 8 frequencies (SIMD lanes).
    cos: [[f32; 8]; SUB_BLOCK],
    sin: [[f32; 8]; SUB_BLOCK],
    /// Phase advance of one sub-block, per frequency.
    adv: [(f32, f32); 8],
    /// cos of the largest accepted per-sub-block phase deviation, per frequency.
    cos_limit: [f32; 8],
}

static TABLES: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();

impl Tables {
    fn get() -> &'static Tables {
        TABLES.get_or_init(Tables::compute)
    }

    fn compute() -> Tables {
        let mut cos = [[0f32; 8]; SUB_BLOCK];
        let mut sin = [[0f32; 8]; SUB_BLOCK];
        let mut adv = [(0f32, 0f32); 8];
        for (k, f) in ROW_FREQS.iter().chain(COL_FREQS.iter()).enumerate() {
            let w = 2.0 * std::f64::consts::PI * f64::from(*f) / f64::from(SAMPLE_RATE);
            for n in 0..SUB_BLOCK {
                cos[n][k] = (w * n as f64).cos() as f32;
                sin[n][k] = (w * n as f64).sin() as f32;
            }
            let a = w * SUB_BLOCK as f64;
            adv[k] = (a.cos() as f32, a.sin() as f32);
        }
        let mut cos_limit = [0f32; 8];
        for (c, f) in cos_limit
            .iter_mut()
            .zip(ROW_FREQS.iter().chain(COL_FREQS.iter()))
        {
            let phi = 2.0
                * std::f64::consts::PI
                * f64::from(*f)
                * f64::from(FREQ_LIMIT)
                * SUB_BLOCK as f64
                / f64::from(SAMPLE_RATE);
            *c = phi.cos() as f32;
        }
        Tables {
            cos,
            sin,
            adv,
            cos_limit,
        }
    }
}

impl std::fmt::Debug for InbandDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InbandDetector")
            .field("candidate", &self.candidate)
            .field("run", &self.run)
            .field("reported", &self.reported)
            .finish()
    }
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

const KEYPAD: [[u8; 4]; 4] = [[1, 2, 3, 12], [4, 5, 6, 13], [7, 8, 9, 14], [10, 0, 11, 15]];

impl InbandDetector {
    /// A detector in the idle state.
    pub fn new() -> Self {
        let amp = DBM0_REF_AMPLITUDE * 10f32.powf(MIN_TONE_LEVEL_DBM0 / 20.0);
        InbandDetector {
            tables: Tables::get(),
            buf: [0.0; SUB_BLOCK],
            fill: 0,
            hist: [SubBlock::default(); WINDOW_SUBS],
            hist_pos: 0,
            hist_len: 0,
            candidate: None,
            run: 0,
            reported: None,
            quiet: REARM_WINDOWS,
            min_power: amp * amp / 2.0,
            twist_normal: 10f32.powf(TWIST_NORMAL_DB / 10.0),
            twist_reverse: 10f32.powf(TWIST_REVERSE_DB / 10.0),
        }
    }

    /// Forget all state.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Feed decoded samples (any length); `on_digit` is called for each digit recognised.
    pub fn process(&mut self, now: Instant, pcm: &[i16], mut on_digit: impl FnMut(DtmfEvent)) {
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (SUB_BLOCK - self.fill).min(rest.len());
            let (head, tail) = rest.split_at(take);
            for (d, s) in self.buf.iter_mut().skip(self.fill).zip(head) {
                *d = f32::from(*s);
            }
            self.fill += take;
            rest = tail;
            if self.fill == SUB_BLOCK {
                self.fill = 0;
                self.sub_block();
                if let Some(d) = self.evaluate() {
                    on_digit(DtmfEvent {
                        digit: d,
                        source: DtmfSource::Inband,
                        at: now,
                        duration: None,
                        volume: None,
                    });
                }
            }
        }
    }

    /// Convenience: all digits found in `pcm`, as characters.
    pub fn detect_all(&mut self, now: Instant, pcm: &[i16]) -> Vec<char> {
        let mut v = Vec::new();
        self.process(now, pcm, |e| v.push(e.digit.as_char()));
        v
    }

    fn sub_block(&mut self) {
        let mut sb = SubBlock::default();
        let x = &self.buf;
        // 8 independent accumulators per quantity: vectorises (one lane per frequency)
        let mut en = [0f32; 8];
        for xs in x.chunks_exact(8) {
            for (a, v) in en.iter_mut().zip(xs) {
                *a += v * v;
            }
        }
        sb.energy = en.iter().sum();
        for ((xn, c), s) in x
            .iter()
            .zip(self.tables.cos.iter())
            .zip(self.tables.sin.iter())
        {
            for k in 0..8 {
                sb.re[k] += xn * c[k];
                sb.im[k] -= xn * s[k];
            }
        }
        if let Some(slot) = self.hist.get_mut(self.hist_pos) {
            *slot = sb;
        }
        self.hist_pos = (self.hist_pos + 1) % WINDOW_SUBS;
        self.hist_len = (self.hist_len + 1).min(WINDOW_SUBS);
    }

    /// Sub-blocks of the current window, oldest first.
    fn window(&self) -> [&SubBlock; WINDOW_SUBS] {
        let h = &self.hist;
        let p = self.hist_pos;
        [&h[p % 4], &h[(p + 1) % 4], &h[(p + 2) % 4], &h[(p + 3) % 4]]
    }

    /// Measured coherent power of bin k (normalised to A²/2) and whether the measured
    /// frequency is within ±[`FREQ_LIMIT`] of nominal.
    fn analyse(&self, k: usize) -> (f32, bool) {
        let w = self.window();
        // phase advance between consecutive sub-blocks: z = Σ conj(S_m) S_{m+1}
        let (mut zr, mut zi) = (0.0f32, 0.0f32);
        for m in 0..WINDOW_SUBS - 1 {
            let (ar, ai) = (w[m].re[k], w[m].im[k]);
            let (br, bi) = (w[m + 1].re[k], w[m + 1].im[k]);
            zr += ar * br + ai * bi;
            zi += ar * bi - ai * br;
        }
        let mag = (zr * zr + zi * zi).sqrt();
        if mag <= f32::MIN_POSITIVE {
            return (0.0, false);
        }
        let (ur, ui) = (zr / mag, zi / mag);
        // coherent sum de-rotated by the measured advance: C = Σ S_m · conj(u)^m
        let (mut cr, mut ci) = (0.0f32, 0.0f32);
        let (mut rr, mut ri) = (1.0f32, 0.0f32); // conj(u)^m
        for sb in w.iter() {
            let (sr, si) = (sb.re[k], sb.im[k]);
            cr += sr * rr - si * ri;
            ci += sr * ri + si * rr;
            let (nr, ni) = (rr * ur + ri * ui, ri * ur - rr * ui);
            rr = nr;
            ri = ni;
        }
        let n = (SUB_BLOCK * WINDOW_SUBS) as f32;
        let power = (cr * cr + ci * ci) * 2.0 / (n * n);
        // deviation: angle of u relative to the nominal advance
        let (er, ei) = self.tables.adv[k];
        let dr = ur * er + ui * ei;
        // |Δφ| ≤ φ_limit  ⇔  cos Δφ ≥ cos φ_limit (φ_limit < π for every DTMF frequency),
        // and the de-rotated phasor u·conj(e) is a unit vector whose real part is cos Δφ.
        (power, dr >= self.tables.cos_limit[k])
    }

    /// Which digit (if any) the current window holds.
    fn classify(&self) -> Option<Digit> {
        if self.hist_len < WINDOW_SUBS {
            return None;
        }
        let w = self.window();
        let energy: f32 =
            w.iter().map(|s| s.energy).sum::<f32>() / (SUB_BLOCK * WINDOW_SUBS) as f32;
        // mean power of a sine is A²/2; a window quieter than one minimum tone is silence
        if energy < self.min_power {
            return None;
        }
        let mut inc = [0f32; 8];
        for (k, p) in inc.iter_mut().enumerate() {
            *p = w
                .iter()
                .map(|s| s.re[k] * s.re[k] + s.im[k] * s.im[k])
                .sum();
        }
        let argmax = |a: &[f32]| {
            a.iter()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |b, (i, v)| if *v > b.1 { (i, *v) } else { b },
                )
                .0
        };
        let row = argmax(inc.get(..4).unwrap_or_default());
        let col = 4 + argmax(inc.get(4..).unwrap_or_default());
        // The coherent power can never exceed the incoherent mean (Cauchy–Schwarz), so
        // windows that fail the level or energy-ratio tests on the incoherent figures are
        // rejected without the (costlier) coherent analysis. Exact pruning.
        let norm = 2.0 / (WINDOW_SUBS * SUB_BLOCK * SUB_BLOCK) as f32;
        let (ir, ic) = (
            inc.get(row).copied().unwrap_or(0.0) * norm,
            inc.get(col).copied().unwrap_or(0.0) * norm,
        );
        if ir < self.min_power || ic < self.min_power || ir + ic < MIN_ENERGY_RATIO * energy {
            return None;
        }
        let (pr, dr) = self.analyse(row);
        let (pc, dc) = self.analyse(col);
        if pr < self.min_power || pc < self.min_power {
            return None;
        }
        if !dr || !dc {
            return None;
        }
        if pr > pc * self.twist_normal || pc > pr * self.twist_reverse {
            return None;
        }
        if (pr + pc) < MIN_ENERGY_RATIO * energy {
            return None;
        }
        KEYPAD
            .get(row)
            .and_then(|r| r.get(col - 4))
            .and_then(|c| Digit::from_event(*c))
    }

    fn evaluate(&mut self) -> Option<Digit> {
        let d = self.classify();
        // re-arm bookkeeping: windows without the reported digit
        if d.is_some() && d == self.reported {
            self.quiet = 0;
        } else {
            self.quiet = self.quiet.saturating_add(1);
            if self.quiet >= REARM_WINDOWS {
                self.reported = None;
            }
        }
        if d.is_some() && d == self.candidate {
            self.run = self.run.saturating_add(1);
        } else {
            self.candidate = d;
            self.run = u32::from(d.is_some());
        }
        if self.run == MIN_VALID_WINDOWS && self.reported.is_none() {
            self.reported = d;
            self.quiet = 0;
            return d;
        }
        None
    }
}

/// The two frequencies of `digit` (row, column), Hz.
pub fn digit_freqs(digit: Digit) -> (f32, f32) {
    for (r, row) in KEYPAD.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            if *v == digit.event() {
                return (
                    ROW_FREQS.get(r).copied().unwrap_or_default(),
                    COL_FREQS.get(c).copied().unwrap_or_default(),
                );
            }
        }
    }
    (0.0, 0.0)
}

/// `samples` of 8 kHz PCM of `digit`'s tone pair, each tone at peak `amplitude` (the sum is
/// clamped to 16 bits). For in-band DTMF towards a peer, and for tests.
pub fn dtmf_tone(digit: Digit, samples: usize, amplitude: f32) -> Vec<i16> {
    let (fr, fc) = digit_freqs(digit);
    (0..samples)
        .map(|i| {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            let s = f64::from(amplitude)
                * ((2.0 * std::f64::consts::PI * f64::from(fr) * t).sin()
                    + (2.0 * std::f64::consts::PI * f64::from(fc) * t).sin());
            s.clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::g711::G711;
    use rand::{Rng, SeedableRng};

    const AMP: f32 = 0.5 * DBM0_REF_AMPLITUDE * 0.5; // ≈ −6 dBm0 per tone

    fn freqs(d: char) -> (f32, f32) {
        let code = Digit::from_char(d).unwrap().event();
        for (r, row) in KEYPAD.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                if *v == code {
                    return (ROW_FREQS[r], COL_FREQS[c]);
                }
            }
        }
        unreachable!()
    }

    /// `ms` of silence, then the tone pair, then silence; `lead` samples before the tone.
    fn tone(fr: f32, fc: f32, ar: f32, ac: f32, ms: usize, lead: usize) -> Vec<i16> {
        let n = ms * 8;
        let mut v = vec![0i16; lead];
        for i in 0..n {
            let t = i as f32 / SAMPLE_RATE;
            let s = ar * (2.0 * std::f32::consts::PI * fr * t).sin()
                + ac * (2.0 * std::f32::consts::PI * fc * t + 0.7).sin();
            v.push(s.clamp(-32768.0, 32767.0) as i16);
        }
        v.extend(std::iter::repeat_n(0, 400));
        v
    }

    fn detect(pcm: &[i16]) -> Vec<char> {
        InbandDetector::new().detect_all(crate::testutil::t0(), pcm)
    }

    #[test]
    fn the_generator_makes_each_digit() {
        for d in Digit::all() {
            let mut pcm = dtmf_tone(d, 480, AMP);
            pcm.extend([0i16; 400]);
            assert_eq!(detect(&pcm), vec![d.as_char()]);
        }
    }

    fn pcmu(pcm: &[i16]) -> Vec<i16> {
        G711::Pcmu.decode(&G711::Pcmu.encode(pcm))
    }

    #[test]
    fn all_16_digits_after_pcmu_round_trip() {
        for d in Digit::all() {
            let (fr, fc) = freqs(d.as_char());
            let got = detect(&pcmu(&tone(fr, fc, AMP, AMP, 60, 77)));
            assert_eq!(got, vec![d.as_char()], "digit {d}");
        }
    }

    #[test]
    fn frequency_tolerance() {
        for d in Digit::all() {
            let (fr, fc) = freqs(d.as_char());
            for (dev_r, dev_c) in [
                (FREQ_ACCEPT, FREQ_ACCEPT),
                (-FREQ_ACCEPT, -FREQ_ACCEPT),
                (FREQ_ACCEPT, -FREQ_ACCEPT),
            ] {
                let pcm = pcmu(&tone(
                    fr * (1.0 + dev_r),
                    fc * (1.0 + dev_c),
                    AMP,
                    AMP,
                    60,
                    13,
                ));
                assert_eq!(
                    detect(&pcm),
                    vec![d.as_char()],
                    "{d} at {dev_r}/{dev_c} must be accepted"
                );
            }
            for (dev_r, dev_c) in [
                (FREQ_REJECT, 0.0),
                (-FREQ_REJECT, 0.0),
                (0.0, FREQ_REJECT),
                (0.0, -FREQ_REJECT),
            ] {
                let pcm = pcmu(&tone(
                    fr * (1.0 + dev_r),
                    fc * (1.0 + dev_c),
                    AMP,
                    AMP,
                    100,
                    13,
                ));
                assert_eq!(
                    detect(&pcm),
                    Vec::<char>::new(),
                    "{d} at {dev_r}/{dev_c} must be rejected"
                );
            }
        }
    }

    #[test]
    fn frequency_sweep_each_tone() {
        // every DTMF frequency, deviated alone, paired with a nominal partner tone
        for (r, fr) in ROW_FREQS.iter().enumerate() {
            for (c, fc) in COL_FREQS.iter().enumerate() {
                let d = Digit::from_event(KEYPAD[r][c]).unwrap().as_char();
                for dev in [0.0f32, 0.005, 0.01, 0.015] {
                    for sign in [1.0f32, -1.0] {
                        let a = detect(&tone(fr * (1.0 + sign * dev), *fc, AMP, AMP, 50, 7));
                        let b = detect(&tone(*fr, fc * (1.0 + sign * dev), AMP, AMP, 50, 7));
                        assert_eq!((a, b), (vec![d], vec![d]), "{d} dev {}", sign * dev);
                    }
                }
                for dev in [0.035f32, 0.045, 0.06] {
                    for sign in [1.0f32, -1.0] {
                        let a = detect(&tone(fr * (1.0 + sign * dev), *fc, AMP, AMP, 100, 7));
                        let b = detect(&tone(*fr, fc * (1.0 + sign * dev), AMP, AMP, 100, 7));
                        assert!(
                            a.is_empty() && b.is_empty(),
                            "{d} dev {}: {a:?} {b:?}",
                            sign * dev
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn duration_40_vs_30_ms_at_every_alignment() {
        let (fr, fc) = freqs('5');
        for lead in (0..SUB_BLOCK).step_by(3) {
            assert_eq!(
                detect(&tone(fr, fc, AMP, AMP, 40, lead)),
                vec!['5'],
                "40 ms, lead {lead}"
            );
            assert_eq!(
                detect(&tone(fr, fc, AMP, AMP, 30, lead)),
                Vec::<char>::new(),
                "30 ms, lead {lead}"
            );
        }
    }

    #[test]
    fn twist_limits() {
        let (fr, fc) = freqs('8');
        let db = |x: f32| 10f32.powf(x / 20.0);
        // normal twist: column weaker than row
        assert_eq!(detect(&tone(fr, fc, AMP, AMP / db(7.5), 60, 0)), vec!['8']);
        assert_eq!(
            detect(&tone(fr, fc, AMP, AMP / db(9.0), 60, 0)),
            Vec::<char>::new()
        );
        // reverse twist: row weaker than column
        assert_eq!(detect(&tone(fr, fc, AMP / db(3.5), AMP, 60, 0)), vec!['8']);
        assert_eq!(
            detect(&tone(fr, fc, AMP / db(5.0), AMP, 60, 0)),
            Vec::<char>::new()
        );
    }

    #[test]
    fn level_limit() {
        let (fr, fc) = freqs('0');
        let a = DBM0_REF_AMPLITUDE * 10f32.powf(-28.0 / 20.0);
        assert_eq!(detect(&tone(fr, fc, a, a, 60, 0)), vec!['0']);
        let a = DBM0_REF_AMPLITUDE * 10f32.powf(-33.0 / 20.0);
        assert_eq!(detect(&tone(fr, fc, a, a, 60, 0)), Vec::<char>::new());
    }

    #[test]
    fn once_per_tone_and_rearm() {
        let (fr, fc) = freqs('3');
        // one long tone: one digit
        assert_eq!(detect(&tone(fr, fc, AMP, AMP, 500, 0)), vec!['3']);
        // same digit twice with a 40 ms gap: two digits
        let mut pcm = tone(fr, fc, AMP, AMP, 60, 0);
        pcm.truncate(480 + 320);
        pcm.extend(tone(fr, fc, AMP, AMP, 60, 0));
        assert_eq!(detect(&pcm), vec!['3', '3']);
        // a sequence through the streaming interface in 20 ms chunks
        let mut pcm = Vec::new();
        for d in "147*2580369#ABCD".chars() {
            let (fr, fc) = freqs(d);
            pcm.extend(tone(fr, fc, AMP, AMP, 70, 0));
        }
        let mut det = InbandDetector::new();
        let t0 = crate::testutil::t0();
        let mut got = String::new();
        for chunk in pcmu(&pcm).chunks(160) {
            det.process(t0, chunk, |e| got.push(e.digit.as_char()));
        }
        assert_eq!(got, "147*2580369#ABCD");
    }

    #[test]
    fn with_noise_still_detected() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (fr, fc) = freqs('9');
        let mut pcm = tone(fr, fc, AMP, AMP, 80, 0);
        // white noise 20 dB below the tones
        for s in pcm.iter_mut() {
            let n: f32 = rng.random_range(-1.0..1.0) * AMP * 0.1 * 1.73;
            *s = (f32::from(*s) + n) as i16;
        }
        assert_eq!(detect(&pcmu(&pcm)), vec!['9']);
    }

    #[test]
    fn no_false_digits_on_noise_and_music() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        // white noise, 10 s at several levels
        for level in [300.0f32, 3000.0, 20000.0] {
            let pcm: Vec<i16> = (0..80_000)
                .map(|_| (rng.random_range(-1.0f32..1.0) * level) as i16)
                .collect();
            assert!(detect(&pcm).is_empty(), "white noise {level}");
        }
        // pink-ish noise (Paul Kellet's economy filter), 10 s
        let (mut b0, mut b1, mut b2) = (0f32, 0f32, 0f32);
        let pink: Vec<i16> = (0..80_000)
            .map(|_| {
                let w: f32 = rng.random_range(-1.0..1.0);
                b0 = 0.99765 * b0 + w * 0.0990460;
                b1 = 0.96300 * b1 + w * 0.2965164;
                b2 = 0.57000 * b2 + w * 1.0526913;
                ((b0 + b1 + b2 + w * 0.1848) * 4000.0) as i16
            })
            .collect();
        assert!(detect(&pink).is_empty(), "pink noise");
        // music-like: chords of 3-4 equal-tempered notes, 250 ms each, 16 s
        let mut music = Vec::new();
        for c in 0..64 {
            let root = 40 + (c * 7) % 24; // MIDI note
            let notes = [root, root + 4, root + 7, root + 12 + (c % 2) * 4];
            for i in 0..2000 {
                let t = i as f32 / SAMPLE_RATE;
                let s: f32 = notes
                    .iter()
                    .map(|n| {
                        let f = 440.0 * 2f32.powf((*n as f32 - 69.0) / 12.0);
                        (2.0 * std::f32::consts::PI * f * t).sin() * 5000.0
                    })
                    .sum();
                music.push(s as i16);
            }
        }
        assert!(detect(&pcmu(&music)).is_empty(), "chords");
    }

    #[test]
    fn no_false_digits_on_speech_prompts() {
        // corpus: every espeak-ng prompt in prompts/ (welcome, you-pressed, digit-0…9, star,
        // pound, hold), decoded through the prompt module, PCMU-encoded as on the wire,
        // played back to back — and again at +6 dB.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts");
        let (lib, _) = crate::prompt::PromptLibrary::load_dir(&dir, &["welcome"]).unwrap();
        let mut pcm = Vec::new();
        for name in lib.names() {
            pcm.extend(G711::Pcmu.decode(lib.get(name).unwrap().encoded(G711::Pcmu)));
        }
        assert!(pcm.len() > 8000 * 10, "at least 10 s of speech");
        assert_eq!(detect(&pcm), Vec::<char>::new());
        let loud: Vec<i16> = pcm.iter().map(|s| s.saturating_mul(2)).collect();
        assert_eq!(detect(&loud), Vec::<char>::new());
    }
}
