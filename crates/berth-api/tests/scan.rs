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
    for _ in 0..100 {
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
    let r = s.registry.import_osv(dir.path()).await.unwrap();
    assert_eq!((r.files, r.records, r.entries), (5, 5, 4));
    assert_eq!(r.skipped.get("Hex"), Some(&1));
    // Idempotent.
    assert_eq!(s.registry.import_osv(dir.path()).await.unwrap().entries, 4);

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
