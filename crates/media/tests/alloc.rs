//! The per-packet path does not allocate: after warm-up, `handle_rtp` + `poll_rtp`
//! (with in-band DTMF, jitter buffer, hold-prompt playback) make no heap allocations: the
//! outgoing-packet arena is reclaimed in place once the driver has dropped its packets.
#![allow(clippy::unwrap_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use frontdoor_media::call::{MediaConfig, MediaSession};
use frontdoor_media::g711::{G711, Ptime};
use frontdoor_media::prompt::Prompt;
use frontdoor_media::rtp::RtpSender;
use frontdoor_media::{PayloadType, Ssrc};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

#[test]
fn per_packet_path_is_allocation_free() {
    let remote: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let t = t0();
    let mut cfg = MediaConfig::new(G711::Pcmu, remote, Ssrc(9));
    cfg.telephone_event = None; // in-band detector on
    let mut s = MediaSession::new(t, cfg);
    assert!(s.inband_enabled());
    let pcm: Vec<i16> = (0..16000)
        .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
        .collect();
    s.set_idle_audio(Some(Prompt::from_pcm("hold", &pcm)));
    // pre-build the incoming packets so the sender side of the test does not count
    let mut tx = RtpSender::new(Ssrc(2), PayloadType::PCMU, 0, 0);
    let frames = G711::Pcmu.encode_frames(&pcm, Ptime::DEFAULT);
    let pkts: Vec<_> = (0..500)
        .map(|k| tx.audio_packet(&frames[k % frames.len()], 160))
        .collect();
    let mut run = |range: std::ops::Range<usize>| {
        for (k, p) in pkts.iter().enumerate().take(range.end).skip(range.start) {
            let now = t + Duration::from_millis(20 * k as u64);
            s.handle_rtp(now, remote, p);
            let out = s.poll_rtp(now);
            drop(out); // the driver sends and drops the packet
            while s.poll_event().is_some() {}
        }
    };
    run(0..100); // warm-up: arena, Bytes promotion, VecDeque capacity
    let before = ALLOCS.load(Ordering::Relaxed);
    run(100..500);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    // 400 packets in and 400 out: the arena is reclaimed in place once packets are dropped
    assert_eq!(allocs, 0, "{allocs} allocations for 400 packets");
}
