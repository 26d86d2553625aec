//! Text to speech with piper (default English voice) and espeak-ng, off the SIP task.
//!
//! A voice named `piper:NAME` is the piper voice `<models>/piper/NAME.onnx` (models from
//! `scripts/models/fetch`, folder `FRONTDOOR_MODELS_DIR`); any other name is an espeak-ng
//! voice. Piper renders in-process (frontdoor-speech, ONNX Runtime, one intra-op thread) and is
//! resampled to 8 kHz. The voice is loaded once, lazily or by [`Tts::warm_up`] on a render
//! thread, under [`PIPER_LOAD_TIMEOUT`]. When it cannot be loaded (model or ONNX Runtime
//! missing or damaged, timeout) or fails on a text, the text is spoken by the espeak-ng
//! fallback voice ([`fallback_voice`]: `en_US-joe-medium` -> `en-us`) and a warning names the
//! file and `scripts/models/fetch`; a failed voice is not retried until restart.
//!
//! `espeak-ng -v VOICE -w FILE` reads the text on its standard input (so a text can never be
//! taken for an option), the WAV is decoded and pre-encoded once with
//! [`Prompt::from_bytes`], and kept in two caches keyed by (voice, speed, text): in memory for
//! the process, and on disk (`<data-dir>/tts/VOICE-HASH.wav`) across restarts. Rendering
//! blocks, so it runs on the loader (static texts, before a dialplan version is used) or on
//! the [`TtsPool`] threads (texts with `{variables}`); the SIP task only looks up the memory
//! cache.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use frontdoor_media::g711::G711;
use frontdoor_media::prompt::Prompt;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::IvrSection;

/// Longest an espeak-ng run may take.
const RENDER_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a rendered prompt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The in-memory cache.
    Memory,
    /// The disk cache.
    Disk,
    /// A new espeak-ng run.
    Rendered,
}

impl Source {
    /// Name on the event stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Disk => "disk",
            Source::Rendered => "rendered",
        }
    }
}

/// Voice names starting with this are piper voices (`piper:en_US-joe-medium`).
pub const PIPER_PREFIX: &str = "piper:";

/// Longest loading a piper voice (ONNX Runtime + model) may take.
pub const PIPER_LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// The espeak-ng voice that speaks for piper voice `name` when piper is unavailable: its
/// locale, lower case with `-` (`en_US-joe-medium` -> `en-us`).
pub fn fallback_voice(name: &str) -> String {
    let locale = name.split('-').next().unwrap_or(name);
    if locale.is_empty() {
        return "en".to_owned();
    }
    locale.to_ascii_lowercase().replace('_', "-")
}

/// A piper voice: loaded, or why not.
enum PiperSlot {
    Ready(Arc<Mutex<frontdoor_speech::PiperSynthesizer>>),
    Failed(String),
}

/// Piper voices by name, loaded on first use.
struct PiperVoices {
    models: PathBuf,
    slots: Mutex<HashMap<String, PiperSlot>>,
}

impl std::fmt::Debug for PiperVoices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperVoices")
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

impl PiperVoices {
    /// The voice, loading it (blocking, bounded by [`PIPER_LOAD_TIMEOUT`]) on first use.
    fn get(&self, name: &str) -> Result<Arc<Mutex<frontdoor_speech::PiperSynthesizer>>, String> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = slots.get(name) {
            return match slot {
                PiperSlot::Ready(s) => Ok(s.clone()),
                PiperSlot::Failed(e) => Err(e.clone()),
            };
        }
        let mut paths = frontdoor_speech::PiperPaths::from_models_dir(&self.models);
        paths.voice = self.models.join("piper").join(format!("{name}.onnx"));
        let start = Instant::now();
        let slot = match frontdoor_speech::PiperSynthesizer::load_with_threads(
            &paths,
            PIPER_LOAD_TIMEOUT,
            1,
        ) {
            Ok(s) => {
                tracing::info!(
                    voice = name,
                    ms = start.elapsed().as_millis() as u64,
                    "piper voice loaded"
                );
                PiperSlot::Ready(Arc::new(Mutex::new(s)))
            }
            Err(e) => {
                let mut why = e.to_string();
                if !why.contains("scripts/models/fetch") {
                    why.push_str("; fix: run scripts/models/fetch");
                }
                tracing::warn!(
                    "piper voice {name} ({}) unavailable: {why}; speaking with espeak-ng voice {} instead",
                    paths.voice.display(),
                    fallback_voice(name)
                );
                PiperSlot::Failed(why)
            }
        };
        let r = match &slot {
            PiperSlot::Ready(s) => Ok(s.clone()),
            PiperSlot::Failed(e) => Err(e.clone()),
        };
        slots.insert(name.to_owned(), slot);
        r
    }
}

