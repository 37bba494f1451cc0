//! The audit log (CloudTrail-like): every ECR call, every OCI write and every denied request, with
//! time, event name, principal, source address, resource, decision and error. Events go through a
//! channel to one writer task that appends them in batches (one transaction per batch), so a burst
//! of requests costs a few commits; `flush_audit` waits until everything sent is stored.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_meta::{AuditRow, Meta};
use tokio::sync::{mpsc, oneshot};

/// Events waiting for the writer at most; a request waits when it is full.
const QUEUE: usize = 10_000;
/// Most events written in one transaction.
const BATCH: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEvent {
    /// The ECR operation (`PutImage`, `BatchGetImage`, `Login`, ...).
    pub name: String,
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub resource: Option<String>,
    pub allowed: bool,
    pub error: Option<String>,
    /// Anything else worth keeping (a lifecycle expiry: the rule).
    pub detail: Option<String>,
}

enum Msg {
    Event(AuditRow),
    Flush(oneshot::Sender<()>),
}

/// Events kept for another attempt when a write fails (a full disk, a lost database); past it
/// the oldest are dropped, each counted and logged.
const MAX_PENDING: usize = 100_000;
/// Wait before writing again after a failure.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

fn start(meta: Meta, dropped: Arc<AtomicU64>) -> mpsc::Sender<Msg> {
    let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
    tokio::spawn(async move {
        let mut pending: VecDeque<AuditRow> = VecDeque::new();
        let mut failing = false;
        let mut open = true;
        while open || !pending.is_empty() {
            // With events waiting for a retry, wake up to retry even if nothing new comes.
            let first = if pending.is_empty() {
                rx.recv().await
            } else {
                tokio::time::timeout(RETRY, rx.recv()).await.unwrap_or(None)
            };
            if first.is_none() && pending.is_empty() {
                break;
            }
            let mut waiters = Vec::new();
            let mut next = first;
            while let Some(m) = next {
                match m {
                    Msg::Event(r) => pending.push_back(r),
                    Msg::Flush(w) => waiters.push(w),
                }
                next = if pending.len() < BATCH { rx.try_recv().ok() } else { None };
            }
            if rx.is_closed() && rx.is_empty() {
                open = false;
            }
            while !pending.is_empty() {
                let n = pending.len().min(BATCH);
                let batch: Vec<AuditRow> = pending.iter().take(n).cloned().collect();
                match meta.append_audit(batch).await {
                    Ok(()) => {
                        pending.drain(..n);
                        if failing {
                            failing = false;
                            tracing::info!("audit events are being written again");
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::error!(error = %e, waiting = pending.len(), "could not write audit events; keeping them to retry");
                        }
                        failing = true;
                        break;
                    }
                }
            }
            let mut lost = 0;
            while pending.len() > MAX_PENDING {
                pending.pop_front();
                lost += 1;
            }
            if lost > 0 {
                dropped.fetch_add(lost, Ordering::Relaxed);
                tracing::error!(lost, "audit events lost: too many waiting for a database that keeps failing");
            }
            // A flush answers once what came before it is written, or could not be yet (it
            // must not hang a shutdown on a broken database).
            for w in waiters {
                let _ = w.send(());
            }
            if !open && failing {
                tracing::error!(lost = pending.len(), "audit events lost at shutdown: the database kept failing");
                dropped.fetch_add(pending.len() as u64, Ordering::Relaxed);
                break;
            }
        }
    });
    tx
}

/// The handle events are recorded through.
pub(crate) struct Auditor {
    tx: mpsc::Sender<Msg>,
}

impl Auditor {
    pub(crate) fn start(meta: Meta, dropped: Arc<AtomicU64>) -> Self {
        Auditor { tx: start(meta, dropped) }
    }

    /// Records an event (waits only when the writer is far behind).
    pub(crate) async fn record(&self, e: AuditEvent) {
        let row = AuditRow {
            id: 0,
            event_time: berth_meta::now_ms(),
            event_name: e.name,
            principal: e.principal,
            source_ip: e.source_ip.map(|i| i.to_string()),
            resource: e.resource,
            decision: if e.allowed { "allow" } else { "deny" }.to_string(),
            error: e.error,
            detail: e.detail,
        };
        if self.tx.send(Msg::Event(row)).await.is_err() {
            tracing::error!("audit writer stopped; event lost");
        }
    }

    /// Waits until every event recorded so far is stored.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
