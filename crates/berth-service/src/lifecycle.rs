//! Lifecycle policies: storing them, previewing them, and running them. One evaluation serves
//! both the preview and a run ([`Lifecycle::lifecycle_plan`]), so a preview shows exactly what a
//! run at the same moment expires. Index children are not images of their own here (they go with
//! their index), nor are artifacts with a `subject` (they go with their subject).

use std::collections::HashSet;

use berth_core::lifecycle::{self, Image};
use berth_meta::TagStatus;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Error, NotFound, Result};
use crate::repositories::Repositories;

/// An image a policy expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedExpiry {
    pub digest: String,
    pub tags: Vec<String>,
    /// Unix milliseconds.
    pub pushed_at: i64,
    pub rule_priority: i64,
}

/// What one repository's run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub repository: String,
    /// The images expired (or, in a dry run, that would be).
    pub expired: Vec<PlannedExpiry>,
    /// Manifests deleted with them (index children, referrers).
    pub manifests_deleted: usize,
    /// Planned expiries skipped because the image changed meanwhile.
    pub skipped: usize,
}

pub fn check_policy_text(text: &str) -> Result<lifecycle::Policy> {
    let n = text.chars().count();
    if !(lifecycle::MIN_POLICY_TEXT..=lifecycle::MAX_POLICY_TEXT).contains(&n) {
        return Err(Error::parameter(
            "LifecyclePolicyText",
            format!(
                "'Member must have length \
             between {} and {}', got {n}",
                lifecycle::MIN_POLICY_TEXT,
                lifecycle::MAX_POLICY_TEXT
            ),
        ));
    }
    lifecycle::parse(text).map_err(|e| {
        Error::parameter(
            "LifecyclePolicyText",
            format!(
                "'Lifecycle policy validation \
             failure: {e}'"
            ),
        )
    })
}

domain! {
    /// Lifecycle policies.
    Lifecycle
}

