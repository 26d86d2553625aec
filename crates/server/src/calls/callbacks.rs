//! Callbacks that keep their place (docs/callbacks.md).
//!
//! A queued caller presses `[callbacks] key` during hold, confirms the number (the one it
//! called from, or one it keys in), the request is written to the store (the store thread:
//! `frontdoor_store::callbacks`) and only then is the ACD entry turned into a callback in place
//! (`Event::ConvertToCallback`: same enqueue time and class); the caller hears the expected
//! callback time and the engine hangs up.
//!
//! When the ACD offers the callback entry to an agent, the attempt is claimed in the store
//! (`begin_attempt`: a refused claim is never dialed), the agent's phone is rung, the agent
//! hears a whisper ("Callback for NAME, VIP, about REASON"), then the customer is dialed
//! through the `[outbound]` trunk (digest credentials answer the carrier's 401/407) and the
//! two legs are bridged. With `customer_first` for the queue the customer is dialed first and
//! the agent once the customer answers. No answer, busy, failure → `CallbackFailed` (the entry
//! goes back to its place), the attempt's outcome in the store, and the entry waits
//! `retry_delay_s` out of the ACD before it rejoins at its original time; after the ACD's
//! `callback_max_attempts` it is given up. Every step is an event (`callback.*`).
//!
//! At start-up the driver recovers interrupted attempts and hands the pending callbacks to
//! [`CallApp::restore_callbacks`], which re-enqueues them at their original enqueue times.

use std::collections::BinaryHeap;

use chrono::{DateTime, Utc};
use frontdoor_acd::{Enqueue, QueueId, Time};
use frontdoor_sip::auth::ClientCredentials;
use frontdoor_store::callbacks::{
    Attempt, AttemptOutcome, Callback, CallbackError, CallbackId, CallbackRequest, CallbackState,
};
use frontdoor_store::{E164, Region, SqliteStore};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::*;

/// Playback id of the request dialogue's prompts (their end is not awaited).
pub(super) const CB_PROMPT: u64 = u64::MAX - 3;
const _: () = assert!(CB_PROMPT != super::DRIVER_FEATURE && CB_HOLD != super::DRIVER_FEATURE);
/// Playback id of the last prompt to a caller who asked: the engine hangs up after it.
pub(super) const CB_BYE: u64 = u64::MAX - 4;
/// Playback id of the whisper to the agent: the customer is dialed after it.
pub(super) const CB_WHISPER: u64 = u64::MAX - 5;
/// Playback id of "please hold" to a customer dialed first.
pub(super) const CB_HOLD: u64 = u64::MAX - 6;

/// The fixed texts, rendered once at start (so they play without waiting for speech).
const HOLD_TEXT: &str =
    "Hello, this is your requested callback. Please hold while we connect you to an agent.";
const KEYING_TEXT: &str = "Please key in the number to call you back on, then press hash.";

/// Entry ids of callbacks restored at start-up (apart from call handles).
const RESTORED_BASE: u64 = 1 << 48;

/// Whether a playback id is one of this module's.
pub(super) fn is_callback_playback(id: u64) -> bool {
    matches!(id, CB_PROMPT | CB_BYE | CB_WHISPER | CB_HOLD)
}

/// `[callbacks]`: queued callers may ask to be called back, keeping their place.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbacksSection {
    /// Queues (dialplan names) whose waiting callers may ask; empty: none.
    pub queues: Vec<String>,
    /// The key that asks during hold.
    pub key: String,
    /// Wait after a failed attempt before the entry rejoins its place, seconds.
    pub retry_delay_s: u64,
    /// Ring time of the customer's leg, seconds.
    pub ring_timeout_s: u64,
    /// Queues whose callbacks dial the customer first (then the agent); others: agent first.
    pub customer_first: Vec<String>,
}

impl Default for CallbacksSection {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            key: "1".to_owned(),
            retry_delay_s: 60,
            ring_timeout_s: 30,
            customer_first: Vec::new(),
        }
    }
}

/// `[outbound]`: the carrier trunk customers are called back through.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSection {
    /// `sip:HOST:PORT` (IP literal) of the carrier; the callback number becomes the user part.
    pub uri: Option<String>,
    /// Digest user name for the carrier's 401/407.
    pub username: String,
    /// Digest password.
    pub password: String,
    /// Caller ID: the From user part (e.g. `+15550100`).
    pub caller_id: String,
    /// From display name.
    pub display_name: String,
}

impl std::fmt::Debug for OutboundSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundSection")
            .field("uri", &self.uri)
            .field("username", &self.username)
            .field("caller_id", &self.caller_id)
            .finish_non_exhaustive()
    }
}

impl OutboundSection {
    /// The Request-URI for `number`: `sip:NUMBER@HOST:PORT`.
    pub fn target(&self, number: &str) -> Option<String> {
        let uri = self.uri.as_deref()?.trim();
        let rest = uri.strip_prefix("sip:")?;
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if host.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '+') {
            return None;
        }
        Some(format!("sip:{number}@{host}"))
    }
}

/// Checks `[callbacks]` and `[outbound]` (called by the config loader).
pub fn check_config(config: &crate::config::Config) -> Result<(), String> {
    let cb = &config.callbacks;
    let mut key = cb.key.chars();
    if !matches!(
        (key.next(), key.next()),
        (Some('0'..='9' | '*' | '#'), None)
    ) {
        return Err(format!(
            "[callbacks] key must be one key (0-9, * or #), not {:?}",
            cb.key
        ));
    }
    let queues: Vec<&str> = config
        .acd
        .as_ref()
        .map(|a| a.queues.iter().map(|q| q.name.as_str()).collect())
        .unwrap_or_default();
    for q in cb.queues.iter().chain(&cb.customer_first) {
        if !queues.contains(&q.as_str()) {
            return Err(format!(
                "[callbacks] names queue {q:?}, which is not an [[acd.queues]] name"
            ));
        }
    }
    let out = &config.outbound;
    if let Some(uri) = &out.uri {
        if out.target("+1").is_none()
            || frontdoor_sip::message::uri_socket_addr(&format!(
                "sip:x@{}",
                uri.trim()
                    .trim_start_matches("sip:")
                    .rsplit('@')
                    .next()
                    .unwrap_or("")
            ))
            .is_none()
        {
            return Err(format!(
                "[outbound] uri {uri:?} must be sip:HOST:PORT with an IP-literal host"
            ));
        }
    } else if !cb.queues.is_empty() {
        return Err("[callbacks] queues need an [outbound] uri to call customers back".into());
    }
    if !out
        .caller_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '+')
    {
        return Err(format!(
            "[outbound] caller_id {:?} must be digits (and +) or letters",
            out.caller_id
        ));
    }
    Ok(())
}

/// Work for the store thread.
#[derive(Debug)]
pub enum StoreOp {
    /// Persist a request (before the caller is told).
    Request {
        /// The caller's call.
        key: u64,
        /// What it asked.
        req: Box<CallbackRequest>,
    },
    /// Claim an attempt.
    Begin {
        /// The ACD entry.
        entry: u64,
        /// The callback.
        id: CallbackId,
        /// The agent offered.
        agent: String,
        /// Which claim (a late answer to an earlier offer is told apart).
        claim: u64,
    },
    /// Record how the running attempt ended.
    Finish {
        /// The callback.
        id: CallbackId,
        /// How.
        outcome: AttemptOutcome,
    },
    /// Cancel a waiting callback that the caller did not get to hear about.
    Withdraw {
        /// The callback.
        id: CallbackId,
    },
    /// API: list.
    List(oneshot::Sender<Result<Vec<Callback>, String>>),
    /// API: one, with its attempts.
    Get {
        /// The callback.
        id: CallbackId,
        /// The answer.
        reply: oneshot::Sender<Result<Option<CallbackDetail>, String>>,
    },
    /// API: cancel.
    Cancel {
        /// The callback.
        id: CallbackId,
        /// The answer (sent by the SIP task after the ACD).
        reply: oneshot::Sender<Result<Callback, ApiError>>,
    },
    /// API: reschedule.
    Reschedule {
        /// The callback.
        id: CallbackId,
        /// Not before.
        not_before: Option<DateTime<Utc>>,
        /// The answer (sent by the SIP task after the ACD).
        reply: oneshot::Sender<Result<Callback, ApiError>>,
    },
}

/// What the store thread reports back.
#[derive(Debug)]
pub enum StoreDone {
    /// A request was persisted (or not).
    Requested {
        /// The caller's call.
        key: u64,
        /// Its id.
        result: Result<CallbackId, String>,
    },
    /// An attempt was claimed (or refused).
    Begun {
        /// The entry.
        entry: u64,
        /// The callback.
        id: CallbackId,
        /// The claim answered.
        claim: u64,
        /// The attempt number, or why not.
        result: Result<u32, String>,
        /// The state when refused.
        refused_state: Option<CallbackState>,
    },
    /// Cancelled or rescheduled through the API: the ACD follows.
    Changed {
        /// The callback after the change, or why not.
        result: Result<Callback, ApiError>,
        /// Cancelled (else rescheduled).
        cancelled: bool,
        /// The answer.
        reply: oneshot::Sender<Result<Callback, ApiError>>,
    },
}

