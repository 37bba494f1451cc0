//! Encryption at rest through the OCI API, on SQLite and PostgreSQL: what is pushed is stored
//! sealed (no plaintext, no key on disk) and pulled back byte for byte, whole and by range; one
//! copy per key scope; damaged ciphertext is never served and fsck names it.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Incompressible, distinctive bytes (xorshift).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
    }
    out
}

/// Every file of the data directory that contains `needle`.
fn holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap_or_default().windows(needle.len()).any(|w| w == needle))
        .collect()
}

async fn chunked_push(s: &Server, repo: &str, data: &[u8], cut: usize) -> String {
    let d = sha256(data);
    let r = s.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    let r = s.req(Method::PATCH, &loc).body(data[..cut].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    let r = s
        .req(Method::PUT, &format!("{loc}{}digest={d}", if loc.contains('?') { '&' } else { '?' }))
        .body(data[cut..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    d
}

async fn content_is_sealed_on_disk_and_pulled_back_whole(s: Server) {
    s.ecr_ok("CreateRepository", json!({"repositoryName": "sealed"})).await;
    let layer = noise(300_000, 1);
    let config = noise(2_000, 2);
    let small = noise(100, 3);
    let l = chunked_push(&s, "sealed", &layer, 70_001).await;
    let c = s.push_blob("sealed", &config).await;
    let m = image_manifest(&c, config.len(), &[(l.clone(), layer.len())]);
    assert_eq!(s.put_manifest("sealed", "v1", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    let sm = chunked_push(&s, "sealed", &small, 40).await;

    for (d, data) in [(&l, &layer), (&c, &config), (&sm, &small)] {
        let r = s.req(Method::GET, &format!("/v2/sealed/blobs/{d}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().to_vec(), *data, "{d} pulled back");
    }
    // Ranges across a segment edge (64 KiB) and at the end.
    for (a, b) in [(65_535usize, 65_537usize), (0, 0), (131_071, 200_000), (299_999, 299_999)] {
        let r = s
            .req(Method::GET, &format!("/v2/sealed/blobs/{l}"))
            .header("range", format!("bytes={a}-{b}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{a}-{b}");
        assert_eq!(r.bytes().await.unwrap().to_vec(), layer[a..=b], "{a}-{b}");
    }
    // No plaintext anywhere in the data directory (database included), at any of these offsets.
    // 69_960: in the hash state saved after the first chunk (the bytes after the last whole
    // 64-byte block).
    for (data, at) in
        [(&layer, 0), (&layer, 69_960), (&layer, 65_530), (&layer, 299_960), (&config, 1000), (&small, 50)]
    {
        let found = holding(s.dir.path(), &data[at..at + 32]);
        assert!(found.is_empty(), "plaintext at {at} found in {found:?}");
    }
    // Nor the master key (the test servers' is 32 bytes of 7), raw or in hex.
    assert!(holding(s.dir.path(), &[7u8; 32]).is_empty(), "the master key on disk");
    assert!(holding(s.dir.path(), "07".repeat(32).as_bytes()).is_empty(), "the master key on disk, in hex");
    let report = s.registry.fsck().fsck(&berth_service::Caller::operator(), |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.unrecorded_blobs.is_empty(), "{:?}", report.unrecorded_blobs);
}
both!(content_is_sealed_on_disk_and_pulled_back_whole);

async fn one_copy_per_scope_shared_by_mounts(s: Server) {
    let layer = noise(150_000, 4);
    let d = s.push_blob("one", &layer).await;
    let d2 = chunked_push(&s, "two", &layer, 99_999).await;
    assert_eq!(d, d2);
    // Both repositories use the registry's default key: one copy serves both.
    let copies = s.meta.blob_objects_of(std::slice::from_ref(&d)).await.unwrap();
    assert_eq!(copies.len(), 1, "{copies:?}");
    // A mount shares it too.
    let r = s.req(Method::POST, &format!("/v2/three/blobs/uploads/?mount={d}&from=one")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.req(Method::GET, &format!("/v2/three/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), layer);
    assert_eq!(s.meta.blob_objects_of(std::slice::from_ref(&d)).await.unwrap().len(), 1);
    // Every copy is a file whose name is not the digest.
    let files = files_under(&s.dir.path().join("blobs"));
    assert!(!files.iter().any(|f| f.to_string_lossy().contains(d.trim_start_matches("sha256:"))), "{files:?}");
}
both!(one_copy_per_scope_shared_by_mounts);

async fn damaged_ciphertext_is_never_served(s: Server) {
    let layer = noise(200_000, 5);
    let d = s.push_blob("damage", &layer).await;
    let copy = s.meta.blob_object(&d, "").await.unwrap().expect("a sealed copy");
    let name = copy.object.trim_start_matches("sha256:");
    let path = s.dir.path().join("blobs/sha256").join(&name[..2]).join(name);
    let mut raw = std::fs::read(&path).unwrap();
    raw[100_000] ^= 1; // in the second segment
    std::fs::write(&path, &raw).unwrap();
    // The first segment is intact and still served by range; a whole read is cut before the
    // damaged segment, so no client takes it for the blob.
    let r = s.req(Method::GET, &format!("/v2/damage/blobs/{d}")).header("range", "bytes=0-999").send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), layer[..1000]);
    // (The response may be cut before its headers or after some good bytes.)
    if let Ok(r) = s.req(Method::GET, &format!("/v2/damage/blobs/{d}")).send().await
        && let Ok(b) = r.bytes().await
    {
        assert!(b.len() < layer.len() && layer.starts_with(&b), "{} bytes served", b.len());
    }
    let report = s.registry.fsck().fsck(&berth_service::Caller::operator(), |_| {}).await.unwrap();
    assert!(report.problems.iter().any(|p| p.contains(&d) && p.contains("cannot be read")), "{:?}", report.problems);
}
both!(damaged_ciphertext_is_never_served);

/// Stores `data` as earlier versions did: in the clear under its digest, through an upload with
/// no data key, and links it into `repo`.
async fn store_in_clear(s: &Server, repo: &str, data: &[u8]) -> String {
    use berth_blob::BlobStore;
    let d = sha256(data);
    let digest: berth_core::Digest = d.parse().unwrap();
    let store = berth_blob::FsBlobStore::open(s.dir.path()).unwrap();
    let id = format!("old-{}", &d[7..19]);
    let state = store.begin_upload(&id).await.unwrap();
    let mut w = store.write_part(&id, &state, 0).await.unwrap();
    w.write(bytes::Bytes::copy_from_slice(data)).await.unwrap();
    let (len, state) = w.finish().await.unwrap();
    store.commit(&id, &state, &digest, len).await.unwrap();
    let repo_id = match s.meta.repo_id(repo).await.unwrap() {
        Some(r) => r,
        None => {
            s.ecr_ok("CreateRepository", json!({"repositoryName": repo})).await;
            s.meta.repo_id(repo).await.unwrap().unwrap()
        }
    };
    s.meta.create_upload(&id, repo_id, b"", &state.0, None).await.unwrap();
    s.meta.complete_upload(&id, repo_id, &d, len as i64, None).await.unwrap();
    d
}

async fn blobs_stored_in_the_clear_are_sealed_and_stay_readable(s: Server) {
    let layer = noise(250_000, 6);
    let config = noise(500, 7);
    let l = store_in_clear(&s, "old", &layer).await;
    let c = store_in_clear(&s, "old", &config).await;
    let m = image_manifest(&c, config.len(), &[(l.clone(), layer.len())]);
    assert_eq!(s.put_manifest("old", "v1", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    let pull = |d: String| {
        let s = &s;
        async move { s.req(Method::GET, &format!("/v2/old/blobs/{d}")).send().await.unwrap().bytes().await.unwrap() }
    };
    assert_eq!(pull(l.clone()).await.to_vec(), layer, "read in the clear");
    assert!(!holding(s.dir.path(), &layer[1000..1032]).is_empty(), "the test stored it in the clear");
    // A mount between default-key repositories shares the clear copy until it is sealed.
    let r = s.req(Method::POST, &format!("/v2/other/blobs/uploads/?mount={l}&from=old")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let op = berth_service::Caller::operator();
    let st = s.registry.encryption().status(&op).await.unwrap();
    assert_eq!((st.clear_blobs, st.clear_bytes), (2, (layer.len() + config.len()) as u64));
    let metrics = s.req(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("berth_blobs_in_clear 2"), "{metrics}");

    let seen = std::sync::Mutex::new(Vec::new());
    let r = s.registry.encryption().seal_all(&op, |d, _, _| seen.lock().unwrap().push(d.to_string())).await.unwrap();
    assert_eq!(r.sealed, 2);
    assert!(r.damaged.is_empty());
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(s.registry.encryption().status(&op).await.unwrap().clear_blobs, 0);
    assert!(holding(s.dir.path().join("blobs").as_path(), &layer[1000..1032]).is_empty(), "plaintext left");
    assert!(s.meta.blob_object(&l, "").await.unwrap().is_some());
    assert_eq!(pull(l.clone()).await.to_vec(), layer, "read sealed");
    let r = s.req(Method::GET, &format!("/v2/other/blobs/{l}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), layer, "the mounted repository reads the sealed copy");
    let r = s.req(Method::GET, "/v2/old/manifests/v1").header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report = s.registry.fsck().fsck(&op, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.unrecorded_blobs.is_empty(), "{:?}", report.unrecorded_blobs);
    // Running again finds nothing to do.
    assert_eq!(s.registry.encryption().seal_all(&op, |_, _, _| {}).await.unwrap().sealed, 0);
}
both!(blobs_stored_in_the_clear_are_sealed_and_stay_readable);

async fn a_round_cut_short_is_taken_up_again(s: Server) {
    let op = berth_service::Caller::operator();
    let data = noise(90_000, 8);
    let d = store_in_clear(&s, "cut", &data).await;
    // As if a round died after recording the sealed copy and before deleting the clear one:
    // seal it, then put the clear file and flag back.
    s.registry.encryption().seal_all(&op, |_, _, _| {}).await.unwrap();
    let again = store_in_clear(&s, "cut", &data).await;
    assert_eq!(again, d);
    assert_eq!(s.registry.encryption().status(&op).await.unwrap().clear_blobs, 1);
    let before = s.meta.blob_object(&d, "").await.unwrap().unwrap();
    let r = s.registry.encryption().seal_all(&op, |_, _, _| {}).await.unwrap();
    assert_eq!(r.sealed, 1);
    assert_eq!(s.meta.blob_object(&d, "").await.unwrap().unwrap(), before, "the recorded copy is kept");
    assert!(holding(s.dir.path().join("blobs").as_path(), &data[5000..5032]).is_empty());
    let r = s.req(Method::GET, &format!("/v2/cut/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
    let report = s.registry.fsck().fsck(&op, |_| {}).await.unwrap();
    assert!(report.is_clean() && report.unrecorded_blobs.is_empty(), "{report:?}");
}
both!(a_round_cut_short_is_taken_up_again);

/// A manifest with a marker only its bytes hold (not its media type or annotations, which are
/// kept beside it for queries).
fn marked_manifest(config: &str, layer: &str, marker: &str) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}],"berthTestNote":"{marker}"}}"#
    )
    .into_bytes()
}

async fn manifests_are_sealed_and_those_from_before_are_sealed_in_place(s: Server) {
    let op = berth_service::Caller::operator();
    let c = s.push_blob("man", b"{}").await;
    let l = s.push_blob("man", b"layer").await;
    let marker = format!("manifest-marker-{}", std::process::id());
    let m = marked_manifest(&c, &l, &marker);
    assert_eq!(s.put_manifest("man", "v1", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    let r = s.req(Method::GET, "/v2/man/manifests/v1").header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), m, "pulled back byte for byte");
    assert!(holding(s.dir.path(), marker.as_bytes()).is_empty(), "the manifest's bytes on disk");
    let id = s.meta.repo_id("man").await.unwrap().unwrap();
    let stored = s.meta.get_manifest(id, &sha256(&m)).await.unwrap().unwrap();
    assert!(stored.content.starts_with(&berth_meta::SEALED_MANIFEST));
    assert_eq!(stored.size, m.len() as i64, "the size is the manifest's own");

    // One stored in the clear, as an earlier version stored it: readable, then sealed in place.
    let old = marked_manifest(&c, &l, "from-an-earlier-version");
    let digest = sha256(&old);
    let blobs = vec![c.clone(), l.clone()];
    s.meta
        .put_manifest(
            id,
            &berth_meta::NewManifest {
                digest: &digest,
                media_type: OCI_MANIFEST,
                artifact_type: None,
                subject: None,
                annotations: None,
                content: &old,
                size: old.len() as i64,
                blobs: &blobs,
                children: &[],
                require_children: false,
                tag: Some("old"),
                immutable_tag: false,
                cause: "push",
            },
        )
        .await
        .unwrap();
    let get = |t: &'static str| {
        let s = &s;
        async move {
            s.req(Method::GET, &format!("/v2/man/manifests/{t}"))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec()
        }
    };
    assert_eq!(get("old").await, old);
    assert_eq!(s.registry.encryption().status(&op).await.unwrap().clear_manifests, 1);
    let r = s.registry.encryption().seal_all(&op, |_, _, _| {}).await.unwrap();
    assert_eq!(r.manifests, 1);
    assert_eq!(s.registry.encryption().status(&op).await.unwrap().clear_manifests, 0);
    let stored = s.meta.get_manifest(id, &digest).await.unwrap().unwrap();
    assert!(stored.content.starts_with(&berth_meta::SEALED_MANIFEST));
    // (A restart drops the read cache: the sealed bytes are what is read.)
    let s = s.restart().await;
    let r = s.req(Method::GET, "/v2/man/manifests/old").header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), old);
    let report = s.registry.fsck().fsck(&op, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}
both!(manifests_are_sealed_and_those_from_before_are_sealed_in_place);
