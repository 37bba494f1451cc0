//! The tokens Berth issues to callers it authenticated: the `docker login` password (GetAuthorizationToken, 12 hours), Docker bearer tokens
//! (`/token`, carrying the granted scopes) and signed layer download URLs. Every token is an HMAC
//! under a key kept in the metadata store, so any node verifies what any other issued.

use std::collections::HashMap;

use berth_crypto::token::TokenKey;
use serde::{Deserialize, Serialize};

use crate::caller::{AccessKey, Principal};
use crate::error::{Error, Result};

/// How long a `docker login` password is valid, as ECR's.
pub const LOGIN_TTL_SECS: i64 = 12 * 3600;
/// Longest a bearer token from `/token` lives (never beyond the login it came from).
pub const BEARER_TTL_SECS: i64 = 3600;
/// How long a GetDownloadUrlForLayer URL works.
pub const DOWNLOAD_TTL_SECS: i64 = 3600;

/// One Docker token scope: `repository:<name>:<actions>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// Parses `repository:foo/bar:pull,push` (the name may itself contain `:` only as a port-less
    /// path, so the actions are after the last colon).
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Scope {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect(),
        })
    }

    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind && self.name == name && self.actions.iter().any(|a| a == action || a == "*")
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// Access key the token was issued to.
    k: String,
    /// Principal ARN.
    p: String,
    /// Expiry, Unix seconds.
    e: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    s: Vec<Scope>,
}

pub struct Auth {
    keys: HashMap<String, AccessKey>,
    login: TokenKey,
    bearer: TokenKey,
    download: TokenKey,
}

pub fn now_secs() -> i64 {
    berth_meta::now_ms() / 1000
}

impl Auth {
    pub fn new(master: &TokenKey, keys: Vec<AccessKey>) -> Auth {
        Auth {
            keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
            login: master.derive("ecr-login"),
            bearer: master.derive("docker-bearer"),
            download: master.derive("layer-download"),
        }
    }

    pub fn key(&self, id: &str) -> Option<&AccessKey> {
        self.keys.get(id)
    }

    /// The access keys given at start (the configured root key), to carry over a rotation.
    pub fn static_keys(&self) -> Vec<AccessKey> {
        self.keys.values().cloned().collect()
    }

    pub fn principal_of(&self, key: &AccessKey) -> Principal {
        Principal { arn: key.principal.clone(), access_key_id: key.id.clone(), expires: None }
    }

    /// The `docker login` password for `p`, and when it expires (Unix seconds).
    pub fn issue_login(&self, p: &Principal) -> (String, i64) {
        let e = (now_secs() + LOGIN_TTL_SECS).min(p.expires.unwrap_or(i64::MAX));
        let claims = Claims { k: p.access_key_id.clone(), p: p.arn.clone(), e, s: Vec::new() };
        (self.login.sign(&serde_json::to_vec(&claims).expect("claims serialize")), e)
    }

    fn check(&self, key: &TokenKey, token: &str, what: &str) -> Result<(Principal, Claims)> {
        let bad = || Error::unauthenticated(format!("the {what} is not valid; log in again"));
        let payload = key.verify(token).ok_or_else(bad)?;
        let c: Claims = serde_json::from_slice(&payload).map_err(|_| bad())?;
        if c.e <= now_secs() {
            return Err(Error::unauthenticated(format!("the {what} has expired; log in again")));
        }
        // Whether its key still stands is the registry's check (it knows the stored keys).
        Ok((Principal { arn: c.p.clone(), access_key_id: c.k.clone(), expires: None }, c))
    }

    /// Checks a `docker login` password; returns who it belongs to and when it expires.
    pub fn check_login(&self, password: &str) -> Result<(Principal, i64)> {
        let (p, c) = self.check(&self.login, password, "authorization token")?;
        Ok((p, c.e))
    }

    /// A bearer token carrying `scopes`, for `p` (or an anonymous caller), valid until
    /// `not_after` at the latest. Returns the token and its lifetime in seconds.
    pub fn issue_bearer(&self, p: Option<&Principal>, scopes: Vec<Scope>, not_after: i64) -> (String, i64) {
        let now = now_secs();
        let e = (now + BEARER_TTL_SECS).min(not_after);
        let (k, arn) = p.map_or((String::new(), String::new()), |p| (p.access_key_id.clone(), p.arn.clone()));
        let claims = Claims { k, p: arn, e, s: scopes };
        (self.bearer.sign(&serde_json::to_vec(&claims).expect("claims serialize")), e - now)
    }

    /// The token's principal (`None`: issued to an anonymous caller) and scopes.
    pub fn check_bearer(&self, token: &str) -> Result<(Option<Principal>, Vec<Scope>)> {
        let bad = || Error::unauthenticated("the bearer token is not valid; log in again".into());
        let payload = self.bearer.verify(token).ok_or_else(bad)?;
        let c: Claims = serde_json::from_slice(&payload).map_err(|_| bad())?;
        if c.k.is_empty() {
            if c.e <= now_secs() {
                return Err(Error::unauthenticated("the bearer token has expired".into()));
            }
            return Ok((None, c.s));
        }
        let (p, c) = self.check(&self.bearer, token, "bearer token")?;
        Ok((Some(p), c.s))
    }

