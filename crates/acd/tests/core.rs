//! Core behaviour in simulated time: order, strategies, states, timers, overflow, EWT.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use frontdoor_acd::*;
use std::time::Duration;

fn one_queue(f: impl FnOnce(&mut QueueConfig)) -> H {
    let mut q = QueueConfig::new(Q1);
    f(&mut q);
    H::new(base_config(vec![q]))
}

#[test]
fn fcfs_within_class() {
    let mut h = one_queue(|_| {});
    for (i, at) in [(1, 0.0), (2, 1.0), (3, 2.0)] {
        assert!(offers(&h.enqueue(at, i, Q1, 0)).is_empty());
    }
    assert_eq!(h.acd.position(EntryId(3)), Some(3));
    assert_eq!(
        offers(&h.login(5.0, 7, vec![], vec![Q1], false)),
        vec![(1, 7)]
    );
    assert_eq!(offers(&h.serve(6.0, 7, 1)), vec![(2, 7)]);
    assert_eq!(offers(&h.serve(7.0, 7, 2)), vec![(3, 7)]);
}

#[test]
fn vip_classes_first_then_enqueue_time() {
    let mut h = one_queue(|_| {});
    h.enqueue(0.0, 1, Q1, 0);
    h.enqueue(1.0, 2, Q1, 1);
    h.enqueue(2.0, 3, Q1, 2);
    h.enqueue(3.0, 4, Q1, 1);
    assert_eq!(
        offers(&h.login(5.0, 7, vec![], vec![Q1], false)),
        vec![(3, 7)]
    );
    assert_eq!(offers(&h.serve(6.0, 7, 3)), vec![(2, 7)]);
    assert_eq!(offers(&h.serve(7.0, 7, 2)), vec![(4, 7)]);
    assert_eq!(offers(&h.serve(8.0, 7, 4)), vec![(1, 7)]);
}

#[test]
fn skills_with_levels_decide_eligibility() {
    let mut h = one_queue(|q| q.requirements = vec![req(1, 3)]);
    h.enqueue_req(0.0, 1, Q1, vec![req(1, 3), req(2, 8)]); // needs product 2 at level 8
    h.enqueue_req(1.0, 2, Q1, vec![req(1, 6)]); // language at 6
    h.enqueue(2.0, 3, Q1, 0); // queue default: language 3
    // Agent with language 5, product 9: not eligible for 2 (level 6), eligible for 1 and 3.
    assert_eq!(
        offers(&h.login(3.0, 7, vec![sk(1, 5), sk(2, 9)], vec![Q1], false)),
        vec![(1, 7)]
    );
    assert_eq!(offers(&h.serve(4.0, 7, 1)), vec![(3, 7)]);
    // Agent without skill 2 and language 2: eligible for nothing.
    assert!(offers(&h.login(5.0, 8, vec![sk(1, 2)], vec![Q1], false)).is_empty());
    // Language 6: takes entry 2.
    assert_eq!(
        offers(&h.login(6.0, 9, vec![sk(1, 6)], vec![Q1], false)),
        vec![(2, 9)]
    );
}

#[test]
fn free_agent_takes_first_eligible_across_its_queues() {
    let mut h = H::new(base_config(vec![
        QueueConfig::new(Q1),
        QueueConfig::new(Q2),
    ]));
    h.enqueue(0.0, 1, Q2, 0);
    h.enqueue(1.0, 2, Q1, 1);
    h.enqueue(2.0, 3, Q1, 0);
    assert_eq!(
        offers(&h.login(3.0, 7, vec![], vec![Q1, Q2], false)),
        vec![(2, 7)]
    );
    assert_eq!(offers(&h.serve(4.0, 7, 2)), vec![(1, 7)]);
}

fn three_free_agents(strategy: Strategy) -> H {
    let mut h = one_queue(|q| {
        q.strategy = strategy;
        q.requirements = vec![req(1, 1)];
    });
    h.login(0.0, 1, vec![sk(1, 5)], vec![Q1], false);
    h.login(1.0, 2, vec![sk(1, 9)], vec![Q1], false);
    h.login(2.0, 3, vec![sk(1, 9)], vec![Q1], false);
    h
}

