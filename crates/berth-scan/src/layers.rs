//! Reading an image's layers — gzip, zstd or plain tar — in two steps:
//!
//! 1. [`scan_layer`] reads one layer on its own into a [`LayerScan`]: the files analyzers care
//!    about, already analyzed ([`Found`]), the layer's whiteouts (`.wh.<name>` deletes a path of a
//!    lower layer) and opaque directories (`.wh..wh..opq` empties one), and a hash of every other
//!    path it writes (each hides whatever a lower layer had there). It depends on nothing but the
//!    layer's bytes, so layers are read in parallel and their scans kept by layer digest: a base
//!    layer shared by a thousand images is read once.
//! 2. [`Image::stack`] lays the scans on top of each other, as a container runtime stacks layers.
//!
//! Memory does not follow layer size: only the files analyzers read are kept, and those are
//! summarized as soon as they are read.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};

use crate::binaries::{BinaryInfo, MAX_BINARY};
use crate::inventory::Os;

/// Largest file an analyzer reads (a dpkg status database is a few MiB).
pub const MAX_FILE: u64 = 64 * 1024 * 1024;

/// Bumped whenever what [`scan_layer`] finds changes, so that stored scans are redone.
pub const ANALYZER_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {layer}: {message}")]
    Unreadable { layer: usize, message: String },
}

/// A Debian package recorded in a status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebEntry {
    pub name: String,
    pub version: String,
    pub source_name: Option<String>,
    pub source_version: Option<String>,
}

/// An Alpine package with the files it installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApkEntry {
    pub name: String,
    pub version: String,
    pub origin: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
}

/// What an analyzer made of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Found {
    Os(Os),
    /// `var/lib/dpkg/status` or a distroless `status.d/<name>` file.
    Dpkg(Vec<DebEntry>),
    /// The files a Debian package owns (`var/lib/dpkg/info/<pkg>.list`, distroless
    /// `status.d/<pkg>.md5sums`), relative, without a leading `/`.
    Owned(Vec<String>),
    Apk(Vec<ApkEntry>),
    Rpm(Vec<crate::rpm::RpmPackage>),
    Python {
        name: String,
        version: String,
    },
    Npm {
        name: String,
        version: String,
    },
    /// An executable's build record, or a Java archive's Maven artifacts.
    Binary(BinaryInfo),
}

/// What one layer contributes, independent of every other layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerScan {
    pub found: Vec<(String, Found)>,
    /// Paths deleted from lower layers (with everything below them).
    pub whiteouts: Vec<String>,
    /// Directories (with a trailing `/`) emptied of lower layers' content.
    pub opaque: Vec<String>,
    /// [`path_hash`] of every other path the layer writes, sorted.
    pub shadows: Vec<u64>,
}

impl LayerScan {
    /// The scan as stored: deflated JSON (paths compress well).
    pub fn to_bytes(&self) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        serde_json::to_writer(&mut e, self).expect("a layer scan serializes");
        e.flush().expect("writing to memory");
        e.finish().expect("writing to memory")
    }

    /// A stored scan; `None` if it is damaged (it is then made again).
    pub fn from_bytes(b: &[u8]) -> Option<LayerScan> {
        serde_json::from_reader(flate2::read::DeflateDecoder::new(b)).ok()
    }
}

