//! Synthesise text with piper to an 8 kHz mono WAV and print the timing.
//!
//! PIPER_ESPEAKNG_DATA_DIRECTORY=/usr/lib/x86_64-linux-gnu \
//!   cargo run --release -p frontdoor-speech --features piper --example say -- out.wav "Hello"

use std::time::{Duration, Instant};

use frontdoor_speech::{PiperPaths, PiperSynthesizer, Synthesizer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, texts @ ..] = args.as_slice() else {
        panic!("usage: say OUT.wav TEXT...");
    };
    let models = std::env::var_os(frontdoor_speech::MODELS_DIR_ENV).map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"),
        Into::into,
    );
    let t = Instant::now();
    let mut piper = PiperSynthesizer::load(
        &PiperPaths::from_models_dir(&models),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!("load: {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
    let mut all = Vec::new();
    for text in texts {
        let t = Instant::now();
        let pcm = piper
            .synthesize(text, 8000)
            .unwrap_or_else(|e| panic!("{e}"));
        let took = t.elapsed().as_secs_f64();
        let secs = pcm.len() as f64 / 8000.0;
        println!(
            "{text:?}: {:.0} ms audio in {:.0} ms, RTF {:.3}",
            secs * 1000.0,
            took * 1000.0,
            took / secs
        );
        all.extend(pcm);
    }
    let mut wav = Vec::with_capacity(44 + all.len() * 2);
    let data_len = u32::try_from(all.len() * 2).expect("size");
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in all {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(out, wav).expect("write wav");
}
