//! The IAM policy language as AWS documents it, for identity policies (attached to users, groups
//! and roles) and resource policies (ECR repository and registry policies, role trust policies):
//! parsing with errors that name the bad element, and evaluation.
//!
//! Evaluation ([`evaluate`]) follows AWS's logic: an explicit `Deny` anywhere wins; otherwise,
//! within one account an `Allow` from an identity policy or from the resource policy suffices;
//! across accounts both must allow; an anonymous caller is allowed only by a resource policy
//! whose principal is `*`.

mod condition;
mod parse;

use std::collections::HashMap;

pub use condition::{Operator, parse_date};
pub use parse::{PolicyError, PolicyKind, parse};

pub use crate::wildcard::glob;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// Who a resource-policy statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principals {
    /// `"*"` or `{"AWS": "*"}`: everyone, anonymous callers included.
    Any,
    /// `{"AWS": [...], "Service": [...], ...}`: ARNs or account ids per kind.
    Some(HashMap<String, Vec<String>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetQualifier {
    /// The request's value (or any of its values) must satisfy the operator.
    Single,
    ForAnyValue,
    ForAllValues,
}

/// One `"Operator": {"key": [values]}` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub operator: Operator,
    pub if_exists: bool,
    pub set: SetQualifier,
    /// Lower-cased: condition keys are case-insensitive.
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principal: Option<Principals>,
    pub not_principal: Option<Principals>,
    /// Exactly one of `action`/`not_action` is set.
    pub action: Option<Vec<String>>,
    pub not_action: Option<Vec<String>>,
    /// Neither set: the statement applies to the resource the policy is attached to.
    pub resource: Option<Vec<String>>,
    pub not_resource: Option<Vec<String>>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub version: Option<String>,
    pub id: Option<String>,
    pub statements: Vec<Statement>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's ARN (`arn:aws:iam::111122223333:user/alice`,
    /// `arn:aws:sts::111122223333:assumed-role/Role/session`, `arn:aws:iam::111122223333:root`).
    pub arn: String,
    /// Further ARNs a policy may name it by (a role session: the role's ARN).
    pub also_known_as: Vec<String>,
    pub account: String,
    /// `aws:username` (IAM users only).
    pub username: Option<String>,
    /// `aws:userid`: a user's unique id, `AROA...:session` for a role session, the account for root.
    pub userid: String,
    /// The account root: its identity side allows everything (explicit denies still apply, and
    /// another account's resources still need their resource policy).
    pub is_root: bool,
}

impl Caller {
    fn arns(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.arn.as_str()).chain(self.also_known_as.iter().map(String::as_str))
    }
}

/// The request context condition keys are read from. Keys are matched case-insensitively;
/// multi-valued keys (`aws:TagKeys`) have several values.
#[derive(Debug, Clone, Default)]
pub struct Context {
    values: HashMap<String, Vec<String>>,
}

impl Context {
    pub fn new() -> Self {
        Context::default()
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.values.insert(key.to_ascii_lowercase(), vec![value.into()]);
        self
    }

    pub fn set_many(&mut self, key: &str, values: Vec<String>) -> &mut Self {
        self.values.insert(key.to_ascii_lowercase(), values);
        self
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.values.get(&key.to_ascii_lowercase()).map(Vec::as_slice)
    }

    /// The keys AWS derives from the caller: `aws:PrincipalArn`, `aws:PrincipalAccount`,
    /// `aws:username`, `aws:userid`.
    pub fn with_caller(mut self, caller: Option<&Caller>) -> Self {
        if let Some(c) = caller {
            let principal_arn = c.also_known_as.first().unwrap_or(&c.arn).clone();
            self.set("aws:PrincipalArn", principal_arn);
            self.set("aws:PrincipalAccount", c.account.clone());
            self.set("aws:userid", c.userid.clone());
            if let Some(u) = &c.username {
                self.set("aws:username", u.clone());
            }
        }
        self
    }
}

/// One request to decide.
pub struct Request<'a> {
    /// `service:Action`, e.g. `ecr:BatchGetImage`.
    pub action: &'a str,
    /// The resource's ARN.
    pub resource: &'a str,
    /// The account that owns the resource.
    pub resource_account: &'a str,
    /// `None` for an anonymous request.
    pub caller: Option<&'a Caller>,
    pub context: &'a Context,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A statement denied it.
    ExplicitDeny,
    /// Nothing allowed it.
    ImplicitDeny,
}

