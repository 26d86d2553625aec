//! The media engine: worker threads that own the RTP sockets of the calls given to them.
//!
//! Each worker is one thread with one `mio` poll over all of its calls' sockets and a timer
//! wheel with 1 ms slots: a packet is routed by its socket's token straight to the call that
//! owns it (a slab index, no map lookup, no lock), and pacing needs no timer or task per call —
//! each call sits in the wheel slot of its next 20 ms tick, so the work of thousands of calls is
//! spread evenly over every millisecond (a new call takes the least-loaded slot of the next
//! ptime). With calls running a worker wakes once per slot, not per datagram: it sleeps to the
//! slot, sends what is due, then reads every socket that became readable (`epoll_wait` with a
//! zero timeout, one `recvmmsg` per socket until a batch comes back short). RTP sockets are
//! `connect`ed to the remote when media is taken from the SDP address only (no NAT latching),
//! so that a send needs no route lookup. The control plane (the SIP task) talks to a worker
//! over a channel plus a `mio::Waker`; the worker reports back (digits, prompt done, RTP
//! timeout, final statistics) over an unbounded tokio channel. The per-call logic is the
//! sans-IO [`MediaSession`] of `frontdoor-media`.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use frontdoor_media::bridge::{Relay, RelayStats};
use frontdoor_media::call::{ListenConfig, MediaEvent, MediaSession, MediaStats, RxOutcome};
use frontdoor_media::dtmf::{Digit, DtmfSource};
use frontdoor_media::latch::LatchMode;
use frontdoor_media::prompt::Prompt;
use frontdoor_media::record::RecordConfig;
use frontdoor_media::rtp::{PayloadKind, parse_rtp};
use frontdoor_media::vad::VadEvent;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6, SockaddrLike, recvmmsg};
use slab::Slab;
use tokio::sync::mpsc::UnboundedSender;

use crate::recording::{RecordMsg, StopReason};

/// Identifies a call leg between the control plane and the media engine.
pub type LegKey = u64;

const WAKER: Token = Token(usize::MAX);
/// Wheel slots, 1 ms each; must exceed the longest ptime (60 ms) for one lap per tick.
const WHEEL: usize = 128;
const SLOT: Duration = Duration::from_millis(1);
/// Datagrams read per `recvmmsg`. A leg's socket rarely holds more than one (one packet per
/// ptime), so the usual batch comes back short, which also says that the queue is empty: one
/// system call per packet received, not a second one to learn `EAGAIN`.
const RX_BATCH: usize = 8;
/// Batches read from one socket per pass; what is left is read on the next pass (≤ 1 ms on),
/// so that a flooded socket cannot hold up the others or the sends.
const RX_ROUNDS: usize = 4;
/// Largest datagram read whole (RTP here is 172 bytes).
const RX_BUF: usize = 2048;
/// Ready sockets read between two looks at the wheel: sends due meanwhile go first.
const RX_CHECK_EVERY: usize = 64;

/// A new call leg for the engine.
#[derive(Debug)]
pub struct LegSpec {
    /// The control plane's key for this leg.
    pub key: LegKey,
    /// RTP socket (bound, the even port).
    pub rtp: std::net::UdpSocket,
    /// RTCP socket (the odd port above).
    pub rtcp: Option<std::net::UdpSocket>,
    /// The session (negotiated codec, remote, latching, ...).
    pub session: Box<MediaSession>,
}

/// Commands from the control plane.
#[derive(Debug)]
pub enum Command {
    /// Start a leg.
    Add(Box<LegSpec>),
    /// Queue prompts to play, in order; [`Note::PromptDone`] with this playback id comes
    /// when the queue has played out (not after [`Command::StopPlayback`]).
    Play(LegKey, u64, Vec<Prompt>),
    /// Stop playing (barge-in); queued prompts are dropped.
    StopPlayback(LegKey),
    /// What to play when nothing is queued (hold audio); `None` = silence.
    SetIdle(LegKey, Option<Prompt>),
    /// Return the caller's audio to them.
    SetEcho(LegKey, bool),
    /// New remote address from a re-INVITE.
    SetRemote(LegKey, SocketAddr),
    /// Hold (no RTP expected, no timeout) or resume.
    SetHold(LegKey, bool),
    /// A SIP INFO body carrying DTMF.
    Info(LegKey, String, bytes::Bytes),
    /// Send a DTMF digit as RFC 4733.
    SendDtmf(LegKey, Digit),
    /// Record the caller's audio (decoded, placed by RTP timestamp: reordering-safe, gaps
    /// are silence) for at most this long; [`Note::Recorded`] brings the samples.
    Record(LegKey, Duration),
    /// Stop the recording now.
    StopRecord(LegKey),
    /// Record the call in stereo (caller left, what the leg sends right); the audio goes in
    /// chunks to the recording writer, never touching a file on the worker.
    RecordCall(LegKey, Box<CallRecording>),
    /// Stop the stereo recording (it also stops at its maximum length and with the leg).
    StopRecordCall(LegKey),
    /// End the leg; its final statistics come back as [`Note::Ended`] (after a
    /// [`Note::Recorded`] if a recording was running).
    Remove(LegKey),
    /// Bridge two legs of the same worker (see [`MediaEngine::add_beside`]): each leg's
    /// received RTP is relayed on the other's stream ([`frontdoor_media::bridge`]), inside the
    /// worker, with no lock and no jitter buffer. [`Note::Bridged`] confirms it.
    Bridge(LegKey, LegKey),
    /// Undo a bridge (either leg's key): both legs go back to prompts/silence.
    /// [`Note::Unbridged`] reports what was relayed. Removing a bridged leg unbridges too.
    Unbridge(LegKey),
    /// Start a speech turn (`MediaSession::listen`): endpointing, and barge-in on the prompts
    /// when `cfg.barge_in` is set. Send it before the step's `Play`. A new turn replaces one.
    Listen {
        /// Leg.
        key: LegKey,
        /// Endpointer and barge-in settings.
        cfg: ListenConfig,
    },
    /// Drop the speech turn (a key was pressed, the step ended).
    StopListening(LegKey),
}

