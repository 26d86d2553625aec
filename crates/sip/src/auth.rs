//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760), sans-IO.
//!
//! * Server side ([`DigestServer`]): challenges (`WWW-Authenticate` / `Proxy-Authenticate`)
//!   for MD5 and SHA-256 with `qop="auth"`, and verification of `Authorization` /
//!   `Proxy-Authorization`. Nonces are stateless: `hex(timestamp) || HMAC-SHA256(secret,
//!   timestamp || realm)`, so any nonce this server issued can be checked without a table,
//!   and an expired one with otherwise correct credentials answers `stale=true`. The highest
//!   nonce-count seen per nonce is kept (bounded, pruned at expiry) to refuse replays.
//! * Client side ([`authorize`], [`Challenge::select`]): the `Authorization` for a received
//!   401/407 challenge, MD5 or SHA-256 (and their `-sess` variants), `qop=auth` (or
//!   `auth-int`, or none for RFC 2069 servers).
//!
//! Everything parsed here came off the wire: malformed values are [`AuthError`]s, never panics.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Longest header value we parse (a real one is a few hundred bytes).
const MAX_HEADER_LEN: usize = 4096;
/// Most nonces whose nonce-count we remember at once (older ones are pruned first).
const MAX_TRACKED_NONCES: usize = 65_536;

/// Errors parsing or using Digest headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The scheme is not `Digest`.
    #[error("not a Digest header")]
    NotDigest,
    /// The header is not `name=value` pairs separated by commas.
    #[error("malformed Digest parameters: {0}")]
    Syntax(&'static str),
    /// A required parameter is absent.
    #[error("missing Digest parameter {0}")]
    Missing(&'static str),
    /// A parameter appears twice.
    #[error("duplicate Digest parameter {0}")]
    Duplicate(String),
    /// The algorithm is not MD5, SHA-256 or their `-sess` forms.
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    /// The qop is not one we can use.
    #[error("unsupported qop {0:?}")]
    Qop(String),
    /// A parameter has an invalid value.
    #[error("invalid value for Digest parameter {0}")]
    Value(&'static str),
    /// The header is longer than we accept.
    #[error("Digest header too long")]
    TooLong,
}

/// Digest hash algorithm (RFC 7616 §3.2; RFC 8760 for SIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5 (the RFC 3261 default when `algorithm` is absent).
    Md5,
    /// MD5-sess.
    Md5Sess,
    /// SHA-256 (RFC 8760).
    Sha256,
    /// SHA-256-sess.
    Sha256Sess,
}

impl Algorithm {
    /// Parses an `algorithm` token (case-insensitive).
    pub fn parse(s: &str) -> Result<Algorithm, AuthError> {
        const ALL: [Algorithm; 4] = [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ];
        ALL.into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| AuthError::Algorithm(s.chars().take(32).collect()))
    }
    /// The token.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }
    /// Whether this is a `-sess` variant.
    pub fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }
    /// The same hash without `-sess`.
    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
        }
    }
    /// Preference when a server offers several (higher is stronger).
    fn strength(self) -> u8 {
        match self.base() {
            Algorithm::Sha256 => 2,
            _ => 1,
        }
    }
    /// Lower-case hex of the hash of `parts` joined by `:`.
    pub fn hash_hex(self, parts: &[&[u8]]) -> String {
        fn run<D: Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            hex(&d.finalize())
        }
        match self.base() {
            Algorithm::Sha256 => run::<Sha256>(parts),
            _ => run::<Md5>(parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Quality of protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// Authentication only.
    Auth,
    /// Authentication with integrity protection of the body.
    AuthInt,
}

impl Qop {
    fn parse(s: &str) -> Option<Qop> {
        if s.eq_ignore_ascii_case("auth") {
            Some(Qop::Auth)
        } else if s.eq_ignore_ascii_case("auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }
    /// The token.
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// Splits `Digest k=v, k="v", ...` into its parameters (names lower-cased, quotes removed,
/// escapes resolved). Duplicates are errors.
fn parse_params(value: &str) -> Result<Vec<(String, String)>, AuthError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(AuthError::TooLong);
    }
    let value = value.trim();
    let (scheme, rest) = match value.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthError::NotDigest);
    }
    let bytes = rest.as_bytes();
    let mut i = 0;
    let mut out: Vec<(String, String)> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        // name
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || b"-_.".contains(&bytes[i])) {
            i += 1;
        }
        if i == start {
            return Err(AuthError::Syntax("expected a parameter name"));
        }
        let name = rest[start..i].to_ascii_lowercase();
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b'=') {
            return Err(AuthError::Syntax("expected '=' after a parameter name"));
        }
        i += 1;
        skip_ws(&mut i);
        let val = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut v = Vec::new();
            loop {
                match bytes.get(i) {
                    None => return Err(AuthError::Syntax("unterminated quoted string")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let Some(&c) = bytes.get(i + 1) else {
                            return Err(AuthError::Syntax("dangling escape"));
                        };
                        v.push(c);
                        i += 2;
                    }
                    Some(&c) => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(v).map_err(|_| AuthError::Syntax("quoted string is not UTF-8"))?
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b',' && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == start {
                return Err(AuthError::Syntax("empty parameter value"));
            }
            rest[start..i].to_owned()
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(AuthError::Duplicate(name.chars().take(32).collect()));
        }
        out.push((name, val));
        skip_ws(&mut i);
        match bytes.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(AuthError::Syntax("expected ',' between parameters")),
        }
    }
    if out.is_empty() {
        return Err(AuthError::Syntax("no parameters"));
    }
    Ok(out)
}

