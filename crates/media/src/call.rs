//! [`MediaSession`]: one call leg's media, sans-IO.
//!
//! The tokio driver owns the UDP socket(s) and a timer and does, per call:
//!
//! ```text
//! on RTP datagram  → session.handle_rtp(now, from, &buf)
//! on RTCP datagram → session.handle_rtcp(now, from, &buf)
//! on timer         → session.handle_timeout(now);
//!                    while let Some(p) = session.poll_rtp(now)  { send_to(p, session.remote_addr()) }
//!                    if let Some(p) = session.poll_rtcp(now)    { send_to(p, rtcp addr) }
//!                    while let Some(ev) = session.poll_event()  { dialplan(ev) }
//!                    if session.media_timeout(now)              { hang up }
//!                    sleep_until(session.poll_timeout())
//! ```
//!
//! Per 20 ms tick: one jitter-buffer pop → G.711 decode → PLC → in-band DTMF (if enabled)
//! → outgoing frame (RFC 4733 event, echo, prompt, hold music or silence) → RTP packet.
//! Receiving a packet copies the payload into the jitter buffer's ring; nothing on the
//! per-packet path allocates except the outgoing `Bytes` (split off a reused arena).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::dtmf::info::parse_info;
use crate::dtmf::rfc4733::{DEFAULT_DURATION, DEFAULT_VOLUME};
use crate::dtmf::{
    Digit, DtmfDedup, DtmfEvent, DtmfSender, DtmfSource, InbandDetector, TelephoneEventReceiver,
};
use crate::g711::{G711, MAX_FRAME_SAMPLES, Ptime};
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, Plc, PushOutcome};
use crate::latch::{Latch, LatchDecision, LatchMode};
use crate::prompt::{Idle, Prompt, PromptPlayer};
use crate::rtcp::{ReceiveStats, RemoteReport, RtcpSession, SenderInfo};
use crate::rtp::{PacketStats, PayloadKind, PayloadMap, RtpSender, parse_rtp};
use crate::{MediaError, PayloadType, SeqUnwrapper, Ssrc};

/// Default RTP inactivity timeout.
pub const DEFAULT_MEDIA_TIMEOUT: Duration = Duration::from_secs(30);

/// When to run the in-band DTMF detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InbandMode {
    /// Only when no telephone-event payload type was negotiated (default).
    #[default]
    Auto,
    /// Always (both sources are then de-duplicated).
    Always,
    /// Never.
    Off,
}

/// Everything a session needs from the SDP negotiation and the configuration.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Negotiated G.711 law.
    pub codec: G711,
    /// Negotiated packetisation time.
    pub ptime: Ptime,
    /// Negotiated telephone-event payload type (both directions), if any.
    pub telephone_event: Option<PayloadType>,
    /// Remote RTP address from the SDP.
    pub remote: SocketAddr,
    /// Latching behaviour.
    pub latch: LatchMode,
    /// Our SSRC (random, chosen by the caller).
    pub ssrc: Ssrc,
    /// First sequence number (random).
    pub initial_seq: u16,
    /// First timestamp (random).
    pub initial_ts: u32,
    /// Jitter buffer settings (its ptime is overridden by `ptime`).
    pub jitter: JitterConfig,
    /// No RTP for this long (and not on hold) → [`MediaSession::media_timeout`].
    pub media_timeout: Duration,
    /// In-band detection policy.
    pub inband: InbandMode,
    /// RTCP CNAME.
    pub cname: String,
    /// Wall clock at session creation as NTP (see [`crate::rtcp::ntp_from_unix`]).
    pub ntp_now: u64,
}

impl MediaConfig {
    /// A configuration with defaults for everything but the negotiated essentials.
    pub fn new(codec: G711, remote: SocketAddr, ssrc: Ssrc) -> Self {
        MediaConfig {
            codec,
            ptime: Ptime::DEFAULT,
            telephone_event: Some(PayloadType::TELEPHONE_EVENT_DEFAULT),
            remote,
            latch: LatchMode::Sdp,
            ssrc,
            initial_seq: 0,
            initial_ts: 0,
            jitter: JitterConfig::default(),
            media_timeout: DEFAULT_MEDIA_TIMEOUT,
            inband: InbandMode::Auto,
            cname: format!("{ssrc}@frontdoor"),
            ntp_now: 0,
        }
    }
}

