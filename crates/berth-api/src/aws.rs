//! What the AWS APIs on `POST /` (ECR's JSON, IAM's and STS's Query) share: one SigV4
//! authentication and one audit event per call.
//!
//! The body is read only after the `Authorization` header is present, well formed, and names an
//! access key that exists; it is read within a per-operation limit and within a budget shared by
//! every request whose signature is not yet checked (so unsigned floods cannot fill memory); a
//! client that goes quiet mid-body is cut off by the server's body timeout. A failed authentication counts against
//! the address; past the limit its failures are answered as throttled. Valid signatures always
//! pass.

use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use berth_crypto::sigv4;
use berth_service::{AuditEvent, Error, Principal};
use futures_util::TryStreamExt;

use crate::state::{AppState, UNVERIFIED_BUDGET};

/// Why a call was refused before it ran.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A signature problem, worded as AWS words it.
    Sig(sigv4::SigError),
    /// A service error (an unknown or inactive key, throttling, a malformed body).
    Service(Error),
}

/// A verified call: who signed it, and the payload that was signed.
pub(crate) struct Signed {
    pub principal: Principal,
    pub payload: Vec<u8>,
}

/// The headers as text, for signature checks; `None` if a value is not ASCII. HTTP/2 sends the
/// host as the `:authority` (in the URI), which clients sign as `host`.
fn header_pairs(parts: &Parts) -> Option<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect::<Option<_>>()?;
    if !parts.headers.contains_key(axum::http::header::HOST)
        && let Some(a) = parts.uri.authority()
    {
        out.push(("host".into(), a.as_str().to_string()));
    }
    Some(out)
}

/// A failure, counted against the address: answered as throttled once it failed too often.
fn refuse(st: &AppState, ip: Option<std::net::IpAddr>, r: Refusal) -> Refusal {
    match st.registry.throttle().failure(ip) {
        Some(throttled) => Refusal::Service(throttled),
        None => r,
    }
}

/// Authenticates a signed `POST /` and reads its body (at most `limit` bytes). `service` names
/// the SigV4 service the payload must be signed for (the Query APIs know it from the `Action`).
pub(crate) async fn authenticate(
    st: &AppState,
    parts: &Parts,
    body: Body,
    limit: usize,
    service: impl FnOnce(&[u8]) -> &'static str,
) -> Result<Signed, Refusal> {
    let ip = crate::state::peer_ip(&parts.extensions);
    let Some(headers) = header_pairs(parts) else {
        return Err(refuse(st, ip, Refusal::Sig(sigv4::SigError::Incomplete("header values must be ASCII".into()))));
    };
    let hdrs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut sreq = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &hdrs,
        body: &[],
    };
    // Presence and form first: nothing of the body is read for a request that cannot be signed.
    let auth = sigv4::parse_authorization(&sreq).map_err(|e| refuse(st, ip, Refusal::Sig(e)))?;
    let token = hdrs.iter().find(|(n, _)| n.eq_ignore_ascii_case("x-amz-security-token")).map(|(_, v)| *v);
    let (secret, principal) = match st.registry.identities().signing_key(&auth.access_key_id, token).await {
        Ok(Some(k)) => k,
        Ok(None) => return Err(refuse(st, ip, Refusal::Sig(sigv4::SigError::UnknownKey))),
        Err(e @ Error::Internal(_)) => return Err(Refusal::Service(e)),
        Err(e) => return Err(refuse(st, ip, Refusal::Service(e))),
    };
    // The budget is held until the signature is checked.
    let (body, _unverified) = read_body(st, parts, body, limit).await.map_err(Refusal::Service)?;
    sreq.body = &body;
    let s = st.registry.settings();
    let service = service(&body);
    // IAM is global: the SDKs sign it for us-east-1 whatever the configured region.
    let region = if service == "iam" && auth.region == "us-east-1" { "us-east-1" } else { &s.region };
    let now = berth_service::tokens::now_secs();
    match sigv4::verify(&auth, &secret, &sreq, &sigv4::Expect { region, service, now }) {
        Ok(payload) => Ok(Signed { principal, payload }),
        Err(e) => Err(refuse(st, ip, Refusal::Sig(e))),
    }
}

/// Reads a body of at most `limit` bytes, holding its size in the unverified budget until the
/// signature is checked (a body without `Content-Length` reserves the whole limit).
async fn read_body<'a>(
    st: &'a AppState,
    parts: &Parts,
    body: Body,
    limit: usize,
) -> Result<(Vec<u8>, tokio::sync::SemaphorePermit<'a>), Error> {
    let declared =
        parts.headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared
        && n > limit as u64
    {
        return Err(Error::bad_request(format!(
            "the request body is {n} bytes; this operation takes at most {limit} bytes"
        )));
    }
    let reserve = declared.map_or(limit, |n| n as usize).clamp(1, UNVERIFIED_BUDGET);
    // Waiting briefly for room smooths bursts; a server already holding its budget in unverified
    // bodies refuses more rather than grow.
    let permit = tokio::time::timeout(Duration::from_secs(5), st.body_budget.0.acquire_many(reserve as u32))
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            Error::Throttled("the server is reading too many request bodies at once; retry shortly".into())
        })?;
    // A stalled body ends in an error from the server's body timeout (see `serve`).
    let mut out = Vec::with_capacity(reserve.min(1 << 20));
    let mut stream = body.into_data_stream();
    while let Some(chunk) =
        stream.try_next().await.map_err(|e| Error::bad_request(format!("reading the request body: {e}")))?
    {
        if out.len() + chunk.len() > limit || out.len() + chunk.len() > reserve {
            return Err(Error::bad_request(format!(
                "the request body is larger than {} bytes",
                if declared.is_some() { reserve } else { limit }
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, permit))
}

/// A response with the request id AWS SDKs log (`x-amzn-requestid`).
pub(crate) fn with_request_id(mut res: axum::response::Response, id: &str) -> axum::response::Response {
    if let Ok(v) = axum::http::HeaderValue::from_str(id) {
        res.headers_mut().insert("x-amzn-requestid", v);
    }
    res
}

/// A successful AWS JSON 1.1 answer.
pub(crate) fn json_response(v: &serde_json::Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ct = axum::http::HeaderValue::from_static("application/x-amz-json-1.1");
    ([(axum::http::header::CONTENT_TYPE, ct)], v.to_string()).into_response()
}

/// The audit event of a call named `name`, before it is decided.
pub(crate) fn event(name: &str, parts: &Parts) -> AuditEvent {
    AuditEvent { name: name.to_string(), source_ip: crate::state::peer_ip(&parts.extensions), ..Default::default() }
}
