//! The ECR API's operations, success and error paths, against SQLite and PostgreSQL; and the
//! authentication of `/v2/` with the tokens it issues.

mod common;

use base64::Engine;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn repositories(s: Server) {
    let r = s
        .ecr_ok(
            "CreateRepository",
            json!({
                "repositoryName": "my-app",
                "imageScanningConfiguration": {"scanOnPush": true},
                "encryptionConfiguration": {"encryptionType": "AES256"},
                "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
                "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}],
                "tags": [{"Key": "team", "Value": "core"}],
            }),
        )
        .await;
    let repo = &r["repository"];
    assert_eq!(repo["repositoryArn"], "arn:aws:ecr:us-east-1:000000000000:repository/my-app");
    assert_eq!(repo["registryId"], "000000000000");
    assert_eq!(repo["repositoryUri"], format!("{}/my-app", s.base.trim_start_matches("http://")));
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true);
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE_WITH_EXCLUSION");
    assert_eq!(repo["imageTagMutabilityExclusionFilters"][0]["filter"], "latest");
    assert!(repo["createdAt"].as_f64().unwrap() > 1.7e9);

    let (t, m) = s.ecr_err("CreateRepository", json!({"repositoryName": "my-app"})).await;
    assert_eq!(t, "RepositoryAlreadyExistsException");
    assert!(m.contains("'my-app'"), "{m}");
    for bad in [
        json!({"repositoryName": "A"}),
        json!({"repositoryName": "Bad_Name"}),
        json!({"repositoryName": "ok-name", "imageTagMutability": "SOMETIMES"}),
        json!({"repositoryName": "ok-name", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"}),
        json!({"repositoryName": "ok-name", "encryptionConfiguration": {"encryptionType": "ROT13"}}),
        json!({"repositoryName": "ok-name", "registryId": "999999999999"}),
        json!({}),
    ] {
        assert_eq!(s.ecr_err("CreateRepository", bad.clone()).await.0, "InvalidParameterException", "{bad}");
    }
    let (t, _) =
        s.ecr_err("CreateRepository", json!({"repositoryName": "x1", "tags": [{"Key": "aws:x", "Value": ""}]})).await;
    assert_eq!(t, "InvalidTagParameterException");

    // Pagination over three repositories, one at a time.
    for n in ["a1", "b1"] {
        s.ecr_ok("CreateRepository", json!({"repositoryName": n})).await;
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({"maxResults": 1});
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let page = s.ecr_ok("DescribeRepositories", req).await;
        names.extend(
            page["repositories"].as_array().unwrap().iter().map(|r| r["repositoryName"].as_str().unwrap().to_string()),
        );
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["a1", "b1", "my-app"]);
    assert_eq!(s.ecr_err("DescribeRepositories", json!({"nextToken": "!!"})).await.0, "InvalidParameterException");
    assert_eq!(s.ecr_err("DescribeRepositories", json!({"maxResults": 0})).await.0, "InvalidParameterException");
    let (t, m) = s.ecr_err("DescribeRepositories", json!({"repositoryNames": ["a1", "nope"]})).await;
    assert_eq!(t, "RepositoryNotFoundException");
    assert!(m.contains("'nope'") && m.contains("000000000000"), "{m}");

    let r = s.ecr_ok("PutImageTagMutability", json!({"repositoryName": "a1", "imageTagMutability": "IMMUTABLE"})).await;
    assert_eq!(r["imageTagMutability"], "IMMUTABLE");
    let r = s
        .ecr_ok(
            "PutImageScanningConfiguration",
            json!({"repositoryName": "a1", "imageScanningConfiguration": {"scanOnPush": true}}),
        )
        .await;
    assert_eq!(r["imageScanningConfiguration"]["scanOnPush"], true);
    let d = s.ecr_ok("DescribeRepositories", json!({"repositoryNames": ["a1"]})).await;
    assert_eq!(d["repositories"][0]["imageTagMutability"], "IMMUTABLE");
    assert_eq!(d["repositories"][0]["imageScanningConfiguration"]["scanOnPush"], true);

    // Resource tags.
    let arn = "arn:aws:ecr:us-east-1:000000000000:repository/my-app";
    let t = s.ecr_ok("ListTagsForResource", json!({"resourceArn": arn})).await;
    assert_eq!(t["tags"], json!([{"Key": "team", "Value": "core"}]));
    s.ecr_ok("TagResource", json!({"resourceArn": arn, "tags": [{"Key": "env", "Value": "prod"}]})).await;
    s.ecr_ok("UntagResource", json!({"resourceArn": arn, "tagKeys": ["team"]})).await;
    let t = s.ecr_ok("ListTagsForResource", json!({"resourceArn": arn})).await;
    assert_eq!(t["tags"], json!([{"Key": "env", "Value": "prod"}]));
    let many: Vec<Value> = (0..50).map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect();
    assert_eq!(s.ecr_err("TagResource", json!({"resourceArn": arn, "tags": many})).await.0, "TooManyTagsException");
    let t = s.ecr_ok("ListTagsForResource", json!({"resourceArn": arn})).await;
    assert_eq!(t["tags"].as_array().unwrap().len(), 1, "a refused TagResource changes nothing");
    assert_eq!(
        s.ecr_err(
            "ListTagsForResource",
            json!({"resourceArn": "arn:aws:ecr:eu-west-1:000000000000:repository/my-app"})
        )
        .await
        .0,
        "InvalidParameterException"
    );
    assert_eq!(
        s.ecr_err(
            "TagResource",
            json!({"resourceArn": "arn:aws:ecr:us-east-1:000000000000:repository/none", "tags": []})
        )
        .await
        .0,
        "RepositoryNotFoundException"
    );

    // Delete: refused while images exist, unless forced.
    s.push_image("a1", "v1", "a1").await;
    assert_eq!(s.ecr_err("DeleteRepository", json!({"repositoryName": "a1"})).await.0, "RepositoryNotEmptyException");
    let r = s.ecr_ok("DeleteRepository", json!({"repositoryName": "a1", "force": true})).await;
    assert_eq!(r["repository"]["repositoryName"], "a1");
    assert_eq!(s.ecr_err("DeleteRepository", json!({"repositoryName": "a1"})).await.0, "RepositoryNotFoundException");
    let r = s.req(Method::GET, "/v2/a1/tags/list").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.ecr_ok("DeleteRepository", json!({"repositoryName": "b1"})).await;
    // Pushing again creates it anew (the ROOT template), empty and mutable.
    s.push_image("a1", "v1", "again").await;
    let d = s.ecr_ok("DescribeRepositories", json!({"repositoryNames": ["a1"]})).await;
    assert_eq!(d["repositories"][0]["imageTagMutability"], "MUTABLE");
}
both!(repositories);

async fn images(s: Server) {
    let (d1, m1) = s.push_image("app", "v1", "one").await;
    s.put_manifest("app", "latest", OCI_MANIFEST, &m1).await;
    let (d2, _) = s.push_image("app", "v2", "two").await;
    // v2 moves to a third image: the second is left untagged.
    let (d3, _) = s.push_image("app", "v2", "three").await;

    let ids = s.ecr_ok("ListImages", json!({"repositoryName": "app"})).await;
    let mut pairs: Vec<(String, String)> = ids["imageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["imageDigest"].as_str().unwrap().to_string(), i["imageTag"].as_str().unwrap_or("").to_string()))
        .collect();
    pairs.sort();
    let mut want = vec![
        (d1.clone(), "latest".to_string()),
        (d1.clone(), "v1".into()),
        (d2.clone(), "".into()),
        (d3.clone(), "v2".into()),
    ];
    want.sort();
    assert_eq!(pairs, want);
    let untagged = s.ecr_ok("ListImages", json!({"repositoryName": "app", "filter": {"tagStatus": "UNTAGGED"}})).await;
    assert_eq!(untagged["imageIds"], json!([{"imageDigest": d2}]));
    let tagged = s.ecr_ok("ListImages", json!({"repositoryName": "app", "filter": {"tagStatus": "TAGGED"}})).await;
    assert_eq!(tagged["imageIds"].as_array().unwrap().len(), 3);
    // Paging by one visits every pair once.
    let mut seen = 0;
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({"repositoryName": "app", "maxResults": 1});
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let page = s.ecr_ok("ListImages", req).await;
        seen += page["imageIds"].as_array().unwrap().len();
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, 4);
    assert_eq!(
        s.ecr_err("ListImages", json!({"repositoryName": "app", "filter": {"tagStatus": "SOME"}})).await.0,
        "InvalidParameterException"
    );
    assert_eq!(s.ecr_err("ListImages", json!({"repositoryName": "none"})).await.0, "RepositoryNotFoundException");

    // DescribeImages: size is config + layer, as pushed.
    let config = r#"{"architecture":"amd64","os":"linux","seed":"one"}"#;
    let layer = "layer for one".repeat(100);
    let d = s.ecr_ok("DescribeImages", json!({"repositoryName": "app", "imageIds": [{"imageTag": "v1"}]})).await;
    let img = &d["imageDetails"][0];
    assert_eq!(img["imageDigest"], d1.as_str());
    assert_eq!(img["imageTags"], json!(["latest", "v1"]));
    assert_eq!(img["imageSizeInBytes"], (config.len() + layer.len()) as u64);
    assert_eq!(img["imageManifestMediaType"], OCI_MANIFEST);
    assert_eq!(img["artifactMediaType"], "application/vnd.oci.image.config.v1+json");
    assert!(img["imagePushedAt"].as_f64().unwrap() > 1.7e9);
    assert!(img.get("lastRecordedPullTime").is_none());
    let all = s.ecr_ok("DescribeImages", json!({"repositoryName": "app"})).await;
    assert_eq!(all["imageDetails"].as_array().unwrap().len(), 3);
    let (t, m) =
        s.ecr_err("DescribeImages", json!({"repositoryName": "app", "imageIds": [{"imageTag": "nope"}]})).await;
    assert_eq!(t, "ImageNotFoundException");
    assert!(m.contains("imageTag:'nope'"), "{m}");

    // BatchGetImage with every kind of failure.
    let r = s
        .ecr_ok(
            "BatchGetImage",
            json!({"repositoryName": "app", "imageIds": [
                {"imageTag": "v1"},
                {"imageTag": "missing"},
                {"imageDigest": "sha256:nothex"},
                {"imageTag": "v1", "imageDigest": d3},
                {},
            ]}),
        )
        .await;
    assert_eq!(r["images"].as_array().unwrap().len(), 1);
    assert_eq!(r["images"][0]["imageManifest"].as_str().unwrap().as_bytes(), m1.as_slice());
    assert_eq!(r["images"][0]["imageId"], json!({"imageDigest": d1, "imageTag": "v1"}));
    let codes: Vec<&str> =
        r["failures"].as_array().unwrap().iter().map(|f| f["failureCode"].as_str().unwrap()).collect();
    assert_eq!(codes, ["ImageNotFound", "InvalidImageDigest", "ImageTagDoesNotMatchDigest", "MissingDigestAndTag"]);
    let r = s
        .ecr_ok(
            "BatchGetImage",
            json!({"repositoryName": "app", "imageIds": [{"imageTag": "v1"}],
                   "acceptedMediaTypes": ["application/vnd.docker.distribution.manifest.v2+json"]}),
        )
        .await;
    assert_eq!(r["images"], json!([]));
    assert_eq!(r["failures"][0]["failureCode"], "ImageNotFound");
    // The pull above is recorded.
    let mut pulled = Value::Null;
    for _ in 0..100 {
        let d = s.ecr_ok("DescribeImages", json!({"repositoryName": "app", "imageIds": [{"imageDigest": d1}]})).await;
        pulled = d["imageDetails"][0]["lastRecordedPullTime"].clone();
        if !pulled.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(pulled.as_f64().is_some_and(|t| t > 1.7e9), "lastRecordedPullTime: {pulled}");

    // BatchDeleteImage: one tag of two leaves the image; its last tag takes the image along.
    let r = s.ecr_ok("BatchDeleteImage", json!({"repositoryName": "app", "imageIds": [{"imageTag": "latest"}]})).await;
    assert_eq!(r["imageIds"], json!([{"imageDigest": d1, "imageTag": "latest"}]));
    let r = s
        .ecr_ok(
            "BatchDeleteImage",
            json!({"repositoryName": "app", "imageIds": [{"imageTag": "v1"}, {"imageTag": "gone"}, {"imageDigest": d2}]}),
        )
        .await;
    assert_eq!(r["imageIds"], json!([{"imageDigest": d1, "imageTag": "v1"}, {"imageDigest": d2}]));
    assert_eq!(r["failures"][0]["failureCode"], "ImageNotFound");
    let r = s.req(Method::GET, &format!("/v2/app/manifests/{d1}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the untagged image went with its last tag");

    // An index child cannot be deleted from under the index.
    let child = s.ecr_ok("DescribeImages", json!({"repositoryName": "app", "imageIds": [{"imageDigest": d3}]})).await;
    let size = child["imageDetails"][0]["imageSizeInBytes"].as_u64().unwrap();
    let m3 = s.req(Method::GET, &format!("/v2/app/manifests/{d3}")).send().await.unwrap().bytes().await.unwrap();
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d3, "size": m3.len(), "platform": {"architecture": "amd64", "os": "linux"}}]}))
    .unwrap();
    assert_eq!(s.put_manifest("app", "multi", OCI_INDEX, &index).await.status(), StatusCode::CREATED);
    let idx = s.ecr_ok("DescribeImages", json!({"repositoryName": "app", "imageIds": [{"imageTag": "multi"}]})).await;
    assert_eq!(idx["imageDetails"][0]["imageSizeInBytes"], size, "an index is as large as its largest child");
    let r = s.ecr_ok("BatchDeleteImage", json!({"repositoryName": "app", "imageIds": [{"imageDigest": d3}]})).await;
    assert_eq!(r["failures"][0]["failureCode"], "ImageReferencedByManifestList");
    assert_eq!(r["imageIds"], json!([]));
    // Removing a child's only tag keeps the child: the index still lists it.
    let r = s.ecr_ok("BatchDeleteImage", json!({"repositoryName": "app", "imageIds": [{"imageTag": "v2"}]})).await;
    assert_eq!(r["imageIds"], json!([{"imageDigest": d3, "imageTag": "v2"}]));
    let r = s.req(Method::GET, &format!("/v2/app/manifests/{d3}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        s.ecr_err("BatchDeleteImage", json!({"repositoryName": "app", "imageIds": []})).await.0,
        "InvalidParameterException"
    );
}
both!(images);

