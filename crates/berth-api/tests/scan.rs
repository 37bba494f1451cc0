//! Image scanning through the ECR API, against SQLite and PostgreSQL: OSV data imported, a
//! Debian image's layers read, findings only for versions before the fix, scan on push.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const STATUS: &str = "Package: libssl3\nStatus: install ok installed\nVersion: 3.0.11-1~deb12u1\nSource: openssl\n\n\
Package: curl\nStatus: install ok installed\nVersion: 7.88.1-10+deb12u5\n\n\
Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\nSource: zlib\n";

fn gz_layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&b.into_inner().unwrap()).unwrap();
    e.finish().unwrap()
}

async fn push_debian_image(s: &Server, repo: &str, tag: &str) -> String {
    let layer = gz_layer(&[("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"), ("var/lib/dpkg/status", STATUS)]);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let m = image_manifest(
        &s.push_blob(repo, config).await,
        config.len(),
        &[(s.push_blob(repo, &layer).await, layer.len())],
    );
    let r = s.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    sha256(&m)
}

fn osv_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let records = [
        // Fixed after the installed version: a finding.
        r#"{"id": "DSA-5532-1", "aliases": ["CVE-2023-5363"], "modified": "2023-10-25T00:00:00Z",
            "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}]}],
              "ecosystem_specific": {"urgency": "high"}}]}"#,
        // Fixed at or before the installed version: never reported.
        r#"{"id": "CVE-2023-38545", "affected": [{"package": {"ecosystem": "Debian:12", "name": "curl"},
              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "7.88.1-10+deb12u4"}]}]}]}"#,
        // No fix yet: an unfixed finding, severity from CVSS.
        r#"{"id": "CVE-2023-45853", "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "Debian:12", "name": "zlib"},
              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}"#,
        // Another release: not this image's.
        r#"{"id": "CVE-2000-0001", "affected": [{"package": {"ecosystem": "Debian:11", "name": "openssl"},
              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}"#,
        // An ecosystem Berth does not order: skipped, not fatal.
        r#"{"id": "HEX-1", "affected": [{"package": {"ecosystem": "Hex", "name": "plug"}, "versions": ["1.0.0"]}]}"#,
    ];
    for (i, r) in records.iter().enumerate() {
        std::fs::write(d.path().join(format!("r{i}.json")), r).unwrap();
    }
    std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
    d
}

