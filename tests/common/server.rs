//! An in-process cairn server on a loopback port, for protocol tests over a real socket.

use std::sync::Arc;

use cairn::server::{self, AppState, ServerConfig};
use cairn::tsdb::wal::SyncPolicy;
use cairn::tsdb::{Db, Options};
use tempfile::TempDir;

use super::http::{Client, Response};
use super::proto;

pub struct TestServer {
    pub addr: String,
    pub state: Arc<AppState>,
    pub db: Arc<Db>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
    pub dir: TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        let mut opts = Options::default();
        opts.wal.sync = SyncPolicy::Never;
        Self::start_with(ServerConfig::default(), opts)
    }

    pub fn start_with(cfg: ServerConfig, opts: Options) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), opts).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = AppState::new(cfg);
        state.set_ready(Arc::clone(&db));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(server::serve(listener, Arc::clone(&state), async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            state,
            db,
            shutdown: Some(tx),
            rt: Some(rt),
            dir,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr.clone())
    }

    /// POST an already encoded (snappy) remote-write body with Prometheus's headers.
    pub fn write_raw(&self, body: &[u8]) -> Response {
        self.client()
            .post("/api/v1/write", &write_headers(), body)
            .unwrap()
    }

    pub fn write(&self, req: &proto::WriteRequest) -> Response {
        self.write_raw(&proto::encode_write(req))
    }

    pub fn read_raw(&self, body: &[u8]) -> Response {
        self.client()
            .post("/api/v1/read", &read_headers(), body)
            .unwrap()
    }

    pub fn read(&self, req: &proto::ReadRequest) -> Response {
        self.read_raw(&proto::encode_read(req))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

pub fn write_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("User-Agent", "Prometheus/2.42.0"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ]
}

pub fn read_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Content-Encoding", "snappy"),
        ("Accept-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Read-Version", "0.1.0"),
    ]
}
