//! Loading and validating dialplans: TOML → [`Dialplan`], with every problem reported as a
//! [`Diagnostic`] pointing at `file:line:col`.
//!
//! The loader walks toml's spanned document tree (`toml::de::DeTable`) by hand rather than
//! through serde, so that it can report *every* problem of a file in one pass, each at the
//! exact key or value it concerns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use regex::Regex;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{Diagnostic, DiagnosticKind as K, IvrError, Severity};
use crate::model::*;

type Span = Range<usize>;
type Val<'i> = Spanned<DeValue<'i>>;

/// All verbs the format knows.
pub const VERBS: &[&str] = &[
    "answer",
    "play",
    "say",
    "gather",
    "menu",
    "set",
    "if",
    "switch",
    "goto",
    "enqueue",
    "transfer",
    "record",
    "record_call",
    "hangup",
];

const COMMON_STEP_KEYS: &[&str] = &["verb", "next", "sensitive", "description"];
const PROMPT_KEYS: &[&str] = &[
    "say",
    "play",
    "language",
    "invalid_say",
    "invalid_play",
    "timeout_say",
    "timeout_play",
    "input",
    "intents",
    "expect",
    "retries",
    "timeout",
    "prompt",
    "invalid_prompt",
    "timeout_prompt",
];
/// Speech keys of gather/menu (need `input` with `"speech"`).
const SPEECH_KEYS: &[&str] = &[
    "barge_in",
    "end_silence",
    "max_speech",
    "no_input_timeout",
    "accept",
    "reject",
    "confirm",
    "confirm_say",
    "confirm_play",
    "confirm_prompt",
    "speech_retries",
    "dtmf_say",
    "dtmf_play",
    "dtmf_prompt",
    "keep_digits",
    "training",
];
const DTMF_KEYS: &str = "0123456789*#ABCD";

/// A dialplan that passed validation, with its warnings.
#[derive(Debug, Clone)]
pub struct LoadedDialplan {
    /// The dialplan, shareable with calls in progress.
    pub plan: Arc<Dialplan>,
    /// Non-fatal findings.
    pub warnings: Vec<Diagnostic>,
    route_sites: Vec<RouteSite>,
}

#[derive(Debug, Clone)]
struct RouteSite {
    key: Option<String>,
    default: bool,
    line: usize,
    column: usize,
}

struct Cx<'s> {
    file: PathBuf,
    src: &'s str,
    diags: Vec<Diagnostic>,
    prompts: Vec<(String, Span)>,
    /// `{variable}` uses and variable names read by conditions/switches.
    var_uses: Vec<(String, Span)>,
    /// Variables set by `set` or gathered.
    var_defs: BTreeSet<String>,
}

/// Variables the interpreter always provides.
pub const BUILTIN_VARS: &[&str] = &[
    "call.id",
    "call.dialed",
    "call.trunk",
    "caller.number",
    "caller.name",
    "caller.tier",
    "caller.vip",
    "caller.returning",
    "caller.known",
    "caller.anonymous",
    "caller.language",
    "lang",
    "recording.path",
    "recording.seconds",
    "speech.intent",
    "speech.transcript",
    "speech.meaning",
    "speech.confidence",
];

/// Names referenced as `{name}` in a template.
pub fn template_vars(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '{' => {
                let mut name = String::new();
                for n in chars.by_ref() {
                    if n == '}' {
                        out.push(name.trim().to_owned());
                        break;
                    }
                    name.push(n);
                }
            }
            _ => {}
        }
    }
    out
}

impl Cx<'_> {
    fn uses_template(&mut self, template: &str, span: &Span) {
        for v in template_vars(template) {
            self.var_uses.push((v, span.clone()));
        }
    }
}

impl Cx<'_> {
    fn pos(&self, offset: usize) -> (usize, usize) {
        line_col(self.src, offset)
    }

    fn push(&mut self, sev: Severity, span: &Span, kind: K, message: String, hint: Option<String>) {
        let (line, column) = self.pos(span.start);
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            severity: sev,
            kind,
            message,
            hint,
        });
    }

    fn err(&mut self, span: &Span, kind: K, message: String, hint: impl Into<Option<String>>) {
        self.push(Severity::Error, span, kind, message, hint.into());
    }

    fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(src.len());
    while off > 0 && !src.is_char_boundary(off) {
        off -= 1;
    }
    let before = &src[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn did_you_mean_or_list(word: &str, candidates: &[&str], what: &str) -> String {
    match suggest(word, candidates.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("{what}: {}", candidates.join(", ")),
    }
}

// ---- spanned-tree accessors -------------------------------------------------------------

fn find<'t, 'i>(t: &'t DeTable<'i>, key: &str) -> Option<(Span, &'t Val<'i>)> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, v)| (k.span(), v))
}

fn check_keys(cx: &mut Cx<'_>, t: &DeTable<'_>, allowed: &[&str], what: &str) {
    for (k, _) in t.iter() {
        let name: &str = k.get_ref().as_ref();
        if !allowed.contains(&name) {
            let hint = did_you_mean_or_list(name, allowed, &format!("keys of {what}"));
            cx.err(
                &k.span(),
                K::UnknownKey,
                format!("unknown key `{name}` in {what}"),
                hint,
            );
        }
    }
}

fn type_err(cx: &mut Cx<'_>, v: &Val<'_>, key: &str, expected: &str) {
    cx.err(
        &v.span(),
        K::WrongType,
        format!(
            "`{key}` must be {expected}, found {}",
            v.get_ref().type_str()
        ),
        format!("write `{key}` as {expected}"),
    );
}

fn opt_str(cx: &mut Cx<'_>, t: &DeTable<'_>, key: &str) -> Option<(String, Span)> {
    let (_, v) = find(t, key)?;
    match v.get_ref().as_str() {
        Some(s) => Some((s.to_owned(), v.span())),
        None => {
            type_err(cx, v, key, "a string");
            None
        }
    }
}

fn req_str(
    cx: &mut Cx<'_>,
    t: &DeTable<'_>,
    tspan: &Span,
    key: &str,
    what: &str,
    hint: &str,
) -> Option<(String, Span)> {
    if find(t, key).is_none() {
        cx.err(
            tspan,
            K::MissingKey,
            format!("{what} is missing `{key}`"),
            hint.to_owned(),
        );
        return None;
    }
    opt_str(cx, t, key)
}

fn opt_bool(cx: &mut Cx<'_>, t: &DeTable<'_>, key: &str) -> Option<bool> {
    let (_, v) = find(t, key)?;
    match v.get_ref().as_bool() {
        Some(b) => Some(b),
        None => {
            type_err(cx, v, key, "true or false");
            None
        }
    }
}

fn int_of(v: &DeValue<'_>) -> Option<i64> {
    let i = v.as_integer()?;
    i64::from_str_radix(i.as_str(), i.radix()).ok()
}

fn opt_int(cx: &mut Cx<'_>, t: &DeTable<'_>, key: &str, min: i64, max: i64) -> Option<i64> {
    let (_, v) = find(t, key)?;
    match int_of(v.get_ref()) {
        Some(i) if (min..=max).contains(&i) => Some(i),
        Some(i) => {
            cx.err(
                &v.span(),
                K::InvalidValue,
                format!("`{key}` = {i} is out of range"),
                format!("use a value from {min} to {max}"),
            );
            None
        }
        None => {
            type_err(cx, v, key, "an integer");
            None
        }
    }
}

/// Seconds as an integer or a float, 0 < s ≤ 3600.
fn opt_secs(cx: &mut Cx<'_>, t: &DeTable<'_>, key: &str) -> Option<Duration> {
    let (_, v) = find(t, key)?;
    let secs = match v.get_ref() {
        DeValue::Integer(_) => int_of(v.get_ref()).map(|i| i as f64),
        DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
        _ => {
            type_err(cx, v, key, "a number of seconds");
            return None;
        }
    };
    match secs {
        Some(s) if s > 0.0 && s <= 3600.0 => Some(Duration::from_secs_f64(s)),
        _ => {
            cx.err(
                &v.span(),
                K::InvalidValue,
                format!("`{key}` must be a number of seconds above 0 and at most 3600"),
                "e.g. `5` or `2.5`".to_owned(),
            );
            None
        }
    }
}