#[test]
fn strategy_longest_idle() {
    let mut h = three_free_agents(Strategy::LongestIdle);
    assert_eq!(offers(&h.enqueue(10.0, 1, Q1, 0)), vec![(1, 1)]);
    h.serve(11.0, 1, 1); // agent 1 idle since 11 now
    assert_eq!(offers(&h.enqueue(12.0, 2, Q1, 0)), vec![(2, 2)]);
    assert_eq!(offers(&h.enqueue(12.0, 3, Q1, 0)), vec![(3, 3)]);
}

#[test]
fn strategy_best_skill_then_longest_idle() {
    let mut h = three_free_agents(Strategy::BestSkill);
    // Agents 2 and 3 both level 9; 2 idle longer.
    assert_eq!(offers(&h.enqueue(10.0, 1, Q1, 0)), vec![(1, 2)]);
    assert_eq!(offers(&h.enqueue(11.0, 2, Q1, 0)), vec![(2, 3)]);
    assert_eq!(offers(&h.enqueue(12.0, 3, Q1, 0)), vec![(3, 1)]);
}

#[test]
fn strategy_round_robin() {
    let mut h = three_free_agents(Strategy::RoundRobin);
    let mut got = Vec::new();
    for i in 1..=5u64 {
        let o = offers(&h.enqueue(10.0 + i as f64, i, Q1, 0));
        assert_eq!(o.len(), 1);
        got.push(o[0].1);
        h.serve(10.5 + i as f64, o[0].1, i);
    }
    assert_eq!(got, vec![1, 2, 3, 1, 2]);
}

#[test]
fn strategy_fewest_calls() {
    let mut h = three_free_agents(Strategy::FewestCalls);
    assert_eq!(offers(&h.enqueue(10.0, 1, Q1, 0)), vec![(1, 1)]);
    h.serve(10.0, 1, 1);
    assert_eq!(offers(&h.enqueue(11.0, 2, Q1, 0)), vec![(2, 2)]);
    h.serve(11.0, 2, 2);
    // 1 and 2 have one call each, 3 none.
    assert_eq!(offers(&h.enqueue(12.0, 3, Q1, 0)), vec![(3, 3)]);
    h.serve(12.0, 3, 3);
    // all have one; agent 1 idle the longest
    assert_eq!(offers(&h.enqueue(13.0, 4, Q1, 0)), vec![(4, 1)]);
}

