//! [`Synthesizer`] on piper (VITS voices in ONNX, run by ONNX Runtime; espeak-ng phonemizer).
//!
//! ONNX Runtime is loaded at run time (ort `load-dynamic`) from an explicit path, validated
//! first: ort blocks forever on some bad library paths, so a wrong path must never reach it.
//! Loading also runs under a timeout.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use crate::Synthesizer;
use crate::audio::{f32_to_i16, resample};
use crate::error::SpeechError;

/// Environment variable naming libonnxruntime.so (same name ort itself reads).
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";
/// Environment variable naming the folder that contains `espeak-ng-data` (read by espeak-rs).
pub const ESPEAK_DATA_ENV: &str = "PIPER_ESPEAKNG_DATA_DIRECTORY";
/// The ONNX Runtime library `scripts/models/fetch` installs, relative to the models folder.
pub const ORT_LIB: &str = "onnxruntime/libonnxruntime.so.1.24.4";
/// The default voice, relative to the models folder.
pub const JOE_VOICE: &str = "piper/en_US-joe-medium.onnx";

/// Where piper's pieces are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiperPaths {
    /// libonnxruntime.so (1.24.x).
    pub onnxruntime: PathBuf,
    /// The voice's `.onnx`; its config is the same path + `.json`.
    pub voice: PathBuf,
}

impl PiperPaths {
    /// `$ORT_DYLIB_PATH` or `<models>/onnxruntime/...`, and the joe voice in `<models>/piper`.
    pub fn from_models_dir(models: &Path) -> Self {
        let onnxruntime =
            std::env::var_os(ORT_DYLIB_ENV).map_or_else(|| models.join(ORT_LIB), PathBuf::from);
        Self {
            onnxruntime,
            voice: models.join(JOE_VOICE),
        }
    }
}

fn missing(path: &Path, e: std::io::Error) -> SpeechError {
    SpeechError::ModelMissing {
        path: path.to_owned(),
        source: e,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> SpeechError {
    SpeechError::ModelCorrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn check_file(path: &Path, magic: &[u8], what: &str) -> Result<(), SpeechError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| missing(path, e))?;
    let mut head = vec![0u8; magic.len()];
    f.read_exact(&mut head)
        .map_err(|_| corrupt(path, format!("too short for {what}")))?;
    if head != magic {
        return Err(corrupt(path, format!("not {what}")));
    }
    Ok(())
}

/// Debian's espeak-ng data folder (package espeak-ng-data): the folder that *contains*
/// `espeak-ng-data`, i.e. `/usr/lib/<arch>-linux-gnu`, when it is installed.
///
/// espeak-rs reads [`ESPEAK_DATA_ENV`] itself and this crate cannot set it safely (setting the
/// environment of a running multi-threaded process is unsound), so programs call this once at
/// the start of `main`, before any thread exists, and export the result when the variable is
/// unset (the `frontdoor` binary does; `cargo test` gets it from `.cargo/config.toml`).
pub fn debian_espeak_data_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH));
    dir.join("espeak-ng-data")
        .join("phontab")
        .is_file()
        .then_some(dir)
}

/// The espeak-ng data folder espeak-rs will use, found the way it searches (env, cwd, exe dir).
fn espeak_data_dir() -> Result<PathBuf, SpeechError> {
    let candidates = [
        std::env::var_os(ESPEAK_DATA_ENV).map(PathBuf::from),
        std::env::current_dir().ok(),
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    ];
    candidates.into_iter().flatten().find(|d| d.join("espeak-ng-data").join("phontab").is_file()).ok_or_else(|| {
        SpeechError::Engine {
            engine: "espeak-ng",
            message: format!(
                "no espeak-ng-data found; install Debian espeak-ng-data and set {ESPEAK_DATA_ENV}=/usr/lib/x86_64-linux-gnu \
                 (the folder that contains espeak-ng-data; the frontdoor binary sets it itself when Debian's is installed)"
            ),
        }
    })
}

/// ONNX Runtime is process-global: load it once, from one path.
static ORT_LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

fn init_onnxruntime(lib: &Path) -> Result<(), SpeechError> {
    check_file(lib, b"\x7fELF", "a shared library (ELF)")?;
    let mut loaded = ORT_LOADED.lock().map_err(|_| SpeechError::Engine {
        engine: "onnxruntime",
        message: "poisoned".into(),
    })?;
    if let Some(p) = loaded.as_ref() {
        if p == lib {
            return Ok(());
        }
        return Err(SpeechError::Engine {
            engine: "onnxruntime",
            message: format!(
                "already loaded from {}, cannot switch to {}",
                p.display(),
                lib.display()
            ),
        });
    }
    let env = ort::init_from(lib)
        .map_err(|e| corrupt(lib, format!("ONNX Runtime could not load it: {e}")))?;
    env.with_name("frontdoor-speech").commit();
    *loaded = Some(lib.to_owned());
    Ok(())
}

