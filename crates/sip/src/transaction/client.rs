//! Client transactions (RFC 3261 §17.1, RFC 6026 §8.4).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{TimerConfig, TimerKind, TimerSlots, TxAction, TxState, is_final};
use crate::message::{HeaderName, Method, RequestBuilder, Response};

/// What is needed to build the ACK for a non-2xx final response (RFC 3261 §17.1.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckTemplate {
    /// Request-URI of the INVITE.
    pub uri: String,
    /// Top Via of the INVITE (same branch).
    pub via: String,
    /// From header value.
    pub from: String,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number of the INVITE.
    pub cseq: u32,
    /// Route header values of the INVITE.
    pub routes: Vec<String>,
}

impl AckTemplate {
    fn build(&self, resp: &Response) -> Bytes {
        let to = resp.headers.get(&HeaderName::To).unwrap_or("");
        let mut b = RequestBuilder::new(&Method::Ack, &self.uri)
            .header("Via", &self.via)
            .header("Max-Forwards", 70)
            .header("From", &self.from)
            .header("To", to)
            .header("Call-ID", &self.call_id)
            .header("CSeq", format_args!("{} ACK", self.cseq));
        for r in &self.routes {
            b = b.header("Route", r);
        }
        b.build()
    }
}

/// INVITE client transaction.
#[derive(Debug)]
pub struct InviteClient {
    state: TxState,
    reliable: bool,
    cfg: TimerConfig,
    request: Bytes,
    ack: AckTemplate,
    ack_bytes: Option<Bytes>,
    a_interval: Duration,
    timers: TimerSlots,
}

impl InviteClient {
    /// Start: sends the INVITE, arms A (unreliable) and B.
    pub fn new(
        now: Instant,
        request: Bytes,
        ack: AckTemplate,
        reliable: bool,
        cfg: TimerConfig,
        out: &mut Vec<TxAction>,
    ) -> Self {
        let mut tx = InviteClient {
            state: TxState::Calling,
            reliable,
            cfg,
            request,
            ack,
            ack_bytes: None,
            a_interval: cfg.t1,
            timers: TimerSlots::default(),
        };
        out.push(TxAction::Send(tx.request.clone()));
        if !reliable {
            tx.timers.arm(TimerKind::A, now + cfg.t1, out);
        }
        tx.timers.arm(TimerKind::B, now + cfg.t1x64(), out);
        tx
    }

    /// Current state.
    pub fn state(&self) -> TxState {
        self.state
    }

    /// The armed deadline of `kind`.
    pub fn timer(&self, kind: TimerKind) -> Option<Instant> {
        self.timers.get(kind)
    }

    /// A response matched this transaction.
    pub fn on_response(&mut self, now: Instant, resp: Response, out: &mut Vec<TxAction>) {
        let status = resp.status;
        match self.state {
            TxState::Calling | TxState::Proceeding => {
                self.timers.cancel(TimerKind::A);
                if status < 200 {
                    self.timers.cancel(TimerKind::B);
                    self.state = TxState::Proceeding;
                    out.push(TxAction::Response(Box::new(resp)));
                } else if status < 300 {
                    self.timers.cancel(TimerKind::B);
                    self.state = TxState::Accepted;
                    self.timers.arm(TimerKind::M, now + self.cfg.t1x64(), out);
                    out.push(TxAction::Response(Box::new(resp)));
                } else {
                    self.timers.cancel(TimerKind::B);
                    let ack = self.ack.build(&resp);
                    out.push(TxAction::Send(ack.clone()));
                    self.ack_bytes = Some(ack);
                    self.state = TxState::Completed;
                    out.push(TxAction::Response(Box::new(resp)));
                    if self.reliable {
                        self.terminate(out);
                    } else {
                        self.timers
                            .arm(TimerKind::D, now + Duration::from_secs(32), out);
                    }
                }
            }
            TxState::Accepted if (200..300).contains(&status) => {
                out.push(TxAction::Response(Box::new(resp)));
            }
            TxState::Completed => {
                if is_final(status)
                    && status >= 300
                    && let Some(a) = &self.ack_bytes
                {
                    out.push(TxAction::Send(a.clone()));
                }
            }
            _ => {}
        }
    }

