//! RTP load generator and meter: N G.711 calls, one UDP socket per call.
//!
//! Two modes:
//!
//! * **engine** (default): binds N sockets on consecutive even ports from `--base` (busy ports
//!   are skipped), writes a SIPp injection file giving each call its media port, and runs SIPp
//!   (`sipp-scenarios/uac-rtpload.xml`: INVITE to `answer` with `m=audio <port> RTP/AVP 0 101`,
//!   ACK, pause = hold time, BYE). It tails frontdoor's event file: `call.answered` (matched on
//!   `remote_rtp` = 127.0.0.1:<our port>) gives the engine's RTP port, so the socket is
//!   connected to it and starts sending; `call.ended` stops it; `media.stats` gives the engine's
//!   view of what we sent.
//! * **reflector** (`--reflector-ports BASE`): no SIPp; stream i goes to BASE + 2*i from the
//!   start, for `--seconds`. Against `reflector` this measures the floor of the box.
//!
//! Sending: one thread, one 1 ms timer loop (`clock_nanosleep` to absolute deadlines); stream i
//! sends on ticks ≡ i (mod 20), so the load is spread evenly over every millisecond. Each
//! packet is PCMU, 160-byte payload, 20 ms, with its own SSRC, sequence and timestamp. With one
//! socket per call a `sendmmsg` batch could only ever hold one packet (a socket has one packet
//! per 20 ms), so each packet is one `send(2)` on the connected socket.
//!
//! Receiving: one thread, one epoll (`mio`) over all sockets; per ready socket `recvmmsg` with
//! `SO_TIMESTAMPNS`, so arrival times are the kernel's, not this process's scheduling.
//! Per call: packets received/expected (extended sequence numbers), loss, duplicates,
//! reordering, and pacing jitter = |inter-arrival − 20 ms·Δseq| for in-order packets, as a
//! distribution. The send side's own pacing error (actual send time − its deadline) is
//! reported too. Text summary on stdout; `--json FILE` for everything, per call.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IoSliceMut, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, ClockNanosleepFlags, clock_gettime, clock_nanosleep};
use serde_json::{Value, json};

const PTIME_MS: u64 = 20;
const PTIME_NS: i64 = 20_000_000;
const SLOTS: usize = PTIME_MS as usize; // 1 ms ticks per packet interval
const PAYLOAD: usize = 160;
const RX_BATCH: usize = 16;
const RX_BUF: usize = 2048;
/// Duplicate detection window (sequence numbers).
const WINDOW: i64 = 1024;

#[derive(Debug, Parser)]
#[command(about = "RTP load: N G.711 calls through SIPp + frontdoor (or a reflector), measured")]
struct Args {
    /// Calls (one UDP socket and one RTP stream each).
    #[arg(long)]
    calls: usize,
    /// First local RTP port (even); call i uses the i-th free even port from here.
    #[arg(long, default_value_t = 40000)]
    base: u16,
    /// Hold time per call (SIPp pause), or with --reflector-ports the send time, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Drive a reflector instead of SIPp + frontdoor: stream i is sent to BASE + 2*i.
    #[arg(long, value_name = "BASE")]
    reflector_ports: Option<u16>,
    /// frontdoor's SIP address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    sip: SocketAddr,
    /// frontdoor's event file (`serve --events FILE`); required in engine mode.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Number dialled.
    #[arg(long, default_value = "answer")]
    number: String,
    /// SIPp call rate (calls/s) while placing the calls.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// SIPp scenario.
    #[arg(long, default_value = "sipp-scenarios/uac-rtpload.xml")]
    scenario: PathBuf,
    /// SIPp binary.
    #[arg(long, default_value = "sipp")]
    sipp: String,
    /// Command words put before SIPp, e.g. `chrt -o 0` to run it SCHED_OTHER while rtpload
    /// itself runs SCHED_FIFO (so SIPp never delays the packet clock).
    #[arg(long, allow_hyphen_values = true)]
    sipp_wrapper: Option<String>,
    /// Directory for the injection file and SIPp's logs (default: a new one under /tmp).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Process to sample (CPU % over the steady window, RSS growth per call): the engine's or
    /// the reflector's pid.
    #[arg(long)]
    pid: Option<u32>,
    /// Write the full report, per call, as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print one line per call.
    #[arg(long)]
    per_call: bool,
    /// Receive by polling every N ms (`epoll_wait` with a zero timeout) instead of sleeping in
    /// `epoll_wait`. On loopback the sender pays for waking a sleeping receiver (the wake-up
    /// runs in its `sendto`), so a blocking receiver makes the engine look slower than it is
    /// against a real peer behind a NIC. Arrival times are the kernel's either way. 0 = block.
    #[arg(long, default_value_t = 1)]
    rx_poll_ms: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.calls == 0 {
        bail!("--calls must be at least 1");
    }
    let run = Run::setup(&args)?;
    let report = match args.reflector_ports {
        Some(base) => run.reflector(&args, base)?,
        None => run.engine(&args)?,
    };
    print!("{}", report.text(args.per_call));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report.json())?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if report.received_total() == 0 {
        bail!("no RTP received");
    }
    if report.sipp_rc.is_some_and(|rc| rc != 0) {
        bail!("SIPp failed (exit status {:?})", report.sipp_rc);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Time

fn realtime_ns() -> i64 {
    clock_gettime(ClockId::CLOCK_REALTIME).map_or(0, |t| ts_ns(&t))
}

fn ts_ns(t: &TimeSpec) -> i64 {
    t.tv_sec()
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec())
}

fn ns_to_ts(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

fn monotonic_ns() -> i64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| ts_ns(&t))
}

// ---------------------------------------------------------------------------------------------
// Process sampling (/proc)

#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    at_ns: i64,
    cpu_ticks: u64,
    rss_kib: u64,
    /// Context switches (voluntary + involuntary), all threads: wake-ups.
    ctxt: u64,
}

fn proc_sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based) => 11, 12 here.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut ctxt = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let Ok(st) = std::fs::read_to_string(t.path().join("status")) else {
                continue;
            };
            for l in st.lines() {
                if let Some(v) = l
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    ctxt += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    Some(ProcSample {
        at_ns: monotonic_ns(),
        cpu_ticks: utime + stime,
        rss_kib,
        ctxt,
    })
}

/// Context switches per second between two samples.
fn ctxt_rate(a: &ProcSample, b: &ProcSample) -> Option<f64> {
    let dt = (b.at_ns - a.at_ns) as f64 / 1e9;
    (dt > 0.0).then(|| b.ctxt.saturating_sub(a.ctxt) as f64 / dt)
}

