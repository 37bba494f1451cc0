//! Who a caller is: access keys and their secrets (sealed in the store), sessions from
//! AssumeRole (stateless: the session token is signed and its secret derived from it, so any
//! node accepts what any node issued), the tokens Berth issued, and the identity behind a
//! principal (its ARN, ids and identity policies) that access decisions evaluate.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_core::policy::{self, Caller as PolicyCaller, PolicyKind};
use serde::{Deserialize, Serialize};

use crate::caller::{Identity, Principal, ResolvedKey};
use crate::core::domain;
use crate::error::{Error, Result, Unauthenticated};
use crate::tokens::{Scope, now_secs};

/// AWS's managed policies for ECR, under their names, with their published documents.
const AWS_MANAGED: &[(&str, &str, &str)] = &[
    (
        "AmazonEC2ContainerRegistryReadOnly",
        "Provides read-only access to Amazon EC2 Container Registry repositories.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability","ecr:GetDownloadUrlForLayer","ecr:GetRepositoryPolicy","ecr:DescribeRepositories","ecr:ListImages","ecr:DescribeImages","ecr:BatchGetImage","ecr:GetLifecyclePolicy","ecr:GetLifecyclePolicyPreview","ecr:ListTagsForResource","ecr:DescribeImageScanFindings"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonEC2ContainerRegistryPowerUser",
        "Provides full access to Amazon EC2 Container Registry repositories, but does not allow repository \
         deletion or policy changes.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability","ecr:GetDownloadUrlForLayer","ecr:GetRepositoryPolicy","ecr:DescribeRepositories","ecr:ListImages","ecr:DescribeImages","ecr:BatchGetImage","ecr:GetLifecyclePolicy","ecr:GetLifecyclePolicyPreview","ecr:ListTagsForResource","ecr:DescribeImageScanFindings","ecr:InitiateLayerUpload","ecr:UploadLayerPart","ecr:CompleteLayerUpload","ecr:PutImage"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonEC2ContainerRegistryFullAccess",
        "Provides administrative access to Amazon ECR resources",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:*","cloudtrail:LookupEvents"],"Resource":"*"},{"Effect":"Allow","Action":["iam:CreateServiceLinkedRole"],"Resource":"*","Condition":{"StringEquals":{"iam:AWSServiceName":["replication.ecr.amazonaws.com"]}}}]}"#,
    ),
    (
        "AmazonEC2ContainerRegistryPullOnly",
        "Provides permissions to pull images from Amazon ECR repositories.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:BatchGetImage","ecr:GetDownloadUrlForLayer","ecr:BatchImportUpstreamImage"],"Resource":"*"}]}"#,
    ),
];

pub(crate) const AWS_POLICY_PREFIX: &str = "arn:aws:iam::aws:policy/";

/// An AWS-managed policy by ARN: (name, description, document).
pub fn aws_managed_policy(arn: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let name = arn.strip_prefix(AWS_POLICY_PREFIX)?;
    AWS_MANAGED.iter().find(|(n, _, _)| *n == name).copied()
}

pub fn aws_managed_policies() -> impl Iterator<Item = (String, &'static str, &'static str, &'static str)> {
    AWS_MANAGED.iter().map(|(n, d, doc)| (format!("{AWS_POLICY_PREFIX}{n}"), *n, *d, *doc))
}

/// User, group or role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
    Role,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Role => "role",
        }
    }

    pub(crate) fn id_prefix(self) -> &'static str {
        match self {
            Kind::User => "AIDA",
            Kind::Group => "AGPA",
            Kind::Role => "AROA",
        }
    }

    /// `User`, `Group`, `Role`: as IAM's field names and messages write them.
    pub fn capitalized(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
            Kind::Role => "Role",
        }
    }

    pub(crate) fn max_name(self) -> usize {
        if self == Kind::Group { 128 } else { 64 }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct SessionClaims {
    /// Temporary access key id.
    pub a: String,
    /// Role ARN.
    pub r: String,
    /// Role unique id.
    pub i: String,
    /// Session name.
    pub s: String,
    /// Expiry, Unix seconds.
    pub e: i64,
}

/// Parts of a principal ARN.
enum Who2<'a> {
    Root { account: &'a str },
    User { account: &'a str, name: &'a str },
    Session { account: &'a str, role: &'a str, session: &'a str },
}

fn parse_principal_arn(arn: &str) -> Option<Who2<'_>> {
    if let Some(rest) = arn.strip_prefix("arn:aws:iam::") {
        let (account, res) = rest.split_once(':')?;
        if res == "root" {
            return Some(Who2::Root { account });
        }
        let name = res.strip_prefix("user/")?.rsplit('/').next()?;
        return Some(Who2::User { account, name });
    }
    let rest = arn.strip_prefix("arn:aws:sts::")?;
    let (account, res) = rest.split_once(':')?;
    let (role, session) = res.strip_prefix("assumed-role/")?.split_once('/')?;
    Some(Who2::Session { account, role, session })
}

/// Account and role name from a role ARN (`arn:aws:iam::123456789012:role/path/Name`).
pub(crate) fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, res) = rest.split_once(':')?;
    let name = res.strip_prefix("role/")?.rsplit('/').next()?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()).then_some((account, name))
}

