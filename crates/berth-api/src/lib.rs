//! HTTP front end. `/v2/` speaks the OCI distribution API, `POST /` the Amazon ECR API (JSON 1.1,
//! SigV4) and the IAM and STS Query APIs (form-encoded, XML answers), `/token` issues Docker bearer tokens. Each handler parses the request, calls the
//! registry service, and writes the response. Service errors become OCI error bodies or ECR
//! exceptions in one place, [`error`].

mod auth;
mod aws;
mod ecr;
mod error;
mod iam;
mod oci;
mod request;
mod serve;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use berth_service::Registry;

pub use error::ApiError;
pub use serve::{Tls, Transport, serve};

/// Which challenge a `/v2/` request without credentials gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Challenge {
    /// `Basic`: the client sends the login password on every request (what ECR answers). Docker
    /// then cannot pull anonymously: with a Basic challenge it refuses to send a request without
    /// credentials.
    Basic,
    /// `Bearer realm=<url>/token`: the client trades the password (or nothing, for public
    /// repositories) for a scoped token.
    #[default]
    Bearer,
}

/// Limits that keep slow or abusive clients from holding the server's resources.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Longest a request body may go without a byte arriving.
    pub body_timeout: Duration,
    /// Longest a keep-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// Most connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            max_connections: 4096,
        }
    }
}

/// Where `/metrics` is served and who may read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Metrics {
    /// On the main listener, to anyone (counts only; nothing about repositories or callers).
    #[default]
    Open,
    /// On the main listener, to callers with valid credentials (`metrics_auth = true`).
    Authenticated,
    /// Not on the main listener: [`metrics_router`] serves it on another (`metrics_listen`).
    Elsewhere,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Serve `/v2/` without credentials (local experiments only).
    pub anonymous: bool,
    pub challenge: Challenge,
    pub limits: Limits,
    pub metrics: Metrics,
}

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub options: Options,
    body_budget: aws::BodyBudget,
}

/// The whole HTTP application.
pub fn router(registry: Registry, options: Options) -> Router {
    let state = AppState { registry, options, body_budget: aws::BodyBudget::default() };
    let v2 = oci::routes().route_layer(middleware::from_fn_with_state(state.clone(), auth::require));
    let mut r = Router::new()
        .route("/", post(aws_api))
        .route("/token", get(auth::token))
        .route("/berth/layers/{*rest}", any(oci::download));
    r = match options.metrics {
        Metrics::Open => r.route("/metrics", get(metrics)),
        Metrics::Authenticated => r.route("/metrics", get(auth::metrics_with_credentials)),
        Metrics::Elsewhere => r,
    };
    r.merge(v2).with_state(state).layer(middleware::from_fn(common_headers))
}

/// `/metrics` alone, for a listener of its own (`metrics_listen`), open or behind credentials.
pub fn metrics_router(registry: Registry, options: Options, authenticated: bool) -> Router {
    let state = AppState { registry, options, body_budget: aws::BodyBudget::default() };
    let r = if authenticated {
        Router::new().route("/metrics", get(auth::metrics_with_credentials))
    } else {
        Router::new().route("/metrics", get(metrics))
    };
    r.with_state(state)
}

/// Prometheus metrics (counts only; nothing about repositories or callers).
pub(crate) async fn metrics(st: axum::extract::State<AppState>) -> Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.registry.counters().render()).into_response()
}

/// `POST /`: the ECR API (JSON, `X-Amz-Target`) or the IAM/STS Query APIs (form-encoded).
async fn aws_api(st: axum::extract::State<AppState>, req: Request) -> Response {
    if iam::is_query(&req) { iam::handle(st, req).await } else { ecr::handle(st, req).await }
}

/// The client's address, when the server was started with connection info.
pub(crate) fn peer_ip(ext: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())
}

async fn common_headers(req: Request, next: Next) -> Response {
    // The request line is copied only when it will be logged: this runs on every request.
    let logged =
        tracing::enabled!(tracing::Level::DEBUG).then(|| (Instant::now(), req.method().clone(), req.uri().clone()));
    let mut res = next.run(req).await;
    res.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    if let Some((started, method, uri)) = logged {
        tracing::debug!(%method, %uri, status = res.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    }
    res
}
