//! Which repositories are scanned when (ECR's registry scanning configuration: scan type and rules
//! with `SCAN_ON_PUSH` / `CONTINUOUS_SCAN` frequencies over wildcard filters, beside each
//! repository's own `scanOnPush`), and Berth's per-repository scan policy: refuse pulls of images
//! whose findings reach a severity (with CVE exceptions), and hide unfixed findings.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::scan::Finding;
use crate::{Error, Registry, Result};

const REGISTRY_SCANNING: &str = "registry_scanning_configuration";
/// ECR's limits: two rules (one per frequency), 100 filters per rule.
const MAX_RULES: usize = 2;
const MAX_FILTERS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryScanning {
    pub scan_type: String,
    pub rules: Vec<ScanRule>,
}

impl Default for RegistryScanning {
    fn default() -> Self {
        RegistryScanning { scan_type: "BASIC".into(), rules: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanRule {
    /// `SCAN_ON_PUSH` or `CONTINUOUS_SCAN`.
    pub scan_frequency: String,
    /// Wildcard filters (`*` only) over repository names.
    pub filters: Vec<String>,
}

/// How one repository is scanned (ECR's BatchGetRepositoryScanningConfiguration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryScanning {
    pub scan_on_push: bool,
    /// `SCAN_ON_PUSH`, `CONTINUOUS_SCAN` or `MANUAL`.
    pub frequency: String,
    /// The registry rule filters that matched.
    pub applied_filters: Vec<String>,
}

/// Berth's per-repository scan policy (not in ECR).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanPolicy {
    /// Refuse pulls of images with a finding of this severity or higher (`CRITICAL`, `HIGH`,
    /// `MEDIUM`, `LOW`, `INFORMATIONAL`); none: pulls are never refused for findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_pulls_at_severity: Option<String>,
    /// Refuse pulls of images without a completed scan too.
    #[serde(default)]
    pub block_unscanned: bool,
    /// Findings never counted for blocking (CVE or record ids).
    #[serde(default)]
    pub ignored_vulnerabilities: Vec<String>,
    /// Leave findings without a fixed version out of the findings shown.
    #[serde(default)]
    pub hide_unfixed: bool,
}

/// Severity ranks, highest first; `UNDEFINED` never blocks.
const SEVERITIES: [&str; 5] = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL"];

fn rank(s: &str) -> Option<usize> {
    SEVERITIES.iter().position(|x| *x == s)
}

fn valid_filter(f: &str) -> bool {
    // ECR: ^[a-z0-9*](?:[._\-/a-z0-9*]?[a-z0-9*]+)*$, 1-255 characters.
    let b = f.as_bytes();
    let word = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'*';
    !b.is_empty()
        && b.len() <= 255
        && word(b[0])
        && word(b[b.len() - 1])
        && b.windows(2).all(|w| word(w[0]) || word(w[1]))
        && b.iter().all(|&c| word(c) || matches!(c, b'.' | b'_' | b'-' | b'/'))
}

impl RegistryScanning {
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.scan_type.as_str(), "BASIC" | "ENHANCED") {
            return Err(Error::Validation(format!("scanType must be BASIC or ENHANCED, not {:?}", self.scan_type)));
        }
        if self.rules.len() > MAX_RULES {
            return Err(Error::Validation(format!("at most {MAX_RULES} rules (one per scan frequency)")));
        }
        let mut seen = Vec::new();
        for r in &self.rules {
            if !matches!(r.scan_frequency.as_str(), "SCAN_ON_PUSH" | "CONTINUOUS_SCAN") {
                return Err(Error::Validation(format!(
                    "scanFrequency must be SCAN_ON_PUSH or CONTINUOUS_SCAN, not {:?}",
                    r.scan_frequency
                )));
            }
            if r.scan_frequency == "CONTINUOUS_SCAN" && self.scan_type == "BASIC" {
                return Err(Error::Validation(
                    "CONTINUOUS_SCAN rules need scanType ENHANCED (basic scanning scans on push or manually)".into(),
                ));
            }
            if seen.contains(&&r.scan_frequency) {
                return Err(Error::Validation(format!("two rules with scanFrequency {}", r.scan_frequency)));
            }
            seen.push(&r.scan_frequency);
            if r.filters.is_empty() || r.filters.len() > MAX_FILTERS {
                return Err(Error::Validation(format!("a rule has 1 to {MAX_FILTERS} repositoryFilters")));
            }
            if let Some(f) = r.filters.iter().find(|f| !valid_filter(f)) {
                return Err(Error::Validation(format!(
                    "invalid repository filter {f:?}: lowercase letters, digits, '*' and the separators . _ - /"
                )));
            }
        }
        Ok(())
    }
}

