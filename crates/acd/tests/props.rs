//! Stateful property tests: random operation sequences against the core, checking after every
//! step that
//! - no agent is offered/on-call/wrap-up without a caller or a timer that will release it,
//! - no entry is lost or duplicated,
//! - no agent takes an entry while an eligible entry ahead of it in the order waits
//!   (checked at every offer; this covers callbacks never overtaking entries ahead),
//! - a callback the host takes out for its retry delay (or a reschedule) and puts back, as
//!   the server does, comes back with its original enqueue time and class: its place, and no
//!   better one, so with the offer check above it never overtakes an entry ahead of it,
//! - idle agents never coexist with entries they could take.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use frontdoor_acd::{Strategy as Strat, *};
use proptest::prelude::*;
use proptest::strategy::Strategy as PropStrategy;
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        queue: u8,
        class: u8,
        callback: bool,
        reqs: u8,
        back: u8,
    },
    Abandon(u8),
    Convert(u8),
    Login {
        agent: u8,
        skills: u8,
        queues: u8,
        vip: bool,
    },
    Logout(u8),
    Pause(u8),
    Ready(u8),
    Accept(u8),
    Refuse(u8),
    TimedOut(u8),
    End(u8),
    CallbackFailed(u8),
    /// The server's retry delay / reschedule: a waiting callback leaves (`Abandon`) and is
    /// enqueued again later with its original enqueue time, class and attempts.
    RetryLater(u8, u8),
    WrapUpEnded(u8),
    SetCode(u8),
    Advance(u16),
}

fn op() -> impl PropStrategy<Value = Op> {
    prop_oneof![
        4 => (0..2u8, 0..3u8, any::<bool>(), 0..4u8, 0..3u8)
            .prop_map(|(queue, class, callback, reqs, back)| Op::Enqueue { queue, class, callback, reqs, back }),
        1 => any::<u8>().prop_map(Op::Abandon),
        1 => any::<u8>().prop_map(Op::Convert),
        2 => (0..6u8, 0..4u8, 1..4u8, any::<bool>())
            .prop_map(|(agent, skills, queues, vip)| Op::Login { agent, skills, queues, vip }),
        1 => (0..6u8).prop_map(Op::Logout),
        1 => (0..6u8).prop_map(Op::Pause),
        2 => (0..6u8).prop_map(Op::Ready),
        4 => (0..6u8).prop_map(Op::Accept),
        1 => (0..6u8).prop_map(Op::Refuse),
        1 => (0..6u8).prop_map(Op::TimedOut),
        3 => (0..6u8).prop_map(Op::End),
        1 => (0..6u8).prop_map(Op::CallbackFailed),
        2 => (any::<u8>(), 0..40u8).prop_map(|(i, d)| Op::RetryLater(i, d)),
        1 => (0..6u8).prop_map(Op::WrapUpEnded),
        1 => (0..6u8).prop_map(Op::SetCode),
        3 => (0..400u16).prop_map(Op::Advance),
    ]
}

fn config(strategies: (u8, u8)) -> AcdConfig {
    let strat = |i: u8| {
        [
            Strat::LongestIdle,
            Strat::BestSkill,
            Strat::RoundRobin,
            Strat::FewestCalls,
        ][usize::from(i % 4)]
    };
    let mut q1 = QueueConfig::new(Q1);
    q1.strategy = strat(strategies.0);
    q1.requirements = vec![req(1, 3)];
    q1.wrap_up_s = 5.0;
    q1.promote_after_s = Some(20.0);
    q1.max_promotions = 2;
    q1.vip_reserve_s = Some(8.0);
    q1.announce_every_s = Some(15.0);
    q1.overflow = vec![
        OverflowRule {
            after_s: 10.0,
            action: OverflowAction::Widen {
                lower_levels_by: 2,
                drop_skills: vec![],
            },
        },
        OverflowRule {
            after_s: 25.0,
            action: OverflowAction::OfferCallback,
        },
        OverflowRule {
            after_s: 30.0,
            action: OverflowAction::MoveTo { queue: Q2 },
        },
    ];
    let mut q2 = QueueConfig::new(Q2);
    q2.strategy = strat(strategies.1);
    q2.wrap_up_s = 0.0;
    q2.promote_after_s = Some(15.0);
    q2.overflow = vec![
        OverflowRule {
            after_s: 12.0,
            action: OverflowAction::Widen {
                lower_levels_by: 0,
                drop_skills: vec![SkillId(2)],
            },
        },
        OverflowRule {
            after_s: 50.0,
            action: OverflowAction::Voicemail,
        },
    ];
    let mut cfg = base_config(vec![q1, q2]);
    cfg.offer_timeout_s = Some(6.0);
    cfg.max_no_answer = 2;
    cfg.max_class = 3;
    cfg.callback_max_attempts = 2;
    cfg
}

