//! Garbage collection's bookkeeping. A blob is `live`, `condemned` (no manifest referenced it
//! when collection last looked; anything that stores, mounts or references it again makes it
//! live) or `deleting` (its file is being removed; storing it again waits until it is gone).
//! Collection only looks at candidates — blobs that were stored, unlinked, or referenced by a
//! deleted manifest since it last looked — so its cost follows the garbage, not the registry.

use sqlx::Row;

use crate::{Meta, Result, now_ms};

/// Blobs a sweep may delete: condemned before `$1`, still candidates, still unreferenced.
macro_rules! doomed {
    () => {
        "state = 'condemned' AND condemned_at < $1 AND digest IN (SELECT digest FROM gc_candidates) \
         AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = blobs.digest)"
    };
}

/// What a mark pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcMark {
    /// Candidates looked at.
    pub examined: u64,
    /// Blobs newly condemned (unreferenced).
    pub condemned: u64,
    /// Candidates dropped because something references them (or they are gone).
    pub referenced: u64,
}

/// Blobs to delete now: digest and size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSweep {
    pub blobs: Vec<(String, i64)>,
}

impl Meta {
    /// Before a blob's file is put in place: revives the blob if collection condemned it, and
    /// fails with [`crate::MetaError::BlobDeleting`] while a collection deletes it. A blob not
    /// recorded yet stays unrecorded until its file is in place (a crash in between then leaves
    /// only an unrecorded file, never a record without its file).
    pub async fn claim_blob(&self, digest: &str) -> Result<()> {
        let digest = digest.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE blobs SET state = 'live', condemned_at = NULL WHERE digest = $1 AND state = 'condemned'",
                )
                .bind(digest.as_str())
                .execute(&mut *c)
                .await?;
                let state: Option<String> = sqlx::query("SELECT state FROM blobs WHERE digest = $1")
                    .bind(digest.as_str())
                    .fetch_optional(&mut *c)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                if state.as_deref() == Some("deleting") {
                    return Err(crate::MetaError::BlobDeleting(digest));
                }
                Ok(())
            })
        }))
        .await
    }

    /// Condemns every live candidate no manifest references; forgets candidates that are
    /// referenced (a later manifest deletion makes them candidates again).
    pub async fn gc_mark(&self) -> Result<GcMark> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let examined: i64 =
                    sqlx::query("SELECT COUNT(*) FROM gc_candidates").fetch_one(&mut *c).await?.try_get(0)?;
                let condemned = sqlx::query(
                    "UPDATE blobs SET state = 'condemned', condemned_at = $1 WHERE state = 'live' \
                     AND digest IN (SELECT digest FROM gc_candidates) \
                     AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = blobs.digest)",
                )
                .bind(now_ms())
                .execute(&mut *c)
                .await?
                .rows_affected();
                // A blob condemned while a manifest referencing it was being stored.
                sqlx::query(
                    "UPDATE blobs SET state = 'live', condemned_at = NULL WHERE state = 'condemned' \
                     AND digest IN (SELECT digest FROM gc_candidates) \
                     AND EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = blobs.digest)",
                )
                .execute(&mut *c)
                .await?;
                let referenced = sqlx::query(
                    "DELETE FROM gc_candidates WHERE NOT EXISTS \
                     (SELECT 1 FROM blobs b WHERE b.digest = gc_candidates.digest AND b.state <> 'live')",
                )
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(GcMark { examined: examined as u64, condemned, referenced })
            })
        }))
        .await
    }

    /// Blobs condemned before `cutoff` (Unix ms) and still unreferenced, at most `limit`: marked
    /// `deleting` (in `dry_run`, only listed). Also returns those a crashed collection left
    /// `deleting`.
    pub async fn gc_sweep(&self, cutoff: i64, limit: i64, dry_run: bool) -> Result<GcSweep> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                if dry_run {
                    let rows = sqlx::query(concat!("SELECT digest, size FROM blobs WHERE ", doomed!(), " LIMIT $2"))
                        .bind(cutoff)
                        .bind(limit)
                        .fetch_all(&mut *c)
                        .await?;
                    let blobs = rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_>>()?;
                    return Ok(GcSweep { blobs });
                }
                sqlx::query(concat!(
                    // `state` is tested on the row itself too: on PostgreSQL an update that waited
                    // for a manifest push reviving the blob re-checks it and leaves the blob alone.
                    "UPDATE blobs SET state = 'deleting' WHERE state = 'condemned' AND digest IN \
                     (SELECT digest FROM blobs WHERE ",
                    doomed!(),
                    " LIMIT $2)"
                ))
                .bind(cutoff)
                .bind(limit)
                .execute(&mut *c)
                .await?;
                let rows = sqlx::query("SELECT digest, size FROM blobs WHERE state = 'deleting' LIMIT $1")
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await?;
                let blobs = rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_>>()?;
                Ok(GcSweep { blobs })
            })
        }))
        .await
    }

    /// Forgets blobs whose files are deleted: their rows, repository links and candidacy.
    pub async fn gc_forget(&self, digests: Vec<String>) -> Result<u64> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let mut n = 0;
                for d in &digests {
                    for sql in [
                        "DELETE FROM repo_blobs WHERE digest = $1",
                        "DELETE FROM gc_candidates WHERE digest = $1",
                        "DELETE FROM layer_scans WHERE digest = $1",
                    ] {
                        sqlx::query(sql).bind(d.as_str()).execute(&mut *c).await?;
                    }
                    n += sqlx::query("DELETE FROM blobs WHERE digest = $1 AND state = 'deleting'")
                        .bind(d.as_str())
                        .execute(&mut *c)
                        .await?
                        .rows_affected();
                }
                Ok(n)
            })
        }))
        .await
    }

    /// A blob's collection state (`live`, `condemned`, `deleting`), if recorded.
    pub async fn blob_state(&self, digest: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT state FROM blobs WHERE digest = $1").bind(digest).fetch_optional(&self.read).await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// Uploads not touched since `cutoff` (Unix ms): their ids.
    pub async fn stale_uploads(&self, cutoff: i64, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2")
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Counts for reports and tests: blobs by state, and candidates waiting.
    pub async fn gc_counts(&self) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for state in ["live", "condemned", "deleting"] {
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM blobs WHERE state = $1")
                .bind(state)
                .fetch_one(&self.read)
                .await?
                .try_get(0)?;
            out.push((state.to_string(), n));
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM gc_candidates").fetch_one(&self.read).await?.try_get(0)?;
        out.push(("candidates".to_string(), n));
        Ok(out)
    }

    /// Blobs that no manifest references and that were stored before `cutoff` (Unix ms): what
    /// a complete collection with that grace would have removed. For checks and tests; scans
    /// every blob.
    pub async fn unreferenced_blobs_before(&self, cutoff: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT digest FROM blobs b WHERE b.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = b.digest)",
        )
        .bind(cutoff)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}
