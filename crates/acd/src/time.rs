//! Monotonic time as seen by the core.

use serde::{Deserialize, Serialize};
use std::ops::Add;
use std::time::{Duration, Instant};

/// A point on the host's monotonic clock, in nanoseconds since an epoch the host chooses.
///
/// The core never reads a clock: every input carries a `Time`. A live host converts its
/// `Instant`s with [`Time::since`] against one `Instant` captured at start-up; the simulator
/// simply counts simulated nanoseconds from zero. Keeping the core on this plain integer type
/// (rather than `Instant`) lets the simulator run days of traffic without any real clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Time(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `d` after the epoch (saturating at ~584 years).
    pub fn from_duration(d: Duration) -> Self {
        Time(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// `secs` seconds after the epoch; negative or NaN gives the epoch.
    pub fn from_secs_f64(secs: f64) -> Self {
        if secs.is_nan() || secs <= 0.0 {
            Time(0)
        } else {
            Time((secs * 1e9) as u64)
        }
    }

    /// Seconds since the epoch.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Converts a real `Instant` into core time, given the host's epoch `Instant`.
    pub fn since(epoch: Instant, now: Instant) -> Self {
        Self::from_duration(now.saturating_duration_since(epoch))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(add))
    }
}
