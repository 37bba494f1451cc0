//! The one place where service errors become protocol errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_service::Error;
use serde_json::json;

/// An error on its way to an OCI client.
#[derive(Debug)]
pub struct ApiError(pub Error);

/// What an error response says for the audit log, and whether the caller was refused (which,
/// for an anonymous caller, the `/v2/` middleware turns into a challenge).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub denied: bool,
    pub error: String,
}

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
        RepoNotCreated(_) | RepositoryNotFound(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        TagImmutable { .. } => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
        ReferencedImagesNotFound(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
        ImageNotFound(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        ImageDigestMismatch(_) | InvalidLayer(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        Unauthorized(_) | InvalidToken(_) | ExpiredToken(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        AccessDenied(_) | PullBlocked(_) => (StatusCode::FORBIDDEN, "DENIED"),
        Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
        // Control-plane errors reach OCI clients only through shared code paths.
        RepositoryAlreadyExists(_)
        | RepositoryNotEmpty(_)
        | ImageAlreadyExists(_)
        | TemplateAlreadyExists(_)
        | TemplateNotFound(_)
        | TooManyTags(_)
        | InvalidTagParameter(_)
        | InvalidParameter(_)
        | Validation(_)
        | LayerAlreadyExists(_)
        | EmptyUpload(_)
        | LayerPartTooSmall(_)
        | RepositoryPolicyNotFound(_)
        | RegistryPolicyNotFound(_)
        | LifecyclePolicyNotFound(_)
        | LifecyclePolicyPreviewNotFound(_)
        | ScanNotFound(_)
        | UnsupportedImage(_)
        | InvalidLayerPart { .. }
        | NoSuchEntity(_)
        | EntityAlreadyExists(_)
        | DeleteConflict(_)
        | LimitExceeded(_)
        | MalformedPolicyDocument(_)
        | InvalidInput(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
        PaginationInvalid(_) => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
        Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "DENIED"),
        Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
    }
}

/// ECR exception name for each service error (HTTP 400 unless the server is at fault).
pub fn ecr_type(e: &Error) -> &'static str {
    use Error::*;
    match e {
        NameInvalid(_) | TagInvalid(_) | DigestInvalid(_) | PaginationInvalid(_) | InvalidParameter(_) => {
            "InvalidParameterException"
        }
        ManifestInvalid(_) | ManifestTooLarge(_) | UploadInvalid(_) | RangeNotSatisfiable { .. } => {
            "InvalidParameterException"
        }
        NameUnknown(_) | RepoNotCreated(_) | RepositoryNotFound(_) => "RepositoryNotFoundException",
        BlobUnknown(_) | ManifestBlobUnknown(_) => "LayersNotFoundException",
        ReferencedImagesNotFound(_) => "ReferencedImagesNotFoundException",
        UploadUnknown(_) => "UploadNotFoundException",
        ChunkOutOfOrder { .. } | InvalidLayerPart { .. } => "InvalidLayerPartException",
        ManifestUnknown(_) | ImageNotFound(_) => "ImageNotFoundException",
        Conflict(_) => "InvalidParameterException",
        RepositoryAlreadyExists(_) => "RepositoryAlreadyExistsException",
        RepositoryNotEmpty(_) => "RepositoryNotEmptyException",
        TagImmutable { .. } => "ImageTagAlreadyExistsException",
        ImageAlreadyExists(_) => "ImageAlreadyExistsException",
        ImageDigestMismatch(_) => "ImageDigestDoesNotMatchException",
        TemplateAlreadyExists(_) => "TemplateAlreadyExistsException",
        TemplateNotFound(_) => "TemplateNotFoundException",
        TooManyTags(_) => "TooManyTagsException",
        InvalidTagParameter(_) => "InvalidTagParameterException",
        Validation(_) => "ValidationException",
        LayerAlreadyExists(_) => "LayerAlreadyExistsException",
        EmptyUpload(_) => "EmptyUploadException",
        LayerPartTooSmall(_) => "LayerPartTooSmallException",
        InvalidLayer(_) => "InvalidLayerException",
        Unauthorized(_) | InvalidToken(_) => "UnrecognizedClientException",
        ExpiredToken(_) => "ExpiredTokenException",
        AccessDenied(_) => "AccessDeniedException",
        LimitExceeded(_) | StorageFull(_) => "LimitExceededException",
        UnsupportedImage(_) => "UnsupportedImageTypeException",
        PullBlocked(_) => "AccessDeniedException",
        NoSuchEntity(_) | EntityAlreadyExists(_) | DeleteConflict(_) | InvalidInput(_) => "InvalidParameterException",
        MalformedPolicyDocument(_) => "InvalidParameterException",
        Throttled(_) => "ThrottlingException",
        RepositoryPolicyNotFound(_) => "RepositoryPolicyNotFoundException",
        RegistryPolicyNotFound(_) => "RegistryPolicyNotFoundException",
        LifecyclePolicyNotFound(_) => "LifecyclePolicyNotFoundException",
        ScanNotFound(_) => "ScanNotFoundException",
        LifecyclePolicyPreviewNotFound(_) => "LifecyclePolicyPreviewNotFoundException",
        Internal(_) | Busy(_) => "ServerException",
    }
}

/// IAM / STS Query-API status and error code for each service error.
pub fn iam_code(e: &Error) -> (StatusCode, &'static str) {
    use Error::*;
    match e {
        NoSuchEntity(_) => (StatusCode::NOT_FOUND, "NoSuchEntity"),
        EntityAlreadyExists(_) => (StatusCode::CONFLICT, "EntityAlreadyExists"),
        DeleteConflict(_) => (StatusCode::CONFLICT, "DeleteConflict"),
        LimitExceeded(_) => (StatusCode::CONFLICT, "LimitExceeded"),
        MalformedPolicyDocument(_) => (StatusCode::BAD_REQUEST, "MalformedPolicyDocument"),
        Validation(_) => (StatusCode::BAD_REQUEST, "ValidationError"),
        AccessDenied(_) => (StatusCode::FORBIDDEN, "AccessDenied"),
        Unauthorized(_) | InvalidToken(_) => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
        ExpiredToken(_) => (StatusCode::BAD_REQUEST, "ExpiredToken"),
        Throttled(_) => (StatusCode::BAD_REQUEST, "Throttling"),
        Internal(_) | Busy(_) => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceFailure"),
        StorageFull(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        _ => (StatusCode::BAD_REQUEST, "InvalidInput"),
    }
}

/// An ECR error response: `{"__type", "message"}` with extra members some exceptions carry.
pub fn ecr_error_response(kind: &str, message: &str, extra: Option<serde_json::Value>) -> Response {
    let status = if kind == "ServerException" { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::BAD_REQUEST };
    let mut body = json!({ "__type": kind, "message": message });
    if let (Some(serde_json::Value::Object(m)), Some(b)) = (extra, body.as_object_mut()) {
        b.extend(m);
    }
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.1"))], body.to_string())
        .into_response()
}

/// A service error for an ECR client.
pub fn ecr_response(e: &Error) -> Response {
    if e.is_internal() {
        tracing::error!(error = %e, "request failed");
        return ecr_error_response("ServerException", "internal server error; see the server log", None);
    }
    let extra = match e {
        Error::InvalidLayerPart { last_valid_byte: Some(b), .. } => Some(json!({ "lastValidByteReceived": b })),
        _ => None,
    };
    ecr_error_response(ecr_type(e), &e.to_string(), extra)
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
        res.extensions_mut().insert(Outcome { denied: matches!(self.0, Error::AccessDenied(_)), error: message });
        if let Error::RangeNotSatisfiable { size } = self.0
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        res
    }
}
