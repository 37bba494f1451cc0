//! Local filesystem backend: `blobs/<alg>/<xx>/<hex>` and `uploads/<id>`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use berth_core::{Algorithm, Digest};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::{BlobBody, BlobError, BlobStore, Result, UploadWriter, check_upload_id};

const READ_CHUNK: usize = 1024 * 1024;

#[derive(Clone)]
pub struct FsBlobStore {
    root: Arc<PathBuf>,
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
        Ok(FsBlobStore { root: Arc::new(root) })
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
    r.map_err(|io| if io.kind() == io::ErrorKind::NotFound { e } else { BlobError::Io(io) })
}

struct FsWriter {
    file: Option<File>,
    len: u64,
}

#[async_trait]
impl UploadWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let mut file = self.file.take().ok_or_else(|| io::Error::other("writer already failed"))?;
        let n = data.len() as u64;
        let pos = self.len;
        let file = blocking(move || {
            file.write_all(&data)?;
            start_writeback(&file, pos, n);
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        self.len += n;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        let file = self.file.take().ok_or_else(|| io::Error::other("writer already failed"))?;
        blocking(move || file.sync_data()).await?;
        Ok(self.len)
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
        let mut file =
            not_found_as(tokio::fs::File::open(self.blob_path(digest)).await, BlobError::NotFound(digest.clone()))?;
        let size = file.metadata().await?.len();
        let range = range.unwrap_or(0..size);
        if range.start > 0 {
            file.seek(SeekFrom::Start(range.start)).await?;
        }
        let len = range.end.saturating_sub(range.start);
        let stream = ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed();
        Ok(BlobBody { len, stream })
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> Result<Vec<Digest>> {
        let root = self.root.clone();
        Ok(blocking(move || {
            let mut out = Vec::new();
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                let dir = root.join("blobs").join(alg.as_str());
                for prefix in fs::read_dir(&dir)? {
                    for entry in fs::read_dir(prefix?.path())? {
                        let name = entry?.file_name();
                        if let Some(d) = name.to_str().and_then(|n| Digest::new(alg, n.to_string()).ok()) {
                            out.push(d);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await?)
    }

    async fn create_upload(&self, id: &str) -> Result<()> {
        let path = self.upload_path(id)?;
        blocking(move || OpenOptions::new().write(true).create_new(true).open(path).map(drop)).await?;
        Ok(())
    }

    async fn append_upload(&self, id: &str, offset: u64) -> Result<Box<dyn UploadWriter>> {
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
            Ok(file) => Ok(Box::new(FsWriter { file: Some(file), len: offset })),
            Err(actual) => Err(BlobError::UploadSize { id, expected: offset, actual }),
        }
    }

    async fn read_upload(&self, id: &str) -> Result<BlobBody> {
        let path = self.upload_path(id)?;
        let file = not_found_as(tokio::fs::File::open(path).await, BlobError::UploadNotFound(id.to_string()))?;
        let len = file.metadata().await?.len();
        let stream = ReaderStream::with_capacity(file, READ_CHUNK).boxed();
        Ok(BlobBody { len, stream })
    }

    async fn commit_upload(&self, id: &str, digest: &Digest, size: u64) -> Result<()> {
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
        match not_found_as(r, BlobError::UploadNotFound(id.clone()))? {
            Ok(()) => Ok(()),
            Err(actual) => Err(BlobError::UploadSize { id, expected: size, actual }),
        }
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        match tokio::fs::remove_file(self.upload_path(id)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    async fn read_all(b: BlobBody) -> Vec<u8> {
        let chunks: Vec<Bytes> = b.stream.try_collect().await.unwrap();
        chunks.concat()
    }

    fn digest(c: char) -> Digest {
        Digest::new(Algorithm::Sha256, c.to_string().repeat(64)).unwrap()
    }

    #[tokio::test]
    async fn upload_commit_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobStore::open(dir.path()).unwrap();
        let d = digest('a');
        assert_eq!(s.stat(&d).await.unwrap(), None);
        s.create_upload("u1").await.unwrap();
        let mut w = s.append_upload("u1", 0).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"garbage")).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 13);
        // Resuming at 6 drops the bytes after it.
        let mut w = s.append_upload("u1", 6).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 11);
        assert!(matches!(s.append_upload("u1", 99).await, Err(BlobError::UploadSize { actual: 11, .. })));
        assert!(matches!(s.commit_upload("u1", &d, 12).await, Err(BlobError::UploadSize { .. })));
        s.commit_upload("u1", &d, 11).await.unwrap();
        assert_eq!(s.stat(&d).await.unwrap(), Some(11));
        assert_eq!(read_all(s.open(&d, None).await.unwrap()).await, b"hello world");
        assert_eq!(read_all(s.open(&d, Some(3..8)).await.unwrap()).await, b"lo wo");
        assert_eq!(s.list().await.unwrap(), vec![d.clone()]);
        assert!(matches!(s.read_upload("u1").await, Err(BlobError::UploadNotFound(_))));
        s.delete(&d).await.unwrap();
        assert!(matches!(s.open(&d, None).await, Err(BlobError::NotFound(_))));
    }

    #[tokio::test]
    async fn rejects_path_like_upload_ids() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobStore::open(dir.path()).unwrap();
        for bad in ["../x", "a/b", "", ".", "a b"] {
            assert!(matches!(s.create_upload(bad).await, Err(BlobError::BadUploadId(_))), "{bad}");
        }
    }
}
