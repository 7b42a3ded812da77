//! Remote read: `ReadRequest` → per query, the matching series sorted by label set →
//! a SAMPLES `ReadResponse` or STREAMED_XOR_CHUNKS frames.
//!
//! Streamed responses send closed chunks as the bytes they are stored as (mapped from
//! `chunks_head/`, never decoded); a chunk overlapping a deleted interval is re-encoded without
//! the deleted samples. Frames carry one series each and stay within the frame budget (a
//! series with more chunks than fit is continued in the next frame with the same labels).

use thiserror::Error;

use super::proto::types::*;
use super::proto::{
    begin_len, end_len, put_bytes, put_double, put_int64, put_key, put_varint, varint_len,
    wrong_type, ProtoError, Reader, Value, WIRE_LEN, WIRE_VARINT,
};
use super::BodyError;
use crate::model::{Labels, MatchType, Matcher, MatcherError};
use crate::tsdb::chunkenc::XorChunk;
use crate::tsdb::db::SeriesChunks;
use crate::tsdb::{Db, DbError, Sample};

/// Response types of `ReadRequest.accepted_response_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    Samples,
    StreamedXorChunks,
}

/// One query of a request.
#[derive(Debug, Clone)]
pub struct Query {
    /// Inclusive bounds, ms.
    pub start: i64,
    pub end: i64,
    pub matchers: Vec<Matcher>,
}

/// A decoded, validated `ReadRequest`.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub queries: Vec<Query>,
    pub response_type: ResponseType,
}

/// Why a read request failed.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("cannot decode ReadRequest: {0}")]
    Proto(#[from] ProtoError),
    /// A well-formed request that asks for something invalid.
    #[error("{0}")]
    BadRequest(String),
    #[error("exceeded sample limit ({limit})")]
    SampleLimit { limit: u64 },
    #[error("cannot read series: {0}")]
    Storage(String),
}

impl From<DbError> for ReadError {
    fn from(e: DbError) -> Self {
        ReadError::Storage(e.to_string())
    }
}

// Field numbers (prompb/remote.proto, prompb/types.proto).
const READ_REQUEST_QUERIES: u32 = 1;
const READ_REQUEST_ACCEPTED_TYPES: u32 = 2;
const QUERY_START: u32 = 1;
const QUERY_END: u32 = 2;
const QUERY_MATCHERS: u32 = 3;
const MATCHER_TYPE: u32 = 1;
const MATCHER_NAME: u32 = 2;
const MATCHER_VALUE: u32 = 3;
const READ_RESPONSE_RESULTS: u32 = 1;
const QUERY_RESULT_TIMESERIES: u32 = 1;
const CHUNKED_RESPONSE_SERIES: u32 = 1;
const CHUNKED_RESPONSE_QUERY_INDEX: u32 = 2;
const CHUNKED_SERIES_LABELS: u32 = 1;
const CHUNKED_SERIES_CHUNKS: u32 = 2;
const CHUNK_MIN_TIME: u32 = 1;
const CHUNK_MAX_TIME: u32 = 2;
const CHUNK_TYPE: u32 = 3;
const CHUNK_DATA: u32 = 4;
const CHUNK_TYPE_XOR: u64 = 1;

const RESPONSE_SAMPLES: u64 = 0;
const RESPONSE_STREAMED_XOR_CHUNKS: u64 = 1;

fn utf8<'a>(r: &Reader<'a>, b: &'a [u8], what: &str) -> Result<&'a str, ReadError> {
    std::str::from_utf8(b).map_err(|_| ReadError::Proto(r.error(format!("{what} is not UTF-8"))))
}

