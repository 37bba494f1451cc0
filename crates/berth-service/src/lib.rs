//! Registry use cases: pushing and pulling blobs and manifests, uploads, tags, discovery and
//! consistency checks. Nothing here knows HTTP: the API crate translates requests into these calls.

pub mod access;
pub mod audit;
pub mod auth;
mod cache;
pub mod ecr;
mod error;
pub mod events;
mod fsck;
pub mod gc;
pub mod iam;
pub mod jobs;
pub mod lifecycle;
pub mod scan;
pub mod scan_config;
pub mod throttle;
mod upload;
pub mod worker;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use berth_blob::{BlobBody, BlobStore};
use berth_core::manifest::MAX_MANIFEST_SIZE;
use berth_core::{Algorithm, Digest, Reference, RepoName, parse_manifest};
use berth_meta::{Backend, ManifestRow, Meta, NewManifest, PutOutcome};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

pub use access::Who;
pub use audit::AuditEvent;
pub use auth::{AccessKey, Auth, Principal, Scope};
pub use ecr::{Repository, Template};
pub use error::{Error, Result};
pub use fsck::FsckReport;
pub use upload::{BodyStream, UploadStatus};

/// Most entries one page of a tag or catalog listing returns, whatever `n` asks.
pub const MAX_PAGE: usize = 10_000;

/// The registry service. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Registry {
    meta: Meta,
    blobs: Arc<dyn BlobStore>,
    /// Uploads being written by a request on this node: one request at a time per upload.
    busy_uploads: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    cache: Arc<cache::Cache>,
    settings: Arc<Settings>,
    /// Everything derived from the token-signing key; replaced whole when it is rotated.
    tokens: Arc<std::sync::RwLock<Arc<Tokens>>>,
    /// Pull times not yet written: (repository, digest) → ms. Written in batches, because a
    /// write per pull would make every pull a database write (ECR, too, records them lazily).
    pulls: Arc<Mutex<HashMap<String, HashMap<String, i64>>>>,
    access: Arc<access::AccessCache>,
    throttle: Arc<throttle::Throttle>,
    audit: tokio::sync::mpsc::Sender<audit::Msg>,
    iam: Arc<iam::IamCache>,
    counters: Arc<gc::Counters>,
    /// Wakes an idle scan worker of this node when a scan is queued here.
    scan_wake: Arc<tokio::sync::Notify>,
    /// This process's name in scan-job claims.
    node: Arc<str>,
    scan_policies: Arc<scan_config::PolicyCache>,
}

/// The keys derived from the stored token-signing key.
pub(crate) struct Tokens {
    /// The setting as stored (sealed), to notice a rotation by another process.
    stored: String,
    auth: Arc<Auth>,
    /// Signs STS session tokens; the other derives a session's secret from its token.
    sessions: berth_crypto::token::TokenKey,
    session_secrets: berth_crypto::token::TokenKey,
}

/// The associated data the token-signing key is sealed with.
const TOKEN_KEY_AAD: &[u8] = b"berth settings token_key";

/// The registry's identity and start-up choices.
#[derive(Debug, Clone)]
pub struct Settings {
    /// 12-digit registry (account) id.
    pub registry_id: String,
    pub region: String,
    /// Base URL clients reach the registry at (`http://127.0.0.1:5000`); its host is in
    /// repository URIs.
    pub public_url: String,
    /// On first start, add a `ROOT` creation template that creates repositories on push.
    pub create_on_push: bool,
    /// Seals access-key secrets in the metadata store; kept outside it.
    pub seal_key: berth_crypto::seal::SealKey,
    /// Other accounts' registries answer on `<account-id>.<account_domain>` (None: only
    /// through the ECR API's `registryId`).
    pub account_domain: Option<String>,
    /// Least time between two manual scans of one image (ECR: one a day).
    pub manual_scan_interval: std::time::Duration,
    /// Attach each completed scan's CycloneDX SBOM to the image as an OCI referrer.
    pub sbom_referrers: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            registry_id: "000000000000".into(),
            region: "us-east-1".into(),
            public_url: "http://127.0.0.1:5000".into(),
            create_on_push: true,
            seal_key: berth_crypto::seal::SealKey::generate(),
            account_domain: None,
            manual_scan_interval: std::time::Duration::from_secs(24 * 3600),
            sbom_referrers: false,
        }
    }
}

