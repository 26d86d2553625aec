//! Dialplans as the server runs them: a validated [`DialplanSet`] plus everything its calls
//! need ready before the first call — the decoded prompt files its `play`s name and the
//! speech of every static `say` text — and the hot-reload thread.
//!
//! Hot reload: a thread polls the directory every `[ivr] reload_interval_ms` (1 s) and on
//! SIGHUP. A valid edit builds a new [`Plans`] (prompts decoded, static speech rendered) and
//! hands it to the SIP task, which swaps its `Arc`: new calls get the new version, calls in
//! progress keep the `Arc<Dialplan>` they started with. An invalid edit is rejected — logged
//! with its diagnostics and reported as `dialplan.rejected` — and the running version stays.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use frontdoor_ivr::model::{Prompt as IvrPrompt, Text, Verb};
use frontdoor_ivr::{Diagnostic, Dialplan, DialplanSet, Reload};
use frontdoor_media::prompt::{Prompt, PromptLibrary};

use crate::tts::Tts;

/// Text the driver itself speaks for the `bridge` test number.
pub const BRIDGE_TEXT: &str = "Sorry, the bridge test number is not available yet. Goodbye.";

/// What the driver says when an `enqueue` step without `on_failure` fails (no ACD yet), by
/// language; English for any other.
pub const AGENTS_BUSY: &[(&str, &str)] = &[
    ("en", "All agents are busy. Please call again later."),
    ("zh", "所有坐席正忙，请稍后再拨。"),
];

/// What the driver says when a `transfer` step without `on_failure` fails (no bridging yet).
pub const NOT_AVAILABLE: &[(&str, &str)] = &[
    ("en", "Sorry, that number is not available."),
    ("zh", "对不起，该号码暂时无法接通。"),
];

/// The notice of `table` in `language` (English when it has none): (language, text).
pub fn notice(
    table: &[(&'static str, &'static str)],
    language: &str,
) -> (&'static str, &'static str) {
    table
        .iter()
        .find(|(l, _)| *l == language)
        .or_else(|| table.first())
        .copied()
        .unwrap_or(("en", ""))
}

/// One version of the dialplans, ready to run.
#[derive(Debug)]
pub struct Plans {
    /// The validated dialplans.
    pub set: DialplanSet,
    /// Prompt files named by `play` steps and prompt items, by the name used in the dialplan.
    pub prompts: HashMap<String, Prompt>,
    /// Version number, 1 at start, +1 per reload.
    pub version: u64,
}

impl Plans {
    /// Names of the dialplans.
    pub fn names(&self) -> Vec<String> {
        self.set.plans().map(|p| p.name.clone()).collect()
    }

    /// Whether any step takes speech input (the recogniser is loaded only then).
    pub fn has_speech_steps(&self) -> bool {
        use frontdoor_ivr::model::InputKind;
        self.set.plans().any(|p| {
            p.flows.values().any(|f| {
                f.steps.values().any(|s| match &s.verb {
                    Verb::Gather(g) => g.input.contains(&InputKind::Speech),
                    Verb::Menu(m) => m.input.contains(&InputKind::Speech),
                    _ => false,
                })
            })
        })
    }
}

/// Why a version could not be made ready.
#[derive(Debug)]
pub enum LoadError {
    /// Validation failed.
    Invalid(Vec<Diagnostic>),
    /// A prompt file did not decode, or speech did not render.
    Media(String),
}

impl LoadError {
    /// One line per problem (diagnostics with file:line:col and hint).
    pub fn lines(&self) -> Vec<String> {
        match self {
            LoadError::Invalid(d) => d.iter().map(ToString::to_string).collect(),
            LoadError::Media(m) => vec![m.clone()],
        }
    }
}

/// Every (language, text) a dialplan speaks that has no `{variable}`.
pub fn static_texts(plan: &Dialplan) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut text = |t: &Text, language: &Option<String>| match t {
        Text::Plain(s) => {
            if frontdoor_ivr::load::template_vars(s).is_empty() {
                let s = frontdoor_ivr::interp::interpolate(s, &HashMap::new());
                match language {
                    Some(l) => {
                        out.insert((l.clone(), s));
                    }
                    None => {
                        for l in &plan.languages {
                            out.insert((l.clone(), s.clone()));
                        }
                        out.insert((plan.default_language.clone(), s));
                    }
                }
            }
        }
        Text::PerLanguage(m) => {
            for (l, s) in m {
                if frontdoor_ivr::load::template_vars(s).is_empty() {
                    let s = frontdoor_ivr::interp::interpolate(s, &HashMap::new());
                    // An explicit language picks its entry; otherwise each entry is spoken in
                    // its own language.
                    let lang = match language {
                        Some(x) if m.contains_key(x) => x.clone(),
                        _ => l.clone(),
                    };
                    out.insert((lang, s));
                }
            }
        }
    };
    for_each_prompt(plan, &mut |p| {
        if let IvrPrompt::Say { text: t, language } = p {
            text(t, language);
        }
    });
    out
}

