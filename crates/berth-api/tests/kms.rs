//! The KMS API and KMS-encrypted repositories, on SQLite and PostgreSQL: keys and aliases,
//! Encrypt/Decrypt/GenerateDataKey, rotation (old data stays readable; re-wrapping moves data
//! keys to the newest material), disable/enable, the deletion window, key policies with IAM,
//! and pushes and pulls of a repository sealed under a customer key.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

fn key_id(v: &serde_json::Value) -> String {
    v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
}

async fn keys_aliases_and_data_keys(s: Server) {
    let k =
        s.kms_ok("CreateKey", json!({"Description": "team key", "Tags": [{"TagKey": "team", "TagValue": "a"}]})).await;
    let md = &k["KeyMetadata"];
    let id = key_id(&k);
    assert_eq!(md["KeyState"], "Enabled");
    assert_eq!(md["Enabled"], true);
    assert_eq!(md["KeyManager"], "CUSTOMER");
    assert_eq!(md["Arn"], format!("arn:aws:kms:us-east-1:000000000000:key/{id}"));
    s.kms_ok("CreateAlias", json!({"AliasName": "alias/team", "TargetKeyId": id})).await;
    let (t, _) = s.kms_err("CreateAlias", json!({"AliasName": "alias/team", "TargetKeyId": id})).await;
    assert_eq!(t, "AlreadyExistsException");
    let (t, _) = s.kms_err("CreateAlias", json!({"AliasName": "alias/aws/mine", "TargetKeyId": id})).await;
    assert_eq!(t, "AccessDeniedException");
    let (t, _) = s.kms_err("CreateAlias", json!({"AliasName": "team", "TargetKeyId": id})).await;
    assert_eq!(t, "ValidationException");
    // Every way of naming a key finds it.
    let arn = md["Arn"].as_str().unwrap().to_string();
    for name in [id.clone(), arn.clone(), "alias/team".into(), "arn:aws:kms:us-east-1:000000000000:alias/team".into()] {
        let d = s.kms_ok("DescribeKey", json!({"KeyId": name})).await;
        assert_eq!(key_id(&d), id, "{name}");
    }
    let (t, m) = s.kms_err("DescribeKey", json!({"KeyId": "alias/nope"})).await;
    assert_eq!(t, "NotFoundException", "{m}");
    let keys = s.kms_ok("ListKeys", json!({})).await;
    assert!(keys["Keys"].as_array().unwrap().iter().any(|k| k["KeyId"] == id.as_str()));
    let aliases = s.kms_ok("ListAliases", json!({"KeyId": id})).await;
    assert_eq!(aliases["Aliases"][0]["AliasName"], "alias/team");
    let tags = s.kms_ok("ListResourceTags", json!({"KeyId": id})).await;
    assert_eq!(tags["Tags"], json!([{"TagKey": "team", "TagValue": "a"}]));

    // Encrypt / Decrypt, bound to the encryption context.
    let secret = STANDARD.encode(b"hello kms");
    let e =
        s.kms_ok("Encrypt", json!({"KeyId": "alias/team", "Plaintext": secret, "EncryptionContext": {"a": "1"}})).await;
    let blob = e["CiphertextBlob"].as_str().unwrap();
    assert!(!STANDARD.decode(blob).unwrap().windows(9).any(|w| w == b"hello kms"));
    let d = s.kms_ok("Decrypt", json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "1"}})).await;
    assert_eq!(d["Plaintext"], secret);
    assert_eq!(d["KeyId"], arn.as_str());
    let (t, _) = s.kms_err("Decrypt", json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "2"}})).await;
    assert_eq!(t, "InvalidCiphertextException");
    let g = s.kms_ok("GenerateDataKey", json!({"KeyId": id, "KeySpec": "AES_256"})).await;
    assert_eq!(STANDARD.decode(g["Plaintext"].as_str().unwrap()).unwrap().len(), 32);
    let d = s.kms_ok("Decrypt", json!({"CiphertextBlob": g["CiphertextBlob"]})).await;
    assert_eq!(d["Plaintext"], g["Plaintext"]);

    // Rotation: new material for new data, old ciphertext still opens.
    let r = s.kms_ok("GetKeyRotationStatus", json!({"KeyId": id})).await;
    assert_eq!(r["KeyRotationEnabled"], false);
    s.kms_ok("EnableKeyRotation", json!({"KeyId": id, "RotationPeriodInDays": 90})).await;
    let r = s.kms_ok("GetKeyRotationStatus", json!({"KeyId": id})).await;
    assert_eq!((r["KeyRotationEnabled"].clone(), r["RotationPeriodInDays"].clone()), (json!(true), json!(90)));
    assert!(r["NextRotationDate"].as_f64().unwrap() > 0.0);
    let (t, _) = s.kms_err("EnableKeyRotation", json!({"KeyId": id, "RotationPeriodInDays": 10})).await;
    assert_eq!(t, "ValidationException");
    s.kms_ok("RotateKeyOnDemand", json!({"KeyId": id})).await;
    let rot = s.kms_ok("ListKeyRotations", json!({"KeyId": id})).await;
    assert_eq!(rot["Rotations"][0]["RotationType"], "ON_DEMAND");
    let e2 = s.kms_ok("Encrypt", json!({"KeyId": id, "Plaintext": secret})).await;
    assert_ne!(
        &STANDARD.decode(e2["CiphertextBlob"].as_str().unwrap()).unwrap()[..45],
        &STANDARD.decode(blob).unwrap()[..45]
    );
    let d = s.kms_ok("Decrypt", json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "1"}})).await;
    assert_eq!(d["Plaintext"], secret, "ciphertext from before the rotation");

    // Disable: nothing opens or seals; enable: it does again.
    s.kms_ok("DisableKey", json!({"KeyId": id})).await;
    let (t, m) = s.kms_err("Decrypt", json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "1"}})).await;
    assert_eq!(t, "DisabledException", "{m}");
    s.kms_ok("EnableKey", json!({"KeyId": id})).await;
    s.kms_ok("Decrypt", json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "1"}})).await;

    // The deletion window: 7-30 days, cancellable (the key comes back disabled).
    let (t, _) = s.kms_err("ScheduleKeyDeletion", json!({"KeyId": id, "PendingWindowInDays": 3})).await;
    assert_eq!(t, "ValidationException");
    let sd = s.kms_ok("ScheduleKeyDeletion", json!({"KeyId": id, "PendingWindowInDays": 7})).await;
    assert_eq!(sd["KeyState"], "PendingDeletion");
    let days = (sd["DeletionDate"].as_f64().unwrap() - berth_meta::now_ms() as f64 / 1000.0) / 86400.0;
    assert!((6.9..7.1).contains(&days), "{days} days");
    let (t, m) = s.kms_err("Encrypt", json!({"KeyId": id, "Plaintext": secret})).await;
    assert_eq!(t, "KMSInvalidStateException");
    assert!(m.contains("pending deletion"), "{m}");
    s.kms_ok("CancelKeyDeletion", json!({"KeyId": id})).await;
    let d = s.kms_ok("DescribeKey", json!({"KeyId": id})).await;
    assert_eq!(d["KeyMetadata"]["KeyState"], "Disabled");
    s.kms_ok("EnableKey", json!({"KeyId": id})).await;

    // Policies: the default names the account; a policy that would lock the caller out is refused.
    let p = s.kms_ok("GetKeyPolicy", json!({"KeyId": id, "PolicyName": "default"})).await;
    assert!(p["Policy"].as_str().unwrap().contains("arn:aws:iam::000000000000:root"));
    let lockout = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/x"},"Action":"kms:*","Resource":"*"}]}"#;
    let (t, _) = s.kms_err("PutKeyPolicy", json!({"KeyId": id, "PolicyName": "default", "Policy": lockout})).await;
    assert_eq!(t, "MalformedPolicyDocumentException");
    let (t, _) = s.kms_err("PutKeyPolicy", json!({"KeyId": id, "Policy": "{not json"})).await;
    assert_eq!(t, "MalformedPolicyDocumentException");
    // Unknown operations name themselves.
    let (t, m) = s.kms_err("ReEncrypt", json!({})).await;
    assert_eq!(t, "UnsupportedOperationException", "{m}");
}
both!(keys_aliases_and_data_keys);

