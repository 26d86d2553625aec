//! Call recording to stereo WAV files: the writer thread and file naming.
//!
//! The media workers record a leg with the sans-IO `frontdoor_media::record::CallRecorder`
//! and send its chunks of interleaved PCM here over a channel; this thread owns the files.
//! Nothing touches a file on a media worker or on the SIP task.
//!
//! Each file is a valid WAV at all times: the RIFF and `data` sizes in the header are patched
//! after every chunk (two 4-byte `pwrite`s), so a call that ends abruptly — BYE, RTP timeout,
//! even the process being killed — leaves a playable file with everything written so far.
//! Format: RIFF/WAVE, PCM, 2 channels (left = caller, right = engine/agent), 8000 Hz, 16 bits.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use frontdoor_media::record::RecordingSummary;

use crate::events::{EventBody, EventSink};

/// Bytes of the WAV header written before the samples.
pub const WAV_HEADER_LEN: u64 = 44;
/// Channels: left = caller, right = engine/agent.
pub const CHANNELS: u16 = 2;
/// Sample rate.
pub const RATE: u32 = 8000;
/// Largest `data` chunk a RIFF file can describe.
const MAX_DATA: u64 = u32::MAX as u64 - 36;

/// Why a recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The call (its media leg) ended.
    CallEnded,
    /// The engine stopped it.
    Stopped,
    /// It reached `max_duration_s`.
    MaxDuration,
    /// A new recording of the same leg replaced it.
    Restarted,
    /// The server shut down.
    Shutdown,
}

impl StopReason {
    /// The name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::CallEnded => "call_ended",
            StopReason::Stopped => "stopped",
            StopReason::MaxDuration => "max_duration",
            StopReason::Restarted => "restarted",
            StopReason::Shutdown => "shutdown",
        }
    }
}

/// Work for the writer thread.
#[derive(Debug)]
pub enum RecordMsg {
    /// Create the file (sent by the control plane before the leg starts recording).
    Open {
        /// Recording id.
        id: u64,
        /// Where.
        path: PathBuf,
        /// The call, for the events.
        call_id: Arc<str>,
    },
    /// Interleaved stereo samples to append.
    Chunk {
        /// Recording id.
        id: u64,
        /// Left, right, left, ...
        pcm: Vec<i16>,
    },
    /// The recording is over: final header, `recording.stopped`.
    Close {
        /// Recording id.
        id: u64,
        /// Totals from the recorder.
        summary: RecordingSummary,
        /// Why.
        reason: StopReason,
    },
    /// Close everything and end the thread.
    Shutdown,
}

/// The writer thread's handle.
#[derive(Debug)]
pub struct RecordWriter {
    tx: Sender<RecordMsg>,
    join: Option<JoinHandle<()>>,
}

impl RecordWriter {
    /// Starts the thread; it reports `recording.stopped` on `events`.
    pub fn start(events: EventSink) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let join = std::thread::Builder::new()
            .name("recording".into())
            .spawn(move || run(&rx, &events))?;
        Ok(Self {
            tx,
            join: Some(join),
        })
    }

    /// A sender for the media workers.
    pub fn sender(&self) -> Sender<RecordMsg> {
        self.tx.clone()
    }

    /// Queues work.
    pub fn send(&self, msg: RecordMsg) {
        if self.tx.send(msg).is_err() {
            tracing::error!("recording writer is gone");
        }
    }

    /// Closes every open file after the queued work and stops the thread.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(RecordMsg::Shutdown);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `<dir>/<YYYY-MM-DD>/<HHMMSS>-<call-id>.wav`, the Call-ID reduced to `[A-Za-z0-9._-]` (at
/// most 80 characters) so that no Call-ID can leave the directory.
pub fn recording_path(dir: &Path, at: DateTime<Utc>, call_id: &str) -> PathBuf {
    let safe: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let safe = safe.trim_start_matches('.');
    let safe = if safe.is_empty() { "call" } else { safe };
    dir.join(at.format("%Y-%m-%d").to_string())
        .join(format!("{}-{safe}.wav", at.format("%H%M%S")))
}

/// The 44-byte header of a stereo 8 kHz 16-bit PCM WAV with `data_len` bytes of samples.
pub fn wav_header(data_len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let block_align = CHANNELS * 2;
    let fields: [&[u8]; 13] = [
        b"RIFF",
        &data_len.saturating_add(36).to_le_bytes(),
        b"WAVEfmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(), // PCM
        &CHANNELS.to_le_bytes(),
        &RATE.to_le_bytes(),
        &(RATE * u32::from(block_align)).to_le_bytes(),
        &block_align.to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &data_len.to_le_bytes(),
        &[],
    ];
    let mut at = 0;
    for f in fields {
        if let Some(dst) = h.get_mut(at..at + f.len()) {
            dst.copy_from_slice(f);
        }
        at += f.len();
    }
    h
}

struct Open {
    path: PathBuf,
    call_id: Arc<str>,
    file: Option<File>,
    data: u64,
    error: Option<String>,
    scratch: Vec<u8>,
}

impl Open {
    fn fail(&mut self, what: &str, e: &std::io::Error) {
        let msg = format!("{}: {what}: {e}", self.path.display());
        tracing::error!(error = %msg, "call recording");
        self.error.get_or_insert(msg);
        self.file = None;
    }

    fn append(&mut self, pcm: &[i16]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let room = usize::try_from(MAX_DATA.saturating_sub(self.data) / 2).unwrap_or(usize::MAX);
        let take = pcm.len().min(room) & !1; // whole frames
        self.scratch.clear();
        for s in pcm.iter().take(take) {
            self.scratch.extend_from_slice(&s.to_le_bytes());
        }
        if let Err(e) = file.write_all(&self.scratch) {
            return self.fail("write", &e);
        }
        self.data += self.scratch.len() as u64;
        if let Err(e) = self.patch() {
            return self.fail("header", &e);
        }
        if take < pcm.len() {
            self.error
                .get_or_insert_with(|| "WAV size limit (4 GiB) reached".to_owned());
        }
    }

