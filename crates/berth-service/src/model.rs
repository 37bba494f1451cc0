//! Plain values the service hands out and takes in, shared by its domains.

use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_blob::BlobBody;
use berth_core::{Digest, RepoName};
use berth_meta::ManifestRow;
pub use berth_meta::TagStatus;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::{Error, InvalidKind, Result};

/// Most entries one page of a tag or catalog listing returns, whatever `n` asks.
pub const MAX_PAGE: usize = 10_000;

/// A byte range as a client asked for it: `first-last`, `first-` or `-suffix_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    From { first: u64, last: Option<u64> },
    Suffix(u64),
}

pub struct BlobRead {
    pub digest: Digest,
    /// The whole blob's size.
    pub size: u64,
    /// The part being returned, when a range was asked for.
    pub range: Option<Range<u64>>,
    pub body: BlobBody,
}

/// A stored manifest as served to clients.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub content: Bytes,
    pub subject: Option<String>,
}

impl From<ManifestRow> for Manifest {
    fn from(r: ManifestRow) -> Self {
        Manifest { digest: r.digest, media_type: r.media_type, content: Bytes::from(r.content), subject: r.subject }
    }
}

/// Whether an index's child manifests must already be in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Children {
    /// ECR's PutImage: ReferencedImagesNotFound otherwise.
    Required,
    /// OCI pushes: a sparse index (some platforms only) is accepted, as Harbor and Zot do.
    MayBeAbsent,
}

/// The path a manifest is stored by: what it requires, and the cause its events name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    pub children: Children,
    pub cause: &'static str,
}

impl Via {
    pub const OCI_PUSH: Via = Via { children: Children::MayBeAbsent, cause: "push" };
    pub const PUT_IMAGE: Via = Via { children: Children::Required, cause: "put_image" };
    pub const SBOM: Via = Via { children: Children::Required, cause: "sbom" };
    /// Pushed by another registry's replication: not replicated again.
    pub const REPLICATION: Via = Via { children: Children::MayBeAbsent, cause: "replication" };
    /// Imported from a pull-through cache's upstream (an index before its children).
    pub const PULL_THROUGH: Via = Via { children: Children::MayBeAbsent, cause: "pull_through" };
}

pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// One page of a listing; `more` says whether entries follow the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// A repository key: a name, account-qualified outside the configured account.
pub fn parse_repo(name: &str) -> Result<RepoName> {
    Ok(RepoName::parse_key(name)?)
}

pub fn parse_digest(s: &str) -> Result<Digest> {
    Ok(s.parse::<Digest>()?)
}

/// An image as a request names it: by digest, tag, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageId {
    pub digest: Option<String>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFailure {
    pub id: ImageId,
    pub code: &'static str,
    pub reason: String,
}

/// One page and the token for the next.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Result of one layer's availability check.
#[derive(Debug, Clone)]
pub enum LayerCheck {
    Available { digest: String, size: u64 },
    Unavailable { digest: String },
    Failed { digest: String, code: &'static str, reason: String },
}

/// The first `limit` of `items` (fetched with one extra to tell whether more follow), with the
/// token that continues after the last.
pub(crate) fn paged<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Paged<T> {
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|i| encode_token(&key(i)))
    } else {
        None
    };
    Paged { items, next }
}

pub(crate) fn encode_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

pub(crate) fn decode_token(token: Option<&str>) -> Result<Option<String>> {
    token
        .map(|t| {
            URL_SAFE_NO_PAD.decode(t).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| {
                Error::parameter(
                    "nextToken",
                    "'Must be a token returned by a \
                     previous call'"
                        .into(),
                )
            })
        })
        .transpose()
}

pub(crate) fn check_max(max: Option<i64>, limit: i64) -> Result<i64> {
    match max {
        None => Ok(limit),
        Some(n) if (1..=limit).contains(&n) => Ok(n),
        Some(n) => Err(Error::parameter(
            "maxResults",
            format!(
                "'Member must have value between 1 and \
             {limit}', got {n}"
            ),
        )),
    }
}

