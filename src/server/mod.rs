//! The HTTP server: axum on hyper (HTTP/1.1), routes, limits, and the one table that maps
//! every error to a status ([`ApiError::status`]).
//!
//! Routes: `POST /api/v1/write`, `POST /api/v1/read`, `GET /-/healthy`, `GET /-/ready`.
//! The protocol work (decompress, decode, append, select, encode) runs on tokio's blocking
//! pool, so fsync waits and chunk decoding never stall the async workers; concurrent writes
//! therefore reach the WAL together and share one fsync (group commit).
//!
//! The listener opens before the data directory is recovered: `/-/healthy` answers at once,
//! `/-/ready` and the data routes answer 503 until [`AppState::set_ready`] hands over the
//! [`Db`].
//!
//! With `--web.config.file` ([`web`]): HTTPS instead of HTTP when the file has
//! `tls_server_config`, and basic auth on every route when it has `basic_auth_users`, checked
//! from the headers before any body byte is read.

mod admin;
mod conn;
mod error;
pub mod web;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{ACCEPT, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

pub use self::error::ApiError;
use crate::metrics::{CodeLabel, MetricsRegistry, ReadLabels, TypeLabel};
use crate::remote::read::{self, ResponseType, STREAMED_CONTENT_TYPE};
use crate::remote::write::{WriteError, WriteSummary};
use crate::remote::{self, write, BodyError, BodyLimits};
use crate::tsdb::Db;

/// Server settings (flags in `main.rs`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub body: BodyLimits,
    /// Samples one SAMPLES read response may hold (`--storage.remote.read-sample-limit`).
    pub read_sample_limit: u64,
    /// Concurrent remote reads; more wait for a slot (`--storage.remote.read-concurrent-limit`).
    pub read_concurrent_limit: usize,
    /// Budget of one streamed frame (`--storage.remote.read-max-bytes-in-frame`).
    pub read_max_bytes_in_frame: usize,
    /// Remote-write memory in use at once: bodies as declared, then twice the decoded size
    /// (buffer + decoder index). A request that cannot get its share
    /// within [`ServerConfig::write_queue_timeout`] is answered 503 with `Retry-After`:
    /// memory stays bounded however many shards a sender runs.
    pub write_inflight_bytes: usize,
    pub write_queue_timeout: Duration,
    /// Per-series label limits of remote write.
    pub labels: write::LabelLimits,
    /// Serve `POST|PUT /-/quit` (`--web.enable-lifecycle`); 403 otherwise.
    pub enable_lifecycle: bool,
    /// Serve the TSDB admin API (`--web.enable-admin-api`); 403 otherwise.
    pub enable_admin_api: bool,
    /// Longest wait for a request's headers, idle keep-alive included (`--web.read-timeout`).
    pub read_timeout: std::time::Duration,
    /// Connections served at once (`--web.max-connections`).
    pub max_connections: usize,
    /// TLS and basic auth (`--web.config.file`); plain HTTP without auth when `None`.
    pub web: Option<Arc<web::WebConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            body: BodyLimits::default(),
            read_sample_limit: 50_000_000,
            read_concurrent_limit: 10,
            read_max_bytes_in_frame: 1 << 20,
            write_inflight_bytes: 1 << 30,
            write_queue_timeout: Duration::from_secs(5),
            labels: write::LabelLimits::default(),
            enable_lifecycle: false,
            enable_admin_api: false,
            read_timeout: std::time::Duration::from_secs(300),
            max_connections: 512,
            web: None,
        }
    }
}

/// Streamed frames are handed to the HTTP body in buffers of about this size.
const STREAM_FLUSH_BYTES: usize = 64 << 10;
/// Buffers in flight between the producing thread and the socket (backpressure beyond this).
const STREAM_QUEUE: usize = 4;
/// Units of the write budget semaphore.
const BUDGET_UNIT: usize = 1024;