/// Cache key: voice and text.
pub type Key = (String, String);

/// The speech renderer and its caches. Shared (`Arc`) by the loader, the pool and the SIP task.
#[derive(Debug)]
pub struct Tts {
    program: String,
    voices: std::collections::BTreeMap<String, String>,
    speed: u32,
    cache_dir: PathBuf,
    /// Prompt and whether it is pinned (static dialplan text) or evictable (a text with
    /// variables, e.g. a caller's name).
    memory: Mutex<HashMap<Key, (Prompt, bool)>>,
    piper: PiperVoices,
    preload: bool,
}

/// Texts with variables kept in memory at most; beyond, they are dropped (the disk cache
/// still has them).
const MAX_DYNAMIC: usize = 2048;

/// The disk cache's file name of `text` in `voice` at `speed` (`[ivr] tts_speed`):
/// `VOICE-HASH.wav`, the voice's name made file-safe, the hash FNV-1a 64 over the three.
pub fn cache_file_name(voice: &str, speed: u32, text: &str) -> String {
    let safe: String = voice
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let speed = speed.to_string();
    format!("{safe}-{:016x}.wav", fnv64(&[voice, &speed, text]))
}

fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Tts {
    /// A renderer with the `[ivr]` settings, caching on disk under `cache_dir`.
    pub fn new(cfg: &IvrSection, cache_dir: PathBuf) -> Self {
        Self {
            program: cfg.espeak.clone(),
            voices: cfg.voices.clone(),
            speed: cfg.tts_speed,
            cache_dir,
            memory: Mutex::new(HashMap::new()),
            piper: PiperVoices {
                models: frontdoor_speech::models_dir(),
                slots: Mutex::new(HashMap::new()),
            },
            preload: cfg.piper_preload,
        }
    }

    /// Takes piper voices from `dir` instead of `FRONTDOOR_MODELS_DIR` (`models/`).
    pub fn with_models_dir(mut self, dir: PathBuf) -> Self {
        self.piper.models = dir;
        self
    }

    /// Whether piper voice `name` is usable (loading it if needed; blocking), or why not.
    pub fn piper_voice(&self, name: &str) -> Result<(), String> {
        self.piper.get(name).map(|_| ())
    }

    /// Waits (up to `timeout`) until no piper voice is loading or synthesising, so the process
    /// can exit: ONNX Runtime's global teardown at exit crashes under a running session.
    /// `false` if still busy at the deadline.
    pub fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let wait = |ok: &dyn Fn() -> bool| loop {
            if ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut voices = Vec::new();
        let slots_free = wait(&|| {
            !matches!(
                self.piper.slots.try_lock(),
                Err(std::sync::TryLockError::WouldBlock)
            )
        });
        if !slots_free {
            return false;
        }
        if let Ok(slots) = self.piper.slots.lock() {
            for slot in slots.values() {
                if let PiperSlot::Ready(s) = slot {
                    voices.push(s.clone());
                }
            }
        }
        voices
            .iter()
            .all(|v| wait(&|| !matches!(v.try_lock(), Err(std::sync::TryLockError::WouldBlock))))
    }

    /// Loads the piper voices of the configured languages now (blocking; call it on a render
    /// thread), so the first text rendered on demand does not wait for the load. A voice that
    /// cannot be loaded is reported once (warning) and falls back to espeak-ng.
    pub fn warm_up(&self) {
        let names: BTreeSet<&str> = self
            .voices
            .values()
            .filter_map(|v| v.strip_prefix(PIPER_PREFIX))
            .collect();
        for name in names {
            let _ = self.piper.get(name);
        }
    }

    /// The voice for a dialplan language.
    pub fn voice(&self, language: &str) -> String {
        self.voices
            .get(language)
            .cloned()
            .unwrap_or_else(|| language.to_owned())
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Prompt, bool)>> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The prompt when it is in the memory cache (cheap; the SIP task calls this).
    pub fn cached(&self, voice: &str, text: &str) -> Option<Prompt> {
        self.memory()
            .get(&(voice.to_owned(), text.to_owned()))
            .map(|(p, _)| p.clone())
    }

    fn cache_path(&self, voice: &str, text: &str) -> PathBuf {
        self.cache_dir
            .join(cache_file_name(voice, self.speed, text))
    }

    /// The prompt for a static `text` in `voice` (kept in memory for good): memory, then
    /// disk, then espeak-ng. Blocking.
    pub fn render(&self, voice: &str, text: &str) -> Result<(Prompt, Source), String> {
        self.render_kept(voice, text, true)
    }

    /// Like [`Tts::render`] for a text with variables: evictable from memory.
    pub fn render_dynamic(&self, voice: &str, text: &str) -> Result<(Prompt, Source), String> {
        self.render_kept(voice, text, false)
    }

    fn render_kept(
        &self,
        voice: &str,
        text: &str,
        pinned: bool,
    ) -> Result<(Prompt, Source), String> {
        if let Some(p) = self.cached(voice, text) {
            return Ok((p, Source::Memory));
        }
        let (prompt, source) = match voice.strip_prefix(PIPER_PREFIX) {
            Some(name) => match self.on_disk(voice, text) {
                Some(p) => (p, Source::Disk),
                None => match self.piper_render(name, voice, text) {
                    Ok(p) => (p, Source::Rendered),
                    Err(why) => {
                        let fallback = fallback_voice(name);
                        tracing::debug!(voice, %fallback, "piper unavailable for a text: {why}");
                        // Kept on disk under the espeak-ng voice only: once piper works again
                        // (after a restart) the text is rendered with piper.
                        match self.on_disk(&fallback, text) {
                            Some(p) => (p, Source::Disk),
                            None => (self.espeak(&fallback, text)?, Source::Rendered),
                        }
                    }
                },
            },
            None => match self.on_disk(voice, text) {
                Some(p) => (p, Source::Disk),
                None => (self.espeak(voice, text)?, Source::Rendered),
            },
        };
        self.remember(voice, text, &prompt, pinned);
        Ok((prompt, source))
    }

    /// Keeps `prompt` for (voice, text) in the memory cache.
    fn remember(&self, voice: &str, text: &str, prompt: &Prompt, pinned: bool) {
        let mut memory = self.memory();
        if !pinned && memory.values().filter(|(_, pin)| !pin).count() >= MAX_DYNAMIC {
            memory.retain(|_, (_, pin)| *pin);
        }
        let key = (voice.to_owned(), text.to_owned());
        let pin = pinned || memory.get(&key).is_some_and(|(_, pin)| *pin);
        memory.insert(key, (prompt.clone(), pin));
    }

    /// Renders a text with variables for a call that waits for it, handing out audio as early
    /// as possible: a text that is not cached and has several chunks
    /// ([`frontdoor_speech::split_chunks`]) is synthesised by piper chunk by chunk, each chunk
    /// handed to `emit` as [`Part::Chunk`] as soon as it is ready (the caller hears the first
    /// while the rest is synthesised), then the whole text, cached in memory and on disk, as
    /// [`Part::Whole`]. Everything else comes as one [`Part::Whole`] ([`Tts::render_dynamic`]).
    /// Once a chunk was handed out, a chunk with `last: true` always follows (an `Err` one if
    /// piper failed on the rest).
    pub fn render_streamed(
        &self,
        voice: &str,
        text: &str,
        mut emit: impl FnMut(Part, Result<(Prompt, Source), String>),
    ) {
        if let Some(name) = voice.strip_prefix(PIPER_PREFIX) {
            let parts = frontdoor_speech::split_chunks(text);
            if parts.len() > 1 && self.cached(voice, text).is_none() {
                if let (None, Ok(synth)) = (self.on_disk(voice, text), self.piper.get(name)) {
                    let path = self.cache_path(voice, text);
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("tts");
                    let mut all: Vec<i16> = Vec::new();
                    for (index, part) in parts.iter().enumerate() {
                        let last = index + 1 == parts.len();
                        let pcm = {
                            let mut s = synth
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            frontdoor_speech::Synthesizer::synthesize(&mut *s, part, 8000)
                        };
                        match pcm {
                            Ok(pcm) if !pcm.is_empty() => {
                                let chunk = Prompt::from_pcm(&format!("{stem}-{index}"), &pcm);
                                all.extend_from_slice(&pcm);
                                emit(Part::Chunk { index, last }, Ok((chunk, Source::Rendered)));
                            }
                            failed => {
                                let why = match failed {
                                    Err(e) => format!("piper voice {name} failed on {part:?}: {e}"),
                                    Ok(_) => {
                                        format!("piper voice {name} produced no audio for {part:?}")
                                    }
                                };
                                tracing::warn!("{why}; the rest of the text is not spoken");
                                if index > 0 {
                                    emit(Part::Chunk { index, last: true }, Err(why));
                                    return;
                                }
                                // Nothing handed out yet: the whole text, with the fallback.
                                emit(Part::Whole, self.render_dynamic(voice, text));
                                return;
                            }
                        }
                    }
                    self.keep_on_disk(&path, &all);
                    let whole = Prompt::from_pcm(stem, &all);
                    self.remember(voice, text, &whole, false);
                    emit(Part::Whole, Ok((whole, Source::Rendered)));
                    return;
                }
            }
        }
        emit(Part::Whole, self.render_dynamic(voice, text));
    }

    /// The disk cache's prompt for (voice, text), if any.
    fn on_disk(&self, voice: &str, text: &str) -> Option<Prompt> {
        let path = self.cache_path(voice, text);
        std::fs::read(&path)
            .ok()
            .and_then(|data| read_cached(&path, &data))
    }

    /// A unique temporary name next to `path` (renamed into place: concurrent renderers never
    /// see half a file).
    fn temp_path(&self, path: &Path) -> Result<PathBuf, String> {
        std::fs::create_dir_all(&self.cache_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.cache_dir.display()))?;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(path.with_extension(format!("{}-{n}.tmp", std::process::id())))
    }

    /// Keeps 8 kHz speech in the disk cache (best effort).
    fn keep_on_disk(&self, path: &Path, pcm: &[i16]) {
        let Ok(tmp) = self.temp_path(path) else {
            return;
        };
        let _ = std::fs::write(&tmp, crate::store::wav_bytes(pcm));
        if let Err(e) = std::fs::rename(&tmp, path) {
            tracing::debug!(error = %e, "cannot keep the rendered speech on disk");
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Renders with piper voice `name` (cache name `voice`) and keeps the result on disk.
    fn piper_render(&self, name: &str, voice: &str, text: &str) -> Result<Prompt, String> {
        let synth = self.piper.get(name)?;
        let pcm = {
            let mut s = synth
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            frontdoor_speech::Synthesizer::synthesize(&mut *s, text, 8000)
        }
        .map_err(|e| {
            let why = format!("piper voice {name} failed on {text:?}: {e}");
            tracing::warn!(
                "{why}; speaking it with espeak-ng voice {}",
                fallback_voice(name)
            );
            why
        })?;
        if pcm.is_empty() {
            return Err(format!("piper voice {name} produced no audio for {text:?}"));
        }
        let path = self.cache_path(voice, text);
        self.keep_on_disk(&path, &pcm);
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("tts");
        Ok(Prompt::from_pcm(stem, &pcm))
    }

    fn espeak(&self, voice: &str, text: &str) -> Result<Prompt, String> {
        let path = self.cache_path(voice, text);
        let path = path.as_path();
        let tmp = self.temp_path(path)?;
        let mut cmd = Command::new(&self.program);
        cmd.arg("-v").arg(voice);
        if self.speed > 0 {
            cmd.arg("-s").arg(self.speed.to_string());
        }
        cmd.arg("-w")
            .arg(&tmp)
            .arg("--stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(text.as_bytes());
        }
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() > RENDER_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = std::fs::remove_file(&tmp);
                    return Err(format!("{} timed out", self.program));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("{}: {e}", self.program)),
            }
        };
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut s, &mut err);
        }
        if !status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "{} -v {voice} failed ({status}): {}",
                self.program,
                err.trim()
            ));
        }
        let data = std::fs::read(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let _ = std::fs::remove_file(&tmp);
        let prompt = Prompt::from_bytes(path, data).map_err(|e| e.to_string())?;
        // The disk cache keeps the 8 kHz result (what calls hear), so a restart decodes it
        // without resampling.
        let pcm = G711::Pcmu.decode(prompt.encoded(G711::Pcmu));
        self.keep_on_disk(path, &pcm);
        Ok(prompt)
    }
}

