//! Package inventories from an image's files: the OS (`os-release`), Debian packages
//! (`var/lib/dpkg/status`, distroless `status.d/`), Alpine packages (`lib/apk/db/installed`),
//! Python distributions (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`) and npm packages
//! (`node_modules/**/package.json`). Each package records the layer that installed it.
//! Executables: Go modules and toolchain, Rust crates (`cargo auditable`), see [`crate::binaries`].
//! RPM databases (`rpmdb.sqlite`, see [`crate::rpm`]), Java archives (see [`crate::java`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::layers::{ApkEntry, DebEntry, Found, Image};

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
    /// For a language package or binary: the OS package that installed its files. Such a
    /// package is matched through that OS package only (its distribution patches it and
    /// publishes its own advisories), as Trivy does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
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
            owner: None,
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

/// Installed packages of a dpkg status text.
pub(crate) fn dpkg_packages(text: &str) -> Vec<DebEntry> {
    paragraphs(text)
        .into_iter()
        .filter(|p| p.get("Status").is_none_or(|s| s.ends_with(" installed")))
        .filter_map(|p| {
            let name = p.get("Package")?.to_string();
            let version = p.get("Version")?.to_string();
            // `Source: name (version)` when the source version differs.
            let (source_name, source_version) = match p.get("Source") {
                Some(s) => match s.split_once(' ') {
                    Some((n, v)) => (Some(n.to_string()), Some(v.trim_matches(['(', ')', ' ']).to_string())),
                    None => (Some(s.to_string()), Some(version.clone())),
                },
                None => (Some(name.clone()), Some(version.clone())),
            };
            Some(DebEntry { name, version, source_name, source_version })
        })
        .collect()
}

/// Alpine's installed database: `P:` name, `V:` version, `o:` origin (source package), and the
/// files each installed (`F:` a directory, `R:` a file in it).
pub(crate) fn apk_records(text: &str) -> Vec<ApkEntry> {
    let mut out = Vec::new();
    let (mut name, mut version, mut origin) = (None, None, None);
    let mut files = Vec::new();
    let mut dir = String::new();
    let mut flush = |n: &mut Option<String>, v: &mut Option<String>, o: &mut Option<String>, f: &mut Vec<String>| {
        if let (Some(name), Some(version)) = (n.take(), v.take()) {
            out.push(ApkEntry { name, version, origin: o.take(), files: std::mem::take(f) });
        }
        *o = None;
        f.clear();
    };
    for line in text.lines() {
        if line.is_empty() {
            flush(&mut name, &mut version, &mut origin, &mut files);
            dir.clear();
            continue;
        }
        match line.split_once(':') {
            Some(("P", v)) => name = Some(v.to_string()),
            Some(("V", v)) => version = Some(v.to_string()),
            Some(("o", v)) => origin = Some(v.to_string()),
            Some(("F", v)) => dir = v.trim_matches('/').to_string(),
            Some(("R", v)) if dir.is_empty() => files.push(v.to_string()),
            Some(("R", v)) => files.push(format!("{dir}/{v}")),
            _ => {}
        }
    }
    flush(&mut name, &mut version, &mut origin, &mut files);
    out
}

