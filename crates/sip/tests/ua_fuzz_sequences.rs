//! Random sequences of SIP messages, API calls and time steps: no panic, every call handle
//! ends exactly once, and nothing lingers once time has run out.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use frontdoor_sip::{CallHandle, UaEvent};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Invite(u8),
    InviteRetransmit(u8),
    Cancel(u8),
    Ack(u8),
    Bye(u8),
    Info(u8),
    Reinvite(u8),
    Ring(u8),
    Answer(u8),
    Reject(u8),
    Hangup(u8),
    Outgoing,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0u8..4;
    prop_oneof![
        c.clone().prop_map(Op::Invite),
        c.clone().prop_map(Op::InviteRetransmit),
        c.clone().prop_map(Op::Cancel),
        c.clone().prop_map(Op::Ack),
        c.clone().prop_map(Op::Bye),
        c.clone().prop_map(Op::Info),
        c.clone().prop_map(Op::Reinvite),
        c.clone().prop_map(Op::Ring),
        c.clone().prop_map(Op::Answer),
        c.clone().prop_map(Op::Reject),
        c.prop_map(Op::Hangup),
        Just(Op::Outgoing),
        (0u16..5000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_keep_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let (mut ua, t0) = ua();
        let mut now = t0;
        let mut handles: HashMap<u8, CallHandle> = HashMap::new();
        let mut tags: HashMap<u8, String> = HashMap::new();
        let mut all: HashSet<CallHandle> = HashSet::new();
        let mut ended: HashSet<CallHandle> = HashSet::new();
        let mut cseq = 10u32;
        for op in ops {
            cseq += 1;
            match op {
                Op::Invite(i) | Op::InviteRetransmit(i) => {
                    send(&mut ua, now, &invite(&format!("f{i}"), &format!("z9hG4bKf{i}")));
                }
                Op::Cancel(i) => send(&mut ua, now, &request("CANCEL", &format!("f{i}"), &format!("z9hG4bKf{i}"), 1, "", "", "")),
                Op::Ack(i) => {
                    let tag = tags.get(&i).cloned().unwrap_or_default();
                    send(&mut ua, now, &request("ACK", &format!("f{i}"), &format!("z9hG4bKa{i}{cseq}"), 1, &tag, "", ""));
                }
                Op::Bye(i) => {
                    let tag = tags.get(&i).cloned().unwrap_or_else(|| "x".into());
                    send(&mut ua, now, &request("BYE", &format!("f{i}"), &format!("z9hG4bKb{i}{cseq}"), cseq, &tag, "", ""));
                }
                Op::Info(i) => {
                    let tag = tags.get(&i).cloned().unwrap_or_else(|| "x".into());
                    send(&mut ua, now, &request("INFO", &format!("f{i}"), &format!("z9hG4bKn{i}{cseq}"), cseq, &tag, "", ""));
                }
                Op::Reinvite(i) => {
                    let tag = tags.get(&i).cloned().unwrap_or_else(|| "x".into());
                    send(&mut ua, now, &request("INVITE", &format!("f{i}"), &format!("z9hG4bKr{i}{cseq}"), cseq, &tag, "", SDP_OFFER));
                }
                Op::Ring(i) => { if let Some(h) = handles.get(&i) { let _ = ua.ring(now, *h); } }
                Op::Answer(i) => { if let Some(h) = handles.get(&i) { let _ = ua.answer(now, *h, &local_media()); } }
                Op::Reject(i) => { if let Some(h) = handles.get(&i) { let _ = ua.reject(now, *h, 486, Some(1)); } }
                Op::Hangup(i) => { if let Some(h) = handles.get(&i) { let _ = ua.hangup(now, *h); } }
                Op::Outgoing => {
                    let h = ua.invite(now, "sip:bob@10.0.0.2:5062", peer(), "ring", &local_media()).unwrap();
                    all.insert(h);
                }
                Op::Advance(ms) => {
                    now += std::time::Duration::from_millis(u64::from(ms) * 10);
                    ua.handle_timeout(now);
                }
            }
            while let Some(t) = ua.poll_transmit() {
                prop_assert!(frontdoor_sip::message::parse(&t.payload).is_ok());
                if let Some(200..=299 | 180) = status(&t) {
                    let r = response(&t);
                    if let (Some(tag), Some(i)) = (r.to_tag(), r.call_id().strip_prefix('f').and_then(|s| s.parse::<u8>().ok())) {
                        tags.insert(i, tag.to_owned());
                    }
                }
            }
            while let Some(e) = ua.poll_event() {
                match e {
                    UaEvent::IncomingCall { call, call_id, .. } => {
                        prop_assert!(all.insert(call));
                        if let Some(i) = call_id.strip_prefix('f').and_then(|s| s.parse::<u8>().ok()) {
                            handles.insert(i, call);
                            tags.remove(&i);
                        }
                    }
                    UaEvent::CallEnded { call, .. } => {
                        prop_assert!(all.contains(&call));
                        prop_assert!(ended.insert(call), "CallEnded twice for {}", call);
                    }
                    _ => {}
                }
            }
        }
        // Make every remaining call end: hang up everything, then let all timers run.
        for h in all.clone() {
            let _ = ua.hangup(now, h);
        }
        for _ in 0..3 {
            now += std::time::Duration::from_secs(200);
            ua.handle_timeout(now);
            while ua.poll_transmit().is_some() {}
        }
        while let Some(e) = ua.poll_event() {
            if let UaEvent::CallEnded { call, .. } = e {
                prop_assert!(ended.insert(call), "CallEnded twice for {}", call);
            }
        }
        let stats = ua.stats();
        prop_assert_eq!(stats.active_transactions, 0);
        prop_assert_eq!(stats.active_calls, 0, "calls left: all {:?} ended {:?}", all, ended);
        prop_assert_eq!(ended.len(), all.len());
    }
}
