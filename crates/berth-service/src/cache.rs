//! Read cache for the hot pull path: repository ids, manifests by tag and by digest, and blob
//! links. A manifest's bytes never change for a digest; what can change is which manifest a tag
//! names and whether something still exists, so writes that move or delete bump the repository's
//! version and drop the affected entries *after* the database commit, and a reader only fills the
//! cache if the version it saw before reading the database is still current. A reader that raced
//! a write therefore never leaves a stale entry behind.
//!
//! Several nodes (PostgreSQL): every invalidation is also sent to the other nodes
//! (`LISTEN`/`NOTIFY`, see [`crate::cache_bus`]), which apply it the same way. Caching is on in a
//! node only while its listener hears its own heartbeat; a listener that lost its connection
//! (and so perhaps messages) clears everything and waits for the next heartbeat. As a backstop
//! against a notification that is never sent (a node that died between its commit and its
//! notify), everything cached is dropped every [`STALE_BOUND`].
//!
//! Beside it, the caches of what access decisions read (repository policies and tags, keys and
//! identities) and of scan policies, under the same rule: cleared by every write, filled only by
//! a reader whose epoch is still current.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::caller::{Identity, ResolvedKey};
use crate::model::Manifest;
use crate::scan_policy::ScanPolicy;

/// The longest a cached entry is used on a node of several (PostgreSQL) when the notification
/// of a change never arrives; normally a change reaches every node in milliseconds.
pub(crate) const STALE_BOUND: Duration = Duration::from_secs(5);

/// A change other nodes must drop cached copies of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inval {
    Tag(String, String),
    Blob(String, String),
    Repo(String),
    Manifests(String),
    AllBlobs,
    Access,
    Iam,
    ScanPolicy(i64),
    /// Everything (the backstop, and a node that may have missed messages).
    All,
}

const SEP: char = '\u{1f}';

impl Inval {
    pub fn encode(&self) -> String {
        match self {
            Inval::Tag(r, t) => format!("t{SEP}{r}{SEP}{t}"),
            Inval::Blob(r, d) => format!("b{SEP}{r}{SEP}{d}"),
            Inval::Repo(r) => format!("r{SEP}{r}"),
            Inval::Manifests(r) => format!("m{SEP}{r}"),
            Inval::AllBlobs => "B".into(),
            Inval::Access => "a".into(),
            Inval::Iam => "i".into(),
            Inval::ScanPolicy(id) => format!("s{SEP}{id}"),
            Inval::All => "*".into(),
        }
    }

    /// A message of another version or a damaged one is read as "drop everything".
    pub fn decode(s: &str) -> Inval {
        let f: Vec<&str> = s.split(SEP).collect();
        match f.as_slice() {
            ["t", r, t] => Inval::Tag(r.to_string(), t.to_string()),
            ["b", r, d] => Inval::Blob(r.to_string(), d.to_string()),
            ["r", r] => Inval::Repo(r.to_string()),
            ["m", r] => Inval::Manifests(r.to_string()),
            ["B"] => Inval::AllBlobs,
            ["a"] => Inval::Access,
            ["i"] => Inval::Iam,
            ["s", id] => id.parse().map(Inval::ScanPolicy).unwrap_or(Inval::All),
            _ => Inval::All,
        }
    }
}

/// What goes to the cache bus's sender: an invalidation, or a flush waiting for everything
/// queued before it to be sent.
pub(crate) enum Out {
    Inval(Inval),
    /// Answered with the number of the last batch that carried invalidations.
    Flush(tokio::sync::oneshot::Sender<u64>),
}

/// What every cache of a process shares: whether caching is on now, and where invalidations
/// go for the other nodes.
#[derive(Default)]
pub(crate) struct Shared {
    live: AtomicBool,
    out: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Out>>>,
    /// Invalidations published so far.
    published: AtomicU64,
}