/// Every prompt file a dialplan plays.
pub fn play_files(plan: &Dialplan) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for_each_prompt(plan, &mut |p| {
        if let IvrPrompt::Play(f) = p {
            out.insert(f.clone());
        }
    });
    out
}

fn for_each_prompt(plan: &Dialplan, f: &mut dyn FnMut(&IvrPrompt)) {
    for flow in plan.flows.values() {
        for step in flow.steps.values() {
            match &step.verb {
                Verb::Play { file, .. } => f(&IvrPrompt::Play(file.clone())),
                Verb::Say { text, language, .. } => f(&IvrPrompt::Say {
                    text: text.clone(),
                    language: language.clone(),
                }),
                Verb::Gather(g) => {
                    for p in g
                        .prompt
                        .iter()
                        .chain(&g.invalid_prompt)
                        .chain(&g.timeout_prompt)
                    {
                        f(p);
                    }
                }
                Verb::Menu(m) => {
                    for p in m
                        .prompt
                        .iter()
                        .chain(&m.invalid_prompt)
                        .chain(&m.timeout_prompt)
                    {
                        f(p);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Makes a validated set ready: decodes its prompt files (from `library` when already loaded)
/// and renders its static speech (in parallel, `threads` at once). Blocking.
pub fn prepare(
    set: DialplanSet,
    version: u64,
    prompt_dir: &Path,
    library: &PromptLibrary,
    tts: &Tts,
    threads: usize,
) -> Result<Plans, LoadError> {
    let mut prompts = HashMap::new();
    let mut texts = BTreeSet::new();
    texts.insert(("en".to_owned(), BRIDGE_TEXT.to_owned()));
    for (l, t) in AGENTS_BUSY.iter().chain(NOT_AVAILABLE) {
        texts.insert(((*l).to_owned(), (*t).to_owned()));
    }
    for plan in set.plans() {
        for file in play_files(plan) {
            if prompts.contains_key(&file) {
                continue;
            }
            let path = prompt_dir.join(&file);
            let top_level_stem = (Path::new(&file).parent() == Some(Path::new("")))
                .then(|| Path::new(&file).file_stem().and_then(|s| s.to_str()))
                .flatten();
            let p = match top_level_stem.and_then(|s| library.get(s)) {
                Some(p) => p.clone(),
                None => Prompt::load(&path).map_err(|e| {
                    LoadError::Media(format!("{}: prompt {file:?}: {e}", plan.source.display()))
                })?,
            };
            prompts.insert(file, p);
        }
        texts.extend(static_texts(plan));
    }
    let jobs: Vec<(String, String)> = texts
        .into_iter()
        .map(|(lang, text)| (tts.voice(&lang), text))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((voice, text)) = jobs.get(i) else {
                        return;
                    };
                    if let Err(e) = tts.render(voice, text) {
                        errors
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(format!("speech {text:?} (voice {voice}): {e}"));
                    }
                }
            });
        }
    });
    let errors = errors
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(first) = errors.first() {
        return Err(LoadError::Media(format!(
            "{first}{}",
            if errors.len() > 1 {
                format!(" (and {} more)", errors.len() - 1)
            } else {
                String::new()
            }
        )));
    }
    let classifiers = warm_classifiers(&set);
    tracing::info!(
        version,
        speech = jobs.len(),
        prompts = prompts.len(),
        classifiers,
        "dialplans ready"
    );
    Ok(Plans {
        set,
        prompts,
        version,
    })
}

/// Trains the intent classifiers of the speech steps that have `training` (once per process
/// and training data: [`frontdoor_speech::nlu::shared_classifier`]) here, on the loader, so
/// that a call's first speech turn finds them trained instead of training on the SIP task.
/// A classifier that cannot be trained (missing embeddings) is reported by the turn itself
/// (warning; the phrase matcher scores the intents). Returns how many are ready.
fn warm_classifiers(set: &DialplanSet) -> usize {
    let models = frontdoor_speech::models_dir();
    let mut ready = 0;
    for plan in set.plans() {
        for flow in plan.flows.values() {
            for step in flow.steps.values() {
                let spec = match &step.verb {
                    Verb::Gather(g) => &g.speech,
                    Verb::Menu(m) => &m.speech,
                    _ => continue,
                };
                let Some(training) = &spec.training else {
                    continue;
                };
                let intents: Vec<(String, Vec<String>)> = spec
                    .intents
                    .iter()
                    .map(|i| (i.name.clone(), i.phrases.clone()))
                    .collect();
                match frontdoor_speech::nlu::shared_classifier(training, &intents, &models) {
                    Ok(_) => ready += 1,
                    Err(e) => tracing::debug!(error = %e, "intent classifier not trained at load"),
                }
            }
        }
    }
    ready
}

