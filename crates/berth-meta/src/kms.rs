//! KMS keys, their material versions, aliases and tags (migration 0015), and the re-wrapping of
//! data keys after a rotation.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Meta, MetaError, Result, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKeyRow {
    pub key_id: String,
    pub account: String,
    pub arn: String,
    pub description: String,
    pub key_usage: String,
    pub key_spec: String,
    /// `CUSTOMER` or `AWS`.
    pub manager: String,
    /// `Enabled`, `Disabled` or `PendingDeletion`.
    pub state: String,
    pub created_at: i64,
    pub deletion_at: Option<i64>,
    pub pending_days: Option<i64>,
    pub rotation_enabled: bool,
    pub rotation_days: i64,
    pub next_rotation_at: Option<i64>,
    pub policy: String,
    pub multi_region: bool,
}

/// One version of a key's material, sealed under master key `master` (a fingerprint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsMaterialRow {
    pub version: i64,
    pub sealed: Vec<u8>,
    pub master: String,
    pub created_at: i64,
    pub on_demand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsAliasRow {
    pub name: String,
    pub key_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const KEY_COLS: &str = "key_id, account, arn, description, key_usage, key_spec, manager, state, created_at, \
                        deletion_at, pending_days, rotation_enabled, rotation_days, next_rotation_at, policy, multi_region";

fn key_row(r: &AnyRow) -> Result<KmsKeyRow> {
    Ok(KmsKeyRow {
        key_id: r.try_get(0)?,
        account: r.try_get(1)?,
        arn: r.try_get(2)?,
        description: r.try_get(3)?,
        key_usage: r.try_get(4)?,
        key_spec: r.try_get(5)?,
        manager: r.try_get(6)?,
        state: r.try_get(7)?,
        created_at: r.try_get(8)?,
        deletion_at: r.try_get(9)?,
        pending_days: r.try_get(10)?,
        rotation_enabled: r.try_get::<i64, _>(11)? != 0,
        rotation_days: r.try_get(12)?,
        next_rotation_at: r.try_get(13)?,
        policy: r.try_get(14)?,
        multi_region: r.try_get::<i64, _>(15)? != 0,
    })
}

fn alias_row(r: &AnyRow) -> Result<KmsAliasRow> {
    Ok(KmsAliasRow { name: r.try_get(0)?, key_id: r.try_get(1)?, created_at: r.try_get(2)?, updated_at: r.try_get(3)? })
}

impl Meta {
    /// Creates a key with its first material and tags; with `alias`, also that alias (the AWS-
    /// managed key is created with its alias, once per account: `false` if it exists already).
    pub async fn create_kms_key(
        &self,
        k: &KmsKeyRow,
        material: &KmsMaterialRow,
        tags: &[(String, String)],
        alias: Option<&str>,
    ) -> Result<bool> {
        let (k, m, tags, alias) = (k.clone(), material.clone(), tags.to_vec(), alias.map(str::to_string));
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                if let Some(a) = &alias {
                    let n = sqlx::query("SELECT 1 FROM kms_aliases WHERE account = $1 AND name = $2")
                        .bind(k.account.as_str())
                        .bind(a.as_str())
                        .fetch_optional(&mut *c)
                        .await?;
                    if n.is_some() {
                        return Ok(false);
                    }
                }
                let sql = format!("INSERT INTO kms_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(k.key_id.as_str())
                    .bind(k.account.as_str())
                    .bind(k.arn.as_str())
                    .bind(k.description.as_str())
                    .bind(k.key_usage.as_str())
                    .bind(k.key_spec.as_str())
                    .bind(k.manager.as_str())
                    .bind(k.state.as_str())
                    .bind(k.created_at)
                    .bind(k.deletion_at)
                    .bind(k.pending_days)
                    .bind(i64::from(k.rotation_enabled))
                    .bind(k.rotation_days)
                    .bind(k.next_rotation_at)
                    .bind(k.policy.as_str())
                    .bind(i64::from(k.multi_region))
                    .execute(&mut *c)
                    .await?;
                insert_material(c, &k.key_id, &m).await?;
                for (tk, tv) in &tags {
                    sqlx::query("INSERT INTO kms_tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3)")
                        .bind(k.key_id.as_str())
                        .bind(tk.as_str())
                        .bind(tv.as_str())
                        .execute(&mut *c)
                        .await?;
                }
                if let Some(a) = &alias {
                    sqlx::query(
                        "INSERT INTO kms_aliases (account, name, key_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
                    )
                    .bind(k.account.as_str())
                    .bind(a.as_str())
                    .bind(k.key_id.as_str())
                    .bind(now_ms())
                    .execute(&mut *c)
                    .await?;
                }
                Ok(true)
            })
        }))
        .await
    }

    pub async fn kms_key(&self, key_id: &str) -> Result<Option<KmsKeyRow>> {
        let sql = format!("SELECT {KEY_COLS} FROM kms_keys WHERE key_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key_id).fetch_optional(&self.read).await?;
        row.map(|r| key_row(&r)).transpose()
    }

    /// An account's keys in id order after `after`.
    pub async fn list_kms_keys(&self, account: &str, after: &str, limit: i64) -> Result<Vec<KmsKeyRow>> {
        let sql =
            format!("SELECT {KEY_COLS} FROM kms_keys WHERE account = $1 AND key_id > $2 ORDER BY key_id LIMIT $3");
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account).bind(after).bind(limit).fetch_all(&self.read).await?;
        rows.iter().map(key_row).collect()
    }

    /// Changes a key's row (state, rotation, policy, description: what the service decided).
    pub async fn update_kms_key(&self, k: &KmsKeyRow) -> Result<()> {
        let k = k.clone();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE kms_keys SET description = $2, state = $3, deletion_at = $4, pending_days = $5, \
                     rotation_enabled = $6, rotation_days = $7, next_rotation_at = $8, policy = $9 WHERE key_id = $1",
                )
                .bind(k.key_id.as_str())
                .bind(k.description.as_str())
                .bind(k.state.as_str())
                .bind(k.deletion_at)
                .bind(k.pending_days)
                .bind(i64::from(k.rotation_enabled))
                .bind(k.rotation_days)
                .bind(k.next_rotation_at)
                .bind(k.policy.as_str())
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(MetaError::NotFound(format!("key {}", k.key_id)));
                }
                Ok(())
            })
        }))
        .await
    }

    /// Deletes a key for good: its material (every data key it wrapped becomes unreadable),
    /// aliases and tags.
    pub async fn delete_kms_key(&self, key_id: &str) -> Result<()> {
        let key_id = key_id.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                for sql in [
                    "DELETE FROM kms_key_material WHERE key_id = $1",
                    "DELETE FROM kms_aliases WHERE key_id = $1",
                    "DELETE FROM kms_tags WHERE key_id = $1",
                    "DELETE FROM kms_keys WHERE key_id = $1",
                ] {
                    sqlx::query(sql).bind(key_id.as_str()).execute(&mut *c).await?;
                }
                Ok(())
            })
        }))
        .await
    }

    /// Keys whose state is `PendingDeletion` and whose date has come.
    pub async fn kms_keys_due_for_deletion(&self, now: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT key_id FROM kms_keys WHERE state = 'PendingDeletion' AND deletion_at <= $1")
            .bind(now)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Enabled keys with automatic rotation whose next rotation has come.
    pub async fn kms_keys_due_for_rotation(&self, now: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT key_id FROM kms_keys WHERE rotation_enabled = 1 AND state = 'Enabled' AND next_rotation_at <= $1",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    // ---- material ----

    /// Every material version of a key, oldest first.
    pub async fn kms_material(&self, key_id: &str) -> Result<Vec<KmsMaterialRow>> {
        let rows = sqlx::query(
            "SELECT version, sealed, master, created_at, on_demand FROM kms_key_material WHERE key_id = $1 ORDER BY version",
        )
        .bind(key_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KmsMaterialRow {
                    version: r.try_get(0)?,
                    sealed: r.try_get(1)?,
                    master: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    on_demand: r.try_get::<i64, _>(4)? != 0,
                })
            })
            .collect()
    }

    /// Adds a material version (a rotation) and moves the next automatic rotation to `next`.
    pub async fn add_kms_material(&self, key_id: &str, m: &KmsMaterialRow, next: Option<i64>) -> Result<()> {
        let (key_id, m) = (key_id.to_string(), m.clone());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                insert_material(c, &key_id, &m).await?;
                sqlx::query("UPDATE kms_keys SET next_rotation_at = $2 WHERE key_id = $1")
                    .bind(key_id.as_str())
                    .bind(next)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
        .await
    }

    // ---- aliases ----

    pub async fn kms_alias(&self, account: &str, name: &str) -> Result<Option<KmsAliasRow>> {
        let row = sqlx::query(
            "SELECT name, key_id, created_at, updated_at FROM kms_aliases WHERE account = $1 AND name = $2",
        )
        .bind(account)
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| alias_row(&r)).transpose()
    }

    /// An account's aliases (of one key, when given) in name order after `after`.
    pub async fn list_kms_aliases(
        &self,
        account: &str,
        key_id: Option<&str>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<KmsAliasRow>> {
        let rows = sqlx::query(
            "SELECT name, key_id, created_at, updated_at FROM kms_aliases WHERE account = $1 AND name > $2 \
             AND ($3 = '' OR key_id = $3) ORDER BY name LIMIT $4",
        )
        .bind(account)
        .bind(after)
        .bind(key_id.unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(alias_row).collect()
    }

    /// Creates an alias; [`MetaError::AlreadyExists`] when the name is taken.
    pub async fn create_kms_alias(&self, account: &str, name: &str, key_id: &str) -> Result<()> {
        let (account, name, key_id) = (account.to_string(), name.to_string(), key_id.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "INSERT INTO kms_aliases (account, name, key_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                     ON CONFLICT (account, name) DO NOTHING",
                )
                .bind(account.as_str())
                .bind(name.as_str())
                .bind(key_id.as_str())
                .bind(now_ms())
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(MetaError::AlreadyExists(name));
                }
                Ok(())
            })
        }))
        .await
    }

    /// Points an alias at another key; `false` if there is no such alias.
    pub async fn update_kms_alias(&self, account: &str, name: &str, key_id: &str) -> Result<bool> {
        let (account, name, key_id) = (account.to_string(), name.to_string(), key_id.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n =
                    sqlx::query("UPDATE kms_aliases SET key_id = $3, updated_at = $4 WHERE account = $1 AND name = $2")
                        .bind(account.as_str())
                        .bind(name.as_str())
                        .bind(key_id.as_str())
                        .bind(now_ms())
                        .execute(&mut *c)
                        .await?
                        .rows_affected();
                Ok(n > 0)
            })
        }))
        .await
    }

    pub async fn delete_kms_alias(&self, account: &str, name: &str) -> Result<bool> {
        let (account, name) = (account.to_string(), name.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM kms_aliases WHERE account = $1 AND name = $2")
                    .bind(account.as_str())
                    .bind(name.as_str())
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            })
        }))
        .await
    }

    // ---- tags ----

    pub async fn kms_tags(&self, key_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT tag_key, tag_value FROM kms_tags WHERE key_id = $1 ORDER BY tag_key")
            .bind(key_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Sets tags (replacing values of existing keys) and removes `remove`; refuses going past `max`.
    pub async fn change_kms_tags(
        &self,
        key_id: &str,
        set: &[(String, String)],
        remove: &[String],
        max: usize,
    ) -> Result<()> {
        let (key_id, set, remove) = (key_id.to_string(), set.to_vec(), remove.to_vec());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                for k in &remove {
                    sqlx::query("DELETE FROM kms_tags WHERE key_id = $1 AND tag_key = $2")
                        .bind(key_id.as_str())
                        .bind(k.as_str())
                        .execute(&mut *c)
                        .await?;
                }
                for (k, v) in &set {
                    sqlx::query(
                        "INSERT INTO kms_tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3) \
                         ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
                    )
                    .bind(key_id.as_str())
                    .bind(k.as_str())
                    .bind(v.as_str())
                    .execute(&mut *c)
                    .await?;
                }
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM kms_tags WHERE key_id = $1")
                    .bind(key_id.as_str())
                    .fetch_one(&mut *c)
                    .await?
                    .try_get(0)?;
                if n as usize > max {
                    return Err(MetaError::TooManyTags(max));
                }
                Ok(())
            })
        }))
        .await
    }

    // ---- re-wrapping ----

    /// Sealed copies whose data key is wrapped under `key_id` at a version below `version`.
    pub async fn objects_to_rewrap(
        &self,
        key_id: &str,
        version: i64,
        limit: i64,
    ) -> Result<Vec<(String, String, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT digest, scope, wrapped_key FROM blob_objects WHERE key_id = $1 AND key_version < $2 LIMIT $3",
        )
        .bind(key_id)
        .bind(version)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Replaces a copy's wrapped data key (the same data key, wrapped under newer material),
    /// unless it changed meanwhile (`old` must still be stored).
    pub async fn rewrap_object(
        &self,
        digest: &str,
        scope: &str,
        old: &[u8],
        key_id: &str,
        version: i64,
        wrapped: &[u8],
    ) -> Result<bool> {
        let (digest, scope, old, key_id, wrapped) =
            (digest.to_string(), scope.to_string(), old.to_vec(), key_id.to_string(), wrapped.to_vec());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE blob_objects SET key_id = $3, key_version = $4, wrapped_key = $5 \
                     WHERE digest = $1 AND scope = $2 AND wrapped_key = $6",
                )
                .bind(digest.as_str())
                .bind(scope.as_str())
                .bind(key_id.as_str())
                .bind(version)
                .bind(wrapped.as_slice())
                .bind(old.as_slice())
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n > 0)
            })
        }))
        .await
    }

    /// Repositories sealed under a KMS key (for its description and deletion).
    pub async fn repos_with_encryption_key(&self, key_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM repositories WHERE encryption_key = $1 ORDER BY name")
            .bind(key_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

async fn insert_material(c: &mut sqlx::AnyConnection, key_id: &str, m: &KmsMaterialRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO kms_key_material (key_id, version, sealed, master, created_at, on_demand) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key_id)
    .bind(m.version)
    .bind(m.sealed.as_slice())
    .bind(m.master.as_str())
    .bind(m.created_at)
    .bind(i64::from(m.on_demand))
    .execute(&mut *c)
    .await?;
    Ok(())
}
