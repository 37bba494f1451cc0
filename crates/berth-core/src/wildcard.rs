//! Wildcards: `*` matches any run of characters. ECR's filters (tag mutability exclusions,
//! template and lifecycle filters) use only `*`; IAM policies also use `?` for one character.

/// ECR filter matching: `*` only; every other character matches itself.
pub fn matches(pattern: &str, s: &str) -> bool {
    glob_impl(pattern, s, false)
}

/// IAM matching: `*` any run of characters, `?` any one character.
pub fn glob(pattern: &str, s: &str) -> bool {
    glob_impl(pattern, s, true)
}

fn glob_impl(pattern: &str, s: &str, question_mark: bool) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si) = (0, 0);
    // Position of the last `*` and where in `s` it started matching, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && ((question_mark && p[pi] == '?') || (p[pi] != '*' && p[pi] == s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        for (p, s, want) in [
            ("latest", "latest", true),
            ("latest", "latest2", false),
            ("*", "", true),
            ("*", "anything", true),
            ("dev-*", "dev-123", true),
            ("dev-*", "prod-1", false),
            ("*-rc*", "1.0-rc2", true),
            ("v*.*", "v1.2", true),
            ("v*.*", "v12", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**", "x", true),
            ("a?c", "abc", false),
            ("a?c", "a?c", true),
        ] {
            assert_eq!(matches(p, s), want, "{p} ~ {s}");
        }
    }
}