/// What a worker reports.
#[derive(Debug)]
pub enum Note {
    /// A key press, de-duplicated across sources.
    Dtmf {
        /// Leg.
        key: LegKey,
        /// The key.
        digit: char,
        /// `rfc4733`, `info` or `inband`.
        source: &'static str,
        /// How long it was held, when known.
        duration_ms: Option<u64>,
    },
    /// The prompts queued with `Play` finished.
    PromptDone {
        /// Leg.
        key: LegKey,
        /// Playback id of the last `Play`.
        id: u64,
    },
    /// A recording ended (stop, maximum length or end of the leg).
    Recorded {
        /// Leg.
        key: LegKey,
        /// Mono 8 kHz samples.
        pcm: Vec<i16>,
    },
    /// No RTP for the configured time (and not on hold).
    Timeout {
        /// Leg.
        key: LegKey,
    },
    /// Latched to a new source (NAT).
    Latched {
        /// Leg.
        key: LegKey,
        /// The source now used.
        addr: SocketAddr,
    },
    /// The leg is gone; its final statistics.
    Ended {
        /// Leg.
        key: LegKey,
        /// Statistics.
        stats: Box<MediaStats>,
    },
    /// Two legs are bridged (relaying).
    Bridged {
        /// One leg.
        key: LegKey,
        /// The other.
        peer: LegKey,
    },
    /// A bridge ended; relay counters per direction.
    Unbridged {
        /// One leg.
        key: LegKey,
        /// The other.
        peer: LegKey,
        /// What `key` received and was sent on `peer`.
        forward: RelayStats,
        /// What `peer` received and was sent on `key`.
        backward: RelayStats,
    },
    /// The caller started speaking in a speech turn (`barge_in`: it stopped a prompt).
    SpeechStarted {
        /// Leg.
        key: LegKey,
        /// Reported by the barge-in detector (the prompt was stopped).
        barge_in: bool,
    },
    /// Nothing was said within the turn's no-input time.
    SpeechNoInput {
        /// Leg.
        key: LegKey,
    },
    /// The caller paused inside an utterance (`speculate` of silence): the utterance so far,
    /// for a speculative recognition.
    SpeechPaused {
        /// Leg.
        key: LegKey,
        /// 8 kHz mono PCM up to the pause (a copy; the endpointer goes on).
        pcm: Vec<i16>,
    },
    /// Speech again after [`Note::SpeechPaused`].
    SpeechResumed {
        /// Leg.
        key: LegKey,
    },
    /// The endpointer ended an utterance: the audio for the recogniser.
    Utterance {
        /// Leg.
        key: LegKey,
        /// 8 kHz mono PCM (pre-roll, speech, a little trailing silence), moved out.
        pcm: Vec<i16>,
        /// When the worker saw the end-of-speech decision (the latency clock's start).
        decided: Instant,
        /// Speech length (onset to the end of the last speech frame), milliseconds.
        speech_ms: u64,
    },
    /// A command named a leg that does not exist, or the leg's sockets failed.
    Failed {
        /// Leg.
        key: LegKey,
        /// Why.
        reason: String,
    },
}

/// A stereo call recording handed to a worker.
#[derive(Debug)]
pub struct CallRecording {
    /// The writer's id of this recording (its file was opened with [`RecordMsg::Open`]).
    pub id: u64,
    /// Masking, maximum length.
    pub config: RecordConfig,
    /// The recording writer.
    pub sink: Sender<RecordMsg>,
}

struct WorkerHandle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
    join: Option<JoinHandle<()>>,
    /// Commands were queued since the last [`MediaEngine::flush`].
    pending: bool,
}

/// The engine: a fixed set of worker threads; legs are spread over them.
pub struct MediaEngine {
    workers: Vec<WorkerHandle>,
    placement: HashMap<LegKey, usize>,
    next: usize,
}

impl std::fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEngine")
            .field("workers", &self.workers.len())
            .field("legs", &self.placement.len())
            .finish()
    }
}

impl MediaEngine {
    /// Starts `threads` workers reporting to `notes`.
    pub fn start(threads: usize, notes: UnboundedSender<Note>) -> std::io::Result<Self> {
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = channel();
            let notes = notes.clone();
            let join = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || Worker::new(poll, rx, notes).run())?;
            workers.push(WorkerHandle {
                tx,
                waker,
                join: Some(join),
                pending: false,
            });
        }
        Ok(Self {
            workers,
            placement: HashMap::new(),
            next: 0,
        })
    }

    /// Legs running.
    pub fn legs(&self) -> usize {
        self.placement.len()
    }

    /// Sends a command to the worker that owns its leg (a new leg goes round-robin).
    pub fn send(&mut self, cmd: Command) {
        let (idx, remove) = match &cmd {
            Command::Add(spec) => {
                let idx = self.next % self.workers.len();
                self.next = self.next.wrapping_add(1);
                self.placement.insert(spec.key, idx);
                (Some(idx), None)
            }
            Command::Remove(key) => (self.placement.get(key).copied(), Some(*key)),
            Command::Bridge(k, _) | Command::Unbridge(k) => (self.placement.get(k).copied(), None),
            Command::Play(k, _, _)
            | Command::Record(k, _)
            | Command::StopRecord(k)
            | Command::RecordCall(k, _)
            | Command::StopRecordCall(k)
            | Command::StopPlayback(k)
            | Command::SetIdle(k, _)
            | Command::SetEcho(k, _)
            | Command::SetRemote(k, _)
            | Command::SetHold(k, _)
            | Command::Info(k, _, _)
            | Command::SendDtmf(k, _)
            | Command::Listen { key: k, .. }
            | Command::StopListening(k) => (self.placement.get(k).copied(), None),
        };
        if let Some(key) = remove {
            self.placement.remove(&key);
        }
        let Some(w) = idx.and_then(|i| self.workers.get_mut(i)) else {
            return;
        };
        if w.tx.send(cmd).is_ok() {
            w.pending = true;
        }
    }

    /// Starts a leg on the worker that owns `beside` (round-robin when `beside` is unknown),
    /// so that the two can be bridged ([`Command::Bridge`]) without crossing threads.
    pub fn add_beside(&mut self, spec: Box<LegSpec>, beside: LegKey) {
        let Some(&idx) = self.placement.get(&beside) else {
            return self.send(Command::Add(spec));
        };
        self.placement.insert(spec.key, idx);
        if let Some(w) = self.workers.get_mut(idx) {
            if w.tx.send(Command::Add(spec)).is_ok() {
                w.pending = true;
            }
        }
    }

    /// Wakes the workers that have commands queued. The control plane calls this once after
    /// each batch of work rather than per command: a wake-up is a syscall and, on a busy core,
    /// a context switch.
    pub fn flush(&mut self) {
        for w in &mut self.workers {
            if std::mem::take(&mut w.pending) {
                let _ = w.waker.wake();
            }
        }
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        for w in &mut self.workers {
            // Closing the channel stops the worker.
            let (dead_tx, _) = channel();
            w.tx = dead_tx;
            let _ = w.waker.wake();
        }
        for w in &mut self.workers {
            if let Some(j) = w.join.take() {
                let _ = j.join();
            }
        }
    }
}

