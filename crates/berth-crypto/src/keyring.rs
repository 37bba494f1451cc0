//! The registry's master keys: the local key provider. The newest key wraps new data keys (of
//! AES256 repositories) and seals the KMS keys' material; older ones stay to open what they
//! wrapped. Kept outside the database (a file in the data directory, 0600, or the operator's
//! environment), so a copy of the database and the blobs alone opens nothing.

use crate::envelope::{DataKey, WrappedKey};
use crate::seal::SealKey;

/// Key ids of wrapped data keys the keyring opens start with this.
pub const LOCAL: &str = "local:";

/// At least one key, oldest first. Its `Debug` shows only fingerprints.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<SealKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| k.fingerprint())).finish()
    }
}

impl Default for Keyring {
    /// A keyring of one fresh key (tests; `berth serve` always loads or creates a kept one).
    fn default() -> Self {
        Keyring { keys: vec![SealKey::generate()] }
    }
}

fn aad(key_id: &str, version: u32) -> Vec<u8> {
    format!("berth data key\0{key_id}\0{version}").into_bytes()
}

impl Keyring {
    pub fn new(keys: Vec<SealKey>) -> Option<Self> {
        (!keys.is_empty()).then_some(Keyring { keys })
    }

    /// One key per line (64 hex digits), oldest first; blank lines and `#` comments ignored.
    /// The error never quotes the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            for word in line.split([',', ' ']).filter(|w| !w.is_empty()) {
                let key = hex::decode(word)
                    .ok()
                    .and_then(|b| SealKey::from_bytes(&b))
                    .ok_or_else(|| format!("line {}: a master key is 64 hex digits (256 bits)", n + 1))?;
                keys.push(key);
            }
        }
        Keyring::new(keys).ok_or_else(|| "no master key in it".to_string())
    }

    pub fn to_text(&self) -> String {
        let mut out =
            String::from("# Berth master keys, oldest first; the last one seals new data. Keep this file 0600.\n");
        for k in &self.keys {
            out.push_str(&hex::encode(k.as_bytes()));
            out.push('\n');
        }
        out
    }

    /// The key new data is sealed with.
    /// Every key's fingerprint, oldest first.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(SealKey::fingerprint).collect()
    }

    pub fn active(&self) -> &SealKey {
        self.keys.last().expect("a keyring holds at least one key")
    }

    pub fn find(&self, fingerprint: &str) -> Option<&SealKey> {
        self.keys.iter().find(|k| k.fingerprint() == fingerprint)
    }

    /// This keyring with a new active key added.
    pub fn rotated(&self) -> Keyring {
        let mut keys = self.keys.clone();
        keys.push(SealKey::generate());
        Keyring { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The key id data keys wrapped under the active key carry.
    pub fn active_id(&self) -> String {
        format!("{LOCAL}{}", self.active().fingerprint())
    }

    /// A new data key, wrapped under the active key.
    pub fn new_data_key(&self) -> (DataKey, WrappedKey) {
        let key = DataKey::generate();
        let wrapped = self.wrap(&key);
        (key, wrapped)
    }

    pub fn wrap(&self, key: &DataKey) -> WrappedKey {
        let key_id = self.active_id();
        WrappedKey { sealed: self.active().wrap_key(key, &aad(&key_id, 0)), key_id, version: 0 }
    }

    /// Opens a data key this keyring wrapped; `None` when none of its keys did (or it was changed).
    pub fn unwrap(&self, w: &WrappedKey) -> Option<DataKey> {
        let fp = w.key_id.strip_prefix(LOCAL)?;
        self.find(fp)?.unwrap_key(&w.sealed, &aad(&w.key_id, w.version))
    }

    /// Wraps under another key (a KMS key's material, at `version`), bound to `key_id`.
    pub fn wrap_under(material: &SealKey, key_id: &str, version: u32, key: &DataKey) -> WrappedKey {
        WrappedKey { sealed: material.wrap_key(key, &aad(key_id, version)), key_id: key_id.to_string(), version }
    }

    pub fn unwrap_under(material: &SealKey, w: &WrappedKey) -> Option<DataKey> {
        material.unwrap_key(&w.sealed, &aad(&w.key_id, w.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_with_the_newest_and_opens_with_any() {
        let ring = Keyring::default();
        let (k1, w1) = ring.new_data_key();
        let ring2 = Keyring::parse(&ring.rotated().to_text()).unwrap();
        assert_eq!(ring2.len(), 2);
        let (_, w2) = ring2.new_data_key();
        assert_ne!(w1.key_id, w2.key_id, "the newest key wraps");
        assert_eq!(ring2.unwrap(&w1).unwrap().expose(), k1.expose(), "the older key still opens");
        assert!(ring.unwrap(&w2).is_none(), "a keyring without the key does not");
        let mut bad = w1.clone();
        bad.version = 1;
        assert!(ring2.unwrap(&bad).is_none(), "the version is bound");
        assert_eq!(WrappedKey::decode(&w1.encode()).unwrap(), w1);
        let debug = format!("{ring2:?}");
        assert!(!debug.contains(&hex::encode(ring2.active().as_bytes())));
        assert!(Keyring::parse("# nothing\n").is_err());
        let e = Keyring::parse("abcd\n").unwrap_err();
        assert!(!e.contains("abcd"), "the error does not echo the text");
    }
}
