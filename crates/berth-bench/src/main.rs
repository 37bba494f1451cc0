//! `berth-bench`: drives any OCI registry over its HTTP API and reports throughput, latency and
//! (given the server's pid) its memory and CPU, so two registries can be compared in one run.

mod client;
mod load;
mod proc;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use client::{BigBlob, OCI_MANIFEST, Reg, Result, random_bytes};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use stats::Scenario;

#[derive(Parser, Clone)]
#[command(
    name = "berth-bench",
    version,
    about = "Benchmark an OCI registry (Berth, Distribution, any other) over its API"
)]
struct Cli {
    /// Registry base URL.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    url: String,
    /// User name for HTTP Basic authentication.
    #[arg(long)]
    user: Option<String>,
    /// Password for HTTP Basic authentication.
    #[arg(long, env = "BERTH_BENCH_PASSWORD")]
    password: Option<String>,
    /// The server's process id: each scenario then reports its peak RSS and CPU seconds.
    #[arg(long)]
    pid: Option<u32>,
    /// Scenarios to run, comma-separated: blob, small, manifest, tags, mixed.
    #[arg(long, value_delimiter = ',', default_value = "blob,small,manifest,tags,mixed")]
    scenarios: Vec<String>,
    /// Size of the large blob in MiB (at most 10240).
    #[arg(long, default_value_t = 1024)]
    blob_mib: u64,
    /// Concurrent clients for the small-image and mixed scenarios.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Small images (1 MiB layer + config + manifest) pushed and pulled.
    #[arg(long, default_value_t = 200)]
    images: usize,
    /// Connection counts for the request-rate scenarios.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    conns: Vec<usize>,
    /// Seconds per request-rate measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Tags in the tag-listing repository.
    #[arg(long, default_value_t = 100_000)]
    tags: usize,
    /// Repositories for the catalog listing.
    #[arg(long, default_value_t = 1000)]
    repos: usize,
    /// Pages fetched per listing (following Link headers).
    #[arg(long, default_value_t = 200)]
    pages: usize,
    /// Seconds of mixed workload.
    #[arg(long, default_value_t = 10.0)]
    mixed_seconds: f64,
    /// Repository name prefix, so runs against one registry do not collide.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Print results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    b
}

fn basic(user: &str, pass: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = format!("{user}:{pass}");
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if cli.blob_mib > 10240 {
        eprintln!("--blob-mib is at most 10240");
        std::process::exit(2);
    }
    let auth = cli.user.as_ref().map(|u| basic(u, cli.password.as_deref().unwrap_or("")));
    let reg = Reg::new(&cli.url, auth.clone());
    if let Err(e) = reg.get_bytes("/v2/", None).await {
        eprintln!("berth-bench: {} does not answer GET /v2/: {e}", cli.url);
        std::process::exit(1);
    }
    let mut results = Vec::new();
    if let Some(rss) = proc::idle_rss_mib(cli.pid) {
        let mut s = Scenario::new("idle");
        s.metric("RSS", rss, "MiB");
        results.push(s);
    }
    for name in cli.scenarios.clone() {
        let r = match name.as_str() {
            "blob" => blob(&cli, &reg).await,
            "small" => small(&cli, &reg).await,
            "manifest" => manifests(&cli, &reg, auth.clone()).await,
            "tags" => listings(&cli, &reg).await,
            "mixed" => mixed(&cli, &reg).await,
            other => Err(format!("unknown scenario {other:?}").into()),
        };
        match r {
            Ok(mut v) => results.append(&mut v),
            Err(e) => {
                eprintln!("berth-bench: scenario {name} failed: {e}");
                let mut s = Scenario::new(format!("{name} (FAILED: {e})"));
                s.errors = 1;
                results.push(s);
            }
        }
    }
    if cli.json {
        stats::print_table_to_stderr(&results);
        println!("{}", serde_json::to_string_pretty(&results).expect("JSON"));
    } else {
        stats::print_table(&results);
    }
    if results.iter().any(|r| r.scenario.contains("FAILED")) {
        std::process::exit(1);
    }
}