pub fn parse_tag_status(s: Option<&str>) -> Result<TagStatus> {
    match s {
        None | Some("ANY") => Ok(TagStatus::Any),
        Some("TAGGED") => Ok(TagStatus::Tagged),
        Some("UNTAGGED") => Ok(TagStatus::Untagged),
        Some(o) => Err(Error::parameter("tagStatus", format!("'{o}' is not one of [TAGGED, UNTAGGED, ANY]"))),
    }
}

pub(crate) fn check_batch(n: usize) -> Result<()> {
    if n == 0 || n > 100 {
        return Err(Error::bad_request(format!("a batch must name between 1 and 100 items, got {n}")));
    }
    Ok(())
}

/// Up to `limit` items after the cursor `after` that pass `visible`, read from `fetch` in
/// batches, and whether another visible one follows. Hidden items are skipped, never returned
/// as the last of a page: the cursor a client continues from (`Link`'s `last`, a `nextToken`) is
/// always an item it was shown, so paging reveals nothing about the names it may not see.
pub(crate) async fn visible_page<'a, T: Send + 'a>(
    mut after: Option<String>,
    limit: usize,
    mut fetch: impl FnMut(Option<String>, i64) -> BoxFuture<'a, Result<Vec<T>>> + Send,
    key: impl Fn(&T) -> String + Send,
    mut visible: impl FnMut(String) -> BoxFuture<'a, Result<bool>> + Send,
) -> Result<(Vec<T>, bool)> {
    if limit == 0 {
        return Ok((Vec::new(), false));
    }
    // One more than a page tells whether more follow; at least a modest batch when most are hidden.
    let batch = (limit + 1).max(100);
    let mut out = Vec::new();
    loop {
        let rows = fetch(after.take(), batch as i64).await?;
        let last_batch = rows.len() < batch;
        for row in rows {
            let k = key(&row);
            after = Some(k.clone());
            if visible(k).await? {
                out.push(row);
                if out.len() > limit {
                    out.truncate(limit);
                    return Ok((out, true));
                }
            }
        }
        if last_batch {
            return Ok((out, false));
        }
    }
}

pub(crate) fn resolve_range(r: RangeRequest, size: u64) -> Result<Range<u64>> {
    let range = match r {
        RangeRequest::From { first, last } => {
            let end = last.map_or(size, |l| l.saturating_add(1).min(size));
            if first >= size || last.is_some_and(|l| l < first) {
                return Err(Error::invalid(
                    InvalidKind::Range { size },
                    format!("requested range is not satisfiable for a blob of {size} bytes"),
                ));
            }
            first..end
        }
        RangeRequest::Suffix(n) => {
            if n == 0 || size == 0 {
                return Err(Error::invalid(
                    InvalidKind::Range { size },
                    format!("requested range is not satisfiable for a blob of {size} bytes"),
                ));
            }
            size.saturating_sub(n)..size
        }
    };
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let f = |first, last| RangeRequest::From { first, last };
        assert_eq!(resolve_range(f(0, Some(9)), 100).unwrap(), 0..10);
        assert_eq!(resolve_range(f(90, None), 100).unwrap(), 90..100);
        assert_eq!(resolve_range(f(90, Some(1000)), 100).unwrap(), 90..100);
        assert_eq!(resolve_range(RangeRequest::Suffix(10), 100).unwrap(), 90..100);
        assert_eq!(resolve_range(RangeRequest::Suffix(1000), 100).unwrap(), 0..100);
        assert!(resolve_range(f(100, None), 100).is_err());
        assert!(resolve_range(f(5, Some(4)), 100).is_err());
        assert!(resolve_range(RangeRequest::Suffix(0), 100).is_err());
    }
}

/// What a readiness check found.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// Why the database is not usable, if it is not.
    pub database: Option<String>,
    pub storage: Option<String>,
    /// SIGTERM arrived: the node finishes what it has and takes nothing new.
    pub draining: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.database.is_none() && self.storage.is_none() && !self.draining
    }
}

// ---- replication ----

/// What a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Another Berth, or ECR itself: AWS keys, ECR's authorization token, repositories created
    /// through the destination's `REPLICATION` creation templates.
    Ecr,
    /// Any OCI registry (Distribution, Harbor, Zot): a user name and password, if any.
    Oci,
}

