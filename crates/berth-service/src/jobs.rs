//! Jobs in the metadata store, run by [`Worker`]s: leases that are renewed while a job runs, and
//! the periodic singleton jobs — garbage collection, lifecycle, upload expiry, outbox pruning —
//! of which one node runs each round, whichever claims it first once it is due.

use std::sync::Arc;
use std::time::Duration;

use berth_meta::{JobRow, Meta, NotClaimed};

use crate::worker::{Worker, WorkerState};
use crate::{Registry, Result};

/// How long a claim lasts unless renewed (renewed every third of it): how soon a job whose node
/// died is taken up by another.
pub const LEASE: Duration = Duration::from_secs(30);
/// Longest an idle periodic worker sleeps before looking at its job again (another node may
/// have changed it).
const LOOK_AT_MOST_EVERY: Duration = Duration::from_secs(30);

pub(crate) fn lease_until(now: i64) -> i64 {
    now + LEASE.as_millis() as i64
}

/// Keeps a claimed job's lease alive until dropped (a node that dies stops renewing it).
pub(crate) struct Renewal(tokio::task::JoinHandle<()>);

impl Renewal {
    pub(crate) fn start(meta: &Meta, job: &JobRow, node: &Arc<str>) -> Self {
        let (meta, job, node) = (meta.clone(), job.clone(), node.clone());
        Renewal(tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                match meta.renew_job(&job, &node, lease_until(berth_meta::now_ms())).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(job = job.id, queue = %job.queue, "lost the lease on a running job");
                        return;
                    }
                    Err(e) => tracing::warn!(job = job.id, error = %e, "could not renew a job's lease"),
                }
            }
        }))
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a periodic job does each round.
#[derive(Debug, Clone, Copy)]
pub enum Periodic {
    /// Garbage collection of blobs.
    Gc(crate::gc::GcOptions),
    /// Every repository's lifecycle policy.
    Lifecycle,
    /// Uploads untouched for longer than this are removed.
    UploadExpiry(Duration),
    /// Outbox events every consumer has read, once older than this, are deleted.
    PruneEvents(Duration),
}

impl Periodic {
    /// The job's unique key.
    pub fn key(&self) -> &'static str {
        match self {
            Periodic::Gc(_) => "periodic:gc",
            Periodic::Lifecycle => "periodic:lifecycle",
            Periodic::UploadExpiry(_) => "periodic:upload_expiry",
            Periodic::PruneEvents(_) => "periodic:prune_events",
        }
    }

    fn label(&self) -> &'static str {
        self.key().trim_start_matches("periodic:")
    }

    /// Whether the first round waits a whole interval (lifecycle: not at every start-up).
    fn waits_first(&self) -> bool {
        matches!(self, Periodic::Lifecycle | Periodic::PruneEvents(_))
    }

    /// Runs one round and logs what it did (every round, with its number: one node runs each).
    async fn run(&self, r: &Registry, round: i64) -> Result<()> {
        let node = r.node();
        let job = self.label();
        match *self {
            Periodic::Gc(opts) => {
                let g = r.collect_garbage(opts).await?;
                tracing::info!(
                    job, round, %node, examined = g.examined, condemned = g.condemned, deleted = g.deleted_blobs,
                    bytes = g.deleted_bytes, failed = g.failed, elapsed_ms = g.elapsed.as_millis() as u64,
                    "garbage collected"
                );
            }
            Periodic::Lifecycle => {
                let reports = r.run_lifecycles(None, false).await?;
                let expired: usize = reports.iter().map(|r| r.expired.len()).sum();
                tracing::info!(job, round, %node, repositories = reports.len(), expired, "lifecycle policies applied");
            }
            Periodic::UploadExpiry(ttl) => {
                let removed = r.expire_uploads(ttl).await?;
                tracing::info!(job, round, %node, removed, "abandoned uploads removed");
            }
            Periodic::PruneEvents(keep) => {
                let before = berth_meta::now_ms() - keep.as_millis() as i64;
                let deleted = r.meta().prune_events(before).await?;
                tracing::info!(job, round, %node, deleted, "old outbox events deleted");
            }
        }
        Ok(())
    }
}

/// Runs a [`Periodic`] job's rounds on this node whenever it claims them.
pub struct PeriodicWorker {
    registry: Registry,
    job: Periodic,
    every: Duration,
    held: Option<JobRow>,
    next_look: tokio::time::Instant,
}

impl PeriodicWorker {
    pub fn new(registry: Registry, job: Periodic, every: Duration) -> Self {
        PeriodicWorker { registry, job, every, held: None, next_look: tokio::time::Instant::now() }
    }

    fn look_in(&mut self, ms: i64) {
        let wait = Duration::from_millis(ms.max(0) as u64).clamp(Duration::from_millis(50), LOOK_AT_MOST_EVERY);
        self.next_look = tokio::time::Instant::now() + wait;
    }
}

