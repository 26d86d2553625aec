//! Agents' phones: the registrar wired to the SIP task.
//!
//! REGISTER requests come out of the user agent as [`UaEvent::Register`]; the sans-IO
//! [`Registrar`] (with Digest authentication against `[[agents.agent]]`) decides the answer and
//! the location service changes go onto the event stream as `agent.*` events.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use frontdoor_sip::auth::{DigestConfig, DigestServer, UserSecret, Verdict};
use frontdoor_sip::message::uri_user;
use frontdoor_sip::registrar::{Binding, Registrar, RegistrarConfig, RegistrarEvent};
use frontdoor_sip::{CallHandle, UaEvent, UserAgent};

use crate::config::{Config, FeatureCodes};
use crate::desk::AgentOp;
use crate::events::{EventBody, EventSink};

/// The registrar and the agent directory.
#[derive(Debug)]
pub struct Agents {
    registrar: Registrar,
    /// username → agent id.
    ids: HashMap<String, String>,
    events: EventSink,
    /// Digest for feature-code INVITEs (407 challenges; its own nonces).
    feature_auth: DigestServer,
    /// username → credentials (for `feature_auth`).
    secrets: HashMap<String, UserSecret>,
    codes: FeatureCodes,
    /// Authenticated feature-code calls not yet taken by the call side: agent id and op.
    features: HashMap<CallHandle, (String, AgentOp)>,
}

impl Agents {
    /// Builds the registrar from the configuration (validated by [`Config::parse`]). The nonce
    /// key is random per process: after a restart phones get a fresh challenge.
    pub fn new(config: &Config, events: EventSink, now: Instant) -> Result<Self, String> {
        let algorithms = config.sip.algorithms()?;
        let digest = |algorithms| {
            DigestServer::new(
                DigestConfig {
                    realm: config.sip.realm.clone(),
                    secret: rand::random(),
                    nonce_ttl: Duration::from_secs(config.sip.nonce_ttl_s.max(1)),
                    algorithms,
                },
                now,
            )
        };
        let auth = digest(algorithms.clone());
        let feature_auth = digest(algorithms);
        let a = &config.agents;
        let mut registrar = Registrar::new(
            RegistrarConfig {
                min_expires: a.min_expires,
                max_expires: a.max_expires,
                default_expires: a.default_expires.clamp(a.min_expires, a.max_expires),
                max_contacts: a.max_contacts,
                proxy_auth: false,
            },
            auth,
        );
        let mut ids = HashMap::new();
        let mut secrets = HashMap::new();
        for ag in &a.agent {
            let secret = UserSecret {
                password: ag.password.clone(),
                ha1_md5: ag.ha1_md5.clone(),
                ha1_sha256: ag.ha1_sha256.clone(),
            };
            registrar.set_user(&ag.username, secret.clone());
            secrets.insert(ag.username.clone(), secret);
            ids.insert(ag.username.clone(), ag.id.clone());
        }
        Ok(Agents {
            registrar,
            ids,
            events,
            feature_auth,
            secrets,
            codes: a.feature_codes.clone(),
            features: HashMap::new(),
        })
    }

    /// The operation a dialed number stands for, when it is one of the feature codes (phones
    /// may send `*` and `#` percent-encoded: `%2A21`).
    fn feature_op(&self, number: &str) -> Option<AgentOp> {
        let decoded = percent_decode(number);
        let number = decoded.as_str();
        let c = &self.codes;
        let is = |code: &str| !code.is_empty() && code == number;
        if is(&c.pause) {
            Some(AgentOp::Pause(c.pause_code))
        } else if is(&c.ready) {
            Some(AgentOp::Ready)
        } else if is(&c.logout) {
            Some(AgentOp::Logout)
        } else if is(&c.login) {
            Some(AgentOp::Login)
        } else {
            None
        }
    }

    /// The agent and operation of an authenticated feature-code call ([`Agents::handle_event`]
    /// let it through), taken once.
    pub fn take_feature(&mut self, event: &UaEvent) -> Option<(String, AgentOp)> {
        match event {
            UaEvent::IncomingCall { call, .. } => self.features.remove(call),
            _ => None,
        }
    }