/// Piper voice.
pub struct PiperSynthesizer {
    piper: piper_rs::Piper,
    voice: PathBuf,
    noise: Option<(f32, f32)>,
}

impl std::fmt::Debug for PiperSynthesizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperSynthesizer")
            .field("voice", &self.voice)
            .finish()
    }
}

impl PiperSynthesizer {
    /// Load a voice (`paths.voice` + `.json`) with ONNX Runtime from `paths.onnxruntime`.
    /// Fails with a message naming the file for anything missing or damaged, and with
    /// [`SpeechError::Timeout`] if loading does not finish within `timeout`.
    pub fn load(paths: &PiperPaths, timeout: Duration) -> Result<Self, SpeechError> {
        Self::load_with_threads(paths, timeout, 0)
    }

    /// Like [`PiperSynthesizer::load`], with ONNX Runtime's intra-op thread count (`0`: ONNX
    /// Runtime's default, one per physical core). A server rendering for many calls uses 1:
    /// it parallelises across texts, not inside one.
    pub fn load_with_threads(
        paths: &PiperPaths,
        timeout: Duration,
        threads: usize,
    ) -> Result<Self, SpeechError> {
        Self::load_with_options(
            paths,
            timeout,
            PiperOptions {
                threads,
                ..PiperOptions::default()
            },
        )
    }

    /// Like [`PiperSynthesizer::load`], with ONNX Runtime session options.
    pub fn load_with_options(
        paths: &PiperPaths,
        timeout: Duration,
        options: PiperOptions,
    ) -> Result<Self, SpeechError> {
        let PiperOptions {
            threads,
            optimization,
        } = options;
        if optimization.is_some_and(|o| o > 3) {
            return Err(SpeechError::Engine {
                engine: "onnxruntime",
                message: format!(
                    "graph optimisation level {} (0..=3)",
                    optimization.unwrap_or_default()
                ),
            });
        }
        let config = PathBuf::from(format!("{}.json", paths.voice.display()));
        // ONNX protobufs start with field 1 (ir_version, varint): byte 0x08
        check_file(&paths.voice, &[0x08], "an ONNX model")?;
        let json = std::fs::read_to_string(&config).map_err(|e| missing(&config, e))?;
        if !json.contains("\"phoneme_id_map\"") {
            return Err(corrupt(
                &config,
                "not a piper voice config (no phoneme_id_map)",
            ));
        }
        let model_config: piper_rs::ModelConfig = serde_json::from_str(&json)
            .map_err(|e| corrupt(&config, format!("not a piper voice config: {e}")))?;
        espeak_data_dir()?;
        let lib = paths.onnxruntime.clone();
        let voice = paths.voice.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = init_onnxruntime(&lib).and_then(|()| {
                let ort_err = |e: &dyn std::fmt::Display| {
                    corrupt(&voice, format!("ONNX Runtime could not load it: {e}"))
                };
                let mut builder = ort::session::Session::builder().map_err(|e| ort_err(&e))?;
                if threads > 0 {
                    builder = builder
                        .with_intra_threads(threads)
                        .map_err(|e| ort_err(&e))?;
                }
                if let Some(level) = optimization {
                    use ort::session::builder::GraphOptimizationLevel as L;
                    let level = match level {
                        0 => L::Disable,
                        1 => L::Level1,
                        2 => L::Level2,
                        _ => L::Level3,
                    };
                    builder = builder
                        .with_optimization_level(level)
                        .map_err(|e| ort_err(&e))?;
                }
                let session = builder.commit_from_file(&voice).map_err(|e| ort_err(&e))?;
                Ok(piper_rs::Piper::from_session(session, model_config))
            });
            let _ = tx.send(r);
        });
        let piper = rx
            .recv_timeout(timeout)
            .map_err(|_| SpeechError::Timeout("loading the piper voice"))??;
        Ok(Self {
            piper,
            voice: paths.voice.clone(),
            noise: None,
        })
    }
}

/// ONNX Runtime session options of a piper voice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PiperOptions {
    /// Intra-op threads (`0`: ONNX Runtime's default, one per physical core).
    pub threads: usize,
    /// Graph optimisation level 0 (none) ..= 3 (all); `None`: ONNX Runtime's default (all).
    pub optimization: Option<u8>,
}

/// Splits `text` into chunks that can be synthesised one after the other, so playback can
/// start after the first: sentences (`.`, `?`, `!`, `;`, `:`), then clauses (`,`) of at least
/// [`MIN_CHUNK_WORDS`] words, then, for a first chunk of more than [`FIRST_CUT_WORDS`] + 1
/// words, a cut after [`FIRST_CUT_WORDS`] words (only the first chunk: it is what the caller
/// waits for; later chunks are synthesised while earlier ones play). Punctuation stays with
/// its chunk (piper renders the pause). Deterministic; whitespace is normalised; an empty
/// text gives no chunks.
pub fn split_chunks(text: &str) -> Vec<String> {
    split_chunks_first(text, FIRST_CUT_WORDS)
}

