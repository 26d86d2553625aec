#![allow(clippy::unwrap_used, missing_docs)]
use std::path::Path;

use frontdoor_ivr::*;

fn dialplans_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dialplans")
}

#[test]
fn hotline_validates() {
    match check_dir(&dialplans_dir(), None) {
        Ok(plans) => {
            assert!(plans.iter().any(|p| p.plan.name == "hotline"));
            for p in &plans {
                assert!(p.warnings.is_empty(), "{:?}", p.warnings);
            }
        }
        Err(d) => panic!(
            "{}",
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

#[test]
fn docs_example_validates() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dialplans.md"),
    )
    .unwrap();
    let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    if let Err(d) = check_str(Path::new("docs-example.toml"), &doc[start..end], None) {
        panic!(
            "{}",
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
