//! RFC 3264 offer/answer for G.711 audio.
//!
//! SDP is parsed and printed with the webrtc-rs [`rtc_sdp`] crate; this module only adds the
//! negotiation semantics on top of it:
//!
//! * [`answer`] turns a remote offer (from an INVITE or re-INVITE) into our answer and the
//!   [`NegotiatedMedia`] the media plane should use;
//! * [`offer`] builds our own offer (for an outgoing INVITE or a re-INVITE we originate);
//! * [`accept_answer`] reads the remote answer to one of our offers.
//!
//! Everything is sans-IO: no sockets and no clock. The `o=` session id comes from the caller
//! through [`SdpSession::with_id`], and the `o=` version is bumped only when the content of the
//! SDP we send changes (RFC 3264 §8).
//!
//! Only one audio stream is ever accepted: the first `m=audio` line, in the offer's order, that
//! is plain `RTP/AVP` and lists a codec we support. Every other `m=` line is answered with port
//! 0, so the answer always has as many `m=` lines as the offer (RFC 3264 §6).
#![warn(missing_docs)]

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use rtc_sdp::description::common::{Address, Attribute, ConnectionInformation};
use rtc_sdp::description::media::{MediaDescription, MediaName, RangedPort};
use rtc_sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};

/// Payload type we use for RFC 4733 `telephone-event` in our own offers.
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// Events we offer for `telephone-event` (DTMF 0-9, *, #, A-D and flash).
const TELEPHONE_EVENT_FMTP: &str = "0-16";

/// Events implied by a `telephone-event` payload type without `a=fmtp` (RFC 4733 §2.4.1).
const TELEPHONE_EVENT_DEFAULT_FMTP: &str = "0-15";

/// RTP clock rate of G.711 and of 8 kHz telephone-event.
const G711_CLOCK_RATE: u32 = 8000;

/// The only transport we accept for audio.
const RTP_AVP: [&str; 2] = ["RTP", "AVP"];

/// A G.711 codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name as written in `a=rtpmap` (`PCMU` / `PCMA`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The RTP clock rate, 8000 Hz for both.
    pub fn clock_rate(self) -> u32 {
        G711_CLOCK_RATE
    }

    /// The codec with this static payload type, if any.
    pub fn from_static_payload_type(pt: u8) -> Option<Self> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The codec an `a=rtpmap` encoding names (case-insensitive, RFC 4855 §3), if any.
    ///
    /// Only 8000 Hz mono is accepted.
    pub fn from_rtpmap(name: &str, clock_rate: u32, channels: &str) -> Option<Self> {
        if clock_rate != G711_CLOCK_RATE || !(channels.is_empty() || channels == "1") {
            return None;
        }
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }
}

/// A media direction attribute (`a=sendrecv` and friends), always from the point of view of
/// the party whose SDP carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Send and receive.
    SendRecv,
    /// Send only (the usual "I put you on hold" offer).
    SendOnly,
    /// Receive only.
    RecvOnly,
    /// Neither send nor receive.
    Inactive,
}

