//! Message framing: UDP (one datagram = one message) and TCP ([`StreamFramer`]).

use bytes::{Buf, Bytes, BytesMut};

use crate::message::{HeaderName, find_header_end, looks_like_start_line};

/// Default maximum size of one framed message.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Framing errors. After an error the framer has already resynchronised; keep polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Bytes that do not start a SIP message were skipped.
    #[error("skipped {0} bytes of garbage")]
    Garbage(usize),
    /// A message (headers or Content-Length) exceeded the maximum size and was discarded.
    #[error("message exceeds the maximum size")]
    TooLarge,
    /// Content-Length missing or invalid on a stream transport; the header section was discarded.
    #[error("missing or invalid Content-Length on a stream")]
    BadContentLength,
}

/// UDP: returns the datagram when it carries a message, `None` for keepalives
/// (datagrams of only CR/LF/whitespace, RFC 5626 style) and empty datagrams.
pub fn datagram_message(data: &[u8]) -> Option<&[u8]> {
    if data.iter().all(|b| b.is_ascii_whitespace() || *b == 0) {
        None
    } else {
        Some(data)
    }
}

/// Splits a TCP byte stream into messages using Content-Length.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max: usize,
    /// Body bytes of a refused oversized message still to be discarded.
    discard: usize,
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl StreamFramer {
    /// A framer refusing messages larger than `max_message_size`.
    pub fn new(max_message_size: usize) -> Self {
        StreamFramer {
            buf: BytesMut::new(),
            max: max_message_size.max(64),
            discard: 0,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Next complete message, an error (after which framing continues), or `None` when more
    /// bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<Bytes, FramingError>> {
        if self.discard > 0 {
            let n = self.discard.min(self.buf.len());
            self.buf.advance(n);
            self.discard -= n;
            if self.discard > 0 {
                return None;
            }
        }
        // Keepalives / leading CRLF.
        let skip = self
            .buf
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(self.buf.len());
        self.buf.advance(skip);
        if self.buf.is_empty() {
            return None;
        }
        // The buffer must start with a start line; otherwise skip to the next one.
        let line_end = self.buf.iter().position(|b| *b == b'\n');
        match line_end {
            None => {
                if self.buf.len() > self.max {
                    let n = self.buf.len();
                    self.buf.clear();
                    return Some(Err(FramingError::Garbage(n)));
                }
                // A partial first line: if it cannot become a start line, drop it now.
                if !could_be_start(&self.buf) {
                    let n = self.buf.len();
                    self.buf.clear();
                    return Some(Err(FramingError::Garbage(n)));
                }
                return None;
            }
            Some(e) => {
                if !looks_like_start_line(&self.buf[..e]) {
                    let n = self.resync(e + 1);
                    return Some(Err(FramingError::Garbage(n)));
                }
            }
        }
        let Some((head_end, body_start)) = find_header_end(&self.buf) else {
            if self.buf.len() > self.max {
                let n = self.resync(1);
                let _ = n;
                return Some(Err(FramingError::TooLarge));
            }
            return None;
        };
        if body_start > self.max {
            self.resync(1);
            return Some(Err(FramingError::TooLarge));
        }
        let cl = match content_length(&self.buf[..head_end]) {
            Ok(Some(n)) => n,
            Ok(None) => 0,
            Err(()) => {
                self.buf.advance(body_start);
                return Some(Err(FramingError::BadContentLength));
            }
        };
        if body_start.saturating_add(cl) > self.max {
            // Discard the header section and as much of the body as we have; the rest of the
            // body will be skipped as garbage by the resync logic.
            self.buf.advance(body_start);
            self.discard = cl;
            return Some(Err(FramingError::TooLarge));
        }
        let total = body_start + cl;
        if self.buf.len() < total {
            return None;
        }
        Some(Ok(self.buf.split_to(total).freeze()))
    }

    /// Drop `from` bytes and everything up to the next line that looks like a start line.
    fn resync(&mut self, from: usize) -> usize {
        let mut pos = from.min(self.buf.len());
        loop {
            let rest = &self.buf[pos..];
            match rest.iter().position(|b| *b == b'\n') {
                Some(e) => {
                    let line = &rest[..e];
                    if looks_like_start_line(line) {
                        break;
                    }
                    pos += e + 1;
                }
                None => {
                    if !could_be_start(rest) {
                        pos = self.buf.len();
                    }
                    break;
                }
            }
        }
        self.buf.advance(pos);
        pos
    }
}

/// A partial line that might still grow into a start line.
fn could_be_start(partial: &[u8]) -> bool {
    let p = partial.strip_suffix(b"\r").unwrap_or(partial);
    if p.len() > 1024 {
        return false;
    }
    if b"SIP/2.0 ".starts_with(p) || p.starts_with(b"SIP/2.0 ") {
        return true;
    }
    // METHOD SP URI SP SIP/2.0 prefix: method token chars then space...
    let Some(sp) = p.iter().position(|b| *b == b' ') else {
        return p.iter().all(|b| b.is_ascii_alphabetic());
    };
    p[..sp].iter().all(|b| b.is_ascii_alphabetic()) && sp > 0 && p.is_ascii()
}

/// Content-Length from a header section: `Ok(None)` if absent, `Err` if invalid.
fn content_length(head: &[u8]) -> Result<Option<usize>, ()> {
    let mut found = None;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&line[..colon]) else {
            continue;
        };
        if HeaderName::parse(name.trim()) != HeaderName::ContentLength {
            continue;
        }
        let v = std::str::from_utf8(&line[colon + 1..])
            .map_err(|_| ())?
            .trim();
        if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let n: usize = v.parse().map_err(|_| ())?;
        if found.is_some_and(|f| f != n) {
            return Err(());
        }
        found = Some(n);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn msg(body: &str) -> String {
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nCall-ID: c\r\n\
CSeq: 1 OPTIONS\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            body
        )
    }

    #[test]
    fn partial_and_pipelined() {
        let m1 = msg("hello");
        let m2 = msg("");
        let all = format!("\r\n\r\n{m1}{m2}");
        let mut f = StreamFramer::default();
        for b in all.as_bytes() {
            f.push(&[*b]);
        }
        assert_eq!(f.next_message().unwrap().unwrap(), m1.as_bytes());
        assert_eq!(f.next_message().unwrap().unwrap(), m2.as_bytes());
        assert!(f.next_message().is_none());

        let mut f = StreamFramer::default();
        let (a, b) = m1.split_at(30);
        f.push(a.as_bytes());
        assert!(f.next_message().is_none());
        f.push(b.as_bytes());
        assert_eq!(f.next_message().unwrap().unwrap(), m1.as_bytes());
    }

    #[test]
    fn garbage_then_message() {
        let m1 = msg("x");
        let mut f = StreamFramer::default();
        f.push(b"\x00\x01garbage line\r\nmore junk\r\n");
        f.push(m1.as_bytes());
        assert!(matches!(
            f.next_message(),
            Some(Err(FramingError::Garbage(_)))
        ));
        assert_eq!(f.next_message().unwrap().unwrap(), m1.as_bytes());
    }

    #[test]
    fn oversized_refused() {
        let mut f = StreamFramer::new(200);
        let big = msg(&"a".repeat(500));
        f.push(big.as_bytes());
        f.push(msg("ok").as_bytes());
        let mut got = Vec::new();
        while let Some(r) = f.next_message() {
            got.push(r);
        }
        assert_eq!(got[0], Err(FramingError::TooLarge));
        assert_eq!(got.last().unwrap().as_ref().unwrap(), msg("ok").as_bytes());
    }

    #[test]
    fn keepalive_datagram() {
        assert!(datagram_message(b"\r\n\r\n").is_none());
        assert!(datagram_message(b"OPTIONS").is_some());
    }

    proptest::proptest! {
        #[test]
        fn framer_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..8)) {
            let mut f = StreamFramer::new(256);
            for c in &chunks {
                f.push(c);
                while let Some(r) = f.next_message() {
                    if let Ok(m) = r { let _ = crate::message::parse(&m); }
                }
            }
        }

        #[test]
        fn parser_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = crate::message::parse(&data);
        }

        #[test]
        fn framer_sip_like(prefix in "[A-Z \\r\\n:0-9a-z/.;=-]{0,80}", body in "[a-z]{0,20}") {
            let mut f = StreamFramer::new(512);
            f.push(prefix.as_bytes());
            f.push(msg(&body).as_bytes());
            let mut n = 0;
            while let Some(r) = f.next_message() {
                if r.is_ok() {
                    n += 1;
                }
                if n > 10 {
                    break;
                }
            }
        }
    }
}
