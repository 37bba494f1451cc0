//! The IAM and STS Query APIs on `POST /`: a form-encoded body naming the `Action`, signed with
//! SigV4 (service `iam` or `sts`), answered in XML as AWS does, so `aws iam ...` and
//! `aws sts ...` with `--endpoint-url` work. Only the calls a registry's users need are here
//! (docs/ACCESS-CONTROL.md lists them); the others answer `InvalidAction`.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_service::iam::{CurrentUser, Entity, KeyInfo, Kind, ManagedPolicy, NewEntity, PolicyVersion};
use berth_service::{Caller, Error};

use crate::aws::Refusal;
use berth_service::error::{Invalid, InvalidKind};

use crate::error::{iam_code, iam_message};
use crate::state::AppState;

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
    if e.is_internal() {
        tracing::error!(error = %e, "request failed");
    }
    error_xml(ns, request_id, status, code, &iam_message(e))
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
    crate::aws::with_request_id(handle_inner(&st, req, &request_id).await, &request_id)
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
                let e = Error::bad_request("the Action of the payload does not match the signed service".into());
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
    let account = berth_service::identity::principal_account(&principal);
    let caller = Caller::principal(principal).from(ip, secure);
    let call = Call { st, caller: &caller, account: &account, params: &params };
    let mut x = Xml::default();
    let result = call.dispatch(&action, &mut x, &mut event.resource).await;
    event.allowed = !matches!(&result, Err(e) if e.is_denied() || matches!(e, Error::Throttled(_)));
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
    caller: &'a Caller,
    /// The caller's account, for the ARNs audit events name.
    account: &'a str,
    params: &'a HashMap<String, String>,
}

type R = Result<bool, Error>;

