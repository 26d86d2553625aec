//! Relaying RTP between two bridged call legs, sans-IO.
//!
//! A bridge is two [`Relay`]s, one per direction. Each takes the packets accepted on one leg
//! (already parsed and latched by that leg's [`crate::call::MediaSession`], no jitter buffer)
//! and produces the packets to send on the other leg, with that leg's own SSRC, sequence
//! numbers and payload types:
//!
//! * **Timestamps** are mapped, not regenerated: `out = in + offset`, where the offset is
//!   chosen on the first packet (and again when the source changes SSRC or jumps) so that the
//!   relayed stream continues the destination leg's clock where its prompts left off. Gaps
//!   (loss, silence suppression) therefore stay gaps, and RFC 4733 events keep the timestamp
//!   of their start.
//! * **Sequence numbers** come from the destination leg's [`RtpSender`], so they are
//!   continuous across a switch from prompts to bridge and back.
//! * **Same codec, same ptime**: the payload is copied.
//! * **PCMU ↔ PCMA**: decoded and re-encoded, frame by frame.
//! * **Different ptime** (e.g. 20 ms ↔ 30 ms): decoded into a re-framing buffer placed by
//!   timestamp; full frames of the destination ptime are encoded and sent as they fill. Lost
//!   packets become silence in the buffer (up to [`MAX_GAP_SAMPLES`]); larger jumps flush the
//!   buffer and restart it.
//! * **RFC 4733 events** are passed through with the destination leg's telephone-event
//!   payload type and the mapped timestamp; every packet (the three retransmitted end packets
//!   included) is relayed with a sequence number of its own. When the destination did not
//!   negotiate telephone-event, events are dropped (and counted).

use bytes::Bytes;

use crate::g711::{G711, MAX_FRAME_SAMPLES, Ptime};
use crate::rtp::{PayloadKind, RtpPacketRef, RtpSender};
use crate::{PayloadType, Ssrc};

/// Largest timestamp gap (in samples, 200 ms) filled with silence by the re-framer; a larger
/// jump restarts it.
pub const MAX_GAP_SAMPLES: u32 = 1600;
/// A source timestamp jump larger than this (10 s) re-anchors the mapping.
const MAX_JUMP: u32 = 80_000;

/// What the destination leg negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayTarget {
    /// The destination leg's codec.
    pub codec: G711,
    /// The destination leg's packetisation time.
    pub ptime: Ptime,
    /// The destination leg's telephone-event payload type, if negotiated.
    pub telephone_event: Option<PayloadType>,
}

/// Counters of one relay direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Audio packets received for relaying.
    pub audio_in: u64,
    /// Audio packets sent (after re-framing the count may differ from `audio_in`).
    pub audio_out: u64,
    /// Audio packets whose payload was copied unchanged.
    pub copied: u64,
    /// Audio packets transcoded (PCMU ↔ PCMA) or re-framed.
    pub transcoded: u64,
    /// Telephone-event packets relayed.
    pub events: u64,
    /// Telephone-event packets dropped (the destination has no telephone-event).
    pub events_dropped: u64,
    /// Audio dropped as duplicate or reordered behind the re-framing buffer.
    pub dropped: u64,
    /// Times the timestamp mapping was re-anchored (new source SSRC or jump).
    pub reanchored: u64,
}

/// One direction of a bridge (see the module docs).
#[derive(Debug, Clone)]
pub struct Relay {
    to: RelayTarget,
    /// Source SSRC the mapping belongs to.
    src: Option<Ssrc>,
    /// `out_ts = in_ts + offset`.
    offset: u32,
    /// Highest source timestamp end seen (in + samples), for jump detection.
    src_next: u32,
    /// The next outgoing packet starts a talk-spurt.
    marker: bool,
    /// Re-framing buffer (decoded samples), and the output timestamp of its first sample.
    fifo: Vec<i16>,
    fifo_ts: u32,
    /// `fifo_ts` is meaningful (something was relayed since the last anchor).
    primed: bool,
    pcm: [i16; MAX_FRAME_SAMPLES],
    enc: [u8; MAX_FRAME_SAMPLES],
    stats: RelayStats,
}