/// One callback with its attempts (the API's `GET /api/v1/callbacks/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct CallbackDetail {
    /// The callback.
    #[serde(flatten)]
    pub callback: Callback,
    /// Its attempts, in order.
    pub attempt_log: Vec<Attempt>,
}

/// Why an API request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No such callback.
    #[error("no callback {0}")]
    Unknown(i64),
    /// Not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

/// An API request (through the desk channel to the SIP task).
#[derive(Debug)]
pub enum ApiRequest {
    /// Pending callbacks in line order.
    List(oneshot::Sender<Result<Vec<Callback>, String>>),
    /// One callback and its attempts.
    Get {
        /// Id.
        id: i64,
        /// Answer.
        reply: oneshot::Sender<Result<Option<CallbackDetail>, String>>,
    },
    /// Cancel a waiting callback (it leaves the queue).
    Cancel {
        /// Id.
        id: i64,
        /// Answer.
        reply: oneshot::Sender<Result<Callback, ApiError>>,
    },
    /// Not to be dialed before `not_before` (its place is kept).
    Reschedule {
        /// Id.
        id: i64,
        /// Earliest dial time (`None`: now).
        not_before: Option<DateTime<Utc>>,
        /// Answer.
        reply: oneshot::Sender<Result<Callback, ApiError>>,
    },
}

fn api_error(e: CallbackError) -> ApiError {
    match e {
        CallbackError::Unknown(id) => ApiError::Unknown(id),
        e @ CallbackError::WrongState { .. } => ApiError::Conflict(e.to_string()),
        CallbackError::Store(e) => ApiError::Store(e.to_string()),
    }
}

/// Runs one operation on the store thread.
pub fn run_op(store: &SqliteStore, op: StoreOp) -> Option<StoreDone> {
    let now = Utc::now();
    match op {
        StoreOp::Request { key, req } => Some(StoreDone::Requested {
            key,
            result: store.request_callback(&req, now).map_err(|e| e.to_string()),
        }),
        StoreOp::Begin {
            entry,
            id,
            agent,
            claim,
        } => {
            let (result, refused_state) = match store.begin_attempt(id, Some(&agent), now) {
                Ok(n) => (Ok(n), None),
                Err(e) => {
                    let state = match &e {
                        CallbackError::WrongState { state, .. } => Some(*state),
                        _ => None,
                    };
                    (Err(e.to_string()), state)
                }
            };
            Some(StoreDone::Begun {
                entry,
                id,
                claim,
                result,
                refused_state,
            })
        }
        StoreOp::Finish { id, outcome } => {
            if let Err(e) = store.finish_attempt(id, &outcome, now) {
                tracing::error!(callback = id.0, error = %e, "cannot record the callback attempt");
            }
            None
        }
        StoreOp::Withdraw { id } => {
            if let Err(e) = store.cancel_callback(id) {
                tracing::warn!(callback = id.0, error = %e, "cannot withdraw the callback");
            }
            None
        }
        StoreOp::List(reply) => {
            let _ = reply.send(store.pending_callbacks().map_err(|e| e.to_string()));
            None
        }
        StoreOp::Get { id, reply } => {
            let got = store.callback(id).and_then(|c| {
                c.map(|callback| {
                    store
                        .callback_attempts(id)
                        .map(|attempt_log| CallbackDetail {
                            callback,
                            attempt_log,
                        })
                })
                .transpose()
            });
            let _ = reply.send(got.map_err(|e| e.to_string()));
            None
        }
        StoreOp::Cancel { id, reply } => {
            let result = store
                .cancel_callback(id)
                .map_err(api_error)
                .and_then(|()| fetch(store, id));
            Some(StoreDone::Changed {
                result,
                cancelled: true,
                reply,
            })
        }
        StoreOp::Reschedule {
            id,
            not_before,
            reply,
        } => {
            let result = store
                .reschedule_callback(id, not_before)
                .map_err(api_error)
                .and_then(|()| fetch(store, id));
            Some(StoreDone::Changed {
                result,
                cancelled: false,
                reply,
            })
        }
    }
}

fn fetch(store: &SqliteStore, id: CallbackId) -> Result<Callback, ApiError> {
    store
        .callback(id)
        .map_err(|e| ApiError::Store(e.to_string()))?
        .ok_or(ApiError::Unknown(id.0))
}

/// What the driver reads from the store at start-up: pending callbacks in line order, each
/// with its failed customer attempts (they count towards `callback_max_attempts`).
pub fn load_pending(store: &SqliteStore) -> Result<Vec<(Callback, u32)>, String> {
    let recovered = store
        .recover_callbacks(Utc::now())
        .map_err(|e| e.to_string())?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "callback attempts interrupted by the last stop: back in line"
        );
    }
    let pending = store.pending_callbacks().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(pending.len());
    for cb in pending {
        let failures = store
            .callback_attempts(cb.id)
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|a| a.outcome.as_deref() == Some("failed") && customer_failure(a))
            .count();
        out.push((cb, u32::try_from(failures).unwrap_or(u32::MAX)));
    }
    Ok(out)
}

/// A failure of the customer's leg (not of the agent's).
fn customer_failure(a: &Attempt) -> bool {
    !a.detail.as_deref().unwrap_or("").starts_with("agent_")
        && a.detail.as_deref() != Some("offer_cancelled")
}

/// The events of callbacks.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum CallbackEvent {
    /// The request dialogue started with a waiting caller.
    #[serde(rename = "callback.asked")]
    Asked {
        /// ACD entry.
        entry: u64,
        /// `key` (the caller pressed the callback key) or `overflow` (the queue's overflow
        /// rule `offer_callback`).
        trigger: &'static str,
        /// The caller's number is known (else it is asked to key one in).
        number_known: bool,
    },
    /// A caller asked for a callback and it was stored; the entry keeps its place.
    #[serde(rename = "callback.requested")]
    Requested {
        /// Store id.
        callback_id: i64,
        /// ACD entry.
        entry: u64,
        /// Queue name.
        queue: String,
        /// Class (VIP first).
        class: u8,
        /// The number to call (E.164).
        number: String,
        /// Position in line when asked.
        position: Option<usize>,
        /// Expected wait, seconds.
        estimated_wait_s: Option<u64>,
    },
    /// A callback rejoined the queue (start-up, after a retry delay, rescheduled).
    #[serde(rename = "callback.queued")]
    Queued {
        /// Store id.
        callback_id: i64,
        /// ACD entry.
        entry: u64,
        /// Queue name.
        queue: String,
        /// Class.
        class: u8,
        /// Original enqueue time (RFC 3339).
        enqueued_at: String,
        /// Why: `restored`, `retry`, `rescheduled`, `caller_left`.
        reason: &'static str,
    },
    /// An attempt was claimed in the store (`stage`: `agent`), or a leg of it was placed
    /// (`agent_leg`, `customer_leg`).
    #[serde(rename = "callback.attempt")]
    Attempt {
        /// Store id.
        callback_id: i64,
        /// ACD entry.
        entry: u64,
        /// Attempt number (1-based).
        attempt: u32,
        /// Agent.
        agent: String,
        /// `claimed`, `agent_leg`, `whisper`, `customer_leg`.
        stage: &'static str,
        /// Call-ID of the leg placed.
        leg_call_id: Option<String>,
    },
    /// How an attempt (or the callback) ended.
    #[serde(rename = "callback.outcome")]
    Outcome {
        /// Store id.
        callback_id: i64,
        /// ACD entry.
        entry: u64,
        /// Attempt number (0: none began).
        attempt: u32,
        /// `served`, `failed` (will retry), `exhausted`, `agent_no_answer`, `refused` (the
        /// store refused the claim: never dialed), `cancelled`.
        outcome: &'static str,
        /// Details (`no_answer`, `busy`, `rejected`, status...).
        reason: Option<String>,
        /// The customer leg's final status.
        status: Option<u16>,
        /// Next try (RFC 3339), for `failed`.
        retry_at: Option<String>,
    },
}

/// Where a caller's request dialogue is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AskStep {
    /// "We will call you back on N. Press 1 to confirm, or 2 ..."
    Confirm,
    /// Keying in a number, `#` ends.
    Keying(String),
    /// Written to the store, waiting for its answer.
    Saving,
    /// Told; the engine hangs up after the prompt.
    Told,
}

