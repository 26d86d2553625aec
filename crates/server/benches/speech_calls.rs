//! Speech turns of concurrent calls: end of speech (the endpointer's decision on the media
//! worker) → the recognition result fed to the interpreter (the routing decision), with N
//! SIPp callers saying "I lost my card" at the same moment after the greeting.
//!
//! `cargo bench --profile dev -p frontdoor --bench speech_calls`: rounds of 1, 2, 4, 6, 8, 10
//! and 12 callers, once with Whisper's initial prompt and once without (a server each).
//! `SPEECH_BENCH_CALLS=10` (or `4,10`) for those rounds only; `SPEECH_BENCH_WORKERS`
//! recogniser threads (default 2); `SPEECH_BENCH_PROMPT=on|off` for one prompt setting;
//! `SPEECH_BENCH_SPECULATE_MS` (default 200, 0 = no speculative recognition). Prints
//! p50/p95/max of end-of-speech → result, the queue wait and decode time per round and how
//! many results were speculative. Needs sipp and the models of `scripts/models/fetch`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/speech_audio.rs"]
mod speech_audio;

use std::time::Duration;

use common::{Server, of_type, repo_root, scenario, sipp};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// piper's espeak-ng phonemizer reads `PIPER_ESPEAKNG_DATA_DIRECTORY` at start: re-run this
/// process with Debian's data folder set when it is not (as the `frontdoor` binary does).
fn espeak_data_env() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "PIPER_ESPEAKNG_DATA_DIRECTORY";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    if let (Some(dir), Ok(exe)) = (
        frontdoor_speech::debian_espeak_data_dir(),
        std::env::current_exe(),
    ) {
        let e = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(VAR, &dir)
            .exec();
        panic!("cannot re-run the benchmark: {e}");
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: not understood")),
        Err(_) => default,
    }
}

fn main() {
    espeak_data_env();
    let workers: usize = env_or("SPEECH_BENCH_WORKERS", 2);
    let speculate: u64 = env_or("SPEECH_BENCH_SPECULATE_MS", 200);
    let rounds: Vec<u32> = match std::env::var("SPEECH_BENCH_CALLS") {
        Ok(v) => v
            .split(',')
            .map(|n| n.trim().parse().expect("SPEECH_BENCH_CALLS: numbers"))
            .collect(),
        Err(_) => vec![1, 2, 4, 6, 8, 10, 12],
    };
    let prompts: Vec<bool> = match std::env::var("SPEECH_BENCH_PROMPT").as_deref() {
        Ok("on") => vec![true],
        Ok("off") => vec![false],
        Ok(v) => panic!("SPEECH_BENCH_PROMPT={v:?}: on or off"),
        Err(_) => vec![true, false],
    };
    let model = repo_root().join("models/ggml-tiny.en.bin");
    assert!(
        model.is_file(),
        "{} missing: run scripts/models/fetch",
        model.display()
    );
    // The greeting of the speech front door takes ~5 s: speak at 8.5 s, after it.
    let pcm = speech_audio::line_pcm(12_000, &[(8_500, "I lost my card.")]);
    let template = std::fs::read_to_string(scenario("ivr-dtmf.xml")).unwrap();
    for (i, prompt) in prompts.into_iter().enumerate() {
        // The callers' pcap ends after 12 s and they send no RTP while they wait for the
        // last results: the RTP timeout (30 s by default) must outlast the longest round.
        let wait_s = 11 + 2 * rounds.iter().max().copied().unwrap_or(1);
        let config = format!(
            "[media]\nrtp_timeout_s = {}\n\
             [speech]\nworkers = {workers}\nqueue = 64\nspeculate_ms = {speculate}\n\
             prompt = {prompt}\nmodel = {:?}\n",
            wait_s + 30,
            model.display().to_string()
        );
        let sip = 30_370 + u16::try_from(i).unwrap();
        let server = Server::start("speech-bench", sip, (30_400, 30_459), &config);
        speech_audio::write_line_pcap(&server.dir.join("bench.pcap"), &pcm);
        println!(
            "speech turns, {workers} recogniser thread(s), tiny.en, initial prompt {}, \
             speculate_ms {speculate}; one utterance per call (\"I lost my card.\", ~1.2 s), \
             all callers speaking at once; load average {}",
            if prompt { "on" } else { "off" },
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        println!(
            "{:>5} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>11} {:>8}",
            "calls",
            "p50 ms",
            "p95 ms",
            "max ms",
            "queue p95",
            "queue max",
            "decode p50",
            "speculative",
            "routed"
        );
        let mut seen = 0usize;
        for &n in &rounds {
            let n_s = n.to_string();
            // The callers stay on the line until every turn can have been recognised (a
            // result for a call that hung up is dropped unreported).
            let xml = template
                .replace("__CALLER__", "bench")
                .replace("__PCAP__", "bench.pcap")
                .replace("__PAUSE_MS__", &(11_000 + 2_000 * n).to_string());
            let sf = server.dir.join(format!("bench-{n}.xml"));
            std::fs::write(&sf, xml).unwrap();
            sipp(
                &server,
                30_390,
                30_300,
                &[
                    "-sf",
                    sf.to_str().unwrap(),
                    "-s",
                    "speech",
                    "-m",
                    &n_s,
                    "-l",
                    &n_s,
                    "-r",
                    "1000",
                ],
            );
            let total = seen + n as usize;
            server.wait_count(Duration::from_secs(60), total, |e| {
                e["type"] == "speech.recognized"
            });
            let events = server.events();
            let rec: Vec<&serde_json::Value> = of_type(&events, "speech.recognized")
                .into_iter()
                .skip(seen)
                .collect();
            seen = total;
            let field = |name: &str| {
                let mut v: Vec<u64> = rec.iter().map(|e| e[name].as_u64().unwrap()).collect();
                v.sort_unstable();
                v
            };
            let end = field("end_to_result_ms");
            let queue = field("queue_ms");
            let decode = field("decode_ms");
            let speculative = rec.iter().filter(|e| e["speculative"] == true).count();
            let routed = rec
                .iter()
                .filter(|e| e["meaning"]["value"] == "lost_card")
                .count();
            println!(
                "{:>5} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>9}/{} {:>5}/{}",
                n,
                percentile(&end, 50.0),
                percentile(&end, 95.0),
                end.last().copied().unwrap_or(0),
                percentile(&queue, 95.0),
                queue.last().copied().unwrap_or(0),
                percentile(&decode, 50.0),
                speculative,
                rec.len(),
                routed,
                rec.len()
            );
        }
        drop(server);
    }
}