/// A stable 64-bit hash of a path (FNV-1a): what [`LayerScan::shadows`] keep instead of the
/// paths themselves (a base layer writes thousands).
pub fn path_hash(p: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in p.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Whether an analyzer reads this path (relative, no leading `/`).
pub fn interesting(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    matches!(path, "etc/os-release" | "usr/lib/os-release" | "var/lib/dpkg/status" | "lib/apk/db/installed")
        || path.starts_with("var/lib/dpkg/status.d/")
        || (path.starts_with("var/lib/dpkg/info/") && name.ends_with(".list"))
        || matches!(path, "var/lib/rpm/rpmdb.sqlite" | "usr/lib/sysimage/rpm/rpmdb.sqlite")
        || (name == "METADATA" && path.contains(".dist-info/"))
        || (name == "PKG-INFO" && path.contains(".egg-info/"))
        || (name == "package.json" && path.contains("node_modules/"))
}

/// A path as layers name it: relative, without `./`, a leading `/` or a trailing `/`.
pub fn normalize(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

/// Reads one layer (compression detected from its first bytes); `index` only names it in errors.
pub fn scan_layer(layer: impl Read, index: usize) -> Result<LayerScan, LayerError> {
    let bad = |e: io::Error| LayerError::Unreadable { layer: index, message: e.to_string() };
    let mut buf = BufReader::with_capacity(256 * 1024, layer);
    let head = buf.fill_buf().map_err(bad)?.to_vec();
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buf))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(buf)
                .map_err(|e| LayerError::Unreadable { layer: index, message: format!("zstd: {e}") })?,
        )
    } else {
        Box::new(buf)
    };
    let mut archive = tar::Archive::new(reader);
    let mut scan = LayerScan::default();
    let mut found: HashMap<String, Found> = HashMap::new();
    let mut shadows: HashSet<u64> = HashSet::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = normalize(&entry.path().map_err(bad)?.to_string_lossy());
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n.to_string()),
            None => (String::new(), path.clone()),
        };
        if name == ".wh..wh..opq" {
            scan.opaque.push(dir);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            scan.whiteouts.push(format!("{dir}{hidden}"));
            continue;
        }
        let kind = entry.header().entry_type();
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        let size = entry.size();
        let read_all = |entry: &mut tar::Entry<'_, Box<dyn Read>>| -> Result<Vec<u8>, LayerError> {
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(bad)?;
            Ok(data)
        };
        let summary = if kind.is_file() && interesting(&path) && size <= MAX_FILE {
            analyze(&path, &read_all(&mut entry)?)
        } else if kind.is_file() && crate::java::is_archive(&path) && size <= MAX_FILE {
            let maven = crate::java::packages(&read_all(&mut entry)?);
            (!maven.is_empty()).then(|| Found::Binary(BinaryInfo { maven, ..Default::default() }))
        } else if kind.is_file() && executable && (64..=MAX_BINARY).contains(&size) {
            // Only ELF files are read whole (one at a time), and only what they record is kept.
            let mut head = [0u8; 4];
            entry.read_exact(&mut head).map_err(bad)?;
            if crate::binaries::is_elf(&head) {
                let mut data = Vec::with_capacity(size as usize);
                data.extend_from_slice(&head);
                entry.read_to_end(&mut data).map_err(bad)?;
                crate::binaries::analyze(&data).map(Found::Binary)
            } else {
                None
            }
        } else {
            None
        };
        // A later entry for the same path in the same layer replaces an earlier one.
        match summary {
            Some(f) => {
                found.insert(path, f);
            }
            None => {
                found.remove(&path);
                shadows.insert(path_hash(&path));
            }
        }
    }
    let mut found: Vec<(String, Found)> = found.into_iter().collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    scan.found = found;
    scan.shadows = shadows.into_iter().collect();
    scan.shadows.sort_unstable();
    Ok(scan)
}

