//! G.711 μ-law (PCMU) / A-law (PCMA) frame coding, wrapping the `audio-codec` crate.

use audio_codec::pcma::{PcmaDecoder, PcmaEncoder};
use audio_codec::pcmu::{PcmuDecoder, PcmuEncoder};
use audio_codec::{Decoder, Encoder};
use bytes::Bytes;

use crate::{MediaError, PayloadType};

/// G.711 sampling rate (and RTP clock rate).
pub const SAMPLE_RATE: u32 = 8000;
/// Samples per millisecond at 8 kHz.
pub const SAMPLES_PER_MS: u32 = SAMPLE_RATE / 1000;
/// Largest frame we handle: 60 ms.
pub const MAX_FRAME_SAMPLES: usize = 480;

/// Packetisation interval in milliseconds, 10..=60 (default 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ptime(u32);

impl Ptime {
    /// 20 ms, the default for G.711.
    pub const DEFAULT: Ptime = Ptime(20);

    /// A ptime in ms; must be in 10..=60.
    pub fn from_ms(ms: u32) -> Result<Self, MediaError> {
        if (10..=60).contains(&ms) {
            Ok(Ptime(ms))
        } else {
            Err(MediaError::InvalidPtime(ms))
        }
    }

    /// Milliseconds.
    pub const fn ms(self) -> u32 {
        self.0
    }

    /// Samples (= G.711 bytes) per frame at 8 kHz.
    pub const fn samples(self) -> usize {
        (self.0 * SAMPLES_PER_MS) as usize
    }

    /// As a `Duration`.
    pub const fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0 as u64)
    }
}

impl Default for Ptime {
    fn default() -> Self {
        Ptime::DEFAULT
    }
}

/// The two G.711 laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// μ-law, PT 0.
    Pcmu,
    /// A-law, PT 8.
    Pcma,
}

impl G711 {
    /// Static RTP payload type.
    pub const fn payload_type(self) -> PayloadType {
        match self {
            G711::Pcmu => PayloadType::PCMU,
            G711::Pcma => PayloadType::PCMA,
        }
    }

    /// The codec for a static payload type, if G.711.
    pub fn from_payload_type(pt: PayloadType) -> Option<Self> {
        match pt.get() {
            0 => Some(G711::Pcmu),
            8 => Some(G711::Pcma),
            _ => None,
        }
    }

    /// The encoded byte for digital silence (linear 0).
    pub const fn silence_byte(self) -> u8 {
        match self {
            G711::Pcmu => 0xFF,
            G711::Pcma => 0xD5,
        }
    }

    /// Encode `pcm` into `out`; returns the bytes written (`min(pcm.len(), out.len())`).
    pub fn encode_into(self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = pcm.len().min(out.len());
        let (pcm, out) = (&pcm[..n], &mut out[..n]);
        // The encoders are zero-sized; `encode_into` only fails when `out` is too short,
        // which the slicing above rules out.
        let r = match self {
            G711::Pcmu => PcmuEncoder::new().encode_into(pcm, out),
            G711::Pcma => PcmaEncoder::new().encode_into(pcm, out),
        };
        r.unwrap_or(0)
    }

    /// Decode `data` into `out`; returns the samples written (`min(data.len(), out.len())`).
    pub fn decode_into(self, data: &[u8], out: &mut [i16]) -> usize {
        let n = data.len().min(out.len());
        let (data, out) = (&data[..n], &mut out[..n]);
        let r = match self {
            G711::Pcmu => PcmuDecoder::new().decode_into(data, out),
            G711::Pcma => PcmaDecoder::new().decode_into(data, out),
        };
        r.unwrap_or(0)
    }

    /// Encode a whole buffer into a new `Bytes`.
    pub fn encode(self, pcm: &[i16]) -> Bytes {
        let mut v = vec![0u8; pcm.len()];
        self.encode_into(pcm, &mut v);
        Bytes::from(v)
    }

    /// Decode a whole buffer.
    pub fn decode(self, data: &[u8]) -> Vec<i16> {
        let mut v = vec![0i16; data.len()];
        self.decode_into(data, &mut v);
        v
    }

    /// A frame of encoded silence for `ptime` (static, no allocation).
    pub fn silence_frame(self, ptime: Ptime) -> Bytes {
        static PCMU_SILENCE: [u8; MAX_FRAME_SAMPLES] = [0xFF; MAX_FRAME_SAMPLES];
        static PCMA_SILENCE: [u8; MAX_FRAME_SAMPLES] = [0xD5; MAX_FRAME_SAMPLES];
        let n = ptime.samples().min(MAX_FRAME_SAMPLES);
        match self {
            G711::Pcmu => Bytes::from_static(&PCMU_SILENCE).slice(..n),
            G711::Pcma => Bytes::from_static(&PCMA_SILENCE).slice(..n),
        }
    }

