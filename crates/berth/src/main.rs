//! The `berth` command: `berth serve` runs the registry, `berth fsck` checks its storage,
//! `berth get-login-password` prints a `docker login` password for the root key.

mod config;
mod credentials;
mod datadir;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use berth_blob::FsBlobStore;
use berth_meta::Meta;
use berth_service::{Caller, Registry, Settings};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "berth", version, about = "Berth: a self-hostable OCI container registry", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (OCI distribution API on /v2/, ECR API on POST /).
    Serve(Common),
    /// Show the audit log, newest first: ECR calls, OCI writes and refused requests.
    Audit(AuditArgs),
    /// Print a `docker login --username AWS` password for the root access key, valid 12 hours
    /// (as `aws ecr get-login-password` does, without needing the AWS CLI).
    GetLoginPassword(Common),
    /// Verify every stored blob against its digest and every manifest reference; changes nothing.
    /// Exits 1 if it finds damage.
    Fsck(Common),
    /// Lifecycle policies: `berth lifecycle run [--repository NAME] [--dry-run]` applies them now
    /// (`serve` also runs them every `lifecycle_interval`) and lists what expired.
    Lifecycle(LifecycleArgs),
    /// Garbage collection now: deletes blobs no manifest has referenced for `gc_grace`, and
    /// uploads untouched for `upload_ttl`, while the registry keeps serving (`serve` also runs it
    /// every `gc_interval`).
    Gc(GcArgs),
    /// Vulnerability data: `berth vulndb import PATH` imports OSV records (a .json file or a
    /// directory of them); `berth vulndb status` lists what was imported and when.
    Vulndb(VulndbArgs),
    /// Accounts on this server besides the configured one: `berth account create 111122223333`
    /// adds one and prints its root access key (shown only then); `berth account list`.
    Account(AccountArgs),
    /// Server keys: `berth keys rotate-token-key` replaces the key that signs login passwords,
    /// bearer tokens, STS sessions and layer URLs; everything it signed stops working (running
    /// servers notice within seconds) and clients log in again.
    Keys(KeysArgs),
    /// Encryption at rest: `berth encryption status` shows what earlier versions stored in the
    /// clear; `berth encryption run` seals it now, with progress (`serve` does it in the
    /// background too, resuming after a crash); `berth encryption rewrap` wraps every data key
    /// again under its key's newest material (after a rotation), without touching content.
    Encryption(EncryptionArgs),
    /// Replication on demand: `berth replicate --repository R [--tag T | --all] [--destination
    /// REGION]` queues images already stored for the destinations the replication rules give R
    /// (or REGION's peers); running `serve` nodes send them.
    Replicate(ReplicateArgs),
    /// Secrets for pull-through cache rules' upstream credentials (what ECR keeps in Secrets
    /// Manager): `berth secret create --name ecr-pullthroughcache/hub --username U --password-file F`
    /// prints the ARN a rule's credentialArn names; `berth secret list`; `berth secret delete --name N`.
    Secret(SecretArgs),
}

#[derive(Args)]
struct SecretArgs {
    #[command(flatten)]
    common: Common,
    #[arg(value_parser = ["create", "list", "delete"])]
    action: String,
    /// The secret's name (a pull-through rule's secret starts with `ecr-pullthroughcache/`).
    #[arg(long, value_name = "NAME", required_if_eq_any = [("action", "create"), ("action", "delete")])]
    name: Option<String>,
    /// The upstream user name.
    #[arg(long, value_name = "USER", required_if_eq("action", "create"))]
    username: Option<String>,
    /// A file holding the upstream password or access token (never given on the command line).
    #[arg(long, value_name = "FILE", required_if_eq("action", "create"))]
    password_file: Option<PathBuf>,
    #[arg(long)]
    description: Option<String>,
}

#[derive(Args)]
struct ReplicateArgs {
    #[command(flatten)]
    common: Common,
    /// The repository (its key: the name, or `<account>:<name>` in another account).
    #[arg(long, value_name = "NAME")]
    repository: String,
    /// Only the image with this tag.
    #[arg(long, value_name = "TAG", conflicts_with = "all", required_unless_present = "all")]
    tag: Option<String>,
    /// Every image of the repository.
    #[arg(long)]
    all: bool,
    /// Only to the peers of this region (default: every destination the rules give).
    #[arg(long, value_name = "REGION")]
    destination: Option<String>,
}

#[derive(Args)]
struct EncryptionArgs {
    #[command(flatten)]
    common: Common,
    #[arg(value_parser = ["status", "run", "rewrap"])]
    action: String,
}

