//! Two nodes in one process over one PostgreSQL database: what one node changes, the other's
//! caches drop at once (the cache bus), well inside the documented staleness bound.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};

async fn metric(s: &Server, name: &str) -> Option<f64> {
    let text = s.req(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.parse().ok()))
}

async fn manifest_digest(s: &Server, repo: &str, tag: &str) -> Option<String> {
    let r =
        s.req(Method::GET, &format!("/v2/{repo}/manifests/{tag}")).header("accept", OCI_MANIFEST).send().await.unwrap();
    match r.status() {
        StatusCode::OK => Some(sha256(&r.bytes().await.unwrap())),
        StatusCode::NOT_FOUND => None,
        other => panic!("GET manifest: {other}"),
    }
}

/// Polls node `c` until `tag` names `want` (None: is gone); returns how long that took.
async fn seen_within(c: &Server, tag: &str, want: Option<&str>, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if manifest_digest(c, "moving", tag).await.as_deref() == want {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "node C still serves the old {tag} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_or_deleted_on_one_node_is_never_served_stale_by_another() {
    let Some(a) = Server::start(Db::Postgres).await else { return };
    let c = Server::start_on_with(tempfile::tempdir().unwrap(), a.db_url.clone(), a.options, true, 0).await;
    // Both nodes hear their own heartbeat within a few seconds: caching is on.
    let t = Instant::now();
    while metric(&a, "berth_cache_live").await != Some(1.0) || metric(&c, "berth_cache_live").await != Some(1.0) {
        assert!(t.elapsed() < Duration::from_secs(10), "the cache bus never went live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A `berth` command on the same database (it sends invalidations, runs no listener): the
    // nodes must not wait for it.
    let cli = berth_service::Registry::open(
        berth_meta::Meta::connect(&a.db_url).await.unwrap(),
        std::sync::Arc::new(berth_blob::FsBlobStore::open(tempfile::tempdir().unwrap().path()).unwrap()),
        berth_service::Settings {
            seal_key: berth_crypto::seal::SealKey::from_bytes(&[7; 32]).unwrap(),
            master_keys: berth_crypto::keyring::Keyring::parse(&"07".repeat(32)).unwrap(),
            ..Default::default()
        },
        vec![],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    let (d1, _) = a.push_image("moving", "v", "first").await;
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "a push waited {:?} for a command's acknowledgements",
        t.elapsed()
    );
    assert_eq!(manifest_digest(&c, "moving", "v").await.as_deref(), Some(d1.as_str()));
    // Read again: now from C's cache.
    assert_eq!(manifest_digest(&c, "moving", "v").await.as_deref(), Some(d1.as_str()));

    let mut worst = Duration::ZERO;
    for round in 0..5 {
        let t = Instant::now();
        let (d2, _) = a.push_image("moving", "v", &format!("round {round}")).await;
        assert!(t.elapsed() < Duration::from_millis(900), "a push waited {:?} for acknowledgements", t.elapsed());
        // The write answered once C had dropped the old tag: C's very next read sees the move.
        assert_eq!(
            manifest_digest(&c, "moving", "v").await.as_deref(),
            Some(d2.as_str()),
            "read after write, round {round}"
        );
        let took = seen_within(&c, "v", Some(&d2), Duration::from_secs(10)).await;
        worst = worst.max(took);
        // Cached again at C before the next move.
        assert_eq!(manifest_digest(&c, "moving", "v").await.as_deref(), Some(d2.as_str()));
    }
    let r = a.req(Method::DELETE, "/v2/moving/manifests/v").send().await.unwrap();
    assert!(r.status().is_success(), "untag: {}", r.status());
    assert_eq!(manifest_digest(&c, "moving", "v").await, None, "a delete is seen at once too");
    let gone = seen_within(&c, "v", None, Duration::from_secs(10)).await;
    worst = worst.max(gone);
    eprintln!("tag moves reached the other node within {worst:?} (worst of 6)");
    cli.flush_invalidations().await;
    // The notification did it, not the 5 s backstop sweep.
    assert!(worst < Duration::from_secs(1), "a move took {worst:?} to reach the other node");
}

/// A node started without the others' master key, or secrets key, refuses to start, naming
/// what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_master_key_refuses_to_start() {
    let Some(a) = Server::start(Db::Postgres).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let settings = berth_service::Settings {
        seal_key: berth_crypto::seal::SealKey::from_bytes(&[7; 32]).unwrap(),
        master_keys: berth_crypto::keyring::Keyring::default(),
        ..Default::default()
    };
    let meta = berth_meta::Meta::connect(&a.db_url).await.unwrap();
    let blobs = std::sync::Arc::new(berth_blob::FsBlobStore::open(dir.path()).unwrap());
    let err = berth_service::Registry::open(meta, blobs, settings, vec![]).await.err().expect("refused");
    assert!(err.to_string().contains("same BERTH_MASTER_KEY"), "{err}");
    // Another secrets key: the token key the others sealed does not open.
    let settings = berth_service::Settings {
        seal_key: berth_crypto::seal::SealKey::from_bytes(&[8; 32]).unwrap(),
        master_keys: berth_crypto::keyring::Keyring::parse(&"07".repeat(32)).unwrap(),
        ..Default::default()
    };
    let meta = berth_meta::Meta::connect(&a.db_url).await.unwrap();
    let blobs = std::sync::Arc::new(berth_blob::FsBlobStore::open(dir.path()).unwrap());
    let err = berth_service::Registry::open(meta, blobs, settings, vec![]).await.err().expect("refused");
    assert!(err.to_string().contains("same secrets key"), "{err}");
    // The first node still serves.
    a.push_image("still", "1", "after the refusal").await;
}
