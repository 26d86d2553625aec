//! With the `piper` feature: link sonic (Debian libsonic-dev) statically. espeak-ng, which
//! espeak-rs-sys builds, uses it, but espeak-rs-sys does not emit the link directive.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SONIC_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_PIPER").is_none() {
        return;
    }
    let multiarch = format!(
        "/usr/lib/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    let candidates: Vec<PathBuf> = std::env::var_os("SONIC_LIB_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([multiarch.as_str(), "/usr/lib", "/usr/local/lib"].map(PathBuf::from))
        .collect();
    match candidates.iter().find(|d| d.join("libsonic.a").is_file()) {
        Some(dir) => {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static=sonic");
        }
        None => panic!(
            "feature `piper` needs libsonic.a: install Debian libsonic-dev (or set SONIC_LIB_DIR); looked in {candidates:?}"
        ),
    }
}
