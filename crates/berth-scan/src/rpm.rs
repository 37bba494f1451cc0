//! RPM databases: `rpmdb.sqlite` (RPM 4.16 and later: Fedora, RHEL 9 and its rebuilds, openSUSE),
//! whose `Packages` table holds one RPM header blob per installed package. The Berkeley DB and
//! ndb formats of older releases are not read.

use crate::sqlite::{Db, Value};

/// An installed package: name, `[epoch:]version-release`, and its source package name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmPackage {
    pub name: String,
    pub evr: String,
    pub source: Option<String>,
}

const NAME: u32 = 1000;
const VERSION: u32 = 1001;
const RELEASE: u32 = 1002;
const EPOCH: u32 = 1003;
const SOURCERPM: u32 = 1044;

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
    for i in 0..il {
        let e = 8 + i * 16;
        let (tag, kind, off) = (u32_at(e)?, u32_at(e + 4)?, u32_at(e + 8)? as usize);
        match (tag, kind) {
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
    Some(RpmPackage { name, evr, source })
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
        [tag, kind, off, 1].iter().flat_map(|v| v.to_be_bytes()).collect()
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
        let mut b = Vec::new();
        b.extend_from_slice(&5u32.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend(idx);
        b.extend(&data);
        let p = header(&b).unwrap();
        assert_eq!(
            (p.name.as_str(), p.evr.as_str(), p.source.as_deref()),
            ("libssl", "1:3.0.7-24.el9", Some("openssl"))
        );
        assert_eq!(header(&b[..20]), None);
    }
}