fn opt_char(cx: &mut Cx<'_>, t: &DeTable<'_>, key: &str) -> Option<char> {
    let (s, span) = opt_str(cx, t, key)?;
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if DTMF_KEYS.contains(c) => Some(c),
        _ => {
            cx.err(
                &span,
                K::InvalidValue,
                format!("`{key}` must be one DTMF key, found \"{s}\""),
                "use one of 0-9, *, #".to_owned(),
            );
            None
        }
    }
}

fn opt_str_list(cx: &mut Cx<'_>, t: &DeTable<'_>, key: &str) -> Option<Vec<(String, Span)>> {
    let (_, v) = find(t, key)?;
    let Some(arr) = v.get_ref().as_array() else {
        type_err(cx, v, key, "an array of strings");
        return None;
    };
    let mut out = Vec::new();
    for item in arr.iter() {
        match item.get_ref().as_str() {
            Some(s) => out.push((s.to_owned(), item.span())),
            None => type_err(cx, item, key, "an array of strings"),
        }
    }
    Some(out)
}

fn text_of(cx: &mut Cx<'_>, v: &Val<'_>, key: &str) -> Option<Text> {
    match v.get_ref() {
        DeValue::String(s) => {
            cx.uses_template(s, &v.span());
            Some(Text::Plain(s.to_string()))
        }
        DeValue::Table(t) => {
            let mut map = BTreeMap::new();
            for (k, item) in t.iter() {
                match item.get_ref().as_str() {
                    Some(s) => {
                        cx.uses_template(s, &item.span());
                        map.insert(k.get_ref().to_string(), s.to_owned());
                    }
                    None => type_err(cx, item, key, "a string per language"),
                }
            }
            if map.is_empty() {
                cx.err(
                    &v.span(),
                    K::InvalidValue,
                    format!("`{key}` has no text"),
                    "write `{ en = \"...\" }` or a plain string".to_owned(),
                );
                return None;
            }
            Some(Text::PerLanguage(map))
        }
        _ => {
            type_err(cx, v, key, "a string or a table of language = string");
            None
        }
    }
}

fn prompt_file(cx: &mut Cx<'_>, file: &str, span: &Span) {
    let p = Path::new(file);
    if file.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        cx.err(
            span,
            K::InvalidValue,
            format!("prompt path \"{file}\" must be relative to the prompts directory"),
            "write e.g. `welcome.wav` (no leading `/`, no `..`)".to_owned(),
        );
    } else {
        cx.prompts.push((file.to_owned(), span.clone()));
    }
}

/// Prompt list made of `<prefix>play` and `<prefix>say` keys.
fn prompts(
    cx: &mut Cx<'_>,
    t: &DeTable<'_>,
    prefix: &str,
    language: &Option<String>,
) -> Vec<Prompt> {
    let mut out = Vec::new();
    if let Some((file, span)) = opt_str(cx, t, &format!("{prefix}play")) {
        prompt_file(cx, &file, &span);
        out.push(Prompt::Play(file));
    }
    let key = format!("{prefix}say");
    if let Some((_, v)) = find(t, &key) {
        if let Some(text) = text_of(cx, v, &key) {
            out.push(Prompt::Say {
                text,
                language: language.clone(),
            });
        }
    }
    // `prompt = [{ say = "...", language = "en" }, { play = "x.wav" }]`: a sequence.
    let key = format!("{prefix}prompt");
    if let Some((_, v)) = find(t, &key) {
        let Some(arr) = v.get_ref().as_array() else {
            type_err(
                cx,
                v,
                &key,
                "an array of { say = ..., language = ... } / { play = ... }",
            );
            return out;
        };
        for item in arr.iter() {
            let Some(it) = item.get_ref().as_table() else {
                type_err(
                    cx,
                    item,
                    &key,
                    "an array of { say = ..., language = ... } / { play = ... }",
                );
                continue;
            };
            check_keys(cx, it, &["say", "play", "language"], "a prompt");
            let lang = opt_str(cx, it, "language")
                .map(|(s, _)| s)
                .or_else(|| language.clone());
            match (find(it, "say"), opt_str(cx, it, "play")) {
                (Some((_, sv)), None) => {
                    if let Some(text) = text_of(cx, sv, "say") {
                        out.push(Prompt::Say {
                            text,
                            language: lang,
                        });
                    }
                }
                (None, Some((file, span))) => {
                    prompt_file(cx, &file, &span);
                    out.push(Prompt::Play(file));
                }
                _ => cx.err(
                    &item.span(),
                    K::InvalidValue,
                    "a prompt needs exactly one of `say` or `play`".to_owned(),
                    "write `{ say = \"...\" }` or `{ play = \"file.wav\" }`".to_owned(),
                ),
            }
        }
    }
    out
}

fn input_kinds(cx: &mut Cx<'_>, t: &DeTable<'_>) -> Vec<InputKind> {
    let Some(list) = opt_str_list(cx, t, "input") else {
        return vec![InputKind::Dtmf];
    };
    let mut out = Vec::new();
    for (s, span) in list {
        match s.as_str() {
            "dtmf" => out.push(InputKind::Dtmf),
            "speech" => out.push(InputKind::Speech),
            _ => cx.err(
                &span,
                K::InvalidValue,
                format!("unknown input kind \"{s}\""),
                "use \"dtmf\" and/or \"speech\"".to_owned(),
            ),
        }
    }
    out
}

fn regex_of(cx: &mut Cx<'_>, pat: &str, span: &Span) -> Option<Regex> {
    // Anchor the whole entry: `validate = "[0-9]{8}"` means exactly eight digits.
    match Regex::new(&format!("^(?:{pat})$")) {
        Ok(r) => Some(r),
        Err(e) => {
            let detail = e.to_string();
            let last = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let last = last.trim().trim_start_matches("error:");
            cx.err(
                span,
                K::BadRegex,
                format!("invalid regex \"{pat}\": {}", last.trim()),
                "check brackets and escapes; in TOML prefer literal strings: '\\d{8}'".to_owned(),
            );
            None
        }
    }
}

// ---- step references ---------------------------------------------------------------------

struct Refs {
    /// (from step, target, span of the reference)
    sites: Vec<(StepId, StepId, Span)>,
}

impl Refs {
    fn add(&mut self, from: &StepId, target: &str, span: Span) -> StepId {
        let id = StepId(target.to_owned());
        self.sites.push((from.clone(), id.clone(), span));
        id
    }
}

fn opt_ref(
    cx: &mut Cx<'_>,
    refs: &mut Refs,
    from: &StepId,
    t: &DeTable<'_>,
    key: &str,
) -> Option<StepId> {
    let (s, span) = opt_str(cx, t, key)?;
    Some(refs.add(from, &s, span))
}

fn speech_spec(cx: &mut Cx<'_>, refs: &mut Refs, from: &StepId, t: &DeTable<'_>) -> SpeechSpec {
    let mut spec = SpeechSpec::default();
    if let Some(list) = opt_str_list(cx, t, "expect") {
        spec.expect = list.into_iter().map(|(s, _)| s).collect();
    }
    if let Some((_, v)) = find(t, "intents") {
        match v.get_ref() {
            // intents = { balance = "step", agent = "step" }
            DeValue::Table(it) => {
                for (k, item) in it.iter() {
                    let name = k.get_ref().to_string();
                    match item.get_ref() {
                        DeValue::String(target) => {
                            let next = Some(refs.add(from, target, item.span()));
                            spec.intents.push(Intent {
                                name,
                                phrases: Vec::new(),
                                next,
                            });
                        }
                        DeValue::Table(inner) => {
                            check_keys(cx, inner, &["next", "phrases"], "an intent");
                            let next = opt_ref(cx, refs, from, inner, "next");
                            let phrases = opt_str_list(cx, inner, "phrases")
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(s, _)| s)
                                .collect();
                            spec.intents.push(Intent {
                                name,
                                phrases,
                                next,
                            });
                        }
                        _ => type_err(cx, item, "intents", "a step name or { next, phrases }"),
                    }
                }
            }
            // intents = ["balance", "agent"]
            DeValue::Array(arr) => {
                for item in arr.iter() {
                    match item.get_ref().as_str() {
                        Some(s) => spec.intents.push(Intent {
                            name: s.to_owned(),
                            phrases: Vec::new(),
                            next: None,
                        }),
                        None => type_err(cx, item, "intents", "an array of intent names"),
                    }
                }
            }
            _ => type_err(cx, v, "intents", "a table of intent = step"),
        }
    }
    spec
}