#[derive(Debug, Clone)]
struct Ask {
    entry: EntryId,
    queue: QueueId,
    queue_name: String,
    number: Option<E164>,
    step: AskStep,
    language: String,
    /// Class and wall-clock enqueue time, taken when saving.
    class: u8,
    enqueued_wall: DateTime<Utc>,
    context: serde_json::Value,
    call_id: Arc<str>,
    /// Said before the first question (the overflow offer).
    intro: Option<String>,
}

/// A callback the engine knows (in the ACD, or out of it until `wake_at`).
#[derive(Debug, Clone)]
struct Queued {
    id: CallbackId,
    number: String,
    queue: QueueId,
    queue_name: String,
    class: u8,
    enqueued_wall: DateTime<Utc>,
    failures: u32,
    context: serde_json::Value,
    call_id: Arc<str>,
    in_acd: bool,
    wake_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `begin_attempt` sent.
    Claiming,
    /// Agent-first: the agent's phone rings.
    RingingAgent,
    /// Agent-first: the agent answered and hears who it is.
    Whisper,
    /// Agent-first: the customer is being dialed.
    DialingCustomer,
    /// Customer-first: the customer is being dialed.
    CustomerFirst,
    /// Customer-first: the customer answered and holds; the agent's phone rings.
    CustomerHolds,
    /// Both legs bridged: served.
    Bridged,
}

#[derive(Debug, Clone)]
struct Job {
    agent: AgentId,
    agent_name: String,
    contact: String,
    stage: Stage,
    attempt: u32,
    agent_leg: Option<CallHandle>,
    customer_leg: Option<CallHandle>,
    /// The ACD was told how it ended (`CallbackFailed`/`CallEnded`).
    acd_done: bool,
    customer_first: bool,
    /// The store claim this job waits for / holds.
    claim: u64,
}

/// The call side's callback state.
#[derive(Debug, Default)]
pub(super) struct Callbacks {
    asks: HashMap<CallHandle, Ask>,
    queued: HashMap<EntryId, Queued>,
    jobs: HashMap<EntryId, Job>,
    legs: HashMap<CallHandle, EntryId>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    next_claim: u64,
}

impl Callbacks {
    /// When [`CallApp::callback_timers`] is due.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Whether a caller is in the request dialogue (no announcements then).
    pub(super) fn asking(&self, call: CallHandle) -> bool {
        self.asks.contains_key(&call)
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// "+14155550123" → "4 1 5 5 5 5 0 1 2 3" (spoken digit by digit; the NANP country code is
/// left out).
fn spoken_number(n: &str) -> String {
    let digits = n.strip_prefix("+1").filter(|d| d.len() == 10).unwrap_or(n);
    digits
        .chars()
        .filter(char::is_ascii_digit)
        .map(String::from)
        .collect::<Vec<_>>()
        .join(" ")
}

impl CallApp {
    fn region(&self) -> Region {
        self.config.store.region().unwrap_or(Region::Nanp)
    }

    fn cb_emit(&self, call_id: &Arc<str>, ev: CallbackEvent) {
        self.events.emit(Some(call_id), EventBody::Callback(ev));
    }

    /// Renders the module's fixed English texts ahead of their first use (memory cache).
    pub(super) fn callback_prerender(&mut self) {
        if self.config.callbacks.queues.is_empty() && self.config.outbound.uri.is_none() {
            return;
        }
        let voice = self.tts.voice("en");
        for text in [HOLD_TEXT, KEYING_TEXT] {
            if self.tts.cached(&voice, text).is_none() {
                self.tts_pool.request((voice.clone(), text.to_owned()));
            }
        }
    }

    /// The hint appended to the position announcements of queues that offer callbacks.
    pub(super) fn callback_hint(&self, call: CallHandle, language: &str) -> Option<String> {
        if language.starts_with("zh") {
            return None;
        }
        let entry = match self.calls.get(&call)?.acd? {
            AcdRole::Caller { entry, .. } => entry,
            AcdRole::Agent { .. } => return None,
        };
        let desk = self.desk.as_ref()?;
        let queue = desk.queue_name(desk.acd().entry(entry)?.queue)?;
        if !self.config.callbacks.queues.iter().any(|q| q == queue) {
            return None;
        }
        Some(format!(
            " To be called back without losing your place, press {}.",
            self.config.callbacks.key
        ))
    }

    /// A text of this module was rendered for `call`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn callback_rendered(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: CallHandle,
        id: u64,
        key: &crate::tts::Key,
        language: String,
        result: &Result<(Prompt, crate::tts::Source), String>,
    ) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        // A render that came too late for its moment is dropped (e.g. the confirmation
        // question after the caller already confirmed: it must not cut off the goodbye).
        let step = self.cb.asks.get(&call).map(|a| &a.step);
        let stage = self
            .cb
            .legs
            .get(&call)
            .and_then(|e| self.cb.jobs.get(e))
            .map(|j| j.stage);
        let current = match id {
            CB_PROMPT => matches!(step, Some(AskStep::Confirm | AskStep::Keying(_))),
            CB_BYE => step == Some(&AskStep::Told),
            CB_WHISPER => stage == Some(Stage::Whisper),
            _ => stage == Some(Stage::CustomerHolds),
        };
        if !current {
            return;
        }
        let call_id = c.call_id.clone();
        match result {
            Ok((prompt, source)) if c.media_started => {
                self.say_rendered(call, id, key, &language, source.as_str(), prompt.clone());
            }
            _ => {
                tracing::warn!(%call_id, "callback prompt not rendered; going on without it");
                self.callback_prompt_done(now, ua, call, id);
            }
        }
    }

    /// A key from a caller: true when the callback dialogue took it (the IVR does not see it).
    pub(super) fn callback_dtmf(&mut self, now: Instant, call: CallHandle, digit: char) -> bool {
        let offered = self.calls.get(&call).is_some_and(|c| c.link.peer.is_some());
        if offered
            && self
                .cb
                .asks
                .get(&call)
                .is_some_and(|a| matches!(a.step, AskStep::Confirm | AskStep::Keying(_)))
        {
            // An agent's phone rings for this caller: the dialogue is over, the keys go on.
            self.cb.asks.remove(&call);
            return false;
        }
        if let Some(step) = self.cb.asks.get(&call).map(|a| a.step.clone()) {
            match step {
                AskStep::Confirm => match digit {
                    '1' => self.cb_save(now, call),
                    '2' => {
                        if let Some(a) = self.cb.asks.get_mut(&call) {
                            a.step = AskStep::Keying(String::new());
                        }
                        self.cb_prompt_keying(call);
                    }
                    '*' => self.cb_drop_ask(call),
                    _ => {}
                },
                AskStep::Keying(mut digits) => match digit {
                    '#' => {
                        let region = self.region();
                        match E164::parse(&digits, region) {
                            Ok(n) => {
                                if let Some(a) = self.cb.asks.get_mut(&call) {
                                    a.number = Some(n);
                                    a.step = AskStep::Confirm;
                                }
                                self.cb_prompt_confirm(call);
                            }
                            Err(_) => {
                                if let Some(a) = self.cb.asks.get_mut(&call) {
                                    a.step = AskStep::Keying(String::new());
                                }
                                let lang = self.cb_lang(call);
                                self.say_driver(
                                    call,
                                    CB_PROMPT,
                                    "Sorry, that number is not valid. Please key it in again, \
                                     then press hash."
                                        .to_owned(),
                                    &lang,
                                );
                            }
                        }
                    }
                    '*' => self.cb_drop_ask(call),
                    d if d.is_ascii_digit() && digits.len() < 20 => {
                        digits.push(d);
                        if let Some(a) = self.cb.asks.get_mut(&call) {
                            a.step = AskStep::Keying(digits);
                        }
                    }
                    _ => {}
                },
                AskStep::Saving | AskStep::Told => {}
            }
            return true;
        }
        if !self.config.callbacks.key.starts_with(digit) {
            return false;
        }
        self.cb_start_ask(call, false)
    }