#[test]
fn simultaneous_wrap_up_ends_use_strategy() {
    let mut h = one_queue(|q| {
        q.wrap_up_s = 5.0;
        q.strategy = Strategy::FewestCalls;
    });
    h.login(0.0, 1, vec![], vec![Q1], false);
    h.login(0.0, 2, vec![], vec![Q1], false);
    h.enqueue(1.0, 1, Q1, 0); // -> agent 1
    h.enqueue(1.0, 2, Q1, 0); // -> agent 2
    h.serve(1.0, 1, 1);
    h.serve(1.0, 2, 2);
    h.enqueue(2.0, 3, Q1, 0);
    h.enqueue(2.0, 4, Q1, 0);
    h.enqueue(2.0, 5, Q1, 0);
    // both wrap-ups end at 6; two callers get offered, in order.
    let o = offers(&h.tick(6.0));
    assert_eq!(o.len(), 2);
    assert_eq!(o.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn offer_timeout_keeps_place_and_max_no_answer_pauses() {
    let mut h = one_queue(|_| {});
    h.enqueue(0.0, 1, Q1, 0);
    h.enqueue(1.0, 2, Q1, 0);
    assert_eq!(
        offers(&h.login(2.0, 7, vec![], vec![Q1], false)),
        vec![(1, 7)]
    );
    assert_eq!(h.acd.next_deadline(), Some(t(17.0)));
    let a = h.tick(17.0);
    assert!(a.contains(&Action::CancelOffer {
        entry: EntryId(1),
        agent: AgentId(7),
        reason: CancelReason::Timeout
    }));
    // Entry 1 kept its place: re-offered first.
    assert_eq!(offers(&a), vec![(1, 7)]);
    let a = h.tick(32.0);
    // second no-answer: paused
    assert!(offers(&a).is_empty());
    assert_eq!(
        h.state(7),
        AgentState::Paused {
            reason: PauseReason::NoAnswer
        }
    );
    assert_eq!(h.acd.position(EntryId(1)), Some(1));
    // way out: ready
    assert_eq!(
        offers(&h.ev(40.0, Event::AgentReady { agent: AgentId(7) })),
        vec![(1, 7)]
    );
    h.accept(41.0, 7, 1);
    assert_eq!(h.state(7), AgentState::OnCall { entry: EntryId(1) });
}

#[test]
fn refusal_keeps_place_host_timeout_too() {
    let mut h = one_queue(|_| {});
    h.login(0.0, 7, vec![], vec![Q1], false);
    h.login(0.0, 8, vec![], vec![Q1], false);
    assert_eq!(offers(&h.enqueue(1.0, 1, Q1, 0)), vec![(1, 7)]);
    assert_eq!(offers(&h.enqueue(2.0, 2, Q1, 0)), vec![(2, 8)]);
    h.enqueue(3.0, 3, Q1, 0);
    // 7 refuses 1: 1 is re-offered (ahead of 3) to the free agent (7 again, the only free one).
    let a = h.ev(
        4.0,
        Event::OfferRefused {
            agent: AgentId(7),
            entry: EntryId(1),
        },
    );
    assert_eq!(offers(&a), vec![(1, 7)]);
    let a = h.ev(
        5.0,
        Event::OfferTimedOut {
            agent: AgentId(8),
            entry: EntryId(2),
        },
    );
    assert_eq!(offers(&a), vec![(2, 8)]);
    // wrong pair
    assert!(matches!(
        h.try_ev(
            6.0,
            Event::OfferAccepted {
                agent: AgentId(7),
                entry: EntryId(2)
            }
        ),
        Err(AcdError::InvalidAgentState { .. })
    ));
}

#[test]
fn wrap_up_by_timer_and_by_agent() {
    let mut h = one_queue(|q| q.wrap_up_s = 30.0);
    h.login(0.0, 7, vec![], vec![Q1], false);
    h.enqueue(1.0, 1, Q1, 0);
    h.accept(2.0, 7, 1);
    h.end(100.0, 7);
    assert_eq!(h.state(7), AgentState::WrapUp { code: None });
    assert!(h.acd.entry(EntryId(1)).is_none());
    h.enqueue(101.0, 2, Q1, 0);
    assert!(offers(&h.tick(129.0)).is_empty());
    assert_eq!(offers(&h.tick(130.0)), vec![(2, 7)]);
    // a code recorded during wrap-up keeps the timer
    h.ev(
        131.0,
        Event::OfferAccepted {
            agent: AgentId(7),
            entry: EntryId(2),
        },
    );
    h.end(132.0, 7);
    let a = h.ev(
        133.0,
        Event::SetWrapUpCode {
            agent: AgentId(7),
            code: WrapUpCode(7),
        },
    );
    assert!(a.contains(&Action::AgentStateChanged {
        agent: AgentId(7),
        state: AgentState::WrapUp {
            code: Some(WrapUpCode(7))
        }
    }));
    h.tick(162.0);
    assert_eq!(h.state(7), AgentState::Available);
    h.enqueue(163.0, 3, Q1, 0);
    h.accept(163.0, 7, 3);
    h.end(140.0 + 30.0, 7);
    let a = h.ev(
        175.0,
        Event::WrapUpEnded {
            agent: AgentId(7),
            code: Some(WrapUpCode(42)),
        },
    );
    assert!(a.contains(&Action::AgentStateChanged {
        agent: AgentId(7),
        state: AgentState::WrapUp {
            code: Some(WrapUpCode(42))
        }
    }));
    assert_eq!(h.state(7), AgentState::Available);
    // handle-time average moved from its prior (180 s) towards the observed ~128 s/14 s
    let aht = h.acd.average_handle_time(Q1).unwrap().as_secs_f64();
    assert!(aht < 180.0, "{aht}");
    // ending wrap-up when not in wrap-up is refused
    assert!(
        h.try_ev(
            176.0,
            Event::WrapUpEnded {
                agent: AgentId(7),
                code: None
            }
        )
        .is_err()
    );
    assert!(
        h.try_ev(
            176.0,
            Event::SetWrapUpCode {
                agent: AgentId(7),
                code: WrapUpCode(1)
            }
        )
        .is_err()
    );
}

#[test]
fn pause_ready_logout_every_state_has_a_way_out() {
    let mut h = one_queue(|q| q.wrap_up_s = 10.0);
    let code = PauseReason::Code { code: 5 };
    h.login(0.0, 7, vec![], vec![Q1], false);
    h.ev(
        1.0,
        Event::AgentPause {
            agent: AgentId(7),
            reason: code,
        },
    );
    assert!(offers(&h.enqueue(2.0, 1, Q1, 0)).is_empty());
    assert_eq!(
        offers(&h.ev(3.0, Event::AgentReady { agent: AgentId(7) })),
        vec![(1, 7)]
    );
    // pause while ringing: offer withdrawn, caller keeps its place
    let a = h.ev(
        4.0,
        Event::AgentPause {
            agent: AgentId(7),
            reason: code,
        },
    );
    assert!(a.contains(&Action::CancelOffer {
        entry: EntryId(1),
        agent: AgentId(7),
        reason: CancelReason::AgentLeft
    }));
    assert_eq!(h.acd.position(EntryId(1)), Some(1));
    assert_eq!(
        offers(&h.ev(5.0, Event::AgentReady { agent: AgentId(7) })),
        vec![(1, 7)]
    );
    h.accept(6.0, 7, 1);
    // pause during the call is pending; applies after wrap-up
    h.ev(
        7.0,
        Event::AgentPause {
            agent: AgentId(7),
            reason: code,
        },
    );
    assert_eq!(h.state(7), AgentState::OnCall { entry: EntryId(1) });
    h.end(8.0, 7);
    assert_eq!(h.state(7), AgentState::WrapUp { code: None });
    h.tick(18.0);
    assert_eq!(h.state(7), AgentState::Paused { reason: code });
    // logout from paused
    h.ev(19.0, Event::AgentLogout { agent: AgentId(7) });
    assert_eq!(h.state(7), AgentState::LoggedOut);
    // logout while ringing requeues the caller
    h.login(20.0, 7, vec![], vec![Q1], false);
    assert_eq!(offers(&h.enqueue(21.0, 2, Q1, 0)), vec![(2, 7)]);
    h.ev(22.0, Event::AgentLogout { agent: AgentId(7) });
    assert_eq!(
        h.acd.entry(EntryId(2)).unwrap().status,
        EntryStatus::Waiting
    );
    // logout during a call waits for the call to end (wrap-up skipped)
    h.login(23.0, 8, vec![], vec![Q1], false);
    h.accept(23.0, 8, 2);
    h.ev(24.0, Event::AgentLogout { agent: AgentId(8) });
    assert_eq!(h.state(8), AgentState::OnCall { entry: EntryId(2) });
    h.end(25.0, 8);
    // wrap-up happens, then logout applies
    h.tick(35.0);
    assert_eq!(h.state(8), AgentState::LoggedOut);
    // ready during wrap-up ends it early; ready during a call cancels a pending pause
    h.login(40.0, 9, vec![], vec![Q1], false);
    h.enqueue(41.0, 3, Q1, 0);
    h.accept(41.0, 9, 3);
    h.ev(
        42.0,
        Event::AgentPause {
            agent: AgentId(9),
            reason: code,
        },
    );
    h.ev(43.0, Event::AgentReady { agent: AgentId(9) });
    h.end(44.0, 9);
    h.ev(45.0, Event::AgentReady { agent: AgentId(9) });
    assert_eq!(h.state(9), AgentState::Available);
}

#[test]
fn anti_starvation_promotes_one_class_keeping_enqueue_time() {
    let mut h = one_queue(|q| q.promote_after_s = Some(30.0));
    h.login(0.0, 7, vec![], vec![Q1], false);
    h.enqueue(0.0, 100, Q1, 0);
    h.accept(0.0, 7, 100); // agent busy
    h.enqueue(1.0, 1, Q1, 0); // regular
    h.enqueue(10.0, 2, Q1, 1); // VIP
    assert_eq!(h.acd.position(EntryId(1)), Some(2));
    let a = h.tick(31.0);
    assert!(a.contains(&Action::Promoted {
        entry: EntryId(1),
        class: 1
    }));
    // class 1 now, enqueued earlier than the VIP: ahead of it
    assert_eq!(h.acd.position(EntryId(1)), Some(1));
    assert_eq!(h.acd.entry(EntryId(1)).unwrap().enqueued_at, t(1.0));
    assert_eq!(offers(&h.end(35.0, 7)), vec![(1, 7)]);
    // only one promotion by default; the VIP itself is promoted at 40 (to class 2)
    let a = h.tick(100.0);
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, Action::Promoted { .. }))
            .count(),
        1
    );
    assert_eq!(h.acd.entry(EntryId(2)).unwrap().class, 2);
}

