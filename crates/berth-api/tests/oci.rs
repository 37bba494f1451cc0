//! The OCI distribution spec's endpoints and error paths, against SQLite and PostgreSQL, and
//! (run by `tests/e2e/cluster.sh`) through the balancer of a three-node cluster.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn base_endpoint(s: Server) {
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0");
    let r = s.req(Method::GET, "/v2/nope/tags/other").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
everywhere!(base_endpoint);

async fn monolithic_upload_and_blob_reads(s: Server) {
    let data = b"hello blob".repeat(1000);
    let d = sha256(&data);
    let r = s.req(Method::POST, &format!("/v2/a/b/blobs/uploads/?digest={d}")).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/a/b/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);

    let r = s.req(Method::HEAD, &format!("/v2/a/b/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    assert_eq!(header(&r, "docker-content-digest"), d);
    let r = s.req(Method::GET, &format!("/v2/a/b/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), data);

    // Ranges.
    let get_range =
        |range: &'static str| s.req(Method::GET, &format!("/v2/a/b/blobs/{d}")).header("range", range).send();
    let r = get_range("bytes=0-4").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), format!("bytes 0-4/{}", data.len()));
    assert_eq!(r.bytes().await.unwrap(), &data[..5]);
    let r = get_range("bytes=-3").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), &data[data.len() - 3..]);
    let r = get_range("bytes=9995-").await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), &data[9995..]);
    for bad in ["bytes=10000-", "bytes=5-2", "bytes=abc", "pages=1-2", "bytes=0-1,4-5"] {
        let r = get_range(bad).await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        assert_eq!(header(&r, "content-range"), format!("bytes */{}", data.len()), "{bad}");
    }

    // Another repository cannot read it, and it is unknown there.
    let r = s.req(Method::HEAD, &format!("/v2/other/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.push_blob("other", b"x").await;
    let r = s.req(Method::GET, &format!("/v2/other/blobs/{d}")).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));

    // Wrong digest: refused, nothing stored.
    let wrong = sha256(b"something else");
    let r =
        s.req(Method::POST, &format!("/v2/a/b/blobs/uploads/?digest={wrong}")).body(data.clone()).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    let r = s.req(Method::HEAD, &format!("/v2/a/b/blobs/{wrong}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Delete.
    let r = s.req(Method::DELETE, &format!("/v2/a/b/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.req(Method::GET, &format!("/v2/a/b/blobs/{d}")).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
    let r = s.req(Method::DELETE, &format!("/v2/a/b/blobs/{d}")).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
}
everywhere!(monolithic_upload_and_blob_reads);

async fn post_then_put(s: Server) {
    let data = b"post then put".to_vec();
    let d = sha256(&data);
    let r = s.req(Method::POST, "/v2/pp/blobs/uploads/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    assert!(loc.starts_with("/v2/pp/blobs/uploads/"), "{loc}");
    assert_eq!(header(&r, "range"), "0-0");
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    let r = s.req(Method::PUT, &format!("{loc}?digest={d}")).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), d);
    let r = s.req(Method::GET, &format!("/v2/pp/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), data);
    // The session is gone once completed.
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
    // PUT without a digest.
    let r = s.req(Method::POST, "/v2/pp/blobs/uploads/").send().await.unwrap();
    let loc = header(&r, "location");
    let r = s.req(Method::PUT, &loc).body("x").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    // An empty blob is a blob.
    let empty = sha256(b"");
    let r = s.req(Method::PUT, &format!("{loc}?digest={empty}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
everywhere!(post_then_put);

async fn streamed_and_chunked_patches(s: Server) {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = sha256(&data);

    // Streamed: PATCH without Content-Range, as docker does, in two requests.
    let r = s.req(Method::POST, "/v2/up/blobs/uploads/").send().await.unwrap();
    let loc = header(&r, "location");
    let r = s.req(Method::PATCH, &loc).body(data[..100_000].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-99999");
    let loc = header(&r, "location");
    let r = s.req(Method::PATCH, &loc).body(data[100_000..].to_vec()).send().await.unwrap();
    assert_eq!(header(&r, "range"), "0-299999");
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-299999");
    assert_eq!(header(&r, "location"), loc);
    let r = s.req(Method::PUT, &format!("{loc}?digest={d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Chunked with Content-Range; out-of-order and repeated chunks get 416 with the current Range.
    let r = s.req(Method::POST, "/v2/up/blobs/uploads/").send().await.unwrap();
    let loc = header(&r, "location");
    let chunk = |start: usize, end: usize| {
        s.req(Method::PATCH, &loc)
            .header("content-range", format!("{start}-{}", end - 1))
            .header("content-type", "application/octet-stream")
            .body(data[start..end].to_vec())
            .send()
    };
    assert_eq!(chunk(0, 1000).await.unwrap().status(), StatusCode::ACCEPTED);
    let r = chunk(2000, 3000).await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), "0-999");
    assert_eq!(header(&r, "location"), loc);
    let r = chunk(0, 1000).await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "a repeated chunk");
    assert_eq!(chunk(1000, 200_000).await.unwrap().status(), StatusCode::ACCEPTED);
    // Content-Range that disagrees with Content-Length.
    let r =
        s.req(Method::PATCH, &loc).header("content-range", "200000-200009").body(vec![0u8; 5]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The last chunk comes with the PUT.
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", "200000-299999")
        .body(data[200_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.req(Method::GET, &format!("/v2/up/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), data);

    // Cancel.
    let r = s.req(Method::POST, "/v2/up/blobs/uploads/").send().await.unwrap();
    let loc = header(&r, "location");
    assert_eq!(s.req(Method::DELETE, &loc).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
    let r = s.req(Method::PATCH, &loc).body("x").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
    // Upload ids are not paths, and belong to their repository.
    let r = s.req(Method::POST, "/v2/up/blobs/uploads/").send().await.unwrap();
    let id = header(&r, "docker-upload-uuid");
    let r = s.req(Method::GET, &format!("/v2/other/blobs/uploads/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s.req(Method::GET, "/v2/up/blobs/uploads/..%2f..%2fberth.db").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
everywhere!(streamed_and_chunked_patches);

async fn cross_repository_mount(s: Server) {
    let d = s.push_blob("src", b"shared layer").await;
    let r = s.req(Method::POST, &format!("/v2/dst/blobs/uploads/?mount={d}&from=src")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/dst/blobs/{d}"));
    let r = s.req(Method::GET, &format!("/v2/dst/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), "shared layer");
    // Not mountable (absent in the source, unknown source, no source): a normal upload session.
    let other = sha256(b"not there");
    for q in [format!("mount={other}&from=src"), format!("mount={d}&from=nosuch"), format!("mount={d}")] {
        let r = s.req(Method::POST, &format!("/v2/dst2/blobs/uploads/?{q}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{q}");
        assert!(header(&r, "location").starts_with("/v2/dst2/blobs/uploads/"));
    }
    let r = s.req(Method::POST, "/v2/dst/blobs/uploads/?mount=sha256:nope&from=src").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
}
everywhere!(cross_repository_mount);

async fn image_manifests(s: Server) {
    let (d, m) = s.push_image("img", "v1", "one").await;
    for reference in ["v1", d.as_str()] {
        let r = s.req(Method::GET, &format!("/v2/img/manifests/{reference}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(r.bytes().await.unwrap(), m, "byte for byte");
        let r = s.req(Method::HEAD, &format!("/v2/img/manifests/{reference}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), m.len().to_string());
    }
    // Pushed by digest: no tag, still retrievable; formatting (whitespace) is kept.
    let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&m).unwrap()).unwrap();
    let pd = sha256(&pretty);
    let r = s.put_manifest("img", &pd, OCI_MANIFEST, &pretty).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/img/manifests/{pd}"));
    let r = s.req(Method::GET, &format!("/v2/img/manifests/{pd}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), pretty);

    // Errors.
    let missing = image_manifest(&sha256(b"no config"), 9, &[]);
    let r = s.put_manifest("img", "bad", OCI_MANIFEST, &missing).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into()));
    let r = s.put_manifest("img", "bad", OCI_MANIFEST, b"{not json").await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into()));
    let r = s
        .put_manifest(
            "img",
            "bad",
            OCI_MANIFEST,
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
        )
        .await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into()));
    let r = s.put_manifest("img", &sha256(b"other"), OCI_MANIFEST, &m).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    let r = s.put_manifest("img", "sha256:abc", OCI_MANIFEST, &m).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    let r = s.put_manifest("img", "bad", OCI_INDEX, &m).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into()), "Content-Type vs mediaType");
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = s.put_manifest("img", "big", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = s.req(Method::GET, "/v2/img/manifests/nosuch").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()));
    let r = s.req(Method::GET, "/v2/norepo/manifests/v1").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "NAME_UNKNOWN".into()));
    // A reference that cannot exist is not found on GET and HEAD (as the conformance suite and
    // Distribution have it); a PUT to it is still refused as invalid.
    for bad in ["-bad-tag", ".INVALID_MANIFEST_NAME", "sha256:nothex"] {
        let r = s.req(Method::GET, &format!("/v2/img/manifests/{bad}")).send().await.unwrap();
        assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()), "GET {bad}");
        let r = s.req(Method::HEAD, &format!("/v2/img/manifests/{bad}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {bad}");
    }
    let r = s.put_manifest("img", ".INVALID_MANIFEST_NAME", OCI_MANIFEST, &m).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "TAG_INVALID".into()));
    // Nothing of the failed pushes was tagged.
    let tags: Value = s.req(Method::GET, "/v2/img/tags/list").send().await.unwrap().json().await.unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));

    // Moving a tag; deleting a tag keeps the manifest; deleting by digest removes its tags.
    let (d2, _) = s.push_image("img", "v1", "two").await;
    let r = s.req(Method::HEAD, "/v2/img/manifests/v1").send().await.unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d2);
    s.put_manifest("img", "v2", OCI_MANIFEST, &m).await;
    assert_eq!(s.req(Method::DELETE, "/v2/img/manifests/v2").send().await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(s.req(Method::GET, &format!("/v2/img/manifests/{d}")).send().await.unwrap().status(), StatusCode::OK);
    s.put_manifest("img", "v3", OCI_MANIFEST, &m).await;
    assert_eq!(
        s.req(Method::DELETE, &format!("/v2/img/manifests/{d}")).send().await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let r = s.req(Method::GET, "/v2/img/manifests/v3").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()));
    let r = s.req(Method::DELETE, &format!("/v2/img/manifests/{d}")).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()));
    // A blob a manifest uses cannot be deleted from under it.
    let cfg = serde_json::from_slice::<Value>(&m).unwrap()["config"]["digest"].as_str().unwrap().to_string();
    let _ = s.put_manifest("img", "keep", OCI_MANIFEST, &m).await;
    let r = s.req(Method::DELETE, &format!("/v2/img/blobs/{cfg}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
}
everywhere!(image_manifests);

async fn indexes_docker_types_and_negotiation(s: Server) {
    let (amd, am) = s.push_image("multi", "amd", "amd64").await;
    let (arm, arm_m) = s.push_image("multi", "arm", "arm64").await;
    let desc = |d: &str, n: usize, arch: &str| json!({"mediaType": OCI_MANIFEST, "digest": d, "size": n, "platform": {"os": "linux", "architecture": arch}});
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc(&amd, am.len(), "amd64"), desc(&arm, arm_m.len(), "arm64")]})).unwrap();
    let r = s.put_manifest("multi", "latest", OCI_INDEX, &index).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = sha256(&index);
    // Nested index.
    let outer = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_INDEX, "digest": id, "size": index.len()}]})).unwrap();
    assert_eq!(s.put_manifest("multi", "nested", OCI_INDEX, &outer).await.status(), StatusCode::CREATED);
    // A sparse index: one platform pushed, the other absent (a mirror of one platform). Accepted
    // and served; the absent child is simply not found; fsck notes it without calling it damage.
    let absent = sha256(b"never pushed");
    let sparse = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc(&amd, am.len(), "amd64"), {"mediaType": OCI_MANIFEST, "digest": absent, "size": 1, "platform": {"os": "linux", "architecture": "s390x"}}]})).unwrap();
    let r = s.put_manifest("multi", "sparse", OCI_INDEX, &sparse).await;
    assert_eq!(r.status(), StatusCode::CREATED, "a sparse index is accepted");
    let r = s.req(Method::GET, "/v2/multi/manifests/sparse").header("accept", OCI_INDEX).send().await.unwrap();
    assert_eq!((r.status(), r.bytes().await.unwrap().to_vec()), (StatusCode::OK, sparse.clone()));
    let r = s.req(Method::GET, &format!("/v2/multi/manifests/{absent}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let report = s.registry.fsck().fsck(&berth_service::Caller::operator(), |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.sparse_children.iter().any(|n| n.contains(&absent)), "{:?}", report.sparse_children);
    // Its present child is still protected from deletion; an image manifest without its layers is
    // still refused.
    let r = s.req(Method::DELETE, &format!("/v2/multi/manifests/{amd}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let mut lacking: Value = serde_json::from_slice(&am).unwrap();
    lacking["layers"][0]["digest"] = json!(sha256(b"no such layer"));
    let r = s.put_manifest("multi", "lacking", OCI_MANIFEST, &serde_json::to_vec(&lacking).unwrap()).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into()));
    // The empty index.
    let empty = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    assert_eq!(s.put_manifest("multi", "empty", OCI_INDEX, empty).await.status(), StatusCode::CREATED);
    // A child cannot be deleted while an index lists it.
    let r = s.req(Method::DELETE, &format!("/v2/multi/manifests/{amd}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Accept negotiation: an index is not served to a client that only takes image manifests.
    let r = s.req(Method::GET, "/v2/multi/manifests/latest").header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .req(Method::GET, "/v2/multi/manifests/latest")
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX};q=0.9"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let r = s.req(Method::GET, "/v2/multi/manifests/latest").header("accept", "*/*").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Docker schema 2 manifest and manifest list.
    let cfg = s.push_blob("dock", b"{}").await;
    let layer = s.push_blob("dock", b"layer").await;
    let dm = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 2},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 5}]}))
    .unwrap();
    assert_eq!(s.put_manifest("dock", "v1", DOCKER_MANIFEST, &dm).await.status(), StatusCode::CREATED);
    let dl = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": sha256(&dm), "size": dm.len(), "platform": {"os": "linux", "architecture": "amd64"}}]})).unwrap();
    assert_eq!(s.put_manifest("dock", "list", DOCKER_LIST, &dl).await.status(), StatusCode::CREATED);
    let r = s.req(Method::GET, "/v2/dock/manifests/list").header("accept", DOCKER_LIST).send().await.unwrap();
    assert_eq!(header(&r, "content-type"), DOCKER_LIST);
    assert_eq!(r.bytes().await.unwrap(), dl);
    // Docker schema 1 is refused with a clear error.
    let r = s
        .put_manifest(
            "dock",
            "old",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            br#"{"schemaVersion":1}"#,
        )
        .await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into()));
}
everywhere!(indexes_docker_types_and_negotiation);

async fn artifacts_and_referrers(s: Server) {
    let (subject, sm) = s.push_image("art", "app", "subject").await;
    let empty = s.push_blob("art", b"{}").await;
    let sig = s.push_blob("art", b"signature").await;
    let referrer = |artifact_type: &str, n: u32| {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sig, "size": 9}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": sm.len()},
            "annotations": {"n": n.to_string()}}))
        .unwrap()
    };
    let a = referrer("application/vnd.example.sig", 1);
    let r = s.put_manifest("art", &sha256(&a), OCI_MANIFEST, &a).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject"), subject);
    let b = referrer("application/vnd.example.sbom", 2);
    s.put_manifest("art", &sha256(&b), OCI_MANIFEST, &b).await;
    // An artifact with no layers and a custom config media type.
    let cfg = s.push_blob("art", b"{\"custom\":true}").await;
    let c = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.config+json", "digest": cfg, "size": 15}, "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": sm.len()}}))
    .unwrap();
    assert_eq!(s.put_manifest("art", "custom", OCI_MANIFEST, &c).await.status(), StatusCode::CREATED);

    let r = s.req(Method::GET, &format!("/v2/art/referrers/{subject}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(header(&r, "oci-filters-applied"), "");
    let idx: Value = r.json().await.unwrap();
    let list = idx["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    let first = list.iter().find(|m| m["digest"] == json!(sha256(&a))).unwrap();
    assert_eq!(first["artifactType"], "application/vnd.example.sig");
    assert_eq!(first["size"], json!(a.len()));
    assert_eq!(first["annotations"]["n"], "1");
    let third = list.iter().find(|m| m["digest"] == json!(sha256(&c))).unwrap();
    assert_eq!(third["artifactType"], "application/vnd.example.config+json", "falls back to the config media type");

    let r = s
        .req(Method::GET, &format!("/v2/art/referrers/{subject}?artifactType=application/vnd.example.sbom"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let idx: Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(idx["manifests"][0]["digest"], json!(sha256(&b)));

    // Unknown subject, unknown repository: an empty index.
    for path in [format!("/v2/art/referrers/{}", sha256(b"none")), format!("/v2/nosuch/referrers/{subject}")] {
        let r = s.req(Method::GET, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let idx: Value = r.json().await.unwrap();
        assert_eq!(idx["manifests"], json!([]));
        assert_eq!(idx["schemaVersion"], 2);
    }
    let r = s.req(Method::GET, "/v2/art/referrers/sha256:zzz").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    // A referrer whose subject does not exist (yet) is accepted.
    let mut orphan: Value = serde_json::from_slice(&a).unwrap();
    orphan["subject"]["digest"] = json!(sha256(b"future"));
    let orphan = serde_json::to_vec(&orphan).unwrap();
    assert_eq!(s.put_manifest("art", "orphan", OCI_MANIFEST, &orphan).await.status(), StatusCode::CREATED);
}
everywhere!(artifacts_and_referrers);

async fn sha512_content(s: Server) {
    let data = b"sha512 content".to_vec();
    let d = berth_crypto::digest_of(berth_core::Algorithm::Sha512, &data).to_string();
    let r = s.req(Method::POST, &format!("/v2/s5/blobs/uploads/?digest={d}")).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.req(Method::GET, &format!("/v2/s5/blobs/{d}")).send().await.unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap(), data);
    // A manifest addressed by its sha512 digest.
    let m = image_manifest(&d, data.len(), &[]);
    let md = berth_crypto::digest_of(berth_core::Algorithm::Sha512, &m).to_string();
    let r = s.put_manifest("s5", &md, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), md);
    let r = s.req(Method::GET, &format!("/v2/s5/manifests/{md}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), m);
}
everywhere!(sha512_content);

async fn tags_and_catalog_pagination(s: Server) {
    let (_, m) = s.push_image("pages", "t00", "x").await;
    for i in 1..25 {
        s.put_manifest("pages", &format!("t{i:02}"), OCI_MANIFEST, &m).await;
    }
    let r = s.req(Method::GET, "/v2/pages/tags/list?n=10").send().await.unwrap();
    assert_eq!(header(&r, "link"), "</v2/pages/tags/list?n=10&last=t09>; rel=\"next\"");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "pages");
    assert_eq!(v["tags"].as_array().unwrap().len(), 10);
    assert_eq!(v["tags"][0], "t00");
    let r = s.req(Method::GET, "/v2/pages/tags/list?n=10&last=t19").send().await.unwrap();
    assert_eq!(header(&r, "link"), "", "last page has no next link");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["t20", "t21", "t22", "t23", "t24"]));
    let v: Value = s.req(Method::GET, "/v2/pages/tags/list").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["tags"].as_array().unwrap().len(), 25);
    let v: Value = s.req(Method::GET, "/v2/pages/tags/list?n=0").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["tags"], json!([]));
    let r = s.req(Method::GET, "/v2/pages/tags/list?n=-1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s.req(Method::GET, "/v2/nosuch/tags/list").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "NAME_UNKNOWN".into()));

    for name in ["b", "a/x", "c"] {
        s.push_blob(name, b"1").await;
    }
    let r = s.req(Method::GET, "/v2/_catalog?n=1").send().await.unwrap();
    assert_eq!(header(&r, "link"), "</v2/_catalog?n=1&last=a%2Fx>; rel=\"next\"");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["a/x"]));
    let v: Value = s.req(Method::GET, "/v2/_catalog?n=2&last=a/x").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["repositories"], json!(["b", "c"]));
    let v: Value = s.req(Method::GET, "/v2/_catalog").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["repositories"], json!(["a/x", "b", "c", "pages"]));
}
everywhere!(tags_and_catalog_pagination);

async fn names_are_validated(s: Server) {
    let long = "a".repeat(256);
    for path in [
        "/v2/Upper/tags/list".to_string(),
        "/v2/a//b/tags/list".to_string(),
        "/v2/a%2F..%2Fb/tags/list".to_string(),
        "/v2/a%00b/tags/list".to_string(),
        "/v2/-a/tags/list".to_string(),
        format!("/v2/{long}/tags/list"),
    ] {
        let r = s.req(Method::GET, &path).send().await.unwrap();
        assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "NAME_INVALID".into()), "{path}");
    }
    // Dot segments, sent as is (an HTTP client library would resolve them first).
    for path in ["/v2/a/../b/tags/list", "/v2/../../etc/blobs/uploads/", "/v2/./a/manifests/v1"] {
        let (status, body) =
            raw_request(&s.base, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("NAME_INVALID"), "{path}: {body}");
    }
    let r = s.req(Method::POST, "/v2/UP/blobs/uploads/").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "NAME_INVALID".into()));
    let r = s.req(Method::PUT, "/v2/Bad/manifests/v1").body("{}").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "NAME_INVALID".into()));
    // None of it became a repository.
    let v: Value = s.req(Method::GET, "/v2/_catalog").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["repositories"], json!([]));
}
everywhere!(names_are_validated);

/// Malformed requests of every kind get a 4xx with an OCI error body, never a 5xx.
async fn client_mistakes_are_never_server_errors(s: Server) {
    let d = s.push_blob("ok", b"data").await;
    type Case<'a> = (Method, String, Vec<(&'a str, &'a str)>, &'a [u8]);
    let cases: Vec<Case> = vec![
        (Method::GET, "/v2/ok/blobs/sha256:".into(), vec![], b""),
        (Method::GET, "/v2/ok/blobs/md5:abc".into(), vec![], b""),
        (Method::GET, "/v2/ok/blobs/not-a-digest".into(), vec![], b""),
        (Method::GET, format!("/v2/ok/blobs/{d}"), vec![("range", "bytes=99999999999999999999-")], b""),
        (Method::PUT, "/v2/ok/blobs/uploads/".into(), vec![], b""),
        (Method::PATCH, "/v2/ok/blobs/uploads/zzz".into(), vec![], b"x"),
        (Method::PUT, "/v2/ok/blobs/uploads/zzz?digest=sha256:00".into(), vec![], b"x"),
        (Method::POST, "/v2/ok/blobs/uploads/?digest=sha256:00".into(), vec![], b"x"),
        (Method::POST, "/v2/ok/blobs/uploads/?digest=sha1:00".into(), vec![], b"x"),
        (Method::PUT, "/v2/ok/manifests/v1".into(), vec![("content-type", "text/plain")], b"{\"schemaVersion\":2}"),
        (Method::PUT, "/v2/ok/manifests/v1".into(), vec![], &[0xff, 0xfe, 0x00]),
        (Method::PUT, "/v2/ok/manifests/v1".into(), vec![], b"null"),
        (Method::PUT, "/v2/ok/manifests/v1".into(), vec![], b"{\"schemaVersion\":2,\"config\":7,\"layers\":[]}"),
        (Method::PUT, "/v2/ok/manifests/v1".into(), vec![], b"{\"schemaVersion\":2,\"manifests\":[{\"digest\":1}]}"),
        (Method::PUT, "/v2/ok/manifests/a:b".into(), vec![], b"{}"),
        (Method::DELETE, "/v2/ok/manifests/sha256:12".into(), vec![], b""),
        (Method::GET, "/v2/ok/tags/list?n=abc".into(), vec![], b""),
        (Method::GET, "/v2/_catalog?n=1e9".into(), vec![], b""),
        (Method::POST, "/v2/ok/manifests/v1".into(), vec![], b""),
        (Method::GET, "/v2/ok/referrers/sha256:00".into(), vec![], b""),
    ];
    for (method, path, headers, body) in cases {
        let mut req = s.req(method.clone(), &path).body(body.to_vec());
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        assert!(status.is_client_error(), "{method} {path}: {status}");
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(body["errors"][0]["code"].is_string(), "{method} {path}: no OCI error body");
    }
    // Nothing above damaged what was stored.
    let r = s.req(Method::GET, &format!("/v2/ok/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), "data");
}
everywhere!(client_mistakes_are_never_server_errors);

async fn uploads_survive_a_restart(s: Server) {
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let d = sha256(&data);
    let r = s.req(Method::POST, "/v2/resume/blobs/uploads/").send().await.unwrap();
    let loc = header(&r, "location");
    let r = s.req(Method::PATCH, &loc).body(data[..1_234_567].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let s = s.restart().await;
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-1234566");
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", format!("1234567-{}", data.len() - 1))
        .body(data[1_234_567..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.req(Method::GET, &format!("/v2/resume/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), data);
}
everywhere!(uploads_survive_a_restart);
