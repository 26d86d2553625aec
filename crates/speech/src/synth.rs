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
                 (the folder that contains espeak-ng-data)"
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
        espeak_data_dir()?;
        let lib = paths.onnxruntime.clone();
        let voice = paths.voice.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = init_onnxruntime(&lib).and_then(|()| {
                piper_rs::Piper::new(&voice, &config).map_err(|e| corrupt(&voice, e.to_string()))
            });
            let _ = tx.send(r);
        });
        let piper = rx
            .recv_timeout(timeout)
            .map_err(|_| SpeechError::Timeout("loading the piper voice"))??;
        Ok(Self {
            piper,
            voice: paths.voice.clone(),
        })
    }
}

impl Synthesizer for PiperSynthesizer {
    fn synthesize(&mut self, text: &str, sample_rate: u32) -> Result<Vec<i16>, SpeechError> {
        let (samples, rate) = self
            .piper
            .create(text, false, None, None, None, None)
            .map_err(|e| SpeechError::Engine {
                engine: "piper",
                message: e.to_string(),
            })?;
        Ok(f32_to_i16(&resample(&samples, rate, sample_rate)?))
    }
}
