//! IAM and STS as ECR callers know them: accounts, users with access keys, groups, roles with
//! trust policies, inline and managed policies (AWS's managed ECR policies built in), and
//! temporary credentials from `AssumeRole`. Each call decides the caller's `iam:` action on the
//! entity or policy it names (identity policies alone: IAM resources have no resource policies)
//! in the caller's own account. Access-key secrets are stored sealed (AES-256-GCM under a key
//! outside the database).

use berth_core::policy::{self, Decision, Policy, PolicyKind};
use berth_meta::{EntityRow, KeyRow, ManagedPolicyRow};

use crate::access::Access;
use crate::access::denial;
use crate::caller::{AccessKey, Caller};
use crate::core::domain;
use crate::error::{Conflict, DeniedBy, Error, Exists, InvalidKind, NotFound, Result};
pub use crate::identity::Kind;
use crate::identity::{
    AWS_POLICY_PREFIX, Identities, SessionClaims, aws_managed_policies, aws_managed_policy, entity_arn, gone,
    parse_role_arn, principal_account, seal_aad,
};
use crate::tokens::now_secs;

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

fn random_id(prefix: &str) -> String {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    format!("{prefix}{}", berth_crypto::random_string(UPPER, 17))
}

fn no_such(kind: Kind, name: &str) -> Error {
    NotFound::Entity { what: kind.as_str().to_string(), key: "name", name: name.to_string() }.into()
}

/// IAM names: letters, digits and `+=,.@_-`.
fn check_name(what: &str, name: &str, max: usize) -> Result<()> {
    let ok =
        (1..=max).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::validation_at(
            what,
            name,
            format!("Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and {max}"),
        ))
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
        Err(Error::validation(format!(
            "The specified value for path is invalid. It must begin and end with / and contain only alphanumeric \
             characters and/or / characters: {path:?}"
        )))
    }
}

