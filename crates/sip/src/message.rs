//! SIP message model: parsing, typed accessors for the headers the core needs, and lean
//! serializers for the messages we send.
//!
//! Parsing is split in two:
//!
//! * **we frame**: leading CRLFs, size limit, the blank line that ends the header section,
//!   UTF-8, and Content-Length (RFC 3261 §18.3, §7.5: missing, negative, non-numeric,
//!   conflicting or larger than what arrived; the body is cut to it). rsip ignores all of
//!   this, so it only ever sees a section our framing accepted;
//! * **rsip parses** that header section: start line and header lines
//!   (rsip's own nom tokenizers for the request/status line and for header lines, zero-copy;
//!   the Request-URI also goes through rsip's typed `Uri`). Sections rsip cannot read as sent
//!   (bare LF line ends, folded lines, `Name :`) are handed to it in canonical form.
//!
//! rsip stays behind this module's own types ([`Request`], [`Response`], [`Header`], ...):
//! header values are copied once out of rsip's tokens, and the core headers (Via, From, To,
//! Call-ID, CSeq, Max-Forwards) are read from them. When rsip rejects a message, a light
//! line pre-scan still recovers the request line and core headers so the UA can answer 400
//! ([`ParseError::Answerable`]); anything else is [`ParseError::Unparsable`] and dropped.
//! Nothing here panics on wire data.
//!
//! Building requests and responses is plain string writing (no parsing involved).

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

/// Largest Content-Length we accept at all (the UA applies a tighter `max_message_size`).
pub const MAX_CONTENT_LENGTH: usize = 16 * 1024 * 1024;

/// The RFC 3261 branch magic cookie.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// What exactly is wrong with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseFault {
    /// Empty input or only whitespace.
    #[error("empty message")]
    Empty,
    /// No blank line separating headers from the body.
    #[error("no end of headers (CRLFCRLF)")]
    NoHeaderEnd,
    /// The first line is neither a request line nor a status line.
    #[error("bad start line")]
    BadStartLine,
    /// A header line without a colon or with an invalid name.
    #[error("bad header line")]
    BadHeaderLine,
    /// Content-Length is negative, not a number, duplicated with different values or too big.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Content-Length says more bytes than were received.
    #[error("Content-Length larger than the received body")]
    ContentLengthMismatch,
    /// Message exceeds the configured size.
    #[error("message too large")]
    TooLarge,
    /// No (parsable) Via header.
    #[error("missing or malformed Via")]
    BadVia,
    /// No Call-ID header.
    #[error("missing Call-ID")]
    MissingCallId,
    /// No or malformed CSeq header.
    #[error("missing or malformed CSeq")]
    BadCSeq,
    /// CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// No or malformed From header.
    #[error("missing or malformed From")]
    BadFrom,
    /// No or malformed To header.
    #[error("missing or malformed To")]
    BadTo,
    /// Max-Forwards is not a number in 0..=255.
    #[error("malformed Max-Forwards")]
    BadMaxForwards,
    /// Header bytes are not valid UTF-8.
    #[error("header section is not UTF-8")]
    NotUtf8,
}

/// A message that could not be turned into a [`SipMessage`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Nothing we can answer: drop (and count) it.
    #[error("unparsable message: {0}")]
    Unparsable(ParseFault),
    /// A request with enough of its core (request line, Via, Call-ID, CSeq, From, To)
    /// to send a 400 back. `request` holds what was parsed.
    #[error("malformed request: {fault}")]
    Answerable {
        /// What is wrong.
        fault: ParseFault,
        /// The best-effort parsed request, fit for building a 400.
        request: Box<Request>,
    },
}

impl ParseError {
    /// The underlying fault.
    pub fn fault(&self) -> ParseFault {
        match self {
            ParseError::Unparsable(f) => *f,
            ParseError::Answerable { fault, .. } => *fault,
        }
    }
    /// Whether a 400 can be sent.
    pub fn is_answerable(&self) -> bool {
        matches!(self, ParseError::Answerable { .. })
    }
}

/// SIP request methods.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// INFO
    Info,
    /// UPDATE
    Update,
    /// PRACK
    Prack,
    /// REGISTER
    Register,
    /// SUBSCRIBE
    Subscribe,
    /// NOTIFY
    Notify,
    /// REFER
    Refer,
    /// MESSAGE
    Message,
    /// PUBLISH
    Publish,
    /// Any other token.
    Other(Box<str>),
}

impl Method {
    /// Parse a method token (case-sensitive, as RFC 3261 says).
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => {
                if other.is_empty() || !other.bytes().all(is_token_char) {
                    return None;
                }
                Method::Other(other.into())
            }
        })
    }
    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Header names the core knows (compact forms are folded in), plus any other.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Contact,
    ContentLength,
    ContentType,
    Route,
    RecordRoute,
    Require,
    ProxyRequire,
    Supported,
    Unsupported,
    Allow,
    Accept,
    SessionExpires,
    MinSe,
    RetryAfter,
    UserAgent,
    Server,
    Warning,
    Reason,
    Other(Box<str>),
}