struct Leg {
    key: LegKey,
    generation: u64,
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
    rtcp_remote: Option<SocketAddr>,
    session: Box<MediaSession>,
    playing: Option<u64>,
    timed_out: bool,
    recording: Option<Recording>,
    /// Bridged: where this leg's received RTP goes.
    bridge: Option<BridgeSide>,
    /// The stereo call recording's id and writer, while one runs.
    call_recording: Option<(u64, Sender<RecordMsg>)>,
    /// The RTP socket is `connect`ed to the remote: `send`, no per-packet route lookup.
    connected: bool,
    /// The sockets are IPv6 (the address type `recvmmsg` fills in).
    v6: bool,
}

/// One direction of a bridge, held by the receiving leg.
struct BridgeSide {
    peer: usize,
    peer_generation: u64,
    peer_key: LegKey,
    /// Relays what this leg receives onto the peer's stream.
    relay: Relay,
}

/// A recording in progress: samples placed by RTP timestamp.
struct Recording {
    started: Instant,
    deadline: Instant,
    max_samples: usize,
    first_ts: Option<u32>,
    pcm: Vec<i16>,
}

impl Recording {
    fn new(now: Instant, max: Duration) -> Self {
        let max_samples = usize::try_from(max.as_millis().saturating_mul(8)).unwrap_or(usize::MAX);
        Self {
            started: now,
            deadline: now + max,
            max_samples,
            first_ts: None,
            pcm: Vec::new(),
        }
    }

    fn push(&mut self, ts: u32, samples: &[i16]) {
        let first = *self.first_ts.get_or_insert(ts);
        let offset = ts.wrapping_sub(first);
        // Packets from before the start (reordered) or absurd jumps are not recorded.
        if offset > u32::MAX / 2 {
            return;
        }
        let Ok(at) = usize::try_from(offset) else {
            return;
        };
        if at >= self.max_samples {
            return;
        }
        let end = (at + samples.len()).min(self.max_samples);
        if self.pcm.len() < end {
            self.pcm.resize(end, 0);
        }
        if let (Some(dst), Some(src)) = (self.pcm.get_mut(at..end), samples.get(..end - at)) {
            dst.copy_from_slice(src);
        }
    }

    /// The samples, padded with silence to the time it ran (the caller may have sent no RTP).
    fn finish(mut self, now: Instant) -> Vec<i16> {
        let ran = usize::try_from(
            now.saturating_duration_since(self.started)
                .as_millis()
                .saturating_mul(8),
        )
        .unwrap_or(usize::MAX)
        .min(self.max_samples);
        if self.pcm.len() < ran {
            self.pcm.resize(ran, 0);
        }
        self.pcm
    }
}

struct Worker {
    poll: Poll,
    rx: Receiver<Command>,
    notes: UnboundedSender<Note>,
    legs: Slab<Leg>,
    by_key: HashMap<LegKey, usize>,
    wheel: Vec<Vec<(usize, u64)>>,
    base: Instant,
    /// The next wheel slot (ms since base) not yet processed.
    cursor: u64,
    generation: u64,
    /// Relayed packets waiting to be sent (reused).
    relay_out: Vec<bytes::Bytes>,
    batch: RxBatch,
    /// Sockets whose last read filled every batch: read again on the next pass (epoll is
    /// edge-triggered, it will not report them again for what is already queued).
    again: Vec<usize>,
    again_spare: Vec<usize>,
    /// The spare list for [`Self::advance`].
    due: Vec<(usize, u64)>,
}

/// Receive buffers for `recvmmsg`, reused for every read.
struct RxBatch {
    bufs: Box<[[u8; RX_BUF]; RX_BATCH]>,
    v4: MultiHeaders<SockaddrIn>,
    v6: MultiHeaders<SockaddrIn6>,
    /// Length and source of each datagram of the last batch.
    meta: [(usize, Option<SocketAddr>); RX_BATCH],
}

impl RxBatch {
    fn new() -> Self {
        Self {
            bufs: Box::new([[0; RX_BUF]; RX_BATCH]),
            v4: MultiHeaders::preallocate(RX_BATCH, None),
            v6: MultiHeaders::preallocate(RX_BATCH, None),
            meta: [(0, None); RX_BATCH],
        }
    }

    /// One `recvmmsg` (non-blocking) on `fd`: how many datagrams it read, up to [`RX_BATCH`];
    /// fewer means the socket's queue is now empty. `EAGAIN` when it was empty already.
    fn recv(&mut self, fd: RawFd, v6: bool) -> nix::Result<usize> {
        if v6 {
            recv_batch(fd, &mut self.v6, &mut self.bufs, &mut self.meta)
        } else {
            recv_batch(fd, &mut self.v4, &mut self.bufs, &mut self.meta)
        }
    }

    /// Datagram `i` of the last batch and its source.
    fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let (len, src) = *self.meta.get(i)?;
        let data = self.bufs.get(i)?.get(..len.min(RX_BUF))?;
        Some((data, src?))
    }
}

