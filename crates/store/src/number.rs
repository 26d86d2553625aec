//! Calling-number normalisation to E.164 and caller identification from SIP facts.
//!
//! A small hand-written normaliser (no metadata tables): NANP (+1), UK (+44) and China (+86)
//! national formats for the configured default region, and any `+`/international-prefix
//! number for other countries (length-checked only).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A phone number in E.164 form (`+` and 8 to 15 digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164(String);

impl TryFrom<String> for E164 {
    type Error = NumberError;

    /// Accepts only international form (`+...`).
    fn try_from(s: String) -> Result<Self, NumberError> {
        if !s.starts_with('+') {
            return Err(NumberError::BadFormat);
        }
        international(&s[1..])
    }
}

impl From<E164> for String {
    fn from(n: E164) -> String {
        n.0
    }
}

impl E164 {
    /// The number as `+CCNNN...`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Normalise `raw` (national or international format, with separators, `tel:`/`sip:`
    /// prefixes) with `region` as the default country.
    pub fn parse(raw: &str, region: Region) -> Result<Self, NumberError> {
        normalize(raw, region)
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Default region for national-format numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    /// North American Numbering Plan (+1): US, Canada, ...
    Nanp,
    /// United Kingdom (+44).
    Gb,
    /// China (+86).
    Cn,
}

impl Region {
    /// Parse `US`, `CA`, `NANP`, `GB`, `UK`, `CN` (case-insensitive).
    pub fn from_code(code: &str) -> Option<Self> {
        match code.to_ascii_uppercase().as_str() {
            "US" | "CA" | "NANP" | "+1" => Some(Self::Nanp),
            "GB" | "UK" | "+44" => Some(Self::Gb),
            "CN" | "+86" => Some(Self::Cn),
            _ => None,
        }
    }

    fn international_prefix(self) -> &'static str {
        match self {
            Self::Nanp => "011",
            Self::Gb | Self::Cn => "00",
        }
    }
}

/// Why a number could not be normalised.
/// (A reason carried by `StoreError::InvalidNumber`, not an error type of its own.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// Nothing left after removing separators.
    Empty,
    /// Characters other than digits, `+` and separators.
    NotDigits,
    /// Wrong number of digits for the country.
    BadLength,
    /// Structure invalid for the country (e.g. NANP area code starting with 0/1).
    BadFormat,
}

impl fmt::Display for NumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty number",
            Self::NotDigits => "number contains characters other than digits",
            Self::BadLength => "wrong number of digits",
            Self::BadFormat => "not a valid number for its country",
        })
    }
}

fn strip_uri(raw: &str) -> &str {
    let mut s = raw.trim();
    for p in ["sip:", "sips:", "tel:", "SIP:", "TEL:"] {
        if let Some(r) = s.strip_prefix(p) {
            s = r;
        }
    }
    let s = s.split('@').next().unwrap_or(s);
    s.split(';').next().unwrap_or(s)
}

fn nanp_ok(ten: &str) -> bool {
    let b = ten.as_bytes();
    b.len() == 10 && (b'2'..=b'9').contains(&b[0]) && (b'2'..=b'9').contains(&b[3])
}

/// Chinese mobile numbers: `1[3-9]` + 9 digits (fixed lines in Beijing start with `10`).
fn is_cn_mobile(nsn: &str) -> bool {
    let b = nsn.as_bytes();
    b.len() >= 2 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1])
}

/// Validate an international number `cc+nsn` (digits only, no `+`).
fn international(digits: &str) -> Result<E164, NumberError> {
    if let Some(nsn) = digits.strip_prefix('1') {
        return if nsn.len() != 10 {
            Err(NumberError::BadLength)
        } else if nanp_ok(nsn) {
            Ok(E164(format!("+{digits}")))
        } else {
            Err(NumberError::BadFormat)
        };
    }
    if let Some(nsn) = digits.strip_prefix("44") {
        return if nsn.starts_with('0') {
            Err(NumberError::BadFormat)
        } else if !(9..=10).contains(&nsn.len()) {
            Err(NumberError::BadLength)
        } else {
            Ok(E164(format!("+{digits}")))
        };
    }
    if let Some(nsn) = digits.strip_prefix("86") {
        return if nsn.starts_with('0') {
            Err(NumberError::BadFormat)
        } else if (is_cn_mobile(nsn) && nsn.len() != 11) || !(9..=11).contains(&nsn.len()) {
            Err(NumberError::BadLength)
        } else {
            Ok(E164(format!("+{digits}")))
        };
    }
    if digits.starts_with('0') {
        return Err(NumberError::BadFormat);
    }
    if (8..=15).contains(&digits.len()) {
        Ok(E164(format!("+{digits}")))
    } else {
        Err(NumberError::BadLength)
    }
}

