//! Image scanning: importing OSV vulnerability data, and scans that read an image's layers (as
//! streams, never whole), take its package inventory and match it against the imported data.
//! A scan is a job in the `scan` queue, claimed by a [`ScanWorker`] of some node for a lease the
//! worker renews, so a scan whose node stops is taken up again by another (or the same,
//! restarted) node; the image's scan row says IN_PROGRESS meanwhile. Its outcome (`COMPLETE`,
//! `FAILED`, `UNSUPPORTED_IMAGE`), findings and package inventory are stored with the image, and a
//! `scan_completed` event is written with them; new data is matched against stored inventories.
//! Scan on push is a consumer of the outbox ([`ScanOnPush`]): every stored manifest, whichever
//! path stored it, is scanned when its repository says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use berth_core::{Digest, ManifestKind, RepoName, media, parse_manifest};
use berth_meta::{EventKind, JobRow, RepoRow, ScanJob, ScanRow, VulnRow};
use berth_scan::inventory::Inventory;
use berth_scan::layers::{ANALYZER_VERSION, LayerScan};
use berth_scan::matcher;
pub use berth_scan::matcher::Finding;
use berth_scan::osv::Record;
use berth_scan::version::Ecosystem;
use bytes::Bytes;
use futures_util::StreamExt;

pub(crate) mod worker;

use crate::audit::AuditEvent;
use crate::caller::Caller;
use crate::content::Content;
use crate::core::domain;
use crate::error::{Error, Invalid, InvalidKind, NotFound, Result};
use crate::events::Consume;
use crate::model::ImageId;
use crate::repositories::Repositories;
use crate::scan_config::ScanConfig;

pub use worker::{ScanOnPush, ScanWorker};

/// Claims of one job before it is marked FAILED (a node that dies on it every time).
const MAX_SCAN_ATTEMPTS: i64 = 3;
/// Config media types of container images (anything else, e.g. an artifact, is not scanned).
const IMAGE_CONFIGS: [&str; 2] =
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// The artifact type of SBOM referrers, and the annotation marking the ones Berth attached.
pub const SBOM_TYPE: &str = "application/vnd.cyclonedx+json";
const SBOM_ANNOTATION: &str = "dev.berth.sbom";

/// A UUID (version 4 layout) derived from the image and scan time, so an SBOM's serial number
/// is stable for one scan.
fn serial(digest: &str, at: i64) -> String {
    let h = berth_crypto::digest_of(berth_core::Algorithm::Sha256, format!("{digest}@{at}").as_bytes());
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(&h.hex()[..32], &mut bytes).expect("a sha256 digest is hex");
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// OSV records read so far, by (ecosystem, package).
type RecordCache = std::collections::HashMap<(String, String), Vec<Record>>;

struct Scanned {
    inventories: Vec<Inventory>,
    findings: Vec<Finding>,
}

/// What matching the stored inventories again changed.
#[derive(Debug, Clone, Default)]
pub struct RematchReport {
    pub images: usize,
    pub changed: usize,
    pub appeared: usize,
    pub disappeared: usize,
    pub elapsed: std::time::Duration,
}

#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub files: usize,
    pub records: usize,
    /// (record, package) entries stored.
    pub entries: usize,
    /// Entries skipped because Berth cannot order their ecosystem's versions, by ecosystem.
    pub skipped: BTreeMap<String, usize>,
    /// Files that are not OSV records (with why).
    pub unreadable: Vec<String>,
    /// Records with a range that contradicts itself (a fix before its introduction), treated
    /// as empty: `record id (ecosystem/package)`.
    pub inconsistent: Vec<String>,
}

