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
        let voice = self.tts.voice("en");
        if let Some(p) = self.tts.cached(&voice, text) {
            self.say_feature(call, text, &voice, "memory");
            self.media
                .send(Command::Play(call.0, DRIVER_FEATURE, vec![p]));
            return;
        }
        let key = (voice, text.to_owned());
        let waiters = self.tts_waiting.entry(key.clone()).or_default();
        if waiters.is_empty() {
            self.tts_pool.request(key);
        }
        waiters.push((call.0, DRIVER_FEATURE, "en".to_owned()));
    }

    /// The confirmation rendered (or failed: a tone instead); `PromptDone` hangs up.
    pub(super) fn feature_rendered(
        &mut self,
        call: CallHandle,
        key: &crate::tts::Key,
        result: &Result<(Prompt, crate::tts::Source), String>,
    ) {
        let prompt = match result {
            Ok((p, source)) => {
                self.say_feature(call, &key.1, &key.0, source.as_str());
                p.clone()
            }
            Err(e) => {
                tracing::warn!(error = %e, text = %key.1, "feature confirmation: speech failed, a tone instead");
                self.beep.clone()
            }
        };
        self.media
            .send(Command::Play(call.0, DRIVER_FEATURE, vec![prompt]));
    }

    fn say_feature(&self, call: CallHandle, text: &str, voice: &str, cache: &'static str) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        self.events.emit(
            Some(&c.call_id),
            EventBody::IvrSay {
                id: DRIVER_FEATURE,
                text: text.to_owned(),
                language: "en".to_owned(),
                voice: voice.to_owned(),
                cache,
                wait_ms: 0,
            },
        );
    }
}
