//! Authentication of registry (`/v2/`) requests, the Docker token endpoint (`/token`) and signed
//! layer downloads (`/berth/layers/...`).
//!
//! A client proves itself with the password GetAuthorizationToken returns (`docker login
//! --username AWS`), sent as Basic auth on every request, or exchanged at `/token` for a bearer
//! token. Either only identifies the caller: each request is decided by the policies in force at
//! that moment, never by what a token was issued for. Which of the two the 401 challenge advertises
//! is a setting; both are always accepted.

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_core::RepoName;
use berth_service::{AuditEvent, Error, Principal, Scope, Who};
use serde_json::json;

use crate::error::{ApiError, error_response};
use crate::request::{Endpoint, OciRequest, Resource};
use crate::{AppState, Challenge};

/// What a `/v2/` request needs.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// `/v2/` itself: any valid credential.
    Login,
    /// The catalog: a credential (each repository is filtered by what the caller may see).
    Catalog,
    /// An `ecr:` action on the request's repository, and the Docker token scope action that
    /// carries it.
    Repo { action: &'static str, scope: &'static str },
    /// A path no route serves: nothing to decide.
    Nothing,
}

/// The ECR action each OCI request performs, as ECR maps them.
fn need(method: &Method, endpoint: &Endpoint) -> Need {
    let resource = match endpoint {
        Endpoint::Base => return Need::Login,
        Endpoint::Catalog => return Need::Catalog,
        Endpoint::Unknown => return Need::Nothing,
        Endpoint::Repo(r) => &r.resource,
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    let (action, scope) = match (resource, method) {
        (Resource::Manifest(_), _) if read => ("ecr:BatchGetImage", "pull"),
        (Resource::Manifest(_), &Method::DELETE) => ("ecr:BatchDeleteImage", "delete"),
        (Resource::Manifest(_), _) => ("ecr:PutImage", "push"),
        (Resource::Blob(_), &Method::HEAD) => ("ecr:BatchCheckLayerAvailability", "pull"),
        (Resource::Blob(_), &Method::GET) => ("ecr:GetDownloadUrlForLayer", "pull"),
        (Resource::Blob(_), _) => ("ecr:BatchDeleteImage", "delete"),
        (Resource::Uploads, &Method::POST) => ("ecr:InitiateLayerUpload", "push"),
        (Resource::Uploads | Resource::Upload(_), &Method::PUT) => ("ecr:CompleteLayerUpload", "push"),
        (Resource::Uploads | Resource::Upload(_), _) => ("ecr:UploadLayerPart", "push"),
        (Resource::Tags, _) => ("ecr:ListImages", "pull"),
        (Resource::Referrers(_), _) => ("ecr:ListImageReferrers", "pull"),
    };
    Need::Repo { action, scope }
}

fn basic_password(headers: &HeaderMap) -> Option<Result<String, Error>> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let bad = || Error::Unauthorized("malformed Basic credentials".into());
    let decoded = match STANDARD.decode(b64.trim()).ok().and_then(|b| String::from_utf8(b).ok()) {
        Some(d) => d,
        None => return Some(Err(bad())),
    };
    Some(match decoded.split_once(':') {
        Some(("AWS", pw)) => Ok(pw.to_string()),
        Some((user, _)) => Err(Error::Unauthorized(format!(
            "unknown user {user:?}: log in as AWS with the password from `aws ecr get-login-password`"
        ))),
        None => Err(bad()),
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
}

/// The caller a request's credentials name: `Ok(None)` without credentials; a bearer token's
/// scopes are returned but decide nothing (requests are decided by the policies in force).
async fn credentials(st: &AppState, headers: &HeaderMap) -> Result<(Option<Principal>, Option<Vec<Scope>>), Error> {
    if let Some(token) = bearer(headers) {
        let (p, scopes) = st.registry.check_bearer(token).await?;
        return Ok((p, Some(scopes)));
    }
    match basic_password(headers) {
        Some(pw) => Ok((Some(st.registry.check_login(&pw?).await?.0), None)),
        None => Ok((None, None)),
    }
}

/// [`credentials`]; a failure is counted against the address, and answered as throttled once
/// that address has failed too often. Valid credentials are never throttled.
async fn checked_credentials(
    st: &AppState,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
) -> Result<(Option<Principal>, Option<Vec<Scope>>), Error> {
    if headers.get(header::AUTHORIZATION).is_none() {
        return Ok((None, None));
    }
    credentials(st, headers).await.map_err(|e| st.registry.throttle().refuse(ip, e))
}

/// The host a request was sent to: its Host header, or in HTTP/2 the URI's authority.
fn host(req: &Request) -> Option<&str> {
    req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or(req.uri().authority().map(|a| a.as_str()))
}

fn who(principal: Option<Principal>, req: &Request) -> Who {
    let ext = req.extensions();
    Who { principal, source_ip: crate::peer_ip(ext), secure: crate::serve::is_secure(ext), ..Default::default() }
}

/// Base URL clients reached us at, for the token realm.
fn base_url(st: &AppState, req: &Request) -> String {
    let headers = req.headers();
    match host(req) {
        Some(host) => {
            let direct = if crate::serve::is_secure(req.extensions()) { "https" } else { "http" };
            let proto = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or(direct);
            format!("{proto}://{host}")
        }
        None => st.registry.settings().public_url.trim_end_matches('/').to_string(),
    }
}

fn challenge(st: &AppState, req: &Request, parsed: &OciRequest, message: &str) -> Response {
    let base = base_url(st, req);
    let value = match st.options.challenge {
        Challenge::Basic => format!("Basic realm=\"{base}/\",service=\"berth\""),
        Challenge::Bearer => {
            let service = st.registry.settings().public_host().to_string();
            let mut v = format!("Bearer realm=\"{base}/token\",service=\"{service}\"");
            match (need(req.method(), &parsed.endpoint), parsed.repo()) {
                // Ask for pull and push together on writes, as Distribution does.
                (Need::Repo { scope, .. }, Some(r)) => {
                    let actions = if scope == "pull" { "pull".to_string() } else { format!("pull,{scope}") };
                    v.push_str(&format!(",scope=\"repository:{}:{actions}\"", r.name));
                }
                (Need::Catalog, _) => v.push_str(",scope=\"registry:catalog:*\""),
                _ => {}
            }
            v
        }
    };
    let mut res = error_response(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// Middleware on `/v2/`: parses the request once ([`OciRequest`]), decides it by its
/// credentials, the ECR action it performs and the repository's policy, and hands the parsed
/// request to the handler. Unauthenticated requests that no policy allows get a challenge;
/// authenticated ones a 403.
pub async fn require(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let registry = match st.registry.registry_for_host(host(&req)).await {
        Ok(r) => r,
        Err(e) => return ApiError(e).into_response(),
    };
    // Requests name repositories as clients know them; decisions are about their keys.
    let account = (registry != st.registry.settings().registry_id).then(|| registry.clone());
    let parsed = OciRequest::parse(req.method(), req.uri().path(), req.uri().query(), registry, |n| {
        n.clone().in_account(account.as_deref())
    });
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => return ApiError(e).into_response(),
    };
    let had_credentials = req.headers().contains_key(header::AUTHORIZATION);
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let source_ip = crate::peer_ip(req.extensions());
    let need = need(req.method(), &parsed.endpoint);
    let name = match &need {
        Need::Repo { action, .. } => action.trim_start_matches("ecr:"),
        Need::Catalog => "Catalog",
        _ => "Login",
    };
    let resource = parsed.repo().map(|r| st.registry.repository_arn(r.key.as_str()));
    let mut out = Outcome::default();
    let res = decide(&st, &mut req, parsed, &need, &mut out).await;
    let res = match res {
        None => next.run(req).await,
        Some(refusal) => refusal,
    };
    // Every write and every refusal is recorded (a credential-less ping is just the handshake);
    // allowed reads are not, so a pull builds no event.
    let refused = !out.allowed && (had_credentials || name != "Login");
    if write || refused {
        let error = out.error.or_else(|| (res.status().as_u16() >= 400).then(|| res.status().as_u16().to_string()));
        let event = AuditEvent {
            name: name.to_string(),
            principal: out.principal.map(|p| p.arn),
            source_ip,
            resource,
            allowed: out.allowed,
            error,
            detail: out.detail,
        };
        st.registry.audit(event).await;
    }
    res
}

/// What authorization decided, for the audit log.
#[derive(Default)]
struct Outcome {
    allowed: bool,
    principal: Option<Principal>,
    error: Option<String>,
    detail: Option<String>,
}

/// Decides the request; when allowed, puts the parsed request (the very values decided on) into
/// its extensions for the handler. `Some` is the refusal to send.
async fn decide(
    st: &AppState,
    req: &mut Request,
    mut parsed: OciRequest,
    need: &Need,
    out: &mut Outcome,
) -> Option<Response> {
    let (principal, scopes) = match checked_credentials(st, req.headers(), crate::peer_ip(req.extensions())).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e.to_string());
            return Some(match e {
                e @ Error::Throttled(_) => ApiError(e).into_response(),
                e => challenge(st, req, &parsed, &e.to_string()),
            });
        }
    };
    let anonymous = principal.is_none();
    let allow = |req: &mut Request, parsed: OciRequest, out: &mut Outcome, principal: Option<Principal>| {
        out.allowed = true;
        out.principal = principal;
        req.extensions_mut().insert(parsed);
        None
    };
    if anonymous && scopes.is_none() && st.options.anonymous {
        return allow(req, parsed, out, None);
    }
    let action = match need {
        Need::Nothing => return allow(req, parsed, out, principal),
        Need::Login | Need::Catalog if anonymous => {
            return Some(challenge(st, req, &parsed, "authentication required"));
        }
        Need::Login => return allow(req, parsed, out, principal),
        Need::Catalog => {
            parsed.viewer = Some(who(principal.clone(), req));
            return allow(req, parsed, out, principal);
        }
        Need::Repo { action, .. } => *action,
    };
    // A bearer token says who is calling, not what it may do: every request is decided against
    // the policies in force now (so a token obtained for pull serves a push its holder may make,
    // and a permission detached a moment ago is refused on the next request).
    let key = parsed.repo().map(|r| r.key.as_str().to_string()).unwrap_or_default();
    let w = who(principal, req);
    if let Err(e) = st.registry.check_access(&w, action, &key).await {
        out.error = Some(e.to_string());
        out.principal = w.principal;
        return Some(match e {
            Error::AccessDenied(_) if anonymous => challenge(st, req, &parsed, "authentication required"),
            e => ApiError(e).into_response(),
        });
    }
    // A mount also reads the source repository: without pull there, the handler starts a plain
    // upload instead. The source is the one decoded value the handler would read.
    if *req.method() == Method::POST
        && let Some(from) = parsed.query.get("mount").and(parsed.query.get("from"))
    {
        let source =
            RepoName::parse(from).ok().map(|n| n.in_account(berth_core::split_repo_key(&key).0).as_str().to_string());
        let readable = match &source {
            Some(s) => st.registry.check_access(&w, "ecr:GetDownloadUrlForLayer", s).await.is_ok(),
            None => false,
        };
        let shown = source.as_deref().map_or(from, |s| berth_core::split_repo_key(s).1);
        out.detail = Some(if readable {
            format!("mount from {shown}")
        } else {
            format!("mount from {shown} refused (no pull permission there): uploading instead")
        });
        if !readable {
            parsed.query.remove("mount");
            parsed.query.remove("from");
        }
    }
    allow(req, parsed, out, w.principal)
}

