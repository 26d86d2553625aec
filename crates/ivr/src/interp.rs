//! The per-call interpreter: a sans-IO state machine. The driver feeds [`Event`]s (and calls
//! [`Call::handle_timeout`] at [`Call::poll_timeout`]), then drains [`Action`]s and
//! [`IvrEvent`]s. Time and wall-clock are inputs; nothing here reads a clock or does I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::IvrError;
use crate::model::*;

/// Most steps executed without waiting for an input before the call is ended (a safety net
/// behind the loop check of the validator).
const MAX_STEPS_PER_INPUT: usize = 256;
/// Type-ahead digits kept between steps.
const MAX_TYPEAHEAD: usize = 64;
/// Grace after a recording's maximum duration before the interpreter stops it itself.
const RECORD_GRACE: Duration = Duration::from_secs(5);
/// Shown instead of the digits of `sensitive = true` steps.
pub const REDACTED: &str = "[redacted]";
/// Shown instead of digit strings in speech transcripts (unless the step has `keep_digits`).
pub const DIGITS_REDACTED: &str = "[digits]";
/// After the caller started speaking: how long past `max_speech` + `end_silence` the
/// interpreter waits for the recogniser's result before counting the attempt as not understood.
const RESULT_WAIT: Duration = Duration::from_secs(10);
/// The endpointer decides no-input on the caller's clock; the interpreter's own timer is a
/// safety net that fires this much later.
const NO_INPUT_GRACE: Duration = Duration::from_secs(1);

/// Identifies one prompt playback, so a late `PromptFinished` of a stopped prompt is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PlaybackId(pub u64);

/// What the driver knows about the caller (from the customer store and SIP headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerAttributes {
    /// E.164 number, `None` when anonymous/withheld/invalid.
    pub number: Option<String>,
    /// Customer name, when known.
    pub name: Option<String>,
    /// Customer tier (e.g. `"vip"`, `"gold"`).
    pub tier: Option<String>,
    /// VIP customer.
    pub vip: bool,
    /// The number has at least one earlier call record.
    pub returning: bool,
    /// The number belongs to a customer of the store.
    pub known: bool,
    /// Preferred language code (e.g. `"zh"`).
    pub language: Option<String>,
    /// The caller withheld the number (or it was invalid).
    pub anonymous: bool,
}

/// Per-call facts the interpreter starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// SIP Call-ID (also `{call.id}`).
    pub call_id: String,
    /// Dialed number (Request-URI user part).
    pub dialed: String,
    /// Trunk the call came from, when known.
    pub trunk: Option<String>,
    /// Caller attributes.
    pub caller: CallerAttributes,
}

/// Result of an `enqueue`, reported by the ACD (or by the driver while there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOutcome {
    /// An agent took the call: the IVR is done.
    Connected {
        /// Agent id.
        agent: String,
    },
    /// No agent could take the call (none logged in, closed, queue full, wait exceeded).
    Failed {
        /// Why, for the call record.
        reason: String,
    },
}

/// Result of a `transfer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The B leg answered and is bridged: the IVR is done.
    Connected,
    /// The B leg failed (SIP status, or `None` for a timeout / transport error).
    Failed {
        /// Final SIP status of the B leg, if any.
        status: Option<u16>,
    },
}

/// What the recogniser understood (the best hypothesis, whatever its score).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum SpeechMeaning {
    /// An intent of the step (or one of its `expect` words), by name.
    Intent(String),
    /// A digit string.
    Digits(String),
    /// Yes.
    Yes,
    /// No.
    No,
}

/// A recogniser result for the utterance of a [`Action::StartListening`] turn.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechResult {
    /// What was heard (unredacted: the interpreter redacts what it keeps).
    pub transcript: String,
    /// The best hypothesis, `None` when nothing matched at all.
    pub meaning: Option<SpeechMeaning>,
    /// The hypothesis' score 0..=1 (the interpreter compares it with `accept`/`reject`).
    pub confidence: f32,
}

/// An intent the recogniser should listen for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenIntent {
    /// Name reported back in [`SpeechMeaning::Intent`].
    pub name: String,
    /// Example phrases (the name as words when the dialplan gives none).
    pub phrases: Vec<String>,
}

/// A speech turn: what to listen for and how (see [`Action::StartListening`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenRequest {
    /// Step that listens.
    pub step: String,
    /// Intents (including the step's non-yes/no `expect` words).
    pub intents: Vec<ListenIntent>,
    /// A digit string of `min..=max` digits.
    pub digits: Option<(usize, usize)>,
    /// Yes / no.
    pub yes_no: bool,
    /// Speech or a key stops the prompt (the media session does it itself).
    pub barge_in: bool,
    /// Silence that ends the utterance.
    pub end_silence: Duration,
    /// Longest utterance.
    pub max_speech: Duration,
    /// No speech this long after the prompts → [`Event::SpeechNoInput`].
    pub no_input: Duration,
    /// The recogniser may reject below this score (the interpreter decides with `accept`).
    pub reject_below: f32,
    /// Language of the call.
    pub language: String,
    /// A confirmation ("did you say ...?") turn.
    pub confirmation: bool,
    /// Training data of the step's intent classifier (`training`), when it has one.
    pub training: Option<std::path::PathBuf>,
}

/// What the interpreter made of a speech result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeechDecision {
    /// At or above `accept`: routed.
    Accepted,
    /// Between `reject` and `accept`: the caller is asked to confirm.
    Confirm,
    /// The caller confirmed (yes / 1).
    Confirmed,
    /// The caller said no (no / 2).
    Denied,
    /// Below `reject`, not an expected answer, or no result in time.
    Rejected,
    /// Nothing was said.
    NoInput,
}

/// One speech turn in the call record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeechTurnRecord {
    /// Step.
    pub step: String,
    /// Attempt of the step.
    pub attempt: u32,
    /// Transcript, digit strings redacted unless the step has `keep_digits`.
    pub transcript: String,
    /// What it was understood as (digits redacted likewise).
    pub meaning: Option<SpeechMeaning>,
    /// Score 0..=1, rounded to 3 decimals.
    pub confidence: f64,
    /// Decision.
    pub decision: SpeechDecision,
}

/// Inputs from the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The call was answered (after [`Action::Answer`]).
    Answered,
    /// A DTMF key.
    Dtmf(char),
    /// A prompt (play or say) finished or was stopped.
    PromptFinished(PlaybackId),
    /// A recording ended (max duration, finish key, silence).
    RecordingFinished {
        /// Recorded length.
        duration: Duration,
    },
    /// Result of [`Action::Enqueue`].
    QueueResult(QueueOutcome),
    /// Result of [`Action::Transfer`].
    TransferResult(TransferOutcome),
    /// The caller started speaking in a speech turn (the endpointer's onset, or barge-in):
    /// the prompt stops (barge-in steps) and the no-input timer is cancelled.
    SpeechStarted,
    /// The endpointer heard nothing for the turn's `no_input` after the prompts (or the
    /// recogniser found no speech in the utterance).
    SpeechNoInput,
    /// The recogniser's result for the turn's utterance.
    SpeechResult(SpeechResult),
    /// The caller hung up.
    CallerHungUp,
}

/// A request to the ACD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnqueueRequest {
    /// Queue name.
    pub queue: String,
    /// Required skills and minimum levels (1..=10, 0 = any); empty: the queue's own
    /// requirements (`acd::Enqueue::requirements = None`).
    pub skills: Vec<(String, u8)>,
    /// ACD priority class (`acd::Enqueue::class`): 0 regular, higher served first. Taken from
    /// the dialplan as is: route VIPs to a VIP queue or give their step a higher `priority`.
    pub priority: u8,
    /// Maximum wait.
    pub timeout: Option<Duration>,
    /// Caller is a VIP.
    pub vip: bool,
    /// Call language.
    pub language: String,
    /// Caller number (E.164), if known.
    pub caller: Option<String>,
}