    /// Writes the sizes into the header.
    fn patch(&self) -> std::io::Result<()> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let data = u32::try_from(self.data).unwrap_or(u32::MAX - 36);
        file.write_all_at(&(data + 36).to_le_bytes(), 4)?;
        file.write_all_at(&data.to_le_bytes(), 40)
    }
}

/// Creates `path` (and its directory) with an empty WAV header; never overwrites: a taken
/// name gets `-1`, `-2`, ... before `.wav`.
fn create(path: &Path) -> std::io::Result<(File, PathBuf)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut candidate = path.to_path_buf();
    for n in 1..=100 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(mut f) => {
                f.write_all(&wav_header(0))?;
                return Ok((f, candidate));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                candidate = path.with_file_name(format!("{stem}-{n}.wav"));
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free file name",
    ))
}

fn run(rx: &Receiver<RecordMsg>, events: &EventSink) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            RecordMsg::Open { id, path, call_id } => {
                let mut o = Open {
                    path: path.clone(),
                    call_id,
                    file: None,
                    data: 0,
                    error: None,
                    scratch: Vec::new(),
                };
                match create(&path) {
                    Ok((f, p)) => {
                        o.file = Some(f);
                        o.path = p;
                    }
                    Err(e) => o.fail("create", &e),
                }
                open.insert(id, o);
            }
            RecordMsg::Chunk { id, pcm } => {
                if let Some(o) = open.get_mut(&id) {
                    o.append(&pcm);
                }
            }
            RecordMsg::Close {
                id,
                summary,
                reason,
            } => {
                if let Some(o) = open.remove(&id) {
                    close(o, summary, reason, events);
                }
            }
            RecordMsg::Shutdown => break,
        }
    }
    for (_, o) in open.drain() {
        close(o, RecordingSummary::default(), StopReason::Shutdown, events);
    }
}

fn close(mut o: Open, summary: RecordingSummary, reason: StopReason, events: &EventSink) {
    if let Some(f) = o.file.as_ref() {
        if let Err(e) = f.sync_data() {
            o.fail("sync", &e);
        }
    }
    let frames = o.data / u64::from(CHANNELS * 2);
    events.emit(
        Some(&o.call_id),
        EventBody::RecordingStopped {
            path: o.path.display().to_string(),
            reason: reason.as_str(),
            duration_ms: frames / u64::from(RATE / 1000),
            bytes: if o.file.is_some() || o.data > 0 {
                WAV_HEADER_LEN + o.data
            } else {
                0
            },
            masked_digits: summary.masked_digits,
            masked_ms: summary.masked_frames / u64::from(RATE / 1000),
            late_packets: summary.late_packets,
            error: o.error.take(),
        },
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn paths_are_dated_and_call_ids_cannot_escape() {
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 9, 5, 7).unwrap();
        let p = recording_path(Path::new("/r"), at, "../../etc/passwd@x y");
        assert_eq!(p, Path::new("/r/2026-11-26/090507-_.._etc_passwd_x_y.wav"));
        let p = recording_path(Path::new("/r"), at, "...");
        assert_eq!(p, Path::new("/r/2026-11-26/090507-call.wav"));
    }

    #[test]
    fn header_is_stereo_8k_16bit() {
        let h = wav_header(32_000);
        assert_eq!(&h[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 32_036);
        assert_eq!(&h[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes(h[20..22].try_into().unwrap()), 1);
        assert_eq!(u16::from_le_bytes(h[22..24].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(h[24..28].try_into().unwrap()), 8000);
        assert_eq!(u32::from_le_bytes(h[28..32].try_into().unwrap()), 32_000);
        assert_eq!(u16::from_le_bytes(h[32..34].try_into().unwrap()), 4);
        assert_eq!(u16::from_le_bytes(h[34..36].try_into().unwrap()), 16);
        assert_eq!(&h[36..40], b"data");
        assert_eq!(u32::from_le_bytes(h[40..44].try_into().unwrap()), 32_000);
    }

    #[test]
    fn the_file_is_valid_after_every_chunk_and_names_never_collide() {
        let dir = std::env::temp_dir().join(format!("fd-rec-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let w = RecordWriter::start(EventSink::disabled()).unwrap();
        let path = dir.join("a/b.wav");
        for id in [1, 2] {
            w.send(RecordMsg::Open {
                id,
                path: path.clone(),
                call_id: Arc::from("c"),
            });
        }
        w.send(RecordMsg::Chunk {
            id: 1,
            pcm: vec![1, -1, 2, -2],
        });
        w.send(RecordMsg::Chunk {
            id: 2,
            pcm: vec![7, 7],
        });
        // Not closed: the header already describes what is in the file.
        let wait = |p: &Path, len: u64| {
            for _ in 0..500 {
                if std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) == len {
                    let b = std::fs::read(p).unwrap();
                    if u32::from_le_bytes(b[40..44].try_into().unwrap()) as u64 == len - 44 {
                        return b;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("{} never reached {len} bytes", p.display());
        };
        let a = wait(&path, 52);
        assert_eq!(&a[..44], &wav_header(8));
        assert_eq!(
            a[44..]
                .chunks(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect::<Vec<_>>(),
            vec![1, -1, 2, -2]
        );
        let b = wait(&dir.join("a/b-1.wav"), 48);
        assert_eq!(&b[..44], &wav_header(4));
        w.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
