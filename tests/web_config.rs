//! `--web.config.file`: TLS (with client certificates), basic auth answered before the body is
//! read, reload of a changed file, and refusal of bad files — against an in-process server
//! over real sockets, with a PKI generated in the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::server::web::WebConfig;
use cairn::server::ServerConfig;
use cairn::tsdb::head::now_ms;
use cairn::tsdb::wal::SyncPolicy;
use cairn::tsdb::Options;
use common::http::{self, Response};
use common::proto::{self, WriteRequest};
use common::server::{write_headers, TestServer};
use common::tls::{basic, client_config, https, Pki};

const RELOAD: Duration = Duration::from_millis(100);

fn hash(password: &str) -> String {
    // Cost 4 keeps the tests fast; `$2y$` is what htpasswd writes.
    bcrypt::hash_with_result(password, 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

/// Write the PKI's files and `yaml` into `dir`; returns the config path.
fn write_config(dir: &Path, pki: &Pki, yaml: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("ca.crt"), &pki.ca.cert).unwrap();
    std::fs::write(dir.join("server.crt"), &pki.server.cert).unwrap();
    std::fs::write(dir.join("server.key"), &pki.server.key).unwrap();
    let path = dir.join("web.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn start(web: &Path) -> TestServer {
    start_with_handle(web).0
}

fn start_with_handle(web: &Path) -> (TestServer, Arc<WebConfig>) {
    let web = Arc::new(WebConfig::load(web).unwrap().with_reload_interval(RELOAD));
    let cfg = ServerConfig {
        web: Some(Arc::clone(&web)),
        ..ServerConfig::default()
    };
    let mut opts = Options::default();
    opts.wal.sync = SyncPolicy::Never;
    (TestServer::start_with(cfg, opts), web)
}

fn write_body() -> Vec<u8> {
    proto::encode_write(&WriteRequest {
        timeseries: vec![proto::series(
            &[("__name__", "up"), ("job", "tls")],
            &[(now_ms(), 1.0)],
        )],
        ..WriteRequest::default()
    })
}

fn remote_write_https(
    srv: &TestServer,
    cfg: &Arc<rustls::ClientConfig>,
    auth: Option<&str>,
) -> Response {
    let mut h = write_headers();
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    https(&srv.addr, cfg, "POST", "/api/v1/write", &h, &write_body()).unwrap()
}

#[test]
fn https_with_required_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cairn test CA");
    let path = write_config(
        dir.path(),
        &pki,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
    );
    let srv = start(&path);

    // The right client certificate: HTTPS works, a remote write is stored.
    let good = client_config(&pki.ca.cert, Some(&pki.client));
    let r = https(&srv.addr, &good, "GET", "/-/healthy", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(remote_write_https(&srv, &good, None).status, 204);
    assert_eq!(srv.db.head().num_series(), 1);

    // No client certificate, or one from another CA: the handshake fails, nothing is served.
    let none = client_config(&pki.ca.cert, None);
    let e = https(&srv.addr, &none, "GET", "/-/healthy", &[], b"").unwrap_err();
    assert!(e.to_string().contains("Certificate"), "{e}");
    let stranger = Pki::new("another CA");
    let other = client_config(&pki.ca.cert, Some(&stranger.client));
    let e = https(&srv.addr, &other, "GET", "/-/healthy", &[], b"").unwrap_err();
    assert!(e.to_string().to_lowercase().contains("ca"), "{e}");

    // A client that does not trust the server's CA refuses it.
    let distrust = client_config(&stranger.ca.cert, Some(&pki.client));
    assert!(https(&srv.addr, &distrust, "GET", "/-/healthy", &[], b"").is_err());

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut c = srv.client();
    c.set_timeout(Duration::from_secs(5));
    assert!(c.get("/-/healthy").is_err());
}

#[test]
fn tls13_minimum_and_optional_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cairn test CA");
    let path = write_config(
        dir.path(),
        &pki,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_ca_file: ca.crt\n  client_auth_type: VerifyClientCertIfGiven\n  min_version: TLS13\n",
    );
    let srv = start(&path);
    for client in [None, Some(&pki.client)] {
        let cfg = client_config(&pki.ca.cert, client);
        let r = https(&srv.addr, &cfg, "GET", "/-/ready", &[], b"").unwrap();
        assert_eq!(r.status, 200);
    }
    // A TLS 1.2-only client is refused.
    let tls12 = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates({
            let mut roots = rustls::RootCertStore::empty();
            use rustls::pki_types::pem::PemObject;
            roots
                .add(
                    rustls::pki_types::CertificateDer::from_pem_slice(pki.ca.cert.as_bytes())
                        .unwrap(),
                )
                .unwrap();
            roots
        })
        .with_no_client_auth(),
    );
    assert!(https(&srv.addr, &tls12, "GET", "/-/ready", &[], b"").is_err());
}