impl Direction {
    /// The same stream seen from the other side: `sendonly` ↔ `recvonly`; `sendrecv` and
    /// `inactive` are unchanged.
    pub fn reverse(self) -> Self {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// The attribute name (`sendrecv`, `sendonly`, `recvonly`, `inactive`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether media flows out of the party this direction belongs to.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether media flows into the party this direction belongs to.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Builds a direction from "does it send" and "does it receive".
    pub fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// What both directions allow: sends only if both send, receives only if both receive.
    pub fn intersect(self, other: Self) -> Self {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    fn from_attribute_key(key: &str) -> Option<Self> {
        match rtc_sdp::direction::Direction::new(key) {
            rtc_sdp::direction::Direction::SendRecv => Some(Direction::SendRecv),
            rtc_sdp::direction::Direction::SendOnly => Some(Direction::SendOnly),
            rtc_sdp::direction::Direction::RecvOnly => Some(Direction::RecvOnly),
            rtc_sdp::direction::Direction::Inactive => Some(Direction::Inactive),
            rtc_sdp::direction::Direction::Unspecified => None,
        }
    }
}

/// What we are willing to do, as input to [`offer`], [`answer`] and [`accept_answer`].
#[derive(Debug, Clone)]
pub struct LocalMedia {
    /// Our RTP address, written in `o=` and `c=`.
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// Codecs we support, in our order of preference (used for our offers; when answering
    /// the offerer's order wins).
    pub codecs: Vec<Codec>,
    /// Whether we offer/accept RFC 4733 `telephone-event` (DTMF).
    pub telephone_event: bool,
    /// Our packetisation time in milliseconds.
    pub ptime_ms: u32,
    /// Our own direction (e.g. `SendOnly` to put the peer on hold).
    pub direction: Direction,
}

/// The outcome of a negotiation: what the media plane should do.
#[derive(Debug, Clone, PartialEq)]
pub struct NegotiatedMedia {
    /// Where to send RTP; `None` when the peer gave `c=0.0.0.0` (RFC 2543 hold) or port 0
    /// (stream disabled).
    pub remote: Option<SocketAddr>,
    /// The codec to use.
    pub codec: Codec,
    /// The payload type for that codec (the peer's, which may be dynamic).
    pub payload_type: u8,
    /// The payload type of 8 kHz `telephone-event`, when both sides support it.
    pub telephone_event_pt: Option<u8>,
    /// Packetisation time in milliseconds.
    pub ptime_ms: u32,
    /// OUR direction: if the offer says `sendonly`, ours is `recvonly`.
    pub direction: Direction,
}

/// Our side of the SDP session across a dialog: the `o=` session id and version.
///
/// Keep one per dialog and pass it to every [`offer`] and [`answer`] so that the version is
/// incremented only when the content we send changes (RFC 3264 §8).
#[derive(Debug, Default, Clone)]
pub struct SdpSession {
    id: u64,
    version: u64,
    /// Our last SDP with the `o=` version zeroed, to detect changes.
    last_content: Option<String>,
}

impl SdpSession {
    /// A session with this `o=` session id (the caller picks it: a counter, or a seed from its
    /// RNG). The first SDP carries version 0.
    pub fn with_id(id: u64) -> Self {
        SdpSession {
            id,
            version: 0,
            last_content: None,
        }
    }

    /// The `o=` session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The `o=` version of the last SDP we produced (0 before the first).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Sets `o=` on `desc` and marshals it, bumping the version if the content changed since
    /// our last SDP.
    fn stamp(&mut self, mut desc: SessionDescription) -> Bytes {
        desc.origin.session_id = self.id;
        desc.origin.session_version = 0;
        let content = desc.marshal();
        match &self.last_content {
            Some(last) if *last == content => {}
            Some(_) => self.version = self.version.wrapping_add(1),
            None => {}
        }
        self.last_content = Some(content);
        desc.origin.session_version = self.version;
        Bytes::from(desc.marshal())
    }
}

/// Why an SDP body could not be parsed or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedSdp {
    /// The body is not UTF-8.
    #[error("SDP is not UTF-8")]
    NotUtf8,
    /// The SDP parser rejected the body (bad line order, bad port, bad `o=`...).
    #[error("SDP syntax: {0}")]
    Syntax(String),
    /// The body has no `m=` line.
    #[error("SDP has no m= line")]
    NoMedia,
    /// The selected stream has no `c=` line, at either media or session level.
    #[error("no c= line for the audio stream")]
    MissingConnection,
    /// The connection address is not an IP literal of the declared family (FQDNs are not
    /// resolved: this core does no I/O).
    #[error("unusable connection address {0:?}")]
    BadAddress(String),
}

/// Error from offer/answer processing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The SDP is malformed (→ 400 Bad Request).
    #[error("malformed SDP: {0}")]
    Malformed(#[from] MalformedSdp),
    /// The SDP is well formed but has no audio stream with a codec we support
    /// (→ 488 Not Acceptable Here).
    #[error("no acceptable audio stream in SDP")]
    NotAcceptable,
}

impl SdpError {
    /// The SIP status code with which to reject a request carrying this SDP: 400 or 488.
    pub fn status_code(&self) -> u16 {
        match self {
            SdpError::Malformed(_) => 400,
            SdpError::NotAcceptable => 488,
        }
    }
}

/// Answers a remote offer.
///
/// Returns our answer SDP and the negotiated media. Pass the dialog's [`SdpSession`]; on a
/// re-INVITE the `o=` version is kept if the answer is unchanged and bumped otherwise.
///
/// # Errors
///
/// [`SdpError::Malformed`] if the offer cannot be parsed, has no `m=` line or no usable
/// `c=` for the selected stream; [`SdpError::NotAcceptable`] if no audio stream has a codec
/// in `local.codecs` (the session is left unchanged in both cases).
pub fn answer(
    offer: &[u8],
    local: &LocalMedia,
    session: &mut SdpSession,
) -> Result<(Bytes, NegotiatedMedia), SdpError> {
    let desc = parse(offer)?;

    // Pick the stream: first active audio stream with a common codec; failing that, the first
    // disabled (port 0) one, which we then answer disabled too.
    let mut selected = None;
    for want_port_zero in [false, true] {
        selected = desc
            .media_descriptions
            .iter()
            .enumerate()
            .find_map(|(i, m)| {
                let port_zero = m.media_name.port.value == 0;
                if port_zero != want_port_zero || !is_audio_rtp_avp(m) {
                    return None;
                }
                let (codec, pt) = pick_codec(m, &local.codecs)?;
                Some((i, codec, pt))
            });
        if selected.is_some() {
            break;
        }
    }
    let Some((index, codec, payload_type)) = selected else {
        return Err(SdpError::NotAcceptable);
    };
    let Some(media) = desc.media_descriptions.get(index) else {
        return Err(SdpError::NotAcceptable);
    };

    let port = media.media_name.port.value;
    let remote = if port == 0 {
        None
    } else {
        remote_address(&desc, media, port)?
    };

    let telephone_event = if local.telephone_event {
        telephone_event_of(media)
    } else {
        None
    };
    let ptime_ms = offered_ptime(&desc, media).unwrap_or(local.ptime_ms);

    // The offerer's direction, with RFC 2543 hold (c=0.0.0.0) meaning "do not send to me".
    let mut their = direction_of(&desc, media);
    if remote.is_none() {
        their = Direction::from_flags(their.sends(), false);
    }
    let direction = if port == 0 {
        Direction::Inactive
    } else {
        their.reverse().intersect(local.direction)
    };

    let mut out = base_description(local);
    for (i, m) in desc.media_descriptions.iter().enumerate() {
        if i == index && port != 0 {
            let te = telephone_event
                .as_ref()
                .map(|(pt, fmtp)| (*pt, fmtp.as_str()));
            out.media_descriptions.push(audio_media(
                local.port,
                &[(codec, payload_type)],
                te,
                ptime_ms,
                direction,
            ));
        } else {
            out.media_descriptions.push(rejected_media(m));
        }
    }

    let negotiated = NegotiatedMedia {
        remote,
        codec,
        payload_type,
        telephone_event_pt: telephone_event.map(|(pt, _)| pt),
        ptime_ms,
        direction,
    };
    Ok((session.stamp(out), negotiated))
}

/// Builds our offer: one `RTP/AVP` audio stream with `local.codecs` in preference order
/// (static payload types 0/8), plus `telephone-event` on [`TELEPHONE_EVENT_PT`] if enabled.
///
/// An empty `local.codecs` is offered as PCMU then PCMA, since an `m=` line needs at least one
/// format.
pub fn offer(local: &LocalMedia, session: &mut SdpSession) -> Bytes {
    let mut codecs: Vec<(Codec, u8)> = Vec::with_capacity(2);
    for &c in &local.codecs {
        if !codecs.iter().any(|&(seen, _)| seen == c) {
            codecs.push((c, c.payload_type()));
        }
    }
    if codecs.is_empty() {
        codecs = vec![(Codec::Pcmu, 0), (Codec::Pcma, 8)];
    }
    let te = local
        .telephone_event
        .then_some((TELEPHONE_EVENT_PT, TELEPHONE_EVENT_FMTP));
    let mut out = base_description(local);
    out.media_descriptions.push(audio_media(
        local.port,
        &codecs,
        te,
        local.ptime_ms,
        local.direction,
    ));
    session.stamp(out)
}

/// Reads the remote answer to an offer we made with `local`.
///
/// The first audio `m=` line of the answer is used; its first format that is one of
/// `local.codecs` is the codec, with the answer's payload type.
///
/// # Errors
///
/// [`SdpError::Malformed`] if the answer cannot be parsed, has no `m=` line or no usable `c=`;
/// [`SdpError::NotAcceptable`] if it has no audio stream or no codec of ours.
pub fn accept_answer(answer: &[u8], local: &LocalMedia) -> Result<NegotiatedMedia, SdpError> {
    let desc = parse(answer)?;
    let media = desc
        .media_descriptions
        .iter()
        .find(|m| is_audio_rtp_avp(m))
        .ok_or(SdpError::NotAcceptable)?;
    let (codec, payload_type) = pick_codec(media, &local.codecs).ok_or(SdpError::NotAcceptable)?;

    let port = media.media_name.port.value;
    let remote = if port == 0 {
        None
    } else {
        remote_address(&desc, media, port)?
    };
    let telephone_event_pt = if local.telephone_event {
        telephone_event_of(media).map(|(pt, _)| pt)
    } else {
        None
    };
    let ptime_ms = offered_ptime(&desc, media).unwrap_or(local.ptime_ms);

    let mut their = direction_of(&desc, media);
    if remote.is_none() {
        their = Direction::from_flags(their.sends(), false);
    }
    let direction = if port == 0 {
        Direction::Inactive
    } else {
        their.reverse().intersect(local.direction)
    };

    Ok(NegotiatedMedia {
        remote,
        codec,
        payload_type,
        telephone_event_pt,
        ptime_ms,
        direction,
    })
}

/// Parses with rtc-sdp and checks there is at least one `m=` line.
fn parse(body: &[u8]) -> Result<SessionDescription, MalformedSdp> {
    if std::str::from_utf8(body).is_err() {
        return Err(MalformedSdp::NotUtf8);
    }
    let desc = SessionDescription::unmarshal(&mut Cursor::new(body))
        .map_err(|e| MalformedSdp::Syntax(e.to_string()))?;
    if desc.media_descriptions.is_empty() {
        return Err(MalformedSdp::NoMedia);
    }
    Ok(desc)
}

fn is_audio_rtp_avp(m: &MediaDescription) -> bool {
    m.media_name.media == "audio" && m.media_name.protos.iter().map(String::as_str).eq(RTP_AVP)
}

/// The first format of `m`, in its own order, that is one of `ours`: by `a=rtpmap` when the
/// payload type has one, else by static payload type.
fn pick_codec(m: &MediaDescription, ours: &[Codec]) -> Option<(Codec, u8)> {
    let rtpmaps = m.codecs();
    m.media_name.formats.iter().find_map(|fmt| {
        let pt = fmt.parse::<u8>().ok().filter(|pt| *pt < 128)?;
        let codec = match rtpmaps.get(&pt).filter(|c| !c.name.is_empty()) {
            Some(c) => Codec::from_rtpmap(&c.name, c.clock_rate, &c.encoding_parameters),
            None => Codec::from_static_payload_type(pt),
        }?;
        ours.contains(&codec).then_some((codec, pt))
    })
}

/// The first 8 kHz `telephone-event` payload type listed in `m=`, with its `a=fmtp` events.
fn telephone_event_of(m: &MediaDescription) -> Option<(u8, String)> {
    let rtpmaps = m.codecs();
    let pt = m.media_name.formats.iter().find_map(|fmt| {
        let pt = fmt.parse::<u8>().ok().filter(|pt| (96..128).contains(pt))?;
        let c = rtpmaps.get(&pt)?;
        (c.name.eq_ignore_ascii_case("telephone-event") && c.clock_rate == G711_CLOCK_RATE)
            .then_some(pt)
    })?;
    // Read the fmtp attribute value ourselves: rtc-sdp's codec map drops any fmtp whose
    // parameters contain whitespace (e.g. "0-15, 16").
    let fmtp = m
        .attributes
        .iter()
        .filter(|a| a.key == "fmtp")
        .filter_map(|a| a.value.as_deref()?.split_once(' '))
        .find(|(p, _)| p.parse::<u8>().ok() == Some(pt))
        .map(|(_, events)| events.trim().to_owned())
        .filter(|events| !events.is_empty())
        .unwrap_or_else(|| TELEPHONE_EVENT_DEFAULT_FMTP.to_owned());
    Some((pt, fmtp))
}

/// `a=ptime` (media level, else session level) if it is a multiple of 10 ms in 10..=60.
fn offered_ptime(desc: &SessionDescription, m: &MediaDescription) -> Option<u32> {
    let raw = m
        .attribute("ptime")
        .flatten()
        .or_else(|| desc.attribute("ptime").map(String::as_str))?;
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|p| (10..=60).contains(p) && p % 10 == 0)
}

