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
