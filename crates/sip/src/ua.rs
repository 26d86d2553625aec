//! The transaction user core: a sans-IO [`UserAgent`] owning the transaction layer and the
//! dialogs of all calls.
//!
//! Feed it datagrams ([`UserAgent::handle_datagram`]) and timeouts
//! ([`UserAgent::handle_timeout`]); drain [`UserAgent::poll_transmit`] and
//! [`UserAgent::poll_event`]; sleep until [`UserAgent::poll_timeout`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::{self, Challenge, ClientCredentials};
use crate::dialog::{Branch, Dialog, DialogState};
use crate::framing::{DEFAULT_MAX_MESSAGE_SIZE, datagram_message};
use crate::message::{
    HeaderName, MAGIC_COOKIE, Method, ParseError, Request, RequestBuilder, Response,
    ResponseBuilder, SipMessage, Via, parse_with_limit,
};
use crate::sdp::{self, LocalMedia, NegotiatedMedia, SdpError, SdpSession};
use crate::transaction::{
    AckTemplate, InviteClient, InviteServer, NonInviteClient, NonInviteServer, TimerConfig,
    TimerKind, TxAction, TxState,
};

/// Methods we implement (Allow header).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE";
/// Allow header when REGISTER is accepted ([`UserAgent::set_accept_register`]).
pub const ALLOW_WITH_REGISTER: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REGISTER";
/// Option tags we support.
pub const SUPPORTED: &str = "timer";
const SDP: &str = "application/sdp";

/// Transport of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (unreliable: retransmission timers run).
    Udp,
    /// TCP (reliable).
    Tcp,
}

impl Transport {
    /// Whether the transport is reliable.
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
    /// Via transport token.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// User agent configuration.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// T1 (RTT estimate, default 500 ms).
    pub t1: Duration,
    /// T2 (default 4 s).
    pub t2: Duration,
    /// T4 (default 5 s).
    pub t4: Duration,
    /// Our sent-by for Via and the port for Contact.
    pub local_addr: SocketAddr,
    /// Public host written into Contact (an IP or host name; a `host:port` is used as is).
    pub contact_host: String,
    /// User-Agent / Server header value (empty: none).
    pub user_agent: String,
    /// Largest message accepted.
    pub max_message_size: usize,
    /// Requests larger than this go over TCP (RFC 3261 §18.1.1).
    pub mtu: usize,
    /// Our preferred session interval (RFC 4028), `None` = only honour the caller's.
    pub session_expires: Option<u32>,
    /// Smallest session interval we accept (Min-SE, ≥ 90).
    pub min_se: u32,
}

impl Default for UaConfig {
    fn default() -> Self {
        UaConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            local_addr: SocketAddr::from(([127, 0, 0, 1], 5060)),
            contact_host: "127.0.0.1".into(),
            user_agent: "Frontdoor".into(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            mtu: 1300,
            session_expires: None,
            min_se: 90,
        }
    }
}

/// Opaque call handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

impl fmt::Display for CallHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// A datagram (UDP) or message (TCP) to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Transport to use.
    pub transport: Transport,
    /// Peer address (for TCP: the connection's peer; open one if none exists).
    pub destination: SocketAddr,
    /// The serialized message.
    pub payload: Bytes,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// The peer sent BYE.
    RemoteBye,
    /// We hung up (BYE or CANCEL sent).
    LocalBye,
    /// The caller CANCELed.
    Cancelled,
    /// No ACK for our 2xx after 64·T1: we sent BYE.
    AckTimeout,
    /// We rejected with this status.
    Rejected(u16),
    /// Our outgoing call got this final non-2xx status.
    RemoteRejected(u16),
    /// Transaction timeout.
    Timeout,
    /// Transport failure.
    TransportError,
    /// RFC 4028 session expired (no refresh): we sent BYE.
    SessionExpired,
}

/// Events for the application.
#[derive(Debug, Clone, PartialEq)]
pub enum UaEvent {
    /// A new incoming INVITE (100 Trying already sent).
    IncomingCall {
        /// Handle.
        call: CallHandle,
        /// Call-ID.
        call_id: String,
        /// From URI.
        from_uri: String,
        /// From display name.
        from_display: Option<String>,
        /// To URI.
        to_uri: String,
        /// User part of the Request-URI.
        request_user: String,
        /// Where the INVITE came from.
        source: SocketAddr,
        /// Transport it came on.
        transport: Transport,
        /// SDP offer, `None` for a late offer.
        offer: Option<Bytes>,
        /// Identity-related headers (P-Asserted-Identity, Privacy, ...).
        headers: Vec<(String, String)>,
    },
    /// Our 2xx was ACKed: the dialog is confirmed.
    CallAnswered {
        /// Handle.
        call: CallHandle,
        /// SDP in the ACK (the answer to our offer for a late-offer call).
        ack_sdp: Option<Bytes>,
    },
    /// The call is over (exactly once per handle).
    CallEnded {
        /// Handle.
        call: CallHandle,
        /// Why.
        cause: EndCause,
    },
    /// A re-INVITE arrived (answered automatically; a `MediaUpdate` follows on success).
    Reinvite {
        /// Handle.
        call: CallHandle,
        /// Its SDP offer.
        offer: Option<Bytes>,
    },
    /// New negotiated media.
    MediaUpdate {
        /// Handle.
        call: CallHandle,
        /// Media parameters.
        media: NegotiatedMedia,
    },
    /// INFO in a dialog (already answered 200).
    Info {
        /// Handle.
        call: CallHandle,
        /// Content-Type.
        content_type: String,
        /// Body.
        body: Bytes,
    },
    /// Provisional response to our INVITE.
    OutgoingProgress {
        /// Handle.
        call: CallHandle,
        /// Status code.
        status: u16,
    },
    /// Our re-INVITE ([`UserAgent::reinvite`]) got a final non-2xx response (or timed out
    /// with 408); the session keeps its previous media.
    ReinviteFailed {
        /// Handle.
        call: CallHandle,
        /// Status code.
        status: u16,
    },
    /// 2xx to our INVITE (ACK already sent).
    OutgoingAnswered {
        /// Handle.
        call: CallHandle,
        /// SDP answer.
        answer: Option<Bytes>,
    },
    /// A REGISTER outside a dialog, when [`UserAgent::set_accept_register`] is on. Its server
    /// transaction absorbs retransmissions until the application answers with
    /// [`UserAgent::respond`] (e.g. from a [`crate::registrar::Registrar`]).
    Register {
        /// The transaction to answer.
        tx: ServerTx,
        /// The request.
        request: Box<Request>,
        /// Where it came from.
        source: SocketAddr,
        /// Transport it came on.
        transport: Transport,
    },
}

/// A server transaction the application answers ([`UaEvent::Register`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerTx(u64);

/// Errors of the UA API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UaError {
    /// No such call (or already ended).
    #[error("unknown call")]
    UnknownCall,
    /// The call is not in a state allowing this.
    #[error("invalid call state for this operation")]
    InvalidState,
    /// The offer matched nothing we support: 488 sent, call ended.
    #[error("offer not acceptable (488 sent)")]
    NotAcceptable,
    /// The offer was malformed: 400 sent, call ended.
    #[error("malformed SDP (400 sent): {0}")]
    BadSdp(SdpError),
    /// Status code outside 300..=699 for reject.
    #[error("invalid status code {0}")]
    InvalidStatus(u16),
    /// The target URI is not a SIP URI.
    #[error("invalid target URI")]
    InvalidUri,
    /// No such pending server transaction (already answered or ended).
    #[error("unknown server transaction")]
    UnknownTransaction,
    /// A display name or extra header that cannot go into a request (line breaks, a name
    /// that is not a token, a display name that is not a quoted-string).
    #[error("invalid header: {0}")]
    InvalidHeader(String),
}

/// How an outgoing INVITE presents the caller (see [`UserAgent::invite_presented`]).
#[derive(Debug, Clone, Default)]
pub struct Presentation {
    /// RFC 3261 quoted-string (with its quotes) put before the From URI.
    pub display_name: Option<String>,
    /// Extra headers (e.g. `Call-Info`), kept for a re-sent INVITE after a 401/407.
    pub headers: Vec<(String, String)>,
}

