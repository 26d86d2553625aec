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

use crate::barge::{BargeInConfig, BargeInDetector, EchoTracker};
use crate::bridge::{Relay, RelayTarget};
use crate::dtmf::info::parse_info;
use crate::dtmf::rfc4733::{DEFAULT_DURATION, DEFAULT_VOLUME, parse_telephone_event};
use crate::dtmf::{
    Digit, DtmfDedup, DtmfEvent, DtmfSender, DtmfSource, InbandDetector, TelephoneEventReceiver,
};
use crate::g711::{G711, MAX_FRAME_SAMPLES, Ptime};
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, Plc, PushOutcome};
use crate::latch::{Latch, LatchDecision, LatchMode};
use crate::prompt::{Idle, Prompt, PromptPlayer};
use crate::record::{CallRecorder, RecordConfig, RecordingSummary};
use crate::rtcp::{ReceiveStats, RemoteReport, RtcpSession, SenderInfo};
use crate::rtp::{PacketStats, PayloadKind, PayloadMap, RtpPacketRef, RtpSender, parse_rtp};
use crate::vad::{Endpointer, FrameStats, SILENCE_DB, VadConfig, VadEvent, power, to_db};
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

/// A speech turn for [`MediaSession::listen`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ListenConfig {
    /// Endpointing (end silence, maximum length, no-input timeout, ...).
    pub vad: VadConfig,
    /// `Some`: the caller may interrupt prompts (speech or a key stops them at once, and the
    /// endpointer runs during prompts); `None`: the endpointer starts when the prompts end.
    pub barge_in: Option<BargeInConfig>,
}

/// What interrupted a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BargeInCause {
    /// The caller spoke ([`crate::barge::BargeInDetector`]).
    Speech,
    /// The caller pressed a key.
    Dtmf,
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
    /// Barge-in during a [`MediaSession::listen`] turn: the session has already stopped the
    /// prompts (the next outgoing packet is silence / idle audio).
    BargeIn {
        /// Speech onset (or key press) position on the caller's clock, samples
        /// ([`MediaSession::rx_position`]).
        at: u64,
        /// Position of the decision.
        detected_at: u64,
        /// Speech or key.
        cause: BargeInCause,
    },
    /// The endpointer of a [`MediaSession::listen`] turn decided something. After
    /// [`VadEvent::SpeechEnded`] fetch the audio with [`MediaSession::take_utterance`]; after
    /// `SpeechEnded` or `NoInput` the turn is over.
    Vad(VadEvent),
}

/// State of a [`MediaSession::listen`] turn.
#[derive(Debug)]
struct SpeechTurn {
    vad: Endpointer,
    echo: EchoTracker,
    barge: Option<BargeInDetector>,
    barge_allowed: bool,
    utterance: Vec<i16>,
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
    bridged: bool,
    on_hold: bool,
    last_rx: Instant,
    next_tick: Instant,
    events: VecDeque<MediaEvent>,
    stats: PacketStats,
    pcm: [i16; MAX_FRAME_SAMPLES],
    enc: [u8; MAX_FRAME_SAMPLES],
    /// The stereo call recording, while one runs (boxed: most legs never record).
    recorder: Option<Box<CallRecorder>>,
    /// Samples played out of the caller's stream so far (the speech turn's clock).
    rx_pos: u64,
    speech: Option<Box<SpeechTurn>>,
}

