//! Speech turns in a [`MediaSession`]: barge-in on real speech over the prompt's own echo, no
//! barge-in on the echo alone, key-press barge-in, endpointing of the caller's utterance.
//! The caller is simulated sample-accurately: its stream is the engine's own RTP output,
//! decoded, delayed and attenuated (echo), plus line noise, plus espeak-ng speech.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use frontdoor_media::barge::BargeInConfig;
use frontdoor_media::call::{BargeInCause, ListenConfig, MediaConfig, MediaEvent, MediaSession};
use frontdoor_media::dtmf::rfc4733::encode_event_payload;
use frontdoor_media::g711::G711;
use frontdoor_media::prompt::Prompt;
use frontdoor_media::rtp::{PayloadMap, RtpSender, parse_rtp};
use frontdoor_media::vad::{EndReason, VadConfig, VadEvent, power, to_db};
use frontdoor_media::{PayloadType, Ssrc};

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

const SDP: &str = "192.0.2.10:40000";

fn remote() -> SocketAddr {
    SDP.parse().unwrap()
}

fn session(t: Instant) -> MediaSession {
    let mut cfg = MediaConfig::new(G711::Pcmu, remote(), Ssrc(0xF00D));
    cfg.telephone_event = PayloadType::new(101);
    MediaSession::new(t, cfg)
}

fn espeak(text: &str) -> Vec<i16> {
    let dir = std::env::temp_dir().join(format!("frontdoor-speech-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{n}.wav"));
    let st = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .unwrap_or_else(|e| panic!("espeak-ng is needed (apt-get install espeak-ng): {e}"));
    assert!(st.success());
    let p = Prompt::load(&path).unwrap();
    G711::Pcmu.decode(p.encoded(G711::Pcmu))
}

