//! Vulnerability records (OSV JSON, stored per affected package) and image scan results.

use sqlx::Row;

use crate::{Meta, Result, now_ms};

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

/// A claimed scan job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanJob {
    pub repo_id: i64,
    pub digest: String,
    /// When it was queued: identifies this request for a scan among later ones.
    pub started_at: i64,
    /// This claim's number (1 for the first).
    pub attempts: i64,
    /// The repository key.
    pub repo: String,
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

    /// Queues a scan of an image (replacing any earlier result): the row is the job until a
    /// worker finishes it.
    pub async fn queue_scan(&self, repo_id: i64, digest: &str, started_at: i64) -> Result<()> {
        let digest = digest.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO image_scans (repo_id, digest, status, description, findings, packages, started_at, \
                     completed_at, claimed_by, claimed_until, attempts, inventory) VALUES ($1, $2, 'IN_PROGRESS', \
                     'The scan is in progress.', NULL, NULL, $3, NULL, NULL, NULL, 0, NULL) \
                     ON CONFLICT (repo_id, digest) DO UPDATE SET status = 'IN_PROGRESS', \
                     description = excluded.description, findings = NULL, packages = NULL, \
                     started_at = excluded.started_at, completed_at = NULL, claimed_by = NULL, claimed_until = NULL, \
                     attempts = 0, inventory = NULL",
                )
                .bind(repo_id)
                .bind(digest.as_str())
                .bind(started_at)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Claims the oldest queued scan no live node holds, for `node` until `until` (ms).
    pub async fn claim_scan(&self, node: &str, now: i64, until: i64) -> Result<Option<ScanJob>> {
        let node = node.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT s.repo_id, s.digest, s.started_at, s.attempts, r.name FROM image_scans s \
                     JOIN repositories r ON r.id = s.repo_id WHERE s.status = 'IN_PROGRESS' \
                     AND (s.claimed_until IS NULL OR s.claimed_until < $1) ORDER BY s.started_at LIMIT 8",
                )
                .bind(now)
                .fetch_all(&mut *c)
                .await?;
                for r in rows {
                    let job = ScanJob {
                        repo_id: r.try_get(0)?,
                        digest: r.try_get(1)?,
                        started_at: r.try_get(2)?,
                        attempts: r.try_get::<i64, _>(3)? + 1,
                        repo: r.try_get(4)?,
                    };
                    // Another node may have claimed it since the read; the predicate settles who.
                    let n = sqlx::query(
                        "UPDATE image_scans SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
                         WHERE repo_id = $3 AND digest = $4 AND status = 'IN_PROGRESS' AND started_at = $5 \
                         AND (claimed_until IS NULL OR claimed_until < $6)",
                    )
                    .bind(node.as_str())
                    .bind(until)
                    .bind(job.repo_id)
                    .bind(job.digest.as_str())
                    .bind(job.started_at)
                    .bind(now)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                    if n == 1 {
                        return Ok(Some(job));
                    }
                }
                Ok(None)
            })
        }))
        .await
    }

    /// Extends `node`'s claim on a scan; false when the job is no longer its (requeued or gone).
    pub async fn renew_scan(&self, job: &ScanJob, node: &str, until: i64) -> Result<bool> {
        let (job, node) = (job.clone(), node.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE image_scans SET claimed_until = $1 WHERE repo_id = $2 AND digest = $3 \
                     AND started_at = $4 AND claimed_by = $5 AND status = 'IN_PROGRESS'",
                )
                .bind(until)
                .bind(job.repo_id)
                .bind(job.digest.as_str())
                .bind(job.started_at)
                .bind(node.as_str())
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// Stores a scan's outcome, unless the job was queued again since it was claimed.
    pub async fn finish_scan(&self, job: &ScanJob, row: &ScanRow) -> Result<bool> {
        let (job, r) = (job.clone(), row.clone());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
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
                .bind(job.repo_id)
                .bind(job.digest.as_str())
                .bind(job.started_at)
                .execute(&mut *c)
                .await?
                .rows_affected();
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
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN claimed_until >= $1 THEN 1 ELSE 0 END), 0) FROM image_scans \
             WHERE status = 'IN_PROGRESS'",
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