/// Outputs to the driver, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Answer the call (200 OK) and report [`Event::Answered`].
    Answer,
    /// Play a file from the prompts directory; report [`Event::PromptFinished`].
    Play {
        /// Playback id.
        id: PlaybackId,
        /// Path relative to the prompts directory.
        file: String,
    },
    /// Speak text via TTS; report [`Event::PromptFinished`].
    Say {
        /// Playback id.
        id: PlaybackId,
        /// Text (variables already substituted).
        text: String,
        /// Language code.
        language: String,
    },
    /// Stop a playback (barge-in); a `PromptFinished` for it is optional.
    StopPlayback {
        /// Playback id.
        id: PlaybackId,
    },
    /// Digits are wanted now (arm in-band DTMF detection if used).
    StartDigitCollection,
    /// Digits are no longer wanted.
    StopDigitCollection,
    /// Start a speech turn on the caller's audio (endpointer, barge-in if asked) and, when it
    /// ends, recognise the utterance; report [`Event::SpeechStarted`], then
    /// [`Event::SpeechResult`] or [`Event::SpeechNoInput`]. Replaces a turn in progress.
    StartListening(Box<ListenRequest>),
    /// End the speech turn (a key was pressed, the step is over); a late result is ignored.
    StopListening,
    /// Hand the call to the ACD; report [`Event::QueueResult`].
    Enqueue(EnqueueRequest),
    /// Bridge to a SIP URI as a B2BUA leg; report [`Event::TransferResult`].
    Transfer {
        /// SIP URI.
        to: String,
        /// Ring timeout.
        timeout: Duration,
    },
    /// Record to a WAV file; report [`Event::RecordingFinished`].
    Record {
        /// Path (variables substituted).
        path: String,
        /// Maximum duration.
        max_duration: Duration,
        /// Beep first.
        beep: bool,
        /// Key that ends the recording (the interpreter also sends `StopRecording` on it).
        finish_on_key: Option<char>,
    },
    /// Stop the recording now.
    StopRecording,
    /// Start (`true`) or stop the stereo call recording; nothing to report back.
    RecordCall {
        /// Start, or stop.
        start: bool,
    },
    /// Hang up (BYE).
    Hangup {
        /// Reason for logs.
        reason: String,
    },
}

/// How the caller was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recognition {
    /// Withheld, anonymous or invalid number.
    Anonymous,
    /// First call from this number.
    New,
    /// Has called before.
    Returning,
    /// VIP customer.
    Vip,
}

/// Why a gather/menu attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatherFailure {
    /// No key before the timeout.
    Timeout,
    /// Fewer than `min_digits`.
    TooShort,
    /// Failed the `validate` regex.
    NoMatch,
    /// Menu key that is not an option.
    NotAnOption,
    /// Speech not understood (below `reject`, not expected, or the caller said no to the
    /// confirmation).
    NotUnderstood,
    /// No speech (speech attempt of a speech step).
    NoSpeech,
}

/// How the call left the IVR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A `hangup` step or the end of the flow.
    HungUp {
        /// The step's reason, or `"end of flow"`.
        reason: String,
    },
    /// Connected to an agent by the ACD.
    Queued {
        /// Queue.
        queue: String,
        /// Agent.
        agent: String,
    },
    /// Bridged to a SIP URI.
    Transferred {
        /// Target.
        to: String,
    },
    /// The caller hung up in the IVR.
    Abandoned {
        /// Step the caller was in.
        step: String,
    },
    /// Input failed on every attempt and the step had no fallback.
    InputFailed {
        /// Step.
        step: String,
    },
    /// Enqueue/transfer failed and the step had no `on_failure`.
    RouteFailed {
        /// Step.
        step: String,
    },
    /// Too many steps without input (a loop the validator could not see).
    LoopLimit {
        /// Step.
        step: String,
    },
}

impl Outcome {
    /// Short name for call records (`hung_up`, `queued`, `transferred`, `abandoned`,
    /// `input_failed`, `route_failed`, `loop_limit`).
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::HungUp { .. } => "hung_up",
            Outcome::Queued { .. } => "queued",
            Outcome::Transferred { .. } => "transferred",
            Outcome::Abandoned { .. } => "abandoned",
            Outcome::InputFailed { .. } => "input_failed",
            Outcome::RouteFailed { .. } => "route_failed",
            Outcome::LoopLimit { .. } => "loop_limit",
        }
    }
}

/// The IVR event log (for the JSON event stream). Serialises with `type` = `ivr.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum IvrEvent {
    /// The call started in a flow.
    #[serde(rename = "ivr.started")]
    Started {
        /// Dialplan name.
        dialplan: String,
        /// Flow.
        flow: String,
        /// Language chosen.
        language: String,
    },
    /// Caller recognition.
    #[serde(rename = "ivr.recognition")]
    Recognition {
        /// New / returning / VIP / anonymous.
        caller: Recognition,
        /// Tier, if known.
        tier: Option<String>,
    },
    /// A step was entered.
    #[serde(rename = "ivr.step")]
    Step {
        /// Step.
        step: String,
        /// Verb.
        verb: &'static str,
    },
    /// A branch (if/switch/menu choice) was taken.
    #[serde(rename = "ivr.route")]
    Route {
        /// Step that branched.
        step: String,
        /// Where it went.
        to: String,
    },
    /// A gather/menu attempt ended.
    #[serde(rename = "ivr.gather")]
    Gather {
        /// Step.
        step: String,
        /// 1-based attempt.
        attempt: u32,
        /// Digits (redacted for sensitive steps), on success or invalid entry.
        digits: Option<String>,
        /// `None` on success.
        failure: Option<GatherFailure>,
        /// No attempt left after this one (failure) or success.
        last: bool,
    },
    /// A speech result was judged (transcript redacted as in the call record).
    #[serde(rename = "ivr.speech")]
    Speech(SpeechTurnRecord),
    /// A speech step gave up on speech and continues with keys only.
    #[serde(rename = "ivr.speech_fallback")]
    SpeechFallback {
        /// Step.
        step: String,
    },
    /// A recording finished.
    #[serde(rename = "ivr.recorded")]
    Recorded {
        /// Path.
        path: String,
        /// Length in milliseconds.
        duration_ms: u64,
    },
    /// The IVR is done with the call.
    #[serde(rename = "ivr.ended")]
    Ended {
        /// Outcome.
        #[serde(flatten)]
        outcome: Outcome,
    },
}

/// Digits a step collected, for the call record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectedDigits {
    /// Step.
    pub step: String,
    /// The digits, or [`REDACTED`] for sensitive steps.
    pub digits: String,
    /// The step is `sensitive = true`.
    pub sensitive: bool,
}

/// The call record data the interpreter accumulates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    /// Call id.
    pub call_id: String,
    /// Dialplan name.
    pub dialplan: String,
    /// Flow.
    pub flow: String,
    /// Steps entered, in order.
    pub path: Vec<String>,
    /// Digits collected (successful gathers and menu choices; for a speech result: the intent
    /// name, `yes`/`no` or the digits).
    pub digits: Vec<CollectedDigits>,
    /// Speech turns, in order (transcripts with digit strings redacted).
    pub speech: Vec<SpeechTurnRecord>,
    /// How the IVR ended (`None` while running).
    pub outcome: Option<Outcome>,
    /// Last language.
    pub language: String,
}

#[derive(Debug)]
enum Collector {
    Gather(Box<GatherSpec>),
    Menu(Box<MenuSpec>),
}

#[derive(Debug)]
struct Collect {
    step: StepId,
    spec: Collector,
    sensitive: bool,
    attempt: u32,
    prompts: VecDeque<Prompt>,
    playing: Option<PlaybackId>,
    digits: String,
    deadline: Option<Instant>,
    /// Attempts before this one that do not count against `retries` (the speech attempts of
    /// a step that fell back to keys).
    base: u32,
    /// Speech state; `None` for key-only steps and after the fallback to keys.
    speech: Option<Box<SpeechState>>,
}

