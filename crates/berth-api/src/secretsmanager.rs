//! The AWS Secrets Manager subset Berth serves, for the credentials of pull-through cache rules:
//! AWS JSON 1.1 on `POST /`, `X-Amz-Target: secretsmanager.<Operation>`, signed with SigV4 for
//! service `secretsmanager`. Shapes and error names follow botocore's `secretsmanager` model;
//! one version of each secret is kept (`AWSCURRENT`). See docs/PULL-THROUGH-CACHE.md.

use berth_service::secrets::{CURRENT, SecretInfo};
use berth_service::{Caller, Error};
use serde_json::{Value, json};

use crate::aws::{JsonApi, flag, int, req, s, ts, validation};
use crate::error::{sm_error_response, sm_response};
use crate::state::AppState;

/// The Secrets Manager API on `POST /`.
pub static API: JsonApi = JsonApi {
    target_prefix: "secretsmanager.",
    service: "secretsmanager",
    resource: "SecretId",
    error_type: crate::error::sm_type,
    respond: sm_error_response,
    service_error: sm_response,
    unsupported: "InvalidRequestException",
    doc: "docs/PULL-THROUGH-CACHE.md",
    dispatch: |st, who, op, v| Box::pin(dispatch(st, who, op, v)),
};

/// What Berth does not keep is refused, not dropped: a later read would not show it.
fn refuse_unkept(v: &Value) -> Result<(), Error> {
    if v.get("SecretBinary").is_some_and(|b| !b.is_null()) {
        return Err(validation("SecretBinary", "Berth keeps SecretString values only"));
    }
    if v.get("Tags").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        return Err(validation("Tags", "Berth does not keep tags on secrets"));
    }
    if v.get("AddReplicaRegions").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        return Err(validation("AddReplicaRegions", "Berth does not replicate secrets"));
    }
    Ok(())
}

fn stages(i: &SecretInfo) -> Value {
    match &i.version_id {
        Some(v) => json!({ v.clone(): [CURRENT] }),
        None => json!({}),
    }
}

fn entry(i: &SecretInfo, versions_field: &str) -> Value {
    let mut v = json!({
        "ARN": i.arn,
        "Name": i.name,
        "CreatedDate": ts(i.created_at),
        "LastChangedDate": ts(i.updated_at),
        "RotationEnabled": false,
    });
    if let Some(d) = &i.description {
        v["Description"] = json!(d);
    }
    v[versions_field] = stages(i);
    v
}

async fn dispatch(st: &AppState, who: &Caller, op: &str, v: &Value) -> Result<Option<Value>, Error> {
    let secrets = st.registry.secrets();
    let out = match op {
        "CreateSecret" => {
            refuse_unkept(v)?;
            let value = s(v, "SecretString")?;
            let i =
                secrets.create(who, req(v, "Name")?, value, s(v, "Description")?, s(v, "ClientRequestToken")?).await?;
            let mut out = json!({ "ARN": i.arn, "Name": i.name });
            if let Some(id) = i.version_id {
                out["VersionId"] = json!(id);
            }
            out
        }
        "DescribeSecret" => entry(&secrets.describe(who, req(v, "SecretId")?).await?, "VersionIdsToStages"),
        "GetSecretValue" => {
            let (i, value) =
                secrets.get_value(who, req(v, "SecretId")?, s(v, "VersionId")?, s(v, "VersionStage")?).await?;
            json!({
                "ARN": i.arn, "Name": i.name, "VersionId": i.version_id, "SecretString": value,
                "VersionStages": [CURRENT], "CreatedDate": ts(i.updated_at),
            })
        }
        "PutSecretValue" => {
            refuse_unkept(v)?;
            if let Some(st) = v.get("VersionStages").and_then(Value::as_array)
                && st.iter().any(|s| s.as_str() != Some(CURRENT))
            {
                return Err(validation("VersionStages", "Berth keeps the AWSCURRENT version only"));
            }
            let value = req(v, "SecretString")?;
            let token = s(v, "ClientRequestToken")?;
            let i = secrets.put_value(who, req(v, "SecretId")?, value, token).await?;
            json!({ "ARN": i.arn, "Name": i.name, "VersionId": i.version_id, "VersionStages": [CURRENT] })
        }
        "UpdateSecret" => {
            refuse_unkept(v)?;
            let (value, token) = (s(v, "SecretString")?, s(v, "ClientRequestToken")?);
            let i = secrets.update(who, req(v, "SecretId")?, value, s(v, "Description")?, token).await?;
            let mut out = json!({ "ARN": i.arn, "Name": i.name });
            if value.is_some() {
                out["VersionId"] = json!(i.version_id);
            }
            out
        }
        "DeleteSecret" => {
            let window = int(v, "RecoveryWindowInDays")?;
            if window.is_some() && flag(v, "ForceDeleteWithoutRecovery")? {
                return Err(validation(
                    "RecoveryWindowInDays",
                    "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays",
                ));
            }
            if let Some(w) = window
                && !(7..=30).contains(&w)
            {
                return Err(validation("RecoveryWindowInDays", "must be between 7 and 30"));
            }
            // Berth keeps no deleted secrets: gone now, whatever the window.
            let i = secrets.delete(who, req(v, "SecretId")?).await?;
            let now = berth_service::tokens::now_secs() as i64 * 1000;
            json!({ "ARN": i.arn, "Name": i.name, "DeletionDate": ts(now) })
        }
        "ListSecrets" => list(&secrets.list(who).await?, v)?,
        "GetResourcePolicy" => {
            let i = secrets.describe(who, req(v, "SecretId")?).await?;
            json!({ "ARN": i.arn, "Name": i.name })
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

/// A page of `ListSecrets`, by name: `NextToken` is the last name given; `Filters` on `name`
/// (prefixes) and `description` (words) are applied.
fn list(all: &[SecretInfo], v: &Value) -> Result<Value, Error> {
    let max = int(v, "MaxResults")?.unwrap_or(100);
    if !(1..=100).contains(&max) {
        return Err(validation("MaxResults", "must be between 1 and 100"));
    }
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    for f in v.get("Filters").and_then(Value::as_array).into_iter().flatten() {
        let key = req(f, "Key")?;
        if !matches!(key, "name" | "description") {
            return Err(validation("Filters", "Berth filters secrets by name and description only"));
        }
        let values = f["Values"].as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
        filters.push((key.to_string(), values.unwrap_or_default()));
    }
    let after = s(v, "NextToken")?;
    let shown = all.iter().filter(|i| after.is_none_or(|a| i.name.as_str() > a)).filter(|i| {
        filters.iter().all(|(k, vals)| {
            vals.iter().any(|x| match k.as_str() {
                "name" => i.name.starts_with(x.as_str()),
                _ => i.description.as_deref().is_some_and(|d| d.contains(x.as_str())),
            })
        })
    });
    let page: Vec<&SecretInfo> = shown.take(max as usize + 1).collect();
    let more = page.len() > max as usize;
    let page = &page[..page.len().min(max as usize)];
    let mut out = json!({ "SecretList": page.iter().map(|i| entry(i, "SecretVersionsToStages")).collect::<Vec<_>>() });
    if more && let Some(last) = page.last() {
        out["NextToken"] = json!(last.name);
    }
    Ok(out)
}
