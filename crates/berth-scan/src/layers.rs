//! Reading an image's layers in order — gzip, zstd or plain tar — applying whiteouts (`.wh.<name>`
//! deletes a path of a lower layer, `.wh..wh..opq` empties a directory of lower layers), and
//! keeping only the files package analyzers read, so memory does not grow with layer size.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};

use crate::binaries::MAX_BINARY;

/// Largest file an analyzer reads (a dpkg status database is a few MiB).
pub const MAX_FILE: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {layer}: {message}")]
    Unreadable { layer: usize, message: String },
}

/// A file the analyzers want, as the image has it after all layers so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Index of the layer that wrote it (0 = the base layer).
    pub layer: usize,
    pub data: Vec<u8>,
    /// For an executable: what it records about its build (its bytes are not kept).
    pub binary: Option<crate::binaries::BinaryInfo>,
}

/// Whether an analyzer reads this path (relative, no leading `/`).
pub fn interesting(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    matches!(path, "etc/os-release" | "usr/lib/os-release" | "var/lib/dpkg/status" | "lib/apk/db/installed")
        || path.starts_with("var/lib/dpkg/status.d/")
        || matches!(path, "var/lib/rpm/rpmdb.sqlite" | "usr/lib/sysimage/rpm/rpmdb.sqlite")
        || (name == "METADATA" && path.contains(".dist-info/"))
        || (name == "PKG-INFO" && path.contains(".egg-info/"))
        || (name == "package.json" && path.contains("node_modules/"))
}

fn normalize(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

/// The files of an image, layer by layer.
#[derive(Debug, Default)]
pub struct Image {
    files: HashMap<String, File>,
    layers: usize,
    /// Each version of a file as layers wrote it: (path, layer, data). Analyzers use it to tell
    /// which layer first installed a package recorded in a shared database file.
    history: Vec<(String, usize, Vec<u8>)>,
}

impl Image {
    pub fn new() -> Self {
        Image::default()
    }

    /// Reads the next layer (compression detected from its first bytes).
    pub fn add_layer(&mut self, layer: impl Read) -> Result<(), LayerError> {
        let index = self.layers;
        self.layers += 1;
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
        let mut whiteouts: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        let mut written: Vec<(String, Option<File>)> = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let path = normalize(&entry.path().map_err(bad)?.to_string_lossy());
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                opaque.push(dir);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                whiteouts.push(format!("{dir}{hidden}"));
                continue;
            }
            let kind = entry.header().entry_type();
            let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
            if kind.is_file() && interesting(&path) && entry.size() <= MAX_FILE {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut data).map_err(bad)?;
                written.push((path, Some(File { layer: index, data, binary: None })));
            } else if kind.is_file() && crate::java::is_archive(&path) && entry.size() <= MAX_FILE {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut data).map_err(bad)?;
                let maven = crate::java::packages(&data);
                let binary = (!maven.is_empty()).then(|| crate::binaries::BinaryInfo { maven, ..Default::default() });
                written.push((path, binary.map(|b| File { layer: index, data: Vec::new(), binary: Some(b) })));
            } else if kind.is_file() && executable && (64..=MAX_BINARY).contains(&entry.size()) {
                // Only ELF files are read whole (one at a time), and only what they record is kept.
                let mut head = [0u8; 4];
                entry.read_exact(&mut head).map_err(bad)?;
                let binary = if crate::binaries::is_elf(&head) {
                    let mut data = Vec::with_capacity(entry.size() as usize);
                    data.extend_from_slice(&head);
                    entry.read_to_end(&mut data).map_err(bad)?;
                    crate::binaries::analyze(&data)
                } else {
                    None
                };
                written.push((path, binary.map(|b| File { layer: index, data: Vec::new(), binary: Some(b) })));
            } else {
                // Anything else at a path hides what lower layers had there.
                written.push((path, None));
            }
        }
        // Whiteouts and opaque directories hide lower layers only, then this layer's files land.
        self.files.retain(|p, _| {
            !whiteouts.iter().any(|w| p == w || p.starts_with(&format!("{w}/")))
                && !opaque.iter().any(|d| p.starts_with(d.as_str()))
        });
        for (path, file) in written {
            match file {
                Some(file) => {
                    if file.binary.is_none() {
                        self.history.push((path.clone(), index, file.data.clone()));
                    }
                    self.files.insert(path, file);
                }
                None => {
                    self.files.remove(&path);
                }
            }
        }
        Ok(())
    }

    pub fn layers(&self) -> usize {
        self.layers
    }

    pub fn file(&self, path: &str) -> Option<&File> {
        self.files.get(path)
    }

    /// The files present, by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &File)> {
        self.files.iter().map(|(p, f)| (p.as_str(), f))
    }

    /// Every version of `path` layers wrote, oldest first.
    pub fn history(&self, path: &str) -> impl Iterator<Item = (usize, &[u8])> {
        self.history.iter().filter(move |(p, _, _)| p == path).map(|(_, l, d)| (*l, d.as_slice()))
    }
}