impl Call<'_> {
    fn req(&self, name: &str) -> Result<&str, Error> {
        self.params.get(name).map(String::as_str).filter(|v| !v.is_empty()).ok_or_else(|| {
            Error::Invalid(Invalid {
                kind: InvalidKind::Validation,
                field: Some(lower_first(name)),
                value: None,
                reason: "Member must not be null".into(),
            })
        })
    }

    fn opt(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn int(&self, name: &str) -> Result<Option<i64>, Error> {
        self.opt(name)
            .map(|v| v.parse().map_err(|_| Error::validation(format!("{name} must be a whole number, not {v:?}"))))
            .transpose()
    }

    fn arn(&self, kind: Kind, name: &str) -> String {
        format!("arn:aws:iam::{}:{}/{name}", self.account, kind.as_str())
    }

    /// Runs `action`: the service decides the caller's `iam:`/`sts:` action itself; `resource`
    /// is what the audit event names.
    async fn dispatch(&self, action: &str, x: &mut Xml, resource: &mut Option<String>) -> R {
        let iam = self.st.registry.iam();
        let c = self.caller;
        // The entity an action is about, from its parameters.
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
            Some(k) => self.opt(owner_param).map(|n| self.arn(k, n)),
            None => self.opt("PolicyArn").or(self.opt("RoleArn")).map(str::to_string),
        };
        let entity = || kind.ok_or_else(|| Error::Internal(format!("{action} names no entity kind")));
        match action {
            "GetCallerIdentity" => {
                let id = iam.caller_identity(c).await?;
                x.el("Arn", &id.arn).el("UserId", &id.userid).el("Account", &id.account);
            }
            "AssumeRole" => {
                let s = iam
                    .assume_role(c, self.req("RoleArn")?, self.req("RoleSessionName")?, self.int("DurationSeconds")?)
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
                let k = entity()?;
                let name = self.req(owner_param)?;
                let trust = if k == Kind::Role { Some(self.req("AssumeRolePolicyDocument")?) } else { None };
                let new = NewEntity {
                    kind: k,
                    name,
                    path: self.opt("Path"),
                    trust_policy: trust,
                    description: self.opt("Description"),
                    max_session: self.int("MaxSessionDuration")?,
                };
                entity_xml(x, &iam.create_entity(c, new).await?);
            }
            // Without a name: the caller itself.
            "GetUser" if self.opt("UserName").is_none() => match iam.current_user(c).await? {
                CurrentUser::User(e) => entity_xml(x, &e),
                CurrentUser::Other { arn, userid } => {
                    x.open("User").el("UserId", &userid).el("Arn", &arn).el("CreateDate", &date(0)).close("User");
                }
            },
            "GetUser" | "GetRole" => {
                let e = iam.get_entity(c, entity()?, self.req(owner_param)?).await?;
                entity_xml(x, &e);
            }
            "GetGroup" => {
                let (g, users) = iam.group(c, self.req("GroupName")?).await?;
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
                let k = entity()?;
                let list = iam.entities(c, k, self.opt("PathPrefix")).await?;
                entity_list(x, &format!("{}s", k.capitalized()), &list);
            }
            "DeleteUser" | "DeleteGroup" | "DeleteRole" => {
                iam.delete_entity(c, entity()?, self.req(owner_param)?).await?;
            }
            "UpdateAssumeRolePolicy" => {
                iam.update_trust_policy(c, self.req("RoleName")?, self.req("PolicyDocument")?).await?;
            }
            "AddUserToGroup" | "RemoveUserFromGroup" => {
                let group = self.req("GroupName")?;
                *resource = Some(self.arn(Kind::Group, group));
                let user = self.req("UserName")?;
                if action == "AddUserToGroup" {
                    iam.add_user_to_group(c, group, user).await?;
                } else {
                    iam.remove_user_from_group(c, group, user).await?;
                }
            }
            "ListGroupsForUser" => {
                let list = iam.groups_for_user(c, self.req("UserName")?).await?;
                entity_list(x, "Groups", &list);
            }
            // ---- access keys ----
            "CreateAccessKey" => {
                let (key, info) = iam.create_access_key(c, self.opt("UserName")).await?;
                x.open("AccessKey")
                    .el("UserName", &info.user_name)
                    .el("AccessKeyId", &key.id)
                    .el("Status", &info.status)
                    .el("SecretAccessKey", &key.secret)
                    .el("CreateDate", &date(info.created_at))
                    .close("AccessKey");
            }
            "ListAccessKeys" => {
                let keys = iam.access_keys(c, self.opt("UserName")).await?;
                x.open("AccessKeyMetadata");
                for k in &keys {
                    key_xml(x, k);
                }
                x.close("AccessKeyMetadata").el("IsTruncated", "false");
            }
            "UpdateAccessKey" => {
                let (id, status) = (self.req("AccessKeyId")?, self.req("Status")?);
                iam.set_access_key_status(c, self.opt("UserName"), id, status).await?;
            }
            "DeleteAccessKey" => {
                iam.delete_access_key(c, self.opt("UserName"), self.req("AccessKeyId")?).await?;
            }
            // ---- inline policies ----
            "PutUserPolicy" | "PutGroupPolicy" | "PutRolePolicy" => {
                let (owner, name, doc) = (self.req(owner_param)?, self.req("PolicyName")?, self.req("PolicyDocument")?);
                iam.put_inline_policy(c, entity()?, owner, name, doc).await?;
            }
            "GetUserPolicy" | "GetGroupPolicy" | "GetRolePolicy" => {
                let (owner, name) = (self.req(owner_param)?, self.req("PolicyName")?);
                let doc = iam.inline_policy(c, entity()?, owner, name).await?;
                x.el(owner_param, owner).el("PolicyName", name).el("PolicyDocument", &url_encode(&doc));
            }
            "ListUserPolicies" | "ListGroupPolicies" | "ListRolePolicies" => {
                let names = iam.inline_policy_names(c, entity()?, self.req(owner_param)?).await?;
                x.open("PolicyNames");
                for n in &names {
                    x.el("member", n);
                }
                x.close("PolicyNames").el("IsTruncated", "false");
            }
            "DeleteUserPolicy" | "DeleteGroupPolicy" | "DeleteRolePolicy" => {
                iam.delete_inline_policy(c, entity()?, self.req(owner_param)?, self.req("PolicyName")?).await?;
            }
            // ---- managed policies ----
            "AttachUserPolicy" | "AttachGroupPolicy" | "AttachRolePolicy" => {
                iam.attach_policy(c, entity()?, self.req(owner_param)?, self.req("PolicyArn")?).await?;
            }
            "DetachUserPolicy" | "DetachGroupPolicy" | "DetachRolePolicy" => {
                iam.detach_policy(c, entity()?, self.req(owner_param)?, self.req("PolicyArn")?).await?;
            }
            "ListAttachedUserPolicies" | "ListAttachedGroupPolicies" | "ListAttachedRolePolicies" => {
                let list = iam.attached_policies(c, entity()?, self.req(owner_param)?).await?;
                x.open("AttachedPolicies");
                for (name, arn) in &list {
                    x.open("member").el("PolicyName", name).el("PolicyArn", arn).close("member");
                }
                x.close("AttachedPolicies").el("IsTruncated", "false");
            }
            "CreatePolicy" => {
                let name = self.req("PolicyName")?;
                let a = self.account;
                *resource = Some(format!("arn:aws:iam::{a}:policy{}{name}", self.opt("Path").unwrap_or("/")));
                let p = iam
                    .create_managed_policy(
                        c,
                        name,
                        self.opt("Path"),
                        self.req("PolicyDocument")?,
                        self.opt("Description"),
                    )
                    .await?;
                policy_xml(x, "Policy", &p);
            }
            "GetPolicy" => {
                let p = iam.get_managed_policy(c, self.req("PolicyArn")?).await?;
                policy_xml(x, "Policy", &p);
            }
            "ListPolicies" => {
                let scope = self.opt("Scope").unwrap_or("All");
                let list = iam.managed_policies(c, scope, self.opt("OnlyAttached") == Some("true")).await?;
                x.open("Policies");
                for p in &list {
                    policy_xml(x, "member", p);
                }
                x.close("Policies").el("IsTruncated", "false");
            }
            "DeletePolicy" => {
                iam.delete_managed_policy(c, self.req("PolicyArn")?).await?;
            }
            "CreatePolicyVersion" => {
                let default = self.opt("SetAsDefault") == Some("true");
                let v =
                    iam.create_policy_version(c, self.req("PolicyArn")?, self.req("PolicyDocument")?, default).await?;
                version_xml(x, "PolicyVersion", &v);
            }
            "GetPolicyVersion" => {
                let v = iam.policy_version(c, self.req("PolicyArn")?, self.req("VersionId")?).await?;
                version_xml(x, "PolicyVersion", &v);
            }
            "ListPolicyVersions" => {
                let list = iam.policy_versions(c, self.req("PolicyArn")?).await?;
                x.open("Versions");
                for v in &list {
                    version_xml(x, "member", v);
                }
                x.close("Versions").el("IsTruncated", "false");
            }
            "DeletePolicyVersion" => {
                iam.delete_policy_version(c, self.req("PolicyArn")?, self.req("VersionId")?).await?;
            }
            "SetDefaultPolicyVersion" => {
                iam.set_default_policy_version(c, self.req("PolicyArn")?, self.req("VersionId")?).await?;
            }
            _ => return Ok(false),
        }
        Ok(true)
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
