//! Background workers: everything the registry does besides answering requests runs as a
//! [`Worker`] under one runner. A worker does a step of work at a time and says whether more is
//! waiting ([`WorkerState::Busy`]), whether to wait for a wake-up ([`WorkerState::Idle`]), or
//! that it is finished. Errors back off exponentially; when the process stops, every worker is
//! told at once, work in flight is abandoned (each worker gives back what it held), and the
//! runner waits for all of them within a deadline and logs how that went.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Result;

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
                return Err(crate::Error::Internal("failing on purpose".into()));
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
