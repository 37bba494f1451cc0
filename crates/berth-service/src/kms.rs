//! KMS keys, as AWS KMS has them, for the KMS API and for repositories sealed under a customer
//! key. A key's material (one version per rotation) is sealed under the master keyring and kept
//! in the metadata store; what a key seals names the key and the version that sealed it, so old
//! data stays readable after a rotation. Every use is decided by the key's policy together with
//! the caller's IAM policies, as KMS decides it (`policy::evaluate_key`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::policy::{self, Decision, PolicyKind};
use berth_crypto::envelope::{DataKey, WrappedKey};
use berth_crypto::keyring::Keyring;
use berth_crypto::seal::SealKey;
use berth_meta::{KmsAliasRow, KmsKeyRow, KmsMaterialRow, MetaError};

use crate::access::Access;
use crate::cache::LoadedKey;
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Conflict, Error, Exists, InvalidKind, Limit, NotFound, Result};

/// The alias of each account's AWS-managed key for ECR (repositories with `encryptionType=KMS`
/// and no `kmsKey`).
pub const MANAGED_ALIAS: &str = "alias/aws/ecr";
/// Most tags a key may carry (KMS's limit).
pub const MAX_KEY_TAGS: usize = 50;
/// Most on-demand rotations of one key (KMS's limit).
pub const MAX_ON_DEMAND_ROTATIONS: usize = 25;
/// Largest key policy KMS accepts.
pub const MAX_KEY_POLICY: usize = 32_768;
/// How long a key's state is taken from this node's cache: a disabled key stops working on
/// every node within this.
pub const KEY_STATE_TTL: Duration = Duration::from_secs(1);

/// What CreateKey takes.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub description: Option<String>,
    pub key_usage: Option<String>,
    pub key_spec: Option<String>,
    pub policy: Option<String>,
    pub tags: Vec<(String, String)>,
    pub multi_region: bool,
    pub bypass_lockout_check: bool,
}

/// A key as DescribeKey shows it.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub row: KmsKeyRow,
    pub aliases: Vec<String>,
}

/// `GetKeyRotationStatus`.
#[derive(Debug, Clone)]
pub struct RotationStatus {
    pub key_id: String,
    pub enabled: bool,
    pub period_days: Option<i64>,
    pub next_rotation: Option<i64>,
    pub on_demand_started: Option<i64>,
}

/// One rotation, as ListKeyRotations shows it.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub key_id: String,
    pub at: i64,
    pub on_demand: bool,
}

/// What a data-key operation returns.
pub struct DataKeyOut {
    pub key_arn: String,
    pub plaintext: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

fn ms_now() -> i64 {
    berth_meta::now_ms()
}

const DAY_MS: i64 = 24 * 3600 * 1000;

fn default_policy(account: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

fn validation(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid(crate::error::Invalid {
        kind: InvalidKind::Validation,
        field: Some(field.to_string()),
        value: None,
        reason: reason.into(),
    })
}

/// Checks an alias name: `alias/` then 1–250 characters of `[a-zA-Z0-9/_-]`; `alias/aws/` is
/// AWS's, and `who` may not `action` it.
fn check_alias_name(who: &Caller, action: &str, name: &str) -> Result<()> {
    let rest = name.strip_prefix("alias/").ok_or_else(|| validation("AliasName", "must start with alias/"))?;
    if rest.is_empty()
        || name.len() > 256
        || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    {
        return Err(validation("AliasName", "must be alias/ followed by 1 to 250 of the characters [a-zA-Z0-9/_-]"));
    }
    if rest.starts_with("aws/") {
        return Err(crate::access::denial(who.arn(), action, name, crate::error::DeniedBy::NoAllow));
    }
    Ok(())
}

fn check_key_tags(tags: &[(String, String)]) -> Result<()> {
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            return Err(Error::invalid(
                InvalidKind::ResourceTag,
                format!("tag {k:?}: keys are 1 to 128 characters, values up to 256"),
            ));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(Error::invalid(
                InvalidKind::ResourceTag,
                format!("tag key {k:?} uses the reserved prefix aws:"),
            ));
        }
    }
    Ok(())
}

/// The associated data a KMS ciphertext is bound to: its key and version, and the encryption
/// context (sorted, so the order a client gives it in does not matter).
fn ciphertext_aad(key_id: &str, version: i64, context: &[(String, String)]) -> Vec<u8> {
    let mut ctx = context.to_vec();
    ctx.sort();
    let mut out = format!("berth kms ciphertext\0{key_id}\0{version}").into_bytes();
    for (k, v) in ctx {
        out.extend_from_slice(format!("\0{k}={v}").as_bytes());
    }
    out
}

