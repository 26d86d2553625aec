//! The store thread: every blocking SQLite access (caller lookups, call records) and file
//! write (voicemail WAVs) runs here, fed by a channel, never on the SIP task. Results go back
//! to the SIP task as [`StoreReply`]s; the call waits for its lookup, the SIP task does not.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
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

/// Handle of the store thread; dropping the sender side ends it after the queued work.
#[derive(Debug)]
pub struct StoreThread {
    tx: Option<Sender<StoreRequest>>,
    join: Option<JoinHandle<()>>,
}

impl StoreThread {
    /// Opens `db` (creating it) and starts the thread.
    pub fn start(
        db: &Path,
        region: Region,
        reply: impl Fn(StoreReply) + Send + 'static,
    ) -> Result<Self, String> {
        let store = SqliteStore::open(db).map_err(|e| format!("{}: {e}", db.display()))?;
        let (tx, rx) = channel();
        let join = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || run(store, region, rx, reply))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            tx: Some(tx),
            join: Some(join),
        })
    }

    /// Queues work.
    pub fn send(&self, req: StoreRequest) {
        if let Some(tx) = &self.tx {
            if tx.send(req).is_err() {
                tracing::error!("store thread is gone");
            }
        }
    }

    /// Finishes the queued work and stops the thread.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for StoreThread {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn run(store: SqliteStore, region: Region, rx: Receiver<StoreRequest>, reply: impl Fn(StoreReply)) {
    while let Ok(req) = rx.recv() {
        match req {
            StoreRequest::Recognise { key, info } => {
                let identity = identify(&info, region);
                let profile = match recognise(&store, identity.clone()) {
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
                if let Some(done) = crate::calls::callbacks::run_op(&store, op) {
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
