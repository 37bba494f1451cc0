//! Repositories and the registry's own settings: creating, describing and deleting
//! repositories, their settings and resource tags, repository and registry policies, account
//! settings, and the repository a push creates through a creation template.

use berth_core::RepoName;
use berth_meta::{MetaError, RepoRow, RepoSettings};

use crate::access::{Access, MAX_REGISTRY_POLICY, MAX_REPOSITORY_POLICY, parse_resource_policy};
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Conflict, Error, Exists, InvalidKind, NotFound, Result};
use crate::identity::Identities;
use crate::model::{Paged, check_max, decode_token, encode_token, visible_page};
use crate::repo_settings::{check_encryption, check_mutability, check_resource_tags, parse_filters};
use crate::templates::Templates;

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

domain! {
    /// Repositories, their settings and policies, and the registry's settings.
    Repositories
}

impl<'a> Repositories<'a> {
    fn access(&self) -> Access<'a> {
        Access(self.0)
    }

    /// The repository `key` names, once `caller` may do `action` on it (decided before its
    /// existence is looked up, so a refusal does not tell whether it exists).
    fn templates(&self) -> Templates<'a> {
        Templates(self.0)
    }

    pub(crate) async fn allowed(&self, caller: &Caller, action: &str, key: &str) -> Result<(RepoName, RepoRow)> {
        let repo = RepoName::parse_key(key)?;
        self.access().check(caller, action, repo.as_str()).await?;
        self.repository(repo.as_str()).await
    }

    fn not_found(&self, key: &str) -> Error {
        NotFound::Repository { key: key.to_string() }.into()
    }

    /// The repository, which must exist (ECR API calls never create one). `key` is the name,
    /// account-qualified outside the configured account ([`berth_core::repo_key`]).
    pub(crate) async fn repository(&self, key: &str) -> Result<(RepoName, RepoRow)> {
        let repo = RepoName::parse_key(key)?;
        let row = self.meta.get_repo(repo.as_str()).await?.ok_or_else(|| self.not_found(key))?;
        Ok((repo, row))
    }

    pub(crate) fn repository_view(&self, row: RepoRow) -> Repository {
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
        if !Identities(self.0).account_exists(label).await? {
            return Err(NotFound::Registry { account: label.to_string() }.into());
        }
        Ok(label.to_string())
    }

    /// A registry id in a request must be 12 digits (which registries exist the API layer
    /// checks when it picks the registry a call is about).
    pub fn check_registry_id(&self, id: Option<&str>) -> Result<()> {
        match id {
            Some(id) if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) => {
                Err(Error::parameter("registryId", format!("'{id}' is not 12 digits")))
            }
            _ => Ok(()),
        }
    }

    pub async fn create_repository(&self, caller: &Caller, key: &str, new: NewRepository) -> Result<Repository> {
        let repo = RepoName::parse_key(key).map_err(|e| Error::parameter("repositoryName", format!("{e}")))?;
        self.access().check(caller, "ecr:CreateRepository", repo.as_str()).await?;
        let name = self.split_key(key).1;
        if name.len() < 2 || name.len() > 256 {
            return Err(Error::parameter(
                "repositoryName",
                format!(
                    "'Member must have length between \
                 2 and 256', got {} characters",
                    name.len()
                ),
            ));
        }
        let mutability = new.tag_mutability.unwrap_or_else(|| "MUTABLE".into());
        let filters = check_mutability(&mutability, &new.mutability_filters)?;
        let encryption_type = new.encryption_type.unwrap_or_else(|| "AES256".into());
        check_encryption(&encryption_type, new.kms_key.as_deref())?;
        check_resource_tags(&new.tags)?;
        // A KMS repository is sealed under the key it names (or the account's AWS-managed key),
        // resolved now and fixed for the repository's life.
        let (kms_key, encryption_key) = if encryption_type == "AES256" {
            (None, None)
        } else {
            let account = self.split_key(repo.as_str()).0.to_string();
            let named = new.kms_key.as_deref().filter(|k| !k.is_empty());
            let (id, arn) = crate::kms::Kms(self.0).key_for_repository(Some(caller), &account, named).await?;
            (Some(arn), Some(id))
        };
        let settings = RepoSettings {
            tag_mutability: mutability,
            mutability_filters: filters,
            scan_on_push: new.scan_on_push.unwrap_or(false),
            encryption_type,
            kms_key,
            encryption_key,
        };
        let row = self.meta.create_repo(repo.as_str(), &settings, &new.tags, false).await.map_err(|e| match e {
            MetaError::AlreadyExists(_) => Error::from(Exists::Repository { key: repo.to_string() }),
            e => e.into(),
        })?;
        self.caches.access.invalidate();
        Ok(self.repository_view(row))
    }

    /// Named repositories (each must exist and be describable by `who`), or a page of the ones
    /// `who` may describe; the token continues after the last one shown ([`visible_page`]).
    pub async fn describe_repositories(
        &self,
        who: &Caller,
        registry: &str,
        names: Option<&[String]>,
        token: Option<&str>,
        max: Option<i64>,
    ) -> Result<Paged<Repository>> {
        const ACTION: &str = "ecr:DescribeRepositories";
        if let Some(names) = names {
            if max.is_some() || token.is_some() {
                return Err(Error::bad_request(
                    "maxResults and nextToken cannot be used together with repositoryNames".into(),
                ));
            }
            if names.is_empty() || names.len() > 100 {
                return Err(Error::bad_request("repositoryNames must list 1 to 100 names".into()));
            }
            let mut items = Vec::new();
            for n in names {
                self.access().check(who, ACTION, n).await?;
                items.push(self.repository_view(self.repository(n).await?.1));
            }
            return Ok(Paged { items, next: None });
        }
        let limit = check_max(max, 1000)?;
        let after = decode_token(token)?;
        let prefix = self.repo_key(registry, "");
        let prefix = &prefix;
        let (rows, more) = visible_page(
            after,
            limit as usize,
            |after, n| Box::pin(async move { Ok(self.meta.list_repo_rows(prefix, after.as_deref(), n).await?) }),
            |r: &RepoRow| r.name.clone(),
            |k| Box::pin(async move { Ok(self.access().decide(who, ACTION, &k).await?.allowed()) }),
        )
        .await?;
        let next = if more { rows.last().map(|r| encode_token(&r.name)) } else { None };
        Ok(Paged { items: rows.into_iter().map(|r| self.repository_view(r)).collect(), next })
    }

    pub async fn delete_repository(&self, caller: &Caller, name: &str, force: bool) -> Result<Repository> {
        let (repo, row) = self.allowed(caller, "ecr:DeleteRepository", name).await?;
        self.meta.delete_repo(row.id, force).await.map_err(|e| match e {
            MetaError::NotEmpty => Error::from(Conflict::RepositoryNotEmpty { key: repo.to_string() }),
            e => e.into(),
        })?;
        self.caches.content.forget_repo(repo.as_str());
        self.caches.access.invalidate();
        Ok(self.repository_view(row))
    }

    pub async fn put_tag_mutability(
        &self,
        caller: &Caller,
        name: &str,
        mutability: &str,
        filters: &[String],
    ) -> Result<Repository> {
        let (_, row) = self.allowed(caller, "ecr:PutImageTagMutability", name).await?;
        let stored = check_mutability(mutability, filters)?;
        self.meta.set_tag_mutability(row.id, mutability, stored.as_deref()).await?;
        Ok(self.repository_view(self.repository(name).await?.1))
    }

    pub async fn put_scan_on_push(&self, caller: &Caller, name: &str, on: bool) -> Result<Repository> {
        let (_, row) = self.allowed(caller, "ecr:PutImageScanningConfiguration", name).await?;
        self.meta.set_scan_on_push(row.id, on).await?;
        Ok(self.repository_view(self.repository(name).await?.1))
    }

    /// The repository an ARN names (only repositories carry tags), once `caller` may do
    /// `action` on it.
    async fn repo_of_arn(&self, caller: &Caller, action: &str, arn: &str) -> Result<RepoRow> {
        let prefix = format!("arn:aws:ecr:{}:", self.settings.region);
        let parsed = arn.strip_prefix(&prefix).and_then(|r| r.split_once(":repository/"));
        let Some((registry, name)) = parsed.filter(|(r, _)| self.check_registry_id(Some(r)).is_ok()) else {
            return Err(Error::parameter(
                "resourceArn",
                format!(
                    "'{arn}' is not a repository ARN of \
                 this registry ({prefix}<registry id>:repository/<name>)"
                ),
            ));
        };
        let key = self.repo_key(registry, name);
        Ok(self.allowed(caller, action, &key).await?.1)
    }

    pub async fn list_resource_tags(&self, caller: &Caller, arn: &str) -> Result<Vec<(String, String)>> {
        let row = self.repo_of_arn(caller, "ecr:ListTagsForResource", arn).await?;
        Ok(self.meta.repo_tags(row.id).await?)
    }

    pub async fn tag_resource(&self, caller: &Caller, arn: &str, tags: &[(String, String)]) -> Result<()> {
        let row = self.repo_of_arn(caller, "ecr:TagResource", arn).await?;
        check_resource_tags(tags)?;
        self.meta.put_repo_tags(row.id, tags).await?;
        self.caches.access.invalidate();
        Ok(())
    }

    pub async fn untag_resource(&self, caller: &Caller, arn: &str, keys: &[String]) -> Result<()> {
        let row = self.repo_of_arn(caller, "ecr:UntagResource", arn).await?;
        if let Some(k) = keys.iter().find(|k| k.is_empty() || k.chars().count() > 128) {
            return Err(Error::invalid(InvalidKind::ResourceTag, format!("tag key '{k}' must be 1 to 128 characters")));
        }
        self.meta.remove_repo_tags(row.id, keys).await?;
        self.caches.access.invalidate();
        Ok(())
    }

    pub async fn account_setting(&self, caller: &Caller, registry: &str, name: &str) -> Result<String> {
        self.access().check_registry(caller, "ecr:GetAccountSetting", registry).await?;
        self.setting(name).await
    }

    async fn setting(&self, name: &str) -> Result<String> {
        match name {
            "BLOB_MOUNTING" => Ok(self.meta.setting("BLOB_MOUNTING").await?.unwrap_or_else(|| "ENABLED".into())),
            _ => Err(Error::validation(format!(
                "Account setting '{name}' is not supported; Berth supports BLOB_MOUNTING"
            ))),
        }
    }

    pub async fn put_account_setting(
        &self,
        caller: &Caller,
        registry: &str,
        name: &str,
        value: &str,
    ) -> Result<String> {
        self.access().check_registry(caller, "ecr:PutAccountSetting", registry).await?;
        self.setting(name).await?;
        if value != "ENABLED" && value != "DISABLED" {
            return Err(Error::validation(format!("BLOB_MOUNTING must be ENABLED or DISABLED, not '{value}'")));
        }
        self.meta.put_setting(name, value).await?;
        Ok(value.to_string())
    }

    pub(crate) async fn blob_mounting(&self) -> Result<bool> {
        Ok(self.setting("BLOB_MOUNTING").await? == "ENABLED")
    }

    /// DescribeRegistry: the registry `registry` (replication is not configured yet).
    pub async fn describe_registry(&self, caller: &Caller, registry: &str) -> Result<String> {
        self.access().check_registry(caller, "ecr:DescribeRegistry", registry).await?;
        Ok(registry.to_string())
    }

    pub(crate) async fn existing_repo(&self, repo: &RepoName) -> Result<i64> {
        if let Some(id) = self.caches.content.repo_id(repo.as_str()) {
            return Ok(id);
        }
        let id =
            self.meta.repo_id(repo.as_str()).await?.ok_or_else(|| NotFound::Repository { key: repo.to_string() })?;
        self.caches.content.set_repo_id(repo.as_str(), id);
        Ok(id)
    }

    /// The repository's id; a push to a missing one creates it when a creation template allows.
    pub(crate) async fn ensure_repo(&self, repo: &RepoName) -> Result<i64> {
        if let Some(id) = self.caches.content.repo_id(repo.as_str()) {
            return Ok(id);
        }
        let id = match self.meta.repo_id(repo.as_str()).await? {
            Some(id) => id,
            None => {
                let (settings, tags) = self
                    .templates()
                    .template_for(repo.name(), "CREATE_ON_PUSH")
                    .await?
                    .ok_or_else(|| NotFound::RepositoryNotCreated { key: repo.to_string() })?;
                let id = self.meta.create_repo(repo.as_str(), &settings, &tags, true).await?.id;
                self.caches.access.invalidate();
                id
            }
        };
        self.caches.content.set_repo_id(repo.as_str(), id);
        Ok(id)
    }

    /// [`Repositories::ensure_repo`] for a push by `who`: a push another registry's replication
    /// makes to a missing repository creates it (it may `ecr:ReplicateImage` there) with the
    /// most specific `REPLICATION` creation template, else with the default settings, as ECR
    /// does.
    pub(crate) async fn ensure_repo_for(&self, who: Option<&Caller>, repo: &RepoName) -> Result<i64> {
        let Some(who) = who.filter(|w| w.replication_from.is_some()) else { return self.ensure_repo(repo).await };
        if let Some(id) = self.caches.content.repo_id(repo.as_str()) {
            return Ok(id);
        }
        let id = match self.meta.repo_id(repo.as_str()).await? {
            Some(id) => id,
            None => {
                self.access().check(who, "ecr:ReplicateImage", repo.as_str()).await?;
                let (settings, tags) =
                    self.templates().template_for(repo.name(), "REPLICATION").await?.unwrap_or_default();
                let id = self.meta.create_repo(repo.as_str(), &settings, &tags, true).await?.id;
                self.caches.access.invalidate();
                tracing::info!(repo = %repo, from = who.replication_from.as_deref().unwrap_or(""), "repository created for replication");
                id
            }
        };
        self.caches.content.set_repo_id(repo.as_str(), id);
        Ok(id)
    }

    /// SetRepositoryPolicy. Without `force`, refuses a policy that would stop the caller from
    /// setting the policy again (as ECR does).
    pub async fn set_repository_policy(&self, who: &Caller, name: &str, text: &str, force: bool) -> Result<String> {
        let (_, row) = self.allowed(who, "ecr:SetRepositoryPolicy", name).await?;
        let new = parse_resource_policy(text, MAX_REPOSITORY_POLICY, "repository")?;
        if !force {
            let tags = self.meta.repo_tags(row.id).await?;
            let identity = match &who.principal {
                Some(p) => Identities(self.0).of(p).await?,
                None => None,
            };
            let action = "ecr:SetRepositoryPolicy";
            let after = self.access().evaluate(who, identity.as_deref(), action, name, &tags, Some(&new));
            if !who.is_operator() && !after.allowed() {
                return Err(Error::parameter(
                    "PolicyText",
                    "the policy would prevent you \
                     from setting another policy in the future; use force to set it anyway"
                        .into(),
                ));
            }
        }
        self.meta.set_repo_policy(row.id, Some(text)).await?;
        self.caches.access.invalidate();
        Ok(text.to_string())
    }

    pub async fn repository_policy(&self, caller: &Caller, name: &str) -> Result<String> {
        let (_, row) = self.allowed(caller, "ecr:GetRepositoryPolicy", name).await?;
        row.policy.ok_or_else(|| self.no_repository_policy(name))
    }

    pub async fn delete_repository_policy(&self, caller: &Caller, name: &str) -> Result<String> {
        let (_, row) = self.allowed(caller, "ecr:DeleteRepositoryPolicy", name).await?;
        let text = row.policy.ok_or_else(|| self.no_repository_policy(name))?;
        self.meta.set_repo_policy(row.id, None).await?;
        self.caches.access.invalidate();
        Ok(text)
    }

    fn no_repository_policy(&self, key: &str) -> Error {
        NotFound::RepositoryPolicy { key: key.to_string() }.into()
    }

    pub async fn put_registry_policy(&self, caller: &Caller, registry: &str, text: &str) -> Result<String> {
        self.access().check_registry(caller, "ecr:PutRegistryPolicy", registry).await?;
        parse_resource_policy(text, MAX_REGISTRY_POLICY, "registry")?;
        self.meta.put_setting("registry_policy", text).await?;
        Ok(text.to_string())
    }

    pub async fn registry_policy(&self, caller: &Caller, registry: &str) -> Result<String> {
        self.access().check_registry(caller, "ecr:GetRegistryPolicy", registry).await?;
        self.stored_registry_policy().await
    }

    async fn stored_registry_policy(&self) -> Result<String> {
        self.meta.setting("registry_policy").await?.ok_or_else(|| self.no_registry_policy())
    }

    pub async fn delete_registry_policy(&self, caller: &Caller, registry: &str) -> Result<String> {
        self.access().check_registry(caller, "ecr:DeleteRegistryPolicy", registry).await?;
        let text = self.stored_registry_policy().await?;
        self.meta.delete_setting("registry_policy").await?;
        Ok(text)
    }

    fn no_registry_policy(&self) -> Error {
        NotFound::RegistryPolicy { registry: self.settings.registry_id.clone() }.into()
    }
}
