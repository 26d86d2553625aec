//! `frontdoor recognize` end to end: piper (and espeak-ng) speech through the telephone path
//! (8 kHz, G.711 mu-law) written as WAV files and recognised by the real binary against the
//! hotline's speech steps (dialplans/hotline.toml).
//!
//! The intent accuracy is measured on a HELD-OUT paraphrase set
//! (tests/fixtures/heldout-intents-v3.toml) that was written before the tuning round and is
//! never used to tune the dialplan phrases or the recognizer; tuning used the development sets
//! (tests/fixtures/dev-intents.toml and the former held-out heldout-intents-v2.toml). Each set
//! runs as one `frontdoor recognize` process over all its WAV files (model loaded once). Needs the models of `scripts/models/fetch` (tiny.en,
//! ONNX Runtime, the piper voice) and Debian espeak-ng; a missing model fails these tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use frontdoor_media::g711::G711;
use frontdoor_speech::audio::{f32_to_i16, i16_to_f32, resample};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_frontdoor");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn hotline() -> PathBuf {
    repo().join("dialplans/hotline.toml")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("frontdoor-recognize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Mono 16-bit PCM WAV image.
fn wav_bytes(pcm: &[i16], rate: u32) -> Vec<u8> {
    let data: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut b = Vec::with_capacity(44 + data.len());
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    b
}

/// 16-bit mono WAV -> (samples, rate).
fn read_pcm16(bytes: &[u8]) -> (Vec<i16>, u32) {
    assert!(bytes.len() > 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE");
    let mut pos = 12;
    let mut rate = 0;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &bytes[pos + 8..];
        if id == b"fmt " {
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
            assert_eq!(u16::from_le_bytes(body[2..4].try_into().unwrap()), 1);
            assert_eq!(u16::from_le_bytes(body[14..16].try_into().unwrap()), 16);
        } else if id == b"data" {
            let len = len.min(body.len());
            let pcm = body[..len]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (pcm, rate);
        }
        pos += 8 + len + (len & 1);
    }
    panic!("WAV without data chunk");
}

/// `espeak-ng -v en -w FILE TEXT` -> 8 kHz -> G.711 mu-law and back, 300 ms lead and 500 ms
/// tail of line silence -> an 8 kHz WAV file, as a call would record it.
/// Which voice speaks the test audio.
#[derive(Clone, Copy, Debug)]
enum Voice {
    /// piper `en_US-joe-medium` with its noise off (deterministic audio).
    Piper,
    /// `espeak-ng -v en`.
    Espeak,
}

/// The piper voice, loaded once per test process.
fn piper() -> &'static std::sync::Mutex<frontdoor_speech::PiperSynthesizer> {
    static PIPER: std::sync::OnceLock<std::sync::Mutex<frontdoor_speech::PiperSynthesizer>> =
        std::sync::OnceLock::new();
    PIPER.get_or_init(|| {
        let paths = frontdoor_speech::PiperPaths::from_models_dir(&repo().join("models"));
        let mut s = frontdoor_speech::PiperSynthesizer::load(&paths, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("cannot load the piper voice: {e}"));
        s.set_noise(0.0, 0.0);
        std::sync::Mutex::new(s)
    })
}

/// `text` spoken by `voice` -> 8 kHz -> G.711 mu-law and back, 300 ms lead and 500 ms tail
/// line silence, as a WAV file.
fn voice_wav(voice: Voice, text: &str, name: &str) -> PathBuf {
    let narrow = match voice {
        Voice::Piper => {
            let mut p = piper().lock().unwrap_or_else(|e| e.into_inner());
            frontdoor_speech::Synthesizer::synthesize(&mut *p, text, 8000)
                .unwrap_or_else(|e| panic!("piper failed on {text:?}: {e}"))
        }
        Voice::Espeak => return phone_wav(text, name),
    };
    let line = G711::Pcmu.decode(&G711::Pcmu.encode(&narrow));
    let mut out = vec![0i16; 8 * 300];
    out.extend(line);
    out.extend(std::iter::repeat_n(0i16, 8 * 500));
    let path = scratch(&format!("{name}.piper.wav"));
    std::fs::write(&path, wav_bytes(&out, 8000)).unwrap();
    path
}