#[derive(Debug)]
struct SpeechState {
    spec: SpeechSpec,
    failures: u32,
    /// A turn was requested and has not ended.
    listening: bool,
    /// The caller started speaking in the current turn.
    heard: bool,
    /// Awaiting the answer to "did you say ...?".
    confirming: Option<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    meaning: SpeechMeaning,
}

#[derive(Debug)]
enum State {
    /// Ready to run this step.
    Run(StepId),
    WaitAnswer(StepId),
    WaitPrompt {
        step: StepId,
        id: PlaybackId,
        barge_in: bool,
    },
    Collect(Box<Collect>),
    WaitQueue {
        step: StepId,
        spec: EnqueueSpec,
    },
    WaitTransfer {
        step: StepId,
        spec: TransferSpec,
    },
    Recording {
        step: StepId,
        path: String,
        finish_on_key: Option<char>,
        deadline: Instant,
        stopped: bool,
    },
    Done,
}

/// One call in the IVR.
#[derive(Debug)]
pub struct Call {
    plan: Arc<Dialplan>,
    flow: FlowId,
    ctx: CallContext,
    vars: HashMap<String, String>,
    state: State,
    actions: VecDeque<Action>,
    events: VecDeque<IvrEvent>,
    summary: CallSummary,
    next_playback: u64,
    typeahead: String,
    answered: bool,
    wall: DateTime<Utc>,
    started: bool,
    finished: bool,
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|s| !s.is_empty() && s != "false" && s != "0")
}

/// Substitute `{name}` with variables (`{{` / `}}` are literal braces; unknown names → "").
pub fn interpolate(template: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == '}' {
                        closed = true;
                        break;
                    }
                    name.push(n);
                }
                if closed {
                    if let Some(v) = vars.get(name.trim()) {
                        out.push_str(v);
                    }
                } else {
                    out.push('{');
                    out.push_str(&name);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Like [`interpolate`], for file paths: substituted values keep only `[A-Za-z0-9._@+-]`
/// (others become `_`) and never contain `..`, so a hostile Call-ID cannot escape the
/// recordings directory.
pub fn interpolate_path(template: &str, vars: &HashMap<String, String>) -> String {
    let safe: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| {
            let cleaned: String = v
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._@+-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            (k.clone(), cleaned.replace("..", "__"))
        })
        .collect();
    interpolate(template, &safe)
}

impl Call {
    /// A call in `flow` of `plan`. Nothing happens until [`Call::start`].
    pub fn new(plan: Arc<Dialplan>, flow: &FlowId, ctx: CallContext) -> Result<Self, IvrError> {
        let f = plan
            .flow(flow)
            .ok_or_else(|| IvrError::UnknownFlow(flow.clone()))?;
        let start = f.start.clone();
        let mut vars = HashMap::new();
        let c = &ctx.caller;
        let mut put = |k: &str, v: String| {
            vars.insert(k.to_owned(), v);
        };
        put("call.id", ctx.call_id.clone());
        put("call.dialed", ctx.dialed.clone());
        put("call.trunk", ctx.trunk.clone().unwrap_or_default());
        put("caller.number", c.number.clone().unwrap_or_default());
        put("caller.name", c.name.clone().unwrap_or_default());
        put("caller.tier", c.tier.clone().unwrap_or_default());
        put("caller.vip", c.vip.to_string());
        put("caller.returning", c.returning.to_string());
        put("caller.known", c.known.to_string());
        put("caller.anonymous", c.anonymous.to_string());
        put("caller.language", c.language.clone().unwrap_or_default());
        let lang = c
            .language
            .clone()
            .filter(|l| plan.languages.contains(l))
            .unwrap_or_else(|| plan.default_language.clone());
        put("lang", lang.clone());
        let summary = CallSummary {
            call_id: ctx.call_id.clone(),
            dialplan: plan.name.clone(),
            flow: flow.0.clone(),
            path: Vec::new(),
            digits: Vec::new(),
            speech: Vec::new(),
            outcome: None,
            language: lang,
        };
        Ok(Self {
            plan,
            flow: flow.clone(),
            ctx,
            vars,
            state: State::Run(start),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            summary,
            next_playback: 0,
            typeahead: String::new(),
            answered: false,
            wall: DateTime::<Utc>::UNIX_EPOCH,
            started: false,
            finished: false,
        })
    }

    /// Start the flow: logs recognition and runs steps until one waits.
    pub fn start(&mut self, now: Instant, wall: DateTime<Utc>) {
        if self.started {
            return;
        }
        self.started = true;
        self.wall = wall;
        let c = &self.ctx.caller;
        let caller = if c.anonymous || c.number.is_none() {
            Recognition::Anonymous
        } else if c.vip {
            Recognition::Vip
        } else if c.returning {
            Recognition::Returning
        } else {
            Recognition::New
        };
        self.events.push_back(IvrEvent::Started {
            dialplan: self.plan.name.clone(),
            flow: self.flow.0.clone(),
            language: self.lang(),
        });
        self.events.push_back(IvrEvent::Recognition {
            caller,
            tier: c.tier.clone(),
        });
        self.run(now);
    }

    /// The dialplan this call runs (the version it started with).
    pub fn dialplan(&self) -> &Arc<Dialplan> {
        &self.plan
    }

    /// A variable's current value.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next IVR log event.
    pub fn poll_event(&mut self) -> Option<IvrEvent> {
        self.events.pop_front()
    }

