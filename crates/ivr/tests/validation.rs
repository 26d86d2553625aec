//! Every fixture `tests/fixtures/bad-*.toml` holds one kind of mistake; each test asserts the
//! kind, the line:col and the message of the diagnostic.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

use frontdoor_ivr::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn diags(name: &str) -> Vec<Diagnostic> {
    let dir = fixtures();
    match check_file(&dir.join(name), Some(&dir.join("prompts"))) {
        Ok(_) => panic!("{name} validated"),
        Err(d) => d,
    }
}

/// The single diagnostic of a fixture.
fn one(name: &str) -> Diagnostic {
    let d = diags(name);
    assert_eq!(d.len(), 1, "{name}: {d:#?}");
    let d = d.into_iter().next().unwrap();
    assert!(d.file.ends_with(name));
    assert_eq!(d.severity, Severity::Error);
    assert!(d.hint.is_some(), "{name} has no hint");
    d
}

fn at(d: &Diagnostic) -> (usize, usize) {
    (d.line, d.column)
}

#[test]
fn syntax_error() {
    let d = one("bad-syntax.toml");
    assert_eq!(d.kind, DiagnosticKind::Syntax);
    assert_eq!(d.line, 6);
    assert!(d.message.contains("TOML syntax error"), "{}", d.message);
}

#[test]
fn unknown_verb_suggests_the_closest() {
    let d = one("bad-unknown-verb.toml");
    assert_eq!(d.kind, DiagnosticKind::UnknownVerb);
    assert_eq!(at(&d), (9, 8));
    assert_eq!(d.message, "unknown verb \"plya\"");
    assert_eq!(d.hint.as_deref(), Some("did you mean `play`?"));
}

#[test]
fn unknown_key() {
    let d = one("bad-unknown-key.toml");
    assert_eq!(d.kind, DiagnosticKind::UnknownKey);
    assert_eq!(at(&d), (12, 1));
    assert_eq!(d.message, "unknown key `timout` in a `gather` step");
    assert_eq!(d.hint.as_deref(), Some("did you mean `timeout`?"));
}

#[test]
fn missing_step() {
    let d = one("bad-missing-step.toml");
    assert_eq!(d.kind, DiagnosticKind::MissingStep);
    assert_eq!(at(&d), (11, 34));
    assert!(
        d.message.contains("refers to step \"suport\""),
        "{}",
        d.message
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `support`?"));
}

#[test]
fn unreachable_step() {
    let d = one("bad-unreachable.toml");
    assert_eq!(d.kind, DiagnosticKind::UnreachableStep);
    assert_eq!(at(&d), (13, 19));
    assert!(
        d.message.contains("step `orphan` is unreachable"),
        "{}",
        d.message
    );
}

#[test]
fn loop_without_input() {
    let d = one("bad-loop.toml");
    assert_eq!(d.kind, DiagnosticKind::LoopWithoutInput);
    assert_eq!(d.line, 13);
    assert!(d.message.contains("again → hello → again"), "{}", d.message);
}

#[test]
fn bad_regex() {
    let d = one("bad-regex.toml");
    assert_eq!(d.kind, DiagnosticKind::BadRegex);
    assert_eq!(at(&d), (12, 12));
    assert!(
        d.message.contains("invalid regex \"[0-9{8}\""),
        "{}",
        d.message
    );
}

#[test]
fn missing_prompt_only_when_a_prompts_dir_is_given() {
    let d = one("bad-missing-prompt.toml");
    assert_eq!(d.kind, DiagnosticKind::MissingPrompt);
    assert_eq!(at(&d), (15, 8));
    assert!(
        d.message.contains("\"hold-music.wav\" not found"),
        "{}",
        d.message
    );
    assert!(check_file(&fixtures().join("bad-missing-prompt.toml"), None).is_ok());
}

#[test]
fn missing_key() {
    let d = one("bad-missing-key.toml");
    assert_eq!(d.kind, DiagnosticKind::MissingKey);
    assert_eq!(at(&d), (8, 19));
    assert_eq!(d.message, "step `hello` is missing `verb`");
}

#[test]
fn wrong_type() {
    let d = one("bad-wrong-type.toml");
    assert_eq!(d.kind, DiagnosticKind::WrongType);
    assert_eq!(at(&d), (12, 11));
    assert_eq!(d.message, "`retries` must be an integer, found string");
}

#[test]
fn bad_timezone() {
    let d = one("bad-timezone.toml");
    assert_eq!(d.kind, DiagnosticKind::InvalidValue);
    assert_eq!(at(&d), (6, 12));
    assert!(d.message.contains("unknown time zone"), "{}", d.message);
}

#[test]
fn unknown_flow_in_route() {
    let d = one("bad-unknown-flow.toml");
    assert_eq!(d.kind, DiagnosticKind::UnknownReference);
    assert_eq!(at(&d), (3, 8));
    assert_eq!(d.hint.as_deref(), Some("did you mean `main`?"));
}

#[test]
fn display_is_file_line_col_error_message_hint() {
    let d = one("bad-unknown-verb.toml");
    let s = d.to_string();
    let expected_tail =
        "bad-unknown-verb.toml:9:8: error: unknown verb \"plya\"\n  hint: did you mean `play`?";
    assert!(s.ends_with(expected_tail), "{s}");
}

#[test]
fn check_dir_reports_every_file() {
    let d = check_dir(&fixtures(), Some(&fixtures().join("prompts"))).unwrap_err();
    for f in std::fs::read_dir(fixtures()).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            assert!(
                d.iter().any(|x| x.file == p),
                "no diagnostic for {}",
                p.display()
            );
        }
    }
}