/// A KMS ciphertext blob: `BKC1 ‖ len ‖ key id ‖ version (LE u32) ‖ sealed`.
fn encode_ciphertext(key_id: &str, version: i64, sealed: &[u8]) -> Vec<u8> {
    let mut b = b"BKC1".to_vec();
    b.push(key_id.len() as u8);
    b.extend_from_slice(key_id.as_bytes());
    b.extend_from_slice(&(version as u32).to_le_bytes());
    b.extend_from_slice(sealed);
    b
}

fn decode_ciphertext(b: &[u8]) -> Option<(String, i64, &[u8])> {
    let rest = b.strip_prefix(b"BKC1")?;
    let (&n, rest) = rest.split_first()?;
    if rest.len() < n as usize + 4 {
        return None;
    }
    let (id, rest) = rest.split_at(n as usize);
    let (v, sealed) = rest.split_at(4);
    Some((String::from_utf8(id.to_vec()).ok()?, u32::from_le_bytes(v.try_into().ok()?) as i64, sealed))
}

fn material_aad(key_id: &str, version: i64) -> Vec<u8> {
    format!("berth kms material\0{key_id}\0{version}").into_bytes()
}

domain! {
    /// The KMS API's keys, and their use by repositories.
    Kms
}

impl<'a> Kms<'a> {
    fn access(&self) -> Access<'a> {
        Access(self.0)
    }

    fn key_arn(&self, account: &str, key_id: &str) -> String {
        format!("arn:aws:kms:{}:{account}:key/{key_id}", self.settings.region)
    }

    fn alias_arn(&self, account: &str, name: &str) -> String {
        format!("arn:aws:kms:{}:{account}:{name}", self.settings.region)
    }

    fn new_material(&self, key_id: &str, version: i64, on_demand: bool) -> KmsMaterialRow {
        let ring = &self.settings.master_keys;
        let material = SealKey::generate();
        KmsMaterialRow {
            version,
            sealed: ring.active().seal_bytes(material.as_bytes(), &material_aad(key_id, version)),
            master: ring.active().fingerprint(),
            created_at: ms_now(),
            on_demand,
        }
    }

    /// A key with its opened material (cached briefly).
    pub(crate) async fn load(&self, key_id: &str) -> Result<Option<Arc<LoadedKey>>> {
        {
            let map = self.caches.kms.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, k)) = map.get(key_id)
                && at.elapsed() < KEY_STATE_TTL
            {
                return Ok(Some(k.clone()));
            }
        }
        let Some(row) = self.meta.kms_key(key_id).await? else { return Ok(None) };
        let mut material = Vec::new();
        for m in self.meta.kms_material(key_id).await? {
            let master = self.settings.master_keys.find(&m.master).ok_or_else(|| {
                Error::Internal(format!(
                    "KMS key {key_id} is sealed under master key {}, which is not in this node's keyring",
                    m.master
                ))
            })?;
            let raw = master
                .open_bytes(&m.sealed, &material_aad(key_id, m.version))
                .and_then(|b| SealKey::from_bytes(&b))
                .ok_or_else(|| Error::Internal(format!("the material of KMS key {key_id} does not open")))?;
            material.push((m.version, raw));
        }
        let k = Arc::new(LoadedKey { row, material });
        let mut map = self.caches.kms.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(key_id.to_string(), (Instant::now(), k.clone()));
        Ok(Some(k))
    }

    fn forget(&self, key_id: &str) {
        self.caches.kms.map.lock().unwrap_or_else(|e| e.into_inner()).remove(key_id);
    }

    /// The key a call names: its id, its ARN, an alias name or an alias ARN (in `account`, or
    /// the account an ARN names).
    pub(crate) async fn resolve(&self, account: &str, key: &str) -> Result<Arc<LoadedKey>> {
        let missing = || Error::from(NotFound::KmsKey { key: key.to_string() });
        if key.is_empty() || key.len() > 2048 {
            return Err(validation("KeyId", "must be 1 to 2048 characters"));
        }
        let (account, rest) = match key.strip_prefix("arn:aws:kms:") {
            Some(arn) => {
                let mut parts = arn.splitn(3, ':');
                let (_region, acct, res) = (parts.next(), parts.next(), parts.next());
                match (acct, res) {
                    (Some(a), Some(r)) => (a.to_string(), r.to_string()),
                    _ => return Err(missing()),
                }
            }
            None => (account.to_string(), key.to_string()),
        };
        let id = if rest.starts_with("alias/") {
            self.meta.kms_alias(&account, &rest).await?.ok_or_else(missing)?.key_id
        } else {
            rest.strip_prefix("key/").unwrap_or(&rest).to_string()
        };
        let k = self.load(&id).await?.ok_or_else(missing)?;
        if k.row.account != account {
            return Err(missing());
        }
        Ok(k)
    }

    /// Whether `who` may do `action` with the key: its key policy and the caller's IAM policies.
    async fn check(&self, who: &Caller, action: &str, k: &LoadedKey) -> Result<()> {
        let policy = policy::parse(&k.row.policy, PolicyKind::Resource).ok();
        let d = match policy {
            Some(p) => self.access().decide_key(who, action, &k.row.arn, &k.row.account, &p).await?,
            None => Decision::ImplicitDeny,
        };
        match d {
            Decision::Allow => Ok(()),
            d => Err(self.access().denied_by_key(who, action, &k.row.arn, d)),
        }
    }

    /// A key-free action (CreateKey, ListKeys, ListAliases): the caller's IAM policies alone.
    async fn check_account(&self, who: &Caller, action: &str) -> Result<String> {
        let account = self.account_of(who);
        self.access().check_registry(who, action, &account).await?;
        Ok(account)
    }

    fn usable(k: &LoadedKey) -> Result<()> {
        match k.row.state.as_str() {
            "Enabled" => Ok(()),
            s => Err(Error::Conflict(Conflict::KmsKeyState {
                arn: k.row.arn.clone(),
                state: s.to_string(),
                deletion: k.row.deletion_at.map(|d| berth_core::time::format_rfc3339(d / 1000)),
            })),
        }
    }

    fn customer(k: &LoadedKey) -> Result<()> {
        if k.row.manager == "AWS" {
            return Err(Error::Conflict(Conflict::KmsManaged { arn: k.row.arn.clone() }));
        }
        Ok(())
    }

    async fn view(&self, k: &LoadedKey) -> Result<KeyView> {
        let aliases = self.meta.list_kms_aliases(&k.row.account, Some(&k.row.key_id), "", 1000).await?;
        Ok(KeyView { row: k.row.clone(), aliases: aliases.into_iter().map(|a| a.name).collect() })
    }

    /// Checks a key policy: valid, small enough, and (unless bypassed) still letting `who` put
    /// a policy afterwards, as KMS's lockout safety check does.
    async fn check_policy(&self, who: &Caller, text: &str, arn: &str, account: &str, bypass: bool) -> Result<()> {
        if text.is_empty() || text.len() > MAX_KEY_POLICY {
            return Err(validation("Policy", format!("must be 1 to {MAX_KEY_POLICY} characters")));
        }
        let p = policy::parse(text, PolicyKind::Resource)
            .map_err(|e| Error::invalid(InvalidKind::PolicyDocument, format!("the key policy is malformed: {e}")))?;
        if !bypass
            && !who.is_operator()
            && self.access().decide_key(who, "kms:PutKeyPolicy", arn, account, &p).await? != Decision::Allow
        {
            return Err(Error::invalid(
                InvalidKind::PolicyDocument,
                "The new key policy will not allow you to update the key policy in the future.".into(),
            ));
        }
        Ok(())
    }

    // ---- the KMS API ----

    pub async fn create_key(&self, who: &Caller, new: NewKey) -> Result<KeyView> {
        let account = self.check_account(who, "kms:CreateKey").await?;
        let usage = new.key_usage.unwrap_or_else(|| "ENCRYPT_DECRYPT".into());
        if usage != "ENCRYPT_DECRYPT" {
            return Err(validation("KeyUsage", "Berth's keys are symmetric: ENCRYPT_DECRYPT only"));
        }
        let spec = new.key_spec.unwrap_or_else(|| "SYMMETRIC_DEFAULT".into());
        if spec != "SYMMETRIC_DEFAULT" {
            return Err(validation("KeySpec", "Berth's keys are symmetric: SYMMETRIC_DEFAULT only"));
        }
        let description = new.description.unwrap_or_default();
        if description.chars().count() > 8192 {
            return Err(validation("Description", "must be at most 8192 characters"));
        }
        if new.tags.len() > MAX_KEY_TAGS {
            return Err(Error::LimitExceeded {
                reason: format!("a key may have at most {MAX_KEY_TAGS} tags"),
                what: Limit::Tags,
            });
        }
        check_key_tags(&new.tags)?;
        let key_id = uuid::Uuid::new_v4().to_string();
        let arn = self.key_arn(&account, &key_id);
        let policy = match new.policy {
            Some(p) => {
                self.check_policy(who, &p, &arn, &account, new.bypass_lockout_check).await?;
                p
            }
            None => default_policy(&account),
        };
        let row = KmsKeyRow {
            key_id: key_id.clone(),
            account,
            arn,
            description,
            key_usage: usage,
            key_spec: spec,
            manager: "CUSTOMER".into(),
            state: "Enabled".into(),
            created_at: ms_now(),
            deletion_at: None,
            pending_days: None,
            rotation_enabled: false,
            rotation_days: 365,
            next_rotation_at: None,
            policy,
            multi_region: new.multi_region,
        };
        self.meta.create_kms_key(&row, &self.new_material(&key_id, 1, false), &new.tags, None).await?;
        let k = self.load(&key_id).await?.ok_or_else(|| Error::Internal("a created key is gone".into()))?;
        self.view(&k).await
    }

    pub async fn describe_key(&self, who: &Caller, key: &str) -> Result<KeyView> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:DescribeKey", &k).await?;
        self.view(&k).await
    }

    /// A page of the caller's account's keys.
    pub async fn list_keys(&self, who: &Caller, marker: Option<&str>, limit: i64) -> Result<(Vec<KmsKeyRow>, bool)> {
        let account = self.check_account(who, "kms:ListKeys").await?;
        let mut rows = self.meta.list_kms_keys(&account, marker.unwrap_or_default(), limit + 1).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Ok((rows, more))
    }

    pub async fn create_alias(&self, who: &Caller, name: &str, target: &str) -> Result<()> {
        check_alias_name(who, "kms:CreateAlias", name)?;
        let account = self.account_of(who);
        let k = self.resolve(&account, target).await?;
        if target.contains("alias/") {
            return Err(validation("TargetKeyId", "must name a key (its id or ARN), not an alias"));
        }
        self.check(who, "kms:CreateAlias", &k).await?;
        Self::customer(&k)?;
        self.meta.create_kms_alias(&account, name, &k.row.key_id).await.map_err(|e| match e {
            MetaError::AlreadyExists(_) => Error::from(Exists::KmsAlias { arn: self.alias_arn(&account, name) }),
            e => e.into(),
        })
    }

    pub async fn update_alias(&self, who: &Caller, name: &str, target: &str) -> Result<()> {
        check_alias_name(who, "kms:UpdateAlias", name)?;
        let account = self.account_of(who);
        let current = self
            .meta
            .kms_alias(&account, name)
            .await?
            .ok_or_else(|| Error::from(NotFound::KmsAlias { arn: self.alias_arn(&account, name) }))?;
        let old = self.load(&current.key_id).await?.ok_or_else(|| NotFound::KmsKey { key: current.key_id.clone() })?;
        let new = self.resolve(&account, target).await?;
        self.check(who, "kms:UpdateAlias", &old).await?;
        self.check(who, "kms:UpdateAlias", &new).await?;
        Self::customer(&new)?;
        self.meta.update_kms_alias(&account, name, &new.row.key_id).await?;
        Ok(())
    }

    pub async fn delete_alias(&self, who: &Caller, name: &str) -> Result<()> {
        check_alias_name(who, "kms:DeleteAlias", name)?;
        let account = self.account_of(who);
        let a = self
            .meta
            .kms_alias(&account, name)
            .await?
            .ok_or_else(|| Error::from(NotFound::KmsAlias { arn: self.alias_arn(&account, name) }))?;
        if let Some(k) = self.load(&a.key_id).await? {
            self.check(who, "kms:DeleteAlias", &k).await?;
        }
        self.meta.delete_kms_alias(&account, name).await?;
        Ok(())
    }

    pub async fn list_aliases(
        &self,
        who: &Caller,
        key: Option<&str>,
        marker: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<(String, KmsAliasRow)>, bool)> {
        let account = self.check_account(who, "kms:ListAliases").await?;
        let key_id = match key {
            Some(k) => Some(self.resolve(&account, k).await?.row.key_id.clone()),
            None => None,
        };
        let mut rows =
            self.meta.list_kms_aliases(&account, key_id.as_deref(), marker.unwrap_or_default(), limit + 1).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Ok((rows.into_iter().map(|a| (self.alias_arn(&account, &a.name), a)).collect(), more))
    }

    async fn set_state(&self, who: &Caller, key: &str, action: &str, to: &str) -> Result<()> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, action, &k).await?;
        Self::customer(&k)?;
        if k.row.state == "PendingDeletion" {
            Self::usable(&k)?;
        }
        let mut row = k.row.clone();
        row.state = to.to_string();
        self.meta.update_kms_key(&row).await?;
        self.forget(&row.key_id);
        Ok(())
    }

    pub async fn enable_key(&self, who: &Caller, key: &str) -> Result<()> {
        self.set_state(who, key, "kms:EnableKey", "Enabled").await
    }

    pub async fn disable_key(&self, who: &Caller, key: &str) -> Result<()> {
        self.set_state(who, key, "kms:DisableKey", "Disabled").await
    }

    pub async fn enable_rotation(&self, who: &Caller, key: &str, period_days: Option<i64>) -> Result<()> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:EnableKeyRotation", &k).await?;
        Self::customer(&k)?;
        Self::usable(&k)?;
        let days = period_days.unwrap_or(k.row.rotation_days);
        if !(90..=2560).contains(&days) {
            return Err(validation("RotationPeriodInDays", "must be between 90 and 2560"));
        }
        let mut row = k.row.clone();
        row.rotation_enabled = true;
        row.rotation_days = days;
        row.next_rotation_at = Some(ms_now() + days * DAY_MS);
        self.meta.update_kms_key(&row).await?;
        self.forget(&row.key_id);
        Ok(())
    }

    pub async fn disable_rotation(&self, who: &Caller, key: &str) -> Result<()> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:DisableKeyRotation", &k).await?;
        Self::customer(&k)?;
        Self::usable(&k)?;
        let mut row = k.row.clone();
        row.rotation_enabled = false;
        row.next_rotation_at = None;
        self.meta.update_kms_key(&row).await?;
        self.forget(&row.key_id);
        Ok(())
    }

    pub async fn rotation_status(&self, who: &Caller, key: &str) -> Result<RotationStatus> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:GetKeyRotationStatus", &k).await?;
        let on_demand = self.meta.kms_material(&k.row.key_id).await?.into_iter().rfind(|m| m.on_demand);
        Ok(RotationStatus {
            key_id: k.row.arn.clone(),
            enabled: k.row.rotation_enabled,
            period_days: k.row.rotation_enabled.then_some(k.row.rotation_days),
            next_rotation: k.row.next_rotation_at,
            on_demand_started: on_demand.map(|m| m.created_at),
        })
    }

    /// `RotateKeyOnDemand`: new material now; what older material sealed stays readable.
    pub async fn rotate_now(&self, who: &Caller, key: &str) -> Result<String> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:RotateKeyOnDemand", &k).await?;
        Self::customer(&k)?;
        Self::usable(&k)?;
        let existing = self.meta.kms_material(&k.row.key_id).await?;
        if existing.iter().filter(|m| m.on_demand).count() >= MAX_ON_DEMAND_ROTATIONS {
            return Err(Error::LimitExceeded {
                reason: format!("a key may be rotated on demand at most {MAX_ON_DEMAND_ROTATIONS} times"),
                what: Limit::Quota,
            });
        }
        self.rotate(&k, true).await?;
        Ok(k.row.arn.clone())
    }

    async fn rotate(&self, k: &LoadedKey, on_demand: bool) -> Result<()> {
        let next_version = k.material.last().map_or(1, |(v, _)| v + 1);
        let next = k.row.rotation_enabled.then(|| ms_now() + k.row.rotation_days * DAY_MS);
        let next = if on_demand { k.row.next_rotation_at } else { next };
        self.meta
            .add_kms_material(&k.row.key_id, &self.new_material(&k.row.key_id, next_version, on_demand), next)
            .await?;
        self.forget(&k.row.key_id);
        tracing::info!(key = %k.row.arn, version = next_version, on_demand, "KMS key rotated");
        Ok(())
    }

    pub async fn list_rotations(&self, who: &Caller, key: &str) -> Result<Vec<Rotation>> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:ListKeyRotations", &k).await?;
        Ok(self
            .meta
            .kms_material(&k.row.key_id)
            .await?
            .into_iter()
            .skip(1)
            .map(|m| Rotation { key_id: k.row.arn.clone(), at: m.created_at, on_demand: m.on_demand })
            .collect())
    }

    /// `ScheduleKeyDeletion`: the key is unusable at once and deleted after `days` (7–30).
    /// Returns the ARN and the deletion time.
    pub async fn schedule_deletion(&self, who: &Caller, key: &str, days: Option<i64>) -> Result<(String, i64, i64)> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:ScheduleKeyDeletion", &k).await?;
        Self::customer(&k)?;
        let days = days.unwrap_or(30);
        if !(7..=30).contains(&days) {
            return Err(validation("PendingWindowInDays", "must be between 7 and 30"));
        }
        if k.row.state == "PendingDeletion" {
            Self::usable(&k)?;
        }
        let mut row = k.row.clone();
        row.state = "PendingDeletion".into();
        row.deletion_at = Some(ms_now() + days * DAY_MS);
        row.pending_days = Some(days);
        self.meta.update_kms_key(&row).await?;
        self.forget(&row.key_id);
        let repos = self.meta.repos_with_encryption_key(&row.key_id).await?;
        tracing::warn!(key = %row.arn, days, repositories = repos.len(), "KMS key scheduled for deletion");
        Ok((row.arn, row.deletion_at.unwrap_or_default(), days))
    }

    /// `CancelKeyDeletion`: the key comes back disabled, as in KMS.
    pub async fn cancel_deletion(&self, who: &Caller, key: &str) -> Result<String> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:CancelKeyDeletion", &k).await?;
        Self::customer(&k)?;
        if k.row.state != "PendingDeletion" {
            return Err(Error::Conflict(Conflict::KmsKeyState {
                arn: k.row.arn.clone(),
                state: k.row.state.clone(),
                deletion: None,
            }));
        }
        let mut row = k.row.clone();
        row.state = "Disabled".into();
        row.deletion_at = None;
        row.pending_days = None;
        self.meta.update_kms_key(&row).await?;
        self.forget(&row.key_id);
        Ok(row.arn)
    }

    pub async fn get_policy(&self, who: &Caller, key: &str, name: Option<&str>) -> Result<String> {
        if name.is_some_and(|n| n != "default") {
            return Err(Error::from(NotFound::KmsKey { key: format!("{key} (policy {})", name.unwrap_or_default()) }));
        }
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:GetKeyPolicy", &k).await?;
        Ok(k.row.policy.clone())
    }

    pub async fn put_policy(&self, who: &Caller, key: &str, text: &str, bypass: bool) -> Result<()> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:PutKeyPolicy", &k).await?;
        Self::customer(&k)?;
        self.check_policy(who, text, &k.row.arn, &k.row.account, bypass).await?;
        let mut row = k.row.clone();
        row.policy = text.to_string();
        self.meta.update_kms_key(&row).await?;
        self.forget(&row.key_id);
        Ok(())
    }

    pub async fn tag(&self, who: &Caller, key: &str, tags: &[(String, String)]) -> Result<()> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:TagResource", &k).await?;
        Self::customer(&k)?;
        check_key_tags(tags)?;
        self.meta.change_kms_tags(&k.row.key_id, tags, &[], MAX_KEY_TAGS).await.map_err(|e| match e {
            MetaError::TooManyTags(n) => {
                Error::LimitExceeded { reason: format!("a key may have at most {n} tags"), what: Limit::Tags }
            }
            e => e.into(),
        })
    }

    pub async fn untag(&self, who: &Caller, key: &str, keys: &[String]) -> Result<()> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:UntagResource", &k).await?;
        Self::customer(&k)?;
        self.meta.change_kms_tags(&k.row.key_id, &[], keys, MAX_KEY_TAGS).await?;
        Ok(())
    }

    pub async fn list_tags(&self, who: &Caller, key: &str) -> Result<Vec<(String, String)>> {
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:ListResourceTags", &k).await?;
        Ok(self.meta.kms_tags(&k.row.key_id).await?)
    }

    /// `Encrypt`: up to 4096 bytes sealed under the key's newest material.
    pub async fn encrypt(
        &self,
        who: &Caller,
        key: &str,
        plaintext: &[u8],
        context: &[(String, String)],
    ) -> Result<DataKeyOut> {
        if plaintext.is_empty() || plaintext.len() > 4096 {
            return Err(validation("Plaintext", "must be 1 to 4096 bytes"));
        }
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:Encrypt", &k).await?;
        Self::usable(&k)?;
        let (version, material) = k.newest().ok_or_else(|| Error::Internal("a KMS key has no material".into()))?;
        let sealed = material.seal_bytes(plaintext, &ciphertext_aad(&k.row.key_id, *version, context));
        Ok(DataKeyOut {
            key_arn: k.row.arn.clone(),
            plaintext: Vec::new(),
            ciphertext: encode_ciphertext(&k.row.key_id, *version, &sealed),
        })
    }

    /// `GenerateDataKey`: a random key of `bytes` bytes, returned in the clear and sealed.
    pub async fn generate_data_key(
        &self,
        who: &Caller,
        key: &str,
        bytes: usize,
        context: &[(String, String)],
    ) -> Result<DataKeyOut> {
        if !(1..=1024).contains(&bytes) {
            return Err(validation("NumberOfBytes", "must be 1 to 1024"));
        }
        let k = self.resolve(&self.account_of(who), key).await?;
        self.check(who, "kms:GenerateDataKey", &k).await?;
        Self::usable(&k)?;
        let mut plain = Vec::with_capacity(bytes);
        while plain.len() < bytes {
            plain.extend_from_slice(&berth_crypto::random_bytes());
        }
        plain.truncate(bytes);
        let (version, material) = k.newest().ok_or_else(|| Error::Internal("a KMS key has no material".into()))?;
        let sealed = material.seal_bytes(&plain, &ciphertext_aad(&k.row.key_id, *version, context));
        Ok(DataKeyOut {
            key_arn: k.row.arn.clone(),
            plaintext: plain,
            ciphertext: encode_ciphertext(&k.row.key_id, *version, &sealed),
        })
    }

    /// `Decrypt`: the key is the one the ciphertext names (`key`, when given, must be it).
    pub async fn decrypt(
        &self,
        who: &Caller,
        ciphertext: &[u8],
        key: Option<&str>,
        context: &[(String, String)],
    ) -> Result<DataKeyOut> {
        let bad = || Error::invalid(InvalidKind::Ciphertext, "the ciphertext is invalid or was changed".into());
        let (key_id, version, sealed) = decode_ciphertext(ciphertext).ok_or_else(bad)?;
        let k = match self.load(&key_id).await? {
            Some(k) => k,
            None => return Err(bad()),
        };
        if let Some(named) = key {
            let n = self.resolve(&self.account_of(who), named).await?;
            if n.row.key_id != k.row.key_id {
                return Err(Error::invalid(
                    InvalidKind::Ciphertext,
                    format!("the ciphertext was sealed under another key than {named}"),
                ));
            }
        }
        self.check(who, "kms:Decrypt", &k).await?;
        Self::usable(&k)?;
        let material = k.version(version).ok_or_else(bad)?;
        let plain = material.open_bytes(sealed, &ciphertext_aad(&key_id, version, context)).ok_or_else(bad)?;
        Ok(DataKeyOut { key_arn: k.row.arn.clone(), plaintext: plain, ciphertext: Vec::new() })
    }

    // ---- for repositories ----

    /// The KMS key a new repository of `account` is sealed under: `kms_key` (id, ARN or alias),
    /// or the account's AWS-managed key for ECR, created on first use. Returns its id and ARN.
    /// `who` (when a caller creates it) needs `kms:DescribeKey` and `kms:CreateGrant` on it, as
    /// ECR's CreateRepository does.
    pub(crate) async fn key_for_repository(
        &self,
        who: Option<&Caller>,
        account: &str,
        kms_key: Option<&str>,
    ) -> Result<(String, String)> {
        let k = match kms_key {
            Some(key) => self.resolve(account, key).await?,
            None => self.managed_key(account).await?,
        };
        if let Some(who) = who {
            self.check(who, "kms:DescribeKey", &k).await?;
            self.check(who, "kms:CreateGrant", &k).await?;
        }
        Self::usable(&k)?;
        Ok((k.row.key_id.clone(), k.row.arn.clone()))
    }

    async fn managed_key(&self, account: &str) -> Result<Arc<LoadedKey>> {
        if let Some(a) = self.meta.kms_alias(account, MANAGED_ALIAS).await? {
            return self.load(&a.key_id).await?.ok_or_else(|| NotFound::KmsKey { key: MANAGED_ALIAS.into() }.into());
        }
        let key_id = uuid::Uuid::new_v4().to_string();
        let row = KmsKeyRow {
            key_id: key_id.clone(),
            account: account.to_string(),
            arn: self.key_arn(account, &key_id),
            description: "Default key that protects my ECR data when no other key is defined".into(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            manager: "AWS".into(),
            state: "Enabled".into(),
            created_at: ms_now(),
            deletion_at: None,
            pending_days: None,
            // AWS-managed keys rotate every year.
            rotation_enabled: true,
            rotation_days: 365,
            next_rotation_at: Some(ms_now() + 365 * DAY_MS),
            policy: default_policy(account),
            multi_region: false,
        };
        // Two first uses at once: one creates it, the other finds it.
        self.meta.create_kms_key(&row, &self.new_material(&key_id, 1, false), &[], Some(MANAGED_ALIAS)).await?;
        let a = self.meta.kms_alias(account, MANAGED_ALIAS).await?.ok_or_else(|| {
            Error::Internal("the AWS-managed key for ECR was created but its alias is missing".into())
        })?;
        self.load(&a.key_id).await?.ok_or_else(|| NotFound::KmsKey { key: MANAGED_ALIAS.into() }.into())
    }

    /// A new data key under KMS key `key_id` (`kms:GenerateDataKey` for `who`).
    pub(crate) async fn new_data_key(&self, who: Option<&Caller>, key_id: &str) -> Result<(DataKey, WrappedKey)> {
        let k = self.load(key_id).await?.ok_or_else(|| self.deleted(key_id))?;
        if let Some(who) = who {
            self.check(who, "kms:GenerateDataKey", &k).await?;
        }
        Self::usable(&k)?;
        let (version, material) = k.newest().ok_or_else(|| Error::Internal("a KMS key has no material".into()))?;
        let key = DataKey::generate();
        let wrapped = Keyring::wrap_under(material, key_id, *version as u32, &key);
        Ok((key, wrapped))
    }

    /// Opens a data key KMS key `w.key_id` wrapped (`who` needs the action given on it).
    pub(crate) async fn open_data_key(&self, who: Option<(&Caller, &str)>, w: &WrappedKey) -> Result<DataKey> {
        let k = self.load(&w.key_id).await?.ok_or_else(|| self.deleted(&w.key_id))?;
        if let Some((who, action)) = who {
            self.check(who, action, &k).await?;
        }
        Self::usable(&k)?;
        let material = k
            .version(w.version as i64)
            .ok_or_else(|| Error::Internal(format!("KMS key {} lacks material version {}", k.row.arn, w.version)))?;
        Keyring::unwrap_under(material, w).ok_or_else(|| Error::Internal("a stored data key does not open".into()))
    }

    /// Whether `who` may use the key a repository is sealed under for `action`, and that it is
    /// usable (pull and push decide this before touching content).
    pub(crate) async fn check_use(&self, who: &Caller, key_id: &str, action: &str) -> Result<()> {
        let k = self.load(key_id).await?.ok_or_else(|| self.deleted(key_id))?;
        self.check(who, action, &k).await?;
        Self::usable(&k)
    }

    fn deleted(&self, key_id: &str) -> Error {
        Error::Conflict(Conflict::KmsKeyState {
            arn: format!("KMS key {key_id}"),
            state: "Deleted".into(),
            deletion: None,
        })
    }

    // ---- periodic work ----

    /// Deletes keys whose waiting period is over, and rotates keys whose rotation is due.
    pub(crate) async fn maintain(&self) -> Result<(u64, u64)> {
        let now = ms_now();
        let mut deleted = 0;
        for id in self.meta.kms_keys_due_for_deletion(now).await? {
            let repos = self.meta.repos_with_encryption_key(&id).await?;
            self.meta.delete_kms_key(&id).await?;
            self.forget(&id);
            tracing::warn!(key = %id, repositories = ?repos, "KMS key deleted after its waiting period: what it sealed can no longer be read");
            deleted += 1;
        }
        let mut rotated = 0;
        for id in self.meta.kms_keys_due_for_rotation(now).await? {
            if let Some(k) = self.load(&id).await? {
                self.rotate(&k, false).await?;
                rotated += 1;
            }
        }
        Ok((deleted, rotated))
    }
}

