//! The IAM and STS Query APIs and what they change in decisions, against SQLite and PostgreSQL:
//! users with keys and policies, managed-policy versions and limits, roles and sessions, and
//! credentials that are forged, expired, altered or deactivated.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

async fn ok(s: &Server, params: &[(&str, &str)], creds: &Creds) -> String {
    let (status, body) = s.query(params, creds).await;
    assert_eq!(status, StatusCode::OK, "{params:?}: {body}");
    body
}

/// The error code of a call that must fail with `status`.
async fn err(s: &Server, params: &[(&str, &str)], creds: &Creds, status: StatusCode) -> (String, String) {
    let (st, body) = s.query(params, creds).await;
    assert_eq!(st, status, "{params:?}: {body}");
    (xml_field(&body, "Code").unwrap_or_default(), xml_field(&body, "Message").unwrap_or_default())
}

async fn new_user(s: &Server, name: &str) -> Creds {
    let root = Creds::root();
    ok(s, &[("Action", "CreateUser"), ("UserName", name)], &root).await;
    let body = ok(s, &[("Action", "CreateAccessKey"), ("UserName", name)], &root).await;
    Creds {
        akid: xml_field(&body, "AccessKeyId").unwrap(),
        secret: xml_field(&body, "SecretAccessKey").unwrap(),
        token: None,
    }
}

const PULL: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:BatchGetImage","ecr:DescribeImages"],"Resource":"*"}]}"#;

