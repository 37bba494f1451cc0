//! What every front end shares: the options the server was started with, and the state each
//! request handler gets.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_service::Registry;
use tokio::sync::Semaphore;

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
    pub challenge: Challenge,
    pub limits: Limits,
    pub metrics: Metrics,
}

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub options: Options,
    pub(crate) body_budget: BodyBudget,
}

/// Prometheus metrics (counts only; nothing about repositories or callers).
/// Requests this process answered (every route), for telling nodes' shares of the load apart.
pub(crate) static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) async fn metrics(st: State<AppState>) -> Response {
    let mut out = st.registry.metrics().await;
    out.push_str(&format!(
        "# HELP berth_http_requests_total HTTP requests this node answered.\n# TYPE berth_http_requests_total counter\nberth_http_requests_total {}\n",
        REQUESTS.load(std::sync::atomic::Ordering::Relaxed)
    ));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The client's address, when the server was started with connection info.
pub(crate) fn peer_ip(ext: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())
}

/// Bytes of request bodies read but not yet authenticated, across all requests at once.
pub const UNVERIFIED_BUDGET: usize = 256 * 1024 * 1024;

/// The shared budget of unverified body bytes.
#[derive(Clone)]
pub struct BodyBudget(pub(crate) std::sync::Arc<Semaphore>);

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget(std::sync::Arc::new(Semaphore::new(UNVERIFIED_BUDGET)))
    }
}