impl Worker for PeriodicWorker {
    fn name(&self) -> String {
        self.job.label().to_string()
    }

    async fn work(&mut self) -> Result<WorkerState> {
        let r = self.registry.clone();
        let meta = r.meta();
        let node = r.node();
        let now = berth_meta::now_ms();
        let job = match meta.claim_singleton(self.job.key(), &node, now, lease_until(now), false).await? {
            Ok(job) => job,
            Err(NotClaimed::Missing) => {
                let first = if self.job.waits_first() { now + self.every.as_millis() as i64 } else { now };
                meta.ensure_job("periodic", self.job.key(), first).await?;
                return Ok(WorkerState::Busy);
            }
            Err(NotClaimed::NotDue(at)) => {
                self.look_in(at - now);
                return Ok(WorkerState::Idle);
            }
            Err(NotClaimed::Held { until, .. }) => {
                self.look_in(until - now + 1);
                return Ok(WorkerState::Idle);
            }
        };
        self.held = Some(job.clone());
        let _renewal = Renewal::start(meta, &job, &node);
        let round = job.runs + 1;
        let outcome = self.job.run(&r, round).await;
        let done = berth_meta::now_ms();
        let (next, error) = match &outcome {
            Ok(()) => (done + self.every.as_millis() as i64, None),
            Err(e) => {
                // Failed rounds are retried sooner than the interval, backing off.
                let backoff = (1000i64 << job.attempts.clamp(1, 9)).min(self.every.as_millis() as i64);
                tracing::error!(job = self.job.label(), round, node = %node, error = %e, "round failed");
                (done + backoff, Some(e.to_string()))
            }
        };
        self.held = None;
        if !meta.reschedule_job(&job, &node, next, outcome.is_ok(), error.as_deref()).await? {
            tracing::warn!(
                job = self.job.label(),
                round,
                "the lease ran out during the round; another node may have run it too"
            );
        }
        self.look_in(next - done);
        Ok(WorkerState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep_until(self.next_look).await
    }

    async fn stopped(&mut self) {
        if let Some(job) = self.held.take() {
            let r = &self.registry;
            if let Err(e) = r.meta().release_job(&job, &r.node()).await {
                tracing::warn!(job = self.job.label(), error = %e, "could not give back the job's lease");
            }
        }
    }
}

/// What `berth serve` runs in the background.
#[derive(Debug, Clone)]
pub struct Background {
    /// Scan workers on this node (0: scans queued here run on other nodes).
    pub scan_workers: usize,
    /// Garbage collection (and upload expiry) every so often, with these options.
    pub gc: Option<(Duration, crate::gc::GcOptions)>,
    pub lifecycle: Option<Duration>,
    /// How often this node writes the pull times it buffered.
    pub pull_flush: Duration,
    /// How often this node looks for a rotated token-signing key.
    pub token_refresh: Duration,
    /// How often this node checks free space (the full-disk reserve).
    pub storage_check: Duration,
    /// How long outbox events are kept after every consumer has read them.
    pub keep_events: Duration,
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
        }
    }
}

impl Registry {
    /// Starts this node's background workers.
    pub fn start_workers(&self, bg: &Background) -> crate::worker::Workers {
        use crate::worker::Every;
        let mut ws = crate::worker::Workers::new();
        for i in 0..bg.scan_workers {
            ws.spawn(crate::scan::ScanWorker::new(self.clone(), i));
        }
        ws.spawn(crate::events::Consumer::new(self.clone(), crate::scan::ScanOnPush::new(self.clone())));
        if let Some((every, opts)) = bg.gc {
            ws.spawn(PeriodicWorker::new(self.clone(), Periodic::Gc(opts), every));
            ws.spawn(PeriodicWorker::new(self.clone(), Periodic::UploadExpiry(opts.upload_ttl), every));
        }
        if let Some(every) = bg.lifecycle {
            ws.spawn(PeriodicWorker::new(self.clone(), Periodic::Lifecycle, every));
        }
        let hourly = Duration::from_secs(3600);
        ws.spawn(PeriodicWorker::new(self.clone(), Periodic::PruneEvents(bg.keep_events), hourly));
        let r = self.clone();
        ws.spawn(Every::new("pull-times", bg.pull_flush, move || {
            let r = r.clone();
            async move { r.flush_pulls().await }
        }));
        let r = self.clone();
        ws.spawn(Every::new("token-key", bg.token_refresh, move || {
            let r = r.clone();
            async move { r.refresh_token_key().await.map(|_| ()) }
        }));
        let r = self.clone();
        ws.spawn(Every::new("storage-space", bg.storage_check, move || {
            let r = r.clone();
            async move {
                r.check_storage();
                Ok(())
            }
        }));
        tracing::info!(node = %self.node, workers = %ws.names().join(", "), "background workers started");
        ws
    }
}