/// What an analyzed file says (`None`: nothing an analyzer can use).
fn analyze(path: &str, data: &[u8]) -> Option<Found> {
    let text = || String::from_utf8_lossy(data);
    let name = path.rsplit('/').next().unwrap_or(path);
    if path == "etc/os-release" || path == "usr/lib/os-release" {
        return crate::inventory::os_release(&text()).map(Found::Os);
    }
    if path == "var/lib/dpkg/status" || (path.starts_with("var/lib/dpkg/status.d/") && !name.contains('.')) {
        return Some(Found::Dpkg(crate::inventory::dpkg_packages(&text())));
    }
    if path.starts_with("var/lib/dpkg/info/") {
        let owned = text().lines().map(normalize).filter(|l| !l.is_empty()).collect();
        return Some(Found::Owned(owned));
    }
    if path.starts_with("var/lib/dpkg/status.d/") && name.ends_with(".md5sums") {
        // `<md5>  <path>` lines, paths relative to `/`.
        let owned = text().lines().filter_map(|l| l.split_once("  ").map(|(_, p)| normalize(p))).collect();
        return Some(Found::Owned(owned));
    }
    if path.starts_with("var/lib/dpkg/status.d/") {
        return None;
    }
    if path.ends_with("rpm/rpmdb.sqlite") {
        return crate::rpm::packages(data).map(Found::Rpm);
    }
    if path == "lib/apk/db/installed" {
        return Some(Found::Apk(crate::inventory::apk_records(&text())));
    }
    if path.ends_with(".dist-info/METADATA") || path.ends_with(".egg-info/PKG-INFO") {
        // The headers end at the first blank line; the body is the description.
        let text = text();
        let head = text.split("\n\n").next().unwrap_or_default();
        let field = |k: &str| head.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()));
        return match (field("Name:"), field("Version:")) {
            (Some(name), Some(version)) => Some(Found::Python { name, version }),
            _ => None,
        };
    }
    if name == "package.json" {
        let v: serde_json::Value = serde_json::from_slice(data).ok()?;
        return match (v["name"].as_str(), v["version"].as_str()) {
            (Some(n), Some(ver)) => Some(Found::Npm { name: n.to_string(), version: ver.to_string() }),
            _ => None,
        };
    }
    None
}

/// An image's files as its layers stacked them, with each version of a recorded file.
#[derive(Debug, Default)]
pub struct Image {
    files: HashMap<String, (usize, Found)>,
    layers: usize,
    /// Each version of a database file (package lists) as layers wrote it: (path, layer, found).
    /// Analyzers use it to tell which layer first installed a package.
    history: Vec<(String, usize, Found)>,
}

impl Image {
    pub fn new() -> Self {
        Image::default()
    }

    /// Stacks layer scans, the base first.
    pub fn stack<'a>(scans: impl IntoIterator<Item = &'a LayerScan>) -> Image {
        let mut img = Image::default();
        for s in scans {
            img.push(s);
        }
        img
    }

    /// Lays one more layer on top.
    pub fn push(&mut self, s: &LayerScan) {
        let index = self.layers;
        self.layers += 1;
        // Whiteouts, opaque directories and replaced paths hide lower layers only; then this
        // layer's files land.
        if !s.whiteouts.is_empty() || !s.opaque.is_empty() || !s.shadows.is_empty() {
            self.files.retain(|p, _| {
                !s.whiteouts
                    .iter()
                    .any(|w| p == w || (p.starts_with(w.as_str()) && p.as_bytes().get(w.len()) == Some(&b'/')))
                    && !s.opaque.iter().any(|d| p.starts_with(d.as_str()))
                    && s.shadows.binary_search(&path_hash(p)).is_err()
            });
        }
        for (path, f) in &s.found {
            if matches!(f, Found::Dpkg(_) | Found::Apk(_) | Found::Rpm(_)) {
                self.history.push((path.clone(), index, f.clone()));
            }
            self.files.insert(path.clone(), (index, f.clone()));
        }
    }

    pub fn layers(&self) -> usize {
        self.layers
    }

    /// The file at `path` with the layer that wrote it.
    pub fn file(&self, path: &str) -> Option<(usize, &Found)> {
        self.files.get(path).map(|(l, f)| (*l, f))
    }

    /// The files present, by path, with the layer that wrote each.
    pub fn files(&self) -> impl Iterator<Item = (&str, usize, &Found)> {
        self.files.iter().map(|(p, (l, f))| (p.as_str(), *l, f))
    }

    /// Every version of `path` layers wrote, oldest first.
    pub fn history(&self, path: &str) -> impl Iterator<Item = (usize, &Found)> {
        self.history.iter().filter(move |(p, _, _)| p == path).map(|(_, l, f)| (*l, f))
    }

    /// Reads the next layer from its bytes (what [`scan_layer`] and [`Image::push`] do).
    pub fn add_layer(&mut self, layer: impl Read) -> Result<(), LayerError> {
        let s = scan_layer(layer, self.layers)?;
        self.push(&s);
        Ok(())
    }
}