impl HeaderName {
    /// Map a header name (any case, compact forms) to a [`HeaderName`].
    pub fn parse(s: &str) -> HeaderName {
        if s.len() == 1 {
            match s.as_bytes()[0].to_ascii_lowercase() {
                b'v' => return HeaderName::Via,
                b'f' => return HeaderName::From,
                b't' => return HeaderName::To,
                b'i' => return HeaderName::CallId,
                b'm' => return HeaderName::Contact,
                b'l' => return HeaderName::ContentLength,
                b'c' => return HeaderName::ContentType,
                b'k' => return HeaderName::Supported,
                b'x' => return HeaderName::SessionExpires,
                _ => {}
            }
        }
        const KNOWN: &[(&str, HeaderName)] = &[
            ("Via", HeaderName::Via),
            ("From", HeaderName::From),
            ("To", HeaderName::To),
            ("Call-ID", HeaderName::CallId),
            ("CSeq", HeaderName::CSeq),
            ("Max-Forwards", HeaderName::MaxForwards),
            ("Contact", HeaderName::Contact),
            ("Content-Length", HeaderName::ContentLength),
            ("Content-Type", HeaderName::ContentType),
            ("Route", HeaderName::Route),
            ("Record-Route", HeaderName::RecordRoute),
            ("Require", HeaderName::Require),
            ("Proxy-Require", HeaderName::ProxyRequire),
            ("Supported", HeaderName::Supported),
            ("Unsupported", HeaderName::Unsupported),
            ("Allow", HeaderName::Allow),
            ("Accept", HeaderName::Accept),
            ("Session-Expires", HeaderName::SessionExpires),
            ("Min-SE", HeaderName::MinSe),
            ("Retry-After", HeaderName::RetryAfter),
            ("User-Agent", HeaderName::UserAgent),
            ("Server", HeaderName::Server),
            ("Warning", HeaderName::Warning),
            ("Reason", HeaderName::Reason),
        ];
        for (n, h) in KNOWN {
            if n.eq_ignore_ascii_case(s) {
                return h.clone();
            }
        }
        HeaderName::Other(s.into())
    }

    /// Canonical spelling.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Contact => "Contact",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Supported => "Supported",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Allow => "Allow",
            HeaderName::Accept => "Accept",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::MinSe => "Min-SE",
            HeaderName::RetryAfter => "Retry-After",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Server => "Server",
            HeaderName::Warning => "Warning",
            HeaderName::Reason => "Reason",
            HeaderName::Other(s) => s,
        }
    }

    /// Case-insensitive comparison with a name string (compact forms resolved).
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HeaderName::Other(s) => s.eq_ignore_ascii_case(name),
            known => *known == HeaderName::parse(name),
        }
    }
}

/// One header line (after unfolding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name.
    pub name: HeaderName,
    /// Value, trimmed.
    pub value: String,
}

/// A parsed Via header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token (UDP, TCP, TLS, ...), upper-cased.
    pub transport: String,
    /// sent-by host (IPv6 kept with brackets).
    pub host: String,
    /// sent-by port when present.
    pub port: Option<u16>,
    /// Parameters in order; `None` value for flags such as `rport`.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parse one Via value (`SIP/2.0/UDP host:port;params`).
    pub fn parse(s: &str) -> Option<Via> {
        let s = s.trim();
        let (proto, rest) = split_ws(s)?;
        let mut parts = proto.split('/');
        let name = parts.next()?.trim();
        let ver = parts.next()?.trim();
        let transport = parts.next()?.trim();
        if !name.eq_ignore_ascii_case("SIP") || ver != "2.0" || transport.is_empty() {
            return None;
        }
        let mut segs = rest.split(';');
        let sent_by = segs.next()?.trim();
        let (host, port) = split_host_port(sent_by)?;
        let mut params = Vec::new();
        for p in segs {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            match p.split_once('=') {
                Some((k, v)) => params.push((k.trim().to_owned(), Some(v.trim().to_owned()))),
                None => params.push((p.to_owned(), None)),
            }
        }
        Some(Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_owned(),
            port,
            params,
        })
    }

    /// A parameter value (`Some(None)` for a flag).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// Whether the branch carries the RFC 3261 magic cookie.
    pub fn is_rfc3261(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }

    /// `rport` present (with or without value).
    pub fn has_rport(&self) -> bool {
        self.param("rport").is_some()
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    /// The `rport` value when filled in.
    pub fn rport(&self) -> Option<u16> {
        self.param("rport").flatten().and_then(|v| v.parse().ok())
    }

    /// `host[:port]` as a string (the sent-by).
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }

    /// The address the sent-by names when it is an IP literal (default port 5060).
    pub fn sent_by_addr(&self) -> Option<SocketAddr> {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = h.parse().ok()?;
        Some(SocketAddr::new(ip, self.port.unwrap_or(5060)))
    }

    /// Add `received`/`rport` values for a request that came from `source` (RFC 3261 §18.2.1, RFC 3581).
    pub fn stamp_source(&mut self, source: SocketAddr) {
        let rport = self.has_rport();
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let differs = host
            .parse::<IpAddr>()
            .map(|ip| ip != source.ip())
            .unwrap_or(true);
        if rport || differs {
            self.params
                .retain(|(k, _)| !k.eq_ignore_ascii_case("received"));
            self.params
                .push(("received".into(), Some(source.ip().to_string())));
        }
        if rport {
            for (k, v) in &mut self.params {
                if k.eq_ignore_ascii_case("rport") {
                    *v = Some(source.port().to_string());
                }
            }
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

fn split_ws(s: &str) -> Option<(&str, &str)> {
    let i = s.find([' ', '\t'])?;
    Some((&s[..i], s[i..].trim_start()))
}

/// Split `host[:port]` (IPv6 in brackets).
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.starts_with('[') {
        let end = s.find(']')?;
        let host = &s[..=end];
        let rest = &s[end + 1..];
        if rest.is_empty() {
            return Some((host, None));
        }
        let port = rest.strip_prefix(':')?.trim().parse().ok()?;
        return Some((host, Some(port)));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => {
            if h.is_empty() || h.contains(':') {
                return None;
            }
            Some((h, Some(p.trim().parse().ok()?)))
        }
        None => Some((s, None)),
    }
}

/// A From/To/Contact style `name-addr` or `addr-spec` with parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name without quotes.
    pub display: Option<String>,
    /// The URI.
    pub uri: String,
    /// The tag parameter.
    pub tag: Option<String>,
    /// Header parameters after the URI (raw, including the leading `;`, tag included).
    pub params: String,
}