    /// When [`Call::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Collect(c) => c.deadline,
            State::Recording { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// The IVR is done (see [`Call::summary`] for the outcome).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Call-record data so far (complete once finished).
    pub fn summary(&self) -> &CallSummary {
        &self.summary
    }

    /// Consume the call, returning its record data.
    pub fn into_summary(self) -> CallSummary {
        self.summary
    }

    fn lang(&self) -> String {
        self.vars
            .get("lang")
            .cloned()
            .unwrap_or_else(|| self.plan.default_language.clone())
    }

    fn playback_id(&mut self) -> PlaybackId {
        self.next_playback += 1;
        PlaybackId(self.next_playback)
    }

    fn text(&self, text: &Text, language: &Option<String>) -> (String, String) {
        let lang = language.clone().unwrap_or_else(|| self.lang());
        let raw = match text {
            Text::Plain(s) => s.clone(),
            Text::PerLanguage(m) => m
                .get(&lang)
                .or_else(|| m.get(&self.plan.default_language))
                .or_else(|| m.values().next())
                .cloned()
                .unwrap_or_default(),
        };
        let used_lang = match text {
            Text::PerLanguage(m) if !m.contains_key(&lang) => {
                if m.contains_key(&self.plan.default_language) {
                    self.plan.default_language.clone()
                } else {
                    m.keys().next().cloned().unwrap_or(lang)
                }
            }
            _ => lang,
        };
        (interpolate(&raw, &self.vars), used_lang)
    }

    fn emit_prompt(&mut self, p: &Prompt) -> PlaybackId {
        let id = self.playback_id();
        match p {
            Prompt::Play(file) => self.actions.push_back(Action::Play {
                id,
                file: file.clone(),
            }),
            Prompt::Say { text, language } => {
                let (text, language) = self.text(text, language);
                self.actions.push_back(Action::Say { id, text, language });
            }
        }
        id
    }

    fn finish(&mut self, outcome: Outcome, hangup: Option<String>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(reason) = hangup {
            self.actions.push_back(Action::Hangup { reason });
        }
        self.summary.outcome = Some(outcome.clone());
        self.summary.language = self.lang();
        self.events.push_back(IvrEvent::Ended { outcome });
        self.state = State::Done;
    }

    fn goto(&mut self, target: Option<StepId>, on_end: Outcome) {
        match target {
            Some(s) => self.state = State::Run(s),
            None => {
                let reason = match &on_end {
                    Outcome::HungUp { reason } => reason.clone(),
                    other => format!("{other:?}"),
                };
                self.finish(on_end, Some(reason));
            }
        }
    }

    fn route_event(&mut self, from: &StepId, to: &StepId) {
        self.events.push_back(IvrEvent::Route {
            step: from.0.clone(),
            to: to.0.clone(),
        });
    }

    fn eval(&self, c: &Condition) -> bool {
        match c {
            Condition::Truthy(v) => truthy(self.vars.get(v)),
            Condition::Eq(v, x) => self.vars.get(v).is_some_and(|s| s == x),
            Condition::Ne(v, x) => self.vars.get(v).is_none_or(|s| s != x),
            Condition::In(v, xs) => self.vars.get(v).is_some_and(|s| xs.contains(s)),
            Condition::Matches(v, r) => self.vars.get(v).is_some_and(|s| r.is_match(s)),
            Condition::Open(h) => self.plan.hours.get(h).is_some_and(|h| h.is_open(self.wall)),
            Condition::Holiday(h) => self
                .plan
                .hours
                .get(h)
                .is_some_and(|h| h.is_holiday(self.wall)),
            Condition::TimeOfDay { timezone, from, to } => {
                let t = self.wall.with_timezone(timezone).time();
                if from < to {
                    *from <= t && t < *to
                } else {
                    t >= *from || t < *to
                }
            }
            Condition::All(cs) => cs.iter().all(|c| self.eval(c)),
            Condition::Any(cs) => cs.iter().any(|c| self.eval(c)),
            Condition::Not(c) => !self.eval(c),
        }
    }

    /// Run steps until one waits for an event.
    fn run(&mut self, now: Instant) {
        let plan = Arc::clone(&self.plan);
        let Some(flow) = plan.flow(&self.flow) else {
            self.finish(
                Outcome::HungUp {
                    reason: "flow missing".to_owned(),
                },
                Some("flow missing".to_owned()),
            );
            return;
        };
        let mut count = 0usize;
        while let State::Run(id) = &self.state {
            let id = id.clone();
            count += 1;
            let Some(step) = flow.steps.get(&id) else {
                self.finish(
                    Outcome::HungUp {
                        reason: format!("missing step {id}"),
                    },
                    Some("internal error".to_owned()),
                );
                return;
            };
            if count > MAX_STEPS_PER_INPUT {
                self.finish(
                    Outcome::LoopLimit { step: id.0.clone() },
                    Some("loop limit".to_owned()),
                );
                return;
            }
            self.summary.path.push(id.0.clone());
            self.events.push_back(IvrEvent::Step {
                step: id.0.clone(),
                verb: step.verb.name(),
            });
            self.exec(step, now);
        }
    }

    fn end_of_flow() -> Outcome {
        Outcome::HungUp {
            reason: "end of flow".to_owned(),
        }
    }

    fn exec(&mut self, step: &Step, now: Instant) {
        let id = step.id.clone();
        match &step.verb {
            Verb::Answer => {
                if self.answered {
                    self.goto(step.next.clone(), Self::end_of_flow());
                } else {
                    self.actions.push_back(Action::Answer);
                    self.state = State::WaitAnswer(id);
                }
            }
            Verb::Play { file, barge_in } => {
                let p = self.emit_prompt(&Prompt::Play(file.clone()));
                self.state = State::WaitPrompt {
                    step: id,
                    id: p,
                    barge_in: *barge_in,
                };
            }
            Verb::Say {
                text,
                language,
                barge_in,
            } => {
                let p = self.emit_prompt(&Prompt::Say {
                    text: text.clone(),
                    language: language.clone(),
                });
                self.state = State::WaitPrompt {
                    step: id,
                    id: p,
                    barge_in: *barge_in,
                };
            }
            Verb::Gather(g) => {
                let prompts = g.prompt.iter().cloned().collect();
                self.begin_collect(
                    id,
                    Collector::Gather(g.clone()),
                    step.sensitive,
                    prompts,
                    now,
                );
            }
            Verb::Menu(m) => {
                let prompts = m.prompt.iter().cloned().collect();
                self.begin_collect(id, Collector::Menu(m.clone()), step.sensitive, prompts, now);
            }
            Verb::Set(vars) => {
                for (k, v) in vars {
                    let value = interpolate(v, &self.vars);
                    if k == "lang" {
                        self.summary.language = value.clone();
                    }
                    self.vars.insert(k.clone(), value);
                }
                self.goto(step.next.clone(), Self::end_of_flow());
            }
            Verb::If {
                when,
                then,
                otherwise,
            } => {
                let target = if self.eval(when) {
                    Some(then.clone())
                } else {
                    otherwise.clone().or_else(|| step.next.clone())
                };
                if let Some(t) = &target {
                    self.route_event(&id, t);
                }
                self.goto(target, Self::end_of_flow());
            }
            Verb::Switch {
                var,
                cases,
                default,
            } => {
                let value = self.vars.get(var).cloned().unwrap_or_default();
                let target = cases
                    .iter()
                    .find(|(v, _)| *v == value)
                    .map(|(_, s)| s.clone())
                    .or_else(|| default.clone())
                    .or_else(|| step.next.clone());
                if let Some(t) = &target {
                    self.route_event(&id, t);
                }
                self.goto(target, Self::end_of_flow());
            }
            Verb::Goto(t) => self.state = State::Run(t.clone()),
            Verb::Enqueue(spec) => {
                self.actions.push_back(Action::Enqueue(EnqueueRequest {
                    queue: spec.queue.clone(),
                    skills: spec
                        .skills
                        .iter()
                        .map(|s| (s.skill.clone(), s.min_level))
                        .collect(),
                    priority: spec.priority,
                    timeout: spec.timeout,
                    vip: self.ctx.caller.vip,
                    language: self.lang(),
                    caller: self.ctx.caller.number.clone(),
                }));
                self.state = State::WaitQueue {
                    step: id,
                    spec: spec.clone(),
                };
            }
            Verb::Transfer(spec) => {
                let to = interpolate(&spec.to, &self.vars);
                self.actions.push_back(Action::Transfer {
                    to: to.clone(),
                    timeout: spec.timeout,
                });
                let mut spec = spec.clone();
                spec.to = to;
                self.state = State::WaitTransfer { step: id, spec };
            }
            Verb::Record(spec) => {
                let path = interpolate_path(&spec.path, &self.vars);
                self.actions.push_back(Action::Record {
                    path: path.clone(),
                    max_duration: spec.max_duration,
                    beep: spec.beep,
                    finish_on_key: spec.finish_on_key,
                });
                self.typeahead.clear();
                self.state = State::Recording {
                    step: id,
                    path,
                    finish_on_key: spec.finish_on_key,
                    deadline: now + spec.max_duration + RECORD_GRACE,
                    stopped: false,
                };
            }
            Verb::RecordCall { start } => {
                self.actions.push_back(Action::RecordCall { start: *start });
                self.goto(step.next.clone(), Self::end_of_flow());
            }
            Verb::Hangup { reason } => {
                let r = reason.clone().unwrap_or_else(|| "hangup".to_owned());
                self.finish(Outcome::HungUp { reason: r.clone() }, Some(r));
            }
        }
    }

    fn begin_collect(
        &mut self,
        step: StepId,
        spec: Collector,
        sensitive: bool,
        prompts: VecDeque<Prompt>,
        now: Instant,
    ) {
        self.actions.push_back(Action::StartDigitCollection);
        let speech = match &spec {
            Collector::Gather(g) => g
                .input
                .contains(&InputKind::Speech)
                .then(|| g.speech.clone()),
            Collector::Menu(m) => m
                .input
                .contains(&InputKind::Speech)
                .then(|| m.speech.clone()),
        };
        let c = Collect {
            step,
            spec,
            sensitive,
            attempt: 1,
            prompts,
            playing: None,
            digits: String::new(),
            deadline: None,
            base: 0,
            speech: speech.map(|spec| {
                Box::new(SpeechState {
                    spec,
                    failures: 0,
                    listening: false,
                    heard: false,
                    confirming: None,
                })
            }),
        };
        self.state = State::Collect(Box::new(c));
        let typeahead = std::mem::take(&mut self.typeahead);
        if typeahead.is_empty() {
            // listen first: the media session then arms barge-in for the prompt that follows
            self.start_listening();
            self.next_prompt(now);
        } else {
            // The caller typed ahead during an earlier prompt: skip this step's prompt.
            if let State::Collect(c) = &mut self.state {
                c.prompts.clear();
            }
            for d in typeahead.chars() {
                if !matches!(self.state, State::Collect(_)) {
                    // The collector completed; keep the rest for the next one.
                    self.push_typeahead(d);
                    continue;
                }
                self.collect_digit(d, now);
            }
            if let State::Collect(c) = &mut self.state {
                if c.deadline.is_none() && c.playing.is_none() {
                    c.deadline = Some(now + Self::wait_after_prompt(c));
                }
            }
        }
    }

    fn push_typeahead(&mut self, d: char) {
        if self.typeahead.len() < MAX_TYPEAHEAD {
            self.typeahead.push(d);
        }
    }

    fn wait_after_prompt(c: &Collect) -> Duration {
        let keys = match &c.spec {
            Collector::Gather(g) if c.digits.is_empty() => g.first_digit_timeout,
            Collector::Gather(g) => g.inter_digit_timeout,
            Collector::Menu(m) => m.timeout,
        };
        match c.speech.as_deref() {
            Some(sp) if sp.listening && c.digits.is_empty() => {
                if sp.heard {
                    sp.spec.max_speech + sp.spec.end_silence + RESULT_WAIT
                } else {
                    Self::no_input_of(c, sp) + NO_INPUT_GRACE
                }
            }
            _ => keys,
        }
    }

    fn no_input_of(c: &Collect, sp: &SpeechState) -> Duration {
        sp.spec.no_input_timeout.unwrap_or(match &c.spec {
            Collector::Gather(g) => g.first_digit_timeout,
            Collector::Menu(m) => m.timeout,
        })
    }

    fn retries_of(c: &Collect) -> u32 {
        match &c.spec {
            Collector::Gather(g) => g.retries,
            Collector::Menu(m) => m.retries,
        }
    }

    fn main_prompt(c: &Collect) -> &[Prompt] {
        match &c.spec {
            Collector::Gather(g) => &g.prompt,
            Collector::Menu(m) => &m.prompt,
        }
    }

    /// The speech turn the current collector wants.
    fn listen_request(&self, c: &Collect, sp: &SpeechState) -> ListenRequest {
        let mut req = ListenRequest {
            step: c.step.0.clone(),
            intents: Vec::new(),
            digits: None,
            yes_no: false,
            barge_in: sp.spec.barge_in,
            end_silence: sp.spec.end_silence,
            max_speech: sp.spec.max_speech,
            no_input: Self::no_input_of(c, sp),
            reject_below: sp.spec.reject,
            language: self.lang(),
            confirmation: sp.confirming.is_some(),
            training: None,
        };
        if sp.confirming.is_some() {
            req.yes_no = true;
            return req;
        }
        req.training.clone_from(&sp.spec.training);
        for i in &sp.spec.intents {
            req.intents.push(ListenIntent {
                name: i.name.clone(),
                phrases: if i.phrases.is_empty() {
                    vec![i.name.replace(['_', '-'], " ")]
                } else {
                    i.phrases.clone()
                },
            });
        }
        for w in &sp.spec.expect {
            match w.to_lowercase().as_str() {
                "yes" | "no" => req.yes_no = true,
                other => req.intents.push(ListenIntent {
                    name: w.clone(),
                    phrases: vec![other.to_owned()],
                }),
            }
        }
        if let Collector::Gather(g) = &c.spec
            && sp.spec.intents.is_empty()
            && sp.spec.expect.is_empty()
        {
            req.digits = Some((g.min_digits.max(1), g.max_digits.max(1)));
        }
        req
    }

    /// Request a speech turn for the collector (if it takes speech and none runs).
    fn start_listening(&mut self) {
        let req = match &self.state {
            State::Collect(c) => match c.speech.as_deref() {
                Some(sp) if !sp.listening => self.listen_request(c, sp),
                _ => return,
            },
            _ => return,
        };
        if let State::Collect(c) = &mut self.state
            && let Some(sp) = c.speech.as_deref_mut()
        {
            sp.listening = true;
            sp.heard = false;
        }
        self.actions
            .push_back(Action::StartListening(Box::new(req)));
    }

    /// End the collector's speech turn, if one runs.
    fn stop_listening(&mut self) {
        if let State::Collect(c) = &mut self.state
            && let Some(sp) = c.speech.as_deref_mut()
            && sp.listening
        {
            sp.listening = false;
            sp.heard = false;
            self.actions.push_back(Action::StopListening);
        }
    }

    fn speech_started(&mut self, now: Instant) {
        let State::Collect(c) = &mut self.state else {
            return;
        };
        let Some(sp) = c.speech.as_deref_mut() else {
            return;
        };
        if !sp.listening || sp.heard {
            return;
        }
        sp.heard = true;
        let barge = sp.spec.barge_in;
        if barge && let Some(id) = c.playing.take() {
            c.prompts.clear();
            self.actions.push_back(Action::StopPlayback { id });
        }
        if c.playing.is_none() {
            c.deadline = Some(now + Self::wait_after_prompt(c));
        }
    }

    fn spoken_meaning(m: &SpeechMeaning) -> String {
        match m {
            SpeechMeaning::Intent(name) => name.replace(['_', '-'], " "),
            SpeechMeaning::Digits(d) => {
                let mut out = String::new();
                for (i, ch) in d.chars().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push(ch);
                }
                out
            }
            SpeechMeaning::Yes => "yes".to_owned(),
            SpeechMeaning::No => "no".to_owned(),
        }
    }