async fn put_image_and_immutability(s: Server) {
    s.ecr_ok(
        "CreateRepository",
        json!({"repositoryName": "imm", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
               "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "dev-*"}]}),
    )
    .await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let c = s.push_blob("imm", config).await;
    let l = s.push_blob("imm", b"layer one").await;
    let m = image_manifest(&c, config.len(), &[(l.clone(), 9)]);
    let text = String::from_utf8(m.clone()).unwrap();
    let r = s.ecr_ok("PutImage", json!({"repositoryName": "imm", "imageManifest": text, "imageTag": "1.0"})).await;
    assert_eq!(r["image"]["imageId"], json!({"imageDigest": sha256(&m), "imageTag": "1.0"}));
    assert_eq!(r["image"]["imageManifestMediaType"], OCI_MANIFEST);
    // Pullable over OCI.
    let r = s.req(Method::GET, "/v2/imm/manifests/1.0").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), m);
    let (t, _) =
        s.ecr_err("PutImage", json!({"repositoryName": "imm", "imageManifest": text, "imageTag": "1.0"})).await;
    assert_eq!(t, "ImageAlreadyExistsException");
    // Another manifest under the same (immutable) tag: refused on both protocols.
    let l2 = s.push_blob("imm", b"layer two").await;
    let m2 = image_manifest(&c, config.len(), &[(l2, 9)]);
    let text2 = String::from_utf8(m2.clone()).unwrap();
    let (t, msg) =
        s.ecr_err("PutImage", json!({"repositoryName": "imm", "imageManifest": text2, "imageTag": "1.0"})).await;
    assert_eq!(t, "ImageTagAlreadyExistsException");
    assert!(msg.contains("'1.0'") && msg.contains("'imm'"), "{msg}");
    let r = s.put_manifest("imm", "1.0", OCI_MANIFEST, &m2).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "TAG_INVALID".into()));
    let r = s.req(Method::GET, "/v2/imm/manifests/1.0").send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), m, "the tag still names the first image");
    // Excluded tags stay mutable.
    s.ecr_ok("PutImage", json!({"repositoryName": "imm", "imageManifest": text, "imageTag": "dev-1"})).await;
    assert_eq!(s.put_manifest("imm", "dev-1", OCI_MANIFEST, &m2).await.status(), StatusCode::CREATED);
    // Re-pushing the same image to an immutable tag is fine (docker push retries do this).
    assert_eq!(s.put_manifest("imm", "1.0", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);

    let missing = image_manifest(&c, config.len(), &[(sha256(b"never pushed"), 12)]);
    let (t, _) = s
        .ecr_err(
            "PutImage",
            json!({"repositoryName": "imm", "imageManifest": String::from_utf8(missing).unwrap(), "imageTag": "x"}),
        )
        .await;
    assert_eq!(t, "LayersNotFoundException");
    let (t, _) = s
        .ecr_err("PutImage", json!({"repositoryName": "imm", "imageManifest": text2, "imageDigest": sha256(b"other")}))
        .await;
    assert_eq!(t, "ImageDigestDoesNotMatchException");
    let index = serde_json::to_string(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256(b"no such manifest"), "size": 3}]}))
    .unwrap();
    let (t, _) = s.ecr_err("PutImage", json!({"repositoryName": "imm", "imageManifest": index})).await;
    assert_eq!(t, "ReferencedImagesNotFoundException");
    let (t, _) = s.ecr_err("PutImage", json!({"repositoryName": "imm", "imageManifest": "{not json"})).await;
    assert_eq!(t, "InvalidParameterException");
    let (t, _) = s.ecr_err("PutImage", json!({"repositoryName": "nope", "imageManifest": text})).await;
    assert_eq!(t, "RepositoryNotFoundException");

    // Referrers.
    let referrer = serde_json::to_string(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x-sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": c, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": 9}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(&m), "size": m.len()},
    }))
    .unwrap();
    s.ecr_ok("PutImage", json!({"repositoryName": "imm", "imageManifest": referrer})).await;
    let r = s
        .ecr_ok("ListImageReferrers", json!({"repositoryName": "imm", "subjectId": {"imageDigest": sha256(&m)}}))
        .await;
    assert_eq!(r["referrers"].as_array().unwrap().len(), 1);
    assert_eq!(r["referrers"][0]["artifactType"], "application/x-sig");
    let r = s
        .ecr_ok(
            "ListImageReferrers",
            json!({"repositoryName": "imm", "subjectId": {"imageDigest": sha256(&m)}, "filter": {"artifactTypes": ["application/x-sbom"]}}),
        )
        .await;
    assert_eq!(r["referrers"], json!([]));
}
both!(put_image_and_immutability);

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

