//! A small OCI client for the scenarios (reqwest), and test data.

use std::time::Instant;

use berth_core::Algorithm;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::json;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Clone)]
pub struct Reg {
    pub http: Client,
    pub base: String,
    pub auth: Option<String>,
}

/// Pseudo-random bytes (xorshift64*): incompressible, cheap to make, reproducible from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(data: &[u8]) -> String {
    berth_crypto::digest_of(Algorithm::Sha256, data).to_string()
}

/// A large blob as 1 MiB blocks cycling through 16 distinct random ones: incompressible, and
/// sent without copying, so the load generator leaves the CPU to the server.
pub struct BigBlob {
    blocks: Vec<Bytes>,
    count: u64,
    pub digest: String,
}

const DISTINCT_BLOCKS: u64 = 16;

impl BigBlob {
    pub fn new(mib: u64) -> BigBlob {
        let blocks: Vec<Bytes> = (0..DISTINCT_BLOCKS).map(|i| Bytes::from(random_bytes(7 + i, 1 << 20))).collect();
        let mut h = berth_crypto::Hasher::new(Algorithm::Sha256);
        for i in 0..mib {
            h.update(&blocks[(i % DISTINCT_BLOCKS) as usize]);
        }
        BigBlob { blocks, count: mib, digest: h.finish().to_string() }
    }

    pub fn len(&self) -> u64 {
        self.count << 20
    }

    pub fn stream(&self) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let blocks = self.blocks.clone();
        futures_util::stream::iter(0..self.count).map(move |i| Ok(blocks[(i % DISTINCT_BLOCKS) as usize].clone()))
    }
}

pub fn manifest(config: &str, config_len: usize, layers: &[(String, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers,
    }))
    .expect("JSON")
}

fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with("http") { loc.to_string() } else { format!("{base}{loc}") }
}

fn check(status: StatusCode, want: StatusCode, what: &str) -> Result<()> {
    if status == want { Ok(()) } else { Err(format!("{what}: HTTP {status}").into()) }
}

impl Reg {
    pub fn new(base: &str, auth: Option<String>) -> Reg {
        let http = Client::builder().pool_max_idle_per_host(512).build().expect("HTTP client");
        Reg { http, base: base.trim_end_matches('/').to_string(), auth }
    }

    pub fn req(&self, method: Method, url: &str) -> RequestBuilder {
        let r = self.http.request(method, absolute(&self.base, url));
        match &self.auth {
            Some(a) => r.header("authorization", a),
            None => r,
        }
    }

    /// Uploads a blob monolithically: `POST ?digest=` with the body; a registry that answers
    /// 202 (the spec lets it) gets the body in a `PUT` to the session instead.
    pub async fn push_blob(&self, repo: &str, data: Bytes) -> Result<String> {
        let d = sha256(&data);
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
            .await?;
        if r.status() == StatusCode::ACCEPTED {
            let loc = r.headers().get("location").ok_or("no Location")?.to_str()?.to_string();
            let sep = if loc.contains('?') { '&' } else { '?' };
            let r = self
                .req(Method::PUT, &format!("{loc}{sep}digest={d}"))
                .header("content-type", "application/octet-stream")
                .body(data)
                .send()
                .await?;
            check(r.status(), StatusCode::CREATED, "monolithic blob upload (POST, PUT)")?;
            return Ok(d);
        }
        check(r.status(), StatusCode::CREATED, "monolithic blob upload")?;
        Ok(d)
    }

    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let r = self.req(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")).send().await?;
        Ok(r.status() == StatusCode::OK)
    }

    /// POST, one streamed PATCH, PUT: how docker pushes a layer. Returns seconds taken.
    pub async fn push_big(&self, repo: &str, blob: &BigBlob) -> Result<f64> {
        let t = Instant::now();
        let r = self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).send().await?;
        check(r.status(), StatusCode::ACCEPTED, "start upload")?;
        let loc = r.headers().get("location").ok_or("no Location")?.to_str()?.to_string();
        let r = self
            .req(Method::PATCH, &loc)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(blob.stream()))
            .send()
            .await?;
        check(r.status(), StatusCode::ACCEPTED, "PATCH")?;
        let loc = r.headers().get("location").ok_or("no Location")?.to_str()?.to_string();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self.req(Method::PUT, &format!("{loc}{sep}digest={}", blob.digest)).send().await?;
        check(r.status(), StatusCode::CREATED, "PUT")?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Downloads a blob over a plain connection into one reused buffer, counting bytes: the
    /// leanest possible client, so the server's rate is what gets measured. Returns (bytes, seconds).
    pub async fn pull_count(&self, repo: &str, digest: &str) -> Result<(u64, f64)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let t = Instant::now();
        let host = self.base.trim_start_matches("http://");
        let mut sock = tokio::net::TcpStream::connect(host).await?;
        let auth = self.auth.as_ref().map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let req = format!("GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
        sock.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut head = Vec::new();
        let body_start = loop {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                return Err("connection closed before the response headers".into());
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let text = String::from_utf8_lossy(&head[..body_start]).to_lowercase();
        if !text.starts_with("http/1.1 200") {
            return Err(format!("blob GET: {}", text.lines().next().unwrap_or("")).into());
        }
        let len: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("blob GET without Content-Length")?;
        let mut n = (head.len() - body_start) as u64;
        while n < len {
            let r = sock.read(&mut buf).await?;
            if r == 0 {
                break;
            }
            n += r as u64;
        }
        Ok((n, t.elapsed().as_secs_f64()))
    }

    pub async fn get_bytes(&self, path: &str, accept: Option<&str>) -> Result<Bytes> {
        let mut r = self.req(Method::GET, path);
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        let r = r.send().await?;
        check(r.status(), StatusCode::OK, path)?;
        Ok(r.bytes().await?)
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, body: Vec<u8>) -> Result<()> {
        let r = self
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .send()
            .await?;
        check(r.status(), StatusCode::CREATED, "manifest PUT")
    }

    /// Pushes a small image: layer (monolithic), config, manifest under `tag`. Returns the manifest digest.
    pub async fn push_image(&self, repo: &str, tag: &str, layer: Bytes, shared: &[(String, usize)]) -> Result<String> {
        let config = Bytes::from(format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#));
        let (ln, cn) = (layer.len(), config.len());
        let ld = self.push_blob(repo, layer).await?;
        let cd = self.push_blob(repo, config).await?;
        let mut layers = shared.to_vec();
        layers.push((ld, ln));
        let m = manifest(&cd, cn, &layers);
        let d = sha256(&m);
        self.put_manifest(repo, tag, m).await?;
        Ok(d)
    }

    /// Pulls an image as a client does: manifest, then config and layers.
    pub async fn pull_image(&self, repo: &str, reference: &str) -> Result<()> {
        let m = self.get_bytes(&format!("/v2/{repo}/manifests/{reference}"), Some(OCI_MANIFEST)).await?;
        let v: serde_json::Value = serde_json::from_slice(&m)?;
        let mut digests = vec![v["config"]["digest"].as_str().ok_or("no config")?.to_string()];
        for l in v["layers"].as_array().ok_or("no layers")? {
            digests.push(l["digest"].as_str().ok_or("layer digest")?.to_string());
        }
        for d in digests {
            self.get_bytes(&format!("/v2/{repo}/blobs/{d}"), None).await?;
        }
        Ok(())
    }
}