/// `GET /token?service=..&scope=..`: exchanges the Basic login for a bearer token.
pub async fn token(State(st): State<AppState>, req: Request) -> Response {
    let pairs: Vec<(String, String)> =
        Query::<Vec<(String, String)>>::try_from_uri(req.uri()).map(|q| q.0).unwrap_or_default();
    // Without credentials the token is anonymous: it carries what public repositories allow.
    let ip = crate::peer_ip(req.extensions());
    let login = match basic_password(req.headers()) {
        Some(Ok(pw)) => Some(st.registry.check_login(&pw).await),
        Some(Err(e)) => Some(Err(e)),
        None => None,
    };
    let (principal, not_after) = match login {
        Some(Ok((p, e))) => (Some(p), e),
        // A valid login always gets its token; failures count against the address only.
        Some(Err(e)) => {
            return match st.registry.throttle().refuse(ip, e) {
                e @ Error::Throttled(_) => ApiError(e).into_response(),
                e => basic_401(&st, &req, &e.to_string()),
            };
        }
        None => (None, i64::MAX),
    };
    let requested: Vec<Scope> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(Scope::parse).collect::<Vec<_>>())
        .collect();
    let w = who(principal.clone(), &req);
    let registry = match st.registry.registry_for_host(host(&req)).await {
        Ok(r) => r,
        Err(e) => return ApiError(e).into_response(),
    };
    let mut granted = Vec::new();
    for mut s in requested {
        // Scopes are granted on keys: a token for one account's registry grants nothing in another's.
        if s.kind == "repository" {
            if berth_core::RepoName::parse(&s.name).is_err() {
                continue;
            }
            s.name = st.registry.repo_key(&registry, &s.name);
        }
        if let Some(g) = grant(&st, &w, s).await {
            granted.push(g);
        }
    }
    let (token, expires_in) = st.registry.auth().issue_bearer(principal.as_ref(), granted, not_after);
    let issued_at = berth_core::time::format_rfc3339(berth_service::auth::now_secs());
    let body = json!({ "token": token, "access_token": token, "expires_in": expires_in, "issued_at": issued_at });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The part of scope `s` the caller's policies allow.
