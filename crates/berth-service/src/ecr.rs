//! The control-plane use cases the ECR API exposes: repositories and their settings, creation
//! templates, image listings and batch operations, layer uploads in parts, resource tags and
//! registry settings. Validation follows ECR's documented limits; the API crate only translates.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_core::{Digest, RepoName, Tag, wildcard};
pub use berth_meta::TagStatus;
use berth_meta::{ImageRow, MetaError, RepoRow, RepoSettings, TemplateRow};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{Error, Manifest, Registry, Result, Who};

pub const MUTABILITY: [&str; 4] = ["MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"];
pub const ENCRYPTION_TYPES: [&str; 3] = ["AES256", "KMS", "KMS_DSSE"];
pub const APPLIED_FOR: [&str; 3] = ["REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH"];
/// ECR's layer part limits: every part but the last at least 5 MiB; at most 20 MiB per request.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
pub const MAX_PART: u64 = 20 * 1024 * 1024;
/// The part size InitiateLayerUpload advises.
pub const PART_SIZE: u64 = 10 * 1024 * 1024;
pub const MAX_TEMPLATES: usize = 100;

/// Whether pushing `tag` may not move it, under the repository's mutability setting.
pub fn tag_is_immutable(s: &RepoSettings, tag: &str) -> bool {
    let filters = parse_filters(s.mutability_filters.as_deref());
    let matched = || filters.iter().any(|f| wildcard::matches(f, tag));
    match s.tag_mutability.as_str() {
        "IMMUTABLE" => true,
        "IMMUTABLE_WITH_EXCLUSION" => !matched(),
        "MUTABLE_WITH_EXCLUSION" => matched(),
        _ => false,
    }
}

fn parse_filters(json: Option<&str>) -> Vec<String> {
    json.and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default()
}

/// Checks a mutability setting and its exclusion filters; returns the filters as stored.
pub fn check_mutability(mutability: &str, filters: &[String]) -> Result<Option<String>> {
    if !MUTABILITY.contains(&mutability) {
        return Err(Error::InvalidParameter(format!(
            "Invalid parameter at 'imageTagMutability' failed to satisfy constraint: 'Member must satisfy enum value \
             set: [{}]'",
            MUTABILITY.join(", ")
        )));
    }
    let with_exclusion = mutability.ends_with("_WITH_EXCLUSION");
    if with_exclusion && filters.is_empty() {
        return Err(Error::InvalidParameter(format!(
            "imageTagMutabilityExclusionFilters must be specified when imageTagMutability is {mutability}"
        )));
    }
    if !with_exclusion && !filters.is_empty() {
        return Err(Error::InvalidParameter(format!(
            "imageTagMutabilityExclusionFilters can only be specified when imageTagMutability is \
             IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION, not {mutability}"
        )));
    }
    if filters.len() > 5 {
        return Err(Error::InvalidParameter("at most 5 imageTagMutabilityExclusionFilters are allowed".into()));
    }
    for f in filters {
        let ok =
            !f.is_empty() && f.len() <= 128 && f.bytes().all(|b| b.is_ascii_alphanumeric() || b"._*-".contains(&b));
        if !ok {
            return Err(Error::InvalidParameter(format!(
                "Invalid exclusion filter '{f}': it must be 1 to 128 characters of [0-9a-zA-Z._*-]"
            )));
        }
    }
    Ok(with_exclusion.then(|| serde_json::to_string(filters).expect("strings serialize")))
}

pub fn check_encryption(kind: &str, kms_key: Option<&str>) -> Result<()> {
    if !ENCRYPTION_TYPES.contains(&kind) {
        return Err(Error::InvalidParameter(format!(
            "Invalid parameter at 'encryptionType' failed to satisfy constraint: 'Member must satisfy enum value set: \
             [{}]'",
            ENCRYPTION_TYPES.join(", ")
        )));
    }
    if kind == "AES256" && kms_key.is_some_and(|k| !k.is_empty()) {
        return Err(Error::InvalidParameter(
            "kmsKey can only be specified when encryptionType is KMS or KMS_DSSE".into(),
        ));
    }
    Ok(())
}

