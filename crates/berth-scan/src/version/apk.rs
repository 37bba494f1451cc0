//! Alpine's version order (apk-tools): `1.2.3[letter][_suffix[N]]...[-rN]`. Pre-release suffixes
//! (`_alpha`, `_beta`, `_pre`, `_rc`) sort before the bare version, post-release ones (`_cvs`,
//! `_svn`, `_git`, `_hg`, `_p`) after it; a number after the first with a leading zero compares as
//! a decimal fraction (as text).

use std::cmp::Ordering;

#[derive(Debug, PartialEq, Eq)]
struct Version {
    numbers: Vec<String>,
    letter: Option<u8>,
    suffixes: Vec<(i32, u64)>,
    revision: u64,
}

fn suffix_rank(s: &str) -> Option<i32> {
    Some(match s {
        "alpha" => -4,
        "beta" => -3,
        "pre" => -2,
        "rc" => -1,
        "cvs" => 1,
        "svn" => 2,
        "git" => 3,
        "hg" => 4,
        "p" => 5,
        _ => return None,
    })
}

fn parse(v: &str) -> Option<Version> {
    let v = v.trim();
    let (main, revision) = match v.rsplit_once("-r") {
        Some((m, r)) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) => (m, r.parse().ok()?),
        _ => (v, 0),
    };
    let (head, suffixes) = match main.split_once('_') {
        Some((h, s)) => (h, Some(s)),
        None => (main, None),
    };
    let (nums, letter) = match head.as_bytes().last() {
        Some(c) if c.is_ascii_lowercase() => (&head[..head.len() - 1], Some(*c)),
        _ => (head, None),
    };
    let numbers: Vec<String> = nums.split('.').map(str::to_string).collect();
    if numbers.iter().any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let mut out = Vec::new();
    for s in suffixes.into_iter().flat_map(|s| s.split('_')) {
        let name_end = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
        let rank = suffix_rank(&s[..name_end])?;
        let n = if name_end < s.len() { s[name_end..].parse().ok()? } else { 0 };
        out.push((rank, n));
    }
    Some(Version { numbers, letter, suffixes: out, revision })
}

fn number_cmp(a: &str, b: &str, first: bool) -> Ordering {
    if !first && (a.starts_with('0') || b.starts_with('0')) {
        return a.cmp(b);
    }
    let (x, y) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

/// Orders two Alpine versions; `None` if either is not one.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse(a)?, parse(b)?);
    for (k, (x, y)) in a.numbers.iter().zip(&b.numbers).enumerate() {
        match number_cmp(x, y, k == 0) {
            Ordering::Equal => {}
            o => return Some(o),
        }
    }
    match a.numbers.len().cmp(&b.numbers.len()) {
        Ordering::Equal => {}
        o => return Some(o),
    }
    match a.letter.cmp(&b.letter) {
        Ordering::Equal => {}
        o => return Some(o),
    }
    let n = a.suffixes.len().max(b.suffixes.len());
    for k in 0..n {
        let x = a.suffixes.get(k).copied().unwrap_or((0, 0));
        let y = b.suffixes.get(k).copied().unwrap_or((0, 0));
        match x.cmp(&y) {
            Ordering::Equal => {}
            o => return Some(o),
        }
    }
    Some(a.revision.cmp(&b.revision))
}