/// Something the dialplan / driver should know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// A key press (already de-duplicated across sources).
    Dtmf(DtmfEvent),
    /// We latched to a new remote address (NAT): send there from now on.
    Latched(SocketAddr),
    /// The remote changed SSRC (new stream; buffers were reset).
    SsrcChanged(Ssrc),
}

/// Why a received datagram was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// From a source we do not accept media from (or on latch probation).
    Foreign,
    /// Not valid RTP (short, version, padding, extension).
    Malformed,
    /// Payload type not negotiated.
    UnknownPayloadType,
    /// Too late for playout.
    Late,
    /// Already received.
    Duplicate,
}

/// What [`MediaSession::handle_rtp`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Audio queued for playout.
    Audio,
    /// Telephone-event processed.
    TelephoneEvent,
    /// Comfort noise (valid, nothing to play).
    ComfortNoise,
    /// Dropped (and counted).
    Dropped(DropReason),
}

/// A snapshot of the session's statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaStats {
    /// Packet counters, loss and jitter.
    pub packets: PacketStats,
    /// Jitter buffer counters.
    pub jitter_buffer: JitterStats,
    /// Current jitter-buffer target delay.
    pub playout_delay: Duration,
    /// What the peer reports about our stream (loss, jitter, RTT).
    pub remote: Option<RemoteReport>,
    /// The address media is sent to.
    pub remote_addr: SocketAddr,
}

/// One call leg's media state (see the module docs for how a driver uses it).
#[derive(Debug)]
pub struct MediaSession {
    cfg: MediaConfig,
    pts: PayloadMap,
    latch: Latch,
    sender: RtpSender,
    rx_ssrc: Option<Ssrc>,
    unwrap: SeqUnwrapper,
    rx_stats: ReceiveStats,
    jb: JitterBuffer,
    plc: Plc,
    te_rx: TelephoneEventReceiver,
    dtmf_tx: DtmfSender,
    inband: Option<InbandDetector>,
    dedup: DtmfDedup,
    player: PromptPlayer,
    rtcp: RtcpSession,
    echo: bool,
    on_hold: bool,
    last_rx: Instant,
    next_tick: Instant,
    events: VecDeque<MediaEvent>,
    stats: PacketStats,
    pcm: [i16; MAX_FRAME_SAMPLES],
    enc: [u8; MAX_FRAME_SAMPLES],
}

/// How many ticks the pacing clock may fall behind before it is reset instead of bursting.
const MAX_TICK_BACKLOG: u32 = 5;

impl MediaSession {
    /// A session starting at `now` (the first packet is due immediately).
    pub fn new(now: Instant, cfg: MediaConfig) -> Self {
        let pts = PayloadMap::g711(cfg.codec, cfg.telephone_event);
        let inband_on = match cfg.inband {
            InbandMode::Auto => cfg.telephone_event.is_none(),
            InbandMode::Always => true,
            InbandMode::Off => false,
        };
        let jcfg = JitterConfig {
            ptime: cfg.ptime,
            ..cfg.jitter
        };
        MediaSession {
            pts,
            latch: Latch::new(cfg.latch, cfg.remote),
            sender: RtpSender::new(
                cfg.ssrc,
                cfg.codec.payload_type(),
                cfg.initial_seq,
                cfg.initial_ts,
            ),
            rx_ssrc: None,
            unwrap: SeqUnwrapper::new(),
            rx_stats: ReceiveStats::new(crate::g711::SAMPLE_RATE),
            jb: JitterBuffer::new(jcfg),
            plc: Plc::default(),
            te_rx: TelephoneEventReceiver::new(),
            dtmf_tx: DtmfSender::new(cfg.ptime.samples() as u32),
            inband: inband_on.then(InbandDetector::new),
            dedup: DtmfDedup::new(cfg.telephone_event.is_some()),
            player: PromptPlayer::new(cfg.codec, cfg.ptime),
            rtcp: RtcpSession::new(cfg.ssrc, &cfg.cname, now, cfg.ntp_now),
            echo: false,
            on_hold: false,
            last_rx: now,
            next_tick: now,
            events: VecDeque::with_capacity(16),
            stats: PacketStats::default(),
            pcm: [0; MAX_FRAME_SAMPLES],
            enc: [0; MAX_FRAME_SAMPLES],
            cfg,
        }
    }

