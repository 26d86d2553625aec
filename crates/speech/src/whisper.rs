//! [`Recognizer`] on whisper.cpp (via whisper-rs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::audio::{PrepConfig, WHISPER_RATE, prepare};
use crate::error::SpeechError;
use crate::grammar::{Expectation, Outcome};
use crate::model::{GgmlHeader, validate_ggml};
use crate::{Recognition, Recognizer};

/// Encoder frames per second of audio (whisper: 1500 frames per 30 s).
const FRAMES_PER_SECOND: f32 = 50.0;
/// Score weight for transcripts from a looping decoder.
const LOOP_WEIGHT: f32 = 0.8;

/// A loaded ggml Whisper model; cheap to clone and share between recognizers (threads).
#[derive(Clone)]
pub struct WhisperModel {
    ctx: Arc<WhisperContext>,
    header: GgmlHeader,
    path: PathBuf,
}

impl std::fmt::Debug for WhisperModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperModel")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish()
    }
}

impl WhisperModel {
    /// Validate and load a ggml model (CPU). Errors name the file and the fix.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SpeechError> {
        let path = path.as_ref();
        let header = validate_ggml(path)?;
        // route whisper.cpp's stderr chatter into `tracing`
        whisper_rs::install_logging_hooks();
        let mut params = WhisperContextParameters::default();
        params.use_gpu(false);
        let ctx = WhisperContext::new_with_params(path, params).map_err(|e| {
            SpeechError::ModelCorrupt {
                path: path.to_owned(),
                reason: format!("whisper.cpp could not load it ({e})"),
            }
        })?;
        Ok(Self {
            ctx: Arc::new(ctx),
            header,
            path: path.to_owned(),
        })
    }

    /// The model's header.
    pub fn header(&self) -> &GgmlHeader {
        &self.header
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Decoder settings of [`WhisperRecognizer`].
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperConfig {
    /// CPU threads per recognition.
    pub threads: u16,
    /// Language code ("en"); English-only models ignore it.
    pub language: String,
    /// Bias the decoder with the expectation's wording (initial prompt).
    pub use_prompt: bool,
    /// Encoder context = audio length x 50 frames/s + this margin (frames), at least `min_audio_ctx`.
    pub audio_ctx_margin: u32,
    /// Lower bound of the encoder context (frames); very short contexts degrade accuracy.
    pub min_audio_ctx: u32,
    /// Longest transcript, tokens (also limited to `4 + 8 x speech seconds`, which stops
    /// repetition loops early).
    pub max_tokens: u32,
    /// Let Whisper predict timestamp tokens (helps it end the segment at the end of speech).
    pub timestamps: bool,
    /// Audio preparation (VAD, padding, level).
    pub prep: PrepConfig,
}

impl Default for WhisperConfig {
    fn default() -> Self {
        Self {
            threads: 1,
            language: "en".into(),
            use_prompt: true,
            audio_ctx_margin: 32,
            min_audio_ctx: 128,
            max_tokens: 48,
            timestamps: true,
            prep: PrepConfig::default(),
        }
    }
}

/// Decoder settings kept per Whisper prompt, at most this many (a dialplan has a prompt per
/// speech step; beyond, e.g. prompts made of callers' names, they are built per clip).
const MAX_PARAMS: usize = 256;

/// A recognizer: one whisper state (scratch buffers) over a shared [`WhisperModel`].
pub struct WhisperRecognizer {
    model: WhisperModel,
    state: WhisperState,
    config: WhisperConfig,
    /// The decoder settings of each initial prompt seen, built once: whisper-rs hands
    /// whisper.cpp the prompt and the language as C strings it never frees, so settings built
    /// per clip would leak a little memory at every recognition of a long-running server.
    params: HashMap<String, FullParams<'static, 'static>>,
}

impl std::fmt::Debug for WhisperRecognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperRecognizer")
            .field("model", &self.model)
            .field("config", &self.config)
            .finish()
    }
}

impl WhisperRecognizer {
    /// A recognizer with default settings.
    pub fn new(model: &WhisperModel) -> Result<Self, SpeechError> {
        Self::with_config(model, WhisperConfig::default())
    }

    /// A recognizer with explicit settings.
    pub fn with_config(model: &WhisperModel, config: WhisperConfig) -> Result<Self, SpeechError> {
        let state = model.ctx.create_state().map_err(|e| engine(&e))?;
        Ok(Self {
            model: model.clone(),
            state,
            config,
            params: HashMap::new(),
        })
    }

