//! A CycloneDX 1.5 SBOM (JSON) of an image's inventory. Each package is a component with a
//! package URL; distribution packages name their source package and version both as the purl's
//! `upstream` qualifier (as Grype reads it) and as properties, so other tools can match them the
//! way Berth does.

use serde_json::{Value, json};

use crate::inventory::{Inventory, Kind, Os};
use crate::matcher::python_name;

/// Percent-encodes what a purl segment or qualifier value may not hold literally.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'+') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn distro(os: Option<&Os>) -> Option<String> {
    let os = os?;
    Some(format!("{}-{}", os.id, os.version_id.as_deref()?))
}

/// The package URL of a package (None for kinds without one).
pub fn purl(p: &crate::inventory::Package, os: Option<&Os>) -> String {
    let upstream = |q: &mut Vec<String>| {
        if let Some(src) = &p.source_name {
            let v = p.source_version.as_deref().filter(|v| *v != p.version);
            q.push(format!("upstream={}", enc(&v.map_or(src.clone(), |v| format!("{src}@{v}")))));
        }
    };
    let mut q = Vec::new();
    let base = match p.kind {
        Kind::Deb => {
            upstream(&mut q);
            q.extend(distro(os).map(|d| format!("distro={d}")));
            let ns = os.map_or("debian", |o| o.id.as_str());
            format!("pkg:deb/{ns}/{}@{}", enc(&p.name), enc(&p.version))
        }
        Kind::Apk => {
            upstream(&mut q);
            q.extend(distro(os).map(|d| format!("distro={d}")));
            format!("pkg:apk/alpine/{}@{}", enc(&p.name), enc(&p.version))
        }
        Kind::Python => format!("pkg:pypi/{}@{}", enc(&python_name(&p.name)), enc(&p.version)),
        Kind::Npm => match p.name.split_once('/') {
            Some((scope, name)) if scope.starts_with('@') => {
                format!("pkg:npm/{}/{}@{}", enc(scope), enc(name), enc(&p.version))
            }
            _ => format!("pkg:npm/{}@{}", enc(&p.name), enc(&p.version)),
        },
        Kind::Go => {
            let path: Vec<String> = p.name.split('/').map(enc).collect();
            format!("pkg:golang/{}@{}", path.join("/"), enc(&p.version))
        }
        Kind::Crate => format!("pkg:cargo/{}@{}", enc(&p.name), enc(&p.version)),
        Kind::Maven => match p.name.split_once(':') {
            Some((g, a)) => format!("pkg:maven/{}/{}@{}", enc(g), enc(a), enc(&p.version)),
            None => format!("pkg:maven/{}@{}", enc(&p.name), enc(&p.version)),
        },
        Kind::Rpm => {
            if let Some(src) = &p.source_name {
                q.push(format!("upstream={}", enc(src)));
            }
            q.extend(distro(os).map(|d| format!("distro={d}")));
            let ns = os.map_or("redhat", |o| o.id.as_str());
            format!("pkg:rpm/{ns}/{}@{}", enc(&p.name), enc(&p.version))
        }
    };
    q.sort();
    if q.is_empty() { base } else { format!("{base}?{}", q.join("&")) }
}

/// The SBOM of an image (`name` as clients pull it, `digest` its manifest digest) from the
/// inventories of its platforms; `serial` is a UUID, `timestamp` RFC 3339.
pub fn cyclonedx(inventories: &[Inventory], name: &str, digest: &str, serial: &str, timestamp: &str) -> Value {
    let mut components = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for inv in inventories {
        if let Some(os) = &inv.os
            && seen.insert(format!("os:{}:{:?}", os.id, os.version_id))
        {
            components.push(json!({
                "type": "operating-system", "name": os.id,
                "version": os.version_id.clone().unwrap_or_default(),
                "bom-ref": format!("os:{}@{}", os.id, os.version_id.as_deref().unwrap_or("")),
            }));
        }
        for p in &inv.packages {
            let purl = purl(p, inv.os.as_ref());
            if !seen.insert(purl.clone()) {
                continue;
            }
            let mut props = vec![
                json!({"name": "berth:package:type", "value": format!("{:?}", p.kind).to_lowercase()}),
                json!({"name": "berth:layer", "value": p.layer.to_string()}),
                json!({"name": "berth:path", "value": p.path}),
            ];
            if let Some(s) = &p.source_name {
                props.push(json!({"name": "berth:source:name", "value": s}));
                props.push(json!({"name": "aquasecurity:trivy:SrcName", "value": s}));
            }
            if let Some(v) = &p.source_version {
                props.push(json!({"name": "berth:source:version", "value": v}));
                props.push(json!({"name": "aquasecurity:trivy:SrcVersion", "value": v}));
            }
            components.push(json!({
                "type": "library", "bom-ref": purl, "name": p.name, "version": p.version, "purl": purl,
                "properties": props,
            }));
        }
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{serial}"),
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": { "components": [{ "type": "application", "name": "berth", "version": env!("CARGO_PKG_VERSION") }] },
            "component": {
                "type": "container", "bom-ref": format!("{name}@{digest}"), "name": name, "version": digest,
            },
        },
        "components": components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Package;

    fn pkg(kind: Kind, name: &str, version: &str, source: Option<(&str, &str)>) -> Package {
        Package::test(kind, name, version, source)
    }

    #[test]
    fn purls() {
        let os = Os { id: "debian".into(), version_id: Some("12".into()), codename: None };
        let cases = [
            (
                pkg(Kind::Deb, "libssl3", "3.0.11-1~deb12u2", Some(("openssl", "3.0.11-1~deb12u2"))),
                "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?distro=debian-12&upstream=openssl",
            ),
            (
                pkg(Kind::Deb, "bash", "5.2.15-2+b2", Some(("bash", "5.2.15-2"))),
                "pkg:deb/debian/bash@5.2.15-2+b2?distro=debian-12&upstream=bash%405.2.15-2",
            ),
            (
                pkg(Kind::Deb, "zlib1g", "1:1.2.13.dfsg-1", None),
                "pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?distro=debian-12",
            ),
            (pkg(Kind::Python, "Flask_Login", "0.6.2", None), "pkg:pypi/flask-login@0.6.2"),
            (pkg(Kind::Npm, "@babel/core", "7.0.0", None), "pkg:npm/%40babel/core@7.0.0"),
            (pkg(Kind::Go, "golang.org/x/net", "v0.1.0", None), "pkg:golang/golang.org/x/net@v0.1.0"),
            (pkg(Kind::Crate, "smallvec", "1.6.0", None), "pkg:cargo/smallvec@1.6.0"),
        ];
        for (p, want) in cases {
            assert_eq!(purl(&p, Some(&os)), want);
        }
    }

    #[test]
    fn document() {
        let inv = Inventory {
            os: Some(Os { id: "debian".into(), version_id: Some("12".into()), codename: None }),
            packages: vec![pkg(Kind::Deb, "libssl3", "3.0.11-1", Some(("openssl", "3.0.11-1")))],
        };
        let d = cyclonedx(
            &[inv.clone(), inv],
            "app",
            "sha256:ab",
            "00000000-0000-4000-8000-000000000000",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(d["specVersion"], "1.5");
        assert_eq!(d["components"].as_array().unwrap().len(), 2, "the OS and one package, each once");
        let p = &d["components"][1];
        assert_eq!(p["purl"], "pkg:deb/debian/libssl3@3.0.11-1?distro=debian-12&upstream=openssl");
        assert!(p["properties"].as_array().unwrap().iter().any(|x| x["name"] == "berth:source:version"));
    }
}
