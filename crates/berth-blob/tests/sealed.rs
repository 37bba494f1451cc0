//! The encrypting wrapper over the filesystem backend: ranged reads at segment edges, and
//! stored bytes changed on disk never served.

use std::sync::Arc;

use berth_blob::sealed::SealedStore;
use berth_blob::{BlobBody, FsBlobStore};
use berth_core::{Algorithm, Digest};
use berth_crypto::envelope::{DataKey, SEALED_SEGMENT, SEGMENT};
use bytes::Bytes;
use futures_util::StreamExt;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13).wrapping_add((i >> 16) as u8)).collect()
}

fn object(n: u8) -> Digest {
    Digest::new(Algorithm::Sha256, format!("{:02x}", n).repeat(32)).unwrap()
}

/// The body, or the error that ended it, with what it yielded before.
async fn drain(b: BlobBody) -> (Vec<u8>, Option<std::io::Error>) {
    let mut out = Vec::new();
    let mut s = b.stream;
    while let Some(c) = s.next().await {
        match c {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn stored_path(root: &std::path::Path, d: &Digest) -> std::path::PathBuf {
    root.join("blobs").join("sha256").join(&d.hex()[..2]).join(d.hex())
}

#[tokio::test]
async fn ranged_reads_at_segment_edges() {
    let dir = tempfile::tempdir().unwrap();
    let store = SealedStore::new(Arc::new(FsBlobStore::open(dir.path()).unwrap()));
    let key = DataKey::generate();
    let n = 3 * SEGMENT + 100;
    let data = pattern(n);
    let o = object(1);
    store.put("edges", &o, &key, Bytes::from(data.clone())).await.unwrap();
    let s = SEGMENT as u64;
    let n = n as u64;
    for r in
        [0..1, s - 1..s, s - 1..s + 1, s..s + 1, s..2 * s, 2 * s - 1..3 * s + 1, 3 * s..n, n - 1..n, 0..n, 5..n - 5]
    {
        let (got, err) = drain(store.open(&o, &key, n, Some(r.clone())).await.unwrap()).await;
        assert!(err.is_none(), "range {r:?}: {err:?}");
        assert_eq!(got, data[r.start as usize..r.end as usize], "range {r:?}");
    }
    // The plaintext is nowhere in the stored object.
    let raw = std::fs::read(stored_path(dir.path(), &o)).unwrap();
    assert_eq!(raw.len() as u64, berth_crypto::envelope::sealed_len(n));
    assert!(!raw.windows(32).any(|w| w == &data[1000..1032]), "plaintext on disk");
}

#[tokio::test]
async fn changed_cut_reordered_and_swapped_content_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = SealedStore::new(Arc::new(FsBlobStore::open(dir.path()).unwrap()));
    let key = DataKey::generate();
    let n = 4 * SEGMENT + 10;
    let data = pattern(n);
    let (o, other) = (object(2), object(3));
    store.put("victim", &o, &key, Bytes::from(data.clone())).await.unwrap();
    store.put("other", &other, &DataKey::generate(), Bytes::from(data.clone())).await.unwrap();
    let path = stored_path(dir.path(), &o);
    let good = std::fs::read(&path).unwrap();
    let other_raw = std::fs::read(stored_path(dir.path(), &other)).unwrap();
    let ss = SEALED_SEGMENT;

    let mut flipped = good.clone();
    flipped[2 * ss + 7] ^= 0x40;
    let mut swapped = good.clone();
    let (a, b) = swapped.split_at_mut(2 * ss);
    a[ss..].swap_with_slice(&mut b[..ss]);
    let mut foreign = good.clone();
    foreign[ss..2 * ss].copy_from_slice(&other_raw[ss..2 * ss]);
    let mut cut = good.clone();
    cut.truncate(4 * ss); // the last, short segment gone
    // Each with the segment it damaged.
    let cases: [(&str, Vec<u8>, u64); 4] =
        [("flipped", flipped, 2), ("swapped", swapped, 1), ("foreign", foreign, 1), ("cut", cut, 4)];
    for (what, bytes, seg) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let whole = match store.open(&o, &key, n as u64, None).await {
            Err(_) => continue, // refused before any byte: fine
            Ok(b) => drain(b).await,
        };
        assert!(whole.1.is_some(), "{what}: the read ends in an error");
        assert!(whole.0.len() < n, "{what}: not all of it was served");
        assert_eq!(whole.0, data[..whole.0.len()], "{what}: what was served came before the damage");
        // A range over the damaged segment fails too; one before it is still served.
        let damaged = seg * SEGMENT as u64..seg * SEGMENT as u64 + 1;
        match store.open(&o, &key, n as u64, Some(damaged)).await {
            Ok(b) => assert!(drain(b).await.1.is_some(), "{what}: the damaged segment alone"),
            Err(_) => assert_eq!(what, "cut", "only a cut object is refused before reading"),
        }
        let (got, err) = drain(store.open(&o, &key, n as u64, Some(0..10)).await.unwrap()).await;
        assert!(err.is_none(), "{what}: segment 0 is intact");
        assert_eq!(got, data[..10]);
    }
    // With the right bytes back, everything reads again.
    std::fs::write(&path, &good).unwrap();
    assert_eq!(drain(store.open(&o, &key, n as u64, None).await.unwrap()).await.0, data);
    // And under another key, nothing.
    let (got, err) = drain(store.open(&o, &DataKey::generate(), n as u64, None).await.unwrap()).await;
    assert!(got.is_empty() && err.is_some());
}

#[tokio::test]
async fn an_upload_continues_from_its_state_with_the_tail_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SealedStore::new(Arc::new(FsBlobStore::open(dir.path()).unwrap()));
    let key = DataKey::generate();
    let data = pattern(2 * SEGMENT + 333);
    let o = object(4);
    let s0 = store.begin_upload_as("u1", o.clone()).await.unwrap();
    let mut w = store.write_part("u1", &s0, &key, 0).await.unwrap();
    w.write(Bytes::copy_from_slice(&data[..SEGMENT + 5])).await.unwrap();
    let (o1, s1) = w.finish().await.unwrap();
    assert_eq!(o1, SEGMENT as u64 + 5);
    // The held-back tail is in the state, sealed.
    assert!(!s1.0.windows(32).any(|w| w == &data[SEGMENT..SEGMENT + 5].repeat(7)[..32]));
    assert!(store.write_part("u1", &s1, &key, o1 + 1).await.is_err(), "a wrong offset is refused");
    assert!(store.write_part("u1", &s1, &DataKey::generate(), o1).await.is_err(), "another key is refused");
    let mut w = store.write_part("u1", &s1, &key, o1).await.unwrap();
    w.write(Bytes::copy_from_slice(&data[SEGMENT + 5..])).await.unwrap();
    let (o2, s2) = w.finish().await.unwrap();
    assert_eq!(drain(store.read_upload("u1", &s2, &key).await.unwrap()).await.0, data);
    let (named, _) = store.commit("u1", &s2, &key, o2).await.unwrap();
    assert_eq!(named, o, "stored under the name chosen at the start");
    assert_eq!(drain(store.open(&o, &key, o2, None).await.unwrap()).await.0, data);
}
