//! Replication in the background: the outbox consumer that turns pushes into jobs, and the
//! workers that run them (on any node; a job whose node died is taken up after its lease).

use std::sync::Arc;
use std::time::Duration;

use berth_core::RepoName;
use berth_meta::{EventKind, EventRow, JobRow};

use super::copy::{Copy, Fail};
use super::{Job, REPLICATION_QUEUE, Replication};
use crate::core::Core;
use crate::error::{Error, NotFound, Result};
use crate::events::Consume;
use crate::jobs::{Renewal, Worker, WorkerState, lease_until};

/// How often an idle worker looks for jobs queued on other nodes (or due after a back-off).
const POLL: Duration = Duration::from_secs(5);
/// A manifest pushed by digest alone waits this long before it is copied: it is usually a
/// child of an index, or a referrer, pushed just before what it belongs to, and travels with it.
const UNTAGGED_DELAY_MS: i64 = 3000;
/// Failed attempts after which the status says FAILED (the job goes on retrying).
const FAILED_AFTER: i64 = 3;
/// Attempts after which a job is given up (about a day at the longest back-off).
const GIVE_UP_AFTER: i64 = 300;
const BACKOFF_MAX_MS: i64 = 5 * 60 * 1000;

/// Why manifests were stored by replication or pull-through: not replicated again (a
/// destination that replicates back would otherwise send every image around for ever).
fn stored_by_copy(e: &EventRow) -> bool {
    let cause = e
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|v| v["cause"].as_str().map(str::to_string));
    matches!(cause.as_deref(), Some("replication" | "pull_through"))
}

/// Replication on push: queues a job per matching destination for each tag moved and each
/// manifest stored by digest alone.
pub struct ReplicateOnPush {
    core: Arc<Core>,
}

impl ReplicateOnPush {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        ReplicateOnPush { core }
    }
}

impl Consume for ReplicateOnPush {
    const NAME: &'static str = "replication";
    // Images stored before replication existed are copied on demand (`berth replicate`).
    const FROM_NOW: bool = true;

