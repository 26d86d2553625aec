//! `frontdoor.toml`: the server's configuration file.
//!
//! Every field has a default, so an empty file (or none) is a working configuration for a
//! hotline on 127.0.0.1. Unknown keys are errors, so a typo never silently does nothing.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A port range is malformed.
    #[error("invalid RTP port range {0:?}: expected LO-HI with 1024 <= LO < HI <= 65535")]
    PortRange(String),
    /// `[store] region` is not one we know.
    #[error("invalid [store] region {0:?}: expected US, CA, GB or CN")]
    Region(String),
    /// `[agents]` or `[sip]` authentication settings are inconsistent.
    #[error("invalid config {path}: {message}")]
    Agents {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SIP protocol settings.
    pub sip: SipSection,
    /// Media (RTP) settings.
    pub media: MediaSection,
    /// Which peers may send calls in.
    pub trunks: TrunksSection,
    /// Call behaviour of the built-in test numbers.
    pub calls: CallsSection,
    /// Overload protection.
    pub overload: OverloadSection,
    /// The IVR: dialplans, text-to-speech.
    pub ivr: IvrSection,
    /// The customer store and call records.
    pub store: StoreSection,
    /// Agents: credentials, skills, registration limits.
    pub agents: AgentsSection,
    /// Bridging (the `bridge` test number, `frontdoor call --bridge-to`).
    pub bridge: BridgeSection,
    /// Stereo call recording.
    pub recording: RecordingSection,
    /// The ACD (queues, offer timeout, ...): `frontdoor_acd::AcdConfig`. Without it `enqueue`
    /// steps fail ("no acd").
    pub acd: Option<frontdoor_acd::AcdConfig>,
    /// The agent HTTP API.
    pub api: ApiSection,
    /// The screen-pop webhook.
    pub screenpop: ScreenPopSection,
    /// Speech recognition in calls (speech steps of the dialplans).
    pub speech: SpeechSection,
    /// Callbacks that keep their place (docs/callbacks.md).
    pub callbacks: crate::calls::callbacks::CallbacksSection,
    /// The carrier trunk callbacks are dialed through.
    pub outbound: crate::calls::callbacks::OutboundSection,
}

/// `[screenpop]`: each ACD offer is POSTed to `url`, signed with HMAC-SHA256 (`secret`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScreenPopSection {
    /// `http://host:port/path`; none: no webhook.
    pub url: Option<String>,
    /// HMAC secret (required with `url`).
    pub secret: String,
    /// Attempts in all.
    pub attempts: u32,
    /// First retry delay, milliseconds (doubles per retry).
    pub backoff_ms: u64,
    /// Per-request timeout, seconds.
    pub timeout_s: u64,
    /// Base URL of the screen pop page: agents' phones get `Call-Info: <BASE/CALL-ID>`.
    pub url_base: Option<String>,
}

impl Default for ScreenPopSection {
    fn default() -> Self {
        Self {
            url: None,
            secret: String::new(),
            attempts: 3,
            backoff_ms: 500,
            timeout_s: 5,
            url_base: None,
        }
    }
}

impl std::fmt::Debug for ScreenPopSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreenPopSection")
            .field("url", &self.url)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// `[api]`: the agent API (login/logout/pause/ready/wrap-up, agents, queues, WebSocket
/// events); started when `listen` is set.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Address to listen on (e.g. `127.0.0.1:8080`).
    pub listen: Option<std::net::SocketAddr>,
    /// Accepted API keys (`Authorization: Bearer KEY` or `X-Api-Key: KEY`).
    pub keys: Vec<String>,
}

impl std::fmt::Debug for ApiSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSection")
            .field("listen", &self.listen)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// `[speech]`: the recogniser pool of live calls (docs/speech-in-calls.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechSection {
    /// Recogniser threads (one Whisper decoder each, one shared model); default 2 (one
    /// decode per core of the 2-core box; docs/speech-in-calls.md, Latency).
    pub workers: usize,
    /// Utterances that may wait for a recogniser; one more is answered "no match" at once.
    pub queue: usize,
    /// The ggml Whisper model; default `<models>/ggml-tiny.en.bin` (`FRONTDOOR_MODELS_DIR`).
    pub model: Option<String>,
    /// Recognise the utterance so far after this much silence inside it (the result stands
    /// if the caller says nothing more before the step's end silence); 0 = off. Default 200.
    pub speculate_ms: u64,
    /// Bias the decoder with the step's wording (Whisper's initial prompt); default true.
    /// Big prompts make every decode several times slower (docs/speech-in-calls.md, Latency).
    pub prompt: bool,
    /// Decode once per recogniser thread at start, so the first caller does not pay for
    /// paging the model in; default true.
    pub warm_up: bool,
}

