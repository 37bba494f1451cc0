//! What a node knows of the other nodes on the cache bus (`cache_bus.rs`): who is there, which of
//! this node's invalidation batches each has applied, and the wait for them ([`Bus::settle`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::cache::Out;

/// No heartbeat heard for this long: the bus is not to be trusted (and a node not heard from
/// for this long is no longer waited for).
pub(crate) const DEAF_AFTER: Duration = Duration::from_secs(3);
/// Longest a write waits for the other nodes' acknowledgements.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(1);

/// This node's side of the bus: the queue to the sender, and what the other nodes acknowledged.
pub(crate) struct Bus {
    pub(crate) tx: mpsc::UnboundedSender<Out>,
    /// Invalidations published when the last settle began that have all been acknowledged.
    pub(crate) settled: AtomicU64,
    pub(crate) peers: Mutex<Peers>,
    pub(crate) acked: Notify,
    /// This process's listener is connected: only then does it send heartbeats, so that only
    /// nodes that apply invalidations (and acknowledge them) are waited for — not a `berth`
    /// command, which only sends.
    pub(crate) listening: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
pub(crate) struct Peers {
    /// Other nodes, by name: when last heard, the last of our batches they applied, and
    /// whether they let a wait run out (not waited for again until they acknowledge).
    seen: HashMap<String, Peer>,
}

struct Peer {
    heard: Instant,
    acked: u64,
    missed: bool,
}

impl Bus {
    /// Waits until every invalidation this process published so far has been applied by every
    /// other node heard from lately (at most [`ACK_WAIT`]; a node that does not answer in that
    /// time stops caching by itself within [`DEAF_AFTER`]).
    /// `target`: how many invalidations this process has published.
    pub(crate) async fn settle(&self, target: u64) {
        if target <= self.settled.load(Ordering::Acquire) {
            return;
        }
        let (done, seq) = tokio::sync::oneshot::channel();
        if self.tx.send(Out::Flush(done)).is_err() {
            return;
        }
        let Ok(Ok(seq)) = tokio::time::timeout(ACK_WAIT, seq).await else { return };
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        loop {
            let notified = self.acked.notified();
            let waiting: Vec<String> = {
                let p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                p.seen
                    .iter()
                    .filter(|(_, peer)| peer.heard.elapsed() < DEAF_AFTER && !peer.missed && peer.acked < seq)
                    .map(|(n, _)| n.clone())
                    .collect()
            };
            if waiting.is_empty() {
                self.settled.fetch_max(target, Ordering::AcqRel);
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // Dead (its heartbeats stop: dropped after DEAF_AFTER), or stuck (then deaf to its
                // own heartbeat too, so it stops caching): not waited for again until it answers.
                tracing::warn!(nodes = ?waiting, "nodes did not acknowledge a cache invalidation in time");
                let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                for n in &waiting {
                    if let Some(peer) = p.seen.get_mut(n) {
                        peer.missed = true;
                    }
                }
                return;
            }
        }
    }

    pub(crate) fn heard(&self, node: &str, acked: Option<u64>) {
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let e = p.seen.entry(node.to_string()).or_insert(Peer { heard: Instant::now(), acked: 0, missed: false });
        e.heard = Instant::now();
        if let Some(n) = acked {
            e.acked = e.acked.max(n);
            e.missed = false;
        }
        if p.seen.len() > 1000 {
            p.seen.retain(|_, peer| peer.heard.elapsed() < DEAF_AFTER);
        }
        drop(p);
        if acked.is_some() {
            self.acked.notify_waiters();
        }
    }

    /// A node said it is stopping: not waited for any more.
    pub(crate) fn gone(&self, node: &str) {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).seen.remove(node);
        self.acked.notify_waiters();
    }
}
