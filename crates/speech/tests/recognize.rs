//! End-to-end recognition on real audio: espeak-ng speech through the telephone path
//! (8 kHz, G.711 mu-law) recognised by the converted Whisper tiny.en model.
//!
//! Needs `scripts/models/fetch` (models/ggml-tiny.en.bin) and Debian espeak-ng. A missing model
//! FAILS these tests with a message naming the file and the fix; it does not skip them.
#![allow(clippy::unwrap_used)]

mod common;

use common::{degrade, models_dir, phone_phrase, tiny_en, ulaw_decode, ulaw_encode, with_timeout};
use frontdoor_speech::{
    Expectation, Interpretation, Outcome, Recognition, Recognizer, SpeechError, TINY_EN,
    WhisperModel, WhisperRecognizer,
};

fn bank() -> Expectation {
    Expectation::new()
        .intent(
            "lost_card",
            &["I lost my card", "my card was stolen", "block my card"],
        )
        .intent("balance", &["check my balance", "how much money do I have"])
        .intent("agent", &["speak to an agent", "talk to a person"])
}

fn recognize(pcm: Vec<i16>, expect: Expectation) -> Recognition {
    let model = tiny_en();
    with_timeout(120, "recognition", move || {
        let mut r = WhisperRecognizer::new(model).unwrap();
        let rec = r.recognize(&pcm, 8000, &expect).unwrap();
        eprintln!(
            "heard {:?} (p={:.2}) -> {:?}; {} ms audio, {} ms speech, {:.0} ms, RTF {:.3}",
            rec.transcript,
            rec.asr_probability,
            rec.outcome,
            rec.audio_ms,
            rec.speech_ms,
            rec.elapsed.as_secs_f64() * 1000.0,
            rec.real_time_factor()
        );
        rec
    })
}

fn assert_match(rec: &Recognition, want: &Interpretation) {
    match &rec.outcome {
        Outcome::Match(h) => assert_eq!(&h.interpretation, want, "transcript {:?}", rec.transcript),
        other => panic!(
            "expected {want:?}, got {other:?} (transcript {:?})",
            rec.transcript
        ),
    }
}

#[test]
fn mulaw_roundtrip_is_close() {
    for s in [-32768i16, -1000, -1, 0, 1, 77, 1000, 12345, 32767] {
        let d = ulaw_decode(ulaw_encode(s));
        let err = (i32::from(s) - i32::from(d)).abs();
        assert!(err <= (i32::from(s).abs() / 16).max(8), "{s} -> {d}");
    }
}

#[test]
fn lost_card_intent() {
    let rec = recognize(phone_phrase("I lost my card"), bank());
    assert_match(&rec, &Interpretation::Intent("lost_card".into()));
}

#[test]
fn one_recognizer_serves_steps_with_different_prompts_in_turn() {
    // Its decoder settings are kept per Whisper prompt: each step must get its own.
    let model = tiny_en();
    let cases = [
        (
            phone_phrase("I lost my card"),
            bank(),
            Interpretation::Intent("lost_card".into()),
        ),
        (
            phone_phrase("yes"),
            Expectation::new().yes_no(),
            Interpretation::Yes,
        ),
        (
            phone_phrase("five nine zero seven"),
            Expectation::new().digits(4, 4),
            Interpretation::Digits("5907".into()),
        ),
        (
            phone_phrase("I want to check my balance"),
            bank(),
            Interpretation::Intent("balance".into()),
        ),
        (
            phone_phrase("no"),
            Expectation::new().yes_no(),
            Interpretation::No,
        ),
    ];
    with_timeout(120, "recognition", move || {
        let mut r = WhisperRecognizer::new(model).unwrap();
        for (pcm, expect, want) in &cases {
            let rec = r.recognize(pcm, 8000, expect).unwrap();
            assert_match(&rec, want);
        }
    });
}

#[test]
fn balance_intent_paraphrased() {
    let rec = recognize(
        phone_phrase("I would like to check my balance please"),
        bank(),
    );
    assert_match(&rec, &Interpretation::Intent("balance".into()));
}

#[test]
fn agent_intent() {
    let rec = recognize(phone_phrase("Can I talk to a person"), bank());
    assert_match(&rec, &Interpretation::Intent("agent".into()));
}

