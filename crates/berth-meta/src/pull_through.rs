//! Pull-through cache rules (a JSON body per registry and prefix) and the secrets their upstream
//! credentials live in (sealed by the service before they get here).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Meta, Result, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    pub prefix: String,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub description: Option<String>,
    /// The value, sealed.
    pub sealed: String,
    /// The current version's id (None: written before versions were kept).
    pub version_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn rule_row(r: &AnyRow) -> Result<RuleRow> {
    Ok(RuleRow { prefix: r.try_get(0)?, body: r.try_get(1)?, created_at: r.try_get(2)?, updated_at: r.try_get(3)? })
}

/// A registry's rule by prefix, inside a transaction.
async fn rule_in(c: &mut sqlx::AnyConnection, registry: &str, prefix: &str) -> Result<Option<RuleRow>> {
    let row = sqlx::query(
        "SELECT prefix, body, created_at, updated_at FROM pull_through_rules WHERE registry_id = $1 AND prefix = $2",
    )
    .bind(registry)
    .bind(prefix)
    .fetch_optional(&mut *c)
    .await?;
    row.as_ref().map(rule_row).transpose()
}

const SECRET_COLS: &str = "arn, account, name, description, sealed, created_at, updated_at, version_id";

fn secret_row(r: &AnyRow) -> Result<SecretRow> {
    Ok(SecretRow {
        arn: r.try_get(0)?,
        account: r.try_get(1)?,
        name: r.try_get(2)?,
        description: r.try_get(3)?,
        sealed: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
        version_id: r.try_get(7)?,
    })
}

impl Meta {
    /// Adds a rule; false when the prefix has one already.
    pub async fn insert_pull_through_rule(&self, registry: &str, prefix: &str, body: &str) -> Result<bool> {
        let (registry, prefix, body) = (registry.to_string(), prefix.to_string(), body.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let n = sqlx::query(
                    "INSERT INTO pull_through_rules (registry_id, prefix, body, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (registry_id, prefix) DO NOTHING",
                )
                .bind(registry.as_str())
                .bind(prefix.as_str())
                .bind(body.as_str())
                .bind(now)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// The registry's rules, by prefix.
    pub async fn pull_through_rules(&self, registry: &str) -> Result<Vec<RuleRow>> {
        let rows = sqlx::query(
            "SELECT prefix, body, created_at, updated_at FROM pull_through_rules WHERE registry_id = $1 ORDER BY prefix",
        )
        .bind(registry)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(rule_row).collect()
    }

    /// Replaces a rule's body; the rule as it is now (None: no such rule).
    pub async fn update_pull_through_rule(&self, registry: &str, prefix: &str, body: &str) -> Result<Option<RuleRow>> {
        let (registry, prefix, body) = (registry.to_string(), prefix.to_string(), body.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE pull_through_rules SET body = $1, updated_at = $2 WHERE registry_id = $3 AND prefix = $4",
                )
                .bind(body.as_str())
                .bind(now_ms())
                .bind(registry.as_str())
                .bind(prefix.as_str())
                .execute(&mut *c)
                .await?;
                rule_in(c, &registry, &prefix).await
            })
        }))
        .await
    }

    /// Removes a rule; what it was (None: no such rule).
    pub async fn delete_pull_through_rule(&self, registry: &str, prefix: &str) -> Result<Option<RuleRow>> {
        let (registry, prefix) = (registry.to_string(), prefix.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let Some(row) = rule_in(c, &registry, &prefix).await? else { return Ok(None) };
                sqlx::query("DELETE FROM pull_through_rules WHERE registry_id = $1 AND prefix = $2")
                    .bind(registry.as_str())
                    .bind(prefix.as_str())
                    .execute(&mut *c)
                    .await?;
                Ok(Some(row))
            })
        }))
        .await
    }

    /// Stores a new secret; false when the account has one of that name.
    pub async fn insert_secret(&self, s: &SecretRow) -> Result<bool> {
        let s = s.clone();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "INSERT INTO secrets (arn, account, name, description, sealed, created_at, updated_at, version_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .bind(s.arn.as_str())
                .bind(s.account.as_str())
                .bind(s.name.as_str())
                .bind(s.description.as_deref())
                .bind(s.sealed.as_str())
                .bind(s.created_at)
                .bind(s.updated_at)
                .bind(s.version_id.as_deref())
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// A secret of `account` by name or ARN.
    pub async fn secret(&self, account: &str, id: &str) -> Result<Option<SecretRow>> {
        let sql = format!("SELECT {SECRET_COLS} FROM secrets WHERE account = $1 AND (name = $2 OR arn = $2)");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account).bind(id).fetch_optional(&self.read).await?;
        row.as_ref().map(secret_row).transpose()
    }

    /// The account's secrets, by name.
    pub async fn secrets(&self, account: &str) -> Result<Vec<SecretRow>> {
        let sql = format!("SELECT {SECRET_COLS} FROM secrets WHERE account = $1 ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account).fetch_all(&self.read).await?;
        rows.iter().map(secret_row).collect()
    }

    /// Replaces a secret's sealed value and version; false when there is no such secret.
    pub async fn set_secret_value(&self, arn: &str, sealed: &str, version_id: &str) -> Result<bool> {
        let (arn, sealed, version) = (arn.to_string(), sealed.to_string(), version_id.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query("UPDATE secrets SET sealed = $1, version_id = $2, updated_at = $3 WHERE arn = $4")
                    .bind(sealed.as_str())
                    .bind(version.as_str())
                    .bind(now_ms())
                    .bind(arn.as_str())
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// Replaces a secret's description; false when there is no such secret.
    pub async fn set_secret_description(&self, arn: &str, description: Option<&str>) -> Result<bool> {
        let (arn, description) = (arn.to_string(), description.map(str::to_string));
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query("UPDATE secrets SET description = $1, updated_at = $2 WHERE arn = $3")
                    .bind(description.as_deref())
                    .bind(now_ms())
                    .bind(arn.as_str())
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    pub async fn delete_secret(&self, arn: &str) -> Result<bool> {
        let arn = arn.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM secrets WHERE arn = $1")
                    .bind(arn.as_str())
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }
}
