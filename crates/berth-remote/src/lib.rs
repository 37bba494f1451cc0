//! Talking to other registries: the OCI distribution API as a client (blobs checked, mounted and
//! uploaded; manifests read and written; referrers), answering `WWW-Authenticate` challenges
//! (Basic, and Docker's token flow), and ECR's authorization token obtained with SigV4 for
//! destinations that are another Berth or ECR itself. Replication and pull-through caching in
//! `berth-service` decide what to copy; this crate only knows how to ask.

pub mod challenge;
pub mod creds;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

pub use creds::AwsKeys;

use challenge::Challenge;

/// What a remote registry did not do, worded for logs and statuses.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{what}: access denied ({status}): {message}")]
    Denied { what: String, status: u16, message: String },
    #[error("{what}: not found")]
    NotFound { what: String },
    #[error("{what}: the registry answered {status}: {message}")]
    Rejected { what: String, status: u16, message: String },
    #[error("{what}: {reason}")]
    Protocol { what: String, reason: String },
    #[error("credentials: {0}")]
    Credentials(String),
}

impl RemoteError {
    /// Whether trying again later may help (the registry was away or busy).
    pub fn retryable(&self) -> bool {
        match self {
            RemoteError::Unreachable { .. } | RemoteError::Protocol { .. } => true,
            RemoteError::Rejected { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            // Credentials may be fixed, or a policy changed, without a restart.
            RemoteError::Denied { .. } | RemoteError::Credentials(_) => true,
            RemoteError::NotFound { .. } => false,
        }
    }

    /// A short code for statuses (ECR's `failureCode` is free text).
    pub fn code(&self) -> &'static str {
        match self {
            RemoteError::Unreachable { .. } => "DESTINATION_UNREACHABLE",
            RemoteError::Denied { .. } | RemoteError::Credentials(_) => "ACCESS_DENIED",
            RemoteError::NotFound { .. } => "NOT_FOUND",
            RemoteError::Rejected { status: 429, .. } => "TOO_MANY_REQUESTS",
            RemoteError::Rejected { status, .. } if *status >= 500 => "DESTINATION_ERROR",
            RemoteError::Rejected { .. } => "REJECTED",
            RemoteError::Protocol { .. } => "PROTOCOL_ERROR",
        }
    }
}

pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// How to prove who we are to a registry.
#[derive(Clone)]
pub enum Credentials {
    Anonymous,
    /// A user name and password, sent as Basic or traded for a token, as the registry asks.
    Basic {
        username: String,
        password: String,
    },
    /// AWS keys: ECR's `GetAuthorizationToken` (signed with SigV4 for `region`) gives the
    /// password, used as Basic with the user `AWS`, as `docker login` does.
    Ecr {
        region: String,
        keys: AwsKeys,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::Ecr { region, keys } => write!(f, "Ecr({region}, {})", keys.access_key_id),
        }
    }
}

/// The media types a manifest request accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A manifest as a registry served it.
#[derive(Debug, Clone)]
pub struct RemoteManifest {
    pub body: Bytes,
    pub media_type: String,
    /// `Docker-Content-Digest`, when the registry sent one.
    pub digest: Option<String>,
}

#[derive(Default)]
struct AuthState {
    /// The Basic credentials in use, and until when (ECR tokens expire).
    basic: Option<(String, Instant)>,
    /// The registry asked for Basic (no token flow).
    wants_basic: bool,
    /// Bearer tokens by scope, with their expiry.
    tokens: HashMap<String, (String, Instant)>,
}

/// One remote registry.
pub struct Registry {
    http: reqwest::Client,
    base: String,
    creds: Credentials,
    state: Mutex<AuthState>,
    headers: HeaderMap,
    sent: AtomicU64,
}

fn unreachable(url: &str, e: reqwest::Error) -> RemoteError {
    // reqwest's message names the URL; its source says why.
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        reason = format!("{reason}: {s}");
        src = s.source();
    }
    RemoteError::Unreachable { url: url.to_string(), reason }
}

/// The message of an OCI or ECR error body, else the start of the body.
fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(e) = v.get("errors").and_then(|e| e.get(0)) {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            return format!("{code} {msg}").trim().to_string();
        }
        if let Some(m) = v.get("message").or_else(|| v.get("Message")).and_then(|m| m.as_str()) {
            return m.to_string();
        }
    }
    let t: String = body.chars().take(200).collect();
    if t.trim().is_empty() { "(no body)".into() } else { t }
}

