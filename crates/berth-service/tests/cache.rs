//! The read cache never serves a moved or deleted tag once the write has returned, even with
//! readers racing the writers.

use std::sync::Arc;

use berth_blob::FsBlobStore;
use berth_core::{Algorithm, RepoName};
use berth_meta::Meta;
use berth_service::error::NotFound;
use berth_service::{Caller, Error, Registry};
use bytes::Bytes;
use futures_util::StreamExt;

fn manifest(config: &str) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[]}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_moves_and_deletes_are_never_served_stale() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::connect(&format!("sqlite://{}", dir.path().join("m.db").display())).await.unwrap();
    let reg = Registry::open(meta, Arc::new(FsBlobStore::open(dir.path()).unwrap()), Default::default(), vec![])
        .await
        .unwrap();
    let op = Caller::operator();
    let repo = RepoName::parse("cache/test").unwrap();
    let cfg = berth_crypto::digest_of(Algorithm::Sha256, b"{}");
    let body = futures_util::stream::iter([Ok(Bytes::from_static(b"{}"))]).boxed();
    reg.content().push_blob(&op, &repo, &cfg, body).await.unwrap();
    // Distinct manifests: same config, different whitespace.
    let manifests: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            let mut m = manifest(&cfg.to_string());
            m.extend(std::iter::repeat_n(b' ', i));
            m
        })
        .collect();
    let digests: Vec<String> =
        manifests.iter().map(|m| berth_crypto::digest_of(Algorithm::Sha256, m).to_string()).collect();

    for round in 0..200 {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (reg, repo, op) = (reg.clone(), repo.clone(), op.clone());
                tokio::spawn(async move {
                    for _ in 0..5 {
                        let _ = reg.content().get_manifest(&op, &repo, "moving").await;
                    }
                })
            })
            .collect();
        let want = round % manifests.len();
        reg.content().put_manifest(&op, &repo, "moving", &[], None, &manifests[want]).await.unwrap();
        // Once the write has returned, every read sees it.
        let got = reg.content().get_manifest(&op, &repo, "moving").await.unwrap();
        assert_eq!(got.digest, digests[want], "round {round}: stale tag served");
        for r in readers {
            r.await.unwrap();
        }
        let got = reg.content().get_manifest(&op, &repo, "moving").await.unwrap();
        assert_eq!(got.digest, digests[want], "round {round}: a racing reader left a stale entry");
    }
    // Deleting the tag, then the manifest by digest.
    reg.content().get_manifest(&op, &repo, "moving").await.unwrap();
    reg.content().delete_manifest(&op, &repo, "moving").await.unwrap();
    assert!(matches!(
        reg.content().get_manifest(&op, &repo, "moving").await,
        Err(Error::NotFound(NotFound::Manifest { .. }))
    ));
    let last = &digests[199 % manifests.len()];
    reg.content().put_manifest(&op, &repo, "again", &[], None, &manifests[199 % manifests.len()]).await.unwrap();
    reg.content().get_manifest(&op, &repo, "again").await.unwrap();
    reg.content().get_manifest(&op, &repo, last).await.unwrap();
    reg.content().delete_manifest(&op, &repo, last).await.unwrap();
    assert!(matches!(
        reg.content().get_manifest(&op, &repo, "again").await,
        Err(Error::NotFound(NotFound::Manifest { .. }))
    ));
    assert!(matches!(
        reg.content().get_manifest(&op, &repo, last).await,
        Err(Error::NotFound(NotFound::Manifest { .. }))
    ));
    // Blob links too.
    let lone = berth_crypto::digest_of(Algorithm::Sha256, b"lone");
    let body = futures_util::stream::iter([Ok(Bytes::from_static(b"lone"))]).boxed();
    reg.content().push_blob(&op, &repo, &lone, body).await.unwrap();
    assert_eq!(reg.content().stat_blob(&op, &repo, &lone).await.unwrap(), 4);
    reg.content().delete_blob(&op, &repo, &lone).await.unwrap();
    assert!(matches!(reg.content().stat_blob(&op, &repo, &lone).await, Err(Error::NotFound(NotFound::Blob { .. }))));
}