/// A fraction 0..=1 (integer 0/1 or float).
fn opt_fraction(cx: &mut Cx<'_>, t: &DeTable<'_>, key: &str) -> Option<f32> {
    let (_, v) = find(t, key)?;
    let x = match v.get_ref() {
        DeValue::Integer(_) => int_of(v.get_ref()).map(|i| i as f64),
        DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
        _ => {
            type_err(cx, v, key, "a number from 0 to 1");
            return None;
        }
    };
    match x {
        Some(x) if (0.0..=1.0).contains(&x) => Some(x as f32),
        _ => {
            cx.err(
                &v.span(),
                K::InvalidValue,
                format!("`{key}` must be a confidence from 0 to 1"),
                "e.g. `accept = 0.7`, `reject = 0.45`".to_owned(),
            );
            None
        }
    }
}

/// Seconds within `lo..=hi`.
fn opt_secs_in(cx: &mut Cx<'_>, t: &DeTable<'_>, key: &str, lo: f64, hi: f64) -> Option<Duration> {
    let d = opt_secs(cx, t, key)?;
    if (lo..=hi).contains(&d.as_secs_f64()) {
        return Some(d);
    }
    if let Some((_, v)) = find(t, key) {
        cx.err(
            &v.span(),
            K::InvalidValue,
            format!("`{key}` must be from {lo} to {hi} seconds"),
            format!("use a value from {lo} to {hi}"),
        );
    }
    None
}

/// The speech keys of a gather/menu (`SPEECH_KEYS`): parsed into `spec`; an error when the step
/// does not take speech.
fn speech_settings(
    cx: &mut Cx<'_>,
    refs: &mut Refs,
    id: &StepId,
    t: &DeTable<'_>,
    input: &[InputKind],
    language: &Option<String>,
    spec: &mut SpeechSpec,
) {
    if !input.contains(&InputKind::Speech) {
        for (k, _) in t.iter() {
            let name: &str = k.get_ref().as_ref();
            if SPEECH_KEYS.contains(&name) {
                cx.err(
                    &k.span(),
                    K::InvalidValue,
                    format!("`{name}` is a speech setting, but step `{id}` takes no speech"),
                    "add `input = [\"speech\", \"dtmf\"]` or remove the key".to_owned(),
                );
            }
        }
        return;
    }
    if let Some(b) = opt_bool(cx, t, "barge_in") {
        spec.barge_in = b;
    }
    if let Some(d) = opt_secs_in(cx, t, "end_silence", 0.2, 5.0) {
        spec.end_silence = d;
    }
    if let Some(d) = opt_secs_in(cx, t, "max_speech", 1.0, 60.0) {
        spec.max_speech = d;
    }
    if let Some(d) = opt_secs_in(cx, t, "no_input_timeout", 0.5, 120.0) {
        spec.no_input_timeout = Some(d);
    }
    if let Some(a) = opt_fraction(cx, t, "accept") {
        spec.accept = a;
    }
    if let Some(r) = opt_fraction(cx, t, "reject") {
        spec.reject = r;
    }
    if spec.reject > spec.accept {
        let at = find(t, "reject").or_else(|| find(t, "accept"));
        if let Some((_, v)) = at {
            cx.err(
                &v.span(),
                K::InvalidValue,
                format!(
                    "`reject` ({}) is above `accept` ({})",
                    spec.reject, spec.accept
                ),
                "make reject ≤ accept (between them the caller is asked to confirm)".to_owned(),
            );
        }
    }
    if let Some((c, span)) = opt_str(cx, t, "confirm") {
        spec.confirm = match c.as_str() {
            "auto" => Confirm::Auto,
            "none" => Confirm::Never,
            step => Confirm::Step(refs.add(id, step, span)),
        };
    }
    spec.confirm_prompt = prompts(cx, t, "confirm_", language);
    spec.dtmf_prompt = prompts(cx, t, "dtmf_", language);
    if let Some(n) = opt_int(cx, t, "speech_retries", 0, 10) {
        spec.retries = Some(n as u32);
    }
    if let Some(k) = opt_bool(cx, t, "keep_digits") {
        spec.keep_digits = k;
    }
    if let Some((file, span)) = opt_str(cx, t, "training") {
        let path = cx.file.parent().unwrap_or(Path::new(".")).join(&file);
        if !path.is_file() {
            // A warning, not an error: the dialplan still works (the recogniser reports the
            // missing file: `frontdoor recognize` fails naming it, live calls fall back to
            // the phrase matcher with a logged warning).
            cx.push(
                Severity::Warning,
                &span,
                K::InvalidValue,
                format!("step `{id}`: training file {} not found", path.display()),
                Some(
                    "`training` names intent training data relative to the dialplan file \
                     (docs/speech.md); without it the phrase matcher scores the intents"
                        .to_owned(),
                ),
            );
        }
        spec.training = Some(path);
    }
    if !input.contains(&InputKind::Dtmf) {
        if let Some((span, _)) = find(t, "input") {
            cx.err(
                &span,
                K::InvalidValue,
                format!("step `{id}` takes speech but no keys"),
                "keys stay available at every speech step: use `input = [\"speech\", \"dtmf\"]`"
                    .to_owned(),
            );
        }
    }
}

fn condition(
    cx: &mut Cx<'_>,
    v: &Val<'_>,
    hours: &BTreeSet<String>,
    depth: u32,
) -> Option<Condition> {
    if depth > 16 {
        cx.err(
            &v.span(),
            K::InvalidValue,
            "condition nested too deeply".to_owned(),
            None,
        );
        return None;
    }
    let t = match v.get_ref() {
        DeValue::String(s) => {
            cx.var_uses.push((s.to_string(), v.span()));
            return Some(Condition::Truthy(s.to_string()));
        }
        DeValue::Table(t) => t,
        _ => {
            type_err(cx, v, "when", "a variable name or a condition table");
            return None;
        }
    };
    check_keys(
        cx,
        t,
        &[
            "var", "eq", "ne", "in", "matches", "open", "holiday", "all", "any", "not", "time",
            "timezone",
        ],
        "a condition",
    );
    let hours_ref = |cx: &mut Cx<'_>, key: &str| -> Option<String> {
        let (name, span) = opt_str(cx, t, key)?;
        if !hours.contains(&name) {
            let names: Vec<&str> = hours.iter().map(String::as_str).collect();
            let hint = if names.is_empty() {
                "define it with a `[hours.NAME]` table (timezone, mon..sun, holidays)".to_owned()
            } else {
                did_you_mean_or_list(&name, &names, "defined hours")
            };
            cx.err(
                &span,
                K::UnknownReference,
                format!("no opening hours named \"{name}\""),
                hint,
            );
            return None;
        }
        Some(name)
    };
    if let Some((range, span)) = opt_str(cx, t, "time") {
        let parsed = range
            .split_once('-')
            .and_then(|(a, b)| Some((parse_time(a.trim())?, parse_time(b.trim())?)));
        let tz = match opt_str(cx, t, "timezone") {
            None => {
                cx.err(
                    &v.span(),
                    K::MissingKey,
                    "a `time` condition needs a `timezone`".to_owned(),
                    "add e.g. `timezone = \"Asia/Shanghai\"`".to_owned(),
                );
                None
            }
            Some((z, zspan)) => match Tz::from_str(&z) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    cx.err(
                        &zspan,
                        K::InvalidValue,
                        format!("unknown time zone \"{z}\""),
                        "use an IANA name such as \"America/New_York\" or \"Asia/Shanghai\""
                            .to_owned(),
                    );
                    None
                }
            },
        };
        let Some((from, to)) = parsed.filter(|(a, b)| a != b) else {
            cx.err(
                &span,
                K::InvalidValue,
                format!("bad time range \"{range}\""),
                "write \"12:00-14:00\" (24h clock; \"22:00-06:00\" spans midnight)".to_owned(),
            );
            return None;
        };
        return Some(Condition::TimeOfDay {
            timezone: tz?,
            from,
            to,
        });
    }
    if find(t, "open").is_some() {
        return hours_ref(cx, "open").map(Condition::Open);
    }
    if find(t, "holiday").is_some() {
        return hours_ref(cx, "holiday").map(Condition::Holiday);
    }
    for key in ["all", "any"] {
        if let Some((_, list)) = find(t, key) {
            let Some(arr) = list.get_ref().as_array() else {
                type_err(cx, list, key, "an array of conditions");
                return None;
            };
            let mut out = Vec::new();
            for item in arr.iter() {
                out.push(condition(cx, item, hours, depth + 1)?);
            }
            return Some(if key == "all" {
                Condition::All(out)
            } else {
                Condition::Any(out)
            });
        }
    }
    if let Some((_, inner)) = find(t, "not") {
        return condition(cx, inner, hours, depth + 1).map(|c| Condition::Not(Box::new(c)));
    }
    let (var, var_span) = req_str(
        cx,
        t,
        &v.span(),
        "var",
        "condition",
        "write e.g. `{ var = \"caller.tier\", eq = \"vip\" }` or `{ open = \"office\" }`",
    )?;
    cx.var_uses.push((var.clone(), var_span));
    if let Some((s, _)) = opt_str(cx, t, "eq") {
        return Some(Condition::Eq(var, s));
    }
    if let Some((s, _)) = opt_str(cx, t, "ne") {
        return Some(Condition::Ne(var, s));
    }
    if let Some(list) = opt_str_list(cx, t, "in") {
        return Some(Condition::In(
            var,
            list.into_iter().map(|(s, _)| s).collect(),
        ));
    }
    if let Some((pat, span)) = opt_str(cx, t, "matches") {
        return regex_of(cx, &pat, &span).map(|r| Condition::Matches(var, r));
    }
    Some(Condition::Truthy(var))
}

