//! A sans-IO registrar and location service (RFC 3261 §10.3), with Digest authentication
//! ([`crate::auth`]).
//!
//! [`Registrar::handle_register`] takes a parsed REGISTER and returns the response to send
//! (status and extra headers); bindings expire as [`Registrar::handle_timeout`] is driven with
//! the current time. What changed comes out of [`Registrar::poll_event`].
//!
//! Address-of-records are keyed by the user part of the To URI, which must be the user that
//! authenticated (one domain per registrar). Contacts are compared as case-insensitive URI
//! strings (not the full RFC 3261 §19.1.4 comparison).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::auth::{Algorithm, DigestServer, UserSecret, Verdict};
use crate::message::{HeaderName, NameAddr, Request, uri_user};
use crate::ua::Transport;

/// Registrar limits.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Shortest registration accepted (shorter: 423 with Min-Expires), seconds.
    pub min_expires: u32,
    /// Longest registration granted (longer requests are shortened), seconds.
    pub max_expires: u32,
    /// Registration length when the request names none, seconds.
    pub default_expires: u32,
    /// Most contacts one address-of-record may have at once (more: 403).
    pub max_contacts: usize,
    /// Challenge with 407 / Proxy-Authenticate instead of 401 / WWW-Authenticate.
    pub proxy_auth: bool,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
            proxy_auth: false,
        }
    }
}

/// One contact bound to an address-of-record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI.
    pub uri: String,
    /// When it expires.
    pub expires_at: Instant,
    /// Call-ID of the REGISTER that made it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// Where the REGISTER came from (send requests here when the contact is behind NAT).
    pub source: SocketAddr,
    /// Transport it came on.
    pub transport: Transport,
    /// The `q` parameter, if any.
    pub q: Option<String>,
    /// The User-Agent of the registering device.
    pub user_agent: Option<String>,
}

/// What happened to the location service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrarEvent {
    /// A contact was added or refreshed.
    Registered {
        /// The user (address-of-record user part).
        user: String,
        /// The contact URI.
        contact: String,
        /// Seconds granted.
        expires: u32,
        /// Where the REGISTER came from.
        source: SocketAddr,
        /// Whether the binding existed already (a refresh).
        refresh: bool,
        /// Contacts this user has now.
        contacts: usize,
        /// The Digest algorithm the device authenticated with.
        algorithm: Algorithm,
    },
    /// A contact was removed by the device (expires 0, or `*`).
    Unregistered {
        /// The user.
        user: String,
        /// The contact URI.
        contact: String,
        /// Contacts this user has now.
        contacts: usize,
    },
    /// A contact was not refreshed in time.
    Expired {
        /// The user.
        user: String,
        /// The contact URI.
        contact: String,
        /// Contacts this user has now.
        contacts: usize,
    },
}

/// The response to send for a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterResponse {
    /// Status code.
    pub status: u16,
    /// Extra headers (Contact lines, challenges, Min-Expires, Warning).
    pub headers: Vec<(&'static str, String)>,
}

