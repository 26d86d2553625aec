//! Recognise espeak-ng phrases through the telephone path and print transcript, outcome and
//! timing (real-time factor). Used for the timings in docs/speech.md.
//!
//! cargo run --release -p frontdoor-speech --example probe -- [--model PATH] [--threads N]
//!     [--no-prompt] [--no-timestamps] [--pad-after-ms N] [--ctx-margin N] [--min-ctx N]
//!     [--gain-db DB] [--noise-dbfs DBFS] [--only TEXT]

#[path = "../tests/common/mod.rs"]
mod common;

use frontdoor_speech::{Expectation, Recognizer, WhisperConfig, WhisperModel, WhisperRecognizer};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut cfg = WhisperConfig::default();
    let mut model = common::models_dir().join(frontdoor_speech::TINY_EN);
    let mut filter = String::new();
    let (mut gain_db, mut noise_dbfs) = (0.0f32, None);
    while let Some(a) = args.next() {
        let mut num = || {
            args.next()
                .and_then(|v| v.parse::<u32>().ok())
                .expect("number")
        };
        match a.as_str() {
            "--model" => model = args.next().expect("path").into(),
            "--threads" => cfg.threads = u16::try_from(num()).expect("threads"),
            "--no-prompt" => cfg.use_prompt = false,
            "--no-timestamps" => cfg.timestamps = false,
            "--pad-after-ms" => cfg.prep.pad_after_ms = num(),
            "--pad-before-ms" => cfg.prep.pad_before_ms = num(),
            "--ctx-margin" => cfg.audio_ctx_margin = num(),
            "--min-ctx" => cfg.min_audio_ctx = num(),
            "--only" => filter = args.next().expect("text"),
            "--gain-db" => gain_db = args.next().and_then(|v| v.parse().ok()).expect("dB"),
            "--noise-dbfs" => noise_dbfs = args.next().and_then(|v| v.parse().ok()),
            other => panic!("unknown argument {other}"),
        }
    }
    let model = WhisperModel::load(&model).unwrap_or_else(|e| panic!("{e}"));
    let mut rec = WhisperRecognizer::with_config(&model, cfg).expect("state");
    let bank = Expectation::new()
        .intent(
            "lost_card",
            &["I lost my card", "my card was stolen", "block my card"],
        )
        .intent("balance", &["check my balance", "how much money do I have"])
        .intent("agent", &["speak to an agent", "talk to a person"]);
    let cases: Vec<(&str, Expectation)> = vec![
        ("I lost my card", bank.clone()),
        ("I would like to check my balance please", bank.clone()),
        ("Can I talk to a person", bank.clone()),
        ("my card was stolen yesterday", bank.clone()),
        ("The weather is lovely today", bank.clone()),
        ("yes", Expectation::new().yes_no()),
        ("no", Expectation::new().yes_no()),
        ("yes please", Expectation::new().yes_no()),
        ("one two three four", Expectation::new().digits(4, 4)),
        ("five nine zero seven", Expectation::new().digits(4, 4)),
        (
            "eight six seven five three oh nine",
            Expectation::new().digits(7, 7),
        ),
        ("two zero two six", Expectation::new().digits(4, 4)),
        ("three three seven one", Expectation::new().digits(4, 4)),
        (
            "nine eight seven six five four",
            Expectation::new().digits(6, 6),
        ),
        (
            "my pin is four four one two",
            Expectation::new().digits(4, 4),
        ),
    ];
    println!(
        "{:<42} {:<44} {:>4} {:>6} {:>7} {:>6} {:<6} outcome",
        "said", "heard", "p", "audio", "ms", "RTF", ""
    );
    let (mut total_ms, mut total_audio) = (0.0, 0.0);
    for (text, expect) in cases {
        if !text.contains(filter.as_str()) {
            continue;
        }
        let pcm = common::degrade(&common::phone_phrase(text), gain_db, noise_dbfs);
        let r = rec.recognize(&pcm, 8000, &expect).expect("recognize");
        let ms = r.elapsed.as_secs_f64() * 1000.0;
        total_ms += ms;
        total_audio += f64::from(r.audio_ms);
        println!(
            "{:<42} {:<44} {:>4.2} {:>6} {:>7.0} {:>6.3} {:<6} {:?}",
            text,
            format!("{:?}", r.transcript),
            r.asr_probability,
            r.audio_ms,
            ms,
            r.real_time_factor(),
            if r.suspect { "SUSPECT" } else { "" },
            r.outcome
        );
    }
    println!(
        "total: {total_ms:.0} ms for {total_audio:.0} ms audio, RTF {:.3}",
        total_ms / total_audio
    );
}
