use berth_blob::BlobError;
use berth_core::{DigestError, ManifestError, NameError};
use berth_meta::MetaError;

/// Everything a registry operation can fail with. The API layer maps each variant to a protocol
/// error (OCI code and status, later ECR exception) in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NameInvalid(NameError),
    #[error("{0}")]
    TagInvalid(NameError),
    #[error("repository {0} not found")]
    NameUnknown(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("blob {0} not found in this repository")]
    BlobUnknown(String),
    #[error("upload {0} not found")]
    UploadUnknown(String),
    #[error("{0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload ends.
    #[error("chunk starts at {start} but the upload holds {current} bytes")]
    ChunkOutOfOrder { start: u64, current: u64 },
    #[error("requested range is not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("manifest {0} not found")]
    ManifestUnknown(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest references content that is not in the repository: {0}")]
    ManifestBlobUnknown(String),
    #[error("manifest is {0} bytes; the limit is {max}", max = berth_core::manifest::MAX_MANIFEST_SIZE)]
    ManifestTooLarge(usize),
    #[error("{0}")]
    Conflict(String),
    /// A push to a repository that does not exist and that no creation template may create.
    #[error(
        "repository {0} does not exist and no repository creation template allows creating it on push; create it \
         first (aws ecr create-repository --repository-name {0}) or add a CREATE_ON_PUSH template"
    )]
    RepoNotCreated(String),
    /// A repository the control plane was asked about does not exist (full message).
    #[error("{0}")]
    RepositoryNotFound(String),
    #[error("{0}")]
    RepositoryAlreadyExists(String),
    #[error("{0}")]
    RepositoryNotEmpty(String),
    #[error(
        "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the \
         tag is immutable."
    )]
    TagImmutable { repo: String, tag: String },
    #[error("{0}")]
    ImageAlreadyExists(String),
    #[error("{0}")]
    ImageNotFound(String),
    #[error("{0}")]
    ImageDigestMismatch(String),
    #[error("manifest references images that are not in the repository: {0}")]
    ReferencedImagesNotFound(String),
    #[error("A repository creation template with prefix '{0}' already exists")]
    TemplateAlreadyExists(String),
    #[error("No repository creation template with prefix '{0}' exists")]
    TemplateNotFound(String),
    #[error("{0}")]
    TooManyTags(String),
    #[error("{0}")]
    InvalidTagParameter(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    LayerAlreadyExists(String),
    #[error("{0}")]
    EmptyUpload(String),
    #[error("{0}")]
    LayerPartTooSmall(String),
    #[error("{0}")]
    InvalidLayer(String),
    #[error("{message}")]
    InvalidLayerPart { message: String, last_valid_byte: Option<u64> },
    /// Authenticated, but no policy allows it (or one denies it).
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    RepositoryPolicyNotFound(String),
    #[error("{0}")]
    RegistryPolicyNotFound(String),
    #[error("{0}")]
    LifecyclePolicyNotFound(String),
    /// No scan of that image exists (yet).
    #[error("{0}")]
    ScanNotFound(String),
    #[error("{0}")]
    LifecyclePolicyPreviewNotFound(String),
    /// Too many failed authentication attempts from this address or for this key.
    #[error("{0}")]
    Throttled(String),
    /// Credentials that are missing, unknown, expired or not valid for what was asked.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    PaginationInvalid(String),
    /// IAM: no user, group, role, key or policy of that name.
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    /// IAM: the entity still has keys, policies or members.
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    InvalidInput(String),
    /// A session token that is forged or altered.
    #[error("{0}")]
    InvalidToken(String),
    #[error("{0}")]
    ExpiredToken(String),
    /// Not a container image (an artifact): nothing to scan.
    #[error("{0}")]
    UnsupportedImage(String),
    /// The repository's scan policy refuses pulls of this image.
    #[error("{0}")]
    PullBlocked(String),
    /// Try again shortly (garbage collection is deleting this very blob).
    #[error("{0}")]
    Busy(String),
    /// The disk holding blobs or metadata is full: nothing new is stored until space is freed.
    #[error(
        "the registry's storage is full ({0}); nothing new is stored until space is freed: delete images or \
         repositories (garbage collection then removes their blobs) or add space"
    )]
    StorageFull(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        match e {
            NameError::InvalidTag(_) => Error::TagInvalid(e),
            NameError::InvalidReference(_, ref d) => Error::DigestInvalid(format!("{e}: {d}")),
            _ => Error::NameInvalid(e),
        }
    }
}

impl From<DigestError> for Error {
    fn from(e: DigestError) -> Self {
        Error::DigestInvalid(e.to_string())
    }
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Self {
        Error::ManifestInvalid(e.to_string())
    }
}

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::MissingReferences(v) if v.iter().all(|m| m.starts_with("manifest ")) => {
                Error::ReferencedImagesNotFound(v.join(", "))
            }
            MetaError::MissingReferences(v) => Error::ManifestBlobUnknown(v.join(", ")),
            MetaError::TooManyTags(n) => Error::TooManyTags(format!("a repository may have at most {n} tags")),
            MetaError::Referenced { child, parent } => {
                Error::Conflict(format!("{child} is referenced by manifest {parent}; delete that first"))
            }
            MetaError::BlobDeleting(d) => {
                Error::Busy(format!("blob {d} is being garbage-collected right now; push it again in a moment"))
            }
            MetaError::UploadConflict(id) => {
                Error::UploadInvalid(format!("upload {id} was modified by a concurrent request"))
            }
            e if e.is_storage_full() => Error::StorageFull("the metadata database has no space left".into()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::UploadNotFound(id) => Error::UploadUnknown(id),
            BlobError::BadUploadId(id) => Error::UploadUnknown(id),
            BlobError::StorageFull(_) => Error::StorageFull("no space left for blobs".into()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl Error {
    /// Whether this is the server's fault (to be logged), not the client's.
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Internal(_))
    }
}