fn phone_wav(text: &str, name: &str) -> PathBuf {
    let raw = scratch(&format!("{name}.espeak.wav"));
    let status = Command::new("espeak-ng")
        .args(["-v", "en", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap_or_else(|e| panic!("cannot run espeak-ng ({e}); apt-get install espeak-ng"));
    assert!(status.success(), "espeak-ng failed for {text:?}");
    let (pcm, rate) = read_pcm16(&std::fs::read(&raw).unwrap());
    let _ = std::fs::remove_file(&raw);
    let narrow = f32_to_i16(&resample(&i16_to_f32(&pcm), rate, 8000).unwrap());
    let line = G711::Pcmu.decode(&G711::Pcmu.encode(&narrow));
    let mut out = vec![0i16; 8 * 300];
    out.extend(line);
    out.extend(std::iter::repeat_n(0i16, 8 * 500));
    let path = scratch(&format!("{name}.wav"));
    std::fs::write(&path, wav_bytes(&out, 8000)).unwrap();
    path
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Run the real binary with a deadline; kill it and fail when it overruns.
fn frontdoor(args: &[&str], models: Option<&Path>, timeout: Duration) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(repo())
        .env(
            "FRONTDOOR_MODELS_DIR",
            models.map_or_else(|| repo().join("models"), Path::to_path_buf),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("frontdoor {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
        elapsed: start.elapsed(),
    }
}

/// `frontdoor recognize --dialplan hotline --step STEP WAV` -> the parsed JSON line.
fn recognize(step: &str, wav: &Path) -> Value {
    let mut lines = recognize_batch(step, &[wav.to_path_buf()]);
    assert!(
        lines[0].get("file").is_none(),
        "a single file's line has no \"file\": {}",
        lines[0]
    );
    lines.remove(0)
}

/// `frontdoor recognize --dialplan hotline --step STEP WAV...` (one process, the model loaded
/// once) -> one parsed JSON line per file, in order.
fn recognize_batch(step: &str, wavs: &[PathBuf]) -> Vec<Value> {
    let plan = hotline();
    let mut args = vec![
        "recognize",
        "--dialplan",
        plan.to_str().unwrap(),
        "--step",
        step,
    ];
    args.extend(wavs.iter().map(|w| w.to_str().unwrap()));
    // Generous on this shared 2-core box: a model load plus up to 15 s per utterance.
    let timeout = Duration::from_secs(60 + 15 * wavs.len() as u64);
    let run = frontdoor(&args, None, timeout);
    assert_eq!(
        run.code,
        Some(0),
        "frontdoor recognize failed: {}",
        run.stderr
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        wavs.len(),
        "want one JSON line per file, got {:?}",
        run.stdout
    );
    lines
        .iter()
        .zip(wavs)
        .enumerate()
        .map(|(i, (line, wav))| {
            let v: Value = serde_json::from_str(line).unwrap();
            for key in ["decode_ms", "load_ms", "recognize_ms", "audio_ms"] {
                assert!(v["timings"][key].is_number(), "timings.{key} in {v}");
            }
            if i > 0 {
                assert_eq!(v["timings"]["load_ms"], 0.0, "model loaded once: {v}");
            }
            if wavs.len() > 1 {
                assert_eq!(v["file"], wav.to_str().unwrap(), "lines in file order: {v}");
            }
            assert!(v["confidence"].is_number(), "confidence in {v}");
            assert!(v["transcript"].is_string(), "transcript in {v}");
            v
        })
        .collect()
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Figures of one intent set.
#[derive(Debug)]
struct Figures {
    correct: u32,
    in_domain: u32,
    false_accepts: u32,
    total: u32,
}

impl Figures {
    fn accuracy(&self) -> f64 {
        f64::from(self.correct) / f64::from(self.in_domain)
    }
    fn false_accept_rate(&self) -> f64 {
        f64::from(self.false_accepts) / f64::from(self.total)
    }
}

/// Runs every sentence of an intent set (`[intents]` name = [...], `[none]` out_of_domain)
/// through `voice` -> telephone line -> `frontdoor recognize`, printing each and the figures.
fn measure(fixture: &str, voice: Voice, min_per_intent: usize) -> Figures {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let set: toml::Table = toml::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let step = set["step"].as_str().unwrap().to_owned();
    let mut cases: Vec<(Option<String>, String)> = Vec::new();
    for (intent, phrases) in set["intents"].as_table().unwrap() {
        let phrases = phrases.as_array().unwrap();
        assert!(
            phrases.len() >= min_per_intent,
            "{intent}: at least {min_per_intent} phrases"
        );
        for p in phrases {
            cases.push((Some(intent.clone()), p.as_str().unwrap().to_owned()));
        }
    }
    for p in set["none"]["out_of_domain"].as_array().unwrap() {
        cases.push((None, p.as_str().unwrap().to_owned()));
    }

    let (mut in_domain, mut correct, mut rejected, mut wrong) = (0, 0, 0, 0);
    let (mut ood, mut ood_accepted) = (0, 0);
    let mut per_intent: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
    let mut total_ms = 0.0;
    let wavs: Vec<PathBuf> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, text))| voice_wav(voice, text, &format!("{i}-{}", slug(text))))
        .collect();
    let lines = recognize_batch(&step, &wavs);
    for wav in &wavs {
        let _ = std::fs::remove_file(wav);
    }
    for ((want, text), v) in cases.iter().zip(&lines) {
        total_ms += v["timings"]["recognize_ms"].as_f64().unwrap();
        let got = match v["result"]["kind"].as_str().unwrap() {
            "intent" => Some(v["result"]["intent"].as_str().unwrap().to_owned()),
            "none" => None,
            other => panic!("an intents step answered {other}: {v}"),
        };
        let verdict = match (want, &got) {
            (Some(w), Some(g)) if w == g => {
                correct += 1;
                "ok"
            }
            (Some(_), Some(_)) => {
                wrong += 1;
                "WRONG (false accept)"
            }
            (Some(_), None) => {
                rejected += 1;
                "rejected"
            }
            (None, Some(_)) => {
                ood_accepted += 1;
                "ACCEPTED out-of-domain (false accept)"
            }
            (None, None) => "ok (rejected)",
        };
        if let Some(w) = want {
            in_domain += 1;
            let e = per_intent.entry(w.clone()).or_default();
            e.1 += 1;
            if verdict == "ok" {
                e.0 += 1;
            }
        } else {
            ood += 1;
        }
        eprintln!(
            "{:<10} {:<48} heard {:<52} -> {:<34} {verdict}",
            want.as_deref().unwrap_or("(none)"),
            format!("{text:?}"),
            format!("{:?}", v["transcript"].as_str().unwrap()),
            v["result"].to_string()
        );
    }
    let f = Figures {
        correct,
        in_domain,
        false_accepts: wrong + ood_accepted,
        total: in_domain + ood,
    };
    eprintln!("per intent (correct/said): {per_intent:?}");
    eprintln!(
        "{} ({voice:?}): accuracy {correct}/{in_domain} = {:.1} %, rejected {rejected}, wrong intent {wrong}; \
         out-of-domain accepted {ood_accepted}/{ood}; false accepts {}/{} = {:.1} %; \
         mean recognize {:.0} ms",
        fixture.file_name().unwrap().to_string_lossy(),
        f.accuracy() * 100.0,
        f.false_accepts,
        f.total,
        f.false_accept_rate() * 100.0,
        total_ms / f64::from(f.total)
    );
    f
}

/// The set v3, piper audio: held-out in round 3 (measured once, after the tuning was
/// committed), development data since (docs/speech.md).
#[test]
fn heldout_intents_accuracy() {
    let f = measure("heldout-intents-v3.toml", Voice::Piper, 8);
    assert!(
        f.accuracy() >= HELDOUT_ACCURACY_FLOOR,
        "held-out accuracy {:.3} < {HELDOUT_ACCURACY_FLOOR}",
        f.accuracy()
    );
    assert!(
        f.false_accept_rate() <= FALSE_ACCEPT_CEILING,
        "held-out false accepts {:.3} > {FALSE_ACCEPT_CEILING}",
        f.false_accept_rate()
    );
}

/// The held-out set v5 (written by a separate writer before round 5 of tuning), piper audio:
/// measured ONCE, after the round-5 tuning (the intent classifier) was committed
/// (docs/speech.md).
#[test]
fn heldout_v5_intents_accuracy() {
    let f = measure("heldout-intents-v5.toml", Voice::Piper, 8);
    assert!(
        f.accuracy() >= HELDOUT_V5_ACCURACY_FLOOR,
        "held-out v5 accuracy {:.3} < {HELDOUT_V5_ACCURACY_FLOOR}",
        f.accuracy()
    );
    assert!(
        f.false_accept_rate() <= FALSE_ACCEPT_CEILING,
        "held-out v5 false accepts {:.3} > {FALSE_ACCEPT_CEILING}",
        f.false_accept_rate()
    );
}

/// The former held-out set v2 (measured once in round 2, development data since), piper audio.
#[test]
fn dev_v2_intents_accuracy() {
    let f = measure("heldout-intents-v2.toml", Voice::Piper, 8);
    assert!(
        f.accuracy() >= DEV_V2_ACCURACY_FLOOR,
        "v2 (dev) accuracy {:.3} < {DEV_V2_ACCURACY_FLOOR}",
        f.accuracy()
    );
    assert!(
        f.false_accept_rate() <= FALSE_ACCEPT_CEILING,
        "v2 (dev) false accepts {:.3} > {FALSE_ACCEPT_CEILING}",
        f.false_accept_rate()
    );
}

/// The former held-out set v4 (measured by the lost round-4 attempt, development data since),
/// piper audio.
#[test]
fn dev_v4_intents_accuracy() {
    let f = measure("heldout-intents-v4.toml", Voice::Piper, 8);
    assert!(
        f.accuracy() >= DEV_V4_ACCURACY_FLOOR,
        "v4 (dev) accuracy {:.3} < {DEV_V4_ACCURACY_FLOOR}",
        f.accuracy()
    );
    assert!(
        f.false_accept_rate() <= FALSE_ACCEPT_CEILING,
        "v4 (dev) false accepts {:.3} > {FALSE_ACCEPT_CEILING}",
        f.false_accept_rate()
    );
}

/// The development set (tuned on), piper audio.
#[test]
fn dev_intents_accuracy() {
    let f = measure("dev-intents.toml", Voice::Piper, 6);
    assert!(
        f.accuracy() >= DEV_ACCURACY_FLOOR,
        "dev accuracy {:.3} < {DEV_ACCURACY_FLOOR}",
        f.accuracy()
    );
    assert!(
        f.false_accept_rate() <= FALSE_ACCEPT_CEILING,
        "dev false accepts {:.3} > {FALSE_ACCEPT_CEILING}",
        f.false_accept_rate()
    );
}

/// v3 (held-out in round 3: 42/54 = 77.8 %, measured once; development and training data
/// since round 5) accuracy floor: measured 53/54 = 98.1 % with the round-5 classifier; one
/// utterance below (52/54 = 96.3 %) so that a float difference on another CPU cannot flip the
/// test.
const HELDOUT_ACCURACY_FLOOR: f64 = 0.96;
/// Development-set accuracy floor: measured 70/72 = 97.2 % (round 5, training data; 68/72 in
/// round 3); one utterance below.
const DEV_ACCURACY_FLOOR: f64 = 0.95;
/// v2 (development data since round 3, training data in round 5) accuracy floor: measured
/// 45/48 = 93.8 % in round 5 (46/48 in round 3; 41/48 = 85.4 % as round 2's held-out
/// figure); one utterance below.
const DEV_V2_ACCURACY_FLOOR: f64 = 0.91;
/// Held-out v5 accuracy floor: measured ONCE, after the round-5 tuning was committed (1f29dd2):
/// 78/84 = 92.9 % (6 rejected, none wrong; 1/30 out-of-domain accepted, false accepts 1/114 =
/// 0.9 %). The floor is one utterance below the measurement (77/84 = 91.7 %).
const HELDOUT_V5_ACCURACY_FLOOR: f64 = 0.91;
/// v4 (development data in round 5; training data after the prompt choice) accuracy floor:
/// measured 70/72 = 97.2 % (64/72 = 88.9 % before it joined the training data); one
/// utterance below.
const DEV_V4_ACCURACY_FLOOR: f64 = 0.95;
/// False accepts (a wrong intent, or any intent for an out-of-domain sentence) over all
/// utterances: the target ceiling, 5 % (measured in round 5: held-out v5 1/114 = 0.9 %, dev
/// 1/86, v2 0/60, v3 0/68, v4 0/90).
const FALSE_ACCEPT_CEILING: f64 = 0.05;

#[test]
fn account_number_digits() {
    let voices = [Voice::Piper, Voice::Espeak];
    let wavs: Vec<PathBuf> = voices
        .iter()
        .map(|&voice| voice_wav(voice, "four one five nine two six three eight", "digits"))
        .collect();
    let lines = recognize_batch("account_digits", &wavs);
    for ((voice, wav), v) in voices.iter().zip(&wavs).zip(&lines) {
        let _ = std::fs::remove_file(wav);
        assert_eq!(v["result"]["kind"], "digits", "{voice:?}: {v}");
        assert_eq!(v["result"]["digits"], "41592638", "{voice:?}: {v}");
    }
}

#[test]
fn yes_and_no_on_the_confirmation_step() {
    let voices = [Voice::Piper, Voice::Espeak];
    // Both spellings of the step: FLOW.STEP for yes, STEP for no.
    for (step, word, yes) in [
        ("speech.confirm_lost_card", "yes", true),
        ("confirm_lost_card", "no", false),
    ] {
        let wavs: Vec<PathBuf> = voices
            .iter()
            .map(|&voice| voice_wav(voice, word, word))
            .collect();
        let lines = recognize_batch(step, &wavs);
        for ((voice, wav), v) in voices.iter().zip(&wavs).zip(&lines) {
            let _ = std::fs::remove_file(wav);
            assert_eq!(
                v["result"],
                serde_json::json!({"kind": "yes_no", "yes": yes}),
                "{voice:?} {word:?}: {v}"
            );
        }
    }
}

/// One example of every intent, spoken by piper, comes back as that intent.
#[test]
fn every_intent_round_trips_through_piper() {
    let cases = [
        ("balance", "I would like to check my balance please"),
        ("lost_card", "I lost my card"),
        ("payment", "I want to make a payment"),
        ("agent", "can I talk to a person"),
        ("callback", "please call me back"),
        ("hours", "what are your opening hours"),
    ];
    let wavs: Vec<PathBuf> = cases
        .iter()
        .map(|(_, text)| voice_wav(Voice::Piper, text, &slug(text)))
        .collect();
    let lines = recognize_batch("speech_main", &wavs);
    for (((intent, text), wav), v) in cases.iter().zip(&wavs).zip(&lines) {
        let _ = std::fs::remove_file(wav);
        assert_eq!(
            v["result"],
            serde_json::json!({"kind": "intent", "intent": intent}),
            "{text:?}: {v}"
        );
    }
}

#[test]
fn silence_is_no_input() {
    let path = scratch("silence.wav");
    std::fs::write(&path, wav_bytes(&vec![0i16; 8000 * 2], 8000)).unwrap();
    let v = recognize("speech_main", &path);
    let _ = std::fs::remove_file(path);
    assert_eq!(
        v["result"],
        serde_json::json!({"kind": "none", "reason": "no_input"}),
        "{v}"
    );
    assert_eq!(v["timings"]["audio_ms"], 2000, "{v}");
}

fn recognize_fails(args: &[&str], models: Option<&Path>) -> String {
    let run = frontdoor(args, models, Duration::from_secs(30));
    assert_eq!(
        run.code,
        Some(1),
        "want exit 1: {} / {}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    assert!(run.elapsed < Duration::from_secs(30));
    run.stderr
}

/// A bad file in a batch is reported on stderr (exit status 1) and the other files are still
/// recognised, each line naming its file.
#[test]
fn a_bad_file_in_a_batch_does_not_stop_the_others() {
    let silence = scratch("batch-silence.wav");
    std::fs::write(&silence, wav_bytes(&vec![0i16; 8000], 8000)).unwrap();
    let bad = scratch("batch-bad.wav");
    std::fs::write(&bad, b"not a wav").unwrap();
    let plan = hotline();
    let (silence_s, bad_s) = (silence.to_str().unwrap(), bad.to_str().unwrap());
    let run = frontdoor(
        &[
            "recognize",
            "--dialplan",
            plan.to_str().unwrap(),
            "--step",
            "speech_main",
            silence_s,
            bad_s,
            silence_s,
        ],
        None,
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(1), "{} / {}", run.stdout, run.stderr);
    assert!(run.stderr.contains(bad_s), "{}", run.stderr);
    assert!(
        run.stderr.contains("not a usable WAV file"),
        "{}",
        run.stderr
    );
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for v in &lines {
        assert_eq!(v["file"], silence_s, "{v}");
        assert_eq!(v["result"]["reason"], "no_input", "{v}");
    }
    let _ = std::fs::remove_file(silence);
    let _ = std::fs::remove_file(bad);
}

#[test]
fn missing_model_names_the_fetch_script() {
    let empty = scratch("no-models");
    std::fs::create_dir_all(&empty).unwrap();
    let wav = scratch("short-silence.wav");
    std::fs::write(&wav, wav_bytes(&vec![0i16; 800], 8000)).unwrap();
    let plan = hotline();
    // a step without a classifier: the Whisper model is what is missing
    let stderr = recognize_fails(
        &[
            "recognize",
            "--dialplan",
            plan.to_str().unwrap(),
            "--step",
            "account_digits",
            wav.to_str().unwrap(),
        ],
        Some(&empty),
    );
    assert!(stderr.contains("scripts/models/fetch"), "{stderr}");
    assert!(stderr.contains("ggml-tiny.en.bin"), "{stderr}");
    // the speech step's intent classifier needs the word embeddings (checked first)
    let stderr = recognize_fails(
        &[
            "recognize",
            "--dialplan",
            plan.to_str().unwrap(),
            "--step",
            "speech_main",
            wav.to_str().unwrap(),
        ],
        Some(&empty),
    );
    assert!(stderr.contains("scripts/models/fetch"), "{stderr}");
    assert!(stderr.contains("wordllama/l2_supercat"), "{stderr}");
    assert!(stderr.contains("intents/hotline-en.toml"), "{stderr}");
    let _ = std::fs::remove_file(wav);
    let _ = std::fs::remove_dir(empty);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let plan = hotline();
    let plan = plan.to_str().unwrap();
    let wav = scratch("ok-silence.wav");
    std::fs::write(&wav, wav_bytes(&vec![0i16; 800], 8000)).unwrap();
    let wav = wav.to_str().unwrap();
    let stderr = recognize_fails(
        &["recognize", "--dialplan", plan, "--step", "nosuchstep", wav],
        None,
    );
    assert!(stderr.contains("unknown step \"nosuchstep\""), "{stderr}");
    assert!(stderr.contains("speech.speech_main"), "{stderr}");
    let stderr = recognize_fails(
        &["recognize", "--dialplan", plan, "--step", "hours_info", wav],
        None,
    );
    assert!(stderr.contains("takes no speech input"), "{stderr}");
    let bad = scratch("bad.wav");
    std::fs::write(&bad, b"this is not a wav file").unwrap();
    let stderr = recognize_fails(
        &[
            "recognize",
            "--dialplan",
            plan,
            "--step",
            "speech_main",
            bad.to_str().unwrap(),
        ],
        None,
    );
    assert!(stderr.contains("not a usable WAV file"), "{stderr}");
    let stderr = recognize_fails(
        &[
            "recognize",
            "--dialplan",
            plan,
            "--step",
            "speech_main",
            "/nonexistent/x.wav",
        ],
        None,
    );
    assert!(stderr.contains("cannot read"), "{stderr}");
    let _ = std::fs::remove_file(wav);
    let _ = std::fs::remove_file(bad);
}