fn recv_batch<S>(
    fd: RawFd,
    hdrs: &mut MultiHeaders<S>,
    bufs: &mut [[u8; RX_BUF]; RX_BATCH],
    meta: &mut [(usize, Option<SocketAddr>); RX_BATCH],
) -> nix::Result<usize>
where
    S: SockaddrLike + Copy + Into<SocketAddr>,
{
    let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
    let msgs = recvmmsg(fd, hdrs, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
    let mut n = 0;
    for (m, slot) in msgs.zip(meta.iter_mut()) {
        *slot = (m.bytes, m.address.map(Into::into));
        n += 1;
    }
    Ok(n)
}

/// With SDP latching a leg takes media only from the remote in the SDP, so its RTP socket is
/// `connect`ed to it: each send skips the route and socket lookups, and the kernel drops
/// other sources before they reach the worker. With NAT latching the socket stays
/// unconnected: a new source must reach the latch (after the current one fell silent).
fn connect_rtp(sock: &UdpSocket, session: &MediaSession) -> bool {
    let remote = session.remote_addr();
    if !matches!(session.latch_mode(), LatchMode::Sdp)
        || remote.ip().is_unspecified()
        || remote.port() == 0
    {
        return false;
    }
    sock.connect(remote).is_ok()
}

/// The least-loaded of the `span` wheel slots from `first` on (the earliest of equals).
fn least_loaded_slot(wheel: &[Vec<(usize, u64)>], first: u64, span: u64) -> u64 {
    (first..first.saturating_add(span.max(1)))
        .min_by_key(|&s| {
            usize::try_from(s % WHEEL as u64)
                .ok()
                .and_then(|i| wheel.get(i))
                .map_or(0, Vec::len)
        })
        .unwrap_or(first)
}

impl Worker {
    fn new(poll: Poll, rx: Receiver<Command>, notes: UnboundedSender<Note>) -> Self {
        let base = Instant::now();
        Self {
            poll,
            rx,
            notes,
            legs: Slab::new(),
            by_key: HashMap::new(),
            wheel: vec![Vec::new(); WHEEL],
            base,
            cursor: 0,
            generation: 0,
            relay_out: Vec::with_capacity(8),
            batch: RxBatch::new(),
            again: Vec::new(),
            again_spare: Vec::new(),
            due: Vec::new(),
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// The first slot that starts at or after `t`.
    fn ms_ceil(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.base);
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if d.subsec_nanos() % 1_000_000 == 0 {
            ms
        } else {
            ms.saturating_add(1)
        }
    }

    /// When wheel slot `slot` starts.
    fn slot_time(&self, slot: u64) -> Instant {
        self.base + SLOT * u32::try_from(slot).unwrap_or(u32::MAX)
    }

    /// The start of the least-loaded wheel slot within one `ptime` from `now`: a new leg's
    /// phase in the ptime cycle, so that legs added together (a burst of calls, or a caller
    /// placing them at a steady rate) do not bunch in a few slots.
    fn place(&self, now: Instant, ptime: Duration) -> Instant {
        let first = self.ms_ceil(now).max(self.cursor);
        let span = u64::try_from(ptime.as_millis())
            .unwrap_or(1)
            .clamp(1, WHEEL as u64 - 1);
        self.slot_time(least_loaded_slot(&self.wheel, first, span))
    }

    fn schedule(&mut self, idx: usize, generation: u64, due: Instant) {
        // Never schedule into a slot already passed: the earliest is the cursor. A due time
        // inside a slot goes to the next slot, so that the leg is never run before it is due.
        let slot = self.ms_ceil(due).max(self.cursor);
        let lap_end = self.cursor + WHEEL as u64 - 1;
        let slot = slot.min(lap_end);
        if let Some(s) = self.wheel.get_mut((slot % WHEEL as u64) as usize) {
            s.push((idx, generation));
        }
    }

    /// The loop. With legs running it wakes once per 1 ms slot, not per datagram: it sleeps
    /// to the start of the next slot, sends what is due, then reads every socket that became
    /// readable meanwhile (`epoll_wait` with a zero timeout) and applies the commands. With
    /// no legs it sleeps until a command comes.
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.legs.is_empty() {
                self.again.clear();
                None
            } else {
                let next = self.slot_time(self.cursor);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media poll failed");
                    return;
                }
            }
            // Sends first: their timing is what the far end sees.
            self.advance(Instant::now());
            let mut now = Instant::now();
            let mut read = 0usize;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                self.readable(now, ev.token().0);
                read += 1;
                if read % RX_CHECK_EVERY == 0 {
                    now = Instant::now();
                    self.advance(now);
                }
            }
            if !self.again.is_empty() {
                std::mem::swap(&mut self.again, &mut self.again_spare);
                let mut again = std::mem::take(&mut self.again_spare);
                for &token in &again {
                    self.readable(now, token);
                }
                again.clear();
                self.again_spare = again;
            }
            if !self.commands(Instant::now()) {
                return;
            }
        }
    }

    /// Applies queued commands; false when the engine is gone.
    fn commands(&mut self, now: Instant) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => self.command(now, cmd),
                Err(std::sync::mpsc::TryRecvError::Empty) => return true,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn with_leg(&mut self, key: LegKey, f: impl FnOnce(&mut Leg, Instant), now: Instant) {
        if let Some(leg) = self.by_key.get(&key).and_then(|&i| self.legs.get_mut(i)) {
            f(leg, now);
        }
    }

    fn command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Add(spec) => self.add(now, *spec),
            Command::Play(key, id, prompts) => self.with_leg(
                key,
                |leg, _| {
                    for p in prompts {
                        leg.session.play(p);
                    }
                    leg.playing = leg.session.is_playing().then_some(id);
                },
                now,
            ),
            Command::StopPlayback(key) => self.with_leg(
                key,
                |leg, _| {
                    leg.session.stop_prompts();
                    leg.playing = None;
                },
                now,
            ),
            Command::Record(key, max) => self.with_leg(
                key,
                |leg, now| leg.recording = Some(Recording::new(now, max)),
                now,
            ),
            Command::StopRecord(key) => {
                let notes = self.notes.clone();
                self.with_leg(key, |leg, now| finish_recording(leg, now, &notes), now);
            }
            Command::RecordCall(key, rec) => {
                let CallRecording { id, config, sink } = *rec;
                match self.by_key.get(&key).and_then(|&i| self.legs.get_mut(i)) {
                    Some(leg) => {
                        finish_call_recording(leg, StopReason::Restarted);
                        leg.session.start_recording(config);
                        leg.call_recording = Some((id, sink));
                    }
                    None => {
                        // The leg is gone already: close the file the control plane opened.
                        let _ = sink.send(RecordMsg::Close {
                            id,
                            summary: Default::default(),
                            reason: StopReason::CallEnded,
                        });
                    }
                }
            }
            Command::StopRecordCall(key) => self.with_leg(
                key,
                |leg, _| finish_call_recording(leg, StopReason::Stopped),
                now,
            ),
            Command::SetIdle(key, p) => {
                self.with_leg(key, |leg, _| leg.session.set_idle_audio(p), now)
            }
            Command::SetEcho(key, on) => self.with_leg(key, |leg, _| leg.session.set_echo(on), now),
            Command::SetRemote(key, addr) => self.with_leg(
                key,
                |leg, _| {
                    leg.session.set_remote(addr);
                    leg.connected = connect_rtp(&leg.rtp, &leg.session);
                    leg.rtcp_remote = Some(SocketAddr::new(addr.ip(), addr.port().wrapping_add(1)));
                },
                now,
            ),
            Command::SetHold(key, on) => {
                self.with_leg(key, |leg, now| leg.session.set_hold(on, now), now)
            }
            Command::Info(key, ct, body) => {
                let notes = self.notes.clone();
                self.with_leg(
                    key,
                    |leg, now| {
                        if let Err(e) = leg.session.handle_info(now, &ct, &body) {
                            tracing::debug!(error = %e, "SIP INFO without a usable digit");
                        }
                        drain_events(leg, &notes);
                    },
                    now,
                );
            }
            Command::SendDtmf(key, d) => self.with_leg(
                key,
                |leg, _| {
                    if let Err(e) = leg.session.send_dtmf(d, None) {
                        tracing::debug!(error = %e, "cannot send DTMF");
                    }
                },
                now,
            ),
            Command::Listen { key, cfg } => {
                self.with_leg(key, |leg, _| leg.session.listen(cfg), now);
            }
            Command::StopListening(key) => {
                self.with_leg(key, |leg, _| leg.session.stop_listening(), now);
            }
            Command::Bridge(a, b) => self.bridge(a, b),
            Command::Unbridge(key) => {
                if let Some(&idx) = self.by_key.get(&key) {
                    self.unbridge(idx);
                }
            }
            Command::Remove(key) => {
                if let Some(&idx) = self.by_key.get(&key) {
                    self.unbridge(idx);
                }
                if let Some(idx) = self.by_key.remove(&key) {
                    if self.legs.contains(idx) {
                        let mut leg = self.legs.remove(idx);
                        finish_recording(&mut leg, now, &self.notes);
                        finish_call_recording(&mut leg, StopReason::CallEnded);
                        let _ = self.poll.registry().deregister(&mut leg.rtp);
                        if let Some(s) = leg.rtcp.as_mut() {
                            let _ = self.poll.registry().deregister(s);
                        }
                        let stats = Box::new(leg.session.stats());
                        let _ = self.notes.send(Note::Ended { key, stats });
                    }
                }
            }
        }
    }

    fn add(&mut self, now: Instant, spec: LegSpec) {
        let LegSpec {
            key,
            rtp,
            rtcp,
            mut session,
        } = spec;
        let fail = |notes: &UnboundedSender<Note>, e: std::io::Error| {
            let _ = notes.send(Note::Failed {
                key,
                reason: e.to_string(),
            });
        };
        if let Err(e) = rtp.set_nonblocking(true) {
            return fail(&self.notes, e);
        }
        let v6 = rtp.local_addr().is_ok_and(|a| a.is_ipv6());
        let mut rtp = UdpSocket::from_std(rtp);
        let connected = connect_rtp(&rtp, &session);
        let first_tick = self.place(now, session.ptime().duration());
        let mut rtcp = rtcp.and_then(|s| {
            s.set_nonblocking(true)
                .ok()
                .map(|()| UdpSocket::from_std(s))
        });
        let entry = self.legs.vacant_entry();
        let idx = entry.key();
        let Some(tok) = idx.checked_mul(2) else {
            return;
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut rtp, Token(tok), Interest::READABLE)
        {
            return fail(&self.notes, e);
        }
        if let Some(s) = rtcp.as_mut() {
            if self
                .poll
                .registry()
                .register(s, Token(tok + 1), Interest::READABLE)
                .is_err()
            {
                rtcp = None;
            }
        }
        self.generation += 1;
        let generation = self.generation;
        session.set_next_tick(first_tick);
        let remote = session.remote_addr();
        entry.insert(Leg {
            key,
            generation,
            rtp,
            rtcp,
            rtcp_remote: Some(SocketAddr::new(remote.ip(), remote.port().wrapping_add(1))),
            session,
            playing: None,
            timed_out: false,
            recording: None,
            bridge: None,
            call_recording: None,
            connected,
            v6,
        });
        self.by_key.insert(key, idx);
        self.schedule(idx, generation, first_tick);
    }

    /// Bridges legs `a` and `b` (both must live on this worker).
    fn bridge(&mut self, a: LegKey, b: LegKey) {
        let pair = (self.by_key.get(&a).copied(), self.by_key.get(&b).copied());
        let (Some(ia), Some(ib)) = pair.0.zip(pair.1).filter(|(x, y)| x != y).unzip() else {
            let _ = self.notes.send(Note::Failed {
                key: a,
                reason: format!("cannot bridge {a} and {b}: not both on this media worker"),
            });
            return;
        };
        self.unbridge(ia);
        self.unbridge(ib);
        let Some((la, lb)) = self.legs.get2_mut(ia, ib) else {
            return;
        };
        la.bridge = Some(BridgeSide {
            peer: ib,
            peer_generation: lb.generation,
            peer_key: b,
            relay: Relay::new(lb.session.relay_target()),
        });
        lb.bridge = Some(BridgeSide {
            peer: ia,
            peer_generation: la.generation,
            peer_key: a,
            relay: Relay::new(la.session.relay_target()),
        });
        for leg in [la, lb] {
            leg.session.set_bridged(true);
            leg.session.set_echo(false);
            leg.session.stop_prompts();
            leg.playing = None;
        }
        let _ = self.notes.send(Note::Bridged { key: a, peer: b });
    }

    /// Ends the bridge leg `idx` is part of, if any; reports the relay counters.
    fn unbridge(&mut self, idx: usize) {
        let Some(leg) = self.legs.get_mut(idx) else {
            return;
        };
        let Some(side) = leg.bridge.take() else {
            return;
        };
        leg.session.set_bridged(false);
        let key = leg.key;
        let mut backward = RelayStats::default();
        if let Some(peer) = self.legs.get_mut(side.peer) {
            if peer.generation == side.peer_generation {
                if let Some(p) = peer.bridge.take() {
                    backward = p.relay.stats();
                }
                peer.session.set_bridged(false);
            }
        }
        let _ = self.notes.send(Note::Unbridged {
            key,
            peer: side.peer_key,
            forward: side.relay.stats(),
            backward,
        });
    }

    /// RTP on a bridged leg: accepted packets are relayed on the peer's socket at once
    /// (read in `recvmmsg` batches like [`Self::readable`]).
    fn readable_bridged(&mut self, now: Instant, idx: usize) {
        let Some(peer_idx) = self
            .legs
            .get(idx)
            .and_then(|l| l.bridge.as_ref())
            .map(|b| b.peer)
            .filter(|&p| p != idx)
        else {
            return;
        };
        let out = &mut self.relay_out;
        let rx = &mut self.batch;
        let mut drained = false;
        'rounds: for _ in 0..RX_ROUNDS {
            let Some((leg, peer)) = self.legs.get2_mut(idx, peer_idx) else {
                return;
            };
            let got = match rx.recv(leg.rtp.as_raw_fd(), leg.v6) {
                Ok(n) => n,
                Err(
                    Errno::EINTR
                    | Errno::ECONNREFUSED
                    | Errno::EHOSTUNREACH
                    | Errno::ENETUNREACH
                    | Errno::EHOSTDOWN,
                ) => continue,
                Err(_) => {
                    drained = true;
                    break;
                }
            };
            for i in 0..got {
                let Some((data, src)) = rx.datagram(i) else {
                    continue;
                };
                let Some(pkt) = leg.session.relay_rtp(now, src, data) else {
                    continue;
                };
                if let Some(rec) = leg.recording.as_mut() {
                    if matches!(pkt.kind, PayloadKind::Audio(_)) {
                        record_packet(rec, data, &leg.session);
                    }
                }
                let Some(side) = leg.bridge.as_mut() else {
                    drained = true;
                    break 'rounds;
                };
                if side.peer_generation != peer.generation {
                    drained = true;
                    break 'rounds;
                }
                peer.session.relay_out(&mut side.relay, &pkt, out);
                for p in out.drain(..) {
                    let sent = if peer.connected {
                        peer.rtp.send(&p)
                    } else {
                        peer.rtp.send_to(&p, peer.session.remote_addr())
                    };
                    if let Err(e) = sent {
                        if e.kind() != std::io::ErrorKind::WouldBlock {
                            tracing::trace!(error = %e, "relay send failed");
                        }
                    }
                }
            }
            if got < RX_BATCH {
                drained = true;
                break;
            }
        }
        if !drained {
            self.again.push(idx * 2);
        }
        if let Some(leg) = self.legs.get_mut(idx) {
            drain_events(leg, &self.notes);
        }
    }

    /// Reads what a ready socket holds: one `recvmmsg` per batch until a batch comes back
    /// short (the queue is empty), at most [`RX_ROUNDS`] batches; a socket with more left is
    /// read again on the next pass.
    fn readable(&mut self, now: Instant, token: usize) {
        let idx = token / 2;
        let is_rtcp = token % 2 == 1;
        if !is_rtcp && self.legs.get(idx).is_some_and(|l| l.bridge.is_some()) {
            return self.readable_bridged(now, idx);
        }
        let Some(leg) = self.legs.get_mut(idx) else {
            return;
        };
        let fd = if is_rtcp {
            match leg.rtcp.as_ref() {
                Some(s) => s.as_raw_fd(),
                None => return,
            }
        } else {
            leg.rtp.as_raw_fd()
        };
        let rx = &mut self.batch;
        let mut drained = false;
        for _ in 0..RX_ROUNDS {
            let got = match rx.recv(fd, leg.v6) {
                Ok(n) => n,
                // An ICMP error reported on a connected socket (the peer's port is closed),
                // or a signal: that read is used up, the next one goes on.
                Err(
                    Errno::EINTR
                    | Errno::ECONNREFUSED
                    | Errno::EHOSTUNREACH
                    | Errno::ENETUNREACH
                    | Errno::EHOSTDOWN,
                ) => continue,
                // EAGAIN: empty. Anything else: nothing more to read from this socket now.
                Err(_) => {
                    drained = true;
                    break;
                }
            };
            for i in 0..got {
                let Some((data, src)) = rx.datagram(i) else {
                    continue;
                };
                if is_rtcp {
                    let _ = leg.session.handle_rtcp(now, src, data);
                } else {
                    let outcome = leg.session.handle_rtp(now, src, data);
                    if let (Some(rec), RxOutcome::Audio) = (leg.recording.as_mut(), outcome) {
                        record_packet(rec, data, &leg.session);
                    }
                }
            }
            if got < RX_BATCH {
                drained = true;
                break;
            }
        }
        if !drained {
            self.again.push(token);
        }
        drain_events(leg, &self.notes);
    }

    /// Runs every wheel slot up to `now`.
    fn advance(&mut self, now: Instant) {
        let target = self.ms(now);
        while self.cursor <= target {
            let slot_idx = (self.cursor % WHEEL as u64) as usize;
            // The slot's list is swapped with a spare one (empty, with capacity): no
            // allocation per slot as the legs move round the wheel.
            let mut due = std::mem::take(&mut self.due);
            if let Some(slot) = self.wheel.get_mut(slot_idx) {
                std::mem::swap(slot, &mut due);
            }
            let slot_time = self.slot_time(self.cursor);
            self.cursor += 1;
            for &(idx, generation) in &due {
                let next = match self.legs.get_mut(idx) {
                    Some(leg) if leg.generation == generation => {
                        tick(leg, now.max(slot_time), &self.notes)
                    }
                    _ => continue,
                };
                self.schedule(idx, generation, next);
            }
            due.clear();
            self.due = due;
        }
    }
}