impl NameAddr {
    /// Parse a From/To/Contact value.
    pub fn parse(s: &str) -> Option<NameAddr> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let (display, uri, params) = if let Some(lt) = find_unquoted(s, '<') {
            let gt = s[lt..].find('>')? + lt;
            let disp = s[..lt].trim();
            let disp = disp.trim_matches('"').trim();
            let display = if disp.is_empty() {
                None
            } else {
                Some(disp.to_owned())
            };
            (display, s[lt + 1..gt].trim(), s[gt + 1..].trim())
        } else {
            match s.find(';') {
                Some(i) => (None, s[..i].trim(), s[i..].trim()),
                None => (None, s, ""),
            }
        };
        if uri.is_empty() || uri.contains(char::is_whitespace) {
            return None;
        }
        let mut tag = None;
        for p in params.split(';') {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("tag")
            {
                let v = v.trim();
                if !v.is_empty() {
                    tag = Some(v.to_owned());
                }
            }
        }
        Some(NameAddr {
            display,
            uri: uri.to_owned(),
            tag,
            params: params.to_owned(),
        })
    }
}

fn find_unquoted(s: &str, c: char) -> Option<usize> {
    let mut quoted = false;
    let mut esc = false;
    for (i, ch) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match ch {
            '\\' if quoted => esc = true,
            '"' => quoted = !quoted,
            _ if ch == c && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// User part of a SIP/SIPS/tel URI (`sip:ring@host` → `ring`).
pub fn uri_user(uri: &str) -> &str {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("tel:"))
        .unwrap_or(uri);
    let user = match rest.find('@') {
        Some(i) => &rest[..i],
        None if uri.starts_with("tel:") => rest,
        None => "",
    };
    let user = user.split(';').next().unwrap_or("");
    user.split(':').next().unwrap_or("")
}

/// `host[:port]` of a SIP URI as a socket address, when it is an IP literal.
pub fn uri_socket_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let rest = match rest.rfind('@') {
        Some(i) => &rest[i + 1..],
        None => rest,
    };
    let hostport = rest.split([';', '?', '>']).next()?;
    let (host, port) = split_host_port(hostport)?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port.unwrap_or(5060)))
}

/// CSeq value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number.
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    fn parse(s: &str) -> Option<CSeq> {
        let (n, m) = split_ws(s.trim())?;
        let seq = n.parse::<u32>().ok()?;
        if seq >= 1 << 31 {
            return None;
        }
        Some(CSeq {
            seq,
            method: Method::parse(m.trim())?,
        })
    }
}

/// The header list of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// First value of header `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.0
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }
    /// All values (lines) of `name`.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| h.value.as_str())
    }
    /// All comma-separated elements of `name`, across lines (not for headers with quoted commas).
    pub fn get_list<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .flat_map(split_commas)
            .filter(|s| !s.is_empty())
    }
    /// Lookup by an arbitrary name string (case-insensitive, compact forms).
    pub fn get_by_str(&self, name: &str) -> Option<&str> {
        let n = HeaderName::parse(name);
        self.get(&n)
    }
}

/// Split a header value at top-level commas (outside quotes and angle brackets).
pub fn split_commas(s: &str) -> SplitCommas<'_> {
    SplitCommas { rest: Some(s) }
}

/// Iterator returned by [`split_commas`] (no allocation).
#[derive(Debug, Clone)]
pub struct SplitCommas<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for SplitCommas<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let mut quoted = false;
        let mut angle = false;
        for (i, b) in s.bytes().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    self.rest = Some(&s[i + 1..]);
                    return Some(s[..i].trim());
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(s.trim())
    }
}

