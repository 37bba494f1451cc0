//! What every domain of the service shares: the stores, the caches, the keys, the settings and
//! the node's identity, in one [`Core`]. Domains are thin handles over it ([`domain!`]), each in
//! its own module, calling only the domains below it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use berth_blob::BlobStore;
use berth_blob::sealed::SealedStore;
use berth_meta::{AuditFilter, AuditRow, Backend, Meta};

use crate::audit::{AuditEvent, Auditor};
use crate::cache::Caches;
use crate::caller::{AccessKey, Caller};
use crate::error::{Error, Result, Unavailable};
use crate::metrics::Counters;
use crate::throttle::Throttle;
use crate::tokens::{Auth, TOKEN_KEY_AAD, Tokens};

/// The registry's identity and start-up choices.
#[derive(Debug, Clone)]
pub struct Settings {
    /// 12-digit registry (account) id.
    pub registry_id: String,
    pub region: String,
    /// Base URL clients reach the registry at (`http://127.0.0.1:5000`); its host is in
    /// repository URIs.
    pub public_url: String,
    /// On first start, add a `ROOT` creation template that creates repositories on push.
    pub create_on_push: bool,
    /// Seals access-key secrets in the metadata store; kept outside it.
    pub seal_key: berth_crypto::seal::SealKey,
    /// The master keys: the newest seals new content of AES256 repositories (and the KMS keys'
    /// material); every one opens what it sealed. Kept outside the metadata store.
    pub master_keys: berth_crypto::keyring::Keyring,
    /// Other accounts' registries answer on `<account-id>.<account_domain>` (None: only
    /// through the ECR API's `registryId`).
    pub account_domain: Option<String>,
    /// Least time between two manual scans of one image (ECR: one a day).
    pub manual_scan_interval: std::time::Duration,
    /// Attach each completed scan's CycloneDX SBOM to the image as an OCI referrer.
    pub sbom_referrers: bool,
    /// Anonymous callers may do anything on `/v2/` (`allow_anonymous`: local experiments only).
    pub allow_anonymous: bool,
    /// Replication destinations (`[[peers]]`).
    pub peers: Vec<crate::model::Peer>,
    /// How often a cached tag is checked against its pull-through upstream (ECR: 24 hours).
    pub pull_through_refresh: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            registry_id: "000000000000".into(),
            region: "us-east-1".into(),
            public_url: "http://127.0.0.1:5000".into(),
            create_on_push: true,
            seal_key: berth_crypto::seal::SealKey::generate(),
            master_keys: Default::default(),
            account_domain: None,
            manual_scan_interval: std::time::Duration::from_secs(24 * 3600),
            sbom_referrers: false,
            allow_anonymous: false,
            peers: Vec::new(),
            pull_through_refresh: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

impl Settings {
    /// `host[:port]` of the public URL.
    pub fn public_host(&self) -> &str {
        let rest = self.public_url.split_once("://").map_or(self.public_url.as_str(), |(_, r)| r);
        rest.trim_end_matches('/')
    }

    pub fn root_arn(&self) -> String {
        crate::caller::root_arn(&self.registry_id)
    }
}

/// Declares a domain: a handle over the [`Core`] that reads its fields through `Deref`.
macro_rules! domain {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy)]
        pub struct $name<'a>(pub(crate) &'a crate::core::Core);

        impl std::ops::Deref for $name<'_> {
            type Target = crate::core::Core;
            fn deref(&self) -> &crate::core::Core {
                self.0
            }
        }
    };
}
pub(crate) use domain;

