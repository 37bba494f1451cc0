//! The metadata store's behaviour, checked on SQLite and on PostgreSQL.

use berth_meta::{Meta, MetaError, NewManifest, RepoSettings, testing};

struct Db {
    meta: Meta,
    _dir: Option<tempfile::TempDir>,
}

async fn backends() -> Vec<(&'static str, Db)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let mut out = vec![("sqlite", Db { meta: Meta::connect(&url).await.unwrap(), _dir: Some(dir) })];
    if let Some(admin) = testing::postgres_url() {
        let url = testing::fresh_postgres_database(&admin).await.unwrap();
        out.push(("postgres", Db { meta: Meta::connect(&url).await.unwrap(), _dir: None }));
    }
    out
}

/// The repository's id, creating it if needed (as a push does).
async fn repo(m: &Meta, name: &str) -> Result<i64, MetaError> {
    Ok(m.create_repo(name, &RepoSettings::default(), &[], true).await?.id)
}

fn d(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn manifest<'a>(digest: &'a str, blobs: &'a [String], children: &'a [String], tag: Option<&'a str>) -> NewManifest<'a> {
    NewManifest {
        digest,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        artifact_type: Some("application/x-test"),
        subject: None,
        annotations: None,
        content: b"{}",
        blobs,
        children,
        require_children: true,
        tag,
        immutable_tag: false,
    }
}

#[tokio::test]
async fn repositories_and_catalog() {
    for (name, db) in backends().await {
        let m = &db.meta;
        assert_eq!(m.repo_id("a").await.unwrap(), None, "{name}");
        let a = repo(m, "a").await.unwrap();
        assert_eq!(repo(m, "a").await.unwrap(), a, "{name}: idempotent");
        for r in ["c", "b/x", "b", "111122223333:b", "111122223333:a/z", "222233334444:a"] {
            repo(m, r).await.unwrap();
        }
        // Each account lists its own repositories only.
        assert_eq!(m.list_repos("", None, 10).await.unwrap(), ["a", "b", "b/x", "c"], "{name}");
        assert_eq!(m.list_repos("", Some("b"), 2).await.unwrap(), ["b/x", "c"], "{name}");
        let other = m.list_repos("111122223333:", None, 10).await.unwrap();
        assert_eq!(other, ["111122223333:a/z", "111122223333:b"], "{name}");
        let after = m.list_repos("111122223333:", Some("111122223333:a/z"), 10).await.unwrap();
        assert_eq!(after, ["111122223333:b"], "{name}");
        // Migrations are idempotent on reconnect.
        m.close().await;
    }
}

#[tokio::test]
async fn manifests_need_their_references() {
    for (name, db) in backends().await {
        let m = &db.meta;
        let r = repo(m, "app").await.unwrap();
        let other = repo(m, "other").await.unwrap();
        m.link_blob(other, &d('a'), 10).await.unwrap();
        let blobs = vec![d('a')];
        // Linked in another repository only: missing here.
        match m.put_manifest(r, &manifest(&d('1'), &blobs, &[], Some("v1"))).await {
            Err(MetaError::MissingReferences(v)) => {
                assert_eq!(v, [format!("blob {}", d('a'))], "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(m.get_manifest_by_tag(r, "v1").await.unwrap(), None, "{name}: nothing stored");
        m.link_blob(r, &d('a'), 10).await.unwrap();
        m.put_manifest(r, &manifest(&d('1'), &blobs, &[], Some("v1"))).await.unwrap();
        let got = m.get_manifest_by_tag(r, "v1").await.unwrap().unwrap();
        assert_eq!(got.digest, d('1'), "{name}");
        assert_eq!(got.content, b"{}", "{name}");
        // An index over a missing child is refused; over a present one accepted.
        let kids = vec![d('2')];
        assert!(matches!(
            m.put_manifest(r, &manifest(&d('9'), &[], &kids, None)).await,
            Err(MetaError::MissingReferences(_))
        ));
        let kids = vec![d('1')];
        m.put_manifest(r, &manifest(&d('9'), &[], &kids, Some("idx"))).await.unwrap();
        // The child cannot go while the index lists it, nor its blob while it references it.
        assert!(matches!(m.delete_manifest(r, &d('1')).await, Err(MetaError::Referenced { .. })), "{name}");
        assert!(matches!(m.unlink_blob(r, &d('a')).await, Err(MetaError::Referenced { .. })), "{name}");
        assert!(m.delete_manifest(r, &d('9')).await.unwrap());
        assert_eq!(m.list_tags(r, None, 10).await.unwrap(), ["v1"], "{name}: index tag went with it");
        assert!(m.delete_manifest(r, &d('1')).await.unwrap());
        assert!(!m.delete_manifest(r, &d('1')).await.unwrap());
        assert!(m.list_tags(r, None, 10).await.unwrap().is_empty(), "{name}");
        assert!(m.unlink_blob(r, &d('a')).await.unwrap());
        assert_eq!(m.repo_blob(r, &d('a')).await.unwrap(), None);
        assert_eq!(m.blob_size(&d('a')).await.unwrap(), Some(10));
        assert!(m.dangling_blob_refs().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn tags_move_and_page() {
    for (name, db) in backends().await {
        let m = &db.meta;
        let r = repo(m, "t").await.unwrap();
        for (c, tag) in [('1', "b"), ('2', "a"), ('3', "C"), ('4', "b")] {
            m.put_manifest(r, &manifest(&d(c), &[], &[], Some(tag))).await.unwrap();
        }
        assert_eq!(m.get_manifest_by_tag(r, "b").await.unwrap().unwrap().digest, d('4'), "{name}: moved");
        // Byte order: uppercase sorts first.
        assert_eq!(m.list_tags(r, None, 10).await.unwrap(), ["C", "a", "b"], "{name}");
        assert_eq!(m.list_tags(r, Some("C"), 1).await.unwrap(), ["a"], "{name}");
        assert!(m.delete_tag(r, "a").await.unwrap());
        assert!(!m.delete_tag(r, "a").await.unwrap());
        assert!(m.get_manifest(r, &d('2')).await.unwrap().is_some(), "{name}: untagging keeps the manifest");
    }
}

#[tokio::test]
async fn referrers_filter_by_artifact_type() {
    for (name, db) in backends().await {
        let m = &db.meta;
        let r = repo(m, "r").await.unwrap();
        let subject = d('5');
        for (c, at) in [('6', "application/x-sig"), ('7', "application/x-sbom"), ('8', "application/x-sig")] {
            let digest = d(c);
            let mut nm = manifest(&digest, &[], &[], None);
            nm.subject = Some(&subject);
            nm.artifact_type = Some(at);
            m.put_manifest(r, &nm).await.unwrap();
        }
        assert_eq!(m.referrers(r, &subject, None).await.unwrap().len(), 3, "{name}");
        let sigs = m.referrers(r, &subject, Some("application/x-sig")).await.unwrap();
        assert_eq!(sigs.iter().map(|x| x.digest.clone()).collect::<Vec<_>>(), [d('6'), d('8')], "{name}");
        assert!(m.referrers(r, &d('0'), None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn uploads_advance_with_compare_and_set() {
    for (name, db) in backends().await {
        let m = &db.meta;
        let r = repo(m, "u").await.unwrap();
        m.create_upload("up1", r, b"state0").await.unwrap();
        m.advance_upload("up1", 0, 100, Some(b"state1")).await.unwrap();
        assert!(matches!(m.advance_upload("up1", 0, 50, None).await, Err(MetaError::UploadConflict(_))), "{name}");
        let u = m.get_upload("up1").await.unwrap().unwrap();
        assert_eq!((u.size, u.hash_state.as_deref()), (100, Some(&b"state1"[..])), "{name}");
        m.complete_upload("up1", r, &d('b'), 100).await.unwrap();
        assert_eq!(m.get_upload("up1").await.unwrap(), None);
        assert_eq!(m.repo_blob(r, &d('b')).await.unwrap(), Some(100), "{name}");
        m.create_upload("up2", r, b"").await.unwrap();
        assert_eq!(m.upload_ids().await.unwrap(), ["up2"]);
        assert!(m.delete_upload("up2").await.unwrap());
    }
}