async fn pull(s: &Server, repo: &str, d: &str) -> (StatusCode, Vec<u8>) {
    let r = s.req(Method::GET, &format!("/v2/{repo}/blobs/{d}")).send().await.unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

async fn repositories_sealed_under_a_customer_key(s: Server) {
    let id = key_id(&s.kms_ok("CreateKey", json!({})).await);
    s.kms_ok("CreateAlias", json!({"AliasName": "alias/secret", "TargetKeyId": id})).await;
    let r = s
        .ecr_ok(
            "CreateRepository",
            json!({"repositoryName": "secret", "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "alias/secret"}}),
        )
        .await;
    let arn = format!("arn:aws:kms:us-east-1:000000000000:key/{id}");
    assert_eq!(r["repository"]["encryptionConfiguration"], json!({"encryptionType": "KMS", "kmsKey": arn}));
    // An unknown or disabled key is refused at creation.
    let (t, m) = s
        .ecr_err("CreateRepository", json!({"repositoryName": "nokey", "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "alias/none"}}))
        .await;
    assert_eq!(t, "KmsException", "{m}");
    // KMS without a key: the account's AWS-managed key.
    let r = s
        .ecr_ok(
            "CreateRepository",
            json!({"repositoryName": "managed", "encryptionConfiguration": {"encryptionType": "KMS"}}),
        )
        .await;
    let managed = r["repository"]["encryptionConfiguration"]["kmsKey"].as_str().unwrap().to_string();
    let d = s.kms_ok("DescribeKey", json!({"KeyId": "alias/aws/ecr"})).await;
    assert_eq!(d["KeyMetadata"]["Arn"], managed.as_str());
    assert_eq!(d["KeyMetadata"]["KeyManager"], "AWS");
    let (t, _) = s.kms_err("DisableKey", json!({"KeyId": "alias/aws/ecr"})).await;
    assert_eq!(t, "UnsupportedOperationException");

    // Push and pull; the same layer in an AES256 repository is a separate copy.
    let layer: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let dg = s.push_blob("secret", &layer).await;
    let cfg = s.push_blob("secret", b"{}").await;
    let m = image_manifest(&cfg, 2, &[(dg.clone(), layer.len())]);
    assert_eq!(s.put_manifest("secret", "v1", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    assert_eq!(pull(&s, "secret", &dg).await, (StatusCode::OK, layer.clone()));
    let copy = s.meta.blob_object(&dg, &id).await.unwrap().expect("a copy under the customer key");
    assert_eq!(copy.key_id, id);
    s.push_blob("plain", &layer).await;
    assert_eq!(s.meta.blob_objects_of(std::slice::from_ref(&dg)).await.unwrap().len(), 2, "one copy per key");
    // A mount from a repository under another key is not shared: the client uploads.
    let r = s.req(Method::POST, &format!("/v2/secret/blobs/uploads/?mount={dg}&from=plain")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "secret already holds it");
    let r = s.req(Method::POST, &format!("/v2/managed/blobs/uploads/?mount={dg}&from=secret")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "another key: no mount, an upload starts");

    // Disabled key: pulls and pushes fail with a clear error, nothing is lost.
    s.kms_ok("DisableKey", json!({"KeyId": id})).await;
    tokio::time::sleep(berth_service::kms::KEY_STATE_TTL).await;
    let r = s.req(Method::GET, &format!("/v2/secret/blobs/{dg}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = r.text().await.unwrap();
    assert!(body.contains("DENIED") && body.contains("disabled") && body.contains(&arn), "{body}");
    let r = s.req(Method::GET, "/v2/secret/manifests/v1").header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (t, m) =
        s.ecr_err("BatchGetImage", json!({"repositoryName": "secret", "imageIds": [{"imageTag": "v1"}]})).await;
    assert_eq!(t, "KmsException", "{m}");
    let r = s.req(Method::POST, "/v2/secret/blobs/uploads/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no push either");
    s.kms_ok("EnableKey", json!({"KeyId": id})).await;
    tokio::time::sleep(berth_service::kms::KEY_STATE_TTL).await;
    assert_eq!(pull(&s, "secret", &dg).await, (StatusCode::OK, layer.clone()), "enabled again: readable");

    // Pending deletion: the repository says so.
    s.kms_ok("ScheduleKeyDeletion", json!({"KeyId": id, "PendingWindowInDays": 7})).await;
    tokio::time::sleep(berth_service::kms::KEY_STATE_TTL).await;
    let r = s.req(Method::GET, &format!("/v2/secret/blobs/{dg}")).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("pending deletion"));
    s.kms_ok("CancelKeyDeletion", json!({"KeyId": id})).await;
    s.kms_ok("EnableKey", json!({"KeyId": id})).await;
    tokio::time::sleep(berth_service::kms::KEY_STATE_TTL).await;

    // Rotation, then re-wrapping: data keys move to the newest material; content is untouched.
    s.kms_ok("RotateKeyOnDemand", json!({"KeyId": id})).await;
    let path_of = |o: &str| {
        let n = o.trim_start_matches("sha256:").to_string();
        s.dir.path().join("blobs/sha256").join(&n[..2]).join(&n)
    };
    let before = std::fs::read(path_of(&copy.object)).unwrap();
    let n = s.registry.encryption().rewrap(&berth_service::Caller::operator(), &|_, _| {}).await.unwrap();
    assert!(n >= 2, "layer and config re-wrapped: {n}");
    let after = s.meta.blob_object(&dg, &id).await.unwrap().unwrap();
    assert_eq!(after.key_version, 2);
    assert_eq!(after.object, copy.object);
    assert_eq!(std::fs::read(path_of(&after.object)).unwrap(), before, "content untouched");
    assert_eq!(pull(&s, "secret", &dg).await, (StatusCode::OK, layer.clone()));
    assert_eq!(s.registry.encryption().rewrap(&berth_service::Caller::operator(), &|_, _| {}).await.unwrap(), 0);
    let report = s.registry.fsck().fsck(&berth_service::Caller::operator(), |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}
both!(repositories_sealed_under_a_customer_key);

async fn key_policies_decide_with_iam(s: Server) {
    let id = key_id(&s.kms_ok("CreateKey", json!({})).await);
    s.ecr_ok(
        "CreateRepository",
        json!({"repositoryName": "locked", "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": id}}),
    )
    .await;
    let layer = b"sealed under a key".repeat(100);
    let dg = s.push_blob("locked", &layer).await;
    let ecr_pull = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:*"],"Resource":"*"}]}"#;
    let puller = s.iam_user("puller", ecr_pull).await;
    let pw = s.login_as(&puller).await;
    // ECR allows, but no policy allows kms:Decrypt: refused, naming the key.
    let r = s.req(Method::GET, &format!("/v2/locked/blobs/{dg}")).basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = r.text().await.unwrap();
    assert!(body.contains("kms:Decrypt") && body.contains(&id), "{body}");
    let (st, v) = s.kms_as("Decrypt", json!({"CiphertextBlob": STANDARD.encode(b"BKC1x")}), &puller).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // With kms:Decrypt in IAM (the default key policy delegates to the account): it pulls.
    let both =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:*","kms:Decrypt"],"Resource":"*"}]}"#;
    let reader = s.iam_user("reader", both).await;
    let pw = s.login_as(&reader).await;
    let r = s.req(Method::GET, &format!("/v2/locked/blobs/{dg}")).basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), layer);
    // But not push: that needs kms:GenerateDataKey.
    let r = s.req(Method::POST, "/v2/locked/blobs/uploads/").basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("kms:GenerateDataKey"));
    // A key policy without the account: IAM alone no longer suffices.
    let own = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*","Resource":"*"},{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::000000000000:user/reader"},"Action":"kms:Decrypt","Resource":"*"}]}"#;
    s.kms_ok("PutKeyPolicy", json!({"KeyId": id, "PolicyName": "default", "Policy": own})).await;
    tokio::time::sleep(berth_service::kms::KEY_STATE_TTL).await;
    let r = s.req(Method::GET, &format!("/v2/locked/blobs/{dg}")).basic_auth("AWS", Some(&pw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "an explicit deny in the key policy");
    // The root user still pulls.
    let root = s.login_as(&Creds::root()).await;
    let r = s.req(Method::GET, &format!("/v2/locked/blobs/{dg}")).basic_auth("AWS", Some(&root)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
both!(key_policies_decide_with_iam);