async fn wait_complete(s: &Server, repo: &str, tag: &str) -> Value {
    for _ in 0..200 {
        let v =
            s.ecr_ok("DescribeImageScanFindings", json!({"repositoryName": repo, "imageId": {"imageTag": tag}})).await;
        if v["imageScanStatus"]["status"] != "IN_PROGRESS" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scan did not finish");
}

async fn scans_and_findings(s: Server) {
    let dir = osv_dir();
    let r = s.registry.scanning().import_osv(&berth_service::Caller::operator(), dir.path()).await.unwrap();
    assert_eq!((r.files, r.records, r.entries), (5, 5, 4));
    assert_eq!(r.skipped.get("Hex"), Some(&1));
    // Idempotent.
    assert_eq!(
        s.registry.scanning().import_osv(&berth_service::Caller::operator(), dir.path()).await.unwrap().entries,
        4
    );

    s.ecr_ok("CreateRepository", json!({"repositoryName": "deb"})).await;
    let digest = push_debian_image(&s, "deb", "12").await;
    let (t, _) =
        s.ecr_err("DescribeImageScanFindings", json!({"repositoryName": "deb", "imageId": {"imageTag": "12"}})).await;
    assert_eq!(t, "ScanNotFoundException");
    let v = s.ecr_ok("StartImageScan", json!({"repositoryName": "deb", "imageId": {"imageTag": "12"}})).await;
    assert_eq!(v["imageScanStatus"]["status"], "IN_PROGRESS");
    assert_eq!(v["imageId"]["imageDigest"], digest);
    let v = wait_complete(&s, "deb", "12").await;
    assert_eq!(v["imageScanStatus"]["status"], "COMPLETE", "{v}");
    let f = &v["imageScanFindings"];
    let names: Vec<&str> = f["findings"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["CVE-2023-45853", "CVE-2023-5363"], "{v}");
    assert_eq!(f["findingSeverityCounts"], json!({"CRITICAL": 1, "HIGH": 1}));
    assert!(f["vulnerabilitySourceUpdatedAt"].as_f64().unwrap() > 1.7e9, "when the data was imported: {f}");
    let ssl = &f["findings"][1];
    assert_eq!(ssl["severity"], "HIGH");
    let attr = |x: &Value, k: &str| {
        x["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == k)
            .map(|a| a["value"].as_str().unwrap().to_string())
    };
    assert_eq!(attr(ssl, "package_name").as_deref(), Some("libssl3"));
    assert_eq!(attr(ssl, "package_version").as_deref(), Some("3.0.11-1~deb12u1"));
    assert_eq!(attr(ssl, "fixed_in").as_deref(), Some("3.0.11-1~deb12u2"));
    assert_eq!(attr(&f["findings"][0], "fixed_in"), None, "unfixed");
    assert!(ssl["uri"].as_str().unwrap().contains("CVE-2023-5363"));
    // DescribeImages shows the scan's status and summary.
    let d = s.ecr_ok("DescribeImages", json!({"repositoryName": "deb"})).await;
    assert_eq!(d["imageDetails"][0]["imageScanStatus"]["status"], "COMPLETE");
    assert_eq!(
        d["imageDetails"][0]["imageScanFindingsSummary"]["findingSeverityCounts"],
        json!({"CRITICAL": 1, "HIGH": 1})
    );
    // The SBOM of the scanned image: the OS and the three packages with purls naming their source.
    let b = s.ecr_ok("GetImageSbom", json!({"repositoryName": "deb", "imageId": {"imageTag": "12"}})).await;
    assert_eq!(
        (b["sbomFormat"].as_str(), b["imageId"]["imageDigest"].as_str()),
        (Some("CycloneDX 1.5"), Some(digest.as_str()))
    );
    let comps = b["sbom"]["components"].as_array().unwrap();
    assert_eq!(comps.len(), 4, "{b}");
    assert!(
        comps.iter().any(|c| c["purl"] == "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?distro=debian-12&upstream=openssl")
    );
    assert_eq!(b["sbom"]["metadata"]["component"]["version"], digest);
    let (t, _) = s.ecr_err("GetImageSbom", json!({"repositoryName": "deb", "imageId": {"imageTag": "nope"}})).await;
    assert_eq!(t, "ImageNotFoundException");
    // Pages.
    let p = s
        .ecr_ok(
            "DescribeImageScanFindings",
            json!({"repositoryName": "deb", "imageId": {"imageTag": "12"}, "maxResults": 1}),
        )
        .await;
    assert_eq!(p["imageScanFindings"]["findings"].as_array().unwrap().len(), 1);
    assert_eq!(p["nextToken"], "1");
    let (t, _) = s.ecr_err("StartImageScan", json!({"repositoryName": "deb", "imageId": {"imageTag": "nope"}})).await;
    assert_eq!(t, "ImageNotFoundException");

    // Scan on push.
    s.ecr_ok("CreateRepository", json!({"repositoryName": "auto", "imageScanningConfiguration": {"scanOnPush": true}}))
        .await;
    push_debian_image(&s, "auto", "v1").await;
    let v = wait_complete(&s, "auto", "v1").await;
    assert_eq!(v["imageScanFindings"]["findings"].as_array().unwrap().len(), 2, "{v}");

    // A layer that is not a tar archive: the scan fails with the reason, the registry is fine.
    s.ecr_ok("CreateRepository", json!({"repositoryName": "junk"})).await;
    let config = br#"{"x":1}"#;
    let m =
        image_manifest(&s.push_blob("junk", config).await, 7, &[(s.push_blob("junk", b"\x1f\x8bnot gzip").await, 10)]);
    assert_eq!(s.put_manifest("junk", "bad", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    s.ecr_ok("StartImageScan", json!({"repositoryName": "junk", "imageId": {"imageTag": "bad"}})).await;
    let v = wait_complete(&s, "junk", "bad").await;
    assert_eq!(v["imageScanStatus"]["status"], "FAILED", "{v}");
    assert!(v["imageScanStatus"]["description"].as_str().unwrap().contains("layer 0"), "{v}");
}
both!(scans_and_findings);

fn write_record(dir: &std::path::Path, file: &str, id: &str, package: &str, fixed: &str, urgency: &str) {
    let r = json!({"id": id, "modified": "2026-01-01T00:00:00Z", "affected": [{
        "package": {"ecosystem": "Debian:12", "name": package},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
        "ecosystem_specific": {"urgency": urgency}}]});
    std::fs::write(dir.join(file), r.to_string()).unwrap();
}

fn finding_names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["imageScanFindings"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

/// New data is matched against stored inventories without a rescan; what appears and what
/// disappears is recorded as an audit event.
async fn rematch_on_new_data(s: Server) {
    let dir = tempfile::tempdir().unwrap();
    write_record(dir.path(), "a.json", "CVE-2030-0001", "openssl", "3.0.11-1~deb12u2", "high");
    s.registry.scanning().import_osv(&berth_service::Caller::operator(), dir.path()).await.unwrap();
    s.ecr_ok("CreateRepository", json!({"repositoryName": "cont", "imageScanningConfiguration": {"scanOnPush": true}}))
        .await;
    push_debian_image(&s, "cont", "1").await;
    assert_eq!(finding_names(&wait_complete(&s, "cont", "1").await), ["CVE-2030-0001"]);

    // The record is corrected (fixed earlier: no longer a finding) and another appears.
    write_record(dir.path(), "a.json", "CVE-2030-0001", "openssl", "3.0.10-1", "high");
    write_record(dir.path(), "b.json", "CVE-2030-0002", "zlib", "1:1.2.13.dfsg-2", "low");
    s.registry.scanning().import_osv(&berth_service::Caller::operator(), dir.path()).await.unwrap();
    let r = s.registry.scanning().rematch_all(&berth_service::Caller::operator()).await.unwrap();
    assert_eq!((r.images, r.changed, r.appeared, r.disappeared), (1, 1, 1, 1));
    let v =
        s.ecr_ok("DescribeImageScanFindings", json!({"repositoryName": "cont", "imageId": {"imageTag": "1"}})).await;
    assert_eq!(finding_names(&v), ["CVE-2030-0002"], "{v}");
    assert_eq!(v["imageScanFindings"]["findingSeverityCounts"], json!({"LOW": 1}));
    let events = s
        .registry
        .audit_events(
            &berth_service::Caller::operator(),
            &berth_meta::AuditFilter {
                event_name: Some("ImageScanFindingsChanged".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let detail = events[0].detail.as_deref().unwrap();
    assert!(detail.contains("+CVE-2030-0002 (zlib1g") && detail.contains("-CVE-2030-0001 (libssl3"), "{detail}");
    // Nothing new: nothing changes.
    let r = s.registry.scanning().rematch_all(&berth_service::Caller::operator()).await.unwrap();
    assert_eq!((r.images, r.changed), (1, 0));
}
both!(rematch_on_new_data);

/// A scan is a durable job: one whose node stopped mid-scan is taken up once its claim lapses;
/// one a live node holds is left to it.
async fn scans_survive_restarts(s: Server) {
    let dir = tempfile::tempdir().unwrap();
    write_record(dir.path(), "a.json", "CVE-2030-0001", "openssl", "3.0.11-1~deb12u2", "high");
    s.registry.scanning().import_osv(&berth_service::Caller::operator(), dir.path()).await.unwrap();
    let s = s.restart_with_scanners(0).await; // this node queues scans but runs none
    s.ecr_ok("CreateRepository", json!({"repositoryName": "jobs"})).await;
    let d1 = push_debian_image(&s, "jobs", "dead").await;
    s.ecr_ok("StartImageScan", json!({"repositoryName": "jobs", "imageId": {"imageTag": "dead"}})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v =
        s.ecr_ok("DescribeImageScanFindings", json!({"repositoryName": "jobs", "imageId": {"imageTag": "dead"}})).await;
    assert_eq!(v["imageScanStatus"]["status"], "IN_PROGRESS", "no worker runs here");
    // A node claims it and dies mid-scan (its claim ends in a second and is never renewed).
    let now = berth_meta::now_ms();
    let job = s.meta.claim_job("scan", "dead-node", now, now + 1000).await.unwrap().expect("the queued scan");
    let scan = berth_meta::ScanJob::from_payload(&job.payload).unwrap();
    assert_eq!((scan.digest.as_str(), job.attempts), (d1.as_str(), 1));
    // Another scan held by a live node (a long claim).
    s.ecr_ok("CreateRepository", json!({"repositoryName": "jobs2"})).await;
    push_debian_image(&s, "jobs2", "held").await;
    s.ecr_ok("StartImageScan", json!({"repositoryName": "jobs2", "imageId": {"imageTag": "held"}})).await;
    let now = berth_meta::now_ms();
    let held = s.meta.claim_job("scan", "live-node", now, now + 600_000).await.unwrap();
    assert!(held.is_some(), "{:?}", s.meta.scan_queue(now).await);
    assert_eq!(s.registry.scanning().scan_queue(&berth_service::Caller::operator()).await.unwrap(), (2, 2));

    let s = s.restart().await; // now with scan workers
    let mut done = None;
    for _ in 0..200 {
        let v = s
            .ecr_ok("DescribeImageScanFindings", json!({"repositoryName": "jobs", "imageId": {"imageTag": "dead"}}))
            .await;
        if v["imageScanStatus"]["status"] != "IN_PROGRESS" {
            done = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = done.expect("the abandoned scan was taken up again");
    assert_eq!(v["imageScanStatus"]["status"], "COMPLETE", "{v}");
    assert_eq!(finding_names(&v), ["CVE-2030-0001"]);
    let v = s
        .ecr_ok("DescribeImageScanFindings", json!({"repositoryName": "jobs2", "imageId": {"imageTag": "held"}}))
        .await;
    assert_eq!(v["imageScanStatus"]["status"], "IN_PROGRESS", "a live node's claim is respected");
    // The dead node's late result does not overwrite the newer one.
    let stale = berth_meta::ScanRow { status: "FAILED".into(), ..Default::default() };
    assert!(!s.meta.finish_scan(&job, &scan, &stale, "{}").await.unwrap());
}
both!(scans_survive_restarts);

/// Registry scanning rules decide scan on push for matching repositories; each repository's
/// configuration says which filter applied.
async fn registry_scanning_configuration(s: Server) {
    let v = s.ecr_ok("GetRegistryScanningConfiguration", json!({})).await;
    assert_eq!(v["scanningConfiguration"], json!({"scanType": "BASIC", "rules": []}));
    let (t, m) = s
        .ecr_err(
            "PutRegistryScanningConfiguration",
            json!({"scanType": "BASIC", "rules": [{"scanFrequency": "CONTINUOUS_SCAN",
                "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}]}),
        )
        .await;
    assert_eq!(t, "ValidationException", "{m}");
    let (t, _) = s
        .ecr_err(
            "PutRegistryScanningConfiguration",
            json!({"scanType": "BASIC", "rules": [{"scanFrequency": "SCAN_ON_PUSH",
                "repositoryFilters": [{"filter": "Prod*", "filterType": "WILDCARD"}]}]}),
        )
        .await;
    assert_eq!(t, "ValidationException");
    let c = json!({"scanType": "ENHANCED", "rules": [
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "prod/*", "filterType": "WILDCARD"}]},
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "prod/critical*", "filterType": "WILDCARD"}]}]});
    s.ecr_ok("PutRegistryScanningConfiguration", c.clone()).await;
    assert_eq!(s.ecr_ok("GetRegistryScanningConfiguration", json!({})).await["scanningConfiguration"], c);

    for r in ["prod/web", "prod/critical-db", "dev/web"] {
        s.ecr_ok("CreateRepository", json!({"repositoryName": r})).await;
    }
    let v = s
        .ecr_ok(
            "BatchGetRepositoryScanningConfiguration",
            json!({"repositoryNames": ["prod/web", "prod/critical-db", "dev/web", "nope"]}),
        )
        .await;
    let c = &v["scanningConfigurations"];
    assert_eq!(c[0]["scanFrequency"], "SCAN_ON_PUSH");
    assert_eq!(c[0]["appliedScanFilters"], json!([{"filter": "prod/*", "filterType": "WILDCARD"}]));
    assert_eq!(c[1]["scanFrequency"], "CONTINUOUS_SCAN");
    assert_eq!((c[2]["scanFrequency"].as_str(), c[2]["scanOnPush"].as_bool()), (Some("MANUAL"), Some(false)));
    assert_eq!(v["failures"][0]["failureCode"], "REPOSITORY_NOT_FOUND");
    assert_eq!(v["failures"][0]["repositoryName"], "nope");

    // A push to a repository a rule matches is scanned; one to another is not.
    push_debian_image(&s, "prod/web", "1").await;
    push_debian_image(&s, "dev/web", "1").await;
    assert_eq!(wait_complete(&s, "prod/web", "1").await["imageScanStatus"]["status"], "COMPLETE");
    let (t, _) = s
        .ecr_err("DescribeImageScanFindings", json!({"repositoryName": "dev/web", "imageId": {"imageTag": "1"}}))
        .await;
    assert_eq!(t, "ScanNotFoundException");
}
both!(registry_scanning_configuration);

/// The scan policy: pulls of images with findings at or above a severity are refused (with the
/// findings named), exceptions let them through, unfixed findings can be hidden.
async fn scan_policy_blocks_pulls(s: Server) {
    let dir = osv_dir();
    s.registry.scanning().import_osv(&berth_service::Caller::operator(), dir.path()).await.unwrap();
    s.ecr_ok("CreateRepository", json!({"repositoryName": "gate", "imageScanningConfiguration": {"scanOnPush": true}}))
        .await;
    let digest = push_debian_image(&s, "gate", "1").await;
    wait_complete(&s, "gate", "1").await;
    let pull = |r: &str| s.req(reqwest::Method::GET, &format!("/v2/gate/manifests/{r}")).send();
    assert_eq!(pull("1").await.unwrap().status(), StatusCode::OK);

    let (t, _) = s
        .ecr_err(
            "PutRepositoryScanPolicy",
            json!({"repositoryName": "gate", "scanPolicy": {"blockPullsAtSeverity": "SEVERE"}}),
        )
        .await;
    assert_eq!(t, "InvalidParameterException");
    let (t, _) = s
        .ecr_err("PutRepositoryScanPolicy", json!({"repositoryName": "gate", "scanPolicy": {"blockPulls": "HIGH"}}))
        .await;
    assert_eq!(t, "InvalidParameterException", "unknown fields are refused");
    s.ecr_ok(
        "PutRepositoryScanPolicy",
        json!({"repositoryName": "gate", "scanPolicy": {"blockPullsAtSeverity": "CRITICAL"}}),
    )
    .await;
    for r in ["1", digest.as_str()] {
        let res = pull(r).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED");
        let m = body["errors"][0]["message"].as_str().unwrap();
        assert!(m.contains("CVE-2023-45853") && m.contains("CRITICAL"), "{m}");
    }
    // HEAD still resolves the digest; the blobs are not gated.
    assert_eq!(s.req(reqwest::Method::HEAD, "/v2/gate/manifests/1").send().await.unwrap().status(), StatusCode::OK);
    // An exception for the critical one; HIGH now blocks on the other.
    s.ecr_ok(
        "PutRepositoryScanPolicy",
        json!({"repositoryName": "gate", "scanPolicy": {"blockPullsAtSeverity": "CRITICAL", "ignoredVulnerabilities": ["CVE-2023-45853"]}}),
    )
    .await;
    assert_eq!(pull("1").await.unwrap().status(), StatusCode::OK);
    s.ecr_ok(
        "PutRepositoryScanPolicy",
        json!({"repositoryName": "gate", "scanPolicy": {"blockPullsAtSeverity": "HIGH", "ignoredVulnerabilities": ["CVE-2023-45853"]}}),
    )
    .await;
    assert_eq!(pull("1").await.unwrap().status(), StatusCode::FORBIDDEN);
    // Hiding unfixed findings: the zlib one (no fix) leaves the findings and stops counting.
    s.ecr_ok(
        "PutRepositoryScanPolicy",
        json!({"repositoryName": "gate", "scanPolicy": {"blockPullsAtSeverity": "CRITICAL", "hideUnfixed": true}}),
    )
    .await;
    assert_eq!(pull("1").await.unwrap().status(), StatusCode::OK);
    let v = wait_complete(&s, "gate", "1").await;
    assert_eq!(finding_names(&v), ["CVE-2023-5363"]);
    let g = s.ecr_ok("GetRepositoryScanPolicy", json!({"repositoryName": "gate"})).await;
    assert_eq!(g["scanPolicy"]["hideUnfixed"], true);
    // Unscanned images pass unless the policy says otherwise.
    s.ecr_ok("CreateRepository", json!({"repositoryName": "gate2"})).await;
    push_debian_image(&s, "gate2", "1").await;
    let pull2 = || s.req(reqwest::Method::GET, "/v2/gate2/manifests/1").send();
    assert_eq!(pull2().await.unwrap().status(), StatusCode::OK);
    s.ecr_ok("PutRepositoryScanPolicy", json!({"repositoryName": "gate2", "scanPolicy": {"blockUnscanned": true}}))
        .await;
    let res = pull2().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("never scanned"));
    // The empty policy removes it.
    s.ecr_ok("PutRepositoryScanPolicy", json!({"repositoryName": "gate2", "scanPolicy": {}})).await;
    assert_eq!(pull2().await.unwrap().status(), StatusCode::OK);
}
both!(scan_policy_blocks_pulls);

/// A range whose fix sorts before its introduction is reported at import with the record's id,
/// and matches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_ranges_are_named_at_import() {
    let s = Server::start(Db::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = |id: &str, introduced: &str, fixed: &str| {
        json!({"id": id, "affected": [{"package": {"ecosystem": "PyPI", "name": "Django"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": introduced}, {"fixed": fixed}]}]}]})
    };
    std::fs::write(dir.path().join("bad.json"), rec("PYSEC-2014-99", "1.6", "1.6b4").to_string()).unwrap();
    std::fs::write(dir.path().join("good.json"), rec("PYSEC-2014-98", "1.4", "1.4.13").to_string()).unwrap();
    let r = s.registry.scanning().import_osv(&berth_service::Caller::operator(), dir.path()).await.unwrap();
    assert_eq!(r.records, 2);
    assert_eq!(r.inconsistent, ["PYSEC-2014-99 (PyPI/Django)"], "only the contradictory range is named");
}

/// Scan on push reads the outbox, so an image stored by ECR's PutImage is scanned like one
/// pushed over /v2/; until the scan is queued its status reads IN_PROGRESS, never "not found".
async fn put_image_is_scanned_on_push(s: Server) {
    let s = s.restart_with_scanners(0).await; // scans are queued here, run after the restart
    let repo = "put-scanned";
    s.ecr_ok("CreateRepository", json!({"repositoryName": repo, "imageScanningConfiguration": {"scanOnPush": true}}))
        .await;
    let layer = gz_layer(&[("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"), ("var/lib/dpkg/status", STATUS)]);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let m = image_manifest(
        &s.push_blob(repo, config).await,
        config.len(),
        &[(s.push_blob(repo, &layer).await, layer.len())],
    );
    let manifest = String::from_utf8(m.clone()).unwrap();
    s.ecr_ok("PutImage", json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "put"})).await;
    let id = json!({"repositoryName": repo, "imageId": {"imageTag": "put"}});
    let v = s.ecr_ok("DescribeImageScanFindings", id.clone()).await;
    assert_eq!(v["imageScanStatus"]["status"], "IN_PROGRESS", "{v}");
    let d = s.ecr_ok("DescribeImages", json!({"repositoryName": repo})).await;
    assert_eq!(d["imageDetails"][0]["imageScanStatus"]["status"], "IN_PROGRESS", "{d}");
    // Queued as a job no worker holds: /metrics counts it.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = s.req(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
        if metrics.contains("berth_jobs{queue=\"scan\"} 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics.contains("berth_jobs{queue=\"scan\"} 1\n")
            && metrics.contains("berth_jobs_running{queue=\"scan\"} 0\n"),
        "{metrics}"
    );
    let s = s.restart().await;
    let last = wait_complete(&s, repo, "put").await;
    assert_eq!(last["imageScanStatus"]["status"], "COMPLETE", "{last}");
    // The outbox holds the push and the scan's outcome.
    let events = s.meta.events_after(0, 1000).await.unwrap();
    let about = |kind| events.iter().any(|e| e.kind == Some(kind) && e.digest.as_deref() == Some(&sha256(&m)));
    assert!(about(berth_meta::EventKind::ManifestStored) && about(berth_meta::EventKind::ScanCompleted), "{events:?}");
    let stored = events.iter().find(|e| e.kind == Some(berth_meta::EventKind::ManifestStored)).unwrap();
    assert!(stored.detail.as_deref().unwrap().contains("put_image"), "{stored:?}");
}
both!(put_image_is_scanned_on_push);

/// A tag put on an image stored before scan on push was turned on (PutImage of the same
/// manifest, as `aws ecr put-image` retags) gets the image scanned; once scanned, more tags
/// start no scan (scans are per digest).
async fn a_new_tag_scans_an_image_never_scanned(s: Server) {
    let repo = "late-scan";
    s.ecr_ok("CreateRepository", json!({"repositoryName": repo})).await;
    let layer = gz_layer(&[("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"), ("var/lib/dpkg/status", STATUS)]);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let m = image_manifest(
        &s.push_blob(repo, config).await,
        config.len(),
        &[(s.push_blob(repo, &layer).await, layer.len())],
    );
    let manifest = String::from_utf8(m).unwrap();
    s.ecr_ok("PutImage", json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "1"})).await;
    let (_, v) =
        s.ecr("DescribeImageScanFindings", json!({"repositoryName": repo, "imageId": {"imageTag": "1"}})).await;
    assert_eq!(v["__type"], "ScanNotFoundException", "no scan on push yet: {v}");
    s.ecr_ok(
        "PutImageScanningConfiguration",
        json!({"repositoryName": repo, "imageScanningConfiguration": {"scanOnPush": true}}),
    )
    .await;
    s.ecr_ok("PutImage", json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "2"})).await;
    let id = json!({"repositoryName": repo, "imageId": {"imageTag": "2"}});
    let last = wait_complete(&s, repo, "2").await;
    assert_eq!(last["imageScanStatus"]["status"], "COMPLETE", "{last}");
    let first = last["imageScanFindings"]["imageScanCompletedAt"].clone();
    s.ecr_ok("PutImage", json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "3"})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the consumer has long read the event
    let again = s.ecr_ok("DescribeImageScanFindings", id).await;
    assert_eq!(again["imageScanStatus"]["status"], "COMPLETE", "{again}");
    assert_eq!(again["imageScanFindings"]["imageScanCompletedAt"], first, "a tag rescanned a scanned image");
}
both!(a_new_tag_scans_an_image_never_scanned);
