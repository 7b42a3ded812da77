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
//!
//! A lingering close, as Apache's and nginx's `lingering_close`: some requests are answered
//! before their body is read (413 for a declared body over the cap, 401 without valid
//! credentials), and hyper then ends the connection while the client is still sending. Closing
//! a socket with unread incoming data makes Linux answer with a TCP RST, which can overtake
//! the response: the client sees "connection reset" instead of the status, and a remote-write
//! sender retries the same request forever. So when hyper is done with a connection we take
//! the IO back (`poll_without_shutdown` + `into_parts`), shut its write half down (the whole
//! response, then FIN; `close_notify` under TLS), and read and discard what the client still
//! sends until EOF — bounded by [`LINGER_TIME`] in all, [`LINGER_IDLE`] without a byte and
//! [`LINGER_BYTES`] — before dropping it. A client that already closed costs one read that
//! sees EOF. The connection keeps its slot meanwhile (the limit is one of open sockets). Once
//! shutdown begins the linger is cut short after what is already readable, so the drain
//! stays bounded; a connection that ends in an error (reset, header timeout) is dropped at once.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::web::WebConfig;

/// A client must finish the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest lingering close (see the module docs): after the response, what the client still
/// sends is read and discarded for at most this long in all (Apache's fixed 30 s
/// `MAX_SECS_TO_LINGER`, nginx's `lingering_time`, default 30 s). Ten seconds drains a 40 MiB
/// body sent at 35 Mbit/s or faster, and bounds how long a slow or hostile client keeps a
/// connection slot after its answer.
const LINGER_TIME: Duration = Duration::from_secs(10);
/// The lingering read ends after this long without a byte (nginx's `lingering_timeout`,
/// default 5 s; Apache's 2 s `SECONDS_TO_LINGER`): a client that stopped sending but keeps the
/// socket open has had its response and FIN; nothing is left to protect.
const LINGER_IDLE: Duration = Duration::from_secs(2);
/// The lingering read ends after this many bytes (what hyper had read but not used included):
/// twice the default 32 MiB body cap, so a body of up to 64 MiB sent against that cap (40 MiB
/// is the usual case) is drained and its sender gets the 413, while a client streaming without
/// end cannot keep the server reading.
const LINGER_BYTES: usize = 64 << 20;
/// Buffer of the lingering read.
const LINGER_BUF: usize = 64 << 10;

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

/// Serve one connection with hyper's HTTP/1 until it ends or `stop` turns true (then shut it
/// down gracefully), then close it lingering (see the module docs).
async fn serve_conn<I>(io: I, app: Router, stop: watch::Receiver<bool>, limits: Limits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    // `poll_without_shutdown`, not the `Connection` future: that one shuts the IO down and
    // drops it, which is the early close this module avoids.
    let finished = tokio::select! {
        r = poll_fn(|cx| conn.poll_without_shutdown(cx)) => Some(r),
        _ = stopped(stop.clone()) => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            Pin::new(&mut conn).graceful_shutdown();
            poll_fn(|cx| conn.poll_without_shutdown(cx)).await
        }
    };
    if result.is_err() {
        // Reset by the client, header timeout, unparsable request: nothing to linger for.
        return;
    }
    let hyper::server::conn::http1::Parts { io, read_buf, .. } = conn.into_parts();
    linger(io.into_inner(), read_buf.len(), stop).await;
}

/// The lingering close: flush and shut down the write half, then read and discard until EOF,
/// an error, [`LINGER_IDLE`] without a byte, [`LINGER_BYTES`] read (`already` counted) or
/// [`LINGER_TIME`] in all. Once `stop` is true it ends after what is readable at once.
async fn linger<I>(mut io: I, already: usize, stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async {
        if io.flush().await.is_err() || io.shutdown().await.is_err() {
            return;
        }
        let mut left = LINGER_BYTES.saturating_sub(already);
        let mut buf = vec![0u8; LINGER_BUF];
        while left > 0 {
            match tokio::time::timeout(LINGER_IDLE, io.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                // EOF, an error, or idle too long.
                _ => return,
            }
        }
    };
    tokio::select! {
        // The drain is polled first: after `stop` it still sends FIN (and close_notify) and
        // takes what is already buffered, then gives way.
        biased;
        _ = tokio::time::timeout(LINGER_TIME, drain) => {}
        _ = stopped(stop) => {}
    }
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
