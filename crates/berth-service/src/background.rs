//! What a `berth serve` node runs besides answering requests: scan workers, the outbox's
//! consumers (scan on push), the periodic singleton jobs (garbage collection, upload expiry,
//! lifecycle, outbox pruning) and the node's own chores (writing the pull times it buffered,
//! picking up a rotated token key, watching free space).

use std::sync::Arc;
use std::time::Duration;

use crate::caller::Caller;
use crate::content::Content;
use crate::core::Core;
use crate::encryption::Encryption;
use crate::error::Result;
use crate::events::Consumer;
use crate::gc::{GC_JOB, Gc, GcOptions};
use crate::jobs::{Every, PeriodicWorker, Round, Workers};
use crate::lifecycle::Lifecycle;
use crate::replication::{ReplicateOnPush, ReplicationWorker};
use crate::scanning::{ScanOnPush, ScanWorker};

/// What a periodic job does each round.
#[derive(Debug, Clone, Copy)]
pub enum Periodic {
    /// Garbage collection of blobs.
    Gc(GcOptions),
    /// Every repository's lifecycle policy.
    Lifecycle,
    /// Uploads untouched for longer than this are removed.
    UploadExpiry(Duration),
    /// Outbox events every consumer has read, once older than this, are deleted.
    PruneEvents(Duration),
    /// Blobs stored in the clear by earlier versions are sealed.
    Seal,
    /// KMS keys: deleted once their waiting period is over, rotated when due.
    KmsMaintenance,
}

impl Round for Periodic {
    fn key(&self) -> &'static str {
        match self {
            Periodic::Gc(_) => GC_JOB,
            Periodic::Lifecycle => "periodic:lifecycle",
            Periodic::UploadExpiry(_) => "periodic:upload_expiry",
            Periodic::PruneEvents(_) => "periodic:prune_events",
            Periodic::Seal => crate::encryption::SEAL_JOB,
            Periodic::KmsMaintenance => "periodic:kms",
        }
    }

    fn label(&self) -> &'static str {
        self.key().trim_start_matches("periodic:")
    }

    fn waits_first(&self) -> bool {
        matches!(self, Periodic::Lifecycle | Periodic::PruneEvents(_))
    }

    /// Every round is logged with its number: one node runs each.
    async fn run(&self, core: &Arc<Core>, round: i64) -> Result<()> {
        let node = core.node();
        let job = self.label();
        match *self {
            Periodic::Gc(opts) => {
                let g = Gc(core).collect_garbage(opts).await?;
                tracing::info!(
                    job, round, %node, examined = g.examined, condemned = g.condemned, deleted = g.deleted_blobs,
                    bytes = g.deleted_bytes, failed = g.failed, elapsed_ms = g.elapsed.as_millis() as u64,
                    "garbage collected"
                );
            }
            Periodic::Lifecycle => {
                let reports = Lifecycle(core).run_lifecycles(&Caller::operator(), None, false).await?;
                let expired: usize = reports.iter().map(|r| r.expired.len()).sum();
                tracing::info!(job, round, %node, repositories = reports.len(), expired, "lifecycle policies applied");
            }
            Periodic::UploadExpiry(ttl) => {
                let removed = Gc(core).expire_uploads(ttl).await?;
                tracing::info!(job, round, %node, removed, "abandoned uploads removed");
            }
            Periodic::PruneEvents(keep) => {
                let before = berth_meta::now_ms() - keep.as_millis() as i64;
                let deleted = core.meta().prune_events(before).await?;
                tracing::info!(job, round, %node, deleted, "old outbox events deleted");
            }
            Periodic::KmsMaintenance => {
                let (deleted, rotated) = crate::kms::Kms(core).maintain().await?;
                if deleted + rotated > 0 {
                    tracing::info!(job, round, %node, deleted, rotated, "KMS keys deleted or rotated");
                }
            }
            Periodic::Seal => {
                let r = Encryption(core).seal_clear_blobs(|_, _, _| {}).await?;
                if r.sealed > 0 || r.manifests > 0 || !r.damaged.is_empty() {
                    tracing::info!(
                        job, round, %node, sealed = r.sealed, bytes = r.bytes, manifests = r.manifests, damaged = r.damaged.len(),
                        elapsed_ms = r.elapsed.as_millis() as u64, "blobs stored in the clear sealed"
                    );
                }
            }
        }
        Ok(())
    }
}

