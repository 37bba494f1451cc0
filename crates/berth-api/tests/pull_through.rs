//! Pull-through cache rules through the ECR API: ECR's validation and errors, the stored secret
//! a rule's credentialArn names, and ValidatePullThroughCacheRule against real upstreams (an open
//! Berth, and one that wants credentials).

mod common;

use common::*;
use serde_json::json;

/// A Secrets Manager call as the root user: status and answer.
async fn sm(s: &Server, op: &str, body: serde_json::Value) -> (reqwest::StatusCode, serde_json::Value) {
    let root = Creds::root();
    let target = format!("secretsmanager.{op}");
    s.json_call("secretsmanager", &target, body, &root.akid, &root.secret, None, |_| {}).await
}

/// A secret holding upstream credentials, made as ECR's users make it: `CreateSecret`.
async fn secret(s: &Server, name: &str, username: &str, token: &str) -> String {
    let value = json!({ "username": username, "accessToken": token }).to_string();
    let (st, v) = sm(s, "CreateSecret", json!({ "Name": name, "SecretString": value })).await;
    assert_eq!(st, reqwest::StatusCode::OK, "{v}");
    v["ARN"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn secrets_manager_keeps_secrets_sealed_with_their_current_version() {
    let s = Server::start(Db::Sqlite).await.unwrap();
    let err = |v: &serde_json::Value| v["__type"].as_str().unwrap_or_default().to_string();
    let token = "0123456789abcdef0123456789abcdef";
    let (st, made) = sm(
        &s,
        "CreateSecret",
        json!({ "Name": "ecr-pullthroughcache/hub", "SecretString": "{\"username\":\"u\",\"accessToken\":\"t0\"}",
        "Description": "hub credentials", "ClientRequestToken": token }),
    )
    .await;
    assert_eq!(st, reqwest::StatusCode::OK, "{made}");
    let arn = made["ARN"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:secretsmanager:us-east-1:000000000000:secret:ecr-pullthroughcache/hub-"), "{arn}");
    assert_eq!(made["VersionId"], token);
    // Never in the clear at rest: no file of the data directory holds the value.
    fn holds(dir: &std::path::Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                holds(&p, needle)
            } else {
                std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            }
        })
    }
    assert!(holds(s.dir.path(), b"hub credentials"), "the check would not see a value in the clear");
    assert!(!holds(s.dir.path(), b"accessToken"), "a secret's value is stored in the clear");
    let (_, again) = sm(&s, "CreateSecret", json!({ "Name": "ecr-pullthroughcache/hub", "SecretString": "x" })).await;
    assert_eq!(err(&again), "ResourceExistsException");
    let (_, bin) = sm(&s, "CreateSecret", json!({ "Name": "b", "SecretBinary": "AAAA" })).await;
    assert_eq!(err(&bin), "InvalidParameterException", "{bin}");
    // By name or ARN; the current version with its stage.
    for id in ["ecr-pullthroughcache/hub", arn.as_str()] {
        let (st, d) = sm(&s, "DescribeSecret", json!({ "SecretId": id })).await;
        assert_eq!(st, reqwest::StatusCode::OK);
        assert_eq!((d["ARN"].as_str(), d["Description"].as_str()), (Some(arn.as_str()), Some("hub credentials")));
        assert_eq!(d["VersionIdsToStages"][token], json!(["AWSCURRENT"]));
    }
    let (_, got) = sm(&s, "GetSecretValue", json!({ "SecretId": arn, "VersionId": token })).await;
    assert_eq!(got["SecretString"], "{\"username\":\"u\",\"accessToken\":\"t0\"}");
    let (_, other) = sm(&s, "GetSecretValue", json!({ "SecretId": arn, "VersionStage": "AWSPREVIOUS" })).await;
    assert_eq!(err(&other), "ResourceNotFoundException");
    // A new value is a new version; the same token again with another value is refused.
    let token2 = "fedcba9876543210fedcba9876543210";
    let put = json!({ "SecretId": arn, "SecretString": "{\"username\":\"u\",\"accessToken\":\"t1\"}", "ClientRequestToken": token2 });
    let (st, p) = sm(&s, "PutSecretValue", put.clone()).await;
    assert_eq!((st, p["VersionId"].as_str()), (reqwest::StatusCode::OK, Some(token2)), "{p}");
    assert_eq!(sm(&s, "PutSecretValue", put).await.0, reqwest::StatusCode::OK, "a retried write changes nothing");
    let (_, clash) =
        sm(&s, "PutSecretValue", json!({ "SecretId": arn, "SecretString": "other", "ClientRequestToken": token2 }))
            .await;
    assert_eq!(err(&clash), "ResourceExistsException");
    let (_, old) = sm(&s, "GetSecretValue", json!({ "SecretId": arn, "VersionId": token })).await;
    assert_eq!(err(&old), "ResourceNotFoundException");
    let (_, up) = sm(&s, "UpdateSecret", json!({ "SecretId": arn, "Description": "rotated" })).await;
    assert!(up.get("VersionId").is_none(), "{up}");
    // Made without a value (as Terraform makes one): no version until one is written.
    let (_, empty) = sm(&s, "CreateSecret", json!({ "Name": "later" })).await;
    assert!(empty.get("VersionId").is_none(), "{empty}");
    let (_, none) = sm(&s, "GetSecretValue", json!({ "SecretId": "later" })).await;
    assert_eq!(err(&none), "ResourceNotFoundException");
    let (_, d) = sm(&s, "DescribeSecret", json!({ "SecretId": "later" })).await;
    assert_eq!(d["VersionIdsToStages"], json!({}));
    assert_eq!(
        sm(&s, "PutSecretValue", json!({ "SecretId": "later", "SecretString": "v" })).await.0,
        reqwest::StatusCode::OK
    );
    assert_eq!(sm(&s, "GetSecretValue", json!({ "SecretId": "later" })).await.1["SecretString"], "v");
    assert_eq!(sm(&s, "DeleteSecret", json!({ "SecretId": "later" })).await.0, reqwest::StatusCode::OK);
    // Listing: pages by name, filters.
    for n in ["a/one", "a/two", "b/three"] {
        secret(&s, n, "u", "t").await;
    }
    let (_, p1) = sm(&s, "ListSecrets", json!({ "MaxResults": 2 })).await;
    let names = |v: &serde_json::Value| {
        v["SecretList"].as_array().unwrap().iter().map(|e| e["Name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(&p1), ["a/one", "a/two"]);
    let (_, p2) = sm(&s, "ListSecrets", json!({ "MaxResults": 2, "NextToken": p1["NextToken"] })).await;
    assert_eq!(names(&p2), ["b/three", "ecr-pullthroughcache/hub"]);
    assert!(p2.get("NextToken").is_none());
    let (_, f) = sm(&s, "ListSecrets", json!({ "Filters": [{ "Key": "name", "Values": ["a/"] }] })).await;
    assert_eq!(names(&f), ["a/one", "a/two"]);
    let (_, f) = sm(&s, "ListSecrets", json!({ "Filters": [{ "Key": "description", "Values": ["rotated"] }] })).await;
    assert_eq!(names(&f), ["ecr-pullthroughcache/hub"]);
    // A rule uses the secret; deleting it is immediate.
    let (_, both) = sm(
        &s,
        "DeleteSecret",
        json!({ "SecretId": arn, "RecoveryWindowInDays": 7, "ForceDeleteWithoutRecovery": true }),
    )
    .await;
    assert_eq!(err(&both), "InvalidParameterException");
    let (st, del) = sm(&s, "DeleteSecret", json!({ "SecretId": arn, "ForceDeleteWithoutRecovery": true })).await;
    assert_eq!((st, del["ARN"].as_str()), (reqwest::StatusCode::OK, Some(arn.as_str())));
    let (st, gone) = sm(&s, "DescribeSecret", json!({ "SecretId": arn })).await;
    assert_eq!((st, err(&gone)), (reqwest::StatusCode::BAD_REQUEST, "ResourceNotFoundException".to_string()));
    // Decided for the caller: a user may read only what a policy lets it.
    let reader = s
        .iam_user("reader", r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"secretsmanager:DescribeSecret","Resource":"*"}]}"#)
        .await;
    let as_reader = |op: &'static str, body: serde_json::Value| {
        let (s, r) = (&s, &reader);
        async move {
            s.json_call("secretsmanager", &format!("secretsmanager.{op}"), body, &r.akid, &r.secret, None, |_| {}).await
        }
    };
    assert_eq!(as_reader("DescribeSecret", json!({ "SecretId": "a/one" })).await.0, reqwest::StatusCode::OK);
    let (st, denied) = as_reader("GetSecretValue", json!({ "SecretId": "a/one" })).await;
    assert_eq!((st, err(&denied)), (reqwest::StatusCode::BAD_REQUEST, "AccessDeniedException".to_string()), "{denied}");
    let (_, unknown) = sm(&s, "RotateSecret", json!({ "SecretId": "a/one" })).await;
    assert!(unknown["message"].as_str().unwrap().contains("does not support"), "{unknown}");
}

