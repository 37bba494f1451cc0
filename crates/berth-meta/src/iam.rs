//! IAM: accounts, users, groups, roles, access keys (secrets stored sealed by the service),
//! inline and managed policies and their attachments. The meaning of every field is the
//! service's; this module only stores and finds them.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Meta, Result, now_ms};

/// A user, group or role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRow {
    pub account: String,
    /// `user`, `group` or `role`.
    pub kind: String,
    pub name: String,
    /// The unique id (`AIDA...`, `AGPA...`, `AROA...`).
    pub id: String,
    pub path: String,
    /// A role's trust policy.
    pub document: Option<String>,
    pub description: Option<String>,
    /// A role's longest session, seconds.
    pub max_session: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub account: String,
    /// Empty for an account root's key.
    pub user_name: String,
    /// The sealed secret.
    pub secret: String,
    /// `Active` or `Inactive`.
    pub status: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedPolicyRow {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub id: String,
    pub path: String,
    pub description: Option<String>,
    pub default_version: String,
    pub next_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// How many users, groups and roles it is attached to.
    pub attachments: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersionRow {
    pub version: String,
    pub document: String,
    pub created_at: i64,
}

/// The policies that apply to a user (its own and its groups') or a role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityPolicies {
    pub inline: Vec<String>,
    /// Attached managed policies: ARN, and the default version's document when it is a
    /// customer-managed policy stored here (`None`: an AWS-managed one, known to the service).
    pub attached: Vec<(String, Option<String>)>,
}

/// A value bound to a statement.
#[derive(Debug, Clone)]
enum V {
    S(String),
    O(Option<String>),
    I(i64),
    OI(Option<i64>),
}

fn s(v: &str) -> V {
    V::S(v.to_string())
}

type Stmt = (&'static str, Vec<V>);

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    vals: Vec<V>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for v in vals {
        q = match v {
            V::S(x) => q.bind(x),
            V::O(x) => q.bind(x),
            V::I(x) => q.bind(x),
            V::OI(x) => q.bind(x),
        };
    }
    q
}

fn entity(r: &AnyRow) -> Result<EntityRow> {
    Ok(EntityRow {
        account: r.try_get(0)?,
        kind: r.try_get(1)?,
        name: r.try_get(2)?,
        id: r.try_get(3)?,
        path: r.try_get(4)?,
        document: r.try_get(5)?,
        description: r.try_get(6)?,
        max_session: r.try_get(7)?,
        created_at: r.try_get(8)?,
    })
}

