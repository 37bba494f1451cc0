//! Repository creation templates: the settings a repository gets when Berth creates it (on
//! push, and later for replication and pull-through caches), by the most specific prefix.

use berth_core::RepoName;
use berth_meta::{MetaError, RepoSettings, TemplateRow};
use serde::{Deserialize, Serialize};

use crate::access::Access;
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Error, Exists, NotFound, Result};
use crate::model::{Paged, check_max, decode_token, paged};
use crate::repo_settings::{
    EncryptionConfiguration, MutabilityFilter, ResourceTag, check_encryption, check_mutability, check_resource_tags,
};

pub const APPLIED_FOR: [&str; 3] = ["REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH"];
pub const MAX_TEMPLATES: usize = 100;

/// A repository creation template's settings (stored as this JSON; ECR's field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_configuration: Option<EncryptionConfiguration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_tags: Vec<ResourceTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag_mutability: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_tag_mutability_exclusion_filters: Vec<MutabilityFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_policy: Option<String>,
    #[serde(default)]
    pub applied_for: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_role_arn: Option<String>,
}

impl Template {
    fn check(&self) -> Result<()> {
        if self.description.as_ref().is_some_and(|d| d.chars().count() > 256) {
            return Err(Error::bad_request("description must be at most 256 characters".into()));
        }
        if let Some(e) = &self.encryption_configuration {
            check_encryption(&e.encryption_type, e.kms_key.as_deref())?;
        }
        let tags: Vec<(String, String)> = self.resource_tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
        check_resource_tags(&tags)?;
        check_mutability(self.image_tag_mutability.as_deref().unwrap_or("MUTABLE"), &self.filter_values())?;
        if let Some(f) = self.image_tag_mutability_exclusion_filters.iter().find(|f| f.filter_type != "WILDCARD") {
            return Err(Error::bad_request(format!("filterType must be WILDCARD, not '{}'", f.filter_type)));
        }
        if self.applied_for.is_empty() {
            return Err(Error::bad_request(
                "appliedFor must name at least one of REPLICATION, \
                                                PULL_THROUGH_CACHE, CREATE_ON_PUSH"
                    .into(),
            ));
        }
        if let Some(a) = self.applied_for.iter().find(|a| !APPLIED_FOR.contains(&a.as_str())) {
            return Err(Error::parameter("appliedFor", format!("'{a}' is not one of [{}]", APPLIED_FOR.join(", "))));
        }
        if self.repository_policy.as_ref().is_some_and(|p| p.len() > 10240) {
            return Err(Error::bad_request("repositoryPolicy must be at most 10,240 characters".into()));
        }
        if let Some(p) = &self.repository_policy
            && !p.is_empty()
            && serde_json::from_str::<serde_json::Value>(p).is_err()
        {
            return Err(Error::bad_request("repositoryPolicy is not valid JSON".into()));
        }
        if self.lifecycle_policy.as_ref().is_some_and(|p| p.len() > 30720) {
            return Err(Error::bad_request("lifecyclePolicy must be at most 30,720 characters".into()));
        }
        if let Some(p) = &self.lifecycle_policy
            && !p.is_empty()
            && serde_json::from_str::<serde_json::Value>(p).is_err()
        {
            return Err(Error::bad_request("lifecyclePolicy is not valid JSON".into()));
        }
        Ok(())
    }

    fn filter_values(&self) -> Vec<String> {
        self.image_tag_mutability_exclusion_filters.iter().map(|f| f.filter.clone()).collect()
    }
}

/// A stored template with its prefix and dates.
#[derive(Debug, Clone)]
pub struct StoredTemplate {
    pub prefix: String,
    pub template: Template,
    pub created_at: i64,
    pub updated_at: i64,
}

fn stored_template(r: TemplateRow) -> Result<StoredTemplate> {
    let template = serde_json::from_str(&r.body)
        .map_err(|e| Error::Internal(format!("stored template {} is unreadable: {e}", r.prefix)))?;
    Ok(StoredTemplate { prefix: r.prefix, template, created_at: r.created_at, updated_at: r.updated_at })
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix == "ROOT" {
        return Ok(());
    }
    let name = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.len() > 256 || RepoName::parse(name).is_err() {
        return Err(Error::parameter(
            "prefix",
            format!(
                "'{prefix}' must be ROOT or a repository \
             namespace such as 'prod' or 'team/app'"
            ),
        ));
    }
    Ok(())
}

/// Whether template `prefix` applies to repository `name`: `ROOT` to all, `team` (or `team/`)
/// to `team` and everything under `team/`.
fn prefix_matches(prefix: &str, name: &str) -> bool {
    if prefix == "ROOT" {
        return true;
    }
    let p = prefix.strip_suffix('/').unwrap_or(prefix);
    name == p || name.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
}

domain! {
    /// Repository creation templates.
    Templates
}

