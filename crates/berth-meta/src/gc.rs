//! Garbage collection's bookkeeping. A blob is `live`, `condemned` (no manifest referenced it
//! when collection last looked; anything that stores, mounts or references it again makes it
//! live) or `deleting` (its file is being removed; storing it again waits until it is gone).
//! Collection only looks at candidates — blobs that were stored, unlinked, or referenced by a
//! deleted manifest since it last looked — so its cost follows the garbage, not the registry.

use sqlx::Row;

use crate::{Meta, Result, now_ms};

/// Candidates are walked in digest order, this many at a time (a primary-key range scan).
const PAGE: i64 = 1000;
/// Each statement names at most this many blobs in an explicit list: small enough that a
/// primary-key lookup is the cheapest plan whatever PostgreSQL guesses of a table it has no
/// statistics for yet (with a long list and no statistics it chose to scan every row, per page:
/// 49 s for a sweep that found nothing).
const CHUNK: usize = 64;

/// `sql` with `{list}` made `$n, $n+1, ...` for `digests` (after `$1` when `lead` is given, bound
/// first), every value bound: only placeholders are ever formatted into a statement.
pub(crate) fn over_digests<'q>(
    sql: &str,
    lead: Option<i64>,
    digests: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let first = if lead.is_some() { 2 } else { 1 };
    let list = (first..first + digests.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.replace("{list}", &list)));
    if let Some(v) = lead {
        q = q.bind(v);
    }
    for d in digests {
        q = q.bind(d.as_str());
    }
    q
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

/// Blobs to delete now: digest and size; `next` continues the walk over candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSweep {
    pub blobs: Vec<(String, i64)>,
    pub next: Option<String>,
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

    /// One page of candidates after `after`, in digest order.
    async fn candidate_page(&self, after: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT digest FROM gc_candidates WHERE digest > $1 ORDER BY digest LIMIT $2")
            .bind(after)
            .bind(PAGE)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Condemns every live candidate no manifest references; forgets candidates that are
    /// referenced (a later manifest deletion makes them candidates again). A page of
    /// candidates per transaction.
    pub async fn gc_mark(&self) -> Result<GcMark> {
        let mut mark = GcMark::default();
        let mut after = String::new();
        loop {
            let page = self.candidate_page(&after).await?;
            let Some(last) = page.last().cloned() else { break };
            let n = page.len();
            mark.examined += n as u64;
            let (condemned, referenced) = self
                .write_tx(Box::new(move |c| {
                    Box::pin(async move {
                        let (mut condemned, mut referenced) = (0, 0);
                        let now = now_ms();
                        for chunk in page.chunks(CHUNK) {
                            let condemn = "UPDATE blobs SET state = 'condemned', condemned_at = $1 \
                                 WHERE digest IN ({list}) AND state = 'live' \
                                 AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = blobs.digest)";
                            condemned +=
                                over_digests(condemn, Some(now), chunk).execute(&mut *c).await?.rows_affected();
                            // A blob condemned while a manifest referencing it was being stored.
                            let revive = "UPDATE blobs SET state = 'live', condemned_at = NULL \
                                 WHERE digest IN ({list}) AND state = 'condemned' \
                                 AND EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = blobs.digest)";
                            over_digests(revive, None, chunk).execute(&mut *c).await?;
                            let forget = "DELETE FROM gc_candidates WHERE digest IN ({list}) AND NOT EXISTS \
                                 (SELECT 1 FROM blobs b WHERE b.digest = gc_candidates.digest AND b.state <> 'live')";
                            referenced += over_digests(forget, None, chunk).execute(&mut *c).await?.rows_affected();
                        }
                        Ok((condemned, referenced))
                    })
                }))
                .await?;
            mark.condemned += condemned;
            mark.referenced += referenced;
            if (n as i64) < PAGE {
                break;
            }
            after = last;
        }
        Ok(mark)
    }

    /// Blobs condemned before `cutoff` (Unix ms) and still unreferenced, at most about `limit`,
    /// walking candidates after `after`: marked `deleting` (in `dry_run`, only listed). The first
    /// call (no `after`) also returns those a crashed collection left `deleting`.
    pub async fn gc_sweep(&self, cutoff: i64, after: Option<&str>, limit: i64, dry_run: bool) -> Result<GcSweep> {
        let mut out = Vec::new();
        if after.is_none() && !dry_run {
            let rows = sqlx::query("SELECT digest, size FROM blobs WHERE state = 'deleting' LIMIT $1")
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
            for r in &rows {
                out.push((r.try_get(0)?, r.try_get(1)?));
            }
        }
        let mut cursor = after.unwrap_or_default().to_string();
        while (out.len() as i64) < limit {
            let page = self.candidate_page(&cursor).await?;
            let Some(last) = page.last().cloned() else { return Ok(GcSweep { blobs: out, next: None }) };
            let full = page.len() as i64 == PAGE;
            let rows = self
                .write_tx(Box::new(move |c| {
                    Box::pin(async move {
                        let mut out = Vec::new();
                        // `state` is tested on the row itself: on PostgreSQL an update that waited
                        // for a manifest push reviving the blob re-checks it and leaves the blob alone.
                        let sql = if dry_run {
                            "SELECT digest, size FROM blobs WHERE digest IN ({list}) AND state = 'condemned' \
                             AND condemned_at < $1 \
                             AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = blobs.digest)"
                        } else {
                            "UPDATE blobs SET state = 'deleting' WHERE digest IN ({list}) \
                             AND state = 'condemned' AND condemned_at < $1 \
                             AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = blobs.digest) \
                             RETURNING digest, size"
                        };
                        for chunk in page.chunks(CHUNK) {
                            for r in over_digests(sql, Some(cutoff), chunk).fetch_all(&mut *c).await? {
                                out.push((r.try_get(0)?, r.try_get(1)?));
                            }
                        }
                        Ok::<Vec<(String, i64)>, crate::MetaError>(out)
                    })
                }))
                .await?;
            out.extend(rows);
            cursor = last;
            if !full {
                return Ok(GcSweep { blobs: out, next: None });
            }
        }
        Ok(GcSweep { blobs: out, next: Some(cursor) })
    }

    /// Forgets blobs whose files are deleted: their rows, repository links and candidacy.
    pub async fn gc_forget(&self, digests: Vec<String>) -> Result<u64> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let mut n = 0;
                for chunk in digests.chunks(CHUNK) {
                    for sql in [
                        "DELETE FROM repo_blobs WHERE digest IN ({list})",
                        "DELETE FROM gc_candidates WHERE digest IN ({list})",
                        "DELETE FROM layer_scans WHERE digest IN ({list})",
                        "DELETE FROM blob_objects WHERE digest IN ({list})",
                    ] {
                        over_digests(sql, None, chunk).execute(&mut *c).await?;
                    }
                    let blobs = "DELETE FROM blobs WHERE digest IN ({list}) AND state = 'deleting'";
                    n += over_digests(blobs, None, chunk).execute(&mut *c).await?.rows_affected();
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

    /// Uploads not touched since `cutoff` (Unix ms): their ids and blob-store states.
    pub async fn stale_uploads(&self, cutoff: i64, limit: i64) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        let rows =
            sqlx::query("SELECT id, backend_state FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2")
                .bind(cutoff)
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
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