#[tokio::test]
async fn rules_are_validated_stored_and_checked_against_their_upstream() {
    let open = Server::start_region("eu-west-1", true, Vec::new(), None, None).await;
    let locked = Server::start_region("eu-west-2", false, Vec::new(), None, None).await;
    let s = Server::start(Db::Sqlite).await.unwrap();
    let create = |prefix: &str, url: &str| json!({ "ecrRepositoryPrefix": prefix, "upstreamRegistryUrl": url });

    let r = s.ecr_ok("CreatePullThroughCacheRule", create("open", &open.base)).await;
    assert_eq!(r["ecrRepositoryPrefix"], "open");
    assert_eq!(r["upstreamRegistryUrl"], open.base.as_str());
    assert!(r.get("upstreamRepositoryPrefix").is_none(), "not given, not shown (Terraform re-plans clean)");
    assert!(r["createdAt"].is_number());
    let (t, _) = s.ecr_err("CreatePullThroughCacheRule", create("open", &open.base)).await;
    assert_eq!(t, "PullThroughCacheRuleAlreadyExistsException");
    let (t, m) = s.ecr_err("CreatePullThroughCacheRule", create("hub", "http://registry.example.com")).await;
    assert_eq!(t, "InvalidParameterException");
    assert!(m.contains("loopback"), "{m}");
    let (t, _) = s.ecr_err("CreatePullThroughCacheRule", create("Bad//Prefix", &open.base)).await;
    assert_eq!(t, "ValidationException");
    let mut bad = create("quay", "quay.io");
    bad["upstreamRegistry"] = json!("harbor");
    assert_eq!(s.ecr_err("CreatePullThroughCacheRule", bad).await.0, "ValidationException");
    let missing = "arn:aws:secretsmanager:us-east-1:000000000000:secret:ecr-pullthroughcache/none-AbCdEf";
    let mut c = create("locked", &locked.base);
    c["credentialArn"] = json!(missing);
    assert_eq!(s.ecr_err("CreatePullThroughCacheRule", c.clone()).await.0, "SecretNotFoundException");

    // A rule whose upstream wants credentials: wrong ones, then the right ones.
    let wrong = secret(&s, "ecr-pullthroughcache/wrong", "AWS", "not-the-password").await;
    c["credentialArn"] = json!(wrong);
    let r = s.ecr_ok("CreatePullThroughCacheRule", c).await;
    assert_eq!(r["credentialArn"], wrong.as_str());
    let v = s.ecr_ok("ValidatePullThroughCacheRule", json!({ "ecrRepositoryPrefix": "locked" })).await;
    assert_eq!(v["isValid"], false, "{v}");
    assert!(v["failure"].as_str().unwrap().contains("denied"), "{v}");
    let right = secret(&s, "ecr-pullthroughcache/right", "AWS", &locked.login_as(&Creds::root()).await).await;
    let u = s
        .ecr_ok("UpdatePullThroughCacheRule", json!({ "ecrRepositoryPrefix": "locked", "credentialArn": right }))
        .await;
    assert_eq!(u["credentialArn"], right.as_str());
    let v = s.ecr_ok("ValidatePullThroughCacheRule", json!({ "ecrRepositoryPrefix": "locked" })).await;
    assert_eq!(v["isValid"], true, "{v}");
    let v = s.ecr_ok("ValidatePullThroughCacheRule", json!({ "ecrRepositoryPrefix": "open" })).await;
    assert_eq!(v["isValid"], true, "{v}");

    // Described all, by prefix, a page at a time; an unknown prefix is an error.
    let all = s.ecr_ok("DescribePullThroughCacheRules", json!({})).await;
    let prefixes: Vec<&str> = all["pullThroughCacheRules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ecrRepositoryPrefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["locked", "open"]);
    let page = s.ecr_ok("DescribePullThroughCacheRules", json!({ "maxResults": 1 })).await;
    assert_eq!(page["pullThroughCacheRules"].as_array().unwrap().len(), 1);
    let next =
        s.ecr_ok("DescribePullThroughCacheRules", json!({ "maxResults": 1, "nextToken": page["nextToken"] })).await;
    assert_eq!(next["pullThroughCacheRules"][0]["ecrRepositoryPrefix"], "open");
    assert!(next.get("nextToken").is_none());
    let (t, _) = s.ecr_err("DescribePullThroughCacheRules", json!({ "ecrRepositoryPrefixes": ["nope"] })).await;
    assert_eq!(t, "PullThroughCacheRuleNotFoundException");

    let d = s.ecr_ok("DeletePullThroughCacheRule", json!({ "ecrRepositoryPrefix": "open" })).await;
    assert_eq!(d["upstreamRegistryUrl"], open.base.as_str());
    let (t, _) = s.ecr_err("DeletePullThroughCacheRule", json!({ "ecrRepositoryPrefix": "open" })).await;
    assert_eq!(t, "PullThroughCacheRuleNotFoundException");
    let (t, _) = s.ecr_err("ValidatePullThroughCacheRule", json!({ "ecrRepositoryPrefix": "open" })).await;
    assert_eq!(t, "PullThroughCacheRuleNotFoundException");
}

/// Pushes an index of two images (each a config and a layer) to `s`; (index digest, index
/// bytes, child digests, layer digests and bytes).
async fn push_index(s: &Server, repo: &str, tag: &str) -> (String, Vec<u8>, Vec<String>, Vec<(String, Vec<u8>)>) {
    let mut children = Vec::new();
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#);
        let layer = format!("layer for {arch} ").repeat(5000).into_bytes();
        let cd = s.push_blob(repo, config.as_bytes()).await;
        let ld = s.push_blob(repo, &layer).await;
        let m = image_manifest(&cd, config.len(), &[(ld.clone(), layer.len())]);
        assert_eq!(s.put_manifest(repo, &sha256(&m), OCI_MANIFEST, &m).await.status(), reqwest::StatusCode::CREATED);
        descs.push(json!({ "mediaType": OCI_MANIFEST, "digest": sha256(&m), "size": m.len(),
            "platform": { "architecture": arch, "os": "linux" } }));
        children.push(sha256(&m));
        layers.push((ld, layer));
    }
    let index = serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs })).unwrap();
    assert_eq!(s.put_manifest(repo, tag, OCI_INDEX, &index).await.status(), reqwest::StatusCode::CREATED);
    (sha256(&index), index, children, layers)
}

