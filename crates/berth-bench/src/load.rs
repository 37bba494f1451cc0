//! Closed-loop request load over raw HTTP/1.1 keep-alive connections (hyper), lean enough that the
//! load generator is not the bottleneck.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

pub struct LoadResult {
    /// Latency of every successful request, µs.
    pub samples: Vec<u32>,
    pub errors: u64,
    pub secs: f64,
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    addr: String,
    host: String,
    auth: Option<String>,
    accept: Option<&'static str>,
    method: Method,
    path: String,
    until: Instant,
) -> (Vec<u32>, u64) {
    let mut samples = Vec::with_capacity(64 * 1024);
    let mut errors = 0u64;
    'reconnect: while Instant::now() < until {
        let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let mut b = Request::builder().method(method.clone()).uri(&path).header("host", &host);
            if let Some(a) = &auth {
                b = b.header("authorization", a);
            }
            if let Some(a) = accept {
                b = b.header("accept", a);
            }
            let req = b.body(Empty::<Bytes>::new()).expect("request");
            let t = Instant::now();
            let ok = match send.send_request(req).await {
                Ok(res) => {
                    let good = res.status().is_success();
                    good && res.into_body().collect().await.is_ok()
                }
                Err(_) => {
                    errors += 1;
                    continue 'reconnect;
                }
            };
            if ok {
                samples.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            } else {
                errors += 1;
            }
        }
    }
    (samples, errors)
}

/// `conns` connections each sending `method path` back to back for `dur`.
pub async fn run(
    base: &str,
    auth: Option<String>,
    method: Method,
    path: &str,
    accept: Option<&'static str>,
    conns: usize,
    dur: Duration,
) -> LoadResult {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/').to_string();
    let until = Instant::now() + dur;
    let start = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(connection(
                hostport.clone(),
                hostport.clone(),
                auth.clone(),
                accept,
                method.clone(),
                path.to_string(),
                until,
            ))
        })
        .collect();
    let mut samples = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((s, e)) = t.await {
            samples.extend(s);
            errors += e;
        }
    }
    LoadResult { samples, errors, secs: start.elapsed().as_secs_f64() }
}
