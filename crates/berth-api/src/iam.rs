//! The IAM and STS Query APIs on `POST /`: a form-encoded body naming the `Action`, signed with
//! SigV4 (service `iam` or `sts`), answered in XML as AWS does, so `aws iam ...` and
//! `aws sts ...` with `--endpoint-url` work. Only the calls a registry's users need are here
//! (docs/ACCESS-CONTROL.md lists them); the others answer `InvalidAction`.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_service::iam::{Entity, KeyInfo, Kind, ManagedPolicy, NewEntity, PolicyVersion};
use berth_service::{Error, Principal, Registry, Who};

use crate::AppState;
use crate::aws::Refusal;
use crate::error::iam_code;

const IAM_NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const MAX_BODY: usize = 256 * 1024;

/// Whether a `POST /` is a Query-API call (form-encoded, no `X-Amz-Target`).
pub fn is_query(req: &Request) -> bool {
    !req.headers().contains_key("x-amz-target")
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn is_sts(action: &str) -> bool {
    matches!(action, "AssumeRole" | "GetCallerIdentity")
}

/// A small XML writer: elements and escaped text.
#[derive(Default)]
struct Xml(String);

impl Xml {
    fn open(&mut self, name: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    fn close(&mut self, name: &str) -> &mut Self {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    fn el(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        for c in text.chars() {
            match c {
                '<' => self.0.push_str("&lt;"),
                '>' => self.0.push_str("&gt;"),
                '&' => self.0.push_str("&amp;"),
                '"' => self.0.push_str("&quot;"),
                '\'' => self.0.push_str("&apos;"),
                c => self.0.push(c),
            }
        }
        self.close(name)
    }

    fn opt(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.el(name, t);
        }
        self
    }
}

/// ISO 8601, as IAM writes dates.
fn date(ms: i64) -> String {
    berth_core::time::format_rfc3339(ms.div_euclid(1000))
}

/// Policy documents travel URL-encoded in IAM responses (the SDKs decode them).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"))], body).into_response()
}

fn error_response(ns: &str, request_id: &str, e: &Error) -> Response {
    let (status, code) = iam_code(e);
    let message = if e.is_internal() {
        tracing::error!(error = %e, "request failed");
        "internal server error; see the server log".to_string()
    } else {
        e.to_string()
    };
    error_xml(ns, request_id, status, code, &message)
}

fn error_xml(ns: &str, request_id: &str, status: StatusCode, code: &str, message: &str) -> Response {
    let mut x = Xml::default();
    x.0.push_str(&format!("<ErrorResponse xmlns=\"{ns}\">"));
    x.open("Error");
    x.el("Type", if status.is_server_error() { "Receiver" } else { "Sender" });
    x.el("Code", code).el("Message", message).close("Error");
    x.el("RequestId", request_id).close("ErrorResponse");
    xml_response(status, x.0)
}

pub async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut res = handle_inner(&st, req, &request_id).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-amzn-requestid", v);
    }
    res
}

