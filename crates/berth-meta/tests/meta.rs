//! The metadata store's behaviour, checked on SQLite and on PostgreSQL.

use berth_meta::{EventKind, Meta, MetaError, NewManifest, NotClaimed, RepoSettings, ScanJob, ScanRow, testing};

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
        size: 2,
        blobs,
        children,
        require_children: true,
        tag,
        immutable_tag: false,
        cause: "push",
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
        m.link_blob(other, &d('a'), 10, None).await.unwrap();
        let blobs = vec![d('a')];
        // Linked in another repository only: missing here.
        match m.put_manifest(r, &manifest(&d('1'), &blobs, &[], Some("v1"))).await {
            Err(MetaError::MissingReferences(v)) => {
                assert_eq!(v, [format!("blob {}", d('a'))], "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(m.get_manifest_by_tag(r, "v1").await.unwrap(), None, "{name}: nothing stored");
        m.link_blob(r, &d('a'), 10, None).await.unwrap();
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
        m.create_upload("up1", r, b"state0", b"parts0", None).await.unwrap();
        m.advance_upload("up1", 0, 100, Some(b"state1"), b"parts1").await.unwrap();
        let conflict = m.advance_upload("up1", 0, 50, None, b"parts-other").await;
        assert!(matches!(conflict, Err(MetaError::UploadConflict(_))), "{name}");
        let u = m.get_upload("up1").await.unwrap().unwrap();
        assert_eq!((u.size, u.hash_state.as_deref()), (100, Some(&b"state1"[..])), "{name}");
        assert_eq!(u.backend_state.as_deref(), Some(&b"parts1"[..]), "{name}: the store's state moves with it");
        m.complete_upload("up1", r, &d('b'), 100, None).await.unwrap();
        assert_eq!(m.get_upload("up1").await.unwrap(), None);
        assert_eq!(m.repo_blob(r, &d('b')).await.unwrap(), Some(100), "{name}");
        m.create_upload("up2", r, b"", b"", None).await.unwrap();
        assert_eq!(m.upload_ids().await.unwrap(), ["up2"]);
        assert!(m.delete_upload("up2").await.unwrap());
    }
}

#[tokio::test]
async fn jobs_are_claimed_once_and_taken_over_after_their_lease() {
    for (name, db) in backends().await {
        let m = &db.meta;
        let now = berth_meta::now_ms();
        m.enqueue_job("q", Some("k1"), "one", now - 10).await.unwrap();
        m.enqueue_job("q", None, "two", now - 5).await.unwrap();
        m.enqueue_job("q", None, "later", now + 60_000).await.unwrap();
        let a = m.claim_job("q", "node-a", now, now + 1_000).await.unwrap().expect("a due job");
        assert_eq!((a.payload.as_str(), a.attempts), ("one", 1), "{name}: the longest due first");
        let b = m.claim_job("q", "node-b", now, now + 1_000).await.unwrap().expect("another due job");
        assert_eq!(b.payload, "two", "{name}: a leased job is not claimed twice");
        assert!(m.claim_job("q", "node-c", now, now + 1_000).await.unwrap().is_none(), "{name}: none left due");
        // node-a dies: after its lease, node-c takes the job, and node-a can no longer renew it.
        let later = now + 2_000;
        let c = m.claim_job("q", "node-c", later, later + 1_000).await.unwrap().expect("lease passed");
        assert_eq!((c.id, c.attempts), (a.id, 2), "{name}");
        assert!(!m.renew_job(&a, "node-a", later + 5_000).await.unwrap(), "{name}: the lease is node-c's");
        assert!(m.renew_job(&c, "node-c", later + 5_000).await.unwrap(), "{name}");
        // Asked for again while running: finishing the older request keeps the newer one.
        m.enqueue_job("q", Some("k1"), "one again", now - 20).await.unwrap();
        assert!(!m.finish_job(&c).await.unwrap(), "{name}");
        let again = m.claim_job("q", "node-b", later, later + 1_000).await.unwrap().expect("the newer request");
        assert_eq!((again.payload.as_str(), again.attempts), ("one again", 1), "{name}");
        assert!(m.finish_job(&again).await.unwrap(), "{name}");
        assert!(m.finish_job(&b).await.unwrap(), "{name}");
        let counts = m.job_counts(later).await.unwrap();
        assert_eq!(counts.len(), 1, "{name}");
        assert_eq!((counts[0].1.queued, counts[0].1.running), (1, 0), "{name}: only the later job is left");
    }
}

#[tokio::test]
async fn a_job_asked_for_behind_a_run_waits_for_it_and_runs_last() {
    for (name, db) in backends().await {
        let m = &db.meta;
        let now = berth_meta::now_ms();
        m.enqueue_behind("r", "tag:v1", "first", now - 10).await.unwrap();
        let a = m.claim_job("r", "node-a", now, now + 30_000).await.unwrap().expect("due");
        // Asked for again while it runs: not claimable until that run ends.
        m.enqueue_behind("r", "tag:v1", "second", now - 5).await.unwrap();
        m.enqueue_behind("r", "tag:v1", "third", now - 1).await.unwrap();
        assert!(m.claim_job("r", "node-b", now, now + 30_000).await.unwrap().is_none(), "{name}: runs never overlap");
        assert!(m.renew_claim(&a, "node-a", now + 60_000).await.unwrap(), "{name}: the run keeps its claim");
        assert!(!m.renew_claim(&a, "node-b", now + 60_000).await.unwrap(), "{name}");
        // The run ends: the job stays for the newest request, claimable at once.
        assert!(!m.complete_job(&a, "node-a").await.unwrap(), "{name}");
        let b = m.claim_job("r", "node-b", now, now + 30_000).await.unwrap().expect("the newest request");
        assert_eq!(b.payload, "third", "{name}");
        // A failure backs off; a failure of a run asked for again meanwhile does not delay the newer.
        assert!(m.retry_job(&b, "node-b", now + 60_000, "away").await.unwrap(), "{name}");
        assert!(m.claim_job("r", "node-b", now, now + 30_000).await.unwrap().is_none(), "{name}: backing off");
        let c = m.claim_job("r", "node-b", now + 61_000, now + 90_000).await.unwrap().expect("after the back-off");
        assert_eq!((c.payload.as_str(), c.attempts), ("third", 2), "{name}: attempts count on");
        m.enqueue_behind("r", "tag:v1", "fourth", now).await.unwrap();
        assert!(m.retry_job(&c, "node-b", now + 600_000, "away").await.unwrap(), "{name}");
        let d = m.claim_job("r", "node-a", now + 61_000, now + 90_000).await.unwrap().expect("not held back");
        assert_eq!(d.payload, "fourth", "{name}");
        assert!(m.complete_job(&d, "node-a").await.unwrap(), "{name}: done and gone");
        assert!(m.claim_job("r", "node-a", now + 700_000, now + 800_000).await.unwrap().is_none(), "{name}");
    }
}

#[tokio::test]
async fn singleton_jobs_run_one_round_at_a_time() {
    for (name, db) in backends().await {
        let m = &db.meta;
        let now = berth_meta::now_ms();
        assert_eq!(
            m.claim_singleton("periodic:gc", "a", now, now + 100, false).await.unwrap(),
            Err(NotClaimed::Missing)
        );
        m.ensure_job("periodic", "periodic:gc", now).await.unwrap();
        m.ensure_job("periodic", "periodic:gc", now + 99_999).await.unwrap(); // left as it is
        let round = m.claim_singleton("periodic:gc", "a", now, now + 1_000, false).await.unwrap().unwrap();
        assert_eq!(round.runs, 0, "{name}");
        match m.claim_singleton("periodic:gc", "b", now, now + 1_000, true).await.unwrap() {
            Err(NotClaimed::Held { by, until }) => assert_eq!((by.as_str(), until), ("a", now + 1_000), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        // The holder extends its own claim.
        assert!(m.claim_singleton("periodic:gc", "a", now, now + 2_000, false).await.unwrap().is_ok(), "{name}");
        assert!(m.reschedule_job(&round, "a", now + 60_000, true, None).await.unwrap(), "{name}");
        assert_eq!(m.job_runs("periodic:gc").await.unwrap(), Some(1), "{name}");
        assert_eq!(
            m.claim_singleton("periodic:gc", "b", now, now + 1_000, false).await.unwrap(),
            Err(NotClaimed::NotDue(now + 60_000)),
            "{name}"
        );
        // Asked for out of turn (`berth gc`): claimed at once, round counted, schedule kept.
        let manual = m.claim_singleton("periodic:gc", "b", now, now + 1_000, true).await.unwrap().unwrap();
        assert_eq!(manual.runs, 1, "{name}");
        assert!(!m.reschedule_job(&manual, "a", now, true, None).await.unwrap(), "{name}: not a's claim");
        assert!(m.release_job(&manual, "b").await.unwrap(), "{name}");
        assert_eq!(m.job_runs("periodic:gc").await.unwrap(), Some(1), "{name}: a released claim is no round");
    }
}

#[tokio::test]
async fn changes_write_events_in_their_transaction() {
    for (name, db) in backends().await {
        let m = &db.meta;
        let r = repo(m, "app").await.unwrap();
        m.link_blob(r, &d('a'), 10, None).await.unwrap();
        let blobs = vec![d('a')];
        m.put_manifest(r, &manifest(&d('1'), &blobs, &[], Some("v1"))).await.unwrap();
        m.put_manifest(r, &manifest(&d('1'), &blobs, &[], Some("v1"))).await.unwrap(); // nothing changes
        m.put_manifest(r, &manifest(&d('2'), &blobs, &[], Some("v1"))).await.unwrap();
        // A push that fails writes nothing.
        assert!(m.put_manifest(r, &manifest(&d('3'), &[d('f')], &[], Some("v1"))).await.is_err(), "{name}");
        assert!(m.delete_tag(r, "v1").await.unwrap(), "{name}");
        assert!(m.delete_manifest(r, &d('1')).await.unwrap(), "{name}");
        let job = ScanJob { repo_id: r, repo: "app".into(), digest: d('2'), started_at: 5 };
        assert!(m.queue_scan(&job, None).await.unwrap(), "{name}");
        assert!(!m.queue_scan(&job, Some(5)).await.unwrap(), "{name}: the same request twice queues once");
        let now = berth_meta::now_ms();
        let claimed = m.claim_job("scan", "n", now, now + 1_000).await.unwrap().expect("the scan job");
        assert_eq!(ScanJob::from_payload(&claimed.payload), Some(job.clone()), "{name}");
        let row = ScanRow { status: "COMPLETE".into(), started_at: 5, completed_at: Some(6), ..Default::default() };
        assert!(m.finish_scan(&claimed, &job, &row, r#"{"status":"COMPLETE"}"#).await.unwrap(), "{name}");
        m.delete_repo(r, true).await.unwrap();
        let events = m.events_after(0, 100).await.unwrap();
        let seen: Vec<(EventKind, Option<&str>, Option<&str>)> =
            events.iter().map(|e| (e.kind.unwrap(), e.digest.as_deref(), e.tag.as_deref())).collect();
        let (one, two) = (d('1'), d('2'));
        assert_eq!(
            seen,
            [
                (EventKind::ManifestStored, Some(one.as_str()), Some("v1")),
                (EventKind::TagMoved, Some(one.as_str()), Some("v1")),
                (EventKind::ManifestStored, Some(two.as_str()), Some("v1")),
                (EventKind::TagMoved, Some(two.as_str()), Some("v1")),
                (EventKind::TagDeleted, Some(two.as_str()), Some("v1")),
                (EventKind::ImageDeleted, Some(one.as_str()), None),
                (EventKind::ScanCompleted, Some(two.as_str()), None),
                (EventKind::ImageDeleted, Some(two.as_str()), None),
            ],
            "{name}"
        );
        assert!(events.iter().all(|e| e.repo == "app"), "{name}");
        assert!(events[3].detail.as_deref().unwrap().contains(&one), "{name}: a moved tag names where it was");
        assert!(events[7].detail.as_deref().unwrap().contains("repository_deleted"), "{name}");
        // Cursors move by compare-and-set; pruning keeps what a consumer has not read.
        assert_eq!(m.event_cursor("c", 0).await.unwrap(), 0, "{name}");
        assert!(m.event_pending("c", &[EventKind::ManifestStored], "app", &two).await.unwrap(), "{name}");
        assert!(m.advance_event_cursor("c", 0, events[4].id).await.unwrap(), "{name}");
        assert!(!m.advance_event_cursor("c", 0, events[5].id).await.unwrap(), "{name}: not at 0 any more");
        assert!(!m.event_pending("c", &[EventKind::ManifestStored], "app", &two).await.unwrap(), "{name}");
        assert_eq!(m.prune_events(berth_meta::now_ms() + 1).await.unwrap(), 5, "{name}");
        assert_eq!(m.events_after(0, 100).await.unwrap().len(), 3, "{name}");
    }
}

/// Concurrent writers on PostgreSQL draw event ids in one order and commit in it, so a reader
/// following the outbox while they write never passes an id that appears later.
#[tokio::test]
async fn a_reader_following_the_outbox_misses_nothing() {
    for (name, db) in backends().await {
        let m = db.meta.clone();
        let r = repo(&m, "busy").await.unwrap();
        m.link_blob(r, &d('a'), 10, None).await.unwrap();
        let writers: Vec<_> = (0..8u32)
            .map(|w| {
                let m = m.clone();
                tokio::spawn(async move {
                    for i in 0..25u32 {
                        let digest = format!("sha256:{:064x}", w * 1000 + i + 1);
                        let blobs = vec![d('a')];
                        let mut nm = manifest(&digest, &blobs, &[], None);
                        nm.content = b"{ }";
                        m.put_manifest(r, &nm).await.unwrap();
                    }
                })
            })
            .collect();
        let mut position = 0;
        let mut read = std::collections::BTreeSet::new();
        loop {
            let finished = writers.iter().all(|w| w.is_finished());
            let batch = m.events_after(position, 7).await.unwrap();
            if batch.is_empty() && finished {
                break;
            }
            for e in batch {
                assert!(e.id > position, "{name}");
                position = e.id;
                read.insert(e.digest.unwrap());
            }
        }
        for w in writers {
            w.await.unwrap();
        }
        let total = m.events_after(0, 1000).await.unwrap().len();
        assert_eq!((read.len(), total), (200, 200), "{name}: every event read once, in order");
    }
}
