//! The blob storage contract (`berth_blob::testsuite`), run against every backend.

use berth_blob::{FsBlobStore, MemoryBlobStore, testsuite};

#[tokio::test]
async fn filesystem() {
    let dir = tempfile::tempdir().unwrap();
    // Two stores opened on one directory: two nodes over shared storage.
    testsuite::run(|| FsBlobStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn filesystem_with_reserve() {
    let dir = tempfile::tempdir().unwrap();
    testsuite::run(|| FsBlobStore::open(dir.path()).unwrap().with_reserve(1 << 20).unwrap()).await;
}

#[tokio::test]
async fn memory() {
    let store = MemoryBlobStore::new();
    // Clones share the data.
    testsuite::run(|| store.clone()).await;
}

// The same contract through the encrypting wrapper, over each backend.

#[tokio::test]
async fn sealed_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let book = testsuite::KeyBook::default();
    testsuite::run(|| testsuite::Sealing::new(FsBlobStore::open(dir.path()).unwrap(), &book)).await;
}

#[tokio::test]
async fn sealed_memory() {
    let store = MemoryBlobStore::new();
    let book = testsuite::KeyBook::default();
    testsuite::run(|| testsuite::Sealing::new(store.clone(), &book)).await;
}
