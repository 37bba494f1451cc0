//! The Amazon ECR control-plane API: AWS JSON 1.1 on `POST /`, the operation named by
//! `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.<Operation>`, every request signed with
//! SigV4 (service `ecr`). Each operation reads its input shape from the botocore model, calls the
//! registry service, and writes the output shape; errors become `{"__type","message"}`.

use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_service::error::NotFound;
use berth_service::repo_settings::{MutabilityFilter, ResourceTag};
use berth_service::repositories::{NewRepository, Repository};
use berth_service::scan_config::RepositoryScanningResult;
use berth_service::templates::{StoredTemplate, Template};
use berth_service::{Caller, Error, ImageFailure, ImageId, LayerCheck, Principal, TagStatus, parse_tag_status};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::aws::Refusal;
use crate::error::{ecr_error_response, ecr_response};
use crate::state::AppState;

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921.";

type R = Result<Value, Error>;

pub async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    crate::aws::with_request_id(handle_inner(&st, req).await, &request_id)
}

async fn handle_inner(st: &AppState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(op) = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .map(str::to_string)
    else {
        return ecr_error_response(
            "UnknownOperationException",
            &format!(
                "POST / needs an X-Amz-Target header naming an operation, e.g. {TARGET_PREFIX}DescribeRepositories"
            ),
            None,
        );
    };
    let mut event = crate::aws::event(&op, &parts);
    let ip = event.source_ip;
    let signed = match crate::aws::authenticate(st, &parts, body, body_limit(&op), |_| "ecr").await {
        Ok(s) => s,
        Err(Refusal::Sig(e)) => {
            event.error = Some(format!("{}: {e}", e.aws_type()));
            st.registry.audit(event).await;
            return ecr_error_response(e.aws_type(), &e.to_string(), None);
        }
        Err(Refusal::Service(e)) => {
            event.error = Some(format!("{}: {e}", crate::error::ecr_type(&e)));
            st.registry.audit(event).await;
            return ecr_response(&e, &st.registry.settings().registry_id);
        }
    };
    event.principal = Some(signed.principal.arn.clone());
    let payload = signed.payload;
    let principal = signed.principal;
    let secure = crate::serve::is_secure(&parts.extensions);
    let mut who = Caller::principal(principal.clone()).from(ip, secure);
    let input: Value = if payload.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&payload) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return ecr_error_response("SerializationException", "the request body must be a JSON object", None);
            }
            Err(e) => return ecr_error_response("SerializationException", &format!("malformed JSON: {e}"), None),
        }
    };
    tracing::debug!(operation = %op, principal = %principal.arn, "ecr request");
    let mut input = input;
    // Tags a call sets or removes are condition keys (aws:RequestTag/*, aws:TagKeys).
    if let Some(Value::Array(tags)) = input.get("tags") {
        who.request_tags = tags
            .iter()
            .filter_map(|t| Some((t.get("Key")?.as_str()?.to_string(), t.get("Value")?.as_str()?.to_string())))
            .collect();
    }
    if let Some(Value::Array(keys)) = input.get("tagKeys") {
        who.tag_keys = keys.iter().filter_map(|k| k.as_str().map(str::to_string)).collect();
    }
    let result = match registry_of(st, &principal, &mut input).await {
        Ok(registry) => {
            event.resource = input.get("repositoryName").and_then(Value::as_str).map(|n| st.registry.repository_arn(n));
            REGISTRY.scope(registry, dispatch(st, &who, &op, input)).await.map(|v| {
                v.map(|mut v| {
                    unqualify(&mut v);
                    v
                })
            })
        }
        Err(e) => Err(e),
    };
    event.allowed = !matches!(&result, Err(e) if e.is_denied() || matches!(e, Error::Throttled(_)));
    event.error = match &result {
        Ok(Some(_)) => None,
        Ok(None) => Some("UnknownOperationException".into()),
        Err(e) => Some(crate::error::ecr_type(e).to_string()),
    };
    st.registry.audit(event).await;
    match result {
        Ok(Some(v)) => crate::aws::json_response(&v),
        Ok(None) => ecr_error_response(
            "UnknownOperationException",
            &format!("Berth does not support the ECR operation {op:?} (see docs/ECR-API.md)"),
            None,
        ),
        Err(e) => ecr_response(&e, &st.registry.settings().registry_id),
    }
}

/// Largest body each operation takes: an UploadLayerPart carries up to 20 MiB base64-encoded, a
/// PutImage a manifest of up to 4 MiB as a JSON string; everything else is small.
fn body_limit(op: &str) -> usize {
    match op {
        "UploadLayerPart" => 30 * 1024 * 1024,
        "PutImage" => 12 * 1024 * 1024,
        _ => 1024 * 1024,
    }
}

fn input<T: DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::bad_request(format!("Invalid request: {e}")))
}

use crate::aws::ts;

/// Runs operation `op` for `c`; the service decides `ecr:<op>` on what the call names.
async fn dispatch(st: &AppState, c: &Caller, op: &str, v: Value) -> Result<Option<Value>, Error> {
    let r = match op {
        "SetRepositoryPolicy" => set_repository_policy(st, c, v).await,
        "GetRepositoryPolicy" => get_repository_policy(st, c, v).await,
        "DeleteRepositoryPolicy" => delete_repository_policy(st, c, v).await,
        "PutRegistryPolicy" => put_registry_policy(st, c, v).await,
        "GetRegistryPolicy" => get_registry_policy(st, c).await,
        "DeleteRegistryPolicy" => delete_registry_policy(st, c).await,
        "CreateRepository" => create_repository(st, c, v).await,
        "DescribeRepositories" => describe_repositories(st, c, v).await,
        "DeleteRepository" => delete_repository(st, c, v).await,
        "PutImageTagMutability" => put_image_tag_mutability(st, c, v).await,
        "PutImageScanningConfiguration" => put_image_scanning_configuration(st, c, v).await,
        "CreateRepositoryCreationTemplate" => create_template(st, c, v).await,
        "DescribeRepositoryCreationTemplates" => describe_templates(st, c, v).await,
        "UpdateRepositoryCreationTemplate" => update_template(st, c, v).await,
        "DeleteRepositoryCreationTemplate" => delete_template(st, c, v).await,
        "ListImages" => list_images(st, c, v).await,
        "DescribeImages" => describe_images(st, c, v).await,
        "BatchGetImage" => batch_get_image(st, c, v).await,
        "BatchDeleteImage" => batch_delete_image(st, c, v).await,
        "PutImage" => put_image(st, c, v).await,
        "ListImageReferrers" => list_image_referrers(st, c, v).await,
        "BatchCheckLayerAvailability" => batch_check_layer_availability(st, c, v).await,
        "InitiateLayerUpload" => initiate_layer_upload(st, c, v).await,
        "UploadLayerPart" => upload_layer_part(st, c, v).await,
        "CompleteLayerUpload" => complete_layer_upload(st, c, v).await,
        "GetDownloadUrlForLayer" => get_download_url_for_layer(st, c, v).await,
        "GetAuthorizationToken" => get_authorization_token(st, c, v).await,
        "DescribeRegistry" => describe_registry(st, c).await,
        "GetAccountSetting" => get_account_setting(st, c, v).await,
        "PutAccountSetting" => put_account_setting(st, c, v).await,
        "TagResource" => tag_resource(st, c, v).await,
        "UntagResource" => untag_resource(st, c, v).await,
        "ListTagsForResource" => list_tags_for_resource(st, c, v).await,
        "PutLifecyclePolicy" => put_lifecycle_policy(st, c, v).await,
        "GetLifecyclePolicy" => get_lifecycle_policy(st, c, v, false).await,
        "DeleteLifecyclePolicy" => get_lifecycle_policy(st, c, v, true).await,
        "StartLifecyclePolicyPreview" => start_lifecycle_policy_preview(st, c, v).await,
        "GetLifecyclePolicyPreview" => get_lifecycle_policy_preview(st, c, v).await,
        "StartImageScan" => start_image_scan(st, c, v).await,
        "DescribeImageScanFindings" => describe_image_scan_findings(st, c, v).await,
        "PutRegistryScanningConfiguration" => put_registry_scanning(st, c, v).await,
        "GetRegistryScanningConfiguration" => get_registry_scanning(st, c).await,
        "BatchGetRepositoryScanningConfiguration" => batch_get_repository_scanning(st, c, v).await,
        "PutRepositoryScanPolicy" => put_repository_scan_policy(st, c, v).await,
        "GetRepositoryScanPolicy" => get_repository_scan_policy(st, c, v).await,
        "GetImageSbom" => get_image_sbom(st, c, v).await,
        "PutReplicationConfiguration" => put_replication_configuration(st, c, v).await,
        "DescribeImageReplicationStatus" => describe_image_replication_status(st, c, v).await,
        "StartImageReplication" => start_image_replication(st, c, v).await,
        "CreatePullThroughCacheRule" => create_pull_through_rule(st, c, v).await,
        "DescribePullThroughCacheRules" => describe_pull_through_rules(st, c, v).await,
        "UpdatePullThroughCacheRule" => update_pull_through_rule(st, c, v).await,
        "DeletePullThroughCacheRule" => delete_pull_through_rule(st, c, v).await,
        "ValidatePullThroughCacheRule" => validate_pull_through_rule(st, c, v).await,
        _ => return Ok(None),
    };
    r.map(Some)
}