fn take(params: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let i = params.iter().position(|(n, _)| n == name)?;
    Some(params.swap_remove(i).1)
}

/// Escapes a value for a quoted-string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        // CR/LF would end the header line: drop them.
        if c != '\r' && c != '\n' {
            q.push(c);
        }
    }
    q.push('"');
    q
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque value to echo.
    pub opaque: Option<String>,
    /// Hash algorithm.
    pub algorithm: Algorithm,
    /// Offered qop values (empty: RFC 2069 style, no qop).
    pub qop: Vec<Qop>,
    /// The previous nonce was stale (credentials were right): retry without asking the user.
    pub stale: bool,
}

impl Challenge {
    /// Parses a challenge header value. Unknown parameters are ignored; an unknown algorithm
    /// is an error; qop values we do not know are ignored (none known: error).
    pub fn parse(value: &str) -> Result<Challenge, AuthError> {
        let mut p = parse_params(value)?;
        let realm = take(&mut p, "realm").ok_or(AuthError::Missing("realm"))?;
        let nonce = take(&mut p, "nonce").ok_or(AuthError::Missing("nonce"))?;
        let opaque = take(&mut p, "opaque");
        let algorithm = match take(&mut p, "algorithm") {
            Some(a) => Algorithm::parse(&a)?,
            None => Algorithm::Md5,
        };
        let qop = match take(&mut p, "qop") {
            Some(q) => {
                let list: Vec<Qop> = q.split(',').filter_map(|t| Qop::parse(t.trim())).collect();
                if list.is_empty() {
                    return Err(AuthError::Qop(q.chars().take(32).collect()));
                }
                list
            }
            None => Vec::new(),
        };
        let stale = take(&mut p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok(Challenge {
            realm,
            nonce,
            opaque,
            algorithm,
            qop,
            stale,
        })
    }

    /// The strongest challenge we support among several header values (RFC 8760 §2.4: a
    /// server lists one challenge per algorithm, the UAC uses the one it prefers). Values that
    /// do not parse are skipped.
    pub fn select<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
        let mut best: Option<Challenge> = None;
        for v in values {
            if let Ok(c) = Challenge::parse(v)
                && best
                    .as_ref()
                    .is_none_or(|b| c.algorithm.strength() > b.algorithm.strength())
            {
                best = Some(c);
            }
        }
        best
    }

    /// The header value.
    pub fn to_header_value(&self) -> String {
        let mut s = format!(
            "Digest realm={}, nonce={}",
            quote(&self.realm),
            quote(&self.nonce)
        );
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque={}", quote(o));
        }
        if self.stale {
            s.push_str(", stale=true");
        }
        let _ = write!(s, ", algorithm={}", self.algorithm);
        if !self.qop.is_empty() {
            let q: Vec<&str> = self.qop.iter().map(|q| q.as_str()).collect();
            let _ = write!(s, ", qop=\"{}\"", q.join(","));
        }
        s
    }
}

/// An `Authorization` / `Proxy-Authorization` Digest header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// User name.
    pub username: String,
    /// Realm.
    pub realm: String,
    /// The server's nonce.
    pub nonce: String,
    /// The digest-uri (the Request-URI).
    pub uri: String,
    /// The request digest (hex).
    pub response: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Client nonce (with qop).
    pub cnonce: Option<String>,
    /// Nonce count (with qop).
    pub nc: Option<u32>,
    /// Chosen qop.
    pub qop: Option<Qop>,
    /// Echoed opaque.
    pub opaque: Option<String>,
}

