//! Registry metadata: repositories, blobs and their links, manifests and what they reference, tags,
//! upload sessions. One code path for SQLite (embedded default) and PostgreSQL (scale-out), through
//! sqlx's `Any` driver; SQL here is written in the dialect both accept.
//!
//! Types here are plain strings and integers: digests and names are validated by the service
//! before they reach this crate.

mod audit;
mod batch;
mod ecr;
mod events;
mod gc;
mod iam;
mod jobs;
mod kms;
mod lifecycle;
mod migrate;
mod notify;
mod pull_through;
mod replication;
mod scan;
mod sealing;

pub use audit::{AuditFilter, AuditRow};
pub use ecr::{ImageRow, MAX_RESOURCE_TAGS, RepoRow, RepoSettings, TagStatus, TemplateRow};
pub use events::{EventKind, EventRow};
pub use gc::{GcMark, GcSweep};
pub use iam::{EntityRow, IdentityPolicies, KeyRow, ManagedPolicyRow, PolicyVersionRow};
pub use jobs::{JobRow, NotClaimed, QueueCounts};
pub use kms::{KmsAliasRow, KmsKeyRow, KmsMaterialRow};
pub use lifecycle::PreviewRow;
pub use notify::{Heard, Listener};
pub use pull_through::{RuleRow, SecretRow};
pub use replication::ReplicationStatusRow;
pub use scan::{SCAN_QUEUE, ScanJob, ScanRow, StoredScan, VulnRow};
pub use sealing::{BlobObject, RepoBlob};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::batch::{Batcher, TxFn};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("database migration: {0}")]
    Migration(String),
    #[error("unsupported database URL {0:?} (use sqlite://PATH or postgres://...)")]
    BadUrl(String),
    #[error("manifest references content missing from the repository: {}", .0.join(", "))]
    MissingReferences(Vec<String>),
    #[error("manifest {child} is referenced by {parent}")]
    Referenced { child: String, parent: String },
    #[error("upload {0} was changed concurrently")]
    UploadConflict(String),
    #[error("tag {0} is immutable")]
    TagImmutable(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("repository is not empty")]
    NotEmpty,
    /// Garbage collection is deleting this blob right now; store it again once it is gone.
    #[error("blob {0} is being garbage-collected")]
    BlobDeleting(String),
    #[error("a resource may have at most {0} tags")]
    TooManyTags(usize),
    #[error("database commit failed: {0}")]
    Commit(String),
    #[error("the metadata store is shut down")]
    Closed,
}

impl MetaError {
    /// Whether the database failed for lack of disk space (SQLite's SQLITE_FULL, PostgreSQL's
    /// class 53100 disk_full).
    pub fn is_storage_full(&self) -> bool {
        match self {
            MetaError::Db(sqlx::Error::Database(d)) => {
                matches!(d.code().as_deref(), Some("13") | Some("53100")) || d.message().contains("disk is full")
            }
            MetaError::Db(sqlx::Error::Io(e)) => matches!(e.raw_os_error(), Some(28) | Some(122)),
            MetaError::Commit(m) => m.contains("disk is full") || m.contains("No space left"),
            _ => false,
        }
    }
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// What a sealed manifest's stored bytes start with (never the start of a JSON document).
pub const SEALED_MANIFEST: [u8; 4] = *b"\0BM1";

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as i64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the metadata store. Cheap to clone.
#[derive(Clone)]
pub struct Meta {
    /// Writes go through here. On SQLite this pool has one connection: SQLite allows one writer,
    /// and queuing in the pool beats `SQLITE_BUSY` retries.
    write: AnyPool,
    read: AnyPool,
    backend: Backend,
    /// SQLite: every write goes through the group-commit task.
    batch: Option<Batcher>,
    /// For connections of their own (a PostgreSQL listener).
    url: std::sync::Arc<str>,
    /// Bumped after a write that may have added events commits: wakes this process's consumers.
    events: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    pub annotations: Option<String>,
    pub size: i64,
    pub content: Vec<u8>,
    pub created_at: i64,
}

/// A manifest to store together with everything it references.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    pub digest: &'a str,
    pub media_type: &'a str,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub annotations: Option<&'a str>,
    /// The bytes as stored (sealed by the service), and the manifest's own size.
    pub content: &'a [u8],
    pub size: i64,
    pub blobs: &'a [String],
    pub children: &'a [String],
    /// Refuse the manifest when a child (of an index) is not in the repository. Off for OCI
    /// pushes, which may mirror one platform of a multi-arch image (a sparse index).
    pub require_children: bool,
    pub tag: Option<&'a str>,
    /// Refuse to move `tag` if it already names another manifest.
    pub immutable_tag: bool,
    /// What stored it (`push`, `put_image`, ...), for the events it causes.
    pub cause: &'a str,
}