/// CPU % of one core between two samples (USER_HZ = 100 on Linux).
fn cpu_pct(a: &ProcSample, b: &ProcSample) -> Option<f64> {
    let dt = (b.at_ns - a.at_ns) as f64 / 1e9;
    (dt > 0.0).then(|| (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / 100.0 / dt * 100.0)
}

// ---------------------------------------------------------------------------------------------
// RTP

/// A quiet 400 Hz tone, μ-law: 160 samples = 8 whole periods, so every packet is the same.
fn pcmu_payload() -> [u8; PAYLOAD] {
    let mut p = [0u8; PAYLOAD];
    for (i, b) in p.iter_mut().enumerate() {
        let x = (2.0 * std::f64::consts::PI * 400.0 * i as f64 / 8000.0).sin() * 2000.0;
        *b = linear_to_ulaw(x as i16);
    }
    p
}

fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

struct TxStream {
    seq: u16,
    ts: u32,
    ssrc: u32,
    active: bool,
    done: bool,
    first: bool,
    sent: u64,
    errors: u64,
}

enum TxCmd {
    Start(usize),
    Stop(usize),
}

struct TxResult {
    sent: Vec<u64>,
    errors: Vec<u64>,
    /// Lateness of each send against its 1 ms deadline, µs.
    lateness: Histogram<u64>,
    ticks_late: u64,
}

fn sender(
    sockets: Arc<Vec<UdpSocket>>,
    cmds: Receiver<TxCmd>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Result<TxResult> {
    let n = sockets.len();
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut streams: Vec<TxStream> = (0..n)
        .map(|_| TxStream {
            seq: next() as u16,
            ts: next() as u32,
            ssrc: next() as u32,
            active: false,
            done: false,
            first: true,
            sent: 0,
            errors: 0,
        })
        .collect();
    let mut slots: Vec<Vec<usize>> = vec![Vec::new(); SLOTS];
    for i in 0..n {
        if let Some(s) = slots.get_mut(i % SLOTS) {
            s.push(i);
        }
    }
    let payload = pcmu_payload();
    let mut pkt = [0u8; 12 + PAYLOAD];
    pkt[12..].copy_from_slice(&payload);
    let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut ticks_late = 0u64;
    let start = monotonic_ns();
    let mut tick: i64 = 0;
    loop {
        let deadline = start + tick * 1_000_000;
        while let Err(Errno::EINTR) = clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &ns_to_ts(deadline),
        ) {}
        loop {
            match cmds.try_recv() {
                Ok(TxCmd::Start(i)) => {
                    if let Some(s) = streams.get_mut(i) {
                        s.active = !s.done;
                    }
                }
                Ok(TxCmd::Stop(i)) => {
                    if let Some(s) = streams.get_mut(i) {
                        s.active = false;
                        s.done = true;
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = monotonic_ns();
        if now - deadline > 1_000_000 {
            ticks_late += 1;
        }
        let slot = slots
            .get((tick as usize) % SLOTS)
            .map_or(&[][..], |v| &v[..]);
        for &i in slot {
            let (Some(st), Some(sock)) = (streams.get_mut(i), sockets.get(i)) else {
                continue;
            };
            if !st.active {
                continue;
            }
            pkt[0] = 0x80;
            pkt[1] = if st.first { 0x80 } else { 0x00 }; // marker on the first packet, PT 0
            pkt[2..4].copy_from_slice(&st.seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&st.ts.to_be_bytes());
            pkt[8..12].copy_from_slice(&st.ssrc.to_be_bytes());
            match sock.send(&pkt) {
                Ok(_) => {
                    st.sent += 1;
                    st.first = false;
                    st.seq = st.seq.wrapping_add(1);
                    st.ts = st.ts.wrapping_add(PAYLOAD as u32);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // The far end closed its port (call over): stop this stream.
                    st.active = false;
                    st.done = true;
                }
                Err(_) => {
                    st.errors += 1;
                    st.seq = st.seq.wrapping_add(1);
                    st.ts = st.ts.wrapping_add(PAYLOAD as u32);
                }
            }
            let late_us = (monotonic_ns() - deadline).max(0) / 1000;
            let _ = lateness.record(late_us.max(1) as u64);
        }
        tick += 1;
    }
    Ok(TxResult {
        sent: streams.iter().map(|s| s.sent).collect(),
        errors: streams.iter().map(|s| s.errors).collect(),
        lateness,
        ticks_late,
    })
}

/// What one socket received.
struct RxStream {
    ssrc: Option<u32>,
    received: u64,
    first_ext: i64,
    max_ext: i64,
    dups: u64,
    reordered: u64,
    other_ssrc: u64,
    malformed: u64,
    bitmap: [u64; (WINDOW / 64) as usize],
    last: Option<(i64, i64)>, // (arrival ns, ext seq)
    first_ns: i64,
    last_ns: i64,
    jitter: Histogram<u64>,
    /// Inter-arrival gaps ≥ 60 ms (a stall: three packet times or more).
    stalls: u64,
}

impl RxStream {
    fn new() -> Result<Self> {
        Ok(Self {
            ssrc: None,
            received: 0,
            first_ext: 0,
            max_ext: 0,
            dups: 0,
            reordered: 0,
            other_ssrc: 0,
            malformed: 0,
            bitmap: [0; (WINDOW / 64) as usize],
            last: None,
            first_ns: 0,
            last_ns: 0,
            jitter: Histogram::new_with_bounds(1, 60_000_000, 2)?,
            stalls: 0,
        })
    }

    fn bit(&mut self, ext: i64) -> (usize, u64) {
        let pos = ext.rem_euclid(WINDOW) as usize;
        (pos / 64, 1u64 << (pos % 64))
    }

    /// One datagram at kernel time `t` (ns); returns the pacing-jitter sample (µs), if any.
    fn packet(&mut self, t: i64, data: &[u8]) -> Option<u64> {
        let (Some(&b0), Some(seq), Some(ssrc)) = (
            data.first(),
            data.get(2..4)
                .and_then(|b| b.try_into().ok())
                .map(u16::from_be_bytes),
            data.get(8..12)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes),
        ) else {
            self.malformed += 1;
            return None;
        };
        if b0 >> 6 != 2 {
            self.malformed += 1;
            return None;
        }
        match self.ssrc {
            None => {
                self.ssrc = Some(ssrc);
                let ext = (1 << 20) + i64::from(seq);
                self.first_ext = ext;
                self.max_ext = ext;
                self.received = 1;
                self.first_ns = t;
                self.last_ns = t;
                self.last = Some((t, ext));
                let (w, m) = self.bit(ext);
                if let Some(x) = self.bitmap.get_mut(w) {
                    *x |= m;
                }
                return None;
            }
            Some(s) if s != ssrc => {
                self.other_ssrc += 1;
                return None;
            }
            Some(_) => {}
        }
        let delta = i64::from(seq.wrapping_sub(self.max_ext as u16) as i16);
        let ext = self.max_ext + delta;
        self.last_ns = t;
        if ext > self.max_ext {
            // Clear the window between the old and the new highest sequence number.
            if ext - self.max_ext >= WINDOW {
                self.bitmap = [0; (WINDOW / 64) as usize];
            } else {
                for e in self.max_ext + 1..=ext {
                    let (w, m) = self.bit(e);
                    if let Some(x) = self.bitmap.get_mut(w) {
                        *x &= !m;
                    }
                }
            }
            let (w, m) = self.bit(ext);
            if let Some(x) = self.bitmap.get_mut(w) {
                *x |= m;
            }
            self.max_ext = ext;
            self.received += 1;
            let sample = self.last.and_then(|(lt, le)| {
                let gap = t - lt;
                if gap >= 3 * PTIME_NS {
                    self.stalls += 1;
                }
                let dseq = ext - le;
                (dseq <= 50).then(|| ((gap - dseq * PTIME_NS).abs() / 1000) as u64)
            });
            self.last = Some((t, ext));
            if let Some(us) = sample {
                let _ = self.jitter.record(us.max(1));
            }
            sample
        } else if self.max_ext - ext >= WINDOW {
            self.reordered += 1;
            self.received += 1;
            self.first_ext = self.first_ext.min(ext);
            None
        } else {
            let (w, m) = self.bit(ext);
            let seen = self.bitmap.get(w).is_some_and(|x| x & m != 0);
            if seen {
                self.dups += 1;
            } else {
                if let Some(x) = self.bitmap.get_mut(w) {
                    *x |= m;
                }
                self.reordered += 1;
                self.received += 1;
                self.first_ext = self.first_ext.min(ext);
            }
            None
        }
    }

    /// Packets a real-time 20 ms stream would have delivered between the first and the last
    /// arrival: a sender that falls behind and restarts its clock (no sequence gap, fewer
    /// packets) shows here, not in `expected`.
    fn expected_wallclock(&self) -> u64 {
        if self.ssrc.is_none() {
            0
        } else {
            ((self.last_ns - self.first_ns + PTIME_NS / 2) / PTIME_NS + 1).max(0) as u64
        }
    }

    fn expected(&self) -> u64 {
        if self.ssrc.is_none() {
            0
        } else {
            (self.max_ext - self.first_ext + 1).max(0) as u64
        }
    }
}

struct RxResult {
    streams: Vec<RxStream>,
    /// Arrivals in the steady window by 1 ms phase of the 20 ms cycle: an engine that spreads
    /// its calls evenly over its timer wheel gives a flat profile; clumping shows as peaks.
    phase: [u64; SLOTS],
    total_jitter: Histogram<u64>,
    steady_jitter: Histogram<u64>,
    no_timestamp: u64,
    syscalls: u64,
}

/// The steady window in CLOCK_REALTIME ns (0 = not known yet).
struct Window {
    start: AtomicI64,
    end: AtomicI64,
}

fn receiver(
    sockets: Arc<Vec<UdpSocket>>,
    mut poll: Poll,
    stop: Arc<AtomicBool>,
    window: Arc<Window>,
    poll_ms: u64,
) -> Result<RxResult> {
    let n = sockets.len();
    let mut streams = (0..n)
        .map(|_| RxStream::new())
        .collect::<Result<Vec<_>>>()?;
    let mut total_jitter = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut steady_jitter = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut events = Events::with_capacity(4096);
    let cmsg_space = nix::cmsg_space!(nix::libc::timespec);
    let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(RX_BATCH, Some(cmsg_space.clone()));
    let mut bufs = [[0u8; RX_BUF]; RX_BATCH];
    let mut no_timestamp = 0u64;
    let mut syscalls = 0u64;
    let mut phase = [0u64; SLOTS];
    let period = i64::try_from(poll_ms).unwrap_or(1000).min(1000) * 1_000_000;
    let mut next = monotonic_ns();
    while !stop.load(Ordering::Relaxed) {
        let timeout = if period > 0 {
            next += period;
            let now = monotonic_ns();
            if next < now {
                next = now; // fell behind: no burst of catch-up polls
            }
            while let Err(Errno::EINTR) = clock_nanosleep(
                ClockId::CLOCK_MONOTONIC,
                ClockNanosleepFlags::TIMER_ABSTIME,
                &ns_to_ts(next),
            ) {}
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("poll: {e}"),
        }
        let (w_start, w_end) = (
            window.start.load(Ordering::Relaxed),
            window.end.load(Ordering::Relaxed),
        );
        for ev in events.iter() {
            let idx = ev.token().0;
            let (Some(sock), Some(st)) = (sockets.get(idx), streams.get_mut(idx)) else {
                continue;
            };
            let fd = sock.as_raw_fd();
            loop {
                let mut meta = [(0usize, 0i64); RX_BATCH];
                let mut truncated = false;
                let got = {
                    let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
                    syscalls += 1;
                    match recvmmsg(fd, &mut hdrs, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
                        Ok(msgs) => {
                            let mut k = 0;
                            for (m, slot) in msgs.zip(meta.iter_mut()) {
                                let mut t = None;
                                match m.cmsgs() {
                                    Ok(it) => {
                                        for c in it {
                                            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                                                t = Some(ts_ns(&ts));
                                            }
                                        }
                                    }
                                    Err(_) => truncated = true,
                                }
                                let t = t.unwrap_or_else(|| {
                                    no_timestamp += 1;
                                    realtime_ns()
                                });
                                *slot = (m.bytes, t);
                                k += 1;
                            }
                            k
                        }
                        Err(Errno::EAGAIN) => 0,
                        // An ICMP error (the far end's port closed); the queue goes on.
                        Err(Errno::ECONNREFUSED | Errno::EINTR) => continue,
                        Err(e) => bail!("recvmmsg: {e}"),
                    }
                };
                if truncated {
                    // The kernel shrank msg_controllen on a message without a timestamp:
                    // start again with fresh headers.
                    hdrs =
                        MultiHeaders::<SockaddrIn>::preallocate(RX_BATCH, Some(cmsg_space.clone()));
                }
                for ((len, t), buf) in meta.iter().zip(bufs.iter()).take(got) {
                    if w_start > 0 && *t >= w_start && *t <= w_end {
                        let ph = (t.rem_euclid(PTIME_NS) / 1_000_000) as usize;
                        if let Some(x) = phase.get_mut(ph) {
                            *x += 1;
                        }
                    }
                    if let Some(us) = st.packet(*t, buf.get(..*len).unwrap_or_default()) {
                        let _ = total_jitter.record(us.max(1));
                        if w_start > 0 && *t >= w_start && *t <= w_end {
                            let _ = steady_jitter.record(us.max(1));
                        }
                    }
                }
                if got < RX_BATCH {
                    break;
                }
            }
        }
    }
    Ok(RxResult {
        streams,
        phase,
        total_jitter,
        steady_jitter,
        no_timestamp,
        syscalls,
    })
}

// ---------------------------------------------------------------------------------------------
// Setup

/// The running sender and receiver.
struct Threads {
    sockets: Arc<Vec<UdpSocket>>,
    ports: Vec<u16>,
    tx: Sender<TxCmd>,
    tx_stop: Arc<AtomicBool>,
    rx_stop: Arc<AtomicBool>,
    tx_thread: thread::JoinHandle<Result<TxResult>>,
    rx_thread: thread::JoinHandle<Result<RxResult>>,
}

impl Threads {
    /// Stops sending, lets the last packets arrive, and collects both sides.
    fn finish(self, linger: Duration) -> Result<(Vec<u16>, TxResult, RxResult)> {
        self.tx_stop.store(true, Ordering::Relaxed);
        thread::sleep(linger);
        self.rx_stop.store(true, Ordering::Relaxed);
        let txr = self
            .tx_thread
            .join()
            .map_err(|_| anyhow!("sender panicked"))??;
        let rxr = self
            .rx_thread
            .join()
            .map_err(|_| anyhow!("receiver panicked"))??;
        Ok((self.ports, txr, rxr))
    }
}

struct Run {
    sockets: Arc<Vec<UdpSocket>>,
    ports: Vec<u16>,
    poll: Poll,
}

impl Run {
    fn setup(args: &Args) -> Result<Self> {
        let poll = Poll::new()?;
        let mut sockets = Vec::with_capacity(args.calls);
        let mut ports = Vec::with_capacity(args.calls);
        let mut port = u32::from(args.base & !1);
        while sockets.len() < args.calls {
            let p = u16::try_from(port)
                .ok()
                .context("ran out of ports below 65535")?;
            port += 2;
            let Ok(s) = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)) else {
                continue; // busy (another test's RTP): skip it
            };
            setsockopt(&s, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
            s.set_nonblocking(true)?;
            let fd = s.as_raw_fd();
            poll.registry().register(
                &mut mio::unix::SourceFd(&fd),
                Token(sockets.len()),
                Interest::READABLE,
            )?;
            sockets.push(s);
            ports.push(p);
        }
        Ok(Self {
            sockets: Arc::new(sockets),
            ports,
            poll,
        })
    }

    fn spawn_threads(self, window: &Arc<Window>, rx_poll_ms: u64) -> Result<Threads> {
        let (tx, rx) = channel();
        let tx_stop = Arc::new(AtomicBool::new(false));
        let rx_stop = Arc::new(AtomicBool::new(false));
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let s = Arc::clone(&self.sockets);
        let st = Arc::clone(&tx_stop);
        let tx_thread = thread::Builder::new()
            .name("rtpload-tx".into())
            .spawn(move || sender(s, rx, st, seed))?;
        let s = Arc::clone(&self.sockets);
        let st = Arc::clone(&rx_stop);
        let w = Arc::clone(window);
        let poll = self.poll;
        let rx_thread = thread::Builder::new()
            .name("rtpload-rx".into())
            .spawn(move || receiver(s, poll, st, w, rx_poll_ms))?;
        Ok(Threads {
            sockets: self.sockets,
            ports: self.ports,
            tx,
            tx_stop,
            rx_stop,
            tx_thread,
            rx_thread,
        })
    }

    /// Reflector mode: every stream starts now and sends for `--seconds`.
    fn reflector(self, args: &Args, base: u16) -> Result<Report> {
        let idle = args.pid.and_then(|p| proc_sample(&p.to_string()));
        for (i, s) in self.sockets.iter().enumerate() {
            let port = u16::try_from(usize::from(base) + 2 * i)
                .ok()
                .context("reflector ports past 65535")?;
            s.connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
        }
        let window = Arc::new(Window {
            start: AtomicI64::new(0),
            end: AtomicI64::new(0),
        });
        let calls = self.sockets.len();
        let threads = self.spawn_threads(&window, args.rx_poll_ms)?;
        let t0 = realtime_ns();
        let hold = Duration::from_secs_f64(args.seconds.max(1.0));
        let margin = (hold.as_nanos() as i64 / 5).min(2_000_000_000);
        window.start.store(t0 + margin, Ordering::Relaxed);
        window
            .end
            .store(t0 + hold.as_nanos() as i64 - margin, Ordering::Relaxed);
        for i in 0..calls {
            let _ = threads.tx.send(TxCmd::Start(i));
        }
        let (ws, we, self_ws, self_we) = sample_window(&window, args.pid);
        let t_stop = t0 + hold.as_nanos() as i64;
        sleep_until_realtime(t_stop);
        let (ports, txr, rxr) = threads.finish(Duration::from_millis(300))?;
        Ok(Report {
            mode: format!("reflector on 127.0.0.1:{base}.. (no SIPp)"),
            calls,
            seconds: args.seconds,
            ports,
            engine_ports: (0..calls)
                .map(|i| u16::try_from(usize::from(base) + 2 * i).ok())
                .collect(),
            call_ids: vec![None; calls],
            engine_stats: vec![None; calls],
            answered: calls,
            ended: calls,
            sipp: None,
            sipp_rc: None,
            tx: txr,
            rx: rxr,
            window: (
                window.start.load(Ordering::Relaxed),
                window.end.load(Ordering::Relaxed),
            ),
            proc_idle: idle,
            proc_window: ws.zip(we),
            self_window: self_ws.zip(self_we),
            sampled: "reflector",
        })
    }

    /// Engine mode: SIPp places the calls, the event file tells us the engine's ports.
    fn engine(self, args: &Args) -> Result<Report> {
        let events_path = args.events.clone().context(
            "--events FILE (frontdoor's event file) is required without --reflector-ports",
        )?;
        let mut events =
            File::open(&events_path).with_context(|| format!("open {}", events_path.display()))?;
        events.seek(SeekFrom::End(0))?;
        let mut events = BufReader::new(events);
        let idle = args.pid.and_then(|p| proc_sample(&p.to_string()));
        let out_dir = match &args.out_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("rtpload-{}", std::process::id())),
        };
        std::fs::create_dir_all(&out_dir)?;
        let csv = out_dir.join("media-ports.csv");
        {
            let mut f = File::create(&csv)?;
            writeln!(f, "SEQUENTIAL")?;
            for p in &self.ports {
                writeln!(f, "{p};")?;
            }
        }
        let by_port: HashMap<u16, usize> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i))
            .collect();
        let calls = self.sockets.len();
        let window = Arc::new(Window {
            start: AtomicI64::new(0),
            end: AtomicI64::new(0),
        });
        let threads = self.spawn_threads(&window, args.rx_poll_ms)?;
        let (sockets, tx) = (Arc::clone(&threads.sockets), threads.tx.clone());

        let mut sipp = spawn_sipp(args, &csv, &out_dir, calls)?;
        let sipp_deadline = Instant::now()
            + Duration::from_secs_f64(args.seconds + calls as f64 / args.rate.max(1.0) + 60.0);
        let mut engine_ports: Vec<Option<u16>> = vec![None; calls];
        let mut call_ids: Vec<Option<String>> = vec![None; calls];
        let mut by_call: HashMap<String, usize> = HashMap::new();
        let mut engine_stats: Vec<Option<Value>> = vec![None; calls];
        let (mut answered, mut ended, mut stats_seen) = (0usize, 0usize, 0usize);
        let mut first_answer_ns: Option<i64> = None;
        let mut proc_ws: Option<ProcSample> = None;
        let mut proc_we: Option<ProcSample> = None;
        let mut self_ws: Option<ProcSample> = None;
        let mut self_we: Option<ProcSample> = None;
        let pid = args.pid.map(|p| p.to_string());
        let hold_ns = (args.seconds * 1e9) as i64;
        let mut line = String::new();
        let mut sipp_rc: Option<i32> = None;
        let mut sipp_done_at: Option<Instant> = None;
        loop {
            // Events: read every complete line that is there.
            let mut progressed = false;
            loop {
                let n = events.read_line(&mut line)?;
                if n == 0 || !line.ends_with('\n') {
                    break; // partial line: the writer is mid-write; keep it
                }
                progressed = true;
                let v: Value = serde_json::from_str(line.trim_end()).unwrap_or(Value::Null);
                line.clear();
                let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
                let call_id = v.get("call_id").and_then(Value::as_str);
                match ty {
                    "call.answered" => {
                        let remote = v
                            .get("remote_rtp")
                            .and_then(Value::as_str)
                            .and_then(|s| s.parse::<SocketAddr>().ok());
                        let eport = v
                            .get("rtp_port")
                            .and_then(Value::as_u64)
                            .and_then(|p| u16::try_from(p).ok());
                        let (Some(remote), Some(eport), Some(cid)) = (remote, eport, call_id)
                        else {
                            continue;
                        };
                        if !remote.ip().is_loopback() {
                            continue;
                        }
                        let Some(&idx) = by_port.get(&remote.port()) else {
                            continue;
                        };
                        let Some(sock) = sockets.get(idx) else {
                            continue;
                        };
                        if engine_ports.get(idx).is_some_and(Option::is_some) {
                            continue; // a second answer for the same port: ignore
                        }
                        sock.connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, eport))?;
                        let _ = tx.send(TxCmd::Start(idx));
                        if let Some(e) = engine_ports.get_mut(idx) {
                            *e = Some(eport);
                        }
                        if let Some(c) = call_ids.get_mut(idx) {
                            *c = Some(cid.to_owned());
                        }
                        by_call.insert(cid.to_owned(), idx);
                        answered += 1;
                        let now = realtime_ns();
                        let first = *first_answer_ns.get_or_insert(now);
                        if answered == calls {
                            // Steady window: every call up (plus 0.5 s to settle) until the
                            // first call's hold time ends (less 0.5 s).
                            let start = now + 500_000_000;
                            let end = first + hold_ns - 500_000_000;
                            if end > start + 1_000_000_000 {
                                window.start.store(start, Ordering::Relaxed);
                                window.end.store(end, Ordering::Relaxed);
                            } else {
                                eprintln!(
                                    "rtpload: hold time too short for a steady window \
                                     (calls took {:.1} s to set up)",
                                    (now - first) as f64 / 1e9
                                );
                            }
                        }
                    }
                    "call.ended" => {
                        if let Some(&idx) = call_id.and_then(|c| by_call.get(c)) {
                            let _ = tx.send(TxCmd::Stop(idx));
                            ended += 1;
                        }
                    }
                    "media.stats" => {
                        if let Some(s) = call_id
                            .and_then(|c| by_call.get(c))
                            .and_then(|&idx| engine_stats.get_mut(idx))
                        {
                            if s.is_none() {
                                stats_seen += 1;
                            }
                            *s = Some(v.clone());
                        }
                    }
                    _ => {}
                }
            }
            // Process samples at the window's edges.
            let (ws, we) = (
                window.start.load(Ordering::Relaxed),
                window.end.load(Ordering::Relaxed),
            );
            let now = realtime_ns();
            if ws > 0 && now >= ws && proc_ws.is_none() {
                proc_ws = pid.as_deref().and_then(proc_sample);
                self_ws = proc_sample("self");
            }
            if we > 0 && now >= we && proc_we.is_none() && proc_ws.is_some() {
                proc_we = pid.as_deref().and_then(proc_sample);
                self_we = proc_sample("self");
            }
            if sipp_rc.is_none() {
                if let Some(status) = sipp.try_wait()? {
                    sipp_rc = Some(status.code().unwrap_or(-1));
                    sipp_done_at = Some(Instant::now());
                } else if Instant::now() > sipp_deadline {
                    let _ = sipp.kill();
                    let _ = sipp.wait();
                    sipp_rc = Some(-1);
                    sipp_done_at = Some(Instant::now());
                    eprintln!("rtpload: SIPp ran past its deadline; killed");
                }
            }
            if let Some(done) = sipp_done_at {
                let all_in = ended >= answered && stats_seen >= answered;
                if all_in || done.elapsed() > Duration::from_secs(3) {
                    break;
                }
            }
            if !progressed {
                thread::sleep(Duration::from_millis(5));
            }
        }
        let (ports, txr, rxr) = threads.finish(Duration::from_millis(100))?;
        let sipp_summary = sipp_counts(&out_dir);
        Ok(Report {
            mode: format!(
                "SIPp -> frontdoor {} (number {}, {} calls/s)",
                args.sip, args.number, args.rate
            ),
            calls,
            seconds: args.seconds,
            ports,
            engine_ports,
            call_ids,
            engine_stats,
            answered,
            ended,
            sipp: sipp_summary,
            sipp_rc,
            tx: txr,
            rx: rxr,
            window: (
                window.start.load(Ordering::Relaxed),
                window.end.load(Ordering::Relaxed),
            ),
            proc_idle: idle,
            proc_window: proc_ws.zip(proc_we),
            self_window: self_ws.zip(self_we),
            sampled: "engine",
        })
    }
}

