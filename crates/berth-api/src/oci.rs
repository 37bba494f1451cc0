//! `/v2/` — the OCI distribution API.
//!
//! Repository names contain slashes, so one catch-all route takes every `/v2/<name>/...` path and
//! [`parse_path`] splits it from the right: the last segment is a digest, tag or upload id (none
//! of which contain `/`), and the segment(s) before it say which resource it is.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use berth_core::RepoName;
use berth_core::media;
use berth_service::error::{Invalid, InvalidKind, NotFound};
use berth_service::{BodyStream, Caller, Error, RangeRequest, parse_digest, parse_repo};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::auth::AuditDetail;
use crate::error::{ApiError, error_response};
use crate::request::{OciRequest, Query, Resource};
use crate::state::AppState;

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/_catalog", get(catalog))
        .route("/v2/{*rest}", any(dispatch))
        .fallback(not_found)
}

async fn base() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], "{}")
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
}

fn unsupported() -> Response {
    error_response(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "method not supported on this endpoint")
}

/// The request as the middleware parsed it, and the caller it authenticated.
fn parsed(req: &mut Request) -> Result<(OciRequest, Caller)> {
    // Every `/v2/` route runs behind that middleware, which always leaves both here.
    let missing = || ApiError(Error::Internal("a /v2/ request reached its handler without being parsed".into()));
    let parsed = req.extensions_mut().remove::<OciRequest>().ok_or_else(missing)?;
    let caller = req.extensions_mut().remove::<Caller>().ok_or_else(missing)?;
    Ok((parsed, caller))
}

