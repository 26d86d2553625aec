//! The store threads: every blocking SQLite access (caller lookups, call records) and file
//! write (voicemail WAVs) runs on them, fed by channels, never on the SIP task. Results go back
//! to the SIP task as [`StoreReply`]s; the call waits for its lookup, the SIP task does not.
//!
//! Two threads: caller lookups, which a new call waits for, have their own (`store-lookup`,
//! on the store's read connection), so they never queue behind the writes (`store`: call
//! records, callbacks, WAVs), whose commits, WAL checkpoints (fsync) and file writes can take
//! seconds when the disk is busy. A lookup still sees the writes queued before it (the caller
//! who hung up a moment ago is a returning caller) unless they take longer than
//! [`LOOKUP_WAITS_FOR_WRITES`]; then it goes on without them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use frontdoor_store::{
    CallRecord, CallerIdentity, CallerInfo, CallerProfile, CustomerStore, Region, SqliteStore,
    identify, recognise,
};

/// Work for the store thread.
#[derive(Debug)]
pub enum StoreRequest {
    /// Identify and look up a caller.
    Recognise {
        /// The call.
        key: u64,
        /// SIP facts about the caller.
        info: CallerInfo,
    },
    /// Write a call record.
    Record {
        /// The call.
        key: u64,
        /// The record.
        record: Box<CallRecord>,
    },
    /// Write a recording as a mono 8 kHz 16-bit WAV.
    WriteWav {
        /// The call.
        key: u64,
        /// Where (absolute).
        path: PathBuf,
        /// Samples.
        pcm: Vec<i16>,
    },
    /// A callback operation (crates/server/src/calls/callbacks.rs).
    Callback(crate::calls::callbacks::StoreOp),
}

/// What the store thread reports.
#[derive(Debug)]
pub enum StoreReply {
    /// A caller lookup finished.
    Recognised {
        /// The call.
        key: u64,
        /// The profile (an unknown caller when the store failed).
        profile: Box<CallerProfile>,
    },
    /// A call record was written (or not).
    Recorded {
        /// The call.
        key: u64,
        /// Outcome stored.
        outcome: String,
        /// Error, if the write failed.
        error: Option<String>,
    },
    /// A WAV was written (or not).
    WavWritten {
        /// The call.
        key: u64,
        /// Where.
        path: PathBuf,
        /// Length.
        duration: Duration,
        /// Bytes written.
        bytes: u64,
        /// Error, if the write failed.
        error: Option<String>,
    },
    /// A callback operation finished.
    Callback(crate::calls::callbacks::StoreDone),
}

/// How long a caller lookup waits for the writes queued before it.
pub const LOOKUP_WAITS_FOR_WRITES: Duration = Duration::from_millis(250);

/// Writes done by the writer thread (a count), and its change.
#[derive(Debug, Default)]
struct Done {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Done {
    fn add_one(&self) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// Waits until `n` writes are done or `limit` has passed; whether they are.
    fn wait_for(&self, n: u64, limit: Duration) -> bool {
        let count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, _) = self
            .changed
            .wait_timeout_while(count, limit, |c| *c < n)
            .unwrap_or_else(PoisonError::into_inner);
        *count >= n
    }
}

/// Handle of the store threads; dropping it ends them after the queued work.
#[derive(Debug)]
pub struct StoreThread {
    /// Writes (records, callbacks, WAVs).
    tx: Option<Sender<StoreRequest>>,
    /// Caller lookups, each with the number of writes queued before it.
    lookup_tx: Option<Sender<(StoreRequest, u64)>>,
    /// Writes queued so far.
    sent: AtomicU64,
    joins: Vec<JoinHandle<()>>,
}

