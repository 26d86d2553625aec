//! Text-only evaluation of the intent classifier (fast iteration; the reported figures come
//! from the audio path, crates/server/tests/recognize.rs).
//!
//! `cargo run --release -p frontdoor-speech --example intents_eval -- TRAINING.toml DIALPLAN
//! FIXTURE.toml...`: trains on TRAINING (+ the `speech_main` phrases of DIALPLAN) and classifies
//! the text of each fixture's sentences, printing misses and accuracy / false accepts at a few
//! thresholds. Never give it a held-out set that has not been spent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use frontdoor_speech::nlu::{NONE, shared_classifier};

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (training, plan, fixtures) = (&args[0], &args[1], &args[2..]);
    let plan: toml::Table = toml::from_str(&std::fs::read_to_string(plan).unwrap()).unwrap();
    let intents: Vec<(String, Vec<String>)> =
        plan["flows"]["speech"]["steps"]["speech_main"]["intents"]
            .as_table()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let phrases = v["phrases"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_owned())
                    .collect();
                (k.clone(), phrases)
            })
            .collect();
    let t = Instant::now();
    let c = shared_classifier(training, &intents, Path::new("models")).unwrap();
    println!("load + train {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
    let thresholds = [0.5f32, 0.6, 0.7];
    let mut total_ms = 0.0;
    let mut n = 0;
    for f in fixtures {
        let set: toml::Table = toml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let mut cases: Vec<(String, String)> = Vec::new();
        for (k, v) in set["intents"].as_table().unwrap() {
            for p in v.as_array().unwrap() {
                cases.push((k.clone(), p.as_str().unwrap().to_owned()));
            }
        }
        for p in set["none"]["out_of_domain"].as_array().unwrap() {
            cases.push((NONE.to_owned(), p.as_str().unwrap().to_owned()));
        }
        let mut ok = [0u32; 3];
        let mut fa = [0u32; 3];
        let in_domain = cases.iter().filter(|(w, _)| w != NONE).count();
        for (want, text) in &cases {
            let t = Instant::now();
            let scores = c.classify(text);
            total_ms += t.elapsed().as_secs_f64() * 1000.0;
            n += 1;
            let (best, p) = &scores[0];
            for (i, th) in thresholds.iter().enumerate() {
                let accepted = best != NONE && p >= th;
                if accepted && best == want {
                    ok[i] += 1;
                } else if accepted {
                    fa[i] += 1;
                }
            }
            if !(best == want && (want == NONE || *p >= 0.6)) {
                println!(
                    "  {want:<10} {text:<60} -> {best} {p:.2}  ({:?})",
                    &scores[1]
                );
            }
        }
        for (i, th) in thresholds.iter().enumerate() {
            println!(
                "{} @{th}: accuracy {}/{in_domain} = {:.1} %, false accepts {}/{}",
                f.display(),
                ok[i],
                f64::from(ok[i]) * 100.0 / in_domain as f64,
                fa[i],
                cases.len()
            );
        }
    }
    println!("mean classify {:.3} ms", total_ms / f64::from(n.max(1)));
}