impl Presentation {
    fn check(&self) -> Result<(), UaError> {
        let no_breaks = |v: &str| !v.contains(['\r', '\n', '\0']);
        if let Some(d) = &self.display_name {
            let quoted = d.len() >= 2 && d.starts_with('"') && d.ends_with('"');
            if !quoted || !no_breaks(d) {
                return Err(UaError::InvalidHeader("display name".into()));
            }
        }
        for (name, value) in &self.headers {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
            if !token || !no_breaks(value) {
                return Err(UaError::InvalidHeader(name.clone()));
            }
        }
        Ok(())
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UaStats {
    /// Messages received (keepalives excluded).
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Unparsable messages dropped.
    pub parse_drops: u64,
    /// 400 responses sent for malformed requests.
    pub bad_requests_sent: u64,
    /// Retransmissions sent (timers and absorbed request retransmissions).
    pub retransmissions_sent: u64,
    /// Request/response retransmissions received.
    pub retransmissions_received: u64,
    /// Live transactions.
    pub active_transactions: usize,
    /// Live calls.
    pub active_calls: usize,
    /// New INVITEs refused with 503 because of shedding.
    pub shed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TxId(u64);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKey {
    Rfc3261 {
        branch: Branch,
        sent_by: String,
        method: Method,
    },
    Rfc2543 {
        call_id: String,
        from_tag: String,
        cseq: u32,
        via: String,
        method: Method,
    },
}

fn server_key(req: &Request, method: Method) -> ServerKey {
    let via = req.via();
    match via.branch() {
        Some(b) if b.starts_with(MAGIC_COOKIE) => ServerKey::Rfc3261 {
            branch: Branch(b.to_owned()),
            sent_by: via.sent_by(),
            method,
        },
        _ => ServerKey::Rfc2543 {
            call_id: req.call_id().to_owned(),
            from_tag: req.from_tag().unwrap_or("").to_owned(),
            cseq: req.cseq().seq,
            via: via.to_string(),
            method,
        },
    }
}

fn key_method(m: &Method) -> Method {
    if *m == Method::Ack {
        Method::Invite
    } else {
        m.clone()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey(Branch, Method);

#[derive(Debug)]
enum Machine {
    Ict(InviteClient),
    Nict(NonInviteClient),
    Ist(InviteServer),
    Nist(NonInviteServer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Server,
    Invite,
    Reinvite,
    Bye,
    Cancel,
    Refresh,
}

#[derive(Debug)]
enum AnyKey {
    Server(ServerKey),
    Client(ClientKey),
}

#[derive(Debug)]
struct Tx {
    key: AnyKey,
    machine: Machine,
    transport: Transport,
    dest: SocketAddr,
    call: Option<CallHandle>,
    purpose: Purpose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CallTimer {
    OkRetransmit,
    AckTimeout,
    SessionExpiry,
    SessionRefresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Tx(TxId, TimerKind),
    Call(CallHandle, CallTimer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uas,
    Uac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Incoming,
    Ringing,
    /// 2xx sent, waiting for the ACK.
    Answered,
    Confirmed,
    Calling,
    Early,
}

#[derive(Debug)]
struct OkRetx {
    bytes: Bytes,
    interval: Duration,
    next: Instant,
    give_up: Instant,
}

#[derive(Debug)]
struct SessionTimer {
    interval: u32,
    we_refresh: bool,
    deadline: Instant,
}

#[derive(Debug)]
struct UacInfo {
    invite_seq: u32,
    call_id: String,
    branch: Branch,
    via: String,
    uri: String,
    from_header: String,
    to_header: String,
    got_provisional: bool,
    cancel_pending: bool,
    ack: Option<Bytes>,
    /// What a re-sent INVITE (after a 401/407) is rebuilt from.
    from_user: String,
    max_forwards: u8,
    body: Bytes,
    /// Credentials for this call (else the UA's per-realm ones).
    credentials: Option<ClientCredentials>,
    /// Authorized INVITEs sent so far.
    auth_attempts: u8,
    /// Extra headers of the INVITE.
    extra_headers: Vec<(String, String)>,
}

/// Most INVITEs with credentials per call (stale nonces may need more than one).
const MAX_AUTH_ATTEMPTS: u8 = 3;

/// The parts an outgoing INVITE is built from.
struct InviteParts<'a> {
    uri: &'a str,
    from_user: &'a str,
    from_header: &'a str,
    to_header: &'a str,
    call_id: &'a str,
    cseq: u32,
    max_forwards: u8,
    body: &'a [u8],
    auth: Option<(&'a str, &'a str)>,
    extra: &'a [(String, String)],
}

#[derive(Debug)]
struct Call {
    role: Role,
    state: CallState,
    local_tag: String,
    dialog: Option<Dialog>,
    transport: Transport,
    peer: SocketAddr,
    /// UAS: the INVITE (initial or re-INVITE) awaiting our final response.
    invite: Option<Box<Request>>,
    invite_source: SocketAddr,
    /// Where our 2xx (and its retransmissions) go.
    resp_dest: SocketAddr,
    invite_tx: Option<TxId>,
    sdp: SdpSession,
    local: Option<LocalMedia>,
    ok: Option<OkRetx>,
    answer_in_ack: bool,
    session: Option<SessionTimer>,
    /// Session-Expires to put in our 2xx.
    session_header: Option<String>,
    require_timer: bool,
    ended: bool,
    bye_after_ack: bool,
    uac: Option<Box<UacInfo>>,
    /// Our re-INVITE in this dialog: its CSeq, the media it offered, whether a final response
    /// came, and the ACK for its 2xx (re-sent when the 2xx is retransmitted).
    reinvite_out: Option<Box<ReinviteOut>>,
}

#[derive(Debug)]
struct ReinviteOut {
    seq: u32,
    local: LocalMedia,
    done: bool,
    ack: Option<Bytes>,
}

/// The SIP user agent core.
#[derive(Debug)]
pub struct UserAgent {
    cfg: UaConfig,
    timers: TimerConfig,
    rng: u64,
    next_call: u64,
    next_tx: u64,
    txs: HashMap<TxId, Tx>,
    server_keys: HashMap<ServerKey, TxId>,
    client_keys: HashMap<ClientKey, TxId>,
    calls: HashMap<CallHandle, Call>,
    dialogs: HashMap<String, CallHandle>,
    /// UAS calls by Call-ID, for merged-request detection (RFC 3261 §8.2.2.2).
    uas_by_call_id: HashMap<String, CallHandle>,
    heap: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<UaEvent>,
    shedding: Option<u32>,
    stats: UaStats,
    scratch: Vec<TxAction>,
    options_tag: String,
    contact_hostport: String,
    warning_host: String,
    /// Credentials per realm for challenges to our requests.
    credentials: HashMap<String, ClientCredentials>,
    accept_register: bool,
    /// Requests waiting for the application's answer, with where they came from.
    pending_requests: HashMap<TxId, (Box<Request>, SocketAddr)>,
}

fn hostport(host: &str, port: u16) -> String {
    if host.parse::<SocketAddr>().is_ok() {
        return host.to_owned();
    }
    if let Ok(IpAddr::V6(v6)) = host.parse::<IpAddr>() {
        return format!("[{v6}]:{port}");
    }
    if host.starts_with('[') && host.ends_with(']') {
        return format!("{host}:{port}");
    }
    if host.contains(':') {
        return host.to_owned();
    }
    format!("{host}:{port}")
}

fn contact_string(hostport: &str, user: &str, transport: Transport) -> String {
    let user = if user.is_empty() { "frontdoor" } else { user };
    match transport {
        Transport::Udp => format!("<sip:{user}@{hostport}>"),
        Transport::Tcp => format!("<sip:{user}@{hostport};transport=tcp>"),
    }
}

fn parse_session_expires(v: &str) -> Option<(u32, Option<&str>)> {
    let mut parts = v.split(';');
    let n = parts.next()?.trim().parse().ok()?;
    let mut refresher = None;
    for p in parts {
        if let Some((k, val)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("refresher")
        {
            refresher = Some(val.trim());
        }
    }
    Some((n, refresher))
}

impl UserAgent {
    /// A new user agent; tags, branches and Call-IDs come from a generator seeded from the OS.
    pub fn new(config: UaConfig) -> Self {
        Self::with_seed(config, rand::random())
    }

    /// A new user agent with a fixed seed for tags, branches and Call-IDs (deterministic tests).
    pub fn with_seed(config: UaConfig, seed: u64) -> Self {
        let timers = TimerConfig {
            t1: config.t1,
            t2: config.t2,
            t4: config.t4,
        };
        let contact_hostport = hostport(&config.contact_host, config.local_addr.port());
        let mut ua = UserAgent {
            timers,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
            next_call: 1,
            next_tx: 1,
            txs: HashMap::new(),
            server_keys: HashMap::new(),
            client_keys: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            uas_by_call_id: HashMap::new(),
            heap: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            shedding: None,
            stats: UaStats::default(),
            scratch: Vec::with_capacity(8),
            options_tag: String::new(),
            credentials: HashMap::new(),
            accept_register: false,
            pending_requests: HashMap::new(),
            warning_host: config.contact_host.clone(),
            contact_hostport,
            cfg: config,
        };
        ua.options_tag = ua.random_token();
        ua
    }

    // ----- randomness -----

    fn next_rand(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_token(&mut self) -> String {
        let mut s = String::with_capacity(16);
        let _ = write!(s, "{:016x}", self.next_rand());
        s
    }

    fn new_branch(&mut self) -> Branch {
        let mut s = String::with_capacity(24);
        let _ = write!(s, "{MAGIC_COOKIE}{:016x}", self.next_rand());
        Branch(s)
    }

    fn via_for(&self, transport: Transport, branch: &Branch) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            transport, self.cfg.local_addr, branch
        )
    }

    fn contact_for(&self, user: &str, transport: Transport) -> String {
        contact_string(&self.contact_hostport, user, transport)
    }

    // ----- public API -----

    /// Feed one complete message (a UDP datagram or a TCP-framed message).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        data: &[u8],
    ) {
        let Some(data) = datagram_message(data) else {
            return;
        };
        self.stats.messages_in += 1;
        match parse_with_limit(data, self.cfg.max_message_size) {
            Ok(SipMessage::Request(req)) => self.handle_request(now, transport, source, req),
            Ok(SipMessage::Response(resp)) => self.handle_response(now, resp),
            Err(ParseError::Answerable { fault, request }) => {
                if request.method == Method::Ack {
                    self.stats.parse_drops += 1;
                    return;
                }
                let dest = response_dest(transport, source, request.via());
                let warning = format!("399 {} \"{}\"", self.warning_host, fault);
                let status = if fault == crate::message::ParseFault::TooLarge {
                    513
                } else {
                    400
                };
                let bytes = ResponseBuilder::new(&request, status)
                    .source(Some(source))
                    .to_tag(Some(&self.options_tag))
                    .header("Warning", &warning)
                    .build();
                self.stats.bad_requests_sent += 1;
                self.emit(transport, dest, bytes);
            }
            Err(ParseError::Unparsable(_)) => self.stats.parse_drops += 1,
        }
    }

    /// Run expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, r))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            match r {
                TimerRef::Tx(id, kind) => self.drive(now, id, true, |m, out| match m {
                    Machine::Ict(t) => t.on_timer(now, kind, at, out),
                    Machine::Nict(t) => t.on_timer(now, kind, at, out),
                    Machine::Ist(t) => t.on_timer(now, kind, at, out),
                    Machine::Nist(t) => t.on_timer(now, kind, at, out),
                }),
                TimerRef::Call(h, kind) => self.on_call_timer(now, h, kind, at),
            }
        }
    }

    /// The earliest deadline (possibly of an already cancelled timer: then
    /// [`Self::handle_timeout`] simply does nothing).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next application event.
    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> UaStats {
        let mut s = self.stats;
        s.active_transactions = self.txs.len();
        s.active_calls = self.calls.len();
        s
    }

    /// The driver could not deliver to `destination` (TCP connect/write failure, ICMP
    /// unreachable): every transaction towards it is dropped and every call with that peer ends
    /// with [`EndCause::TransportError`] (no BYE is attempted). This is a rare path and scans all
    /// transactions and calls.
    pub fn handle_transport_error(
        &mut self,
        _now: Instant,
        transport: Transport,
        destination: SocketAddr,
    ) {
        let txs: Vec<TxId> = self
            .txs
            .iter()
            .filter(|(_, t)| t.transport == transport && t.dest == destination)
            .map(|(id, _)| *id)
            .collect();
        for id in txs {
            self.remove_tx(id);
        }
        let calls: Vec<CallHandle> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.transport == transport && (c.peer == destination || c.resp_dest == destination)
            })
            .map(|(h, _)| *h)
            .collect();
        for h in calls {
            self.end_call(h, EndCause::TransportError);
        }
    }

    /// When `Some`, new INVITEs get 503 with this Retry-After (seconds) and no call is created.
    pub fn set_shedding(&mut self, retry_after: Option<u32>) {
        self.shedding = retry_after;
    }

    /// Credentials answering 401/407 challenges to our INVITEs for `realm`.
    pub fn set_credentials(&mut self, realm: &str, credentials: ClientCredentials) {
        self.credentials.insert(realm.to_owned(), credentials);
    }

    /// Credentials for one outgoing call, whatever realm challenges it (call it right after
    /// [`Self::invite`]).
    pub fn set_call_credentials(
        &mut self,
        call: CallHandle,
        credentials: ClientCredentials,
    ) -> Result<(), UaError> {
        let u = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.uac.as_mut())
            .ok_or(UaError::UnknownCall)?;
        u.credentials = Some(credentials);
        Ok(())
    }

