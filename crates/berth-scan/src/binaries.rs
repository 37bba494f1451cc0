//! What compiled binaries say about what they were built from: Go's build info (the toolchain
//! version and every module with its version, Go 1.18 and later) and the dependency list that
//! `cargo auditable` embeds in Rust binaries (section `.dep-v0`, zlib-compressed JSON). ELF only.

use std::io::Read;

use serde::{Deserialize, Serialize};

/// Largest executable read whole to look for this (the data is in sections anywhere in it).
pub const MAX_BINARY: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryInfo {
    /// Go toolchain version without the `go` prefix (`1.19.8`), and the modules.
    pub go_version: Option<String>,
    pub go_modules: Vec<(String, String)>,
    /// Crates (name, version) from `cargo auditable`, runtime dependencies from crates.io only.
    pub crates: Vec<(String, String)>,
    /// Maven artifacts (`group:artifact`, version) of a Java archive.
    #[serde(default)]
    pub maven: Vec<(String, String)>,
}

impl BinaryInfo {
    pub fn is_empty(&self) -> bool {
        self.go_version.is_none() && self.go_modules.is_empty() && self.crates.is_empty() && self.maven.is_empty()
    }
}

pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// Sections of an ELF file by name: (name, file offset, size).
fn sections(b: &[u8]) -> Option<Vec<(String, usize, usize)>> {
    let wide = match b.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = *b.get(5)? == 1;
    let int = |at: usize, n: usize| -> Option<u64> {
        let s = b.get(at..at + n)?;
        let mut v = 0u64;
        for i in 0..n {
            let byte = if le { s[n - 1 - i] } else { s[i] };
            v = (v << 8) | byte as u64;
        }
        Some(v)
    };
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (int(0x28, 8)?, int(0x3a, 2)?, int(0x3c, 2)?, int(0x3e, 2)?)
    } else {
        (int(0x20, 4)?, int(0x2e, 2)?, int(0x30, 2)?, int(0x32, 2)?)
    };
    let header = |i: u64| -> Option<(u64, u64, u64)> {
        let at = usize::try_from(shoff.checked_add(i.checked_mul(shentsize)?)?).ok()?;
        Some(if wide {
            (int(at, 4)?, int(at + 24, 8)?, int(at + 32, 8)?)
        } else {
            (int(at, 4)?, int(at + 16, 4)?, int(at + 20, 4)?)
        })
    };
    let (_, str_off, str_size) = header(shstrndx)?;
    let names = b.get(str_off as usize..(str_off.checked_add(str_size)?) as usize)?;
    let mut out = Vec::new();
    for i in 0..shnum.min(4096) {
        let Some((name, off, size)) = header(i) else { continue };
        let name = names.get(name as usize..).unwrap_or_default();
        let name = String::from_utf8_lossy(&name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())]);
        out.push((name.into_owned(), off as usize, size as usize));
    }
    Some(out)
}

fn uvarint(b: &[u8], pos: &mut usize) -> Option<usize> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let c = *b.get(*pos)?;
        *pos += 1;
        v |= ((c & 0x7f) as u64) << shift;
        if c < 0x80 {
            return usize::try_from(v).ok();
        }
    }
    None
}

const GO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Go build info: the toolchain version and the module lines.
fn go_buildinfo(b: &[u8], sections: &[(String, usize, usize)]) -> Option<(String, String)> {
    let at = match sections.iter().find(|s| s.0 == ".go.buildinfo") {
        Some(s) => s.1,
        // Section headers stripped: the blob is 16-byte aligned.
        None => (0..b.len().saturating_sub(32)).step_by(16).find(|&i| b[i..].starts_with(GO_MAGIC))?,
    };
    let head = b.get(at..at + 32)?;
    if !head.starts_with(GO_MAGIC) || head[15] & 2 == 0 {
        return None; // before Go 1.18 the strings are behind pointers: not read
    }
    let mut pos = at + 32;
    let n = uvarint(b, &mut pos)?;
    let version = String::from_utf8_lossy(b.get(pos..pos + n)?).into_owned();
    pos += n;
    let n = uvarint(b, &mut pos)?;
    let mut info = b.get(pos..pos + n)?;
    // The module text sits between two 16-byte sentinels.
    if info.len() >= 33 && info[info.len() - 17] == b'\n' {
        info = &info[16..info.len() - 16];
    }
    Some((version, String::from_utf8_lossy(info).into_owned()))
}