    /// Where to send RTP now (the SDP address, or the latched one).
    pub fn remote_addr(&self) -> SocketAddr {
        self.latch.remote()
    }

    /// New remote SDP address (re-INVITE): resets latching.
    pub fn set_remote(&mut self, sdp_addr: SocketAddr) {
        self.latch.reset(sdp_addr);
    }

    /// Echo mode: send back the caller's own (jitter-buffered) audio.
    pub fn set_echo(&mut self, on: bool) {
        self.echo = on;
    }

    /// The call is on hold (no media expected): suspends the media timeout.
    pub fn set_hold(&mut self, on: bool, now: Instant) {
        self.on_hold = on;
        self.last_rx = now;
    }

    /// Queue a prompt.
    pub fn play(&mut self, prompt: Prompt) {
        self.player.play(prompt);
    }

    /// Stop prompts (barge-in).
    pub fn stop_prompts(&mut self) {
        self.player.stop();
    }

    /// Whether a prompt is still playing.
    pub fn is_playing(&self) -> bool {
        self.player.is_playing()
    }

    /// Loop `prompt` (hold music) when no prompt is playing; `None` = silence.
    pub fn set_idle_audio(&mut self, prompt: Option<Prompt>) {
        self.player
            .set_idle(prompt.map_or(Idle::Silence, Idle::Loop));
    }

    /// Send a digit as RFC 4733 (requires a negotiated telephone-event PT).
    pub fn send_dtmf(
        &mut self,
        digit: Digit,
        duration: Option<Duration>,
    ) -> Result<(), MediaError> {
        if self.cfg.telephone_event.is_none() {
            return Err(MediaError::UnknownPayloadType(
                PayloadType::TELEPHONE_EVENT_DEFAULT.get(),
            ));
        }
        self.dtmf_tx
            .send(digit, duration.unwrap_or(DEFAULT_DURATION), DEFAULT_VOLUME);
        Ok(())
    }

    /// A SIP INFO with a DTMF body arrived: parse it and, unless it duplicates a digit from
    /// another source, queue a [`MediaEvent::Dtmf`].
    pub fn handle_info(
        &mut self,
        now: Instant,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), MediaError> {
        let info = parse_info(content_type, body)?;
        let ev = DtmfEvent {
            digit: info.digit,
            source: DtmfSource::Info,
            at: now,
            duration: info.duration,
            volume: None,
        };
        self.offer_dtmf(ev);
        Ok(())
    }

    fn offer_dtmf(&mut self, ev: DtmfEvent) {
        if let Some(ev) = self.dedup.accept(ev) {
            self.events.push_back(MediaEvent::Dtmf(ev));
        }
    }

