//! HTTP front end. `/v2/` speaks the OCI distribution API, `POST /` the Amazon ECR API (JSON 1.1,
//! SigV4) and the IAM and STS Query APIs (form-encoded, XML answers), `/token` issues Docker bearer tokens. Each handler parses the request, calls the
//! registry service, and writes the response. Service errors become OCI error bodies or ECR
//! exceptions in one place, [`error`].

mod auth;
mod aws;
mod ecr;
mod error;
mod iam;
mod kms;
mod oci;
mod request;
mod secretsmanager;
mod serve;
mod state;

use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use berth_service::Registry;

pub use error::ApiError;
pub use serve::{Tls, Transport, serve};
use state::metrics;
pub use state::{AppState, Challenge, Limits, Metrics, Options};

/// The whole HTTP application.
pub fn router(registry: Registry, options: Options) -> Router {
    let state = AppState { registry, options, body_budget: state::BodyBudget::default() };
    let v2 = oci::routes().route_layer(middleware::from_fn_with_state(state.clone(), auth::require));
    let mut r = Router::new()
        .route("/", post(aws_api))
        .route("/token", get(auth::token))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/berth/layers/{*rest}", any(oci::download));
    r = match options.metrics {
        Metrics::Open => r.route("/metrics", get(metrics)),
        Metrics::Authenticated => r.route("/metrics", get(auth::metrics_with_credentials)),
        Metrics::Elsewhere => r,
    };
    r.merge(v2)
        .layer(middleware::from_fn_with_state(state.clone(), settle_writes))
        .with_state(state)
        .layer(middleware::from_fn(common_headers))
}

/// A request that may have changed something answers only once the other nodes have dropped
/// what they cached of it, so the client's next request sees the change whichever node it
/// reaches (immediate on one node, and when nothing changed).
async fn settle_writes(st: axum::extract::State<AppState>, req: Request, next: Next) -> Response {
    let reads = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let res = next.run(req).await;
    if !reads {
        st.registry.flush_invalidations().await;
    }
    res
}

/// `/metrics` alone, for a listener of its own (`metrics_listen`), open or behind credentials.
pub fn metrics_router(registry: Registry, options: Options, authenticated: bool) -> Router {
    let state = AppState { registry, options, body_budget: state::BodyBudget::default() };
    let r = if authenticated {
        Router::new().route("/metrics", get(auth::metrics_with_credentials))
    } else {
        Router::new().route("/metrics", get(metrics))
    };
    r.with_state(state)
}

/// `/healthz`: the process answers (liveness; checks nothing else, so that a slow database
/// never gets a live node restarted).
async fn healthz() -> &'static str {
    "ok\n"
}

/// `/readyz`: 200 when the database and blob storage answer and the node is not draining,
/// else 503; the body says which check failed.
async fn readyz(st: axum::extract::State<AppState>) -> Response {
    use axum::response::IntoResponse;
    let r = st.registry.health().readiness().await;
    let body = serde_json::json!({
        "ready": r.ready(),
        "database": r.database.as_deref().unwrap_or("ok"),
        "storage": r.storage.as_deref().unwrap_or("ok"),
        "draining": r.draining,
    });
    let code = if r.ready() { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `POST /`: the ECR, KMS and Secrets Manager APIs (JSON, `X-Amz-Target`) or the IAM/STS Query
/// APIs (form-encoded).
async fn aws_api(st: axum::extract::State<AppState>, req: Request) -> Response {
    if iam::is_query(&req) {
        iam::handle(st, req).await
    } else if kms::API.is_for(&req) {
        kms::API.handle(&st.0, req).await
    } else if secretsmanager::API.is_for(&req) {
        secretsmanager::API.handle(&st.0, req).await
    } else {
        ecr::handle(st, req).await
    }
}

async fn common_headers(req: Request, next: Next) -> Response {
    // The request line is copied only when it will be logged: this runs on every request.
    let logged =
        tracing::enabled!(tracing::Level::DEBUG).then(|| (Instant::now(), req.method().clone(), req.uri().clone()));
    state::REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut res = next.run(req).await;
    res.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    if let Some((started, method, uri)) = logged {
        tracing::debug!(%method, %uri, status = res.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    }
    res
}
