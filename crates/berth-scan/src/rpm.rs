//! RPM databases: `rpmdb.sqlite` (RPM 4.16 and later: Fedora, RHEL 9 and its rebuilds, openSUSE),
//! whose `Packages` table holds one RPM header blob per installed package. The Berkeley DB and
//! ndb formats of older releases are not read.

use serde::{Deserialize, Serialize};

use crate::sqlite::{Db, Value};

/// An installed package: name, `[epoch:]version-release`, its source package name, and the
/// files it installed (relative, no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpmPackage {
    pub name: String,
    pub evr: String,
    pub source: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
}

const NAME: u32 = 1000;
const VERSION: u32 = 1001;
const RELEASE: u32 = 1002;
const EPOCH: u32 = 1003;
const SOURCERPM: u32 = 1044;
const DIRINDEXES: u32 = 1116;
const BASENAMES: u32 = 1117;
const DIRNAMES: u32 = 1118;
/// Most files read from one package's header (a sanity bound on malformed data).
const MAX_FILES: usize = 1 << 20;

/// Reads the tags Berth needs from a header blob (index count, data length, index entries of
/// tag/type/offset/count, then the data store; big-endian).
fn header(b: &[u8]) -> Option<RpmPackage> {
    let u32_at = |at: usize| Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let (il, dl) = (u32_at(0)? as usize, u32_at(4)? as usize);
    if il > 0xffff || dl > 256 << 20 {
        return None;
    }
    let data_start = 8 + il * 16;
    let data = b.get(data_start..data_start + dl)?;
    let mut strings = std::collections::HashMap::new();
    let mut epoch = None;
    let (mut basenames, mut dirnames, mut dirindexes) = (Vec::new(), Vec::new(), Vec::new());
    // `count` NUL-terminated strings from `off`.
    let string_array = |off: usize, count: usize| -> Option<Vec<String>> {
        let mut out = Vec::with_capacity(count.min(MAX_FILES));
        let mut s = data.get(off..)?;
        for _ in 0..count.min(MAX_FILES) {
            let end = s.iter().position(|&c| c == 0)?;
            out.push(String::from_utf8_lossy(&s[..end]).into_owned());
            s = &s[end + 1..];
        }
        Some(out)
    };
    for i in 0..il {
        let e = 8 + i * 16;
        let (tag, kind, off, count) = (u32_at(e)?, u32_at(e + 4)?, u32_at(e + 8)? as usize, u32_at(e + 12)? as usize);
        match (tag, kind) {
            (BASENAMES, 8) => basenames = string_array(off, count).unwrap_or_default(),
            (DIRNAMES, 8) => dirnames = string_array(off, count).unwrap_or_default(),
            (DIRINDEXES, 4) => {
                dirindexes = (0..count.min(MAX_FILES))
                    .map_while(|k| Some(u32::from_be_bytes(data.get(off + 4 * k..off + 4 * k + 4)?.try_into().ok()?)))
                    .collect()
            }
            (NAME | VERSION | RELEASE | SOURCERPM, 6 | 8 | 9) => {
                let s = data.get(off..)?;
                let end = s.iter().position(|&c| c == 0)?;
                strings.insert(tag, String::from_utf8_lossy(&s[..end]).into_owned());
            }
            (EPOCH, 4) => epoch = Some(u32::from_be_bytes(data.get(off..off + 4)?.try_into().ok()?)),
            _ => {}
        }
    }
    let name = strings.remove(&NAME)?;
    let evr = format!(
        "{}{}-{}",
        epoch.map(|e| format!("{e}:")).unwrap_or_default(),
        strings.remove(&VERSION)?,
        strings.remove(&RELEASE)?
    );
    // `openssl-3.0.7-24.el9.src.rpm` → `openssl`: drop the release and version.
    let source = strings.remove(&SOURCERPM).and_then(|s| {
        let s = s.strip_suffix(".src.rpm").or_else(|| s.strip_suffix(".nosrc.rpm"))?;
        let (rest, _release) = s.rsplit_once('-')?;
        Some(rest.rsplit_once('-')?.0.to_string())
    });
    let files = basenames
        .iter()
        .zip(&dirindexes)
        .filter_map(|(b, &d)| Some(format!("{}{b}", dirnames.get(d as usize)?).trim_start_matches('/').to_string()))
        .collect();
    Some(RpmPackage { name, evr, source, files })
}

/// The packages of an `rpmdb.sqlite` file (None: not a readable RPM database).
pub fn packages(db: &[u8]) -> Option<Vec<RpmPackage>> {
    let db = Db::open(db)?;
    let root = db.table_root("Packages")?;
    let mut out = Vec::new();
    for row in db.rows(root)? {
        if let Some(Value::Blob(b)) = row.get(1)
            && let Some(p) = header(b)
        {
            out.push(p);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tag: u32, kind: u32, off: u32) -> Vec<u8> {
        entry_n(tag, kind, off, 1)
    }

    fn entry_n(tag: u32, kind: u32, off: u32, count: u32) -> Vec<u8> {
        [tag, kind, off, count].iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    #[test]
    fn a_header() {
        let mut data = Vec::new();
        let mut idx = Vec::new();
        for (tag, s) in
            [(NAME, "libssl"), (VERSION, "3.0.7"), (RELEASE, "24.el9"), (SOURCERPM, "openssl-3.0.7-24.el9.src.rpm")]
        {
            idx.extend(entry(tag, 6, data.len() as u32));
            data.extend_from_slice(s.as_bytes());
            data.push(0);
        }
        while data.len() % 4 != 0 {
            data.push(0);
        }
        idx.extend(entry(EPOCH, 4, data.len() as u32));
        data.extend_from_slice(&1u32.to_be_bytes());
        // Two files in two directories.
        idx.extend(entry_n(DIRINDEXES, 4, data.len() as u32, 2));
        data.extend_from_slice(&1u32.to_be_bytes());
        data.extend_from_slice(&0u32.to_be_bytes());
        idx.extend(entry_n(BASENAMES, 8, data.len() as u32, 2));
        data.extend_from_slice(b"libssl.so.3\0openssl.cnf\0");
        idx.extend(entry_n(DIRNAMES, 8, data.len() as u32, 2));
        data.extend_from_slice(b"/etc/pki/tls/\0/usr/lib64/\0");
        let mut b = Vec::new();
        b.extend_from_slice(&8u32.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend(idx);
        b.extend(&data);
        let p = header(&b).unwrap();
        assert_eq!(
            (p.name.as_str(), p.evr.as_str(), p.source.as_deref()),
            ("libssl", "1:3.0.7-24.el9", Some("openssl"))
        );
        assert_eq!(p.files, ["usr/lib64/libssl.so.3", "etc/pki/tls/openssl.cnf"]);
        assert_eq!(header(&b[..20]), None);
    }
}
