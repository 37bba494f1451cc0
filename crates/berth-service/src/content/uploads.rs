//! Blob uploads. Bytes are hashed while they are received and written, in parallel: the request
//! body is read into ~1 MiB chunks, each hashed on one blocking thread while it is written on
//! another. The hash state is saved with the upload's length after every request, so an upload
//! can be resumed after a restart, or on another node, without reading it again; so is the blob
//! store's own state of the upload (an object store's part list), which it needs to continue it.

use std::sync::Arc;

use berth_blob::{BlobError, UploadState};
use berth_core::{Algorithm, Digest, RepoName};
use berth_crypto::Hasher;
use berth_meta::UploadRow;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::OwnedMutexGuard;

use crate::caller::Caller;
use crate::content::Content;
use crate::error::{Error, InvalidKind, NotFound, Result};
use crate::repositories::Repositories;
use crate::sealing::{NewKey, scope_of_key};

/// A request body as the service consumes it.
pub type BodyStream = BoxStream<'static, std::io::Result<Bytes>>;

const CHUNK: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
}

/// Exclusive use of one upload by one request on this node.
struct UploadLock<'a> {
    content: Content<'a>,
    id: String,
    _guard: OwnedMutexGuard<()>,
}

impl Drop for UploadLock<'_> {
    fn drop(&mut self) {
        let mut map = self.content.busy_uploads.lock().unwrap_or_else(|p| p.into_inner());
        // The map and this guard hold the only references: nobody else waits for it.
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) <= 2) {
            map.remove(&self.id);
        }
    }
}

/// The blob store's state of an upload (none for uploads begun before it was kept: the
/// filesystem store, the only one then, needs none).
fn backend_state(row: &UploadRow) -> UploadState {
    UploadState(row.backend_state.clone().unwrap_or_default())
}

/// How an upload's bytes are stored: sealed under its data key, or (begun before encryption)
/// in the clear, sealed later by the encryption job.
enum Sink {
    Plain,
    Sealed(NewKey),
}

impl Sink {
    /// The hash state as stored: sealed with the upload's data key, since it holds the bytes
    /// after the last whole block.
    fn save_hash(&self, h: &Hasher) -> Vec<u8> {
        match self {
            Sink::Plain => h.save(),
            Sink::Sealed(k) => k.key.seal_hash_state(&h.save()),
        }
    }

    fn restore_hash(&self, stored: Option<&[u8]>) -> Option<Hasher> {
        let stored = stored?;
        let plain = match self {
            Sink::Plain => stored.to_vec(),
            Sink::Sealed(k) => k.key.open_hash_state(stored).ok()?,
        };
        Hasher::restore(Algorithm::Sha256, &plain).ok()
    }
}

