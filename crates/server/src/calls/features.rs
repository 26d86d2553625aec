//! Feature codes dialed from an agent's phone (`[agents.feature_codes]`, docs/acd.md): the
//! INVITE was digest-authenticated with the agent's credentials by [`crate::agents::Agents`];
//! here the agent's state changes on the desk, and the call is answered with a spoken
//! confirmation ("You are paused.", the IVR's TTS; a tone if speech fails) and hung up, or
//! refused (403) when the desk refuses the change.

use std::time::Instant;

use frontdoor_media::prompt::Prompt;
use frontdoor_sip::{CallHandle, UaEvent, UserAgent};

use super::{CallApp, Command, DRIVER_FEATURE};
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
            let text = match op {
                AgentOp::Login => "You are logged in.",
                AgentOp::Logout => "You are logged out.",
                AgentOp::Pause(_) => "You are paused.",
                AgentOp::Ready | AgentOp::WrapUp { .. } => "You are ready.",
            };
            self.feature_calls.insert(call, text);
            self.handle_event(now, ua, event);
        } else if let Err(e) = ua.reject(now, call, 403, None) {
            tracing::debug!(error = %e, "reject of a refused feature code");
        }
    }

    /// The answered feature call's media is up: speak its confirmation (rendered on demand,
    /// cached like every IVR text).
    pub(super) fn confirm_feature(&mut self, call: CallHandle) {
        let Some(text) = self.feature_calls.get(&call).copied() else {
            return;
        };
        self.say_driver(call, DRIVER_FEATURE, text.to_owned(), "en");
    }

    /// The confirmation rendered (or failed: a tone instead); `PromptDone` hangs up.
    pub(super) fn feature_rendered(
        &mut self,
        call: CallHandle,
        key: &crate::tts::Key,
        result: &Result<(Prompt, crate::tts::Source), String>,
    ) {
        match result {
            Ok((p, source)) => {
                self.say_rendered(call, DRIVER_FEATURE, key, "en", source.as_str(), p.clone());
            }
            Err(e) => {
                tracing::warn!(error = %e, text = %key.1, "feature confirmation: speech failed, a tone instead");
                self.media.send(Command::Play(
                    call.0,
                    DRIVER_FEATURE,
                    vec![self.beep.clone()],
                ));
            }
        }
    }
}
