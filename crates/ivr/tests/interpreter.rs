//! Interpreter tests with simulated time: every verb, every timeout/retry/invalid path.
#![allow(clippy::unwrap_used, missing_docs)]
// One `Instant::now()` per call is the simulated epoch; time then only advances by hand.
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

/// Wrap steps into a dialplan with flow `main` starting at `start`.
fn flow(start: &str, steps: &str) -> Arc<Dialplan> {
    plan(&format!(
        "default_language = \"en\"\nlanguages = [\"en\", \"zh\"]\n[[route]]\ndefault = true\nflow = \"main\"\n\
         [hours.office]\ntimezone = \"America/New_York\"\nmon = \"09:00-17:00\"\ntue = \"09:00-17:00\"\n\
         wed = \"09:00-17:00\"\nthu = \"09:00-17:00\"\nfri = \"09:00-17:00\"\nholidays = [2026-12-25]\n\
         [flows.main]\nstart = \"{start}\"\n{steps}"
    ))
}

struct H {
    call: Call,
    now: Instant,
    wall: DateTime<Utc>,
    log: Vec<IvrEvent>,
}

impl H {
    fn new(p: Arc<Dialplan>, caller: CallerAttributes) -> Self {
        Self::at(
            p,
            caller,
            Utc.with_ymd_and_hms(2026, 11, 25, 15, 0, 0).unwrap(),
        )
    }
    fn at(p: Arc<Dialplan>, caller: CallerAttributes, wall: DateTime<Utc>) -> Self {
        let ctx = CallContext {
            call_id: "c1".into(),
            dialed: "4000".into(),
            trunk: None,
            caller,
        };
        let call = Call::new(p, &FlowId("main".into()), ctx).unwrap();
        let mut h = Self {
            call,
            now: Instant::now(),
            wall,
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
    fn dtmf(&mut self, keys: &str) -> Vec<Action> {
        let mut out = Vec::new();
        for k in keys.chars() {
            out.extend(self.ev(Event::Dtmf(k)));
        }
        out
    }
    /// Advance simulated time, firing due timeouts.
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
    fn done(&mut self, a: &[Action]) -> Vec<Action> {
        let id = a
            .iter()
            .rev()
            .find_map(playback)
            .expect("no prompt to finish");
        self.ev(Event::PromptFinished(id))
    }
    fn outcome(&self) -> Option<Outcome> {
        self.call.summary().outcome.clone()
    }
}

fn playback(a: &Action) -> Option<PlaybackId> {
    match a {
        Action::Play { id, .. } | Action::Say { id, .. } => Some(*id),
        _ => None,
    }
}

fn said(a: &[Action]) -> Vec<(String, String)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Say { text, language, .. } => Some((text.clone(), language.clone())),
            _ => None,
        })
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn hung_up(a: &[Action]) -> bool {
    a.iter().any(|a| matches!(a, Action::Hangup { .. }))
}

const BYE: &str = "[flows.main.steps.bye]\nverb = \"hangup\"\nreason = \"done\"\n";

#[test]
fn answer_say_hangup() {
    let p = flow(
        "a",
        &format!(
            "[flows.main.steps.a]\nverb = \"answer\"\nnext = \"hi\"\n[flows.main.steps.hi]\nverb = \"say\"\ntext = \"Hello {{caller.name}}\"\nnext = \"bye\"\n{BYE}"
        ),
    );
    let mut h = H::new(
        p,
        CallerAttributes {
            name: Some("Ada".into()),
            number: Some("+1".into()),
            ..Default::default()
        },
    );
    assert_eq!(h.actions(), vec![Action::Answer]);
    let a = h.ev(Event::Answered);
    assert_eq!(said(&a), vec![("Hello Ada".into(), "en".into())]);
    assert!(h.call.poll_timeout().is_none());
    let a = h.done(&a);
    assert_eq!(
        a,
        vec![Action::Hangup {
            reason: "done".into()
        }]
    );
    assert!(h.call.is_finished());
    assert_eq!(
        h.outcome(),
        Some(Outcome::HungUp {
            reason: "done".into()
        })
    );
    assert_eq!(h.call.summary().path, vec!["a", "hi", "bye"]);
    assert!(matches!(h.log[0], IvrEvent::Started { .. }));
    assert!(matches!(
        h.log[1],
        IvrEvent::Recognition {
            caller: Recognition::New,
            ..
        }
    ));
    assert!(matches!(h.log.last(), Some(IvrEvent::Ended { .. })));
    // Events after the end are ignored.
    assert!(h.ev(Event::Dtmf('1')).is_empty());
}