/// What storing a manifest changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub new_manifest: bool,
    /// The tag already named this manifest (or no tag was given).
    pub tag_unchanged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
    pub size: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: String,
    pub repo_id: i64,
    pub size: i64,
    pub hash_state: Option<Vec<u8>>,
    /// The blob store's state of the upload (opaque here).
    pub backend_state: Option<Vec<u8>>,
    /// The upload's data key, wrapped (`None`: begun before encryption, written in the clear).
    pub data_key: Option<Vec<u8>>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A reference from a manifest to content that should be in its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub repository: String,
    pub manifest: String,
    /// The referenced blob or child manifest.
    pub target: String,
}

fn manifest_row(r: &AnyRow) -> Result<ManifestRow> {
    Ok(ManifestRow {
        digest: r.try_get("digest")?,
        media_type: r.try_get("media_type")?,
        artifact_type: r.try_get("artifact_type")?,
        subject: r.try_get("subject")?,
        annotations: r.try_get("annotations")?,
        size: r.try_get("size")?,
        content: r.try_get("content")?,
        created_at: r.try_get("created_at")?,
    })
}

macro_rules! manifest_cols {
    () => {
        "m.digest, m.media_type, m.artifact_type, m.subject, m.annotations, m.size, m.content, m.created_at"
    };
}

/// The condition that a repository key (`name`) is in the account whose key prefix is `$3`.
macro_rules! in_account {
    () => {
        "(($3 = '' AND name NOT LIKE '%:%') OR ($3 <> '' AND SUBSTR(name, 1, LENGTH($3)) = $3))"
    };
}
pub(crate) use in_account;

