//! A `/v2/` request, parsed once. The authorization middleware parses the path and the query into
//! an [`OciRequest`], decides on it, and hands the same value to the handler through the request's
//! extensions: what is allowed and what is done are read from one parse, never from two readings
//! of the raw URI.
//!
//! Repository names contain slashes, so a path is split from the right: the last segment is a
//! digest, tag or upload id (none of which contain `/`), and the segment(s) before it say which
//! resource it is.

use axum::http::Method;
use berth_core::RepoName;
use berth_service::Error;

/// What a `/v2/<name>/...` path addresses (the part after the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resource {
    Blob(String),
    /// `blobs/uploads/` (POST starts an upload).
    Uploads,
    Upload(String),
    Manifest(String),
    Tags,
    Referrers(String),
}

/// A path split into repository name and resource, before the name is checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawTarget<'a> {
    pub name: &'a str,
    pub resource: Resource,
}

/// Splits `rest` (the path after `/v2/`) from the right; `None` when no resource matches.
pub(crate) fn parse_path(rest: &str) -> Option<RawTarget<'_>> {
    let (prefix, last) = rest.rsplit_once('/')?;
    if let Some(name) = prefix.strip_suffix("/blobs/uploads") {
        let resource = if last.is_empty() { Resource::Uploads } else { Resource::Upload(last.to_string()) };
        return Some(RawTarget { name, resource });
    }
    let (name, kind) = prefix.rsplit_once('/')?;
    let resource = match (kind, last) {
        ("blobs", _) => Resource::Blob(last.to_string()),
        ("manifests", _) => Resource::Manifest(last.to_string()),
        ("referrers", _) => Resource::Referrers(last.to_string()),
        ("tags", "list") => Resource::Tags,
        _ => return None,
    };
    Some(RawTarget { name, resource })
}

/// The decoded query parameters. A parameter given twice is refused (so no two readers can pick
/// different ones), except the few the protocol repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>, repeatable: &[&str]) -> Result<Query, Error> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if pairs.iter().any(|(seen, _)| *seen == k) && !repeatable.contains(&k.as_ref()) {
                return Err(Error::bad_request(format!(
                    "the query parameter {k:?} is given more than once; give it once"
                )));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Query(pairs))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A repository request: the name as the client gave it, the key it has in the registry the
/// host names, and the resource.
#[derive(Debug, Clone)]
pub(crate) struct RepoRequest {
    pub name: RepoName,
    pub key: RepoName,
    pub resource: Resource,
}

#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    /// `/v2/` itself.
    Base,
    Catalog,
    Repo(RepoRequest),
    /// A path no route serves (answered 404 by the router).
    Unknown,
}

/// A `/v2/` request as parsed once, before anything else reads it: what the handler acts on.
#[derive(Debug, Clone)]
pub(crate) struct OciRequest {
    pub endpoint: Endpoint,
    pub query: Query,
    /// The registry (account id) the host names.
    pub registry: String,
}

impl OciRequest {
    /// Parses a `/v2/` path and query. `key` makes the key of a client's name in this registry.
    pub fn parse(
        method: &Method,
        path: &str,
        query: Option<&str>,
        registry: String,
        key: impl Fn(&RepoName) -> RepoName,
    ) -> Result<OciRequest, Error> {
        let rest = path.strip_prefix("/v2/").or_else(|| (path == "/v2").then_some(""));
        let endpoint = match rest {
            Some("") => Endpoint::Base,
            Some("_catalog") => Endpoint::Catalog,
            Some(rest) => match parse_path(rest) {
                Some(t) => {
                    // A bad name is the first thing to report, whatever the method or caller.
                    let name = RepoName::parse(t.name)?;
                    Endpoint::Repo(RepoRequest { key: key(&name), name, resource: t.resource })
                }
                None => Endpoint::Unknown,
            },
            None => Endpoint::Unknown,
        };
        // `tag` is repeated on a manifest PUT by digest (one per tag to set).
        let repeatable: &[&str] = match &endpoint {
            Endpoint::Repo(RepoRequest { resource: Resource::Manifest(_), .. }) if method == Method::PUT => &["tag"],
            _ => &[],
        };
        let query = Query::parse(query, repeatable)?;
        Ok(OciRequest { endpoint, query, registry })
    }

    pub fn repo(&self) -> Option<&RepoRequest> {
        match &self.endpoint {
            Endpoint::Repo(r) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_from_the_right() {
        let t = |name, resource| Some(RawTarget { name, resource });
        assert_eq!(parse_path("a/b/blobs/sha256:x"), t("a/b", Resource::Blob("sha256:x".into())));
        assert_eq!(parse_path("a/blobs/uploads/"), t("a", Resource::Uploads));
        assert_eq!(parse_path("a/blobs/uploads/u1"), t("a", Resource::Upload("u1".into())));
        assert_eq!(parse_path("blobs/manifests/latest"), t("blobs", Resource::Manifest("latest".into())));
        assert_eq!(parse_path("a/manifests/x/tags/list"), t("a/manifests/x", Resource::Tags));
        assert_eq!(parse_path("a/referrers/sha256:x"), t("a", Resource::Referrers("sha256:x".into())));
        assert_eq!(parse_path("a/tags/other"), None);
        assert_eq!(parse_path("a"), None);
    }

    #[test]
    fn queries_are_decoded_once_and_repeats_refused() {
        let q = Query::parse(Some("%6Dount=sha256%3Aab&fr%6Fm=private%2Fapp"), &[]).unwrap();
        assert_eq!(q.get("mount"), Some("sha256:ab"));
        assert_eq!(q.get("from"), Some("private/app"));
        assert!(Query::parse(Some("mount=x&from=a&from=b"), &[]).is_err());
        assert!(Query::parse(Some("mount=x&%66rom=a&from=b"), &[]).is_err(), "a repeat in another spelling");
        let tags = Query::parse(Some("tag=a&tag=b"), &["tag"]).unwrap();
        assert_eq!(tags.all("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert!(Query::parse(None, &[]).unwrap().get("x").is_none());
    }

    #[test]
    fn names_are_checked_before_anything_else() {
        let p = |m: Method, path: &str, q: Option<&str>| {
            OciRequest::parse(&m, path, q, "000000000000".into(), |n: &RepoName| n.clone())
        };
        assert!(matches!(
            p(Method::GET, "/v2/000000000000:fresh/tags/list", None),
            Err(Error::Invalid(berth_service::error::Invalid { kind: berth_service::error::InvalidKind::Name, .. }))
        ));
        assert!(matches!(p(Method::GET, "/v2/", None).unwrap().endpoint, Endpoint::Base));
        assert!(matches!(p(Method::GET, "/v2/_catalog", Some("n=1")).unwrap().endpoint, Endpoint::Catalog));
        assert!(matches!(p(Method::GET, "/v2/a/b/c", None).unwrap().endpoint, Endpoint::Unknown));
        assert!(p(Method::PUT, "/v2/a/manifests/sha256:x", Some("tag=1&tag=2")).is_ok());
        assert!(p(Method::GET, "/v2/a/manifests/sha256:x", Some("tag=1&tag=2")).is_err());
    }
}