/// Fields every request and response must have, pre-parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Core {
    /// Top Via.
    pub via: Via,
    /// Call-ID.
    pub call_id: String,
    /// From.
    pub from: NameAddr,
    /// To.
    pub to: NameAddr,
    /// CSeq.
    pub cseq: CSeq,
    /// Max-Forwards when present.
    pub max_forwards: Option<u8>,
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Request-URI.
    pub uri: String,
    /// All headers.
    pub headers: Headers,
    /// Pre-parsed core headers.
    pub core: Core,
    /// Body (already cut to Content-Length).
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// All headers.
    pub headers: Headers,
    /// Pre-parsed core headers.
    pub core: Core,
    /// Body.
    pub body: Bytes,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    /// Request.
    Request(Request),
    /// Response.
    Response(Response),
}

macro_rules! common_accessors {
    () => {
        /// Top Via.
        pub fn via(&self) -> &Via {
            &self.core.via
        }
        /// Top Via branch.
        pub fn branch(&self) -> Option<&str> {
            self.core.via.branch()
        }
        /// Call-ID.
        pub fn call_id(&self) -> &str {
            &self.core.call_id
        }
        /// From header.
        pub fn from(&self) -> &NameAddr {
            &self.core.from
        }
        /// To header.
        pub fn to(&self) -> &NameAddr {
            &self.core.to
        }
        /// From tag.
        pub fn from_tag(&self) -> Option<&str> {
            self.core.from.tag.as_deref()
        }
        /// To tag.
        pub fn to_tag(&self) -> Option<&str> {
            self.core.to.tag.as_deref()
        }
        /// CSeq.
        pub fn cseq(&self) -> &CSeq {
            &self.core.cseq
        }
        /// Max-Forwards.
        pub fn max_forwards(&self) -> Option<u8> {
            self.core.max_forwards
        }
        /// First header value by name.
        pub fn header(&self, name: &HeaderName) -> Option<&str> {
            self.headers.get(name)
        }
        /// Contact (first).
        pub fn contact(&self) -> Option<NameAddr> {
            self.headers
                .get_list(&HeaderName::Contact)
                .next()
                .and_then(NameAddr::parse)
        }
        /// Record-Route entries in order.
        pub fn record_route(&self) -> Vec<String> {
            self.headers
                .get_list(&HeaderName::RecordRoute)
                .map(str::to_owned)
                .collect()
        }
        /// Route entries in order.
        pub fn route(&self) -> Vec<String> {
            self.headers
                .get_list(&HeaderName::Route)
                .map(str::to_owned)
                .collect()
        }
        /// Require option tags.
        pub fn require(&self) -> Vec<&str> {
            self.headers.get_list(&HeaderName::Require).collect()
        }
        /// Supported option tags.
        pub fn supported(&self) -> Vec<&str> {
            self.headers.get_list(&HeaderName::Supported).collect()
        }
        /// Content-Type (media type, without parameters, lower-cased).
        pub fn content_type(&self) -> Option<String> {
            self.headers.get(&HeaderName::ContentType).map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
        }
        /// Body bytes.
        pub fn body(&self) -> &Bytes {
            &self.body
        }
        /// Whether the body is SDP.
        pub fn has_sdp(&self) -> bool {
            !self.body.is_empty() && self.content_type().is_none_or(|c| c == "application/sdp")
        }
    };
}

impl Request {
    common_accessors!();
    /// Method.
    pub fn method(&self) -> &Method {
        &self.method
    }
    /// User part of the Request-URI.
    pub fn request_user(&self) -> &str {
        uri_user(&self.uri)
    }
}

impl Response {
    common_accessors!();
    /// Status code.
    pub fn status(&self) -> u16 {
        self.status
    }
}

impl SipMessage {
    /// Call-ID of either kind.
    pub fn call_id(&self) -> &str {
        match self {
            SipMessage::Request(r) => r.call_id(),
            SipMessage::Response(r) => r.call_id(),
        }
    }
}

enum StartLine {
    Request(Method, String),
    Response(u16, String),
}

fn parse_start_line(line: &str) -> Option<StartLine> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let rest = rest.trim_start();
        let (code, reason) = match rest.split_once(' ') {
            Some((c, r)) => (c, r.trim()),
            None => (rest.trim(), ""),
        };
        if code.len() != 3 {
            return None;
        }
        let status: u16 = code.parse().ok()?;
        if !(100..=699).contains(&status) {
            return None;
        }
        return Some(StartLine::Response(status, reason.to_owned()));
    }
    let mut it = line.split(' ');
    let m = it.next()?;
    let uri = it.next()?;
    let ver = it.next()?;
    if it.next().is_some() || ver != "SIP/2.0" || uri.is_empty() || !uri.contains(':') {
        return None;
    }
    Some(StartLine::Request(Method::parse(m)?, uri.to_owned()))
}

