//! The engine's agent desk: owns the sans-IO ACD core ([`frontdoor_acd::Acd`]) together with
//! the agent directory (names ↔ ids, profiles) and queue names, and answers the agent API.
//!
//! It is driven like the cores it wraps: every input comes with `now`, outputs are polled.
//! It runs on the SIP task (the task that owns the calls), so queue and agent state are never
//! shared across threads; the HTTP API reaches it through a channel ([`DeskRequest`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use frontdoor_acd::{
    Acd, AcdConfig, Action, AgentId, AgentProfile, AgentSkill, AgentState, Event, PauseReason,
    QueueId, SkillId, SkillReq, Time, WrapUpCode,
};
use serde::Serialize;
use tokio::sync::oneshot;

/// An agent known to the desk (from the config).
#[derive(Debug, Clone)]
pub struct DeskAgent {
    /// Login name (the API's `{id}`).
    pub name: String,
    /// Skills, queues, VIP designation.
    pub profile: AgentProfile,
}

/// What an agent (or a supervisor on its behalf) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentOp {
    /// Start taking calls.
    Login,
    /// Stop (after the current call).
    Logout,
    /// Pause with a reason code.
    Pause(u32),
    /// Ready: end a pause or wrap-up.
    Ready,
    /// Record a wrap-up code; `end` also finishes wrap-up.
    WrapUp {
        /// Disposition.
        code: Option<u32>,
        /// Finish wrap-up now.
        end: bool,
    },
}

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentView {
    /// Login name.
    pub id: String,
    /// State (`logged_out`, `available`, `offered`, `on_call`, `wrap_up`, `paused`) with its
    /// details.
    #[serde(flatten)]
    pub state: AgentState,
    /// Calls handled since login.
    pub calls: u64,
    /// Queue names served.
    pub queues: Vec<String>,
}

/// A queue as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueView {
    /// Name used by dialplans (`enqueue` `queue = ...`).
    pub name: String,
    /// Callers (and callbacks) waiting.
    pub waiting: usize,
    /// Agents logged in who serve it and are available now.
    pub agents_available: usize,
    /// Agents logged in who serve it.
    pub agents_logged_in: usize,
    /// Moving average of handle time, seconds.
    pub average_handle_time_s: Option<f64>,
}

/// Why a desk request failed (maps to an HTTP status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeskError {
    /// No such agent.
    #[error("no agent named {0:?}")]
    UnknownAgent(String),
    /// The core refused the transition (e.g. ready while logged out).
    #[error("{0}")]
    Refused(String),
    /// The desk is not running (no `[acd]` configured, or shutting down).
    #[error("the ACD is not running")]
    Unavailable,
}

/// A request from the API task.
#[derive(Debug)]
pub enum DeskRequest {
    /// All agents.
    Agents(oneshot::Sender<Vec<AgentView>>),
    /// All queues.
    Queues(oneshot::Sender<Vec<QueueView>>),
    /// Change an agent's state.
    Agent {
        /// Login name.
        name: String,
        /// What to do.
        op: AgentOp,
        /// The agent afterwards.
        reply: oneshot::Sender<Result<AgentView, DeskError>>,
    },
    /// The callbacks API (served by the call side, `calls/callbacks.rs`).
    Callbacks(crate::calls::callbacks::ApiRequest),
}

/// The desk.
#[derive(Debug)]
pub struct Desk {
    acd: Acd,
    epoch: Instant,
    agents: Vec<DeskAgent>,
    by_name: HashMap<String, AgentId>,
    queue_by_name: HashMap<String, QueueId>,
    queue_names: HashMap<QueueId, String>,
    /// Skill names (agents' `skills`, `enqueue` steps' `skills`) ↔ the core's skill ids.
    skill_ids: HashMap<String, SkillId>,
}

/// Level of an agent skill written without one (`"zh"`): fully proficient.
pub const DEFAULT_SKILL_LEVEL: u8 = 10;

/// An agent's skill as written in `[[agents.agent]] skills`: `"zh"` (level
/// [`DEFAULT_SKILL_LEVEL`]) or `"zh:7"` (level 1..=10).
pub fn parse_agent_skill(s: &str) -> Result<(String, u8), String> {
    let (name, level) = match s.split_once(':') {
        None => (s.trim(), DEFAULT_SKILL_LEVEL),
        Some((name, level)) => {
            let level = level
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| (1..=10).contains(l))
                .ok_or_else(|| format!("skill {s:?}: the level after ':' must be 1..=10"))?;
            (name.trim(), level)
        }
    };
    if name.is_empty() {
        return Err(format!("skill {s:?} has no name"));
    }
    Ok((name.to_owned(), level))
}

