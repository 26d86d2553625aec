//! Queued callbacks that keep their place: persisted before the caller is told "we will call
//! you", restored in order after a restart (even after SIGKILL), never dialed twice at once
//! and never again once served.
//!
//! Life of an entry:
//!
//! ```text
//!  request ──> waiting ──begin_attempt──> dialing ──finish(Served)──> served
//!                ^  ^                        │
//!                │  └──finish(Failed, retry)─┤
//!                │                           └──finish(Failed, no retry)──> failed
//!                └── recover() at start: an attempt cut short by a crash is recorded as
//!                    `interrupted` and the entry waits again (keeping its place)
//!  waiting ──cancel──> cancelled
//! ```
//!
//! `begin_attempt` moves `waiting → dialing` in one conditional `UPDATE`; a second caller (a
//! retry racing an API cancel, or a second node sharing the database) finds no `waiting`
//! row and is refused, so an entry is never dialed by two parties. A served entry can never
//! be dialed again: only `waiting` rows can be claimed.
//!
//! Durability: every change is one SQLite transaction in WAL mode, committed before the call
//! returns. With `synchronous = NORMAL` a committed transaction survives the process being
//! killed (it is in the WAL in the OS page cache); only an OS crash or power loss can take
//! back the last ones (set `synchronous = FULL` for that).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::sqlite::{SqliteStore, parse_ts, ts};
use crate::{E164, StoreError};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS callbacks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id      TEXT NOT NULL,
    number       TEXT NOT NULL,
    queue        TEXT NOT NULL,
    class        INTEGER NOT NULL,
    enqueued_at  TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    not_before   TEXT,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    context      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS callbacks_by_state ON callbacks (state);
CREATE TABLE IF NOT EXISTS callback_attempts (
    callback_id INTEGER NOT NULL REFERENCES callbacks (id),
    attempt     INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    agent       TEXT,
    outcome     TEXT,
    detail      TEXT,
    PRIMARY KEY (callback_id, attempt)
);
";

/// Id of a callback (the database row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallbackId(pub i64);

/// Where a callback is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// In line (or waiting for its retry time).
    Waiting,
    /// An attempt is under way.
    Dialing,
    /// The customer was reached and served.
    Served,
    /// Given up after the last attempt.
    Failed,
    /// Cancelled (API, or the customer).
    Cancelled,
}

impl CallbackState {
    fn as_str(self) -> &'static str {
        match self {
            CallbackState::Waiting => "waiting",
            CallbackState::Dialing => "dialing",
            CallbackState::Served => "served",
            CallbackState::Failed => "failed",
            CallbackState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => CallbackState::Waiting,
            "dialing" => CallbackState::Dialing,
            "served" => CallbackState::Served,
            "failed" => CallbackState::Failed,
            "cancelled" => CallbackState::Cancelled,
            _ => return None,
        })
    }
}

/// What the caller asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRequest {
    /// Call-ID of the call that asked.
    pub call_id: String,
    /// Number to call back.
    pub number: E164,
    /// Queue (dialplan name).
    pub queue: String,
    /// Priority class (0 regular, higher = VIP tiers).
    pub class: u8,
    /// When the caller first joined the queue: the callback keeps this place.
    pub enqueued_at: DateTime<Utc>,
    /// Screen-pop context (customer, IVR path, reason) as JSON.
    pub context: serde_json::Value,
}

/// A stored callback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Callback {
    /// Id.
    pub id: CallbackId,
    /// Call-ID of the call that asked.
    pub call_id: String,
    /// Number to call back (E.164).
    pub number: String,
    /// Queue.
    pub queue: String,
    /// Priority class.
    pub class: u8,
    /// Original enqueue time (its place in line).
    pub enqueued_at: DateTime<Utc>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// Not to be dialed before this (retry delay, reschedule).
    pub not_before: Option<DateTime<Utc>>,
    /// State.
    pub state: CallbackState,
    /// Attempts begun so far.
    pub attempts: u32,
    /// Screen-pop context.
    pub context: serde_json::Value,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Customer reached and bridged to the agent.
    Served,
    /// No answer, busy, rejected, carrier failure... `retry_at`: when to try again (`None`:
    /// give up).
    Failed {
        /// Why (e.g. `busy`, `no_answer`, `486`).
        reason: String,
        /// Next try, or give up.
        retry_at: Option<DateTime<Utc>>,
    },
}