#[test]
fn vip_reserved_for_vip_agents_then_widened() {
    let mut h = one_queue(|q| q.vip_reserve_s = Some(20.0));
    h.login(0.0, 1, vec![], vec![Q1], false);
    assert!(offers(&h.enqueue(1.0, 1, Q1, 1)).is_empty());
    // regular caller behind the reserved VIP can take the regular agent meanwhile
    assert_eq!(offers(&h.enqueue(2.0, 2, Q1, 0)), vec![(2, 1)]);
    h.serve(3.0, 1, 2);
    assert!(offers(&h.tick(20.0)).is_empty());
    assert_eq!(offers(&h.tick(21.0)), vec![(1, 1)]);
    // a VIP agent gets VIPs immediately
    h.login(30.0, 9, vec![], vec![Q1], true);
    assert_eq!(offers(&h.enqueue(31.0, 3, Q1, 1)), vec![(3, 9)]);
}

#[test]
fn overflow_widen_levels_and_drop_skills() {
    let mut h = one_queue(|q| {
        q.requirements = vec![req(1, 8), req(2, 5)];
        q.overflow = vec![
            OverflowRule {
                after_s: 30.0,
                action: OverflowAction::Widen {
                    lower_levels_by: 2,
                    drop_skills: vec![],
                },
            },
            OverflowRule {
                after_s: 60.0,
                action: OverflowAction::Widen {
                    lower_levels_by: 0,
                    drop_skills: vec![SkillId(2)],
                },
            },
        ];
    });
    h.login(0.0, 1, vec![sk(1, 6), sk(2, 3)], vec![Q1], false); // meets 8-2 / 5-2
    h.login(0.0, 2, vec![sk(1, 9)], vec![Q1], false); // lacks skill 2
    h.enqueue(1.0, 1, Q1, 0);
    assert!(offers(&h.tick(30.0)).is_empty());
    let a = h.tick(31.0);
    assert!(a.contains(&Action::Widened { entry: EntryId(1) }));
    assert_eq!(offers(&a), vec![(1, 1)]);
    h.ev(
        31.5,
        Event::AgentPause {
            agent: AgentId(1),
            reason: PauseReason::Code { code: 1 },
        },
    );
    h.enqueue(32.0, 2, Q1, 0);
    // entry 1 is waiting again (agent 1 paused while ringing), requirements 6/3; at 61 skill 2
    // is dropped: agent 2 becomes eligible.
    assert!(offers(&h.tick(60.0)).is_empty());
    assert_eq!(offers(&h.tick(61.0)), vec![(1, 2)]);
    h.serve(62.0, 2, 1);
    // entry 2: widened at 62 to 6/3 (agent 2 lacks skill 2), skill 2 dropped at 92
    assert!(offers(&h.tick(91.0)).is_empty());
    assert_eq!(offers(&h.tick(92.0)), vec![(2, 2)]);
}