    /// A timer fired.
    pub fn on_timer(
        &mut self,
        now: Instant,
        kind: TimerKind,
        deadline: Instant,
        out: &mut Vec<TxAction>,
    ) {
        if !self.timers.take_due(kind, deadline) {
            return;
        }
        match (kind, self.state) {
            (TimerKind::A, TxState::Calling) => {
                out.push(TxAction::Send(self.request.clone()));
                self.a_interval *= 2;
                self.timers.arm(TimerKind::A, now + self.a_interval, out);
            }
            (TimerKind::B, TxState::Calling) => {
                out.push(TxAction::Timeout);
                self.terminate(out);
            }
            (TimerKind::D, TxState::Completed) | (TimerKind::M, TxState::Accepted) => {
                self.terminate(out)
            }
            _ => {}
        }
    }

    /// Transport failure: report timeout and terminate.
    pub fn on_transport_error(&mut self, out: &mut Vec<TxAction>) {
        if matches!(self.state, TxState::Calling | TxState::Proceeding) {
            out.push(TxAction::Timeout);
        }
        self.terminate(out);
    }

    fn terminate(&mut self, out: &mut Vec<TxAction>) {
        self.state = TxState::Terminated;
        self.timers.clear();
        out.push(TxAction::Terminated);
    }
}

/// Non-INVITE client transaction.
#[derive(Debug)]
pub struct NonInviteClient {
    state: TxState,
    reliable: bool,
    cfg: TimerConfig,
    request: Bytes,
    e_interval: Duration,
    timers: TimerSlots,
}

impl NonInviteClient {
    /// Start: sends the request, arms E (unreliable) and F.
    pub fn new(
        now: Instant,
        request: Bytes,
        reliable: bool,
        cfg: TimerConfig,
        out: &mut Vec<TxAction>,
    ) -> Self {
        let mut tx = NonInviteClient {
            state: TxState::Trying,
            reliable,
            cfg,
            request,
            e_interval: cfg.t1,
            timers: TimerSlots::default(),
        };
        out.push(TxAction::Send(tx.request.clone()));
        if !reliable {
            tx.timers.arm(TimerKind::E, now + cfg.t1, out);
        }
        tx.timers.arm(TimerKind::F, now + cfg.t1x64(), out);
        tx
    }

    /// Current state.
    pub fn state(&self) -> TxState {
        self.state
    }

    /// The armed deadline of `kind`.
    pub fn timer(&self, kind: TimerKind) -> Option<Instant> {
        self.timers.get(kind)
    }

    /// A response matched this transaction.
    pub fn on_response(&mut self, now: Instant, resp: Response, out: &mut Vec<TxAction>) {
        match self.state {
            TxState::Trying | TxState::Proceeding => {
                if resp.status < 200 {
                    self.state = TxState::Proceeding;
                    out.push(TxAction::Response(Box::new(resp)));
                } else {
                    self.timers.cancel(TimerKind::E);
                    self.timers.cancel(TimerKind::F);
                    self.state = TxState::Completed;
                    out.push(TxAction::Response(Box::new(resp)));
                    if self.reliable {
                        self.terminate(out);
                    } else {
                        self.timers.arm(TimerKind::K, now + self.cfg.t4, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// A timer fired.
    pub fn on_timer(
        &mut self,
        now: Instant,
        kind: TimerKind,
        deadline: Instant,
        out: &mut Vec<TxAction>,
    ) {
        if !self.timers.take_due(kind, deadline) {
            return;
        }
        match (kind, self.state) {
            (TimerKind::E, TxState::Trying) => {
                out.push(TxAction::Send(self.request.clone()));
                self.e_interval = (self.e_interval * 2).min(self.cfg.t2);
                self.timers.arm(TimerKind::E, now + self.e_interval, out);
            }
            (TimerKind::E, TxState::Proceeding) => {
                out.push(TxAction::Send(self.request.clone()));
                self.e_interval = self.cfg.t2;
                self.timers.arm(TimerKind::E, now + self.e_interval, out);
            }
            (TimerKind::F, TxState::Trying | TxState::Proceeding) => {
                out.push(TxAction::Timeout);
                self.terminate(out);
            }
            (TimerKind::K, TxState::Completed) => self.terminate(out),
            _ => {}
        }
    }

    /// Transport failure.
    pub fn on_transport_error(&mut self, out: &mut Vec<TxAction>) {
        if matches!(self.state, TxState::Trying | TxState::Proceeding) {
            out.push(TxAction::Timeout);
        }
        self.terminate(out);
    }

    fn terminate(&mut self, out: &mut Vec<TxAction>) {
        self.state = TxState::Terminated;
        self.timers.clear();
        out.push(TxAction::Terminated);
    }
}