impl ScanPolicy {
    pub fn validate(&self) -> Result<()> {
        if let Some(s) = &self.block_pulls_at_severity
            && rank(s).is_none()
        {
            return Err(Error::InvalidParameter(format!(
                "blockPullsAtSeverity must be one of {}, not {s:?}",
                SEVERITIES.join(", ")
            )));
        }
        if self.ignored_vulnerabilities.len() > 1000 {
            return Err(Error::InvalidParameter("at most 1000 ignoredVulnerabilities".into()));
        }
        Ok(())
    }

    /// Findings that refuse a pull under this policy.
    pub fn blocking<'a>(&self, findings: &'a [Finding]) -> Vec<&'a Finding> {
        let Some(limit) = self.block_pulls_at_severity.as_deref().and_then(rank) else { return Vec::new() };
        findings
            .iter()
            .filter(|f| rank(&f.severity).is_some_and(|r| r <= limit))
            .filter(|f| !self.ignored_vulnerabilities.iter().any(|i| *i == f.name || *i == f.record_id))
            .filter(|f| !(self.hide_unfixed && f.fixed_in.is_none()))
            .collect()
    }

    fn is_empty(&self) -> bool {
        *self == ScanPolicy::default()
    }
}

/// Scan policies by repository id, when this process sees every write (SQLite).
pub(crate) struct PolicyCache {
    enabled: bool,
    map: Mutex<HashMap<i64, Option<ScanPolicy>>>,
}

impl PolicyCache {
    pub(crate) fn new(enabled: bool) -> Self {
        PolicyCache { enabled, map: Mutex::default() }
    }
}

fn parse_policy(stored: Option<String>) -> Result<Option<ScanPolicy>> {
    stored
        .map(|s| serde_json::from_str(&s).map_err(|e| Error::Internal(format!("stored scan policy: {e}"))))
        .transpose()
}

impl Registry {
    pub async fn registry_scanning(&self) -> Result<RegistryScanning> {
        match self.meta.setting(REGISTRY_SCANNING).await? {
            Some(s) => {
                serde_json::from_str(&s).map_err(|e| Error::Internal(format!("stored scanning configuration: {e}")))
            }
            None => Ok(RegistryScanning::default()),
        }
    }

    pub async fn put_registry_scanning(&self, c: RegistryScanning) -> Result<RegistryScanning> {
        c.validate()?;
        let json = serde_json::to_string(&c).map_err(|e| Error::Internal(e.to_string()))?;
        self.meta.put_setting(REGISTRY_SCANNING, &json).await?;
        Ok(c)
    }

