//! Garbage collection against SQLite and PostgreSQL: what it removes and what it keeps, the grace
//! period, revival by a manifest push, a push meeting a blob that is being deleted, abandoned
//! uploads, and fsck afterwards.

mod common;

use std::time::Duration;

use berth_service::gc::GcOptions;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

fn now_opts() -> GcOptions {
    GcOptions { grace: Duration::ZERO, ..Default::default() }
}

async fn blob_status(s: &Server, repo: &str, digest: &str) -> StatusCode {
    s.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).send().await.unwrap().status()
}

async fn gc_twice(s: &Server, opts: GcOptions) -> (u64, u64) {
    // The first pass condemns, the next (after the grace period) deletes.
    let a = s.registry.gc().gc(&berth_service::Caller::operator(), opts).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = s.registry.gc().gc(&berth_service::Caller::operator(), opts).await.unwrap();
    (a.deleted_blobs + b.deleted_blobs, a.condemned + b.condemned)
}

async fn collects_garbage_and_keeps_what_is_used(s: Server) {
    s.ecr_ok("CreateRepository", json!({"repositoryName": "app"})).await;
    // Image A: config + shared + own layer; image B: config + shared layer.
    let shared = s.push_blob("app", &b"shared layer ".repeat(1000)).await;
    let own = s.push_blob("app", &b"only in A ".repeat(1000)).await;
    let ca = s.push_blob("app", br#"{"a":1}"#).await;
    let cb = s.push_blob("app", br#"{"b":1}"#).await;
    let ma = image_manifest(&ca, 7, &[(shared.clone(), 13_000), (own.clone(), 10_000)]);
    let mb = image_manifest(&cb, 7, &[(shared.clone(), 13_000)]);
    assert_eq!(s.put_manifest("app", "a", OCI_MANIFEST, &ma).await.status(), StatusCode::CREATED);
    assert_eq!(s.put_manifest("app", "b", OCI_MANIFEST, &mb).await.status(), StatusCode::CREATED);
    let stray = s.push_blob("app", b"uploaded, never referenced").await;

    // Within the grace period nothing goes, not even the stray blob.
    let r = s.registry.gc().gc(&berth_service::Caller::operator(), GcOptions::default()).await.unwrap();
    assert_eq!(r.deleted_blobs, 0);
    assert_eq!(r.condemned, 1, "only the stray blob is unreferenced: {r:?}");
    let dry = s
        .registry
        .gc()
        .gc(&berth_service::Caller::operator(), GcOptions { dry_run: true, ..now_opts() })
        .await
        .unwrap();
    assert_eq!(dry.deleted_blobs, 1, "a dry run with no grace would delete the stray blob");
    assert_eq!(blob_status(&s, "app", &stray).await, StatusCode::OK, "a dry run deletes nothing");

    // Delete image A: its own layer and config become garbage, the shared layer does not.
    let r = s.req(Method::DELETE, &format!("/v2/app/manifests/{}", sha256(&ma))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (deleted, _) = gc_twice(&s, now_opts()).await;
    assert_eq!(deleted, 3, "own layer, A's config, the stray blob");
    for gone in [&own, &ca, &stray] {
        assert_eq!(blob_status(&s, "app", gone).await, StatusCode::NOT_FOUND, "{gone}");
    }
    for kept in [&shared, &cb] {
        assert_eq!(blob_status(&s, "app", kept).await, StatusCode::OK, "{kept}");
    }
    let r = s.req(Method::GET, "/v2/app/manifests/b").header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report = s.registry.fsck().fsck(&berth_service::Caller::operator(), |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.unrecorded_blobs.is_empty(), "files left behind: {:?}", report.unrecorded_blobs);
    // Nothing is left to examine: the cost of the next pass follows new garbage only.
    let counts = s.meta.gc_counts().await.unwrap();
    assert!(counts.contains(&("candidates".to_string(), 0)), "{counts:?}");
    assert!(s.meta.unreferenced_blobs_before(berth_meta::now_ms()).await.unwrap().is_empty());

    // The totals are exported for Prometheus.
    let m = s.req(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> u64 {
        m.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert_eq!(value("berth_gc_blobs_deleted_total"), 3, "{m}");
    assert!(value("berth_gc_runs_total") >= 3, "{m}");
    assert!(m.contains("# TYPE berth_gc_last_duration_seconds gauge"), "{m}");

    // Deleting the repository makes everything in it garbage.
    s.ecr_ok("DeleteRepository", json!({"repositoryName": "app", "force": true})).await;
    let (deleted, _) = gc_twice(&s, now_opts()).await;
    assert_eq!(deleted, 2);
    assert!(
        s.registry.fsck().fsck(&berth_service::Caller::operator(), |_| {}).await.unwrap().unrecorded_blobs.is_empty()
    );
}
both!(collects_garbage_and_keeps_what_is_used);

async fn pushes_revive_and_never_reference_deleted_blobs(s: Server) {
    s.ecr_ok("CreateRepository", json!({"repositoryName": "svc"})).await;
    let layer = b"a layer pushed before its manifest ".repeat(100);
    let config = br#"{"x":1}"#;
    let l = s.push_blob("svc", &layer).await;
    let c = s.push_blob("svc", config).await;
    let m = image_manifest(&c, config.len(), &[(l.clone(), layer.len())]);

    // Condemned (unreferenced), then referenced by a manifest push: revived, never deleted.
    s.registry.gc().gc(&berth_service::Caller::operator(), GcOptions::default()).await.unwrap();
    assert!(s.meta.gc_counts().await.unwrap().contains(&("condemned".to_string(), 2)));
    assert_eq!(s.put_manifest("svc", "v1", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    let (deleted, _) = gc_twice(&s, now_opts()).await;
    assert_eq!(deleted, 0);
    assert_eq!(blob_status(&s, "svc", &l).await, StatusCode::OK);

    // A blob the collection is deleting right now counts as missing for a manifest push, and
    // storing it again waits until the deletion is done, then stores it anew.
    let layer2 = b"second layer ".repeat(100);
    let l2 = s.push_blob("svc", &layer2).await;
    s.meta.gc_mark().await.unwrap();
    let doomed = s.meta.gc_sweep(berth_meta::now_ms() + 1000, None, 100, false).await.unwrap();
    assert_eq!(doomed.blobs.iter().map(|b| b.0.clone()).collect::<Vec<_>>(), vec![l2.clone()]);
    let m2 = image_manifest(&c, config.len(), &[(l2.clone(), layer2.len())]);
    let r = s.put_manifest("svc", "v2", OCI_MANIFEST, &m2).await;
    let (status, code) = error_code(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
    let base = s.base.clone();
    let body = layer2.clone();
    let l2c = l2.clone();
    let reupload = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/v2/svc/blobs/uploads/?digest={l2c}"))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!reupload.is_finished(), "the upload waits while the blob is being deleted");
    let r = s.registry.gc().gc(&berth_service::Caller::operator(), now_opts()).await.unwrap();
    assert_eq!(r.deleted_blobs, 1);
    assert_eq!(reupload.await.unwrap(), StatusCode::CREATED);
    assert_eq!(s.put_manifest("svc", "v2", OCI_MANIFEST, &m2).await.status(), StatusCode::CREATED);
    let got = s.req(Method::GET, &format!("/v2/svc/blobs/{l2}")).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().to_vec(), layer2, "the new copy survived the collection");
    assert!(s.registry.fsck().fsck(&berth_service::Caller::operator(), |_| {}).await.unwrap().is_clean());
}
both!(pushes_revive_and_never_reference_deleted_blobs);

async fn abandoned_uploads_go(s: Server) {
    s.ecr_ok("CreateRepository", json!({"repositoryName": "up"})).await;
    let r = s.req(Method::POST, "/v2/up/blobs/uploads/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    let r = s.req(Method::PATCH, &loc).body(vec![7u8; 1000]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.registry.gc().gc(&berth_service::Caller::operator(), GcOptions::default()).await.unwrap();
    assert_eq!(r.uploads_removed, 0, "a fresh upload stays");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = s
        .registry
        .gc()
        .gc(&berth_service::Caller::operator(), GcOptions { upload_ttl: Duration::ZERO, ..GcOptions::default() })
        .await
        .unwrap();
    assert_eq!(r.uploads_removed, 1);
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
both!(abandoned_uploads_go);