/// The state one process holds for the registry service.
pub struct Core {
    pub(crate) meta: Meta,
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// The same storage through the encrypting wrapper.
    pub(crate) sealed: SealedStore,
    pub(crate) settings: Settings,
    /// Everything derived from the token-signing key; replaced whole when it is rotated.
    pub(crate) tokens: RwLock<Arc<Tokens>>,
    pub(crate) caches: Caches,
    pub(crate) throttle: Throttle,
    pub(crate) auditor: Auditor,
    pub(crate) counters: Arc<Counters>,
    /// This process's name in job claims.
    pub(crate) node: Arc<str>,
    /// Wakes an idle scan worker of this node when a scan is queued here.
    pub(crate) scan_wake: tokio::sync::Notify,
    /// Uploads being written by a request on this node: one request at a time per upload.
    pub(crate) busy_uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Each repository's key scope (`sealing.rs`), by repository id: fixed at creation.
    pub(crate) scopes: Mutex<HashMap<i64, String>>,
    /// Pull times not yet written: (repository, digest) → ms. Written in batches, because a
    /// write per pull would make every pull a database write (ECR, too, records them lazily).
    pub(crate) pulls: Mutex<HashMap<String, HashMap<String, i64>>>,
    /// SIGTERM arrived: readiness is off.
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// The last readiness check and when it ran (`health.rs`).
    pub(crate) health: Mutex<Option<(std::time::Instant, crate::model::Readiness)>>,
    /// PostgreSQL: the queue of invalidations for other nodes (`cache_bus`).
    pub(crate) bus: std::sync::OnceLock<Arc<crate::peers::Bus>>,
    /// Wakes an idle replication worker of this node when a job is queued here.
    pub(crate) replication_wake: tokio::sync::Notify,
    /// Clients of the replication peers, by key, with when they were made (their credentials
    /// are read again after a while, and after a refusal).
    remotes: Mutex<HashMap<String, (std::time::Instant, Arc<berth_remote::Registry>)>>,
    /// Blobs being sent to a destination, by `destination digest`: one sender at a time.
    blob_sends: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// This Core, for work a request starts that outlives it (a pull-through import).
    pub(crate) me: std::sync::OnceLock<std::sync::Weak<Core>>,
    /// Pull-through cache: the rules of each registry as last read, and when.
    pub(crate) pt_rules: Mutex<HashMap<String, RulesRead>>,
    /// Pull-through cache: when each cached tag (`repo:tag`) was last checked upstream.
    pub(crate) pt_checked: Mutex<HashMap<String, std::time::Instant>>,
    /// Pull-through cache: manifests served from the upstream whose import is not finished
    /// (`repo@digest`), so their children and blobs are found meanwhile.
    pub(crate) pt_pending: Mutex<HashMap<String, Arc<crate::model::Manifest>>>,
    /// Pull-through cache: blobs being fetched from an upstream, by digest, for the clients
    /// that ask meanwhile to follow.
    pub(crate) pt_flights: Mutex<HashMap<String, Arc<crate::flight::Flight>>>,
}

/// A registry's pull-through rules as read, and when.
pub(crate) type RulesRead = (std::time::Instant, Arc<Vec<crate::model::Rule>>);

/// How long a peer's client (and the credentials read for it) is used before it is made again.
const REMOTE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Refuses a keyring that holds none of the master keys this registry's data was sealed under
/// (a cluster node started without the others' `BERTH_MASTER_KEY` would otherwise create its own
/// and seal content no other node can open). The fingerprints seen are kept in the database;
/// a key added for rotation joins them.
async fn check_master_keys(meta: &Meta, ring: &berth_crypto::keyring::Keyring) -> Result<()> {
    const KEY: &str = "master_key_fingerprints";
    let mine = ring.fingerprints();
    let stored = meta.setting(KEY).await?.unwrap_or_default();
    let known: Vec<&str> = stored.split(',').filter(|f| !f.is_empty()).collect();
    if !known.is_empty() && !known.iter().any(|f| ring.find(f).is_some()) {
        return Err(Error::Internal(format!(
            "this node's master keyring (keys {}) holds none of the keys this registry's content is sealed under \
             (keys {}): give every node the same BERTH_MASTER_KEY (or master_key_file)",
            mine.join(", "),
            known.join(", ")
        )));
    }
    let mut all: Vec<String> = known.iter().map(|s| s.to_string()).collect();
    let before = all.len();
    for f in mine {
        if !all.contains(&f) {
            all.push(f);
        }
    }
    if all.len() != before {
        meta.put_setting(KEY, &all.join(",")).await?;
    }
    Ok(())
}

