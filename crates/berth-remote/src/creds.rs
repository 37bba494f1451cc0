//! Credentials for another registry, read from files when they are needed (never kept elsewhere):
//! AWS keys in the shared-credentials format, or a user name and password for a plain OCI registry.

use std::path::Path;

/// An AWS access key (and session token, for temporary keys).
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The keys of `profile` in AWS shared-credentials text (`[profile]` sections of `key = value`
/// lines; `#` and `;` start comments). The error never repeats a value.
pub fn parse_shared_credentials(text: &str, profile: &str) -> Result<AwsKeys, String> {
    let mut section: Option<&str> = None;
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut found = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            section = Some(name.strip_prefix("profile ").map(str::trim).unwrap_or(name));
            found |= section == Some(profile);
            continue;
        }
        if section != Some(profile) {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v).filter(|t| !t.is_empty()),
            _ => {}
        }
    }
    if !found {
        return Err(format!("has no [{profile}] profile"));
    }
    match (id.filter(|s| !s.is_empty()), secret.filter(|s| !s.is_empty())) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Ok(AwsKeys { access_key_id, secret_access_key, session_token: token })
        }
        _ => Err(format!("[{profile}] lacks aws_access_key_id or aws_secret_access_key")),
    }
}

/// The `[default]` keys of a shared-credentials file.
pub fn read_shared_credentials(path: &Path) -> Result<AwsKeys, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_shared_credentials(&text, "default").map_err(|e| format!("{} {e}", path.display()))
}

/// A secret read from a file, without the line end an editor adds.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_comments_and_missing_keys() {
        let text = "# keys\n[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = no\n\n\
                    [default]\n aws_access_key_id=AKIADEFAULT \naws_secret_access_key = s3cr3t/+=\n\
                    aws_session_token =\n";
        let k = parse_shared_credentials(text, "default").unwrap();
        assert_eq!(k.access_key_id, "AKIADEFAULT");
        assert_eq!(k.secret_access_key, "s3cr3t/+=");
        assert_eq!(k.session_token, None);
        assert_eq!(parse_shared_credentials(text, "other").unwrap().access_key_id, "AKIAOTHER");
        assert!(parse_shared_credentials(text, "prod").unwrap_err().contains("no [prod] profile"));
        let e = parse_shared_credentials("[default]\naws_access_key_id = AKIAX\n", "default").unwrap_err();
        assert!(e.contains("lacks"), "{e}");
        assert!(!format!("{k:?}").contains("s3cr3t"), "Debug hides the secret");
    }

    #[test]
    fn secret_files_lose_their_line_end_and_may_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap(), "hunter2");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secret_file(&p).unwrap_err().contains("is empty"));
        assert!(read_secret_file(&dir.path().join("none")).unwrap_err().contains("cannot read"));
    }
}