#[allow(clippy::too_many_lines)]
fn step(
    cx: &mut Cx<'_>,
    refs: &mut Refs,
    id: &StepId,
    key_span: Span,
    v: &Val<'_>,
    hours: &BTreeSet<String>,
) -> Option<Step> {
    let Some(t) = v.get_ref().as_table() else {
        type_err(cx, v, &id.0, "a table (`[flows.F.steps.NAME]`)");
        return None;
    };
    let (verb_name, verb_span) = req_str(
        cx,
        t,
        &key_span,
        "verb",
        &format!("step `{id}`"),
        &format!("add `verb = \"...\"`; verbs: {}", VERBS.join(", ")),
    )?;
    let what = format!("a `{verb_name}` step");
    let mut allowed: Vec<&str> = COMMON_STEP_KEYS.to_vec();
    let extra: &[&str] = match verb_name.as_str() {
        "answer" => &[],
        "play" => &["file", "barge_in"],
        "say" => &["text", "language", "barge_in"],
        "gather" => &[
            "min_digits",
            "max_digits",
            "terminator",
            "inter_digit_timeout",
            "validate",
            "var",
            "on_failure",
        ],
        "menu" => &["options", "fallback"],
        "set" => &["vars"],
        "if" => &["when", "then", "else"],
        "switch" => &["var", "cases", "default"],
        "goto" => &["to"],
        "enqueue" => &["queue", "skills", "priority", "timeout", "on_failure"],
        "transfer" => &["to", "timeout", "on_failure"],
        "record" => &["path", "max_duration", "beep", "finish_on_key"],
        "record_call" => &["action"],
        "hangup" => &["reason"],
        other => {
            let hint = did_you_mean_or_list(other, VERBS, "verbs");
            cx.err(
                &verb_span,
                K::UnknownVerb,
                format!("unknown verb \"{other}\""),
                hint,
            );
            return None;
        }
    };
    allowed.extend_from_slice(extra);
    if matches!(verb_name.as_str(), "gather" | "menu") {
        allowed.extend_from_slice(PROMPT_KEYS);
        allowed.extend_from_slice(SPEECH_KEYS);
    }
    check_keys(cx, t, &allowed, &what);

    let next = opt_ref(cx, refs, id, t, "next");
    let sensitive = opt_bool(cx, t, "sensitive").unwrap_or(false);
    let req_ref = |cx: &mut Cx<'_>, refs: &mut Refs, key: &str| -> Option<StepId> {
        let (s, span) = req_str(
            cx,
            t,
            &key_span,
            key,
            &format!("step `{id}`"),
            "name a step of this flow",
        )?;
        Some(refs.add(id, &s, span))
    };

    let verb = match verb_name.as_str() {
        "answer" => Verb::Answer,
        "play" => {
            let (file, span) = req_str(
                cx,
                t,
                &key_span,
                "file",
                &format!("step `{id}`"),
                "add `file = \"prompt.wav\"`",
            )?;
            prompt_file(cx, &file, &span);
            Verb::Play {
                file,
                barge_in: opt_bool(cx, t, "barge_in").unwrap_or(false),
            }
        }
        "say" => {
            let Some((_, tv)) = find(t, "text") else {
                cx.err(
                    &key_span,
                    K::MissingKey,
                    format!("step `{id}` is missing `text`"),
                    "add `text = \"...\"` or `text = { en = \"...\", zh = \"...\" }`".to_owned(),
                );
                return None;
            };
            let text = text_of(cx, tv, "text")?;
            Verb::Say {
                text,
                language: opt_str(cx, t, "language").map(|(s, _)| s),
                barge_in: opt_bool(cx, t, "barge_in").unwrap_or(false),
            }
        }
        "gather" | "menu" => {
            let language = opt_str(cx, t, "language").map(|(s, _)| s);
            let prompt = prompts(cx, t, "", &language);
            let invalid_prompt = prompts(cx, t, "invalid_", &language);
            let timeout_prompt = prompts(cx, t, "timeout_", &language);
            let input = input_kinds(cx, t);
            let retries = opt_int(cx, t, "retries", 0, 10).unwrap_or(2) as u32;
            let mut speech = speech_spec(cx, refs, id, t);
            speech_settings(cx, refs, id, t, &input, &language, &mut speech);
            if verb_name == "gather" {
                let max_digits = opt_int(cx, t, "max_digits", 1, 64).unwrap_or(1) as usize;
                let min_digits = opt_int(cx, t, "min_digits", 0, 64).unwrap_or(1) as usize;
                if min_digits > max_digits {
                    if let Some((_, v)) = find(t, "min_digits") {
                        cx.err(
                            &v.span(),
                            K::InvalidValue,
                            format!("min_digits ({min_digits}) is above max_digits ({max_digits})"),
                            "make min_digits ≤ max_digits".to_owned(),
                        );
                    }
                }
                let validate = opt_str(cx, t, "validate").and_then(|(p, s)| regex_of(cx, &p, &s));
                Verb::Gather(Box::new(GatherSpec {
                    prompt,
                    input,
                    min_digits,
                    max_digits,
                    terminator: if find(t, "terminator").is_some() {
                        opt_char(cx, t, "terminator")
                    } else {
                        Some('#')
                    },
                    first_digit_timeout: opt_secs(cx, t, "timeout")
                        .unwrap_or(Duration::from_secs(5)),
                    inter_digit_timeout: opt_secs(cx, t, "inter_digit_timeout")
                        .unwrap_or(Duration::from_secs(3)),
                    retries,
                    invalid_prompt,
                    timeout_prompt,
                    validate,
                    var: {
                        let var = opt_str(cx, t, "var").map_or_else(|| id.0.clone(), |(s, _)| s);
                        cx.var_defs.insert(var.clone());
                        var
                    },
                    on_failure: opt_ref(cx, refs, id, t, "on_failure"),
                    speech,
                }))
            } else {
                let mut options = BTreeMap::new();
                match find(t, "options") {
                    None => cx.err(
                        &key_span,
                        K::MissingKey,
                        format!("menu `{id}` is missing `options`"),
                        "add `options = { \"1\" = \"step\", \"0\" = \"agent\" }`".to_owned(),
                    ),
                    Some((_, ov)) => match ov.get_ref().as_table() {
                        None => type_err(cx, ov, "options", "a table of key = step"),
                        Some(ot) => {
                            for (k, target) in ot.iter() {
                                let key: &str = k.get_ref().as_ref();
                                let mut chars = key.chars();
                                let c = match (chars.next(), chars.next()) {
                                    (Some(c), None) if DTMF_KEYS.contains(c) => c,
                                    _ => {
                                        cx.err(
                                            &k.span(),
                                            K::InvalidValue,
                                            format!("menu option \"{key}\" is not one DTMF key"),
                                            "use one of 0-9, *, # (quoted: `\"1\" = \"step\"`)"
                                                .to_owned(),
                                        );
                                        continue;
                                    }
                                };
                                match target.get_ref().as_str() {
                                    Some(s) => {
                                        options.insert(c, refs.add(id, s, target.span()));
                                    }
                                    None => type_err(cx, target, key, "a step name"),
                                }
                            }
                        }
                    },
                }
                Verb::Menu(Box::new(MenuSpec {
                    prompt,
                    input,
                    options,
                    timeout: opt_secs(cx, t, "timeout").unwrap_or(Duration::from_secs(5)),
                    retries,
                    invalid_prompt,
                    timeout_prompt,
                    fallback: opt_ref(cx, refs, id, t, "fallback"),
                    speech,
                }))
            }
        }
        "set" => {
            let mut vars = Vec::new();
            match find(t, "vars") {
                None => cx.err(
                    &key_span,
                    K::MissingKey,
                    format!("step `{id}` is missing `vars`"),
                    "add `vars = { name = \"value\" }`".to_owned(),
                ),
                Some((_, vv)) => match vv.get_ref().as_table() {
                    None => type_err(cx, vv, "vars", "a table of name = value"),
                    Some(vt) => {
                        for (k, val) in vt.iter() {
                            let value = match val.get_ref() {
                                DeValue::String(s) => {
                                    cx.uses_template(s, &val.span());
                                    s.to_string()
                                }
                                DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                                    val.get_ref().to_string_lossy()
                                }
                                _ => {
                                    type_err(cx, val, k.get_ref(), "a string, number or boolean");
                                    continue;
                                }
                            };
                            cx.var_defs.insert(k.get_ref().to_string());
                            vars.push((k.get_ref().to_string(), value));
                        }
                    }
                },
            }
            Verb::Set(vars)
        }
        "if" => {
            let when = match find(t, "when") {
                Some((_, wv)) => condition(cx, wv, hours, 0),
                None => {
                    cx.err(
                        &key_span,
                        K::MissingKey,
                        format!("step `{id}` is missing `when`"),
                        "add e.g. `when = { var = \"caller.vip\", eq = \"true\" }`".to_owned(),
                    );
                    None
                }
            };
            let then = req_ref(cx, refs, "then");
            let otherwise = opt_ref(cx, refs, id, t, "else");
            Verb::If {
                when: when?,
                then: then?,
                otherwise,
            }
        }
        "switch" => {
            let (var, var_span) = req_str(
                cx,
                t,
                &key_span,
                "var",
                &format!("step `{id}`"),
                "add `var = \"lang\"`",
            )?;
            cx.var_uses.push((var.clone(), var_span));
            let mut cases = Vec::new();
            if let Some((_, cv)) = find(t, "cases") {
                match cv.get_ref().as_table() {
                    None => type_err(cx, cv, "cases", "a table of value = step"),
                    Some(ct) => {
                        for (k, target) in ct.iter() {
                            match target.get_ref().as_str() {
                                Some(s) => cases.push((
                                    k.get_ref().to_string(),
                                    refs.add(id, s, target.span()),
                                )),
                                None => type_err(cx, target, k.get_ref(), "a step name"),
                            }
                        }
                    }
                }
            }
            Verb::Switch {
                var,
                cases,
                default: opt_ref(cx, refs, id, t, "default"),
            }
        }
        "goto" => Verb::Goto(req_ref(cx, refs, "to")?),
        "enqueue" => {
            let (queue, _) = req_str(
                cx,
                t,
                &key_span,
                "queue",
                &format!("step `{id}`"),
                "add `queue = \"general\"`",
            )?;
            let mut skills = Vec::new();
            if let Some((_, sv)) = find(t, "skills") {
                match sv.get_ref().as_table() {
                    None => type_err(cx, sv, "skills", "a table of skill = minimum level"),
                    Some(st) => {
                        for (k, lvl) in st.iter() {
                            match int_of(lvl.get_ref()) {
                                Some(l) if (0..=10).contains(&l) => skills.push(SkillRequirement {
                                    skill: k.get_ref().to_string(),
                                    min_level: l as u8,
                                }),
                                _ => cx.err(
                                    &lvl.span(),
                                    K::InvalidValue,
                                    format!(
                                        "skill `{}` needs a minimum level from 0 to 10",
                                        k.get_ref()
                                    ),
                                    "write e.g. `skills = { cards = 3 }`".to_owned(),
                                ),
                            }
                        }
                    }
                }
            }
            Verb::Enqueue(EnqueueSpec {
                queue,
                skills,
                priority: opt_int(cx, t, "priority", 0, 255).unwrap_or(0) as u8,
                timeout: opt_secs(cx, t, "timeout"),
                on_failure: opt_ref(cx, refs, id, t, "on_failure"),
            })
        }
        "transfer" => {
            let (to, span) = req_str(
                cx,
                t,
                &key_span,
                "to",
                &format!("step `{id}`"),
                "add `to = \"sip:desk@pbx.example\"`",
            )?;
            cx.uses_template(&to, &span);
            if !(to.starts_with("sip:") || to.starts_with("sips:") || to.starts_with("tel:")) {
                cx.err(
                    &span,
                    K::InvalidValue,
                    format!("transfer target \"{to}\" is not a SIP URI"),
                    "write `sip:user@host`".to_owned(),
                );
            }
            Verb::Transfer(TransferSpec {
                to,
                timeout: opt_secs(cx, t, "timeout").unwrap_or(Duration::from_secs(30)),
                on_failure: opt_ref(cx, refs, id, t, "on_failure"),
            })
        }
        "record" => {
            let (path, span) = req_str(
                cx,
                t,
                &key_span,
                "path",
                &format!("step `{id}`"),
                "add `path = \"voicemail/{call.id}.wav\"`",
            )?;
            cx.uses_template(&path, &span);
            let p = Path::new(&path);
            if !path.ends_with(".wav")
                || p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                cx.err(
                    &span,
                    K::InvalidValue,
                    format!("recording path \"{path}\" must be a relative path ending in .wav"),
                    "write e.g. `voicemail/{call.id}.wav` (relative to the recordings directory)"
                        .to_owned(),
                );
            }
            Verb::Record(RecordSpec {
                path,
                max_duration: opt_secs(cx, t, "max_duration").unwrap_or(Duration::from_secs(120)),
                beep: opt_bool(cx, t, "beep").unwrap_or(true),
                finish_on_key: opt_char(cx, t, "finish_on_key"),
            })
        }
        "record_call" => {
            let (action, span) = req_str(
                cx,
                t,
                &key_span,
                "action",
                &format!("step `{id}`"),
                "add `action = \"start\"` or `action = \"stop\"`",
            )?;
            let start = match action.as_str() {
                "start" => true,
                "stop" => false,
                other => {
                    cx.err(
                        &span,
                        K::InvalidValue,
                        format!("record_call action \"{other}\" is not `start` or `stop`"),
                        "write `action = \"start\"` or `action = \"stop\"`".to_owned(),
                    );
                    return None;
                }
            };
            Verb::RecordCall { start }
        }
        _ => Verb::Hangup {
            reason: opt_str(cx, t, "reason").map(|(s, _)| s),
        },
    };
    Some(Step {
        id: id.clone(),
        verb,
        next,
        sensitive,
        span: key_span,
    })
}

