//! The pull-through cache's pull path: what a repository under a rule's prefix lacks is asked of
//! the upstream. A manifest is answered from what the upstream sent and imported in the
//! background (its blobs first: the metadata store refuses a manifest whose blobs are missing);
//! a blob is streamed to the client while the same bytes are stored, one upstream fetch per digest
//! however many clients ask at once. A tag is checked against the upstream at most every
//! `pull_through_refresh`; when the upstream is away, what is cached is served.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_core::{Digest, RepoName, parse_manifest};
use bytes::Bytes;
use futures_util::StreamExt;

use super::Content;
use crate::caller::Caller;
use crate::error::{Error, NotFound, Result, Unavailable};
use crate::flight::{Flight, Phase};
use crate::model::{BlobRead, Manifest, Via};
use crate::pull_through::{PullThrough, Rule};
use crate::templates::Templates;

/// How long a node uses the rules it read before reading them again.
const RULES_TTL: Duration = Duration::from_secs(5);
/// After a failed check of a tag, the next one waits this long (the upstream may be away).
const RECHECK_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// A repository's upstream: its rule, a client, and the repository's name there.
pub(crate) struct Upstream {
    pub rule: Rule,
    pub remote: Arc<berth_remote::Registry>,
    pub repo: String,
}

fn upstream_error(rule: &Rule, e: &berth_remote::RemoteError) -> Error {
    Error::Unavailable(Unavailable::Upstream(format!(
        "the pull-through cache's upstream {} (rule {}) did not answer: {e}",
        rule.body.upstream_registry_url, rule.prefix
    )))
}

impl<'a> Content<'a> {
    fn registry_of(&self, repo: &RepoName) -> String {
        repo.account().map_or_else(|| self.settings.registry_id.clone(), str::to_string)
    }

