//! Cryptographic building blocks: digest computation whose state can be saved between requests
//! (so an upload can be resumed after a restart or by another node), SigV4 verification, and
//! server-signed tokens.

pub mod envelope;
pub mod keyring;
pub mod seal;
pub mod sigv4;
pub mod token;

use berth_core::{Algorithm, Digest};
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

/// 32 bytes from the operating system's random source (through aws-lc, the one crypto library
/// besides `sha2`, which stays for its saveable hash state).
pub fn random_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).expect("the OS random source is available");
    b
}

/// `len` random characters from `alphabet`.
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes() {
            // Rejection sampling keeps every character equally likely.
            let limit = 256 - 256 % alphabet.len();
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[derive(Debug, thiserror::Error)]
#[error("saved hash state is corrupt or of the wrong algorithm")]
pub struct StateError;

/// An incremental hash for one of the supported digest algorithms.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Box<Sha256>),
    Sha512(Box<Sha512>),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Box::default()),
            Algorithm::Sha512 => Hasher::Sha512(Box::default()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (alg, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest::new(alg, hex).expect("hash output is valid hex of the right length")
    }

    /// The hash's internal state, to be stored and later given to [`Hasher::restore`].
    pub fn save(&self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    pub fn restore(algorithm: Algorithm, state: &[u8]) -> Result<Self, StateError> {
        match algorithm {
            Algorithm::Sha256 => {
                let s = state.try_into().map_err(|_| StateError)?;
                Ok(Hasher::Sha256(Box::new(Sha256::deserialize(s).map_err(|_| StateError)?)))
            }
            Algorithm::Sha512 => {
                let s = state.try_into().map_err(|_| StateError)?;
                Ok(Hasher::Sha512(Box::new(Sha512::deserialize(s).map_err(|_| StateError)?)))
            }
        }
    }
}

/// Digest of a byte string in one call.
pub fn digest_of(algorithm: Algorithm, data: &[u8]) -> Digest {
    let mut h = Hasher::new(algorithm);
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            digest_of(Algorithm::Sha256, b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(digest_of(Algorithm::Sha512, b"abc").hex().starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn state_survives_save_and_restore() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for split in [0, 1, 63, 64, 65, 127, 128, 129, 5000, data.len()] {
                let mut a = Hasher::new(alg);
                a.update(&data[..split]);
                let mut b = Hasher::restore(alg, &a.save()).unwrap();
                b.update(&data[split..]);
                assert_eq!(b.finish(), digest_of(alg, &data), "{alg} split {split}");
            }
        }
        assert!(Hasher::restore(Algorithm::Sha256, b"short").is_err());
        let s512 = Hasher::new(Algorithm::Sha512).save();
        assert!(Hasher::restore(Algorithm::Sha256, &s512).is_err());
    }
}
