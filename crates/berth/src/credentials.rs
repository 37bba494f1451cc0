//! The root access key: from `BERTH_ROOT_ACCESS_KEY_ID` / `BERTH_ROOT_SECRET_ACCESS_KEY`, else
//! from `<data_dir>/root-credentials`, else created there on first start (mode 0600). The file is
//! in the AWS shared-credentials format, so `AWS_SHARED_CREDENTIALS_FILE` can point at it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use berth_service::AccessKey;

use crate::config::Config;

pub const FILE: &str = "root-credentials";

pub enum Source {
    Env,
    File(PathBuf),
    Created(PathBuf),
}

pub struct Root {
    pub key: AccessKey,
    pub source: Source,
}

fn from_env(cfg: &Config) -> Result<Option<AccessKey>, String> {
    let id = std::env::var("BERTH_ROOT_ACCESS_KEY_ID").ok().filter(|s| !s.is_empty());
    let secret = std::env::var("BERTH_ROOT_SECRET_ACCESS_KEY").ok().filter(|s| !s.is_empty());
    match (id, secret) {
        (Some(id), Some(secret)) => {
            if id.len() < 16 || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err("BERTH_ROOT_ACCESS_KEY_ID must be 16 to 128 letters and digits".into());
            }
            if secret.len() < 16 {
                return Err("BERTH_ROOT_SECRET_ACCESS_KEY must be at least 16 characters".into());
            }
            Ok(Some(AccessKey { id, secret, principal: root_arn(cfg) }))
        }
        (None, None) => Ok(None),
        _ => Err("set both BERTH_ROOT_ACCESS_KEY_ID and BERTH_ROOT_SECRET_ACCESS_KEY, or neither".into()),
    }
}

fn root_arn(cfg: &Config) -> String {
    berth_service::caller::root_arn(&cfg.registry_id)
}

fn read_file(cfg: &Config, path: &PathBuf) -> Result<AccessKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    match (value("aws_access_key_id"), value("aws_secret_access_key")) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok(AccessKey { id, secret, principal: root_arn(cfg) })
        }
        _ => Err(format!(
            "{} lacks aws_access_key_id or aws_secret_access_key; fix it or delete it to create a new key",
            path.display()
        )),
    }
}

/// The root key, creating and saving one if none is configured.
pub fn root_key(cfg: &Config) -> Result<Root, String> {
    if let Some(key) = from_env(cfg)? {
        return Ok(Root { key, source: Source::Env });
    }
    let path = cfg.data_dir.join(FILE);
    if path.exists() {
        return Ok(Root { key: read_file(cfg, &path)?, source: Source::File(path) });
    }
    let key = AccessKey::generate(root_arn(cfg));
    let text = format!(
        "# Berth root access key for registry {} ({}). Keep it secret.\n\
         # Use it with: export AWS_SHARED_CREDENTIALS_FILE={}\n\
         [default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        cfg.registry_id,
        cfg.region,
        std::fs::canonicalize(&cfg.data_dir).unwrap_or(cfg.data_dir.clone()).join(FILE).display(),
        key.id,
        key.secret
    );
    write_new_private(&path, &text)?;
    Ok(Root { key, source: Source::Created(path) })
}

/// The configured root key; an error (never a new key) if there is none.
pub fn existing_root_key(cfg: &Config) -> Result<AccessKey, String> {
    if let Some(key) = from_env(cfg)? {
        return Ok(key);
    }
    let path = cfg.data_dir.join(FILE);
    if !path.exists() {
        return Err(format!(
            "no root access key: {} does not exist and BERTH_ROOT_ACCESS_KEY_ID is unset (start `berth serve` once)",
            path.display()
        ));
    }
    read_file(cfg, &path)
}

pub const SECRETS_KEY_FILE: &str = "secrets.key";