    /// Starts the dialogue with a waiting live caller (its key, or the queue's overflow rule
    /// `offer_callback`: then the queue need not be in `[callbacks] queues`).
    fn cb_start_ask(&mut self, call: CallHandle, overflow: bool) -> bool {
        if self.cb.asks.contains_key(&call) {
            return false;
        }
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        let Some(AcdRole::Caller { entry, .. }) = c.acd else {
            return false;
        };
        if c.link.peer.is_some() || !c.media_started {
            return false;
        }
        let Some(desk) = self.desk.as_ref() else {
            return false;
        };
        let Some(view) = desk.acd().entry(entry) else {
            return false;
        };
        if view.status != EntryStatus::Waiting || view.kind != EntryKind::Live {
            return false;
        }
        let queue_name = desk.queue_name(view.queue).unwrap_or_default().to_owned();
        if !overflow && !self.config.callbacks.queues.contains(&queue_name) {
            return false;
        }
        let ivr = c.ivr.as_ref();
        let number = ivr.and_then(|i| i.profile.identity.number().cloned());
        let name = ivr
            .and_then(|i| i.profile.customer.as_ref())
            .map(|c| c.name.clone());
        let vip = ivr.is_some_and(|i| i.profile.vip());
        let reason = ivr.and_then(|i| {
            i.call
                .var("reason")
                .or_else(|| i.call.var("intent"))
                .map(str::to_owned)
        });
        let path = ivr
            .map(|i| i.call.summary().path.clone())
            .unwrap_or_default();
        // What the agent's screen pop will show when the callback is offered (kept with the
        // request, so it survives a restart).
        let since = match c.acd {
            Some(AcdRole::Caller { since, .. }) => since,
            _ => return false,
        };
        let pop =
            serde_json::to_value(self.screen_pop(call, "", view.queue, since)).unwrap_or_default();
        let context = serde_json::json!({
            "name": name,
            "vip": vip,
            "reason": reason,
            "ivr_path": path,
            "caller": c.link.from_user,
            "pop": pop,
        });
        let language = self
            .announce_lang
            .get(&call.0)
            .cloned()
            .unwrap_or_else(|| "en".to_owned());
        let keying = number.is_none();
        self.cb.asks.insert(
            call,
            Ask {
                entry,
                queue: view.queue,
                queue_name,
                number,
                step: if keying {
                    AskStep::Keying(String::new())
                } else {
                    AskStep::Confirm
                },
                language,
                class: view.class,
                enqueued_wall: Utc::now(),
                context,
                call_id: c.call_id.clone(),
                intro: overflow.then(|| {
                    "All our agents are still busy. We can call you back instead.".to_owned()
                }),
            },
        );
        let call_id = c.call_id.clone();
        self.cb_emit(
            &call_id,
            CallbackEvent::Asked {
                entry: entry.0,
                trigger: if overflow { "overflow" } else { "key" },
                number_known: !keying,
            },
        );
        if keying {
            self.cb_prompt_keying(call);
        } else {
            self.cb_prompt_confirm(call);
        }
        true
    }

    fn cb_lang(&self, call: CallHandle) -> String {
        self.cb
            .asks
            .get(&call)
            .map_or_else(|| "en".to_owned(), |a| a.language.clone())
    }

    fn cb_prompt_confirm(&mut self, call: CallHandle) {
        let Some(a) = self.cb.asks.get_mut(&call) else {
            return;
        };
        let n = a.number.as_ref().map(|n| spoken_number(n.as_str()));
        let lang = a.language.clone();
        let intro = a.intro.take().map(|i| format!("{i} ")).unwrap_or_default();
        let text = format!(
            "{intro}We will call you back on {}, and you keep your place in line. Press 1 to \
             confirm, or 2 to key in another number.",
            n.unwrap_or_default()
        );
        self.say_driver(call, CB_PROMPT, text, &lang);
    }

    fn cb_prompt_keying(&mut self, call: CallHandle) {
        let lang = self.cb_lang(call);
        let intro = self
            .cb
            .asks
            .get_mut(&call)
            .and_then(|a| a.intro.take())
            .map(|i| format!("{i} "))
            .unwrap_or_default();
        self.say_driver(call, CB_PROMPT, format!("{intro}{KEYING_TEXT}"), &lang);
    }

    /// The caller left the dialogue (`*`): it waits on as before.
    fn cb_drop_ask(&mut self, call: CallHandle) {
        self.cb.asks.remove(&call);
        self.media.send(Command::StopPlayback(call.0));
    }

    /// Confirmed: persist first (the store thread answers with [`StoreDone::Requested`]).
    fn cb_save(&mut self, now: Instant, call: CallHandle) {
        let Some(since) = self.calls.get(&call).and_then(|c| match c.acd {
            Some(AcdRole::Caller { since, .. }) => Some(since),
            _ => None,
        }) else {
            return;
        };
        let class = self.cb.asks.get(&call).and_then(|a| {
            self.desk
                .as_ref()
                .and_then(|d| d.acd().entry(a.entry))
                .map(|e| e.class)
        });
        let Some(a) = self.cb.asks.get_mut(&call) else {
            return;
        };
        let Some(number) = a.number.clone() else {
            return;
        };
        a.step = AskStep::Saving;
        if let Some(class) = class {
            a.class = class;
        }
        let waited = chrono::Duration::from_std(now.saturating_duration_since(since))
            .unwrap_or_else(|_| chrono::Duration::zero());
        a.enqueued_wall = Utc::now() - waited;
        let req = CallbackRequest {
            call_id: a.call_id.to_string(),
            number,
            queue: a.queue_name.clone(),
            class: a.class,
            enqueued_at: a.enqueued_wall,
            context: a.context.clone(),
        };
        self.store.send(StoreRequest::Callback(StoreOp::Request {
            key: call.0,
            req: Box::new(req),
        }));
    }

    /// What the store thread reports.
    pub(super) fn callback_store(&mut self, now: Instant, ua: &mut UserAgent, done: StoreDone) {
        match done {
            StoreDone::Requested { key, result } => self.cb_requested(now, key, result),
            StoreDone::Begun {
                entry,
                id,
                claim,
                result,
                refused_state,
            } => self.cb_begun(now, ua, (EntryId(entry), claim), id, result, refused_state),
            StoreDone::Changed {
                result,
                cancelled,
                reply,
            } => {
                if let Ok(cb) = &result {
                    self.cb_changed(now, cb, cancelled);
                }
                let _ = reply.send(result);
            }
        }
    }

