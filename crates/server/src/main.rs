//! The `frontdoor` command.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use frontdoor::config::{Config, parse_port_range};
use frontdoor::driver::{ServeOptions, serve};
use frontdoor::events::{EventSink, EventTarget};
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
        /// RTP port range LO-HI (overrides the config file).
        #[arg(long)]
        rtp_ports: Option<String>,
        /// Directory of prompt audio files (overrides the config file).
        #[arg(long)]
        prompts: Option<PathBuf>,
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
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
        Command::Serve {
            sip,
            config,
            events,
            rtp_ports,
            prompts,
        } => match run_serve(sip, config, events, rtp_ports, prompts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("frontdoor: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_serve(
    sip: SocketAddr,
    config: Option<PathBuf>,
    events: Option<String>,
    rtp_ports: Option<String>,
    prompts: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(config.as_deref())?;
    let prompt_dir = prompts.unwrap_or_else(|| PathBuf::from(&config.media.prompts));
    let (library, warnings) =
        PromptLibrary::load_dir(&prompt_dir, frontdoor::calls::REQUIRED_PROMPTS)
            .map_err(|e| format!("prompts in {}: {e}", prompt_dir.display()))?;
    for (path, why) in warnings {
        tracing::warn!(path = %path.display(), error = %why, "prompt skipped");
    }
    tracing::info!(count = library.len(), dir = %prompt_dir.display(), "prompts loaded");
    let range = rtp_ports
        .as_deref()
        .unwrap_or(&config.media.rtp_ports)
        .to_owned();
    let rtp_ports = parse_port_range(&range)?;
    let (sink, writer) = match events.as_deref() {
        None => (EventSink::disabled(), None),
        Some("-") => {
            let (s, w) = EventSink::open(EventTarget::Stdout)?;
            (s, Some(w))
        }
        Some(path) => {
            let (s, w) = EventSink::open(EventTarget::File(PathBuf::from(path)))?;
            (s, Some(w))
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(ServeOptions {
        sip,
        config: Arc::new(config),
        rtp_ports,
        events: sink,
        prompts: Arc::new(library),
    }));
    drop(runtime);
    if let Some(w) = writer {
        w.finish();
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
