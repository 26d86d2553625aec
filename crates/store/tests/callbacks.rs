//! Persisted callbacks: order, claiming, retries, recovery after the process stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use frontdoor_store::callbacks::{
    AttemptOutcome, CallbackError, CallbackId, CallbackRequest, CallbackState,
};
use frontdoor_store::{Region, SqliteStore, normalize};
use proptest::prelude::*;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
}

fn req(n: u32, class: u8, enqueued: i64) -> CallbackRequest {
    CallbackRequest {
        call_id: format!("call-{n}"),
        number: normalize(&format!("+1415555{n:04}"), Region::Nanp).unwrap(),
        queue: "general".into(),
        class,
        enqueued_at: t(enqueued),
        context: serde_json::json!({ "reason": "lost_card", "n": n }),
    }
}

fn ids(v: &[frontdoor_store::callbacks::Callback]) -> Vec<String> {
    v.iter().map(|c| c.call_id.clone()).collect()
}

#[test]
fn line_order_is_class_then_original_enqueue_time() {
    let s = SqliteStore::open_in_memory().unwrap();
    // Requested in this order, but the VIP and the earliest enqueue go first.
    s.request_callback(&req(1, 0, 30), t(100)).unwrap();
    s.request_callback(&req(2, 0, 10), t(101)).unwrap();
    s.request_callback(&req(3, 2, 50), t(102)).unwrap();
    s.request_callback(&req(4, 0, 10), t(103)).unwrap();
    let p = s.pending_callbacks().unwrap();
    assert_eq!(ids(&p), ["call-3", "call-2", "call-4", "call-1"]);
    assert_eq!(p[0].number, "+14155550003");
    assert_eq!(p[0].context["reason"], "lost_card");
    assert_eq!(p[1].enqueued_at, t(10));
    assert_eq!(p[1].state, CallbackState::Waiting);
}

#[test]
fn claimed_once_served_never_again_failures_retry_then_give_up() {
    let s = SqliteStore::open_in_memory().unwrap();
    let id = s.request_callback(&req(1, 0, 0), t(0)).unwrap();
    assert_eq!(s.begin_attempt(id, Some("alice"), t(10)).unwrap(), 1);
    // A second claim while dialing is refused.
    assert!(matches!(
        s.begin_attempt(id, Some("bob"), t(11)),
        Err(CallbackError::WrongState {
            state: CallbackState::Dialing,
            ..
        })
    ));
    let next = s
        .finish_attempt(
            id,
            &AttemptOutcome::Failed {
                reason: "busy".into(),
                retry_at: Some(t(310)),
            },
            t(20),
        )
        .unwrap();
    assert_eq!(next, CallbackState::Waiting);
    let c = s.callback(id).unwrap().unwrap();
    assert_eq!((c.attempts, c.not_before), (1, Some(t(310))));
    assert_eq!(s.begin_attempt(id, Some("bob"), t(320)).unwrap(), 2);
    assert_eq!(
        s.finish_attempt(id, &AttemptOutcome::Served, t(400))
            .unwrap(),
        CallbackState::Served
    );
    // Served: never dialed again, not pending, not cancellable.
    assert!(matches!(
        s.begin_attempt(id, None, t(500)),
        Err(CallbackError::WrongState {
            state: CallbackState::Served,
            ..
        })
    ));
    assert!(s.pending_callbacks().unwrap().is_empty());
    assert!(s.cancel_callback(id).is_err());
    let a = s.callback_attempts(id).unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].outcome.as_deref(), Some("failed"));
    assert_eq!(a[0].detail.as_deref(), Some("busy"));
    assert_eq!(a[0].agent.as_deref(), Some("alice"));
    assert_eq!(a[1].outcome.as_deref(), Some("served"));
    assert_eq!(a[1].ended_at, Some(t(400)));

    // Given up: failed with no retry.
    let id2 = s.request_callback(&req(2, 0, 0), t(0)).unwrap();
    s.begin_attempt(id2, None, t(1)).unwrap();
    let st = s
        .finish_attempt(
            id2,
            &AttemptOutcome::Failed {
                reason: "no_answer".into(),
                retry_at: None,
            },
            t(2),
        )
        .unwrap();
    assert_eq!(st, CallbackState::Failed);
    assert!(s.begin_attempt(id2, None, t(3)).is_err());
    assert!(matches!(
        s.begin_attempt(CallbackId(999), None, t(3)),
        Err(CallbackError::Unknown(999))
    ));
}

#[test]
fn cancel_and_reschedule_keep_the_place() {
    let s = SqliteStore::open_in_memory().unwrap();
    let a = s.request_callback(&req(1, 0, 5), t(0)).unwrap();
    let b = s.request_callback(&req(2, 0, 6), t(0)).unwrap();
    s.reschedule_callback(a, Some(t(3600))).unwrap();
    let p = s.pending_callbacks().unwrap();
    assert_eq!(
        ids(&p),
        ["call-1", "call-2"],
        "rescheduling keeps the place"
    );
    assert_eq!(p[0].not_before, Some(t(3600)));
    s.cancel_callback(a).unwrap();
    assert_eq!(ids(&s.pending_callbacks().unwrap()), ["call-2"]);
    assert!(s.cancel_callback(a).is_err(), "cancelled twice");
    s.begin_attempt(b, None, t(7)).unwrap();
    assert!(s.reschedule_callback(b, None).is_err(), "dialing");
}