impl Meta {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(MetaError::BadUrl(url.to_string()));
        };
        let meta = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") };
                let opts = || {
                    AnyPoolOptions::new()
                        .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn).await }))
                        .min_connections(1)
                };
                let write = opts().max_connections(1).connect(&url).await?;
                let read = opts().max_connections(8).connect(&url).await?;
                Meta { write, read, backend, batch: None, events: Default::default(), url: url.into() }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new().max_connections(16).connect(url).await?;
                Meta {
                    write: pool.clone(),
                    read: pool,
                    backend,
                    batch: None,
                    events: Default::default(),
                    url: url.into(),
                }
            }
        };
        migrate::run(&meta.write, backend).await?;
        let mut meta = meta;
        if backend == Backend::Sqlite {
            meta.batch = Some(Batcher::start(meta.write.clone()));
        }
        Ok(meta)
    }

    /// Runs `f` in a write transaction: batched with concurrent writes on SQLite, a transaction
    /// of its own on PostgreSQL (whose server groups commits itself).
    async fn write_tx<T: Send + 'static>(&self, f: TxFn<T>) -> Result<T> {
        match &self.batch {
            Some(b) => b.submit(f).await,
            None => {
                let mut tx = self.write.begin().await?;
                let r = f(&mut tx).await?;
                tx.commit().await?;
                Ok(r)
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Changes whenever this process may have written events (consumers elsewhere poll).
    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    pub(crate) fn events_written(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// [`Meta::write_tx`] for a write that may add events.
    async fn write_tx_events<T: Send + 'static>(&self, f: TxFn<T>) -> Result<T> {
        let r = self.write_tx(f).await;
        if r.is_ok() {
            self.events_written();
        }
        r
    }

    /// One round trip to the database (readiness checks).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    // ---- repositories ----

    pub async fn repo_id(&self, name: &str) -> Result<Option<i64>> {
        Ok(sqlx::query("SELECT id FROM repositories WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    /// Repository keys of one account (`prefix` `""` for the configured one, else
    /// `"<account>:"`) in lexical order, after the key `last`, at most `limit`.
    pub async fn list_repos(&self, prefix: &str, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(concat!(
            "SELECT name FROM repositories WHERE name > $1 AND ",
            in_account!(),
            " ORDER BY name LIMIT $2"
        ))
        .bind(last.unwrap_or(prefix))
        .bind(limit)
        .bind(prefix)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    // ---- blobs ----

    /// Size of a blob linked into the repository.
    pub async fn repo_blob(&self, repo_id: i64, digest: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT b.size FROM repo_blobs l JOIN blobs b ON b.digest = l.digest \
             WHERE l.repo_id = $1 AND l.digest = $2",
        )
        .bind(repo_id)
        .bind(digest)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Size of a blob known to the registry, in any repository.
    pub async fn blob_size(&self, digest: &str) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT size FROM blobs WHERE digest = $1").bind(digest).fetch_optional(&self.read).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Records a stored blob (if new) with its sealed copy `object` (if new for its scope), and
    /// links it into the repository. Returns whether `object` was recorded (`false`: the blob
    /// already had a copy for that scope, and `object` is not needed).
    pub async fn link_blob(&self, repo_id: i64, digest: &str, size: i64, object: Option<BlobObject>) -> Result<bool> {
        let digest = digest.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                insert_blob_and_link(c, repo_id, &digest, size).await?;
                match &object {
                    Some(o) => sealing::insert_object_in(c, &digest, o).await,
                    None => Ok(false),
                }
            })
        }))
        .await
    }

    /// Removes a blob's link from a repository. Refused while a manifest of the repository
    /// references it. Returns whether a link existed.
    pub async fn unlink_blob(&self, repo_id: i64, digest: &str) -> Result<bool> {
        let digest = digest.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                refuse_if_referenced(
                    c,
                    "SELECT manifest_digest FROM manifest_blobs WHERE repo_id = $1 AND blob_digest = $2 LIMIT 1",
                    repo_id,
                    &digest,
                )
                .await?;
                let n = sqlx::query("DELETE FROM repo_blobs WHERE repo_id = $1 AND digest = $2")
                    .bind(repo_id)
                    .bind(digest.as_str())
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                sqlx::query(
                    "INSERT INTO gc_candidates (digest, since) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
                )
                .bind(digest.as_str())
                .bind(now_ms())
                .execute(&mut *c)
                .await?;
                Ok(n > 0)
            })
        }))
        .await
    }

    /// Every blob digest the registry knows, with its recorded size.
    /// Every stored blob (those garbage collection is deleting are no longer stored).
    pub async fn all_blobs(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT digest, size FROM blobs WHERE state <> 'deleting' ORDER BY digest")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Manifest→blob references whose blob is not linked into the repository (should be none).
    pub async fn dangling_blob_refs(&self) -> Result<Vec<BlobRef>> {
        self.dangling(
            "SELECT r.name, mb.manifest_digest, mb.blob_digest FROM manifest_blobs mb \
             JOIN repositories r ON r.id = mb.repo_id \
             LEFT JOIN repo_blobs l ON l.repo_id = mb.repo_id AND l.digest = mb.blob_digest \
             WHERE l.digest IS NULL ORDER BY r.name, mb.manifest_digest",
        )
        .await
    }

    /// Index→child references whose child manifest is missing from the repository (should be none).
    pub async fn dangling_children(&self) -> Result<Vec<BlobRef>> {
        self.dangling(
            "SELECT r.name, c.parent_digest, c.child_digest FROM manifest_children c \
             JOIN repositories r ON r.id = c.repo_id \
             LEFT JOIN manifests m ON m.repo_id = c.repo_id AND m.digest = c.child_digest \
             WHERE m.digest IS NULL ORDER BY r.name, c.parent_digest",
        )
        .await
    }

    /// Runs a query selecting (repository, referring manifest, missing target).
    async fn dangling(&self, sql: &'static str) -> Result<Vec<BlobRef>> {
        let rows = sqlx::query(sql).fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| Ok(BlobRef { repository: r.try_get(0)?, manifest: r.try_get(1)?, target: r.try_get(2)? }))
            .collect()
    }

    /// Manifests stored in the clear (written before manifests were sealed): repository id,
    /// digest and content, in (repository, digest) order after `after`.
    pub async fn plain_manifests(&self, after: (i64, &str), limit: i64) -> Result<Vec<(i64, String, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT repo_id, digest, content FROM manifests WHERE substr(content, 1, 4) <> $1 \
             AND (repo_id > $2 OR (repo_id = $2 AND digest > $3)) ORDER BY repo_id, digest LIMIT $4",
        )
        .bind(SEALED_MANIFEST.as_slice())
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    pub async fn count_plain_manifests(&self) -> Result<i64> {
        let r = sqlx::query("SELECT COUNT(*) FROM manifests WHERE substr(content, 1, 4) <> $1")
            .bind(SEALED_MANIFEST.as_slice())
            .fetch_one(&self.read)
            .await?;
        Ok(r.try_get(0)?)
    }

    /// Replaces a manifest's stored bytes (sealing them) unless they changed meanwhile.
    pub async fn reseal_manifest(&self, repo_id: i64, digest: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let (digest, old, new) = (digest.to_string(), old.to_vec(), new.to_vec());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE manifests SET content = $1 WHERE repo_id = $2 AND digest = $3 AND content = $4",
                )
                .bind(new.as_slice())
                .bind(repo_id)
                .bind(digest.as_str())
                .bind(old.as_slice())
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n > 0)
            })
        }))
        .await
    }

    /// Every stored manifest as (repository, digest, content), for verification.
    pub async fn all_manifests(&self) -> Result<Vec<(String, String, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT r.name, m.digest, m.content FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             ORDER BY r.name, m.digest",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    // ---- manifests and tags ----

    /// Stores a manifest, its references and optionally a tag, atomically. Fails with
    /// [`MetaError::MissingReferences`] (storing nothing) if a referenced blob is not linked into
    /// the repository or a child manifest is not in it.
    pub async fn put_manifest(&self, repo_id: i64, m: &NewManifest<'_>) -> Result<PutOutcome> {
        let m = OwnedManifest {
            digest: m.digest.to_string(),
            media_type: m.media_type.to_string(),
            artifact_type: m.artifact_type.map(str::to_string),
            subject: m.subject.map(str::to_string),
            annotations: m.annotations.map(str::to_string),
            content: m.content.to_vec(),
            size: m.size,
            blobs: m.blobs.to_vec(),
            children: m.children.to_vec(),
            require_children: m.require_children,
            tag: m.tag.map(str::to_string),
            immutable_tag: m.immutable_tag,
            cause: m.cause.to_string(),
        };
        self.write_tx_events(Box::new(move |c| Box::pin(async move { put_manifest_tx(c, repo_id, &m).await }))).await
    }

    pub async fn get_manifest(&self, repo_id: i64, digest: &str) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            manifest_cols!(),
            " FROM manifests m WHERE m.repo_id = $1 AND m.digest = $2"
        ))
        .bind(repo_id)
        .bind(digest)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(manifest_row).transpose()
    }

    pub async fn get_manifest_by_tag(&self, repo_id: i64, tag: &str) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            manifest_cols!(),
            " FROM tags t JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.manifest_digest \
             WHERE t.repo_id = $1 AND t.name = $2"
        ))
        .bind(repo_id)
        .bind(tag)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(manifest_row).transpose()
    }

    /// Deletes a manifest with its tags and reference records. Refused while an index of the
    /// repository lists it. Returns whether it existed.
    pub async fn delete_manifest(&self, repo_id: i64, digest: &str) -> Result<bool> {
        let digest = digest.to_string();
        self.write_tx_events(Box::new(move |c| {
            Box::pin(async move {
                refuse_if_referenced(
                    c,
                    "SELECT parent_digest FROM manifest_children WHERE repo_id = $1 AND child_digest = $2 LIMIT 1",
                    repo_id,
                    &digest,
                )
                .await?;
                delete_manifest_rows(c, repo_id, &digest, "deleted").await
            })
        }))
        .await
    }

    /// Removes a tag (not the manifest). Returns whether it existed.
    pub async fn delete_tag(&self, repo_id: i64, tag: &str) -> Result<bool> {
        let tag = tag.to_string();
        self.write_tx_events(Box::new(move |c| {
            Box::pin(async move { delete_tag_row(c, repo_id, &tag, "deleted").await.map(|d| d.is_some()) })
        }))
        .await
    }

    /// Tags in lexical order, after `last`, at most `limit`.
    pub async fn list_tags(&self, repo_id: i64, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM tags WHERE repo_id = $1 AND name > $2 ORDER BY name LIMIT $3")
            .bind(repo_id)
            .bind(last.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Manifests of the repository whose `subject` is `digest`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repo_id: i64,
        subject: &str,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRow>> {
        // `$3 IS NULL` keeps one statement for both the filtered and unfiltered forms.
        let q = sqlx::query(
            "SELECT digest, media_type, artifact_type, annotations, size FROM manifests \
             WHERE repo_id = $1 AND subject = $2 AND ($3 IS NULL OR artifact_type = $3) \
             ORDER BY created_at, digest",
        )
        .bind(repo_id)
        .bind(subject)
        .bind(artifact_type);
        let rows = q.fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                Ok(ReferrerRow {
                    digest: r.try_get(0)?,
                    media_type: r.try_get(1)?,
                    artifact_type: r.try_get(2)?,
                    annotations: r.try_get(3)?,
                    size: r.try_get(4)?,
                })
            })
            .collect()
    }

    // ---- uploads ----

    pub async fn create_upload(
        &self,
        id: &str,
        repo_id: i64,
        hash_state: &[u8],
        backend_state: &[u8],
        data_key: Option<&[u8]>,
    ) -> Result<()> {
        let (id, state, backend) = (id.to_string(), hash_state.to_vec(), backend_state.to_vec());
        let data_key = data_key.map(<[u8]>::to_vec);
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO uploads (id, repo_id, size, hash_state, created_at, updated_at, backend_state, data_key) \
                     VALUES ($1, $2, 0, $3, $4, $4, $5, $6)",
                )
                .bind(id.as_str())
                .bind(repo_id)
                .bind(state.as_slice())
                .bind(now_ms())
                .bind(backend.as_slice())
                .bind(data_key.as_deref())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    pub async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        // Writes are acknowledged only once committed, so the read pool sees them.
        let row = sqlx::query(
            "SELECT id, repo_id, size, hash_state, created_at, updated_at, backend_state, data_key FROM uploads \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(UploadRow {
                id: r.try_get(0)?,
                repo_id: r.try_get(1)?,
                size: r.try_get(2)?,
                hash_state: r.try_get(3)?,
                created_at: r.try_get(4)?,
                updated_at: r.try_get(5)?,
                backend_state: r.try_get(6)?,
                data_key: r.try_get(7)?,
            })
        })
        .transpose()
    }

    /// Records that an upload grew from `old_size` to `new_size`, with its hash and blob-store
    /// states. Fails with [`MetaError::UploadConflict`] if someone else changed it meanwhile.
    pub async fn advance_upload(
        &self,
        id: &str,
        old_size: i64,
        new_size: i64,
        hash_state: Option<&[u8]>,
        backend_state: &[u8],
    ) -> Result<()> {
        let (id, state, backend) = (id.to_string(), hash_state.map(<[u8]>::to_vec), backend_state.to_vec());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE uploads SET size = $1, hash_state = $2, updated_at = $3, backend_state = $6 \
                     WHERE id = $4 AND size = $5",
                )
                .bind(new_size)
                .bind(state.as_deref())
                .bind(now_ms())
                .bind(id.as_str())
                .bind(old_size)
                .bind(backend.as_slice())
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(MetaError::UploadConflict(id));
                }
                Ok(())
            })
        }))
        .await
    }

    /// Atomically: the upload session ends and its blob is recorded (with its sealed copy, as
    /// [`Meta::link_blob`]) and linked into the repository. Returns whether `object` was recorded.
    pub async fn complete_upload(
        &self,
        id: &str,
        repo_id: i64,
        digest: &str,
        size: i64,
        object: Option<BlobObject>,
    ) -> Result<bool> {
        let (id, digest) = (id.to_string(), digest.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                insert_blob_and_link(c, repo_id, &digest, size).await?;
                let recorded = match &object {
                    Some(o) => sealing::insert_object_in(c, &digest, o).await?,
                    None => {
                        // An upload begun before encryption: its blob is stored in the clear.
                        sqlx::query("UPDATE blobs SET in_clear = 1 WHERE digest = $1")
                            .bind(digest.as_str())
                            .execute(&mut *c)
                            .await?;
                        false
                    }
                };
                sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id.as_str()).execute(&mut *c).await?;
                Ok(recorded)
            })
        }))
        .await
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM uploads WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            })
        }))
        .await
    }

    pub async fn upload_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM uploads ORDER BY id").fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