    /// The decoder settings for `prompt` (built on first use; see `params`).
    fn params(&mut self, prompt: &str) -> Result<FullParams<'static, 'static>, SpeechError> {
        if let Some(p) = self.params.get(prompt) {
            return Ok(p.clone());
        }
        let cfg = &self.config;
        // greedy, single pass: no temperature fallback (temperature_inc = 0)
        let mut p = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        p.set_n_threads(i32::from(cfg.threads.max(1)));
        p.set_translate(false);
        if self.model.header.is_multilingual() {
            p.set_language(Some(whisper_language(&cfg.language)?));
        }
        p.set_no_context(true);
        p.set_single_segment(true);
        p.set_no_timestamps(!cfg.timestamps);
        p.set_print_special(false);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_timestamps(false);
        p.set_suppress_blank(true);
        p.set_suppress_nst(true);
        p.set_temperature(0.0);
        p.set_temperature_inc(0.0);
        if !prompt.is_empty() {
            if prompt.contains('\0') {
                return Err(SpeechError::Engine {
                    engine: "whisper",
                    message: "a Whisper prompt with a NUL byte".into(),
                });
            }
            p.set_initial_prompt(prompt);
        }
        if self.params.len() < MAX_PARAMS {
            self.params.insert(prompt.to_owned(), p.clone());
        }
        Ok(p)
    }

    /// The settings.
    pub fn config(&self) -> &WhisperConfig {
        &self.config
    }

    /// Transcribe 16 kHz samples (already prepared) with `prompt` as the decoder's context.
    pub fn transcribe(
        &mut self,
        samples16k: &[f32],
        speech_ms: u32,
        prompt: &str,
    ) -> Result<Transcript, SpeechError> {
        let prompt = if self.config.use_prompt { prompt } else { "" };
        let mut p = self.params(prompt)?;
        let cfg = &self.config;
        let token_limit = cfg.max_tokens.min(4 + speech_ms.div_ceil(125));
        p.set_max_tokens(i32::try_from(token_limit).unwrap_or(48));
        let seconds = samples16k.len() as f32 / WHISPER_RATE as f32;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ctx = ((seconds * FRAMES_PER_SECOND).ceil() as u32 + cfg.audio_ctx_margin)
            .max(cfg.min_audio_ctx)
            .min(self.model.header.n_audio_ctx);
        p.set_audio_ctx(i32::try_from(ctx).unwrap_or(1500));
        self.state.full(p, samples16k).map_err(|e| engine(&e))?;
        let eot = self.model.ctx.token_eot();
        let mut text = String::new();
        let (mut psum, mut pn) = (0.0f32, 0u32);
        for seg in self.state.as_iter() {
            text.push_str(&seg.to_str_lossy().map_err(|e| engine(&e))?);
            for i in 0..seg.n_tokens() {
                let Some(tok) = seg.get_token(i) else {
                    continue;
                };
                if tok.token_id() < eot {
                    psum += tok.token_probability();
                    pn += 1;
                }
            }
        }
        let raw = text.trim();
        let max_words = plausible_words(speech_ms);
        let (text, cut) = collapse_repeats(raw, max_words);
        let alternative = if cut {
            None
        } else {
            repetition_unit(&text, true)
        };
        Ok(Transcript {
            // too many words for the speech and not a repetition: garbage
            suspect: alternative.is_none() && text.split_whitespace().count() > max_words,
            alternative,
            text,
            probability: if pn == 0 { 0.0 } else { psum / pn as f32 },
        })
    }
}

/// Whisper's output for one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The text, with a repetition loop cut to one period.
    pub text: String,
    /// For a repetitive text that was kept ("1 2 1 2", "1 2 3 4 1 2 3 4"): its unit, an
    /// alternative reading the expectation may prefer.
    pub alternative: Option<String>,
    /// Mean probability of the text tokens.
    pub probability: f32,
    /// More words than the detected speech could hold, and not a clean repetition (a sign of
    /// a hallucination).
    pub suspect: bool,
}

/// Most words a speaker can plausibly say in `speech_ms` of detected speech (generous: the
/// detector counts only loud frames, so real speech rates per detected second run up to ~5).
pub fn plausible_words(speech_ms: u32) -> usize {
    2 + (speech_ms as usize * 6).div_ceil(1000)
}

/// Whisper on short padded clips sometimes loops ("Yes. Yes. Yes."). When a transcript is one
/// word sequence repeated (ignoring case and punctuation) and either each repetition ends a
/// sentence or the whole is longer than `max_words`, keep one period. "1 2 1 2" is a PIN and is
/// kept (the recognizer still tries "1 2" as an alternative reading, see [`repetition_unit`]).
/// Returns the text and whether it was cut.
pub fn collapse_repeats(text: &str, max_words: usize) -> (String, bool) {
    let n = text.split_whitespace().count();
    if let Some(unit) = repetition_unit(text, false)
        && unit.ends_with(['.', '?', '!'])
    {
        return (unit, true);
    }
    if n > max_words
        && let Some(unit) = repetition_unit(text, true)
    {
        return (unit, true);
    }
    (text.to_owned(), false)
}

/// The shortest word sequence whose repetition makes up `text`. With `whole`, the text must
/// hold the unit at least twice in full; without, a cut-off last repetition counts (at least
/// two words of it, or the whole unit). `None` when not periodic.
pub fn repetition_unit(text: &str, whole: bool) -> Option<String> {
    let raw: Vec<&str> = text.split_whitespace().collect();
    let norm: Vec<String> = raw
        .iter()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect()
        })
        .collect();
    let n = norm.len();
    for period in 1..n {
        let repeated = n - period;
        if repeated < if whole { period } else { period.min(2) } {
            break; // too little repeated to call it a repetition
        }
        if (period..n).all(|i| norm[i] == norm[i - period]) {
            return Some(
                raw[..period]
                    .join(" ")
                    .trim_end_matches([',', ' '])
                    .to_owned(),
            );
        }
    }
    None
}

