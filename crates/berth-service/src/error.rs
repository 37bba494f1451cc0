//! What a service call can fail with, by kind, carrying what a protocol needs to word it. The
//! service says what went wrong in its own terms; `berth-api`'s `error` module alone turns a
//! kind into an OCI error code, an ECR exception or an IAM error, with their messages.

use berth_blob::BlobError;
use berth_core::{DigestError, ManifestError, NameError};
use berth_meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the call names does not exist.
    #[error("{0}")]
    NotFound(NotFound),
    /// What the call would create exists already.
    #[error("{0}")]
    AlreadyExists(Exists),
    /// The request itself is wrong: a value that breaks a rule.
    #[error("{0}")]
    Invalid(Invalid),
    /// The request is fine, the state of things refuses it.
    #[error("{0}")]
    Conflict(Conflict),
    /// The caller may not do it.
    #[error("{0}")]
    Denied(Denied),
    /// The credentials are missing, unknown, forged or expired.
    #[error("{reason}")]
    Unauthenticated { reason: String, why: Unauthenticated },
    /// A quota is reached.
    #[error("{reason}")]
    LimitExceeded { reason: String, what: Limit },
    /// Too many failures from this address: answered instead of their own errors.
    #[error("{0}")]
    Throttled(String),
    /// The registry cannot do it now.
    #[error("{0}")]
    Unavailable(Unavailable),
    /// The server's fault (logged; clients see a generic message).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Repository keys are names, account-qualified outside the configured account
/// (`berth_core::repo_key`); protocols word them with the registry id and name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFound {
    #[error("repository {key} not found")]
    Repository { key: String },
    /// A push to a repository that does not exist and that no creation template may create.
    #[error(
        "repository {key} does not exist and no repository creation template allows creating it on push; create it \
         first (aws ecr create-repository --repository-name {key}) or add a CREATE_ON_PUSH template"
    )]
    RepositoryNotCreated { key: String },
    /// Another account's registry, by host name.
    #[error("registry {account} (no such account on this server)")]
    Registry { account: String },
    #[error("blob {digest} not found in this repository")]
    Blob { digest: String },
    /// A layer the ECR API names, in repository `key`.
    #[error("layer {digest} does not exist in repository {key}")]
    Layer { key: String, digest: String },
    #[error("upload {id} not found")]
    Upload { id: String },
    /// A manifest by tag or digest (`why`: what else is wrong, when something is).
    #[error("manifest {reference} not found{}", why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default())]
    Manifest { reference: String, why: Option<String> },
    /// An image the ECR API names by id.
    #[error("image {} not found in repository {key} ({reason})", describe_id(digest.as_deref(), tag.as_deref()))]
    Image { key: String, digest: Option<String>, tag: Option<String>, reason: String },
    /// What a manifest references that the repository lacks (`blob <digest>`, `manifest <digest>`).
    #[error("manifest references content that is not in the repository: {}", .0.join(", "))]
    References(Vec<String>),
    /// An index's children missing from the repository (ECR's PutImage requires them).
    #[error("manifest references images that are not in the repository: {}", .0.join(", "))]
    ReferencedImages(Vec<String>),
    #[error("no repository creation template with prefix {prefix}")]
    Template { prefix: String },
    #[error("repository {key} has no policy")]
    RepositoryPolicy { key: String },
    #[error("registry {registry} has no policy")]
    RegistryPolicy { registry: String },
    #[error("repository {key} has no lifecycle policy")]
    LifecyclePolicy { key: String },
    #[error("repository {key} has no lifecycle policy preview")]
    LifecyclePreview { key: String },
    /// No scan of the image, or (`completed`) no completed one.
    #[error("no {}scan of {digest} in repository {key}", if *completed { "completed " } else { "" })]
    Scan { key: String, digest: String, tag: Option<String>, completed: bool },
    /// An IAM user, group, role, access key or inline policy (`what` as IAM says it: `user`,
    /// `Access Key`, `role policy`), by `key` (`name`, `id`).
    #[error("the {what} with {key} {name} cannot be found")]
    Entity { what: String, key: &'static str, name: String },
    /// A managed policy or one of its versions.
    #[error("policy {arn}{} does not exist or is not attachable", version.as_ref().map(|v| format!(" version {v}")).unwrap_or_default())]
    Policy { arn: String, version: Option<String> },
    /// A user is not a member of the group.
    #[error("user {user} is not in group {group}")]
    Member { user: String, group: String },
    /// A KMS key, by what the call named it (id, ARN, alias or alias ARN).
    #[error("KMS key {key} does not exist")]
    KmsKey { key: String },
    /// A KMS alias.
    #[error("alias {arn} is not found")]
    KmsAlias { arn: String },
    #[error("no pull through cache rule with the prefix {prefix}")]
    PullThroughRule { prefix: String },
    /// A secret, by name or ARN.
    #[error("secret {id} does not exist")]
    Secret { id: String },
    /// A version of a secret other than its current one (`what`: the VersionId or stage asked).
    #[error("secret {id} has no value for {what}")]
    SecretValue { id: String, what: String },
}