impl Core {
    /// Opens the stores' shared state: loads (or creates, once for all nodes) the token-signing key.
    pub(crate) async fn open(
        meta: Meta,
        blobs: Arc<dyn BlobStore>,
        settings: Settings,
        keys: Vec<AccessKey>,
    ) -> Result<Core> {
        let fresh = settings.seal_key.seal(berth_crypto::token::TokenKey::generate().as_bytes(), TOKEN_KEY_AAD);
        let stored = meta.setting_or_init("token_key", &fresh).await?;
        let stored = seal_legacy_token_key(&meta, &settings, stored).await?;
        let tokens = Tokens::derive(&settings.seal_key, stored, keys)?;
        check_master_keys(&meta, &settings.master_keys).await?;
        // Only one node can use a SQLite database, so there this process sees every write and
        // caches from the start; with PostgreSQL, once the cache bus is live.
        let cache_enabled = meta.backend() == Backend::Sqlite;
        let counters: Arc<Counters> = Arc::default();
        Ok(Core {
            auditor: Auditor::start(meta.clone(), counters.audit_dropped.clone()),
            meta,
            sealed: SealedStore::new(blobs.clone()),
            blobs,
            settings,
            tokens: RwLock::new(Arc::new(tokens)),
            caches: Caches::new(cache_enabled),
            throttle: Throttle::default(),
            counters,
            node: hex::encode(&berth_crypto::random_bytes()[..8]).into(),
            scan_wake: tokio::sync::Notify::new(),
            busy_uploads: Mutex::default(),
            scopes: Mutex::default(),
            pulls: Mutex::default(),
            draining: Default::default(),
            health: Default::default(),
            bus: Default::default(),
            replication_wake: tokio::sync::Notify::new(),
            remotes: Mutex::default(),
            blob_sends: Mutex::default(),
            me: Default::default(),
            pt_rules: Mutex::default(),
            pt_checked: Mutex::default(),
            pt_pending: Mutex::default(),
            pt_flights: Mutex::default(),
        })
    }