/// One pacing tick of a leg: send what is due, run its timers, report. Returns the next due time.
fn tick(leg: &mut Leg, now: Instant, notes: &UnboundedSender<Note>) -> Instant {
    leg.session.handle_timeout(now);
    while let Some(pkt) = leg.session.poll_rtp(now) {
        let sent = if leg.connected {
            leg.rtp.send(&pkt)
        } else {
            leg.rtp.send_to(&pkt, leg.session.remote_addr())
        };
        if let Err(e) = sent {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                tracing::trace!(error = %e, "RTP send failed");
            }
        }
    }
    if let Some(pkt) = leg.session.poll_rtcp(now) {
        if let (Some(sock), Some(to)) = (leg.rtcp.as_ref(), leg.rtcp_remote) {
            let _ = sock.send_to(&pkt, to);
        }
    }
    if let Some((id, sink)) = leg.call_recording.as_ref() {
        while let Some(pcm) = leg.session.poll_recording() {
            let _ = sink.send(RecordMsg::Chunk { id: *id, pcm });
        }
        if leg.session.recording_full() {
            finish_call_recording(leg, StopReason::MaxDuration);
        }
    }
    drain_events(leg, notes);
    if let Some(id) = leg.playing {
        if !leg.session.is_playing() {
            leg.playing = None;
            let _ = notes.send(Note::PromptDone { key: leg.key, id });
        }
    }
    if leg.recording.as_ref().is_some_and(|r| now >= r.deadline) {
        finish_recording(leg, now, notes);
    }
    if !leg.timed_out && leg.session.media_timeout(now) {
        leg.timed_out = true;
        let _ = notes.send(Note::Timeout { key: leg.key });
    }
    let relay_only = leg.session.is_bridged()
        && leg.playing.is_none()
        && leg.recording.is_none()
        && leg.call_recording.is_none();
    next_tick(leg.session.poll_timeout(), now, relay_only)
}

