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

#[derive(Debug, Clone)]
enum SpeechStep {
    Key(char),
    FinishPrompt,
    Advance(u64),
    Started,
    NoInput,
    Result(u8, u16, bool),
    Queue(bool),
}

fn speech_step() -> impl Strategy<Value = SpeechStep> {
    prop_oneof![
        2 => prop::sample::select(vec!['0', '1', '2', '5', '#']).prop_map(SpeechStep::Key),
        4 => Just(SpeechStep::FinishPrompt),
        2 => (0u64..15_000).prop_map(SpeechStep::Advance),
        2 => Just(SpeechStep::Started),
        1 => Just(SpeechStep::NoInput),
        4 => (0u8..10, 0u16..=1000, any::<bool>()).prop_map(|(m, c, d)| SpeechStep::Result(m, c, d)),
        1 => any::<bool>().prop_map(SpeechStep::Queue),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random speech sessions on the hotline's speech flow: never a panic, at most one hang-up,
    /// listening turns balanced, and no spoken digit string ever reaches a record or an event.
    #[test]
    fn random_speech_sessions_never_leak_digits(steps in prop::collection::vec(speech_step(), 1..80)) {
        let ctx = CallContext { call_id: "p".into(), dialed: "speech".into(), trunk: None, caller: CallerAttributes::default() };
        let mut call = Call::new(hotline(), &FlowId("speech".into()), ctx).unwrap();
        let mut now = Instant::now();
        let wall = Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap();
        call.start(now, wall);
        call.handle_event(Event::Answered, now, wall);
        let meanings = ["balance", "lost_card", "payment", "agent", "callback", "hours", "weather"];
        let mut last_prompt = None;
        let mut listening = false;
        let mut hangups = 0;
        let mut log = Vec::new();
        for s in steps {
            match s {
                SpeechStep::Key(k) => call.handle_event(Event::Dtmf(k), now, wall),
                SpeechStep::FinishPrompt => if let Some(id) = last_prompt.take() { call.handle_event(Event::PromptFinished(id), now, wall) },
                SpeechStep::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    if call.poll_timeout().is_some_and(|t| t <= now) {
                        call.handle_timeout(now, wall);
                    }
                }
                SpeechStep::Started => call.handle_event(Event::SpeechStarted, now, wall),
                SpeechStep::NoInput => call.handle_event(Event::SpeechNoInput, now, wall),
                SpeechStep::Result(m, c, digits) => {
                    let (transcript, meaning) = if digits {
                        ("my account is 4 1 5 9 2 6 3 8".to_owned(), Some(SpeechMeaning::Digits("41592638".into())))
                    } else {
                        match m {
                            7 => ("yes".to_owned(), Some(SpeechMeaning::Yes)),
                            8 => ("no".to_owned(), Some(SpeechMeaning::No)),
                            9 => ("hmm".to_owned(), None),
                            i => ("words".to_owned(), meanings.get(i as usize).map(|n| SpeechMeaning::Intent((*n).to_owned()))),
                        }
                    };
                    call.handle_event(Event::SpeechResult(SpeechResult { transcript, meaning, confidence: f32::from(c) / 1000.0 }), now, wall);
                }
                SpeechStep::Queue(ok) => call.handle_event(Event::QueueResult(if ok { QueueOutcome::Connected { agent: "a".into() } } else { QueueOutcome::Failed { reason: "x".into() } }), now, wall),
            }
            while let Some(a) = call.poll_action() {
                match a {
                    Action::Play { id, .. } | Action::Say { id, .. } => last_prompt = Some(id),
                    Action::Hangup { .. } => hangups += 1,
                    Action::StartListening(r) => {
                        prop_assert!(r.no_input > Duration::ZERO && r.reject_below <= 1.0);
                        listening = true;
                    }
                    Action::StopListening => {
                        prop_assert!(listening, "StopListening without a turn");
                        listening = false;
                    }
                    _ => {}
                }
            }
            while let Some(e) = call.poll_event() {
                log.push(e);
            }
            prop_assert!(hangups <= 1);
            if call.is_finished() {
                prop_assert!(call.poll_timeout().is_none());
            }
        }
        let json = serde_json::to_string(&log).unwrap() + &serde_json::to_string(call.summary()).unwrap();
        prop_assert!(!json.contains("4159") && !json.contains("4 1 5 9"), "{}", json);
        prop_assert!(!call.var("speech.transcript").unwrap_or_default().contains("4 1 5 9"));
    }
}