#[test]
fn play_and_end_of_flow() {
    let p = flow(
        "p",
        "[flows.main.steps.p]\nverb = \"play\"\nfile = \"hello.wav\"\n",
    );
    let mut h = H::new(p, CallerAttributes::default());
    let a = h.actions();
    assert!(matches!(&a[0], Action::Play { file, .. } if file == "hello.wav"));
    // A stray DTMF during a non-barge-in prompt and a late PromptFinished are ignored.
    assert!(h.dtmf("5").is_empty());
    assert!(h.ev(Event::PromptFinished(PlaybackId(999))).is_empty());
    let a = h.done(&a);
    assert!(hung_up(&a));
    assert_eq!(
        h.outcome(),
        Some(Outcome::HungUp {
            reason: "end of flow".into()
        })
    );
}

#[test]
fn language_from_caller_and_per_language_text() {
    let steps = format!(
        "[flows.main.steps.hi]\nverb = \"say\"\ntext = {{ en = \"Hi\", zh = \"你好\" }}\nnext = \"bye\"\n{BYE}"
    );
    let mut h = H::new(
        flow("hi", &steps),
        CallerAttributes {
            language: Some("zh".into()),
            ..Default::default()
        },
    );
    assert_eq!(said(&h.actions()), vec![("你好".into(), "zh".into())]);
    // A language the dialplan does not speak falls back to the default.
    let mut h = H::new(
        flow("hi", &steps),
        CallerAttributes {
            language: Some("fr".into()),
            ..Default::default()
        },
    );
    assert_eq!(said(&h.actions()), vec![("Hi".into(), "en".into())]);
}

fn gather(extra: &str) -> Arc<Dialplan> {
    let fail = if extra.contains("fail") {
        "[flows.main.steps.fail]\nverb = \"say\"\ntext = \"Failed\"\nnext = \"bye\"\n"
    } else {
        ""
    };
    flow(
        "g",
        &format!(
            "[flows.main.steps.g]\nverb = \"gather\"\nsay = \"Enter account\"\ninvalid_say = \"Invalid\"\ntimeout_say = \"No input\"\n\
             min_digits = 4\nmax_digits = 6\ntimeout = 5\ninter_digit_timeout = 3\nretries = 1\nvar = \"acct\"\n{extra}\nnext = \"ok\"\n\
             [flows.main.steps.ok]\nverb = \"say\"\ntext = \"Got {{acct}}\"\nnext = \"bye\"\n{BYE}{fail}"
        ),
    )
}

#[test]
fn gather_with_terminator() {
    let mut h = H::new(gather("on_failure = \"fail\""), CallerAttributes::default());
    let a = h.actions();
    assert_eq!(a[0], Action::StartDigitCollection);
    assert_eq!(said(&a), vec![("Enter account".into(), "en".into())]);
    let a = h.done(&a);
    assert!(a.is_empty());
    assert_eq!(h.call.poll_timeout(), Some(h.now + secs(5)));
    assert!(h.dtmf("1234").is_empty());
    assert_eq!(h.call.poll_timeout(), Some(h.now + secs(3)));
    let a = h.dtmf("#");
    assert_eq!(a[0], Action::StopDigitCollection);
    assert_eq!(said(&a), vec![("Got 1234".into(), "en".into())]);
    assert_eq!(h.call.var("acct"), Some("1234"));
    assert_eq!(
        h.call.summary().digits,
        vec![CollectedDigits {
            step: "g".into(),
            digits: "1234".into(),
            sensitive: false
        }]
    );
    assert!(h.log.iter().any(|e| matches!(e, IvrEvent::Gather { failure: None, digits: Some(d), attempt: 1, .. } if d == "1234")));
}

#[test]
fn gather_completes_at_max_digits_and_barge_in_stops_prompt() {
    let mut h = H::new(gather(""), CallerAttributes::default());
    let a = h.actions();
    let id = a.iter().find_map(playback).unwrap();
    // First key during the prompt stops it.
    let a = h.dtmf("1");
    assert_eq!(a, vec![Action::StopPlayback { id }]);
    // Its late PromptFinished is ignored.
    assert!(h.ev(Event::PromptFinished(id)).is_empty());
    let a = h.dtmf("23456");
    assert_eq!(said(&a), vec![("Got 123456".into(), "en".into())]);
}

#[test]
fn gather_inter_digit_timeout_completes_when_long_enough() {
    let mut h = H::new(gather(""), CallerAttributes::default());
    let a = h.actions();
    h.done(&a);
    h.dtmf("12345");
    assert!(h.advance(secs(2)).is_empty());
    let a = h.advance(secs(1));
    assert_eq!(said(&a), vec![("Got 12345".into(), "en".into())]);
}

