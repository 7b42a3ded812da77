//! Connection limits over a real socket: a client that never finishes its headers is cut off
//! after `--web.read-timeout`, and no more than `--web.max-connections` connections are served
//! at once (the next one waits until a slot frees). The lingering close: a response sent
//! before the body was read reaches a client that is still sending (no TCP reset), and the
//! linger after a response is bounded by its idle gap.
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

/// Poll `/metrics` until the sample `series` (name and labels, as exposed) reads `want`;
/// panics with the last value after `limit`.
fn wait_for_metric(addr: &str, series: &str, want: f64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let text = common::http::get(addr, "/metrics").unwrap().text();
        let got = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got:?}, not {want}, after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let srv = server(Duration::from_secs(30), 2);
    // Two idle keep-alive connections take both slots: each was served once, so each was
    // accepted and holds its slot.
    let mut a = srv.client();
    let mut b = srv.client();
    for conn in [&mut a, &mut b] {
        assert_eq!(conn.get("/-/healthy").unwrap().status, 200);
    }
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

#[test]
fn a_streamed_read_whose_client_takes_nothing_is_abandoned_after_the_read_timeout() {
    use cairn::tsdb::{AppendSeries, Sample};
    use common::proto::{LabelMatcher, MatchType, Query, ReadRequest, ResponseType};
    let cfg = ServerConfig {
        read_timeout: Duration::from_millis(500),
        read_concurrent_limit: 1,
        ..ServerConfig::default()
    };
    let mut opts = Options::default();
    opts.wal.sync = SyncPolicy::Never;
    let srv = TestServer::start_with(cfg, opts);
    // Enough data that the answer cannot fit in socket buffers and the producer's queue.
    let t0 = cairn::tsdb::head::now_ms() - 3_600_000;
    let ids: Vec<String> = (0..4000).map(|i| format!("{i:05}")).collect();
    for round in 0..50 {
        let samples: Vec<Vec<Sample>> = (0..ids.len())
            .map(|i| {
                (0..10)
                    .map(|k| {
                        let t = t0 + (round * 10 + k) * 5_000;
                        Sample {
                            t,
                            v: (t as f64).sin() * i as f64,
                        }
                    })
                    .collect()
            })
            .collect();
        let labels: Vec<[(&str, &str); 2]> = ids
            .iter()
            .map(|i| [("__name__", "m"), ("i", i.as_str())])
            .collect();
        let batch: Vec<AppendSeries<'_>> = labels
            .iter()
            .zip(&samples)
            .map(|(l, s)| AppendSeries {
                labels: l,
                samples: s,
            })
            .collect();
        srv.db.append(&batch).unwrap();
    }
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: t0,
            end_timestamp_ms: t0 + 3_600_000,
            matchers: vec![LabelMatcher {
                r#type: MatchType::Eq as i32,
                name: "__name__".into(),
                value: "m".into(),
            }],
            ..Default::default()
        }],
        accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
    };
    let body = common::proto::encode_read(&req);
    // A client that sends the request and never reads the answer.
    let mut stalled = TcpStream::connect(&srv.addr).unwrap();
    let head = format!(
        "POST /api/v1/read HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nX-Prometheus-Remote-Read-Version: 0.1.0\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&body).unwrap();
    // It holds the only read slot until the producer gives up on it; then a normal read is
    // served. The stalled read was answered (its producer, holding the slot, runs) once it
    // is counted.
    wait_for_metric(
        &srv.addr,
        r#"cairn_remote_read_requests_total{type="streamed_xor_chunks",code="200"}"#,
        1.0,
        Duration::from_secs(10),
    );
    let start = Instant::now();
    let r = srv.read(&ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: t0,
            end_timestamp_ms: t0 + 60_000,
            matchers: req.queries[0].matchers.clone(),
            ..Default::default()
        }],
        accepted_response_types: vec![ResponseType::Samples as i32],
    });
    assert_eq!(r.status, 200, "{}", r.text());
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "the stalled read did not hold the slot ({waited:?}): the test does not stall it"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    drop(stalled);
}

#[test]
fn an_early_413_reaches_a_client_that_streams_the_whole_body_before_reading() {
    // The real case: a 40 MiB body against the default 32 MiB cap, far beyond socket buffers.
    let srv = server(Duration::from_secs(30), 16);
    let cap = ServerConfig::default().body.max_body_bytes;
    let len = 40 << 20;
    assert!(len > cap);
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n\
         Content-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    // Like hyper's or Go's client: the whole body first, the response only afterwards.
    let chunk = vec![0u8; 1 << 20];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        if let Err(e) = s.write_all(&chunk[..n]) {
            panic!("writing the body failed after {sent} of {len} bytes: {e}");
        }
        sent += n;
    }
    let got = read_to_eof(&mut s, Duration::from_secs(10)).expect("connection must be closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text:?}");
    assert!(
        text.contains(&format!("over the limit of {cap} bytes")),
        "{text:?}"
    );
}

#[test]
fn the_linger_after_a_response_ends_after_its_idle_gap_when_the_client_stays_silent() {
    // One slot: the second client is served once the first connection's task has ended.
    let srv = server(Duration::from_secs(30), 1);
    let mut a = TcpStream::connect(&srv.addr).unwrap();
    a.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // The whole response, then FIN from the server, while this client keeps its socket open
    // and sends nothing more.
    let got = read_to_eof(&mut a, Duration::from_secs(5)).expect("response then FIN");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let start = Instant::now();
    let mut b = TcpStream::connect(&srv.addr).unwrap();
    b.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = read_to_eof(&mut b, Duration::from_secs(15)).expect("served once the linger ended");
    let waited = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The silent client held its slot while the server lingered (2 s idle gap), and no longer
    // than that gap: well before the 10 s bound on the whole linger.
    assert!(
        waited >= Duration::from_millis(1500),
        "no linger observed ({waited:?})"
    );
    assert!(
        waited < Duration::from_secs(8),
        "linger not cut by its idle gap ({waited:?})"
    );
    drop(a);
}