/// A Berth whose repositories under `hub/` are a cache of `upstream`.
async fn cache_of(upstream: &Server) -> Server {
    let cache = Server::start(Db::Sqlite).await.unwrap();
    cache
        .ecr_ok(
            "CreatePullThroughCacheRule",
            json!({ "ecrRepositoryPrefix": "hub", "upstreamRegistryUrl": upstream.base }),
        )
        .await;
    cache
}

/// Waits until `repo` holds `n` images.
async fn wait_cached(s: &Server, repo: &str, n: usize) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = s.ecr_ok("DescribeImages", json!({ "repositoryName": repo })).await;
        if v["imageDetails"].as_array().map_or(0, Vec::len) == n {
            return;
        }
        assert!(std::time::Instant::now() < until, "not cached: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn get(s: &Server, path: &str, accept: &str) -> (reqwest::StatusCode, Vec<u8>, String) {
    let r = s.req(reqwest::Method::GET, path).header("accept", accept).send().await.unwrap();
    let st = r.status();
    let d = header(&r, "docker-content-digest");
    (st, r.bytes().await.unwrap().to_vec(), d)
}

#[tokio::test]
async fn a_pull_through_an_open_upstream_is_cached_and_served_when_the_upstream_is_gone() {
    let upstream = Server::start_region("eu-west-1", true, Vec::new(), None, None).await;
    let (idx, index, children, layers) = push_index(&upstream, "library/app", "1").await;
    // A cosign-style signature of the index, at the upstream only.
    let payload = b"cosign simple signing payload";
    let (ed, pd) = (upstream.push_blob("library/app", b"{}").await, upstream.push_blob("library/app", payload).await);
    let sig_type = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let sig = serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": sig_type,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": ed, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd, "size": payload.len() }],
        "subject": { "mediaType": OCI_INDEX, "digest": idx, "size": index.len() } }))
    .unwrap();
    let sig_digest = sha256(&sig);
    assert_eq!(
        upstream.put_manifest("library/app", &sig_digest, OCI_MANIFEST, &sig).await.status(),
        reqwest::StatusCode::CREATED
    );
    let cache = cache_of(&upstream).await;
    // The index by tag, each child by digest, each layer: as the upstream has them.
    let (st, body, d) = get(&cache, "/v2/hub/library/app/manifests/1", OCI_INDEX).await;
    assert_eq!((st, d.as_str()), (reqwest::StatusCode::OK, idx.as_str()));
    assert_eq!(body, index);
    for c in &children {
        let (st, _, d) = get(&cache, &format!("/v2/hub/library/app/manifests/{c}"), OCI_MANIFEST).await;
        assert_eq!((st, d.as_str()), (reqwest::StatusCode::OK, c.as_str()));
    }
    // Two clients at once for the first layer: one upstream fetch, the same bytes for both.
    let (l0, bytes0) = &layers[0];
    let p = format!("/v2/hub/library/app/blobs/{l0}");
    let (a, b) = tokio::join!(get(&cache, &p, "*/*"), get(&cache, &p, "*/*"));
    assert_eq!((a.0, &a.1), (reqwest::StatusCode::OK, bytes0));
    assert_eq!((b.0, &b.1), (reqwest::StatusCode::OK, bytes0));
    let (l1, bytes1) = &layers[1];
    assert_eq!(&get(&cache, &format!("/v2/hub/library/app/blobs/{l1}"), "*/*").await.1, bytes1);
    // The index's referrers are asked of the upstream: the signature is listed (by its type
    // too, not by another) and cached.
    let referrers = |filter: &'static str| {
        let c = &cache;
        let path = format!("/v2/hub/library/app/referrers/{idx}{filter}");
        async move {
            let (st, body, _) = get(c, &path, OCI_INDEX).await;
            assert_eq!(st, reqwest::StatusCode::OK);
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["manifests"].as_array().unwrap().clone()
        }
    };
    let listed = referrers("").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0]["digest"].as_str(), listed[0]["artifactType"].as_str()),
        (Some(sig_digest.as_str()), Some(sig_type))
    );
    assert_eq!(listed[0]["size"], sig.len());
    assert!(referrers("?artifactType=application/x-other").await.is_empty());
    // Cached: the repository exists here, with the image and its signature, once the imports are done.
    wait_cached(&cache, "hub/library/app", 4).await;
    // The upstream goes away: everything is still served, the tag included (its refresh fails).
    upstream.stop().await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (st, body, _) = get(&cache, "/v2/hub/library/app/manifests/1", OCI_INDEX).await;
    assert_eq!((st, body), (reqwest::StatusCode::OK, index));
    for c in &children {
        assert_eq!(
            get(&cache, &format!("/v2/hub/library/app/manifests/{c}"), OCI_MANIFEST).await.0,
            reqwest::StatusCode::OK
        );
    }
    assert_eq!(&get(&cache, &format!("/v2/hub/library/app/blobs/{l1}"), "*/*").await.1, bytes1);
    let (st, body, _) = get(&cache, &format!("/v2/hub/library/app/manifests/{sig_digest}"), OCI_MANIFEST).await;
    assert_eq!((st, body), (reqwest::StatusCode::OK, sig));
    assert_eq!(referrers("").await.len(), 1);
    assert_eq!(&get(&cache, &format!("/v2/hub/library/app/blobs/{pd}"), "*/*").await.1, payload);
    // Each blob came from the upstream once (two configs, two layers, the signature's two),
    // however many asked for it: the imports, and the two clients at once.
    let m = cache.metrics().await;
    assert_eq!(metric(&m, "berth_pull_through_blob_fetches_total"), 6, "{m}");
    // What was never cached: a clear error naming the upstream, not a 500.
    let r = cache
        .req(reqwest::Method::GET, "/v2/hub/library/other/manifests/1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_GATEWAY);
    let text = r.text().await.unwrap();
    assert!(text.contains("upstream") && text.contains("did not answer"), "{text}");
}

