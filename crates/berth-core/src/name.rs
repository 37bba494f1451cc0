//! Repository names, tags and manifest references, per the OCI distribution spec.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Longest accepted repository name. Clients limit `host/name` to 255 characters;
/// Distribution and ECR cap the name itself at 255 (ECR: 256).
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name must not be empty")]
    Empty,
    #[error("repository name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error(
        "invalid repository name {0:?}: components of lowercase letters and digits, separated by '.', '_', '__' or '-', joined by '/'"
    )]
    Invalid(String),
    #[error("invalid tag {0:?}: 1 to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    InvalidTag(String),
    #[error("invalid reference {0:?}: {1}")]
    InvalidReference(String, DigestError),
}

/// A repository name that matches
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        if !s.split('/').all(valid_component) {
            return Err(NameError::Invalid(s.to_string()));
        }
        Ok(RepoName(s.to_string()))
    }

    /// A stored repository key: a name, or `<account>:<name>` for a repository of an account
    /// other than the server's configured one (see [`repo_key`]).
    pub fn parse_key(key: &str) -> Result<Self, NameError> {
        match split_repo_key(key) {
            (None, name) => Self::parse(name),
            (Some(account), name) => {
                if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(NameError::Invalid(key.to_string()));
                }
                Self::parse(name)?;
                Ok(RepoName(key.to_string()))
            }
        }
    }

    /// The name in its account, qualified with `account` (`None`: the configured account).
    pub fn in_account(self, account: Option<&str>) -> Self {
        match account {
            Some(a) => RepoName(repo_key(Some(a), self.name())),
            None => self,
        }
    }

    /// The key it is stored under (the name itself in the configured account).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as clients write it, without the account.
    pub fn name(&self) -> &str {
        split_repo_key(&self.0).1
    }

    /// The account, when not the configured one.
    pub fn account(&self) -> Option<&str> {
        split_repo_key(&self.0).0
    }
}

/// The key a repository is stored under: its name in the configured account, `<account>:<name>`
/// in another (`:` never appears in a name, so keys of different accounts never collide).
pub fn repo_key(account: Option<&str>, name: &str) -> String {
    match account {
        Some(a) => format!("{a}:{name}"),
        None => name.to_string(),
    }
}

/// The account (`None`: the configured one) and the name of a repository key.
pub fn split_repo_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once(':') {
        Some((a, n)) => (Some(a), n),
        None => (None, key),
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if ok { Ok(Tag(s.to_string())) } else { Err(NameError::InvalidTag(s.to_string())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            s.parse().map(Reference::Digest).map_err(|e| NameError::InvalidReference(s.to_string(), e))
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for ok in [
            "a",
            "hello",
            "library/ubuntu",
            "a/b/c/d",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "my.app",
            "a0/b1.c2_d3-e4",
            &"a".repeat(255),
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "Hello",
            "..",
            "a/../b",
            "/abs",
            "a/",
            "a//b",
            "-a",
            "a-",
            "a___b",
            "a..b",
            "a._b",
            "a b",
            "a\0b",
            "ü",
            "a\\b",
            &"a".repeat(256),
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn tags_and_references() {
        assert!(Tag::parse("v1.0_rc-1").is_ok());
        assert!(Tag::parse("_x").is_ok());
        assert!(Tag::parse(&"a".repeat(128)).is_ok());
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = format!("sha256:{}", "f".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert!(Reference::parse("sha256:xyz").is_err());
    }
}
