//! Envelope encryption of stored content. Every stored object has its own random data key;
//! its content is sealed with AES-256-GCM in segments of [`SEGMENT`] bytes, each followed by
//! its 16-byte tag. A segment's nonce is its index and whether it is the object's last segment:
//! unique because the key belongs to one object only. So a reader decrypts only the segments a
//! byte range touches, and a segment moved to another place, a segment from another object,
//! a cut after a segment boundary or a flipped bit all fail to open.
//!
//! The data key itself is stored wrapped (sealed) under a master or KMS key ([`SealKey`]
//! `wrap_key`), beside the object's record, never beside its bytes.

use std::ops::Range;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// Plaintext bytes per segment.
pub const SEGMENT: usize = 64 * 1024;
/// The AES-GCM tag after each segment.
pub const TAG: usize = 16;
/// Stored bytes per full segment.
pub const SEALED_SEGMENT: usize = SEGMENT + TAG;

const SEGMENT_AAD: &[u8] = b"berth segment v1";
const TAIL_AAD: &[u8] = b"berth upload tail v1";
const HASH_AAD: &[u8] = b"berth upload hash state v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The bytes were changed, cut, reordered or sealed under another key.
    #[error("stored content failed its integrity check (segment {0}): it was changed, cut or reordered")]
    Corrupt(u64),
}

/// One object's data key. Its `Debug` never shows the key.
pub struct DataKey {
    raw: [u8; 32],
    cipher: LessSafeKey,
}

impl Clone for DataKey {
    fn clone(&self) -> Self {
        DataKey::from_array(self.raw)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        // Best effort: the cipher's own copy is aws-lc's to clear.
        self.raw = [0; 32];
    }
}

fn segment_nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    Nonce::assume_unique_for_key(n)
}

impl DataKey {
    pub fn generate() -> Self {
        DataKey::from_array(crate::random_bytes())
    }

    fn from_array(raw: [u8; 32]) -> Self {
        let cipher = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("a 256-bit key"));
        DataKey { raw, cipher }
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(DataKey::from_array(b.try_into().ok()?))
    }

    /// The raw key, for wrapping under a master key and for the KMS API's `GenerateDataKey`.
    pub fn expose(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Seals segment `index` (at most [`SEGMENT`] bytes; only the last may be shorter) in place,
    /// appending its tag.
    pub fn seal_segment(&self, index: u64, last: bool, buf: &mut Vec<u8>) {
        debug_assert!(buf.len() <= SEGMENT);
        self.cipher
            .seal_in_place_append_tag(segment_nonce(index, last), Aad::from(SEGMENT_AAD), buf)
            .expect("AES-GCM seals any segment");
    }

    /// Opens sealed segment `index` in place; returns the plaintext length (the tag is left
    /// at the end of `buf`).
    pub fn open_segment(&self, index: u64, last: bool, buf: &mut [u8]) -> Result<usize, SealError> {
        self.cipher
            .open_in_place(segment_nonce(index, last), Aad::from(SEGMENT_AAD), buf)
            .map(|p| p.len())
            .map_err(|_| SealError::Corrupt(index))
    }

    /// Opens sealed segment `index` from `sealed` (its ciphertext then tag) into `out`, which
    /// must be exactly its plaintext length: one pass, no copy of the ciphertext.
    pub fn open_segment_to(&self, index: u64, last: bool, sealed: &[u8], out: &mut [u8]) -> Result<(), SealError> {
        if sealed.len() < TAG || out.len() != sealed.len() - TAG {
            return Err(SealError::Corrupt(index));
        }
        let (ct, tag) = sealed.split_at(sealed.len() - TAG);
        self.cipher
            .open_separate_gather(segment_nonce(index, last), Aad::from(SEGMENT_AAD), ct, tag, out)
            .map_err(|_| SealError::Corrupt(index))
    }

    /// Seals the unfinished last segment of an upload, kept with the upload's state until more
    /// bytes arrive.
    pub fn seal_tail(&self, plain: &[u8]) -> Vec<u8> {
        self.seal_aside(TAIL_AAD, plain)
    }

    pub fn open_tail(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.open_aside(TAIL_AAD, sealed)
    }

    /// Seals an upload's saved hash state (which holds the bytes after the last whole block).
    pub fn seal_hash_state(&self, plain: &[u8]) -> Vec<u8> {
        self.seal_aside(HASH_AAD, plain)
    }

    pub fn open_hash_state(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.open_aside(HASH_AAD, sealed)
    }

    /// Seals something kept beside an object (`domain` tells what). Its nonce is random and in a
    /// space segment nonces never use (first byte 0xff: segment indexes stay far below 2^56), so
    /// this never repeats a segment's nonce.
    fn seal_aside(&self, domain: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut n = [0u8; 12];
        n.copy_from_slice(&crate::random_bytes()[..12]);
        n[0] = 0xff;
        let mut buf = plain.to_vec();
        self.cipher
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::from(domain), &mut buf)
            .expect("AES-GCM seals any input");
        let mut out = n.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    fn open_aside(&self, domain: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 12 + TAG || sealed[0] != 0xff {
            return Err(SealError::Corrupt(u64::MAX));
        }
        let (n, ct) = sealed.split_at(12);
        let mut buf = ct.to_vec();
        let nonce = Nonce::assume_unique_for_key(n.try_into().expect("12 bytes"));
        let len = self
            .cipher
            .open_in_place(nonce, Aad::from(domain), &mut buf)
            .map_err(|_| SealError::Corrupt(u64::MAX))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// A data key sealed under key `key_id` (a master key's `local:<fingerprint>` or a KMS key's
/// id) at material `version`: what the metadata store keeps beside an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub key_id: String,
    pub version: u32,
    pub sealed: Vec<u8>,
}

impl WrappedKey {
    /// `W1 ‖ len(key_id) ‖ key_id ‖ version (LE) ‖ sealed`.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(7 + self.key_id.len() + self.sealed.len());
        b.extend_from_slice(b"W1");
        b.push(self.key_id.len() as u8);
        b.extend_from_slice(self.key_id.as_bytes());
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.sealed);
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let rest = b.strip_prefix(b"W1")?;
        let (&n, rest) = rest.split_first()?;
        if rest.len() < n as usize + 4 {
            return None;
        }
        let (id, rest) = rest.split_at(n as usize);
        let (version, sealed) = rest.split_at(4);
        Some(WrappedKey {
            key_id: String::from_utf8(id.to_vec()).ok()?,
            version: u32::from_le_bytes(version.try_into().ok()?),
            sealed: sealed.to_vec(),
        })
    }
}

