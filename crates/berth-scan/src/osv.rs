//! OSV records (the schema osv.dev publishes) and whether a package version is affected, with
//! the ecosystem's own version order. Ranges of type `ECOSYSTEM` and `SEMVER` are evaluated as
//! the OSV specification describes: events in version order, `introduced` opens, `fixed` closes
//! at that version, `last_affected` closes after it, `limit` bounds the range from above;
//! explicit `versions` are affected too. `GIT` ranges need commits, which images do not carry:
//! they are ignored.

use std::cmp::Ordering;

use serde::Deserialize;

use crate::version::Ecosystem;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Record {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub modified: Option<String>,
    #[serde(default)]
    pub severity: Vec<Severity>,
    #[serde(default)]
    pub affected: Vec<Affected>,
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Severity {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Affected {
    pub package: Option<Package>,
    #[serde(default)]
    pub ranges: Vec<Range>,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub severity: Vec<Severity>,
    #[serde(default)]
    pub ecosystem_specific: Option<serde_json::Value>,
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

impl Event {
    fn version(&self) -> &str {
        match self {
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
        }
    }

    /// Among events at the same version, an opening one comes first.
    fn rank(&self) -> u8 {
        match self {
            Event::Introduced(_) => 0,
            Event::LastAffected(_) => 1,
            Event::Fixed(_) => 2,
            Event::Limit(_) => 3,
        }
    }
}

/// How a version relates to one `affected` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    NotAffected,
    /// Affected; the first version that fixes it, if the data names one.
    Affected {
        fixed: Option<String>,
    },
}

fn cmp(eco: Ecosystem, a: &str, b: &str) -> Option<Ordering> {
    // "0" is OSV's "every version", below anything.
    match (a == "0", b == "0") {
        (true, true) => Some(Ordering::Equal),
        (true, false) => Some(Ordering::Less),
        (false, true) => Some(Ordering::Greater),
        _ => eco.compare(a, b),
    }
}

/// Whether a range contradicts itself: an `introduced` whose closing event (the next `fixed`,
/// `last_affected` or `limit` the data lists after it) sorts before it, such as `introduced 1.6,
/// fixed 1.6b4`. Sorting such events would open a window that never closes ("affected from 1.6
/// on"); the range is treated as empty instead, and [`inconsistent_ranges`] names it at import.
pub fn is_inconsistent(range: &Range, eco: Ecosystem) -> bool {
    let events = &range.events;
    events.iter().enumerate().any(|(i, e)| {
        let Event::Introduced(start) = e else { return false };
        let closer = events[i + 1..].iter().find(|c| !matches!(c, Event::Introduced(_)));
        closer.is_some_and(|c| cmp(eco, c.version(), start) == Some(Ordering::Less) && c.version() != "0")
    })
}

/// The packages of a record whose ranges contradict themselves (see [`is_inconsistent`]).
pub fn inconsistent_ranges(record: &Record) -> Vec<String> {
    record
        .affected
        .iter()
        .filter_map(|a| {
            let p = a.package.as_ref()?;
            let eco = Ecosystem::from_osv(&p.ecosystem)?;
            let bad = a.ranges.iter().any(|r| (r.kind == "ECOSYSTEM" || r.kind == "SEMVER") && is_inconsistent(r, eco));
            bad.then(|| format!("{}/{}", p.ecosystem, p.name))
        })
        .collect()
}

/// Whether `version` (of the entry's package, in ecosystem `eco`) is affected.
pub fn verdict(entry: &Affected, eco: Ecosystem, version: &str) -> Verdict {
    let mut fixed_in = None;
    let mut affected = entry.versions.iter().any(|v| v == version);
    for range in &entry.ranges {
        if (range.kind != "ECOSYSTEM" && range.kind != "SEMVER") || is_inconsistent(range, eco) {
            continue;
        }
        let mut events = range.events.clone();
        // Events whose version this ecosystem cannot read are dropped rather than guessed at.
        events.retain(|e| e.version() == "0" || cmp(eco, e.version(), e.version()).is_some());
        events.sort_by(|a, b| {
            cmp(eco, a.version(), b.version()).unwrap_or(Ordering::Equal).then(a.rank().cmp(&b.rank()))
        });
        let Some(_) = cmp(eco, version, version) else { continue };
        let mut inside = false;
        let mut next_fix = None;
        for e in &events {
            let o = cmp(eco, version, e.version()).unwrap_or(Ordering::Less);
            match e {
                Event::Introduced(_) if o != Ordering::Less => inside = true,
                Event::Fixed(_) if o != Ordering::Less => inside = false,
                Event::LastAffected(_) if o == Ordering::Greater => inside = false,
                Event::Limit(_) if o != Ordering::Less => inside = false,
                Event::Fixed(v) if inside && next_fix.is_none() && e.version() != "0" => next_fix = Some(v.clone()),
                _ => {}
            }
        }
        if inside {
            affected = true;
            if fixed_in.is_none() {
                fixed_in = next_fix;
            }
        }
    }
    if affected { Verdict::Affected { fixed: fixed_in } } else { Verdict::NotAffected }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> Affected {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn ranges_as_the_osv_specification_evaluates_them() {
        let deb = entry(
            r#"{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}]}]}"#,
        );
        let v = |s| verdict(&deb, Ecosystem::Debian, s);
        assert_eq!(v("3.0.11-1~deb12u1"), Verdict::Affected { fixed: Some("3.0.11-1~deb12u2".into()) });
        assert_eq!(v("3.0.11-1~deb12u2"), Verdict::NotAffected);
        assert_eq!(v("3.0.15-1~deb12u1"), Verdict::NotAffected);
        // "fixed: 0": no version is affected.
        let never = entry(r#"{"ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0"}]}]}"#);
        assert_eq!(verdict(&never, Ecosystem::Debian, "1.0-1"), Verdict::NotAffected);
        // Two windows; last_affected; limit; explicit versions.
        let py = entry(
            r#"{"ranges": [{"type": "ECOSYSTEM", "events": [
                  {"introduced": "1.0"}, {"fixed": "1.2.3"}, {"introduced": "2.0"}, {"last_affected": "2.1"}]}],
                "versions": ["0.9.1"]}"#,
        );
        let p = |s| verdict(&py, Ecosystem::PyPI, s);
        assert_eq!(p("0.9"), Verdict::NotAffected);
        assert_eq!(p("0.9.1"), Verdict::Affected { fixed: None });
        assert_eq!(p("1.0rc1"), Verdict::NotAffected, "a pre-release of 1.0 precedes 1.0");
        assert_eq!(p("1.2"), Verdict::Affected { fixed: Some("1.2.3".into()) });
        assert_eq!(p("1.2.3"), Verdict::NotAffected);
        assert_eq!(p("2.1"), Verdict::Affected { fixed: None }, "unfixed: affected, no fix yet");
        assert_eq!(p("2.1.1"), Verdict::NotAffected);
        let lim = entry(r#"{"ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"limit": "3.0.0"}]}]}"#);
        assert_eq!(verdict(&lim, Ecosystem::Npm, "2.9.9"), Verdict::Affected { fixed: None });
        assert_eq!(verdict(&lim, Ecosystem::Npm, "3.0.0"), Verdict::NotAffected);
        // Git ranges carry commits, not versions: ignored.
        let git = entry(r#"{"ranges": [{"type": "GIT", "events": [{"introduced": "0"}]}]}"#);
        assert_eq!(verdict(&git, Ecosystem::Go, "v1.0.0"), Verdict::NotAffected);
        // Events out of order in the data are sorted first.
        let unordered =
            entry(r#"{"ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "1.5-1"}, {"introduced": "1.0-1"}]}]}"#);
        assert_eq!(verdict(&unordered, Ecosystem::Debian, "1.2-1"), Verdict::Affected { fixed: Some("1.5-1".into()) });
    }

    #[test]
    fn a_range_whose_fix_precedes_its_start_is_empty() {
        // A PyPI record with `introduced 1.6, fixed 1.6b4`: sorted naively, "affected from 1.6 on".
        let bad = entry(
            r#"{"package": {"ecosystem": "PyPI", "name": "django"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.6"}, {"fixed": "1.6b4"}]}]}"#,
        );
        for v in ["1.6", "2.0", "4.2.1", "1.5"] {
            assert_eq!(verdict(&bad, Ecosystem::PyPI, v), Verdict::NotAffected, "{v}");
        }
        assert!(is_inconsistent(&bad.ranges[0], Ecosystem::PyPI));
        let r: Record = serde_json::from_str(&format!(
            r#"{{"id": "PYSEC-2014-1", "affected": [{}]}}"#,
            serde_json::to_string(&serde_json::json!({"package": {"ecosystem": "PyPI", "name": "django"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.6"}, {"fixed": "1.6b4"}]}]}))
            .unwrap()
        ))
        .unwrap();
        assert_eq!(inconsistent_ranges(&r), ["PyPI/django"]);
        // Consistent ranges, including a fix listed before its introduction, are not flagged.
        let fine =
            entry(r#"{"ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "1.5-1"}, {"introduced": "1.0-1"}]}]}"#);
        assert!(!is_inconsistent(&fine.ranges[0], Ecosystem::Debian));
        let zero = entry(r#"{"ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "0"}]}]}"#);
        assert!(!is_inconsistent(&zero.ranges[0], Ecosystem::PyPI), "fixed 0 is OSV's 'never affected'");
    }

    #[test]
    fn records_parse() {
        let r: Record = serde_json::from_str(
            r#"{"id": "DSA-5532-1", "aliases": ["CVE-2023-5363"], "modified": "2023-10-25T00:00:00Z",
                "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}]}],
                  "database_specific": {"urgency": "high"}}],
                "unknown_field": 1}"#,
        )
        .unwrap();
        assert_eq!(r.aliases, ["CVE-2023-5363"]);
        assert_eq!(r.affected[0].package.as_ref().unwrap().name, "openssl");
    }
}