impl Default for SpeechSection {
    fn default() -> Self {
        Self {
            workers: 2,
            queue: 16,
            model: None,
            speculate_ms: 200,
            prompt: true,
            warm_up: true,
        }
    }
}

impl SpeechSection {
    /// The recogniser pool's settings.
    pub fn pool(&self) -> crate::speech::PoolConfig {
        crate::speech::PoolConfig {
            workers: self.workers,
            queue: self.queue,
            prompt: self.prompt,
            warm_up: self.warm_up,
        }
    }
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// RFC 3261 T1 (RTT estimate), milliseconds.
    pub t1_ms: u64,
    /// RFC 3261 T2 (maximum retransmit interval for non-INVITE requests and INVITE responses).
    pub t2_ms: u64,
    /// RFC 3261 T4 (maximum time a message stays in the network).
    pub t4_ms: u64,
    /// `User-Agent`/`Server` header value.
    pub user_agent: String,
    /// Session-Expires we ask for (RFC 4028), seconds; 0 disables session timers.
    pub session_expires: u32,
    /// Smallest Session-Expires we accept (Min-SE), seconds.
    pub min_se: u32,
    /// Largest SIP message accepted, bytes.
    pub max_message_size: usize,
    /// Requests larger than this go over TCP (RFC 3261 §18.1.1).
    pub mtu: usize,
    /// Kernel receive buffer for the UDP socket, bytes.
    pub udp_recv_buffer: usize,
    /// Digest authentication realm (REGISTER from agents).
    pub realm: String,
    /// Digest algorithms challenged with, in order of preference (`SHA-256`, `MD5`,
    /// `SHA-256-sess`, `MD5-sess`).
    pub auth_algorithms: Vec<String>,
    /// How long a nonce is accepted before `stale=true`, seconds.
    pub nonce_ttl_s: u64,
}

impl Default for SipSection {
    fn default() -> Self {
        Self {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            user_agent: concat!("Frontdoor/", env!("CARGO_PKG_VERSION")).to_owned(),
            session_expires: 1800,
            min_se: 90,
            max_message_size: 65_535,
            mtu: 1300,
            udp_recv_buffer: 8 * 1024 * 1024,
            realm: "frontdoor".to_owned(),
            auth_algorithms: vec!["SHA-256".to_owned(), "MD5".to_owned()],
            nonce_ttl_s: 300,
        }
    }
}

impl SipSection {
    /// The configured Digest algorithms.
    pub fn algorithms(&self) -> Result<Vec<frontdoor_sip::auth::Algorithm>, String> {
        if self.auth_algorithms.is_empty() {
            return Err("[sip] auth_algorithms must name at least one algorithm".to_owned());
        }
        self.auth_algorithms
            .iter()
            .map(|a| {
                frontdoor_sip::auth::Algorithm::parse(a).map_err(|_| {
                    format!(
                        "[sip] auth_algorithms: unknown algorithm {a:?} (SHA-256, MD5, SHA-256-sess, MD5-sess)"
                    )
                })
            })
            .collect()
    }
    /// T1 as a duration.
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms)
    }
    /// T2 as a duration.
    pub fn t2(&self) -> Duration {
        Duration::from_millis(self.t2_ms)
    }
    /// T4 as a duration.
    pub fn t4(&self) -> Duration {
        Duration::from_millis(self.t4_ms)
    }
}

/// `[media]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Address written into SDP `c=` and `Contact` (for NAT and real deployments). Defaults to
    /// the SIP listening address.
    pub public_address: Option<IpAddr>,
    /// RTP port ranges `LO-HI` or `LO-HI,LO-HI,...`; one even port per call leg.
    pub rtp_ports: String,
    /// Latch to the source the caller's RTP really comes from (NAT), after several
    /// consecutive in-sequence packets from it; otherwise send only to the SDP address.
    pub nat_latching: bool,
    /// Hang up (BYE) a call whose RTP stopped for this long, seconds (not while on hold).
    pub rtp_timeout_s: u64,
    /// Media worker threads; 0 = one per CPU.
    pub threads: usize,
    /// Directory of prompt audio files.
    pub prompts: String,
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            public_address: None,
            rtp_ports: "10000-59999".to_owned(),
            nat_latching: false,
            rtp_timeout_s: 30,
            threads: 0,
            prompts: "prompts".to_owned(),
        }
    }
}