/// Start line and header lines of a framed header section (`head CRLF CRLF`), parsed by rsip.
/// `None` when rsip rejects it, or when a value would swallow a bare LF line end (a section
/// that is not in canonical form; see [`canonical_head`]).
///
/// This runs rsip's own request/response and header tokenizers the way its message
/// tokenizer composes them, with one difference for speed: the start line is tokenized on
/// its own (a copy of it, closed by a blank line) and the header lines one by one. rsip turns
/// every failed alternative into an error string holding all the input that is left; inside
/// the start line that input is now the rest of the line, not the whole header section.
fn rsip_parse(section: &[u8]) -> Option<(StartLine, Vec<Header>)> {
    use rsip::headers::header;
    use rsip::message::{request, response};
    let line_end = section.windows(2).position(|w| w == b"\r\n")?;
    let line = &section[..line_end];
    let block = section.get(line_end + 2..section.len().checked_sub(2)?)?;
    let mut start = Vec::with_capacity(line.len() + 4);
    start.extend_from_slice(line);
    start.extend_from_slice(b"\r\n\r\n");
    // The first bytes tell a status line from a request line (rsip's method tokenizer refuses
    // a method starting with "SIP/").
    let start_line = if !line.starts_with(b"SIP/") {
        let (_, r) = request::Tokenizer::tokenize(&start).ok()?;
        if r.version.major != b"2" || r.version.minor != b"0" {
            return None;
        }
        let method = Method::parse(std::str::from_utf8(r.method.value).ok()?)?;
        // rsip's typed URI checks what its tokenizer leaves open (port range, host).
        let _: rsip::Uri = r.uri.try_into().ok()?;
        // rsip has split `method SP Request-URI SP version`: take the URI as sent.
        let line = std::str::from_utf8(line).ok()?;
        let (_, rest) = line.split_once(' ')?;
        let (uri, _) = rest.rsplit_once(' ')?;
        if uri.is_empty() || !uri.contains(':') {
            return None;
        }
        StartLine::Request(method, uri.to_owned())
    } else {
        let (_, r) = response::Tokenizer::tokenize(&start).ok()?;
        if r.version.major != b"2" || r.version.minor != b"0" {
            return None;
        }
        let code = r.status_code.code;
        if !code.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let status: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
        if !(100..=699).contains(&status) {
            return None;
        }
        let reason = std::str::from_utf8(r.status_code.reason).ok()?.trim();
        StartLine::Response(status, reason.to_owned())
    };
    // Every header line in `block` ends with CRLF.
    let mut headers = Vec::with_capacity(16);
    let mut rest = block;
    while !rest.is_empty() {
        let (left, h) = header::Tokenizer::tokenize(rest).ok()?;
        if left.len() >= rest.len() {
            return None;
        }
        rest = left;
        if h.value.contains(&b'\n') {
            // A bare LF that rsip took for part of a value: see `canonical_head`.
            return None;
        }
        let name = std::str::from_utf8(h.name).ok()?;
        let value = std::str::from_utf8(h.value).ok()?;
        headers.push(Header {
            name: HeaderName::parse(name),
            value: value.trim().to_owned(),
        });
    }
    Some((start_line, headers))
}

/// The header section in the form rsip reads: CRLF line ends, folded lines joined
/// (RFC 3261 §7.3.1), no white space before a header colon, closed by a blank line.
/// Lines that are beyond repair are kept as they are (and rsip rejects them).
fn canonical_head(head: &str) -> String {
    let mut out = String::with_capacity(head.len() + 8);
    for (i, line) in head.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i == 0 {
            out.push_str(line);
            continue;
        }
        if line.starts_with([' ', '\t']) && i > 1 {
            out.push(' ');
            out.push_str(line.trim());
            continue;
        }
        out.push_str("\r\n");
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() => {
                out.push_str(name.trim_end());
                out.push_str(": ");
                out.push_str(value.trim());
            }
            _ => out.push_str(line),
        }
    }
    out.push_str("\r\n\r\n");
    out
}

/// Best-effort line scan of a header section rsip rejected (or one with broken framing),
/// enough to answer 400: the start line, the well-formed header lines, and the first fault.
fn prescan(head: &str) -> (Option<StartLine>, Vec<Header>, Option<ParseFault>) {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = parse_start_line(lines.next().unwrap_or(""));
    let mut fault = None;
    let mut headers: Vec<Header> = Vec::with_capacity(16);
    if start_line.is_none() {
        return (None, headers, fault);
    }
    for line in lines {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.value.push(' ');
                last.value.push_str(line.trim());
            } else {
                fault.get_or_insert(ParseFault::BadHeaderLine);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            fault.get_or_insert(ParseFault::BadHeaderLine);
            continue;
        };
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            fault.get_or_insert(ParseFault::BadHeaderLine);
            continue;
        }
        headers.push(Header {
            name: HeaderName::parse(name),
            value: value.trim().to_owned(),
        });
    }
    (start_line, headers, fault)
}

/// Whether a line looks like a SIP start line (used by the stream framer to resync).
pub fn looks_like_start_line(line: &[u8]) -> bool {
    match std::str::from_utf8(line) {
        Ok(s) => parse_start_line(s.trim_end_matches(['\r', '\n'])).is_some(),
        Err(_) => false,
    }
}

