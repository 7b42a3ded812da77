//! Independent protobuf definitions of Prometheus's remote write 1.0 / remote read messages
//! (package `prometheus`, `prompb/remote.proto` and `prompb/types.proto` at v2.42.0),
//! derived with `prost` by hand — no build script, no protoc.
//!
//! This is a test oracle for cairn's own hand-written codec: field numbers come from the
//! upstream `.proto` files, never from cairn's sources.
#![allow(dead_code)]

use prost::Message;

// ---------------------------------------------------------------------------------------
// types.proto
// ---------------------------------------------------------------------------------------

/// `MetricMetadata.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unknown = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    Gaugehistogram = 4,
    Summary = 5,
    Info = 6,
    Stateset = 7,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Optional; may be empty.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `Histogram.ResetHint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResetHint {
    Unknown = 0,
    Yes = 1,
    No = 2,
    Gauge = 3,
}

/// A native histogram sample (integer or float flavour).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    /// Delta-encoded absolute counts (integer histograms).
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Absolute counts (float histograms).
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    #[prost(enumeration = "ResetHint", tag = "14")]
    pub reset_hint: i32,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    /// Custom bucket bounds (schema −53; newer than 2.42).
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

pub mod histogram {
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Count {
        #[prost(uint64, tag = "1")]
        CountInt(u64),
        #[prost(double, tag = "2")]
        CountFloat(f64),
    }

    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum ZeroCount {
        #[prost(uint64, tag = "6")]
        ZeroCountInt(u64),
        #[prost(double, tag = "7")]
        ZeroCountFloat(f64),
    }
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// `LabelMatcher.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MatchType {
    Eq = 0,
    Neq = 1,
    Re = 2,
    Nre = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelMatcher {
    #[prost(enumeration = "MatchType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub value: String,
}

impl LabelMatcher {
    pub fn new(t: MatchType, name: impl Into<String>, value: impl Into<String>) -> LabelMatcher {
        LabelMatcher {
            r#type: t as i32,
            name: name.into(),
            value: value.into(),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadHints {
    /// Query step size in milliseconds.
    #[prost(int64, tag = "1")]
    pub step_ms: i64,
    /// String representation of the surrounding function or aggregation.
    #[prost(string, tag = "2")]
    pub func: String,
    #[prost(int64, tag = "3")]
    pub start_ms: i64,
    #[prost(int64, tag = "4")]
    pub end_ms: i64,
    #[prost(string, repeated, tag = "5")]
    pub grouping: Vec<String>,
    #[prost(bool, tag = "6")]
    pub by: bool,
    #[prost(int64, tag = "7")]
    pub range_ms: i64,
}

/// `Chunk.Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ChunkEncoding {
    Unknown = 0,
    Xor = 1,
    Histogram = 2,
    FloatHistogram = 3,
}

/// A chunk in the TSDB chunk encoding (data includes the 2-byte sample count).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    #[prost(int64, tag = "1")]
    pub min_time_ms: i64,
    #[prost(int64, tag = "2")]
    pub max_time_ms: i64,
    #[prost(enumeration = "ChunkEncoding", tag = "3")]
    pub r#type: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkedSeries {
    /// Sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// In start-time order.
    #[prost(message, repeated, tag = "2")]
    pub chunks: Vec<Chunk>,
}

// ---------------------------------------------------------------------------------------
// remote.proto
// ---------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    // Field 2 is reserved.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `ReadRequest.ResponseType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResponseType {
    Samples = 0,
    StreamedXorChunks = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRequest {
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    /// In order of preference; empty means SAMPLES.
    #[prost(enumeration = "ResponseType", repeated, packed = "true", tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadResponse {
    /// One result per query, in query order.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<QueryResult>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    /// Inclusive.
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    /// Inclusive.
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
    #[prost(message, optional, tag = "4")]
    pub hints: Option<ReadHints>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryResult {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// One frame of a STREAMED_XOR_CHUNKS response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkedReadResponse {
    #[prost(message, repeated, tag = "1")]
    pub chunked_series: Vec<ChunkedSeries>,
    /// Index of the query (in the ReadRequest) this frame answers.
    #[prost(int64, tag = "2")]
    pub query_index: i64,
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Largest frame a Prometheus client accepts in a streamed read response (`DefaultChunkedReadLimit`).
pub const MAX_FRAME_BYTES: u64 = 50_000_000;

/// Snappy raw block compression (what remote write/read use; never the framed format).
pub fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(b)
        .unwrap_or_else(|e| panic!("snappy compress of {} bytes: {e}", b.len()))
}

/// Snappy raw block decompression; panics with a clear message on corrupt input.
pub fn unsnappy(b: &[u8]) -> Vec<u8> {
    try_unsnappy(b).unwrap_or_else(|e| panic!("{e}"))
}

/// Snappy raw block decompression.
pub fn try_unsnappy(b: &[u8]) -> Result<Vec<u8>, String> {
    snap::raw::Decoder::new()
        .decompress_vec(b)
        .map_err(|e| format!("snappy decompress of {} bytes: {e}", b.len()))
}

/// Protobuf-encode and snappy-compress a write request: the remote write 1.0 body.
pub fn encode_write(req: &WriteRequest) -> Vec<u8> {
    snappy(&req.encode_to_vec())
}

/// Protobuf-encode and snappy-compress a read request: the remote read body.
pub fn encode_read(req: &ReadRequest) -> Vec<u8> {
    snappy(&req.encode_to_vec())
}

/// Decode a SAMPLES remote-read response body (snappy'd `ReadResponse`); panics on garbage.
pub fn decode_read_response(body: &[u8]) -> ReadResponse {
    try_decode_read_response(body).unwrap_or_else(|e| panic!("{e}"))
}

/// Decode a SAMPLES remote-read response body (snappy'd `ReadResponse`).
pub fn try_decode_read_response(body: &[u8]) -> Result<ReadResponse, String> {
    let raw = try_unsnappy(body)?;
    ReadResponse::decode(raw.as_slice())
        .map_err(|e| format!("decoding ReadResponse ({} bytes): {e}", raw.len()))
}

/// Split a STREAMED_XOR_CHUNKS body into its frames and decode them.
///
/// Each frame is `uvarint len | big-endian u32 CRC32C(msg) | msg`. Fails on a truncated
/// length, header or message, on a frame larger than 50 MB, on a CRC mismatch, and on a
/// message that does not decode.
pub fn parse_chunked_frames(body: &[u8]) -> Result<Vec<ChunkedReadResponse>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < body.len() {
        let frame_no = out.len();
        let frame_start = pos;
        // uvarint length
        let mut len: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = body.get(pos) else {
                return Err(format!(
                    "frame {frame_no} at byte {frame_start}: truncated length varint"
                ));
            };
            pos += 1;
            if shift >= 64 || (shift == 63 && b > 1) {
                return Err(format!(
                    "frame {frame_no} at byte {frame_start}: length varint overflows u64"
                ));
            }
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if len > MAX_FRAME_BYTES {
            return Err(format!(
                "frame {frame_no} at byte {frame_start}: {len} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit"
            ));
        }
        let Some(crc_bytes) = body.get(pos..pos + 4) else {
            return Err(format!(
                "frame {frame_no} at byte {frame_start}: truncated CRC ({} bytes left)",
                body.len() - pos
            ));
        };
        let want = u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        pos += 4;
        let len = len as usize;
        let Some(msg) = body.get(pos..pos + len) else {
            return Err(format!(
                "frame {frame_no} at byte {frame_start}: truncated message ({len} bytes declared, {} left)",
                body.len() - pos
            ));
        };
        pos += len;
        let got = crc32c::crc32c(msg);
        if got != want {
            return Err(format!(
                "frame {frame_no} at byte {frame_start}: CRC32C mismatch (header {want:#010x}, computed {got:#010x})"
            ));
        }
        let frame = ChunkedReadResponse::decode(msg).map_err(|e| {
            format!("frame {frame_no} at byte {frame_start}: decoding ChunkedReadResponse: {e}")
        })?;
        out.push(frame);
    }
    Ok(out)
}

/// Frame one message the way a streamed read response does (for testing parsers).
pub fn frame_chunked(msg: &ChunkedReadResponse) -> Vec<u8> {
    let m = msg.encode_to_vec();
    let mut out = Vec::with_capacity(m.len() + 14);
    let mut n = m.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(&crc32c::crc32c(&m).to_be_bytes());
    out.extend_from_slice(&m);
    out
}

/// A `TimeSeries` from label pairs and (timestamp ms, value) samples.
pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
        samples: samples
            .iter()
            .map(|&(t, v)| Sample {
                value: v,
                timestamp: t,
            })
            .collect(),
        ..TimeSeries::default()
    }
}
