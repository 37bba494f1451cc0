//! Lifecycle policies through the ECR API and the service's run, against SQLite and PostgreSQL:
//! validation errors, previews (filters, pages, summary) equal to what a run then expires,
//! indexes expiring with their children, referrers with their subject, and the audit log.

mod common;

use berth_meta::testing::set_image_times;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;

fn now() -> i64 {
    berth_meta::now_ms()
}

/// An OCI index over `children` (digest, bytes), pushed under `tag`.
async fn push_index(s: &Server, repo: &str, tag: &str, children: &[(String, Vec<u8>)]) -> String {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(d, b)| json!({"mediaType": OCI_MANIFEST, "digest": d, "size": b.len(), "platform": {"architecture": "amd64", "os": "linux"}}))
        .collect();
    let body =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})).unwrap();
    let r = s.put_manifest(repo, tag, OCI_INDEX, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    sha256(&body)
}

/// An artifact whose subject is `subject` (a signature, say), untagged.
async fn push_referrer(s: &Server, repo: &str, subject: &(String, Vec<u8>)) -> String {
    let config = s.push_blob(repo, b"{}").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1.len()},
    }))
    .unwrap();
    let digest = sha256(&body);
    let r = s.put_manifest(repo, &digest, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    digest
}

fn digests(v: &Value) -> Vec<String> {
    v["previewResults"].as_array().unwrap().iter().map(|r| r["imageDigest"].as_str().unwrap().to_string()).collect()
}