    /// Whether `m` is an answer the collector expects.
    fn expected(c: &Collect, sp: &SpeechState, m: &SpeechMeaning) -> bool {
        let yes_no = sp.spec.expect.iter().any(|w| {
            let w = w.to_lowercase();
            w == "yes" || w == "no"
        });
        match m {
            SpeechMeaning::Intent(name) => {
                sp.spec.intents.iter().any(|i| &i.name == name)
                    || sp.spec.expect.iter().any(|w| w == name)
            }
            SpeechMeaning::Yes | SpeechMeaning::No => yes_no,
            SpeechMeaning::Digits(d) => match &c.spec {
                Collector::Gather(_) => {
                    sp.spec.intents.is_empty() && sp.spec.expect.is_empty() && !d.is_empty()
                }
                Collector::Menu(menu) => {
                    let mut ch = d.chars();
                    matches!((ch.next(), ch.next()), (Some(k), None) if menu.options.contains_key(&k))
                }
            },
        }
    }

    /// Record a judged speech turn (call record + event).
    fn record_speech(
        &mut self,
        transcript: &str,
        meaning: Option<&SpeechMeaning>,
        confidence: f32,
        decision: SpeechDecision,
    ) {
        let State::Collect(c) = &self.state else {
            return;
        };
        let keep = c.speech.as_deref().is_some_and(|sp| sp.spec.keep_digits) && !c.sensitive;
        let transcript = if keep {
            transcript.to_owned()
        } else {
            redact_digits(transcript)
        };
        let meaning = meaning.map(|m| match m {
            SpeechMeaning::Digits(_) if !keep => SpeechMeaning::Digits(DIGITS_REDACTED.to_owned()),
            other => other.clone(),
        });
        let rec = SpeechTurnRecord {
            step: c.step.0.clone(),
            attempt: c.attempt,
            transcript,
            meaning,
            confidence: (f64::from(confidence.clamp(0.0, 1.0)) * 1000.0).round() / 1000.0,
            decision,
        };
        self.vars
            .insert("speech.transcript".to_owned(), rec.transcript.clone());
        self.vars.insert(
            "speech.confidence".to_owned(),
            format!("{:.2}", rec.confidence),
        );
        self.summary.speech.push(rec.clone());
        self.events.push_back(IvrEvent::Speech(rec));
    }

