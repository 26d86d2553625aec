//! RTP send (packetisation) and receive (parsing + validation), and per-stream packet counters.
//!
//! Header (un)marshalling is done by `rtc-rtp`. On receive we parse only the header
//! (`rtc_rtp::Header::unmarshal`, which does not allocate for the usual CSRC-less,
//! extension-less packet) and borrow the payload straight from the datagram.

use bytes::{BufMut, Bytes, BytesMut};
use rtc_shared::marshal::Unmarshal;

use crate::g711::G711;
use crate::{MediaError, PayloadType, Ssrc};

/// Fixed RTP header length (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;

const ARENA_SIZE: usize = 8 * 1024;

/// What a payload type means in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// G.711 audio.
    Audio(G711),
    /// RFC 4733 telephone-event.
    TelephoneEvent,
    /// RFC 3389 comfort noise (always accepted, carries no audio we play).
    ComfortNoise,
}

/// The negotiated payload types (from the SDP offer/answer). Comfort noise (PT 13) is
/// always accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadMap {
    /// 128-entry table: `None` = not negotiated.
    table: [Option<PayloadKind>; 128],
}

impl Default for PayloadMap {
    fn default() -> Self {
        let mut table = [None; 128];
        table[13] = Some(PayloadKind::ComfortNoise);
        PayloadMap { table }
    }
}

impl PayloadMap {
    /// Empty map (only comfort noise accepted).
    pub fn new() -> Self {
        Self::default()
    }

    /// The usual answer: one G.711 codec plus optionally telephone-event on `te`.
    pub fn g711(codec: G711, te: Option<PayloadType>) -> Self {
        let mut m = Self::new().with(codec.payload_type(), PayloadKind::Audio(codec));
        if let Some(te) = te {
            m = m.with(te, PayloadKind::TelephoneEvent);
        }
        m
    }

    /// Add a mapping.
    pub fn with(mut self, pt: PayloadType, kind: PayloadKind) -> Self {
        if let Some(slot) = self.table.get_mut(usize::from(pt.get())) {
            *slot = Some(kind);
        }
        self
    }

    /// What `pt` means, if negotiated.
    pub fn kind(&self, pt: u8) -> Option<PayloadKind> {
        self.table.get(usize::from(pt)).copied().flatten()
    }

    /// The telephone-event payload type, if negotiated.
    pub fn telephone_event(&self) -> Option<PayloadType> {
        self.table
            .iter()
            .position(|k| *k == Some(PayloadKind::TelephoneEvent))
            .and_then(|i| PayloadType::new(i as u8))
    }
}

/// A validated RTP packet borrowed from the datagram (no copies, no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacketRef<'a> {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: PayloadType,
    /// What the payload type means.
    pub kind: PayloadKind,
    /// 16-bit sequence number as on the wire.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: Ssrc,
    /// Payload, padding removed.
    pub payload: &'a [u8],
}

/// RFC 5761 demultiplexing for rtcp-mux: a datagram whose second byte is 192..=223
/// (RTCP packet types 192–223, i.e. RTP "payload types" 64–95 with the marker) is RTCP.
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 4
        && data.first().is_some_and(|b| b >> 6 == 2)
        && data.get(1).is_some_and(|b| (192..=223).contains(b))
}

