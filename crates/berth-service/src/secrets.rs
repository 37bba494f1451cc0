//! Secrets, as AWS Secrets Manager keeps them: what pull-through cache rules name as their
//! upstream credentials (`credentialArn`). A secret's value is sealed under the secrets key
//! (bound to its ARN), never stored in the clear; one version is kept, the current one
//! (`AWSCURRENT`), with the id its writer gave (`ClientRequestToken`) or one made up. A secret
//! may be made without a value (Terraform does, then writes the value): it has no version then.

use crate::access::Access;
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Error, Exists, NotFound, Result};

/// The only version stage Berth keeps.
pub const CURRENT: &str = "AWSCURRENT";

/// A secret as the API shows it (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub arn: String,
    pub name: String,
    pub description: Option<String>,
    /// The current version's id (None: no value yet).
    pub version_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn info(r: &berth_meta::SecretRow) -> SecretInfo {
    SecretInfo {
        arn: r.arn.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        version_id: (!r.sealed.is_empty()).then(|| r.version_id.clone().unwrap_or_else(|| first_version(&r.arn))),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// The version id of a secret stored before versions were kept: fixed, from its ARN.
fn first_version(arn: &str) -> String {
    let d = berth_crypto::digest_of(berth_core::Algorithm::Sha256, arn.as_bytes()).to_string();
    let h = d.trim_start_matches("sha256:");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A new version's id: the client's token (32 to 64 characters, as Secrets Manager's), else new.
fn version_of(token: Option<&str>) -> Result<String> {
    match token {
        None => Ok(uuid::Uuid::new_v4().to_string()),
        Some(t) if (32..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic()) => Ok(t.to_string()),
        Some(_) => Err(Error::parameter("ClientRequestToken", "32 to 64 printable characters".into())),
    }
}

fn check_value(value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 65536 {
        return Err(Error::parameter("SecretString", "1 to 65,536 characters".into()));
    }
    Ok(())
}

fn check_description(d: Option<&str>) -> Result<()> {
    if d.is_some_and(|d| d.len() > 2048) {
        return Err(Error::parameter("Description", "at most 2,048 characters".into()));
    }
    Ok(())
}

domain! {
    /// Secrets (Secrets Manager's operations, and the registry's own reading of them).
    Secrets
}

impl<'a> Secrets<'a> {
    fn access(&self) -> Access<'a> {
        Access(self.0)
    }

    /// Decides `action` for the caller, on its own account's secrets; that account.
    async fn check(&self, caller: &Caller, action: &str) -> Result<String> {
        let account = self.account_of(caller);
        self.access().check_registry(caller, action, &account).await?;
        Ok(account)
    }

    fn aad(arn: &str) -> Vec<u8> {
        format!("berth-secret:{arn}").into_bytes()
    }

    async fn row(&self, account: &str, id: &str) -> Result<berth_meta::SecretRow> {
        Ok(self.meta.secret(account, id).await?.ok_or_else(|| NotFound::Secret { id: id.to_string() })?)
    }

    fn open(&self, row: &berth_meta::SecretRow) -> Result<String> {
        if row.sealed.is_empty() {
            let what = format!("staging label: {CURRENT}");
            return Err(NotFound::SecretValue { id: row.name.clone(), what }.into());
        }
        let plain = self
            .settings
            .seal_key
            .open(&row.sealed, &Self::aad(&row.arn))
            .ok_or_else(|| Error::Internal(format!("secret {} does not open with this secrets key", row.arn)))?;
        String::from_utf8(plain).map_err(|_| Error::Internal(format!("secret {} is not text", row.arn)))
    }

    /// Stores a secret in the caller's account (sealed under the secrets key).
    pub async fn create(
        &self,
        caller: &Caller,
        name: &str,
        value: Option<&str>,
        description: Option<&str>,
        token: Option<&str>,
    ) -> Result<SecretInfo> {
        let account = self.check(caller, "secretsmanager:CreateSecret").await?;
        if name.is_empty()
            || name.len() > 512
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
        {
            return Err(Error::parameter("Name", "1 to 512 letters, digits and /_+=.@-".into()));
        }
        if let Some(v) = value {
            check_value(v)?;
        }
        check_description(description)?;
        let version = value.map(|_| version_of(token)).transpose()?;
        let suffix = berth_crypto::random_string(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 6);
        let arn = format!("arn:aws:secretsmanager:{}:{account}:secret:{name}-{suffix}", self.settings.region);
        let now = berth_meta::now_ms();
        let row = berth_meta::SecretRow {
            sealed: value.map(|v| self.settings.seal_key.seal(v.as_bytes(), &Self::aad(&arn))).unwrap_or_default(),
            arn,
            account,
            name: name.to_string(),
            description: description.map(str::to_string),
            version_id: version,
            created_at: now,
            updated_at: now,
        };
        if !self.meta.insert_secret(&row).await? {
            return Err(Exists::Secret { name: name.to_string() }.into());
        }
        Ok(info(&row))
    }

    pub async fn describe(&self, caller: &Caller, id: &str) -> Result<SecretInfo> {
        let account = self.check(caller, "secretsmanager:DescribeSecret").await?;
        Ok(info(&self.row(&account, id).await?))
    }

    /// The caller's account's secrets, by name.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<SecretInfo>> {
        let account = self.check(caller, "secretsmanager:ListSecrets").await?;
        Ok(self.meta.secrets(&account).await?.iter().map(info).collect())
    }

    /// A secret's current value (`GetSecretValue`): the version or stage asked for must be the
    /// current one, the only one kept.
    pub async fn get_value(
        &self,
        caller: &Caller,
        id: &str,
        version_id: Option<&str>,
        stage: Option<&str>,
    ) -> Result<(SecretInfo, String)> {
        let account = self.check(caller, "secretsmanager:GetSecretValue").await?;
        let row = self.row(&account, id).await?;
        let i = info(&row);
        if let Some(v) = version_id
            && Some(v) != i.version_id.as_deref()
        {
            return Err(NotFound::SecretValue { id: id.to_string(), what: format!("VersionId: {v}") }.into());
        }
        if let Some(s) = stage
            && s != CURRENT
        {
            return Err(NotFound::SecretValue { id: id.to_string(), what: format!("staging label: {s}") }.into());
        }
        let value = self.open(&row)?;
        Ok((i, value))
    }

    /// A new current value (`PutSecretValue`).
    pub async fn put_value(&self, caller: &Caller, id: &str, value: &str, token: Option<&str>) -> Result<SecretInfo> {
        let account = self.check(caller, "secretsmanager:PutSecretValue").await?;
        let row = self.row(&account, id).await?;
        self.write_value(&row, value, token).await
    }

    /// `UpdateSecret`: the description and (as a new version) the value, either or both.
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        value: Option<&str>,
        description: Option<&str>,
        token: Option<&str>,
    ) -> Result<SecretInfo> {
        let account = self.check(caller, "secretsmanager:UpdateSecret").await?;
        check_description(description)?;
        let mut row = self.row(&account, id).await?;
        if let Some(d) = description {
            self.meta.set_secret_description(&row.arn, Some(d)).await?;
            row.description = Some(d.to_string());
        }
        match value {
            Some(v) => self.write_value(&row, v, token).await,
            None => Ok(info(&row)),
        }
    }

    /// Makes `value` the current version. Writing again with the current version's token and
    /// the same value changes nothing; with another value it is refused.
    async fn write_value(&self, row: &berth_meta::SecretRow, value: &str, token: Option<&str>) -> Result<SecretInfo> {
        check_value(value)?;
        let current = info(row);
        if let Some(id) = current.version_id.clone()
            && token == Some(id.as_str())
        {
            if self.open(row)? == value {
                return Ok(current);
            }
            return Err(Exists::SecretVersion { id }.into());
        }
        let version = version_of(token)?;
        let sealed = self.settings.seal_key.seal(value.as_bytes(), &Self::aad(&row.arn));
        if !self.meta.set_secret_value(&row.arn, &sealed, &version).await? {
            return Err(NotFound::Secret { id: row.name.clone() }.into());
        }
        Ok(SecretInfo { version_id: Some(version), updated_at: berth_meta::now_ms(), ..current })
    }

    /// Deletes a secret at once (Berth keeps no recovery window).
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<SecretInfo> {
        let account = self.check(caller, "secretsmanager:DeleteSecret").await?;
        let row = self.row(&account, id).await?;
        self.meta.delete_secret(&row.arn).await?;
        Ok(info(&row))
    }

    /// A secret's value, for the registry's own use (upstream credentials).
    pub(crate) async fn value(&self, account: &str, arn: &str) -> Result<String> {
        self.open(&self.row(account, arn).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = first_version("arn:aws:secretsmanager:us-east-1:000000000000:secret:x-AbCdEf");
        assert_eq!(v.len(), 36);
        assert_eq!(v, first_version("arn:aws:secretsmanager:us-east-1:000000000000:secret:x-AbCdEf"));
        assert_ne!(v, first_version("arn:aws:secretsmanager:us-east-1:000000000000:secret:y-AbCdEf"));
        assert!(version_of(Some("short")).is_err());
        assert_eq!(version_of(Some(&"a".repeat(32))).unwrap(), "a".repeat(32));
        assert!(version_of(Some(&"a".repeat(65))).is_err());
        assert_eq!(version_of(None).unwrap().len(), 36);
    }
}
