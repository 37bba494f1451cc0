//! Which key seals a repository's content, and reading what was sealed. A repository's content
//! is sealed in its key scope: '' (the registry's default key, from the master keyring: AES256
//! repositories) or the KMS key it was created with. Every stored blob copy has its own data key,
//! wrapped under its scope's key; the wrapped key is kept in the metadata store (see
//! `berth_blob::sealed` for the format of the bytes).

use std::ops::Range;

use berth_blob::{BlobBody, BlobError};
use berth_core::Digest;
use berth_crypto::envelope::{DataKey, WrappedKey};
use berth_crypto::keyring::LOCAL;
use berth_meta::{BlobObject, RepoBlob};

use crate::caller::Caller;
use crate::core::Core;
use crate::error::{Error, Result};
use crate::kms::Kms;

/// A new data key and its wrapped form, for content of one scope.
pub(crate) struct NewKey {
    pub scope: String,
    pub key: DataKey,
    pub wrapped: WrappedKey,
}

impl NewKey {
    /// The record of a copy stored under this key as `object`.
    pub fn object(&self, object: &Digest) -> BlobObject {
        BlobObject {
            scope: self.scope.clone(),
            object: object.to_string(),
            key_id: self.wrapped.key_id.clone(),
            key_version: self.wrapped.version as i64,
            wrapped_key: self.wrapped.encode(),
        }
    }
}

/// The scope a wrapped key belongs to: '' for the master keyring's, else the KMS key's id.
pub(crate) fn scope_of_key(w: &WrappedKey) -> String {
    if w.key_id.starts_with(LOCAL) { String::new() } else { w.key_id.clone() }
}

impl Core {
    /// The key scope of a repository's content.
    pub(crate) async fn repo_scope(&self, repo_id: i64) -> Result<String> {
        // Fixed at creation, and ids are never reused: cached for the process's life, on
        // every backend (the pull path asks for it on every request).
        if let Some(s) = self.scopes.lock().unwrap_or_else(|e| e.into_inner()).get(&repo_id) {
            return Ok(s.clone());
        }
        let scope = self.meta.repo_encryption_key(repo_id).await?.unwrap_or_default();
        let mut map = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(repo_id, scope.clone());
        Ok(scope)
    }

    /// A new data key for content of repository `repo_id`; `who` (when a caller pushes) needs
    /// `kms:GenerateDataKey` on a KMS repository's key: the key decided is the key used.
    pub(crate) async fn new_data_key(&self, who: Option<&Caller>, repo_id: i64) -> Result<NewKey> {
        self.new_data_key_in(who, self.repo_scope(repo_id).await?).await
    }

    /// A new data key of key scope `scope` ('' for the registry's default key).
    pub(crate) async fn new_data_key_in(&self, who: Option<&Caller>, scope: String) -> Result<NewKey> {
        let (key, wrapped) = if scope.is_empty() {
            self.settings.master_keys.new_data_key()
        } else {
            Kms(self).new_data_key(who, &scope).await?
        };
        Ok(NewKey { scope, key, wrapped })
    }

    /// Opens a wrapped data key from the metadata store; `who` needs the action given (for a
    /// KMS key) on the very key that wrapped it.
    pub(crate) async fn open_data_key(&self, who: Option<(&Caller, &str)>, encoded: &[u8]) -> Result<DataKey> {
        let w = WrappedKey::decode(encoded).ok_or_else(|| Error::Internal("a stored data key is corrupt".into()))?;
        if w.key_id.starts_with(LOCAL) {
            return self.settings.master_keys.unwrap(&w).ok_or_else(|| {
                Error::Internal(format!(
                    "content is sealed under master key {}, which is not in this node's keyring \
                     (BERTH_MASTER_KEY or the keyring file); add it back",
                    &w.key_id[LOCAL.len()..]
                ))
            });
        }
        Kms(self).open_data_key(who, &w).await
    }

