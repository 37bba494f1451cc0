//! What a repository's settings may be (tag mutability with exclusions, encryption, resource
//! tags), checked alike for repositories and for the creation templates that make them.

use berth_core::wildcard;
use berth_meta::RepoSettings;
use serde::{Deserialize, Serialize};

use crate::error::{Error, InvalidKind, Limit, Result};

pub const MUTABILITY: [&str; 4] = ["MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"];
pub const ENCRYPTION_TYPES: [&str; 3] = ["AES256", "KMS", "KMS_DSSE"];

/// Whether pushing `tag` may not move it, under the repository's mutability setting.
pub fn tag_is_immutable(s: &RepoSettings, tag: &str) -> bool {
    let filters = parse_filters(s.mutability_filters.as_deref());
    let matched = || filters.iter().any(|f| wildcard::matches(f, tag));
    match s.tag_mutability.as_str() {
        "IMMUTABLE" => true,
        "IMMUTABLE_WITH_EXCLUSION" => !matched(),
        "MUTABLE_WITH_EXCLUSION" => matched(),
        _ => false,
    }
}

pub(crate) fn parse_filters(json: Option<&str>) -> Vec<String> {
    json.and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default()
}

/// Checks a mutability setting and its exclusion filters; returns the filters as stored.
pub fn check_mutability(mutability: &str, filters: &[String]) -> Result<Option<String>> {
    if !MUTABILITY.contains(&mutability) {
        return Err(Error::parameter(
            "imageTagMutability",
            format!(
                "'Member must satisfy enum value \
             set: [{}]'",
                MUTABILITY.join(", ")
            ),
        ));
    }
    let with_exclusion = mutability.ends_with("_WITH_EXCLUSION");
    if with_exclusion && filters.is_empty() {
        return Err(Error::bad_request(format!(
            "imageTagMutabilityExclusionFilters must be specified when imageTagMutability is {mutability}"
        )));
    }
    if !with_exclusion && !filters.is_empty() {
        return Err(Error::bad_request(format!(
            "imageTagMutabilityExclusionFilters can only be specified when imageTagMutability is \
             IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION, not {mutability}"
        )));
    }
    if filters.len() > 5 {
        return Err(Error::bad_request("at most 5 imageTagMutabilityExclusionFilters are allowed".into()));
    }
    for f in filters {
        let ok =
            !f.is_empty() && f.len() <= 128 && f.bytes().all(|b| b.is_ascii_alphanumeric() || b"._*-".contains(&b));
        if !ok {
            return Err(Error::bad_request(format!(
                "Invalid exclusion filter '{f}': it must be 1 to 128 characters of [0-9a-zA-Z._*-]"
            )));
        }
    }
    Ok(with_exclusion.then(|| serde_json::to_string(filters).expect("strings serialize")))
}

pub fn check_encryption(kind: &str, kms_key: Option<&str>) -> Result<()> {
    if !ENCRYPTION_TYPES.contains(&kind) {
        return Err(Error::parameter(
            "encryptionType",
            format!(
                "'Member must satisfy enum value set: \
             [{}]'",
                ENCRYPTION_TYPES.join(", ")
            ),
        ));
    }
    if kind == "AES256" && kms_key.is_some_and(|k| !k.is_empty()) {
        return Err(Error::bad_request("kmsKey can only be specified when encryptionType is KMS or KMS_DSSE".into()));
    }
    Ok(())
}

/// ECR's tag rules: at most 50; keys 1–128 characters, not starting `aws:`; values up to 256.
pub fn check_resource_tags(tags: &[(String, String)]) -> Result<()> {
    if tags.len() > berth_meta::MAX_RESOURCE_TAGS {
        return Err(Error::LimitExceeded {
            reason: format!("a repository may have at most {} tags", berth_meta::MAX_RESOURCE_TAGS),
            what: Limit::Tags,
        });
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(Error::invalid(InvalidKind::ResourceTag, format!("tag key '{k}' must be 1 to 128 characters")));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(Error::invalid(
                InvalidKind::ResourceTag,
                format!("tag key '{k}' uses the reserved prefix 'aws:'"),
            ));
        }
        if v.chars().count() > 256 {
            return Err(Error::invalid(
                InvalidKind::ResourceTag,
                format!("the value of tag '{k}' is longer than 256 characters"),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    pub encryption_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceTag {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value")]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MutabilityFilter {
    pub filter_type: String,
    pub filter: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(m: &str, filters: &[&str]) -> RepoSettings {
        let f: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        RepoSettings {
            tag_mutability: m.into(),
            mutability_filters: check_mutability(m, &f).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn mutability_with_exclusions() {
        assert!(!tag_is_immutable(&settings("MUTABLE", &[]), "latest"));
        assert!(tag_is_immutable(&settings("IMMUTABLE", &[]), "latest"));
        let s = settings("IMMUTABLE_WITH_EXCLUSION", &["latest", "dev-*"]);
        assert!(!tag_is_immutable(&s, "latest"));
        assert!(!tag_is_immutable(&s, "dev-42"));
        assert!(tag_is_immutable(&s, "v1.0"));
        let s = settings("MUTABLE_WITH_EXCLUSION", &["v*"]);
        assert!(tag_is_immutable(&s, "v1.0"));
        assert!(!tag_is_immutable(&s, "latest"));
        assert!(check_mutability("IMMUTABLE_WITH_EXCLUSION", &[]).is_err());
        assert!(check_mutability("MUTABLE", &["x".into()]).is_err());
        assert!(check_mutability("SOMETIMES", &[]).is_err());
        assert!(check_mutability("IMMUTABLE_WITH_EXCLUSION", &["bad/filter".into()]).is_err());
        let six: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
        assert!(check_mutability("IMMUTABLE_WITH_EXCLUSION", &six).is_err());
    }

    #[test]
    fn resource_tags() {
        assert!(check_resource_tags(&[("team".into(), "a".into())]).is_ok());
        assert!(matches!(
            check_resource_tags(&[("aws:x".into(), "a".into())]),
            Err(Error::Invalid(crate::error::Invalid { kind: InvalidKind::ResourceTag, .. }))
        ));
        assert!(matches!(
            check_resource_tags(&[("".into(), "a".into())]),
            Err(Error::Invalid(crate::error::Invalid { kind: InvalidKind::ResourceTag, .. }))
        ));
        let many: Vec<_> = (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(check_resource_tags(&many), Err(Error::LimitExceeded { what: Limit::Tags, .. })));
    }
}
