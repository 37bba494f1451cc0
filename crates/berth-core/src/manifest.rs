//! Manifest and index validation. The registry stores manifests byte-for-byte; this module only
//! decides whether the bytes are acceptable and what they reference.

use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::media;

/// Largest manifest accepted, as the distribution spec suggests (4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest is invalid: {0}")]
    Invalid(String),
    #[error("manifest media type {0:?} is not supported (supported: {list})", list = media::MANIFEST_TYPES.join(", "))]
    UnsupportedMediaType(String),
    #[error("manifest field {field}: {error}")]
    BadDigest { field: String, error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (OCI or Docker schema 2): config and layers are blobs.
    Image,
    /// An index or manifest list: children are manifests.
    Index,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
}

/// What a valid manifest says about itself and what it references.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// The artifact type shown in the referrers API: `artifactType`, else the config media type.
    pub artifact_type: Option<String>,
    /// Blobs: the config then the layers (image manifests only).
    pub blobs: Vec<Descriptor>,
    /// Child manifests (indexes only).
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<Map<String, Value>>,
}

fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(msg.into())
}

fn descriptor(v: &Value, field: &str) -> Result<Descriptor, ManifestError> {
    let o = v.as_object().ok_or_else(|| invalid(format!("{field} must be a descriptor object")))?;
    let media_type = o
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{field}.mediaType must be a string")))?;
    if media_type.is_empty() {
        return Err(invalid(format!("{field}.mediaType must not be empty")));
    }
    let digest_str =
        o.get("digest").and_then(Value::as_str).ok_or_else(|| invalid(format!("{field}.digest must be a string")))?;
    let digest = digest_str
        .parse::<Digest>()
        .map_err(|e| ManifestError::BadDigest { field: format!("{field}.digest"), error: e.to_string() })?;
    let size = o
        .get("size")
        .and_then(Value::as_i64)
        .filter(|s| *s >= 0)
        .ok_or_else(|| invalid(format!("{field}.size must be a non-negative integer")))?;
    let artifact_type = optional_str(o, "artifactType", field)?;
    let annotations = annotations(o, field)?;
    Ok(Descriptor { media_type: media_type.to_string(), digest, size, artifact_type, annotations })
}

fn optional_str(o: &Map<String, Value>, key: &str, field: &str) -> Result<Option<String>, ManifestError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{field}{}{key} must be a string", if field.is_empty() { "" } else { "." }))),
    }
}

fn annotations(o: &Map<String, Value>, field: &str) -> Result<Option<Map<String, Value>>, ManifestError> {
    match o.get("annotations") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => Ok(Some(m.clone())),
        Some(_) => Err(invalid(format!(
            "{field}{}annotations must be a map of strings",
            if field.is_empty() { "" } else { "." }
        ))),
    }
}

fn descriptors(o: &Map<String, Value>, key: &str, required: bool) -> Result<Vec<Descriptor>, ManifestError> {
    match o.get(key) {
        None | Some(Value::Null) if !required => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, v)| descriptor(v, &format!("{key}[{i}]"))).collect()
        }
        _ => Err(invalid(format!("{key} must be an array of descriptors"))),
    }
}