#[test]
fn gather_first_digit_timeout_retries_then_fails_to_on_failure() {
    let mut h = H::new(gather("on_failure = \"fail\""), CallerAttributes::default());
    let a = h.actions();
    h.done(&a);
    assert!(h.advance(secs(4)).is_empty());
    let a = h.advance(secs(1));
    // Timeout notice, then the prompt again.
    assert_eq!(said(&a), vec![("No input".into(), "en".into())]);
    let a = h.done(&a);
    assert_eq!(said(&a), vec![("Enter account".into(), "en".into())]);
    h.done(&a);
    let a = h.advance(secs(5));
    assert_eq!(a[0], Action::StopDigitCollection);
    assert_eq!(said(&a), vec![("Failed".into(), "en".into())]);
    let fails: Vec<_> = h
        .log
        .iter()
        .filter_map(|e| match e {
            IvrEvent::Gather {
                failure: Some(f),
                last,
                ..
            } => Some((*f, *last)),
            _ => None,
        })
        .collect();
    assert_eq!(
        fails,
        vec![
            (GatherFailure::Timeout, false),
            (GatherFailure::Timeout, true)
        ]
    );
    assert!(
        h.log
            .iter()
            .any(|e| matches!(e, IvrEvent::Route { step, to } if step == "g" && to == "fail"))
    );
}

#[test]
fn gather_too_short_then_exhausted_without_fallback_hangs_up() {
    let mut h = H::new(gather(""), CallerAttributes::default());
    let a = h.actions();
    h.done(&a);
    h.dtmf("12");
    let a = h.advance(secs(3));
    assert_eq!(said(&a), vec![("Invalid".into(), "en".into())]);
    let a = h.dtmf("9#");
    // Key during the invalid notice stops it and starts the new entry; "9" is too short.
    assert!(a.iter().any(|x| matches!(x, Action::StopPlayback { .. })));
    assert!(hung_up(&a));
    assert_eq!(h.outcome(), Some(Outcome::InputFailed { step: "g".into() }));
    assert!(h.log.iter().any(|e| matches!(e, IvrEvent::Gather { failure: Some(GatherFailure::TooShort), digits: Some(d), .. } if d == "12")));
}

#[test]
fn gather_regex_validation_and_sensitive_redaction() {
    let mut h = H::new(
        gather("validate = '7[0-9]+'\nsensitive = true\non_failure = \"fail\""),
        CallerAttributes::default(),
    );
    let a = h.actions();
    h.done(&a);
    let a = h.dtmf("1234#");
    assert_eq!(said(&a), vec![("Invalid".into(), "en".into())]);
    let a = h.done(&a);
    h.done(&a);
    let a = h.dtmf("7000#");
    assert_eq!(said(&a), vec![("Got 7000".into(), "en".into())]);
    // Digits never appear in the log or the summary.
    let logged = serde_json::to_string(&h.log).unwrap();
    assert!(
        !logged.contains("1234") && !logged.contains("7000"),
        "{logged}"
    );
    assert!(logged.contains(REDACTED));
    assert!(logged.contains("no_match"));
    assert_eq!(h.call.summary().digits[0].digits, REDACTED);
    assert!(h.call.summary().digits[0].sensitive);
}

fn menu() -> Arc<Dialplan> {
    flow(
        "m",
        &format!(
            "[flows.main.steps.m]\nverb = \"menu\"\nsay = \"Press 1 or 2\"\ninvalid_say = \"Bad key\"\ntimeout_say = \"Nothing\"\n\
             options = {{ \"1\" = \"one\", \"2\" = \"two\" }}\nretries = 1\ntimeout = 4\nfallback = \"agent\"\n\
             [flows.main.steps.one]\nverb = \"say\"\ntext = \"One\"\nnext = \"bye\"\n\
             [flows.main.steps.two]\nverb = \"goto\"\nto = \"one\"\n\
             [flows.main.steps.agent]\nverb = \"say\"\ntext = \"Agent\"\nnext = \"bye\"\n{BYE}"
        ),
    )
}

#[test]
fn menu_choice_goto_and_route_event() {
    let mut h = H::new(menu(), CallerAttributes::default());
    h.actions();
    let a = h.dtmf("2");
    assert_eq!(said(&a), vec![("One".into(), "en".into())]);
    assert_eq!(h.call.summary().path, vec!["m", "two", "one"]);
    assert!(
        h.log
            .iter()
            .any(|e| matches!(e, IvrEvent::Route { to, .. } if to == "two"))
    );
}

