//! The encrypting wrapper: content sealed in segments under a per-object data key
//! ([`berth_crypto::envelope`]) over any [`BlobStore`]. The wrapper holds no keys: the caller
//! gives each call the object's data key (kept wrapped in the metadata store) and its plaintext
//! size. A stored object is named by the caller too (the service uses random names, so two
//! uploads of one digest under two data keys never meet in one object).
//!
//! An upload's bytes reach the backend as whole sealed segments only; the unfinished last
//! segment (at most [`SEGMENT`] bytes) is kept sealed in the upload's state, which the service
//! stores with the upload's row, and becomes the object's last segment at commit. So any node
//! continues any upload, as with a plain backend.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use berth_core::Digest;
use berth_crypto::envelope::{self, DataKey, SEALED_SEGMENT, SEGMENT, TAG};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::{BlobBody, BlobError, BlobStore, PartWriter, Result, UploadState};

/// Sealed segments decrypted per batch on a blocking thread (1 MiB of plaintext).
const BATCH: usize = 16;
/// Versions before the object name was chosen at the upload's start.
const STATE_MAGIC_V1: &[u8; 2] = b"E1";
const STATE_MAGIC: &[u8; 2] = b"E2";

/// An upload's state as the wrapper keeps it: the backend's state, the sealed segments written,
/// the name the object will have (chosen at the start, so an object store writes it in place),
/// and the unfinished last segment (sealed).
struct SealedState {
    segments: u64,
    inner: UploadState,
    object: Option<Digest>,
    tail: Vec<u8>,
}

/// A fresh name to store a copy under (random: never the digest, so two copies of one blob
/// under two keys, or two racing uploads of it, never share stored bytes).
pub fn new_object_name() -> Digest {
    Digest::new(berth_core::Algorithm::Sha256, hex::encode(berth_crypto::random_bytes())).expect("64 hex digits")
}

fn corrupt(what: &str) -> BlobError {
    BlobError::Io(io::Error::other(format!("encrypted upload state is corrupt ({what})")))
}