tokio::task_local! {
    /// The registry (account id) the current call is about.
    static REGISTRY: String;
}

fn registry_id(st: &AppState) -> String {
    REGISTRY.try_with(Clone::clone).unwrap_or_else(|_| st.registry.settings().registry_id.clone())
}

/// The registry a call is about: its `registryId`, else the caller's own account when it has a
/// registry here, else the configured one. Repository names in the input become that
/// registry's keys ([`berth_core::repo_key`]), so every operation addresses the right one.
async fn registry_of(st: &AppState, p: &Principal, v: &mut Value) -> Result<String, Error> {
    let r = &st.registry;
    let registry = match v.get("registryId").and_then(Value::as_str) {
        Some(id) => {
            r.repositories().check_registry_id(Some(id))?;
            if !r.identities().account_exists(id).await? {
                return Err(Error::parameter(
                    "registryId",
                    format!(
                        "there is no registry '{id}' on \
                     this server"
                    ),
                ));
            }
            id.to_string()
        }
        None => {
            let own = berth_service::identity::principal_account(p);
            if r.identities().account_exists(&own).await? { own } else { r.settings().registry_id.clone() }
        }
    };
    // Clients name repositories without an account: a name is checked here, once, and becomes
    // the key; `:` is not part of any name (it would address another account's key).
    let qualify = |field: &str, n: &mut Value| -> Result<(), Error> {
        if let Some(name) = n.as_str() {
            if berth_core::RepoName::parse(name).is_err() {
                return Err(Error::parameter(
                    field,
                    format!(
                        "'must satisfy regular expression \
                     '(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*'', got '{name}'"
                    ),
                ));
            }
            *n = Value::String(r.repo_key(&registry, name));
        }
        Ok(())
    };
    if let Some(n) = v.get_mut("repositoryName") {
        qualify("repositoryName", n)?;
    }
    if let Some(Value::Array(names)) = v.get_mut("repositoryNames") {
        for n in names.iter_mut() {
            qualify("repositoryNames", n)?;
        }
    }
    Ok(registry)
}

/// Repository keys in an answer back to the names clients know.
fn unqualify(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match x {
                    Value::String(s) if k == "repositoryName" => {
                        if let (Some(_), name) = berth_core::split_repo_key(s) {
                            *s = name.to_string();
                        }
                    }
                    _ => unqualify(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(unqualify),
        _ => {}
    }
}

// ---- shapes ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RepoRef {
    registry_id: Option<String>,
    repository_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageIdentifier {
    image_digest: Option<String>,
    image_tag: Option<String>,
}

impl From<ImageIdentifier> for ImageId {
    fn from(i: ImageIdentifier) -> Self {
        ImageId { digest: i.image_digest, tag: i.image_tag }
    }
}

fn image_id_json(id: &ImageId) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(d) = &id.digest {
        m.insert("imageDigest".into(), json!(d));
    }
    if let Some(t) = &id.tag {
        m.insert("imageTag".into(), json!(t));
    }
    Value::Object(m)
}

fn failure_json(f: &ImageFailure) -> Value {
    json!({ "imageId": image_id_json(&f.id), "failureCode": f.code, "failureReason": f.reason })
}

fn tags_json(tags: &[(String, String)]) -> Value {
    Value::Array(tags.iter().map(|(k, v)| json!({ "Key": k, "Value": v })).collect())
}

fn tag_pairs(tags: Vec<ResourceTag>) -> Vec<(String, String)> {
    tags.into_iter().map(|t| (t.key, t.value)).collect()
}

fn filters_in(filters: Option<Vec<MutabilityFilter>>) -> Result<Vec<String>, Error> {
    filters
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            if f.filter_type != "WILDCARD" {
                return Err(Error::bad_request(format!("filterType must be WILDCARD, not '{}'", f.filter_type)));
            }
            Ok(f.filter)
        })
        .collect()
}

fn filters_json(filters: &[String]) -> Value {
    Value::Array(filters.iter().map(|f| json!({ "filterType": "WILDCARD", "filter": f })).collect())
}

fn repo_json(r: &Repository) -> Value {
    let s = &r.row.settings;
    let mut v = json!({
        "repositoryArn": r.arn,
        "registryId": r.registry_id,
        "repositoryName": r.name,
        "repositoryUri": r.uri,
        "createdAt": ts(r.row.created_at),
        "imageTagMutability": s.tag_mutability,
        "imageScanningConfiguration": { "scanOnPush": s.scan_on_push },
        "encryptionConfiguration": { "encryptionType": s.encryption_type },
    });
    if let Some(k) = &s.kms_key {
        v["encryptionConfiguration"]["kmsKey"] = json!(k);
    }
    if !r.mutability_filters.is_empty() {
        v["imageTagMutabilityExclusionFilters"] = filters_json(&r.mutability_filters);
    }
    v
}

fn template_json(t: &StoredTemplate) -> Value {
    let mut v = serde_json::to_value(&t.template).expect("templates serialize");
    v["prefix"] = json!(t.prefix);
    v["createdAt"] = ts(t.created_at);
    v["updatedAt"] = ts(t.updated_at);
    v
}

fn paged(mut v: Value, next: Option<String>) -> Value {
    if let Some(n) = next {
        v["nextToken"] = json!(n);
    }
    v
}