fn sleep_until_realtime(t: i64) {
    while let Err(Errno::EINTR) = clock_nanosleep(
        ClockId::CLOCK_REALTIME,
        ClockNanosleepFlags::TIMER_ABSTIME,
        &ns_to_ts(t),
    ) {}
}

type Samples = (
    Option<ProcSample>,
    Option<ProcSample>,
    Option<ProcSample>,
    Option<ProcSample>,
);

/// Samples `pid` and this process at the window's start and end (reflector mode, where the
/// window is known in advance).
fn sample_window(window: &Window, pid: Option<u32>) -> Samples {
    let pid = pid.map(|p| p.to_string());
    sleep_until_realtime(window.start.load(Ordering::Relaxed));
    let (a, sa) = (pid.as_deref().and_then(proc_sample), proc_sample("self"));
    sleep_until_realtime(window.end.load(Ordering::Relaxed));
    let (b, sb) = (pid.as_deref().and_then(proc_sample), proc_sample("self"));
    (a, b, sa, sb)
}

fn spawn_sipp(args: &Args, csv: &Path, out_dir: &Path, calls: usize) -> Result<Child> {
    let scenario = std::fs::canonicalize(&args.scenario)
        .with_context(|| format!("scenario {}", args.scenario.display()))?;
    let hold_ms = (args.seconds * 1000.0).round() as u64;
    let timeout_s = (args.seconds + calls as f64 / args.rate.max(1.0) + 60.0).ceil() as u64;
    let wrapper: Vec<&str> = args
        .sipp_wrapper
        .as_deref()
        .map(|w| w.split_whitespace().collect())
        .unwrap_or_default();
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&args.sipp);
            c
        }
        None => Command::new(&args.sipp),
    };
    cmd.current_dir(out_dir)
        .arg(args.sip.to_string())
        .arg("-sf")
        .arg(&scenario)
        .args(["-s", &args.number, "-i", "127.0.0.1"])
        .arg("-inf")
        .arg(csv)
        .args(["-m", &calls.to_string(), "-l", &calls.to_string()])
        .args(["-r", &format!("{}", args.rate.max(1.0).round() as u64)])
        .args(["-d", &hold_ms.to_string()])
        .args(["-buff_size", "4194304", "-max_socket", "4096", "-nostdin"])
        .args(["-timeout", &format!("{timeout_s}s")])
        .args(["-trace_screen", "-trace_err"])
        .stdin(Stdio::null())
        .stdout(File::create(out_dir.join("sipp.stdout"))?)
        .stderr(File::create(out_dir.join("sipp.stderr"))?);
    cmd.spawn()
        .with_context(|| format!("run {} (is SIPp installed?)", args.sipp))
}

