//! Package inventories from an image's files: the OS (`os-release`), Debian packages
//! (`var/lib/dpkg/status`, distroless `status.d/`), Alpine packages (`lib/apk/db/installed`),
//! Python distributions (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`) and npm packages
//! (`node_modules/**/package.json`). Each package records the layer that installed it.
//! Executables: Go modules and toolchain, Rust crates (`cargo auditable`), see [`crate::binaries`].
//! RPM databases (`rpmdb.sqlite`, see [`crate::rpm`]), Java archives (see [`crate::java`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::layers::Image;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    /// `debian`, `ubuntu`, `alpine`, ...
    pub id: String,
    pub version_id: Option<String>,
    pub codename: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Deb,
    Apk,
    Python,
    Npm,
    /// A Go module (or `stdlib`, the toolchain's standard library) compiled into a binary.
    Go,
    /// A crate compiled into a Rust binary (`cargo auditable`).
    Crate,
    /// An RPM package (version `[epoch:]version-release`).
    Rpm,
    /// A Maven artifact in a Java archive (`group:artifact`).
    Maven,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub kind: Kind,
    pub name: String,
    pub version: String,
    /// The source package (distributions match vulnerabilities on it), when it differs or is known.
    pub source_name: Option<String>,
    pub source_version: Option<String>,
    /// The layer that installed this version.
    pub layer: usize,
    /// The file it was read from.
    pub path: String,
}

impl Package {
    /// A package that is its own source (language packages, binaries' modules).
    pub fn plain(kind: Kind, name: &str, version: &str, layer: usize, path: &str) -> Package {
        Package {
            kind,
            name: name.to_string(),
            version: version.to_string(),
            source_name: None,
            source_version: None,
            layer,
            path: path.to_string(),
        }
    }

    /// For tests: a package in layer 0, with an optional (source name, source version).
    #[cfg(test)]
    pub(crate) fn test(kind: Kind, name: &str, version: &str, source: Option<(&str, &str)>) -> Package {
        Package {
            source_name: source.map(|s| s.0.into()),
            source_version: source.map(|s| s.1.into()),
            ..Package::plain(kind, name, version, 0, "x")
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub os: Option<Os>,
    pub packages: Vec<Package>,
}

/// `Key: value` paragraphs separated by blank lines (dpkg status, apk's `K:v` lines use
/// [`apk_records`]). Continuation lines (starting with a space) are skipped.
fn paragraphs(text: &str) -> Vec<HashMap<&str, &str>> {
    let mut out = Vec::new();
    let mut cur = HashMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.trim(), v.trim());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Installed packages of a dpkg status text: (name, version, source name, source version).
fn dpkg_packages(text: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
    paragraphs(text)
        .into_iter()
        .filter(|p| p.get("Status").is_none_or(|s| s.ends_with(" installed")))
        .filter_map(|p| {
            let name = p.get("Package")?.to_string();
            let version = p.get("Version")?.to_string();
            // `Source: name (version)` when the source version differs.
            let (sname, sver) = match p.get("Source") {
                Some(s) => match s.split_once(' ') {
                    Some((n, v)) => (Some(n.to_string()), Some(v.trim_matches(['(', ')', ' ']).to_string())),
                    None => (Some(s.to_string()), Some(version.clone())),
                },
                None => (Some(name.clone()), Some(version.clone())),
            };
            Some((name, version, sname, sver))
        })
        .collect()
}

/// Alpine's installed database: `P:` name, `V:` version, `o:` origin (source package).
fn apk_records(text: &str) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    let (mut name, mut version, mut origin) = (None, None, None);
    let mut flush = |n: &mut Option<String>, v: &mut Option<String>, o: &mut Option<String>| {
        if let (Some(n), Some(v)) = (n.take(), v.take()) {
            out.push((n, v, o.take()));
        }
        *o = None;
    };
    for line in text.lines() {
        if line.is_empty() {
            flush(&mut name, &mut version, &mut origin);
            continue;
        }
        match line.split_once(':') {
            Some(("P", v)) => name = Some(v.to_string()),
            Some(("V", v)) => version = Some(v.to_string()),
            Some(("o", v)) => origin = Some(v.to_string()),
            _ => {}
        }
    }
    flush(&mut name, &mut version, &mut origin);
    out
}

fn os_release(text: &str) -> Option<Os> {
    let mut id = None;
    let (mut version_id, mut codename) = (None, None);
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "ID" => id = Some(v),
            "VERSION_ID" => version_id = Some(v),
            "VERSION_CODENAME" => codename = Some(v),
            _ => {}
        }
    }
    Some(Os { id: id?, version_id, codename })
}

