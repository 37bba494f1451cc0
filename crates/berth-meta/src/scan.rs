//! Vulnerability records (OSV JSON, stored per affected package) and image scan results.

use sqlx::Row;

use crate::{EventKind, JobRow, Meta, Result, now_ms};

/// One record's entry for one package: (id, ecosystem, package, record JSON, modified).
pub type VulnRow = (String, String, String, String, Option<String>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRow {
    pub status: String,
    pub description: Option<String>,
    /// The findings as JSON (the service's).
    pub findings: Option<String>,
    pub packages: Option<i64>,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    /// The package inventory (JSON, the service's).
    pub inventory: Option<String>,
}

/// The queue scans wait in.
pub const SCAN_QUEUE: &str = "scan";

/// The unique key of an image's scan job: one queued scan per image.
pub(crate) fn scan_job_key(repo_id: i64, digest: &str) -> String {
    format!("scan:{repo_id}:{digest}")
}

/// What matches every scan job of a repository (SQL `LIKE`).
pub(crate) fn scan_job_prefix(repo_id: i64) -> String {
    format!("scan:{repo_id}:%")
}

/// A requested scan: the payload of its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanJob {
    pub repo_id: i64,
    /// The repository key.
    pub repo: String,
    pub digest: String,
    /// When it was queued: identifies this request for a scan among later ones.
    pub started_at: i64,
}

impl ScanJob {
    pub fn payload(&self) -> String {
        serde_json::json!({
            "repo_id": self.repo_id, "repo": self.repo, "digest": self.digest, "started_at": self.started_at
        })
        .to_string()
    }

    /// The scan a job's payload asks for (None: not a scan job's).
    pub fn from_payload(payload: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        Some(ScanJob {
            repo_id: v["repo_id"].as_i64()?,
            repo: v["repo"].as_str()?.to_string(),
            digest: v["digest"].as_str()?.to_string(),
            started_at: v["started_at"].as_i64()?,
        })
    }
}

/// A completed scan with its inventory, for matching again.
#[derive(Debug, Clone)]
pub struct StoredScan {
    pub repo_id: i64,
    /// The repository key.
    pub repo: String,
    pub digest: String,
    pub findings: Option<String>,
    pub inventory: Option<String>,
}

