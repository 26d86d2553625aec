//! Property tests: bad input never panics; random event/timer sequences keep the interpreter
//! consistent.
#![allow(clippy::unwrap_used, missing_docs)]
#![allow(clippy::disallowed_methods)] // one Instant::now() as the simulated epoch

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use frontdoor_ivr::*;
use proptest::prelude::*;

fn hotline_src() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dialplans/hotline.toml"),
    )
    .unwrap()
}

fn hotline() -> Arc<Dialplan> {
    check_str(Path::new("hotline.toml"), &hotline_src(), None)
        .unwrap()
        .plan
}

#[derive(Debug, Clone)]
enum Step {
    Key(char),
    FinishPrompt,
    StalePrompt(u64),
    Answered,
    Advance(u64),
    Queue(bool),
    Transfer(bool),
    Recorded(u64),
    Speech(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::sample::select(vec!['0', '1', '2', '3', '7', '9', '#', '*']).prop_map(Step::Key),
        4 => Just(Step::FinishPrompt),
        1 => (0u64..50).prop_map(Step::StalePrompt),
        1 => Just(Step::Answered),
        3 => (0u64..20_000).prop_map(Step::Advance),
        1 => any::<bool>().prop_map(Step::Queue),
        1 => any::<bool>().prop_map(Step::Transfer),
        1 => (0u64..200).prop_map(Step::Recorded),
        1 => (0u8..8).prop_map(Step::Speech),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sessions_never_panic_and_stay_consistent(
        steps in prop::collection::vec(step(), 0..80),
        vip in any::<bool>(),
        returning in any::<bool>(),
        hour in 0u32..24,
    ) {
        let caller = CallerAttributes { number: Some("+8613800138000".into()), name: Some("Li".into()), vip, returning, ..Default::default() };
        let ctx = CallContext { call_id: "p".into(), dialed: "95555".into(), trunk: None, caller };
        let mut call = Call::new(hotline(), &FlowId("hotline".into()), ctx).unwrap();
        let mut now = Instant::now();
        let wall = Utc.with_ymd_and_hms(2026, 11, 25, hour, 0, 0).unwrap();
        call.start(now, wall);
        let mut last_prompt = None;
        let intents = ["balance", "agent", "hours", "nonsense"];
        for s in steps {
            match s {
                Step::Key(k) => call.handle_event(Event::Dtmf(k), now, wall),
                Step::FinishPrompt => if let Some(id) = last_prompt.take() { call.handle_event(Event::PromptFinished(id), now, wall) },
                Step::StalePrompt(n) => call.handle_event(Event::PromptFinished(PlaybackId(n)), now, wall),
                Step::Answered => call.handle_event(Event::Answered, now, wall),
                Step::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    if call.poll_timeout().is_some_and(|t| t <= now) {
                        call.handle_timeout(now, wall);
                    }
                }
                Step::Queue(ok) => call.handle_event(Event::QueueResult(if ok { QueueOutcome::Connected { agent: "a".into() } } else { QueueOutcome::Failed { reason: "x".into() } }), now, wall),
                Step::Transfer(ok) => call.handle_event(Event::TransferResult(if ok { TransferOutcome::Connected } else { TransferOutcome::Failed { status: Some(486) } }), now, wall),
                Step::Recorded(s) => call.handle_event(Event::RecordingFinished { duration: Duration::from_secs(s) }, now, wall),
                Step::Speech(i) => call.handle_event(Event::SpeechResult(SpeechResult { transcript: "x".into(), meaning: intents.get(i as usize).map(|s| SpeechMeaning::Intent((*s).to_owned())), confidence: 0.5 }), now, wall),
            }
            let mut hangups = 0;
            while let Some(a) = call.poll_action() {
                match a {
                    Action::Play { id, .. } | Action::Say { id, .. } => last_prompt = Some(id),
                    Action::Hangup { .. } => hangups += 1,
                    _ => {}
                }
            }
            while call.poll_event().is_some() {}
            prop_assert!(hangups <= 1);
            if call.is_finished() {
                prop_assert!(call.poll_timeout().is_none());
                prop_assert!(call.summary().outcome.is_some());
            }
            // Deadlines are never in the past after handling.
            if let Some(t) = call.poll_timeout() {
                prop_assert!(t + Duration::from_secs(3600) > now);
            }
            // Sensitive digits are never in the record.
            for d in &call.summary().digits {
                if d.step == "account_number" || d.step == "activate_card" {
                    prop_assert_eq!(&d.digits, REDACTED);
                }
            }
        }
        call.handle_event(Event::CallerHungUp, now, wall);
        prop_assert!(call.is_finished());
    }

    #[test]
    fn mutated_dialplans_never_panic(cut in 0usize..20_000, len in 0usize..64, junk in "[\\[\\]{}=\"'a-z0-9#. \n]{0,24}") {
        let src = hotline_src();
        let mut start = cut.min(src.len());
        while !src.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(src.len());
        while !src.is_char_boundary(end) { end -= 1; }
        let mutated = format!("{}{}{}", &src[..start], junk, &src[end..]);
        if let Err(diags) = check_str(Path::new("m.toml"), &mutated, None) {
            for d in diags {
                prop_assert!(d.line >= 1 && d.column >= 1);
                prop_assert!(d.line <= mutated.lines().count().max(1) + 1);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,300}") {
        let _ = check_str(Path::new("x.toml"), &src, None);
    }
}
