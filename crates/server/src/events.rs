//! The event stream: one JSON object per line for every call, media, IVR and ACD event.
//!
//! Emitting is cheap and never blocks: the typed event goes into a bounded queue and a writer
//! thread serialises it. If the writer falls behind, the event is dropped and counted; the
//! count goes onto the stream as an `events.dropped` event as soon as there is room, and the
//! per-process `seq` numbers show the gap. Schema: `docs/events.md`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Version of the event schema; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Capacity of the queue between emitters and the writer.
const QUEUE: usize = 65_536;
/// How often the writer drains the queue.
const WRITER_POLL: Duration = Duration::from_millis(5);

/// What one event says. Serialised with `type` as the tag.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum EventBody {
    /// The server is up.
    #[serde(rename = "server.started")]
    ServerStarted {
        /// SIP listening address (UDP and TCP).
        sip: String,
        /// RTP port range.
        rtp_ports: String,
        /// Version of the engine.
        version: &'static str,
    },
    /// The server is shutting down.
    #[serde(rename = "server.stopping")]
    ServerStopping {
        /// Calls still up.
        active_calls: usize,
    },
    /// The server stopped; final counters.
    #[serde(rename = "server.stopped")]
    ServerStopped {
        /// Calls handled since start.
        calls_total: u64,
        /// Kernel UDP receive-buffer errors since start (all sockets of the host).
        udp_rcvbuf_errors: u64,
    },
    /// Events were lost because the writer fell behind.
    #[serde(rename = "events.dropped")]
    EventsDropped {
        /// Total events dropped since start.
        total: u64,
    },
    /// An INVITE created a new call.
    #[serde(rename = "call.received")]
    CallReceived {
        /// Caller's URI (From).
        from: String,
        /// Called URI (To).
        to: String,
        /// User part of the Request-URI: the dialed number.
        number: String,
        /// Where the INVITE came from.
        source: SocketAddr,
        /// `udp` or `tcp`.
        transport: &'static str,
    },
    /// The call was refused before it was answered.
    #[serde(rename = "call.rejected")]
    CallRejected {
        /// Status sent.
        status: u16,
        /// Why.
        reason: &'static str,
    },
    /// 180 Ringing sent.
    #[serde(rename = "call.ringing")]
    CallRinging {},
    /// 200 OK sent with our SDP.
    #[serde(rename = "call.answered")]
    CallAnswered {
        /// Negotiated codec (`None` for a late offer: it is settled by the ACK).
        codec: Option<&'static str>,
        /// Local RTP port of this leg.
        rtp_port: u16,
        /// Where we send RTP (from the SDP), if known.
        remote_rtp: Option<SocketAddr>,
        /// Milliseconds from INVITE to 200 OK.
        setup_ms: u64,
    },
    /// The caller's ACK arrived: the dialog is confirmed.
    #[serde(rename = "call.confirmed")]
    CallConfirmed {},
    /// A re-INVITE changed the media (hold, resume, new address).
    #[serde(rename = "call.media_changed")]
    CallMediaChanged {
        /// Our direction now (`sendrecv`, `sendonly`, `recvonly`, `inactive`).
        direction: &'static str,
        /// Where we send RTP now.
        remote_rtp: Option<SocketAddr>,
    },
    /// A key press, de-duplicated across sources.
    #[serde(rename = "dtmf")]
    Dtmf {
        /// The key: `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
        /// Where it came from: `rfc4733`, `info` or `inband`.
        source: &'static str,
        /// How long it was held, when known.
        duration_ms: Option<u64>,
    },
    /// A prompt started playing to the caller.
    #[serde(rename = "media.play")]
    MediaPlay {
        /// Prompt names, in order.
        prompts: Vec<String>,
    },
    /// The call's media statistics, at its end.
    #[serde(rename = "media.stats")]
    MediaStats {
        /// RTP packets accepted from the caller.
        packets_in: u64,
        /// Bytes accepted from the caller.
        bytes_in: u64,
        /// RTP packets sent.
        packets_out: u64,
        /// Bytes sent.
        bytes_out: u64,
        /// Packets lost (RFC 3550 expected − received).
        lost: i64,
        /// Interarrival jitter, milliseconds.
        jitter_ms: f64,
        /// Dropped: from a source we do not take media from (no RTP bleed).
        dropped_foreign: u64,
        /// Dropped: malformed (short, wrong version, unknown payload type, ...).
        dropped_malformed: u64,
        /// Of those, with a payload type that was not negotiated.
        dropped_unknown_pt: u64,
        /// Dropped by the jitter buffer as late or duplicate.
        dropped_late: u64,
        /// Comfort-noise packets received.
        comfort_noise: u64,
        /// Frames concealed at playout.
        concealed: u64,
        /// Where the media went at the end.
        remote: SocketAddr,
    },
    /// A dialplan version was loaded at start or by a hot reload.
    #[serde(rename = "dialplan.loaded")]
    DialplanLoaded {
        /// 1 at start, +1 per reload.
        version: u64,
        /// Names of the dialplans.
        dialplans: Vec<String>,
    },
    /// An edit of the dialplans was rejected; the running version stays.
    #[serde(rename = "dialplan.rejected")]
    DialplanRejected {
        /// The diagnostics (`file:line:col: error: ...` with hints).
        diagnostics: Vec<String>,
    },
    /// The IVR speaks a text (the call waited `wait_ms` when it was not rendered yet).
    #[serde(rename = "ivr.say")]
    IvrSay {
        /// Playback id (per call).
        id: u64,
        /// The text, variables substituted.
        text: String,
        /// Dialplan language.
        language: String,
        /// espeak-ng voice.
        voice: String,
        /// `memory`, `disk` or `rendered`.
        cache: &'static str,
        /// Milliseconds the call waited for the speech.
        wait_ms: u64,
    },
    /// The caller spoke during a prompt of a speech step: the media worker stopped it.
    #[serde(rename = "speech.barge_in")]
    SpeechBargeIn {},
    /// The endpointer ended an utterance; it went to the recogniser pool (or, `refused`, it
    /// did not: `queue_full`, `no_recognizer`, and the turn got "no match" at once).
    #[serde(rename = "speech.ended")]
    SpeechEnded {
        /// The listening step.
        step: String,
        /// Speech length (onset to the last speech frame), ms.
        speech_ms: u64,
        /// Speculative recognitions started at pauses of this utterance (all but the last
        /// were given up when the caller went on).
        speculations: u32,
        /// Why it was not recognised.
        #[serde(skip_serializing_if = "Option::is_none")]
        refused: Option<&'static str>,
    },
    /// A recognition of a speech turn came back.
    #[serde(rename = "speech.recognized")]
    SpeechRecognized {
        /// What was heard, spoken digit strings redacted.
        transcript: String,
        /// The best hypothesis (`null`: nothing matched).
        meaning: Option<frontdoor_ivr::SpeechMeaning>,
        /// Its score 0..=1.
        confidence: f64,
        /// End of speech (the endpointer's decision on the media worker) → this result on the
        /// SIP task, ms: the routing latency.
        end_to_result_ms: u64,
        /// Time the utterance waited for a recogniser, ms.
        queue_ms: u64,
        /// Time recognising, ms.
        decode_ms: u64,
        /// Audio recognised, ms.
        audio_ms: u32,
        /// Recognised at a pause before the end of speech (`[speech] speculate_ms`); the
        /// caller said nothing more, so that result stands for the utterance.
        speculative: bool,
        /// The turn was over (a key, a hang-up): the result was dropped.
        stale: bool,
        /// The recogniser failed (the turn got "no match").
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The IVR plays a prompt file.
    #[serde(rename = "ivr.play")]
    IvrPlay {
        /// Playback id (per call).
        id: u64,
        /// File, relative to the prompts directory.
        file: String,
    },
    /// An `enqueue` step asked for an agent (no ACD yet: always `failed`).
    #[serde(rename = "ivr.enqueue")]
    IvrEnqueue {
        /// Queue.
        queue: String,
        /// Priority class.
        priority: u8,
        /// `failed`.
        result: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A caller joined an ACD queue (`enqueue`).
    #[serde(rename = "acd.enqueued")]
    AcdEnqueued {
        /// Queue name.
        queue: String,
        /// ACD entry id.
        entry: u64,
        /// Priority class.
        class: u8,
        /// Skills required (name → minimum level), from the `enqueue` step.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        skills: Vec<(String, u8)>,
    },
    /// Where a waiting caller stands (announced to the caller).
    #[serde(rename = "acd.position")]
    AcdPosition {
        /// ACD entry id.
        entry: u64,
        /// 1 = next.
        position: usize,
        /// Estimated wait, seconds (absent when nobody who could serve it is staffed).
        estimated_wait_s: Option<u64>,
    },
    /// The caller left the queue before an agent answered (hung up or waited too long).
    #[serde(rename = "acd.abandoned")]
    AcdAbandoned {
        /// ACD entry id.
        entry: u64,
        /// `hung_up`, `timeout` or `engine` (the engine could not ring the agent).
        reason: &'static str,
        /// Time in the queue.
        waited_ms: u64,
    },
    /// The ACD offered the caller to an agent: the agent's phone is rung.
    #[serde(rename = "acd.offered")]
    AcdOffered {
        /// ACD entry id.
        entry: u64,
        /// Agent id.
        agent: String,
        /// The (first) contact rung (absent when the agent has no registered phone).
        contact: Option<String>,
        /// Call-ID of the (first) agent leg.
        leg_call_id: Option<String>,
        /// Every contact rung in parallel (the agent's registered phones).
        contacts: Vec<String>,
        /// Call-IDs of the agent legs, in the order of `contacts` (failed dials left out).
        leg_call_ids: Vec<String>,
        /// What the agent's desktop shows.
        screen_pop: Box<crate::screenpop::ScreenPop>,
    },
    /// The agent answered: caller and agent are being bridged.
    #[serde(rename = "acd.answered")]
    AcdAnswered {
        /// ACD entry id.
        entry: u64,
        /// Agent id.
        agent: String,
        /// Call-ID of the agent leg.
        leg_call_id: String,
    },
    /// The offer failed (busy, declined, no answer, not registered); the caller keeps its place.
    #[serde(rename = "acd.refused")]
    AcdRefused {
        /// ACD entry id.
        entry: u64,
        /// Agent id.
        agent: String,
        /// `rejected`, `no_answer`, `not_registered`, `failed`.
        reason: &'static str,
        /// The agent phone's final status, if any.
        status: Option<u16>,
    },
    /// The ACD withdrew an offer (ring timeout, caller hung up, agent left): the agent leg is
    /// cancelled.
    #[serde(rename = "acd.offer_cancelled")]
    AcdOfferCancelled {
        /// ACD entry id.
        entry: u64,
        /// Agent id.
        agent: String,
        /// `timeout`, `abandoned`, `agent_left`.
        reason: &'static str,
    },
    /// A screen pop reached the webhook (2xx).
    #[serde(rename = "screenpop.delivered")]
    ScreenPopDelivered {
        /// Attempts used.
        attempts: u32,
        /// The receiver's status.
        status: u16,
    },
    /// A screen pop could not be delivered (after its retries) or was dropped.
    #[serde(rename = "screenpop.failed")]
    ScreenPopFailed {
        /// Attempts used.
        attempts: u32,
        /// Why.
        error: String,
    },
    /// An agent's ACD state changed.
    #[serde(rename = "agent.state")]
    AgentState {
        /// Agent id.
        agent: String,
        /// `logged_out`, `available`, `offered`, `on_call`, `wrap_up`, `paused`.
        state: &'static str,
        /// The state with its details (entry, wrap-up code, pause reason).
        detail: serde_json::Value,
    },
    /// A `transfer` step asked for a B leg (no bridging yet: always `failed`).
    #[serde(rename = "ivr.transfer")]
    IvrTransfer {
        /// Target URI.
        to: String,
        /// `connected` (bridged) or `failed`.
        result: &'static str,
        /// `bridged`, or why it failed (`rejected`, `no_answer`, `timeout`, `invalid_target`, ...).
        reason: &'static str,
    },
    /// A voicemail recording was written.
    #[serde(rename = "ivr.recording_saved")]
    IvrRecordingSaved {
        /// Path relative to the recordings directory.
        path: String,
        /// Length in milliseconds.
        duration_ms: u64,
        /// File size.
        bytes: u64,
        /// Error, when the file could not be written.
        error: Option<String>,
    },
    /// A stereo call recording started (`[recording]`).
    #[serde(rename = "recording.started")]
    RecordingStarted {
        /// The WAV file (a taken name gets `-1`, `-2`, ...: `recording.stopped` has the final one).
        path: String,
        /// DTMF is masked out of the audio.
        mask_dtmf: bool,
        /// The recording stops after this long.
        max_duration_s: u64,
    },
    /// A stereo call recording ended; its file is complete.
    #[serde(rename = "recording.stopped")]
    RecordingStopped {
        /// The WAV file.
        path: String,
        /// `call_ended`, `stopped`, `max_duration`, `restarted` or `shutdown`.
        reason: &'static str,
        /// Length of the audio in the file.
        duration_ms: u64,
        /// File size.
        bytes: u64,
        /// Key presses masked out of the audio.
        masked_digits: u32,
        /// Audio replaced by silence.
        masked_ms: u64,
        /// Caller packets too late to place (silence instead).
        late_packets: u64,
        /// Error, when the file could not be (completely) written.
        error: Option<String>,
    },
    /// The caller recognition of a call (before its flow starts).
    #[serde(rename = "store.caller")]
    StoreCaller {
        /// E.164 number, or null (anonymous/invalid).
        number: Option<String>,
        /// A customer of the store.
        known: bool,
        /// Earlier call records from this number.
        previous_calls: u64,
        /// Milliseconds the lookup took (the call rang meanwhile).
        lookup_ms: u64,
    },
    /// The call record was written.
    #[serde(rename = "store.call_recorded")]
    StoreCallRecorded {
        /// The outcome stored.
        outcome: String,
        /// Error, when the write failed.
        error: Option<String>,
    },
    /// The call ended.
    #[serde(rename = "call.ended")]
    CallEnded {
        /// Why (`remote_bye`, `local_bye`, `cancelled`, `ack_timeout`, `rejected`, ...).
        cause: &'static str,
        /// SIP status involved, when there is one.
        status: Option<u16>,
        /// Milliseconds from INVITE to the end.
        duration_ms: u64,
        /// Milliseconds from answer to the end (0 when never answered).
        talk_ms: u64,
    },
    /// An agent's phone registered or refreshed its registration (authenticated REGISTER).
    #[serde(rename = "agent.registered")]
    AgentRegistered {
        /// Agent id from the configuration.
        agent: String,
        /// SIP user name.
        username: String,
        /// The contact URI bound.
        contact: String,
        /// Seconds granted.
        expires: u32,
        /// Where the REGISTER came from.
        source: SocketAddr,
        /// Whether this refreshed an existing binding.
        refresh: bool,
        /// Contacts the agent has now.
        contacts: usize,
        /// Digest algorithm the phone authenticated with (`SHA-256`, `MD5`, ...).
        auth: &'static str,
    },
    /// An agent's phone removed its registration (expires 0 or `*`).
    #[serde(rename = "agent.unregistered")]
    AgentUnregistered {
        /// Agent id.
        agent: String,
        /// SIP user name.
        username: String,
        /// The contact URI removed.
        contact: String,
        /// Contacts the agent has now.
        contacts: usize,
    },
    /// A registration was not refreshed in time.
    #[serde(rename = "agent.expired")]
    AgentExpired {
        /// Agent id.
        agent: String,
        /// SIP user name.
        username: String,
        /// The contact URI removed.
        contact: String,
        /// Contacts the agent has now.
        contacts: usize,
    },
    /// A REGISTER was refused (not the 401 challenge: 403 bad credentials, 400, 423, ...).
    #[serde(rename = "agent.register_failed")]
    AgentRegisterFailed {
        /// User part of the To URI (the registration claimed), possibly unknown.
        user: String,
        /// Status sent.
        status: u16,
        /// Where it came from.
        source: SocketAddr,
    },
    /// A feature code dialed from an agent's phone (on the call's Call-ID): `challenged`
    /// (407 sent), `forbidden` (bad credentials, 403), `malformed` (400), `ok` (state changed;
    /// spoken confirmation, then BYE) or `refused` (the desk refused the change, 403).
    #[serde(rename = "agent.feature")]
    AgentFeature {
        /// Agent id (empty while not authenticated).
        agent: String,
        /// The number dialed.
        code: String,
        /// `login`, `logout`, `pause`, `ready`.
        op: &'static str,
        /// Outcome.
        result: &'static str,
        /// The agent's state afterwards, when changed.
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<String>,
        /// Why it was refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The engine placed an outgoing call leg (its UAC side). On the new leg's Call-ID.
    #[serde(rename = "leg.created")]
    LegCreated {
        /// Request-URI.
        to: String,
        /// Where the INVITE went.
        destination: SocketAddr,
        /// Our RTP port for the leg.
        rtp_port: u16,
        /// The call this leg will be bridged to (its Call-ID), if any.
        peer_call_id: Option<String>,
    },
    /// A provisional response on an outgoing leg (`180`, `183`).
    #[serde(rename = "leg.progress")]
    LegProgress {
        /// Status code.
        status: u16,
    },
    /// The outgoing leg was answered (2xx, ACK sent).
    #[serde(rename = "leg.answered")]
    LegAnswered {
        /// Negotiated codec.
        codec: Option<&'static str>,
        /// Negotiated packetisation time.
        ptime_ms: Option<u32>,
        /// Where we send its RTP.
        remote_rtp: Option<SocketAddr>,
        /// Milliseconds from INVITE to 2xx.
        setup_ms: u64,
    },
    /// Two legs are bridged: RTP relayed both ways. On each leg's Call-ID.
    #[serde(rename = "bridge.bridged")]
    BridgeBridged {
        /// The other leg.
        peer_call_id: String,
        /// This leg's codec and ptime (`PCMU/20`).
        media: String,
        /// The other leg's codec and ptime.
        peer_media: String,
        /// Whether audio is transcoded or re-framed (codec or ptime differ).
        transcoding: bool,
    },
    /// A bridge ended; what was relayed. On the Call-ID of the leg that ended it (or was
    /// unbridged).
    #[serde(rename = "bridge.unbridged")]
    BridgeUnbridged {
        /// The other leg.
        peer_call_id: Option<String>,
        /// Audio packets received on this leg and relayed.
        audio_in: u64,
        /// Audio packets sent on the other leg for them.
        audio_out: u64,
        /// Of those, transcoded or re-framed.
        transcoded: u64,
        /// RFC 4733 packets relayed to the other leg.
        events: u64,
        /// Audio packets received on the other leg and relayed to this one.
        peer_audio_in: u64,
        /// Audio packets sent on this leg for them.
        peer_audio_out: u64,
        /// RFC 4733 packets relayed from the other leg.
        peer_events: u64,
    },
    /// Bridging failed before the legs were connected (the outgoing leg was rejected, timed
    /// out or could not be placed). On the caller's Call-ID.
    #[serde(rename = "bridge.failed")]
    BridgeFailed {
        /// Target URI.
        to: String,
        /// Status the outgoing leg got (or `null`).
        leg_status: Option<u16>,
        /// What the caller got (`null` when the caller's leg was already answered).
        status: Option<u16>,
        /// Why (`rejected`, `no_answer`, `timeout`, `invalid_target`, `no_rtp_port`, ...).
        reason: String,
    },
    /// One leg put the bridge on hold or resumed; the other leg was re-INVITEd.
    #[serde(rename = "bridge.hold")]
    BridgeHold {
        /// The other leg (re-INVITEd).
        peer_call_id: Option<String>,
        /// The direction this leg offered (`sendonly`/`inactive` = hold, `sendrecv` = resume).
        direction: &'static str,
        /// Whether the re-INVITE to the other leg could be sent.
        propagated: bool,
    },
    /// An event of the IVR interpreter (`ivr.started`, `ivr.recognition`, `ivr.step`,
    /// `ivr.route`, `ivr.gather`, `ivr.recorded`, `ivr.ended`), as `frontdoor-ivr` serialises it.
    #[serde(untagged)]
    Ivr(frontdoor_ivr::IvrEvent),
    /// `callback.requested`, `callback.queued`, `callback.attempt`, `callback.outcome`
    /// (docs/callbacks.md).
    #[serde(untagged)]
    Callback(crate::calls::callbacks::CallbackEvent),
}

/// One event as queued: the body plus the envelope fields taken at emission.
#[derive(Debug)]
struct Queued {
    seq: u64,
    ts: SystemTime,
    call_id: Option<Arc<str>>,
    body: EventBody,
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u32,
    ts: String,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    call_id: Option<&'a str>,
    #[serde(flatten)]
    body: &'a EventBody,
}

#[derive(Debug)]
struct Shared {
    seq: AtomicU64,
    dropped: AtomicU64,
}

/// Where events go. Cheap to clone; emitting never blocks.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Option<SyncSender<Queued>>,
    shared: Arc<Shared>,
}

/// Where the stream is written.
#[derive(Debug, Clone)]
pub enum EventTarget {
    /// Standard output (`--events -`).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
    /// Nowhere (only the live feed of [`EventSink::open_with_feed`], e.g. the agent API's
    /// WebSocket).
    Discard,
}

/// Live copies of the stream: every line (without its newline) as written.
pub type EventFeed = tokio::sync::broadcast::Sender<Arc<str>>;

/// The writer thread; join it after the last sink is dropped to flush everything.
#[derive(Debug)]
pub struct EventWriter {
    handle: Option<JoinHandle<()>>,
}

impl EventWriter {
    /// Waits until every queued event is written.
    pub fn finish(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl EventSink {
    /// A sink that discards everything (no `--events`).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            shared: Arc::new(Shared {
                seq: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Opens `target` and starts the writer thread.
    pub fn open(target: EventTarget) -> std::io::Result<(Self, EventWriter)> {
        Self::open_with_feed(target, None)
    }

    /// Opens `target` and starts the writer thread, which also publishes every line on
    /// `feed` (when anybody listens; slow listeners lag, the writer never waits).
    pub fn open_with_feed(
        target: EventTarget,
        feed: Option<EventFeed>,
    ) -> std::io::Result<(Self, EventWriter)> {
        let out: Box<dyn Write + Send> = match &target {
            EventTarget::Discard => Box::new(std::io::sink()),
            EventTarget::Stdout => Box::new(std::io::stdout()),
            EventTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let shared = Arc::new(Shared {
            seq: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let writer_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || write_loop(rx, out, &writer_shared, feed))?;
        Ok((
            Self {
                tx: Some(tx),
                shared,
            },
            EventWriter {
                handle: Some(handle),
            },
        ))
    }

    /// Whether events are written anywhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an event about a call (or about the server when `call_id` is `None`).
    pub fn emit(&self, call_id: Option<&Arc<str>>, body: EventBody) {
        let Some(tx) = &self.tx else { return };
        let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let ev = Queued {
            seq,
            ts: SystemTime::now(),
            call_id: call_id.cloned(),
            body,
        };
        match tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

fn write_loop(
    rx: Receiver<Queued>,
    out: Box<dyn Write + Send>,
    shared: &Shared,
    feed: Option<EventFeed>,
) {
    let out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut out = Tee { out, feed };
    let mut reported_drops = 0u64;
    let mut line = Vec::with_capacity(512);
    // The writer never blocks in `recv`: it wakes every few milliseconds and drains what is
    // queued. A blocked receiver would make every `emit` on the hot path a futex wake-up and
    // a context switch (measured: a quarter of the engine's CPU under SIPp load).
    loop {
        let mut disconnected = false;
        loop {
            match rx.try_recv() {
                Ok(ev) => write_event(&mut out, &mut line, &ev),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if disconnected {
            break;
        }
        report_drops(&mut out, &mut line, shared, &mut reported_drops);
        let _ = out.flush();
        std::thread::sleep(WRITER_POLL);
    }
    report_drops(&mut out, &mut line, shared, &mut reported_drops);
    let _ = out.flush();
}

/// The file (or sink) plus the live feed: each complete line written is also published.
struct Tee<W: Write> {
    out: W,
    feed: Option<EventFeed>,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(feed) = &self.feed
            && feed.receiver_count() > 0
            && let Ok(text) = std::str::from_utf8(buf.strip_suffix(b"\n").unwrap_or(buf))
        {
            // No receivers is not an error: nobody is watching.
            let _ = feed.send(Arc::from(text));
        }
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes an `events.dropped` event when more events were lost since the last report.
fn report_drops(out: &mut impl Write, line: &mut Vec<u8>, shared: &Shared, reported: &mut u64) {
    let dropped = shared.dropped.load(Ordering::Relaxed);
    if dropped <= *reported {
        return;
    }
    *reported = dropped;
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let ev = Queued {
        seq,
        ts: SystemTime::now(),
        call_id: None,
        body: EventBody::EventsDropped { total: dropped },
    };
    write_event(out, line, &ev);
}

fn write_event(out: &mut impl Write, line: &mut Vec<u8>, ev: &Queued) {
    line.clear();
    let ts = chrono::DateTime::<chrono::Utc>::from(ev.ts)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let env = Envelope {
        v: SCHEMA_VERSION,
        ts,
        seq: ev.seq,
        call_id: ev.call_id.as_deref(),
        body: &ev.body,
    };
    if serde_json::to_writer(&mut *line, &env).is_ok() {
        line.push(b'\n');
        if let Err(e) = out.write_all(line) {
            tracing::warn!(error = %e, "event stream write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_live_feed_gets_every_line_without_a_file() {
        let (feed, mut rx) = tokio::sync::broadcast::channel(16);
        let (sink, writer) = EventSink::open_with_feed(EventTarget::Discard, Some(feed)).unwrap();
        assert!(sink.enabled());
        sink.emit(None, EventBody::EventsDropped { total: 7 });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let line = loop {
            match rx.try_recv() {
                Ok(l) => break l,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("no line on the feed: {e:?}"),
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "events.dropped");
        assert_eq!(v["total"], 7);
        assert!(!line.ends_with('\n'));
        drop(sink);
        writer.finish();
    }

    #[test]
    fn events_are_json_lines_with_envelope() {
        let dir = std::env::temp_dir().join(format!("fd-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("e.jsonl");
        let _ = std::fs::remove_file(&path);
        let (sink, writer) = EventSink::open(EventTarget::File(path.clone())).unwrap();
        let cid: Arc<str> = Arc::from("abc@host");
        sink.emit(Some(&cid), EventBody::CallRinging {});
        sink.emit(
            Some(&cid),
            EventBody::CallEnded {
                cause: "remote_bye",
                status: None,
                duration_ms: 5,
                talk_ms: 3,
            },
        );
        drop(sink);
        writer.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["v"], 1);
        assert_eq!(lines[0]["seq"], 0);
        assert_eq!(lines[1]["seq"], 1);
        assert_eq!(lines[0]["type"], "call.ringing");
        assert_eq!(lines[1]["type"], "call.ended");
        assert_eq!(lines[1]["call_id"], "abc@host");
        assert_eq!(lines[1]["cause"], "remote_bye");
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn ivr_events_keep_their_own_type() {
        let dir = std::env::temp_dir().join(format!("fd-events-ivr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("e.jsonl");
        let _ = std::fs::remove_file(&path);
        let (sink, writer) = EventSink::open(EventTarget::File(path.clone())).unwrap();
        let cid: Arc<str> = Arc::from("c@h");
        sink.emit(
            Some(&cid),
            EventBody::Ivr(frontdoor_ivr::IvrEvent::Step {
                step: "menu".to_owned(),
                verb: "menu",
            }),
        );
        sink.emit(
            Some(&cid),
            EventBody::Ivr(frontdoor_ivr::IvrEvent::Ended {
                outcome: frontdoor_ivr::Outcome::Abandoned {
                    step: "menu".to_owned(),
                },
            }),
        );
        drop(sink);
        writer.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["type"], "ivr.step", "{text}");
        assert_eq!(lines[0]["step"], "menu");
        assert_eq!(lines[0]["call_id"], "c@h");
        assert_eq!(lines[1]["type"], "ivr.ended");
        assert_eq!(lines[1]["outcome"], "abandoned");
        assert_eq!(lines[1]["step"], "menu");
    }

    #[test]
    fn a_full_queue_counts_drops_and_reports_them() {
        // A sink whose writer never runs: fill the queue, the rest is counted.
        let (tx, rx) = sync_channel(2);
        let shared = Arc::new(Shared {
            seq: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let sink = EventSink {
            tx: Some(tx),
            shared: shared.clone(),
        };
        for _ in 0..5 {
            sink.emit(None, EventBody::CallRinging {});
        }
        assert_eq!(sink.dropped(), 3);
        drop(sink);
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        write_loop(rx, Box::new(SharedBuf(buf.clone())), &shared, None);
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[2]["type"], "events.dropped");
        assert_eq!(lines[2]["total"], 3);
    }

    /// A writer into shared memory, to read what the writer thread wrote.
    struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