impl Authorization {
    /// Parses a credentials header value.
    pub fn parse(value: &str) -> Result<Authorization, AuthError> {
        let mut p = parse_params(value)?;
        let username = take(&mut p, "username").ok_or(AuthError::Missing("username"))?;
        let realm = take(&mut p, "realm").ok_or(AuthError::Missing("realm"))?;
        let nonce = take(&mut p, "nonce").ok_or(AuthError::Missing("nonce"))?;
        let uri = take(&mut p, "uri").ok_or(AuthError::Missing("uri"))?;
        let response = take(&mut p, "response").ok_or(AuthError::Missing("response"))?;
        if response.is_empty() || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::Value("response"));
        }
        let algorithm = match take(&mut p, "algorithm") {
            Some(a) => Algorithm::parse(&a)?,
            None => Algorithm::Md5,
        };
        let qop = match take(&mut p, "qop") {
            Some(q) => {
                Some(Qop::parse(&q).ok_or_else(|| AuthError::Qop(q.chars().take(32).collect()))?)
            }
            None => None,
        };
        let cnonce = take(&mut p, "cnonce");
        let nc = match take(&mut p, "nc") {
            Some(n) => {
                if n.len() != 8 {
                    return Err(AuthError::Value("nc"));
                }
                Some(u32::from_str_radix(&n, 16).map_err(|_| AuthError::Value("nc"))?)
            }
            None => None,
        };
        if qop.is_some() && (cnonce.is_none() || nc.is_none()) {
            return Err(AuthError::Missing(if cnonce.is_none() {
                "cnonce"
            } else {
                "nc"
            }));
        }
        let opaque = take(&mut p, "opaque");
        Ok(Authorization {
            username,
            realm,
            nonce,
            uri,
            response: response.to_ascii_lowercase(),
            algorithm,
            cnonce,
            nc,
            qop,
            opaque,
        })
    }

    /// The header value.
    pub fn to_header_value(&self) -> String {
        let mut s = format!(
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.response),
            self.algorithm
        );
        if let (Some(q), Some(c), Some(nc)) = (self.qop, &self.cnonce, self.nc) {
            let _ = write!(s, ", qop={}, cnonce={}, nc={nc:08x}", q.as_str(), quote(c));
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque={}", quote(o));
        }
        s
    }
}