async fn dispatch(State(st): State<AppState>, mut req: Request) -> Response {
    let (parsed, caller) = match parsed(&mut req) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let c = &caller;
    let Some(target) = parsed.repo() else {
        return not_found().await;
    };
    // Handlers get the repository's key (the name in the registry the host names).
    let name = target.key.as_str();
    let q = &parsed.query;
    let method = req.method().clone();
    let r = match &target.resource {
        Resource::Blob(digest) => match method {
            Method::GET | Method::HEAD => get_blob(&st, c, name, digest, &method, req.headers()).await,
            Method::DELETE => delete_blob(&st, c, name, digest).await,
            _ => return unsupported(),
        },
        Resource::Uploads => match method {
            Method::POST => start_upload(&st, c, name, q, req).await,
            _ => return unsupported(),
        },
        Resource::Upload(id) => match method {
            Method::PATCH => patch_upload(&st, c, name, id, req).await,
            Method::PUT => put_upload(&st, c, name, id, q, req).await,
            Method::GET => upload_status(&st, c, name, id).await,
            Method::DELETE => cancel_upload(&st, c, name, id).await,
            _ => return unsupported(),
        },
        Resource::Manifest(reference) => match method {
            Method::GET | Method::HEAD => get_manifest(&st, c, name, reference, &method, req.headers()).await,
            Method::PUT => put_manifest(&st, c, name, reference, q, req).await,
            Method::DELETE => delete_manifest(&st, c, name, reference).await,
            _ => return unsupported(),
        },
        Resource::Tags => match method {
            Method::GET => list_tags(&st, c, name, q).await,
            _ => return unsupported(),
        },
        Resource::Referrers(digest) => match method {
            Method::GET => referrers(&st, c, name, digest, q).await,
            _ => return unsupported(),
        },
    };
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /berth/layers/<name>/<digest>?expires=..&signature=..`: a layer by signed URL.
pub async fn download(State(st): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let q = match Query::parse(req.uri().query(), &[]) {
        Ok(q) => q,
        Err(e) => return ApiError(e).into_response(),
    };
    let Some((name, digest)) = path.strip_prefix("/berth/layers/").and_then(|r| r.rsplit_once('/')) else {
        return error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint");
    };
    let (Some(expires), Some(sig)) = (q.get("expires"), q.get("signature")) else {
        return error_response(StatusCode::FORBIDDEN, "DENIED", "the URL must carry expires and signature");
    };
    let method = req.method().clone();
    let blob = Blob::Signed { expires, signature: sig };
    serve_blob(&st, blob, name, digest, &method, req.headers()).await.unwrap_or_else(|e| match e.0 {
        // A bad or expired signature: the URL itself is refused.
        Error::Unauthenticated { reason, .. } => error_response(StatusCode::FORBIDDEN, "DENIED", &reason),
        e => ApiError(e).into_response(),
    })
}

fn repo(name: &str) -> Result<RepoName> {
    Ok(parse_repo(name)?)
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header values built from validated names and digests")
}

fn body_stream(req: Request) -> BodyStream {
    req.into_body().into_data_stream().map(|r| r.map_err(std::io::Error::other)).boxed()
}

// ---- blobs ----

/// `bytes=first-last`, `bytes=first-` or `bytes=-suffix`; anything else is malformed.
fn parse_range(v: &str) -> Option<RangeRequest> {
    let spec = v.trim().strip_prefix("bytes=")?.trim();
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        return b.parse().ok().map(RangeRequest::Suffix);
    }
    let first = a.parse().ok()?;
    let last = if b.is_empty() { None } else { Some(b.parse().ok()?) };
    Some(RangeRequest::From { first, last })
}

/// How a blob GET is authorized: by the caller, or by a URL GetDownloadUrlForLayer signed.
enum Blob<'a> {
    Caller(&'a Caller),
    Signed { expires: &'a str, signature: &'a str },
}

async fn get_blob(
    st: &AppState,
    caller: &Caller,
    name: &str,
    digest: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response> {
    serve_blob(st, Blob::Caller(caller), name, digest, method, headers).await
}

async fn serve_blob(
    st: &AppState,
    how: Blob<'_>,
    name: &str,
    digest: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response> {
    let repo = repo(name)?;
    let digest = parse_digest(digest)?;
    let content = st.registry.content();
    // A malformed range is answered 416 with the size, as an unsatisfiable one: the suffix
    // `bytes=-0`, which no blob satisfies, stands for it.
    let range =
        headers.get(header::RANGE).map(|v| v.to_str().ok().and_then(parse_range).unwrap_or(RangeRequest::Suffix(0)));
    if *method == Method::HEAD {
        let size = match how {
            Blob::Caller(c) => content.stat_blob(c, &repo, &digest).await?,
            Blob::Signed { expires, signature } => {
                content.download(&repo, &digest, expires, signature, None).await?.size
            }
        };
        if range == Some(RangeRequest::Suffix(0)) {
            return Err(Error::invalid(
                InvalidKind::Range { size },
                format!("requested range is not satisfiable for a blob of {size} bytes"),
            )
            .into());
        }
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_LENGTH, hv(&size.to_string())),
                (header::CONTENT_TYPE, hv("application/octet-stream")),
                (header::ACCEPT_RANGES, hv("bytes")),
                (header::HeaderName::from_static("docker-content-digest"), hv(&digest.to_string())),
            ],
        )
            .into_response());
    }
    let read = match how {
        Blob::Caller(c) => content.get_blob(c, &repo, &digest, range).await?,
        Blob::Signed { expires, signature } => content.download(&repo, &digest, expires, signature, range).await?,
    };
    let mut res = Response::new(Body::from_stream(read.body.stream));
    let h = res.headers_mut();
    h.insert(header::CONTENT_LENGTH, hv(&read.body.len.to_string()));
    h.insert(header::CONTENT_TYPE, hv("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, hv("bytes"));
    h.insert("docker-content-digest", hv(&read.digest.to_string()));
    if let Some(r) = read.range {
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        res.headers_mut().insert(header::CONTENT_RANGE, hv(&format!("bytes {}-{}/{}", r.start, r.end - 1, read.size)));
    }
    Ok(res)
}

async fn delete_blob(st: &AppState, caller: &Caller, name: &str, digest: &str) -> Result<Response> {
    let repo = repo(name)?;
    let digest = parse_digest(digest)?;
    st.registry.content().delete_blob(caller, &repo, &digest).await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, hv("0"))]).into_response())
}

// ---- uploads ----

/// The name clients use for a repository key (Locations and bodies never show the account).
fn client_name(key: &str) -> &str {
    berth_core::split_repo_key(key).1
}

fn blob_created(name: &str, digest: &str) -> Response {
    let name = client_name(name);
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, hv(&format!("/v2/{name}/blobs/{digest}"))),
            (header::HeaderName::from_static("docker-content-digest"), hv(digest)),
            (header::CONTENT_LENGTH, hv("0")),
        ],
    )
        .into_response()
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{}/blobs/uploads/{id}", client_name(name))
}

/// The `Range` of an upload holding `offset` bytes (`0-0` when empty, as Distribution answers).
fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn upload_headers(status: StatusCode, name: &str, id: &str, offset: u64) -> Response {
    (
        status,
        [
            (header::LOCATION, hv(&upload_location(name, id))),
            (header::RANGE, hv(&upload_range(offset))),
            (header::HeaderName::from_static("docker-upload-uuid"), hv(id)),
            (header::CONTENT_LENGTH, hv("0")),
        ],
    )
        .into_response()
}

/// A chunk that does not continue the upload gets 416 with where the upload stands.
fn upload_result(r: Result<Response, Error>, name: &str, id: &str) -> Result<Response> {
    match r {
        Err(e @ Error::Invalid(Invalid { kind: InvalidKind::Chunk { current, .. }, .. })) => {
            let mut res = ApiError(e).into_response();
            res.headers_mut().insert(header::LOCATION, hv(&upload_location(name, id)));
            res.headers_mut().insert(header::RANGE, hv(&upload_range(current)));
            Ok(res)
        }
        r => r.map_err(ApiError),
    }
}

async fn start_upload(st: &AppState, caller: &Caller, name: &str, q: &Query, req: Request) -> Result<Response> {
    let repo = repo(name)?;
    let content = st.registry.content();
    let mut detail = None;
    if let Some(mount) = q.get("mount") {
        let digest = parse_digest(mount)?;
        // A bad `from` only means the blob cannot be mounted from there.
        let from_raw = q.get("from");
        let from = from_raw.and_then(|f| RepoName::parse(f).ok()).map(|f| f.in_account(repo.account()));
        let m = content.mount_blob(caller, &repo, &digest, from.as_ref()).await?;
        if m.size.is_some() {
            let mut res = blob_created(name, &digest.to_string());
            if let Some(f) = from_raw {
                res.extensions_mut().insert(AuditDetail(format!("mount from {f}")));
            }
            return Ok(res);
        }
        detail = from_raw.map(|f| {
            if m.source_readable {
                format!("mount from {f}")
            } else {
                format!("mount from {f} refused (no pull permission there): uploading instead")
            }
        });
    } else if let Some(d) = q.get("digest") {
        let digest = parse_digest(d)?;
        content.push_blob(caller, &repo, &digest, body_stream(req)).await?;
        return Ok(blob_created(name, &digest.to_string()));
    }
    let up = content.start_upload(caller, &repo).await?;
    let mut res = upload_headers(StatusCode::ACCEPTED, name, &up.id, up.offset);
    if let Some(d) = detail {
        res.extensions_mut().insert(AuditDetail(d));
    }
    Ok(res)
}

/// `Content-Range: <start>-<end>` (also tolerated: a `bytes ` prefix and a `/<total>` suffix).
fn parse_content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, Error> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || Error::invalid(InvalidKind::Upload, "Content-Range must be <start>-<end>".into());
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (start, end): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if end < start {
        return Err(bad());
    }
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len != end - start + 1
    {
        return Err(Error::invalid(
            InvalidKind::Upload,
            format!("Content-Range {start}-{end} is {} bytes but Content-Length is {len}", end - start + 1),
        ));
    }
    Ok(Some((start, end)))
}

async fn patch_upload(st: &AppState, caller: &Caller, name: &str, id: &str, req: Request) -> Result<Response> {
    let repo = repo(name)?;
    let r = async {
        let range = parse_content_range(req.headers())?;
        let body = body_stream(req);
        let status = st.registry.content().append_upload(caller, &repo, id, range.map(|r| r.0), body).await?;
        Ok(upload_headers(StatusCode::ACCEPTED, name, &status.id, status.offset))
    }
    .await;
    upload_result(r, name, id)
}

async fn put_upload(st: &AppState, caller: &Caller, name: &str, id: &str, q: &Query, req: Request) -> Result<Response> {
    let repo = repo(name)?;
    let r = async {
        let digest = q.get("digest").ok_or_else(|| {
            Error::invalid(InvalidKind::Digest, "the digest query parameter is required to complete an upload".into())
        })?;
        let digest = parse_digest(digest)?;
        let range = parse_content_range(req.headers())?;
        let body = Some(body_stream(req));
        st.registry.content().finish_upload(caller, &repo, id, &digest, range.map(|r| r.0), body).await?;
        Ok(blob_created(name, &digest.to_string()))
    }
    .await;
    upload_result(r, name, id)
}

async fn upload_status(st: &AppState, caller: &Caller, name: &str, id: &str) -> Result<Response> {
    let repo = repo(name)?;
    let s = st.registry.content().upload_status(caller, &repo, id).await?;
    Ok(upload_headers(StatusCode::NO_CONTENT, name, &s.id, s.offset))
}

async fn cancel_upload(st: &AppState, caller: &Caller, name: &str, id: &str) -> Result<Response> {
    let repo = repo(name)?;
    st.registry.content().cancel_upload(caller, &repo, id).await?;
    Ok((StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, hv("0"))]).into_response())
}

// ---- manifests ----

/// Whether the client's Accept header rules out `media_type`. Only an Accept that names some
/// manifest type counts; `*/*`, a missing header or unrelated types accept anything.
fn refuses(headers: &HeaderMap, media_type: &str) -> bool {
    let mut named_manifest_type = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',').map(media::essence) {
            if t == media_type || t == "*/*" {
                return false;
            }
            named_manifest_type |= media::is_manifest_type(t);
        }
    }
    named_manifest_type
}

