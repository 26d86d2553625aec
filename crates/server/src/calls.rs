//! The call application: what the engine does with each call the SIP user agent reports.
//!
//! Plain state, no async: it takes the UA's events and the media engine's notes with `now`,
//! drives the UA (ring, answer, reject, hang up) and the media engine (start a leg, play,
//! echo), owns the RTP port pool and emits the call events.
//!
//! Routing is the dialplans' (`DialplanSet::route`). Built-in test numbers: `ring` rings for
//! `ring_seconds` before answering (for CANCEL tests); `echo` returns the caller's audio;
//! `digits` plays the welcome prompt, then reads back each key ("you pressed 5"); `answer`
//! plays the welcome prompt, then hold audio until the caller hangs up; `bridge` places an
//! outgoing call (the engine's UAC side) to `[bridge] target` (or the route's `to`) while the
//! caller rings, answers the caller when it is answered and bridges the two legs' media in one
//! media worker (see `CallApp::dial` and `docs/bridging.md`). Every flow route runs the IVR: the caller is looked
//! up on the store thread while the call rings, then a `frontdoor_ivr::Call` interpreter
//! drives the call (see [`CallApp::handle_note`]); the call record is written at the end.

pub mod callbacks;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use frontdoor_ivr::{
    Action, Builtin, CallContext, Event as IvrInput, FlowId, PlaybackId, QueueOutcome, RouteTarget,
    TransferOutcome,
};
use frontdoor_store::CallerProfile;
use frontdoor_store::ivr_glue::{CallTimes, call_record, caller_attributes};

use frontdoor_ivr::{ListenRequest, redact_digits};
use frontdoor_media::barge::BargeInConfig;
use frontdoor_media::call::{InbandMode, ListenConfig, MediaConfig, MediaSession};
use frontdoor_media::g711::{G711, Ptime};
use frontdoor_media::latch::LatchMode;
use frontdoor_media::prompt::{Prompt, PromptLibrary};
use frontdoor_media::vad::VadConfig;
use frontdoor_media::{PayloadType, Ssrc};
use frontdoor_sip::message::{uri_socket_addr, uri_user};
use frontdoor_sip::sdp::{Codec, Direction, LocalMedia, NegotiatedMedia};
use frontdoor_sip::{CallHandle, EndCause, Presentation, Transport, UaEvent, UserAgent};
use frontdoor_speech::Expectation;

use crate::agents::Agents;
use crate::config::Config;
use crate::desk::{Desk, DeskRequest};
use crate::events::{EventBody, EventSink};
use crate::media::{CallRecording, Command, LegSpec, MediaEngine, Note};
use crate::plans::{AGENTS_BUSY, Plans, ReloadNote, notice};
use crate::ports::PortPool;
use crate::recording::{RecordMsg, RecordWriter, recording_path};
use crate::screenpop::ScreenPop;
use crate::speech::{RecognizerPool, SpeechDone, SpeechJob};
use crate::store::{StoreReply, StoreRequest, StoreThread, caller_info};
use crate::tts::{Part, Rendered, Tts, TtsPool};
use frontdoor_acd::{
    Action as AcdAction, AgentId, CancelReason, EntryId, EntryKind, EntryStatus, Event as AcdEvent,
};

mod agent_phone;
mod features;
pub mod speech_turns;

/// Playback id of the driver's own prompts (the interpreter's ids are small).
const DRIVER_PLAYBACK: u64 = u64::MAX;
/// Playback id of a notice after which the driver feeds the interpreter a result.
const DRIVER_NOTICE: u64 = u64::MAX - 1;
/// Playback id of the ACD's position announcements (the interpreter is not told).
const DRIVER_ANNOUNCE: u64 = u64::MAX - 2;
/// Playback id of a feature code's spoken confirmation (`calls/features.rs`).
const DRIVER_FEATURE: u64 = u64::MAX - 16;

/// What the helper threads (store, speech, dialplan reload) report to the SIP task.
#[derive(Debug)]
pub enum AppNote {
    /// From the store thread.
    Store(StoreReply),
    /// From a speech thread.
    Rendered(Rendered),
    /// From the reload thread.
    Reload(ReloadNote),
    /// From a recogniser thread (speech turns of calls).
    Recognized(Box<SpeechDone>),
}

/// What the IVR needs from the driver.
#[derive(Debug)]
pub struct IvrSetup {
    /// The dialplans at start.
    pub plans: Arc<Plans>,
    /// Speech.
    pub tts: Arc<Tts>,
    /// Speech threads for texts with variables.
    pub tts_pool: TtsPool,
    /// The store thread.
    pub store: StoreThread,
    /// Where voicemail goes (`<data-dir>/recordings`).
    pub recordings: PathBuf,
    /// The recogniser pool (`None`: no speech steps, or no model: speech steps fall back to
    /// keys).
    pub asr: Option<RecognizerPool>,
}

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
    /// Bridged to an outgoing leg placed for it (`bridge` test number, `frontdoor call
    /// --bridge-to`).
    Bridge,
    /// An outgoing leg placed for a bridge: no media of its own.
    Leg,
    /// A dialplan flow through the IVR interpreter.
    Ivr,
    /// A feature code dialed from an agent's phone (`calls/features.rs`): a spoken
    /// confirmation, then BYE.
    Feature,
}

/// A flow call waiting for its caller lookup.
#[derive(Debug)]
struct PendingFlow {
    plans: Arc<Plans>,
    plan: Arc<frontdoor_ivr::Dialplan>,
    flow: FlowId,
    since: Instant,
}

/// The interpreter of one call and what the driver tracks for it.
#[derive(Debug)]
struct IvrCall {
    call: frontdoor_ivr::Call,
    profile: CallerProfile,
    /// The dialplan version the call started on (its prompts).
    plans: Arc<Plans>,
    /// Playback the media engine is playing.
    playing: Option<u64>,
    /// Say waiting for speech to render: (playback id, since).
    rendering: Option<(u64, Instant)>,
    /// Say being synthesised chunk by chunk whose first chunk plays: more chunks follow.
    streaming: Option<u64>,
    /// Deadline last pushed onto the timer heap.
    timer_at: Option<Instant>,
    /// Input to feed when the driver's notice (`DRIVER_NOTICE`) has played.
    after_notice: Option<IvrInput>,
    /// Speech turn number: bumped by every `StartListening`/`StopListening`; a recognition
    /// of another turn is dropped.
    turn: u64,
    /// The running speech turn: its step and what the recogniser listens for.
    listening: Option<(String, Arc<Expectation>)>,
    /// Speculative recognition of the running turn (`calls/speech_turns.rs`).
    spec: speech_turns::Speculation,
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
    /// Dialed number.
    number: String,
    received_wall: DateTime<Utc>,
    answered_wall: Option<DateTime<Utc>>,
    pending_flow: Option<PendingFlow>,
    ivr: Option<Box<IvrCall>>,
    /// A playback asked for before the media leg started (late offer).
    pending_play: Option<(u64, Vec<Prompt>)>,
    /// A speech turn asked for before the media leg started.
    pending_listen: Option<ListenConfig>,
    /// Bridging state (see [`CallApp::dial`]).
    link: Link,
    /// Part this call plays in the ACD.
    acd: Option<AcdRole>,
}

/// What a call is to the ACD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcdRole {
    /// A caller queued as `entry` (the entry id is the call's handle).
    Caller {
        /// Its entry.
        entry: EntryId,
        /// When it was queued.
        since: Instant,
    },
    /// The leg placed to ring (then talk to) `agent` for `entry`.
    Agent {
        /// The caller's entry.
        entry: EntryId,
        /// The agent rung.
        agent: AgentId,
        /// The agent answered (OfferAccepted was sent).
        answered: bool,
    },
}

/// How a call takes part in a bridge.
#[derive(Debug, Default)]
struct Link {
    /// We placed this call (our UAC side).
    outbound: bool,
    /// For outgoing legs: the Request-URI.
    target: Option<String>,
    /// Where this call is to be bridged (`Mode::Bridge`): dialed when the call rings
    /// (incoming) or is answered (outgoing).
    bridge_to: Option<String>,
    /// The leg this one is (to be) bridged with.
    peer: Option<CallHandle>,
    /// The bridge command was sent (media relayed once `Note::Bridged` comes).
    bridged: bool,
    /// A re-INVITE from this leg is being answered: its new direction is propagated.
    reinvite_in: bool,
    /// The direction this leg's remote last offered or answered.
    remote_dir: Option<Direction>,
    /// Negotiated codec and ptime, for the events.
    media: Option<(Codec, u32)>,
    /// User part of the caller's URI (the outgoing leg's From user).
    from_user: String,
    /// The caller's From display name, when sent (at most 64 characters).
    from_display: Option<String>,
}

/// What `frontdoor call` asks for: one outgoing call and what to do with it.
#[derive(Debug, Clone)]
pub struct Originate {
    /// Request-URI (IP-literal host).
    pub target: String,
    /// What the call gets once answered.
    pub action: OriginateAction,
    /// Hang up this long after the answer (after the bridge for `BridgeTo`); `None` = wait
    /// for the far end's BYE.
    pub duration: Option<Duration>,
}

/// The media of an originated call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginateAction {
    /// The welcome prompt, then hold audio.
    Welcome,
    /// Return the far end's audio.
    Echo,
    /// Place a second call to this URI and bridge the two.
    BridgeTo(String),
}

/// How an originated call went.
#[derive(Debug)]
struct OriginateState {
    first: CallHandle,
    wants_bridge: bool,
    answered: bool,
    bridged: bool,
    failure: Option<String>,
    duration: Option<Duration>,
    hangup_at: Option<Instant>,
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
    plans: Arc<Plans>,
    tts: Arc<Tts>,
    tts_pool: TtsPool,
    /// Calls waiting for a text to render, by (voice, text): (call, playback id, language).
    tts_waiting: HashMap<crate::tts::Key, Vec<(u64, u64, String)>>,
    store: StoreThread,
    recordings_dir: PathBuf,
    /// Recordings running: call → (Call-ID, relative path, absolute path).
    recording: HashMap<u64, (Arc<str>, String, PathBuf)>,
    /// WAVs being written: call → (Call-ID, relative path).
    writing: HashMap<u64, (Arc<str>, String)>,
    /// Call records being written: call → Call-ID.
    recording_calls: HashMap<u64, Arc<str>>,
    ivr_timers: BinaryHeap<Reverse<(Instant, u64)>>,
    beep: Prompt,
    /// Ring timeouts of outgoing legs.
    dial_timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The call `frontdoor call` placed.
    originate: Option<OriginateState>,
    /// The stereo call recording writer (`[recording] enabled`).
    call_recorder: Option<RecordWriter>,
    /// Where call recordings go.
    call_recordings_dir: PathBuf,
    /// Id of the next call recording.
    next_recording: u64,
    /// The ACD and its agents (`[acd]`); `None`: `enqueue` fails.
    desk: Option<Desk>,
    /// Queued callers by entry.
    entries: HashMap<EntryId, CallHandle>,
    /// Maximum queue waits (`enqueue` `timeout`): (deadline, caller handle).
    queue_timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The screen-pop webhook (`[screenpop] url`).
    webhook: Option<crate::screenpop::Webhook>,
    /// Language of each queued caller (its announcements), by call.
    announce_lang: HashMap<u64, String>,
    /// The recogniser pool of speech turns.
    asr: Option<RecognizerPool>,
    /// Agent legs ringing in parallel for an offer (one per registered contact of the agent:
    /// `calls/agent_phone.rs`).
    forks: HashMap<EntryId, Vec<CallHandle>>,
    /// Incoming calls authenticated as feature codes whose state change succeeded, with the
    /// confirmation they are answered with (`calls/features.rs`).
    feature_calls: HashMap<CallHandle, &'static str>,
    /// Callbacks that keep their place (`calls/callbacks.rs`).
    cb: callbacks::Callbacks,
}

