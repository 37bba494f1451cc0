//! The AWS KMS API subset Berth serves: AWS JSON 1.1 on `POST /`, the operation named by
//! `X-Amz-Target: TrentService.<Operation>`, signed with SigV4 for service `kms`. Shapes and
//! error names follow botocore's `kms` model; the service decides every call.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_service::kms::{KeyView, NewKey};
use berth_service::{Caller, Error};
use serde_json::{Map, Value, json};

use crate::aws::{JsonApi, flag, int, req, s, ts, validation};
use crate::error::{kms_error_response, kms_response};
use crate::state::AppState;

/// The KMS API on `POST /`.
pub static API: JsonApi = JsonApi {
    target_prefix: "TrentService.",
    service: "kms",
    resource: "KeyId",
    error_type: crate::error::kms_type,
    respond: kms_error_response,
    service_error: kms_response,
    unsupported: "UnsupportedOperationException",
    doc: "docs/ENCRYPTION.md",
    dispatch: |st, who, op, v| Box::pin(dispatch(st, who, op, v)),
};

type R = Result<Value, Error>;

fn blob(v: &Value, field: &str) -> Result<Vec<u8>, Error> {
    STANDARD.decode(req(v, field)?).map_err(|_| validation(field, "must be base64"))
}

fn tags(v: &Value) -> Result<Vec<(String, String)>, Error> {
    match v.get("Tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            a.iter().map(|t| Ok((req(t, "TagKey")?.to_string(), req(t, "TagValue")?.to_string()))).collect()
        }
        Some(_) => Err(validation("Tags", "must be a list of {TagKey, TagValue}")),
    }
}

fn context(v: &Value) -> Result<Vec<(String, String)>, Error> {
    match v.get("EncryptionContext") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.as_str().ok_or_else(|| validation("EncryptionContext", "values are strings"))?.to_string(),
                ))
            })
            .collect(),
        Some(_) => Err(validation("EncryptionContext", "must be a map of strings")),
    }
}

fn limit(v: &Value) -> Result<i64, Error> {
    let n = int(v, "Limit")?.unwrap_or(100);
    if !(1..=1000).contains(&n) {
        return Err(validation("Limit", "must be between 1 and 1000"));
    }
    Ok(n)
}

fn metadata(v: &KeyView) -> Value {
    let k = &v.row;
    let mut m = Map::new();
    m.insert("AWSAccountId".into(), json!(k.account));
    m.insert("KeyId".into(), json!(k.key_id));
    m.insert("Arn".into(), json!(k.arn));
    m.insert("CreationDate".into(), ts(k.created_at));
    m.insert("Enabled".into(), json!(k.state == "Enabled"));
    m.insert("Description".into(), json!(k.description));
    m.insert("KeyUsage".into(), json!(k.key_usage));
    m.insert("KeyState".into(), json!(k.state));
    m.insert("Origin".into(), json!("AWS_KMS"));
    m.insert("KeyManager".into(), json!(k.manager));
    m.insert("CustomerMasterKeySpec".into(), json!(k.key_spec));
    m.insert("KeySpec".into(), json!(k.key_spec));
    m.insert("EncryptionAlgorithms".into(), json!(["SYMMETRIC_DEFAULT"]));
    m.insert("MultiRegion".into(), json!(k.multi_region));
    if let Some(d) = k.deletion_at {
        m.insert("DeletionDate".into(), ts(d));
    }
    if let Some(d) = k.pending_days {
        m.insert("PendingDeletionWindowInDays".into(), json!(d));
    }
    json!({ "KeyMetadata": Value::Object(m) })
}

/// A page's marker: the last item's sort key, when more follow.
fn page(mut out: Value, more: bool, last: Option<String>) -> Value {
    out["Truncated"] = json!(more);
    if more && let Some(l) = last {
        out["NextMarker"] = json!(l);
    }
    out
}

