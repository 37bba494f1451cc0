//! Replication between registries on loopback ports, each in its own region: rules and their
//! validation, push-based copies (an index with its children and a referrer, repositories
//! created through REPLICATION templates), blobs a destination has not sent again, the newest
//! tag winning, a destination that comes back, and on-demand backfill.

mod common;

use std::time::Duration;

use berth_service::replication::{Peer, PeerKind};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SRC: &str = "us-east-1";
const DST: &str = "eu-west-1";

/// A peer for `dst` (an ECR-kind destination: the root key, in a credentials file under `dir`).
fn peer_of(dst: &Server, dir: &std::path::Path) -> Peer {
    let creds = dir.join("dst.credentials");
    std::fs::write(&creds, format!("[default]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"))
        .unwrap();
    Peer {
        region: DST.into(),
        registry_id: "000000000000".into(),
        url: dst.base.clone(),
        kind: PeerKind::Ecr,
        credentials_file: Some(creds),
        username_file: None,
        password_file: None,
    }
}

/// A destination (authentication required) and a source replicating to it (open `/v2/`).
async fn pair() -> (Server, Server, tempfile::TempDir) {
    let dst = Server::start_region(DST, false, Vec::new(), None, None).await;
    let keep = tempfile::tempdir().unwrap();
    let src = Server::start_region(SRC, true, vec![peer_of(&dst, keep.path())], None, None).await;
    (src, dst, keep)
}

async fn rule(src: &Server, filters: &[&str]) {
    let filters: Vec<Value> = filters.iter().map(|f| json!({ "filter": f, "filterType": "PREFIX_MATCH" })).collect();
    let mut r = json!({ "destinations": [{ "region": DST, "registryId": "000000000000" }] });
    if !filters.is_empty() {
        r["repositoryFilters"] = json!(filters);
    }
    src.ecr_ok("PutReplicationConfiguration", json!({ "replicationConfiguration": { "rules": [r] } })).await;
}