/// `{imageDigest:'..', imageTag:'..'}`, as ECR prints image ids.
pub fn describe_id(digest: Option<&str>, tag: Option<&str>) -> String {
    format!("{{imageDigest:'{}', imageTag:'{}'}}", digest.unwrap_or("null"), tag.unwrap_or("null"))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exists {
    #[error("repository {key} already exists")]
    Repository { key: String },
    #[error("image {digest}{} already exists in repository {key}", tag.as_ref().map(|t| format!(" with tag {t}")).unwrap_or_default())]
    Image { key: String, digest: String, tag: Option<String> },
    #[error("layer {digest} already exists in repository {key}")]
    Layer { key: String, digest: String },
    #[error("a repository creation template with prefix {prefix} already exists")]
    Template { prefix: String },
    /// An IAM user, group or role (`what`: `User`, `Group`, `Role`).
    #[error("{what} {name} already exists")]
    Entity { what: String, name: String },
    /// A managed policy of that name.
    #[error("a policy called {name} already exists")]
    Policy { name: String },
    #[error("account {id} already exists")]
    Account { id: String },
    #[error("an alias with the name {arn} already exists")]
    KmsAlias { arn: String },
    #[error("a pull through cache rule with the prefix {prefix} already exists")]
    PullThroughRule { prefix: String },
    #[error("a secret named {name} already exists")]
    Secret { name: String },
    /// A version written again with another value.
    #[error("version {id} of the secret already exists with another value")]
    SecretVersion { id: String },
}

/// A value that breaks a rule: `field` names it as the protocol's request does (`repositoryName`,
/// `PolicyText`), `value` is it (when worth repeating), `reason` the rule in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct Invalid {
    pub kind: InvalidKind,
    pub field: Option<String>,
    pub value: Option<String>,
    pub reason: String,
}

