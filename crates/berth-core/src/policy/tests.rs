//! Policy evaluation cases: each names the rule it checks and asserts allow or deny. Includes
//! the examples of AWS's ECR repository-policy documentation (push/pull for named users,
//! cross-account pull, public pull, deny all, deny by source IP, service principals with
//! conditions, tag-based access).

use super::*;

const A: &str = "111122223333";
const B: &str = "444455556666";
const REPO: &str = "arn:aws:ecr:us-east-1:111122223333:repository/app";
const OTHER_REPO: &str = "arn:aws:ecr:us-east-1:111122223333:repository/other";

fn user(account: &str, name: &str) -> Caller {
    Caller {
        arn: format!("arn:aws:iam::{account}:user/{name}"),
        also_known_as: vec![],
        account: account.into(),
        username: Some(name.into()),
        userid: format!("AIDA{}", name.to_uppercase()),
        is_root: false,
    }
}

fn role_session(account: &str, role: &str, session: &str) -> Caller {
    Caller {
        arn: format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
        also_known_as: vec![format!("arn:aws:iam::{account}:role/{role}")],
        account: account.into(),
        username: None,
        userid: format!("AROAROLE:{session}"),
        is_root: false,
    }
}

fn root(account: &str) -> Caller {
    Caller {
        arn: format!("arn:aws:iam::{account}:root"),
        also_known_as: vec![],
        account: account.into(),
        username: None,
        userid: account.into(),
        is_root: true,
    }
}

const PULL: &str = r#"["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer","ecr:BatchCheckLayerAvailability"]"#;
const PUSH: &str = r#"["ecr:BatchGetImage","ecr:BatchCheckLayerAvailability","ecr:CompleteLayerUpload","ecr:GetDownloadUrlForLayer","ecr:InitiateLayerUpload","ecr:PutImage","ecr:UploadLayerPart"]"#;

struct Case {
    name: &'static str,
    identity: Vec<String>,
    resource: Option<String>,
    caller: Option<Caller>,
    action: &'static str,
    resource_arn: &'static str,
    context: Vec<(&'static str, Vec<&'static str>)>,
    want: Decision,
}

fn idp(statements: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":{statements}}}"#)
}

fn case(name: &'static str, caller: Option<Caller>, action: &'static str, want: Decision) -> Case {
    Case { name, identity: vec![], resource: None, caller, action, resource_arn: REPO, context: vec![], want }
}

impl Case {
    fn id(mut self, statements: &str) -> Self {
        self.identity.push(idp(statements));
        self
    }
    fn res(mut self, statements: &str) -> Self {
        self.resource = Some(idp(statements));
        self
    }
    fn on(mut self, arn: &'static str) -> Self {
        self.resource_arn = arn;
        self
    }
    fn ctx(mut self, key: &'static str, values: &[&'static str]) -> Self {
        self.context.push((key, values.to_vec()));
        self
    }
}

use Decision::{Allow, ExplicitDeny as Deny, ImplicitDeny as Implicit};