impl Desk {
    /// A desk over `config`'s queues with `agents` (ids are their positions + 1).
    /// `epoch` is the instant ACD time 0 stands for.
    pub fn new(config: &AcdConfig, agents: Vec<DeskAgent>, epoch: Instant) -> Result<Self, String> {
        let acd = Acd::new(config).map_err(|e| format!("[acd]: {e}"))?;
        let mut by_name = HashMap::new();
        for (i, a) in agents.iter().enumerate() {
            let id = AgentId(u32::try_from(i + 1).map_err(|_| "too many agents".to_string())?);
            if by_name.insert(a.name.clone(), id).is_some() {
                return Err(format!("agent {:?} is configured twice", a.name));
            }
            for q in &a.profile.queues {
                if !config.queues.iter().any(|c| c.id == *q) {
                    return Err(format!("agent {:?} serves unknown {q}", a.name));
                }
            }
        }
        let mut queue_by_name = HashMap::new();
        let mut queue_names = HashMap::new();
        for q in &config.queues {
            if queue_by_name.insert(q.name.clone(), q.id).is_some() {
                return Err(format!("queue name {:?} is used twice", q.name));
            }
            queue_names.insert(q.id, q.name.clone());
        }
        Ok(Desk {
            acd,
            epoch,
            agents,
            by_name,
            queue_by_name,
            queue_names,
            skill_ids: HashMap::new(),
        })
    }

    /// The core's id of skill `name`, allocated on first use (ids are only meaningful within
    /// this desk: names are what configs and dialplans use).
    pub fn skill_id(&mut self, name: &str) -> SkillId {
        let next = SkillId(u32::try_from(self.skill_ids.len() + 1).unwrap_or(u32::MAX));
        *self.skill_ids.entry(name.to_owned()).or_insert(next)
    }

    /// The core's requirements for an `enqueue` step's `skills` (name, minimum level); `None`
    /// (the queue's own requirements) when the step names none. A skill no agent holds gets an
    /// id of its own, so such a caller is never offered (the enqueue refuses it first:
    /// [`Desk::staffed_for`]).
    pub fn requirements(&mut self, skills: &[(String, u8)]) -> Option<Vec<SkillReq>> {
        if skills.is_empty() {
            return None;
        }
        Some(
            skills
                .iter()
                .map(|(name, level)| SkillReq {
                    skill: self.skill_id(name),
                    min_level: (*level).min(10),
                })
                .collect(),
        )
    }

    /// Whether an agent who serves `queue` and meets `reqs` (every skill at its minimum level)
    /// is logged in.
    pub fn staffed_for(&self, queue: QueueId, reqs: &[SkillReq]) -> bool {
        self.agents.iter().enumerate().any(|(i, a)| {
            a.profile.queues.contains(&queue)
                && reqs.iter().all(|r| {
                    r.min_level == 0
                        || a.profile
                            .skills
                            .iter()
                            .any(|s| s.skill == r.skill && s.level >= r.min_level)
                })
                && u32::try_from(i + 1)
                    .is_ok_and(|i| self.acd.agent_state(AgentId(i)) != AgentState::LoggedOut)
        })
    }

    fn time(&self, now: Instant) -> Time {
        Time::from_duration(now.saturating_duration_since(self.epoch))
    }

    /// The core's time of `at` (0 before the desk's epoch).
    pub fn time_at(&self, at: Instant) -> Time {
        self.time(at)
    }

    /// The queue a dialplan names.
    pub fn queue(&self, name: &str) -> Option<QueueId> {
        self.queue_by_name.get(name).copied()
    }

    /// The name of an agent id.
    pub fn agent_name(&self, id: AgentId) -> Option<&str> {
        let i = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.agents.get(i).map(|a| a.name.as_str())
    }

    /// The core (read-only views: entries, positions).
    pub fn acd(&self) -> &Acd {
        &self.acd
    }

    /// The id of the agent with login name `name`.
    pub fn agent_id(&self, name: &str) -> Option<AgentId> {
        self.by_name.get(name).copied()
    }

    /// The name of a queue id.
    pub fn queue_name(&self, id: QueueId) -> Option<&str> {
        self.queue_names.get(&id).map(String::as_str)
    }

    /// Whether any agent who serves `queue` is logged in.
    pub fn staffed(&self, queue: QueueId) -> bool {
        self.agents.iter().enumerate().any(|(i, a)| {
            a.profile.queues.contains(&queue)
                && u32::try_from(i + 1)
                    .is_ok_and(|i| self.acd.agent_state(AgentId(i)) != AgentState::LoggedOut)
        })
    }

