//! Maven's version order (after `ComparableVersion`): items split at `.` and `-` and where digits
//! meet letters; numbers compare as numbers, qualifiers by rank — `alpha` < `beta` <
//! `milestone` < `rc` (= `cr`) < `snapshot` < release (``, `ga`, `final`, `release`) < `sp` <
//! anything else (alphabetically) — and a number beats any qualifier. Missing items count as 0
//! or as the release; trailing release items are dropped, so `1.0.0.RELEASE` = `1`.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Num(u128),
    Word(String),
}

fn rank(w: &str) -> (u8, &str) {
    match w {
        "alpha" | "a" => (1, ""),
        "beta" | "b" => (2, ""),
        "milestone" | "m" => (3, ""),
        "rc" | "cr" => (4, ""),
        "snapshot" => (5, ""),
        "" | "ga" | "final" | "release" => (6, ""),
        "sp" => (7, ""),
        other => (8, other),
    }
}

fn items(v: &str) -> Option<Vec<Item>> {
    let v = v.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<Item>| {
        if cur.is_empty() {
            return;
        }
        out.push(match cur.parse::<u128>() {
            Ok(n) => Item::Num(n),
            Err(_) => Item::Word(std::mem::take(cur)),
        });
        cur.clear();
    };
    for c in v.chars() {
        if c == '.' || c == '-' || c == '_' || c == '+' {
            flush(&mut cur, &mut out);
        } else {
            let switch = cur.chars().last().is_some_and(|l| l.is_ascii_digit() != c.is_ascii_digit());
            if switch {
                flush(&mut cur, &mut out);
            }
            cur.push(c);
        }
    }
    flush(&mut cur, &mut out);
    while matches!(out.last(), Some(Item::Num(0))) || matches!(out.last(), Some(Item::Word(w)) if rank(w).0 == 6) {
        out.pop();
    }
    Some(out)
}

fn cmp_item(a: Option<&Item>, b: Option<&Item>) -> Ordering {
    match (a, b) {
        (Some(Item::Num(x)), Some(Item::Num(y))) => x.cmp(y),
        (Some(Item::Num(_)), Some(Item::Word(_))) => Ordering::Greater,
        (Some(Item::Word(_)), Some(Item::Num(_))) => Ordering::Less,
        (Some(Item::Word(x)), Some(Item::Word(y))) => rank(x).cmp(&rank(y)),
        (Some(Item::Num(x)), None) => x.cmp(&0),
        (None, Some(Item::Num(y))) => 0.cmp(y),
        (Some(Item::Word(x)), None) => rank(x).cmp(&rank("")),
        (None, Some(Item::Word(y))) => rank("").cmp(&rank(y)),
        (None, None) => Ordering::Equal,
    }
}

/// Orders two Maven versions.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (items(a)?, items(b)?);
    for i in 0..a.len().max(b.len()) {
        match cmp_item(a.get(i), b.get(i)) {
            Ordering::Equal => {}
            o => return Some(o),
        }
    }
    Some(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn maven_order() {
        // Ascending, from Maven's ComparableVersionTest and common release trains.
        let asc = [
            "1-alpha2",
            "1-alpha10",
            "1-beta1",
            "1-milestone1",
            "1-rc1",
            "1-snapshot",
            "1",
            "1-sp1",
            "1-abc",
            "1.0.1",
            "1.1",
            "1.2.3-rc1",
            "1.2.3",
            "2.14.1",
            "2.15.0",
            "2.17.1",
            "2.19.0",
            "10.0",
        ];
        for w in asc.windows(2) {
            assert_eq!(compare(w[0], w[1]), Some(Less), "{} < {}", w[0], w[1]);
            assert_eq!(compare(w[1], w[0]), Some(Greater));
        }
        for (a, b) in
            [("1.0.0.RELEASE", "1"), ("1.0-final", "1.0.0"), ("1-GA", "1"), ("1.0", "1.0.0"), ("1-cr2", "1-rc2")]
        {
            assert_eq!(compare(a, b), Some(Equal), "{a} = {b}");
        }
        assert_eq!(compare("5.3.18.RELEASE", "5.3.20"), Some(Less));
        assert_eq!(compare("", "1"), None);
    }
}