fn cases() -> Vec<Case> {
    let alice = || Some(user(A, "alice"));
    let bob = || Some(user(A, "bob"));
    let carol_b = || Some(user(B, "carol"));
    let puller_b = || Some(role_session(B, "Puller", "ci"));
    vec![
        // --- basics of identity policies ---
        case("no policy: implicit deny", alice(), "ecr:BatchGetImage", Implicit),
        case("identity allow exact action", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"}]"#),
        case("identity allow other action only", alice(), "ecr:PutImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"}]"#),
        case("action wildcard ecr:*", alice(), "ecr:PutImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#),
        case("action prefix wildcard ecr:Batch*", alice(), "ecr:BatchDeleteImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:Batch*","Resource":"*"}]"#),
        case("action ? wildcard", alice(), "ecr:PutImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:Put?mage","Resource":"*"}]"#),
        case("actions are case-insensitive", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ECR:batchgetimage","Resource":"*"}]"#),
        case("other service's action does not match", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]"#),
        case("NotAction allows everything else", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","NotAction":"ecr:DeleteRepository","Resource":"*"}]"#),
        case("NotAction excludes its action", alice(), "ecr:DeleteRepository", Implicit)
            .id(r#"[{"Effect":"Allow","NotAction":"ecr:DeleteRepository","Resource":"*"}]"#),
        case("resource exact ARN", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111122223333:repository/app"}]"#),
        case("resource of another repository", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111122223333:repository/app"}]"#)
            .on(OTHER_REPO),
        case("resource wildcard repository/*", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:111122223333:repository/*"}]"#),
        case("resource is case-sensitive", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111122223333:repository/APP"}]"#),
        case("NotResource excludes a repository", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","NotResource":"arn:aws:ecr:us-east-1:111122223333:repository/app"}]"#),
        case("NotResource allows the others", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","NotResource":"arn:aws:ecr:us-east-1:111122223333:repository/app"}]"#)
            .on(OTHER_REPO),
        case("allow from one of several policies", alice(), "ecr:PutImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"}]"#)
            .id(r#"[{"Effect":"Allow","Action":"ecr:PutImage","Resource":"*"}]"#),
        // --- explicit deny wins ---
        case("deny beats allow in the same policy", alice(), "ecr:PutImage", Deny)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"},{"Effect":"Deny","Action":"ecr:PutImage","Resource":"*"}]"#),
        case("deny in another identity policy", alice(), "ecr:PutImage", Deny)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#)
            .id(r#"[{"Effect":"Deny","Action":"ecr:Put*","Resource":"*"}]"#),
        case("repository policy deny beats identity allow", alice(), "ecr:BatchGetImage", Deny)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#)
            .res(r#"[{"Sid":"DenyAll","Effect":"Deny","Principal":"*","Action":"ecr:*"}]"#),
        case("repository policy deny binds the account root", Some(root(A)), "ecr:BatchGetImage", Deny)
            .res(r#"[{"Effect":"Deny","Principal":"*","Action":"ecr:*"}]"#),
        case("deny for another action does not apply", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"},{"Effect":"Deny","Action":"ecr:DeleteRepository","Resource":"*"}]"#),
        // --- repository policies within one account (AWS doc: allow push/pull for users) ---
        case("repo policy alone allows a named user to pull", alice(), "ecr:BatchGetImage", Allow)
            .res(&format!(r#"[{{"Sid":"AllowPushPull","Effect":"Allow","Principal":{{"AWS":["arn:aws:iam::{A}:user/alice"]}},"Action":{PUSH}}}]"#)),
        case("repo policy allows the named user to push", alice(), "ecr:PutImage", Allow)
            .res(&format!(r#"[{{"Sid":"AllowPushPull","Effect":"Allow","Principal":{{"AWS":["arn:aws:iam::{A}:user/alice"]}},"Action":{PUSH}}}]"#)),
        case("repo policy does not name bob", bob(), "ecr:BatchGetImage", Implicit)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":["arn:aws:iam::{A}:user/alice"]}},"Action":{PUSH}}}]"#)),
        case("repo policy for pull does not allow push", alice(), "ecr:PutImage", Implicit)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{A}:user/alice"}},"Action":{PULL}}}]"#)),
        // Naming the account delegates to its identity policies: alone it grants its users nothing.
        case("repo policy naming the account leaves its users to their identity policies", bob(), "ecr:BatchGetImage", Implicit)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{A}:root"}},"Action":{PULL}}}]"#)),
        case("repo policy naming the account by id, identity allows", bob(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"}]"#)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"{A}"}},"Action":{PULL}}}]"#)),
        case("repo policy naming the user itself suffices in its account", bob(), "ecr:BatchGetImage", Allow)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{A}:user/bob"}},"Action":{PULL}}}]"#)),
        case("repo policy is for its own repository only", alice(), "ecr:BatchGetImage", Implicit)
            .on(OTHER_REPO)
            .res(r#"[{"Effect":"Allow","Principal":"*","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111122223333:repository/app"}]"#),
        case("NotPrincipal deny spares the named user", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#)
            .res(&format!(r#"[{{"Effect":"Deny","NotPrincipal":{{"AWS":"arn:aws:iam::{A}:user/alice"}},"Action":"ecr:*"}}]"#)),
        case("NotPrincipal deny hits everyone else", bob(), "ecr:BatchGetImage", Deny)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#)
            .res(&format!(r#"[{{"Effect":"Deny","NotPrincipal":{{"AWS":"arn:aws:iam::{A}:user/alice"}},"Action":"ecr:*"}}]"#)),
        case("account root needs no policy in its account", Some(root(A)), "ecr:DeleteRepository", Allow),
        // --- roles ---
        case("role named by role ARN matches its session", Some(role_session(A, "Builder", "s1")), "ecr:PutImage", Allow)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{A}:role/Builder"}},"Action":{PUSH}}}]"#)),
        case("session named by its assumed-role ARN", Some(role_session(A, "Builder", "s1")), "ecr:PutImage", Allow)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:sts::{A}:assumed-role/Builder/s1"}},"Action":{PUSH}}}]"#)),
        case("another role does not match", Some(role_session(A, "Other", "s1")), "ecr:PutImage", Implicit)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{A}:role/Builder"}},"Action":{PUSH}}}]"#)),
        // --- cross-account (AWS doc: allow another account to pull) ---
        case("cross-account: repository policy alone is not enough", carol_b(), "ecr:BatchGetImage", Implicit)
            .res(&format!(r#"[{{"Sid":"AllowCrossAccountPull","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{B}:root"}},"Action":{PULL}}}]"#)),
        case("cross-account: identity policy alone is not enough", carol_b(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"}]"#),
        case("cross-account: both allow", carol_b(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"}]"#)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{B}:root"}},"Action":{PULL}}}]"#)),
        case("cross-account: pull granted, push not", carol_b(), "ecr:PutImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{B}:root"}},"Action":{PULL}}}]"#)),
        case("cross-account role session pulls when both allow", puller_b(), "ecr:GetDownloadUrlForLayer", Allow)
            .id(r#"[{"Effect":"Allow","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"],"Resource":"arn:aws:ecr:*:111122223333:repository/*"}]"#)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{B}:role/Puller"}},"Action":{PULL}}}]"#)),
        case("cross-account root of B still needs the repo policy", Some(root(B)), "ecr:BatchGetImage", Implicit),
        case("cross-account root of B with the repo policy", Some(root(B)), "ecr:BatchGetImage", Allow)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"{B}"}},"Action":{PULL}}}]"#)),
        case("cross-account: identity deny wins over both allows", carol_b(), "ecr:BatchGetImage", Deny)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"},{"Effect":"Deny","Action":"ecr:BatchGetImage","Resource":"*"}]"#)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"{B}"}},"Action":{PULL}}}]"#)),
        // --- public (AWS doc: allow public pull) and anonymous ---
        case("anonymous without policy", None, "ecr:BatchGetImage", Implicit),
        case("public pull: anonymous allowed by Principal *", None, "ecr:BatchGetImage", Allow)
            .res(&format!(r#"[{{"Sid":"AllowPublicPull","Effect":"Allow","Principal":"*","Action":{PULL}}}]"#)),
        case("public pull: {AWS:*} is everyone too", None, "ecr:GetDownloadUrlForLayer", Allow)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"*"}},"Action":{PULL}}}]"#)),
        case("public pull: anonymous push refused", None, "ecr:PutImage", Implicit)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":"*","Action":{PULL}}}]"#)),
        case("public pull: another account's user also needs its own identity allow", carol_b(), "ecr:BatchGetImage", Implicit)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":"*","Action":{PULL}}}]"#)),
        case("anonymous is not an account principal", None, "ecr:BatchGetImage", Implicit)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":{{"AWS":"{A}"}},"Action":{PULL}}}]"#)),
        case("service principals never match a user", alice(), "ecr:BatchGetImage", Implicit)
            .res(&format!(r#"[{{"Sid":"CodeBuildAccess","Effect":"Allow","Principal":{{"Service":"codebuild.amazonaws.com"}},"Action":{PULL},"Condition":{{"ArnLike":{{"aws:SourceArn":"arn:aws:codebuild:us-east-1:{A}:project/*"}},"StringEquals":{{"aws:SourceAccount":"{A}"}}}}}}]"#)),
        // --- conditions: source IP (AWS doc: deny outside a range) ---
        case("deny outside the office range: outside", alice(), "ecr:BatchGetImage", Deny)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#)
            .res(r#"[{"Effect":"Deny","Principal":"*","Action":"ecr:*","Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}}]"#)
            .ctx("aws:SourceIp", &["198.51.100.7"]),
        case("deny outside the office range: inside", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#)
            .res(r#"[{"Effect":"Deny","Principal":"*","Action":"ecr:*","Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}}]"#)
            .ctx("aws:SourceIp", &["203.0.113.40"]),
        case("IpAddress single host", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.1.2.3"}}}]"#)
            .ctx("aws:SourceIp", &["10.1.2.3"]),
        case("IpAddress IPv6 range", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}}]"#)
            .ctx("aws:SourceIp", &["2001:db8:1::5"]),
        case("IpAddress without a source address", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]"#),
        // --- conditions: strings, tags, sets ---
        case("tag condition on the repository (ecr:ResourceTag)", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringEquals":{"ecr:ResourceTag/env":"dev"}}}]"#)
            .ctx("ecr:ResourceTag/env", &["dev"]),
        case("tag condition, other value", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/env":"dev"}}}]"#)
            .ctx("aws:ResourceTag/env", &["prod"]),
        case("condition keys are case-insensitive", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringEquals":{"AWS:RESOURCETAG/env":"dev"}}}]"#)
            .ctx("aws:ResourceTag/env", &["dev"]),
        case("StringNotEquals with the key missing holds", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringNotEquals":{"aws:ResourceTag/env":"prod"}}}]"#),
        case("StringEqualsIfExists with the key missing holds", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringEqualsIfExists":{"aws:ResourceTag/env":"dev"}}}]"#),
        case("StringEquals with the key missing fails", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/env":"dev"}}}]"#),
        case("StringLike wildcard", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringLike":{"aws:ResourceTag/team":"plat*"}}}]"#)
            .ctx("aws:ResourceTag/team", &["platform"]),
        case("StringEqualsIgnoreCase", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"aws:ResourceTag/env":"DEV"}}}]"#)
            .ctx("aws:ResourceTag/env", &["dev"]),
        case("ForAllValues: request tags within the allowed set", alice(), "ecr:TagResource", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]}}}]"#)
            .ctx("aws:TagKeys", &["env"]),
        case("ForAllValues: one request tag outside the set", alice(), "ecr:TagResource", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]}}}]"#)
            .ctx("aws:TagKeys", &["env", "owner"]),
        case("ForAnyValue: one request tag matches", alice(), "ecr:TagResource", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:TagResource","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":"env"}}}]"#)
            .ctx("aws:TagKeys", &["owner", "env"]),
        case("ForAnyValue: none matches", alice(), "ecr:TagResource", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:TagResource","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":"env"}}}]"#)
            .ctx("aws:TagKeys", &["owner"]),
        case("aws:RequestTag on create", alice(), "ecr:CreateRepository", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:CreateRepository","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/team":"platform"}}}]"#)
            .ctx("aws:RequestTag/team", &["platform"]),
        case("two operators must both hold", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/env":"dev"},"Bool":{"aws:SecureTransport":"true"}}}]"#)
            .ctx("aws:ResourceTag/env", &["dev"])
            .ctx("aws:SecureTransport", &["false"]),
        case("Bool aws:SecureTransport deny over plain HTTP", alice(), "ecr:BatchGetImage", Deny)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]"#)
            .ctx("aws:SecureTransport", &["false"]),
        case("Null: key absent", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"Null":{"aws:ResourceTag/env":"true"}}}]"#),
        case("Null: key present", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"Null":{"aws:ResourceTag/env":"true"}}}]"#)
            .ctx("aws:ResourceTag/env", &["x"]),
        // --- conditions: dates and numbers ---
        case("DateLessThan before the deadline", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2027-01-01T00:00:00Z"}}}]"#)
            .ctx("aws:CurrentTime", &["2026-11-27T08:00:00Z"]),
        case("DateLessThan after the deadline", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2026-01-01"}}}]"#)
            .ctx("aws:CurrentTime", &["2026-11-27T08:00:00Z"]),
        case("DateGreaterThanEquals with an offset", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"DateGreaterThanEquals":{"aws:CurrentTime":"2026-11-27T09:00:00+01:00"}}}]"#)
            .ctx("aws:CurrentTime", &["2026-11-27T08:00:00Z"]),
        case("NumericLessThanEquals", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"NumericLessThanEquals":{"aws:MultiFactorAuthAge":"3600"}}}]"#)
            .ctx("aws:MultiFactorAuthAge", &["3600"]),
        case("NumericGreaterThan fails on equal", alice(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"NumericGreaterThan":{"aws:MultiFactorAuthAge":3600}}}]"#)
            .ctx("aws:MultiFactorAuthAge", &["3600"]),
        // --- conditions: ARNs and principals ---
        case("ArnLike aws:PrincipalArn", alice(), "ecr:BatchGetImage", Allow)
            .res(r#"[{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/a*"}}}]"#),
        case("ArnNotLike deny for other principals", bob(), "ecr:BatchGetImage", Deny)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#)
            .res(r#"[{"Effect":"Deny","Principal":"*","Action":"ecr:*","Condition":{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/a*"}}}]"#),
        case("aws:PrincipalAccount restricts a public grant", carol_b(), "ecr:BatchGetImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]"#)
            .res(&format!(r#"[{{"Effect":"Allow","Principal":"*","Action":{PULL},"Condition":{{"StringEquals":{{"aws:PrincipalAccount":"{A}"}}}}}}]"#)),
        case("role session: aws:PrincipalArn is the role", Some(role_session(A, "Builder", "s9")), "ecr:PutImage", Allow)
            .res(r#"[{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/Builder"}}}]"#),
        // --- policy variables ---
        case("${aws:username} in Resource: own repository", alice(), "ecr:PutImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:111122223333:repository/home/${aws:username}/*"}]"#)
            .on("arn:aws:ecr:us-east-1:111122223333:repository/home/alice/tools"),
        case("${aws:username} in Resource: someone else's", bob(), "ecr:PutImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:111122223333:repository/home/${aws:username}/*"}]"#)
            .on("arn:aws:ecr:us-east-1:111122223333:repository/home/alice/tools"),
        case("${aws:username} unresolved for a role: no match", Some(role_session(A, "Builder", "s1")), "ecr:PutImage", Implicit)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/home/${aws:username}/*"}]"#)
            .on("arn:aws:ecr:us-east-1:111122223333:repository/home/alice/tools"),
        case("policy variable in a condition value", alice(), "ecr:BatchGetImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"StringEquals":{"ecr:ResourceTag/owner":"${aws:username}"}}}]"#)
            .ctx("ecr:ResourceTag/owner", &["alice"]),
        case("policy variable with a default", Some(role_session(A, "Builder", "s1")), "ecr:PutImage", Allow)
            .id(r#"[{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/home/${aws:username, 'shared'}/*"}]"#)
            .on("arn:aws:ecr:us-east-1:111122223333:repository/home/shared/x"),
    ]
}

#[test]
fn evaluation_cases() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let identity: Vec<Policy> = c
            .identity
            .iter()
            .map(|p| parse(p, PolicyKind::Identity).unwrap_or_else(|e| panic!("{}: identity policy: {e}", c.name)))
            .collect();
        let resource = c
            .resource
            .as_ref()
            .map(|p| parse(p, PolicyKind::Resource).unwrap_or_else(|e| panic!("{}: resource policy: {e}", c.name)));
        let mut ctx = Context::new();
        for (k, v) in &c.context {
            ctx.set_many(k, v.iter().map(|s| s.to_string()).collect());
        }
        let ctx = ctx.with_caller(c.caller.as_ref());
        let account = c.resource_arn.split(':').nth(4).unwrap();
        let req = Request {
            action: c.action,
            resource: c.resource_arn,
            resource_account: account,
            caller: c.caller.as_ref(),
            context: &ctx,
        };
        let refs: Vec<&Policy> = identity.iter().collect();
        let got = evaluate(&req, &refs, resource.as_ref());
        if got != c.want {
            failures.push(format!("{}: got {got:?}, want {:?}", c.name, c.want));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn malformed_policies_name_the_problem() {
    for (text, kind, needle) in [
        ("not json", PolicyKind::Identity, "not valid JSON"),
        ("[]", PolicyKind::Identity, "JSON object"),
        (r#"{"Statement":[]}"#, PolicyKind::Identity, "must not be empty"),
        (r#"{"Version":"2020-01-01","Statement":[]}"#, PolicyKind::Identity, "Version"),
        (r#"{"Statment":[]}"#, PolicyKind::Identity, "unknown policy element 'Statment'"),
        (r#"{"Statement":{"Effect":"Permit","Action":"*","Resource":"*"}}"#, PolicyKind::Identity, "Effect"),
        (r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#, PolicyKind::Identity, "Action or NotAction"),
        (r#"{"Statement":{"Effect":"Allow","Action":"*"}}"#, PolicyKind::Identity, "Resource or NotResource"),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Principal":"*"}}"#,
            PolicyKind::Identity,
            "cannot have Principal",
        ),
        (r#"{"Statement":{"Effect":"Allow","Action":"ecr:*"}}"#, PolicyKind::Resource, "needs Principal"),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"BatchGetImage","Resource":"*"}}"#,
            PolicyKind::Identity,
            "service:Action",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"repo/app"}}"#,
            PolicyKind::Identity,
            "must be an ARN",
        ),
        (r#"{"Statement":{"Efect":"Allow"}}"#, PolicyKind::Identity, "Statement[0]: unknown element 'Efect'"),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringSorta":{"a":"b"}}}}"#,
            PolicyKind::Identity,
            "StringSorta",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"300.1.1.1"}}}}"#,
            PolicyKind::Identity,
            "300.1.1.1",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"soon"}}}}"#,
            PolicyKind::Identity,
            "soon",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericEquals":{"k":"ten"}}}}"#,
            PolicyKind::Identity,
            "ten",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"ecr:*"}}"#,
            PolicyKind::Resource,
            "12-digit account",
        ),
        (
            r#"{"Statement":[{"Sid":"a","Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"a","Effect":"Deny","Action":"*","Resource":"*"}]}"#,
            PolicyKind::Identity,
            "used twice",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","NotAction":"ecr:*","Resource":"*"}}"#,
            PolicyKind::Identity,
            "cannot both",
        ),
    ] {
        let e = parse(text, kind).expect_err(text).0;
        assert!(e.contains(needle), "{text}: error {e:?} lacks {needle:?}");
    }
}

#[test]
fn dates_and_globs() {
    assert_eq!(parse_date("1970-01-01"), Some(0.0));
    assert_eq!(parse_date("2026-11-27T08:00:00Z"), parse_date("2026-11-27T09:00:00+01:00"));
    assert_eq!(parse_date("1764230400"), Some(1764230400.0));
    assert_eq!(parse_date("2026-11-27T08:00:00.5Z"), parse_date("2026-11-27T08:00:00Z").map(|t| t + 0.5));
    for bad in ["", "2026-13-01", "2026-11-27T25:00:00Z", "tomorrow", "2026-11-27T08:00:00+1"] {
        assert_eq!(parse_date(bad), None, "{bad}");
    }
    assert!(glob("a*b?c", "aXXbYc"));
    assert!(!glob("a*b?c", "aXXbc"));
    assert!(glob("*", ""));
    assert!(glob("é*", "éà"));
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            prop_oneof![
                Just("Allow".to_string()),
                Just("Deny".to_string()),
                Just("*".to_string()),
                Just("ecr:*".to_string()),
                Just("arn:aws:ecr:*:*:repository/*".to_string()),
                Just("2012-10-17".to_string()),
                ".{0,12}".prop_map(|s| s),
            ]
            .prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                Just("Version".to_string()),
                Just("Statement".to_string()),
                Just("Effect".to_string()),
                Just("Action".to_string()),
                Just("NotAction".to_string()),
                Just("Resource".to_string()),
                Just("Principal".to_string()),
                Just("NotPrincipal".to_string()),
                Just("AWS".to_string()),
                Just("Condition".to_string()),
                Just("StringLike".to_string()),
                Just("ForAllValues:IpAddressIfExists".to_string()),
                Just("aws:SourceIp".to_string()),
                ".{0,8}".prop_map(|s| s),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(key, inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// No input makes the parser panic; whatever it accepts, evaluation does not panic either.
        #[test]
        fn parse_and_evaluate_never_panic(v in json_value(), ip in ".{0,20}", arn in ".{0,40}", anon in any::<bool>()) {
            let text = v.to_string();
            for kind in [PolicyKind::Identity, PolicyKind::Resource] {
                if let Ok(p) = parse(&text, kind) {
                    let caller = Caller {
                        arn: "arn:aws:iam::111122223333:user/u".into(),
                        also_known_as: vec![],
                        account: "111122223333".into(),
                        username: Some("u".into()),
                        userid: "AIDAU".into(),
                        is_root: false,
                    };
                    let mut ctx = Context::new();
                    ctx.set("aws:SourceIp", ip.clone()).set("aws:CurrentTime", ip.clone()).set("aws:PrincipalArn", arn.clone());
                    let req = Request {
                        action: "ecr:BatchGetImage",
                        resource: &arn,
                        resource_account: "111122223333",
                        caller: if anon { None } else { Some(&caller) },
                        context: &ctx,
                    };
                    let _ = evaluate(&req, &[&p], Some(&p));
                }
            }
        }

        #[test]
        fn raw_text_never_panics(s in ".{0,200}") {
            let _ = parse(&s, PolicyKind::Resource);
            let _ = parse_date(&s);
            let _ = glob(&s, &s);
            let _ = substitute(&s, &Context::new());
        }

        /// A pattern without wildcards matches exactly itself.
        #[test]
        fn glob_literal_is_equality(a in "[a-z:/]{0,12}", b in "[a-z:/]{0,12}") {
            prop_assert_eq!(glob(&a, &b), a == b);
        }
    }
}

/// KMS key policies: the key policy must allow; naming the account delegates to IAM.
#[test]
fn key_policy_cases() {
    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let default = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow",
        "Principal":{{"AWS":"arn:aws:iam::{A}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
    );
    let named = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{A}:user/alice"}},
        "Action":"kms:Decrypt","Resource":"*"}}]}}"#
    );
    let other_account = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{B}:root"}},
        "Action":["kms:Decrypt"],"Resource":"*"}}]}}"#
    );
    let allow_decrypt = idp(r#"{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}"#);
    let deny_decrypt = idp(r#"{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}"#);
    /// Name, key policy, identity policies, caller, action, expected decision.
    type KeyCase<'a> = (&'a str, &'a str, Vec<String>, Caller, &'a str, Decision);
    let cases: Vec<KeyCase> = vec![
        ("default policy: root may", &default, vec![], root(A), "kms:Decrypt", Allow),
        ("default policy: a user with no IAM allow may not", &default, vec![], user(A, "bob"), "kms:Decrypt", Implicit),
        (
            "default policy: a user's IAM allow counts",
            &default,
            vec![allow_decrypt.clone()],
            user(A, "bob"),
            "kms:Decrypt",
            Allow,
        ),
        (
            "IAM allows one action, not another",
            &default,
            vec![allow_decrypt.clone()],
            user(A, "bob"),
            "kms:GenerateDataKey",
            Implicit,
        ),
        ("an explicit IAM deny binds even root", &default, vec![deny_decrypt.clone()], root(A), "kms:Decrypt", Deny),
        ("a key policy naming the user needs no IAM", &named, vec![], user(A, "alice"), "kms:Decrypt", Allow),
        (
            "a key policy without the account: IAM alone is not enough",
            &named,
            vec![allow_decrypt.clone()],
            user(A, "bob"),
            "kms:Decrypt",
            Implicit,
        ),
        ("a key policy without the account locks root out", &named, vec![], root(A), "kms:Decrypt", Implicit),
        (
            "another account named: its user with IAM allow may",
            &other_account,
            vec![allow_decrypt.clone()],
            user(B, "carol"),
            "kms:Decrypt",
            Allow,
        ),
        (
            "another account named: without IAM allow may not",
            &other_account,
            vec![],
            user(B, "carol"),
            "kms:Decrypt",
            Implicit,
        ),
        ("another account not named may not", &default, vec![allow_decrypt], user(B, "carol"), "kms:Decrypt", Implicit),
    ];
    for (name, key_policy, identity, caller, action, want) in cases {
        let kp = parse(key_policy, PolicyKind::Resource).unwrap();
        let ids: Vec<Policy> = identity.iter().map(|p| parse(p, PolicyKind::Identity).unwrap()).collect();
        let refs: Vec<&Policy> = ids.iter().collect();
        let ctx = Context::new().with_caller(Some(&caller));
        let req = Request { action, resource: KEY, resource_account: A, caller: Some(&caller), context: &ctx };
        assert_eq!(evaluate_key(&req, &refs, &kp), want, "{name}");
    }
}
