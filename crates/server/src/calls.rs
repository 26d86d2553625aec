//! The call application: what the engine does with each call the SIP user agent reports.
//!
//! Plain state, no async: it takes the UA's events and the media engine's notes with `now`,
//! drives the UA (ring, answer, reject, hang up) and the media engine (start a leg, play,
//! echo), owns the RTP port pool and emits the call events.
//!
//! Test numbers until the IVR arrives: `ring` rings for `ring_seconds` before answering (for
//! CANCEL tests); `echo` returns the caller's audio; `digits` plays the welcome prompt, then
//! reads back each key ("you pressed 5"); `answer` and every other number plays the welcome
//! prompt, then hold audio until the caller hangs up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use frontdoor_media::call::{InbandMode, MediaConfig, MediaSession};
use frontdoor_media::g711::{G711, Ptime};
use frontdoor_media::latch::LatchMode;
use frontdoor_media::prompt::{Prompt, PromptLibrary};
use frontdoor_media::{PayloadType, Ssrc};
use frontdoor_sip::sdp::{Codec, Direction, LocalMedia, NegotiatedMedia};
use frontdoor_sip::{CallHandle, EndCause, Transport, UaEvent, UserAgent};

use crate::config::Config;
use crate::events::{EventBody, EventSink};
use crate::media::{Command, LegSpec, MediaEngine, Note};
use crate::ports::PortPool;

/// Prompts the test numbers need; the server refuses to start without them.
pub const REQUIRED_PROMPTS: &[&str] = &[
    "welcome",
    "you-pressed",
    "hold",
    "digit-0",
    "digit-1",
    "digit-2",
    "digit-3",
    "digit-4",
    "digit-5",
    "digit-6",
    "digit-7",
    "digit-8",
    "digit-9",
    "digit-star",
    "digit-pound",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Welcome prompt, then hold audio.
    Answer,
    /// Welcome prompt, then each key read back.
    Digits,
    /// The caller's audio returned.
    Echo,
}

#[derive(Debug)]
struct Call {
    call_id: Arc<str>,
    received_at: Instant,
    answered_at: Option<Instant>,
    port: Option<u16>,
    sockets: Option<(UdpSocket, UdpSocket)>,
    mode: Mode,
    media_started: bool,
    /// Why we hung up, when it was us (reported instead of `local_bye`).
    hangup_cause: Option<&'static str>,
}

/// The call application state.
#[derive(Debug)]
pub struct CallApp {
    calls: HashMap<CallHandle, Call>,
    ports: PortPool,
    events: EventSink,
    media: MediaEngine,
    prompts: Arc<PromptLibrary>,
    answer_timers: BinaryHeap<Reverse<(Instant, u64)>>,
    ring_for: Duration,
    /// Address written into SDP.
    media_ip: IpAddr,
    /// Address RTP sockets bind to.
    bind_ip: IpAddr,
    config: Arc<Config>,
    total: u64,
    /// Ended calls whose media leg the engine is still closing: port to free on `Note::Ended`.
    pending_release: HashMap<u64, (Arc<str>, Option<u16>)>,
}

impl CallApp {
    /// A new application: SDP advertises `media_ip`, sockets bind `bind_ip`, ports from `ports`.
    pub fn new(
        config: Arc<Config>,
        media_ip: IpAddr,
        bind_ip: IpAddr,
        ports: PortPool,
        events: EventSink,
        media: MediaEngine,
        prompts: Arc<PromptLibrary>,
    ) -> Self {
        Self {
            calls: HashMap::new(),
            ports,
            events,
            media,
            prompts,
            answer_timers: BinaryHeap::new(),
            ring_for: Duration::from_secs(config.calls.ring_seconds),
            media_ip,
            bind_ip,
            config,
            total: 0,
            pending_release: HashMap::new(),
        }
    }

    /// Calls up now.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Calls handled since start.
    pub fn total_calls(&self) -> u64 {
        self.total
    }