/// Successful / failed call counts from SIPp's screen log.
fn sipp_counts(out_dir: &Path) -> Option<(u64, u64)> {
    let entries = std::fs::read_dir(out_dir).ok()?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with("_screen.log") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).ok()?;
        let count = |label: &str| -> Option<u64> {
            text.lines()
                .rev()
                .find(|l| l.trim_start().starts_with(label))
                .and_then(|l| l.split('|').nth(2))
                .and_then(|v| v.trim().parse().ok())
        };
        return Some((count("Successful call")?, count("Failed call")?));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Report

/// CPU % of the sampled process, its RSS (idle MiB, busy MiB, KiB per call), our own CPU %.
struct Figures {
    cpu: Option<f64>,
    mem: Option<(f64, f64, f64)>,
    me: Option<f64>,
}

struct Report {
    mode: String,
    calls: usize,
    seconds: f64,
    ports: Vec<u16>,
    engine_ports: Vec<Option<u16>>,
    call_ids: Vec<Option<String>>,
    engine_stats: Vec<Option<Value>>,
    answered: usize,
    ended: usize,
    sipp: Option<(u64, u64)>,
    sipp_rc: Option<i32>,
    tx: TxResult,
    rx: RxResult,
    window: (i64, i64),
    proc_idle: Option<ProcSample>,
    proc_window: Option<(ProcSample, ProcSample)>,
    self_window: Option<(ProcSample, ProcSample)>,
    sampled: &'static str,
}

