//! Object storage backend (S3 and S3-compatible servers; Google Cloud Storage and Azure Blob
//! Storage behind the `gcs` and `azure` features), over the `object_store` crate.
//!
//! Layout under the configured prefix: `blobs/<alg>/<xx>/<hex>` and `uploads/<id>/…`. An upload
//! is a multipart upload (created when its first full part is written) plus a *tail*: the bytes
//! after the last full part, kept as a small object under a random name. The upload's state (in
//! the service's upload row) holds the multipart id, every recorded part's size and etag, and
//! the tail's name and size, so any node continues any upload, and a part or tail written but
//! never recorded (a crash before the row was updated) is simply not part of the upload. The
//! tail object also marks the upload as existing: it is written when the upload begins, even
//! empty, and removed by commit and abort.
//!
//! An upload begun for a named object ([`BlobStore::begin_upload_as`]; the service's are, under
//! random names) writes its multipart upload at that object's own key, so commit completes it in
//! place and copies nothing. Otherwise the multipart upload is at `uploads/<id>/data`, and
//! commit completes it there and makes the blob by a conditional server-side copy (at most
//! 5 GiB, S3's limit for one copy). An upload that fits in one part becomes its blob by a PUT
//! with `If-None-Match: *`. An existing blob is never overwritten. A GET of a blob (whole or a
//! range) is one backend call.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{Algorithm, Digest};
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::task::JoinSet;

use crate::{BlobBody, BlobError, BlobStore, PartWriter, Result, UploadState, check_upload_id};

/// The smallest part object stores take (every part but the last).
pub const MIN_PART: usize = 5 * 1024 * 1024;
const DEFAULT_PART: usize = 8 * 1024 * 1024;
/// Parts uploaded at once per upload while the client goes on sending.
const PARTS_IN_FLIGHT: usize = 2;
/// Object stores number parts 1..=10000.
const MAX_PARTS: usize = 10_000;
/// Keys deleted per batch request (S3's DeleteObjects takes up to 1000).
const DELETE_BATCH: usize = 1000;
const STATE_MAGIC: &[u8; 2] = b"O1";

/// What a stored blob can be fetched by directly (an S3 presigned GET).
type Presigner = Arc<dyn Signer>;

/// The S3 settings `berth serve` reads (`storage = "s3"`).
#[derive(Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// Prepended to every key (`team/berth/`); empty for the bucket's root.
    pub prefix: String,
    pub region: Option<String>,
    /// A non-AWS endpoint (`http://127.0.0.1:9000`); plain HTTP is allowed only when named here.
    pub endpoint: Option<String>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// Static credentials; without them, the standard AWS chain (environment, web identity,
    /// container and instance metadata) is used.
    pub credentials: Option<S3Credentials>,
}

#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("S3Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Blob storage on an object store.
#[derive(Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    signer: Option<Presigner>,
    prefix: Arc<str>,
    part_size: usize,
    name: Arc<str>,
}

impl std::fmt::Debug for ObjectBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectBlobStore({})", self.name)
    }
}

fn io_err(e: impl std::fmt::Display) -> BlobError {
    BlobError::Io(io::Error::other(e.to_string()))
}

/// Object-store errors as blob errors; `missing` is what a 404 means for this call.
fn map_err(e: object_store::Error, missing: impl FnOnce() -> BlobError) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => missing(),
        e => io_err(e),
    }
}

/// No overall request timeout: a blob streamed to a slow client may take hours. A connection
/// that cannot be made in 5 s is an error (then retried).
fn client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(Duration::from_secs(5))
        .with_pool_max_idle_per_host(64)
}

/// A failed call is retried a few times with backoff, for at most 15 s: a request waiting on
/// storage must still answer its client in time.
fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(15), ..Default::default() }
}

