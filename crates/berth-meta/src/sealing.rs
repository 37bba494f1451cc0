//! Where each blob's sealed copies are stored and the wrapped data keys that open them (see
//! migration 0014). A blob has at most one copy per key scope; which scope a repository reads
//! from is its `encryption_key` ('' when it has none: the registry's default key).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Meta, MetaError, Result, now_ms};

/// One sealed copy of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobObject {
    /// '' for the registry's default key, else a KMS key id.
    pub scope: String,
    /// The name the copy is stored under.
    pub object: String,
    /// What the data key is wrapped under, and at which material version.
    pub key_id: String,
    pub key_version: i64,
    pub wrapped_key: Vec<u8>,
}

/// A blob as a repository reads it: its size, and its sealed copy for the repository's scope
/// (`None`: stored in the clear under its digest, from before encryption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoBlob {
    pub size: i64,
    pub object: Option<BlobObject>,
}

const OBJECT_COLUMNS: &str = "o.scope, o.object, o.key_id, o.key_version, o.wrapped_key";

fn object_at(r: &AnyRow, at: usize) -> Result<Option<BlobObject>> {
    let object: Option<String> = r.try_get(at + 1)?;
    let Some(object) = object else { return Ok(None) };
    Ok(Some(BlobObject {
        scope: r.try_get(at)?,
        object,
        key_id: r.try_get(at + 2)?,
        key_version: r.try_get(at + 3)?,
        wrapped_key: r.try_get(at + 4)?,
    }))
}

/// Records a copy unless the blob already has one for its scope; returns whether it was recorded.
pub(crate) async fn insert_object_in(conn: &mut AnyConnection, digest: &str, o: &BlobObject) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO blob_objects (digest, scope, object, key_id, key_version, wrapped_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (digest, scope) DO NOTHING",
    )
    .bind(digest)
    .bind(o.scope.as_str())
    .bind(o.object.as_str())
    .bind(o.key_id.as_str())
    .bind(o.key_version)
    .bind(o.wrapped_key.as_slice())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

impl Meta {
    /// A blob linked into the repository, with its copy for the repository's scope.
    pub async fn repo_blob_object(&self, repo_id: i64, digest: &str) -> Result<Option<RepoBlob>> {
        let sql = format!(
            "SELECT b.size, {OBJECT_COLUMNS} FROM repo_blobs l JOIN blobs b ON b.digest = l.digest \
             JOIN repositories r ON r.id = l.repo_id \
             LEFT JOIN blob_objects o ON o.digest = l.digest AND o.scope = COALESCE(r.encryption_key, '') \
             WHERE l.repo_id = $1 AND l.digest = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(repo_id).bind(digest).fetch_optional(&self.read).await?;
        row.map(|r| Ok(RepoBlob { size: r.try_get(0)?, object: object_at(&r, 1)? })).transpose()
    }

    /// A blob's copy for `scope`, if it has one.
    pub async fn blob_object(&self, digest: &str, scope: &str) -> Result<Option<BlobObject>> {
        let sql = format!("SELECT {OBJECT_COLUMNS} FROM blob_objects o WHERE o.digest = $1 AND o.scope = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(digest).bind(scope).fetch_optional(&self.read).await?;
        Ok(row.map(|r| object_at(&r, 0)).transpose()?.flatten())
    }

    /// Any sealed copy of a blob, with the blob's size (for readers outside a repository: the
    /// scanner, verification).
    pub async fn any_blob_object(&self, digest: &str) -> Result<Option<(i64, BlobObject)>> {
        let sql = format!(
            "SELECT b.size, {OBJECT_COLUMNS} FROM blob_objects o JOIN blobs b ON b.digest = o.digest \
             WHERE o.digest = $1 ORDER BY o.scope LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(digest).fetch_optional(&self.read).await?;
        let Some(r) = row else { return Ok(None) };
        object_at(&r, 1)?.map(|o| Ok::<_, MetaError>((r.try_get(0)?, o))).transpose()
    }

    /// The stored names of every copy of these blobs (for deleting them).
    pub async fn blob_objects_of(&self, digests: &[String]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in digests.chunks(64) {
            for r in
                crate::gc::over_digests("SELECT digest, object FROM blob_objects WHERE digest IN ({list})", None, chunk)
                    .fetch_all(&self.read)
                    .await?
            {
                out.push((r.try_get(0)?, r.try_get(1)?));
            }
        }
        Ok(out)
    }

    /// Every sealed copy with its blob's size, by digest (for verification).
    pub async fn all_blob_objects(&self) -> Result<Vec<(String, i64, BlobObject)>> {
        let sql = format!(
            "SELECT o.digest, b.size, {OBJECT_COLUMNS} FROM blob_objects o JOIN blobs b ON b.digest = o.digest \
             WHERE b.state <> 'deleting' ORDER BY o.digest, o.scope"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    object_at(r, 2)?.ok_or_else(|| MetaError::NotFound("blob object".into()))?,
                ))
            })
            .collect()
    }

    /// Blobs still stored in the clear, in digest order after `after`.
    pub async fn plain_blobs(&self, after: &str, limit: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT digest, size FROM blobs WHERE in_clear = 1 AND digest > $1 AND state <> 'deleting' \
             ORDER BY digest LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// How many blobs are still stored in the clear, and their bytes.
    pub async fn count_plain_blobs(&self) -> Result<(i64, i64)> {
        let r = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs WHERE in_clear = 1 AND state <> 'deleting'",
        )
        .fetch_one(&self.read)
        .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }

    /// Whether a blob is (also) stored in the clear under its digest.
    pub async fn blob_in_clear(&self, digest: &str) -> Result<bool> {
        let r = sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 AND in_clear = 1")
            .bind(digest)
            .fetch_optional(&self.read)
            .await?;
        Ok(r.is_some())
    }

    /// Every blob stored in the clear (for verification).
    pub async fn clear_blobs(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT digest FROM blobs WHERE in_clear = 1").fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The blob's copy in the clear is gone (sealed, then deleted).
    pub async fn forget_clear_copy(&self, digest: &str) -> Result<()> {
        let digest = digest.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE blobs SET in_clear = 0 WHERE digest = $1")
                    .bind(digest.as_str())
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Records a sealed copy of a stored blob (sealing one kept in the clear). `false`: the blob
    /// already has one for that scope, or is gone or being deleted (the copy is then not needed).
    pub async fn add_blob_object(&self, digest: &str, o: &BlobObject) -> Result<bool> {
        let (digest, o) = (digest.to_string(), o.clone());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let state = sqlx::query("SELECT state FROM blobs WHERE digest = $1")
                    .bind(digest.as_str())
                    .fetch_optional(&mut *c)
                    .await?;
                let alive = match state {
                    Some(r) => r.try_get::<String, _>(0)? != "deleting",
                    None => false,
                };
                if !alive {
                    return Ok(false);
                }
                insert_object_in(c, &digest, &o).await
            })
        }))
        .await
    }

    /// Every key data keys are wrapped under.
    pub async fn blob_object_key_ids(&self) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT DISTINCT key_id FROM blob_objects ORDER BY key_id").fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The KMS key a repository is sealed under (`None`: the registry's default key).
    pub async fn repo_encryption_key(&self, repo_id: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT encryption_key FROM repositories WHERE id = $1")
            .bind(repo_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.flatten())
    }
}
