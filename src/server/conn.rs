//! The accept loop, for HTTP and HTTPS: at most `--web.max-connections` connections at once
//! (`accept` waits for a free slot, as Prometheus's limit listener does), TLS handshakes in
//! each connection's own task (a slow or silent client never holds up `accept`), every
//! connection served by hyper's HTTP/1 builder with the axum router and a header-read timeout
//! (`--web.read-timeout`, which also closes idle keep-alive connections).
//!
//! Graceful shutdown as `axum::serve` does it: when `shutdown` completes the listener is
//! dropped (no new connections), unfinished handshakes are dropped, every served connection
//! gets hyper's `graceful_shutdown` (idle keep-alive connections close at once, in-flight
//! requests finish and the connection closes after the response), and `serve` returns once
//! the last connection task is done. The caller bounds that wait (`main`'s grace period).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::web::WebConfig;

/// A client must finish the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|&s| s).await;
}

/// Connection limits (`--web.read-timeout`, `--web.max-connections`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Longest wait for a request's headers, idle keep-alive time included.
    pub read_timeout: Duration,
    /// Connections served at once; `accept` waits beyond it (Prometheus's LimitListener).
    pub max_connections: usize,
}

/// Serve one connection with hyper's HTTP/1 until it ends or `stop` turns true, then shut it
/// down gracefully.
async fn serve_conn<I>(io: I, app: Router, stop: watch::Receiver<bool>, limits: Limits)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped(stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Accept and serve connections until `shutdown` completes (see the module docs); HTTPS when
/// `tls` is given (its TLS config is read per connection, so a reload applies to the next).
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<WebConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    if let Some(web) = &tls {
        crate::log_info!(
            "serving HTTPS",
            web_config = web.path().display(),
            basic_auth = web.basic_auth().is_some()
        );
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` answers `None` once all are gone.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, then go on.
                    crate::log_warn!("accept failed", err = e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        let acceptor = match &tls {
            None => None,
            // The config of this moment: a reload applies to the next connection.
            Some(web) => match web.tls_config() {
                Some(cfg) => Some(TlsAcceptor::from(cfg)),
                None => continue,
            },
        };
        tokio::spawn(async move {
            let _done = done;
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let Some(acceptor) = acceptor else {
                serve_conn(tcp, app, stop, limits).await;
                return;
            };
            let tls = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        crate::log_debug!("TLS handshake failed", err = e);
                        return;
                    }
                    Err(_) => return,
                },
                _ = stopped(stop.clone()) => return,
            };
            serve_conn(tls, app, stop, limits).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}
