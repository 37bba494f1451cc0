//! Pull-through cache rules (ECR's: a repository prefix here, an upstream registry there, the
//! credentials in a stored secret, `secrets.rs`). The pull path that uses them is
//! `content/upstream.rs`.

pub use crate::model::{Rule, RuleBody};

use crate::access::Access;
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Error, Exists, NotFound, Result};
use crate::secrets::Secrets;

/// ECR's limit on rules per registry.
const MAX_RULES: usize = 50;
pub const UPSTREAM_REGISTRIES: [&str; 9] = [
    "ecr",
    "ecr-public",
    "quay",
    "k8s",
    "docker-hub",
    "github-container-registry",
    "azure-container-registry",
    "gitlab-container-registry",
    "chainguard",
];

/// ECR's prefix pattern: `^([a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*\/?|ROOT)$`, 2 to 30.
pub fn valid_prefix(p: &str) -> bool {
    if p == "ROOT" {
        return true;
    }
    let p = p.strip_suffix('/').unwrap_or(p);
    let word = |w: &str| {
        let b = w.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
            && !w.contains("..")
            && !w.contains("___")
            && !w.contains(".-")
            && !w.contains("-.")
    };
    (2..=30).contains(&p.len()) && p.split('/').all(word)
}

/// The upstream URL as Berth uses it: `https://` unless given; `http://` only for a loopback
/// host (tests); no path.
pub fn upstream_url(given: &str) -> Result<String> {
    let bad = |why: &str| Error::parameter("upstreamRegistryUrl", format!("{given:?}: {why}"));
    let (scheme, rest) = match given.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("https", given),
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains('?') || host.contains('@') {
        return Err(bad("a registry's host name (and port), without a path"));
    }
    match scheme {
        "https" => {}
        "http" => {
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
            let loopback = name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(bad("http:// is allowed for loopback addresses only; use https"));
            }
        }
        _ => return Err(bad("https:// (or http:// on loopback)")),
    }
    Ok(format!("{scheme}://{host}"))
}

fn credential_arn_ok(a: &str) -> bool {
    // ECR: ^arn:aws(-\w+)*:secretsmanager:[a-zA-Z0-9-:]+:secret:ecr\-pullthroughcache\/[a-zA-Z0-9\/_+=.@-]+$, 50 to 612.
    (50..=612).contains(&a.len())
        && a.starts_with("arn:aws")
        && a.contains(":secretsmanager:")
        && a.split_once(":secret:ecr-pullthroughcache/").is_some_and(|(_, name)| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
        })
}

domain! {
    /// Pull-through cache rules.
    PullThrough
}

