//! Background work. Everything the registry does besides answering requests runs as a
//! [`Worker`] under one runner: a worker does a step of work at a time and says whether more is
//! waiting ([`WorkerState::Busy`]), whether to wait for a wake-up ([`WorkerState::Idle`]), or
//! that it is finished. Errors back off exponentially; when the process stops, every worker is
//! told at once, work in flight is abandoned (each worker gives back what it held), and the
//! runner waits for all of them within a deadline and logs how that went.
//!
//! Work shared by the nodes is a job in the metadata store's jobs table, held under a lease the
//! worker renews while it runs ([`Renewal`]); a job whose node died is claimed again once its lease
//! has passed. Periodic work (garbage collection, lifecycle, ...) is a singleton job whose rounds
//! one node runs each ([`PeriodicWorker`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_meta::{JobRow, Meta, NotClaimed};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::Core;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// More work is waiting: call `work` again now.
    Busy,
    /// Nothing to do: wait for `wait_for_work`.
    Idle,
    /// The worker is finished.
    Done,
}

pub trait Worker: Send + 'static {
    fn name(&self) -> String;

    /// One step of work.
    fn work(&mut self) -> impl Future<Output = Result<WorkerState>> + Send;

    /// Resolves when there may be work again (a wake-up, or a poll interval).
    fn wait_for_work(&mut self) -> impl Future<Output = ()> + Send;

    /// The process is stopping (a step in flight, if any, was abandoned): give back what the
    /// worker holds (a job's lease), so another node need not wait for it to run out.
    fn stopped(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// First and longest wait after a failing step.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The workers of one process.
pub struct Workers {
    stop: Arc<watch::Sender<bool>>,
    running: Vec<(String, JoinHandle<()>)>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers { stop: Arc::new(watch::channel(false).0), running: Vec::new() }
    }
}

/// Tells the workers to stop (from a signal handler); [`Workers::stop`] then waits for them.
#[derive(Clone)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Workers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Names of the workers started, in order.
    pub fn names(&self) -> Vec<String> {
        self.running.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn spawn<W: Worker>(&mut self, mut w: W) {
        let name = w.name();
        let mut stop = self.stop.subscribe();
        let label = name.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::ZERO;
            let mut state = WorkerState::Busy;
            loop {
                match state {
                    WorkerState::Done => break,
                    WorkerState::Idle => {
                        tokio::select! {
                            _ = w.wait_for_work() => {}
                            _ = stop.wait_for(|s| *s) => {}
                        }
                    }
                    WorkerState::Busy => tokio::task::yield_now().await,
                }
                if *stop.borrow() {
                    w.stopped().await;
                    break;
                }
                let step = tokio::select! {
                    r = w.work() => Some(r),
                    _ = stop.wait_for(|s| *s) => None,
                };
                match step {
                    None => {
                        w.stopped().await;
                        break;
                    }
                    Some(Ok(s)) => {
                        backoff = Duration::ZERO;
                        state = s;
                    }
                    Some(Err(e)) => {
                        backoff = (backoff * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX);
                        tracing::warn!(worker = %label, error = %e, retry_in_s = backoff.as_secs(), "background work failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.wait_for(|s| *s) => {}
                        }
                        state = WorkerState::Busy;
                    }
                }
            }
        });
        self.running.push((name, task));
    }

    /// Tells every worker to stop and waits for them, at most `deadline`; a worker still
    /// running then is abandoned. Logs the outcome.
    pub async fn stop(self, deadline: Duration) {
        let started = Instant::now();
        let _ = self.stop.send(true);
        let until = tokio::time::Instant::now() + deadline;
        let n = self.running.len();
        let mut stuck = Vec::new();
        for (name, mut task) in self.running {
            if tokio::time::timeout_at(until, &mut task).await.is_err() {
                task.abort();
                stuck.push(name);
            }
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if stuck.is_empty() {
            tracing::info!(workers = n, elapsed_ms, "background workers stopped");
        } else {
            tracing::warn!(
                workers = n,
                elapsed_ms,
                abandoned = %stuck.join(", "),
                "background workers stopped; some did not finish within the deadline and were abandoned"
            );
        }
    }
}

/// A worker that runs `step` every `every` on this node (work that is this node's own, such as
/// writing the pull times it buffered).
pub struct Every<F> {
    name: &'static str,
    every: Duration,
    step: F,
    next: tokio::time::Instant,
}

impl<F, Fut> Every<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    pub fn new(name: &'static str, every: Duration, step: F) -> Self {
        Every { name, every, step, next: tokio::time::Instant::now() + every }
    }
}