/// ECR's tag rules: at most 50; keys 1–128 characters, not starting `aws:`; values up to 256.
pub fn check_resource_tags(tags: &[(String, String)]) -> Result<()> {
    if tags.len() > berth_meta::MAX_RESOURCE_TAGS {
        return Err(Error::TooManyTags(format!(
            "a repository may have at most {} tags",
            berth_meta::MAX_RESOURCE_TAGS
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(Error::InvalidTagParameter(format!("tag key '{k}' must be 1 to 128 characters")));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(Error::InvalidTagParameter(format!("tag key '{k}' uses the reserved prefix 'aws:'")));
        }
        if v.chars().count() > 256 {
            return Err(Error::InvalidTagParameter(format!("the value of tag '{k}' is longer than 256 characters")));
        }
    }
    Ok(())
}

/// What a new repository starts with.
#[derive(Debug, Clone, Default)]
pub struct NewRepository {
    pub tag_mutability: Option<String>,
    pub mutability_filters: Vec<String>,
    pub scan_on_push: Option<bool>,
    pub encryption_type: Option<String>,
    pub kms_key: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// A repository as the control plane describes it.
#[derive(Debug, Clone)]
pub struct Repository {
    pub row: RepoRow,
    /// The name clients use (`row.name` is the stored key, account-qualified outside the
    /// configured account).
    pub name: String,
    pub registry_id: String,
    pub arn: String,
    pub uri: String,
    pub mutability_filters: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    pub encryption_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceTag {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value")]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MutabilityFilter {
    pub filter_type: String,
    pub filter: String,
}

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
            return Err(Error::InvalidParameter("description must be at most 256 characters".into()));
        }
        if let Some(e) = &self.encryption_configuration {
            check_encryption(&e.encryption_type, e.kms_key.as_deref())?;
        }
        let tags: Vec<(String, String)> = self.resource_tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
        check_resource_tags(&tags)?;
        check_mutability(self.image_tag_mutability.as_deref().unwrap_or("MUTABLE"), &self.filter_values())?;
        if let Some(f) = self.image_tag_mutability_exclusion_filters.iter().find(|f| f.filter_type != "WILDCARD") {
            return Err(Error::InvalidParameter(format!("filterType must be WILDCARD, not '{}'", f.filter_type)));
        }
        if self.applied_for.is_empty() {
            return Err(Error::InvalidParameter(
                "appliedFor must name at least one of REPLICATION, \
                                                PULL_THROUGH_CACHE, CREATE_ON_PUSH"
                    .into(),
            ));
        }
        if let Some(a) = self.applied_for.iter().find(|a| !APPLIED_FOR.contains(&a.as_str())) {
            return Err(Error::InvalidParameter(format!(
                "Invalid parameter at 'appliedFor' failed to satisfy constraint: '{a}' is not one of [{}]",
                APPLIED_FOR.join(", ")
            )));
        }
        if self.repository_policy.as_ref().is_some_and(|p| p.len() > 10240) {
            return Err(Error::InvalidParameter("repositoryPolicy must be at most 10,240 characters".into()));
        }
        if let Some(p) = &self.repository_policy
            && !p.is_empty()
            && serde_json::from_str::<serde_json::Value>(p).is_err()
        {
            return Err(Error::InvalidParameter("repositoryPolicy is not valid JSON".into()));
        }
        if self.lifecycle_policy.as_ref().is_some_and(|p| p.len() > 30720) {
            return Err(Error::InvalidParameter("lifecyclePolicy must be at most 30,720 characters".into()));
        }
        if let Some(p) = &self.lifecycle_policy
            && !p.is_empty()
            && serde_json::from_str::<serde_json::Value>(p).is_err()
        {
            return Err(Error::InvalidParameter("lifecyclePolicy is not valid JSON".into()));
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
        return Err(Error::InvalidParameter(format!(
            "Invalid parameter at 'prefix' failed to satisfy constraint: '{prefix}' must be ROOT or a repository \
             namespace such as 'prod' or 'team/app'"
        )));
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

/// An image as a request names it: by digest, tag, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageId {
    pub digest: Option<String>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFailure {
    pub id: ImageId,
    pub code: &'static str,
    pub reason: String,
}

/// One page and the token for the next.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The first `limit` of `items` (fetched with one extra to tell whether more follow), with the
/// token that continues after the last.
fn paged<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Paged<T> {
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|i| encode_token(&key(i)))
    } else {
        None
    };
    Paged { items, next }
}

fn encode_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

fn decode_token(token: Option<&str>) -> Result<Option<String>> {
    token
        .map(|t| {
            URL_SAFE_NO_PAD.decode(t).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| {
                Error::InvalidParameter(
                    "Invalid parameter at 'nextToken' failed to satisfy constraint: 'Must be a token returned by a \
                     previous call'"
                        .into(),
                )
            })
        })
        .transpose()
}

fn check_max(max: Option<i64>, limit: i64) -> Result<i64> {
    match max {
        None => Ok(limit),
        Some(n) if (1..=limit).contains(&n) => Ok(n),
        Some(n) => Err(Error::InvalidParameter(format!(
            "Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value between 1 and \
             {limit}', got {n}"
        ))),
    }
}

pub fn parse_tag_status(s: Option<&str>) -> Result<TagStatus> {
    match s {
        None | Some("ANY") => Ok(TagStatus::Any),
        Some("TAGGED") => Ok(TagStatus::Tagged),
        Some("UNTAGGED") => Ok(TagStatus::Untagged),
        Some(o) => Err(Error::InvalidParameter(format!(
            "Invalid parameter at 'tagStatus' failed to satisfy constraint: '{o}' is not one of [TAGGED, UNTAGGED, ANY]"
        ))),
    }
}

/// Result of one layer's availability check.
#[derive(Debug, Clone)]
pub enum LayerCheck {
    Available { digest: String, size: u64 },
    Unavailable { digest: String },
    Failed { digest: String, code: &'static str, reason: String },
}

impl Registry {
    fn not_found(&self, key: &str) -> Error {
        let (registry, name) = self.split_key(key);
        Error::RepositoryNotFound(format!(
            "The repository with name '{name}' does not exist in the registry with id '{registry}'"
        ))
    }

    /// The registry (account) and name of a repository key.
    pub fn split_key<'a>(&'a self, key: &'a str) -> (&'a str, &'a str) {
        match berth_core::split_repo_key(key) {
            (Some(a), n) => (a, n),
            (None, n) => (self.settings.registry_id.as_str(), n),
        }
    }

    /// The key of repository `name` in registry `registry`.
    pub fn repo_key(&self, registry: &str, name: &str) -> String {
        let account = (registry != self.settings.registry_id).then_some(registry);
        berth_core::repo_key(account, name)
    }

    /// The repository, which must exist (ECR API calls never create one). `key` is the name,
    /// account-qualified outside the configured account ([`berth_core::repo_key`]).
    pub async fn repository(&self, key: &str) -> Result<(RepoName, RepoRow)> {
        let repo = RepoName::parse_key(key)?;
        let row = self.meta.get_repo(repo.as_str()).await?.ok_or_else(|| self.not_found(key))?;
        Ok((repo, row))
    }

    pub fn repository_view(&self, row: RepoRow) -> Repository {
        let (registry, name) = self.split_key(&row.name);
        let (registry, name) = (registry.to_string(), name.to_string());
        Repository {
            arn: self.repository_arn(&row.name),
            uri: format!("{}/{name}", self.registry_host(&registry)),
            mutability_filters: parse_filters(row.settings.mutability_filters.as_deref()),
            name,
            registry_id: registry,
            row,
        }
    }

    /// `host[:port]` clients reach a registry at: the public host for the configured account,
    /// `<account>.<account_domain>` for the others when a domain is configured.
    pub fn registry_host(&self, registry: &str) -> String {
        match &self.settings.account_domain {
            Some(d) if registry != self.settings.registry_id => format!("{registry}.{d}"),
            _ => self.settings.public_host().to_string(),
        }
    }

    /// The registry a `/v2/` request's host names: `<account>.<account_domain>` for another
    /// account (which must exist), else the configured one.
    pub async fn registry_for_host(&self, host: Option<&str>) -> Result<String> {
        let default = || Ok(self.settings.registry_id.clone());
        let (Some(domain), Some(host)) = (&self.settings.account_domain, host) else { return default() };
        let host =
            host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
        let Some(label) = host.strip_suffix(domain.as_str()).and_then(|h| h.strip_suffix('.')) else {
            return default();
        };
        if label.len() != 12 || !label.bytes().all(|b| b.is_ascii_digit()) {
            return default();
        }
        if !self.account_exists(label).await? {
            return Err(Error::NameUnknown(format!("registry {label} (no such account on this server)")));
        }
        Ok(label.to_string())
    }

    /// The ARN of the repository with key `key`.
    pub fn repository_arn(&self, key: &str) -> String {
        let (registry, name) = self.split_key(key);
        format!("arn:aws:ecr:{}:{registry}:repository/{name}", self.settings.region)
    }

    /// A registry id in a request must be 12 digits (which registries exist the API layer
    /// checks when it picks the registry a call is about).
    pub fn check_registry_id(&self, id: Option<&str>) -> Result<()> {
        match id {
            Some(id) if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) => Err(Error::InvalidParameter(
                format!("Invalid parameter at 'registryId' failed to satisfy constraint: '{id}' is not 12 digits"),
            )),
            _ => Ok(()),
        }
    }

    // ---- repositories ----

    pub async fn create_repository(&self, key: &str, new: NewRepository) -> Result<Repository> {
        let (registry, name) = self.split_key(key);
        let registry = registry.to_string();
        if name.len() < 2 || name.len() > 256 {
            return Err(Error::InvalidParameter(format!(
                "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'Member must have length between \
                 2 and 256', got {} characters",
                name.len()
            )));
        }
        let repo = RepoName::parse_key(key).map_err(|e| {
            Error::InvalidParameter(format!("Invalid parameter at 'repositoryName' failed to satisfy constraint: {e}"))
        })?;
        let mutability = new.tag_mutability.unwrap_or_else(|| "MUTABLE".into());
        let filters = check_mutability(&mutability, &new.mutability_filters)?;
        let encryption_type = new.encryption_type.unwrap_or_else(|| "AES256".into());
        check_encryption(&encryption_type, new.kms_key.as_deref())?;
        check_resource_tags(&new.tags)?;
        let settings = RepoSettings {
            tag_mutability: mutability,
            mutability_filters: filters,
            scan_on_push: new.scan_on_push.unwrap_or(false),
            encryption_type,
            kms_key: new.kms_key.filter(|k| !k.is_empty()),
        };
        let row = self.meta.create_repo(repo.as_str(), &settings, &new.tags, false).await.map_err(|e| match e {
            MetaError::AlreadyExists(_) => Error::RepositoryAlreadyExists(format!(
                "The repository with name '{repo}' already exists in the registry with id '{registry}'"
            )),
            e => e.into(),
        })?;
        self.access.invalidate();
        Ok(self.repository_view(row))
    }

    /// Named repositories (each must exist and be describable by `who`), or a page of the ones
    /// `who` may describe; the token continues after the last one shown ([`crate::visible_page`]).
    pub async fn describe_repositories(
        &self,
        who: &Who,
        registry: &str,
        names: Option<&[String]>,
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<Repository>> {
        const ACTION: &str = "ecr:DescribeRepositories";
        if let Some(names) = names {
            if max.is_some() || token.is_some() {
                return Err(Error::InvalidParameter(
                    "maxResults and nextToken cannot be used together with repositoryNames".into(),
                ));
            }
            if names.is_empty() || names.len() > 100 {
                return Err(Error::InvalidParameter("repositoryNames must list 1 to 100 names".into()));
            }
            let mut items = Vec::new();
            for n in names {
                self.check_access(who, ACTION, n).await?;
                items.push(self.repository_view(self.repository(n).await?.1));
            }
            return Ok(Paged { items, next: None });
        }
        let limit = check_max(max, 1000)?;
        let after = decode_token(token)?;
        let prefix = self.repo_key(registry, "");
        let prefix = &prefix;
        let (rows, more) = crate::visible_page(
            after,
            limit as usize,
            |after, n| Box::pin(async move { Ok(self.meta.list_repo_rows(prefix, after.as_deref(), n).await?) }),
            |r: &RepoRow| r.name.clone(),
            |k| Box::pin(async move { Ok(self.decide(who, ACTION, &k).await?.allowed()) }),
        )
        .await?;
        let next = if more { rows.last().map(|r| encode_token(&r.name)) } else { None };
        Ok(Paged { items: rows.into_iter().map(|r| self.repository_view(r)).collect(), next })
    }

    pub async fn delete_repository(&self, name: &str, force: bool) -> Result<Repository> {
        let (repo, row) = self.repository(name).await?;
        self.meta.delete_repo(row.id, force).await.map_err(|e| match e {
            MetaError::NotEmpty => Error::RepositoryNotEmpty(format!(
                "The repository with name '{repo}' in registry with id '{}' cannot be deleted because it still \
                 contains images",
                self.split_key(name).0
            )),
            e => e.into(),
        })?;
        self.cache.forget_repo(repo.as_str());
        self.access.invalidate();
        Ok(self.repository_view(row))
    }

    pub async fn put_tag_mutability(&self, name: &str, mutability: &str, filters: &[String]) -> Result<Repository> {
        let (_, row) = self.repository(name).await?;
        let stored = check_mutability(mutability, filters)?;
        self.meta.set_tag_mutability(row.id, mutability, stored.as_deref()).await?;
        Ok(self.repository_view(self.repository(name).await?.1))
    }

    pub async fn put_scan_on_push(&self, name: &str, on: bool) -> Result<Repository> {
        let (_, row) = self.repository(name).await?;
        self.meta.set_scan_on_push(row.id, on).await?;
        Ok(self.repository_view(self.repository(name).await?.1))
    }

    // ---- resource tags ----

    /// The repository an ARN names (only repositories carry tags).
    async fn repo_of_arn(&self, arn: &str) -> Result<RepoRow> {
        let prefix = format!("arn:aws:ecr:{}:", self.settings.region);
        let parsed = arn.strip_prefix(&prefix).and_then(|r| r.split_once(":repository/"));
        let Some((registry, name)) = parsed.filter(|(r, _)| self.check_registry_id(Some(r)).is_ok()) else {
            return Err(Error::InvalidParameter(format!(
                "Invalid parameter at 'resourceArn' failed to satisfy constraint: '{arn}' is not a repository ARN of \
                 this registry ({prefix}<registry id>:repository/<name>)"
            )));
        };
        let key = self.repo_key(registry, name);
        let name = key.as_str();
        Ok(self.repository(name).await?.1)
    }

    pub async fn list_resource_tags(&self, arn: &str) -> Result<Vec<(String, String)>> {
        let row = self.repo_of_arn(arn).await?;
        Ok(self.meta.repo_tags(row.id).await?)
    }

    pub async fn tag_resource(&self, arn: &str, tags: &[(String, String)]) -> Result<()> {
        let row = self.repo_of_arn(arn).await?;
        check_resource_tags(tags)?;
        self.meta.put_repo_tags(row.id, tags).await?;
        self.access.invalidate();
        Ok(())
    }

    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        let row = self.repo_of_arn(arn).await?;
        if let Some(k) = keys.iter().find(|k| k.is_empty() || k.chars().count() > 128) {
            return Err(Error::InvalidTagParameter(format!("tag key '{k}' must be 1 to 128 characters")));
        }
        self.meta.remove_repo_tags(row.id, keys).await?;
        self.access.invalidate();
        Ok(())
    }

    // ---- creation templates ----

    pub async fn create_template(&self, prefix: &str, t: Template) -> Result<StoredTemplate> {
        check_prefix(prefix)?;
        t.check()?;
        if self.meta.templates().await?.len() >= MAX_TEMPLATES {
            return Err(Error::Validation(format!("a registry may have at most {MAX_TEMPLATES} creation templates")));
        }
        let body = serde_json::to_string(&t).expect("templates serialize");
        let row = self.meta.put_template(prefix, &body, true).await.map_err(|e| match e {
            MetaError::AlreadyExists(p) => Error::TemplateAlreadyExists(p),
            e => e.into(),
        })?;
        stored_template(row)
    }

    pub async fn update_template(&self, prefix: &str, update: impl FnOnce(&mut Template)) -> Result<StoredTemplate> {
        check_prefix(prefix)?;
        let current = self
            .meta
            .templates()
            .await?
            .into_iter()
            .find(|t| t.prefix == prefix)
            .ok_or_else(|| Error::TemplateNotFound(prefix.to_string()))?;
        let mut t = stored_template(current)?.template;
        update(&mut t);
        t.check()?;
        let body = serde_json::to_string(&t).expect("templates serialize");
        let row = self.meta.put_template(prefix, &body, false).await.map_err(|e| match e {
            MetaError::NotFound(p) => Error::TemplateNotFound(p),
            e => e.into(),
        })?;
        stored_template(row)
    }

    pub async fn delete_template(&self, prefix: &str) -> Result<StoredTemplate> {
        check_prefix(prefix)?;
        let row =
            self.meta.delete_template(prefix).await?.ok_or_else(|| Error::TemplateNotFound(prefix.to_string()))?;
        stored_template(row)
    }

    pub async fn describe_templates(
        &self,
        prefixes: &[String],
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<StoredTemplate>> {
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
        let settings = RepoSettings {
            mutability_filters: check_mutability(&mutability, &filters).unwrap_or(None),
            tag_mutability: mutability,
            scan_on_push: false,
            encryption_type: t.encryption_configuration.as_ref().map_or("AES256".into(), |e| e.encryption_type.clone()),
            kms_key: t.encryption_configuration.and_then(|e| e.kms_key).filter(|k| !k.is_empty()),
        };
        Ok(Some((settings, t.resource_tags.into_iter().map(|t| (t.key, t.value)).collect())))
    }

    // ---- registry settings ----

    pub async fn account_setting(&self, name: &str) -> Result<String> {
        match name {
            "BLOB_MOUNTING" => Ok(self.meta.setting("BLOB_MOUNTING").await?.unwrap_or_else(|| "ENABLED".into())),
            _ => Err(Error::Validation(format!(
                "Account setting '{name}' is not supported; Berth supports BLOB_MOUNTING"
            ))),
        }
    }

    pub async fn put_account_setting(&self, name: &str, value: &str) -> Result<String> {
        self.account_setting(name).await?;
        if value != "ENABLED" && value != "DISABLED" {
            return Err(Error::Validation(format!("BLOB_MOUNTING must be ENABLED or DISABLED, not '{value}'")));
        }
        self.meta.put_setting(name, value).await?;
        Ok(value.to_string())
    }

    pub(crate) async fn blob_mounting(&self) -> Result<bool> {
        Ok(self.account_setting("BLOB_MOUNTING").await? == "ENABLED")
    }

    // ---- images ----

    /// Resolves an image id to its manifest; the failure (as BatchGetImage reports it) otherwise.
    /// The digest an image id names in repository `key` (`ImageNotFoundException` if none).
    pub async fn image_digest(&self, key: &str, id: &ImageId) -> Result<String> {
        let (_, row) = self.repository(key).await?;
        match self.resolve(row.id, id).await? {
            Ok(m) => Ok(m.digest.clone()),
            Err(f) => {
                let (registry, name) = self.split_key(key);
                Err(Error::ImageNotFound(format!(
                    "The image with imageId {{imageDigest:'{}', imageTag:'{}'}} does not exist within the repository \
                     with name '{name}' in the registry with id '{registry}' ({})",
                    id.digest.as_deref().unwrap_or("null"),
                    id.tag.as_deref().unwrap_or("null"),
                    f.reason
                )))
            }
        }
    }

    async fn resolve(&self, repo_id: i64, id: &ImageId) -> Result<Result<Arc<Manifest>, ImageFailure>> {
        let fail = |code, reason: String| Ok(Err(ImageFailure { id: id.clone(), code, reason }));
        if id.digest.is_none() && id.tag.is_none() {
            return fail(
                "MissingDigestAndTag",
                "Invalid request parameters: both tag and digest cannot be null".into(),
            );
        }
        if let Some(d) = &id.digest
            && d.parse::<Digest>().is_err()
        {
            return fail("InvalidImageDigest", format!("Invalid image digest '{d}'"));
        }
        if let Some(t) = &id.tag
            && Tag::parse(t).is_err()
        {
            return fail("InvalidImageTag", format!("Invalid image tag '{t}'"));
        }
        let row = match (&id.tag, &id.digest) {
            (Some(t), _) => self.meta.get_manifest_by_tag(repo_id, t).await?,
            (None, Some(d)) => self.meta.get_manifest(repo_id, d).await?,
            (None, None) => None,
        };
        let Some(row) = row else { return fail("ImageNotFound", "Requested image not found".into()) };
        if let Some(d) = &id.digest
            && *d != row.digest
        {
            return fail("ImageTagDoesNotMatchDigest", format!("Image tag does not match the digest {d}"));
        }
        Ok(Ok(Arc::new(Manifest::from(row))))
    }

    /// BatchGetImage: the manifests, with failures for ids that do not resolve.
    pub async fn batch_get_image(
        &self,
        name: &str,
        ids: &[ImageId],
        accepted: Option<&[String]>,
    ) -> Result<(Vec<(ImageId, Arc<Manifest>)>, Vec<ImageFailure>)> {
        check_batch(ids.len())?;
        let (repo, row) = self.repository(name).await?;
        let (mut images, mut failures) = (Vec::new(), Vec::new());
        for id in ids {
            match self.resolve(row.id, id).await? {
                Ok(m) if accepted.is_some_and(|a| !a.iter().any(|t| t == &m.media_type)) => {
                    failures.push(ImageFailure {
                        id: id.clone(),
                        code: "ImageNotFound",
                        reason: format!("the image is a {}, which acceptedMediaTypes does not include", m.media_type),
                    });
                }
                Ok(m) => {
                    self.record_pull(&repo, &m.digest);
                    images.push((ImageId { digest: Some(m.digest.clone()), tag: id.tag.clone() }, m));
                }
                Err(f) => failures.push(f),
            }
        }
        Ok((images, failures))
    }

    /// BatchDeleteImage with ECR's semantics: a tag alone removes the tag (and the image with its
    /// last tag); a digest removes the image and all its tags.
    pub async fn batch_delete_image(&self, name: &str, ids: &[ImageId]) -> Result<(Vec<ImageId>, Vec<ImageFailure>)> {
        check_batch(ids.len())?;
        let (repo, row) = self.repository(name).await?;
        let (mut deleted, mut failures) = (Vec::new(), Vec::new());
        for id in ids {
            let m = match self.resolve(row.id, id).await? {
                Ok(m) => m,
                Err(f) => {
                    failures.push(f);
                    continue;
                }
            };
            if id.digest.is_none() {
                let tag = id.tag.as_deref().expect("resolved by tag");
                if let Some((digest, _)) = self.meta.untag_image(row.id, tag).await? {
                    deleted.push(ImageId { digest: Some(digest), tag: Some(tag.to_string()) });
                }
                continue;
            }
            let tags = self.meta.image(row.id, &m.digest).await?.map(|i| i.tags).unwrap_or_default();
            match self.meta.delete_manifest(row.id, &m.digest).await {
                Ok(_) => {
                    if tags.is_empty() {
                        deleted.push(ImageId { digest: Some(m.digest.clone()), tag: None });
                    }
                    for t in tags {
                        deleted.push(ImageId { digest: Some(m.digest.clone()), tag: Some(t) });
                    }
                }
                Err(MetaError::Referenced { parent, .. }) => failures.push(ImageFailure {
                    id: id.clone(),
                    code: "ImageReferencedByManifestList",
                    reason: format!("Requested image referenced by manifest list: [{parent}]"),
                }),
                Err(e) => return Err(e.into()),
            }
        }
        self.cache.drop_manifests(repo.as_str());
        Ok((deleted, failures))
    }

    /// PutImage: stores a manifest (and tag) given in the request.
    pub async fn put_image(
        &self,
        name: &str,
        manifest: &str,
        media_type: Option<&str>,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<(ImageId, Arc<Manifest>)> {
        let (repo, row) = self.repository(name).await?;
        if let Some(t) = tag {
            Tag::parse(t)?;
        }
        let digest = digest
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|e| Error::InvalidParameter(format!("Invalid parameter at 'imageDigest': {e}")))
            })
            .transpose()?;
        let (put, outcome) = self
            .store_manifest(&repo, row.id, tag, digest.as_ref(), media_type, manifest.as_bytes(), crate::Via::PUT_IMAGE)
            .await
            .map_err(|e| match e {
                Error::DigestInvalid(m) if digest.is_some() => Error::ImageDigestMismatch(m),
                e => e,
            })?;
        if !outcome.new_manifest && outcome.tag_unchanged {
            return Err(Error::ImageAlreadyExists(format!(
                "Image with digest '{}'{} already exists in the repository with name '{repo}' in registry with id '{}'",
                put.digest,
                tag.map(|t| format!(" and tag '{t}'")).unwrap_or_default(),
                self.split_key(repo.as_str()).0
            )));
        }
        let m = self.get_manifest(&repo, &put.digest.to_string()).await?;
        Ok((ImageId { digest: Some(put.digest.to_string()), tag: tag.map(str::to_string) }, m))
    }

    /// ListImages: `(digest, tag)` pairs.
    pub async fn list_image_ids(
        &self,
        name: &str,
        status: TagStatus,
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<ImageId>> {
        let (_, row) = self.repository(name).await?;
        let limit = check_max(max, 1000)?;
        let after = decode_token(token)?;
        let after = after.as_deref().map(|k| k.split_once('\t').unwrap_or((k, "")));
        let rows = self.meta.list_image_ids(row.id, status, after, limit + 1).await?;
        let ids = rows.into_iter().map(|(d, t)| ImageId { digest: Some(d), tag: t }).collect();
        Ok(paged(ids, limit, |i| format!("{}\t{}", i.digest.as_deref().unwrap_or(""), i.tag.as_deref().unwrap_or(""))))
    }

    /// DescribeImages: named images (each must exist), or a page of all.
    pub async fn describe_images(
        &self,
        name: &str,
        ids: Option<&[ImageId]>,
        status: TagStatus,
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<ImageRow>> {
        let (_, row) = self.repository(name).await?;
        if let Some(ids) = ids {
            if max.is_some() || token.is_some() {
                return Err(Error::InvalidParameter(
                    "maxResults and nextToken cannot be used together with imageIds".into(),
                ));
            }
            check_batch(ids.len())?;
            let mut items: Vec<ImageRow> = Vec::new();
            for id in ids {
                let m = self.resolve(row.id, id).await?.map_err(|f| {
                    Error::ImageNotFound(format!(
                        "The image with imageId {{imageDigest:'{}', imageTag:'{}'}} does not exist within the repository \
                         with name '{}' in the registry with id '{}' ({})",
                        id.digest.as_deref().unwrap_or("null"),
                        id.tag.as_deref().unwrap_or("null"),
                        self.split_key(name).1,
                        self.split_key(name).0,
                        f.reason
                    ))
                })?;
                if items.iter().any(|i| i.digest == m.digest) {
                    continue;
                }
                if let Some(img) = self.meta.image(row.id, &m.digest).await? {
                    items.push(img);
                }
            }
            return Ok(Paged { items, next: None });
        }
        let limit = check_max(max, 1000)?;
        let after = decode_token(token)?;
        let items = self.meta.list_images(row.id, status, after.as_deref(), limit + 1).await?;
        Ok(paged(items, limit, |i| i.digest.clone()))
    }

    /// ListImageReferrers: manifests whose subject is `subject`, optionally of given artifact types.
    pub async fn list_image_referrers(
        &self,
        name: &str,
        subject: &str,
        artifact_types: &[String],
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<berth_meta::ReferrerRow>> {
        let (_, row) = self.repository(name).await?;
        let subject: Digest = subject
            .parse()
            .map_err(|e| Error::InvalidParameter(format!("Invalid parameter at 'subjectId.imageDigest': {e}")))?;
        if artifact_types.len() > 5 {
            return Err(Error::InvalidParameter("filter.artifactTypes may list at most 5 types".into()));
        }
        let limit = check_max(max, 50)?;
        let after = decode_token(token)?.unwrap_or_default();
        let mut items: Vec<_> = self
            .meta
            .referrers(row.id, &subject.to_string(), None)
            .await?
            .into_iter()
            .filter(|r| {
                artifact_types.is_empty() || r.artifact_type.as_ref().is_some_and(|a| artifact_types.contains(a))
            })
            .filter(|r| r.digest.as_str() > after.as_str())
            .collect();
        items.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(paged(items, limit, |r| r.digest.clone()))
    }

    // ---- pull times ----

    /// Notes that `digest` was pulled now; written by [`Registry::flush_pulls`].
    pub fn record_pull(&self, repo: &RepoName, digest: &str) {
        let now = berth_meta::now_ms();
        let mut p = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        // Repeated pulls of the same image (the common case) update in place, without allocating.
        if let Some(t) = p.get_mut(repo.as_str()).and_then(|m| m.get_mut(digest)) {
            *t = now;
        } else if p.len() < 10_000 {
            p.entry(repo.to_string()).or_default().insert(digest.to_string(), now);
        }
    }

    /// Writes the pull times noted since the last flush.
    pub async fn flush_pulls(&self) -> Result<()> {
        let pending = {
            let mut p = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *p)
        };
        if pending.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        for (repo, digests) in pending {
            if let Some(id) = self.meta.repo_id(&repo).await? {
                rows.extend(digests.into_iter().map(|(d, at)| (id, d, at)));
            }
        }
        self.meta.record_pulls(rows).await?;
        Ok(())
    }

    // ---- layers ----

    pub async fn check_layers(&self, name: &str, digests: &[String]) -> Result<Vec<LayerCheck>> {
        check_batch(digests.len())?;
        let (_, row) = self.repository(name).await?;
        let mut out = Vec::with_capacity(digests.len());
        for d in digests {
            if d.is_empty() {
                out.push(LayerCheck::Failed {
                    digest: d.clone(),
                    code: "MissingLayerDigest",
                    reason: "The request did not contain a layer digest".into(),
                });
                continue;
            }
            let Ok(digest) = d.parse::<Digest>() else {
                out.push(LayerCheck::Failed {
                    digest: d.clone(),
                    code: "InvalidLayerDigest",
                    reason: format!("Invalid layer digest '{d}'"),
                });
                continue;
            };
            out.push(match self.meta.repo_blob(row.id, &digest.to_string()).await? {
                Some(size) => LayerCheck::Available { digest: d.clone(), size: size as u64 },
                None => LayerCheck::Unavailable { digest: d.clone() },
            });
        }
        Ok(out)
    }

    pub async fn initiate_layer_upload(&self, name: &str) -> Result<String> {
        let (repo, _) = self.repository(name).await?;
        Ok(self.start_upload(&repo).await?.id)
    }

    /// UploadLayerPart: appends `[first, last]`, which must start where the upload ends.
    /// Returns the last byte received.
    pub async fn upload_layer_part(&self, name: &str, id: &str, first: u64, last: u64, data: Vec<u8>) -> Result<u64> {
        let (repo, _) = self.repository(name).await?;
        let status = self.upload_status(&repo, id).await?;
        let last_valid = status.offset.checked_sub(1);
        let bad = |message: String| Error::InvalidLayerPart { message, last_valid_byte: last_valid };
        if data.is_empty() {
            return Err(bad("The layer part is empty".into()));
        }
        if last < first || last - first + 1 != data.len() as u64 {
            return Err(bad(format!(
                "partFirstByte {first} and partLastByte {last} describe {} bytes, but layerPartBlob holds {}",
                (last + 1).saturating_sub(first),
                data.len()
            )));
        }
        if data.len() as u64 > MAX_PART {
            return Err(bad(format!("A layer part may be at most {MAX_PART} bytes")));
        }
        if first != status.offset {
            return Err(bad(format!(
                "The part starts at byte {first} but the upload holds {} bytes; send the part that starts there",
                status.offset
            )));
        }
        let len = data.len() as u64;
        let stream = futures_util::stream::once(async move { Ok(bytes::Bytes::from(data)) }).boxed();
        let s = self.append_upload(&repo, id, Some(first), stream).await.map_err(|e| match e {
            Error::ChunkOutOfOrder { current, .. } => Error::InvalidLayerPart {
                message: format!("The part starts at byte {first} but the upload holds {current} bytes"),
                last_valid_byte: current.checked_sub(1),
            },
            e => e,
        })?;
        self.meta.record_layer_part(id, len < MIN_PART).await?;
        Ok(s.offset - 1)
    }

    /// CompleteLayerUpload: the upload becomes the layer `digests[0]`.
    pub async fn complete_layer_upload(&self, name: &str, id: &str, digests: &[String]) -> Result<String> {
        let (repo, row) = self.repository(name).await?;
        let [d] = digests else {
            return Err(Error::InvalidParameter(format!(
                "layerDigests must hold exactly one digest, got {}",
                digests.len()
            )));
        };
        let digest: Digest =
            d.parse().map_err(|e| Error::InvalidParameter(format!("Invalid parameter at 'layerDigests': {e}")))?;
        let status = self.upload_status(&repo, id).await?;
        if status.offset == 0 {
            return Err(Error::EmptyUpload(format!("The upload {id} contains no layer parts")));
        }
        if self.meta.layer_part_too_small(id).await? {
            return Err(Error::LayerPartTooSmall(format!(
                "Every layer part except the last must be at least {MIN_PART} bytes"
            )));
        }
        if self.meta.repo_blob(row.id, &digest.to_string()).await?.is_some() {
            self.cancel_upload(&repo, id).await?;
            return Err(Error::LayerAlreadyExists(format!(
                "The layer '{digest}' already exists in the repository with name '{}' in the registry with id '{}'",
                self.split_key(name).1,
                self.split_key(name).0
            )));
        }
        self.finish_upload(&repo, id, &digest, None, None).await.map_err(|e| match e {
            Error::DigestInvalid(m) => Error::InvalidLayer(m),
            e => e,
        })?;
        Ok(digest.to_string())
    }

    /// GetDownloadUrlForLayer: a URL (relative to the public URL) a plain GET can fetch.
    pub async fn layer_download_url(&self, name: &str, digest: &str) -> Result<String> {
        let (_, row) = self.repository(name).await?;
        let d: Digest =
            digest.parse().map_err(|e| Error::InvalidParameter(format!("Invalid parameter at 'layerDigest': {e}")))?;
        if self.meta.repo_blob(row.id, &d.to_string()).await?.is_none() {
            return Err(Error::BlobUnknown(format!(
                "{d} (The layer does not exist in the repository with name '{name}')"
            )));
        }
        // A store with its own download URLs (an object store's presigned GET) serves the layer
        // itself; otherwise Berth's signed URL does.
        let ttl = std::time::Duration::from_secs(crate::auth::DOWNLOAD_TTL_SECS as u64);
        if let Some(url) = self.blobs.presign(&d, ttl).await? {
            return Ok(url);
        }
        let q = self.auth().sign_download(&row.name, &d.to_string());
        Ok(format!("{}/berth/layers/{}/{d}?{q}", self.settings.public_url.trim_end_matches('/'), row.name))
    }
}

fn check_batch(n: usize) -> Result<()> {
    if n == 0 || n > 100 {
        return Err(Error::InvalidParameter(format!("a batch must name between 1 and 100 items, got {n}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(m: &str, filters: &[&str]) -> RepoSettings {
        let f: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        RepoSettings {
            tag_mutability: m.into(),
            mutability_filters: check_mutability(m, &f).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn mutability_with_exclusions() {
        assert!(!tag_is_immutable(&settings("MUTABLE", &[]), "latest"));
        assert!(tag_is_immutable(&settings("IMMUTABLE", &[]), "latest"));
        let s = settings("IMMUTABLE_WITH_EXCLUSION", &["latest", "dev-*"]);
        assert!(!tag_is_immutable(&s, "latest"));
        assert!(!tag_is_immutable(&s, "dev-42"));
        assert!(tag_is_immutable(&s, "v1.0"));
        let s = settings("MUTABLE_WITH_EXCLUSION", &["v*"]);
        assert!(tag_is_immutable(&s, "v1.0"));
        assert!(!tag_is_immutable(&s, "latest"));
        assert!(check_mutability("IMMUTABLE_WITH_EXCLUSION", &[]).is_err());
        assert!(check_mutability("MUTABLE", &["x".into()]).is_err());
        assert!(check_mutability("SOMETIMES", &[]).is_err());
        assert!(check_mutability("IMMUTABLE_WITH_EXCLUSION", &["bad/filter".into()]).is_err());
        let six: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
        assert!(check_mutability("IMMUTABLE_WITH_EXCLUSION", &six).is_err());
    }

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

    #[test]
    fn resource_tags() {
        assert!(check_resource_tags(&[("team".into(), "a".into())]).is_ok());
        assert!(matches!(check_resource_tags(&[("aws:x".into(), "a".into())]), Err(Error::InvalidTagParameter(_))));
        assert!(matches!(check_resource_tags(&[("".into(), "a".into())]), Err(Error::InvalidTagParameter(_))));
        let many: Vec<_> = (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(check_resource_tags(&many), Err(Error::TooManyTags(_))));
    }
}