fn pcts(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!(null);
    }
    json!({
        "samples": h.len(),
        "p50_us": h.value_at_quantile(0.5),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

fn pcts_text(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} samples)",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len()
    )
}

impl Report {
    fn received_total(&self) -> u64 {
        self.rx.streams.iter().map(|s| s.received).sum()
    }

    /// Packets short of real time (see `RxStream::expected_wallclock`), all calls.
    fn short_of_realtime(&self) -> (u64, u64) {
        let s = &self.rx.streams;
        let wall: u64 = s.iter().map(RxStream::expected_wallclock).sum();
        let short: u64 = s
            .iter()
            .map(|x| x.expected_wallclock().saturating_sub(x.received))
            .sum();
        (short, wall)
    }

    fn totals(&self) -> (u64, u64, u64, u64, u64) {
        let s = &self.rx.streams;
        let received: u64 = s.iter().map(|x| x.received).sum();
        let expected: u64 = s.iter().map(RxStream::expected).sum();
        let dups: u64 = s.iter().map(|x| x.dups).sum();
        let reordered: u64 = s.iter().map(|x| x.reordered).sum();
        let stalls: u64 = s.iter().map(|x| x.stalls).sum();
        (received, expected, dups, reordered, stalls)
    }

    fn engine_field(&self, i: usize, f: &str) -> Option<f64> {
        self.engine_stats.get(i)?.as_ref()?.get(f)?.as_f64()
    }