impl SealedState {
    fn decode(s: &UploadState) -> Result<Self> {
        let b = &s.0;
        if b.len() < 14 || (&b[..2] != STATE_MAGIC && &b[..2] != STATE_MAGIC_V1) {
            return Err(corrupt("header"));
        }
        let segments = u64::from_le_bytes(b[2..10].try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(b[10..14].try_into().expect("4 bytes")) as usize;
        if b.len() < 14 + n {
            return Err(corrupt("length"));
        }
        let inner = UploadState(b[14..14 + n].to_vec());
        let mut rest = &b[14 + n..];
        let mut object = None;
        if &b[..2] == STATE_MAGIC {
            let (len, r) = rest.split_first().ok_or_else(|| corrupt("object name"))?;
            let (name, r) = r.split_at_checked(*len as usize).ok_or_else(|| corrupt("object name"))?;
            let name = std::str::from_utf8(name).map_err(|_| corrupt("object name"))?;
            object = Some(name.parse::<Digest>().map_err(|_| corrupt("object name"))?);
            rest = r;
        }
        Ok(SealedState { segments, inner, object, tail: rest.to_vec() })
    }

    fn encode(&self) -> UploadState {
        let mut b = Vec::with_capacity(96 + self.inner.0.len() + self.tail.len());
        b.extend_from_slice(if self.object.is_some() { STATE_MAGIC } else { STATE_MAGIC_V1 });
        b.extend_from_slice(&self.segments.to_le_bytes());
        b.extend_from_slice(&(self.inner.0.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.inner.0);
        if let Some(o) = &self.object {
            let name = o.to_string();
            b.push(name.len() as u8);
            b.extend_from_slice(name.as_bytes());
        }
        b.extend_from_slice(&self.tail);
        UploadState(b)
    }

    fn inner_offset(&self) -> u64 {
        self.segments * SEALED_SEGMENT as u64
    }

    fn tail_plain(&self, key: &DataKey) -> Result<Vec<u8>> {
        if self.tail.is_empty() {
            return Ok(Vec::new());
        }
        key.open_tail(&self.tail).map_err(|_| corrupt("its unfinished segment does not open under this key"))
    }
}

/// Storage of sealed objects over a backend.
#[derive(Clone)]
pub struct SealedStore {
    inner: Arc<dyn BlobStore>,
}

impl SealedStore {
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        SealedStore { inner }
    }

    /// The backend (for what is not sealed: listing, deleting, plain objects of old versions).
    pub fn backend(&self) -> &Arc<dyn BlobStore> {
        &self.inner
    }

    /// Starts an upload that [`commit`](Self::commit) will store under a fresh random name.
    pub async fn begin_upload(&self, id: &str) -> Result<UploadState> {
        self.begin_upload_as(id, new_object_name()).await
    }

    /// Starts an upload to be stored as `object`.
    pub async fn begin_upload_as(&self, id: &str, object: Digest) -> Result<UploadState> {
        let inner = self.inner.begin_upload_as(id, &object).await?;
        Ok(SealedState { segments: 0, inner, object: Some(object), tail: Vec::new() }.encode())
    }

    /// The next part of an upload holding `offset` plaintext bytes by `state`.
    pub async fn write_part(
        &self,
        id: &str,
        state: &UploadState,
        key: &DataKey,
        offset: u64,
    ) -> Result<Box<dyn PartWriter>> {
        crate::check_upload_id(id)?;
        let st = SealedState::decode(state)?;
        let tail = st.tail_plain(key)?;
        let object = st.object.clone();
        if st.segments * SEGMENT as u64 + tail.len() as u64 != offset {
            return Err(BlobError::UploadSize {
                id: id.to_string(),
                expected: offset,
                actual: st.segments * SEGMENT as u64 + tail.len() as u64,
            });
        }
        let inner = self.inner.write_part(id, &st.inner, st.inner_offset()).await?;
        Ok(Box::new(SealedPart {
            inner,
            key: key.clone(),
            segments: st.segments,
            object,
            tail: BytesMut::from(&tail[..]),
        }))
    }

    pub async fn discard_unrecorded(&self, id: &str, state: &UploadState) -> Result<()> {
        crate::check_upload_id(id)?;
        let st = SealedState::decode(state)?;
        self.inner.discard_unrecorded(id, &st.inner, st.inner_offset()).await
    }

    /// An upload's plaintext so far.
    pub async fn read_upload(&self, id: &str, state: &UploadState, key: &DataKey) -> Result<BlobBody> {
        crate::check_upload_id(id)?;
        let st = SealedState::decode(state)?;
        let tail = Bytes::from(st.tail_plain(key)?);
        let body = self.inner.read_upload(id, &st.inner).await?;
        let written = st.segments * SEGMENT as u64;
        // The segments written so far are none of them the last: they open as not last.
        let segs = decrypt_stream(body, key.clone(), 0, u64::MAX, 0, written);
        let len = written + tail.len() as u64;
        let stream = segs.chain(futures_util::stream::once(async move { Ok(tail) })).filter(|r| {
            let keep = !matches!(r, Ok(b) if b.is_empty());
            async move { keep }
        });
        Ok(BlobBody { len, stream: stream.boxed() })
    }

    /// Seals the unfinished segment as the object's last and commits the upload under the name
    /// chosen at its start (a fresh one for an upload begun by an earlier version). Returns the
    /// object's name and stored size.
    pub async fn commit(&self, id: &str, state: &UploadState, key: &DataKey, size: u64) -> Result<(Digest, u64)> {
        crate::check_upload_id(id)?;
        let st = SealedState::decode(state)?;
        let object = st.object.clone().unwrap_or_else(new_object_name);
        let mut last = st.tail_plain(key)?;
        let actual = st.segments * SEGMENT as u64 + last.len() as u64;
        if actual != size {
            return Err(BlobError::UploadSize { id: id.to_string(), expected: size, actual });
        }
        key.seal_segment(st.segments, true, &mut last);
        let mut w = self.inner.write_part(id, &st.inner, st.inner_offset()).await?;
        w.write(Bytes::from(last)).await?;
        let (stored, inner) = w.finish().await?;
        debug_assert_eq!(stored, envelope::sealed_len(size));
        self.inner.commit(id, &inner, &object, stored).await?;
        Ok((object, stored))
    }

    pub async fn abort_upload(&self, id: &str, state: &UploadState) -> Result<()> {
        // A state that does not decode is a plain upload's (begun before encryption).
        let inner = SealedState::decode(state).map(|s| s.inner).unwrap_or_else(|_| state.clone());
        self.inner.abort_upload(id, &inner).await
    }

    /// Plaintext `range` (within `0..size`) of object `object` holding `size` plaintext bytes.
    /// A segment that fails its check ends the stream with an error: it is never yielded.
    pub async fn open(&self, object: &Digest, key: &DataKey, size: u64, range: Option<Range<u64>>) -> Result<BlobBody> {
        let r = envelope::sealed_range(size, range);
        let body = self.inner.open(object, Some(r.stored.clone())).await?;
        if body.len != r.stored.end - r.stored.start {
            return Err(BlobError::Io(io::Error::other(format!("stored object {object} is cut short"))));
        }
        let stream = decrypt_stream(body, key.clone(), r.first, r.last, r.skip, r.len);
        Ok(BlobBody { len: r.len, stream })
    }

    /// Stores `data` whole as sealed object `object` (small objects, re-encryption); returns the
    /// stored size.
    pub async fn put(&self, id: &str, object: &Digest, key: &DataKey, data: Bytes) -> Result<u64> {
        let state = self.begin_upload_as(id, object.clone()).await?;
        let r = async {
            let mut w = self.write_part(id, &state, key, 0).await?;
            w.write(data.clone()).await?;
            let (_, state) = w.finish().await?;
            self.commit(id, &state, key, data.len() as u64).await.map(|(_, n)| n)
        }
        .await;
        if r.is_err() {
            let _ = self.abort_upload(id, &state).await;
        }
        r
    }
}

struct SealedPart {
    inner: Box<dyn PartWriter>,
    key: DataKey,
    /// Segments written to the backend, by this part and before it.
    segments: u64,
    object: Option<Digest>,
    /// Plaintext not yet sealed: never more than one segment once a write returns, and held
    /// back even when full, since only the commit knows which segment is the last.
    tail: BytesMut,
}

#[async_trait]
impl PartWriter for SealedPart {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.tail.extend_from_slice(&data);
        if self.tail.len() <= SEGMENT {
            return Ok(());
        }
        // Everything but the last (possibly full) segment is sealed now.
        let keep = match self.tail.len() % SEGMENT {
            0 => SEGMENT,
            r => r,
        };
        let ready = self.tail.split_to(self.tail.len() - keep);
        let (key, first) = (self.key.clone(), self.segments);
        let n = (ready.len() / SEGMENT) as u64;
        let sealed = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(ready.len() + n as usize * TAG);
            for (i, seg) in ready.chunks(SEGMENT).enumerate() {
                let mut buf = Vec::with_capacity(SEALED_SEGMENT);
                buf.extend_from_slice(seg);
                key.seal_segment(first + i as u64, false, &mut buf);
                out.extend_from_slice(&buf);
            }
            out
        })
        .await
        .map_err(|e| BlobError::Io(io::Error::other(e)))?;
        self.inner.write(Bytes::from(sealed)).await?;
        self.segments += n;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(u64, UploadState)> {
        let SealedPart { inner, key, segments, object, tail } = *self;
        let (_, inner) = inner.finish().await?;
        let len = segments * SEGMENT as u64 + tail.len() as u64;
        let tail = if tail.is_empty() { Vec::new() } else { key.seal_tail(&tail) };
        Ok((len, SealedState { segments, inner, object, tail }.encode()))
    }
}