    fn download_message(repo: &str, digest: &str, expires: i64) -> String {
        format!("{repo}\n{digest}\n{expires}")
    }

    /// Query string (`expires=..&signature=..`) that lets a plain GET fetch one blob.
    pub fn sign_download(&self, repo: &str, digest: &str) -> String {
        let expires = now_secs() + DOWNLOAD_TTL_SECS;
        let sig = self.download.sign_hex(&Self::download_message(repo, digest, expires));
        format!("expires={expires}&signature={sig}")
    }

    pub fn check_download(&self, repo: &str, digest: &str, expires: &str, signature: &str) -> Result<()> {
        let e: i64 = expires.parse().map_err(|_| Error::unauthenticated("malformed download URL".into()))?;
        if !self.download.verify_hex(&Self::download_message(repo, digest, e), signature) {
            return Err(Error::unauthenticated("the download URL's signature is not valid".into()));
        }
        if e <= now_secs() {
            return Err(Error::unauthenticated("the download URL has expired; ask for a new one".into()));
        }
        Ok(())
    }
}

/// Everything derived from the stored token-signing key; replaced whole when it is rotated.
pub(crate) struct Tokens {
    /// The setting as stored (sealed), to notice a rotation by another process.
    pub stored: String,
    pub auth: std::sync::Arc<Auth>,
    /// Signs STS session tokens; the other derives a session's secret from its token.
    pub sessions: TokenKey,
    pub session_secrets: TokenKey,
}

/// The associated data the token-signing key is sealed with.
pub(crate) const TOKEN_KEY_AAD: &[u8] = b"berth settings token_key";

impl Tokens {
    /// Opens the stored (sealed) key and derives the token keys from it.
    pub(crate) fn derive(seal: &berth_crypto::seal::SealKey, stored: String, keys: Vec<AccessKey>) -> Result<Tokens> {
        let raw = seal.open(&stored, TOKEN_KEY_AAD).ok_or_else(|| {
            Error::Internal(
                "the stored token-signing key does not open with this secrets key: every node must use the same \
                 secrets key (BERTH_SECRETS_KEY or <data_dir>/secrets.key) as the one that sealed it"
                    .into(),
            )
        })?;
        let master = TokenKey::from_bytes(&raw)
            .ok_or_else(|| Error::Internal("the stored token-signing key is corrupt".into()))?;
        Ok(Tokens {
            stored,
            auth: std::sync::Arc::new(Auth::new(&master, keys)),
            sessions: master.derive("sts-session"),
            session_secrets: master.derive("sts-session-secret"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (Auth, Principal) {
        let k = AccessKey::generate("arn:aws:iam::000000000000:root".into());
        let a = Auth::new(&TokenKey::generate(), vec![k.clone()]);
        let p = a.principal_of(&k);
        (a, p)
    }

    #[test]
    fn login_tokens() {
        let (a, p) = auth();
        let (t, e) = a.issue_login(&p);
        assert!(e > now_secs() + LOGIN_TTL_SECS - 5);
        assert_eq!(a.check_login(&t).unwrap().0, p);
        // Not a bearer token, and not valid on another server or for another key set.
        assert!(a.check_bearer(&t).is_err());
        let (b, _) = auth();
        assert!(b.check_login(&t).is_err());
    }

    #[test]
    fn bearer_tokens_carry_scopes_and_never_outlive_the_login() {
        let (a, p) = auth();
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert!(s.allows("repository", "team/app", "push"));
        assert!(!s.allows("repository", "team/other", "pull"));
        let (t, ttl) = a.issue_bearer(Some(&p), vec![s.clone()], now_secs() + 60);
        assert!(ttl <= 60);
        let (q, scopes) = a.check_bearer(&t).unwrap();
        assert_eq!((q, scopes), (Some(p), vec![s.clone()]));
        let (anon, _) = a.issue_bearer(None, vec![s.clone()], i64::MAX);
        assert_eq!(a.check_bearer(&anon).unwrap(), (None, vec![s]));
        assert!(Scope::parse("repository:x").is_none());
        assert_eq!(Scope::parse("registry:catalog:*").unwrap().actions, vec!["*"]);
    }

    #[test]
    fn download_urls() {
        let (a, _) = auth();
        let q = a.sign_download("r", "sha256:aa");
        let get = |k: &str| q.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap().to_string();
        assert!(a.check_download("r", "sha256:aa", &get("expires"), &get("signature")).is_ok());
        assert!(a.check_download("r2", "sha256:aa", &get("expires"), &get("signature")).is_err());
        let later = (get("expires").parse::<i64>().unwrap() + 1).to_string();
        assert!(a.check_download("r", "sha256:aa", &later, &get("signature")).is_err());
    }
}