impl<F, Fut> Worker for Every<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    fn name(&self) -> String {
        self.name.to_string()
    }

    async fn work(&mut self) -> Result<WorkerState> {
        self.next = tokio::time::Instant::now() + self.every;
        (self.step)().await?;
        Ok(WorkerState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep_until(self.next).await
    }
}

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
        Self::spawn(meta, job, node, false)
    }

    /// Renews the claim even after the job is asked for again (`Meta::enqueue_behind`).
    pub(crate) fn start_claim(meta: &Meta, job: &JobRow, node: &Arc<str>) -> Self {
        Self::spawn(meta, job, node, true)
    }

    fn spawn(meta: &Meta, job: &JobRow, node: &Arc<str>, any_generation: bool) -> Self {
        let (meta, job, node) = (meta.clone(), job.clone(), node.clone());
        Renewal(tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let until = lease_until(berth_meta::now_ms());
                let renewed = if any_generation {
                    meta.renew_claim(&job, &node, until).await
                } else {
                    meta.renew_job(&job, &node, until).await
                };
                match renewed {
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

/// One round of a periodic singleton job.
pub trait Round: Send + Sync + 'static {
    /// The job's unique key.
    fn key(&self) -> &'static str;
    /// Its name in logs.
    fn label(&self) -> &'static str;
    /// Whether the first round waits a whole interval (not at every start-up).
    fn waits_first(&self) -> bool;
    /// Runs round number `round`, logging what it did.
    fn run(&self, core: &Arc<Core>, round: i64) -> impl Future<Output = Result<()>> + Send;
}

/// Runs a periodic job's rounds on this node whenever it claims them.
pub struct PeriodicWorker<R> {
    core: Arc<Core>,
    job: R,
    every: Duration,
    held: Option<JobRow>,
    next_look: tokio::time::Instant,
}

impl<R: Round> PeriodicWorker<R> {
    pub(crate) fn new(core: Arc<Core>, job: R, every: Duration) -> Self {
        PeriodicWorker { core, job, every, held: None, next_look: tokio::time::Instant::now() }
    }

    fn look_in(&mut self, ms: i64) {
        let wait = Duration::from_millis(ms.max(0) as u64).clamp(Duration::from_millis(50), LOOK_AT_MOST_EVERY);
        self.next_look = tokio::time::Instant::now() + wait;
    }
}

impl<R: Round> Worker for PeriodicWorker<R> {
    fn name(&self) -> String {
        self.job.label().to_string()
    }

    async fn work(&mut self) -> Result<WorkerState> {
        let r = self.core.clone();
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
            let r = &self.core;
            if let Err(e) = r.meta().release_job(&job, &r.node()).await {
                tracing::warn!(job = self.job.label(), error = %e, "could not give back the job's lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    struct Counting {
        steps: Arc<AtomicU32>,
        fail_first: u32,
        interrupted: Arc<AtomicU32>,
        slow: bool,
    }

    impl Worker for Counting {
        fn name(&self) -> String {
            "counting".into()
        }

        async fn work(&mut self) -> Result<WorkerState> {
            let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
            if self.slow {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if n <= self.fail_first {
                return Err(crate::error::Error::Internal("failing on purpose".into()));
            }
            Ok(if n >= 5 { WorkerState::Done } else { WorkerState::Busy })
        }

        async fn wait_for_work(&mut self) {
            std::future::pending::<()>().await
        }

        async fn stopped(&mut self) {
            self.interrupted.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting(fail_first: u32, slow: bool) -> (Counting, Arc<AtomicU32>, Arc<AtomicU32>) {
        let (steps, interrupted) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        (Counting { steps: steps.clone(), fail_first, interrupted: interrupted.clone(), slow }, steps, interrupted)
    }

    #[tokio::test(start_paused = true)]
    async fn busy_runs_on_errors_back_off_done_ends() {
        let mut ws = Workers::new();
        let (w, steps, _) = counting(2, false);
        ws.spawn(w);
        // Two failures: waits of 1 s then 2 s before the third step.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 5, "busy steps follow at once until done");
        ws.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn stop_abandons_work_in_flight_and_gives_back_what_it_held() {
        let mut ws = Workers::new();
        let (w, steps, interrupted) = counting(0, true);
        ws.spawn(w);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 1);
        let started = tokio::time::Instant::now();
        ws.stop(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1), "an hour-long step does not hold up the stop");
        assert_eq!(interrupted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_worker_gives_back_what_it_holds_too() {
        struct Idle(Arc<AtomicU32>);
        impl Worker for Idle {
            fn name(&self) -> String {
                "idle".into()
            }
            async fn work(&mut self) -> Result<WorkerState> {
                Ok(WorkerState::Idle)
            }
            async fn wait_for_work(&mut self) {
                std::future::pending::<()>().await
            }
            async fn stopped(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let released = Arc::new(AtomicU32::new(0));
        let mut ws = Workers::new();
        ws.spawn(Idle(released.clone()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        ws.stop(Duration::from_secs(5)).await;
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }
}
