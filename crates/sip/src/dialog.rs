//! Dialogs (RFC 3261 §12): identity, CSeq bookkeeping, route set and in-dialog request building.

use std::fmt;

use bytes::Bytes;

use crate::message::{HeaderName, Method, Request, RequestBuilder, Response};

/// A Call-ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub String);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Via branch parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Branch(pub String);

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Dialog identifier: Call-ID + local tag + remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: CallId,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

/// Dialog errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// An in-dialog request with a CSeq not above the last one (→ 500).
    #[error("CSeq {got} not above the last remote CSeq {last}")]
    CSeqOutOfOrder {
        /// Received.
        got: u32,
        /// Last seen.
        last: u32,
    },
    /// The dialog-creating message has no usable Contact.
    #[error("missing Contact")]
    MissingContact,
    /// The peer did not send a tag.
    #[error("missing remote tag")]
    MissingTag,
}

/// Dialog state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Provisional response with tag sent/received.
    Early,
    /// 2xx sent/received.
    Confirmed,
}

/// One dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Identity.
    pub id: DialogId,
    /// State.
    pub state: DialogState,
    /// Our last CSeq number.
    pub local_seq: u32,
    /// The peer's last CSeq number.
    pub remote_seq: Option<u32>,
    /// Our From/To header value, tag included.
    pub local_header: String,
    /// The peer's From/To header value, tag included.
    pub remote_header: String,
    /// Where in-dialog requests go (the peer's Contact URI).
    pub remote_target: String,
    /// Route set (loose routing assumed).
    pub route_set: Vec<String>,
}

impl Dialog {
    /// UAS side: from a dialog-creating request and our tag.
    pub fn new_uas(req: &Request, local_tag: &str) -> Result<Dialog, DialogError> {
        let remote_tag = req.from_tag().ok_or(DialogError::MissingTag)?.to_owned();
        let contact = req.contact().ok_or(DialogError::MissingContact)?;
        let to = req.headers.get(&HeaderName::To).unwrap_or("");
        let local_header = if req.to_tag().is_some() {
            to.to_owned()
        } else {
            format!("{to};tag={local_tag}")
        };
        Ok(Dialog {
            id: DialogId {
                call_id: CallId(req.call_id().to_owned()),
                local_tag: local_tag.to_owned(),
                remote_tag,
            },
            state: DialogState::Early,
            local_seq: 0,
            remote_seq: Some(req.cseq().seq),
            local_header,
            remote_header: req.headers.get(&HeaderName::From).unwrap_or("").to_owned(),
            remote_target: contact.uri,
            route_set: req.record_route(),
        })
    }

