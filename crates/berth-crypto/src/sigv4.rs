//! AWS Signature Version 4: verification of signed requests (the `Authorization` header form the
//! AWS CLI and SDKs send), and a signer that shares the canonicalization (for tests and tools).
//!
//! Verification is two steps so the caller can look the secret up in between:
//! [`parse_authorization`] reads the header, then [`verify`] checks scope, clock and signature.

use aws_lc_rs::hmac as mac;
use sha2::{Digest as _, Sha256};

use berth_core::time::{format_amz_date, parse_amz_date};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// How far a request's `X-Amz-Date` may be from the server clock, as AWS allows.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request was not accepted. [`SigError::aws_type`] names the exception AWS answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Incomplete(String),
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret \
         Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
    #[error("{0}")]
    Invalid(String),
}

impl SigError {
    pub fn aws_type(&self) -> &'static str {
        match self {
            SigError::Missing => "MissingAuthenticationTokenException",
            SigError::Incomplete(_) => "IncompleteSignatureException",
            SigError::UnknownKey => "UnrecognizedClientException",
            SigError::Mismatch | SigError::Invalid(_) => "InvalidSignatureException",
        }
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` from the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case, in the order given (SigV4 requires them sorted).
    pub signed_headers: Vec<String>,
    pub signature: Vec<u8>,
}

impl Authorization {
    fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// A request as it arrived: the raw (still percent-encoded) path and query, every header, the body.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header_values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }
}

/// Reads the `Authorization` header. `Err(Missing)` when there is none.
pub fn parse_authorization(req: &Request) -> Result<Authorization, SigError> {
    let Some(h) = req.header("authorization") else { return Err(SigError::Missing) };
    let Some(rest) = h.trim().strip_prefix(ALGORITHM) else {
        return Err(SigError::Incomplete(format!(
            "Authorization header requires the {ALGORITHM} algorithm; found {:?}",
            h.split_whitespace().next().unwrap_or("")
        )));
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |what: &str| {
        SigError::Incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={}",
            h.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
        ))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" || parts[0].is_empty() {
        return Err(SigError::Incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/aws4_request, \
             got '{credential}'"
        )));
    }
    let signature = hex::decode(signature)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| SigError::Incomplete("Signature must be 64 hexadecimal characters".into()))?;
    Ok(Authorization {
        access_key_id: parts[0].to_string(),
        date: parts[1].to_string(),
        region: parts[2].to_string(),
        service: parts[3].to_string(),
        signed_headers: signed.split(';').map(|s| s.trim().to_ascii_lowercase()).collect(),
        signature,
    })
}

/// What the server expects of every request.
pub struct Expect<'a> {
    pub region: &'a str,
    pub service: &'a str,
    /// Server clock, Unix seconds.
    pub now: i64,
}

/// Checks `auth` (from [`parse_authorization`]) against the request with the key's `secret`.
/// Returns the payload: the body itself, or for the streaming (`aws-chunked`) form, the
/// concatenated chunks once every chunk signature has been checked.
pub fn verify(auth: &Authorization, secret: &str, req: &Request, expect: &Expect) -> Result<Vec<u8>, SigError> {
    if auth.service != expect.service {
        return Err(SigError::Invalid(format!(
            "Credential should be scoped to correct service: '{}'. ",
            expect.service
        )));
    }
    if auth.region != expect.region {
        return Err(SigError::Invalid(format!(
            "Credential should be scoped to a valid region, not '{}'. ",
            auth.region
        )));
    }
    check_signed_headers(auth, req)?;
    let amz_date = req.header("x-amz-date").ok_or_else(|| {
        SigError::Incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into(),
        )
    })?;
    let t = parse_amz_date(amz_date)
        .ok_or_else(|| SigError::Incomplete(format!("X-Amz-Date must be YYYYMMDD'T'HHMMSS'Z', not '{amz_date}'")))?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigError::Invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', \
             from '{amz_date}'.",
            auth.date,
            &amz_date[..8]
        )));
    }
    if t < expect.now - MAX_SKEW_SECS {
        return Err(SigError::Invalid(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            format_amz_date(expect.now - MAX_SKEW_SECS),
            format_amz_date(expect.now)
        )));
    }
    if t > expect.now + MAX_SKEW_SECS {
        return Err(SigError::Invalid(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            format_amz_date(expect.now + MAX_SKEW_SECS),
            format_amz_date(expect.now)
        )));
    }
    let content_sha = req.header("x-amz-content-sha256");
    let payload_hash = match content_sha {
        // Berth's APIs act on the body: a request whose body the signature does not cover could
        // be replayed with another body. (Only S3 takes unsigned payloads, and Berth has no S3.)
        Some(v) if v == UNSIGNED_PAYLOAD => {
            return Err(SigError::Invalid(
                "UNSIGNED-PAYLOAD is not accepted here: sign the payload (x-amz-content-sha256 must be its SHA-256)"
                    .into(),
            ));
        }
        Some(v) if v == STREAMING_PAYLOAD => v.to_string(),
        Some(v) => {
            let actual = hex::encode(Sha256::digest(req.body));
            if !v.eq_ignore_ascii_case(&actual) {
                return Err(SigError::Invalid(
                    "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
                ));
            }
            actual
        }
        None => hex::encode(Sha256::digest(req.body)),
    };
    let canonical = canonical_request(req, &auth.signed_headers, &payload_hash)?;
    let scope = auth.scope();
    let to_sign = string_to_sign(amz_date, &scope, &canonical);
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    mac::verify(&mac::Key::new(mac::HMAC_SHA256, &key), to_sign.as_bytes(), &auth.signature)
        .map_err(|_| SigError::Mismatch)?;
    if content_sha == Some(STREAMING_PAYLOAD) {
        return decode_chunked(req.body, &key, amz_date, &scope, &auth.signature);
    }
    Ok(req.body.to_vec())
}

/// Headers that decide what a request does: `host` and `x-amz-date` always, and the others
/// whenever the request carries them (the operation in `x-amz-target`, the body's type, which
/// selects the API, the session token, the payload hash). An unsigned one could be swapped
/// under a valid signature.
const MUST_SIGN: [(&str, &str); 5] = [
    ("x-amz-date", "X-Amz-Date"),
    ("x-amz-target", "X-Amz-Target"),
    ("content-type", "Content-Type"),
    ("x-amz-security-token", "X-Amz-Security-Token"),
    ("x-amz-content-sha256", "X-Amz-Content-Sha256"),
];

fn check_signed_headers(auth: &Authorization, req: &Request) -> Result<(), SigError> {
    let signed = |name: &str| auth.signed_headers.iter().any(|h| h == name);
    let required =
        |shown: &str| SigError::Incomplete(format!("'{shown}' must be a 'SignedHeader' in the AWS Authorization."));
    if !signed("host") {
        return Err(required("Host"));
    }
    for (name, shown) in MUST_SIGN {
        if req.header(name).is_some() && !signed(name) {
            return Err(required(shown));
        }
    }
    Ok(())
}

/// Signs a request: returns the `Authorization` header value. The request must already carry
/// `x-amz-date` (and every header named in `signed_headers`).
pub fn sign(
    req: &Request,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    signed_headers: &[&str],
) -> Result<String, SigError> {
    let amz_date = req.header("x-amz-date").ok_or_else(|| SigError::Incomplete("x-amz-date is required".into()))?;
    let date = &amz_date[..8.min(amz_date.len())];
    let mut names: Vec<String> = signed_headers.iter().map(|h| h.to_ascii_lowercase()).collect();
    names.sort();
    let payload_hash = match req.header("x-amz-content-sha256") {
        Some(v) => v.to_string(),
        None => hex::encode(Sha256::digest(req.body)),
    };
    let canonical = canonical_request(req, &names, &payload_hash)?;
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let key = signing_key(secret, date, region, service);
    let sig = hex::encode(hmac(&key, string_to_sign(amz_date, &scope, &canonical).as_bytes()));
    Ok(format!("{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={sig}", names.join(";")))
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())))
}

pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let tag = mac::sign(&mac::Key::new(mac::HMAC_SHA256, key), msg);
    tag.as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

fn canonical_request(req: &Request, signed_headers: &[String], payload_hash: &str) -> Result<String, SigError> {
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    // Services other than S3 sign the path URI-encoded once more than it was sent.
    let path = if req.path.is_empty() { "/" } else { req.path };
    out.push_str(&uri_encode(path, false));
    out.push('\n');
    out.push_str(&canonical_query(req.query.unwrap_or("")));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = req.header_values(name).map(normalize_header_value).collect();
        if values.is_empty() {
            return Err(SigError::Mismatch);
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

fn normalize_header_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn canonical_query(q: &str) -> String {
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k), true), uri_encode(&percent_decode(v), true))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// RFC 3986 encoding as SigV4 defines it; `/` is kept unless `encode_slash`.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes an `aws-chunked` body (`<hex-size>;chunk-signature=<sig>\r\n<data>\r\n`..., ending
/// with a zero-size chunk), checking each chunk's signature, which chains from the previous one.
fn decode_chunked(body: &[u8], key: &[u8; 32], amz_date: &str, scope: &str, seed: &[u8]) -> Result<Vec<u8>, SigError> {
    let bad = |why: &str| SigError::Invalid(format!("malformed aws-chunked body: {why}"));
    let empty_hash = hex::encode(Sha256::digest(b""));
    let mut prev = hex::encode(seed);
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("chunk header"))?;
        let header = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("chunk header"))?;
        let (size, sig) = header.split_once(";chunk-signature=").ok_or_else(|| bad("chunk-signature missing"))?;
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("chunk size"))?;
        rest = &rest[line_end + 2..];
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err(bad("chunk shorter than its size"));
        }
        let data = &rest[..size];
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{prev}\n{empty_hash}\n{}",
            hex::encode(Sha256::digest(data))
        );
        let expected = hex::decode(sig.trim()).map_err(|_| bad("chunk signature"))?;
        mac::verify(&mac::Key::new(mac::HMAC_SHA256, key), to_sign.as_bytes(), &expected)
            .map_err(|_| SigError::Mismatch)?;
        prev = sig.trim().to_string();
        out.extend_from_slice(data);
        rest = &rest[size + 2..];
        if size == 0 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_sigv4() {
        assert_eq!(uri_encode("/a b/c~d", false), "/a%20b/c~d");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("x=a%20b"), "x=a%20b");
    }
}
