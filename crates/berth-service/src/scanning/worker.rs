//! The scanning that runs in the background: scan jobs, and scan on push as a consumer of the
//! outbox (every stored manifest, whichever path stored it, is scanned when its repository says so).

use std::sync::Arc;

use berth_core::RepoName;
use berth_meta::{EventKind, EventRow, JobRow, SCAN_QUEUE, ScanJob};

use super::Scanning;
use crate::core::Core;
use crate::error::Result;
use crate::events::Consume;
use crate::jobs::{Renewal, Worker, WorkerState, lease_until};

/// How often an idle worker looks for jobs queued elsewhere.
const SCAN_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs scan jobs on this node, one at a time per worker.
pub struct ScanWorker {
    core: Arc<Core>,
    index: usize,
    held: Option<JobRow>,
}

impl ScanWorker {
    pub(crate) fn new(core: Arc<Core>, index: usize) -> Self {
        ScanWorker { core, index, held: None }
    }
}

impl Worker for ScanWorker {
    fn name(&self) -> String {
        format!("scan-{}", self.index)
    }

    async fn work(&mut self) -> Result<WorkerState> {
        let r = &*self.core;
        let node = r.node();
        let now = berth_meta::now_ms();
        let Some(job) = r.meta.claim_job(SCAN_QUEUE, &node, now, lease_until(now)).await? else {
            return Ok(WorkerState::Idle);
        };
        let Some(scan) = ScanJob::from_payload(&job.payload) else {
            tracing::error!(job = job.id, payload = %job.payload, "a scan job that names no image: dropped");
            r.meta.finish_job(&job).await?;
            return Ok(WorkerState::Busy);
        };
        self.held = Some(job.clone());
        let _renewal = Renewal::start(&r.meta, &job, &node);
        let outcome = Scanning(r).run_scan(&job, &scan).await;
        self.held = None;
        if let Err(e) = outcome {
            // Given back for another attempt after the back-off.
            let _ = r.meta.release_job(&job, &node).await;
            return Err(e);
        }
        Ok(WorkerState::Busy)
    }

    async fn wait_for_work(&mut self) {
        // Jobs queued on other nodes, or whose node died, are found by polling.
        tokio::select! {
            _ = self.core.scan_wake.notified() => {}
            _ = tokio::time::sleep(SCAN_POLL) => {}
        }
    }

    async fn stopped(&mut self) {
        if let Some(job) = self.held.take() {
            let r = &self.core;
            if let Err(e) = r.meta.release_job(&job, &r.node()).await {
                tracing::warn!(job = job.id, error = %e, "could not give back a scan job");
            }
        }
    }
}

/// Scan on push: queues a scan of each manifest stored in a repository that scans on push.
pub struct ScanOnPush {
    core: Arc<Core>,
}

impl ScanOnPush {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        ScanOnPush { core }
    }
}

impl Consume for ScanOnPush {
    const NAME: &'static str = "scan_on_push";

    async fn consume(&mut self, e: &EventRow) -> Result<()> {
        let (Some(kind @ (EventKind::ManifestStored | EventKind::TagMoved)), Some(digest)) =
            (e.kind, e.digest.as_deref())
        else {
            return Ok(());
        };
        let Ok(repo) = RepoName::parse_key(&e.repo) else { return Ok(()) };
        let r = &*self.core;
        let Some(row) = r.meta.get_repo(repo.as_str()).await? else { return Ok(()) };
        if !Scanning(r).scans_on_push(&repo).await? {
            return Ok(());
        }
        // Deleted again since: nothing to scan.
        if r.meta.get_manifest(row.id, digest).await?.is_none() {
            return Ok(());
        }
        // A tag put on an image stored before (a re-push, PutImage of the same manifest): scanned
        // only if it never was, as when scan on push was turned on after the image came. Scans
        // are per digest; a new tag adds nothing to scan.
        if kind == EventKind::TagMoved && r.meta.scan(row.id, digest).await?.is_some() {
            return Ok(());
        }
        let job = ScanJob {
            repo_id: row.id,
            repo: repo.as_str().to_string(),
            digest: digest.to_string(),
            started_at: berth_meta::now_ms().max(e.created_at),
        };
        // Seen again after a crash: a scan queued since the push is the one it asked for.
        if r.meta.queue_scan(&job, Some(e.created_at)).await? {
            r.scan_wake.notify_one();
        }
        Ok(())
    }
}