/// Waits until the image's status at the destination is `want`; the statuses seen last.
async fn wait_status(src: &Server, repo: &str, digest: &str, want: &str, secs: u64) -> Value {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let v = src
            .ecr_ok(
                "DescribeImageReplicationStatus",
                json!({ "repositoryName": repo, "imageId": { "imageDigest": digest } }),
            )
            .await;
        if v["replicationStatuses"][0]["status"] == want || std::time::Instant::now() > until {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET on the destination with its login.
async fn dst_get(dst: &Server, path: &str, accept: &str) -> (StatusCode, Vec<u8>, String) {
    let pw = dst.login_as(&Creds::root()).await;
    let r = dst.req(Method::GET, path).basic_auth("AWS", Some(pw)).header("accept", accept).send().await.unwrap();
    let status = r.status();
    let digest = header(&r, "docker-content-digest");
    (status, r.bytes().await.unwrap().to_vec(), digest)
}

#[tokio::test]
async fn configuration_is_validated_and_shown_by_describe_registry() {
    let (src, _dst, _keep) = pair().await;
    let (t, m) = src
        .ecr_err(
            "PutReplicationConfiguration",
            json!({ "replicationConfiguration": { "rules": [{ "destinations": [{ "region": "ap-south-1", "registryId": "000000000000" }] }] } }),
        )
        .await;
    assert_eq!(t, "InvalidParameterException");
    assert!(m.contains("no peer is configured for region ap-south-1") && m.contains("[[peers]]"), "{m}");
    let (t, m) = src
        .ecr_err(
            "PutReplicationConfiguration",
            json!({ "replicationConfiguration": { "rules": [{
                "destinations": [{ "region": DST, "registryId": "000000000000" }],
                "repositoryFilters": [{ "filter": "team", "filterType": "WILDCARD" }] }] } }),
        )
        .await;
    assert_eq!(t, "ValidationException", "{m}");
    assert!(m.contains("PREFIX_MATCH"), "{m}");
    let (t, m) = src
        .ecr_err(
            "PutReplicationConfiguration",
            json!({ "replicationConfiguration": { "rules": [{ "destinations": [{ "region": SRC, "registryId": "000000000000" }] }] } }),
        )
        .await;
    assert_eq!(t, "InvalidParameterException");
    assert!(m.contains("is this registry"), "{m}");
    let (t, _) = src.ecr_err("PutReplicationConfiguration", json!({})).await;
    assert!(!t.is_empty(), "a missing replicationConfiguration is refused");
    assert_eq!(src.ecr_ok("DescribeRegistry", json!({})).await["replicationConfiguration"], json!({ "rules": [] }));
    rule(&src, &["team/"]).await;
    let v = src.ecr_ok("DescribeRegistry", json!({})).await;
    assert_eq!(v["replicationConfiguration"]["rules"][0]["destinations"][0]["region"], DST);
    assert_eq!(v["replicationConfiguration"]["rules"][0]["repositoryFilters"][0]["filter"], "team/");
    // An empty configuration (how Terraform removes one) is accepted.
    src.ecr_ok("PutReplicationConfiguration", json!({ "replicationConfiguration": { "rules": [] } })).await;
    assert_eq!(src.ecr_ok("DescribeRegistry", json!({})).await["replicationConfiguration"]["rules"], json!([]));
    // No such image: ECR's error.
    let (t, _) = src
        .ecr_err(
            "DescribeImageReplicationStatus",
            json!({ "repositoryName": "nothing", "imageId": { "imageTag": "x" } }),
        )
        .await;
    assert_eq!(t, "RepositoryNotFoundException");
}

#[tokio::test]
async fn a_push_arrives_whole_through_the_replication_template_and_is_not_sent_back() {
    let (src, dst, _keep) = pair().await;
    // The destination's REPLICATION template tags what replication creates.
    dst.ecr_ok(
        "CreateRepositoryCreationTemplate",
        json!({ "prefix": "team", "appliedFor": ["REPLICATION"], "resourceTags": [{ "Key": "from", "Value": "replication" }] }),
    )
    .await;
    rule(&src, &["team/"]).await;
    // An index of two images, and a signature-style referrer of the index.
    let (a, _) = src.push_image("team/app", "amd64", "a").await;
    let (b, _) = src.push_image("team/app", "arm64", "b").await;
    let mut index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            { "mediaType": OCI_MANIFEST, "digest": a, "size": 1, "platform": { "architecture": "amd64", "os": "linux" } },
            { "mediaType": OCI_MANIFEST, "digest": b, "size": 1, "platform": { "architecture": "arm64", "os": "linux" } },
        ]
    });
    // Sizes as stored.
    for (i, d) in [&a, &b].iter().enumerate() {
        let r = src
            .req(Method::GET, &format!("/v2/team/app/manifests/{d}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        index["manifests"][i]["size"] = json!(r.bytes().await.unwrap().len());
    }
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let r = src.put_manifest("team/app", "v1", OCI_INDEX, &index_bytes).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let index_digest = sha256(&index_bytes);
    let sig_payload = b"signature payload";
    let sig_layer = src.push_blob("team/app", sig_payload).await;
    let empty = src.push_blob("team/app", b"{}").await;
    let sig = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": sig_layer, "size": sig_payload.len() }],
        "subject": { "mediaType": OCI_INDEX, "digest": index_digest, "size": index_bytes.len() }
    });
    let sig_bytes = serde_json::to_vec(&sig).unwrap();
    let sig_digest = sha256(&sig_bytes);
    assert_eq!(src.put_manifest("team/app", &sig_digest, OCI_MANIFEST, &sig_bytes).await.status(), StatusCode::CREATED);
    // Not matched by the rule: stays here.
    src.push_image("other/app", "v1", "c").await;

    let v = wait_status(&src, "team/app", &index_digest, "COMPLETE", 30).await;
    assert_eq!(
        v["replicationStatuses"],
        json!([{ "region": DST, "registryId": "000000000000", "status": "COMPLETE" }]),
        "{v}"
    );
    // The index, byte for byte, under its tag; its children; the referrer (after its delay).
    let (st, body, digest) = dst_get(&dst, "/v2/team/app/manifests/v1", OCI_INDEX).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, index_bytes);
    assert_eq!(digest, index_digest);
    for d in [&a, &b] {
        assert_eq!(dst_get(&dst, &format!("/v2/team/app/manifests/{d}"), OCI_MANIFEST).await.0, StatusCode::OK);
    }
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body, _) = dst_get(&dst, &format!("/v2/team/app/referrers/{index_digest}"), OCI_INDEX).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        if v["manifests"].as_array().is_some_and(|m| m.iter().any(|d| d["digest"] == sig_digest)) {
            break;
        }
        assert!(std::time::Instant::now() < until, "the signature did not follow its subject: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (st, body, _) = dst_get(&dst, &format!("/v2/team/app/blobs/{sig_layer}"), "*/*").await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, &sig_payload[..]));
    // Created through the template.
    let repo = dst.ecr_ok("DescribeRepositories", json!({ "repositoryNames": ["team/app"] })).await;
    let arn = repo["repositories"][0]["repositoryArn"].as_str().unwrap().to_string();
    let tags = dst.ecr_ok("ListTagsForResource", json!({ "resourceArn": arn })).await;
    assert_eq!(tags["tags"], json!([{ "Key": "from", "Value": "replication" }]));
    let (st, _, _) = dst_get(&dst, "/v2/other/app/manifests/v1", OCI_MANIFEST).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "a repository no rule matches is not replicated");
    // What the destination received counts as replicated: it is not replicated onwards.
    let m = dst.metrics().await;
    assert_eq!(metric(&m, "berth_replication_images_total"), 0);
    let m = src.metrics().await;
    assert!(metric(&m, "berth_replication_images_total") >= 2, "{m}");
}

#[tokio::test]
async fn a_re_push_sends_only_the_new_blobs_and_the_newest_tag_wins() {
    let (src, dst, _keep) = pair().await;
    rule(&src, &[]).await;
    // A large shared layer, then an image that adds a small one on top.
    let big = vec![7u8; 3 << 20];
    let big_d = src.push_blob("app", &big).await;
    let c1 = br#"{"architecture":"amd64","os":"linux","n":1}"#;
    let c1d = src.push_blob("app", c1).await;
    let m1 = image_manifest(&c1d, c1.len(), &[(big_d.clone(), big.len())]);
    assert_eq!(src.put_manifest("app", "v1", OCI_MANIFEST, &m1).await.status(), StatusCode::CREATED);
    wait_status(&src, "app", &sha256(&m1), "COMPLETE", 30).await;
    let received = metric(&dst.metrics().await, "berth_upload_bytes_total");
    assert!(received >= big.len() as u64, "the first push sent the big layer: {received}");

    let small = vec![9u8; 1000];
    let small_d = src.push_blob("app", &small).await;
    let c2 = br#"{"architecture":"amd64","os":"linux","n":2}"#;
    let c2d = src.push_blob("app", c2).await;
    let m2 = image_manifest(&c2d, c2.len(), &[(big_d.clone(), big.len()), (small_d, small.len())]);
    assert_eq!(src.put_manifest("app", "v2", OCI_MANIFEST, &m2).await.status(), StatusCode::CREATED);
    wait_status(&src, "app", &sha256(&m2), "COMPLETE", 30).await;
    let again = metric(&dst.metrics().await, "berth_upload_bytes_total") - received;
    assert_eq!(again, (small.len() + c2.len()) as u64, "only the new layer and config went");

    // A tag moved five times quickly ends at the newest everywhere.
    let mut last = String::new();
    for i in 0..5 {
        let c = format!(r#"{{"architecture":"amd64","os":"linux","move":{i}}}"#);
        let cd = src.push_blob("app", c.as_bytes()).await;
        let m = image_manifest(&cd, c.len(), &[(big_d.clone(), big.len())]);
        assert_eq!(src.put_manifest("app", "moving", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
        last = sha256(&m);
    }
    wait_status(&src, "app", &last, "COMPLETE", 30).await;
    // Earlier moves may still be running; the newest runs after them.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, d) = dst_get(&dst, "/v2/app/manifests/moving", OCI_MANIFEST).await;
        if d == last {
            // And stays there once every job is done.
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(dst_get(&dst, "/v2/app/manifests/moving", OCI_MANIFEST).await.2, last);
            break;
        }
        assert!(std::time::Instant::now() < until, "the destination's tag is {d}, not the newest {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_destination_that_was_away_catches_up_and_backfill_copies_what_came_before() {
    let (src, dst, _keep) = pair().await;
    // Images stored before any rule: not replicated by themselves.
    let (old, _) = src.push_image("legacy", "old", "old").await;
    // (Rules apply to what the outbox consumer reads after they are in place: let it read the push.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    rule(&src, &[]).await;
    // The destination goes away; a push fails and is retried.
    let (dir, addr) = dst.stop().await;
    let (d, _) = src.push_image("app", "v1", "while-away").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = src
        .ecr_ok("DescribeImageReplicationStatus", json!({ "repositoryName": "app", "imageId": { "imageTag": "v1" } }))
        .await;
    let s = &v["replicationStatuses"][0];
    assert_ne!(s["status"], "COMPLETE", "{v}");
    assert!(s["status"] == "IN_PROGRESS" || s["failureCode"] == "DESTINATION_UNREACHABLE", "{v}");
    // Back on the same address: the retry delivers it.
    let dst = Server::start_region(DST, false, Vec::new(), Some(dir), Some(addr)).await;
    let v = wait_status(&src, "app", &d, "COMPLETE", 40).await;
    assert_eq!(v["replicationStatuses"][0]["status"], "COMPLETE", "{v}");
    assert_eq!(dst_get(&dst, "/v2/app/manifests/v1", OCI_MANIFEST).await.2, d);

    assert_eq!(dst_get(&dst, "/v2/legacy/manifests/old", OCI_MANIFEST).await.0, StatusCode::NOT_FOUND);
    let (t, m) = src.ecr_err("StartImageReplication", json!({ "repositoryName": "legacy" })).await;
    assert_eq!(t, "InvalidParameterException", "{m}");
    let v = src.ecr_ok("StartImageReplication", json!({ "repositoryName": "legacy", "allImages": true })).await;
    assert_eq!(v["replications"][0]["imageId"]["imageTag"], "old", "{v}");
    assert_eq!(v["replications"][0]["region"], DST);
    wait_status(&src, "legacy", &old, "COMPLETE", 30).await;
    assert_eq!(dst_get(&dst, "/v2/legacy/manifests/old", OCI_MANIFEST).await.2, old);
    let (t, m) = src
        .ecr_err(
            "StartImageReplication",
            json!({ "repositoryName": "legacy", "allImages": true, "destinationRegion": "ap-south-1" }),
        )
        .await;
    assert_eq!(t, "InvalidParameterException");
    assert!(m.contains("no peer is configured for region ap-south-1"), "{m}");
}

#[tokio::test]
async fn an_oci_destination_takes_pushes_by_token_auth_without_templates() {
    // A plain OCI destination: the kind that speaks only /v2/ (here a Berth with its token flow).
    let dst = Server::start_region(DST, false, Vec::new(), None, None).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("user"), "AWS\n").unwrap();
    std::fs::write(dir.path().join("password"), dst.login_as(&Creds::root()).await).unwrap();
    let peer = Peer {
        region: "dist".into(),
        registry_id: "000000000000".into(),
        url: dst.base.clone(),
        kind: PeerKind::Oci,
        credentials_file: None,
        username_file: Some(dir.path().join("user")),
        password_file: Some(dir.path().join("password")),
    };
    let src = Server::start_region(SRC, true, vec![peer], None, None).await;
    src.ecr_ok(
        "PutReplicationConfiguration",
        json!({ "replicationConfiguration": { "rules": [{ "destinations": [{ "region": "dist", "registryId": "000000000000" }] }] } }),
    )
    .await;
    let (d, m) = src.push_image("web", "1.0", "oci").await;
    let v = wait_status(&src, "web", &d, "COMPLETE", 30).await;
    assert_eq!(v["replicationStatuses"][0]["region"], "dist", "{v}");
    let (st, body, _) = dst_get(&dst, "/v2/web/manifests/1.0", OCI_MANIFEST).await;
    assert_eq!((st, body), (StatusCode::OK, m));
    // Without the replication marker, what arrived is an ordinary push there.
    let repo = dst.ecr_ok("DescribeRepositories", json!({ "repositoryNames": ["web"] })).await;
    assert_eq!(repo["repositories"][0]["repositoryName"], "web");
}

#[tokio::test]
async fn queued_replications_survive_a_restart_of_the_source() {
    let (src, dst, keep) = pair().await;
    rule(&src, &[]).await;
    let (ddir, daddr) = dst.stop().await;
    let (d, _) = src.push_image("app", "v1", "restart").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The source goes down with the job still queued (the destination is away), and comes back
    // on the same storage after the destination does.
    let peers = src.region.clone().unwrap().1;
    let (sdir, saddr) = src.stop().await;
    let dst = Server::start_region(DST, false, Vec::new(), Some(ddir), Some(daddr)).await;
    let src = Server::start_region(SRC, true, peers, Some(sdir), Some(saddr)).await;
    let v = wait_status(&src, "app", &d, "COMPLETE", 40).await;
    assert_eq!(v["replicationStatuses"][0]["status"], "COMPLETE", "{v}");
    assert_eq!(dst_get(&dst, "/v2/app/manifests/v1", OCI_MANIFEST).await.2, d);
    drop(keep);
}
