//! Policy documents from JSON, checked the way IAM checks them; every error names the element.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::condition::Operator;
use super::{Condition, Effect, Policy, Principals, SetQualifier, Statement};

/// Where a policy is attached decides which elements it must and must not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a user, group or role: no `Principal`; `Resource` required.
    Identity,
    /// Attached to a resource (repository, registry, role trust): `Principal` required;
    /// `Resource` optional (it defaults to the resource itself).
    Resource,
}

/// A policy that IAM would refuse (`MalformedPolicyDocument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// Most statements in one policy.
const MAX_STATEMENTS: usize = 1000;

pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
    let v: Value = serde_json::from_str(text).map_err(|e| PolicyError(format!("the policy is not valid JSON: {e}")))?;
    let Value::Object(top) = v else {
        return Err(PolicyError("the policy must be a JSON object".into()));
    };
    for k in top.keys() {
        if !["Version", "Id", "Statement"].contains(&k.as_str()) {
            return Err(PolicyError(format!("unknown policy element '{k}' (expected Version, Id, Statement)")));
        }
    }
    let version = match top.get("Version") {
        None => None,
        Some(Value::String(s)) if s == "2012-10-17" || s == "2008-10-17" => Some(s.clone()),
        Some(other) => {
            return Err(PolicyError(format!("Version must be \"2012-10-17\" or \"2008-10-17\", not {other}")));
        }
    };
    let id = match top.get("Id") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(PolicyError("Id must be a string".into())),
    };
    let statements = match top.get("Statement") {
        None => return Err(PolicyError("the policy has no Statement".into())),
        Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
        Some(o @ Value::Object(_)) => vec![o],
        Some(_) => return Err(PolicyError("Statement must be an object or an array of objects".into())),
    };
    if statements.is_empty() {
        return Err(PolicyError("Statement must not be empty".into()));
    }
    if statements.len() > MAX_STATEMENTS {
        return Err(PolicyError(format!("a policy may have at most {MAX_STATEMENTS} statements")));
    }
    let mut out = Vec::with_capacity(statements.len());
    let mut sids = Vec::new();
    for (i, s) in statements.into_iter().enumerate() {
        let st = statement(s, kind).map_err(|e| PolicyError(format!("Statement[{i}]: {}", e.0)))?;
        if let Some(sid) = &st.sid {
            if sids.contains(sid) {
                return Err(PolicyError(format!("Statement[{i}]: Sid '{sid}' is used twice; Sids must be unique")));
            }
            sids.push(sid.clone());
        }
        out.push(st);
    }
    Ok(Policy { version, id, statements: out })
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                _ => Err(PolicyError(format!("{what} entries must be strings"))),
            })
            .collect::<Result<_, _>>()?,
        Value::Array(_) => return Err(PolicyError(format!("{what} must not be empty"))),
        _ => return Err(PolicyError(format!("{what} must be a string or an array of strings"))),
    };
    if list.iter().any(String::is_empty) {
        return Err(PolicyError(format!("{what} entries must not be empty")));
    }
    Ok(list)
}

fn statement(v: &Value, kind: PolicyKind) -> Result<Statement, PolicyError> {
    let Value::Object(m) = v else { return Err(PolicyError("a statement must be an object".into())) };
    const KEYS: [&str; 9] =
        ["Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"];
    for k in m.keys() {
        if !KEYS.contains(&k.as_str()) {
            return Err(PolicyError(format!("unknown element '{k}' (expected one of {})", KEYS.join(", "))));
        }
    }
    let sid = match m.get("Sid") {
        None => None,
        Some(Value::String(s)) if s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-' || c == '_') => {
            Some(s.clone())
        }
        Some(_) => return Err(PolicyError("Sid must be a string of letters, digits, spaces, - and _".into())),
    };
    let effect = match m.get("Effect") {
        Some(Value::String(s)) if s == "Allow" => Effect::Allow,
        Some(Value::String(s)) if s == "Deny" => Effect::Deny,
        Some(other) => return Err(PolicyError(format!("Effect must be \"Allow\" or \"Deny\", not {other}"))),
        None => return Err(PolicyError("Effect is required".into())),
    };
    let principal = m.get("Principal").map(|p| principals(p, "Principal")).transpose()?;
    let not_principal = m.get("NotPrincipal").map(|p| principals(p, "NotPrincipal")).transpose()?;
    match kind {
        PolicyKind::Identity if principal.is_some() || not_principal.is_some() => {
            return Err(PolicyError("an identity policy cannot have Principal or NotPrincipal".into()));
        }
        PolicyKind::Resource if principal.is_none() && not_principal.is_none() => {
            return Err(PolicyError("a resource policy statement needs Principal or NotPrincipal".into()));
        }
        _ => {}
    }
    if principal.is_some() && not_principal.is_some() {
        return Err(PolicyError("Principal and NotPrincipal cannot both be given".into()));
    }
    let (action, not_action) = pair(m, "Action", "NotAction", true)?;
    for a in action.iter().chain(not_action.iter()).flatten() {
        if a != "*" && !a.contains(':') {
            return Err(PolicyError(format!("action '{a}' must be service:Action (e.g. ecr:BatchGetImage) or *")));
        }
    }
    let (resource, not_resource) = pair(m, "Resource", "NotResource", kind == PolicyKind::Identity)?;
    for r in resource.iter().chain(not_resource.iter()).flatten() {
        if r != "*" && !r.starts_with("arn:") {
            return Err(PolicyError(format!(
                "resource '{r}' must be an ARN (arn:aws:ecr:region:account:repository/name) or *"
            )));
        }
    }
    let conditions = match m.get("Condition") {
        None => Vec::new(),
        Some(c) => conditions(c)?,
    };
    Ok(Statement { sid, effect, principal, not_principal, action, not_action, resource, not_resource, conditions })
}

