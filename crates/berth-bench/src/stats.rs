//! Latency percentiles and the report.

use serde::Serialize;

/// Percentile of sorted microsecond samples, in milliseconds.
pub fn pct_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Server {
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub scenario: String,
    pub metrics: Vec<Metric>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Server>,
    pub errors: u64,
}

impl Scenario {
    pub fn new(name: impl Into<String>) -> Self {
        Scenario { scenario: name.into(), metrics: Vec::new(), server: None, errors: 0 }
    }

    pub fn metric(&mut self, name: &str, value: f64, unit: &str) -> &mut Self {
        self.metrics.push(Metric { name: name.into(), value, unit: unit.into() });
        self
    }

    /// requests/s and p50/p99/p999 from latency samples (µs) over `secs`.
    pub fn latencies(&mut self, mut samples: Vec<u32>, secs: f64, rate_unit: &str) -> &mut Self {
        samples.sort_unstable();
        self.metric("rate", samples.len() as f64 / secs, rate_unit);
        self.metric("p50", pct_ms(&samples, 0.50), "ms");
        self.metric("p99", pct_ms(&samples, 0.99), "ms");
        self.metric("p999", pct_ms(&samples, 0.999), "ms");
        self
    }
}

pub fn print_table(results: &[Scenario]) {
    print!("{}", table(results));
}

pub fn print_table_to_stderr(results: &[Scenario]) {
    eprint!("{}", table(results));
}

fn table(results: &[Scenario]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<34} {:>40} {:>9} {:>10} {:>7}", "scenario", "result", "errors", "peak RSS", "CPU s");
    for r in results {
        let m: Vec<String> = r
            .metrics
            .iter()
            .map(|m| {
                if m.value >= 100.0 {
                    format!("{} {:.0} {}", m.name, m.value, m.unit)
                } else {
                    format!("{} {:.2} {}", m.name, m.value, m.unit)
                }
            })
            .collect();
        let (rss, cpu) = r.server.as_ref().map_or(("-".into(), "-".into()), |s| {
            (format!("{:.0} MiB", s.peak_rss_mib), format!("{:.1}", s.cpu_seconds))
        });
        let _ = writeln!(out, "{:<34} {:>40} {:>9} {:>10} {:>7}", r.scenario, m.join(", "), r.errors, rss, cpu);
    }
    out
}