#[test]
fn garbage_never_panics() {
    for src in [
        "",
        "\u{0}",
        "[[route]]\n",
        "flows = 3",
        "[flows.x]\nsteps = []",
        "[flows.x.steps.a]\nverb = 1",
        "[flows.x]\nstart = \"a\"\n[flows.x.steps.a]\nverb = \"if\"\nwhen = { all = [1, {not = {not = {}}}] }\nthen = \"a\"",
        "[hours.h]\ntimezone = \"UTC\"\nmon = \"25:00-26:00\"\nholidays = [\"x\", 3]",
        "route = [1, 2]",
    ] {
        let _ = check_str(Path::new("x.toml"), src, None);
    }
}

const GOOD: &str = r#"
[[route]]
default = true
flow = "main"

[flows.main]
start = "hello"

[flows.main.steps.hello]
verb = "say"
text = "Hello v1"
"#;

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("frontdoor-ivr-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn say_text(set: &DialplanSet) -> String {
    let m = set.route("123", None).unwrap();
    let RouteTarget::Flow(f) = &m.target else {
        panic!()
    };
    let step = &m.plan.flow(f).unwrap().steps[&StepId("hello".into())];
    match &step.verb {
        frontdoor_ivr::model::Verb::Say {
            text: frontdoor_ivr::model::Text::Plain(t),
            ..
        } => t.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hot_reload_rejects_invalid_edit_and_keeps_old_version() {
    let dir = TempDir::new("reload");
    let file = dir.0.join("main.toml");
    std::fs::write(&file, GOOD).unwrap();
    let set = DialplanSet::load(&dir.0, None).unwrap();
    assert!(matches!(set.reload_if_changed(), Reload::Unchanged));
    let old_plan = set.route("1", None).unwrap().plan;

    // A broken edit is rejected; the current set stays usable.
    std::fs::write(&file, GOOD.replace("verb = \"say\"", "verb = \"sya\"")).unwrap();
    let Reload::Rejected(d) = set.reload_if_changed() else {
        panic!("accepted a broken edit")
    };
    assert_eq!(d[0].kind, DiagnosticKind::UnknownVerb);
    assert_eq!(say_text(&set), "Hello v1");

    // A valid edit produces a new set; the old Arc<Dialplan> held by a call is unchanged.
    std::fs::write(&file, GOOD.replace("Hello v1", "Hello v2")).unwrap();
    let Reload::Reloaded(new) = set.reload_if_changed() else {
        panic!("no reload")
    };
    assert_eq!(say_text(&new), "Hello v2");
    assert_eq!(say_text(&set), "Hello v1");
    assert!(!std::sync::Arc::ptr_eq(
        &old_plan,
        &new.route("1", None).unwrap().plan
    ));
    assert!(matches!(new.reload_if_changed(), Reload::Unchanged));
}

#[test]
fn duplicate_routes_across_files() {
    let dir = TempDir::new("dup");
    std::fs::write(dir.0.join("a.toml"), GOOD).unwrap();
    std::fs::write(dir.0.join("b.toml"), GOOD).unwrap();
    let d = check_dir(&dir.0, None).unwrap_err();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].kind, DiagnosticKind::DuplicateRoute);
    assert!(d[0].file.ends_with("b.toml"));
    assert_eq!(d[0].line, 2);
    assert!(d[0].message.contains("a.toml:2:1"), "{}", d[0].message);
}

