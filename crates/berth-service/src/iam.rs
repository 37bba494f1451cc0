//! IAM and STS as ECR callers know them: accounts, users with access keys, groups, roles with
//! trust policies, inline and managed policies (AWS's managed ECR policies built in), temporary
//! credentials from `AssumeRole`, and the resolution of an authenticated principal into the
//! identity the policy evaluator needs. Access-key secrets are stored sealed (AES-256-GCM under a
//! key outside the database); session credentials are stateless: the session token is signed
//! and the session's secret is derived from it, so any node accepts what any node issued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use berth_core::policy::{self, Caller, Decision, Policy, PolicyKind};
use berth_meta::{EntityRow, KeyRow, ManagedPolicyRow};
use serde::{Deserialize, Serialize};

use crate::auth::{AccessKey, Principal, now_secs};
use crate::{Error, Registry, Result, Who};

/// Most access keys a user may have, as IAM's quota.
pub const MAX_KEYS_PER_USER: usize = 2;
/// Most versions a managed policy keeps.
pub const MAX_POLICY_VERSIONS: i64 = 5;
pub const MAX_MANAGED_POLICY: usize = 6_144;
pub const MAX_USER_POLICY: usize = 2_048;
pub const MAX_GROUP_POLICY: usize = 5_120;
pub const MAX_ROLE_POLICY: usize = 10_240;
pub const MAX_TRUST_POLICY: usize = 2_048;
/// Session lengths AssumeRole accepts, seconds.
pub const MIN_SESSION: i64 = 900;
pub const MAX_SESSION: i64 = 43_200;
pub const DEFAULT_SESSION: i64 = 3_600;

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

const AWS_POLICY_PREFIX: &str = "arn:aws:iam::aws:policy/";

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

    fn id_prefix(self) -> &'static str {
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

    fn max_name(self) -> usize {
        if self == Kind::Group { 128 } else { 64 }
    }

    fn max_inline(self) -> usize {
        match self {
            Kind::User => MAX_USER_POLICY,
            Kind::Group => MAX_GROUP_POLICY,
            Kind::Role => MAX_ROLE_POLICY,
        }
    }
}

/// A user, group or role as the IAM API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub kind: Kind,
    pub name: String,
    pub id: String,
    pub arn: String,
    pub path: String,
    pub created_at: i64,
    /// A role's trust policy.
    pub trust_policy: Option<String>,
    pub description: Option<String>,
    pub max_session: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub user_name: String,
    pub status: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedPolicy {
    pub arn: String,
    pub name: String,
    pub id: String,
    pub path: String,
    pub description: Option<String>,
    pub default_version: String,
    pub attachments: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub version: String,
    pub document: String,
    pub is_default: bool,
    pub created_at: i64,
}

/// What CreateUser, CreateGroup and CreateRole ask for.
#[derive(Debug, Clone, Copy)]
pub struct NewEntity<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub path: Option<&'a str>,
    /// A role's trust policy (required for roles).
    pub trust_policy: Option<&'a str>,
    pub description: Option<&'a str>,
    pub max_session: Option<i64>,
}

/// Temporary credentials from AssumeRole.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_key_id: String,
    pub secret: String,
    pub token: String,
    /// Unix seconds.
    pub expires: i64,
    pub assumed_role_id: String,
    pub arn: String,
}

/// Who a principal is, for the evaluator: its ARN, account and ids, and the identity policies
/// that apply to it.
#[derive(Debug)]
pub struct Identity {
    pub caller: Caller,
    pub policies: Vec<Policy>,
    /// Whether a policy tests resource tags (then a decision reads the repository's tags).
    pub uses_resource_tags: bool,
}

#[derive(Serialize, Deserialize)]
struct SessionClaims {
    /// Temporary access key id.
    a: String,
    /// Role ARN.
    r: String,
    /// Role unique id.
    i: String,
    /// Session name.
    s: String,
    /// Expiry, Unix seconds.
    e: i64,
}

/// What an access key id resolves to.
#[derive(Clone)]
pub(crate) struct ResolvedKey {
    secret: String,
    principal: Principal,
}

