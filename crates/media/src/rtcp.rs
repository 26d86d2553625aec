//! RTCP: RFC 3550 receive statistics and a per-call report scheduler.
//!
//! Packets are built and parsed with `rtc-rtcp`. [`ReceiveStats`] implements the
//! Appendix A.3 (loss) and A.8 (interarrival jitter) algorithms; [`RtcpSession`] emits a
//! compound SR (if we sent media since the last report) or RR, plus SDES CNAME, every
//! [`DEFAULT_INTERVAL`] and consumes the peer's SR/RR (LSR/DLSR → round-trip time).
//!
//! Wall-clock time is an input too: the caller supplies the NTP time once, at creation,
//! and the session extrapolates it from the monotonic `now` values it is given.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};

use crate::{MediaError, SeqNo, Ssrc};

/// Report interval (RFC 3550 recommends 5 s minimum for small sessions).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
pub const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Convert a time since the Unix epoch to a 64-bit NTP timestamp (32.32 fixed point).
pub fn ntp_from_unix(since_unix_epoch: Duration) -> u64 {
    let secs = since_unix_epoch
        .as_secs()
        .wrapping_add(NTP_UNIX_OFFSET_SECS);
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn duration_to_ntp(d: Duration) -> u64 {
    (d.as_secs() << 32).wrapping_add((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// RFC 3550 receive-side statistics for one remote SSRC.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    ssrc: Option<Ssrc>,
    base_seq: Option<SeqNo>,
    highest: Option<SeqNo>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    epoch: Option<Instant>,
    last_transit: Option<i64>,
    /// Jitter estimate in timestamp units (floating point; reported as integer).
    jitter: f64,
    clock_rate: u32,
}

impl ReceiveStats {
    /// Statistics for a stream with the given RTP clock rate (8000 for G.711).
    pub fn new(clock_rate: u32) -> Self {
        ReceiveStats {
            clock_rate,
            ..Default::default()
        }
    }

    /// Start over for a new SSRC.
    pub fn reset(&mut self, ssrc: Ssrc) {
        *self = ReceiveStats {
            ssrc: Some(ssrc),
            ..ReceiveStats::new(self.clock_rate)
        };
    }

    /// The SSRC these statistics are about.
    pub fn ssrc(&self) -> Option<Ssrc> {
        self.ssrc
    }

    /// Record an accepted packet (`seq` already extended).
    pub fn on_packet(&mut self, now: Instant, ssrc: Ssrc, seq: SeqNo, timestamp: u32) {
        if self.ssrc != Some(ssrc) {
            self.reset(ssrc);
        }
        if self.base_seq.is_none_or(|b| seq < b) {
            self.base_seq = Some(seq);
        }
        if self.highest.is_none_or(|h| seq > h) {
            self.highest = Some(seq);
        }
        self.received += 1;
        // A.8: J += (|D| - J) / 16, D from arrival and RTP timestamps in timestamp units
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = (now.saturating_duration_since(epoch).as_micros() as i64)
            .saturating_mul(i64::from(self.clock_rate))
            / 1_000_000;
        let transit = arrival.wrapping_sub(i64::from(timestamp));
        if let Some(prev) = self.last_transit {
            let d = f64::from((transit.wrapping_sub(prev)) as i32).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected (highest − base + 1).
    pub fn expected(&self) -> u64 {
        match (self.base_seq, self.highest) {
            (Some(b), Some(h)) => h.0 - b.0 + 1,
            _ => 0,
        }
    }

    /// Cumulative packets lost (negative if duplicates arrived).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter as u32
    }

    /// Extended highest sequence number as carried in a report block (cycles << 16 | seq),
    /// counted from the first packet's cycle.
    pub fn extended_highest(&self) -> u32 {
        match (self.base_seq, self.highest) {
            (Some(b), Some(h)) => ((h.0 - (b.0 & !0xFFFF)) & 0xFFFF_FFFF) as u32,
            _ => 0,
        }
    }

    /// Build a report block and start a new fraction-lost interval (A.3).
    pub fn report_block(
        &mut self,
        last_sr: u32,
        delay_since_last_sr: u32,
    ) -> Option<ReceptionReport> {
        let ssrc = self.ssrc?;
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        // total_lost is a signed 24-bit field; clamp
        let total_lost = self.lost().clamp(-0x80_0000, 0x7F_FFFF);
        Some(ReceptionReport {
            ssrc: ssrc.0,
            fraction_lost,
            total_lost: (total_lost as i32 as u32) & 0x00FF_FFFF,
            last_sequence_number: self.extended_highest(),
            jitter: self.jitter(),
            last_sender_report: last_sr,
            delay: delay_since_last_sr,
        })
    }
}

/// What the peer told us in its last report about our stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteReport {
    /// Fraction lost (/256) in the last interval.
    pub fraction_lost: u8,
    /// Cumulative lost (24-bit field as received, sign-extended).
    pub total_lost: i32,
    /// Their jitter estimate of our stream (timestamp units).
    pub jitter: u32,
    /// Round-trip time from LSR/DLSR, if the peer echoed one of our SRs.
    pub rtt: Option<Duration>,
}

/// What our sender did since the start (for SR sender info).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// RTP timestamp corresponding to `now`.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u64,
    /// Payload octets sent.
    pub octets: u64,
}

/// Per-call RTCP state.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    local_ssrc: Ssrc,
    cname: Bytes,
    interval: Duration,
    next_report: Instant,
    base: Instant,
    ntp_base: u64,
    last_sr_from_peer: Option<(u32, Instant)>,
    packets_at_last_report: u64,
    remote: Option<RemoteReport>,
    reports_sent: u64,
    reports_received: u64,
}

impl RtcpSession {
    /// `ntp_now` is the wall clock at `now` as a 64-bit NTP timestamp (see [`ntp_from_unix`]).
    pub fn new(local_ssrc: Ssrc, cname: &str, now: Instant, ntp_now: u64) -> Self {
        RtcpSession {
            local_ssrc,
            cname: Bytes::copy_from_slice(cname.as_bytes()),
            interval: DEFAULT_INTERVAL,
            // first report half an interval in (RFC 3550 §6.2: initial interval halved)
            next_report: now + DEFAULT_INTERVAL / 2,
            base: now,
            ntp_base: ntp_now,
            last_sr_from_peer: None,
            packets_at_last_report: 0,
            remote: None,
            reports_sent: 0,
            reports_received: 0,
        }
    }

    /// Change the report interval.
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval.max(Duration::from_millis(100));
    }

    /// NTP time at `now`.
    pub fn ntp_at(&self, now: Instant) -> u64 {
        self.ntp_base
            .wrapping_add(duration_to_ntp(now.saturating_duration_since(self.base)))
    }

    /// When the next report is due.
    pub fn next_report(&self) -> Instant {
        self.next_report
    }

    /// The peer's latest report about our stream.
    pub fn remote_report(&self) -> Option<RemoteReport> {
        self.remote
    }

    /// Reports sent / received.
    pub fn counts(&self) -> (u64, u64) {
        (self.reports_sent, self.reports_received)
    }

    /// If a report is due at `now`, build it: SR when we have sent media since the last
    /// report, otherwise RR; with a report block for `rx` when we receive media.
    pub fn poll(
        &mut self,
        now: Instant,
        tx: SenderInfo,
        rx: Option<&mut ReceiveStats>,
    ) -> Option<Bytes> {
        if now < self.next_report {
            return None;
        }
        self.next_report = now + self.interval;
        self.build_report(now, tx, rx).ok()
    }

    /// Build a compound report now (regardless of the schedule).
    pub fn build_report(
        &mut self,
        now: Instant,
        tx: SenderInfo,
        rx: Option<&mut ReceiveStats>,
    ) -> Result<Bytes, MediaError> {
        let (lsr, dlsr) = match self.last_sr_from_peer {
            Some((mid, at)) => {
                let d = now.saturating_duration_since(at);
                (mid, ((duration_to_ntp(d) >> 16) & 0xFFFF_FFFF) as u32)
            }
            None => (0, 0),
        };
        let reports: Vec<ReceptionReport> = rx
            .and_then(|r| r.report_block(lsr, dlsr))
            .into_iter()
            .collect();
        let sending = tx.packets > self.packets_at_last_report;
        self.packets_at_last_report = tx.packets;
        let sdes = SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: self.local_ssrc.0,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: self.cname.clone(),
                }],
            }],
        };
        let first: Box<dyn rtc_rtcp::packet::Packet> = if sending {
            Box::new(SenderReport {
                ssrc: self.local_ssrc.0,
                ntp_time: self.ntp_at(now),
                rtp_time: tx.rtp_timestamp,
                packet_count: tx.packets as u32,
                octet_count: tx.octets as u32,
                reports,
                profile_extensions: Bytes::new(),
            })
        } else {
            Box::new(ReceiverReport {
                ssrc: self.local_ssrc.0,
                reports,
                profile_extensions: Bytes::new(),
            })
        };
        let out = rtc_rtcp::packet::marshal(&[first, Box::new(sdes)])?;
        self.reports_sent += 1;
        Ok(out.freeze())
    }

    /// Consume an incoming RTCP datagram (compound or single).
    pub fn handle(&mut self, now: Instant, data: &[u8]) -> Result<(), MediaError> {
        if data.len() < 4 {
            return Err(MediaError::ShortPacket(data.len()));
        }
        let version = data.first().map_or(0, |b| b >> 6);
        if version != 2 {
            return Err(MediaError::BadVersion(version));
        }
        let mut buf = data;
        let packets = rtc_rtcp::packet::unmarshal(&mut buf)?;
        self.reports_received += 1;
        for p in &packets {
            let any = p.as_any();
            if let Some(sr) = any.downcast_ref::<SenderReport>() {
                self.last_sr_from_peer = Some((((sr.ntp_time >> 16) & 0xFFFF_FFFF) as u32, now));
                self.consume_blocks(now, &sr.reports);
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                self.consume_blocks(now, &rr.reports);
            }
        }
        Ok(())
    }

    fn consume_blocks(&mut self, now: Instant, blocks: &[ReceptionReport]) {
        for b in blocks.iter().filter(|b| b.ssrc == self.local_ssrc.0) {
            let rtt = if b.last_sender_report != 0 {
                let a = ((self.ntp_at(now) >> 16) & 0xFFFF_FFFF) as u32;
                let r = a.wrapping_sub(b.last_sender_report).wrapping_sub(b.delay);
                // anything above ~1 minute is nonsense (clock mix-up / wrap)
                (r < 60 << 16).then(|| Duration::from_micros(u64::from(r) * 1_000_000 / 65536))
            } else {
                None
            };
            let total = b.total_lost & 0x00FF_FFFF;
            let total = if total & 0x80_0000 != 0 {
                (total | 0xFF00_0000) as i32
            } else {
                total as i32
            };
            self.remote = Some(RemoteReport {
                fraction_lost: b.fraction_lost,
                total_lost: total,
                jitter: b.jitter,
                rtt,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SeqUnwrapper;

    #[test]
    fn loss_jitter_and_extended_seq() {
        let t0 = crate::testutil::t0();
        let mut rs = ReceiveStats::new(8000);
        let mut un = SeqUnwrapper::new();
        // 100 packets across the 16-bit wrap, every 10th lost, perfect timing
        for i in 0u32..100 {
            let seq = 65500u16.wrapping_add(i as u16);
            if i % 10 == 5 {
                continue;
            }
            let now = t0 + Duration::from_millis(u64::from(i) * 20);
            rs.on_packet(now, Ssrc(9), un.unwrap(seq), i * 160);
        }
        assert_eq!(rs.expected(), 100);
        assert_eq!(rs.lost(), 10);
        assert_eq!(rs.jitter(), 0);
        // highest = 65500+99 = 65599 → cycles 1, seq 63
        assert_eq!(rs.extended_highest(), (1 << 16) | 63);
        let rb = rs.report_block(0, 0).unwrap();
        assert_eq!(rb.fraction_lost, (10 * 256 / 100) as u8);
        assert_eq!(rb.total_lost, 10);
        // next interval: no loss
        let rb2 = rs.report_block(0, 0).unwrap();
        assert_eq!(rb2.fraction_lost, 0);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let t0 = crate::testutil::t0();
        let mut rs = ReceiveStats::new(8000);
        // alternate arrival offsets of 0 and 10 ms (80 ts units): |D| = 80 each time
        for i in 0u32..400 {
            let off = if i % 2 == 0 { 0 } else { 10 };
            let now = t0 + Duration::from_millis(u64::from(i) * 20 + off);
            rs.on_packet(now, Ssrc(1), SeqNo(u64::from(i) + 1), i * 160);
        }
        let j = rs.jitter();
        assert!((78..=80).contains(&j), "jitter {j}");
    }

    #[test]
    fn sr_rr_round_trip_and_rtt() {
        let t0 = crate::testutil::t0();
        let ntp0 = ntp_from_unix(Duration::from_secs(1_700_000_000));
        let mut a = RtcpSession::new(Ssrc(0xA), "a@frontdoor", t0, ntp0);
        let mut b = RtcpSession::new(Ssrc(0xB), "b@frontdoor", t0, ntp0);
        let mut b_rx = ReceiveStats::new(8000);
        b_rx.on_packet(t0, Ssrc(0xA), SeqNo(1 << 16), 0);
        // nothing before the first (half) interval
        assert!(a.poll(t0, SenderInfo::default(), None).is_none());
        // A sends an SR at 2.5 s
        let t1 = t0 + Duration::from_millis(2500);
        let sr = a
            .poll(
                t1,
                SenderInfo {
                    rtp_timestamp: 20000,
                    packets: 125,
                    octets: 20000,
                },
                None,
            )
            .unwrap();
        let parsed = rtc_rtcp::packet::unmarshal(&mut &sr[..]).unwrap();
        assert!(parsed[0].as_any().downcast_ref::<SenderReport>().is_some());
        // the SR takes 30 ms to reach B
        b.handle(t1 + Duration::from_millis(30), &sr).unwrap();
        // B answers 100 ms later with an RR (it sends nothing) — reaches A after 30 ms
        let t2 = t1 + Duration::from_millis(130);
        let rr = b
            .build_report(t2, SenderInfo::default(), Some(&mut b_rx))
            .unwrap();
        let parsed = rtc_rtcp::packet::unmarshal(&mut &rr[..]).unwrap();
        let rr_pkt = parsed[0].as_any().downcast_ref::<ReceiverReport>().unwrap();
        assert_eq!(rr_pkt.reports[0].ssrc, 0xA);
        assert_ne!(rr_pkt.reports[0].last_sender_report, 0);
        a.handle(t2 + Duration::from_millis(30), &rr).unwrap();
        let rtt = a.remote_report().unwrap().rtt.unwrap();
        assert!(
            rtt >= Duration::from_millis(59) && rtt <= Duration::from_millis(61),
            "rtt {rtt:?}"
        );
    }

    #[test]
    fn garbage_rtcp_is_an_error_not_a_panic() {
        let t0 = crate::testutil::t0();
        let mut a = RtcpSession::new(Ssrc(1), "x", t0, 0);
        assert!(a.handle(t0, &[]).is_err());
        assert!(a.handle(t0, &[0x80, 200, 0, 50, 1, 2]).is_err());
        assert!(a.handle(t0, &[0x40, 200, 0, 0]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_rtcp_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let t0 = crate::testutil::t0();
            let mut a = RtcpSession::new(Ssrc(1), "x", t0, 0);
            let _ = a.handle(t0, &data);
        }
    }
}