    fn speech_result(&mut self, r: SpeechResult, now: Instant) {
        let State::Collect(c) = &mut self.state else {
            return;
        };
        let Some(sp) = c.speech.as_deref_mut() else {
            return; // fell back to keys: a late result
        };
        if !sp.listening {
            return; // the turn was stopped (a key): a late result
        }
        sp.listening = false;
        sp.heard = false;
        let (accept, reject) = (sp.spec.accept, sp.spec.reject);
        if let Some(p) = sp.confirming.take() {
            let answer = match &r.meaning {
                Some(SpeechMeaning::Yes) if r.confidence >= reject => Some(true),
                Some(SpeechMeaning::No) if r.confidence >= reject => Some(false),
                _ => None,
            };
            let decision = match answer {
                Some(true) => SpeechDecision::Confirmed,
                Some(false) => SpeechDecision::Denied,
                None => SpeechDecision::Rejected,
            };
            self.record_speech(&r.transcript, r.meaning.as_ref(), r.confidence, decision);
            match answer {
                Some(true) => self.speech_accept(p.meaning, now),
                _ => self.speech_fail(decision, now),
            }
            return;
        }
        let Some(m) = r.meaning.clone() else {
            self.record_speech(&r.transcript, None, r.confidence, SpeechDecision::Rejected);
            self.speech_fail(SpeechDecision::Rejected, now);
            return;
        };
        let State::Collect(c) = &self.state else {
            return;
        };
        let Some(sp) = c.speech.as_deref() else {
            return;
        };
        let expected = Self::expected(c, sp, &m);
        let decision = if !expected || r.confidence < reject {
            SpeechDecision::Rejected
        } else if r.confidence >= accept {
            SpeechDecision::Accepted
        } else if sp.spec.confirm == Confirm::Never
            || (matches!(m, SpeechMeaning::Digits(_))
                && sp.spec.confirm == Confirm::Auto
                && (c.sensitive || !sp.spec.keep_digits))
        {
            // reading redacted digits back would put them into the `say` text (and its event)
            SpeechDecision::Rejected
        } else {
            SpeechDecision::Confirm
        };
        self.record_speech(&r.transcript, Some(&m), r.confidence, decision);
        match decision {
            SpeechDecision::Accepted => self.speech_accept(m, now),
            SpeechDecision::Confirm => self.speech_confirm(Pending { meaning: m }, now),
            _ => self.speech_fail(decision, now),
        }
    }

    fn set_speech_vars(&mut self, m: &SpeechMeaning) {
        self.vars
            .insert("speech.meaning".to_owned(), Self::spoken_meaning(m));
        if let SpeechMeaning::Intent(name) = m {
            self.vars.insert("speech.intent".to_owned(), name.clone());
        }
    }

    /// Route an accepted meaning like the equivalent keys.
    fn speech_accept(&mut self, m: SpeechMeaning, now: Instant) {
        self.stop_listening();
        self.set_speech_vars(&m);
        let State::Collect(c) = &mut self.state else {
            return;
        };
        if let Some(id) = c.playing.take() {
            c.prompts.clear();
            self.actions.push_back(Action::StopPlayback { id });
        }
        let State::Collect(c) = &self.state else {
            return;
        };
        let var = match &c.spec {
            Collector::Gather(g) => Some(g.var.clone()),
            Collector::Menu(_) => None,
        };
        match m {
            SpeechMeaning::Digits(d) => match &c.spec {
                Collector::Gather(_) => self.gather_complete(d, now),
                Collector::Menu(_) => {
                    if let Some(k) = d.chars().next() {
                        self.collect_digit(k, now);
                    }
                }
            },
            SpeechMeaning::Intent(name) => {
                let target = c
                    .speech
                    .as_deref()
                    .and_then(|sp| sp.spec.intents.iter().find(|i| i.name == name))
                    .and_then(|i| i.next.clone());
                if let Some(v) = var {
                    self.vars.insert(v, name.clone());
                }
                self.collect_ok(name, target);
            }
            SpeechMeaning::Yes | SpeechMeaning::No => {
                let word = if m == SpeechMeaning::Yes { "yes" } else { "no" };
                if let Some(v) = var {
                    self.vars.insert(v, word.to_owned());
                }
                self.collect_ok(word.to_owned(), None);
            }
        }
    }

    /// Mid confidence: ask, or hand over to the step's explicit confirmation step.
    fn speech_confirm(&mut self, p: Pending, now: Instant) {
        self.set_speech_vars(&p.meaning);
        let State::Collect(c) = &mut self.state else {
            return;
        };
        let Some(sp) = c.speech.as_deref_mut() else {
            return;
        };
        match sp.spec.confirm.clone() {
            Confirm::Step(target) => {
                let step = c.step.clone();
                let State::Collect(_) = std::mem::replace(&mut self.state, State::Done) else {
                    return;
                };
                self.actions.push_back(Action::StopDigitCollection);
                self.route_event(&step, &target);
                self.goto(Some(target), Self::end_of_flow());
            }
            Confirm::Never => self.speech_fail(SpeechDecision::Rejected, now),
            Confirm::Auto => {
                let prompt = if sp.spec.confirm_prompt.is_empty() {
                    vec![builtin_prompt(
                        "Did you say {speech.meaning}?",
                        "您是说{speech.meaning}吗？",
                    )]
                } else {
                    sp.spec.confirm_prompt.clone()
                };
                sp.confirming = Some(p);
                c.prompts = prompt.into();
                c.deadline = None;
                self.start_listening();
                self.next_prompt(now);
            }
        }
    }

    /// A speech attempt failed (not understood, no input, denied): "sorry" and retry, or fall
    /// back to keys after `speech_retries`.
    fn speech_fail(&mut self, why: SpeechDecision, now: Instant) {
        self.stop_listening();
        let State::Collect(c) = &mut self.state else {
            return;
        };
        let step_retries = Self::retries_of(c);
        let Some(sp) = c.speech.as_deref_mut() else {
            return;
        };
        sp.confirming = None;
        sp.failures += 1;
        let speech_retries = sp.spec.retries.unwrap_or(step_retries);
        let fallback = sp.failures > speech_retries;
        let failure = if why == SpeechDecision::NoInput {
            GatherFailure::NoSpeech
        } else {
            GatherFailure::NotUnderstood
        };
        self.events.push_back(IvrEvent::Gather {
            step: c.step.0.clone(),
            attempt: c.attempt,
            digits: None,
            failure: Some(failure),
            last: false,
        });
        if let Some(id) = c.playing.take() {
            self.actions.push_back(Action::StopPlayback { id });
        }
        let dtmf_prompt = c
            .speech
            .as_deref()
            .map(|sp| sp.spec.dtmf_prompt.clone())
            .unwrap_or_default();
        let (notice, user_notice) = match (&c.spec, why) {
            (_, SpeechDecision::Denied) => (None, Vec::new()),
            (Collector::Gather(g), SpeechDecision::NoInput) => (
                Some((
                    "Sorry, I didn't hear anything.",
                    "对不起，我没有听到您的声音。",
                )),
                g.timeout_prompt.clone(),
            ),
            (Collector::Menu(m), SpeechDecision::NoInput) => (
                Some((
                    "Sorry, I didn't hear anything.",
                    "对不起，我没有听到您的声音。",
                )),
                m.timeout_prompt.clone(),
            ),
            (Collector::Gather(g), _) => (
                Some(("Sorry, I didn't catch that.", "对不起，我没有听清楚。")),
                g.invalid_prompt.clone(),
            ),
            (Collector::Menu(m), _) => (
                Some(("Sorry, I didn't catch that.", "对不起，我没有听清楚。")),
                m.invalid_prompt.clone(),
            ),
        };
        let mut prompts: VecDeque<Prompt> = if user_notice.is_empty() {
            notice
                .map(|(en, zh)| builtin_prompt(en, zh))
                .into_iter()
                .collect()
        } else {
            user_notice.into()
        };
        c.attempt += 1;
        c.digits.clear();
        c.deadline = None;
        if fallback {
            let step = c.step.0.clone();
            c.speech = None;
            c.base = c.attempt - 1;
            if dtmf_prompt.is_empty() {
                prompts.push_back(builtin_prompt(
                    "Please use your keypad.",
                    "请使用电话按键。",
                ));
                prompts.extend(Self::main_prompt(c).iter().cloned());
            } else {
                prompts.extend(dtmf_prompt);
            }
            c.prompts = prompts;
            self.events.push_back(IvrEvent::SpeechFallback { step });
        } else {
            prompts.extend(Self::main_prompt(c).iter().cloned());
            c.prompts = prompts;
            self.start_listening();
        }
        self.next_prompt(now);
    }

