//! Local filesystem backend: `blobs/<alg>/<xx>/<hex>` and `uploads/<id>`. An upload is one
//! file its parts are appended to; its state records only its length (the file is the truth: a
//! part is resumed at the recorded offset, cutting off whatever a crash left past it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use berth_core::{Algorithm, Digest};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio_util::io::ReaderStream;

use crate::{BlobBody, BlobError, BlobStore, PartWriter, Result, UploadState, check_upload_id};

const READ_CHUNK: usize = 1024 * 1024;
const WRITEBACK_STEP: u64 = 16 * 1024 * 1024;
/// Ranges at least this long are served from a memory map (one copy fewer than read()).
const MMAP_MIN: u64 = 256 * 1024;
/// Bytes handed to the HTTP layer at a time from a mapping.
const MAP_CHUNK: u64 = 4 * 1024 * 1024;

struct SharedMap(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Prefaults a part of the mapping on a blocking thread, so the (async) socket write that follows
/// copies from memory and never waits for the disk on a runtime thread.
fn populate(map: &Arc<memmap2::Mmap>, r: Range<u64>) -> tokio::task::JoinHandle<()> {
    let map = map.clone();
    tokio::task::spawn_blocking(move || {
        #[cfg(target_os = "linux")]
        let advice = memmap2::Advice::PopulateRead;
        #[cfg(not(target_os = "linux"))]
        let advice = memmap2::Advice::WillNeed;
        if map.advise_range(advice, r.start as usize, (r.end - r.start) as usize).is_err() {
            // Older kernels: touch one byte a page instead.
            let mut sum = 0u8;
            for i in (r.start..r.end).step_by(4096) {
                sum = sum.wrapping_add(map[i as usize]);
            }
            std::hint::black_box(sum);
        }
    })
}

/// Drops the page-table entries of a part already sent, so the process's RSS does not grow with
/// the blob: the data stays in the page cache, and a late reader would simply fault it back in.
fn release(map: &memmap2::Mmap, r: Range<u64>) {
    if r.end > r.start {
        // SAFETY: a shared, read-only file mapping: after MADV_DONTNEED, pages read from the file again.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, r.start as usize, (r.end - r.start) as usize)
        };
    }
}

/// The range of a mapped blob as 4 MiB `Bytes` (views of the mapping, no copy), each prefaulted
/// while the previous one is being sent.
fn mapped_stream(
    map: Arc<memmap2::Mmap>,
    range: Range<u64>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let bytes = Bytes::from_owner(SharedMap(map.clone()));
    let chunk = |start: u64| start..(start + MAP_CHUNK).min(range.end);
    let first = populate(&map, chunk(range.start));
    futures_util::stream::unfold((range.start, Some(first)), move |(pos, pending)| {
        let (map, bytes, end) = (map.clone(), bytes.clone(), range.end);
        async move {
            let pending = pending?;
            let _ = pending.await;
            let this = pos..(pos + MAP_CHUNK).min(end);
            let next = (this.end < end).then(|| populate(&map, this.end..(this.end + MAP_CHUNK).min(end)));
            let out = bytes.slice(this.start as usize..this.end as usize);
            release(&map, this.start.saturating_sub(2 * MAP_CHUNK)..this.start.saturating_sub(MAP_CHUNK));
            Some((Ok(out), (this.end, next)))
        }
    })
}

#[derive(Clone)]
pub struct FsBlobStore {
    root: Arc<PathBuf>,
    /// Space held back for a full disk (`berth serve` only).
    reserve: Option<Arc<crate::reserve::DiskReserve>>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// Starts writing the range to disk now, without waiting, so the fsync that makes the upload
/// durable finds little left to do: received bytes reach the disk while the rest arrives.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only schedules writeback of the range.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            fs::create_dir_all(root.join("blobs").join(alg.as_str()))?;
        }
        fs::create_dir_all(root.join("uploads"))?;
        Ok(FsBlobStore { root: Arc::new(root), reserve: None })
    }

    /// Holds `bytes` of the data directory's filesystem in reserve for when the disk fills
    /// (see [`crate::reserve`]).
    pub fn with_reserve(mut self, bytes: u64) -> io::Result<Self> {
        if bytes > 0 {
            self.reserve = Some(Arc::new(crate::reserve::DiskReserve::open(&self.root, bytes)?));
        }
        Ok(self)
    }

    /// The reserve's size, when there is one.
    pub fn reserve_size(&self) -> Option<u64> {
        self.reserve.as_ref().map(|r| r.size())
    }

    /// A write that failed for lack of space gives up the reserve, so deletes can run.
    fn note<T>(&self, r: Result<T>) -> Result<T> {
        if let (Err(BlobError::StorageFull(_)), Some(reserve)) = (&r, &self.reserve) {
            reserve.release();
        }
        r
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        // The digest's hex is validated lowercase hex, so this cannot escape the root.
        self.root.join("blobs").join(d.algorithm().as_str()).join(&d.hex()[..2]).join(d.hex())
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf> {
        check_upload_id(id)?;
        Ok(self.root.join("uploads").join(id))
    }
}