/// Decode and validate a (decompressed) `ReadRequest`: at least one query, each with
/// `start <= end` and at least one matcher whose regex compiles; a supported response type.
pub fn decode_request(buf: &[u8]) -> Result<ReadRequest, ReadError> {
    let mut queries = Vec::new();
    let mut accepted: Vec<u64> = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((field, v)) = r.next_field()? {
        match (field, v) {
            (READ_REQUEST_QUERIES, Value::Len(q)) => {
                let mut qr = r.nested(q);
                queries.push(decode_query(&mut qr, queries.len())?);
            }
            (READ_REQUEST_ACCEPTED_TYPES, Value::Varint(t)) => accepted.push(t),
            (READ_REQUEST_ACCEPTED_TYPES, Value::Len(packed)) => {
                accepted.extend(r.nested(packed).packed_varints()?);
            }
            (READ_REQUEST_QUERIES, v) => {
                return Err(wrong_type(&r, "ReadRequest", field, &v, WIRE_LEN).into())
            }
            (READ_REQUEST_ACCEPTED_TYPES, v) => {
                return Err(wrong_type(&r, "ReadRequest", field, &v, WIRE_VARINT).into())
            }
            _ => {}
        }
    }
    if queries.is_empty() {
        return Err(ReadError::BadRequest("read request has no queries".into()));
    }
    // The first type we support wins; none listed means SAMPLES (older clients).
    let response_type = if accepted.is_empty() {
        ResponseType::Samples
    } else {
        accepted
            .iter()
            .find_map(|&t| match t {
                RESPONSE_SAMPLES => Some(ResponseType::Samples),
                RESPONSE_STREAMED_XOR_CHUNKS => Some(ResponseType::StreamedXorChunks),
                _ => None,
            })
            .ok_or_else(|| {
                ReadError::BadRequest(format!(
                    "none of the accepted response types {accepted:?} is supported \
                     (0 = SAMPLES, 1 = STREAMED_XOR_CHUNKS)"
                ))
            })?
    };
    Ok(ReadRequest {
        queries,
        response_type,
    })
}

fn decode_query(r: &mut Reader<'_>, index: usize) -> Result<Query, ReadError> {
    let (mut start, mut end) = (0i64, 0i64);
    let mut matchers = Vec::new();
    while let Some((field, v)) = r.next_field()? {
        match (field, v) {
            (QUERY_START, Value::Varint(t)) => start = t as i64,
            (QUERY_END, Value::Varint(t)) => end = t as i64,
            (QUERY_MATCHERS, Value::Len(m)) => {
                let mut mr = r.nested(m);
                let (mut kind, mut name, mut value) = (0u64, "", "");
                while let Some((f, v)) = mr.next_field()? {
                    match (f, v) {
                        (MATCHER_TYPE, Value::Varint(t)) => kind = t,
                        (MATCHER_NAME, Value::Len(b)) => name = utf8(&mr, b, "matcher name")?,
                        (MATCHER_VALUE, Value::Len(b)) => value = utf8(&mr, b, "matcher value")?,
                        (MATCHER_TYPE, v) => {
                            return Err(wrong_type(&mr, "LabelMatcher", f, &v, WIRE_VARINT).into())
                        }
                        (MATCHER_NAME | MATCHER_VALUE, v) => {
                            return Err(wrong_type(&mr, "LabelMatcher", f, &v, WIRE_LEN).into())
                        }
                        _ => {}
                    }
                }
                let kind = i32::try_from(kind)
                    .ok()
                    .and_then(MatchType::from_i32)
                    .ok_or(MatcherError::InvalidMatchType(kind as i32))
                    .and_then(|k| Matcher::new(k, name, value))
                    .map_err(|e| ReadError::BadRequest(format!("query {index}: {e}")))?;
                matchers.push(kind);
            }
            (QUERY_START | QUERY_END, v) => {
                return Err(wrong_type(r, "Query", field, &v, WIRE_VARINT).into())
            }
            (QUERY_MATCHERS, v) => return Err(wrong_type(r, "Query", field, &v, WIRE_LEN).into()),
            // Hints (4) do not change the answer: the client filters and evaluates.
            _ => {}
        }
    }
    if end < start {
        return Err(ReadError::BadRequest(format!(
            "query {index}: end {end} is before start {start}"
        )));
    }
    if matchers.is_empty() {
        return Err(ReadError::BadRequest(format!(
            "query {index} has no matchers"
        )));
    }
    Ok(Query {
        start,
        end,
        matchers,
    })
}

// ---------------------------------------------------------------------------------------------
// SAMPLES

fn label_len(n: &str, v: &str) -> usize {
    1 + varint_len(n.len() as u64) + n.len() + 1 + varint_len(v.len() as u64) + v.len()
}

fn sample_len(s: &Sample) -> usize {
    let v = if s.v.to_bits() != 0 { 9 } else { 0 };
    let t = if s.t != 0 {
        1 + varint_len(s.t as u64)
    } else {
        0
    };
    v + t
}