/// Parse and validate one RTP datagram against the negotiated payload types.
///
/// Rejects: datagrams shorter than the header (including CSRCs / extension / padding they
/// announce), version ≠ 2, payload types that were not negotiated (comfort noise PT 13 is
/// always accepted). Never panics on any input.
pub fn parse_rtp<'a>(data: &'a [u8], pts: &PayloadMap) -> Result<RtpPacketRef<'a>, MediaError> {
    if data.len() < RTP_HEADER_LEN {
        return Err(MediaError::ShortPacket(data.len()));
    }
    let version = data.first().map_or(0, |b| b >> 6);
    if version != 2 {
        return Err(MediaError::BadVersion(version));
    }
    let mut buf: &[u8] = data;
    let header = rtc_rtp::Header::unmarshal(&mut buf)?;
    let header_len = data.len() - buf.len();
    let mut payload = data
        .get(header_len..)
        .ok_or(MediaError::ShortPacket(data.len()))?;
    if header.padding {
        let pad = usize::from(*payload.last().ok_or(MediaError::ShortPacket(data.len()))?);
        if pad == 0 || pad > payload.len() {
            return Err(MediaError::ShortPacket(data.len()));
        }
        payload = payload.get(..payload.len() - pad).unwrap_or_default();
    }
    let kind = pts
        .kind(header.payload_type)
        .ok_or(MediaError::UnknownPayloadType(header.payload_type))?;
    let payload_type = PayloadType::new(header.payload_type)
        .ok_or(MediaError::UnknownPayloadType(header.payload_type))?;
    Ok(RtpPacketRef {
        marker: header.marker,
        payload_type,
        kind,
        seq: header.sequence_number,
        timestamp: header.timestamp,
        ssrc: Ssrc(header.ssrc),
        payload,
    })
}

/// Outgoing RTP stream: SSRC, sequence number and timestamp (both wrap), marker on the
/// first packet of each talk-spurt.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: Ssrc,
    payload_type: PayloadType,
    seq: u16,
    timestamp: u32,
    marker_pending: bool,
    packets: u64,
    octets: u64,
    /// Packet arena: packets are split off it, and `reserve` reclaims the storage once the
    /// driver has dropped them — amortised zero allocations per packet.
    arena: BytesMut,
}

