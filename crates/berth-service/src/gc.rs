//! Online garbage collection: removes blobs no manifest references, and uploads abandoned for
//! longer than their time to live, while pushes and pulls go on.
//!
//! Safety comes from the metadata store, not from a read-only window:
//! 1. *Mark*: candidates (blobs stored, unlinked, or referenced by a deleted manifest since the
//!    last pass) that no manifest references become `condemned`.
//! 2. *Sweep*: blobs condemned longer than the grace period, and still unreferenced, become
//!    `deleting` in one transaction; their files are deleted; then their rows.
//!
//! Anything that needs a blob revives it first, in the transaction that relies on it: storing or
//! mounting it makes it `live` (and waits while it is `deleting`, then stores it anew; a blob not
//! recorded yet is recorded only once its file is in place, so a crash cannot leave a record
//! without a file); a manifest
//! push makes the blobs it references `live`, and treats a `deleting` one as missing — the client
//! gets MANIFEST_BLOB_UNKNOWN and uploads it again. So no manifest can reference a deleted blob,
//! and a push needs the grace period (default an hour) between uploading a layer and pushing the
//! manifest that names it. A crash mid-sweep leaves rows `deleting`; the next pass finishes them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Error, Result};
use crate::jobs::{Renewal, lease_until};

/// Blobs deleted per metadata batch; files are deleted this many at a time in parallel.
const SWEEP_BATCH: i64 = 2_000;
/// Batches of deletes in flight, and the blobs per batch (an object store's one request).
const PARALLEL_DELETES: usize = 4;
const DELETE_BATCH: usize = 500;

#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// How long a blob stays unreferenced before it is deleted.
    pub grace: Duration,
    /// How long an upload may sit untouched before it is abandoned.
    pub upload_ttl: Duration,
    /// Report what would be deleted; change nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { grace: Duration::from_secs(3600), upload_ttl: Duration::from_secs(24 * 3600), dry_run: false }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub dry_run: bool,
    /// Candidates examined by the mark pass.
    pub examined: u64,
    /// Blobs newly found unreferenced (deleted by a later pass once the grace period is over).
    pub condemned: u64,
    /// Blobs deleted (in a dry run: that would be).
    pub deleted_blobs: u64,
    pub deleted_bytes: u64,
    /// Blob files that could not be deleted (kept `deleting`; retried next pass).
    pub failed: u64,
    pub uploads_removed: u64,
    pub elapsed: Duration,
}

domain! {
    /// Garbage collection and upload expiry.
    Gc
}

/// The periodic collection job: one round at a time over all nodes, `berth gc` included.
pub const GC_JOB: &str = "periodic:gc";

