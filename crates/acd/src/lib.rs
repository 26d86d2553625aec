//! Sans-IO ACD core: skill-based queues, VIP priority, agent states, overflow, estimated wait,
//! simulator.
//!
//! The core ([`Acd`]) never reads a clock or does I/O: the host hands it [`Event`]s together
//! with the current [`Time`], and polls [`Action`]s (offer caller X to agent Y, cancel an
//! offer, announce position/estimated wait, …). Timers (ring timeout, wrap-up, anti-starvation,
//! VIP widening, overflow, announcements) are run when the host calls
//! [`Acd::handle`]`(now, Event::Tick)` at [`Acd::next_deadline`]. See `README.md` for the
//! order rule, state diagram, estimated-wait formula and invariants.
//!
//! [`sim`] runs the core in simulated time and compares it with Erlang C / Erlang A.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod engine;
mod error;
mod hash;
mod ids;
mod io;
mod time;

pub mod erlang;
pub mod sim;

pub use config::{
    AcdConfig, AgentSkill, OverflowAction, OverflowRule, QueueConfig, SkillReq, Strategy,
};
pub use engine::Acd;
pub use error::AcdError;
pub use ids::{AgentId, EntryId, QueueId, SkillId, WrapUpCode};
pub use io::{
    Action, AgentProfile, AgentState, AgentStateKind, CancelReason, Enqueue, EntryKind,
    EntryStatus, EntryView, Event, PauseReason,
};
pub use time::Time;