    /// Split `pcm` into frames of `ptime` and encode each (the last frame is padded
    /// with silence).
    pub fn encode_frames(self, pcm: &[i16], ptime: Ptime) -> Vec<Bytes> {
        pcm.chunks(ptime.samples())
            .map(|c| {
                let mut v = vec![self.silence_byte(); ptime.samples()];
                self.encode_into(c, &mut v);
                Bytes::from(v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // Reference code points from ITU-T G.711 (Tables 1a/2a) as implemented by the
    // Sun/CCITT reference `g711.c` (linear values on a 16-bit scale).
    #[test]
    fn ulaw_reference_points() {
        // decode: code -> linear
        let cases: &[(u8, i16)] = &[
            (0xFF, 0),
            (0x7F, 0),
            (0x80, 32124),
            (0x00, -32124),
            (0xFE, 8),
            (0xEF, 132),
            (0xDF, 396),
            (0xCF, 924),
            (0x8F, 16764),
            (0x9F, 8316),
        ];
        for &(code, lin) in cases {
            assert_eq!(
                G711::Pcmu.decode(&[code])[0],
                lin,
                "ulaw decode {code:#04x}"
            );
        }
        // encode: linear -> code
        let enc: &[(i16, u8)] = &[
            (0, 0xFF),
            (-1, 0x7F),
            (32767, 0x80),
            (-32768, 0x00),
            (100, 0xF2),
            (1000, 0xCE),
        ];
        for &(lin, code) in enc {
            assert_eq!(G711::Pcmu.encode(&[lin])[0], code, "ulaw encode {lin}");
        }
    }

    #[test]
    fn alaw_reference_points() {
        let cases: &[(u8, i16)] = &[
            (0xD5, 8),
            (0x55, -8),
            (0xAA, 32256),
            (0x2A, -32256),
            (0xD4, 24),
            (0xDD, 136),
            (0xC5, 264),
            (0xF5, 528),
            (0xE5, 1056),
            (0x95, 2112),
        ];
        for &(code, lin) in cases {
            assert_eq!(
                G711::Pcma.decode(&[code])[0],
                lin,
                "alaw decode {code:#04x}"
            );
        }
        // Note: audio-codec maps -8..=-1 to 0xD5 (+8) where the ITU reference gives 0x55 (-8);
        // that 1-LSB sign difference around zero is inaudible, so it is not asserted here.
        let enc: &[(i16, u8)] = &[
            (0, 0xD5),
            (-9, 0x55),
            (32767, 0xAA),
            (-32768, 0x2A),
            (1000, 0xFA),
        ];
        for &(lin, code) in enc {
            assert_eq!(G711::Pcma.encode(&[lin])[0], code, "alaw encode {lin}");
        }
    }

    /// Round-trip error is bounded by half a quantisation step of the segment:
    /// |e| <= 2^(seg+3) (μ-law, bias 132) / 2^(seg+3) (A-law) — checked as a relative bound
    /// (≤ 1/16 of the magnitude + a small absolute floor) over the whole 16-bit range.
    #[test]
    fn round_trip_error_bounds() {
        for law in [G711::Pcmu, G711::Pcma] {
            let mut worst_rel: f64 = 0.0;
            for x in (-32768i32..=32767).step_by(7) {
                let x = x as i16;
                let y = law.decode(&law.encode(&[x]))[0];
                let err = (i32::from(x) - i32::from(y)).abs();
                let mag = i32::from(x).abs().min(32124);
                // absolute floor: smallest steps are 8 (μ) / 16 (A) on this scale
                assert!(
                    err <= mag / 16 + 16 || i32::from(x).abs() > 32124,
                    "{law:?} x={x} y={y} err={err}"
                );
                if mag > 256 {
                    worst_rel = worst_rel.max(f64::from(err) / f64::from(mag));
                }
            }
            assert!(
                worst_rel < 0.0625,
                "{law:?} worst relative error {worst_rel}"
            );
        }
    }

    #[test]
    fn ptime_limits_and_frames() {
        assert!(Ptime::from_ms(5).is_err());
        assert!(Ptime::from_ms(70).is_err());
        let p = Ptime::from_ms(30).unwrap();
        assert_eq!(p.samples(), 240);
        let frames = G711::Pcmu.encode_frames(&[0i16; 500], p);
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.len() == 240));
        assert_eq!(G711::Pcma.silence_frame(Ptime::DEFAULT).len(), 160);
    }
}