async fn policies_previews_and_runs(s: Server) {
    s.ecr_ok("CreateRepository", json!({"repositoryName": "svc"})).await;
    let repo = json!({"repositoryName": "svc"});
    let (t, m) = s.ecr_err("GetLifecyclePolicy", repo.clone()).await;
    assert_eq!(t, "LifecyclePolicyNotFoundException");
    assert!(m.contains("'svc'"), "{m}");
    let (t, _) = s.ecr_err("GetLifecyclePolicyPreview", repo.clone()).await;
    assert_eq!(t, "LifecyclePolicyPreviewNotFoundException");
    let (t, _) = s.ecr_err("StartLifecyclePolicyPreview", repo.clone()).await;
    assert_eq!(t, "LifecyclePolicyNotFoundException", "no stored policy and none given");

    // Validation failures name the rule and field.
    let bad = r#"{"rules": [{"rulePriority": 3, "selection": {"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}"#;
    let (t, m) = s.ecr_err("PutLifecyclePolicy", json!({"repositoryName": "svc", "lifecyclePolicyText": bad})).await;
    assert_eq!(t, "InvalidParameterException");
    assert!(m.contains("rulePriority 3") && m.contains("tagPrefixList"), "{m}");
    let (t, m) = s.ecr_err("PutLifecyclePolicy", json!({"repositoryName": "svc", "lifecyclePolicyText": "{}"})).await;
    assert_eq!(t, "InvalidParameterException");
    assert!(m.contains("between 100 and 30720"), "{m}");

    // Images: release-1..4 (10..7 days old), two untagged ones (20 and 1 days), an index with
    // two children (tag multi, 30 days), and a signature on release-1.
    let mut rel = Vec::new();
    for i in 1..=4 {
        let img = s.push_image("svc", &format!("release-{i}"), &format!("r{i}")).await;
        set_image_times(&s.meta, "svc", &img.0, now() - (11 - i) * DAY, None).await.unwrap();
        rel.push(img);
    }
    let old_untagged = s.push_image("svc", "tmp-a", "u1").await;
    let new_untagged = s.push_image("svc", "tmp-b", "u2").await;
    for (img, days) in [(&old_untagged, 20), (&new_untagged, 1)] {
        let r = s
            .req(reqwest::Method::DELETE, &format!("/v2/svc/manifests/{}", if days == 20 { "tmp-a" } else { "tmp-b" }));
        assert_eq!(r.send().await.unwrap().status(), StatusCode::ACCEPTED);
        set_image_times(&s.meta, "svc", &img.0, now() - days * DAY, None).await.unwrap();
    }
    let c1 = s.push_image("svc", "c1", "child-1").await;
    let c2 = s.push_image("svc", "c2", "child-2").await;
    for t in ["c1", "c2"] {
        s.req(reqwest::Method::DELETE, &format!("/v2/svc/manifests/{t}")).send().await.unwrap();
    }
    let index = push_index(&s, "svc", "multi", &[c1.clone(), c2.clone()]).await;
    set_image_times(&s.meta, "svc", &index, now() - 30 * DAY, None).await.unwrap();
    let sig = push_referrer(&s, "svc", &rel[0]).await;

    let policy = r#"{"rules": [
        {"rulePriority": 1, "description": "keep two releases", "selection": {"tagStatus": "tagged", "tagPatternList": ["release-*"], "countType": "imageCountMoreThan", "countNumber": 2}, "action": {"type": "expire"}},
        {"rulePriority": 2, "description": "untagged after a week", "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7}, "action": {"type": "expire"}},
        {"rulePriority": 3, "description": "anything older than 25 days", "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 25}, "action": {"type": "expire"}}]}"#;
    let v = s.ecr_ok("PutLifecyclePolicy", json!({"repositoryName": "svc", "lifecyclePolicyText": policy})).await;
    assert_eq!(v["lifecyclePolicyText"], policy);
    let v = s.ecr_ok("GetLifecyclePolicy", repo.clone()).await;
    assert_eq!(v["lifecyclePolicyText"], policy);
    assert!(v.get("lastEvaluatedAt").is_none(), "never evaluated yet");

    let v = s.ecr_ok("StartLifecyclePolicyPreview", repo.clone()).await;
    assert_eq!(v["status"], "COMPLETE");
    let preview = s.ecr_ok("GetLifecyclePolicyPreview", repo.clone()).await;
    assert_eq!(preview["status"], "COMPLETE");
    // Oldest first: the index (rule 3), the old untagged image (rule 2), release-1 and -2 (rule 1).
    let want = vec![index.clone(), old_untagged.0.clone(), rel[0].0.clone(), rel[1].0.clone()];
    assert_eq!(digests(&preview), want, "{preview}");
    assert_eq!(preview["summary"]["expiringImageTotalCount"], 4);
    let rules: Vec<i64> = preview["previewResults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["appliedRulePriority"].as_i64().unwrap())
        .collect();
    assert_eq!(rules, [3, 2, 1, 1]);
    assert_eq!(preview["previewResults"][2]["imageTags"], json!(["release-1"]));
    assert_eq!(preview["previewResults"][2]["action"]["type"], "EXPIRE");

    // Filters and pages.
    let tagged = s
        .ecr_ok("GetLifecyclePolicyPreview", json!({"repositoryName": "svc", "filter": {"tagStatus": "UNTAGGED"}}))
        .await;
    assert_eq!(digests(&tagged), vec![old_untagged.0.clone()]);
    let p1 = s.ecr_ok("GetLifecyclePolicyPreview", json!({"repositoryName": "svc", "maxResults": 3})).await;
    assert_eq!(digests(&p1).len(), 3);
    let token = p1["nextToken"].as_str().unwrap();
    let p2 = s
        .ecr_ok("GetLifecyclePolicyPreview", json!({"repositoryName": "svc", "maxResults": 3, "nextToken": token}))
        .await;
    assert_eq!(digests(&p2), vec![rel[1].0.clone()]);
    assert!(p2.get("nextToken").is_none());
    let one = s
        .ecr_ok("GetLifecyclePolicyPreview", json!({"repositoryName": "svc", "imageIds": [{"imageTag": "release-2"}]}))
        .await;
    assert_eq!(digests(&one), vec![rel[1].0.clone()]);
    let (t, _) = s.ecr_err("GetLifecyclePolicyPreview", json!({"repositoryName": "svc", "maxResults": 101})).await;
    assert_eq!(t, "InvalidParameterException");

    // A run expires exactly what the preview showed, with the index's children and the
    // signature of release-1; everything else stays.
    let report = s.registry.lifecycle().run_lifecycle(&berth_service::Caller::operator(), "svc", false).await.unwrap();
    let ran: Vec<String> = report.expired.iter().map(|e| e.digest.clone()).collect();
    assert_eq!(ran, want);
    assert_eq!(report.manifests_deleted, 4 + 2 + 1);
    let left = s.ecr_ok("ListImages", repo.clone()).await;
    let left: Vec<&str> =
        left["imageIds"].as_array().unwrap().iter().map(|i| i["imageDigest"].as_str().unwrap()).collect();
    for gone in want.iter().chain([&c1.0, &c2.0, &sig]) {
        assert!(!left.contains(&gone.as_str()), "{gone} should be gone: {left:?}");
    }
    for kept in [&rel[2].0, &rel[3].0, &new_untagged.0] {
        assert!(left.contains(&kept.as_str()), "{kept} should stay: {left:?}");
    }
    let r =
        s.req(reqwest::Method::GET, "/v2/svc/manifests/release-3").header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = s.ecr_ok("GetLifecyclePolicy", repo.clone()).await;
    assert!(v["lastEvaluatedAt"].as_f64().unwrap() > 1.7e9);

    // Each expiry is in the audit log with its rule (written in the background: flushed first).
    s.registry.flush_audit().await;
    let rows = s
        .meta
        .audit_events(&berth_meta::AuditFilter {
            event_name: Some("PolicyExecutionEvent".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().any(|r| r.detail.as_deref().unwrap_or_default().contains("rule 3")
        && r.resource.as_deref().unwrap_or_default().ends_with(&index)));

    // Running again expires nothing new; DeleteLifecyclePolicy returns the text.
    assert!(
        s.registry
            .lifecycle()
            .run_lifecycle(&berth_service::Caller::operator(), "svc", false)
            .await
            .unwrap()
            .expired
            .is_empty()
    );
    let v = s.ecr_ok("DeleteLifecyclePolicy", repo.clone()).await;
    assert_eq!(v["lifecyclePolicyText"], policy);
    let (t, _) = s.ecr_err("DeleteLifecyclePolicy", repo.clone()).await;
    assert_eq!(t, "LifecyclePolicyNotFoundException");
}
both!(policies_previews_and_runs);

async fn changed_images_are_skipped(s: Server) {
    // An image re-tagged after the evaluation is not expired by that evaluation's plan.
    s.ecr_ok("CreateRepository", json!({"repositoryName": "app"})).await;
    let a = s.push_image("app", "v1", "a").await;
    s.push_image("app", "v2", "b").await;
    set_image_times(&s.meta, "app", &a.0, now() - 5 * DAY, None).await.unwrap();
    let policy = r#"{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}"#;
    let plan = s.registry.lifecycle().lifecycle_plan(&berth_service::Caller::operator(), "app", policy).await.unwrap();
    assert_eq!(plan.len(), 1);
    let r = s.put_manifest("app", "v3", OCI_MANIFEST, &a.1).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = s.meta.repo_id("app").await.unwrap().unwrap();
    assert!(s.meta.expire_image(id, &plan[0].digest, &plan[0].tags).await.unwrap().is_empty());
    let r = s.req(reqwest::Method::GET, "/v2/app/manifests/v3").header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
both!(changed_images_are_skipped);

/// Random repositories and policies: what a preview lists is exactly what the run then expires,
/// and what stays is everything else.
async fn preview_equals_run(s: Server) {
    // A small deterministic generator, so a failure names its seed.
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let tag_sets =
        [vec![], vec!["prod-1"], vec!["prod-2", "beta-1"], vec!["dev"], vec!["beta-2"], vec!["v1.0", "latest"]];
    let selections = [
        r#"{"tagStatus": "tagged", "tagPrefixList": ["prod"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
        r#"{"tagStatus": "tagged", "tagPatternList": ["*beta*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 3}"#,
        r#"{"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}"#,
        r#"{"tagStatus": "tagged", "tagPatternList": ["regex:v[0-9.]+"], "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 2}"#,
    ];
    let (mut accepted, mut expired) = (0, 0);
    for round in 0..8 {
        let repo = format!("rand{round}");
        s.ecr_ok("CreateRepository", json!({"repositoryName": repo})).await;
        let mut all = Vec::new();
        for i in 0..6 {
            let tags = &tag_sets[next(tag_sets.len() as u64) as usize];
            let first = tags.first().copied().unwrap_or("tmp");
            let (d, _) = s.push_image(&repo, &format!("{first}-{i}-x"), &format!("{round}-{i}")).await;
            // Retag as chosen: drop the push tag, add the set.
            let body = s.req(reqwest::Method::GET, &format!("/v2/{repo}/manifests/{d}")).header("accept", OCI_MANIFEST);
            let bytes = body.send().await.unwrap().bytes().await.unwrap().to_vec();
            for t in tags {
                let t = format!("{t}-{round}{i}");
                assert_eq!(s.put_manifest(&repo, &t, OCI_MANIFEST, &bytes).await.status(), StatusCode::CREATED);
            }
            s.ecr_ok(
                "BatchDeleteImage",
                json!({"repositoryName": repo, "imageIds": [{"imageTag": format!("{first}-{i}-x")}]}),
            )
            .await;
            if !tags.is_empty() || next(2) == 0 {
                // Untagged images only survive their tag's removal if re-pushed by digest.
                let r = s.put_manifest(&repo, &d, OCI_MANIFEST, &bytes).await;
                assert_eq!(r.status(), StatusCode::CREATED);
            }
            let pushed = now() - next(6) as i64 * DAY;
            let pulled = (next(2) == 0).then(|| now() - next(4) as i64 * DAY);
            set_image_times(&s.meta, &repo, &d, pushed, pulled).await.unwrap();
            all.push(d);
        }
        let n = 1 + next(3) as usize;
        let rules: Vec<String> = (0..n)
            .map(|k| {
                let sel = selections[next(selections.len() as u64) as usize];
                format!(r#"{{"rulePriority": {}, "selection": {sel}, "action": {{"type": "expire"}}}}"#, k + 1)
            })
            .collect();
        let text = format!(r#"{{"rules": [{}], "comment_padding": null}}"#, rules.join(","));
        let text = text.replace(r#", "comment_padding": null"#, "");
        let text = if text.len() < 100 { format!("{text:<100}") } else { text };
        let (st, v) = s.ecr("PutLifecyclePolicy", json!({"repositoryName": repo, "lifecyclePolicyText": text})).await;
        if st != StatusCode::OK {
            // Two untagged rules, for instance: refused, as ECR refuses them.
            assert_eq!(v["__type"], "InvalidParameterException", "{v}");
            continue;
        }
        let images = |v: Value| -> Vec<String> {
            let mut d: Vec<String> = v["imageDetails"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["imageDigest"].as_str().unwrap().to_string())
                .collect();
            d.sort();
            d
        };
        let before = images(s.ecr_ok("DescribeImages", json!({"repositoryName": repo})).await);
        s.ecr_ok("StartLifecyclePolicyPreview", json!({"repositoryName": repo})).await;
        let preview = s.ecr_ok("GetLifecyclePolicyPreview", json!({"repositoryName": repo})).await;
        let want = digests(&preview);
        let ran: Vec<String> = s
            .registry
            .lifecycle()
            .run_lifecycle(&berth_service::Caller::operator(), &repo, false)
            .await
            .unwrap()
            .expired
            .into_iter()
            .map(|e| e.digest)
            .collect();
        assert_eq!(ran, want, "round {round}: {text}");
        let after = images(s.ecr_ok("DescribeImages", json!({"repositoryName": repo})).await);
        let expected: Vec<String> = before.iter().filter(|d| !want.contains(d)).cloned().collect();
        assert_eq!(after, expected, "round {round}: exactly the previewed images went");
        assert!(all.iter().any(|d| before.contains(d)), "round {round} built no images");
        accepted += 1;
        expired += want.len();
    }
    assert!(accepted >= 4 && expired > 0, "too few meaningful rounds: {accepted} policies, {expired} expiries");
}
both!(preview_equals_run);

/// Every path that deletes an image writes an `image_deleted` event with the change: a client's
/// delete over /v2/, ECR's BatchDeleteImage, a lifecycle expiry and a repository's deletion.
async fn every_deletion_is_an_event(s: Server) {
    use berth_meta::EventKind::*;
    s.ecr_ok("CreateRepository", json!({"repositoryName": "ev"})).await;
    let (oci, _) = s.push_image("ev", "oci", "a").await;
    let (ecr, _) = s.push_image("ev", "ecr", "b").await;
    let (old, _) = s.push_image("ev", "old", "c").await;
    let (gone, _) = s.push_image("ev", "gone", "d").await;
    s.push_image("ev", "gone", "e").await; // the tag moves on
    let r = s.req(reqwest::Method::DELETE, &format!("/v2/ev/manifests/{oci}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    s.ecr_ok("BatchDeleteImage", json!({"repositoryName": "ev", "imageIds": [{"imageTag": "ecr"}]})).await;
    set_image_times(&s.meta, "ev", &old, 1_000, None).await.unwrap();
    let policy = json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["old"],
        "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}, "action": {"type": "expire"}}]});
    s.ecr_ok("PutLifecyclePolicy", json!({"repositoryName": "ev", "lifecyclePolicyText": policy.to_string()})).await;
    s.registry.lifecycle().run_lifecycles(&berth_service::Caller::operator(), Some("ev"), false).await.unwrap();
    s.ecr_ok("DeleteRepository", json!({"repositoryName": "ev", "force": true})).await;
    let events = s.meta.events_after(0, 1000).await.unwrap();
    let deleted: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.kind == Some(ImageDeleted))
        .map(|e| {
            let cause = serde_json::from_str::<Value>(e.detail.as_deref().unwrap()).unwrap()["cause"].clone();
            (e.digest.clone().unwrap(), cause.as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        deleted[..3],
        [(oci, "deleted".to_string()), (ecr, "deleted".to_string()), (old, "lifecycle".to_string())],
        "{events:?}"
    );
    assert!(deleted[3..].iter().all(|(_, c)| c == "repository_deleted") && deleted.len() == 5, "{deleted:?}");
    assert!(deleted.iter().any(|(d, _)| *d == gone), "the untagged image went with its repository");
    let moved = events.iter().filter(|e| e.kind == Some(TagMoved) && e.tag.as_deref() == Some("gone")).count();
    assert_eq!(moved, 2, "the first push and the move of tag gone");
}
both!(every_deletion_is_an_event);
