//! Cache invalidation between nodes sharing one PostgreSQL database: each node sends its
//! invalidations on the `berth_cache` channel (after the write's commit) and applies everyone
//! else's, acknowledging each batch. A write's response waits (up to `peers::ACK_WAIT`) until every
//! other live node has applied its invalidations (`Bus::settle`), so a client that changes
//! something through one node and reads it through another sees the change. A node caches only
//! while its listener hears its own heartbeat, sent every second: a listener that lost its
//! connection (and so perhaps messages), or has not heard the heartbeat in [`DEAF_AFTER`], turns
//! caching off and clears it until it hears one again. And every [`STALE_BOUND`] everything is
//! dropped anyway, which bounds what a lost notification (a node dead between its commit and its
//! notify) can cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_meta::Heard;
use tokio::sync::{Notify, mpsc};

use crate::cache::{Inval, Out, STALE_BOUND};
use crate::core::Core;
use crate::peers::{Bus, DEAF_AFTER};

pub(crate) const CHANNEL: &str = "berth_cache";
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A notification's payload limit is 8000 bytes; stay well under it.
const MAX_PAYLOAD: usize = 7000;

/// Starts the sender (every process on PostgreSQL: a CLI command's writes must reach the
/// serving nodes too).
pub(crate) fn start(core: &Arc<Core>) -> Arc<Bus> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    core.caches.publish_to(tx.clone());
    let bus = Arc::new(Bus {
        tx,
        settled: AtomicU64::new(0),
        peers: Mutex::default(),
        acked: Notify::new(),
        listening: Default::default(),
    });
    let weak = Arc::downgrade(core);
    let me = bus.clone();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(HEARTBEAT);
        // Batches carrying invalidations are numbered; a flush answers with the last number.
        let mut seq = 0u64;
        loop {
            let first = tokio::select! {
                m = rx.recv() => match m { Some(m) => Some(m), None => return },
                _ = beat.tick() => None,
            };
            let Some(core) = weak.upgrade() else { return };
            let mut lines = Vec::new();
            let mut flushes = Vec::new();
            let mut queued: Vec<Out> = Vec::new();
            match first {
                Some(m) => queued.push(m),
                None if me.listening.load(Ordering::Acquire) => lines.push(format!("hb{}", core.node)),
                None => {}
            }
            while let Ok(m) = rx.try_recv() {
                queued.push(m);
            }
            let beat_only = lines.len();
            for m in queued {
                match m {
                    Out::Inval(i) => lines.push(i.encode()),
                    Out::Flush(f) => flushes.push(f),
                }
            }
            if lines.len() > beat_only {
                seq += 1;
            }
            send(&core, seq, &lines).await;
            for f in flushes {
                let _ = f.send(seq);
            }
        }
    });
    bus
}

/// Sends lines in as few notifications as fit, each headed by this node's name and the batch
/// number; retried a few times (a lost one is covered by the staleness bound).
async fn send(core: &Core, seq: u64, lines: &[String]) {
    let mut batch = String::new();
    let head = format!("{}\n#{seq}\n", core.node);
    for (i, l) in lines.iter().enumerate() {
        batch.push_str(l);
        batch.push('\n');
        let last = i + 1 == lines.len();
        if last || batch.len() + lines[i + 1].len() > MAX_PAYLOAD {
            notify(core, &format!("{head}{batch}")).await;
            batch.clear();
        }
    }
}

