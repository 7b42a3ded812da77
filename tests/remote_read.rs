//! Remote read over a real socket, decoded with an independent protobuf implementation (prost):
//! SAMPLES results per query in order, series sorted by label set, matchers of all four kinds;
//! STREAMED_XOR_CHUNKS frames with checked CRCs, one series per frame, frame budget honoured,
//! chunks sent as their stored bytes; negotiation; malformed requests; the sample limit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity,
    clippy::manual_is_multiple_of
)]

mod common;

use std::collections::BTreeMap;

use cairn::model::{MatchType as M, Matcher};
use cairn::server::ServerConfig;
use cairn::tsdb::chunkenc::XorIterator;
use cairn::tsdb::head::now_ms;
use cairn::tsdb::wal::SyncPolicy;
use cairn::tsdb::Options;
use common::proto::{
    self, Label, LabelMatcher, MatchType, Query, ReadRequest, ResponseType, Sample, TimeSeries,
    WriteRequest,
};
use common::server::TestServer;

const STALE: u64 = 0x7ff0_0000_0000_0002;

/// Series `i` of the fixture: labels and a value per timestamp (special floats mixed in).
fn labels(i: usize) -> Vec<Label> {
    vec![
        Label::new("__name__", if i % 2 == 0 { "up" } else { "load" }),
        Label::new("instance", format!("host-{i:02}")),
        Label::new("job", if i % 3 == 0 { "node" } else { "app" }),
    ]
}

fn value(i: usize, k: usize) -> f64 {
    match (i + k) % 17 {
        0 => f64::NAN,
        1 => f64::from_bits(STALE),
        2 => f64::INFINITY,
        _ => (i * 1000 + k) as f64 / 3.0,
    }
}

const SERIES: usize = 12;
const SAMPLES: usize = 400; // > 3 chunks per series

/// Push the fixture through remote write, 15 s apart; returns the first timestamp.
fn fill(srv: &TestServer) -> i64 {
    let t0 = now_ms() - (SAMPLES as i64) * 15_000;
    for k in 0..SAMPLES {
        let req = WriteRequest {
            timeseries: (0..SERIES)
                .map(|i| TimeSeries {
                    labels: labels(i),
                    samples: vec![Sample {
                        value: value(i, k),
                        timestamp: t0 + k as i64 * 15_000,
                    }],
                    ..TimeSeries::default()
                })
                .collect(),
            ..WriteRequest::default()
        };
        let r = srv.write(&req);
        assert_eq!(r.status, 204, "{}", r.text());
    }
    t0
}

fn server(cfg: ServerConfig) -> (TestServer, i64) {
    let mut opts = Options::default();
    opts.wal.sync = SyncPolicy::Never;
    let srv = TestServer::start_with(cfg, opts);
    let t0 = fill(&srv);
    (srv, t0)
}

fn query(start: i64, end: i64, matchers: Vec<LabelMatcher>) -> Query {
    Query {
        start_timestamp_ms: start,
        end_timestamp_ms: end,
        matchers,
        hints: None,
    }
}

fn m(t: MatchType, n: &str, v: &str) -> LabelMatcher {
    LabelMatcher::new(t, n, v)
}

/// What the fixture holds for `series` in [start, end]: label text → (t, bits).
fn expected(series: &[usize], t0: i64, start: i64, end: i64) -> Vec<(Vec<Label>, Vec<(i64, u64)>)> {
    let mut out: Vec<(Vec<Label>, Vec<(i64, u64)>)> = series
        .iter()
        .map(|&i| {
            let s = (0..SAMPLES)
                .map(|k| (t0 + k as i64 * 15_000, value(i, k).to_bits()))
                .filter(|&(t, _)| t >= start && t <= end)
                .collect();
            (labels(i), s)
        })
        .filter(|(_, s): &(_, Vec<_>)| !s.is_empty())
        .collect();
    // Label-set order (these label names and values compare the same way byte-wise).
    out.sort_by(|a, b| {
        let key = |l: &Vec<Label>| {
            l.iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect::<Vec<_>>()
        };
        key(&a.0).cmp(&key(&b.0))
    });
    out
}