trait Lossy {
    fn to_string_lossy(&self) -> String;
}

impl Lossy for DeValue<'_> {
    fn to_string_lossy(&self) -> String {
        match self {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => {
                int_of(self).map_or_else(|| i.as_str().to_owned(), |v| v.to_string())
            }
            DeValue::Float(f) => f.as_str().to_owned(),
            DeValue::Boolean(b) => b.to_string(),
            _ => String::new(),
        }
    }
}

/// Successors of a step (every step it may continue with).
pub(crate) fn successors(step: &Step) -> Vec<&StepId> {
    // `goto` and `hangup` never continue with `next`.
    let mut out: Vec<&StepId> = if matches!(step.verb, Verb::Goto(_) | Verb::Hangup { .. }) {
        Vec::new()
    } else {
        step.next.iter().collect()
    };
    match &step.verb {
        Verb::Gather(g) => {
            out.extend(g.on_failure.iter());
            out.extend(g.speech.intents.iter().filter_map(|i| i.next.as_ref()));
            if let Confirm::Step(c) = &g.speech.confirm {
                out.push(c);
            }
        }
        Verb::Menu(m) => {
            out.extend(m.options.values());
            out.extend(m.fallback.iter());
            out.extend(m.speech.intents.iter().filter_map(|i| i.next.as_ref()));
            if let Confirm::Step(c) = &m.speech.confirm {
                out.push(c);
            }
        }
        Verb::If {
            then, otherwise, ..
        } => {
            out.push(then);
            out.extend(otherwise.iter());
        }
        Verb::Switch { cases, default, .. } => {
            out.extend(cases.iter().map(|(_, s)| s));
            out.extend(default.iter());
        }
        Verb::Goto(t) => out.push(t),
        Verb::Enqueue(e) => out.extend(e.on_failure.iter()),
        Verb::Transfer(t) => out.extend(t.on_failure.iter()),
        _ => {}
    }
    out
}