type Pair = (Option<Vec<String>>, Option<Vec<String>>);

fn pair(m: &Map<String, Value>, a: &str, not_a: &str, required: bool) -> Result<Pair, PolicyError> {
    let x = m.get(a).map(|v| strings(v, a)).transpose()?;
    let y = m.get(not_a).map(|v| strings(v, not_a)).transpose()?;
    match (&x, &y) {
        (Some(_), Some(_)) => Err(PolicyError(format!("{a} and {not_a} cannot both be given"))),
        (None, None) if required => Err(PolicyError(format!("{a} or {not_a} is required"))),
        _ => Ok((x, y)),
    }
}

fn principals(v: &Value, what: &str) -> Result<Principals, PolicyError> {
    match v {
        Value::String(s) if s == "*" => Ok(Principals::Any),
        Value::Object(m) if !m.is_empty() => {
            let mut out = HashMap::new();
            for (k, v) in m {
                if !["AWS", "Service", "Federated", "CanonicalUser"].contains(&k.as_str()) {
                    return Err(PolicyError(format!(
                        "{what} key '{k}' is not one of AWS, Service, Federated, CanonicalUser"
                    )));
                }
                let list = strings(v, &format!("{what}.{k}"))?;
                if k == "AWS" {
                    for p in &list {
                        let account = p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit());
                        if p != "*" && !account && !p.starts_with("arn:aws:iam::") && !p.starts_with("arn:aws:sts::") {
                            return Err(PolicyError(format!(
                                "{what}.AWS '{p}' must be *, a 12-digit account id or an IAM/STS ARN"
                            )));
                        }
                    }
                    if list.iter().any(|p| p == "*") && m.len() == 1 {
                        return Ok(Principals::Any);
                    }
                }
                out.insert(k.clone(), list);
            }
            Ok(Principals::Some(out))
        }
        _ => Err(PolicyError(format!("{what} must be \"*\" or an object like {{\"AWS\": [...]}}"))),
    }
}

fn conditions(v: &Value) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = v else { return Err(PolicyError("Condition must be an object".into())) };
    let mut out = Vec::new();
    for (name, body) in ops {
        let (set, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (SetQualifier::ForAnyValue, r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (SetQualifier::ForAllValues, r)
        } else {
            (SetQualifier::Single, name.as_str())
        };
        let (if_exists, base) = match rest.strip_suffix("IfExists") {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let operator = Operator::parse(base)
            .ok_or_else(|| PolicyError(format!("Condition operator '{name}' is not a known operator")))?;
        if if_exists && operator == Operator::Null {
            return Err(PolicyError("Null cannot be combined with IfExists".into()));
        }
        let Value::Object(keys) = body else {
            return Err(PolicyError(format!("Condition '{name}' must map keys to values")));
        };
        if keys.is_empty() {
            return Err(PolicyError(format!("Condition '{name}' names no key")));
        }
        for (key, vals) in keys {
            if key.is_empty() || key.len() > 128 {
                return Err(PolicyError(format!("Condition key '{key}' must be 1 to 128 characters")));
            }
            let values = match vals {
                Value::Bool(b) => vec![b.to_string()],
                Value::Number(n) => vec![n.to_string()],
                Value::Array(a) if !a.is_empty() => a
                    .iter()
                    .map(|x| match x {
                        Value::String(s) => Ok(s.clone()),
                        Value::Bool(b) => Ok(b.to_string()),
                        Value::Number(n) => Ok(n.to_string()),
                        _ => Err(PolicyError(format!("Condition '{name}' key '{key}': values must be scalars"))),
                    })
                    .collect::<Result<_, _>>()?,
                v => strings(v, &format!("Condition '{name}' key '{key}'"))?,
            };
            for val in &values {
                operator.check_value(val).map_err(|e| PolicyError(format!("Condition '{name}' key '{key}': {e}")))?;
            }
            out.push(Condition { operator, if_exists, set, key: key.to_ascii_lowercase(), values });
        }
    }
    Ok(out)
}