#[test]
fn menu_invalid_then_timeout_goes_to_fallback() {
    let mut h = H::new(menu(), CallerAttributes::default());
    let a = h.actions();
    h.done(&a);
    let a = h.dtmf("7");
    assert_eq!(said(&a), vec![("Bad key".into(), "en".into())]);
    let a = h.done(&a);
    h.done(&a);
    let a = h.advance(secs(4));
    assert_eq!(said(&a), vec![("Agent".into(), "en".into())]);
    let fails: Vec<_> = h
        .log
        .iter()
        .filter_map(|e| match e {
            IvrEvent::Gather {
                failure: Some(f), ..
            } => Some(*f),
            _ => None,
        })
        .collect();
    assert_eq!(
        fails,
        vec![GatherFailure::NotAnOption, GatherFailure::Timeout]
    );
}

#[test]
fn type_ahead_from_barge_in_prompt_feeds_the_menu() {
    let steps = format!(
        "[flows.main.steps.hi]\nverb = \"say\"\ntext = \"Welcome\"\nbarge_in = true\nnext = \"m\"\n{}",
        {
            let m = "[flows.main.steps.m]\nverb = \"menu\"\nsay = \"Press 1\"\noptions = { \"1\" = \"one\" }\n[flows.main.steps.one]\nverb = \"say\"\ntext = \"One\"\nnext = \"bye\"\n";
            format!("{m}{BYE}")
        }
    );
    let mut h = H::new(flow("hi", &steps), CallerAttributes::default());
    let a = h.actions();
    let id = a.iter().find_map(playback).unwrap();
    let a = h.dtmf("1");
    assert_eq!(a[0], Action::StopPlayback { id });
    // The menu prompt is skipped: the key already chose.
    assert_eq!(said(&a), vec![("One".into(), "en".into())]);
}

fn branches(caller: CallerAttributes, wall: DateTime<Utc>) -> Vec<String> {
    let steps = format!(
        "[flows.main.steps.s]\nverb = \"set\"\nvars = {{ greeting = \"Hi {{caller.name}}\", n = 3 }}\nnext = \"vip\"\n\
         [flows.main.steps.vip]\nverb = \"if\"\nwhen = {{ var = \"caller.vip\", eq = \"true\" }}\nthen = \"sayvip\"\nelse = \"open\"\n\
         [flows.main.steps.sayvip]\nverb = \"say\"\ntext = \"vip {{greeting}}\"\nnext = \"bye\"\n\
         [flows.main.steps.open]\nverb = \"if\"\nwhen = {{ open = \"office\" }}\nthen = \"lang\"\nelse = \"closed\"\n\
         [flows.main.steps.closed]\nverb = \"if\"\nwhen = {{ holiday = \"office\" }}\nthen = \"hol\"\nelse = \"shut\"\n\
         [flows.main.steps.hol]\nverb = \"say\"\ntext = \"holiday\"\nnext = \"bye\"\n\
         [flows.main.steps.shut]\nverb = \"say\"\ntext = \"closed\"\nnext = \"bye\"\n\
         [flows.main.steps.lang]\nverb = \"switch\"\nvar = \"lang\"\ncases = {{ zh = \"zh\" }}\ndefault = \"ret\"\n\
         [flows.main.steps.zh]\nverb = \"say\"\ntext = \"zh open\"\nnext = \"bye\"\n\
         [flows.main.steps.ret]\nverb = \"if\"\nwhen = {{ any = [\"caller.returning\", {{ var = \"caller.tier\", in = [\"gold\"] }}] }}\nthen = \"back\"\nelse = \"new\"\n\
         [flows.main.steps.back]\nverb = \"say\"\ntext = \"welcome back {{caller.name}}\"\nnext = \"bye\"\n\
         [flows.main.steps.new]\nverb = \"say\"\ntext = \"{{greeting}} n={{n}}\"\nnext = \"bye\"\n{BYE}"
    );
    let mut h = H::at(flow("s", &steps), caller, wall);
    said(&h.actions()).into_iter().map(|(t, _)| t).collect()
}