async fn grant(st: &AppState, w: &Who, mut s: Scope) -> Option<Scope> {
    match s.kind.as_str() {
        "registry" if s.name == "catalog" && w.principal.is_some() => Some(s),
        "repository" => {
            let mut keep = Vec::new();
            let wanted: Vec<String> = if s.actions.iter().any(|a| a == "*") {
                vec!["pull".into(), "push".into(), "delete".into()]
            } else {
                s.actions.clone()
            };
            for a in wanted {
                let action = match a.as_str() {
                    "pull" => "ecr:BatchGetImage",
                    "push" => "ecr:PutImage",
                    "delete" => "ecr:BatchDeleteImage",
                    _ => continue,
                };
                if st.registry.check_access(w, action, &s.name).await.is_ok() {
                    keep.push(a);
                }
            }
            s.actions = keep;
            (!s.actions.is_empty()).then_some(s)
        }
        _ => None,
    }
}

fn basic_401(st: &AppState, req: &Request, message: &str) -> Response {
    let base = base_url(st, req);
    let mut res = error_response(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{base}/token\",service=\"berth\"")) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// `/metrics` for callers with credentials (`metrics_auth`): an access key as Basic user and
/// password (what a Prometheus `basic_auth` holds), the `docker login` password, or a bearer
/// token. Failures count against the address like any other.
pub async fn metrics_with_credentials(State(st): State<AppState>, req: Request) -> Response {
    let ip = crate::peer_ip(req.extensions());
    let ok = match metrics_caller(&st, req.headers()).await {
        Ok(p) => p.is_some(),
        Err(e) => {
            if let e @ Error::Throttled(_) = st.registry.throttle().refuse(ip, e) {
                return ApiError(e).into_response();
            }
            false
        }
    };
    if ok {
        return crate::metrics(State(st)).await;
    }
    let mut res = error_response(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "metrics need credentials: Basic with an access key id and secret, or a login password or token",
    );
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"berth metrics\""));
    res
}