    /// UAC side: from our request's From value/tag/CSeq and a response carrying a To tag.
    pub fn new_uac(
        local_header: &str,
        local_tag: &str,
        local_seq: u32,
        resp: &Response,
    ) -> Result<Dialog, DialogError> {
        let remote_tag = resp.to_tag().ok_or(DialogError::MissingTag)?.to_owned();
        let contact = resp.contact().ok_or(DialogError::MissingContact)?;
        let mut route_set = resp.record_route();
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: CallId(resp.call_id().to_owned()),
                local_tag: local_tag.to_owned(),
                remote_tag,
            },
            state: if resp.status >= 200 {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_seq,
            remote_seq: None,
            local_header: local_header.to_owned(),
            remote_header: resp.headers.get(&HeaderName::To).unwrap_or("").to_owned(),
            remote_target: contact.uri,
            route_set,
        })
    }

    /// Whether `req` (an in-dialog request) belongs to this dialog.
    pub fn matches(&self, req: &Request) -> bool {
        req.call_id() == self.id.call_id.0
            && req.to_tag() == Some(self.id.local_tag.as_str())
            && req.from_tag() == Some(self.id.remote_tag.as_str())
    }

    /// Check and record the remote CSeq of an in-dialog request (not for ACK/CANCEL).
    pub fn check_remote_cseq(&mut self, seq: u32) -> Result<(), DialogError> {
        if let Some(last) = self.remote_seq
            && seq <= last
        {
            return Err(DialogError::CSeqOutOfOrder { got: seq, last });
        }
        self.remote_seq = Some(seq);
        Ok(())
    }

    /// Allocate the next local CSeq number.
    pub fn next_local_seq(&mut self) -> u32 {
        if self.local_seq == 0 {
            self.local_seq = 1;
        } else {
            self.local_seq += 1;
        }
        self.local_seq
    }

    /// Update the remote target from a target-refresh request/response (re-INVITE, UPDATE).
    pub fn refresh_target(&mut self, contact: Option<String>) {
        if let Some(c) = contact {
            self.remote_target = c;
        }
    }

    /// Build an in-dialog request with CSeq `seq` and the given top `via`.
    /// `extra` headers are appended after the core ones.
    pub fn build_request(
        &self,
        method: &Method,
        seq: u32,
        via: &str,
        contact: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Bytes {
        let mut b = RequestBuilder::new(method, &self.remote_target)
            .header("Via", via)
            .header("Max-Forwards", 70);
        for r in &self.route_set {
            b = b.header("Route", r);
        }
        b = b
            .header("From", &self.local_header)
            .header("To", &self.remote_header)
            .header("Call-ID", &self.id.call_id.0)
            .header("CSeq", format_args!("{seq} {method}"));
        if let Some(c) = contact {
            b = b.header("Contact", c);
        }
        for (n, v) in extra {
            b = b.header(n, v);
        }
        if let Some((ct, body)) = body {
            b = b.body(ct, body);
        }
        b.build()
    }

    /// Build the ACK for a 2xx to our INVITE with CSeq `invite_seq` (RFC 3261 §13.2.2.4).
    pub fn build_ack(&self, invite_seq: u32, via: &str, body: Option<(&str, &[u8])>) -> Bytes {
        self.build_request(&Method::Ack, invite_seq, via, None, &[], body)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::{SipMessage, parse};

    fn req(s: &str) -> Request {
        match parse(s.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!(),
        }
    }

    const INV: &str = "INVITE sip:ring@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\n\
Record-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\nFrom: <sip:a@x>;tag=ra\r\nTo: <sip:ring@10.0.0.1>\r\n\
Call-ID: cid\r\nCSeq: 5 INVITE\r\nContact: <sip:a@10.0.0.2:5070>\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn uas_dialog_and_cseq() {
        let r = req(INV);
        let mut d = Dialog::new_uas(&r, "lt").unwrap();
        assert_eq!(d.route_set, vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(d.remote_target, "sip:a@10.0.0.2:5070");
        assert!(d.check_remote_cseq(6).is_ok());
        assert_eq!(
            d.check_remote_cseq(6),
            Err(DialogError::CSeqOutOfOrder { got: 6, last: 6 })
        );
        assert!(d.check_remote_cseq(3).is_err());
        let seq = d.next_local_seq();
        let bye = d.build_request(
            &Method::Bye,
            seq,
            "SIP/2.0/UDP me;branch=z9hG4bKb",
            None,
            &[],
            None,
        );
        let b = req(std::str::from_utf8(&bye).unwrap());
        assert_eq!(b.uri, "sip:a@10.0.0.2:5070");
        assert_eq!(b.route(), vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(b.from_tag(), Some("lt"));
        assert_eq!(b.to_tag(), Some("ra"));
        assert_eq!(b.cseq().seq, 1);
        assert_eq!(b.cseq().method, Method::Bye);
    }

    #[test]
    fn uac_dialog_reverses_routes_and_acks_with_invite_cseq() {
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP me;branch=z9hG4bK1\r\nRecord-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
From: <sip:me@x>;tag=mine\r\nTo: <sip:b@y>;tag=theirs\r\nCall-ID: c2\r\nCSeq: 7 INVITE\r\n\
Contact: <sip:b@10.9.9.9>\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Response(r) = parse(resp.as_bytes()).unwrap() else {
            panic!()
        };
        let d = Dialog::new_uac("<sip:me@x>;tag=mine", "mine", 7, &r).unwrap();
        assert_eq!(d.route_set, vec!["<sip:p2;lr>", "<sip:p1;lr>"]);
        assert_eq!(d.state, DialogState::Confirmed);
        let ack = req(
            std::str::from_utf8(&d.build_ack(7, "SIP/2.0/UDP me;branch=z9hG4bK2", None)).unwrap(),
        );
        assert_eq!(ack.cseq().seq, 7);
        assert_eq!(ack.cseq().method, Method::Ack);
        assert_eq!(ack.uri, "sip:b@10.9.9.9");
    }
}