impl ObjectBlobStore {
    /// A store on S3 or an S3-compatible server.
    pub fn s3(cfg: &S3Config) -> Result<Self> {
        use object_store::aws::{AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};
        if cfg.bucket.is_empty() {
            return Err(io_err("s3_bucket is not set"));
        }
        // The environment first (AWS_REGION, AWS_ACCESS_KEY_ID, web identity, container
        // credentials …), then what the configuration names explicitly.
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(client_options())
            .with_retry(retry_config())
            .with_bucket_name(&cfg.bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
            .with_virtual_hosted_style_request(!cfg.path_style);
        if let Some(r) = &cfg.region {
            b = b.with_region(r);
        }
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let Some(c) = &cfg.credentials {
            b = b.with_access_key_id(&c.access_key_id).with_secret_access_key(&c.secret_access_key);
            if let Some(t) = &c.session_token {
                b = b.with_token(t);
            }
        }
        let s3 = Arc::new(b.build().map_err(io_err)?);
        let name = format!("s3://{}/{}", cfg.bucket, cfg.prefix);
        Ok(Self::new(s3.clone(), s3.clone(), Some(s3 as Presigner), &cfg.prefix, name))
    }

    /// A store on Google Cloud Storage: the bucket, and credentials from the environment
    /// (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, or the metadata server).
    #[cfg(feature = "gcs")]
    pub fn gcs(bucket: &str, prefix: &str) -> Result<Self> {
        let g = object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_client_options(client_options())
            .with_retry(retry_config())
            .with_bucket_name(bucket)
            .build()
            .map_err(io_err)?;
        let g = Arc::new(g);
        Ok(Self::new(g.clone(), g.clone(), Some(g as Presigner), prefix, format!("gs://{bucket}/{prefix}")))
    }

    /// A store on Azure Blob Storage: the container, and credentials from the environment
    /// (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, or a managed identity).
    #[cfg(feature = "azure")]
    pub fn azure(container: &str, prefix: &str) -> Result<Self> {
        let a = object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_client_options(client_options())
            .with_retry(retry_config())
            .with_container_name(container)
            .build()
            .map_err(io_err)?;
        let a = Arc::new(a);
        Ok(Self::new(a.clone(), a.clone(), Some(a as Presigner), prefix, format!("azure://{container}/{prefix}")))
    }

    fn new(
        store: Arc<dyn ObjectStore>,
        multipart: Arc<dyn MultipartStore>,
        signer: Option<Presigner>,
        prefix: &str,
        name: String,
    ) -> Self {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        ObjectBlobStore { store, multipart, signer, prefix: prefix.into(), part_size: DEFAULT_PART, name: name.into() }
    }

    /// Parts of `bytes` (at least [`MIN_PART`]) instead of 8 MiB; tests use small parts to reach
    /// the multipart path with small data.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART);
        self
    }

    /// Where the store keeps its data, for messages (`s3://bucket/prefix/`).
    pub fn location(&self) -> &str {
        &self.name
    }