/// A reload request from `/-/reload`: answered with `Err(reason)` when the new configuration
/// was refused (the old one stays in force).
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Shared state of all handlers.
pub struct AppState {
    /// Replaced as a whole by a reload; each request works with the one it started with.
    cfg: parking_lot::RwLock<Arc<ServerConfig>>,
    db: Arc<OnceLock<Arc<Db>>>,
    metrics: MetricsRegistry,
    quit: OnceLock<Arc<tokio::sync::watch::Sender<bool>>>,
    reload: OnceLock<tokio::sync::mpsc::Sender<ReloadRequest>>,
    read_slots: Arc<Semaphore>,
    write_budget: Arc<Semaphore>,
    write_budget_units: usize,
}

impl AppState {
    pub fn new(cfg: ServerConfig) -> Arc<AppState> {
        // The largest request allowed must fit on its own.
        let units = cfg
            .write_inflight_bytes
            .max(2 * cfg.body.max_decoded_bytes + cfg.body.max_body_bytes)
            .div_ceil(BUDGET_UNIT)
            .min(Semaphore::MAX_PERMITS);
        let db = Arc::new(OnceLock::new());
        Arc::new(AppState {
            metrics: MetricsRegistry::new(Arc::clone(&db)),
            read_slots: Arc::new(Semaphore::new(cfg.read_concurrent_limit.max(1))),
            write_budget: Arc::new(Semaphore::new(units)),
            write_budget_units: units,
            cfg: parking_lot::RwLock::new(Arc::new(cfg)),
            db,
            quit: OnceLock::new(),
            reload: OnceLock::new(),
        })
    }

    /// The settings in force.
    pub fn cfg(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.cfg.read())
    }

    /// Put reloaded settings in force for requests that start from now on. The caller keeps
    /// what cannot change while serving (sizes of semaphores, listener limits).
    pub fn set_cfg(&self, cfg: ServerConfig) {
        *self.cfg.write() = Arc::new(cfg);
    }

    /// Where `/-/reload` sends its request (answered with the outcome).
    pub fn set_reload(&self, tx: tokio::sync::mpsc::Sender<ReloadRequest>) {
        let _ = self.reload.set(tx);
    }

    /// Hand over the recovered data directory: `/-/ready` turns 200, data routes open.
    pub fn set_ready(&self, db: Arc<Db>) {
        let _ = self.db.set(db);
    }

    /// Where `/-/quit` sends its request to stop (the same channel the signal handler uses).
    pub fn set_quit(&self, tx: Arc<tokio::sync::watch::Sender<bool>>) {
        let _ = self.quit.set(tx);
    }

    pub fn db(&self) -> Option<&Arc<Db>> {
        self.db.get()
    }

    /// The remote-write memory budget (exposed for overload tests).
    pub fn write_budget(&self) -> &Semaphore {
        &self.write_budget
    }

    /// Take `bytes` of the remote-write budget, waiting at most the queue timeout.
    async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let units = bytes
            .div_ceil(BUDGET_UNIT)
            .clamp(1, self.write_budget_units) as u32;
        tokio::time::timeout(
            self.cfg().write_queue_timeout,
            Arc::clone(&self.write_budget).acquire_many_owned(units),
        )
        .await
        .map_err(|_| ApiError::Overloaded)?
        .map_err(|_| ApiError::NotReady)
    }

    fn ready_db(&self) -> Result<Arc<Db>, ApiError> {
        self.db.get().cloned().ok_or(ApiError::NotReady)
    }
}

