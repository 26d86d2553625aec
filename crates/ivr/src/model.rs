//! The validated, in-memory form of a dialplan. Built only by the loader (`crate::load`), so
//! every reference in it (step targets, hours names) is known to resolve.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use regex::Regex;

/// Name of a flow inside a dialplan (`[flows.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub String);

/// Name of a step inside a flow (`[flows.F.steps.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepId(pub String);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StepId {
    /// The step name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One loaded dialplan file.
#[derive(Debug, Clone)]
pub struct Dialplan {
    /// `name` from the file, or the file stem.
    pub name: String,
    /// Path the dialplan was loaded from.
    pub source: PathBuf,
    /// Language used when a call has none (`default_language`, default `"en"`).
    pub default_language: String,
    /// Languages the dialplan speaks (`languages`, default `[default_language]`).
    pub languages: Vec<String>,
    /// Routes (`[[route]]`), in file order.
    pub routes: Vec<Route>,
    /// Flows by name.
    pub flows: BTreeMap<FlowId, Flow>,
    /// Opening-hours calendars by name (`[hours.NAME]`).
    pub hours: BTreeMap<String, Hours>,
}

impl Dialplan {
    /// A flow by name.
    pub fn flow(&self, id: &FlowId) -> Option<&Flow> {
        self.flows.get(id)
    }
}

/// A `[[route]]` entry: which dialed numbers/trunks go where.
#[derive(Debug, Clone)]
pub struct Route {
    /// Exact dialed number (Request-URI user part) to match.
    pub number: Option<String>,
    /// Dialed-number prefix to match (longest prefix wins).
    pub prefix: Option<String>,
    /// Only match calls arriving from this trunk (driver's trunk name).
    pub trunk: Option<String>,
    /// The catch-all route for every other number.
    pub default: bool,
    /// What the call runs.
    pub target: RouteTarget,
}

/// What a route leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// Run a flow of this dialplan through the interpreter.
    Flow(FlowId),
    /// A test number handled by the driver itself, without the interpreter.
    Builtin(Builtin),
}

/// Built-in test numbers (`builtin = "..."` in a route). The driver recognises them from
/// [`RouteTarget::Builtin`] and handles the call itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builtin {
    /// Answer and keep the call up until the caller hangs up (silence).
    Answer,
    /// Send 180 Ringing and never answer.
    Ring,
    /// Answer and echo the caller's RTP back.
    Echo,
    /// Answer, collect DTMF digits and report them on the event stream.
    Digits,
    /// Bridge to `to` (a SIP URI) as a B2BUA leg.
    Bridge {
        /// SIP URI of the B leg.
        to: String,
    },
}

/// A flow: named steps and the step it starts with.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Flow name.
    pub id: FlowId,
    /// First step.
    pub start: StepId,
    /// Steps by name.
    pub steps: BTreeMap<StepId, Step>,
}

/// One step of a flow.
#[derive(Debug, Clone)]
pub struct Step {
    /// Step name.
    pub id: StepId,
    /// What the step does.
    pub verb: Verb,
    /// Step that follows when the verb completes normally (`next`). `None` ends the flow with
    /// a hang-up.
    pub next: Option<StepId>,
    /// Digits collected by this step are redacted in logs and call records.
    pub sensitive: bool,
    /// Byte span of the step's name in the source file.
    pub span: Range<usize>,
}

/// Text to speak: one string or one per language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// Same text whatever the language.
    Plain(String),
    /// Text per language code (`{ en = "...", zh = "..." }`).
    PerLanguage(BTreeMap<String, String>),
}

/// One prompt: a file or TTS text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A file under the prompts directory.
    Play(String),
    /// Text for the driver's TTS; `language` overrides the call's language.
    Say {
        /// The text (with `{variables}`).
        text: Text,
        /// Explicit language, else the call's `lang`.
        language: Option<String>,
    },
}

/// Input kinds a gather accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// DTMF digits (RFC 4733 or in-band; the driver decides).
    Dtmf,
    /// Speech: the driver listens (endpointing, barge-in) and recognises against the step's
    /// expectations (see docs/speech-in-calls.md).
    Speech,
}

/// A speech intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// Intent name the recogniser reports.
    pub name: String,
    /// Example phrases / hints for the recogniser.
    pub phrases: Vec<String>,
    /// Step to go to when this intent is recognised (else the step's `next`).
    pub next: Option<StepId>,
}

/// What a mid-confidence result (between `reject` and `accept`) leads to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Confirm {
    /// The interpreter asks "did you say ...?" itself (`confirm_say`/`confirm_play`), yes/no
    /// by speech or 1/2 by key.
    #[default]
    Auto,
    /// No confirmation: treated as not understood.
    Never,
    /// Go to this step (an explicit yes/no step); `speech.intent`/`speech.meaning` are set.
    Step(StepId),
}

