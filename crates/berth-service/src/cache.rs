//! Read cache for the hot pull path: repository ids, manifests by tag and by digest, and blob
//! links. A manifest's bytes never change for a digest; what can change is which manifest a tag
//! names and whether something still exists, so writes that move or delete bump the repository's
//! version and drop the affected entries *after* the database commit, and a reader only fills the
//! cache if the version it saw before reading the database is still current. A reader that raced
//! a write therefore never leaves a stale entry behind.
//!
//! Only for a single node (SQLite): with PostgreSQL several nodes share the data, and the cache
//! stays off until invalidation is broadcast between them.
//!
//! Beside it, the caches of what access decisions read (repository policies and tags, keys and
//! identities) and of scan policies, under the same rule: cleared by every write, filled only by
//! a reader whose epoch is still current.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::caller::{Identity, ResolvedKey};
use crate::model::Manifest;
use crate::scan_policy::ScanPolicy;

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
    enabled: bool,
    inner: RwLock<Inner>,
}

/// What a reader saw before going to the database.
#[derive(Clone, Copy)]
pub(crate) struct Snapshot(Option<u64>);

impl Cache {
    pub fn new(enabled: bool) -> Self {
        Cache { enabled, inner: RwLock::default() }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn repo_id(&self, repo: &str) -> Option<i64> {
        if !self.enabled {
            return None;
        }
        // Id 0 marks a forgotten (deleted) repository: its entry stays so versions keep rising.
        self.read().repos.get(repo).map(|r| r.id).filter(|&id| id != 0)
    }

    pub fn set_repo_id(&self, repo: &str, id: i64) {
        if self.enabled {
            self.write().repos.entry(repo.to_string()).or_default().id = id;
        }
    }

    pub fn snapshot(&self, repo: &str) -> Snapshot {
        Snapshot(if self.enabled { self.read().repos.get(repo).map(|r| r.version) } else { None })
    }

    pub fn tag(&self, repo: &str, tag: &str) -> Option<Arc<Manifest>> {
        if !self.enabled {
            return None;
        }
        self.read().repos.get(repo)?.tags.get(tag).cloned()
    }

    pub fn digest(&self, repo: &str, digest: &str) -> Option<Arc<Manifest>> {
        if !self.enabled {
            return None;
        }
        self.read().repos.get(repo)?.digests.get(digest).cloned()
    }

    pub fn blob(&self, repo: &str, digest: &str) -> Option<u64> {
        if !self.enabled {
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
        if !self.enabled {
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
        if let Some(r) = self.write().repos.get_mut(repo) {
            r.version += 1;
            r.tags.remove(tag);
        }
    }

    /// A blob link went away.
    pub fn drop_blob(&self, repo: &str, digest: &str) {
        if let Some(r) = self.write().repos.get_mut(repo) {
            r.version += 1;
            r.blobs.remove(digest);
            r.objects.remove(digest);
        }
    }

    /// The repository was deleted.
    pub fn forget_repo(&self, repo: &str) {
        if let Some(r) = self.write().repos.get_mut(repo) {
            r.version += 1;
            r.id = 0;
            r.tags.clear();
            r.digests.clear();
            r.blobs.clear();
            r.objects.clear();
        }
    }

    /// A manifest went away, with every tag that named it.
    /// After garbage collection: any repository's blob may be gone.
    pub fn drop_all_blobs(&self) {
        for r in self.write().repos.values_mut() {
            r.version += 1;
            r.blobs.clear();
            r.objects.clear();
        }
    }

    pub fn drop_manifests(&self, repo: &str) {
        if let Some(r) = self.write().repos.get_mut(repo) {
            r.version += 1;
            r.tags.clear();
            r.digests.clear();
        }
    }
}

/// What a decision needs to know about a repository: its policy and tags.
#[derive(Default)]
pub(crate) struct RepoAccess {
    pub policy: Option<berth_core::policy::Policy>,
    pub tags: Vec<(String, String)>,
}

/// Parsed repository policies and tags, for the request path. A write bumps the epoch and clears
/// the map after its commit; a reader stores what it read only if the epoch did not move meanwhile.
#[derive(Default)]
pub(crate) struct AccessCache {
    pub enabled: bool,
    pub epoch: AtomicU64,
    pub map: RwLock<HashMap<String, Arc<RepoAccess>>>,
}

impl AccessCache {
    pub fn new(enabled: bool) -> Self {
        AccessCache { enabled, ..Default::default() }
    }

    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Keys and identities read from the store, for the request path; cleared by every IAM write
/// (the same epoch rule as the repository-policy cache). Only with SQLite: another node may
/// change IAM behind a PostgreSQL-backed node's back.
#[derive(Default)]
pub(crate) struct IamCache {
    enabled: bool,
    pub epoch: AtomicU64,
    pub keys: RwLock<HashMap<String, Option<ResolvedKey>>>,
    pub identities: RwLock<HashMap<String, Option<Arc<Identity>>>>,
}

impl IamCache {
    pub fn new(enabled: bool) -> Self {
        IamCache { enabled, ..Default::default() }
    }

    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.identities.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn get<T: Clone>(&self, map: &RwLock<HashMap<String, T>>, k: &str) -> Option<T> {
        if !self.enabled {
            return None;
        }
        map.read().unwrap_or_else(|e| e.into_inner()).get(k).cloned()
    }

    pub fn put<T>(&self, map: &RwLock<HashMap<String, T>>, epoch: u64, k: &str, v: T) {
        if !self.enabled {
            return;
        }
        let mut m = map.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::SeqCst) == epoch && m.len() < 100_000 {
            m.insert(k.to_string(), v);
        }
    }
}

/// Scan policies by repository id, when this process sees every write (SQLite).
pub(crate) struct PolicyCache {
    pub enabled: bool,
    pub map: Mutex<HashMap<i64, Option<ScanPolicy>>>,
}

impl PolicyCache {
    pub(crate) fn new(enabled: bool) -> Self {
        PolicyCache { enabled, map: Mutex::default() }
    }
}

/// Every cache of one process.
pub(crate) struct Caches {
    /// Repository ids, manifests and blob links, for the pull path.
    pub content: Cache,
    pub access: AccessCache,
    pub iam: IamCache,
    pub scan_policies: PolicyCache,
    /// KMS keys' state (for a second, on every backend) and material.
    pub kms: KeyCache,
}

impl Caches {
    /// `enabled` only when this process sees every write (SQLite).
    pub(crate) fn new(enabled: bool) -> Self {
        Caches {
            content: Cache::new(enabled),
            access: AccessCache::new(enabled),
            iam: IamCache::new(enabled),
            scan_policies: PolicyCache::new(enabled),
            kms: Default::default(),
        }
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