/// A blocking `Read` over chunks an async task sends (backpressure: a few chunks in flight).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// OSV files under `path`: `.json` records and `.zip` archives of them (OSV's `all.zip`).
fn osv_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            osv_files(&e.path(), out)?;
        }
    } else if path.extension().is_some_and(|e| e == "json" || e == "zip") {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Largest single record read (OSV records are kilobytes).
const MAX_RECORD: u64 = 16 << 20;

/// Reads the records of one file, or of each `.json` member of a zip archive, into `sink`.
fn read_osv_file(path: &Path, sink: &mut dyn FnMut(String, std::io::Result<Vec<u8>>)) {
    use std::io::Read;
    let name = path.display().to_string();
    if path.extension().is_some_and(|e| e == "json") {
        sink(name, std::fs::read(path));
        return;
    }
    let archive = std::fs::File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| format!("not a zip archive: {e}")));
    let mut archive = match archive {
        Ok(a) => a,
        Err(e) => return sink(name, Err(std::io::Error::other(e))),
    };
    for i in 0..archive.len() {
        let mut member = match archive.by_index(i) {
            Ok(m) => m,
            Err(e) => {
                sink(format!("{name}[{i}]"), Err(std::io::Error::other(e.to_string())));
                continue;
            }
        };
        let Ok(inner) = member.name().map(|n| n.to_string()) else { continue };
        if !member.is_file() || !inner.ends_with(".json") {
            continue;
        }
        let member_name = format!("{name}:{inner}");
        let mut data = Vec::with_capacity(member.size().min(MAX_RECORD) as usize);
        let r = (&mut member).take(MAX_RECORD + 1).read_to_end(&mut data).and_then(|_| {
            if data.len() as u64 > MAX_RECORD {
                Err(std::io::Error::other("larger than 16 MiB"))
            } else {
                Ok(std::mem::take(&mut data))
            }
        });
        sink(member_name, r);
    }
}

/// Adds a record's rows (one per affected package of an ecosystem Berth orders) to `batch`;
/// returns how many.
fn stage(record: &Record, json: &[u8], batch: &mut Vec<VulnRow>, skipped: &mut BTreeMap<String, usize>) -> usize {
    let json = String::from_utf8_lossy(json).into_owned();
    let mut n = 0;
    for a in &record.affected {
        let Some(p) = &a.package else { continue };
        if Ecosystem::from_osv(&p.ecosystem).is_none() {
            *skipped.entry(p.ecosystem.split(':').next().unwrap_or_default().to_string()).or_default() += 1;
            continue;
        }
        let name = if p.ecosystem == "PyPI" { matcher::python_name(&p.name) } else { p.name.clone() };
        batch.push((record.id.clone(), p.ecosystem.clone(), name, json.clone(), record.modified.clone()));
        n += 1;
    }
    n
}

/// An image's scan as DescribeImageScanFindings reports it.
#[derive(Debug, Clone)]
pub struct ScanReport {
    pub digest: String,
    pub scan: Option<(ScanRow, Vec<Finding>)>,
    /// When vulnerability data was last imported (ms), if ever.
    pub data_updated_at: Option<i64>,
}

domain! {
    /// Image scanning.
    Scanning
}