#[test]
fn a_file_store_reopened_after_a_stop_mid_attempt_keeps_everything_in_order() {
    let dir = std::env::temp_dir().join(format!("fd-callbacks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.sqlite");
    let (a, b) = {
        let s = SqliteStore::open(&path).unwrap();
        let a = s.request_callback(&req(1, 0, 20), t(100)).unwrap();
        let b = s.request_callback(&req(2, 1, 40), t(101)).unwrap();
        s.request_callback(&req(3, 0, 30), t(102)).unwrap();
        s.begin_attempt(b, Some("alice"), t(110)).unwrap();
        (a, b)
        // dropped without finishing the attempt: the process "died" here
    };
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.recover_callbacks(t(200)).unwrap(), 1);
    let p = s.pending_callbacks().unwrap();
    assert_eq!(ids(&p), ["call-2", "call-1", "call-3"]);
    assert!(p.iter().all(|c| c.state == CallbackState::Waiting));
    let att = s.callback_attempts(b).unwrap();
    assert_eq!(att.len(), 1);
    assert_eq!(att[0].outcome.as_deref(), Some("interrupted"));
    // It can be dialed again; the next attempt is number 2.
    assert_eq!(s.begin_attempt(b, None, t(210)).unwrap(), 2);
    assert_eq!(s.callback(a).unwrap().unwrap().attempts, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Debug, Clone)]
enum Op {
    Request(u8, i64),
    Begin(usize),
    Serve(usize),
    Fail(usize, bool),
    Cancel(usize),
    Recover,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 0i64..100).prop_map(|(c, e)| Op::Request(c, e)),
        (0usize..8).prop_map(Op::Begin),
        (0usize..8).prop_map(Op::Serve),
        (0usize..8, any::<bool>()).prop_map(|(i, r)| Op::Fail(i, r)),
        (0usize..8).prop_map(Op::Cancel),
        Just(Op::Recover),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Against a model: a served entry is never claimed again, only waiting entries can be
    /// claimed, attempts are counted exactly, and the pending list is always in line order.
    #[test]
    fn callbacks_follow_their_model(ops in proptest::collection::vec(op(), 1..40)) {
        let s = SqliteStore::open_in_memory().unwrap();
        let mut model: Vec<(CallbackId, u8, i64, CallbackState, u32)> = Vec::new();
        for (k, o) in ops.into_iter().enumerate() {
            let now = t(1000 + k as i64);
            match o {
                Op::Request(class, enq) => {
                    let id = s.request_callback(&req(model.len() as u32, class, enq), now).unwrap();
                    model.push((id, class, enq, CallbackState::Waiting, 0));
                }
                Op::Begin(i) => if let Some(m) = model.get_mut(i) {
                    let r = s.begin_attempt(m.0, None, now);
                    if m.3 == CallbackState::Waiting {
                        m.4 += 1;
                        prop_assert_eq!(r.unwrap(), m.4);
                        m.3 = CallbackState::Dialing;
                    } else {
                        prop_assert!(r.is_err());
                    }
                },
                Op::Serve(i) | Op::Fail(i, _) if model.get(i).is_some() => {
                    let m = &mut model[i];
                    let outcome = match o {
                        Op::Fail(_, retry) => AttemptOutcome::Failed {
                            reason: "busy".into(),
                            retry_at: retry.then_some(now),
                        },
                        _ => AttemptOutcome::Served,
                    };
                    let r = s.finish_attempt(m.0, &outcome, now);
                    if m.3 == CallbackState::Dialing {
                        let want = match outcome {
                            AttemptOutcome::Served => CallbackState::Served,
                            AttemptOutcome::Failed { retry_at: Some(_), .. } => CallbackState::Waiting,
                            AttemptOutcome::Failed { retry_at: None, .. } => CallbackState::Failed,
                        };
                        prop_assert_eq!(r.unwrap(), want);
                        m.3 = want;
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::Serve(_) | Op::Fail(..) => {}
                Op::Cancel(i) => if let Some(m) = model.get_mut(i) {
                    let r = s.cancel_callback(m.0);
                    prop_assert_eq!(r.is_ok(), m.3 == CallbackState::Waiting);
                    if m.3 == CallbackState::Waiting { m.3 = CallbackState::Cancelled; }
                },
                Op::Recover => {
                    s.recover_callbacks(now).unwrap();
                    for m in &mut model {
                        if m.3 == CallbackState::Dialing { m.3 = CallbackState::Waiting; }
                    }
                }
            }
            // Pending list: exactly the model's waiting/dialing entries, in line order.
            let mut want: Vec<_> = model
                .iter()
                .filter(|m| matches!(m.3, CallbackState::Waiting | CallbackState::Dialing))
                .collect();
            want.sort_by_key(|m| (std::cmp::Reverse(m.1), m.2, m.0));
            let got = s.pending_callbacks().unwrap();
            prop_assert_eq!(
                got.iter().map(|c| (c.id, c.state, c.attempts)).collect::<Vec<_>>(),
                want.iter().map(|m| (m.0, m.3, m.4)).collect::<Vec<_>>()
            );
            for m in &model {
                prop_assert_eq!(s.callback_attempts(m.0).unwrap().len() as u32, m.4);
            }
        }
    }
}

#[test]
fn timestamps_round_trip_with_sub_second_precision() {
    let s = SqliteStore::open_in_memory().unwrap();
    let mut r = req(1, 0, 0);
    r.enqueued_at = t(0) + Duration::microseconds(123_456);
    let id = s.request_callback(&r, t(1)).unwrap();
    assert_eq!(s.callback(id).unwrap().unwrap().enqueued_at, r.enqueued_at);
}
