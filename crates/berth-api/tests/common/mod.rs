//! A real server (SQLite or PostgreSQL metadata, filesystem blobs) on a loopback port, for tests.

#![allow(dead_code)]

use std::sync::Arc;

use berth_blob::FsBlobStore;
use berth_core::Algorithm;
use berth_meta::{Meta, testing};
use berth_service::{AccessKey, Registry, Settings};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub const AKID: &str = "AKIATESTTESTTESTTEST";
pub const SECRET: &str = "test/secret/key/0123456789abcdefghijklmn";
/// A second key of the same (root) principal.
pub const AKID2: &str = "AKIASECONDSECONDSECO";
pub const SECRET2: &str = "second/secret/0123456789abcdefghijklmnop";

/// Credentials to sign with.
#[derive(Clone, Debug)]
pub struct Creds {
    pub akid: String,
    pub secret: String,
    pub token: Option<String>,
}

impl Creds {
    pub fn root() -> Creds {
        Creds { akid: AKID.into(), secret: SECRET.into(), token: None }
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The text of the first `<name>` element in an XML answer.
pub fn xml_field(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
}

/// Other accounts' registries answer on `<account>.<ACCOUNT_DOMAIN>`.
pub const ACCOUNT_DOMAIN: &str = "accounts.test";

pub struct Server {
    pub base: String,
    pub options: berth_api::Options,
    pub anonymous: bool,
    pub http: Client,
    pub dir: tempfile::TempDir,
    pub db_url: String,
    task: tokio::task::JoinHandle<()>,
    workers: berth_service::Workers,
    pub meta: Meta,
    pub registry: Registry,
    /// Against a cluster (`Server::cluster`): the host name of this test's account, and its
    /// login.
    cluster: Option<(String, String)>,
    /// The region and replication peers it was started with (`Server::start_region`).
    pub region: Option<(String, Vec<berth_service::replication::Peer>)>,
}

impl Server {
    /// Starts a server with fresh storage; `None` when PostgreSQL is skipped on purpose.
    /// Anonymous `/v2/` access: for the OCI protocol tests.
    pub async fn start(db: Db) -> Option<Server> {
        Self::start_full(db, berth_api::Options::default(), true).await
    }

    /// Authentication required, as by default.
    pub async fn start_secure(db: Db, challenge: berth_api::Challenge) -> Option<Server> {
        Self::start_with(db, berth_api::Options { challenge, ..Default::default() }).await
    }

    /// Authentication required, with these options.
    pub async fn start_with(db: Db, options: berth_api::Options) -> Option<Server> {
        Self::start_full(db, options, false).await
    }

    /// `anonymous`: `/v2/` open to anyone (`allow_anonymous`).
    pub async fn start_full(db: Db, options: berth_api::Options, anonymous: bool) -> Option<Server> {
        let dir = tempfile::tempdir().unwrap();
        let db_url = match db {
            Db::Sqlite => format!("sqlite://{}", dir.path().join("berth.db").display()),
            Db::Postgres => testing::fresh_postgres_database(&testing::postgres_url()?).await.unwrap(),
        };
        Some(Self::start_on_with(dir, db_url, options, anonymous, 2).await)
    }

    pub async fn start_on(dir: tempfile::TempDir, db_url: String, options: berth_api::Options) -> Server {
        Self::start_on_with(dir, db_url, options, false, 2).await
    }

    /// A server running `scanners` scan workers (0: scans stay queued).
    pub async fn start_on_with(
        dir: tempfile::TempDir,
        db_url: String,
        options: berth_api::Options,
        anonymous: bool,
        scanners: usize,
    ) -> Server {
        let blobs = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        Self::start_node(dir, db_url, blobs, options, anonymous, scanners, None, None, None).await
    }

    /// A registry in `region` (SQLite) replicating to `peers`, on `addr` when given (a restart
    /// on the same address), else a free port; `anonymous`: `/v2/` open to anyone.
    pub async fn start_region(
        region: &str,
        anonymous: bool,
        peers: Vec<berth_service::replication::Peer>,
        dir: Option<tempfile::TempDir>,
        addr: Option<std::net::SocketAddr>,
    ) -> Server {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let db_url = format!("sqlite://{}", dir.path().join("berth.db").display());
        let blobs = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        let listener = match addr {
            Some(a) => {
                // The port was just freed: it may take a moment to bind again.
                let mut tries = 0;
                loop {
                    match tokio::net::TcpListener::bind(a).await {
                        Ok(l) => break l,
                        Err(e) if tries < 50 => {
                            tries += 1;
                            let _ = e;
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("cannot bind {a} again: {e}"),
                    }
                }
            }
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let setup = Some((region.to_string(), peers));
        Self::start_node(dir, db_url, blobs, berth_api::Options::default(), anonymous, 0, None, setup, Some(listener))
            .await
    }

    /// Stops this server (its storage stays, in the returned directory).
    pub async fn stop(self) -> (tempfile::TempDir, std::net::SocketAddr) {
        let addr: std::net::SocketAddr = self.base.trim_start_matches("http://").parse().unwrap();
        self.task.abort();
        let _ = self.task.await;
        self.workers.stop(std::time::Duration::from_secs(5)).await;
        self.meta.close().await;
        (self.dir, addr)
    }

    /// A node over `blobs` and the database at `db_url`; `base`: where requests go (a
    /// balancer), instead of this node's own listener; `region`: its region and peers.
    #[allow(clippy::too_many_arguments)]
    async fn start_node(
        dir: tempfile::TempDir,
        db_url: String,
        blobs: Arc<dyn berth_blob::BlobStore>,
        options: berth_api::Options,
        anonymous: bool,
        scanners: usize,
        base: Option<String>,
        region: Option<(String, Vec<berth_service::replication::Peer>)>,
        listener: Option<tokio::net::TcpListener>,
    ) -> Server {
        let meta = Meta::connect(&db_url).await.unwrap();
        let listener = match listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let base = base.unwrap_or_else(|| format!("http://{}", listener.local_addr().unwrap()));
        let settings = Settings {
            public_url: base.clone(),
            account_domain: Some(ACCOUNT_DOMAIN.into()),
            // Fixed, so keys created before a restart still open after it.
            seal_key: berth_crypto::seal::SealKey::from_bytes(&[7; 32]).unwrap(),
            master_keys: berth_crypto::keyring::Keyring::parse(&"07".repeat(32)).unwrap(),
            manual_scan_interval: std::time::Duration::ZERO,
            allow_anonymous: anonymous,
            region: region.as_ref().map_or_else(|| Settings::default().region, |(r, _)| r.clone()),
            peers: region.as_ref().map(|(_, p)| p.clone()).unwrap_or_default(),
            // Pull-through tags are checked upstream at most this often (ECR: a day).
            pull_through_refresh: std::time::Duration::from_secs(2),
            ..Settings::default()
        };
        let key = AccessKey { id: AKID.into(), secret: SECRET.into(), principal: settings.root_arn() };
        let key2 = AccessKey { id: AKID2.into(), secret: SECRET2.into(), principal: settings.root_arn() };
        let registry = Registry::open(meta.clone(), blobs, settings, vec![key, key2]).await.unwrap();
        let app = berth_api::router(registry.clone(), options);
        // As `berth serve` runs them, but pull times often, so tests see them promptly (GC,
        // lifecycle and sealing rounds are run by the tests themselves).
        let background = berth_service::Background {
            scan_workers: scanners,
            pull_flush: std::time::Duration::from_millis(50),
            seal_every: None,
            ..Default::default()
        };
        let workers = registry.start_workers(&background);
        let service = registry.clone();
        // The server loop `berth serve` runs, with its limits.
        let limits = options.limits;
        let task = tokio::spawn(async move {
            berth_api::serve(listener, app, limits, None, std::future::pending()).await.unwrap();
        });
        Server {
            base,
            options,
            anonymous,
            http: Client::new(),
            dir,
            db_url,
            task,
            meta,
            registry: service,
            workers,
            cluster: None,
            region,
        }
    }

    /// The cluster `tests/e2e/cluster.sh` runs (three nodes over PostgreSQL and S3 behind a
    /// balancer, started with this harness's keys and `account_domain`): requests go to the
    /// balancer at `BERTH_TEST_CLUSTER_URL`, each test in a fresh account of its own (by host
    /// name), so that tests sharing the cluster never see each other's repositories. An
    /// in-process node over the same database (`BERTH_TEST_CLUSTER_DATABASE_URL`) and bucket
    /// (`BERTH_TEST_CLUSTER_S3_BUCKET` under prefix `berth` on `BERTH_TEST_S3_ENDPOINT`) serves
    /// what tests read directly (fsck).
    pub async fn cluster() -> Server {
        let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: tests/e2e/cluster.sh sets it"));
        let s3 = berth_blob::S3Config {
            bucket: env("BERTH_TEST_CLUSTER_S3_BUCKET"),
            prefix: "berth".into(),
            region: Some("us-east-1".into()),
            endpoint: Some(env("BERTH_TEST_S3_ENDPOINT")),
            path_style: true,
            credentials: Some(berth_blob::S3Credentials {
                access_key_id: "cluster-test".into(),
                secret_access_key: "cluster-test-secret".into(),
                session_token: None,
            }),
        };
        let blobs = Arc::new(berth_blob::ObjectBlobStore::s3(&s3).unwrap());
        let base = env("BERTH_TEST_CLUSTER_URL");
        let mut s = Self::start_node(
            tempfile::tempdir().unwrap(),
            env("BERTH_TEST_CLUSTER_DATABASE_URL"),
            blobs,
            berth_api::Options::default(),
            true,
            0,
            Some(base.clone()),
            None,
            None,
        )
        .await;
        let account = format!(
            "5{:011}",
            u64::from_le_bytes(berth_crypto::random_bytes()[..8].try_into().unwrap()) % 100_000_000_000
        );
        let key = s.registry.iam().create_account(&berth_service::Caller::operator(), &account).await.unwrap();
        let password = s.login_as(&Creds { akid: key.id, secret: key.secret, token: None }).await;
        let port = base.rsplit(':').next().unwrap().trim_end_matches('/');
        s.cluster = Some((format!("{account}.{ACCOUNT_DOMAIN}:{port}"), password));
        s
    }

    /// Stops this server and starts another on the same storage.
    pub async fn restart(self) -> Server {
        self.restart_with_scanners(2).await
    }

    pub async fn restart_with_scanners(self, scanners: usize) -> Server {
        if self.cluster.is_some() {
            // The cluster's nodes are not this process's to restart; any node continues.
            return self;
        }
        self.task.abort();
        let _ = self.task.await;
        self.workers.stop(std::time::Duration::from_secs(5)).await;
        self.meta.close().await;
        Self::start_on_with(self.dir, self.db_url, self.options, self.anonymous, scanners).await
    }

    /// The region requests are signed for: the server's (IAM's is always us-east-1).
    fn signing_region(&self, service: &str) -> &str {
        match &self.region {
            Some((r, _)) if service != "iam" => r,
            _ => "us-east-1",
        }
    }

    /// Signs and sends an ECR API call; returns the status and the JSON body.
    pub async fn ecr(&self, op: &str, body: Value) -> (StatusCode, Value) {
        self.ecr_signed(op, body, AKID, SECRET, |_| {}).await
    }

    /// Like [`Server::ecr`], with a chosen key and a hook that may alter the signed request.
    pub async fn ecr_signed(
        &self,
        op: &str,
        body: Value,
        akid: &str,
        secret: &str,
        tamper: impl FnOnce(&mut Vec<(String, String)>),
    ) -> (StatusCode, Value) {
        self.ecr_signed_with(op, body, akid, secret, None, tamper).await
    }

    /// [`Server::ecr_signed`] with a session token, signed as the SDKs sign it.
    pub async fn ecr_signed_with(
        &self,
        op: &str,
        body: Value,
        akid: &str,
        secret: &str,
        session_token: Option<&str>,
        tamper: impl FnOnce(&mut Vec<(String, String)>),
    ) -> (StatusCode, Value) {
        let target = format!("AmazonEC2ContainerRegistry_V20150921.{op}");
        self.json_call("ecr", &target, body, akid, secret, session_token, tamper).await
    }

    /// A KMS API call signed with `creds`.
    pub async fn kms_as(&self, op: &str, body: Value, creds: &Creds) -> (StatusCode, Value) {
        let target = format!("TrentService.{op}");
        self.json_call("kms", &target, body, &creds.akid, &creds.secret, creds.token.as_deref(), |_| {}).await
    }

    /// A KMS API call as the root user; panics unless it succeeds.
    pub async fn kms_ok(&self, op: &str, body: Value) -> Value {
        let (st, v) = self.kms_as(op, body, &Creds::root()).await;
        assert_eq!(st, StatusCode::OK, "{op}: {v}");
        v
    }

    /// A KMS API call as the root user that fails: its `__type` and message.
    pub async fn kms_err(&self, op: &str, body: Value) -> (String, String) {
        let (st, v) = self.kms_as(op, body, &Creds::root()).await;
        assert_ne!(st, StatusCode::OK, "{op} succeeded: {v}");
        (v["__type"].as_str().unwrap_or_default().to_string(), v["message"].as_str().unwrap_or_default().to_string())
    }

    /// An AWS JSON 1.1 call to `service` (`X-Amz-Target: target`), signed as the SDKs sign it.
    #[allow(clippy::too_many_arguments)]
    pub async fn json_call(
        &self,
        service: &str,
        target: &str,
        body: Value,
        akid: &str,
        secret: &str,
        session_token: Option<&str>,
        tamper: impl FnOnce(&mut Vec<(String, String)>),
    ) -> (StatusCode, Value) {
        let body = body.to_string();
        let host = self.base.trim_start_matches("http://").to_string();
        let date = berth_core::time::format_amz_date(berth_service::tokens::now_secs());
        let target = target.to_string();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            ("x-amz-date".into(), date),
            ("x-amz-target".into(), target),
        ];
        let mut signed = vec!["content-type", "host", "x-amz-date", "x-amz-target"];
        if let Some(t) = session_token {
            headers.push(("x-amz-security-token".into(), t.to_string()));
            signed.push("x-amz-security-token");
        }
        let h: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let req =
            berth_crypto::sigv4::Request { method: "POST", path: "/", query: None, headers: &h, body: body.as_bytes() };
        let auth =
            berth_crypto::sigv4::sign(&req, akid, secret, self.signing_region(service), service, &signed).unwrap();
        headers.push(("authorization".into(), auth));
        tamper(&mut headers);
        let mut rb = self.http.post(format!("{}/", self.base)).body(body);
        for (n, v) in &headers {
            if n != "host" {
                rb = rb.header(n.as_str(), v.as_str());
            }
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// An IAM or STS Query-API call (`Action` plus parameters) signed with `creds`; the status
    /// and the XML body.
    pub async fn query(&self, params: &[(&str, &str)], creds: &Creds) -> (StatusCode, String) {
        let action = params.iter().find(|(k, _)| *k == "Action").map(|(_, v)| *v).unwrap_or_default();
        let service = if matches!(action, "AssumeRole" | "GetCallerIdentity") { "sts" } else { "iam" };
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push(("Version", if service == "sts" { "2011-06-15" } else { "2010-05-08" }));
        let body = all.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect::<Vec<_>>().join("&");
        let host = self.base.trim_start_matches("http://").to_string();
        let date = berth_core::time::format_amz_date(berth_service::tokens::now_secs());
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("content-type".into(), "application/x-www-form-urlencoded; charset=utf-8".into()),
            ("x-amz-date".into(), date),
        ];
        let mut signed = vec!["content-type", "host", "x-amz-date"];
        if let Some(t) = &creds.token {
            headers.push(("x-amz-security-token".into(), t.clone()));
            signed.push("x-amz-security-token");
        }
        let h: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let req =
            berth_crypto::sigv4::Request { method: "POST", path: "/", query: None, headers: &h, body: body.as_bytes() };
        let auth =
            berth_crypto::sigv4::sign(&req, &creds.akid, &creds.secret, self.signing_region(service), service, &signed)
                .unwrap();
        headers.push(("authorization".into(), auth));
        let mut rb = self.http.post(format!("{}/", self.base)).body(body);
        for (n, v) in &headers {
            if n != "host" {
                rb = rb.header(n.as_str(), v.as_str());
            }
        }
        let r = rb.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// An ECR call with `creds` (temporary ones included).
    pub async fn ecr_as(&self, op: &str, body: Value, creds: &Creds) -> (StatusCode, Value) {
        self.ecr_signed_with(op, body, &creds.akid, &creds.secret, creds.token.as_deref(), |_| {}).await
    }

    /// An ECR call that must succeed.
    pub async fn ecr_ok(&self, op: &str, body: Value) -> Value {
        let (status, v) = self.ecr(op, body).await;
        assert_eq!(status, StatusCode::OK, "{op}: {v}");
        v
    }

    /// An ECR call that must fail: its `__type` and message.
    pub async fn ecr_err(&self, op: &str, body: Value) -> (String, String) {
        let (status, v) = self.ecr(op, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{op} should fail: {v}");
        (v["__type"].as_str().unwrap_or_default().to_string(), v["message"].as_str().unwrap_or_default().to_string())
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.cluster {
            Some((host, password)) => r.header("host", host).basic_auth("AWS", Some(password)),
            None => r,
        }
    }

    /// Monolithic upload; returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "push blob: {}", r.text().await.unwrap());
        d
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a config and one layer and an OCI manifest for them under `tag`; returns
    /// (manifest digest, manifest bytes).
    pub async fn push_image(&self, repo: &str, tag: &str, seed: &str) -> (String, Vec<u8>) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = format!("layer for {seed}").repeat(100);
        let m = image_manifest(
            &self.push_blob(repo, config.as_bytes()).await,
            config.len(),
            &[(self.push_blob(repo, layer.as_bytes()).await, layer.len())],
        );
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED, "push image: {}", r.text().await.unwrap());
        (sha256(&m), m)
    }
}

pub fn sha256(data: &[u8]) -> String {
    berth_crypto::digest_of(Algorithm::Sha256, data).to_string()
}

pub fn image_manifest(config: &str, config_len: usize, layers: &[(String, usize)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers,
    }))
    .unwrap()
}

pub async fn error_code(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let code = body["errors"][0]["code"].as_str().unwrap_or("<no OCI error body>").to_string();
    (status, code)
}

/// A counter's value in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics")) as u64
}

pub fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

impl Server {
    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap()
    }