/// The router with every route (behind basic auth when a web config is set).
pub fn router(state: Arc<AppState>) -> Router {
    let r = Router::new()
        .route("/api/v1/write", post(remote_write))
        .route("/api/v1/read", post(remote_read))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/-/quit", post(quit).put(quit))
        .route("/-/reload", post(reload).put(reload))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(admin::delete_series).put(admin::delete_series),
        )
        .route(
            "/api/v1/admin/tsdb/clean_tombstones",
            post(admin::clean_tombstones).put(admin::clean_tombstones),
        )
        .route(
            "/api/v1/admin/tsdb/snapshot",
            post(admin::snapshot).put(admin::snapshot),
        );
    // As in Prometheus, every route (health, readiness and unknown paths included) needs
    // credentials once `basic_auth_users` is set. The layer is there whenever a web config
    // is, since a reload may add users.
    let r = match &state.cfg().web {
        Some(w) => r.layer(axum::middleware::from_fn_with_state(
            Arc::clone(w),
            basic_auth,
        )),
        None => r,
    };
    r.with_state(state)
}

/// Basic auth from the `Authorization` header alone: a refused request is answered before
/// its body is read (hyper then closes the connection instead of draining the body).
async fn basic_auth(
    State(web): State<Arc<web::WebConfig>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(auth) = web.basic_auth() else {
        return next.run(req).await;
    };
    let ok = match basic_credentials(req.headers()) {
        Some((user, password)) => auth.verify(&user, &password).await,
        None => false,
    };
    if ok {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// `Authorization: Basic base64(user:password)`.
fn basic_credentials(h: &HeaderMap) -> Option<(String, Vec<u8>)> {
    use base64::Engine;
    let v = h.get(axum::http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = raw.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

/// Serve on `listener` until `shutdown` completes, then finish in-flight requests. HTTPS
/// when the web config has TLS; a web config is re-read every
/// [`web::WebConfig::reload_interval`] while serving.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let web = state.cfg().web.clone();
    let reloader = web
        .as_ref()
        .map(|w| tokio::spawn(Arc::clone(w).reload_loop()));
    let limits = conn::Limits {
        read_timeout: state.cfg().read_timeout,
        max_connections: state.cfg().max_connections,
    };
    let app = router(state);
    let tls = web.filter(|w| w.tls_enabled());
    let res = conn::serve(listener, app, tls, limits, shutdown).await;
    if let Some(r) = reloader {
        r.abort();
    }
    res
}

async fn healthy() -> &'static str {
    "cairn is Healthy.\n"
}

/// OpenMetrics for clients that accept it (Prometheus does), the classic text format otherwise.
async fn metrics(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let om = match st.metrics.encode() {
        Ok(text) => text,
        Err(e) => return ApiError::Internal(format!("encoding metrics: {e}")).into_response(),
    };
    let wants_om =
        header(&headers, ACCEPT).is_some_and(|a| a.contains("application/openmetrics-text"));
    let (ct, body) = if wants_om {
        (crate::metrics::CONTENT_TYPE, om)
    } else {
        (
            crate::metrics::TEXT_CONTENT_TYPE,
            crate::metrics::to_text_format(&om),
        )
    };
    ([(CONTENT_TYPE, HeaderValue::from_static(ct))], body).into_response()
}

/// Graceful stop, as SIGTERM, when `--web.enable-lifecycle` is set.
async fn quit(State(st): State<Arc<AppState>>) -> Response {
    if !st.cfg().enable_lifecycle {
        return (
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled (start cairn with --web.enable-lifecycle).\n",
        )
            .into_response();
    }
    match st.quit.get() {
        Some(tx) => {
            crate::log_info!("stop requested through /-/quit");
            let _ = tx.send(true);
            (StatusCode::OK, "Requesting termination... Goodbye!\n").into_response()
        }
        None => ApiError::Internal("no shutdown channel".into()).into_response(),
    }
}

/// Re-read the configuration (as SIGHUP), when `--web.enable-lifecycle` is set: 200 when the
/// new configuration is in force, 500 with the reason when it was refused.
async fn reload(State(st): State<Arc<AppState>>) -> Response {
    if !st.cfg().enable_lifecycle {
        return (
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled (start cairn with --web.enable-lifecycle).\n",
        )
            .into_response();
    }
    let Some(tx) = st.reload.get() else {
        return ApiError::Internal("no reload channel".into()).into_response();
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    if tx.send(done_tx).await.is_err() {
        return ApiError::Internal("reload handler is gone".into()).into_response();
    }
    match done_rx.await {
        Ok(Ok(())) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
        Err(_) => ApiError::Internal("reload was not answered".into()).into_response(),
    }
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match st.db() {
        Some(_) => (StatusCode::OK, "cairn is Ready.\n").into_response(),
        None => ApiError::NotReady.into_response(),
    }
}

/// Send `item` from a blocking-pool thread, waiting at most `limit` for room; `false` when
/// the receiver is gone or took nothing for that long.
fn send_within<T>(tx: &mpsc::Sender<T>, item: T, limit: std::time::Duration) -> bool {
    // Blocking-pool threads may block on the runtime (tokio documents `Handle::block_on` for
    // them); the wait itself is the same as `blocking_send`'s, with a deadline.
    match tokio::runtime::Handle::try_current() {
        Ok(h) => match h.block_on(tokio::time::timeout(limit, tx.send(item))) {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                crate::log_warn!(
                    "streamed remote read abandoned: the client took nothing",
                    waited = format!("{limit:?}")
                );
                false
            }
        },
        Err(_) => tx.blocking_send(item).is_ok(),
    }
}

fn header(h: &HeaderMap, name: axum::http::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header(h, CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok())
}

/// Read a body of at most `limit` bytes; a declared `Content-Length` over it is refused before
/// reading a byte.
async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    if content_length(req.headers()).is_some_and(|len| len > limit as u64) {
        return Err(ApiError::Body(BodyError::TooLarge { limit }));
    }
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::Body(BodyError::TooLarge { limit }))
        }
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}

