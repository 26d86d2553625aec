//! Server transactions (RFC 3261 §17.2, RFC 6026 §8.7).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{TimerConfig, TimerKind, TimerSlots, TxAction, TxState};

/// INVITE server transaction.
#[derive(Debug)]
pub struct InviteServer {
    state: TxState,
    reliable: bool,
    cfg: TimerConfig,
    last: Option<Bytes>,
    last_status: u16,
    g_interval: Duration,
    timers: TimerSlots,
}

impl InviteServer {
    /// Created on a new INVITE, in Proceeding. The TU sends `100 Trying` through [`Self::send_response`].
    pub fn new(reliable: bool, cfg: TimerConfig) -> Self {
        InviteServer {
            state: TxState::Proceeding,
            reliable,
            cfg,
            last: None,
            last_status: 0,
            g_interval: cfg.t1,
            timers: TimerSlots::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> TxState {
        self.state
    }

    /// Status of the last response sent (0 = none).
    pub fn last_status(&self) -> u16 {
        self.last_status
    }

    /// The armed deadline of `kind`.
    pub fn timer(&self, kind: TimerKind) -> Option<Instant> {
        self.timers.get(kind)
    }

    /// The INVITE was retransmitted: resend the last response (Proceeding/Completed).
    /// Returns whether something was resent.
    pub fn on_retransmission(&mut self, out: &mut Vec<TxAction>) -> bool {
        match (self.state, &self.last) {
            (TxState::Proceeding | TxState::Completed, Some(last)) => {
                out.push(TxAction::Send(last.clone()));
                true
            }
            _ => false,
        }
    }

    /// The TU sends a response.
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        bytes: Bytes,
        out: &mut Vec<TxAction>,
    ) {
        match self.state {
            TxState::Proceeding => {
                out.push(TxAction::Send(bytes.clone()));
                self.last_status = status;
                if status < 200 {
                    self.last = Some(bytes);
                } else if status < 300 {
                    self.last = None;
                    self.state = TxState::Accepted;
                    self.timers.arm(TimerKind::L, now + self.cfg.t1x64(), out);
                } else {
                    self.last = Some(bytes);
                    self.state = TxState::Completed;
                    if !self.reliable {
                        self.g_interval = self.cfg.t1;
                        self.timers.arm(TimerKind::G, now + self.cfg.t1, out);
                    }
                    self.timers.arm(TimerKind::H, now + self.cfg.t1x64(), out);
                }
            }
            TxState::Accepted if (200..300).contains(&status) => {
                out.push(TxAction::Send(bytes));
            }
            _ => {}
        }
    }

    /// An ACK matched this transaction.
    pub fn on_ack(&mut self, now: Instant, out: &mut Vec<TxAction>) {
        match self.state {
            TxState::Completed => {
                self.timers.cancel(TimerKind::G);
                self.timers.cancel(TimerKind::H);
                self.state = TxState::Confirmed;
                if self.reliable {
                    self.terminate(out);
                } else {
                    self.timers.arm(TimerKind::I, now + self.cfg.t4, out);
                }
            }
            TxState::Accepted => out.push(TxAction::PassAck),
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
            (TimerKind::G, TxState::Completed) => {
                if let Some(last) = &self.last {
                    out.push(TxAction::Send(last.clone()));
                }
                self.g_interval = (self.g_interval * 2).min(self.cfg.t2);
                self.timers.arm(TimerKind::G, now + self.g_interval, out);
            }
            (TimerKind::H, TxState::Completed) => {
                out.push(TxAction::Timeout);
                self.terminate(out);
            }
            (TimerKind::I, TxState::Confirmed) | (TimerKind::L, TxState::Accepted) => {
                self.terminate(out)
            }
            _ => {}
        }
    }

    /// Transport failure.
    pub fn on_transport_error(&mut self, out: &mut Vec<TxAction>) {
        self.terminate(out);
    }

    fn terminate(&mut self, out: &mut Vec<TxAction>) {
        self.state = TxState::Terminated;
        self.timers.clear();
        self.last = None;
        out.push(TxAction::Terminated);
    }
}

/// Non-INVITE server transaction.
#[derive(Debug)]
pub struct NonInviteServer {
    state: TxState,
    reliable: bool,
    cfg: TimerConfig,
    last: Option<Bytes>,
    timers: TimerSlots,
}

impl NonInviteServer {
    /// Created on a new request, in Trying.
    pub fn new(reliable: bool, cfg: TimerConfig) -> Self {
        NonInviteServer {
            state: TxState::Trying,
            reliable,
            cfg,
            last: None,
            timers: TimerSlots::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> TxState {
        self.state
    }

    /// The armed deadline of `kind`.
    pub fn timer(&self, kind: TimerKind) -> Option<Instant> {
        self.timers.get(kind)
    }

    /// The request was retransmitted. Returns whether something was resent.
    pub fn on_retransmission(&mut self, out: &mut Vec<TxAction>) -> bool {
        match (self.state, &self.last) {
            (TxState::Proceeding | TxState::Completed, Some(last)) => {
                out.push(TxAction::Send(last.clone()));
                true
            }
            _ => false,
        }
    }

    /// The TU sends a response.
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        bytes: Bytes,
        out: &mut Vec<TxAction>,
    ) {
        if !matches!(self.state, TxState::Trying | TxState::Proceeding) {
            return;
        }
        out.push(TxAction::Send(bytes.clone()));
        self.last = Some(bytes);
        if status < 200 {
            self.state = TxState::Proceeding;
        } else {
            self.state = TxState::Completed;
            if self.reliable {
                self.terminate(out);
            } else {
                self.timers.arm(TimerKind::J, now + self.cfg.t1x64(), out);
            }
        }
    }

    /// A timer fired.
    pub fn on_timer(
        &mut self,
        _now: Instant,
        kind: TimerKind,
        deadline: Instant,
        out: &mut Vec<TxAction>,
    ) {
        if self.timers.take_due(kind, deadline)
            && kind == TimerKind::J
            && self.state == TxState::Completed
        {
            self.terminate(out);
        }
    }

    /// Transport failure.
    pub fn on_transport_error(&mut self, out: &mut Vec<TxAction>) {
        self.terminate(out);
    }

    fn terminate(&mut self, out: &mut Vec<TxAction>) {
        self.state = TxState::Terminated;
        self.timers.clear();
        self.last = None;
        out.push(TxAction::Terminated);
    }
}
