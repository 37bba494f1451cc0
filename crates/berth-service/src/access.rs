//! Access decisions. Every call the service serves is an `ecr:`, `iam:` or `sts:` action on a
//! resource, decided here for the caller that makes it: the resource's policy (a repository's)
//! together with the caller's identity policies (the account root's identity side allows
//! everything in its account; explicit denies still bind it). Anonymous callers get exactly what
//! a policy with `"Principal": "*"` grants (everything, when the registry runs with
//! `allow_anonymous`); the operator (the server's own command line and jobs) everything.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_core::policy::{self, Caller as PolicyCaller, Context, Decision, Policy, PolicyKind};

use crate::cache::RepoAccess;
use crate::caller::{Caller, Identity};
use crate::core::domain;
use crate::error::{Denied, DeniedBy, Error, Result};
use crate::identity::{Identities, gone};
use crate::tokens::Scope;

/// Largest repository policy ECR accepts.
pub const MAX_REPOSITORY_POLICY: usize = 10_240;
/// Largest registry policy.
pub const MAX_REGISTRY_POLICY: usize = 10_240;

/// Checks a policy document for a repository or the registry.
pub fn parse_resource_policy(text: &str, max: usize, what: &str) -> Result<Policy> {
    if text.is_empty() || text.len() > max {
        return Err(Error::parameter(
            "PolicyText",
            format!(
                "the {what} policy must be 1 to {max} \
             characters, got {}",
                text.len()
            ),
        ));
    }
    policy::parse(text, PolicyKind::Resource)
        .map_err(|e| Error::bad_request(format!("Invalid {what} policy provided: {e}")))
}

/// `principal` may not do `action` on `resource`.
pub(crate) fn denial(principal: &str, action: &str, resource: &str, by: DeniedBy) -> Error {
    Error::Denied(Denied::Action {
        principal: principal.to_string(),
        action: action.to_string(),
        resource: resource.to_string(),
        by,
    })
}

domain! {
    /// Decisions: may this caller do this action on that resource, now.
    Access
}