    /// Process one datagram received on the RTP port.
    pub fn handle_rtp(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> RxOutcome {
        let pkt = match parse_rtp(data, &self.pts) {
            Ok(p) => p,
            Err(e) => {
                self.stats.dropped_malformed += 1;
                if matches!(e, MediaError::UnknownPayloadType(_)) {
                    self.stats.dropped_unknown_pt += 1;
                    return RxOutcome::Dropped(DropReason::UnknownPayloadType);
                }
                return RxOutcome::Dropped(DropReason::Malformed);
            }
        };
        match self.latch.check(now, source, pkt.ssrc, pkt.seq) {
            LatchDecision::Accept => {}
            LatchDecision::Latched => self.events.push_back(MediaEvent::Latched(source)),
            LatchDecision::Foreign => {
                self.stats.dropped_foreign += 1;
                return RxOutcome::Dropped(DropReason::Foreign);
            }
        }
        if self.rx_ssrc != Some(pkt.ssrc) {
            if self.rx_ssrc.is_some() {
                self.events.push_back(MediaEvent::SsrcChanged(pkt.ssrc));
                self.jb.reset();
                self.unwrap.reset();
            }
            self.rx_ssrc = Some(pkt.ssrc);
        }
        let seq = self.unwrap.unwrap(pkt.seq);
        self.rx_stats.on_packet(now, pkt.ssrc, seq, pkt.timestamp);
        self.stats.packets_received += 1;
        self.stats.bytes_received += data.len() as u64;
        self.last_rx = now;
        match pkt.kind {
            PayloadKind::Audio(_) => {
                match self
                    .jb
                    .push(now, seq, pkt.timestamp, pkt.payload_type, pkt.payload)
                {
                    PushOutcome::Queued | PushOutcome::Resync => RxOutcome::Audio,
                    PushOutcome::Late => {
                        self.stats.dropped_late += 1;
                        RxOutcome::Dropped(DropReason::Late)
                    }
                    PushOutcome::Duplicate => {
                        self.stats.dropped_late += 1;
                        RxOutcome::Dropped(DropReason::Duplicate)
                    }
                    PushOutcome::TooLarge => {
                        self.stats.dropped_malformed += 1;
                        RxOutcome::Dropped(DropReason::Malformed)
                    }
                }
            }
            PayloadKind::TelephoneEvent => {
                match self.te_rx.on_packet(now, pkt.timestamp, pkt.payload) {
                    Ok(evs) => {
                        for ev in evs.into_iter().flatten() {
                            self.offer_dtmf(ev);
                        }
                        RxOutcome::TelephoneEvent
                    }
                    Err(_) => {
                        self.stats.dropped_malformed += 1;
                        RxOutcome::Dropped(DropReason::Malformed)
                    }
                }
            }
            PayloadKind::ComfortNoise => {
                self.stats.comfort_noise += 1;
                RxOutcome::ComfortNoise
            }
        }
    }

    /// Process one RTCP datagram (RTCP port, or muxed). Only the remote's IP is accepted.
    pub fn handle_rtcp(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &[u8],
    ) -> Result<(), MediaError> {
        if source.ip() != self.latch.remote().ip() {
            return Err(MediaError::ForeignSource);
        }
        self.rtcp.handle(now, data)
    }

    /// Timers other than the packet tick (telephone-events whose end packets were lost).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(ev) = self.te_rx.poll_timeout(now) {
            self.offer_dtmf(ev);
        }
    }

    /// Moves the next packet tick to `at`; later ones follow every ptime from there. A driver
    /// that paces many sessions uses it to choose a session's phase in the ptime cycle (e.g.
    /// the least-loaded slot of its timer wheel) instead of the moment it was created.
    pub fn set_next_tick(&mut self, at: Instant) {
        self.next_tick = at;
    }

    /// The negotiated packetisation time.
    pub fn ptime(&self) -> Ptime {
        self.cfg.ptime
    }

    /// The latching mode: with [`LatchMode::Sdp`] media is accepted only from
    /// [`Self::remote_addr`], so a driver may `connect` its socket to it.
    pub fn latch_mode(&self) -> LatchMode {
        self.cfg.latch
    }

    /// When the driver should call back next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick.min(self.rtcp.next_report())
    }

    /// The playout/pacing tick: returns the next outgoing RTP packet when one is due at
    /// `now` (one per ptime), `None` otherwise. Call in a loop until `None`.
    pub fn poll_rtp(&mut self, now: Instant) -> Option<Bytes> {
        if now < self.next_tick {
            return None;
        }
        let pt = self.cfg.ptime.duration();
        self.next_tick += pt;
        let behind = now.saturating_duration_since(self.next_tick);
        if behind > pt * MAX_TICK_BACKLOG {
            // The driver stalled: don't burst. Skip the missed ticks but keep the phase (the
            // next tick is the first one after `now` on the old grid), so that a driver
            // which spreads its sessions over the ptime keeps them spread.
            let pt_ns = pt.as_nanos().max(1);
            let skip = behind.as_nanos() / pt_ns + 1;
            let skip = u32::try_from(skip).unwrap_or(u32::MAX);
            self.next_tick += pt.saturating_mul(skip);
        }
        self.playout_tick(now);
        let n = self.cfg.ptime.samples();
        let samples = n as u32;
        let pkt = if let Some(ev) = self.dtmf_tx.next(self.sender.timestamp()) {
            let te = self
                .cfg
                .telephone_event
                .unwrap_or(PayloadType::TELEPHONE_EVENT_DEFAULT);
            let p = self
                .sender
                .event_packet(te, ev.marker, ev.timestamp, &ev.payload);
            self.sender.skip(samples);
            p
        } else if self.echo {
            let (pcm, enc) = (
                self.pcm.get(..n).unwrap_or_default(),
                self.enc.get_mut(..n).unwrap_or_default(),
            );
            let len = self.cfg.codec.encode_into(pcm, enc);
            let payload = self.enc.get(..len).unwrap_or_default();
            self.sender.audio_packet(payload, samples)
        } else {
            let frame = self.player.next_frame();
            self.sender.audio_packet(&frame, samples)
        };
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += pkt.len() as u64;
        Some(pkt)
    }

    /// One jitter-buffer pop, decode / conceal into `self.pcm`, in-band detection.
    fn playout_tick(&mut self, now: Instant) {
        let n = self.cfg.ptime.samples();
        let mut audio = true;
        match self.jb.pop(now) {
            Playout::Frame { pt, payload, .. } => {
                let codec = match self.pts.kind(pt.get()) {
                    Some(PayloadKind::Audio(c)) => c,
                    _ => self.cfg.codec,
                };
                let out = self.pcm.get_mut(..n).unwrap_or_default();
                let got = codec.decode_into(payload, out);
                if let Some(rest) = out.get_mut(got..) {
                    rest.fill(0);
                }
                self.plc.good(out);
            }
            Playout::Missing => {
                self.stats.concealed += 1;
                self.plc.conceal(self.pcm.get_mut(..n).unwrap_or_default());
            }
            Playout::Buffering => {
                self.pcm.fill(0);
                audio = false;
            }
        }
        if audio {
            if let Some(det) = self.inband.as_mut() {
                let mut found: [Option<DtmfEvent>; 4] = [None; 4];
                let mut i = 0;
                det.process(now, self.pcm.get(..n).unwrap_or_default(), |e| {
                    if let Some(slot) = found.get_mut(i) {
                        *slot = Some(e);
                        i += 1;
                    }
                });
                for ev in found.into_iter().flatten() {
                    self.offer_dtmf(ev);
                }
            }
        }
    }

    /// The next RTCP compound packet, when one is due.
    pub fn poll_rtcp(&mut self, now: Instant) -> Option<Bytes> {
        if now < self.rtcp.next_report() {
            return None;
        }
        let tx = SenderInfo {
            rtp_timestamp: self.sender.timestamp(),
            packets: self.sender.packets_sent(),
            octets: self.sender.octets_sent(),
        };
        let rx = (self.rx_stats.received() > 0).then_some(&mut self.rx_stats);
        self.rtcp.poll(now, tx, rx)
    }

    /// Next event for the driver/dialplan.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// True when no RTP has been accepted for `media_timeout` and the call is not on hold.
    pub fn media_timeout(&self, now: Instant) -> bool {
        !self.on_hold && now.saturating_duration_since(self.last_rx) >= self.cfg.media_timeout
    }

    /// Statistics snapshot.
    pub fn stats(&self) -> MediaStats {
        let mut packets = self.stats;
        packets.lost = self.rx_stats.lost();
        packets.jitter = self.rx_stats.jitter();
        MediaStats {
            packets,
            jitter_buffer: self.jb.stats(),
            playout_delay: self.jb.target_delay(),
            remote: self.rtcp.remote_report(),
            remote_addr: self.latch.remote(),
        }
    }

    /// The negotiated payload types.
    pub fn payload_map(&self) -> &PayloadMap {
        &self.pts
    }

    /// Whether in-band detection is running.
    pub fn inband_enabled(&self) -> bool {
        self.inband.is_some()
    }
}