async fn get_manifest(
    st: &AppState,
    caller: &Caller,
    name: &str,
    reference: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response> {
    let repo = repo(name)?;
    // A reference that cannot name a manifest names none: not found, as Distribution answers
    // (a PUT to it is still refused as invalid).
    if berth_core::Reference::parse(reference).is_err() {
        let why = Some("not a valid tag or digest".to_string());
        return Err(Error::from(NotFound::Manifest { reference: reference.to_string(), why }).into());
    }
    let content = st.registry.content();
    let m = if *method == Method::GET {
        content.pull_manifest(caller, &repo, reference, |t| !refuses(headers, t)).await?
    } else {
        let m = content.get_manifest(caller, &repo, reference).await?;
        if refuses(headers, &m.media_type) {
            let why = Some(format!("it is a {}, which the Accept header does not include", m.media_type));
            return Err(Error::from(NotFound::Manifest { reference: reference.to_string(), why }).into());
        }
        m
    };
    let mut res = Response::new(if *method == Method::HEAD { Body::empty() } else { Body::from(m.content.clone()) });
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, hv(&m.media_type));
    h.insert(header::CONTENT_LENGTH, hv(&m.content.len().to_string()));
    h.insert("docker-content-digest", hv(&m.digest));
    h.insert(header::ETAG, hv(&format!("\"{}\"", m.digest)));
    Ok(res)
}