async fn handle_inner(st: &AppState, req: Request, request_id: &str) -> Response {
    let (parts, body) = req.into_parts();
    // The service is known from the Action, in the body: the one read below, once signed.
    let mut action = String::new();
    let signed = crate::aws::authenticate(st, &parts, body, MAX_BODY, |body| {
        action =
            form_urlencoded::parse(body).find(|(k, _)| k == "Action").map(|(_, v)| v.into_owned()).unwrap_or_default();
        if is_sts(&action) { "sts" } else { "iam" }
    })
    .await;
    let mut event = crate::aws::event(&action, &parts);
    let ns = if is_sts(&action) { STS_NS } else { IAM_NS };
    let (principal, params) = match signed {
        Ok(s) => {
            let params: HashMap<String, String> = form_urlencoded::parse(&s.payload).into_owned().collect();
            // What runs is what was signed: the Action of the verified payload, for the service
            // the signature was checked for.
            let signed_action = params.get("Action").cloned().unwrap_or_default();
            if is_sts(&signed_action) != is_sts(&action) {
                let e = Error::InvalidInput("the Action of the payload does not match the signed service".into());
                return error_response(ns, request_id, &e);
            }
            action = signed_action;
            event.name = action.clone();
            (s.principal, params)
        }
        Err(Refusal::Sig(e)) => {
            event.error = Some(format!("{}: {e}", e.aws_type()));
            st.registry.audit(event).await;
            let code = e.aws_type().trim_end_matches("Exception");
            return error_xml(ns, request_id, StatusCode::FORBIDDEN, code, &e.to_string());
        }
        Err(Refusal::Service(e)) => {
            event.error = Some(format!("{}: {e}", iam_code(&e).1));
            st.registry.audit(event).await;
            return error_response(ns, request_id, &e);
        }
    };
    let ip = event.source_ip;
    event.principal = Some(principal.arn.clone());
    let secure = crate::serve::is_secure(&parts.extensions);
    let who = Who { principal: Some(principal.clone()), source_ip: ip, secure, ..Default::default() };
    let account = Registry::principal_account(&principal);
    let call = Call { st, who: &who, p: &principal, account: &account, params: &params };
    let mut x = Xml::default();
    let result = call.dispatch(&action, &mut x, &mut event.resource).await;
    event.allowed = !matches!(result, Err(Error::AccessDenied(_) | Error::Throttled(_)));
    event.error = result.as_ref().err().map(|e| iam_code(e).1.to_string());
    st.registry.audit(event).await;
    match result {
        Ok(true) => {
            let mut out = format!("<{action}Response xmlns=\"{ns}\">");
            if !x.0.is_empty() {
                out.push_str(&format!("<{action}Result>{}</{action}Result>", x.0));
            }
            out.push_str(&format!(
                "<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
            ));
            xml_response(StatusCode::OK, out)
        }
        Ok(false) => error_xml(
            ns,
            request_id,
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("Berth does not support the IAM/STS action {action:?} (see docs/ACCESS-CONTROL.md)"),
        ),
        Err(e) => error_response(ns, request_id, &e),
    }
}

struct Call<'a> {
    st: &'a AppState,
    who: &'a Who,
    p: &'a Principal,
    account: &'a str,
    params: &'a HashMap<String, String>,
}

type R = Result<bool, Error>;