/// `[trunks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrunksSection {
    /// Source networks allowed to send INVITEs (IP or CIDR). Others get 403 Forbidden.
    pub allow: Vec<IpNet>,
}

impl Default for TrunksSection {
    fn default() -> Self {
        let loopback_v4: IpNet = IpNet::V4(ipnet::Ipv4Net::new_assert([127, 0, 0, 0].into(), 8));
        let loopback_v6: IpNet = IpNet::V6(ipnet::Ipv6Net::new_assert(
            std::net::Ipv6Addr::LOCALHOST,
            128,
        ));
        Self {
            allow: vec![loopback_v4, loopback_v6],
        }
    }
}

impl TrunksSection {
    /// Whether `ip` may send calls in.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// `[calls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsSection {
    /// How long the `ring` test number rings before answering, seconds.
    pub ring_seconds: u64,
    /// Most calls at once; more get 503.
    pub max_calls: usize,
}

impl Default for CallsSection {
    fn default() -> Self {
        Self {
            ring_seconds: 10,
            max_calls: 20_000,
        }
    }
}

/// `[overload]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadSection {
    /// Datagrams read back to back without draining the socket that mark an overload.
    pub backlog_datagrams: u32,
    /// Retry-After (seconds) sent with 503 while shedding.
    pub retry_after_s: u32,
}

impl Default for OverloadSection {
    fn default() -> Self {
        Self {
            backlog_datagrams: 12_288,
            retry_after_s: 5,
        }
    }
}

/// `[ivr]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvrSection {
    /// Directory of dialplans (`*.toml`); `--dialplans` overrides it.
    pub dialplans: String,
    /// How often the dialplan files are checked for edits (hot reload), milliseconds; 0 turns
    /// polling off (SIGHUP still reloads).
    pub reload_interval_ms: u64,
    /// The espeak-ng program.
    pub espeak: String,
    /// Voice per dialplan language: `piper:NAME` is the piper voice
    /// `<models>/piper/NAME.onnx` (default `en = "piper:en_US-joe-medium"`; espeak-ng speaks
    /// for it when it cannot be loaded), anything else an espeak-ng voice (`zh = "cmn"`: no
    /// Chinese piper voice is packaged); a language not listed is passed to espeak-ng as the
    /// voice name.
    pub voices: std::collections::BTreeMap<String, String>,
    /// Speaking rate in words per minute (espeak-ng `-s`); 0 = espeak-ng's default (175).
    pub tts_speed: u32,
    /// Disk cache of rendered speech; default `<data-dir>/tts`.
    pub tts_cache: Option<String>,
    /// Load the piper voices at start, on a render thread (the first text rendered on demand
    /// then does not wait ~1-2 s for it); `false`: load on first use.
    pub piper_preload: bool,
    /// Threads rendering speech on demand (espeak-ng processes at once; piper renders one
    /// text at a time per voice).
    pub tts_threads: usize,
}

impl Default for IvrSection {
    fn default() -> Self {
        let mut voices = std::collections::BTreeMap::new();
        voices.insert("en".to_owned(), "piper:en_US-joe-medium".to_owned());
        voices.insert("zh".to_owned(), "cmn".to_owned());
        Self {
            dialplans: "dialplans".to_owned(),
            reload_interval_ms: 1000,
            espeak: "espeak-ng".to_owned(),
            voices,
            tts_speed: 0,
            tts_cache: None,
            tts_threads: 2,
            piper_preload: true,
        }
    }
}

/// `[bridge]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeSection {
    /// Where the `bridge` test number calls (a `sip:` URI with an IP literal host); overrides
    /// the dialplan route's `to` when set.
    pub target: Option<String>,
    /// How long the outgoing leg may ring (no final answer) before it is cancelled and the
    /// caller gets 480.
    pub timeout_s: u64,
}

impl Default for BridgeSection {
    fn default() -> Self {
        Self {
            target: None,
            timeout_s: 30,
        }
    }
}