fn key(r: &AnyRow) -> Result<KeyRow> {
    Ok(KeyRow {
        id: r.try_get(0)?,
        account: r.try_get(1)?,
        user_name: r.try_get(2)?,
        secret: r.try_get(3)?,
        status: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

fn policy(r: &AnyRow) -> Result<ManagedPolicyRow> {
    Ok(ManagedPolicyRow {
        arn: r.try_get(0)?,
        account: r.try_get(1)?,
        name: r.try_get(2)?,
        id: r.try_get(3)?,
        path: r.try_get(4)?,
        description: r.try_get(5)?,
        default_version: r.try_get(6)?,
        next_version: r.try_get(7)?,
        created_at: r.try_get(8)?,
        updated_at: r.try_get(9)?,
        attachments: r.try_get(10)?,
    })
}

impl Meta {
    /// Runs the statements in one transaction; returns the rows each changed.
    async fn exec(&self, stmts: Vec<Stmt>) -> Result<Vec<u64>> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let mut out = Vec::with_capacity(stmts.len());
                for (sql, vals) in stmts {
                    out.push(bind(sqlx::query(sql), vals).execute(&mut *c).await?.rows_affected());
                }
                Ok(out)
            })
        }))
        .await
    }

    async fn rows(&self, sql: &'static str, vals: Vec<V>) -> Result<Vec<AnyRow>> {
        Ok(bind(sqlx::query(sql), vals).fetch_all(&self.read).await?)
    }

    // ---- accounts ----

    /// Adds an account; false if it exists.
    pub async fn create_account(&self, id: &str) -> Result<bool> {
        let n = self
            .exec(vec![(
                "INSERT INTO iam_accounts (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                vec![s(id), V::I(now_ms())],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    /// Every account added with [`Meta::create_account`], with its creation time.
    pub async fn accounts(&self) -> Result<Vec<(String, i64)>> {
        let rows = self.rows("SELECT id, created_at FROM iam_accounts ORDER BY id", vec![]).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    // ---- users, groups, roles ----

    /// Adds an entity; false if one of that kind and name exists in the account.
    pub async fn create_entity(&self, e: &EntityRow) -> Result<bool> {
        let n = self
            .exec(vec![(
                "INSERT INTO iam_entities (account, kind, name, id, path, document, description, max_session, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (account, kind, name) DO NOTHING",
                vec![
                    s(&e.account),
                    s(&e.kind),
                    s(&e.name),
                    s(&e.id),
                    s(&e.path),
                    V::O(e.document.clone()),
                    V::O(e.description.clone()),
                    V::OI(e.max_session),
                    V::I(e.created_at),
                ],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    pub async fn entity(&self, account: &str, kind: &str, name: &str) -> Result<Option<EntityRow>> {
        // IAM names are unique without regard to case.
        let rows = self
            .rows(
                "SELECT account, kind, name, id, path, document, description, max_session, created_at FROM \
                 iam_entities WHERE account = $1 AND kind = $2 AND LOWER(name) = LOWER($3)",
                vec![s(account), s(kind), s(name)],
            )
            .await?;
        rows.first().map(entity).transpose()
    }

    /// Entities of a kind whose path starts with `path_prefix`, by name.
    pub async fn entities(&self, account: &str, kind: &str, path_prefix: &str) -> Result<Vec<EntityRow>> {
        let rows = self
            .rows(
                "SELECT account, kind, name, id, path, document, description, max_session, created_at FROM \
                 iam_entities WHERE account = $1 AND kind = $2 AND SUBSTR(path, 1, LENGTH($3)) = $3 ORDER BY name",
                vec![s(account), s(kind), s(path_prefix)],
            )
            .await?;
        rows.iter().map(entity).collect()
    }

    /// Replaces a role's trust policy; false if there is no such role.
    pub async fn set_entity_document(&self, account: &str, kind: &str, name: &str, doc: &str) -> Result<bool> {
        let n = self
            .exec(vec![(
                "UPDATE iam_entities SET document = $4 WHERE account = $1 AND kind = $2 AND name = $3",
                vec![s(account), s(kind), s(name), s(doc)],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    /// What still hangs off an entity (keys, group memberships, inline and attached policies),
    /// each as a count: IAM refuses to delete it until they are gone.
    pub async fn entity_dependents(&self, account: &str, kind: &str, name: &str) -> Result<Vec<(&'static str, i64)>> {
        let rows = self
            .rows(
                "SELECT (SELECT COUNT(*) FROM iam_access_keys WHERE account = $1 AND user_name = $3 AND $2 = 'user'), \
                 (SELECT COUNT(*) FROM iam_members WHERE account = $1 AND \
                    ((user_name = $3 AND $2 = 'user') OR (group_name = $3 AND $2 = 'group'))), \
                 (SELECT COUNT(*) FROM iam_inline_policies WHERE account = $1 AND kind = $2 AND owner = $3), \
                 (SELECT COUNT(*) FROM iam_attachments WHERE account = $1 AND kind = $2 AND owner = $3)",
                vec![s(account), s(kind), s(name)],
            )
            .await?;
        let r = &rows[0];
        Ok(vec![
            ("access keys", r.try_get(0)?),
            (if kind == "group" { "members" } else { "group memberships" }, r.try_get(1)?),
            ("inline policies", r.try_get(2)?),
            ("attached policies", r.try_get(3)?),
        ])
    }

    pub async fn delete_entity(&self, account: &str, kind: &str, name: &str) -> Result<bool> {
        let n = self
            .exec(vec![(
                "DELETE FROM iam_entities WHERE account = $1 AND kind = $2 AND name = $3",
                vec![s(account), s(kind), s(name)],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    // ---- group membership ----

    pub async fn add_member(&self, account: &str, group: &str, user: &str) -> Result<()> {
        self.exec(vec![(
            "INSERT INTO iam_members (account, group_name, user_name) VALUES ($1, $2, $3) \
             ON CONFLICT (account, group_name, user_name) DO NOTHING",
            vec![s(account), s(group), s(user)],
        )])
        .await?;
        Ok(())
    }

    pub async fn remove_member(&self, account: &str, group: &str, user: &str) -> Result<bool> {
        let n = self
            .exec(vec![(
                "DELETE FROM iam_members WHERE account = $1 AND group_name = $2 AND user_name = $3",
                vec![s(account), s(group), s(user)],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    /// The groups a user is in (`by_user`), or a group's users, by name.
    pub async fn members(&self, account: &str, name: &str, by_user: bool) -> Result<Vec<String>> {
        let rows = if by_user {
            self.rows(
                "SELECT group_name FROM iam_members WHERE account = $1 AND user_name = $2 ORDER BY group_name",
                vec![s(account), s(name)],
            )
            .await?
        } else {
            self.rows(
                "SELECT user_name FROM iam_members WHERE account = $1 AND group_name = $2 ORDER BY user_name",
                vec![s(account), s(name)],
            )
            .await?
        };
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    // ---- access keys ----

    pub async fn create_key(&self, k: &KeyRow) -> Result<()> {
        self.exec(vec![(
            "INSERT INTO iam_access_keys (id, account, user_name, secret, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![s(&k.id), s(&k.account), s(&k.user_name), s(&k.secret), s(&k.status), V::I(k.created_at)],
        )])
        .await?;
        Ok(())
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>> {
        let rows = self
            .rows(
                "SELECT id, account, user_name, secret, status, created_at FROM iam_access_keys WHERE id = $1",
                vec![s(id)],
            )
            .await?;
        rows.first().map(key).transpose()
    }

    pub async fn keys_of(&self, account: &str, user: &str) -> Result<Vec<KeyRow>> {
        let rows = self
            .rows(
                "SELECT id, account, user_name, secret, status, created_at FROM iam_access_keys \
                 WHERE account = $1 AND user_name = $2 ORDER BY created_at, id",
                vec![s(account), s(user)],
            )
            .await?;
        rows.iter().map(key).collect()
    }

    /// Sets a key's status; false if the user has no such key.
    pub async fn set_key_status(&self, account: &str, user: &str, id: &str, status: &str) -> Result<bool> {
        let n = self
            .exec(vec![(
                "UPDATE iam_access_keys SET status = $4 WHERE account = $1 AND user_name = $2 AND id = $3",
                vec![s(account), s(user), s(id), s(status)],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    pub async fn delete_key(&self, account: &str, user: &str, id: &str) -> Result<bool> {
        let n = self
            .exec(vec![(
                "DELETE FROM iam_access_keys WHERE account = $1 AND user_name = $2 AND id = $3",
                vec![s(account), s(user), s(id)],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    // ---- inline policies ----

    pub async fn put_inline_policy(&self, account: &str, kind: &str, owner: &str, name: &str, doc: &str) -> Result<()> {
        self.exec(vec![(
            "INSERT INTO iam_inline_policies (account, kind, owner, name, document) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account, kind, owner, name) DO UPDATE SET document = excluded.document",
            vec![s(account), s(kind), s(owner), s(name), s(doc)],
        )])
        .await?;
        Ok(())
    }

    pub async fn inline_policy(&self, account: &str, kind: &str, owner: &str, name: &str) -> Result<Option<String>> {
        let rows = self
            .rows(
                "SELECT document FROM iam_inline_policies WHERE account = $1 AND kind = $2 AND owner = $3 AND name = $4",
                vec![s(account), s(kind), s(owner), s(name)],
            )
            .await?;
        rows.first().map(|r| Ok(r.try_get(0)?)).transpose()
    }

    pub async fn inline_policy_names(&self, account: &str, kind: &str, owner: &str) -> Result<Vec<String>> {
        let rows = self
            .rows(
                "SELECT name FROM iam_inline_policies WHERE account = $1 AND kind = $2 AND owner = $3 ORDER BY name",
                vec![s(account), s(kind), s(owner)],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub async fn delete_inline_policy(&self, account: &str, kind: &str, owner: &str, name: &str) -> Result<bool> {
        let n = self
            .exec(vec![(
                "DELETE FROM iam_inline_policies WHERE account = $1 AND kind = $2 AND owner = $3 AND name = $4",
                vec![s(account), s(kind), s(owner), s(name)],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    // ---- managed policies ----

    /// Adds a customer-managed policy with its first version `v1`; false if the ARN exists.
    pub async fn create_managed_policy(&self, p: &ManagedPolicyRow, document: &str) -> Result<bool> {
        let n = self
            .exec(vec![
                (
                    "INSERT INTO iam_managed_policies (arn, account, name, id, path, description, default_version, \
                     next_version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'v1', 2, $7, $7) \
                     ON CONFLICT (arn) DO NOTHING",
                    vec![
                        s(&p.arn),
                        s(&p.account),
                        s(&p.name),
                        s(&p.id),
                        s(&p.path),
                        V::O(p.description.clone()),
                        V::I(p.created_at),
                    ],
                ),
                (
                    "INSERT INTO iam_policy_versions (arn, version, document, created_at) \
                     SELECT $1, 'v1', $2, $3 WHERE NOT EXISTS \
                     (SELECT 1 FROM iam_policy_versions WHERE arn = $1)",
                    vec![s(&p.arn), s(document), V::I(p.created_at)],
                ),
            ])
            .await?;
        Ok(n[0] == 1)
    }

    pub async fn managed_policy(&self, arn: &str) -> Result<Option<ManagedPolicyRow>> {
        let rows = self.rows(
            "SELECT m.arn, m.account, m.name, m.id, m.path, m.description, m.default_version, m.next_version, \
             m.created_at, m.updated_at, (SELECT COUNT(*) FROM iam_attachments a WHERE a.policy_arn = m.arn) \
             FROM iam_managed_policies m WHERE m.arn = $1",
            vec![s(arn)],
        );
        rows.await?.first().map(policy).transpose()
    }

    pub async fn managed_policies(&self, account: &str) -> Result<Vec<ManagedPolicyRow>> {
        let rows = self
            .rows(
                "SELECT m.arn, m.account, m.name, m.id, m.path, m.description, m.default_version, m.next_version, \
                 m.created_at, m.updated_at, (SELECT COUNT(*) FROM iam_attachments a WHERE a.policy_arn = m.arn) \
                 FROM iam_managed_policies m WHERE m.account = $1 ORDER BY m.name",
                vec![s(account)],
            )
            .await?;
        rows.iter().map(policy).collect()
    }

    /// Deletes a policy and all its versions.
    pub async fn delete_managed_policy(&self, arn: &str) -> Result<bool> {
        let n = self
            .exec(vec![
                ("DELETE FROM iam_policy_versions WHERE arn = $1", vec![s(arn)]),
                ("DELETE FROM iam_managed_policies WHERE arn = $1", vec![s(arn)]),
            ])
            .await?;
        Ok(n[1] == 1)
    }

    /// Adds version `v<next>` and returns its id, unless the policy already has `max` versions
    /// (then `None`).
    pub async fn add_policy_version(
        &self,
        arn: &str,
        doc: &str,
        set_default: bool,
        max: i64,
    ) -> Result<Option<String>> {
        let (arn, doc) = (arn.to_string(), doc.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let row = sqlx::query(
                    "SELECT next_version, (SELECT COUNT(*) FROM iam_policy_versions v WHERE v.arn = m.arn) \
                     FROM iam_managed_policies m WHERE arn = $1",
                )
                .bind(arn.as_str())
                .fetch_optional(&mut *c)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let (next, count): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                if count >= max {
                    return Ok(None);
                }
                let version = format!("v{next}");
                let now = now_ms();
                sqlx::query(
                    "INSERT INTO iam_policy_versions (arn, version, document, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(arn.as_str())
                .bind(version.as_str())
                .bind(doc.as_str())
                .bind(now)
                .execute(&mut *c)
                .await?;
                sqlx::query(
                    "UPDATE iam_managed_policies SET next_version = next_version + 1, updated_at = $2, \
                     default_version = CASE WHEN $3 = 1 THEN $4 ELSE default_version END WHERE arn = $1",
                )
                .bind(arn.as_str())
                .bind(now)
                .bind(i64::from(set_default))
                .bind(version.as_str())
                .execute(&mut *c)
                .await?;
                Ok(Some(version))
            })
        }))
        .await
    }

    pub async fn policy_version(&self, arn: &str, version: &str) -> Result<Option<PolicyVersionRow>> {
        let rows = self
            .rows(
                "SELECT version, document, created_at FROM iam_policy_versions WHERE arn = $1 AND version = $2",
                vec![s(arn), s(version)],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(PolicyVersionRow { version: r.try_get(0)?, document: r.try_get(1)?, created_at: r.try_get(2)? })
            })
            .transpose()
    }

    pub async fn policy_versions(&self, arn: &str) -> Result<Vec<PolicyVersionRow>> {
        let rows = self
            .rows(
                "SELECT version, document, created_at FROM iam_policy_versions WHERE arn = $1 ORDER BY created_at DESC",
                vec![s(arn)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PolicyVersionRow { version: r.try_get(0)?, document: r.try_get(1)?, created_at: r.try_get(2)? })
            })
            .collect()
    }

    pub async fn delete_policy_version(&self, arn: &str, version: &str) -> Result<bool> {
        let n = self
            .exec(vec![("DELETE FROM iam_policy_versions WHERE arn = $1 AND version = $2", vec![s(arn), s(version)])])
            .await?;
        Ok(n[0] == 1)
    }

    pub async fn set_default_policy_version(&self, arn: &str, version: &str) -> Result<bool> {
        let n = self
            .exec(vec![(
                "UPDATE iam_managed_policies SET default_version = $2, updated_at = $3 WHERE arn = $1",
                vec![s(arn), s(version), V::I(now_ms())],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    // ---- attachments ----

    pub async fn attach_policy(&self, account: &str, kind: &str, owner: &str, arn: &str) -> Result<()> {
        self.exec(vec![(
            "INSERT INTO iam_attachments (account, kind, owner, policy_arn) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account, kind, owner, policy_arn) DO NOTHING",
            vec![s(account), s(kind), s(owner), s(arn)],
        )])
        .await?;
        Ok(())
    }

    pub async fn detach_policy(&self, account: &str, kind: &str, owner: &str, arn: &str) -> Result<bool> {
        let n = self
            .exec(vec![(
                "DELETE FROM iam_attachments WHERE account = $1 AND kind = $2 AND owner = $3 AND policy_arn = $4",
                vec![s(account), s(kind), s(owner), s(arn)],
            )])
            .await?;
        Ok(n[0] == 1)
    }

    pub async fn attached_policies(&self, account: &str, kind: &str, owner: &str) -> Result<Vec<String>> {
        let rows = self
            .rows(
                "SELECT policy_arn FROM iam_attachments WHERE account = $1 AND kind = $2 AND owner = $3 \
                 ORDER BY policy_arn",
                vec![s(account), s(kind), s(owner)],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Every policy that applies to user or role `name`: its own, and for a user its groups'.
    pub async fn identity_policies(&self, account: &str, kind: &str, name: &str) -> Result<IdentityPolicies> {
        let inline = self
            .rows(
                "SELECT document FROM iam_inline_policies WHERE account = $1 AND \
                 ((kind = $2 AND owner = $3) OR (kind = 'group' AND $2 = 'user' AND owner IN \
                   (SELECT group_name FROM iam_members WHERE account = $1 AND user_name = $3)))",
                vec![s(account), s(kind), s(name)],
            )
            .await?;
        let attached = self
            .rows(
                "SELECT a.policy_arn, v.document FROM iam_attachments a \
                 LEFT JOIN iam_managed_policies m ON m.arn = a.policy_arn \
                 LEFT JOIN iam_policy_versions v ON v.arn = m.arn AND v.version = m.default_version \
                 WHERE a.account = $1 AND ((a.kind = $2 AND a.owner = $3) OR (a.kind = 'group' AND $2 = 'user' AND \
                   a.owner IN (SELECT group_name FROM iam_members WHERE account = $1 AND user_name = $3)))",
                vec![s(account), s(kind), s(name)],
            )
            .await?;
        Ok(IdentityPolicies {
            inline: inline.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?,
            attached: attached.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_>>()?,
        })
    }
}