/// How often a bridged leg that only relays is ticked.
const RELAY_TICK: Duration = Duration::from_millis(100);

/// When a leg's next tick is due. A bridged leg sends nothing on its pacing tick (the relay
/// sends as packets arrive), so when it plays and records nothing only RTCP, statistics,
/// digit reports and the media timeout are left: it is ticked every [`RELAY_TICK`] instead of
/// every ptime (thousands of bridged legs ticking every 20 ms were most of the worker's CPU in
/// the ACD load benchmark).
fn next_tick(session_due: Instant, now: Instant, relay_only: bool) -> Instant {
    if relay_only {
        session_due.max(now + RELAY_TICK)
    } else {
        session_due
    }
}

fn finish_recording(leg: &mut Leg, now: Instant, notes: &UnboundedSender<Note>) {
    if let Some(rec) = leg.recording.take() {
        let _ = notes.send(Note::Recorded {
            key: leg.key,
            pcm: rec.finish(now),
        });
    }
}

/// Ends the leg's stereo recording, if one runs: its last audio and the close go to the writer.
fn finish_call_recording(leg: &mut Leg, reason: StopReason) {
    let Some((id, sink)) = leg.call_recording.take() else {
        return;
    };
    // `pcm` is everything not yet handed out (queued chunks and the audio still held); the
    // file is closed even if the session had no recorder (it always has one here).
    let (pcm, summary) = leg.session.stop_recording().unwrap_or_default();
    if !pcm.is_empty() {
        let _ = sink.send(RecordMsg::Chunk { id, pcm });
    }
    let _ = sink.send(RecordMsg::Close {
        id,
        summary,
        reason,
    });
}

