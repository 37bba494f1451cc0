//! The AWS KMS API subset Berth serves: AWS JSON 1.1 on `POST /`, the operation named by
//! `X-Amz-Target: TrentService.<Operation>`, signed with SigV4 for service `kms`. Shapes and
//! error names follow botocore's `kms` model; the service decides every call.

use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_service::kms::{KeyView, NewKey};
use berth_service::{Caller, Error};
use serde_json::{Map, Value, json};

use crate::aws::Refusal;
use crate::error::{kms_error_response, kms_response};
use crate::state::AppState;

pub const TARGET_PREFIX: &str = "TrentService.";

type R = Result<Value, Error>;

/// Whether a `POST /` is a KMS call.
pub fn is_kms(req: &Request) -> bool {
    req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with(TARGET_PREFIX))
}

pub async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    crate::aws::with_request_id(handle_inner(&st, req).await, &request_id)
}

async fn handle_inner(st: &AppState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .unwrap_or_default()
        .to_string();
    let mut event = crate::aws::event(&format!("kms:{op}"), &parts);
    let ip = event.source_ip;
    let signed = match crate::aws::authenticate(st, &parts, body, 1024 * 1024, |_| "kms").await {
        Ok(s) => s,
        Err(Refusal::Sig(e)) => {
            event.error = Some(format!("{}: {e}", e.aws_type()));
            st.registry.audit(event).await;
            return kms_error_response(e.aws_type(), &e.to_string());
        }
        Err(Refusal::Service(e)) => {
            event.error = Some(format!("{}: {e}", crate::error::kms_type(&e)));
            st.registry.audit(event).await;
            return kms_response(&e);
        }
    };
    event.principal = Some(signed.principal.arn.clone());
    let secure = crate::serve::is_secure(&parts.extensions);
    let who = Caller::principal(signed.principal).from(ip, secure);
    let input: Value = if signed.payload.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&signed.payload) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return kms_error_response("SerializationException", "the request body must be a JSON object"),
            Err(e) => return kms_error_response("SerializationException", &format!("malformed JSON: {e}")),
        }
    };
    event.resource = input.get("KeyId").and_then(Value::as_str).map(str::to_string);
    let result = dispatch(st, &who, &op, &input).await;
    event.allowed = !matches!(&result, Err(e) if e.is_denied());
    event.error = match &result {
        Ok(Some(_)) => None,
        Ok(None) => Some("UnknownOperationException".into()),
        Err(e) => Some(crate::error::kms_type(e).to_string()),
    };
    st.registry.audit(event).await;
    match result {
        Ok(Some(v)) => crate::aws::json_response(&v),
        Ok(None) => kms_error_response(
            "UnsupportedOperationException",
            &format!("Berth does not support the KMS operation {op:?} (see docs/ENCRYPTION.md)"),
        ),
        Err(e) => kms_response(&e),
    }
}

fn validation(field: &str, reason: &str) -> Error {
    Error::Invalid(berth_service::error::Invalid {
        kind: berth_service::error::InvalidKind::Validation,
        field: Some(field.to_string()),
        value: None,
        reason: reason.to_string(),
    })
}

fn s<'a>(v: &'a Value, field: &str) -> Result<Option<&'a str>, Error> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(validation(field, "must be a string")),
    }
}

fn req<'a>(v: &'a Value, field: &str) -> Result<&'a str, Error> {
    s(v, field)?.ok_or_else(|| validation(field, "Member must not be null"))
}

fn int(v: &Value, field: &str) -> Result<Option<i64>, Error> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n.as_i64().map(Some).ok_or_else(|| validation(field, "must be an integer")),
    }
}

fn flag(v: &Value, field: &str) -> Result<bool, Error> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(validation(field, "must be a boolean")),
    }
}

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

fn ts(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
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