/// Normalise a calling number to E.164. See [`E164::parse`].
pub fn normalize(raw: &str, region: Region) -> Result<E164, NumberError> {
    let s = strip_uri(raw);
    let mut plus = false;
    let mut digits = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 || (digits.is_empty() && !plus) => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' => {}
            _ => return Err(NumberError::NotDigits),
        }
    }
    if digits.is_empty() {
        return Err(NumberError::Empty);
    }
    if plus {
        return international(&digits);
    }
    if let Some(rest) = digits.strip_prefix(region.international_prefix()) {
        return international(rest);
    }
    match region {
        Region::Nanp => {
            let ten = match digits.len() {
                10 => digits.as_str(),
                11 if digits.starts_with('1') => &digits[1..],
                _ => return Err(NumberError::BadLength),
            };
            if nanp_ok(ten) {
                Ok(E164(format!("+1{ten}")))
            } else {
                Err(NumberError::BadFormat)
            }
        }
        Region::Gb => {
            let Some(nsn) = digits.strip_prefix('0') else {
                return Err(NumberError::BadFormat);
            };
            international(&format!("44{nsn}"))
        }
        Region::Cn => {
            if let Some(nsn) = digits.strip_prefix('0') {
                // Fixed line with trunk prefix: 0 + area code + subscriber.
                international(&format!("86{nsn}"))
            } else if digits.len() == 11 && is_cn_mobile(&digits) {
                international(&format!("86{digits}"))
            } else {
                Err(NumberError::BadFormat)
            }
        }
    }
}

/// What the driver knows about the calling party of an INVITE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerInfo {
    /// User part of the From URI.
    pub from_user: String,
    /// User part of P-Asserted-Identity, if present.
    pub asserted_user: Option<String>,
    /// Value of the Privacy header, if present (e.g. `id`, `user;id`).
    pub privacy: Option<String>,
    /// The INVITE came from an allow-listed trunk whose P-Asserted-Identity is trusted.
    pub trusted_source: bool,
}

/// Who is calling, as far as recognition is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerIdentity {
    /// Withheld (`Privacy: id`/`user`) or an anonymous From user.
    Anonymous,
    /// A number that does not normalise.
    Invalid(NumberError),
    /// A usable number.
    Number(E164),
}

impl CallerIdentity {
    /// The number, when there is one to match customers with.
    pub fn number(&self) -> Option<&E164> {
        match self {
            Self::Number(n) => Some(n),
            _ => None,
        }
    }
}

const ANONYMOUS_USERS: &[&str] = &[
    "anonymous",
    "restricted",
    "unknown",
    "unavailable",
    "private",
    "withheld",
];

/// Identify the caller. P-Asserted-Identity is used only from a trusted source; a Privacy
/// header asking to hide the identity (`id`, `user`, `header`) makes the caller anonymous.
pub fn identify(info: &CallerInfo, region: Region) -> CallerIdentity {
    if let Some(p) = &info.privacy {
        let hides = p
            .split([';', ',', ' '])
            .map(|t| t.trim().to_ascii_lowercase())
            .any(|t| t == "id" || t == "user" || t == "header");
        if hides {
            return CallerIdentity::Anonymous;
        }
    }
    let user = match (&info.asserted_user, info.trusted_source) {
        (Some(pai), true) => pai.as_str(),
        _ => info.from_user.as_str(),
    };
    let bare = strip_uri(user).trim();
    if bare.is_empty() || ANONYMOUS_USERS.iter().any(|a| bare.eq_ignore_ascii_case(a)) {
        return CallerIdentity::Anonymous;
    }
    match normalize(bare, region) {
        Ok(n) => CallerIdentity::Number(n),
        Err(e) => CallerIdentity::Invalid(e),
    }
}
