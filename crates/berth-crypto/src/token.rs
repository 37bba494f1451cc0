//! Server-signed tokens: `b1.<payload>.<mac>`, both parts base64url, the MAC an HMAC-SHA256 over
//! the encoded payload under a key every node shares. The payload's meaning is the caller's.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "b1.";

/// A token-signing key.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(TokenKey(b.try_into().ok()?))
    }

    pub fn generate() -> Self {
        TokenKey(crate::random_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key for a distinct purpose derived from this one, so a token of one kind never
    /// verifies as another.
    pub fn derive(&self, purpose: &str) -> TokenKey {
        TokenKey(crate::sigv4::hmac(&self.0, purpose.as_bytes()))
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    pub fn sign(&self, payload: &[u8]) -> String {
        let body = URL_SAFE_NO_PAD.encode(payload);
        let tag = hmac::sign(&self.key(), body.as_bytes());
        format!("{PREFIX}{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The payload, if `token` was signed with this key (checked in constant time).
    pub fn verify(&self, token: &str) -> Option<Vec<u8>> {
        let rest = token.strip_prefix(PREFIX)?;
        let (body, sig) = rest.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        hmac::verify(&self.key(), body.as_bytes(), &sig).ok()?;
        URL_SAFE_NO_PAD.decode(body).ok()
    }

    /// Hex HMAC of `msg`, for signed URLs.
    pub fn sign_hex(&self, msg: &str) -> String {
        hex::encode(crate::sigv4::hmac(&self.0, msg.as_bytes()))
    }

    pub fn verify_hex(&self, msg: &str, sig_hex: &str) -> bool {
        let Ok(sig) = hex::decode(sig_hex) else { return false };
        hmac::verify(&self.key(), msg.as_bytes(), &sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_rejects_tampering() {
        let k = TokenKey::generate();
        let t = k.sign(b"{\"k\":\"AKIA\"}");
        assert_eq!(k.verify(&t).unwrap(), b"{\"k\":\"AKIA\"}");
        assert!(TokenKey::generate().verify(&t).is_none());
        assert!(k.derive("other").verify(&t).is_none());
        let mut bad = t.clone().into_bytes();
        let i = 5;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert!(k.verify(std::str::from_utf8(&bad).unwrap()).is_none());
        assert!(k.verify("b1.").is_none());
        assert!(k.verify("garbage").is_none());
        assert!(k.verify_hex("m", &k.sign_hex("m")));
        assert!(!k.verify_hex("n", &k.sign_hex("m")));
    }
}