impl StoreThread {
    /// Opens `db` (creating it) and starts the threads.
    pub fn start(
        db: &Path,
        region: Region,
        reply: impl Fn(StoreReply) + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let store = Arc::new(SqliteStore::open(db).map_err(|e| format!("{}: {e}", db.display()))?);
        let reply = Arc::new(reply);
        let done = Arc::new(Done::default());
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| e.to_string())
        };
        let (tx, rx) = channel::<StoreRequest>();
        let writer = {
            let (store, reply, done) = (store.clone(), reply.clone(), done.clone());
            spawn(
                "store",
                Box::new(move || {
                    while let Ok(req) = rx.recv() {
                        serve(&store, region, req, &*reply);
                        done.add_one();
                    }
                }),
            )?
        };
        let (lookup_tx, lookup_rx) = channel::<(StoreRequest, u64)>();
        let lookups = spawn(
            "store-lookup",
            Box::new(move || {
                while let Ok((req, after)) = lookup_rx.recv() {
                    if !done.wait_for(after, LOOKUP_WAITS_FOR_WRITES) {
                        tracing::warn!(
                            waited_ms = LOOKUP_WAITS_FOR_WRITES.as_millis(),
                            "caller lookup without the latest writes (the store is slow)"
                        );
                    }
                    serve(&store, region, req, &*reply);
                }
            }),
        )?;
        Ok(Self {
            tx: Some(tx),
            lookup_tx: Some(lookup_tx),
            sent: AtomicU64::new(0),
            joins: vec![writer, lookups],
        })
    }

    /// Queues work: lookups on the lookup thread, the rest on the writer.
    pub fn send(&self, req: StoreRequest) {
        let sent = match req {
            StoreRequest::Recognise { .. } => {
                let after = self.sent.load(Ordering::Relaxed);
                self.lookup_tx
                    .as_ref()
                    .map(|tx| tx.send((req, after)).is_ok())
            }
            _ => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                self.tx.as_ref().map(|tx| tx.send(req).is_ok())
            }
        };
        if sent == Some(false) {
            tracing::error!("store thread is gone");
        }
    }

    /// Finishes the queued work and stops the threads.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx = None;
        self.lookup_tx = None;
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
    }
}

impl Drop for StoreThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one request on the calling store thread.
fn serve(store: &SqliteStore, region: Region, req: StoreRequest, reply: &dyn Fn(StoreReply)) {
    match req {
        StoreRequest::Recognise { key, info } => {
            let identity = identify(&info, region);
            let profile = match recognise(store, identity.clone()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "caller lookup failed; treating the caller as unknown");
                    CallerProfile {
                        identity,
                        customer: None,
                        previous_calls: 0,
                        last_call: None,
                    }
                }
            };
            reply(StoreReply::Recognised {
                key,
                profile: Box::new(profile),
            });
        }
        StoreRequest::Record { key, record } => {
            let error = store.record_call(&record).err().map(|e| e.to_string());
            if let Some(e) = &error {
                tracing::error!(call_id = %record.call_id.0, error = %e, "cannot write the call record");
            }
            reply(StoreReply::Recorded {
                key,
                outcome: record.outcome.clone(),
                error,
            });
        }
        StoreRequest::Callback(op) => {
            if let Some(done) = crate::calls::callbacks::run_op(store, op) {
                reply(StoreReply::Callback(done));
            }
        }
        StoreRequest::WriteWav { key, path, pcm } => {
            let duration = Duration::from_micros(pcm.len() as u64 * 125);
            let bytes = wav_bytes(&pcm);
            let len = bytes.len() as u64;
            let error = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, bytes))
                .err()
                .map(|e| format!("{}: {e}", path.display()));
            if let Some(e) = &error {
                tracing::error!(error = %e, "cannot write the recording");
            }
            reply(StoreReply::WavWritten {
                key,
                path,
                duration,
                bytes: len,
                error,
            });
        }
    }
}