async fn blob(cli: &Cli, reg: &Reg) -> Result<Vec<Scenario>> {
    eprintln!("blob: preparing {} MiB", cli.blob_mib);
    let b = BigBlob::new(cli.blob_mib);
    let repo = format!("{}/blob", cli.prefix);
    let mb = b.len() as f64 / 1e6;
    let s = proc::Sampler::start(cli.pid);
    let secs = reg.push_big(&repo, &b).await?;
    let mut push = Scenario::new(format!("blob push {} MiB", cli.blob_mib));
    push.metric("throughput", mb / secs, "MB/s");
    if let Some(s) = s {
        push.server = Some(s.finish().await);
    }
    let s = proc::Sampler::start(cli.pid);
    let (n, secs) = reg.pull_count(&repo, &b.digest).await?;
    if n != b.len() {
        return Err(format!("pulled {n} bytes, pushed {}", b.len()).into());
    }
    let mut pull = Scenario::new(format!("blob pull {} MiB", cli.blob_mib));
    pull.metric("throughput", mb / secs, "MB/s");
    if let Some(s) = s {
        pull.server = Some(s.finish().await);
    }
    Ok(vec![push, pull])
}

/// Runs `op(i)` for i in 0..n with `clients` concurrent workers; returns per-op latencies (µs),
/// errors and wall seconds.
async fn fan_out<F, Fut>(n: usize, clients: usize, msg: &str, op: F) -> (Vec<u32>, u64, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let pb = bar(n as u64, msg);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (op, next, errors, pb) = (op.clone(), next.clone(), errors.clone(), pb.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    match op(i).await {
                        Ok(()) => lat.push(t.elapsed().as_micros() as u32),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("first error: {e}");
                            }
                        }
                    }
                    pb.inc(1);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    pb.finish_and_clear();
    (lat, errors.load(Ordering::Relaxed), start.elapsed().as_secs_f64())
}

async fn small(cli: &Cli, reg: &Reg) -> Result<Vec<Scenario>> {
    let repo = format!("{}/small", cli.prefix);
    let salt = Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64;
    let s = proc::Sampler::start(cli.pid);
    let (r, rep) = (reg.clone(), repo.clone());
    let (lat, errors, secs) = fan_out(cli.images, cli.clients, "small images: push", move |i| {
        let (r, rep) = (r.clone(), rep.clone());
        async move {
            let layer = Bytes::from(random_bytes(salt ^ (i as u64 + 1) << 20, 1 << 20));
            r.push_image(&rep, &format!("i{i}"), layer, &[]).await.map(drop)
        }
    })
    .await;
    let mut push = Scenario::new(format!("small image push x{}", cli.clients));
    push.latencies(lat, secs, "images/s").errors = errors;
    if let Some(s) = s {
        push.server = Some(s.finish().await);
    }
    let s = proc::Sampler::start(cli.pid);
    let (r, rep) = (reg.clone(), repo.clone());
    let (lat, errors, secs) = fan_out(cli.images, cli.clients, "small images: pull", move |i| {
        let (r, rep) = (r.clone(), rep.clone());
        async move { r.pull_image(&rep, &format!("i{i}")).await }
    })
    .await;
    let mut pull = Scenario::new(format!("small image pull x{}", cli.clients));
    pull.latencies(lat, secs, "images/s").errors = errors;
    if let Some(s) = s {
        pull.server = Some(s.finish().await);
    }
    Ok(vec![push, pull])
}