fn at_level(pcm: &[i16], db: f32) -> Vec<i16> {
    let active: Vec<f32> = pcm
        .chunks(160)
        .map(power)
        .filter(|&p| to_db(p) > -50.0)
        .collect();
    let mean = active.iter().sum::<f32>() / active.len() as f32;
    let g = 10f32.powf((db - to_db(mean)) / 20.0);
    pcm.iter()
        .map(|&s| (f32::from(s) * g).clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// The engine's prompt: prompts/welcome.wav + a spoken menu prompt, at −20 dBFS.
fn prompt() -> Prompt {
    let welcome =
        Prompt::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts/welcome.wav"))
            .unwrap();
    let mut pcm = G711::Pcmu.decode(welcome.encoded(G711::Pcmu));
    pcm.extend(vec![0i16; 1600]);
    pcm.extend(espeak("In a few words, how can I help you today?"));
    Prompt::from_pcm("menu", &at_level(&pcm, -20.0))
}

/// A simulated caller whose line echoes what the engine sends.
struct Line {
    erl_db: f32,
    delay: usize,
    /// Everything the engine sent, decoded.
    sent: Vec<i16>,
    speech: Vec<i16>,
    speech_at: usize,
    seed: u32,
    tx: RtpSender,
    t0: Instant,
    tick: usize,
    events: Vec<(usize, MediaEvent)>,
    /// Per tick: the outgoing payload was silence.
    silent_out: Vec<bool>,
}

impl Line {
    fn new(t0: Instant, erl_db: f32, delay_ms: usize) -> Self {
        Line {
            erl_db,
            delay: delay_ms * 8,
            sent: Vec::new(),
            speech: Vec::new(),
            speech_at: usize::MAX,
            seed: 12345,
            tx: RtpSender::new(Ssrc(0xCA11), PayloadType::PCMU, 1, 0),
            t0,
            tick: 0,
            events: Vec::new(),
            silent_out: Vec::new(),
        }
    }

    fn noise(&mut self) -> f32 {
        // xorshift, uniform ±1 → line noise around −55 dBFS
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        (self.seed as f32 / u32::MAX as f32 * 2.0 - 1.0) * 100.0
    }

    /// The caller's frame for this tick.
    fn caller_frame(&mut self) -> Vec<i16> {
        let g = 10f32.powf(-self.erl_db / 20.0);
        (self.tick * 160..(self.tick + 1) * 160)
            .map(|k| {
                let echo = k
                    .checked_sub(self.delay)
                    .and_then(|j| self.sent.get(j))
                    .map_or(0.0, |&s| f32::from(s) * g);
                let speech = k
                    .checked_sub(self.speech_at)
                    .and_then(|j| self.speech.get(j))
                    .map_or(0.0, |&s| f32::from(s));
                (echo + speech + self.noise()).clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    /// One 20 ms tick: the engine sends, then the caller's frame arrives.
    fn step(&mut self, s: &mut MediaSession, extra: Option<bytes::Bytes>) {
        let now = self.t0 + Duration::from_millis(self.tick as u64 * 20);
        let pm = PayloadMap::g711(G711::Pcmu, PayloadType::new(101));
        let mut silent = true;
        while let Some(p) = s.poll_rtp(now) {
            let pkt = parse_rtp(&p, &pm).unwrap();
            if pkt.payload_type == PayloadType::PCMU {
                silent = pkt.payload.iter().all(|&b| b == 0xFF || b == 0x7F);
                self.sent.extend(G711::Pcmu.decode(pkt.payload));
            } else {
                self.sent.extend(vec![0i16; 160]);
            }
        }
        self.silent_out.push(silent);
        while let Some(e) = s.poll_event() {
            self.events.push((self.tick, e));
        }
        let frame = self.caller_frame();
        let payload = G711::Pcmu.encode(&frame);
        let pkt = self.tx.audio_packet(&payload, 160);
        s.handle_rtp(now + Duration::from_millis(5), remote(), &pkt);
        if let Some(p) = extra {
            s.handle_rtp(now + Duration::from_millis(6), remote(), &p);
        }
        self.tick += 1;
    }

    fn barge_ins(&self) -> Vec<(usize, MediaEvent)> {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, MediaEvent::BargeIn { .. }))
            .copied()
            .collect()
    }
}

fn listen_cfg(barge: bool) -> ListenConfig {
    ListenConfig {
        vad: VadConfig {
            no_input: Duration::from_secs(2),
            ..VadConfig::default()
        },
        barge_in: barge.then(BargeInConfig::default),
    }
}

#[test]
fn the_prompts_own_echo_never_barges_in_and_silence_is_no_input() {
    let p = prompt();
    let ticks = p.samples() / 160 + 150;
    for erl in [12.0, 18.0, 24.0, 30.0] {
        for delay in [20, 40, 60, 100] {
            let t = t0();
            let mut s = session(t);
            let mut line = Line::new(t, erl, delay);
            // as the server does it: the turn first, then the prompt (the no-input timer
            // must still start at the prompt's end)
            s.listen(listen_cfg(true));
            s.play(p.clone());
            for _ in 0..ticks {
                line.step(&mut s, None);
            }
            assert!(
                line.barge_ins().is_empty(),
                "ERL {erl} delay {delay}: {:?}",
                line.barge_ins()
            );
            let vad: Vec<_> = line
                .events
                .iter()
                .filter_map(|(_, e)| match e {
                    MediaEvent::Vad(v) => Some(*v),
                    _ => None,
                })
                .collect();
            assert_eq!(vad.len(), 1, "ERL {erl} delay {delay}: {vad:?}");
            let VadEvent::NoInput { at } = vad[0] else {
                panic!("ERL {erl} delay {delay}: {vad:?}")
            };
            // 2 s after the prompt's end (on the caller's clock, within the jitter buffer's delay)
            let prompt_end = p.samples() as u64;
            assert!(
                at >= prompt_end + 16000 - 800 && at <= prompt_end + 16000 + 1600,
                "at {at}"
            );
            assert!(!s.is_listening());
        }
    }
}

#[test]
fn caller_speech_over_the_echo_stops_the_prompt_at_once_and_is_endpointed() {
    let p = prompt();
    let speech = at_level(&espeak("I lost my card"), -22.0);
    let first_loud = speech
        .chunks(160)
        .position(|f| to_db(power(f)) > -40.0)
        .unwrap();
    for erl in [12.0, 20.0, 30.0] {
        for delay in [20, 60] {
            let t = t0();
            let mut s = session(t);
            let mut line = Line::new(t, erl, delay);
            line.speech = speech.clone();
            line.speech_at = 12_000; // 1.5 s into the prompt
            s.play(p.clone());
            s.listen(listen_cfg(true));
            let onset_tick = 12_000 / 160 + first_loud;
            let mut stopped_tick = None;
            for _ in 0..400 {
                line.step(&mut s, None);
                if stopped_tick.is_none() && !line.barge_ins().is_empty() {
                    stopped_tick = Some(line.tick);
                }
            }
            let b = line.barge_ins();
            assert_eq!(b.len(), 1, "ERL {erl} delay {delay}: {b:?}");
            let (
                tick,
                MediaEvent::BargeIn {
                    at,
                    detected_at,
                    cause,
                },
            ) = b[0]
            else {
                unreachable!()
            };
            assert_eq!(cause, BargeInCause::Speech);
            // decided ≤ 60 ms after the caller's first loud frame (caller's clock)...
            assert!(
                detected_at - at <= 480,
                "ERL {erl} delay {delay}: {at}..{detected_at}"
            );
            // ... which reaches the session after the jitter buffer's delay; the prompt stops
            // on the tick of the decision: the packet sent then is already silence
            let jb = s.stats().playout_delay.as_millis() as usize / 20;
            assert!(
                tick <= onset_tick + jb + 4,
                "ERL {erl} delay {delay}: barge-in at tick {tick}, onset {onset_tick}, jb {jb}"
            );
            assert!(
                !line.silent_out[tick - 1],
                "the prompt was playing just before"
            );
            assert!(
                line.silent_out[tick..].iter().all(|&x| x),
                "prompt stopped at tick {tick}"
            );
            assert!(!s.is_playing());
            // the endpointer: started near the onset, ended after the speech + 800 ms
            let vad: Vec<_> = line
                .events
                .iter()
                .filter_map(|(_, e)| match e {
                    MediaEvent::Vad(v) => Some(*v),
                    _ => None,
                })
                .collect();
            assert!(
                matches!(vad.first(), Some(VadEvent::SpeechStarted { .. })),
                "{vad:?}"
            );
            let Some(VadEvent::SpeechEnded {
                start,
                end,
                reason: EndReason::Silence,
                ..
            }) = vad.get(1).copied()
            else {
                panic!("ERL {erl} delay {delay}: {vad:?}")
            };
            let spoken = speech
                .chunks(160)
                .filter(|f| to_db(power(f)) > -40.0)
                .count() as u64
                * 160;
            assert!(
                end - start + 1600 >= spoken,
                "utterance {start}..{end} shorter than the speech {spoken}"
            );
            let utt = s.take_utterance();
            assert!(utt.len() as u64 >= end - start, "{} samples", utt.len());
            assert!(s.take_utterance().is_empty(), "taken once");
        }
    }
}

#[test]
fn a_key_barges_in_and_speech_is_ignored_without_barge_in() {
    let p = prompt();
    // a key (RFC 4733) during the prompt: stopped at once, BargeIn before the Dtmf event
    let t = t0();
    let mut s = session(t);
    let mut line = Line::new(t, 20.0, 40);
    s.play(p.clone());
    s.listen(listen_cfg(true));
    let mut te = RtpSender::new(Ssrc(0xCA11), PayloadType::new(101).unwrap(), 500, 0);
    for i in 0..60 {
        let extra = (20..24).contains(&i).then(|| {
            let payload = encode_event_payload(5, i == 23, 10, 160 * (i as u16 - 19));
            te.event_packet(PayloadType::new(101).unwrap(), i == 20, 80_000, &payload)
        });
        line.step(&mut s, extra);
    }
    let kinds: Vec<&str> = line
        .events
        .iter()
        .map(|(_, e)| match e {
            MediaEvent::BargeIn {
                cause: BargeInCause::Dtmf,
                ..
            } => "barge-dtmf",
            MediaEvent::Dtmf(_) => "dtmf",
            _ => "other",
        })
        .collect();
    assert_eq!(&kinds[..2], &["barge-dtmf", "dtmf"], "{:?}", line.events);
    assert!(!s.is_playing());

    // without barge-in the same speech plays through: the prompt runs to its end, and the
    // endpointer only listens afterwards (the speech during the prompt is not an utterance)
    let t = t0();
    let mut s = session(t);
    let mut line = Line::new(t, 20.0, 40);
    line.speech = at_level(&espeak("I lost my card"), -22.0);
    line.speech_at = 8000;
    s.play(p.clone());
    s.listen(listen_cfg(false));
    let ticks = p.samples() / 160;
    for _ in 0..ticks {
        line.step(&mut s, None);
    }
    assert!(line.events.is_empty(), "{:?}", line.events);
    assert!(line.silent_out[5..ticks - 10].iter().any(|&x| !x));
}
