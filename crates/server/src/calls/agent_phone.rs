//! Ringing an agent's phones for an ACD offer: every registered contact of the agent at once
//! (forking). The first to answer wins and is bridged with the caller; the others are
//! cancelled (or, when their 2xx crossed the CANCEL, ACKed and hung up by the UA); only when
//! every contact refused or failed is the offer refused (`calls.rs` `acd_call_ended`).

use std::time::{Duration, Instant};

use frontdoor_sip::{CallHandle, UserAgent};

use super::{AcdRole, CallApp, Mode};
use crate::screenpop::ScreenPop;

impl CallApp {
    /// Places one agent leg per contact, all presenting the caller the same way. `Err` with
    /// the reason when none could be placed (`not_registered` without contacts).
    pub(super) fn ring_contacts(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        caller: CallHandle,
        contacts: &[String],
        ring: Duration,
        pop: &ScreenPop,
    ) -> Result<Vec<CallHandle>, &'static str> {
        if contacts.is_empty() {
            return Err("not_registered");
        }
        let presentation = self.presentation(pop);
        let mut legs = Vec::with_capacity(contacts.len());
        let mut failure = "failed";
        for uri in contacts {
            match self.dial(
                now,
                ua,
                uri,
                Mode::Leg,
                Some(caller),
                ring,
                presentation.clone(),
            ) {
                Ok(leg) => legs.push(leg),
                Err((_, reason)) => failure = reason,
            }
        }
        if legs.is_empty() {
            Err(failure)
        } else {
            Ok(legs)
        }
    }

    /// `leg` answered (its media is up). When it is one of several phones ringing for an
    /// offer, the others are hung up (CANCEL while they ring, BYE when they answered too) and
    /// no longer count for the offer; the caller is linked to `leg`.
    pub(super) fn fork_won(&mut self, now: Instant, ua: &mut UserAgent, leg: CallHandle) {
        let Some(AcdRole::Agent {
            entry,
            answered: false,
            ..
        }) = self.calls.get(&leg).and_then(|c| c.acd)
        else {
            return;
        };
        let Some(legs) = self.forks.remove(&entry) else {
            return;
        };
        for other in legs.into_iter().filter(|l| *l != leg) {
            if let Some(c) = self.calls.get_mut(&other) {
                c.acd = None;
                c.link.peer = None;
                c.hangup_cause = Some("answered_elsewhere");
            }
            if let Err(e) = ua.hangup(now, other) {
                tracing::debug!(error = %e, "hangup of a losing fork");
            }
        }
        if let Some(c) = self.entries.get(&entry).and_then(|h| self.calls.get_mut(h)) {
            c.link.peer = Some(leg);
        }
    }

    /// A still-unanswered agent leg of an offer ended (refused, failed, timed out). `true`
    /// when other phones of the agent still ring for it: the offer stands (the caller is
    /// relinked to one of them). `false` when it was the last: the offer is refused.
    pub(super) fn fork_ended(&mut self, entry: frontdoor_acd::EntryId, leg: CallHandle) -> bool {
        let Some(legs) = self.forks.get_mut(&entry) else {
            return false;
        };
        legs.retain(|l| *l != leg);
        let Some(&other) = legs.first() else {
            self.forks.remove(&entry);
            return false;
        };
        if let Some(c) = self.entries.get(&entry).and_then(|h| self.calls.get_mut(h)) {
            if c.link.peer == Some(leg) {
                c.link.peer = Some(other);
            }
        }
        true
    }
}
