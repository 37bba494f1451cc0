//! Configuration: built-in defaults, then a TOML file, then `BERTH_*` environment variables,
//! then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory holding blobs, uploads and (by default) the SQLite database.
    pub data_dir: PathBuf,
    /// Metadata database: `sqlite://PATH` or `postgres://USER@HOST/DB`.
    /// Default: SQLite at `<data_dir>/berth.db`.
    pub database_url: Option<String>,
    /// Log filter, as in `RUST_LOG` (`info`, `debug`, `berth_api=debug`, ...).
    pub log: String,
    /// The registry's 12-digit account id, in ARNs and API answers.
    #[serde(deserialize_with = "text")]
    pub registry_id: String,
    /// The AWS region clients sign requests for.
    pub region: String,
    /// URL clients reach this registry at; its host is in repository URIs.
    /// Default: `http://<listen address>`.
    pub public_url: Option<String>,
    /// Serve `/v2/` without credentials. For local experiments only.
    pub allow_anonymous: bool,
    /// The challenge `/v2/` answers unauthenticated requests with: `bearer` (Docker token flow
    /// through `/token`; lets docker pull public repositories without login) or `basic` (as ECR).
    /// Both kinds of credentials are accepted either way.
    pub auth_challenge: String,
    /// On first start, add a ROOT repository creation template so pushes create repositories.
    pub create_on_push: bool,
    /// Base domain of other accounts' registries: account 111122223333's answers on
    /// `111122223333.<account_domain>`. Unset: other accounts are reached through the ECR API's
    /// `registryId` only.
    pub account_domain: Option<String>,
    /// How often lifecycle policies run (`24h`, `30m`, `3600s`; `off` never — then only
    /// `berth lifecycle run`).
    pub lifecycle_interval: String,
    /// How often `serve` collects garbage (`off`: only `berth gc`).
    pub gc_interval: String,
    /// How long a blob stays unreferenced before garbage collection deletes it: the longest a
    /// push may take between uploading a layer and pushing the manifest that names it.
    pub gc_grace: String,
    /// How long an upload may sit untouched before garbage collection removes it.
    pub upload_ttl: String,
    /// Scans this node runs at once (0: it queues scans but leaves them to other nodes).
    pub scan_workers: usize,
    /// Least time between two manual scans (StartImageScan) of one image; ECR allows one a day.
    pub manual_scan_interval: String,
    /// Attach each completed scan's CycloneDX SBOM to the image as an OCI referrer.
    pub sbom_referrers: bool,
    /// PEM certificate chain (leaf first) to serve HTTPS with; with `tls_key`. Re-read on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Longest a client may take to send a request's headers (and, with TLS, its handshake).
    pub header_timeout: String,
    /// Longest a request body may go without a byte arriving.
    pub body_timeout: String,
    /// Longest a keep-alive connection may sit idle between requests.
    pub idle_timeout: String,
    /// Most connections served at once (more wait to be accepted; logged when reached).
    pub max_connections: usize,
    /// `/metrics` needs credentials (an access key as Basic user/password, or a login password).
    pub metrics_auth: bool,
    /// Serve `/metrics` on this address instead of the main listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Space kept free in the data directory so deletes and garbage collection work when the
    /// disk fills (`64MiB`, `1GiB`, `0` off).
    #[serde(deserialize_with = "text")]
    pub disk_reserve: String,
    /// The master keyring, for operators who keep keys outside the data directory (one key of
    /// 64 hex digits per line, oldest first). Default: `<data_dir>/master.keyring`, created on
    /// first start; `BERTH_MASTER_KEY` (keys separated by commas) overrides both.
    pub master_key_file: Option<PathBuf>,
    /// Where blobs are stored: `fs` (under `data_dir`) or `s3` (a bucket on S3 or an
    /// S3-compatible server; several nodes then share it, with PostgreSQL).
    pub storage: String,
    /// The bucket (`storage = "s3"`).
    #[serde(default, deserialize_with = "opt_text")]
    pub s3_bucket: Option<String>,
    /// A key prefix inside the bucket (`berth/`), for a bucket shared with other data.
    #[serde(deserialize_with = "text")]
    pub s3_prefix: String,
    /// The bucket's region. Default: `AWS_REGION`, else `region`.
    pub s3_region: Option<String>,
    /// An S3-compatible server's URL (`http://minio:9000`); unset for AWS S3.
    pub s3_endpoint: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), as most S3-compatible servers want.
    pub s3_path_style: bool,
    /// Static credentials; unset, the standard AWS chain (environment, shared credentials
    /// file, web identity, container and instance metadata).
    #[serde(default, deserialize_with = "opt_text")]
    pub s3_access_key_id: Option<String>,
    #[serde(default, deserialize_with = "opt_secret")]
    pub s3_secret_access_key: Option<Secret>,
    /// Answer blob GETs with a redirect to a presigned URL of the object store. Has no effect
    /// while Berth encrypts content itself (always, today): the bucket holds only ciphertext.
    pub blob_redirect: bool,
    /// On SIGTERM, how long `/readyz` answers 503 while requests are still accepted, before the
    /// listener closes (so a load balancer's next health check takes the node out first).
    pub drain_delay: String,
    /// Replication jobs this node runs at once (0: it leaves them to other nodes).
    pub replication_workers: usize,
    /// How often a tag cached through a pull-through cache rule is checked against its upstream.
    pub pull_through_refresh: String,
    /// Replication destinations, one `[[peers]]` table each (docs/REPLICATION.md).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