impl Shared {
    fn on(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    fn publish(&self, i: Inval) {
        if let Some(tx) = &*self.out.lock().unwrap_or_else(|e| e.into_inner()) {
            self.published.fetch_add(1, Ordering::AcqRel);
            let _ = tx.send(Out::Inval(i));
        }
    }
}

/// Manifests larger than this are not cached.
const MAX_ENTRY: usize = 64 * 1024;
/// Total manifest bytes kept; past it the cache starts over.
const MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Repo {
    id: i64,
    version: u64,
    tags: HashMap<String, Arc<Manifest>>,
    digests: HashMap<String, Arc<Manifest>>,
    blobs: HashMap<String, u64>,
    /// Blobs as a read opens them: size and sealed copy (`Meta::repo_blob_object`).
    objects: HashMap<String, Arc<berth_meta::RepoBlob>>,
}

#[derive(Default)]
struct Inner {
    repos: HashMap<String, Repo>,
    bytes: usize,
}

pub(crate) struct Cache {
    shared: Arc<Shared>,
    inner: RwLock<Inner>,
}

/// What a reader saw before going to the database.
#[derive(Clone, Copy)]
pub(crate) struct Snapshot(Option<u64>);

impl Cache {
    fn new(shared: Arc<Shared>) -> Self {
        Cache { shared, inner: RwLock::default() }
    }

    fn enabled(&self) -> bool {
        self.shared.on()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn repo_id(&self, repo: &str) -> Option<i64> {
        if !self.enabled() {
            return None;
        }
        // Id 0 marks a forgotten (deleted) repository: its entry stays so versions keep rising.
        self.read().repos.get(repo).map(|r| r.id).filter(|&id| id != 0)
    }

    pub fn set_repo_id(&self, repo: &str, id: i64) {
        if self.enabled() {
            self.write().repos.entry(repo.to_string()).or_default().id = id;
        }
    }

    pub fn snapshot(&self, repo: &str) -> Snapshot {
        Snapshot(if self.enabled() { self.read().repos.get(repo).map(|r| r.version) } else { None })
    }

    pub fn tag(&self, repo: &str, tag: &str) -> Option<Arc<Manifest>> {
        if !self.enabled() {
            return None;
        }
        self.read().repos.get(repo)?.tags.get(tag).cloned()
    }

    pub fn digest(&self, repo: &str, digest: &str) -> Option<Arc<Manifest>> {
        if !self.enabled() {
            return None;
        }
        self.read().repos.get(repo)?.digests.get(digest).cloned()
    }

    pub fn blob(&self, repo: &str, digest: &str) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        self.read().repos.get(repo)?.blobs.get(digest).copied()
    }

    /// Runs `fill` on the repository's entry if nothing changed since `seen`.
    fn fill(&self, repo: &str, seen: Snapshot, added: usize, fill: impl FnOnce(&mut Repo)) {
        let Some(v) = seen.0 else { return };
        let mut g = self.write();
        if g.bytes + added > MAX_BYTES {
            // Start over rather than track recency: simple, and rare with manifests this small.
            for r in g.repos.values_mut() {
                r.version += 1;
                r.tags.clear();
                r.digests.clear();
            }
            g.bytes = 0;
        }
        let Some(r) = g.repos.get_mut(repo) else { return };
        if r.version == v {
            fill(r);
            g.bytes += added;
        }
    }

    pub fn put_manifest(&self, repo: &str, seen: Snapshot, tag: Option<&str>, m: &Arc<Manifest>) {
        if m.content.len() > MAX_ENTRY {
            return;
        }
        let n = m.content.len() * if tag.is_some() { 2 } else { 1 };
        self.fill(repo, seen, n, |r| {
            if let Some(t) = tag {
                r.tags.insert(t.to_string(), m.clone());
            }
            r.digests.insert(m.digest.clone(), m.clone());
        });
    }

    pub fn blob_object(&self, repo: &str, digest: &str) -> Option<Arc<berth_meta::RepoBlob>> {
        if !self.enabled() {
            return None;
        }
        self.read().repos.get(repo)?.objects.get(digest).cloned()
    }

    pub fn put_blob_object(&self, repo: &str, seen: Snapshot, digest: &str, b: &Arc<berth_meta::RepoBlob>) {
        self.fill(repo, seen, 0, |r| {
            r.objects.insert(digest.to_string(), b.clone());
        });
    }

    pub fn put_blob(&self, repo: &str, seen: Snapshot, digest: &str, size: u64) {
        self.fill(repo, seen, 0, |r| {
            r.blobs.insert(digest.to_string(), size);
        });
    }

    /// A tag moved or went away.
    pub fn drop_tag(&self, repo: &str, tag: &str) {
        self.invalidate(Inval::Tag(repo.into(), tag.into()));
    }