impl Decision {
    pub fn allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// Decides `req` under the caller's identity policies and the resource's policy.
pub fn evaluate(req: &Request, identity: &[&Policy], resource: Option<&Policy>) -> Decision {
    let identity_hits = identity.iter().map(|p| matches(p, req, false));
    let resource_hit = resource.map(|p| matches(p, req, true)).unwrap_or_default();
    let mut identity_allows = false;
    for h in identity_hits {
        if h.deny {
            return Decision::ExplicitDeny;
        }
        identity_allows |= h.allow;
    }
    if resource_hit.deny {
        return Decision::ExplicitDeny;
    }
    let Some(caller) = req.caller else {
        // Anonymous: only a resource policy naming everyone can allow.
        return if resource_hit.allow_anonymous { Decision::Allow } else { Decision::ImplicitDeny };
    };
    let same_account = caller.account == req.resource_account;
    // An account's root user is not limited by identity policies (explicit denies still apply).
    identity_allows |= caller.is_root;
    // A resource policy that names an account (not a principal in it) delegates to that account's
    // identity policies, so within the account it adds nothing on its own.
    let allowed = if same_account {
        identity_allows || resource_hit.allow_principal
    } else {
        identity_allows && resource_hit.allow
    };
    if allowed { Decision::Allow } else { Decision::ImplicitDeny }
}

/// Decides `req` on a KMS key as KMS does: the key policy must allow it. A statement naming the
/// caller itself is enough within the key's account; one naming the caller's account delegates
/// to that account's identity policies, which must then allow it too (the account root's always
/// do). An explicit deny in either refuses.
pub fn evaluate_key(req: &Request, identity: &[&Policy], key_policy: &Policy) -> Decision {
    let mut identity_allows = false;
    for h in identity.iter().map(|p| matches(p, req, false)) {
        if h.deny {
            return Decision::ExplicitDeny;
        }
        identity_allows |= h.allow;
    }
    let key = matches(key_policy, req, true);
    if key.deny {
        return Decision::ExplicitDeny;
    }
    let Some(caller) = req.caller else { return Decision::ImplicitDeny };
    identity_allows |= caller.is_root;
    let same_account = caller.account == req.resource_account;
    if (same_account && key.allow_principal) || (key.allow && identity_allows) {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

#[derive(Default)]
struct Hits {
    allow: bool,
    /// An `Allow` naming the caller itself (its ARN, or everyone), not just its account.
    allow_principal: bool,
    /// An `Allow` whose principal is everyone, anonymous callers included.
    allow_anonymous: bool,
    deny: bool,
}

fn matches(p: &Policy, req: &Request, resource_policy: bool) -> Hits {
    let mut hits = Hits::default();
    for s in &p.statements {
        let Some(named) = statement_applies(s, req, resource_policy) else {
            continue;
        };
        match s.effect {
            Effect::Deny => hits.deny = true,
            Effect::Allow => {
                hits.allow = true;
                hits.allow_principal |= named != Named::Account;
                if matches!(s.principal, Some(Principals::Any)) {
                    hits.allow_anonymous = true;
                }
            }
        }
    }
    hits
}

/// How a statement's `Principal` names the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    No,
    /// Through its account (`"123456789012"`, `arn:aws:iam::123456789012:root`).
    Account,
    Principal,
}

/// Whether the statement applies to the request, and how it named the caller (identity
/// policies name nobody: [`Named::Principal`]).
fn statement_applies(s: &Statement, req: &Request, resource_policy: bool) -> Option<Named> {
    let mut named = Named::Principal;
    if resource_policy {
        named = match (&s.principal, &s.not_principal) {
            (Some(p), _) => principal_matches(p, req.caller),
            (None, Some(np)) if principal_matches(np, req.caller) == Named::No => Named::Principal,
            _ => Named::No,
        };
        if named == Named::No {
            return None;
        }
    }
    let action = match (&s.action, &s.not_action) {
        (Some(a), _) => a.iter().any(|p| action_matches(p, req.action)),
        (None, Some(na)) => !na.iter().any(|p| action_matches(p, req.action)),
        (None, None) => false,
    };
    if !action {
        return None;
    }
    let resource = match (&s.resource, &s.not_resource) {
        (Some(r), _) => r.iter().any(|p| resource_matches(p, req)),
        (None, Some(nr)) => !nr.iter().any(|p| resource_matches(p, req)),
        // A resource policy's statement is about its own resource.
        (None, None) => true,
    };
    (resource && s.conditions.iter().all(|c| condition::holds(c, req.context))).then_some(named)
}

fn principal_matches(p: &Principals, caller: Option<&Caller>) -> Named {
    let map = match p {
        Principals::Any => return Named::Principal,
        Principals::Some(m) => m,
    };
    let Some(caller) = caller else { return Named::No };
    let Some(aws) = map.get("AWS") else { return Named::No };
    let mut named = Named::No;
    for v in aws {
        if v == "*" || caller.arns().any(|a| a == v) {
            return Named::Principal;
        }
        // An account (its id or root ARN) names every principal of that account; the root itself
        // is the account.
        if v == &caller.account || *v == format!("arn:aws:iam::{}:root", caller.account) {
            named = if caller.is_root { Named::Principal } else { Named::Account };
        }
    }
    named
}

/// `service:Action` patterns are case-insensitive, with `*` and `?`.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    glob(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

fn resource_matches(pattern: &str, req: &Request) -> bool {
    match substitute(pattern, req.context) {
        Some(p) => glob(&p, req.resource),
        None => false,
    }
}

/// Replaces `${key}` policy variables (and `${key, 'default'}`, `${*}`, `${?}`, `${$}`) from the
/// context. `None` if a variable has no value and no default: the element then matches nothing.
pub fn substitute(s: &str, ctx: &Context) -> Option<String> {
    if !s.contains("${") {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Some(out);
        };
        let inner = after[..end].trim();
        match inner {
            "*" => out.push('*'),
            "?" => out.push('?'),
            "$" => out.push('$'),
            _ => {
                let (key, default) = match inner.split_once(',') {
                    Some((k, d)) => (k.trim(), Some(d.trim().trim_matches('\'').to_string())),
                    None => (inner, None),
                };
                match ctx.get(key).and_then(|v| v.first()) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&default?),
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests;