/// Keys and identities read from the store, for the request path; cleared by every IAM write
/// (the same epoch rule as the repository-policy cache). Only with SQLite: another node may
/// change IAM behind a PostgreSQL-backed node's back.
#[derive(Default)]
pub(crate) struct IamCache {
    enabled: bool,
    epoch: AtomicU64,
    keys: RwLock<HashMap<String, Option<ResolvedKey>>>,
    identities: RwLock<HashMap<String, Option<Arc<Identity>>>>,
}

impl IamCache {
    pub fn new(enabled: bool) -> Self {
        IamCache { enabled, ..Default::default() }
    }

    fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.identities.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn get<T: Clone>(&self, map: &RwLock<HashMap<String, T>>, k: &str) -> Option<T> {
        if !self.enabled {
            return None;
        }
        map.read().unwrap_or_else(|e| e.into_inner()).get(k).cloned()
    }

    fn put<T>(&self, map: &RwLock<HashMap<String, T>>, epoch: u64, k: &str, v: T) {
        if !self.enabled {
            return;
        }
        let mut m = map.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::SeqCst) == epoch && m.len() < 100_000 {
            m.insert(k.to_string(), v);
        }
    }
}

fn random_id(prefix: &str) -> String {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    format!("{prefix}{}", berth_crypto::random_string(UPPER, 17))
}

fn no_such(kind: Kind, name: &str) -> Error {
    Error::NoSuchEntity(format!("The {} with name {name} cannot be found.", kind.as_str()))
}

/// IAM names: letters, digits and `+=,.@_-`.
fn check_name(what: &str, name: &str, max: usize) -> Result<()> {
    let ok =
        (1..=max).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy constraint: Member must \
             satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and {max}"
        )))
    }
}

fn check_path(path: &str) -> Result<()> {
    let ok = path.len() <= 512
        && path.starts_with('/')
        && path.ends_with('/')
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "The specified value for path is invalid. It must begin and end with / and contain only alphanumeric \
             characters and/or / characters: {path:?}"
        )))
    }
}

fn check_document(doc: &str, max: usize, kind: PolicyKind) -> Result<Policy> {
    if doc.is_empty() || doc.chars().count() > max {
        return Err(Error::LimitExceeded(format!(
            "Cannot exceed quota for PolicySize: {max} (this document has {} characters)",
            doc.chars().count()
        )));
    }
    policy::parse(doc, kind).map_err(|e| Error::MalformedPolicyDocument(e.to_string()))
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
fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, res) = rest.split_once(':')?;
    let name = res.strip_prefix("role/")?.rsplit('/').next()?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()).then_some((account, name))
}

fn entity_arn(account: &str, kind: Kind, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:{}{path}{name}", kind.as_str())
}

fn to_entity(r: EntityRow, kind: Kind) -> Entity {
    Entity {
        arn: entity_arn(&r.account, kind, &r.path, &r.name),
        kind,
        name: r.name,
        id: r.id,
        path: r.path,
        created_at: r.created_at,
        trust_policy: r.document,
        description: r.description,
        max_session: r.max_session,
    }
}

