//! The SigV4 verifier against requests signed by AWS's own signer (`aws-sigv4`): what it signs
//! must verify, and any change to what was signed must not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use berth_crypto::sigv4::{self, Expect, SigError};

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories";

struct Signed {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Signed {
    fn verify_at(&self, now: i64, region: &str, service: &str) -> Result<Vec<u8>, SigError> {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let req = sigv4::Request {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &headers,
            body: &self.body,
        };
        let auth = sigv4::parse_authorization(&req)?;
        if auth.access_key_id != AKID {
            return Err(SigError::UnknownKey);
        }
        sigv4::verify(&auth, SECRET, &req, &Expect { region, service, now })
    }

    fn verify(&self) -> Result<Vec<u8>, SigError> {
        self.verify_at(now(), "us-east-1", "ecr")
    }

    fn header_mut(&mut self, name: &str) -> &mut String {
        &mut self.headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)).unwrap().1
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn oracle_sign(
    uri: &str,
    body: &[u8],
    signable: SignableBody,
    checksum: bool,
    at: SystemTime,
    region: &str,
    service: &str,
) -> Signed {
    let identity: Identity = Credentials::new(AKID, SECRET, None, None, "test").into();
    let mut settings = SigningSettings::default();
    if checksum {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(at)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let base = [
        ("host", "127.0.0.1:5000"),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", TARGET),
        ("user-agent", "aws-cli/1.45   test"),
    ];
    let signable_req = SignableRequest::new("POST", uri, base.iter().copied(), signable).unwrap();
    let (instructions, _) = sign(signable_req, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method("POST").uri(uri);
    for (n, v) in base {
        req = req.header(n, v);
    }
    let mut req = req.body(body.to_vec()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    let (parts, body) = req.into_parts();
    Signed {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string())).collect(),
        body,
    }
}

/// `body` signed at `at` for `region`/`service`, hashing the body (no x-amz-content-sha256).
fn signed_for(body: &[u8], at: SystemTime, region: &str, service: &str) -> Signed {
    oracle_sign("http://127.0.0.1:5000/", body, SignableBody::Bytes(body), false, at, region, service)
}

fn signed(body: &[u8]) -> Signed {
    signed_for(body, SystemTime::now(), "us-east-1", "ecr")
}

#[test]
fn valid_requests_verify() {
    let body = br#"{"repositoryNames":["my-app"]}"#;
    assert_eq!(signed(body).verify().unwrap(), body);
    assert_eq!(signed(b"").verify().unwrap(), b"");
    // With x-amz-content-sha256, as the CLI sends for some services.
    let s = oracle_sign(
        "http://127.0.0.1:5000/",
        body,
        SignableBody::Bytes(body),
        true,
        SystemTime::now(),
        "us-east-1",
        "ecr",
    );
    assert!(s.headers.iter().any(|(n, _)| n == "x-amz-content-sha256"));
    assert_eq!(s.verify().unwrap(), body);
    // Paths and queries that need encoding.
    let s = oracle_sign(
        "http://127.0.0.1:5000/a%20b/c?z=1&a=x%2Fy&a=b",
        body,
        SignableBody::Bytes(body),
        false,
        SystemTime::now(),
        "us-east-1",
        "ecr",
    );
    assert_eq!(s.verify().unwrap(), body);
}

#[test]
fn unsigned_payload_is_refused() {
    // The body would not be covered: a captured request could be replayed with another body.
    let body = b"{}";
    let s = oracle_sign(
        "http://127.0.0.1:5000/",
        body,
        SignableBody::UnsignedPayload,
        true,
        SystemTime::now(),
        "us-east-1",
        "ecr",
    );
    let e = s.verify().unwrap_err();
    assert!(e.to_string().contains("UNSIGNED-PAYLOAD"), "{e}");
}

#[test]
fn headers_that_decide_the_request_must_be_signed() {
    let body = br#"{"repositoryNames":["a"]}"#;
    // Signed by our own signer with a chosen header list (AWS's signer always signs them all).
    let sign_with = |names: &[&str], extra: &[(&str, &str)]| {
        let date = berth_core::time::format_amz_date(now());
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), "127.0.0.1:5000".into()),
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            ("x-amz-date".into(), date),
            ("x-amz-target".into(), TARGET.into()),
        ];
        headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let req = sigv4::Request { method: "POST", path: "/", query: None, headers: &h, body };
        let auth = sigv4::sign(&req, AKID, SECRET, "us-east-1", "ecr", names).unwrap();
        headers.push(("authorization".into(), auth));
        Signed { method: "POST".into(), path: "/".into(), query: None, headers, body: body.to_vec() }
    };
    let all = ["content-type", "host", "x-amz-date", "x-amz-target"];
    assert!(sign_with(&all, &[]).verify().is_ok());
    for (left_out, shown) in [
        ("x-amz-target", "X-Amz-Target"),
        ("content-type", "Content-Type"),
        ("host", "Host"),
        ("x-amz-date", "X-Amz-Date"),
    ] {
        let names: Vec<&str> = all.iter().copied().filter(|n| *n != left_out).collect();
        let e = sign_with(&names, &[]).verify().unwrap_err();
        assert_eq!(e.aws_type(), "IncompleteSignatureException", "{left_out}");
        assert!(e.to_string().contains(&format!("'{shown}' must be a 'SignedHeader'")), "{e}");
    }
    // A session token sent but not signed.
    let e = sign_with(&all, &[("x-amz-security-token", "tok")]).verify().unwrap_err();
    assert!(e.to_string().contains("X-Amz-Security-Token"), "{e}");
    // The swap the unsigned target allowed: same signature, another operation.
    let mut s = sign_with(&["content-type", "host", "x-amz-date"], &[]);
    *s.header_mut("x-amz-target") = "AmazonEC2ContainerRegistry_V20150921.DescribeImages".into();
    assert!(s.verify().is_err());
}