    /// A blob link went away.
    pub fn drop_blob(&self, repo: &str, digest: &str) {
        self.invalidate(Inval::Blob(repo.into(), digest.into()));
    }

    /// The repository was deleted.
    pub fn forget_repo(&self, repo: &str) {
        self.invalidate(Inval::Repo(repo.into()));
    }

    /// After garbage collection: any repository's blob may be gone.
    pub fn drop_all_blobs(&self) {
        self.invalidate(Inval::AllBlobs);
    }

    /// A manifest went away, with every tag that named it.
    pub fn drop_manifests(&self, repo: &str) {
        self.invalidate(Inval::Manifests(repo.into()));
    }

    /// Drops here and tells the other nodes.
    fn invalidate(&self, i: Inval) {
        self.apply(&i);
        self.shared.publish(i);
    }

    /// Drops what `i` names from this node's cache (versions rise, so a fill that read the
    /// database before this is refused).
    pub fn apply(&self, i: &Inval) {
        let mut g = self.write();
        let mut one = |repo: &str, f: &dyn Fn(&mut Repo)| {
            if let Some(r) = g.repos.get_mut(repo) {
                r.version += 1;
                f(r);
            }
        };
        match i {
            Inval::Tag(repo, tag) => one(repo, &|r| {
                r.tags.remove(tag);
            }),
            Inval::Blob(repo, d) => one(repo, &|r| {
                r.blobs.remove(d);
                r.objects.remove(d);
            }),
            Inval::Repo(repo) => one(repo, &|r| {
                r.id = 0;
                clear(r);
            }),
            Inval::Manifests(repo) => one(repo, &|r| {
                r.tags.clear();
                r.digests.clear();
            }),
            Inval::AllBlobs => {
                for r in g.repos.values_mut() {
                    r.version += 1;
                    r.blobs.clear();
                    r.objects.clear();
                }
            }
            Inval::All => {
                // Ids too: a repository deleted meanwhile is looked up again (id 0 keeps the
                // entry, so versions keep rising).
                for r in g.repos.values_mut() {
                    r.version += 1;
                    r.id = 0;
                    clear(r);
                }
                g.bytes = 0;
            }
            Inval::Access | Inval::Iam | Inval::ScanPolicy(_) => {}
        }
    }
}

fn clear(r: &mut Repo) {
    r.tags.clear();
    r.digests.clear();
    r.blobs.clear();
    r.objects.clear();
}

/// What a decision needs to know about a repository: its policy and tags.
#[derive(Default)]
pub(crate) struct RepoAccess {
    pub policy: Option<berth_core::policy::Policy>,
    pub tags: Vec<(String, String)>,
}

/// Parsed repository policies and tags, for the request path. A write bumps the epoch and clears
/// the map after its commit; a reader stores what it read only if the epoch did not move meanwhile.
pub(crate) struct AccessCache {
    shared: Arc<Shared>,
    pub epoch: AtomicU64,
    pub map: RwLock<HashMap<String, Arc<RepoAccess>>>,
}

impl AccessCache {
    fn new(shared: Arc<Shared>) -> Self {
        AccessCache { shared, epoch: AtomicU64::new(0), map: RwLock::default() }
    }

    pub fn enabled(&self) -> bool {
        self.shared.on()
    }

    pub fn invalidate(&self) {
        self.apply();
        self.shared.publish(Inval::Access);
    }

