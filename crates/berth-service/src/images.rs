//! Images as the ECR API sees them: batch reads and deletes, PutImage, listings with their
//! scan status, referrers, and layer uploads in parts. Each operation decides the caller's
//! `ecr:<Operation>` on the repository before anything else.

use std::sync::Arc;

use berth_core::{Digest, RepoName, Tag};
use berth_meta::{ImageRow, MetaError, RepoRow, ScanRow};
use futures_util::StreamExt;

use crate::caller::Caller;
use crate::content::Content;
use crate::core::domain;
use crate::error::{Error, Exists, Invalid, InvalidKind, NotFound, Result};
use crate::model::{
    ImageFailure, ImageId, LayerCheck, Manifest, Paged, TagStatus, check_batch, check_max, decode_token, paged,
};
use crate::repositories::Repositories;
use crate::scanning::{Finding, Scanning};

/// ECR's layer part limits: every part but the last at least 5 MiB; at most 20 MiB per request.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
pub const MAX_PART: u64 = 20 * 1024 * 1024;
/// The part size InitiateLayerUpload advises.
pub const PART_SIZE: u64 = 10 * 1024 * 1024;

/// An image as DescribeImages shows it, with its scan when it has one.
#[derive(Debug, Clone)]
pub struct ImageDetail {
    pub image: ImageRow,
    pub scan: Option<(ScanRow, Vec<Finding>)>,
}

domain! {
    /// ECR's image operations.
    Images
}