    /// When on, REGISTER requests come out as [`UaEvent::Register`] for the application to
    /// answer; when off (the default) they get 405.
    pub fn set_accept_register(&mut self, on: bool) {
        self.accept_register = on;
    }

    /// Answers a request surfaced as an event ([`UaEvent::Register`]) with `status` and
    /// extra headers. Final responses carry a To tag.
    pub fn respond(
        &mut self,
        now: Instant,
        tx: ServerTx,
        status: u16,
        headers: &[(&str, &str)],
    ) -> Result<(), UaError> {
        if !(100..=699).contains(&status) {
            return Err(UaError::InvalidStatus(status));
        }
        let id = TxId(tx.0);
        let Some((req, source)) = self.pending_requests.remove(&id) else {
            return Err(UaError::UnknownTransaction);
        };
        let mut b = ResponseBuilder::new(&req, status).source(Some(source));
        if status >= 200 {
            b = b.to_tag(req.to_tag().or(Some(self.options_tag.as_str())));
        }
        for (n, v) in headers {
            b = b.header(n, v);
        }
        if !self.cfg.user_agent.is_empty() {
            b = b.header("Server", &self.cfg.user_agent);
        }
        let bytes = b.build();
        if status < 200 {
            // Provisional: the request stays pending.
            self.pending_requests.insert(id, (req, source));
        }
        self.send_response(now, id, status, bytes);
        Ok(())
    }

    /// Send 180 Ringing for an incoming call.
    pub fn ring(&mut self, now: Instant, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if c.role != Role::Uas || !matches!(c.state, CallState::Incoming | CallState::Ringing) {
            return Err(UaError::InvalidState);
        }
        c.state = CallState::Ringing;
        let (Some(req), Some(tx)) = (c.invite.as_deref(), c.invite_tx) else {
            return Err(UaError::InvalidState);
        };
        let contact = contact_string(&self.contact_hostport, req.request_user(), c.transport);
        let bytes = ResponseBuilder::new(req, 180)
            .source(Some(c.invite_source))
            .to_tag(Some(&c.local_tag))
            .copy_record_route()
            .header("Contact", &contact)
            .build();
        self.send_response(now, tx, 180, bytes);
        Ok(())
    }