#[test]
fn chunked_payload_checks_every_chunk() {
    let chunks: [&[u8]; 3] = [b"{\"repositoryName\":", b"\"my-app\"}", b""];
    let at = SystemTime::now();
    let mut s = oracle_sign(
        "http://127.0.0.1:5000/",
        b"",
        SignableBody::Precomputed(sigv4::STREAMING_PAYLOAD.into()),
        true,
        at,
        "us-east-1",
        "ecr",
    );
    let auth = s.headers.iter().find(|(n, _)| n == "authorization").unwrap().1.clone();
    let mut running = auth.rsplit("Signature=").next().unwrap().to_string();
    let identity: Identity = Credentials::new(AKID, SECRET, None, None, "test").into();
    let params: v4::SigningParams<'_, ()> = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("ecr")
        .time(at)
        .settings(())
        .build()
        .unwrap();
    let mut body = Vec::new();
    for c in chunks {
        let sig = v4::sign_chunk(&bytes::Bytes::copy_from_slice(c), &running, &params).unwrap().into_parts().1;
        body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
        body.extend_from_slice(c);
        body.extend_from_slice(b"\r\n");
        running = sig;
    }
    s.body = body.clone();
    assert_eq!(s.verify().unwrap(), b"{\"repositoryName\":\"my-app\"}");
    // One altered byte inside a chunk.
    let pos = body.windows(6).position(|w| w == b"my-app").unwrap();
    s.body[pos] = b'M';
    assert_eq!(s.verify().unwrap_err(), SigError::Mismatch);
}

