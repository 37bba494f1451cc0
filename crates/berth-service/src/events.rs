//! Consumers of the events outbox. Every change others react to is an event row written with the
//! change (see `berth_meta` events); a consumer reads them in order from its own cursor, so it
//! misses nothing after a crash and does not depend on which code path made the change. One node
//! at a time runs each consumer, holding its job's lease; another takes over when that node dies.
//! Delivery is at least once: a consumer may see an event again after a crash, and is written to
//! make that harmless.

use std::future::Future;
use std::time::Duration;

use berth_meta::{EventRow, JobRow, NotClaimed};
use tokio::sync::watch;

use std::sync::Arc;

use crate::core::Core;
use crate::error::Result;
use crate::jobs::{LEASE, Worker, WorkerState, lease_until};

/// Events read per step.
const BATCH: i64 = 200;
/// How often the consumer looks for events written by other nodes (its own wake it at once).
const POLL: Duration = Duration::from_secs(1);

/// What a consumer does with each event.
pub trait Consume: Send + 'static {
    /// The cursor's (and job's) name.
    const NAME: &'static str;
    /// A new cursor starts after the newest event (what happened before the consumer existed
    /// is not its business), not at the oldest one kept.
    const FROM_NOW: bool = false;

    /// Handles one event. An error stops the consumer at this event, to be tried again after a
    /// back-off (a database that is away); events it cannot use it passes over with `Ok`.
    fn consume(&mut self, event: &EventRow) -> impl Future<Output = Result<()>> + Send;
}

pub struct Consumer<C> {
    core: Arc<Core>,
    handler: C,
    wake: watch::Receiver<u64>,
    /// The consumer's job while this node holds its lease, and until when (ms).
    held: Option<(JobRow, i64)>,
}

impl<C: Consume> Consumer<C> {
    pub(crate) fn new(core: Arc<Core>, handler: C) -> Self {
        let wake = core.meta().subscribe_events();
        Consumer { core, handler, wake, held: None }
    }

    fn key() -> String {
        format!("consumer:{}", C::NAME)
    }

    /// Claims or extends the consumer's lease when a third of it is gone; whether this node holds it.
    async fn hold(&mut self) -> Result<bool> {
        let now = berth_meta::now_ms();
        if let Some((_, until)) = &self.held
            && until - now > (LEASE * 2 / 3).as_millis() as i64
        {
            return Ok(true);
        }
        let meta = self.core.meta();
        let node = self.core.node();
        let key = Self::key();
        loop {
            match meta.claim_singleton(&key, &node, now, lease_until(now), true).await? {
                Ok(job) => {
                    self.held = Some((job, lease_until(now)));
                    return Ok(true);
                }
                Err(NotClaimed::Missing) => meta.ensure_job("consumer", &key, now).await?,
                Err(_) => {
                    self.held = None;
                    return Ok(false);
                }
            }
        }
    }
}

impl<C: Consume> Worker for Consumer<C> {
    fn name(&self) -> String {
        format!("events:{}", C::NAME)
    }

    async fn work(&mut self) -> Result<WorkerState> {
        if !self.hold().await? {
            return Ok(WorkerState::Idle);
        }
        let meta = self.core.meta().clone();
        let first = if C::FROM_NOW { meta.last_event_id().await? } else { 0 };
        let start = meta.event_cursor(C::NAME, first).await?;
        let events = meta.events_after(start, BATCH).await?;
        let Some(last) = events.last().map(|e| e.id) else { return Ok(WorkerState::Idle) };
        let mut done = start;
        let mut failed = None;
        for e in &events {
            if let Err(err) = self.handler.consume(e).await {
                failed = Some(err);
                break;
            }
            done = e.id;
        }
        if done > start && !meta.advance_event_cursor(C::NAME, start, done).await? {
            tracing::warn!(consumer = C::NAME, "another node moved the cursor meanwhile; reading on from there");
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let more = events.len() as i64 == BATCH && done == last;
        Ok(if more { WorkerState::Busy } else { WorkerState::Idle })
    }

    async fn wait_for_work(&mut self) {
        let holding = self.held.is_some();
        let poll = if holding { POLL } else { LEASE / 3 };
        tokio::select! {
            r = self.wake.changed(), if holding => {
                if r.is_err() {
                    tokio::time::sleep(poll).await;
                }
            }
            _ = tokio::time::sleep(poll) => {}
        }
    }

    async fn stopped(&mut self) {
        // The cursor is already where the last completed step left it; give the lease back.
        if let Some((job, _)) = self.held.take() {
            let r = &self.core;
            if let Err(e) = r.meta().release_job(&job, &r.node()).await {
                tracing::warn!(consumer = C::NAME, error = %e, "could not give back the consumer's lease");
            }
        }
    }
}
