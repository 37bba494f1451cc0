//! Content as the OCI distribution API sees it: blobs (read, ranged, mounted, deleted), uploads
//! ([`uploads`]), manifests stored byte for byte with everything they reference, tags, the
//! catalog and referrers, and the pull times of images. Each entry point decides the caller's
//! `ecr:` action on the repository first, as ECR maps OCI requests.

mod uploads;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use berth_core::manifest::MAX_MANIFEST_SIZE;
use berth_core::{Algorithm, Digest, Reference, RepoName, Tag, parse_manifest};
use berth_meta::{NewManifest, PutOutcome};
use serde_json::{Map, Value, json};

pub use uploads::{BodyStream, UploadStatus};

use crate::access::Access;
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Conflict, Error, InvalidKind, NotFound, Result, Unavailable};
use crate::model::{
    BlobRead, Children, ImageFailure, ImageId, MAX_PAGE, Manifest, Page, PutManifest, RangeRequest, Via, resolve_range,
    visible_page,
};
use crate::repo_settings::tag_is_immutable;
use crate::repositories::Repositories;
use crate::scan_config::ScanConfig;

/// What a cross-repository mount did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount {
    /// The blob's size when it was mounted; `None`: the client uploads it instead.
    pub size: Option<u64>,
    /// Whether the caller may pull from the source (when not, the source was not looked at).
    pub source_readable: bool,
}

domain! {
    /// Blobs, uploads, manifests and tags.
    Content
}

