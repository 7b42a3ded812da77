//! Connection limits over a real socket: a client that never finishes its headers is cut off
//! after `--web.read-timeout`, and no more than `--web.max-connections` connections are served
//! at once (the next one waits until a slot frees).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cairn::server::ServerConfig;
use cairn::tsdb::wal::SyncPolicy;
use cairn::tsdb::Options;
use common::server::TestServer;

fn server(read_timeout: Duration, max_connections: usize) -> TestServer {
    let cfg = ServerConfig {
        read_timeout,
        max_connections,
        ..ServerConfig::default()
    };
    let mut opts = Options::default();
    opts.wal.sync = SyncPolicy::Never;
    TestServer::start_with(cfg, opts)
}

/// Read until EOF or `limit`; `Ok(bytes)` at EOF, `Err` on timeout.
fn read_to_eof(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, String> {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(e.to_string()),
        }
        if Instant::now() > deadline {
            return Err(format!(
                "still open after {limit:?}, read {} bytes",
                out.len()
            ));
        }
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let srv = server(Duration::from_millis(300), 16);
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.write_all(b"POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: applic")
        .unwrap();
    let start = Instant::now();
    let got = read_to_eof(&mut s, Duration::from_secs(5)).expect("connection must be closed");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    // Whatever hyper answers (nothing, or a 408), no request reached a handler.
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains(" 204 ") && !text.contains(" 400 "), "{text}");
    // A well-behaved client on another connection is served meanwhile and afterwards.
    let r = common::http::get(&srv.addr, "/-/healthy").unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let srv = server(Duration::from_secs(30), 2);
    // Two idle connections take both slots.
    let a = TcpStream::connect(&srv.addr).unwrap();
    let b = TcpStream::connect(&srv.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = TcpStream::connect(&srv.addr).unwrap();
    c.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Not served while the others hold the slots.
    assert!(
        read_to_eof(&mut c, Duration::from_millis(500)).is_err(),
        "served beyond the limit"
    );
    drop(a);
    let got = read_to_eof(&mut c, Duration::from_secs(5)).expect("served once a slot freed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(b);
}