async fn users_keys_and_policies(s: Server) {
    let root = Creds::root();
    let alice = new_user(&s, "alice").await;
    // The secret is stored sealed, bound to its key id.
    let row = s.meta.key(&alice.akid).await.unwrap().unwrap();
    assert!(row.secret.starts_with("s1:") && !row.secret.contains(&alice.secret), "{}", row.secret);

    let who = ok(&s, &[("Action", "GetCallerIdentity")], &alice).await;
    assert_eq!(xml_field(&who, "Arn").unwrap(), "arn:aws:iam::000000000000:user/alice");
    assert!(xml_field(&who, "UserId").unwrap().starts_with("AIDA"));

    // No policy: every ECR action is refused, IAM too.
    s.ecr_ok("CreateRepository", json!({"repositoryName": "app"})).await;
    let (st, v) = s.ecr_as("DescribeImages", json!({"repositoryName": "app"}), &alice).await;
    assert_eq!((st, v["__type"].as_str().unwrap()), (StatusCode::BAD_REQUEST, "AccessDeniedException"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("user/alice is not authorized to perform: ecr:DescribeImages"));
    let (code, _) = err(&s, &[("Action", "ListUsers")], &alice, StatusCode::FORBIDDEN).await;
    assert_eq!(code, "AccessDenied");
    let (st, v) = s.ecr_as("GetAuthorizationToken", json!({}), &alice).await;
    assert_eq!(v["__type"], "AccessDeniedException", "{st} {v}");

    // An inline policy takes effect on the next request; a group's policy applies to members.
    ok(
        &s,
        &[("Action", "PutUserPolicy"), ("UserName", "alice"), ("PolicyName", "pull"), ("PolicyDocument", PULL)],
        &root,
    )
    .await;
    let (st, v) = s.ecr_as("DescribeImages", json!({"repositoryName": "app"}), &alice).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let doc = ok(&s, &[("Action", "GetUserPolicy"), ("UserName", "alice"), ("PolicyName", "pull")], &root).await;
    assert!(xml_field(&doc, "PolicyDocument").unwrap().starts_with("%7B%22Version%22"), "URL-encoded, as IAM");
    ok(&s, &[("Action", "CreateGroup"), ("GroupName", "admins")], &root).await;
    ok(&s, &[("Action", "AddUserToGroup"), ("GroupName", "admins"), ("UserName", "alice")], &root).await;
    ok(
        &s,
        &[
            ("Action", "AttachGroupPolicy"),
            ("GroupName", "admins"),
            ("PolicyArn", "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryFullAccess"),
        ],
        &root,
    )
    .await;
    let (st, v) = s.ecr_as("DeleteRepository", json!({"repositoryName": "app"}), &alice).await;
    assert_eq!(st, StatusCode::OK, "FullAccess through the group: {v}");
    let (st, _) = s.ecr_as("GetAuthorizationToken", json!({}), &alice).await;
    assert_eq!(st, StatusCode::OK);

    // An explicit deny in any identity policy wins.
    let deny =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"ecr:CreateRepository","Resource":"*"}]}"#;
    ok(
        &s,
        &[("Action", "PutUserPolicy"), ("UserName", "alice"), ("PolicyName", "deny"), ("PolicyDocument", deny)],
        &root,
    )
    .await;
    let (_, v) = s.ecr_as("CreateRepository", json!({"repositoryName": "x"}), &alice).await;
    assert_eq!(v["__type"], "AccessDeniedException");
    assert!(v["message"].as_str().unwrap().contains("explicit deny"), "{v}");

    // Errors name what is wrong.
    let (code, msg) = err(
        &s,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "alice"),
            ("PolicyName", "p"),
            ("PolicyDocument", r#"{"Statement":[{"Effect":"Maybe"}]}"#),
        ],
        &root,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "MalformedPolicyDocument");
    assert!(msg.contains("Effect"), "{msg}");
    let (code, _) = err(&s, &[("Action", "CreateUser"), ("UserName", "alice")], &root, StatusCode::CONFLICT).await;
    assert_eq!(code, "EntityAlreadyExists");
    let (code, msg) =
        err(&s, &[("Action", "CreateUser"), ("UserName", "bad name!")], &root, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "ValidationError", "{msg}");
    let (code, _) = err(&s, &[("Action", "GetUser"), ("UserName", "nobody")], &root, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "NoSuchEntity");
    let (code, _) = err(&s, &[("Action", "CreateUser")], &root, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "ValidationError");
    let (code, _) = err(&s, &[("Action", "CreateAccountAlias")], &root, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "InvalidAction");
    ok(&s, &[("Action", "CreateAccessKey"), ("UserName", "alice")], &root).await;
    let (code, msg) =
        err(&s, &[("Action", "CreateAccessKey"), ("UserName", "alice")], &root, StatusCode::CONFLICT).await;
    assert_eq!((code.as_str(), msg.contains("AccessKeysPerUser: 2")), ("LimitExceeded", true), "{msg}");
    let (code, msg) = err(&s, &[("Action", "DeleteUser"), ("UserName", "alice")], &root, StatusCode::CONFLICT).await;
    assert_eq!(code, "DeleteConflict");
    assert!(msg.contains("access keys"), "{msg}");

    // A deactivated key is refused at once, and so are the logins it issued.
    let (_, v) = s.ecr_as("GetAuthorizationToken", json!({}), &alice).await;
    let token = v["authorizationData"][0]["authorizationToken"].as_str().unwrap().to_string();
    let basic = format!("Basic {token}");
    let pull = || s.req(reqwest::Method::GET, "/v2/app/tags/list").header("authorization", basic.clone()).send();
    assert_ne!(pull().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    ok(
        &s,
        &[("Action", "UpdateAccessKey"), ("UserName", "alice"), ("AccessKeyId", &alice.akid), ("Status", "Inactive")],
        &root,
    )
    .await;
    let (st, v) = s.ecr_as("DescribeRepositories", json!({}), &alice).await;
    assert_eq!((st, v["__type"].as_str().unwrap()), (StatusCode::BAD_REQUEST, "UnrecognizedClientException"), "{v}");
    let _ = st;
    assert_eq!(pull().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let list = ok(&s, &[("Action", "ListAccessKeys"), ("UserName", "alice")], &root).await;
    assert!(list.contains("<Status>Inactive</Status>") && list.contains("<Status>Active</Status>"), "{list}");
}
both!(users_keys_and_policies);

async fn managed_policy_versions(s: Server) {
    let root = Creds::root();
    let bob = new_user(&s, "bob").await;
    let created =
        ok(&s, &[("Action", "CreatePolicy"), ("PolicyName", "puller"), ("PolicyDocument", PULL)], &root).await;
    let arn = xml_field(&created, "Arn").unwrap();
    assert_eq!(arn, "arn:aws:iam::000000000000:policy/puller");
    ok(&s, &[("Action", "AttachUserPolicy"), ("UserName", "bob"), ("PolicyArn", &arn)], &root).await;
    s.ecr_ok("CreateRepository", json!({"repositoryName": "lib"})).await;
    assert_eq!(s.ecr_as("DescribeImages", json!({"repositoryName": "lib"}), &bob).await.0, StatusCode::OK);
    // A new default version that no longer allows DescribeImages applies at once.
    let v2 = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"}]}"#;
    let out = ok(
        &s,
        &[("Action", "CreatePolicyVersion"), ("PolicyArn", &arn), ("PolicyDocument", v2), ("SetAsDefault", "true")],
        &root,
    )
    .await;
    assert_eq!(xml_field(&out, "VersionId").unwrap(), "v2");
    assert_eq!(
        s.ecr_as("DescribeImages", json!({"repositoryName": "lib"}), &bob).await.1["__type"],
        "AccessDeniedException"
    );
    ok(&s, &[("Action", "SetDefaultPolicyVersion"), ("PolicyArn", &arn), ("VersionId", "v1")], &root).await;
    assert_eq!(s.ecr_as("DescribeImages", json!({"repositoryName": "lib"}), &bob).await.0, StatusCode::OK);
    for _ in 0..3 {
        ok(&s, &[("Action", "CreatePolicyVersion"), ("PolicyArn", &arn), ("PolicyDocument", v2)], &root).await;
    }
    let (code, _) = err(
        &s,
        &[("Action", "CreatePolicyVersion"), ("PolicyArn", &arn), ("PolicyDocument", v2)],
        &root,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(code, "LimitExceeded");
    let (code, _) = err(
        &s,
        &[("Action", "DeletePolicyVersion"), ("PolicyArn", &arn), ("VersionId", "v1")],
        &root,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(code, "DeleteConflict", "the default version cannot be deleted");
    let (code, _) = err(&s, &[("Action", "DeletePolicy"), ("PolicyArn", &arn)], &root, StatusCode::CONFLICT).await;
    assert_eq!(code, "DeleteConflict", "attached");
    let aws = "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPowerUser";
    let v = ok(&s, &[("Action", "GetPolicyVersion"), ("PolicyArn", aws), ("VersionId", "v1")], &root).await;
    assert!(xml_field(&v, "Document").unwrap().contains("ecr%3APutImage"));
    let (code, _) = err(
        &s,
        &[("Action", "CreatePolicyVersion"), ("PolicyArn", aws), ("PolicyDocument", v2)],
        &root,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "InvalidInput", "AWS managed policies cannot be changed");
    let list = ok(&s, &[("Action", "ListPolicies"), ("Scope", "Local")], &root).await;
    assert!(list.contains("<PolicyName>puller</PolicyName>") && !list.contains("PowerUser"), "{list}");
}
both!(managed_policy_versions);

async fn roles_and_sessions(s: Server) {
    let root = Creds::root();
    let carol = new_user(&s, "carol").await;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/carol"},"Action":"sts:AssumeRole"}]}"#;
    ok(&s, &[("Action", "CreateRole"), ("RoleName", "deployer"), ("AssumeRolePolicyDocument", trust)], &root).await;
    let role_policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:BatchGetImage","ecr:DescribeImages","ecr:GetAuthorizationToken"],"Resource":"*"}]}"#;
    ok(
        &s,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "deployer"),
            ("PolicyName", "pull"),
            ("PolicyDocument", role_policy),
        ],
        &root,
    )
    .await;
    let role = "arn:aws:iam::000000000000:role/deployer";
    let out = ok(&s, &[("Action", "AssumeRole"), ("RoleArn", role), ("RoleSessionName", "run-1")], &carol).await;
    let session = Creds {
        akid: xml_field(&out, "AccessKeyId").unwrap(),
        secret: xml_field(&out, "SecretAccessKey").unwrap(),
        token: Some(xml_field(&out, "SessionToken").unwrap()),
    };
    assert!(session.akid.starts_with("ASIA"));
    assert_eq!(xml_field(&out, "Arn").unwrap(), "arn:aws:sts::000000000000:assumed-role/deployer/run-1");
    let who = ok(&s, &[("Action", "GetCallerIdentity")], &session).await;
    assert!(xml_field(&who, "UserId").unwrap().ends_with(":run-1"));
    s.ecr_ok("CreateRepository", json!({"repositoryName": "svc"})).await;
    assert_eq!(s.ecr_as("DescribeImages", json!({"repositoryName": "svc"}), &session).await.0, StatusCode::OK);
    assert_eq!(
        s.ecr_as("DeleteRepository", json!({"repositoryName": "svc"}), &session).await.1["__type"],
        "AccessDeniedException"
    );

    // Someone the trust policy does not name; a role that does not exist; a bad duration.
    let dave = new_user(&s, "dave").await;
    let (code, _) = err(
        &s,
        &[("Action", "AssumeRole"), ("RoleArn", role), ("RoleSessionName", "x1")],
        &dave,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(code, "AccessDenied");
    let (code, _) = err(
        &s,
        &[("Action", "AssumeRole"), ("RoleArn", "arn:aws:iam::000000000000:role/none"), ("RoleSessionName", "x1")],
        &carol,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(code, "AccessDenied");
    let (code, _) = err(
        &s,
        &[("Action", "AssumeRole"), ("RoleArn", role), ("RoleSessionName", "x1"), ("DurationSeconds", "60")],
        &carol,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "ValidationError");

    // An altered token, a token for another key id, and one signed with another key: refused.
    let token = session.token.clone().unwrap();
    let mut altered = token.clone().into_bytes();
    altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
    let bad = Creds { token: Some(String::from_utf8(altered).unwrap()), ..session.clone() };
    let (code, _) = err(&s, &[("Action", "GetCallerIdentity")], &bad, StatusCode::FORBIDDEN).await;
    assert_eq!(code, "InvalidClientTokenId");
    let (_, v) = s.ecr_as("DescribeImages", json!({"repositoryName": "svc"}), &bad).await;
    assert_eq!(v["__type"], "UnrecognizedClientException", "{v}");
    let swapped = Creds { akid: "ASIAAAAAAAAAAAAAAAAA".into(), ..session.clone() };
    let (code, _) = err(&s, &[("Action", "GetCallerIdentity")], &swapped, StatusCode::FORBIDDEN).await;
    assert_eq!(code, "InvalidClientTokenId");

    // An expired session: a token signed with the server's own key but ended a minute ago.
    // (The stored key is sealed: only the secrets key, which the test server is given, opens it.)
    let sealed = s.meta.setting("token_key").await.unwrap().unwrap();
    let seal = berth_crypto::seal::SealKey::from_bytes(&[7; 32]).unwrap();
    let master = seal.open(&sealed, b"berth settings token_key").expect("the token key is sealed");
    let key = berth_crypto::token::TokenKey::from_bytes(&master).unwrap().derive("sts-session");
    let past = berth_service::tokens::now_secs() - 60;
    let claims = json!({"a": session.akid, "r": role, "i": "AROAXXXX", "s": "old", "e": past});
    let expired = Creds { token: Some(key.sign(claims.to_string().as_bytes())), ..session.clone() };
    let (code, msg) = err(&s, &[("Action", "GetCallerIdentity")], &expired, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "ExpiredToken", "{msg}");
    let (_, v) = s.ecr_as("DescribeImages", json!({"repositoryName": "svc"}), &expired).await;
    assert_eq!(v["__type"], "ExpiredTokenException", "{v}");

    // The login password of a session ends with the session.
    let (_, v) = s.ecr_as("GetAuthorizationToken", json!({}), &session).await;
    let expires = v["authorizationData"][0]["expiresAt"].as_f64().unwrap_or_else(|| panic!("{v}")) as i64;
    assert!(expires <= berth_service::tokens::now_secs() + 3600 + 1, "{v}");

    // Deleting the role ends its sessions' access (its policy must go first).
    let (code, _) = err(&s, &[("Action", "DeleteRole"), ("RoleName", "deployer")], &root, StatusCode::CONFLICT).await;
    assert_eq!(code, "DeleteConflict");
    ok(&s, &[("Action", "DeleteRolePolicy"), ("RoleName", "deployer"), ("PolicyName", "pull")], &root).await;
    ok(&s, &[("Action", "DeleteRole"), ("RoleName", "deployer")], &root).await;
    assert_eq!(
        s.ecr_as("DescribeImages", json!({"repositoryName": "svc"}), &session).await.1["__type"],
        "AccessDeniedException"
    );
}
both!(roles_and_sessions);

/// A `/v2/` request to the registry of `account`, by host name.
fn at(s: &Server, account: Option<&str>, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    let port = s.base.rsplit(':').next().unwrap();
    let host = match account {
        Some(a) => format!("{a}.{ACCOUNT_DOMAIN}:{port}"),
        None => format!("127.0.0.1:{port}"),
    };
    s.req(method, path).header("host", host)
}

async fn several_accounts(s: Server) {
    const B: &str = "111122223333";
    let key = s.registry.iam().create_account(&berth_service::Caller::operator(), B).await.unwrap();
    let b_root = Creds { akid: key.id, secret: key.secret, token: None };
    assert!(
        s.registry.iam().create_account(&berth_service::Caller::operator(), B).await.is_err(),
        "an account is created once"
    );
    assert!(s.registry.iam().create_account(&berth_service::Caller::operator(), "12").await.is_err());

    // Each account's calls default to its own registry; names are per registry.
    let (st, v) = s.ecr_as("CreateRepository", json!({"repositoryName": "app"}), &b_root).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let repo = &v["repository"];
    assert_eq!(repo["registryId"], B);
    assert_eq!(repo["repositoryName"], "app");
    assert_eq!(repo["repositoryArn"], format!("arn:aws:ecr:us-east-1:{B}:repository/app"));
    assert!(repo["repositoryUri"].as_str().unwrap().starts_with(&format!("{B}.{ACCOUNT_DOMAIN}/app")), "{v}");
    s.ecr_ok("CreateRepository", json!({"repositoryName": "app"})).await;
    s.ecr_ok("CreateRepository", json!({"repositoryName": "only-a"})).await;
    let mine = |v: &serde_json::Value| {
        v["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["repositoryName"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(mine(&s.ecr_ok("DescribeRepositories", json!({})).await), ["app", "only-a"]);
    let (_, v) = s.ecr_as("DescribeRepositories", json!({}), &b_root).await;
    assert_eq!(mine(&v), ["app"]);
    assert_eq!(v["repositories"][0]["registryId"], B);
    let (t, _) = s.ecr_err("DescribeRepositories", json!({"registryId": "999999999999"})).await;
    assert_eq!(t, "InvalidParameterException");

    // An image pushed at B's host lands in B's registry only.
    let config = b"{}";
    let digest = format!("sha256:{}", berth_crypto::sha256_hex(config));
    let put = at(&s, Some(B), reqwest::Method::POST, &format!("/v2/app/blobs/uploads/?digest={digest}"))
        .body(config.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(put.headers()["location"], format!("/v2/app/blobs/{digest}"), "no account in Locations");
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 2}, "layers": []});
    let r = at(&s, Some(B), reqwest::Method::PUT, "/v2/app/manifests/v1")
        .header("content-type", OCI_MANIFEST)
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tags: serde_json::Value =
        at(&s, Some(B), reqwest::Method::GET, "/v2/app/tags/list").send().await.unwrap().json().await.unwrap();
    assert_eq!(tags, json!({"name": "app", "tags": ["v1"]}));
    let a_tags: serde_json::Value =
        at(&s, None, reqwest::Method::GET, "/v2/app/tags/list").send().await.unwrap().json().await.unwrap();
    assert_eq!(a_tags["tags"], json!([]), "A's app is another repository");
    let cat: serde_json::Value =
        at(&s, Some(B), reqwest::Method::GET, "/v2/_catalog").send().await.unwrap().json().await.unwrap();
    assert_eq!(cat, json!({"repositories": ["app"]}));
    let r = at(&s, Some("999999999999"), reqwest::Method::GET, "/v2/app/tags/list").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Across accounts both sides must allow: A's root reads B's repository only once B's
    // repository policy names it.
    let (t, _) = s.ecr_err("DescribeImages", json!({"registryId": B, "repositoryName": "app"})).await;
    assert_eq!(t, "AccessDeniedException");
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"ecr:DescribeImages"}]}"#;
    let (st, v) =
        s.ecr_as("SetRepositoryPolicy", json!({"repositoryName": "app", "policyText": policy}), &b_root).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["registryId"], B);
    let v = s.ecr_ok("DescribeImages", json!({"registryId": B, "repositoryName": "app"})).await;
    assert_eq!(v["imageDetails"][0]["imageTags"], json!(["v1"]));
    assert_eq!(v["imageDetails"][0]["registryId"], B);
    assert_eq!(v["imageDetails"][0]["repositoryName"], "app");
    // A root of one account is not the root of another.
    let (t, _) = s.ecr_err("DeleteRepository", json!({"registryId": B, "repositoryName": "app", "force": true})).await;
    assert_eq!(t, "AccessDeniedException");
}
both!(several_accounts);

