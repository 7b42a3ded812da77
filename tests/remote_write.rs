//! Remote write over a real socket: the bad-input matrix (one case per line, each asserting the
//! exact status and what was stored), tolerated inputs stored in normalised form, special
//! floats bit-exact, idempotent retries, and the 503 paths (not ready, overload, poisoned WAL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn::remote::write::LabelLimits;
use cairn::remote::BodyLimits;
use cairn::server::{AppState, ServerConfig};
use cairn::tsdb::head::now_ms;
use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::Options;
use common::faults::{Faults, FaultyFs};
use common::proto::{self, Histogram, Label, MetricMetadata, TimeSeries, WriteRequest};
use common::server::{write_headers, TestServer};
use common::{dump, http};

const STALE: u64 = 0x7ff0_0000_0000_0002;

fn ts(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    proto::series(labels, samples)
}

fn req(series: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries: series,
        ..WriteRequest::default()
    }
}

/// A protobuf `TimeSeries` with raw label bytes (for invalid UTF-8, which `String` can't hold).
fn raw_series(labels: &[(&[u8], &[u8])], samples: &[(i64, f64)]) -> Vec<u8> {
    fn put_len(out: &mut Vec<u8>, key: u8, b: &[u8]) {
        out.push(key);
        prost::encoding::encode_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    for (n, v) in labels {
        let mut l = Vec::new();
        put_len(&mut l, 0x0a, n);
        put_len(&mut l, 0x12, v);
        put_len(&mut out, 0x0a, &l);
    }
    for &(t, v) in samples {
        let mut s = vec![0x09];
        s.extend_from_slice(&v.to_bits().to_le_bytes());
        s.push(0x10);
        prost::encoding::encode_varint(t as u64, &mut s);
        put_len(&mut out, 0x12, &s);
    }
    out
}

fn raw_request(series: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in series {
        out.push(0x0a);
        prost::encoding::encode_varint(s.len() as u64, &mut out);
        out.extend_from_slice(s);
    }
    out
}

type Dump = BTreeMap<String, Vec<(i64, u64)>>;

/// A fresh server holding one seed series at `t0`, so head bounds are realistic.
fn seeded() -> (TestServer, i64, Dump) {
    let srv = TestServer::start();
    let t0 = now_ms() - 60_000;
    let r = srv.write(&req(vec![ts(&[("__name__", "seed")], &[(t0, 1.0)])]));
    assert_eq!(r.status, 204, "{}", r.text());
    let before = dump(&srv.db);
    (srv, t0, before)
}

fn assert_status(r: &http::Response, status: u16, body_has: &str, case: &str) {
    assert_eq!(r.status, status, "{case}: body {:?}", r.text());
    assert!(
        r.text().contains(body_has),
        "{case}: body {:?} lacks {body_has:?}",
        r.text()
    );
}

#[test]
fn undecodable_bodies_are_refused_and_nothing_is_stored() {
    let (srv, t0, before) = seeded();
    let good = proto::encode_write(&req(vec![ts(&[("__name__", "m")], &[(t0, 1.0)])]));
    let raw_good = proto::unsnappy(&good);
    let mut framed = b"\xff\x06\x00\x00sNaPpY".to_vec();
    framed.extend_from_slice(&[0x01, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    // A snappy header claiming 4 GiB, then a few bytes.
    let huge_claim = vec![0x80, 0x80, 0x80, 0x80, 0x10, 0x00, 0x01, 0x02];
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "not snappy",
            b"this is not snappy at all".to_vec(),
            400,
            "snappy",
        ),
        ("snappy framed format", framed, 400, "framed"),
        (
            "truncated snappy",
            good[..good.len() / 2].to_vec(),
            400,
            "snappy",
        ),
        ("decoded length over the cap", huge_claim, 413, "4294967296"),
        (
            "truncated protobuf",
            proto::snappy(&raw_good[..raw_good.len() - 3]),
            400,
            "cannot decode WriteRequest",
        ),
        (
            "wrong wire type (timeseries as varint)",
            proto::snappy(&[0x08, 0x01]),
            400,
            "wire type 0, expected 2",
        ),
        (
            "wrong wire type (sample value as varint)",
            proto::snappy(&raw_request(&[{
                let mut s = raw_series(&[(b"__name__", b"m")], &[]);
                s.extend_from_slice(&[0x12, 0x02, 0x08, 0x01]);
                s
            }])),
            400,
            "Sample field 1 has wire type 0",
        ),
        (
            "length past the end",
            proto::snappy(&[0x0a, 0x7f, 0x0a]),
            400,
            "runs past the end",
        ),
        ("empty body", Vec::new(), 400, "snappy"),
    ];
    for (case, body, status, has) in cases {
        let r = srv.write_raw(&body);
        assert_status(&r, status, has, case);
        assert_eq!(dump(&srv.db), before, "{case}: something was stored");
    }
}

#[test]
fn body_over_the_cap_is_413_before_reading_it() {
    let cfg = ServerConfig {
        body: BodyLimits {
            max_body_bytes: 64 << 10,
            max_decoded_bytes: 128 << 20,
        },
        ..ServerConfig::default()
    };
    let srv = TestServer::start_with(cfg, Options::default());
    let r = srv.write_raw(&vec![0u8; 100 << 10]);
    assert_status(&r, 413, "over the limit of 65536 bytes", "body over cap");
    // At the cap exactly it is read (and then fails to decode as snappy, which is fine).
    let r = srv.write_raw(&vec![0u8; 64 << 10]);
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn decoded_cap_is_checked_against_the_snappy_header() {
    let cfg = ServerConfig {
        body: BodyLimits {
            max_body_bytes: 32 << 20,
            max_decoded_bytes: 1000,
        },
        ..ServerConfig::default()
    };
    let srv = TestServer::start_with(cfg, Options::default());
    let t = now_ms();
    let big: Vec<TimeSeries> = (0..100)
        .map(|i| ts(&[("__name__", "m"), ("i", &i.to_string())], &[(t, 1.0)]))
        .collect();
    let r = srv.write(&req(big));
    assert_status(&r, 413, "over the limit of 1000 bytes", "decoded over cap");
    assert!(dump(&srv.db).is_empty());
}

#[test]
fn invalid_label_sets_are_400_and_valid_series_of_the_request_are_stored() {
    let cases: &[(&str, &str)] = &[
        ("no labels", "label set is empty"),
        ("only empty values", "label set is empty"),
        ("empty label name", "empty name"),
        ("duplicate label names", "duplicate label name"),
        ("duplicate names, unsorted", "duplicate label name"),
        ("invalid UTF-8 value", "not valid UTF-8"),
        ("invalid UTF-8 name", "not valid UTF-8"),
    ];
    for &(case, has) in cases {
        let (srv, t0, mut want) = seeded();
        // The bad series sits between two good ones.
        let bad_series = bad_series(case, t0);
        let good1 = raw_series(&[(b"__name__", b"good"), (b"n", b"1")], &[(t0, 1.0)]);
        let good2 = raw_series(&[(b"__name__", b"good"), (b"n", b"2")], &[(t0, 2.0)]);
        let body = proto::snappy(&raw_request(&[good1, bad_series, good2]));
        let r = srv.write_raw(&body);
        assert_status(&r, 400, has, case);
        assert_status(&r, 400, "series #1", case);
        assert_status(&r, 400, "invalid_labels=1", case);
        assert_status(&r, 400, "2 stored", case);
        want.insert(
            r#"{__name__="good", n="1"}"#.into(),
            vec![(t0, 1.0f64.to_bits())],
        );
        want.insert(
            r#"{__name__="good", n="2"}"#.into(),
            vec![(t0, 2.0f64.to_bits())],
        );
        assert_eq!(dump(&srv.db), want, "{case}");
    }
}

/// The bad series of [`invalid_label_sets_are_400_and_valid_series_of_the_request_are_stored`]
/// with its sample at `t`.
fn bad_series(case: &str, t: i64) -> Vec<u8> {
    let s = [(t, 5.0)];
    match case {
        "no labels" => raw_series(&[], &s),
        "only empty values" => raw_series(&[(b"a", b"")], &s),
        "empty label name" => raw_series(&[(b"", b"x"), (b"__name__", b"m")], &s),
        "duplicate label names" => {
            raw_series(&[(b"__name__", b"m"), (b"a", b"1"), (b"a", b"2")], &s)
        }
        "duplicate names, unsorted" => {
            raw_series(&[(b"a", b"1"), (b"__name__", b"m"), (b"a", b"1")], &s)
        }
        "invalid UTF-8 value" => raw_series(&[(b"__name__", b"m"), (b"a", b"\xff\xfe")], &s),
        "invalid UTF-8 name" => raw_series(&[(b"__name__", b"m"), (b"\xc3\x28", b"v")], &s),
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn tolerated_label_sets_are_stored_normalised() {
    let cases: Vec<(&str, Vec<(&str, &str)>, &str)> = vec![
        (
            "unsorted labels are sorted",
            vec![("job", "x"), ("__name__", "m"), ("a", "1")],
            r#"{__name__="m", a="1", job="x"}"#,
        ),
        (
            "an empty value drops the label",
            vec![("__name__", "m"), ("a", ""), ("b", "2")],
            r#"{__name__="m", b="2"}"#,
        ),
        (
            "no __name__",
            vec![("job", "x"), ("instance", "h")],
            r#"{instance="h", job="x"}"#,
        ),
        (
            "UTF-8 names and values",
            vec![("__name__", "m"), ("größe.ü", "日本")],
            r#"{__name__="m", größe.ü="日本"}"#,
        ),
        (
            "empty value then duplicate name is fine",
            vec![("__name__", "m"), ("a", ""), ("a", "1")],
            r#"{__name__="m", a="1"}"#,
        ),
    ];
    for (case, labels, stored_as) in cases {
        let (srv, t0, mut want) = seeded();
        let r = srv.write(&req(vec![ts(&labels, &[(t0, 7.0)])]));
        assert_eq!(r.status, 204, "{case}: {}", r.text());
        want.insert(stored_as.to_string(), vec![(t0, 7.0f64.to_bits())]);
        assert_eq!(dump(&srv.db), want, "{case}");
    }
    // `{a=""}` plus others and `{}` plus others name the same series.
    let (srv, t0, _) = seeded();
    let r = srv.write(&req(vec![
        ts(&[("__name__", "same"), ("a", "")], &[(t0, 1.0)]),
        ts(&[("__name__", "same")], &[(t0 + 1, 2.0)]),
    ]));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        dump(&srv.db)[r#"{__name__="same"}"#],
        vec![(t0, 1.0f64.to_bits()), (t0 + 1, 2.0f64.to_bits())]
    );
}

#[test]
fn special_floats_are_stored_bit_exact() {
    let (srv, t0, mut want) = seeded();
    let values = [
        f64::NAN,
        f64::from_bits(0x7ff8_dead_beef_0001), // NaN with a payload
        f64::from_bits(STALE),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::MIN_POSITIVE / 2.0, // subnormal
        f64::MAX,
    ];
    let samples: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (t0 + i as i64 * 1000, v))
        .collect();
    // Encoded by hand: proto3 encoders (Go's and prost) omit a value equal to 0.0, and -0.0
    // compares equal, so they would send -0.0 as "absent" = +0.0. We store what arrives.
    let body = proto::snappy(&raw_request(&[raw_series(
        &[(b"__name__", b"special")],
        &samples,
    )]));
    let r = srv.write_raw(&body);
    assert_eq!(r.status, 204, "{}", r.text());
    want.insert(
        r#"{__name__="special"}"#.into(),
        samples.iter().map(|&(t, v)| (t, v.to_bits())).collect(),
    );
    assert_eq!(dump(&srv.db), want);
}

#[test]
fn extreme_timestamps_get_clear_400s() {
    let (srv, _t0, before) = seeded();
    let r = srv.write(&req(vec![ts(&[("__name__", "m")], &[(i64::MAX, 1.0)])]));
    assert_status(&r, 400, "too far in the future", "i64::MAX");
    assert_status(&r, 400, "too_far_in_future=1", "i64::MAX");
    let r = srv.write(&req(vec![ts(&[("__name__", "m")], &[(i64::MIN, 1.0)])]));
    assert_status(&r, 400, "out of bounds", "i64::MIN");
    assert_status(&r, 400, "out_of_bounds=1", "i64::MIN");
    assert_eq!(dump(&srv.db), before);
}

#[test]
fn out_of_order_and_duplicates() {
    let (srv, t0, mut want) = seeded();
    let m = [("__name__", "m")];
    // Within one request: the later sample is stored, the older one rejected.
    let r = srv.write(&req(vec![ts(&m, &[(t0 + 2000, 2.0), (t0 + 1000, 1.0)])]));
    assert_status(
        &r,
        400,
        "out of order sample",
        "out of order within a request",
    );
    assert_status(&r, 400, "1 samples rejected, 1 stored", "within");
    want.insert(
        r#"{__name__="m"}"#.into(),
        vec![(t0 + 2000, 2.0f64.to_bits())],
    );
    assert_eq!(dump(&srv.db), want);

    // Across requests.
    let r = srv.write(&req(vec![ts(&m, &[(t0 + 1500, 1.5)])]));
    assert_status(&r, 400, "out_of_order=1", "out of order across requests");
    assert_eq!(dump(&srv.db), want);

    // An exact duplicate (same timestamp, same value bits) is success: retries are idempotent.
    let r = srv.write(&req(vec![ts(&m, &[(t0 + 2000, 2.0)])]));
    assert_eq!(r.status, 204, "{}", r.text());
    // Resending a whole request that was stored is success too.
    let again = req(vec![
        ts(&m, &[(t0 + 3000, 3.0)]),
        ts(&[("__name__", "n")], &[(t0, f64::NAN)]),
    ]);
    assert_eq!(srv.write(&again).status, 204);
    assert_eq!(srv.write(&again).status, 204);
    want.get_mut(r#"{__name__="m"}"#)
        .unwrap()
        .push((t0 + 3000, 3.0f64.to_bits()));
    want.insert(r#"{__name__="n"}"#.into(), vec![(t0, f64::NAN.to_bits())]);
    assert_eq!(dump(&srv.db), want);

    // Same timestamp, different value: rejected.
    let r = srv.write(&req(vec![ts(&m, &[(t0 + 3000, 4.0)])]));
    assert_status(
        &r,
        400,
        "duplicate sample for timestamp",
        "duplicate, other value",
    );
    assert_status(&r, 400, "duplicate=1", "duplicate, other value");
    assert_eq!(dump(&srv.db), want);
}

#[test]
fn headers_select_the_protocol() {
    let (srv, t0, before) = seeded();
    let body = proto::encode_write(&req(vec![ts(&[("__name__", "m")], &[(t0, 1.0)])]));
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            "snappy",
            415,
            "remote write 1.0",
        ),
        ("application/json", "snappy", 415, "Content-Type"),
        ("application/x-protobuf", "gzip", 415, "Content-Encoding"),
    ];
    for &(ct, ce, status, has) in cases {
        let r = srv
            .client()
            .post(
                "/api/v1/write",
                &[("Content-Type", ct), ("Content-Encoding", ce)],
                &body,
            )
            .unwrap();
        assert_status(&r, status, has, ct);
        assert_eq!(dump(&srv.db), before, "{ct} {ce}");
    }
    // Accepted spellings of remote write 1.0.
    for (i, ct) in [
        "application/x-protobuf;proto=prometheus.WriteRequest",
        "application/x-protobuf",
        "",
    ]
    .iter()
    .enumerate()
    {
        let body = proto::encode_write(&req(vec![ts(
            &[("__name__", "ok")],
            &[(t0 + i as i64, 1.0)],
        )]));
        let mut headers = vec![("Content-Encoding", "snappy")];
        if !ct.is_empty() {
            headers.push(("Content-Type", ct));
        }
        let r = srv.client().post("/api/v1/write", &headers, &body).unwrap();
        assert_eq!(r.status, 204, "{ct:?}: {}", r.text());
    }
    assert_eq!(dump(&srv.db)[r#"{__name__="ok"}"#].len(), 3);
}

/// The value of the sample `series` (exact text before the value) in a `/metrics` scrape.
fn metric(srv: &TestServer, series: &str) -> f64 {
    let text = srv.client().get("/metrics").unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// Native histograms and exemplars are not stored yet: a request carrying them must not get a
/// 2xx (the sender would count them as sent). Its float samples are stored, the answer is 400
/// naming how many of each were refused and the first series carrying them, and the refusals
/// are counted by reason. Metadata-only and empty requests stay 204 (Prometheus's receiver
/// ignores metadata too).
#[test]
fn histograms_and_exemplars_get_400_after_the_floats_are_stored() {
    let (srv, t0, mut want) = seeded();
    let histogram = |t| Histogram {
        timestamp: t,
        schema: 3,
        ..Histogram::default()
    };
    let hist_only = TimeSeries {
        labels: vec![Label::new("__name__", "h")],
        histograms: vec![histogram(t0), histogram(t0 + 1)],
        ..TimeSeries::default()
    };
    let mut with_exemplar = ts(&[("__name__", "with_exemplar")], &[(t0, 2.0)]);
    with_exemplar.exemplars = vec![proto::Exemplar {
        labels: vec![Label::new("trace_id", "abc")],
        value: 2.0,
        timestamp: t0,
    }];
    let r = srv.write(&req(vec![
        ts(&[("__name__", "with_samples")], &[(t0, 1.0)]),
        hist_only,
        with_exemplar,
    ]));
    assert_status(
        &r,
        400,
        "2 native histogram samples and 1 exemplars refused",
        "histograms and an exemplar",
    );
    assert_status(&r, 400, "2 stored", "histograms and an exemplar");
    assert_status(
        &r,
        400,
        r#"first: series #1 {__name__="h"}: carries native histogram samples and exemplars"#,
        "histograms and an exemplar",
    );
    for (name, v) in [("with_samples", 1.0f64), ("with_exemplar", 2.0)] {
        want.insert(format!("{{__name__=\"{name}\"}}"), vec![(t0, v.to_bits())]);
    }
    assert_eq!(dump(&srv.db), want, "the float samples are stored");
    let rejected = |kind: &str| {
        metric(
            &srv,
            &format!("cairn_remote_write_{kind}_rejected_total{{reason=\"unsupported\"}}"),
        )
    };
    assert_eq!((rejected("histograms"), rejected("exemplars")), (2.0, 1.0));

    // An exemplar alone, on a series whose samples went in an earlier request.
    let mut exemplar_only = ts(&[("__name__", "with_exemplar")], &[]);
    exemplar_only.exemplars = vec![proto::Exemplar {
        labels: vec![],
        value: 3.0,
        timestamp: t0 + 1,
    }];
    let r = srv.write(&req(vec![exemplar_only]));
    assert_status(
        &r,
        400,
        "0 native histogram samples and 1 exemplars refused",
        "exemplar only",
    );
    assert_status(&r, 400, "carries exemplars,", "exemplar only");
    assert_eq!((rejected("histograms"), rejected("exemplars")), (2.0, 2.0));

    let meta = WriteRequest {
        metadata: vec![MetricMetadata {
            r#type: 1,
            metric_family_name: "http_requests_total".into(),
            help: "Requests.".into(),
            unit: String::new(),
        }],
        ..WriteRequest::default()
    };
    assert_eq!(srv.write(&meta).status, 204);
    assert_eq!(srv.write(&WriteRequest::default()).status, 204);
    assert_eq!(dump(&srv.db), want);
}

#[test]
fn not_ready_and_health() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = AppState::new(ServerConfig::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    rt.spawn(cairn::server::serve(
        listener,
        Arc::clone(&state),
        std::future::pending(),
    ));
    assert_eq!(http::get(&addr, "/-/healthy").unwrap().status, 200);
    let r = http::get(&addr, "/-/ready").unwrap();
    assert_eq!(r.status, 503);
    let r = http::Client::new(addr.clone())
        .post("/api/v1/write", &write_headers(), &[])
        .unwrap();
    assert_status(&r, 503, "not ready", "write before ready");
    assert_eq!(r.header("retry-after"), Some("5"));

    let dir = tempfile::tempdir().unwrap();
    let db = cairn::tsdb::Db::open(dir.path(), Options::default()).unwrap();
    state.set_ready(Arc::new(db));
    assert_eq!(http::get(&addr, "/-/ready").unwrap().status, 200);
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn overload_is_503_with_retry_after_and_clears() {
    let cfg = ServerConfig {
        write_queue_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let srv = TestServer::start_with(cfg, Options::default());
    let t = now_ms();
    let w = req(vec![ts(&[("__name__", "m")], &[(t, 1.0)])]);
    // Take the whole in-flight budget, as many concurrent large requests would.
    let budget = srv.state.write_budget();
    let all = budget.available_permits() as u32;
    let held = budget.try_acquire_many(all).unwrap();
    let r = srv.write(&w);
    assert_status(&r, 503, "overloaded", "overload");
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(dump(&srv.db).is_empty());
    drop(held);
    assert_eq!(srv.write(&w).status, 204);
}

#[test]
fn poisoned_wal_is_503_and_heals() {
    let faults = Arc::new(Faults::default());
    let opts = Options {
        wal: WalOptions {
            sync: SyncPolicy::Always,
            ..WalOptions::default()
        },
        fs: Arc::new(FaultyFs {
            faults: Arc::clone(&faults),
        }),
        ..Options::default()
    };
    let srv = TestServer::start_with(ServerConfig::default(), opts);
    let t = now_ms();
    faults.armed_syncs.store(true, Ordering::SeqCst);
    let r = srv.write(&req(vec![ts(&[("__name__", "m")], &[(t, 1.0)])]));
    assert_status(&r, 503, "poisoned", "failed fsync");
    assert!(
        dump(&srv.db).is_empty(),
        "nothing acknowledged may be in memory"
    );
    faults.armed_syncs.store(false, Ordering::SeqCst);
    // The writer opens a fresh segment (at most once a second) and writes work again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = srv.write(&req(vec![ts(&[("__name__", "m")], &[(t, 1.0)])]));
        if r.status == 204 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(std::time::Instant::now() < deadline, "WAL never healed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(dump(&srv.db).len(), 1);
}

#[test]
fn label_limits_are_400s_naming_the_limit() {
    let cfg = ServerConfig {
        labels: LabelLimits {
            max_labels: 3,
            max_name_bytes: 8,
            max_value_bytes: 10,
        },
        ..ServerConfig::default()
    };
    let mut opts = Options::default();
    opts.wal.sync = SyncPolicy::Never;
    let srv = TestServer::start_with(cfg, opts);
    let t = now_ms();
    let at_limit = [("__name__", "m"), ("a", "0123456789"), ("abcdefgh", "x")];
    let cases: &[(&str, Vec<(&str, &str)>, &str)] = &[
        (
            "too many labels",
            vec![("__name__", "m"), ("a", "1"), ("b", "2"), ("c", "3")],
            "more than 3 labels (--storage.remote.write-label-limit)",
        ),
        (
            "name too long",
            vec![("__name__", "m"), ("abcdefghi", "1")],
            "label name longer than 8 bytes",
        ),
        (
            "value too long",
            vec![("__name__", "m"), ("a", "0123456789A")],
            "label value longer than 10 bytes",
        ),
    ];
    for (case, labels, has) in cases {
        let r = srv.write(&req(vec![ts(labels, &[(t, 1.0)])]));
        assert_status(&r, 400, has, case);
        assert_status(&r, 400, "invalid_labels=1", case);
        assert!(dump(&srv.db).is_empty(), "{case}");
    }
    // An empty value does not count: it is dropped before the count.
    let r = srv.write(&req(vec![
        ts(&at_limit, &[(t, 1.0)]),
        ts(
            &[("__name__", "n"), ("a", ""), ("b", "1"), ("c", "2")],
            &[(t, 2.0)],
        ),
    ]));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(dump(&srv.db).len(), 2);
}

#[test]
fn series_limit_refuses_new_series_only() {
    let opts = Options {
        max_series: 2,
        wal: WalOptions {
            sync: SyncPolicy::Never,
            ..WalOptions::default()
        },
        ..Options::default()
    };
    let srv = TestServer::start_with(ServerConfig::default(), opts);
    let t = now_ms();
    let r = srv.write(&req(vec![
        ts(&[("__name__", "a")], &[(t, 1.0)]),
        ts(&[("__name__", "b")], &[(t, 1.0)]),
    ]));
    assert_eq!(r.status, 204, "{}", r.text());
    // A third series is refused; samples of existing series in the same request are stored.
    let r = srv.write(&req(vec![
        ts(&[("__name__", "c")], &[(t, 1.0), (t + 1, 2.0)]),
        ts(&[("__name__", "a")], &[(t + 1, 2.0)]),
    ]));
    assert_status(&r, 400, "series limit of 2 reached", "series limit");
    assert_status(&r, 400, "series_limit=2", "series limit");
    assert_status(&r, 400, "series #0", "series limit");
    let d = dump(&srv.db);
    assert_eq!(d.len(), 2);
    assert_eq!(d[r#"{__name__="a"}"#].len(), 2);
    assert_eq!(srv.db.head().num_series(), 2);
}