/// Speech part of a gather/menu (used when `input` contains `"speech"`).
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechSpec {
    /// Intents to recognise.
    pub intents: Vec<Intent>,
    /// Expected literal answers (e.g. `["yes", "no"]`).
    pub expect: Vec<String>,
    /// Speech (or a key) stops the prompt (`barge_in`, default true).
    pub barge_in: bool,
    /// Silence that ends an utterance (`end_silence`, default 0.8 s).
    pub end_silence: Duration,
    /// Longest utterance (`max_speech`, default 15 s).
    pub max_speech: Duration,
    /// Time to wait for speech after the prompt (`no_input_timeout`; default the step's
    /// `timeout`).
    pub no_input_timeout: Option<Duration>,
    /// Accept a result at or above this confidence (`accept`, default 0.7).
    pub accept: f32,
    /// Reject below this confidence (`reject`, default 0.45); in between: confirm.
    pub reject: f32,
    /// Confirmation of mid-confidence results (`confirm`).
    pub confirm: Confirm,
    /// Prompt of the automatic confirmation (`confirm_say`/`confirm_play`); empty: the
    /// built-in "Did you say {speech.meaning}?".
    pub confirm_prompt: Vec<Prompt>,
    /// Speech attempts after the first before falling back to DTMF (`speech_retries`;
    /// default the step's `retries`).
    pub retries: Option<u32>,
    /// Prompt when falling back to keys (`dtmf_say`/`dtmf_play`); empty: the main prompt.
    pub dtmf_prompt: Vec<Prompt>,
    /// Keep spoken digit strings in transcripts (`keep_digits`, default false: redacted).
    pub keep_digits: bool,
    /// Training data of the step's intent classifier (`training`, a TOML file relative to the
    /// dialplan; see docs/speech.md): resolved path, checked to exist at load.
    pub training: Option<std::path::PathBuf>,
}

impl Default for SpeechSpec {
    fn default() -> Self {
        SpeechSpec {
            intents: Vec::new(),
            expect: Vec::new(),
            barge_in: true,
            end_silence: Duration::from_millis(800),
            max_speech: Duration::from_secs(15),
            no_input_timeout: None,
            accept: 0.7,
            reject: 0.45,
            confirm: Confirm::Auto,
            confirm_prompt: Vec::new(),
            retries: None,
            dtmf_prompt: Vec::new(),
            keep_digits: false,
            training: None,
        }
    }
}

/// `gather`: collect digits into a variable.
#[derive(Debug, Clone)]
pub struct GatherSpec {
    /// Prompts played before/while collecting.
    pub prompt: Vec<Prompt>,
    /// Accepted input kinds.
    pub input: Vec<InputKind>,
    /// Minimum digits for a valid entry.
    pub min_digits: usize,
    /// Collection completes when this many digits are entered.
    pub max_digits: usize,
    /// Key that ends the entry (not included in the digits), e.g. `#`.
    pub terminator: Option<char>,
    /// Time to wait for the first digit after the prompt ends.
    pub first_digit_timeout: Duration,
    /// Time to wait between digits.
    pub inter_digit_timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Prompts played after an invalid entry, before retrying.
    pub invalid_prompt: Vec<Prompt>,
    /// Prompts played after a timeout, before retrying.
    pub timeout_prompt: Vec<Prompt>,
    /// The whole entry must match this regex.
    pub validate: Option<Regex>,
    /// Variable receiving the digits (default: the step name).
    pub var: String,
    /// Step after all attempts failed (else hang up).
    pub on_failure: Option<StepId>,
    /// Speech part (used when `input` contains `"speech"`).
    pub speech: SpeechSpec,
}

/// `menu`: one key → one step.
#[derive(Debug, Clone)]
pub struct MenuSpec {
    /// Prompts.
    pub prompt: Vec<Prompt>,
    /// Accepted input kinds.
    pub input: Vec<InputKind>,
    /// Key → step.
    pub options: BTreeMap<char, StepId>,
    /// Time to wait for a key after the prompt ends.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Prompts after a key that is not an option.
    pub invalid_prompt: Vec<Prompt>,
    /// Prompts after a timeout.
    pub timeout_prompt: Vec<Prompt>,
    /// Step after all attempts failed (else hang up).
    pub fallback: Option<StepId>,
    /// Speech part (used when `input` contains `"speech"`).
    pub speech: SpeechSpec,
}

/// A condition of `if`.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Variable is set, non-empty and not `"false"`/`"0"`.
    Truthy(String),
    /// Variable equals the value.
    Eq(String, String),
    /// Variable differs from the value.
    Ne(String, String),
    /// Variable is one of the values.
    In(String, Vec<String>),
    /// Variable matches the regex.
    Matches(String, Regex),
    /// The named opening hours are open now (not a holiday, within a period).
    Open(String),
    /// Today (in the hours' time zone) is a holiday of the named calendar.
    Holiday(String),
    /// Local time of day is within `[from, to)`; `from > to` spans midnight.
    TimeOfDay {
        /// Time zone of the times.
        timezone: Tz,
        /// Start (inclusive).
        from: NaiveTime,
        /// End (exclusive).
        to: NaiveTime,
    },
    /// All hold.
    All(Vec<Condition>),
    /// Any holds.
    Any(Vec<Condition>),
    /// Does not hold.
    Not(Box<Condition>),
}

