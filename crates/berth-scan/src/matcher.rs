//! Matching an inventory against OSV records: each package in its own ecosystem — Debian and
//! Alpine packages by their *source* package, keyed on the distribution release (`Debian:12`,
//! `Alpine:v3.19`), Python by normalized name (PEP 503), npm by name. No CPE guessing. Findings
//! without a fixed version ("affected, no fix yet") are marked unfixed so they can be shown apart.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::inventory::{Inventory, Kind, Package};
use crate::osv::{Record, Verdict, verdict};
use crate::version::Ecosystem;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The record's id, or its CVE alias when it has one (what ECR users look for).
    pub name: String,
    pub record_id: String,
    pub package: String,
    pub version: String,
    pub fixed_in: Option<String>,
    pub severity: String,
    /// Where the severity came from (`database_specific`, `ecosystem_specific`, `cvss`, `none`).
    pub severity_source: String,
    pub layer: usize,
    /// The file the package was read from (two installed copies of one package are two findings).
    #[serde(default)]
    pub path: String,
}

/// PEP 503 name normalization.
pub fn python_name(n: &str) -> String {
    let mut out = String::with_capacity(n.len());
    let mut dash = false;
    for c in n.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !dash {
                out.push('-');
            }
            dash = true;
        } else {
            out.push(c.to_ascii_lowercase());
            dash = false;
        }
    }
    out
}

