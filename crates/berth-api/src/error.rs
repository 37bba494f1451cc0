//! The one place where service errors become protocol errors: for each kind, the OCI status,
//! error code and message, the ECR exception and its message, and the IAM/STS error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_service::Error;
use berth_service::error::{
    Conflict, Denied, DeniedBy, Exists, Invalid, InvalidKind, Limit, NotFound, Unauthenticated, Unavailable,
    describe_id,
};
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

/// The registry id and name of a repository key (the configured registry's keys carry none).
fn parts<'a>(key: &'a str, registry_id: &'a str) -> (&'a str, &'a str) {
    match berth_core::split_repo_key(key) {
        (Some(a), n) => (a, n),
        (None, n) => (registry_id, n),
    }
}

/// Why a decision refused, as AWS ends its AccessDenied messages.
fn why(by: DeniedBy) -> &'static str {
    match by {
        DeniedBy::ExplicitDeny => " with an explicit deny",
        DeniedBy::NoAllow => " because no identity-based or resource-based policy allows the action",
        DeniedBy::NoIdentityAllow => " because no identity-based policy allows the action",
        DeniedBy::IdentityDeny => " with an explicit deny in an identity-based policy",
        DeniedBy::Trust => "",
    }
}

/// The message of a refusal, as AWS words it (OCI clients get the same text).
fn denied_message(d: &Denied) -> String {
    match d {
        Denied::Action { principal, action, resource, by } => {
            format!("User: {principal} is not authorized to perform: {action} on resource: {resource}{}", why(*by))
        }
        other => other.to_string(),
    }
}

/// An invalid value, worded as ECR words its parameter errors.
fn invalid_message(i: &Invalid) -> String {
    match (&i.field, i.kind) {
        (Some(f), InvalidKind::Parameter) => {
            format!("Invalid parameter at '{f}' failed to satisfy constraint: {}", i.reason)
        }
        _ => i.reason.clone(),
    }
}

// ---- OCI ----

