//! Helpers for tests only.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

/// A base instant for simulated time in tests (the only clock read, and only in tests).
pub(crate) fn t0() -> Instant {
    Instant::now()
}
