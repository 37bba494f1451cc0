//! Lifecycle policies, their previews, and the expiry of an image as one transaction.

use std::collections::HashSet;

use sqlx::{AnyConnection, Row};

use crate::{Meta, Result, delete_manifest_rows, now_ms};

/// A stored preview: the policy it evaluated, its status, its results (JSON, the service's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRow {
    pub policy: String,
    pub status: String,
    pub results: String,
    pub created_at: i64,
}

impl Meta {
    pub async fn set_lifecycle_policy(&self, repo_id: i64, policy: Option<&str>) -> Result<()> {
        self.set_repo_column(repo_id, "UPDATE repositories SET lifecycle_policy = $1 WHERE id = $2", policy).await
    }

    /// The policy text and when it was last evaluated.
    pub async fn lifecycle_policy(&self, repo_id: i64) -> Result<Option<(String, Option<i64>)>> {
        let row = sqlx::query(
            "SELECT lifecycle_policy, lifecycle_evaluated_at FROM repositories WHERE id = $1 AND lifecycle_policy IS NOT NULL",
        )
        .bind(repo_id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    pub async fn set_lifecycle_evaluated(&self, repo_id: i64, at: i64) -> Result<()> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE repositories SET lifecycle_evaluated_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(repo_id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Repositories (id, key) that have a lifecycle policy.
    pub async fn repos_with_lifecycle(&self) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT id, name FROM repositories WHERE lifecycle_policy IS NOT NULL ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub async fn put_lifecycle_preview(&self, repo_id: i64, policy: &str, status: &str, results: &str) -> Result<()> {
        let (policy, status, results) = (policy.to_string(), status.to_string(), results.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO lifecycle_previews (repo_id, policy, status, results, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (repo_id) DO UPDATE SET policy = excluded.policy, \
                     status = excluded.status, results = excluded.results, created_at = excluded.created_at",
                )
                .bind(repo_id)
                .bind(policy.as_str())
                .bind(status.as_str())
                .bind(results.as_str())
                .bind(now_ms())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    pub async fn lifecycle_preview(&self, repo_id: i64) -> Result<Option<PreviewRow>> {
        let row = sqlx::query("SELECT policy, status, results, created_at FROM lifecycle_previews WHERE repo_id = $1")
            .bind(repo_id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            Ok(PreviewRow {
                policy: r.try_get(0)?,
                status: r.try_get(1)?,
                results: r.try_get(2)?,
                created_at: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Every (index, child) pair in a repository.
    pub async fn manifest_edges(&self, repo_id: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT parent_digest, child_digest FROM manifest_children WHERE repo_id = $1")
            .bind(repo_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Deletes image `digest` together with what exists only for it — the artifacts whose
    /// `subject` it is (recursively) and the index children no other manifest holds and no tag
    /// names — in one transaction, so a crash leaves it whole or gone. Nothing happens (empty
    /// result) if the image is gone, is now an index's child, or its tags are no longer
    /// `expected_tags` (a push moved a tag onto it since it was evaluated).
    pub async fn expire_image(&self, repo_id: i64, digest: &str, expected_tags: &[String]) -> Result<Vec<String>> {
        let (digest, mut expected) = (digest.to_string(), expected_tags.to_vec());
        expected.sort();
        self.write_tx_events(Box::new(move |c| {
            Box::pin(async move { expire_in(c, repo_id, &digest, &expected).await })
        }))
        .await
    }
}

async fn strings(c: &mut AnyConnection, sql: &'static str, repo_id: i64, digest: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(sql).bind(repo_id).bind(digest).fetch_all(&mut *c).await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

async fn expire_in(c: &mut AnyConnection, repo_id: i64, digest: &str, expected: &[String]) -> Result<Vec<String>> {
    let exists = strings(c, "SELECT digest FROM manifests WHERE repo_id = $1 AND digest = $2", repo_id, digest).await?;
    let mut tags =
        strings(c, "SELECT name FROM tags WHERE repo_id = $1 AND manifest_digest = $2", repo_id, digest).await?;
    tags.sort();
    let parents = strings(
        c,
        "SELECT parent_digest FROM manifest_children WHERE repo_id = $1 AND child_digest = $2",
        repo_id,
        digest,
    )
    .await?;
    if exists.is_empty() || tags != expected || !parents.is_empty() {
        return Ok(Vec::new());
    }
    let mut set: Vec<String> = vec![digest.to_string()];
    let mut seen: HashSet<String> = set.iter().cloned().collect();
    let mut i = 0;
    while i < set.len() {
        let d = set[i].clone();
        i += 1;
        for r in strings(c, "SELECT digest FROM manifests WHERE repo_id = $1 AND subject = $2", repo_id, &d).await? {
            if seen.insert(r.clone()) {
                set.push(r);
            }
        }
        for child in strings(
            c,
            "SELECT child_digest FROM manifest_children WHERE repo_id = $1 AND parent_digest = $2",
            repo_id,
            &d,
        )
        .await?
        {
            if seen.contains(&child) {
                continue;
            }
            let tagged =
                !strings(c, "SELECT name FROM tags WHERE repo_id = $1 AND manifest_digest = $2", repo_id, &child)
                    .await?
                    .is_empty();
            let held_elsewhere = strings(
                c,
                "SELECT parent_digest FROM manifest_children WHERE repo_id = $1 AND child_digest = $2",
                repo_id,
                &child,
            )
            .await?
            .iter()
            .any(|p| !seen.contains(p));
            if !tagged && !held_elsewhere {
                seen.insert(child.clone());
                set.push(child);
            }
        }
    }
    for d in &set {
        delete_manifest_rows(c, repo_id, d, "lifecycle").await?;
    }
    Ok(set)
}