async fn layer_uploads(s: Server) {
    s.ecr_ok("CreateRepository", json!({"repositoryName": "layers"})).await;
    let data: Vec<u8> = (0..6 * 1024 * 1024 + 100).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&data);
    let five = 5 * 1024 * 1024;
    let up = s.ecr_ok("InitiateLayerUpload", json!({"repositoryName": "layers"})).await;
    let id = up["uploadId"].as_str().unwrap().to_string();
    assert!(up["partSize"].as_u64().unwrap() >= five as u64);
    let part = |first: usize, last: usize, blob: &[u8]| json!({"repositoryName": "layers", "uploadId": id, "partFirstByte": first, "partLastByte": last, "layerPartBlob": b64(blob)});
    let r = s.ecr_ok("UploadLayerPart", part(0, five - 1, &data[..five])).await;
    assert_eq!(r["lastByteReceived"], five - 1);
    // Out of order, and a length that disagrees with the range.
    let (status, v) = s.ecr("UploadLayerPart", part(five + 10, data.len() - 1, &data[five + 10..])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["__type"], "InvalidLayerPartException");
    assert_eq!(v["lastValidByteReceived"], five - 1);
    assert_eq!(
        s.ecr_err("UploadLayerPart", part(five, five + 5, &data[five..five + 3])).await.0,
        "InvalidLayerPartException"
    );
    s.ecr_ok("UploadLayerPart", part(five, data.len() - 1, &data[five..])).await;
    let (t, _) = s
        .ecr_err(
            "CompleteLayerUpload",
            json!({"repositoryName": "layers", "uploadId": id, "layerDigests": [sha256(b"x")]}),
        )
        .await;
    assert_eq!(t, "InvalidLayerException");

    // Again, properly.
    let id = s.ecr_ok("InitiateLayerUpload", json!({"repositoryName": "layers"})).await["uploadId"]
        .as_str()
        .unwrap()
        .to_string();
    let part = |first: usize, last: usize, blob: &[u8]| json!({"repositoryName": "layers", "uploadId": id, "partFirstByte": first, "partLastByte": last, "layerPartBlob": b64(blob)});
    s.ecr_ok("UploadLayerPart", part(0, five - 1, &data[..five])).await;
    s.ecr_ok("UploadLayerPart", part(five, data.len() - 1, &data[five..])).await;
    let r = s
        .ecr_ok("CompleteLayerUpload", json!({"repositoryName": "layers", "uploadId": id, "layerDigests": [digest]}))
        .await;
    assert_eq!(r["layerDigest"], digest.as_str());
    let r = s.req(Method::GET, &format!("/v2/layers/blobs/{digest}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), data);

    let r = s
        .ecr_ok(
            "BatchCheckLayerAvailability",
            json!({"repositoryName": "layers", "layerDigests": [digest, sha256(b"absent"), "nonsense"]}),
        )
        .await;
    assert_eq!(r["layers"][0]["layerAvailability"], "AVAILABLE");
    assert_eq!(r["layers"][0]["layerSize"], data.len());
    assert_eq!(r["layers"][1]["layerAvailability"], "UNAVAILABLE");
    assert_eq!(r["failures"][0]["failureCode"], "InvalidLayerDigest");

    // The same layer again; an empty upload; a small part that is not the last.
    let id2 = s.ecr_ok("InitiateLayerUpload", json!({"repositoryName": "layers"})).await["uploadId"]
        .as_str()
        .unwrap()
        .to_string();
    let (t, _) = s
        .ecr_err("CompleteLayerUpload", json!({"repositoryName": "layers", "uploadId": id2, "layerDigests": [digest]}))
        .await;
    assert_eq!(t, "EmptyUploadException");
    s.ecr_ok("UploadLayerPart", json!({"repositoryName": "layers", "uploadId": id2, "partFirstByte": 0, "partLastByte": 2, "layerPartBlob": b64(b"abc")})).await;
    s.ecr_ok("UploadLayerPart", json!({"repositoryName": "layers", "uploadId": id2, "partFirstByte": 3, "partLastByte": 5, "layerPartBlob": b64(b"def")})).await;
    let (t, _) = s
        .ecr_err(
            "CompleteLayerUpload",
            json!({"repositoryName": "layers", "uploadId": id2, "layerDigests": [sha256(b"abcdef")]}),
        )
        .await;
    assert_eq!(t, "LayerPartTooSmallException");
    let id3 = s.ecr_ok("InitiateLayerUpload", json!({"repositoryName": "layers"})).await["uploadId"]
        .as_str()
        .unwrap()
        .to_string();
    s.ecr_ok("UploadLayerPart", json!({"repositoryName": "layers", "uploadId": id3, "partFirstByte": 0, "partLastByte": 2, "layerPartBlob": b64(b"abc")})).await;
    let d_abc = sha256(b"abc");
    s.ecr_ok("CompleteLayerUpload", json!({"repositoryName": "layers", "uploadId": id3, "layerDigests": [d_abc]}))
        .await;
    let id4 = s.ecr_ok("InitiateLayerUpload", json!({"repositoryName": "layers"})).await["uploadId"]
        .as_str()
        .unwrap()
        .to_string();
    s.ecr_ok("UploadLayerPart", json!({"repositoryName": "layers", "uploadId": id4, "partFirstByte": 0, "partLastByte": 2, "layerPartBlob": b64(b"abc")})).await;
    let (t, _) = s
        .ecr_err("CompleteLayerUpload", json!({"repositoryName": "layers", "uploadId": id4, "layerDigests": [d_abc]}))
        .await;
    assert_eq!(t, "LayerAlreadyExistsException");
    let (t, _) = s
        .ecr_err("CompleteLayerUpload", json!({"repositoryName": "layers", "uploadId": "00000000-0000-4000-8000-000000000000", "layerDigests": [d_abc]}))
        .await;
    assert_eq!(t, "UploadNotFoundException");

    // Download URL: a plain GET, no credentials; useless once altered.
    let r = s.ecr_ok("GetDownloadUrlForLayer", json!({"repositoryName": "layers", "layerDigest": digest})).await;
    let url = r["downloadUrl"].as_str().unwrap().to_string();
    assert!(url.starts_with(&s.base), "{url}");
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap(), data);
    let r = reqwest::get(url.replace("signature=", "signature=00")).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = reqwest::get(url.replace("/layers/sha256", "/other/sha256")).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (t, _) =
        s.ecr_err("GetDownloadUrlForLayer", json!({"repositoryName": "layers", "layerDigest": sha256(b"no")})).await;
    assert_eq!(t, "LayersNotFoundException");
}
both!(layer_uploads);

