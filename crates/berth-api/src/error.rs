//! The one place where service errors become protocol errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_service::Error;
use serde_json::json;

/// An error on its way to an OCI client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// OCI status and error code for each service error.
pub fn oci_code(e: &Error) -> (StatusCode, &'static str) {
    use Error::*;
    match e {
        NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
        TagInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
        NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        UploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
        UploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
        ChunkOutOfOrder { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
        RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID"),
        ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
        ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
        ManifestTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID"),
        Conflict(_) => (StatusCode::CONFLICT, "DENIED"),
        PaginationInvalid(_) => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
        Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
    }
}

/// An OCI error response: `{"errors":[{"code","message","detail"}]}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string()).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = oci_code(&self.0);
        if self.0.is_internal() {
            tracing::error!(error = %self.0, "request failed");
        }
        let message = match &self.0 {
            // Internal details go to the log, not to clients.
            Error::Internal(_) => "internal server error; see the server log".to_string(),
            e => e.to_string(),
        };
        let mut res = error_response(status, code, &message);
        if let Error::RangeNotSatisfiable { size } = self.0
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        res
    }
}
