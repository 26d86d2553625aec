//! The call application: what the engine does with each call the SIP user agent reports.
//!
//! Plain state, no I/O: it takes the UA's events with `now`, drives the UA (ring, answer,
//! reject, hang up), owns the RTP port pool and emits the call events. The tokio driver calls
//! it; tests call it directly with simulated time.
//!
//! Behaviour until the IVR arrives: the test number `ring` rings for `ring_seconds` before
//! answering (so CANCEL can be tested); `answer` and every other number is answered at once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use frontdoor_sip::sdp::{Codec, Direction, LocalMedia};
use frontdoor_sip::{CallHandle, EndCause, Transport, UaEvent, UserAgent};

use crate::config::Config;
use crate::events::{EventBody, EventSink};
use crate::ports::PortPool;

#[derive(Debug)]
struct Call {
    call_id: Arc<str>,
    received_at: Instant,
    answered_at: Option<Instant>,
    port: Option<u16>,
}

/// The call application state.
#[derive(Debug)]
pub struct CallApp {
    calls: HashMap<CallHandle, Call>,
    ports: PortPool,
    events: EventSink,
    answer_timers: BinaryHeap<Reverse<(Instant, u64)>>,
    ring_for: Duration,
    media_ip: IpAddr,
    config: Arc<Config>,
    total: u64,
}

impl CallApp {
    /// A new application answering with media on `media_ip`, ports from `ports`.
    pub fn new(config: Arc<Config>, media_ip: IpAddr, ports: PortPool, events: EventSink) -> Self {
        Self {
            calls: HashMap::new(),
            ports,
            events,
            answer_timers: BinaryHeap::new(),
            ring_for: Duration::from_secs(config.calls.ring_seconds),
            media_ip,
            config,
            total: 0,
        }
    }

    /// Calls up now.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Calls handled since start.
    pub fn total_calls(&self) -> u64 {
        self.total
    }

