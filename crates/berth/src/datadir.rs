//! The data directory and its modes: created 0700, everything in it created 0600 (the process
//! umask is 077), directories left looser by earlier versions tightened at start, and a refusal
//! to start when the secrets key is readable by anyone but its owner.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::config::Config;

/// Files that hold secrets or all metadata, tightened to 0600 when found looser.
const PRIVATE_FILES: [&str; 4] = ["berth.db", "berth.db-wal", "berth.db-shm", crate::credentials::FILE];

/// Everything the process creates is private to its user (blobs, uploads, the database).
pub fn private_umask() {
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

fn mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.permissions().mode() & 0o777)
}

/// Prepares the data directory: `create` makes it (0700) when missing (for `serve`); other
/// commands need it to exist, so that a mistyped `--data-dir` is an error, not a new empty
/// registry.
pub fn prepare(cfg: &Config, create: bool) -> Result<(), String> {
    let dir = &cfg.data_dir;
    if !dir.exists() {
        if !create {
            return Err(format!(
                "there is no data directory at {}: start `berth serve` once first, or point --data-dir \
                 (BERTH_DATA_DIR) at an existing one",
                dir.display()
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    }
    if !dir.is_dir() {
        return Err(format!("the data directory {} is not a directory", dir.display()));
    }
    tighten(dir, 0o700);
    for f in PRIVATE_FILES {
        tighten(&dir.join(f), 0o600);
    }
    check_secrets_key(&dir.join(crate::credentials::SECRETS_KEY_FILE))?;
    crate::credentials::check_key_file(&dir.join(crate::credentials::KEYRING_FILE), "content and KMS keys")
}

/// Sets `want` when `path` allows its group or others anything.
fn tighten(path: &Path, want: u32) {
    if let Some(m) = mode(path)
        && m & 0o077 != 0
    {
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(want)) {
            Ok(()) => {
                tracing::info!(path = %path.display(), from = format!("{m:04o}"), to = format!("{want:04o}"), "tightened permissions")
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not tighten permissions"),
        }
    }
}

/// The secrets key unseals every stored secret: refuse to run with one others can read.
pub fn check_secrets_key(path: &Path) -> Result<(), String> {
    match mode(path) {
        Some(m) if m & 0o077 != 0 => Err(format!(
            "{} is readable by other users (mode {m:04o}); it unseals every stored secret. Run `chmod 600 {}` \
             (and consider rotating what it protects), or give the key in BERTH_SECRETS_KEY instead",
            path.display(),
            path.display()
        )),
        _ => Ok(()),
    }
}

/// Raises the soft limit on open files to the hard limit (connections and blob files are file
/// descriptors); returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readable_secrets_key_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("secrets.key");
        std::fs::write(&k, "00").unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_secrets_key(&k).unwrap_err();
        assert!(e.contains("readable by other users (mode 0644)") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_secrets_key(&k).is_ok());
        assert!(check_secrets_key(&d.path().join("missing")).is_ok());
    }

    #[test]
    fn a_readable_master_keyring_is_refused_and_a_new_one_is_private() {
        let d = tempfile::tempdir().unwrap();
        let cfg = crate::config::Config { data_dir: d.path().to_path_buf(), ..Default::default() };
        // Created on first use, 0600, and the same keys the next time.
        let ring = crate::credentials::master_keys(&cfg).unwrap();
        let path = d.path().join(crate::credentials::KEYRING_FILE);
        assert_eq!(mode(&path), Some(0o600));
        let again = crate::credentials::master_keys(&cfg).unwrap();
        assert_eq!(again.active_id(), ring.active_id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = crate::credentials::master_keys(&cfg).unwrap_err();
        assert!(e.contains("readable by other users") && e.contains("chmod 600"), "{e}");
        // A named file that is missing is an error, not a new keyring.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let named = crate::config::Config { master_key_file: Some(d.path().join("elsewhere")), ..cfg.clone() };
        assert!(crate::credentials::master_keys(&named).unwrap_err().contains("cannot read"));
        // Garbage is refused without being echoed.
        std::fs::write(d.path().join("elsewhere"), "not-a-key-at-all\n").unwrap();
        let e = crate::credentials::master_keys(&named).unwrap_err();
        assert!(!e.contains("not-a-key-at-all"), "{e}");
    }
}
