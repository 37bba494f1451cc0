//! Consistency check: every blob against its digest, every reference against what it names.
//! Read-only: it reports and changes nothing.

use std::collections::{HashMap, HashSet};

use berth_core::Digest;
use berth_crypto::Hasher;
use berth_meta::BlobObject;
use futures_util::{StreamExt, TryStreamExt};

use crate::caller::Caller;
use crate::core::domain;
use crate::error::Result;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsckReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub manifests_checked: u64,
    /// Damage: missing or corrupt blobs, manifests whose bytes do not match their digest,
    /// references to content that is not there.
    pub problems: Vec<String>,
    /// Stored objects that no metadata records (left by an interrupted upload, or a blob's copy
    /// in the clear that the encryption job has sealed but not yet removed).
    pub unrecorded_blobs: Vec<String>,
    /// Child manifests an index lists that are not in its repository (a sparse index: accepted
    /// on push, not damage).
    pub sparse_children: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

domain! {
    /// Consistency checks of metadata against storage.
    Fsck
}

impl Fsck<'_> {
    pub async fn fsck(&self, caller: &Caller, progress: impl Fn(&str)) -> Result<FsckReport> {
        caller.require_operator("check the registry's consistency")?;
        let mut report = FsckReport::default();
        let recorded = self.meta.all_blobs().await?;
        let stored: HashSet<Digest> = self.blobs.list().try_collect().await?;
        let mut sealed: HashMap<String, Vec<BlobObject>> = HashMap::new();
        for (digest, _, o) in self.meta.all_blob_objects().await? {
            sealed.entry(digest).or_default().push(o);
        }
        let clear: HashSet<String> = self.meta.clear_blobs().await?.into_iter().collect();
        let mut recorded_set = HashSet::new();
        for (digest_str, size) in &recorded {
            let Ok(digest) = digest_str.parse::<Digest>() else {
                report.problems.push(format!("blob record {digest_str:?} is not a valid digest"));
                continue;
            };
            report.blobs_checked += 1;
            // Each sealed copy, or (stored before encryption, not sealed yet) the plain one.
            let mut copies: Vec<Option<&BlobObject>> = sealed.get(digest_str).into_iter().flatten().map(Some).collect();
            if clear.contains(digest_str) {
                copies.push(None);
            }
            if copies.is_empty() {
                report.problems.push(format!("blob {digest} is recorded with no stored copy"));
            }
            for copy in copies {
                let name = match copy {
                    Some(o) => match o.object.parse::<Digest>() {
                        Ok(n) => n,
                        Err(_) => {
                            report.problems.push(format!("blob {digest}: stored copy name {:?} is invalid", o.object));
                            continue;
                        }
                    },
                    None => digest.clone(),
                };
                let what = match copy {
                    Some(o) if o.scope.is_empty() => format!("blob {digest}"),
                    Some(o) => format!("blob {digest} (copy under KMS key {})", o.scope),
                    None => format!("blob {digest} (stored in the clear)"),
                };
                recorded_set.insert(name.clone());
                if !stored.contains(&name) {
                    if self.meta.blob_state(digest_str).await?.is_some_and(|s| s != "deleting") {
                        report.problems.push(format!("{what} is recorded but missing from storage"));
                    }
                    continue;
                }
                let mut body = match self.open_copy(None, &digest, *size as u64, copy, None).await {
                    Ok(b) => b,
                    // Collected since it was listed (fsck runs beside a live registry).
                    Err(_) if self.meta.blob_state(digest_str).await?.is_none_or(|s| s == "deleting") => continue,
                    Err(e) => {
                        report.problems.push(format!("{what} cannot be opened: {e}"));
                        continue;
                    }
                };
                let mut h = Hasher::new(digest.algorithm());
                let mut n = 0u64;
                let mut failed = None;
                while let Some(chunk) = body.stream.next().await {
                    match chunk {
                        Ok(c) => {
                            n += c.len() as u64;
                            h.update(&c);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                report.bytes_checked += n;
                if let Some(e) = failed {
                    report.problems.push(format!("{what} cannot be read: {e}"));
                } else if n != *size as u64 {
                    report.problems.push(format!("{what} holds {n} bytes, {size} recorded"));
                } else if h.finish() != digest {
                    report.problems.push(format!("{what} is corrupt: its content has another digest"));
                }
            }
            progress(&format!("checked blob {digest}"));
        }
        for d in stored.difference(&recorded_set) {
            report.unrecorded_blobs.push(d.to_string());
        }
        report.unrecorded_blobs.sort();

        for (repo, digest_str, stored) in self.meta.all_manifests().await? {
            report.manifests_checked += 1;
            let content = match self.open_manifest(None, stored).await {
                Ok(c) => c,
                Err(e) => {
                    report.problems.push(format!("manifest {repo}@{digest_str} cannot be opened: {e}"));
                    continue;
                }
            };
            match digest_str.parse::<Digest>() {
                Ok(d) if berth_crypto::digest_of(d.algorithm(), &content) == d => {}
                _ => report.problems.push(format!("manifest {repo}@{digest_str}: content does not match its digest")),
            }
        }
        for r in self.meta.dangling_blob_refs().await? {
            report.problems.push(format!(
                "manifest {}@{} references blob {} that is not linked to the repository",
                r.repository, r.manifest, r.target
            ));
        }
        // Indexes pushed over the OCI API may be sparse (some platforms only): worth knowing,
        // not damage.
        for r in self.meta.dangling_children().await? {
            report.sparse_children.push(format!(
                "index {}@{} lists manifest {} that is not in the repository (a sparse index)",
                r.repository, r.manifest, r.target
            ));
        }
        Ok(report)
    }
}