#[test]
fn set_if_switch_and_opening_hours_with_time_zone_and_holidays() {
    // Wednesday 2026-11-25 15:00 UTC = 10:00 New York: open.
    let open = Utc.with_ymd_and_hms(2026, 11, 25, 15, 0, 0).unwrap();
    // 13:00 UTC = 08:00 New York: closed.
    let early = Utc.with_ymd_and_hms(2026, 11, 25, 13, 0, 0).unwrap();
    // Friday 2026-12-25 15:00 UTC: holiday.
    let xmas = Utc.with_ymd_and_hms(2026, 12, 25, 15, 0, 0).unwrap();
    let ada = || CallerAttributes {
        name: Some("Ada".into()),
        number: Some("+15550001".into()),
        ..Default::default()
    };
    assert_eq!(
        branches(CallerAttributes { vip: true, ..ada() }, early),
        vec!["vip Hi Ada"]
    );
    assert_eq!(branches(ada(), early), vec!["closed"]);
    assert_eq!(branches(ada(), xmas), vec!["holiday"]);
    assert_eq!(branches(ada(), open), vec!["Hi Ada n=3"]);
    assert_eq!(
        branches(
            CallerAttributes {
                returning: true,
                ..ada()
            },
            open
        ),
        vec!["welcome back Ada"]
    );
    assert_eq!(
        branches(
            CallerAttributes {
                tier: Some("gold".into()),
                ..ada()
            },
            open
        ),
        vec!["welcome back Ada"]
    );
    assert_eq!(
        branches(
            CallerAttributes {
                language: Some("zh".into()),
                ..ada()
            },
            open
        ),
        vec!["zh open"]
    );
}

fn routing_steps() -> String {
    format!(
        "[flows.main.steps.q]\nverb = \"enqueue\"\nqueue = \"cards\"\nskills = {{ cards = 3 }}\npriority = 7\ntimeout = 60\non_failure = \"busy\"\n\
         [flows.main.steps.busy]\nverb = \"say\"\ntext = \"All agents are busy\"\nnext = \"t\"\n\
         [flows.main.steps.t]\nverb = \"transfer\"\nto = \"sip:desk@pbx.example\"\ntimeout = 20\non_failure = \"vm\"\n\
         [flows.main.steps.vm]\nverb = \"record\"\npath = \"voicemail/{{call.id}}.wav\"\nmax_duration = 60\nfinish_on_key = \"#\"\nnext = \"thanks\"\n\
         [flows.main.steps.thanks]\nverb = \"say\"\ntext = \"Thanks {{recording.seconds}}\"\nnext = \"bye\"\n{BYE}"
    )
}

#[test]
fn enqueue_connected() {
    let mut h = H::new(
        flow("q", &routing_steps()),
        CallerAttributes {
            vip: true,
            number: Some("+8613800000000".into()),
            ..Default::default()
        },
    );
    let a = h.actions();
    assert_eq!(
        a,
        vec![Action::Enqueue(EnqueueRequest {
            queue: "cards".into(),
            skills: vec![("cards".into(), 3)],
            priority: 7,
            timeout: Some(secs(60)),
            vip: true,
            language: "en".into(),
            caller: Some("+8613800000000".into()),
        })]
    );
    let a = h.ev(Event::QueueResult(QueueOutcome::Connected {
        agent: "a7".into(),
    }));
    assert!(a.is_empty());
    assert_eq!(
        h.outcome(),
        Some(Outcome::Queued {
            queue: "cards".into(),
            agent: "a7".into()
        })
    );
}

#[test]
fn enqueue_fails_transfer_fails_voicemail_records() {
    let mut h = H::new(flow("q", &routing_steps()), CallerAttributes::default());
    h.actions();
    let a = h.ev(Event::QueueResult(QueueOutcome::Failed {
        reason: "no agents".into(),
    }));
    assert_eq!(said(&a), vec![("All agents are busy".into(), "en".into())]);
    let a = h.done(&a);
    assert_eq!(
        a,
        vec![Action::Transfer {
            to: "sip:desk@pbx.example".into(),
            timeout: secs(20)
        }]
    );
    let a = h.ev(Event::TransferResult(TransferOutcome::Failed {
        status: Some(486),
    }));
    assert_eq!(
        a,
        vec![Action::Record {
            path: "voicemail/c1.wav".into(),
            max_duration: secs(60),
            beep: true,
            finish_on_key: Some('#')
        }]
    );
    assert_eq!(h.call.poll_timeout(), Some(h.now + secs(65)));
    assert!(h.dtmf("1").is_empty());
    assert_eq!(h.dtmf("#"), vec![Action::StopRecording]);
    let a = h.ev(Event::RecordingFinished { duration: secs(12) });
    assert_eq!(said(&a), vec![("Thanks 12".into(), "en".into())]);
    assert!(h.log.iter().any(|e| matches!(e, IvrEvent::Recorded { path, duration_ms: 12000 } if path == "voicemail/c1.wav")));
}