async fn templates_and_create_on_push(s: Server) {
    let t = s.ecr_ok("DescribeRepositoryCreationTemplates", json!({})).await;
    assert_eq!(t["repositoryCreationTemplates"][0]["prefix"], "ROOT");
    let r = s
        .ecr_ok(
            "CreateRepositoryCreationTemplate",
            json!({"prefix": "prod", "appliedFor": ["CREATE_ON_PUSH"], "imageTagMutability": "IMMUTABLE",
                   "resourceTags": [{"Key": "env", "Value": "prod"}], "description": "production"}),
        )
        .await;
    assert_eq!(r["repositoryCreationTemplate"]["prefix"], "prod");
    let (t, _) = s
        .ecr_err("CreateRepositoryCreationTemplate", json!({"prefix": "prod", "appliedFor": ["CREATE_ON_PUSH"]}))
        .await;
    assert_eq!(t, "TemplateAlreadyExistsException");
    for bad in [
        json!({"prefix": "Bad", "appliedFor": ["CREATE_ON_PUSH"]}),
        json!({"prefix": "ok", "appliedFor": []}),
        json!({"prefix": "ok", "appliedFor": ["SOMETIMES"]}),
        json!({"prefix": "ok", "appliedFor": ["CREATE_ON_PUSH"], "lifecyclePolicy": "{nope"}),
    ] {
        assert_eq!(
            s.ecr_err("CreateRepositoryCreationTemplate", bad.clone()).await.0,
            "InvalidParameterException",
            "{bad}"
        );
    }
    // A push under prod/ gets the prod template; elsewhere, ROOT's.
    let (d, m) = s.push_image("prod/api", "1", "p").await;
    let repo = s.ecr_ok("DescribeRepositories", json!({"repositoryNames": ["prod/api"]})).await;
    assert_eq!(repo["repositories"][0]["imageTagMutability"], "IMMUTABLE");
    let tags = s
        .ecr_ok("ListTagsForResource", json!({"resourceArn": "arn:aws:ecr:us-east-1:000000000000:repository/prod/api"}))
        .await;
    assert_eq!(tags["tags"], json!([{"Key": "env", "Value": "prod"}]));
    let _ = (d, m);
    let r = s.ecr_ok("UpdateRepositoryCreationTemplate", json!({"prefix": "prod", "description": "changed"})).await;
    assert_eq!(r["repositoryCreationTemplate"]["description"], "changed");
    assert_eq!(r["repositoryCreationTemplate"]["imageTagMutability"], "IMMUTABLE", "untouched fields stay");
    assert_eq!(
        s.ecr_err("UpdateRepositoryCreationTemplate", json!({"prefix": "none"})).await.0,
        "TemplateNotFoundException"
    );

    // Without ROOT, pushes outside prod/ are refused with a hint.
    s.ecr_ok("DeleteRepositoryCreationTemplate", json!({"prefix": "ROOT"})).await;
    assert_eq!(
        s.ecr_err("DeleteRepositoryCreationTemplate", json!({"prefix": "ROOT"})).await.0,
        "TemplateNotFoundException"
    );
    let r = s.req(Method::POST, "/v2/elsewhere/blobs/uploads/").send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("create-repository"), "{body}");
    s.push_image("prod/web", "1", "w").await;
    let t = s.ecr_ok("DescribeRepositoryCreationTemplates", json!({"prefixes": ["prod"]})).await;
    assert_eq!(t["repositoryCreationTemplates"].as_array().unwrap().len(), 1);
}
both!(templates_and_create_on_push);