#[test]
fn overflow_move_keeps_enqueue_time_and_class() {
    let mut q1 = QueueConfig::new(Q1);
    q1.overflow = vec![OverflowRule {
        after_s: 10.0,
        action: OverflowAction::MoveTo { queue: Q2 },
    }];
    let mut h = H::new(base_config(vec![q1, QueueConfig::new(Q2)]));
    h.login(0.0, 5, vec![], vec![Q2], false);
    h.enqueue(0.0, 50, Q2, 0);
    h.accept(0.0, 5, 50);
    h.enqueue(1.5, 1, Q1, 1); // VIP in Q1 since 1.5
    h.enqueue(2.0, 60, Q2, 0); // waiting in Q2 since 2
    let a = h.tick(11.5);
    assert!(a.contains(&Action::Moved {
        entry: EntryId(1),
        from: Q1,
        to: Q2
    }));
    let v = h.acd.entry(EntryId(1)).unwrap();
    assert_eq!((v.queue, v.class, v.enqueued_at), (Q2, 1, t(1.5)));
    assert_eq!(h.acd.position(EntryId(1)), Some(1));
    assert_eq!(offers(&h.end(12.0, 5)), vec![(1, 5)]);
}

#[test]
fn overflow_callback_offer_and_voicemail() {
    let mut h = one_queue(|q| {
        q.overflow = vec![
            OverflowRule {
                after_s: 10.0,
                action: OverflowAction::OfferCallback,
            },
            OverflowRule {
                after_s: 20.0,
                action: OverflowAction::Voicemail,
            },
        ]
    });
    h.enqueue(0.0, 1, Q1, 0);
    h.enqueue(1.0, 2, Q1, 0);
    assert!(
        h.tick(10.0)
            .contains(&Action::OfferCallback { entry: EntryId(1) })
    );
    // caller 1 accepts the callback: stays queued in place as a callback
    h.ev(10.5, Event::ConvertToCallback { entry: EntryId(1) });
    assert_eq!(
        h.acd.entry(EntryId(1)).unwrap().kind,
        EntryKind::Callback { attempts: 0 }
    );
    let a = h.tick(21.0);
    assert!(a.contains(&Action::Voicemail { entry: EntryId(2) }));
    assert!(
        !a.contains(&Action::Voicemail { entry: EntryId(1) }),
        "callbacks are not sent to voicemail"
    );
    assert!(h.acd.entry(EntryId(2)).is_none());
    assert_eq!(h.acd.position(EntryId(1)), Some(1));
}