    fn engine_sum(&self, f: &str) -> f64 {
        (0..self.calls)
            .filter_map(|i| self.engine_field(i, f))
            .sum()
    }

    fn proc_figures(&self) -> Figures {
        let cpu = self.proc_window.as_ref().and_then(|(a, b)| cpu_pct(a, b));
        let mem = match (self.proc_idle, self.proc_window.as_ref().map(|w| w.1)) {
            (Some(idle), Some(busy)) => Some((
                idle.rss_kib as f64 / 1024.0,
                busy.rss_kib as f64 / 1024.0,
                (busy.rss_kib as f64 - idle.rss_kib as f64) / self.calls as f64,
            )),
            _ => None,
        };
        let me = self.self_window.as_ref().and_then(|(a, b)| cpu_pct(a, b));
        Figures { cpu, mem, me }
    }

    fn call_json(&self, i: usize) -> Value {
        let Some(s) = self.rx.streams.get(i) else {
            return json!(null);
        };
        let expected = s.expected();
        let lost = expected.saturating_sub(s.received);
        json!({
            "call": i,
            "local_port": self.ports.get(i),
            "engine_port": self.engine_ports.get(i).copied().flatten(),
            "call_id": self.call_ids.get(i).cloned().flatten(),
            "received": s.received,
            "expected": expected,
            "lost": lost,
            "loss_pct": if expected > 0 { lost as f64 * 100.0 / expected as f64 } else { 0.0 },
            "duplicates": s.dups,
            "reordered": s.reordered,
            "stalls": s.stalls,
            "short_of_realtime": s.expected_wallclock().saturating_sub(s.received),
            "other_ssrc": s.other_ssrc,
            "malformed": s.malformed,
            "jitter": pcts(&s.jitter),
            "sent": self.tx.sent.get(i),
            "send_errors": self.tx.errors.get(i),
            "engine": self.engine_stats.get(i).cloned().flatten(),
        })
    }

