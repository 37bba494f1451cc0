//! Access decisions: every ECR call and OCI request is an `ecr:` action on a repository, decided
//! by the repository policy together with the caller's identity (today the account root, whose
//! identity side allows everything; explicit denies still bind it). Anonymous callers get exactly
//! what a repository policy with `"Principal": "*"` grants. Repository and registry policies are
//! managed here too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use berth_core::policy::{self, Caller, Context, Decision, Policy, PolicyKind};

use crate::iam::Identity;
use crate::{Error, Principal, Registry, Result};

/// Largest repository policy ECR accepts.
pub const MAX_REPOSITORY_POLICY: usize = 10_240;
/// Largest registry policy.
pub const MAX_REGISTRY_POLICY: usize = 10_240;

/// Who is asking, and from where.
#[derive(Debug, Clone, Default)]
pub struct Who {
    /// `None`: anonymous.
    pub principal: Option<Principal>,
    pub source_ip: Option<IpAddr>,
    /// Whether the request came over TLS (`aws:SecureTransport`).
    pub secure: bool,
    /// Tags the request sets (`aws:RequestTag/<key>`, and their keys as `aws:TagKeys`).
    pub request_tags: Vec<(String, String)>,
    /// Tag keys the request names without values (UntagResource: `aws:TagKeys`).
    pub tag_keys: Vec<String>,
}

/// What the decision needs to know about a repository: its policy and tags.
#[derive(Default)]
pub(crate) struct RepoAccess {
    policy: Option<Policy>,
    tags: Vec<(String, String)>,
}

/// Parsed repository policies and tags, for the request path. A write bumps the epoch and clears
/// the map after its commit; a reader stores what it read only if the epoch did not move meanwhile.
#[derive(Default)]
pub(crate) struct AccessCache {
    enabled: bool,
    epoch: AtomicU64,
    map: RwLock<HashMap<String, Arc<RepoAccess>>>,
}

impl AccessCache {
    pub fn new(enabled: bool) -> Self {
        AccessCache { enabled, ..Default::default() }
    }

    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Checks a policy document for a repository or the registry.
pub fn parse_resource_policy(text: &str, max: usize, what: &str) -> Result<Policy> {
    if text.is_empty() || text.len() > max {
        return Err(Error::InvalidParameter(format!(
            "Invalid parameter at 'PolicyText' failed to satisfy constraint: the {what} policy must be 1 to {max} \
             characters, got {}",
            text.len()
        )));
    }
    policy::parse(text, PolicyKind::Resource)
        .map_err(|e| Error::InvalidParameter(format!("Invalid {what} policy provided: {e}")))
}

impl Registry {
    async fn repo_access(&self, name: &str) -> Result<Arc<RepoAccess>> {
        let cache = &self.access;
        if cache.enabled
            && let Some(a) = cache.map.read().unwrap_or_else(|e| e.into_inner()).get(name)
        {
            return Ok(a.clone());
        }
        let epoch = cache.epoch.load(Ordering::SeqCst);
        let access = match self.meta.get_repo(name).await? {
            None => RepoAccess::default(),
            Some(row) => RepoAccess {
                // Stored policies were checked when set; one that no longer parses denies nothing
                // and allows nothing.
                policy: row.policy.as_deref().and_then(|p| policy::parse(p, PolicyKind::Resource).ok()),
                // Tags only matter to a policy's conditions: no policy, no query.
                tags: if row.policy.is_some() { self.meta.repo_tags(row.id).await? } else { Vec::new() },
            },
        };
        let access = Arc::new(access);
        if cache.enabled {
            let mut map = cache.map.write().unwrap_or_else(|e| e.into_inner());
            if cache.epoch.load(Ordering::SeqCst) == epoch && map.len() < 100_000 {
                map.insert(name.to_string(), access.clone());
            }
        }
        Ok(access)
    }