#[test]
fn routing_prefers_exact_then_prefix_then_default() {
    let src = r#"
[[route]]
number = "100"
builtin = "echo"
[[route]]
prefix = "1"
builtin = "ring"
[[route]]
number = "100"
trunk = "carrier"
builtin = "answer"
[[route]]
default = true
flow = "main"
[flows.main]
start = "bye"
[flows.main.steps.bye]
verb = "hangup"
"#;
    let dir = TempDir::new("route");
    std::fs::write(dir.0.join("r.toml"), src).unwrap();
    let set = DialplanSet::load(&dir.0, None).unwrap();
    let t = |n: &str, tr: Option<&str>| set.route(n, tr).unwrap().target;
    assert_eq!(t("100", None), RouteTarget::Builtin(Builtin::Echo));
    assert_eq!(
        t("100", Some("carrier")),
        RouteTarget::Builtin(Builtin::Answer)
    );
    assert_eq!(t("123", None), RouteTarget::Builtin(Builtin::Ring));
    assert_eq!(t("999", None), RouteTarget::Flow(FlowId("main".into())));
}

#[test]
fn unknown_variable_is_a_warning_with_a_suggestion() {
    let src = r#"
[[route]]
default = true
flow = "main"

[flows.main]
start = "hello"

[flows.main.steps.hello]
verb = "say"
text = "Hello {caller.nmae}, your code is {code}"
"#;
    let loaded = check_str(Path::new("w.toml"), src, None).unwrap();
    let w = &loaded.warnings;
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0].severity, Severity::Warning);
    assert_eq!(w[0].kind, DiagnosticKind::UnknownVariable);
    assert_eq!((w[0].line, w[0].column), (11, 8));
    assert_eq!(w[0].message, "variable `caller.nmae` is never set");
    assert!(
        w[0].hint
            .as_deref()
            .unwrap()
            .starts_with("did you mean `caller.name`?")
    );
    assert!(
        w[0].to_string()
            .contains("w.toml:11:8: warning: variable `caller.nmae` is never set")
    );
    assert_eq!(w[1].message, "variable `code` is never set");
}

#[test]
fn time_condition_errors() {
    let src = "[[route]]\ndefault = true\nflow = \"m\"\n[flows.m]\nstart = \"c\"\n[flows.m.steps.c]\nverb = \"if\"\nwhen = { time = \"25:00-26:00\", timezone = \"Asia/Shanghai\" }\nthen = \"c\"\n";
    let d = check_str(Path::new("t.toml"), src, None).unwrap_err();
    assert!(
        d.iter().any(|x| x.kind == DiagnosticKind::InvalidValue
            && x.message.contains("bad time range")
            && x.line == 8),
        "{d:?}"
    );
}