    /// Play the next queued prompt of the collector, or start the input timer.
    fn next_prompt(&mut self, now: Instant) {
        let prompt = match &mut self.state {
            State::Collect(c) => c.prompts.pop_front(),
            _ => return,
        };
        match prompt {
            Some(p) => {
                let id = self.emit_prompt(&p);
                if let State::Collect(c) = &mut self.state {
                    c.playing = Some(id);
                    c.deadline = None;
                }
            }
            None => {
                if let State::Collect(c) = &mut self.state {
                    c.playing = None;
                    c.deadline = Some(now + Self::wait_after_prompt(c));
                }
            }
        }
    }

    fn collect_digit(&mut self, d: char, now: Instant) {
        let State::Collect(c) = &mut self.state else {
            return;
        };
        // "did you say ...?": 1 = yes, 2 = no
        if let Some(sp) = c.speech.as_deref_mut()
            && let Some(p) = sp.confirming.clone()
        {
            let answer = match d {
                '1' => SpeechMeaning::Yes,
                '2' => SpeechMeaning::No,
                _ => return,
            };
            sp.confirming = None;
            if let Some(id) = c.playing.take() {
                c.prompts.clear();
                self.actions.push_back(Action::StopPlayback { id });
            }
            let yes = answer == SpeechMeaning::Yes;
            let decision = if yes {
                SpeechDecision::Confirmed
            } else {
                SpeechDecision::Denied
            };
            self.record_speech(&format!("key {d}"), Some(&answer), 1.0, decision);
            if yes {
                self.speech_accept(p.meaning, now);
            } else {
                self.speech_fail(SpeechDecision::Denied, now);
            }
            return;
        }
        // a key ends the speech turn: this attempt continues with keys
        self.stop_listening();
        let State::Collect(c) = &mut self.state else {
            return;
        };
        if let Some(id) = c.playing.take() {
            c.prompts.clear();
            self.actions.push_back(Action::StopPlayback { id });
        }
        let State::Collect(c) = &mut self.state else {
            return;
        };
        match &c.spec {
            Collector::Menu(m) => {
                let choice = m.options.get(&d).cloned();
                let digits = d.to_string();
                match choice {
                    Some(target) => self.collect_ok(digits, Some(target)),
                    None => self.collect_fail(GatherFailure::NotAnOption, Some(digits), now),
                }
            }
            Collector::Gather(g) => {
                if g.terminator == Some(d) {
                    let digits = std::mem::take(&mut c.digits);
                    self.gather_complete(digits, now);
                    return;
                }
                c.digits.push(d);
                if c.digits.len() >= g.max_digits {
                    let digits = std::mem::take(&mut c.digits);
                    self.gather_complete(digits, now);
                } else {
                    c.deadline = Some(now + g.inter_digit_timeout);
                }
            }
        }
    }

    fn gather_complete(&mut self, digits: String, now: Instant) {
        let State::Collect(c) = &self.state else {
            return;
        };
        let Collector::Gather(g) = &c.spec else {
            return;
        };
        if digits.len() < g.min_digits {
            let f = if digits.is_empty() {
                GatherFailure::Timeout
            } else {
                GatherFailure::TooShort
            };
            self.collect_fail(
                f,
                if digits.is_empty() {
                    None
                } else {
                    Some(digits)
                },
                now,
            );
        } else if g.validate.as_ref().is_some_and(|r| !r.is_match(&digits)) {
            self.collect_fail(GatherFailure::NoMatch, Some(digits), now);
        } else {
            self.vars.insert(g.var.clone(), digits.clone());
            self.collect_ok(digits, None);
        }
    }

    fn shown(sensitive: bool, digits: &str) -> String {
        if sensitive {
            REDACTED.to_owned()
        } else {
            digits.to_owned()
        }
    }

    fn collect_ok(&mut self, digits: String, menu_target: Option<StepId>) {
        self.stop_listening();
        let State::Collect(c) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        self.actions.push_back(Action::StopDigitCollection);
        let shown = Self::shown(c.sensitive, &digits);
        self.events.push_back(IvrEvent::Gather {
            step: c.step.0.clone(),
            attempt: c.attempt,
            digits: Some(shown.clone()),
            failure: None,
            last: true,
        });
        self.summary.digits.push(CollectedDigits {
            step: c.step.0.clone(),
            digits: shown,
            sensitive: c.sensitive,
        });
        let next = match menu_target {
            Some(t) => {
                self.route_event(&c.step, &t);
                Some(t)
            }
            None => self.step_next(&c.step),
        };
        self.goto(next, Self::end_of_flow());
    }

    fn step_next(&self, id: &StepId) -> Option<StepId> {
        self.plan
            .flow(&self.flow)
            .and_then(|f| f.steps.get(id))
            .and_then(|s| s.next.clone())
    }

    fn collect_fail(&mut self, failure: GatherFailure, digits: Option<String>, now: Instant) {
        self.stop_listening();
        let State::Collect(c) = &mut self.state else {
            return;
        };
        let retries = Self::retries_of(c);
        let last = c.attempt - c.base > retries;
        let shown = digits.map(|d| Self::shown(c.sensitive, &d));
        self.events.push_back(IvrEvent::Gather {
            step: c.step.0.clone(),
            attempt: c.attempt,
            digits: shown,
            failure: Some(failure),
            last,
        });
        if last {
            let step = c.step.clone();
            let fallback = match &c.spec {
                Collector::Gather(g) => g.on_failure.clone(),
                Collector::Menu(m) => m.fallback.clone(),
            };
            self.actions.push_back(Action::StopDigitCollection);
            if let Some(t) = &fallback {
                self.route_event(&step, t);
            }
            self.goto(fallback, Outcome::InputFailed { step: step.0 });
            if self.finished {
                // Replace the generic reason of the hang-up with the outcome's.
                if let Some(Action::Hangup { reason }) = self.actions.back_mut() {
                    *reason = "input failed".to_owned();
                }
            }
            return;
        }
        c.attempt += 1;
        c.digits.clear();
        c.deadline = None;
        let (notice, main) = match &c.spec {
            Collector::Gather(g) => (
                if failure == GatherFailure::Timeout {
                    &g.timeout_prompt
                } else {
                    &g.invalid_prompt
                },
                &g.prompt,
            ),
            Collector::Menu(m) => (
                if failure == GatherFailure::Timeout {
                    &m.timeout_prompt
                } else {
                    &m.invalid_prompt
                },
                &m.prompt,
            ),
        };
        c.prompts = notice.iter().chain(main.iter()).cloned().collect();
        self.start_listening();
        self.next_prompt(now);
    }

