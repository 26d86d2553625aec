//! The `frontdoor` command.
#![forbid(unsafe_code)]

mod recognize;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use frontdoor::calls::{Originate, OriginateAction};
use frontdoor::config::{Config, parse_port_ranges};
use frontdoor::driver::{ServeOptions, serve};
use frontdoor::events::{EventSink, EventTarget};
use frontdoor::tts::Tts;
use frontdoor_media::prompt::PromptLibrary;

#[derive(Debug, Parser)]
#[command(
    name = "frontdoor",
    version,
    about = "SIP/RTP telephony engine with an IVR and an ACD"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine: SIP over UDP and TCP on one address.
    Serve {
        /// SIP listening address (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: SocketAddr,
        /// Configuration file (TOML). Defaults apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write the event stream (JSON lines) to this file; `-` for stdout.
        #[arg(long)]
        events: Option<String>,
        /// RTP port ranges LO-HI[,LO-HI...] (overrides the config file).
        #[arg(long)]
        rtp_ports: Option<String>,
        /// Directory of prompt audio files (overrides the config file).
        #[arg(long)]
        prompts: Option<PathBuf>,
        /// Directory of dialplans (`*.toml`; default `dialplans`, or `[ivr] dialplans`).
        #[arg(long)]
        dialplans: Option<PathBuf>,
        /// Data directory: SQLite store, recordings, speech cache (default `data`, or
        /// `[store] data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Place one call with the engine's UAC side and play the welcome prompt to it, echo it, or
    /// bridge it to a second call (`--bridge-to`). Events go to stdout as JSON lines; the
    /// command ends when the call does (BYE, `--duration`, Ctrl-C) and exits 0 when it was
    /// answered (and bridged), 1 otherwise.
    Call {
        /// Who to call: a `sip:` URI with an IP-literal host (`sip:agent@127.0.0.1:5070`).
        uri: String,
        /// Bridge the call to a second one placed to this URI once the first is answered.
        #[arg(long, conflicts_with = "echo")]
        bridge_to: Option<String>,
        /// Echo the far end's audio instead of playing the welcome prompt.
        #[arg(long)]
        echo: bool,
        /// Hang up this many seconds after the answer (after the bridge with --bridge-to);
        /// without it the call lasts until the far end hangs up.
        #[arg(long)]
        duration: Option<f64>,
        /// SIP address to send from (UDP and TCP); port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:0")]
        sip: SocketAddr,
        /// Configuration file (`[bridge] timeout_s` is the ring timeout).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where events go: `-` (stdout, the default) or a file.
        #[arg(long, default_value = "-")]
        events: String,
        /// RTP port ranges `LO-HI[,LO-HI...]`.
        #[arg(long)]
        rtp_ports: Option<String>,
        /// Prompt directory.
        #[arg(long)]
        prompts: Option<PathBuf>,
        /// Dialplan directory (validated as by `serve`).
        #[arg(long)]
        dialplans: Option<PathBuf>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate dialplans: every problem of every file with file:line:col and a hint; exit
    /// status 1 when any file is invalid.
    Check {
        /// A dialplan directory or one file.
        #[arg(default_value = "dialplans")]
        path: PathBuf,
        /// Directory of prompt audio files `play` steps refer to.
        #[arg(long, default_value = "prompts")]
        prompts: PathBuf,
    },
    /// Recognise WAV files against a dialplan step's speech input (its intents, yes/no or
    /// digits) with the recognizer calls use (model loaded once); prints one JSON line per
    /// file, in order (with `"file"` when several are given). Exit status 1 on errors (a bad
    /// file is reported on stderr and the others are still recognised).
    Recognize {
        /// The dialplan file (validated first).
        #[arg(long)]
        dialplan: PathBuf,
        /// The step: `STEP` (unique across flows) or `FLOW.STEP`.
        #[arg(long)]
        step: String,
        /// The audio: WAV files, mono or stereo PCM, 8 or 16 kHz (8000..=48000 Hz accepted).
        #[arg(required = true, num_args = 1..)]
        audio: Vec<PathBuf>,
    },
    /// The customer store.
    Customers {
        #[command(subcommand)]
        command: CustomersCommand,
    },
    /// Run the ACD core in simulated time (Poisson arrivals, exponential handle times,
    /// patience, VIP share, callbacks, skills) and print service level, speed of answer and
    /// abandonment beside the Erlang C / Erlang A prediction.
    Simulate {
        /// Simulation file (TOML): traffic, staffing, skills, ACD settings.
        #[arg(long)]
        config: PathBuf,
        /// Random seed (runs are deterministic per seed).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CustomersCommand {
    /// Import customers from CSV (header `phone,name,tier,vip,language,notes`; `phone`
    /// required). Bad rows are reported with their line and skipped; exit status 2 when any
    /// row was rejected, 1 when the file could not be imported at all.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Data directory holding `frontdoor.db`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file (for `[store]`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Region for national-format numbers (overrides `[store] region`).
        #[arg(long)]
        region: Option<String>,
    },
}

/// Points piper's phonemizer (espeak-rs, which reads `PIPER_ESPEAKNG_DATA_DIRECTORY`) at
/// Debian's espeak-ng data when the variable is unset, so neither the run command nor the
/// tests need it. Setting the environment of a running process needs `unsafe` (forbidden
/// here), so the binary re-executes itself with the variable set (`exec`: same process id,
/// same arguments); if that fails it goes on without (piper then reports the missing data and
/// espeak-ng speaks instead).
fn default_espeak_data_env() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "PIPER_ESPEAKNG_DATA_DIRECTORY";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let (Some(dir), Ok(exe)) = (
        frontdoor_speech::debian_espeak_data_dir(),
        std::env::current_exe(),
    ) else {
        return;
    };
    let e = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, &dir)
        .exec();
    eprintln!(
        "frontdoor: cannot re-execute with {VAR}={}: {e}",
        dir.display()
    );
}

