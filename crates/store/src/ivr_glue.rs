//! Glue between the store and the IVR interpreter (`frontdoor-ivr`), so the driver's wiring
//! is two calls: [`caller_attributes`] before the call, [`call_record`] after it.

use chrono::{DateTime, Utc};
use frontdoor_ivr::{CallSummary, CallerAttributes};

use crate::{CallId, CallRecord, CallerProfile, StepDigits};

/// The interpreter's view of a recognised caller. Anonymous/invalid callers get no number,
/// no name and `anonymous = true`.
pub fn caller_attributes(profile: &CallerProfile) -> CallerAttributes {
    let c = profile.customer.as_ref();
    CallerAttributes {
        number: profile.identity.number().map(|n| n.as_str().to_owned()),
        name: c.map(|c| c.name.clone()).filter(|n| !n.is_empty()),
        tier: c.and_then(|c| c.tier.clone()),
        vip: profile.vip(),
        returning: profile.returning(),
        known: c.is_some(),
        language: c.and_then(|c| c.language.clone()),
        anonymous: profile.anonymous(),
    }
}

/// Times of a call, from the SIP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimes {
    /// INVITE received.
    pub started_at: DateTime<Utc>,
    /// Answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// The call record of a call that went through the IVR. `outcome` is the IVR outcome's
/// [`kind`](frontdoor_ivr::Outcome::kind), or `in_progress`.
pub fn call_record(
    profile: &CallerProfile,
    dialed: &str,
    times: CallTimes,
    summary: &CallSummary,
) -> CallRecord {
    CallRecord {
        call_id: CallId(summary.call_id.clone()),
        caller: profile.identity.number().cloned(),
        dialed: dialed.to_owned(),
        started_at: times.started_at,
        answered_at: times.answered_at,
        ended_at: times.ended_at,
        ivr_path: summary.path.clone(),
        digits: summary
            .digits
            .iter()
            .map(|d| StepDigits {
                step: d.step.clone(),
                digits: d.digits.clone(),
                sensitive: d.sensitive,
            })
            .collect(),
        outcome: summary
            .outcome
            .as_ref()
            .map_or("in_progress", |o| o.kind())
            .to_owned(),
    }
}