fn flow(
    cx: &mut Cx<'_>,
    id: &FlowId,
    key_span: Span,
    v: &Val<'_>,
    hours: &BTreeSet<String>,
) -> Option<Flow> {
    let Some(t) = v.get_ref().as_table() else {
        type_err(cx, v, &id.0, "a table (`[flows.NAME]`)");
        return None;
    };
    check_keys(
        cx,
        t,
        &["start", "steps", "description"],
        &format!("flow `{id}`"),
    );
    let mut refs = Refs { sites: Vec::new() };
    let start = req_str(
        cx,
        t,
        &key_span,
        "start",
        &format!("flow `{id}`"),
        "add `start = \"first-step\"`",
    );
    let mut steps = BTreeMap::new();
    match find(t, "steps") {
        None => cx.err(
            &key_span,
            K::MissingKey,
            format!("flow `{id}` has no steps"),
            format!("add `[flows.{id}.steps.NAME]` tables"),
        ),
        Some((_, sv)) => match sv.get_ref().as_table() {
            None => type_err(cx, sv, "steps", "a table of steps"),
            Some(st) => {
                for (k, val) in st.iter() {
                    let sid = StepId(k.get_ref().to_string());
                    // A step whose verb is bad is still declared: references to it are fine.
                    let s = step(cx, &mut refs, &sid, k.span(), val, hours);
                    steps.insert(sid, s);
                }
            }
        },
    }
    let names: Vec<&str> = steps.keys().map(|s| s.0.as_str()).collect();
    let start_id = start.as_ref().map(|(s, _)| StepId(s.clone()));
    if let Some((s, span)) = &start {
        if !steps.contains_key(&StepId(s.clone())) {
            let hint = did_you_mean_or_list(s, &names, "steps");
            cx.err(
                span,
                K::MissingStep,
                format!("flow `{id}` starts at step \"{s}\", which does not exist"),
                hint,
            );
        }
    }
    let mut missing_refs = false;
    for (from, target, span) in &refs.sites {
        if !steps.contains_key(target) {
            missing_refs = true;
            let hint = did_you_mean_or_list(&target.0, &names, "steps of this flow");
            cx.err(
                span,
                K::MissingStep,
                format!(
                    "step `{from}` refers to step \"{target}\", which does not exist in flow `{id}`"
                ),
                hint,
            );
        }
    }
    let mut ok: BTreeMap<StepId, Step> = BTreeMap::new();
    let mut all_ok = true;
    for (k, s) in steps {
        match s {
            Some(s) => {
                ok.insert(k, s);
            }
            None => all_ok = false,
        }
    }
    let start_id = start_id?;
    if !all_ok || missing_refs || !ok.contains_key(&start_id) {
        return None;
    }
    graph_checks(cx, id, &start_id, &ok);
    Some(Flow {
        id: id.clone(),
        start: start_id,
        steps: ok,
    })
}