    async fn rules(&self, registry: &str) -> Result<Arc<Vec<Rule>>> {
        if let Some((at, r)) = self.pt_rules.lock().unwrap_or_else(|e| e.into_inner()).get(registry)
            && at.elapsed() < RULES_TTL
        {
            return Ok(r.clone());
        }
        let rules = Arc::new(PullThrough(self.0).rules(&Caller::operator(), registry, None).await?);
        self.pt_rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registry.to_string(), (Instant::now(), rules.clone()));
        Ok(rules)
    }

    /// The upstream a repository is cached from, if a rule's prefix covers its name.
    pub(crate) async fn upstream_of(&self, repo: &RepoName) -> Result<Option<Upstream>> {
        let registry = self.registry_of(repo);
        let rules = self.rules(&registry).await?;
        let name = repo.name();
        let rest_of = |r: &Rule| -> Option<String> {
            if r.prefix == "ROOT" {
                return Some(name.to_string());
            }
            let p = r.prefix.trim_end_matches('/');
            name.strip_prefix(p)?.strip_prefix('/').map(str::to_string)
        };
        // The longest prefix that covers the name.
        let Some((rule, rest)) = rules
            .iter()
            .filter_map(|r| rest_of(r).map(|rest| (r, rest)))
            .max_by_key(|(r, _)| if r.prefix == "ROOT" { 0 } else { r.prefix.len() })
        else {
            return Ok(None);
        };
        let up_repo = match rule.body.upstream_prefix() {
            "ROOT" => rest,
            p => format!("{}/{rest}", p.trim_end_matches('/')),
        };
        let key = format!("pull-through {registry} {} {}", rule.prefix, rule.updated_at);
        let remote = match self.fresh_remote(&key) {
            Some(r) => r,
            // Reading the secret is async: the client is made outside the map's lock, then kept.
            None => {
                let made = PullThrough(self.0).upstream(&registry, rule).await?;
                self.cached_remote(&key, move || Ok(made))?
            }
        };
        Ok(Some(Upstream { rule: rule.clone(), remote, repo: up_repo }))
    }

    /// The repository, created through a `PULL_THROUGH_CACHE` template (else with the defaults)
    /// when it is missing: the caller may `ecr:BatchImportUpstreamImage` there.
    async fn cache_repo(&self, caller: &Caller, repo: &RepoName) -> Result<i64> {
        if let Some(id) = self.meta.repo_id(repo.as_str()).await? {
            return Ok(id);
        }
        self.access().check(caller, "ecr:BatchImportUpstreamImage", repo.as_str()).await?;
        let (settings, tags) =
            Templates(self.0).template_for(repo.name(), "PULL_THROUGH_CACHE").await?.unwrap_or_default();
        let id = self.meta.create_repo(repo.as_str(), &settings, &tags, true).await?.id;
        self.caches.access.invalidate();
        tracing::info!(repo = %repo, "repository created for a pull-through cache");
        Ok(id)
    }

    /// A manifest missing here, from the upstream (None: the upstream has none either).
    pub(crate) async fn pull_through_manifest(
        &self,
        caller: &Caller,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<Arc<Manifest>>> {
        let Some(up) = self.upstream_of(repo).await? else { return Ok(None) };
        if let Some(m) = self.pt_pending.lock().unwrap_or_else(|e| e.into_inner()).get(&format!("{repo}@{reference}")) {
            return Ok(Some(m.clone()));
        }
        self.access().check(caller, "ecr:BatchImportUpstreamImage", repo.as_str()).await?;
        let got = match up.remote.get_manifest(&up.repo, reference, berth_remote::MANIFEST_ACCEPT).await {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(None),
            Err(e) => return Err(upstream_error(&up.rule, &e)),
        };
        let digest = berth_crypto::digest_of(berth_core::Algorithm::Sha256, &got.body).to_string();
        if reference.starts_with("sha256:") && reference != digest {
            return Err(Error::Unavailable(Unavailable::Upstream(format!(
                "the upstream {} answered {digest} for {reference}",
                up.rule.body.upstream_registry_url
            ))));
        }
        let media_type = if got.media_type.is_empty() {
            parse_manifest(&got.body, None).map_err(Error::from)?.media_type
        } else {
            got.media_type.clone()
        };
        let parsed = parse_manifest(&got.body, Some(&media_type)).map_err(Error::from)?;
        let tag = (!reference.starts_with("sha256:")).then(|| reference.to_string());
        let repo_id = self.cache_repo(caller, repo).await?;
        let m = Arc::new(Manifest {
            digest: digest.clone(),
            media_type: media_type.clone(),
            content: got.body.clone(),
            subject: parsed.subject.as_ref().map(|s| s.digest.to_string()),
        });
        if let Some(t) = &tag {
            self.pt_checked.lock().unwrap_or_else(|e| e.into_inner()).insert(format!("{repo}:{t}"), Instant::now());
        }
        let blobs: Vec<Digest> = parsed
            .blobs
            .iter()
            .filter(|b| !b.media_type.contains("foreign") && !b.media_type.contains("nondistributable"))
            .map(|b| b.digest.clone())
            .collect();
        if blobs.is_empty() {
            // An index (children are imported when asked for) or a manifest without blobs.
            self.store_manifest(repo, repo_id, tag.as_deref(), None, Some(&media_type), &got.body, Via::PULL_THROUGH)
                .await?;
            return Ok(Some(m));
        }
        // Imported in the background: the client has its answer now.
        let key = format!("{repo}@{digest}");
        self.pt_pending.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), m.clone());
        let Some(core) = self.me.get().and_then(std::sync::Weak::upgrade) else { return Ok(Some(m)) };
        let (repo2, body) = (repo.clone(), got.body.clone());
        tokio::spawn(async move {
            let c = Content(&core);
            let r = async {
                for b in &blobs {
                    c.import_blob(&repo2, b).await?;
                }
                c.store_manifest(&repo2, repo_id, tag.as_deref(), None, Some(&media_type), &body, Via::PULL_THROUGH)
                    .await
            }
            .await;
            core.pt_pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            match r {
                Ok(_) => tracing::info!(repo = %repo2, %digest, "image cached from its upstream"),
                Err(e) => {
                    tracing::warn!(repo = %repo2, %digest, error = %e, "caching an image from its upstream failed")
                }
            }
        });
        Ok(Some(m))
    }

    /// Checks a cached tag against the upstream when due; the manifest to serve.
    pub(crate) async fn refresh_tag(
        &self,
        caller: &Caller,
        repo: &RepoName,
        reference: &str,
        cached: Arc<Manifest>,
    ) -> Result<Arc<Manifest>> {
        if reference.contains(':') || self.rules(&self.registry_of(repo)).await?.is_empty() {
            return Ok(cached);
        }
        let key = format!("{repo}:{reference}");
        if !self.check_due(&key) {
            return Ok(cached);
        }
        let Some(up) = self.upstream_of(repo).await? else { return Ok(cached) };
        self.checked(&key);
        match up.remote.manifest_digest(&up.repo, reference, false).await {
            Ok(Some(d)) if d == cached.digest => Ok(cached),
            Ok(Some(_)) => Ok(self.pull_through_manifest(caller, repo, reference).await?.unwrap_or(cached)),
            // Gone upstream: the cached copy stays (as ECR keeps it).
            Ok(None) => Ok(cached),
            Err(e) => {
                tracing::warn!(repo = %repo, tag = reference, error = %e, "the upstream did not answer; serving the cached tag");
                self.check_failed(key);
                Ok(cached)
            }
        }
    }

    /// Whether the upstream is due to be asked about `key` (a tag, a subject's referrers).
    fn check_due(&self, key: &str) -> bool {
        match self.pt_checked.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            Some(at) => at.elapsed() >= self.settings.pull_through_refresh,
            None => true,
        }
    }

    fn checked(&self, key: &str) {
        self.pt_checked.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), Instant::now());
    }

    /// The upstream did not answer about `key`: asked again in a minute, not at once.
    fn check_failed(&self, key: String) {
        let later = Instant::now() + RECHECK_AFTER_FAILURE;
        let back = later.checked_sub(self.settings.pull_through_refresh).unwrap_or_else(Instant::now);
        self.pt_checked.lock().unwrap_or_else(|e| e.into_inner()).insert(key, back);
    }

    /// The referrers of `subject` the upstream lists that are not cached here yet, imported now
    /// (as their manifests are: answered at once, blobs in the background). Asked at most every
    /// `pull_through_refresh` per subject, and only for a caller who may import; when the
    /// upstream is away, nothing is added to what is cached.
    pub(crate) async fn pull_through_referrers(
        &self,
        caller: &Caller,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Arc<Manifest>>> {
        let Some(up) = self.upstream_of(repo).await? else { return Ok(Vec::new()) };
        let key = format!("{repo}@referrers {subject}");
        if !self.check_due(&key)
            || !self.access().decide(caller, "ecr:BatchImportUpstreamImage", repo.as_str()).await?.allowed()
        {
            return Ok(Vec::new());
        }
        self.checked(&key);
        let listed = match upstream_referrers(&up, subject).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(repo = %repo, %subject, error = %e, "the upstream did not answer; serving the cached referrers");
                self.check_failed(key);
                return Ok(Vec::new());
            }
        };
        let repo_id = self.meta.repo_id(repo.as_str()).await?;
        let subject = subject.to_string();
        let mut fetched = Vec::new();
        for d in listed {
            if let Some(id) = repo_id
                && self.meta.get_manifest(id, &d).await?.is_some()
            {
                continue;
            }
            match self.pull_through_manifest(caller, repo, &d).await {
                // Only what names this subject: the upstream's list is not taken on trust.
                Ok(Some(m)) if m.subject.as_deref() == Some(subject.as_str()) => fetched.push(m),
                Ok(_) => {}
                Err(e) => tracing::warn!(repo = %repo, referrer = %d, error = %e, "a referrer could not be cached"),
            }
        }
        Ok(fetched)
    }

    /// Fetches a blob from the upstream into storage, unless it is there already (one fetch per
    /// digest at a time; a second asker waits for the first).
    async fn import_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let held = self.blob_send_lock("upstream", &digest.to_string()).lock_owned().await;
        if self.blob_size(repo, digest).await.is_ok() {
            return Ok(());
        }
        let Some(up) = self.upstream_of(repo).await? else {
            return Err(NotFound::Blob { digest: digest.to_string() }.into());
        };
        let (flight, _) = self.start_fetch(&up, repo, digest, held, false).await?;
        flight.finished().await.map_err(|e| Error::Unavailable(Unavailable::Upstream(e)))
    }

    /// A blob missing here, streamed from the upstream while it is stored (None: no rule). A
    /// client that asks while another's fetch is running follows that fetch.
    pub(crate) async fn pull_through_blob(
        &self,
        caller: &Caller,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRead>> {
        let Some(up) = self.upstream_of(repo).await? else { return Ok(None) };
        self.access().check(caller, "ecr:BatchImportUpstreamImage", repo.as_str()).await?;
        self.cache_repo(caller, repo).await?;
        let read = |size: u64, stream| {
            let body = berth_blob::BlobBody { len: size, stream };
            Ok(Some(BlobRead { digest: digest.clone(), size, range: None, body }))
        };
        let lock = self.blob_send_lock("upstream", &digest.to_string());
        let held = match lock.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                let running =
                    self.pt_flights.lock().unwrap_or_else(|e| e.into_inner()).get(&digest.to_string()).cloned();
                if let Some(f) = running {
                    match f.settled().await {
                        Phase::Streaming(size) => {
                            if let Some(stream) = f.join() {
                                self.counters.pull_through_followers.fetch_add(1, Ordering::Relaxed);
                                return read(size, stream);
                            }
                        }
                        Phase::Failed(e) => return Err(Error::Unavailable(Unavailable::Upstream(e))),
                        Phase::Starting | Phase::Stored => {}
                    }
                }
                // Past what a late client can follow: wait for the blob to be stored.
                drop(lock.lock().await);
                return Ok(Some(self.read_blob(Some(caller), repo, digest, None).await?));
            }
        };
        if self.blob_size(repo, digest).await.is_ok() {
            drop(held);
            return Ok(Some(self.read_blob(Some(caller), repo, digest, None).await?));
        }
        match self.start_fetch(&up, repo, digest, held, true).await? {
            (_, Some((size, stream))) => read(size, stream),
            (_, None) => Err(Error::Internal("a fetch started without its first client".into())),
        }
    }

    /// Starts fetching a blob from the upstream into storage; `held` (the digest's fetch lock)
    /// is let go once it is stored. Every client that asks meanwhile can follow the same bytes
    /// (`first`: one follower from the start, returned with the size).
    async fn start_fetch(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
        held: tokio::sync::OwnedMutexGuard<()>,
        first: bool,
    ) -> Result<(Arc<Flight>, Option<(u64, crate::flight::Chunks)>)> {
        let key = digest.to_string();
        let flight = Arc::new(Flight::new());
        self.pt_flights.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), flight.clone());
        let forget = || {
            let mut m = self.pt_flights.lock().unwrap_or_else(|e| e.into_inner());
            if m.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                m.remove(&key);
            }
        };
        let fail = |e: Error| {
            flight.set_phase(Phase::Failed(e.to_string()));
            forget();
            Err(e)
        };
        let (len, mut upstream) = match up.remote.blob_stream(&up.repo, &key).await {
            Ok(Some(r)) => r,
            Ok(None) => return fail(NotFound::Blob { digest: key.clone() }.into()),
            Err(e) => return fail(upstream_error(&up.rule, &e)),
        };
        let Some(size) = len else {
            let why = berth_remote::RemoteError::Protocol {
                what: format!("GET blob {digest}"),
                reason: "no Content-Length".into(),
            };
            return fail(upstream_error(&up.rule, &why));
        };
        let Some(core) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return fail(Error::Internal("the registry is stopping".into()));
        };
        self.counters.pull_through_blob_fetches.fetch_add(1, Ordering::Relaxed);
        flight.set_phase(Phase::Streaming(size));
        let follower = if first { flight.join().map(|s| (size, s)) } else { None };
        let (to_store, store_rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
        let (repo2, digest2, f) = (repo.clone(), digest.clone(), flight.clone());
        tokio::spawn(async move {
            let _held = held;
            let c = Content(&core);
            let store = c.store_blob(None, &repo2, &digest2, tokio_stream_of(store_rx));
            // The upstream's bytes go to the followers and to storage; a follower that stalls is
            // left behind, and storing goes on when every client has hung up.
            let pump = async {
                while let Some(chunk) = upstream.next().await {
                    if let Ok(b) = &chunk {
                        core.counters.pull_through_bytes_fetched.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                    f.send(&chunk).await;
                    let failed = chunk.is_err();
                    if to_store.send(chunk).await.is_err() || failed {
                        break;
                    }
                }
                drop(to_store);
            };
            let (stored, ()) = tokio::join!(store, pump);
            match stored {
                Ok(_) => {
                    tracing::info!(repo = %repo2, digest = %digest2, "blob cached from its upstream");
                    f.set_phase(Phase::Stored);
                }
                Err(e) => {
                    tracing::warn!(repo = %repo2, digest = %digest2, error = %e, "caching a blob from its upstream failed");
                    // Followers have had every byte: this tells them the copy is not good.
                    f.send(&Err(std::io::Error::other(e.to_string()))).await;
                    f.set_phase(Phase::Failed(e.to_string()));
                }
            }
            let mut m = core.pt_flights.lock().unwrap_or_else(|e| e.into_inner());
            if m.get(&digest2.to_string()).is_some_and(|x| Arc::ptr_eq(x, &f)) {
                m.remove(&digest2.to_string());
            }
        });
        Ok((flight, follower))
    }
}

/// At most this many referrers of one subject are taken from an upstream's list.
const MAX_UPSTREAM_REFERRERS: usize = 1000;

/// The digests of the referrers of `subject` the upstream lists: its referrers API, else (a
/// registry without one, as Distribution 2.8) the index the OCI spec's fallback tag
/// `sha256-<hex>` holds.
async fn upstream_referrers(up: &Upstream, subject: &Digest) -> berth_remote::Result<Vec<String>> {
    let index = match up.remote.referrers(&up.repo, &subject.to_string()).await? {
        Some(index) => index,
        None => {
            let tag = subject.to_string().replace(':', "-");
            match up.remote.get_manifest(&up.repo, &tag, berth_core::media::OCI_INDEX).await? {
                Some(m) => serde_json::from_slice(&m.body).unwrap_or_default(),
                None => serde_json::Value::Null,
            }
        }
    };
    let listed = index["manifests"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(listed
        .iter()
        .filter_map(|d| d["digest"].as_str())
        .filter(|d| d.parse::<Digest>().is_ok())
        .take(MAX_UPSTREAM_REFERRERS)
        .map(str::to_string)
        .collect())
}

/// A receiver as a stream of chunks.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> futures_util::stream::BoxStream<'static, std::io::Result<Bytes>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