fn go_modules(info: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod" | "dep", path, version, ..] if *version != "(devel)" => {
                out.push((path.to_string(), version.to_string()))
            }
            // A replacement stands for the module above it.
            ["=>", path, version, ..] => {
                if let Some(last) = out.last_mut() {
                    *last = (path.to_string(), version.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

#[derive(Deserialize)]
struct Auditable {
    packages: Vec<AuditablePackage>,
}

#[derive(Deserialize)]
struct AuditablePackage {
    name: String,
    version: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    kind: Option<String>,
}

fn crates(b: &[u8], sections: &[(String, usize, usize)]) -> Vec<(String, String)> {
    let Some(&(_, off, size)) = sections.iter().find(|s| s.0 == ".dep-v0") else { return Vec::new() };
    let Some(data) = b.get(off..off.saturating_add(size)) else { return Vec::new() };
    let mut json = Vec::new();
    // The list is small; a bound keeps a hostile one from growing without end.
    if flate2::read::ZlibDecoder::new(data).take(16 << 20).read_to_end(&mut json).is_err() {
        return Vec::new();
    }
    let Ok(a) = serde_json::from_slice::<Auditable>(&json) else { return Vec::new() };
    a.packages
        .into_iter()
        .filter(|p| p.source == "crates.io" && p.kind.as_deref().unwrap_or("runtime") == "runtime")
        .map(|p| (p.name, p.version))
        .collect()
}

/// What an ELF executable records about its build, if anything.
pub fn analyze(b: &[u8]) -> Option<BinaryInfo> {
    if !is_elf(b) {
        return None;
    }
    let secs = sections(b).unwrap_or_default();
    let mut info = BinaryInfo::default();
    if let Some((version, mods)) = go_buildinfo(b, &secs) {
        info.go_version = version.strip_prefix("go").map(|v| v.split(' ').next().unwrap_or(v).to_string());
        info.go_modules = go_modules(&mods);
    }
    info.crates = crates(b, &secs);
    (!info.is_empty()).then_some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_module_lines() {
        let text = "path\texample.com/cmd\nmod\texample.com\t(devel)\t\ndep\tgolang.org/x/sys\tv0.5.0\th1:x=\n\
                    dep\tgithub.com/a/b\tv1.0.0\t\n=>\tgithub.com/fork/b\tv1.0.1\th1:y=\nbuild\t-compiler=gc\n";
        assert_eq!(
            go_modules(text),
            [("golang.org/x/sys".into(), "v0.5.0".into()), ("github.com/fork/b".into(), "v1.0.1".into())]
        );
    }

    #[test]
    fn not_elf_or_garbage_never_panics() {
        assert_eq!(analyze(b"#!/bin/sh\necho hi\n"), None);
        let mut b = b"\x7fELF\x02\x01\x01".to_vec();
        b.resize(200, 0xff);
        assert_eq!(analyze(&b), None);
        for n in 0..64 {
            let mut b = b"\x7fELF\x01\x01".to_vec();
            b.extend((0..n * 7).map(|i| (i * 31 % 251) as u8));
            let _ = analyze(&b);
        }
    }

    #[test]
    fn buildinfo_blob() {
        // A Go 1.18+ build info blob after some padding, with section headers absent.
        let mods = "path\tx\nmod\tx\t(devel)\t\ndep\tgolang.org/x/text\tv0.3.7\th1:z=\n";
        let mut info = vec![0u8; 16];
        info.extend_from_slice(mods.as_bytes());
        info.extend_from_slice(&[0u8; 16]);
        let at = info.len() - 17;
        info[at] = b'\n';
        let mut b = b"\x7fELF\x02\x01".to_vec();
        b.resize(64, 0);
        let mut blob = GO_MAGIC.to_vec();
        blob.push(8);
        blob.push(2);
        blob.resize(32, 0);
        blob.push(9);
        blob.extend_from_slice(b"go1.19.8 ");
        blob.push(info.len() as u8);
        blob.extend_from_slice(&info);
        b.extend_from_slice(&blob);
        let i = analyze(&b).expect("build info");
        assert_eq!(i.go_version.as_deref(), Some("1.19.8"));
        assert_eq!(i.go_modules, [("golang.org/x/text".into(), "v0.3.7".into())]);
    }
}