impl Call<'_> {
    fn req(&self, name: &str) -> Result<&str, Error> {
        self.params.get(name).map(String::as_str).filter(|v| !v.is_empty()).ok_or_else(|| {
            Error::Validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                lower_first(name)
            ))
        })
    }

    fn opt(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn int(&self, name: &str) -> Result<Option<i64>, Error> {
        self.opt(name)
            .map(|v| v.parse().map_err(|_| Error::Validation(format!("{name} must be a whole number, not {v:?}"))))
            .transpose()
    }

    fn arn(&self, kind: Kind, name: &str) -> String {
        format!("arn:aws:iam::{}:{}/{name}", self.account, kind.as_str())
    }

    async fn allow(&self, action: &str, resource: &str) -> Result<(), Error> {
        self.st.registry.check_iam(self.who, &format!("iam:{action}"), resource).await
    }

    async fn dispatch(&self, action: &str, x: &mut Xml, resource: &mut Option<String>) -> R {
        let r = &self.st.registry;
        let a = self.account;
        // The entity an action is about, from its parameters.
        let target = |k: Kind, p: &str| self.opt(p).map(|n| self.arn(k, n));
        let (kind, owner_param) = match action {
            a if a.contains("User") && !a.contains("Group")
                || a.ends_with("AccessKey")
                || a.ends_with("AccessKeys") =>
            {
                (Some(Kind::User), "UserName")
            }
            a if a.contains("Group") => (Some(Kind::Group), "GroupName"),
            a if a.contains("Role") && action != "AssumeRole" => (Some(Kind::Role), "RoleName"),
            _ => (None, ""),
        };
        *resource = match kind {
            Some(k) => target(k, owner_param),
            None => self.opt("PolicyArn").or(self.opt("RoleArn")).map(str::to_string),
        };
        let res = resource.clone().unwrap_or_else(|| "*".to_string());
        match action {
            "GetCallerIdentity" => {
                let id = r
                    .identity(self.p)
                    .await?
                    .ok_or_else(|| Error::Unauthorized("the caller no longer exists".into()))?;
                x.el("Arn", &id.caller.arn).el("UserId", &id.caller.userid).el("Account", &id.caller.account);
            }
            "AssumeRole" => {
                let s = r
                    .assume_role(
                        self.who,
                        self.req("RoleArn")?,
                        self.req("RoleSessionName")?,
                        self.int("DurationSeconds")?,
                    )
                    .await?;
                x.open("Credentials")
                    .el("AccessKeyId", &s.access_key_id)
                    .el("SecretAccessKey", &s.secret)
                    .el("SessionToken", &s.token)
                    .el("Expiration", &berth_core::time::format_rfc3339(s.expires))
                    .close("Credentials");
                x.open("AssumedRoleUser")
                    .el("AssumedRoleId", &s.assumed_role_id)
                    .el("Arn", &s.arn)
                    .close("AssumedRoleUser");
            }
            // ---- users, groups, roles ----
            "CreateUser" | "CreateGroup" | "CreateRole" => {
                let k = kind.expect("entity action");
                let name = self.req(owner_param)?;
                self.allow(action, &self.arn(k, name)).await?;
                let trust = if k == Kind::Role { Some(self.req("AssumeRolePolicyDocument")?) } else { None };
                let e = r
                    .create_entity(
                        a,
                        NewEntity {
                            kind: k,
                            name,
                            path: self.opt("Path"),
                            trust_policy: trust,
                            description: self.opt("Description"),
                            max_session: self.int("MaxSessionDuration")?,
                        },
                    )
                    .await?;
                entity_xml(x, &e);
            }
            "GetUser" if self.opt("UserName").is_none() => {
                // Without a name: the caller itself.
                let id = r
                    .identity(self.p)
                    .await?
                    .ok_or_else(|| Error::Unauthorized("the caller no longer exists".into()))?;
                match id.caller.username.as_deref() {
                    Some(u) => entity_xml(x, &r.entity(a, Kind::User, u).await?),
                    None => {
                        x.open("User")
                            .el("UserId", &id.caller.userid)
                            .el("Arn", &id.caller.arn)
                            .el("CreateDate", &date(0))
                            .close("User");
                    }
                }
            }
            "GetUser" | "GetRole" => {
                self.allow(action, &res).await?;
                let e = r.entity(a, kind.expect("entity action"), self.req(owner_param)?).await?;
                entity_xml(x, &e);
            }
            "GetGroup" => {
                self.allow(action, &res).await?;
                let (g, users) = r.group(a, self.req("GroupName")?).await?;
                entity_xml(x, &g);
                x.open("Users");
                for u in &users {
                    x.open("member");
                    entity_fields(x, u);
                    x.close("member");
                }
                x.close("Users").el("IsTruncated", "false");
            }
            "ListUsers" | "ListGroups" | "ListRoles" => {
                self.allow(action, "*").await?;
                let k = kind.expect("entity action");
                let list = r.entities(a, k, self.opt("PathPrefix")).await?;
                entity_list(x, &format!("{}s", k.capitalized()), &list);
            }
            "DeleteUser" | "DeleteGroup" | "DeleteRole" => {
                self.allow(action, &res).await?;
                r.delete_entity(a, kind.expect("entity action"), self.req(owner_param)?).await?;
            }
            "UpdateAssumeRolePolicy" => {
                self.allow(action, &res).await?;
                r.update_trust_policy(a, self.req("RoleName")?, self.req("PolicyDocument")?).await?;
            }
            "AddUserToGroup" | "RemoveUserFromGroup" => {
                let group = self.req("GroupName")?;
                *resource = Some(self.arn(Kind::Group, group));
                self.allow(action, &self.arn(Kind::Group, group)).await?;
                let user = self.req("UserName")?;
                if action == "AddUserToGroup" {
                    r.add_user_to_group(a, group, user).await?;
                } else {
                    r.remove_user_from_group(a, group, user).await?;
                }
            }
            "ListGroupsForUser" => {
                self.allow(action, &res).await?;
                let list = r.groups_for_user(a, self.req("UserName")?).await?;
                entity_list(x, "Groups", &list);
            }
            // ---- access keys ----
            "CreateAccessKey" => {
                let user = self.user_or_self().await?;
                self.allow(action, &self.arn(Kind::User, &user)).await?;
                let (key, info) = r.create_access_key(a, &user).await?;
                x.open("AccessKey")
                    .el("UserName", &info.user_name)
                    .el("AccessKeyId", &key.id)
                    .el("Status", &info.status)
                    .el("SecretAccessKey", &key.secret)
                    .el("CreateDate", &date(info.created_at))
                    .close("AccessKey");
            }
            "ListAccessKeys" => {
                let user = self.user_or_self().await?;
                self.allow(action, &self.arn(Kind::User, &user)).await?;
                let keys = r.access_keys(a, &user).await?;
                x.open("AccessKeyMetadata");
                for k in &keys {
                    key_xml(x, k);
                }
                x.close("AccessKeyMetadata").el("IsTruncated", "false");
            }
            "UpdateAccessKey" | "DeleteAccessKey" => {
                let user = self.user_or_self().await?;
                self.allow(action, &self.arn(Kind::User, &user)).await?;
                let id = self.req("AccessKeyId")?;
                if action == "UpdateAccessKey" {
                    r.set_access_key_status(a, &user, id, self.req("Status")?).await?;
                } else {
                    r.delete_access_key(a, &user, id).await?;
                }
            }
            // ---- inline policies ----
            "PutUserPolicy" | "PutGroupPolicy" | "PutRolePolicy" => {
                self.allow(action, &res).await?;
                let k = kind.expect("entity action");
                r.put_inline_policy(a, k, self.req(owner_param)?, self.req("PolicyName")?, self.req("PolicyDocument")?)
                    .await?;
            }
            "GetUserPolicy" | "GetGroupPolicy" | "GetRolePolicy" => {
                self.allow(action, &res).await?;
                let k = kind.expect("entity action");
                let (owner, name) = (self.req(owner_param)?, self.req("PolicyName")?);
                let doc = r.inline_policy(a, k, owner, name).await?;
                x.el(owner_param, owner).el("PolicyName", name).el("PolicyDocument", &url_encode(&doc));
            }
            "ListUserPolicies" | "ListGroupPolicies" | "ListRolePolicies" => {
                self.allow(action, &res).await?;
                let names = r.inline_policy_names(a, kind.expect("entity action"), self.req(owner_param)?).await?;
                x.open("PolicyNames");
                for n in &names {
                    x.el("member", n);
                }
                x.close("PolicyNames").el("IsTruncated", "false");
            }
            "DeleteUserPolicy" | "DeleteGroupPolicy" | "DeleteRolePolicy" => {
                self.allow(action, &res).await?;
                r.delete_inline_policy(
                    a,
                    kind.expect("entity action"),
                    self.req(owner_param)?,
                    self.req("PolicyName")?,
                )
                .await?;
            }
            // ---- managed policies ----
            "AttachUserPolicy" | "AttachGroupPolicy" | "AttachRolePolicy" => {
                self.allow(action, &res).await?;
                r.attach_policy(a, kind.expect("entity action"), self.req(owner_param)?, self.req("PolicyArn")?)
                    .await?;
            }
            "DetachUserPolicy" | "DetachGroupPolicy" | "DetachRolePolicy" => {
                self.allow(action, &res).await?;
                r.detach_policy(a, kind.expect("entity action"), self.req(owner_param)?, self.req("PolicyArn")?)
                    .await?;
            }
            "ListAttachedUserPolicies" | "ListAttachedGroupPolicies" | "ListAttachedRolePolicies" => {
                self.allow(action, &res).await?;
                let list = r.attached_policies(a, kind.expect("entity action"), self.req(owner_param)?).await?;
                x.open("AttachedPolicies");
                for (name, arn) in &list {
                    x.open("member").el("PolicyName", name).el("PolicyArn", arn).close("member");
                }
                x.close("AttachedPolicies").el("IsTruncated", "false");
            }
            "CreatePolicy" => {
                let name = self.req("PolicyName")?;
                let arn = format!("arn:aws:iam::{a}:policy{}{name}", self.opt("Path").unwrap_or("/"));
                *resource = Some(arn.clone());
                self.allow(action, &arn).await?;
                let p = r
                    .create_managed_policy(
                        a,
                        name,
                        self.opt("Path"),
                        self.req("PolicyDocument")?,
                        self.opt("Description"),
                    )
                    .await?;
                policy_xml(x, "Policy", &p);
            }
            "GetPolicy" => {
                self.allow(action, &res).await?;
                let p = r.managed_policy(self.req("PolicyArn")?).await?;
                policy_xml(x, "Policy", &p);
            }
            "ListPolicies" => {
                self.allow(action, "*").await?;
                let scope = self.opt("Scope").unwrap_or("All");
                if !matches!(scope, "All" | "AWS" | "Local") {
                    return Err(Error::Validation(format!(
                        "1 validation error detected: Value '{scope}' at 'scope' failed to satisfy constraint: Member \
                         must satisfy enum value set: [All, AWS, Local]"
                    )));
                }
                let only = self.opt("OnlyAttached") == Some("true");
                let list = r.managed_policies(a, scope, only).await?;
                x.open("Policies");
                for p in &list {
                    policy_xml(x, "member", p);
                }
                x.close("Policies").el("IsTruncated", "false");
            }
            "DeletePolicy" => {
                self.allow(action, &res).await?;
                r.delete_managed_policy(a, self.req("PolicyArn")?).await?;
            }
            "CreatePolicyVersion" => {
                self.allow(action, &res).await?;
                let v = r
                    .create_policy_version(
                        a,
                        self.req("PolicyArn")?,
                        self.req("PolicyDocument")?,
                        self.opt("SetAsDefault") == Some("true"),
                    )
                    .await?;
                version_xml(x, "PolicyVersion", &v);
            }
            "GetPolicyVersion" => {
                self.allow(action, &res).await?;
                let v = r.policy_version(self.req("PolicyArn")?, self.req("VersionId")?).await?;
                version_xml(x, "PolicyVersion", &v);
            }
            "ListPolicyVersions" => {
                self.allow(action, &res).await?;
                let list = r.policy_versions(self.req("PolicyArn")?).await?;
                x.open("Versions");
                for v in &list {
                    version_xml(x, "member", v);
                }
                x.close("Versions").el("IsTruncated", "false");
            }
            "DeletePolicyVersion" => {
                self.allow(action, &res).await?;
                r.delete_policy_version(a, self.req("PolicyArn")?, self.req("VersionId")?).await?;
            }
            "SetDefaultPolicyVersion" => {
                self.allow(action, &res).await?;
                r.set_default_policy_version(a, self.req("PolicyArn")?, self.req("VersionId")?).await?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `UserName`, or the calling user when absent (as IAM's key operations allow).
    async fn user_or_self(&self) -> Result<String, Error> {
        if let Some(u) = self.opt("UserName") {
            return Ok(u.to_string());
        }
        let id = self.st.registry.identity(self.p).await?;
        id.and_then(|i| i.caller.username.clone()).ok_or_else(|| {
            Error::Validation(
                "UserName is required when the caller is not an IAM user (an account root or a role)".into(),
            )
        })
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_lowercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

fn entity_fields(x: &mut Xml, e: &Entity) {
    let t = e.kind.capitalized();
    x.el("Path", &e.path)
        .el(&format!("{t}Name"), &e.name)
        .el(&format!("{t}Id"), &e.id)
        .el("Arn", &e.arn)
        .el("CreateDate", &date(e.created_at));
    if e.kind == Kind::Role {
        x.opt("AssumeRolePolicyDocument", e.trust_policy.as_deref().map(url_encode).as_deref())
            .opt("Description", e.description.as_deref());
        if let Some(m) = e.max_session {
            x.el("MaxSessionDuration", &m.to_string());
        }
    }
}

fn entity_xml(x: &mut Xml, e: &Entity) {
    let t = e.kind.capitalized();
    x.open(t);
    entity_fields(x, e);
    x.close(t);
}

fn entity_list(x: &mut Xml, wrapper: &str, list: &[Entity]) {
    x.open(wrapper);
    for e in list {
        x.open("member");
        entity_fields(x, e);
        x.close("member");
    }
    x.close(wrapper).el("IsTruncated", "false");
}

fn key_xml(x: &mut Xml, k: &KeyInfo) {
    x.open("member")
        .el("UserName", &k.user_name)
        .el("AccessKeyId", &k.id)
        .el("Status", &k.status)
        .el("CreateDate", &date(k.created_at))
        .close("member");
}

fn policy_xml(x: &mut Xml, wrapper: &str, p: &ManagedPolicy) {
    x.open(wrapper)
        .el("PolicyName", &p.name)
        .el("PolicyId", &p.id)
        .el("Arn", &p.arn)
        .el("Path", &p.path)
        .el("DefaultVersionId", &p.default_version)
        .el("AttachmentCount", &p.attachments.to_string())
        .el("IsAttachable", "true")
        .opt("Description", p.description.as_deref())
        .el("CreateDate", &date(p.created_at))
        .el("UpdateDate", &date(p.updated_at))
        .close(wrapper);
}

fn version_xml(x: &mut Xml, wrapper: &str, v: &PolicyVersion) {
    x.open(wrapper)
        .el("Document", &url_encode(&v.document))
        .el("VersionId", &v.version)
        .el("IsDefaultVersion", if v.is_default { "true" } else { "false" })
        .el("CreateDate", &date(v.created_at))
        .close(wrapper);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_and_url_encoding() {
        let mut x = Xml::default();
        x.el("A", "<b & 'c'>");
        assert_eq!(x.0, "<A>&lt;b &amp; &apos;c&apos;&gt;</A>");
        assert_eq!(url_encode(r#"{"a": 1}"#), "%7B%22a%22%3A%201%7D");
        assert_eq!(lower_first("UserName"), "userName");
    }
}