/// Which rule a value breaks, as far as protocols answer them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// Any request parameter.
    Parameter,
    /// A request that breaks the operation's documented constraints (ECR ValidationException,
    /// IAM ValidationError).
    Validation,
    /// A repository name.
    Name,
    /// An image tag.
    Tag,
    /// A digest, or content whose digest is not the one given.
    Digest,
    Manifest,
    ManifestTooLarge {
        size: usize,
    },
    /// An upload's request (a bad Content-Range, a body that breaks off).
    Upload,
    /// A byte range of a blob of `size` bytes that no byte satisfies.
    Range {
        size: u64,
    },
    /// A chunk that does not start where the upload ends.
    Chunk {
        start: u64,
        current: u64,
    },
    /// An ECR layer part.
    LayerPart {
        last_valid_byte: Option<u64>,
    },
    /// A layer whose content is not the digest given.
    Layer,
    /// PutImage's manifest is not the digest given.
    ImageDigest,
    /// A resource tag.
    ResourceTag,
    /// An OCI page size.
    Pagination,
    /// An IAM policy document.
    PolicyDocument,
    /// A KMS ciphertext that does not open (changed, or not KMS's).
    Ciphertext,
    /// A completion of an upload with nothing in it.
    EmptyUpload,
    /// A layer part smaller than the minimum followed by another.
    LayerPartTooSmall,
    /// Not a container image (an artifact): nothing to scan.
    UnsupportedImage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("tag {tag} of repository {key} is immutable")]
    TagImmutable { key: String, tag: String },
    #[error("repository {key} still contains images")]
    RepositoryNotEmpty { key: String },
    /// Deleting `child` would break `parent`, which references it.
    #[error("{child} is referenced by manifest {parent}; delete that first")]
    Referenced { child: String, parent: String },
    /// An upload changed under the request (another request appended to it).
    #[error("upload {id} was modified by a concurrent request")]
    UploadChanged { id: String },
    /// An IAM entity or policy something still depends on.
    #[error("{0}")]
    DependentsLeft(String),
    /// An AWS-managed policy, which cannot be changed.
    #[error("{arn} is an AWS managed policy and cannot be changed")]
    AwsManaged { arn: String },
    /// A KMS key whose state refuses the operation: `Disabled`, or `PendingDeletion` (until
    /// `deletion`, an RFC 3339 date), or a key gone for good (`Deleted`).
    #[error("{arn} is {}", describe_key_state(state, deletion.as_deref()))]
    KmsKeyState { arn: String, state: String, deletion: Option<String> },
    /// An AWS-managed KMS key, which its account cannot change.
    #[error("{arn} is an AWS managed key: this operation is not available on it")]
    KmsManaged { arn: String },
}

/// A KMS key state in words.
pub fn describe_key_state(state: &str, deletion: Option<&str>) -> String {
    match (state, deletion) {
        ("Disabled", _) => "disabled".into(),
        ("PendingDeletion", Some(d)) => format!("pending deletion (scheduled for {d})"),
        ("PendingDeletion", None) => "pending deletion".into(),
        ("Deleted", _) => "deleted: what it sealed can no longer be read".into(),
        (s, _) => format!("in state {s}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// A policy decision: `principal` (an ARN, `anonymous`) may not do `action` on `resource`.
    #[error("{principal} is not authorized to perform {action} on {resource}")]
    Action { principal: String, action: String, resource: String, by: DeniedBy },
    /// The repository's scan policy refuses pulls of this image.
    #[error("{0}")]
    PullBlocked(String),
    /// Work the server's operator alone does.
    #[error("only the server's operator may {what} (with the berth command)")]
    OperatorOnly { what: String },
}

/// What refused an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedBy {
    /// An explicit deny, in any policy.
    ExplicitDeny,
    /// No identity-based or resource-based policy allows it.
    NoAllow,
    /// No identity-based policy allows it (IAM, where resources have no policies).
    NoIdentityAllow,
    /// An explicit deny in an identity-based policy (IAM).
    IdentityDeny,
    /// A role's trust policy, or the caller's policies, do not let it assume the role.
    Trust,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// Missing, malformed, unknown or no longer valid credentials.
    Credentials,
    /// A session token that is forged or altered.
    InvalidToken,
    ExpiredToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A resource's tags.
    Tags,
    /// Any other quota.
    Quota,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The disk holding blobs or metadata is full: nothing new is stored until space is freed.
    #[error(
        "the registry's storage is full ({0}); nothing new is stored until space is freed: delete images or \
         repositories (garbage collection then removes their blobs) or add space"
    )]
    StorageFull(String),
    /// Try again shortly (garbage collection is deleting this very blob).
    #[error("{0}")]
    Busy(String),
    /// A pull-through cache's upstream did not answer, and nothing is cached to serve instead.
    #[error("{0}")]
    Upstream(String),
}

