//! Authentication of registry (`/v2/`) requests, the Docker token endpoint (`/token`) and
//! `/metrics` with credentials.
//!
//! A client proves itself with the password GetAuthorizationToken returns (`docker login
//! --username AWS`), sent as Basic auth on every request, or exchanged at `/token` for a bearer
//! token. Either only says who the caller is: the service decides each request for that
//! [`Caller`] from the policies in force at that moment, never by what a token was issued for.
//! Which of the two the 401 challenge advertises is a setting; both are always accepted.

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_service::{AuditEvent, Caller, Error, Principal, Scope};
use serde_json::json;

use crate::error::{ApiError, Outcome, error_response};
use crate::request::{Endpoint, OciRequest, Resource};
use crate::state::{AppState, Challenge};

/// What a `/v2/` request is, as ECR maps OCI requests: for the audit log, and for the scope a
/// Bearer challenge asks for. (The service decides the action itself.)
#[derive(Debug, PartialEq, Eq)]
enum Operation {
    /// `/v2/` itself: the login handshake.
    Login,
    Catalog,
    /// An `ecr:` action on the request's repository, and the Docker token scope that carries it.
    Repo {
        action: &'static str,
        scope: &'static str,
    },
    /// A path no route serves.
    Nothing,
}

fn operation(method: &Method, endpoint: &Endpoint) -> Operation {
    let resource = match endpoint {
        Endpoint::Base => return Operation::Login,
        Endpoint::Catalog => return Operation::Catalog,
        Endpoint::Unknown => return Operation::Nothing,
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
    Operation::Repo { action, scope }
}

fn basic_password(headers: &HeaderMap) -> Option<Result<String, Error>> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let bad = || Error::unauthenticated("malformed Basic credentials".into());
    let decoded = match STANDARD.decode(b64.trim()).ok().and_then(|b| String::from_utf8(b).ok()) {
        Some(d) => d,
        None => return Some(Err(bad())),
    };
    Some(match decoded.split_once(':') {
        Some(("AWS", pw)) => Ok(pw.to_string()),
        Some((user, _)) => Err(Error::unauthenticated(format!(
            "unknown user {user:?}: log in as AWS with the password from `aws ecr get-login-password`"
        ))),
        None => Err(bad()),
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
}

/// The principal a request's credentials name (`Ok(None)`: no credentials, or an anonymous
/// token). A failure is counted against the address, and answered as throttled once that
/// address has failed too often; valid credentials are never throttled.
async fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
) -> Result<Option<Principal>, Error> {
    if headers.get(header::AUTHORIZATION).is_none() {
        return Ok(None);
    }
    let ids = st.registry.identities();
    let r = if let Some(token) = bearer(headers) {
        ids.check_bearer(token).await.map(|(p, _)| p)
    } else {
        match basic_password(headers) {
            Some(pw) => match pw {
                Ok(pw) => ids.check_login(&pw).await.map(|(p, _)| Some(p)),
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    };
    r.map_err(|e| st.registry.throttle().refuse(ip, e))
}

/// The host a request was sent to: its Host header, or in HTTP/2 the URI's authority.
fn host(req: &Request) -> Option<&str> {
    req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or(req.uri().authority().map(|a| a.as_str()))
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

/// A 401 with the challenge the registry advertises (for a Bearer one, the scope this request
/// needs: pull and push together on writes, as Distribution asks).
fn challenge(st: &AppState, base: &str, op: &Operation, repo: Option<&str>, message: &str) -> Response {
    let value = match st.options.challenge {
        Challenge::Basic => format!("Basic realm=\"{base}/\",service=\"berth\""),
        Challenge::Bearer => {
            let service = st.registry.settings().public_host().to_string();
            let mut v = format!("Bearer realm=\"{base}/token\",service=\"{service}\"");
            match (op, repo) {
                (Operation::Repo { scope, .. }, Some(r)) => {
                    let actions = if *scope == "pull" { "pull".to_string() } else { format!("pull,{scope}") };
                    v.push_str(&format!(",scope=\"repository:{r}:{actions}\""));
                }
                (Operation::Catalog, _) => v.push_str(",scope=\"registry:catalog:*\""),
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

/// A note a handler leaves on its response for the audit log (a mount's outcome).
#[derive(Debug, Clone)]
pub(crate) struct AuditDetail(pub String);

/// Middleware on `/v2/`: parses the request once ([`OciRequest`]) and authenticates it, handing
/// both (the very values the service then decides on) to the handler. A refusal of an anonymous
/// caller becomes a challenge; of an authenticated one, a 403. Every write and every refusal is
/// recorded in the audit log.
pub async fn require(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let registry = match st.registry.repositories().registry_for_host(host(&req)).await {
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
    let source_ip = crate::state::peer_ip(req.extensions());
    let secure = crate::serve::is_secure(req.extensions());
    let op = operation(req.method(), &parsed.endpoint);
    let name = match &op {
        Operation::Repo { action, .. } => action.trim_start_matches("ecr:"),
        Operation::Catalog => "Catalog",
        _ => "Login",
    };
    let resource = parsed.repo().map(|r| st.registry.repository_arn(r.key.as_str()));
    let client_name = parsed.repo().map(|r| r.name.to_string());
    let base = base_url(&st, &req);
    let mut event = AuditEvent { name: name.to_string(), source_ip, resource, ..Default::default() };
    let principal = match authenticate(&st, req.headers(), source_ip).await {
        Ok(p) => p,
        Err(e) => {
            event.error = Some(e.to_string());
            st.registry.audit(event).await;
            return match e {
                e @ Error::Throttled(_) => ApiError(e).into_response(),
                e => challenge(&st, &base, &op, client_name.as_deref(), &e.to_string()),
            };
        }
    };
    event.principal = principal.as_ref().map(|p| p.arn.clone());
    let mut caller = Caller::new(principal).from(source_ip, secure);
    // Another registry's replication says where it comes from (region/registry id).
    caller.replication_from = req
        .headers()
        .get(berth_service::caller::REPLICATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            v.split_once('/')
                .is_some_and(|(r, id)| !r.is_empty() && id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string);
    let anonymous = caller.is_anonymous();
    // A client logs in at the base; the catalog lists what the caller may see: both need a
    // caller, unless the registry is open to anonymous callers.
    let open = st.registry.settings().allow_anonymous;
    if anonymous && !open && matches!(op, Operation::Login | Operation::Catalog) {
        if had_credentials || op != Operation::Login {
            event.error = Some("authentication required".into());
            st.registry.audit(event).await;
        }
        return challenge(&st, &base, &op, client_name.as_deref(), "authentication required");
    }
    req.extensions_mut().insert(parsed);
    req.extensions_mut().insert(caller);
    let mut res = next.run(req).await;
    let outcome = res.extensions().get::<Outcome>().cloned();
    let denied = outcome.as_ref().is_some_and(|o| o.denied);
    event.allowed = !denied;
    event.detail = res.extensions().get::<AuditDetail>().map(|d| d.0.clone());
    event.error =
        outcome.map(|o| o.error).or_else(|| (res.status().as_u16() >= 400).then(|| res.status().as_u16().to_string()));
    if denied && anonymous {
        res = challenge(&st, &base, &op, client_name.as_deref(), "authentication required");
    }
    // Every write and every refusal is recorded; allowed reads are not, so a pull builds no event.
    if write || denied {
        st.registry.audit(event).await;
    }
    res
}

/// `GET /token?service=..&scope=..`: exchanges the Basic login (or nothing) for a bearer token.
pub async fn token(State(st): State<AppState>, req: Request) -> Response {
    let pairs: Vec<(String, String)> =
        Query::<Vec<(String, String)>>::try_from_uri(req.uri()).map(|q| q.0).unwrap_or_default();
    // Without credentials the token is anonymous: requests with it are decided as anonymous.
    let ip = crate::state::peer_ip(req.extensions());
    let login = match basic_password(req.headers()) {
        Some(Ok(pw)) => Some(st.registry.identities().check_login(&pw).await),
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
    let registry = match st.registry.repositories().registry_for_host(host(&req)).await {
        Ok(r) => r,
        Err(e) => return ApiError(e).into_response(),
    };
    // Scopes name repositories as clients know them; grants are on keys, so a token for one
    // account's registry grants nothing in another's.
    let requested: Vec<Scope> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(Scope::parse).collect::<Vec<_>>())
        .filter_map(|mut s| {
            if s.kind == "repository" {
                berth_core::RepoName::parse(&s.name).ok()?;
                s.name = st.registry.repo_key(&registry, &s.name);
            }
            Some(s)
        })
        .collect();
    let caller = Caller::new(principal).from(ip, crate::serve::is_secure(req.extensions()));
    let (token, expires_in) = match st.registry.logins().bearer_token(&caller, requested, not_after).await {
        Ok(t) => t,
        Err(e) => return ApiError(e).into_response(),
    };
    let issued_at = berth_core::time::format_rfc3339(berth_service::tokens::now_secs());
    let body = json!({ "token": token, "access_token": token, "expires_in": expires_in, "issued_at": issued_at });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
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
    let ip = crate::state::peer_ip(req.extensions());
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
        return crate::state::metrics(State(st)).await;
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
        return Ok(st.registry.identities().check_bearer(t).await?.0);
    }
    let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(b64) = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")) else { return Ok(None) };
    let bad = || Error::unauthenticated("malformed Basic credentials".into());
    let decoded = STANDARD.decode(b64.trim()).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
    let (user, secret) = decoded.split_once(':').ok_or_else(bad)?;
    if user == "AWS" {
        return Ok(Some(st.registry.identities().check_login(secret).await?.0));
    }
    match st.registry.identities().signing_key(user, None).await? {
        Some((expected, p)) if berth_crypto::constant_time_eq(expected.as_bytes(), secret.as_bytes()) => Ok(Some(p)),
        _ => Err(Error::unauthenticated("unknown access key or wrong secret".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_of_requests() {
        let n = |m: Method, p: &str| {
            let parsed =
                OciRequest::parse(&m, p, None, "000000000000".into(), |n: &berth_core::RepoName| n.clone()).unwrap();
            match operation(&m, &parsed.endpoint) {
                Operation::Repo { action, scope } => format!("{} {action} {scope}", parsed.repo().unwrap().name),
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