impl Relay {
    /// A relay sending towards a leg that negotiated `to`.
    pub fn new(to: RelayTarget) -> Self {
        Relay {
            to,
            src: None,
            offset: 0,
            src_next: 0,
            marker: true,
            fifo: Vec::with_capacity(MAX_FRAME_SAMPLES * 2 + MAX_GAP_SAMPLES as usize),
            fifo_ts: 0,
            primed: false,
            pcm: [0; MAX_FRAME_SAMPLES],
            enc: [0; MAX_FRAME_SAMPLES],
            stats: RelayStats::default(),
        }
    }

    /// The destination's parameters.
    pub fn target(&self) -> RelayTarget {
        self.to
    }

    /// Counters.
    pub fn stats(&self) -> RelayStats {
        self.stats
    }

    /// Forwards one accepted packet of the source leg: the packets to send on the destination
    /// leg are built with `sender` (the destination's stream) and pushed to `out`.
    pub fn forward(
        &mut self,
        pkt: &RtpPacketRef<'_>,
        sender: &mut RtpSender,
        out: &mut Vec<Bytes>,
    ) {
        let samples = match pkt.kind {
            PayloadKind::Audio(_) => u32::try_from(pkt.payload.len()).unwrap_or(u32::MAX),
            _ => 0,
        };
        self.anchor(pkt, sender, samples);
        let ts = pkt.timestamp.wrapping_add(self.offset);
        match pkt.kind {
            PayloadKind::Audio(codec) => self.audio(codec, pkt, ts, sender, out),
            PayloadKind::TelephoneEvent => match self.to.telephone_event {
                Some(pt) => {
                    out.push(sender.event_packet(pt, pkt.marker, ts, pkt.payload));
                    self.stats.events += 1;
                }
                None => self.stats.events_dropped += 1,
            },
            PayloadKind::ComfortNoise => {}
        }
    }

    /// Chooses (or re-chooses) the timestamp offset.
    fn anchor(&mut self, pkt: &RtpPacketRef<'_>, sender: &RtpSender, samples: u32) {
        let jump = self.src.is_some() && {
            let d = pkt.timestamp.wrapping_sub(self.src_next);
            d > MAX_JUMP && d < u32::MAX - MAX_JUMP
        };
        if self.src != Some(pkt.ssrc) || jump {
            if self.src.is_some() {
                self.stats.reanchored += 1;
            }
            // Continue the destination's clock: the first relayed sample goes where the
            // destination's next frame would have gone. A partial frame of the old source
            // is dropped (at most one ptime).
            self.offset = sender.timestamp().wrapping_sub(pkt.timestamp);
            self.src = Some(pkt.ssrc);
            self.src_next = pkt.timestamp;
            self.marker = true;
            self.fifo.clear();
            self.primed = false;
        }
        let end = pkt.timestamp.wrapping_add(samples);
        if end.wrapping_sub(self.src_next) < u32::MAX / 2 {
            self.src_next = end;
        }
    }

    fn audio(
        &mut self,
        codec: G711,
        pkt: &RtpPacketRef<'_>,
        ts: u32,
        sender: &mut RtpSender,
        out: &mut Vec<Bytes>,
    ) {
        self.stats.audio_in += 1;
        let n = self.to.ptime.samples();
        let marker = std::mem::take(&mut self.marker) || pkt.marker;
        if pkt.payload.len() == n && self.fifo.is_empty() {
            // Frame sizes agree: copy or transcode this frame.
            let payload: &[u8] = if codec == self.to.codec {
                self.stats.copied += 1;
                pkt.payload
            } else {
                self.stats.transcoded += 1;
                let got = codec.decode_into(pkt.payload, &mut self.pcm);
                let pcm = self.pcm.get(..got).unwrap_or_default();
                let len = self.to.codec.encode_into(pcm, &mut self.enc);
                self.enc.get(..len).unwrap_or_default()
            };
            out.push(sender.audio_packet_at(marker, ts, payload));
            self.stats.audio_out += 1;
            self.fifo_ts = ts.wrapping_add(n as u32);
            self.primed = true;
            return;
        }
        // Re-frame.
        self.stats.transcoded += 1;
        let got = codec.decode_into(pkt.payload, &mut self.pcm);
        if !self.primed {
            self.fifo_ts = ts;
            self.primed = true;
        } else {
            let expected = self.fifo_ts.wrapping_add(self.fifo.len() as u32);
            let d = ts.wrapping_sub(expected);
            if d > u32::MAX / 2 {
                // Before what is buffered: duplicate or reordered too late.
                self.stats.dropped += 1;
                return;
            }
            if d > MAX_GAP_SAMPLES {
                self.flush(sender, out);
                self.fifo_ts = ts;
            } else {
                // Lost packet(s): silence in their place.
                self.fill_silence(d as usize, sender, out);
            }
        }
        if marker {
            self.marker = true;
        }
        let mut i = 0;
        while i < got {
            let room = (self.fifo.capacity() - self.fifo.len()).max(1);
            let take = room.min(got - i);
            if let Some(chunk) = self.pcm.get(i..i + take) {
                self.fifo.extend_from_slice(chunk);
            }
            i += take;
            self.emit_full(sender, out);
        }
    }

