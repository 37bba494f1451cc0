//! Authentication of registry (`/v2/`) requests, the Docker token endpoint (`/token`) and signed
//! layer downloads (`/berth/layers/...`).
//!
//! A client proves itself with the password GetAuthorizationToken returns (`docker login
//! --username AWS`), sent as Basic auth on every request, or exchanged at `/token` for a bearer
//! token carrying the scopes asked for. Which of the two the 401 challenge advertises is a setting;
//! both are always accepted.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_service::{AuditEvent, Error, Principal, Scope, Who};
use serde_json::json;

use crate::error::{ApiError, error_response};
use crate::{AppState, Challenge};

/// What a `/v2/` request needs.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// `/v2/` itself: any valid credential.
    Login,
    /// The catalog: a credential (each repository is filtered by what the caller may see).
    Catalog,
    /// An `ecr:` action on a repository, and the Docker token scope action that carries it.
    Repo { name: String, action: &'static str, scope: &'static str },
}

/// The ECR action each OCI request performs, as ECR maps them.
fn need(method: &Method, path: &str) -> Option<Need> {
    let rest = path.strip_prefix("/v2/")?;
    if rest.is_empty() {
        return Some(Need::Login);
    }
    if rest == "_catalog" {
        return Some(Need::Catalog);
    }
    let target = crate::oci::parse_path(rest)?;
    use crate::oci::Target::*;
    let read = matches!(*method, Method::GET | Method::HEAD);
    let (action, scope) = match (&target, method) {
        (Manifest(..), _) if read => ("ecr:BatchGetImage", "pull"),
        (Manifest(..), &Method::DELETE) => ("ecr:BatchDeleteImage", "delete"),
        (Manifest(..), _) => ("ecr:PutImage", "push"),
        (Blob(..), &Method::HEAD) => ("ecr:BatchCheckLayerAvailability", "pull"),
        (Blob(..), &Method::GET) => ("ecr:GetDownloadUrlForLayer", "pull"),
        (Blob(..), _) => ("ecr:BatchDeleteImage", "delete"),
        (Uploads(..), &Method::POST) => ("ecr:InitiateLayerUpload", "push"),
        (Uploads(..), &Method::PUT) => ("ecr:CompleteLayerUpload", "push"),
        (Uploads(..), _) => ("ecr:UploadLayerPart", "push"),
        (Tags(..), _) => ("ecr:ListImages", "pull"),
        (Referrers(..), _) => ("ecr:ListImageReferrers", "pull"),
    };
    Some(Need::Repo { name: target.name().to_string(), action, scope })
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

/// The caller a request's credentials name: `Ok(None)` without credentials, the bearer token's
/// scopes when it is one.
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

/// [`credentials`], refused while this address is throttled, and counted when they fail.
async fn checked_credentials(
    st: &AppState,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
) -> Result<(Option<Principal>, Option<Vec<Scope>>), Error> {
    if headers.get(header::AUTHORIZATION).is_none() {
        return Ok((None, None));
    }
    let throttle = st.registry.throttle();
    throttle.check(ip, None)?;
    credentials(st, headers).await.inspect_err(|_| throttle.failed(ip, None))
}

fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|v| v.to_str().ok())
}

fn who(principal: Option<Principal>, req: &Request) -> Who {
    Who { principal, source_ip: crate::peer_ip(req.extensions()), secure: false, ..Default::default() }
}

/// Base URL clients reached us at, for the token realm.
fn base_url(st: &AppState, headers: &HeaderMap) -> String {
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => {
            let proto = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
            format!("{proto}://{host}")
        }
        None => st.registry.settings().public_url.trim_end_matches('/').to_string(),
    }
}

