//! Counters since the process started, for `/metrics` (Prometheus text exposition).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the process started, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub gc_runs: AtomicU64,
    pub gc_examined: AtomicU64,
    pub gc_condemned: AtomicU64,
    pub gc_deleted_blobs: AtomicU64,
    pub gc_deleted_bytes: AtomicU64,
    pub gc_failed: AtomicU64,
    pub gc_uploads_removed: AtomicU64,
    /// Duration of the last pass, milliseconds.
    pub gc_last_ms: AtomicU64,
    pub lifecycle_runs: AtomicU64,
    pub lifecycle_expired: AtomicU64,
    /// Audit events given up on (the database kept failing); shared with the audit writer.
    pub audit_dropped: std::sync::Arc<AtomicU64>,
    /// 1 while storage counts as full (new content refused).
    pub storage_full: AtomicU64,
    /// Blob bytes received in uploads (a destination's view of what replication sent it).
    pub upload_bytes: AtomicU64,
    pub replication_images: AtomicU64,
    pub replication_failures: AtomicU64,
    pub replication_manifests_sent: AtomicU64,
    pub replication_blobs_sent: AtomicU64,
    pub replication_blobs_present: AtomicU64,
    pub replication_blobs_mounted: AtomicU64,
    pub replication_bytes_sent: AtomicU64,
    pub pull_through_blob_fetches: AtomicU64,
    pub pull_through_bytes_fetched: AtomicU64,
    pub pull_through_followers: AtomicU64,
}

impl Counters {
    pub(crate) fn add_replication(&self, s: &crate::model::CopyStats) {
        let add = |a: &AtomicU64, v: u64| a.fetch_add(v, Ordering::Relaxed);
        add(&self.replication_manifests_sent, s.manifests_sent);
        add(&self.replication_blobs_sent, s.blobs_sent);
        add(&self.replication_blobs_present, s.blobs_present);
        add(&self.replication_blobs_mounted, s.blobs_mounted);
        add(&self.replication_bytes_sent, s.bytes_sent);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: String| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
        };
        metric("berth_gc_runs_total", "counter", "Garbage collection passes.", g(&self.gc_runs).to_string());
        metric(
            "berth_gc_candidates_examined_total",
            "counter",
            "Candidates the mark step looked at.",
            g(&self.gc_examined).to_string(),
        );
        metric(
            "berth_gc_blobs_condemned_total",
            "counter",
            "Blobs found unreferenced.",
            g(&self.gc_condemned).to_string(),
        );
        metric("berth_gc_blobs_deleted_total", "counter", "Blobs deleted.", g(&self.gc_deleted_blobs).to_string());
        metric(
            "berth_gc_bytes_deleted_total",
            "counter",
            "Bytes of blobs deleted.",
            g(&self.gc_deleted_bytes).to_string(),
        );
        metric(
            "berth_gc_delete_failures_total",
            "counter",
            "Blob files that could not be deleted.",
            g(&self.gc_failed).to_string(),
        );
        metric(
            "berth_gc_uploads_removed_total",
            "counter",
            "Abandoned uploads removed.",
            g(&self.gc_uploads_removed).to_string(),
        );
        metric(
            "berth_gc_last_duration_seconds",
            "gauge",
            "Duration of the last garbage collection pass.",
            format!("{:.3}", g(&self.gc_last_ms) as f64 / 1000.0),
        );
        metric(
            "berth_lifecycle_runs_total",
            "counter",
            "Lifecycle policy runs (per repository).",
            g(&self.lifecycle_runs).to_string(),
        );
        metric(
            "berth_lifecycle_images_expired_total",
            "counter",
            "Images expired by lifecycle policies.",
            g(&self.lifecycle_expired).to_string(),
        );
        metric(
            "berth_audit_events_dropped_total",
            "counter",
            "Audit events lost because the database kept failing.",
            g(&self.audit_dropped).to_string(),
        );
        metric(
            "berth_storage_full",
            "gauge",
            "1 while storage is full and pushes are refused.",
            g(&self.storage_full).to_string(),
        );
        metric(
            "berth_upload_bytes_total",
            "counter",
            "Blob bytes received in uploads.",
            g(&self.upload_bytes).to_string(),
        );
        for (name, help, v) in [
            ("berth_replication_images_total", "Images replicated to a destination.", &self.replication_images),
            ("berth_replication_failures_total", "Replication attempts that failed.", &self.replication_failures),
            (
                "berth_replication_manifests_sent_total",
                "Manifests sent to destinations.",
                &self.replication_manifests_sent,
            ),
            ("berth_replication_blobs_sent_total", "Blobs uploaded to destinations.", &self.replication_blobs_sent),
            (
                "berth_replication_blobs_present_total",
                "Blobs a destination had already (not sent).",
                &self.replication_blobs_present,
            ),
            (
                "berth_replication_blobs_mounted_total",
                "Blobs a destination mounted from another repository (not sent).",
                &self.replication_blobs_mounted,
            ),
            (
                "berth_replication_bytes_sent_total",
                "Blob bytes uploaded to destinations.",
                &self.replication_bytes_sent,
            ),
            (
                "berth_pull_through_blob_fetches_total",
                "Blobs fetched from pull-through cache upstreams.",
                &self.pull_through_blob_fetches,
            ),
            (
                "berth_pull_through_bytes_fetched_total",
                "Blob bytes received from pull-through cache upstreams.",
                &self.pull_through_bytes_fetched,
            ),
            (
                "berth_pull_through_followers_total",
                "Blob requests served by following another request's fetch from an upstream.",
                &self.pull_through_followers,
            ),
        ] {
            metric(name, "counter", help, g(v).to_string());
        }
        out
    }
}

/// The jobs every node shares, per queue: waiting or running, and held by a live lease.
pub(crate) fn render_jobs(queues: &[(String, berth_meta::QueueCounts)]) -> String {
    let mut out =
        String::from("# HELP berth_jobs Jobs waiting or running, per queue (all nodes).\n# TYPE berth_jobs gauge\n");
    for (queue, c) in queues {
        out.push_str(&format!("berth_jobs{{queue=\"{queue}\"}} {}\n", c.queued));
    }
    out.push_str(
        "# HELP berth_jobs_running Jobs a live lease holds, per queue (all nodes).\n# TYPE berth_jobs_running gauge\n",
    );
    for (queue, c) in queues {
        out.push_str(&format!("berth_jobs_running{{queue=\"{queue}\"}} {}\n", c.running));
    }
    out
}