impl Meta {
    /// Stores records (replacing earlier copies) and notes when `source` was imported.
    pub async fn put_vuln_records(&self, source: &str, rows: Vec<VulnRow>) -> Result<()> {
        let source = source.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                for (id, eco, pkg, rec, modified) in &rows {
                    sqlx::query(
                        "INSERT INTO vuln_records (id, ecosystem, package, record, modified) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (id, ecosystem, package) DO UPDATE SET record = excluded.record, modified = excluded.modified",
                    )
                    .bind(id.as_str())
                    .bind(eco.as_str())
                    .bind(pkg.as_str())
                    .bind(rec.as_str())
                    .bind(modified.as_deref())
                    .execute(&mut *c)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO vuln_sources (name, imported_at, records) VALUES ($1, $2, $3) ON CONFLICT (name) \
                     DO UPDATE SET imported_at = excluded.imported_at, records = vuln_sources.records + excluded.records",
                )
                .bind(source.as_str())
                .bind(now_ms())
                .bind(rows.len() as i64)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    /// A layer's stored scan made by analyzer version `analyzer`.
    pub async fn layer_scan(&self, digest: &str, analyzer: i64) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT scan FROM layer_scans WHERE digest = $1 AND analyzer = $2")
            .bind(digest)
            .bind(analyzer)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// Stores (or replaces) a layer's scan.
    pub async fn put_layer_scan(&self, digest: &str, analyzer: i64, scan: Vec<u8>) -> Result<()> {
        let digest = digest.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO layer_scans (digest, analyzer, scan, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (digest) DO UPDATE SET analyzer = excluded.analyzer, scan = excluded.scan, \
                     created_at = excluded.created_at",
                )
                .bind(digest.as_str())
                .bind(analyzer)
                .bind(scan.as_slice())
                .bind(crate::now_ms())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Records for a package of an ecosystem (`Debian:12`, `PyPI`, ...).
    pub async fn vuln_records(&self, ecosystem: &str, package: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT record FROM vuln_records WHERE ecosystem = $1 AND package = $2")
            .bind(ecosystem)
            .bind(package)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Imported sources: (name, imported at ms, records).
    pub async fn vuln_sources(&self) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query("SELECT name, imported_at, records FROM vuln_sources ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Queues a scan of an image (replacing any earlier result): its row says IN_PROGRESS and a
    /// job in the `scan` queue asks a worker to run it, both in one transaction. With `unless_since`,
    /// nothing happens (false) when a scan was already queued at or after that time (the same
    /// request seen twice).
    pub async fn queue_scan(&self, job: &ScanJob, unless_since: Option<i64>) -> Result<bool> {
        let job = job.clone();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                if let Some(since) = unless_since {
                    let newer = sqlx::query(
                        "SELECT 1 FROM image_scans WHERE repo_id = $1 AND digest = $2 AND started_at >= $3",
                    )
                    .bind(job.repo_id)
                    .bind(job.digest.as_str())
                    .bind(since)
                    .fetch_optional(&mut *c)
                    .await?;
                    if newer.is_some() {
                        return Ok(false);
                    }
                }
                sqlx::query(
                    "INSERT INTO image_scans (repo_id, digest, status, description, findings, packages, started_at, \
                     completed_at, claimed_by, claimed_until, attempts, inventory) VALUES ($1, $2, 'IN_PROGRESS', \
                     'The scan is in progress.', NULL, NULL, $3, NULL, NULL, NULL, 0, NULL) \
                     ON CONFLICT (repo_id, digest) DO UPDATE SET status = 'IN_PROGRESS', \
                     description = excluded.description, findings = NULL, packages = NULL, \
                     started_at = excluded.started_at, completed_at = NULL, claimed_by = NULL, claimed_until = NULL, \
                     attempts = 0, inventory = NULL",
                )
                .bind(job.repo_id)
                .bind(job.digest.as_str())
                .bind(job.started_at)
                .execute(&mut *c)
                .await?;
                let key = scan_job_key(job.repo_id, &job.digest);
                crate::jobs::enqueue_in(c, SCAN_QUEUE, Some(&key), &job.payload(), job.started_at, false).await?;
                Ok(true)
            })
        }))
        .await
    }

    /// Stores a scan's outcome and writes its `scan_completed` event (`detail`), unless the scan
    /// was queued again since `job` was claimed; the job is done either way (a newer request
    /// stays queued).
    pub async fn finish_scan(&self, job: &JobRow, scan: &ScanJob, row: &ScanRow, detail: &str) -> Result<bool> {
        let (job, scan, r, detail) = (job.clone(), scan.clone(), row.clone(), detail.to_string());
        self.write_tx_events(Box::new(move |c| {
            Box::pin(async move {
                crate::jobs::finish_in(c, &job).await?;
                let n = sqlx::query(
                    "UPDATE image_scans SET status = $1, description = $2, findings = $3, packages = $4, \
                     completed_at = $5, inventory = $6, claimed_by = NULL, claimed_until = NULL \
                     WHERE repo_id = $7 AND digest = $8 AND started_at = $9 AND status = 'IN_PROGRESS'",
                )
                .bind(r.status.as_str())
                .bind(r.description.as_deref())
                .bind(r.findings.as_deref())
                .bind(r.packages)
                .bind(r.completed_at)
                .bind(r.inventory.as_deref())
                .bind(scan.repo_id)
                .bind(scan.digest.as_str())
                .bind(scan.started_at)
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n == 1 {
                    let (digest, detail) = (Some(scan.digest.as_str()), Some(detail.as_str()));
                    crate::events::record(c, EventKind::ScanCompleted, scan.repo_id, digest, None, detail).await?;
                }
                Ok(n == 1)
            })
        }))
        .await
    }

    /// A page of completed scans that kept an inventory, after `after` (repo id, digest).
    pub async fn scans_with_inventory(&self, after: Option<(i64, String)>, limit: i64) -> Result<Vec<StoredScan>> {
        let (rid, dig) = after.unwrap_or((-1, String::new()));
        let rows = sqlx::query(
            "SELECT s.repo_id, r.name, s.digest, s.findings, s.inventory FROM image_scans s \
             JOIN repositories r ON r.id = s.repo_id WHERE s.status = 'COMPLETE' AND s.inventory IS NOT NULL \
             AND (s.repo_id > $1 OR (s.repo_id = $1 AND s.digest > $2)) ORDER BY s.repo_id, s.digest LIMIT $3",
        )
        .bind(rid)
        .bind(dig)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredScan {
                    repo_id: r.try_get(0)?,
                    repo: r.try_get(1)?,
                    digest: r.try_get(2)?,
                    findings: r.try_get(3)?,
                    inventory: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Replaces a completed scan's findings (after matching its inventory against new data).
    pub async fn set_findings(&self, repo_id: i64, digest: &str, findings: &str) -> Result<()> {
        let (digest, findings) = (digest.to_string(), findings.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE image_scans SET findings = $1 WHERE repo_id = $2 AND digest = $3 AND status = 'COMPLETE'",
                )
                .bind(findings.as_str())
                .bind(repo_id)
                .bind(digest.as_str())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Queued or running scans: (queued, of which held by a live claim).
    pub async fn scan_queue(&self, now: i64) -> Result<(i64, i64)> {
        let r = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN lease_until >= $1 THEN 1 ELSE 0 END), 0) FROM jobs \
             WHERE queue = 'scan'",
        )
        .bind(now)
        .fetch_one(&self.read)
        .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }

    /// An image's scan, without its inventory (the findings are what is shown; read the inventory
    /// with [`Meta::scan_inventory`]).
    pub async fn scan(&self, repo_id: i64, digest: &str) -> Result<Option<ScanRow>> {
        let row = sqlx::query(
            "SELECT status, description, findings, packages, started_at, completed_at FROM image_scans \
             WHERE repo_id = $1 AND digest = $2",
        )
        .bind(repo_id)
        .bind(digest)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(ScanRow {
                status: r.try_get(0)?,
                description: r.try_get(1)?,
                findings: r.try_get(2)?,
                packages: r.try_get(3)?,
                started_at: r.try_get(4)?,
                completed_at: r.try_get(5)?,
                inventory: None,
            })
        })
        .transpose()
    }

    /// The inventory a completed scan took, and when it completed (ms).
    pub async fn scan_inventory(&self, repo_id: i64, digest: &str) -> Result<Option<(i64, String)>> {
        let row = sqlx::query(
            "SELECT completed_at, inventory FROM image_scans WHERE repo_id = $1 AND digest = $2 \
             AND status = 'COMPLETE' AND inventory IS NOT NULL",
        )
        .bind(repo_id)
        .bind(digest)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| Ok((r.try_get::<Option<i64>, _>(0)?.unwrap_or_default(), r.try_get(1)?))).transpose()
    }

    /// The scan of an image, or else of an index that holds it (an index's scan covers its
    /// platforms): (status, findings).
    pub async fn scan_covering(&self, repo_id: i64, digest: &str) -> Result<Option<(String, Option<String>)>> {
        let row = sqlx::query(
            "SELECT status, findings FROM image_scans WHERE repo_id = $1 AND (digest = $2 OR digest IN \
             (SELECT parent_digest FROM manifest_children WHERE repo_id = $1 AND child_digest = $2)) \
             ORDER BY CASE WHEN digest = $2 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(repo_id)
        .bind(digest)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// A repository's id and scan policy by its key, in one query (the pull path).
    pub async fn repo_scan_policy(&self, name: &str) -> Result<Option<(i64, Option<String>)>> {
        let row = sqlx::query("SELECT id, scan_policy FROM repositories WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// A repository's scan policy (JSON: pull blocking, hidden unfixed findings).
    pub async fn scan_policy(&self, repo_id: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT scan_policy FROM repositories WHERE id = $1")
            .bind(repo_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get::<Option<String>, _>(0)).transpose()?.flatten())
    }

    pub async fn set_scan_policy(&self, repo_id: i64, policy: Option<&str>) -> Result<()> {
        self.set_repo_column(repo_id, "UPDATE repositories SET scan_policy = $1 WHERE id = $2", policy).await
    }
}