impl Templates<'_> {
    /// Templates are registry-level: `registry` is the one the call is about.
    async fn allow(&self, caller: &Caller, registry: &str, action: &str) -> Result<()> {
        Access(self.0).check_registry(caller, action, registry).await
    }

    pub async fn create_template(
        &self,
        caller: &Caller,
        registry: &str,
        prefix: &str,
        t: Template,
    ) -> Result<StoredTemplate> {
        self.allow(caller, registry, "ecr:CreateRepositoryCreationTemplate").await?;
        check_prefix(prefix)?;
        t.check()?;
        if self.meta.templates().await?.len() >= MAX_TEMPLATES {
            return Err(Error::validation(format!("a registry may have at most {MAX_TEMPLATES} creation templates")));
        }
        let body = serde_json::to_string(&t).expect("templates serialize");
        let row = self.meta.put_template(prefix, &body, true).await.map_err(|e| match e {
            MetaError::AlreadyExists(prefix) => Error::from(Exists::Template { prefix }),
            e => e.into(),
        })?;
        stored_template(row)
    }

    pub async fn update_template(
        &self,
        caller: &Caller,
        registry: &str,
        prefix: &str,
        update: impl FnOnce(&mut Template),
    ) -> Result<StoredTemplate> {
        self.allow(caller, registry, "ecr:UpdateRepositoryCreationTemplate").await?;
        check_prefix(prefix)?;
        let current = self
            .meta
            .templates()
            .await?
            .into_iter()
            .find(|t| t.prefix == prefix)
            .ok_or_else(|| NotFound::Template { prefix: prefix.to_string() })?;
        let mut t = stored_template(current)?.template;
        update(&mut t);
        t.check()?;
        let body = serde_json::to_string(&t).expect("templates serialize");
        let row = self.meta.put_template(prefix, &body, false).await.map_err(|e| match e {
            MetaError::NotFound(prefix) => Error::from(NotFound::Template { prefix }),
            e => e.into(),
        })?;
        stored_template(row)
    }

    pub async fn delete_template(&self, caller: &Caller, registry: &str, prefix: &str) -> Result<StoredTemplate> {
        self.allow(caller, registry, "ecr:DeleteRepositoryCreationTemplate").await?;
        check_prefix(prefix)?;
        let row = self
            .meta
            .delete_template(prefix)
            .await?
            .ok_or_else(|| NotFound::Template { prefix: prefix.to_string() })?;
        stored_template(row)
    }

    pub async fn describe_templates(
        &self,
        caller: &Caller,
        registry: &str,
        prefixes: &[String],
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<StoredTemplate>> {
        self.allow(caller, registry, "ecr:DescribeRepositoryCreationTemplates").await?;
        for p in prefixes {
            check_prefix(p)?;
        }
        let limit = check_max(max, 1000)?;
        let after = decode_token(token)?.unwrap_or_default();
        let all = self.meta.templates().await?;
        let items: Vec<StoredTemplate> = all
            .into_iter()
            .filter(|t| prefixes.is_empty() || prefixes.contains(&t.prefix))
            .filter(|t| t.prefix.as_str() > after.as_str())
            .map(stored_template)
            .collect::<Result<_>>()?;
        Ok(paged(items, limit, |t| t.prefix.clone()))
    }

    /// Settings and tags for a new repository `name` from the most specific template applied
    /// for `purpose`, if any applies.
    pub(crate) async fn template_for(
        &self,
        name: &str,
        purpose: &str,
    ) -> Result<Option<(RepoSettings, Vec<(String, String)>)>> {
        let best = self
            .meta
            .templates()
            .await?
            .into_iter()
            .filter(|t| prefix_matches(&t.prefix, name))
            .map(stored_template)
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|t| t.template.applied_for.iter().any(|a| a == purpose))
            // The longest prefix is the most specific; ROOT is the least.
            .max_by_key(|t| if t.prefix == "ROOT" { 0 } else { t.prefix.len() + 1 });
        let Some(t) = best.map(|b| b.template) else { return Ok(None) };
        let filters = t.filter_values();
        let mutability = t.image_tag_mutability.clone().unwrap_or_else(|| "MUTABLE".into());
        let encryption_type =
            t.encryption_configuration.as_ref().map_or("AES256".into(), |e| e.encryption_type.clone());
        let named = t.encryption_configuration.as_ref().and_then(|e| e.kms_key.clone()).filter(|k| !k.is_empty());
        let (kms_key, encryption_key) = if encryption_type == "AES256" {
            (None, None)
        } else {
            let account = self.split_key(name).0.to_string();
            let (id, arn) = crate::kms::Kms(self.0).key_for_repository(None, &account, named.as_deref()).await?;
            (Some(arn), Some(id))
        };
        let settings = RepoSettings {
            mutability_filters: check_mutability(&mutability, &filters).unwrap_or(None),
            tag_mutability: mutability,
            scan_on_push: false,
            encryption_type,
            kms_key,
            encryption_key,
        };
        Ok(Some((settings, t.resource_tags.into_iter().map(|t| (t.key, t.value)).collect())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_prefixes() {
        assert!(prefix_matches("ROOT", "anything/here"));
        assert!(prefix_matches("team", "team/app"));
        assert!(prefix_matches("team/", "team/app"));
        assert!(prefix_matches("team", "team"));
        assert!(!prefix_matches("team", "teamwork/app"));
        assert!(check_prefix("ROOT").is_ok());
        assert!(check_prefix("prod/").is_ok());
        assert!(check_prefix("Prod").is_err());
    }
}
