//! The server process's resources, sampled from /proc while a scenario runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::stats::Server;

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): utime is 14th, stime 15th overall.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
    pid: u32,
    start_ticks: u64,
}

impl Sampler {
    pub fn start(pid: Option<u32>) -> Option<Sampler> {
        let pid = pid?;
        let start_ticks = cpu_ticks(pid)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak.max(rss_kib(pid).unwrap_or(0))
        });
        Some(Sampler { stop, task, pid, start_ticks })
    }

    pub async fn finish(self) -> Server {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.task.await.unwrap_or(0);
        // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
        let ticks = cpu_ticks(self.pid).unwrap_or(self.start_ticks) - self.start_ticks;
        Server { peak_rss_mib: peak as f64 / 1024.0, cpu_seconds: ticks as f64 / 100.0 }
    }
}

pub fn idle_rss_mib(pid: Option<u32>) -> Option<f64> {
    Some(rss_kib(pid?)? as f64 / 1024.0)
}
