//! Screen pop: the context of a call offered to an agent, delivered as a signed HTTP webhook
//! (and, by the caller of this module, as a WebSocket event and SIP display name/`Call-Info`).
//!
//! Signing follows the scheme webhook receivers know from Stripe and Slack: the sender puts
//! the Unix time in `X-Frontdoor-Timestamp` and `v1=<hex HMAC-SHA256(secret, "{ts}.{body}")>`
//! in `X-Frontdoor-Signature`; a receiver recomputes it over the raw body, compares in
//! constant time and rejects timestamps too far from its clock (replays).
//!
//! Delivery never blocks a call: [`Webhook::send`] puts the body into a bounded queue and
//! returns; one tokio task posts it, retrying with exponential backoff on connection errors,
//! timeouts, 408, 429 and 5xx, giving up on other 4xx. Outcomes come back through a
//! callback so the caller can put them on the event stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;

/// Header carrying the Unix time (seconds) the body was signed at.
pub const TIMESTAMP_HEADER: &str = "x-frontdoor-timestamp";
/// Header carrying `v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-frontdoor-signature";

/// What the agent sees when a call is offered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ScreenPop {
    /// SIP Call-ID of the caller's leg.
    pub call_id: String,
    /// Agent the call is offered to.
    pub agent: String,
    /// Queue it waited in.
    pub queue: String,
    /// Caller's number (E.164 when known).
    pub caller_number: Option<String>,
    /// Caller's display name from SIP, when sent.
    pub caller_display: Option<String>,
    /// The customer record, when the caller was recognised.
    pub customer: Option<CustomerView>,
    /// Returning-caller history: calls from this number before this one.
    pub previous_calls: u64,
    /// When the last of those started (RFC 3339), when any.
    pub last_call: Option<String>,
    /// Language the IVR spoke last.
    pub language: Option<String>,
    /// IVR steps the caller went through, in order.
    pub ivr_path: Vec<String>,
    /// Digits keyed in the IVR, per step (`[redacted]` for the dialplan's `sensitive` steps,
    /// as in the call record).
    pub digits: Vec<PopDigits>,
    /// Speech transcript(s) of the IVR's speech turns, joined with ` | ` (digit strings
    /// redacted as the IVR redacts them), when there was speech.
    pub transcript: Option<String>,
    /// Seconds waited in queue.
    pub waited_s: u64,
    /// Whether this is a callback the agent is about to make.
    pub callback: bool,
}

/// Digits one IVR step collected.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PopDigits {
    /// Step name.
    pub step: String,
    /// The keys, or `[redacted]`.
    pub digits: String,
    /// The step is `sensitive = true`.
    pub sensitive: bool,
}

/// The recognised customer, as shown to agents.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CustomerView {
    /// Phone number (the store's key, E.164).
    pub number: String,
    /// Name to greet with.
    pub name: String,
    /// VIP tier from the customer store (free text, e.g. `gold`), when set.
    pub tier: Option<String>,
    /// VIP customer.
    pub vip: bool,
    /// Preferred language, when set.
    pub language: Option<String>,
}

/// Fills in what the IVR learnt: the customer record and returning-caller history from the
/// store's lookup, the IVR path, the digits per step (already `[redacted]` for sensitive
/// steps in the summary) and the speech transcripts (digit strings already redacted).
pub fn add_ivr_context(
    pop: &mut ScreenPop,
    profile: &frontdoor_store::CallerProfile,
    summary: &frontdoor_ivr::CallSummary,
) {
    if let Some(n) = profile.identity.number() {
        pop.caller_number = Some(n.as_str().to_owned());
    }
    pop.customer = profile.customer.as_ref().map(|c| CustomerView {
        number: c.number.as_str().to_owned(),
        name: c.name.clone(),
        tier: c.tier.clone(),
        vip: c.vip,
        language: c.language.clone(),
    });
    pop.previous_calls = profile.previous_calls;
    pop.last_call = profile.last_call.map(|t| t.to_rfc3339());
    pop.language = Some(summary.language.clone()).filter(|l| !l.is_empty());
    pop.ivr_path = summary.path.clone();
    pop.digits = summary
        .digits
        .iter()
        .map(|d| PopDigits {
            step: d.step.clone(),
            digits: if d.sensitive {
                frontdoor_ivr::REDACTED.to_owned()
            } else {
                d.digits.clone()
            },
            sensitive: d.sensitive,
        })
        .collect();
    let turns: Vec<&str> = summary
        .speech
        .iter()
        .map(|t| t.transcript.trim())
        .filter(|t| !t.is_empty())
        .collect();
    pop.transcript = Some(turns.join(" | ")).filter(|t| !t.is_empty());
}