impl Settings {
    /// `host[:port]` of the public URL.
    pub fn public_host(&self) -> &str {
        let rest = self.public_url.split_once("://").map_or(self.public_url.as_str(), |(_, r)| r);
        rest.trim_end_matches('/')
    }

    pub fn root_arn(&self) -> String {
        auth::root_arn(&self.registry_id)
    }
}

/// A byte range as a client asked for it: `first-last`, `first-` or `-suffix_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    From { first: u64, last: Option<u64> },
    Suffix(u64),
}

pub struct BlobRead {
    pub digest: Digest,
    /// The whole blob's size.
    pub size: u64,
    /// The part being returned, when a range was asked for.
    pub range: Option<Range<u64>>,
    pub body: BlobBody,
}

/// A stored manifest as served to clients.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub content: Bytes,
    pub subject: Option<String>,
}

impl From<ManifestRow> for Manifest {
    fn from(r: ManifestRow) -> Self {
        Manifest { digest: r.digest, media_type: r.media_type, content: Bytes::from(r.content), subject: r.subject }
    }
}

/// Whether an index's child manifests must already be in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Children {
    /// ECR's PutImage: ReferencedImagesNotFound otherwise.
    Required,
    /// OCI pushes: a sparse index (some platforms only) is accepted, as Harbor and Zot do.
    MayBeAbsent,
}

/// The path a manifest is stored by: what it requires, and the cause its events name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Via {
    pub children: Children,
    pub cause: &'static str,
}

impl Via {
    pub const OCI_PUSH: Via = Via { children: Children::MayBeAbsent, cause: "push" };
    pub const PUT_IMAGE: Via = Via { children: Children::Required, cause: "put_image" };
    pub const SBOM: Via = Via { children: Children::Required, cause: "sbom" };
}

pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// One page of a listing; `more` says whether entries follow the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// A repository key: a name, account-qualified outside the configured account.
pub fn parse_repo(name: &str) -> Result<RepoName> {
    Ok(RepoName::parse_key(name)?)
}

pub fn parse_digest(s: &str) -> Result<Digest> {
    Ok(s.parse::<Digest>()?)
}