    /// An IAM user with an inline policy and an access key.
    pub async fn iam_user(&self, name: &str, policy: &str) -> Creds {
        let root = Creds::root();
        let call = |params: Vec<(&'static str, String)>| async move {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (st, body) = self.query(&p, &Creds::root()).await;
            assert_eq!(st, StatusCode::OK, "{p:?}: {body}");
            body
        };
        call(vec![("Action", "CreateUser".into()), ("UserName", name.into())]).await;
        call(vec![
            ("Action", "PutUserPolicy".into()),
            ("UserName", name.into()),
            ("PolicyName", "p".into()),
            ("PolicyDocument", policy.into()),
        ])
        .await;
        let body = call(vec![("Action", "CreateAccessKey".into()), ("UserName", name.into())]).await;
        let _ = root;
        Creds {
            akid: xml_field(&body, "AccessKeyId").unwrap(),
            secret: xml_field(&body, "SecretAccessKey").unwrap(),
            token: None,
        }
    }

    /// The `docker login` password of `creds` (GetAuthorizationToken).
    pub async fn login_as(&self, creds: &Creds) -> String {
        use base64::Engine;
        let (st, v) = self.ecr_as("GetAuthorizationToken", json!({}), creds).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let t = v["authorizationData"][0]["authorizationToken"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(t).unwrap();
        String::from_utf8(decoded).unwrap().strip_prefix("AWS:").unwrap().to_string()
    }

    /// Sends `head` (request line and headers, without the blank line) and `body` exactly as
    /// given, unnormalised, and returns the status and the whole response text.
    pub async fn raw(&self, head: &str, body: &[u8]) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n");
        if !body.is_empty() || head.starts_with("POST") || head.starts_with("PUT") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        c.write_all(body).await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }
}

/// Runs a test body against SQLite and against PostgreSQL (`@cases` adds more cases to its module).
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        both!(@cases $name {});
    };
    (@cases $name:ident { $($extra:item)* }) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Server::start(Db::Sqlite).await.unwrap()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(s) = Server::start(Db::Postgres).await {
                    super::$name(s).await;
                }
            }
            $($extra)*
        }
    };
}

/// Runs a test body against SQLite, PostgreSQL, and (ignored unless `tests/e2e/cluster.sh` runs
/// it with `--ignored`) the three-node cluster behind its balancer.
#[macro_export]
macro_rules! everywhere {
    ($name:ident) => {
        both!(@cases $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs the cluster tests/e2e/cluster.sh starts (it runs these)"]
            async fn cluster() {
                super::$name(Server::cluster().await).await;
            }
        });
    };
}

/// Sends bytes exactly as given; returns the status and the body text.
pub async fn raw_request(base: &str, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}