fn put_labels(out: &mut Vec<u8>, field: u32, labels: &Labels) {
    for (n, v) in labels.iter() {
        put_key(out, field, WIRE_LEN);
        put_varint(out, label_len(n, v) as u64);
        put_bytes(out, LABEL_NAME, n.as_bytes());
        put_bytes(out, LABEL_VALUE, v.as_bytes());
    }
}

fn labels_len(labels: &Labels) -> usize {
    labels
        .iter()
        .map(|(n, v)| {
            let l = label_len(n, v);
            1 + varint_len(l as u64) + l
        })
        .sum()
}

/// What a response carried (for metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub series: u64,
    pub chunks: u64,
    pub samples: u64,
}

/// The uncompressed `ReadResponse` for a SAMPLES request: one result per query, in order;
/// series sorted by label set, samples in `[start, end]` minus deleted ones. Fails with
/// [`ReadError::SampleLimit`] once more than `sample_limit` samples were gathered.
pub fn samples_response(
    db: &Db,
    req: &ReadRequest,
    sample_limit: u64,
) -> Result<(Vec<u8>, ReadStats), ReadError> {
    let mut out = Vec::new();
    let mut total: u64 = 0;
    let mut series_sent: u64 = 0;
    let mut samples: Vec<Sample> = Vec::new();
    for q in &req.queries {
        let result = begin_len(&mut out, READ_RESPONSE_RESULTS);
        for series in db.select_iter(&q.matchers, q.start, q.end) {
            let series = series?;
            samples.clear();
            series
                .samples_into(q.start, q.end, &mut samples)
                .map_err(|e| ReadError::Storage(format!("series {}: {e}", series.labels)))?;
            if samples.is_empty() {
                continue;
            }
            total += samples.len() as u64;
            series_sent += 1;
            if total > sample_limit {
                return Err(ReadError::SampleLimit {
                    limit: sample_limit,
                });
            }
            let body: usize = labels_len(&series.labels)
                + samples
                    .iter()
                    .map(|s| {
                        let l = sample_len(s);
                        1 + varint_len(l as u64) + l
                    })
                    .sum::<usize>();
            put_key(&mut out, QUERY_RESULT_TIMESERIES, WIRE_LEN);
            put_varint(&mut out, body as u64);
            put_labels(&mut out, TIMESERIES_LABELS, &series.labels);
            for s in &samples {
                put_key(&mut out, TIMESERIES_SAMPLES, WIRE_LEN);
                put_varint(&mut out, sample_len(s) as u64);
                put_double(&mut out, SAMPLE_VALUE, s.v);
                put_int64(&mut out, SAMPLE_TIMESTAMP, s.t);
            }
        }
        end_len(&mut out, result);
    }
    Ok((
        out,
        ReadStats {
            series: series_sent,
            chunks: 0,
            samples: total,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// STREAMED_XOR_CHUNKS

/// A chunk to send: its time range and its bytes (stored ones, or re-encoded).
struct OutChunk<'a> {
    mint: i64,
    maxt: i64,
    data: std::borrow::Cow<'a, [u8]>,
}

impl OutChunk<'_> {
    /// Size of the `Chunk` message (min and max time are always written, even when zero).
    fn body_len(&self) -> usize {
        1 + varint_len(self.mint as u64)
            + 1
            + varint_len(self.maxt as u64)
            + 2
            + 1
            + varint_len(self.data.len() as u64)
            + self.data.len()
    }

    /// Size as a `ChunkedSeries.chunks` field.
    fn encoded_len(&self) -> usize {
        let body = self.body_len();
        1 + varint_len(body as u64) + body
    }

    fn put(&self, out: &mut Vec<u8>) {
        put_key(out, CHUNKED_SERIES_CHUNKS, WIRE_LEN);
        put_varint(out, self.body_len() as u64);
        put_key(out, CHUNK_MIN_TIME, WIRE_VARINT);
        put_varint(out, self.mint as u64);
        put_key(out, CHUNK_MAX_TIME, WIRE_VARINT);
        put_varint(out, self.maxt as u64);
        put_key(out, CHUNK_TYPE, WIRE_VARINT);
        put_varint(out, CHUNK_TYPE_XOR);
        put_bytes(out, CHUNK_DATA, &self.data);
    }
}

/// Chunks of `series` to send for `[start, end]`: stored bytes, unless a deleted interval
/// overlaps the chunk (then it is re-encoded without the deleted samples, or dropped if none
/// are left).
fn out_chunks<'a>(series: &'a SeriesChunks) -> Result<Vec<OutChunk<'a>>, ReadError> {
    let mut out = Vec::with_capacity(series.chunks.len());
    for c in &series.chunks {
        let overlaps = series
            .tombstones
            .iter()
            .any(|&(a, b)| a <= c.maxt && b >= c.mint);
        if !overlaps {
            out.push(OutChunk {
                mint: c.mint,
                maxt: c.maxt,
                data: std::borrow::Cow::Borrowed(&c.data),
            });
            continue;
        }
        let mut chunk = XorChunk::new();
        let (mut mint, mut maxt) = (i64::MAX, i64::MIN);
        let mut it = c
            .iter()
            .map_err(|e| ReadError::Storage(format!("series {}: {e}", series.labels)))?;
        for (t, v) in it.by_ref() {
            if !series.is_deleted(t) {
                chunk.append(t, v);
                mint = mint.min(t);
                maxt = maxt.max(t);
            }
        }
        if let Some(e) = it.err() {
            return Err(ReadError::Storage(format!("series {}: {e}", series.labels)));
        }
        if chunk.num_samples() > 0 {
            out.push(OutChunk {
                mint,
                maxt,
                data: std::borrow::Cow::Owned(chunk.into_bytes()),
            });
        }
    }
    Ok(out)
}