async fn request_tag_conditions(s: Server) {
    let root = Creds::root();
    let erin = new_user(&s, "erin").await;
    // Repositories may be created only tagged team=core, with no other tag keys; tags may be
    // removed only if `team` is not among them.
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["ecr:CreateRepository","ecr:TagResource"],"Resource":"*",
         "Condition":{"StringEquals":{"aws:RequestTag/team":"core"},"ForAllValues:StringEquals":{"aws:TagKeys":["team"]}}},
        {"Effect":"Allow","Action":"ecr:UntagResource","Resource":"*",
         "Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":["team"]}}},
        {"Effect":"Deny","Action":"ecr:UntagResource","Resource":"*",
         "Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":["team"]}}}]}"#;
    ok(
        &s,
        &[("Action", "PutUserPolicy"), ("UserName", "erin"), ("PolicyName", "tags"), ("PolicyDocument", policy)],
        &root,
    )
    .await;
    let create = |name: &str, tags: serde_json::Value| json!({"repositoryName": name, "tags": tags});
    let denied = |v: &serde_json::Value| v["__type"] == "AccessDeniedException";
    let (_, v) = s.ecr_as("CreateRepository", create("r1", json!([])), &erin).await;
    assert!(denied(&v), "untagged: {v}");
    let (_, v) = s.ecr_as("CreateRepository", create("r1", json!([{"Key": "team", "Value": "web"}])), &erin).await;
    assert!(denied(&v), "wrong value: {v}");
    let two = json!([{"Key": "team", "Value": "core"}, {"Key": "cost", "Value": "1"}]);
    let (_, v) = s.ecr_as("CreateRepository", create("r1", two), &erin).await;
    assert!(denied(&v), "an extra key: {v}");
    let (st, v) = s.ecr_as("CreateRepository", create("r1", json!([{"Key": "team", "Value": "core"}])), &erin).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let arn = v["repository"]["repositoryArn"].as_str().unwrap().to_string();
    let (_, v) = s.ecr_as("UntagResource", json!({"resourceArn": arn, "tagKeys": ["team"]}), &erin).await;
    assert!(denied(&v), "removing team: {v}");
}
both!(request_tag_conditions);

