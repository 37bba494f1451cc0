//! In-memory backend, shaped like an object store: an upload is a set of numbered parts, and its
//! state lists the parts that count (as a multipart upload's part list does), so a part written
//! but never recorded is simply left out at commit. Clones share the same data: each clone is
//! another "instance" over one store, as nodes are over one bucket. For tests and for trying
//! Berth out; nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use berth_core::Digest;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::{BlobBody, BlobError, BlobStore, PartWriter, Result, UploadState, check_upload_id};

#[derive(Default)]
struct Data {
    blobs: BTreeMap<Digest, Bytes>,
    /// Parts by upload id, each with its tag (an object store's etag); part `n` is at index `n - 1`.
    uploads: HashMap<String, Vec<(u64, Bytes)>>,
}

/// Tags tell two writes of one part number apart.
static NEXT_TAG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Clone, Default)]
pub struct MemoryBlobStore {
    data: Arc<Mutex<Data>>,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A recorded part: its length and tag.
type PartRef = (u64, u64);

/// The state: each recorded part's length and tag, 8 bytes little-endian each.
fn parts_of(state: &UploadState) -> Result<Vec<PartRef>> {
    if !state.0.len().is_multiple_of(16) {
        return Err(BlobError::Io(std::io::Error::other("corrupt upload state")));
    }
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("8 bytes"));
    Ok(state.0.chunks(16).map(|c| (word(&c[..8]), word(&c[8..]))).collect())
}

fn state_with(parts: &[PartRef]) -> UploadState {
    UploadState(parts.iter().flat_map(|(len, tag)| len.to_le_bytes().into_iter().chain(tag.to_le_bytes())).collect())
}

/// The recorded parts' bytes. A part whose tag differs was written again by someone else after
/// this state was made (as a completion with a stale etag fails on an object store).
fn recorded(id: &str, parts: &[(u64, Bytes)], refs: &[PartRef]) -> Result<Vec<Bytes>> {
    let mut out = Vec::with_capacity(refs.len());
    for (i, (len, tag)) in refs.iter().enumerate() {
        match parts.get(i) {
            Some((t, p)) if t == tag && p.len() as u64 == *len => out.push(p.clone()),
            _ => return Err(BlobError::Io(std::io::Error::other(format!("upload {id} lost part {}", i + 1)))),
        }
    }
    Ok(out)
}

struct MemoryPart {
    store: MemoryBlobStore,
    id: String,
    refs: Vec<PartRef>,
    offset: u64,
    buf: BytesMut,
}

#[async_trait]
impl PartWriter for MemoryPart {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(u64, UploadState)> {
        if self.buf.is_empty() {
            return Ok((self.offset, state_with(&self.refs)));
        }
        let part = self.buf.split().freeze();
        let mut data = self.store.data();
        let parts = data.uploads.get_mut(&self.id).ok_or_else(|| BlobError::UploadNotFound(self.id.clone()))?;
        // Part number len+1, replacing one a failed attempt left under that number.
        let n = self.refs.len();
        parts.truncate(n.min(parts.len()));
        if parts.len() < n {
            return Err(BlobError::Io(std::io::Error::other(format!(
                "upload {} lost part {}",
                self.id,
                parts.len() + 1
            ))));
        }
        let (len, tag) = (part.len() as u64, NEXT_TAG.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        parts.push((tag, part));
        self.refs.push((len, tag));
        Ok((self.offset + len, state_with(&self.refs)))
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.data().blobs.get(digest).map(|b| b.len() as u64))
    }

    async fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobBody> {
        let blob = self.data().blobs.get(digest).cloned().ok_or_else(|| BlobError::NotFound(digest.clone()))?;
        let range = range.unwrap_or(0..blob.len() as u64);
        let end = range.end.min(blob.len() as u64);
        let part = blob.slice(range.start.min(end) as usize..end as usize);
        Ok(BlobBody { len: part.len() as u64, stream: futures_util::stream::once(async { Ok(part) }).boxed() })
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        self.data().blobs.remove(digest);
        Ok(())
    }

    fn list(&self) -> BoxStream<'static, Result<Digest>> {
        let all: Vec<Digest> = self.data().blobs.keys().cloned().collect();
        futures_util::stream::iter(all.into_iter().map(Ok)).boxed()
    }

    async fn begin_upload(&self, id: &str) -> Result<UploadState> {
        check_upload_id(id)?;
        let mut data = self.data();
        if data.uploads.contains_key(id) {
            return Err(BlobError::Io(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "upload exists")));
        }
        data.uploads.insert(id.to_string(), Vec::new());
        Ok(UploadState::default())
    }

    async fn write_part(&self, id: &str, state: &UploadState, offset: u64) -> Result<Box<dyn PartWriter>> {
        check_upload_id(id)?;
        let refs = parts_of(state)?;
        let recorded_len: u64 = refs.iter().map(|r| r.0).sum();
        if !self.data().uploads.contains_key(id) {
            return Err(BlobError::UploadNotFound(id.to_string()));
        }
        if recorded_len != offset {
            return Err(BlobError::UploadSize { id: id.to_string(), expected: offset, actual: recorded_len });
        }
        Ok(Box::new(MemoryPart { store: self.clone(), id: id.to_string(), refs, offset, buf: BytesMut::new() }))
    }

    async fn discard_unrecorded(&self, id: &str, state: &UploadState, _offset: u64) -> Result<()> {
        let n = parts_of(state)?.len();
        let mut data = self.data();
        let parts = data.uploads.get_mut(id).ok_or_else(|| BlobError::UploadNotFound(id.to_string()))?;
        parts.truncate(n);
        Ok(())
    }

    async fn read_upload(&self, id: &str, state: &UploadState) -> Result<BlobBody> {
        check_upload_id(id)?;
        let refs = parts_of(state)?;
        let parts = self.data().uploads.get(id).cloned().ok_or_else(|| BlobError::UploadNotFound(id.to_string()))?;
        let parts = recorded(id, &parts, &refs)?;
        let len = refs.iter().map(|r| r.0).sum();
        Ok(BlobBody { len, stream: futures_util::stream::iter(parts.into_iter().map(Ok)).boxed() })
    }

    async fn commit(&self, id: &str, state: &UploadState, digest: &Digest, size: u64) -> Result<()> {
        check_upload_id(id)?;
        let refs = parts_of(state)?;
        let mut data = self.data();
        let parts = data.uploads.get(id).ok_or_else(|| BlobError::UploadNotFound(id.to_string()))?;
        let parts = recorded(id, parts, &refs)?;
        let actual: u64 = refs.iter().map(|r| r.0).sum();
        if actual != size {
            return Err(BlobError::UploadSize { id: id.to_string(), expected: size, actual });
        }
        let mut blob = BytesMut::with_capacity(size as usize);
        for p in parts {
            blob.extend_from_slice(&p);
        }
        data.uploads.remove(id);
        data.blobs.entry(digest.clone()).or_insert_with(|| blob.freeze());
        Ok(())
    }

    async fn abort_upload(&self, id: &str, _state: &UploadState) -> Result<()> {
        check_upload_id(id)?;
        self.data().uploads.remove(id);
        Ok(())
    }
}