/// Loads, validates and prepares the dialplans of `dir` (start-up).
pub fn load(
    dir: &Path,
    prompt_dir: &Path,
    library: &PromptLibrary,
    tts: &Tts,
    threads: usize,
) -> Result<Plans, LoadError> {
    let set = DialplanSet::load(dir, Some(prompt_dir)).map_err(LoadError::Invalid)?;
    for w in set.warnings() {
        tracing::warn!("{w}");
    }
    prepare(set, 1, prompt_dir, library, tts, threads)
}

/// What the reload thread reports.
#[derive(Debug)]
pub enum ReloadNote {
    /// A new version is ready.
    Reloaded(Arc<Plans>),
    /// An edit was rejected; the running version stays.
    Rejected(Vec<String>),
}

/// The reload thread's inputs.
#[derive(Debug)]
pub struct Reloader {
    /// Poll interval (`None`: only on request).
    pub interval: Option<Duration>,
    /// Prompt directory.
    pub prompt_dir: PathBuf,
    /// Loaded prompts.
    pub library: Arc<PromptLibrary>,
    /// Speech.
    pub tts: Arc<Tts>,
    /// Render threads.
    pub threads: usize,
}

impl Reloader {
    /// Runs until `wake` closes: checks on every message (SIGHUP) and every `interval`.
    pub fn run(self, current: DialplanSet, wake: Receiver<()>, report: impl Fn(ReloadNote)) {
        let mut current = current;
        let mut version = 1u64;
        let mut last_rejected: Option<Vec<String>> = None;
        loop {
            let r = match self.interval {
                Some(d) => wake.recv_timeout(d),
                None => wake.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            if let Err(RecvTimeoutError::Disconnected) = r {
                return;
            }
            let rejected = match current.reload_if_changed() {
                Reload::Unchanged => {
                    last_rejected = None;
                    continue;
                }
                Reload::Reloaded(set) => {
                    for w in set.warnings() {
                        tracing::warn!("{w}");
                    }
                    let keep = set.clone();
                    match prepare(
                        set,
                        version + 1,
                        &self.prompt_dir,
                        &self.library,
                        &self.tts,
                        self.threads,
                    ) {
                        Ok(plans) => {
                            version += 1;
                            current = keep;
                            last_rejected = None;
                            tracing::info!(version, "dialplans reloaded");
                            report(ReloadNote::Reloaded(Arc::new(plans)));
                            continue;
                        }
                        Err(e) => e.lines(),
                    }
                }
                Reload::Rejected(d) => LoadError::Invalid(d).lines(),
            };
            if last_rejected.as_ref() != Some(&rejected) {
                for l in &rejected {
                    tracing::error!("dialplan edit rejected: {l}");
                }
                report(ReloadNote::Rejected(rejected.clone()));
                last_rejected = Some(rejected);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn hotline_static_texts_and_files() {
        let set =
            DialplanSet::load(&repo().join("dialplans"), Some(&repo().join("prompts"))).unwrap();
        let plan = set.plans().next().unwrap();
        let texts = static_texts(plan);
        assert!(texts.contains(&("en".to_owned(), "Welcome to Frontdoor Bank.".to_owned())));
        assert!(texts.contains(&("zh".to_owned(), "欢迎致电前门银行。".to_owned())));
        assert!(texts.contains(&("zh".to_owned(), "中文服务，请按 2。".to_owned())));
        // Texts with variables are rendered on demand, not at load.
        assert!(!texts.iter().any(|(_, t)| t.contains("{caller.name}")));
        assert!(play_files(plan).is_empty());
    }

    /// The hotline's `speech_main` classifier is trained at load; the step's first speech
    /// turn then gets the same classifier (no training on the SIP task).
    #[test]
    fn hotline_classifier_is_trained_at_load() {
        let set =
            DialplanSet::load(&repo().join("dialplans"), Some(&repo().join("prompts"))).unwrap();
        assert_eq!(warm_classifiers(&set), 1);
        let plan = set.plans().next().unwrap();
        let step = plan
            .flows
            .values()
            .flat_map(|f| f.steps.values())
            .find_map(|s| match &s.verb {
                Verb::Menu(m) if m.speech.training.is_some() => Some(&m.speech),
                _ => None,
            })
            .unwrap();
        let intents: Vec<(String, Vec<String>)> = step
            .intents
            .iter()
            .map(|i| (i.name.clone(), i.phrases.clone()))
            .collect();
        let training = step.training.as_ref().unwrap();
        let models = frontdoor_speech::models_dir();
        let a = frontdoor_speech::nlu::shared_classifier(training, &intents, &models).unwrap();
        let b = frontdoor_speech::nlu::shared_classifier(training, &intents, &models).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b), "trained once");
        assert!(a.uses_embeddings());
    }
}