/// A replication destination, as `[[peers]]` in the configuration file describes it. Its
/// credentials stay in their files and are read when they are needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub region: String,
    pub registry_id: String,
    pub url: String,
    pub kind: PeerKind,
    /// AWS shared-credentials file (`[default]` profile), for `Ecr` peers.
    pub credentials_file: Option<std::path::PathBuf>,
    /// Files holding the user name and the password, for `Oci` peers.
    pub username_file: Option<std::path::PathBuf>,
    pub password_file: Option<std::path::PathBuf>,
}

pub(crate) fn valid_region(r: &str) -> bool {
    (2..=25).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(crate) fn valid_registry_id(r: &str) -> bool {
    r.len() == 12 && r.bytes().all(|b| b.is_ascii_digit())
}

impl Peer {
    /// `region/registry_id`: how jobs and statuses name the destination.
    pub fn key(&self) -> String {
        format!("{}/{}", self.region, self.registry_id)
    }

    /// The rules a peer's description must follow, worded for the configuration file.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !valid_region(&self.region) {
            return Err(format!("region {:?}: 2 to 25 lowercase letters, digits and '-'", self.region));
        }
        if !valid_registry_id(&self.registry_id) {
            return Err(format!("registry_id {:?}: 12 digits", self.registry_id));
        }
        berth_remote::Registry::new(&self.url, berth_remote::Credentials::Anonymous)
            .map_err(|e| format!("url {:?}: {e}", self.url))?;
        let readable = |what: &str, p: &Option<std::path::PathBuf>| match p {
            Some(p) if !p.is_file() => Err(format!("{what} {} does not exist", p.display())),
            _ => Ok(()),
        };
        match self.kind {
            PeerKind::Ecr => {
                if self.username_file.is_some() || self.password_file.is_some() {
                    return Err("username_file and password_file are for kind = \"oci\"; a Berth or ECR peer \
                                takes credentials_file"
                        .into());
                }
                readable("credentials_file", &self.credentials_file)
            }
            PeerKind::Oci => {
                if self.credentials_file.is_some() {
                    return Err("credentials_file is for Berth and ECR peers; kind = \"oci\" takes username_file \
                                and password_file"
                        .into());
                }
                if self.username_file.is_some() != self.password_file.is_some() {
                    return Err("give both username_file and password_file, or neither".into());
                }
                readable("username_file", &self.username_file)?;
                readable("password_file", &self.password_file)
            }
        }
    }

    /// The credentials, read from their files now.
    pub(crate) fn credentials(&self) -> std::result::Result<berth_remote::Credentials, String> {
        use berth_remote::creds::{read_secret_file, read_shared_credentials};
        Ok(match (self.kind, &self.credentials_file, &self.username_file, &self.password_file) {
            (PeerKind::Ecr, Some(f), _, _) => {
                berth_remote::Credentials::Ecr { region: self.region.clone(), keys: read_shared_credentials(f)? }
            }
            (PeerKind::Oci, _, Some(u), Some(p)) => {
                berth_remote::Credentials::Basic { username: read_secret_file(u)?, password: read_secret_file(p)? }
            }
            _ => berth_remote::Credentials::Anonymous,
        })
    }
}

/// What one copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub manifests_sent: u64,
    pub blobs_sent: u64,
    pub blobs_present: u64,
    pub blobs_mounted: u64,
    pub bytes_sent: u64,
}

// ---- pull-through cache ----

/// A rule's fields besides its prefix (stored as this JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleBody {
    /// The upstream's base URL (`https://host[:port]`; `http://` on loopback only).
    pub upstream_registry_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_role_arn: Option<String>,
    /// The upstream repository prefix the local prefix stands for (unset or `ROOT`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_repository_prefix: Option<String>,
}

impl RuleBody {
    /// What the local prefix stands for upstream (`ROOT`: the upstream's top).
    pub fn upstream_prefix(&self) -> &str {
        self.upstream_repository_prefix.as_deref().unwrap_or("ROOT")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub prefix: String,
    pub body: RuleBody,
    pub created_at: i64,
    pub updated_at: i64,
}