    fn apply(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Keys and identities read from the store, for the request path; cleared by every IAM write
/// (the same epoch rule as the repository-policy cache).
pub(crate) struct IamCache {
    shared: Arc<Shared>,
    pub epoch: AtomicU64,
    pub keys: RwLock<HashMap<String, Option<ResolvedKey>>>,
    pub identities: RwLock<HashMap<String, Option<Arc<Identity>>>>,
}

impl IamCache {
    fn new(shared: Arc<Shared>) -> Self {
        IamCache { shared, epoch: AtomicU64::new(0), keys: RwLock::default(), identities: RwLock::default() }
    }

    pub fn invalidate(&self) {
        self.apply();
        self.shared.publish(Inval::Iam);
    }

    fn apply(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.identities.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn get<T: Clone>(&self, map: &RwLock<HashMap<String, T>>, k: &str) -> Option<T> {
        if !self.shared.on() {
            return None;
        }
        map.read().unwrap_or_else(|e| e.into_inner()).get(k).cloned()
    }

    pub fn put<T>(&self, map: &RwLock<HashMap<String, T>>, epoch: u64, k: &str, v: T) {
        if !self.shared.on() {
            return;
        }
        let mut m = map.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::SeqCst) == epoch && m.len() < 100_000 {
            m.insert(k.to_string(), v);
        }
    }
}

/// Scan policies by repository id.
pub(crate) struct PolicyCache {
    shared: Arc<Shared>,
    pub map: Mutex<HashMap<i64, Option<ScanPolicy>>>,
}

impl PolicyCache {
    fn new(shared: Arc<Shared>) -> Self {
        PolicyCache { shared, map: Mutex::default() }
    }

    pub fn enabled(&self) -> bool {
        self.shared.on()
    }

    /// A repository's policy changed.
    pub fn forget(&self, repo_id: i64) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&repo_id);
        self.shared.publish(Inval::ScanPolicy(repo_id));
    }
}

/// Every cache of one process.
pub(crate) struct Caches {
    shared: Arc<Shared>,
    /// Repository ids, manifests and blob links, for the pull path.
    pub content: Cache,
    pub access: AccessCache,
    pub iam: IamCache,
    pub scan_policies: PolicyCache,
    /// KMS keys' state (for a second, on every backend) and material.
    pub kms: KeyCache,
}

impl Caches {
    /// `single`: this process sees every write (SQLite), so caching is on from the start;
    /// otherwise it is off until the cache bus goes live.
    pub(crate) fn new(single: bool) -> Self {
        let shared =
            Arc::new(Shared { live: AtomicBool::new(single), out: Mutex::default(), published: AtomicU64::new(0) });
        Caches {
            content: Cache::new(shared.clone()),
            access: AccessCache::new(shared.clone()),
            iam: IamCache::new(shared.clone()),
            scan_policies: PolicyCache::new(shared.clone()),
            kms: Default::default(),
            shared,
        }
    }

    /// Where this node's invalidations go from now on (the cache bus's sender).
    pub(crate) fn publish_to(&self, tx: tokio::sync::mpsc::UnboundedSender<Out>) {
        *self.shared.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// Applies another node's invalidation here.
    pub(crate) fn apply(&self, i: &Inval) {
        match i {
            Inval::Access => self.access.apply(),
            Inval::Iam => self.iam.apply(),
            Inval::ScanPolicy(id) => {
                self.scan_policies.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            }
            Inval::All => {
                self.content.apply(i);
                self.access.apply();
                self.iam.apply();
                self.scan_policies.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            _ => self.content.apply(i),
        }
    }

    /// Caching on or off (the cache bus's listener); either way everything cached is dropped,
    /// since messages may have been missed.
    pub(crate) fn set_live(&self, live: bool) {
        if self.shared.on() == live {
            return;
        }
        self.shared.live.store(false, Ordering::Release);
        self.apply(&Inval::All);
        self.shared.live.store(live, Ordering::Release);
        tracing::info!(on = live, "cross-node cache");
    }

    /// How many invalidations this process has published.
    pub(crate) fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Acquire)
    }

    pub(crate) fn live(&self) -> bool {
        self.shared.on()
    }
}

/// KMS keys' state and opened material, each for `kms::KEY_STATE_TTL` (material itself never
/// changes: rotations only add versions). On every backend: the TTL bounds staleness.
#[derive(Default)]
pub(crate) struct KeyCache {
    pub map: Mutex<HashMap<String, (std::time::Instant, Arc<LoadedKey>)>>,
}

#[derive(Clone)]
pub(crate) struct LoadedKey {
    pub row: berth_meta::KmsKeyRow,
    /// Material by version, oldest first.
    pub material: Vec<(i64, berth_crypto::seal::SealKey)>,
}

impl LoadedKey {
    pub fn newest(&self) -> Option<&(i64, berth_crypto::seal::SealKey)> {
        self.material.last()
    }

    pub fn version(&self, v: i64) -> Option<&berth_crypto::seal::SealKey> {
        self.material.iter().find(|(n, _)| *n == v).map(|(_, k)| k)
    }
}
