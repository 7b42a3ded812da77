//! `GET /metrics`: the names the issue fixes exist, counters move as requests arrive, the
//! classic text format passes the real `promtool check metrics` (2.42 and 3.x), and OpenMetrics is served to
//! clients that ask for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use cairn::server::ServerConfig;
use cairn::tsdb::head::now_ms;
use cairn::tsdb::wal::SyncPolicy;
use cairn::tsdb::Options;
use common::peer::Peer;
use common::proto::{
    LabelMatcher, MatchType, Query, ReadRequest, ResponseType, TimeSeries, WriteRequest,
};
use common::server::TestServer;

fn ts(name: &str, samples: &[(i64, f64)]) -> TimeSeries {
    common::proto::series(&[("__name__", name)], samples)
}

fn write(srv: &TestServer, series: Vec<TimeSeries>) -> u16 {
    srv.write(&WriteRequest {
        timeseries: series,
        ..WriteRequest::default()
    })
    .status
}

/// The value of the sample line starting with `series` followed by a space.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn scrape(srv: &TestServer) -> String {
    let r = srv.client().get("/metrics").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

peer_tests!(metrics_move_with_requests_and_pass_promtool);

fn metrics_move_with_requests_and_pass_promtool(peer: Peer) {
    let mut opts = Options::default();
    opts.wal.sync = SyncPolicy::Always;
    let srv = TestServer::start_with(ServerConfig::default(), opts);
    let t = now_ms();

    let before = scrape(&srv);
    assert_eq!(value(&before, "cairn_remote_write_samples_total"), 0.0);
    assert_eq!(
        value(
            &before,
            r#"cairn_remote_write_samples_rejected_total{reason="out_of_order"}"#
        ),
        0.0
    );

    assert_eq!(
        write(
            &srv,
            vec![ts("a", &[(t, 1.0), (t + 1, 2.0)]), ts("b", &[(t, 3.0)])]
        ),
        204
    );
    assert_eq!(
        write(&srv, vec![ts("a", &[(t - 5, 0.5)]), ts("c", &[(t, 4.0)])]),
        400
    );
    let q = Query {
        start_timestamp_ms: t - 10,
        end_timestamp_ms: t + 10,
        matchers: vec![LabelMatcher::new(MatchType::Re, "__name__", ".+")],
        hints: None,
    };
    for types in [vec![], vec![ResponseType::StreamedXorChunks as i32]] {
        let r = srv.read(&ReadRequest {
            queries: vec![q.clone()],
            accepted_response_types: types,
        });
        assert_eq!(r.status, 200);
    }

    let text = scrape(&srv);
    for (series, want) in [
        ("cairn_remote_write_samples_total", 4.0),
        (
            r#"cairn_remote_write_samples_rejected_total{reason="out_of_order"}"#,
            1.0,
        ),
        (r#"cairn_remote_write_requests_total{code="204"}"#, 1.0),
        (r#"cairn_remote_write_requests_total{code="400"}"#, 1.0),
        ("cairn_tsdb_head_series", 3.0),
        ("cairn_tsdb_head_samples_appended_total", 4.0),
        (
            r#"cairn_remote_read_requests_total{type="samples",code="200"}"#,
            1.0,
        ),
        (
            r#"cairn_remote_read_requests_total{type="streamed_xor_chunks",code="200"}"#,
            1.0,
        ),
        ("cairn_remote_read_samples_total", 4.0),
        ("cairn_remote_read_chunks_total", 3.0),
        (r#"cairn_build_info{version="0.1.0"}"#, 1.0),
    ] {
        assert_eq!(value(&text, series), want, "{series}");
    }
    // Two acknowledged writes under wal-sync=always: at least two fsyncs were timed.
    assert!(value(&text, "cairn_tsdb_wal_fsync_duration_seconds_count") >= 2.0);
    assert!(
        value(
            &text,
            r#"cairn_tsdb_wal_fsync_duration_seconds_bucket{le="+Inf"}"#
        ) >= 2.0
    );
    assert!(value(&text, "cairn_remote_write_request_duration_seconds_count") == 2.0);
    assert!(value(&text, "process_resident_memory_bytes") > 1e6);
    assert!(value(&text, "process_open_fds") > 0.0);
    assert!(value(&text, "process_start_time_seconds") > 1.6e9);

    // The real linter.
    let mut child = Command::new(peer.promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{peer}: promtool check metrics: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // OpenMetrics when asked for.
    let r = srv
        .client()
        .request(
            "GET",
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
            &[],
        )
        .unwrap();
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(r.text().ends_with("# EOF\n"));
    assert!(r
        .text()
        .contains("# TYPE cairn_remote_write_samples counter"));
}