/// Re-wrapping after rotations: every data key wrapped under older material (of a KMS key, or
/// a master key other than the keyring's newest) is wrapped again under the newest, without
/// touching content.
impl Kms<'_> {
    pub(crate) async fn rewrap_all(&self, progress: &(dyn Fn(&str, u64) + Sync)) -> Result<u64> {
        let ring = &self.settings.master_keys;
        let mut done = 0;
        for key_id in self.meta.blob_object_key_ids().await? {
            // The key the data keys move to: the keyring's active one, or the KMS key's newest
            // material (loaded once for all its objects).
            let kms = if key_id.starts_with(berth_crypto::keyring::LOCAL) {
                if key_id == ring.active_id() {
                    continue;
                }
                None
            } else {
                match self.load(&key_id).await? {
                    Some(k) => Some(k),
                    None => continue,
                }
            };
            let below = match &kms {
                None => i64::MAX,
                Some(k) => match k.newest() {
                    Some((v, _)) => *v,
                    None => continue,
                },
            };
            loop {
                let batch = self.meta.objects_to_rewrap(&key_id, below, 500).await?;
                if batch.is_empty() {
                    break;
                }
                let mut changed = 0;
                for (digest, scope, old) in batch {
                    let corrupt = || Error::Internal(format!("blob {digest}: its stored data key does not open"));
                    let w = WrappedKey::decode(&old).ok_or_else(corrupt)?;
                    let new = match &kms {
                        None => ring.wrap(&ring.unwrap(&w).ok_or_else(corrupt)?),
                        Some(k) => {
                            let old_material = k.version(w.version as i64).ok_or_else(corrupt)?;
                            let key = Keyring::unwrap_under(old_material, &w).ok_or_else(corrupt)?;
                            let (v, m) = k.newest().ok_or_else(corrupt)?;
                            Keyring::wrap_under(m, &key_id, *v as u32, &key)
                        }
                    };
                    let version = new.version as i64;
                    if self.meta.rewrap_object(&digest, &scope, &old, &new.key_id, version, &new.encode()).await? {
                        changed += 1;
                        done += 1;
                        progress(&digest, done);
                    }
                }
                if changed == 0 {
                    break;
                }
            }
        }
        Ok(done)
    }
}