impl<'a> PullThrough<'a> {
    fn access(&self) -> Access<'a> {
        Access(self.0)
    }

    /// A rule changed: this node reads the registry's rules again at the next pull (other nodes
    /// within the few seconds they keep them, `content/upstream.rs`).
    fn forget_rules(&self, registry: &str) {
        self.pt_rules.lock().unwrap_or_else(|e| e.into_inner()).remove(registry);
    }

    fn rule_of(r: berth_meta::RuleRow) -> Result<Rule> {
        let body =
            serde_json::from_str(&r.body).map_err(|e| Error::Internal(format!("stored pull-through rule: {e}")))?;
        Ok(Rule { prefix: r.prefix, body, created_at: r.created_at, updated_at: r.updated_at })
    }

    async fn check_credential(&self, registry: &str, arn: Option<&str>) -> Result<()> {
        let Some(arn) = arn else { return Ok(()) };
        if !credential_arn_ok(arn) {
            return Err(Error::validation(format!(
                "credentialArn {arn:?} is not a Secrets Manager secret ARN named ecr-pullthroughcache/..."
            )));
        }
        if self.meta.secret(registry, arn).await?.is_none() {
            return Err(NotFound::Secret { id: arn.to_string() }.into());
        }
        Ok(())
    }

    /// CreatePullThroughCacheRule.
    pub async fn create_rule(&self, caller: &Caller, registry: &str, prefix: &str, body: RuleBody) -> Result<Rule> {
        self.access().check_registry(caller, "ecr:CreatePullThroughCacheRule", registry).await?;
        if !valid_prefix(prefix) {
            return Err(Error::validation(format!(
                "ecrRepositoryPrefix {prefix:?}: 2 to 30 characters of a repository name's form (or ROOT)"
            )));
        }
        let mut body = body;
        body.upstream_registry_url = upstream_url(&body.upstream_registry_url)?;
        if let Some(u) = &body.upstream_registry
            && !UPSTREAM_REGISTRIES.contains(&u.as_str())
        {
            return Err(Error::validation(format!(
                "upstreamRegistry {u:?} is not one of {}",
                UPSTREAM_REGISTRIES.join(", ")
            )));
        }
        if !valid_prefix(body.upstream_prefix()) {
            return Err(Error::validation(format!(
                "upstreamRepositoryPrefix {:?}: 2 to 30 characters of a repository name's form (or ROOT)",
                body.upstream_prefix()
            )));
        }
        self.check_credential(registry, body.credential_arn.as_deref()).await?;
        if self.meta.pull_through_rules(registry).await?.len() >= MAX_RULES {
            return Err(Error::LimitExceeded {
                reason: format!("a registry has at most {MAX_RULES} pull through cache rules"),
                what: crate::error::Limit::Quota,
            });
        }
        let json = serde_json::to_string(&body).map_err(|e| Error::Internal(e.to_string()))?;
        if !self.meta.insert_pull_through_rule(registry, prefix, &json).await? {
            return Err(Exists::PullThroughRule { prefix: prefix.to_string() }.into());
        }
        self.forget_rules(registry);
        let now = berth_meta::now_ms();
        Ok(Rule { prefix: prefix.to_string(), body, created_at: now, updated_at: now })
    }

    /// DescribePullThroughCacheRules: the named ones (each must exist), else all.
    pub async fn rules(&self, caller: &Caller, registry: &str, prefixes: Option<&[String]>) -> Result<Vec<Rule>> {
        self.access().check_registry(caller, "ecr:DescribePullThroughCacheRules", registry).await?;
        let all =
            self.meta.pull_through_rules(registry).await?.into_iter().map(Self::rule_of).collect::<Result<Vec<_>>>()?;
        let Some(wanted) = prefixes else { return Ok(all) };
        let mut out = Vec::new();
        for p in wanted {
            match all.iter().find(|r| &r.prefix == p) {
                Some(r) => out.push(r.clone()),
                None => return Err(NotFound::PullThroughRule { prefix: p.clone() }.into()),
            }
        }
        Ok(out)
    }

    /// UpdatePullThroughCacheRule: its credential and role.
    pub async fn update_rule(
        &self,
        caller: &Caller,
        registry: &str,
        prefix: &str,
        credential_arn: Option<String>,
        custom_role_arn: Option<String>,
    ) -> Result<Rule> {
        self.access().check_registry(caller, "ecr:UpdatePullThroughCacheRule", registry).await?;
        let rules = self.meta.pull_through_rules(registry).await?;
        let row = rules
            .into_iter()
            .find(|r| r.prefix == prefix)
            .ok_or_else(|| NotFound::PullThroughRule { prefix: prefix.to_string() })?;
        let mut rule = Self::rule_of(row)?;
        self.check_credential(registry, credential_arn.as_deref()).await?;
        if credential_arn.is_some() {
            rule.body.credential_arn = credential_arn;
        }
        if custom_role_arn.is_some() {
            rule.body.custom_role_arn = custom_role_arn;
        }
        let json = serde_json::to_string(&rule.body).map_err(|e| Error::Internal(e.to_string()))?;
        let row = self
            .meta
            .update_pull_through_rule(registry, prefix, &json)
            .await?
            .ok_or_else(|| NotFound::PullThroughRule { prefix: prefix.to_string() })?;
        self.forget_rules(registry);
        Self::rule_of(row)
    }

    /// DeletePullThroughCacheRule (the repositories it created stay).
    pub async fn delete_rule(&self, caller: &Caller, registry: &str, prefix: &str) -> Result<Rule> {
        self.access().check_registry(caller, "ecr:DeletePullThroughCacheRule", registry).await?;
        let row = self
            .meta
            .delete_pull_through_rule(registry, prefix)
            .await?
            .ok_or_else(|| NotFound::PullThroughRule { prefix: prefix.to_string() })?;
        self.forget_rules(registry);
        Self::rule_of(row)
    }

    /// ValidatePullThroughCacheRule: whether the upstream answers `/v2/` with the rule's
    /// credentials; the rule and, when not, why.
    pub async fn validate_rule(&self, caller: &Caller, registry: &str, prefix: &str) -> Result<(Rule, Option<String>)> {
        self.access().check_registry(caller, "ecr:ValidatePullThroughCacheRule", registry).await?;
        let rule = self.rules(&Caller::operator(), registry, Some(&[prefix.to_string()])).await?.remove(0);
        let failure = match self.upstream(registry, &rule).await {
            Ok(remote) => remote.ping().await.err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        Ok((rule, failure))
    }

    /// A client for the rule's upstream, with its credentials (a secret holding
    /// `{"username": ..., "accessToken": ...}`, as ECR's).
    pub(crate) async fn upstream(&self, registry: &str, rule: &Rule) -> Result<berth_remote::Registry> {
        let creds = match &rule.body.credential_arn {
            Some(arn) => {
                let v: serde_json::Value =
                    serde_json::from_str(&Secrets(self.0).value(registry, arn).await?).map_err(|_| {
                        Error::validation(format!("secret {arn} is not JSON with username and accessToken"))
                    })?;
                match (v["username"].as_str(), v["accessToken"].as_str()) {
                    (Some(u), Some(p)) => {
                        berth_remote::Credentials::Basic { username: u.to_string(), password: p.to_string() }
                    }
                    _ => return Err(Error::validation(format!("secret {arn} lacks username or accessToken"))),
                }
            }
            None => berth_remote::Credentials::Anonymous,
        };
        berth_remote::Registry::new(&rule.body.upstream_registry_url, creds)
            .map_err(|e| Error::Internal(format!("upstream of rule {}: {e}", rule.prefix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_upstream_urls() {
        for p in ["ROOT", "hub", "docker-hub", "a/b", "quay/", "x.y_z"] {
            assert!(valid_prefix(p), "{p}");
        }
        for p in ["a", "Hub", "/x", "a//b", "-x", "way-too-long-for-a-pull-through-prefix"] {
            assert!(!valid_prefix(p), "{p}");
        }
        assert_eq!(upstream_url("registry-1.docker.io").unwrap(), "https://registry-1.docker.io");
        assert_eq!(upstream_url("http://127.0.0.1:5002/").unwrap(), "http://127.0.0.1:5002");
        assert_eq!(upstream_url("http://localhost:5002").unwrap(), "http://localhost:5002");
        assert!(upstream_url("http://quay.io").unwrap_err().to_string().contains("loopback"));
        assert!(upstream_url("https://quay.io/v2/x").is_err());
        assert!(upstream_url("ftp://quay.io").is_err());
        assert!(credential_arn_ok(
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:ecr-pullthroughcache/hub-AbCdEf"
        ));
        assert!(!credential_arn_ok("arn:aws:secretsmanager:us-east-1:000000000000:secret:other/hub-AbCdEf"));
    }
}