/// Opens the sealed segments `body` yields, the first being segment `first` and segment `last`
/// the object's last; yields `len` plaintext bytes after skipping `skip`. Segments are cut from
/// the backend's chunks without copying (only one that straddles two chunks is copied) and
/// decrypted straight into the output, a batch at a time on a blocking thread, two in flight.
fn decrypt_stream(
    body: BlobBody,
    key: DataKey,
    first: u64,
    last: u64,
    skip: u64,
    len: u64,
) -> futures_util::stream::BoxStream<'static, io::Result<Bytes>> {
    struct Cutter {
        body: futures_util::stream::BoxStream<'static, io::Result<Bytes>>,
        cur: Bytes,
        carry: BytesMut,
        done: bool,
        next_index: u64,
    }
    let batches = futures_util::stream::unfold(
        Cutter { body: body.stream, cur: Bytes::new(), carry: BytesMut::new(), done: false, next_index: first },
        move |mut c| async move {
            if c.done && c.cur.is_empty() && c.carry.is_empty() {
                return None;
            }
            let mut segs: Vec<Bytes> = Vec::with_capacity(BATCH);
            while segs.len() < BATCH {
                if c.cur.is_empty() {
                    if c.done {
                        break;
                    }
                    match c.body.next().await {
                        Some(Ok(b)) => c.cur = b,
                        Some(Err(e)) => {
                            c.done = true;
                            c.cur = Bytes::new();
                            c.carry.clear();
                            return Some((Err(e), c));
                        }
                        None => {
                            c.done = true;
                            // What is left is the object's (short) last segment.
                            if !c.carry.is_empty() {
                                segs.push(c.carry.split().freeze());
                            }
                            break;
                        }
                    }
                    continue;
                }
                if c.carry.is_empty() && c.cur.len() >= SEALED_SEGMENT {
                    segs.push(c.cur.split_to(SEALED_SEGMENT));
                    continue;
                }
                let take = (SEALED_SEGMENT - c.carry.len()).min(c.cur.len());
                c.carry.extend_from_slice(&c.cur.split_to(take));
                if c.carry.len() == SEALED_SEGMENT {
                    segs.push(c.carry.split().freeze());
                }
            }
            if segs.is_empty() {
                return None;
            }
            let index = c.next_index;
            c.next_index += segs.len() as u64;
            Some((Ok((index, segs)), c))
        },
    );
    let opened = batches
        .map(move |b| {
            let key = key.clone();
            async move {
                let (index, segs) = b?;
                tokio::task::spawn_blocking(move || open_batch(&key, index, last, &segs))
                    .await
                    .map_err(io::Error::other)?
            }
        })
        .buffered(2);
    // Trim to the range asked for.
    let mut to_skip = skip;
    let mut left = len;
    opened
        .filter_map(move |r| {
            let out = match r {
                Err(e) => Some(Err(e)),
                Ok(mut b) => {
                    let s = to_skip.min(b.len() as u64) as usize;
                    to_skip -= s as u64;
                    let mut b = b.split_off(s);
                    b.truncate(left.min(b.len() as u64) as usize);
                    left -= b.len() as u64;
                    (!b.is_empty()).then(|| Ok(b))
                }
            };
            async move { out }
        })
        .boxed()
}

/// Opens a batch of sealed segments (segment `first` onwards) into one plaintext buffer.
fn open_batch(key: &DataKey, first: u64, last: u64, segs: &[Bytes]) -> io::Result<Bytes> {
    let plain: usize = segs.iter().map(|s| s.len().saturating_sub(TAG)).sum();
    let mut out = BytesMut::zeroed(plain);
    let mut at = 0;
    for (i, seg) in segs.iter().enumerate() {
        let index = first + i as u64;
        let n = seg.len().checked_sub(TAG).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, berth_crypto::envelope::SealError::Corrupt(index))
        })?;
        key.open_segment_to(index, index == last, seg, &mut out[at..at + n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        at += n;
    }
    Ok(out.freeze())
}