async fn notify(core: &Core, payload: &str) {
    for attempt in 0..3 {
        match core.meta.notify(CHANNEL, payload).await {
            Ok(()) => return,
            Err(e) if attempt == 2 => {
                tracing::warn!(error = %e, "could not notify other nodes of a cache invalidation")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The listener: applies other nodes' invalidations and acknowledges them, and keeps caching on
/// only while it is sure it hears everything. Runs until the process ends.
pub(crate) async fn listen(core: Arc<Core>) {
    let own_beat = format!("hb{}", core.node);
    let own_ack = format!("ack{} ", core.node);
    let bus = core.bus.get().cloned();
    loop {
        let mut listener = match core.meta.listen(CHANNEL).await {
            Ok(l) => l,
            Err(e) => {
                core.caches.set_live(false);
                tracing::warn!(error = %e, "cache invalidation listener cannot connect; caching is off");
                tokio::time::sleep(HEARTBEAT).await;
                continue;
            }
        };
        if let Some(b) = &bus {
            b.listening.store(true, Ordering::Release);
        }
        let mut heard = Instant::now() - DEAF_AFTER;
        let mut swept = Instant::now();
        loop {
            if swept.elapsed() >= STALE_BOUND {
                core.caches.apply(&Inval::All);
                swept = Instant::now();
            }
            let got = tokio::time::timeout(HEARTBEAT, listener.recv()).await;
            match got {
                Ok(Ok(Heard::Message(text))) => {
                    let mut lines = text.lines();
                    let from = lines.next().unwrap_or_default();
                    let mine = from == &*core.node;
                    let (mut seq, mut applied) = (None, false);
                    for line in lines {
                        if line == own_beat {
                            heard = Instant::now();
                            core.caches.set_live(true);
                        } else if let Some(n) = line.strip_prefix('#') {
                            seq = n.parse::<u64>().ok();
                        } else if let Some(n) = line.strip_prefix(&own_ack) {
                            if let Some(b) = &bus {
                                b.heard(from, n.parse().ok());
                            }
                        } else if line == "bye" {
                            if let Some(b) = bus.as_ref().filter(|_| !mine) {
                                b.gone(from);
                            }
                        } else if line.starts_with("hb") || line.starts_with("ack") {
                            if let Some(b) = bus.as_ref().filter(|_| !mine) {
                                b.heard(from, None);
                            }
                        } else if !mine {
                            core.caches.apply(&Inval::decode(line));
                            applied = true;
                        }
                    }
                    if applied && let Some(n) = seq {
                        notify(&core, &format!("{}\nack{from} {n}\n", core.node)).await;
                    }
                }
                Ok(Ok(Heard::Reconnected)) => {
                    core.caches.set_live(false);
                    tracing::warn!(
                        "cache invalidation listener reconnected; caching is off until its heartbeat is heard"
                    );
                }
                Ok(Err(e)) => {
                    core.caches.set_live(false);
                    if let Some(b) = &bus {
                        b.listening.store(false, Ordering::Release);
                    }
                    tracing::warn!(error = %e, "cache invalidation listener failed; caching is off");
                    break;
                }
                Err(_) => {}
            }
            if heard.elapsed() > DEAF_AFTER && core.caches.live() {
                tracing::warn!("no cache heartbeat heard for {} s; caching is off", DEAF_AFTER.as_secs());
                core.caches.set_live(false);
            }
        }
    }
}

/// The listener as one of the node's background workers (so that it stops with them).
pub(crate) struct BusListener(pub Arc<Core>);

impl crate::jobs::Worker for BusListener {
    fn name(&self) -> String {
        "cache-bus".into()
    }

    async fn work(&mut self) -> crate::error::Result<crate::jobs::WorkerState> {
        listen(self.0.clone()).await;
        Ok(crate::jobs::WorkerState::Done)
    }

    async fn wait_for_work(&mut self) {}

    async fn stopped(&mut self) {
        self.0.caches.set_live(false);
        if let Some(b) = self.0.bus.get() {
            b.listening.store(false, Ordering::Release);
        }
        // The others stop waiting for this node's acknowledgements now, not in 3 s.
        notify(&self.0, &format!("{}\nbye\n", self.0.node)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_round_trip() {
        for i in [
            Inval::Tag("team/app".into(), "v1".into()),
            Inval::Blob("a".into(), "sha256:00".into()),
            Inval::Repo("a/b".into()),
            Inval::Manifests("x".into()),
            Inval::AllBlobs,
            Inval::Access,
            Inval::Iam,
            Inval::ScanPolicy(42),
            Inval::All,
        ] {
            assert_eq!(Inval::decode(&i.encode()), i);
        }
        assert_eq!(Inval::decode("from a newer version"), Inval::All, "what is not understood drops everything");
        assert_eq!(Inval::decode("s\u{1f}x"), Inval::All);
    }
}