fn got(ts: &[TimeSeries]) -> Vec<(Vec<Label>, Vec<(i64, u64)>)> {
    ts.iter()
        .map(|t| {
            (
                t.labels.clone(),
                t.samples
                    .iter()
                    .map(|s| (s.timestamp, s.value.to_bits()))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn samples_one_result_per_query_in_order_sorted_by_labels() {
    let (srv, t0) = server(ServerConfig::default());
    let end_all = t0 + SAMPLES as i64 * 15_000;
    let mid = t0 + 100 * 15_000;
    let up: Vec<usize> = (0..SERIES).filter(|i| i % 2 == 0).collect();
    let node_load: Vec<usize> = (0..SERIES).filter(|i| i % 2 == 1 && i % 3 == 0).collect();
    let not_node: Vec<usize> = (0..SERIES).filter(|i| i % 3 != 0).collect();
    let cases: Vec<(Query, Vec<usize>)> = vec![
        (
            query(t0, end_all, vec![m(MatchType::Eq, "__name__", "up")]),
            up.clone(),
        ),
        (
            query(
                t0,
                end_all,
                vec![
                    m(MatchType::Re, "__name__", "lo.d"),
                    m(MatchType::Eq, "job", "node"),
                ],
            ),
            node_load,
        ),
        (
            query(t0, end_all, vec![m(MatchType::Neq, "job", "node")]),
            not_node.clone(),
        ),
        (
            query(t0, end_all, vec![m(MatchType::Nre, "job", "no.*")]),
            not_node,
        ),
        // Inclusive bounds, on sample timestamps exactly.
        (
            query(mid, mid + 15_000, vec![m(MatchType::Eq, "__name__", "up")]),
            up.clone(),
        ),
        // A missing label matches "": every series lacks `foo`.
        (
            query(
                t0,
                t0,
                vec![
                    m(MatchType::Eq, "foo", ""),
                    m(MatchType::Eq, "instance", "host-03"),
                ],
            ),
            vec![3],
        ),
        (
            query(t0, end_all, vec![m(MatchType::Eq, "__name__", "nope")]),
            vec![],
        ),
    ];
    let req = ReadRequest {
        queries: cases.iter().map(|(q, _)| q.clone()).collect(),
        accepted_response_types: vec![],
    };
    let r = srv.read(&req);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(r.header("content-encoding"), Some("snappy"));
    let resp = proto::decode_read_response(&r.body);
    assert_eq!(resp.results.len(), cases.len());
    for (i, ((q, series), res)) in cases.iter().zip(&resp.results).enumerate() {
        let want = expected(series, t0, q.start_timestamp_ms, q.end_timestamp_ms);
        assert_eq!(got(&res.timeseries), want, "query {i}");
    }
    // The mid query returns exactly two samples per series.
    assert!(resp.results[4]
        .timeseries
        .iter()
        .all(|t| t.samples.len() == 2));
}

/// Read with the streamed type and parse every frame (CRC checked by the oracle).
fn streamed(srv: &TestServer, queries: Vec<Query>) -> Vec<proto::ChunkedReadResponse> {
    let req = ReadRequest {
        queries,
        accepted_response_types: vec![
            ResponseType::StreamedXorChunks as i32,
            ResponseType::Samples as i32,
        ],
    };
    let r = srv.read(&req);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")
    );
    assert_eq!(r.header("content-encoding"), None);
    proto::parse_chunked_frames(&r.body).unwrap()
}

#[test]
fn streamed_frames_are_checked_ordered_and_carry_stored_chunk_bytes() {
    let frame_budget = 2048;
    let (srv, t0) = server(ServerConfig {
        read_max_bytes_in_frame: frame_budget,
        ..ServerConfig::default()
    });
    let end_all = t0 + SAMPLES as i64 * 15_000;
    let q0 = vec![m(MatchType::Re, "__name__", ".+")];
    let q1 = vec![m(MatchType::Eq, "job", "node")];
    let frames = streamed(
        &srv,
        vec![
            query(t0, end_all, q0.clone()),
            query(t0, end_all, q1.clone()),
        ],
    );

    // The stored chunks, from the engine, per query.
    let stored = |ms: &[LabelMatcher]| {
        let ms: Vec<Matcher> = ms
            .iter()
            .map(|x| Matcher::new(M::from_i32(x.r#type).unwrap(), &x.name, &x.value).unwrap())
            .collect();
        srv.db.select(&ms, t0, end_all).unwrap()
    };
    let mut by_query: BTreeMap<i64, Vec<&proto::ChunkedSeries>> = BTreeMap::new();
    let mut last_query = 0;
    for f in &frames {
        assert_eq!(f.chunked_series.len(), 1, "one series per frame");
        assert!(f.query_index >= last_query, "queries in order");
        last_query = f.query_index;
        let msg = prost::Message::encoded_len(f);
        let frame = prost::encoding::encoded_len_varint(msg as u64) + 4 + msg;
        assert!(frame <= frame_budget, "frame of {frame} bytes");
        by_query
            .entry(f.query_index)
            .or_default()
            .push(&f.chunked_series[0]);
    }
    assert_eq!(by_query.len(), 2);
    for (qi, ms) in [(0i64, &q0), (1, &q1)] {
        let want = stored(ms);
        // Merge consecutive frames of the same series.
        let mut merged: Vec<(Vec<Label>, Vec<proto::Chunk>)> = Vec::new();
        for s in &by_query[&qi] {
            match merged.last_mut() {
                Some((l, c)) if *l == s.labels => c.extend(s.chunks.iter().cloned()),
                _ => merged.push((s.labels.clone(), s.chunks.clone())),
            }
        }
        assert!(
            by_query[&qi].len() > merged.len(),
            "the small budget must split series over frames"
        );
        assert_eq!(merged.len(), want.len(), "query {qi}: series count");
        for ((labels, chunks), w) in merged.iter().zip(&want) {
            let text: Vec<(&str, &str)> = labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            let want_text: Vec<(&str, &str)> = w.labels.iter().collect();
            assert_eq!(text, want_text, "query {qi}: sorted by label set");
            assert_eq!(chunks.len(), w.chunks.len());
            assert!(chunks.len() >= 3);
            for (c, wc) in chunks.iter().zip(&w.chunks) {
                assert_eq!(c.r#type, 1, "XOR");
                assert_eq!(c.data, &*wc.data, "chunk bytes as stored");
                assert_eq!((c.min_time_ms, c.max_time_ms), (wc.mint, wc.maxt));
                let ts: Vec<i64> = XorIterator::new(&c.data).unwrap().map(|(t, _)| t).collect();
                assert_eq!((ts[0], *ts.last().unwrap()), (c.min_time_ms, c.max_time_ms));
            }
            for w in chunks.windows(2) {
                assert!(w[0].max_time_ms < w[1].min_time_ms, "chunks in time order");
            }
        }
    }
    // Every sample of the fixture comes back bit-exact through the chunks.
    let mut samples = 0;
    for f in frames.iter().filter(|f| f.query_index == 0) {
        let s = &f.chunked_series[0];
        let i: usize = s.labels[1]
            .value
            .trim_start_matches("host-")
            .parse()
            .unwrap();
        for c in &s.chunks {
            for (t, v) in XorIterator::new(&c.data).unwrap() {
                let k = ((t - t0) / 15_000) as usize;
                assert_eq!(v.to_bits(), value(i, k).to_bits());
                samples += 1;
            }
        }
    }
    assert_eq!(samples, SERIES * SAMPLES);
}

#[test]
fn response_type_negotiation() {
    let (srv, t0) = server(ServerConfig::default());
    let q = vec![query(t0, t0, vec![m(MatchType::Eq, "__name__", "up")])];
    let ct = |types: Vec<i32>| {
        let r = srv.read(&ReadRequest {
            queries: q.clone(),
            accepted_response_types: types,
        });
        (
            r.status,
            r.header("content-type").map(str::to_string),
            r.text(),
        )
    };
    assert_eq!(ct(vec![]).1.as_deref(), Some("application/x-protobuf"));
    assert_eq!(ct(vec![0]).1.as_deref(), Some("application/x-protobuf"));
    assert!(ct(vec![1, 0])
        .1
        .unwrap()
        .starts_with("application/x-streamed-protobuf"));
    assert!(ct(vec![7, 1])
        .1
        .unwrap()
        .starts_with("application/x-streamed-protobuf"));
    let (status, _, body) = ct(vec![7]);
    assert_eq!(status, 400);
    assert!(body.contains("supported"), "{body}");
}

#[test]
fn malformed_read_requests_are_400() {
    let (srv, t0) = server(ServerConfig::default());
    let ok = vec![m(MatchType::Eq, "__name__", "up")];
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "bad regex",
            proto::encode_read(&ReadRequest {
                queries: vec![query(t0, t0, vec![m(MatchType::Re, "job", "(unclosed")])],
                accepted_response_types: vec![],
            }),
            400,
            "invalid regular expression",
        ),
        (
            "zero queries",
            proto::encode_read(&ReadRequest::default()),
            400,
            "no queries",
        ),
        (
            "end before start",
            proto::encode_read(&ReadRequest {
                queries: vec![query(t0 + 10, t0, ok.clone())],
                accepted_response_types: vec![],
            }),
            400,
            "before start",
        ),
        (
            "no matchers",
            proto::encode_read(&ReadRequest {
                queries: vec![query(t0, t0 + 10, vec![])],
                accepted_response_types: vec![],
            }),
            400,
            "no matchers",
        ),
        (
            "unknown matcher type",
            proto::encode_read(&ReadRequest {
                queries: vec![query(
                    t0,
                    t0,
                    vec![LabelMatcher {
                        r#type: 9,
                        name: "job".into(),
                        value: "x".into(),
                    }],
                )],
                accepted_response_types: vec![],
            }),
            400,
            "unknown matcher type 9",
        ),
        ("not snappy", b"plain bytes".to_vec(), 400, "snappy"),
        (
            "truncated protobuf",
            proto::snappy(&[0x0a, 0x10, 0x08]),
            400,
            "cannot decode ReadRequest",
        ),
    ];
    for (case, body, status, has) in cases {
        let r = srv.read_raw(&body);
        assert_eq!(r.status, status, "{case}: {}", r.text());
        assert!(r.text().contains(has), "{case}: {:?}", r.text());
    }
}

#[test]
fn sample_limit() {
    let limit = (SAMPLES * SERIES / 2) as u64;
    let (srv, t0) = server(ServerConfig {
        read_sample_limit: limit,
        ..ServerConfig::default()
    });
    let end_all = t0 + SAMPLES as i64 * 15_000;
    let all = |start| ReadRequest {
        queries: vec![query(
            start,
            end_all,
            vec![m(MatchType::Re, "__name__", ".+")],
        )],
        accepted_response_types: vec![],
    };
    let r = srv.read(&all(t0));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("exceeded sample limit"), "{}", r.text());
    // Half the range fits.
    let r = srv.read(&all(t0 + (SAMPLES as i64 / 2 + 1) * 15_000));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn concurrent_reads_beyond_the_limit_wait_and_complete() {
    let (srv, t0) = server(ServerConfig {
        read_concurrent_limit: 1,
        ..ServerConfig::default()
    });
    let end_all = t0 + SAMPLES as i64 * 15_000;
    let srv = &srv;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                s.spawn(move || {
                    let q = vec![query(t0, end_all, vec![m(MatchType::Re, "__name__", ".+")])];
                    if i % 2 == 0 {
                        let frames = streamed(srv, q);
                        frames
                            .iter()
                            .map(|f| f.chunked_series[0].chunks.len())
                            .sum::<usize>()
                    } else {
                        let r = srv.read(&ReadRequest {
                            queries: q,
                            accepted_response_types: vec![],
                        });
                        assert_eq!(r.status, 200);
                        proto::decode_read_response(&r.body).results[0]
                            .timeseries
                            .len()
                    }
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap() >= SERIES);
        }
    });
}