#[test]
fn yes() {
    let rec = recognize(phone_phrase("yes"), Expectation::new().yes_no());
    assert_match(&rec, &Interpretation::Yes);
}

#[test]
fn no() {
    let rec = recognize(phone_phrase("no"), Expectation::new().yes_no());
    assert_match(&rec, &Interpretation::No);
}

#[test]
fn four_digits() {
    let rec = recognize(
        phone_phrase("one two three four"),
        Expectation::new().digits(4, 4),
    );
    assert_match(&rec, &Interpretation::Digits("1234".into()));
}

#[test]
fn four_digits_not_in_the_prompt_order() {
    // regression: with "1 2 3 4." as the digit prompt tiny.en heard "5.0.0.0.0"
    let rec = recognize(
        phone_phrase("five nine zero seven"),
        Expectation::new().digits(4, 4),
    );
    assert_match(&rec, &Interpretation::Digits("5907".into()));
}

#[test]
fn seven_digits_with_oh() {
    let rec = recognize(
        phone_phrase("eight six seven five three oh nine"),
        Expectation::new().digits(7, 7),
    );
    assert_match(&rec, &Interpretation::Digits("8675309".into()));
}

#[test]
fn quiet_caller_is_normalised() {
    // 20 dB below espeak's level (speech around -40 dBFS)
    let rec = recognize(
        degrade(&phone_phrase("I lost my card"), -20.0, None),
        bank(),
    );
    assert_match(&rec, &Interpretation::Intent("lost_card".into()));
}

#[test]
fn yes_and_no_over_line_noise() {
    // white noise at -40 dBFS, about 20 dB below the speech
    let rec = recognize(
        degrade(&phone_phrase("yes"), 0.0, Some(-40.0)),
        Expectation::new().yes_no(),
    );
    assert_match(&rec, &Interpretation::Yes);
    let rec = recognize(
        degrade(&phone_phrase("no"), 0.0, Some(-40.0)),
        Expectation::new().yes_no(),
    );
    assert_match(&rec, &Interpretation::No);
}

#[test]
fn line_noise_alone_is_not_speech() {
    let rec = recognize(
        degrade(&vec![0i16; 16_000], 0.0, Some(-50.0)),
        bank().yes_no(),
    );
    assert_eq!(rec.outcome, Outcome::NoInput, "{:?}", rec.transcript);
}

#[test]
fn silence_is_no_input() {
    let rec = recognize(vec![0i16; 16_000], bank().yes_no());
    assert_eq!(rec.outcome, Outcome::NoInput);
    assert!(rec.transcript.is_empty());
}

#[test]
fn unrelated_speech_is_no_match() {
    let rec = recognize(phone_phrase("The weather is lovely today"), bank());
    assert!(
        matches!(rec.outcome, Outcome::NoMatch(_)),
        "{:?} ({:?})",
        rec.outcome,
        rec.transcript
    );
}

#[test]
fn missing_model_names_file_and_fix() {
    let path = models_dir().join("does-not-exist.bin");
    let err = WhisperModel::load(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SpeechError::ModelMissing { .. }), "{msg}");
    assert!(
        msg.contains("does-not-exist.bin") && msg.contains("scripts/models/fetch"),
        "{msg}"
    );
}

#[test]
fn corrupt_model_is_an_error_not_a_hang() {
    let good = std::fs::read(models_dir().join(TINY_EN)).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/models/fetch",
            models_dir().join(TINY_EN).display()
        )
    });
    let dir = std::env::temp_dir().join(format!("frontdoor-speech-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("not-ggml", b"<html>404</html>".to_vec()),
        ("bad-hparams", {
            let mut b = good[..4096].to_vec();
            b[4..8].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
            b
        }),
    ];
    for (name, bytes) in cases {
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, bytes).unwrap();
        let err = with_timeout(30, "loading a corrupt model", move || {
            WhisperModel::load(&path).map(|_| ())
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, SpeechError::ModelCorrupt { .. }),
            "{name}: {msg}"
        );
        assert!(
            msg.contains(&format!("{name}.bin")) && msg.contains("scripts/models/fetch"),
            "{msg}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