/// Segments an object of `plain` bytes is stored in (an empty object still has one: its
/// empty last segment proves it was not cut).
pub fn segments(plain: u64) -> u64 {
    plain.div_ceil(SEGMENT as u64).max(1)
}

/// Stored size of an object of `plain` bytes.
pub fn sealed_len(plain: u64) -> u64 {
    plain + segments(plain) * TAG as u64
}

/// The plaintext size of an object stored in `stored` bytes, when that is a possible size.
pub fn plain_len(stored: u64) -> Option<u64> {
    let n = stored.div_ceil(SEALED_SEGMENT as u64).max(1);
    let plain = stored.checked_sub(n * TAG as u64)?;
    (sealed_len(plain) == stored).then_some(plain)
}

/// Which stored bytes a plaintext range of an object needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRange {
    /// Index of the first segment read.
    pub first: u64,
    /// Index of the object's last segment (sealed as last).
    pub last: u64,
    /// The stored bytes to read: whole segments.
    pub stored: Range<u64>,
    /// Plaintext bytes of the first segment read that come before the range.
    pub skip: u64,
    /// Plaintext bytes the range holds.
    pub len: u64,
}

/// The stored segments covering plaintext `range` (already within `0..plain`) of an object
/// of `plain` bytes; the whole object when `range` is `None`.
pub fn sealed_range(plain: u64, range: Option<Range<u64>>) -> SealedRange {
    let seg = SEGMENT as u64;
    let range = range.unwrap_or(0..plain);
    let last = segments(plain) - 1;
    let first = (range.start / seg).min(last);
    let end_seg = if range.end > range.start { (range.end - 1) / seg } else { first };
    let stored_end = ((end_seg + 1) * SEALED_SEGMENT as u64).min(sealed_len(plain));
    SealedRange {
        first,
        last,
        stored: first * SEALED_SEGMENT as u64..stored_end,
        skip: range.start - first * seg,
        len: range.end - range.start,
    }
}

/// Seals a whole object in memory (small objects and tests).
pub fn seal_all(key: &DataKey, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
    let n = segments(plain.len() as u64);
    for i in 0..n {
        let s = i as usize * SEGMENT;
        let e = (s + SEGMENT).min(plain.len());
        let mut buf = plain[s..e].to_vec();
        key.seal_segment(i, i == n - 1, &mut buf);
        out.extend_from_slice(&buf);
    }
    out
}