#[test]
fn callback_keeps_place_on_failure_and_is_exhausted() {
    let mut cfg = base_config(vec![QueueConfig::new(Q1)]);
    cfg.callback_max_attempts = 2;
    let mut h = H::new(cfg);
    // callback created later but keeping the caller's original enqueue time
    h.enqueue(5.0, 2, Q1, 0);
    h.ev(
        6.0,
        Event::Enqueue(Enqueue {
            kind: EntryKind::Callback { attempts: 0 },
            enqueued_at: Some(t(1.0)),
            ..Enqueue::live(EntryId(1), Q1)
        }),
    );
    assert_eq!(h.acd.position(EntryId(1)), Some(1));
    h.enqueue(7.0, 3, Q1, 0);
    let a = h.login(8.0, 7, vec![], vec![Q1], false);
    assert_eq!(
        a.iter()
            .find(|a| matches!(a, Action::Offer { .. }))
            .cloned(),
        Some(Action::Offer {
            entry: EntryId(1),
            agent: AgentId(7),
            queue: Q1,
            kind: EntryKind::Callback { attempts: 0 }
        })
    );
    h.accept(9.0, 7, 1);
    // customer did not answer: back in place (ahead of 2 and 3)
    let a = h.ev(30.0, Event::CallbackFailed { agent: AgentId(7) });
    assert_eq!(offers(&a), vec![(1, 7)]);
    h.accept(31.0, 7, 1);
    let a = h.ev(50.0, Event::CallbackFailed { agent: AgentId(7) });
    assert!(a.contains(&Action::CallbackExhausted { entry: EntryId(1) }));
    assert_eq!(offers(&a), vec![(2, 7)]);
    // a live call cannot "fail a callback"
    h.accept(51.0, 7, 2);
    assert!(
        h.try_ev(52.0, Event::CallbackFailed { agent: AgentId(7) })
            .is_err()
    );
}