    /// The client for replication peer `peer` (made with its credentials read now, or reused).
    pub(crate) fn remote(
        &self,
        peer: &crate::model::Peer,
    ) -> Result<Arc<berth_remote::Registry>, berth_remote::RemoteError> {
        let key = peer.key();
        let mut m = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made, r)) = m.get(&key)
            && made.elapsed() < REMOTE_TTL
        {
            return Ok(r.clone());
        }
        let creds = peer.credentials().map_err(berth_remote::RemoteError::Credentials)?;
        let mut r = berth_remote::Registry::new(&peer.url, creds)?;
        if peer.kind == crate::model::PeerKind::Ecr {
            // A Berth destination creates the repository through its REPLICATION templates,
            // and does not replicate what it receives again.
            r = r.with_header(
                crate::caller::REPLICATION_HEADER,
                &format!("{}/{}", self.settings.region, self.settings.registry_id),
            );
        }
        let r = Arc::new(r);
        m.insert(key, (std::time::Instant::now(), r.clone()));
        Ok(r)
    }

    /// A client kept under `key` for a while (made by `make` when there is none or it is old).
    pub(crate) fn cached_remote(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<berth_remote::Registry>,
    ) -> Result<Arc<berth_remote::Registry>> {
        let mut m = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made, r)) = m.get(key)
            && made.elapsed() < REMOTE_TTL
        {
            return Ok(r.clone());
        }
        let r = Arc::new(make()?);
        m.insert(key.to_string(), (std::time::Instant::now(), r.clone()));
        Ok(r)
    }

    /// The client kept under `key`, unless there is none or it is old.
    pub(crate) fn fresh_remote(&self, key: &str) -> Option<Arc<berth_remote::Registry>> {
        let m = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key).filter(|(made, _)| made.elapsed() < REMOTE_TTL).map(|(_, r)| r.clone())
    }

    /// Drops a peer's client: the next one reads its credentials again.
    pub(crate) fn forget_remote(&self, key: &str) {
        self.remotes.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// The account a caller's own resources (KMS keys, secrets) are in: its principal's, else
    /// (the operator) this registry's.
    pub(crate) fn account_of(&self, who: &Caller) -> String {
        match &who.principal {
            Some(p) => p.arn.split(':').nth(4).unwrap_or_default().to_string(),
            None => self.settings.registry_id.clone(),
        }
    }

    /// The lock held while blob `digest` is sent to destination `dest`.
    pub(crate) fn blob_send_lock(&self, dest: &str, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.blob_sends.lock().unwrap_or_else(|e| e.into_inner());
        // Locks no one holds or waits for are dropped as others are made.
        m.retain(|_, l| Arc::strong_count(l) > 1);
        m.entry(format!("{dest} {digest}")).or_default().clone()
    }

    /// Waits until the other nodes have applied this process's cache invalidations so far (a
    /// write's response, before it goes; a command about to exit). Immediate when there is
    /// nothing to wait for (one node, or no change since the last wait).
    pub async fn flush_invalidations(&self) {
        if let Some(bus) = self.bus.get() {
            bus.settle(self.caches.published()).await;
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// `/metrics`: this process's counters, and the jobs every node shares (from the database;
    /// left out when it cannot be read, so the endpoint still answers).
    pub async fn metrics(&self) -> String {
        let mut out = self.counters.render();
        match self.meta.job_counts(berth_meta::now_ms()).await {
            Ok(queues) => out.push_str(&crate::metrics::render_jobs(&queues)),
            Err(e) => tracing::warn!(error = %e, "job counts for /metrics"),
        }
        match self.meta.count_plain_blobs().await {
            Ok((n, bytes)) => out.push_str(&format!(
                "# HELP berth_blobs_in_clear Blobs stored in the clear by earlier versions, not sealed yet.\n\
                 # TYPE berth_blobs_in_clear gauge\nberth_blobs_in_clear {n}\n\
                 # HELP berth_bytes_in_clear Bytes of those blobs.\n# TYPE berth_bytes_in_clear gauge\n\
                 berth_bytes_in_clear {bytes}\n"
            )),
            Err(e) => tracing::warn!(error = %e, "blobs in the clear for /metrics"),
        }
        match self.meta.count_plain_manifests().await {
            Ok(n) => out.push_str(&format!(
                "# HELP berth_manifests_in_clear Manifests stored in the clear by earlier versions, not sealed yet.\n\
                 # TYPE berth_manifests_in_clear gauge\nberth_manifests_in_clear {n}\n"
            )),
            Err(e) => tracing::warn!(error = %e, "manifests in the clear for /metrics"),
        }
        out.push_str(&format!(
            "# HELP berth_cache_live Whether this node caches metadata now (with PostgreSQL: while it hears the other nodes' invalidations).\n\
             # TYPE berth_cache_live gauge\nberth_cache_live {}\n",
            u8::from(self.caches.live())
        ));
        out
    }

    /// This process's name in job claims.
    pub fn node(&self) -> Arc<str> {
        self.node.clone()
    }

    /// The token issuer and checker in force now (a rotation replaces it).
    pub fn auth(&self) -> Arc<Auth> {
        self.tokens().auth.clone()
    }

    pub(crate) fn tokens(&self) -> Arc<Tokens> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the token-signing key: every login password, bearer token, STS session and
    /// layer URL issued before stops working (here at once; on other processes when they next
    /// [`Core::refresh_token_key`]). The operator's alone.
    pub async fn rotate_token_key(&self, caller: &Caller) -> Result<()> {
        caller.require_operator("rotate the token-signing key")?;
        let sealed = self.settings.seal_key.seal(berth_crypto::token::TokenKey::generate().as_bytes(), TOKEN_KEY_AAD);
        self.meta.put_setting("token_key", &sealed).await?;
        self.refresh_token_key().await?;
        Ok(())
    }

    /// Picks up a token-signing key rotated by another process; whether it changed.
    pub async fn refresh_token_key(&self) -> Result<bool> {
        let Some(stored) = self.meta.setting("token_key").await? else { return Ok(false) };
        let current = self.tokens();
        if stored == current.stored {
            return Ok(false);
        }
        let keys = current.auth.static_keys();
        let fresh = Arc::new(Tokens::derive(&self.settings.seal_key, stored, keys)?);
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        tracing::info!("the token-signing key was rotated: tokens issued before are no longer accepted");
        Ok(true)
    }

    /// New content is refused while storage is full; deletes, cancels and garbage collection
    /// still run (on the space the reserve gave back).
    pub(crate) fn check_space(&self) -> Result<()> {
        let full = self.blobs.storage_full();
        self.counters.storage_full.store(u64::from(full), std::sync::atomic::Ordering::Relaxed);
        if full { Err(Error::Unavailable(Unavailable::StorageFull("the disk is full".into()))) } else { Ok(()) }
    }

    /// Looks at the free space now (`serve` does every few seconds): gives up the reserve when
    /// the disk is full, takes it back when space returns. Whether storage is full.
    pub fn check_storage(&self) -> bool {
        self.check_space().is_err()
    }

    /// Records an audit event (waits only when the writer is far behind).
    pub async fn audit(&self, e: AuditEvent) {
        self.auditor.record(e).await
    }

    /// Waits until every audit event recorded so far is stored.
    pub async fn flush_audit(&self) {
        self.auditor.flush().await
    }

    /// The audit log, as `berth audit` shows it (the operator's alone).
    pub async fn audit_events(&self, caller: &Caller, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        caller.require_operator("read the audit log")?;
        Ok(self.meta.audit_events(filter).await?)
    }

    /// The registry (account) and name of a repository key.
    pub fn split_key<'a>(&'a self, key: &'a str) -> (&'a str, &'a str) {
        match berth_core::split_repo_key(key) {
            (Some(a), n) => (a, n),
            (None, n) => (self.settings.registry_id.as_str(), n),
        }
    }

    /// The key of repository `name` in registry `registry`.
    pub fn repo_key(&self, registry: &str, name: &str) -> String {
        let account = (registry != self.settings.registry_id).then_some(registry);
        berth_core::repo_key(account, name)
    }

    /// The ARN of the repository with key `key`.
    pub fn repository_arn(&self, key: &str) -> String {
        let (registry, name) = self.split_key(key);
        format!("arn:aws:ecr:{}:{registry}:repository/{name}", self.settings.region)
    }

    /// `host[:port]` clients reach a registry at: the public host for the configured account,
    /// `<account>.<account_domain>` for the others when a domain is configured.
    pub fn registry_host(&self, registry: &str) -> String {
        match &self.settings.account_domain {
            Some(d) if registry != self.settings.registry_id => format!("{registry}.{d}"),
            _ => self.settings.public_host().to_string(),
        }
    }
}

/// Data directories from before the key was sealed hold it as plain hex: seal it in place.
async fn seal_legacy_token_key(meta: &Meta, settings: &Settings, stored: String) -> Result<String> {
    if stored.starts_with(berth_crypto::seal::PREFIX) {
        return Ok(stored);
    }
    let raw = hex::decode(stored.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| Error::Internal("the stored token-signing key is corrupt".into()))?;
    let sealed = settings.seal_key.seal(&raw, TOKEN_KEY_AAD);
    meta.put_setting("token_key", &sealed).await?;
    tracing::info!("sealed the token-signing key stored in plain text by an earlier version");
    Ok(sealed)
}
