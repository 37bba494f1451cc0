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
use axum::extract::Request;
use axum::http::request::Parts;
use axum::response::Response;
use berth_crypto::sigv4;
use berth_service::{AuditEvent, Caller, Error, Principal};
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

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

/// An AWS JSON 1.1 API on `POST /` other than ECR's (KMS, Secrets Manager): the operation named
/// by `X-Amz-Target: <prefix><Operation>`, signed with SigV4 for `service`, decided by the
/// service for its caller, errors worded by the API's own functions (in `error.rs`).
pub(crate) struct JsonApi {
    pub target_prefix: &'static str,
    /// The SigV4 service name, also the audit events' prefix.
    pub service: &'static str,
    /// The request field naming the resource, for the audit event.
    pub resource: &'static str,
    pub error_type: fn(&Error) -> &'static str,
    /// An error response of a type, with a message.
    pub respond: fn(&str, &str) -> Response,
    pub service_error: fn(&Error) -> Response,
    /// The error type for an operation Berth does not serve, and where what it serves is listed.
    pub unsupported: &'static str,
    pub doc: &'static str,
    /// The operation's answer; None: not an operation Berth serves.
    pub dispatch: Dispatch,
}

/// A JSON API's operations: (state, caller, operation, input) to its answer.
pub(crate) type Dispatch = for<'x> fn(&'x AppState, &'x Caller, &'x str, &'x Value) -> BoxFuture<'x, Answer>;
pub(crate) type Answer = Result<Option<Value>, Error>;

impl JsonApi {
    /// Whether a `POST /` is a call of this API.
    pub fn is_for(&self, req: &Request) -> bool {
        req.headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(self.target_prefix))
    }

    pub async fn handle(&self, st: &AppState, req: Request) -> Response {
        let request_id = uuid::Uuid::new_v4().to_string();
        with_request_id(self.handle_inner(st, req).await, &request_id)
    }

    async fn handle_inner(&self, st: &AppState, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let op = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix(self.target_prefix))
            .unwrap_or_default()
            .to_string();
        let mut event = event(&format!("{}:{op}", self.service), &parts);
        let ip = event.source_ip;
        let service = self.service;
        let signed = match authenticate(st, &parts, body, 1024 * 1024, |_| service).await {
            Ok(s) => s,
            Err(Refusal::Sig(e)) => {
                event.error = Some(format!("{}: {e}", e.aws_type()));
                st.registry.audit(event).await;
                return (self.respond)(e.aws_type(), &e.to_string());
            }
            Err(Refusal::Service(e)) => {
                event.error = Some(format!("{}: {e}", (self.error_type)(&e)));
                st.registry.audit(event).await;
                return (self.service_error)(&e);
            }
        };
        event.principal = Some(signed.principal.arn.clone());
        let secure = crate::serve::is_secure(&parts.extensions);
        let who = Caller::principal(signed.principal).from(ip, secure);
        let input: Value = if signed.payload.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            match serde_json::from_slice(&signed.payload) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => return (self.respond)("SerializationException", "the request body must be a JSON object"),
                Err(e) => return (self.respond)("SerializationException", &format!("malformed JSON: {e}")),
            }
        };
        event.resource = input.get(self.resource).and_then(Value::as_str).map(str::to_string);
        let result = (self.dispatch)(st, &who, &op, &input).await;
        event.allowed = !matches!(&result, Err(e) if e.is_denied());
        event.error = match &result {
            Ok(Some(_)) => None,
            Ok(None) => Some(self.unsupported.into()),
            Err(e) => Some((self.error_type)(e).to_string()),
        };
        st.registry.audit(event).await;
        match result {
            Ok(Some(v)) => json_response(&v),
            Ok(None) => (self.respond)(
                self.unsupported,
                &format!("Berth does not support the {} operation {op:?} (see {})", self.service, self.doc),
            ),
            Err(e) => (self.service_error)(&e),
        }
    }
}

// ---- reading a JSON request's fields ----

pub(crate) fn validation(field: &str, reason: &str) -> Error {
    Error::Invalid(berth_service::error::Invalid {
        kind: berth_service::error::InvalidKind::Validation,
        field: Some(field.to_string()),
        value: None,
        reason: reason.to_string(),
    })
}

/// An optional string field.
pub(crate) fn s<'a>(v: &'a Value, field: &str) -> Result<Option<&'a str>, Error> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(validation(field, "must be a string")),
    }
}

/// A string field that must be there.
pub(crate) fn req<'a>(v: &'a Value, field: &str) -> Result<&'a str, Error> {
    s(v, field)?.ok_or_else(|| validation(field, "Member must not be null"))
}

pub(crate) fn int(v: &Value, field: &str) -> Result<Option<i64>, Error> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n.as_i64().map(Some).ok_or_else(|| validation(field, "must be an integer")),
    }
}

pub(crate) fn flag(v: &Value, field: &str) -> Result<bool, Error> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(validation(field, "must be a boolean")),
    }
}

/// A time as the JSON protocols send it: seconds since the epoch.
pub(crate) fn ts(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}