impl<'a> Lifecycle<'a> {
    fn repos(&self) -> Repositories<'a> {
        Repositories(self.0)
    }

    fn no_lifecycle_policy(&self, key: &str) -> Error {
        NotFound::LifecyclePolicy { key: key.to_string() }.into()
    }

    pub async fn put_lifecycle_policy(&self, caller: &Caller, key: &str, text: &str) -> Result<String> {
        let (_, row) = self.repos().allowed(caller, "ecr:PutLifecyclePolicy", key).await?;
        check_policy_text(text)?;
        self.meta.set_lifecycle_policy(row.id, Some(text)).await?;
        Ok(text.to_string())
    }

    /// The policy and when it last ran (Unix ms).
    pub async fn lifecycle_policy(&self, caller: &Caller, key: &str) -> Result<(String, Option<i64>)> {
        let (_, row) = self.repos().allowed(caller, "ecr:GetLifecyclePolicy", key).await?;
        self.meta.lifecycle_policy(row.id).await?.ok_or_else(|| self.no_lifecycle_policy(key))
    }

    pub async fn delete_lifecycle_policy(&self, caller: &Caller, key: &str) -> Result<(String, Option<i64>)> {
        let (_, row) = self.repos().allowed(caller, "ecr:DeleteLifecyclePolicy", key).await?;
        let p = self.meta.lifecycle_policy(row.id).await?.ok_or_else(|| self.no_lifecycle_policy(key))?;
        self.meta.set_lifecycle_policy(row.id, None).await?;
        Ok(p)
    }

    /// What `text` expires in repository `key` now.
    /// (A dry run's evaluation, as StartLifecyclePolicyPreview's: `ecr:StartLifecyclePolicyPreview`.)
    pub async fn lifecycle_plan(&self, caller: &Caller, key: &str, text: &str) -> Result<Vec<PlannedExpiry>> {
        self.repos().allowed(caller, "ecr:StartLifecyclePolicyPreview", key).await?;
        self.plan(key, text).await
    }

    async fn plan(&self, key: &str, text: &str) -> Result<Vec<PlannedExpiry>> {
        let policy = check_policy_text(text)?;
        let (_, row) = self.repos().repository(key).await?;
        let children: HashSet<String> = self.meta.manifest_edges(row.id).await?.into_iter().map(|(_, c)| c).collect();
        let mut images = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.meta.list_images(row.id, TagStatus::Any, after.as_deref(), 1000).await?;
            let more = page.len() == 1000;
            after = page.last().map(|i| i.digest.clone());
            for i in page {
                // An index's children live and die with it; so do artifacts with their subject.
                // A tagged child is an image of its own.
                if i.subject.is_some() || (children.contains(&i.digest) && i.tags.is_empty()) {
                    continue;
                }
                images.push(Image {
                    digest: i.digest,
                    tags: i.tags,
                    pushed_at: i.pushed_at,
                    last_pulled_at: i.last_pull,
                });
            }
            if !more {
                break;
            }
        }
        let now = berth_meta::now_ms();
        let out = lifecycle::evaluate(&policy, &images, now);
        Ok(out
            .into_iter()
            .filter_map(|e| {
                let img = images.iter().find(|i| i.digest == e.digest)?;
                Some(PlannedExpiry {
                    digest: e.digest,
                    tags: img.tags.clone(),
                    pushed_at: img.pushed_at,
                    rule_priority: e.rule_priority,
                })
            })
            .collect())
    }

    /// StartLifecyclePolicyPreview: evaluates `text` (or the stored policy) now and keeps the
    /// result for GetLifecyclePolicyPreview. Returns the policy text previewed.
    pub async fn start_lifecycle_preview(&self, caller: &Caller, key: &str, text: Option<&str>) -> Result<String> {
        let (_, row) = self.repos().allowed(caller, "ecr:StartLifecyclePolicyPreview", key).await?;
        let text = match text {
            Some(t) => t.to_string(),
            None => self.meta.lifecycle_policy(row.id).await?.ok_or_else(|| self.no_lifecycle_policy(key))?.0,
        };
        let plan = self.plan(key, &text).await?;
        let results = serde_json::to_string(&plan).map_err(|e| Error::Internal(e.to_string()))?;
        self.meta.put_lifecycle_preview(row.id, &text, "COMPLETE", &results).await?;
        Ok(text)
    }

    /// The last preview: policy text, status and results.
    pub async fn lifecycle_preview(&self, caller: &Caller, key: &str) -> Result<(String, String, Vec<PlannedExpiry>)> {
        let (_, row) = self.repos().allowed(caller, "ecr:GetLifecyclePolicyPreview", key).await?;
        let p =
            self.meta.lifecycle_preview(row.id).await?.ok_or_else(|| NotFound::LifecyclePreview { key: key.into() })?;
        let results = serde_json::from_str(&p.results).map_err(|e| Error::Internal(e.to_string()))?;
        Ok((p.policy, p.status, results))
    }

    /// Runs the repository's policy: expires what it selects, each image (with its index
    /// children and referrers) in one transaction, each expiry in the audit log with its rule.
    /// The operator's (`berth lifecycle`, and the periodic job).
    pub async fn run_lifecycle(&self, caller: &Caller, key: &str, dry_run: bool) -> Result<RunReport> {
        caller.require_operator("run lifecycle policies")?;
        let (repo, row) = self.repos().repository(key).await?;
        let (text, _) = self.meta.lifecycle_policy(row.id).await?.ok_or_else(|| self.no_lifecycle_policy(key))?;
        let plan = self.plan(key, &text).await?;
        let mut report = RunReport { repository: repo.name().to_string(), ..Default::default() };
        if dry_run {
            report.expired = plan;
            return Ok(report);
        }
        for e in plan {
            let deleted = self.meta.expire_image(row.id, &e.digest, &e.tags).await?;
            if deleted.is_empty() {
                report.skipped += 1;
                continue;
            }
            report.manifests_deleted += deleted.len();
            self.audit(AuditEvent {
                name: "PolicyExecutionEvent".into(),
                principal: Some("berth:lifecycle".into()),
                resource: Some(format!("{}@{}", self.repository_arn(key), e.digest)),
                allowed: true,
                detail: Some(format!(
                    "expired by lifecycle rule {} (tags: [{}]; with it {} manifest(s))",
                    e.rule_priority,
                    e.tags.join(", "),
                    deleted.len()
                )),
                ..Default::default()
            })
            .await;
            report.expired.push(e);
        }
        self.caches.content.drop_manifests(repo.as_str());
        self.meta.set_lifecycle_evaluated(row.id, berth_meta::now_ms()).await?;
        use std::sync::atomic::Ordering::Relaxed;
        self.counters.lifecycle_runs.fetch_add(1, Relaxed);
        self.counters.lifecycle_expired.fetch_add(report.expired.len() as u64, Relaxed);
        Ok(report)
    }

    /// Runs every repository's policy (or one repository's).
    pub async fn run_lifecycles(&self, caller: &Caller, only: Option<&str>, dry_run: bool) -> Result<Vec<RunReport>> {
        caller.require_operator("run lifecycle policies")?;
        let mut out = Vec::new();
        for (_, key) in self.meta.repos_with_lifecycle().await? {
            if only.is_some_and(|o| o != key) {
                continue;
            }
            match self.run_lifecycle(caller, &key, dry_run).await {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(repository = %key, error = %e, "lifecycle run failed"),
            }
        }
        self.flush_audit().await;
        Ok(out)
    }
}