/// OCI status and error code for each service error.
pub fn oci_code(e: &Error) -> (StatusCode, &'static str) {
    let bad = StatusCode::BAD_REQUEST;
    match e {
        Error::NotFound(n) => match n {
            NotFound::Repository { .. } | NotFound::RepositoryNotCreated { .. } | NotFound::Registry { .. } => {
                (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
            }
            NotFound::Blob { .. } | NotFound::Layer { .. } => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            NotFound::Upload { .. } => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            NotFound::Manifest { .. } | NotFound::Image { .. } => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            NotFound::References(_) | NotFound::ReferencedImages(_) => (bad, "MANIFEST_BLOB_UNKNOWN"),
            // The repository's key is gone: its content cannot be opened.
            NotFound::KmsKey { .. } => (StatusCode::FORBIDDEN, "DENIED"),
            // Control-plane errors reach OCI clients only through shared code paths.
            _ => (bad, "UNSUPPORTED"),
        },
        Error::Invalid(i) => match i.kind {
            InvalidKind::Name => (bad, "NAME_INVALID"),
            InvalidKind::Tag => (bad, "TAG_INVALID"),
            InvalidKind::Digest | InvalidKind::Layer | InvalidKind::ImageDigest => (bad, "DIGEST_INVALID"),
            InvalidKind::Manifest => (bad, "MANIFEST_INVALID"),
            InvalidKind::ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID"),
            InvalidKind::Upload => (bad, "BLOB_UPLOAD_INVALID"),
            InvalidKind::Range { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID"),
            InvalidKind::Chunk { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            InvalidKind::Pagination => (bad, "PAGINATION_NUMBER_INVALID"),
            _ => (bad, "UNSUPPORTED"),
        },
        Error::Conflict(c) => match c {
            Conflict::TagImmutable { .. } => (bad, "TAG_INVALID"),
            Conflict::Referenced { .. } => (StatusCode::CONFLICT, "DENIED"),
            Conflict::UploadChanged { .. } => (bad, "BLOB_UPLOAD_INVALID"),
            // The repository's KMS key refuses its use (disabled, pending deletion).
            Conflict::KmsKeyState { .. } | Conflict::KmsManaged { .. } => (StatusCode::FORBIDDEN, "DENIED"),
            _ => (bad, "UNSUPPORTED"),
        },
        Error::AlreadyExists(_) | Error::LimitExceeded { .. } => (bad, "UNSUPPORTED"),
        Error::Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
        Error::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        Error::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
        Error::Unavailable(Unavailable::Busy(_)) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        Error::Unavailable(Unavailable::Upstream(_)) => (StatusCode::BAD_GATEWAY, "UNAVAILABLE"),
        Error::Unavailable(Unavailable::StorageFull(_)) => (StatusCode::INSUFFICIENT_STORAGE, "DENIED"),
        Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
    }
}

/// The message an OCI client reads.
pub fn oci_message(e: &Error) -> String {
    match e {
        // Internal details go to the log, not to clients.
        Error::Internal(_) => "internal server error; see the server log".to_string(),
        Error::Denied(d) => denied_message(d),
        Error::Invalid(i) => invalid_message(i),
        Error::Conflict(Conflict::TagImmutable { key, tag }) => format!(
            "The image tag '{tag}' already exists in the '{key}' repository and cannot be overwritten because the tag \
             is immutable."
        ),
        e => e.to_string(),
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
        let message = oci_message(&self.0);
        let mut res = error_response(status, code, &message);
        res.extensions_mut().insert(Outcome { denied: self.0.is_denied(), error: message });
        if let Error::Invalid(Invalid { kind: InvalidKind::Range { size }, .. }) = self.0
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        res
    }
}

// ---- ECR ----

/// ECR exception name for each service error (HTTP 400 unless the server is at fault).
pub fn ecr_type(e: &Error) -> &'static str {
    match e {
        Error::NotFound(n) => match n {
            NotFound::Repository { .. } | NotFound::RepositoryNotCreated { .. } | NotFound::Registry { .. } => {
                "RepositoryNotFoundException"
            }
            NotFound::Blob { .. } | NotFound::Layer { .. } | NotFound::References(_) => "LayersNotFoundException",
            NotFound::ReferencedImages(_) => "ReferencedImagesNotFoundException",
            NotFound::Upload { .. } => "UploadNotFoundException",
            NotFound::Manifest { .. } | NotFound::Image { .. } => "ImageNotFoundException",
            NotFound::Template { .. } => "TemplateNotFoundException",
            NotFound::RepositoryPolicy { .. } => "RepositoryPolicyNotFoundException",
            NotFound::RegistryPolicy { .. } => "RegistryPolicyNotFoundException",
            NotFound::LifecyclePolicy { .. } => "LifecyclePolicyNotFoundException",
            NotFound::LifecyclePreview { .. } => "LifecyclePolicyPreviewNotFoundException",
            NotFound::Scan { .. } => "ScanNotFoundException",
            NotFound::Entity { .. } | NotFound::Policy { .. } | NotFound::Member { .. } => "InvalidParameterException",
            NotFound::KmsKey { .. } | NotFound::KmsAlias { .. } => "KmsException",
            NotFound::PullThroughRule { .. } => "PullThroughCacheRuleNotFoundException",
            NotFound::Secret { .. } | NotFound::SecretValue { .. } => "SecretNotFoundException",
        },
        Error::AlreadyExists(x) => match x {
            Exists::Repository { .. } => "RepositoryAlreadyExistsException",
            Exists::Image { .. } => "ImageAlreadyExistsException",
            Exists::Layer { .. } => "LayerAlreadyExistsException",
            Exists::Template { .. } => "TemplateAlreadyExistsException",
            Exists::PullThroughRule { .. } => "PullThroughCacheRuleAlreadyExistsException",
            Exists::Entity { .. }
            | Exists::Policy { .. }
            | Exists::Account { .. }
            | Exists::KmsAlias { .. }
            | Exists::Secret { .. }
            | Exists::SecretVersion { .. } => "InvalidParameterException",
        },
        Error::Invalid(i) => match i.kind {
            InvalidKind::Validation => "ValidationException",
            InvalidKind::Chunk { .. } | InvalidKind::LayerPart { .. } => "InvalidLayerPartException",
            InvalidKind::Layer => "InvalidLayerException",
            InvalidKind::ImageDigest => "ImageDigestDoesNotMatchException",
            InvalidKind::ResourceTag => "InvalidTagParameterException",
            InvalidKind::EmptyUpload => "EmptyUploadException",
            InvalidKind::LayerPartTooSmall => "LayerPartTooSmallException",
            InvalidKind::UnsupportedImage => "UnsupportedImageTypeException",
            InvalidKind::Ciphertext => "KmsException",
            _ => "InvalidParameterException",
        },
        Error::Conflict(c) => match c {
            Conflict::TagImmutable { .. } => "ImageTagAlreadyExistsException",
            Conflict::RepositoryNotEmpty { .. } => "RepositoryNotEmptyException",
            Conflict::KmsKeyState { .. } | Conflict::KmsManaged { .. } => "KmsException",
            _ => "InvalidParameterException",
        },
        Error::Denied(_) => "AccessDeniedException",
        Error::Unauthenticated { why: Unauthenticated::ExpiredToken, .. } => "ExpiredTokenException",
        Error::Unauthenticated { .. } => "UnrecognizedClientException",
        Error::LimitExceeded { what: Limit::Tags, .. } => "TooManyTagsException",
        Error::LimitExceeded { .. } | Error::Unavailable(Unavailable::StorageFull(_)) => "LimitExceededException",
        Error::Throttled(_) => "ThrottlingException",
        Error::Internal(_) | Error::Unavailable(Unavailable::Busy(_) | Unavailable::Upstream(_)) => "ServerException",
    }
}

/// The message an ECR client reads; `registry_id` is the configured registry's (the one keys
/// without an account are in).
pub fn ecr_message(e: &Error, registry_id: &str) -> String {
    let name_in = |key: &str| {
        let (registry, name) = parts(key, registry_id);
        format!("the repository with name '{name}' in the registry with id '{registry}'")
    };
    match e {
        Error::NotFound(n) => match n {
            NotFound::Repository { key } => {
                let (registry, name) = parts(key, registry_id);
                format!("The repository with name '{name}' does not exist in the registry with id '{registry}'")
            }
            NotFound::Layer { key, digest } => {
                format!(
                    "{digest} (The layer does not exist in the repository with name '{}')",
                    parts(key, registry_id).1
                )
            }
            NotFound::Image { key, digest, tag, reason } => {
                let (registry, name) = parts(key, registry_id);
                format!(
                    "The image with imageId {} does not exist within the repository with name '{name}' in the \
                     registry with id '{registry}' ({reason})",
                    describe_id(digest.as_deref(), tag.as_deref())
                )
            }
            NotFound::Template { prefix } => format!("No repository creation template with prefix '{prefix}' exists"),
            NotFound::RepositoryPolicy { key } => format!("Repository policy does not exist for {}", name_in(key)),
            NotFound::RegistryPolicy { registry } => {
                format!("Registry policy does not exist in the registry with id '{registry}'")
            }
            NotFound::LifecyclePolicy { key } => format!("Lifecycle policy does not exist for {}", name_in(key)),
            NotFound::LifecyclePreview { key } => format!("There is no dry run for {}", name_in(key)),
            NotFound::Scan { key, digest, completed: true, .. } => format!(
                "no completed scan of {digest} in repository '{}': the SBOM comes from a scan's inventory \
                 (StartImageScan)",
                parts(key, registry_id).1
            ),
            NotFound::Scan { key, digest, tag, .. } => format!(
                "Image scan does not exist for the image with '{{imageDigest:'{digest}', imageTag:'{}'}}' in {}",
                tag.as_deref().unwrap_or("null"),
                name_in(key)
            ),
            n => iam_not_found(n).unwrap_or_else(|| n.to_string()),
        },
        Error::AlreadyExists(x) => match x {
            Exists::Repository { key } => {
                let (registry, name) = parts(key, registry_id);
                format!("The repository with name '{name}' already exists in the registry with id '{registry}'")
            }
            Exists::Image { key, digest, tag } => {
                let (registry, name) = parts(key, registry_id);
                format!(
                    "Image with digest '{digest}'{} already exists in the repository with name '{name}' in registry \
                     with id '{registry}'",
                    tag.as_ref().map(|t| format!(" and tag '{t}'")).unwrap_or_default()
                )
            }
            Exists::Layer { key, digest } => format!("The layer '{digest}' already exists in {}", name_in(key)),
            Exists::Template { prefix } => {
                format!("A repository creation template with prefix '{prefix}' already exists")
            }
            x => iam_exists(x),
        },
        Error::Conflict(Conflict::RepositoryNotEmpty { key }) => {
            let (registry, name) = parts(key, registry_id);
            format!(
                "The repository with name '{name}' in registry with id '{registry}' cannot be deleted because it \
                 still contains images"
            )
        }
        Error::Internal(_) => "internal server error; see the server log".to_string(),
        e => oci_message(e),
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
pub fn ecr_response(e: &Error, registry_id: &str) -> Response {
    if e.is_internal() {
        tracing::error!(error = %e, "request failed");
    }
    let extra = match e {
        Error::Invalid(Invalid { kind: InvalidKind::LayerPart { last_valid_byte: Some(b) }, .. }) => {
            Some(json!({ "lastValidByteReceived": b }))
        }
        _ => None,
    };
    ecr_error_response(ecr_type(e), &ecr_message(e, registry_id), extra)
}

// ---- KMS ----

/// KMS exception name for each service error (all HTTP 400 but the server's own faults).
pub fn kms_type(e: &Error) -> &'static str {
    match e {
        Error::NotFound(_) => "NotFoundException",
        Error::AlreadyExists(_) => "AlreadyExistsException",
        Error::Conflict(Conflict::KmsKeyState { state, .. }) if state == "Disabled" => "DisabledException",
        Error::Conflict(Conflict::KmsManaged { .. }) => "UnsupportedOperationException",
        Error::Conflict(_) => "KMSInvalidStateException",
        Error::Invalid(i) => match i.kind {
            InvalidKind::Ciphertext => "InvalidCiphertextException",
            InvalidKind::PolicyDocument => "MalformedPolicyDocumentException",
            InvalidKind::ResourceTag => "TagException",
            _ => "ValidationException",
        },
        Error::Denied(_) => "AccessDeniedException",
        Error::Unauthenticated { why: Unauthenticated::ExpiredToken, .. } => "ExpiredTokenException",
        Error::Unauthenticated { .. } => "UnrecognizedClientException",
        Error::LimitExceeded { what: Limit::Tags, .. } => "TagException",
        Error::LimitExceeded { .. } => "LimitExceededException",
        Error::Throttled(_) => "ThrottlingException",
        Error::Internal(_) | Error::Unavailable(_) => "KMSInternalException",
    }
}

/// The message a KMS client reads.
pub fn kms_message(e: &Error) -> String {
    match e {
        Error::Internal(_) => "internal server error; see the server log".to_string(),
        Error::NotFound(NotFound::KmsKey { key }) => format!("Key '{key}' does not exist"),
        Error::Invalid(i) if i.kind == InvalidKind::Validation => match &i.field {
            Some(f) => {
                format!("1 validation error detected: Value at '{f}' failed to satisfy constraint: {}", i.reason)
            }
            None => i.reason.clone(),
        },
        e => oci_message(e),
    }
}

/// A KMS error response: `{"__type", "message"}`.
/// An AWS JSON 1.1 error: a 500 for the API's internal error type, else a 400.
fn json_error(kind: &str, message: &str, internal: bool) -> Response {
    let status = if internal { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::BAD_REQUEST };
    let body = json!({ "__type": kind, "message": message });
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.1"))], body.to_string())
        .into_response()
}

pub fn kms_error_response(kind: &str, message: &str) -> Response {
    json_error(kind, message, kind == "KMSInternalException")
}

/// A service error for a KMS client.
pub fn kms_response(e: &Error) -> Response {
    log_internal(e);
    kms_error_response(kms_type(e), &kms_message(e))
}

/// An internal error is logged where it is answered (its client reads only that there was one).
fn log_internal(e: &Error) {
    if e.is_internal() {
        tracing::error!(error = %e, "request failed");
    }
}

// ---- Secrets Manager ----

pub fn sm_type(e: &Error) -> &'static str {
    match e {
        Error::NotFound(_) => "ResourceNotFoundException",
        Error::AlreadyExists(_) => "ResourceExistsException",
        Error::Conflict(_) => "InvalidRequestException",
        Error::Invalid(_) => "InvalidParameterException",
        Error::Denied(_) => "AccessDeniedException",
        Error::Unauthenticated { why: Unauthenticated::ExpiredToken, .. } => "ExpiredTokenException",
        Error::Unauthenticated { .. } => "UnrecognizedClientException",
        Error::LimitExceeded { .. } => "LimitExceededException",
        Error::Throttled(_) => "ThrottlingException",
        Error::Internal(_) | Error::Unavailable(_) => "InternalServiceError",
    }
}

/// The message a Secrets Manager client reads.
pub fn sm_message(e: &Error) -> String {
    match e {
        Error::NotFound(NotFound::Secret { .. }) => "Secrets Manager can't find the specified secret.".into(),
        Error::NotFound(NotFound::SecretValue { what, .. }) => {
            format!("Secrets Manager can't find the specified secret value for {what}")
        }
        Error::AlreadyExists(Exists::Secret { name }) => {
            format!("The operation failed because the secret {name} already exists.")
        }
        Error::AlreadyExists(Exists::SecretVersion { .. }) => {
            "You can't modify an existing version, you can only create a new version.".into()
        }
        e => kms_message(e),
    }
}

pub fn sm_error_response(kind: &str, message: &str) -> Response {
    json_error(kind, message, kind == "InternalServiceError")
}

/// A service error for a Secrets Manager client.
pub fn sm_response(e: &Error) -> Response {
    log_internal(e);
    sm_error_response(sm_type(e), &sm_message(e))
}

// ---- IAM and STS ----

/// IAM's NoSuchEntity messages.
fn iam_not_found(n: &NotFound) -> Option<String> {
    Some(match n {
        NotFound::Entity { what, key, name } => format!("The {what} with {key} {name} cannot be found."),
        NotFound::Policy { arn, version: None } => format!("Policy {arn} does not exist or is not attachable."),
        NotFound::Policy { arn, version: Some(v) } => {
            format!("Policy {arn} version {v} does not exist or is not attachable.")
        }
        NotFound::Member { user, group } => format!("User {user} is not in group {group}."),
        _ => return None,
    })
}

/// IAM's EntityAlreadyExists messages.
fn iam_exists(x: &Exists) -> String {
    match x {
        Exists::Entity { what, name } => format!("{what} with name {name} already exists."),
        Exists::Policy { name } => format!("A policy called {name} already exists. Duplicate names are not allowed."),
        Exists::Account { id } => format!("Account {id} already exists."),
        x => x.to_string(),
    }
}

/// IAM / STS Query-API status and error code for each service error.
pub fn iam_code(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::NotFound(NotFound::Entity { .. } | NotFound::Policy { .. } | NotFound::Member { .. }) => {
            (StatusCode::NOT_FOUND, "NoSuchEntity")
        }
        Error::AlreadyExists(_) => (StatusCode::CONFLICT, "EntityAlreadyExists"),
        Error::Conflict(Conflict::DependentsLeft(_)) => (StatusCode::CONFLICT, "DeleteConflict"),
        Error::LimitExceeded { .. } => (StatusCode::CONFLICT, "LimitExceeded"),
        Error::Invalid(i) if i.kind == InvalidKind::PolicyDocument => {
            (StatusCode::BAD_REQUEST, "MalformedPolicyDocument")
        }
        Error::Invalid(i) if i.kind == InvalidKind::Validation => (StatusCode::BAD_REQUEST, "ValidationError"),
        Error::Denied(_) => (StatusCode::FORBIDDEN, "AccessDenied"),
        Error::Unauthenticated { why: Unauthenticated::ExpiredToken, .. } => (StatusCode::BAD_REQUEST, "ExpiredToken"),
        Error::Unauthenticated { .. } => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
        Error::Throttled(_) => (StatusCode::BAD_REQUEST, "Throttling"),
        Error::Internal(_) | Error::Unavailable(Unavailable::Busy(_) | Unavailable::Upstream(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "ServiceFailure")
        }
        Error::Unavailable(Unavailable::StorageFull(_)) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        _ => (StatusCode::BAD_REQUEST, "InvalidInput"),
    }
}

/// The message an IAM or STS client reads.
pub fn iam_message(e: &Error) -> String {
    match e {
        Error::Internal(_) => "internal server error; see the server log".to_string(),
        Error::NotFound(n) => iam_not_found(n).unwrap_or_else(|| n.to_string()),
        Error::AlreadyExists(x) => iam_exists(x),
        Error::Invalid(Invalid { kind: InvalidKind::Validation, field: Some(f), value: Some(v), reason }) => {
            format!("1 validation error detected: Value '{v}' at '{f}' failed to satisfy constraint: {reason}")
        }
        Error::Invalid(Invalid { kind: InvalidKind::Validation, field: Some(f), value: None, reason }) => {
            format!("1 validation error detected: Value null at '{f}' failed to satisfy constraint: {reason}")
        }
        Error::Conflict(Conflict::AwsManaged { arn }) => {
            format!("{arn} is an AWS managed policy and cannot be changed.")
        }
        e => oci_message(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kind_words_for_each_protocol() {
        // A repository of another account: its own registry id, not the configured one.
        let e = Error::from(NotFound::Repository { key: "111111111111:team/a".into() });
        assert_eq!(ecr_type(&e), "RepositoryNotFoundException");
        assert_eq!(
            ecr_message(&e, "000000000000"),
            "The repository with name 'team/a' does not exist in the registry with id '111111111111'"
        );
        assert_eq!(oci_code(&e), (StatusCode::NOT_FOUND, "NAME_UNKNOWN"));
        let e = Error::from(NotFound::Repository { key: "team/a".into() });
        assert!(ecr_message(&e, "000000000000").ends_with("registry with id '000000000000'"));

        let e = Error::parameter("imageDigest", "not a digest".into());
        assert_eq!(
            ecr_message(&e, "0"),
            "Invalid parameter at 'imageDigest' failed to satisfy constraint: not a digest"
        );

        let e = Error::Denied(Denied::Action {
            principal: "arn:aws:iam::000000000000:user/u".into(),
            action: "ecr:PutImage".into(),
            resource: "arn:aws:ecr:us-east-1:000000000000:repository/a".into(),
            by: DeniedBy::NoAllow,
        });
        assert_eq!((ecr_type(&e), iam_code(&e).1, oci_code(&e).1), ("AccessDeniedException", "AccessDenied", "DENIED"));
        assert!(oci_message(&e).starts_with(
            "User: arn:aws:iam::000000000000:user/u is not authorized to perform: ecr:PutImage on resource: "
        ));

        let e = Error::Invalid(Invalid {
            kind: InvalidKind::Validation,
            field: Some("userName".into()),
            value: None,
            reason: "Member must not be null".into(),
        });
        assert_eq!(iam_code(&e), (StatusCode::BAD_REQUEST, "ValidationError"));
        assert_eq!(
            iam_message(&e),
            "1 validation error detected: Value null at 'userName' failed to satisfy constraint: Member must not be null"
        );

        // Internal details never reach a client.
        let e = Error::Internal("disk /secret/path failed".into());
        for m in [oci_message(&e), ecr_message(&e, "0"), iam_message(&e)] {
            assert!(!m.contains("/secret/path"), "{m}");
        }
    }
}