/// The first layer whose copy of `path` lists `(name, version)`, by `parse`.
fn first_layer<T>(img: &Image, path: &str, parse: impl Fn(&str) -> Vec<T>, is: impl Fn(&T) -> bool) -> Option<usize> {
    img.history(path).find(|(_, data)| parse(&String::from_utf8_lossy(data)).iter().any(&is)).map(|(l, _)| l)
}

/// Everything the analyzers find in the image as its last layer left it.
pub fn inventory(img: &Image) -> Inventory {
    let mut inv = Inventory::default();
    let os = img.file("etc/os-release").or_else(|| img.file("usr/lib/os-release"));
    inv.os = os.and_then(|f| os_release(&String::from_utf8_lossy(&f.data)));
    let mut paths: Vec<(&str, &crate::layers::File)> = img.files().collect();
    paths.sort_by(|a, b| a.0.cmp(b.0));
    for (path, file) in paths {
        if let Some(b) = &file.binary {
            let mut add = |kind, name: &str, version: &str| {
                inv.packages.push(Package::plain(kind, name, version, file.layer, path))
            };
            if let Some(v) = &b.go_version {
                add(Kind::Go, "stdlib", v);
            }
            for (m, v) in &b.go_modules {
                add(Kind::Go, m, v);
            }
            for (c, v) in &b.crates {
                add(Kind::Crate, c, v);
            }
            for (a, v) in &b.maven {
                add(Kind::Maven, a, v);
            }
            continue;
        }
        let text = String::from_utf8_lossy(&file.data);
        if path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/") {
            for (name, version, sname, sver) in dpkg_packages(&text) {
                let layer =
                    first_layer(img, path, dpkg_packages, |p| p.0 == name && p.1 == version).unwrap_or(file.layer);
                inv.packages.push(Package {
                    kind: Kind::Deb,
                    name,
                    version,
                    source_name: sname,
                    source_version: sver,
                    layer,
                    path: path.to_string(),
                });
            }
        } else if path.ends_with("rpm/rpmdb.sqlite") {
            let Some(pkgs) = crate::rpm::packages(&file.data) else { continue };
            // The first layer whose copy of the database lists the package installed it.
            let copies: Vec<(usize, Vec<crate::rpm::RpmPackage>)> =
                img.history(path).map(|(l, d)| (l, crate::rpm::packages(d).unwrap_or_default())).collect();
            for p in pkgs {
                let layer = copies.iter().find(|(_, c)| c.contains(&p)).map_or(file.layer, |(l, _)| *l);
                inv.packages.push(Package {
                    source_version: p.source.as_ref().map(|_| p.evr.clone()),
                    source_name: p.source,
                    ..Package::plain(Kind::Rpm, &p.name, &p.evr, layer, path)
                });
            }
        } else if path == "lib/apk/db/installed" {
            for (name, version, origin) in apk_records(&text) {
                let layer =
                    first_layer(img, path, apk_records, |p| p.0 == name && p.1 == version).unwrap_or(file.layer);
                inv.packages.push(Package {
                    kind: Kind::Apk,
                    source_version: origin.as_ref().map(|_| version.clone()),
                    source_name: origin,
                    name,
                    version,
                    layer,
                    path: path.to_string(),
                });
            }
        } else if path.ends_with(".dist-info/METADATA") || path.ends_with(".egg-info/PKG-INFO") {
            // The headers end at the first blank line; the body is the description.
            let head = text.split("\n\n").next().unwrap_or_default();
            let field = |k: &str| head.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()));
            if let (Some(name), Some(version)) = (field("Name:"), field("Version:")) {
                inv.packages.push(Package::plain(Kind::Python, &name, &version, file.layer, path));
            }
        } else if path.ends_with("package.json") {
            let v: serde_json::Value = match serde_json::from_slice(&file.data) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if let (Some(name), Some(version)) = (v["name"].as_str(), v["version"].as_str()) {
                inv.packages.push(Package::plain(Kind::Npm, name, version, file.layer, path));
            }
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar layer from (path, contents); `None` contents make a directory.
    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(d) => {
                    h.set_size(d.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, path, d.as_bytes()).unwrap();
                }
                None => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const STATUS1: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nSource: glibc\n\n\
Package: libssl3\nStatus: install ok installed\nVersion: 3.0.11-1~deb12u2\nSource: openssl\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n";
    const STATUS2: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nSource: glibc\n\n\
Package: libssl3\nStatus: install ok installed\nVersion: 3.0.11-1~deb12u2\nSource: openssl\n\n\
Package: curl\nStatus: install ok installed\nVersion: 7.88.1-10+deb12u5\n\n\
Package: libcurl4\nStatus: install ok installed\nVersion: 7.88.1-10+deb12u5\nSource: curl (7.88.1-10+deb12u5)\n";

    #[test]
    fn layers_whiteouts_and_analyzers() {
        let mut img = Image::new();
        let base = layer(&[
            ("etc/os-release", Some("ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n")),
            ("var/lib/dpkg/status", Some(STATUS1)),
            (
                "usr/lib/python3/dist-packages/requests-2.28.1.dist-info/METADATA",
                Some("Metadata-Version: 2.1\nName: requests\nVersion: 2.28.1\n\nName: not this\n"),
            ),
            ("app/node_modules/lodash/package.json", Some(r#"{"name": "lodash", "version": "4.17.20"}"#)),
            ("app/node_modules/left-pad/package.json", Some(r#"{"name": "left-pad", "version": "1.3.0"}"#)),
            ("opt/tool/", None),
            ("opt/tool/node_modules/x/package.json", Some(r#"{"name": "x", "version": "1.0.0"}"#)),
        ]);
        img.add_layer(&gzip(&base)[..]).unwrap();
        // Layer 1: installs curl, deletes left-pad, empties opt/tool.
        let second = layer(&[
            ("var/lib/dpkg/status", Some(STATUS2)),
            ("app/node_modules/.wh.left-pad", Some("")),
            ("opt/tool/.wh..wh..opq", Some("")),
            (
                "usr/lib/python3/dist-packages/urllib3-1.26.12.dist-info/METADATA",
                Some("Name: urllib3\nVersion: 1.26.12\n"),
            ),
        ]);
        img.add_layer(&second[..]).unwrap();
        assert_eq!(img.layers(), 2);
        let inv = inventory(&img);
        assert_eq!(
            inv.os,
            Some(Os { id: "debian".into(), version_id: Some("12".into()), codename: Some("bookworm".into()) })
        );
        let find = |n: &str| inv.packages.iter().find(|p| p.name == n).cloned();
        let libc = find("libc6").unwrap();
        assert_eq!((libc.source_name.as_deref(), libc.layer), (Some("glibc"), 0));
        let curl = find("curl").unwrap();
        assert_eq!((curl.source_name.as_deref(), curl.layer), (Some("curl"), 1));
        assert_eq!(find("libcurl4").unwrap().source_version.as_deref(), Some("7.88.1-10+deb12u5"));
        assert!(find("gone").is_none(), "not installed");
        assert_eq!(find("requests").unwrap().version, "2.28.1");
        assert_eq!(find("urllib3").unwrap().layer, 1);
        assert_eq!(find("lodash").unwrap().kind, Kind::Npm);
        assert!(find("left-pad").is_none(), "whited out");
        assert!(find("x").is_none(), "opaque directory");
        assert_eq!(inv.packages.iter().filter(|p| p.kind == Kind::Deb).count(), 4);
    }

    #[test]
    fn alpine_and_garbage() {
        let mut img = Image::new();
        let db = "C:Q1abc=\nP:musl\nV:1.2.4-r2\no:musl\n\nP:busybox\nV:1.36.1-r5\no:busybox\n\nP:ssl_client\nV:1.36.1-r5\no:busybox\n";
        img.add_layer(
            &layer(&[("lib/apk/db/installed", Some(db)), ("etc/os-release", Some("ID=alpine\nVERSION_ID=3.19.1\n"))])[..],
        )
        .unwrap();
        let inv = inventory(&img);
        assert_eq!(inv.os.as_ref().unwrap().id, "alpine");
        let ssl = inv.packages.iter().find(|p| p.name == "ssl_client").unwrap();
        assert_eq!((ssl.kind, ssl.source_name.as_deref()), (Kind::Apk, Some("busybox")));
        // zstd layers too.
        let mut z = Image::new();
        let tarball = layer(&[("lib/apk/db/installed", Some(db))]);
        let packed = ruzstd::encoding::compress_to_vec(&tarball[..], ruzstd::encoding::CompressionLevel::Fastest);
        z.add_layer(&packed[..]).unwrap();
        assert_eq!(inventory(&z).packages.len(), 3);
        // Not a tar stream: a clear error, not a panic.
        let mut bad = Image::new();
        let e = bad.add_layer(&b"\x1f\x8bthis is not gzip at all"[..]).unwrap_err();
        assert!(e.to_string().starts_with("layer 0:"), "{e}");
    }
}