/// Append one frame (`uvarint len | BE u32 CRC32C | ChunkedReadResponse`) for `labels` and
/// `chunks` of query `query_index` to `out`.
fn put_frame(out: &mut Vec<u8>, query_index: usize, labels: &Labels, chunks: &[OutChunk<'_>]) {
    let series_len = labels_len(labels) + chunks.iter().map(OutChunk::encoded_len).sum::<usize>();
    let mut msg_len = 1 + varint_len(series_len as u64) + series_len;
    if query_index != 0 {
        msg_len += 1 + varint_len(query_index as u64);
    }
    put_varint(out, msg_len as u64);
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let msg_at = out.len();
    put_key(out, CHUNKED_RESPONSE_SERIES, WIRE_LEN);
    put_varint(out, series_len as u64);
    put_labels(out, CHUNKED_SERIES_LABELS, labels);
    for c in chunks {
        c.put(out);
    }
    put_int64(out, CHUNKED_RESPONSE_QUERY_INDEX, query_index as i64);
    debug_assert_eq!(out.len() - msg_at, msg_len);
    let crc = crc32c::crc32c(&out[msg_at..]);
    out[crc_at..msg_at].copy_from_slice(&crc.to_be_bytes());
}

/// Stream every query's series as frames of at most `max_frame_bytes` (a frame holds at least
/// one chunk, so a single chunk larger than the budget still goes out). Frames are appended to
/// a buffer that is handed to `emit` whenever it reaches `flush_bytes`, and at the end; `emit`
/// returns `false` when the client is gone, which stops the work.
pub fn stream_chunks(
    db: &Db,
    req: &ReadRequest,
    max_frame_bytes: usize,
    flush_bytes: usize,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<ReadStats, ReadError> {
    let mut stats = ReadStats::default();
    let mut buf = Vec::with_capacity(flush_bytes + max_frame_bytes);
    for (qi, q) in req.queries.iter().enumerate() {
        for series in db.select_iter(&q.matchers, q.start, q.end) {
            let series = series?;
            let chunks = out_chunks(&series)?;
            if chunks.is_empty() {
                continue;
            }
            stats.series += 1;
            stats.chunks += chunks.len() as u64;
            // Frame length varint (≤ 5), CRC (4), series key and length (≤ 6), query index
            // (≤ 11): 26 bytes at most besides the labels and chunks.
            let overhead = 26 + labels_len(&series.labels);
            let mut from = 0;
            let mut size = overhead;
            for (i, c) in chunks.iter().enumerate() {
                let len = c.encoded_len();
                if i > from && size + len > max_frame_bytes {
                    put_frame(&mut buf, qi, &series.labels, &chunks[from..i]);
                    from = i;
                    size = overhead;
                }
                size += len;
            }
            put_frame(&mut buf, qi, &series.labels, &chunks[from..]);
            if buf.len() >= flush_bytes && !emit(std::mem::take(&mut buf)) {
                return Ok(stats);
            }
        }
    }
    if !buf.is_empty() {
        emit(buf);
    }
    Ok(stats)
}

/// Content-Type of a streamed response, exactly as clients expect it.
pub const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";
