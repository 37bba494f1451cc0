//! Just enough of the SQLite file format to read one table's rows from a database file held in
//! memory: the RPM database of current distributions (`rpmdb.sqlite`) is a SQLite file inside
//! the image, and linking a SQL engine into the scanner to read one table would be far more code
//! than this. Read-only, table b-trees only, with overflow pages; a write-ahead log beside the
//! file is not read (rpm checkpoints it when it exits). Malformed input gives `None`, never a
//! panic or an endless loop.

/// Reads a varint (1–9 bytes, big-endian groups of 7 bits; the ninth byte counts whole).
fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let c = *b.get(*pos)?;
        *pos += 1;
        if i == 8 {
            return Some((v << 8) | c as u64);
        }
        v = (v << 7) | (c & 0x7f) as u64;
        if c < 0x80 {
            return Some(v);
        }
    }
    None
}

fn be(b: &[u8], at: usize, n: usize) -> Option<u64> {
    Some(b.get(at..at + n)?.iter().fold(0u64, |v, &c| (v << 8) | c as u64))
}

/// A column value (integers, text and blobs; floats are not needed here).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    Other,
}

pub struct Db<'a> {
    b: &'a [u8],
    page_size: usize,
    usable: usize,
}

impl<'a> Db<'a> {
    pub fn open(b: &'a [u8]) -> Option<Db<'a>> {
        if !b.starts_with(b"SQLite format 3\0") {
            return None;
        }
        let page_size = match be(b, 16, 2)? {
            1 => 65536,
            n if n >= 512 && (n as usize).is_power_of_two() => n as usize,
            _ => return None,
        };
        let usable = page_size.checked_sub(b[20] as usize)?;
        (usable >= 480).then_some(Db { b, page_size, usable })
    }

    fn page(&self, n: u64) -> Option<&'a [u8]> {
        let start = (n.checked_sub(1)? as usize).checked_mul(self.page_size)?;
        self.b.get(start..start + self.page_size)
    }

    /// The rows of the table whose b-tree starts at `root`, each as its column values.
    pub fn rows(&self, root: u64) -> Option<Vec<Vec<Value>>> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        let mut visited = 0usize;
        let max_pages = self.b.len() / self.page_size + 1;
        while let Some(n) = stack.pop() {
            visited += 1;
            if visited > max_pages {
                return None; // a cycle
            }
            let page = self.page(n)?;
            let h = if n == 1 { 100 } else { 0 };
            let kind = *page.get(h)?;
            let cells = be(page, h + 3, 2)? as usize;
            match kind {
                0x05 => {
                    // Interior: children in key order, the rightmost last; pushed in reverse.
                    stack.push(be(page, h + 8, 4)?);
                    for i in (0..cells).rev() {
                        let at = be(page, h + 12 + 2 * i, 2)? as usize;
                        stack.push(be(page, at, 4)?);
                    }
                }
                0x0d => {
                    for i in 0..cells {
                        let mut at = be(page, h + 8 + 2 * i, 2)? as usize;
                        let size = varint(page, &mut at)? as usize;
                        let _rowid = varint(page, &mut at)?;
                        let payload = self.payload(page, at, size)?;
                        out.push(record(&payload)?);
                    }
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// A cell's payload: the local part, then the overflow chain.
    fn payload(&self, page: &[u8], at: usize, size: usize) -> Option<Vec<u8>> {
        let u = self.usable;
        let x = u - 35;
        if size <= x {
            return Some(page.get(at..at + size)?.to_vec());
        }
        let m = (u - 12) * 32 / 255 - 23;
        let k = m + (size - m) % (u - 4);
        let local = if k <= x { k } else { m };
        let mut out = Vec::with_capacity(size.min(self.b.len()));
        out.extend_from_slice(page.get(at..at + local)?);
        let mut next = be(page, at + local, 4)?;
        let mut hops = 0;
        while out.len() < size {
            hops += 1;
            if next == 0 || hops > self.b.len() / self.page_size + 1 {
                return None;
            }
            let p = self.page(next)?;
            next = be(p, 0, 4)?;
            let take = (size - out.len()).min(u - 4);
            out.extend_from_slice(p.get(4..4 + take)?);
        }
        Some(out)
    }

    /// The root page of table `name`, from the schema table.
    pub fn table_root(&self, name: &str) -> Option<u64> {
        self.rows(1)?.into_iter().find_map(|r| match r.as_slice() {
            [Value::Text(t), Value::Text(n), _, Value::Int(root), ..] if t == "table" && n == name => {
                Some(*root as u64)
            }
            _ => None,
        })
    }
}

fn record(p: &[u8]) -> Option<Vec<Value>> {
    let mut pos = 0;
    let header = varint(p, &mut pos)? as usize;
    let mut types = Vec::new();
    while pos < header {
        types.push(varint(p, &mut pos)?);
    }
    let mut at = header;
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let (len, v) = match t {
            0 => (0, Some(Value::Null)),
            1..=6 => {
                let n = [0, 1, 2, 3, 4, 6, 8][t as usize];
                let raw = be(p, at, n)?;
                let shift = 64 - 8 * n as u32;
                (n, Some(Value::Int(((raw << shift) as i64) >> shift)))
            }
            7 => (8, Some(Value::Other)),
            8 => (0, Some(Value::Int(0))),
            9 => (0, Some(Value::Int(1))),
            t if t >= 12 => ((t as usize - 12) / 2, None),
            _ => return None,
        };
        let value = match v {
            Some(v) => v,
            None => {
                let bytes = p.get(at..at + len)?;
                if t % 2 == 0 {
                    Value::Blob(bytes.to_vec())
                } else {
                    Value::Text(String::from_utf8_lossy(bytes).into_owned())
                }
            }
        };
        at += len;
        out.push(value);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for (bytes, want) in [(&[0x7f][..], 127u64), (&[0x81, 0x00], 128), (&[0xff; 9], u64::MAX)] {
            let mut pos = 0;
            assert_eq!(varint(bytes, &mut pos), Some(want));
            assert_eq!(pos, bytes.len());
        }
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        assert!(Db::open(b"not a database").is_none());
        let mut b = b"SQLite format 3\0".to_vec();
        b.extend_from_slice(&[0x10, 0x00, 1, 1, 0, 64, 32, 32]);
        b.resize(4096 * 3, 0xff);
        let db = Db::open(&b).unwrap();
        assert_eq!(db.table_root("Packages"), None);
        for seed in 0..200u32 {
            let mut c = b.clone();
            for i in (100..c.len()).step_by(7) {
                c[i] = (i as u32).wrapping_mul(seed).wrapping_add(seed) as u8;
            }
            c[100] = if seed % 2 == 0 { 0x0d } else { 0x05 };
            let _ = Db::open(&c).and_then(|d| d.table_root("Packages"));
        }
    }
}
