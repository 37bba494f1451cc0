//! Throttling of failed authentication. Only failures are counted, per source address over a
//! sliding window; past the limit, further failures from that address are answered "throttled"
//! instead of with their own error. Valid credentials are never refused here, whatever the address
//! or key has seen: counting by access key id or refusing a throttled address outright would let
//! anyone who knows a key id (or shares an address) lock its owner out. Per node, in memory.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

pub const WINDOW: Duration = Duration::from_secs(60);
/// Failures one address may cause per window before its failures are answered as throttled
/// (high enough for several users behind one address).
pub const IP_LIMIT: usize = 50;
/// Addresses tracked at most; past it, the oldest failures are forgotten first.
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Throttle {
    /// Records that a request from `ip` failed authentication with `e`; returns the error to
    /// answer with: `e`, or a throttling error once the address is past its limit.
    pub fn refuse(&self, ip: Option<IpAddr>, e: Error) -> Error {
        self.failure(ip).unwrap_or(e)
    }

    /// Records a failed authentication from `ip`; the throttling error to answer with instead of
    /// the failure's own, once the address is past its limit.
    pub fn failure(&self, ip: Option<IpAddr>) -> Option<Error> {
        self.failed_at(ip, Instant::now()).map(|wait| {
            Error::Throttled(format!(
                "too many failed authentication attempts from this address; retry in {} s",
                wait.as_secs().max(1)
            ))
        })
    }

    /// Counts a failure; `Some(wait)` when the address is now past its limit.
    fn failed_at(&self, ip: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let ip = ip?;
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let q = map.entry(ip).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        q.push_back(now);
        // Only the newest `IP_LIMIT + 1` failures matter for the decision.
        while q.len() > IP_LIMIT + 1 {
            q.pop_front();
        }
        (q.len() > IP_LIMIT).then(|| q.front().map_or(WINDOW, |t| WINDOW.saturating_sub(now.duration_since(*t))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_failing_address_is_throttled_and_it_recovers() {
        let t = Throttle::default();
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..IP_LIMIT {
            assert!(t.failed_at(Some(ip), now).is_none());
        }
        assert!(t.failed_at(Some(ip), now).is_some(), "past the limit");
        assert!(t.failed_at(Some(other), now).is_none(), "other addresses are not");
        assert!(t.failed_at(Some(ip), now + WINDOW + Duration::from_secs(1)).is_none(), "failures age out");
        let e = t.refuse(Some(other), Error::unauthenticated("bad".into()));
        assert!(matches!(e, Error::Unauthenticated { .. }), "the own error below the limit");
        assert!(
            t.refuse(None, Error::unauthenticated("x".into())).to_string().contains('x'),
            "no address: never throttled"
        );
    }
}