/// Validates manifest bytes. `content_type` is the request's Content-Type (if any); when it names a
/// manifest type it must agree with the document's own `mediaType`.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(invalid(format!("manifest is {} bytes; the limit is {MAX_MANIFEST_SIZE}", bytes.len())));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let o = value.as_object().ok_or_else(|| invalid("manifest must be a JSON object"))?;

    match o.get("schemaVersion").and_then(Value::as_i64) {
        Some(2) => {}
        Some(1) => {
            return Err(ManifestError::UnsupportedMediaType(media::DOCKER_SCHEMA1.to_string()));
        }
        _ => return Err(invalid("schemaVersion must be 2")),
    }

    let declared = optional_str(o, "mediaType", "")?;
    let header = content_type
        .map(media::essence)
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (declared.as_deref(), header) {
        (Some(d), Some(h)) if d != h => {
            return Err(invalid(format!("mediaType {d:?} does not match the Content-Type {h:?}")));
        }
        (Some(d), _) => d.to_string(),
        (None, Some(h)) => h.to_string(),
        // Neither says: infer as clients that omit mediaType expect (OCI allows omitting it).
        (None, None) if o.contains_key("manifests") => media::OCI_INDEX.to_string(),
        (None, None) => media::OCI_MANIFEST.to_string(),
    };
    if media_type == media::DOCKER_MANIFEST || media_type == media::DOCKER_MANIFEST_LIST {
        // Docker's schema 2 requires the field to be present.
        if declared.is_none() {
            return Err(invalid(format!("mediaType is required for {media_type}")));
        }
    }

    let kind = match media_type.as_str() {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => ManifestKind::Image,
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => ManifestKind::Index,
        other => return Err(ManifestError::UnsupportedMediaType(other.to_string())),
    };

    let subject = match o.get("subject") {
        None | Some(Value::Null) => None,
        Some(v) => Some(descriptor(v, "subject")?),
    };
    let artifact_type = optional_str(o, "artifactType", "")?;
    let annotations = annotations(o, "")?;

    match kind {
        ManifestKind::Image => {
            if o.contains_key("manifests") {
                return Err(invalid("an image manifest must not have manifests"));
            }
            let config = descriptor(o.get("config").ok_or_else(|| invalid("config is required"))?, "config")?;
            let layers = descriptors(o, "layers", true)?;
            // The image spec: artifactType applies when config is the empty descriptor, and the
            // referrers API falls back to the config media type.
            let artifact_type = artifact_type.or_else(|| Some(config.media_type.clone()));
            let mut blobs = Vec::with_capacity(layers.len() + 1);
            blobs.push(config);
            blobs.extend(layers);
            Ok(ParsedManifest { media_type, kind, artifact_type, blobs, children: Vec::new(), subject, annotations })
        }
        ManifestKind::Index => {
            if o.contains_key("config") || o.contains_key("layers") {
                return Err(invalid("an index must not have config or layers"));
            }
            let children = descriptors(o, "manifests", true)?;
            Ok(ParsedManifest { media_type, kind, artifact_type, blobs: Vec::new(), children, subject, annotations })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":10}}]}}"#,
            media::OCI_MANIFEST,
            d('a'),
            d('b')
        );
        let p = parse_manifest(m.as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(p.kind, ManifestKind::Image);
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(p.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        // Content-Type disagreeing with mediaType is refused.
        assert!(parse_manifest(m.as_bytes(), Some(media::OCI_INDEX)).is_err());
    }

    #[test]
    fn index_and_subject() {
        let m = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}],"subject":{{"mediaType":"{}","digest":"{}","size":3}},"artifactType":"application/x-sig"}}"#,
            media::OCI_MANIFEST,
            d('c'),
            media::OCI_MANIFEST,
            d('e')
        );
        let p = parse_manifest(m.as_bytes(), None).unwrap();
        assert_eq!(p.media_type, media::OCI_INDEX);
        assert_eq!(p.children.len(), 1);
        assert_eq!(p.subject.unwrap().digest.to_string(), d('e'));
        assert_eq!(p.artifact_type.as_deref(), Some("application/x-sig"));
    }

    #[test]
    fn rejects_bad_manifests() {
        let cases: &[&str] = &[
            "",
            "not json",
            "[]",
            r#"{"schemaVersion":1}"#,
            r#"{"schemaVersion":3}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":-1},"layers":[]}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":{}}"#,
            r#"{"schemaVersion":2,"mediaType":"text/plain","manifests":[]}"#,
            r#"{"schemaVersion":2,"manifests":[]}"#, // fine: empty index; replaced below
        ];
        for (i, c) in cases.iter().enumerate() {
            let r = parse_manifest(c.as_bytes(), None);
            if i == cases.len() - 1 {
                assert!(r.is_ok(), "empty index is valid");
            } else {
                assert!(r.is_err(), "case {i} {c:?} should fail");
            }
        }
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert!(parse_manifest(&big, None).is_err());
    }
}
