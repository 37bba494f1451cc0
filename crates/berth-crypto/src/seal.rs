//! Secrets kept at rest (access-key secrets): AES-256-GCM under a key that lives outside the
//! database (a file in the data directory or the operator's environment), so a copy of the
//! database alone reveals no secret. Each value is bound to what it belongs to through the
//! associated data, so a sealed secret moved to another row does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// What every sealed value starts with.
pub const PREFIX: &str = "s1:";

/// The key secrets are sealed with. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn generate() -> Self {
        SealKey(crate::random_bytes())
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(SealKey(b.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 256-bit key"))
    }

    /// A short public name for the key (a hash of it), so that what was sealed can say which
    /// key opens it without revealing anything of the key.
    pub fn fingerprint(&self) -> String {
        crate::sha256_hex(&[b"berth key fingerprint\0".as_slice(), &self.0].concat())[..16].to_string()
    }

    /// `nonce ‖ ciphertext ‖ tag`, with a fresh random nonce.
    pub fn seal_bytes(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&crate::random_bytes()[..12]);
        let mut buf = plaintext.to_vec();
        self.cipher()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .expect("AES-GCM encrypts any input below 64 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// The plaintext of [`SealKey::seal_bytes`]' output, if sealed under this key with `aad`.
    pub fn open_bytes(&self, raw: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let mut buf = ct.to_vec();
        let n = self.cipher().open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf).ok()?.len();
        buf.truncate(n);
        Some(buf)
    }

    /// A data key sealed under this key, bound to `aad` (what the key belongs to).
    pub fn wrap_key(&self, key: &crate::envelope::DataKey, aad: &[u8]) -> Vec<u8> {
        self.seal_bytes(key.expose(), aad)
    }

    pub fn unwrap_key(&self, wrapped: &[u8], aad: &[u8]) -> Option<crate::envelope::DataKey> {
        crate::envelope::DataKey::from_bytes(&self.open_bytes(wrapped, aad)?)
    }

    /// `s1:<base64(nonce ‖ ciphertext ‖ tag)>`; a fresh random nonce each time (values sealed
    /// under one key are few: secrets, not content).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        format!("{PREFIX}{}", STANDARD.encode(self.seal_bytes(plaintext, aad)))
    }

    /// The plaintext, if `sealed` was sealed under this key with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Option<Vec<u8>> {
        self.open_bytes(&STANDARD.decode(sealed.strip_prefix(PREFIX)?).ok()?, aad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_with_the_same_key_and_binding() {
        let k = SealKey::generate();
        let s = k.seal(b"wJalrXUtnFEMI/K7MDENG", b"AKIAEXAMPLE");
        assert!(!s.contains("wJalr"));
        assert_eq!(k.open(&s, b"AKIAEXAMPLE").unwrap(), b"wJalrXUtnFEMI/K7MDENG");
        assert!(k.open(&s, b"AKIAOTHER").is_none());
        assert!(SealKey::generate().open(&s, b"AKIAEXAMPLE").is_none());
        // Two seals of one secret differ (fresh nonce); a flipped byte fails.
        assert_ne!(s, k.seal(b"wJalrXUtnFEMI/K7MDENG", b"AKIAEXAMPLE"));
        let mut raw = STANDARD.decode(&s[3..]).unwrap();
        raw[20] ^= 1;
        assert!(k.open(&format!("s1:{}", STANDARD.encode(raw)), b"AKIAEXAMPLE").is_none());
        for junk in ["", "s1:", "s1:!!", "s1:AAAA", "x"] {
            assert!(k.open(junk, b"").is_none());
        }
        assert_eq!(format!("{k:?}"), "SealKey(..)");
    }
}