/// The (OSV ecosystem, package name) pairs an inventory's packages are looked up under.
pub fn lookup_keys(inv: &Inventory) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> =
        inv.packages.iter().flat_map(|p| keys_of(inv, p)).map(|(e, n, _)| (e, n)).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The OSV ecosystem release key of an RPM distribution (`Rocky Linux:9`, `AlmaLinux:9`,
/// `Mageia:9`, `openSUSE:Leap 15.5`); Red Hat's own product streams are not derived.
fn rpm_ecosystem(os: &crate::inventory::Os) -> Option<String> {
    let v = os.version_id.as_deref()?;
    let major = v.split('.').next()?;
    Some(match os.id.as_str() {
        "rocky" => format!("Rocky Linux:{major}"),
        "almalinux" => format!("AlmaLinux:{major}"),
        "mageia" => format!("Mageia:{major}"),
        "opensuse-leap" => format!("openSUSE:Leap {v}"),
        _ => return None,
    })
}

/// The (OSV ecosystem, package name, version) keys a package is looked up under: RPM packages
/// under their source package and their own name (advisories name either). Language packages
/// an OS package installed are not looked up at all: their distribution's advisories, matched
/// on the OS package, cover them (a backported fix keeps the upstream version number).
fn keys_of(inv: &Inventory, p: &Package) -> Vec<(String, String, String)> {
    if p.owner.is_some() {
        return Vec::new();
    }
    if p.kind == Kind::Rpm {
        let Some(eco) = inv.os.as_ref().and_then(rpm_ecosystem) else { return Vec::new() };
        let mut k = vec![(eco.clone(), p.name.clone(), p.version.clone())];
        if let Some(src) = p.source_name.as_ref().filter(|s| **s != p.name) {
            k.push((eco, src.clone(), p.version.clone()));
        }
        return k;
    }
    key(inv, p).into_iter().collect()
}

/// The OSV ecosystem string and package name a package is looked up under.
fn key(inv: &Inventory, p: &Package) -> Option<(String, String, String)> {
    let os = inv.os.as_ref();
    match p.kind {
        Kind::Deb => {
            let os = os?;
            let eco = match os.id.as_str() {
                "debian" => format!("Debian:{}", os.version_id.as_deref()?),
                "ubuntu" => format!("Ubuntu:{}", os.version_id.as_deref()?),
                _ => return None,
            };
            let name = p.source_name.clone().unwrap_or_else(|| p.name.clone());
            let version = p.source_version.clone().unwrap_or_else(|| p.version.clone());
            Some((eco, name, version))
        }
        Kind::Apk => {
            let os = os?;
            let v = os.version_id.as_deref()?;
            let minor: Vec<&str> = v.split('.').take(2).collect();
            let eco = format!("Alpine:v{}", minor.join("."));
            Some((eco, p.source_name.clone().unwrap_or_else(|| p.name.clone()), p.version.clone()))
        }
        Kind::Python => Some(("PyPI".into(), python_name(&p.name), p.version.clone())),
        Kind::Npm => Some(("npm".into(), p.name.clone(), p.version.clone())),
        Kind::Go => Some(("Go".into(), p.name.clone(), p.version.clone())),
        Kind::Crate => Some(("crates.io".into(), p.name.clone(), p.version.clone())),
        Kind::Maven => Some(("Maven".into(), p.name.clone(), p.version.clone())),
        Kind::Rpm => None, // several keys: see keys_of
    }
}

/// Records indexed by (OSV ecosystem, package name).
#[derive(Debug, Default)]
pub struct Index<'a> {
    by_package: HashMap<(String, String), Vec<(&'a Record, usize)>>,
}

impl<'a> Index<'a> {
    pub fn new(records: &'a [Record]) -> Self {
        let mut by_package: HashMap<(String, String), Vec<(&Record, usize)>> = HashMap::new();
        for r in records {
            for (i, a) in r.affected.iter().enumerate() {
                if let Some(p) = &a.package {
                    let name = if p.ecosystem == "PyPI" { python_name(&p.name) } else { p.name.clone() };
                    by_package.entry((p.ecosystem.clone(), name)).or_default().push((r, i));
                }
            }
        }
        Index { by_package }
    }
}

fn severity(r: &Record, entry: usize) -> (String, String) {
    let a = &r.affected[entry];
    let pick = |v: &Option<serde_json::Value>| {
        v.as_ref().and_then(|v| v.get("severity").or_else(|| v.get("urgency"))).and_then(|s| s.as_str()).map(normalize)
    };
    if let Some(s) = pick(&a.ecosystem_specific).flatten() {
        return (s, "ecosystem_specific".into());
    }
    if let Some(s) = pick(&a.database_specific).flatten() {
        return (s, "database_specific".into());
    }
    if let Some(s) = pick(&r.database_specific).flatten() {
        return (s, "database_specific".into());
    }
    for sev in a.severity.iter().chain(&r.severity) {
        if let Some(score) = crate::cvss::base_score(&sev.score) {
            return (crate::cvss::rating(score).into(), "cvss".into());
        }
    }
    ("UNDEFINED".into(), "none".into())
}

/// A data source's word for a severity, in ECR's words (`CRITICAL`, `HIGH`, `MEDIUM`, `LOW`,
/// `INFORMATIONAL`); `None` for words that say nothing (`unimportant` is informational).
fn normalize(s: &str) -> Option<String> {
    Some(
        match s.to_ascii_lowercase().as_str() {
            "critical" => "CRITICAL",
            "high" | "important" => "HIGH",
            "medium" | "moderate" => "MEDIUM",
            "low" => "LOW",
            "unimportant" | "negligible" | "informational" => "INFORMATIONAL",
            _ => return None,
        }
        .to_string(),
    )
}

/// Every finding for the inventory.
pub fn findings(inv: &Inventory, index: &Index) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in &inv.packages {
        for (eco, name, version) in keys_of(inv, p) {
            let Some(ecosystem) = Ecosystem::from_osv(&eco) else { continue };
            let Some(candidates) = index.by_package.get(&(eco.clone(), name.clone())) else { continue };
            for (r, i) in candidates {
                if let Verdict::Affected { fixed } = verdict(&r.affected[*i], ecosystem, &version) {
                    let (severity, severity_source) = severity(r, *i);
                    let cve = r.aliases.iter().find(|a| a.starts_with("CVE-")).cloned();
                    out.push(Finding {
                        name: if r.id.starts_with("CVE-") { r.id.clone() } else { cve.unwrap_or_else(|| r.id.clone()) },
                        record_id: r.id.clone(),
                        package: p.name.clone(),
                        version: p.version.clone(),
                        fixed_in: fixed,
                        severity,
                        severity_source,
                        layer: p.layer,
                        path: p.path.clone(),
                    });
                }
            }
        }
    }
    // One finding per vulnerability and installed copy (records that share a CVE collapse).
    out.sort_by(|a, b| (&a.name, &a.package, &a.path, &a.version).cmp(&(&b.name, &b.package, &b.path, &b.version)));
    out.dedup_by(|a, b| a.name == b.name && a.package == b.package && a.path == b.path && a.version == b.version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Os;

    fn pkg(kind: Kind, name: &str, version: &str, source: Option<(&str, &str)>) -> Package {
        Package::test(kind, name, version, source)
    }

    #[test]
    fn matches_by_source_package_release_and_ecosystem_order() {
        let inv = Inventory {
            os: Some(Os { id: "debian".into(), version_id: Some("12".into()), codename: None }),
            packages: vec![
                pkg(Kind::Deb, "libssl3", "3.0.11-1~deb12u1", Some(("openssl", "3.0.11-1~deb12u1"))),
                pkg(Kind::Deb, "curl", "7.88.1-10+deb12u5", Some(("curl", "7.88.1-10+deb12u5"))),
                pkg(Kind::Python, "Requests", "2.28.1", None),
                pkg(Kind::Npm, "lodash", "4.17.20", None),
            ],
        };
        let records: Vec<Record> = serde_json::from_str(
            r#"[
            {"id": "DSA-5532-1", "aliases": ["CVE-2023-5363"],
             "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
               "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}]}],
               "database_specific": {"urgency": "high"}}]},
            {"id": "DSA-0000-1", "aliases": ["CVE-2000-0001"],
             "affected": [{"package": {"ecosystem": "Debian:11", "name": "openssl"},
               "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "9"}]}]}]},
            {"id": "CVE-2023-38545",
             "affected": [{"package": {"ecosystem": "Debian:12", "name": "curl"},
               "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "7.88.1-10+deb12u4"}]}]}]},
            {"id": "GHSA-j8r2-6x86-q33q", "aliases": ["CVE-2023-32681"],
             "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N"}],
             "affected": [{"package": {"ecosystem": "PyPI", "name": "requests"},
               "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]}]}]},
            {"id": "GHSA-npm-unfixed",
             "affected": [{"package": {"ecosystem": "npm", "name": "lodash"},
               "ranges": [{"type": "SEMVER", "events": [{"introduced": "4.0.0"}]}]}]}
            ]"#,
        )
        .unwrap();
        let index = Index::new(&records);
        let got = findings(&inv, &index);
        let names: Vec<(&str, &str, Option<&str>, &str)> = got
            .iter()
            .map(|f| (f.name.as_str(), f.package.as_str(), f.fixed_in.as_deref(), f.severity.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("CVE-2023-32681", "Requests", Some("2.31.0"), "MEDIUM"),
                ("CVE-2023-5363", "libssl3", Some("3.0.11-1~deb12u2"), "HIGH"),
                ("GHSA-npm-unfixed", "lodash", None, "UNDEFINED"),
            ],
            "Debian 11's record and curl's already-fixed one must not match"
        );
        assert_eq!(got[0].severity_source, "cvss");
        assert_eq!(python_name("Zope.Interface__x"), "zope-interface-x");
    }

    #[test]
    fn two_installed_copies_are_two_findings() {
        let copy = |v: &str, path: &str| Package { path: path.into(), ..pkg(Kind::Npm, "ms", v, None) };
        let inv = Inventory {
            os: None,
            packages: vec![
                copy("2.0.0", "app/node_modules/debug/node_modules/ms/package.json"),
                copy("2.1.1", "app/node_modules/ms/package.json"),
            ],
        };
        let records: Vec<Record> = serde_json::from_str(
            r#"[{"id": "GHSA-w9mr-4mfr-499f", "aliases": ["CVE-2017-20162"],
                 "affected": [{"package": {"ecosystem": "npm", "name": "ms"},
                   "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "2.1.2"}]}]}]},
                {"id": "CVE-2017-20162",
                 "affected": [{"package": {"ecosystem": "npm", "name": "ms"},
                   "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "2.1.2"}]}]}]}]"#,
        )
        .unwrap();
        let got = findings(&inv, &Index::new(&records));
        let seen: Vec<(&str, &str)> = got.iter().map(|f| (f.version.as_str(), f.path.as_str())).collect();
        assert_eq!(
            seen,
            [
                ("2.0.0", "app/node_modules/debug/node_modules/ms/package.json"),
                ("2.1.1", "app/node_modules/ms/package.json")
            ],
            "one per copy; the two records of one CVE count once per copy"
        );
    }
}