/// One attempt, for the API and the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// 1-based.
    pub attempt: u32,
    /// When dialing began.
    pub started_at: DateTime<Utc>,
    /// When it ended (`None`: under way).
    pub ended_at: Option<DateTime<Utc>>,
    /// Agent who took it.
    pub agent: Option<String>,
    /// `served`, `failed`, `interrupted` (the process stopped during it).
    pub outcome: Option<String>,
    /// Reason of a failure.
    pub detail: Option<String>,
}

/// Why a callback operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// No such callback.
    #[error("no callback {0}")]
    Unknown(i64),
    /// The callback is not in a state that allows it (e.g. dialing a served one).
    #[error("callback {id} is {state:?}; {op} needs it {needs}")]
    WrongState {
        /// The callback.
        id: i64,
        /// Its state.
        state: CallbackState,
        /// What was tried.
        op: &'static str,
        /// The state needed.
        needs: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for CallbackError {
    fn from(e: rusqlite::Error) -> Self {
        CallbackError::Store(StoreError::Sqlite(e))
    }
}

const COLUMNS: &str = "id, call_id, number, queue, class, enqueued_at, requested_at, not_before, \
                       state, attempts, context";

type RawRow = (
    i64,
    String,
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    String,
    i64,
    String,
);

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn cook(r: RawRow) -> Result<Callback, StoreError> {
    let (id, call_id, number, queue, class, enq, req, nb, state, attempts, context) = r;
    Ok(Callback {
        id: CallbackId(id),
        call_id,
        number,
        queue,
        class: u8::try_from(class).unwrap_or(u8::MAX),
        enqueued_at: parse_ts(&enq)?,
        requested_at: parse_ts(&req)?,
        not_before: nb.as_deref().map(parse_ts).transpose()?,
        // An unknown state word can only come from a newer version: treat as cancelled
        // (never dialed) rather than failing every listing.
        state: CallbackState::parse(&state).unwrap_or(CallbackState::Cancelled),
        attempts: u32::try_from(attempts).unwrap_or(0),
        context: serde_json::from_str(&context)?,
    })
}

impl SqliteStore {
    /// Persists a callback request; when this returns `Ok` the entry is durable and the caller
    /// may be told "we will call you".
    pub fn request_callback(
        &self,
        req: &CallbackRequest,
        now: DateTime<Utc>,
    ) -> Result<CallbackId, StoreError> {
        let conn = self.write();
        conn.execute(
            "INSERT INTO callbacks (call_id, number, queue, class, enqueued_at, requested_at, state, context)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'waiting', ?7)",
            params![
                req.call_id,
                req.number.as_str(),
                req.queue,
                i64::from(req.class),
                ts(&req.enqueued_at),
                ts(&now),
                serde_json::to_string(&req.context)?,
            ],
        )?;
        Ok(CallbackId(conn.last_insert_rowid()))
    }

    /// One callback.
    pub fn callback(&self, id: CallbackId) -> Result<Option<Callback>, StoreError> {
        let row = self
            .read()
            .query_row(
                &format!("SELECT {COLUMNS} FROM callbacks WHERE id = ?1"),
                params![id.0],
                raw,
            )
            .optional()?;
        row.map(cook).transpose()
    }

    /// Callbacks still to be served (waiting or dialing), in line order: class (VIP first),
    /// then original enqueue time, then id.
    pub fn pending_callbacks(&self) -> Result<Vec<Callback>, StoreError> {
        self.list_where("state IN ('waiting', 'dialing')")
    }

    /// Every callback, newest requests last (for the API).
    pub fn all_callbacks(&self, limit: usize) -> Result<Vec<Callback>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM callbacks ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], raw)?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = rows.into_iter().map(cook).collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    fn list_where(&self, cond: &str) -> Result<Vec<Callback>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM callbacks WHERE {cond} ORDER BY class DESC, enqueued_at ASC, id ASC"
        ))?;
        let rows = stmt.query_map([], raw)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(cook).collect()
    }

    fn state_of(
        conn: &rusqlite::Connection,
        id: CallbackId,
    ) -> Result<CallbackState, CallbackError> {
        let s: Option<String> = conn
            .query_row(
                "SELECT state FROM callbacks WHERE id = ?1",
                params![id.0],
                |r| r.get(0),
            )
            .optional()?;
        let s = s.ok_or(CallbackError::Unknown(id.0))?;
        Ok(CallbackState::parse(&s).unwrap_or(CallbackState::Cancelled))
    }

    /// Claims a waiting callback for dialing and records the attempt; returns its number
    /// (1-based). Refused unless the entry is waiting: a served, failed, cancelled or
    /// already-dialing entry is never dialed.
    pub fn begin_attempt(
        &self,
        id: CallbackId,
        agent: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u32, CallbackError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE callbacks SET state = 'dialing', attempts = attempts + 1
             WHERE id = ?1 AND state = 'waiting'",
            params![id.0],
        )?;
        if changed != 1 {
            let state = Self::state_of(&tx, id)?;
            return Err(CallbackError::WrongState {
                id: id.0,
                state,
                op: "dialing",
                needs: "waiting",
            });
        }
        let attempt: i64 = tx.query_row(
            "SELECT attempts FROM callbacks WHERE id = ?1",
            params![id.0],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO callback_attempts (callback_id, attempt, started_at, agent) VALUES (?1, ?2, ?3, ?4)",
            params![id.0, attempt, ts(&now), agent],
        )?;
        tx.commit()?;
        Ok(u32::try_from(attempt).unwrap_or(u32::MAX))
    }

    /// Records how the running attempt ended: served, back in line (with a retry time) or
    /// given up.
    pub fn finish_attempt(
        &self,
        id: CallbackId,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<CallbackState, CallbackError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let state = Self::state_of(&tx, id)?;
        if state != CallbackState::Dialing {
            return Err(CallbackError::WrongState {
                id: id.0,
                state,
                op: "finishing an attempt",
                needs: "dialing",
            });
        }
        let (next, word, detail, not_before) = match outcome {
            AttemptOutcome::Served => (CallbackState::Served, "served", None, None),
            AttemptOutcome::Failed {
                reason,
                retry_at: Some(t),
            } => (
                CallbackState::Waiting,
                "failed",
                Some(reason.as_str()),
                Some(ts(t)),
            ),
            AttemptOutcome::Failed {
                reason,
                retry_at: None,
            } => (CallbackState::Failed, "failed", Some(reason.as_str()), None),
        };
        tx.execute(
            "UPDATE callbacks SET state = ?2, not_before = ?3 WHERE id = ?1",
            params![id.0, next.as_str(), not_before],
        )?;
        tx.execute(
            "UPDATE callback_attempts SET ended_at = ?2, outcome = ?3, detail = ?4
             WHERE callback_id = ?1 AND attempt = (SELECT attempts FROM callbacks WHERE id = ?1)",
            params![id.0, ts(&now), word, detail],
        )?;
        tx.commit()?;
        Ok(next)
    }

    /// At start-up: attempts that were under way when the process stopped are recorded as
    /// `interrupted` and their entries wait again in their place. Returns how many.
    pub fn recover_callbacks(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE callback_attempts SET ended_at = ?1, outcome = 'interrupted'
             WHERE ended_at IS NULL",
            params![ts(&now)],
        )?;
        let n = tx.execute(
            "UPDATE callbacks SET state = 'waiting' WHERE state = 'dialing'",
            [],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Cancels a waiting callback.
    pub fn cancel_callback(&self, id: CallbackId) -> Result<(), CallbackError> {
        let conn = self.write();
        let changed = conn.execute(
            "UPDATE callbacks SET state = 'cancelled' WHERE id = ?1 AND state = 'waiting'",
            params![id.0],
        )?;
        if changed == 1 {
            return Ok(());
        }
        let state = Self::state_of(&conn, id)?;
        Err(CallbackError::WrongState {
            id: id.0,
            state,
            op: "cancelling",
            needs: "waiting",
        })
    }

    /// Moves a waiting callback's earliest dial time (its place in line is kept).
    pub fn reschedule_callback(
        &self,
        id: CallbackId,
        not_before: Option<DateTime<Utc>>,
    ) -> Result<(), CallbackError> {
        let conn = self.write();
        let changed = conn.execute(
            "UPDATE callbacks SET not_before = ?2 WHERE id = ?1 AND state = 'waiting'",
            params![id.0, not_before.as_ref().map(ts)],
        )?;
        if changed == 1 {
            return Ok(());
        }
        let state = Self::state_of(&conn, id)?;
        Err(CallbackError::WrongState {
            id: id.0,
            state,
            op: "rescheduling",
            needs: "waiting",
        })
    }

    /// The attempts of a callback, in order.
    pub fn callback_attempts(&self, id: CallbackId) -> Result<Vec<Attempt>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT attempt, started_at, ended_at, agent, outcome, detail FROM callback_attempts
             WHERE callback_id = ?1 ORDER BY attempt",
        )?;
        let rows = stmt
            .query_map(params![id.0], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(attempt, started, ended, agent, outcome, detail)| {
                Ok(Attempt {
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    started_at: parse_ts(&started)?,
                    ended_at: ended.as_deref().map(parse_ts).transpose()?,
                    agent,
                    outcome,
                    detail,
                })
            })
            .collect()
    }
}