// ---- repositories ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRepositoryIn {
    registry_id: Option<String>,
    repository_name: String,
    #[serde(default)]
    tags: Vec<ResourceTag>,
    image_tag_mutability: Option<String>,
    image_tag_mutability_exclusion_filters: Option<Vec<MutabilityFilter>>,
    image_scanning_configuration: Option<ScanningConfig>,
    encryption_configuration: Option<EncryptionIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScanningConfig {
    scan_on_push: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptionIn {
    encryption_type: String,
    kms_key: Option<String>,
}

async fn create_repository(st: &AppState, c: &Caller, v: Value) -> R {
    let i: CreateRepositoryIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let new = NewRepository {
        tag_mutability: i.image_tag_mutability,
        mutability_filters: filters_in(i.image_tag_mutability_exclusion_filters)?,
        scan_on_push: i.image_scanning_configuration.and_then(|s| s.scan_on_push),
        encryption_type: i.encryption_configuration.as_ref().map(|e| e.encryption_type.clone()),
        kms_key: i.encryption_configuration.and_then(|e| e.kms_key),
        tags: tag_pairs(i.tags),
    };
    let r = st.registry.repositories().create_repository(c, &i.repository_name, new).await?;
    Ok(json!({ "repository": repo_json(&r) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeRepositoriesIn {
    registry_id: Option<String>,
    repository_names: Option<Vec<String>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

async fn describe_repositories(st: &AppState, c: &Caller, v: Value) -> R {
    let i: DescribeRepositoriesIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let page = st
        .registry
        .repositories()
        .describe_repositories(
            c,
            &registry_id(st),
            i.repository_names.as_deref(),
            i.next_token.as_deref(),
            i.max_results,
        )
        .await?;
    let repos: Vec<Value> = page.items.iter().map(repo_json).collect();
    Ok(paged(json!({ "repositories": repos }), page.next))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteRepositoryIn {
    registry_id: Option<String>,
    repository_name: String,
    #[serde(default)]
    force: bool,
}

async fn delete_repository(st: &AppState, c: &Caller, v: Value) -> R {
    let i: DeleteRepositoryIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let r = st.registry.repositories().delete_repository(c, &i.repository_name, i.force).await?;
    Ok(json!({ "repository": repo_json(&r) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutMutabilityIn {
    registry_id: Option<String>,
    repository_name: String,
    image_tag_mutability: String,
    image_tag_mutability_exclusion_filters: Option<Vec<MutabilityFilter>>,
}

async fn put_image_tag_mutability(st: &AppState, c: &Caller, v: Value) -> R {
    let i: PutMutabilityIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let filters = filters_in(i.image_tag_mutability_exclusion_filters)?;
    let r =
        st.registry.repositories().put_tag_mutability(c, &i.repository_name, &i.image_tag_mutability, &filters).await?;
    let mut out = json!({
        "registryId": registry_id(st),
        "repositoryName": r.row.name,
        "imageTagMutability": r.row.settings.tag_mutability,
    });
    if !r.mutability_filters.is_empty() {
        out["imageTagMutabilityExclusionFilters"] = filters_json(&r.mutability_filters);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutScanningIn {
    registry_id: Option<String>,
    repository_name: String,
    image_scanning_configuration: ScanningConfig,
}

async fn put_image_scanning_configuration(st: &AppState, c: &Caller, v: Value) -> R {
    let i: PutScanningIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let on = i.image_scanning_configuration.scan_on_push.unwrap_or(false);
    let r = st.registry.repositories().put_scan_on_push(c, &i.repository_name, on).await?;
    Ok(json!({
        "registryId": registry_id(st),
        "repositoryName": r.row.name,
        "imageScanningConfiguration": { "scanOnPush": r.row.settings.scan_on_push },
    }))
}

// ---- creation templates ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemplateIn {
    prefix: String,
    #[serde(flatten)]
    template: Template,
}

async fn create_template(st: &AppState, c: &Caller, v: Value) -> R {
    let i: TemplateIn = input(v)?;
    let t = st.registry.templates().create_template(c, &registry_id(st), &i.prefix, i.template).await?;
    Ok(json!({ "registryId": registry_id(st), "repositoryCreationTemplate": template_json(&t) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemplateUpdateIn {
    prefix: String,
    description: Option<String>,
    encryption_configuration: Option<berth_service::repo_settings::EncryptionConfiguration>,
    resource_tags: Option<Vec<ResourceTag>>,
    image_tag_mutability: Option<String>,
    image_tag_mutability_exclusion_filters: Option<Vec<MutabilityFilter>>,
    repository_policy: Option<String>,
    lifecycle_policy: Option<String>,
    applied_for: Option<Vec<String>>,
    custom_role_arn: Option<String>,
}

async fn update_template(st: &AppState, c: &Caller, v: Value) -> R {
    let i: TemplateUpdateIn = input(v)?;
    let t = st
        .registry
        .templates()
        .update_template(c, &registry_id(st), &i.prefix, |t| {
            // Only what the request names changes, as in ECR.
            if let Some(x) = i.description {
                t.description = Some(x);
            }
            if let Some(x) = i.encryption_configuration {
                t.encryption_configuration = Some(x);
            }
            if let Some(x) = i.resource_tags {
                t.resource_tags = x;
            }
            if let Some(x) = i.image_tag_mutability {
                t.image_tag_mutability = Some(x);
                t.image_tag_mutability_exclusion_filters = Vec::new();
            }
            if let Some(x) = i.image_tag_mutability_exclusion_filters {
                t.image_tag_mutability_exclusion_filters = x;
            }
            if let Some(x) = i.repository_policy {
                t.repository_policy = Some(x);
            }
            if let Some(x) = i.lifecycle_policy {
                t.lifecycle_policy = Some(x);
            }
            if let Some(x) = i.applied_for {
                t.applied_for = x;
            }
            if let Some(x) = i.custom_role_arn {
                t.custom_role_arn = Some(x);
            }
        })
        .await?;
    Ok(json!({ "registryId": registry_id(st), "repositoryCreationTemplate": template_json(&t) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrefixIn {
    prefix: String,
}

async fn delete_template(st: &AppState, c: &Caller, v: Value) -> R {
    let i: PrefixIn = input(v)?;
    let t = st.registry.templates().delete_template(c, &registry_id(st), &i.prefix).await?;
    Ok(json!({ "registryId": registry_id(st), "repositoryCreationTemplate": template_json(&t) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeTemplatesIn {
    #[serde(default)]
    prefixes: Vec<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

async fn describe_templates(st: &AppState, c: &Caller, v: Value) -> R {
    let i: DescribeTemplatesIn = input(v)?;
    let page = st
        .registry
        .templates()
        .describe_templates(c, &registry_id(st), &i.prefixes, i.next_token.as_deref(), i.max_results)
        .await?;
    let items: Vec<Value> = page.items.iter().map(template_json).collect();
    Ok(paged(json!({ "registryId": registry_id(st), "repositoryCreationTemplates": items }), page.next))
}

// ---- images ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImagesFilter {
    tag_status: Option<String>,
    image_status: Option<String>,
}

/// The tag status a filter selects; `None` when it selects nothing: Berth has no archive storage
/// class, so no image is ever ARCHIVED or ACTIVATING.
fn tag_status(f: Option<ImagesFilter>) -> Result<Option<TagStatus>, Error> {
    if let Some(s) = f.as_ref().and_then(|f| f.image_status.as_deref())
        && s != "ACTIVE"
        && s != "ANY"
    {
        return Ok(None);
    }
    Ok(Some(parse_tag_status(f.as_ref().and_then(|f| f.tag_status.as_deref()))?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListImagesIn {
    registry_id: Option<String>,
    repository_name: String,
    next_token: Option<String>,
    max_results: Option<i64>,
    filter: Option<ImagesFilter>,
}

async fn list_images(st: &AppState, c: &Caller, v: Value) -> R {
    let i: ListImagesIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let status = tag_status(i.filter)?;
    let page = st
        .registry
        .images()
        .list_image_ids(c, &i.repository_name, status, i.next_token.as_deref(), i.max_results)
        .await?;
    let ids: Vec<Value> = page.items.iter().map(image_id_json).collect();
    Ok(paged(json!({ "imageIds": ids }), page.next))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeImagesIn {
    registry_id: Option<String>,
    repository_name: String,
    image_ids: Option<Vec<ImageIdentifier>>,
    next_token: Option<String>,
    max_results: Option<i64>,
    filter: Option<ImagesFilter>,
}

async fn describe_images(st: &AppState, c: &Caller, v: Value) -> R {
    let i: DescribeImagesIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let status = tag_status(i.filter)?;
    let ids: Option<Vec<ImageId>> = i.image_ids.map(|v| v.into_iter().map(Into::into).collect());
    let page = st
        .registry
        .images()
        .describe_images(c, &i.repository_name, ids.as_deref(), status, i.next_token.as_deref(), i.max_results)
        .await?;
    let details: Vec<Value> = page
        .items
        .iter()
        .map(|detail| {
            let img = &detail.image;
            let mut d = json!({
                "registryId": registry_id(st),
                "repositoryName": i.repository_name,
                "imageDigest": img.digest,
                "imageSizeInBytes": img.image_size,
                "imagePushedAt": ts(img.pushed_at),
                "imageManifestMediaType": img.media_type,
                "imageStatus": "ACTIVE",
            });
            if !img.tags.is_empty() {
                d["imageTags"] = json!(img.tags);
            }
            if let Some(a) = &img.artifact_type {
                d["artifactMediaType"] = json!(a);
            }
            if let Some(t) = img.last_pull {
                d["lastRecordedPullTime"] = ts(t);
            }
            if let Some(s) = &img.subject {
                d["subjectManifestDigest"] = json!(s);
            }
            // The scan status and summary of an image that was scanned, as ECR shows them.
            if let Some((scan, findings)) = &detail.scan {
                d["imageScanStatus"] = json!({ "status": scan.status, "description": scan.description });
                if scan.status == "COMPLETE" {
                    d["imageScanFindingsSummary"] = json!({
                        "imageScanCompletedAt": ts(scan.completed_at.unwrap_or(scan.started_at)),
                        "findingSeverityCounts": severity_counts(findings),
                    });
                }
            }
            d
        })
        .collect();
    Ok(paged(json!({ "imageDetails": details }), page.next))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchImagesIn {
    registry_id: Option<String>,
    repository_name: String,
    image_ids: Vec<ImageIdentifier>,
    accepted_media_types: Option<Vec<String>>,
}

async fn batch_get_image(st: &AppState, c: &Caller, v: Value) -> R {
    let i: BatchImagesIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    if let Some(a) = &i.accepted_media_types
        && (a.is_empty() || a.len() > 100)
    {
        return Err(Error::bad_request("acceptedMediaTypes must list 1 to 100 media types".into()));
    }
    let ids: Vec<ImageId> = i.image_ids.into_iter().map(Into::into).collect();
    let (images, failures) =
        st.registry.images().batch_get_image(c, &i.repository_name, &ids, i.accepted_media_types.as_deref()).await?;
    let images: Vec<Value> = images
        .iter()
        .map(|(id, m)| {
            json!({
                "registryId": registry_id(st),
                "repositoryName": i.repository_name,
                "imageId": image_id_json(id),
                "imageManifest": String::from_utf8_lossy(&m.content),
                "imageManifestMediaType": m.media_type,
            })
        })
        .collect();
    let failures: Vec<Value> = failures.iter().map(failure_json).collect();
    Ok(json!({ "images": images, "failures": failures }))
}

async fn batch_delete_image(st: &AppState, c: &Caller, v: Value) -> R {
    let i: BatchImagesIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let ids: Vec<ImageId> = i.image_ids.into_iter().map(Into::into).collect();
    let (deleted, failures) = st.registry.images().batch_delete_image(c, &i.repository_name, &ids).await?;
    let deleted: Vec<Value> = deleted.iter().map(image_id_json).collect();
    let failures: Vec<Value> = failures.iter().map(failure_json).collect();
    Ok(json!({ "imageIds": deleted, "failures": failures }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutImageIn {
    registry_id: Option<String>,
    repository_name: String,
    image_manifest: String,
    image_manifest_media_type: Option<String>,
    image_tag: Option<String>,
    image_digest: Option<String>,
}

async fn put_image(st: &AppState, c: &Caller, v: Value) -> R {
    let i: PutImageIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let (id, m) = st
        .registry
        .images()
        .put_image(
            c,
            &i.repository_name,
            &i.image_manifest,
            i.image_manifest_media_type.as_deref(),
            i.image_tag.as_deref(),
            i.image_digest.as_deref(),
        )
        .await?;
    Ok(json!({ "image": {
        "registryId": registry_id(st),
        "repositoryName": i.repository_name,
        "imageId": image_id_json(&id),
        "imageManifest": String::from_utf8_lossy(&m.content),
        "imageManifestMediaType": m.media_type,
    }}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubjectId {
    image_digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersFilter {
    #[serde(default)]
    artifact_types: Vec<String>,
    artifact_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListReferrersIn {
    registry_id: Option<String>,
    repository_name: String,
    subject_id: SubjectId,
    filter: Option<ReferrersFilter>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

async fn list_image_referrers(st: &AppState, c: &Caller, v: Value) -> R {
    let i: ListReferrersIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let (types, status) = i.filter.map(|f| (f.artifact_types, f.artifact_status)).unwrap_or_default();
    let page = st
        .registry
        .images()
        .list_image_referrers(
            c,
            &i.repository_name,
            &i.subject_id.image_digest,
            &types,
            status.as_deref(),
            i.next_token.as_deref(),
            i.max_results,
        )
        .await?;
    let referrers: Vec<Value> = page
        .items
        .iter()
        .map(|r| {
            let mut v =
                json!({ "digest": r.digest, "mediaType": r.media_type, "size": r.size, "artifactStatus": "ACTIVE" });
            if let Some(a) = &r.artifact_type {
                v["artifactType"] = json!(a);
            }
            if let Some(a) = r.annotations.as_deref().and_then(|a| serde_json::from_str::<Value>(a).ok()) {
                v["annotations"] = a;
            }
            v
        })
        .collect();
    Ok(paged(json!({ "referrers": referrers }), page.next))
}

// ---- layers ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckLayersIn {
    registry_id: Option<String>,
    repository_name: String,
    layer_digests: Vec<String>,
}

async fn batch_check_layer_availability(st: &AppState, c: &Caller, v: Value) -> R {
    let i: CheckLayersIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let checks = st.registry.images().check_layers(c, &i.repository_name, &i.layer_digests).await?;
    let (mut layers, mut failures) = (Vec::new(), Vec::new());
    for c in checks {
        match c {
            LayerCheck::Available { digest, size } => layers.push(json!({
                "layerDigest": digest, "layerAvailability": "AVAILABLE", "layerSize": size,
                "mediaType": "application/vnd.docker.container.image.rootfs.diff+x-gzip",
            })),
            LayerCheck::Unavailable { digest } => {
                layers.push(json!({ "layerDigest": digest, "layerAvailability": "UNAVAILABLE" }))
            }
            LayerCheck::Failed { digest, code, reason } => {
                failures.push(json!({ "layerDigest": digest, "failureCode": code, "failureReason": reason }))
            }
        }
    }
    Ok(json!({ "layers": layers, "failures": failures }))
}

async fn initiate_layer_upload(st: &AppState, c: &Caller, v: Value) -> R {
    let i: RepoRef = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let id = st.registry.images().initiate_layer_upload(c, &i.repository_name).await?;
    Ok(json!({ "uploadId": id, "partSize": berth_service::images::PART_SIZE }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadPartIn {
    registry_id: Option<String>,
    repository_name: String,
    upload_id: String,
    part_first_byte: u64,
    part_last_byte: u64,
    layer_part_blob: String,
}

async fn upload_layer_part(st: &AppState, c: &Caller, v: Value) -> R {
    let i: UploadPartIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let data = STANDARD
        .decode(i.layer_part_blob.as_bytes())
        .map_err(|e| Error::bad_request(format!("layerPartBlob is not valid base64: {e}")))?;
    let last = st
        .registry
        .images()
        .upload_layer_part(c, &i.repository_name, &i.upload_id, i.part_first_byte, i.part_last_byte, data)
        .await?;
    Ok(json!({
        "registryId": registry_id(st),
        "repositoryName": i.repository_name,
        "uploadId": i.upload_id,
        "lastByteReceived": last,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompleteUploadIn {
    registry_id: Option<String>,
    repository_name: String,
    upload_id: String,
    layer_digests: Vec<String>,
}

async fn complete_layer_upload(st: &AppState, c: &Caller, v: Value) -> R {
    let i: CompleteUploadIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let digest =
        st.registry.images().complete_layer_upload(c, &i.repository_name, &i.upload_id, &i.layer_digests).await?;
    Ok(json!({
        "registryId": registry_id(st),
        "repositoryName": i.repository_name,
        "uploadId": i.upload_id,
        "layerDigest": digest,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownloadUrlIn {
    registry_id: Option<String>,
    repository_name: String,
    layer_digest: String,
}

async fn get_download_url_for_layer(st: &AppState, c: &Caller, v: Value) -> R {
    let i: DownloadUrlIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let url = st.registry.images().layer_download_url(c, &i.repository_name, &i.layer_digest).await?;
    Ok(json!({ "downloadUrl": url, "layerDigest": i.layer_digest }))
}

// ---- auth and registry ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthTokenIn {
    registry_ids: Option<Vec<String>>,
}

async fn get_authorization_token(st: &AppState, c: &Caller, v: Value) -> R {
    let i: AuthTokenIn = input(v)?;
    let ids = i.registry_ids.unwrap_or_default();
    if ids.len() > 10 {
        return Err(Error::bad_request("registryIds may list at most 10 registries".into()));
    }
    for id in &ids {
        st.registry.repositories().check_registry_id(Some(id))?;
    }
    let (password, expires) = st.registry.logins().authorization_token(c, &registry_id(st)).await?;
    let token = STANDARD.encode(format!("AWS:{password}"));
    let endpoint = st.registry.settings().public_url.trim_end_matches('/').to_string();
    // One entry per registry asked for; the same token serves them all.
    let n = ids.len().max(1);
    let data: Vec<Value> = (0..n)
        .map(|_| json!({ "authorizationToken": token, "expiresAt": expires, "proxyEndpoint": endpoint }))
        .collect();
    Ok(json!({ "authorizationData": data }))
}

async fn describe_registry(st: &AppState, c: &Caller) -> R {
    let registry = st.registry.repositories().describe_registry(c, &registry_id(st)).await?;
    let config = st.registry.replication().configuration(c, &registry).await?;
    Ok(json!({ "registryId": registry, "replicationConfiguration": config }))
}

async fn put_replication_configuration(st: &AppState, c: &Caller, v: Value) -> R {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        replication_configuration: berth_service::replication::ReplicationConfiguration,
    }
    let i: In = input(v)?;
    let config = st.registry.replication().put_configuration(c, &registry_id(st), i.replication_configuration).await?;
    Ok(json!({ "replicationConfiguration": config }))
}

async fn describe_image_replication_status(st: &AppState, c: &Caller, v: Value) -> R {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        repository_name: String,
        image_id: ImageIdentifier,
    }
    let i: In = input(v)?;
    let repo = berth_service::parse_repo(&i.repository_name)?;
    let id: ImageId = i.image_id.into();
    let (digest, statuses) = st.registry.replication().image_statuses(c, &repo, &id).await?;
    let statuses: Vec<Value> = statuses
        .iter()
        .map(|s| {
            let mut o = json!({ "region": s.region, "registryId": s.registry_id, "status": s.status });
            if let Some(f) = &s.failure_code {
                o["failureCode"] = json!(f);
            }
            o
        })
        .collect();
    let shown = ImageId { digest: Some(digest), tag: id.tag };
    Ok(json!({
        "repositoryName": i.repository_name,
        "imageId": image_id_json(&shown),
        "replicationStatuses": statuses,
    }))
}

/// Berth's operation (not ECR's): replication on demand of images already stored, to the
/// destinations the rules give the repository or to one region's peers.
async fn start_image_replication(st: &AppState, c: &Caller, v: Value) -> R {
    use berth_service::replication::Images;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        repository_name: String,
        image_ids: Option<Vec<ImageIdentifier>>,
        #[serde(default)]
        all_images: bool,
        destination_region: Option<String>,
    }
    let i: In = input(v)?;
    let repo = berth_service::parse_repo(&i.repository_name)?;
    let which: Vec<Images> = match (i.image_ids, i.all_images) {
        (Some(_), true) => return Err(Error::parameter("imageIds", "give imageIds or allImages, not both".into())),
        (None, false) => return Err(Error::parameter("imageIds", "give imageIds, or allImages: true".into())),
        (None, true) => vec![Images::All],
        (Some(ids), false) => {
            if ids.is_empty() || ids.len() > 100 {
                return Err(Error::validation(format!("imageIds: 1 to 100 images, not {}", ids.len())));
            }
            let mut w = Vec::new();
            for id in ids {
                match (id.image_digest, id.image_tag) {
                    (_, Some(t)) => w.push(Images::Tag(t)),
                    (Some(d), None) => w.push(Images::Digest(d)),
                    (None, None) => {
                        return Err(Error::parameter("imageIds", "each image id needs imageDigest or imageTag".into()));
                    }
                }
            }
            w
        }
    };
    let mut out = Vec::new();
    for w in &which {
        for q in st.registry.replication().start(c, &repo, w, i.destination_region.as_deref()).await? {
            let id = ImageId { digest: Some(q.digest), tag: q.tag };
            out.push(json!({
                "imageId": image_id_json(&id),
                "region": q.destination.region,
                "registryId": q.destination.registry_id,
                "status": "IN_PROGRESS",
            }));
        }
    }
    Ok(json!({ "repositoryName": i.repository_name, "replications": out }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountSettingIn {
    name: String,
    value: Option<String>,
}

async fn get_account_setting(st: &AppState, c: &Caller, v: Value) -> R {
    let i: AccountSettingIn = input(v)?;
    let value = st.registry.repositories().account_setting(c, &registry_id(st), &i.name).await?;
    Ok(json!({ "name": i.name, "value": value }))
}

async fn put_account_setting(st: &AppState, c: &Caller, v: Value) -> R {
    let i: AccountSettingIn = input(v)?;
    let value = i.value.ok_or_else(|| Error::bad_request("value is required".into()))?;
    let value = st.registry.repositories().put_account_setting(c, &registry_id(st), &i.name, &value).await?;
    Ok(json!({ "name": i.name, "value": value }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagResourceIn {
    resource_arn: String,
    #[serde(default)]
    tags: Vec<ResourceTag>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

async fn tag_resource(st: &AppState, c: &Caller, v: Value) -> R {
    let i: TagResourceIn = input(v)?;
    st.registry.repositories().tag_resource(c, &i.resource_arn, &tag_pairs(i.tags)).await?;
    Ok(json!({}))
}

async fn untag_resource(st: &AppState, c: &Caller, v: Value) -> R {
    let i: TagResourceIn = input(v)?;
    st.registry.repositories().untag_resource(c, &i.resource_arn, &i.tag_keys).await?;
    Ok(json!({}))
}

async fn list_tags_for_resource(st: &AppState, c: &Caller, v: Value) -> R {
    let i: TagResourceIn = input(v)?;
    let tags = st.registry.repositories().list_resource_tags(c, &i.resource_arn).await?;
    Ok(json!({ "tags": tags_json(&tags) }))
}

// ---- policies ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetPolicyIn {
    registry_id: Option<String>,
    repository_name: String,
    policy_text: String,
    #[serde(default)]
    force: bool,
}

async fn set_repository_policy(st: &AppState, c: &Caller, v: Value) -> R {
    let i: SetPolicyIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let text = st.registry.repositories().set_repository_policy(c, &i.repository_name, &i.policy_text, i.force).await?;
    Ok(json!({ "registryId": registry_id(st), "repositoryName": i.repository_name, "policyText": text }))
}

async fn get_repository_policy(st: &AppState, c: &Caller, v: Value) -> R {
    let i: RepoRef = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let text = st.registry.repositories().repository_policy(c, &i.repository_name).await?;
    Ok(json!({ "registryId": registry_id(st), "repositoryName": i.repository_name, "policyText": text }))
}

async fn delete_repository_policy(st: &AppState, c: &Caller, v: Value) -> R {
    let i: RepoRef = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let text = st.registry.repositories().delete_repository_policy(c, &i.repository_name).await?;
    Ok(json!({ "registryId": registry_id(st), "repositoryName": i.repository_name, "policyText": text }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryPolicyIn {
    policy_text: String,
}

async fn put_registry_policy(st: &AppState, c: &Caller, v: Value) -> R {
    let i: RegistryPolicyIn = input(v)?;
    let text = st.registry.repositories().put_registry_policy(c, &registry_id(st), &i.policy_text).await?;
    Ok(json!({ "registryId": registry_id(st), "policyText": text }))
}

async fn get_registry_policy(st: &AppState, c: &Caller) -> R {
    let text = st.registry.repositories().registry_policy(c, &registry_id(st)).await?;
    Ok(json!({ "registryId": registry_id(st), "policyText": text }))
}

async fn delete_registry_policy(st: &AppState, c: &Caller) -> R {
    let text = st.registry.repositories().delete_registry_policy(c, &registry_id(st)).await?;
    Ok(json!({ "registryId": registry_id(st), "policyText": text }))
}

// ---- lifecycle policies ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LifecycleIn {
    registry_id: Option<String>,
    repository_name: String,
    lifecycle_policy_text: Option<String>,
}

async fn put_lifecycle_policy(st: &AppState, c: &Caller, v: Value) -> R {
    let i: LifecycleIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let text = i.lifecycle_policy_text.ok_or_else(|| {
        Error::bad_request("Invalid parameter at 'lifecyclePolicyText': the policy text is required".into())
    })?;
    let text = st.registry.lifecycle().put_lifecycle_policy(c, &i.repository_name, &text).await?;
    Ok(json!({ "registryId": registry_id(st), "repositoryName": i.repository_name, "lifecyclePolicyText": text }))
}

async fn get_lifecycle_policy(st: &AppState, c: &Caller, v: Value, delete: bool) -> R {
    let i: LifecycleIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let (text, evaluated) = if delete {
        st.registry.lifecycle().delete_lifecycle_policy(c, &i.repository_name).await?
    } else {
        st.registry.lifecycle().lifecycle_policy(c, &i.repository_name).await?
    };
    let mut out =
        json!({ "registryId": registry_id(st), "repositoryName": i.repository_name, "lifecyclePolicyText": text });
    if let Some(t) = evaluated {
        out["lastEvaluatedAt"] = ts(t);
    }
    Ok(out)
}

async fn start_lifecycle_policy_preview(st: &AppState, c: &Caller, v: Value) -> R {
    let i: LifecycleIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let text = st
        .registry
        .lifecycle()
        .start_lifecycle_preview(c, &i.repository_name, i.lifecycle_policy_text.as_deref())
        .await?;
    Ok(json!({
        "registryId": registry_id(st), "repositoryName": i.repository_name,
        "lifecyclePolicyText": text, "status": "COMPLETE",
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreviewFilter {
    tag_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetPreviewIn {
    registry_id: Option<String>,
    repository_name: String,
    image_ids: Option<Vec<ImageIdentifier>>,
    next_token: Option<String>,
    max_results: Option<i64>,
    filter: Option<PreviewFilter>,
}

async fn get_lifecycle_policy_preview(st: &AppState, c: &Caller, v: Value) -> R {
    let i: GetPreviewIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let max = match i.max_results {
        None => 100,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(n) => {
            return Err(Error::parameter(
                "maxResults",
                format!(
                    "'Member must have value between 1 \
                 and 100', got {n}"
                ),
            ));
        }
    };
    let status = parse_tag_status(i.filter.as_ref().and_then(|f| f.tag_status.as_deref()))?;
    let (text, state, results) = st.registry.lifecycle().lifecycle_preview(c, &i.repository_name).await?;
    let total = results.len();
    let ids: Vec<ImageId> = i.image_ids.unwrap_or_default().into_iter().map(ImageId::from).collect();
    let selected: Vec<_> = results
        .into_iter()
        .filter(|r| match status {
            TagStatus::Any => true,
            TagStatus::Tagged => !r.tags.is_empty(),
            TagStatus::Untagged => r.tags.is_empty(),
        })
        .filter(|r| {
            ids.is_empty()
                || ids.iter().any(|id| {
                    id.digest.as_deref() == Some(r.digest.as_str())
                        || id.tag.as_deref().is_some_and(|t| r.tags.iter().any(|x| x == t))
                })
        })
        .collect();
    let start = match i.next_token.as_deref() {
        None => 0,
        Some(t) => t.parse::<usize>().ok().filter(|&n| n <= selected.len()).ok_or_else(|| {
            Error::parameter(
                "nextToken",
                "'Must be a token returned by a \
                 previous call'"
                    .into(),
            )
        })?,
    };
    let end = (start + max).min(selected.len());
    let page: Vec<Value> = selected[start..end]
        .iter()
        .map(|r| {
            json!({
                "imageTags": r.tags, "imageDigest": r.digest, "imagePushedAt": ts(r.pushed_at),
                "action": { "type": "EXPIRE" }, "appliedRulePriority": r.rule_priority,
            })
        })
        .collect();
    let mut out = json!({
        "registryId": registry_id(st), "repositoryName": i.repository_name, "lifecyclePolicyText": text,
        "status": state, "previewResults": page, "summary": { "expiringImageTotalCount": total },
    });
    if end < selected.len() {
        out["nextToken"] = json!(end.to_string());
    }
    Ok(out)
}

// ---- image scanning ----

/// ECR's `findingSeverityCounts`: findings per severity.
fn severity_counts(findings: &[berth_service::scanning::Finding]) -> Value {
    let mut counts = serde_json::Map::new();
    for f in findings {
        let n = counts.get(&f.severity).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(f.severity.clone(), json!(n + 1));
    }
    Value::Object(counts)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScanIn {
    registry_id: Option<String>,
    repository_name: String,
    image_id: ImageIdentifier,
    next_token: Option<String>,
    max_results: Option<i64>,
}

async fn start_image_scan(st: &AppState, c: &Caller, v: Value) -> R {
    let i: ScanIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let id = ImageId::from(i.image_id);
    let digest = st.registry.scanning().start_image_scan(c, &i.repository_name, &id).await?;
    Ok(json!({
        "registryId": registry_id(st), "repositoryName": i.repository_name,
        "imageId": { "imageDigest": digest, "imageTag": id.tag },
        "imageScanStatus": { "status": "IN_PROGRESS", "description": "The scan is in progress." },
    }))
}

/// Berth's own: the CycloneDX SBOM of a scanned image.
async fn get_image_sbom(st: &AppState, c: &Caller, v: Value) -> R {
    let i: ScanIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let id = ImageId::from(i.image_id);
    let (digest, sbom) = st.registry.scanning().image_sbom(c, &i.repository_name, &id).await?;
    Ok(json!({
        "registryId": registry_id(st), "repositoryName": i.repository_name,
        "imageId": { "imageDigest": digest, "imageTag": id.tag },
        "sbomFormat": "CycloneDX 1.5", "sbom": sbom,
    }))
}

async fn describe_image_scan_findings(st: &AppState, c: &Caller, v: Value) -> R {
    let i: ScanIn = input(v)?;
    st.registry.repositories().check_registry_id(i.registry_id.as_deref())?;
    let max = match i.max_results {
        None => 1000,
        Some(n) if (1..=1000).contains(&n) => n as usize,
        Some(n) => {
            return Err(Error::parameter(
                "maxResults",
                format!(
                    "'Member must have value between 1 \
                 and 1000', got {n}"
                ),
            ));
        }
    };
    let id = ImageId::from(i.image_id);
    let report = st.registry.scanning().image_scan(c, &i.repository_name, &id).await?;
    let digest = report.digest;
    let Some((scan, findings)) = report.scan else {
        return Err(
            NotFound::Scan { key: i.repository_name.clone(), digest, tag: id.tag.clone(), completed: false }.into()
        );
    };
    let start = match i.next_token.as_deref() {
        None => 0,
        Some(t) => t.parse::<usize>().ok().filter(|&n| n <= findings.len()).ok_or_else(|| {
            Error::bad_request("Invalid parameter at 'nextToken': not a token from a previous call".into())
        })?,
    };
    let end = (start + max).min(findings.len());
    let counts = severity_counts(&findings);
    let page: Vec<Value> = findings[start..end]
        .iter()
        .map(|f| {
            let mut attrs = vec![
                json!({"key": "package_name", "value": f.package}),
                json!({"key": "package_version", "value": f.version}),
                json!({"key": "package_path", "value": f.path}),
            ];
            if let Some(fixed) = &f.fixed_in {
                attrs.push(json!({"key": "fixed_in", "value": fixed}));
            }
            attrs.push(json!({"key": "layer", "value": f.layer.to_string()}));
            attrs.push(json!({"key": "severity_source", "value": f.severity_source}));
            let uri = if f.name.starts_with("CVE-") {
                format!("https://www.cve.org/CVERecord?id={}", f.name)
            } else {
                format!("https://osv.dev/vulnerability/{}", f.record_id)
            };
            json!({ "name": f.name, "uri": uri, "severity": f.severity, "attributes": attrs })
        })
        .collect();
    let mut out = json!({
        "registryId": registry_id(st), "repositoryName": i.repository_name,
        "imageId": { "imageDigest": digest, "imageTag": id.tag },
        "imageScanStatus": { "status": scan.status, "description": scan.description },
    });
    if scan.status == "COMPLETE" {
        out["imageScanFindings"] = json!({
            "findings": page,
            "findingSeverityCounts": counts,
            "imageScanCompletedAt": ts(scan.completed_at.unwrap_or(scan.started_at)),
        });
        if let Some(at) = report.data_updated_at {
            out["imageScanFindings"]["vulnerabilitySourceUpdatedAt"] = ts(at);
        }
        if end < findings.len() {
            out["nextToken"] = json!(end.to_string());
        }
    } else {
        // Paginating clients (the aws CLI) merge `imageScanFindings.findings` and fail without it.
        out["imageScanFindings"] = json!({ "findings": [], "findingSeverityCounts": {} });
    }
    Ok(out)
}

// ---- scanning configuration ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleIn {
    scan_frequency: String,
    repository_filters: Vec<FilterIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterIn {
    filter: String,
    filter_type: String,
}

fn registry_scanning_json(c: &berth_service::scan_policy::RegistryScanning) -> Value {
    let rules: Vec<Value> = c
        .rules
        .iter()
        .map(|r| {
            let filters: Vec<Value> =
                r.filters.iter().map(|f| json!({ "filter": f, "filterType": "WILDCARD" })).collect();
            json!({ "scanFrequency": r.scan_frequency, "repositoryFilters": filters })
        })
        .collect();
    json!({ "scanType": c.scan_type, "rules": rules })
}

async fn put_registry_scanning(st: &AppState, c: &Caller, v: Value) -> R {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        scan_type: Option<String>,
        #[serde(default)]
        rules: Vec<RuleIn>,
    }
    let i: In = input(v)?;
    let mut rules = Vec::new();
    for r in i.rules {
        if let Some(f) = r.repository_filters.iter().find(|f| f.filter_type != "WILDCARD") {
            return Err(Error::validation(format!("filterType must be WILDCARD, not {:?}", f.filter_type)));
        }
        rules.push(berth_service::scan_policy::ScanRule {
            scan_frequency: r.scan_frequency,
            filters: r.repository_filters.into_iter().map(|f| f.filter).collect(),
        });
    }
    let config =
        berth_service::scan_policy::RegistryScanning { scan_type: i.scan_type.unwrap_or("BASIC".into()), rules };
    let config = st.registry.scan_config().put_registry_scanning(c, &registry_id(st), config).await?;
    Ok(json!({ "registryScanningConfiguration": registry_scanning_json(&config) }))
}

async fn get_registry_scanning(st: &AppState, c: &Caller) -> R {
    let config = st.registry.scan_config().get_registry_scanning(c, &registry_id(st)).await?;
    Ok(json!({ "registryId": registry_id(st), "scanningConfiguration": registry_scanning_json(&config) }))
}

async fn batch_get_repository_scanning(st: &AppState, c: &Caller, v: Value) -> R {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        repository_names: Vec<String>,
    }
    let i: In = input(v)?;
    let (mut configs, mut failures) = (Vec::new(), Vec::new());
    let found = st.registry.scan_config().repositories_scanning(c, &registry_id(st), &i.repository_names).await?;
    for r in found {
        match r {
            RepositoryScanningResult::Found { repository: r, scanning: s } => {
                let filters: Vec<Value> =
                    s.applied_filters.iter().map(|f| json!({ "filter": f, "filterType": "WILDCARD" })).collect();
                configs.push(json!({
                    "repositoryArn": r.arn, "repositoryName": r.row.name, "scanOnPush": s.scan_on_push,
                    "scanFrequency": s.frequency, "appliedScanFilters": filters,
                }));
            }
            RepositoryScanningResult::NotFound { key } => failures.push(json!({
                "repositoryName": key, "failureCode": "REPOSITORY_NOT_FOUND",
                "failureReason": "REPOSITORY_NOT_FOUND",
            })),
        }
    }
    Ok(json!({ "scanningConfigurations": configs, "failures": failures }))
}

async fn put_repository_scan_policy(st: &AppState, c: &Caller, v: Value) -> R {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        repository_name: String,
        scan_policy: berth_service::scan_policy::ScanPolicy,
    }
    let i: In = input(v)?;
    let p = st.registry.scan_config().put_scan_policy(c, &i.repository_name, i.scan_policy).await?;
    Ok(json!({ "registryId": registry_id(st), "repositoryName": i.repository_name, "scanPolicy": p }))
}

async fn get_repository_scan_policy(st: &AppState, c: &Caller, v: Value) -> R {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        repository_name: String,
    }
    let i: In = input(v)?;
    let p = st.registry.scan_config().scan_policy(c, &i.repository_name).await?;
    Ok(json!({ "registryId": registry_id(st), "repositoryName": i.repository_name, "scanPolicy": p }))
}

// ---- pull-through cache rules ----

fn rule_json(st: &AppState, r: &berth_service::pull_through::Rule) -> Value {
    let b = &r.body;
    let mut o = json!({
        "ecrRepositoryPrefix": r.prefix,
        "upstreamRegistryUrl": b.upstream_registry_url,
        "registryId": registry_id(st),
        "createdAt": ts(r.created_at),
        "updatedAt": ts(r.updated_at),
    });
    if let Some(p) = &b.upstream_repository_prefix {
        o["upstreamRepositoryPrefix"] = json!(p);
    }
    if let Some(u) = &b.upstream_registry {
        o["upstreamRegistry"] = json!(u);
    }
    if let Some(a) = &b.credential_arn {
        o["credentialArn"] = json!(a);
    }
    if let Some(a) = &b.custom_role_arn {
        o["customRoleArn"] = json!(a);
    }
    o
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RulePrefixIn {
    ecr_repository_prefix: String,
}

async fn create_pull_through_rule(st: &AppState, c: &Caller, v: Value) -> R {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        ecr_repository_prefix: String,
        upstream_registry_url: String,
        upstream_registry: Option<String>,
        credential_arn: Option<String>,
        custom_role_arn: Option<String>,
        upstream_repository_prefix: Option<String>,
    }
    let i: In = input(v)?;
    let body = berth_service::pull_through::RuleBody {
        upstream_registry_url: i.upstream_registry_url,
        upstream_registry: i.upstream_registry,
        credential_arn: i.credential_arn,
        custom_role_arn: i.custom_role_arn,
        upstream_repository_prefix: i.upstream_repository_prefix,
    };
    let r = st.registry.pull_through().create_rule(c, &registry_id(st), &i.ecr_repository_prefix, body).await?;
    let mut o = rule_json(st, &r);
    o.as_object_mut().map(|m| m.remove("updatedAt"));
    Ok(o)
}

async fn describe_pull_through_rules(st: &AppState, c: &Caller, v: Value) -> R {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        ecr_repository_prefixes: Option<Vec<String>>,
        next_token: Option<String>,
        max_results: Option<usize>,
    }
    let i: In = input(v)?;
    if let Some(p) = &i.ecr_repository_prefixes
        && (p.is_empty() || p.len() > 100)
    {
        return Err(Error::validation(format!("ecrRepositoryPrefixes: 1 to 100 prefixes, not {}", p.len())));
    }
    let max = i.max_results.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return Err(Error::validation(format!("maxResults must be 1 to 1000, not {max}")));
    }
    let rules = st.registry.pull_through().rules(c, &registry_id(st), i.ecr_repository_prefixes.as_deref()).await?;
    // Pages in prefix order; the token is the last prefix shown.
    let after = i.next_token.as_deref().unwrap_or("");
    let rest: Vec<_> = rules.iter().filter(|r| r.prefix.as_str() > after).collect();
    let page: Vec<Value> = rest.iter().take(max).map(|r| rule_json(st, r)).collect();
    let mut o = json!({ "pullThroughCacheRules": page });
    if rest.len() > max {
        o["nextToken"] = json!(rest[max - 1].prefix);
    }
    Ok(o)
}

async fn update_pull_through_rule(st: &AppState, c: &Caller, v: Value) -> R {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct In {
        ecr_repository_prefix: String,
        credential_arn: Option<String>,
        custom_role_arn: Option<String>,
    }
    let i: In = input(v)?;
    let r = st
        .registry
        .pull_through()
        .update_rule(c, &registry_id(st), &i.ecr_repository_prefix, i.credential_arn, i.custom_role_arn)
        .await?;
    let full = rule_json(st, &r);
    let mut o =
        json!({ "ecrRepositoryPrefix": r.prefix, "registryId": registry_id(st), "updatedAt": full["updatedAt"] });
    for k in ["credentialArn", "customRoleArn", "upstreamRepositoryPrefix"] {
        if let Some(x) = full.get(k) {
            o[k] = x.clone();
        }
    }
    Ok(o)
}

async fn delete_pull_through_rule(st: &AppState, c: &Caller, v: Value) -> R {
    let i: RulePrefixIn = input(v)?;
    let r = st.registry.pull_through().delete_rule(c, &registry_id(st), &i.ecr_repository_prefix).await?;
    let mut o = rule_json(st, &r);
    o.as_object_mut().map(|m| m.remove("updatedAt"));
    Ok(o)
}

async fn validate_pull_through_rule(st: &AppState, c: &Caller, v: Value) -> R {
    let i: RulePrefixIn = input(v)?;
    let (r, failure) = st.registry.pull_through().validate_rule(c, &registry_id(st), &i.ecr_repository_prefix).await?;
    let mut o = rule_json(st, &r);
    if let Some(m) = o.as_object_mut() {
        m.remove("createdAt");
        m.remove("updatedAt");
        m.remove("upstreamRegistry");
    }
    o["isValid"] = json!(failure.is_none());
    if let Some(f) = failure {
        o["failure"] = json!(f);
    }
    Ok(o)
}
