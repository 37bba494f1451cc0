//! Replication's own rows: where each image stands at each destination, and which other
//! repositories hold a blob (a destination may mount it from one of them instead of receiving it).

use sqlx::Row;

use crate::{Meta, Result, now_ms};

/// One image at one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatusRow {
    pub region: String,
    pub registry_id: String,
    /// `IN_PROGRESS`, `COMPLETE` or `FAILED`.
    pub status: String,
    pub failure_code: Option<String>,
    pub updated_at: i64,
}

impl Meta {
    /// Records where image `digest` of repository `repo` stands at a destination.
    pub async fn set_replication_status(
        &self,
        repo: &str,
        digest: &str,
        region: &str,
        registry_id: &str,
        status: &str,
        failure_code: Option<&str>,
    ) -> Result<()> {
        let v: Vec<String> = [repo, digest, region, registry_id, status].iter().map(|s| s.to_string()).collect();
        let failure = failure_code.map(str::to_string);
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO replication_status (repo, digest, region, registry_id, status, failure_code, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (repo, digest, region, registry_id) \
                     DO UPDATE SET status = excluded.status, failure_code = excluded.failure_code, \
                     updated_at = excluded.updated_at",
                )
                .bind(v[0].as_str())
                .bind(v[1].as_str())
                .bind(v[2].as_str())
                .bind(v[3].as_str())
                .bind(v[4].as_str())
                .bind(failure.as_deref())
                .bind(now_ms())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Where image `digest` of `repo` stands at each destination it was queued for.
    pub async fn replication_statuses(&self, repo: &str, digest: &str) -> Result<Vec<ReplicationStatusRow>> {
        let rows = sqlx::query(
            "SELECT region, registry_id, status, failure_code, updated_at FROM replication_status \
             WHERE repo = $1 AND digest = $2 ORDER BY region, registry_id",
        )
        .bind(repo)
        .bind(digest)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicationStatusRow {
                    region: r.try_get(0)?,
                    registry_id: r.try_get(1)?,
                    status: r.try_get(2)?,
                    failure_code: r.try_get(3)?,
                    updated_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Forgets the statuses of an image that was deleted.
    pub async fn delete_replication_statuses(&self, repo: &str, digest: &str) -> Result<()> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM replication_status WHERE repo = $1 AND digest = $2")
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Up to `limit` repositories other than `except` that hold blob `digest`, by name.
    pub async fn repos_with_blob(&self, digest: &str, except: &str, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT r.name FROM repo_blobs l JOIN repositories r ON r.id = l.repo_id \
             WHERE l.digest = $1 AND r.name <> $2 ORDER BY r.name LIMIT $3",
        )
        .bind(digest)
        .bind(except)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

impl Meta {
    /// Whether manifest `digest` of repository `repo_id` is a child of an index there (then it
    /// travels with that index).
    pub async fn is_child_manifest(&self, repo_id: i64, digest: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM manifest_children WHERE repo_id = $1 AND child_digest = $2 LIMIT 1")
            .bind(repo_id)
            .bind(digest)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.is_some())
    }
}