/// Find the end of the header section: returns (end of headers, start of body).
pub fn find_header_end(data: &[u8]) -> Option<(usize, usize)> {
    let crlf = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let lf = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Parse one complete message (a UDP datagram or a TCP-framed message).
pub fn parse(data: &[u8]) -> Result<SipMessage, ParseError> {
    parse_with_limit(data, usize::MAX)
}

/// Like [`parse`] with a size limit.
pub fn parse_with_limit(data: &[u8], max_size: usize) -> Result<SipMessage, ParseError> {
    // Skip leading CRLF (keepalives / RFC 3261 §7.5 tolerance).
    let start = data
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(data.len());
    let data = &data[start..];
    if data.is_empty() {
        return Err(ParseError::Unparsable(ParseFault::Empty));
    }
    let mut fault: Option<ParseFault> = None;
    if data.len() > max_size {
        fault = Some(ParseFault::TooLarge);
    }
    let (head_end, body_start) = match find_header_end(data) {
        Some(x) => x,
        None => {
            fault.get_or_insert(ParseFault::NoHeaderEnd);
            (data.len(), data.len())
        }
    };
    let head_bytes = &data[..head_end];
    let head: std::borrow::Cow<'_, str> = match std::str::from_utf8(head_bytes) {
        Ok(s) => s.into(),
        Err(_) => {
            fault.get_or_insert(ParseFault::NotUtf8);
            String::from_utf8_lossy(head_bytes)
        }
    };

    // rsip parses the framed header section (start line, header lines). It only sees a
    // section that our framing accepted: it does not check the blank line or Content-Length.
    let mut parsed = None;
    if fault.is_none() {
        if data[head_end..].starts_with(b"\r\n\r\n") {
            parsed = rsip_parse(&data[..body_start]);
        }
        if parsed.is_none() {
            // Bare LF line ends, folded lines or `Name :` (all legal or tolerated, RFC 3261
            // §7.3.1, §7.5) are not understood by rsip: hand it the canonical form.
            parsed = rsip_parse(canonical_head(&head).as_bytes());
        }
    }
    let (start_line, headers) = match parsed {
        Some(p) => p,
        None => {
            // Rejected by rsip (or broken framing): a light pre-scan still recovers what a 400
            // needs (request line, Via, Call-ID, CSeq, From, To); otherwise the message is dropped.
            let (start_line, headers, scan_fault) = prescan(&head);
            let Some(start_line) = start_line else {
                return Err(ParseError::Unparsable(ParseFault::BadStartLine));
            };
            if fault.is_none() {
                // The pre-scan found the header lines fine, so rsip refused the start line.
                fault = Some(scan_fault.unwrap_or(ParseFault::BadStartLine));
            }
            (start_line, headers)
        }
    };
    let headers = Headers(headers);

    // Content-Length.
    let available = data.len() - body_start;
    let mut content_length: Option<usize> = None;
    for v in headers.get_all(&HeaderName::ContentLength) {
        let v = v.trim();
        let parsed = if !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) {
            v.parse::<usize>().ok().filter(|n| *n <= MAX_CONTENT_LENGTH)
        } else {
            None
        };
        match (parsed, content_length) {
            (None, _) => {
                fault.get_or_insert(ParseFault::InvalidContentLength);
            }
            (Some(n), Some(prev)) if n != prev => {
                fault.get_or_insert(ParseFault::InvalidContentLength);
            }
            (Some(n), _) => content_length = Some(n),
        }
    }
    let body_len = match content_length {
        Some(n) if n > available => {
            fault.get_or_insert(ParseFault::ContentLengthMismatch);
            available
        }
        Some(n) => n,
        None => available,
    };
    let body = Bytes::copy_from_slice(&data[body_start..body_start + body_len]);

    let core = match extract_core(&headers) {
        Ok(c) => c,
        Err(f) => return Err(ParseError::Unparsable(f)),
    };
    if core.1.is_some() {
        fault.get_or_insert(ParseFault::BadMaxForwards);
    }
    let core = core.0;
    match start_line {
        StartLine::Request(method, uri) => {
            if core.cseq.method != method {
                fault.get_or_insert(ParseFault::CSeqMethodMismatch);
            }
            let req = Request {
                method,
                uri,
                headers,
                core,
                body,
            };
            match fault {
                None => Ok(SipMessage::Request(req)),
                Some(fault) => Err(ParseError::Answerable {
                    fault,
                    request: Box::new(req),
                }),
            }
        }
        StartLine::Response(status, reason) => match fault {
            None => Ok(SipMessage::Response(Response {
                status,
                reason,
                headers,
                core,
                body,
            })),
            Some(f) => Err(ParseError::Unparsable(f)),
        },
    }
}

/// Extract the core headers; the second element reports a bad Max-Forwards.
fn extract_core(headers: &Headers) -> Result<(Core, Option<ParseFault>), ParseFault> {
    let via = headers
        .get(&HeaderName::Via)
        .and_then(|v| split_commas(v).next())
        .and_then(Via::parse)
        .ok_or(ParseFault::BadVia)?;
    let call_id = headers
        .get(&HeaderName::CallId)
        .filter(|v| !v.is_empty() && !v.contains(char::is_whitespace))
        .ok_or(ParseFault::MissingCallId)?
        .to_owned();
    let cseq = headers
        .get(&HeaderName::CSeq)
        .and_then(CSeq::parse)
        .ok_or(ParseFault::BadCSeq)?;
    let from = headers
        .get(&HeaderName::From)
        .and_then(NameAddr::parse)
        .ok_or(ParseFault::BadFrom)?;
    let to = headers
        .get(&HeaderName::To)
        .and_then(NameAddr::parse)
        .ok_or(ParseFault::BadTo)?;
    let (max_forwards, mf_fault) = match headers.get(&HeaderName::MaxForwards) {
        None => (None, None),
        Some(v) => match v.trim().parse::<u8>() {
            Ok(n) => (Some(n), None),
            Err(_) => (None, Some(ParseFault::BadMaxForwards)),
        },
    };
    Ok((
        Core {
            via,
            call_id,
            from,
            to,
            cseq,
            max_forwards,
        },
        mf_fault,
    ))
}