fn not_found_as<T>(r: io::Result<T>, e: BlobError) -> Result<T> {
    r.map_err(|io| if io.kind() == io::ErrorKind::NotFound { e } else { io.into() })
}

struct FsWriter {
    file: Option<File>,
    len: u64,
    reserve: Option<Arc<crate::reserve::DiskReserve>>,
}

impl FsWriter {
    fn note<T>(&self, r: Result<T>) -> Result<T> {
        if let (Err(BlobError::StorageFull(_)), Some(reserve)) = (&r, &self.reserve) {
            reserve.release();
        }
        r
    }
}

/// The state of a file upload of `len` bytes.
fn state_of(len: u64) -> UploadState {
    UploadState(len.to_le_bytes().to_vec())
}

#[async_trait]
impl PartWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let mut file = self.file.take().ok_or_else(|| io::Error::other("writer already failed"))?;
        let n = data.len() as u64;
        let pos = self.len;
        let file = blocking(move || {
            file.write_all(&data)?;
            // Every WRITEBACK_STEP bytes, start writing the last step to disk.
            let (before, after) = (pos / WRITEBACK_STEP, (pos + n) / WRITEBACK_STEP);
            if after > before {
                start_writeback(&file, (after - 1) * WRITEBACK_STEP, WRITEBACK_STEP);
            }
            Ok(file)
        })
        .await
        .map_err(BlobError::from);
        let file = self.note(file)?;
        self.file = Some(file);
        self.len += n;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(u64, UploadState)> {
        let file = self.file.take().ok_or_else(|| io::Error::other("writer already failed"))?;
        let synced = blocking(move || file.sync_data()).await.map_err(BlobError::from);
        self.note(synced)?;
        Ok((self.len, state_of(self.len)))
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobBody> {
        let path = self.blob_path(digest);
        let opened = blocking(move || {
            let file = File::open(path)?;
            let size = file.metadata()?.len();
            Ok((file, size))
        })
        .await;
        let (file, size) = not_found_as(opened, BlobError::NotFound(digest.clone()))?;
        let range = range.unwrap_or(0..size);
        if range.end > size {
            // The record says more than the file holds: damaged storage, never a panic.
            return Err(BlobError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("blob {digest} holds {size} bytes, fewer than the {} asked for", range.end),
            )));
        }
        let len = range.end.saturating_sub(range.start);
        if len < MMAP_MIN {
            let data = blocking(move || {
                let mut buf = vec![0u8; len as usize];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, range.start)?;
                Ok(buf)
            })
            .await?;
            return Ok(BlobBody { len, stream: futures_util::stream::once(async { Ok(Bytes::from(data)) }).boxed() });
        }
        // SAFETY: blob files are immutable once committed (written under another name, then
        // renamed); deletion unlinks them, which leaves an existing mapping valid.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file)? });
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(BlobBody { len, stream: mapped_stream(map, range).boxed() })
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self) -> BoxStream<'static, Result<Digest>> {
        // One prefix directory at a time: memory stays bounded by the largest of them.
        let root = self.root.clone();
        let dirs: Vec<(Algorithm, PathBuf)> = [Algorithm::Sha256, Algorithm::Sha512]
            .into_iter()
            .map(|alg| (alg, root.join("blobs").join(alg.as_str())))
            .collect();
        futures_util::stream::iter(dirs)
            .then(|(alg, dir)| async move {
                let prefixes = blocking(move || {
                    let mut out = Vec::new();
                    for e in fs::read_dir(&dir)? {
                        out.push(e?.path());
                    }
                    out.sort();
                    Ok(out)
                })
                .await;
                match prefixes {
                    Ok(p) => futures_util::stream::iter(p.into_iter().map(move |p| Ok((alg, p)))).left_stream(),
                    Err(e) => futures_util::stream::once(async move { Err(BlobError::from(e)) }).right_stream(),
                }
            })
            .flatten()
            .then(|r| async move {
                let (alg, prefix) = match r {
                    Ok(x) => x,
                    Err(e) => return vec![Err(e)],
                };
                let listed = blocking(move || {
                    let mut out = Vec::new();
                    for entry in fs::read_dir(prefix)? {
                        let name = entry?.file_name();
                        if let Some(d) = name.to_str().and_then(|n| Digest::new(alg, n.to_string()).ok()) {
                            out.push(d);
                        }
                    }
                    Ok(out)
                })
                .await;
                match listed {
                    Ok(v) => v.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(BlobError::from(e))],
                }
            })
            .flat_map(futures_util::stream::iter)
            .boxed()
    }

    async fn begin_upload(&self, id: &str) -> Result<UploadState> {
        let path = self.upload_path(id)?;
        let r = blocking(move || OpenOptions::new().write(true).create_new(true).open(path).map(drop)).await;
        self.note(r.map_err(BlobError::from))?;
        Ok(state_of(0))
    }

    async fn write_part(&self, id: &str, _state: &UploadState, offset: u64) -> Result<Box<dyn PartWriter>> {
        let path = self.upload_path(id)?;
        let id = id.to_string();
        let r = blocking(move || {
            let mut f = OpenOptions::new().write(true).open(path)?;
            let len = f.metadata()?.len();
            if len < offset {
                return Ok(Err(len));
            }
            if len > offset {
                f.set_len(offset)?;
            }
            f.seek(SeekFrom::Start(offset))?;
            Ok(Ok(f))
        })
        .await;
        match not_found_as(r, BlobError::UploadNotFound(id.clone()))? {
            Ok(file) => Ok(Box::new(FsWriter { file: Some(file), len: offset, reserve: self.reserve.clone() })),
            Err(actual) => Err(BlobError::UploadSize { id, expected: offset, actual }),
        }
    }

    async fn discard_unrecorded(&self, id: &str, _state: &UploadState, offset: u64) -> Result<()> {
        let path = self.upload_path(id)?;
        let r = blocking(move || {
            let f = OpenOptions::new().write(true).open(path)?;
            if f.metadata()?.len() > offset {
                f.set_len(offset)?;
            }
            Ok(())
        })
        .await;
        not_found_as(r, BlobError::UploadNotFound(id.to_string()))
    }

    async fn read_upload(&self, id: &str, _state: &UploadState) -> Result<BlobBody> {
        let path = self.upload_path(id)?;
        let file = not_found_as(tokio::fs::File::open(path).await, BlobError::UploadNotFound(id.to_string()))?;
        let len = file.metadata().await?.len();
        let stream = ReaderStream::with_capacity(file, READ_CHUNK).boxed();
        Ok(BlobBody { len, stream })
    }

    async fn commit(&self, id: &str, _state: &UploadState, digest: &Digest, size: u64) -> Result<()> {
        let src = self.upload_path(id)?;
        let dst = self.blob_path(digest);
        let id = id.to_string();
        let r = blocking(move || {
            let f = File::open(&src)?;
            let len = f.metadata()?.len();
            if len != size {
                return Ok(Err(len));
            }
            let dir = dst.parent().expect("blob path has a parent");
            if dst.exists() {
                // Same digest, same content: keep the stored copy.
                fs::remove_file(&src)?;
                return Ok(Ok(()));
            }
            f.sync_all()?;
            drop(f);
            let created = !dir.exists();
            fs::create_dir_all(dir)?;
            fs::rename(&src, &dst)?;
            sync_dir(dir)?;
            if created {
                sync_dir(dir.parent().expect("prefix dir has a parent"))?;
            }
            Ok(Ok(()))
        })
        .await;
        match self.note(not_found_as(r, BlobError::UploadNotFound(id.clone())))? {
            Ok(()) => Ok(()),
            Err(actual) => Err(BlobError::UploadSize { id, expected: size, actual }),
        }
    }

    async fn abort_upload(&self, id: &str, _state: &UploadState) -> Result<()> {
        match tokio::fs::remove_file(self.upload_path(id)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn probe(&self) -> Result<()> {
        let dir = self.root.join("blobs");
        match blocking(move || std::fs::metadata(&dir)).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(BlobError::Io(io::Error::other("the blobs directory is not a directory"))),
            Err(e) => Err(e.into()),
        }
    }

    fn storage_full(&self) -> bool {
        self.reserve.as_ref().is_some_and(|r| r.full())
    }
}