async fn failure(what: &str, resp: Response) -> RemoteError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let message = error_message(&body);
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            RemoteError::Denied { what: what.to_string(), status: status.as_u16(), message }
        }
        StatusCode::NOT_FOUND => RemoteError::NotFound { what: what.to_string() },
        _ => RemoteError::Rejected { what: what.to_string(), status: status.as_u16(), message },
    }
}

/// Sends a request whose answer is a JSON document (a token).
async fn json_answer(rb: RequestBuilder, url: &str, what: &str) -> Result<serde_json::Value> {
    let resp = rb.send().await.map_err(|e| unreachable(url, e))?;
    if !resp.status().is_success() {
        return Err(failure(what, resp).await);
    }
    resp.json().await.map_err(|e| RemoteError::Protocol { what: what.to_string(), reason: format!("not JSON: {e}") })
}

/// `host[:port]` of a URL, as the Host header carries it.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?']).next().unwrap_or(rest))
}

impl Registry {
    /// A client for the registry at `base` (`http(s)://host[:port]`, no path).
    pub fn new(base: &str, creds: Credentials) -> Result<Registry> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) || host_of(&base).is_none_or(str::is_empty) {
            return Err(RemoteError::Protocol { what: base, reason: "not an http:// or https:// URL".into() });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // No overall timeout: a layer may take long; a stalled one is caught between reads.
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RemoteError::Protocol { what: base.clone(), reason: e.to_string() })?;
        Ok(Registry { http, base, creds, state: Mutex::default(), headers: HeaderMap::new(), sent: AtomicU64::new(0) })
    }

    /// Sends `name: value` with every request (a Berth destination reads the replication marker).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(HeaderName::from_static(name), v);
        }
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Blob bytes sent in uploads so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Basic credentials (user:password, base64), fetching an ECR token when needed.
    async fn basic(&self) -> Result<Option<String>> {
        if let Some((b, until)) = &self.lock().basic
            && *until > Instant::now()
        {
            return Ok(Some(b.clone()));
        }
        let (user, pass, lasts) = match &self.creds {
            Credentials::Anonymous => return Ok(None),
            Credentials::Basic { username, password } => {
                (username.clone(), password.clone(), Duration::from_secs(365 * 24 * 3600))
            }
            Credentials::Ecr { region, keys } => {
                let (password, lasts) = self.ecr_token(region, keys).await?;
                ("AWS".to_string(), password, lasts)
            }
        };
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        self.lock().basic = Some((b.clone(), Instant::now() + lasts));
        Ok(Some(b))
    }

    /// The ECR API endpoint for this registry: ECR's own API host for an ECR registry host
    /// (`<account>.dkr.ecr.<region>.amazonaws.com`), else the same URL (a Berth serves both).
    fn ecr_endpoint(&self, region: &str) -> String {
        match host_of(&self.base) {
            Some(h) if h.contains(".dkr.ecr.") && h.ends_with(".amazonaws.com") => {
                format!("https://api.ecr.{region}.amazonaws.com")
            }
            _ => self.base.clone(),
        }
    }

    /// ECR's GetAuthorizationToken: the registry password and how long to use it.
    async fn ecr_token(&self, region: &str, keys: &AwsKeys) -> Result<(String, Duration)> {
        let endpoint = self.ecr_endpoint(region);
        let host = host_of(&endpoint).unwrap_or_default().to_string();
        let body = b"{}";
        let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let amz_date = berth_core::time::format_amz_date(now_s as i64);
        let target = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
        let ctype = "application/x-amz-json-1.1";
        let mut headers: Vec<(&str, &str)> =
            vec![("content-type", ctype), ("host", &host), ("x-amz-date", &amz_date), ("x-amz-target", target)];
        if let Some(t) = &keys.session_token {
            headers.push(("x-amz-security-token", t));
        }
        let signed: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let req = berth_crypto::sigv4::Request { method: "POST", path: "/", query: None, headers: &headers, body };
        let auth =
            berth_crypto::sigv4::sign(&req, &keys.access_key_id, &keys.secret_access_key, region, "ecr", &signed)
                .map_err(|e| RemoteError::Credentials(e.to_string()))?;
        let mut rb = self.http.post(format!("{endpoint}/")).header("authorization", auth).body(body.to_vec());
        for (n, v) in &headers {
            if *n != "host" {
                rb = rb.header(*n, *v);
            }
        }
        let what = format!("GetAuthorizationToken at {endpoint}");
        let v = json_answer(rb, &endpoint, &what).await?;
        let data = &v["authorizationData"][0];
        let token = data["authorizationToken"]
            .as_str()
            .ok_or_else(|| RemoteError::Protocol { what: what.clone(), reason: "no authorizationToken".into() })?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| RemoteError::Protocol { what: what.clone(), reason: "the token is not base64".into() })?;
        let password = decoded.strip_prefix("AWS:").ok_or_else(|| RemoteError::Protocol {
            what: what.clone(),
            reason: "the token is not for user AWS".into(),
        })?;
        // expiresAt is seconds since the epoch; used until 5 minutes before it (at least a minute).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let left = data["expiresAt"].as_f64().map_or(3600.0, |e| e - now - 300.0).max(60.0);
        Ok((password.to_string(), Duration::from_secs_f64(left)))
    }

    /// A bearer token for `scope` from the challenge's realm.
    async fn token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        if let Some((t, until)) = self.lock().tokens.get(scope)
            && *until > Instant::now()
        {
            return Ok(t.clone());
        }
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s));
        }
        let enc = |v: &str| berth_crypto::sigv4::uri_encode(v, true);
        let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = if qs.is_empty() { realm.to_string() } else { format!("{realm}{sep}{}", qs.join("&")) };
        let mut rb = self.http.get(&url);
        if let Some(b) = self.basic().await? {
            rb = rb.header("authorization", format!("Basic {b}"));
        }
        let what = format!("token from {realm}");
        let v = json_answer(rb, realm, &what).await?;
        let token = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| RemoteError::Protocol { what: what.clone(), reason: "no token in the answer".into() })?
            .to_string();
        // Docker's default lifetime is 60 s; used until 10 s before it ends.
        let lasts = v["expires_in"].as_u64().unwrap_or(60).saturating_sub(10).max(5);
        self.lock().tokens.insert(scope.to_string(), (token.clone(), Instant::now() + Duration::from_secs(lasts)));
        Ok(token)
    }

    /// The Authorization header already known to work for `scope`, if any.
    async fn known_auth(&self, scope: &str) -> Result<Option<String>> {
        let (wants_basic, token) = {
            let st = self.lock();
            (st.wants_basic, st.tokens.get(scope).filter(|(_, u)| *u > Instant::now()).map(|(t, _)| t.clone()))
        };
        if let Some(t) = token {
            return Ok(Some(format!("Bearer {t}")));
        }
        if wants_basic {
            return Ok(self.basic().await?.map(|b| format!("Basic {b}")));
        }
        Ok(None)
    }

    /// Answers a 401's challenge: the Authorization header to try again with (None: nothing to try).
    async fn answer(&self, resp: &Response, scope: &str) -> Result<Option<String>> {
        let Some(ch) = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(challenge::parse)
        else {
            return Ok(None);
        };
        match ch {
            Challenge::Basic => {
                self.lock().wants_basic = true;
                Ok(self.basic().await?.map(|b| format!("Basic {b}")))
            }
            Challenge::Bearer { realm, service, .. } => {
                // A token we hold was refused: fetch a new one.
                self.lock().tokens.remove(scope);
                Ok(Some(format!("Bearer {}", self.token(&realm, service.as_deref(), scope).await?)))
            }
        }
    }

    /// Sends a request that can be built again (no streamed body), answering one challenge.
    async fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        let url = self.url(path);
        let make = |auth: Option<&str>| {
            let mut rb = build(self.http.request(method.clone(), &url)).headers(self.headers.clone());
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            rb
        };
        let auth = self.known_auth(scope).await?;
        let resp = make(auth.as_deref()).send().await.map_err(|e| unreachable(&url, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        match self.answer(&resp, scope).await? {
            Some(a) => make(Some(&a)).send().await.map_err(|e| unreachable(&url, e)),
            None => Ok(resp),
        }
    }

    /// `GET /v2/`: whether the registry answers (and our credentials are good).
    pub async fn ping(&self) -> Result<()> {
        let resp = self.send(Method::GET, "/v2/", "", |rb| rb).await?;
        if resp.status().is_success() { Ok(()) } else { Err(failure("GET /v2/", resp).await) }
    }

    fn push_scope(repo: &str) -> String {
        format!("repository:{repo}:pull,push")
    }

    fn pull_scope(repo: &str) -> String {
        format!("repository:{repo}:pull")
    }

    /// The blob's size in `repo`, None when it is not there.
    pub async fn blob_size(&self, repo: &str, digest: &str, pushing: bool) -> Result<Option<u64>> {
        let scope = if pushing { Self::push_scope(repo) } else { Self::pull_scope(repo) };
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(Method::HEAD, &path, &scope, |rb| rb).await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(resp.content_length().unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failure(&format!("HEAD {path}"), resp).await),
        }
    }

    /// Mounts `digest` from repository `from` into `repo`. None: mounted; Some(location): the
    /// registry did not mount it and opened an upload instead.
    pub async fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> Result<Option<String>> {
        let scope = format!("{} {}", Self::push_scope(repo), Self::pull_scope(from));
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let resp = self.send(Method::POST, &path, &scope, |rb| rb.header("content-length", "0")).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(self.location(&path, &resp)?)),
            _ => Err(failure(&format!("POST {path}"), resp).await),
        }
    }

    fn location(&self, what: &str, resp: &Response) -> Result<String> {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| RemoteError::Protocol { what: what.to_string(), reason: "no Location header".into() })?;
        Ok(self.url(loc))
    }

    /// Opens an upload in `repo`; its location.
    pub async fn start_upload(&self, repo: &str) -> Result<String> {
        let path = format!("/v2/{repo}/blobs/uploads/");
        let resp =
            self.send(Method::POST, &path, &Self::push_scope(repo), |rb| rb.header("content-length", "0")).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(failure(&format!("POST {path}"), resp).await);
        }
        self.location(&path, &resp)
    }

    /// Sends a blob of `size` bytes into the upload at `location` (one PATCH with the body
    /// streamed, then the PUT that commits it as `digest`).
    pub async fn upload_blob<S>(&self, repo: &str, location: &str, digest: &str, size: u64, body: S) -> Result<()>
    where
        S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let scope = Self::push_scope(repo);
        let auth = self.known_auth(&scope).await?;
        let what = format!("upload of {digest} to {repo}");
        let mut rb = self
            .http
            .patch(location)
            .headers(self.headers.clone())
            .header("content-type", "application/octet-stream")
            .header("content-length", size.to_string());
        if let Some(a) = &auth {
            rb = rb.header("authorization", a);
        }
        let resp = rb.body(reqwest::Body::wrap_stream(body)).send().await.map_err(|e| unreachable(location, e))?;
        if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::NO_CONTENT {
            return Err(failure(&what, resp).await);
        }
        self.sent.fetch_add(size, Ordering::Relaxed);
        let next = self.location(&what, &resp).unwrap_or_else(|_| location.to_string());
        let sep = if next.contains('?') { '&' } else { '?' };
        let put = format!("{next}{sep}digest={digest}");
        let resp = self.send(Method::PUT, &put, &scope, |rb| rb.header("content-length", "0")).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(failure(&what, resp).await);
        }
        Ok(())
    }

    /// The digest `reference` names in `repo`, None when there is no such manifest.
    pub async fn manifest_digest(&self, repo: &str, reference: &str, pushing: bool) -> Result<Option<String>> {
        let scope = if pushing { Self::push_scope(repo) } else { Self::pull_scope(repo) };
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.send(Method::HEAD, &path, &scope, |rb| rb.header("accept", MANIFEST_ACCEPT)).await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(
                resp.headers()
                    .get("docker-content-digest")
                    .and_then(|d| d.to_str().ok())
                    .unwrap_or(reference)
                    .to_string(),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failure(&format!("HEAD {path}"), resp).await),
        }
    }

    /// Stores a manifest (its bytes exactly) under `reference`.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: Bytes) -> Result<()> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self
            .send(Method::PUT, &path, &Self::push_scope(repo), |rb| {
                rb.header("content-type", media_type).body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(failure(&format!("PUT {path}"), resp).await);
        }
        Ok(())
    }

    /// A manifest, None when there is none.
    pub async fn get_manifest(&self, repo: &str, reference: &str, accept: &str) -> Result<Option<RemoteManifest>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.send(Method::GET, &path, &Self::pull_scope(repo), |rb| rb.header("accept", accept)).await?;
        match resp.status() {
            s if s.is_success() => {
                let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
                let media_type = header("content-type").unwrap_or_default();
                let digest = header("docker-content-digest");
                let body = resp.bytes().await.map_err(|e| unreachable(&path, e))?;
                Ok(Some(RemoteManifest { body, media_type, digest }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failure(&format!("GET {path}"), resp).await),
        }
    }

    /// A blob's bytes as a response to stream (None: not there).
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Option<Response>> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(Method::GET, &path, &Self::pull_scope(repo), |rb| rb).await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(resp)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failure(&format!("GET {path}"), resp).await),
        }
    }

    /// A blob's size (when the registry says it) and bytes, as a stream (None: not there).
    pub async fn blob_stream(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<(Option<u64>, futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>)>> {
        use futures_util::StreamExt;
        Ok(self.get_blob(repo, digest).await?.map(|resp| {
            let len = resp.content_length();
            (len, resp.bytes_stream().map(|r| r.map_err(std::io::Error::other)).boxed())
        }))
    }

    /// The referrers index of `digest`; None when the registry has no referrers API.
    pub async fn referrers(&self, repo: &str, digest: &str) -> Result<Option<serde_json::Value>> {
        let path = format!("/v2/{repo}/referrers/{digest}");
        let resp = self.send(Method::GET, &path, &Self::pull_scope(repo), |rb| rb).await?;
        match resp.status() {
            s if s.is_success() => {
                let v = resp.json().await.map_err(|e| RemoteError::Protocol {
                    what: format!("GET {path}"),
                    reason: format!("not JSON: {e}"),
                })?;
                Ok(Some(v))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failure(&format!("GET {path}"), resp).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_error_bodies() {
        assert!(Registry::new("ftp://x", Credentials::Anonymous).is_err());
        assert!(Registry::new("http://", Credentials::Anonymous).is_err());
        let r = Registry::new("http://127.0.0.1:5001/", Credentials::Anonymous).unwrap();
        assert_eq!(r.base(), "http://127.0.0.1:5001");
        assert_eq!(r.url("/v2/"), "http://127.0.0.1:5001/v2/");
        assert_eq!(r.url("https://elsewhere/up"), "https://elsewhere/up");
        assert_eq!(host_of("http://127.0.0.1:5001/v2/x"), Some("127.0.0.1:5001"));
        let e = Registry::new("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", Credentials::Anonymous).unwrap();
        assert_eq!(e.ecr_endpoint("eu-west-1"), "https://api.ecr.eu-west-1.amazonaws.com");
        assert_eq!(r.ecr_endpoint("eu-west-1"), "http://127.0.0.1:5001");
        assert_eq!(error_message(r#"{"errors":[{"code":"DENIED","message":"no push"}]}"#), "DENIED no push");
        assert_eq!(error_message(r#"{"__type":"X","message":"bad key"}"#), "bad key");
        assert_eq!(error_message(""), "(no body)");
        let keys = AwsKeys { access_key_id: "AKIA1".into(), secret_access_key: "sekrit".into(), session_token: None };
        let c = Credentials::Ecr { region: "r".into(), keys };
        assert!(!format!("{c:?}").contains("sekrit"));
        assert!(
            !format!("{:?}", Credentials::Basic { username: "u".into(), password: "pw123".into() }).contains("pw123")
        );
    }

    #[test]
    fn failure_codes_and_retries() {
        let rej = |status| RemoteError::Rejected { what: "x".into(), status, message: String::new() };
        assert!(rej(503).retryable());
        assert!(rej(429).retryable());
        assert!(!rej(400).retryable());
        assert_eq!(rej(400).code(), "REJECTED");
        assert_eq!(rej(500).code(), "DESTINATION_ERROR");
        assert!(RemoteError::Unreachable { url: "u".into(), reason: "r".into() }.retryable());
    }
}