/// A mono 8 kHz 16-bit PCM WAV file.
pub fn wav_bytes(pcm: &[i16]) -> Vec<u8> {
    let data_len = u32::try_from(pcm.len() * 2).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(44 + pcm.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&16000u32.to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// The caller facts of an INVITE: From user, P-Asserted-Identity (trusted only from an
/// allow-listed trunk), Privacy.
pub fn caller_info(from_uri: &str, headers: &[(String, String)], trusted: bool) -> CallerInfo {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let asserted = header("P-Asserted-Identity").map(|v| {
        // `"Name" <sip:+1...@host>;param` → the URI.
        match (v.find('<'), v.find('>')) {
            (Some(a), Some(b)) if a < b => v.get(a + 1..b).unwrap_or_default().to_owned(),
            _ => v.trim().to_owned(),
        }
    });
    CallerInfo {
        from_user: from_uri.to_owned(),
        asserted_user: asserted,
        privacy: header("Privacy"),
        trusted_source: trusted,
    }
}

/// Whether recognition found a usable number (for logs).
pub fn describe(identity: &CallerIdentity) -> String {
    match identity {
        CallerIdentity::Anonymous => "anonymous".to_owned(),
        CallerIdentity::Invalid(e) => format!("invalid ({e})"),
        CallerIdentity::Number(n) => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A store in a fresh folder `frontdoor-store-NAME-PID`, its replies on a channel.
    fn start(name: &str) -> (PathBuf, StoreThread, std::sync::mpsc::Receiver<StoreReply>) {
        let dir =
            std::env::temp_dir().join(format!("frontdoor-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let store = StoreThread::start(&dir.join("store.db"), Region::Nanp, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
        (dir, store, rx)
    }

    #[test]
    fn a_caller_lookup_does_not_wait_for_a_stuck_write() {
        let (dir, store, rx) = start("stuck");
        // A FIFO nobody reads: writing a WAV there blocks the writer thread until we read it.
        let fifo = dir.join("stuck.wav");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        store.send(StoreRequest::WriteWav {
            key: 1,
            path: fifo.clone(),
            pcm: vec![0; 8000],
        });
        store.send(StoreRequest::Recognise {
            key: 2,
            info: caller_info("sip:+14155550123@carrier", &[], false),
        });
        let first = rx.recv_timeout(Duration::from_secs(10));
        // unblock the writer, whatever happened
        let drained = std::fs::read(&fifo).unwrap();
        match first {
            Ok(StoreReply::Recognised { key, profile }) => {
                assert_eq!(key, 2);
                assert_eq!(profile.previous_calls, 0);
            }
            other => panic!("the lookup waited behind the write: {other:?}"),
        }
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(StoreReply::WavWritten {
                key, bytes, error, ..
            }) => {
                assert_eq!((key, error), (1, None));
                assert_eq!(bytes, drained.len() as u64);
            }
            other => panic!("the write did not finish: {other:?}"),
        }
        store.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_caller_lookup_sees_the_record_of_the_call_just_ended() {
        let (dir, store, rx) = start("record");
        let number = "+14155550123";
        for round in 0..20u32 {
            store.send(StoreRequest::Record {
                key: 1,
                record: Box::new(CallRecord {
                    call_id: frontdoor_store::CallId(format!("call-{round}")),
                    caller: Some(frontdoor_store::E164::parse(number, Region::Nanp).unwrap()),
                    dialed: "hotline".into(),
                    started_at: chrono::Utc::now(),
                    answered_at: None,
                    ended_at: None,
                    ivr_path: vec![],
                    digits: vec![],
                    outcome: "hung_up".into(),
                }),
            });
            // sent right after the record, as a caller calling straight back
            store.send(StoreRequest::Recognise {
                key: 2,
                info: caller_info(&format!("sip:{number}@carrier"), &[], false),
            });
            let previous = loop {
                match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                    StoreReply::Recognised { profile, .. } => break profile.previous_calls,
                    StoreReply::Recorded { error, .. } => assert_eq!(error, None),
                    other => panic!("{other:?}"),
                }
            };
            assert_eq!(previous, u64::from(round) + 1, "round {round}");
        }
        store.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wav_header_is_mono_8k_16bit() {
        let w = wav_bytes(&[0, 1000, -1000]);
        assert_eq!(&w[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(w[4..8].try_into().unwrap()), 36 + 6);
        assert_eq!(u16::from_le_bytes(w[22..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(w[24..28].try_into().unwrap()), 8000);
        assert_eq!(u16::from_le_bytes(w[34..36].try_into().unwrap()), 16);
        assert_eq!(w.len(), 44 + 6);
    }

    #[test]
    fn pai_is_used_only_when_trusted() {
        let h = vec![(
            "P-Asserted-Identity".to_owned(),
            "\"Bob\" <sip:+442079460000@carrier>".to_owned(),
        )];
        let info = caller_info("sip:anonymous@x", &h, true);
        assert_eq!(
            info.asserted_user.as_deref(),
            Some("sip:+442079460000@carrier")
        );
        let id = identify(&info, Region::Nanp);
        assert_eq!(id.number().unwrap().as_str(), "+442079460000");
        let id = identify(&caller_info("sip:anonymous@x", &h, false), Region::Nanp);
        assert_eq!(id, CallerIdentity::Anonymous);
    }
}