/// Opens a whole object sealed by [`seal_all`] (or by the blob store's writer) of `plain` bytes.
pub fn open_all(key: &DataKey, sealed: &[u8], plain: u64) -> Result<Vec<u8>, SealError> {
    if sealed.len() as u64 != sealed_len(plain) {
        return Err(SealError::Corrupt(0));
    }
    let n = segments(plain);
    let mut out = Vec::with_capacity(plain as usize);
    for (i, chunk) in sealed.chunks(SEALED_SEGMENT).enumerate() {
        let mut buf = chunk.to_vec();
        let len = key.open_segment(i as u64, i as u64 == n - 1, &mut buf)?;
        out.extend_from_slice(&buf[..len]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_every_size_edge() {
        let k = DataKey::generate();
        for n in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 3 * SEGMENT + 7] {
            let p = data(n);
            let s = seal_all(&k, &p);
            assert_eq!(s.len() as u64, sealed_len(n as u64), "size {n}");
            assert_eq!(open_all(&k, &s, n as u64).unwrap(), p, "size {n}");
        }
    }

    #[test]
    fn tampering_cutting_reordering_and_swapping_are_refused() {
        let k = DataKey::generate();
        let p = data(3 * SEGMENT + 100);
        let s = seal_all(&k, &p);
        let n = p.len() as u64;
        // A flipped bit anywhere.
        for at in [0, SEGMENT, SEALED_SEGMENT + 5, s.len() - 1] {
            let mut t = s.clone();
            t[at] ^= 1;
            assert!(open_all(&k, &t, n).is_err(), "flip at {at}");
        }
        // Cut at a segment boundary: the new last segment was not sealed as last.
        let cut = &s[..3 * SEALED_SEGMENT];
        assert!(open_all(&k, cut, 3 * SEGMENT as u64).is_err());
        // Two segments swapped.
        let mut sw = s.clone();
        let (a, b) = sw.split_at_mut(SEALED_SEGMENT);
        a.swap_with_slice(&mut b[..SEALED_SEGMENT]);
        assert!(open_all(&k, &sw, n).is_err());
        // A segment from another object under another key, at the same place.
        let other = seal_all(&DataKey::generate(), &p);
        let mut mixed = s.clone();
        mixed[SEALED_SEGMENT..2 * SEALED_SEGMENT].copy_from_slice(&other[SEALED_SEGMENT..2 * SEALED_SEGMENT]);
        assert!(open_all(&k, &mixed, n).is_err());
        // Another key.
        assert!(open_all(&DataKey::generate(), &s, n).is_err());
        // Empty objects are sealed too: a cut to nothing fails.
        assert!(open_all(&k, &[], 0).is_err());
    }

    #[test]
    fn plain_len_inverts_sealed_len() {
        for n in [0u64, 1, 65535, 65536, 65537, 10 * 65536, 10 * 65536 + 3] {
            assert_eq!(plain_len(sealed_len(n)), Some(n));
        }
        assert_eq!(plain_len(0), None);
        assert_eq!(plain_len(15), None);
        assert_eq!(plain_len(SEALED_SEGMENT as u64 + 5), None);
    }

    #[test]
    fn ranges_map_to_whole_segments() {
        let seg = SEGMENT as u64;
        let ss = SEALED_SEGMENT as u64;
        let n = 3 * seg + 10;
        let r = sealed_range(n, Some(0..1));
        assert_eq!((r.first, r.stored.clone(), r.skip, r.len), (0, 0..ss, 0, 1));
        let r = sealed_range(n, Some(seg - 1..seg + 1));
        assert_eq!((r.first, r.stored.clone(), r.skip, r.len), (0, 0..2 * ss, seg - 1, 2));
        let r = sealed_range(n, Some(seg..2 * seg));
        assert_eq!((r.first, r.stored.clone(), r.skip), (1, ss..2 * ss, 0));
        let r = sealed_range(n, Some(3 * seg + 9..n));
        assert_eq!((r.first, r.last, r.stored.clone(), r.skip), (3, 3, 3 * ss..sealed_len(n), 9));
        let r = sealed_range(n, None);
        assert_eq!((r.first, r.stored.clone(), r.len), (0, 0..sealed_len(n), n));
        let r = sealed_range(0, None);
        assert_eq!((r.first, r.last, r.stored.clone(), r.len), (0, 0, 0..TAG as u64, 0));
    }

    #[test]
    fn tails_are_sealed_apart_from_segments() {
        let k = DataKey::generate();
        let t = k.seal_tail(b"partial");
        assert_eq!(k.open_tail(&t).unwrap(), b"partial");
        assert_ne!(t, k.seal_tail(b"partial"));
        assert!(DataKey::generate().open_tail(&t).is_err());
        let mut bad = t.clone();
        bad[14] ^= 1;
        assert!(k.open_tail(&bad).is_err());
        assert!(k.open_tail(b"short").is_err());
        let h = k.seal_hash_state(b"state");
        assert_eq!(k.open_hash_state(&h).unwrap(), b"state");
        assert!(k.open_tail(&h).is_err(), "a hash state is not a tail");
        assert_eq!(format!("{k:?}"), "DataKey(..)");
    }
}