impl Registry {
    /// Opens the registry service over its stores: loads (or creates, once for all nodes) the
    /// token-signing key, and on first start adds the default creation template.
    pub async fn open(meta: Meta, blobs: Arc<dyn BlobStore>, settings: Settings, keys: Vec<AccessKey>) -> Result<Self> {
        let fresh = settings.seal_key.seal(berth_crypto::token::TokenKey::generate().as_bytes(), TOKEN_KEY_AAD);
        let stored = meta.setting_or_init("token_key", &fresh).await?;
        let stored = Self::seal_legacy_token_key(&meta, &settings, stored).await?;
        let tokens = Self::derive_tokens(&settings, stored, keys)?;
        // Only one node can use a SQLite database, so only there can this process see every write.
        let cache_enabled = meta.backend() == Backend::Sqlite;
        let cache = Arc::new(cache::Cache::new(cache_enabled));
        let counters: Arc<gc::Counters> = Arc::default();
        let r = Registry {
            meta: meta.clone(),
            blobs,
            busy_uploads: Arc::default(),
            cache,
            tokens: Arc::new(std::sync::RwLock::new(Arc::new(tokens))),
            settings: Arc::new(settings),
            pulls: Arc::default(),
            access: Arc::new(access::AccessCache::new(cache_enabled)),
            throttle: Arc::default(),
            audit: audit::start(meta.clone(), counters.audit_dropped.clone()),
            iam: Arc::new(iam::IamCache::new(cache_enabled)),
            counters,
            scan_wake: Arc::default(),
            node: hex::encode(&berth_crypto::random_bytes()[..8]).into(),
            scan_policies: Arc::new(scan_config::PolicyCache::new(cache_enabled)),
        };
        if r.meta.setting("templates_seeded").await?.is_none() {
            if r.settings.create_on_push {
                let t = Template {
                    description: Some("Created by Berth: repositories are created on first push".into()),
                    applied_for: vec!["CREATE_ON_PUSH".into()],
                    image_tag_mutability: Some("MUTABLE".into()),
                    ..Template::default()
                };
                match r.create_template("ROOT", t).await {
                    Ok(_) | Err(Error::TemplateAlreadyExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            r.meta.put_setting("templates_seeded", "1").await?;
        }
        Ok(r)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The token issuer and checker in force now (a rotation replaces it).
    pub fn auth(&self) -> Arc<Auth> {
        self.tokens().auth.clone()
    }

    pub(crate) fn tokens(&self) -> Arc<Tokens> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn derive_tokens(settings: &Settings, stored: String, keys: Vec<AccessKey>) -> Result<Tokens> {
        let raw = settings.seal_key.open(&stored, TOKEN_KEY_AAD).ok_or_else(|| {
            Error::Internal(
                "the stored token-signing key does not open with this secrets key: every node must use the same \
                 secrets key (BERTH_SECRETS_KEY or <data_dir>/secrets.key) as the one that sealed it"
                    .into(),
            )
        })?;
        let master = berth_crypto::token::TokenKey::from_bytes(&raw)
            .ok_or_else(|| Error::Internal("the stored token-signing key is corrupt".into()))?;
        Ok(Tokens {
            stored,
            auth: Arc::new(Auth::new(&master, keys)),
            sessions: master.derive("sts-session"),
            session_secrets: master.derive("sts-session-secret"),
        })
    }

    /// Data directories from before the key was sealed hold it as plain hex: seal it in place.
    async fn seal_legacy_token_key(meta: &Meta, settings: &Settings, stored: String) -> Result<String> {
        if stored.starts_with(berth_crypto::seal::PREFIX) {
            return Ok(stored);
        }
        let raw = hex::decode(stored.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| Error::Internal("the stored token-signing key is corrupt".into()))?;
        let sealed = settings.seal_key.seal(&raw, TOKEN_KEY_AAD);
        meta.put_setting("token_key", &sealed).await?;
        tracing::info!("sealed the token-signing key stored in plain text by an earlier version");
        Ok(sealed)
    }

    /// Replaces the token-signing key: every login password, bearer token, STS session and
    /// layer URL issued before stops working (here at once; on other processes when they next
    /// [`Registry::refresh_token_key`]).
    pub async fn rotate_token_key(&self) -> Result<()> {
        let sealed = self.settings.seal_key.seal(berth_crypto::token::TokenKey::generate().as_bytes(), TOKEN_KEY_AAD);
        self.meta.put_setting("token_key", &sealed).await?;
        self.refresh_token_key().await?;
        Ok(())
    }

    /// Picks up a token-signing key rotated by another process; whether it changed.
    pub async fn refresh_token_key(&self) -> Result<bool> {
        let Some(stored) = self.meta.setting("token_key").await? else { return Ok(false) };
        let current = self.tokens();
        if stored == current.stored {
            return Ok(false);
        }
        let keys = current.auth.static_keys();
        let fresh = Arc::new(Self::derive_tokens(&self.settings, stored, keys)?);
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        tracing::info!("the token-signing key was rotated: tokens issued before are no longer accepted");
        Ok(true)
    }

    pub fn throttle(&self) -> &throttle::Throttle {
        &self.throttle
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// This process's name in job claims.
    pub fn node(&self) -> Arc<str> {
        self.node.clone()
    }

    async fn existing_repo(&self, repo: &RepoName) -> Result<i64> {
        if let Some(id) = self.cache.repo_id(repo.as_str()) {
            return Ok(id);
        }
        let id = self.meta.repo_id(repo.as_str()).await?.ok_or_else(|| Error::NameUnknown(repo.to_string()))?;
        self.cache.set_repo_id(repo.as_str(), id);
        Ok(id)
    }

    /// The repository's id; a push to a missing one creates it when a creation template allows.
    async fn ensure_repo(&self, repo: &RepoName) -> Result<i64> {
        if let Some(id) = self.cache.repo_id(repo.as_str()) {
            return Ok(id);
        }
        let id = match self.meta.repo_id(repo.as_str()).await? {
            Some(id) => id,
            None => {
                let (settings, tags) = self
                    .template_for(repo.name(), "CREATE_ON_PUSH")
                    .await?
                    .ok_or_else(|| Error::RepoNotCreated(repo.to_string()))?;
                let id = self.meta.create_repo(repo.as_str(), &settings, &tags, true).await?.id;
                self.access.invalidate();
                id
            }
        };
        self.cache.set_repo_id(repo.as_str(), id);
        Ok(id)
    }

    // ---- blobs ----

    /// Size of a blob in the repository.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let id = self.existing_repo(repo).await?;
        let key = digest.to_string();
        if let Some(size) = self.cache.blob(repo.as_str(), &key) {
            return Ok(size);
        }
        let seen = self.cache.snapshot(repo.as_str());
        let size = self.meta.repo_blob(id, &key).await?;
        let size = size.ok_or_else(|| Error::BlobUnknown(key.clone()))? as u64;
        self.cache.put_blob(repo.as_str(), seen, &key, size);
        Ok(size)
    }

    pub async fn get_blob(&self, repo: &RepoName, digest: &Digest, range: Option<RangeRequest>) -> Result<BlobRead> {
        let size = self.stat_blob(repo, digest).await?;
        let range = range.map(|r| resolve_range(r, size)).transpose()?;
        let body = match self.blobs.open(digest, range.clone()).await {
            Ok(b) => b,
            Err(berth_blob::BlobError::NotFound(d)) => {
                return Err(Error::Internal(format!("blob {d} is recorded but missing from storage")));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(BlobRead { digest: digest.clone(), size, range, body })
    }

    /// Removes the blob from the repository (storage is reclaimed by garbage collection).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let id = self.existing_repo(repo).await?;
        let key = digest.to_string();
        let found = self.meta.unlink_blob(id, &key).await?;
        self.cache.drop_blob(repo.as_str(), &key);
        if found { Ok(()) } else { Err(Error::BlobUnknown(digest.to_string())) }
    }

    /// Links a blob that another repository holds into `repo`. Returns its size, or `None` when
    /// it cannot be mounted (the client then uploads it).
    pub async fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: Option<&RepoName>) -> Result<Option<u64>> {
        if !self.blob_mounting().await? {
            return Ok(None);
        }
        let key = digest.to_string();
        let size = match from {
            Some(src) => match self.meta.repo_id(src.as_str()).await? {
                Some(src_id) => self.meta.repo_blob(src_id, &key).await?,
                None => None,
            },
            None => None,
        };
        let Some(size) = size else { return Ok(None) };
        if self.blobs.stat(digest).await? != Some(size as u64) {
            return Ok(None);
        }
        let id = self.ensure_repo(repo).await?;
        match self.meta.link_blob(id, &key, size).await {
            Ok(()) => Ok(Some(size as u64)),
            // Being garbage-collected: the client uploads it instead.
            Err(berth_meta::MetaError::BlobDeleting(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    // ---- manifests ----

    /// Stores a manifest pushed by tag or by digest; `extra_tags` (a PUT by digest's `tag`
    /// parameters) are set on it as well, each like a PUT by that tag.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        extra_tags: &[&str],
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<PutManifest> {
        let reference = Reference::parse(reference)?;
        let extra: Vec<berth_core::Tag> =
            extra_tags.iter().map(|t| berth_core::Tag::parse(t)).collect::<Result<_, _>>()?;
        let (tag, digest) = match &reference {
            Reference::Tag(t) => (Some(t.as_str()), None),
            Reference::Digest(d) => (None, Some(d)),
        };
        let repo_id = self.ensure_repo(repo).await?;
        let first = tag.or(extra.first().map(|t| t.as_str()));
        // An index may name children that are not here (a mirror of some platforms only).
        let sparse = Via::OCI_PUSH;
        let put = self.store_manifest(repo, repo_id, first, digest, content_type, body, sparse).await?.0;
        for t in extra.iter().skip(usize::from(tag.is_none())) {
            self.store_manifest(repo, repo_id, Some(t.as_str()), Some(&put.digest), content_type, body, sparse).await?;
        }
        Ok(put)
    }

    /// Validates and stores a manifest, tagging it `tag`; `digest`, if given, must be its digest.
    #[allow(clippy::too_many_arguments)] // each is one field of the push; a struct would only rename them
    pub(crate) async fn store_manifest(
        &self,
        repo: &RepoName,
        repo_id: i64,
        tag: Option<&str>,
        digest: Option<&Digest>,
        content_type: Option<&str>,
        body: &[u8],
        via: Via,
    ) -> Result<(PutManifest, PutOutcome)> {
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(Error::ManifestTooLarge(body.len()));
        }
        self.check_space()?;
        let algorithm = digest.map_or(Algorithm::Sha256, |d| d.algorithm());
        let actual = berth_crypto::digest_of(algorithm, body);
        if let Some(d) = digest
            && *d != actual
        {
            return Err(Error::DigestInvalid(format!("manifest digest is {actual}, not {d} as the URL says")));
        }
        let digest = actual;
        let parsed = parse_manifest(body, content_type)?;
        let blobs: Vec<String> = parsed
            .blobs
            .iter()
            // Foreign (non-distributable) layers live elsewhere by design.
            .filter(|b| !b.media_type.contains("foreign") && !b.media_type.contains("nondistributable"))
            .map(|b| b.digest.to_string())
            .collect();
        let children: Vec<String> = parsed.children.iter().map(|c| c.digest.to_string()).collect();
        if children.contains(&digest.to_string()) {
            return Err(Error::ManifestInvalid("an index cannot contain itself".into()));
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.to_string());
        let annotations = parsed.annotations.as_ref().map(|a| serde_json::to_string(a).expect("a JSON map serializes"));
        let immutable_tag = match tag {
            Some(t) => match self.meta.get_repo(repo.as_str()).await? {
                Some(r) => ecr::tag_is_immutable(&r.settings, t),
                None => false,
            },
            None => false,
        };
        let digest_str = digest.to_string();
        let outcome = self
            .meta
            .put_manifest(
                repo_id,
                &NewManifest {
                    digest: &digest_str,
                    media_type: &parsed.media_type,
                    artifact_type: parsed.artifact_type.as_deref(),
                    subject: subject.as_deref(),
                    annotations: annotations.as_deref(),
                    content: body,
                    blobs: &blobs,
                    children: &children,
                    require_children: via.children == Children::Required,
                    tag,
                    immutable_tag,
                    cause: via.cause,
                },
            )
            .await
            .map_err(|e| match e {
                berth_meta::MetaError::TagImmutable(tag) => Error::TagImmutable { repo: repo.to_string(), tag },
                e => e.into(),
            })?;
        if let Some(t) = tag {
            self.cache.drop_tag(repo.as_str(), t);
        }
        Ok((PutManifest { digest, subject: parsed.subject.map(|s| s.digest) }, outcome))
    }

    pub async fn get_manifest(&self, repo: &RepoName, reference: &str) -> Result<Arc<Manifest>> {
        let reference = Reference::parse(reference)?;
        let id = self.existing_repo(repo).await?;
        let name = repo.as_str();
        let (cached, tag) = match &reference {
            Reference::Tag(t) => (self.cache.tag(name, t.as_str()), Some(t.as_str())),
            Reference::Digest(d) => (self.cache.digest(name, &d.to_string()), None),
        };
        if let Some(m) = cached {
            return Ok(m);
        }
        let seen = self.cache.snapshot(name);
        let row = match &reference {
            Reference::Tag(t) => self.meta.get_manifest_by_tag(id, t.as_str()).await?,
            Reference::Digest(d) => self.meta.get_manifest(id, &d.to_string()).await?,
        };
        let row = row.ok_or_else(|| Error::ManifestUnknown(reference.to_string()))?;
        let m = Arc::new(Manifest::from(row));
        self.cache.put_manifest(name, seen, tag, &m);
        Ok(m)
    }

    /// By digest: deletes the manifest and its tags. By tag: removes only the tag.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &str) -> Result<()> {
        let reference = Reference::parse(reference)?;
        let id = self.existing_repo(repo).await?;
        let found = match &reference {
            Reference::Tag(t) => {
                let found = self.meta.delete_tag(id, t.as_str()).await?;
                self.cache.drop_tag(repo.as_str(), t.as_str());
                found
            }
            Reference::Digest(d) => {
                let found = self.meta.delete_manifest(id, &d.to_string()).await?;
                self.cache.drop_manifests(repo.as_str());
                found
            }
        };
        if found { Ok(()) } else { Err(Error::ManifestUnknown(reference.to_string())) }
    }

    // ---- discovery ----

    pub async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: Option<usize>) -> Result<Page> {
        let id = self.existing_repo(repo).await?;
        let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let mut items = self.meta.list_tags(id, last, limit as i64 + 1).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, more })
    }

    /// Repository keys of `registry` after the name `last` that `viewer` may describe or pull
    /// from (`None`: every one). See [`visible_page`] for why a page never ends on a hidden name.
    pub async fn catalog(
        &self,
        viewer: Option<&Who>,
        registry: &str,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Page> {
        let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let prefix = self.repo_key(registry, "");
        let after = last.map(|l| self.repo_key(registry, l));
        let prefix = &prefix;
        let (items, more) = visible_page(
            after,
            limit,
            |after, n| Box::pin(async move { Ok(self.meta.list_repos(prefix, after.as_deref(), n).await?) }),
            String::clone,
            |k| {
                Box::pin(async move {
                    match viewer {
                        None => Ok(true),
                        Some(w) => Ok(self.decide(w, "ecr:DescribeRepositories", &k).await?.allowed()
                            || self.decide(w, "ecr:BatchGetImage", &k).await?.allowed()),
                    }
                })
            },
        )
        .await?;
        Ok(Page { items, more })
    }

    /// The referrers of `subject` as an OCI image index (empty when there are none or the
    /// repository does not exist, as the spec asks).
    pub async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Value> {
        let rows = match self.meta.repo_id(repo.as_str()).await? {
            Some(id) => self.meta.referrers(id, &subject.to_string(), artifact_type).await?,
            None => Vec::new(),
        };
        let manifests: Vec<Value> = rows
            .into_iter()
            .map(|r| {
                let mut d = Map::new();
                d.insert("mediaType".into(), r.media_type.into());
                d.insert("digest".into(), r.digest.into());
                d.insert("size".into(), r.size.into());
                if let Some(a) = r.artifact_type {
                    d.insert("artifactType".into(), a.into());
                }
                if let Some(a) = r.annotations.and_then(|a| serde_json::from_str::<Value>(&a).ok()) {
                    d.insert("annotations".into(), a);
                }
                Value::Object(d)
            })
            .collect();
        Ok(json!({
            "schemaVersion": 2,
            "mediaType": berth_core::media::OCI_INDEX,
            "manifests": manifests,
        }))
    }
}

/// Up to `limit` items after the cursor `after` that pass `visible`, read from `fetch` in
/// batches, and whether another visible one follows. Hidden items are skipped, never returned
/// as the last of a page: the cursor a client continues from (`Link`'s `last`, a `nextToken`) is
/// always an item it was shown, so paging reveals nothing about the names it may not see.
pub(crate) async fn visible_page<'a, T: Send + 'a>(
    mut after: Option<String>,
    limit: usize,
    mut fetch: impl FnMut(Option<String>, i64) -> BoxFuture<'a, Result<Vec<T>>> + Send,
    key: impl Fn(&T) -> String + Send,
    mut visible: impl FnMut(String) -> BoxFuture<'a, Result<bool>> + Send,
) -> Result<(Vec<T>, bool)> {
    if limit == 0 {
        return Ok((Vec::new(), false));
    }
    // One more than a page tells whether more follow; at least a modest batch when most are hidden.
    let batch = (limit + 1).max(100);
    let mut out = Vec::new();
    loop {
        let rows = fetch(after.take(), batch as i64).await?;
        let last_batch = rows.len() < batch;
        for row in rows {
            let k = key(&row);
            after = Some(k.clone());
            if visible(k).await? {
                out.push(row);
                if out.len() > limit {
                    out.truncate(limit);
                    return Ok((out, true));
                }
            }
        }
        if last_batch {
            return Ok((out, false));
        }
    }
}

fn resolve_range(r: RangeRequest, size: u64) -> Result<Range<u64>> {
    let range = match r {
        RangeRequest::From { first, last } => {
            let end = last.map_or(size, |l| l.saturating_add(1).min(size));
            if first >= size || last.is_some_and(|l| l < first) {
                return Err(Error::RangeNotSatisfiable { size });
            }
            first..end
        }
        RangeRequest::Suffix(n) => {
            if n == 0 || size == 0 {
                return Err(Error::RangeNotSatisfiable { size });
            }
            size.saturating_sub(n)..size
        }
    };
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let f = |first, last| RangeRequest::From { first, last };
        assert_eq!(resolve_range(f(0, Some(9)), 100).unwrap(), 0..10);
        assert_eq!(resolve_range(f(90, None), 100).unwrap(), 90..100);
        assert_eq!(resolve_range(f(90, Some(1000)), 100).unwrap(), 90..100);
        assert_eq!(resolve_range(RangeRequest::Suffix(10), 100).unwrap(), 90..100);
        assert_eq!(resolve_range(RangeRequest::Suffix(1000), 100).unwrap(), 0..100);
        assert!(resolve_range(f(100, None), 100).is_err());
        assert!(resolve_range(f(5, Some(4)), 100).is_err());
        assert!(resolve_range(RangeRequest::Suffix(0), 100).is_err());
    }
}