async fn manifests(cli: &Cli, reg: &Reg, auth: Option<String>) -> Result<Vec<Scenario>> {
    let repo = format!("{}/manifest", cli.prefix);
    let layer = Bytes::from(random_bytes(42, 64 * 1024));
    let layer_digest = client::sha256(&layer);
    let digest = reg.push_image(&repo, "bench", layer, &[]).await?;
    let cases = [
        ("manifest GET by tag", Method::GET, format!("/v2/{repo}/manifests/bench")),
        ("manifest HEAD by tag", Method::HEAD, format!("/v2/{repo}/manifests/bench")),
        ("manifest GET by digest", Method::GET, format!("/v2/{repo}/manifests/{digest}")),
        ("manifest HEAD by digest", Method::HEAD, format!("/v2/{repo}/manifests/{digest}")),
        ("blob HEAD", Method::HEAD, format!("/v2/{repo}/blobs/{layer_digest}")),
    ];
    let mut out = Vec::new();
    for (name, method, path) in cases {
        for &c in &cli.conns {
            eprintln!("{name} at {c} connections for {}s", cli.seconds);
            let s = proc::Sampler::start(cli.pid);
            let r = load::run(
                &cli.url,
                auth.clone(),
                method.clone(),
                &path,
                Some(OCI_MANIFEST),
                c,
                Duration::from_secs_f64(cli.seconds),
            )
            .await;
            let mut sc = Scenario::new(format!("{name} c={c}"));
            sc.latencies(r.samples, r.secs, "req/s").errors = r.errors;
            if let Some(s) = s {
                sc.server = Some(s.finish().await);
            }
            out.push(sc);
        }
    }
    Ok(out)
}

fn next_link(r: &reqwest::Response) -> Option<String> {
    let l = r.headers().get("link")?.to_str().ok()?;
    let start = l.find('<')? + 1;
    let end = l[start..].find('>')? + start;
    l.contains("rel=\"next\"").then(|| l[start..end].to_string())
}

/// Fetches up to `pages` pages starting at `first`, following `Link`; a registry that ignores
/// `n` answers everything at once, and that one page is then fetched repeatedly.
async fn pages(reg: &Reg, first: &str, pages: usize, field: &str) -> Result<(Vec<u32>, f64)> {
    let mut lat = Vec::new();
    let mut entries = 0usize;
    let mut url = first.to_string();
    for _ in 0..pages {
        let t = Instant::now();
        let r = reg.req(Method::GET, &url).send().await?;
        if !r.status().is_success() {
            return Err(format!("{url}: HTTP {}", r.status()).into());
        }
        let next = next_link(&r);
        let v: serde_json::Value = r.json().await?;
        lat.push(t.elapsed().as_micros() as u32);
        entries += v[field].as_array().map_or(0, Vec::len);
        match next {
            Some(n) => url = n,
            None if lat.len() >= 20 => break,
            None => url = first.to_string(),
        }
    }
    Ok((lat.clone(), entries as f64 / lat.len().max(1) as f64))
}

async fn listings(cli: &Cli, reg: &Reg) -> Result<Vec<Scenario>> {
    let repo = format!("{}/tags", cli.prefix);
    reg.push_image(&repo, "base", Bytes::from(random_bytes(9, 1024)), &[]).await?;
    let m = reg.get_bytes(&format!("/v2/{repo}/manifests/base"), Some(OCI_MANIFEST)).await?;
    let (r, rep) = (reg.clone(), repo.clone());
    let (_, errors, secs) = fan_out(cli.tags, 32, "tags: creating", move |i| {
        let (r, rep, m) = (r.clone(), rep.clone(), m.clone());
        async move { r.put_manifest(&rep, &format!("t{i:07}"), m.to_vec()).await }
    })
    .await;
    let mut setup = Scenario::new(format!("tag PUT x32 ({} tags)", cli.tags));
    setup.metric("rate", cli.tags as f64 / secs, "tags/s").errors = errors;

    let s = proc::Sampler::start(cli.pid);
    let (lat, per_page) = pages(reg, &format!("/v2/{repo}/tags/list?n=100"), cli.pages, "tags").await?;
    let mut tags = Scenario::new(format!("tags list n=100 of {}", cli.tags));
    let n = lat.len() as f64;
    tags.latencies(lat, n, "pages").metric("entries/page", per_page, "");
    tags.metrics.remove(0);
    if let Some(s) = s {
        tags.server = Some(s.finish().await);
    }

    let (r, p) = (reg.clone(), cli.prefix.clone());
    let (_, errors, _) = fan_out(cli.repos, 32, "catalog: creating repos", move |i| {
        let (r, p) = (r.clone(), p.clone());
        async move { r.push_blob(&format!("{p}/cat/r{i:05}"), Bytes::from_static(b"x")).await.map(drop) }
    })
    .await;
    let s = proc::Sampler::start(cli.pid);
    let (lat, per_page) = pages(reg, "/v2/_catalog?n=100", cli.pages, "repositories").await?;
    let mut cat = Scenario::new(format!("catalog n=100 (>= {} repos)", cli.repos));
    let n = lat.len() as f64;
    cat.latencies(lat, n, "pages").metric("entries/page", per_page, "");
    cat.metrics.remove(0);
    cat.errors = errors;
    if let Some(s) = s {
        cat.server = Some(s.finish().await);
    }
    Ok(vec![setup, tags, cat])
}