async fn remote_write(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let start = Instant::now();
    let m = &st.metrics.m;
    let resp = match remote_write_inner(&st, req).await {
        Ok(summary) => {
            m.write_samples.inc_by(summary.samples + summary.duplicates);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            if let ApiError::Write(WriteError::Rejected(r)) = &e {
                m.write_samples.inc_by(r.stored);
                m.rejected(r);
            }
            e.into_response()
        }
    };
    m.write_requests
        .get_or_create(&CodeLabel {
            code: resp.status().as_u16(),
        })
        .inc();
    m.write_duration.observe(start.elapsed().as_secs_f64());
    resp
}

async fn remote_write_inner(st: &Arc<AppState>, req: Request) -> Result<WriteSummary, ApiError> {
    let db = st.ready_db()?;
    write::check_headers(
        header(req.headers(), CONTENT_TYPE),
        header(req.headers(), CONTENT_ENCODING),
    )
    .map_err(ApiError::Write)?;
    let limits = st.cfg().body;
    // Reserve the body's share of the in-flight budget before reading it (the declared length,
    // or the cap when none is declared), then the decoded request's share before decoding it.
    let declared = content_length(req.headers());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(ApiError::Body(BodyError::TooLarge {
            limit: limits.max_body_bytes,
        }));
    }
    let mut permit = st
        .reserve(declared.map_or(limits.max_body_bytes, |n| n as usize))
        .await?;
    let body = read_body(req, limits.max_body_bytes).await?;
    st.metrics.m.write_bytes.inc_by(body.len() as u64);
    // The decoded buffer plus the decoder's index of labels and samples: about twice the
    // decoded size for realistic requests.
    let claimed = remote::claimed_len(&body).unwrap_or(0);
    let decoded = claimed.min(limits.max_decoded_bytes as u64) as usize;
    permit.merge(st.reserve(2 * decoded).await?);

    // The permit moves into the task: if the client goes away, the work (and its memory)
    // still counts until it is done.
    let labels = st.cfg().labels;
    let res = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let buf = remote::decompress(&body, &limits)?;
        drop(body);
        let batch = write::decode(&buf)?;
        write::store(&db, &batch, &labels)
    })
    .await;
    match res {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(e)) => Err(ApiError::Write(e)),
        Err(join) => Err(ApiError::Internal(format!("write task failed: {join}"))),
    }
}

