//! Repository settings, resource tags, creation templates, registry settings and the image views
//! the ECR API needs.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Meta, MetaError, Result, now_ms};

/// Per-repository settings chosen at creation (from the request or a creation template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSettings {
    pub tag_mutability: String,
    /// JSON array of wildcard filters, for the `*_WITH_EXCLUSION` modes.
    pub mutability_filters: Option<String>,
    pub scan_on_push: bool,
    pub encryption_type: String,
    /// The key as the ECR API shows it (for KMS repositories, the key's ARN).
    pub kms_key: Option<String>,
    /// The KMS key id content is sealed under (None: the registry's default key). Fixed at creation.
    pub encryption_key: Option<String>,
}

impl Default for RepoSettings {
    fn default() -> Self {
        RepoSettings {
            tag_mutability: "MUTABLE".into(),
            mutability_filters: None,
            scan_on_push: false,
            encryption_type: "AES256".into(),
            kms_key: None,
            encryption_key: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRow {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub settings: RepoSettings,
    /// The repository policy (JSON), if one is set.
    pub policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRow {
    pub prefix: String,
    /// The template's fields as JSON; their meaning is the service's.
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    pub image_size: i64,
    pub pushed_at: i64,
    pub last_pull: Option<i64>,
    pub tags: Vec<String>,
}

macro_rules! repo_cols {
    () => {
        "id, name, created_at, tag_mutability, mutability_filters, scan_on_push, encryption_type, kms_key, policy, \
         encryption_key"
    };
}

fn repo_row(r: &AnyRow) -> Result<RepoRow> {
    Ok(RepoRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        created_at: r.try_get(2)?,
        settings: RepoSettings {
            tag_mutability: r.try_get(3)?,
            mutability_filters: r.try_get(4)?,
            scan_on_push: r.try_get::<i64, _>(5)? != 0,
            encryption_type: r.try_get(6)?,
            kms_key: r.try_get(7)?,
            encryption_key: r.try_get(9)?,
        },
        policy: r.try_get(8)?,
    })
}

fn template_row(r: &AnyRow) -> Result<TemplateRow> {
    Ok(TemplateRow { prefix: r.try_get(0)?, body: r.try_get(1)?, created_at: r.try_get(2)?, updated_at: r.try_get(3)? })
}

/// Most tags a repository may carry (ECR's limit).
pub const MAX_RESOURCE_TAGS: usize = 50;

impl Meta {
    // ---- repositories ----

    /// Creates a repository. With `if_absent`, an existing one is returned unchanged; otherwise
    /// it is [`MetaError::AlreadyExists`].
    pub async fn create_repo(
        &self,
        name: &str,
        settings: &RepoSettings,
        tags: &[(String, String)],
        if_absent: bool,
    ) -> Result<RepoRow> {
        let (name, s, tags) = (name.to_string(), settings.clone(), tags.to_vec());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "INSERT INTO repositories (name, created_at, tag_mutability, mutability_filters, scan_on_push, \
                     encryption_type, kms_key, encryption_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name.as_str())
                .bind(now_ms())
                .bind(s.tag_mutability.as_str())
                .bind(s.mutability_filters.as_deref())
                .bind(i64::from(s.scan_on_push))
                .bind(s.encryption_type.as_str())
                .bind(s.kms_key.as_deref())
                .bind(s.encryption_key.as_deref())
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n == 0 && !if_absent {
                    return Err(MetaError::AlreadyExists(name));
                }
                let row = sqlx::query(concat!("SELECT ", repo_cols!(), " FROM repositories WHERE name = $1"))
                    .bind(name.as_str())
                    .fetch_one(&mut *c)
                    .await?;
                let repo = repo_row(&row)?;
                if n > 0 {
                    for (k, v) in &tags {
                        sqlx::query(
                            "INSERT INTO repository_tags (repo_id, key, value) VALUES ($1, $2, $3) \
                                     ON CONFLICT (repo_id, key) DO UPDATE SET value = excluded.value",
                        )
                        .bind(repo.id)
                        .bind(k.as_str())
                        .bind(v.as_str())
                        .execute(&mut *c)
                        .await?;
                    }
                }
                Ok(repo)
            })
        }))
        .await
    }

    pub async fn get_repo(&self, name: &str) -> Result<Option<RepoRow>> {
        let row = sqlx::query(concat!("SELECT ", repo_cols!(), " FROM repositories WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(repo_row).transpose()
    }

    /// Repositories in name order after `after`, at most `limit`.
    /// Repositories of one account (see [`Meta::list_repos`]) after the key `after`.
    pub async fn list_repo_rows(&self, prefix: &str, after: Option<&str>, limit: i64) -> Result<Vec<RepoRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            repo_cols!(),
            " FROM repositories WHERE name > $1 AND ",
            crate::in_account!(),
            " ORDER BY name LIMIT $2"
        ))
        .bind(after.unwrap_or(prefix))
        .bind(limit)
        .bind(prefix)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(repo_row).collect()
    }

    pub async fn set_tag_mutability(&self, repo_id: i64, mutability: &str, filters: Option<&str>) -> Result<()> {
        let (m, f) = (mutability.to_string(), filters.map(str::to_string));
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE repositories SET tag_mutability = $1, mutability_filters = $2 WHERE id = $3")
                    .bind(m.as_str())
                    .bind(f.as_deref())
                    .bind(repo_id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Runs `update` (`UPDATE repositories SET <column> = $1 WHERE id = $2`) for one of the
    /// repository's optional text columns (the policies).
    pub(crate) async fn set_repo_column(&self, repo_id: i64, update: &'static str, value: Option<&str>) -> Result<()> {
        let value = value.map(str::to_string);
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(update).bind(value.as_deref()).bind(repo_id).execute(&mut *c).await?;
                Ok(())
            })
        }))
        .await
    }

    /// Sets (`Some`) or removes (`None`) the repository policy.
    pub async fn set_repo_policy(&self, repo_id: i64, policy: Option<&str>) -> Result<()> {
        self.set_repo_column(repo_id, "UPDATE repositories SET policy = $1 WHERE id = $2", policy).await
    }

    pub async fn delete_setting(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM settings WHERE name = $1")
                    .bind(name.as_str())
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            })
        }))
        .await
    }

    pub async fn set_scan_on_push(&self, repo_id: i64, on: bool) -> Result<()> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE repositories SET scan_on_push = $1 WHERE id = $2")
                    .bind(i64::from(on))
                    .bind(repo_id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Deletes a repository with everything recorded in it. Without `force`, refused with
    /// [`MetaError::NotEmpty`] while it holds images. Blob files are left for garbage collection.
    pub async fn delete_repo(&self, repo_id: i64, force: bool) -> Result<()> {
        self.write_tx_events(Box::new(move |c| {
            Box::pin(async move {
                if !force {
                    let any = sqlx::query("SELECT 1 FROM manifests WHERE repo_id = $1 LIMIT 1")
                        .bind(repo_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    if any.is_some() {
                        return Err(MetaError::NotEmpty);
                    }
                }
                // Everything it held may now be garbage.
                sqlx::query(
                    "INSERT INTO gc_candidates (digest, since) SELECT digest, $2 FROM repo_blobs WHERE repo_id = $1 \
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(repo_id)
                .bind(crate::now_ms())
                .execute(&mut *c)
                .await?;
                let detail = r#"{"cause":"repository_deleted"}"#;
                crate::events::record_repo_images_deleted(c, repo_id, detail).await?;
                sqlx::query("DELETE FROM jobs WHERE queue = 'scan' AND unique_key LIKE $1")
                    .bind(crate::scan::scan_job_prefix(repo_id))
                    .execute(&mut *c)
                    .await?;
                // Children first: not every foreign key cascades through composite keys alike.
                for sql in [
                    "DELETE FROM tags WHERE repo_id = $1",
                    "DELETE FROM manifest_blobs WHERE repo_id = $1",
                    "DELETE FROM manifest_children WHERE repo_id = $1",
                    "DELETE FROM manifests WHERE repo_id = $1",
                    "DELETE FROM repo_blobs WHERE repo_id = $1",
                    "DELETE FROM uploads WHERE repo_id = $1",
                    "DELETE FROM repository_tags WHERE repo_id = $1",
                    "DELETE FROM repositories WHERE id = $1",
                ] {
                    sqlx::query(sql).bind(repo_id).execute(&mut *c).await?;
                }
                Ok(())
            })
        }))
        .await
    }

    // ---- resource tags ----

    pub async fn repo_tags(&self, repo_id: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT key, value FROM repository_tags WHERE repo_id = $1 ORDER BY key")
            .bind(repo_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Adds or overwrites tags; fails with [`MetaError::TooManyTags`] (changing nothing) if the
    /// repository would then carry more than [`MAX_RESOURCE_TAGS`].
    pub async fn put_repo_tags(&self, repo_id: i64, tags: &[(String, String)]) -> Result<()> {
        let tags = tags.to_vec();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                for (k, v) in &tags {
                    sqlx::query(
                        "INSERT INTO repository_tags (repo_id, key, value) VALUES ($1, $2, $3) \
                         ON CONFLICT (repo_id, key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(repo_id)
                    .bind(k.as_str())
                    .bind(v.as_str())
                    .execute(&mut *c)
                    .await?;
                }
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM repository_tags WHERE repo_id = $1")
                    .bind(repo_id)
                    .fetch_one(&mut *c)
                    .await?
                    .try_get(0)?;
                if n as usize > MAX_RESOURCE_TAGS {
                    return Err(MetaError::TooManyTags(MAX_RESOURCE_TAGS));
                }
                Ok(())
            })
        }))
        .await
    }

    pub async fn remove_repo_tags(&self, repo_id: i64, keys: &[String]) -> Result<()> {
        let keys = keys.to_vec();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                for k in &keys {
                    sqlx::query("DELETE FROM repository_tags WHERE repo_id = $1 AND key = $2")
                        .bind(repo_id)
                        .bind(k.as_str())
                        .execute(&mut *c)
                        .await?;
                }
                Ok(())
            })
        }))
        .await
    }

    // ---- creation templates ----

    /// Creates (`create`) or replaces the body of (`!create`) a template.
    pub async fn put_template(&self, prefix: &str, body: &str, create: bool) -> Result<TemplateRow> {
        let (prefix, body) = (prefix.to_string(), body.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let n = if create {
                    sqlx::query(
                        "INSERT INTO repository_templates (prefix, body, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                         ON CONFLICT (prefix) DO NOTHING",
                    )
                    .bind(prefix.as_str())
                    .bind(body.as_str())
                    .bind(now)
                    .execute(&mut *c)
                    .await?
                    .rows_affected()
                } else {
                    sqlx::query("UPDATE repository_templates SET body = $1, updated_at = $2 WHERE prefix = $3")
                        .bind(body.as_str())
                        .bind(now)
                        .bind(prefix.as_str())
                        .execute(&mut *c)
                        .await?
                        .rows_affected()
                };
                if n == 0 {
                    return Err(if create { MetaError::AlreadyExists(prefix) } else { MetaError::NotFound(prefix) });
                }
                let row = sqlx::query(
                    "SELECT prefix, body, created_at, updated_at FROM repository_templates WHERE prefix = $1",
                )
                .bind(prefix.as_str())
                .fetch_one(&mut *c)
                .await?;
                template_row(&row)
            })
        }))
        .await
    }

    /// Every template, by prefix.
    pub async fn templates(&self) -> Result<Vec<TemplateRow>> {
        let rows = sqlx::query("SELECT prefix, body, created_at, updated_at FROM repository_templates ORDER BY prefix")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(template_row).collect()
    }

    pub async fn delete_template(&self, prefix: &str) -> Result<Option<TemplateRow>> {
        let prefix = prefix.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let row = sqlx::query(
                    "SELECT prefix, body, created_at, updated_at FROM repository_templates WHERE prefix = $1",
                )
                .bind(prefix.as_str())
                .fetch_optional(&mut *c)
                .await?;
                let Some(row) = row else { return Ok(None) };
                sqlx::query("DELETE FROM repository_templates WHERE prefix = $1")
                    .bind(prefix.as_str())
                    .execute(&mut *c)
                    .await?;
                Ok(Some(template_row(&row)?))
            })
        }))
        .await
    }

    // ---- registry settings ----

    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(&self.read).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        let (name, value) = (name.to_string(), value.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO settings (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )
                .bind(name.as_str())
                .bind(value.as_str())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    /// The stored value of `name`, storing `value` first if there is none. Every node that calls
    /// this gets the same answer, whoever stored it.
    pub async fn setting_or_init(&self, name: &str, value: &str) -> Result<String> {
        let (name, value) = (name.to_string(), value.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name.as_str())
                    .bind(value.as_str())
                    .execute(&mut *c)
                    .await?;
                let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
                    .bind(name.as_str())
                    .fetch_one(&mut *c)
                    .await?;
                Ok(row.try_get(0)?)
            })
        }))
        .await
    }

    // ---- images ----

    /// `(digest, tag)` pairs, a tagged image once per tag and an untagged one with no tag, in
    /// `(digest, tag)` order after `after`.
    pub async fn list_image_ids(
        &self,
        repo_id: i64,
        status: TagStatus,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>)>> {
        let (ad, at) = after.unwrap_or(("", ""));
        let sql = match status {
            TagStatus::Tagged => {
                "SELECT t.manifest_digest, t.name FROM tags t WHERE t.repo_id = $1 \
                 AND (t.manifest_digest > $2 OR (t.manifest_digest = $2 AND t.name > $3)) \
                 ORDER BY t.manifest_digest, t.name LIMIT $4"
            }
            TagStatus::Untagged => {
                "SELECT m.digest, NULL FROM manifests m WHERE m.repo_id = $1 AND m.digest > $2 AND $3 = $3 \
                 AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.manifest_digest = m.digest) \
                 ORDER BY m.digest LIMIT $4"
            }
            TagStatus::Any => {
                "SELECT m.digest, t.name FROM manifests m LEFT JOIN tags t \
                 ON t.repo_id = m.repo_id AND t.manifest_digest = m.digest WHERE m.repo_id = $1 \
                 AND (m.digest > $2 OR (m.digest = $2 AND COALESCE(t.name, '') > $3)) \
                 ORDER BY m.digest, COALESCE(t.name, '') LIMIT $4"
            }
        };
        let rows = sqlx::query(sql).bind(repo_id).bind(ad).bind(at).bind(limit).fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Images (manifests) in digest order after `after`, with their tags.
    pub async fn list_images(
        &self,
        repo_id: i64,
        status: TagStatus,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ImageRow>> {
        let sql = match status {
            TagStatus::Tagged => concat!(
                "SELECT m.digest, m.media_type, m.artifact_type, m.subject, m.image_size, m.created_at, m.last_pull \
                 FROM manifests m WHERE m.repo_id = $1 AND m.digest > $2 AND ",
                "EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.manifest_digest = m.digest)",
                " ORDER BY m.digest LIMIT $3"
            ),
            TagStatus::Untagged => concat!(
                "SELECT m.digest, m.media_type, m.artifact_type, m.subject, m.image_size, m.created_at, m.last_pull \
                 FROM manifests m WHERE m.repo_id = $1 AND m.digest > $2 AND ",
                "NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.manifest_digest = m.digest)",
                " ORDER BY m.digest LIMIT $3"
            ),
            TagStatus::Any => concat!(
                "SELECT m.digest, m.media_type, m.artifact_type, m.subject, m.image_size, m.created_at, m.last_pull \
                 FROM manifests m WHERE m.repo_id = $1 AND m.digest > $2",
                " ORDER BY m.digest LIMIT $3"
            ),
        };
        let rows = sqlx::query(sql).bind(repo_id).bind(after.unwrap_or("")).bind(limit).fetch_all(&self.read).await?;
        let mut images = rows.iter().map(image_row).collect::<Result<Vec<_>>>()?;
        self.fill_tags(repo_id, &mut images).await?;
        Ok(images)
    }

    /// One image by digest, with its tags.
    pub async fn image(&self, repo_id: i64, digest: &str) -> Result<Option<ImageRow>> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.artifact_type, m.subject, m.image_size, m.created_at, m.last_pull \
             FROM manifests m WHERE m.repo_id = $1 AND m.digest = $2",
        )
        .bind(repo_id)
        .bind(digest)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut v = vec![image_row(&row)?];
        self.fill_tags(repo_id, &mut v).await?;
        Ok(v.pop())
    }

    /// The digest a tag names.
    pub async fn tag_digest(&self, repo_id: i64, tag: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT manifest_digest FROM tags WHERE repo_id = $1 AND name = $2")
            .bind(repo_id)
            .bind(tag)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn fill_tags(&self, repo_id: i64, images: &mut [ImageRow]) -> Result<()> {
        // One query per image keeps the SQL portable; pages are small (ECR: ≤1000).
        for img in images.iter_mut() {
            let rows = sqlx::query("SELECT name FROM tags WHERE repo_id = $1 AND manifest_digest = $2 ORDER BY name")
                .bind(repo_id)
                .bind(img.digest.as_str())
                .fetch_all(&self.read)
                .await?;
            img.tags = rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    /// Records pull times (`(repo_id, digest, ms)`), keeping the latest.
    pub async fn record_pulls(&self, pulls: Vec<(i64, String, i64)>) -> Result<()> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                for (repo_id, digest, at) in &pulls {
                    sqlx::query(
                        "UPDATE manifests SET last_pull = $1 WHERE repo_id = $2 AND digest = $3 \
                         AND (last_pull IS NULL OR last_pull < $1)",
                    )
                    .bind(*at)
                    .bind(*repo_id)
                    .bind(digest.as_str())
                    .execute(&mut *c)
                    .await?;
                }
                Ok(())
            })
        }))
        .await
    }

    /// ECR's tag deletion: removes the tag, and the image too when that was its last tag and no
    /// index lists it. Returns the digest the tag named and whether the image went with it.
    pub async fn untag_image(&self, repo_id: i64, tag: &str) -> Result<Option<(String, bool)>> {
        let tag = tag.to_string();
        self.write_tx_events(Box::new(move |c| {
            Box::pin(async move {
                let Some(digest) = crate::delete_tag_row(c, repo_id, &tag, "deleted").await? else {
                    return Ok(None);
                };
                let still_used = sqlx::query(
                    "SELECT 1 FROM tags WHERE repo_id = $1 AND manifest_digest = $2 \
                     UNION ALL SELECT 1 FROM manifest_children WHERE repo_id = $1 AND child_digest = $2 LIMIT 1",
                )
                .bind(repo_id)
                .bind(digest.as_str())
                .fetch_optional(&mut *c)
                .await?
                .is_some();
                if !still_used {
                    crate::delete_manifest_rows(c, repo_id, &digest, "deleted").await?;
                }
                Ok(Some((digest, !still_used)))
            })
        }))
        .await
    }

    // ---- ECR layer parts ----

    /// Notes a part of `size` bytes received for an ECR layer upload; returns whether a part
    /// smaller than `min` has been followed by another (which ECR refuses at completion).
    pub async fn record_layer_part(&self, upload_id: &str, small: bool) -> Result<bool> {
        let id = upload_id.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE uploads SET part_too_small = CASE WHEN last_part_small = 1 THEN 1 ELSE part_too_small END, \
                     last_part_small = $1 WHERE id = $2",
                )
                .bind(i64::from(small))
                .bind(id.as_str())
                .execute(&mut *c)
                .await?;
                let row = sqlx::query("SELECT part_too_small FROM uploads WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&mut *c)
                    .await?;
                Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.unwrap_or(0) != 0)
            })
        }))
        .await
    }

    /// Whether a non-final part of this upload was too small.
    pub async fn layer_part_too_small(&self, upload_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT part_too_small FROM uploads WHERE id = $1")
            .bind(upload_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.unwrap_or(0) != 0)
    }
}

fn image_row(r: &AnyRow) -> Result<ImageRow> {
    Ok(ImageRow {
        digest: r.try_get(0)?,
        media_type: r.try_get(1)?,
        artifact_type: r.try_get(2)?,
        subject: r.try_get(3)?,
        image_size: r.try_get(4)?,
        pushed_at: r.try_get(5)?,
        last_pull: r.try_get(6)?,
        tags: Vec::new(),
    })
}