fn to_policy(r: ManagedPolicyRow) -> ManagedPolicy {
    ManagedPolicy {
        arn: r.arn,
        name: r.name,
        id: r.id,
        path: r.path,
        description: r.description,
        default_version: r.default_version,
        attachments: r.attachments,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

impl Registry {
    fn seal_aad(akid: &str) -> Vec<u8> {
        format!("berth access key {akid}").into_bytes()
    }

    fn iam_changed(&self) {
        self.iam.invalidate();
    }

    /// Whether `account` exists on this server (the configured one always does).
    pub async fn account_exists(&self, account: &str) -> Result<bool> {
        if account == self.settings.registry_id {
            return Ok(true);
        }
        Ok(self.meta.accounts().await?.iter().any(|(a, _)| a == account))
    }

    /// Adds an account and a root access key for it. The secret is returned only now.
    pub async fn create_account(&self, account: &str) -> Result<AccessKey> {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Validation(format!("an account id is 12 digits, not {account:?}")));
        }
        if account == self.settings.registry_id || !self.meta.create_account(account).await? {
            return Err(Error::EntityAlreadyExists(format!("Account {account} already exists.")));
        }
        let key = AccessKey::generate(crate::auth::root_arn(account));
        self.store_key(account, "", &key).await?;
        Ok(key)
    }

    pub async fn accounts(&self) -> Result<Vec<(String, i64)>> {
        Ok(self.meta.accounts().await?)
    }

    async fn store_key(&self, account: &str, user: &str, key: &AccessKey) -> Result<()> {
        let sealed = self.settings.seal_key.seal(key.secret.as_bytes(), &Self::seal_aad(&key.id));
        self.meta
            .create_key(&KeyRow {
                id: key.id.clone(),
                account: account.to_string(),
                user_name: user.to_string(),
                secret: sealed,
                status: "Active".into(),
                created_at: berth_meta::now_ms(),
            })
            .await?;
        self.iam_changed();
        Ok(())
    }

    /// The secret and principal of an access key; `None` when unknown or inactive.
    pub(crate) async fn resolve_key(&self, akid: &str) -> Result<Option<(String, Principal)>> {
        let auth = self.auth();
        if let Some(k) = auth.key(akid) {
            return Ok(Some((k.secret.clone(), auth.principal_of(k))));
        }
        if let Some(hit) = self.iam.get(&self.iam.keys, akid) {
            return Ok(hit.map(|r| (r.secret, r.principal)));
        }
        let epoch = self.iam.epoch.load(Ordering::SeqCst);
        let resolved = match self.meta.key(akid).await? {
            Some(row) if row.status == "Active" => {
                let secret = self
                    .settings
                    .seal_key
                    .open(&row.secret, &Self::seal_aad(akid))
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "the secret of access key {akid} does not open with this server's secrets key; was \
                             the key file replaced?"
                        ))
                    })?;
                let arn = if row.user_name.is_empty() {
                    crate::auth::root_arn(&row.account)
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
        self.iam.put(&self.iam.keys, epoch, akid, resolved.clone());
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
    pub async fn identity(&self, p: &Principal) -> Result<Option<Arc<Identity>>> {
        if let Some(hit) = self.iam.get(&self.iam.identities, &p.arn) {
            return Ok(hit);
        }
        let epoch = self.iam.epoch.load(Ordering::SeqCst);
        let id = self.load_identity(&p.arn).await?.map(Arc::new);
        self.iam.put(&self.iam.identities, epoch, &p.arn, id.clone());
        Ok(id)
    }

    async fn load_identity(&self, arn: &str) -> Result<Option<Identity>> {
        let Some(parsed) = parse_principal_arn(arn) else { return Ok(None) };
        let (account, kind, name, caller) = match parsed {
            Who2::Root { account } => {
                if !self.account_exists(account).await? {
                    return Ok(None);
                }
                let caller = Caller {
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
                let caller = Caller {
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
                let caller = Caller {
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

    /// The account a principal belongs to (for IAM calls: the account they manage).
    pub fn principal_account(p: &Principal) -> String {
        match parse_principal_arn(&p.arn) {
            Some(Who2::Root { account } | Who2::User { account, .. } | Who2::Session { account, .. }) => {
                account.to_string()
            }
            None => String::new(),
        }
    }

    /// Decides an IAM or STS action by the caller's identity policies alone (IAM resources have
    /// no resource policies; a role's trust policy is checked by AssumeRole itself).
    pub async fn check_iam(&self, who: &Who, action: &str, resource: &str) -> Result<()> {
        let Some(p) = &who.principal else {
            return Err(Error::AccessDenied(format!("anonymous callers may not perform {action}")));
        };
        let id = self.identity(p).await?.ok_or_else(|| gone(p))?;
        let refs: Vec<&Policy> = id.policies.iter().collect();
        let ctx = self.context(who, Some(&id.caller), &[]);
        let req = policy::Request {
            action,
            resource,
            resource_account: &id.caller.account,
            caller: Some(&id.caller),
            context: &ctx,
        };
        match policy::evaluate(&req, &refs, None) {
            Decision::Allow => Ok(()),
            d => Err(Error::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {resource} {}",
                p.arn,
                if d == Decision::ExplicitDeny {
                    "with an explicit deny in an identity-based policy"
                } else {
                    "because no identity-based policy allows the action"
                }
            ))),
        }
    }

    // ---- users, groups, roles ----

    pub async fn create_entity(&self, account: &str, new: NewEntity<'_>) -> Result<Entity> {
        let NewEntity { kind, name, path, trust_policy, description, max_session } = new;
        check_name(&format!("{}Name", kind.capitalized()), name, kind.max_name())?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        if kind == Kind::Role {
            let doc = trust_policy.ok_or_else(|| {
                Error::Validation("CreateRole needs AssumeRolePolicyDocument (the role's trust policy)".into())
            })?;
            check_document(doc, MAX_TRUST_POLICY, PolicyKind::Resource)?;
        }
        if let Some(s) = max_session
            && !(DEFAULT_SESSION..=MAX_SESSION).contains(&s)
        {
            return Err(Error::Validation(format!(
                "The requested MaxSessionDuration {s} is out of range: it must be {DEFAULT_SESSION} to {MAX_SESSION} \
                 seconds"
            )));
        }
        if self.meta.entity(account, kind.as_str(), name).await?.is_some() {
            return Err(Error::EntityAlreadyExists(format!("{} with name {name} already exists.", kind.capitalized())));
        }
        let row = EntityRow {
            account: account.to_string(),
            kind: kind.as_str().to_string(),
            name: name.to_string(),
            id: random_id(kind.id_prefix()),
            path: path.to_string(),
            document: trust_policy.map(str::to_string),
            description: description.map(str::to_string),
            max_session: if kind == Kind::Role { Some(max_session.unwrap_or(DEFAULT_SESSION)) } else { None },
            created_at: berth_meta::now_ms(),
        };
        if !self.meta.create_entity(&row).await? {
            return Err(Error::EntityAlreadyExists(format!("{} with name {name} already exists.", kind.capitalized())));
        }
        self.iam_changed();
        Ok(to_entity(row, kind))
    }

    pub async fn entity(&self, account: &str, kind: Kind, name: &str) -> Result<Entity> {
        let row = self.meta.entity(account, kind.as_str(), name).await?.ok_or_else(|| no_such(kind, name))?;
        Ok(to_entity(row, kind))
    }

    pub async fn entities(&self, account: &str, kind: Kind, path_prefix: Option<&str>) -> Result<Vec<Entity>> {
        let rows = self.meta.entities(account, kind.as_str(), path_prefix.unwrap_or("/")).await?;
        Ok(rows.into_iter().map(|r| to_entity(r, kind)).collect())
    }

    /// Deletes a user, group or role that nothing hangs off any more (as IAM requires).
    pub async fn delete_entity(&self, account: &str, kind: Kind, name: &str) -> Result<()> {
        let e = self.entity(account, kind, name).await?;
        let deps = self.meta.entity_dependents(account, kind.as_str(), &e.name).await?;
        let left: Vec<String> = deps.iter().filter(|(_, n)| *n > 0).map(|(what, n)| format!("{n} {what}")).collect();
        if !left.is_empty() {
            return Err(Error::DeleteConflict(format!(
                "Cannot delete entity, must remove {} first ({}).",
                deps.iter().filter(|(_, n)| *n > 0).map(|(w, _)| *w).collect::<Vec<_>>().join(", "),
                left.join(", ")
            )));
        }
        self.meta.delete_entity(account, kind.as_str(), &e.name).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn update_trust_policy(&self, account: &str, role: &str, doc: &str) -> Result<()> {
        let e = self.entity(account, Kind::Role, role).await?;
        check_document(doc, MAX_TRUST_POLICY, PolicyKind::Resource)?;
        self.meta.set_entity_document(account, "role", &e.name, doc).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn add_user_to_group(&self, account: &str, group: &str, user: &str) -> Result<()> {
        let g = self.entity(account, Kind::Group, group).await?;
        let u = self.entity(account, Kind::User, user).await?;
        self.meta.add_member(account, &g.name, &u.name).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn remove_user_from_group(&self, account: &str, group: &str, user: &str) -> Result<()> {
        let g = self.entity(account, Kind::Group, group).await?;
        let u = self.entity(account, Kind::User, user).await?;
        if !self.meta.remove_member(account, &g.name, &u.name).await? {
            return Err(Error::NoSuchEntity(format!("User {} is not in group {}.", u.name, g.name)));
        }
        self.iam_changed();
        Ok(())
    }

    /// A group and its users.
    pub async fn group(&self, account: &str, group: &str) -> Result<(Entity, Vec<Entity>)> {
        let g = self.entity(account, Kind::Group, group).await?;
        let mut users = Vec::new();
        for u in self.meta.members(account, &g.name, false).await? {
            if let Ok(e) = self.entity(account, Kind::User, &u).await {
                users.push(e);
            }
        }
        Ok((g, users))
    }

    pub async fn groups_for_user(&self, account: &str, user: &str) -> Result<Vec<Entity>> {
        let u = self.entity(account, Kind::User, user).await?;
        let mut out = Vec::new();
        for g in self.meta.members(account, &u.name, true).await? {
            if let Ok(e) = self.entity(account, Kind::Group, &g).await {
                out.push(e);
            }
        }
        Ok(out)
    }

    // ---- access keys ----

    pub async fn create_access_key(&self, account: &str, user: &str) -> Result<(AccessKey, KeyInfo)> {
        let u = self.entity(account, Kind::User, user).await?;
        if self.meta.keys_of(account, &u.name).await?.len() >= MAX_KEYS_PER_USER {
            return Err(Error::LimitExceeded(format!(
                "Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}"
            )));
        }
        let key = AccessKey::generate(u.arn.clone());
        self.store_key(account, &u.name, &key).await?;
        let info = KeyInfo {
            id: key.id.clone(),
            user_name: u.name,
            status: "Active".into(),
            created_at: berth_meta::now_ms(),
        };
        Ok((key, info))
    }

    pub async fn access_keys(&self, account: &str, user: &str) -> Result<Vec<KeyInfo>> {
        let u = self.entity(account, Kind::User, user).await?;
        Ok(self
            .meta
            .keys_of(account, &u.name)
            .await?
            .into_iter()
            .map(|k| KeyInfo { id: k.id, user_name: k.user_name, status: k.status, created_at: k.created_at })
            .collect())
    }

    pub async fn set_access_key_status(&self, account: &str, user: &str, id: &str, status: &str) -> Result<()> {
        if status != "Active" && status != "Inactive" {
            return Err(Error::Validation(format!(
                "1 validation error detected: Value '{status}' at 'status' failed to satisfy constraint: Member must \
                 satisfy enum value set: [Active, Inactive]"
            )));
        }
        let u = self.entity(account, Kind::User, user).await?;
        if !self.meta.set_key_status(account, &u.name, id, status).await? {
            return Err(Error::NoSuchEntity(format!("The Access Key with id {id} cannot be found.")));
        }
        self.iam_changed();
        Ok(())
    }

    pub async fn delete_access_key(&self, account: &str, user: &str, id: &str) -> Result<()> {
        let u = self.entity(account, Kind::User, user).await?;
        if !self.meta.delete_key(account, &u.name, id).await? {
            return Err(Error::NoSuchEntity(format!("The Access Key with id {id} cannot be found.")));
        }
        self.iam_changed();
        Ok(())
    }

    // ---- inline policies ----

    pub async fn put_inline_policy(&self, account: &str, kind: Kind, owner: &str, name: &str, doc: &str) -> Result<()> {
        let e = self.entity(account, kind, owner).await?;
        check_name("policyName", name, 128)?;
        check_document(doc, kind.max_inline(), PolicyKind::Identity)?;
        self.meta.put_inline_policy(account, kind.as_str(), &e.name, name, doc).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn inline_policy(&self, account: &str, kind: Kind, owner: &str, name: &str) -> Result<String> {
        let e = self.entity(account, kind, owner).await?;
        self.meta.inline_policy(account, kind.as_str(), &e.name, name).await?.ok_or_else(|| {
            Error::NoSuchEntity(format!("The {} policy with name {name} cannot be found.", kind.as_str()))
        })
    }

    pub async fn inline_policy_names(&self, account: &str, kind: Kind, owner: &str) -> Result<Vec<String>> {
        let e = self.entity(account, kind, owner).await?;
        Ok(self.meta.inline_policy_names(account, kind.as_str(), &e.name).await?)
    }

    pub async fn delete_inline_policy(&self, account: &str, kind: Kind, owner: &str, name: &str) -> Result<()> {
        let e = self.entity(account, kind, owner).await?;
        if !self.meta.delete_inline_policy(account, kind.as_str(), &e.name, name).await? {
            return Err(Error::NoSuchEntity(format!("The {} policy with name {name} cannot be found.", kind.as_str())));
        }
        self.iam_changed();
        Ok(())
    }

    // ---- managed policies ----

    pub async fn create_managed_policy(
        &self,
        account: &str,
        name: &str,
        path: Option<&str>,
        doc: &str,
        description: Option<&str>,
    ) -> Result<ManagedPolicy> {
        check_name("policyName", name, 128)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        check_document(doc, MAX_MANAGED_POLICY, PolicyKind::Identity)?;
        let now = berth_meta::now_ms();
        let row = ManagedPolicyRow {
            arn: format!("arn:aws:iam::{account}:policy{path}{name}"),
            account: account.to_string(),
            name: name.to_string(),
            id: random_id("ANPA"),
            path: path.to_string(),
            description: description.map(str::to_string),
            default_version: "v1".into(),
            next_version: 2,
            created_at: now,
            updated_at: now,
            attachments: 0,
        };
        if self.meta.managed_policies(account).await?.iter().any(|p| p.name == name)
            || !self.meta.create_managed_policy(&row, doc).await?
        {
            return Err(Error::EntityAlreadyExists(format!(
                "A policy called {name} already exists. Duplicate names are not allowed."
            )));
        }
        self.iam_changed();
        Ok(to_policy(row))
    }

    /// A managed policy: one of the account's, or AWS's.
    pub async fn managed_policy(&self, arn: &str) -> Result<ManagedPolicy> {
        if let Some((name, desc, _)) = aws_managed_policy(arn) {
            return Ok(ManagedPolicy {
                arn: arn.to_string(),
                name: name.to_string(),
                id: format!("ANPA{}", &berth_crypto::sha256_hex(name.as_bytes())[..17].to_ascii_uppercase()),
                path: "/".into(),
                description: Some(desc.to_string()),
                default_version: "v1".into(),
                attachments: 0,
                created_at: 0,
                updated_at: 0,
            });
        }
        let row = self.meta.managed_policy(arn).await?.ok_or_else(|| no_policy(arn))?;
        Ok(to_policy(row))
    }

    /// `scope`: `All`, `AWS` or `Local`, as ListPolicies.
    pub async fn managed_policies(
        &self,
        account: &str,
        scope: &str,
        only_attached: bool,
    ) -> Result<Vec<ManagedPolicy>> {
        let mut out = Vec::new();
        if scope != "Local" {
            for (arn, ..) in aws_managed_policies() {
                out.push(self.managed_policy(&arn).await?);
            }
        }
        if scope != "AWS" {
            out.extend(self.meta.managed_policies(account).await?.into_iter().map(to_policy));
        }
        if only_attached {
            out.retain(|p| p.attachments > 0);
        }
        Ok(out)
    }

    pub async fn delete_managed_policy(&self, account: &str, arn: &str) -> Result<()> {
        let p = self.own_policy(account, arn).await?;
        if p.attachments > 0 {
            return Err(Error::DeleteConflict("Cannot delete a policy attached to entities.".into()));
        }
        if self.meta.policy_versions(arn).await?.len() > 1 {
            return Err(Error::DeleteConflict(
                "This policy has more than one version. Before you delete a policy, you must delete the policy's \
                 versions. The default version is deleted with the policy."
                    .into(),
            ));
        }
        self.meta.delete_managed_policy(arn).await?;
        self.iam_changed();
        Ok(())
    }

    async fn own_policy(&self, account: &str, arn: &str) -> Result<ManagedPolicyRow> {
        if aws_managed_policy(arn).is_some() {
            return Err(Error::InvalidInput(format!("{arn} is an AWS managed policy and cannot be changed.")));
        }
        match self.meta.managed_policy(arn).await? {
            Some(p) if p.account == account => Ok(p),
            _ => Err(no_policy(arn)),
        }
    }

    pub async fn create_policy_version(
        &self,
        account: &str,
        arn: &str,
        doc: &str,
        set_default: bool,
    ) -> Result<PolicyVersion> {
        self.own_policy(account, arn).await?;
        check_document(doc, MAX_MANAGED_POLICY, PolicyKind::Identity)?;
        let v = self.meta.add_policy_version(arn, doc, set_default, MAX_POLICY_VERSIONS).await?.ok_or_else(|| {
            Error::LimitExceeded(format!(
                "A managed policy can have up to {MAX_POLICY_VERSIONS} versions. Before you create a new version, \
                 you must delete an existing version."
            ))
        })?;
        self.iam_changed();
        Ok(PolicyVersion {
            version: v,
            document: doc.to_string(),
            is_default: set_default,
            created_at: berth_meta::now_ms(),
        })
    }

    pub async fn policy_version(&self, arn: &str, version: &str) -> Result<PolicyVersion> {
        if let Some((_, _, doc)) = aws_managed_policy(arn) {
            if version != "v1" {
                return Err(no_version(arn, version));
            }
            return Ok(PolicyVersion {
                version: "v1".into(),
                document: doc.to_string(),
                is_default: true,
                created_at: 0,
            });
        }
        let p = self.meta.managed_policy(arn).await?.ok_or_else(|| no_policy(arn))?;
        let v = self.meta.policy_version(arn, version).await?.ok_or_else(|| no_version(arn, version))?;
        Ok(PolicyVersion {
            is_default: v.version == p.default_version,
            version: v.version,
            document: v.document,
            created_at: v.created_at,
        })
    }

    pub async fn policy_versions(&self, arn: &str) -> Result<Vec<PolicyVersion>> {
        if aws_managed_policy(arn).is_some() {
            return Ok(vec![self.policy_version(arn, "v1").await?]);
        }
        let p = self.meta.managed_policy(arn).await?.ok_or_else(|| no_policy(arn))?;
        Ok(self
            .meta
            .policy_versions(arn)
            .await?
            .into_iter()
            .map(|v| PolicyVersion {
                is_default: v.version == p.default_version,
                version: v.version,
                document: v.document,
                created_at: v.created_at,
            })
            .collect())
    }

    pub async fn delete_policy_version(&self, account: &str, arn: &str, version: &str) -> Result<()> {
        let p = self.own_policy(account, arn).await?;
        if p.default_version == version {
            return Err(Error::DeleteConflict("Cannot delete the default version of a policy.".into()));
        }
        if !self.meta.delete_policy_version(arn, version).await? {
            return Err(no_version(arn, version));
        }
        self.iam_changed();
        Ok(())
    }

    pub async fn set_default_policy_version(&self, account: &str, arn: &str, version: &str) -> Result<()> {
        self.own_policy(account, arn).await?;
        if self.meta.policy_version(arn, version).await?.is_none() {
            return Err(no_version(arn, version));
        }
        self.meta.set_default_policy_version(arn, version).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn attach_policy(&self, account: &str, kind: Kind, owner: &str, arn: &str) -> Result<()> {
        let e = self.entity(account, kind, owner).await?;
        let p = self.managed_policy(arn).await?;
        if !p.arn.starts_with(AWS_POLICY_PREFIX) && !p.arn.starts_with(&format!("arn:aws:iam::{account}:")) {
            return Err(no_policy(arn));
        }
        self.meta.attach_policy(account, kind.as_str(), &e.name, arn).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn detach_policy(&self, account: &str, kind: Kind, owner: &str, arn: &str) -> Result<()> {
        let e = self.entity(account, kind, owner).await?;
        if !self.meta.detach_policy(account, kind.as_str(), &e.name, arn).await? {
            return Err(Error::NoSuchEntity(format!("Policy {arn} was not found.")));
        }
        self.iam_changed();
        Ok(())
    }

    /// Attached managed policies: (name, ARN).
    pub async fn attached_policies(&self, account: &str, kind: Kind, owner: &str) -> Result<Vec<(String, String)>> {
        let e = self.entity(account, kind, owner).await?;
        Ok(self
            .meta
            .attached_policies(account, kind.as_str(), &e.name)
            .await?
            .into_iter()
            .map(|arn| (arn.rsplit('/').next().unwrap_or_default().to_string(), arn))
            .collect())
    }

    // ---- STS ----

    /// AssumeRole: allowed when the role's trust policy and (across accounts, or when the trust
    /// policy names only the account) the caller's identity policies allow `sts:AssumeRole`.
    pub async fn assume_role(
        &self,
        who: &Who,
        role_arn: &str,
        session: &str,
        duration: Option<i64>,
    ) -> Result<Session> {
        let p = who
            .principal
            .as_ref()
            .ok_or_else(|| Error::AccessDenied("anonymous callers may not assume roles".into()))?;
        check_session_name(session)?;
        let denied = || {
            Error::AccessDenied(format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                p.arn
            ))
        };
        let (account, name) = parse_role_arn(role_arn).ok_or_else(|| {
            Error::Validation(format!("{role_arn:?} is not a role ARN (arn:aws:iam::<account>:role/<name>)"))
        })?;
        let role = match self.meta.entity(account, "role", name).await? {
            Some(r) => r,
            None => return Err(denied()),
        };
        let caller = self.identity(p).await?.ok_or_else(|| gone(p))?;
        let trust = role.document.as_deref().and_then(|d| policy::parse(d, PolicyKind::Resource).ok());
        let refs: Vec<&Policy> = caller.policies.iter().collect();
        let ctx = self.context(who, Some(&caller.caller), &[]);
        let req = policy::Request {
            action: "sts:AssumeRole",
            resource: role_arn,
            resource_account: account,
            caller: Some(&caller.caller),
            context: &ctx,
        };
        if policy::evaluate(&req, &refs, trust.as_ref()) != Decision::Allow || trust.is_none() {
            return Err(denied());
        }
        let max = role.max_session.unwrap_or(DEFAULT_SESSION);
        let duration = duration.unwrap_or(DEFAULT_SESSION);
        if !(MIN_SESSION..=max).contains(&duration) {
            return Err(Error::Validation(format!(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role: {duration} is not \
                 within {MIN_SESSION}..{max} seconds"
            )));
        }
        let expires = now_secs() + duration;
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let akid = format!("ASIA{}", berth_crypto::random_string(UPPER, 16));
        let claims = SessionClaims {
            a: akid.clone(),
            r: entity_arn(account, Kind::Role, &role.path, &role.name),
            i: role.id.clone(),
            s: session.to_string(),
            e: expires,
        };
        let token = self.tokens().sessions.sign(&serde_json::to_vec(&claims).expect("claims serialize"));
        let secret = self.session_secret(&token);
        Ok(Session {
            access_key_id: akid,
            secret,
            token,
            expires,
            assumed_role_id: format!("{}:{session}", role.id),
            arn: format!("arn:aws:sts::{account}:assumed-role/{}/{session}", role.name),
        })
    }

    fn session_secret(&self, token: &str) -> String {
        use base64::Engine;
        let mac = berth_crypto::sigv4::hmac(self.tokens().session_secrets.as_bytes(), token.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac)[..40].to_string()
    }

    /// The secret and principal of temporary credentials, from their session token.
    pub(crate) fn resolve_session(&self, akid: &str, token: &str) -> Result<(String, Principal)> {
        let bad = || Error::InvalidToken("The security token included in the request is invalid.".into());
        let payload = self.tokens().sessions.verify(token).ok_or_else(bad)?;
        let c: SessionClaims = serde_json::from_slice(&payload).map_err(|_| bad())?;
        if c.a != akid {
            return Err(bad());
        }
        if c.e <= now_secs() {
            return Err(Error::ExpiredToken("The security token included in the request is expired".into()));
        }
        let (account, role) = parse_role_arn(&c.r).ok_or_else(bad)?;
        let arn = format!("arn:aws:sts::{account}:assumed-role/{role}/{}", c.s);
        Ok((self.session_secret(token), Principal { arn, access_key_id: akid.to_string(), expires: Some(c.e) }))
    }
}

fn check_session_name(s: &str) -> Result<()> {
    let ok = (2..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "1 validation error detected: Value '{s}' at 'roleSessionName' failed to satisfy constraint: Member must \
             satisfy regular expression pattern: [\\w+=,.@-]* and have length between 2 and 64"
        )))
    }
}

fn no_policy(arn: &str) -> Error {
    Error::NoSuchEntity(format!("Policy {arn} does not exist or is not attachable."))
}

fn no_version(arn: &str, v: &str) -> Error {
    Error::NoSuchEntity(format!("Policy {arn} version {v} does not exist or is not attachable."))
}

fn gone(p: &Principal) -> Error {
    Error::Unauthorized(format!("the principal {} no longer exists", p.arn))
}
