//! The HTTP server: its own accept loop over hyper, so that slow or idle clients cannot hold the
//! server's connections or file descriptors.
//!
//! - At most `max_connections` connections are served at once. At the limit, the connection
//!   that has been idle (or sending a header) the longest is closed to make room, so a flood of
//!   half-open connections cannot lock real clients out; when every connection is busy with a
//!   request, new ones wait in the kernel's accept queue. Reaching the limit is logged.
//! - A connection that has started a request must send its whole header within `header_timeout`;
//!   one that sits idle between requests is closed after `idle_timeout`; a request body that
//!   sends nothing for `body_timeout` fails.
//! - With TLS (rustls), the handshake must also finish within `header_timeout`; the certificate
//!   is re-read on [`Tls::reload`] (SIGHUP in `berth serve`) without touching open connections;
//!   HTTP/2 is offered by ALPN.
//! - On shutdown, accepting stops at once and requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tower::Service;

use crate::state::Limits;

/// How a request reached the server: whether over TLS (`aws:SecureTransport`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Transport {
    pub secure: bool,
}

/// Whether the request with these extensions came over TLS.
pub(crate) fn is_secure(ext: &axum::http::Extensions) -> bool {
    ext.get::<Transport>().is_some_and(|t| t.secure)
}

/// A certificate and key read from PEM files, which [`Tls::reload`] reads again.
#[derive(Debug)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The server's TLS configuration.
#[derive(Clone)]
pub struct Tls {
    files: Arc<CertFiles>,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the certificate file {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)", cert.display()));
    }
    // The key's contents never appear in an error.
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{} is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}", key.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| {
        format!("the key in {} does not go with the certificate in {}: {e}", key.display(), cert.display())
    })
}

impl Tls {
    /// Reads the PEM certificate chain (leaf first) and private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        let pair = load_pair(cert, key)?;
        let files = Arc::new(CertFiles { cert: cert.into(), key: key.into(), current: RwLock::new(Arc::new(pair)) });
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(files.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls { files, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }

    /// Reads the certificate and key files again; new handshakes use them, open connections
    /// keep theirs. On an error the old pair stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let pair = load_pair(&self.files.cert, &self.files.key)?;
        *self.files.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
        Ok(())
    }
}

/// What a connection's watchdog sees: requests in flight and when bytes last moved.
struct ConnState {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `born` of the last read or write.
    last_io: AtomicU64,
    /// Milliseconds since `born` (plus one) when bytes of a not yet complete request head first
    /// arrived; 0 when none is pending.
    head_since: AtomicU64,
    /// HTTP/2 frames arrive between requests (pings, settings): only the idle rule applies.
    h2: AtomicBool,
    /// Closes the connection to make room for a new one.
    evict: tokio::sync::Notify,
}

impl ConnState {
    fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn touched(&self, read: bool) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if read && self.in_flight.load(Ordering::Acquire) == 0 && !self.h2.load(Ordering::Relaxed) {
            let _ = self.head_since.compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now_ms();
        let head = self.head_since.load(Ordering::Acquire);
        if head > 0 {
            (now + 1 - head > limits.header_timeout.as_millis() as u64).then_some("request header not received in time")
        } else {
            (now - self.last_io.load(Ordering::Relaxed) > limits.idle_timeout.as_millis() as u64)
                .then_some("idle keep-alive connection")
        }
    }
}

/// The connections being served, to choose one to close at the limit.
#[derive(Default)]
struct Conns(std::sync::Mutex<Vec<std::sync::Weak<ConnState>>>);

impl Conns {
    fn add(&self, c: &Arc<ConnState>) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= 64 && v.len().is_power_of_two() {
            v.retain(|w| w.strong_count() > 0);
        }
        v.push(Arc::downgrade(c));
    }

    /// Closes the connection without a request in flight that has been quiet the longest;
    /// whether there was one.
    fn evict_one(&self) -> bool {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|w| w.strong_count() > 0);
        // Quiet the longest; among equals (milliseconds are coarse), the oldest: a connection
        // accepted a moment ago has not had the chance to send its request.
        let key = |c: &ConnState| (c.now_ms().saturating_sub(c.last_io.load(Ordering::Relaxed)), c.born.elapsed());
        let victim = v
            .iter()
            .filter_map(|w| w.upgrade())
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .max_by_key(|c| key(c));
        match victim {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Counts a request in flight until its response body is done (or dropped).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: &Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.head_since.store(0, Ordering::Release);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_io.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`InFlight`].
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An I/O stream that reports its reads and writes to the connection's state.
struct Watched<S> {
    io: S,
    state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.touched(true);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touched(false);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touched(false);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Rate-limits the "connection limit reached" warning.
struct LimitLog {
    last: std::sync::Mutex<Option<Instant>>,
}

impl LimitLog {
    fn warn(&self, max: usize) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(
                max_connections = max,
                "connection limit reached (max_connections): closing idle connections to make room; new ones wait \
                 when every connection is busy"
            );
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for the
/// connections' requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limit_log = Arc::new(LimitLog { last: std::sync::Mutex::new(None) });
    let conns = Arc::new(Conns::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                limit_log.warn(limits.max_connections);
                // Make room by closing the quietest connection not serving a request.
                conns.evict_one();
                tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait a moment
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let state = ConnState::new();
        conns.add(&state);
        tokio::spawn(async move {
            serve_connection(tcp, peer, app, limits, tls, watcher, state).await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    tls: Option<Tls>,
    watcher: hyper_util::server::graceful::Watcher,
    state: Arc<ConnState>,
) {
    let secure = tls.is_some();
    let svc = {
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(&state);
            let mut app = app.clone();
            let (parts, incoming) = req.into_parts();
            let body = Body::new(tower_http::timeout::TimeoutBody::new(limits.body_timeout, incoming));
            let mut req = hyper::Request::from_parts(parts, body);
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(Transport { secure });
            async move {
                let res = app.call(req).await.unwrap_or_else(|e| match e {});
                Ok::<_, std::convert::Infallible>(res.map(|b| Tracked { body: b, _in_flight: in_flight }))
            }
        })
    };
    match tls {
        None => run(Watched { io: tcp, state: state.clone() }, svc, watcher, &state, &limits, peer).await,
        Some(tls) => {
            let handshake = tokio::time::timeout(limits.header_timeout, tls.acceptor.accept(tcp));
            let stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake not finished in time; closing"),
                },
                _ = state.evict.notified() => return,
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                state.h2.store(true, Ordering::Relaxed);
            }
            run(Watched { io: stream, state: state.clone() }, svc, watcher, &state, &limits, peer).await
        }
    }
}

async fn run<S, F>(
    io: Watched<S>,
    svc: F,
    watcher: hyper_util::server::graceful::Watcher,
    state: &ConnState,
    limits: &Limits,
    peer: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<Tracked>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    F::Future: Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), svc));
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        },
        why = watchdog(state, limits) => tracing::debug!(%peer, reason = why, "closing connection"),
        _ = state.evict.notified() => tracing::debug!(%peer, "closing the quietest connection to make room"),
    }
}

/// Resolves when the connection has waited too long for a request header or sat idle too long.
async fn watchdog(state: &ConnState, limits: &Limits) -> &'static str {
    let tick =
        (limits.header_timeout.min(limits.idle_timeout) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if let Some(why) = state.expired(limits) {
            return why;
        }
    }
}