    fn fill_silence(&mut self, mut samples: usize, sender: &mut RtpSender, out: &mut Vec<Bytes>) {
        while samples > 0 {
            let room = (self.fifo.capacity() - self.fifo.len()).max(1);
            let take = room.min(samples);
            self.fifo.resize(self.fifo.len() + take, 0);
            samples -= take;
            self.emit_full(sender, out);
        }
    }

    /// Sends every full destination frame in the buffer.
    fn emit_full(&mut self, sender: &mut RtpSender, out: &mut Vec<Bytes>) {
        let n = self.to.ptime.samples();
        let mut start = 0;
        while self.fifo.len() - start >= n {
            let frame = self.fifo.get(start..start + n).unwrap_or_default();
            let len = self.to.codec.encode_into(frame, &mut self.enc);
            let marker = std::mem::take(&mut self.marker);
            let payload = self.enc.get(..len).unwrap_or_default();
            out.push(sender.audio_packet_at(marker, self.fifo_ts, payload));
            self.stats.audio_out += 1;
            self.fifo_ts = self.fifo_ts.wrapping_add(n as u32);
            start += n;
        }
        if start > 0 {
            self.fifo.drain(..start);
        }
    }

    /// Sends what is left in the re-framing buffer, padded with silence to a full frame.
    pub fn flush(&mut self, sender: &mut RtpSender, out: &mut Vec<Bytes>) {
        if self.fifo.is_empty() {
            return;
        }
        let n = self.to.ptime.samples();
        if self.fifo.len() < n {
            self.fifo.resize(n, 0);
        }
        self.emit_full(sender, out);
        self.fifo.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dtmf::rfc4733::{encode_event_payload, parse_telephone_event};
    use crate::rtp::{PayloadMap, parse_rtp};

    const TE_A: u8 = 101;
    const TE_B: u8 = 96;

    fn tone(freq: f64, n: usize, start: usize) -> Vec<i16> {
        (start..start + n)
            .map(|i| {
                (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16
            })
            .collect()
    }

    /// Builds a source packet (as the A leg would send it).
    fn src_packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80, (pt & 0x7f) | if marker { 0x80 } else { 0 }];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&ssrc.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn a_map(codec: G711) -> PayloadMap {
        PayloadMap::g711(codec, PayloadType::new(TE_A))
    }

    fn b_map(codec: G711) -> PayloadMap {
        PayloadMap::g711(codec, PayloadType::new(TE_B))
    }

    struct Rig {
        relay: Relay,
        sender: RtpSender,
        a: PayloadMap,
        out: Vec<Bytes>,
    }

    impl Rig {
        fn new(from: G711, to: G711, ptime_ms: u32) -> Rig {
            Rig {
                relay: Relay::new(RelayTarget {
                    codec: to,
                    ptime: Ptime::from_ms(ptime_ms).unwrap(),
                    telephone_event: PayloadType::new(TE_B),
                }),
                sender: RtpSender::new(Ssrc(0xB0B), to.payload_type(), 5000, 900_000),
                a: a_map(from),
                out: Vec::new(),
            }
        }

        fn push(&mut self, raw: &[u8]) -> Vec<Bytes> {
            let pkt = parse_rtp(raw, &self.a).unwrap();
            self.relay.forward(&pkt, &mut self.sender, &mut self.out);
            std::mem::take(&mut self.out)
        }
    }

    #[test]
    fn same_codec_copies_payload_and_rewrites_the_header() {
        let mut rig = Rig::new(G711::Pcmu, G711::Pcmu, 20);
        // The destination already sent a prompt: its next frame is at 900_000, seq 5000.
        let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let mut got = Vec::new();
        for i in 0..3u32 {
            let raw = src_packet(0, i == 0, 100 + i as u16, 40_000 + i * 160, 0xA, &payload);
            got.extend(rig.push(&raw));
        }
        let b = b_map(G711::Pcmu);
        let pkts: Vec<_> = got.iter().map(|p| parse_rtp(p, &b).unwrap()).collect();
        assert_eq!(pkts.len(), 3);
        for (i, p) in pkts.iter().enumerate() {
            assert_eq!(p.ssrc, Ssrc(0xB0B), "the destination's own SSRC");
            assert_eq!(
                p.seq,
                5000 + i as u16,
                "continues the destination's sequence"
            );
            assert_eq!(p.timestamp, 900_000 + i as u32 * 160, "continues its clock");
            assert_eq!(p.payload, &payload[..]);
            assert_eq!(p.payload_type, PayloadType::PCMU);
        }
        assert!(pkts[0].marker && !pkts[1].marker);
        assert_eq!(rig.relay.stats().copied, 3);
        // After the bridge, the destination's own frames continue seamlessly.
        let next = rig.sender.audio_packet(&[0xFF; 160], 160);
        let next = parse_rtp(&next, &b).unwrap();
        assert_eq!((next.seq, next.timestamp), (5003, 900_000 + 480));
    }

    #[test]
    fn loss_keeps_its_timestamp_gap_and_new_ssrc_reanchors() {
        let mut rig = Rig::new(G711::Pcma, G711::Pcma, 20);
        let p = [0xD5u8; 160];
        let b = b_map(G711::Pcma);
        let ts = |raw: &[Bytes]| parse_rtp(&raw[0], &b).unwrap().timestamp;
        let t0 = ts(&rig.push(&src_packet(8, false, 1, 1000, 0xA, &p)));
        // seq 2 (ts 1160) lost
        let t2 = ts(&rig.push(&src_packet(8, false, 3, 1320, 0xA, &p)));
        assert_eq!(t2.wrapping_sub(t0), 320);
        // A new source SSRC with an unrelated timestamp continues right after.
        let t3 = ts(&rig.push(&src_packet(8, false, 77, 5_000_000, 0xC, &p)));
        assert_eq!(t3.wrapping_sub(t2), 160);
        // So does a huge jump on the same SSRC.
        let t4 = ts(&rig.push(&src_packet(8, false, 78, 2_000_000_000, 0xC, &p)));
        assert_eq!(t4.wrapping_sub(t3), 160);
        assert_eq!(rig.relay.stats().reanchored, 2);
    }

    /// Dominant-frequency check by Goertzel power ratio.
    fn power(pcm: &[i16], freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in pcm {
            let s = f64::from(x) + c * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        s1 * s1 + s2 * s2 - c * s1 * s2
    }

    #[test]
    fn pcmu_to_pcma_transcodes_content() {
        let mut rig = Rig::new(G711::Pcmu, G711::Pcma, 20);
        let pcm = tone(1000.0, 1600, 0);
        let mut got = Vec::new();
        for (i, frame) in pcm.chunks(160).enumerate() {
            let enc = G711::Pcmu.encode(frame);
            got.extend(rig.push(&src_packet(0, false, i as u16, i as u32 * 160, 1, &enc)));
        }
        let b = b_map(G711::Pcma);
        let mut out = Vec::new();
        for p in &got {
            let p = parse_rtp(p, &b).unwrap();
            assert_eq!(p.payload_type, PayloadType::PCMA);
            out.extend(G711::Pcma.decode(p.payload));
        }
        assert_eq!(out.len(), pcm.len());
        // Same waveform within G.711 quantisation (a few percent of full scale at most).
        let err: f64 = out
            .iter()
            .zip(&pcm)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / pcm.len() as f64;
        assert!(err < 200.0, "mean abs error {err}");
        assert!(power(&out, 1000.0) > 100.0 * power(&out, 1400.0));
        assert_eq!(rig.relay.stats().transcoded, 10);
    }

    #[test]
    fn ptime_20_to_30_reframes_by_timestamp() {
        let mut rig = Rig::new(G711::Pcmu, G711::Pcma, 30);
        let pcm = tone(697.0, 160 * 9, 0);
        let mut got = Vec::new();
        for (i, frame) in pcm.chunks(160).enumerate() {
            let enc = G711::Pcmu.encode(frame);
            got.extend(rig.push(&src_packet(
                0,
                i == 0,
                i as u16,
                8000 + i as u32 * 160,
                1,
                &enc,
            )));
        }
        // 9 × 20 ms = 180 ms = 6 × 30 ms.
        assert_eq!(got.len(), 6);
        let b = b_map(G711::Pcma);
        let mut out = Vec::new();
        for (i, p) in got.iter().enumerate() {
            let p = parse_rtp(p, &b).unwrap();
            assert_eq!(p.payload.len(), 240);
            assert_eq!(p.timestamp, 900_000 + i as u32 * 240);
            assert_eq!(p.seq, 5000 + i as u16);
            assert_eq!(p.marker, i == 0);
            out.extend(G711::Pcma.decode(p.payload));
        }
        let err: f64 = out
            .iter()
            .zip(&pcm)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / pcm.len() as f64;
        assert!(
            err < 200.0,
            "the samples stay in place (mean abs error {err})"
        );
    }

    #[test]
    fn ptime_30_to_20_with_a_lost_packet_fills_silence() {
        let mut rig = Rig::new(G711::Pcma, G711::Pcma, 20);
        let loud = G711::Pcma.encode(&tone(1000.0, 240, 0));
        let mut got = Vec::new();
        got.extend(rig.push(&src_packet(8, false, 1, 0, 1, &loud)));
        // 240..480 lost
        got.extend(rig.push(&src_packet(8, false, 3, 480, 1, &loud)));
        got.extend(rig.push(&src_packet(8, false, 4, 720, 1, &loud)));
        // 960 samples (the gap included) = 6 frames of 20 ms.
        assert_eq!(got.len(), 6);
        let b = b_map(G711::Pcma);
        let pcm: Vec<i16> = got
            .iter()
            .flat_map(|p| G711::Pcma.decode(parse_rtp(p, &b).unwrap().payload))
            .collect();
        let energy = |s: &[i16]| s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        assert!(energy(&pcm[240..480]) < 1e5, "the lost 30 ms is silence");
        assert!(energy(&pcm[..240]) > 1e9 && energy(&pcm[480..]) > 1e9);
        // A late duplicate of the first packet is dropped, not replayed.
        assert!(rig.push(&src_packet(8, false, 1, 0, 1, &loud)).is_empty());
        assert_eq!(rig.relay.stats().dropped, 1);
    }

    #[test]
    fn dtmf_is_relayed_with_the_destination_payload_type_and_end_retransmissions() {
        let mut rig = Rig::new(G711::Pcmu, G711::Pcma, 20);
        let audio = [0xFFu8; 160];
        rig.push(&src_packet(0, false, 10, 16_000, 1, &audio));
        // Digit 5 starting at ts 16_160: start, two updates, three end packets.
        let mut got = Vec::new();
        let durations = [160u16, 320, 480, 640, 640, 640];
        for (i, d) in durations.iter().enumerate() {
            let end = i >= 3;
            let payload = encode_event_payload(5, end, 10, *d);
            got.extend(rig.push(&src_packet(
                TE_A,
                i == 0,
                11 + i as u16,
                16_160,
                1,
                &payload,
            )));
        }
        assert_eq!(
            got.len(),
            6,
            "every packet relayed, end retransmissions included"
        );
        let b = b_map(G711::Pcma);
        let mut seqs = Vec::new();
        for (i, p) in got.iter().enumerate() {
            let p = parse_rtp(p, &b).unwrap();
            assert_eq!(
                p.payload_type.get(),
                TE_B,
                "the destination's telephone-event PT"
            );
            assert_eq!(p.kind, PayloadKind::TelephoneEvent);
            assert_eq!(p.timestamp, 900_000 + 160, "event start mapped like audio");
            assert_eq!(p.marker, i == 0);
            let ev = parse_telephone_event(p.payload).unwrap();
            assert_eq!(ev.event, 5);
            assert_eq!(ev.end, i >= 3);
            assert_eq!(ev.duration, durations[i]);
            seqs.push(p.seq);
        }
        assert_eq!(
            seqs,
            (5001..5007).collect::<Vec<u16>>(),
            "own sequence numbers"
        );
        // Without telephone-event on the destination, events are dropped and counted.
        let mut rig = Rig::new(G711::Pcmu, G711::Pcmu, 20);
        rig.relay.to.telephone_event = None;
        let payload = encode_event_payload(1, false, 10, 160);
        assert!(
            rig.push(&src_packet(TE_A, true, 1, 0, 1, &payload))
                .is_empty()
        );
        assert_eq!(rig.relay.stats().events_dropped, 1);
    }
}