/// A cache file: the 8 kHz mono 16-bit WAV [`crate::store::wav_bytes`] writes, else any
/// format the prompt decoder reads.
fn read_cached(path: &Path, data: &[u8]) -> Option<Prompt> {
    let ours = data.len() >= 44
        && data.get(..4) == Some(b"RIFF")
        && data.get(20..24) == Some(&[1, 0, 1, 0])
        && data.get(24..28) == Some(&8000u32.to_le_bytes())
        && data.get(34..36) == Some(&[16, 0])
        && data.get(36..40) == Some(b"data");
    if !ours {
        return Prompt::from_bytes(path, data.to_vec()).ok();
    }
    let pcm: Vec<i16> = data
        .get(44..)?
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    if pcm.is_empty() {
        return None;
    }
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("tts");
    Some(Prompt::from_pcm(name, &pcm))
}

/// What a [`Rendered`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Chunk `index` of a text synthesised chunk by chunk; a [`Part::Whole`] follows the
    /// last one unless it failed.
    Chunk {
        /// 0 for the first chunk.
        index: usize,
        /// No more chunks follow.
        last: bool,
    },
    /// The whole text (now in the cache).
    Whole,
}

/// A finished render (or one chunk of it) for the SIP task.
#[derive(Debug)]
pub struct Rendered {
    /// Voice and text.
    pub key: Key,
    /// The prompt, or why not.
    pub result: Result<(Prompt, Source), String>,
    /// A chunk or the whole text.
    pub part: Part,
}