/// whisper.cpp's own (static) name of the language `code` ("zh"), or an error naming it.
fn whisper_language(code: &str) -> Result<&'static str, SpeechError> {
    (!code.contains('\0'))
        .then(|| whisper_rs::get_lang_id(code))
        .flatten()
        .and_then(whisper_rs::get_lang_str)
        .ok_or_else(|| SpeechError::Engine {
            engine: "whisper",
            message: format!("Whisper does not know the language {code:?}"),
        })
}

fn engine(e: &whisper_rs::WhisperError) -> SpeechError {
    SpeechError::Engine {
        engine: "whisper",
        message: e.to_string(),
    }
}

impl Recognizer for WhisperRecognizer {
    fn recognize(
        &mut self,
        pcm: &[i16],
        sample_rate: u32,
        expect: &Expectation,
    ) -> Result<Recognition, SpeechError> {
        let started = Instant::now();
        let audio_ms = u32::try_from(pcm.len() as u64 * 1000 / u64::from(sample_rate.max(1)))
            .unwrap_or(u32::MAX);
        let Some(prepared) = prepare(pcm, sample_rate, &self.config.prep)? else {
            return Ok(Recognition {
                outcome: Outcome::NoInput,
                transcript: String::new(),
                asr_probability: 0.0,
                suspect: false,
                speech_ms: 0,
                audio_ms,
                elapsed: started.elapsed(),
            });
        };
        let t = self.transcribe(&prepared.samples, prepared.speech_ms, &expect.prompt())?;
        let weight = if t.suspect { LOOP_WEIGHT } else { 1.0 };
        let mut readings = vec![t.text.as_str()];
        readings.extend(t.alternative.as_deref());
        let outcome = expect.decide_best(&readings, weight);
        let (transcript, asr_probability, suspect) = (t.text, t.probability, t.suspect);
        Ok(Recognition {
            outcome,
            transcript,
            asr_probability,
            suspect,
            speech_ms: prepared.speech_ms,
            audio_ms,
            elapsed: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{collapse_repeats, plausible_words, repetition_unit, whisper_language};

    #[test]
    fn languages_are_whisper_cpps_own_names() {
        assert_eq!(whisper_language("zh").unwrap(), "zh");
        assert_eq!(whisper_language("en").unwrap(), "en");
        for bad in ["xx", "", "z\0h"] {
            let e = whisper_language(bad).unwrap_err().to_string();
            assert!(e.contains("does not know the language"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn loops_collapse_when_too_long_for_the_speech() {
        let c = |t: &str| collapse_repeats(t, 4);
        assert_eq!(c("Yes. Yes. Yes. Yes. Yes"), ("Yes.".into(), true));
        assert_eq!(c("1 2 3 4. 1 2 3 4. 1 2 3"), ("1 2 3 4.".into(), true));
        assert_eq!(
            c("I lost my card. I lost my card. I lost my"),
            ("I lost my card.".into(), true)
        );
        // not periodic: left alone, reported as not collapsed
        assert_eq!(
            c("one two one three four"),
            ("one two one three four".into(), false)
        );
    }

    #[test]
    fn repetition_units() {
        let unit = |t: &str, whole: bool| repetition_unit(t, whole);
        assert_eq!(unit("1 2 3 4 1 2 3 4", true).as_deref(), Some("1 2 3 4"));
        assert_eq!(unit("1 2 1 2", true).as_deref(), Some("1 2"));
        assert_eq!(unit("1 2 3 4", true), None);
        assert_eq!(unit("yes", true), None);
        // a cut-off repetition only counts when allowed
        let noisy = "3 3 M and 1 3 3 3 M and";
        assert_eq!(unit(noisy, true), None);
        assert_eq!(unit(noisy, false).as_deref(), Some("3 3 M and 1 3"));
    }

    #[test]
    fn plausible_repeats_are_kept() {
        // a PIN of 1212 or 4444 is a repetition too, but short enough for the speech
        let max = plausible_words(1100);
        assert_eq!(collapse_repeats("1 2 1 2", max), ("1 2 1 2".into(), false));
        assert_eq!(collapse_repeats("4 4 4 4", max), ("4 4 4 4".into(), false));
        assert_eq!(
            collapse_repeats("no no", plausible_words(400)),
            ("no no".into(), false)
        );
        // sentence-final punctuation marks a loop even when short, also cut off mid-way
        assert_eq!(
            collapse_repeats("Yes. Yes. Yes.", 10),
            ("Yes.".into(), true)
        );
        assert_eq!(collapse_repeats("No. No.", 10), ("No.".into(), true));
        assert_eq!(
            collapse_repeats("Can I talk to a person? Can I talk to a", 20),
            ("Can I talk to a person?".into(), true)
        );
        assert_eq!(
            collapse_repeats("I lost my card. I", 10),
            ("I lost my card. I".into(), false)
        );
    }
}