    /// RTP ports in use.
    pub fn ports_in_use(&self) -> usize {
        self.ports.in_use()
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.answer_timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs due timers (the `ring` number's delayed answer).
    pub fn handle_timeout(&mut self, now: Instant, ua: &mut UserAgent) {
        while let Some(Reverse((at, handle))) = self.answer_timers.peek().copied() {
            if at > now {
                break;
            }
            self.answer_timers.pop();
            let handle = CallHandle(handle);
            if self.calls.get(&handle).is_some_and(|c| c.answered_at.is_none()) {
                self.answer(now, ua, handle);
            }
        }
    }

    /// Hangs up every call (shutdown).
    pub fn hangup_all(&mut self, now: Instant, ua: &mut UserAgent) {
        let handles: Vec<CallHandle> = self.calls.keys().copied().collect();
        for h in handles {
            if let Err(e) = ua.hangup(now, h) {
                tracing::debug!(call = %h, error = %e, "hangup at shutdown");
            }
        }
    }

    /// Handles one event from the user agent.
    pub fn handle_event(&mut self, now: Instant, ua: &mut UserAgent, event: UaEvent) {
        match event {
            UaEvent::IncomingCall {
                call, call_id, from_uri, to_uri, request_user, source, transport, ..
            } => {
                let call_id: Arc<str> = Arc::from(call_id);
                self.total += 1;
                self.events.emit(
                    Some(&call_id),
                    EventBody::CallReceived {
                        from: from_uri,
                        to: to_uri,
                        number: request_user.clone(),
                        source,
                        transport: match transport {
                            Transport::Udp => "udp",
                            Transport::Tcp => "tcp",
                        },
                    },
                );
                let refuse = if !self.config.trunks.allows(source.ip()) {
                    Some((403, "source not in trunk allow-list"))
                } else if self.calls.len() >= self.config.calls.max_calls {
                    Some((503, "max_calls reached"))
                } else {
                    None
                };
                let port = if refuse.is_none() { self.ports.allocate() } else { None };
                let refuse = refuse.or(if port.is_none() { Some((503, "no RTP port free")) } else { None });
                self.calls.insert(call, Call { call_id: call_id.clone(), received_at: now, answered_at: None, port });
                if let Some((status, reason)) = refuse {
                    self.events.emit(Some(&call_id), EventBody::CallRejected { status, reason });
                    let retry = (status == 503).then_some(self.config.overload.retry_after_s);
                    if let Err(e) = ua.reject(now, call, status, retry) {
                        tracing::warn!(call = %call, error = %e, "reject failed");
                    }
                    return;
                }
                if let Err(e) = ua.ring(now, call) {
                    tracing::debug!(call = %call, error = %e, "ring failed");
                    return;
                }
                self.events.emit(Some(&call_id), EventBody::CallRinging {});
                if request_user == "ring" {
                    self.answer_timers.push(Reverse((now + self.ring_for, call.0)));
                } else {
                    self.answer(now, ua, call);
                }
            }
            UaEvent::CallAnswered { call, .. } => {
                if let Some(c) = self.calls.get(&call) {
                    self.events.emit(Some(&c.call_id), EventBody::CallConfirmed {});
                }
            }
            UaEvent::MediaUpdate { call, media } => {
                if let Some(c) = self.calls.get(&call) {
                    self.events.emit(
                        Some(&c.call_id),
                        EventBody::CallMediaChanged {
                            direction: direction_name(media.direction),
                            remote_rtp: media.remote,
                        },
                    );
                }
            }
            UaEvent::CallEnded { call, cause } => {
                let Some(c) = self.calls.remove(&call) else { return };
                if let Some(p) = c.port {
                    self.ports.release(p);
                }
                let (cause_name, status) = end_cause(&cause);
                self.events.emit(
                    Some(&c.call_id),
                    EventBody::CallEnded {
                        cause: cause_name,
                        status,
                        duration_ms: millis(now.saturating_duration_since(c.received_at)),
                        talk_ms: c.answered_at.map_or(0, |a| millis(now.saturating_duration_since(a))),
                    },
                );
            }
            _ => {}
        }
    }

    fn answer(&mut self, now: Instant, ua: &mut UserAgent, call: CallHandle) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let Some(port) = c.port else { return };
        let local = LocalMedia {
            address: self.media_ip,
            port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            direction: Direction::SendRecv,
        };
        match ua.answer(now, call, &local) {
            Ok(media) => {
                c.answered_at = Some(now);
                self.events.emit(
                    Some(&c.call_id),
                    EventBody::CallAnswered {
                        codec: media.as_ref().map(|m| m.codec.name()),
                        rtp_port: port,
                        remote_rtp: media.as_ref().and_then(|m| m.remote),
                        setup_ms: millis(now.saturating_duration_since(c.received_at)),
                    },
                );
            }
            Err(e) => {
                tracing::debug!(call = %call, error = %e, "answer failed");
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::SendRecv => "sendrecv",
        Direction::SendOnly => "sendonly",
        Direction::RecvOnly => "recvonly",
        Direction::Inactive => "inactive",
    }
}

fn end_cause(c: &EndCause) -> (&'static str, Option<u16>) {
    match c {
        EndCause::RemoteBye => ("remote_bye", None),
        EndCause::LocalBye => ("local_bye", None),
        EndCause::Cancelled => ("cancelled", Some(487)),
        EndCause::AckTimeout => ("ack_timeout", None),
        EndCause::Rejected(s) => ("rejected", Some(*s)),
        EndCause::RemoteRejected(s) => ("remote_rejected", Some(*s)),
        EndCause::Timeout => ("timeout", Some(408)),
        EndCause::TransportError => ("transport_error", Some(503)),
        EndCause::SessionExpired => ("session_expired", None),
        #[allow(unreachable_patterns)]
        _ => ("other", None),
    }
}