impl BridgeSection {
    /// The ring timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s.max(1))
    }
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Data directory: `frontdoor.db` (SQLite), `recordings/`, `tts/`; `--data-dir`
    /// overrides it.
    pub data_dir: String,
    /// Default region for national-format caller numbers (`US`, `CA`, `GB`, `CN`).
    pub region: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            data_dir: "data".to_owned(),
            region: "US".to_owned(),
        }
    }
}

impl StoreSection {
    /// The region as the store's type.
    pub fn region(&self) -> Result<frontdoor_store::Region, ConfigError> {
        frontdoor_store::Region::from_code(&self.region)
            .ok_or_else(|| ConfigError::Region(self.region.clone()))
    }
}

/// `[agents]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsSection {
    /// Shortest registration accepted (shorter: 423 Interval Too Brief), seconds.
    pub min_expires: u32,
    /// Longest registration granted, seconds.
    pub max_expires: u32,
    /// Registration length when the phone names none, seconds.
    pub default_expires: u32,
    /// Most contacts (phones) one agent may register at once.
    pub max_contacts: usize,
    /// Codes an agent's registered phone dials to change its state (docs/acd.md).
    pub feature_codes: FeatureCodes,
    /// `[[agents.agent]]` entries.
    pub agent: Vec<AgentConfig>,
}

/// `[agents.feature_codes]`: numbers an agent's phone dials (digest-authenticated with the
/// agent's credentials) to pause, get ready, log out or log in. An empty string disables one.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureCodes {
    /// Pause (with `pause_code` as the reason code).
    pub pause: String,
    /// Ready (ends a pause or wrap-up).
    pub ready: String,
    /// Log out of the ACD.
    pub logout: String,
    /// Log in to the ACD.
    pub login: String,
    /// Reason code of a pause dialed from the phone.
    pub pause_code: u32,
}

impl Default for FeatureCodes {
    fn default() -> Self {
        Self {
            pause: "*21".into(),
            ready: "*22".into(),
            logout: "*23".into(),
            login: "*24".into(),
            pause_code: 0,
        }
    }
}

impl Default for AgentsSection {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
            feature_codes: FeatureCodes::default(),
            agent: Vec::new(),
        }
    }
}

/// `[recording]`: which calls are recorded to stereo WAV, where, and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingSection {
    /// Record calls at all.
    pub enabled: bool,
    /// Dialed numbers (Request-URI user parts) whose calls are recorded; empty = every call.
    pub numbers: Vec<String>,
    /// Directory of the recordings; default `<data-dir>/recordings/calls`.
    pub dir: Option<String>,
    /// Replace key presses (RFC 4733, in-band, SIP INFO) by silence in the recording.
    pub mask_dtmf: bool,
    /// Silence added either side of a masked key press, milliseconds.
    pub mask_guard_ms: u64,
    /// A recording stops after this long, seconds (at most 86,400).
    pub max_duration_s: u64,
}

impl Default for RecordingSection {
    fn default() -> Self {
        Self {
            enabled: false,
            numbers: Vec::new(),
            dir: None,
            mask_dtmf: true,
            mask_guard_ms: 40,
            max_duration_s: 4 * 3600,
        }
    }
}