/// One `[[peers]]` table: a registry replication rules can name, by region and registry id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// What replication rules name.
    pub region: String,
    /// The destination account. Default: this registry's id (another region of the same account).
    #[serde(default, deserialize_with = "opt_text")]
    pub registry_id: Option<String>,
    /// Its OCI / ECR endpoint.
    pub url: String,
    /// `berth` or `ecr` (the default: AWS keys, ECR's authorization token), or `oci` (any OCI
    /// registry: user name and password files, or none).
    pub kind: Option<String>,
    /// AWS shared-credentials file, `[default]` profile (berth and ecr peers).
    pub credentials_file: Option<PathBuf>,
    /// Files holding the user name and password (oci peers).
    pub username_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
}

/// A text setting that may look like a number (`BERTH_DISK_RESERVE=0`, an all-digit bucket
/// name): the environment provider reads such values as numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    S(String),
    U(u64),
    I(i64),
    F(f64),
    B(bool),
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        match t {
            Text::S(s) => s,
            Text::U(n) => n.to_string(),
            Text::I(n) => n.to_string(),
            Text::F(n) => n.to_string(),
            Text::B(b) => b.to_string(),
        }
    }
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Text::deserialize(d).map(String::from)
}

fn opt_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Text>::deserialize(d)?.map(String::from))
}

fn opt_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(opt_text(d)?.map(Secret))
}

/// A secret setting: never printed (`Debug` shows only that it is set).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5000".parse().expect("valid default address"),
            data_dir: PathBuf::from("berth-data"),
            database_url: None,
            log: "info".into(),
            registry_id: "000000000000".into(),
            region: "us-east-1".into(),
            public_url: None,
            allow_anonymous: false,
            auth_challenge: "bearer".into(),
            create_on_push: true,
            account_domain: None,
            lifecycle_interval: "24h".into(),
            gc_interval: "1h".into(),
            gc_grace: "1h".into(),
            upload_ttl: "24h".into(),
            scan_workers: 2,
            manual_scan_interval: "24h".into(),
            sbom_referrers: false,
            tls_cert: None,
            tls_key: None,
            header_timeout: "10s".into(),
            body_timeout: "60s".into(),
            idle_timeout: "90s".into(),
            max_connections: 4096,
            metrics_auth: false,
            metrics_listen: None,
            disk_reserve: "64MiB".into(),
            master_key_file: None,
            storage: "fs".into(),
            s3_bucket: None,
            s3_prefix: String::new(),
            s3_region: None,
            s3_endpoint: None,
            s3_path_style: false,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            blob_redirect: false,
            drain_delay: "0s".into(),
            replication_workers: 4,
            pull_through_refresh: "24h".into(),
            peers: Vec::new(),
        }
    }
}

/// Values given on the command line; unset ones do not override.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
}

