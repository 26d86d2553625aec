//! Frontdoor customer store: customers, call records, CSV import and caller recognition.
//!
//! [`CustomerStore`] is the interface; [`SqliteStore`] the embedded default (SQLite in WAL
//! mode). See `README.md` for the concurrency design.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod callbacks;
mod csv_import;
pub mod ivr_glue;
mod number;
mod sqlite;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use csv_import::{ImportReport, RowError, import_csv};
pub use number::{CallerIdentity, CallerInfo, E164, NumberError, Region, identify, normalize};
pub use sqlite::SqliteStore;

/// Shown instead of digits collected by `sensitive = true` steps.
pub const REDACTED: &str = "[redacted]";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A JSON column could not be encoded/decoded.
    #[error("bad JSON column: {0}")]
    Json(#[from] serde_json::Error),
    /// A stored timestamp is not RFC 3339.
    #[error("bad timestamp in the database: {0}")]
    Timestamp(#[from] chrono::ParseError),
    /// The CSV file could not be read at all (I/O, bad header).
    #[error("CSV error: {0}")]
    Csv(#[from] csv::Error),
    /// The CSV header lacks a required column.
    #[error("CSV header has no `{column}` column")]
    MissingColumn {
        /// The column.
        column: &'static str,
    },
    /// A phone number did not normalise.
    #[error("invalid phone number {input:?}: {reason}")]
    InvalidNumber {
        /// What was given.
        input: String,
        /// Why it failed.
        reason: NumberError,
    },
}

/// SIP Call-ID of a call record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallId(pub String);

/// A customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// E.164 phone number (the key).
    pub number: E164,
    /// Name.
    pub name: String,
    /// Tier (free text, e.g. `gold`).
    pub tier: Option<String>,
    /// VIP customer.
    pub vip: bool,
    /// Preferred language code (`en`, `zh`).
    pub language: Option<String>,
    /// Free-form notes.
    pub notes: String,
}

/// Digits a step collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDigits {
    /// Step name.
    pub step: String,
    /// Digits (stored as [`REDACTED`] when `sensitive`).
    pub digits: String,
    /// Collected by a `sensitive = true` step.
    pub sensitive: bool,
}

/// One call's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Call-ID (the key: recording the same id again updates the record).
    pub call_id: CallId,
    /// Caller, `None` when anonymous/invalid.
    pub caller: Option<E164>,
    /// Dialed number.
    pub dialed: String,
    /// INVITE received.
    pub started_at: DateTime<Utc>,
    /// Answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// IVR steps taken.
    pub ivr_path: Vec<String>,
    /// Digits collected.
    pub digits: Vec<StepDigits>,
    /// Outcome (e.g. `queued`, `transferred`, `abandoned`, `hung_up`).
    pub outcome: String,
}

impl CallRecord {
    /// The record with digits of sensitive steps replaced by [`REDACTED`].
    pub fn redacted(&self) -> CallRecord {
        let mut r = self.clone();
        for d in &mut r.digits {
            if d.sensitive {
                d.digits = REDACTED.to_owned();
            }
        }
        r
    }
}

/// Storage of customers and call records. Implementations are `Send + Sync` and blocking:
/// call them from a blocking thread (e.g. `tokio::task::spawn_blocking`), never from the
/// SIP/RTP hot path.
pub trait CustomerStore: Send + Sync {
    /// Insert or replace a customer.
    fn upsert_customer(&self, customer: &Customer) -> Result<(), StoreError>;
    /// Insert or replace many customers in one transaction.
    fn upsert_customers(&self, customers: &[Customer]) -> Result<(), StoreError>;
    /// A customer by number.
    fn customer(&self, number: &E164) -> Result<Option<Customer>, StoreError>;
    /// Number of customers.
    fn customer_count(&self) -> Result<u64, StoreError>;
    /// Insert or update a call record (sensitive digits are always stored redacted).
    fn record_call(&self, record: &CallRecord) -> Result<(), StoreError>;
    /// A call record by Call-ID.
    fn call(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError>;
    /// Number of call records from this caller.
    fn call_count(&self, caller: &E164) -> Result<u64, StoreError>;
    /// Total number of call records.
    fn total_calls(&self) -> Result<u64, StoreError>;
    /// Most recent calls of a caller, newest first.
    fn recent_calls(&self, caller: &E164, limit: u32) -> Result<Vec<CallRecord>, StoreError>;
}

/// What the IVR needs to know about a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerProfile {
    /// How the caller was identified.
    pub identity: CallerIdentity,
    /// The customer, if the number is known.
    pub customer: Option<Customer>,
    /// Call records from this number before this call.
    pub previous_calls: u64,
    /// When the most recent of those started.
    pub last_call: Option<DateTime<Utc>>,
}

impl CallerProfile {
    /// Has called before (at least one earlier call record).
    pub fn returning(&self) -> bool {
        self.previous_calls > 0
    }

    /// VIP customer.
    pub fn vip(&self) -> bool {
        self.customer.as_ref().is_some_and(|c| c.vip)
    }

    /// Withheld, anonymous or invalid number.
    pub fn anonymous(&self) -> bool {
        self.identity.number().is_none()
    }
}

/// Look the caller up. Call this *before* recording the current call, so `previous_calls`
/// counts earlier calls only. Anonymous and invalid callers are never matched.
pub fn recognise(
    store: &dyn CustomerStore,
    identity: CallerIdentity,
) -> Result<CallerProfile, StoreError> {
    let (customer, previous_calls, last_call) = match identity.number() {
        Some(n) => {
            let previous = store.call_count(n)?;
            let last = if previous > 0 {
                store.recent_calls(n, 1)?.first().map(|r| r.started_at)
            } else {
                None
            };
            (store.customer(n)?, previous, last)
        }
        None => (None, 0, None),
    };
    Ok(CallerProfile {
        identity,
        customer,
        previous_calls,
        last_call,
    })
}