    pub(crate) fn context(&self, who: &Who, caller: Option<&Caller>, tags: &[(String, String)]) -> Context {
        let now = crate::auth::now_secs();
        let mut ctx = Context::new();
        ctx.set("aws:CurrentTime", berth_core::time::format_rfc3339(now));
        ctx.set("aws:EpochTime", now.to_string());
        ctx.set("aws:SecureTransport", who.secure.to_string());
        if let Some(ip) = who.source_ip {
            ctx.set("aws:SourceIp", ip.to_string());
        }
        for (k, v) in tags {
            ctx.set(&format!("aws:ResourceTag/{k}"), v.clone());
            ctx.set(&format!("ecr:ResourceTag/{k}"), v.clone());
        }
        for (k, v) in &who.request_tags {
            ctx.set(&format!("aws:RequestTag/{k}"), v.clone());
        }
        let keys: Vec<String> =
            who.request_tags.iter().map(|(k, _)| k.clone()).chain(who.tag_keys.iter().cloned()).collect();
        if !keys.is_empty() {
            ctx.set_many("aws:TagKeys", keys);
        }
        ctx.with_caller(caller)
    }

    /// The decision for `action` (`ecr:BatchGetImage`, ...) on repository `name`, which need not
    /// exist (then only the caller's identity decides).
    pub async fn decide(&self, who: &Who, action: &str, name: &str) -> Result<Decision> {
        let access = self.repo_access(name).await?;
        let identity = match &who.principal {
            None => None,
            Some(p) => match self.identity(p).await? {
                Some(i) => Some(i),
                // Deleted since its credentials were issued.
                None => return Ok(Decision::ImplicitDeny),
            },
        };
        let account = self.split_key(name).0;
        if access.policy.is_none() {
            // The common cases, decided without building a context.
            match &identity {
                None => return Ok(Decision::ImplicitDeny),
                Some(i) if i.caller.is_root && i.caller.account == account => return Ok(Decision::Allow),
                Some(i) if i.policies.is_empty() => return Ok(Decision::ImplicitDeny),
                _ => {}
            }
        }
        let loaded;
        let tags = match &identity {
            // Identity policies may test the repository's tags even when it has no policy.
            Some(i) if access.policy.is_none() && i.uses_resource_tags => match self.meta.get_repo(name).await? {
                Some(row) => {
                    loaded = self.meta.repo_tags(row.id).await?;
                    &loaded
                }
                None => &access.tags,
            },
            _ => &access.tags,
        };
        Ok(self.evaluate(who, identity.as_deref(), action, name, tags, access.policy.as_ref()))
    }

    /// `action` on repository `name` under `resource_policy`, with the repository's `tags`.
    fn evaluate(
        &self,
        who: &Who,
        identity: Option<&Identity>,
        action: &str,
        name: &str,
        tags: &[(String, String)],
        resource_policy: Option<&Policy>,
    ) -> Decision {
        let account = self.split_key(name).0;
        let caller = identity.map(|i| &i.caller);
        let ctx = self.context(who, caller, tags);
        let arn = self.repository_arn(name);
        let req = policy::Request { action, resource: &arn, resource_account: account, caller, context: &ctx };
        let policies: Vec<&Policy> = identity.map(|i| i.policies.iter().collect()).unwrap_or_default();
        policy::evaluate(&req, &policies, resource_policy)
    }

    /// [`Registry::decide`], as an error when not allowed.
    pub async fn check_access(&self, who: &Who, action: &str, name: &str) -> Result<()> {
        match self.decide(who, action, name).await? {
            Decision::Allow => Ok(()),
            d => Err(self.denied(who, action, &self.repository_arn(name), d)),
        }
    }

    /// The AccessDeniedException for a refused decision.
    pub(crate) fn denied(&self, who: &Who, action: &str, resource: &str, d: Decision) -> Error {
        let who = who.principal.as_ref().map_or("anonymous", |p| p.arn.as_str());
        let why = if d == Decision::ExplicitDeny {
            "with an explicit deny"
        } else {
            "because no identity-based or resource-based policy allows the action"
        };
        Error::AccessDenied(format!("User: {who} is not authorized to perform: {action} on resource: {resource} {why}"))
    }

