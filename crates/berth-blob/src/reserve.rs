//! A reserve of disk space for a full disk. A preallocated file in the data directory holds
//! space that nothing else can take. When the disk fills (a write fails with "no space", or the
//! free space drops to almost nothing), the file is deleted: the space it held lets deletes,
//! upload cancels and garbage collection (which all write a little metadata) run, and new pushes
//! are refused until the space is back; then the reserve is taken again.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Below this much free space the disk counts as full even before a write fails.
const LOW_WATER: u64 = 1 << 20;
/// The reserve never takes more than this share of the filesystem.
const MAX_SHARE: u64 = 20;
/// Free space is measured at most this often.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub const FILE: &str = "space-reserve";

pub struct DiskReserve {
    path: PathBuf,
    size: u64,
    released: AtomicBool,
    checked: Mutex<Option<Instant>>,
}

/// Free and total bytes of the filesystem holding `dir`.
pub fn disk_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a pointer to a local struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = s.f_frsize as u64;
    Ok((s.f_bavail as u64 * unit, s.f_blocks as u64 * unit))
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl DiskReserve {
    /// Takes a reserve of `size` bytes (at most a twentieth of the filesystem) in `dir`. If the
    /// space is not there, the reserve starts released (the disk is already full).
    pub fn open(dir: &Path, size: u64) -> std::io::Result<DiskReserve> {
        let (_, total) = disk_space(dir)?;
        let size = size.min(total / MAX_SHARE);
        let r = DiskReserve { path: dir.join(FILE), size, released: AtomicBool::new(true), checked: Mutex::new(None) };
        r.take();
        Ok(r)
    }

    /// The reserve's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// (Re)creates the file; whether the reserve is now held.
    fn take(&self) -> bool {
        if self.size == 0 {
            return false;
        }
        let ok = (|| -> std::io::Result<()> {
            let f = OpenOptions::new().write(true).create(true).truncate(false).open(&self.path)?;
            allocate(&f, self.size)?;
            f.sync_all()
        })();
        match ok {
            Ok(()) => {
                self.released.store(false, Ordering::SeqCst);
                true
            }
            Err(e) => {
                let _ = fs::remove_file(&self.path);
                tracing::warn!(path = %self.path.display(), error = %e, "could not take the disk-space reserve");
                false
            }
        }
    }

    /// Gives the reserved space back to the filesystem (the disk filled up). Logged once.
    pub fn release(&self) {
        if self.size > 0 && !self.released.swap(true, Ordering::SeqCst) {
            let _ = fs::remove_file(&self.path);
            tracing::error!(
                freed = self.size,
                "the disk is full: released the space reserve so deletes and garbage collection can run; pushes are \
                 refused until space is free again"
            );
        }
    }

    /// Whether the disk counts as full: the reserve was released and the space has not come back.
    /// Measures the free space at most once a second, releasing the reserve when almost nothing
    /// is left and taking it again once twice its size is free.
    pub fn full(&self) -> bool {
        if self.size == 0 {
            return false;
        }
        let due = {
            let mut c = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            let due = c.is_none_or(|t| t.elapsed() >= CHECK_EVERY);
            if due {
                *c = Some(Instant::now());
            }
            due
        };
        if due && let Ok((free, _)) = disk_space(self.path.parent().unwrap_or(Path::new("."))) {
            let released = self.released.load(Ordering::SeqCst);
            if !released && free < LOW_WATER {
                self.release();
            } else if released && free > 2 * self.size && self.take() {
                tracing::info!(free, "disk space is back: took the space reserve again; pushes are accepted");
            }
        }
        self.released.load(Ordering::SeqCst)
    }
}

fn allocate(f: &fs::File, size: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; real blocks, unlike a sparse set_len.
    let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, size as libc::off_t) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(r)) }
}