#[test]
fn transfer_connected_and_record_max_duration_safety_stop() {
    let to_transfer = |h: &mut H| {
        h.actions();
        let a = h.ev(Event::QueueResult(QueueOutcome::Failed {
            reason: "closed".into(),
        }));
        h.done(&a)
    };
    let mut h = H::new(flow("q", &routing_steps()), CallerAttributes::default());
    to_transfer(&mut h);
    h.ev(Event::TransferResult(TransferOutcome::Connected));
    assert_eq!(
        h.outcome(),
        Some(Outcome::Transferred {
            to: "sip:desk@pbx.example".into()
        })
    );

    let mut h = H::new(flow("q", &routing_steps()), CallerAttributes::default());
    to_transfer(&mut h);
    h.ev(Event::TransferResult(TransferOutcome::Failed {
        status: None,
    }));
    assert_eq!(h.advance(secs(65)), vec![Action::StopRecording]);
    // The driver never reports the end: the interpreter moves on after a grace period.
    let a = h.advance(secs(5));
    assert!(said(&a)[0].0.starts_with("Thanks"));
}

#[test]
fn caller_hangs_up_mid_gather() {
    let mut h = H::new(gather(""), CallerAttributes::default());
    h.actions();
    h.ev(Event::CallerHungUp);
    assert!(h.call.is_finished());
    assert_eq!(h.outcome(), Some(Outcome::Abandoned { step: "g".into() }));
    assert!(h.call.poll_timeout().is_none());
}

#[test]
fn speech_result_intent_routes() {
    let steps = format!(
        "[flows.main.steps.g]\nverb = \"gather\"\ninput = [\"speech\", \"dtmf\"]\nsay = \"How can I help?\"\n\
         intents = {{ agent = \"ag\", hours = {{ next = \"hrs\", phrases = [\"opening hours\"] }} }}\nnext = \"bye\"\n\
         [flows.main.steps.ag]\nverb = \"say\"\ntext = \"agent\"\nnext = \"bye\"\n\
         [flows.main.steps.hrs]\nverb = \"say\"\ntext = \"hours\"\nnext = \"bye\"\n{BYE}"
    );
    let mut h = H::new(flow("g", &steps), CallerAttributes::default());
    h.actions();
    let a = h.ev(Event::SpeechResult(SpeechResult {
        transcript: "when are you open".into(),
        meaning: Some(SpeechMeaning::Intent("hours".into())),
        confidence: 0.9,
    }));
    assert_eq!(said(&a), vec![("hours".into(), "en".into())]);
}

#[test]
fn calls_keep_their_dialplan_version() {
    let v1 = flow(
        "hi",
        &format!("[flows.main.steps.hi]\nverb = \"say\"\ntext = \"v1\"\nnext = \"bye\"\n{BYE}"),
    );
    let mut h = H::new(Arc::clone(&v1), CallerAttributes::default());
    drop(v1); // the set swapped to a new version
    let a = h.actions();
    assert_eq!(said(&a)[0].0, "v1");
    assert!(hung_up(&h.done(&a)));
}

// ---- the sample hotline ---------------------------------------------------------------------

fn hotline() -> Arc<Dialplan> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dialplans/hotline.toml");
    check_file(&p, None).unwrap().plan
}

/// Runs the hotline, finishing every prompt, pressing `keys` one per input request.
fn hotline_call(caller: CallerAttributes, wall: DateTime<Utc>) -> H {
    let ctx = CallContext {
        call_id: "h1".into(),
        dialed: "95555".into(),
        trunk: None,
        caller,
    };
    let mut call = Call::new(hotline(), &FlowId("hotline".into()), ctx).unwrap();
    let now = Instant::now();
    call.start(now, wall);
    let mut h = H {
        call,
        now,
        wall,
        log: Vec::new(),
    };
    let a = h.actions();
    assert_eq!(a, vec![Action::Answer]);
    h
}

/// Finish prompts until input is awaited or the call leaves the IVR; returns everything said.
fn settle(h: &mut H, mut a: Vec<Action>) -> (Vec<String>, Vec<Action>) {
    let mut texts = Vec::new();
    let mut all = Vec::new();
    loop {
        texts.extend(said(&a).into_iter().map(|(t, _)| t));
        all.extend(a.clone());
        match a.iter().rev().find_map(playback) {
            Some(id) => a = h.ev(Event::PromptFinished(id)),
            None => return (texts, all),
        }
    }
}

fn weekday_noon_shanghai() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 4, 0, 0).unwrap() // Wed 12:00 Asia/Shanghai
}