const REQS: [&[(u32, u8)]; 4] = [&[], &[(1, 5)], &[(1, 2), (2, 6)], &[(2, 3)]];
const SKILLS: [&[(u32, u8)]; 4] = [&[(1, 5)], &[(1, 9), (2, 7)], &[(2, 4)], &[(1, 3), (2, 9)]];

struct Model {
    h: H,
    now: f64,
    next_entry: u64,
    live: BTreeSet<u64>,
    /// Callbacks out of the queue for their retry delay: (back at, entry, view).
    parked: Vec<(f64, EntryId, EntryView)>,
}

impl Model {
    fn agent(&self, a: u8) -> AgentId {
        AgentId(u32::from(a))
    }

    fn pick(&self, i: u8) -> EntryId {
        let v: Vec<u64> = self.live.iter().copied().collect();
        if v.is_empty() {
            EntryId(9999)
        } else {
            EntryId(v[usize::from(i) % v.len()])
        }
    }

    /// Puts parked callbacks whose delay passed back at their original place.
    fn unpark(&mut self) {
        let now = self.now;
        let due: Vec<_> = self.parked.iter().filter(|p| p.0 <= now).cloned().collect();
        self.parked.retain(|p| p.0 > now);
        for (_, entry, view) in due {
            let attempts = match view.kind {
                EntryKind::Callback { attempts } => attempts,
                EntryKind::Live => 0,
            };
            let actions = self.h.ev(
                now,
                Event::Enqueue(Enqueue {
                    entry,
                    queue: view.queue,
                    class: view.class,
                    kind: EntryKind::Callback { attempts },
                    requirements: None,
                    enqueued_at: Some(view.enqueued_at),
                }),
            );
            assert!(self.live.insert(entry.0), "{entry} came back twice");
            self.account(&actions);
            if let Some(back) = self.h.acd.entry(entry) {
                assert_eq!(back.enqueued_at, view.enqueued_at, "kept its enqueue time");
                assert!(back.class >= view.class, "kept its class");
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        if let Op::RetryLater(i, delay) = *op {
            let entry = self.pick(i);
            let Some(view) = self.h.acd.entry(entry) else {
                return;
            };
            if !matches!(view.kind, EntryKind::Callback { .. })
                || view.status != EntryStatus::Waiting
            {
                return;
            }
            let actions = self.h.ev(self.now, Event::Abandon { entry });
            self.live.remove(&entry.0);
            self.account(&actions);
            self.parked
                .push((self.now + f64::from(delay) / 2.0, entry, view));
            return;
        }
        if let Op::Advance(ds) = *op {
            // Timers first (as the server's clock runs them), then the callbacks due back.
            self.now += f64::from(ds) / 10.0;
            let (_, actions) = self.h.try_ev_all(self.now, Event::Tick);
            self.account(&actions);
            self.unpark();
            let engine: BTreeSet<u64> = self.h.acd.entries().map(|e| e.0).collect();
            assert_eq!(engine, self.live, "entries lost or duplicated after {op:?}");
            return;
        }
        let now = self.now;
        let ev = match *op {
            Op::Advance(_) | Op::RetryLater(..) => return,
            Op::Enqueue {
                queue,
                class,
                callback,
                reqs,
                back,
            } => {
                self.next_entry += 1;
                let reqs = (reqs > 0).then(|| {
                    REQS[usize::from(reqs)]
                        .iter()
                        .map(|&(s, l)| req(s, l))
                        .collect()
                });
                Event::Enqueue(Enqueue {
                    entry: EntryId(self.next_entry),
                    queue: if queue == 0 { Q1 } else { Q2 },
                    class,
                    kind: if callback {
                        EntryKind::Callback { attempts: 0 }
                    } else {
                        EntryKind::Live
                    },
                    requirements: reqs,
                    enqueued_at: Some(t((now - f64::from(back) * 3.0).max(0.0))),
                })
            }
            Op::Abandon(i) => Event::Abandon {
                entry: self.pick(i),
            },
            Op::Convert(i) => Event::ConvertToCallback {
                entry: self.pick(i),
            },
            Op::Login {
                agent,
                skills,
                queues,
                vip,
            } => {
                let qs = [(1u8, Q1), (2u8, Q2)]
                    .iter()
                    .filter(|(b, _)| queues & b != 0)
                    .map(|(_, q)| *q)
                    .collect();
                let skills = SKILLS[usize::from(skills)]
                    .iter()
                    .map(|&(s, l)| sk(s, l))
                    .collect();
                Event::AgentLogin {
                    agent: self.agent(agent),
                    profile: AgentProfile {
                        skills,
                        queues: qs,
                        vip,
                    },
                }
            }
            Op::Logout(a) => Event::AgentLogout {
                agent: self.agent(a),
            },
            Op::Pause(a) => Event::AgentPause {
                agent: self.agent(a),
                reason: PauseReason::Code { code: 1 },
            },
            Op::Ready(a) => Event::AgentReady {
                agent: self.agent(a),
            },
            Op::Accept(a) | Op::Refuse(a) | Op::TimedOut(a) => {
                let agent = self.agent(a);
                let entry = match self.h.acd.agent_state(agent) {
                    AgentState::Offered { entry } => entry,
                    _ => EntryId(9999),
                };
                match op {
                    Op::Accept(_) => Event::OfferAccepted { agent, entry },
                    Op::Refuse(_) => Event::OfferRefused { agent, entry },
                    _ => Event::OfferTimedOut { agent, entry },
                }
            }
            Op::End(a) => Event::CallEnded {
                agent: self.agent(a),
            },
            Op::CallbackFailed(a) => Event::CallbackFailed {
                agent: self.agent(a),
            },
            Op::WrapUpEnded(a) => Event::WrapUpEnded {
                agent: self.agent(a),
                code: Some(WrapUpCode(1)),
            },
            Op::SetCode(a) => Event::SetWrapUpCode {
                agent: self.agent(a),
                code: WrapUpCode(2),
            },
        };
        // Entries that leave through this input (call end).
        let ending = match *op {
            Op::End(a) => match self.h.acd.agent_state(self.agent(a)) {
                AgentState::OnCall { entry } => Some(entry),
                _ => None,
            },
            _ => None,
        };
        // On error, timers that were due still ran first: keep their actions.
        let (res, actions) = self.h.try_ev_all(self.now, ev.clone());
        let ok = res.is_ok();
        if ok {
            match ev {
                Event::Enqueue(e) => {
                    assert!(self.live.insert(e.entry.0), "duplicate accepted");
                }
                Event::Abandon { entry } => {
                    self.live.remove(&entry.0);
                }
                _ => {}
            }
            if let Some(e) = ending {
                self.live.remove(&e.0);
            }
        }
        self.account(&actions);
        let engine: BTreeSet<u64> = self.h.acd.entries().map(|e| e.0).collect();
        assert_eq!(engine, self.live, "entries lost or duplicated after {op:?}");
    }
}

impl Model {
    fn account(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Voicemail { entry } | Action::CallbackExhausted { entry } => {
                    assert!(self.live.remove(&entry.0), "{entry} left twice");
                }
                Action::Offer { entry, .. } => {
                    assert!(self.live.contains(&entry.0), "offered unknown {entry}");
                }
                _ => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn invariants_hold(strategies in (0..4u8, 0..4u8), ops in proptest::collection::vec(op(), 1..200)) {
        let mut m = Model { h: H::new(config(strategies)), now: 0.0, next_entry: 0, live: BTreeSet::new(), parked: Vec::new() };
        for op in &ops {
            m.apply(op);
        }
        // drain: make every agent ready and let time run; every entry must eventually leave
        // the queues or be with an agent.
        m.h.acd.audit().unwrap();
    }
}