pub const ENV_KEYS: [&str; 40] = [
    "listen",
    "data_dir",
    "database_url",
    "log",
    "registry_id",
    "region",
    "public_url",
    "allow_anonymous",
    "auth_challenge",
    "create_on_push",
    "account_domain",
    "lifecycle_interval",
    "gc_interval",
    "gc_grace",
    "upload_ttl",
    "scan_workers",
    "manual_scan_interval",
    "sbom_referrers",
    "tls_cert",
    "tls_key",
    "header_timeout",
    "body_timeout",
    "idle_timeout",
    "max_connections",
    "metrics_auth",
    "metrics_listen",
    "disk_reserve",
    "master_key_file",
    "storage",
    "s3_bucket",
    "s3_prefix",
    "s3_region",
    "s3_endpoint",
    "s3_path_style",
    "s3_access_key_id",
    "s3_secret_access_key",
    "blob_redirect",
    "drain_delay",
    "replication_workers",
    "pull_through_refresh",
];

pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, String> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(f) = file {
        if !f.exists() {
            return Err(format!("config file {} does not exist", f.display()));
        }
        fig = fig.merge(Toml::file(f));
    }
    fig.merge(Env::prefixed("BERTH_").only(&ENV_KEYS))
        .merge(Serialized::defaults(overrides))
        .extract::<Config>()
        .map_err(|e| format!("invalid configuration: {e}"))
        .and_then(Config::validated)
}

