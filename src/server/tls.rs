//! The HTTPS accept loop: TLS handshakes run in each connection's own task (a slow or
//! silent client never holds up `accept`), and every connection is served by hyper's HTTP/1
//! builder with the axum router.
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

pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    web: Arc<WebConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    crate::log_info!(
        "serving HTTPS",
        web_config = web.path().display(),
        basic_auth = web.basic_auth().is_some()
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` answers `None` once all are gone.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
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
        // The config of this moment: a reload applies to the next connection.
        let Some(cfg) = web.tls_config() else {
            continue;
        };
        let acceptor = TlsAcceptor::from(cfg);
        let app = app.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let _done = done;
            let _ = tcp.set_nodelay(true);
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
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopped(stop) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}