/// Most `tag` parameters one manifest PUT may set.
const MAX_TAG_PARAMS: usize = 100;

async fn put_manifest(
    st: &AppState,
    caller: &Caller,
    name: &str,
    reference: &str,
    q: &Query,
    req: Request,
) -> Result<Response> {
    let repo = repo(name)?;
    // `?tag=a&tag=b` on a PUT by digest sets those tags too (how clients tag a manifest whose
    // digest is not sha256, which a PUT by tag cannot name).
    let tags: Vec<&str> = q.all("tag").collect();
    if !tags.is_empty() && !reference.contains(':') {
        return Err(Error::invalid(
            InvalidKind::Tag,
            "tag query parameters apply to a PUT by digest, not by tag".into(),
        )
        .into());
    }
    if tags.len() > MAX_TAG_PARAMS {
        return Err(Error::bad_request(format!("at most {MAX_TAG_PARAMS} tag parameters per PUT")).into());
    }
    let limit = berth_core::manifest::MAX_MANIFEST_SIZE;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = read_limited(req.into_body(), limit).await?;
    let put =
        st.registry.content().put_manifest(caller, &repo, reference, &tags, content_type.as_deref(), &body).await?;
    let digest = put.digest.to_string();
    let mut res = (
        StatusCode::CREATED,
        [
            (header::LOCATION, hv(&format!("/v2/{}/manifests/{digest}", client_name(name)))),
            (header::HeaderName::from_static("docker-content-digest"), hv(&digest)),
            (header::CONTENT_LENGTH, hv("0")),
        ],
    )
        .into_response();
    if let Some(s) = put.subject {
        res.headers_mut().insert("oci-subject", hv(&s.to_string()));
    }
    for t in &tags {
        res.headers_mut().append("oci-tag", hv(t));
    }
    Ok(res)
}

