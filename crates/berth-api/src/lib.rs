//! HTTP front end. `/v2/` speaks the OCI distribution API; each handler parses the request,
//! calls the registry service, and writes the response. Service errors become OCI error bodies in
//! one place, [`error`].

mod error;
mod oci;

use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use berth_service::Registry;

pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
}

/// The whole HTTP application.
pub fn router(registry: Registry) -> Router {
    oci::routes().with_state(AppState { registry }).layer(middleware::from_fn(common_headers))
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