#[derive(Args)]
struct KeysArgs {
    #[command(flatten)]
    common: Common,
    #[arg(value_parser = ["rotate-token-key"])]
    action: String,
}

#[derive(Args)]
struct LifecycleArgs {
    #[command(flatten)]
    common: Common,
    #[arg(value_parser = ["run"])]
    action: String,
    /// Only this repository (its key: the name, or `<account>:<name>` in another account).
    #[arg(long, value_name = "NAME")]
    repository: Option<String>,
    /// Show what would expire; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct GcArgs {
    #[command(flatten)]
    common: Common,
    /// Show what would be deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Override `gc_grace` (e.g. 10m, 0s).
    #[arg(long, value_name = "DURATION")]
    grace: Option<String>,
}

#[derive(Args)]
struct VulndbArgs {
    #[command(flatten)]
    common: Common,
    #[arg(value_parser = ["import", "status"])]
    action: String,
    /// What to import (for import).
    path: Option<PathBuf>,
}

#[derive(Args)]
struct AccountArgs {
    #[command(flatten)]
    common: Common,
    #[arg(value_parser = ["create", "list"])]
    action: String,
    /// The new account's 12-digit id (for create).
    id: Option<String>,
}

#[derive(Args)]
struct AuditArgs {
    #[command(flatten)]
    common: Common,
    /// Only events at or after this time: RFC 3339 (2026-11-27T08:00:00Z), a date, or an age
    /// such as 15m, 2h, 7d.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only events before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only this event (an ECR operation such as PutImage, or Login).
    #[arg(long, value_name = "NAME")]
    event: Option<String>,
    /// Only this principal ARN.
    #[arg(long, value_name = "ARN")]
    principal: Option<String>,
    /// Only resources containing this text (a repository name or ARN).
    #[arg(long, value_name = "TEXT")]
    resource: Option<String>,
    /// Only allowed or only denied requests.
    #[arg(long, value_parser = ["allow", "deny"])]
    decision: Option<String>,
    /// Most events shown.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct Common {
    /// TOML configuration file (keys: see docs/CONFIGURATION.md).
    #[arg(long, short, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000] [env: BERTH_LISTEN].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Data directory for blobs, uploads and the default SQLite database
    /// [default: ./berth-data] [env: BERTH_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Metadata database URL, `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`
    /// [default: SQLite in the data directory] [env: BERTH_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or per module [default: info] [env: BERTH_LOG].
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Serve HTTPS with this PEM certificate chain, leaf first (with --tls-key; re-read on
    /// SIGHUP) [env: BERTH_TLS_CERT].
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert [env: BERTH_TLS_KEY].
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve /v2/ without credentials: for local experiments only (the TOML key
    /// `allow_anonymous = true`) [env: BERTH_ALLOW_ANONYMOUS].
    #[arg(long)]
    allow_anonymous: bool,
}

impl Common {
    fn load(self) -> Result<Config, String> {
        config::load(
            self.config.as_deref(),
            Overrides {
                listen: self.listen,
                data_dir: self.data_dir,
                database_url: self.database_url,
                log: self.log,
                tls_cert: self.tls_cert,
                tls_key: self.tls_key,
                allow_anonymous: self.allow_anonymous.then_some(true),
            },
        )
    }
}

fn main() -> ExitCode {
    datadir::private_umask();
    let cli = Cli::parse();
    let (cmd, common) = match cli.command {
        Command::Serve(c) => ("serve", c),
        Command::Fsck(c) => ("fsck", c),
        Command::GetLoginPassword(c) => ("get-login-password", c),
        Command::Vulndb(v) => {
            VULNDB.set((v.action, v.path)).ok();
            ("vulndb", v.common)
        }
        Command::Gc(g) => {
            GC.set((g.dry_run, g.grace)).ok();
            ("gc", g.common)
        }
        Command::Lifecycle(l) => {
            LIFECYCLE.set((l.repository, l.dry_run)).ok();
            ("lifecycle", l.common)
        }
        Command::Account(a) => {
            ACCOUNT.set((a.action, a.id)).ok();
            ("account", a.common)
        }
        Command::Keys(k) => ("keys", k.common),
        Command::Secret(a) => {
            SECRET.set((a.action, a.name, a.username, a.password_file, a.description)).ok();
            ("secret", a.common)
        }
        Command::Replicate(r) => {
            REPLICATE.set((r.repository, r.tag, r.destination)).ok();
            ("replicate", r.common)
        }
        Command::Encryption(e) => {
            ENCRYPTION.set(e.action).ok();
            ("encryption", e.common)
        }
        Command::Audit(a) => {
            let filter = match audit_filter(&a) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("berth: {e}");
                    return ExitCode::from(2);
                }
            };
            AUDIT.set((filter, a.json)).ok();
            ("audit", a.common)
        }
    };
    if cmd != "serve" {
        // A reader that stops early (`berth audit | head`) ends a listing quietly, as with other
        // Unix tools, instead of a panic on the broken pipe. (`serve` keeps SIGPIPE ignored.)
        // SAFETY: before any thread exists; restores the default disposition.
        #[cfg(unix)]
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let cfg = match common.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log).unwrap_or_else(|e| {
        eprintln!("berth: invalid log filter {:?} ({e}); using info", cfg.log);
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let r = rt.block_on(async {
        let out = match cmd {
            "serve" => serve(cfg).await,
            "get-login-password" => login_password(cfg).await,
            "audit" => audit(cfg).await,
            "account" => account(cfg).await,
            "lifecycle" => lifecycle(cfg).await,
            "gc" => gc(cfg).await,
            "vulndb" => vulndb(cfg).await,
            "keys" => keys(cfg).await,
            "encryption" => encryption(cfg).await,
            "replicate" => replicate(cfg).await,
            "secret" => secret(cfg).await,
            _ => fsck(cfg).await,
        };
        // What a command changed reaches the serving nodes' caches before it exits.
        if let Some(r) = OPENED.get() {
            r.flush_invalidations().await;
        }
        out
    });
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn open_registry(cfg: &Config, keys: Vec<berth_service::AccessKey>) -> Result<Registry, String> {
    open_registry_with(cfg, keys, false).await
}

/// `reserve`: hold the space reserve for a full disk (only the serving process does).
async fn open_registry_with(
    cfg: &Config,
    keys: Vec<berth_service::AccessKey>,
    reserve: bool,
) -> Result<Registry, String> {
    datadir::prepare(cfg, false)?;
    let blobs = open_blobs(cfg, reserve).await?;
    let meta = Meta::connect(&cfg.database_url()).await.map_err(|e| format!("cannot open metadata database: {e}"))?;
    let settings = Settings {
        registry_id: cfg.registry_id.clone(),
        region: cfg.region.clone(),
        public_url: cfg.public_url(),
        create_on_push: cfg.create_on_push,
        seal_key: credentials::secrets_key(cfg)?,
        master_keys: credentials::master_keys(cfg)?,
        account_domain: cfg.account_domain.clone().filter(|d| !d.is_empty()),
        manual_scan_interval: config::duration("manual_scan_interval", &cfg.manual_scan_interval)?,
        sbom_referrers: cfg.sbom_referrers,
        allow_anonymous: cfg.allow_anonymous,
        peers: cfg.peers()?,
        pull_through_refresh: config::duration("pull_through_refresh", &cfg.pull_through_refresh)?,
    };
    let r = Registry::open(meta, blobs, settings, keys).await.map_err(|e| format!("cannot start the registry: {e}"))?;
    let _ = OPENED.set(r.clone());
    Ok(r)
}

/// The registry this process opened, if any.
static OPENED: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();

/// The blob store `storage` names: the data directory, or a bucket (reachable, or an error
/// that says why not).
async fn open_blobs(cfg: &Config, reserve: bool) -> Result<Arc<dyn berth_blob::BlobStore>, String> {
    if let Some(mut s3) = cfg.s3()? {
        if s3.credentials.is_none() {
            s3.credentials = credentials::aws_shared_credentials()?;
        }
        let store = berth_blob::ObjectBlobStore::s3(&s3).map_err(|e| format!("cannot open blob storage: {e}"))?;
        berth_blob::BlobStore::probe(&store).await.map_err(|e| format!("cannot reach blob storage: {e}"))?;
        return Ok(Arc::new(store));
    }
    let mut blobs = FsBlobStore::open(&cfg.data_dir)
        .map_err(|e| format!("cannot open blob storage in {}: {e}", cfg.data_dir.display()))?;
    if reserve {
        blobs = blobs
            .with_reserve(cfg.disk_reserve_bytes()?)
            .map_err(|e| format!("cannot check the free space in {}: {e}", cfg.data_dir.display()))?;
    }
    Ok(Arc::new(blobs))
}

static VULNDB: std::sync::OnceLock<(String, Option<PathBuf>)> = std::sync::OnceLock::new();

async fn vulndb(cfg: Config) -> Result<ExitCode, String> {
    let (action, path) = VULNDB.get().cloned().ok_or("internal: vulndb arguments missing")?;
    let registry = open_registry(&cfg, Vec::new()).await?;
    let r = match (action.as_str(), path) {
        ("import", Some(p)) => {
            let r = registry.scanning().import_osv(&Caller::operator(), &p).await.map_err(|e| e.to_string())?;
            println!("imported {} record(s) from {} file(s): {} package entries stored", r.records, r.files, r.entries);
            for (eco, n) in &r.skipped {
                println!("skipped {n} entries of ecosystem {eco} (not supported)");
            }
            for u in &r.unreadable {
                eprintln!("berth: not an OSV record: {u}");
            }
            for i in &r.inconsistent {
                println!("warning: {i}: a range's fix precedes its introduction; that range is treated as empty");
            }
            // Continuous scanning: stored inventories meet the new data now.
            let m = registry.scanning().rematch_all(&Caller::operator()).await.map_err(|e| e.to_string())?;
            println!(
                "matched {} scanned image(s) again in {:.2} s: {} changed ({} finding(s) appeared, {} disappeared)",
                m.images,
                m.elapsed.as_secs_f64(),
                m.changed,
                m.appeared,
                m.disappeared
            );
            // Anything that could not be read is a failed import, even if the rest went in.
            if r.records == 0 || !r.unreadable.is_empty() {
                eprintln!(
                    "berth: {} of the input could not be imported ({} unreadable)",
                    p.display(),
                    r.unreadable.len()
                );
                Ok(ExitCode::FAILURE)
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
        ("import", None) => Err("berth vulndb import needs a path (an OSV .json file or a directory)".to_string()),
        _ => {
            let sources = registry.meta().vuln_sources().await.map_err(|e| e.to_string())?;
            let now = berth_meta::now_ms();
            for (name, at, n) in sources {
                let days = (now - at) / 86_400_000;
                let stale = if days >= 7 { "  (stale: import newer data)" } else { "" };
                println!("{name}  {n} entries  imported {}{stale}", berth_core::time::format_rfc3339(at / 1000));
            }
            let (queued, running) =
                registry.scanning().scan_queue(&Caller::operator()).await.map_err(|e| e.to_string())?;
            println!("scans queued or running: {queued} ({running} held by a running worker)");
            Ok(ExitCode::SUCCESS)
        }
    };
    registry.meta().close().await;
    r
}

static GC: std::sync::OnceLock<(bool, Option<String>)> = std::sync::OnceLock::new();

async fn gc(cfg: Config) -> Result<ExitCode, String> {
    let (dry_run, grace) = GC.get().cloned().ok_or("internal: gc arguments missing")?;
    let mut opts = cfg.gc_options()?;
    opts.dry_run = dry_run;
    if let Some(g) = grace {
        opts.grace = config::duration("--grace", &g)?;
    }
    let registry = open_registry(&cfg, Vec::new()).await?;
    let r = registry.gc().gc(&Caller::operator(), opts).await.map_err(|e| e.to_string())?;
    let mb = r.deleted_bytes as f64 / 1e6;
    let secs = r.elapsed.as_secs_f64();
    if dry_run {
        println!("would delete {} blob(s), {mb:.1} MB, and {} abandoned upload(s)", r.deleted_blobs, r.uploads_removed);
    } else {
        println!(
            "examined {} candidate(s), condemned {}, deleted {} blob(s) ({mb:.1} MB) and {} abandoned upload(s) in \
             {secs:.2} s ({:.0} blobs/s){}",
            r.examined,
            r.condemned,
            r.deleted_blobs,
            r.uploads_removed,
            r.deleted_blobs as f64 / secs.max(1e-9),
            if r.failed > 0 {
                format!("; {} blob file(s) could not be deleted (see the log)", r.failed)
            } else {
                String::new()
            }
        );
    }
    registry.meta().close().await;
    Ok(if r.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

static LIFECYCLE: std::sync::OnceLock<(Option<String>, bool)> = std::sync::OnceLock::new();

async fn lifecycle(cfg: Config) -> Result<ExitCode, String> {
    let (only, dry_run) = LIFECYCLE.get().cloned().ok_or("internal: lifecycle arguments missing")?;
    let registry = open_registry(&cfg, Vec::new()).await?;
    if let Some(name) = &only {
        match registry.lifecycle().lifecycle_policy(&Caller::operator(), name).await {
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let reports = registry
        .lifecycle()
        .run_lifecycles(&Caller::operator(), only.as_deref(), dry_run)
        .await
        .map_err(|e| e.to_string())?;
    let verb = if dry_run { "would expire" } else { "expired" };
    let mut total = 0;
    for r in &reports {
        for e in &r.expired {
            println!("{}  {verb}  {}  [{}]  rule {}", r.repository, e.digest, e.tags.join(", "), e.rule_priority);
        }
        total += r.expired.len();
        if r.skipped > 0 {
            println!("{}  skipped {} image(s) that changed during the run", r.repository, r.skipped);
        }
    }
    eprintln!("{} repositories with a lifecycle policy; {total} image(s) {verb}", reports.len());
    registry.meta().close().await;
    Ok(ExitCode::SUCCESS)
}

static REPLICATE: std::sync::OnceLock<(String, Option<String>, Option<String>)> = std::sync::OnceLock::new();

async fn replicate(cfg: Config) -> Result<ExitCode, String> {
    use berth_service::replication::Images;
    let (repository, tag, destination) = REPLICATE.get().cloned().ok_or("internal: replicate arguments missing")?;
    let registry = open_registry(&cfg, Vec::new()).await?;
    let repo = berth_service::parse_repo(&repository).map_err(|e| e.to_string())?;
    let which = match tag {
        Some(t) => Images::Tag(t),
        None => Images::All,
    };
    let queued = registry
        .replication()
        .start(&Caller::operator(), &repo, &which, destination.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    for q in &queued {
        println!(
            "{repository}  {}  [{}]  -> {}/{}",
            q.digest,
            q.tag.as_deref().unwrap_or(""),
            q.destination.region,
            q.destination.registry_id
        );
    }
    eprintln!(
        "{} replication(s) queued; running `berth serve` nodes send them (see aws ecr describe-image-replication-status)",
        queued.len()
    );
    registry.meta().close().await;
    Ok(ExitCode::SUCCESS)
}

type SecretCmd = (String, Option<String>, Option<String>, Option<PathBuf>, Option<String>);
static SECRET: std::sync::OnceLock<SecretCmd> = std::sync::OnceLock::new();

async fn secret(cfg: Config) -> Result<ExitCode, String> {
    let (action, name, username, password_file, description) =
        SECRET.get().cloned().ok_or("internal: secret arguments missing")?;
    let registry = open_registry(&cfg, Vec::new()).await?;
    let p = registry.secrets();
    let op = Caller::operator();
    match action.as_str() {
        "create" => {
            let (name, user, file) =
                (name.unwrap_or_default(), username.unwrap_or_default(), password_file.unwrap_or_default());
            let password = berth_remote::creds::read_secret_file(&file)?;
            let value = serde_json::json!({ "username": user, "accessToken": password }).to_string();
            let s =
                p.create(&op, &name, Some(&value), description.as_deref(), None).await.map_err(|e| e.to_string())?;
            println!("{}", s.arn);
        }
        "delete" => {
            let s = p.delete(&op, &name.unwrap_or_default()).await.map_err(|e| e.to_string())?;
            eprintln!("deleted {}", s.arn);
        }
        _ => {
            for s in p.list(&op).await.map_err(|e| e.to_string())? {
                println!("{}  {}", s.arn, s.description.unwrap_or_default());
            }
        }
    }
    registry.meta().close().await;
    Ok(ExitCode::SUCCESS)
}

static ACCOUNT: std::sync::OnceLock<(String, Option<String>)> = std::sync::OnceLock::new();

async fn account(cfg: Config) -> Result<ExitCode, String> {
    let (action, id) = ACCOUNT.get().cloned().ok_or("internal: account arguments missing")?;
    let registry = open_registry(&cfg, Vec::new()).await?;
    let r = match (action.as_str(), id) {
        ("create", Some(id)) => match registry.iam().create_account(&Caller::operator(), &id).await {
            Ok(key) => {
                println!(
                    "# Root access key of account {id} on this Berth server; the secret is shown only now.\n\
                     [account-{id}]\naws_access_key_id = {}\naws_secret_access_key = {}",
                    key.id, key.secret
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e.to_string()),
        },
        ("create", None) => Err("berth account create needs the new account's 12-digit id".into()),
        _ => {
            println!("{}  (configured)", cfg.registry_id);
            for (a, created) in registry.iam().accounts(&Caller::operator()).await.map_err(|e| e.to_string())? {
                println!("{a}  created {}", berth_core::time::format_rfc3339(created / 1000));
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    registry.meta().close().await;
    r
}

async fn keys(cfg: Config) -> Result<ExitCode, String> {
    let registry = open_registry(&cfg, Vec::new()).await?;
    registry.rotate_token_key(&Caller::operator()).await.map_err(|e| e.to_string())?;
    println!(
        "rotated the token-signing key: every docker login password, bearer token, STS session and layer URL issued \
         before now is refused (running servers pick the new key up within {} s); log in again",
        TOKEN_KEY_REFRESH.as_secs()
    );
    registry.meta().close().await;
    Ok(ExitCode::SUCCESS)
}

/// How often `serve` looks for a token-signing key rotated by `berth keys` or another node.
const TOKEN_KEY_REFRESH: Duration = Duration::from_secs(5);
/// How long background workers get to stop on shutdown (each gives back the job it held).
const WORKERS_STOP_DEADLINE: Duration = Duration::from_secs(10);

static AUDIT: std::sync::OnceLock<(berth_meta::AuditFilter, bool)> = std::sync::OnceLock::new();

/// `--since 2h` or `--since 2026-11-27T08:00:00Z` → Unix milliseconds.
fn parse_time(s: &str) -> Result<i64, String> {
    let now = berth_meta::now_ms();
    let unit = |c: char| match c {
        's' => Some(1_000),
        'm' => Some(60_000),
        'h' => Some(3_600_000),
        'd' => Some(86_400_000),
        _ => None,
    };
    if let Some(last) = s.chars().last()
        && let Some(ms) = unit(last)
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
    {
        return Ok(now - n * ms);
    }
    berth_core::policy::parse_date(s).map(|secs| (secs * 1000.0) as i64).ok_or_else(|| {
        format!("{s:?} is not a time (use 2026-11-27T08:00:00Z, 2026-11-27, or an age like 15m, 2h, 7d)")
    })
}

fn audit_filter(a: &AuditArgs) -> Result<berth_meta::AuditFilter, String> {
    if !(1..=100_000).contains(&a.limit) {
        return Err("--limit must be between 1 and 100000".into());
    }
    Ok(berth_meta::AuditFilter {
        since: a.since.as_deref().map(parse_time).transpose()?,
        until: a.until.as_deref().map(parse_time).transpose()?,
        event_name: a.event.clone(),
        principal: a.principal.clone(),
        resource: a.resource.clone(),
        decision: a.decision.clone(),
        before_id: None,
        limit: a.limit,
    })
}

async fn audit(cfg: Config) -> Result<ExitCode, String> {
    let (filter, json) = AUDIT.get().cloned().ok_or("internal: audit filter missing")?;
    datadir::prepare(&cfg, false)?;
    let meta = Meta::connect(&cfg.database_url()).await.map_err(|e| format!("cannot open metadata database: {e}"))?;
    let rows = meta.audit_events(&filter).await.map_err(|e| e.to_string())?;
    for r in &rows {
        let time = berth_core::time::format_rfc3339(r.event_time / 1000);
        if json {
            let v = serde_json::json!({
                "eventTime": time, "eventName": r.event_name, "principal": r.principal,
                "sourceIPAddress": r.source_ip, "resource": r.resource, "decision": r.decision, "error": r.error,
                "detail": r.detail,
            });
            println!("{v}");
        } else {
            println!(
                "{time}  {:<28} {:<5} {:<40} {:<15} {} {}{}",
                r.event_name,
                r.decision,
                r.principal.as_deref().unwrap_or("anonymous"),
                r.source_ip.as_deref().unwrap_or("-"),
                r.resource.as_deref().unwrap_or("-"),
                r.error.as_deref().map(|e| format!("[{e}]")).unwrap_or_default(),
                r.detail.as_deref().map(|d| format!(" {d}")).unwrap_or_default()
            );
        }
    }
    if !json {
        eprintln!("{} event(s)", rows.len());
    }
    meta.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn login_password(cfg: Config) -> Result<ExitCode, String> {
    let root = credentials::existing_root_key(&cfg)?;
    let registry = open_registry(&cfg, vec![root.clone()]).await?;
    let p = registry.auth().principal_of(&root);
    println!("{}", registry.auth().issue_login(&p).0);
    registry.meta().close().await;
    Ok(ExitCode::SUCCESS)
}

async fn serve(cfg: Config) -> Result<ExitCode, String> {
    datadir::prepare(&cfg, true)?;
    let root = credentials::root_key(&cfg)?;
    let registry = open_registry_with(&cfg, vec![root.key.clone()], true).await?;
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(berth_api::Tls::load(c, k)?),
        _ => None,
    };
    let mut limits = cfg.limits()?;
    // Connections and open blob files both take descriptors; keep some for the rest.
    let fds = datadir::raise_fd_limit();
    let room = fds.saturating_sub(128).max(16) as usize;
    if limits.max_connections > room {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files_limit = fds,
            using = room,
            "max_connections is above what the open-files limit allows; raise `ulimit -n` to serve more"
        );
        limits.max_connections = room;
    }
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a).await.map_err(|e| format!("cannot listen on {a} for /metrics: {e}"))?,
        ),
        None => None,
    };
    let data_dir = std::fs::canonicalize(&cfg.data_dir).unwrap_or(cfg.data_dir.clone());
    let db = match &cfg.database_url {
        Some(u) if u.starts_with("postgres") => "PostgreSQL".to_string(),
        _ => format!("SQLite ({})", cfg.database_url().trim_start_matches("sqlite://")),
    };
    let public = cfg.public_url();
    let host = registry.settings().public_host().to_string();
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("Berth {} is ready.", env!("CARGO_PKG_VERSION"));
    println!(
        "  listening on    {scheme}://{addr}  (OCI distribution API at /v2/; ECR, KMS, IAM and STS APIs at POST /)"
    );
    println!("  data directory  {}", data_dir.display());
    println!("  metadata        {db}");
    println!("  registry        {} in {} (public URL {public})", cfg.registry_id, cfg.region);
    if cfg.allow_anonymous {
        println!("  access          ANONYMOUS: /v2/ needs no credentials (allow_anonymous = true)");
    } else {
        println!("  access          authentication required ({} challenge)", cfg.auth_challenge);
    }
    match (&cfg.metrics_listen, cfg.metrics_auth) {
        (Some(a), auth) => {
            println!("  metrics         http://{a}/metrics{}", if auth { " (credentials required)" } else { "" })
        }
        (None, true) => println!("  metrics         /metrics (credentials required)"),
        (None, false) => println!("  metrics         /metrics (open; metrics_auth = true to require credentials)"),
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match &root.source {
        // The secret goes to a terminal only: a log file or a journal keeps what is printed.
        credentials::Source::Created(path) if terminal => {
            println!(
                "  root access key created and saved to {} (mode 0600); the secret is shown only now:",
                path.display()
            );
            println!("    export AWS_ACCESS_KEY_ID={}", root.key.id);
            println!("    export AWS_SECRET_ACCESS_KEY={}", root.key.secret);
            println!("    export AWS_DEFAULT_REGION={}", cfg.region);
        }
        credentials::Source::Created(path) | credentials::Source::File(path) => {
            let abs = std::fs::canonicalize(path).unwrap_or(path.clone());
            println!(
                "  root access key {} saved in {} (mode 0600; export AWS_SHARED_CREDENTIALS_FILE={} to use it)",
                root.key.id,
                abs.display(),
                abs.display()
            );
        }
        credentials::Source::Env => println!("  root access key {} (from BERTH_ROOT_ACCESS_KEY_ID)", root.key.id),
    }
    println!("Try it:");
    println!("  aws ecr create-repository --repository-name hello --endpoint-url {public}");
    println!(
        "  aws ecr get-login-password --endpoint-url {public} | docker login --username AWS --password-stdin {host}"
    );
    println!("  docker push {host}/hello:1   (after tagging an image {host}/hello:1; see the README)");
    let challenge =
        if cfg.auth_challenge == "bearer" { berth_api::Challenge::Bearer } else { berth_api::Challenge::Basic };
    let metrics = match (cfg.metrics_listen.is_some(), cfg.metrics_auth) {
        (true, _) => berth_api::Metrics::Elsewhere,
        (false, true) => berth_api::Metrics::Authenticated,
        (false, false) => berth_api::Metrics::Open,
    };
    let options = berth_api::Options { challenge, limits, metrics };
    let app = berth_api::router(registry.clone(), options);
    if let Some(tls) = tls.clone() {
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate and key; new connections use them"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: could not reload the TLS certificate; keeping the old one")
                    }
                }
            }
        });
    }
    // Everything besides answering requests: scans, scan on push, GC, lifecycle, upload
    // expiry, pull times, token-key refresh, free-space checks.
    let background = berth_service::Background {
        scan_workers: cfg.scan_workers,
        gc: cfg.gc_every()?.map(|every| cfg.gc_options().map(|o| (every, o))).transpose()?,
        lifecycle: cfg.lifecycle_every()?,
        token_refresh: TOKEN_KEY_REFRESH,
        replication_workers: cfg.replication_workers,
        ..Default::default()
    };
    if cfg.blob_redirect {
        tracing::warn!(
            "blob_redirect has no effect: Berth encrypts content itself, so the bucket holds only ciphertext"
        );
    }
    let workers = registry.start_workers(&background);
    let stop = tokio::sync::watch::channel(false);
    if let Some(l) = metrics_listener {
        let app = berth_api::metrics_router(registry.clone(), options, cfg.metrics_auth);
        let mut stopped = stop.1.clone();
        tokio::spawn(async move {
            let until = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = berth_api::serve(l, app, limits, None, until).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    let stop_workers = workers.stop_handle();
    let drain_delay = config::duration("drain_delay", &cfg.drain_delay)?;
    let draining = registry.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Readiness off first; balancers see it at their next check while this node still serves.
        draining.health().drain();
        if !drain_delay.is_zero() {
            tracing::info!(seconds = drain_delay.as_secs(), "draining: /readyz answers 503; still accepting requests");
            tokio::time::sleep(drain_delay).await;
        }
        let _ = stop.0.send(true);
        // Workers stop while requests in flight finish.
        stop_workers.stop();
    };
    let served = berth_api::serve(listener, app, limits, tls, shutdown).await;
    workers.stop(WORKERS_STOP_DEADLINE).await;
    served.map_err(|e| format!("server error: {e}"))?;
    // The last pull times buffered since the final flush.
    if let Err(e) = registry.content().flush_pulls().await {
        tracing::warn!(error = %e, "could not record pull times");
    }
    registry.flush_audit().await;
    registry.meta().close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!(
        "shutting down: readiness off, then no new connections; finishing requests in flight (signal again to stop now)"
    );
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    // Let the spawned task install its handlers before draining begins.
    tokio::time::sleep(Duration::from_millis(10)).await;
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

static ENCRYPTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn encryption(cfg: Config) -> Result<ExitCode, String> {
    let registry = open_registry(&cfg, Vec::new()).await?;
    let e = registry.encryption();
    if ENCRYPTION.get().map(String::as_str) == Some("rewrap") {
        let n = e
            .rewrap(&Caller::operator(), &|digest, n| println!("re-wrapped {n}: {digest}"))
            .await
            .map_err(|e| e.to_string())?;
        println!("re-wrapped {n} data key(s) under their keys' newest material");
        return Ok(ExitCode::SUCCESS);
    }
    let status = e.status(&Caller::operator()).await.map_err(|e| e.to_string())?;
    println!(
        "{} blob(s) ({} bytes) and {} manifest(s) stored in the clear",
        status.clear_blobs, status.clear_bytes, status.clear_manifests
    );
    if ENCRYPTION.get().map(String::as_str) != Some("run") || status.clear_blobs + status.clear_manifests == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let total = status.clear_blobs;
    let r = e
        .seal_all(&Caller::operator(), |digest, n, bytes| println!("sealed {n}/{total} ({bytes} bytes): {digest}"))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "sealed {} blob(s), {} bytes, and {} manifest(s) in {:.1} s",
        r.sealed,
        r.bytes,
        r.manifests,
        r.elapsed.as_secs_f64()
    );
    for d in &r.damaged {
        println!("PROBLEM: blob {d} does not match its digest and was left in the clear (see `berth fsck`)");
    }
    Ok(if r.damaged.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn fsck(cfg: Config) -> Result<ExitCode, String> {
    let registry = open_registry(&cfg, Vec::new()).await?;
    let verbose = tracing::enabled!(tracing::Level::DEBUG);
    let report = registry
        .fsck()
        .fsck(&Caller::operator(), |msg| {
            if verbose {
                eprintln!("{msg}");
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "checked {} blobs ({} bytes) and {} manifests",
        report.blobs_checked, report.bytes_checked, report.manifests_checked
    );
    for b in &report.unrecorded_blobs {
        println!("note: stored blob {b} is not recorded in the metadata (left by an interrupted upload)");
    }
    for s in &report.sparse_children {
        println!("note: {s}");
    }
    for p in &report.problems {
        println!("PROBLEM: {p}");
    }
    if report.is_clean() {
        println!("OK: no problems found");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s) found", report.problems.len());
        Ok(ExitCode::from(1))
    }
}
