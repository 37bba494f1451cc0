//! Throttling of failed authentication: failures are counted per source address and per access
//! key over a sliding window; past a limit, requests from that address (or naming that key) are
//! refused until the failures age out. Other addresses and keys are unaffected. Per node, in
//! memory: an attacker spreading over nodes gets at most the limit per node.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Error, Result};

pub const WINDOW: Duration = Duration::from_secs(60);
/// Failures one access key may cause per window.
pub const KEY_LIMIT: usize = 10;
/// Failures one address may cause per window (higher: several users may share an address).
pub const IP_LIMIT: usize = 50;
/// Addresses and keys tracked at most; past it, the oldest failures are forgotten first.
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

fn keys(ip: Option<IpAddr>, key: Option<&str>) -> impl Iterator<Item = (String, usize)> {
    ip.map(|i| (format!("ip {i}"), IP_LIMIT)).into_iter().chain(key.map(|k| (format!("key {k}"), KEY_LIMIT)))
}

impl Throttle {
    /// Refuses a request from `ip` (naming access key `key`) while either is over its limit.
    pub fn check(&self, ip: Option<IpAddr>, key: Option<&str>) -> Result<()> {
        self.check_at(ip, key, Instant::now())
    }

    pub fn failed(&self, ip: Option<IpAddr>, key: Option<&str>) {
        self.failed_at(ip, key, Instant::now())
    }

    fn check_at(&self, ip: Option<IpAddr>, key: Option<&str>, now: Instant) -> Result<()> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (k, limit) in keys(ip, key) {
            if let Some(q) = map.get_mut(&k) {
                while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                    q.pop_front();
                }
                if q.len() >= limit {
                    let wait = q.front().map_or(WINDOW, |t| WINDOW.saturating_sub(now.duration_since(*t)));
                    let what = k.split_once(' ').map_or(k.as_str(), |(kind, _)| kind);
                    return Err(Error::Throttled(format!(
                        "too many failed authentication attempts from this {}; retry in {} s",
                        if what == "ip" { "address" } else { "access key" },
                        wait.as_secs().max(1)
                    )));
                }
            }
        }
        Ok(())
    }

    fn failed_at(&self, ip: Option<IpAddr>, key: Option<&str>, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        for (k, limit) in keys(ip, key) {
            let q = map.entry(k).or_default();
            q.push_back(now);
            // Only the newest `limit` failures matter for the decision.
            while q.len() > limit {
                q.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_address_and_recovery() {
        let t = Throttle::default();
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other_ip: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..KEY_LIMIT {
            assert!(t.check_at(Some(ip), Some("AKIAONE"), now).is_ok());
            t.failed_at(Some(ip), Some("AKIAONE"), now);
        }
        assert!(matches!(t.check_at(Some(ip), Some("AKIAONE"), now), Err(Error::Throttled(_))));
        assert!(t.check_at(Some(other_ip), Some("AKIAONE"), now).is_err(), "the key is throttled everywhere");
        assert!(t.check_at(Some(ip), Some("AKIATWO"), now).is_ok(), "another key from the same address is not");
        for _ in 0..IP_LIMIT {
            t.failed_at(Some(ip), None, now);
        }
        assert!(t.check_at(Some(ip), Some("AKIATWO"), now).is_err(), "the address is now over its limit");
        assert!(t.check_at(Some(other_ip), Some("AKIATWO"), now).is_ok(), "other addresses are not");
        let later = now + WINDOW;
        assert!(t.check_at(Some(ip), Some("AKIAONE"), later).is_ok(), "failures age out");
    }
}