/// Header on the INVITE to the agent's phone with the pop's short facts for desk phones that
/// show custom headers: `tier=gold;vip=1;calls=3;waited=12` (tokens only; see [`pop_header`]).
pub const POP_HEADER: &str = "X-Frontdoor-Pop";

/// What the agent's phone shows as the caller: the customer's name with its tier for VIPs
/// (`Alice Chen [gold]`, `Victor Li [VIP]`), else the caller's number. Escaped and capped by
/// [`sip_display_name`].
pub fn desk_name(pop: &ScreenPop) -> String {
    match &pop.customer {
        Some(c) if !c.name.trim().is_empty() => match (&c.tier, c.vip) {
            (Some(t), _) if !t.trim().is_empty() => format!("{} [{}]", c.name, t.trim()),
            (_, true) => format!("{} [VIP]", c.name),
            _ => c.name.clone(),
        },
        _ => pop.caller_number.clone().unwrap_or_default(),
    }
}

/// The [`POP_HEADER`] value: `tier=T;vip=0|1;calls=N;waited=S` (tier only when known, cut to
/// 32 letters, digits, `-` or `_`), safe in any SIP header.
pub fn pop_header(pop: &ScreenPop) -> String {
    let mut v = String::new();
    if let Some(t) = pop.customer.as_ref().and_then(|c| c.tier.as_deref()) {
        let t: String = t
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .take(32)
            .collect();
        if !t.is_empty() {
            v.push_str(&format!("tier={t};"));
        }
    }
    let vip = pop.customer.as_ref().is_some_and(|c| c.vip);
    v.push_str(&format!(
        "vip={};calls={};waited={}",
        u8::from(vip),
        pop.previous_calls,
        pop.waited_s
    ));
    v
}

/// `v1=<hex>` over `"{timestamp}.{body}"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("v1={}", hex(&mac(secret, timestamp, body)))
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for HMAC.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> ! {
    // `InvalidLength` is only returned by MACs with fixed key sizes, never by HMAC.
    panic!("HMAC rejected a key length; hmac's API contract changed")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Why a received webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The timestamp header is not an integer.
    #[error("timestamp header is not a Unix time")]
    BadTimestamp,
    /// Signed too long ago or in the future.
    #[error("timestamp {0} s away from now, outside the tolerance")]
    Stale(i64),
    /// The signature header is not `v1=<64 hex digits>`.
    #[error("signature header is not v1=<hex>")]
    BadSignatureFormat,
    /// The signature does not match the body.
    #[error("signature does not match")]
    Mismatch,
}

/// What a receiver does: check the headers against the raw body.
pub fn verify(
    secret: &[u8],
    timestamp_header: &str,
    body: &[u8],
    signature_header: &str,
    now_unix: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now_unix.saturating_sub(ts);
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(VerifyError::Stale(skew));
    }
    let given = signature_header
        .split(',')
        .filter_map(|p| p.trim().strip_prefix("v1="))
        .filter_map(unhex)
        .filter(|d| d.len() == 32)
        .collect::<Vec<_>>();
    if given.is_empty() {
        return Err(VerifyError::BadSignatureFormat);
    }
    let want = mac(secret, ts, body);
    // Constant time over the digest bytes.
    let ok = given.iter().any(|d| {
        d.iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// A SIP display name (RFC 3261 quoted-string) for a desk phone: control characters dropped,
/// `"` and `\` escaped, at most `max_chars` characters (cut on a character boundary, with
/// `…` when cut). Empty input gives `None`.
pub fn sip_display_name(name: &str, max_chars: usize) -> Option<String> {
    let clean: String = name
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.is_empty() || max_chars == 0 {
        return None;
    }
    let count = clean.chars().count();
    let body: String = if count > max_chars {
        let mut s: String = clean.chars().take(max_chars.saturating_sub(1)).collect();
        s.push('…');
        s
    } else {
        clean
    };
    let mut out = String::with_capacity(body.len() + 2);
    out.push('"');
    for c in body.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

/// A `Call-Info` header value pointing the phone at the screen pop page:
/// `<BASE/CALL-ID>;purpose=info`, the Call-ID percent-encoded. `None` when the base URL is not
/// http(s) or contains characters that would break the header.
pub fn call_info(base_url: &str, call_id: &str) -> Option<String> {
    let base = base_url.trim_end_matches('/');
    let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
    let clean = base
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b',' | b';'));
    if !scheme_ok || !clean {
        return None;
    }
    let mut enc = String::with_capacity(call_id.len() * 3);
    for b in call_id.bytes().take(256) {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    Some(format!("<{base}/{enc}>;purpose=info"))
}

/// Webhook settings (`[screenpop]` in the config).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://host:port/path` (plain HTTP; put a TLS-terminating proxy in front for HTTPS).
    pub url: String,
    /// HMAC secret.
    pub secret: Arc<[u8]>,
    /// Attempts in all (first try included).
    pub attempts: u32,
    /// Delay before the first retry; doubles per retry, capped at 30 s.
    pub backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Bodies waiting to be delivered; more are dropped (and counted).
    pub queue: usize,
}

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver answered 2xx.
    Delivered {
        /// Call-ID of the pop.
        call_id: String,
        /// Attempts used.
        attempts: u32,
        /// Final status.
        status: u16,
    },
    /// Given up.
    Failed {
        /// Call-ID of the pop.
        call_id: String,
        /// Attempts used.
        attempts: u32,
        /// The last error.
        error: String,
    },
}