    fn json(&self) -> Value {
        let (received, expected, dups, reordered, stalls) = self.totals();
        let lost = expected.saturating_sub(received);
        let Figures { cpu, mem, me } = self.proc_figures();
        let sent: u64 = self.tx.sent.iter().sum();
        json!({
            "mode": self.mode,
            "calls": self.calls,
            "hold_s": self.seconds,
            "answered": self.answered,
            "ended": self.ended,
            "sipp": self.sipp.map(|(ok, failed)| json!({"successful": ok, "failed": failed})),
            "sipp_exit": self.sipp_rc,
            "received": {
                "packets": received,
                "expected": expected,
                "lost": lost,
                "loss_pct": if expected > 0 { lost as f64 * 100.0 / expected as f64 } else { 0.0 },
                "duplicates": dups,
                "reordered": reordered,
                "stalls": stalls,
                "short_of_realtime": self.short_of_realtime().0,
                "expected_realtime": self.short_of_realtime().1,
                "no_kernel_timestamp": self.rx.no_timestamp,
                "recv_syscalls": self.rx.syscalls,
                "engine_packets_out": self.engine_sum("packets_out"),
                "jitter": pcts(&self.rx.total_jitter),
                "jitter_steady": pcts(&self.rx.steady_jitter),
                "phase_profile_steady": self.rx.phase.to_vec(),
                "steady_window_s": if self.window.0 > 0 { (self.window.1 - self.window.0) as f64 / 1e9 } else { 0.0 },
            },
            "sent": {
                "packets": sent,
                "errors": self.tx.errors.iter().sum::<u64>(),
                "lateness": pcts(&self.tx.lateness),
                "ticks_late": self.tx.ticks_late,
                "engine_packets_in": self.engine_sum("packets_in"),
                "engine_lost": self.engine_sum("lost"),
                "engine_stats_calls": self.engine_stats.iter().filter(|s| s.is_some()).count(),
            },
            "process": {
                "what": self.sampled,
                "cpu_pct_steady": cpu,
                "context_switches_per_s_steady": self.proc_window.as_ref().and_then(|(a, b)| ctxt_rate(a, b)),
                "rss_idle_mib": mem.map(|m| m.0),
                "rss_steady_mib": mem.map(|m| m.1),
                "rss_kib_per_call": mem.map(|m| m.2),
                "rtpload_cpu_pct_steady": me,
            },
            "per_call": (0..self.calls).map(|i| self.call_json(i)).collect::<Vec<_>>(),
        })
    }

