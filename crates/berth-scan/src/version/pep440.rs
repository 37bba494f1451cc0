//! Python's version order (PEP 440, as `packaging.version.Version` orders): epoch, release (trailing
//! zeros ignored), then pre-releases (`a` < `b` < `rc`) before the release, post-releases after,
//! development releases before whatever they are attached to, and local versions after their
//! public version. Spellings are normalized as PEP 440 says (`alpha` = `a`, `c`/`pre`/`preview` =
//! `rc`, `rev`/`r`/`-N` = post, `_`/`-` as separators, a leading `v`, any case).

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    Num(u64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    epoch: u64,
    release: Vec<u64>,
    pre: Option<(u8, u64)>,
    post: Option<u64>,
    dev: Option<u64>,
    local: Vec<Local>,
}

/// Splits `s` into a leading number and the rest.
fn number(s: &str) -> (Option<u64>, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (s[..end].parse().ok(), &s[end..])
}

fn sep(s: &str) -> &str {
    s.strip_prefix(['.', '-', '_']).unwrap_or(s)
}

fn parse(v: &str) -> Option<Version> {
    let lower = v.trim().to_ascii_lowercase();
    let mut s = lower.strip_prefix('v').unwrap_or(&lower);
    let (public, local) = match s.split_once('+') {
        Some((p, l)) => (p, Some(l)),
        None => (s, None),
    };
    s = public;
    let mut epoch = 0;
    if let Some((e, rest)) = s.split_once('!') {
        epoch = e.parse().ok()?;
        s = rest;
    }
    let mut release = Vec::new();
    loop {
        let (n, rest) = number(s);
        release.push(n?);
        match rest.strip_prefix('.') {
            Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => s = r,
            _ => {
                s = rest;
                break;
            }
        }
    }
    let mut pre = None;
    let t = sep(s);
    for (names, kind) in [(&["alpha", "a"][..], 0u8), (&["beta", "b"][..], 1), (&["preview", "pre", "rc", "c"][..], 2)]
    {
        if let Some(name) = names.iter().find(|n| t.starts_with(**n)) {
            let (n, rest) = number(sep(&t[name.len()..]));
            pre = Some((kind, n.unwrap_or(0)));
            s = rest;
            break;
        }
    }
    let mut post = None;
    let t = sep(s);
    if let Some(name) = ["post", "rev", "r"].iter().find(|n| t.starts_with(**n)) {
        let (n, rest) = number(sep(&t[name.len()..]));
        post = Some(n.unwrap_or(0));
        s = rest;
    } else if let Some(r) = s.strip_prefix('-') {
        // `1.0-1` is `1.0.post1`.
        let (n, rest) = number(r);
        if let Some(n) = n {
            post = Some(n);
            s = rest;
        }
    }
    let mut dev = None;
    let t = sep(s);
    if let Some(r) = t.strip_prefix("dev") {
        let (n, rest) = number(sep(r));
        dev = Some(n.unwrap_or(0));
        s = rest;
    }
    if !s.is_empty() {
        return None;
    }
    let local = match local {
        None => Vec::new(),
        Some(l) => l
            .split(['.', '-', '_'])
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    None
                } else if p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse().ok().map(Local::Num)
                } else {
                    Some(Local::Str(p.to_string()))
                }
            })
            .collect::<Option<_>>()?,
    };
    Some(Version { epoch, release, pre, post, dev, local })
}

/// A part of the key: a rank that puts "absent" before or after every present value, then the value.
type Rank = (i32, u64);

/// `packaging`'s comparison key: epoch, release, pre, post, dev.
type Key = (u64, Vec<u64>, Rank, Rank, Rank);

/// `packaging`'s comparison key, as numbers that order the same way.
fn key(v: &Version) -> Key {
    let mut release = v.release.clone();
    while release.len() > 1 && release.last() == Some(&0) {
        release.pop();
    }
    // A dev release of the final version sorts before its pre-releases.
    let pre = match (v.pre, v.post, v.dev) {
        (None, None, Some(_)) => (-1, 0),
        (None, _, _) => (3, 0),
        (Some((k, n)), _, _) => (k as i32, n),
    };
    let post = v.post.map_or((-1, 0), |n| (0, n));
    let dev = v.dev.map_or((1, 0), |n| (0, n));
    (v.epoch, release, pre, post, dev)
}

fn local_cmp(a: &[Local], b: &[Local]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Local::Num(p), Local::Num(q)) => p.cmp(q),
            (Local::Num(_), Local::Str(_)) => Ordering::Greater,
            (Local::Str(_), Local::Num(_)) => Ordering::Less,
            (Local::Str(p), Local::Str(q)) => p.cmp(q),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Orders two PEP 440 versions; `None` if either is not one.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse(a)?, parse(b)?);
    let (ka, kb) = (key(&a), key(&b));
    // Release segments compare as if padded with zeros.
    let rel = {
        let n = ka.1.len().max(kb.1.len());
        let pad = |r: &Vec<u64>| (0..n).map(|i| r.get(i).copied().unwrap_or(0)).collect::<Vec<_>>();
        pad(&ka.1).cmp(&pad(&kb.1))
    };
    Some(
        ka.0.cmp(&kb.0)
            .then(rel)
            .then(ka.2.cmp(&kb.2))
            .then(ka.3.cmp(&kb.3))
            .then(ka.4.cmp(&kb.4))
            .then_with(|| local_cmp(&a.local, &b.local)),
    )
}