pub(crate) fn os_release(text: &str) -> Option<Os> {
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

/// The first layer whose copy of `path` records a package `is` picks.
fn first_layer(img: &Image, path: &str, is: impl Fn(&Found) -> bool) -> Option<usize> {
    img.history(path).find(|(_, f)| is(f)).map(|(l, _)| l)
}

/// The OS package a `var/lib/dpkg/info/<pkg>[:arch].list` or `status.d/<pkg>.md5sums` file is
/// about.
fn dpkg_owner(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    let stem = name.strip_suffix(".list").or_else(|| name.strip_suffix(".md5sums"))?;
    Some(stem.split(':').next().unwrap_or(stem))
}

/// Everything the analyzers find in the image as its last layer left it.
pub fn inventory(img: &Image) -> Inventory {
    let mut inv = Inventory::default();
    let os = img.file("etc/os-release").or_else(|| img.file("usr/lib/os-release"));
    inv.os = os.and_then(|(_, f)| match f {
        Found::Os(o) => Some(o.clone()),
        _ => None,
    });
    let mut paths: Vec<(&str, usize, &Found)> = img.files().collect();
    paths.sort_by(|a, b| a.0.cmp(b.0));
    // Which OS package installed each file, from the package managers' own file lists.
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for (path, _, f) in &paths {
        match f {
            Found::Owned(files) => {
                if let Some(pkg) = dpkg_owner(path) {
                    owners.extend(files.iter().map(|p| (p.as_str(), pkg)));
                }
            }
            Found::Apk(pkgs) => {
                for p in pkgs {
                    owners.extend(p.files.iter().map(|f| (f.as_str(), p.name.as_str())));
                }
            }
            Found::Rpm(pkgs) => {
                for p in pkgs {
                    owners.extend(p.files.iter().map(|f| (f.as_str(), p.name.as_str())));
                }
            }
            _ => {}
        }
    }
    // A language package's metadata file, or the `.dist-info`/`.egg-info` directory holding it.
    let owner_of = |path: &str| {
        let parent = path.rsplit_once('/').map(|(d, _)| d);
        owners.get(path).or_else(|| parent.and_then(|d| owners.get(d))).map(|o| o.to_string())
    };
    for (path, layer, f) in paths.iter().copied() {
        let mut lang = |kind, name: &str, version: &str| {
            inv.packages.push(Package { owner: owner_of(path), ..Package::plain(kind, name, version, layer, path) })
        };
        match f {
            Found::Binary(b) => {
                if let Some(v) = &b.go_version {
                    lang(Kind::Go, "stdlib", v);
                }
                for (m, v) in &b.go_modules {
                    lang(Kind::Go, m, v);
                }
                for (c, v) in &b.crates {
                    lang(Kind::Crate, c, v);
                }
                for (a, v) in &b.maven {
                    lang(Kind::Maven, a, v);
                }
            }
            Found::Python { name, version } => lang(Kind::Python, name, version),
            Found::Npm { name, version } => lang(Kind::Npm, name, version),
            Found::Dpkg(pkgs) => {
                for p in pkgs {
                    let is = |f: &Found| matches!(f, Found::Dpkg(v) if v.iter().any(|q| q.name == p.name && q.version == p.version));
                    inv.packages.push(Package {
                        kind: Kind::Deb,
                        name: p.name.clone(),
                        version: p.version.clone(),
                        source_name: p.source_name.clone(),
                        source_version: p.source_version.clone(),
                        layer: first_layer(img, path, is).unwrap_or(layer),
                        path: path.to_string(),
                        owner: None,
                    });
                }
            }
            Found::Rpm(pkgs) => {
                for p in pkgs {
                    let is =
                        |f: &Found| matches!(f, Found::Rpm(v) if v.iter().any(|q| q.name == p.name && q.evr == p.evr));
                    let layer = first_layer(img, path, is).unwrap_or(layer);
                    inv.packages.push(Package {
                        source_version: p.source.as_ref().map(|_| p.evr.clone()),
                        source_name: p.source.clone(),
                        ..Package::plain(Kind::Rpm, &p.name, &p.evr, layer, path)
                    });
                }
            }
            Found::Apk(pkgs) => {
                for p in pkgs {
                    let is = |f: &Found| matches!(f, Found::Apk(v) if v.iter().any(|q| q.name == p.name && q.version == p.version));
                    inv.packages.push(Package {
                        kind: Kind::Apk,
                        source_version: p.origin.as_ref().map(|_| p.version.clone()),
                        source_name: p.origin.clone(),
                        name: p.name.clone(),
                        version: p.version.clone(),
                        layer: first_layer(img, path, is).unwrap_or(layer),
                        path: path.to_string(),
                        owner: None,
                    });
                }
            }
            Found::Os(_) | Found::Owned(_) => {}
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
    fn language_packages_an_os_package_installed_are_marked() {
        let mut img = Image::new();
        let status =
            "Package: python3-urllib3\nStatus: install ok installed\nVersion: 1.26.12-1\nSource: python-urllib3\n";
        let egg = "usr/lib/python3/dist-packages/urllib3-1.26.12.egg-info";
        let list = format!("/.\n/usr\n/{egg}\n/{egg}/PKG-INFO\n/usr/lib/python3/dist-packages/urllib3/__init__.py\n");
        img.add_layer(
            &layer(&[
                ("etc/os-release", Some("ID=debian\nVERSION_ID=\"12\"\n")),
                ("var/lib/dpkg/status", Some(status)),
                ("var/lib/dpkg/info/python3-urllib3.list", Some(&list)),
                (&format!("{egg}/PKG-INFO"), Some("Name: urllib3\nVersion: 1.26.12\n")),
                (
                    "app/venv/lib/python3.11/site-packages/idna-2.10.dist-info/METADATA",
                    Some("Name: idna\nVersion: 2.10\n"),
                ),
            ])[..],
        )
        .unwrap();
        let inv = inventory(&img);
        let find = |n: &str| inv.packages.iter().find(|p| p.name == n).unwrap();
        assert_eq!(find("urllib3").owner.as_deref(), Some("python3-urllib3"), "installed by dpkg");
        assert_eq!(find("idna").owner, None, "installed by pip");
        // Only the pip-installed one is looked up in PyPI's advisories.
        let keys = crate::matcher::lookup_keys(&inv);
        assert!(keys.contains(&("PyPI".into(), "idna".into())));
        assert!(!keys.contains(&("PyPI".into(), "urllib3".into())), "{keys:?}");
        assert!(keys.contains(&("Debian:12".into(), "python-urllib3".into())));
        // Alpine records which files a package installed too.
        let db = "P:py3-six\nV:1.16.0-r9\no:py3-six\nF:usr/lib/python3.12/site-packages/six-1.16.0.dist-info\nR:METADATA\n\n";
        let mut a = Image::new();
        a.add_layer(
            &layer(&[
                ("lib/apk/db/installed", Some(db)),
                (
                    "usr/lib/python3.12/site-packages/six-1.16.0.dist-info/METADATA",
                    Some("Name: six\nVersion: 1.16.0\n"),
                ),
            ])[..],
        )
        .unwrap();
        let six = inventory(&a).packages.into_iter().find(|p| p.name == "six").unwrap();
        assert_eq!(six.owner.as_deref(), Some("py3-six"));
    }

    #[test]
    fn layer_scans_stack_like_the_layers_and_survive_a_round_trip() {
        let base = layer(&[
            ("var/lib/dpkg/status", Some(STATUS1)),
            ("app/node_modules/a/package.json", Some(r#"{"name": "a", "version": "1.0.0"}"#)),
            ("app/node_modules/ab/package.json", Some(r#"{"name": "ab", "version": "1.0.0"}"#)),
            ("srv/node_modules/c/package.json", Some(r#"{"name": "c", "version": "1.0.0"}"#)),
        ]);
        // The upper layer replaces c's package.json with something no analyzer reads (a
        // directory), and whites out `a` (not `ab`).
        let upper = layer(&[("app/node_modules/.wh.a", Some("")), ("srv/node_modules/c/package.json/", None)]);
        let scans: Vec<crate::layers::LayerScan> =
            [&base, &upper].iter().enumerate().map(|(i, l)| crate::layers::scan_layer(&l[..], i).unwrap()).collect();
        // What the cache stores comes back the same.
        for sc in &scans {
            assert_eq!(crate::layers::LayerScan::from_bytes(&sc.to_bytes()).as_ref(), Some(sc));
        }
        assert_eq!(crate::layers::LayerScan::from_bytes(b"damaged"), None);
        let names = |img: &Image| {
            let mut n: Vec<String> = inventory(img).packages.iter().map(|p| p.name.clone()).collect();
            n.sort();
            n
        };
        let stacked = Image::stack(&scans);
        let mut read = Image::new();
        read.add_layer(&base[..]).unwrap();
        read.add_layer(&upper[..]).unwrap();
        assert_eq!(names(&stacked), names(&read));
        assert_eq!(names(&stacked), ["ab", "libc6", "libssl3"]);
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