impl CallApp {
    /// A new application: SDP advertises `media_ip`, sockets bind `bind_ip`, ports from `ports`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        media_ip: IpAddr,
        bind_ip: IpAddr,
        ports: PortPool,
        events: EventSink,
        media: MediaEngine,
        prompts: Arc<PromptLibrary>,
        ivr: IvrSetup,
    ) -> Self {
        let beep: Vec<i16> = (0..2400)
            .map(|n| {
                let t = f64::from(n) / 8000.0;
                (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
            })
            .collect();
        let call_recorder = if config.recording.enabled {
            RecordWriter::start(events.clone())
                .map_err(|e| tracing::error!(error = %e, "cannot start the recording writer; calls are not recorded"))
                .ok()
        } else {
            None
        };
        let call_recordings_dir = config
            .recording
            .dir
            .as_ref()
            .map_or_else(|| ivr.recordings.join("calls"), PathBuf::from);
        Self {
            cb: callbacks::Callbacks::default(),
            desk: None,
            forks: HashMap::new(),
            feature_calls: HashMap::new(),
            entries: HashMap::new(),
            queue_timers: BinaryHeap::new(),
            webhook: None,
            announce_lang: HashMap::new(),
            call_recorder,
            call_recordings_dir,
            next_recording: 0,
            asr: ivr.asr,
            plans: ivr.plans,
            tts: ivr.tts,
            tts_pool: ivr.tts_pool,
            tts_waiting: HashMap::new(),
            store: ivr.store,
            recordings_dir: ivr.recordings,
            recording: HashMap::new(),
            writing: HashMap::new(),
            recording_calls: HashMap::new(),
            ivr_timers: BinaryHeap::new(),
            beep: Prompt::from_pcm("beep", &beep),
            calls: HashMap::new(),
            dial_timers: BinaryHeap::new(),
            originate: None,
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
        let a = self.answer_timers.peek().map(|Reverse((at, _))| *at);
        let b = self.ivr_timers.peek().map(|Reverse((at, _))| *at);
        let c = self.dial_timers.peek().map(|Reverse((at, _))| *at);
        let d = self.originate.as_ref().and_then(|o| o.hangup_at);
        let e = self.desk.as_ref().and_then(Desk::next_deadline);
        let f = self.queue_timers.peek().map(|Reverse((at, _))| *at);
        let g = self.cb.next_timer();
        [a, b, c, d, e, f, g].into_iter().flatten().min()
    }

    /// Installs the screen-pop webhook.
    pub fn set_webhook(&mut self, webhook: crate::screenpop::Webhook) {
        self.webhook = Some(webhook);
    }

    /// Installs the ACD (from [`Desk::from_config`]).
    pub fn set_desk(&mut self, desk: Desk) {
        self.desk = Some(desk);
        self.callback_prerender();
    }

    /// Answers an agent API request (the actions it causes run in [`Self::run_desk`]).
    pub fn serve_desk(&mut self, now: Instant, req: DeskRequest) {
        if let DeskRequest::Callbacks(r) = req {
            self.callback_api(r);
            return;
        }
        match self.desk.as_mut() {
            Some(d) => d.serve(now, req),
            None => {
                if let DeskRequest::Agent { reply, .. } = req {
                    let _ = reply.send(Err(crate::desk::DeskError::Unavailable));
                }
            }
        }
    }

    /// Executes what the ACD decided (offers, cancelled offers, announcements, agent states).
    /// `agents` knows the phones' registered contacts.
    pub fn run_desk(&mut self, now: Instant, ua: &mut UserAgent, agents: &Agents) {
        for _ in 0..4096 {
            let Some(action) = self.desk.as_mut().and_then(Desk::poll_action) else {
                return;
            };
            self.desk_action(now, ua, agents, action);
        }
    }

    /// The dialplan version new calls get.
    pub fn plans(&self) -> &Arc<Plans> {
        &self.plans
    }

    /// Stops the store thread after its queued work (call records, recordings), and the call
    /// recording writer after closing its files.
    pub fn finish(mut self) {
        if let Some(w) = self.call_recorder.take() {
            w.finish();
        }
        self.store.finish();
    }

    /// Starts recording a call whose media runs, in stereo to a WAV under the recordings
    /// directory (`[recording]`); false when it cannot (no media yet, recording disabled).
    pub fn start_call_recording(&mut self, call: CallHandle) -> bool {
        let Some(writer) = self.call_recorder.as_ref() else {
            return false;
        };
        let Some(c) = self.calls.get(&call).filter(|c| c.media_started) else {
            return false;
        };
        let path = recording_path(&self.call_recordings_dir, Utc::now(), &c.call_id);
        let id = self.next_recording;
        self.next_recording += 1;
        let config = self.config.recording.record_config();
        writer.send(RecordMsg::Open {
            id,
            path: path.clone(),
            call_id: c.call_id.clone(),
        });
        self.media.send(Command::RecordCall(
            call.0,
            Box::new(CallRecording {
                id,
                config,
                sink: writer.sender(),
            }),
        ));
        self.events.emit(
            Some(&c.call_id),
            EventBody::RecordingStarted {
                path: path.display().to_string(),
                mask_dtmf: config.mask_dtmf,
                max_duration_s: config.max_duration.as_secs(),
            },
        );
        true
    }

    /// Stops a call's recording (`recording.stopped` follows when its file is closed).
    pub fn stop_call_recording(&mut self, call: CallHandle) {
        if self.calls.get(&call).is_some_and(|c| c.media_started) {
            self.media.send(Command::StopRecordCall(call.0));
        }
    }

    /// Runs due timers (the `ring` number's delayed answer, IVR timeouts, ring timeouts of
    /// outgoing legs, `frontdoor call --duration`).
    pub fn handle_timeout(&mut self, now: Instant, ua: &mut UserAgent) {
        if let Some(d) = self.desk.as_mut() {
            d.handle_timeout(now);
        }
        self.callback_timers(now);
        while let Some(Reverse((at, handle))) = self.queue_timers.peek().copied() {
            if at > now {
                break;
            }
            self.queue_timers.pop();
            self.queue_timeout(now, ua, CallHandle(handle));
        }
        while let Some(Reverse((at, handle))) = self.dial_timers.peek().copied() {
            if at > now {
                break;
            }
            self.dial_timers.pop();
            let leg = CallHandle(handle);
            if let Some(c) = self.calls.get_mut(&leg).filter(|c| c.answered_at.is_none()) {
                c.hangup_cause = Some("no_answer");
                if let Err(e) = ua.hangup(now, leg) {
                    tracing::debug!(error = %e, "cancel on ring timeout");
                }
            }
        }
        if let Some(o) = self.originate.as_mut() {
            if o.hangup_at.is_some_and(|at| at <= now) {
                o.hangup_at = None;
                let first = o.first;
                if let Some(c) = self.calls.get_mut(&first) {
                    c.hangup_cause = Some("duration");
                }
                if let Err(e) = ua.hangup(now, first) {
                    tracing::debug!(error = %e, "hangup after --duration");
                }
            }
        }
        while let Some(Reverse((at, handle))) = self.ivr_timers.peek().copied() {
            if at > now {
                break;
            }
            self.ivr_timers.pop();
            let call = CallHandle(handle);
            let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) else {
                continue;
            };
            if ivr.timer_at == Some(at) {
                ivr.timer_at = None;
            }
            if ivr.call.poll_timeout().is_some_and(|t| t <= now) {
                ivr.call.handle_timeout(now, Utc::now());
            }
            self.drive(now, ua, call);
        }
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
                headers,
                from_display,
                ..
            } => {
                self.incoming(
                    now,
                    ua,
                    call,
                    call_id,
                    from_uri,
                    to_uri,
                    request_user,
                    source,
                    transport,
                    headers,
                );
                if let Some(c) = self.calls.get_mut(&call) {
                    c.link.from_display = from_display
                        .map(|d| d.chars().take(64).collect::<String>())
                        .filter(|d| !d.trim().is_empty());
                }
            }
            UaEvent::CallAnswered { call, .. } => {
                if let Some(c) = self.calls.get(&call) {
                    self.events
                        .emit(Some(&c.call_id), EventBody::CallConfirmed {});
                }
            }
            UaEvent::OutgoingProgress { call, status } => {
                if let Some(c) = self.calls.get(&call) {
                    self.events
                        .emit(Some(&c.call_id), EventBody::LegProgress { status });
                }
            }
            UaEvent::OutgoingAnswered { call, answer } => {
                let Some(c) = self.calls.get_mut(&call) else {
                    return;
                };
                c.answered_at = Some(now);
                c.answered_wall = Some(Utc::now());
                if answer.is_none() {
                    // We offered: a 2xx without an answer cannot carry media.
                    c.hangup_cause = Some("no_sdp_answer");
                    if let Err(e) = ua.hangup(now, call) {
                        tracing::debug!(error = %e, "hangup of an answer without SDP");
                    }
                }
            }
            UaEvent::Reinvite { call, .. } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.link.reinvite_in = true;
                }
            }
            UaEvent::ReinviteFailed { call, status } => {
                if let Some(c) = self.calls.get(&call) {
                    tracing::info!(call_id = %c.call_id, status, "re-INVITE refused");
                }
            }
            UaEvent::MediaUpdate { call, media } => {
                self.propagate_hold(now, ua, call, &media);
                let Some(c) = self.calls.get_mut(&call) else {
                    return;
                };
                c.link.media = Some((media.codec, media.ptime_ms));
                if c.link.outbound && !c.media_started {
                    self.events.emit(
                        Some(&c.call_id),
                        EventBody::LegAnswered {
                            codec: Some(media.codec.name()),
                            ptime_ms: Some(media.ptime_ms),
                            remote_rtp: media.remote,
                            setup_ms: millis(now.saturating_duration_since(c.received_at)),
                        },
                    );
                    if let Some(o) = self.originate.as_mut().filter(|o| o.first == call) {
                        o.answered = true;
                        if !o.wants_bridge {
                            o.hangup_at = o.duration.map(|d| now + d);
                        }
                    }
                }
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
                    // Late offer (the answer arrived in the ACK), or an outgoing leg answered.
                    self.start_media(now, call, &media);
                    self.leg_up(now, ua, call);
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
                let Some(mut c) = self.calls.remove(&call) else {
                    return;
                };
                self.announce_lang.remove(&call.0);
                self.feature_calls.remove(&call);
                if let Some(ivr) = c.ivr.take() {
                    self.end_ivr(now, call, &c, *ivr);
                }
                if c.media_started {
                    // The port goes back when the worker confirms (Note::Ended).
                    self.media.send(Command::Remove(call.0));
                    self.pending_release
                        .insert(call.0, (c.call_id.clone(), c.port));
                } else if let Some(p) = c.port {
                    drop(c.sockets.take());
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
                self.callback_call_gone(call);
                self.callback_leg_ended(now, ua, call, &c, &cause);
                let acd_took_it = c
                    .acd
                    .is_some_and(|role| self.acd_call_ended(now, call, &c, role, &cause));
                if let Some(peer) = c.link.peer.filter(|_| !acd_took_it) {
                    self.peer_ended(now, ua, peer, &c, cause);
                }
                if let Some(o) = self.originate.as_mut().filter(|o| o.first == call) {
                    if o.failure.is_none() && !o.answered {
                        o.failure = Some(match cause {
                            EndCause::RemoteRejected(s) => format!("rejected with {s}"),
                            EndCause::Timeout => "no response (timeout)".to_owned(),
                            _ => format!("not answered ({cause_name})"),
                        });
                    }
                }
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
        headers: Vec<(String, String)>,
    ) {
        let call_id: Arc<str> = Arc::from(call_id);
        self.total += 1;
        let trusted = self.config.trunks.allows(source.ip());
        let info = caller_info(&from, &headers, trusted);
        let from_user = uri_user(&from).to_owned();
        self.events.emit(
            Some(&call_id),
            EventBody::CallReceived {
                from,
                to,
                number: number.clone(),
                source,
                transport: match transport {
                    Transport::Udp => "udp",
                    Transport::Tcp => "tcp",
                },
            },
        );
        // An agent's authenticated feature code (the trunk allow-list is for carriers).
        let feature = self.feature_calls.contains_key(&call);
        let mut refuse = if !feature && !self.config.trunks.allows(source.ip()) {
            Some((403, "source not in trunk allow-list"))
        } else if self.calls.len() >= self.config.calls.max_calls {
            Some((503, "max_calls reached"))
        } else {
            None
        };
        let route = if feature {
            None
        } else {
            self.plans.set.route(&number, None)
        };
        let mut ring_first = false;
        let mut pending_flow = None;
        let mut bridge_to = None;
        let mode = match route {
            None if feature => Mode::Feature,
            None => {
                refuse = refuse.or(Some((404, "no route for the number")));
                Mode::Answer
            }
            Some(m) => match m.target {
                RouteTarget::Builtin(Builtin::Answer) => Mode::Answer,
                RouteTarget::Builtin(Builtin::Ring) => {
                    ring_first = true;
                    Mode::Answer
                }
                RouteTarget::Builtin(Builtin::Echo) => Mode::Echo,
                RouteTarget::Builtin(Builtin::Digits) => Mode::Digits,
                RouteTarget::Builtin(Builtin::Bridge { to }) => {
                    bridge_to = Some(self.config.bridge.target.clone().unwrap_or(to));
                    Mode::Bridge
                }
                RouteTarget::Flow(flow) => {
                    pending_flow = Some(PendingFlow {
                        plans: self.plans.clone(),
                        plan: m.plan,
                        flow,
                        since: now,
                    });
                    Mode::Ivr
                }
            },
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
                number: number.clone(),
                received_wall: Utc::now(),
                answered_wall: None,
                pending_flow,
                ivr: None,
                pending_play: None,
                pending_listen: None,
                link: Link {
                    bridge_to: bridge_to.clone(),
                    from_user,
                    ..Link::default()
                },
                acd: None,
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
        if let Some(target) = bridge_to {
            // The caller rings while the outgoing leg is placed; it is answered when that is.
            self.dial_for(now, ua, call, &target);
        } else if mode == Mode::Ivr {
            // The call rings while the store thread looks the caller up.
            self.store
                .send(StoreRequest::Recognise { key: call.0, info });
        } else if ring_first {
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
                c.answered_wall = Some(Utc::now());
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
        c.link.media = Some((media.codec, media.ptime_ms));
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
        let record = self.config.recording.records(&c.number);
        // A leg to be bridged goes to the media worker of its peer, if that one runs already.
        let beside = c
            .link
            .peer
            .filter(|p| self.calls.get(p).is_some_and(|pc| pc.media_started));
        let spec = Box::new(LegSpec {
            key: call.0,
            rtp,
            rtcp: Some(rtcp),
            session: Box::new(session),
        });
        match beside {
            Some(p) => self.media.add_beside(spec, p.0),
            None => self.media.send(Command::Add(spec)),
        }
        if record {
            self.start_call_recording(call);
        }
        match mode {
            Mode::Echo => self.media.send(Command::SetEcho(call.0, true)),
            Mode::Ivr => {
                if let Some(cfg) = self
                    .calls
                    .get_mut(&call)
                    .and_then(|c| c.pending_listen.take())
                {
                    self.media.send(Command::Listen { key: call.0, cfg });
                }
                if let Some((id, prompts)) = self
                    .calls
                    .get_mut(&call)
                    .and_then(|c| c.pending_play.take())
                {
                    self.media.send(Command::Play(call.0, id, prompts));
                }
            }
            // Silence until the bridge is up (`try_bridge` below).
            Mode::Bridge | Mode::Leg => {}
            // The state changed: a spoken confirmation, then `PromptDone` hangs up.
            Mode::Feature => self.confirm_feature(call),
            Mode::Answer | Mode::Digits => {
                if mode == Mode::Answer {
                    self.media
                        .send(Command::SetIdle(call.0, self.prompt("hold")));
                }
                self.play(call.0, &call_id, &["welcome"]);
            }
        }
        self.try_bridge(call);
    }

    /// Plays a rendered text to `call` under the driver's playback `id`, with its `ivr.say`
    /// event (feature confirmations, position announcements, the callback dialogue).
    fn say_rendered(
        &mut self,
        call: CallHandle,
        id: u64,
        (voice, text): &crate::tts::Key,
        language: &str,
        cache: &'static str,
        prompt: Prompt,
    ) {
        if let Some(c) = self.calls.get(&call) {
            self.events.emit(
                Some(&c.call_id),
                EventBody::IvrSay {
                    id,
                    text: text.clone(),
                    language: language.to_owned(),
                    voice: voice.clone(),
                    cache,
                    wait_ms: 0,
                },
            );
        }
        self.media.send(Command::Play(call.0, id, vec![prompt]));
    }

    /// Says `text` to `call` under the driver's playback `id`: at once when cached, otherwise
    /// once the TTS threads have rendered it (the rendered note comes back with `id`).
    fn say_driver(&mut self, call: CallHandle, id: u64, text: String, language: &str) {
        let key = (self.tts.voice(language), text);
        if let Some(p) = self.tts.cached(&key.0, &key.1) {
            self.say_rendered(call, id, &key, language, "memory", p);
            return;
        }
        let waiters = self.tts_waiting.entry(key.clone()).or_default();
        if waiters.is_empty() {
            self.tts_pool.request(key);
        }
        waiters.push((call.0, id, language.to_owned()));
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
        self.media.send(Command::Play(key, 0, prompts));
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
                if mode == Mode::Ivr {
                    if self.callback_dtmf(now, CallHandle(key), digit) {
                        return;
                    }
                    self.feed(now, ua, CallHandle(key), IvrInput::Dtmf(digit));
                } else if mode == Mode::Digits {
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
            Note::PromptDone { key, id } => {
                let call = CallHandle(key);
                if callbacks::is_callback_playback(id) {
                    self.callback_prompt_done(now, ua, call, id);
                    return;
                }
                let Some(c) = self.calls.get_mut(&call) else {
                    return;
                };
                if c.mode == Mode::Feature {
                    self.feature_calls.remove(&call);
                    c.hangup_cause = Some("feature_done");
                    if let Err(e) = ua.hangup(now, call) {
                        tracing::debug!(error = %e, "hangup after a feature code");
                    }
                    return;
                }
                if c.mode == Mode::Ivr && id != DRIVER_ANNOUNCE {
                    let mut after = None;
                    if let Some(ivr) = c.ivr.as_mut() {
                        if ivr.playing == Some(id) {
                            ivr.playing = None;
                        }
                        if ivr.streaming == Some(id) {
                            // The chunks played so far are out; the next one is still being
                            // synthesised: the say goes on when it comes.
                            return;
                        }
                        if id == DRIVER_NOTICE {
                            after = ivr.after_notice.take();
                        }
                    }
                    let input = after.unwrap_or(IvrInput::PromptFinished(PlaybackId(id)));
                    self.feed(now, ua, call, input);
                }
            }
            Note::Recorded { key, pcm } => {
                if let Some((call_id, rel, abs)) = self.recording.remove(&key) {
                    self.writing.insert(key, (call_id, rel));
                    self.store.send(StoreRequest::WriteWav {
                        key,
                        path: abs,
                        pcm,
                    });
                }
            }
            Note::SpeechStarted { key, barge_in } => {
                let call = CallHandle(key);
                if let Some(c) = self.calls.get(&call).filter(|c| c.mode == Mode::Ivr) {
                    if barge_in {
                        self.events
                            .emit(Some(&c.call_id), EventBody::SpeechBargeIn {});
                    }
                    self.feed(now, ua, call, IvrInput::SpeechStarted);
                }
            }
            Note::SpeechNoInput { key } => {
                let call = CallHandle(key);
                if let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) {
                    ivr.listening = None;
                    self.feed(now, ua, call, IvrInput::SpeechNoInput);
                }
            }
            Note::SpeechPaused { key, pcm } => self.speech_paused(now, key, pcm),
            Note::SpeechResumed { key } => {
                let call = CallHandle(key);
                if let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) {
                    ivr.spec.resumed();
                }
            }
            Note::Utterance {
                key,
                pcm,
                decided,
                speech_ms,
            } => self.utterance(now, ua, key, pcm, decided, speech_ms),
            Note::Latched { .. } => {}
            Note::Bridged { key, peer } => self.bridged(now, ua, key, peer),
            Note::Unbridged {
                key,
                peer,
                forward,
                backward,
            } => {
                let id_of = |app: &Self, k: u64| {
                    app.calls
                        .get(&CallHandle(k))
                        .map(|c| c.call_id.clone())
                        .or_else(|| app.pending_release.get(&k).map(|(id, _)| id.clone()))
                };
                let Some(call_id) = id_of(self, key) else {
                    return;
                };
                let peer_call_id = id_of(self, peer).map(|id| id.to_string());
                self.events.emit(
                    Some(&call_id),
                    EventBody::BridgeUnbridged {
                        peer_call_id,
                        audio_in: forward.audio_in,
                        audio_out: forward.audio_out,
                        transcoded: forward.transcoded,
                        events: forward.events,
                        peer_audio_in: backward.audio_in,
                        peer_audio_out: backward.audio_out,
                        peer_events: backward.events,
                    },
                );
            }
        }
    }

    /// Places an outgoing call (the engine's UAC side) to `target`, offering PCMU, PCMA and
    /// telephone-event at 20 ms, with a ring timeout of `[bridge] timeout_s`. With `peer`, the
    /// new leg is bridged to it once answered. Fails (with the status the peer should get and
    /// a reason) when the URI has no IP-literal host, or no RTP port or call slot is free.
    #[allow(clippy::too_many_arguments)]
    fn dial(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        target: &str,
        mode: Mode,
        peer: Option<CallHandle>,
        ring_timeout: Duration,
        presentation: Presentation,
    ) -> Result<CallHandle, (u16, &'static str)> {
        let from_user = peer
            .and_then(|p| self.calls.get(&p))
            .map(|c| c.link.from_user.clone())
            .unwrap_or_default();
        self.dial_as(
            now,
            ua,
            target,
            mode,
            peer,
            ring_timeout,
            presentation,
            from_user,
        )
    }

    /// [`Self::dial`] with the From user part given.
    #[allow(clippy::too_many_arguments)]
    fn dial_as(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        target: &str,
        mode: Mode,
        peer: Option<CallHandle>,
        ring_timeout: Duration,
        presentation: Presentation,
        from_user: String,
    ) -> Result<CallHandle, (u16, &'static str)> {
        let Some(destination) = uri_socket_addr(target) else {
            return Err((502, "invalid_target"));
        };
        if self.calls.len() >= self.config.calls.max_calls {
            return Err((503, "max_calls"));
        }
        let Some((port, rtp, rtcp)) = self.bind_pair() else {
            return Err((503, "no_rtp_port"));
        };
        let local = LocalMedia {
            address: self.media_ip,
            port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            direction: Direction::SendRecv,
        };
        let leg =
            match ua.invite_presented(now, target, destination, &from_user, &local, presentation) {
                Ok(h) => h,
                Err(e) => {
                    tracing::info!(%target, error = %e, "cannot place the outgoing call");
                    self.ports.release(port);
                    return Err((502, "invalid_target"));
                }
            };
        let call_id: Arc<str> = Arc::from(ua.call_id(leg).unwrap_or_default());
        let peer_call_id = peer
            .and_then(|p| self.calls.get(&p))
            .map(|c| c.call_id.to_string());
        self.total += 1;
        self.calls.insert(
            leg,
            Call {
                call_id: call_id.clone(),
                received_at: now,
                answered_at: None,
                port: Some(port),
                sockets: Some((rtp, rtcp)),
                mode,
                media_started: false,
                hangup_cause: None,
                number: uri_user(target).to_owned(),
                received_wall: Utc::now(),
                answered_wall: None,
                pending_flow: None,
                ivr: None,
                pending_play: None,
                pending_listen: None,
                link: Link {
                    outbound: true,
                    target: Some(target.to_owned()),
                    peer,
                    from_user: "frontdoor".to_owned(),
                    ..Link::default()
                },
                acd: None,
            },
        );
        self.events.emit(
            Some(&call_id),
            EventBody::LegCreated {
                to: target.to_owned(),
                destination,
                rtp_port: port,
                peer_call_id,
            },
        );
        self.dial_timers.push(Reverse((now + ring_timeout, leg.0)));
        Ok(leg)
    }

    /// Dials the bridge target of `call`; a failure to place the leg fails `call` at once.
    fn dial_for(&mut self, now: Instant, ua: &mut UserAgent, call: CallHandle, target: &str) {
        let timeout = self.config.bridge.timeout();
        match self.dial(
            now,
            ua,
            target,
            Mode::Leg,
            Some(call),
            timeout,
            Presentation::default(),
        ) {
            Ok(leg) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.link.peer = Some(leg);
                }
            }
            Err((status, reason)) => {
                self.bridge_failed(now, ua, call, target, None, status, reason)
            }
        }
    }

    /// The bridge of `call` could not be set up: an unanswered incoming call is rejected with
    /// `status`, an answered one hung up.
    #[allow(clippy::too_many_arguments)]
    fn bridge_failed(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: CallHandle,
        target: &str,
        leg_status: Option<u16>,
        status: u16,
        reason: &'static str,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.link.peer = None;
        if c.mode == Mode::Ivr && c.ivr.is_some() {
            // An IVR `transfer`: the flow goes on (its `on_failure`).
            let call_id = c.call_id.clone();
            self.events.emit(
                Some(&call_id),
                EventBody::IvrTransfer {
                    to: target.to_owned(),
                    result: "failed",
                    reason,
                },
            );
            let failed = TransferOutcome::Failed { status: leg_status };
            self.feed(now, ua, call, IvrInput::TransferResult(failed));
            return;
        }
        let answered = c.answered_at.is_some() || c.link.outbound;
        let call_id = c.call_id.clone();
        if answered {
            c.hangup_cause = Some("bridge_failed");
        }
        self.events.emit(
            Some(&call_id),
            EventBody::BridgeFailed {
                to: target.to_owned(),
                leg_status,
                status: (!answered).then_some(status),
                reason: reason.to_owned(),
            },
        );
        if let Some(o) = self.originate.as_mut().filter(|o| o.first == call) {
            o.failure = Some(format!("bridge to {target} failed: {reason}"));
        }
        if answered {
            if let Err(e) = ua.hangup(now, call) {
                tracing::debug!(error = %e, "hangup after a failed bridge");
            }
        } else {
            self.events
                .emit(Some(&call_id), EventBody::CallRejected { status, reason });
            if let Err(e) = ua.reject(now, call, status, None) {
                tracing::debug!(error = %e, "reject after a failed bridge");
            }
        }
    }

    /// A call's media just started: dial its bridge target (an answered outgoing call with
    /// `bridge_to`), answer its unanswered peer, or bridge.
    fn leg_up(&mut self, now: Instant, ua: &mut UserAgent, call: CallHandle) {
        // An agent's phone answered an offer: its other phones stop ringing.
        self.fork_won(now, ua, call);
        if self.callback_leg_up(now, ua, call) {
            return;
        }
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.link.outbound && c.link.peer.is_none() {
            if let Some(target) = c.link.bridge_to.clone() {
                self.dial_for(now, ua, call, &target);
            }
            return;
        }
        let Some(peer) = c.link.peer else { return };
        if self
            .calls
            .get(&peer)
            .is_some_and(|p| !p.link.outbound && p.answered_at.is_none())
        {
            // The caller was ringing: answer it now (its media joins this worker and
            // `start_media` bridges).
            self.answer(now, ua, peer);
        } else {
            self.try_bridge(call);
        }
    }

    /// Sends the bridge command once both legs' media run.
    fn try_bridge(&mut self, call: CallHandle) {
        let Some(peer) = self.calls.get(&call).and_then(|c| c.link.peer) else {
            return;
        };
        let ready = |c: &Call| c.media_started && !c.link.bridged;
        if !(self.calls.get(&call).is_some_and(ready) && self.calls.get(&peer).is_some_and(ready)) {
            return;
        }
        for k in [call, peer] {
            if let Some(c) = self.calls.get_mut(&k) {
                c.link.bridged = true;
            }
        }
        self.media.send(Command::Bridge(call.0, peer.0));
    }

    /// The media engine confirmed a bridge.
    fn bridged(&mut self, now: Instant, ua: &mut UserAgent, key: u64, peer: u64) {
        let (a, b) = (CallHandle(key), CallHandle(peer));
        if !(self.calls.contains_key(&a) && self.calls.contains_key(&b)) {
            return;
        }
        // An ACD agent leg: the offer is accepted (acd.answered before bridge.bridged).
        for (leg, caller) in [(a, b), (b, a)] {
            self.agent_answered(now, ua, leg, caller);
        }
        self.callback_bridged(a, b);
        let (Some(ca), Some(cb)) = (self.calls.get(&a), self.calls.get(&b)) else {
            return;
        };
        let show = |m: Option<(Codec, u32)>| {
            m.map_or_else(|| "?".to_owned(), |(c, p)| format!("{}/{p}", c.name()))
        };
        let transcoding = ca.link.media != cb.link.media;
        let pairs = [
            (
                ca.call_id.clone(),
                cb.call_id.clone(),
                ca.link.media,
                cb.link.media,
            ),
            (
                cb.call_id.clone(),
                ca.call_id.clone(),
                cb.link.media,
                ca.link.media,
            ),
        ];
        for (id, peer_id, m, pm) in pairs {
            self.events.emit(
                Some(&id),
                EventBody::BridgeBridged {
                    peer_call_id: peer_id.to_string(),
                    media: show(m),
                    peer_media: show(pm),
                    transcoding,
                },
            );
        }
        for o in self.originate.iter_mut() {
            if o.first == a || o.first == b {
                o.bridged = true;
                o.hangup_at = o.duration.map(|d| now + d);
            }
        }
        for k in [a, b] {
            let Some(c) = self.calls.get(&k).filter(|c| {
                c.mode == Mode::Ivr
                    && c.ivr.is_some()
                    && !matches!(c.acd, Some(AcdRole::Caller { .. }))
            }) else {
                continue;
            };
            let call_id = c.call_id.clone();
            let to = self
                .calls
                .get(&if k == a { b } else { a })
                .and_then(|p| p.link.target.clone())
                .unwrap_or_default();
            self.events.emit(
                Some(&call_id),
                EventBody::IvrTransfer {
                    to,
                    result: "connected",
                    reason: "bridged",
                },
            );
            self.feed(
                now,
                ua,
                k,
                IvrInput::TransferResult(TransferOutcome::Connected),
            );
        }
    }

    /// `ended` (linked to `peer`) is over: a failed outgoing leg fails the bridge; otherwise
    /// the peer is hung up (BYE, or CANCEL while it rings).
    fn peer_ended(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        peer: CallHandle,
        ended: &Call,
        cause: EndCause,
    ) {
        let Some(p) = self.calls.get_mut(&peer) else {
            return;
        };
        p.link.peer = None;
        p.link.bridged = false;
        if ended.link.outbound && ended.answered_at.is_none() {
            let (status, reason) = match (cause, ended.hangup_cause) {
                (_, Some("no_answer")) => (480, "no_answer"),
                (EndCause::RemoteRejected(s @ (404 | 480 | 486 | 600 | 603)), _) => (s, "rejected"),
                (EndCause::RemoteRejected(s), _) if (500..600).contains(&s) => (502, "rejected"),
                (EndCause::RemoteRejected(_), _) => (480, "rejected"),
                (EndCause::Timeout, _) => (408, "timeout"),
                (EndCause::TransportError, _) => (502, "transport_error"),
                _ => (480, "not_answered"),
            };
            let leg_status = match cause {
                EndCause::RemoteRejected(s) => Some(s),
                _ => None,
            };
            let target = ended.link.target.clone().unwrap_or_default();
            self.bridge_failed(now, ua, peer, &target, leg_status, status, reason);
            return;
        }
        p.hangup_cause = Some("bridge_peer_ended");
        if let Err(e) = ua.hangup(now, peer) {
            tracing::debug!(error = %e, "hangup of the bridged peer");
        }
    }

    /// A re-INVITE from a bridged leg changed its direction: re-INVITE the other leg with the
    /// same direction (hold, resume).
    fn propagate_hold(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: CallHandle,
        media: &NegotiatedMedia,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        // The remote's own direction is the reverse of ours.
        let theirs = media.direction.reverse();
        let previous = c.link.remote_dir.replace(theirs);
        if !std::mem::take(&mut c.link.reinvite_in) || previous == Some(theirs) {
            return;
        }
        let call_id = c.call_id.clone();
        let Some(peer) = c.link.peer.filter(|_| c.link.bridged) else {
            return;
        };
        let Some(port) = self.calls.get(&peer).and_then(|p| p.port) else {
            return;
        };
        let local = LocalMedia {
            address: self.media_ip,
            port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            direction: theirs,
        };
        let sent = ua.reinvite(now, peer, &local);
        if let Err(e) = &sent {
            tracing::info!(%call_id, error = %e, "cannot propagate hold/resume");
        }
        let peer_call_id = self.calls.get(&peer).map(|p| p.call_id.to_string());
        self.events.emit(
            Some(&call_id),
            EventBody::BridgeHold {
                peer_call_id,
                direction: theirs.as_str(),
                propagated: sent.is_ok(),
            },
        );
    }

    /// `frontdoor call`: places the call; [`Self::originate_outcome`] says how it went once
    /// [`Self::active_calls`] is 0.
    pub fn originate(&mut self, now: Instant, ua: &mut UserAgent, o: Originate) {
        let (mode, bridge_to) = match &o.action {
            OriginateAction::Welcome => (Mode::Answer, None),
            OriginateAction::Echo => (Mode::Echo, None),
            OriginateAction::BridgeTo(to) => (Mode::Bridge, Some(to.clone())),
        };
        let wants_bridge = bridge_to.is_some();
        let timeout = self.config.bridge.timeout();
        match self.dial(
            now,
            ua,
            &o.target,
            mode,
            None,
            timeout,
            Presentation::default(),
        ) {
            Ok(first) => {
                if let Some(c) = self.calls.get_mut(&first) {
                    c.link.bridge_to = bridge_to;
                }
                self.originate = Some(OriginateState {
                    first,
                    wants_bridge,
                    answered: false,
                    bridged: false,
                    failure: None,
                    duration: o.duration,
                    hangup_at: None,
                });
            }
            Err((_, reason)) => {
                self.originate = Some(OriginateState {
                    first: CallHandle(u64::MAX),
                    wants_bridge,
                    answered: false,
                    bridged: false,
                    failure: Some(format!("cannot call {}: {reason}", o.target)),
                    duration: None,
                    hangup_at: None,
                });
            }
        }
    }

    /// For `frontdoor call`: `None` while calls are up; then `Ok` when the call was answered
    /// (and bridged, with `--bridge-to`), else why not.
    pub fn originate_outcome(&self) -> Option<Result<(), String>> {
        let o = self.originate.as_ref()?;
        if !self.calls.is_empty() {
            return None;
        }
        Some(match &o.failure {
            Some(f) => Err(f.clone()),
            None if !o.answered => Err("not answered".to_owned()),
            None if o.wants_bridge && !o.bridged => Err("not bridged".to_owned()),
            None => Ok(()),
        })
    }

    /// Wakes the media workers for the commands queued since the last call.
    pub fn flush_media(&mut self) {
        self.media.flush();
    }

    /// Calls whose media is still being torn down.
    pub fn media_draining(&self) -> usize {
        self.pending_release.len()
    }

    /// Handles what a helper thread reports (store, speech, dialplan reload).
    pub fn handle_note(&mut self, now: Instant, ua: &mut UserAgent, note: AppNote) {
        match note {
            AppNote::Reload(ReloadNote::Reloaded(plans)) => {
                self.events.emit(
                    None,
                    EventBody::DialplanLoaded {
                        version: plans.version,
                        dialplans: plans.names(),
                    },
                );
                self.plans = plans;
            }
            AppNote::Reload(ReloadNote::Rejected(diagnostics)) => {
                self.events
                    .emit(None, EventBody::DialplanRejected { diagnostics });
            }
            AppNote::Store(StoreReply::Callback(done)) => self.callback_store(now, ua, done),
            AppNote::Store(StoreReply::Recognised { key, profile }) => {
                self.recognised(now, ua, CallHandle(key), *profile);
            }
            AppNote::Store(StoreReply::Recorded {
                key,
                outcome,
                error,
            }) => {
                if let Some(call_id) = self.recording_calls.remove(&key) {
                    self.events.emit(
                        Some(&call_id),
                        EventBody::StoreCallRecorded { outcome, error },
                    );
                }
            }
            AppNote::Store(StoreReply::WavWritten {
                key,
                duration,
                bytes,
                error,
                ..
            }) => {
                let Some((call_id, rel)) = self.writing.remove(&key) else {
                    return;
                };
                self.events.emit(
                    Some(&call_id),
                    EventBody::IvrRecordingSaved {
                        path: rel,
                        duration_ms: millis(duration),
                        bytes,
                        error: error.clone(),
                    },
                );
                let duration = if error.is_some() {
                    Duration::ZERO
                } else {
                    duration
                };
                self.feed(
                    now,
                    ua,
                    CallHandle(key),
                    IvrInput::RecordingFinished { duration },
                );
            }
            AppNote::Recognized(done) => self.recognized(now, ua, *done),
            AppNote::Rendered(Rendered {
                key,
                result,
                part: Part::Chunk { index, last },
            }) => self.rendered_chunk(now, ua, &key, index, last, result),
            AppNote::Rendered(Rendered {
                key,
                result,
                part: Part::Whole,
            }) => {
                let waiters = self.tts_waiting.remove(&key).unwrap_or_default();
                for (call, id, language) in waiters {
                    let handle = CallHandle(call);
                    let Some(c) = self.calls.get_mut(&handle) else {
                        continue;
                    };
                    let call_id = c.call_id.clone();
                    if id == DRIVER_FEATURE {
                        self.feature_rendered(handle, &key, &result);
                        continue;
                    }
                    if callbacks::is_callback_playback(id) {
                        self.callback_rendered(now, ua, handle, id, &key, language, &result);
                        continue;
                    }
                    if id == DRIVER_ANNOUNCE {
                        // A position announcement: only while the caller still waits.
                        let waiting = matches!(c.acd, Some(AcdRole::Caller { .. }))
                            && c.link.peer.is_none()
                            && c.media_started
                            && !self.cb.asking(handle);
                        if let (true, Ok((prompt, source))) = (waiting, &result) {
                            self.say_rendered(
                                handle,
                                DRIVER_ANNOUNCE,
                                &key,
                                &language,
                                source.as_str(),
                                prompt.clone(),
                            );
                        }
                        continue;
                    }
                    let Some(ivr) = c.ivr.as_mut() else { continue };
                    let Some((_, since)) = ivr.rendering.filter(|(w, _)| *w == id) else {
                        continue; // stopped (barge-in) while rendering
                    };
                    ivr.rendering = None;
                    match &result {
                        Ok((prompt, source)) => {
                            let wait = now.saturating_duration_since(since);
                            self.emit_ivr_say(&call_id, id, &key, language, source, wait);
                            self.play_ivr(handle, id, prompt.clone());
                        }
                        Err(e) => {
                            tracing::error!(call_id = %call_id, error = %e, "speech failed; skipping the prompt");
                            self.feed(now, ua, handle, IvrInput::PromptFinished(PlaybackId(id)));
                        }
                    }
                }
            }
        }
    }

    /// `Action::StartListening`: a new speech turn on the call's media leg (sent before the
    /// step's prompt, so barge-in is armed from its first frame).
    fn start_listening(&mut self, call: CallHandle, req: &ListenRequest) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(ivr) = c.ivr.as_mut() else { return };
        ivr.turn += 1;
        ivr.listening = Some((req.step.clone(), Arc::new(crate::speech::expectation(req))));
        ivr.spec.reset();
        let cfg = ListenConfig {
            vad: VadConfig {
                end_silence: req.end_silence,
                max_utterance: req.max_speech,
                no_input: req.no_input,
                // without a recogniser there is nothing to speculate with
                speculate: if self.asr.is_some() {
                    Duration::from_millis(self.config.speech.speculate_ms)
                } else {
                    Duration::ZERO
                },
                ..VadConfig::default()
            },
            barge_in: req.barge_in.then(BargeInConfig::default),
        };
        if c.media_started {
            self.media.send(Command::Listen { key: call.0, cfg });
        } else {
            c.pending_listen = Some(cfg);
        }
    }

    /// The endpointer ended an utterance: hand it to the recogniser pool (never blocking: a
    /// full queue answers "no match" at once).
    fn utterance(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        key: u64,
        pcm: Vec<i16>,
        decided: Instant,
        speech_ms: u64,
    ) {
        let call = CallHandle(key);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let call_id = c.call_id.clone();
        let Some(ivr) = c.ivr.as_mut() else { return };
        let Some((step, expect)) = ivr.listening.take() else {
            return; // the turn was dropped meanwhile
        };
        let turn = ivr.turn;
        let speculations = ivr.spec.take_started();
        let refused = match ivr.spec.ended(decided) {
            speech_turns::AtEnd::Use(done) => {
                self.events.emit(
                    Some(&call_id),
                    EventBody::SpeechEnded {
                        step,
                        speech_ms,
                        speculations,
                        refused: None,
                    },
                );
                self.recognized_at(now, ua, *done, decided, true);
                return;
            }
            speech_turns::AtEnd::Await => None,
            speech_turns::AtEnd::Recognize => {
                let job = SpeechJob {
                    key,
                    turn,
                    pcm,
                    expect,
                    decided,
                    queued: now,
                    spec: 0,
                    cancel: None,
                };
                match self.asr.as_ref() {
                    Some(pool) => pool.submit(job).err().map(|_| "queue_full"),
                    None => Some("no_recognizer"),
                }
            }
        };
        self.events.emit(
            Some(&call_id),
            EventBody::SpeechEnded {
                step,
                speech_ms,
                speculations,
                refused,
            },
        );
        if refused.is_some() {
            self.feed(
                now,
                ua,
                call,
                IvrInput::SpeechResult(crate::speech::no_match()),
            );
        }
    }

    /// `SpeechPaused`: recognise the utterance so far while the caller may still go on
    /// (skipped when the pool is busy).
    fn speech_paused(&mut self, now: Instant, key: u64, pcm: Vec<i16>) {
        let Some(pool) = self.asr.as_ref() else {
            return;
        };
        let Some(ivr) = self
            .calls
            .get_mut(&CallHandle(key))
            .and_then(|c| c.ivr.as_mut())
        else {
            return;
        };
        let Some((_, expect)) = ivr.listening.as_ref() else {
            return;
        };
        let (spec, cancel) = ivr.spec.paused();
        let job = SpeechJob {
            key,
            turn: ivr.turn,
            pcm,
            expect: expect.clone(),
            decided: now,
            queued: now,
            spec,
            cancel: Some(cancel),
        };
        if pool.submit_speculative(job).is_err() {
            ivr.spec.refused(spec);
        }
    }

    /// A recognition came back: a speculative one goes through the turn's speculation, an
    /// ended utterance's is fed at once.
    fn recognized(&mut self, now: Instant, ua: &mut UserAgent, done: SpeechDone) {
        if done.spec == 0 {
            let decided = done.decided;
            self.recognized_at(now, ua, done, decided, false);
            return;
        }
        let Some(ivr) = self
            .calls
            .get_mut(&CallHandle(done.key))
            .and_then(|c| c.ivr.as_mut())
        else {
            return;
        };
        if ivr.turn != done.turn {
            return; // a speculation of a turn that is over: nobody waits for it
        }
        match ivr.spec.arrived(done) {
            speech_turns::Arrived::Kept | speech_turns::Arrived::Discard(_) => {}
            speech_turns::Arrived::Use(done, decided) => {
                self.recognized_at(now, ua, *done, decided, true);
            }
        }
    }

    /// Feeds a recognition of an ended utterance (decided at `decided`) to the call's
    /// interpreter if its turn is still on; `speculative`: recognised at a pause before the end.
    fn recognized_at(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        done: SpeechDone,
        decided: Instant,
        speculative: bool,
    ) {
        let call = CallHandle(done.key);
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let call_id = c.call_id.clone();
        let Some(ivr) = c.ivr.as_ref() else { return };
        let current = ivr.turn == done.turn;
        let (input, transcript, meaning, confidence, error) = match done.result {
            Ok(r) if done.no_input => (
                IvrInput::SpeechNoInput,
                redact_digits(&r.transcript),
                None,
                0.0,
                None,
            ),
            Ok(r) => (
                IvrInput::SpeechResult(r.clone()),
                redact_digits(&r.transcript),
                r.meaning,
                r.confidence,
                None,
            ),
            Err(e) => (
                IvrInput::SpeechResult(crate::speech::no_match()),
                String::new(),
                None,
                0.0,
                Some(e),
            ),
        };
        self.events.emit(
            Some(&call_id),
            EventBody::SpeechRecognized {
                transcript,
                meaning,
                confidence: (f64::from(confidence) * 1000.0).round() / 1000.0,
                end_to_result_ms: millis(now.saturating_duration_since(decided)),
                queue_ms: millis(done.queue_wait),
                decode_ms: millis(done.decode),
                audio_ms: done.audio_ms,
                speculative,
                stale: !current,
                error,
            },
        );
        if current {
            self.feed(now, ua, call, input);
        }
    }

    /// The caller lookup of a flow call came back: start its interpreter.
    fn recognised(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: CallHandle,
        profile: CallerProfile,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return; // the caller gave up while we looked
        };
        let Some(pending) = c.pending_flow.take() else {
            return;
        };
        let attrs = caller_attributes(&profile);
        self.events.emit(
            Some(&c.call_id),
            EventBody::StoreCaller {
                number: attrs.number.clone(),
                known: attrs.known,
                previous_calls: profile.previous_calls,
                lookup_ms: millis(now.saturating_duration_since(pending.since)),
            },
        );
        let ctx = CallContext {
            call_id: c.call_id.to_string(),
            dialed: c.number.clone(),
            trunk: None,
            caller: attrs,
        };
        match frontdoor_ivr::Call::new(pending.plan, &pending.flow, ctx) {
            Ok(mut ivr) => {
                ivr.start(now, Utc::now());
                c.ivr = Some(Box::new(IvrCall {
                    call: ivr,
                    profile,
                    plans: pending.plans,
                    playing: None,
                    rendering: None,
                    streaming: None,
                    timer_at: None,
                    after_notice: None,
                    turn: 0,
                    listening: None,
                    spec: speech_turns::Speculation::default(),
                }));
                self.drive(now, ua, call);
            }
            Err(e) => {
                tracing::error!(call_id = %c.call_id, error = %e, "cannot start the flow");
                let _ = ua.reject(now, call, 500, None);
            }
        }
    }

    /// Feeds an input to a call's interpreter and runs what follows.
    fn feed(&mut self, now: Instant, ua: &mut UserAgent, call: CallHandle, input: IvrInput) {
        let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) else {
            return;
        };
        ivr.call.handle_event(input, now, Utc::now());
        self.drive(now, ua, call);
    }

    /// Drains the interpreter: its events onto the stream, its actions executed (feeding
    /// back what completes at once), until it waits; then re-arms its timer.
    fn drive(&mut self, now: Instant, ua: &mut UserAgent, call: CallHandle) {
        for _ in 0..1024 {
            let Some(c) = self.calls.get_mut(&call) else {
                return;
            };
            let call_id = c.call_id.clone();
            let Some(ivr) = c.ivr.as_mut() else { return };
            let mut actions = Vec::new();
            while let Some(e) = ivr.call.poll_event() {
                self.events.emit(Some(&call_id), EventBody::Ivr(e));
            }
            while let Some(a) = ivr.call.poll_action() {
                actions.push(a);
            }
            if actions.is_empty() {
                break;
            }
            let mut inputs = Vec::new();
            for a in actions {
                if let Some(i) = self.execute(now, ua, call, &call_id, a) {
                    inputs.push(i);
                }
            }
            for i in inputs {
                if let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) {
                    ivr.call.handle_event(i, now, Utc::now());
                }
            }
        }
        if let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) {
            if let Some(t) = ivr.call.poll_timeout() {
                if ivr.timer_at.is_none_or(|at| t < at) {
                    ivr.timer_at = Some(t);
                    self.ivr_timers.push(Reverse((t, call.0)));
                }
            }
        }
    }

    /// Executes one interpreter action; returns the input to feed back when it completes at once.
    fn execute(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: CallHandle,
        call_id: &Arc<str>,
        action: Action,
    ) -> Option<IvrInput> {
        match action {
            Action::Answer => {
                let answered = self
                    .calls
                    .get(&call)
                    .is_some_and(|c| c.answered_at.is_some());
                if !answered {
                    self.answer(now, ua, call);
                }
                self.calls
                    .get(&call)
                    .is_some_and(|c| c.answered_at.is_some())
                    .then_some(IvrInput::Answered)
            }
            Action::Play { id, file } => {
                let prompt = self
                    .calls
                    .get(&call)
                    .and_then(|c| c.ivr.as_ref())
                    .and_then(|i| i.plans.prompts.get(&file).cloned());
                let Some(p) = prompt else {
                    tracing::error!(%call_id, %file, "prompt not loaded; skipping it");
                    return Some(IvrInput::PromptFinished(id));
                };
                self.ensure_answered(now, ua, call);
                self.events
                    .emit(Some(call_id), EventBody::IvrPlay { id: id.0, file });
                self.play_ivr(call, id.0, p);
                None
            }
            Action::Say { id, text, language } => {
                if text.trim().is_empty() {
                    return Some(IvrInput::PromptFinished(id));
                }
                self.ensure_answered(now, ua, call);
                let voice = self.tts.voice(&language);
                if let Some(p) = self.tts.cached(&voice, &text) {
                    self.events.emit(
                        Some(call_id),
                        EventBody::IvrSay {
                            id: id.0,
                            text,
                            language,
                            voice,
                            cache: "memory",
                            wait_ms: 0,
                        },
                    );
                    self.play_ivr(call, id.0, p);
                    return None;
                }
                // Not rendered yet (a text with variables): the call waits, the SIP task not.
                if let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) {
                    ivr.rendering = Some((id.0, now));
                }
                let key = (voice, text);
                let waiters = self.tts_waiting.entry(key.clone()).or_default();
                if waiters.is_empty() {
                    self.tts_pool.request(key);
                }
                waiters.push((call.0, id.0, language));
                None
            }
            Action::StopPlayback { id } => {
                if let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) {
                    if ivr.rendering.is_some_and(|(r, _)| r == id.0) {
                        ivr.rendering = None;
                    }
                    if ivr.streaming == Some(id.0) {
                        ivr.streaming = None;
                    }
                    if ivr.playing == Some(id.0) {
                        ivr.playing = None;
                        self.media.send(Command::StopPlayback(call.0));
                    }
                    if let Some(c) = self.calls.get_mut(&call) {
                        if c.pending_play.as_ref().is_some_and(|(p, _)| *p == id.0) {
                            c.pending_play = None;
                        }
                    }
                }
                None
            }
            Action::StartDigitCollection | Action::StopDigitCollection => None,
            Action::StartListening(req) => {
                self.start_listening(call, &req);
                None
            }
            Action::StopListening => {
                let c = self.calls.get_mut(&call)?;
                c.pending_listen = None;
                if let Some(ivr) = c.ivr.as_mut() {
                    ivr.turn += 1;
                    ivr.listening = None;
                    ivr.spec.reset();
                }
                if c.media_started {
                    self.media.send(Command::StopListening(call.0));
                }
                None
            }
            Action::Enqueue(req) => {
                let reason = match self.enqueue(now, ua, call, call_id, &req) {
                    Ok(()) => return None,
                    Err(reason) => reason,
                };
                // The step fails. With an `on_failure` the dialplan speaks (the hotline: "All
                // our agents are busy..."); without one the driver says "All agents are busy"
                // before the interpreter hangs up.
                self.events.emit(
                    Some(call_id),
                    EventBody::IvrEnqueue {
                        queue: req.queue,
                        priority: req.priority,
                        result: "failed",
                        reason,
                    },
                );
                let failed = IvrInput::QueueResult(QueueOutcome::Failed {
                    reason: reason.to_owned(),
                });
                self.fail_with_notice(call, call_id, AGENTS_BUSY, &req.language, failed)
            }
            Action::Transfer { to, timeout } => {
                // A B2BUA leg, bridged when answered (`TransferResult` comes from `bridged` or
                // `bridge_failed`).
                match self.dial(
                    now,
                    ua,
                    &to,
                    Mode::Leg,
                    Some(call),
                    timeout,
                    Presentation::default(),
                ) {
                    Ok(leg) => {
                        if let Some(c) = self.calls.get_mut(&call) {
                            c.link.peer = Some(leg);
                        }
                        None
                    }
                    Err((_, reason)) => {
                        self.events.emit(
                            Some(call_id),
                            EventBody::IvrTransfer {
                                to,
                                result: "failed",
                                reason,
                            },
                        );
                        Some(IvrInput::TransferResult(TransferOutcome::Failed {
                            status: None,
                        }))
                    }
                }
            }
            Action::Record {
                path,
                max_duration,
                beep,
                ..
            } => {
                let media_started = self.calls.get(&call).is_some_and(|c| c.media_started);
                let Some(abs) = safe_join(&self.recordings_dir, &path).filter(|_| media_started)
                else {
                    tracing::warn!(%call_id, %path, "cannot record here; skipping the recording");
                    return Some(IvrInput::RecordingFinished {
                        duration: Duration::ZERO,
                    });
                };
                if beep {
                    self.media.send(Command::Play(
                        call.0,
                        DRIVER_PLAYBACK,
                        vec![self.beep.clone()],
                    ));
                }
                self.media.send(Command::Record(call.0, max_duration));
                self.recording.insert(call.0, (call_id.clone(), path, abs));
                None
            }
            Action::StopRecording => {
                self.media.send(Command::StopRecord(call.0));
                None
            }
            Action::RecordCall { start: true } => {
                self.ensure_answered(now, ua, call);
                if !self.start_call_recording(call) {
                    tracing::warn!(%call_id, "record_call: recording is off ([recording] enabled = false) or the call has no media");
                }
                None
            }
            Action::RecordCall { start: false } => {
                self.stop_call_recording(call);
                None
            }
            Action::Hangup { reason } => {
                tracing::debug!(%call_id, %reason, "IVR hangs up");
                if let Err(e) = ua.hangup(now, call) {
                    tracing::debug!(error = %e, "IVR hangup");
                }
                None
            }
        }
    }

    /// `enqueue`: the caller joins the ACD queue and hears hold audio. Fails ("no acd",
    /// "unknown queue", "no agents logged in") when it cannot wait for an agent.
    fn enqueue(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: CallHandle,
        call_id: &Arc<str>,
        req: &frontdoor_ivr::EnqueueRequest,
    ) -> Result<(), &'static str> {
        let vip_class = self.config.acd.as_ref().map_or(1, |a| a.vip_class);
        let desk = self.desk.as_mut().ok_or("no acd")?;
        let queue = desk.queue(&req.queue).ok_or("unknown queue")?;
        if !desk.staffed(queue) {
            return Err("no agents logged in");
        }
        // The step's `skills` by name → the core's requirements (docs/acd.md "Skills").
        let requirements = desk.requirements(&req.skills);
        if requirements
            .as_deref()
            .is_some_and(|r| !desk.staffed_for(queue, r))
        {
            return Err("no skilled agent logged in");
        }
        let entry = EntryId(call.0);
        let class = if req.vip {
            req.priority.max(vip_class)
        } else {
            req.priority
        };
        desk.handle(
            now,
            AcdEvent::Enqueue(frontdoor_acd::Enqueue {
                class,
                requirements,
                ..frontdoor_acd::Enqueue::live(entry, queue)
            }),
        )
        .map_err(|e| {
            tracing::warn!(%call_id, error = %e, "the ACD refused the caller");
            "refused by the acd"
        })?;
        self.ensure_answered(now, ua, call);
        if let Some(c) = self.calls.get_mut(&call) {
            c.acd = Some(AcdRole::Caller { entry, since: now });
            if c.media_started {
                self.media
                    .send(Command::SetIdle(call.0, self.prompt("hold")));
            }
        }
        self.entries.insert(entry, call);
        self.announce_lang.insert(call.0, req.language.clone());
        if let Some(t) = req.timeout {
            self.queue_timers.push(Reverse((now + t, call.0)));
        }
        self.events.emit(
            Some(call_id),
            EventBody::IvrEnqueue {
                queue: req.queue.clone(),
                priority: req.priority,
                result: "queued",
                reason: "acd",
            },
        );
        self.events.emit(
            Some(call_id),
            EventBody::AcdEnqueued {
                queue: req.queue.clone(),
                entry: entry.0,
                class,
                skills: req.skills.clone(),
            },
        );
        Ok(())
    }

    /// The caller's `enqueue` `timeout` expired while it still waits: it leaves the queue and
    /// the step fails (its `on_failure`).
    fn queue_timeout(&mut self, now: Instant, ua: &mut UserAgent, call: CallHandle) {
        self.leave_queue(now, ua, call, "timeout");
    }

    /// The caller leaves the queue while waiting or ringing at an agent (`acd.abandoned` with
    /// `reason`: `timeout`, or `engine` when the engine could not ring the agent, e.g. no RTP
    /// port free); the ACD frees the agent without counting a no-answer, and the step fails
    /// (its `on_failure`).
    fn leave_queue(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: CallHandle,
        reason: &'static str,
    ) {
        let Some((entry, since, call_id)) = self.calls.get(&call).and_then(|c| match c.acd {
            Some(AcdRole::Caller { entry, since }) => Some((entry, since, c.call_id.clone())),
            _ => None,
        }) else {
            return;
        };
        let waiting = self.desk.as_ref().is_some_and(|d| {
            d.acd()
                .entry(entry)
                .is_some_and(|e| !matches!(e.status, EntryStatus::InService { .. }))
        });
        if !waiting {
            return;
        }
        if let Some(d) = self.desk.as_mut() {
            let _ = d.handle(now, AcdEvent::Abandon { entry });
        }
        self.entries.remove(&entry);
        if let Some(c) = self.calls.get_mut(&call) {
            c.acd = None;
        }
        self.media.send(Command::SetIdle(call.0, None));
        self.events.emit(
            Some(&call_id),
            EventBody::AcdAbandoned {
                entry: entry.0,
                reason,
                waited_ms: millis(now.saturating_duration_since(since)),
            },
        );
        let failed = QueueOutcome::Failed {
            reason: reason.to_owned(),
        };
        self.feed(now, ua, call, IvrInput::QueueResult(failed));
    }

    /// One ACD decision.
    fn desk_action(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        agents: &Agents,
        action: AcdAction,
    ) {
        match action {
            AcdAction::Offer {
                entry,
                agent,
                queue,
                kind: EntryKind::Live,
            } => self.offer(now, ua, agents, entry, agent, queue),
            AcdAction::Offer { entry, agent, .. } => self.offer_callback(now, agents, entry, agent),
            AcdAction::CancelOffer {
                entry,
                agent,
                reason,
            } => {
                self.callback_offer_cancelled(now, ua, entry);
                let legs: Vec<CallHandle> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| {
                        matches!(c.acd, Some(AcdRole::Agent { entry: e, agent: a, answered: false }) if e == entry && a == agent)
                    })
                    .map(|(h, _)| *h)
                    .collect();
                for leg in legs {
                    if let Some(c) = self.calls.get_mut(&leg) {
                        c.hangup_cause = Some("offer_cancelled");
                        // The leg's end is no refusal any more.
                        c.acd = None;
                        c.link.peer = None;
                    }
                    if let Err(e) = ua.hangup(now, leg) {
                        tracing::debug!(error = %e, "cancel of a withdrawn offer");
                    }
                }
                self.forks.remove(&entry);
                if let Some(c) = self.entries.get(&entry).and_then(|h| self.calls.get_mut(h)) {
                    c.link.peer = None;
                }
                let agent = self.agent_name(agent);
                self.events.emit(
                    self.entry_call_id(entry).as_ref(),
                    EventBody::AcdOfferCancelled {
                        entry: entry.0,
                        agent,
                        reason: match reason {
                            CancelReason::Timeout => "timeout",
                            CancelReason::Abandoned => "abandoned",
                            CancelReason::AgentLeft => "agent_left",
                        },
                    },
                );
            }
            AcdAction::Announce {
                entry,
                position,
                estimated_wait,
            } => {
                self.announce(entry, position, estimated_wait);
                self.events.emit(
                    self.entry_call_id(entry).as_ref(),
                    EventBody::AcdPosition {
                        entry: entry.0,
                        position,
                        estimated_wait_s: estimated_wait.map(|d| d.as_secs()),
                    },
                );
            }
            AcdAction::Voicemail { entry } | AcdAction::CallbackExhausted { entry } => {
                self.callback_exhausted(entry);
                // Overflow sends the caller on: the `enqueue` step fails (its `on_failure`).
                if let Some(call) = self.entries.remove(&entry) {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.acd = None;
                    }
                    self.media.send(Command::SetIdle(call.0, None));
                    let failed = QueueOutcome::Failed {
                        reason: "overflow".to_owned(),
                    };
                    self.feed(now, ua, call, IvrInput::QueueResult(failed));
                }
            }
            AcdAction::AgentStateChanged { agent, state } => {
                let detail = serde_json::to_value(state).unwrap_or_default();
                let kind = match state.kind() {
                    frontdoor_acd::AgentStateKind::LoggedOut => "logged_out",
                    frontdoor_acd::AgentStateKind::Available => "available",
                    frontdoor_acd::AgentStateKind::Offered => "offered",
                    frontdoor_acd::AgentStateKind::OnCall => "on_call",
                    frontdoor_acd::AgentStateKind::WrapUp => "wrap_up",
                    frontdoor_acd::AgentStateKind::Paused => "paused",
                };
                self.events.emit(
                    None,
                    EventBody::AgentState {
                        agent: self.agent_name(agent),
                        state: kind,
                        detail,
                    },
                );
            }
            AcdAction::OfferCallback { entry } => self.callback_overflow_offer(entry),
            AcdAction::Promoted { .. } | AcdAction::Widened { .. } | AcdAction::Moved { .. } => {}
        }
    }

    /// Says "You are number N in line..." to a waiting caller (over its hold audio's place;
    /// the hold audio resumes after it). Not while an agent's phone rings for it.
    fn announce(&mut self, entry: EntryId, position: usize, wait: Option<Duration>) {
        let Some(call) = self.entries.get(&entry).copied() else {
            return;
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.link.peer.is_some() || !c.media_started || self.cb.asking(call) {
            return;
        }
        let language = self
            .announce_lang
            .get(&call.0)
            .cloned()
            .unwrap_or_else(|| "en".to_owned());
        let minutes = wait.map(|d| d.as_secs().div_ceil(60).max(1));
        let text = if language.starts_with("zh") {
            let mut t = format!("您目前排在第{position}位。");
            if let Some(m) = minutes {
                t.push_str(&format!("预计等待约{m}分钟。"));
            }
            t
        } else {
            let mut t = format!("You are number {position} in line.");
            if let Some(m) = minutes {
                let unit = if m == 1 { "minute" } else { "minutes" };
                t.push_str(&format!(" The estimated wait is about {m} {unit}."));
            }
            if let Some(hint) = self.callback_hint(call, &language) {
                t.push_str(&hint);
            }
            t
        };
        let voice = self.tts.voice(&language);
        let key = (voice, text);
        let waiters = self.tts_waiting.entry(key.clone()).or_default();
        if waiters.is_empty() {
            self.tts_pool.request(key);
        }
        waiters.push((call.0, DRIVER_ANNOUNCE, language));
    }

    fn agent_name(&self, agent: AgentId) -> String {
        self.desk
            .as_ref()
            .and_then(|d| d.agent_name(agent))
            .unwrap_or_default()
            .to_owned()
    }

    fn entry_call_id(&self, entry: EntryId) -> Option<Arc<str>> {
        self.entries
            .get(&entry)
            .and_then(|h| self.calls.get(h))
            .map(|c| c.call_id.clone())
    }

    /// The ACD offers `entry` to `agent`: ring the agent's first registered contact; its
    /// answer bridges it with the caller ([`Self::agent_answered`]).
    fn offer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        agents: &Agents,
        entry: EntryId,
        agent: AgentId,
        queue: frontdoor_acd::QueueId,
    ) {
        let name = self.agent_name(agent);
        let Some(caller) = self.entries.get(&entry).copied() else {
            if let Some(d) = self.desk.as_mut() {
                let _ = d.handle(now, AcdEvent::Abandon { entry });
            }
            return;
        };
        let username = self
            .config
            .agents
            .agent
            .iter()
            .find(|a| a.id == name)
            .map(|a| a.username.clone())
            .unwrap_or_default();
        let contacts: Vec<String> = agents
            .contacts(&username)
            .iter()
            .map(|b| b.uri.clone())
            .collect();
        let pop = self.screen_pop(caller, &name, queue, now);
        let call_id = self.calls.get(&caller).map(|c| c.call_id.clone());
        let ring = self
            .config
            .acd
            .as_ref()
            .and_then(|a| a.offer_timeout_s)
            .map_or_else(
                || self.config.bridge.timeout(),
                // The ACD withdraws the offer first (CancelOffer); this is a safety net.
                |s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)) + Duration::from_secs(2),
            );
        // Every registered contact rings at once (forking); the first to answer wins.
        let placed = self.ring_contacts(now, ua, caller, &contacts, ring, &pop);
        self.send_pop(call_id.as_ref(), &pop);
        let leg_call_ids: Vec<String> = placed
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|leg| self.calls.get(leg))
            .map(|c| c.call_id.to_string())
            .collect();
        self.events.emit(
            call_id.as_ref(),
            EventBody::AcdOffered {
                entry: entry.0,
                agent: name.clone(),
                contact: contacts.first().cloned(),
                leg_call_id: leg_call_ids.first().cloned(),
                contacts,
                leg_call_ids,
                screen_pop: Box::new(pop),
            },
        );
        match placed {
            Ok(legs) => {
                for &leg in &legs {
                    if let Some(c) = self.calls.get_mut(&leg) {
                        c.acd = Some(AcdRole::Agent {
                            entry,
                            agent,
                            answered: false,
                        });
                    }
                }
                if let Some(c) = self.calls.get_mut(&caller) {
                    c.link.peer = legs.first().copied();
                }
                self.forks.insert(entry, legs);
            }
            // The engine could not place the agent's leg (no RTP port free, call limit): not
            // the agent's refusal. The caller leaves the queue; the agent stays available.
            Err("no_rtp_port" | "max_calls") => self.leave_queue(now, ua, caller, "engine"),
            Err(reason) => {
                self.events.emit(
                    call_id.as_ref(),
                    EventBody::AcdRefused {
                        entry: entry.0,
                        agent: name,
                        reason: if reason == "not_registered" {
                            "not_registered"
                        } else {
                            "failed"
                        },
                        status: None,
                    },
                );
                if let Some(d) = self.desk.as_mut() {
                    let _ = d.handle(now, AcdEvent::OfferRefused { agent, entry });
                }
            }
        }
    }

    /// Hands a screen pop to the webhook, if one is configured. Never waits: a full queue
    /// drops the pop (and says so on the event stream).
    fn send_pop(&self, call_id: Option<&Arc<str>>, pop: &ScreenPop) {
        if let Some(w) = &self.webhook {
            if !w.send(pop) {
                self.events.emit(
                    call_id,
                    EventBody::ScreenPopFailed {
                        attempts: 0,
                        error: "webhook queue full".to_owned(),
                    },
                );
            }
        }
    }

    /// How the agent's phone shows the caller: the customer's name (else the number) as the
    /// display name, and a `Call-Info` link to the screen pop with `[screenpop] url_base`.
    fn presentation(&self, pop: &ScreenPop) -> Presentation {
        let mut headers: Vec<(String, String)> = self
            .config
            .screenpop
            .url_base
            .as_deref()
            .and_then(|base| crate::screenpop::call_info(base, &pop.call_id))
            .map(|v| vec![("Call-Info".to_owned(), v)])
            .unwrap_or_default();
        headers.push((
            crate::screenpop::POP_HEADER.to_owned(),
            crate::screenpop::pop_header(pop),
        ));
        Presentation {
            display_name: crate::screenpop::sip_display_name(&crate::screenpop::desk_name(pop), 40),
            headers,
        }
    }

    /// What the agent's desktop shows about the caller.
    fn screen_pop(
        &self,
        caller: CallHandle,
        agent: &str,
        queue: frontdoor_acd::QueueId,
        now: Instant,
    ) -> ScreenPop {
        let Some(c) = self.calls.get(&caller) else {
            return ScreenPop::default();
        };
        let waited = match c.acd {
            Some(AcdRole::Caller { since, .. }) => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        let mut pop = ScreenPop {
            call_id: c.call_id.to_string(),
            agent: agent.to_owned(),
            queue: self
                .desk
                .as_ref()
                .and_then(|d| d.queue_name(queue))
                .unwrap_or_default()
                .to_owned(),
            caller_number: Some(c.link.from_user.clone()).filter(|u| !u.is_empty()),
            caller_display: c.link.from_display.clone(),
            waited_s: waited.as_secs(),
            ..ScreenPop::default()
        };
        if let Some(ivr) = c.ivr.as_ref() {
            crate::screenpop::add_ivr_context(&mut pop, &ivr.profile, ivr.call.summary());
        }
        pop
    }

    /// `leg` is bridged with `caller`: when it is an agent leg of the ACD, the offer was
    /// accepted and the caller's `enqueue` step is over.
    fn agent_answered(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        leg: CallHandle,
        caller: CallHandle,
    ) {
        let Some(c) = self.calls.get_mut(&leg) else {
            return;
        };
        let Some(AcdRole::Agent {
            entry,
            agent,
            answered: false,
        }) = c.acd
        else {
            return;
        };
        c.acd = Some(AcdRole::Agent {
            entry,
            agent,
            answered: true,
        });
        let leg_call_id = c.call_id.to_string();
        let accepted = self
            .desk
            .as_mut()
            .map(|d| d.handle(now, AcdEvent::OfferAccepted { agent, entry }));
        let name = self.agent_name(agent);
        let call_id = self.calls.get(&caller).map(|c| c.call_id.clone());
        if let Some(Err(e)) = accepted {
            // The offer was withdrawn meanwhile (ring timeout): hang the agent leg up.
            tracing::info!(error = %e, "an agent answered a withdrawn offer");
            if let Some(c) = self.calls.get_mut(&leg) {
                c.acd = None;
            }
            if let Err(e) = ua.hangup(now, leg) {
                tracing::debug!(error = %e, "hangup of a late agent");
            }
            return;
        }
        self.entries.remove(&entry);
        self.media.send(Command::SetIdle(caller.0, None));
        self.events.emit(
            call_id.as_ref(),
            EventBody::AcdAnswered {
                entry: entry.0,
                agent: name.clone(),
                leg_call_id,
            },
        );
        let connected = QueueOutcome::Connected { agent: name };
        self.feed(now, ua, caller, IvrInput::QueueResult(connected));
    }

    /// A call with an ACD role ended. Returns true when the ACD handled its peer (an agent
    /// leg that never answered: the caller stays queued).
    fn acd_call_ended(
        &mut self,
        now: Instant,
        call: CallHandle,
        c: &Call,
        role: AcdRole,
        cause: &EndCause,
    ) -> bool {
        if let AcdRole::Agent {
            entry,
            answered: false,
            ..
        } = role
        {
            if self.fork_ended(entry, call) {
                // Another phone of the agent still rings for this offer.
                return true;
            }
        }
        let Some(desk) = self.desk.as_mut() else {
            return false;
        };
        match role {
            AcdRole::Caller { entry, since } => {
                self.entries.remove(&entry);
                self.forks.remove(&entry);
                match desk.acd().entry(entry).map(|e| e.status) {
                    Some(EntryStatus::InService { agent }) => {
                        let _ = desk.handle(now, AcdEvent::CallEnded { agent });
                    }
                    Some(_) => {
                        let _ = desk.handle(now, AcdEvent::Abandon { entry });
                        self.events.emit(
                            Some(&c.call_id),
                            EventBody::AcdAbandoned {
                                entry: entry.0,
                                reason: "hung_up",
                                waited_ms: millis(now.saturating_duration_since(since)),
                            },
                        );
                    }
                    None => {}
                }
                false
            }
            AcdRole::Agent {
                entry,
                agent,
                answered: true,
            } => {
                if desk.acd().entry(entry).map(|e| e.status)
                    == Some(EntryStatus::InService { agent })
                {
                    let _ = desk.handle(now, AcdEvent::CallEnded { agent });
                }
                false
            }
            AcdRole::Agent {
                entry,
                agent,
                answered: false,
            } => {
                if desk.acd().entry(entry).map(|e| e.status) != Some(EntryStatus::Offered { agent })
                {
                    return true;
                }
                let (event, reason, status) = match (cause, c.hangup_cause) {
                    (_, Some("no_answer")) | (EndCause::Timeout, _) => {
                        (AcdEvent::OfferTimedOut { agent, entry }, "no_answer", None)
                    }
                    (EndCause::RemoteRejected(s), _) => (
                        AcdEvent::OfferRefused { agent, entry },
                        "rejected",
                        Some(*s),
                    ),
                    _ => (AcdEvent::OfferRefused { agent, entry }, "failed", None),
                };
                let _ = desk.handle(now, event);
                let name = self.agent_name(agent);
                let caller = self.entries.get(&entry).copied();
                let call_id = caller.and_then(|h| self.calls.get_mut(&h)).map(|p| {
                    p.link.peer = None;
                    p.call_id.clone()
                });
                self.events.emit(
                    call_id.as_ref(),
                    EventBody::AcdRefused {
                        entry: entry.0,
                        agent: name,
                        reason,
                        status,
                    },
                );
                true
            }
        }
    }

    /// A failed enqueue/transfer: fed at once when the current step has an `on_failure` (the
    /// dialplan handles it), else after the driver's notice has played.
    fn fail_with_notice(
        &mut self,
        call: CallHandle,
        call_id: &Arc<str>,
        table: &[(&'static str, &'static str)],
        language: &str,
        failed: IvrInput,
    ) -> Option<IvrInput> {
        let ivr = self.calls.get(&call).and_then(|c| c.ivr.as_ref())?;
        if current_step_has_on_failure(&ivr.call) || !self.calls.get(&call)?.media_started {
            return Some(failed);
        }
        let (lang, text) = notice(table, language);
        let voice = self.tts.voice(lang);
        let Some(p) = self.tts.cached(&voice, text) else {
            return Some(failed);
        };
        self.events.emit(
            Some(call_id),
            EventBody::IvrSay {
                id: DRIVER_NOTICE,
                text: text.to_owned(),
                language: lang.to_owned(),
                voice,
                cache: "memory",
                wait_ms: 0,
            },
        );
        if let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) {
            ivr.after_notice = Some(failed);
        }
        self.play_ivr(call, DRIVER_NOTICE, p);
        None
    }

    fn ensure_answered(&mut self, now: Instant, ua: &mut UserAgent, call: CallHandle) {
        if self
            .calls
            .get(&call)
            .is_some_and(|c| c.answered_at.is_none())
        {
            // Media needs an answered call (no early media): answer first.
            self.answer(now, ua, call);
            if let Some(ivr) = self.calls.get_mut(&call).and_then(|c| c.ivr.as_mut()) {
                ivr.call.handle_event(IvrInput::Answered, now, Utc::now());
            }
        }
    }

    /// The `ivr.say` event of a say whose (first) audio has just been synthesised, `wait`
    /// after the interpreter asked for it.
    fn emit_ivr_say(
        &self,
        call_id: &Arc<str>,
        id: u64,
        (voice, text): &crate::tts::Key,
        language: String,
        source: &crate::tts::Source,
        wait: Duration,
    ) {
        self.events.emit(
            Some(call_id),
            EventBody::IvrSay {
                id,
                text: text.clone(),
                language,
                voice: voice.clone(),
                cache: source.as_str(),
                wait_ms: millis(wait),
            },
        );
    }

    fn play_ivr(&mut self, call: CallHandle, id: u64, prompt: Prompt) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(ivr) = c.ivr.as_mut() {
            ivr.playing = Some(id);
        }
        if c.media_started {
            self.media.send(Command::Play(call.0, id, vec![prompt]));
        } else if let Some((_, queued)) = c.pending_play.as_mut().filter(|(p, _)| *p == id) {
            queued.push(prompt); // the next chunk of a say
        } else {
            c.pending_play = Some((id, vec![prompt]));
        }
    }

    /// One chunk of a text synthesised chunk by chunk ([`Tts::render_streamed`]) for the
    /// calls waiting for it: the first starts the say (`ivr.say`, its `wait_ms` the time to
    /// the first audio), the others are queued behind it. The driver's own texts (feature
    /// confirmations, announcements, the callback dialogue) wait for the whole text.
    fn rendered_chunk(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        key: &crate::tts::Key,
        index: usize,
        last: bool,
        result: Result<(Prompt, crate::tts::Source), String>,
    ) {
        let Some(waiters) = self.tts_waiting.get(key).cloned() else {
            return;
        };
        for (call, id, language) in waiters {
            if id == DRIVER_FEATURE || id == DRIVER_ANNOUNCE || callbacks::is_callback_playback(id)
            {
                continue;
            }
            let handle = CallHandle(call);
            let Some(c) = self.calls.get_mut(&handle) else {
                continue;
            };
            let call_id = c.call_id.clone();
            let Some(ivr) = c.ivr.as_mut() else { continue };
            if index == 0 {
                let (Some((_, since)), Ok((prompt, source))) =
                    (ivr.rendering.filter(|(w, _)| *w == id), &result)
                else {
                    continue; // stopped (barge-in) while rendering, or not this say
                };
                ivr.rendering = None;
                ivr.streaming = (!last).then_some(id);
                let wait = now.saturating_duration_since(since);
                self.emit_ivr_say(&call_id, id, key, language, source, wait);
                self.play_ivr(handle, id, prompt.clone());
                continue;
            }
            if ivr.streaming != Some(id) {
                continue; // stopped, or the say started from the whole text
            }
            if last {
                ivr.streaming = None;
            }
            let played_out = ivr.playing != Some(id);
            match &result {
                Ok((prompt, _)) => self.play_ivr(handle, id, prompt.clone()),
                Err(e) => {
                    tracing::error!(call_id = %call_id, error = %e, "speech failed; the rest of the prompt is skipped");
                    if played_out {
                        self.feed(now, ua, handle, IvrInput::PromptFinished(PlaybackId(id)));
                    }
                }
            }
        }
    }

    /// The call is over: tell the interpreter, write the call record.
    fn end_ivr(&mut self, now: Instant, call: CallHandle, c: &Call, mut ivr: IvrCall) {
        let wall = Utc::now();
        ivr.call.handle_event(IvrInput::CallerHungUp, now, wall);
        while let Some(e) = ivr.call.poll_event() {
            self.events.emit(Some(&c.call_id), EventBody::Ivr(e));
        }
        let record = call_record(
            &ivr.profile,
            &c.number,
            CallTimes {
                started_at: c.received_wall,
                answered_at: c.answered_wall,
                ended_at: Some(wall),
            },
            ivr.call.summary(),
        );
        self.recording_calls.insert(call.0, c.call_id.clone());
        self.store.send(StoreRequest::Record {
            key: call.0,
            record: Box::new(record),
        });
    }
}

/// Whether the step the interpreter is in (the last of its path) has an `on_failure`.
fn current_step_has_on_failure(call: &frontdoor_ivr::Call) -> bool {
    use frontdoor_ivr::model::Verb;
    let summary = call.summary();
    let Some(step) = summary.path.last() else {
        return false;
    };
    let plan = call.dialplan();
    plan.flow(&FlowId(summary.flow.clone()))
        .and_then(|f| f.steps.get(&frontdoor_ivr::StepId(step.clone())))
        .is_some_and(|s| match &s.verb {
            Verb::Enqueue(e) => e.on_failure.is_some(),
            Verb::Transfer(t) => t.on_failure.is_some(),
            _ => true,
        })
}

/// `base/rel` when `rel` is a plain relative path (no `..`, not absolute).
fn safe_join(base: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(base.join(p))
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