impl<'a> Content<'a> {
    async fn lock_upload(&self, id: &str) -> UploadLock<'a> {
        let m = {
            let mut map = self.busy_uploads.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.to_string()).or_default().clone()
        };
        UploadLock { content: *self, id: id.to_string(), _guard: m.lock_owned().await }
    }

    async fn sink_of(&self, who: Option<&Caller>, row: &UploadRow) -> Result<Sink> {
        let Some(encoded) = &row.data_key else { return Ok(Sink::Plain) };
        let wrapped = berth_crypto::envelope::WrappedKey::decode(encoded)
            .ok_or_else(|| Error::Internal(format!("upload {} has a corrupt data key", row.id)))?;
        // Continuing a push is a push: the key's GenerateDataKey permission decides.
        let key = self.open_data_key(who.map(|c| (c, "kms:GenerateDataKey")), encoded).await?;
        Ok(Sink::Sealed(NewKey { scope: scope_of_key(&wrapped), key, wrapped }))
    }

    async fn part_writer(
        &self,
        id: &str,
        state: &UploadState,
        offset: u64,
        sink: &Sink,
    ) -> berth_blob::Result<Box<dyn berth_blob::PartWriter>> {
        match sink {
            Sink::Plain => self.blobs.write_part(id, state, offset).await,
            Sink::Sealed(k) => self.sealed.write_part(id, state, &k.key, offset).await,
        }
    }

    /// Commits the upload as blob `digest` and records it, linked into `repo_id`; `upload` is
    /// the upload row to end with it (none for a monolithic push).
    async fn commit_blob(
        &self,
        id: &str,
        state: &UploadState,
        sink: &Sink,
        (digest, size): (&Digest, u64),
        repo_id: i64,
        upload: bool,
    ) -> Result<()> {
        let key = digest.to_string();
        match sink {
            Sink::Plain => {
                match self.blobs.commit(id, state, digest, size).await {
                    Ok(()) => {}
                    // A crash after the rename and before the metadata commit leaves exactly this.
                    Err(BlobError::UploadNotFound(_)) if self.blobs.stat(digest).await? == Some(size) => {}
                    Err(e) => return Err(e.into()),
                }
                if upload {
                    self.meta.complete_upload(id, repo_id, &key, size as i64, None).await?;
                } else {
                    self.meta.link_blob(repo_id, &key, size as i64, None).await?;
                }
            }
            Sink::Sealed(k) => {
                let (object, _) = self.sealed.commit(id, state, &k.key, size).await?;
                let record = Some(k.object(&object));
                let recorded = if upload {
                    self.meta.complete_upload(id, repo_id, &key, size as i64, record).await
                } else {
                    self.meta.link_blob(repo_id, &key, size as i64, record).await
                };
                // The copy is needed only if it was recorded: the blob already had one in this
                // scope, or the record failed (then nothing names it).
                if !matches!(recorded, Ok(true)) {
                    let _ = self.blobs.delete(&object).await;
                }
                recorded?;
            }
        }
        Ok(())
    }

    async fn load_upload(&self, repo: &RepoName, id: &str) -> Result<UploadRow> {
        if berth_blob::check_upload_id(id).is_err() {
            return Err(Error::from(NotFound::Upload { id: id.to_string() }));
        }
        let row =
            self.meta.get_upload(id).await?.ok_or_else(|| Error::from(NotFound::Upload { id: id.to_string() }))?;
        match Repositories(self.0).existing_repo(repo).await {
            Ok(r) if r == row.repo_id => Ok(row),
            _ => Err(Error::from(NotFound::Upload { id: id.to_string() })),
        }
    }

    /// (`ecr:InitiateLayerUpload`.)
    pub async fn start_upload(&self, caller: &Caller, repo: &RepoName) -> Result<UploadStatus> {
        self.access().check(caller, "ecr:InitiateLayerUpload", repo.as_str()).await?;
        self.begin_upload(Some(caller), repo).await
    }

    /// `who`: the caller (its use of the repository's KMS key is decided), or none for the
    /// registry's own work.
    pub(crate) async fn begin_upload(&self, who: Option<&Caller>, repo: &RepoName) -> Result<UploadStatus> {
        self.check_space()?;
        let repo_id = Repositories(self.0).ensure_repo_for(who, repo).await?;
        let key = self.new_data_key(who, repo_id).await?;
        let wrapped = key.wrapped.encode();
        let sink = Sink::Sealed(key);
        let id = uuid::Uuid::new_v4().to_string();
        let state = self.sealed.begin_upload(&id).await?;
        let hash = sink.save_hash(&Hasher::new(Algorithm::Sha256));
        self.meta.create_upload(&id, repo_id, &hash, &state.0, Some(&wrapped)).await?;
        Ok(UploadStatus { id, offset: 0 })
    }

    /// (`ecr:UploadLayerPart`.)
    pub async fn upload_status(&self, caller: &Caller, repo: &RepoName, id: &str) -> Result<UploadStatus> {
        self.access().check(caller, "ecr:UploadLayerPart", repo.as_str()).await?;
        self.upload_offset(repo, id).await
    }

    pub(crate) async fn upload_offset(&self, repo: &RepoName, id: &str) -> Result<UploadStatus> {
        let row = self.load_upload(repo, id).await?;
        Ok(UploadStatus { id: row.id, offset: row.size as u64 })
    }

    /// Appends a chunk (`ecr:UploadLayerPart`). `start`, when the client gave one, must equal
    /// the current length.
    pub async fn append_upload(
        &self,
        caller: &Caller,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: BodyStream,
    ) -> Result<UploadStatus> {
        self.access().check(caller, "ecr:UploadLayerPart", repo.as_str()).await?;
        self.append(Some(caller), repo, id, start, body).await
    }

    pub(crate) async fn append(
        &self,
        who: Option<&Caller>,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: BodyStream,
    ) -> Result<UploadStatus> {
        self.check_space()?;
        let _lock = self.lock_upload(id).await;
        let row = self.load_upload(repo, id).await?;
        let sink = self.sink_of(who, &row).await?;
        let (offset, ..) = self.append_locked(&row, &sink, start, body).await?;
        Ok(UploadStatus { id: row.id, offset })
    }

    /// Appends the body and records the new length; returns it with the hash so far (if known)
    /// and the blob store's state.
    async fn append_locked(
        &self,
        row: &UploadRow,
        sink: &Sink,
        start: Option<u64>,
        body: BodyStream,
    ) -> Result<(u64, Option<Hasher>, UploadState)> {
        let current = row.size as u64;
        if let Some(start) = start
            && start != current
        {
            return Err(Error::invalid(
                InvalidKind::Chunk { start, current },
                format!("chunk starts at {start} but the upload holds {current} bytes"),
            ));
        }
        let hasher = sink.restore_hash(row.hash_state.as_deref());
        let state = backend_state(row);
        let (written, hasher, state) = self.write_stream(&row.id, &state, sink, current, hasher, body).await?;
        if written > 0 {
            let hashed = hasher.as_ref().map(|h| sink.save_hash(h));
            let new_size = (current + written) as i64;
            self.meta.advance_upload(&row.id, row.size, new_size, hashed.as_deref(), &state.0).await?;
        }
        Ok((current + written, hasher, state))
    }

    async fn write_stream(
        &self,
        id: &str,
        state: &UploadState,
        sink: &Sink,
        offset: u64,
        mut hasher: Option<Hasher>,
        mut body: BodyStream,
    ) -> Result<(u64, Option<Hasher>, UploadState)> {
        let mut writer = self.part_writer(id, state, offset, sink).await.map_err(|e| match e {
            BlobError::UploadSize { .. } => Error::invalid(
                InvalidKind::Upload,
                format!("upload {id} is damaged (its stored data is shorter than recorded); start a new upload"),
            ),
            other => other.into(),
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let receive = async move {
            let mut buf = BytesMut::new();
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| Error::invalid(InvalidKind::Upload, format!("reading the request body: {e}")))?;
                if buf.is_empty() && chunk.len() >= CHUNK {
                    if tx.send(chunk).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                buf.extend_from_slice(&chunk);
                if buf.len() >= CHUNK && tx.send(buf.split().freeze()).await.is_err() {
                    return Ok(());
                }
            }
            if !buf.is_empty() {
                let _ = tx.send(buf.freeze()).await;
            }
            Ok::<(), Error>(())
        };
        let store = async {
            // Owned here, so that a failed write drops the receiver and the body's reader stops
            // (it would wait forever on a full channel otherwise).
            let mut rx = rx;
            let mut written = 0u64;
            while let Some(chunk) = rx.recv().await {
                written += chunk.len() as u64;
                self.counters.upload_bytes.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let hashing = hasher.take().map(|mut h| {
                    let c = chunk.clone();
                    tokio::task::spawn_blocking(move || {
                        h.update(&c);
                        h
                    })
                });
                writer.write(chunk).await?;
                if let Some(j) = hashing {
                    hasher = Some(j.await.map_err(|e| Error::Internal(e.to_string()))?);
                }
            }
            let (_, state) = writer.finish().await?;
            Ok::<_, Error>((written, state))
        };
        let (received, stored) = tokio::join!(receive, store);
        if received.is_err() || stored.is_err() {
            // Whatever was written past the recorded length goes now (not at the next append):
            // on a full disk, those bytes are the space the next request needs.
            let discarded = match sink {
                Sink::Plain => self.blobs.discard_unrecorded(id, state, offset).await,
                Sink::Sealed(_) => self.sealed.discard_unrecorded(id, state).await,
            };
            if let Err(e) = discarded {
                tracing::debug!(upload = %id, error = %e, "could not drop a failed part's bytes");
            }
        }
        received?;
        let (written, state) = stored?;
        Ok((written, hasher, state))
    }

    /// Completes an upload as blob `digest`, after appending an optional last chunk
    /// (`ecr:CompleteLayerUpload`). The blob is verified, durably stored and linked to the
    /// repository before this returns.
    pub async fn finish_upload(
        &self,
        caller: &Caller,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        body: Option<BodyStream>,
    ) -> Result<u64> {
        self.access().check(caller, "ecr:CompleteLayerUpload", repo.as_str()).await?;
        self.finish(Some(caller), repo, id, digest, start, body).await
    }

    pub(crate) async fn finish(
        &self,
        who: Option<&Caller>,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        body: Option<BodyStream>,
    ) -> Result<u64> {
        if body.is_some() {
            self.check_space()?;
        }
        let _lock = self.lock_upload(id).await;
        let row = self.load_upload(repo, id).await?;
        let sink = self.sink_of(who, &row).await?;
        let (size, hasher, state) = match body {
            Some(b) => self.append_locked(&row, &sink, start, b).await?,
            None => (row.size as u64, sink.restore_hash(row.hash_state.as_deref()), backend_state(&row)),
        };
        let actual = match hasher {
            Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
            _ => self.rehash_upload(id, &state, &sink, digest.algorithm()).await?,
        };
        if actual != *digest {
            return Err(Error::invalid(
                InvalidKind::Digest,
                format!("uploaded content has digest {actual}, not {digest} as given"),
            ));
        }
        self.claim_blob(digest).await?;
        self.commit_blob(id, &state, &sink, (digest, size), row.repo_id, true).await?;
        Ok(size)
    }

    async fn rehash_upload(&self, id: &str, state: &UploadState, sink: &Sink, algorithm: Algorithm) -> Result<Digest> {
        let body = match sink {
            Sink::Plain => self.blobs.read_upload(id, state).await,
            Sink::Sealed(k) => self.sealed.read_upload(id, state, &k.key).await,
        };
        let mut body = match body {
            Err(BlobError::UploadUnreadable(why)) => return Err(Error::invalid(InvalidKind::Digest, why)),
            other => other?,
        };
        let mut h = Hasher::new(algorithm);
        while let Some(chunk) = body.stream.next().await {
            h.update(&chunk.map_err(|e| Error::Internal(e.to_string()))?);
        }
        Ok(h.finish())
    }

    /// (`ecr:UploadLayerPart`.)
    pub async fn cancel_upload(&self, caller: &Caller, repo: &RepoName, id: &str) -> Result<()> {
        self.access().check(caller, "ecr:UploadLayerPart", repo.as_str()).await?;
        self.cancel(repo, id).await
    }

    pub(crate) async fn cancel(&self, repo: &RepoName, id: &str) -> Result<()> {
        let _lock = self.lock_upload(id).await;
        let row = self.load_upload(repo, id).await?;
        // The file first: its space is what a full disk needs back, and a row left without its
        // file is an upload nobody can continue, removed by garbage collection.
        self.sealed.abort_upload(&row.id, &backend_state(&row)).await?;
        self.meta.delete_upload(&row.id).await?;
        Ok(())
    }

    /// A whole blob in one request (`ecr:InitiateLayerUpload`, as ECR maps an upload's start).
    /// No upload session is recorded: the blob is hashed as it is written, then committed and
    /// linked in one metadata transaction.
    pub async fn push_blob(&self, caller: &Caller, repo: &RepoName, digest: &Digest, body: BodyStream) -> Result<u64> {
        self.access().check(caller, "ecr:InitiateLayerUpload", repo.as_str()).await?;
        self.store_blob(Some(caller), repo, digest, body).await
    }

    pub(crate) async fn store_blob(
        &self,
        who: Option<&Caller>,
        repo: &RepoName,
        digest: &Digest,
        body: BodyStream,
    ) -> Result<u64> {
        self.check_space()?;
        let repo_id = Repositories(self.0).ensure_repo_for(who, repo).await?;
        let sink = Sink::Sealed(self.new_data_key(who, repo_id).await?);
        let id = uuid::Uuid::new_v4().to_string();
        let begun = self.sealed.begin_upload(&id).await?;
        let r = async {
            let hasher = Some(Hasher::new(digest.algorithm()));
            let (size, hasher, state) = self.write_stream(&id, &begun, &sink, 0, hasher, body).await?;
            let actual = hasher.map(Hasher::finish);
            if actual.as_ref() != Some(digest) {
                let actual = actual.map_or_else(|| "unknown".into(), |d| d.to_string());
                return Err(Error::invalid(
                    InvalidKind::Digest,
                    format!("uploaded content has digest {actual}, not {digest} as given"),
                ));
            }
            self.claim_blob(digest).await?;
            self.commit_blob(&id, &state, &sink, (digest, size), repo_id, false).await?;
            Ok(size)
        }
        .await;
        if r.is_err() {
            let _ = self.sealed.abort_upload(&id, &begun).await;
        }
        r
    }
}