async fn mixed(cli: &Cli, reg: &Reg) -> Result<Vec<Scenario>> {
    let repo = format!("{}/mixed", cli.prefix);
    // Shared base layers, and images on top of them to pull.
    let mut base = Vec::new();
    for i in 0..3u64 {
        let l = Bytes::from(random_bytes(1000 + i, 1 << 20));
        let n = l.len();
        base.push((reg.push_blob(&repo, l).await?, n));
    }
    for i in 0..20 {
        reg.push_image(&repo, &format!("pull{i}"), Bytes::from(random_bytes(2000 + i, 4096)), &base).await?;
    }
    let base = Arc::new(base);
    let until = Instant::now() + Duration::from_secs_f64(cli.mixed_seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let s = proc::Sampler::start(cli.pid);
    let start = Instant::now();
    let tasks: Vec<_> = (0..cli.clients)
        .map(|w| {
            let (reg, repo, base, counter) = (reg.clone(), repo.clone(), base.clone(), counter.clone());
            tokio::spawn(async move {
                let (mut pulls, mut pushes, mut errors) = (0u64, 0u64, 0u64);
                let mut x = w as u64 * 7919 + 1;
                while Instant::now() < until {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let r = if (x >> 33).is_multiple_of(10) {
                        let k = counter.fetch_add(1, Ordering::Relaxed);
                        let mut ok = true;
                        for (d, _) in base.iter() {
                            ok &= reg.blob_exists(&repo, d).await.unwrap_or(false);
                        }
                        let layer = Bytes::from(random_bytes(k + 1_000_000 * (w as u64 + 1), 64 * 1024));
                        let r = reg.push_image(&repo, &format!("push{w}-{k}"), layer, &base).await.map(drop);
                        pushes += 1;
                        if ok { r } else { Err("a shared layer was not found".into()) }
                    } else {
                        pulls += 1;
                        reg.pull_image(&repo, &format!("pull{}", (x >> 40) % 20)).await
                    };
                    if r.is_err() {
                        errors += 1;
                    }
                }
                (pulls, pushes, errors)
            })
        })
        .collect();
    let (mut pulls, mut pushes, mut errors) = (0, 0, 0);
    for t in tasks {
        let (a, b, c) = t.await.unwrap_or_default();
        pulls += a;
        pushes += b;
        errors += c;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut sc = Scenario::new(format!("mixed 90/10 x{} {}s", cli.clients, cli.mixed_seconds));
    sc.metric("ops", (pulls + pushes) as f64 / secs, "ops/s").metric("pulls", pulls as f64 / secs, "/s").metric(
        "pushes",
        pushes as f64 / secs,
        "/s",
    );
    sc.errors = errors;
    if let Some(s) = s {
        sc.server = Some(s.finish().await);
    }
    Ok(vec![sc])
}