impl Error {
    /// Whether this is the server's fault (to be logged), not the client's.
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Internal(_))
    }

    pub fn invalid(kind: InvalidKind, reason: String) -> Error {
        Error::Invalid(Invalid { kind, field: None, value: None, reason })
    }

    /// A request parameter `field` that breaks a rule.
    pub fn parameter(field: &str, reason: String) -> Error {
        Error::Invalid(Invalid { kind: InvalidKind::Parameter, field: Some(field.to_string()), value: None, reason })
    }

    /// A request that is wrong as a whole (no one parameter to name).
    pub fn bad_request(reason: String) -> Error {
        Error::invalid(InvalidKind::Parameter, reason)
    }

    /// A broken documented constraint (ECR's ValidationException, IAM's ValidationError).
    pub fn validation(reason: String) -> Error {
        Error::invalid(InvalidKind::Validation, reason)
    }

    /// [`Error::validation`] of `value` at `field`.
    pub fn validation_at(field: &str, value: &str, reason: String) -> Error {
        Error::Invalid(Invalid {
            kind: InvalidKind::Validation,
            field: Some(field.to_string()),
            value: Some(value.to_string()),
            reason,
        })
    }

    pub fn unauthenticated(reason: String) -> Error {
        Error::Unauthenticated { reason, why: Unauthenticated::Credentials }
    }

    pub fn quota(reason: String) -> Error {
        Error::LimitExceeded { reason, what: Limit::Quota }
    }

    /// Whether the caller was refused (by a decision, not by a failure).
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Denied(Denied::Action { .. } | Denied::OperatorOnly { .. }))
    }
}

impl From<NotFound> for Error {
    fn from(e: NotFound) -> Self {
        Error::NotFound(e)
    }
}

impl From<Exists> for Error {
    fn from(e: Exists) -> Self {
        Error::AlreadyExists(e)
    }
}

impl From<Conflict> for Error {
    fn from(e: Conflict) -> Self {
        Error::Conflict(e)
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        match e {
            NameError::InvalidTag(_) => Error::invalid(InvalidKind::Tag, e.to_string()),
            NameError::InvalidReference(_, ref d) => Error::invalid(InvalidKind::Digest, format!("{e}: {d}")),
            _ => Error::invalid(InvalidKind::Name, e.to_string()),
        }
    }
}

impl From<DigestError> for Error {
    fn from(e: DigestError) -> Self {
        Error::invalid(InvalidKind::Digest, e.to_string())
    }
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Self {
        Error::invalid(InvalidKind::Manifest, e.to_string())
    }
}

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::MissingReferences(v) if v.iter().all(|m| m.starts_with("manifest ")) => {
                NotFound::ReferencedImages(v).into()
            }
            MetaError::MissingReferences(v) => NotFound::References(v).into(),
            MetaError::TooManyTags(n) => {
                Error::LimitExceeded { reason: format!("a repository may have at most {n} tags"), what: Limit::Tags }
            }
            MetaError::Referenced { child, parent } => Conflict::Referenced { child, parent }.into(),
            MetaError::BlobDeleting(d) => Error::Unavailable(Unavailable::Busy(format!(
                "blob {d} is being garbage-collected right now; push it again in a moment"
            ))),
            MetaError::UploadConflict(id) => Conflict::UploadChanged { id }.into(),
            e if e.is_storage_full() => {
                Error::Unavailable(Unavailable::StorageFull("the metadata database has no space left".into()))
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::UploadNotFound(id) | BlobError::BadUploadId(id) => NotFound::Upload { id }.into(),
            BlobError::StorageFull(_) => Error::Unavailable(Unavailable::StorageFull("no space left for blobs".into())),
            other => Error::Internal(other.to_string()),
        }
    }
}