struct Job {
    call_id: String,
    body: Vec<u8>,
}

/// The sender side: cheap to clone into the SIP task.
#[derive(Debug, Clone)]
pub struct Webhook {
    tx: mpsc::Sender<Job>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("call_id", &self.call_id)
            .finish()
    }
}

impl Webhook {
    /// Starts the delivery task on the current tokio runtime; `on_done` hears every outcome.
    pub fn start(
        cfg: WebhookConfig,
        on_done: impl Fn(Delivery) + Send + 'static,
    ) -> Result<Self, String> {
        let target = HttpTarget::parse(&cfg.url)?;
        let (tx, mut rx) = mpsc::channel::<Job>(cfg.queue.max(1));
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let outcome = deliver(&cfg, &target, &job).await;
                on_done(outcome);
            }
        });
        Ok(Webhook {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues a pop; `false` (and counted) when the queue is full. Never waits.
    pub fn send(&self, pop: &ScreenPop) -> bool {
        let body = match serde_json::to_vec(pop) {
            Ok(b) => b,
            Err(_) => return false,
        };
        let job = Job {
            call_id: pop.call_id.clone(),
            body,
        };
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Pops dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A parsed `http://host:port/path`.
#[derive(Debug, Clone)]
struct HttpTarget {
    authority: String,
    path: String,
}

impl HttpTarget {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("screen pop url {url:?}: only http:// is supported (use a TLS proxy)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty()
            || !authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            || !path.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!("screen pop url {url:?} is not a valid http URL"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(HttpTarget {
            authority,
            path: path.to_string(),
        })
    }
}

async fn deliver(cfg: &WebhookConfig, target: &HttpTarget, job: &Job) -> Delivery {
    let mut delay = cfg.backoff;
    let mut last = String::new();
    let attempts = cfg.attempts.max(1);
    for attempt in 1..=attempts {
        let ts = chrono::Utc::now().timestamp();
        let sig = signature(&cfg.secret, ts, &job.body);
        match tokio::time::timeout(cfg.timeout, post(target, ts, &sig, &job.body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                return Delivery::Delivered {
                    call_id: job.call_id.clone(),
                    attempts: attempt,
                    status,
                };
            }
            Ok(Ok(status)) => {
                last = format!("HTTP {status}");
                let retry = status == 408 || status == 429 || status >= 500;
                if !retry {
                    return Delivery::Failed {
                        call_id: job.call_id.clone(),
                        attempts: attempt,
                        error: last,
                    };
                }
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {:?}", cfg.timeout),
        }
        if attempt < attempts {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
    Delivery::Failed {
        call_id: job.call_id.clone(),
        attempts,
        error: last,
    }
}

/// One HTTP/1.1 POST on a fresh connection; returns the status code.
async fn post(target: &HttpTarget, ts: i64, sig: &str, body: &[u8]) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("connect {}: {e}", target.authority))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: frontdoor/{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{TIMESTAMP_HEADER}: {ts}\r\n{SIGNATURE_HEADER}: {sig}\r\nConnection: close\r\n\r\n",
        target.path,
        target.authority,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    stream
        .write_all(body)
        .await
        .map_err(|e| format!("send: {e}"))?;
    // The status line is all we need; read until it is complete (bounded).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "status line is not text".to_string())?;
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|s| s.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(format!("bad HTTP status line {line:?}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_ivr_context_fills_the_pop_with_redacted_digits_and_transcripts() {
        use frontdoor_ivr::{CallSummary, CollectedDigits, SpeechDecision, SpeechTurnRecord};
        use frontdoor_store::{CallerIdentity, CallerProfile, Customer, E164};
        let number = E164::try_from("+14155550123".to_owned()).unwrap();
        let profile = CallerProfile {
            identity: CallerIdentity::Number(number.clone()),
            customer: Some(Customer {
                number,
                name: "Alice \"A\" Chen".into(),
                tier: Some("gold; vip=1".into()),
                vip: true,
                language: Some("zh".into()),
                notes: "private".into(),
            }),
            previous_calls: 3,
            last_call: chrono::DateTime::from_timestamp(1_700_000_000, 0),
        };
        let turn = |t: &str| SpeechTurnRecord {
            step: "speech_main".into(),
            attempt: 1,
            transcript: t.into(),
            meaning: None,
            confidence: 0.9,
            decision: SpeechDecision::Accepted,
        };
        let summary = CallSummary {
            call_id: "c".into(),
            dialplan: "d".into(),
            flow: "f".into(),
            path: vec!["answer".into(), "pin".into(), "q".into()],
            digits: vec![
                CollectedDigits {
                    step: "menu".into(),
                    digits: "1".into(),
                    sensitive: false,
                },
                // A sensitive step's digits are never shown, whatever the summary holds.
                CollectedDigits {
                    step: "pin".into(),
                    digits: "4321".into(),
                    sensitive: true,
                },
            ],
            speech: vec![turn("my card [digits] was stolen"), turn("  "), turn("yes")],
            outcome: None,
            language: "zh".into(),
        };
        let mut pop = ScreenPop {
            caller_number: Some("raw-user".into()),
            waited_s: 7,
            ..ScreenPop::default()
        };
        add_ivr_context(&mut pop, &profile, &summary);
        assert_eq!(pop.caller_number.as_deref(), Some("+14155550123"));
        let c = pop.customer.as_ref().unwrap();
        assert_eq!((c.name.as_str(), c.vip), ("Alice \"A\" Chen", true));
        assert_eq!(pop.previous_calls, 3);
        assert_eq!(pop.last_call.as_deref(), Some("2023-11-14T22:13:20+00:00"));
        assert_eq!(pop.language.as_deref(), Some("zh"));
        assert_eq!(pop.digits[1].digits, frontdoor_ivr::REDACTED);
        assert_eq!(pop.digits[0].digits, "1");
        assert_eq!(
            pop.transcript.as_deref(),
            Some("my card [digits] was stolen | yes")
        );
        let json = serde_json::to_string(&pop).unwrap();
        assert!(
            !json.contains("4321") && !json.contains("private"),
            "{json}"
        );
        // The desk phone: name with tier, and the header's tokens only.
        assert_eq!(desk_name(&pop), "Alice \"A\" Chen [gold; vip=1]");
        assert_eq!(
            sip_display_name(&desk_name(&pop), 40).unwrap(),
            "\"Alice \\\"A\\\" Chen [gold; vip=1]\""
        );
        assert_eq!(pop_header(&pop), "tier=goldvip1;vip=1;calls=3;waited=7");
        pop.customer = None;
        assert_eq!(desk_name(&pop), "+14155550123");
        assert_eq!(pop_header(&pop), "vip=0;calls=3;waited=7");
    }

    #[test]
    fn signature_round_trip_and_tampering() {
        let body = br#"{"call_id":"abc"}"#;
        let sig = signature(b"s3cret", 1_700_000_000, body);
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        let tol = Duration::from_secs(300);
        assert_eq!(
            verify(b"s3cret", "1700000000", body, &sig, 1_700_000_010, tol),
            Ok(())
        );
        assert_eq!(
            verify(b"other", "1700000000", body, &sig, 1_700_000_010, tol),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "1700000000", b"{}", &sig, 1_700_000_010, tol),
            Err(VerifyError::Mismatch)
        );
        // The timestamp is covered by the MAC: moving it breaks the signature.
        assert_eq!(
            verify(b"s3cret", "1700000001", body, &sig, 1_700_000_010, tol),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "1700000000", body, &sig, 1_700_001_000, tol),
            Err(VerifyError::Stale(1000))
        );
        assert_eq!(
            verify(b"s3cret", "soon", body, &sig, 0, tol),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verify(b"s3cret", "1700000000", body, "v1=zz", 1_700_000_000, tol),
            Err(VerifyError::BadSignatureFormat)
        );
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?". Our MAC input
        // is "{ts}.{body}", so split the data at a '.'-free point: use the raw MAC instead.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0g"), None);
    }

    #[test]
    fn display_names_are_escaped_and_capped() {
        assert_eq!(
            sip_display_name("Ms. Li", 32).as_deref(),
            Some("\"Ms. Li\"")
        );
        assert_eq!(
            sip_display_name("Bob \"the\" \\ Builder\r\nVia: evil", 64).as_deref(),
            Some("\"Bob \\\"the\\\" \\\\ Builder Via: evil\"")
        );
        assert_eq!(
            sip_display_name("Ana María Fernández-López", 10).as_deref(),
            Some("\"Ana María…\"")
        );
        assert_eq!(sip_display_name(" \t\r\n", 10), None);
    }

    #[test]
    fn call_info_urls() {
        assert_eq!(
            call_info("http://desk.example/pop/", "a b@c").as_deref(),
            Some("<http://desk.example/pop/a%20b%40c>;purpose=info")
        );
        assert_eq!(call_info("javascript:alert(1)", "x"), None);
        assert_eq!(call_info("http://x/>;evil", "x"), None);
    }

    #[test]
    fn urls_parse() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/hook").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/hook")
        );
        let t = HttpTarget::parse("http://crm.local").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("crm.local:80", "/")
        );
        assert!(HttpTarget::parse("https://crm.local/").is_err());
        assert!(HttpTarget::parse("http:///x").is_err());
        assert!(HttpTarget::parse("http://a b/").is_err());
    }

    /// A receiver that answers 503 twice, then verifies the signature and answers 204.
    #[tokio::test]
    async fn delivers_signed_with_retries_to_a_real_listener() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(bool, Vec<u8>)>();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                n += 1;
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // Read head + body (Content-Length).
                let (head_end, len) = loop {
                    let k = s.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..k]);
                    if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&req[..i]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        break (i + 4, len);
                    }
                };
                while req.len() < head_end + len {
                    let k = s.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..k]);
                }
                let head = String::from_utf8_lossy(&req[..head_end]).to_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}:")))
                        .unwrap()
                        .trim()
                        .to_string()
                };
                let body = req[head_end..].to_vec();
                let ok = verify(
                    b"k",
                    &header(TIMESTAMP_HEADER),
                    &body,
                    &header(SIGNATURE_HEADER),
                    chrono::Utc::now().timestamp(),
                    Duration::from_secs(60),
                )
                .is_ok();
                seen_tx.send((ok, body)).unwrap();
                let reply: &[u8] = if n <= 2 {
                    b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 204 No Content\r\n\r\n"
                };
                s.write_all(reply).await.unwrap();
            }
        });
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let hook = Webhook::start(
            WebhookConfig {
                url: format!("http://{addr}/pop"),
                secret: Arc::from(&b"k"[..]),
                attempts: 5,
                backoff: Duration::from_millis(10),
                timeout: Duration::from_secs(5),
                queue: 8,
            },
            move |d| {
                let _ = done_tx.send(d);
            },
        )
        .unwrap();
        let pop = ScreenPop {
            call_id: "c-1".into(),
            agent: "alice".into(),
            queue: "cards".into(),
            ivr_path: vec!["main".into(), "lost_card".into()],
            waited_s: 42,
            ..ScreenPop::default()
        };
        assert!(hook.send(&pop));
        let done = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            done,
            Delivery::Delivered {
                call_id: "c-1".into(),
                attempts: 3,
                status: 204
            }
        );
        for _ in 0..3 {
            let (ok, body) = seen_rx.recv().await.unwrap();
            assert!(ok, "signature verified by the receiver");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["agent"], "alice");
            assert_eq!(v["waited_s"], 42);
        }
    }

    #[tokio::test]
    async fn gives_up_on_4xx_and_on_no_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let hook = Webhook::start(
            WebhookConfig {
                url: format!("http://{closed}/"),
                secret: Arc::from(&b"k"[..]),
                attempts: 3,
                backoff: Duration::from_millis(5),
                timeout: Duration::from_secs(2),
                queue: 1,
            },
            move |d| {
                let _ = done_tx.send(d);
            },
        )
        .unwrap();
        assert!(hook.send(&ScreenPop::default()));
        match tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Delivery::Failed {
                attempts, error, ..
            } => {
                assert_eq!(attempts, 3);
                assert!(error.contains("connect"), "{error}");
            }
            d => panic!("{d:?}"),
        }

        // A receiver that refuses the request (400) is not retried.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let hook = Webhook::start(
            WebhookConfig {
                url: format!("http://{addr}/"),
                secret: Arc::from(&b"k"[..]),
                attempts: 3,
                backoff: Duration::from_millis(5),
                timeout: Duration::from_secs(2),
                queue: 1,
            },
            move |d| {
                let _ = done_tx.send(d);
            },
        )
        .unwrap();
        assert!(hook.send(&ScreenPop::default()));
        let d = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            d,
            Delivery::Failed {
                call_id: String::new(),
                attempts: 1,
                error: "HTTP 400".into()
            }
        );
    }
}