#[test]
fn abandon_waiting_and_ringing() {
    let mut h = one_queue(|_| {});
    h.enqueue(0.0, 1, Q1, 0);
    h.enqueue(1.0, 2, Q1, 0);
    h.ev(2.0, Event::Abandon { entry: EntryId(1) });
    assert_eq!(h.acd.position(EntryId(2)), Some(1));
    assert_eq!(
        offers(&h.login(3.0, 7, vec![], vec![Q1], false)),
        vec![(2, 7)]
    );
    let a = h.ev(4.0, Event::Abandon { entry: EntryId(2) });
    assert!(a.contains(&Action::CancelOffer {
        entry: EntryId(2),
        agent: AgentId(7),
        reason: CancelReason::Abandoned
    }));
    assert_eq!(h.state(7), AgentState::Available);
    assert!(h.acd.entry(EntryId(2)).is_none());
    assert_eq!(
        h.try_ev(5.0, Event::Abandon { entry: EntryId(2) }),
        Err(AcdError::UnknownEntry(EntryId(2)))
    );
}

#[test]
fn announcements_and_estimated_wait() {
    let mut h = one_queue(|q| q.announce_every_s = Some(30.0));
    h.login(0.0, 7, vec![], vec![Q1], false);
    h.login(0.0, 8, vec![], vec![Q1], false);
    h.enqueue(0.0, 100, Q1, 0);
    h.enqueue(0.0, 101, Q1, 0);
    h.accept(0.0, 7, 100);
    h.accept(0.0, 8, 101);
    h.enqueue(1.0, 1, Q1, 0);
    h.enqueue(2.0, 2, Q1, 0);
    // no departure interval observed yet: position × AHT(prior 180 s) / 2 agents
    assert_eq!(
        h.acd.estimated_wait(EntryId(2)),
        Some(Duration::from_secs(180))
    );
    let a = h.tick(31.0);
    assert!(a.contains(&Action::Announce {
        entry: EntryId(1),
        position: 1,
        estimated_wait: Some(Duration::from_secs(90))
    }));
    // departures while backlogged: every 20 s
    h.enqueue(3.0 + 30.0, 3, Q1, 0);
    h.enqueue(34.0, 4, Q1, 0);
    h.end(40.0, 7); // -> 1 offered
    h.accept(40.0, 7, 1);
    h.end(60.0, 7); // -> 2
    h.accept(60.0, 7, 2);
    h.end(80.0, 8); // -> 3
    let ewt = h.acd.estimated_wait(EntryId(4)).unwrap().as_secs_f64();
    assert!((ewt - 20.0).abs() < 1e-6, "{ewt}");
}

