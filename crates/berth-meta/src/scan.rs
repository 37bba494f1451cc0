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

    pub async fn put_scan(&self, repo_id: i64, digest: &str, row: &ScanRow) -> Result<()> {
        let (digest, r) = (digest.to_string(), row.clone());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO image_scans (repo_id, digest, status, description, findings, packages, started_at, \
                     completed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (repo_id, digest) DO UPDATE SET \
                     status = excluded.status, description = excluded.description, findings = excluded.findings, \
                     packages = excluded.packages, started_at = excluded.started_at, completed_at = excluded.completed_at",
                )
                .bind(repo_id)
                .bind(digest.as_str())
                .bind(r.status.as_str())
                .bind(r.description.as_deref())
                .bind(r.findings.as_deref())
                .bind(r.packages)
                .bind(r.started_at)
                .bind(r.completed_at)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

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
            })
        })
        .transpose()
    }
}