    /// A feature-code INVITE: authenticated against the agents' credentials with a 407
    /// challenge (RFC 3261 §22.3). Gives the event back when authenticated (see
    /// [`Agents::take_feature`]); answers it itself otherwise.
    fn feature_invite(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        event: UaEvent,
    ) -> Option<UaEvent> {
        let UaEvent::IncomingCall {
            call,
            ref call_id,
            ref request_user,
            ref headers,
            ..
        } = event
        else {
            return Some(event);
        };
        let Some(op) = self.feature_op(request_user) else {
            return Some(event);
        };
        let values = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Proxy-Authorization"))
            .map(|(_, v)| v.as_str());
        let secrets = &self.secrets;
        let verdict = self
            .feature_auth
            .verify(now, "INVITE", values, |u| secrets.get(u).cloned());
        let op_name = match op {
            AgentOp::Login => "login",
            AgentOp::Logout => "logout",
            AgentOp::Pause(_) => "pause",
            AgentOp::Ready => "ready",
            AgentOp::WrapUp { .. } => "wrap_up",
        };
        let (status, stale, result) = match verdict {
            Verdict::Ok { username, .. } => {
                let agent = self.agent_id(&username);
                self.features.insert(call, (agent, op));
                return Some(event);
            }
            Verdict::Challenge | Verdict::Replay => (407, false, "challenged"),
            Verdict::Stale => (407, true, "challenged"),
            Verdict::Forbidden => (403, false, "forbidden"),
            Verdict::Malformed(_) => (400, false, "malformed"),
        };
        let challenges = if status == 407 {
            self.feature_auth.challenges(now, stale)
        } else {
            Vec::new()
        };
        let lines: Vec<(&str, &str)> = challenges
            .iter()
            .map(|c| ("Proxy-Authenticate", c.as_str()))
            .collect();
        let call_id: std::sync::Arc<str> = std::sync::Arc::from(call_id.as_str());
        self.events.emit(
            Some(&call_id),
            EventBody::AgentFeature {
                agent: String::new(),
                code: request_user.chars().take(32).collect(),
                op: op_name,
                result,
                state: None,
                error: None,
            },
        );
        if let Err(e) = ua.reject_with_headers(now, call, status, &lines) {
            tracing::debug!(error = %e, "answer to a feature-code INVITE");
        }
        None
    }

    /// The registered contacts of the agent with SIP user name `username`.
    pub fn contacts(&self, username: &str) -> &[Binding] {
        self.registrar.contacts(username)
    }

    /// Handles a UA event if it is a REGISTER or a feature-code INVITE that is not (yet)
    /// authenticated; gives it back otherwise.
    pub fn handle_event(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        event: UaEvent,
    ) -> Option<UaEvent> {
        if matches!(event, UaEvent::IncomingCall { .. }) {
            return self.feature_invite(now, ua, event);
        }
        let UaEvent::Register {
            tx,
            request,
            source,
            transport,
        } = event
        else {
            return Some(event);
        };
        let resp = self
            .registrar
            .handle_register(now, &request, source, transport);
        let headers: Vec<(&str, &str)> =
            resp.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if let Err(e) = ua.respond(now, tx, resp.status, &headers) {
            tracing::debug!(error = %e, "REGISTER transaction gone before the answer");
        }
        if !matches!(resp.status, 200 | 401 | 407) {
            self.events.emit(
                None,
                EventBody::AgentRegisterFailed {
                    user: uri_user(&request.to().uri).chars().take(64).collect(),
                    status: resp.status,
                    source,
                },
            );
        }
        self.emit_changes();
        None
    }

    /// The next registration expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.registrar.poll_timeout()
    }

    /// Expires registrations due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.registrar.handle_timeout(now);
        self.emit_changes();
    }

    fn agent_id(&self, username: &str) -> String {
        self.ids.get(username).cloned().unwrap_or_default()
    }

    fn emit_changes(&mut self) {
        while let Some(ev) = self.registrar.poll_event() {
            let body = match ev {
                RegistrarEvent::Registered {
                    user,
                    contact,
                    expires,
                    source,
                    refresh,
                    contacts,
                    algorithm,
                } => EventBody::AgentRegistered {
                    agent: self.agent_id(&user),
                    username: user,
                    contact,
                    expires,
                    source,
                    refresh,
                    contacts,
                    auth: algorithm.as_str(),
                },
                RegistrarEvent::Unregistered {
                    user,
                    contact,
                    contacts,
                } => EventBody::AgentUnregistered {
                    agent: self.agent_id(&user),
                    username: user,
                    contact,
                    contacts,
                },
                RegistrarEvent::Expired {
                    user,
                    contact,
                    contacts,
                } => EventBody::AgentExpired {
                    agent: self.agent_id(&user),
                    username: user,
                    contact,
                    contacts,
                },
            };
            self.events.emit(None, body);
        }
    }
}

/// `%XX` escapes of a URI user part decoded (an invalid escape is kept as it is).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn feature_codes_may_come_percent_encoded() {
        assert_eq!(percent_decode("%2A21"), "*21");
        assert_eq!(percent_decode("*22%23"), "*22#");
        assert_eq!(percent_decode("%2"), "%2");
        assert_eq!(percent_decode("%zz1"), "%zz1");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }
}