#[tokio::test]
async fn a_tag_is_refreshed_from_an_upstream_with_auth_after_the_interval() {
    let upstream = Server::start_region("eu-west-2", false, Vec::new(), None, None).await;
    let pw = upstream.login_as(&Creds::root()).await;
    let push = |seed: &'static str| {
        let up = &upstream;
        let pw = pw.clone();
        async move {
            let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
            let layer = format!("{seed} ").repeat(1000).into_bytes();
            let mut ds = Vec::new();
            for b in [config.as_bytes().to_vec(), layer.clone()] {
                let d = sha256(&b);
                let r = up
                    .req(reqwest::Method::POST, &format!("/v2/team/app/blobs/uploads/?digest={d}"))
                    .basic_auth("AWS", Some(&pw))
                    .body(b.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), reqwest::StatusCode::CREATED);
                ds.push((d, b.len()));
            }
            let m = image_manifest(&ds[0].0, ds[0].1, &[ds[1].clone()]);
            let r = up
                .req(reqwest::Method::PUT, "/v2/team/app/manifests/latest")
                .basic_auth("AWS", Some(&pw))
                .header("content-type", OCI_MANIFEST)
                .body(m.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::CREATED);
            sha256(&m)
        }
    };
    let first = push("first").await;
    let cache = Server::start(Db::Sqlite).await.unwrap();
    // A pull before the rule exists reads (and keeps) the registry's rules: none.
    assert_eq!(get(&cache, "/v2/up/team/app/manifests/latest", OCI_MANIFEST).await.0, reqwest::StatusCode::NOT_FOUND);
    let arn = secret(&cache, "ecr-pullthroughcache/up", "AWS", &pw).await;
    cache
        .ecr_ok(
            "CreatePullThroughCacheRule",
            json!({ "ecrRepositoryPrefix": "up", "upstreamRegistryUrl": upstream.base, "credentialArn": arn }),
        )
        .await;
    // The rule made a moment later applies at once on this node.
    assert_eq!(get(&cache, "/v2/up/team/app/manifests/latest", OCI_MANIFEST).await.2, first);
    // (Until its import is done, a miss asks the upstream again.)
    wait_cached(&cache, "up/team/app", 1).await;
    let second = push("second").await;
    // Within the interval (2 s here) the cached tag is served; after it, the upstream's.
    assert_eq!(get(&cache, "/v2/up/team/app/manifests/latest", OCI_MANIFEST).await.2, first);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(get(&cache, "/v2/up/team/app/manifests/latest", OCI_MANIFEST).await.2, second);
}

