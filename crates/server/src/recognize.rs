//! `frontdoor recognize --dialplan FILE --step STEP AUDIO.wav...`: run the recognizer a call's
//! speech step would use on WAV files (model loaded once) and print one JSON line per file.
//!
//! The step's declared speech input becomes the recognizer's [`Expectation`]: its intents and
//! their example phrases, `expect = ["yes", "no"]`, or (a gather without intents or expected
//! words) a digit string of the step's `min_digits..=max_digits`. See docs/speech.md.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use frontdoor_ivr::model::{InputKind, SpeechSpec, Step, Verb};
use frontdoor_speech::{
    Expectation, Interpretation, Outcome, Recognizer, TINY_EN, WhisperModel, WhisperRecognizer,
};
use serde_json::{Value, json};

/// Why `frontdoor recognize` could not answer (printed on stderr, exit status 1).
#[derive(Debug)]
pub struct RecognizeError(String);

impl fmt::Display for RecognizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(msg: impl Into<String>) -> RecognizeError {
    RecognizeError(msg.into())
}

/// Mono 16-bit PCM read from a WAV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    /// Samples (channels averaged).
    pub pcm: Vec<i16>,
    /// Sample rate, Hz.
    pub rate: u32,
}

/// The recognizer's [`Expectation`] for `step` (`STEP` or `FLOW.STEP`) of a dialplan file.
pub fn step_expectation(dialplan: &Path, step: &str) -> Result<Expectation, RecognizeError> {
    let loaded = frontdoor_ivr::check_file(dialplan, None).map_err(|diags| {
        let mut msg = format!("invalid dialplan {}:", dialplan.display());
        for d in diags {
            msg.push('\n');
            msg.push_str(&d.to_string());
        }
        err(msg)
    })?;
    expectation(find_step(&loaded.plan, step)?)
}

/// Load the dialplan, build the step's expectation and load the model once, then decode and
/// recognise each WAV file: `each` gets one result per file,
/// in order (a JSON line, or the error of that file: an unreadable or unsupported WAV does not
/// stop the others). With more than one file each line carries `"file"` (the path as given).
/// Errors that concern every file (dialplan, step, model) are returned before any file is
/// read.
pub fn run_many(
    dialplan: &Path,
    step: &str,
    audio: &[PathBuf],
    mut each: impl FnMut(Result<String, RecognizeError>),
) -> Result<(), RecognizeError> {
    let expect = step_expectation(dialplan, step)?;

    let model_path = model_path();
    let t = Instant::now();
    let model = WhisperModel::load(&model_path).map_err(|e| err(e.to_string()))?;
    let mut recognizer = WhisperRecognizer::new(&model).map_err(|e| err(e.to_string()))?;
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;

    let named = audio.len() > 1;
    for (i, path) in audio.iter().enumerate() {
        // The model load is charged to the first file only (it happened once).
        let load_ms = if i == 0 { load_ms } else { 0.0 };
        each(
            recognize_one(&mut recognizer, &expect, path, load_ms).map(|mut line| {
                if named && let Value::Object(map) = &mut line {
                    map.insert("file".to_owned(), Value::String(path.display().to_string()));
                }
                Value::to_string(&line)
            }),
        );
    }
    Ok(())
}

fn recognize_one(
    recognizer: &mut WhisperRecognizer,
    expect: &Expectation,
    audio: &Path,
    load_ms: f64,
) -> Result<Value, RecognizeError> {
    let t = Instant::now();
    let wav = read_wav(audio)?;
    let decode_ms = t.elapsed().as_secs_f64() * 1000.0;

    let t = Instant::now();
    let rec = recognizer
        .recognize(&wav.pcm, wav.rate, expect)
        .map_err(|e| err(format!("{}: recognition failed: {e}", audio.display())))?;
    let recognize_ms = t.elapsed().as_secs_f64() * 1000.0;

    let (result, confidence) = match &rec.outcome {
        Outcome::Match(h) => (
            match &h.interpretation {
                Interpretation::Intent(name) => json!({"kind": "intent", "intent": name}),
                Interpretation::Digits(d) => json!({"kind": "digits", "digits": d}),
                Interpretation::Yes => json!({"kind": "yes_no", "yes": true}),
                Interpretation::No => json!({"kind": "yes_no", "yes": false}),
            },
            h.score,
        ),
        Outcome::NoInput => (json!({"kind": "none", "reason": "no_input"}), 0.0),
        Outcome::NoMatch(guess) => (
            json!({"kind": "none", "reason": "no_match"}),
            guess.as_ref().map_or(0.0, |h| h.score),
        ),
    };
    Ok(json!({
        "transcript": rec.transcript,
        "result": result,
        "confidence": round(f64::from(confidence), 1000.0),
        "timings": {
            "decode_ms": round(decode_ms, 10.0),
            "load_ms": round(load_ms, 10.0),
            "recognize_ms": round(recognize_ms, 10.0),
            "audio_ms": rec.audio_ms,
        },
    }))
}

fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

/// `STEP` or `FLOW.STEP`; a bare step name must be unique across the dialplan's flows.
fn find_step<'p>(
    plan: &'p frontdoor_ivr::Dialplan,
    name: &str,
) -> Result<&'p Step, RecognizeError> {
    let mut found: Vec<(&str, &Step)> = Vec::new();
    for (flow_id, flow) in &plan.flows {
        for (step_id, step) in &flow.steps {
            let qualified = format!("{}.{}", flow_id.0, step_id.0);
            if step_id.0 == name || qualified == name {
                found.push((flow_id.0.as_str(), step));
            }
        }
    }
    match found.as_slice() {
        [(_, step)] => Ok(step),
        [] => {
            let speech: Vec<String> = plan
                .flows
                .iter()
                .flat_map(|(f, flow)| {
                    flow.steps
                        .iter()
                        .filter(|(_, s)| speech_of(s).is_some())
                        .map(move |(s, _)| format!("{}.{}", f.0, s.0))
                })
                .collect();
            Err(err(format!(
                "unknown step {name:?} in {}; steps with speech input: {}",
                plan.source.display(),
                if speech.is_empty() {
                    "none".to_owned()
                } else {
                    speech.join(", ")
                }
            )))
        }
        many => {
            let flows: Vec<String> = many.iter().map(|(f, _)| format!("{f}.{name}")).collect();
            Err(err(format!(
                "step {name:?} exists in several flows; name one of: {}",
                flows.join(", ")
            )))
        }
    }
}

/// The speech part of a gather/menu that accepts speech.
fn speech_of(step: &Step) -> Option<&SpeechSpec> {
    let (input, speech) = match &step.verb {
        Verb::Gather(g) => (&g.input, &g.speech),
        Verb::Menu(m) => (&m.input, &m.speech),
        _ => return None,
    };
    input.contains(&InputKind::Speech).then_some(speech)
}

/// The recognizer's expectation for a step, from what the dialplan declares.
pub fn expectation(step: &Step) -> Result<Expectation, RecognizeError> {
    let speech = speech_of(step).ok_or_else(|| {
        err(format!(
            "step {:?} takes no speech input (it needs to be a gather or menu with input = [\"speech\", ...])",
            step.id.0
        ))
    })?;
    let mut expect = Expectation::new();
    for intent in &speech.intents {
        let fallback;
        let phrases: Vec<&str> = if intent.phrases.is_empty() {
            // No example phrases: the intent's own name, as words.
            fallback = intent.name.replace(['_', '-'], " ");
            vec![fallback.as_str()]
        } else {
            intent.phrases.iter().map(String::as_str).collect()
        };
        expect = expect.intent(&intent.name, &phrases);
    }
    if let Some(training) = &speech.training {
        // the intent classifier (crates/speech/src/nlu.rs): trained once per process
        let intents: Vec<(String, Vec<String>)> = expect
            .intents
            .iter()
            .map(|i| (i.name.clone(), i.phrases.clone()))
            .collect();
        let classifier = frontdoor_speech::nlu::shared_classifier(
            training,
            &intents,
            &frontdoor_speech::models_dir(),
        )
        .map_err(|e| err(e.to_string()))?;
        expect = expect.classifier(classifier);
    }
    let mut yes_no = false;
    for word in &speech.expect {
        match word.to_lowercase().as_str() {
            "yes" | "no" => yes_no = true,
            other => expect = expect.intent(word, &[other]),
        }
    }
    if yes_no {
        expect = expect.yes_no();
    }
    if speech.intents.is_empty()
        && speech.expect.is_empty()
        && let Verb::Gather(g) = &step.verb
    {
        expect = expect.digits(g.min_digits.max(1), g.max_digits.max(1));
    }
    Ok(expect)
}

