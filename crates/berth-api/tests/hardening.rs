//! Regression tests for the holes found by attacking `main` (issue 13): each sends the request
//! that showed the hole, over HTTP, and checks that it is closed.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ACCOUNT: &str = "000000000000";

fn basic(pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("AWS:{pw}")))
}

/// A user who may do anything in `team/a` only (and log in).
fn team_a_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": format!("arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team/a")},
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}]})
    .to_string()
}

async fn secure() -> Server {
    Server::start_secure(Db::Sqlite, berth_api::Challenge::Basic).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_reads_the_same_decoded_source_it_was_allowed() {
    let s = secure().await;
    for r in ["private/app", "team/a"] {
        s.ecr_ok("CreateRepository", json!({"repositoryName": r})).await;
    }
    let root_pw = s.login_as(&Creds::root()).await;
    let secret_layer = b"private/app's layer";
    let d = sha256(secret_layer);
    let r = s
        .req(Method::POST, &format!("/v2/private/app/blobs/uploads/?digest={d}"))
        .basic_auth("AWS", Some(&root_pw))
        .body(secret_layer.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let user = s.iam_user("pusher", &team_a_policy()).await;
    let auth = basic(&s.login_as(&user).await);
    let get_in_team_a = || async {
        s.req(Method::GET, &format!("/v2/team/a/blobs/{d}"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(get_in_team_a().await, StatusCode::NOT_FOUND);
    // The three requests that mounted private/app's layer into team/a, sent unnormalised.
    let attempts = [
        (format!("mount={d}&from=team/a&from=private/app"), 400),
        (format!("%6Dount={d}&from=private/app"), 202),
        (format!("mount={d}&fr%6Fm=private/app"), 202),
    ];
    for (query, want) in &attempts {
        let head = format!("POST /v2/team/a/blobs/uploads/?{query} HTTP/1.1\r\nAuthorization: {auth}");
        let (status, text) = s.raw(&head, b"").await;
        assert_eq!(status, *want, "?{query}: {text}");
        assert_eq!(get_in_team_a().await, StatusCode::NOT_FOUND, "?{query} exposed private/app's layer");
    }
    // The refusal is audited with the source it named.
    s.registry.flush_audit().await;
    let rows = s
        .meta
        .audit_events(&berth_meta::AuditFilter {
            event_name: Some("InitiateLayerUpload".into()),
            limit: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        rows.iter().any(|r| r.detail.as_deref().is_some_and(|d| d.contains("mount from private/app refused"))),
        "{rows:?}"
    );
    // The same decoding serves a caller who may read the source: root mounts with the encoded
    // spelling, and the layer is then in team/a.
    let head = format!(
        "POST /v2/team/a/blobs/uploads/?%6Dount={d}&fr%6Fm=private%2Fapp HTTP/1.1\r\nAuthorization: {}",
        basic(&root_pw)
    );
    let (status, text) = s.raw(&head, b"").await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(get_in_team_a().await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_query_parameters_are_refused() {
    let s = Server::start(Db::Sqlite).await.unwrap();
    s.push_image("rep", "v1", "x").await;
    let r = s.req(Method::GET, "/v2/rep/tags/list?n=1&n=5").send().await.unwrap();
    assert_eq!(error_code(r).await.0, StatusCode::BAD_REQUEST);
    let r = s.req(Method::GET, "/v2/_catalog?last=a&last=b").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s.req(Method::GET, "/v2/rep/tags/list?n=1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_never_names_a_hidden_repository() {
    let s = secure().await;
    for r in ["aaa/hidden", "private/app", "team/a", "team/b", "zzz/hidden"] {
        s.ecr_ok("CreateRepository", json!({"repositoryName": r})).await;
    }
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ecr:DescribeRepositories", "ecr:BatchGetImage"],
         "Resource": format!("arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team/*")},
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}]})
    .to_string();
    let user = s.iam_user("viewer", &policy).await;
    let pw = s.login_as(&user).await;
    // The catalog, a name at a time.
    let mut seen = Vec::new();
    let mut next = "/v2/_catalog?n=1".to_string();
    for _ in 0..10 {
        let r = s.req(Method::GET, &next).basic_auth("AWS", Some(&pw)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let link = header(&r, "link");
        assert!(!link.contains("private") && !link.contains("hidden"), "the cursor names a hidden repository: {link}");
        let v: Value = r.json().await.unwrap();
        seen.extend(v["repositories"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()));
        match link.strip_prefix('<').and_then(|l| l.split_once('>')) {
            Some((url, _)) => next = url.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["team/a", "team/b"]);
    // DescribeRepositories, one at a time: the token is a name the caller was shown.
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let mut body = json!({"maxResults": 1});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let (st, v) = s.ecr_as("DescribeRepositories", body, &user).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        names.extend(
            v["repositories"].as_array().unwrap().iter().map(|r| r["repositoryName"].as_str().unwrap().to_string()),
        );
        token = v["nextToken"].as_str().map(str::to_string);
        let Some(t) = &token else { break };
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).unwrap_or_default();
        let decoded = String::from_utf8_lossy(&decoded);
        assert!(!decoded.contains("private") && !decoded.contains("hidden"), "nextToken names {decoded}");
    }
    assert_eq!(names, ["team/a", "team/b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecr_target_must_be_signed() {
    let s = secure().await;
    s.ecr_ok("CreateRepository", json!({"repositoryName": "sig"})).await;
    let host = s.base.trim_start_matches("http://").to_string();
    let date = berth_core::time::format_amz_date(berth_service::tokens::now_secs());
    let body = json!({"repositoryName": "sig"}).to_string();
    let headers: Vec<(String, String)> = vec![
        ("host".into(), host),
        ("content-type".into(), "application/x-amz-json-1.1".into()),
        ("x-amz-date".into(), date),
        ("x-amz-target".into(), "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories".into()),
    ];
    let h: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let req =
        berth_crypto::sigv4::Request { method: "POST", path: "/", query: None, headers: &h, body: body.as_bytes() };
    // Signed without x-amz-target, then sent with another operation in it.
    let auth =
        berth_crypto::sigv4::sign(&req, AKID, SECRET, "us-east-1", "ecr", &["content-type", "host", "x-amz-date"])
            .unwrap();
    for target in ["DescribeRepositories", "DescribeImages"] {
        let r = s
            .http
            .post(format!("{}/", s.base))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-date", &headers[2].1)
            .header("x-amz-target", format!("AmazonEC2ContainerRegistry_V20150921.{target}"))
            .header("authorization", &auth)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["__type"], "IncompleteSignatureException", "{target}: {v}");
        assert!(v["message"].as_str().unwrap().contains("'X-Amz-Target' must be a 'SignedHeader'"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_a_colon_are_invalid() {
    let s = secure().await;
    let (t, m) = s.ecr_err("CreateRepository", json!({"repositoryName": format!("{ACCOUNT}:fresh")})).await;
    assert_eq!(t, "InvalidParameterException", "{m}");
    let v = s.ecr_ok("DescribeRepositories", json!({})).await;
    assert_eq!(v["repositories"], json!([]), "nothing was created");
    let pw = s.login_as(&Creds::root()).await;
    for path in [format!("/v2/{ACCOUNT}:fresh/tags/list"), format!("/v2/{ACCOUNT}:fresh/manifests/latest")] {
        let r = s.req(Method::GET, &path).basic_auth("AWS", Some(&pw)).send().await.unwrap();
        assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "NAME_INVALID".into()), "{path}");
    }
}

/// Sends `head` and returns what the server answers within `wait` without the body being sent.
async fn answer_without_body(s: &Server, head: &str, wait: Duration) -> Option<String> {
    let addr = s.base.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("{head}\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, c.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_bodies_are_not_read_before_the_signature_is_plausible() {
    let s = secure().await;
    let big = 30 * 1024 * 1024;
    let target = "X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.DescribeRegistry";
    // No Authorization: answered at once, the 30 MiB never read.
    let head =
        format!("POST / HTTP/1.1\r\n{target}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {big}");
    let a = answer_without_body(&s, &head, Duration::from_secs(3)).await.expect("no answer before the body");
    assert!(a.contains("MissingAuthenticationTokenException"), "{a}");
    // A well-formed Authorization naming a key that does not exist: the same.
    let date = berth_core::time::format_amz_date(berth_service::tokens::now_secs());
    let fake = format!(
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIANOSUCHKEY0000000/{}/us-east-1/ecr/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}\r\nX-Amz-Date: {date}",
        &date[..8],
        "0".repeat(64)
    );
    let a = answer_without_body(&s, &format!("{head}\r\n{fake}"), Duration::from_secs(3)).await.expect("no answer");
    assert!(a.contains("UnrecognizedClientException"), "{a}");
    // A real key, but more body than the operation takes: refused from Content-Length alone.
    let real = fake.replace("AKIANOSUCHKEY0000000", AKID);
    let a = answer_without_body(&s, &format!("{head}\r\n{real}"), Duration::from_secs(3)).await.expect("no answer");
    assert!(a.contains("at most 1048576 bytes"), "{a}");
}

fn limited(header_s: u64, idle_s: u64, body_s: u64, max: usize) -> berth_api::Options {
    berth_api::Options {
        limits: berth_api::Limits {
            header_timeout: Duration::from_secs(header_s),
            idle_timeout: Duration::from_secs(idle_s),
            body_timeout: Duration::from_secs(body_s),
            max_connections: max,
        },
        ..Default::default()
    }
}

/// Whether the server closes `c` within `wait`.
async fn closed_within(c: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_cannot_hold_the_server() {
    let s = Server::start_full(Db::Sqlite, limited(1, 8, 1, 8), true).await.unwrap();
    let addr = s.base.trim_start_matches("http://").to_string();
    // Twelve connections that send half a header, more than the server serves at once.
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        held.push(c);
    }
    // A real client still gets through once the header timeout frees their slots.
    let started = Instant::now();
    let r = reqwest::Client::new().get(format!("{}/v2/", s.base)).timeout(Duration::from_secs(8)).send().await;
    assert_eq!(r.expect("the server stayed unreachable").status(), StatusCode::OK);
    // (At the limit the quietest connection is closed to make room: no need to wait for timeouts.)
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    for c in &mut held[..8] {
        assert!(closed_within(c, Duration::from_secs(6)).await, "a half-sent header was held open");
    }
    // A keep-alive connection may sit idle longer than the header timeout and be used again...
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let get = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n";
    c.write_all(get).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    c.write_all(get).await.unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "reused after 2 s idle");
    // ...but is closed after the idle timeout.
    assert!(closed_within(&mut c, Duration::from_secs(15)).await, "an idle connection was kept forever");
    // A stalled body fails after the body timeout.
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let d = sha256(b"0123456789");
    c.write_all(
        format!("POST /v2/slow/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
            .as_bytes(),
    )
    .await
    .unwrap();
    assert!(closed_within(&mut c, Duration::from_secs(8)).await, "a stalled body was waited for forever");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_credentials() {
    let opts = berth_api::Options { metrics: berth_api::Metrics::Authenticated, ..Default::default() };
    let s = Server::start_with(Db::Sqlite, opts).await.unwrap();
    let r = s.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").starts_with("Basic"));
    let r = s.req(Method::GET, "/metrics").basic_auth(AKID, Some("wrong")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s.req(Method::GET, "/metrics").basic_auth(AKID, Some(SECRET)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("# TYPE"));
    let pw = s.login_as(&Creds::root()).await;
    let r = s.req(Method::GET, "/metrics").basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Open by default.
    let open = Server::start(Db::Sqlite).await.unwrap();
    assert_eq!(open.req(Method::GET, "/metrics").send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_key_is_sealed_and_rotation_ends_old_tokens() {
    let s = secure().await;
    let stored = s.meta.setting("token_key").await.unwrap().unwrap();
    assert!(stored.starts_with("s1:"), "stored in the clear: {stored}");
    let pw = s.login_as(&Creds::root()).await;
    assert_eq!(s.req(Method::GET, "/v2/").basic_auth("AWS", Some(&pw)).send().await.unwrap().status(), StatusCode::OK);
    // Another process rotates it (as `berth keys rotate-token-key` does); this one notices.
    let meta = berth_meta::Meta::connect(&s.db_url).await.unwrap();
    let blobs = std::sync::Arc::new(berth_blob::FsBlobStore::open(s.dir.path()).unwrap());
    let settings = berth_service::Settings {
        seal_key: berth_crypto::seal::SealKey::from_bytes(&[7; 32]).unwrap(),
        master_keys: berth_crypto::keyring::Keyring::parse(&"07".repeat(32)).unwrap(),
        ..Default::default()
    };
    let other = berth_service::Registry::open(meta, blobs, settings, vec![]).await.unwrap();
    other.rotate_token_key(&berth_service::Caller::operator()).await.unwrap();
    assert!(s.registry.refresh_token_key().await.unwrap(), "the rotation was not noticed");
    let r = s.req(Method::GET, "/v2/").basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a password from before the rotation still works");
    let pw2 = s.login_as(&Creds::root()).await;
    assert_eq!(s.req(Method::GET, "/v2/").basic_auth("AWS", Some(&pw2)).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_token_key_from_before_is_sealed_and_keeps_working() {
    // A database as the previous version left it: the key in plain hex.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("berth.db").display());
    let meta = berth_meta::Meta::connect(&url).await.unwrap();
    let old = berth_crypto::token::TokenKey::from_bytes(&[9; 32]).unwrap();
    meta.put_setting("token_key", &hex_of(old.as_bytes())).await.unwrap();
    meta.close().await;
    // A password issued then, by that key.
    let root = berth_service::AccessKey {
        id: AKID.into(),
        secret: SECRET.into(),
        principal: format!("arn:aws:iam::{ACCOUNT}:root"),
    };
    let issued_before = berth_service::Auth::new(&old, vec![root.clone()]);
    let pw = issued_before.issue_login(&issued_before.principal_of(&root)).0;
    let s = Server::start_on(dir, url, berth_api::Options::default()).await;
    let stored = s.meta.setting("token_key").await.unwrap().unwrap();
    assert!(stored.starts_with("s1:") && !stored.contains(&hex_of(old.as_bytes())), "{stored}");
    assert!(s.registry.identities().check_login(&pw).await.is_ok(), "a login from before the upgrade stopped working");
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_parameters_tag_a_sha512_manifest() {
    let s = Server::start(Db::Sqlite).await.unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"sha512 layer".repeat(10);
    let m = image_manifest(
        &s.push_blob("s512", config).await,
        config.len(),
        &[(s.push_blob("s512", &layer).await, layer.len())],
    );
    let d = berth_crypto::digest_of(berth_core::Algorithm::Sha512, &m).to_string();
    let r = s
        .req(Method::PUT, &format!("/v2/s512/manifests/{d}?tag=one&tag=two"))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), d);
    let tags: Vec<String> = r.headers().get_all("oci-tag").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert_eq!(tags, ["one", "two"]);
    for t in ["one", "two"] {
        let r = s.req(Method::GET, &format!("/v2/s512/manifests/{t}")).send().await.unwrap();
        assert_eq!(header(&r, "docker-content-digest"), d, "the tag names the sha512 manifest");
    }
    let r = s
        .req(Method::PUT, "/v2/s512/manifests/three?tag=four")
        .header("content-type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "tag parameters go with a digest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_identify_and_policies_decide_each_request() {
    let s = Server::start_secure(Db::Sqlite, berth_api::Challenge::Bearer).await.unwrap();
    s.ecr_ok("CreateRepository", json!({"repositoryName": "team/a"})).await;
    let user = s.iam_user("dev", &team_a_policy()).await;
    let pw = s.login_as(&user).await;
    // A token asked for pull only, as the oras client asks for its first request...
    let r = s.req(Method::GET, "/token?service=berth&scope=repository:team/a:pull").basic_auth("AWS", Some(&pw));
    let token = r.send().await.unwrap().json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let data = b"pushed with a pull token".to_vec();
    let d = sha256(&data);
    let push =
        || s.req(Method::POST, &format!("/v2/team/a/blobs/uploads/?digest={d}")).bearer_auth(&token).body(data.clone());
    // ...pushes, because its holder's policy allows the push.
    assert_eq!(push().send().await.unwrap().status(), StatusCode::CREATED);
    // The holder's permission detached: the same token is refused on the very next request.
    let (st, body) =
        s.query(&[("Action", "DeleteUserPolicy"), ("UserName", "dev"), ("PolicyName", "p")], &Creds::root()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let r = push().send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::FORBIDDEN, "DENIED".into()), "a detached permission still worked");
    let r = s.req(Method::GET, &format!("/v2/team/a/blobs/{d}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Anonymous tokens carry only what public policies grant: here nothing.
    let anon = s.req(Method::GET, "/token?service=berth&scope=repository:team/a:pull,push").send().await.unwrap();
    let anon = anon.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let r = s.req(Method::GET, &format!("/v2/team/a/blobs/{d}")).bearer_auth(&anon).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