    fn path(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.prefix))
    }

    fn blob_path(&self, d: &Digest) -> Path {
        self.path(&format!("blobs/{}/{}/{}", d.algorithm().as_str(), &d.hex()[..2], d.hex()))
    }

    fn upload_dir(&self, id: &str) -> Path {
        self.path(&format!("uploads/{id}"))
    }

    fn data_path(&self, id: &str) -> Path {
        self.path(&format!("uploads/{id}/data"))
    }

    /// Where an upload's multipart upload writes: the target blob's key, or the upload's own.
    fn multipart_path(&self, id: &str, st: &ObjState) -> Result<Path> {
        match &st.target {
            Some(t) => Ok(self.blob_path(&t.parse::<Digest>().map_err(|_| corrupt("target"))?)),
            None => Ok(self.data_path(id)),
        }
    }

    fn tail_path(&self, id: &str, tail: &str) -> Path {
        self.path(&format!("uploads/{id}/tail-{tail}"))
    }

    async fn read_tail(&self, id: &str, st: &ObjState) -> Result<Bytes> {
        let got = self.store.get(&self.tail_path(id, &st.tail)).await;
        let bytes = got
            .map_err(|e| map_err(e, || BlobError::UploadNotFound(id.to_string())))?
            .bytes()
            .await
            .map_err(|e| map_err(e, || BlobError::UploadNotFound(id.to_string())))?;
        if bytes.len() as u64 != st.tail_len {
            return Err(io_err(format!("upload {id}: its tail holds {} bytes, not {}", bytes.len(), st.tail_len)));
        }
        Ok(bytes)
    }

    async fn put_tail(&self, id: &str, data: Bytes) -> Result<String> {
        let name = hex::encode(&berth_crypto::random_bytes()[..12]);
        self.store.put(&self.tail_path(id, &name), PutPayload::from_bytes(data)).await.map_err(io_err)?;
        Ok(name)
    }

    /// Deletes keys in batches (one DeleteObjects request per thousand on S3).
    async fn delete_paths(&self, paths: Vec<Path>) -> Result<()> {
        for chunk in paths.chunks(DELETE_BATCH) {
            let input = futures_util::stream::iter(chunk.iter().cloned().map(Ok).collect::<Vec<_>>()).boxed();
            let mut out = self.store.delete_stream(input);
            while let Some(r) = out.next().await {
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        Ok(())
    }

    /// Removes every object of an upload (its tails, recorded or not, and a completed data object).
    async fn remove_upload_objects(&self, id: &str) -> Result<()> {
        let listed: Vec<Path> =
            self.store.list(Some(&self.upload_dir(id))).map_ok(|m| m.location).try_collect().await.map_err(io_err)?;
        self.delete_paths(listed).await
    }
}

/// An upload's state: the multipart upload (once one is needed) with its recorded parts, and
/// the tail object after them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ObjState {
    /// The blob this upload will become, when known at its start: the multipart upload is then
    /// made at the blob's own key, and commit copies nothing.
    target: Option<String>,
    multipart: Option<String>,
    /// Each recorded part's size and etag; part `n` (1-based) is at index `n - 1`.
    parts: Vec<(u64, String)>,
    tail: String,
    tail_len: u64,
}

fn corrupt(what: &str) -> BlobError {
    io_err(format!("object-store upload state is corrupt ({what})"))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u64(&mut self) -> Result<u64> {
        let (h, t) = self.0.split_at_checked(8).ok_or_else(|| corrupt("short"))?;
        self.0 = t;
        Ok(u64::from_le_bytes(h.try_into().expect("8 bytes")))
    }

    fn str(&mut self) -> Result<String> {
        let n = self.u64()? as usize;
        let (h, t) = self.0.split_at_checked(n).ok_or_else(|| corrupt("short string"))?;
        self.0 = t;
        String::from_utf8(h.to_vec()).map_err(|_| corrupt("not UTF-8"))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl ObjState {
    fn decode(s: &UploadState) -> Result<Self> {
        let b = &s.0;
        if b.len() < 2 || &b[..2] != STATE_MAGIC {
            return Err(corrupt("header"));
        }
        let mut r = Reader(&b[2..]);
        let target = r.str()?;
        let multipart = r.str()?;
        let n = r.u64()? as usize;
        if n > MAX_PARTS {
            return Err(corrupt("too many parts"));
        }
        let mut parts = Vec::with_capacity(n);
        for _ in 0..n {
            let size = r.u64()?;
            parts.push((size, r.str()?));
        }
        let tail = r.str()?;
        let tail_len = r.u64()?;
        let multipart = (!multipart.is_empty()).then_some(multipart);
        let target = (!target.is_empty()).then_some(target);
        Ok(ObjState { target, multipart, parts, tail, tail_len })
    }

    fn encode(&self) -> UploadState {
        let mut b = Vec::with_capacity(64 + self.parts.len() * 48);
        b.extend_from_slice(STATE_MAGIC);
        put_str(&mut b, self.target.as_deref().unwrap_or(""));
        put_str(&mut b, self.multipart.as_deref().unwrap_or(""));
        b.extend_from_slice(&(self.parts.len() as u64).to_le_bytes());
        for (size, etag) in &self.parts {
            b.extend_from_slice(&size.to_le_bytes());
            put_str(&mut b, etag);
        }
        put_str(&mut b, &self.tail);
        b.extend_from_slice(&self.tail_len.to_le_bytes());
        UploadState(b)
    }

    fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.0).sum::<u64>() + self.tail_len
    }
}