    fn text(&self, per_call: bool) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let (received, expected, dups, reordered, stalls) = self.totals();
        let lost = expected.saturating_sub(received);
        let pct = |a: u64, b: u64| {
            if b > 0 {
                a as f64 * 100.0 / b as f64
            } else {
                0.0
            }
        };
        let _ = writeln!(o, "rtpload: {} calls, {}", self.calls, self.mode);
        let _ = writeln!(
            o,
            "  calls          : hold {:.1} s; answered {}, ended {}{}",
            self.seconds,
            self.answered,
            self.ended,
            match (self.sipp, self.sipp_rc) {
                (Some((ok, failed)), rc) => format!(
                    "; SIPp successful {ok}, failed {failed} (exit {})",
                    rc.unwrap_or(-1)
                ),
                (None, Some(rc)) => format!("; SIPp exit {rc}"),
                (None, None) => String::new(),
            }
        );
        let _ = writeln!(o, "  received (RTP to rtpload, kernel SO_TIMESTAMPNS):");
        let _ = writeln!(
            o,
            "    packets      : {received} of {expected} expected, lost {lost} ({:.4} %), duplicates {dups}, reordered {reordered}, stalls (gap >= 60 ms) {stalls}",
            pct(lost, expected)
        );
        let eout = self.engine_sum("packets_out");
        if eout > 0.0 {
            let _ = writeln!(
                o,
                "    vs engine    : engine sent {eout:.0} (media.stats packets_out); received {received} = {:.4} % not received (incl. packets in flight at BYE)",
                (eout - received as f64).max(0.0) * 100.0 / eout
            );
        }
        let (short, wall) = self.short_of_realtime();
        let _ = writeln!(
            o,
            "    real time    : {short} packets short of a 20 ms stream over each call's first..last arrival ({:.4} %)",
            pct(short, wall)
        );
        let calls_with_loss = self
            .rx
            .streams
            .iter()
            .filter(|s| s.expected() > s.received)
            .count();
        let silent = self.rx.streams.iter().filter(|s| s.received == 0).count();
        let _ = writeln!(
            o,
            "    calls        : {calls_with_loss} with loss, {silent} received nothing"
        );
        let _ = writeln!(
            o,
            "    pacing jitter: |inter-arrival - 20 ms|  {}",
            pcts_text(&self.rx.total_jitter)
        );
        if self.window.0 > 0 {
            let _ = writeln!(
                o,
                "    steady window ({:.1} s, all calls up): {}",
                (self.window.1 - self.window.0) as f64 / 1e9,
                pcts_text(&self.rx.steady_jitter)
            );
        }
        let in_window: u64 = self.rx.phase.iter().sum();
        if in_window > 0 {
            let mean = in_window as f64 / SLOTS as f64;
            let (lo, hi) = self
                .rx
                .phase
                .iter()
                .fold((u64::MAX, 0), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            let _ = writeln!(
                o,
                "    phase spread : arrivals per 1 ms of the 20 ms cycle (steady window): min {:.0} %, max {:.0} % of the mean (flat = calls evenly spread)",
                lo as f64 * 100.0 / mean,
                hi as f64 * 100.0 / mean
            );
        }
        if self.rx.no_timestamp > 0 {
            let _ = writeln!(
                o,
                "    WARNING      : {} packets without a kernel timestamp (user-space time used)",
                self.rx.no_timestamp
            );
        }
        let sent: u64 = self.tx.sent.iter().sum();
        let errors: u64 = self.tx.errors.iter().sum();
        let _ = writeln!(o, "  sent (RTP from rtpload):");
        let _ = writeln!(
            o,
            "    packets      : {sent}, send errors {errors}; 1 ms ticks more than 1 ms late: {}",
            self.tx.ticks_late
        );
        let _ = writeln!(
            o,
            "    send pacing  : lateness vs deadline  {}",
            pcts_text(&self.tx.lateness)
        );
        let stats_calls = self.engine_stats.iter().filter(|s| s.is_some()).count();
        if stats_calls > 0 {
            let pin = self.engine_sum("packets_in");
            let elost = self.engine_sum("lost");
            let jit: Vec<f64> = (0..self.calls)
                .filter_map(|i| self.engine_field(i, "jitter_ms"))
                .collect();
            let jmax = jit.iter().copied().fold(0.0, f64::max);
            let jmean = jit.iter().sum::<f64>() / jit.len().max(1) as f64;
            let drops: f64 = ["dropped_foreign", "dropped_malformed", "dropped_late"]
                .iter()
                .map(|f| self.engine_sum(f))
                .sum();
            let _ = writeln!(
                o,
                "    engine saw   : {pin:.0} packets in ({stats_calls} calls' media.stats), lost {elost:.0} ({:.4} %), RFC 3550 jitter mean {jmean:.2} ms max {jmax:.2} ms, drops {drops:.0}",
                if pin + elost > 0.0 {
                    elost * 100.0 / (pin + elost)
                } else {
                    0.0
                }
            );
        }
        let Figures { cpu, mem, me } = self.proc_figures();
        if let Some(c) = cpu {
            let cs = self
                .proc_window
                .as_ref()
                .and_then(|(a, b)| ctxt_rate(a, b))
                .unwrap_or(0.0);
            let _ = writeln!(
                o,
                "  {} process  : CPU {c:.1} % of one core over the steady window; {cs:.0} context switches/s (all threads)",
                self.sampled
            );
        }
        if let Some((idle, busy, per)) = mem {
            let _ = writeln!(
                o,
                "  {} memory   : RSS {idle:.1} MiB idle -> {busy:.1} MiB with every call up = {per:.1} KiB per call",
                self.sampled
            );
        }
        if let Some(c) = me {
            let _ = writeln!(o, "  rtpload       : CPU {c:.1} % (its own, steady window)");
        }
        // Worst calls: by loss, then by p99 jitter.
        let mut order: Vec<usize> = (0..self.calls).collect();
        order.sort_by_key(|&i| {
            std::cmp::Reverse(self.rx.streams.get(i).map_or((0, 0), |s| {
                (
                    s.expected().saturating_sub(s.received),
                    if s.jitter.is_empty() {
                        0
                    } else {
                        s.jitter.value_at_quantile(0.99)
                    },
                )
            }))
        });
        let shown: Vec<usize> = if per_call {
            (0..self.calls).collect()
        } else {
            order.into_iter().take(5).collect()
        };
        let _ = writeln!(
            o,
            "  {}:",
            if per_call { "per call" } else { "worst calls" }
        );
        let _ = writeln!(
            o,
            "    {:>5} {:>6} {:>6} {:>8} {:>8} {:>6} {:>4} {:>4} {:>9} {:>9} {:>9} {:>8} {:>9}",
            "call",
            "port",
            "engine",
            "recv",
            "expect",
            "lost",
            "dup",
            "reo",
            "jit p50",
            "jit p99",
            "jit max",
            "sent",
            "eng in"
        );
        for i in shown {
            let Some(s) = self.rx.streams.get(i) else {
                continue;
            };
            let q = |x: f64| {
                if s.jitter.is_empty() {
                    f64::NAN
                } else {
                    s.jitter.value_at_quantile(x) as f64 / 1000.0
                }
            };
            let _ = writeln!(
                o,
                "    {:>5} {:>6} {:>6} {:>8} {:>8} {:>6} {:>4} {:>4} {:>7.3}ms {:>7.3}ms {:>7.3}ms {:>8} {:>9}",
                i,
                self.ports.get(i).copied().unwrap_or(0),
                self.engine_ports
                    .get(i)
                    .copied()
                    .flatten()
                    .map_or("-".to_owned(), |p| p.to_string()),
                s.received,
                s.expected(),
                s.expected().saturating_sub(s.received),
                s.dups,
                s.reordered,
                q(0.5),
                q(0.99),
                if s.jitter.is_empty() {
                    f64::NAN
                } else {
                    s.jitter.max() as f64 / 1000.0
                },
                self.tx.sent.get(i).copied().unwrap_or(0),
                self.engine_field(i, "packets_in")
                    .map_or("-".to_owned(), |v| format!("{v:.0}")),
            );
        }
        o
    }
}
