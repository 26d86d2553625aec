//! Configuration (deserialized from the `[acd]` part of `frontdoor.toml`).
//!
//! Durations are plain seconds (`*_s`, floating point) so they read naturally in TOML.

use crate::ids::{QueueId, SkillId};
use serde::{Deserialize, Serialize};

/// A required skill with its minimum level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillReq {
    /// The skill.
    pub skill: SkillId,
    /// Minimum proficiency, 1..=10 (0 means "any level", i.e. no requirement).
    pub min_level: u8,
}

/// A skill an agent holds, with its proficiency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSkill {
    /// The skill.
    pub skill: SkillId,
    /// Proficiency 1..=10.
    pub level: u8,
}

/// How a queue chooses among several free eligible agents for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The agent idle the longest (available since the earliest time).
    #[default]
    LongestIdle,
    /// The highest sum of the agent's levels on the caller's required skills; ties go to the
    /// longest idle.
    BestSkill,
    /// Rotate over the queue's members in login order, starting after the last one offered.
    RoundRobin,
    /// The agent who has taken the fewest calls since login; ties go to the longest idle.
    FewestCalls,
}

/// What an overflow step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OverflowAction {
    /// Widen the entry's requirements: lower every minimum level and/or drop skills.
    Widen {
        /// Subtract this from every minimum level (a level reaching 0 is dropped).
        #[serde(default)]
        lower_levels_by: u8,
        /// Drop these skills from the requirements.
        #[serde(default)]
        drop_skills: Vec<SkillId>,
    },
    /// Move the entry to another queue; it keeps its class and original enqueue time and takes
    /// the target queue's requirements; the target's overflow rules start afresh.
    MoveTo {
        /// Target queue.
        queue: QueueId,
    },
    /// Ask the host to offer the (live) caller a callback; the entry stays queued and becomes a
    /// callback in place if the host sends [`crate::Event::ConvertToCallback`].
    OfferCallback,
    /// Send the (live) caller to voicemail; the entry leaves the queue.
    Voicemail,
}

/// One overflow step, applied once the entry has waited `after_s` in this queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverflowRule {
    /// Seconds since the entry entered this queue.
    pub after_s: f64,
    /// What to do.
    pub action: OverflowAction,
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Its id.
    pub id: QueueId,
    /// Human-readable name (reports only).
    #[serde(default)]
    pub name: String,
    /// Agent-selection strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// Default requirements of entries (an enqueue step may state its own).
    #[serde(default)]
    pub requirements: Vec<SkillReq>,
    /// Wrap-up time after each call, seconds (0: straight back to available).
    #[serde(default)]
    pub wrap_up_s: f64,
    /// Anti-starvation: after waiting this long (and again each further period, up to
    /// `max_promotions` times) an entry moves up one class, keeping its enqueue time.
    #[serde(default)]
    pub promote_after_s: Option<f64>,
    /// Maximum number of anti-starvation promotions per entry.
    #[serde(default = "default_max_promotions")]
    pub max_promotions: u8,
    /// VIP callers are offered only to VIP-designated agents for this many seconds after they
    /// entered the queue, then to everyone eligible.
    #[serde(default)]
    pub vip_reserve_s: Option<f64>,
    /// Announce position and estimated wait to each waiting entry this often.
    #[serde(default)]
    pub announce_every_s: Option<f64>,
    /// Overflow steps, by increasing `after_s`.
    #[serde(default)]
    pub overflow: Vec<OverflowRule>,
}

fn default_max_promotions() -> u8 {
    1
}

impl QueueConfig {
    /// A queue with defaults everywhere.
    pub fn new(id: QueueId) -> Self {
        QueueConfig {
            id,
            name: String::new(),
            strategy: Strategy::default(),
            requirements: Vec::new(),
            wrap_up_s: 0.0,
            promote_after_s: None,
            max_promotions: default_max_promotions(),
            vip_reserve_s: None,
            announce_every_s: None,
            overflow: Vec::new(),
        }
    }
}

/// The whole ACD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcdConfig {
    /// Queues.
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    /// Ring time of an offer before it is withdrawn, seconds (`None`: the host times offers out
    /// itself with [`crate::Event::OfferTimedOut`]).
    #[serde(default = "default_offer_timeout")]
    pub offer_timeout_s: Option<f64>,
    /// Consecutive unanswered/refused offers after which an agent is paused
    /// ([`crate::PauseReason::NoAnswer`]); 0 disables.
    #[serde(default = "default_max_no_answer")]
    pub max_no_answer: u32,
    /// Classes at or above this are VIP (class 0 is regular).
    #[serde(default = "default_vip_class")]
    pub vip_class: u8,
    /// Highest class an anti-starvation promotion may reach.
    #[serde(default = "default_max_class")]
    pub max_class: u8,
    /// Failed attempts after which a queued callback is given up.
    #[serde(default = "default_callback_attempts")]
    pub callback_max_attempts: u32,
    /// Handle time assumed before any call was observed, seconds.
    #[serde(default = "default_handle_prior")]
    pub handle_time_prior_s: f64,
    /// Weight of each newly observed handle time in the moving average (0 < alpha ≤ 1).
    #[serde(default = "default_alpha")]
    pub handle_time_alpha: f64,
}

fn default_offer_timeout() -> Option<f64> {
    Some(15.0)
}
fn default_max_no_answer() -> u32 {
    3
}
fn default_vip_class() -> u8 {
    1
}
fn default_max_class() -> u8 {
    9
}
fn default_callback_attempts() -> u32 {
    3
}
fn default_handle_prior() -> f64 {
    180.0
}
fn default_alpha() -> f64 {
    0.05
}

impl Default for AcdConfig {
    fn default() -> Self {
        AcdConfig {
            queues: Vec::new(),
            offer_timeout_s: default_offer_timeout(),
            max_no_answer: default_max_no_answer(),
            vip_class: default_vip_class(),
            max_class: default_max_class(),
            callback_max_attempts: default_callback_attempts(),
            handle_time_prior_s: default_handle_prior(),
            handle_time_alpha: default_alpha(),
        }
    }
}