async fn metrics_caller(st: &AppState, headers: &HeaderMap) -> Result<Option<Principal>, Error> {
    if let Some(t) = bearer(headers) {
        return Ok(st.registry.check_bearer(t).await?.0);
    }
    let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(b64) = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")) else { return Ok(None) };
    let bad = || Error::Unauthorized("malformed Basic credentials".into());
    let decoded = STANDARD.decode(b64.trim()).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
    let (user, secret) = decoded.split_once(':').ok_or_else(bad)?;
    if user == "AWS" {
        return Ok(Some(st.registry.check_login(secret).await?.0));
    }
    match st.registry.signing_key(user, None).await? {
        Some((expected, p)) if berth_crypto::constant_time_eq(expected.as_bytes(), secret.as_bytes()) => Ok(Some(p)),
        _ => Err(Error::Unauthorized("unknown access key or wrong secret".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_of_requests() {
        let n = |m: Method, p: &str| {
            let parsed = OciRequest::parse(&m, p, None, "000000000000".into(), |n: &RepoName| n.clone()).unwrap();
            match need(&m, &parsed.endpoint) {
                Need::Repo { action, scope } => format!("{} {action} {scope}", parsed.repo().unwrap().name),
                other => format!("{other:?}"),
            }
        };
        assert_eq!(n(Method::GET, "/v2/"), "Login");
        assert_eq!(n(Method::GET, "/v2/_catalog"), "Catalog");
        assert_eq!(n(Method::GET, "/v2/a/b/manifests/latest"), "a/b ecr:BatchGetImage pull");
        assert_eq!(n(Method::HEAD, "/v2/a/blobs/sha256:x"), "a ecr:BatchCheckLayerAvailability pull");
        assert_eq!(n(Method::GET, "/v2/a/blobs/sha256:x"), "a ecr:GetDownloadUrlForLayer pull");
        assert_eq!(n(Method::POST, "/v2/a/blobs/uploads/"), "a ecr:InitiateLayerUpload push");
        assert_eq!(n(Method::PATCH, "/v2/a/blobs/uploads/u1"), "a ecr:UploadLayerPart push");
        assert_eq!(n(Method::PUT, "/v2/a/blobs/uploads/u1"), "a ecr:CompleteLayerUpload push");
        assert_eq!(n(Method::PUT, "/v2/a/manifests/1"), "a ecr:PutImage push");
        assert_eq!(n(Method::DELETE, "/v2/a/manifests/sha256:x"), "a ecr:BatchDeleteImage delete");
        assert_eq!(n(Method::GET, "/v2/a/tags/list"), "a ecr:ListImages pull");
        assert_eq!(n(Method::GET, "/v2/a/b/c"), "Nothing");
    }
}
