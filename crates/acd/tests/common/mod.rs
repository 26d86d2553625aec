//! Shared test harness.
#![allow(dead_code, clippy::unwrap_used)]

use frontdoor_acd::*;

pub fn t(s: f64) -> Time {
    Time::from_secs_f64(s)
}

pub fn req(skill: u32, min_level: u8) -> SkillReq {
    SkillReq {
        skill: SkillId(skill),
        min_level,
    }
}

pub fn sk(skill: u32, level: u8) -> AgentSkill {
    AgentSkill {
        skill: SkillId(skill),
        level,
    }
}

pub const Q1: QueueId = QueueId(1);
pub const Q2: QueueId = QueueId(2);

pub fn base_config(queues: Vec<QueueConfig>) -> AcdConfig {
    AcdConfig {
        queues,
        offer_timeout_s: Some(15.0),
        max_no_answer: 2,
        ..AcdConfig::default()
    }
}

#[derive(Debug)]
pub struct H {
    pub acd: Acd,
    pub log: Vec<Action>,
}

impl H {
    pub fn new(cfg: AcdConfig) -> Self {
        let mut acd = Acd::new(&cfg).unwrap();
        acd.set_self_check(true);
        H {
            acd,
            log: Vec::new(),
        }
    }

    /// Handles an event, returns the actions it produced; audits invariants.
    pub fn ev(&mut self, now: f64, e: Event) -> Vec<Action> {
        self.acd.handle(t(now), e).unwrap();
        self.collect()
    }

    pub fn try_ev(&mut self, now: f64, e: Event) -> Result<Vec<Action>, AcdError> {
        let r = self.acd.handle(t(now), e);
        let a = self.collect();
        r.map(|()| a)
    }

    /// Like `try_ev`, but also returns the actions produced on error (by timers that ran first).
    pub fn try_ev_all(&mut self, now: f64, e: Event) -> (Result<(), AcdError>, Vec<Action>) {
        let r = self.acd.handle(t(now), e);
        (r, self.collect())
    }

    fn collect(&mut self) -> Vec<Action> {
        let a: Vec<Action> = self.acd.drain_actions().collect();
        self.log.extend(a.iter().cloned());
        self.acd.audit().unwrap();
        a
    }

    pub fn tick(&mut self, now: f64) -> Vec<Action> {
        self.ev(now, Event::Tick)
    }

    pub fn login(
        &mut self,
        now: f64,
        agent: u32,
        skills: Vec<AgentSkill>,
        queues: Vec<QueueId>,
        vip: bool,
    ) -> Vec<Action> {
        self.ev(
            now,
            Event::AgentLogin {
                agent: AgentId(agent),
                profile: AgentProfile {
                    skills,
                    queues,
                    vip,
                },
            },
        )
    }

    pub fn enqueue(&mut self, now: f64, entry: u64, queue: QueueId, class: u8) -> Vec<Action> {
        self.ev(
            now,
            Event::Enqueue(Enqueue {
                class,
                ..Enqueue::live(EntryId(entry), queue)
            }),
        )
    }

    pub fn enqueue_req(
        &mut self,
        now: f64,
        entry: u64,
        queue: QueueId,
        reqs: Vec<SkillReq>,
    ) -> Vec<Action> {
        self.ev(
            now,
            Event::Enqueue(Enqueue {
                requirements: Some(reqs),
                ..Enqueue::live(EntryId(entry), queue)
            }),
        )
    }

    pub fn accept(&mut self, now: f64, agent: u32, entry: u64) -> Vec<Action> {
        self.ev(
            now,
            Event::OfferAccepted {
                agent: AgentId(agent),
                entry: EntryId(entry),
            },
        )
    }

    pub fn end(&mut self, now: f64, agent: u32) -> Vec<Action> {
        self.ev(
            now,
            Event::CallEnded {
                agent: AgentId(agent),
            },
        )
    }

    /// Accept then end immediately (agent goes to wrap-up or available).
    pub fn serve(&mut self, now: f64, agent: u32, entry: u64) -> Vec<Action> {
        self.accept(now, agent, entry);
        self.end(now, agent)
    }

    pub fn state(&self, agent: u32) -> AgentState {
        self.acd.agent_state(AgentId(agent))
    }
}

/// The (entry, agent) pairs offered in `actions`.
pub fn offers(actions: &[Action]) -> Vec<(u64, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Offer { entry, agent, .. } => Some((entry.0, agent.0)),
            _ => None,
        })
        .collect()
}