impl<'a> Images<'a> {
    fn content(&self) -> Content<'a> {
        Content(self.0)
    }

    /// The repository, once `caller` may do `action` on it.
    async fn allowed(&self, caller: &Caller, action: &str, key: &str) -> Result<(RepoName, RepoRow)> {
        Repositories(self.0).allowed(caller, action, key).await
    }

    /// BatchGetImage: the manifests, with failures for ids that do not resolve.
    pub async fn batch_get_image(
        &self,
        caller: &Caller,
        name: &str,
        ids: &[ImageId],
        accepted: Option<&[String]>,
    ) -> Result<(Vec<(ImageId, Arc<Manifest>)>, Vec<ImageFailure>)> {
        check_batch(ids.len())?;
        let (repo, row) = self.allowed(caller, "ecr:BatchGetImage", name).await?;
        self.check_key_use(caller, row.id, "kms:Decrypt").await?;
        let (mut images, mut failures) = (Vec::new(), Vec::new());
        for id in ids {
            match self.content().resolve(row.id, id).await? {
                Ok(m) if accepted.is_some_and(|a| !a.iter().any(|t| t == &m.media_type)) => {
                    failures.push(ImageFailure {
                        id: id.clone(),
                        code: "ImageNotFound",
                        reason: format!("the image is a {}, which acceptedMediaTypes does not include", m.media_type),
                    });
                }
                Ok(m) => {
                    self.content().record_pull(&repo, &m.digest);
                    images.push((ImageId { digest: Some(m.digest.clone()), tag: id.tag.clone() }, m));
                }
                Err(f) => failures.push(f),
            }
        }
        Ok((images, failures))
    }

    /// BatchDeleteImage with ECR's semantics: a tag alone removes the tag (and the image with its
    /// last tag); a digest removes the image and all its tags.
    pub async fn batch_delete_image(
        &self,
        caller: &Caller,
        name: &str,
        ids: &[ImageId],
    ) -> Result<(Vec<ImageId>, Vec<ImageFailure>)> {
        check_batch(ids.len())?;
        let (repo, row) = self.allowed(caller, "ecr:BatchDeleteImage", name).await?;
        let (mut deleted, mut failures) = (Vec::new(), Vec::new());
        for id in ids {
            let m = match self.content().resolve(row.id, id).await? {
                Ok(m) => m,
                Err(f) => {
                    failures.push(f);
                    continue;
                }
            };
            if id.digest.is_none() {
                let tag = id.tag.as_deref().expect("resolved by tag");
                if let Some((digest, _)) = self.meta.untag_image(row.id, tag).await? {
                    deleted.push(ImageId { digest: Some(digest), tag: Some(tag.to_string()) });
                }
                continue;
            }
            let tags = self.meta.image(row.id, &m.digest).await?.map(|i| i.tags).unwrap_or_default();
            match self.meta.delete_manifest(row.id, &m.digest).await {
                Ok(_) => {
                    if tags.is_empty() {
                        deleted.push(ImageId { digest: Some(m.digest.clone()), tag: None });
                    }
                    for t in tags {
                        deleted.push(ImageId { digest: Some(m.digest.clone()), tag: Some(t) });
                    }
                }
                Err(MetaError::Referenced { parent, .. }) => failures.push(ImageFailure {
                    id: id.clone(),
                    code: "ImageReferencedByManifestList",
                    reason: format!("Requested image referenced by manifest list: [{parent}]"),
                }),
                Err(e) => return Err(e.into()),
            }
        }
        self.caches.content.drop_manifests(repo.as_str());
        Ok((deleted, failures))
    }

    /// PutImage: stores a manifest (and tag) given in the request.
    pub async fn put_image(
        &self,
        caller: &Caller,
        name: &str,
        manifest: &str,
        media_type: Option<&str>,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<(ImageId, Arc<Manifest>)> {
        let (repo, row) = self.allowed(caller, "ecr:PutImage", name).await?;
        self.check_key_use(caller, row.id, "kms:GenerateDataKey").await?;
        if let Some(t) = tag {
            Tag::parse(t)?;
        }
        let digest = digest
            .map(|d| d.parse::<Digest>().map_err(|e| Error::parameter("imageDigest", e.to_string())))
            .transpose()?;
        let (put, outcome) = self
            .content()
            .store_manifest(
                &repo,
                row.id,
                tag,
                digest.as_ref(),
                media_type,
                manifest.as_bytes(),
                crate::model::Via::PUT_IMAGE,
            )
            .await
            .map_err(|e| match e {
                Error::Invalid(i) if i.kind == InvalidKind::Digest && digest.is_some() => {
                    Error::invalid(InvalidKind::ImageDigest, i.reason)
                }
                e => e,
            })?;
        if !outcome.new_manifest && outcome.tag_unchanged {
            return Err(Exists::Image {
                key: repo.to_string(),
                digest: put.digest.to_string(),
                tag: tag.map(str::to_string),
            }
            .into());
        }
        let m = self.content().manifest(&repo, &put.digest.to_string()).await?;
        Ok((ImageId { digest: Some(put.digest.to_string()), tag: tag.map(str::to_string) }, m))
    }

    /// ListImages: `(digest, tag)` pairs (none for a status no image has: Berth keeps no
    /// archived images).
    pub async fn list_image_ids(
        &self,
        caller: &Caller,
        name: &str,
        status: Option<TagStatus>,
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<ImageId>> {
        let (_, row) = self.allowed(caller, "ecr:ListImages", name).await?;
        let Some(status) = status else { return Ok(Paged { items: Vec::new(), next: None }) };
        let limit = check_max(max, 1000)?;
        let after = decode_token(token)?;
        let after = after.as_deref().map(|k| k.split_once('\t').unwrap_or((k, "")));
        let rows = self.meta.list_image_ids(row.id, status, after, limit + 1).await?;
        let ids = rows.into_iter().map(|(d, t)| ImageId { digest: Some(d), tag: t }).collect();
        Ok(paged(ids, limit, |i| format!("{}\t{}", i.digest.as_deref().unwrap_or(""), i.tag.as_deref().unwrap_or(""))))
    }

    /// DescribeImages: named images (each must exist), or a page of all, each with its scan.
    pub async fn describe_images(
        &self,
        caller: &Caller,
        name: &str,
        ids: Option<&[ImageId]>,
        status: Option<TagStatus>,
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<ImageDetail>> {
        let (repo, row) = self.allowed(caller, "ecr:DescribeImages", name).await?;
        let Some(status) = status else { return Ok(Paged { items: Vec::new(), next: None }) };
        let page = self.image_rows(&row, name, ids, status, token, max).await?;
        let mut items = Vec::with_capacity(page.items.len());
        for image in page.items {
            let scan = Scanning(self.0).scan_of(&repo, &row, &image.digest).await?;
            items.push(ImageDetail { image, scan });
        }
        Ok(Paged { items, next: page.next })
    }

    async fn image_rows(
        &self,
        row: &RepoRow,
        name: &str,
        ids: Option<&[ImageId]>,
        status: TagStatus,
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<ImageRow>> {
        if let Some(ids) = ids {
            if max.is_some() || token.is_some() {
                return Err(Error::bad_request(
                    "maxResults and nextToken cannot be used together with imageIds".into(),
                ));
            }
            check_batch(ids.len())?;
            let mut items: Vec<ImageRow> = Vec::new();
            for id in ids {
                let m = self.content().resolve(row.id, id).await?.map_err(|f| {
                    Error::from(NotFound::Image {
                        key: name.to_string(),
                        digest: id.digest.clone(),
                        tag: id.tag.clone(),
                        reason: f.reason,
                    })
                })?;
                if items.iter().any(|i| i.digest == m.digest) {
                    continue;
                }
                if let Some(img) = self.meta.image(row.id, &m.digest).await? {
                    items.push(img);
                }
            }
            return Ok(Paged { items, next: None });
        }
        let limit = check_max(max, 1000)?;
        let after = decode_token(token)?;
        let items = self.meta.list_images(row.id, status, after.as_deref(), limit + 1).await?;
        Ok(paged(items, limit, |i| i.digest.clone()))
    }

    /// ListImageReferrers: manifests whose subject is `subject`, optionally of given artifact
    /// types (and none for an artifact status other than ACTIVE: nothing is archived).
    #[allow(clippy::too_many_arguments)] // each is one member of the request
    pub async fn list_image_referrers(
        &self,
        caller: &Caller,
        name: &str,
        subject: &str,
        artifact_types: &[String],
        artifact_status: Option<&str>,
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<berth_meta::ReferrerRow>> {
        let (_, row) = self.allowed(caller, "ecr:ListImageReferrers", name).await?;
        if artifact_status.is_some_and(|s| s != "ACTIVE" && s != "ANY") {
            return Ok(Paged { items: Vec::new(), next: None });
        }
        let subject: Digest =
            subject.parse::<Digest>().map_err(|e| Error::parameter("subjectId.imageDigest", e.to_string()))?;
        if artifact_types.len() > 5 {
            return Err(Error::bad_request("filter.artifactTypes may list at most 5 types".into()));
        }
        let limit = check_max(max, 50)?;
        let after = decode_token(token)?.unwrap_or_default();
        let mut items: Vec<_> = self
            .meta
            .referrers(row.id, &subject.to_string(), None)
            .await?
            .into_iter()
            .filter(|r| {
                artifact_types.is_empty() || r.artifact_type.as_ref().is_some_and(|a| artifact_types.contains(a))
            })
            .filter(|r| r.digest.as_str() > after.as_str())
            .collect();
        items.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(paged(items, limit, |r| r.digest.clone()))
    }

    // ---- layers ----

    pub async fn check_layers(&self, caller: &Caller, name: &str, digests: &[String]) -> Result<Vec<LayerCheck>> {
        check_batch(digests.len())?;
        let (_, row) = self.allowed(caller, "ecr:BatchCheckLayerAvailability", name).await?;
        let mut out = Vec::with_capacity(digests.len());
        for d in digests {
            if d.is_empty() {
                out.push(LayerCheck::Failed {
                    digest: d.clone(),
                    code: "MissingLayerDigest",
                    reason: "The request did not contain a layer digest".into(),
                });
                continue;
            }
            let Ok(digest) = d.parse::<Digest>() else {
                out.push(LayerCheck::Failed {
                    digest: d.clone(),
                    code: "InvalidLayerDigest",
                    reason: format!("Invalid layer digest '{d}'"),
                });
                continue;
            };
            out.push(match self.meta.repo_blob(row.id, &digest.to_string()).await? {
                Some(size) => LayerCheck::Available { digest: d.clone(), size: size as u64 },
                None => LayerCheck::Unavailable { digest: d.clone() },
            });
        }
        Ok(out)
    }

    pub async fn initiate_layer_upload(&self, caller: &Caller, name: &str) -> Result<String> {
        let (repo, _) = self.allowed(caller, "ecr:InitiateLayerUpload", name).await?;
        Ok(self.content().begin_upload(Some(caller), &repo).await?.id)
    }

    /// UploadLayerPart: appends `[first, last]`, which must start where the upload ends.
    /// Returns the last byte received.
    pub async fn upload_layer_part(
        &self,
        caller: &Caller,
        name: &str,
        id: &str,
        first: u64,
        last: u64,
        data: Vec<u8>,
    ) -> Result<u64> {
        let (repo, _) = self.allowed(caller, "ecr:UploadLayerPart", name).await?;
        let status = self.content().upload_offset(&repo, id).await?;
        let last_valid = status.offset.checked_sub(1);
        let bad = |message: String| Error::invalid(InvalidKind::LayerPart { last_valid_byte: last_valid }, message);
        if data.is_empty() {
            return Err(bad("The layer part is empty".into()));
        }
        if last < first || last - first + 1 != data.len() as u64 {
            return Err(bad(format!(
                "partFirstByte {first} and partLastByte {last} describe {} bytes, but layerPartBlob holds {}",
                (last + 1).saturating_sub(first),
                data.len()
            )));
        }
        if data.len() as u64 > MAX_PART {
            return Err(bad(format!("A layer part may be at most {MAX_PART} bytes")));
        }
        if first != status.offset {
            return Err(bad(format!(
                "The part starts at byte {first} but the upload holds {} bytes; send the part that starts there",
                status.offset
            )));
        }
        let len = data.len() as u64;
        let stream = futures_util::stream::once(async move { Ok(bytes::Bytes::from(data)) }).boxed();
        let s = self.content().append(Some(caller), &repo, id, Some(first), stream).await.map_err(|e| match e {
            Error::Invalid(Invalid { kind: InvalidKind::Chunk { current, .. }, .. }) => Error::invalid(
                InvalidKind::LayerPart { last_valid_byte: current.checked_sub(1) },
                format!("The part starts at byte {first} but the upload holds {current} bytes"),
            ),
            e => e,
        })?;
        self.meta.record_layer_part(id, len < MIN_PART).await?;
        Ok(s.offset - 1)
    }

    /// CompleteLayerUpload: the upload becomes the layer `digests[0]`.
    pub async fn complete_layer_upload(
        &self,
        caller: &Caller,
        name: &str,
        id: &str,
        digests: &[String],
    ) -> Result<String> {
        let (repo, row) = self.allowed(caller, "ecr:CompleteLayerUpload", name).await?;
        let [d] = digests else {
            return Err(Error::bad_request(format!(
                "layerDigests must hold exactly one digest, got {}",
                digests.len()
            )));
        };
        let digest: Digest = d.parse::<Digest>().map_err(|e| Error::parameter("layerDigests", e.to_string()))?;
        let status = self.content().upload_offset(&repo, id).await?;
        if status.offset == 0 {
            return Err(Error::invalid(InvalidKind::EmptyUpload, format!("The upload {id} contains no layer parts")));
        }
        if self.meta.layer_part_too_small(id).await? {
            return Err(Error::invalid(
                InvalidKind::LayerPartTooSmall,
                format!("Every layer part except the last must be at least {MIN_PART} bytes"),
            ));
        }
        if self.meta.repo_blob(row.id, &digest.to_string()).await?.is_some() {
            self.content().cancel(&repo, id).await?;
            return Err(Exists::Layer { key: name.to_string(), digest: digest.to_string() }.into());
        }
        self.content().finish(Some(caller), &repo, id, &digest, None, None).await.map_err(|e| match e {
            Error::Invalid(i) if i.kind == InvalidKind::Digest => Error::invalid(InvalidKind::Layer, i.reason),
            e => e,
        })?;
        Ok(digest.to_string())
    }

    /// GetDownloadUrlForLayer: a URL (relative to the public URL) a plain GET can fetch.
    pub async fn layer_download_url(&self, caller: &Caller, name: &str, digest: &str) -> Result<String> {
        let (_, row) = self.allowed(caller, "ecr:GetDownloadUrlForLayer", name).await?;
        let d: Digest = digest.parse::<Digest>().map_err(|e| Error::parameter("layerDigest", e.to_string()))?;
        let Some(blob) = self.meta.repo_blob_object(row.id, &d.to_string()).await? else {
            return Err(NotFound::Layer { key: name.to_string(), digest: d.to_string() }.into());
        };
        self.check_key_use(caller, row.id, "kms:Decrypt").await?;
        // A store with its own download URLs (an object store's presigned GET) serves a layer
        // kept in the clear itself; a sealed one (the store holds only its ciphertext), and any
        // on other stores, through Berth's signed URL.
        let ttl = std::time::Duration::from_secs(crate::tokens::DOWNLOAD_TTL_SECS as u64);
        if blob.object.is_none()
            && let Some(url) = self.blobs.presign(&d, ttl).await?
        {
            return Ok(url);
        }
        let q = self.auth().sign_download(&row.name, &d.to_string());
        Ok(format!("{}/berth/layers/{}/{d}?{q}", self.settings.public_url.trim_end_matches('/'), row.name))
    }
}