fn main() -> ExitCode {
    default_espeak_data_env();
    // ONNX Runtime (piper) logs every graph optimisation pass at info: warnings only, unless
    // RUST_LOG names `ort` itself.
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,whisper_rs=warn"));
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("ort")) {
        if let Ok(d) = "ort=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Simulate { config, seed, json } => match run_simulate(&config, seed, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("frontdoor simulate: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { path, prompts } => run_check(&path, &prompts),
        Command::Recognize {
            dialplan,
            step,
            audio,
        } => {
            let mut failed = false;
            let done = recognize::run_many(&dialplan, &step, &audio, |r| match r {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("frontdoor recognize: {e}");
                    failed = true;
                }
            });
            match done {
                Ok(()) if !failed => ExitCode::SUCCESS,
                Ok(()) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("frontdoor recognize: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Customers {
            command:
                CustomersCommand::Import {
                    file,
                    data_dir,
                    config,
                    region,
                },
        } => run_import(&file, data_dir, config, region),
        Command::Serve {
            sip,
            config,
            events,
            rtp_ports,
            prompts,
            dialplans,
            data_dir,
        } => match run_serve(
            sip, config, events, rtp_ports, prompts, dialplans, data_dir, None,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("frontdoor: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Call {
            uri,
            bridge_to,
            echo,
            duration,
            sip,
            config,
            events,
            rtp_ports,
            prompts,
            dialplans,
            data_dir,
        } => {
            let duration = match duration {
                Some(d) if !(d.is_finite() && d > 0.0 && d < 1e7) => {
                    eprintln!("frontdoor call: --duration must be a positive number of seconds");
                    return ExitCode::FAILURE;
                }
                d => d.map(std::time::Duration::from_secs_f64),
            };
            let action = match (bridge_to, echo) {
                (Some(to), _) => OriginateAction::BridgeTo(to),
                (None, true) => OriginateAction::Echo,
                (None, false) => OriginateAction::Welcome,
            };
            let originate = Originate {
                target: uri,
                action,
                duration,
            };
            match run_serve(
                sip,
                config,
                Some(events),
                rtp_ports,
                prompts,
                dialplans,
                data_dir,
                Some(originate),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("frontdoor call: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_check(path: &std::path::Path, prompts: &std::path::Path) -> ExitCode {
    let result = if path.is_dir() {
        frontdoor_ivr::check_dir(path, Some(prompts))
    } else {
        frontdoor_ivr::check_file(path, Some(prompts)).map(|l| vec![l])
    };
    match result {
        Ok(loaded) => {
            for l in &loaded {
                for w in &l.warnings {
                    println!("{w}");
                }
            }
            let names: Vec<&str> = loaded.iter().map(|l| l.plan.name.as_str()).collect();
            println!(
                "{}: ok ({} dialplan{}: {})",
                path.display(),
                loaded.len(),
                if loaded.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags {
                println!("{d}");
            }
            let errors = diags
                .iter()
                .filter(|d| d.severity == frontdoor_ivr::Severity::Error)
                .count();
            eprintln!("{}: {errors} error(s)", path.display());
            ExitCode::FAILURE
        }
    }
}

fn run_import(
    file: &std::path::Path,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    region: Option<String>,
) -> ExitCode {
    let go = || -> Result<frontdoor_store::ImportReport, Box<dyn std::error::Error>> {
        let config = Config::load(config.as_deref())?;
        let region = match region {
            Some(r) => frontdoor_store::Region::from_code(&r)
                .ok_or_else(|| format!("unknown region {r:?}: expected US, CA, GB or CN"))?,
            None => config.store.region()?,
        };
        let dir = data_dir.unwrap_or_else(|| PathBuf::from(&config.store.data_dir));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let store = frontdoor_store::SqliteStore::open(&dir.join(frontdoor::config::DB_FILE))?;
        let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(frontdoor_store::import_csv(&store, f, region)?)
    };
    match go() {
        Ok(report) => {
            for e in &report.errors {
                println!("{}:{}: error: {}", file.display(), e.line, e.message);
            }
            println!(
                "imported {} customer(s), rejected {} row(s)",
                report.imported,
                report.errors.len()
            );
            if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("frontdoor customers import: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_serve(
    sip: SocketAddr,
    config: Option<PathBuf>,
    events: Option<String>,
    rtp_ports: Option<String>,
    prompts: Option<PathBuf>,
    dialplans: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    originate: Option<Originate>,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(config.as_deref())?;
    config.store.region()?;
    let prompt_dir = prompts.unwrap_or_else(|| PathBuf::from(&config.media.prompts));
    let (library, warnings) =
        PromptLibrary::load_dir(&prompt_dir, frontdoor::calls::REQUIRED_PROMPTS)
            .map_err(|e| format!("prompts in {}: {e}", prompt_dir.display()))?;
    for (path, why) in warnings {
        tracing::warn!(path = %path.display(), error = %why, "prompt skipped");
    }
    tracing::info!(count = library.len(), dir = %prompt_dir.display(), "prompts loaded");
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(&config.store.data_dir));
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let dialplan_dir = dialplans.unwrap_or_else(|| PathBuf::from(&config.ivr.dialplans));
    let tts_cache = config
        .ivr
        .tts_cache
        .as_ref()
        .map_or_else(|| data_dir.join("tts"), PathBuf::from);
    let tts = Arc::new(Tts::new(&config.ivr, tts_cache));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let plans = match frontdoor::plans::load(&dialplan_dir, &prompt_dir, &library, &tts, threads) {
        Ok(p) => p,
        Err(e) => {
            for l in e.lines() {
                eprintln!("{l}");
            }
            return Err(format!(
                "the dialplans in {} are not valid; not starting",
                dialplan_dir.display()
            )
            .into());
        }
    };
    tracing::info!(dir = %dialplan_dir.display(), dialplans = ?plans.names(), "dialplans loaded");
    let range = rtp_ports
        .as_deref()
        .unwrap_or(&config.media.rtp_ports)
        .to_owned();
    let rtp_ports = parse_port_ranges(&range)?;
    // The agent API's WebSocket gets a live copy of the event stream.
    let event_feed = config
        .api
        .listen
        .map(|_| tokio::sync::broadcast::channel::<Arc<str>>(1024).0);
    let (sink, writer) = match (events.as_deref(), &event_feed) {
        (None, None) => (EventSink::disabled(), None),
        (None, Some(feed)) => {
            let (s, w) = EventSink::open_with_feed(EventTarget::Discard, Some(feed.clone()))?;
            (s, Some(w))
        }
        (Some("-"), feed) => {
            let (s, w) = EventSink::open_with_feed(EventTarget::Stdout, feed.clone())?;
            (s, Some(w))
        }
        (Some(path), feed) => {
            let (s, w) =
                EventSink::open_with_feed(EventTarget::File(PathBuf::from(path)), feed.clone())?;
            (s, Some(w))
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let speech = tts.clone();
    let result = runtime.block_on(serve(ServeOptions {
        sip,
        config: Arc::new(config),
        rtp_ports,
        events: sink,
        prompts: Arc::new(library),
        prompt_dir,
        plans: Arc::new(plans),
        tts,
        data_dir,
        originate,
        event_feed,
    }));
    drop(runtime);
    if let Some(w) = writer {
        w.finish();
    }
    // ONNX Runtime crashes the exit if a voice is still loading or speaking on a tts thread.
    if !speech.settle(std::time::Duration::from_secs(5)) {
        tracing::warn!("piper still busy after 5 s; exiting anyway");
    }
    result.map_err(Into::into)
}

fn run_simulate(
    path: &std::path::Path,
    seed: u64,
    json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg = frontdoor_acd::sim::SimConfig::from_toml_str(&text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let start = std::time::Instant::now();
    let report = frontdoor_acd::sim::run(&cfg, seed)?;
    let wall = start.elapsed();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
        println!("wall time: {:.3} s", wall.as_secs_f64());
    }
    Ok(())
}