    /// Feed an event from the driver.
    pub fn handle_event(&mut self, event: Event, now: Instant, wall: DateTime<Utc>) {
        self.wall = wall;
        if self.finished {
            return;
        }
        if !self.started {
            self.start(now, wall);
        }
        if matches!(event, Event::Answered) {
            self.answered = true;
        }
        if event == Event::CallerHungUp {
            let step = self.summary.path.last().cloned().unwrap_or_default();
            self.finish(Outcome::Abandoned { step }, None);
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Done);
        match (state, event) {
            (State::WaitAnswer(id), Event::Answered) => {
                let next = self.step_next(&id);
                self.goto(next, Self::end_of_flow());
            }
            (State::WaitPrompt { step, id, .. }, Event::PromptFinished(p)) if p == id => {
                let next = self.step_next(&step);
                self.goto(next, Self::end_of_flow());
            }
            (
                State::WaitPrompt {
                    step,
                    id,
                    barge_in: true,
                },
                Event::Dtmf(d),
            ) => {
                self.actions.push_back(Action::StopPlayback { id });
                self.push_typeahead(d);
                let next = self.step_next(&step);
                self.goto(next, Self::end_of_flow());
            }
            (State::Collect(c), Event::PromptFinished(p)) if c.playing == Some(p) => {
                self.state = State::Collect(c);
                self.next_prompt(now);
            }
            (State::Collect(c), Event::Dtmf(d)) => {
                self.state = State::Collect(c);
                self.collect_digit(d, now);
            }
            (State::Collect(c), Event::SpeechStarted) => {
                self.state = State::Collect(c);
                self.speech_started(now);
            }
            (State::Collect(c), Event::SpeechNoInput) => {
                let live = c.speech.as_deref().is_some_and(|sp| sp.listening);
                self.state = State::Collect(c);
                if live {
                    if let State::Collect(c) = &mut self.state
                        && let Some(sp) = c.speech.as_deref_mut()
                    {
                        sp.listening = false; // the driver's turn is over
                    }
                    self.record_speech("", None, 0.0, SpeechDecision::NoInput);
                    self.speech_fail(SpeechDecision::NoInput, now);
                }
            }
            (State::Collect(c), Event::SpeechResult(r)) => {
                self.state = State::Collect(c);
                self.speech_result(r, now);
            }
            (State::WaitQueue { step, spec }, Event::QueueResult(r)) => match r {
                QueueOutcome::Connected { agent } => {
                    self.state = State::WaitQueue {
                        step,
                        spec: spec.clone(),
                    };
                    self.finish(
                        Outcome::Queued {
                            queue: spec.queue,
                            agent,
                        },
                        None,
                    );
                }
                QueueOutcome::Failed { .. } => {
                    if let Some(t) = &spec.on_failure {
                        self.route_event(&step, t);
                    }
                    self.state = State::Run(step.clone());
                    self.goto(spec.on_failure, Outcome::RouteFailed { step: step.0 });
                }
            },
            (State::WaitTransfer { step, spec }, Event::TransferResult(r)) => match r {
                TransferOutcome::Connected => {
                    self.state = State::WaitTransfer {
                        step,
                        spec: spec.clone(),
                    };
                    self.finish(Outcome::Transferred { to: spec.to }, None);
                }
                TransferOutcome::Failed { .. } => {
                    if let Some(t) = &spec.on_failure {
                        self.route_event(&step, t);
                    }
                    self.state = State::Run(step.clone());
                    self.goto(spec.on_failure, Outcome::RouteFailed { step: step.0 });
                }
            },
            (
                State::Recording {
                    step,
                    path,
                    finish_on_key,
                    deadline,
                    stopped,
                },
                Event::Dtmf(d),
            ) => {
                let stop = !stopped && finish_on_key == Some(d);
                if stop {
                    self.actions.push_back(Action::StopRecording);
                }
                self.state = State::Recording {
                    step,
                    path,
                    finish_on_key,
                    deadline,
                    stopped: stopped || stop,
                };
            }
            (State::Recording { step, path, .. }, Event::RecordingFinished { duration }) => {
                self.vars.insert("recording.path".to_owned(), path.clone());
                self.vars.insert(
                    "recording.seconds".to_owned(),
                    duration.as_secs().to_string(),
                );
                self.events.push_back(IvrEvent::Recorded {
                    path,
                    duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                });
                let next = self.step_next(&step);
                self.state = State::Run(step);
                self.goto(next, Self::end_of_flow());
            }
            (state, _) => {
                // Not for this state (late PromptFinished, stray DTMF, ...): ignore.
                self.state = state;
            }
        }
        self.run(now);
    }

    /// Call at or after [`Call::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant, wall: DateTime<Utc>) {
        self.wall = wall;
        if self.finished {
            return;
        }
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::Collect(mut c)
                if c.digits.is_empty() && c.speech.as_deref().is_some_and(|sp| sp.listening) =>
            {
                c.deadline = None;
                let heard = c.speech.as_deref().is_some_and(|sp| sp.heard);
                self.state = State::Collect(c);
                let why = if heard {
                    SpeechDecision::Rejected
                } else {
                    SpeechDecision::NoInput
                };
                self.record_speech("", None, 0.0, why);
                self.speech_fail(why, now);
            }
            State::Collect(mut c) => {
                c.deadline = None;
                let digits = std::mem::take(&mut c.digits);
                let is_gather = matches!(c.spec, Collector::Gather(_));
                self.state = State::Collect(c);
                if is_gather && !digits.is_empty() {
                    self.gather_complete(digits, now);
                } else {
                    self.collect_fail(GatherFailure::Timeout, None, now);
                }
            }
            State::Recording {
                step,
                path,
                finish_on_key,
                stopped,
                ..
            } => {
                if stopped {
                    // The driver never reported the end: move on.
                    let next = self.step_next(&step);
                    self.state = State::Run(step);
                    self.goto(next, Self::end_of_flow());
                } else {
                    self.actions.push_back(Action::StopRecording);
                    self.state = State::Recording {
                        step,
                        path,
                        finish_on_key,
                        deadline: now + RECORD_GRACE,
                        stopped: true,
                    };
                }
            }
            other => self.state = other,
        }
        self.run(now);
    }
}

/// Map of variable names → values, for tests and tooling.
pub type Vars = BTreeMap<String, String>;

/// A built-in prompt in English and Chinese (the call's language picks).
fn builtin_prompt(en: &str, zh: &str) -> Prompt {
    let mut m = BTreeMap::new();
    m.insert("en".to_owned(), en.to_owned());
    m.insert("zh".to_owned(), zh.to_owned());
    Prompt::Say {
        text: Text::PerLanguage(m),
        language: None,
    }
}

const DIGIT_WORDS: &[&str] = &[
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// How many digits a transcript token stands for (`None`: not a digit token).
fn digit_token(tok: &str) -> Option<usize> {
    let core = tok.trim_matches(|c: char| !c.is_alphanumeric());
    if core.is_empty() {
        return None;
    }
    if core
        .chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == '.' || c == ',')
    {
        let n = core.chars().filter(char::is_ascii_digit).count();
        return (n > 0).then_some(n);
    }
    DIGIT_WORDS
        .contains(&core.to_lowercase().as_str())
        .then_some(1)
}

/// Replace every run of digit tokens that holds 2 or more digits ("4 1 5 9", "4159",
/// "four one five nine", "41-59") with [`DIGITS_REDACTED`]; single number words ("one card")
/// stay. Trailing punctuation of the run is kept.
pub fn redact_digits(transcript: &str) -> String {
    let toks: Vec<&str> = transcript.split_whitespace().collect();
    let mut out: Vec<String> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let mut j = i;
        let mut digits = 0;
        while let Some(n) = toks.get(j).and_then(|t| digit_token(t)) {
            digits += n;
            j += 1;
        }
        if j > i && digits >= 2 {
            let last = toks.get(j - 1).copied().unwrap_or_default();
            let tail: String = last
                .chars()
                .rev()
                .take_while(|c| !c.is_alphanumeric())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            out.push(format!("{DIGITS_REDACTED}{tail}"));
            i = j;
        } else if j > i {
            out.extend(
                toks.get(i..j)
                    .unwrap_or_default()
                    .iter()
                    .map(|t| (*t).to_owned()),
            );
            i = j;
        } else {
            out.extend(toks.get(i).map(|t| (*t).to_owned()));
            i += 1;
        }
    }
    out.join(" ")
}
