//! Semantic Versioning 2.0 precedence (npm, crates.io) and Go module versions (`v` + semver;
//! pseudo-versions are semver pre-releases; `+incompatible` is build metadata).

use std::cmp::Ordering;

struct Version<'a> {
    core: [u64; 3],
    pre: Vec<&'a str>,
}

fn parse(v: &str) -> Option<Version<'_>> {
    let v = v.trim();
    let v = v.split_once('+').map_or(v, |(m, _)| m);
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let mut parts = core.split('.');
    let mut n = [0u64; 3];
    for slot in &mut n {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    let pre: Vec<&str> = match pre {
        Some(p) => p.split('.').collect(),
        None => Vec::new(),
    };
    if pre.iter().any(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
        return None;
    }
    Some(Version { core: n, pre })
}

fn ident_cmp(a: &str, b: &str) -> Ordering {
    let num = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match (num(a), num(b)) {
        (true, true) => {
            let (x, y) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

fn cmp(a: &Version, b: &Version) -> Ordering {
    a.core.cmp(&b.core).then_with(|| match (a.pre.is_empty(), b.pre.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => {
            for (x, y) in a.pre.iter().zip(&b.pre) {
                match ident_cmp(x, y) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            a.pre.len().cmp(&b.pre.len())
        }
    })
}

/// Orders two semantic versions (an optional leading `v` is allowed, as npm allows it).
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let a = a.trim().strip_prefix('v').unwrap_or(a.trim());
    let b = b.trim().strip_prefix('v').unwrap_or(b.trim());
    Some(cmp(&parse(a)?, &parse(b)?))
}

/// Orders two Go module versions (`v1.2.3`, `v0.0.0-20191109021931-daa7c04131f5`; OSV writes
/// them without the `v`).
pub fn compare_go(a: &str, b: &str) -> Option<Ordering> {
    let a = a.trim().strip_prefix('v').unwrap_or(a.trim());
    let b = b.trim().strip_prefix('v').unwrap_or(b.trim());
    Some(cmp(&parse(a)?, &parse(b)?))
}