fn check_document(doc: &str, max: usize, kind: PolicyKind) -> Result<Policy> {
    if doc.is_empty() || doc.chars().count() > max {
        return Err(Error::quota(format!(
            "Cannot exceed quota for PolicySize: {max} (this document has {} characters)",
            doc.chars().count()
        )));
    }
    policy::parse(doc, kind).map_err(|e| Error::invalid(InvalidKind::PolicyDocument, e.to_string()))
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

/// What GetUser without a name shows: the calling user, or (for an account root or a role
/// session) the caller's own ARN and id.
#[derive(Debug, Clone)]
pub enum CurrentUser {
    User(Entity),
    Other { arn: String, userid: String },
}

/// What GetCallerIdentity answers.
#[derive(Debug, Clone)]
pub struct CallerIdentity {
    pub arn: String,
    pub userid: String,
    pub account: String,
}

domain! {
    /// IAM and STS.
    Iam
}

/// The largest inline policy of a user, group or role.
fn max_inline(kind: Kind) -> usize {
    match kind {
        Kind::User => MAX_USER_POLICY,
        Kind::Group => MAX_GROUP_POLICY,
        Kind::Role => MAX_ROLE_POLICY,
    }
}

/// The `iam:` action `prefix` + kind + `suffix` (`Put` + `User` + `Policy`).
fn action(prefix: &str, kind: Kind, suffix: &str) -> String {
    format!("iam:{prefix}{}{suffix}", kind.capitalized())
}

impl<'a> Iam<'a> {
    fn identities(&self) -> Identities<'a> {
        Identities(self.0)
    }

    /// The account the caller manages, once it may do `action` on `resource` there (a path of
    /// `resource` relative to the account: `user/alice`, `policy/p`, or `*`).
    async fn allowed(&self, caller: &Caller, action: &str, resource: &str) -> Result<String> {
        let account = match &caller.principal {
            Some(p) => principal_account(p),
            None if caller.is_operator() => self.settings.registry_id.clone(),
            None => return Err(denial("anonymous", action, resource, DeniedBy::NoIdentityAllow)),
        };
        let arn = if resource == "*" || resource.starts_with("arn:") {
            resource.to_string()
        } else {
            format!("arn:aws:iam::{account}:{resource}")
        };
        Access(self.0).check_iam(caller, action, &arn).await?;
        Ok(account)
    }

    /// An entity's resource path for decisions (`user/alice`).
    fn entity_path(kind: Kind, name: &str) -> String {
        format!("{}/{name}", kind.as_str())
    }

    fn iam_changed(&self) {
        self.caches.iam.invalidate();
    }

    /// Adds an account and a root access key for it (the operator's). The secret is returned
    /// only now.
    pub async fn create_account(&self, caller: &Caller, account: &str) -> Result<AccessKey> {
        caller.require_operator("create accounts")?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::validation(format!("an account id is 12 digits, not {account:?}")));
        }
        if account == self.settings.registry_id || !self.meta.create_account(account).await? {
            return Err(Exists::Account { id: account.to_string() }.into());
        }
        let key = AccessKey::generate(crate::caller::root_arn(account));
        self.store_key(account, "", &key).await?;
        Ok(key)
    }

    pub async fn accounts(&self, caller: &Caller) -> Result<Vec<(String, i64)>> {
        caller.require_operator("list accounts")?;
        Ok(self.meta.accounts().await?)
    }

    async fn store_key(&self, account: &str, user: &str, key: &AccessKey) -> Result<()> {
        let sealed = self.settings.seal_key.seal(key.secret.as_bytes(), &seal_aad(&key.id));
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

    /// GetCallerIdentity: who the caller is (no permission needed, as in AWS).
    pub async fn caller_identity(&self, caller: &Caller) -> Result<CallerIdentity> {
        let p = caller.principal.as_ref().ok_or_else(|| Error::unauthenticated("the caller is anonymous".into()))?;
        let id = self.identities().of(p).await?.ok_or_else(|| gone(p))?;
        Ok(CallerIdentity {
            arn: id.caller.arn.clone(),
            userid: id.caller.userid.clone(),
            account: id.caller.account.clone(),
        })
    }

    /// GetUser without a name: the caller itself.
    pub async fn current_user(&self, caller: &Caller) -> Result<CurrentUser> {
        let p = caller.principal.as_ref().ok_or_else(|| Error::unauthenticated("the caller is anonymous".into()))?;
        let id = self.identities().of(p).await?.ok_or_else(|| gone(p))?;
        match id.caller.username.as_deref() {
            Some(u) => {
                let row =
                    self.meta.entity(&id.caller.account, "user", u).await?.ok_or_else(|| no_such(Kind::User, u))?;
                Ok(CurrentUser::User(to_entity(row, Kind::User)))
            }
            None => Ok(CurrentUser::Other { arn: id.caller.arn.clone(), userid: id.caller.userid.clone() }),
        }
    }

    /// `user`, or the calling user when absent (as IAM's key operations allow).
    async fn user_or_self(&self, caller: &Caller, user: Option<&str>) -> Result<String> {
        if let Some(u) = user {
            return Ok(u.to_string());
        }
        let id = match &caller.principal {
            Some(p) => self.identities().of(p).await?,
            None => None,
        };
        id.and_then(|i| i.caller.username.clone()).ok_or_else(|| {
            Error::validation(
                "UserName is required when the caller is not an IAM user (an account root or a role)".into(),
            )
        })
    }

    pub async fn create_entity(&self, caller: &Caller, new: NewEntity<'_>) -> Result<Entity> {
        let NewEntity { kind, name, path, trust_policy, description, max_session } = new;
        let account = &self.allowed(caller, &action("Create", kind, ""), &Self::entity_path(kind, name)).await?;
        check_name(&format!("{}Name", kind.capitalized()), name, kind.max_name())?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        if kind == Kind::Role {
            let doc = trust_policy.ok_or_else(|| {
                Error::validation("CreateRole needs AssumeRolePolicyDocument (the role's trust policy)".into())
            })?;
            check_document(doc, MAX_TRUST_POLICY, PolicyKind::Resource)?;
        }
        if let Some(s) = max_session
            && !(DEFAULT_SESSION..=MAX_SESSION).contains(&s)
        {
            return Err(Error::validation(format!(
                "The requested MaxSessionDuration {s} is out of range: it must be {DEFAULT_SESSION} to {MAX_SESSION} \
                 seconds"
            )));
        }
        if self.meta.entity(account, kind.as_str(), name).await?.is_some() {
            return Err(Exists::Entity { what: kind.capitalized().to_string(), name: name.to_string() }.into());
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
            return Err(Exists::Entity { what: kind.capitalized().to_string(), name: name.to_string() }.into());
        }
        self.iam_changed();
        Ok(to_entity(row, kind))
    }

    /// GetUser, GetRole (a group: [`Iam::group`]).
    pub async fn get_entity(&self, caller: &Caller, kind: Kind, name: &str) -> Result<Entity> {
        let account = self.allowed(caller, &action("Get", kind, ""), &Self::entity_path(kind, name)).await?;
        self.entity(&account, kind, name).await
    }

    async fn entity(&self, account: &str, kind: Kind, name: &str) -> Result<Entity> {
        let row = self.meta.entity(account, kind.as_str(), name).await?.ok_or_else(|| no_such(kind, name))?;
        Ok(to_entity(row, kind))
    }

    pub async fn entities(&self, caller: &Caller, kind: Kind, path_prefix: Option<&str>) -> Result<Vec<Entity>> {
        let account = &self.allowed(caller, &action("List", kind, "s"), "*").await?;
        let rows = self.meta.entities(account, kind.as_str(), path_prefix.unwrap_or("/")).await?;
        Ok(rows.into_iter().map(|r| to_entity(r, kind)).collect())
    }

    /// Deletes a user, group or role that nothing hangs off any more (as IAM requires).
    pub async fn delete_entity(&self, caller: &Caller, kind: Kind, name: &str) -> Result<()> {
        let account = &self.allowed(caller, &action("Delete", kind, ""), &Self::entity_path(kind, name)).await?;
        let e = self.entity(account, kind, name).await?;
        let deps = self.meta.entity_dependents(account, kind.as_str(), &e.name).await?;
        let left: Vec<String> = deps.iter().filter(|(_, n)| *n > 0).map(|(what, n)| format!("{n} {what}")).collect();
        if !left.is_empty() {
            return Err(Conflict::DependentsLeft(format!(
                "Cannot delete entity, must remove {} first ({}).",
                deps.iter().filter(|(_, n)| *n > 0).map(|(w, _)| *w).collect::<Vec<_>>().join(", "),
                left.join(", ")
            ))
            .into());
        }
        self.meta.delete_entity(account, kind.as_str(), &e.name).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn update_trust_policy(&self, caller: &Caller, role: &str, doc: &str) -> Result<()> {
        let path = Self::entity_path(Kind::Role, role);
        let account = &self.allowed(caller, "iam:UpdateAssumeRolePolicy", &path).await?;
        let e = self.entity(account, Kind::Role, role).await?;
        check_document(doc, MAX_TRUST_POLICY, PolicyKind::Resource)?;
        self.meta.set_entity_document(account, "role", &e.name, doc).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn add_user_to_group(&self, caller: &Caller, group: &str, user: &str) -> Result<()> {
        let path = Self::entity_path(Kind::Group, group);
        let account = &self.allowed(caller, "iam:AddUserToGroup", &path).await?;
        let g = self.entity(account, Kind::Group, group).await?;
        let u = self.entity(account, Kind::User, user).await?;
        self.meta.add_member(account, &g.name, &u.name).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn remove_user_from_group(&self, caller: &Caller, group: &str, user: &str) -> Result<()> {
        let path = Self::entity_path(Kind::Group, group);
        let account = &self.allowed(caller, "iam:RemoveUserFromGroup", &path).await?;
        let g = self.entity(account, Kind::Group, group).await?;
        let u = self.entity(account, Kind::User, user).await?;
        if !self.meta.remove_member(account, &g.name, &u.name).await? {
            return Err(NotFound::Member { user: u.name, group: g.name }.into());
        }
        self.iam_changed();
        Ok(())
    }

    /// A group and its users.
    pub async fn group(&self, caller: &Caller, group: &str) -> Result<(Entity, Vec<Entity>)> {
        let account = &self.allowed(caller, "iam:GetGroup", &Self::entity_path(Kind::Group, group)).await?;
        let g = self.entity(account, Kind::Group, group).await?;
        let mut users = Vec::new();
        for u in self.meta.members(account, &g.name, false).await? {
            if let Ok(e) = self.entity(account, Kind::User, &u).await {
                users.push(e);
            }
        }
        Ok((g, users))
    }

    pub async fn groups_for_user(&self, caller: &Caller, user: &str) -> Result<Vec<Entity>> {
        let account = &self.allowed(caller, "iam:ListGroupsForUser", &Self::entity_path(Kind::User, user)).await?;
        let u = self.entity(account, Kind::User, user).await?;
        let mut out = Vec::new();
        for g in self.meta.members(account, &u.name, true).await? {
            if let Ok(e) = self.entity(account, Kind::Group, &g).await {
                out.push(e);
            }
        }
        Ok(out)
    }

    pub async fn create_access_key(&self, caller: &Caller, user: Option<&str>) -> Result<(AccessKey, KeyInfo)> {
        let user = &self.user_or_self(caller, user).await?;
        let account = &self.allowed(caller, "iam:CreateAccessKey", &Self::entity_path(Kind::User, user)).await?;
        let u = self.entity(account, Kind::User, user).await?;
        if self.meta.keys_of(account, &u.name).await?.len() >= MAX_KEYS_PER_USER {
            return Err(Error::quota(format!("Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}")));
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

    pub async fn access_keys(&self, caller: &Caller, user: Option<&str>) -> Result<Vec<KeyInfo>> {
        let user = &self.user_or_self(caller, user).await?;
        let account = &self.allowed(caller, "iam:ListAccessKeys", &Self::entity_path(Kind::User, user)).await?;
        let u = self.entity(account, Kind::User, user).await?;
        Ok(self
            .meta
            .keys_of(account, &u.name)
            .await?
            .into_iter()
            .map(|k| KeyInfo { id: k.id, user_name: k.user_name, status: k.status, created_at: k.created_at })
            .collect())
    }

    pub async fn set_access_key_status(
        &self,
        caller: &Caller,
        user: Option<&str>,
        id: &str,
        status: &str,
    ) -> Result<()> {
        let user = &self.user_or_self(caller, user).await?;
        let account = &self.allowed(caller, "iam:UpdateAccessKey", &Self::entity_path(Kind::User, user)).await?;
        if status != "Active" && status != "Inactive" {
            return Err(Error::validation_at(
                "status",
                status,
                "Member must \
                 satisfy enum value set: [Active, Inactive]"
                    .to_string(),
            ));
        }
        let u = self.entity(account, Kind::User, user).await?;
        if !self.meta.set_key_status(account, &u.name, id, status).await? {
            return Err(NotFound::Entity { what: "Access Key".into(), key: "id", name: id.to_string() }.into());
        }
        self.iam_changed();
        Ok(())
    }

    pub async fn delete_access_key(&self, caller: &Caller, user: Option<&str>, id: &str) -> Result<()> {
        let user = &self.user_or_self(caller, user).await?;
        let account = &self.allowed(caller, "iam:DeleteAccessKey", &Self::entity_path(Kind::User, user)).await?;
        let u = self.entity(account, Kind::User, user).await?;
        if !self.meta.delete_key(account, &u.name, id).await? {
            return Err(NotFound::Entity { what: "Access Key".into(), key: "id", name: id.to_string() }.into());
        }
        self.iam_changed();
        Ok(())
    }

    pub async fn put_inline_policy(
        &self,
        caller: &Caller,
        kind: Kind,
        owner: &str,
        name: &str,
        doc: &str,
    ) -> Result<()> {
        let account = &self.allowed(caller, &action("Put", kind, "Policy"), &Self::entity_path(kind, owner)).await?;
        let e = self.entity(account, kind, owner).await?;
        check_name("policyName", name, 128)?;
        check_document(doc, max_inline(kind), PolicyKind::Identity)?;
        self.meta.put_inline_policy(account, kind.as_str(), &e.name, name, doc).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn inline_policy(&self, caller: &Caller, kind: Kind, owner: &str, name: &str) -> Result<String> {
        let account = &self.allowed(caller, &action("Get", kind, "Policy"), &Self::entity_path(kind, owner)).await?;
        let e = self.entity(account, kind, owner).await?;
        self.meta.inline_policy(account, kind.as_str(), &e.name, name).await?.ok_or_else(|| {
            Error::from(NotFound::Entity {
                what: format!("{} policy", kind.as_str()),
                key: "name",
                name: name.to_string(),
            })
        })
    }

    pub async fn inline_policy_names(&self, caller: &Caller, kind: Kind, owner: &str) -> Result<Vec<String>> {
        let account = &self.allowed(caller, &action("List", kind, "Policies"), &Self::entity_path(kind, owner)).await?;
        let e = self.entity(account, kind, owner).await?;
        Ok(self.meta.inline_policy_names(account, kind.as_str(), &e.name).await?)
    }

    pub async fn delete_inline_policy(&self, caller: &Caller, kind: Kind, owner: &str, name: &str) -> Result<()> {
        let account = &self.allowed(caller, &action("Delete", kind, "Policy"), &Self::entity_path(kind, owner)).await?;
        let e = self.entity(account, kind, owner).await?;
        if !self.meta.delete_inline_policy(account, kind.as_str(), &e.name, name).await? {
            let what = format!("{} policy", kind.as_str());
            return Err(NotFound::Entity { what, key: "name", name: name.to_string() }.into());
        }
        self.iam_changed();
        Ok(())
    }

    pub async fn create_managed_policy(
        &self,
        caller: &Caller,
        name: &str,
        path: Option<&str>,
        doc: &str,
        description: Option<&str>,
    ) -> Result<ManagedPolicy> {
        let path = path.unwrap_or("/");
        let account = &self.allowed(caller, "iam:CreatePolicy", &format!("policy{path}{name}")).await?;
        check_name("policyName", name, 128)?;
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
            return Err(Exists::Policy { name: name.to_string() }.into());
        }
        self.iam_changed();
        Ok(to_policy(row))
    }

    /// GetPolicy.
    pub async fn get_managed_policy(&self, caller: &Caller, arn: &str) -> Result<ManagedPolicy> {
        self.allowed(caller, "iam:GetPolicy", arn).await?;
        self.managed_policy(arn).await
    }

    /// A managed policy: one of the account's, or AWS's.
    async fn managed_policy(&self, arn: &str) -> Result<ManagedPolicy> {
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
        caller: &Caller,
        scope: &str,
        only_attached: bool,
    ) -> Result<Vec<ManagedPolicy>> {
        let account = &self.allowed(caller, "iam:ListPolicies", "*").await?;
        if !matches!(scope, "All" | "AWS" | "Local") {
            return Err(Error::validation_at(
                "scope",
                scope,
                "Member must \
                 satisfy enum value set: [All, AWS, Local]"
                    .to_string(),
            ));
        }
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

    pub async fn delete_managed_policy(&self, caller: &Caller, arn: &str) -> Result<()> {
        let account = &self.allowed(caller, "iam:DeletePolicy", arn).await?;
        let p = self.own_policy(account, arn).await?;
        if p.attachments > 0 {
            return Err(Conflict::DependentsLeft("Cannot delete a policy attached to entities.".into()).into());
        }
        if self.meta.policy_versions(arn).await?.len() > 1 {
            return Err(Conflict::DependentsLeft(
                "This policy has more than one version. Before you delete a policy, you must delete the policy's \
                 versions. The default version is deleted with the policy."
                    .into(),
            )
            .into());
        }
        self.meta.delete_managed_policy(arn).await?;
        self.iam_changed();
        Ok(())
    }

    async fn own_policy(&self, account: &str, arn: &str) -> Result<ManagedPolicyRow> {
        if aws_managed_policy(arn).is_some() {
            return Err(Conflict::AwsManaged { arn: arn.to_string() }.into());
        }
        match self.meta.managed_policy(arn).await? {
            Some(p) if p.account == account => Ok(p),
            _ => Err(no_policy(arn)),
        }
    }

    pub async fn create_policy_version(
        &self,
        caller: &Caller,
        arn: &str,
        doc: &str,
        set_default: bool,
    ) -> Result<PolicyVersion> {
        let account = &self.allowed(caller, "iam:CreatePolicyVersion", arn).await?;
        self.own_policy(account, arn).await?;
        check_document(doc, MAX_MANAGED_POLICY, PolicyKind::Identity)?;
        let v = self.meta.add_policy_version(arn, doc, set_default, MAX_POLICY_VERSIONS).await?.ok_or_else(|| {
            Error::quota(format!(
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

    pub async fn policy_version(&self, caller: &Caller, arn: &str, version: &str) -> Result<PolicyVersion> {
        self.allowed(caller, "iam:GetPolicyVersion", arn).await?;
        self.version(arn, version).await
    }

    async fn version(&self, arn: &str, version: &str) -> Result<PolicyVersion> {
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

    pub async fn policy_versions(&self, caller: &Caller, arn: &str) -> Result<Vec<PolicyVersion>> {
        self.allowed(caller, "iam:ListPolicyVersions", arn).await?;
        if aws_managed_policy(arn).is_some() {
            return Ok(vec![self.version(arn, "v1").await?]);
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

    pub async fn delete_policy_version(&self, caller: &Caller, arn: &str, version: &str) -> Result<()> {
        let account = &self.allowed(caller, "iam:DeletePolicyVersion", arn).await?;
        let p = self.own_policy(account, arn).await?;
        if p.default_version == version {
            return Err(Conflict::DependentsLeft("Cannot delete the default version of a policy.".into()).into());
        }
        if !self.meta.delete_policy_version(arn, version).await? {
            return Err(no_version(arn, version));
        }
        self.iam_changed();
        Ok(())
    }

    pub async fn set_default_policy_version(&self, caller: &Caller, arn: &str, version: &str) -> Result<()> {
        let account = &self.allowed(caller, "iam:SetDefaultPolicyVersion", arn).await?;
        self.own_policy(account, arn).await?;
        if self.meta.policy_version(arn, version).await?.is_none() {
            return Err(no_version(arn, version));
        }
        self.meta.set_default_policy_version(arn, version).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn attach_policy(&self, caller: &Caller, kind: Kind, owner: &str, arn: &str) -> Result<()> {
        let account = &self.allowed(caller, &action("Attach", kind, "Policy"), &Self::entity_path(kind, owner)).await?;
        let e = self.entity(account, kind, owner).await?;
        let p = self.managed_policy(arn).await?;
        if !p.arn.starts_with(AWS_POLICY_PREFIX) && !p.arn.starts_with(&format!("arn:aws:iam::{account}:")) {
            return Err(no_policy(arn));
        }
        self.meta.attach_policy(account, kind.as_str(), &e.name, arn).await?;
        self.iam_changed();
        Ok(())
    }

    pub async fn detach_policy(&self, caller: &Caller, kind: Kind, owner: &str, arn: &str) -> Result<()> {
        let account = &self.allowed(caller, &action("Detach", kind, "Policy"), &Self::entity_path(kind, owner)).await?;
        let e = self.entity(account, kind, owner).await?;
        if !self.meta.detach_policy(account, kind.as_str(), &e.name, arn).await? {
            return Err(no_policy(arn));
        }
        self.iam_changed();
        Ok(())
    }

    /// Attached managed policies: (name, ARN).
    pub async fn attached_policies(&self, caller: &Caller, kind: Kind, owner: &str) -> Result<Vec<(String, String)>> {
        let account =
            &self.allowed(caller, &action("ListAttached", kind, "Policies"), &Self::entity_path(kind, owner)).await?;
        let e = self.entity(account, kind, owner).await?;
        Ok(self
            .meta
            .attached_policies(account, kind.as_str(), &e.name)
            .await?
            .into_iter()
            .map(|arn| (arn.rsplit('/').next().unwrap_or_default().to_string(), arn))
            .collect())
    }

    /// AssumeRole: allowed when the role's trust policy and (across accounts, or when the trust
    /// policy names only the account) the caller's identity policies allow `sts:AssumeRole`.
    pub async fn assume_role(
        &self,
        who: &Caller,
        role_arn: &str,
        session: &str,
        duration: Option<i64>,
    ) -> Result<Session> {
        let p =
            who.principal.as_ref().ok_or_else(|| denial("anonymous", "sts:AssumeRole", role_arn, DeniedBy::Trust))?;
        check_session_name(session)?;
        let denied = || denial(&p.arn, "sts:AssumeRole", role_arn, DeniedBy::Trust);
        let (account, name) = parse_role_arn(role_arn).ok_or_else(|| {
            Error::validation(format!("{role_arn:?} is not a role ARN (arn:aws:iam::<account>:role/<name>)"))
        })?;
        let role = match self.meta.entity(account, "role", name).await? {
            Some(r) => r,
            None => return Err(denied()),
        };
        let caller = self.identities().of(p).await?.ok_or_else(|| gone(p))?;
        let trust = role.document.as_deref().and_then(|d| policy::parse(d, PolicyKind::Resource).ok());
        let refs: Vec<&Policy> = caller.policies.iter().collect();
        let ctx = Access(self.0).context(who, Some(&caller.caller), &[]);
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
            return Err(Error::validation(format!(
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
        let secret = self.identities().session_secret(&token);
        Ok(Session {
            access_key_id: akid,
            secret,
            token,
            expires,
            assumed_role_id: format!("{}:{session}", role.id),
            arn: format!("arn:aws:sts::{account}:assumed-role/{}/{session}", role.name),
        })
    }
}

fn check_session_name(s: &str) -> Result<()> {
    let ok = (2..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::validation_at(
            "roleSessionName",
            s,
            "Member must \
             satisfy regular expression pattern: [\\w+=,.@-]* and have length between 2 and 64"
                .to_string(),
        ))
    }
}

fn no_policy(arn: &str) -> Error {
    NotFound::Policy { arn: arn.to_string(), version: None }.into()
}

fn no_version(arn: &str, v: &str) -> Error {
    NotFound::Policy { arn: arn.to_string(), version: Some(v.to_string()) }.into()
}