async fn remote_read(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let start = Instant::now();
    let mut kind = "unknown";
    let resp = match remote_read_inner(&st, req, &mut kind, start).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let m = &st.metrics.m;
    m.read_requests
        .get_or_create(&ReadLabels {
            r#type: kind,
            code: resp.status().as_u16(),
        })
        .inc();
    // A streamed response is timed by its producer, when the last frame is out.
    if kind != STREAMED || !resp.status().is_success() {
        m.read_duration
            .get_or_create(&TypeLabel { r#type: kind })
            .observe(start.elapsed().as_secs_f64());
    }
    resp
}

const STREAMED: &str = "streamed_xor_chunks";

async fn remote_read_inner(
    st: &Arc<AppState>,
    req: Request,
    kind: &mut &'static str,
    start: Instant,
) -> Result<Response, ApiError> {
    let db = st.ready_db()?;
    if let Some(enc) = header(req.headers(), CONTENT_ENCODING) {
        if !enc.trim().is_empty() && !enc.trim().eq_ignore_ascii_case("snappy") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "unsupported Content-Encoding {enc:?}: remote read bodies are snappy-compressed"
            )));
        }
    }
    let limits = st.cfg().body;
    let body = read_body(req, limits.max_body_bytes).await?;
    // Wait for a slot; it is held until the response is complete (streamed ones included).
    let slot = Arc::clone(&st.read_slots)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::NotReady)?;

    let request = tokio::task::spawn_blocking(move || {
        let buf = remote::decompress(&body, &limits)?;
        read::decode_request(&buf)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))?
    .map_err(ApiError::Read)?;

    let m = Arc::clone(&st.metrics.m);
    match request.response_type {
        ResponseType::Samples => {
            *kind = "samples";
            let limit = st.cfg().read_sample_limit;
            let body = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                let (raw, stats) = read::samples_response(&db, &request, limit)?;
                m.read_series.inc_by(stats.series);
                m.read_samples.inc_by(stats.samples);
                snap::raw::Encoder::new()
                    .compress_vec(&raw)
                    .map_err(|e| read::ReadError::Storage(format!("snappy: {e}")))
            })
            .await
            .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))?
            .map_err(ApiError::Read)?;
            Ok((
                [
                    (
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-protobuf"),
                    ),
                    (CONTENT_ENCODING, HeaderValue::from_static("snappy")),
                ],
                body,
            )
                .into_response())
        }
        ResponseType::StreamedXorChunks => {
            *kind = STREAMED;
            let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(STREAM_QUEUE);
            let max_frame = st.cfg().read_max_bytes_in_frame;
            // A client that takes nothing for this long is given up on: the query holds a
            // read slot and keeps compaction from truncating the head while it runs.
            let stall = st.cfg().read_timeout;
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                let mut emit = |buf: Vec<u8>| send_within(&tx, Ok(Bytes::from(buf)), stall);
                match read::stream_chunks(&db, &request, max_frame, STREAM_FLUSH_BYTES, &mut emit) {
                    Ok(stats) => {
                        m.read_series.inc_by(stats.series);
                        m.read_chunks.inc_by(stats.chunks);
                    }
                    Err(e) => {
                        // Headers are gone already: abort the body so the client sees a broken
                        // stream rather than a short, valid-looking one.
                        crate::log_error!("streamed remote read failed", err = e);
                        let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                    }
                }
                m.read_duration
                    .get_or_create(&TypeLabel { r#type: STREAMED })
                    .observe(start.elapsed().as_secs_f64());
            });
            Ok((
                [(
                    CONTENT_TYPE,
                    HeaderValue::from_static(STREAMED_CONTENT_TYPE),
                )],
                Body::new(ChannelBody { rx }),
            )
                .into_response())
        }
    }
}

/// An HTTP body fed by a channel: the producer blocks when the client reads slowly.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}
