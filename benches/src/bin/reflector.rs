//! A minimal UDP reflector: the "floor" for media load on this box.
//!
//! It binds one socket per call (`--base`, `--base + 2`, ... — the same layout as the engine,
//! one even port per call leg), waits on all of them with one epoll (`mio`), and for every ready
//! socket reads what is queued with `recvmmsg` and echoes each datagram back to its source with
//! `sendmmsg`. Nothing else: no parsing, no timers, no copies. Driven by
//! `rtpload --reflector-ports BASE --calls N`, it measures what one core can turn around with
//! this socket layout, which no engine doing real work beats.
//!
//! ```text
//! reflector --base 30000 --calls 1500 --seconds 30
//! ```

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};

/// Datagrams read (and echoed) per system call.
const BATCH: usize = 32;
/// Largest datagram echoed whole; RTP here is 172 bytes.
const MAX_DGRAM: usize = 2048;

#[derive(Debug, Parser)]
#[command(about = "Echo UDP datagrams on N sockets (one per call): the media floor")]
struct Args {
    /// First port (even); socket i binds BASE + 2*i.
    #[arg(long)]
    base: u16,
    /// Number of sockets (calls).
    #[arg(long)]
    calls: usize,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    ip: Ipv4Addr,
    /// Exit after this many seconds (bounded run).
    #[arg(long, default_value_t = 600.0)]
    seconds: f64,
    /// Poll the sockets every N ms (`epoll_wait` with a zero timeout) instead of sleeping in
    /// `epoll_wait` until a datagram arrives: on loopback a sleeping receiver makes every
    /// sender pay for its wake-up. 0 = block (echo at once).
    #[arg(long, default_value_t = 0)]
    poll_ms: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut poll = Poll::new()?;
    let mut sockets = Vec::with_capacity(args.calls);
    for i in 0..args.calls {
        let port = u16::try_from(usize::from(args.base) + 2 * i)
            .ok()
            .context("port range past 65535")?;
        let s = UdpSocket::bind(SocketAddr::from((args.ip, port)))
            .with_context(|| format!("bind {}:{port}", args.ip))?;
        s.set_nonblocking(true)?;
        let mut s = mio::net::UdpSocket::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)?;
        sockets.push(s);
    }
    eprintln!(
        "reflector: {} sockets on {}:{}..{} (pid {})",
        args.calls,
        args.ip,
        args.base,
        usize::from(args.base) + 2 * args.calls.saturating_sub(1),
        std::process::id()
    );

    let mut bufs = [[0u8; MAX_DGRAM]; BATCH];
    let mut rx_hdrs = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut tx_hdrs = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let mut events = Events::with_capacity(4096);
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds.max(0.0));
    let (mut pkts_in, mut pkts_out, mut send_drops, mut syscalls) = (0u64, 0u64, 0u64, 0u64);

    let period = Duration::from_millis(args.poll_ms.min(1000));
    let mut next = Instant::now();
    while Instant::now() < deadline {
        let timeout = if period.is_zero() {
            Some(Duration::from_millis(100))
        } else {
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
            Some(Duration::ZERO)
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("poll: {e}"),
        }
        for ev in events.iter() {
            let Some(sock) = sockets.get(ev.token().0) else {
                continue;
            };
            let fd = sock.as_raw_fd();
            // mio is edge-triggered: read until a batch comes back short.
            loop {
                let mut meta = [(0usize, None::<SockaddrIn>); BATCH];
                let got = {
                    let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
                    syscalls += 1;
                    match recvmmsg(
                        fd,
                        &mut rx_hdrs,
                        iovs.iter_mut(),
                        MsgFlags::MSG_DONTWAIT,
                        None,
                    ) {
                        Ok(msgs) => {
                            let mut n = 0;
                            for (m, slot) in msgs.zip(meta.iter_mut()) {
                                *slot = (m.bytes, m.address);
                                n += 1;
                            }
                            n
                        }
                        Err(Errno::EAGAIN) => 0,
                        // ICMP errors from a peer that went away: the next read goes on.
                        Err(Errno::ECONNREFUSED | Errno::EINTR) => continue,
                        Err(e) => bail!("recvmmsg: {e}"),
                    }
                };
                if got == 0 {
                    break;
                }
                pkts_in += got as u64;
                let mut slices: [[IoSlice<'_>; 1]; BATCH] =
                    std::array::from_fn(|_| [IoSlice::new(&[])]);
                let mut addrs = [None::<SockaddrIn>; BATCH];
                let mut n = 0;
                for ((len, addr), buf) in meta.iter().zip(bufs.iter()).take(got) {
                    if let (Some(a), Some(s), Some(d)) = (addr, slices.get_mut(n), addrs.get_mut(n))
                    {
                        *s = [IoSlice::new(buf.get(..*len).unwrap_or_default())];
                        *d = Some(*a);
                        n += 1;
                    }
                }
                let mut off = 0;
                while off < n {
                    syscalls += 1;
                    match sendmmsg(
                        fd,
                        &mut tx_hdrs,
                        slices.get(off..n).unwrap_or_default(),
                        addrs.get(off..n).unwrap_or_default(),
                        no_cmsgs,
                        MsgFlags::MSG_DONTWAIT,
                    ) {
                        Ok(r) => {
                            let sent = r.count();
                            if sent == 0 {
                                send_drops += (n - off) as u64;
                                break;
                            }
                            pkts_out += sent as u64;
                            off += sent;
                        }
                        Err(Errno::EINTR) => {}
                        Err(_) => {
                            // Full send buffer or a peer gone: drop the rest, count it.
                            send_drops += (n - off) as u64;
                            break;
                        }
                    }
                }
                if got < BATCH {
                    break;
                }
            }
        }
    }
    println!(
        "reflector: packets in {pkts_in}, out {pkts_out}, send drops {send_drops}, syscalls {syscalls}"
    );
    Ok(())
}