fn graph_checks(cx: &mut Cx<'_>, flow: &FlowId, start: &StepId, steps: &BTreeMap<StepId, Step>) {
    // Reachability from the start.
    let mut seen: HashSet<&StepId> = HashSet::new();
    let mut stack = vec![start];
    while let Some(s) = stack.pop() {
        if !seen.insert(s) {
            continue;
        }
        if let Some(step) = steps.get(s) {
            stack.extend(successors(step));
        }
    }
    for (id, step) in steps {
        if !seen.contains(id) {
            cx.err(
                &step.span,
                K::UnreachableStep,
                format!("step `{id}` is unreachable from the start of flow `{flow}` (\"{start}\")"),
                "reference it from another step (next, goto, a menu option) or remove it"
                    .to_owned(),
            );
        }
    }
    // Loops among steps that take no input: trim sources and sinks, what remains cycles.
    let nodes: BTreeSet<&StepId> = steps
        .iter()
        .filter(|(_, s)| !s.verb.takes_input())
        .map(|(k, _)| k)
        .collect();
    let succ = |n: &StepId| -> Vec<&StepId> {
        steps
            .get(n)
            .map(|s| {
                successors(s)
                    .into_iter()
                    .filter(|t| nodes.contains(t))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut live: BTreeSet<&StepId> = nodes.clone();
    loop {
        let before = live.len();
        let has_in: HashSet<&StepId> = live
            .iter()
            .flat_map(|n| succ(n))
            .filter(|t| live.contains(t))
            .collect();
        let keep: BTreeSet<&StepId> = live
            .iter()
            .copied()
            .filter(|n| has_in.contains(n) && succ(n).iter().any(|t| live.contains(t)))
            .collect();
        live = keep;
        if live.len() == before {
            break;
        }
    }
    let mut reported: HashSet<&StepId> = HashSet::new();
    for &n in &live {
        if reported.contains(n) {
            continue;
        }
        let mut path: Vec<&StepId> = Vec::new();
        let mut pos: HashMap<&StepId, usize> = HashMap::new();
        let mut cur = n;
        let cycle = loop {
            if let Some(&i) = pos.get(cur) {
                break path[i..].to_vec();
            }
            pos.insert(cur, path.len());
            path.push(cur);
            match succ(cur).into_iter().find(|t| live.contains(t)) {
                Some(t) => cur = t,
                None => break Vec::new(),
            }
        };
        reported.extend(path.iter().copied());
        if cycle.is_empty() {
            continue;
        }
        let first = cycle[0];
        let mut names: Vec<&str> = cycle.iter().map(|s| s.0.as_str()).collect();
        names.push(first.0.as_str());
        if let Some(step) = steps.get(first) {
            cx.err(
                &step.span,
                K::LoopWithoutInput,
                format!(
                    "steps {} loop forever without taking input",
                    names.join(" → ")
                ),
                "put a gather or menu on the loop, or end it with hangup/enqueue/transfer"
                    .to_owned(),
            );
        }
    }
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    if s == "24:00" {
        return NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999);
    }
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

fn hours_table(cx: &mut Cx<'_>, name: &str, key_span: Span, v: &Val<'_>) -> Option<Hours> {
    let Some(t) = v.get_ref().as_table() else {
        type_err(cx, v, name, "a table (`[hours.NAME]`)");
        return None;
    };
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let mut allowed = vec!["timezone", "holidays", "description"];
    allowed.extend_from_slice(&DAYS);
    check_keys(cx, t, &allowed, &format!("hours `{name}`"));
    let tz = req_str(
        cx,
        t,
        &key_span,
        "timezone",
        &format!("hours `{name}`"),
        "add e.g. `timezone = \"Asia/Shanghai\"`",
    )
    .and_then(|(s, span)| match Tz::from_str(&s) {
        Ok(tz) => Some(tz),
        Err(_) => {
            cx.err(
                &span,
                K::InvalidValue,
                format!("unknown time zone \"{s}\""),
                "use an IANA name such as \"America/New_York\" or \"Asia/Shanghai\"".to_owned(),
            );
            None
        }
    });
    let mut weekly: [Vec<(NaiveTime, NaiveTime)>; 7] = Default::default();
    for (i, day) in DAYS.iter().enumerate() {
        let Some((_, dv)) = find(t, day) else {
            continue;
        };
        let items: Vec<(String, Span)> = match dv.get_ref() {
            DeValue::String(s) => vec![(s.to_string(), dv.span())],
            DeValue::Array(a) => a
                .iter()
                .filter_map(|x| x.get_ref().as_str().map(|s| (s.to_owned(), x.span())))
                .collect(),
            _ => {
                type_err(
                    cx,
                    dv,
                    day,
                    "\"HH:MM-HH:MM\", \"closed\" or an array of periods",
                );
                continue;
            }
        };
        for (s, span) in items {
            if s == "closed" {
                continue;
            }
            let parsed = s
                .split_once('-')
                .and_then(|(a, b)| Some((parse_time(a.trim())?, parse_time(b.trim())?)));
            match parsed {
                Some((a, b)) if a < b => weekly[i].push((a, b)),
                _ => cx.err(
                    &span,
                    K::InvalidValue,
                    format!("bad opening period \"{s}\""),
                    "write \"09:00-17:30\" (start before end, 24h clock) or \"closed\"".to_owned(),
                ),
            }
        }
    }
    let mut holidays = Vec::new();
    if let Some((_, hv)) = find(t, "holidays") {
        match hv.get_ref().as_array() {
            None => type_err(cx, hv, "holidays", "an array of dates"),
            Some(arr) => {
                for item in arr.iter() {
                    let text = match item.get_ref() {
                        DeValue::String(s) => s.to_string(),
                        DeValue::Datetime(d) => d.to_string(),
                        _ => String::new(),
                    };
                    match NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
                        Ok(d) => holidays.push(d),
                        Err(_) => cx.err(
                            &item.span(),
                            K::InvalidValue,
                            format!("bad holiday date {text:?}"),
                            "write dates as 2026-12-25".to_owned(),
                        ),
                    }
                }
            }
        }
    }
    Some(Hours {
        timezone: tz?,
        weekly,
        holidays,
    })
}

const BUILTINS: &[&str] = &["answer", "ring", "echo", "digits", "bridge"];

fn route(cx: &mut Cx<'_>, v: &Val<'_>, flows: &BTreeSet<String>) -> Option<(Route, RouteSite)> {
    let Some(t) = v.get_ref().as_table() else {
        type_err(cx, v, "route", "a table (`[[route]]`)");
        return None;
    };
    let span = v.span();
    check_keys(
        cx,
        t,
        &[
            "number",
            "prefix",
            "trunk",
            "default",
            "flow",
            "builtin",
            "to",
            "description",
        ],
        "a route",
    );
    let number = opt_str(cx, t, "number").map(|(s, _)| s);
    let prefix = opt_str(cx, t, "prefix").map(|(s, _)| s);
    let trunk = opt_str(cx, t, "trunk").map(|(s, _)| s);
    let default = opt_bool(cx, t, "default").unwrap_or(false);
    if number.is_none() && prefix.is_none() && trunk.is_none() && !default {
        cx.err(
            &span,
            K::MissingKey,
            "route matches nothing".to_owned(),
            "add `number = \"...\"`, `prefix = \"...\"`, `trunk = \"...\"` or `default = true`"
                .to_owned(),
        );
    }
    let flow = opt_str(cx, t, "flow");
    let builtin = opt_str(cx, t, "builtin");
    let target = match (flow, builtin) {
        (Some((f, fspan)), None) => {
            if !flows.contains(&f) {
                let names: Vec<&str> = flows.iter().map(String::as_str).collect();
                let hint = did_you_mean_or_list(&f, &names, "flows");
                cx.err(
                    &fspan,
                    K::UnknownReference,
                    format!("route leads to flow \"{f}\", which does not exist"),
                    hint,
                );
                return None;
            }
            RouteTarget::Flow(FlowId(f))
        }
        (None, Some((b, bspan))) => match b.as_str() {
            "answer" => RouteTarget::Builtin(Builtin::Answer),
            "ring" => RouteTarget::Builtin(Builtin::Ring),
            "echo" => RouteTarget::Builtin(Builtin::Echo),
            "digits" => RouteTarget::Builtin(Builtin::Digits),
            "bridge" => {
                let (to, _) = req_str(
                    cx,
                    t,
                    &span,
                    "to",
                    "a `bridge` route",
                    "add `to = \"sip:user@host\"`",
                )?;
                RouteTarget::Builtin(Builtin::Bridge { to })
            }
            other => {
                let hint = did_you_mean_or_list(other, BUILTINS, "built-ins");
                cx.err(
                    &bspan,
                    K::InvalidValue,
                    format!("unknown built-in \"{other}\""),
                    hint,
                );
                return None;
            }
        },
        (Some(_), Some((_, bspan))) => {
            cx.err(
                &bspan,
                K::InvalidValue,
                "route has both `flow` and `builtin`".to_owned(),
                "keep one".to_owned(),
            );
            return None;
        }
        (None, None) => {
            cx.err(
                &span,
                K::MissingKey,
                "route has no `flow` or `builtin`".to_owned(),
                "add `flow = \"main\"` or `builtin = \"echo\"`".to_owned(),
            );
            return None;
        }
    };
    let (line, column) = cx.pos(span.start);
    let key = number
        .clone()
        .map(|n| format!("number {n}"))
        .or_else(|| prefix.clone().map(|p| format!("prefix {p}")));
    let key = key.map(|k| {
        format!(
            "{k}{}",
            trunk
                .as_ref()
                .map(|t| format!(" trunk {t}"))
                .unwrap_or_default()
        )
    });
    Some((
        Route {
            number,
            prefix,
            trunk,
            default,
            target,
        },
        RouteSite {
            key,
            default,
            line,
            column,
        },
    ))
}

/// Validate one dialplan given as a string (`file` is used for diagnostics only).
pub fn check_str(
    file: &Path,
    src: &str,
    prompts_dir: Option<&Path>,
) -> Result<LoadedDialplan, Vec<Diagnostic>> {
    let mut cx = Cx {
        file: file.to_path_buf(),
        src,
        diags: Vec::new(),
        prompts: Vec::new(),
        var_uses: Vec::new(),
        var_defs: BTreeSet::new(),
    };
    let doc = match DeTable::parse(src) {
        Ok(d) => d,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().to_owned();
            cx.err(
                &span,
                K::Syntax,
                format!("TOML syntax error: {msg}"),
                "fix the TOML syntax (quotes, brackets, `key = value`)".to_owned(),
            );
            return Err(cx.diags);
        }
    };
    let top = doc.get_ref();
    check_keys(
        &mut cx,
        top,
        &[
            "name",
            "description",
            "default_language",
            "languages",
            "route",
            "flows",
            "hours",
        ],
        "the dialplan",
    );
    let name = opt_str(&mut cx, top, "name")
        .map(|(s, _)| s)
        .unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    let default_language =
        opt_str(&mut cx, top, "default_language").map_or_else(|| "en".to_owned(), |(s, _)| s);
    let mut languages: Vec<String> = opt_str_list(&mut cx, top, "languages")
        .unwrap_or_default()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    if !languages.contains(&default_language) {
        languages.insert(0, default_language.clone());
    }

    let mut hours = BTreeMap::new();
    let mut declared_hours = BTreeSet::new();
    if let Some((_, hv)) = find(top, "hours") {
        match hv.get_ref().as_table() {
            None => type_err(&mut cx, hv, "hours", "a table of `[hours.NAME]`"),
            Some(ht) => {
                for (k, v) in ht.iter() {
                    declared_hours.insert(k.get_ref().to_string());
                    if let Some(h) = hours_table(&mut cx, k.get_ref(), k.span(), v) {
                        hours.insert(k.get_ref().to_string(), h);
                    }
                }
            }
        }
    }

    let mut flows = BTreeMap::new();
    let mut flow_names = BTreeSet::new();
    match find(top, "flows") {
        None => cx.err(
            &(0..0),
            K::MissingKey,
            "the dialplan has no flows".to_owned(),
            "add `[flows.main]` with `start` and `[flows.main.steps.NAME]` tables".to_owned(),
        ),
        Some((_, fv)) => match fv.get_ref().as_table() {
            None => type_err(&mut cx, fv, "flows", "a table of `[flows.NAME]`"),
            Some(ft) => {
                for (k, v) in ft.iter() {
                    let id = FlowId(k.get_ref().to_string());
                    flow_names.insert(id.0.clone());
                    if let Some(f) = flow(&mut cx, &id, k.span(), v, &declared_hours) {
                        flows.insert(id, f);
                    }
                }
            }
        },
    }

    let mut routes = Vec::new();
    let mut route_sites = Vec::new();
    if let Some((_, rv)) = find(top, "route") {
        match rv.get_ref().as_array() {
            None => type_err(&mut cx, rv, "route", "an array of tables (`[[route]]`)"),
            Some(arr) => {
                for item in arr.iter() {
                    if let Some((r, site)) = route(&mut cx, item, &flow_names) {
                        routes.push(r);
                        route_sites.push(site);
                    }
                }
            }
        }
    }
    check_route_sites(&mut cx.diags, file, &route_sites, &mut Vec::new());

    if let Some(dir) = prompts_dir {
        let prompts = std::mem::take(&mut cx.prompts);
        for (p, span) in prompts {
            if !dir.join(&p).is_file() {
                cx.err(
                    &span,
                    K::MissingPrompt,
                    format!("prompt file \"{p}\" not found in {}", dir.display()),
                    format!("add {}/{p} or fix the name", dir.display()),
                );
            }
        }
    }

    let uses = std::mem::take(&mut cx.var_uses);
    for (name, span) in uses {
        if !BUILTIN_VARS.contains(&name.as_str()) && !cx.var_defs.contains(&name) {
            let mut known: Vec<&str> = BUILTIN_VARS.to_vec();
            known.extend(cx.var_defs.iter().map(String::as_str));
            let hint = match suggest(&name, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? (unset variables are empty)"),
                None => "set it with a `set` step or a gather's `var`; unset variables are empty"
                    .to_owned(),
            };
            cx.push(
                Severity::Warning,
                &span,
                K::UnknownVariable,
                format!("variable `{name}` is never set"),
                Some(hint),
            );
        }
    }

    if cx.has_errors() {
        return Err(cx.diags);
    }
    let plan = Dialplan {
        name,
        source: file.to_path_buf(),
        default_language,
        languages,
        routes,
        flows,
        hours,
    };
    Ok(LoadedDialplan {
        plan: Arc::new(plan),
        warnings: cx.diags,
        route_sites,
    })
}

/// Report routes claiming the same number/prefix or a second default. `seen` carries the
/// routes of files checked before.
fn check_route_sites(
    diags: &mut Vec<Diagnostic>,
    file: &Path,
    sites: &[RouteSite],
    seen: &mut Vec<(PathBuf, RouteSite)>,
) {
    let mut local: Vec<(PathBuf, RouteSite)> = std::mem::take(seen);
    for s in sites {
        let clash = local
            .iter()
            .find(|(_, o)| (s.key.is_some() && o.key == s.key) || (s.default && o.default));
        if let Some((ofile, o)) = clash {
            let what = s.key.clone().unwrap_or_else(|| "default route".to_owned());
            diags.push(Diagnostic {
                file: file.to_path_buf(),
                line: s.line,
                column: s.column,
                severity: Severity::Error,
                kind: K::DuplicateRoute,
                message: format!(
                    "{what} is already routed at {}:{}:{}",
                    ofile.display(),
                    o.line,
                    o.column
                ),
                hint: Some(
                    "each number, prefix and the default may be routed once across all dialplans"
                        .to_owned(),
                ),
            });
        }
        local.push((file.to_path_buf(), s.clone()));
    }
    *seen = local;
}

/// Validate one dialplan file.
pub fn check_file(
    path: &Path,
    prompts_dir: Option<&Path>,
) -> Result<LoadedDialplan, Vec<Diagnostic>> {
    match std::fs::read_to_string(path) {
        Ok(src) => check_str(path, &src, prompts_dir),
        Err(e) => Err(vec![io_diag(path, &e)]),
    }
}

fn io_diag(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        severity: Severity::Error,
        kind: K::Io,
        message: format!("cannot read: {e}"),
        hint: Some("check that the path exists and is readable".to_owned()),
    }
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_diag(dir, &e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Validate every `*.toml` dialplan in a directory (sorted by name), including cross-file
/// checks (a number routed twice, two defaults). Returns every diagnostic of every file.
pub fn check_dir(
    dir: &Path,
    prompts_dir: Option<&Path>,
) -> Result<Vec<LoadedDialplan>, Vec<Diagnostic>> {
    let files = toml_files(dir).map_err(|d| vec![d])?;
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    let mut seen = Vec::new();
    for f in &files {
        match check_file(f, prompts_dir) {
            Ok(l) => {
                check_route_sites(&mut errs, f, &l.route_sites, &mut seen);
                ok.push(l);
            }
            Err(d) => errs.extend(d),
        }
    }
    if files.is_empty() {
        errs.push(Diagnostic {
            file: dir.to_path_buf(),
            line: 1,
            column: 1,
            severity: Severity::Error,
            kind: K::Io,
            message: "no dialplan (*.toml) in this directory".to_owned(),
            hint: Some("add e.g. hotline.toml".to_owned()),
        });
    }
    if errs.is_empty() { Ok(ok) } else { Err(errs) }
}

/// Content fingerprint of the dialplan directory (paths and content hashes).
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64)> {
    toml_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(&p).ok().hash(&mut h);
            (p, h.finish())
        })
        .collect()
}

