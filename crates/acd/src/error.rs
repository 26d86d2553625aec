//! The crate's error type.

use crate::AgentStateKind;
use crate::ids::{AgentId, EntryId, QueueId, SkillId};
use thiserror::Error;

/// Everything the core can refuse. On error the core's state is unchanged (apart from timers
/// that were already due at `now`, which always run first).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum AcdError {
    /// An input's `now` is earlier than a previous input's.
    #[error("time went backwards")]
    TimeWentBackwards,
    /// The queue is not configured.
    #[error("unknown {0}")]
    UnknownQueue(QueueId),
    /// The configuration names a queue twice.
    #[error("{0} configured twice")]
    DuplicateQueue(QueueId),
    /// The agent is not logged in.
    #[error("{0} is not logged in")]
    UnknownAgent(AgentId),
    /// The agent is already logged in.
    #[error("{0} is already logged in")]
    AgentAlreadyLoggedIn(AgentId),
    /// The entry is not (or no longer) known.
    #[error("unknown {0}")]
    UnknownEntry(EntryId),
    /// The entry id is already in use.
    #[error("{0} already queued")]
    DuplicateEntry(EntryId),
    /// The agent's state does not allow the input.
    #[error("{agent} is {state:?}: cannot {op}")]
    InvalidAgentState {
        /// The agent.
        agent: AgentId,
        /// Its current state.
        state: AgentStateKind,
        /// What was attempted.
        op: &'static str,
    },
    /// The entry's state or kind does not allow the input.
    #[error("{entry} cannot {op} in its current state")]
    InvalidEntryState {
        /// The entry.
        entry: EntryId,
        /// What was attempted.
        op: &'static str,
    },
    /// A skill level outside 1..=10 (agent proficiency) or 0..=10 (requirement).
    #[error("{skill}: level {level} out of range")]
    InvalidSkillLevel {
        /// The skill.
        skill: SkillId,
        /// The offending level.
        level: u8,
    },
    /// A configuration value is out of range (negative or non-finite duration, bad share, …).
    #[error("invalid configuration value for `{0}`")]
    InvalidConfig(&'static str),
}