/// `24h`, `30m`, `3600s`, `7d` (`0s` allowed).
pub fn duration(key: &str, s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let bad = || format!("invalid configuration: {key} must be a duration like 24h, 30m, 3600s or 7d, not {s:?}");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// `64MiB`, `1GiB`, `500MB`, `4096` (bytes), `0`.
pub fn size(key: &str, s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("invalid configuration: {key} must be a size like 64MiB, 1GiB or 0, not {s:?}");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// A duration of at least a second, or `off`.
fn interval(key: &str, s: &str) -> Result<Option<std::time::Duration>, String> {
    if s.trim() == "off" {
        return Ok(None);
    }
    match duration(key, s)? {
        d if d.is_zero() => Err(format!("invalid configuration: {key} must be at least 1s (or off)")),
        d => Ok(Some(d)),
    }
}

impl Config {
    fn validated(self) -> Result<Config, String> {
        if self.registry_id.len() != 12 || !self.registry_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid configuration: registry_id must be 12 digits, not {:?}", self.registry_id));
        }
        let region_ok = (2..=25).contains(&self.region.len())
            && self.region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(format!("invalid configuration: region {:?} is not a region name like us-east-1", self.region));
        }
        if self.auth_challenge != "basic" && self.auth_challenge != "bearer" {
            return Err(format!(
                "invalid configuration: auth_challenge must be \"basic\" or \"bearer\", not {:?}",
                self.auth_challenge
            ));
        }
        if let Some(u) = &self.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(format!("invalid configuration: public_url must start with http:// or https://, not {u:?}"));
        }
        self.lifecycle_every()?;
        self.gc_every()?;
        self.gc_options()?;
        duration("manual_scan_interval", &self.manual_scan_interval)?;
        if self.scan_workers > 64 {
            return Err(format!("invalid configuration: scan_workers must be 0 to 64, not {}", self.scan_workers));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("invalid configuration: tls_cert and tls_key go together (give both, or neither)".into());
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(format!(
                "invalid configuration: max_connections must be 1 to 1000000, not {}",
                self.max_connections
            ));
        }
        self.limits()?;
        self.disk_reserve_bytes()?;
        self.s3()?;
        duration("drain_delay", &self.drain_delay)?;
        if self.replication_workers > 64 {
            return Err(format!(
                "invalid configuration: replication_workers must be 0 to 64, not {}",
                self.replication_workers
            ));
        }
        self.peers()?;
        duration("pull_through_refresh", &self.pull_through_refresh)?;
        Ok(self)
    }

    /// The replication destinations, each checked (its credentials files must exist; they
    /// are read only when used).
    pub fn peers(&self) -> Result<Vec<berth_service::replication::Peer>, String> {
        use berth_service::replication::{Peer, PeerKind};
        let mut out: Vec<Peer> = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            let kind = match p.kind.as_deref().unwrap_or("ecr") {
                "ecr" | "berth" => PeerKind::Ecr,
                "oci" => PeerKind::Oci,
                other => {
                    return Err(format!(
                        "invalid configuration: peers[{i}].kind must be \"berth\", \"ecr\" or \"oci\", not {other:?}"
                    ));
                }
            };
            let peer = Peer {
                region: p.region.clone(),
                registry_id: p.registry_id.clone().unwrap_or_else(|| self.registry_id.clone()),
                url: p.url.trim_end_matches('/').to_string(),
                kind,
                credentials_file: p.credentials_file.clone(),
                username_file: p.username_file.clone(),
                password_file: p.password_file.clone(),
            };
            peer.check().map_err(|e| format!("invalid configuration: peers[{i}] ({}): {e}", p.region))?;
            if peer.region == self.region && peer.registry_id == self.registry_id {
                return Err(format!(
                    "invalid configuration: peers[{i}] is this registry ({}/{}): a peer is another region or account",
                    peer.region, peer.registry_id
                ));
            }
            if out.iter().any(|o| o.key() == peer.key()) {
                return Err(format!("invalid configuration: two peers for {}", peer.key()));
            }
            out.push(peer);
        }
        Ok(out)
    }

    /// The S3 settings when `storage = "s3"` (`None` for the filesystem).
    pub fn s3(&self) -> Result<Option<berth_blob::S3Config>, String> {
        match self.storage.as_str() {
            "fs" => return Ok(None),
            "s3" => {}
            other => return Err(format!("invalid configuration: storage must be \"fs\" or \"s3\", not {other:?}")),
        }
        let bucket = self
            .s3_bucket
            .clone()
            .filter(|b| !b.is_empty())
            .ok_or("invalid configuration: storage = \"s3\" needs s3_bucket")?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(format!(
                "invalid configuration: s3_bucket {bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' and '.')"
            ));
        }
        if let Some(e) = &self.s3_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(format!("invalid configuration: s3_endpoint must start with http:// or https://, not {e:?}"));
        }
        let id = self.s3_access_key_id.clone().filter(|s| !s.is_empty());
        let secret = self.s3_secret_access_key.clone().filter(|s| !s.0.is_empty());
        let credentials = match (id, secret) {
            (Some(access_key_id), Some(secret)) => Some(berth_blob::S3Credentials {
                access_key_id,
                secret_access_key: secret.0,
                session_token: None,
            }),
            (None, None) => None,
            _ => return Err("invalid configuration: s3_access_key_id and s3_secret_access_key go together (give both, or neither for the AWS credential chain)".into()),
        };
        Ok(Some(berth_blob::S3Config {
            bucket,
            prefix: self.s3_prefix.clone(),
            region: self
                .s3_region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| Some(self.region.clone())),
            endpoint: self.s3_endpoint.clone(),
            path_style: self.s3_path_style,
            credentials,
        }))
    }

    /// Connection and request limits.
    pub fn limits(&self) -> Result<berth_api::Limits, String> {
        let positive = |key: &str, v: &str| match duration(key, v)? {
            d if d.is_zero() => Err(format!("invalid configuration: {key} must be at least 1s")),
            d => Ok(d),
        };
        Ok(berth_api::Limits {
            header_timeout: positive("header_timeout", &self.header_timeout)?,
            body_timeout: positive("body_timeout", &self.body_timeout)?,
            idle_timeout: positive("idle_timeout", &self.idle_timeout)?,
            max_connections: self.max_connections,
        })
    }

    /// `disk_reserve` in bytes.
    pub fn disk_reserve_bytes(&self) -> Result<u64, String> {
        size("disk_reserve", &self.disk_reserve)
    }

    /// The lifecycle interval (`None`: off).
    pub fn lifecycle_every(&self) -> Result<Option<std::time::Duration>, String> {
        interval("lifecycle_interval", &self.lifecycle_interval)
    }

    /// The garbage collection interval (`None`: off).
    pub fn gc_every(&self) -> Result<Option<std::time::Duration>, String> {
        interval("gc_interval", &self.gc_interval)
    }

    pub fn gc_options(&self) -> Result<berth_service::gc::GcOptions, String> {
        Ok(berth_service::gc::GcOptions {
            grace: duration("gc_grace", &self.gc_grace)?,
            upload_ttl: duration("upload_ttl", &self.upload_ttl)?,
            dry_run: false,
        })
    }

    /// The public URL, defaulting to the listen address (`localhost` for a wildcard address),
    /// over https when TLS is on.
    pub fn public_url(&self) -> String {
        let scheme = if self.tls_cert.is_some() { "https" } else { "http" };
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if self.listen.ip().is_unspecified() => format!("{scheme}://localhost:{}", self.listen.port()),
            None => format!("{scheme}://{}", self.listen),
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("berth.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn peers_are_tables_in_the_issue_s_form_and_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("eu.credentials", "[default]\naws_access_key_id = AKIAX\naws_secret_access_key = s\n")?;
            jail.create_file("pw", "secret\n")?;
            let dir = jail.directory().display().to_string();
            jail.create_file(
                "peers.toml",
                &format!(
                    "[[peers]]\nregion = \"eu-west-1\"\nregistry_id = \"000000000000\"\nurl = \"http://127.0.0.1:5001\"\n\
                     credentials_file = \"{dir}/eu.credentials\"\n\n[[peers]]\nregion = \"dist\"\nkind = \"oci\"\n\
                     url = \"http://127.0.0.1:5002/\"\nusername_file = \"{dir}/pw\"\npassword_file = \"{dir}/pw\"\n"
                ),
            )?;
            let c = load(Some(Path::new("peers.toml")), Overrides::default()).unwrap();
            let peers = c.peers().unwrap();
            assert_eq!(peers.len(), 2);
            assert_eq!(peers[0].key(), "eu-west-1/000000000000");
            assert_eq!(peers[0].kind, berth_service::replication::PeerKind::Ecr);
            assert_eq!(
                (peers[1].kind, peers[1].url.as_str()),
                (berth_service::replication::PeerKind::Oci, "http://127.0.0.1:5002")
            );
            assert_eq!(peers[1].registry_id, c.registry_id, "registry_id defaults to this registry's");
            let bad = |body: &str, want: &str| {
                std::fs::write(jail.directory().join("bad.toml"), body).unwrap();
                let e = load(Some(Path::new("bad.toml")), Overrides::default()).unwrap_err();
                assert!(e.contains(want), "{body}: {e}");
            };
            bad(
                "[[peers]]\nregion = \"eu-west-1\"\nurl = \"http://x\"\ncredentials_file = \"/nonexistent\"\n",
                "does not exist",
            );
            bad("[[peers]]\nregion = \"eu-west-1\"\nurl = \"http://x\"\nkind = \"harbor\"\n", "kind must be");
            bad("[[peers]]\nregion = \"us-east-1\"\nurl = \"http://x\"\n", "is this registry");
            bad("[[peers]]\nregion = \"eu-west-1\"\nurl = \"x\"\n", "url");
            bad(
                "[[peers]]\nregion = \"eu-west-1\"\nurl = \"http://x\"\n[[peers]]\nregion = \"eu-west-1\"\nurl = \"http://y\"\n",
                "two peers",
            );
            bad("[[peers]]\nregion = \"eu-west-1\"\nurl = \"http://x\"\npassword = \"p\"\n", "password");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("b.toml", "listen = \"127.0.0.1:6000\"\ndata_dir = \"/from-file\"\nlog = \"debug\"")?;
            jail.set_env("BERTH_DATA_DIR", "/from-env");
            let c =
                load(Some(Path::new("b.toml")), Overrides { log: Some("warn".into()), ..Default::default() }).unwrap();
            assert_eq!(c.listen.port(), 6000);
            assert_eq!(c.data_dir, PathBuf::from("/from-env"));
            assert_eq!(c.log, "warn");
            assert_eq!(c.database_url(), "sqlite:///from-env/berth.db");
            jail.create_file("bad.toml", "listne = \"x\"")?;
            assert!(load(Some(Path::new("bad.toml")), Overrides::default()).unwrap_err().contains("listne"));
            assert!(load(Some(Path::new("missing.toml")), Overrides::default()).is_err());
            jail.create_file("id.toml", "registry_id = \"12345\"")?;
            assert!(load(Some(Path::new("id.toml")), Overrides::default()).unwrap_err().contains("12 digits"));
            jail.set_env("BERTH_AUTH_CHALLENGE", "digest");
            assert!(load(None, Overrides::default()).unwrap_err().contains("auth_challenge"));
            jail.set_env("BERTH_AUTH_CHALLENGE", "basic");
            jail.set_env("BERTH_ALLOW_ANONYMOUS", "true");
            let c = load(None, Overrides::default()).unwrap();
            assert!(c.allow_anonymous);
            assert_eq!(c.public_url(), "http://127.0.0.1:5000");
            jail.set_env("BERTH_TLS_CERT", "/etc/berth/cert.pem");
            assert!(load(None, Overrides::default()).unwrap_err().contains("tls_cert and tls_key"));
            jail.set_env("BERTH_TLS_KEY", "/etc/berth/key.pem");
            let c = load(None, Overrides::default()).unwrap();
            assert_eq!(c.public_url(), "https://127.0.0.1:5000", "https by default with TLS");
            jail.set_env("BERTH_MAX_CONNECTIONS", "0");
            assert!(load(None, Overrides::default()).unwrap_err().contains("max_connections"));
            jail.set_env("BERTH_MAX_CONNECTIONS", "100");
            jail.set_env("BERTH_HEADER_TIMEOUT", "0s");
            assert!(load(None, Overrides::default()).unwrap_err().contains("header_timeout"));
            jail.set_env("BERTH_HEADER_TIMEOUT", "5s");
            jail.set_env("BERTH_DISK_RESERVE", "2GiB");
            let c = load(None, Overrides::default()).unwrap();
            assert_eq!(c.limits().unwrap().header_timeout.as_secs(), 5);
            assert_eq!(c.disk_reserve_bytes().unwrap(), 2 << 30);
            jail.set_env("BERTH_DISK_RESERVE", "lots");
            assert!(load(None, Overrides::default()).unwrap_err().contains("disk_reserve"));
            jail.set_env("BERTH_DISK_RESERVE", "0");
            jail.set_env("BERTH_REGISTRY_ID", "123456789012");
            assert_eq!(load(None, Overrides::default()).unwrap().registry_id, "123456789012", "digits read as text");
            jail.set_env("BERTH_STORAGE", "nfs");
            assert!(load(None, Overrides::default()).unwrap_err().contains("storage must be"));
            jail.set_env("BERTH_STORAGE", "s3");
            assert!(load(None, Overrides::default()).unwrap_err().contains("needs s3_bucket"));
            jail.set_env("BERTH_S3_BUCKET", "Bad_Bucket");
            assert!(load(None, Overrides::default()).unwrap_err().contains("not a bucket name"));
            jail.set_env("BERTH_S3_BUCKET", "2048");
            jail.set_env("BERTH_S3_ACCESS_KEY_ID", "AKIAEXAMPLE");
            jail.set_env("BERTH_S3_SECRET_ACCESS_KEY", "12345678");
            let c = load(None, Overrides::default()).unwrap();
            assert_eq!(c.s3().unwrap().unwrap().bucket, "2048", "an all-digit bucket name");
            jail.set_env("BERTH_S3_SECRET_ACCESS_KEY", "");
            jail.set_env("BERTH_S3_ACCESS_KEY_ID", "");
            jail.set_env("BERTH_S3_BUCKET", "images");
            jail.set_env("BERTH_S3_ACCESS_KEY_ID", "AKIAEXAMPLE");
            assert!(load(None, Overrides::default()).unwrap_err().contains("go together"));
            jail.set_env("BERTH_S3_SECRET_ACCESS_KEY", "very-secret-value");
            jail.set_env("BERTH_S3_ENDPOINT", "http://127.0.0.1:9000");
            jail.set_env("BERTH_S3_PATH_STYLE", "true");
            jail.create_file("s3.toml", "s3_prefix = \"team/berth\"\ns3_region = \"eu-west-1\"")?;
            let c = load(Some(Path::new("s3.toml")), Overrides::default()).unwrap();
            let s3 = c.s3().unwrap().expect("s3 storage");
            assert_eq!(
                (s3.bucket.as_str(), s3.prefix.as_str(), s3.region.as_deref()),
                ("images", "team/berth", Some("eu-west-1"))
            );
            assert!(s3.path_style && s3.endpoint.as_deref() == Some("http://127.0.0.1:9000"));
            assert_eq!(s3.credentials.as_ref().unwrap().secret_access_key, "very-secret-value");
            assert!(!format!("{c:?} {s3:?}").contains("very-secret-value"), "the secret is never printed");
            Ok(())
        });
    }
}