pub(crate) fn entity_arn(account: &str, kind: Kind, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:{}{path}{name}", kind.as_str())
}

domain! {
    /// Authentication: from a credential to the principal, and from a principal to its identity.
    Identities
}

/// The account a principal belongs to (for IAM calls: the account they manage).
pub fn principal_account(p: &Principal) -> String {
    match parse_principal_arn(&p.arn) {
        Some(Who2::Root { account } | Who2::User { account, .. } | Who2::Session { account, .. }) => {
            account.to_string()
        }
        None => String::new(),
    }
}

pub(crate) fn seal_aad(akid: &str) -> Vec<u8> {
    format!("berth access key {akid}").into_bytes()
}

pub(crate) fn gone(p: &Principal) -> Error {
    Error::unauthenticated(format!("the principal {} no longer exists", p.arn))
}

impl Identities<'_> {
    /// Whether `account` exists on this server (the configured one always does).
    pub async fn account_exists(&self, account: &str) -> Result<bool> {
        if account == self.settings.registry_id {
            return Ok(true);
        }
        Ok(self.meta.accounts().await?.iter().any(|(a, _)| a == account))
    }

    /// The secret and principal of an access key; `None` when unknown or inactive.
    pub(crate) async fn resolve_key(&self, akid: &str) -> Result<Option<(String, Principal)>> {
        let auth = self.auth();
        if let Some(k) = auth.key(akid) {
            return Ok(Some((k.secret.clone(), auth.principal_of(k))));
        }
        if let Some(hit) = self.caches.iam.get(&self.caches.iam.keys, akid) {
            return Ok(hit.map(|r| (r.secret, r.principal)));
        }
        let epoch = self.caches.iam.epoch.load(Ordering::SeqCst);
        let resolved = match self.meta.key(akid).await? {
            Some(row) if row.status == "Active" => {
                let secret = self
                    .settings
                    .seal_key
                    .open(&row.secret, &seal_aad(akid))
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "the secret of access key {akid} does not open with this server's secrets key; was \
                             the key file replaced?"
                        ))
                    })?;
                let arn = if row.user_name.is_empty() {
                    crate::caller::root_arn(&row.account)
                } else {
                    match self.meta.entity(&row.account, "user", &row.user_name).await? {
                        Some(u) => entity_arn(&u.account, Kind::User, &u.path, &u.name),
                        None => return Ok(None),
                    }
                };
                Some(ResolvedKey {
                    secret,
                    principal: Principal { arn, access_key_id: akid.to_string(), expires: None },
                })
            }
            _ => None,
        };
        self.caches.iam.put(&self.caches.iam.keys, epoch, akid, resolved.clone());
        Ok(resolved.map(|r| (r.secret, r.principal)))
    }

    /// Whether a token issued to `p` still stands: its key exists and is active (a session's
    /// tokens stand until the session ends, which the token's own expiry already bounds).
    pub(crate) async fn principal_valid(&self, p: &Principal) -> Result<bool> {
        if p.access_key_id.starts_with("ASIA") {
            return Ok(true);
        }
        Ok(self.resolve_key(&p.access_key_id).await?.is_some_and(|(_, q)| q.arn == p.arn))
    }

    /// The identity behind a principal, or `None` if it no longer exists.
    pub async fn of(&self, p: &Principal) -> Result<Option<Arc<Identity>>> {
        if let Some(hit) = self.caches.iam.get(&self.caches.iam.identities, &p.arn) {
            return Ok(hit);
        }
        let epoch = self.caches.iam.epoch.load(Ordering::SeqCst);
        let id = self.load_identity(&p.arn).await?.map(Arc::new);
        self.caches.iam.put(&self.caches.iam.identities, epoch, &p.arn, id.clone());
        Ok(id)
    }

    async fn load_identity(&self, arn: &str) -> Result<Option<Identity>> {
        let Some(parsed) = parse_principal_arn(arn) else { return Ok(None) };
        let (account, kind, name, caller) = match parsed {
            Who2::Root { account } => {
                if !self.account_exists(account).await? {
                    return Ok(None);
                }
                let caller = PolicyCaller {
                    arn: arn.to_string(),
                    also_known_as: Vec::new(),
                    account: account.to_string(),
                    username: None,
                    userid: account.to_string(),
                    is_root: true,
                };
                return Ok(Some(Identity { caller, policies: Vec::new(), uses_resource_tags: false }));
            }
            Who2::User { account, name } => {
                let Some(u) = self.meta.entity(account, "user", name).await? else { return Ok(None) };
                let caller = PolicyCaller {
                    arn: arn.to_string(),
                    also_known_as: Vec::new(),
                    account: account.to_string(),
                    username: Some(u.name.clone()),
                    userid: u.id.clone(),
                    is_root: false,
                };
                (account, "user", u.name, caller)
            }
            Who2::Session { account, role, session } => {
                let Some(r) = self.meta.entity(account, "role", role).await? else { return Ok(None) };
                let caller = PolicyCaller {
                    arn: arn.to_string(),
                    also_known_as: vec![entity_arn(account, Kind::Role, &r.path, &r.name)],
                    account: account.to_string(),
                    username: None,
                    userid: format!("{}:{session}", r.id),
                    is_root: false,
                };
                (account, "role", r.name, caller)
            }
        };
        let found = self.meta.identity_policies(account, kind, &name).await?;
        let mut policies = Vec::new();
        let mut uses_resource_tags = false;
        let docs = found.inline.iter().map(String::as_str).chain(
            found
                .attached
                .iter()
                .filter_map(|(arn, doc)| doc.as_deref().or_else(|| aws_managed_policy(arn).map(|(_, _, d)| d))),
        );
        for d in docs {
            // Every stored document was checked when stored; one that no longer parses grants nothing.
            if let Ok(p) = policy::parse(d, PolicyKind::Identity) {
                uses_resource_tags |= d.to_ascii_lowercase().contains("resourcetag/");
                policies.push(p);
            }
        }
        Ok(Some(Identity { caller, policies, uses_resource_tags }))
    }

    pub(crate) fn session_secret(&self, token: &str) -> String {
        use base64::Engine;
        let mac = berth_crypto::sigv4::hmac(self.tokens().session_secrets.as_bytes(), token.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac)[..40].to_string()
    }

    /// The secret and principal of temporary credentials, from their session token.
    pub(crate) fn resolve_session(&self, akid: &str, token: &str) -> Result<(String, Principal)> {
        let bad = || Error::Unauthenticated {
            reason: "The security token included in the request is invalid.".into(),
            why: Unauthenticated::InvalidToken,
        };
        let payload = self.tokens().sessions.verify(token).ok_or_else(bad)?;
        let c: SessionClaims = serde_json::from_slice(&payload).map_err(|_| bad())?;
        if c.a != akid {
            return Err(bad());
        }
        if c.e <= now_secs() {
            return Err(Error::Unauthenticated {
                reason: "The security token included in the request is expired".into(),
                why: Unauthenticated::ExpiredToken,
            });
        }
        let (account, role) = parse_role_arn(&c.r).ok_or_else(bad)?;
        let arn = format!("arn:aws:sts::{account}:assumed-role/{role}/{}", c.s);
        Ok((self.session_secret(token), Principal { arn, access_key_id: akid.to_string(), expires: Some(c.e) }))
    }

    /// Checks a `docker login` password and that the key it was issued to still stands.
    pub async fn check_login(&self, password: &str) -> Result<(Principal, i64)> {
        let (p, e) = self.auth().check_login(password)?;
        self.check_standing(&p, "authorization token").await?;
        Ok((p, e))
    }

    /// [`Auth::check_bearer`], and that the key it was issued to still stands.
    pub async fn check_bearer(&self, token: &str) -> Result<(Option<Principal>, Vec<Scope>)> {
        let (p, scopes) = self.auth().check_bearer(token)?;
        if let Some(p) = &p {
            self.check_standing(p, "bearer token").await?;
        }
        Ok((p, scopes))
    }

    async fn check_standing(&self, p: &Principal, what: &str) -> Result<()> {
        if self.principal_valid(p).await? {
            Ok(())
        } else {
            Err(Error::unauthenticated(format!(
                "the {what} was issued to an access key that no longer exists or is inactive; log in again"
            )))
        }
    }

    /// The secret and principal for a SigV4 request's access key (with its session token, for
    /// temporary credentials). `Ok(None)`: no such key.
    pub async fn signing_key(&self, akid: &str, session_token: Option<&str>) -> Result<Option<(String, Principal)>> {
        match session_token {
            Some(t) if akid.starts_with("ASIA") => self.resolve_session(akid, t).map(Some),
            _ => self.resolve_key(akid).await,
        }
    }
}
