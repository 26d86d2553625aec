//! Inputs ([`Event`]) and outputs ([`Action`]) of the core, and the public state views.

use crate::config::{AgentSkill, SkillReq};
use crate::ids::{AgentId, EntryId, QueueId, WrapUpCode};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a queued entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    /// A caller on the line.
    Live,
    /// A queued callback: when offered, the agent calls the customer back.
    Callback {
        /// Failed attempts so far.
        attempts: u32,
    },
}

/// Why an agent is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PauseReason {
    /// Paused by the core after `max_no_answer` consecutive unanswered offers.
    NoAnswer,
    /// Paused by the agent/supervisor with a site-defined reason code.
    Code {
        /// The reason code.
        code: u32,
    },
}

/// An agent's state (the public view).
///
/// ```text
///  LoggedOut --login--> Available --offer--> Offered --accept--> OnCall --call ended--> WrapUp
///      ^                 ^  |  ^                |                    |                    |
///      |                 |  |  +--refuse/timeout/abandon-------------+ (pending pause/    |
///      +----logout-------+  |                                          logout applied     |
///                        |  +--pause--> Paused --ready--> Available    after wrap-up)     |
///                        +---------------- wrap-up timer / wrap-up ended / ready ---------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentState {
    /// Not logged in.
    LoggedOut,
    /// Waiting for a call.
    Available,
    /// Ringing with an offer of `entry`.
    Offered {
        /// The entry offered.
        entry: EntryId,
    },
    /// Talking with (or calling back) `entry`.
    OnCall {
        /// The entry being served.
        entry: EntryId,
    },
    /// After-call work; ends by timer, [`Event::WrapUpEnded`] or [`Event::AgentReady`].
    WrapUp {
        /// Disposition code, once given.
        code: Option<WrapUpCode>,
    },
    /// Paused; ends with [`Event::AgentReady`] or logout.
    Paused {
        /// Why.
        reason: PauseReason,
    },
}

/// The variant of an [`AgentState`] without payload (for errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStateKind {
    /// See [`AgentState::LoggedOut`].
    LoggedOut,
    /// See [`AgentState::Available`].
    Available,
    /// See [`AgentState::Offered`].
    Offered,
    /// See [`AgentState::OnCall`].
    OnCall,
    /// See [`AgentState::WrapUp`].
    WrapUp,
    /// See [`AgentState::Paused`].
    Paused,
}

impl AgentState {
    /// The variant.
    pub fn kind(&self) -> AgentStateKind {
        match self {
            AgentState::LoggedOut => AgentStateKind::LoggedOut,
            AgentState::Available => AgentStateKind::Available,
            AgentState::Offered { .. } => AgentStateKind::Offered,
            AgentState::OnCall { .. } => AgentStateKind::OnCall,
            AgentState::WrapUp { .. } => AgentStateKind::WrapUp,
            AgentState::Paused { .. } => AgentStateKind::Paused,
        }
    }
}

/// What an agent brings at login.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentProfile {
    /// Skills with proficiency 1..=10.
    pub skills: Vec<AgentSkill>,
    /// Queues the agent serves.
    pub queues: Vec<QueueId>,
    /// VIP-designated (receives reserved VIP callers).
    #[serde(default)]
    pub vip: bool,
}

/// A new entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueue {
    /// Host-chosen id, unique among live entries.
    pub entry: EntryId,
    /// Queue to join.
    pub queue: QueueId,
    /// Priority class: 0 regular, higher VIP tiers (served first).
    pub class: u8,
    /// Live caller or callback.
    pub kind: EntryKind,
    /// Requirements of this enqueue step; `None` takes the queue's.
    pub requirements: Option<Vec<SkillReq>>,
    /// When the customer first entered the queue, if earlier than now (e.g. a callback created
    /// after the call ended keeps the caller's place); `None` means now.
    pub enqueued_at: Option<Time>,
}

impl Enqueue {
    /// A regular live caller with the queue's requirements.
    pub fn live(entry: EntryId, queue: QueueId) -> Self {
        Enqueue {
            entry,
            queue,
            class: 0,
            kind: EntryKind::Live,
            requirements: None,
            enqueued_at: None,
        }
    }
}