impl<'a> Access<'a> {
    fn identities(&self) -> Identities<'a> {
        Identities(self.0)
    }

    /// The caller's identity: `Ok(None)` for anonymous callers, `Err` for a principal that no
    /// longer exists (deleted since its credentials were issued).
    async fn identity(&self, caller: &Caller) -> Result<Option<Option<Arc<Identity>>>> {
        match &caller.principal {
            None => Ok(None),
            Some(p) => Ok(Some(self.identities().of(p).await?)),
        }
    }

    async fn repo_access(&self, name: &str) -> Result<Arc<RepoAccess>> {
        let cache = &self.caches.access;
        if cache.enabled()
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
        if cache.enabled() {
            let mut map = cache.map.write().unwrap_or_else(|e| e.into_inner());
            if cache.epoch.load(Ordering::SeqCst) == epoch && map.len() < 100_000 {
                map.insert(name.to_string(), access.clone());
            }
        }
        Ok(access)
    }

    pub(crate) fn context(&self, who: &Caller, caller: Option<&PolicyCaller>, tags: &[(String, String)]) -> Context {
        let now = crate::tokens::now_secs();
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
    pub async fn decide(&self, who: &Caller, action: &str, name: &str) -> Result<Decision> {
        if who.is_operator() || (who.is_anonymous() && self.settings.allow_anonymous) {
            return Ok(Decision::Allow);
        }
        let access = self.repo_access(name).await?;
        let identity = match self.identity(who).await? {
            None => None,
            Some(Some(i)) => Some(i),
            // Deleted since its credentials were issued.
            Some(None) => return Ok(Decision::ImplicitDeny),
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
    pub(crate) fn evaluate(
        &self,
        who: &Caller,
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

    /// The decision for `action` on KMS key `arn` (of `account`) under its key policy, as KMS
    /// decides (the operator may do anything; anonymous callers nothing, unless the registry runs
    /// with `allow_anonymous`).
    pub(crate) async fn decide_key(
        &self,
        who: &Caller,
        action: &str,
        arn: &str,
        account: &str,
        key_policy: &Policy,
    ) -> Result<Decision> {
        if who.is_operator() || (who.is_anonymous() && self.settings.allow_anonymous) {
            return Ok(Decision::Allow);
        }
        let Some(Some(identity)) = self.identity(who).await? else { return Ok(Decision::ImplicitDeny) };
        let ctx = self.context(who, Some(&identity.caller), &[]);
        let req = policy::Request {
            action,
            resource: arn,
            resource_account: account,
            caller: Some(&identity.caller),
            context: &ctx,
        };
        let policies: Vec<&Policy> = identity.policies.iter().collect();
        Ok(policy::evaluate_key(&req, &policies, key_policy))
    }

    /// The refusal of a key decision, as KMS words it (no resource-based policy allowed it).
    pub(crate) fn denied_by_key(&self, who: &Caller, action: &str, arn: &str, d: Decision) -> Error {
        let by = if d == Decision::ExplicitDeny { DeniedBy::ExplicitDeny } else { DeniedBy::NoAllow };
        denial(who.arn(), action, arn, by)
    }

    /// [`Access::decide`], as an error when not allowed.
    pub async fn check(&self, who: &Caller, action: &str, name: &str) -> Result<()> {
        match self.decide(who, action, name).await? {
            Decision::Allow => Ok(()),
            d => Err(self.denied(who, action, &self.repository_arn(name), d)),
        }
    }

    /// The refusal of a decision.
    pub(crate) fn denied(&self, who: &Caller, action: &str, resource: &str, d: Decision) -> Error {
        let by = if d == Decision::ExplicitDeny { DeniedBy::ExplicitDeny } else { DeniedBy::NoAllow };
        denial(who.arn(), action, resource, by)
    }

    /// A registry-level action (`ecr:GetAuthorizationToken`, `ecr:PutRegistryPolicy`, ...):
    /// resource `*`, decided by the caller's identity alone.
    pub async fn check_registry(&self, who: &Caller, action: &str, registry: &str) -> Result<()> {
        if who.is_operator() {
            return Ok(());
        }
        let identity = self.identity(who).await?.flatten();
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

    /// Decides an IAM or STS action by the caller's identity policies alone (IAM resources have
    /// no resource policies; a role's trust policy is checked by AssumeRole itself).
    pub async fn check_iam(&self, who: &Caller, action: &str, resource: &str) -> Result<()> {
        if who.is_operator() {
            return Ok(());
        }
        let Some(p) = &who.principal else {
            return Err(denial("anonymous", action, resource, DeniedBy::NoIdentityAllow));
        };
        let id = self.identities().of(p).await?.ok_or_else(|| gone(p))?;
        let refs: Vec<&Policy> = id.policies.iter().collect();
        let ctx = self.context(who, Some(&id.caller), &[]);
        let req = policy::Request {
            action,
            resource,
            resource_account: &id.caller.account,
            caller: Some(&id.caller),
            context: &ctx,
        };
        match policy::evaluate(&req, &refs, None) {
            Decision::Allow => Ok(()),
            d => {
                let by = if d == Decision::ExplicitDeny { DeniedBy::IdentityDeny } else { DeniedBy::NoIdentityAllow };
                Err(denial(&p.arn, action, resource, by))
            }
        }
    }

    /// The part of a Docker token scope the caller's policies allow now (a token carries it for
    /// clients that read it; requests are decided afresh all the same).
    pub async fn grant(&self, who: &Caller, mut s: Scope) -> Result<Option<Scope>> {
        match s.kind.as_str() {
            "registry" if s.name == "catalog" && !who.is_anonymous() => Ok(Some(s)),
            "repository" => {
                let mut keep = Vec::new();
                let wanted: Vec<String> = if s.actions.iter().any(|a| a == "*") {
                    vec!["pull".into(), "push".into(), "delete".into()]
                } else {
                    s.actions.clone()
                };
                for a in wanted {
                    let action = match a.as_str() {
                        "pull" => "ecr:BatchGetImage",
                        "push" => "ecr:PutImage",
                        "delete" => "ecr:BatchDeleteImage",
                        _ => continue,
                    };
                    if self.decide(who, action, &s.name).await?.allowed() {
                        keep.push(a);
                    }
                }
                s.actions = keep;
                Ok((!s.actions.is_empty()).then_some(s))
            }
            _ => Ok(None),
        }
    }
}
