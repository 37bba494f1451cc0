//! What scanning is configured to do: ECR's registry scanning configuration (scan type and rules
//! with `SCAN_ON_PUSH` / `CONTINUOUS_SCAN` frequencies over wildcard filters), how one repository
//! is scanned, and Berth's per-repository scan policy (refuse pulls of images whose findings reach
//! a severity, with CVE exceptions; hide unfixed findings). Values and their rules only.

use berth_scan::matcher::Finding;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
            return Err(Error::validation(format!("scanType must be BASIC or ENHANCED, not {:?}", self.scan_type)));
        }
        if self.rules.len() > MAX_RULES {
            return Err(Error::validation(format!("at most {MAX_RULES} rules (one per scan frequency)")));
        }
        let mut seen = Vec::new();
        for r in &self.rules {
            if !matches!(r.scan_frequency.as_str(), "SCAN_ON_PUSH" | "CONTINUOUS_SCAN") {
                return Err(Error::validation(format!(
                    "scanFrequency must be SCAN_ON_PUSH or CONTINUOUS_SCAN, not {:?}",
                    r.scan_frequency
                )));
            }
            if r.scan_frequency == "CONTINUOUS_SCAN" && self.scan_type == "BASIC" {
                return Err(Error::validation(
                    "CONTINUOUS_SCAN rules need scanType ENHANCED (basic scanning scans on push or manually)".into(),
                ));
            }
            if seen.contains(&&r.scan_frequency) {
                return Err(Error::validation(format!("two rules with scanFrequency {}", r.scan_frequency)));
            }
            seen.push(&r.scan_frequency);
            if r.filters.is_empty() || r.filters.len() > MAX_FILTERS {
                return Err(Error::validation(format!("a rule has 1 to {MAX_FILTERS} repositoryFilters")));
            }
            if let Some(f) = r.filters.iter().find(|f| !valid_filter(f)) {
                return Err(Error::validation(format!(
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
            return Err(Error::bad_request(format!(
                "blockPullsAtSeverity must be one of {}, not {s:?}",
                SEVERITIES.join(", ")
            )));
        }
        if self.ignored_vulnerabilities.len() > 1000 {
            return Err(Error::bad_request("at most 1000 ignoredVulnerabilities".into()));
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

    pub(crate) fn is_empty(&self) -> bool {
        *self == ScanPolicy::default()
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