impl<'a> Scanning<'a> {
    fn repos(&self) -> Repositories<'a> {
        Repositories(self.0)
    }

    fn content(&self) -> Content<'a> {
        Content(self.0)
    }

    /// Imports OSV records from a JSON file, a zip archive of them (OSV publishes one per
    /// ecosystem, `all.zip`) or a directory of either (idempotent: a record replaces its earlier
    /// copy). Records of ecosystems Berth cannot order are counted and skipped.
    pub async fn import_osv(&self, caller: &Caller, path: &Path) -> Result<ImportReport> {
        caller.require_operator("import vulnerability data")?;
        let mut files = Vec::new();
        osv_files(path, &mut files).map_err(|e| Error::bad_request(format!("cannot read {}: {e}", path.display())))?;
        if files.is_empty() {
            return Err(Error::bad_request(format!(
                "{} holds no OSV records (.json files or .zip archives of them)",
                path.display()
            )));
        }
        let source = path.display().to_string();
        let mut report = ImportReport { files: files.len(), ..Default::default() };
        for f in files {
            // Parsing is blocking work; the batches are written as they fill.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<VulnRow>>(2);
            let worker = tokio::task::spawn_blocking(move || {
                let mut report = ImportReport::default();
                let mut batch = Vec::new();
                read_osv_file(&f, &mut |name, data| {
                    let parsed = data
                        .map_err(|e| e.to_string())
                        .and_then(|d| serde_json::from_slice::<Record>(&d).map(|r| (r, d)).map_err(|e| e.to_string()));
                    match parsed {
                        Ok((record, json)) => {
                            report.records += 1;
                            for p in berth_scan::osv::inconsistent_ranges(&record) {
                                tracing::warn!(record = %record.id, package = %p, "an OSV range's fix precedes its introduction: the range is treated as empty");
                                report.inconsistent.push(format!("{} ({p})", record.id));
                            }
                            report.entries += stage(&record, &json, &mut batch, &mut report.skipped);
                        }
                        Err(e) => report.unreadable.push(format!("{name}: {e}")),
                    }
                    if batch.len() >= 1000 {
                        let _ = tx.blocking_send(std::mem::take(&mut batch));
                    }
                });
                if !batch.is_empty() {
                    let _ = tx.blocking_send(batch);
                }
                report
            });
            while let Some(batch) = rx.recv().await {
                self.meta.put_vuln_records(&source, batch).await?;
            }
            let r = worker.await.map_err(|e| Error::Internal(e.to_string()))?;
            report.records += r.records;
            report.entries += r.entries;
            report.unreadable.extend(r.unreadable);
            report.inconsistent.extend(r.inconsistent);
            for (k, v) in r.skipped {
                *report.skipped.entry(k).or_default() += v;
            }
        }
        Ok(report)
    }

    /// StartImageScan: queues a scan of the image; a scan worker runs it. A scan of an image
    /// scanned less than `manual_scan_interval` ago is refused (ECR allows one a day). Returns
    /// the image's digest.
    pub async fn start_image_scan(&self, caller: &Caller, key: &str, id: &ImageId) -> Result<String> {
        let (repo, row) = self.repos().allowed(caller, "ecr:StartImageScan", key).await?;
        let digest = self.content().image_digest(key, id).await?;
        self.queue_scan(&repo, &row, &digest, true).await?;
        Ok(digest)
    }

    pub(crate) async fn queue_scan(&self, repo: &RepoName, row: &RepoRow, digest: &str, manual: bool) -> Result<()> {
        self.content().manifest(repo, digest).await?;
        let now = berth_meta::now_ms();
        if manual && let Some(prev) = self.meta.scan(row.id, digest).await? {
            if prev.status == "IN_PROGRESS" {
                return Ok(()); // already queued: one job is enough
            }
            let wait = self.settings.manual_scan_interval.as_millis() as i64;
            if now - prev.started_at < wait {
                return Err(Error::quota(format!(
                    "The scan quota per image has been exceeded: image {digest} was scanned at {}; it can be \
                     scanned again after {} (manual_scan_interval). New vulnerability data is matched against \
                     stored inventories without a rescan.",
                    berth_core::time::format_rfc3339(prev.started_at / 1000),
                    berth_core::time::format_rfc3339((prev.started_at + wait) / 1000)
                )));
            }
        }
        let job =
            ScanJob { repo_id: row.id, repo: repo.as_str().to_string(), digest: digest.to_string(), started_at: now };
        self.meta.queue_scan(&job, None).await?;
        self.scan_wake.notify_one();
        Ok(())
    }

    /// Whether images pushed to repository `repo` are scanned on push: its own setting, or a
    /// registry scanning rule that matches it.
    pub(crate) async fn scans_on_push(&self, repo: &RepoName) -> Result<bool> {
        if matches!(self.meta.get_repo(repo.as_str()).await?, Some(r) if r.settings.scan_on_push) {
            return Ok(true);
        }
        Ok(ScanConfig(self.0).repository_scanning(repo.name(), false).await?.scan_on_push)
    }

    /// DescribeImageScanFindings: the image's scan and its findings.
    pub async fn image_scan(&self, caller: &Caller, key: &str, id: &ImageId) -> Result<ScanReport> {
        let (repo, row) = self.repos().allowed(caller, "ecr:DescribeImageScanFindings", key).await?;
        let digest = self.content().image_digest(key, id).await?;
        let scan = self.scan_of(&repo, &row, &digest).await?;
        let data_updated_at = self.vulnerability_data_updated_at().await?;
        Ok(ScanReport { digest, scan, data_updated_at })
    }

    /// The stored scan of an image, and its findings (without the unfixed ones when the
    /// repository's scan policy hides them).
    pub(crate) async fn scan_of(
        &self,
        repo: &RepoName,
        row: &RepoRow,
        digest: &str,
    ) -> Result<Option<(ScanRow, Vec<Finding>)>> {
        let key = repo.as_str();
        let scan = match self.meta.scan(row.id, digest).await? {
            Some(scan) => scan,
            None => {
                // Pushed (or tagged) a moment ago, the scan on push not queued yet: it is as good as
                // in progress.
                let kinds = [EventKind::ManifestStored, EventKind::TagMoved];
                let pending = self.meta.event_pending(ScanOnPush::NAME, &kinds, key, digest).await?;
                if pending && self.scans_on_push(repo).await? && self.meta.get_manifest(row.id, digest).await?.is_some()
                {
                    let scan = ScanRow {
                        status: "IN_PROGRESS".into(),
                        description: Some("The scan is in progress.".into()),
                        started_at: berth_meta::now_ms(),
                        ..Default::default()
                    };
                    return Ok(Some((scan, Vec::new())));
                }
                // Not pending: never asked for, or consumed between the two reads (the consumer
                // queues the scan before it moves its cursor, so the scan is there now).
                match self.meta.scan(row.id, digest).await? {
                    Some(scan) => scan,
                    None => return Ok(None),
                }
            }
        };
        let mut findings: Vec<Finding> =
            scan.findings.as_deref().and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default();
        let policy = ScanConfig(self.0).scan_policy_of(row.id).await?;
        if policy.hide_unfixed {
            findings.retain(|f| f.fixed_in.is_some());
        }
        Ok(Some((scan, findings)))
    }

    /// Runs one claimed scan job to its outcome.
    pub(crate) async fn run_scan(&self, job: &JobRow, scan: &ScanJob) -> Result<()> {
        let started = std::time::Instant::now();
        let outcome = if job.attempts > MAX_SCAN_ATTEMPTS {
            Err(Error::Internal(format!(
                "the scan was given up after {MAX_SCAN_ATTEMPTS} attempts (each ended without a result: the node \
                 running it stopped)"
            )))
        } else {
            match RepoName::parse_key(&scan.repo) {
                Ok(repo) => self.scan_image(&repo, &scan.digest).await,
                Err(e) => Err(e.into()),
            }
        };
        let now = berth_meta::now_ms();
        let row = match outcome {
            Ok(scanned) => {
                let n = scanned.inventories.iter().map(|i| i.packages.len()).sum::<usize>();
                tracing::info!(
                    repository = %scan.repo, digest = %scan.digest, packages = n, findings = scanned.findings.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64, "image scanned"
                );
                ScanRow {
                    status: "COMPLETE".into(),
                    description: Some("The scan was completed successfully.".into()),
                    findings: serde_json::to_string(&scanned.findings).ok(),
                    packages: Some(n as i64),
                    started_at: scan.started_at,
                    completed_at: Some(now),
                    inventory: serde_json::to_string(&scanned.inventories).ok(),
                }
            }
            Err(Error::Invalid(Invalid { kind: InvalidKind::UnsupportedImage, reason, .. })) => ScanRow {
                status: "UNSUPPORTED_IMAGE".into(),
                description: Some(reason),
                started_at: scan.started_at,
                completed_at: Some(now),
                ..Default::default()
            },
            Err(e) => {
                tracing::warn!(repository = %scan.repo, digest = %scan.digest, error = %e, "scan failed");
                ScanRow {
                    status: "FAILED".into(),
                    description: Some(e.to_string()),
                    started_at: scan.started_at,
                    completed_at: Some(now),
                    ..Default::default()
                }
            }
        };
        let detail = scan_event_detail(&row);
        if self.meta.finish_scan(job, scan, &row, &detail).await?
            && row.status == "COMPLETE"
            && self.settings.sbom_referrers
            && let Err(e) = self.attach_sbom(&scan.repo, &scan.digest).await
        {
            tracing::warn!(repository = %scan.repo, digest = %scan.digest, error = %e, "could not attach the SBOM");
        }
        Ok(())
    }

    /// Berth's GetImageSbom: the CycloneDX SBOM of an image, from its last completed scan's
    /// inventory. Returns the image's digest with it.
    pub async fn image_sbom(&self, caller: &Caller, key: &str, id: &ImageId) -> Result<(String, serde_json::Value)> {
        let (repo, row) = self.repos().allowed(caller, "ecr:GetImageSbom", key).await?;
        let digest = self.content().image_digest(key, id).await?;
        let sbom = self.sbom(&repo, &row, &digest).await?;
        Ok((digest, sbom))
    }

    async fn sbom(&self, repo: &RepoName, row: &RepoRow, digest: &str) -> Result<serde_json::Value> {
        let Some((at, inventory)) = self.meta.scan_inventory(row.id, digest).await? else {
            return Err(
                NotFound::Scan { key: repo.to_string(), digest: digest.into(), tag: None, completed: true }.into()
            );
        };
        let inventories: Vec<Inventory> =
            serde_json::from_str(&inventory).map_err(|e| Error::Internal(format!("stored inventory: {e}")))?;
        Ok(berth_scan::sbom::cyclonedx(
            &inventories,
            &format!("{}/{}", self.settings.public_host(), repo.name()),
            digest,
            &serial(digest, at),
            &berth_core::time::format_rfc3339(at / 1000),
        ))
    }

    /// Attaches an image's SBOM to it as an OCI referrer (artifact type
    /// `application/vnd.cyclonedx+json`), replacing the one an earlier scan attached.
    async fn attach_sbom(&self, key: &str, digest: &str) -> Result<()> {
        let (repo, row) = self.repos().repository(key).await?;
        let sbom = self.sbom(&repo, &row, digest).await?;
        let repo_id = row.id;
        let subject = self.content().manifest(&repo, digest).await?;
        let body = serde_json::to_vec(&sbom).map_err(|e| Error::Internal(e.to_string()))?;
        let mut blobs = Vec::new();
        for data in [Bytes::from(body), Bytes::from_static(b"{}")] {
            let d = berth_crypto::digest_of(berth_core::Algorithm::Sha256, &data);
            let size = data.len();
            let stream = futures_util::stream::once(async move { Ok(data) }).boxed();
            self.content().store_blob(None, &repo, &d, stream).await?;
            blobs.push((d, size));
        }
        let created = sbom["metadata"]["timestamp"].clone();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": { "mediaType": media::OCI_EMPTY, "digest": blobs[1].0.to_string(), "size": 2 },
            "layers": [{ "mediaType": SBOM_TYPE, "digest": blobs[0].0.to_string(), "size": blobs[0].1 }],
            "subject": { "mediaType": subject.media_type, "digest": digest, "size": subject.content.len() },
            "annotations": { "org.opencontainers.image.created": created, SBOM_ANNOTATION: "cyclonedx" },
        });
        let previous = self.content().referrer_index(&repo, &digest.parse()?, Some(SBOM_TYPE)).await?;
        for m in previous["manifests"].as_array().into_iter().flatten() {
            if m["annotations"][SBOM_ANNOTATION].is_string()
                && let Some(d) = m["digest"].as_str()
            {
                self.content().remove_manifest(&repo, d).await?;
            }
        }
        let body = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        let sbom = crate::model::Via::SBOM;
        self.content().store_manifest(&repo, repo_id, None, None, Some(media::OCI_MANIFEST), &body, sbom).await?;
        Ok(())
    }

    /// When vulnerability data was last imported (ms), if ever.
    pub(crate) async fn vulnerability_data_updated_at(&self) -> Result<Option<i64>> {
        Ok(self.meta.vuln_sources().await?.iter().map(|s| s.1).max())
    }

    /// Scans queued or running: (all, held by a live claim). For the operator's status.
    pub async fn scan_queue(&self, caller: &Caller) -> Result<(i64, i64)> {
        caller.require_operator("look at the scan queue")?;
        Ok(self.meta.scan_queue(berth_meta::now_ms()).await?)
    }

    /// Matches every stored inventory against the vulnerability data as it is now (continuous
    /// scanning, without reading layers again); each image whose findings change gets an
    /// `ImageScanFindingsChanged` audit event naming what appeared and what disappeared.
    pub async fn rematch_all(&self, caller: &Caller) -> Result<RematchReport> {
        caller.require_operator("match stored inventories again")?;
        let started = std::time::Instant::now();
        let mut report = RematchReport::default();
        let mut records = RecordCache::new();
        let mut after = None;
        loop {
            let page = self.meta.scans_with_inventory(after.clone(), 200).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.repo_id, last.digest.clone()));
            for s in page {
                let Some(inv) = s.inventory.as_deref().and_then(|i| serde_json::from_str::<Vec<Inventory>>(i).ok())
                else {
                    continue;
                };
                report.images += 1;
                let new = self.match_inventories(&inv, &mut records).await?;
                let old: Vec<Finding> =
                    s.findings.as_deref().and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default();
                let key = |f: &Finding| (f.name.clone(), f.package.clone(), f.version.clone(), f.fixed_in.clone());
                let old_keys: BTreeSet<_> = old.iter().map(key).collect();
                let new_keys: BTreeSet<_> = new.iter().map(key).collect();
                if old_keys == new_keys && old == new {
                    continue;
                }
                let appeared: Vec<_> = new_keys.difference(&old_keys).collect();
                let gone: Vec<_> = old_keys.difference(&new_keys).collect();
                report.changed += 1;
                report.appeared += appeared.len();
                report.disappeared += gone.len();
                let json = serde_json::to_string(&new).map_err(|e| Error::Internal(e.to_string()))?;
                self.meta.set_findings(s.repo_id, &s.digest, &json).await?;
                if appeared.is_empty() && gone.is_empty() {
                    continue; // only severities or sources changed
                }
                let show = |v: &[&(String, String, String, Option<String>)], sign: char| {
                    v.iter().map(|(n, p, ver, _)| format!("{sign}{n} ({p} {ver})")).collect::<Vec<_>>()
                };
                let mut detail = show(&appeared, '+');
                detail.extend(show(&gone, '-'));
                self.audit(AuditEvent {
                    name: "ImageScanFindingsChanged".into(),
                    principal: Some("berth:scanner".into()),
                    resource: Some(format!("{}@{}", self.repository_arn(&s.repo), s.digest)),
                    allowed: true,
                    detail: Some(detail.join(", ")),
                    ..Default::default()
                })
                .await;
            }
        }
        self.flush_audit().await;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Findings of inventories (an index's platforms) against the stored records; `records`
    /// keeps what was read by (ecosystem, package), so a pass over many images reads each once.
    async fn match_inventories(&self, inventories: &[Inventory], records: &mut RecordCache) -> Result<Vec<Finding>> {
        let mut all = Vec::new();
        for inv in inventories {
            let mut mine: Vec<Record> = Vec::new();
            for key in matcher::lookup_keys(inv) {
                if !records.contains_key(&key) {
                    let rows = self.meta.vuln_records(&key.0, &key.1).await?;
                    records.insert(key.clone(), rows.iter().filter_map(|j| serde_json::from_str(j).ok()).collect());
                }
                mine.extend(records[&key].iter().cloned());
            }
            let index = matcher::Index::new(&mine);
            all.extend(matcher::findings(inv, &index));
        }
        all.sort_by(|a, b| (&a.name, &a.package, &a.path, &a.version).cmp(&(&b.name, &b.package, &b.path, &b.version)));
        all.dedup_by(|a, b| a.name == b.name && a.package == b.package && a.path == b.path && a.version == b.version);
        Ok(all)
    }

    /// Reads one layer blob into what the scanner needs of it (on a blocking thread, the blob
    /// streamed to it: memory does not follow the layer's size).
    async fn scan_layer(&self, layer: &Digest, index: usize) -> Result<LayerScan> {
        let body = self.open_any_copy(layer).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let reader = ChannelReader { rx, cur: Bytes::new() };
        let worker = tokio::task::spawn_blocking(move || berth_scan::layers::scan_layer(reader, index));
        let mut stream = body.stream;
        while let Some(chunk) = stream.next().await {
            // A copy: the store's chunks are views of a file mapping that it unmaps two chunks
            // behind, which would be ahead of a reader this many chunks behind — the reader would
            // fault pages back in that nothing unmaps (RSS growing with the layer). 16 MiB in
            // flight at most.
            if tx.send(chunk.map(|c| Bytes::copy_from_slice(&c))).await.is_err() {
                break; // the reader stopped (an error it reports)
            }
        }
        drop(tx);
        let r = worker.await.map_err(|e| Error::Internal(e.to_string()))?;
        r.map_err(|e| Error::invalid(InvalidKind::Layer, format!("{layer}: {e}")))
    }

    /// Inventories an image (each platform of an index) and matches it.
    async fn scan_image(&self, repo: &RepoName, digest: &str) -> Result<Scanned> {
        let mut inventories = Vec::new();
        self.inventories(repo, digest, &mut inventories).await?;
        let findings = self.match_inventories(&inventories, &mut RecordCache::new()).await?;
        Ok(Scanned { inventories, findings })
    }

    async fn inventories(&self, repo: &RepoName, digest: &str, out: &mut Vec<Inventory>) -> Result<()> {
        let m = self.content().manifest(repo, digest).await?;
        let parsed = parse_manifest(&m.content, Some(&m.media_type))?;
        if parsed.kind == ManifestKind::Index {
            for child in &parsed.children {
                // A sparse index lists platforms that were never pushed here: nothing to scan.
                match Box::pin(self.inventories(repo, &child.digest.to_string(), out)).await {
                    Err(Error::NotFound(NotFound::Manifest { .. })) => {}
                    r => r?,
                }
            }
            return Ok(());
        }
        let config = parsed.blobs.first().map(|d| d.media_type.as_str()).unwrap_or_default();
        if !IMAGE_CONFIGS.contains(&config) {
            return Err(Error::invalid(
                InvalidKind::UnsupportedImage,
                format!(
                    "The operation is not supported for this image: {digest} is not a container image (config media \
                 type {config:?})"
                ),
            ));
        }
        // The config is the first blob; the layers follow. A layer scanned before (in any image)
        // is not read again; the others are read in parallel.
        let layers: Vec<Digest> = parsed.blobs.iter().skip(1).map(|d| d.digest.clone()).collect();
        let mut scans: Vec<Option<LayerScan>> = Vec::with_capacity(layers.len());
        for d in &layers {
            let stored = self.meta.layer_scan(&d.to_string(), ANALYZER_VERSION).await?;
            scans.push(stored.and_then(|b| LayerScan::from_bytes(&b)));
        }
        let missing: Vec<usize> = (0..layers.len()).filter(|&i| scans[i].is_none()).collect();
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
        let read: Vec<(usize, Result<LayerScan>)> = futures_util::stream::iter(missing)
            .map(|i| {
                let d = layers[i].clone();
                async move { (i, self.scan_layer(&d, i).await) }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        for (i, r) in read {
            let scan = r?;
            self.meta.put_layer_scan(&layers[i].to_string(), ANALYZER_VERSION, scan.to_bytes()).await?;
            scans[i] = Some(scan);
        }
        let image = berth_scan::layers::Image::stack(scans.iter().flatten());
        out.push(berth_scan::inventory::inventory(&image));
        Ok(())
    }
}

/// The `scan_completed` event's detail: the outcome and the findings per severity (what ECR's
/// scan event carries).
fn scan_event_detail(row: &ScanRow) -> String {
    let mut counts = BTreeMap::<String, u64>::new();
    let findings: Vec<Finding> = row.findings.as_deref().and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default();
    for f in &findings {
        *counts.entry(f.severity.clone()).or_default() += 1;
    }
    serde_json::json!({ "status": row.status, "finding_severity_counts": counts }).to_string()
}
