//! Image scanning: importing OSV vulnerability data, and scans that read an image's layers (as
//! streams, never whole), take its package inventory and match it against the imported data.
//! A scan runs as a background task; its state (`IN_PROGRESS`, `COMPLETE`, `FAILED`) and findings
//! are stored with the image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_core::{Digest, ManifestKind, RepoName, parse_manifest};
use berth_meta::ScanRow;
use berth_scan::matcher;
pub use berth_scan::matcher::Finding;
use berth_scan::osv::Record;
use berth_scan::version::Ecosystem;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{Error, Registry, Result};

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

fn json_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            json_files(&e.path(), out)?;
        }
    } else if path.extension().is_some_and(|e| e == "json") {
        out.push(path.to_path_buf());
    }
    Ok(())
}

impl Registry {
    /// Imports OSV records from a JSON file or a directory of them (idempotent: a record
    /// replaces its earlier copy).
    pub async fn import_osv(&self, path: &Path) -> Result<ImportReport> {
        let mut files = Vec::new();
        json_files(path, &mut files)
            .map_err(|e| Error::InvalidParameter(format!("cannot read {}: {e}", path.display())))?;
        if files.is_empty() {
            return Err(Error::InvalidParameter(format!("{} holds no .json OSV records", path.display())));
        }
        let source = path.display().to_string();
        let mut report = ImportReport { files: files.len(), ..Default::default() };
        let mut batch = Vec::new();
        for f in files {
            let text = match std::fs::read(&f) {
                Ok(t) => t,
                Err(e) => {
                    report.unreadable.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            let record: Record = match serde_json::from_slice(&text) {
                Ok(r) => r,
                Err(e) => {
                    report.unreadable.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            report.records += 1;
            let json = String::from_utf8_lossy(&text).to_string();
            for a in &record.affected {
                let Some(p) = &a.package else { continue };
                if Ecosystem::from_osv(&p.ecosystem).is_none() {
                    *report
                        .skipped
                        .entry(p.ecosystem.split(':').next().unwrap_or_default().to_string())
                        .or_default() += 1;
                    continue;
                }
                let name = if p.ecosystem == "PyPI" { matcher::python_name(&p.name) } else { p.name.clone() };
                batch.push((record.id.clone(), p.ecosystem.clone(), name, json.clone(), record.modified.clone()));
            }
            if batch.len() >= 1000 {
                report.entries += batch.len();
                self.meta.put_vuln_records(&source, std::mem::take(&mut batch)).await?;
            }
        }
        report.entries += batch.len();
        self.meta.put_vuln_records(&source, batch).await?;
        Ok(report)
    }

    /// Starts a scan of image `digest` in repository `key` (ECR's StartImageScan); it runs in the
    /// background.
    pub async fn start_image_scan(&self, key: &str, digest: &str) -> Result<ScanRow> {
        let (repo, row) = self.repository(key).await?;
        self.get_manifest(&repo, digest).await?;
        let scan = ScanRow {
            status: "IN_PROGRESS".into(),
            description: Some("The scan is in progress.".into()),
            findings: None,
            packages: None,
            started_at: berth_meta::now_ms(),
            completed_at: None,
        };
        self.meta.put_scan(row.id, digest, &scan).await?;
        let me = self.clone();
        let digest = digest.to_string();
        tokio::spawn(async move {
            let done = match me.run_scan(&repo, &digest).await {
                Ok((findings, packages)) => ScanRow {
                    status: "COMPLETE".into(),
                    description: Some("The scan was completed successfully.".into()),
                    findings: serde_json::to_string(&findings).ok(),
                    packages: Some(packages as i64),
                    completed_at: Some(berth_meta::now_ms()),
                    ..scan
                },
                Err(e) => ScanRow {
                    status: "FAILED".into(),
                    description: Some(e.to_string()),
                    completed_at: Some(berth_meta::now_ms()),
                    ..scan
                },
            };
            if let Err(e) = me.meta.put_scan(row.id, &digest, &done).await {
                tracing::error!(error = %e, "could not store a scan result");
            }
        });
        Ok(ScanRow { status: "IN_PROGRESS".into(), ..Default::default() })
    }

    /// The stored scan of an image, and its findings.
    pub async fn image_scan(&self, key: &str, digest: &str) -> Result<Option<(ScanRow, Vec<Finding>)>> {
        let (_, row) = self.repository(key).await?;
        let Some(scan) = self.meta.scan(row.id, digest).await? else { return Ok(None) };
        let findings = scan.findings.as_deref().and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default();
        Ok(Some((scan, findings)))
    }

    /// Inventories and matches an image (each platform of an index); returns the findings and
    /// how many packages were found.
    async fn run_scan(&self, repo: &RepoName, digest: &str) -> Result<(Vec<Finding>, usize)> {
        let m = self.get_manifest(repo, digest).await?;
        let parsed = parse_manifest(&m.content, Some(&m.media_type))?;
        if parsed.kind == ManifestKind::Index {
            let mut all = Vec::new();
            let mut packages = 0;
            for child in &parsed.children {
                let (f, n) = Box::pin(self.run_scan(repo, &child.digest.to_string())).await?;
                all.extend(f);
                packages += n;
            }
            all.sort_by(|a, b| (&a.name, &a.package).cmp(&(&b.name, &b.package)));
            all.dedup_by(|a, b| a.name == b.name && a.package == b.package);
            return Ok((all, packages));
        }
        // The config is the first blob; the layers follow.
        let layers: Vec<Digest> = parsed.blobs.iter().skip(1).map(|d| d.digest.clone()).collect();
        let mut image = berth_scan::layers::Image::new();
        for layer in layers {
            let body = self.blobs.open(&layer, None).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let reader = ChannelReader { rx, cur: Bytes::new() };
            let worker = tokio::task::spawn_blocking(move || {
                let r = image.add_layer(reader);
                (image, r)
            });
            let mut stream = body.stream;
            while let Some(chunk) = stream.next().await {
                if tx.send(chunk).await.is_err() {
                    break; // the reader stopped (an error it reports)
                }
            }
            drop(tx);
            let (img, r) = worker.await.map_err(|e| Error::Internal(e.to_string()))?;
            r.map_err(|e| Error::InvalidLayer(format!("{layer}: {e}")))?;
            image = img;
        }
        let inv = berth_scan::inventory::inventory(&image);
        let mut records: Vec<Record> = Vec::new();
        for (eco, name) in matcher::lookup_keys(&inv) {
            for json in self.meta.vuln_records(&eco, &name).await? {
                if let Ok(r) = serde_json::from_str(&json) {
                    records.push(r);
                }
            }
        }
        let index = matcher::Index::new(&records);
        Ok((matcher::findings(&inv, &index), inv.packages.len()))
    }
}