    fn cb_requested(&mut self, now: Instant, key: u64, result: Result<CallbackId, String>) {
        let call = CallHandle(key);
        let Some(ask) = self.cb.asks.get(&call).cloned() else {
            return;
        };
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(call_id = %ask.call_id, error = %e, "cannot store the callback request");
                self.cb.asks.remove(&call);
                self.say_driver(
                    call,
                    CB_PROMPT,
                    "Sorry, we could not take your callback request. Please stay on the line."
                        .to_owned(),
                    &ask.language,
                );
                return;
            }
        };
        let Some(number) = ask.number.as_ref().map(|n| n.as_str().to_owned()) else {
            return;
        };
        let entry = ask.entry;
        let queued = Queued {
            id,
            number: number.clone(),
            queue: ask.queue,
            queue_name: ask.queue_name.clone(),
            class: ask.class,
            enqueued_wall: ask.enqueued_wall,
            failures: 0,
            context: ask.context.clone(),
            call_id: ask.call_id.clone(),
            in_acd: true,
            wake_at: None,
        };
        let still_here = matches!(
            self.calls.get(&call).and_then(|c| c.acd),
            Some(AcdRole::Caller { entry: e, .. }) if e == entry
        );
        if !still_here {
            // The caller hung up while the request was written: it was stored, so honour
            // it — the entry rejoins at its original place.
            self.cb.asks.remove(&call);
            let mut q = queued;
            q.in_acd = false;
            self.cb_emit(
                &ask.call_id,
                CallbackEvent::Requested {
                    callback_id: id.0,
                    entry: entry.0,
                    queue: ask.queue_name.clone(),
                    class: ask.class,
                    number,
                    position: None,
                    estimated_wait_s: None,
                },
            );
            self.cb.queued.insert(entry, q);
            self.cb_enqueue(now, entry, "caller_left");
            return;
        }
        let converted = self
            .desk
            .as_mut()
            .map(|d| d.handle(now, AcdEvent::ConvertToCallback { entry }));
        if !matches!(converted, Some(Ok(()))) {
            // Offered to an agent meanwhile: the caller goes on as a live caller.
            tracing::info!(call_id = %ask.call_id, "callback request overtaken by an offer; withdrawn");
            self.store
                .send(StoreRequest::Callback(StoreOp::Withdraw { id }));
            self.cb.asks.remove(&call);
            return;
        }
        let (position, wait) = self.desk.as_ref().map_or((None, None), |d| {
            (d.acd().position(entry), d.acd().estimated_wait(entry))
        });
        self.cb.queued.insert(entry, queued);
        self.entries.remove(&entry);
        if let Some(c) = self.calls.get_mut(&call) {
            c.acd = None;
        }
        self.cb_emit(
            &ask.call_id,
            CallbackEvent::Requested {
                callback_id: id.0,
                entry: entry.0,
                queue: ask.queue_name.clone(),
                class: ask.class,
                number,
                position,
                estimated_wait_s: wait.map(|d| d.as_secs()),
            },
        );
        if let Some(a) = self.cb.asks.get_mut(&call) {
            a.step = AskStep::Told;
        }
        let when = match wait.map(|d| d.as_secs().div_ceil(60).max(1)) {
            Some(1) => "in about 1 minute".to_owned(),
            Some(m) => format!("in about {m} minutes"),
            None => "as soon as an agent is free".to_owned(),
        };
        self.media.send(Command::SetIdle(call.0, None));
        self.say_driver(
            call,
            CB_BYE,
            format!("Thank you. We will call you back {when}. Goodbye."),
            &ask.language,
        );
    }

    /// A playback of this module ended on `call`.
    pub(super) fn callback_prompt_done(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: CallHandle,
        id: u64,
    ) {
        match id {
            CB_BYE
                if self
                    .cb
                    .asks
                    .get(&call)
                    .is_some_and(|a| a.step == AskStep::Told) =>
            {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.hangup_cause = Some("callback_requested");
                }
                if let Err(e) = ua.hangup(now, call) {
                    tracing::debug!(error = %e, "hangup after a callback request");
                }
            }
            CB_WHISPER => {
                let Some(entry) = self.cb.legs.get(&call).copied() else {
                    return;
                };
                match self.cb.jobs.get(&entry).map(|j| j.stage) {
                    Some(Stage::Whisper) => self.cb_dial_customer(now, ua, entry),
                    Some(Stage::CustomerHolds) => {}
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// The ACD offers callback `entry` to `agent`: claim the attempt in the store first.
    pub(super) fn offer_callback(
        &mut self,
        now: Instant,
        agents: &Agents,
        entry: EntryId,
        agent: AgentId,
    ) {
        let name = self.agent_name(agent);
        let Some(q) = self.cb.queued.get(&entry) else {
            tracing::warn!(?entry, "offer of an unknown callback: it leaves the queue");
            if let Some(d) = self.desk.as_mut() {
                let _ = d.handle(now, AcdEvent::Abandon { entry });
            }
            return;
        };
        let id = q.id;
        let call_id = q.call_id.clone();
        let customer_first = self.config.callbacks.customer_first.contains(&q.queue_name);
        let username = self
            .config
            .agents
            .agent
            .iter()
            .find(|a| a.id == name)
            .map(|a| a.username.clone())
            .unwrap_or_default();
        let Some(contact) = agents.contacts(&username).first().map(|b| b.uri.clone()) else {
            self.events.emit(
                Some(&call_id),
                EventBody::AcdRefused {
                    entry: entry.0,
                    agent: name,
                    reason: "not_registered",
                    status: None,
                },
            );
            if let Some(d) = self.desk.as_mut() {
                let _ = d.handle(now, AcdEvent::OfferRefused { agent, entry });
            }
            return;
        };
        self.cb.next_claim += 1;
        let claim = self.cb.next_claim;
        self.cb.jobs.insert(
            entry,
            Job {
                agent,
                agent_name: name.clone(),
                contact,
                stage: Stage::Claiming,
                attempt: 0,
                agent_leg: None,
                customer_leg: None,
                acd_done: false,
                customer_first,
                claim,
            },
        );
        self.store.send(StoreRequest::Callback(StoreOp::Begin {
            entry: entry.0,
            id,
            agent: name,
            claim,
        }));
    }

    fn cb_begun(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        (entry, claim): (EntryId, u64),
        id: CallbackId,
        result: Result<u32, String>,
        refused_state: Option<CallbackState>,
    ) {
        let claiming = self
            .cb
            .jobs
            .get(&entry)
            .is_some_and(|j| j.stage == Stage::Claiming && j.claim == claim);
        let Some(q) = self.cb.queued.get(&entry).cloned() else {
            if result.is_ok() {
                self.cb_finish(id, "offer_cancelled", None);
            }
            return;
        };
        let attempt = match result {
            Ok(n) if claiming => n,
            Ok(_) => {
                // The offer was withdrawn while the claim was written.
                self.cb_finish(id, "offer_cancelled", None);
                return;
            }
            // The answer to an earlier, withdrawn offer: nothing to undo.
            Err(_) if !claiming => return,
            Err(e) => {
                // Never dial what the store refused (served, cancelled, being dialed
                // elsewhere): it leaves the queue; a store failure is retried later.
                tracing::warn!(callback = id.0, error = %e, "callback claim refused");
                self.cb.jobs.remove(&entry);
                if let Some(d) = self.desk.as_mut() {
                    let _ = d.handle(now, AcdEvent::Abandon { entry });
                }
                let reason = Some(e);
                if refused_state.is_some() {
                    self.cb.queued.remove(&entry);
                } else if let Some(q) = self.cb.queued.get_mut(&entry) {
                    q.in_acd = false;
                    let at = now + Duration::from_secs(self.config.callbacks.retry_delay_s.max(1));
                    q.wake_at = Some(at);
                    self.cb.timers.push(Reverse((at, entry.0)));
                }
                self.cb_emit(
                    &q.call_id,
                    CallbackEvent::Outcome {
                        callback_id: id.0,
                        entry: entry.0,
                        attempt: 0,
                        outcome: "refused",
                        reason,
                        status: None,
                        retry_at: None,
                    },
                );
                return;
            }
        };
        let Some(job) = self.cb.jobs.get_mut(&entry) else {
            return;
        };
        job.attempt = attempt;
        let agent_name = job.agent_name.clone();
        let customer_first = job.customer_first;
        self.cb_emit(
            &q.call_id,
            CallbackEvent::Attempt {
                callback_id: id.0,
                entry: entry.0,
                attempt,
                agent: agent_name,
                stage: "claimed",
                leg_call_id: None,
            },
        );
        if customer_first {
            // The agent is reserved (on the call) while the customer is dialed.
            let accepted = self.desk.as_mut().map(|d| {
                d.handle(
                    now,
                    AcdEvent::OfferAccepted {
                        agent: self.cb.jobs[&entry].agent,
                        entry,
                    },
                )
            });
            if !matches!(accepted, Some(Ok(()))) {
                self.cb.jobs.remove(&entry);
                self.cb_finish(id, "offer_cancelled", None);
                return;
            }
            if let Some(j) = self.cb.jobs.get_mut(&entry) {
                j.stage = Stage::CustomerFirst;
            }
            self.cb_dial_customer(now, ua, entry);
        } else {
            self.cb_ring_agent(now, ua, entry);
        }
    }

    /// Rings the agent's phone for `entry` (agent-first, or after the customer answered).
    fn cb_ring_agent(&mut self, now: Instant, ua: &mut UserAgent, entry: EntryId) {
        let (Some(job), Some(q)) = (
            self.cb.jobs.get(&entry).cloned(),
            self.cb.queued.get(&entry).cloned(),
        ) else {
            return;
        };
        let name = q
            .context
            .get("name")
            .and_then(|v| v.as_str())
            .map_or_else(|| q.number.clone(), str::to_owned);
        let pop = callback_pop(&q, &job.agent_name, Utc::now());
        let mut presentation = self.presentation(&pop);
        presentation.display_name =
            crate::screenpop::sip_display_name(&format!("Callback {name}"), 40);
        let ring = self
            .config
            .acd
            .as_ref()
            .and_then(|a| a.offer_timeout_s)
            .map_or_else(
                || self.config.bridge.timeout(),
                |s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)) + Duration::from_secs(2),
            );
        let peer = job.customer_leg.filter(|_| job.customer_first);
        let from_user = q.number.clone();
        match self.dial_as(
            now,
            ua,
            &job.contact,
            Mode::Leg,
            peer,
            ring,
            presentation,
            from_user,
        ) {
            Ok(leg) => {
                self.cb.legs.insert(leg, entry);
                if let Some(p) = peer.and_then(|p| self.calls.get_mut(&p)) {
                    p.link.peer = Some(leg);
                }
                let leg_call_id = self.calls.get(&leg).map(|c| c.call_id.to_string());
                // The agent's screen pop, as for a live caller: the webhook and the
                // `acd.offered` event (with `callback: true`).
                self.send_pop(Some(&q.call_id), &pop);
                self.events.emit(
                    Some(&q.call_id),
                    EventBody::AcdOffered {
                        entry: entry.0,
                        agent: job.agent_name.clone(),
                        contact: Some(job.contact.clone()),
                        leg_call_id: leg_call_id.clone(),
                        contacts: vec![job.contact.clone()],
                        leg_call_ids: leg_call_id.iter().cloned().collect(),
                        screen_pop: Box::new(pop),
                    },
                );
                if let Some(j) = self.cb.jobs.get_mut(&entry) {
                    j.agent_leg = Some(leg);
                    if !j.customer_first {
                        j.stage = Stage::RingingAgent;
                    }
                }
                self.cb_emit(
                    &q.call_id,
                    CallbackEvent::Attempt {
                        callback_id: q.id.0,
                        entry: entry.0,
                        attempt: job.attempt,
                        agent: job.agent_name.clone(),
                        stage: "agent_leg",
                        leg_call_id,
                    },
                );
            }
            Err((_, reason)) => {
                tracing::warn!(contact = %job.contact, reason, "cannot ring the agent for a callback");
                if job.customer_first {
                    self.cb_customer_failed(now, entry, "agent_unreachable", None);
                    if let Some(c) = job.customer_leg {
                        let _ = ua.hangup(now, c);
                    }
                } else {
                    self.cb.jobs.remove(&entry);
                    if let Some(d) = self.desk.as_mut() {
                        let _ = d.handle(
                            now,
                            AcdEvent::OfferRefused {
                                agent: job.agent,
                                entry,
                            },
                        );
                    }
                    self.cb_finish(q.id, "agent_unreachable", None);
                }
            }
        }
    }

    /// Dials the customer through `[outbound]` (bridged to the agent's leg when agent-first).
    fn cb_dial_customer(&mut self, now: Instant, ua: &mut UserAgent, entry: EntryId) {
        let (Some(job), Some(q)) = (
            self.cb.jobs.get(&entry).cloned(),
            self.cb.queued.get(&entry).cloned(),
        ) else {
            return;
        };
        let out = self.config.outbound.clone();
        let Some(target) = out.target(&q.number) else {
            tracing::error!("[outbound] uri is missing or invalid: callbacks cannot be dialed");
            self.cb_customer_failed(now, entry, "no_outbound_trunk", None);
            if let Some(a) = job.agent_leg {
                let _ = ua.hangup(now, a);
            }
            return;
        };
        let presentation = Presentation {
            display_name: crate::screenpop::sip_display_name(&out.display_name, 40),
            headers: Vec::new(),
        };
        let ring = Duration::from_secs(self.config.callbacks.ring_timeout_s.max(1));
        let peer = job.agent_leg.filter(|_| !job.customer_first);
        match self.dial_as(
            now,
            ua,
            &target,
            Mode::Leg,
            peer,
            ring,
            presentation,
            if out.caller_id.is_empty() {
                "frontdoor".to_owned()
            } else {
                out.caller_id.clone()
            },
        ) {
            Ok(leg) => {
                if !out.username.is_empty() {
                    let creds = ClientCredentials {
                        username: out.username.clone(),
                        password: out.password.clone(),
                    };
                    if let Err(e) = ua.set_call_credentials(leg, creds) {
                        tracing::warn!(error = %e, "cannot set the trunk's credentials");
                    }
                }
                self.cb.legs.insert(leg, entry);
                if let Some(p) = peer.and_then(|p| self.calls.get_mut(&p)) {
                    p.link.peer = Some(leg);
                }
                let leg_call_id = self.calls.get(&leg).map(|c| c.call_id.to_string());
                if let Some(j) = self.cb.jobs.get_mut(&entry) {
                    j.customer_leg = Some(leg);
                    if !j.customer_first {
                        j.stage = Stage::DialingCustomer;
                    }
                }
                self.cb_emit(
                    &q.call_id,
                    CallbackEvent::Attempt {
                        callback_id: q.id.0,
                        entry: entry.0,
                        attempt: job.attempt,
                        agent: job.agent_name.clone(),
                        stage: "customer_leg",
                        leg_call_id,
                    },
                );
            }
            Err((_, reason)) => {
                self.cb_customer_failed(now, entry, reason, None);
                if let Some(a) = job.agent_leg {
                    let _ = ua.hangup(now, a);
                }
            }
        }
    }

    /// A leg's media started (answered): true when it is a callback leg this module handles
    /// (the customer's leg of an agent-first callback is bridged by the usual path).
    pub(super) fn callback_leg_up(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        leg: CallHandle,
    ) -> bool {
        let Some(entry) = self.cb.legs.get(&leg).copied() else {
            return false;
        };
        let Some(job) = self.cb.jobs.get(&entry).cloned() else {
            return false;
        };
        let q = self.cb.queued.get(&entry).cloned();
        if job.agent_leg == Some(leg) && job.stage == Stage::RingingAgent {
            let accepted = self.desk.as_mut().map(|d| {
                d.handle(
                    now,
                    AcdEvent::OfferAccepted {
                        agent: job.agent,
                        entry,
                    },
                )
            });
            if !matches!(accepted, Some(Ok(()))) {
                // Withdrawn meanwhile (ring timeout): hang the agent up; the entry waits.
                self.cb.jobs.remove(&entry);
                self.cb.legs.remove(&leg);
                if let Some(c) = self.calls.get_mut(&leg) {
                    c.hangup_cause = Some("offer_cancelled");
                }
                let _ = ua.hangup(now, leg);
                if let Some(q) = &q {
                    self.cb_finish(q.id, "offer_cancelled", None);
                }
                return true;
            }
            if let Some(j) = self.cb.jobs.get_mut(&entry) {
                j.stage = Stage::Whisper;
            }
            let Some(q) = q else { return true };
            let name = q.context.get("name").and_then(|v| v.as_str()).map_or_else(
                || format!("the caller at {}", spoken_number(&q.number)),
                str::to_owned,
            );
            let vip = q.context.get("vip").and_then(serde_json::Value::as_bool) == Some(true)
                || q.class > 0;
            let reason = q
                .context
                .get("reason")
                .and_then(|v| v.as_str())
                .map(|r| r.replace('_', " "));
            let mut text = format!("Callback for {name}");
            if vip {
                text.push_str(", VIP");
            }
            if let Some(r) = reason {
                text.push_str(&format!(", about {r}"));
            }
            text.push_str(". Connecting the customer now.");
            self.cb_emit(
                &q.call_id,
                CallbackEvent::Attempt {
                    callback_id: q.id.0,
                    entry: entry.0,
                    attempt: job.attempt,
                    agent: job.agent_name.clone(),
                    stage: "whisper",
                    leg_call_id: self.calls.get(&leg).map(|c| c.call_id.to_string()),
                },
            );
            self.say_driver(leg, CB_WHISPER, text, "en");
            return true;
        }
        if job.customer_first && job.customer_leg == Some(leg) && job.stage == Stage::CustomerFirst
        {
            if let Some(j) = self.cb.jobs.get_mut(&entry) {
                j.stage = Stage::CustomerHolds;
            }
            self.media
                .send(Command::SetIdle(leg.0, self.prompt("hold")));
            self.say_driver(leg, CB_HOLD, HOLD_TEXT.to_owned(), "en");
            self.cb_ring_agent(now, ua, entry);
            return true;
        }
        false
    }

    /// Two legs were bridged: a callback whose customer and agent are both up is served.
    pub(super) fn callback_bridged(&mut self, a: CallHandle, b: CallHandle) {
        let Some(entry) = self
            .cb
            .legs
            .get(&a)
            .or_else(|| self.cb.legs.get(&b))
            .copied()
        else {
            return;
        };
        let Some(job) = self.cb.jobs.get_mut(&entry) else {
            return;
        };
        if job.stage == Stage::Bridged {
            return;
        }
        job.stage = Stage::Bridged;
        let attempt = job.attempt;
        // No hold audio or prompt over the conversation (customer-first: the customer held).
        for k in [a, b] {
            self.media.send(Command::SetIdle(k.0, None));
        }
        let Some(q) = self.cb.queued.remove(&entry) else {
            return;
        };
        self.store.send(StoreRequest::Callback(StoreOp::Finish {
            id: q.id,
            outcome: AttemptOutcome::Served,
        }));
        self.cb_emit(
            &q.call_id,
            CallbackEvent::Outcome {
                callback_id: q.id.0,
                entry: entry.0,
                attempt,
                outcome: "served",
                reason: None,
                status: None,
                retry_at: None,
            },
        );
        // Keep the entry's details for the end of the call (the job holds the agent).
        self.cb.queued.insert(entry, Queued { in_acd: true, ..q });
    }

    /// A callback leg ended.
    pub(super) fn callback_leg_ended(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        leg: CallHandle,
        c: &Call,
        cause: &EndCause,
    ) {
        let Some(entry) = self.cb.legs.remove(&leg) else {
            return;
        };
        let Some(job) = self.cb.jobs.get(&entry).cloned() else {
            return;
        };
        if job.agent_leg != Some(leg) && job.customer_leg != Some(leg) {
            return; // a leg of an earlier attempt
        }
        let id = self.cb.queued.get(&entry).map(|q| q.id);
        if job.stage == Stage::Bridged {
            // Served: the agent's leg ending ends the ACD call (the other leg was hung up).
            if !job.acd_done {
                if let Some(d) = self.desk.as_mut() {
                    let _ = d.handle(now, AcdEvent::CallEnded { agent: job.agent });
                }
            }
            self.cb.jobs.remove(&entry);
            self.cb.queued.remove(&entry);
            return;
        }
        let is_agent = job.agent_leg == Some(leg);
        let (status, why) = match (cause, c.hangup_cause) {
            (_, Some("no_answer")) => (None, "no_answer"),
            (EndCause::RemoteRejected(s @ (486 | 600)), _) => (Some(*s), "busy"),
            (EndCause::RemoteRejected(s), _) => (Some(*s), "rejected"),
            (EndCause::Timeout, _) => (None, "timeout"),
            (EndCause::TransportError, _) => (None, "transport_error"),
            (EndCause::RemoteBye, _) => (None, "hung_up"),
            _ => (None, "failed"),
        };
        if is_agent && c.answered_at.is_none() && !job.customer_first {
            // The agent did not take it: the entry keeps its place; the customer was never
            // dialed, so this is no customer attempt.
            self.cb.jobs.remove(&entry);
            let offered = self
                .desk
                .as_ref()
                .and_then(|d| d.acd().entry(entry))
                .map(|e| e.status)
                == Some(EntryStatus::Offered { agent: job.agent });
            if offered {
                let event = if why == "no_answer" || why == "timeout" {
                    AcdEvent::OfferTimedOut {
                        agent: job.agent,
                        entry,
                    }
                } else {
                    AcdEvent::OfferRefused {
                        agent: job.agent,
                        entry,
                    }
                };
                if let Some(d) = self.desk.as_mut() {
                    let _ = d.handle(now, event);
                }
            }
            if let Some(id) = id {
                let call_id = self.cb.queued.get(&entry).map(|q| q.call_id.clone());
                self.cb_finish(id, &format!("agent_{why}"), None);
                if let Some(call_id) = call_id {
                    self.cb_emit(
                        &call_id,
                        CallbackEvent::Outcome {
                            callback_id: id.0,
                            entry: entry.0,
                            attempt: job.attempt,
                            outcome: "agent_no_answer",
                            reason: Some(why.to_owned()),
                            status,
                            retry_at: None,
                        },
                    );
                }
            }
            return;
        }
        if job.acd_done {
            self.cb.jobs.remove(&entry);
            return;
        }
        // The customer was not reached (its leg failed, or the agent left first).
        let reason = if is_agent {
            format!("agent_{why}")
        } else {
            why.to_owned()
        };
        self.cb_customer_failed(now, entry, &reason, status);
        // The other leg goes too (peer_ended does it for linked legs).
        let other = if is_agent {
            job.customer_leg
        } else {
            job.agent_leg
        };
        if let Some(o) = other {
            if self
                .calls
                .get(&o)
                .is_some_and(|oc| oc.link.peer != Some(leg))
            {
                let _ = ua.hangup(now, o);
            }
        }
    }

    /// The customer was not reached: `CallbackFailed` (the entry back in its place, or given
    /// up after `callback_max_attempts`), the outcome stored, the retry delay applied.
    fn cb_customer_failed(
        &mut self,
        now: Instant,
        entry: EntryId,
        reason: &str,
        status: Option<u16>,
    ) {
        let Some(job) = self.cb.jobs.get_mut(&entry) else {
            return;
        };
        if job.acd_done {
            return;
        }
        job.acd_done = true;
        let (agent, attempt) = (job.agent, job.attempt);
        let max = self
            .config
            .acd
            .as_ref()
            .map_or(3, |a| a.callback_max_attempts.max(1));
        let counts = !reason.starts_with("agent_");
        let Some(q) = self.cb.queued.get_mut(&entry) else {
            return;
        };
        if counts {
            q.failures += 1;
        }
        let exhausted = q.failures >= max;
        let delay = self.config.callbacks.retry_delay_s;
        let retry_wall = Utc::now() + chrono::Duration::seconds(i64::try_from(delay).unwrap_or(0));
        let id = q.id;
        let call_id = q.call_id.clone();
        self.store.send(StoreRequest::Callback(StoreOp::Finish {
            id,
            outcome: AttemptOutcome::Failed {
                reason: reason.to_owned(),
                retry_at: (!exhausted).then_some(retry_wall),
            },
        }));
        if let Some(d) = self.desk.as_mut() {
            let event = if counts {
                AcdEvent::CallbackFailed { agent }
            } else {
                // Not the customer's failure: the entry goes back without using an attempt.
                AcdEvent::CallEnded { agent }
            };
            if let Err(e) = d.handle(now, event) {
                tracing::warn!(error = %e, "the ACD refused the end of a callback attempt");
            }
        }
        self.cb_emit(
            &call_id,
            CallbackEvent::Outcome {
                callback_id: id.0,
                entry: entry.0,
                attempt,
                outcome: if exhausted { "exhausted" } else { "failed" },
                reason: Some(reason.to_owned()),
                status,
                retry_at: (!exhausted).then(|| rfc3339(retry_wall)),
            },
        );
        if exhausted {
            self.cb.queued.remove(&entry);
            return;
        }
        if !counts {
            // CallEnded removed the entry from the ACD: it rejoins at its place.
            if let Some(q) = self.cb.queued.get_mut(&entry) {
                q.in_acd = false;
            }
        }
        let in_acd = self
            .desk
            .as_ref()
            .is_some_and(|d| d.acd().entry(entry).is_some());
        if delay > 0 {
            if in_acd {
                if let Some(d) = self.desk.as_mut() {
                    let _ = d.handle(now, AcdEvent::Abandon { entry });
                }
            }
            if let Some(q) = self.cb.queued.get_mut(&entry) {
                q.in_acd = false;
                let at = now + Duration::from_secs(delay);
                q.wake_at = Some(at);
                self.cb.timers.push(Reverse((at, entry.0)));
            }
        } else if !in_acd {
            self.cb_enqueue(now, entry, "retry");
        }
    }

    /// Records a failed attempt that used no customer attempt (agent side), back in line now.
    fn cb_finish(&mut self, id: CallbackId, reason: &str, retry_at: Option<DateTime<Utc>>) {
        self.store.send(StoreRequest::Callback(StoreOp::Finish {
            id,
            outcome: AttemptOutcome::Failed {
                reason: reason.to_owned(),
                retry_at: Some(retry_at.unwrap_or_else(Utc::now)),
            },
        }));
    }

    /// (Re-)enqueues a known callback at its original enqueue time.
    fn cb_enqueue(&mut self, now: Instant, entry: EntryId, reason: &'static str) {
        let Some(q) = self.cb.queued.get_mut(&entry) else {
            return;
        };
        let Some(desk) = self.desk.as_mut() else {
            return;
        };
        let age = (Utc::now() - q.enqueued_wall)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let at: Time = now.checked_sub(age).map_or(Time::ZERO, |i| desk.time_at(i));
        let enq = Enqueue {
            entry,
            queue: q.queue,
            class: q.class,
            kind: EntryKind::Callback {
                attempts: q.failures,
            },
            requirements: None,
            enqueued_at: Some(at),
        };
        match desk.handle(now, AcdEvent::Enqueue(enq)) {
            Ok(()) => {
                q.in_acd = true;
                q.wake_at = None;
                let ev = CallbackEvent::Queued {
                    callback_id: q.id.0,
                    entry: entry.0,
                    queue: q.queue_name.clone(),
                    class: q.class,
                    enqueued_at: rfc3339(q.enqueued_wall),
                    reason,
                };
                let call_id = q.call_id.clone();
                self.cb_emit(&call_id, ev);
            }
            Err(e) => tracing::error!(callback = q.id.0, error = %e, "the ACD refused a callback"),
        }
    }

    /// Re-enqueues callbacks whose retry delay or reschedule time passed.
    pub(super) fn callback_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, e))) = self.cb.timers.peek().copied() {
            if at > now {
                break;
            }
            self.cb.timers.pop();
            let entry = EntryId(e);
            let due = self
                .cb
                .queued
                .get(&entry)
                .is_some_and(|q| !q.in_acd && q.wake_at == Some(at));
            if due {
                self.cb_enqueue(now, entry, "retry");
            }
        }
    }

    /// The ACD withdrew the offer of `entry` (ring timeout, agent left).
    pub(super) fn callback_offer_cancelled(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        entry: EntryId,
    ) {
        let Some(job) = self.cb.jobs.get(&entry).cloned() else {
            return;
        };
        if !matches!(job.stage, Stage::Claiming | Stage::RingingAgent) {
            return;
        }
        self.cb.jobs.remove(&entry);
        if let Some(leg) = job.agent_leg {
            self.cb.legs.remove(&leg);
            if let Some(c) = self.calls.get_mut(&leg) {
                c.hangup_cause = Some("offer_cancelled");
            }
            let _ = ua.hangup(now, leg);
        }
        if job.stage == Stage::RingingAgent {
            if let Some(id) = self.cb.queued.get(&entry).map(|q| q.id) {
                self.cb_finish(id, "offer_cancelled", None);
            }
        }
    }

    /// The queue's overflow rule `offer_callback` fired for a waiting live caller.
    pub(super) fn callback_overflow_offer(&mut self, entry: EntryId) {
        let Some(call) = self.entries.get(&entry).copied() else {
            return;
        };
        if self.cb_start_ask(call, true) {
            if let Some(c) = self.calls.get(&call) {
                tracing::debug!(call_id = %c.call_id, "overflow: callback offered");
            }
        }
    }

    /// The ACD gave the entry up (`callback_max_attempts`).
    pub(super) fn callback_exhausted(&mut self, entry: EntryId) {
        self.cb.queued.remove(&entry);
    }

    /// A caller's call ended: its dialogue goes.
    pub(super) fn callback_call_gone(&mut self, call: CallHandle) {
        if self
            .cb
            .asks
            .get(&call)
            .is_some_and(|a| a.step != AskStep::Saving)
        {
            self.cb.asks.remove(&call);
        }
    }

    /// At start-up: the pending callbacks (store order, recovered) rejoin their queues at
    /// their original times.
    pub fn restore_callbacks(&mut self, now: Instant, pending: Vec<(Callback, u32)>) {
        for (cb, failures) in pending {
            let Some(queue) = self.desk.as_ref().and_then(|d| d.queue(&cb.queue)) else {
                tracing::error!(callback = cb.id.0, queue = %cb.queue, "callback for an unknown queue (no [acd] or renamed); left in the store");
                continue;
            };
            let Ok(id) = u64::try_from(cb.id.0) else {
                continue;
            };
            let entry = EntryId(RESTORED_BASE + id);
            let wake = cb
                .not_before
                .and_then(|t| (t - Utc::now()).to_std().ok())
                .filter(|d| !d.is_zero())
                .map(|d| now + d);
            self.cb.queued.insert(
                entry,
                Queued {
                    id: cb.id,
                    number: cb.number.clone(),
                    queue,
                    queue_name: cb.queue.clone(),
                    class: cb.class,
                    enqueued_wall: cb.enqueued_at,
                    failures,
                    context: cb.context.clone(),
                    call_id: Arc::from(cb.call_id.as_str()),
                    in_acd: false,
                    wake_at: wake,
                },
            );
            match wake {
                Some(at) => self.cb.timers.push(Reverse((at, entry.0))),
                None => self.cb_enqueue(now, entry, "restored"),
            }
        }
    }

    /// Cancelled or rescheduled through the API (the store agreed): the ACD follows.
    fn cb_changed(&mut self, now: Instant, cb: &Callback, cancelled: bool) {
        let Some(entry) = self
            .cb
            .queued
            .iter()
            .find(|(_, q)| q.id == cb.id)
            .map(|(e, _)| *e)
        else {
            return;
        };
        let waiting_in_acd = self
            .desk
            .as_ref()
            .and_then(|d| d.acd().entry(entry))
            .is_some_and(|e| e.status == EntryStatus::Waiting);
        if waiting_in_acd {
            if let Some(d) = self.desk.as_mut() {
                let _ = d.handle(now, AcdEvent::Abandon { entry });
            }
            if let Some(q) = self.cb.queued.get_mut(&entry) {
                q.in_acd = false;
            }
        }
        if cancelled {
            if let Some(q) = self.cb.queued.remove(&entry) {
                self.cb_emit(
                    &q.call_id,
                    CallbackEvent::Outcome {
                        callback_id: q.id.0,
                        entry: entry.0,
                        attempt: 0,
                        outcome: "cancelled",
                        reason: Some("api".to_owned()),
                        status: None,
                        retry_at: None,
                    },
                );
            }
            return;
        }
        let wake = cb
            .not_before
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .filter(|d| !d.is_zero());
        let in_acd = self.cb.queued.get(&entry).is_some_and(|q| q.in_acd);
        match wake {
            Some(d) => {
                let at = now + d;
                if let Some(q) = self.cb.queued.get_mut(&entry) {
                    q.wake_at = Some(at);
                }
                self.cb.timers.push(Reverse((at, entry.0)));
            }
            None if !in_acd => self.cb_enqueue(now, entry, "rescheduled"),
            None => {}
        }
    }

    /// Serves a callbacks API request (the store thread does the work).
    pub(super) fn callback_api(&mut self, req: ApiRequest) {
        let op = match req {
            ApiRequest::List(reply) => StoreOp::List(reply),
            ApiRequest::Get { id, reply } => StoreOp::Get {
                id: CallbackId(id),
                reply,
            },
            ApiRequest::Cancel { id, reply } => StoreOp::Cancel {
                id: CallbackId(id),
                reply,
            },
            ApiRequest::Reschedule {
                id,
                not_before,
                reply,
            } => StoreOp::Reschedule {
                id: CallbackId(id),
                not_before,
                reply,
            },
        };
        self.store.send(StoreRequest::Callback(op));
    }
}