#[test]
fn basic_auth_over_tls_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cairn test CA");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let path = write_config(
        dir.path(),
        &pki,
        &format!("{tls}basic_auth_users:\n  alice: {}\n", hash("old-secret")),
    );
    let (srv, web) = start_with_handle(&path);
    let cfg = client_config(&pki.ca.cert, None);

    // Missing credentials: 401 with the challenge, on every route.
    for (method, route) in [
        ("GET", "/-/healthy"),
        ("GET", "/-/ready"),
        ("GET", "/metrics"),
        ("GET", "/nope"),
    ] {
        let r = https(&srv.addr, &cfg, method, route, &[], b"").unwrap();
        assert_eq!(r.status, 401, "{route}");
        assert_eq!(r.header("WWW-Authenticate"), Some("Basic realm=\"cairn\""));
    }
    let r = remote_write_https(&srv, &cfg, None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("WWW-Authenticate"), Some("Basic realm=\"cairn\""));
    // Wrong password, unknown user, garbage header: 401.
    for auth in [
        basic("alice", "wrong"),
        basic("mallory", "old-secret"),
        "Basic !!!".to_string(),
        "Bearer x".to_string(),
    ] {
        assert_eq!(
            remote_write_https(&srv, &cfg, Some(&auth)).status,
            401,
            "{auth}"
        );
    }
    assert_eq!(srv.db.head().num_series(), 0);
    // Right password: a real remote write is stored (twice: the second hits the cache).
    let old = basic("alice", "old-secret");
    for _ in 0..2 {
        assert_eq!(remote_write_https(&srv, &cfg, Some(&old)).status, 204);
    }
    assert_eq!(srv.db.head().num_series(), 1);

    // A changed password takes effect without a restart.
    std::fs::write(
        &path,
        format!("{tls}basic_auth_users:\n  alice: {}\n", hash("new-secret")),
    )
    .unwrap();
    let new = basic("alice", "new-secret");
    let deadline = Instant::now() + Duration::from_secs(10);
    while remote_write_https(&srv, &cfg, Some(&old)).status != 401 {
        assert!(
            Instant::now() < deadline,
            "the new password was not picked up"
        );
        std::thread::sleep(RELOAD);
    }
    assert_eq!(remote_write_https(&srv, &cfg, Some(&new)).status, 204);

    // A broken new file is refused (with the file and key named) and the old config stays.
    std::fs::write(
        &path,
        format!("{tls}basic_auth_users:\n  alice: notahash\n"),
    )
    .unwrap();
    let e = web.reload_if_changed().unwrap_err();
    assert!(
        e.contains("web.yml") && e.contains("basic_auth_users.alice"),
        "{e}"
    );
    std::thread::sleep(RELOAD * 3);
    assert_eq!(remote_write_https(&srv, &cfg, Some(&new)).status, 204);
    assert_eq!(remote_write_https(&srv, &cfg, Some(&old)).status, 401);
    // Removing TLS needs a restart: refused as well.
    std::fs::write(&path, "basic_auth_users: {}\n").unwrap();
    let e = web.reload_if_changed().unwrap_err();
    assert!(e.contains("restart"), "{e}");
    assert_eq!(remote_write_https(&srv, &cfg, Some(&new)).status, 204);
}