impl RegisterResponse {
    fn status(status: u16) -> Self {
        RegisterResponse {
            status,
            headers: Vec::new(),
        }
    }
    fn warn(status: u16, text: &str) -> Self {
        RegisterResponse {
            status,
            headers: vec![("Warning", format!("399 frontdoor \"{text}\""))],
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistrarStats {
    /// REGISTERs answered 200.
    pub accepted: u64,
    /// Challenges sent (401/407).
    pub challenged: u64,
    /// Refused with 403 (unknown user, wrong password, someone else's AOR).
    pub forbidden: u64,
    /// Other failures (400, 423, 500).
    pub failed: u64,
}

/// The registrar: users, bindings, expiry.
pub struct Registrar {
    cfg: RegistrarConfig,
    auth: DigestServer,
    users: HashMap<String, UserSecret>,
    bindings: HashMap<String, Vec<Binding>>,
    heap: BinaryHeap<Reverse<(Instant, String)>>,
    events: VecDeque<RegistrarEvent>,
    stats: RegistrarStats,
}

impl fmt::Debug for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registrar")
            .field("cfg", &self.cfg)
            .field("users", &self.users.len())
            .field("bindings", &self.bindings.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

enum ContactSpec {
    Star,
    List(Vec<(String, u32, Option<String>)>),
}

fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

impl Registrar {
    /// A registrar authenticating with `auth`.
    pub fn new(cfg: RegistrarConfig, auth: DigestServer) -> Self {
        Registrar {
            cfg,
            auth,
            users: HashMap::new(),
            bindings: HashMap::new(),
            heap: BinaryHeap::new(),
            events: VecDeque::new(),
            stats: RegistrarStats::default(),
        }
    }

    /// Adds or replaces a user.
    pub fn set_user(&mut self, username: &str, secret: UserSecret) {
        self.users.insert(username.to_owned(), secret);
    }

    /// The contacts of `user` (empty when none).
    pub fn contacts(&self, user: &str) -> &[Binding] {
        self.bindings.get(user).map_or(&[], Vec::as_slice)
    }

    /// Users with at least one contact.
    pub fn registered_users(&self) -> usize {
        self.bindings.len()
    }

    /// Counters.
    pub fn stats(&self) -> RegistrarStats {
        self.stats
    }

    /// Next change.
    pub fn poll_event(&mut self) -> Option<RegistrarEvent> {
        self.events.pop_front()
    }

    /// The next expiry (possibly of a binding since refreshed: then nothing happens).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes bindings expired at `now` ([`RegistrarEvent::Expired`] for each).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, user))) = self.heap.pop() else {
                break;
            };
            let Some(list) = self.bindings.get_mut(&user) else {
                continue;
            };
            let mut gone = Vec::new();
            list.retain(|b| {
                let keep = b.expires_at > now;
                if !keep {
                    gone.push(b.uri.clone());
                }
                keep
            });
            let left = list.len();
            if left == 0 {
                self.bindings.remove(&user);
            }
            for contact in gone {
                self.events.push_back(RegistrarEvent::Expired {
                    user: user.clone(),
                    contact,
                    contacts: left,
                });
            }
        }
        self.auth.prune(now);
    }

    fn challenge(&mut self, now: Instant, stale: bool) -> RegisterResponse {
        self.stats.challenged += 1;
        let (status, name) = if self.cfg.proxy_auth {
            (407, "Proxy-Authenticate")
        } else {
            (401, "WWW-Authenticate")
        };
        RegisterResponse {
            status,
            headers: self
                .auth
                .challenges(now, stale)
                .into_iter()
                .map(|v| (name, v))
                .collect(),
        }
    }

    /// Processes a REGISTER received from `source` (RFC 3261 §10.3).
    pub fn handle_register(
        &mut self,
        now: Instant,
        req: &Request,
        source: SocketAddr,
        transport: Transport,
    ) -> RegisterResponse {
        let resp = self.process(now, req, source, transport);
        match resp.status {
            200 => self.stats.accepted += 1,
            401 | 407 => {}
            403 => self.stats.forbidden += 1,
            _ => self.stats.failed += 1,
        }
        resp
    }

    fn process(
        &mut self,
        now: Instant,
        req: &Request,
        source: SocketAddr,
        transport: Transport,
    ) -> RegisterResponse {
        // §10.3 step 3: authenticate.
        let cred_name = if self.cfg.proxy_auth {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        let values = req
            .headers
            .0
            .iter()
            .filter(|h| h.name.matches(cred_name))
            .map(|h| h.value.as_str());
        let users = &self.users;
        let (username, algorithm) = match self
            .auth
            .verify(now, req.method.as_str(), values, |u| users.get(u).cloned())
        {
            Verdict::Ok {
                username,
                algorithm,
            } => (username, algorithm),
            Verdict::Challenge | Verdict::Replay => return self.challenge(now, false),
            Verdict::Stale => return self.challenge(now, true),
            Verdict::Forbidden => return RegisterResponse::warn(403, "bad credentials"),
            Verdict::Malformed(e) => return RegisterResponse::warn(400, &e.to_string()),
        };
        // Step 4 and 5: the AOR is the To user, and it must be the authenticated user's.
        let aor_user = uri_user(&req.to().uri);
        if aor_user.is_empty() {
            return RegisterResponse::warn(404, "no user in the To URI");
        }
        if aor_user != username {
            return RegisterResponse::warn(403, "not your address-of-record");
        }
        let user = username;
        // Step 6: contacts.
        let header_expires = match req.header(&HeaderName::Other("Expires".into())) {
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
                Err(_) => return RegisterResponse::warn(400, "invalid Expires"),
            },
            None => None,
        };
        let spec = match self.contact_spec(req, header_expires) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let call_id = req.call_id();
        let cseq = req.cseq().seq;
        let user_agent = req.header(&HeaderName::UserAgent).map(str::to_owned);
        match spec {
            ContactSpec::Star => {
                let existing = self.contacts(&user);
                if existing
                    .iter()
                    .any(|b| b.call_id == call_id && cseq <= b.cseq)
                {
                    return RegisterResponse::warn(500, "CSeq out of order");
                }
                if let Some(list) = self.bindings.remove(&user) {
                    let n = list.len();
                    for (i, b) in list.into_iter().enumerate() {
                        self.events.push_back(RegistrarEvent::Unregistered {
                            user: user.clone(),
                            contact: b.uri,
                            contacts: n - i - 1,
                        });
                    }
                }
            }
            ContactSpec::List(contacts) => {
                // Check everything first: the update is all or nothing.
                let existing = self.contacts(&user);
                let mut after = existing.len();
                for (uri, expires, _) in &contacts {
                    if let Some(b) = existing.iter().find(|b| b.uri.eq_ignore_ascii_case(uri)) {
                        if b.call_id == call_id && cseq <= b.cseq {
                            return RegisterResponse::warn(500, "CSeq out of order");
                        }
                        if *expires == 0 {
                            after -= 1;
                        }
                    } else if *expires > 0 {
                        after += 1;
                    }
                }
                if after > self.cfg.max_contacts {
                    return RegisterResponse::warn(403, "too many contacts");
                }
                let list = self.bindings.entry(user.clone()).or_default();
                let mut changes = Vec::new();
                for (uri, expires, q) in contacts {
                    let pos = list.iter().position(|b| b.uri.eq_ignore_ascii_case(&uri));
                    if expires == 0 {
                        if let Some(i) = pos {
                            let b = list.remove(i);
                            changes.push((b.uri, None, false));
                        }
                        continue;
                    }
                    let expires_at = now + Duration::from_secs(u64::from(expires));
                    let binding = Binding {
                        uri: uri.clone(),
                        expires_at,
                        call_id: call_id.to_owned(),
                        cseq,
                        source,
                        transport,
                        q,
                        user_agent: user_agent.clone(),
                    };
                    let refresh = pos.is_some();
                    match pos {
                        Some(i) => list[i] = binding,
                        None => list.push(binding),
                    }
                    self.heap.push(Reverse((expires_at, user.clone())));
                    changes.push((uri, Some(expires), refresh));
                }
                let n = list.len();
                if n == 0 {
                    self.bindings.remove(&user);
                }
                for (contact, expires, refresh) in changes {
                    self.events.push_back(match expires {
                        Some(expires) => RegistrarEvent::Registered {
                            user: user.clone(),
                            contact,
                            expires,
                            source,
                            refresh,
                            contacts: n,
                            algorithm,
                        },
                        None => RegistrarEvent::Unregistered {
                            user: user.clone(),
                            contact,
                            contacts: n,
                        },
                    });
                }
            }
        }
        // Step 8: 200 with the current bindings.
        let mut resp = RegisterResponse::status(200);
        for b in self.contacts(&user) {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            resp.headers
                .push(("Contact", format!("<{}>;expires={left}", b.uri)));
        }
        resp
    }

    fn contact_spec(
        &self,
        req: &Request,
        header_expires: Option<u32>,
    ) -> Result<ContactSpec, RegisterResponse> {
        let values: Vec<&str> = req.headers.get_list(&HeaderName::Contact).collect();
        if values.iter().any(|v| v.trim() == "*") {
            if values.len() != 1 || header_expires != Some(0) {
                return Err(RegisterResponse::warn(
                    400,
                    "Contact * needs Expires: 0 and no other Contact",
                ));
            }
            return Ok(ContactSpec::Star);
        }
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            let Some(na) = NameAddr::parse(v) else {
                return Err(RegisterResponse::warn(400, "invalid Contact"));
            };
            if !(na.uri.starts_with("sip:") || na.uri.starts_with("sips:")) {
                return Err(RegisterResponse::warn(400, "Contact is not a SIP URI"));
            }
            let expires = match param(&na.params, "expires") {
                Some(e) => match e.parse::<u64>() {
                    Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
                    Err(_) => return Err(RegisterResponse::warn(400, "invalid expires")),
                },
                None => header_expires.unwrap_or(self.cfg.default_expires),
            };
            if expires != 0 && expires < self.cfg.min_expires {
                return Err(RegisterResponse {
                    status: 423,
                    headers: vec![("Min-Expires", self.cfg.min_expires.to_string())],
                });
            }
            let expires = expires.min(self.cfg.max_expires);
            let q = param(&na.params, "q").map(str::to_owned);
            if out
                .iter()
                .any(|(u, _, _): &(String, u32, Option<String>)| u.eq_ignore_ascii_case(&na.uri))
            {
                return Err(RegisterResponse::warn(400, "duplicate Contact"));
            }
            out.push((na.uri, expires, q));
        }
        Ok(ContactSpec::List(out))
    }
}