/// [`split_chunks`] with the first chunk cut after `first_words` words when it has more than
/// `first_words + 1` (a cut never leaves a single word behind it). The cut moves one word
/// further when it would end on a function word ("Your balance is | ..." rather than
/// "Your | balance ...").
pub fn split_chunks_first(text: &str, first_words: usize) -> Vec<String> {
    let mut chunks: Vec<String> = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for word in text.split_whitespace() {
        cur.push(word);
        let end = word.trim_end_matches(['"', '\'', ')', '\u{201d}']);
        let sentence = end.ends_with(['.', '?', '!', ';', ':', '\u{3002}']);
        let clause = end.ends_with([',', '\u{ff0c}']) && cur.len() >= MIN_CHUNK_WORDS;
        if sentence || clause {
            chunks.push(cur.join(" "));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        chunks.push(cur.join(" "));
    }
    if let Some(first) = chunks.first().cloned() {
        let words: Vec<&str> = first.split_whitespace().collect();
        let first_words = first_words.max(1);
        if words.len() > first_words + 1 {
            let mut cut = first_words;
            while cut + 2 < words.len()
                && words
                    .get(cut - 1)
                    .is_some_and(|w| FUNCTION_WORDS.contains(&w.to_lowercase().as_str()))
            {
                cut += 1;
            }
            let (head, tail) = words.split_at(cut);
            chunks.splice(0..1, [head.join(" "), tail.join(" ")]);
        }
    }
    chunks
}

/// Words a first chunk should not end on.
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "to", "of", "and", "or", "for", "in", "on", "at", "my", "your", "our", "is",
    "are", "was", "be", "with", "from", "by", "as",
];

/// A clause shorter than this stays with the next one (`Yes, ...`).
pub const MIN_CHUNK_WORDS: usize = 3;
/// Where a long first chunk is cut (words).
pub const FIRST_CUT_WORDS: usize = 3;

impl PiperSynthesizer {
    /// Overrides the voice's noise (`noise_scale`, `noise_w` of its config; piper's defaults
    /// are 0.667 and 0.8). The model draws random noise, so the same text differs slightly on
    /// every run; `set_noise(0.0, 0.0)` makes synthesis deterministic (tests that assert
    /// figures use it).
    pub fn set_noise(&mut self, noise_scale: f32, noise_w: f32) {
        self.noise = Some((noise_scale, noise_w));
    }

    /// Synthesises `text` chunk by chunk ([`split_chunks`]), handing each chunk's audio (mono
    /// 16-bit at `sample_rate`) to `chunk` as soon as it is ready; `chunk` returns `false` to
    /// stop (e.g. the caller hung up). The chunks concatenated are the whole text.
    pub fn synthesize_chunked(
        &mut self,
        text: &str,
        sample_rate: u32,
        mut chunk: impl FnMut(Vec<i16>) -> bool,
    ) -> Result<(), SpeechError> {
        for part in split_chunks(text) {
            let pcm = self.synthesize(&part, sample_rate)?;
            if !chunk(pcm) {
                break;
            }
        }
        Ok(())
    }
}

impl Synthesizer for PiperSynthesizer {
    fn synthesize(&mut self, text: &str, sample_rate: u32) -> Result<Vec<i16>, SpeechError> {
        let (samples, rate) = self
            .piper
            .create(
                text,
                false,
                None,
                None,
                self.noise.map(|n| n.0),
                self.noise.map(|n| n.1),
            )
            .map_err(|e| SpeechError::Engine {
                engine: "piper",
                message: e.to_string(),
            })?;
        Ok(f32_to_i16(&resample(&samples, rate, sample_rate)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_at_sentences_clauses_and_a_long_first_clause() {
        assert_eq!(
            split_chunks("Welcome to Frontdoor Bank. How can I help?"),
            ["Welcome to Frontdoor Bank.", "How can I help?"]
        );
        assert_eq!(
            split_chunks("Yes, your balance is ready, and it is forty two dollars."),
            [
                "Yes, your balance",
                "is ready,",
                "and it is forty two dollars."
            ]
        );
        assert_eq!(
            split_chunks("Your current balance is one hundred and twenty dollars and fifty cents"),
            [
                "Your current balance",
                "is one hundred and twenty dollars and fifty cents"
            ]
        );
        // the cut does not end on a function word, and never leaves one word behind
        assert_eq!(
            split_chunks("Please hold the line while we connect you"),
            ["Please hold the line", "while we connect you"]
        );
        assert_eq!(
            split_chunks("Thank you for calling"),
            ["Thank you for calling"]
        );
        assert_eq!(
            split_chunks_first("one two three four five six", 4),
            ["one two three four", "five six"]
        );
        assert_eq!(split_chunks("  \n "), Vec::<String>::new());
        assert_eq!(split_chunks("Hello   there"), ["Hello there"]);
    }
}