/// An input to the core. Every input is handed in together with `now`
/// ([`crate::Acd::handle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Timers only (offer timeouts, wrap-up ends, promotions, VIP widening, overflow,
    /// announcements). Call at [`crate::Acd::next_deadline`].
    Tick,
    /// A caller (or callback) joins a queue.
    Enqueue(Enqueue),
    /// The caller hung up while waiting or ringing (or a queued callback was cancelled).
    Abandon {
        /// The entry.
        entry: EntryId,
    },
    /// The host agrees to turn a waiting live caller into a queued callback in place (it keeps
    /// its enqueue time and class). Refused unless the entry is a live caller and waiting (not
    /// ringing or in service).
    ConvertToCallback {
        /// The entry.
        entry: EntryId,
    },
    /// An agent logs in; it becomes available.
    AgentLogin {
        /// The agent.
        agent: AgentId,
        /// Skills, queues, VIP designation.
        profile: AgentProfile,
    },
    /// An agent logs out; immediate unless on a call (then after the call, skipping wrap-up
    /// timer once it ends). An outstanding offer is withdrawn and the caller keeps its place.
    AgentLogout {
        /// The agent.
        agent: AgentId,
    },
    /// An agent pauses; immediate from available/offered/wrap-up/paused, after the call from
    /// on-call.
    AgentPause {
        /// The agent.
        agent: AgentId,
        /// Why.
        reason: PauseReason,
    },
    /// An agent is ready: ends a pause or wrap-up, or cancels a pending pause.
    AgentReady {
        /// The agent.
        agent: AgentId,
    },
    /// The agent answered the offer.
    OfferAccepted {
        /// The agent.
        agent: AgentId,
        /// The entry offered.
        entry: EntryId,
    },
    /// The agent declined the offer; the entry keeps its place.
    OfferRefused {
        /// The agent.
        agent: AgentId,
        /// The entry offered.
        entry: EntryId,
    },
    /// The host's ring timer expired; the entry keeps its place.
    OfferTimedOut {
        /// The agent.
        agent: AgentId,
        /// The entry offered.
        entry: EntryId,
    },
    /// The agent's call ended; the entry leaves, the agent goes to wrap-up.
    CallEnded {
        /// The agent.
        agent: AgentId,
    },
    /// A callback attempt found nobody; the entry goes back to its place (or is given up after
    /// `callback_max_attempts`), the agent goes to wrap-up.
    CallbackFailed {
        /// The agent.
        agent: AgentId,
    },
    /// The agent records a disposition code during wrap-up (wrap-up continues).
    SetWrapUpCode {
        /// The agent.
        agent: AgentId,
        /// Disposition.
        code: WrapUpCode,
    },
    /// The agent finished wrap-up (optionally with a code).
    WrapUpEnded {
        /// The agent.
        agent: AgentId,
        /// Disposition.
        code: Option<WrapUpCode>,
    },
}

/// Why an offer was withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Ring timeout.
    Timeout,
    /// The caller hung up.
    Abandoned,
    /// The agent paused or logged out.
    AgentLeft,
}

/// An output of the core, polled with [`crate::Acd::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ring `agent` with `entry` (for a callback: let the agent call the customer).
    Offer {
        /// The entry.
        entry: EntryId,
        /// The agent.
        agent: AgentId,
        /// The entry's queue.
        queue: QueueId,
        /// Live or callback.
        kind: EntryKind,
    },
    /// Stop ringing.
    CancelOffer {
        /// The entry.
        entry: EntryId,
        /// The agent.
        agent: AgentId,
        /// Why.
        reason: CancelReason,
    },
    /// Tell the caller where it stands.
    Announce {
        /// The entry.
        entry: EntryId,
        /// 1 = next.
        position: usize,
        /// Estimated wait (`None` when nobody who could serve it is staffed).
        estimated_wait: Option<Duration>,
    },
    /// Anti-starvation moved the entry up a class.
    Promoted {
        /// The entry.
        entry: EntryId,
        /// Its new class.
        class: u8,
    },
    /// Overflow widened the entry's requirements.
    Widened {
        /// The entry.
        entry: EntryId,
    },
    /// Overflow moved the entry to another queue.
    Moved {
        /// The entry.
        entry: EntryId,
        /// Old queue.
        from: QueueId,
        /// New queue.
        to: QueueId,
    },
    /// Overflow: propose a callback to the caller (answer with [`Event::ConvertToCallback`]).
    OfferCallback {
        /// The entry.
        entry: EntryId,
    },
    /// Overflow: route the caller to voicemail; the entry has left.
    Voicemail {
        /// The entry.
        entry: EntryId,
    },
    /// A callback failed `callback_max_attempts` times; the entry has left.
    CallbackExhausted {
        /// The entry.
        entry: EntryId,
    },
    /// An agent changed state.
    AgentStateChanged {
        /// The agent.
        agent: AgentId,
        /// New state.
        state: AgentState,
    },
}

/// Public view of a known entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryView {
    /// Current queue.
    pub queue: QueueId,
    /// Current (possibly promoted) class.
    pub class: u8,
    /// Original enqueue time.
    pub enqueued_at: Time,
    /// Live or callback.
    pub kind: EntryKind,
    /// Waiting, offered or being served.
    pub status: EntryStatus,
}

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EntryStatus {
    /// In the queue.
    Waiting,
    /// Ringing at an agent.
    Offered {
        /// The agent.
        agent: AgentId,
    },
    /// With an agent.
    InService {
        /// The agent.
        agent: AgentId,
    },
}