struct OwnedManifest {
    digest: String,
    media_type: String,
    artifact_type: Option<String>,
    subject: Option<String>,
    annotations: Option<String>,
    content: Vec<u8>,
    size: i64,
    blobs: Vec<String>,
    children: Vec<String>,
    require_children: bool,
    tag: Option<String>,
    immutable_tag: bool,
    cause: String,
}

async fn put_manifest_tx(c: &mut AnyConnection, repo_id: i64, m: &OwnedManifest) -> Result<PutOutcome> {
    let mut tag_unchanged = true;
    let mut current = None;
    if let Some(tag) = m.tag.as_deref() {
        current = sqlx::query("SELECT manifest_digest FROM tags WHERE repo_id = $1 AND name = $2")
            .bind(repo_id)
            .bind(tag)
            .fetch_optional(&mut *c)
            .await?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?;
        tag_unchanged = current.as_deref() == Some(m.digest.as_str());
        if m.immutable_tag && current.is_some() && !tag_unchanged {
            return Err(MetaError::TagImmutable(tag.to_string()));
        }
    }
    let mut missing = Vec::new();
    for b in &m.blobs {
        // Revive a blob garbage collection condemned; one it is deleting counts as missing (the
        // client uploads it again). Done before the check, so that on PostgreSQL the update
        // waits for a collection's concurrent update of the row and sees its outcome.
        sqlx::query("UPDATE blobs SET state = 'live', condemned_at = NULL WHERE digest = $1 AND state = 'condemned'")
            .bind(b.as_str())
            .execute(&mut *c)
            .await?;
        let found = sqlx::query(
            "SELECT 1 FROM repo_blobs rb JOIN blobs bl ON bl.digest = rb.digest \
             WHERE rb.repo_id = $1 AND rb.digest = $2 AND bl.state = 'live'",
        )
        .bind(repo_id)
        .bind(b.as_str())
        .fetch_optional(&mut *c)
        .await?;
        if found.is_none() {
            missing.push(format!("blob {b}"));
        }
    }
    for ch in m.children.iter().filter(|_| m.require_children) {
        let found = sqlx::query("SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(ch.as_str())
            .fetch_optional(&mut *c)
            .await?;
        if found.is_none() {
            missing.push(format!("manifest {ch}"));
        }
    }
    if !missing.is_empty() {
        return Err(MetaError::MissingReferences(missing));
    }
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO manifests (repo_id, digest, media_type, artifact_type, subject, annotations, size, content, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (repo_id, digest) DO NOTHING",
    )
    .bind(repo_id)
    .bind(m.digest.as_str())
    .bind(m.media_type.as_str())
    .bind(m.artifact_type.as_deref())
    .bind(m.subject.as_deref())
    .bind(m.annotations.as_deref())
    .bind(m.size)
    .bind(m.content.as_slice())
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected();
    if inserted > 0 {
        for b in &m.blobs {
            sqlx::query(
                "INSERT INTO manifest_blobs (repo_id, manifest_digest, blob_digest) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(repo_id)
            .bind(m.digest.as_str())
            .bind(b.as_str())
            .execute(&mut *c)
            .await?;
        }
        for ch in &m.children {
            sqlx::query(
                "INSERT INTO manifest_children (repo_id, parent_digest, child_digest) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(repo_id)
            .bind(m.digest.as_str())
            .bind(ch.as_str())
            .execute(&mut *c)
            .await?;
        }
        // An image's size is what its blobs add up to; an index's, its largest child's (as ECR).
        sqlx::query(
            "UPDATE manifests SET image_size = \
             (SELECT COALESCE(SUM(b.size), 0) FROM manifest_blobs mb JOIN blobs b ON b.digest = mb.blob_digest \
              WHERE mb.repo_id = $1 AND mb.manifest_digest = $2) + \
             (SELECT COALESCE(MAX(ch.image_size), 0) FROM manifest_children mc \
              JOIN manifests ch ON ch.repo_id = mc.repo_id AND ch.digest = mc.child_digest \
              WHERE mc.repo_id = $1 AND mc.parent_digest = $2) \
             WHERE repo_id = $1 AND digest = $2",
        )
        .bind(repo_id)
        .bind(m.digest.as_str())
        .execute(&mut *c)
        .await?;
    }
    if let Some(tag) = m.tag.as_deref().filter(|_| !tag_unchanged) {
        sqlx::query(
            "INSERT INTO tags (repo_id, name, manifest_digest, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (repo_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest, \
             updated_at = excluded.updated_at",
        )
        .bind(repo_id)
        .bind(tag)
        .bind(m.digest.as_str())
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    // Events last: on PostgreSQL they take the ordering lock, held only until the commit.
    if inserted > 0 {
        let detail = serde_json::json!({ "cause": m.cause, "media_type": m.media_type }).to_string();
        let tag = m.tag.as_deref();
        events::record(c, EventKind::ManifestStored, repo_id, Some(&m.digest), tag, Some(&detail)).await?;
    }
    if let Some(tag) = m.tag.as_deref().filter(|_| !tag_unchanged) {
        let detail = serde_json::json!({ "cause": m.cause, "previous": current }).to_string();
        events::record(c, EventKind::TagMoved, repo_id, Some(&m.digest), Some(tag), Some(&detail)).await?;
    }
    Ok(PutOutcome { new_manifest: inserted > 0, tag_unchanged })
}

/// Removes a tag and records that it went; returns the digest it named (None: there was no such tag).
pub(crate) async fn delete_tag_row(
    c: &mut AnyConnection,
    repo_id: i64,
    tag: &str,
    cause: &str,
) -> Result<Option<String>> {
    let row = sqlx::query("SELECT manifest_digest FROM tags WHERE repo_id = $1 AND name = $2")
        .bind(repo_id)
        .bind(tag)
        .fetch_optional(&mut *c)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let digest: String = row.try_get(0)?;
    sqlx::query("DELETE FROM tags WHERE repo_id = $1 AND name = $2").bind(repo_id).bind(tag).execute(&mut *c).await?;
    let detail = serde_json::json!({ "cause": cause }).to_string();
    events::record(c, EventKind::TagDeleted, repo_id, Some(&digest), Some(tag), Some(&detail)).await?;
    Ok(Some(digest))
}

/// Deletes a manifest with its tags, reference records and queued scan, and records that it
/// went (`cause`: `deleted`, `lifecycle`, ...); returns whether it existed.
pub(crate) async fn delete_manifest_rows(
    c: &mut AnyConnection,
    repo_id: i64,
    digest: &str,
    cause: &str,
) -> Result<bool> {
    let tags = sqlx::query("SELECT name FROM tags WHERE repo_id = $1 AND manifest_digest = $2 ORDER BY name")
        .bind(repo_id)
        .bind(digest)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    // What it referenced may now be garbage.
    sqlx::query(
        "INSERT INTO gc_candidates (digest, since) SELECT blob_digest, $3 FROM manifest_blobs \
         WHERE repo_id = $1 AND manifest_digest = $2 ON CONFLICT (digest) DO NOTHING",
    )
    .bind(repo_id)
    .bind(digest)
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    for table in [
        "DELETE FROM tags WHERE repo_id = $1 AND manifest_digest = $2",
        "DELETE FROM manifest_blobs WHERE repo_id = $1 AND manifest_digest = $2",
        "DELETE FROM manifest_children WHERE repo_id = $1 AND parent_digest = $2",
        "DELETE FROM image_scans WHERE repo_id = $1 AND digest = $2",
    ] {
        sqlx::query(table).bind(repo_id).bind(digest).execute(&mut *c).await?;
    }
    let n = sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
        .bind(repo_id)
        .bind(digest)
        .execute(&mut *c)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM jobs WHERE unique_key = $1")
        .bind(scan::scan_job_key(repo_id, digest))
        .execute(&mut *c)
        .await?;
    if n > 0 {
        let detail = serde_json::json!({ "cause": cause, "tags": tags }).to_string();
        events::record(c, EventKind::ImageDeleted, repo_id, Some(digest), None, Some(&detail)).await?;
    }
    Ok(n > 0)
}

/// Fails with [`MetaError::Referenced`] if `sql` (which selects what references `digest`) finds
/// anything: deleting would break it.
async fn refuse_if_referenced(c: &mut AnyConnection, sql: &'static str, repo_id: i64, digest: &str) -> Result<()> {
    match sqlx::query(sql).bind(repo_id).bind(digest).fetch_optional(&mut *c).await? {
        Some(r) => Err(MetaError::Referenced { child: digest.to_string(), parent: r.try_get(0)? }),
        None => Ok(()),
    }
}

async fn insert_blob_and_link(conn: &mut AnyConnection, repo_id: i64, digest: &str, size: i64) -> Result<()> {
    claim_blob_in(conn, digest, size).await?;
    sqlx::query("INSERT INTO repo_blobs (repo_id, digest, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(repo_id)
        .bind(digest)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records the blob as live (reviving it if garbage collection had condemned it) and as a
/// collection candidate (it may never be referenced). Fails with [`MetaError::BlobDeleting`]
/// while a collection is deleting it.
pub(crate) async fn claim_blob_in(conn: &mut AnyConnection, digest: &str, size: i64) -> Result<()> {
    let now = now_ms();
    let n = sqlx::query(
        "INSERT INTO blobs (digest, size, created_at, state) VALUES ($1, $2, $3, 'live') ON CONFLICT (digest) \
         DO UPDATE SET state = 'live', condemned_at = NULL WHERE blobs.state <> 'deleting'",
    )
    .bind(digest)
    .bind(size)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(MetaError::BlobDeleting(digest.to_string()));
    }
    sqlx::query("INSERT INTO gc_candidates (digest, since) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING")
        .bind(digest)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn sqlite_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    // WAL lets readers run beside the writer; synchronous=FULL makes every commit durable
    // before it is acknowledged.
    for p in [
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        "PRAGMA busy_timeout = 10000",
        "PRAGMA foreign_keys = ON",
        // Deleted and replaced content (a manifest sealed in place, a deleted row) is zeroed
        // where that costs no extra I/O, so less of what was stored in the clear lingers.
        "PRAGMA secure_delete = FAST",
    ] {
        sqlx::query(p).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Helpers for tests that need a fresh database.
pub mod testing {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Sets when a manifest was pushed and last pulled (tests of ages and lifecycle rules).
    pub async fn set_image_times(
        meta: &super::Meta,
        repo: &str,
        digest: &str,
        pushed_at: i64,
        last_pull: Option<i64>,
    ) -> Result<()> {
        let id = meta.repo_id(repo).await?.expect("repository exists");
        sqlx::query("UPDATE manifests SET created_at = $1, last_pull = $2 WHERE repo_id = $3 AND digest = $4")
            .bind(pushed_at)
            .bind(last_pull)
            .bind(id)
            .bind(digest)
            .execute(&meta.write)
            .await?;
        Ok(())
    }

    use sqlx::{Connection, Executor};

    use super::Result;

    /// URL of the PostgreSQL server the tests use, from `BERTH_TEST_POSTGRES_URL`. Panics with
    /// instructions when it is unset, unless `BERTH_TEST_SKIP_POSTGRES=1` says to skip loudly.
    pub fn postgres_url() -> Option<String> {
        match std::env::var("BERTH_TEST_POSTGRES_URL") {
            Ok(u) if !u.is_empty() => Some(u),
            _ if std::env::var("BERTH_TEST_SKIP_POSTGRES").as_deref() == Ok("1") => {
                eprintln!("WARNING: BERTH_TEST_SKIP_POSTGRES=1: PostgreSQL cases are NOT run");
                None
            }
            _ => panic!(
                "BERTH_TEST_POSTGRES_URL is not set. Start a server with \
                 `scripts/postgres-test-server.sh` and export its URL (or run ./test.sh), or set \
                 BERTH_TEST_SKIP_POSTGRES=1 to run SQLite only."
            ),
        }
    }

    /// Creates an empty database on the server at `admin_url` and returns its URL.
    pub async fn fresh_postgres_database(admin_url: &str) -> Result<String> {
        static N: AtomicU32 = AtomicU32::new(0);
        sqlx::any::install_default_drivers();
        let name = format!(
            "berth_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            super::now_ms() % 1_000_000
        );
        let mut conn = sqlx::AnyConnection::connect(admin_url).await?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await?;
        conn.close().await?;
        let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
        Ok(format!("{base}/{name}"))
    }
}