/// The agent's screen pop for callback `q`: the context of the call that asked for it (kept
/// with the request), with the number to call, the time since the request and
/// `callback: true`.
fn callback_pop(q: &Queued, agent: &str, now: DateTime<Utc>) -> ScreenPop {
    let mut pop: ScreenPop = q
        .context
        .get("pop")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    pop.agent = agent.to_owned();
    if pop.call_id.is_empty() {
        pop.call_id = q.call_id.to_string();
    }
    if pop.queue.is_empty() {
        pop.queue = q.queue_name.clone();
    }
    pop.caller_number = Some(q.number.clone());
    if pop.ivr_path.is_empty() {
        pop.ivr_path = q
            .context
            .get("ivr_path")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
    }
    pop.waited_s = u64::try_from((now - q.enqueued_wall).num_seconds()).unwrap_or(0);
    pop.callback = true;
    pop
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn outbound_target_puts_the_number_in_the_user_part() {
        let o = OutboundSection {
            uri: Some("sip:127.0.0.1:40210".into()),
            ..OutboundSection::default()
        };
        assert_eq!(
            o.target("+14155550123").as_deref(),
            Some("sip:+14155550123@127.0.0.1:40210")
        );
        let o = OutboundSection {
            uri: Some("sip:trunk@10.0.0.1:5060".into()),
            ..OutboundSection::default()
        };
        assert_eq!(
            o.target("+4420").as_deref(),
            Some("sip:+4420@10.0.0.1:5060")
        );
        assert_eq!(o.target("12;evil=1"), None);
        assert_eq!(OutboundSection::default().target("+1"), None);
    }

    #[test]
    fn bad_callback_configs_are_refused_with_a_reason() {
        let base = "[acd]\n[[acd.queues]]\nid = 1\nname = \"general\"\n";
        let ok = format!(
            "{base}[callbacks]\nqueues = [\"general\"]\n[outbound]\nuri = \"sip:127.0.0.1:5070\"\n\
             caller_id = \"+15550100\"\n"
        );
        crate::config::Config::parse(&ok, "t").unwrap();
        for (bad, why) in [
            ("[callbacks]\nkey = \"12\"\n", "one key"),
            ("[callbacks]\nkey = \"x\"\n", "one key"),
            (
                "[callbacks]\nqueues = [\"nope\"]\n",
                "not an [[acd.queues]]",
            ),
            (
                "[callbacks]\nqueues = [\"general\"]\n",
                "need an [outbound] uri",
            ),
            (
                "[outbound]\nuri = \"sip:carrier.example:5060\"\n",
                "IP-literal",
            ),
            (
                "[outbound]\nuri = \"sip:127.0.0.1:5070\"\ncaller_id = \"1>\"\n",
                "caller_id",
            ),
            ("[callbacks]\nsurprise = 1\n", "unknown field"),
        ] {
            let e = crate::config::Config::parse(&format!("{base}{bad}"), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_are_spoken_digit_by_digit() {
        assert_eq!(spoken_number("+14155550123"), "4 1 5 5 5 5 0 1 2 3");
        assert_eq!(spoken_number("+442079460000"), "4 4 2 0 7 9 4 6 0 0 0 0");
    }

    #[test]
    fn store_ops_claim_once() {
        let store = SqliteStore::open_in_memory().unwrap();
        let req = CallbackRequest {
            call_id: "c1".into(),
            number: E164::parse("+14155550123", Region::Nanp).unwrap(),
            queue: "general".into(),
            class: 0,
            enqueued_at: Utc::now(),
            context: serde_json::json!({}),
        };
        let Some(StoreDone::Requested { result: Ok(id), .. }) = run_op(
            &store,
            StoreOp::Request {
                key: 1,
                req: Box::new(req),
            },
        ) else {
            panic!("stored")
        };
        let begin = |store: &SqliteStore| {
            run_op(
                store,
                StoreOp::Begin {
                    entry: 1,
                    id,
                    agent: "a1".into(),
                    claim: 1,
                },
            )
        };
        assert!(matches!(
            begin(&store),
            Some(StoreDone::Begun { result: Ok(1), .. })
        ));
        assert!(matches!(
            begin(&store),
            Some(StoreDone::Begun {
                result: Err(_),
                refused_state: Some(CallbackState::Dialing),
                ..
            })
        ));
        run_op(
            &store,
            StoreOp::Finish {
                id,
                outcome: AttemptOutcome::Served,
            },
        );
        assert!(matches!(
            begin(&store),
            Some(StoreDone::Begun {
                refused_state: Some(CallbackState::Served),
                ..
            })
        ));
        let pending = load_pending(&store).unwrap();
        assert!(pending.is_empty());
    }
}