/// What `berth serve` runs in the background.
#[derive(Debug, Clone)]
pub struct Background {
    /// Scan workers on this node (0: scans queued here run on other nodes).
    pub scan_workers: usize,
    /// Garbage collection (and upload expiry) every so often, with these options.
    pub gc: Option<(Duration, GcOptions)>,
    pub lifecycle: Option<Duration>,
    /// How often this node writes the pull times it buffered.
    pub pull_flush: Duration,
    /// How often this node looks for a rotated token-signing key.
    pub token_refresh: Duration,
    /// How often this node checks free space (the full-disk reserve).
    pub storage_check: Duration,
    /// How long outbox events are kept after every consumer has read them.
    pub keep_events: Duration,
    /// How often blobs stored in the clear are looked for and sealed (None: only by
    /// `berth encryption run`).
    pub seal_every: Option<Duration>,
    /// Replication workers on this node (0: jobs queued here run on other nodes).
    pub replication_workers: usize,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            scan_workers: 2,
            gc: None,
            lifecycle: None,
            pull_flush: Duration::from_secs(10),
            token_refresh: Duration::from_secs(5),
            storage_check: Duration::from_secs(2),
            keep_events: Duration::from_secs(7 * 24 * 3600),
            seal_every: Some(Duration::from_secs(600)),
            replication_workers: 4,
        }
    }
}

/// Starts a node's background workers.
pub(crate) fn start(core: &Arc<Core>, bg: &Background) -> Workers {
    let mut ws = Workers::new();
    for i in 0..bg.scan_workers {
        ws.spawn(ScanWorker::new(core.clone(), i));
    }
    ws.spawn(Consumer::new(core.clone(), ScanOnPush::new(core.clone())));
    // The consumer runs without peers too, so that its cursor keeps up (the outbox is pruned
    // up to the slowest cursor). Without peers no job is queued: no workers.
    ws.spawn(Consumer::new(core.clone(), ReplicateOnPush::new(core.clone())));
    if !core.settings.peers.is_empty() {
        for i in 0..bg.replication_workers {
            ws.spawn(ReplicationWorker::new(core.clone(), i));
        }
    }
    if core.meta.backend() == berth_meta::Backend::Postgres {
        ws.spawn(crate::cache_bus::BusListener(core.clone()));
    }
    if let Some((every, opts)) = bg.gc {
        ws.spawn(PeriodicWorker::new(core.clone(), Periodic::Gc(opts), every));
        ws.spawn(PeriodicWorker::new(core.clone(), Periodic::UploadExpiry(opts.upload_ttl), every));
    }
    if let Some(every) = bg.lifecycle {
        ws.spawn(PeriodicWorker::new(core.clone(), Periodic::Lifecycle, every));
    }
    let hourly = Duration::from_secs(3600);
    // Blobs in the clear exist only after an upgrade (or an upload begun before it): sealed soon
    // after start-up, then looked for again now and then.
    // Deletion dates and rotations are days apart: looked at every minute.
    ws.spawn(PeriodicWorker::new(core.clone(), Periodic::KmsMaintenance, Duration::from_secs(60)));
    if let Some(every) = bg.seal_every {
        ws.spawn(PeriodicWorker::new(core.clone(), Periodic::Seal, every));
    }
    ws.spawn(PeriodicWorker::new(core.clone(), Periodic::PruneEvents(bg.keep_events), hourly));
    let c = core.clone();
    ws.spawn(Every::new("pull-times", bg.pull_flush, move || {
        let c = c.clone();
        async move { Content(&c).flush_pulls().await }
    }));
    let c = core.clone();
    ws.spawn(Every::new("token-key", bg.token_refresh, move || {
        let c = c.clone();
        async move { c.refresh_token_key().await.map(|_| ()) }
    }));
    let c = core.clone();
    ws.spawn(Every::new("storage-space", bg.storage_check, move || {
        let c = c.clone();
        async move {
            c.check_storage();
            Ok(())
        }
    }));
    tracing::info!(node = %core.node, workers = %ws.names().join(", "), "background workers started");
    ws
}