    /// The desk of `config`'s `[acd]` and `[[agents.agent]]` (agents serve the queues named by
    /// their `queues`), with the `auto_login` agents logged in; `None` without `[acd]`.
    pub fn from_config(
        config: &crate::config::Config,
        now: Instant,
    ) -> Result<Option<Self>, String> {
        let Some(acd) = &config.acd else {
            return Ok(None);
        };
        let mut agents = Vec::new();
        let mut skill_ids: HashMap<String, SkillId> = HashMap::new();
        for a in &config.agents.agent {
            let mut skills = Vec::new();
            for s in &a.skills {
                let (name, level) =
                    parse_agent_skill(s).map_err(|e| format!("agent {:?}: {e}", a.id))?;
                let next = SkillId(u32::try_from(skill_ids.len() + 1).unwrap_or(u32::MAX));
                let skill = *skill_ids.entry(name).or_insert(next);
                skills.push(AgentSkill { skill, level });
            }
            let mut queues = Vec::new();
            for name in &a.queues {
                let q = acd
                    .queues
                    .iter()
                    .find(|q| q.name == *name)
                    .ok_or_else(|| format!("agent {:?}: no queue named {name:?}", a.id))?;
                queues.push(q.id);
            }
            agents.push(DeskAgent {
                name: a.id.clone(),
                profile: AgentProfile {
                    queues,
                    skills,
                    ..AgentProfile::default()
                },
            });
        }
        let mut desk = Desk::new(acd, agents, now)?;
        desk.skill_ids = skill_ids;
        for a in config.agents.agent.iter().filter(|a| a.auto_login) {
            desk.agent_op(now, &a.id, AgentOp::Login)
                .map_err(|e| format!("auto_login of {:?}: {e}", a.id))?;
        }
        Ok(Some(desk))
    }

    /// The core, for the call side (enqueue, offers).
    pub fn acd_mut(&mut self) -> &mut Acd {
        &mut self.acd
    }

    /// Hands an event to the core at `now`.
    pub fn handle(&mut self, now: Instant, event: Event) -> Result<(), String> {
        let t = self.time(now);
        self.acd.handle(t, event).map_err(|e| e.to_string())
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_deadline().is_some_and(|d| d <= now) {
            // Tick never fails: it has no preconditions.
            let _ = self.handle(now, Event::Tick);
        }
    }