/// Reads at most `limit` bytes. A somewhat larger body is read to its end (and dropped) so the
/// client, still sending, gets the 413 instead of a broken connection.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, Error> {
    const DRAIN: usize = 64 * 1024 * 1024;
    let mut out = Vec::new();
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| Error::invalid(InvalidKind::Manifest, format!("reading the request body: {e}")))?
    {
        seen += chunk.len();
        if seen > DRAIN {
            break;
        }
        if seen <= limit {
            out.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(Error::invalid(
            InvalidKind::ManifestTooLarge { size: seen },
            format!("manifest is {seen} bytes; the limit is {}", berth_core::manifest::MAX_MANIFEST_SIZE),
        ));
    }
    Ok(out)
}

async fn delete_manifest(st: &AppState, caller: &Caller, name: &str, reference: &str) -> Result<Response> {
    let repo = repo(name)?;
    st.registry.content().delete_manifest(caller, &repo, reference).await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, hv("0"))]).into_response())
}

// ---- discovery ----

fn page_params(q: &Query) -> Result<(Option<usize>, Option<&str>), Error> {
    let n = match q.get("n") {
        None => None,
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            Error::invalid(InvalidKind::Pagination, format!("n must be a non-negative integer, not {s:?}"))
        })?),
    };
    Ok((n, q.get("last")))
}

fn with_next_link(mut res: Response, path: &str, n: usize, last: Option<&String>) -> Response {
    if let Some(last) = last {
        let link = format!("<{path}?n={n}&last={}>; rel=\"next\"", encode_query(last));
        if let Ok(v) = HeaderValue::from_str(&link) {
            res.headers_mut().insert(header::LINK, v);
        }
    }
    res
}

/// Percent-encodes everything but unreserved characters.
fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn list_tags(st: &AppState, caller: &Caller, name: &str, q: &Query) -> Result<Response> {
    let repo = repo(name)?;
    let (n, last) = page_params(q)?;
    let page = st.registry.content().list_tags(caller, &repo, last, n).await?;
    let body = json!({ "name": repo.name(), "tags": page.items });
    let res = ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    let next = if page.more { page.items.last() } else { None };
    Ok(with_next_link(res, &format!("/v2/{}/tags/list", client_name(name)), page.items.len(), next))
}

async fn catalog(State(st): State<AppState>, mut req: Request) -> Response {
    let r: Result<Response> = async {
        let (parsed, caller) = parsed(&mut req)?;
        let (n, last) = page_params(&parsed.query)?;
        let page = st.registry.content().catalog(&caller, &parsed.registry, last, n).await?;
        let names: Vec<&str> = page.items.iter().map(|k| client_name(k)).collect();
        let body = json!({ "repositories": names });
        let res = ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        let next = if page.more { names.last().map(|n| n.to_string()) } else { None };
        Ok(with_next_link(res, "/v2/_catalog", page.items.len(), next.as_ref()))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn referrers(st: &AppState, caller: &Caller, name: &str, digest: &str, q: &Query) -> Result<Response> {
    let repo = repo(name)?;
    let digest = parse_digest(digest)?;
    let filter = q.get("artifactType").filter(|s| !s.is_empty());
    let index = st.registry.content().referrers(caller, &repo, &digest, filter).await?;
    let mut res = ([(header::CONTENT_TYPE, media::OCI_INDEX)], index.to_string()).into_response();
    if filter.is_some() {
        res.headers_mut().insert("oci-filters-applied", hv("artifactType"));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9"), Some(RangeRequest::From { first: 0, last: Some(9) }));
        assert_eq!(parse_range("bytes=5-"), Some(RangeRequest::From { first: 5, last: None }));
        assert_eq!(parse_range("bytes=-5"), Some(RangeRequest::Suffix(5)));
        for bad in ["", "bytes=", "bytes=a-b", "items=0-1", "bytes=0-1,3-4", "bytes=--1"] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }
}