    /// A registry-level action (`ecr:GetAuthorizationToken`, `ecr:PutRegistryPolicy`, ...):
    /// resource `*`, decided by the caller's identity alone.
    pub async fn check_registry_action(&self, who: &Who, action: &str, registry: &str) -> Result<()> {
        let identity = match &who.principal {
            None => None,
            Some(p) => self.identity(p).await?,
        };
        // GetAuthorizationToken is about the caller's own account (its token then reaches only
        // what each repository's decision allows); the others are about this registry.
        let own = action == "ecr:GetAuthorizationToken";
        let d = match &identity {
            Some(i) if i.caller.is_root && (own || i.caller.account == registry) => Decision::Allow,
            // Across accounts a registry-level action would also need a registry policy granting
            // it, and Berth's registry policy grants only replication.
            Some(i) if !own && i.caller.account != registry => Decision::ImplicitDeny,
            Some(i) => {
                let ctx = self.context(who, Some(&i.caller), &[]);
                let req = policy::Request {
                    action,
                    resource: "*",
                    resource_account: &i.caller.account,
                    caller: Some(&i.caller),
                    context: &ctx,
                };
                let policies: Vec<&Policy> = i.policies.iter().collect();
                policy::evaluate(&req, &policies, None)
            }
            None => Decision::ImplicitDeny,
        };
        match d {
            Decision::Allow => Ok(()),
            d => Err(self.denied(who, action, "*", d)),
        }
    }

    // ---- repository policies ----

    /// SetRepositoryPolicy. Without `force`, refuses a policy that would stop the caller from
    /// setting the policy again (as ECR does).
    pub async fn set_repository_policy(&self, who: &Who, name: &str, text: &str, force: bool) -> Result<String> {
        let (_, row) = self.repository(name).await?;
        let new = parse_resource_policy(text, MAX_REPOSITORY_POLICY, "repository")?;
        if !force {
            let tags = self.meta.repo_tags(row.id).await?;
            let identity = match &who.principal {
                Some(p) => self.identity(p).await?,
                None => None,
            };
            if !self.evaluate(who, identity.as_deref(), "ecr:SetRepositoryPolicy", name, &tags, Some(&new)).allowed() {
                return Err(Error::InvalidParameter(
                    "Invalid parameter at 'PolicyText' failed to satisfy constraint: the policy would prevent you \
                     from setting another policy in the future; use force to set it anyway"
                        .into(),
                ));
            }
        }
        self.meta.set_repo_policy(row.id, Some(text)).await?;
        self.access.invalidate();
        Ok(text.to_string())
    }

    pub async fn repository_policy(&self, name: &str) -> Result<String> {
        let (_, row) = self.repository(name).await?;
        row.policy.ok_or_else(|| self.no_repository_policy(name))
    }

    pub async fn delete_repository_policy(&self, name: &str) -> Result<String> {
        let (_, row) = self.repository(name).await?;
        let text = row.policy.ok_or_else(|| self.no_repository_policy(name))?;
        self.meta.set_repo_policy(row.id, None).await?;
        self.access.invalidate();
        Ok(text)
    }

    fn no_repository_policy(&self, name: &str) -> Error {
        Error::RepositoryPolicyNotFound(format!(
            "Repository policy does not exist for the repository with name '{name}' in the registry with id '{}'",
            self.settings.registry_id
        ))
    }

    // ---- registry policy ----

    pub async fn put_registry_policy(&self, text: &str) -> Result<String> {
        parse_resource_policy(text, MAX_REGISTRY_POLICY, "registry")?;
        self.meta.put_setting("registry_policy", text).await?;
        Ok(text.to_string())
    }

    pub async fn registry_policy(&self) -> Result<String> {
        self.meta.setting("registry_policy").await?.ok_or_else(|| self.no_registry_policy())
    }

    pub async fn delete_registry_policy(&self) -> Result<String> {
        let text = self.registry_policy().await?;
        self.meta.delete_setting("registry_policy").await?;
        Ok(text)
    }

    fn no_registry_policy(&self) -> Error {
        Error::RegistryPolicyNotFound(format!(
            "Registry policy does not exist in the registry with id '{}'",
            self.settings.registry_id
        ))
    }
}