async fn registry_and_settings(s: Server) {
    let r = s.ecr_ok("DescribeRegistry", json!({})).await;
    assert_eq!(r["registryId"], "000000000000");
    assert_eq!(r["replicationConfiguration"]["rules"], json!([]));
    let r = s.ecr_ok("GetAccountSetting", json!({"name": "BLOB_MOUNTING"})).await;
    assert_eq!(r["value"], "ENABLED");
    assert_eq!(s.ecr_err("GetAccountSetting", json!({"name": "NOPE"})).await.0, "ValidationException");
    assert_eq!(
        s.ecr_err("PutAccountSetting", json!({"name": "BLOB_MOUNTING", "value": "MAYBE"})).await.0,
        "ValidationException"
    );
    // Mounting on, then off: the mount falls back to an upload session.
    let d = s.push_blob("src", b"shared layer").await;
    let r = s.req(Method::POST, &format!("/v2/dst/blobs/uploads/?mount={d}&from=src")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    s.ecr_ok("PutAccountSetting", json!({"name": "BLOB_MOUNTING", "value": "DISABLED"})).await;
    let r = s.req(Method::POST, &format!("/v2/dst2/blobs/uploads/?mount={d}&from=src")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(s.ecr_ok("GetAccountSetting", json!({"name": "BLOB_MOUNTING"})).await["value"], "DISABLED");
}
both!(registry_and_settings);

async fn signatures_are_checked(s: Server) {
    let (st, v) = s.ecr_signed("DescribeRegistry", json!({}), "AKIAUNKNOWNUNKNOWN00", SECRET, |_| {}).await;
    assert_eq!((st, v["__type"].as_str().unwrap()), (StatusCode::BAD_REQUEST, "UnrecognizedClientException"));
    let (_, v) = s.ecr_signed("DescribeRegistry", json!({}), AKID, "wrong-secret-wrong-secret", |_| {}).await;
    assert_eq!(v["__type"], "InvalidSignatureException");
    let (_, v) = s
        .ecr_signed("DescribeRepositories", json!({}), AKID, SECRET, |h| {
            for (n, v) in h.iter_mut() {
                if n == "x-amz-target" {
                    *v = "AmazonEC2ContainerRegistry_V20150921.DeleteRepository".into();
                }
            }
        })
        .await;
    assert_eq!(v["__type"], "InvalidSignatureException");
    let (_, v) =
        s.ecr_signed("DescribeRegistry", json!({}), AKID, SECRET, |h| h.retain(|(n, _)| n != "authorization")).await;
    assert_eq!(v["__type"], "MissingAuthenticationTokenException");
    let (_, v) = s
        .ecr_signed("DescribeRegistry", json!({}), AKID, SECRET, |h| {
            for (n, v) in h.iter_mut() {
                if n == "x-amz-date" {
                    *v = "20200101T000000Z".into();
                }
            }
        })
        .await;
    assert_eq!(v["__type"], "InvalidSignatureException");
    let (_, v) = s.ecr("FlyToTheMoon", json!({})).await;
    assert_eq!(v["__type"], "UnknownOperationException");
    // A body that is not JSON (signed correctly).
    let r = s.http.post(format!("{}/", s.base)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["__type"], "UnknownOperationException");
}
both!(signatures_are_checked);

/// The password GetAuthorizationToken issues, decoded from its base64 `AWS:<password>`.
async fn login_password(s: &Server) -> String {
    let r = s.ecr_ok("GetAuthorizationToken", json!({})).await;
    let data = &r["authorizationData"][0];
    assert_eq!(data["proxyEndpoint"], s.base.as_str());
    let expires = data["expiresAt"].as_f64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((expires - now - 12.0 * 3600.0).abs() < 60.0, "valid 12 hours");
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(data["authorizationToken"].as_str().unwrap()).unwrap();
    String::from_utf8(decoded).unwrap().strip_prefix("AWS:").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_login_guards_v2() {
    let s = Server::start_secure(Db::Sqlite, berth_api::Challenge::Basic).await.unwrap();
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").starts_with("Basic realm="), "{}", header(&r, "www-authenticate"));
    let pw = login_password(&s).await;
    let r = s.req(Method::GET, "/v2/").basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for (user, pass) in [("AWS", "b1.forged.token"), ("admin", pw.as_str()), ("AWS", "")] {
        let r = s.req(Method::GET, "/v2/").basic_auth(user, Some(pass)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{user}");
    }
    // A whole push and pull with the login.
    let data = b"guarded".to_vec();
    let d = sha256(&data);
    let r = s
        .req(Method::POST, &format!("/v2/g/blobs/uploads/?digest={d}"))
        .basic_auth("AWS", Some(&pw))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.req(Method::GET, &format!("/v2/g/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s.req(Method::GET, &format!("/v2/g/blobs/{d}")).basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow() {
    let s = Server::start_secure(Db::Sqlite, berth_api::Challenge::Bearer).await.unwrap();
    let r = s.req(Method::GET, "/v2/app/tags/list").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let c = header(&r, "www-authenticate");
    assert!(c.starts_with(&format!("Bearer realm=\"{}/token\"", s.base)), "{c}");
    assert!(c.contains("scope=\"repository:app:pull\""), "{c}");
    // Without a login the token is anonymous and carries only what policies make public: nothing.
    let r = s.req(Method::GET, "/token?service=x&scope=repository:app:pull").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let anon: Value = r.json().await.unwrap();
    let r = s.req(Method::GET, "/v2/app/tags/list").bearer_auth(anon["token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "an anonymous token grants nothing here");
    let pw = login_password(&s).await;
    let tok = |scope: &'static str| {
        let (s, pw) = (&s, pw.clone());
        async move {
            let r = s
                .req(Method::GET, &format!("/token?service=berth&scope={scope}"))
                .basic_auth("AWS", Some(pw))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let v: Value = r.json().await.unwrap();
            assert!(v["expires_in"].as_i64().unwrap() > 0);
            v["token"].as_str().unwrap().to_string()
        }
    };
    let push = tok("repository:app:pull,push").await;
    let data = b"via bearer".to_vec();
    let d = sha256(&data);
    let r = s
        .req(Method::POST, &format!("/v2/app/blobs/uploads/?digest={d}"))
        .bearer_auth(&push)
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // A token identifies its holder; what a request may do is decided by the policies in force,
    // whatever scope the token was asked for (clients such as oras reuse their first token).
    let pull_other = tok("repository:other:pull").await;
    let r = s.req(Method::GET, &format!("/v2/app/blobs/{d}")).bearer_auth(&pull_other).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the root's token, whatever its scope");
    let pull = tok("repository:app:pull").await;
    let r = s.req(Method::GET, &format!("/v2/app/blobs/{d}")).bearer_auth(&pull).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Basic stays accepted when the challenge is Bearer.
    let r = s.req(Method::GET, &format!("/v2/app/blobs/{d}")).basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The login password is not a bearer token.
    let r = s.req(Method::GET, &format!("/v2/app/blobs/{d}")).bearer_auth(&pw).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

fn public_pull_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [{"Sid": "AllowPublicPull", "Effect": "Allow", "Principal": "*",
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]}]})
    .to_string()
}

async fn repository_and_registry_policies(s: Server) {
    s.ecr_ok("CreateRepository", json!({"repositoryName": "pol"})).await;
    let (t, _) = s.ecr_err("GetRepositoryPolicy", json!({"repositoryName": "pol"})).await;
    assert_eq!(t, "RepositoryPolicyNotFoundException");
    let text = public_pull_policy();
    let r = s.ecr_ok("SetRepositoryPolicy", json!({"repositoryName": "pol", "policyText": text})).await;
    assert_eq!(r["policyText"], text.as_str());
    assert_eq!(s.ecr_ok("GetRepositoryPolicy", json!({"repositoryName": "pol"})).await["policyText"], text.as_str());
    for (bad, needle) in [
        ("{not json", "not valid JSON"),
        (r#"{"Statement":{"Effect":"Allow","Action":"ecr:*"}}"#, "needs Principal"),
        (r#"{"Statement":{"Effect":"Maybe","Principal":"*","Action":"ecr:*"}}"#, "Effect"),
    ] {
        let (t, m) = s.ecr_err("SetRepositoryPolicy", json!({"repositoryName": "pol", "policyText": bad})).await;
        assert_eq!(t, "InvalidParameterException");
        assert!(m.contains(needle), "{m}");
    }
    let huge = format!(
        r#"{{"Statement":{{"Sid":"{}","Effect":"Allow","Principal":"*","Action":"ecr:*"}}}}"#,
        "a".repeat(10_300)
    );
    assert_eq!(
        s.ecr_err("SetRepositoryPolicy", json!({"repositoryName": "pol", "policyText": huge})).await.0,
        "InvalidParameterException"
    );
    // A policy that would lock the caller out needs force.
    let lockout = r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"ecr:SetRepositoryPolicy"}}"#;
    let (t, m) = s.ecr_err("SetRepositoryPolicy", json!({"repositoryName": "pol", "policyText": lockout})).await;
    assert_eq!(t, "InvalidParameterException");
    assert!(m.contains("force"), "{m}");
    s.ecr_ok("SetRepositoryPolicy", json!({"repositoryName": "pol", "policyText": lockout, "force": true})).await;
    let (t, _) = s.ecr_err("SetRepositoryPolicy", json!({"repositoryName": "pol", "policyText": text})).await;
    assert_eq!(t, "AccessDeniedException", "the explicit deny binds the root too");
    let r = s.ecr_ok("DeleteRepositoryPolicy", json!({"repositoryName": "pol"})).await;
    assert_eq!(r["policyText"], lockout);
    assert_eq!(
        s.ecr_err("DeleteRepositoryPolicy", json!({"repositoryName": "pol"})).await.0,
        "RepositoryPolicyNotFoundException"
    );

    assert_eq!(s.ecr_err("GetRegistryPolicy", json!({})).await.0, "RegistryPolicyNotFoundException");
    let reg = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Replication","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":["ecr:CreateRepository","ecr:ReplicateImage"],"Resource":"arn:aws:ecr:us-east-1:000000000000:repository/*"}]}"#;
    s.ecr_ok("PutRegistryPolicy", json!({"policyText": reg})).await;
    assert_eq!(s.ecr_ok("GetRegistryPolicy", json!({})).await["policyText"], reg);
    assert_eq!(s.ecr_ok("DeleteRegistryPolicy", json!({})).await["policyText"], reg);
    assert_eq!(s.ecr_err("DeleteRegistryPolicy", json!({})).await.0, "RegistryPolicyNotFoundException");
}
both!(repository_and_registry_policies);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_repositories_and_denies() {
    let s = Server::start_secure(Db::Sqlite, berth_api::Challenge::Basic).await.unwrap();
    let pw = login_password(&s).await;
    let auth = |m: Method, p: &str| s.req(m, p).basic_auth("AWS", Some(pw.clone()));
    // Push an image as root.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = b"public layer".to_vec();
    let mut digests = Vec::new();
    for b in [&config, &layer] {
        let d = sha256(b);
        let r = auth(Method::POST, &format!("/v2/pub/blobs/uploads/?digest={d}")).body(b.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        digests.push(d);
    }
    let m = image_manifest(&digests[0], config.len(), &[(digests[1].clone(), layer.len())]);
    let r = auth(Method::PUT, "/v2/pub/manifests/1")
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let anon_get = |p: String| s.req(Method::GET, &p).send();
    assert_eq!(anon_get("/v2/pub/manifests/1".into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Public pull: anonymous reads work, writes and listings do not.
    s.ecr_ok("SetRepositoryPolicy", json!({"repositoryName": "pub", "policyText": public_pull_policy()})).await;
    let r = anon_get("/v2/pub/manifests/1".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), m);
    assert_eq!(anon_get(format!("/v2/pub/blobs/{}", digests[1])).await.unwrap().bytes().await.unwrap(), layer);
    let r = s.req(Method::HEAD, &format!("/v2/pub/blobs/{}", digests[1])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.req(Method::POST, "/v2/pub/blobs/uploads/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "anonymous push refused");
    assert!(header(&r, "www-authenticate").starts_with("Basic"));
    let r = s
        .req(Method::PUT, "/v2/pub/manifests/2")
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anon_get("/v2/pub/tags/list".into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anon_get("/v2/_catalog".into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anon_get("/v2/other/manifests/1".into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // The next request sees a changed policy.
    s.ecr_ok("DeleteRepositoryPolicy", json!({"repositoryName": "pub"})).await;
    assert_eq!(anon_get("/v2/pub/manifests/1".into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Deny by source address binds even the root key, on both protocols.
    // (Policy management stays allowed, or the policy could never be changed from here again.)
    let deny_outside =
        json!({"Version": "2012-10-17", "Statement": [{"Sid": "OfficeOnly", "Effect": "Deny", "Principal": "*",
        "NotAction": ["ecr:SetRepositoryPolicy", "ecr:DeleteRepositoryPolicy", "ecr:GetRepositoryPolicy"],
        "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]})
        .to_string();
    s.ecr_ok("SetRepositoryPolicy", json!({"repositoryName": "pub", "policyText": deny_outside})).await;
    let r = auth(Method::GET, "/v2/pub/manifests/1").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::FORBIDDEN, "DENIED".into()));
    let (t, m) = s.ecr_err("DescribeImages", json!({"repositoryName": "pub"})).await;
    assert_eq!(t, "AccessDeniedException");
    assert!(m.contains("ecr:DescribeImages") && m.contains("explicit deny"), "{m}");
    // From an allowed range (loopback is the client here) the same request passes.
    let allow_loopback = deny_outside.replace("10.0.0.0/8", "127.0.0.0/8");
    s.ecr_ok("SetRepositoryPolicy", json!({"repositoryName": "pub", "policyText": allow_loopback})).await;
    assert_eq!(auth(Method::GET, "/v2/pub/manifests/1").send().await.unwrap().status(), StatusCode::OK);
    s.ecr_ok("DescribeImages", json!({"repositoryName": "pub"})).await;

    // A mount needs pull on the source: denied there, the mount becomes an upload.
    let deny_source =
        json!({"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "ecr:GetDownloadUrlForLayer"}]})
            .to_string();
    s.ecr_ok("SetRepositoryPolicy", json!({"repositoryName": "pub", "policyText": deny_source})).await;
    let r = auth(Method::POST, &format!("/v2/copy/blobs/uploads/?mount={}&from=pub", digests[1])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "no mount from a repository the caller may not read");
    s.ecr_ok("DeleteRepositoryPolicy", json!({"repositoryName": "pub"})).await;
    let r = auth(Method::POST, &format!("/v2/copy/blobs/uploads/?mount={}&from=pub", digests[1])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_bearer_tokens_carry_public_scopes_only() {
    let s = Server::start_secure(Db::Sqlite, berth_api::Challenge::Bearer).await.unwrap();
    let pw = login_password(&s).await;
    let d = sha256(b"x");
    let r = s
        .req(Method::POST, &format!("/v2/open/blobs/uploads/?digest={d}"))
        .basic_auth("AWS", Some(&pw))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    s.ecr_ok("SetRepositoryPolicy", json!({"repositoryName": "open", "policyText": public_pull_policy()})).await;
    let r = s.req(Method::GET, "/token?service=berth&scope=repository:open:pull,push").send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    let r = s.req(Method::GET, &format!("/v2/open/blobs/{d}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "anonymous pull with the token");
    let r = s.req(Method::POST, "/v2/open/blobs/uploads/").bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "push was not granted");
    assert!(header(&r, "www-authenticate").contains("scope=\"repository:open:pull,push\""));
}

/// A client whose requests come from `ip` (any 127.x address reaches the loopback server).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_throttled_never_valid_credentials() {
    let mut s = Server::start_secure(Db::Sqlite, berth_api::Challenge::Bearer).await.unwrap();
    // Twelve requests signed with a wrong secret naming the victim's key id, from twelve
    // addresses: the victim's own calls still go through (they used to be throttled for 60 s).
    for i in 0..12 {
        s.http = client_from(&format!("127.0.0.{}", 10 + i));
        let (_, v) = s.ecr_signed("DescribeRegistry", json!({}), AKID, "not-the-secret-not-the-secret", |_| {}).await;
        assert_eq!(v["__type"], "InvalidSignatureException", "{v}");
    }
    s.http = reqwest::Client::new();
    let (st, v) = s.ecr("DescribeRegistry", json!({})).await;
    assert_eq!(st, StatusCode::OK, "the victim's valid call: {v}");
    let pw = login_password(&s).await;

    // Fifty-odd bad bearer tokens from one address: that address's failures are now throttled...
    let mut throttled = false;
    for _ in 0..60 {
        let r = s.req(Method::GET, "/v2/").bearer_auth("b1.wrong.wrong").send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = true;
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(throttled, "no throttling after 60 failed logins");
    let (_, v) = s.ecr_signed("DescribeRegistry", json!({}), AKID, "not-the-secret-not-the-secret", |_| {}).await;
    assert_eq!(v["__type"], "ThrottlingException", "a failure from the throttled address: {v}");
    // ...but valid credentials from that same address are not: SigV4, Basic and a bearer token.
    let (st, v) = s.ecr("DescribeRegistry", json!({})).await;
    assert_eq!(st, StatusCode::OK, "a correctly signed call from the throttled address: {v}");
    let r = s.req(Method::GET, "/v2/").basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a valid login from the throttled address");
    let r = s.req(Method::GET, "/token?service=berth&scope=repository:tp:pull,push").basic_auth("AWS", Some(&pw));
    let token = r.send().await.unwrap().json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let r = s.req(Method::POST, "/v2/tp/blobs/uploads/").bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "a valid bearer token from the throttled address");
    // Other addresses' failures get their own answer, not the throttled one.
    let other = client_from("127.0.0.77");
    let r = other.get(format!("{}/v2/", s.base)).bearer_auth("b1.wrong.wrong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Anonymous requests carry no credentials to guess with: not throttled.
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The audit log names the valid caller of the push, not "anonymous".
    s.registry.flush_audit().await;
    let rows = s
        .meta
        .audit_events(&berth_meta::AuditFilter {
            event_name: Some("InitiateLayerUpload".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!rows.is_empty());
    assert_eq!(rows[0].principal.as_deref(), Some("arn:aws:iam::000000000000:root"), "{:?}", rows[0]);
    assert_eq!(rows[0].decision, "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_records_calls_writes_and_refusals() {
    let s = Server::start_secure(Db::Sqlite, berth_api::Challenge::Basic).await.unwrap();
    s.ecr_ok("CreateRepository", json!({"repositoryName": "aud"})).await;
    s.ecr_signed("DescribeRegistry", json!({}), AKID, "wrong-secret-wrong-secret", |_| {}).await;
    let pw = login_password(&s).await;
    let d = sha256(b"audited");
    let r = s
        .req(Method::POST, &format!("/v2/aud/blobs/uploads/?digest={d}"))
        .basic_auth("AWS", Some(&pw))
        .body("audited")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.req(Method::GET, &format!("/v2/aud/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s.req(Method::GET, &format!("/v2/aud/blobs/{d}")).basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "an allowed read is not a write: not recorded");

    let filter = |decision: Option<&str>| berth_meta::AuditFilter {
        decision: decision.map(str::to_string),
        limit: 100,
        ..Default::default()
    };
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = s.meta.audit_events(&filter(None)).await.unwrap();
        if rows.len() >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let names: Vec<(&str, &str)> = rows.iter().rev().map(|r| (r.event_name.as_str(), r.decision.as_str())).collect();
    assert_eq!(
        names,
        [
            ("CreateRepository", "allow"),
            ("DescribeRegistry", "deny"),
            ("GetAuthorizationToken", "allow"),
            ("InitiateLayerUpload", "allow"),
            ("GetDownloadUrlForLayer", "deny"),
        ],
        "{rows:#?}"
    );
    let create = rows.iter().find(|r| r.event_name == "CreateRepository").unwrap();
    assert_eq!(create.principal.as_deref(), Some("arn:aws:iam::000000000000:root"));
    assert_eq!(create.resource.as_deref(), Some("arn:aws:ecr:us-east-1:000000000000:repository/aud"));
    assert_eq!(create.source_ip.as_deref(), Some("127.0.0.1"));
    let bad = rows.iter().find(|r| r.event_name == "DescribeRegistry").unwrap();
    assert!(bad.error.as_deref().unwrap().starts_with("InvalidSignatureException"), "{bad:?}");
    let anon = rows.iter().find(|r| r.event_name == "GetDownloadUrlForLayer").unwrap();
    assert_eq!(anon.principal, None);
    let denied = s.meta.audit_events(&filter(Some("deny"))).await.unwrap();
    assert_eq!(denied.len(), 2);
}
