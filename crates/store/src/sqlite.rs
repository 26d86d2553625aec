//! SQLite implementation of [`CustomerStore`].
//!
//! Concurrency design: one *writer* connection behind a mutex serialises every write (SQLite
//! allows one writer at a time anyway; serialising in-process avoids `SQLITE_BUSY` storms),
//! and a separate *reader* connection behind its own mutex serves lookups. In WAL mode the
//! reader never blocks the writer and vice versa. Both connections set `busy_timeout`, so a
//! second process (e.g. `frontdoor customers import` while the server runs) waits instead of
//! failing. An in-memory store uses its single connection for both.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{CallId, CallRecord, Customer, CustomerStore, E164, StepDigits, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS customers (
    number     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    tier       TEXT,
    vip        INTEGER NOT NULL DEFAULT 0,
    language   TEXT,
    notes      TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS calls (
    call_id     TEXT PRIMARY KEY,
    caller      TEXT,
    dialed      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    answered_at TEXT,
    ended_at    TEXT,
    ivr_path    TEXT NOT NULL,
    digits      TEXT NOT NULL,
    outcome     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_by_caller ON calls (caller, started_at);
PRAGMA user_version = 1;
";

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Customer store in an SQLite file (WAL mode).
#[derive(Debug)]
pub struct SqliteStore {
    writer: Mutex<Connection>,
    reader: Option<Mutex<Connection>>,
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
    // back), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = Connection::open(path)?;
        configure(&writer)?;
        writer.execute_batch(SCHEMA)?;
        writer.execute_batch(crate::callbacks::SCHEMA)?;
        let reader = Connection::open(path)?;
        configure(&reader)?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Some(Mutex::new(reader)),
        })
    }

    /// A private in-memory database (tests, `frontdoor check`).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::callbacks::SCHEMA)?;
        Ok(Self {
            writer: Mutex::new(conn),
            reader: None,
        })
    }

    pub(crate) fn read(&self) -> MutexGuard<'_, Connection> {
        lock(self.reader.as_ref().unwrap_or(&self.writer))
    }

    pub(crate) fn write(&self) -> MutexGuard<'_, Connection> {
        lock(&self.writer)
    }
}

pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

fn upsert(conn: &Connection, c: &Customer) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO customers (number, name, tier, vip, language, notes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(number) DO UPDATE SET name = excluded.name, tier = excluded.tier, vip = excluded.vip,
         language = excluded.language, notes = excluded.notes",
        params![c.number.as_str(), c.name, c.tier, c.vip, c.language, c.notes],
    )?;
    Ok(())
}

struct RawCall {
    call_id: String,
    caller: Option<String>,
    dialed: String,
    started_at: String,
    answered_at: Option<String>,
    ended_at: Option<String>,
    ivr_path: String,
    digits: String,
    outcome: String,
}

impl RawCall {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            call_id: r.get(0)?,
            caller: r.get(1)?,
            dialed: r.get(2)?,
            started_at: r.get(3)?,
            answered_at: r.get(4)?,
            ended_at: r.get(5)?,
            ivr_path: r.get(6)?,
            digits: r.get(7)?,
            outcome: r.get(8)?,
        })
    }

    fn decode(self) -> Result<CallRecord, StoreError> {
        Ok(CallRecord {
            call_id: CallId(self.call_id),
            caller: self.caller.and_then(|c| E164::try_from(c).ok()),
            dialed: self.dialed,
            started_at: parse_ts(&self.started_at)?,
            answered_at: self.answered_at.as_deref().map(parse_ts).transpose()?,
            ended_at: self.ended_at.as_deref().map(parse_ts).transpose()?,
            ivr_path: serde_json::from_str(&self.ivr_path)?,
            digits: serde_json::from_str::<Vec<StepDigits>>(&self.digits)?,
            outcome: self.outcome,
        })
    }
}

const CALL_COLUMNS: &str =
    "call_id, caller, dialed, started_at, answered_at, ended_at, ivr_path, digits, outcome";

type CustomerRow = (String, String, Option<String>, bool, Option<String>, String);

fn customer_from_row(r: &Row<'_>) -> rusqlite::Result<CustomerRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

impl CustomerStore for SqliteStore {
    fn upsert_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        upsert(&self.write(), customer)
    }

    fn upsert_customers(&self, customers: &[Customer]) -> Result<(), StoreError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        for c in customers {
            upsert(&tx, c)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn customer(&self, number: &E164) -> Result<Option<Customer>, StoreError> {
        let conn = self.read();
        let row = conn
            .query_row(
                "SELECT number, name, tier, vip, language, notes FROM customers WHERE number = ?1",
                params![number.as_str()],
                customer_from_row,
            )
            .optional()?;
        Ok(row.map(|(_, name, tier, vip, language, notes)| Customer {
            number: number.clone(),
            name,
            tier,
            vip,
            language,
            notes,
        }))
    }

    fn customer_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .read()
            .query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn record_call(&self, record: &CallRecord) -> Result<(), StoreError> {
        let r = record.redacted();
        let path = serde_json::to_string(&r.ivr_path)?;
        let digits = serde_json::to_string(&r.digits)?;
        self.write().execute(
            &format!(
                "INSERT INTO calls ({CALL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(call_id) DO UPDATE SET caller = excluded.caller, dialed = excluded.dialed,
                 started_at = excluded.started_at, answered_at = excluded.answered_at, ended_at = excluded.ended_at,
                 ivr_path = excluded.ivr_path, digits = excluded.digits, outcome = excluded.outcome"
            ),
            params![
                r.call_id.0,
                r.caller.as_ref().map(E164::as_str),
                r.dialed,
                ts(&r.started_at),
                r.answered_at.as_ref().map(ts),
                r.ended_at.as_ref().map(ts),
                path,
                digits,
                r.outcome
            ],
        )?;
        Ok(())
    }

    fn call(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        let conn = self.read();
        let raw = conn
            .query_row(
                &format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?1"),
                params![id.0],
                RawCall::from_row,
            )
            .optional()?;
        raw.map(RawCall::decode).transpose()
    }

    fn call_count(&self, caller: &E164) -> Result<u64, StoreError> {
        let n: i64 = self.read().query_row(
            "SELECT COUNT(*) FROM calls WHERE caller = ?1",
            params![caller.as_str()],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn total_calls(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .read()
            .query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn recent_calls(&self, caller: &E164, limit: u32) -> Result<Vec<CallRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE caller = ?1 ORDER BY started_at DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![caller.as_str(), limit], RawCall::from_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?.decode()?);
        }
        Ok(out)
    }
}