/// Read a WAV file: PCM 8/16/24/32-bit or 32-bit float, any channel count (averaged),
/// 8000..=48000 Hz.
pub fn read_wav(path: &Path) -> Result<Wav, RecognizeError> {
    let data =
        std::fs::read(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    parse_wav(&data).map_err(|e| err(format!("{}: not a usable WAV file: {e}", path.display())))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parse a RIFF/WAVE image.
pub fn parse_wav(b: &[u8]) -> Result<Wav, String> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err("no RIFF/WAVE header".to_owned());
    }
    let mut at = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut samples: Option<&[u8]> = None;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let len = u32_at(b, at + 4).ok_or("truncated chunk header")? as usize;
        let body_start = at + 8;
        let body_end = body_start.saturating_add(len).min(b.len());
        let body = &b[body_start..body_end];
        match id {
            b"fmt " => {
                let mut format = u16_at(body, 0).ok_or("short fmt chunk")?;
                let channels = u16_at(body, 2).ok_or("short fmt chunk")?;
                let rate = u32_at(body, 4).ok_or("short fmt chunk")?;
                let bits = u16_at(body, 14).ok_or("short fmt chunk")?;
                if format == 0xFFFE {
                    // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the format code.
                    format = u16_at(body, 24).ok_or("short extensible fmt chunk")?;
                }
                fmt = Some((format, channels, rate, bits));
            }
            b"data" => samples = Some(body),
            _ => {}
        }
        at = body_start.saturating_add(len).saturating_add(len & 1);
    }
    let (format, channels, rate, bits) = fmt.ok_or("no fmt chunk")?;
    let data = samples.ok_or("no data chunk")?;
    if channels == 0 {
        return Err("0 channels".to_owned());
    }
    if !(8000..=48_000).contains(&rate) {
        return Err(format!(
            "sample rate {rate} Hz (8000..=48000 supported; telephone audio is 8000)"
        ));
    }
    let to_f32: fn(&[u8]) -> f32 = match (format, bits) {
        (1, 8) => |s| (f32::from(s[0]) - 128.0) / 128.0,
        (1, 16) => |s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0,
        (1, 24) => |s| (i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8) as f32 / 8_388_608.0,
        (1, 32) => |s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32 / 2_147_483_648.0,
        (3, 32) => |s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        _ => {
            return Err(format!(
                "unsupported encoding (format {format}, {bits} bits); use PCM 8/16/24/32-bit or float 32-bit"
            ));
        }
    };
    let width = usize::from(bits / 8);
    let frame = width * usize::from(channels);
    let pcm = data
        .chunks_exact(frame)
        .map(|f| {
            let sum: f32 = f.chunks_exact(width).map(to_f32).sum();
            let v = sum / f32::from(channels);
            (v.clamp(-1.0, 1.0) * 32767.0).round() as i16
        })
        .collect();
    Ok(Wav { pcm, rate })
}

/// The model file `frontdoor recognize` loads.
pub fn model_path() -> PathBuf {
    frontdoor_speech::models_dir().join(TINY_EN)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wav16(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        b.extend_from_slice(&(2 * channels).to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn reads_mono_and_stereo_pcm16() {
        let w = parse_wav(&wav16(8000, 1, &[0, 1000, -1000])).unwrap();
        assert_eq!(w.rate, 8000);
        assert_eq!(w.pcm, vec![0, 1000, -1000]);
        let w = parse_wav(&wav16(16000, 2, &[1000, 3000, -2000, -2000])).unwrap();
        assert_eq!(w.rate, 16000);
        assert_eq!(w.pcm, vec![2000, -2000]);
    }

    #[test]
    fn rejects_garbage_and_bad_rates() {
        assert!(parse_wav(b"hello world, not a wav").is_err());
        assert!(parse_wav(&wav16(4000, 1, &[0; 10])).is_err());
        assert!(parse_wav(&wav16(8000, 1, &[0; 10])[..30]).is_err());
    }
}
