//! Reading and changing scanning configuration, and the pull check a scan policy makes.

use berth_core::RepoName;
use berth_scan::matcher::Finding;

use crate::access::Access;
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Denied, Error, NotFound, Result};
use crate::repositories::{Repositories, Repository};
use crate::scan_policy::{RegistryScanning, RepositoryScanning, ScanPolicy, ScanRule};

const REGISTRY_SCANNING: &str = "registry_scanning_configuration";

fn parse_policy(stored: Option<String>) -> Result<Option<ScanPolicy>> {
    stored
        .map(|s| serde_json::from_str(&s).map_err(|e| Error::Internal(format!("stored scan policy: {e}"))))
        .transpose()
}

domain! {
    /// Scanning configuration and scan policies.
    ScanConfig
}

/// One repository's scanning configuration, or why there is none.
#[derive(Debug, Clone)]
pub enum RepositoryScanningResult {
    Found { repository: Box<Repository>, scanning: RepositoryScanning },
    NotFound { key: String },
}

impl<'a> ScanConfig<'a> {
    fn repos(&self) -> Repositories<'a> {
        Repositories(self.0)
    }

    /// GetRegistryScanningConfiguration.
    pub async fn get_registry_scanning(&self, caller: &Caller, registry: &str) -> Result<RegistryScanning> {
        Access(self.0).check_registry(caller, "ecr:GetRegistryScanningConfiguration", registry).await?;
        self.registry_scanning().await
    }

    pub(crate) async fn registry_scanning(&self) -> Result<RegistryScanning> {
        match self.meta.setting(REGISTRY_SCANNING).await? {
            Some(s) => {
                serde_json::from_str(&s).map_err(|e| Error::Internal(format!("stored scanning configuration: {e}")))
            }
            None => Ok(RegistryScanning::default()),
        }
    }

    /// PutRegistryScanningConfiguration.
    pub async fn put_registry_scanning(
        &self,
        caller: &Caller,
        registry: &str,
        c: RegistryScanning,
    ) -> Result<RegistryScanning> {
        Access(self.0).check_registry(caller, "ecr:PutRegistryScanningConfiguration", registry).await?;
        c.validate()?;
        let json = serde_json::to_string(&c).map_err(|e| Error::Internal(e.to_string()))?;
        self.meta.put_setting(REGISTRY_SCANNING, &json).await?;
        Ok(c)
    }

    /// How repository `key` (named `name` by clients) is scanned: its own `scanOnPush`, or the
    /// registry rules whose filters match its name.
    pub(crate) async fn repository_scanning(&self, name: &str, own_scan_on_push: bool) -> Result<RepositoryScanning> {
        let reg = self.registry_scanning().await?;
        let mut out = RepositoryScanning {
            scan_on_push: own_scan_on_push,
            frequency: if own_scan_on_push { "SCAN_ON_PUSH" } else { "MANUAL" }.into(),
            applied_filters: Vec::new(),
        };
        // A continuous rule wins over a push rule; both scan on push.
        let mut rules: Vec<&ScanRule> = reg.rules.iter().collect();
        rules.sort_by_key(|r| r.scan_frequency != "CONTINUOUS_SCAN");
        for r in rules {
            let hits: Vec<String> =
                r.filters.iter().filter(|f| berth_core::wildcard::matches(f, name)).cloned().collect();
            if !hits.is_empty() {
                out.scan_on_push = true;
                out.frequency = r.scan_frequency.clone();
                out.applied_filters = hits;
                break;
            }
        }
        Ok(out)
    }

    /// BatchGetRepositoryScanningConfiguration (a registry-level action): how each named
    /// repository is scanned.
    pub async fn repositories_scanning(
        &self,
        caller: &Caller,
        registry: &str,
        keys: &[String],
    ) -> Result<Vec<RepositoryScanningResult>> {
        Access(self.0).check_registry(caller, "ecr:BatchGetRepositoryScanningConfiguration", registry).await?;
        if keys.is_empty() || keys.len() > 25 {
            return Err(Error::parameter(
                "repositoryNames",
                format!(
                    "'Member must have length \
                 between 1 and 25', got {}",
                    keys.len()
                ),
            ));
        }
        let mut out = Vec::new();
        for key in keys {
            match self.repos().repository(key).await {
                Ok((_, row)) => {
                    let repository = self.repos().repository_view(row);
                    let own = repository.row.settings.scan_on_push;
                    let scanning = self.repository_scanning(&repository.name, own).await?;
                    out.push(RepositoryScanningResult::Found { repository: Box::new(repository), scanning });
                }
                Err(Error::NotFound(NotFound::Repository { .. })) => {
                    out.push(RepositoryScanningResult::NotFound { key: key.clone() })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub(crate) async fn scan_policy_of(&self, repo_id: i64) -> Result<ScanPolicy> {
        if self.caches.scan_policies.enabled()
            && let Some(p) = self.caches.scan_policies.map.lock().unwrap().get(&repo_id)
        {
            return Ok(p.clone().unwrap_or_default());
        }
        let p = parse_policy(self.meta.scan_policy(repo_id).await?)?;
        if self.caches.scan_policies.enabled() {
            self.caches.scan_policies.map.lock().unwrap().insert(repo_id, p.clone());
        }
        Ok(p.unwrap_or_default())
    }

    /// Berth's GetRepositoryScanPolicy.
    pub async fn scan_policy(&self, caller: &Caller, key: &str) -> Result<ScanPolicy> {
        let (_, row) = self.repos().allowed(caller, "ecr:GetRepositoryScanPolicy", key).await?;
        self.scan_policy_of(row.id).await
    }

    /// Sets (or, with the empty policy, removes) a repository's scan policy.
    pub async fn put_scan_policy(&self, caller: &Caller, key: &str, p: ScanPolicy) -> Result<ScanPolicy> {
        let (_, row) = self.repos().allowed(caller, "ecr:PutRepositoryScanPolicy", key).await?;
        p.validate()?;
        let json = if p.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&p).map_err(|e| Error::Internal(e.to_string()))?)
        };
        self.meta.set_scan_policy(row.id, json.as_deref()).await?;
        self.caches.scan_policies.forget(row.id);
        Ok(p)
    }

    /// Refuses a pull of image `digest` that the repository's scan policy blocks.
    pub(crate) async fn check_pull(&self, repo: &RepoName, digest: &str) -> Result<()> {
        let (id, policy) = if self.caches.scan_policies.enabled() {
            let id = self.repos().existing_repo(repo).await?;
            (id, self.scan_policy_of(id).await?)
        } else {
            // Nothing is cached: one query for both on every pull.
            let Some((id, text)) = self.meta.repo_scan_policy(repo.as_str()).await? else { return Ok(()) };
            (id, parse_policy(text)?.unwrap_or_default())
        };
        if policy.block_pulls_at_severity.is_none() && !policy.block_unscanned {
            return Ok(());
        }
        let scan = self.meta.scan_covering(id, digest).await?;
        let findings: Vec<Finding> = match &scan {
            Some((status, f)) if status == "COMPLETE" => {
                f.as_deref().and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default()
            }
            _ if policy.block_unscanned => {
                return Err(Error::Denied(Denied::PullBlocked(format!(
                    "pulls of {repo}@{digest} are refused: the repository's scan policy blocks images without a \
                     completed scan ({})",
                    scan.map_or("never scanned".to_string(), |(s, _)| format!("scan status {s}"))
                ))));
            }
            _ => return Ok(()),
        };
        let blocking = policy.blocking(&findings);
        if blocking.is_empty() {
            return Ok(());
        }
        let mut names: Vec<String> =
            blocking.iter().map(|f| format!("{} ({}, {} {})", f.name, f.severity, f.package, f.version)).collect();
        names.dedup();
        let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
        names.truncate(5);
        Err(Error::Denied(Denied::PullBlocked(format!(
            "pulls of {repo}@{digest} are refused: it has {} finding(s) of severity {} or higher: {}{more}",
            blocking.len(),
            policy.block_pulls_at_severity.unwrap_or_default(),
            names.join(", ")
        ))))
    }
}