/// Level assumed for an RFC 4733 tone we send, as an echo reference (dBFS).
const DTMF_TONE_DB: f32 = -10.0;

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
            bridged: false,
            on_hold: false,
            last_rx: now,
            next_tick: now,
            events: VecDeque::with_capacity(16),
            stats: PacketStats::default(),
            pcm: [0; MAX_FRAME_SAMPLES],
            enc: [0; MAX_FRAME_SAMPLES],
            recorder: None,
            rx_pos: 0,
            speech: None,
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
            if let Some(rec) = self.recorder.as_mut() {
                rec.digit(&ev);
            }
            if let Some(turn) = self.speech.as_deref_mut()
                && turn.barge.is_some()
                && self.player.is_playing()
            {
                turn.barge = None;
                self.player.stop();
                self.events.push_back(MediaEvent::BargeIn {
                    at: self.rx_pos,
                    detected_at: self.rx_pos,
                    cause: BargeInCause::Dtmf,
                });
            }
            self.events.push_back(MediaEvent::Dtmf(ev));
        }
    }

    /// Starts recording the call in stereo (see [`crate::record`]): left the caller, right
    /// what this leg sends (whatever feeds [`Self::poll_rtp`]). A running recording is
    /// replaced (its audio is lost: finish it first with [`Self::stop_recording`]).
    pub fn start_recording(&mut self, cfg: RecordConfig) {
        self.recorder = Some(Box::new(CallRecorder::new(cfg)));
    }

    /// Whether a recording runs.
    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// The recording reached its maximum length (stop it).
    pub fn recording_full(&self) -> bool {
        self.recorder.as_ref().is_some_and(|r| r.is_full())
    }

    /// The next chunk of the recording ready to write (interleaved stereo 16-bit PCM).
    pub fn poll_recording(&mut self) -> Option<Vec<i16>> {
        self.recorder.as_mut().and_then(|r| r.poll_chunk())
    }

    /// Ends the recording: the rest of its audio (after the chunks already polled) and totals.
    pub fn stop_recording(&mut self) -> Option<(Vec<i16>, RecordingSummary)> {
        self.recorder.take().map(|r| r.finish())
    }

    /// Taps one outgoing packet into the recording's right channel.
    fn record_sent(&mut self, pkt: &[u8]) {
        let Some(rec) = self.recorder.as_mut() else {
            return;
        };
        let n = self.cfg.ptime.samples();
        // Our own packets: a 12-byte header (no CSRC, extension or padding), then the payload.
        let pt = pkt.get(1).map_or(0, |b| b & 0x7f);
        match (self.pts.kind(pt), pkt.get(12..)) {
            (Some(PayloadKind::Audio(codec)), Some(payload)) => {
                let mut pcm = [0i16; MAX_FRAME_SAMPLES];
                let got = codec.decode_into(payload, &mut pcm);
                rec.engine_audio(pcm.get(..got).unwrap_or_default());
            }
            _ => rec.engine_silence(n),
        }
    }

    /// Start a speech turn: the endpointer runs on the caller's decoded audio (from now when
    /// barge-in is allowed, else from the end of the prompts) and reports
    /// [`MediaEvent::Vad`]; with `cfg.barge_in`, speech (or a key) during a prompt stops the
    /// prompts on this tick and reports [`MediaEvent::BargeIn`]. The no-input timer runs from
    /// the end of the last prompt played (or from now). Call it before queueing the step's
    /// prompt, or after: both arm barge-in for it. Replaces a turn in progress.
    pub fn listen(&mut self, cfg: ListenConfig) {
        let mut vad = Endpointer::new(cfg.vad);
        vad.arm_no_input(self.rx_pos);
        let echo_cfg = cfg.barge_in.map(|b| b.echo).unwrap_or_default();
        self.speech = Some(Box::new(SpeechTurn {
            vad,
            echo: EchoTracker::new(echo_cfg, self.cfg.ptime.duration()),
            barge: cfg.barge_in.map(BargeInDetector::new),
            barge_allowed: cfg.barge_in.is_some(),
            utterance: Vec::new(),
        }));
    }

    /// End the speech turn (a key completed the input, the dialplan moved on).
    pub fn stop_listening(&mut self) {
        self.speech = None;
    }

    /// A speech turn is running (not yet ended by [`VadEvent::SpeechEnded`] / `NoInput`).
    pub fn is_listening(&self) -> bool {
        self.speech.as_ref().is_some_and(|t| !t.vad.is_done())
    }

    /// The utterance of the last [`VadEvent::SpeechEnded`] (8 kHz mono PCM, with pre-roll), or
    /// after a [`VadEvent::SpeechPaused`] the utterance up to that pause (a copy, for a
    /// speculative recognition); empty if none or already taken.
    pub fn take_utterance(&mut self) -> Vec<i16> {
        self.speech
            .as_deref_mut()
            .map(|t| std::mem::take(&mut t.utterance))
            .unwrap_or_default()
    }

    /// Samples of the caller's stream played out so far: the clock of speech positions.
    pub fn rx_position(&self) -> u64 {
        self.rx_pos
    }

    /// The speech turn's measurement of the caller's frame in `self.pcm`.
    fn speech_tick(&mut self, n: usize) {
        let pos = self.rx_pos;
        self.rx_pos += n as u64;
        let Some(turn) = self.speech.as_deref_mut() else {
            return;
        };
        let frame = self.pcm.get(..n).unwrap_or_default();
        let stats = FrameStats::of(frame);
        let echo_db = turn.echo.echo_db();
        if self.player.is_playing()
            && let Some(det) = turn.barge.as_mut()
            && let Some(b) = det.push(pos, n, stats, echo_db)
        {
            self.player.stop();
            turn.barge = None;
            self.events.push_back(MediaEvent::BargeIn {
                at: b.at,
                detected_at: b.detected_at,
                cause: BargeInCause::Speech,
            });
        }
        turn.echo.observe(stats.db);
        let playing = self.player.is_playing();
        if playing {
            // the no-input timer starts when the prompts have ended (listen() usually comes
            // just before the prompt is queued)
            turn.vad.arm_no_input(pos + n as u64);
        }
        // without barge-in the caller is not heard while a prompt plays
        if playing && !turn.barge_allowed {
            return;
        }
        if let Some(ev) = turn.vad.push_analyzed(pos, frame, stats, Some(echo_db)) {
            match ev {
                VadEvent::SpeechEnded { .. } => turn.utterance = turn.vad.take_utterance(),
                // a copy (the endpointer goes on collecting), once per pause
                VadEvent::SpeechPaused { .. } => turn.utterance = turn.vad.utterance_so_far(),
                _ => {}
            }
            self.events.push_back(MediaEvent::Vad(ev));
        }
    }

    /// Process one datagram received on the RTP port.
    pub fn handle_rtp(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> RxOutcome {
        self.receive(now, source, data).0
    }

    /// Bridged mode (see [`crate::bridge`]): received audio is not jitter-buffered or
    /// decoded but handed to the driver for relaying ([`Self::relay_rtp`]), and the pacing
    /// tick sends nothing (the relay sends on this leg's stream instead). Latching,
    /// statistics, RTCP, RFC 4733 digit reporting and the media timeout go on as usual.
    pub fn set_bridged(&mut self, on: bool) {
        if on != self.bridged {
            self.bridged = on;
            self.jb.reset();
            self.sender.start_talkspurt();
        }
    }

    /// What a relay sending on this leg must produce (its codec, ptime, telephone-event).
    pub fn relay_target(&self) -> RelayTarget {
        RelayTarget {
            codec: self.cfg.codec,
            ptime: self.cfg.ptime,
            telephone_event: self.cfg.telephone_event,
        }
    }

    /// Whether the session is bridged.
    pub fn is_bridged(&self) -> bool {
        self.bridged
    }

    /// Like [`Self::handle_rtp`], returning the accepted packet (audio or telephone-event) for
    /// the relay; `None` when it was dropped or is comfort noise.
    pub fn relay_rtp<'a>(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &'a [u8],
    ) -> Option<RtpPacketRef<'a>> {
        match self.receive(now, source, data) {
            (RxOutcome::Audio | RxOutcome::TelephoneEvent, pkt) => pkt,
            _ => None,
        }
    }

    /// Sends `pkt` (accepted on the other leg) on this leg's stream through `relay`; the
    /// packets to send to [`Self::remote_addr`] are pushed to `out`.
    pub fn relay_out(&mut self, relay: &mut Relay, pkt: &RtpPacketRef<'_>, out: &mut Vec<Bytes>) {
        let before = out.len();
        relay.forward(pkt, &mut self.sender, out);
        for p in out.iter().skip(before) {
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += p.len() as u64;
            // What the other leg says is what this leg's caller hears: the right channel.
            self.record_sent(p);
        }
    }

    fn receive<'a>(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &'a [u8],
    ) -> (RxOutcome, Option<RtpPacketRef<'a>>) {
        let pkt = match parse_rtp(data, &self.pts) {
            Ok(p) => p,
            Err(e) => {
                self.stats.dropped_malformed += 1;
                if matches!(e, MediaError::UnknownPayloadType(_)) {
                    self.stats.dropped_unknown_pt += 1;
                    return (RxOutcome::Dropped(DropReason::UnknownPayloadType), None);
                }
                return (RxOutcome::Dropped(DropReason::Malformed), None);
            }
        };
        match self.latch.check(now, source, pkt.ssrc, pkt.seq) {
            LatchDecision::Accept => {}
            LatchDecision::Latched => self.events.push_back(MediaEvent::Latched(source)),
            LatchDecision::Foreign => {
                self.stats.dropped_foreign += 1;
                return (RxOutcome::Dropped(DropReason::Foreign), None);
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
        let outcome = match pkt.kind {
            PayloadKind::Audio(codec) if self.bridged => {
                // Relayed, not played out here; a recording still hears the caller.
                if let Some(rec) = self.recorder.as_mut() {
                    let mut pcm = [0i16; MAX_FRAME_SAMPLES];
                    let got = codec.decode_into(pkt.payload, &mut pcm);
                    rec.caller_audio(pkt.ssrc, pkt.timestamp, pcm.get(..got).unwrap_or_default());
                }
                RxOutcome::Audio
            }
            PayloadKind::Audio(codec) => {
                let pushed = self
                    .jb
                    .push(now, seq, pkt.timestamp, pkt.payload_type, pkt.payload);
                // The recording is not real time: a packet too late for playout still has
                // its place in it (the recorder has its own, longer, lateness limit).
                if let (Some(rec), PushOutcome::Queued | PushOutcome::Resync | PushOutcome::Late) =
                    (self.recorder.as_mut(), pushed)
                {
                    let mut pcm = [0i16; MAX_FRAME_SAMPLES];
                    let got = codec.decode_into(pkt.payload, &mut pcm);
                    rec.caller_audio(pkt.ssrc, pkt.timestamp, pcm.get(..got).unwrap_or_default());
                }
                match pushed {
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
                if let (Some(rec), Some(ev)) =
                    (self.recorder.as_mut(), parse_telephone_event(pkt.payload))
                {
                    if ev.event <= 15 {
                        rec.caller_event(pkt.ssrc, pkt.timestamp, ev.duration, ev.end);
                    }
                }
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
        };
        (outcome, Some(pkt))
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
        if self.bridged {
            // The relay sends on this stream; RFC 4733 digits queued meanwhile are dropped.
            return None;
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
            if let Some(turn) = self.speech.as_deref_mut() {
                // the far end may render the tone (and echo it): assume a loud frame
                turn.echo.push_outgoing_db(DTMF_TONE_DB);
            }
            p
        } else if self.echo {
            let (pcm, enc) = (
                self.pcm.get(..n).unwrap_or_default(),
                self.enc.get_mut(..n).unwrap_or_default(),
            );
            let len = self.cfg.codec.encode_into(pcm, enc);
            if let Some(turn) = self.speech.as_deref_mut() {
                turn.echo.push_outgoing_db(to_db(power(pcm)));
            }
            let payload = self.enc.get(..len).unwrap_or_default();
            self.sender.audio_packet(payload, samples)
        } else {
            let frame = self.player.next_frame();
            if let Some(turn) = self.speech.as_deref_mut() {
                // the reference for echo: what the caller's phone is about to hear
                let mut ref_pcm = [0i16; MAX_FRAME_SAMPLES];
                let out = ref_pcm.get_mut(..n).unwrap_or_default();
                let got = self.cfg.codec.decode_into(&frame, out);
                let db = if got == 0 {
                    SILENCE_DB
                } else {
                    to_db(power(out.get(..got).unwrap_or_default()))
                };
                turn.echo.push_outgoing_db(db);
            }
            self.sender.audio_packet(&frame, samples)
        };
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += pkt.len() as u64;
        self.record_sent(&pkt);
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
        self.speech_tick(n);
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