#[tokio::test]
async fn a_second_client_follows_the_fetch_of_the_first() {
    let upstream = Server::start_region("eu-west-1", true, Vec::new(), None, None).await;
    let layer: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let digest = upstream.push_blob("library/big", &layer).await;
    let cache = cache_of(&upstream).await;
    let path = format!("/v2/hub/library/big/blobs/{digest}");
    // The first client has its answer but reads nothing yet: the fetch is under way, held up.
    let first = cache.req(reqwest::Method::GET, &path).send().await.unwrap();
    assert_eq!(first.status(), reqwest::StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // A second client is answered at once, from the same fetch, from its first byte.
    let second = cache.req(reqwest::Method::GET, &path).send().await.unwrap();
    assert_eq!(second.status(), reqwest::StatusCode::OK);
    assert_eq!(header(&second, "content-length"), layer.len().to_string());
    let (a, b) = tokio::join!(first.bytes(), second.bytes());
    assert!(a.unwrap() == layer, "the first client's bytes differ");
    assert!(b.unwrap() == layer, "the second client's bytes differ");
    let m = cache.metrics().await;
    assert_eq!(metric(&m, "berth_pull_through_blob_fetches_total"), 1, "{m}");
    assert_eq!(metric(&m, "berth_pull_through_followers_total"), 1, "{m}");
    assert_eq!(metric(&m, "berth_pull_through_bytes_fetched_total"), layer.len() as u64);
    // Stored: a third client reads it here, with the upstream gone.
    upstream.stop().await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = cache.req(reqwest::Method::GET, &path).send().await.unwrap();
        if r.status() == reqwest::StatusCode::OK {
            assert!(r.bytes().await.unwrap() == layer);
            break;
        }
        assert!(std::time::Instant::now() < until, "not stored: {}", r.status());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&cache.metrics().await, "berth_pull_through_blob_fetches_total"), 1);
}