/// `enqueue`: hand the call to the ACD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueSpec {
    /// Queue name.
    pub queue: String,
    /// Required skills with minimum levels.
    pub skills: Vec<SkillRequirement>,
    /// ACD priority class: 0 regular, higher classes are served first (0..=255).
    pub priority: u8,
    /// Maximum wait before the ACD gives up (`None`: the queue's own limit).
    pub timeout: Option<Duration>,
    /// Step when the ACD could not connect an agent (else hang up).
    pub on_failure: Option<StepId>,
}

/// A skill the agent must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillRequirement {
    /// Skill name.
    pub skill: String,
    /// Minimum level, 1..=10 (0: any level), as the ACD's `SkillReq`.
    pub min_level: u8,
}

/// `transfer`: bridge to a SIP URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSpec {
    /// SIP URI (with `{variables}`).
    pub to: String,
    /// Ring timeout for the B leg.
    pub timeout: Duration,
    /// Step when the B leg fails (else hang up).
    pub on_failure: Option<StepId>,
}

/// `record`: voicemail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    /// WAV path (with `{variables}`, e.g. `voicemail/{call.id}.wav`).
    pub path: String,
    /// Maximum duration.
    pub max_duration: Duration,
    /// Play a beep before recording.
    pub beep: bool,
    /// Key that ends the recording.
    pub finish_on_key: Option<char>,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Verb {
    /// Answer the call (200 OK); waits for [`crate::Event::Answered`].
    Answer,
    /// Play a prompt file.
    Play {
        /// File under the prompts directory.
        file: String,
        /// A key stops the prompt and is kept as type-ahead for the next gather/menu.
        barge_in: bool,
    },
    /// Speak text through the driver's TTS.
    Say {
        /// Text.
        text: Text,
        /// Explicit language.
        language: Option<String>,
        /// A key stops the prompt and is kept as type-ahead.
        barge_in: bool,
    },
    /// Collect digits.
    Gather(Box<GatherSpec>),
    /// Menu.
    Menu(Box<MenuSpec>),
    /// Set variables (values interpolate `{variables}`).
    Set(Vec<(String, String)>),
    /// Branch on a condition.
    If {
        /// Condition.
        when: Condition,
        /// Step when true.
        then: StepId,
        /// Step when false (else `next`).
        otherwise: Option<StepId>,
    },
    /// Branch on a variable's value.
    Switch {
        /// Variable name.
        var: String,
        /// Value → step.
        cases: Vec<(String, StepId)>,
        /// Step when no case matches (else `next`).
        default: Option<StepId>,
    },
    /// Jump.
    Goto(StepId),
    /// Hand to the ACD.
    Enqueue(EnqueueSpec),
    /// Bridge to a SIP URI.
    Transfer(TransferSpec),
    /// Record voicemail.
    Record(RecordSpec),
    /// Start (`true`) or stop the stereo call recording (the server's `[recording]`).
    RecordCall {
        /// Start, or stop.
        start: bool,
    },
    /// Hang up.
    Hangup {
        /// Reason logged in the call record.
        reason: Option<String>,
    },
}

impl Verb {
    /// The verb's name as written in dialplans.
    pub fn name(&self) -> &'static str {
        match self {
            Verb::Answer => "answer",
            Verb::Play { .. } => "play",
            Verb::Say { .. } => "say",
            Verb::Gather(_) => "gather",
            Verb::Menu(_) => "menu",
            Verb::Set(_) => "set",
            Verb::If { .. } => "if",
            Verb::Switch { .. } => "switch",
            Verb::Goto(_) => "goto",
            Verb::Enqueue(_) => "enqueue",
            Verb::Transfer(_) => "transfer",
            Verb::Record(_) => "record",
            Verb::RecordCall { .. } => "record_call",
            Verb::Hangup { .. } => "hangup",
        }
    }

    /// Whether the step waits for caller input (breaks goto loops).
    pub fn takes_input(&self) -> bool {
        matches!(self, Verb::Gather(_) | Verb::Menu(_) | Verb::Record(_))
    }
}

/// Opening hours with a time zone and holidays.
#[derive(Debug, Clone)]
pub struct Hours {
    /// Time zone of the periods and holidays.
    pub timezone: Tz,
    /// Open periods per weekday (index 0 = Monday).
    pub weekly: [Vec<(NaiveTime, NaiveTime)>; 7],
    /// Closed all day on these local dates.
    pub holidays: Vec<NaiveDate>,
}

impl Hours {
    /// Whether open at the UTC instant.
    pub fn is_open(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::Datelike;
        let local = now.with_timezone(&self.timezone);
        if self.holidays.contains(&local.date_naive()) {
            return false;
        }
        let day = local.weekday().num_days_from_monday() as usize;
        let t = local.time();
        self.weekly
            .get(day)
            .is_some_and(|periods| periods.iter().any(|(from, to)| *from <= t && t < *to))
    }

    /// Whether the local date at the UTC instant is a holiday.
    pub fn is_holiday(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        let local = now.with_timezone(&self.timezone);
        self.holidays.contains(&local.date_naive())
    }
}