/// `[[agents.agent]]`: one agent and the phone credentials they register with.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Stable agent id (events, the ACD).
    pub id: String,
    /// SIP user name (the digest username and the AOR user part).
    pub username: String,
    /// Password; or give `ha1_md5` / `ha1_sha256` instead.
    #[serde(default)]
    pub password: Option<String>,
    /// Hex MD5(username:realm:password).
    #[serde(default)]
    pub ha1_md5: Option<String>,
    /// Hex SHA-256(username:realm:password).
    #[serde(default)]
    pub ha1_sha256: Option<String>,
    /// Skills for routing.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Extension number, if any.
    #[serde(default)]
    pub extension: Option<String>,
    /// ACD queues (by `[[acd.queues]] name`) the agent serves.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Logged in to the ACD at start (otherwise through the agent API).
    #[serde(default)]
    pub auto_login: bool,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("skills", &self.skills)
            .field("extension", &self.extension)
            .field("queues", &self.queues)
            .field("auto_login", &self.auto_login)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Checks what serde cannot: agent credentials, unique ids, algorithms.
    fn validate(&self) -> Result<(), String> {
        let algorithms = self.sip.algorithms()?;
        if self.sip.realm.is_empty() || self.sip.realm.contains(['"', '\\', '\r', '\n']) {
            return Err(
                "[sip] realm must be non-empty, without quotes, backslashes or newlines".into(),
            );
        }
        crate::calls::callbacks::check_config(self)?;
        if self.screenpop.url.is_some() && self.screenpop.secret.is_empty() {
            return Err("[screenpop] url needs a secret".into());
        }
        if self.api.listen.is_some() && self.api.keys.iter().all(|k| k.trim().is_empty()) {
            return Err("[api] listen needs at least one non-empty key in keys".into());
        }
        let a = &self.agents;
        if a.min_expires == 0 || a.min_expires > a.max_expires {
            return Err("[agents] needs 0 < min_expires <= max_expires".into());
        }
        let mut ids = std::collections::HashSet::new();
        let mut users = std::collections::HashSet::new();
        for ag in &a.agent {
            let who = format!("[[agents.agent]] {:?}", ag.id);
            if ag.id.is_empty() || !ids.insert(ag.id.as_str()) {
                return Err(format!("{who}: id must be non-empty and unique"));
            }
            let valid_user = !ag.username.is_empty()
                && ag
                    .username
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b));
            if !valid_user {
                return Err(format!(
                    "{who}: username {:?} must be a non-empty SIP user (letters, digits, -_.!~*'()&=+$,;?/)",
                    ag.username
                ));
            }
            if !users.insert(ag.username.as_str()) {
                return Err(format!("{who}: username {:?} is used twice", ag.username));
            }
            let is_hex = |h: &Option<String>, len: usize| {
                h.as_ref()
                    .is_none_or(|h| h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit()))
            };
            if !is_hex(&ag.ha1_md5, 32) || !is_hex(&ag.ha1_sha256, 64) {
                return Err(format!(
                    "{who}: ha1_md5 must be 32 hex digits and ha1_sha256 64 hex digits"
                ));
            }
            for q in &ag.queues {
                let known = self
                    .acd
                    .as_ref()
                    .is_some_and(|acd| acd.queues.iter().any(|c| c.name == *q));
                if !known {
                    return Err(format!("{who}: queue {q:?} is not an [[acd.queues]] name"));
                }
            }
            if ag.password.is_none() {
                for alg in &algorithms {
                    let have = match alg.base() {
                        frontdoor_sip::auth::Algorithm::Sha256 => ag.ha1_sha256.is_some(),
                        _ => ag.ha1_md5.is_some(),
                    };
                    if !have {
                        return Err(format!(
                            "{who}: needs a password, or an HA1 for every algorithm in [sip] auth_algorithms (missing {alg})"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl RecordingSection {
    /// Whether a call to `number` is recorded.
    pub fn records(&self, number: &str) -> bool {
        self.enabled && (self.numbers.is_empty() || self.numbers.iter().any(|n| n == number))
    }

    /// The recorder's settings (the maximum clamped to 1 s ..= 24 h, the guard to ≤ 200 ms).
    pub fn record_config(&self) -> frontdoor_media::record::RecordConfig {
        frontdoor_media::record::RecordConfig {
            mask_dtmf: self.mask_dtmf,
            max_duration: Duration::from_secs(self.max_duration_s.clamp(1, 86_400)),
            guard: Duration::from_millis(self.mask_guard_ms.min(200)),
        }
    }
}

/// The SQLite file inside a data directory.
pub const DB_FILE: &str = "frontdoor.db";

impl Config {
    /// Reads `path`, or returns the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source: Box::new(source),
        })?;
        config.validate().map_err(|message| ConfigError::Agents {
            path: origin.to_owned(),
            message,
        })?;
        Ok(config)
    }
}

/// Parses `LO-HI[,LO-HI...]` into inclusive port ranges (several ranges let the RTP ports
/// go around the OS's ephemeral range or ports that other services use).
pub fn parse_port_ranges(s: &str) -> Result<Vec<(u16, u16)>, ConfigError> {
    s.split(',').map(parse_port_range).collect()
}

/// Parses `LO-HI` into an inclusive port range.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), ConfigError> {
    let bad = || ConfigError::PortRange(s.to_owned());
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo < 1024 || lo >= hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_config_is_the_default() {
        let c = Config::parse("", "x").unwrap();
        assert_eq!(c.sip.t1_ms, 500);
        assert!(c.trunks.allows("127.0.0.1".parse().unwrap()));
        assert!(!c.trunks.allows("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn bridge_section() {
        let c = Config::parse("", "x").unwrap();
        assert_eq!(c.bridge.target, None);
        assert_eq!(c.bridge.timeout(), Duration::from_secs(30));
        let c = Config::parse(
            "[bridge]\ntarget = \"sip:agent@127.0.0.1:5070\"\ntimeout_s = 5\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.bridge.target.as_deref(), Some("sip:agent@127.0.0.1:5070"));
        assert_eq!(c.bridge.timeout(), Duration::from_secs(5));
        assert!(Config::parse("[bridge]\nuri = \"sip:x@1.2.3.4\"\n", "x").is_err());
    }

    #[test]
    fn unknown_key_is_an_error_with_position() {
        let err = Config::parse("[sip]\nt1_msec = 3\n", "f.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("f.toml"), "{msg}");
        assert!(msg.contains("t1_msec"), "{msg}");
    }

    #[test]
    fn trunks_and_public_address() {
        let c = Config::parse(
            "[media]\npublic_address = \"203.0.113.7\"\n[trunks]\nallow = [\"198.51.100.0/24\", \"10.1.2.3/32\"]\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.media.public_address, Some("203.0.113.7".parse().unwrap()));
        assert!(c.trunks.allows("198.51.100.9".parse().unwrap()));
        assert!(c.trunks.allows("10.1.2.3".parse().unwrap()));
        assert!(!c.trunks.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn ivr_and_store_sections() {
        let c = Config::parse("", "x").unwrap();
        assert_eq!(c.ivr.voices.get("zh").map(String::as_str), Some("cmn"));
        assert_eq!(c.store.region().unwrap(), frontdoor_store::Region::Nanp);
        let c = Config::parse(
            "[ivr]\nreload_interval_ms = 0\nvoices = { en = \"en-us\" }\n[store]\nregion = \"GB\"\ndata_dir = \"/var/lib/fd\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.ivr.reload_interval_ms, 0);
        assert_eq!(c.ivr.voices.get("en").map(String::as_str), Some("en-us"));
        assert_eq!(c.store.region().unwrap(), frontdoor_store::Region::Gb);
        assert_eq!(c.store.data_dir, "/var/lib/fd");
        let bad = Config::parse("[store]\nregion = \"XX\"\n", "x").unwrap();
        assert!(bad.store.region().is_err());
    }

    #[test]
    fn agents_section() {
        let c = Config::parse(
            "[sip]\nrealm = \"acme\"\n[agents]\nmin_expires = 30\n\
             [[agents.agent]]\nid = \"a1\"\nusername = \"alice\"\npassword = \"pw\"\nskills = [\"sales\", \"en\"]\nextension = \"201\"\n\
             [[agents.agent]]\nid = \"a2\"\nusername = \"bob\"\nha1_md5 = \"0123456789abcdef0123456789abcdef\"\n\
             ha1_sha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.sip.realm, "acme");
        assert_eq!(c.agents.min_expires, 30);
        assert_eq!(c.agents.agent.len(), 2);
        assert_eq!(c.agents.agent[0].skills, vec!["sales", "en"]);
        let acd = Config::parse(
            "[acd]\noffer_timeout_s = 5.0\n[[acd.queues]]\nid = 1\nname = \"general\"\n\
             [[agents.agent]]\nid = \"a1\"\nusername = \"alice\"\npassword = \"pw\"\n\
             queues = [\"general\"]\nauto_login = true\n",
            "x",
        )
        .unwrap();
        assert_eq!(acd.acd.as_ref().unwrap().offer_timeout_s, Some(5.0));
        assert_eq!(acd.agents.agent[0].queues, vec!["general"]);
        assert!(acd.agents.agent[0].auto_login);
        assert!(
            !format!("{:?}", c.agents.agent[0]).contains("pw"),
            "no secrets in Debug"
        );
        for (bad, want) in [
            (
                "[[agents.agent]]\nid = \"a\"\nusername = \"u\"\n",
                "needs a password",
            ),
            (
                "[[agents.agent]]\nid = \"a\"\nusername = \"u\"\nha1_md5 = \"0123456789abcdef0123456789abcdef\"\n",
                "missing SHA-256",
            ),
            (
                "[[agents.agent]]\nid = \"a\"\nusername = \"u\"\nha1_md5 = \"xyz\"\npassword = \"p\"\n",
                "32 hex",
            ),
            (
                "[[agents.agent]]\nid = \"a\"\nusername = \"u\"\npassword = \"p\"\n[[agents.agent]]\nid = \"a\"\nusername = \"v\"\npassword = \"p\"\n",
                "unique",
            ),
            (
                "[[agents.agent]]\nid = \"a\"\nusername = \"u\"\npassword = \"p\"\n[[agents.agent]]\nid = \"b\"\nusername = \"u\"\npassword = \"p\"\n",
                "used twice",
            ),
            (
                "[[agents.agent]]\nid = \"a\"\nusername = \"u\"\npassword = \"p\"\nqueues = [\"sales\"]\n",
                "not an [[acd.queues]] name",
            ),
            (
                "[[agents.agent]]\nid = \"a\"\nusername = \"u@x\"\npassword = \"p\"\n",
                "SIP user",
            ),
            (
                "[sip]\nauth_algorithms = [\"SHA-512\"]\n",
                "unknown algorithm",
            ),
            ("[sip]\nauth_algorithms = []\n", "at least one"),
            ("[sip]\nrealm = \"a\\\"b\"\n", "realm"),
            ("[agents]\nmin_expires = 0\n", "min_expires"),
        ] {
            let err = Config::parse(bad, "f.toml").unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("f.toml"), "{bad}: {err}");
        }
        // MD5-only deployments may give only the MD5 HA1.
        Config::parse(
            "[sip]\nauth_algorithms = [\"MD5\"]\n[[agents.agent]]\nid = \"a\"\nusername = \"u\"\nha1_md5 = \"0123456789abcdef0123456789abcdef\"\n",
            "x",
        )
        .unwrap();
    }

    #[test]
    fn recording_section() {
        let c = Config::parse("", "x").unwrap();
        assert!(!c.recording.records("answer"));
        let c = Config::parse(
            "[recording]\nenabled = true\nnumbers = [\"answer\", \"100\"]\nmask_dtmf = false\nmax_duration_s = 999999\n",
            "x",
        )
        .unwrap();
        assert!(c.recording.records("answer") && c.recording.records("100"));
        assert!(!c.recording.records("echo"));
        let rc = c.recording.record_config();
        assert!(!rc.mask_dtmf);
        assert_eq!(rc.max_duration, Duration::from_secs(86_400));
        let c = Config::parse("[recording]\nenabled = true\n", "x").unwrap();
        assert!(c.recording.records("anything") && c.recording.mask_dtmf);
        assert!(Config::parse("[recording]\nmask = true\n", "x").is_err());
    }

    #[test]
    fn speech_section() {
        let d = Config::parse("", "x").unwrap().speech;
        assert_eq!((d.workers, d.queue, d.speculate_ms), (2, 16, 200));
        assert!(d.prompt && d.warm_up && d.model.is_none());
        let c = Config::parse(
            "[speech]\nworkers = 1\nqueue = 4\nspeculate_ms = 0\nprompt = false\nwarm_up = false\n",
            "x",
        )
        .unwrap();
        let pool = c.speech.pool();
        assert_eq!((pool.workers, pool.queue), (1, 4));
        assert!(!pool.prompt && !pool.warm_up);
        assert_eq!(c.speech.speculate_ms, 0);
        assert!(Config::parse("[speech]\nspeculate = 200\n", "x").is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("10000-59999").unwrap(), (10000, 59999));
        assert!(parse_port_range("5-10").is_err());
        assert!(parse_port_range("20000-10000").is_err());
        assert!(parse_port_range("abc").is_err());
        assert!(parse_port_range("10000-70000").is_err());
        assert_eq!(
            parse_port_ranges("44100-47999, 61000-65000").unwrap(),
            vec![(44100, 47999), (61000, 65000)]
        );
        assert_eq!(
            parse_port_ranges("10000-59999").unwrap(),
            vec![(10000, 59999)]
        );
        assert!(parse_port_ranges("44100-47999,").is_err());
        assert!(parse_port_ranges("44100-47999,5-10").is_err());
    }
}