/// Media-level direction attribute, else session-level, else `sendrecv` (RFC 3264 §5.1).
fn direction_of(desc: &SessionDescription, m: &MediaDescription) -> Direction {
    let first = |attrs: &[Attribute]| {
        attrs
            .iter()
            .find_map(|a| Direction::from_attribute_key(&a.key))
    };
    first(&m.attributes)
        .or_else(|| first(&desc.attributes))
        .unwrap_or(Direction::SendRecv)
}

/// The RTP destination of `m`: media-level `c=`, else session-level; `None` for an
/// unspecified address (`0.0.0.0` / `::`, RFC 2543 hold).
fn remote_address(
    desc: &SessionDescription,
    m: &MediaDescription,
    port: isize,
) -> Result<Option<SocketAddr>, MalformedSdp> {
    let conn = m
        .connection_information
        .as_ref()
        .or(desc.connection_information.as_ref())
        .ok_or(MalformedSdp::MissingConnection)?;
    let raw = conn
        .address
        .as_ref()
        .map(|a| a.address.as_str())
        .ok_or(MalformedSdp::MissingConnection)?;
    // rtc-sdp keeps a multicast "/ttl[/range]" suffix inside the address string.
    let host = raw.split('/').next().unwrap_or(raw);
    let ip: IpAddr = host
        .parse()
        .map_err(|_| MalformedSdp::BadAddress(raw.to_owned()))?;
    let family_ok = match ip {
        IpAddr::V4(_) => conn.address_type == "IP4",
        IpAddr::V6(_) => conn.address_type == "IP6",
    };
    if !family_ok {
        return Err(MalformedSdp::BadAddress(raw.to_owned()));
    }
    if ip.is_unspecified() {
        return Ok(None);
    }
    let port = u16::try_from(port).map_err(|_| MalformedSdp::Syntax(format!("port {port}")))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

fn address_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// `v=`, `o=` (id/version filled by [`SdpSession::stamp`]), `s=`, `c=`, `t=`.
fn base_description(local: &LocalMedia) -> SessionDescription {
    SessionDescription {
        version: 0,
        origin: Origin {
            username: "-".to_owned(),
            session_id: 0,
            session_version: 0,
            network_type: "IN".to_owned(),
            address_type: address_type(local.address).to_owned(),
            unicast_address: local.address.to_string(),
        },
        session_name: "-".to_owned(),
        connection_information: Some(ConnectionInformation {
            network_type: "IN".to_owned(),
            address_type: address_type(local.address).to_owned(),
            address: Some(Address {
                address: local.address.to_string(),
                ttl: None,
                range: None,
            }),
        }),
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: vec![],
        }],
        ..Default::default()
    }
}