struct ObjectPart {
    store: ObjectBlobStore,
    id: String,
    st: ObjState,
    /// Where the multipart upload writes.
    path: Path,
    buf: BytesMut,
    /// The index of the next part to send.
    next: usize,
    /// Parts being uploaded: (index, size, etag).
    flight: JoinSet<Result<(usize, u64, String)>>,
}

impl ObjectPart {
    async fn multipart_id(&mut self) -> Result<String> {
        if let Some(m) = &self.st.multipart {
            return Ok(m.clone());
        }
        let m = self.store.multipart.create_multipart(&self.path).await.map_err(io_err)?;
        self.st.multipart = Some(m.clone());
        Ok(m)
    }

    /// Collects finished part uploads into the state; `keep` in flight at most.
    async fn settle(&mut self, keep: usize) -> Result<()> {
        while self.flight.len() > keep {
            let (idx, size, etag) = self.flight.join_next().await.expect("a task in flight").map_err(io_err)??;
            if self.st.parts.len() <= idx {
                self.st.parts.resize(idx + 1, (0, String::new()));
            }
            self.st.parts[idx] = (size, etag);
        }
        Ok(())
    }

    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        let idx = self.next;
        if idx >= MAX_PARTS - 1 {
            return Err(io_err(format!("upload {} exceeds {MAX_PARTS} parts", self.id)));
        }
        let id = self.multipart_id().await?;
        self.settle(PARTS_IN_FLIGHT - 1).await?;
        self.next += 1;
        let (mp, path) = (self.store.multipart.clone(), self.path.clone());
        let upload = self.id.clone();
        self.flight.spawn(async move {
            let size = data.len() as u64;
            let part = mp
                .put_part(&path, &id.clone(), idx, PutPayload::from_bytes(data))
                .await
                .map_err(|e| map_err(e, || BlobError::UploadNotFound(upload)))?;
            Ok((idx, size, part.content_id))
        });
        Ok(())
    }
}