    /// RTP ports in use.
    pub fn ports_in_use(&self) -> usize {
        self.ports.in_use()
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.answer_timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs due timers (the `ring` number's delayed answer).
    pub fn handle_timeout(&mut self, now: Instant, ua: &mut UserAgent) {
        while let Some(Reverse((at, handle))) = self.answer_timers.peek().copied() {
            if at > now {
                break;
            }
            self.answer_timers.pop();
            let handle = CallHandle(handle);
            if self
                .calls
                .get(&handle)
                .is_some_and(|c| c.answered_at.is_none())
            {
                self.answer(now, ua, handle);
            }
        }
    }

    /// Hangs up every call (shutdown).
    pub fn hangup_all(&mut self, now: Instant, ua: &mut UserAgent) {
        let handles: Vec<CallHandle> = self.calls.keys().copied().collect();
        for h in handles {
            if let Err(e) = ua.hangup(now, h) {
                tracing::debug!(call = %h, error = %e, "hangup at shutdown");
            }
        }
    }

    /// Binds the RTP/RTCP socket pair for a new call; skips ports something else holds.
    fn bind_pair(&mut self) -> Option<(u16, UdpSocket, UdpSocket)> {
        for _ in 0..16 {
            let port = self.ports.allocate()?;
            let rtp = UdpSocket::bind(SocketAddr::new(self.bind_ip, port));
            let rtcp = UdpSocket::bind(SocketAddr::new(self.bind_ip, port.wrapping_add(1)));
            match (rtp, rtcp) {
                (Ok(a), Ok(b)) => return Some((port, a, b)),
                _ => {
                    tracing::debug!(port, "RTP port busy; trying another");
                    self.ports.release(port);
                }
            }
        }
        None
    }

    /// Handles one event from the user agent.
    pub fn handle_event(&mut self, now: Instant, ua: &mut UserAgent, event: UaEvent) {
        match event {
            UaEvent::IncomingCall {
                call,
                call_id,
                from_uri,
                to_uri,
                request_user,
                source,
                transport,
                ..
            } => self.incoming(
                now,
                ua,
                call,
                call_id,
                from_uri,
                to_uri,
                request_user,
                source,
                transport,
            ),
            UaEvent::CallAnswered { call, .. } => {
                if let Some(c) = self.calls.get(&call) {
                    self.events
                        .emit(Some(&c.call_id), EventBody::CallConfirmed {});
                }
            }
            UaEvent::MediaUpdate { call, media } => {
                let Some(c) = self.calls.get(&call) else {
                    return;
                };
                self.events.emit(
                    Some(&c.call_id),
                    EventBody::CallMediaChanged {
                        direction: media.direction.as_str(),
                        remote_rtp: media.remote,
                    },
                );
                if c.media_started {
                    let on_hold = !media.direction.receives() || media.remote.is_none();
                    if let Some(addr) = media.remote {
                        self.media.send(Command::SetRemote(call.0, addr));
                    }
                    self.media.send(Command::SetHold(call.0, on_hold));
                } else {
                    // Late offer: the answer arrived in the ACK.
                    self.start_media(now, call, &media);
                }
            }
            UaEvent::Info {
                call,
                content_type,
                body,
            } if self.calls.get(&call).is_some_and(|c| c.media_started) => {
                self.media.send(Command::Info(call.0, content_type, body));
            }
            UaEvent::CallEnded { call, cause } => {
                let Some(c) = self.calls.remove(&call) else {
                    return;
                };
                if c.media_started {
                    // The port goes back when the worker confirms (Note::Ended).
                    self.media.send(Command::Remove(call.0));
                    self.pending_release
                        .insert(call.0, (c.call_id.clone(), c.port));
                } else if let Some(p) = c.port {
                    drop(c.sockets);
                    self.ports.release(p);
                }
                let (mut cause_name, status) = end_cause(&cause);
                if matches!(cause, EndCause::LocalBye) {
                    if let Some(why) = c.hangup_cause {
                        cause_name = why;
                    }
                }
                self.events.emit(
                    Some(&c.call_id),
                    EventBody::CallEnded {
                        cause: cause_name,
                        status,
                        duration_ms: millis(now.saturating_duration_since(c.received_at)),
                        talk_ms: c
                            .answered_at
                            .map_or(0, |a| millis(now.saturating_duration_since(a))),
                    },
                );
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn incoming(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: CallHandle,
        call_id: String,
        from: String,
        to: String,
        number: String,
        source: SocketAddr,
        transport: Transport,
    ) {
        let call_id: Arc<str> = Arc::from(call_id);
        self.total += 1;
        self.events.emit(
            Some(&call_id),
            EventBody::CallReceived {
                from,
                to,
                number: number.clone(),
                source,
                transport: transport.as_str(),
            },
        );
        let mut refuse = if !self.config.trunks.allows(source.ip()) {
            Some((403, "source not in trunk allow-list"))
        } else if self.calls.len() >= self.config.calls.max_calls {
            Some((503, "max_calls reached"))
        } else {
            None
        };
        let pair = if refuse.is_none() {
            self.bind_pair()
        } else {
            None
        };
        if refuse.is_none() && pair.is_none() {
            refuse = Some((503, "no RTP port free"));
        }
        let (port, sockets) = match pair {
            Some((p, a, b)) => (Some(p), Some((a, b))),
            None => (None, None),
        };
        let mode = match number.as_str() {
            "echo" => Mode::Echo,
            "digits" => Mode::Digits,
            _ => Mode::Answer,
        };
        self.calls.insert(
            call,
            Call {
                call_id: call_id.clone(),
                received_at: now,
                answered_at: None,
                port,
                sockets,
                mode,
                media_started: false,
                hangup_cause: None,
            },
        );
        if let Some((status, reason)) = refuse {
            self.events
                .emit(Some(&call_id), EventBody::CallRejected { status, reason });
            let retry = (status == 503).then_some(self.config.overload.retry_after_s);
            if let Err(e) = ua.reject(now, call, status, retry) {
                tracing::warn!(call = %call, error = %e, "reject failed");
            }
            return;
        }
        if let Err(e) = ua.ring(now, call) {
            tracing::debug!(call = %call, error = %e, "ring failed");
            return;
        }
        self.events.emit(Some(&call_id), EventBody::CallRinging {});
        if number == "ring" {
            self.answer_timers
                .push(Reverse((now + self.ring_for, call.0)));
        } else {
            self.answer(now, ua, call);
        }
    }

    fn answer(&mut self, now: Instant, ua: &mut UserAgent, call: CallHandle) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(port) = c.port else { return };
        let local = LocalMedia {
            address: self.media_ip,
            port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            direction: Direction::SendRecv,
        };
        match ua.answer(now, call, &local) {
            Ok(media) => {
                c.answered_at = Some(now);
                self.events.emit(
                    Some(&c.call_id),
                    EventBody::CallAnswered {
                        codec: media.as_ref().map(|m| m.codec.name()),
                        rtp_port: port,
                        remote_rtp: media.as_ref().and_then(|m| m.remote),
                        setup_ms: millis(now.saturating_duration_since(c.received_at)),
                    },
                );
                if let Some(media) = media {
                    self.start_media(now, call, &media);
                }
            }
            Err(e) => {
                tracing::debug!(call = %call, error = %e, "answer failed");
            }
        }
    }

    /// Hands the call's sockets and a new media session to the media engine.
    fn start_media(&mut self, now: Instant, call: CallHandle, media: &NegotiatedMedia) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some((rtp, rtcp)) = c.sockets.take() else {
            return;
        };
        let codec = match media.codec {
            Codec::Pcmu => G711::Pcmu,
            Codec::Pcma => G711::Pcma,
        };
        let on_hold = media.remote.is_none() || !media.direction.receives();
        let remote = media.remote.unwrap_or(SocketAddr::new(self.media_ip, 9));
        let mut cfg = MediaConfig::new(codec, remote, Ssrc(rand::random()));
        cfg.ptime = Ptime::from_ms(media.ptime_ms).unwrap_or(Ptime::DEFAULT);
        cfg.telephone_event = media.telephone_event_pt.and_then(PayloadType::new);
        cfg.initial_seq = rand::random();
        cfg.initial_ts = rand::random();
        cfg.media_timeout = Duration::from_secs(self.config.media.rtp_timeout_s.max(1));
        cfg.inband = InbandMode::Auto;
        cfg.latch = if self.config.media.nat_latching {
            LatchMode::nat()
        } else {
            LatchMode::Sdp
        };
        cfg.ntp_now = frontdoor_media::rtcp::ntp_from_unix(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let mut session = MediaSession::new(now, cfg);
        if on_hold {
            session.set_hold(true, now);
        }
        let mode = c.mode;
        c.media_started = true;
        let call_id = c.call_id.clone();
        self.media.send(Command::Add(Box::new(LegSpec {
            key: call.0,
            rtp,
            rtcp: Some(rtcp),
            session: Box::new(session),
        })));
        match mode {
            Mode::Echo => self.media.send(Command::SetEcho(call.0, true)),
            Mode::Answer | Mode::Digits => {
                if mode == Mode::Answer {
                    self.media
                        .send(Command::SetIdle(call.0, self.prompt("hold")));
                }
                self.play(call.0, &call_id, &["welcome"]);
            }
        }
    }

    fn prompt(&self, name: &str) -> Option<Prompt> {
        self.prompts.get(name).cloned()
    }

    fn play(&mut self, key: u64, call_id: &Arc<str>, names: &[&str]) {
        let prompts: Vec<Prompt> = names.iter().filter_map(|n| self.prompt(n)).collect();
        self.events.emit(
            Some(call_id),
            EventBody::MediaPlay {
                prompts: names.iter().map(|n| (*n).to_owned()).collect(),
            },
        );
        self.media.send(Command::Play(key, prompts));
    }

    /// Handles a note from the media engine.
    pub fn handle_media(&mut self, now: Instant, ua: &mut UserAgent, note: Note) {
        match note {
            Note::Dtmf {
                key,
                digit,
                source,
                duration_ms,
            } => {
                let Some(c) = self.calls.get(&CallHandle(key)) else {
                    return;
                };
                let call_id = c.call_id.clone();
                let mode = c.mode;
                self.events.emit(
                    Some(&call_id),
                    EventBody::Dtmf {
                        digit,
                        source,
                        duration_ms,
                    },
                );
                if mode == Mode::Digits {
                    let name = match digit {
                        '*' => "digit-star".to_owned(),
                        '#' => "digit-pound".to_owned(),
                        d => format!("digit-{d}"),
                    };
                    self.play(key, &call_id, &["you-pressed", &name]);
                }
            }
            Note::Timeout { key } => {
                let call = CallHandle(key);
                if let Some(c) = self.calls.get_mut(&call) {
                    tracing::info!(call_id = %c.call_id, "RTP timeout: hanging up");
                    c.hangup_cause = Some("rtp_timeout");
                    if let Err(e) = ua.hangup(now, call) {
                        tracing::debug!(error = %e, "hangup on RTP timeout");
                    }
                }
            }
            Note::Ended { key, stats } => {
                let Some((call_id, port)) = self.pending_release.remove(&key) else {
                    return;
                };
                if let Some(p) = port {
                    self.ports.release(p);
                }
                let p = stats.packets;
                self.events.emit(
                    Some(&call_id),
                    EventBody::MediaStats {
                        packets_in: p.packets_received,
                        bytes_in: p.bytes_received,
                        packets_out: p.packets_sent,
                        bytes_out: p.bytes_sent,
                        lost: p.lost,
                        jitter_ms: f64::from(p.jitter) / 8.0,
                        dropped_foreign: p.dropped_foreign,
                        dropped_malformed: p.dropped_malformed,
                        dropped_unknown_pt: p.dropped_unknown_pt,
                        dropped_late: p.dropped_late,
                        comfort_noise: p.comfort_noise,
                        concealed: p.concealed,
                        remote: stats.remote_addr,
                    },
                );
            }
            Note::Failed { key, reason } => {
                tracing::warn!(leg = key, %reason, "media leg failed");
            }
            Note::PromptDone { .. } | Note::Latched { .. } => {}
        }
    }

    /// Calls whose media is still being torn down.
    pub fn media_draining(&self) -> usize {
        self.pending_release.len()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn end_cause(c: &EndCause) -> (&'static str, Option<u16>) {
    match c {
        EndCause::RemoteBye => ("remote_bye", None),
        EndCause::LocalBye => ("local_bye", None),
        EndCause::Cancelled => ("cancelled", Some(487)),
        EndCause::AckTimeout => ("ack_timeout", None),
        EndCause::Rejected(s) => ("rejected", Some(*s)),
        EndCause::RemoteRejected(s) => ("remote_rejected", Some(*s)),
        EndCause::Timeout => ("timeout", Some(408)),
        EndCause::TransportError => ("transport_error", Some(503)),
        EndCause::SessionExpired => ("session_expired", None),
    }
}