    /// When [`Desk::handle_timeout`] is due next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.acd
            .next_deadline()
            .map(|t| self.epoch + Duration::from_nanos(t.as_nanos()))
    }

    /// The next output of the core.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.acd.poll_action()
    }

    /// Answers an API request. Actions it causes are left for [`Desk::poll_action`].
    pub fn serve(&mut self, now: Instant, req: DeskRequest) {
        match req {
            DeskRequest::Agents(reply) => {
                let _ = reply.send(self.agents());
            }
            DeskRequest::Queues(reply) => {
                let _ = reply.send(self.queues());
            }
            DeskRequest::Agent { name, op, reply } => {
                let _ = reply.send(self.agent_op(now, &name, op));
            }
            // Answered by the call side before it reaches the desk.
            DeskRequest::Callbacks(_) => {}
        }
    }

    /// Applies an agent operation.
    pub fn agent_op(
        &mut self,
        now: Instant,
        name: &str,
        op: AgentOp,
    ) -> Result<AgentView, DeskError> {
        let id = *self
            .by_name
            .get(name)
            .ok_or_else(|| DeskError::UnknownAgent(name.to_owned()))?;
        let profile = || {
            self.agents
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.profile.clone())
                .unwrap_or_default()
        };
        let event = match op {
            AgentOp::Login => Event::AgentLogin {
                agent: id,
                profile: profile(),
            },
            AgentOp::Logout => Event::AgentLogout { agent: id },
            AgentOp::Pause(code) => Event::AgentPause {
                agent: id,
                reason: PauseReason::Code { code },
            },
            AgentOp::Ready => Event::AgentReady { agent: id },
            AgentOp::WrapUp { code, end: true } => Event::WrapUpEnded {
                agent: id,
                code: code.map(WrapUpCode),
            },
            AgentOp::WrapUp {
                code: Some(code),
                end: false,
            } => Event::SetWrapUpCode {
                agent: id,
                code: WrapUpCode(code),
            },
            AgentOp::WrapUp {
                code: None,
                end: false,
            } => {
                return Err(DeskError::Refused(
                    "a wrap-up code or end=true is needed".into(),
                ));
            }
        };
        self.handle(now, event).map_err(DeskError::Refused)?;
        Ok(self.view(id))
    }

    fn view(&self, id: AgentId) -> AgentView {
        let (name, queues) = self
            .agent_name(id)
            .and_then(|n| self.agents.iter().find(|a| a.name == n))
            .map(|a| {
                (
                    a.name.clone(),
                    a.profile
                        .queues
                        .iter()
                        .filter_map(|q| self.queue_names.get(q).cloned())
                        .collect(),
                )
            })
            .unwrap_or_default();
        AgentView {
            id: name,
            state: self.acd.agent_state(id),
            calls: self.acd.agent_calls(id).unwrap_or(0),
            queues,
        }
    }

    /// Every configured agent.
    pub fn agents(&self) -> Vec<AgentView> {
        (1..=self.agents.len())
            .filter_map(|i| u32::try_from(i).ok())
            .map(|i| self.view(AgentId(i)))
            .collect()
    }

    /// Every queue.
    pub fn queues(&self) -> Vec<QueueView> {
        let mut out: Vec<QueueView> = self
            .queue_by_name
            .iter()
            .map(|(name, &q)| {
                let serving = self
                    .agents
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.profile.queues.contains(&q))
                    .filter_map(|(i, _)| u32::try_from(i + 1).ok())
                    .map(|i| self.acd.agent_state(AgentId(i)));
                let (mut logged_in, mut available) = (0, 0);
                for s in serving {
                    if s != AgentState::LoggedOut {
                        logged_in += 1;
                    }
                    if s == AgentState::Available {
                        available += 1;
                    }
                }
                QueueView {
                    name: name.clone(),
                    waiting: self.acd.waiting(q),
                    agents_available: available,
                    agents_logged_in: logged_in,
                    average_handle_time_s: self.acd.average_handle_time(q).map(|d| d.as_secs_f64()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use frontdoor_acd::{AgentStateKind, Enqueue, EntryId};

    pub(crate) fn sample() -> (AcdConfig, Vec<DeskAgent>) {
        let config: AcdConfig = toml::from_str(
            r#"
            offer_timeout_s = 10.0
            [[queues]]
            id = 1
            name = "general"
            [[queues]]
            id = 2
            name = "card_security"
            "#,
        )
        .unwrap();
        let agents = vec![
            DeskAgent {
                name: "alice".into(),
                profile: AgentProfile {
                    queues: vec![QueueId(1), QueueId(2)],
                    ..AgentProfile::default()
                },
            },
            DeskAgent {
                name: "bob".into(),
                profile: AgentProfile {
                    queues: vec![QueueId(1)],
                    ..AgentProfile::default()
                },
            },
        ];
        (config, agents)
    }

    #[test]
    fn login_pause_ready_logout_and_views() {
        let (config, agents) = sample();
        let t0 = Instant::now();
        let mut desk = Desk::new(&config, agents, t0).unwrap();
        assert!(
            desk.agents()
                .iter()
                .all(|a| a.state == AgentState::LoggedOut)
        );
        let a = desk.agent_op(t0, "alice", AgentOp::Login).unwrap();
        assert_eq!(a.state, AgentState::Available);
        assert_eq!(a.queues, vec!["general", "card_security"]);
        let changed: Vec<_> = std::iter::from_fn(|| desk.poll_action()).collect();
        assert!(changed.iter().any(|a| matches!(
            a,
            Action::AgentStateChanged {
                state: AgentState::Available,
                ..
            }
        )));
        let a = desk.agent_op(t0, "alice", AgentOp::Pause(7)).unwrap();
        assert_eq!(a.state.kind(), AgentStateKind::Paused);
        let q = desk.queues();
        assert_eq!(q[0].name, "card_security");
        assert_eq!((q[1].agents_logged_in, q[1].agents_available), (1, 0));
        desk.agent_op(t0, "alice", AgentOp::Ready).unwrap();
        assert_eq!(desk.queues()[1].agents_available, 1);
        assert!(matches!(
            desk.agent_op(t0, "carol", AgentOp::Login),
            Err(DeskError::UnknownAgent(_))
        ));
        // Ready while logged out is refused by the core with a reason.
        assert!(matches!(
            desk.agent_op(t0, "bob", AgentOp::Ready),
            Err(DeskError::Refused(_))
        ));
        desk.agent_op(t0, "alice", AgentOp::Logout).unwrap();
        assert_eq!(desk.agents()[0].state, AgentState::LoggedOut);
    }

    #[test]
    fn an_enqueued_caller_is_offered_and_times_out_on_the_desk_clock() {
        let (config, agents) = sample();
        let t0 = Instant::now();
        let mut desk = Desk::new(&config, agents, t0).unwrap();
        desk.agent_op(t0, "bob", AgentOp::Login).unwrap();
        while desk.poll_action().is_some() {}
        let q = desk.queue("general").unwrap();
        desk.handle(t0, Event::Enqueue(Enqueue::live(EntryId(1), q)))
            .unwrap();
        let offered = std::iter::from_fn(|| desk.poll_action()).any(|a| {
            matches!(
                a,
                Action::Offer {
                    agent: AgentId(2),
                    ..
                }
            )
        });
        assert!(offered, "bob is offered the caller");
        let deadline = desk.next_deadline().unwrap();
        assert_eq!(deadline, t0 + Duration::from_secs(10), "offer timeout");
        desk.handle_timeout(deadline);
        let cancelled = std::iter::from_fn(|| desk.poll_action())
            .any(|a| matches!(a, Action::CancelOffer { .. }));
        assert!(cancelled, "the ring timeout withdraws the offer");
    }

    #[test]
    fn skills_are_parsed_and_map_to_requirements() {
        assert_eq!(parse_agent_skill("zh").unwrap(), ("zh".into(), 10));
        assert_eq!(
            parse_agent_skill(" cards : 3 ").unwrap(),
            ("cards".into(), 3)
        );
        for bad in ["", ":3", "zh:0", "zh:11", "zh:x"] {
            assert!(parse_agent_skill(bad).is_err(), "{bad:?}");
        }
        let config = crate::config::Config::parse(
            "[acd]\n[[acd.queues]]\nid = 1\nname = \"general\"\n\
             [[agents.agent]]\nid = \"en\"\nusername = \"u1\"\npassword = \"p\"\n\
             skills = [\"en\"]\nqueues = [\"general\"]\nauto_login = true\n\
             [[agents.agent]]\nid = \"zh\"\nusername = \"u2\"\npassword = \"p\"\n\
             skills = [\"zh:4\", \"en:2\"]\nqueues = [\"general\"]\nauto_login = true\n",
            "test",
        )
        .unwrap();
        let t0 = Instant::now();
        let mut desk = Desk::from_config(&config, t0).unwrap().unwrap();
        while desk.poll_action().is_some() {}
        let q = desk.queue("general").unwrap();
        assert_eq!(desk.requirements(&[]), None);
        let zh3 = desk.requirements(&[("zh".into(), 3)]).unwrap();
        assert!(desk.staffed_for(q, &zh3));
        let zh5 = desk.requirements(&[("zh".into(), 5)]).unwrap();
        assert!(!desk.staffed_for(q, &zh5), "level 4 is below 5");
        let fr = desk.requirements(&[("fr".into(), 1)]).unwrap();
        assert!(!desk.staffed_for(q, &fr), "nobody has fr");
        // The core offers a zh caller to the zh agent only, although the en agent has been
        // idle longer.
        desk.handle(
            t0,
            Event::Enqueue(Enqueue {
                requirements: Some(zh3),
                ..Enqueue::live(EntryId(1), q)
            }),
        )
        .unwrap();
        let offers: Vec<AgentId> = std::iter::from_fn(|| desk.poll_action())
            .filter_map(|a| match a {
                Action::Offer { agent, .. } => Some(agent),
                _ => None,
            })
            .collect();
        assert_eq!(offers, [desk.agent_id("zh").unwrap()]);
        let bad = crate::config::Config::parse(
            "[acd]\n[[acd.queues]]\nid = 1\nname = \"general\"\n\
             [[agents.agent]]\nid = \"x\"\nusername = \"u1\"\npassword = \"p\"\n\
             skills = [\"zh:42\"]\n",
            "test",
        )
        .unwrap();
        assert!(Desk::from_config(&bad, t0).unwrap_err().contains("1..=10"));
    }

    #[test]
    fn bad_configs_are_refused() {
        let (config, mut agents) = sample();
        agents.push(agents[0].clone());
        assert!(
            Desk::new(&config, agents, Instant::now())
                .unwrap_err()
                .contains("twice")
        );
        let (config, mut agents) = sample();
        agents[1].profile.queues.push(QueueId(9));
        assert!(
            Desk::new(&config, agents, Instant::now())
                .unwrap_err()
                .contains("unknown")
        );
    }
}