#[async_trait]
impl PartWriter for ObjectPart {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        while self.buf.len() >= self.store.part_size {
            let part = self.buf.split_to(self.store.part_size).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(u64, UploadState)> {
        self.settle(0).await?;
        let tail = self.buf.split().freeze();
        self.st.tail_len = tail.len() as u64;
        self.st.tail = self.store.put_tail(&self.id, tail).await?;
        Ok((self.st.len(), self.st.encode()))
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.store.head(&self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobBody> {
        if let Some(r) = &range
            && r.start >= r.end
        {
            // Object stores refuse an empty range; nothing to fetch (the service checked the blob).
            return Ok(BlobBody { len: 0, stream: futures_util::stream::empty().boxed() });
        }
        let opts = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let got = self
            .store
            .get_opts(&self.blob_path(digest), opts)
            .await
            .map_err(|e| map_err(e, || BlobError::NotFound(digest.clone())))?;
        let len = got.range.end - got.range.start;
        let stream = got.into_stream().map_err(|e| io::Error::other(e.to_string())).boxed();
        Ok(BlobBody { len, stream })
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match self.store.delete(&self.blob_path(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    /// One LIST of an empty prefix: the bucket is there and these credentials may read it.
    async fn probe(&self) -> Result<()> {
        let p = self.path(".berth-probe");
        match self.store.list_with_delimiter(Some(&p)).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Err(io_err(format!("{}: no such bucket", self.name))),
            Err(e) => {
                // The S3 error code says it shorter than the whole answer.
                let text = e.to_string();
                let why = [
                    ("NoSuchBucket", "no such bucket"),
                    ("AccessDenied", "access denied (the credentials may not list the bucket)"),
                    ("InvalidAccessKeyId", "the access key id is not known to the server"),
                    ("SignatureDoesNotMatch", "the secret access key is wrong"),
                ]
                .into_iter()
                .find(|(code, _)| text.contains(&format!("<Code>{code}</Code>")));
                match why {
                    Some((_, why)) => Err(io_err(format!("{}: {why}", self.name))),
                    None => Err(io_err(format!("{}: {text}", self.name))),
                }
            }
        }
    }

    async fn delete_many(&self, digests: &[Digest]) -> Result<()> {
        self.delete_paths(digests.iter().map(|d| self.blob_path(d)).collect()).await
    }

    fn list(&self) -> BoxStream<'static, Result<Digest>> {
        let root = self.path("blobs");
        self.store
            .list(Some(&root))
            .filter_map(|r| async move {
                match r {
                    Ok(m) => {
                        let mut parts = m.location.parts().collect::<Vec<_>>().into_iter().rev();
                        let hex = parts.next()?.as_ref().to_string();
                        let _prefix = parts.next()?;
                        let alg = match parts.next()?.as_ref() {
                            "sha256" => Algorithm::Sha256,
                            "sha512" => Algorithm::Sha512,
                            _ => return None,
                        };
                        Digest::new(alg, hex).ok().map(Ok)
                    }
                    Err(e) => Some(Err(io_err(e))),
                }
            })
            .boxed()
    }

    async fn presign(&self, digest: &Digest, ttl: Duration) -> Result<Option<String>> {
        let Some(s) = &self.signer else { return Ok(None) };
        let url = s.signed_url(http::Method::GET, &self.blob_path(digest), ttl).await.map_err(io_err)?;
        Ok(Some(url.to_string()))
    }

    async fn begin_upload(&self, id: &str) -> Result<UploadState> {
        check_upload_id(id)?;
        let tail = self.put_tail(id, Bytes::new()).await?;
        Ok(ObjState { tail, ..Default::default() }.encode())
    }

    async fn begin_upload_as(&self, id: &str, target: &Digest) -> Result<UploadState> {
        check_upload_id(id)?;
        let tail = self.put_tail(id, Bytes::new()).await?;
        Ok(ObjState { target: Some(target.to_string()), tail, ..Default::default() }.encode())
    }

    async fn write_part(&self, id: &str, state: &UploadState, offset: u64) -> Result<Box<dyn PartWriter>> {
        check_upload_id(id)?;
        let st = ObjState::decode(state)?;
        // One GET: the tail is both the upload's proof of life and the start of the next part.
        let tail = self.read_tail(id, &st).await?;
        if st.len() != offset {
            return Err(BlobError::UploadSize { id: id.to_string(), expected: offset, actual: st.len() });
        }
        let mut buf = BytesMut::with_capacity(self.part_size.max(tail.len()));
        buf.extend_from_slice(&tail);
        let next = st.parts.len();
        let path = self.multipart_path(id, &st)?;
        Ok(Box::new(ObjectPart {
            store: self.clone(),
            id: id.to_string(),
            st,
            path,
            buf,
            next,
            flight: JoinSet::new(),
        }))
    }

    async fn discard_unrecorded(&self, id: &str, _state: &UploadState, _offset: u64) -> Result<()> {
        // Unrecorded tails are never read (the state names the recorded one) and are removed at
        // commit or abort; an unrecorded part is overwritten by the next part of its number.
        check_upload_id(id)
    }

    async fn read_upload(&self, id: &str, state: &UploadState) -> Result<BlobBody> {
        check_upload_id(id)?;
        let st = ObjState::decode(state)?;
        if !st.parts.is_empty() {
            // Object stores do not serve the parts of an unfinished multipart upload.
            return Err(BlobError::UploadUnreadable(format!(
                "upload {id} is in object storage, which cannot read an unfinished upload back: only a sha256 digest can be verified for an upload larger than {} MiB",
                self.part_size >> 20
            )));
        }
        let tail = self.read_tail(id, &st).await?;
        Ok(BlobBody { len: tail.len() as u64, stream: futures_util::stream::once(async { Ok(tail) }).boxed() })
    }

    async fn commit(&self, id: &str, state: &UploadState, digest: &Digest, size: u64) -> Result<()> {
        check_upload_id(id)?;
        let st = ObjState::decode(state)?;
        let tail = self.read_tail(id, &st).await?;
        if st.len() != size {
            return Err(BlobError::UploadSize { id: id.to_string(), expected: size, actual: st.len() });
        }
        let target = self.blob_path(digest);
        match &st.multipart {
            None => {
                let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
                match self.store.put_opts(&target, PutPayload::from_bytes(tail), opts).await {
                    // Another commit of this digest came first: the stored blob stays.
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
            Some(mp) => {
                let data = self.multipart_path(id, &st)?;
                let in_place = data == target;
                if in_place && matches!(self.store.head(&target).await, Ok(m) if m.size == size) {
                    // Completed already (a commit that crashed before the row was removed),
                    // or another commit of this blob came first: the stored blob stays.
                    let _ = self.multipart.abort_multipart(&data, mp).await;
                    return self.remove_upload_objects(id).await;
                }
                let mut parts: Vec<PartId> = st.parts.iter().map(|(_, e)| PartId { content_id: e.clone() }).collect();
                if !tail.is_empty() {
                    let idx = parts.len();
                    let p = self.multipart.put_part(&data, mp, idx, PutPayload::from_bytes(tail)).await;
                    parts.push(p.map_err(|e| map_err(e, || BlobError::UploadNotFound(id.to_string())))?);
                }
                // In place, the target's name is this upload's own (random, chosen at its
                // start), and was checked absent above; otherwise a conditional copy follows.
                let done = self.multipart.complete_multipart(&data, mp, parts).await;
                if let Err(e) = done
                    && !matches!(self.store.head(&data).await, Ok(m) if m.size == size)
                {
                    return Err(map_err(e, || BlobError::UploadNotFound(id.to_string())));
                }
                if !in_place {
                    match self.store.copy_if_not_exists(&data, &target).await {
                        Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => {}
                        Err(e) => return Err(io_err(e)),
                    }
                    if st.target.is_some() {
                        // Written in place for another name than it was committed under.
                        let _ = self.store.delete(&data).await;
                    }
                }
            }
        }
        self.remove_upload_objects(id).await
    }

    async fn abort_upload(&self, id: &str, state: &UploadState) -> Result<()> {
        check_upload_id(id)?;
        if let Ok(st @ ObjState { multipart: Some(_), .. }) = ObjState::decode(state) {
            let mp = st.multipart.clone().expect("matched");
            match self.multipart.abort_multipart(&self.multipart_path(id, &st)?, &mp).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        self.remove_upload_objects(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_garbage_is_refused() {
        let st = ObjState {
            target: Some(format!("sha256:{}", "ab".repeat(32))),
            multipart: Some("mp-1".into()),
            parts: vec![(5 << 20, "\"etag-1\"".into()), (5 << 20, "\"etag-2\"".into())],
            tail: "abc".into(),
            tail_len: 17,
        };
        assert_eq!(ObjState::decode(&st.encode()).unwrap(), st);
        assert_eq!(st.len(), (10 << 20) + 17);
        let empty = ObjState { tail: "t".into(), ..Default::default() };
        assert_eq!(ObjState::decode(&empty.encode()).unwrap(), empty);
        for bad in [&b""[..], b"O1", b"XX\0\0\0\0\0\0\0\0", &st.encode().0[..20]] {
            assert!(ObjState::decode(&UploadState(bad.to_vec())).is_err(), "{bad:?}");
        }
    }
}