    /// Whether `who` may use a repository's KMS key for `action` now (none to decide for
    /// repositories under the registry's default key).
    pub(crate) async fn check_key_use(&self, who: &Caller, repo_id: i64, action: &str) -> Result<()> {
        let scope = self.repo_scope(repo_id).await?;
        if scope.is_empty() { Ok(()) } else { Kms(self).check_use(who, &scope, action).await }
    }

    /// A manifest's bytes as stored: `\0BM1 ‖ len (u32 LE) ‖ wrapped data key ‖ sealed bytes`,
    /// under a new data key of the repository's scope (`who` needs `kms:GenerateDataKey` on a
    /// KMS repository's key).
    pub(crate) async fn seal_manifest(&self, who: Option<&Caller>, repo_id: i64, plain: &[u8]) -> Result<Vec<u8>> {
        let k = self.new_data_key(who, repo_id).await?;
        let wrapped = k.wrapped.encode();
        let mut out = berth_meta::SEALED_MANIFEST.to_vec();
        out.extend_from_slice(&(wrapped.len() as u32).to_le_bytes());
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&berth_crypto::envelope::seal_all(&k.key, plain));
        Ok(out)
    }

    /// A manifest's bytes from what is stored (kept as they are when stored in the clear by an
    /// earlier version); `who` needs `kms:Decrypt` on a KMS repository's key.
    pub(crate) async fn open_manifest(&self, who: Option<&Caller>, stored: Vec<u8>) -> Result<Vec<u8>> {
        let Some(rest) = stored.strip_prefix(&berth_meta::SEALED_MANIFEST) else { return Ok(stored) };
        let corrupt = || Error::Internal("a stored manifest is corrupt".into());
        if rest.len() < 4 {
            return Err(corrupt());
        }
        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let (wrapped, sealed) = rest[4..].split_at_checked(n).ok_or_else(corrupt)?;
        let key = self.open_data_key(who.map(|c| (c, "kms:Decrypt")), wrapped).await?;
        let plain = berth_crypto::envelope::plain_len(sealed.len() as u64).ok_or_else(corrupt)?;
        berth_crypto::envelope::open_all(&key, sealed, plain)
            .map_err(|e| Error::Internal(format!("a stored manifest failed its integrity check: {e}")))
    }

    /// Reads a stored copy: sealed, or (written before encryption) in the clear under its digest.
    pub(crate) async fn open_copy(
        &self,
        who: Option<&Caller>,
        digest: &Digest,
        size: u64,
        object: Option<&BlobObject>,
        range: Option<Range<u64>>,
    ) -> Result<BlobBody> {
        let r = match object {
            None => self.blobs.open(digest, range).await,
            Some(o) => {
                let key = self.open_data_key(who.map(|c| (c, "kms:Decrypt")), &o.wrapped_key).await?;
                let name: Digest =
                    o.object.parse().map_err(|_| Error::Internal("a stored object name is corrupt".into()))?;
                self.sealed.open(&name, &key, size, range).await
            }
        };
        match r {
            Ok(b) => Ok(b),
            Err(BlobError::NotFound(_)) => {
                Err(Error::Internal(format!("blob {digest} is recorded but missing from storage")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A blob as a repository reads it.
    pub(crate) async fn open_repo_blob(
        &self,
        who: Option<&Caller>,
        digest: &Digest,
        blob: &RepoBlob,
        range: Option<Range<u64>>,
    ) -> Result<BlobBody> {
        self.open_copy(who, digest, blob.size as u64, blob.object.as_ref(), range).await
    }

    /// A blob from whichever copy there is (the scanner's reads, outside any repository).
    pub(crate) async fn open_any_copy(&self, digest: &Digest) -> Result<BlobBody> {
        match self.meta.any_blob_object(&digest.to_string()).await? {
            Some((size, o)) => self.open_copy(None, digest, size as u64, Some(&o), None).await,
            None => {
                let size = self.meta.blob_size(&digest.to_string()).await?.unwrap_or_default();
                self.open_copy(None, digest, size as u64, None, None).await
            }
        }
    }
}
