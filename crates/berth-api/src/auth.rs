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
use berth_service::{Error, Principal, Scope};
use serde_json::json;

use crate::error::error_response;
use crate::{AppState, Challenge};

/// What a request needs: a repository action, the catalog, or just any valid credential.
fn required_scope(method: &Method, path: &str, query: Option<&str>) -> Option<Scope> {
    let rest = path.strip_prefix("/v2/")?;
    if rest.is_empty() {
        return None;
    }
    if rest == "_catalog" {
        return Some(Scope { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] });
    }
    let name = crate::oci::repo_of_path(rest)?;
    let action = match *method {
        Method::GET | Method::HEAD => "pull",
        Method::DELETE => "delete",
        _ => "push",
    };
    let _ = query;
    Some(Scope { kind: "repository".into(), name: name.to_string(), actions: vec![action.into()] })
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

/// Checks the credentials on a `/v2/` request against what it needs.
fn authorize(st: &AppState, req: &Request) -> Result<Principal, Error> {
    let need = required_scope(req.method(), req.uri().path(), req.uri().query());
    if let Some(token) = bearer(req.headers()) {
        let (p, scopes) = st.registry.auth().check_bearer(token)?;
        return match need {
            Some(n) if !scopes.iter().any(|s| s.allows(&n.kind, &n.name, &n.actions[0])) => {
                Err(Error::Unauthorized(format!("the token does not grant {}:{}:{}", n.kind, n.name, n.actions[0])))
            }
            _ => Ok(p),
        };
    }
    match basic_password(req.headers()) {
        Some(pw) => Ok(st.registry.auth().check_login(&pw?)?.0),
        None => Err(Error::Unauthorized("authentication required".into())),
    }
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
            if let Some(s) = required_scope(req.method(), req.uri().path(), req.uri().query()) {
                // Ask for pull and push together on writes, as Distribution does.
                let actions =
                    if s.actions[0] == "pull" { "pull".to_string() } else { format!("pull,{}", s.actions[0]) };
                v.push_str(&format!(",scope=\"{}:{}:{actions}\"", s.kind, s.name));
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

/// Middleware on `/v2/`: lets authenticated requests through, answers the rest with a challenge.
pub async fn require(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if st.options.anonymous {
        return next.run(req).await;
    }
    match authorize(&st, &req) {
        Ok(_) => next.run(req).await,
        Err(e) => challenge(&st, &req, &e.to_string()),
    }
}

/// `GET /token?service=..&scope=..`: exchanges the Basic login for a bearer token.
pub async fn token(State(st): State<AppState>, req: Request) -> Response {
    let pairs: Vec<(String, String)> =
        Query::<Vec<(String, String)>>::try_from_uri(req.uri()).map(|q| q.0).unwrap_or_default();
    let (principal, not_after) = match basic_password(req.headers()) {
        Some(Ok(pw)) => match st.registry.auth().check_login(&pw) {
            Ok(v) => v,
            Err(e) => return basic_401(&st, &req, &e.to_string()),
        },
        Some(Err(e)) => return basic_401(&st, &req, &e.to_string()),
        None => return basic_401(&st, &req, "log in with `docker login --username AWS` first"),
    };
    let scopes: Vec<Scope> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(Scope::parse).collect::<Vec<_>>())
        .collect();
    // The root principal may do everything it asks; per-principal policies come with IAM.
    let (token, expires_in) = st.registry.auth().issue_bearer(&principal, scopes, not_after);
    let issued_at = berth_crypto::time::format_rfc3339(berth_service::auth::now_secs());
    let body = json!({ "token": token, "access_token": token, "expires_in": expires_in, "issued_at": issued_at });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
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
    fn scopes_of_requests() {
        let s =
            |m: Method, p: &str| required_scope(&m, p, None).map(|s| format!("{}:{}:{}", s.kind, s.name, s.actions[0]));
        assert_eq!(s(Method::GET, "/v2/"), None);
        assert_eq!(s(Method::GET, "/v2/_catalog").unwrap(), "registry:catalog:*");
        assert_eq!(s(Method::GET, "/v2/a/b/manifests/latest").unwrap(), "repository:a/b:pull");
        assert_eq!(s(Method::HEAD, "/v2/a/blobs/sha256:x").unwrap(), "repository:a:pull");
        assert_eq!(s(Method::POST, "/v2/a/blobs/uploads/").unwrap(), "repository:a:push");
        assert_eq!(s(Method::PATCH, "/v2/a/blobs/uploads/u1").unwrap(), "repository:a:push");
        assert_eq!(s(Method::DELETE, "/v2/a/manifests/sha256:x").unwrap(), "repository:a:delete");
        assert_eq!(s(Method::GET, "/v2/a/tags/list").unwrap(), "repository:a:pull");
    }
}
