//! Piper synthesis (feature `piper`): `cargo test -p frontdoor-speech --features piper`.
//!
//! Needs `scripts/models/fetch` (ONNX Runtime + voice, and tiny.en for the round trip) and
//! PIPER_ESPEAKNG_DATA_DIRECTORY pointing at the folder holding Debian's espeak-ng-data.
//! Everything runs under a timeout: ONNX Runtime can block on a bad library.
#![cfg(feature = "piper")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{models_dir, tiny_en, ulaw_decode, ulaw_encode, with_timeout};
use frontdoor_speech::{
    Expectation, Interpretation, Outcome, PiperPaths, PiperSynthesizer, Recognizer, SpeechError,
    Synthesizer, WhisperRecognizer,
};

fn synth(text: &'static str) -> Vec<i16> {
    with_timeout(120, "piper synthesis", move || {
        let t = Instant::now();
        let mut s = PiperSynthesizer::load(
            &PiperPaths::from_models_dir(&models_dir()),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("cannot load piper: {e}"));
        let load = t.elapsed();
        let t = Instant::now();
        let pcm = s.synthesize(text, 8000).unwrap();
        let took = t.elapsed();
        eprintln!(
            "piper: load {:.0} ms; {:?}: {} ms audio in {:.0} ms (RTF {:.3})",
            load.as_secs_f64() * 1000.0,
            text,
            pcm.len() / 8,
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() / (pcm.len() as f64 / 8000.0)
        );
        pcm
    })
}

#[test]
fn synthesizes_8khz_speech() {
    let pcm = synth("Welcome to Frontdoor. Please tell me how I can help.");
    let secs = pcm.len() as f32 / 8000.0;
    assert!((1.5..10.0).contains(&secs), "{secs} s");
    let rms = (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!(rms > 300.0, "too quiet: rms {rms}");
}

#[test]
fn piper_to_whisper_round_trip() {
    // synthesised prompt -> G.711 mu-law -> recogniser
    let pcm = synth("I lost my card");
    let mut line: Vec<i16> = vec![0; 2400];
    line.extend(pcm.iter().map(|&s| ulaw_decode(ulaw_encode(s))));
    line.extend(vec![0; 4000]);
    let model = tiny_en();
    let rec = with_timeout(120, "recognition", move || {
        let expect = Expectation::new()
            .intent("lost_card", &["I lost my card", "my card was stolen"])
            .intent("balance", &["check my balance"]);
        WhisperRecognizer::new(model)
            .unwrap()
            .recognize(&line, 8000, &expect)
            .unwrap()
    });
    eprintln!("heard {:?} -> {:?}", rec.transcript, rec.outcome);
    assert!(
        matches!(&rec.outcome, Outcome::Match(h) if h.interpretation == Interpretation::Intent("lost_card".into())),
        "{:?} ({:?})",
        rec.outcome,
        rec.transcript
    );
}

#[test]
fn missing_files_are_clear_errors_not_hangs() {
    let dir = std::env::temp_dir().join(format!("frontdoor-piper-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let real = PiperPaths::from_models_dir(&models_dir());
    let bad_lib = dir.join("libonnxruntime.so");
    std::fs::write(&bad_lib, b"not a library").unwrap();
    // a truncated voice (its first 64 KiB) with the real config: ONNX Runtime rejects it
    let truncated = dir.join("truncated.onnx");
    let model = std::fs::read(&real.voice).unwrap();
    std::fs::write(&truncated, &model[..65536]).unwrap();
    let config = std::fs::read(format!("{}.json", real.voice.display())).unwrap();
    std::fs::write(dir.join("truncated.onnx.json"), &config).unwrap();
    // a real voice with a damaged config
    let bad_config = dir.join("badconfig.onnx");
    std::fs::copy(&real.voice, &bad_config).unwrap();
    std::fs::write(dir.join("badconfig.onnx.json"), b"{\"phoneme_id_map\": 7").unwrap();
    let cases = [
        (
            PiperPaths {
                onnxruntime: dir.join("nope.so"),
                voice: real.voice.clone(),
            },
            "nope.so",
        ),
        (
            PiperPaths {
                onnxruntime: bad_lib,
                voice: real.voice.clone(),
            },
            "libonnxruntime.so",
        ),
        (
            PiperPaths {
                onnxruntime: real.onnxruntime.clone(),
                voice: dir.join("voice.onnx"),
            },
            "voice.onnx",
        ),
        (
            PiperPaths {
                onnxruntime: real.onnxruntime.clone(),
                voice: truncated,
            },
            "truncated.onnx",
        ),
        (
            PiperPaths {
                onnxruntime: real.onnxruntime.clone(),
                voice: bad_config,
            },
            "badconfig.onnx.json",
        ),
    ];
    for (paths, name) in cases {
        let err = with_timeout(60, "loading piper with a bad path", move || {
            PiperSynthesizer::load(&paths, Duration::from_secs(30)).map(|_| ())
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                SpeechError::ModelMissing { .. } | SpeechError::ModelCorrupt { .. }
            ),
            "{msg}"
        );
        assert!(
            msg.contains(name) && msg.contains("scripts/models/fetch"),
            "{msg}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
