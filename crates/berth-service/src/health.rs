//! Liveness and readiness, for load balancers and orchestrators. A node is *ready* when its
//! database answers, its blob storage answers, and it is not draining; migrations ran before
//! the registry opened, so an open registry has them. Answers are cached for a second, so a
//! balancer probing every node often costs each backend at most one call a second.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::core::Core;
use crate::model::Readiness;

const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A check that takes longer than this counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Health<'a>(pub(crate) &'a Core);

async fn within<E: std::fmt::Display>(f: impl std::future::Future<Output = Result<(), E>>) -> Option<String> {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer in {} s", CHECK_TIMEOUT.as_secs())),
    }
}

impl Health<'_> {
    /// Readiness now (at most a second old).
    pub async fn readiness(&self) -> Readiness {
        let draining = self.0.draining.load(Ordering::Relaxed);
        if let Some((at, r)) = self.0.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
            && at.elapsed() < CHECK_EVERY
        {
            return Readiness { draining, ..r };
        }
        let (database, storage) = tokio::join!(within(self.0.meta.ping()), within(self.0.blobs.probe()));
        let r = Readiness { database, storage, draining };
        if !r.ready() && !draining {
            tracing::warn!(database = ?r.database, storage = ?r.storage, "not ready");
        }
        *self.0.health.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), r.clone()));
        r
    }

    /// Readiness off: from now on `/readyz` answers 503, so balancers stop sending new work
    /// while requests in flight finish.
    pub fn drain(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }
}