/// Every ECR, IAM and STS operation is decided by the service for the caller that makes it: a
/// user without policies is refused each one (valid input, an existing repository), with the
/// action in the message; the account root, whose identity allows its account, is not refused
/// the same repository calls.
async fn every_operation_is_decided_for_its_caller(s: Server) {
    let nobody = new_user(&s, "nobody").await;
    s.ecr_ok("CreateRepository", json!({"repositoryName": "locked"})).await;
    let d = format!("sha256:{}", "a".repeat(64));
    let arn = "arn:aws:ecr:us-east-1:000000000000:repository/locked";
    let repo = json!({"repositoryName": "locked"});
    let with = |extra: serde_json::Value| {
        let mut v = repo.clone();
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    };
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}]}"#;
    let lifecycle = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
    let image = json!({"imageId": {"imageTag": "1"}});
    let ecr: Vec<(&str, serde_json::Value)> = vec![
        ("CreateRepository", json!({"repositoryName": "another"})),
        ("DescribeRepositories", json!({"repositoryNames": ["locked"]})),
        ("DeleteRepository", repo.clone()),
        ("PutImageTagMutability", with(json!({"imageTagMutability": "IMMUTABLE"}))),
        ("PutImageScanningConfiguration", with(json!({"imageScanningConfiguration": {"scanOnPush": true}}))),
        ("CreateRepositoryCreationTemplate", json!({"prefix": "team", "appliedFor": ["CREATE_ON_PUSH"]})),
        ("DescribeRepositoryCreationTemplates", json!({})),
        ("UpdateRepositoryCreationTemplate", json!({"prefix": "ROOT", "description": "x"})),
        ("DeleteRepositoryCreationTemplate", json!({"prefix": "ROOT"})),
        ("ListImages", repo.clone()),
        ("DescribeImages", repo.clone()),
        ("BatchGetImage", with(json!({"imageIds": [{"imageTag": "1"}]}))),
        ("BatchDeleteImage", with(json!({"imageIds": [{"imageTag": "1"}]}))),
        ("PutImage", with(json!({"imageManifest": "{}", "imageTag": "1"}))),
        ("ListImageReferrers", with(json!({"subjectId": {"imageDigest": d}}))),
        ("BatchCheckLayerAvailability", with(json!({"layerDigests": [d]}))),
        ("InitiateLayerUpload", repo.clone()),
        (
            "UploadLayerPart",
            with(json!({"uploadId": "u", "partFirstByte": 0, "partLastByte": 0, "layerPartBlob": "AA=="})),
        ),
        ("CompleteLayerUpload", with(json!({"uploadId": "u", "layerDigests": [d]}))),
        ("GetDownloadUrlForLayer", with(json!({"layerDigest": d}))),
        ("GetAuthorizationToken", json!({})),
        ("DescribeRegistry", json!({})),
        ("GetAccountSetting", json!({"name": "BLOB_MOUNTING"})),
        ("PutAccountSetting", json!({"name": "BLOB_MOUNTING", "value": "DISABLED"})),
        ("TagResource", json!({"resourceArn": arn, "tags": [{"Key": "k", "Value": "v"}]})),
        ("UntagResource", json!({"resourceArn": arn, "tagKeys": ["k"]})),
        ("ListTagsForResource", json!({"resourceArn": arn})),
        ("SetRepositoryPolicy", with(json!({"policyText": policy}))),
        ("GetRepositoryPolicy", repo.clone()),
        ("DeleteRepositoryPolicy", repo.clone()),
        ("PutRegistryPolicy", json!({"policyText": policy})),
        ("GetRegistryPolicy", json!({})),
        ("DeleteRegistryPolicy", json!({})),
        ("PutLifecyclePolicy", with(json!({"lifecyclePolicyText": lifecycle}))),
        ("GetLifecyclePolicy", repo.clone()),
        ("DeleteLifecyclePolicy", repo.clone()),
        ("StartLifecyclePolicyPreview", with(json!({"lifecyclePolicyText": lifecycle}))),
        ("GetLifecyclePolicyPreview", repo.clone()),
        ("StartImageScan", with(image.clone())),
        ("DescribeImageScanFindings", with(image.clone())),
        ("GetImageSbom", with(image.clone())),
        ("PutRegistryScanningConfiguration", json!({"scanType": "BASIC", "rules": []})),
        ("GetRegistryScanningConfiguration", json!({})),
        ("BatchGetRepositoryScanningConfiguration", json!({"repositoryNames": ["locked"]})),
        ("PutRepositoryScanPolicy", with(json!({"scanPolicy": {"hideUnfixed": true}}))),
        ("GetRepositoryScanPolicy", repo.clone()),
    ];
    for (op, input) in &ecr {
        let (st, v) = s.ecr_as(op, input.clone(), &nobody).await;
        assert_eq!(
            (st, v["__type"].as_str().unwrap_or_default()),
            (StatusCode::BAD_REQUEST, "AccessDeniedException"),
            "{op}: {v}"
        );
        let message = v["message"].as_str().unwrap();
        assert!(message.contains(&format!("perform: ecr:{op} ")), "{op}: {message}");
    }
    // The same repository calls by the root are not refused (they may fail for other reasons).
    for (op, input) in ecr.iter().filter(|(_, i)| i.get("repositoryName").is_some()) {
        let (_, v) = s.ecr(op, input.clone()).await;
        assert_ne!(v["__type"], "AccessDeniedException", "{op}: {v}");
    }

    let parg = "arn:aws:iam::000000000000:policy/p";
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]}"#;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"sts:AssumeRole"}]}"#;
    ok(&s, &[("Action", "CreateRole"), ("RoleName", "r"), ("AssumeRolePolicyDocument", trust)], &Creds::root()).await;
    let iam: Vec<Vec<(&str, &str)>> = vec![
        vec![("Action", "CreateUser"), ("UserName", "u2")],
        vec![("Action", "GetUser"), ("UserName", "nobody")],
        vec![("Action", "ListUsers")],
        vec![("Action", "DeleteUser"), ("UserName", "nobody")],
        vec![("Action", "CreateGroup"), ("GroupName", "g")],
        vec![("Action", "GetGroup"), ("GroupName", "g")],
        vec![("Action", "ListGroups")],
        vec![("Action", "DeleteGroup"), ("GroupName", "g")],
        vec![("Action", "CreateRole"), ("RoleName", "r2"), ("AssumeRolePolicyDocument", trust)],
        vec![("Action", "GetRole"), ("RoleName", "r")],
        vec![("Action", "ListRoles")],
        vec![("Action", "DeleteRole"), ("RoleName", "r")],
        vec![("Action", "UpdateAssumeRolePolicy"), ("RoleName", "r"), ("PolicyDocument", trust)],
        vec![("Action", "AddUserToGroup"), ("GroupName", "g"), ("UserName", "nobody")],
        vec![("Action", "RemoveUserFromGroup"), ("GroupName", "g"), ("UserName", "nobody")],
        vec![("Action", "ListGroupsForUser"), ("UserName", "nobody")],
        vec![("Action", "CreateAccessKey"), ("UserName", "nobody")],
        vec![("Action", "ListAccessKeys"), ("UserName", "nobody")],
        vec![("Action", "UpdateAccessKey"), ("UserName", "nobody"), ("AccessKeyId", "AKIAX"), ("Status", "Inactive")],
        vec![("Action", "DeleteAccessKey"), ("UserName", "nobody"), ("AccessKeyId", "AKIAX")],
        vec![("Action", "PutUserPolicy"), ("UserName", "nobody"), ("PolicyName", "p"), ("PolicyDocument", doc)],
        vec![("Action", "GetUserPolicy"), ("UserName", "nobody"), ("PolicyName", "p")],
        vec![("Action", "ListUserPolicies"), ("UserName", "nobody")],
        vec![("Action", "DeleteUserPolicy"), ("UserName", "nobody"), ("PolicyName", "p")],
        vec![("Action", "PutRolePolicy"), ("RoleName", "r"), ("PolicyName", "p"), ("PolicyDocument", doc)],
        vec![("Action", "AttachUserPolicy"), ("UserName", "nobody"), ("PolicyArn", parg)],
        vec![("Action", "DetachUserPolicy"), ("UserName", "nobody"), ("PolicyArn", parg)],
        vec![("Action", "ListAttachedUserPolicies"), ("UserName", "nobody")],
        vec![("Action", "CreatePolicy"), ("PolicyName", "p"), ("PolicyDocument", doc)],
        vec![("Action", "GetPolicy"), ("PolicyArn", parg)],
        vec![("Action", "ListPolicies")],
        vec![("Action", "DeletePolicy"), ("PolicyArn", parg)],
        vec![("Action", "CreatePolicyVersion"), ("PolicyArn", parg), ("PolicyDocument", doc)],
        vec![("Action", "GetPolicyVersion"), ("PolicyArn", parg), ("VersionId", "v1")],
        vec![("Action", "ListPolicyVersions"), ("PolicyArn", parg)],
        vec![("Action", "DeletePolicyVersion"), ("PolicyArn", parg), ("VersionId", "v2")],
        vec![("Action", "SetDefaultPolicyVersion"), ("PolicyArn", parg), ("VersionId", "v1")],
        vec![("Action", "AssumeRole"), ("RoleArn", "arn:aws:iam::000000000000:role/r"), ("RoleSessionName", "s1")],
    ];
    for params in &iam {
        let (code, message) = err(&s, params, &nobody, StatusCode::FORBIDDEN).await;
        let action = params[0].1;
        let service = if action == "AssumeRole" { "sts" } else { "iam" };
        assert_eq!(code, "AccessDenied", "{action}: {message}");
        assert!(message.contains(&format!("{service}:{action}")), "{action}: {message}");
    }
}
both!(every_operation_is_decided_for_its_caller);