/// The request digest (RFC 7616 §3.4.1): `ha1` is H(username:realm:password) (before the
/// `-sess` step, which this function applies).
#[allow(clippy::too_many_arguments)]
pub fn request_digest(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: Option<u32>,
    cnonce: Option<&str>,
    qop: Option<Qop>,
    method: &str,
    uri: &str,
    body: &[u8],
) -> String {
    let ha1 = if algorithm.is_sess() {
        algorithm.hash_hex(&[
            ha1.as_bytes(),
            nonce.as_bytes(),
            cnonce.unwrap_or("").as_bytes(),
        ])
    } else {
        ha1.to_owned()
    };
    let ha2 = match qop {
        Some(Qop::AuthInt) => {
            let hb = algorithm.hash_hex(&[body]);
            algorithm.hash_hex(&[method.as_bytes(), uri.as_bytes(), hb.as_bytes()])
        }
        _ => algorithm.hash_hex(&[method.as_bytes(), uri.as_bytes()]),
    };
    match (qop, nc, cnonce) {
        (Some(q), Some(nc), Some(cnonce)) => {
            let nc = format!("{nc:08x}");
            algorithm.hash_hex(&[
                ha1.as_bytes(),
                nonce.as_bytes(),
                nc.as_bytes(),
                cnonce.as_bytes(),
                q.as_str().as_bytes(),
                ha2.as_bytes(),
            ])
        }
        _ => algorithm.hash_hex(&[ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// H(username:realm:password) for `algorithm`.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash_hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// A user's name and password, for answering challenges.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The credentials answering `challenge` for `method uri` (client side). Uses qop `auth`
/// when offered (else `auth-int` over `body`, else none), `cnonce` and nonce-count `nc`.
pub fn authorize(
    challenge: &Challenge,
    creds: &ClientCredentials,
    method: &str,
    uri: &str,
    body: &[u8],
    cnonce: &str,
    nc: u32,
) -> Authorization {
    let qop = if challenge.qop.contains(&Qop::Auth) {
        Some(Qop::Auth)
    } else if challenge.qop.contains(&Qop::AuthInt) {
        Some(Qop::AuthInt)
    } else {
        None
    };
    let h1 = ha1(
        challenge.algorithm,
        &creds.username,
        &challenge.realm,
        &creds.password,
    );
    let (cn, n) = if qop.is_some() {
        (Some(cnonce), Some(nc))
    } else {
        (None, None)
    };
    let response = request_digest(
        challenge.algorithm,
        &h1,
        &challenge.nonce,
        n,
        cn,
        qop,
        method,
        uri,
        body,
    );
    Authorization {
        username: creds.username.clone(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_owned(),
        response,
        algorithm: challenge.algorithm,
        cnonce: cn.map(str::to_owned),
        nc: n,
        qop,
        opaque: challenge.opaque.clone(),
    }
}

/// What the server knows about a user: a password, or the HA1 per algorithm.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserSecret {
    /// Plain password (any algorithm).
    pub password: Option<String>,
    /// H(username:realm:password) with MD5, hex.
    pub ha1_md5: Option<String>,
    /// H(username:realm:password) with SHA-256, hex.
    pub ha1_sha256: Option<String>,
}

impl fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSecret")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ha1_md5", &self.ha1_md5.as_ref().map(|_| "<redacted>"))
            .field(
                "ha1_sha256",
                &self.ha1_sha256.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl UserSecret {
    /// A password.
    pub fn password(p: impl Into<String>) -> Self {
        UserSecret {
            password: Some(p.into()),
            ..UserSecret::default()
        }
    }
    /// HA1 for `algorithm`, if this secret can give it.
    pub fn ha1(&self, algorithm: Algorithm, username: &str, realm: &str) -> Option<String> {
        if let Some(p) = &self.password {
            return Some(ha1(algorithm, username, realm, p));
        }
        match algorithm.base() {
            Algorithm::Sha256 => self.ha1_sha256.as_ref().map(|h| h.to_ascii_lowercase()),
            _ => self.ha1_md5.as_ref().map(|h| h.to_ascii_lowercase()),
        }
    }
}

/// Server-side Digest settings.
#[derive(Clone)]
pub struct DigestConfig {
    /// Realm.
    pub realm: String,
    /// HMAC key for nonces (random per process is fine: after a restart clients get
    /// `stale=true` and retry).
    pub secret: [u8; 32],
    /// How long a nonce is accepted.
    pub nonce_ttl: Duration,
    /// Algorithms challenged with, in order of preference (RFC 8760: SHA-256 first).
    pub algorithms: Vec<Algorithm>,
}

impl fmt::Debug for DigestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestConfig")
            .field("realm", &self.realm)
            .field("nonce_ttl", &self.nonce_ttl)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The outcome of checking credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated as this user.
    Ok {
        /// The user name.
        username: String,
        /// The algorithm the client used.
        algorithm: Algorithm,
    },
    /// No credentials for our realm: challenge (401/407).
    Challenge,
    /// Right credentials on an expired nonce: challenge with `stale=true`.
    Stale,
    /// The nonce-count was not above the last one seen for this nonce (a replay): challenge.
    Replay,
    /// Unknown user or wrong password: 403.
    Forbidden,
    /// Credentials that do not parse or do not fit the request: 400.
    Malformed(AuthError),
}

/// Server side of Digest: issues challenges and checks credentials.
#[derive(Debug)]
pub struct DigestServer {
    cfg: DigestConfig,
    epoch: Instant,
    opaque: String,
    /// Makes every nonce unique, even several in one millisecond (nonce-counts are per nonce).
    counter: u64,
    /// nonce → (highest nc seen, nonce issue time).
    seen: HashMap<String, (u32, Duration)>,
}

impl DigestServer {
    /// A server; `epoch` is the origin of nonce timestamps (any `Instant` before now).
    pub fn new(cfg: DigestConfig, epoch: Instant) -> Self {
        let opaque = {
            let mut m = mac(&cfg.secret);
            m.update(b"opaque");
            hex(&m.finalize().into_bytes()[..16])
        };
        DigestServer {
            cfg,
            epoch,
            opaque,
            counter: 0,
            seen: HashMap::new(),
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.cfg.realm
    }

    fn nonce_mac(&self, ts_ms: u64, salt: u64) -> HmacSha256 {
        let mut m = mac(&self.cfg.secret);
        m.update(&ts_ms.to_be_bytes());
        m.update(&salt.to_be_bytes());
        m.update(self.cfg.realm.as_bytes());
        m
    }

    /// A fresh nonce for `now`: `hex(ms since epoch) hex(counter) hex(HMAC)[..32]`.
    pub fn nonce(&mut self, now: Instant) -> String {
        let ts = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        self.counter = self.counter.wrapping_add(1);
        let salt = self.counter;
        let tag = self.nonce_mac(ts, salt).finalize().into_bytes();
        format!("{ts:016x}{salt:016x}{}", hex(&tag[..16]))
    }

    /// When `nonce` was issued (time since epoch), if we issued it.
    fn nonce_issued(&self, nonce: &str) -> Option<Duration> {
        if nonce.len() != 64 || !nonce.is_ascii() {
            return None;
        }
        let ts = u64::from_str_radix(nonce.get(..16)?, 16).ok()?;
        let salt = u64::from_str_radix(nonce.get(16..32)?, 16).ok()?;
        let tag_hex = nonce.get(32..)?;
        let mut tag = [0u8; 16];
        for (i, b) in tag.iter_mut().enumerate() {
            *b = u8::from_str_radix(tag_hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        self.nonce_mac(ts, salt).verify_truncated_left(&tag).ok()?;
        Some(Duration::from_millis(ts))
    }

    /// Challenge header values, one per configured algorithm.
    pub fn challenges(&mut self, now: Instant, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now);
        self.cfg
            .algorithms
            .iter()
            .map(|&algorithm| {
                Challenge {
                    realm: self.cfg.realm.clone(),
                    nonce: nonce.clone(),
                    opaque: Some(self.opaque.clone()),
                    algorithm,
                    qop: vec![Qop::Auth],
                    stale,
                }
                .to_header_value()
            })
            .collect()
    }

    /// Checks the credentials among `values` (the request's Authorization or
    /// Proxy-Authorization lines) for `method`, looking users up with `lookup`. Credentials
    /// for other realms are ignored (RFC 3261 §22.4).
    pub fn verify<'a>(
        &mut self,
        now: Instant,
        method: &str,
        values: impl IntoIterator<Item = &'a str>,
        lookup: impl Fn(&str) -> Option<UserSecret>,
    ) -> Verdict {
        let mut ours = None;
        for v in values {
            match Authorization::parse(v) {
                Ok(a) if a.realm == self.cfg.realm => {
                    ours = Some(a);
                    break;
                }
                Ok(_) | Err(AuthError::NotDigest) => {}
                Err(e) => return Verdict::Malformed(e),
            }
        }
        let Some(a) = ours else {
            return Verdict::Challenge;
        };
        if !self.cfg.algorithms.contains(&a.algorithm) {
            return Verdict::Malformed(AuthError::Algorithm(a.algorithm.to_string()));
        }
        let Some(qop) = a.qop else {
            // We always offer qop=auth; RFC 7616 requires the client to use it.
            return Verdict::Malformed(AuthError::Missing("qop"));
        };
        if qop != Qop::Auth {
            return Verdict::Malformed(AuthError::Qop(qop.as_str().to_owned()));
        }
        if a.opaque.as_deref().is_some_and(|o| o != self.opaque) {
            // An opaque from another server (or an old secret): the nonce is not ours either.
            return Verdict::Challenge;
        }
        let Some(issued) = self.nonce_issued(&a.nonce) else {
            // Not a nonce of ours (e.g. from before a restart): ask again, stale if the
            // password is right cannot be known without a valid nonce, so plain challenge.
            return Verdict::Challenge;
        };
        let Some(secret) = lookup(&a.username) else {
            return Verdict::Forbidden;
        };
        let Some(h1) = secret.ha1(a.algorithm, &a.username, &a.realm) else {
            return Verdict::Forbidden;
        };
        let expected = request_digest(
            a.algorithm,
            &h1,
            &a.nonce,
            a.nc,
            a.cnonce.as_deref(),
            Some(qop),
            method,
            &a.uri,
            &[],
        );
        if !constant_time_eq(expected.as_bytes(), a.response.as_bytes()) {
            return Verdict::Forbidden;
        }
        let age = now
            .saturating_duration_since(self.epoch)
            .saturating_sub(issued);
        if age > self.cfg.nonce_ttl {
            self.seen.remove(&a.nonce);
            return Verdict::Stale;
        }
        let nc = a.nc.unwrap_or(0);
        if let Some((last, _)) = self.seen.get_mut(&a.nonce) {
            if nc <= *last {
                return Verdict::Replay;
            }
            *last = nc;
        } else {
            if self.seen.len() >= MAX_TRACKED_NONCES {
                self.prune(now);
            }
            if self.seen.len() < MAX_TRACKED_NONCES {
                self.seen.insert(a.nonce.clone(), (nc, issued));
            }
        }
        Verdict::Ok {
            username: a.username,
            algorithm: a.algorithm,
        }
    }

    /// Forgets nonce-counts of expired nonces (called when the table is full; call it
    /// periodically to bound memory sooner).
    pub fn prune(&mut self, now: Instant) {
        let age_now = now.saturating_duration_since(self.epoch);
        let ttl = self.cfg.nonce_ttl;
        self.seen
            .retain(|_, (_, issued)| age_now.saturating_sub(*issued) <= ttl);
    }

    /// Nonces whose nonce-count is tracked.
    pub fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length: this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key length"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1.
    const USER: &str = "Mufasa";
    const PASS: &str = "Circle of Life";
    const REALM: &str = "http-auth@example.org";
    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    fn rfc_challenge(alg: &str) -> Challenge {
        Challenge::parse(&format!(
            "Digest\r\n realm=\"{REALM}\",\r\n qop=\"auth, auth-int\",\r\n algorithm={alg},\r\n \
             nonce=\"{NONCE}\",\r\n opaque=\"{OPAQUE}\""
        ))
        .unwrap()
    }

    #[test]
    fn rfc7616_example_md5_and_sha256() {
        let creds = ClientCredentials {
            username: USER.into(),
            password: PASS.into(),
        };
        for (alg, want) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let ch = rfc_challenge(alg);
            assert_eq!(ch.qop, vec![Qop::Auth, Qop::AuthInt]);
            assert_eq!(ch.opaque.as_deref(), Some(OPAQUE));
            let a = authorize(&ch, &creds, "GET", "/dir/index.html", b"", CNONCE, 1);
            assert_eq!(a.response, want, "{alg}");
            assert_eq!(a.qop, Some(Qop::Auth));
            // Round trip through the header text.
            let back = Authorization::parse(&a.to_header_value()).unwrap();
            assert_eq!(back, a);
            assert!(a.to_header_value().contains("nc=00000001"));
        }
    }

    #[test]
    fn rfc2617_example_with_and_without_qop() {
        // RFC 2617 §3.5 (qop=auth); the no-qop (RFC 2069) value was computed with Python's
        // hashlib: md5(HA1:nonce:HA2).
        let creds = ClientCredentials {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
        };
        let mut ch = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        let a = authorize(&ch, &creds, "GET", "/dir/index.html", b"", "0a4f113b", 1);
        assert_eq!(a.response, "6629fae49393a05397450978507c4ef1");
        ch.qop.clear();
        let a = authorize(&ch, &creds, "GET", "/dir/index.html", b"", "x", 1);
        assert_eq!(a.qop, None);
        assert_eq!(a.nc, None);
        assert_eq!(a.response, "670fd8c2df070c60b045671b8b24ff02");
        assert!(!a.to_header_value().contains("qop"));
    }

    fn server(algs: Vec<Algorithm>) -> (DigestServer, Instant) {
        let t0 = Instant::now();
        (
            DigestServer::new(
                DigestConfig {
                    realm: "frontdoor".into(),
                    secret: [7; 32],
                    nonce_ttl: Duration::from_secs(300),
                    algorithms: algs,
                },
                t0,
            ),
            t0,
        )
    }

    fn lookup(u: &str) -> Option<UserSecret> {
        (u == "alice").then(|| UserSecret::password("wonderland"))
    }

    #[test]
    fn server_round_trip_md5_and_sha256_stale_replay_forbidden() {
        let (mut srv, t0) = server(vec![Algorithm::Sha256, Algorithm::Md5]);
        let values = srv.challenges(t0 + Duration::from_secs(10), false);
        assert_eq!(values.len(), 2);
        assert!(values[0].contains("algorithm=SHA-256"));
        assert!(values[1].contains("algorithm=MD5"));
        assert!(values[0].contains("qop=\"auth\""));
        let best = Challenge::select(values.iter().map(String::as_str)).unwrap();
        assert_eq!(best.algorithm, Algorithm::Sha256);
        let good = ClientCredentials {
            username: "alice".into(),
            password: "wonderland".into(),
        };
        for (i, alg) in [Algorithm::Sha256, Algorithm::Md5].into_iter().enumerate() {
            // A fresh nonce per round (nonce-counts are per nonce, whatever the algorithm).
            let now = t0 + Duration::from_secs(10 + i as u64);
            let values = srv.challenges(now, false);
            let ch = Challenge::parse(&values[i]).unwrap();
            assert_eq!(ch.algorithm, alg);
            let a = authorize(&ch, &good, "REGISTER", "sip:frontdoor", b"", "abc", 1);
            let hv = a.to_header_value();
            assert_eq!(
                srv.verify(now, "REGISTER", [hv.as_str()], lookup),
                Verdict::Ok {
                    username: "alice".into(),
                    algorithm: alg
                }
            );
            // The same nc again is a replay; a higher one is fine.
            assert_eq!(
                srv.verify(now, "REGISTER", [hv.as_str()], lookup),
                Verdict::Replay
            );
            let a2 = authorize(&ch, &good, "REGISTER", "sip:frontdoor", b"", "abc", 2);
            assert!(matches!(
                srv.verify(now, "REGISTER", [a2.to_header_value().as_str()], lookup),
                Verdict::Ok { .. }
            ));
            // Wrong method: the digest no longer matches.
            assert_eq!(
                srv.verify(now, "INVITE", [a2.to_header_value().as_str()], lookup),
                Verdict::Forbidden
            );
            assert_eq!(srv.tracked_nonces(), 1);
            // Expired nonce, right password: stale.
            let a3 = authorize(&ch, &good, "REGISTER", "sip:frontdoor", b"", "abc", 3);
            let late = now + Duration::from_secs(301);
            assert_eq!(
                srv.verify(late, "REGISTER", [a3.to_header_value().as_str()], lookup),
                Verdict::Stale
            );
            // Expired nonce, wrong password: forbidden, not stale.
            let bad = ClientCredentials {
                username: "alice".into(),
                password: "nope".into(),
            };
            let a4 = authorize(&ch, &bad, "REGISTER", "sip:frontdoor", b"", "abc", 4);
            assert_eq!(
                srv.verify(late, "REGISTER", [a4.to_header_value().as_str()], lookup),
                Verdict::Forbidden
            );
            let unknown = ClientCredentials {
                username: "mallory".into(),
                password: "x".into(),
            };
            let a5 = authorize(&ch, &unknown, "REGISTER", "sip:frontdoor", b"", "abc", 1);
            assert_eq!(
                srv.verify(now, "REGISTER", [a5.to_header_value().as_str()], lookup),
                Verdict::Forbidden
            );
        }
        // Stale nonces are forgotten at once; prune drops the others once expired.
        assert_eq!(srv.tracked_nonces(), 0);
        let values = srv.challenges(t0, false);
        let ch = Challenge::parse(&values[1]).unwrap();
        let a = authorize(&ch, &good, "REGISTER", "sip:frontdoor", b"", "z", 1);
        assert!(matches!(
            srv.verify(t0, "REGISTER", [a.to_header_value().as_str()], lookup),
            Verdict::Ok { .. }
        ));
        assert_eq!(srv.tracked_nonces(), 1);
        srv.prune(t0 + Duration::from_secs(299));
        assert_eq!(srv.tracked_nonces(), 1);
        srv.prune(t0 + Duration::from_secs(301));
        assert_eq!(srv.tracked_nonces(), 0);
        let stale = srv.challenges(t0, true);
        assert!(Challenge::parse(&stale[0]).unwrap().stale);
    }

    #[test]
    fn nonces_are_unique_within_one_millisecond() {
        let (mut srv, t0) = server(vec![Algorithm::Md5]);
        let good = ClientCredentials {
            username: "alice".into(),
            password: "wonderland".into(),
        };
        let a = Challenge::parse(&srv.challenges(t0, false)[0]).unwrap();
        let b = Challenge::parse(&srv.challenges(t0, false)[0]).unwrap();
        assert_ne!(a.nonce, b.nonce);
        // Two clients each start at nc=1 on their own nonce: neither is a replay.
        for ch in [a, b] {
            let auth = authorize(&ch, &good, "REGISTER", "sip:x", b"", "c", 1);
            assert!(matches!(
                srv.verify(t0, "REGISTER", [auth.to_header_value().as_str()], lookup),
                Verdict::Ok { .. }
            ));
        }
    }

    #[test]
    fn forged_or_foreign_nonce_and_realm() {
        let (mut srv, t0) = server(vec![Algorithm::Md5]);
        let good = ClientCredentials {
            username: "alice".into(),
            password: "wonderland".into(),
        };
        let mut ch = Challenge::parse(&srv.challenges(t0, false)[0]).unwrap();
        // Tampered timestamp: the HMAC no longer matches.
        ch.nonce.replace_range(0..1, "f");
        let a = authorize(&ch, &good, "REGISTER", "sip:x", b"", "c", 1);
        assert_eq!(
            srv.verify(t0, "REGISTER", [a.to_header_value().as_str()], lookup),
            Verdict::Challenge
        );
        // Another realm's credentials are ignored.
        ch.realm = "elsewhere".into();
        let a = authorize(&ch, &good, "REGISTER", "sip:x", b"", "c", 1);
        assert_eq!(
            srv.verify(t0, "REGISTER", [a.to_header_value().as_str()], lookup),
            Verdict::Challenge
        );
        assert_eq!(
            srv.verify(t0, "REGISTER", std::iter::empty(), lookup),
            Verdict::Challenge
        );
        // SHA-256 not offered by this server.
        let mut ch = Challenge::parse(&srv.challenges(t0, false)[0]).unwrap();
        ch.algorithm = Algorithm::Sha256;
        let a = authorize(&ch, &good, "REGISTER", "sip:x", b"", "c", 1);
        assert!(matches!(
            srv.verify(t0, "REGISTER", [a.to_header_value().as_str()], lookup),
            Verdict::Malformed(AuthError::Algorithm(_))
        ));
    }

    #[test]
    fn ha1_secrets() {
        let (mut srv, t0) = server(vec![Algorithm::Sha256, Algorithm::Md5]);
        let md5 = ha1(Algorithm::Md5, "alice", "frontdoor", "wonderland");
        let sha = ha1(Algorithm::Sha256, "alice", "frontdoor", "wonderland");
        let only_md5 = move |_: &str| {
            Some(UserSecret {
                ha1_md5: Some(md5.to_ascii_uppercase()),
                ..UserSecret::default()
            })
        };
        let good = ClientCredentials {
            username: "alice".into(),
            password: "wonderland".into(),
        };
        let values = srv.challenges(t0, false);
        let a_md5 = authorize(
            &Challenge::parse(&values[1]).unwrap(),
            &good,
            "REGISTER",
            "sip:x",
            b"",
            "c",
            1,
        );
        assert!(matches!(
            srv.verify(
                t0,
                "REGISTER",
                [a_md5.to_header_value().as_str()],
                &only_md5
            ),
            Verdict::Ok { .. }
        ));
        let a_sha = authorize(
            &Challenge::parse(&values[0]).unwrap(),
            &good,
            "REGISTER",
            "sip:x",
            b"",
            "c",
            2,
        );
        assert_eq!(
            srv.verify(
                t0,
                "REGISTER",
                [a_sha.to_header_value().as_str()],
                &only_md5
            ),
            Verdict::Forbidden,
            "no SHA-256 HA1 configured"
        );
        let with_sha = move |_: &str| {
            Some(UserSecret {
                ha1_sha256: Some(sha.clone()),
                ..UserSecret::default()
            })
        };
        assert!(matches!(
            srv.verify(t0, "REGISTER", [a_sha.to_header_value().as_str()], with_sha),
            Verdict::Ok { .. }
        ));
    }

    #[test]
    fn malformed_headers_are_errors() {
        for bad in [
            "",
            "Basic abc",
            "Digest",
            "Digest realm",
            "Digest realm=",
            "Digest realm=\"x",
            "Digest realm=\"x\\",
            "Digest realm=x realm=y",
            "Digest realm=x, realm=y",
            "Digest realm=x,, nonce=y",
            "Digest =x",
        ] {
            assert!(Challenge::parse(bad).is_err(), "{bad:?}");
            assert!(Authorization::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Challenge::parse("Digest realm=x, nonce=y, algorithm=SHA-512-256"),
            Err(AuthError::Algorithm("SHA-512-256".into()))
        );
        assert_eq!(
            Authorization::parse(
                "Digest username=a, realm=b, nonce=c, uri=d, response=zz, qop=auth, nc=00000001, cnonce=e"
            ),
            Err(AuthError::Value("response"))
        );
        assert_eq!(
            Authorization::parse(
                "Digest username=a, realm=b, nonce=c, uri=d, response=ab, qop=auth, nc=1, cnonce=e"
            ),
            Err(AuthError::Value("nc"))
        );
        assert_eq!(
            Authorization::parse(
                "Digest username=a, realm=b, nonce=c, uri=d, response=ab, qop=auth"
            ),
            Err(AuthError::Missing("cnonce"))
        );
        assert_eq!(
            Challenge::parse(&format!("Digest realm=\"{}\"", "a".repeat(5000))),
            Err(AuthError::TooLong)
        );
        // Quoting round-trips escapes and never lets CR/LF through.
        let ch = Challenge {
            realm: "a\"b\\c\r\nInjected: x".into(),
            nonce: "n".into(),
            opaque: None,
            algorithm: Algorithm::Md5,
            qop: vec![Qop::Auth],
            stale: false,
        };
        let v = ch.to_header_value();
        assert!(!v.contains('\r') && !v.contains('\n'));
        assert_eq!(Challenge::parse(&v).unwrap().realm, "a\"b\\cInjected: x");
    }

    proptest::proptest! {
        #[test]
        fn random_headers_never_panic(s in "\\PC{0,200}") {
            let _ = Challenge::parse(&s);
            let _ = Authorization::parse(&s);
            let _ = Challenge::parse(&format!("Digest {s}"));
            let _ = Authorization::parse(&format!("Digest {s}"));
        }

        #[test]
        fn structured_garbage_never_panics(
            parts in proptest::collection::vec(
                ("[a-z]{0,8}", "[=,\" \\\\a-zA-Z0-9/+-]{0,24}"), 0..10)
        ) {
            let mut s = String::from("Digest ");
            for (k, v) in &parts {
                s.push_str(k);
                s.push_str(v);
            }
            let (mut srv, t0) = server(vec![Algorithm::Md5, Algorithm::Sha256]);
            let _ = Challenge::parse(&s);
            let _ = Authorization::parse(&s);
            let _ = srv.verify(t0, "REGISTER", [s.as_str()], lookup);
        }

        #[test]
        fn round_trip_any_credentials(user in "[ -~]{1,20}", pass in "[ -~]{0,20}", uri in "sip:[a-z0-9@.]{1,20}", nc in 1u32..1000) {
            let (mut srv, t0) = server(vec![Algorithm::Sha256, Algorithm::Md5]);
            let values = srv.challenges(t0, false);
            let ch = Challenge::select(values.iter().map(String::as_str)).unwrap();
            let creds = ClientCredentials { username: user.clone(), password: pass.clone() };
            let a = authorize(&ch, &creds, "REGISTER", &uri, b"", "cn", nc);
            let hv = a.to_header_value();
            proptest::prop_assert_eq!(Authorization::parse(&hv).unwrap(), a);
            let u2 = user.clone();
            let verdict = srv.verify(t0, "REGISTER", [hv.as_str()], move |u| (u == u2).then(|| UserSecret::password(pass.clone())));
            proptest::prop_assert_eq!(verdict, Verdict::Ok { username: user, algorithm: Algorithm::Sha256 });
        }
    }
}