/// A refused request is answered from its headers: a declared 32 MiB body that never comes
/// does not delay the 401.
#[test]
fn unauthorized_requests_are_answered_before_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(
        &path,
        format!("basic_auth_users:\n  alice: {}\n", hash("pw")),
    )
    .unwrap();
    let srv = start(&path);

    let wrong = basic("alice", "nope");
    let len = (32u32 << 20).to_string();
    let mut h = write_headers();
    h.push(("Content-Length", &len));
    h.push(("Authorization", &wrong));
    let mut c = srv.client();
    c.set_timeout(Duration::from_secs(5));
    let t = Instant::now();
    let r = c.post("/api/v1/write", &h, b"").unwrap();
    assert_eq!(r.status, 401);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(r.header("WWW-Authenticate"), Some("Basic realm=\"cairn\""));

    // The same over a raw socket with no credentials at all.
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\
         Content-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\n\r\n"
    )
    .unwrap();
    let r = http::read_response_from(&mut BufReader::new(s), "POST").unwrap();
    assert_eq!(r.status, 401);

    // Plain HTTP with basic auth works with the right password.
    let mut h = write_headers();
    let ok = basic("alice", "pw");
    h.push(("Authorization", &ok));
    let r = srv
        .client()
        .post("/api/v1/write", &h, &write_body())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
}

#[test]
fn bad_web_config_files_are_rejected_with_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cairn test CA");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let cases: Vec<(String, &str)> = vec![
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suitez: []\n".into(), "cipher_suitez"),
        ("basic_auth_user:\n  a: b\n".into(), "basic_auth_user"),
        ("tls_server_config:\n  cert_file: server.crt\n".into(), "key_file"),
        (format!("{tls}  client_auth_type: Sometimes\n"), "client_auth_type"),
        (format!("{tls}  min_version: TLS10\n"), "min_version"),
        (format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"), "client_ca_file"),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".into(), "missing.crt"),
        ("tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n".into(), "cert_file"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: ca.crt\n".into(), "key_file"),
        ("basic_auth_users:\n  bob: plaintext\n".into(), "basic_auth_users.bob"),
        ("basic_auth_users: [1, 2]\n".into(), "basic_auth_users"),
    ];
    for (yaml, key) in &cases {
        let path = write_config(dir.path(), &pki, yaml);
        let e = WebConfig::load(&path).unwrap_err();
        assert!(e.contains("web.yml") && e.contains(key), "{yaml}\n=> {e}");
    }
    // Empty and auth-only files are fine.
    for yaml in ["", "basic_auth_users: {}\n"] {
        let path = write_config(dir.path(), &pki, yaml);
        assert!(!WebConfig::load(&path).unwrap().tls_enabled());
    }

    // The binary: exit 2 with the message, before touching the data directory.
    let path = write_config(dir.path(), &pki, "tls_server_config:\n  nope: 1\n");
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg(format!("--web.config.file={}", path.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("web.yml") && err.contains("nope"), "{err}");
    assert!(!data.exists());
}