/// Decodes one accepted audio packet into the recording.
fn record_packet(rec: &mut Recording, data: &[u8], session: &MediaSession) {
    let Ok(pkt) = parse_rtp(data, session.payload_map()) else {
        return;
    };
    if let PayloadKind::Audio(codec) = pkt.kind {
        let mut pcm = [0i16; 480];
        let n = codec.decode_into(pkt.payload, &mut pcm);
        rec.push(pkt.timestamp, pcm.get(..n).unwrap_or_default());
    }
}

fn drain_events(leg: &mut Leg, notes: &UnboundedSender<Note>) {
    while let Some(ev) = leg.session.poll_event() {
        let note = match ev {
            MediaEvent::Dtmf(d) => Note::Dtmf {
                key: leg.key,
                digit: d.digit.as_char(),
                source: match d.source {
                    DtmfSource::Rfc4733 => "rfc4733",
                    DtmfSource::Info => "info",
                    DtmfSource::Inband => "inband",
                },
                duration_ms: d
                    .duration
                    .map(|x| u64::try_from(x.as_millis()).unwrap_or(u64::MAX)),
            },
            MediaEvent::Latched(addr) => Note::Latched { key: leg.key, addr },
            MediaEvent::SsrcChanged(_) => continue,
            // the interpreter ignores a second `SpeechStarted` of the same turn
            MediaEvent::BargeIn { .. } => Note::SpeechStarted {
                key: leg.key,
                barge_in: true,
            },
            MediaEvent::Vad(VadEvent::SpeechStarted { .. }) => Note::SpeechStarted {
                key: leg.key,
                barge_in: false,
            },
            MediaEvent::Vad(VadEvent::NoInput { .. }) => Note::SpeechNoInput { key: leg.key },
            MediaEvent::Vad(VadEvent::SpeechPaused { .. }) => Note::SpeechPaused {
                key: leg.key,
                pcm: leg.session.take_utterance(),
            },
            MediaEvent::Vad(VadEvent::SpeechResumed { .. }) => Note::SpeechResumed { key: leg.key },
            MediaEvent::Vad(VadEvent::SpeechEnded { start, end, .. }) => Note::Utterance {
                key: leg.key,
                // moved, not copied: the recogniser pool gets it through the SIP task
                pcm: leg.session.take_utterance(),
                decided: Instant::now(),
                speech_ms: end.saturating_sub(start) / 8,
            },
        };
        let _ = notes.send(note);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use frontdoor_media::Ssrc;
    use frontdoor_media::call::MediaConfig;
    use frontdoor_media::g711::G711;
    use frontdoor_media::rtp::RtpSender;

    fn worker() -> Worker {
        let poll = Poll::new().unwrap();
        let (_tx, rx) = channel();
        let (notes, _) = tokio::sync::mpsc::unbounded_channel();
        Worker::new(poll, rx, notes)
    }

    fn spec(key: LegKey, now: Instant, remote: SocketAddr) -> Box<LegSpec> {
        let cfg = MediaConfig::new(G711::Pcmu, remote, Ssrc(key as u32));
        Box::new(LegSpec {
            key,
            rtp: std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            rtcp: None,
            session: Box::new(MediaSession::new(now, cfg)),
        })
    }

    /// Wheel slots (mod 20, relative to `first`) of the legs' next ticks.
    fn phases(w: &Worker, first: u64) -> Vec<usize> {
        let mut per = vec![0; 20];
        for (_, leg) in &w.legs {
            let due = w.ms(leg.session.poll_timeout());
            assert_eq!(
                w.slot_time(due),
                leg.session.poll_timeout(),
                "ticks on slot starts"
            );
            per[((due - first) % 20) as usize] += 1;
        }
        per
    }

    #[test]
    fn a_bridged_leg_that_only_relays_is_ticked_every_100_ms() {
        let t0 = Instant::now();
        let due = t0 + Duration::from_millis(20);
        assert_eq!(next_tick(due, t0, false), due);
        assert_eq!(next_tick(due, t0, true), t0 + RELAY_TICK);
        // an RTCP report due later than that keeps its time
        let late = t0 + Duration::from_secs(3);
        assert_eq!(next_tick(late, t0, true), late);
        // never beyond one lap of the wheel
        assert!(RELAY_TICK < SLOT * WHEEL as u32);
    }

    #[test]
    fn least_loaded_slot_is_the_emptiest_and_the_earliest_of_equals() {
        let mut wheel = vec![Vec::new(); WHEEL];
        for (slot, n) in [(10usize, 2usize), (11, 1), (12, 0), (13, 0), (14, 3)] {
            wheel[slot] = vec![(0, 0); n];
        }
        assert_eq!(least_loaded_slot(&wheel, 10, 2), 11);
        assert_eq!(least_loaded_slot(&wheel, 10, 5), 12);
        assert_eq!(least_loaded_slot(&wheel, 14, 1), 14);
        // Wraps round the wheel: slot 130 is wheel[2].
        wheel[1] = vec![(0, 0)];
        assert_eq!(least_loaded_slot(&wheel, 129, 2), 130);
    }

    /// Legs added at one instant are spread evenly over the slots of one ptime, and keep
    /// their phases while they run and after a stall longer than the session's backlog
    /// (which used to re-phase every leg to the moment the worker caught up).
    #[test]
    fn new_legs_are_spread_over_one_ptime_and_keep_their_phase() {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let remote = sink.local_addr().unwrap();
        let mut w = worker();
        let now = Instant::now();
        let first = w.ms_ceil(now).max(w.cursor);
        for key in 0..60 {
            w.command(now, Command::Add(spec(key, now, remote)));
        }
        assert_eq!(w.legs.len(), 60);
        assert!(
            w.legs.iter().all(|(_, l)| l.connected),
            "SDP latching: connected"
        );
        assert_eq!(phases(&w, first), vec![3; 20], "three legs per 1 ms slot");
        // Run 200 ms of slots: each leg sends on its own phase.
        for t in first..first + 200 {
            w.advance(w.slot_time(t));
        }
        assert_eq!(phases(&w, first), vec![3; 20]);
        assert!(
            w.legs
                .iter()
                .all(|(_, l)| l.session.stats().packets.packets_sent == 10)
        );
        // The worker stalls for 500 ms: one packet each, then the same phases.
        w.advance(w.slot_time(first + 699));
        assert_eq!(phases(&w, first), vec![3; 20], "phases kept after a stall");
        assert!(
            w.legs
                .iter()
                .all(|(_, l)| l.session.stats().packets.packets_sent == 11)
        );
    }

    /// A leg's socket flooded with more datagrams than one pass reads (good RTP and garbage
    /// mixed): the first pass reads RX_ROUNDS batches and puts the socket on the re-read
    /// list, the next pass reads the rest; every datagram is accounted for.
    #[test]
    fn batched_reads_take_everything_queued_good_and_bad() {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut w = worker();
        let now = Instant::now();
        w.command(now, Command::Add(spec(7, now, peer.local_addr().unwrap())));
        let (idx, leg) = w.legs.iter().next().unwrap();
        let to = leg.rtp.local_addr().unwrap();
        let mut tx = RtpSender::new(Ssrc(99), frontdoor_media::PayloadType::PCMU, 0, 0);
        let total = RX_BATCH * RX_ROUNDS + 13;
        for i in 0..total {
            if i % 5 == 4 {
                peer.send_to(&[0x80, 0, 1], to).unwrap(); // too short for RTP
            } else {
                peer.send_to(&tx.audio_packet(&[0xff; 160], 160), to)
                    .unwrap();
            }
        }
        let token = idx * 2;
        w.readable(now, token);
        let counted = |w: &Worker| {
            let s = w.legs[idx].session.stats().packets;
            (s.packets_received, s.dropped_malformed)
        };
        let (good, bad) = counted(&w);
        assert_eq!(
            good + bad,
            (RX_BATCH * RX_ROUNDS) as u64,
            "one pass is bounded"
        );
        assert_eq!(w.again, vec![token], "the rest is read on the next pass");
        w.again.clear();
        w.readable(now, token);
        assert!(w.again.is_empty(), "a short batch: drained");
        assert_eq!(
            counted(&w),
            ((total - total / 5) as u64, (total / 5) as u64)
        );
    }

    #[test]
    fn a_batch_read_gives_each_datagram_its_source_and_comes_back_short_when_drained() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sock.local_addr().unwrap();
        let (a, b) = (
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        for i in 0..RX_BATCH + 2 {
            a.send_to(&vec![i as u8; i + 1], to).unwrap();
        }
        b.send_to(b"from b", to).unwrap();
        let mut rx = RxBatch::new();
        let fd = sock.as_raw_fd();
        assert_eq!(rx.recv(fd, false), Ok(RX_BATCH), "a full batch");
        for i in 0..RX_BATCH {
            let (data, src) = rx.datagram(i).unwrap();
            assert_eq!(data, vec![i as u8; i + 1].as_slice());
            assert_eq!(src, a.local_addr().unwrap());
        }
        assert_eq!(rx.recv(fd, false), Ok(3), "short: the queue is empty");
        assert_eq!(
            rx.datagram(2).unwrap(),
            (&b"from b"[..], b.local_addr().unwrap())
        );
        assert_eq!(rx.recv(fd, false), Err(Errno::EAGAIN));
    }

    #[test]
    fn recording_places_samples_by_timestamp() {
        let t0 = Instant::now();
        let mut r = Recording::new(t0, Duration::from_millis(100)); // 800 samples
        r.push(1000, &[1; 160]);
        // Reordered: the third frame before the second.
        r.push(1320, &[3; 160]);
        r.push(1160, &[2; 160]);
        // From before the start: ignored.
        r.push(840, &[9; 160]);
        assert_eq!(r.pcm.len(), 480);
        assert!(r.pcm[..160].iter().all(|&s| s == 1));
        assert!(r.pcm[160..320].iter().all(|&s| s == 2));
        assert!(r.pcm[320..480].iter().all(|&s| s == 3));
        // A frame past the maximum is cut; beyond it, dropped.
        r.push(1000 + 720, &[4; 160]);
        r.push(1000 + 5000, &[5; 160]);
        assert_eq!(r.pcm.len(), 800);
        assert!(r.pcm[480..720].iter().all(|&s| s == 0), "a gap is silence");
        assert!(r.pcm[720..].iter().all(|&s| s == 4));
        assert!(!r.pcm.contains(&5));
    }

    #[test]
    fn a_recording_without_rtp_is_silence_for_the_time_it_ran() {
        let t0 = Instant::now();
        let r = Recording::new(t0, Duration::from_secs(10));
        let pcm = r.finish(t0 + Duration::from_millis(1500));
        assert_eq!(pcm.len(), 12_000);
        assert!(pcm.iter().all(|&s| s == 0));
        let r = Recording::new(t0, Duration::from_secs(1));
        assert_eq!(
            r.finish(t0 + Duration::from_secs(5)).len(),
            8000,
            "capped at the maximum"
        );
    }
}
