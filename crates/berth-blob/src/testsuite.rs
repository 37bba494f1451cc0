//! The contract every [`BlobStore`] meets, as tests any backend (and any wrapper around one) runs:
//!
//! ```ignore
//! berth_blob::testsuite::run(|| MyStore::connect(&same_config)).await;
//! ```
//!
//! `instance` is called more than once and must return a store over the same data each time:
//! what one instance writes, another continues and reads, as two nodes over one bucket do. Each
//! check panics with what went wrong.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_core::{Algorithm, Digest};
use berth_crypto::envelope::DataKey;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

use crate::sealed::SealedStore;
use crate::{BlobBody, BlobError, BlobStore, PartWriter, Result, UploadState};

/// Runs every check of the contract.
pub async fn run<S: BlobStore>(instance: impl Fn() -> S) {
    let (a, b) = (instance(), instance());
    blobs_are_read_whole_and_by_range(&a, &b).await;
    an_upload_begun_on_one_instance_is_finished_on_another(&a, &b).await;
    a_part_left_by_a_crash_is_not_part_of_the_upload(&a, &b).await;
    two_commits_of_one_digest_at_once(&a, &b).await;
    commit_checks_the_size_and_keeps_an_existing_blob(&a, &b).await;
    delete_and_list(&a, &b).await;
    abort_removes_an_upload(&a, &b).await;
    path_like_upload_ids_are_refused(&a).await;
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A digest no other check uses (the store does not verify content: the service does).
fn digest() -> Digest {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    Digest::new(Algorithm::Sha256, format!("{:016x}{:048x}", std::process::id(), n)).expect("64 hex digits")
}

fn upload_id() -> String {
    format!("suite-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

async fn read_all(b: BlobBody) -> Vec<u8> {
    let len = b.len;
    let chunks: Vec<Bytes> = b.stream.try_collect().await.expect("the body streams");
    let all = chunks.concat();
    assert_eq!(all.len() as u64, len, "a body yields as many bytes as it says");
    all
}

/// Writes one part in writes of `chunk` bytes; returns the upload's new length and state.
async fn part(
    s: &dyn BlobStore,
    id: &str,
    state: &UploadState,
    offset: u64,
    data: &[u8],
    chunk: usize,
) -> (u64, UploadState) {
    let mut w = s.write_part(id, state, offset).await.expect("write_part");
    for c in data.chunks(chunk.max(1)) {
        w.write(Bytes::copy_from_slice(c)).await.expect("write");
    }
    let (len, state) = w.finish().await.expect("finish");
    assert_eq!(len, offset + data.len() as u64, "a part's finish reports the upload's new length");
    (len, state)
}

/// Stores `data` as a new blob through a one-part upload.
async fn put(s: &dyn BlobStore, data: &[u8]) -> Digest {
    let (id, d) = (upload_id(), digest());
    let state = s.begin_upload(&id).await.expect("begin_upload");
    let (len, state) = part(s, &id, &state, 0, data, 64 * 1024).await;
    s.commit(&id, &state, &d, len).await.expect("commit");
    d
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

pub async fn blobs_are_read_whole_and_by_range(a: &dyn BlobStore, b: &dyn BlobStore) {
    for size in [0usize, 1, 1000, 300 * 1024, 5 * 1024 * 1024 + 3] {
        let data = pattern(size, 7);
        let d = put(a, &data).await;
        assert_eq!(b.stat(&d).await.unwrap(), Some(size as u64), "size {size}: stat on the other instance");
        assert_eq!(read_all(b.open(&d, None).await.unwrap()).await, data, "size {size}: whole");
        if size == 0 {
            continue;
        }
        let n = size as u64;
        for r in [0..1, 0..n, n - 1..n, n / 3..n / 2 + 1, 1..n] {
            let got = read_all(a.open(&d, Some(r.clone())).await.unwrap()).await;
            assert_eq!(got, data[r.start as usize..r.end as usize], "size {size}: range {r:?}");
        }
    }
    let missing = digest();
    assert_eq!(a.stat(&missing).await.unwrap(), None);
    assert!(matches!(a.open(&missing, None).await, Err(BlobError::NotFound(_))), "a missing blob is NotFound");
}

pub async fn an_upload_begun_on_one_instance_is_finished_on_another(a: &dyn BlobStore, b: &dyn BlobStore) {
    let data = pattern(3 * 1024 * 1024 + 17, 3);
    let (id, d) = (upload_id(), digest());
    let s0 = a.begin_upload(&id).await.unwrap();
    let (o1, s1) = part(a, &id, &s0, 0, &data[..1024 * 1024], 100_000).await;
    // The service keeps only the state; the next part goes to the other instance.
    let (o2, s2) = part(b, &id, &s1, o1, &data[1024 * 1024..2 * 1024 * 1024 + 5], 1 << 20).await;
    let (o3, s3) = part(a, &id, &s2, o2, &data[2 * 1024 * 1024 + 5..], 7).await;
    let (o4, s4) = part(b, &id, &s3, o3, b"", 1).await; // an empty part changes nothing
    assert_eq!(o4, data.len() as u64);
    assert_eq!(read_all(a.read_upload(&id, &s4).await.unwrap()).await, data, "read back before commit");
    b.commit(&id, &s4, &d, o4).await.unwrap();
    assert_eq!(read_all(a.open(&d, None).await.unwrap()).await, data, "the blob is the parts in order");
    assert!(
        matches!(b.write_part(&id, &s4, o4).await, Err(BlobError::UploadNotFound(_))),
        "a committed upload is gone"
    );
}

pub async fn a_part_left_by_a_crash_is_not_part_of_the_upload(a: &dyn BlobStore, b: &dyn BlobStore) {
    let (id, d) = (upload_id(), digest());
    let s0 = a.begin_upload(&id).await.unwrap();
    let (o1, s1) = part(a, &id, &s0, 0, b"kept ", 3).await;
    // Written and made durable, but the node died before the upload's row recorded its state.
    let _lost = part(a, &id, &s1, o1, b"LOST PART, NEVER RECORDED", 4).await;
    // The client resumes at the recorded length, on the other node.
    let (o2, s2) = part(b, &id, &s1, o1, b"and resumed", 5).await;
    assert_eq!(read_all(b.read_upload(&id, &s2).await.unwrap()).await, b"kept and resumed");
    b.commit(&id, &s2, &d, o2).await.unwrap();
    assert_eq!(read_all(a.open(&d, None).await.unwrap()).await, b"kept and resumed");

    // A failed part's leftovers are dropped at once, and the upload continues from its state.
    let (id, d) = (upload_id(), digest());
    let s0 = a.begin_upload(&id).await.unwrap();
    let (o1, s1) = part(a, &id, &s0, 0, b"first ", 2).await;
    let mut w = a.write_part(&id, &s1, o1).await.unwrap();
    w.write(Bytes::from_static(b"half of a part the client never finished")).await.unwrap();
    drop(w);
    b.discard_unrecorded(&id, &s1, o1).await.unwrap();
    let (o2, s2) = part(b, &id, &s1, o1, b"second", 6).await;
    a.commit(&id, &s2, &d, o2).await.unwrap();
    assert_eq!(read_all(b.open(&d, None).await.unwrap()).await, b"first second");
}

pub async fn two_commits_of_one_digest_at_once(a: &dyn BlobStore, b: &dyn BlobStore) {
    let data = pattern(700 * 1024, 9);
    let d = digest();
    let (u1, u2) = (upload_id(), upload_id());
    let s1 = a.begin_upload(&u1).await.unwrap();
    let s2 = b.begin_upload(&u2).await.unwrap();
    let (l1, s1) = part(a, &u1, &s1, 0, &data, 64 * 1024).await;
    let (l2, s2) = part(b, &u2, &s2, 0, &data, 100 * 1024).await;
    let (r1, r2) = tokio::join!(a.commit(&u1, &s1, &d, l1), b.commit(&u2, &s2, &d, l2));
    r1.expect("first commit");
    r2.expect("second commit of the same digest");
    assert_eq!(a.stat(&d).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read_all(b.open(&d, None).await.unwrap()).await, data, "one intact blob");
    let listed: Vec<Digest> = a.list().try_collect().await.unwrap();
    assert_eq!(listed.iter().filter(|x| **x == d).count(), 1, "listed once");
}

pub async fn commit_checks_the_size_and_keeps_an_existing_blob(a: &dyn BlobStore, b: &dyn BlobStore) {
    let (id, d) = (upload_id(), digest());
    let s0 = a.begin_upload(&id).await.unwrap();
    let (len, s1) = part(a, &id, &s0, 0, b"twelve bytes", 5).await;
    assert!(
        matches!(b.commit(&id, &s1, &d, len + 1).await, Err(BlobError::UploadSize { .. })),
        "a size other than the upload's is refused"
    );
    assert_eq!(a.stat(&d).await.unwrap(), None, "and stores nothing");
    b.commit(&id, &s1, &d, len).await.unwrap();
    // The same digest committed again (content the service verified equal): the stored copy stays.
    let id2 = upload_id();
    let s0 = b.begin_upload(&id2).await.unwrap();
    let (len2, s1) = part(b, &id2, &s0, 0, b"twelve bytes", 12).await;
    a.commit(&id2, &s1, &d, len2).await.unwrap();
    assert_eq!(read_all(a.open(&d, None).await.unwrap()).await, b"twelve bytes");
    assert!(
        matches!(a.write_part(&id2, &s1, len2).await, Err(BlobError::UploadNotFound(_))),
        "the second upload is gone too"
    );
}

pub async fn delete_and_list(a: &dyn BlobStore, b: &dyn BlobStore) {
    let kept = put(a, b"kept").await;
    let gone = put(b, b"gone").await;
    let id = upload_id();
    let _open_upload = a.begin_upload(&id).await.unwrap();
    let listed: Vec<Digest> = b.list().try_collect().await.unwrap();
    assert!(listed.contains(&kept) && listed.contains(&gone), "both listed");
    a.delete(&gone).await.unwrap();
    a.delete(&gone).await.expect("deleting a missing blob is no error");
    assert_eq!(b.stat(&gone).await.unwrap(), None);
    assert!(matches!(b.open(&gone, None).await, Err(BlobError::NotFound(_))));
    let mut listed = b.list();
    let mut seen = Vec::new();
    while let Some(d) = listed.next().await {
        seen.push(d.unwrap());
    }
    assert!(seen.contains(&kept) && !seen.contains(&gone), "the list streams what is stored now");
    assert!(seen.iter().all(|d| d.to_string().starts_with("sha256:")), "only blobs, never uploads, are listed");
}

pub async fn abort_removes_an_upload(a: &dyn BlobStore, b: &dyn BlobStore) {
    let id = upload_id();
    let s0 = a.begin_upload(&id).await.unwrap();
    let (len, s1) = part(a, &id, &s0, 0, b"abandoned", 9).await;
    b.abort_upload(&id, &s1).await.unwrap();
    b.abort_upload(&id, &s1).await.expect("aborting twice is no error");
    assert!(matches!(a.write_part(&id, &s1, len).await, Err(BlobError::UploadNotFound(_))));
    assert!(matches!(a.read_upload(&id, &s1).await, Err(BlobError::UploadNotFound(_))));
    assert!(matches!(a.commit(&id, &s1, &digest(), len).await, Err(BlobError::UploadNotFound(_))));
}

pub async fn path_like_upload_ids_are_refused(a: &dyn BlobStore) {
    for bad in ["../x", "a/b", "", ".", "a b", &"x".repeat(65)] {
        assert!(matches!(a.begin_upload(bad).await, Err(BlobError::BadUploadId(_))), "{bad:?}");
        let s = UploadState::default();
        assert!(matches!(a.write_part(bad, &s, 0).await, Err(BlobError::BadUploadId(_))), "{bad:?}");
    }
}

/// What the service keeps for sealed objects, for [`Sealing`]: each upload's data key, and
/// each blob's object name, key and size. Shared by the instances of one test, as the
/// metadata store is by nodes.
#[derive(Clone, Default)]
pub struct KeyBook(Arc<Mutex<Book>>);

#[derive(Default)]
struct Book {
    uploads: HashMap<String, DataKey>,
    blobs: HashMap<Digest, (Digest, DataKey, u64)>,
}

impl KeyBook {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A backend seen through the encrypting wrapper as the service uses it (random object names,
/// one data key per upload, the first commit of a digest kept), so that [`run`] checks the
/// wrapper over every backend:
///
/// ```ignore
/// let book = KeyBook::default();
/// testsuite::run(|| Sealing::new(MyStore::connect(&cfg), &book)).await;
/// ```
pub struct Sealing {
    store: SealedStore,
    book: KeyBook,
}

impl Sealing {
    pub fn new(inner: impl BlobStore, book: &KeyBook) -> Self {
        Sealing { store: SealedStore::new(Arc::new(inner)), book: book.clone() }
    }

    fn upload_key(&self, id: &str) -> Result<DataKey> {
        self.book.book().uploads.get(id).cloned().ok_or_else(|| BlobError::UploadNotFound(id.to_string()))
    }

    fn blob(&self, d: &Digest) -> Option<(Digest, DataKey, u64)> {
        self.book.book().blobs.get(d).cloned()
    }
}

#[async_trait]
impl BlobStore for Sealing {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        let Some((object, _, size)) = self.blob(digest) else { return Ok(None) };
        let stored = self.store.backend().stat(&object).await?;
        Ok(stored.and_then(berth_crypto::envelope::plain_len).filter(|p| *p == size))
    }

    async fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobBody> {
        let (object, key, size) = self.blob(digest).ok_or_else(|| BlobError::NotFound(digest.clone()))?;
        self.store.open(&object, &key, size, range).await
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        let found = self.book.book().blobs.remove(digest);
        match found {
            Some((object, ..)) => self.store.backend().delete(&object).await,
            None => Ok(()),
        }
    }

    fn list(&self) -> BoxStream<'static, Result<Digest>> {
        let by_object: HashMap<Digest, Digest> =
            self.book.book().blobs.iter().map(|(d, (o, ..))| (o.clone(), d.clone())).collect();
        self.store
            .backend()
            .list()
            .filter_map(move |r| {
                let out = match r {
                    Ok(o) => by_object.get(&o).cloned().map(Ok),
                    Err(e) => Some(Err(e)),
                };
                async move { out }
            })
            .boxed()
    }

    async fn begin_upload(&self, id: &str) -> Result<UploadState> {
        let state = self.store.begin_upload(id).await?;
        self.book.book().uploads.insert(id.to_string(), DataKey::generate());
        Ok(state)
    }

    async fn write_part(&self, id: &str, state: &UploadState, offset: u64) -> Result<Box<dyn PartWriter>> {
        crate::check_upload_id(id)?;
        let key = self.upload_key(id)?;
        self.store.write_part(id, state, &key, offset).await
    }

    async fn discard_unrecorded(&self, id: &str, state: &UploadState, _offset: u64) -> Result<()> {
        self.store.discard_unrecorded(id, state).await
    }

    async fn read_upload(&self, id: &str, state: &UploadState) -> Result<BlobBody> {
        let key = self.upload_key(id)?;
        self.store.read_upload(id, state, &key).await
    }

    async fn commit(&self, id: &str, state: &UploadState, digest: &Digest, size: u64) -> Result<()> {
        let key = self.upload_key(id)?;
        let (object, _) = self.store.commit(id, state, &key, size).await?;
        let lost = {
            let mut book = self.book.book();
            book.uploads.remove(id);
            if book.blobs.contains_key(digest) {
                true
            } else {
                book.blobs.insert(digest.clone(), (object.clone(), key, size));
                false
            }
        };
        if lost {
            // Another commit of this digest came first: its object stays, this one goes.
            self.store.backend().delete(&object).await?;
        }
        Ok(())
    }

    async fn abort_upload(&self, id: &str, state: &UploadState) -> Result<()> {
        self.store.abort_upload(id, state).await
    }
}