/// Standard reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => match status / 100 {
            1 => "Session Progress",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// Builds a response to a received request, serialized straight to bytes.
#[derive(Debug)]
pub struct ResponseBuilder<'a> {
    req: &'a Request,
    buf: String,
    to_tag: Option<&'a str>,
    body: Option<(&'a str, &'a [u8])>,
    source: Option<SocketAddr>,
}

impl<'a> ResponseBuilder<'a> {
    /// Start a response; copies Via, From, To, Call-ID and CSeq from `req`.
    pub fn new(req: &'a Request, status: u16) -> Self {
        Self::with_reason(req, status, reason_phrase(status))
    }
    /// Start a response with an explicit reason phrase.
    pub fn with_reason(req: &'a Request, status: u16, reason: &str) -> Self {
        let mut buf = String::with_capacity(512);
        let _ = write!(buf, "SIP/2.0 {status} {reason}\r\n");
        ResponseBuilder {
            req,
            buf,
            to_tag: None,
            body: None,
            source: None,
        }
    }
    /// Add `received`/`rport` to the top Via for a request received from `source`.
    pub fn source(mut self, source: Option<SocketAddr>) -> Self {
        self.source = source;
        self
    }
    /// Put this tag into To unless the request's To already has one.
    pub fn to_tag(mut self, tag: Option<&'a str>) -> Self {
        self.to_tag = tag;
        self
    }
    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let _ = write!(self.buf, "{name}: {value}\r\n");
        self
    }
    /// Copy Record-Route from the request (for dialog-creating responses).
    pub fn copy_record_route(mut self) -> Self {
        for h in &self.req.headers.0 {
            if h.name == HeaderName::RecordRoute {
                let _ = write!(self.buf, "Record-Route: {}\r\n", h.value);
            }
        }
        self
    }
    /// Set the body.
    pub fn body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }
    /// Serialize.
    pub fn build(self) -> Bytes {
        let req = self.req;
        let mut head = String::with_capacity(self.buf.len() + 512);
        let mut extra = self.buf.split_inclusive("\r\n");
        head.push_str(extra.next().unwrap_or(""));
        let mut first_via = true;
        for h in &req.headers.0 {
            match h.name {
                HeaderName::Via => {
                    if first_via {
                        first_via = false;
                        let mut parts = split_commas(&h.value);
                        let top = parts.next().unwrap_or("");
                        head.push_str("Via: ");
                        match (self.source, Via::parse(top)) {
                            (Some(src), Some(mut v)) => {
                                v.stamp_source(src);
                                let _ = write!(head, "{v}");
                            }
                            _ => head.push_str(top),
                        }
                        for p in parts {
                            head.push_str(", ");
                            head.push_str(p);
                        }
                        head.push_str("\r\n");
                    } else {
                        let _ = write!(head, "Via: {}\r\n", h.value);
                    }
                }
                HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    let _ = write!(head, "{}: {}\r\n", h.name.as_str(), h.value);
                }
                HeaderName::To => {
                    head.push_str("To: ");
                    head.push_str(&h.value);
                    if let (None, Some(tag)) = (&req.core.to.tag, self.to_tag) {
                        head.push_str(";tag=");
                        head.push_str(tag);
                    }
                    head.push_str("\r\n");
                }
                _ => {}
            }
        }
        for l in extra {
            head.push_str(l);
        }
        finish(head, self.body)
    }
}

fn finish(mut head: String, body: Option<(&str, &[u8])>) -> Bytes {
    match body {
        Some((ct, b)) if !b.is_empty() => {
            let _ = write!(
                head,
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                b.len()
            );
            let mut v = head.into_bytes();
            v.extend_from_slice(b);
            Bytes::from(v)
        }
        _ => {
            head.push_str("Content-Length: 0\r\n\r\n");
            Bytes::from(head.into_bytes())
        }
    }
}

/// Builds a request, serialized straight to bytes. Headers are written in call order.
#[derive(Debug)]
pub struct RequestBuilder<'a> {
    buf: String,
    body: Option<(&'a str, &'a [u8])>,
}