/// Threads that render texts with `{variables}` on demand.
#[derive(Debug)]
pub struct TtsPool {
    tx: std::sync::mpsc::Sender<Key>,
}

impl TtsPool {
    /// Starts `threads` renderers reporting with `done`.
    pub fn start(
        tts: Arc<Tts>,
        threads: usize,
        done: impl Fn(Rendered) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Key>();
        let rx = Arc::new(Mutex::new(rx));
        let done = Arc::new(done);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let tts = tts.clone();
            let done = done.clone();
            std::thread::Builder::new()
                .name(format!("tts-{i}"))
                .spawn(move || {
                    if i == 0 && tts.preload {
                        // The piper voice loads here (1-2 s), not on the loader or SIP task.
                        tts.warm_up();
                    }
                    loop {
                        let next = rx
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        let Ok(key) = next else { return };
                        tts.render_streamed(&key.0, &key.1, |part, result| {
                            done(Rendered {
                                key: key.clone(),
                                result,
                                part,
                            });
                        });
                    }
                })?;
        }
        Ok(Self { tx })
    }

    /// Queues a render.
    pub fn request(&self, key: Key) {
        let _ = self.tx.send(key);
    }
}

/// Helper for [`TtsPool::start`]: forward finished renders to an unbounded channel.
pub fn forward<T: Send + 'static>(
    tx: UnboundedSender<T>,
    wrap: fn(Rendered) -> T,
) -> impl Fn(Rendered) + Send + Sync + 'static {
    move |r| {
        let _ = tx.send(wrap(r));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn renders_once_then_caches_in_memory_and_on_disk() {
        let dir = std::env::temp_dir().join(format!("fd-tts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = IvrSection::default();
        let tts = Tts::new(&cfg, dir.clone());
        let (p, src) = tts.render("en", "Hello from the unit test.").unwrap();
        assert_eq!(src, Source::Rendered);
        assert!(
            p.duration() > Duration::from_millis(300),
            "{:?}",
            p.duration()
        );
        let (_, src) = tts.render("en", "Hello from the unit test.").unwrap();
        assert_eq!(src, Source::Memory);
        let again = Tts::new(&cfg, dir.clone());
        let (q, src) = again.render("en", "Hello from the unit test.").unwrap();
        assert_eq!(src, Source::Disk);
        assert_eq!(q.samples(), p.samples());
        assert!(tts.render("zzqq", "x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn piper_renders_and_caches() {
        let dir = std::env::temp_dir().join(format!("fd-tts-piper-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tts = Tts::new(&IvrSection::default(), dir.clone());
        let voice = tts.voice("en");
        assert_eq!(voice, "piper:en_US-joe-medium");
        tts.piper_voice("en_US-joe-medium")
            .unwrap_or_else(|e| panic!("piper voice: {e}"));
        let (p, src) = tts.render(&voice, "Thank you for calling.").unwrap();
        assert_eq!(src, Source::Rendered);
        assert!(
            (Duration::from_millis(500)..Duration::from_secs(5)).contains(&p.duration()),
            "{:?}",
            p.duration()
        );
        // piper, not the espeak-ng fallback: no fallback file was written
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].starts_with("piper_en_US-joe-medium-"), "{files:?}");
        let again = Tts::new(&IvrSection::default(), dir.clone());
        let (q, src) = again.render(&voice, "Thank you for calling.").unwrap();
        assert_eq!(src, Source::Disk);
        assert_eq!(q.samples(), p.samples());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn piper_streams_a_long_text_chunk_by_chunk_then_caches_the_whole() {
        let dir = std::env::temp_dir().join(format!("fd-tts-stream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tts = Tts::new(&IvrSection::default(), dir.clone());
        let voice = tts.voice("en");
        tts.piper_voice("en_US-joe-medium")
            .unwrap_or_else(|e| panic!("piper voice: {e}"));
        let text = "Your current balance is four hundred and twenty two dollars. Thank you.";
        let want = frontdoor_speech::split_chunks(text);
        assert!(want.len() >= 3, "{want:?}");
        let mut got: Vec<(Part, Prompt)> = Vec::new();
        tts.render_streamed(&voice, text, |part, result| {
            got.push((part, result.unwrap().0));
        });
        let parts: Vec<Part> = got.iter().map(|(p, _)| *p).collect();
        let mut expected: Vec<Part> = (0..want.len())
            .map(|index| Part::Chunk {
                index,
                last: index + 1 == want.len(),
            })
            .collect();
        expected.push(Part::Whole);
        assert_eq!(parts, expected);
        // The whole is the chunks one after the other, and it is what the caches hold.
        let chunk_samples: usize = got[..want.len()].iter().map(|(_, p)| p.samples()).sum();
        let whole = &got[want.len()].1;
        assert_eq!(whole.samples(), chunk_samples);
        assert!(
            whole.duration() > Duration::from_secs(2),
            "{:?}",
            whole.duration()
        );
        assert_eq!(tts.cached(&voice, text).unwrap().samples(), chunk_samples);
        let again = Tts::new(&IvrSection::default(), dir.clone());
        let (q, src) = again.render_dynamic(&voice, text).unwrap();
        assert_eq!((src, q.samples()), (Source::Disk, chunk_samples));
        // Cached now: one whole part, no chunks.
        let mut second = Vec::new();
        tts.render_streamed(&voice, text, |part, result| {
            second.push((part, result.unwrap().1));
        });
        assert_eq!(second, vec![(Part::Whole, Source::Memory)]);
        // A text of one chunk is rendered whole.
        let mut short = Vec::new();
        tts.render_streamed(&voice, "Thank you.", |part, result| {
            short.push((part, result.unwrap().1));
        });
        assert_eq!(short, vec![(Part::Whole, Source::Rendered)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_piper_voice_falls_back_to_espeak_quickly() {
        let dir = std::env::temp_dir().join(format!("fd-tts-nopiper-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tts = Tts::new(&IvrSection::default(), dir.join("cache"))
            .with_models_dir(dir.join("no-models"));
        let start = Instant::now();
        let err = tts.piper_voice("en_US-joe-medium").unwrap_err();
        assert!(err.contains("en_US-joe-medium.onnx"), "{err}");
        assert!(err.contains("scripts/models/fetch"), "{err}");
        let (p, src) = tts
            .render("piper:en_US-joe-medium", "Thank you for calling.")
            .unwrap();
        assert_eq!(src, Source::Rendered);
        assert!(p.duration() > Duration::from_millis(500));
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        // kept on disk under the fallback voice, not under the piper voice
        let files: Vec<_> = std::fs::read_dir(dir.join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].starts_with("en-us-"), "{files:?}");
        assert_eq!(fallback_voice("en_US-joe-medium"), "en-us");
        assert_eq!(fallback_voice("de_DE-thorsten-low"), "de-de");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn voices_per_language() {
        let tts = Tts::new(&IvrSection::default(), PathBuf::from("/nonexistent"));
        assert_eq!(tts.voice("zh"), "cmn");
        assert_eq!(tts.voice("en"), "piper:en_US-joe-medium");
        assert_eq!(tts.voice("fr"), "fr");
    }
}