impl Gc<'_> {
    /// One collection pass and upload expiry, as `berth gc` runs them: under the lease of the
    /// periodic collection job, so that no node collects at the same time (waits for a round
    /// running elsewhere to finish). The periodic job's schedule is left as it was.
    pub async fn gc(&self, caller: &Caller, opts: GcOptions) -> Result<GcReport> {
        caller.require_operator("collect garbage")?;
        let started = Instant::now();
        if opts.dry_run {
            return self.gc_dry_run(opts).await;
        }
        let key = GC_JOB;
        let node = self.node();
        let mut waited = false;
        let job = loop {
            let now = berth_meta::now_ms();
            match self.meta.claim_singleton(key, &node, now, lease_until(now), true).await? {
                Ok(job) => break Some(job),
                // No periodic job (no node collects on a schedule): nothing to keep out of the way.
                Err(berth_meta::NotClaimed::Missing | berth_meta::NotClaimed::NotDue(_)) => break None,
                Err(berth_meta::NotClaimed::Held { by, until }) => {
                    if !waited {
                        tracing::info!(node = %by, "a garbage collection is running on another node: waiting for it");
                        waited = true;
                    }
                    let wait = (until - now).clamp(100, 1000) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
        };
        let _renewal = job.as_ref().map(|j| Renewal::start(&self.meta, j, &node));
        let outcome = async {
            let mut report = self.collect_garbage(opts).await?;
            report.uploads_removed = self.expire_uploads(opts.upload_ttl).await?;
            Ok::<_, Error>(report)
        }
        .await;
        if let Some(job) = &job {
            // A manual round counts as a round; the periodic job keeps its schedule.
            let next = self.meta.job_due(job.id).await?.unwrap_or_else(berth_meta::now_ms);
            self.meta.reschedule_job(job, &node, next, outcome.is_ok(), None).await?;
        }
        let mut report = outcome?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn gc_dry_run(&self, opts: GcOptions) -> Result<GcReport> {
        let started = Instant::now();
        let mut report = GcReport { dry_run: true, ..Default::default() };
        let now = berth_meta::now_ms();
        let cutoff = now - opts.grace.as_millis() as i64;
        let sweep = self.meta.gc_sweep(cutoff, None, i64::MAX / 2, true).await?;
        report.deleted_blobs = sweep.blobs.len() as u64;
        report.deleted_bytes = sweep.blobs.iter().map(|(_, s)| *s as u64).sum();
        report.uploads_removed =
            self.meta.stale_uploads(now - opts.upload_ttl.as_millis() as i64, i64::MAX / 2).await?.len() as u64;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Marks and sweeps unreferenced blobs (one round of the periodic collection job; see the
    /// module comment for why it is safe beside pushes, and beside another round).
    pub(crate) async fn collect_garbage(&self, opts: GcOptions) -> Result<GcReport> {
        let started = Instant::now();
        let mut report = GcReport::default();
        let cutoff = berth_meta::now_ms() - opts.grace.as_millis() as i64;
        let mark = self.meta.gc_mark().await?;
        report.examined = mark.examined;
        report.condemned = mark.condemned;
        let mut after: Option<String> = None;
        loop {
            let sweep = self.meta.gc_sweep(cutoff, after.as_deref(), SWEEP_BATCH, false).await?;
            let last_page = sweep.next.is_none();
            after = sweep.next;
            if sweep.blobs.is_empty() {
                if last_page {
                    break;
                }
                continue;
            }
            let n = sweep.blobs.len();
            // Each blob's stored copies: sealed ones by their names, and the one kept in the
            // clear under its digest by versions before encryption (deleting a missing one is
            // no error).
            let digests: Vec<String> = sweep.blobs.iter().map(|b| b.0.clone()).collect();
            let mut copies: std::collections::HashMap<String, Vec<String>> = Default::default();
            for (d, object) in self.meta.blob_objects_of(&digests).await? {
                copies.entry(d).or_default().push(object);
            }
            // Every copy of the page's blobs, deleted in batches (one request per batch on an
            // object store); a failed batch keeps its blobs for the next round.
            let mut names: Vec<(String, berth_core::Digest)> = Vec::new();
            for (d, _) in &sweep.blobs {
                for name in copies.remove(d).unwrap_or_default().into_iter().chain([d.clone()]) {
                    if let Ok(n) = name.parse::<berth_core::Digest>() {
                        names.push((d.clone(), n));
                    }
                }
            }
            let failed: std::collections::HashSet<String> = futures_util::stream::iter(
                names.chunks(DELETE_BATCH).map(<[_]>::to_vec).collect::<Vec<_>>(),
            )
            .map(|batch| async move {
                let objects: Vec<berth_core::Digest> = batch.iter().map(|b| b.1.clone()).collect();
                match self.blobs.delete_many(&objects).await {
                    Ok(()) => Vec::new(),
                    Err(e) => {
                        tracing::error!(error = %e, blobs = batch.len(), "garbage collection could not delete blobs");
                        batch.iter().map(|b| b.0.clone()).collect()
                    }
                }
            })
            .buffer_unordered(PARALLEL_DELETES)
            .flat_map(futures_util::stream::iter)
            .collect()
            .await;
            let results: Vec<(String, i64, bool)> = sweep
                .blobs
                .into_iter()
                .map(|(d, size)| {
                    let ok = !failed.contains(&d);
                    (d, size, ok)
                })
                .collect();
            let done: Vec<String> = results.iter().filter(|r| r.2).map(|r| r.0.clone()).collect();
            report.failed += (n - done.len()) as u64;
            report.deleted_bytes += results.iter().filter(|r| r.2).map(|r| r.1 as u64).sum::<u64>();
            report.deleted_blobs += self.meta.gc_forget(done).await?;
            tracing::info!(deleted = report.deleted_blobs, bytes = report.deleted_bytes, "garbage collection progress");
            if report.failed > 0 || last_page {
                break;
            }
        }
        self.caches.content.drop_all_blobs();
        report.elapsed = started.elapsed();
        let c = &self.counters;
        c.gc_runs.fetch_add(1, Ordering::Relaxed);
        c.gc_examined.fetch_add(report.examined, Ordering::Relaxed);
        c.gc_condemned.fetch_add(report.condemned, Ordering::Relaxed);
        c.gc_deleted_blobs.fetch_add(report.deleted_blobs, Ordering::Relaxed);
        c.gc_deleted_bytes.fetch_add(report.deleted_bytes, Ordering::Relaxed);
        c.gc_failed.fetch_add(report.failed, Ordering::Relaxed);
        c.gc_last_ms.store(report.elapsed.as_millis() as u64, Ordering::Relaxed);
        Ok(report)
    }

    /// Removes uploads untouched for longer than `ttl` (one round of the upload expiry job).
    pub(crate) async fn expire_uploads(&self, ttl: Duration) -> Result<u64> {
        let mut removed = 0;
        for (id, state) in self.meta.stale_uploads(berth_meta::now_ms() - ttl.as_millis() as i64, 10_000).await? {
            self.meta.delete_upload(&id).await?;
            match self.sealed.abort_upload(&id, &berth_blob::UploadState(state.unwrap_or_default())).await {
                Ok(()) | Err(berth_blob::BlobError::UploadNotFound(_)) => {}
                Err(e) => tracing::warn!(upload = %id, error = %e, "could not delete an abandoned upload's file"),
            }
            removed += 1;
        }
        self.counters.gc_uploads_removed.fetch_add(removed, Ordering::Relaxed);
        Ok(removed)
    }
}