#[test]
fn hotline_vip_goes_straight_to_vip_queue() {
    let vip = CallerAttributes {
        number: Some("+8613900000001".into()),
        name: Some("Li Wei".into()),
        vip: true,
        returning: true,
        known: true,
        tier: Some("vip".into()),
        language: Some("zh".into()),
        anonymous: false,
    };
    let mut h = hotline_call(vip, weekday_noon_shanghai());
    let a = h.ev(Event::Answered);
    let (texts, all) = settle(&mut h, a);
    assert_eq!(texts, vec!["Li Wei，欢迎回来。正在为您接通私人银行团队。"]);
    assert!(
        all.iter().any(
            |a| matches!(a, Action::Enqueue(r) if r.queue == "vip" && r.vip && r.priority == 2)
        )
    );
    assert!(h.log.iter().any(|e| matches!(
        e,
        IvrEvent::Recognition {
            caller: Recognition::Vip,
            ..
        }
    )));
}

#[test]
fn hotline_returning_caller_chinese_account_self_service() {
    let c = CallerAttributes {
        number: Some("+8613900000002".into()),
        name: Some("Ada".into()),
        returning: true,
        known: true,
        ..Default::default()
    };
    let mut h = hotline_call(c, weekday_noon_shanghai());
    let a = h.ev(Event::Answered);
    let (texts, _) = settle(&mut h, a);
    assert_eq!(texts[0], "Welcome back, Ada.");
    let a = h.dtmf("2"); // 中文
    let (texts, _) = settle(&mut h, a);
    assert!(texts[0].starts_with("账户服务请按 1"), "{texts:?}");
    let (texts, _) = {
        let a = h.dtmf("1");
        settle(&mut h, a)
    };
    assert!(texts[0].contains("八位账号"));
    let (texts, _) = {
        let a = h.dtmf("12345678#");
        settle(&mut h, a)
    };
    assert!(texts[0].starts_with("查询余额"), "{texts:?}");
    let (texts, _) = {
        let a = h.dtmf("1");
        settle(&mut h, a)
    };
    assert!(texts[0].contains("余额"), "{texts:?}");
    // Account number is sensitive: redacted in the record.
    assert!(
        h.call
            .summary()
            .digits
            .iter()
            .any(|d| d.step == "account_number" && d.digits == REDACTED)
    );
    assert_eq!(h.call.summary().language, "zh");
}

#[test]
fn hotline_zero_reaches_a_person_and_after_hours_offers_voicemail() {
    let new = || CallerAttributes {
        number: Some("+12125550100".into()),
        ..Default::default()
    };
    let mut h = hotline_call(new(), weekday_noon_shanghai());
    let a = h.ev(Event::Answered);
    let (texts, _) = settle(&mut h, a);
    assert_eq!(texts[0], "Welcome to Frontdoor Bank.");
    let (_, all) = {
        let a = h.dtmf("0");
        settle(&mut h, a)
    };
    assert!(
        all.iter()
            .any(|a| matches!(a, Action::Enqueue(r) if r.queue == "general"))
    );
    // The ACD has nobody: polite exit with a voicemail offer.
    let (texts, _) = {
        let a = h.ev(Event::QueueResult(QueueOutcome::Failed {
            reason: "no agents".into(),
        }));
        settle(&mut h, a)
    };
    assert!(texts[0].starts_with("All our agents are busy"));
    let (_, all) = {
        let a = h.dtmf("1");
        settle(&mut h, a)
    };
    assert!(
        all.iter()
            .any(|a| matches!(a, Action::Record { path, .. } if path == "voicemail/h1.wav"))
    );

    // Holiday (National Day): agents are closed, "0" still reaches the 24/7 card team.
    let national_day = Utc.with_ymd_and_hms(2026, 10, 1, 4, 0, 0).unwrap();
    let mut h = hotline_call(new(), national_day);
    let a = h.ev(Event::Answered);
    settle(&mut h, a);
    let (texts, _) = {
        let a = h.dtmf("0");
        settle(&mut h, a)
    };
    assert!(
        texts[0].starts_with("Our contact centre is closed"),
        "{texts:?}"
    );
    let (_, all) = {
        let a = h.dtmf("0");
        settle(&mut h, a)
    };
    assert!(
        all.iter()
            .any(|a| matches!(a, Action::Enqueue(r) if r.queue == "card_security"))
    );
}

#[test]
fn hotline_silent_caller_is_walked_out_politely() {
    let mut h = hotline_call(
        CallerAttributes {
            anonymous: true,
            ..Default::default()
        },
        weekday_noon_shanghai(),
    );
    let a = h.ev(Event::Answered);
    settle(&mut h, a);
    let mut guard = 0;
    while !h.call.is_finished() && guard < 50 {
        guard += 1;
        let a = h.advance(secs(30));
        settle(&mut h, a);
        if h.call.poll_timeout().is_none() && !h.call.is_finished() {
            // Waiting on the ACD: nobody there.
            let a = h.ev(Event::QueueResult(QueueOutcome::Failed {
                reason: "none".into(),
            }));
            settle(&mut h, a);
        }
    }
    assert!(h.call.is_finished());
    assert_eq!(
        h.outcome(),
        Some(Outcome::HungUp {
            reason: "caller done".into()
        })
    );
    assert!(h.log.iter().any(|e| matches!(
        e,
        IvrEvent::Recognition {
            caller: Recognition::Anonymous,
            ..
        }
    )));
}