/// Our `m=audio` section.
fn audio_media(
    port: u16,
    codecs: &[(Codec, u8)],
    telephone_event: Option<(u8, &str)>,
    ptime_ms: u32,
    direction: Direction,
) -> MediaDescription {
    let mut md = MediaDescription {
        media_name: MediaName {
            media: "audio".to_owned(),
            port: RangedPort {
                value: port as isize, // lossless: isize is at least 32 bits on our targets
                range: None,
            },
            protos: RTP_AVP.iter().map(|&p| p.to_owned()).collect(),
            formats: vec![],
        },
        ..Default::default()
    };
    for &(codec, pt) in codecs {
        md = md.with_codec(
            pt,
            codec.name().to_owned(),
            codec.clock_rate(),
            0,
            String::new(),
        );
    }
    if let Some((pt, events)) = telephone_event {
        md = md.with_codec(
            pt,
            "telephone-event".to_owned(),
            G711_CLOCK_RATE,
            0,
            events.to_owned(),
        );
    }
    md.with_value_attribute("ptime".to_owned(), ptime_ms.to_string())
        .with_property_attribute(direction.as_str().to_owned())
}

/// A rejected stream: same media and proto as offered, port 0 (RFC 3264 §6).
fn rejected_media(offered: &MediaDescription) -> MediaDescription {
    MediaDescription {
        media_name: MediaName {
            media: offered.media_name.media.clone(),
            port: RangedPort {
                value: 0,
                range: None,
            },
            protos: offered.media_name.protos.clone(),
            formats: offered.media_name.formats.clone(),
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::Ipv4Addr;

    fn local() -> LocalMedia {
        LocalMedia {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 20000,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            direction: Direction::SendRecv,
        }
    }

    #[test]
    fn codec_constants() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::Pcmu.name(), "PCMU");
        assert_eq!(Codec::Pcma.clock_rate(), 8000);
        assert_eq!(Codec::from_rtpmap("pcma", 8000, ""), Some(Codec::Pcma));
        assert_eq!(Codec::from_rtpmap("PCMU", 16000, ""), None);
        assert_eq!(Codec::from_rtpmap("PCMU", 8000, "2"), None);
    }

    #[test]
    fn direction_algebra() {
        assert_eq!(Direction::SendOnly.reverse(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reverse(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.reverse(), Direction::Inactive);
        assert_eq!(Direction::SendRecv.reverse(), Direction::SendRecv);
        assert_eq!(
            Direction::SendOnly.intersect(Direction::RecvOnly),
            Direction::Inactive
        );
        assert_eq!(
            Direction::SendRecv.intersect(Direction::RecvOnly),
            Direction::RecvOnly
        );
    }

    #[test]
    fn status_codes() {
        assert_eq!(SdpError::NotAcceptable.status_code(), 488);
        assert_eq!(SdpError::from(MalformedSdp::NoMedia).status_code(), 400);
    }

    #[test]
    fn session_version_only_moves_on_change() {
        let mut s = SdpSession::with_id(42);
        let a = offer(&local(), &mut s);
        assert_eq!(s.version(), 0);
        let b = offer(&local(), &mut s);
        assert_eq!(a, b);
        let mut changed = local();
        changed.direction = Direction::SendOnly;
        let c = offer(&changed, &mut s);
        assert_eq!(s.version(), 1);
        assert!(
            std::str::from_utf8(&c)
                .unwrap()
                .contains("o=- 42 1 IN IP4 10.0.0.1\r\n")
        );
    }

    #[test]
    fn empty_codec_list_still_offers_a_format() {
        let mut l = local();
        l.codecs.clear();
        l.telephone_event = false;
        let sdp = offer(&l, &mut SdpSession::default());
        assert!(
            std::str::from_utf8(&sdp)
                .unwrap()
                .contains("m=audio 20000 RTP/AVP 0 8\r\n")
        );
    }

    #[test]
    fn multicast_ttl_suffix_is_stripped() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 224.2.1.1/127\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n";
        let (_, n) = answer(sdp.as_bytes(), &local(), &mut SdpSession::default()).unwrap();
        assert_eq!(n.remote, Some("224.2.1.1:5004".parse().unwrap()));
    }

    #[test]
    fn fqdn_connection_is_malformed() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n";
        let err = answer(sdp.as_bytes(), &local(), &mut SdpSession::default()).unwrap_err();
        assert!(matches!(
            err,
            SdpError::Malformed(MalformedSdp::BadAddress(_))
        ));
    }

    #[test]
    fn failed_answer_leaves_session_untouched() {
        let mut s = SdpSession::with_id(7);
        let good = "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n";
        answer(good.as_bytes(), &local(), &mut s).unwrap();
        assert!(answer(b"garbage", &local(), &mut s).is_err());
        answer(good.as_bytes(), &local(), &mut s).unwrap();
        assert_eq!(s.version(), 0);
    }
}