/// The key access-key secrets are sealed with: `BERTH_SECRETS_KEY` (64 hex digits; give every
/// node of a cluster the same), else `<data_dir>/secrets.key`, created on first start (0600).
/// It lives apart from the database so a copy of the database alone reveals no secret.
pub fn secrets_key(cfg: &Config) -> Result<berth_crypto::seal::SealKey, String> {
    let parse = |text: &str, from: &str| {
        hex::decode(text.trim())
            .ok()
            .and_then(|b| berth_crypto::seal::SealKey::from_bytes(&b))
            .ok_or_else(|| format!("{from} must hold 64 hex digits (a 256-bit key)"))
    };
    if let Ok(v) = std::env::var("BERTH_SECRETS_KEY")
        && !v.is_empty()
    {
        return parse(&v, "BERTH_SECRETS_KEY");
    }
    let path = cfg.data_dir.join(SECRETS_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = berth_crypto::seal::SealKey::generate();
            write_new_private(&path, &format!("{}\n", hex::encode(key.as_bytes())))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

pub const KEYRING_FILE: &str = "master.keyring";

/// The master keyring (which seals content and the KMS keys' material): `BERTH_MASTER_KEY`
/// (64 hex digits per key, commas between, oldest first; give every node the same), else the
/// file `master_key_file` names, else `<data_dir>/master.keyring`, created on first start (0600).
/// Like the secrets key it lives apart from the database and the blobs.
pub fn master_keys(cfg: &Config) -> Result<berth_crypto::keyring::Keyring, String> {
    use berth_crypto::keyring::Keyring;
    if let Ok(v) = std::env::var("BERTH_MASTER_KEY")
        && !v.is_empty()
    {
        return Keyring::parse(&v).map_err(|e| format!("BERTH_MASTER_KEY: {e}"));
    }
    let (path, create) = match &cfg.master_key_file {
        Some(p) => (p.clone(), false),
        None => (cfg.data_dir.join(KEYRING_FILE), true),
    };
    check_key_file(&path, "content and KMS keys")?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Keyring::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let ring = Keyring::default();
            write_new_private(&path, &ring.to_text())?;
            tracing::info!(path = %path.display(), "created the master keyring");
            Ok(ring)
        }
        Err(e) => Err(format!("cannot read the master keyring {}: {e}", path.display())),
    }
}

/// Creates `path` (it must not exist) readable by its owner only, with `text`, durably (the file
/// and its directory entry).
fn write_new_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// A key file others can read is refused (`unseals`: what it protects).
pub fn check_key_file(path: &std::path::Path, unseals: &str) -> Result<(), String> {
    match std::fs::metadata(path).ok().map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777) {
        Some(m) if m & 0o077 != 0 => Err(format!(
            "{} is readable by other users (mode {m:04o}); it unseals {unseals}. Run `chmod 600 {}`",
            path.display(),
            path.display()
        )),
        _ => Ok(()),
    }
}

/// S3 credentials from the AWS shared-credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
/// `~/.aws/credentials`; profile `AWS_PROFILE`, else `default`), the step of the standard chain
/// the object-store client does not take itself. `None` when the environment has keys (the
/// client reads them) or there is no file.
pub fn aws_shared_credentials() -> Result<Option<berth_blob::S3Credentials>, String> {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        return Ok(None);
    }
    let path = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".aws/credentials"),
            None => return Ok(None),
        },
    };
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    Ok(parse_shared_credentials(&text, &profile))
}

fn parse_shared_credentials(text: &str, profile: &str) -> Option<berth_blob::S3Credentials> {
    let (mut inside, mut id, mut secret, mut token) = (false, None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line.trim_matches(|c| c == '[' || c == ']').trim() == profile;
        } else if inside && let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_string());
            match k.trim() {
                "aws_access_key_id" => id = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    Some(berth_blob::S3Credentials { access_key_id: id?, secret_access_key: secret?, session_token: token })
}

#[cfg(test)]
mod tests {
    use super::parse_shared_credentials;

    #[test]
    fn shared_credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n\n[ci]\naws_access_key_id=AKIACI\naws_secret_access_key=s2\naws_session_token = t\n[half]\naws_access_key_id = X\n";
        let d = parse_shared_credentials(text, "default").unwrap();
        assert_eq!(
            (d.access_key_id.as_str(), d.secret_access_key.as_str(), d.session_token),
            ("AKIADEFAULT", "s1", None)
        );
        let ci = parse_shared_credentials(text, "ci").unwrap();
        assert_eq!((ci.access_key_id.as_str(), ci.session_token.as_deref()), ("AKIACI", Some("t")));
        assert!(parse_shared_credentials(text, "half").is_none(), "a profile without its secret is no credentials");
        assert!(parse_shared_credentials(text, "missing").is_none());
    }
}