impl RtpSender {
    /// A sender with the given SSRC, audio payload type and initial sequence number and
    /// timestamp (the caller picks them at random, per RFC 3550 — this crate has no RNG).
    pub fn new(ssrc: Ssrc, payload_type: PayloadType, initial_seq: u16, initial_ts: u32) -> Self {
        RtpSender {
            ssrc,
            payload_type,
            seq: initial_seq,
            timestamp: initial_ts,
            marker_pending: true,
            packets: 0,
            octets: 0,
            arena: BytesMut::new(),
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Sequence number of the next packet.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// Timestamp of the next audio packet.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Packets sent.
    pub fn packets_sent(&self) -> u64 {
        self.packets
    }

    /// Payload octets sent (RTCP SR semantics: header excluded).
    pub fn octets_sent(&self) -> u64 {
        self.octets
    }

    /// Change the audio payload type (re-INVITE).
    pub fn set_payload_type(&mut self, pt: PayloadType) {
        self.payload_type = pt;
    }

    /// The next audio packet will carry the marker bit (start of a talk-spurt).
    pub fn start_talkspurt(&mut self) {
        self.marker_pending = true;
    }

    /// Advance the media clock by `samples` without sending (silence suppression, or while
    /// telephone-events are being sent); the next audio packet starts a talk-spurt.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.marker_pending = true;
    }

    /// Packetise one encoded audio frame of `samples` samples: uses the current
    /// timestamp, then advances it (with wrap-around) and the sequence number.
    pub fn audio_packet(&mut self, payload: &[u8], samples: u32) -> Bytes {
        let marker = std::mem::take(&mut self.marker_pending);
        let pkt = self.build(self.payload_type, marker, self.timestamp, payload);
        self.timestamp = self.timestamp.wrapping_add(samples);
        pkt
    }

    /// An audio packet at an explicit timestamp (relayed audio, whose timestamps are mapped
    /// from the source stream): the marker is `marker` or a pending talk-spurt start, and the
    /// media clock moves to the end of this frame unless that would move it backwards
    /// (a reordered packet). One payload byte is one sample (G.711).
    pub fn audio_packet_at(&mut self, marker: bool, timestamp: u32, payload: &[u8]) -> Bytes {
        let marker = std::mem::take(&mut self.marker_pending) || marker;
        let pkt = self.build(self.payload_type, marker, timestamp, payload);
        let end = timestamp.wrapping_add(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        if end.wrapping_sub(self.timestamp) < u32::MAX / 2 {
            self.timestamp = end;
        }
        pkt
    }

    /// Packetise a whole run of already-encoded audio into packets of `frame_len` bytes
    /// (= samples for G.711; e.g. `Ptime::samples()`), the first with the marker bit.
    pub fn packetize(&mut self, encoded: &[u8], frame_len: usize) -> Vec<Bytes> {
        self.start_talkspurt();
        encoded
            .chunks(frame_len.max(1))
            .map(|c| self.audio_packet(c, c.len() as u32))
            .collect()
    }

    /// A packet with an explicit payload type and timestamp (RFC 4733 events keep the
    /// timestamp of the event start). Advances only the sequence number.
    pub fn event_packet(
        &mut self,
        pt: PayloadType,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) -> Bytes {
        self.build(pt, marker, timestamp, payload)
    }

    fn build(&mut self, pt: PayloadType, marker: bool, timestamp: u32, payload: &[u8]) -> Bytes {
        // The fixed header (version 2, no padding, extension or CSRC) written directly: no
        // zero-fill and marshal round trip per packet.
        let mut header = [0u8; RTP_HEADER_LEN];
        header[0] = 0x80;
        header[1] = (u8::from(marker) << 7) | (pt.get() & 0x7f);
        header[2..4].copy_from_slice(&self.seq.to_be_bytes());
        header[4..8].copy_from_slice(&timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let total = RTP_HEADER_LEN + payload.len();
        if self.arena.capacity() < total {
            self.arena.reserve(ARENA_SIZE.max(total));
        }
        self.arena.put_slice(&header);
        self.arena.put_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.packets += 1;
        self.octets += payload.len() as u64;
        self.arena.split().freeze()
    }
}

/// Per-stream packet counters (both directions, plus drops by reason).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// RTP packets accepted from the remote.
    pub packets_received: u64,
    /// Bytes (whole datagrams) accepted from the remote.
    pub bytes_received: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Bytes (whole datagrams) sent.
    pub bytes_sent: u64,
    /// Cumulative packets lost (RFC 3550 expected − received; may be negative with dups).
    pub lost: i64,
    /// Interarrival jitter, in RTP timestamp units (RFC 3550 §6.4.1).
    pub jitter: u32,
    /// Dropped because they came from a source we have not latched to (RTP bleed).
    pub dropped_foreign: u64,
    /// Dropped as malformed: too short, wrong version, bad padding, or PT not negotiated.
    pub dropped_malformed: u64,
    /// Of `dropped_malformed`, those with a payload type that was not negotiated.
    pub dropped_unknown_pt: u64,
    /// Dropped by the jitter buffer as too late to play (or duplicate).
    pub dropped_late: u64,
    /// Comfort-noise packets received (valid, not played).
    pub comfort_noise: u64,
    /// Frames concealed (PLC) at playout.
    pub concealed: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The hand-written header is byte for byte what `rtc-rtp` marshals.
    #[test]
    fn built_header_matches_rtc_rtp() {
        use rtc_shared::marshal::Marshal;
        let mut tx = RtpSender::new(Ssrc(0xDEAD_BEEF), PayloadType::PCMA, 0xFFFF, 0xFFFF_FF00);
        for (i, (pt, marker)) in [(8u8, true), (8, false), (101, true), (101, false)]
            .into_iter()
            .enumerate()
        {
            let seq = tx.next_seq();
            let ts = 0xFFFF_FF00u32.wrapping_add(160 * i as u32);
            let payload = [i as u8; 160];
            let pkt = if pt == 8 {
                if marker {
                    tx.start_talkspurt();
                }
                tx.audio_packet(&payload, 160)
            } else {
                tx.event_packet(PayloadType::new(pt).unwrap(), marker, ts, &payload)
            };
            let header = rtc_rtp::Header {
                version: 2,
                marker,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc: 0xDEAD_BEEF,
                ..Default::default()
            };
            let mut want = vec![0u8; RTP_HEADER_LEN];
            header.marshal_to(&mut want[..]).unwrap();
            want.extend_from_slice(&payload);
            assert_eq!(&pkt[..], &want[..], "packet {i}");
        }
        assert_eq!(tx.next_seq(), 3, "sequence numbers wrap");
    }

    fn pts() -> PayloadMap {
        PayloadMap::g711(G711::Pcmu, PayloadType::new(101))
    }

    #[test]
    fn sender_rollover_and_marker() {
        let mut s = RtpSender::new(Ssrc(0x1234_5678), PayloadType::PCMU, 65534, u32::MAX - 159);
        let p = pts();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let pkt = s.audio_packet(&[0xFF; 160], 160);
            let r = parse_rtp(&pkt, &p).unwrap();
            seen.push((r.seq, r.timestamp, r.marker));
        }
        assert_eq!(
            seen,
            vec![
                (65534, u32::MAX - 159, true),
                (65535, 0, false),
                (0, 160, false),
                (1, 320, false)
            ]
        );
        s.skip(160);
        let r2 = s.audio_packet(&[0xFF; 160], 160);
        let r = parse_rtp(&r2, &p).unwrap();
        assert!(r.marker);
        assert_eq!(r.timestamp, 640);
        assert_eq!(s.packets_sent(), 5);
    }

    #[test]
    fn packetize_ptime() {
        let mut s = RtpSender::new(Ssrc(1), PayloadType::PCMA, 0, 0);
        let pkts = s.packetize(&[0xD5; 240 * 3], 240);
        assert_eq!(pkts.len(), 3);
        let p = PayloadMap::g711(G711::Pcma, None);
        let ts: Vec<u32> = pkts
            .iter()
            .map(|b| parse_rtp(b, &p).unwrap().timestamp)
            .collect();
        assert_eq!(ts, vec![0, 240, 480]);
        assert!(parse_rtp(&pkts[0], &p).unwrap().marker);
        assert_eq!(parse_rtp(&pkts[1], &p).unwrap().payload.len(), 240);
    }

    #[test]
    fn rtcp_mux_demux() {
        let mut s = RtpSender::new(Ssrc(1), PayloadType::PCMU, 0, 0);
        assert!(!is_rtcp(&s.audio_packet(&[0xFF; 160], 160)));
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
        assert!(is_rtcp(&[0x81, 201, 0, 1]));
        assert!(!is_rtcp(&[0x80, 200]));
    }

    #[test]
    fn bad_packets_rejected() {
        let p = pts();
        assert!(matches!(
            parse_rtp(&[0x80; 11], &p),
            Err(MediaError::ShortPacket(11))
        ));
        let mut v1 = vec![0x40u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF];
        assert!(matches!(parse_rtp(&v1, &p), Err(MediaError::BadVersion(1))));
        v1[0] = 0x80;
        v1[1] = 18; // G.729, not negotiated
        assert!(matches!(
            parse_rtp(&v1, &p),
            Err(MediaError::UnknownPayloadType(18))
        ));
        v1[1] = 13; // comfort noise always valid
        assert_eq!(parse_rtp(&v1, &p).unwrap().kind, PayloadKind::ComfortNoise);
        // CSRC count says 15 CSRCs but the packet is short
        let csrc = [0x8Fu8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(parse_rtp(&csrc, &p).is_err());
        // padding longer than payload
        let pad = [0xA0u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0x09];
        assert!(parse_rtp(&pad, &p).is_err());
        // valid padding
        let pad = [0xA0u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 0x00, 0x02];
        assert_eq!(parse_rtp(&pad, &p).unwrap().payload, &[0x7F]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_rtp(&data, &pts());
        }

        #[test]
        fn arbitrary_extensions_never_panic(
            profile in prop_oneof![Just(0xBEDEu16), Just(0x1000u16), any::<u16>()],
            ext_words in 0u16..8,
            body in proptest::collection::vec(any::<u8>(), 0..64),
            cc in 0u8..16,
            padding in any::<bool>(),
        ) {
            let mut data = vec![0x90 | cc | if padding { 0x20 } else { 0 }, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
            data.extend_from_slice(&profile.to_be_bytes());
            data.extend_from_slice(&ext_words.to_be_bytes());
            data.extend_from_slice(&body);
            let _ = parse_rtp(&data, &pts());
        }

        #[test]
        fn arbitrary_v2_headers_never_panic(mut data in proptest::collection::vec(any::<u8>(), 12..120)) {
            data[0] = (data[0] & 0x3F) | 0x80;
            let _ = parse_rtp(&data, &pts());
        }
    }
}