    /// Answer an incoming call (200 OK). With an offer in the INVITE, runs offer/answer and
    /// returns the negotiated media; for a late offer sends our offer and returns `None` (the
    /// answer arrives in the ACK: `CallAnswered { ack_sdp }` + `MediaUpdate`).
    pub fn answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        local: &LocalMedia,
    ) -> Result<Option<NegotiatedMedia>, UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if c.role != Role::Uas || !matches!(c.state, CallState::Incoming | CallState::Ringing) {
            return Err(UaError::InvalidState);
        }
        let Some(req) = c.invite.take() else {
            return Err(UaError::InvalidState);
        };
        let Some(tx) = c.invite_tx else {
            return Err(UaError::InvalidState);
        };
        let (body, media) = if req.has_sdp() {
            match sdp::answer(&req.body, local, &mut c.sdp) {
                Ok((b, m)) => (b, Some(m)),
                Err(e) => {
                    let status = e.status_code();
                    let bytes = ResponseBuilder::new(&req, status)
                        .source(Some(c.invite_source))
                        .to_tag(Some(&c.local_tag))
                        .header("Warning", &format!("304 {} \"{}\"", self.warning_host, e))
                        .build();
                    self.send_response(now, tx, status, bytes);
                    self.end_call(call, EndCause::Rejected(status));
                    return Err(match e {
                        SdpError::NotAcceptable => UaError::NotAcceptable,
                        other => UaError::BadSdp(other),
                    });
                }
            }
        } else {
            c.answer_in_ack = true;
            (sdp::offer(local, &mut c.sdp), None)
        };
        c.local = Some(local.clone());
        let bytes = self.build_2xx(call, &req, &body);
        let Some(c) = self.calls.get_mut(&call) else {
            return Err(UaError::UnknownCall);
        };
        c.state = CallState::Answered;
        if let Some(d) = c.dialog.as_mut() {
            d.state = DialogState::Confirmed;
        }
        self.send_response(now, tx, 200, bytes.clone());
        self.start_ok_retransmit(now, call, bytes);
        Ok(media)
    }

    /// Reject an unanswered incoming call with a final status (300..=699).
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        retry_after: Option<u32>,
    ) -> Result<(), UaError> {
        let ra = retry_after.map(|r| r.to_string());
        let headers: Vec<(&str, &str)> = ra.iter().map(|r| ("Retry-After", r.as_str())).collect();
        self.reject_with_headers(now, call, status, &headers)
    }

    /// [`UserAgent::reject`] with extra header lines (e.g. `Proxy-Authenticate` on a 407).
    pub fn reject_with_headers(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        headers: &[(&str, &str)],
    ) -> Result<(), UaError> {
        if !(300..=699).contains(&status) {
            return Err(UaError::InvalidStatus(status));
        }
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if c.role != Role::Uas || !matches!(c.state, CallState::Incoming | CallState::Ringing) {
            return Err(UaError::InvalidState);
        }
        let (Some(req), Some(tx)) = (c.invite.take(), c.invite_tx) else {
            return Err(UaError::InvalidState);
        };
        let mut b = ResponseBuilder::new(&req, status)
            .source(Some(c.invite_source))
            .to_tag(Some(&c.local_tag));
        for (name, value) in headers {
            b = b.header(name, value);
        }
        let bytes = b.build();
        self.send_response(now, tx, status, bytes);
        self.end_call(call, EndCause::Rejected(status));
        Ok(())
    }

    /// Hang up: BYE when confirmed, CANCEL for our own early outgoing call, 480 for an
    /// unanswered incoming one. `CallEnded` is emitted immediately (LocalBye, or Rejected(480)).
    pub fn hangup(&mut self, now: Instant, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if c.ended {
            return Err(UaError::UnknownCall);
        }
        match (c.role, c.state) {
            (Role::Uas, CallState::Incoming | CallState::Ringing) => {
                return self.reject(now, call, 480, None);
            }
            (Role::Uas, CallState::Answered) => {
                // RFC 3261 §15: wait for the ACK (or its timeout) before the BYE.
                c.bye_after_ack = true;
                c.ended = true;
                self.events.push_back(UaEvent::CallEnded {
                    call,
                    cause: EndCause::LocalBye,
                });
            }
            (_, CallState::Confirmed) => {
                self.send_bye(now, call);
                self.end_call(call, EndCause::LocalBye);
            }
            (Role::Uac, CallState::Calling | CallState::Early) => {
                c.ended = true;
                self.events.push_back(UaEvent::CallEnded {
                    call,
                    cause: EndCause::LocalBye,
                });
                let send_now = c.uac.as_ref().is_some_and(|u| u.got_provisional);
                if send_now {
                    self.send_cancel(now, call);
                } else if let Some(u) = c.uac.as_mut() {
                    u.cancel_pending = true;
                }
            }
            _ => return Err(UaError::InvalidState),
        }
        Ok(())
    }

    /// Place an outgoing call (Max-Forwards 70).
    pub fn invite(
        &mut self,
        now: Instant,
        target_uri: &str,
        destination: SocketAddr,
        from_user: &str,
        local: &LocalMedia,
    ) -> Result<CallHandle, UaError> {
        self.invite_with_max_forwards(now, target_uri, destination, from_user, local, 70)
    }

    /// Like [`Self::invite`] with an explicit Max-Forwards (e.g. the inbound leg's value − 1).
    pub fn invite_with_max_forwards(
        &mut self,
        now: Instant,
        target_uri: &str,
        destination: SocketAddr,
        from_user: &str,
        local: &LocalMedia,
        max_forwards: u8,
    ) -> Result<CallHandle, UaError> {
        let plain = Presentation::default();
        self.invite_inner(
            now,
            target_uri,
            destination,
            from_user,
            local,
            max_forwards,
            plain,
        )
    }

    /// Like [`Self::invite`], with a display name in From and extra headers (an ACD offer to
    /// an agent's phone: the caller's name and a `Call-Info` link to the screen pop).
    pub fn invite_presented(
        &mut self,
        now: Instant,
        target_uri: &str,
        destination: SocketAddr,
        from_user: &str,
        local: &LocalMedia,
        presentation: Presentation,
    ) -> Result<CallHandle, UaError> {
        presentation.check()?;
        self.invite_inner(
            now,
            target_uri,
            destination,
            from_user,
            local,
            70,
            presentation,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn invite_inner(
        &mut self,
        now: Instant,
        target_uri: &str,
        destination: SocketAddr,
        from_user: &str,
        local: &LocalMedia,
        max_forwards: u8,
        presentation: Presentation,
    ) -> Result<CallHandle, UaError> {
        if !(target_uri.starts_with("sip:") || target_uri.starts_with("sips:"))
            || target_uri.contains(char::is_whitespace)
        {
            return Err(UaError::InvalidUri);
        }
        let handle = CallHandle(self.next_call);
        self.next_call += 1;
        let local_tag = self.random_token();
        let call_id = format!("{}@{}", self.random_token(), self.cfg.contact_host);
        let branch = self.new_branch();
        let mut sdp_session = SdpSession::with_id(self.next_rand() >> 1);
        let body = sdp::offer(local, &mut sdp_session);
        let from_user = if from_user.is_empty() {
            "frontdoor"
        } else {
            from_user
        };
        let display = presentation
            .display_name
            .map(|d| format!("{d} "))
            .unwrap_or_default();
        let from_header = format!(
            "{display}<sip:{}@{}>;tag={}",
            from_user, self.cfg.contact_host, local_tag
        );
        let extra_headers = presentation.headers;
        let to_header = format!("<{target_uri}>");
        let parts = InviteParts {
            uri: target_uri,
            from_user,
            from_header: &from_header,
            to_header: &to_header,
            call_id: &call_id,
            cseq: 1,
            max_forwards,
            body: &body,
            auth: None,
            extra: &extra_headers,
        };
        let (mut bytes, mut via) = self.build_invite(&parts, Transport::Udp, &branch);
        let mut transport = Transport::Udp;
        if bytes.len() > self.cfg.mtu {
            transport = Transport::Tcp;
            (bytes, via) = self.build_invite(&parts, Transport::Tcp, &branch);
        }
        let ack = AckTemplate {
            uri: target_uri.to_owned(),
            via: via.clone(),
            from: from_header.clone(),
            call_id: call_id.clone(),
            cseq: 1,
            routes: vec![],
        };
        let (id, mut out) = self.start_invite_tx(
            now,
            bytes,
            ack,
            transport,
            branch.clone(),
            destination,
            Some(handle),
            Purpose::Invite,
        );
        self.calls.insert(
            handle,
            Call {
                role: Role::Uac,
                state: CallState::Calling,
                local_tag: local_tag.clone(),
                dialog: None,
                transport,
                peer: destination,
                invite: None,
                invite_source: destination,
                resp_dest: destination,
                invite_tx: Some(id),
                sdp: sdp_session,
                local: Some(local.clone()),
                ok: None,
                answer_in_ack: false,
                session: None,
                session_header: None,
                require_timer: false,
                ended: false,
                bye_after_ack: false,
                reinvite_out: None,
                uac: Some(Box::new(UacInfo {
                    invite_seq: 1,
                    call_id,
                    branch,
                    via,
                    uri: target_uri.to_owned(),
                    from_header,
                    to_header,
                    got_provisional: false,
                    cancel_pending: false,
                    ack: None,
                    from_user: from_user.to_owned(),
                    max_forwards,
                    body,
                    credentials: None,
                    auth_attempts: 0,
                    extra_headers,
                })),
            },
        );
        self.dialogs.insert(local_tag, handle);
        self.apply_actions(now, id, false, &mut out);
        self.scratch = out;
        Ok(handle)
    }

    fn build_invite(
        &self,
        p: &InviteParts<'_>,
        transport: Transport,
        branch: &Branch,
    ) -> (Bytes, String) {
        let via = self.via_for(transport, branch);
        let contact = self.contact_for(p.from_user, transport);
        let mut b = RequestBuilder::new(&Method::Invite, p.uri)
            .header("Via", &via)
            .header("Max-Forwards", p.max_forwards)
            .header("From", p.from_header)
            .header("To", p.to_header)
            .header("Call-ID", p.call_id)
            .header("CSeq", format_args!("{} INVITE", p.cseq))
            .header("Contact", &contact)
            .header("Allow", ALLOW)
            .header("Supported", SUPPORTED);
        if let Some((name, value)) = p.auth {
            b = b.header(name, value);
        }
        for (name, value) in p.extra {
            b = b.header(name, value);
        }
        if !self.cfg.user_agent.is_empty() {
            b = b.header("User-Agent", &self.cfg.user_agent);
        }
        (b.body(SDP, p.body).build(), via)
    }

    /// A 401/407 to our INVITE: re-send it with credentials when we have some and the
    /// challenge is not a repeat. Returns whether a new INVITE went out.
    fn retry_with_auth(&mut self, now: Instant, call: CallHandle, resp: &Response) -> bool {
        let (challenge_name, cred_name) = match resp.status {
            401 => ("WWW-Authenticate", "Authorization"),
            407 => ("Proxy-Authenticate", "Proxy-Authorization"),
            _ => return false,
        };
        let Some(challenge) = Challenge::select(
            resp.headers
                .0
                .iter()
                .filter(|h| h.name.matches(challenge_name))
                .map(|h| h.value.as_str()),
        ) else {
            return false;
        };
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        let Some(u) = c.uac.as_deref() else {
            return false;
        };
        // Credentials already sent and refused (a new challenge that is not `stale`): the
        // password is wrong. Stale nonces are retried a few times.
        if c.ended
            || u.auth_attempts >= MAX_AUTH_ATTEMPTS
            || (u.auth_attempts > 0 && !challenge.stale)
        {
            return false;
        }
        let Some(creds) = u
            .credentials
            .clone()
            .or_else(|| self.credentials.get(&challenge.realm).cloned())
        else {
            return false;
        };
        let cnonce = self.random_token();
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        let Some(u) = c.uac.as_deref() else {
            return false;
        };
        let authz = auth::authorize(&challenge, &creds, "INVITE", &u.uri, &u.body, &cnonce, 1);
        let authz = authz.to_header_value();
        let cseq = u.invite_seq + 1;
        let mut transport = c.transport;
        let branch = self.new_branch();
        let Some(u) = self.calls.get(&call).and_then(|c| c.uac.as_deref()) else {
            return false;
        };
        let parts = InviteParts {
            uri: &u.uri,
            from_user: &u.from_user,
            from_header: &u.from_header,
            to_header: &u.to_header,
            call_id: &u.call_id,
            cseq,
            max_forwards: u.max_forwards,
            body: &u.body,
            auth: Some((cred_name, &authz)),
            extra: &u.extra_headers,
        };
        let (mut bytes, mut via) = self.build_invite(&parts, transport, &branch);
        if bytes.len() > self.cfg.mtu && transport == Transport::Udp {
            transport = Transport::Tcp;
            (bytes, via) = self.build_invite(&parts, transport, &branch);
        }
        let ack = AckTemplate {
            uri: u.uri.clone(),
            via: via.clone(),
            from: u.from_header.clone(),
            call_id: u.call_id.clone(),
            cseq,
            routes: vec![],
        };
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        let dest = c.peer;
        let (id, mut out) = self.start_invite_tx(
            now,
            bytes,
            ack,
            transport,
            branch.clone(),
            dest,
            Some(call),
            Purpose::Invite,
        );
        if let Some(c) = self.calls.get_mut(&call) {
            c.invite_tx = Some(id);
            c.transport = transport;
            c.state = CallState::Calling;
            if let Some(u) = c.uac.as_mut() {
                u.invite_seq = cseq;
                u.branch = branch;
                u.via = via;
                u.got_provisional = false;
                u.ack = None;
                u.auth_attempts += 1;
            }
        }
        self.apply_actions(now, id, false, &mut out);
        self.scratch = out;
        true
    }

    /// The Call-ID of a call (both directions).
    pub fn call_id(&self, call: CallHandle) -> Option<&str> {
        let c = self.calls.get(&call)?;
        if let Some(d) = &c.dialog {
            return Some(&d.id.call_id.0);
        }
        c.uac.as_deref().map(|u| u.call_id.as_str())
    }

    /// Sends a re-INVITE in an established dialog offering `local` (e.g. `direction:
    /// SendOnly` to put the peer on hold, `SendRecv` to resume). The answer comes back as
    /// [`UaEvent::MediaUpdate`]; a failure as [`UaEvent::ReinviteFailed`]. `local` is kept
    /// for answering later offers once the re-INVITE succeeds.
    ///
    /// # Errors
    ///
    /// [`UaError::UnknownCall`]; [`UaError::InvalidState`] when the dialog is not confirmed
    /// or an INVITE transaction (ours or the peer's) is still in progress.
    pub fn reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        local: &LocalMedia,
    ) -> Result<(), UaError> {
        let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
        if c.state != CallState::Confirmed
            || c.ended
            || c.ok.is_some()
            || c.dialog.is_none()
            || c.reinvite_out.as_ref().is_some_and(|r| !r.done)
        {
            return Err(UaError::InvalidState);
        }
        let mut transport = c.transport;
        let dest = c.peer;
        let user = c
            .dialog
            .as_ref()
            .map(|d| header_user(&d.local_header))
            .unwrap_or_default();
        let (mut branch, mut via) = self.new_via(transport);
        let mut contact = self.contact_for(&user, transport);
        let Some(c) = self.calls.get_mut(&call) else {
            return Err(UaError::UnknownCall);
        };
        let body = sdp::offer(local, &mut c.sdp);
        let Some(d) = c.dialog.as_mut() else {
            return Err(UaError::InvalidState);
        };
        let seq = d.next_local_seq();
        let extra = [("Allow", ALLOW), ("Supported", SUPPORTED)];
        let mut bytes = d.build_request(
            &Method::Invite,
            seq,
            &via,
            Some(&contact),
            &extra,
            Some((SDP, &body)),
        );
        if bytes.len() > self.cfg.mtu && transport == Transport::Udp {
            transport = Transport::Tcp;
            (branch, via) = self.new_via(transport);
            contact = self.contact_for(&user, transport);
            let Some(d) = self.calls.get(&call).and_then(|c| c.dialog.as_ref()) else {
                return Err(UaError::InvalidState);
            };
            bytes = d.build_request(
                &Method::Invite,
                seq,
                &via,
                Some(&contact),
                &extra,
                Some((SDP, &body)),
            );
        }
        let Some(d) = self.calls.get(&call).and_then(|c| c.dialog.as_ref()) else {
            return Err(UaError::InvalidState);
        };
        let ack = AckTemplate {
            uri: d.remote_target.clone(),
            via: via.clone(),
            from: d.local_header.clone(),
            call_id: d.id.call_id.0.clone(),
            cseq: seq,
            routes: d.route_set.clone(),
        };
        if let Some(c) = self.calls.get_mut(&call) {
            c.reinvite_out = Some(Box::new(ReinviteOut {
                seq,
                local: local.clone(),
                done: false,
                ack: None,
            }));
        }
        let (id, mut out) = self.start_invite_tx(
            now,
            bytes,
            ack,
            transport,
            branch,
            dest,
            Some(call),
            Purpose::Reinvite,
        );
        self.apply_actions(now, id, false, &mut out);
        self.scratch = out;
        Ok(())
    }

    // ----- plumbing -----

    /// A retransmitted 2xx to an INVITE (or re-INVITE) of ours: the same ACK again.
    fn resend_ack(&mut self, transport: Transport, peer: SocketAddr, ack: Bytes) {
        self.stats.retransmissions_received += 1;
        self.stats.retransmissions_sent += 1;
        self.emit(transport, peer, ack);
    }

    fn emit(&mut self, transport: Transport, destination: SocketAddr, payload: Bytes) {
        self.stats.messages_out += 1;
        self.transmits.push_back(Transmit {
            transport,
            destination,
            payload,
        });
    }

    /// Starts an INVITE client transaction (a new INVITE, one re-sent with credentials, or a
    /// re-INVITE). Returns its id and the machine's first actions: apply them with
    /// [`Self::apply_actions`] once the call's state is updated, then give the vector back
    /// to `self.scratch`.
    #[allow(clippy::too_many_arguments)]
    fn start_invite_tx(
        &mut self,
        now: Instant,
        bytes: Bytes,
        ack: AckTemplate,
        transport: Transport,
        branch: Branch,
        dest: SocketAddr,
        call: Option<CallHandle>,
        purpose: Purpose,
    ) -> (TxId, Vec<TxAction>) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let m = InviteClient::new(
            now,
            bytes,
            ack,
            transport.is_reliable(),
            self.timers,
            &mut out,
        );
        let id = self.insert_tx(
            AnyKey::Client(ClientKey(branch, Method::Invite)),
            Machine::Ict(m),
            transport,
            dest,
            call,
            purpose,
        );
        (id, out)
    }

    fn insert_tx(
        &mut self,
        key: AnyKey,
        machine: Machine,
        transport: Transport,
        dest: SocketAddr,
        call: Option<CallHandle>,
        purpose: Purpose,
    ) -> TxId {
        let id = TxId(self.next_tx);
        self.next_tx += 1;
        match &key {
            AnyKey::Server(k) => {
                self.server_keys.insert(k.clone(), id);
            }
            AnyKey::Client(k) => {
                self.client_keys.insert(k.clone(), id);
            }
        }
        self.txs.insert(
            id,
            Tx {
                key,
                machine,
                transport,
                dest,
                call,
                purpose,
            },
        );
        id
    }

    fn remove_tx(&mut self, id: TxId) {
        self.pending_requests.remove(&id);
        if let Some(tx) = self.txs.remove(&id) {
            match tx.key {
                AnyKey::Server(k) => {
                    if self.server_keys.get(&k) == Some(&id) {
                        self.server_keys.remove(&k);
                    }
                }
                AnyKey::Client(k) => {
                    if self.client_keys.get(&k) == Some(&id) {
                        self.client_keys.remove(&k);
                    }
                }
            }
        }
    }

    fn drive(
        &mut self,
        now: Instant,
        id: TxId,
        retransmit: bool,
        f: impl FnOnce(&mut Machine, &mut Vec<TxAction>),
    ) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        if let Some(tx) = self.txs.get_mut(&id) {
            f(&mut tx.machine, &mut out);
            self.apply_actions(now, id, retransmit, &mut out);
        }
        self.scratch = out;
    }

    fn apply_actions(&mut self, now: Instant, id: TxId, retransmit: bool, out: &mut Vec<TxAction>) {
        let Some(tx) = self.txs.get(&id) else { return };
        let (transport, dest, call, purpose) = (tx.transport, tx.dest, tx.call, tx.purpose);
        for a in out.drain(..) {
            match a {
                TxAction::Send(b) => {
                    if retransmit {
                        self.stats.retransmissions_sent += 1;
                    }
                    self.emit(transport, dest, b);
                }
                TxAction::Arm(kind, at) => self.heap.push(Reverse((at, TimerRef::Tx(id, kind)))),
                TxAction::Response(r) => self.on_tx_response(now, call, purpose, *r),
                TxAction::PassAck => {}
                TxAction::Timeout => self.on_tx_timeout(now, call, purpose),
                TxAction::Terminated => self.remove_tx(id),
            }
        }
    }

    fn send_response(&mut self, now: Instant, tx: TxId, status: u16, bytes: Bytes) {
        self.drive(now, tx, false, |m, out| match m {
            Machine::Ist(t) => t.send_response(now, status, bytes, out),
            Machine::Nist(t) => t.send_response(now, status, bytes, out),
            _ => {}
        });
    }

    /// A stateful response carrying `Allow` (501, 405, OPTIONS 200 in a dialog).
    fn respond_allow(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        req: &Request,
        status: u16,
    ) {
        self.respond_stateful(
            now,
            transport,
            source,
            req,
            status,
            None,
            &[("Allow", ALLOW)],
            None,
        );
    }

    /// Create a non-INVITE server transaction and answer it at once.
    #[allow(clippy::too_many_arguments)]
    fn respond_stateful(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        req: &Request,
        status: u16,
        to_tag: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) {
        let key = server_key(req, key_method(&req.method));
        let dest = response_dest(transport, source, req.via());
        let machine = if req.method == Method::Invite {
            Machine::Ist(InviteServer::new(transport.is_reliable(), self.timers))
        } else {
            Machine::Nist(NonInviteServer::new(transport.is_reliable(), self.timers))
        };
        let id = self.insert_tx(
            AnyKey::Server(key),
            machine,
            transport,
            dest,
            None,
            Purpose::Server,
        );
        // Final responses outside a dialog still carry a To tag (one fixed tag per UA: these
        // responses never create dialogs).
        let to_tag = to_tag.or(if status >= 200 {
            Some(self.options_tag.as_str())
        } else {
            None
        });
        let mut b = ResponseBuilder::new(req, status)
            .source(Some(source))
            .to_tag(to_tag);
        for (n, v) in extra {
            b = b.header(n, v);
        }
        if let Some((ct, body)) = body {
            b = b.body(ct, body);
        }
        let bytes = b.build();
        self.send_response(now, id, status, bytes);
    }

    fn end_call(&mut self, call: CallHandle, cause: EndCause) {
        if let Some(c) = self.calls.remove(&call) {
            if self.dialogs.get(&c.local_tag) == Some(&call) {
                self.dialogs.remove(&c.local_tag);
            }
            if c.role == Role::Uas
                && let Some(d) = &c.dialog
                && self.uas_by_call_id.get(&d.id.call_id.0) == Some(&call)
            {
                self.uas_by_call_id.remove(&d.id.call_id.0);
            }
            if !c.ended {
                self.events.push_back(UaEvent::CallEnded { call, cause });
            }
        }
    }

    // ----- requests -----

    fn handle_request(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        req: Request,
    ) {
        // Transaction matching (§17.2.3, with the RFC 2543 fallback).
        let key = server_key(&req, key_method(&req.method));
        if let Some(&id) = self.server_keys.get(&key) {
            if req.method == Method::Ack {
                let mut pass = false;
                self.drive(now, id, false, |m, out| {
                    if let Machine::Ist(t) = m {
                        let accepted = t.state() == TxState::Accepted;
                        t.on_ack(now, out);
                        pass = accepted;
                    }
                });
                if pass {
                    self.handle_ack(now, req);
                }
            } else {
                self.stats.retransmissions_received += 1;
                self.drive(now, id, true, |m, out| match m {
                    Machine::Ist(t) => {
                        t.on_retransmission(out);
                    }
                    Machine::Nist(t) => {
                        t.on_retransmission(out);
                    }
                    _ => {}
                });
            }
            return;
        }
        match req.method {
            Method::Ack => {
                self.handle_ack(now, req);
                return;
            }
            Method::Cancel => {
                self.handle_cancel(now, transport, source, req);
                return;
            }
            _ => {}
        }
        // RFC 3261 §8.2.2.3: any other request requiring an option tag we do not support gets
        // 420, OPTIONS and in-dialog requests included. Methods we do not implement get their
        // 501/405 first (§8.2.1).
        if ALLOW.split(", ").any(|m| m == req.method.as_str())
            && self.reject_unsupported(now, transport, source, &req)
        {
            return;
        }
        if req.method == Method::Options {
            let tag = if req.to_tag().is_none() {
                Some(self.options_tag.clone())
            } else {
                None
            };
            self.respond_stateful(
                now,
                transport,
                source,
                &req,
                200,
                tag.as_deref(),
                &[
                    ("Allow", self.allow()),
                    ("Accept", SDP),
                    ("Supported", SUPPORTED),
                ],
                None,
            );
            return;
        }
        if req.max_forwards() == Some(0) {
            self.respond_stateful(now, transport, source, &req, 483, None, &[], None);
            return;
        }
        if req.method == Method::Register && self.accept_register && req.to_tag().is_none() {
            if !self.reject_unsupported(now, transport, source, &req) {
                self.surface_register(transport, source, req);
            }
            return;
        }
        if let Some(to_tag) = req.to_tag() {
            let Some(&call) = self.dialogs.get(to_tag) else {
                self.respond_stateful(now, transport, source, &req, 481, None, &[], None);
                return;
            };
            self.handle_in_dialog(now, transport, source, call, req);
            return;
        }
        match req.method {
            Method::Invite => self.handle_new_invite(now, transport, source, req),
            Method::Other(_) => self.respond_allow(now, transport, source, &req, 501),
            Method::Bye | Method::Info | Method::Update | Method::Prack => {
                self.respond_stateful(now, transport, source, &req, 481, None, &[], None)
            }
            _ => self.respond_allow(now, transport, source, &req, 405),
        }
    }

    /// The Allow header value.
    fn allow(&self) -> &'static str {
        if self.accept_register {
            ALLOW_WITH_REGISTER
        } else {
            ALLOW
        }
    }

    /// A REGISTER for the application: a server transaction waits for [`Self::respond`].
    fn surface_register(&mut self, transport: Transport, source: SocketAddr, req: Request) {
        let key = server_key(&req, Method::Register);
        let dest = response_dest(transport, source, req.via());
        let id = self.insert_tx(
            AnyKey::Server(key),
            Machine::Nist(NonInviteServer::new(transport.is_reliable(), self.timers)),
            transport,
            dest,
            None,
            Purpose::Server,
        );
        let request = Box::new(req);
        self.pending_requests.insert(id, (request.clone(), source));
        self.events.push_back(UaEvent::Register {
            tx: ServerTx(id.0),
            request,
            source,
            transport,
        });
    }

    /// Answers 420 with Unsupported when `req` requires option tags we do not support.
    fn reject_unsupported(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        req: &Request,
    ) -> bool {
        let unsupported: Vec<&str> = req
            .require()
            .into_iter()
            .filter(|t| !t.eq_ignore_ascii_case("timer"))
            .collect();
        if unsupported.is_empty() {
            return false;
        }
        let list = unsupported.join(", ");
        self.respond_stateful(
            now,
            transport,
            source,
            req,
            420,
            None,
            &[("Unsupported", &list)],
            None,
        );
        true
    }

    fn handle_new_invite(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        req: Request,
    ) {
        // Same INVITE reaching us twice on different branches (forking upstream): 482.
        if let Some(h) = self.uas_by_call_id.get(req.call_id())
            && let Some(c) = self.calls.get(h)
            && let Some(d) = &c.dialog
            && req.from_tag() == Some(d.id.remote_tag.as_str())
            && d.remote_seq == Some(req.cseq().seq)
        {
            self.respond_stateful(now, transport, source, &req, 482, None, &[], None);
            return;
        }
        if let Some(ra) = self.shedding {
            self.stats.shed += 1;
            let ra = ra.to_string();
            self.respond_stateful(
                now,
                transport,
                source,
                &req,
                503,
                None,
                &[("Retry-After", &ra)],
                None,
            );
            return;
        }
        // RFC 4028 session timer negotiation.
        let mut session_header = None;
        let mut session_interval = None;
        let uac_supports_timer = req
            .supported()
            .iter()
            .any(|t| t.eq_ignore_ascii_case("timer"));
        if let Some(v) = req.header(&HeaderName::SessionExpires) {
            let Some((se, refresher)) = parse_session_expires(v) else {
                self.respond_stateful(now, transport, source, &req, 400, None, &[], None);
                return;
            };
            if se < self.cfg.min_se {
                let min = self.cfg.min_se.to_string();
                self.respond_stateful(
                    now,
                    transport,
                    source,
                    &req,
                    422,
                    None,
                    &[("Min-SE", &min)],
                    None,
                );
                return;
            }
            let their_min = req
                .header(&HeaderName::MinSe)
                .and_then(|v| v.split(';').next())
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(90);
            let mut interval = se;
            if let Some(ours) = self.cfg.session_expires
                && ours < se
                && ours >= their_min.max(self.cfg.min_se)
            {
                interval = ours;
            }
            let refresher = match refresher {
                Some(r) if r.eq_ignore_ascii_case("uas") => "uas",
                Some(_) => "uac",
                None if uac_supports_timer => "uac",
                None => "uas",
            };
            session_interval = Some((interval, refresher == "uas"));
            session_header = Some(format!("{interval};refresher={refresher}"));
        } else if let (Some(ours), true) = (self.cfg.session_expires, uac_supports_timer) {
            let ours = ours.max(self.cfg.min_se);
            session_interval = Some((ours, false));
            session_header = Some(format!("{ours};refresher=uac"));
        }
        let local_tag = self.random_token();
        let dialog = match Dialog::new_uas(&req, &local_tag) {
            Ok(d) => d,
            Err(e) => {
                let w = format!("399 {} \"{}\"", self.warning_host, e);
                self.stats.bad_requests_sent += 1;
                self.respond_stateful(
                    now,
                    transport,
                    source,
                    &req,
                    400,
                    None,
                    &[("Warning", &w)],
                    None,
                );
                return;
            }
        };
        let handle = CallHandle(self.next_call);
        self.next_call += 1;
        let key = server_key(&req, Method::Invite);
        let dest = response_dest(transport, source, req.via());
        let id = self.insert_tx(
            AnyKey::Server(key),
            Machine::Ist(InviteServer::new(transport.is_reliable(), self.timers)),
            transport,
            dest,
            Some(handle),
            Purpose::Server,
        );
        let trying = ResponseBuilder::new(&req, 100).source(Some(source)).build();
        self.send_response(now, id, 100, trying);

        let mut headers = Vec::new();
        for h in &req.headers.0 {
            if let HeaderName::Other(n) = &h.name {
                let keep = n.len() > 2 && n.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("P-"))
                    || [
                        "Privacy",
                        "Remote-Party-ID",
                        "Diversion",
                        "History-Info",
                        "Alert-Info",
                        // Feature codes dialed from registered phones are digest-challenged.
                        "Proxy-Authorization",
                    ]
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(n))
                    || n.len() > 2 && n.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("X-"));
                if keep {
                    headers.push((n.to_string(), h.value.clone()));
                }
            } else if h.name == HeaderName::UserAgent {
                headers.push(("User-Agent".to_owned(), h.value.clone()));
            }
        }
        let offer = if req.has_sdp() {
            Some(req.body.clone())
        } else {
            None
        };
        self.events.push_back(UaEvent::IncomingCall {
            call: handle,
            call_id: req.call_id().to_owned(),
            from_uri: req.from().uri.clone(),
            from_display: req.from().display.clone(),
            to_uri: req.to().uri.clone(),
            request_user: req.request_user().to_owned(),
            source,
            transport,
            offer,
            headers,
        });
        let sdp_id = self.next_rand() >> 1;
        self.dialogs.insert(local_tag.clone(), handle);
        self.uas_by_call_id
            .insert(dialog.id.call_id.0.clone(), handle);
        self.calls.insert(
            handle,
            Call {
                role: Role::Uas,
                state: CallState::Incoming,
                local_tag,
                dialog: Some(dialog),
                transport,
                peer: source,
                invite: Some(Box::new(req)),
                invite_source: source,
                resp_dest: dest,
                invite_tx: Some(id),
                sdp: SdpSession::with_id(sdp_id),
                local: None,
                ok: None,
                answer_in_ack: false,
                session: session_interval.map(|(interval, we_refresh)| SessionTimer {
                    interval,
                    we_refresh,
                    deadline: now,
                }),
                session_header,
                require_timer: uac_supports_timer,
                ended: false,
                bye_after_ack: false,
                uac: None,
                reinvite_out: None,
            },
        );
    }

    fn build_2xx(&mut self, call: CallHandle, req: &Request, body: &[u8]) -> Bytes {
        let Some(c) = self.calls.get(&call) else {
            return Bytes::new();
        };
        let contact = self.contact_for(req.request_user(), c.transport);
        let mut b = ResponseBuilder::new(req, 200)
            .source(Some(c.invite_source))
            .to_tag(Some(&c.local_tag))
            .copy_record_route()
            .header("Contact", &contact)
            .header("Allow", ALLOW)
            .header("Supported", SUPPORTED);
        if let Some(se) = &c.session_header {
            b = b.header("Session-Expires", se);
            if c.require_timer {
                b = b.header("Require", "timer");
            }
        }
        if !self.cfg.user_agent.is_empty() {
            b = b.header("Server", &self.cfg.user_agent);
        }
        if !body.is_empty() {
            b = b.body(SDP, body);
        }
        b.build()
    }

    fn start_ok_retransmit(&mut self, now: Instant, call: CallHandle, bytes: Bytes) {
        let t1 = self.timers.t1;
        let give_up = now + self.timers.t1x64();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.transport.is_reliable() {
            // RFC 3261 §13.3.1.4: over reliable transports the 2xx is not retransmitted, but
            // the ACK wait still times out.
            c.ok = Some(OkRetx {
                bytes,
                interval: t1,
                next: give_up,
                give_up,
            });
        } else {
            c.ok = Some(OkRetx {
                bytes,
                interval: t1,
                next: now + t1,
                give_up,
            });
            self.heap.push(Reverse((
                now + t1,
                TimerRef::Call(call, CallTimer::OkRetransmit),
            )));
        }
        self.heap.push(Reverse((
            give_up,
            TimerRef::Call(call, CallTimer::AckTimeout),
        )));
    }

    fn handle_ack(&mut self, now: Instant, req: Request) {
        let Some(tag) = req.to_tag() else { return };
        let Some(&call) = self.dialogs.get(tag) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !c.dialog.as_ref().is_some_and(|d| d.matches(&req)) || c.ok.is_none() {
            return;
        }
        c.ok = None;
        let first = c.state == CallState::Answered;
        c.state = CallState::Confirmed;
        let mut media = None;
        let mut failed = false;
        if std::mem::take(&mut c.answer_in_ack) {
            if req.has_sdp()
                && let Some(local) = &c.local
            {
                match sdp::accept_answer(&req.body, local) {
                    Ok(m) => media = Some(m),
                    Err(_) => failed = true,
                }
            } else {
                failed = true;
            }
        }
        if let Some(s) = c.session.as_mut() {
            s.deadline = session_deadline(now, s.interval, s.we_refresh);
            let kind = if s.we_refresh {
                CallTimer::SessionRefresh
            } else {
                CallTimer::SessionExpiry
            };
            let at = s.deadline;
            self.heap.push(Reverse((at, TimerRef::Call(call, kind))));
        }
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.bye_after_ack {
            self.send_bye(now, call);
            self.end_call(call, EndCause::LocalBye);
            return;
        }
        if first {
            let ack_sdp = if req.body.is_empty() {
                None
            } else {
                Some(req.body.clone())
            };
            self.events
                .push_back(UaEvent::CallAnswered { call, ack_sdp });
        }
        if let Some(media) = media {
            self.events.push_back(UaEvent::MediaUpdate { call, media });
        }
        if failed && first {
            // Late offer with no usable answer in the ACK: give up the call.
            self.send_bye(now, call);
            self.end_call(call, EndCause::Rejected(488));
        }
    }

    fn handle_cancel(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        req: Request,
    ) {
        let inv_key = server_key(&req, Method::Invite);
        let Some(&inv_id) = self.server_keys.get(&inv_key) else {
            self.respond_stateful(now, transport, source, &req, 481, None, &[], None);
            return;
        };
        let call = self.txs.get(&inv_id).and_then(|t| t.call);
        let tag = call
            .and_then(|h| self.calls.get(&h))
            .map(|c| c.local_tag.clone());
        self.respond_stateful(now, transport, source, &req, 200, tag.as_deref(), &[], None);
        let Some(call) = call else { return };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !matches!(c.state, CallState::Incoming | CallState::Ringing) {
            return;
        }
        if let Some(inv) = c.invite.take() {
            let bytes = ResponseBuilder::new(&inv, 487)
                .source(Some(c.invite_source))
                .to_tag(Some(&c.local_tag))
                .build();
            self.send_response(now, inv_id, 487, bytes);
        }
        self.end_call(call, EndCause::Cancelled);
    }

    fn handle_in_dialog(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        call: CallHandle,
        req: Request,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            self.respond_stateful(now, transport, source, &req, 481, None, &[], None);
            return;
        };
        let Some(d) = c.dialog.as_mut() else {
            self.respond_stateful(now, transport, source, &req, 481, None, &[], None);
            return;
        };
        if !d.matches(&req) {
            self.respond_stateful(now, transport, source, &req, 481, None, &[], None);
            return;
        }
        if let Err(e) = d.check_remote_cseq(req.cseq().seq) {
            let w = format!("399 {} \"{}\"", self.warning_host, e);
            self.respond_stateful(
                now,
                transport,
                source,
                &req,
                500,
                None,
                &[("Warning", &w)],
                None,
            );
            return;
        }
        match req.method {
            Method::Bye => {
                // BYE in an early dialog: the pending INVITE gets 487 (RFC 3261 §15.1.2).
                let pending = if matches!(c.state, CallState::Incoming | CallState::Ringing) {
                    c.invite.take().zip(c.invite_tx).map(|(inv, tx)| {
                        let bytes = ResponseBuilder::new(&inv, 487)
                            .source(Some(c.invite_source))
                            .to_tag(Some(&c.local_tag))
                            .build();
                        (tx, bytes)
                    })
                } else {
                    None
                };
                self.respond_stateful(now, transport, source, &req, 200, None, &[], None);
                if let Some((tx, bytes)) = pending {
                    self.send_response(now, tx, 487, bytes);
                }
                self.end_call(call, EndCause::RemoteBye);
            }
            Method::Info => {
                self.respond_stateful(now, transport, source, &req, 200, None, &[], None);
                let content_type = req.content_type().unwrap_or_default();
                self.events.push_back(UaEvent::Info {
                    call,
                    content_type,
                    body: req.body.clone(),
                });
            }
            Method::Invite => self.handle_reinvite(now, transport, source, call, req),
            Method::Update => {
                let se = self.refresh_session(now, call, &req);
                let extra: Vec<(&str, &str)> = match &se {
                    Some(v) => vec![("Session-Expires", v.as_str()), ("Require", "timer")],
                    None => vec![],
                };
                if req.has_sdp() {
                    // Offer in UPDATE: answer it like a re-INVITE offer.
                    let Some(c) = self.calls.get_mut(&call) else {
                        return;
                    };
                    let Some(local) = c.local.clone() else {
                        self.respond_stateful(now, transport, source, &req, 491, None, &[], None);
                        return;
                    };
                    match sdp::answer(&req.body, &local, &mut c.sdp) {
                        Ok((body, media)) => {
                            self.respond_stateful(
                                now,
                                transport,
                                source,
                                &req,
                                200,
                                None,
                                &extra,
                                Some((SDP, &body)),
                            );
                            self.events.push_back(UaEvent::MediaUpdate { call, media });
                        }
                        Err(e) => self.respond_stateful(
                            now,
                            transport,
                            source,
                            &req,
                            e.status_code(),
                            None,
                            &[],
                            None,
                        ),
                    }
                } else {
                    self.respond_stateful(now, transport, source, &req, 200, None, &extra, None);
                }
            }
            Method::Options => self.respond_allow(now, transport, source, &req, 200),
            Method::Other(_) => self.respond_allow(now, transport, source, &req, 501),
            _ => self.respond_allow(now, transport, source, &req, 405),
        }
    }

    /// Re-arm the session timer on a refresh; returns the Session-Expires value to echo.
    fn refresh_session(&mut self, now: Instant, call: CallHandle, req: &Request) -> Option<String> {
        let c = self.calls.get_mut(&call)?;
        let s = c.session.as_mut()?;
        if let Some((se, refresher)) = req
            .header(&HeaderName::SessionExpires)
            .and_then(parse_session_expires)
            && se >= self.cfg.min_se
        {
            s.interval = se;
            s.we_refresh = refresher.is_some_and(|r| r.eq_ignore_ascii_case("uas"));
        }
        s.deadline = session_deadline(now, s.interval, s.we_refresh);
        let kind = if s.we_refresh {
            CallTimer::SessionRefresh
        } else {
            CallTimer::SessionExpiry
        };
        let v = format!(
            "{};refresher={}",
            s.interval,
            if s.we_refresh { "uas" } else { "uac" }
        );
        let at = s.deadline;
        c.session_header = Some(v.clone());
        self.heap.push(Reverse((at, TimerRef::Call(call, kind))));
        Some(v)
    }

    fn handle_reinvite(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        call: CallHandle,
        req: Request,
    ) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.state != CallState::Confirmed
            || c.ok.is_some()
            || c.local.is_none()
            || c.reinvite_out.as_ref().is_some_and(|r| !r.done)
        {
            self.respond_stateful(now, transport, source, &req, 491, None, &[], None);
            return;
        }
        let offer = if req.has_sdp() {
            Some(req.body.clone())
        } else {
            None
        };
        self.events.push_back(UaEvent::Reinvite {
            call,
            offer: offer.clone(),
        });
        let key = server_key(&req, Method::Invite);
        let dest = response_dest(transport, source, req.via());
        let id = self.insert_tx(
            AnyKey::Server(key),
            Machine::Ist(InviteServer::new(transport.is_reliable(), self.timers)),
            transport,
            dest,
            Some(call),
            Purpose::Server,
        );
        self.refresh_session(now, call, &req);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(d) = c.dialog.as_mut() {
            d.refresh_target(req.contact().map(|n| n.uri));
        }
        let Some(local) = c.local.clone() else { return };
        let body = match &offer {
            Some(o) => match sdp::answer(o, &local, &mut c.sdp) {
                Ok((b, m)) => {
                    self.events
                        .push_back(UaEvent::MediaUpdate { call, media: m });
                    b
                }
                Err(e) => {
                    let status = e.status_code();
                    let bytes = ResponseBuilder::new(&req, status)
                        .source(Some(source))
                        .build();
                    self.send_response(now, id, status, bytes);
                    return;
                }
            },
            None => {
                c.answer_in_ack = true;
                sdp::offer(&local, &mut c.sdp)
            }
        };
        c.invite_source = source;
        c.resp_dest = dest;
        let bytes = self.build_2xx(call, &req, &body);
        self.send_response(now, id, 200, bytes.clone());
        self.start_ok_retransmit(now, call, bytes);
    }

    // ----- our requests -----

    fn new_via(&mut self, transport: Transport) -> (Branch, String) {
        let b = self.new_branch();
        let v = self.via_for(transport, &b);
        (b, v)
    }

    /// Send an in-dialog non-INVITE request through a client transaction.
    fn send_in_dialog(
        &mut self,
        now: Instant,
        call: CallHandle,
        method: Method,
        extra: &[(&str, &str)],
        purpose: Purpose,
    ) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let mut transport = c.transport;
        let dest = c.peer;
        let (mut branch, mut via) = self.new_via(transport);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(d) = c.dialog.as_mut() else { return };
        let seq = d.next_local_seq();
        let mut bytes = d.build_request(&method, seq, &via, None, extra, None);
        if bytes.len() > self.cfg.mtu && transport == Transport::Udp {
            transport = Transport::Tcp;
            (branch, via) = self.new_via(transport);
            let Some(d) = self.calls.get(&call).and_then(|c| c.dialog.as_ref()) else {
                return;
            };
            bytes = d.build_request(&method, seq, &via, None, extra, None);
        }
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let m = NonInviteClient::new(now, bytes, transport.is_reliable(), self.timers, &mut out);
        let id = self.insert_tx(
            AnyKey::Client(ClientKey(branch, method)),
            Machine::Nict(m),
            transport,
            dest,
            Some(call),
            purpose,
        );
        self.apply_actions(now, id, false, &mut out);
        self.scratch = out;
    }

    fn send_bye(&mut self, now: Instant, call: CallHandle) {
        self.send_in_dialog(now, call, Method::Bye, &[], Purpose::Bye);
    }

    fn send_cancel(&mut self, now: Instant, call: CallHandle) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(u) = c.uac.as_deref() else { return };
        let bytes = RequestBuilder::new(&Method::Cancel, &u.uri)
            .header("Via", &u.via)
            .header("Max-Forwards", 70)
            .header("From", &u.from_header)
            .header("To", &u.to_header)
            .header("Call-ID", &u.call_id)
            .header("CSeq", format_args!("{} CANCEL", u.invite_seq))
            .build();
        let (transport, dest, branch) = (c.transport, c.peer, u.branch.clone());
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let m = NonInviteClient::new(now, bytes, transport.is_reliable(), self.timers, &mut out);
        let id = self.insert_tx(
            AnyKey::Client(ClientKey(branch, Method::Cancel)),
            Machine::Nict(m),
            transport,
            dest,
            Some(call),
            Purpose::Cancel,
        );
        self.apply_actions(now, id, false, &mut out);
        self.scratch = out;
    }

    // ----- responses -----

    fn handle_response(&mut self, now: Instant, resp: Response) {
        let Some(branch) = resp.branch() else {
            self.stats.parse_drops += 1;
            return;
        };
        let key = ClientKey(Branch(branch.to_owned()), resp.cseq().method.clone());
        let Some(&id) = self.client_keys.get(&key) else {
            // Stray response (e.g. a 2xx retransmission after the transaction ended): drop.
            return;
        };
        self.drive(now, id, false, |m, out| match m {
            Machine::Ict(t) => t.on_response(now, resp, out),
            Machine::Nict(t) => t.on_response(now, resp, out),
            _ => {}
        });
    }

    fn on_tx_response(
        &mut self,
        now: Instant,
        call: Option<CallHandle>,
        purpose: Purpose,
        resp: Response,
    ) {
        let Some(call) = call else { return };
        match purpose {
            Purpose::Invite => self.on_invite_response(now, call, resp),
            Purpose::Reinvite => self.on_reinvite_response(call, resp),
            Purpose::Refresh if resp.status >= 300 && self.calls.contains_key(&call) => {
                self.send_bye(now, call);
                self.end_call(call, EndCause::SessionExpired);
            }
            _ => {}
        }
    }

    fn on_invite_response(&mut self, now: Instant, call: CallHandle, resp: Response) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(u) = c.uac.as_mut() else { return };
        let status = resp.status;
        if status < 200 {
            let first = !u.got_provisional;
            u.got_provisional = true;
            if c.state == CallState::Calling {
                c.state = CallState::Early;
            }
            if u.cancel_pending && first {
                u.cancel_pending = false;
                self.send_cancel(now, call);
                return;
            }
            if !c.ended {
                self.events
                    .push_back(UaEvent::OutgoingProgress { call, status });
            }
            return;
        }
        if status >= 300 {
            if c.ended {
                self.end_call(call, EndCause::LocalBye);
            } else if (status == 401 || status == 407) && self.retry_with_auth(now, call, &resp) {
                // Re-sent with credentials (the transaction ACKed the challenge).
            } else {
                self.end_call(call, EndCause::RemoteRejected(status));
            }
            return;
        }
        // 2xx: first one creates the dialog; retransmissions get the same ACK again.
        if let Some(ack) = &u.ack {
            let (t, p, a) = (c.transport, c.peer, ack.clone());
            self.resend_ack(t, p, a);
            return;
        }
        let dialog = match Dialog::new_uac(&u.from_header, &c.local_tag, u.invite_seq, &resp) {
            Ok(d) => d,
            Err(_) => {
                // No Contact / tag: cannot build a dialog; treat as failure.
                self.end_call(call, EndCause::RemoteRejected(status));
                return;
            }
        };
        let transport = c.transport;
        let seq = u.invite_seq;
        c.dialog = Some(dialog);
        c.state = CallState::Confirmed;
        let (_, via) = self.new_via(transport);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(d) = c.dialog.as_ref() else { return };
        let ack = d.build_ack(seq, &via, None);
        if let Some(u) = c.uac.as_mut() {
            u.ack = Some(ack.clone());
        }
        let (t, p, ended) = (c.transport, c.peer, c.ended);
        let answer = if resp.body.is_empty() {
            None
        } else {
            Some(resp.body.clone())
        };
        let media = match (&answer, c.local.as_ref()) {
            (Some(a), Some(l)) => sdp::accept_answer(a, l).ok(),
            _ => None,
        };
        self.emit(t, p, ack);
        if ended {
            self.send_bye(now, call);
            self.end_call(call, EndCause::LocalBye);
            return;
        }
        self.events
            .push_back(UaEvent::OutgoingAnswered { call, answer });
        if let Some(media) = media {
            self.events.push_back(UaEvent::MediaUpdate { call, media });
        }
    }

    /// A response to our re-INVITE: 2xx → ACK (again for retransmissions) and the new media;
    /// otherwise [`UaEvent::ReinviteFailed`].
    fn on_reinvite_response(&mut self, call: CallHandle, resp: Response) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(r) = c.reinvite_out.as_mut() else {
            return;
        };
        if resp.cseq().seq != r.seq || resp.status < 200 {
            return;
        }
        if resp.status >= 300 {
            if !r.done {
                r.done = true;
                self.events.push_back(UaEvent::ReinviteFailed {
                    call,
                    status: resp.status,
                });
            }
            return;
        }
        if let Some(ack) = &r.ack {
            let (t, p, a) = (c.transport, c.peer, ack.clone());
            self.resend_ack(t, p, a);
            return;
        }
        let seq = r.seq;
        let transport = c.transport;
        let b = self.new_branch();
        let via = self.via_for(transport, &b);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(d) = c.dialog.as_mut() {
            d.refresh_target(resp.contact().map(|n| n.uri));
        }
        let Some(ack) = c.dialog.as_ref().map(|d| d.build_ack(seq, &via, None)) else {
            return;
        };
        let Some(r) = c.reinvite_out.as_mut() else {
            return;
        };
        r.done = true;
        r.ack = Some(ack.clone());
        let media = sdp::accept_answer(&resp.body, &r.local);
        let (t, p) = (c.transport, c.peer);
        self.emit(t, p, ack);
        match media {
            Ok(media) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.local = c.reinvite_out.as_ref().map(|r| r.local.clone());
                }
                self.events.push_back(UaEvent::MediaUpdate { call, media });
            }
            Err(_) => self
                .events
                .push_back(UaEvent::ReinviteFailed { call, status: 488 }),
        }
    }

    fn on_tx_timeout(&mut self, now: Instant, call: Option<CallHandle>, purpose: Purpose) {
        let Some(call) = call else { return };
        match purpose {
            Purpose::Invite => self.end_call(call, EndCause::Timeout),
            // RFC 3261 §14.1: a re-INVITE that times out ends the dialog.
            Purpose::Reinvite if self.calls.contains_key(&call) => {
                self.send_bye(now, call);
                self.end_call(call, EndCause::Timeout);
            }
            Purpose::Refresh if self.calls.contains_key(&call) => {
                self.send_bye(now, call);
                self.end_call(call, EndCause::SessionExpired);
            }
            _ => {}
        }
    }

    // ----- call timers -----

    fn on_call_timer(&mut self, now: Instant, call: CallHandle, kind: CallTimer, at: Instant) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match kind {
            CallTimer::OkRetransmit => {
                let t2 = self.timers.t2;
                let Some(ok) = c.ok.as_mut() else { return };
                if ok.next != at {
                    return;
                }
                ok.interval = (ok.interval * 2).min(t2);
                ok.next = now + ok.interval;
                let next = ok.next;
                let bytes = ok.bytes.clone();
                let (t, p) = (c.transport, c.resp_dest);
                if next < ok.give_up {
                    self.heap.push(Reverse((
                        next,
                        TimerRef::Call(call, CallTimer::OkRetransmit),
                    )));
                }
                self.stats.retransmissions_sent += 1;
                self.emit(t, p, bytes);
            }
            CallTimer::AckTimeout => {
                if c.ok.as_ref().is_none_or(|ok| ok.give_up != at) {
                    return;
                }
                c.ok = None;
                c.state = CallState::Confirmed;
                self.send_bye(now, call);
                self.end_call(call, EndCause::AckTimeout);
            }
            CallTimer::SessionExpiry => {
                if c.session
                    .as_ref()
                    .is_none_or(|s| s.deadline != at || s.we_refresh)
                {
                    return;
                }
                self.send_bye(now, call);
                self.end_call(call, EndCause::SessionExpired);
            }
            CallTimer::SessionRefresh => {
                let Some(s) = c.session.as_mut() else { return };
                if s.deadline != at || !s.we_refresh {
                    return;
                }
                // Refresh with an UPDATE; the next refresh is armed when it succeeds... or, to keep
                // it simple, right away (a failure ends the call).
                s.deadline = session_deadline(now, s.interval, true);
                let next = s.deadline;
                let se = format!("{};refresher=uas", s.interval);
                self.heap.push(Reverse((
                    next,
                    TimerRef::Call(call, CallTimer::SessionRefresh),
                )));
                self.send_in_dialog(
                    now,
                    call,
                    Method::Update,
                    &[("Session-Expires", &se), ("Supported", SUPPORTED)],
                    Purpose::Refresh,
                );
            }
        }
    }
}

/// The user part of a From/To header value (`"x" <sip:user@host>;tag=t` → `user`).
fn header_user(header: &str) -> String {
    let uri = match (header.find('<'), header.find('>')) {
        (Some(a), Some(b)) if a < b => header.get(a + 1..b).unwrap_or_default(),
        _ => header.split(';').next().unwrap_or_default(),
    };
    crate::message::uri_user(uri).to_owned()
}

/// When a session expires for the side not refreshing (RFC 4028 §10), or when the refresher
/// should refresh (half the interval).
fn session_deadline(now: Instant, interval: u32, we_refresh: bool) -> Instant {
    let secs = if we_refresh {
        interval / 2
    } else {
        interval.saturating_sub((interval / 3).min(32))
    };
    now + Duration::from_secs(u64::from(secs.max(1)))
}

/// Where responses to a request go (RFC 3261 §18.2.2 + RFC 3581).
fn response_dest(transport: Transport, source: SocketAddr, via: &Via) -> SocketAddr {
    match transport {
        Transport::Tcp => source,
        Transport::Udp => {
            if via.has_rport() {
                source
            } else {
                via.sent_by_addr().unwrap_or(source)
            }
        }
    }
}