#[test]
fn record_path_is_safe_from_hostile_call_ids() {
    let p = flow(
        "vm",
        "[flows.main.steps.vm]\nverb = \"record\"\npath = \"voicemail/{call.id}.wav\"\n",
    );
    let ctx = CallContext {
        call_id: "../../etc/passwd x@host".into(),
        ..Default::default()
    };
    let mut call = Call::new(p, &FlowId("main".into()), ctx).unwrap();
    let now = Instant::now();
    call.start(now, Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    let Some(Action::Record { path, .. }) = call.poll_action() else {
        panic!()
    };
    assert_eq!(path, "voicemail/______etc_passwd_x@host.wav");
}

#[test]
fn prompt_sequences_and_send_sync() {
    fn assert_send<T: Send + 'static>() {}
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send::<Call>();
    assert_send_sync::<DialplanSet>();
    assert_send_sync::<Dialplan>();
    let steps = "[flows.main.steps.m]\nverb = \"menu\"\nprompt = [{ say = \"English 1\", language = \"en\" }, { say = \"中文 2\", language = \"zh\" }, { play = \"beep.wav\" }]\noptions = { \"1\" = \"m\" }\n";
    let mut h = H::new(flow("m", steps), CallerAttributes::default());
    let a = h.actions();
    assert_eq!(said(&a), vec![("English 1".into(), "en".into())]);
    let a = h.done(&a);
    assert_eq!(said(&a), vec![("中文 2".into(), "zh".into())]);
    let a = h.done(&a);
    assert!(matches!(&a[0], Action::Play { file, .. } if file == "beep.wav"));
    assert!(h.call.poll_timeout().is_none());
    h.done(&a);
    assert!(h.call.poll_timeout().is_some());
}

#[test]
fn time_of_day_condition_with_time_zone_and_midnight_wrap() {
    let steps = "[flows.main.steps.c]\nverb = \"if\"\nwhen = { any = [{ time = \"12:00-14:00\", timezone = \"Asia/Shanghai\" }, { time = \"22:00-06:00\", timezone = \"Europe/London\" }] }\nthen = \"yes\"\nelse = \"no\"\n\
                 [flows.main.steps.yes]\nverb = \"say\"\ntext = \"yes\"\n[flows.main.steps.no]\nverb = \"say\"\ntext = \"no\"\n";
    let at = |h: u32, m: u32| {
        let mut x = H::at(
            flow("c", steps),
            CallerAttributes::default(),
            Utc.with_ymd_and_hms(2026, 7, 1, h, m, 0).unwrap(),
        );
        said(&x.actions())[0].0.clone()
    };
    assert_eq!(at(4, 30), "yes"); // 12:30 Shanghai
    assert_eq!(at(6, 0), "no"); // 14:00 Shanghai (end exclusive), 07:00 London
    assert_eq!(at(21, 30), "yes"); // 22:30 London (BST)
    assert_eq!(at(3, 0), "yes"); // 04:00 London, 11:00 Shanghai
    assert_eq!(at(9, 0), "no");
}

#[test]
fn record_call_start_and_stop_continue_at_once() {
    let p = flow(
        "a",
        &format!(
            "[flows.main.steps.a]\nverb = \"answer\"\nnext = \"rec\"\n[flows.main.steps.rec]\nverb = \"record_call\"\naction = \"start\"\nnext = \"stop\"\n[flows.main.steps.stop]\nverb = \"record_call\"\naction = \"stop\"\nnext = \"bye\"\n{BYE}"
        ),
    );
    let mut h = H::new(p, CallerAttributes::default());
    assert_eq!(h.actions(), vec![Action::Answer]);
    let a = h.ev(Event::Answered);
    assert_eq!(
        a,
        vec![
            Action::RecordCall { start: true },
            Action::RecordCall { start: false },
            Action::Hangup {
                reason: "done".into()
            }
        ]
    );
    let bad = check_str(
        Path::new("t.toml"),
        "default_language = \"en\"\n[[route]]\ndefault = true\nflow = \"main\"\n[flows.main]\nstart = \"r\"\n[flows.main.steps.r]\nverb = \"record_call\"\naction = \"pause\"\n",
        None,
    )
    .err()
    .unwrap();
    let msg = bad
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(msg.contains("record_call action \"pause\""), "{msg}");
}