fn challenge(st: &AppState, req: &Request, message: &str) -> Response {
    let base = base_url(st, req.headers());
    let value = match st.options.challenge {
        Challenge::Basic => format!("Basic realm=\"{base}/\",service=\"berth\""),
        Challenge::Bearer => {
            let service = st.registry.settings().public_host().to_string();
            let mut v = format!("Bearer realm=\"{base}/token\",service=\"{service}\"");
            match need(req.method(), req.uri().path()) {
                // Ask for pull and push together on writes, as Distribution does.
                Some(Need::Repo { name, scope, .. }) => {
                    let actions = if scope == "pull" { "pull".to_string() } else { format!("pull,{scope}") };
                    v.push_str(&format!(",scope=\"repository:{name}:{actions}\""));
                }
                Some(Need::Catalog) => v.push_str(",scope=\"registry:catalog:*\""),
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

/// Middleware on `/v2/`: decides each request by its credentials, the ECR action it performs
/// and the repository's policy. Unauthenticated requests that no policy allows get a challenge;
/// authenticated ones a 403.
pub async fn require(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let registry = match st.registry.registry_for_host(host(req.headers())).await {
        Ok(r) => r,
        Err(e) => return ApiError(e).into_response(),
    };
    // Requests name repositories as clients know them; decisions are about their keys.
    let mut need = need(req.method(), req.uri().path());
    if let Some(Need::Repo { name, .. }) = &mut need {
        *name = st.registry.repo_key(&registry, name);
    }
    req.extensions_mut().insert(RegistryId(registry));
    let had_credentials = req.headers().contains_key(header::AUTHORIZATION);
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let source_ip = crate::peer_ip(req.extensions());
    let name = match &need {
        Some(Need::Repo { action, .. }) => action.trim_start_matches("ecr:"),
        Some(Need::Catalog) => "Catalog",
        _ => "Login",
    };
    let mut out = Outcome::default();
    let res = decide(&st, req, next, need.as_ref(), &mut out).await;
    // Every write and every refusal is recorded (a credential-less ping is just the handshake);
    // allowed reads are not, so a pull builds no event.
    let refused = !out.allowed && (had_credentials || name != "Login");
    if write || refused {
        let error = out.error.or_else(|| (res.status().as_u16() >= 400).then(|| res.status().as_u16().to_string()));
        let event = AuditEvent {
            name: name.to_string(),
            principal: out.principal.map(|p| p.arn),
            source_ip,
            resource: match &need {
                Some(Need::Repo { name, .. }) => Some(st.registry.repository_arn(name)),
                _ => None,
            },
            allowed: out.allowed,
            error,
            detail: None,
        };
        st.registry.audit(event).await;
    }
    res
}

/// The registry (account id) a `/v2/` request is for, from its host name.
#[derive(Clone)]
pub(crate) struct RegistryId(pub String);

/// The caller of a catalog request: the listing holds only what it may see.
#[derive(Clone)]
pub(crate) struct Viewer(pub Who);

/// What authorization decided, for the audit log.
#[derive(Default)]
struct Outcome {
    allowed: bool,
    principal: Option<Principal>,
    error: Option<String>,
}

/// Runs the request if allowed.
async fn decide(st: &AppState, req: Request, next: Next, need: Option<&Need>, out: &mut Outcome) -> Response {
    let (principal, scopes) = match checked_credentials(st, req.headers(), crate::peer_ip(req.extensions())).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e.to_string());
            return match e {
                e @ Error::Throttled(_) => ApiError(e).into_response(),
                e => challenge(st, &req, &e.to_string()),
            };
        }
    };
    let anonymous = principal.is_none();
    if anonymous && scopes.is_none() && st.options.anonymous {
        out.allowed = true;
        return next.run(req).await;
    }
    let (name, action, scope) = match need {
        None => {
            out.allowed = true;
            out.principal = principal;
            return next.run(req).await;
        }
        Some(Need::Login | Need::Catalog) if anonymous => {
            return challenge(st, &req, "authentication required");
        }
        Some(Need::Login) => {
            out.allowed = true;
            out.principal = principal;
            return next.run(req).await;
        }
        Some(Need::Catalog) => {
            out.allowed = true;
            out.principal = principal.clone();
            let mut req = req;
            let w = who(principal, &req);
            req.extensions_mut().insert(Viewer(w));
            return next.run(req).await;
        }
        Some(Need::Repo { name, action, scope }) => (name, *action, *scope),
    };
    if let Some(scopes) = &scopes
        && !scopes.iter().any(|s| s.allows("repository", name, scope))
    {
        let msg = format!(
            "the token does not grant repository:{name}:{scope}: no policy allows it for this caller, or one denies it"
        );
        out.error = Some(msg.clone());
        out.principal = principal;
        return challenge(st, &req, &msg);
    }
    let w = who(principal, &req);
    if let Err(e) = st.registry.check_access(&w, action, name).await {
        out.error = Some(e.to_string());
        out.principal = w.principal;
        return match e {
            Error::AccessDenied(_) if anonymous => challenge(st, &req, "authentication required"),
            e => ApiError(e).into_response(),
        };
    }
    // A mount also reads the source repository: without pull there, upload instead.
    let registry = crate::oci::registry_of(st, &req);
    let req = match mount_source(&req) {
        Some(from)
            if berth_core::RepoName::parse(&from).is_err()
                || st
                    .registry
                    .check_access(&w, "ecr:GetDownloadUrlForLayer", &st.registry.repo_key(&registry, &from))
                    .await
                    .is_err() =>
        {
            without_mount(req)
        }
        _ => req,
    };
    out.allowed = true;
    out.principal = w.principal;
    next.run(req).await
}

fn mount_source(req: &Request) -> Option<String> {
    let q = req.uri().query()?;
    if !q.split('&').any(|kv| kv.starts_with("mount=")) {
        return None;
    }
    q.split('&').find_map(|kv| kv.strip_prefix("from=")).map(str::to_string)
}

fn without_mount(mut req: Request) -> Request {
    let uri = req.uri().clone();
    let path = uri.path().to_string();
    if let Ok(u) = path.parse() {
        *req.uri_mut() = u;
    }
    req
}

/// `GET /token?service=..&scope=..`: exchanges the Basic login for a bearer token.
pub async fn token(State(st): State<AppState>, req: Request) -> Response {
    let pairs: Vec<(String, String)> =
        Query::<Vec<(String, String)>>::try_from_uri(req.uri()).map(|q| q.0).unwrap_or_default();
    // Without credentials the token is anonymous: it carries what public repositories allow.
    let ip = crate::peer_ip(req.extensions());
    let throttle = st.registry.throttle();
    let login = basic_password(req.headers());
    if login.is_some()
        && let Err(e) = throttle.check(ip, None)
    {
        return ApiError(e).into_response();
    }
    let (principal, not_after) = match login {
        Some(Ok(pw)) => match st.registry.check_login(&pw).await {
            Ok((p, e)) => (Some(p), e),
            Err(e) => {
                throttle.failed(ip, None);
                return basic_401(&st, &req, &e.to_string());
            }
        },
        Some(Err(e)) => {
            throttle.failed(ip, None);
            return basic_401(&st, &req, &e.to_string());
        }
        None => (None, i64::MAX),
    };
    let requested: Vec<Scope> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(Scope::parse).collect::<Vec<_>>())
        .collect();
    let w = who(principal.clone(), &req);
    let registry = match st.registry.registry_for_host(host(req.headers())).await {
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
    let base = base_url(st, req.headers());
    let mut res = error_response(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{base}/token\",service=\"berth\"")) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// `GET /berth/layers/<name>/<digest>?expires=..&signature=..`: a layer by signed URL.
pub async fn download(State(st): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let q: HashMap<String, String> =
        Query::<HashMap<String, String>>::try_from_uri(req.uri()).map(|q| q.0).unwrap_or_default();
    let Some((name, digest)) = path.strip_prefix("/berth/layers/").and_then(|r| r.rsplit_once('/')) else {
        return error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint");
    };
    let (Some(expires), Some(sig)) = (q.get("expires"), q.get("signature")) else {
        return error_response(StatusCode::FORBIDDEN, "DENIED", "the URL must carry expires and signature");
    };
    if let Err(e) = st.registry.auth().check_download(name, digest, expires, sig) {
        return error_response(StatusCode::FORBIDDEN, "DENIED", &e.to_string());
    }
    let method = req.method().clone();
    crate::oci::get_blob(&st, name, digest, &method, req.headers()).await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_of_requests() {
        let n = |m: Method, p: &str| match need(&m, p) {
            Some(Need::Repo { name, action, scope }) => format!("{name} {action} {scope}"),
            other => format!("{other:?}"),
        };
        assert_eq!(n(Method::GET, "/v2/"), "Some(Login)");
        assert_eq!(n(Method::GET, "/v2/_catalog"), "Some(Catalog)");
        assert_eq!(n(Method::GET, "/v2/a/b/manifests/latest"), "a/b ecr:BatchGetImage pull");
        assert_eq!(n(Method::HEAD, "/v2/a/blobs/sha256:x"), "a ecr:BatchCheckLayerAvailability pull");
        assert_eq!(n(Method::GET, "/v2/a/blobs/sha256:x"), "a ecr:GetDownloadUrlForLayer pull");
        assert_eq!(n(Method::POST, "/v2/a/blobs/uploads/"), "a ecr:InitiateLayerUpload push");
        assert_eq!(n(Method::PATCH, "/v2/a/blobs/uploads/u1"), "a ecr:UploadLayerPart push");
        assert_eq!(n(Method::PUT, "/v2/a/blobs/uploads/u1"), "a ecr:CompleteLayerUpload push");
        assert_eq!(n(Method::PUT, "/v2/a/manifests/1"), "a ecr:PutImage push");
        assert_eq!(n(Method::DELETE, "/v2/a/manifests/sha256:x"), "a ecr:BatchDeleteImage delete");
        assert_eq!(n(Method::GET, "/v2/a/tags/list"), "a ecr:ListImages pull");
    }
}
