//! Runs the simulator on a TOML file and prints the report and the wall time.
//!
//! `cargo run --release -p frontdoor-acd --example simulate -- crates/acd/examples/sim-center.toml [seed] [--json]`

use frontdoor_acd::sim::{self, SimConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: simulate FILE [SEED] [--json]")?;
    let seed = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let json = args.iter().any(|a| a == "--json");
    let cfg = SimConfig::from_toml_str(&std::fs::read_to_string(path)?)?;
    // Wall time of the run is measured here, outside the sans-IO core.
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    let report = sim::run(&cfg, seed)?;
    let wall = start.elapsed();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        eprintln!("wall time: {:.3} s", wall.as_secs_f64());
    } else {
        print!("{report}");
        println!("wall time: {:.3} s", wall.as_secs_f64());
    }
    Ok(())
}
