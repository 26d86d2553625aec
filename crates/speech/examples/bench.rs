//! Speech performance figures (docs/speech.md, README): recognition real-time factor per
//! utterance on one core, and piper synthesis time to first audio for a 10-word sentence,
//! whole and chunked ([`frontdoor_speech::split_chunks`]).
//!
//! cargo run --release -p frontdoor-speech --features piper --example bench -- [--runs N]
//!     [--piper-threads N] [--piper-opt 0..=3] [--first-words N] [--synthesis-only]
//!
//! `--piper-opt`: ONNX Runtime graph optimisation level (default: ONNX Runtime's, all);
//! `--first-words`: where a long first chunk is cut ([`frontdoor_speech::split_chunks_first`]).
//!
//! Utterances are synthesised by piper (noise off: the same audio every run), resampled to
//! 8 kHz, passed through G.711 mu-law with 300 ms lead / 500 ms tail line silence, and
//! recognised with tiny.en (1 whisper thread = one core) against the hotline's intents.
//! Piper runs with one ONNX Runtime thread, as in the server. Needs `scripts/models/fetch`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use frontdoor_speech::{
    Expectation, PiperPaths, PiperSynthesizer, Recognizer, Synthesizer, WhisperModel,
    WhisperRecognizer,
};

const UTTERANCES: &[&str] = &[
    "I lost my card",
    "I would like to check my balance please",
    "can I talk to a person",
    "please call me back tomorrow morning",
    "what time do you open on Saturday",
    "I want to pay my credit card bill",
    "yes",
    "four one five nine two six three eight",
];

/// Ten words, no punctuation (the chunker cuts it after four words).
const SENTENCE: &str = "Your current balance is four hundred and twenty two dollars";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let mut runs = 5usize;
    let mut piper_threads = 1usize;
    let mut piper_opt: Option<u8> = None;
    let mut synthesis_only = false;
    let mut first_words = frontdoor_speech::synth::FIRST_CUT_WORDS;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--piper-threads" => {
                piper_threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--piper-threads N");
            }
            "--piper-opt" => {
                piper_opt = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--piper-opt 0..=3"),
                );
            }
            "--synthesis-only" => synthesis_only = true,
            "--first-words" => {
                first_words = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--first-words N");
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let models = common::models_dir();
    let t = Instant::now();
    let mut piper = PiperSynthesizer::load_with_options(
        &PiperPaths::from_models_dir(&models),
        Duration::from_secs(60),
        frontdoor_speech::PiperOptions {
            threads: piper_threads,
            optimization: piper_opt,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    piper.set_noise(0.0, 0.0);
    println!(
        "piper voice load: {:.0} ms ({piper_threads} ONNX Runtime thread(s), graph optimisation {})",
        ms(t.elapsed()),
        piper_opt.map_or("default (all)".to_owned(), |o| format!("level {o}"))
    );

    // synthesis: whole sentence vs first chunk
    let words = SENTENCE.split_whitespace().count();
    let chunks = frontdoor_speech::split_chunks_first(SENTENCE, first_words);
    println!("synthesis of a {words}-word sentence {SENTENCE:?}, chunks {chunks:?}");
    let _ = piper.synthesize("Warm up.", 8000);
    let (mut whole, mut first) = (Vec::new(), Vec::new());
    let mut audio_ms = 0.0;
    for _ in 0..runs {
        let t = Instant::now();
        let pcm = piper
            .synthesize(SENTENCE, 8000)
            .unwrap_or_else(|e| panic!("{e}"));
        whole.push(ms(t.elapsed()));
        audio_ms = pcm.len() as f64 / 8.0;
        let t = Instant::now();
        let mut first_at = None;
        for chunk in &chunks {
            let _ = piper
                .synthesize(chunk, 8000)
                .unwrap_or_else(|e| panic!("{e}"));
            first_at.get_or_insert(t.elapsed());
        }
        first.push(first_at.map_or(f64::NAN, ms));
    }
    println!(
        "  whole sentence: {audio_ms:.0} ms audio, median {:.0} ms (min {:.0}) to first audio = all of it, RTF {:.3}",
        median(whole.clone()),
        whole.iter().copied().fold(f64::INFINITY, f64::min),
        median(whole.clone()) / audio_ms
    );
    println!(
        "  chunked: median {:.0} ms (min {:.0}) to the first chunk's audio (goal <= 150 ms)",
        median(first.clone()),
        first.iter().copied().fold(f64::INFINITY, f64::min)
    );

    if synthesis_only {
        return;
    }

    // recognition
    let model = WhisperModel::load(models.join(frontdoor_speech::TINY_EN))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rec = WhisperRecognizer::new(&model).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "recognition: tiny.en, {} whisper thread(s), piper audio through 8 kHz mu-law",
        rec.config().threads
    );
    let expect = Expectation::new()
        .intent("balance", &["check my balance", "account balance"])
        .intent("lost_card", &["I lost my card", "block my card"])
        .intent("payment", &["make a payment", "pay my bill"])
        .intent("agent", &["speak to an agent", "talk to a person"])
        .intent("callback", &["call me back", "request a callback"])
        .intent("hours", &["opening hours", "what time are you open"]);
    let digits = Expectation::new().digits(8, 8);
    let yes_no = Expectation::new().yes_no();
    let (mut total_audio, mut total_wall) = (0.0, 0.0);
    let mut rtfs = Vec::new();
    for text in UTTERANCES {
        let pcm = piper
            .synthesize(text, 8000)
            .unwrap_or_else(|e| panic!("{e}"));
        let line = common::telephone(&pcm, 8000, 300, 500);
        let e = match *text {
            "yes" => &yes_no,
            t if t.starts_with("four") => &digits,
            _ => &expect,
        };
        let mut best: Option<frontdoor_speech::Recognition> = None;
        for _ in 0..runs.min(3) {
            let r = rec
                .recognize(&line, 8000, e)
                .unwrap_or_else(|e| panic!("{e}"));
            if best.as_ref().is_none_or(|b| r.elapsed < b.elapsed) {
                best = Some(r);
            }
        }
        let Some(r) = best else { continue };
        total_audio += f64::from(r.audio_ms);
        total_wall += ms(r.elapsed);
        rtfs.push(f64::from(r.real_time_factor()));
        println!(
            "  {:<42} {:>5} ms audio {:>5.0} ms  RTF {:.3}  heard {:?} -> {:?}",
            format!("{text:?}"),
            r.audio_ms,
            ms(r.elapsed),
            r.real_time_factor(),
            r.transcript,
            r.outcome
        );
    }
    println!(
        "  overall RTF {:.3} (sum of wall / sum of audio, best of {} runs each), median per utterance {:.3}, worst {:.3} (goal <= 0.3)",
        total_wall / total_audio,
        runs.min(3),
        median(rtfs.clone()),
        rtfs.iter().copied().fold(0.0, f64::max)
    );
}
