//! Feature codes dialed from an agent's phone (`[agents.feature_codes]`, docs/acd.md): the
//! INVITE was digest-authenticated with the agent's credentials by [`crate::agents::Agents`];
//! here the agent's state changes on the desk, and the call is answered with a short tone and
//! hung up, or refused (403) when the desk refuses the change.

use std::time::Instant;

use frontdoor_sip::{UaEvent, UserAgent};

use super::CallApp;
use crate::desk::{AgentOp, DeskError};
use crate::events::EventBody;

impl CallApp {
    /// An authenticated feature-code INVITE of agent `agent` asking for `op`.
    pub fn feature_call(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        event: UaEvent,
        agent: &str,
        op: AgentOp,
    ) {
        let UaEvent::IncomingCall {
            call,
            ref call_id,
            ref request_user,
            ..
        } = event
        else {
            self.handle_event(now, ua, event);
            return;
        };
        let call_id: std::sync::Arc<str> = std::sync::Arc::from(call_id.as_str());
        let code = request_user.clone();
        let result = match self.desk.as_mut() {
            Some(d) => d.agent_op(now, agent, op),
            None => Err(DeskError::Unavailable),
        };
        let (state, error) = match &result {
            Ok(view) => (
                serde_json::to_value(view.state)
                    .ok()
                    .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_owned)),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        self.events.emit(
            Some(&call_id),
            EventBody::AgentFeature {
                agent: agent.to_owned(),
                code,
                op: match op {
                    AgentOp::Login => "login",
                    AgentOp::Logout => "logout",
                    AgentOp::Pause(_) => "pause",
                    AgentOp::Ready => "ready",
                    AgentOp::WrapUp { .. } => "wrap_up",
                },
                result: if result.is_ok() { "ok" } else { "refused" },
                state,
                error,
            },
        );
        if result.is_ok() {
            self.feature_calls.insert(call);
            self.handle_event(now, ua, event);
        } else if let Err(e) = ua.reject(now, call, 403, None) {
            tracing::debug!(error = %e, "reject of a refused feature code");
        }
    }
}