async fn dispatch(st: &AppState, who: &Caller, op: &str, v: &Value) -> Result<Option<Value>, Error> {
    let kms = st.registry.kms();
    let r: R = match op {
        "CreateKey" => {
            if let Some(o) = s(v, "Origin")?
                && o != "AWS_KMS"
            {
                return Err(validation("Origin", "Berth makes its keys' material itself: AWS_KMS only"));
            }
            let new = NewKey {
                description: s(v, "Description")?.map(str::to_string),
                key_usage: s(v, "KeyUsage")?.map(str::to_string),
                key_spec: s(v, "KeySpec")?.or(s(v, "CustomerMasterKeySpec")?).map(str::to_string),
                policy: s(v, "Policy")?.map(str::to_string),
                tags: tags(v)?,
                multi_region: flag(v, "MultiRegion")?,
                bypass_lockout_check: flag(v, "BypassPolicyLockoutSafetyCheck")?,
            };
            Ok(metadata(&kms.create_key(who, new).await?))
        }
        "DescribeKey" => Ok(metadata(&kms.describe_key(who, req(v, "KeyId")?).await?)),
        "ListKeys" => {
            let (rows, more) = kms.list_keys(who, s(v, "Marker")?, limit(v)?).await?;
            let last = rows.last().map(|r| r.key_id.clone());
            let keys: Vec<Value> = rows.iter().map(|r| json!({"KeyId": r.key_id, "KeyArn": r.arn})).collect();
            Ok(page(json!({ "Keys": keys }), more, last))
        }
        "CreateAlias" => {
            kms.create_alias(who, req(v, "AliasName")?, req(v, "TargetKeyId")?).await?;
            Ok(json!({}))
        }
        "UpdateAlias" => {
            kms.update_alias(who, req(v, "AliasName")?, req(v, "TargetKeyId")?).await?;
            Ok(json!({}))
        }
        "DeleteAlias" => {
            kms.delete_alias(who, req(v, "AliasName")?).await?;
            Ok(json!({}))
        }
        "ListAliases" => {
            let (rows, more) = kms.list_aliases(who, s(v, "KeyId")?, s(v, "Marker")?, limit(v)?).await?;
            let last = rows.last().map(|(_, a)| a.name.clone());
            let aliases: Vec<Value> = rows
                .iter()
                .map(|(arn, a)| {
                    json!({"AliasName": a.name, "AliasArn": arn, "TargetKeyId": a.key_id,
                        "CreationDate": ts(a.created_at), "LastUpdatedDate": ts(a.updated_at)})
                })
                .collect();
            Ok(page(json!({ "Aliases": aliases }), more, last))
        }
        "EnableKey" => kms.enable_key(who, req(v, "KeyId")?).await.map(|_| json!({})),
        "DisableKey" => kms.disable_key(who, req(v, "KeyId")?).await.map(|_| json!({})),
        "EnableKeyRotation" => {
            kms.enable_rotation(who, req(v, "KeyId")?, int(v, "RotationPeriodInDays")?).await.map(|_| json!({}))
        }
        "DisableKeyRotation" => kms.disable_rotation(who, req(v, "KeyId")?).await.map(|_| json!({})),
        "GetKeyRotationStatus" => {
            let r = kms.rotation_status(who, req(v, "KeyId")?).await?;
            let mut out = json!({ "KeyRotationEnabled": r.enabled, "KeyId": r.key_id });
            if let Some(p) = r.period_days {
                out["RotationPeriodInDays"] = json!(p);
            }
            if let Some(n) = r.next_rotation {
                out["NextRotationDate"] = ts(n);
            }
            if let Some(o) = r.on_demand_started {
                out["OnDemandRotationStartDate"] = ts(o);
            }
            Ok(out)
        }
        "RotateKeyOnDemand" => Ok(json!({ "KeyId": kms.rotate_now(who, req(v, "KeyId")?).await? })),
        "ListKeyRotations" => {
            let rotations: Vec<Value> = kms
                .list_rotations(who, req(v, "KeyId")?)
                .await?
                .into_iter()
                .map(|r| {
                    json!({"KeyId": r.key_id, "RotationDate": ts(r.at),
                        "RotationType": if r.on_demand { "ON_DEMAND" } else { "AUTOMATIC" }})
                })
                .collect();
            Ok(json!({ "Rotations": rotations, "Truncated": false }))
        }
        "ScheduleKeyDeletion" => {
            let (arn, at, days) = kms.schedule_deletion(who, req(v, "KeyId")?, int(v, "PendingWindowInDays")?).await?;
            Ok(
                json!({"KeyId": arn, "DeletionDate": ts(at), "KeyState": "PendingDeletion", "PendingWindowInDays": days}),
            )
        }
        "CancelKeyDeletion" => Ok(json!({ "KeyId": kms.cancel_deletion(who, req(v, "KeyId")?).await? })),
        "GetKeyPolicy" => {
            let name = s(v, "PolicyName")?;
            let p = kms.get_policy(who, req(v, "KeyId")?, name).await?;
            Ok(json!({ "Policy": p, "PolicyName": "default" }))
        }
        "PutKeyPolicy" => {
            let bypass = flag(v, "BypassPolicyLockoutSafetyCheck")?;
            if s(v, "PolicyName")?.is_some_and(|n| n != "default") {
                return Err(validation("PolicyName", "the only key policy name is default"));
            }
            kms.put_policy(who, req(v, "KeyId")?, req(v, "Policy")?, bypass).await.map(|_| json!({}))
        }
        "ListKeyPolicies" => {
            kms.get_policy(who, req(v, "KeyId")?, None).await?;
            Ok(json!({ "PolicyNames": ["default"], "Truncated": false }))
        }
        "TagResource" => kms.tag(who, req(v, "KeyId")?, &tags(v)?).await.map(|_| json!({})),
        "UntagResource" => {
            let keys: Vec<String> = match v.get("TagKeys") {
                Some(Value::Array(a)) => a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect(),
                _ => return Err(validation("TagKeys", "Member must not be null")),
            };
            kms.untag(who, req(v, "KeyId")?, &keys).await.map(|_| json!({}))
        }
        "ListResourceTags" => {
            let t: Vec<Value> = kms
                .list_tags(who, req(v, "KeyId")?)
                .await?
                .into_iter()
                .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
                .collect();
            Ok(json!({ "Tags": t, "Truncated": false }))
        }
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let bytes = match (int(v, "NumberOfBytes")?, s(v, "KeySpec")?) {
                (Some(_), Some(_)) => return Err(validation("KeySpec", "give NumberOfBytes or KeySpec, not both")),
                (Some(n), None) => n as usize,
                (None, Some("AES_256")) | (None, None) => 32,
                (None, Some("AES_128")) => 16,
                (None, Some(_)) => {
                    return Err(validation("KeySpec", "Member must satisfy enum value set: [AES_256, AES_128]"));
                }
            };
            let out = kms.generate_data_key(who, req(v, "KeyId")?, bytes, &context(v)?).await?;
            let mut r = json!({ "CiphertextBlob": STANDARD.encode(&out.ciphertext), "KeyId": out.key_arn });
            if op == "GenerateDataKey" {
                r["Plaintext"] = json!(STANDARD.encode(&out.plaintext));
            }
            Ok(r)
        }
        "Encrypt" => {
            let out = kms.encrypt(who, req(v, "KeyId")?, &blob(v, "Plaintext")?, &context(v)?).await?;
            Ok(json!({ "CiphertextBlob": STANDARD.encode(&out.ciphertext), "KeyId": out.key_arn,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT" }))
        }
        "Decrypt" => {
            let out = kms.decrypt(who, &blob(v, "CiphertextBlob")?, s(v, "KeyId")?, &context(v)?).await?;
            Ok(json!({ "Plaintext": STANDARD.encode(&out.plaintext), "KeyId": out.key_arn,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT" }))
        }
        _ => return Ok(None),
    };
    r.map(Some)
}