impl<'a> RequestBuilder<'a> {
    /// Start a request line.
    pub fn new(method: &Method, uri: &str) -> Self {
        let mut buf = String::with_capacity(640);
        let _ = write!(buf, "{method} {uri} SIP/2.0\r\n");
        RequestBuilder { buf, body: None }
    }
    /// Add a header.
    pub fn header(mut self, name: &str, value: impl fmt::Display) -> Self {
        let _ = write!(self.buf, "{name}: {value}\r\n");
        self
    }
    /// Set the body.
    pub fn body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }
    /// Serialize.
    pub fn build(self) -> Bytes {
        finish(self.buf, self.body)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const INVITE: &str = "INVITE sip:ring@10.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:ring@10.0.0.1>\r\n\
From: \"Alice\" <sip:alice@10.0.0.2>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@10.0.0.2:5062>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\nEXTRA";

    #[test]
    fn parses_invite_and_truncates_body() {
        let SipMessage::Request(r) = parse(INVITE.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.request_user(), "ring");
        assert_eq!(r.branch(), Some("z9hG4bK776asdhds"));
        assert!(r.via().has_rport());
        assert_eq!(r.via().sent_by(), "10.0.0.2:5062");
        assert_eq!(r.from_tag(), Some("1928301774"));
        assert_eq!(r.from().display.as_deref(), Some("Alice"));
        assert_eq!(r.to_tag(), None);
        assert_eq!(r.cseq().seq, 314159);
        assert_eq!(r.max_forwards(), Some(70));
        assert_eq!(&r.body[..], b"v=0\n");
        assert_eq!(r.contact().unwrap().uri, "sip:alice@10.0.0.2:5062");
    }

    #[test]
    fn bad_content_length_is_answerable() {
        let m = INVITE.replace("Content-Length: 4", "Content-Length: -4");
        let e = parse(m.as_bytes()).unwrap_err();
        assert!(e.is_answerable());
        assert_eq!(e.fault(), ParseFault::InvalidContentLength);
        let m = INVITE.replace("Content-Length: 4", "Content-Length: 400");
        assert_eq!(
            parse(m.as_bytes()).unwrap_err().fault(),
            ParseFault::ContentLengthMismatch
        );
        let m = INVITE.replace("Call-ID: a84b4c76e66710\r\n", "");
        assert!(!parse(m.as_bytes()).unwrap_err().is_answerable());
        let m = INVITE.replace("Max-Forwards: 70\r\n", "Max-Forwards 70\r\n");
        assert_eq!(
            parse(m.as_bytes()).unwrap_err().fault(),
            ParseFault::BadHeaderLine
        );
    }

    #[test]
    fn non_canonical_sections_are_handed_to_rsip_canonically() {
        // Folded line, `Name :`, compact form, bare LF line ends: all legal or tolerated.
        let folded = INVITE
            .replace("Max-Forwards: 70", "Max-Forwards :\r\n 70")
            .replace("Call-ID: ", "i: ");
        let lf = INVITE.replace("\r\n", "\n");
        for m in [folded, lf] {
            let SipMessage::Request(r) = parse(m.as_bytes()).unwrap() else {
                panic!()
            };
            assert_eq!(r.max_forwards(), Some(70));
            assert_eq!(r.call_id(), "a84b4c76e66710");
            assert_eq!(&r.body[..], b"v=0\n");
        }
        // A bare LF inside the header section must not glue two headers together.
        let m = INVITE.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\nSubject: x\r\n");
        let SipMessage::Request(r) = parse(m.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.max_forwards(), Some(70));
        assert_eq!(r.header(&HeaderName::parse("Subject")), Some("x"));
    }

    #[test]
    fn unknown_methods_and_rsip_rejections() {
        let m = INVITE.replace("INVITE", "FOO");
        let SipMessage::Request(r) = parse(m.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.method, Method::Other("FOO".into()));
        // Methods are case-sensitive (RFC 3261 §7.1).
        let m = INVITE.replacen("INVITE", "invite", 1);
        assert_eq!(
            parse(m.as_bytes()).unwrap_err().fault(),
            ParseFault::CSeqMethodMismatch
        );
        // A Request-URI rsip refuses: still answerable with 400.
        let m = INVITE.replacen("sip:ring@10.0.0.1", "sip:ring@10.0.0.1:99999", 1);
        let e = parse(m.as_bytes()).unwrap_err();
        assert!(e.is_answerable(), "{e:?}");
        assert_eq!(e.fault(), ParseFault::BadStartLine);
    }

    #[test]
    fn response_status_line() {
        let SipMessage::Response(r) = parse(
            b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!((r.status, r.reason.as_str()), (486, "Busy Here"));
        assert_eq!(r.to_tag(), Some("2"));
    }

    #[test]
    fn response_builder_copies_and_stamps() {
        let SipMessage::Request(r) = parse(INVITE.as_bytes()).unwrap() else {
            panic!()
        };
        let src: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let b = ResponseBuilder::new(&r, 180)
            .source(Some(src))
            .to_tag(Some("xyz"))
            .build();
        let SipMessage::Response(resp) = parse(&b).unwrap() else {
            panic!()
        };
        assert_eq!(resp.status, 180);
        assert_eq!(resp.to_tag(), Some("xyz"));
        assert_eq!(resp.via().rport(), Some(40000));
        assert_eq!(resp.via().received(), Some("192.0.2.1"));
        assert_eq!(resp.call_id(), "a84b4c76e66710");
    }

    #[test]
    fn compact_and_uri_helpers() {
        assert_eq!(uri_user("sip:+4930;phone-context=x@h"), "+4930");
        assert_eq!(uri_user("tel:+123"), "+123");
        assert_eq!(
            uri_socket_addr("sip:a@10.1.1.1:5070;transport=udp"),
            "10.1.1.1:5070".parse().ok()
        );
        assert_eq!(HeaderName::parse("i"), HeaderName::CallId);
        assert_eq!(split_host_port("[::1]:5060"), Some(("[::1]", Some(5060))));
    }
}
