//! The blob contract on the object-storage backend, against the real S3-compatible server the
//! test script starts (`scripts/s3-test-server.sh`, its URL in `BERTH_TEST_S3_ENDPOINT`).

use berth_blob::{BlobStore, ObjectBlobStore, S3Config, S3Credentials, UploadState, testsuite};
use bytes::Bytes;
use futures_util::TryStreamExt;

/// A store on the test bucket under a prefix of its own (tests share the bucket).
fn config(prefix: &str) -> S3Config {
    let endpoint = std::env::var("BERTH_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("BERTH_TEST_S3_ENDPOINT is not set. Start a server with `scripts/s3-test-server.sh` and export its URL")
    });
    S3Config {
        bucket: "berth-test".into(),
        prefix: format!("{prefix}-{}-{}", std::process::id(), berth_crypto::random_bytes()[0]),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint),
        path_style: true,
        credentials: Some(S3Credentials {
            access_key_id: "berth-test-key".into(),
            secret_access_key: "S3CRET-never-shown".into(),
            session_token: None,
        }),
    }
}

fn store(cfg: &S3Config) -> ObjectBlobStore {
    // The smallest parts S3 takes, so that the suite's 5 MiB blob is a multipart upload.
    ObjectBlobStore::s3(cfg).expect("an S3 store").with_part_size(berth_blob::object::MIN_PART)
}

#[tokio::test]
async fn contract_on_s3() {
    let cfg = config("contract");
    store(&cfg).probe().await.expect("the S3 server answers");
    // Two stores on one bucket and prefix: two nodes.
    testsuite::run(|| store(&cfg)).await;
}

#[tokio::test]
async fn contract_on_s3_through_the_encrypting_wrapper() {
    let cfg = config("sealed");
    let book = testsuite::KeyBook::default();
    testsuite::run(|| testsuite::Sealing::new(store(&cfg), &book)).await;
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

async fn write(
    s: &ObjectBlobStore,
    id: &str,
    st: &UploadState,
    off: u64,
    data: &[u8],
    chunk: usize,
) -> (u64, UploadState) {
    let mut w = s.write_part(id, st, off).await.unwrap();
    for c in data.chunks(chunk) {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    w.finish().await.unwrap()
}

/// A large upload in three requests on alternating nodes, none aligned to a part, with a
/// request lost to a crash in the middle: the blob is exactly the recorded bytes.
#[tokio::test]
async fn a_multipart_upload_moves_between_nodes_and_survives_a_lost_request() {
    let cfg = config("multipart");
    let (a, b) = (store(&cfg), store(&cfg));
    let data = pattern(17 * 1024 * 1024 + 333);
    let id = "multi-1";
    let s0 = a.begin_upload(id).await.unwrap();
    let cut1 = 6 * 1024 * 1024 + 1;
    let (o1, s1) = write(&a, id, &s0, 0, &data[..cut1], 300_000).await;
    // Written in full on node b, but its state was never recorded.
    let _lost = write(&b, id, &s1, o1, &pattern(7 * 1024 * 1024), 1 << 20).await;
    let cut2 = 12 * 1024 * 1024 + 7;
    let (o2, s2) = write(&b, id, &s1, o1, &data[cut1..cut2], 1 << 20).await;
    let (o3, s3) = write(&a, id, &s2, o2, &data[cut2..], 65_536).await;
    assert_eq!(o3, data.len() as u64);
    assert!(
        matches!(a.read_upload(id, &s3).await, Err(berth_blob::BlobError::UploadUnreadable(_))),
        "an unfinished multipart upload cannot be read back, and says so"
    );
    let d = berth_core::Digest::new(berth_core::Algorithm::Sha256, "ab".repeat(32)).unwrap();
    b.commit(id, &s3, &d, o3).await.unwrap();
    let body = a.open(&d, None).await.unwrap();
    assert_eq!(body.len, data.len() as u64);
    let got: Vec<Bytes> = body.stream.try_collect().await.unwrap();
    assert!(got.concat() == data, "the blob is the recorded parts in order");
    let mid = a.open(&d, Some(8_000_000..9_000_001)).await.unwrap();
    let got: Vec<Bytes> = mid.stream.try_collect().await.unwrap();
    assert!(got.concat() == data[8_000_000..9_000_001], "a range across a part boundary");
    // Nothing of the upload is left in the bucket.
    let again = a.write_part(id, &s3, o3).await;
    assert!(matches!(again, Err(berth_blob::BlobError::UploadNotFound(_))), "the upload is gone");
    // A batch delete of many blobs at once, one of them missing.
    let missing = berth_core::Digest::new(berth_core::Algorithm::Sha256, "cd".repeat(32)).unwrap();
    a.delete_many(&[d.clone(), missing]).await.unwrap();
    assert_eq!(b.stat(&d).await.unwrap(), None);
}

/// The same upload begun for its final name: written in place, nothing copied at commit.
#[tokio::test]
async fn an_upload_begun_for_its_name_is_written_in_place() {
    let cfg = config("inplace");
    let (a, b) = (store(&cfg), store(&cfg));
    let data = pattern(11 * 1024 * 1024 + 5);
    let d = berth_core::Digest::new(berth_core::Algorithm::Sha256, "ef".repeat(32)).unwrap();
    let id = "inplace-1";
    let s0 = a.begin_upload_as(id, &d).await.unwrap();
    let (o1, s1) = write(&a, id, &s0, 0, &data[..7 * 1024 * 1024], 1 << 20).await;
    let (o2, s2) = write(&b, id, &s1, o1, &data[7 * 1024 * 1024..], 333_333).await;
    assert_eq!(a.stat(&d).await.unwrap(), None, "not visible before commit");
    b.commit(id, &s2, &d, o2).await.unwrap();
    // The upload is gone with its commit.
    assert!(matches!(a.commit(id, &s2, &d, o2).await, Err(berth_blob::BlobError::UploadNotFound(_))));
    let got: Vec<Bytes> = a.open(&d, None).await.unwrap().stream.try_collect().await.unwrap();
    assert!(got.concat() == data, "the blob is the parts in order");
}

#[tokio::test]
async fn a_wrong_bucket_or_endpoint_is_a_clear_error() {
    let mut cfg = config("wrong");
    cfg.bucket = "no-such-bucket-berth".into();
    let err = store(&cfg).probe().await.expect_err("a missing bucket is refused");
    assert!(err.to_string().contains("no-such-bucket-berth") || err.to_string().contains("NoSuchBucket"), "{err}");
    let mut cfg = config("wrong");
    cfg.endpoint = Some("http://127.0.0.1:1".into());
    let err = store(&cfg).probe().await.expect_err("an endpoint that does not answer");
    assert!(!format!("{err} {err:?}").contains("S3CRET"), "no secret in the message: {err}");
    assert!(!format!("{cfg:?}").contains("S3CRET"), "nor in the configuration's Debug");
}