/// Shutdown over TLS: no new connections, an idle keep-alive connection does not hold it up,
/// and a request in flight (half its body sent) still completes before `serve` returns.
#[test]
fn tls_shutdown_drains_in_flight_requests() {
    use cairn::server::{self, AppState};
    use cairn::tsdb::Db;

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cairn test CA");
    let path = write_config(
        dir.path(),
        &pki,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    );
    let mut opts = Options::default();
    opts.wal.sync = SyncPolicy::Never;
    let db = Arc::new(Db::open(dir.path().join("data"), opts).unwrap());
    let state = AppState::new(ServerConfig {
        web: Some(Arc::new(WebConfig::load(&path).unwrap())),
        ..ServerConfig::default()
    });
    state.set_ready(Arc::clone(&db));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = rt.spawn(server::serve(listener, Arc::clone(&state), async move {
        let _ = rx.await;
    }));

    let cfg = client_config(&pki.ca.cert, None);
    let connect = || {
        let tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::clone(&cfg), name).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    };
    // An idle keep-alive connection, after one request.
    let mut idle = connect();
    write!(idle, "GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    idle.flush().unwrap();
    let mut idle = BufReader::new(idle);
    assert_eq!(
        http::read_response_from(&mut idle, "GET").unwrap().status,
        200
    );

    // A remote write with half its body sent.
    let body = write_body();
    let (first, rest) = body.split_at(body.len() / 2);
    let free = state.write_budget().available_permits();
    let mut busy = connect();
    write!(
        busy,
        "POST /api/v1/write HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\
         Content-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\n\r\n",
        body.len()
    )
    .unwrap();
    busy.write_all(first).unwrap();
    busy.flush().unwrap();
    // In flight once its handler took the body's share of the write budget (before reading
    // the body).
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.write_budget().available_permits() == free {
        assert!(
            Instant::now() < deadline,
            "the write never reached its handler"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    tx.send(()).unwrap();
    // Shutdown has begun once new connections are refused (the listener is gone) ...
    let deadline = Instant::now() + Duration::from_secs(10);
    while https(&addr, &cfg, "GET", "/-/healthy", &[], b"").is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting after the shutdown signal"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // ... and serve waits for the request in flight.
    assert!(
        !served.is_finished(),
        "serve returned with a request in flight"
    );
    // The idle connection was closed.
    let mut line = String::new();
    use std::io::BufRead;
    assert_eq!(idle.read_line(&mut line).unwrap_or(0), 0, "{line}");

    // The in-flight request completes, then serve returns.
    busy.write_all(rest).unwrap();
    busy.flush().unwrap();
    let r = http::read_response_from(&mut BufReader::new(busy), "POST").unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(db.head().num_series(), 1);
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("serve did not return after the last request")
            .unwrap()
            .unwrap();
    });
    db.close().unwrap();
}

peer_tests!(prometheus_remote_writes_over_tls_with_basic_auth);

/// The real Prometheus (2.42 and 3.x) remote-writes to cairn over TLS (its CA in
/// `tls_config.ca_file`) with basic auth.
fn prometheus_remote_writes_over_tls_with_basic_auth(peer: common::peer::Peer) {
    use common::procs::{free_port, start_prometheus, write_prometheus_yml, PromConfig};

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cairn test CA");
    let path = write_config(
        dir.path(),
        &pki,
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: {}\n",
            hash("s3cret")
        ),
    );
    let srv = start(&path);
    let port = free_port();
    let ca = dir.path().join("ca.crt");
    let cfg = PromConfig {
        scrape_interval: Some("1s".into()),
        scrape_targets: vec![("prometheus".into(), format!("127.0.0.1:{port}"))],
        remote_write: vec![format!(
            "- url: https://{}/api/v1/write\n  \
               basic_auth:\n    username: prometheus\n    password: s3cret\n  \
               tls_config:\n    ca_file: {}\n  \
               queue_config:\n    batch_send_deadline: 1s\n    min_backoff: 50ms\n    max_backoff: 1s",
            srv.addr,
            ca.display()
        )],
        remote_read: vec![],
    };
    let yml = write_prometheus_yml(peer, dir.path(), "prometheus.yml", &cfg.to_yaml());
    let mut prom = start_prometheus(
        peer,
        "prometheus",
        &yml,
        &dir.path().join("prom-data"),
        port,
        &[],
        dir.path(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = cairn::model::Matcher::new(cairn::model::MatchType::Equal, "__name__", "up").unwrap();
    loop {
        let n = srv
            .db
            .select(std::slice::from_ref(&up), i64::MIN, i64::MAX)
            .unwrap()
            .len();
        if n > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no `up` series from {peer} over TLS + basic auth:\n{}",
            prom.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = prom.kill_term(Duration::from_secs(10));
}