#[test]
fn tampering_is_rejected() {
    let body = br#"{"repositoryName":"my-app"}"#;
    let mut s = signed(body);
    s.body = br#"{"repositoryName":"evil"}"#.to_vec();
    assert_eq!(s.verify().unwrap_err(), SigError::Mismatch);

    let mut s = signed(body);
    *s.header_mut("x-amz-target") = "AmazonEC2ContainerRegistry_V20150921.DeleteRepository".into();
    assert_eq!(s.verify().unwrap_err(), SigError::Mismatch);

    let mut s = signed(body);
    *s.header_mut("host") = "other:5000".into();
    assert_eq!(s.verify().unwrap_err(), SigError::Mismatch);

    let mut s = signed(body);
    s.method = "PUT".into();
    assert_eq!(s.verify().unwrap_err(), SigError::Mismatch);

    let mut s = signed(body);
    let auth = s.header_mut("authorization");
    let last = auth.pop().unwrap();
    auth.push(if last == '0' { '1' } else { '0' });
    assert_eq!(s.verify().unwrap_err(), SigError::Mismatch);

    // An unsigned header may change: it was not signed.
    let mut s = signed(body);
    *s.header_mut("user-agent") = "other".into();
    assert!(s.verify().is_ok());

    // A signed header removed.
    let mut s = signed(body);
    s.headers.retain(|(n, _)| n != "x-amz-target");
    assert_eq!(s.verify().unwrap_err(), SigError::Mismatch);

    // A content hash that disagrees with the body.
    let mut s = oracle_sign(
        "http://127.0.0.1:5000/",
        body,
        SignableBody::Bytes(body),
        true,
        SystemTime::now(),
        "us-east-1",
        "ecr",
    );
    s.body.push(b' ');
    assert!(matches!(s.verify().unwrap_err(), SigError::Invalid(m) if m.contains("x-amz-content-sha256")));
}

#[test]
fn wrong_key_scope_or_clock_is_rejected() {
    let body = b"{}";
    let mut s = signed(body);
    *s.header_mut("authorization") = s.header_mut("authorization").replace(AKID, "AKIAUNKNOWNKEY000000");
    assert_eq!(s.verify().unwrap_err(), SigError::UnknownKey);

    let s = signed_for(body, SystemTime::now(), "eu-west-1", "ecr");
    let e = s.verify().unwrap_err();
    assert_eq!(e.aws_type(), "InvalidSignatureException");
    assert!(e.to_string().contains("valid region, not 'eu-west-1'"), "{e}");

    let s = signed_for(body, SystemTime::now(), "us-east-1", "s3");
    assert!(s.verify().unwrap_err().to_string().contains("correct service: 'ecr'"));

    let old = SystemTime::now() - Duration::from_secs(16 * 60);
    let s = signed_for(body, old, "us-east-1", "ecr");
    let e = s.verify().unwrap_err();
    assert!(e.to_string().starts_with("Signature expired:"), "{e}");
    // 14 minutes off is still accepted, both ways.
    let s = signed_for(body, SystemTime::now() - Duration::from_secs(14 * 60), "us-east-1", "ecr");
    assert!(s.verify().is_ok());
    let s = signed_for(body, SystemTime::now() + Duration::from_secs(14 * 60), "us-east-1", "ecr");
    assert!(s.verify().is_ok());
    let s = signed_for(body, SystemTime::now() + Duration::from_secs(16 * 60), "us-east-1", "ecr");
    assert!(s.verify().unwrap_err().to_string().starts_with("Signature not yet current:"));

    // No Authorization at all, or a malformed one.
    let mut s = signed(body);
    s.headers.retain(|(n, _)| n != "authorization");
    assert_eq!(s.verify().unwrap_err(), SigError::Missing);
    let mut s = signed(body);
    *s.header_mut("authorization") = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ecr".into();
    assert_eq!(s.verify().unwrap_err().aws_type(), "IncompleteSignatureException");
}

#[test]
fn own_signer_matches_the_oracle() {
    let body = br#"{"maxResults":5}"#;
    let s = signed(body);
    let headers: Vec<(&str, &str)> =
        s.headers.iter().filter(|(n, _)| n != "authorization").map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let req = sigv4::Request { method: "POST", path: "/", query: None, headers: &headers, body };
    let ours =
        sigv4::sign(&req, AKID, SECRET, "us-east-1", "ecr", &["content-type", "host", "x-amz-date", "x-amz-target"])
            .unwrap();
    let theirs = &s.headers.iter().find(|(n, _)| n == "authorization").unwrap().1;
    assert_eq!(&ours, theirs);
}
