//! Sealing what earlier versions stored in the clear: each such blob is read, checked against
//! its digest, written again as a sealed copy in the default key's scope, recorded, and only
//! then is the clear copy deleted. Every step is safe to repeat, so a round cut short by a crash
//! (or a node's loss) is simply taken up again; reads are served throughout, from the clear
//! copy until the sealed one is recorded.

use std::time::{Duration, Instant};

use berth_core::Digest;
use berth_crypto::Hasher;
use futures_util::StreamExt;

use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Error, Result};

/// The periodic job that seals blobs stored in the clear.
pub const SEAL_JOB: &str = "periodic:seal";

/// Blobs read per metadata page.
const PAGE: i64 = 200;

/// What is still stored in the clear.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncryptionStatus {
    pub clear_blobs: u64,
    pub clear_bytes: u64,
    pub clear_manifests: u64,
}

/// What one sealing round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    pub sealed: u64,
    pub bytes: u64,
    pub manifests: u64,
    /// Blobs left in the clear because their stored bytes do not match their digest (fsck
    /// reports them too): sealing damaged content would hide the damage.
    pub damaged: Vec<String>,
    pub elapsed: Duration,
}

domain! {
    /// Encryption at rest: sealing blobs stored in the clear by earlier versions.
    Encryption
}

impl Encryption<'_> {
    pub async fn status(&self, caller: &Caller) -> Result<EncryptionStatus> {
        caller.require_operator("see the state of encryption at rest")?;
        let (n, bytes) = self.meta.count_plain_blobs().await?;
        let m = self.meta.count_plain_manifests().await?;
        Ok(EncryptionStatus { clear_blobs: n as u64, clear_bytes: bytes as u64, clear_manifests: m as u64 })
    }

    /// Seals every blob stored in the clear (`berth encryption run`; the periodic job does the
    /// same). `progress` hears of each blob.
    pub async fn seal_all(&self, caller: &Caller, progress: impl Fn(&str, u64, u64)) -> Result<SealReport> {
        caller.require_operator("seal blobs stored in the clear")?;
        self.seal_clear_blobs(progress).await
    }

    /// Wraps every data key again under its key's newest material (after a KMS key's rotation,
    /// or a new master key in the keyring); content is not touched. Returns how many changed.
    pub async fn rewrap(&self, caller: &Caller, progress: &(dyn Fn(&str, u64) + Sync)) -> Result<u64> {
        caller.require_operator("re-wrap data keys")?;
        crate::kms::Kms(self.0).rewrap_all(progress).await
    }

    pub(crate) async fn seal_clear_blobs(&self, progress: impl Fn(&str, u64, u64)) -> Result<SealReport> {
        let started = Instant::now();
        let mut report = SealReport::default();
        let mut after = String::new();
        let mut last_log = Instant::now();
        loop {
            let page = self.meta.plain_blobs(&after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (d, size) in page {
                match self.seal_one(&d, size as u64).await? {
                    true => {
                        report.sealed += 1;
                        report.bytes += size as u64;
                        progress(&d, report.sealed, report.bytes);
                    }
                    false => report.damaged.push(d),
                }
                if last_log.elapsed() > Duration::from_secs(10) {
                    let left = self.meta.count_plain_blobs().await?.0;
                    tracing::info!(
                        sealed = report.sealed,
                        bytes = report.bytes,
                        left,
                        "sealing blobs stored in the clear"
                    );
                    last_log = Instant::now();
                }
            }
        }
        // Manifests stored in the clear: sealed in place (compare-and-set on the old bytes).
        let mut after = (0i64, String::new());
        loop {
            let page = self.meta.plain_manifests((after.0, &after.1), PAGE).await?;
            let Some((r, d, _)) = page.last() else { break };
            after = (*r, d.clone());
            for (repo_id, digest, content) in page {
                let sealed = self.seal_manifest(None, repo_id, &content).await?;
                if self.meta.reseal_manifest(repo_id, &digest, &content, &sealed).await? {
                    report.manifests += 1;
                }
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Seals one blob; `false` when its stored bytes are damaged (left as they are).
    async fn seal_one(&self, d: &str, size: u64) -> Result<bool> {
        let Ok(digest) = d.parse::<Digest>() else { return Ok(false) };
        if self.meta.blob_object(d, "").await?.is_none() {
            let mut body = match self.blobs.open(&digest, None).await {
                Ok(b) => b,
                // Collected meanwhile, or its clear copy already deleted by a round cut short.
                Err(berth_blob::BlobError::NotFound(_)) => {
                    if self.meta.blob_object(d, "").await?.is_some() || self.meta.blob_state(d).await?.is_none() {
                        self.meta.forget_clear_copy(d).await?;
                        return Ok(true);
                    }
                    tracing::error!(blob = %d, "a blob recorded in the clear is missing from storage");
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            };
            let new = self.new_data_key_in(None, String::new()).await?;
            let id = uuid::Uuid::new_v4().to_string();
            let state = self.sealed.begin_upload(&id).await?;
            let written = async {
                let mut w = self.sealed.write_part(&id, &state, &new.key, 0).await?;
                let mut h = Hasher::new(digest.algorithm());
                let mut n = 0u64;
                while let Some(chunk) = body.stream.next().await {
                    let chunk = chunk.map_err(|e| Error::Internal(format!("reading blob {d}: {e}")))?;
                    n += chunk.len() as u64;
                    h.update(&chunk);
                    w.write(chunk).await?;
                }
                let (_, state) = w.finish().await?;
                if n != size || h.finish() != digest {
                    return Ok(None);
                }
                let (object, _) = self.sealed.commit(&id, &state, &new.key, size).await?;
                Ok::<_, Error>(Some(object))
            }
            .await;
            let object = match written {
                Ok(Some(o)) => o,
                Ok(None) => {
                    let _ = self.sealed.abort_upload(&id, &state).await;
                    tracing::error!(blob = %d, "a blob stored in the clear does not match its digest; left unsealed");
                    return Ok(false);
                }
                Err(e) => {
                    let _ = self.sealed.abort_upload(&id, &state).await;
                    return Err(e);
                }
            };
            if !self.meta.add_blob_object(d, &new.object(&object)).await? {
                // Being collected, or sealed by another node meanwhile: this copy is not needed.
                let _ = self.blobs.delete(&object).await;
            }
        }
        // The sealed copy is recorded (reads use it from now on): the clear one goes.
        match self.blobs.delete(&digest).await {
            Ok(()) | Err(berth_blob::BlobError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.meta.forget_clear_copy(d).await?;
        Ok(true)
    }
}