#[test]
fn errors_leave_state_unchanged() {
    let mut h = one_queue(|_| {});
    h.enqueue(10.0, 1, Q1, 0);
    assert_eq!(h.try_ev(5.0, Event::Tick), Err(AcdError::TimeWentBackwards));
    assert_eq!(
        h.try_ev(11.0, Event::Enqueue(Enqueue::live(EntryId(1), Q1))),
        Err(AcdError::DuplicateEntry(EntryId(1)))
    );
    assert_eq!(
        h.try_ev(11.0, Event::Enqueue(Enqueue::live(EntryId(2), QueueId(9)))),
        Err(AcdError::UnknownQueue(QueueId(9)))
    );
    assert_eq!(
        h.try_ev(11.0, Event::CallEnded { agent: AgentId(3) }),
        Err(AcdError::UnknownAgent(AgentId(3)))
    );
    assert!(matches!(
        h.try_ev(
            11.0,
            Event::AgentLogin {
                agent: AgentId(3),
                profile: AgentProfile {
                    skills: vec![sk(1, 11)],
                    queues: vec![Q1],
                    vip: false
                }
            }
        ),
        Err(AcdError::InvalidSkillLevel { .. })
    ));
    assert_eq!(h.state(3), AgentState::LoggedOut);
    h.login(12.0, 3, vec![], vec![Q1], false);
    assert_eq!(
        h.try_ev(
            12.0,
            Event::AgentLogin {
                agent: AgentId(3),
                profile: AgentProfile::default()
            }
        ),
        Err(AcdError::AgentAlreadyLoggedIn(AgentId(3)))
    );
    assert!(matches!(
        h.try_ev(13.0, Event::CallEnded { agent: AgentId(3) }),
        Err(AcdError::InvalidAgentState { .. })
    ));
    assert_eq!(h.state(3), AgentState::Offered { entry: EntryId(1) });
}

#[test]
fn bad_config_is_rejected() {
    let mut q = QueueConfig::new(Q1);
    q.wrap_up_s = -1.0;
    assert_eq!(
        Acd::new(&base_config(vec![q])).err(),
        Some(AcdError::InvalidConfig("wrap_up_s"))
    );
    assert_eq!(
        Acd::new(&base_config(vec![
            QueueConfig::new(Q1),
            QueueConfig::new(Q1)
        ]))
        .err(),
        Some(AcdError::DuplicateQueue(Q1))
    );
    let mut q = QueueConfig::new(Q1);
    q.overflow = vec![OverflowRule {
        after_s: 1.0,
        action: OverflowAction::MoveTo { queue: Q2 },
    }];
    assert_eq!(
        Acd::new(&base_config(vec![q])).err(),
        Some(AcdError::UnknownQueue(Q2))
    );
}

#[test]
fn sample_configs_parse_and_build() {
    for f in ["examples/sim-center.toml", "examples/sim-small.toml"] {
        let s = std::fs::read_to_string(f).unwrap();
        let cfg = frontdoor_acd::sim::SimConfig::from_toml_str(&s).unwrap();
        Acd::new(&cfg.acd).unwrap();
    }
    let center = frontdoor_acd::sim::SimConfig::from_toml_str(
        &std::fs::read_to_string("examples/sim-center.toml").unwrap(),
    )
    .unwrap();
    assert_eq!(center.agents.iter().map(|g| g.count).sum::<u32>(), 200);
}

#[test]
fn sim_report_is_printable_and_serializable() {
    let mut cfg = frontdoor_acd::sim::SimConfig::from_toml_str(
        &std::fs::read_to_string("examples/sim-center.toml").unwrap(),
    )
    .unwrap();
    cfg.duration_s = 3600.0;
    cfg.warmup_s = 0.0;
    let r = frontdoor_acd::sim::run(&cfg, 7).unwrap();
    assert!(r.offered > 1000, "{r}");
    assert_eq!(r.unresolved, 0);
    assert_eq!(
        r.offered,
        r.answered + r.abandoned + r.voicemail + r.callbacks_accepted
    );
    assert!(r.vip_answered > 0);
    let text = r.to_string();
    assert!(
        text.contains("service level") && text.contains("Erlang A"),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["service_level"].as_f64().is_some());
    // same seed, same result
    assert_eq!(frontdoor_acd::sim::run(&cfg, 7).unwrap(), r);
}
