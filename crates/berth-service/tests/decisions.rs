//! The service decides every call for the caller it is given, whoever calls it (the HTTP API,
//! a console, the command line): no protocol layer is needed for a refusal.

use std::sync::Arc;

use berth_blob::MemoryBlobStore;
use berth_core::{Algorithm, RepoName};
use berth_meta::Meta;
use berth_service::error::Denied;
use berth_service::{Caller, Error, Principal, Registry};
use bytes::Bytes;
use futures_util::StreamExt;

#[tokio::test]
async fn calls_are_decided_in_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::connect(&format!("sqlite://{}", dir.path().join("m.db").display())).await.unwrap();
    // The in-memory blob store: the service runs on any backend.
    let reg = Registry::open(meta, Arc::new(MemoryBlobStore::new()), Default::default(), vec![]).await.unwrap();
    let op = Caller::operator();
    let repo = RepoName::parse("team/app").unwrap();
    let cfg = berth_crypto::digest_of(Algorithm::Sha256, b"{}");
    let body = futures_util::stream::iter([Ok(Bytes::from_static(b"{}"))]).boxed();
    reg.content().push_blob(&op, &repo, &cfg, body).await.unwrap();
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[]}}"#
    );
    reg.content().put_manifest(&op, &repo, "1", &[], None, m.as_bytes()).await.unwrap();

    // Anonymous: refused, unless the registry is open.
    let anonymous = Caller::anonymous();
    match reg.content().get_manifest(&anonymous, &repo, "1").await {
        Err(Error::Denied(Denied::Action { principal, action, .. })) => {
            assert_eq!((principal.as_str(), action.as_str()), ("anonymous", "ecr:BatchGetImage"))
        }
        other => panic!("{other:?}"),
    }
    // A principal that no identity backs (its user was never created) is refused too.
    let stranger = Caller::principal(Principal {
        arn: "arn:aws:iam::000000000000:user/ghost".into(),
        access_key_id: "AKIAGHOST".into(),
        expires: None,
    });
    assert!(matches!(
        reg.content().get_manifest(&stranger, &repo, "1").await,
        Err(Error::Denied(Denied::Action { .. }))
    ));
    let ids = [berth_service::ImageId { digest: None, tag: Some("1".into()) }];
    let deleted = reg.images().batch_delete_image(&stranger, "team/app", &ids).await;
    assert!(matches!(deleted, Err(Error::Denied(Denied::Action { .. }))), "{deleted:?}");
    // Operator-only work refuses everyone else.
    assert!(matches!(
        reg.gc().gc(&stranger, Default::default()).await,
        Err(Error::Denied(Denied::OperatorOnly { .. }))
    ));
    assert!(matches!(reg.rotate_token_key(&anonymous).await, Err(Error::Denied(Denied::OperatorOnly { .. }))));
    // The operator reads it.
    assert_eq!(reg.content().get_manifest(&op, &repo, "1").await.unwrap().content, m.as_bytes());
}