impl<'a> Content<'a> {
    fn access(&self) -> Access<'a> {
        Access(self.0)
    }

    fn repos(&self) -> Repositories<'a> {
        Repositories(self.0)
    }

    // ---- blobs ----

    /// Size of a blob in the repository (HEAD: `ecr:BatchCheckLayerAvailability`).
    pub async fn stat_blob(&self, caller: &Caller, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.access().check(caller, "ecr:BatchCheckLayerAvailability", repo.as_str()).await?;
        self.blob_size(repo, digest).await
    }

    /// Size of a blob linked into the repository.
    pub(crate) async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let id = self.repos().existing_repo(repo).await?;
        let key = digest.to_string();
        if let Some(size) = self.caches.content.blob(repo.as_str(), &key) {
            return Ok(size);
        }
        let seen = self.caches.content.snapshot(repo.as_str());
        let size = self.meta.repo_blob(id, &key).await?;
        let size = size.ok_or_else(|| NotFound::Blob { digest: key.clone() })? as u64;
        self.caches.content.put_blob(repo.as_str(), seen, &key, size);
        Ok(size)
    }

    /// A blob, or a range of it (`ecr:GetDownloadUrlForLayer`).
    pub async fn get_blob(
        &self,
        caller: &Caller,
        repo: &RepoName,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<BlobRead> {
        self.access().check(caller, "ecr:GetDownloadUrlForLayer", repo.as_str()).await?;
        match self.read_blob(Some(caller), repo, digest, range).await {
            // Under a pull-through rule: asked of the upstream (a range is served once cached).
            Err(e @ Error::NotFound(NotFound::Blob { .. } | NotFound::Repository { .. })) => {
                match self.pull_through_blob(caller, repo, digest).await? {
                    Some(b) if range.is_none() => Ok(b),
                    Some(b) => {
                        drop(b);
                        Err(e)
                    }
                    None => Err(e),
                }
            }
            r => r,
        }
    }

    /// A blob by a URL GetDownloadUrlForLayer signed (the signature stands for the decision
    /// made when it was issued, and expires).
    pub async fn download(
        &self,
        repo: &RepoName,
        digest: &Digest,
        expires: &str,
        signature: &str,
        range: Option<RangeRequest>,
    ) -> Result<BlobRead> {
        self.auth().check_download(repo.as_str(), &digest.to_string(), expires, signature)?;
        self.read_blob(None, repo, digest, range).await
    }

    pub(crate) async fn read_blob(
        &self,
        who: Option<&Caller>,
        repo: &RepoName,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<BlobRead> {
        let id = self.repos().existing_repo(repo).await?;
        let key = digest.to_string();
        let blob = match self.caches.content.blob_object(repo.as_str(), &key) {
            Some(b) => b,
            None => {
                let seen = self.caches.content.snapshot(repo.as_str());
                let b = self
                    .meta
                    .repo_blob_object(id, &key)
                    .await?
                    .ok_or_else(|| NotFound::Blob { digest: key.clone() })?;
                let b = Arc::new(b);
                self.caches.content.put_blob_object(repo.as_str(), seen, &key, &b);
                b
            }
        };
        let size = blob.size as u64;
        let range = range.map(|r| resolve_range(r, size)).transpose()?;
        let body = match self.open_repo_blob(who, digest, &blob, range.clone()).await {
            // Stored in the clear and sealed since it was looked up: read the sealed copy.
            Err(e) if blob.object.is_none() => {
                self.caches.content.drop_blob(repo.as_str(), &key);
                match self.meta.repo_blob_object(id, &key).await? {
                    Some(again) if again.object.is_some() => {
                        self.open_repo_blob(who, digest, &again, range.clone()).await?
                    }
                    _ => return Err(e),
                }
            }
            r => r?,
        };
        Ok(BlobRead { digest: digest.clone(), size, range, body })
    }

    /// Removes the blob from the repository (storage is reclaimed by garbage collection).
    pub async fn delete_blob(&self, caller: &Caller, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.access().check(caller, "ecr:BatchDeleteImage", repo.as_str()).await?;
        let id = self.repos().existing_repo(repo).await?;
        let key = digest.to_string();
        let found = self.meta.unlink_blob(id, &key).await?;
        self.caches.content.drop_blob(repo.as_str(), &key);
        if found { Ok(()) } else { Err(NotFound::Blob { digest: digest.to_string() }.into()) }
    }

    /// Links a blob that another repository holds into `repo` (`ecr:InitiateLayerUpload`
    /// here; pulling from `from` needs `ecr:GetDownloadUrlForLayer` there, or it is not looked
    /// at). When it cannot be mounted, the client uploads it.
    pub async fn mount_blob(
        &self,
        caller: &Caller,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Mount> {
        self.access().check(caller, "ecr:InitiateLayerUpload", repo.as_str()).await?;
        let source_readable = match from {
            Some(src) => self.access().decide(caller, "ecr:GetDownloadUrlForLayer", src.as_str()).await?.allowed(),
            None => false,
        };
        let size = if source_readable { self.link_from(caller, repo, digest, from).await? } else { None };
        Ok(Mount { size, source_readable })
    }

    async fn link_from(
        &self,
        caller: &Caller,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<u64>> {
        if !self.repos().blob_mounting().await? {
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
        let id = self.repos().ensure_repo_for(Some(caller), repo).await?;
        // Only a copy sealed in this repository's scope is shared; across keys the client
        // uploads (and the blob is sealed again under this repository's key).
        let scope = self.repo_scope(id).await?;
        let shared = match self.meta.blob_object(&key, &scope).await? {
            Some(_) => true,
            // Stored in the clear before encryption: readable by default-key repositories
            // until the encryption job seals it.
            None => scope.is_empty() && self.meta.blob_in_clear(&key).await?,
        };
        if !shared {
            return Ok(None);
        }
        match self.meta.link_blob(id, &key, size, None).await {
            Ok(_) => Ok(Some(size as u64)),
            // Being garbage-collected: the client uploads it instead.
            Err(berth_meta::MetaError::BlobDeleting(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records a blob about to be stored; while a collection is deleting it, waits (up to 10 s)
    /// for the deletion to finish, so the new copy is never deleted under the pusher.
    pub(crate) async fn claim_blob(&self, digest: &berth_core::Digest) -> Result<()> {
        let key = digest.to_string();
        for _ in 0..50 {
            match self.meta.claim_blob(&key).await {
                Err(berth_meta::MetaError::BlobDeleting(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                r => return r.map_err(Error::from),
            }
        }
        Err(Error::Unavailable(Unavailable::Busy(format!(
            "blob {key} is being garbage-collected right now; push it again in a moment"
        ))))
    }

    // ---- manifests ----

    /// Stores a manifest pushed by tag or by digest; `extra_tags` (a PUT by digest's `tag`
    /// parameters) are set on it as well, each like a PUT by that tag.
    /// (`ecr:PutImage`.)
    pub async fn put_manifest(
        &self,
        caller: &Caller,
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
        self.access().check(caller, "ecr:PutImage", repo.as_str()).await?;
        let repo_id = self.repos().ensure_repo_for(Some(caller), repo).await?;
        self.check_key_use(caller, repo_id, "kms:GenerateDataKey").await?;
        let first = tag.or(extra.first().map(|t| t.as_str()));
        // An index may name children that are not here (a mirror of some platforms only).
        let sparse = if caller.replication_from.is_some() { Via::REPLICATION } else { Via::OCI_PUSH };
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
            let size = body.len();
            return Err(Error::invalid(
                InvalidKind::ManifestTooLarge { size },
                format!("manifest is {size} bytes; the limit is {MAX_MANIFEST_SIZE}"),
            ));
        }
        self.check_space()?;
        let algorithm = digest.map_or(Algorithm::Sha256, |d| d.algorithm());
        let actual = berth_crypto::digest_of(algorithm, body);
        if let Some(d) = digest
            && *d != actual
        {
            return Err(Error::invalid(
                InvalidKind::Digest,
                format!("manifest digest is {actual}, not {d} as the URL says"),
            ));
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
            return Err(Error::invalid(InvalidKind::Manifest, "an index cannot contain itself".into()));
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.to_string());
        let annotations = parsed.annotations.as_ref().map(|a| serde_json::to_string(a).expect("a JSON map serializes"));
        let immutable_tag = match tag {
            Some(t) => match self.meta.get_repo(repo.as_str()).await? {
                Some(r) => tag_is_immutable(&r.settings, t),
                None => false,
            },
            None => false,
        };
        let digest_str = digest.to_string();
        // Sealed under the repository's key (the caller's use of it was decided with PutImage).
        let stored = self.seal_manifest(None, repo_id, body).await?;
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
                    content: &stored,
                    size: body.len() as i64,
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
                berth_meta::MetaError::TagImmutable(tag) => {
                    Error::from(Conflict::TagImmutable { key: repo.to_string(), tag })
                }
                e => e.into(),
            })?;
        if let Some(t) = tag {
            self.caches.content.drop_tag(repo.as_str(), t);
        }
        Ok((PutManifest { digest, subject: parsed.subject.map(|s| s.digest) }, outcome))
    }

    /// A manifest by tag or digest (`ecr:BatchGetImage`); a HEAD, not counted as a pull.
    pub async fn get_manifest(&self, caller: &Caller, repo: &RepoName, reference: &str) -> Result<Arc<Manifest>> {
        self.access().check(caller, "ecr:BatchGetImage", repo.as_str()).await?;
        let local = async {
            // A KMS repository's manifests need kms:Decrypt on its key, and the key usable.
            self.check_key_use(caller, self.repos().existing_repo(repo).await?, "kms:Decrypt").await?;
            self.manifest(repo, reference).await
        };
        match local.await {
            Ok(m) => self.refresh_tag(caller, repo, reference, m).await,
            // Under a pull-through rule: asked of the upstream.
            Err(e @ Error::NotFound(NotFound::Manifest { .. } | NotFound::Repository { .. })) => {
                Ok(self.pull_through_manifest(caller, repo, reference).await?.ok_or(e)?)
            }
            Err(e) => Err(e),
        }
    }

    /// A manifest pulled (`ecr:BatchGetImage`): one `accepts` takes (by media type), that the
    /// repository's scan policy lets through; its pull time is recorded.
    pub async fn pull_manifest(
        &self,
        caller: &Caller,
        repo: &RepoName,
        reference: &str,
        accepts: impl Fn(&str) -> bool,
    ) -> Result<Arc<Manifest>> {
        let m = self.get_manifest(caller, repo, reference).await?;
        if !accepts(&m.media_type) {
            let why = format!("it is a {}, which the Accept header does not include", m.media_type);
            return Err(NotFound::Manifest { reference: reference.to_string(), why: Some(why) }.into());
        }
        ScanConfig(self.0).check_pull(repo, &m.digest).await?;
        self.record_pull(repo, &m.digest);
        Ok(m)
    }

    pub(crate) async fn manifest(&self, repo: &RepoName, reference: &str) -> Result<Arc<Manifest>> {
        let reference = Reference::parse(reference)?;
        let id = self.repos().existing_repo(repo).await?;
        let name = repo.as_str();
        let (cached, tag) = match &reference {
            Reference::Tag(t) => (self.caches.content.tag(name, t.as_str()), Some(t.as_str())),
            Reference::Digest(d) => (self.caches.content.digest(name, &d.to_string()), None),
        };
        if let Some(m) = cached {
            return Ok(m);
        }
        let seen = self.caches.content.snapshot(name);
        let row = match &reference {
            Reference::Tag(t) => self.meta.get_manifest_by_tag(id, t.as_str()).await?,
            Reference::Digest(d) => self.meta.get_manifest(id, &d.to_string()).await?,
        };
        let mut row = row.ok_or_else(|| NotFound::Manifest { reference: reference.to_string(), why: None })?;
        row.content = self.open_manifest(None, std::mem::take(&mut row.content)).await?;
        let m = Arc::new(Manifest::from(row));
        self.caches.content.put_manifest(name, seen, tag, &m);
        Ok(m)
    }

    /// By digest: deletes the manifest and its tags. By tag: removes only the tag.
    pub async fn delete_manifest(&self, caller: &Caller, repo: &RepoName, reference: &str) -> Result<()> {
        self.access().check(caller, "ecr:BatchDeleteImage", repo.as_str()).await?;
        self.remove_manifest(repo, reference).await
    }

    pub(crate) async fn remove_manifest(&self, repo: &RepoName, reference: &str) -> Result<()> {
        let reference = Reference::parse(reference)?;
        let id = self.repos().existing_repo(repo).await?;
        let found = match &reference {
            Reference::Tag(t) => {
                let found = self.meta.delete_tag(id, t.as_str()).await?;
                self.caches.content.drop_tag(repo.as_str(), t.as_str());
                found
            }
            Reference::Digest(d) => {
                let found = self.meta.delete_manifest(id, &d.to_string()).await?;
                self.caches.content.drop_manifests(repo.as_str());
                found
            }
        };
        if found { Ok(()) } else { Err(NotFound::Manifest { reference: reference.to_string(), why: None }.into()) }
    }

    /// An image id's manifest; the failure (as BatchGetImage reports it) otherwise.
    pub(crate) async fn resolve(&self, repo_id: i64, id: &ImageId) -> Result<Result<Arc<Manifest>, ImageFailure>> {
        let fail = |code, reason: String| Ok(Err(ImageFailure { id: id.clone(), code, reason }));
        if id.digest.is_none() && id.tag.is_none() {
            return fail(
                "MissingDigestAndTag",
                "Invalid request parameters: both tag and digest cannot be null".into(),
            );
        }
        if let Some(d) = &id.digest
            && d.parse::<Digest>().is_err()
        {
            return fail("InvalidImageDigest", format!("Invalid image digest '{d}'"));
        }
        if let Some(t) = &id.tag
            && Tag::parse(t).is_err()
        {
            return fail("InvalidImageTag", format!("Invalid image tag '{t}'"));
        }
        let row = match (&id.tag, &id.digest) {
            (Some(t), _) => self.meta.get_manifest_by_tag(repo_id, t).await?,
            (None, Some(d)) => self.meta.get_manifest(repo_id, d).await?,
            (None, None) => None,
        };
        let Some(row) = row else { return fail("ImageNotFound", "Requested image not found".into()) };
        if let Some(d) = &id.digest
            && *d != row.digest
        {
            return fail("ImageTagDoesNotMatchDigest", format!("Image tag does not match the digest {d}"));
        }
        let mut row = row;
        row.content = self.open_manifest(None, std::mem::take(&mut row.content)).await?;
        Ok(Ok(Arc::new(Manifest::from(row))))
    }

    /// The digest an image id names in repository `key` (`ImageNotFoundException` if none).
    pub(crate) async fn image_digest(&self, key: &str, id: &ImageId) -> Result<String> {
        let (_, row) = self.repos().repository(key).await?;
        match self.resolve(row.id, id).await? {
            Ok(m) => Ok(m.digest.clone()),
            Err(f) => Err(NotFound::Image {
                key: key.to_string(),
                digest: id.digest.clone(),
                tag: id.tag.clone(),
                reason: f.reason,
            }
            .into()),
        }
    }

    // ---- discovery ----

    /// (`ecr:ListImages`.)
    pub async fn list_tags(
        &self,
        caller: &Caller,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Page> {
        self.access().check(caller, "ecr:ListImages", repo.as_str()).await?;
        let id = self.repos().existing_repo(repo).await?;
        let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let mut items = self.meta.list_tags(id, last, limit as i64 + 1).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, more })
    }

    /// Repository keys of `registry` after the name `last` that `viewer` may describe or pull
    /// from. See [`visible_page`] for why a page never ends on a hidden name.
    pub async fn catalog(&self, viewer: &Caller, registry: &str, last: Option<&str>, n: Option<usize>) -> Result<Page> {
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
                    let access = self.access();
                    Ok(access.decide(viewer, "ecr:DescribeRepositories", &k).await?.allowed()
                        || access.decide(viewer, "ecr:BatchGetImage", &k).await?.allowed())
                })
            },
        )
        .await?;
        Ok(Page { items, more })
    }

    /// The referrers of `subject` as an OCI image index (empty when there are none or the
    /// repository does not exist, as the spec asks).
    /// (`ecr:ListImageReferrers`.)
    pub async fn referrers(
        &self,
        caller: &Caller,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Value> {
        self.access().check(caller, "ecr:ListImageReferrers", repo.as_str()).await?;
        // In a pull-through cache, the upstream's referrers join what is cached (those whose
        // blobs are still being imported are listed from what the upstream sent).
        let fetched = self.pull_through_referrers(caller, repo, subject).await?;
        let mut index = self.referrer_index(repo, subject, artifact_type).await?;
        if let Some(listed) = index["manifests"].as_array_mut() {
            for m in fetched {
                if listed.iter().any(|d| d["digest"] == m.digest.as_str()) {
                    continue;
                }
                let Ok(p) = parse_manifest(&m.content, Some(&m.media_type)) else { continue };
                if artifact_type.is_some_and(|a| p.artifact_type.as_deref() != Some(a)) {
                    continue;
                }
                let size = m.content.len() as i64;
                let annotations = p.annotations.map(Value::Object);
                listed.push(referrer(m.media_type.clone(), m.digest.clone(), size, p.artifact_type, annotations));
            }
        }
        Ok(index)
    }

    pub(crate) async fn referrer_index(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Value> {
        let rows = match self.meta.repo_id(repo.as_str()).await? {
            Some(id) => self.meta.referrers(id, &subject.to_string(), artifact_type).await?,
            None => Vec::new(),
        };
        let manifests: Vec<Value> = rows
            .into_iter()
            .map(|r| {
                let annotations = r.annotations.and_then(|a| serde_json::from_str::<Value>(&a).ok());
                referrer(r.media_type, r.digest, r.size, r.artifact_type, annotations)
            })
            .collect();
        Ok(json!({
            "schemaVersion": 2,
            "mediaType": berth_core::media::OCI_INDEX,
            "manifests": manifests,
        }))
    }

    // ---- pull times ----

    /// Notes that `digest` was pulled now; written by [`Content::flush_pulls`].
    pub(crate) fn record_pull(&self, repo: &RepoName, digest: &str) {
        let now = berth_meta::now_ms();
        let mut p = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        // Repeated pulls of the same image (the common case) update in place, without allocating.
        if let Some(t) = p.get_mut(repo.as_str()).and_then(|m| m.get_mut(digest)) {
            *t = now;
        } else if p.len() < 10_000 {
            p.entry(repo.to_string()).or_default().insert(digest.to_string(), now);
        }
    }

    /// Writes the pull times noted since the last flush.
    pub async fn flush_pulls(&self) -> Result<()> {
        let pending = {
            let mut p = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *p)
        };
        if pending.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        for (repo, digests) in pending {
            if let Some(id) = self.meta.repo_id(&repo).await? {
                rows.extend(digests.into_iter().map(|(d, at)| (id, d, at)));
            }
        }
        self.meta.record_pulls(rows).await?;
        Ok(())
    }
}

/// A referrer's descriptor in a referrers index.
fn referrer(
    media_type: String,
    digest: String,
    size: i64,
    artifact_type: Option<String>,
    annotations: Option<Value>,
) -> Value {
    let mut d = Map::new();
    d.insert("mediaType".into(), media_type.into());
    d.insert("digest".into(), digest.into());
    d.insert("size".into(), size.into());
    if let Some(a) = artifact_type {
        d.insert("artifactType".into(), a.into());
    }
    if let Some(a) = annotations {
        d.insert("annotations".into(), a);
    }
    Value::Object(d)
}