/// Where a dialed number goes.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The dialplan the route belongs to (keep it for the whole call).
    pub plan: Arc<Dialplan>,
    /// Flow or built-in.
    pub target: RouteTarget,
}

/// All dialplans of a directory, validated together. Immutable: a reload builds a new set and
/// the driver swaps its `Arc<DialplanSet>`; calls in progress keep their `Arc<Dialplan>`.
#[derive(Debug, Clone)]
pub struct DialplanSet {
    dir: PathBuf,
    prompts_dir: Option<PathBuf>,
    plans: Vec<LoadedDialplan>,
    fingerprint: Vec<(PathBuf, u64)>,
}

/// Outcome of [`DialplanSet::reload_if_changed`].
#[derive(Debug)]
pub enum Reload {
    /// No file changed.
    Unchanged,
    /// Files changed and all validate: swap in this set.
    Reloaded(DialplanSet),
    /// Files changed but do not validate: keep the current set, report these.
    Rejected(Vec<Diagnostic>),
}

impl DialplanSet {
    /// Load and validate every dialplan in `dir`.
    pub fn load(dir: &Path, prompts_dir: Option<&Path>) -> Result<Self, Vec<Diagnostic>> {
        let fingerprint = fingerprint(dir);
        let plans = check_dir(dir, prompts_dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            prompts_dir: prompts_dir.map(Path::to_path_buf),
            plans,
            fingerprint,
        })
    }

    /// Like [`DialplanSet::load`], as an [`IvrError`].
    pub fn load_or_error(dir: &Path, prompts_dir: Option<&Path>) -> Result<Self, IvrError> {
        Self::load(dir, prompts_dir).map_err(IvrError::Invalid)
    }

    /// The loaded dialplans.
    pub fn plans(&self) -> impl Iterator<Item = &Arc<Dialplan>> {
        self.plans.iter().map(|l| &l.plan)
    }

    /// Warnings of every file.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.plans.iter().flat_map(|l| l.warnings.iter())
    }

    /// Whether any file was added, removed or edited since this set was loaded.
    pub fn changed_on_disk(&self) -> bool {
        fingerprint(&self.dir) != self.fingerprint
    }

    /// Reload when the directory changed. An invalid edit is rejected: keep using `self`.
    pub fn reload_if_changed(&self) -> Reload {
        if !self.changed_on_disk() {
            return Reload::Unchanged;
        }
        match Self::load(&self.dir, self.prompts_dir.as_deref()) {
            Ok(s) => Reload::Reloaded(s),
            Err(d) => Reload::Rejected(d),
        }
    }

    /// Route a call: exact number, then longest prefix, then the default route. A route with
    /// a `trunk` only matches calls from that trunk, and wins over one without.
    pub fn route(&self, dialed: &str, trunk: Option<&str>) -> Option<RouteMatch> {
        let mut best: Option<(u32, usize, &LoadedDialplan, &Route)> = None;
        for l in &self.plans {
            for r in &l.plan.routes {
                if let Some(t) = &r.trunk {
                    if Some(t.as_str()) != trunk {
                        continue;
                    }
                }
                let trunk_bonus = u32::from(r.trunk.is_some());
                let score = if r.number.as_deref() == Some(dialed) {
                    Some((6 + trunk_bonus, 0))
                } else if let Some(p) = r.prefix.as_deref().filter(|p| dialed.starts_with(p)) {
                    Some((4 + trunk_bonus, p.len()))
                } else if r.number.is_none() && r.prefix.is_none() && r.trunk.is_some() {
                    Some((3, 0))
                } else if r.default {
                    Some((1, 0))
                } else {
                    None
                };
                if let Some((rank, len)) = score {
                    if best
                        .as_ref()
                        .is_none_or(|(br, bl, _, _)| (rank, len) > (*br, *bl))
                    {
                        best = Some((rank, len, l, r));
                    }
                }
            }
        }
        best.map(|(_, _, l, r)| RouteMatch {
            plan: Arc::clone(&l.plan),
            target: r.target.clone(),
        })
    }
}