    /// How repository `key` (named `name` by clients) is scanned: its own `scanOnPush`, or the
    /// registry rules whose filters match its name.
    pub async fn repository_scanning(&self, name: &str, own_scan_on_push: bool) -> Result<RepositoryScanning> {
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

    pub(crate) async fn scan_policy_of(&self, repo_id: i64) -> Result<ScanPolicy> {
        if self.scan_policies.enabled
            && let Some(p) = self.scan_policies.map.lock().unwrap().get(&repo_id)
        {
            return Ok(p.clone().unwrap_or_default());
        }
        let p = parse_policy(self.meta.scan_policy(repo_id).await?)?;
        if self.scan_policies.enabled {
            self.scan_policies.map.lock().unwrap().insert(repo_id, p.clone());
        }
        Ok(p.unwrap_or_default())
    }

    pub async fn scan_policy(&self, key: &str) -> Result<ScanPolicy> {
        let (_, row) = self.repository(key).await?;
        self.scan_policy_of(row.id).await
    }

    /// Sets (or, with the empty policy, removes) a repository's scan policy.
    pub async fn put_scan_policy(&self, key: &str, p: ScanPolicy) -> Result<ScanPolicy> {
        p.validate()?;
        let (_, row) = self.repository(key).await?;
        let json = if p.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&p).map_err(|e| Error::Internal(e.to_string()))?)
        };
        self.meta.set_scan_policy(row.id, json.as_deref()).await?;
        self.scan_policies.map.lock().unwrap().remove(&row.id);
        Ok(p)
    }

    /// Refuses a pull of image `digest` that the repository's scan policy blocks.
    pub async fn check_pull(&self, repo: &berth_core::RepoName, digest: &str) -> Result<()> {
        let (id, policy) = if self.scan_policies.enabled {
            let id = self.existing_repo(repo).await?;
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
                return Err(Error::PullBlocked(format!(
                    "pulls of {repo}@{digest} are refused: the repository's scan policy blocks images without a \
                     completed scan ({})",
                    scan.map_or("never scanned".to_string(), |(s, _)| format!("scan status {s}"))
                )));
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
        Err(Error::PullBlocked(format!(
            "pulls of {repo}@{digest} are refused: it has {} finding(s) of severity {} or higher: {}{more}",
            blocking.len(),
            policy.block_pulls_at_severity.unwrap_or_default(),
            names.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in ["*", "prod/*", "a", "team-a/app_1.x", "*web*"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "Prod", "-a", "a-", "a//b", "a b", &"a".repeat(256)] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
    }

    fn finding(name: &str, severity: &str, fixed: bool) -> Finding {
        Finding {
            name: name.into(),
            record_id: format!("DSA-{name}"),
            package: "p".into(),
            version: "1".into(),
            fixed_in: fixed.then(|| "2".into()),
            severity: severity.into(),
            severity_source: "cvss".into(),
            layer: 0,
            path: "var/lib/dpkg/status".into(),
        }
    }

    #[test]
    fn blocking_by_severity_with_exceptions() {
        let f = [
            finding("CVE-1", "CRITICAL", true),
            finding("CVE-2", "HIGH", false),
            finding("CVE-3", "MEDIUM", true),
            finding("CVE-4", "UNDEFINED", true),
        ];
        let names = |p: &ScanPolicy| p.blocking(&f).iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        let mut p = ScanPolicy { block_pulls_at_severity: Some("HIGH".into()), ..Default::default() };
        assert_eq!(names(&p), ["CVE-1", "CVE-2"]);
        p.ignored_vulnerabilities = vec!["CVE-1".into()];
        assert_eq!(names(&p), ["CVE-2"]);
        p.hide_unfixed = true;
        assert!(names(&p).is_empty());
        p.block_pulls_at_severity = Some("LOW".into());
        assert_eq!(names(&p), ["CVE-3"]);
        p.ignored_vulnerabilities = vec!["DSA-CVE-3".into()]; // a record id works too
        assert_eq!(names(&p), ["CVE-1"]);
        assert!(
            ScanPolicy { block_pulls_at_severity: Some("SEVERE".into()), ..Default::default() }.validate().is_err()
        );
    }

    #[test]
    fn registry_rules_validate() {
        let rule = |f: &str, filters: &[&str]| ScanRule {
            scan_frequency: f.into(),
            filters: filters.iter().map(|s| s.to_string()).collect(),
        };
        let c = |t: &str, rules: Vec<ScanRule>| RegistryScanning { scan_type: t.into(), rules };
        assert!(c("BASIC", vec![rule("SCAN_ON_PUSH", &["*"])]).validate().is_ok());
        assert!(c("ENHANCED", vec![rule("SCAN_ON_PUSH", &["a*"]), rule("CONTINUOUS_SCAN", &["b"])]).validate().is_ok());
        assert!(c("BASIC", vec![rule("CONTINUOUS_SCAN", &["*"])]).validate().is_err());
        assert!(c("FANCY", vec![]).validate().is_err());
        assert!(c("BASIC", vec![rule("SCAN_ON_PUSH", &[])]).validate().is_err());
        assert!(c("BASIC", vec![rule("SCAN_ON_PUSH", &["*"]), rule("SCAN_ON_PUSH", &["a"])]).validate().is_err());
        assert!(c("BASIC", vec![rule("MANUAL", &["*"])]).validate().is_err());
        assert!(c("BASIC", vec![rule("SCAN_ON_PUSH", &["UPPER"])]).validate().is_err());
    }
}
