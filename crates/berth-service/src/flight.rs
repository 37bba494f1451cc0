//! One download read by many: a blob fetched from a pull-through cache's upstream goes to storage
//! and to every client that asks for it meanwhile. A client that comes late first gets the chunks
//! that came before it, while those are at most [`REPLAY_LIMIT`] bytes; past that the start is no
//! longer kept (memory stays bounded) and a later client waits for the stored blob instead.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::{mpsc, watch};

/// What is kept of a fetch's start for clients that join late.
pub(crate) const REPLAY_LIMIT: u64 = 64 << 20;
/// A client that takes no chunk for this long is left behind: it must not hold up the others,
/// nor the copy going to storage.
const STALLED_CLIENT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Asking the upstream.
    Starting,
    /// The upstream answered this many bytes; they are on their way.
    Streaming(u64),
    /// In storage: read it from there.
    Stored,
    /// The fetch failed (why).
    Failed(String),
}

pub(crate) struct Flight {
    phase: watch::Sender<Phase>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The chunks so far, while a client may still join.
    kept: Vec<Bytes>,
    kept_len: u64,
    closed: bool,
    followers: Vec<mpsc::Sender<io::Result<Bytes>>>,
}

pub(crate) type Chunks = BoxStream<'static, io::Result<Bytes>>;

impl Flight {
    pub(crate) fn new() -> Self {
        Flight { phase: watch::Sender::new(Phase::Starting), state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        if matches!(p, Phase::Stored | Phase::Failed(_)) {
            let mut s = self.state();
            // Followers' channels close: each stream ends after what it was sent.
            s.followers.clear();
            s.kept.clear();
            s.closed = true;
        }
        self.phase.send_replace(p);
    }

    /// Waits until the fetch has begun streaming or ended; that phase.
    pub(crate) async fn settled(&self) -> Phase {
        let mut rx = self.phase.subscribe();
        let r = rx.wait_for(|p| *p != Phase::Starting).await.map(|p| p.clone());
        r.unwrap_or_else(|_| Phase::Failed("the fetch stopped".into()))
    }

    /// Waits until the fetch has ended: Ok once stored.
    pub(crate) async fn finished(&self) -> Result<(), String> {
        let mut rx = self.phase.subscribe();
        let r = rx.wait_for(|p| matches!(p, Phase::Stored | Phase::Failed(_))).await.map(|p| p.clone());
        match r {
            Ok(Phase::Stored) => Ok(()),
            Ok(Phase::Failed(e)) => Err(e),
            _ => Err("the fetch stopped".into()),
        }
    }

    /// Every chunk from the start; None once the start is no longer kept or the fetch is over.
    pub(crate) fn join(&self) -> Option<Chunks> {
        let mut s = self.state();
        if s.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(16);
        s.followers.push(tx);
        let replay = futures_util::stream::iter(s.kept.clone().into_iter().map(Ok));
        let mut rx = rx;
        let live = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Some(replay.chain(live).boxed())
    }

    /// Sends a chunk (or the error that ends the fetch) to every follower.
    pub(crate) async fn send(&self, chunk: &io::Result<Bytes>) {
        let followers = {
            let mut s = self.state();
            if let Ok(b) = chunk
                && !s.closed
            {
                s.kept_len += b.len() as u64;
                if s.kept_len > REPLAY_LIMIT {
                    // No one joins from here on; those following keep receiving.
                    s.closed = true;
                    s.kept.clear();
                } else {
                    s.kept.push(b.clone());
                }
            }
            s.followers.clone()
        };
        let mut gone = Vec::new();
        for tx in followers {
            let copy = match chunk {
                Ok(b) => Ok(b.clone()),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            if tx.send_timeout(copy, STALLED_CLIENT).await.is_err() {
                gone.push(tx);
            }
        }
        if !gone.is_empty() {
            self.state().followers.retain(|t| !gone.iter().any(|g| g.same_channel(t)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(s: Chunks) -> Vec<u8> {
        s.map(|c| c.unwrap().to_vec()).collect::<Vec<_>>().await.concat()
    }

    #[tokio::test]
    async fn late_followers_get_the_start_until_the_limit() {
        let f = Flight::new();
        let first = f.join().unwrap();
        f.send(&Ok(Bytes::from_static(b"ab"))).await;
        let late = f.join().unwrap();
        f.send(&Ok(Bytes::from_static(b"cd"))).await;
        f.set_phase(Phase::Stored);
        assert_eq!(all(first).await, b"abcd");
        assert_eq!(all(late).await, b"abcd");
        assert!(f.join().is_none(), "joined after the end");
        assert_eq!(f.finished().await, Ok(()));

        let f = Flight::new();
        let early = f.join().unwrap();
        let big = Bytes::from(vec![7u8; (REPLAY_LIMIT + 1) as usize]);
        let reader = tokio::spawn(all(early));
        f.send(&Ok(big)).await;
        assert!(f.join().is_none(), "joined past the replay limit");
        f.send(&Ok(Bytes::from_static(b"z"))).await;
        f.set_phase(Phase::Stored);
        assert_eq!(reader.await.unwrap().len() as u64, REPLAY_LIMIT + 2);
    }

    #[tokio::test]
    async fn an_upstream_error_reaches_every_follower() {
        let f = Flight::new();
        let s = f.join().unwrap();
        f.send(&Ok(Bytes::from_static(b"ab"))).await;
        f.send(&Err(io::Error::other("reset"))).await;
        f.set_phase(Phase::Failed("reset".into()));
        let got: Vec<io::Result<Bytes>> = s.collect().await;
        assert!(got[0].is_ok() && got[1].is_err());
        assert_eq!(f.finished().await, Err("reset".into()));
        assert_eq!(f.settled().await, Phase::Failed("reset".into()));
    }
}