    async fn consume(&mut self, e: &EventRow) -> Result<()> {
        let r = Replication(&self.core);
        if r.settings.peers.is_empty() {
            return Ok(());
        }
        let (Some(kind), Some(digest)) = (e.kind, e.digest.as_deref()) else { return Ok(()) };
        let Ok(repo) = RepoName::parse_key(&e.repo) else { return Ok(()) };
        match kind {
            EventKind::ImageDeleted => Ok(r.meta.delete_replication_statuses(repo.as_str(), digest).await?),
            // Stored with a tag: the tag's move follows and carries it.
            EventKind::ManifestStored if e.tag.is_some() => Ok(()),
            EventKind::ManifestStored | EventKind::TagMoved => {
                if stored_by_copy(e) {
                    return Ok(());
                }
                let dests = r.destinations_for(repo.name()).await?;
                let delay = if e.tag.is_none() { UNTAGGED_DELAY_MS } else { 0 };
                for d in &dests {
                    r.queue(d, &repo, digest, e.tag.as_deref(), delay).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Runs replication jobs on this node, one at a time per worker.
pub struct ReplicationWorker {
    core: Arc<Core>,
    index: usize,
    held: Option<JobRow>,
}

impl ReplicationWorker {
    pub(crate) fn new(core: Arc<Core>, index: usize) -> Self {
        ReplicationWorker { core, index, held: None }
    }

    async fn run(&self, job: &JobRow, j: &Job) -> Result<()> {
        let c = &*self.core;
        let r = Replication(c);
        let (region, registry) = j.dest.split_once('/').unwrap_or((&j.dest, ""));
        let node = c.node();
        let Some(peer) = r.peer(&j.dest) else {
            tracing::warn!(destination = %j.dest, repo = %j.repo, "replication to a peer no longer configured: dropped");
            c.meta
                .set_replication_status(&j.repo, &j.digest, region, registry, "FAILED", Some("PEER_NOT_CONFIGURED"))
                .await?;
            c.meta.complete_job(job, &node).await?;
            return Ok(());
        };
        let repo = match RepoName::parse_key(&j.repo) {
            Ok(r) => r,
            Err(_) => {
                c.meta.complete_job(job, &node).await?;
                return Ok(());
            }
        };
        let started = std::time::Instant::now();
        let outcome = match c.remote(peer) {
            Ok(remote) => {
                let mut copy = Copy { core: c, remote: &remote, dest: &j.dest, src: &repo, stats: Default::default() };
                let res = copy.image(&j.digest, j.tag.as_deref()).await;
                c.counters.add_replication(&copy.stats);
                res
            }
            Err(e) => Err(Fail::Remote(e)),
        };
        match outcome {
            Ok(()) => {
                c.meta.set_replication_status(&j.repo, &j.digest, region, registry, "COMPLETE", None).await?;
                c.counters.replication_images.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    destination = %j.dest, repo = %j.repo, digest = %j.digest, tag = j.tag.as_deref().unwrap_or(""),
                    elapsed_ms = started.elapsed().as_millis() as u64, "replicated"
                );
                c.meta.complete_job(job, &node).await?;
            }
            // Deleted at the source since: nothing to send.
            Err(Fail::Source(Error::NotFound(
                NotFound::Manifest { .. } | NotFound::Repository { .. } | NotFound::Image { .. },
            ))) => {
                c.meta.delete_replication_statuses(&j.repo, &j.digest).await?;
                c.meta.complete_job(job, &node).await?;
            }
            Err(fail) => {
                c.counters.replication_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (retry, code) = match &fail {
                    Fail::Remote(e) => {
                        // A refusal may be stale credentials: read them again next time.
                        c.forget_remote(&peer.key());
                        (e.retryable(), e.code())
                    }
                    Fail::Source(e) => (!matches!(e, Error::Invalid(_)), "SOURCE_UNREADABLE"),
                };
                let give_up = !retry || job.attempts >= GIVE_UP_AFTER;
                let status = if give_up || job.attempts >= FAILED_AFTER { "FAILED" } else { "IN_PROGRESS" };
                c.meta.set_replication_status(&j.repo, &j.digest, region, registry, status, Some(code)).await?;
                if give_up {
                    tracing::error!(destination = %j.dest, repo = %j.repo, digest = %j.digest, attempts = job.attempts, error = %fail, "replication given up");
                    c.meta.complete_job(job, &node).await?;
                } else {
                    let backoff = (1000i64 << job.attempts.clamp(1, 9)).min(BACKOFF_MAX_MS);
                    tracing::warn!(
                        destination = %j.dest, repo = %j.repo, digest = %j.digest, attempts = job.attempts,
                        retry_in_s = backoff / 1000, error = %fail, "replication failed; will retry"
                    );
                    c.meta.retry_job(job, &node, berth_meta::now_ms() + backoff, &fail.to_string()).await?;
                }
            }
        }
        Ok(())
    }
}

impl Worker for ReplicationWorker {
    fn name(&self) -> String {
        format!("replication-{}", self.index)
    }

    async fn work(&mut self) -> Result<WorkerState> {
        let c = &*self.core;
        let node = c.node();
        let now = berth_meta::now_ms();
        let Some(job) = c.meta.claim_job(REPLICATION_QUEUE, &node, now, lease_until(now)).await? else {
            return Ok(WorkerState::Idle);
        };
        let Ok(j) = serde_json::from_str::<Job>(&job.payload) else {
            tracing::error!(job = job.id, payload = %job.payload, "a replication job that names no image: dropped");
            c.meta.finish_job(&job).await?;
            return Ok(WorkerState::Busy);
        };
        self.held = Some(job.clone());
        // Renewed whatever its generation: a newer request for the tag waits for this run.
        let _renewal = Renewal::start_claim(&c.meta, &job, &node);
        let outcome = self.run(&job, &j).await;
        self.held = None;
        if let Err(e) = outcome {
            let _ = c.meta.release_job(&job, &node).await;
            return Err(e);
        }
        Ok(WorkerState::Busy)
    }

    async fn wait_for_work(&mut self) {
        tokio::select! {
            _ = self.core.replication_wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }

    async fn stopped(&mut self) {
        if let Some(job) = self.held.take() {
            let c = &self.core;
            if let Err(e) = c.meta.release_job(&job, &c.node()).await {
                tracing::warn!(job = job.id, error = %e, "could not give back a replication job");
            }
        }
    }
}
