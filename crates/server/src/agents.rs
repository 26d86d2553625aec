//! Agents' phones: the registrar wired to the SIP task.
//!
//! REGISTER requests come out of the user agent as [`UaEvent::Register`]; the sans-IO
//! [`Registrar`] (with Digest authentication against `[[agents.agent]]`) decides the answer and
//! the location service changes go onto the event stream as `agent.*` events.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use frontdoor_sip::auth::{DigestConfig, DigestServer, UserSecret};
use frontdoor_sip::message::uri_user;
use frontdoor_sip::registrar::{Binding, Registrar, RegistrarConfig, RegistrarEvent};
use frontdoor_sip::{UaEvent, UserAgent};

use crate::config::Config;
use crate::events::{EventBody, EventSink};

/// The registrar and the agent directory.
#[derive(Debug)]
pub struct Agents {
    registrar: Registrar,
    /// username → agent id.
    ids: HashMap<String, String>,
    events: EventSink,
}

impl Agents {
    /// Builds the registrar from the configuration (validated by [`Config::parse`]). The nonce
    /// key is random per process: after a restart phones get a fresh challenge.
    pub fn new(config: &Config, events: EventSink, now: Instant) -> Result<Self, String> {
        let algorithms = config.sip.algorithms()?;
        let auth = DigestServer::new(
            DigestConfig {
                realm: config.sip.realm.clone(),
                secret: rand::random(),
                nonce_ttl: Duration::from_secs(config.sip.nonce_ttl_s.max(1)),
                algorithms,
            },
            now,
        );
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
        for ag in &a.agent {
            registrar.set_user(
                &ag.username,
                UserSecret {
                    password: ag.password.clone(),
                    ha1_md5: ag.ha1_md5.clone(),
                    ha1_sha256: ag.ha1_sha256.clone(),
                },
            );
            ids.insert(ag.username.clone(), ag.id.clone());
        }
        Ok(Agents {
            registrar,
            ids,
            events,
        })
    }

    /// The registered contacts of the agent with SIP user name `username`.
    pub fn contacts(&self, username: &str) -> &[Binding] {
        self.registrar.contacts(username)
    }

    /// Handles a UA event if it is a REGISTER; gives it back otherwise.
    pub fn handle_event(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        event: UaEvent,
    ) -> Option<UaEvent> {
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
