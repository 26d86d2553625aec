//! Speech steps in the interpreter: listening requests, barge-in ordering, accept / confirm /
//! reject-retry-fallback / no-input paths, keys during speech, transcript redaction, the
//! validation of the speech keys and the sample hotline's speech flow.
#![allow(clippy::unwrap_used, missing_docs)]
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use frontdoor_ivr::*;

fn plan(src: &str) -> Arc<Dialplan> {
    match check_str(Path::new("test.toml"), src, None) {
        Ok(l) => l.plan,
        Err(d) => panic!(
            "{}",
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn errors(src: &str) -> Vec<Diagnostic> {
    match check_str(Path::new("test.toml"), src, None) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(d) => d,
    }
}

const HEAD: &str = "default_language = \"en\"\nlanguages = [\"en\", \"zh\"]\n[[route]]\ndefault = true\nflow = \"main\"\n[flows.main]\nstart = \"ask\"\n";

/// A speech menu `ask` with two intents, plus target steps and `bye`.
fn menu(extra: &str) -> String {
    format!(
        "{HEAD}[flows.main.steps.ask]\nverb = \"menu\"\ninput = [\"speech\", \"dtmf\"]\n\
         say = \"What can I do for you?\"\noptions = {{ \"1\" = \"lost\", \"0\" = \"agent\" }}\n\
         fallback = \"agent\"\nretries = 1\n{extra}\n\
         [flows.main.steps.ask.intents]\nlost_card = {{ next = \"lost\", phrases = [\"I lost my card\"] }}\n\
         agent = {{ next = \"agent\", phrases = [\"an agent\"] }}\n\
         [flows.main.steps.lost]\nverb = \"say\"\ntext = \"Blocking your card.\"\nnext = \"bye\"\n\
         [flows.main.steps.agent]\nverb = \"say\"\ntext = \"Connecting you.\"\nnext = \"bye\"\n\
         [flows.main.steps.bye]\nverb = \"hangup\"\nreason = \"done\"\n"
    )
}

struct H {
    call: Call,
    now: Instant,
    wall: DateTime<Utc>,
    log: Vec<IvrEvent>,
}

impl H {
    fn new(p: Arc<Dialplan>) -> Self {
        let ctx = CallContext {
            call_id: "s1".into(),
            dialed: "4000".into(),
            trunk: None,
            caller: CallerAttributes::default(),
        };
        let mut h = H {
            call: Call::new(p, &FlowId("main".into()), ctx).unwrap(),
            now: Instant::now(),
            wall: Utc.with_ymd_and_hms(2026, 11, 25, 15, 0, 0).unwrap(),
            log: Vec::new(),
        };
        h.call.start(h.now, h.wall);
        h
    }
    fn actions(&mut self) -> Vec<Action> {
        let mut v = Vec::new();
        while let Some(a) = self.call.poll_action() {
            v.push(a);
        }
        while let Some(e) = self.call.poll_event() {
            self.log.push(e);
        }
        v
    }
    fn ev(&mut self, e: Event) -> Vec<Action> {
        self.call.handle_event(e, self.now, self.wall);
        self.actions()
    }
    fn advance(&mut self, d: Duration) -> Vec<Action> {
        let end = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.call.poll_timeout() {
            if t > end {
                break;
            }
            self.now = t;
            self.call.handle_timeout(self.now, self.wall);
            out.extend(self.actions());
        }
        self.now = end;
        out
    }
    /// Finish the last prompt of `a`.
    fn done(&mut self, a: &[Action]) -> Vec<Action> {
        let id = a.iter().rev().find_map(playback).expect("no prompt");
        self.ev(Event::PromptFinished(id))
    }
    fn result(
        &mut self,
        transcript: &str,
        meaning: Option<SpeechMeaning>,
        confidence: f32,
    ) -> Vec<Action> {
        self.ev(Event::SpeechResult(SpeechResult {
            transcript: transcript.into(),
            meaning,
            confidence,
        }))
    }
    fn speech_log(&self) -> Vec<SpeechTurnRecord> {
        self.log
            .iter()
            .filter_map(|e| match e {
                IvrEvent::Speech(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }
}

fn playback(a: &Action) -> Option<PlaybackId> {
    match a {
        Action::Play { id, .. } | Action::Say { id, .. } => Some(*id),
        _ => None,
    }
}

fn said(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|a| match a {
            Action::Say { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn listen(a: &[Action]) -> Option<ListenRequest> {
    a.iter().find_map(|a| match a {
        Action::StartListening(r) => Some((**r).clone()),
        _ => None,
    })
}

/// Short names of the actions, for order checks.
fn kinds(a: &[Action]) -> Vec<&'static str> {
    a.iter()
        .map(|a| match a {
            Action::StartDigitCollection => "start_digits",
            Action::StopDigitCollection => "stop_digits",
            Action::StartListening(_) => "listen",
            Action::StopListening => "stop_listening",
            Action::StopPlayback { .. } => "stop_playback",
            Action::Say { .. } => "say",
            Action::Play { .. } => "play",
            Action::Hangup { .. } => "hangup",
            _ => "other",
        })
        .collect()
}

fn intent(name: &str) -> Option<SpeechMeaning> {
    Some(SpeechMeaning::Intent(name.into()))
}

#[test]
fn a_speech_step_listens_before_its_prompt_with_the_steps_expectations() {
    let mut h = H::new(plan(&menu(
        "end_silence = 1.5\nmax_speech = 8\nno_input_timeout = 4\naccept = 0.8\nreject = 0.5",
    )));
    let a = h.actions();
    assert_eq!(kinds(&a), ["start_digits", "listen", "say"]);
    let r = listen(&a).unwrap();
    assert_eq!(r.step, "ask");
    let mut names: Vec<&str> = r.intents.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["agent", "lost_card"]);
    let lost = r.intents.iter().find(|i| i.name == "lost_card").unwrap();
    assert_eq!(lost.phrases, ["I lost my card"]);
    assert!(r.barge_in && !r.yes_no && !r.confirmation);
    assert_eq!(r.digits, None);
    assert_eq!(r.end_silence, Duration::from_millis(1500));
    assert_eq!(r.max_speech, Duration::from_secs(8));
    assert_eq!(r.no_input, Duration::from_secs(4));
    assert_eq!(r.reject_below, 0.5);
    assert_eq!(r.language, "en");
}

#[test]
fn barge_in_stops_the_prompt_first_and_an_accepted_intent_routes() {
    let mut h = H::new(plan(&menu("")));
    let a = h.actions();
    let prompt = a.iter().find_map(playback).unwrap();
    // the caller starts talking over the prompt
    let a = h.ev(Event::SpeechStarted);
    assert_eq!(
        a,
        vec![Action::StopPlayback { id: prompt }],
        "barge-in: stop first, nothing else"
    );
    // a late PromptFinished of the stopped prompt changes nothing
    assert!(h.ev(Event::PromptFinished(prompt)).is_empty());
    let a = h.result("I lost my card", intent("lost_card"), 0.92);
    assert_eq!(said(&a), ["Blocking your card."]);
    assert!(!kinds(&a).contains(&"listen"));
    assert_eq!(h.call.var("speech.intent"), Some("lost_card"));
    assert_eq!(h.call.var("speech.transcript"), Some("I lost my card"));
    let rec = h.call.summary().speech.clone();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].decision, SpeechDecision::Accepted);
    assert_eq!(rec[0].confidence, 0.92);
    assert_eq!(h.call.summary().digits[0].digits, "lost_card");
    assert!(
        h.log
            .iter()
            .any(|e| matches!(e, IvrEvent::Route { to, .. } if to == "lost"))
    );
}

#[test]
fn without_barge_in_speech_during_the_prompt_does_not_stop_it() {
    let mut h = H::new(plan(&menu("barge_in = false")));
    let a = h.actions();
    assert!(!listen(&a).unwrap().barge_in);
    assert!(h.ev(Event::SpeechStarted).is_empty());
    // the prompt ends; the result then routes
    h.done(&a);
    let a = h.result("an agent please", intent("agent"), 0.8);
    assert_eq!(said(&a), ["Connecting you."]);
}

#[test]
fn mid_confidence_is_confirmed_automatically_yes_routes() {
    let mut h = H::new(plan(&menu("")));
    let a = h.actions();
    h.done(&a);
    h.ev(Event::SpeechStarted);
    let a = h.result("I lost my cat", intent("lost_card"), 0.6);
    assert_eq!(kinds(&a), ["listen", "say"]);
    assert_eq!(said(&a), ["Did you say lost card?"]);
    let r = listen(&a).unwrap();
    assert!(r.confirmation && r.yes_no && r.intents.is_empty());
    h.done(&a);
    let a = h.result("yes", Some(SpeechMeaning::Yes), 0.95);
    assert_eq!(said(&a), ["Blocking your card."]);
    let d: Vec<SpeechDecision> = h.speech_log().iter().map(|r| r.decision).collect();
    assert_eq!(d, [SpeechDecision::Confirm, SpeechDecision::Confirmed]);
}

#[test]
fn confirmation_no_asks_again_and_keys_answer_it_too() {
    let mut h = H::new(plan(&menu("")));
    let a = h.actions();
    h.done(&a);
    h.result("a gent", intent("agent"), 0.5);
    let a = h.result("no", Some(SpeechMeaning::No), 0.9);
    // no "sorry": the main prompt again, listening again (not a confirmation)
    assert_eq!(said(&a), ["What can I do for you?"]);
    let r = listen(&a).unwrap();
    assert!(!r.confirmation);
    assert!(h.log.iter().any(|e| matches!(
        e,
        IvrEvent::Gather {
            failure: Some(GatherFailure::NotUnderstood),
            attempt: 1,
            ..
        }
    )));
    // second attempt: mid confidence again, confirmed with key 1 during the question
    h.done(&a);
    let a = h.result("lost card", intent("lost_card"), 0.55);
    assert_eq!(said(&a), ["Did you say lost card?"]);
    let a = h.ev(Event::Dtmf('1'));
    assert_eq!(kinds(&a)[0], "stop_playback");
    assert!(kinds(&a).contains(&"stop_listening"));
    assert_eq!(said(&a), ["Blocking your card."]);
    let d: Vec<SpeechDecision> = h.speech_log().iter().map(|r| r.decision).collect();
    assert_eq!(
        d,
        [
            SpeechDecision::Confirm,
            SpeechDecision::Denied,
            SpeechDecision::Confirm,
            SpeechDecision::Confirmed
        ]
    );
}

#[test]
fn rejected_speech_says_sorry_retries_then_falls_back_to_keys() {
    let mut h = H::new(plan(&menu(
        "speech_retries = 1\ndtmf_say = \"Press 1 for a lost card or 0 for an agent.\"",
    )));
    let a = h.actions();
    h.done(&a);
    // below reject
    let a = h.result("the weather", intent("agent"), 0.2);
    assert_eq!(kinds(&a), ["listen", "say"]);
    assert_eq!(said(&a), ["Sorry, I didn't catch that."]);
    let a = h.done(&a);
    assert_eq!(said(&a), ["What can I do for you?"]);
    h.done(&a);
    // not an expected answer at all
    let a = h.result("purple", None, 0.0);
    assert!(listen(&a).is_none(), "speech is over: {a:?}");
    assert_eq!(said(&a), ["Sorry, I didn't catch that."]);
    assert!(
        h.log
            .iter()
            .any(|e| matches!(e, IvrEvent::SpeechFallback { step } if step == "ask"))
    );
    let a = h.done(&a);
    assert_eq!(said(&a), ["Press 1 for a lost card or 0 for an agent."]);
    // a late result is ignored now
    assert!(h.result("agent", intent("agent"), 0.99).is_empty());
    // keys still work; with retries = 1 the key phase has 2 attempts, then `fallback`
    h.done(&a);
    let a = h.advance(Duration::from_secs(5));
    assert_eq!(said(&a), ["What can I do for you?"]);
    h.done(&a);
    let a = h.advance(Duration::from_secs(5));
    assert_eq!(said(&a), ["Connecting you."]);
    let d: Vec<SpeechDecision> = h.speech_log().iter().map(|r| r.decision).collect();
    assert_eq!(d, [SpeechDecision::Rejected, SpeechDecision::Rejected]);
}

#[test]
fn no_input_plays_the_no_input_path_and_the_safety_timer_stops_the_turn() {
    let mut h = H::new(plan(&menu("no_input_timeout = 3\nspeech_retries = 2")));
    let a = h.actions();
    h.done(&a);
    // the endpointer reports no input
    let a = h.ev(Event::SpeechNoInput);
    assert_eq!(kinds(&a), ["listen", "say"]);
    assert_eq!(said(&a), ["Sorry, I didn't hear anything."]);
    assert!(h.log.iter().any(|e| matches!(
        e,
        IvrEvent::Gather {
            failure: Some(GatherFailure::NoSpeech),
            ..
        }
    )));
    let a = h.done(&a);
    h.done(&a);
    // the driver never reports: the interpreter's timer (no_input + 1 s) ends the turn itself
    assert!(h.advance(Duration::from_millis(3900)).is_empty());
    let a = h.advance(Duration::from_millis(200));
    assert_eq!(kinds(&a), ["stop_listening", "listen", "say"]);
    assert_eq!(said(&a), ["Sorry, I didn't hear anything."]);
    let d: Vec<SpeechDecision> = h.speech_log().iter().map(|r| r.decision).collect();
    assert_eq!(d, [SpeechDecision::NoInput, SpeechDecision::NoInput]);
}

#[test]
fn speech_started_waits_for_the_result_then_gives_up() {
    let mut h = H::new(plan(&menu("max_speech = 5\nend_silence = 1")));
    let a = h.actions();
    h.done(&a);
    h.ev(Event::SpeechStarted);
    // the normal no-input timer no longer applies
    assert!(h.advance(Duration::from_secs(15)).is_empty());
    let a = h.advance(Duration::from_secs(2));
    assert_eq!(kinds(&a), ["stop_listening", "listen", "say"]);
    assert_eq!(h.speech_log()[0].decision, SpeechDecision::Rejected);
}

#[test]
fn a_key_during_speech_ends_the_turn_and_routes_like_a_menu() {
    let mut h = H::new(plan(&menu("")));
    let a = h.actions();
    let prompt = a.iter().find_map(playback).unwrap();
    let a = h.ev(Event::Dtmf('0'));
    assert_eq!(
        kinds(&a)[..3],
        ["stop_listening", "stop_playback", "stop_digits"],
        "{a:?}"
    );
    assert!(a.contains(&Action::StopPlayback { id: prompt }));
    assert_eq!(said(&a), ["Connecting you."]);
    // the recogniser's late result is ignored
    assert!(h.result("lost card", intent("lost_card"), 0.9).is_empty());
}

fn digits_step(extra: &str) -> String {
    format!(
        "{HEAD}[flows.main.steps.ask]\nverb = \"gather\"\ninput = [\"speech\", \"dtmf\"]\n\
         say = \"Your card number?\"\nmin_digits = 4\nmax_digits = 8\nvar = \"card\"\nnext = \"bye\"\n{extra}\n\
         [flows.main.steps.bye]\nverb = \"hangup\"\nreason = \"done\"\n"
    )
}

#[test]
fn spoken_digits_are_redacted_in_records_and_events() {
    let mut h = H::new(plan(&digits_step("sensitive = true")));
    let a = h.actions();
    let r = listen(&a).unwrap();
    assert_eq!(r.digits, Some((4, 8)));
    h.done(&a);
    h.result(
        "my card is 4 1 5 9 2 6 3 8.",
        Some(SpeechMeaning::Digits("41592638".into())),
        0.95,
    );
    assert_eq!(
        h.call.var("card"),
        Some("41592638"),
        "the dialplan gets the digits"
    );
    let rec = &h.call.summary().speech[0];
    assert_eq!(rec.transcript, "my card is [digits].");
    assert_eq!(rec.meaning, Some(SpeechMeaning::Digits("[digits]".into())));
    assert_eq!(h.call.summary().digits[0].digits, REDACTED);
    let json = serde_json::to_string(&h.log).unwrap();
    assert!(
        !json.contains("4159") && !json.contains("4 1 5 9"),
        "{json}"
    );
    let ev = h
        .log
        .iter()
        .find(|e| matches!(e, IvrEvent::Speech(_)))
        .unwrap();
    assert_eq!(
        serde_json::to_value(ev).unwrap(),
        serde_json::json!({"type": "ivr.speech", "step": "ask", "attempt": 1,
            "transcript": "my card is [digits].", "meaning": {"kind": "digits", "value": "[digits]"},
            "confidence": 0.95, "decision": "accepted"})
    );
    assert_eq!(
        h.call.var("speech.transcript"),
        Some("my card is [digits].")
    );
}

#[test]
fn keep_digits_keeps_them() {
    let mut h = H::new(plan(&digits_step("keep_digits = true")));
    let a = h.actions();
    h.done(&a);
    h.result("1 2 3 4", Some(SpeechMeaning::Digits("1234".into())), 0.9);
    let rec = &h.call.summary().speech[0];
    assert_eq!(rec.transcript, "1 2 3 4");
    assert_eq!(rec.meaning, Some(SpeechMeaning::Digits("1234".into())));
}

#[test]
fn spoken_digits_that_fail_validation_retry() {
    let mut h = H::new(plan(&digits_step("validate = '[0-9]{8}'")));
    let a = h.actions();
    h.done(&a);
    let a = h.result("1 2 3 4", Some(SpeechMeaning::Digits("1234".into())), 0.9);
    assert!(listen(&a).is_some(), "listening again: {a:?}");
    assert!(h.log.iter().any(|e| matches!(
        e,
        IvrEvent::Gather {
            failure: Some(GatherFailure::NoMatch),
            ..
        }
    )));
}

#[test]
fn mid_confidence_digits_are_not_read_back_unless_kept() {
    let mut h = H::new(plan(&digits_step("")));
    let a = h.actions();
    h.done(&a);
    let a = h.result("4 1 5 9", Some(SpeechMeaning::Digits("4159".into())), 0.6);
    assert_eq!(said(&a), ["Sorry, I didn't catch that."]);
    let mut h = H::new(plan(&digits_step("keep_digits = true")));
    let a = h.actions();
    h.done(&a);
    let a = h.result("4 1 5 9", Some(SpeechMeaning::Digits("4159".into())), 0.6);
    assert_eq!(said(&a), ["Did you say 4 1 5 9?"]);
    h.done(&a);
    h.result("yes", Some(SpeechMeaning::Yes), 0.9);
    assert_eq!(h.call.var("card"), Some("4159"));
}

#[test]
fn redaction_rules() {
    assert_eq!(
        redact_digits("my card is 4 1 5 9 2 6 3 8"),
        "my card is [digits]"
    );
    assert_eq!(
        redact_digits("account 41592638, thanks"),
        "account [digits], thanks"
    );
    assert_eq!(
        redact_digits("four one five nine please"),
        "[digits] please"
    );
    assert_eq!(redact_digits("it is 4159-2638."), "it is [digits].");
    assert_eq!(redact_digits("I lost one card"), "I lost one card");
    assert_eq!(redact_digits("call me at 5 pm"), "call me at 5 pm");
    assert_eq!(redact_digits("oh no"), "oh no");
    assert_eq!(redact_digits(""), "");
}

#[test]
fn an_explicit_confirmation_step_gets_the_meaning() {
    let src = menu("confirm = \"check\"").replace(
        "[flows.main.steps.bye]",
        "[flows.main.steps.check]\nverb = \"gather\"\ninput = [\"speech\", \"dtmf\"]\n\
         say = \"Did you mean {speech.meaning}?\"\nexpect = [\"yes\", \"no\"]\nvar = \"ok\"\nnext = \"bye\"\n\
         [flows.main.steps.bye]",
    );
    let mut h = H::new(plan(&src));
    let a = h.actions();
    h.done(&a);
    let a = h.result("lost card", intent("lost_card"), 0.6);
    assert!(kinds(&a).contains(&"stop_digits"));
    assert_eq!(said(&a), ["Did you mean lost card?"]);
    let r = listen(&a).unwrap();
    assert!(r.yes_no && !r.confirmation);
    assert_eq!(h.call.var("speech.intent"), Some("lost_card"));
    h.done(&a);
    h.result("yes", Some(SpeechMeaning::Yes), 0.9);
    assert_eq!(h.call.var("ok"), Some("yes"));
}

#[test]
fn confirm_none_rejects_mid_confidence() {
    let mut h = H::new(plan(&menu("confirm = \"none\"")));
    let a = h.actions();
    h.done(&a);
    let a = h.result("lost card", intent("lost_card"), 0.6);
    assert_eq!(said(&a), ["Sorry, I didn't catch that."]);
}

#[test]
fn chinese_calls_get_chinese_builtin_prompts() {
    let src = menu("").replace("default_language = \"en\"", "default_language = \"zh\"");
    let mut h = H::new(plan(&src));
    let a = h.actions();
    assert_eq!(listen(&a).unwrap().language, "zh");
    h.done(&a);
    let a = h.ev(Event::SpeechNoInput);
    assert_eq!(said(&a), ["对不起，我没有听到您的声音。"]);
}

#[test]
fn speech_keys_are_validated_with_positions() {
    let e = errors(&menu("accept = 1.5"));
    assert!(
        e.iter()
            .any(|d| d.to_string().contains("`accept` must be a confidence")),
        "{e:?}"
    );
    let src = menu("accept = 0.5\nreject = 0.6");
    let e = errors(&src);
    let d = e
        .iter()
        .find(|d| d.to_string().contains("above `accept`"))
        .unwrap();
    let line = src.lines().position(|l| l == "reject = 0.6").unwrap() + 1;
    assert_eq!((d.line, d.column), (line, 10), "{d}");
    let e = errors(&menu("end_silence = 10"));
    assert!(
        e.iter().any(|d| d
            .to_string()
            .contains("`end_silence` must be from 0.2 to 5")),
        "{e:?}"
    );
    let e = errors(&menu("confirm = \"nowhere\""));
    assert!(e.iter().any(|d| d.to_string().contains("nowhere")), "{e:?}");
    let e = errors(&menu("speech_retries = 99"));
    assert!(
        e.iter().any(|d| d.to_string().contains("speech_retries")),
        "{e:?}"
    );
    // speech keys on a keys-only step
    let src = menu("").replace(
        "input = [\"speech\", \"dtmf\"]",
        "input = [\"dtmf\"]\nend_silence = 1",
    );
    let e = errors(&src);
    assert!(
        e.iter().any(|d| d.to_string().contains("takes no speech")),
        "{e:?}"
    );
    // speech without keys
    let src = menu("").replace("input = [\"speech\", \"dtmf\"]", "input = [\"speech\"]");
    let e = errors(&src);
    assert!(
        e.iter()
            .any(|d| d.to_string().contains("speech but no keys")),
        "{e:?}"
    );
}

// ---- the sample hotline's speech flow --------------------------------------------------------

fn hotline_speech() -> H {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dialplans/hotline.toml");
    let plan = check_file(&p, None).unwrap().plan;
    let ctx = CallContext {
        call_id: "h1".into(),
        dialed: "speech".into(),
        trunk: None,
        caller: CallerAttributes::default(),
    };
    let mut h = H {
        call: Call::new(plan, &FlowId("speech".into()), ctx).unwrap(),
        now: Instant::now(),
        wall: Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap(),
        log: Vec::new(),
    };
    h.call.start(h.now, h.wall);
    assert_eq!(h.actions(), vec![Action::Answer]);
    h
}

#[test]
fn hotline_routes_each_intent_by_speech() {
    for (intent_name, first_say) in [
        (
            "balance",
            "Please say or key in your eight-digit account number.",
        ),
        (
            "lost_card",
            "You want to block a lost or stolen card. Is that right? Say yes or press 1, say no or press 2.",
        ),
        (
            "hours",
            "We are open Monday to Friday, 8 AM to 8 PM, and Saturday, 9 AM to 5 PM, China time.",
        ),
    ] {
        let mut h = hotline_speech();
        let a = h.ev(Event::Answered);
        let r = listen(&a).unwrap();
        assert_eq!(r.intents.len(), 6);
        assert_eq!(
            said(&a)[0],
            "Tell me in a few words what you're calling about. You can also press 0 for an agent."
        );
        h.ev(Event::SpeechStarted);
        let a = h.result("x", intent(intent_name), 0.9);
        assert_eq!(said(&a)[0], first_say, "{intent_name}");
    }
    for (intent_name, kind) in [
        ("agent", "enqueue"),
        ("payment", "enqueue"),
        ("callback", "record"),
    ] {
        let mut h = hotline_speech();
        h.ev(Event::Answered);
        let a = h.result("x", intent(intent_name), 0.9);
        let hit = a.iter().any(|a| match kind {
            "enqueue" => matches!(a, Action::Enqueue(_)),
            _ => matches!(a, Action::Record { .. }),
        });
        assert!(hit, "{intent_name}: {a:?}");
    }
}

#[test]
fn hotline_lost_card_confirmation_by_voice_and_account_digits_by_voice() {
    let mut h = hotline_speech();
    let a = h.ev(Event::Answered);
    h.done(&a);
    let a = h.result("somebody took my wallet", intent("lost_card"), 0.6);
    assert_eq!(said(&a), ["Did you say lost card?"]);
    h.done(&a);
    let a = h.result("yes", Some(SpeechMeaning::Yes), 0.9);
    assert_eq!(
        said(&a)[0],
        "You want to block a lost or stolen card. Is that right? Say yes or press 1, say no or press 2."
    );
    h.done(&a);
    let a = h.result("yes", Some(SpeechMeaning::Yes), 0.9);
    assert!(a.iter().any(|a| matches!(a, Action::Enqueue(_))), "{a:?}");
    assert_eq!(h.call.var("confirm"), Some("yes"));
    let mut h = hotline_speech();
    let a = h.ev(Event::Answered);
    h.done(&a);
    let a = h.result("I want to check my balance", intent("balance"), 0.58);
    assert_eq!(said(&a), ["Did you say balance?"]);
    h.done(&a);
    let a = h.result("yes", Some(SpeechMeaning::Yes), 0.9);
    assert_eq!(
        said(&a),
        ["Please say or key in your eight-digit account number."]
    );
    assert_eq!(listen(&a).unwrap().digits, Some((8, 8)));
    h.done(&a);
    let a = h.result(
        "it's 1 2 3 4 5 6 7 8",
        Some(SpeechMeaning::Digits("12345678".into())),
        0.9,
    );
    assert!(a.iter().any(|a| matches!(a, Action::Enqueue(_))), "{a:?}");
    let json = serde_json::to_string(&h.call.summary()).unwrap();
    assert!(
        !json.contains("1 2 3 4") && !json.contains("12345678"),
        "{json}"
    );
}

#[test]
fn training_data_is_resolved_next_to_the_dialplan_and_reaches_the_listen_request() {
    let dir = std::env::temp_dir().join(format!("ivr-training-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("intents")).unwrap();
    std::fs::write(dir.join("intents/bank.toml"), "[intents]\n").unwrap();
    let src = menu("training = \"intents/bank.toml\"");
    let p = match check_str(&dir.join("plan.toml"), &src, None) {
        Ok(l) => l.plan,
        Err(d) => panic!("{d:?}"),
    };
    let mut h = H::new(p);
    let a = h.actions();
    let r = listen(&a).unwrap();
    assert_eq!(r.training, Some(dir.join("intents/bank.toml")));
    // a missing file is a load warning naming it (the recogniser reports it again)
    let loaded = match check_str(
        &dir.join("plan.toml"),
        &menu("training = \"intents/missing.toml\""),
        None,
    ) {
        Ok(l) => l,
        Err(d) => panic!("{d:?}"),
    };
    assert!(
        loaded
            .warnings
            .iter()
            .any(|d| d.to_string().contains("missing.toml")),
        "{:?}",
        loaded.warnings
    );
    // without the key: none
    let mut h = H::new(plan(&menu("")));
    let a = h.actions();
    assert_eq!(listen(&a).unwrap().training, None);
    let _ = std::fs::remove_dir_all(&dir);
}
