//! The audit log (CloudTrail-like): every ECR call, every OCI write and every denied request, with
//! time, event name, principal, source address, resource, decision and error. Events go through a
//! channel to one writer task that appends them in batches (one transaction per batch), so a burst
//! of requests costs a few commits; `flush_audit` waits until everything sent is stored.

use std::net::IpAddr;

use berth_meta::{AuditFilter, AuditRow, Meta};
use tokio::sync::{mpsc, oneshot};

use crate::{Registry, Result};

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

pub(crate) enum Msg {
    Event(AuditRow),
    Flush(oneshot::Sender<()>),
}

pub(crate) fn start(meta: Meta) -> mpsc::Sender<Msg> {
    let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut rows = Vec::new();
            let mut waiters = Vec::new();
            let mut next = Some(first);
            while let Some(m) = next {
                match m {
                    Msg::Event(r) => rows.push(r),
                    Msg::Flush(w) => waiters.push(w),
                }
                next = if rows.len() < BATCH { rx.try_recv().ok() } else { None };
            }
            if !rows.is_empty() {
                let n = rows.len();
                if let Err(e) = meta.append_audit(rows).await {
                    tracing::error!(error = %e, events = n, "could not write audit events");
                }
            }
            for w in waiters {
                let _ = w.send(());
            }
        }
    });
    tx
}

impl Registry {
    /// Records an event (waits only when the writer is far behind).
    pub async fn audit(&self, e: AuditEvent) {
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
        if self.audit.send(Msg::Event(row)).await.is_err() {
            tracing::error!("audit writer stopped; event lost");
        }
    }

    /// Waits until every event recorded so far is stored.
    pub async fn flush_audit(&self) {
        let (tx, rx) = oneshot::channel();
        if self.audit.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        Ok(self.meta.audit_events(filter).await?)
    }
}
