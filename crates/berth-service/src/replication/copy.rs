//! Pushing one image to a destination over the OCI API: what the destination has already is not
//! sent again. Each blob is looked for (HEAD), then mounted from another repository holding it
//! there, then uploaded (streamed from storage, decrypted); an index carries its children, a
//! manifest its referrers (signatures, SBOMs); manifests go byte for byte, children first, so the
//! destination never holds a manifest whose content is missing. A tag is set last.

use std::sync::Arc;

use berth_core::{Digest, RepoName, parse_manifest};
use berth_remote::{Registry, RemoteError};
use futures_util::future::BoxFuture;

use crate::content::Content;
use crate::core::Core;
use crate::error::{Error, NotFound};
use crate::model::{CopyStats, Manifest};

/// Why a copy stopped.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The destination refused or was away.
    Remote(RemoteError),
    /// Reading the source failed (the image was deleted meanwhile: NotFound).
    Source(Error),
}

impl From<RemoteError> for Fail {
    fn from(e: RemoteError) -> Self {
        Fail::Remote(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Source(e)
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Remote(e) => e.fmt(f),
            Fail::Source(e) => write!(f, "reading the source: {e}"),
        }
    }
}

/// Nesting allowed between an image and its children or referrers.
const MAX_DEPTH: usize = 8;

pub(crate) struct Copy<'a> {
    pub core: &'a Core,
    pub remote: &'a Registry,
    /// The destination's key (`region/registry`), for the per-blob locks.
    pub dest: &'a str,
    pub src: &'a RepoName,
    pub stats: CopyStats,
}

impl<'a> Copy<'a> {
    /// The repository's name at the destination: the same name.
    fn dst(&self) -> &'a str {
        self.src.name()
    }

    async fn manifest(&self, digest: &str) -> Result<Arc<Manifest>, Fail> {
        Ok(Content(self.core).manifest(self.src, digest).await?)
    }

    /// Copies image `digest` (with what it carries) and points `tag` at it.
    pub async fn image(&mut self, digest: &str, tag: Option<&str>) -> Result<(), Fail> {
        if let Some(t) = tag
            && self.remote.manifest_digest(self.dst(), t, true).await?.as_deref() == Some(digest)
        {
            return Ok(());
        }
        let m = self.manifest(digest).await?;
        self.closure(m.clone(), 0).await?;
        if let Some(t) = tag {
            self.remote.put_manifest(self.dst(), t, &m.media_type, m.content.clone()).await?;
        }
        Ok(())
    }

    /// A manifest after its children and blobs, then its referrers.
    fn closure(&mut self, m: Arc<Manifest>, depth: usize) -> BoxFuture<'_, Result<(), Fail>> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Ok(());
            }
            if self.remote.manifest_digest(self.dst(), &m.digest, true).await?.is_none() {
                let parsed = parse_manifest(&m.content, Some(&m.media_type)).map_err(Error::from)?;
                for child in &parsed.children {
                    match self.manifest(&child.digest.to_string()).await {
                        Ok(c) => self.closure(c, depth + 1).await?,
                        // A sparse index (some platforms only) goes as it is.
                        Err(Fail::Source(Error::NotFound(NotFound::Manifest { .. }))) => {}
                        Err(e) => return Err(e),
                    }
                }
                for b in &parsed.blobs {
                    if b.media_type.contains("foreign") || b.media_type.contains("nondistributable") {
                        continue;
                    }
                    self.blob(&b.digest).await?;
                }
                self.remote.put_manifest(self.dst(), &m.digest, &m.media_type, m.content.clone()).await?;
                self.stats.manifests_sent += 1;
            }
            let subject: Digest = m.digest.parse().map_err(Error::from)?;
            let index = Content(self.core).referrer_index(self.src, &subject, None).await?;
            let referrers: Vec<String> = index["manifests"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d["digest"].as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            for r in referrers {
                match self.manifest(&r).await {
                    Ok(rm) => self.closure(rm, depth + 1).await?,
                    Err(Fail::Source(Error::NotFound(_))) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    /// One blob: nothing if the destination has it, else mounted, else uploaded. Two copies to
    /// one destination never send the same blob at once: the second waits, then finds it there.
    async fn blob(&mut self, digest: &Digest) -> Result<(), Fail> {
        let d = digest.to_string();
        let lock = self.core.blob_send_lock(self.dest, &d);
        let _held = lock.lock().await;
        let dst = self.dst();
        if self.remote.blob_size(dst, &d, true).await?.is_some() {
            self.stats.blobs_present += 1;
            return Ok(());
        }
        let from = self.core.meta.repos_with_blob(&d, self.src.as_str(), 1).await.map_err(Error::from)?;
        // Another repository here holds it: it may have gone to the destination already.
        let from =
            from.into_iter().filter_map(|k| RepoName::parse_key(&k).ok()).find(|r| r.account() == self.src.account());
        let location = match from {
            Some(f) => match self.remote.mount_blob(dst, &d, f.name()).await? {
                None => {
                    self.stats.blobs_mounted += 1;
                    return Ok(());
                }
                Some(location) => location,
            },
            None => self.remote.start_upload(dst).await?,
        };
        let read = Content(self.core).read_blob(None, self.src, digest, None).await?;
        let size = read.size;
        self.remote.upload_blob(dst, &location, &d, size, read.body.stream).await?;
        self.stats.blobs_sent += 1;
        self.stats.bytes_sent += size;
        Ok(())
    }
}
