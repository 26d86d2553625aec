//! SIP INFO DTMF bodies: `application/dtmf-relay` (`Signal=5\r\nDuration=160`) and
//! `application/dtmf` (`5`).

use std::time::Duration;

use super::Digit;
use crate::MediaError;

/// A digit from a SIP INFO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDtmf {
    /// The digit.
    pub digit: Digit,
    /// `Duration=` in ms, if present.
    pub duration: Option<Duration>,
}

fn parse_signal(v: &str) -> Result<Digit, MediaError> {
    let v = v.trim();
    let mut chars = v.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Digit::try_from(c),
        // some devices send the event code: "Signal=10" for *, "11" for #
        _ => v
            .parse::<u8>()
            .ok()
            .and_then(Digit::from_event)
            .ok_or_else(|| MediaError::InvalidDigit(v.to_string())),
    }
}

/// Parse the body of a SIP INFO request carrying DTMF. `content_type` is the value of the
/// Content-Type header (parameters and case are ignored).
pub fn parse_info(content_type: &str, body: &[u8]) -> Result<InfoDtmf, MediaError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = std::str::from_utf8(body).map_err(|_| MediaError::MalformedInfoBody("not UTF-8"))?;
    match mime.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = None;
            for line in body.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = Some(parse_signal(v)?),
                    "duration" => {
                        let ms = v
                            .trim()
                            .parse::<u64>()
                            .map_err(|_| MediaError::MalformedInfoBody("bad Duration"))?;
                        duration = Some(Duration::from_millis(ms));
                    }
                    _ => {}
                }
            }
            let digit = digit.ok_or(MediaError::MalformedInfoBody("no Signal= line"))?;
            Ok(InfoDtmf { digit, duration })
        }
        "application/dtmf" => {
            let v = body.trim();
            if v.is_empty() {
                return Err(MediaError::MalformedInfoBody("empty body"));
            }
            Ok(InfoDtmf {
                digit: parse_signal(v)?,
                duration: None,
            })
        }
        _ => Err(MediaError::UnsupportedInfoContentType(
            content_type.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dtmf_relay() {
        let d = parse_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(d.digit.as_char(), '5');
        assert_eq!(d.duration, Some(Duration::from_millis(160)));
        let d = parse_info(
            "Application/DTMF-Relay; charset=utf-8",
            b"signal= #\nduration = 250",
        )
        .unwrap();
        assert_eq!(d.digit.as_char(), '#');
        let d = parse_info("application/dtmf-relay", b"Signal=10\r\nDuration=100").unwrap();
        assert_eq!(d.digit.as_char(), '*');
        let d = parse_info("application/dtmf-relay", b"Signal=*\r\n").unwrap();
        assert_eq!((d.digit.as_char(), d.duration), ('*', None));
    }

    #[test]
    fn dtmf_plain() {
        assert_eq!(
            parse_info("application/dtmf", b"5")
                .unwrap()
                .digit
                .as_char(),
            '5'
        );
        assert_eq!(
            parse_info("application/dtmf", b" b\r\n")
                .unwrap()
                .digit
                .as_char(),
            'B'
        );
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(
            parse_info("text/plain", b"5"),
            Err(MediaError::UnsupportedInfoContentType(_))
        ));
        assert!(matches!(
            parse_info("application/dtmf-relay", b"Duration=160"),
            Err(MediaError::MalformedInfoBody(_))
        ));
        assert!(matches!(
            parse_info("application/dtmf-relay", b"Signal=X"),
            Err(MediaError::InvalidDigit(_))
        ));
        assert!(matches!(
            parse_info("application/dtmf-relay", b"Signal=5\nDuration=abc"),
            Err(MediaError::MalformedInfoBody(_))
        ));
        assert!(matches!(
            parse_info("application/dtmf", b""),
            Err(MediaError::MalformedInfoBody(_))
        ));
        assert_eq!(
            parse_info("application/dtmf", b"12")
                .unwrap()
                .digit
                .as_char(),
            'A'
        );
        assert!(matches!(
            parse_info("application/dtmf", b"16"),
            Err(MediaError::InvalidDigit(_))
        ));
        assert!(parse_info("application/dtmf", &[0xFF, 0xFE]).is_err());
    }
}
