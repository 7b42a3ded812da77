//! Remote write 1.0: snappy + protobuf `WriteRequest` → validated batch → [`Db::append`].
//!
//! Steps, each with its own error (the server maps them to statuses in one table):
//! 1. [`check_headers`]: `Content-Type` and `Content-Encoding` (v2 and unknown encodings → 415).
//! 2. [`super::decompress`]: the snappy block header's decoded length is checked against the cap
//!    **before** the output is allocated.
//! 3. [`decode`]: the protobuf is read borrowing from the decompressed buffer — labels stay
//!    `&[u8]` slices into it, samples go to one flat vector; no allocation per series, label or
//!    sample. Strings are copied only when the head creates a new series.
//! 4. [`store`]: each series' labels are normalised as Prometheus tolerates (empty values
//!    dropped, sorted by name) and checked; valid series go to the engine in one append,
//!    invalid ones are counted and reported. Valid samples are stored even when others of the
//!    request are rejected; the answer is then 400 naming the first offending series.
//!
//! Native histograms (`TimeSeries` field 4) and exemplars (field 3) are not stored yet. They
//! are counted, never acknowledged: a request carrying any gets 400 naming how many of each
//! were refused and the first series that carried them, after its float samples were stored
//! (a 2xx would tell the sender they were kept). Metadata entries are accepted and not kept,
//! as Prometheus's own receiver does.

use std::fmt::Write as _;

use thiserror::Error;

use super::proto::types::*;
use super::proto::{wrong_type, ProtoError, Reader, Value, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT};
use super::BodyError;
use crate::model::go_quote;
use crate::tsdb::head::{InvalidLabels, RejectCounts, RejectReason};
use crate::tsdb::{AppendError, AppendSeries, Db, Sample};

/// Why a remote-write request was not (entirely) stored.
#[derive(Debug, Error)]
pub enum WriteError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("cannot decode WriteRequest: {0}")]
    Proto(#[from] ProtoError),
    /// Some samples could never be stored; the valid rest was stored.
    #[error("{0}")]
    Rejected(Box<Rejections>),
    /// Nothing was stored; a retry may succeed.
    #[error("{0}")]
    Storage(#[from] AppendError),
}

/// The samples of a request that were refused, and the first offender.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejections {
    /// Rejected samples by reason.
    pub counts: RejectCounts,
    /// Native histogram samples and exemplars refused because cairn does not store them yet.
    pub unsupported: Unsupported,
    /// Samples stored from the same request.
    pub stored: u64,
    /// Index of the first offending series in the request, its labels and what was wrong.
    pub first_series: usize,
    pub first_labels: String,
    pub first_reason: String,
}

impl std::fmt::Display for Rejections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Unsupported {
            histograms,
            exemplars,
        } = self.unsupported;
        write!(
            f,
            "{} samples rejected, {} stored",
            self.counts.total(),
            self.stored
        )?;
        if histograms + exemplars > 0 {
            write!(
                f,
                "; {histograms} native histogram samples and {exemplars} exemplars refused: \
                 this version of cairn does not store them (send float samples only: \
                 `send_native_histograms: false` and `send_exemplars: false`)"
            )?;
        }
        write!(
            f,
            "; first: series #{} {}: {}; rejected by reason:",
            self.first_series, self.first_labels, self.first_reason
        )?;
        for (name, n) in self.counts.by_reason() {
            if n > 0 {
                write!(f, " {name}={n}")?;
            }
        }
        Ok(())
    }
}

/// What a request carried that cairn does not store yet. Counted, and answered 400.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported {
    /// Native histogram samples (`TimeSeries.histograms`).
    pub histograms: u64,
    /// Exemplars (`TimeSeries.exemplars`).
    pub exemplars: u64,
}

/// What a fully successful request did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    pub samples: u64,
    /// Exact duplicates of stored samples: accepted as no-ops (idempotent retries).
    pub duplicates: u64,
    pub new_series: u64,
    /// Metadata entries (accepted and ignored, as Prometheus does).
    pub metadata: u64,
}

/// Check the media type and encoding. Remote write 1.0 is `application/x-protobuf`, optionally
/// with `proto=prometheus.WriteRequest`; an absent type means 1.0 too. Encoding must be snappy
/// (absent is taken as snappy, as Prometheus's receiver does).
pub fn check_headers(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), WriteError> {
    if let Some(ct) = content_type.map(str::trim).filter(|s| !s.is_empty()) {
        let mut parts = ct.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(WriteError::UnsupportedMediaType(format!(
                "unsupported Content-Type {ct:?}: remote write 1.0 expects application/x-protobuf"
            )));
        }
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("proto") {
                let v = v.trim().trim_matches('"');
                if v != "prometheus.WriteRequest" {
                    return Err(WriteError::UnsupportedMediaType(format!(
                        "unsupported remote write message {v:?}: this receiver speaks remote write 1.0 \
                         (prometheus.WriteRequest) only; set `protobuf_message: prometheus.WriteRequest` \
                         in the sender's remote_write config"
                    )));
                }
            }
        }
    }
    if let Some(enc) = content_encoding.map(str::trim).filter(|s| !s.is_empty()) {
        if !enc.eq_ignore_ascii_case("snappy") {
            return Err(WriteError::UnsupportedMediaType(format!(
                "unsupported Content-Encoding {enc:?}: remote write bodies are snappy-compressed"
            )));
        }
    }
    Ok(())
}

/// One `TimeSeries` of a decoded request: ranges into [`WriteBatch`]'s flat vectors.
#[derive(Debug, Clone, Copy)]
struct RawSeries {
    labels: (u32, u32),
    samples: (u32, u32),
    /// Index of the `TimeSeries` in the request (series without samples included).
    index: u32,
}

/// A label as received: name and value bytes, borrowed from the request.
pub type RawLabel<'a> = (&'a [u8], &'a [u8]);

/// A decoded `WriteRequest`, borrowing label bytes from the decompressed body.
#[derive(Debug, Default)]
pub struct WriteBatch<'a> {
    labels: Vec<RawLabel<'a>>,
    samples: Vec<Sample>,
    series: Vec<RawSeries>,
    /// `TimeSeries` in the request, with samples or not.
    timeseries: usize,
    /// Histogram samples and exemplars the request carried (not stored yet).
    pub unsupported: Unsupported,
    /// The first `TimeSeries` that carried any: its index in the request and its labels.
    first_unsupported: Option<(usize, String)>,
    pub metadata: u64,
}

impl<'a> WriteBatch<'a> {
    /// Number of `TimeSeries` with samples.
    pub fn num_series(&self) -> usize {
        self.series.len()
    }

    pub fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// Raw (not yet normalised) labels and the samples of series `i`.
    pub fn series(&self, i: usize) -> (&[RawLabel<'a>], &[Sample]) {
        let s = self.series[i];
        (
            &self.labels[s.labels.0 as usize..s.labels.1 as usize],
            &self.samples[s.samples.0 as usize..s.samples.1 as usize],
        )
    }
}

// Field numbers (prompb/remote.proto, prompb/types.proto).
const WRITE_REQUEST_TIMESERIES: u32 = 1;
const WRITE_REQUEST_METADATA: u32 = 3;

/// Decode a `WriteRequest`. Unknown fields are skipped (forward compatibility); a known field
/// with the wrong wire type is an error.
pub fn decode(buf: &[u8]) -> Result<WriteBatch<'_>, ProtoError> {
    let mut batch = WriteBatch {
        // Sized for typical requests (a label takes ~26 bytes on the wire, a series ~250) so
        // the index stays below the decoded size; requests of unusually small labels grow it.
        labels: Vec::with_capacity(buf.len() / 32),
        samples: Vec::with_capacity(buf.len() / 256),
        series: Vec::with_capacity(buf.len() / 256),
        ..WriteBatch::default()
    };
    let mut r = Reader::new(buf);
    while let Some((field, v)) = r.next_field()? {
        match (field, v) {
            (WRITE_REQUEST_TIMESERIES, Value::Len(ts)) => {
                let mut tr = r.nested(ts);
                decode_series(&mut tr, &mut batch)?;
            }
            (WRITE_REQUEST_METADATA, Value::Len(_)) => batch.metadata += 1,
            (WRITE_REQUEST_TIMESERIES | WRITE_REQUEST_METADATA, v) => {
                return Err(wrong_type(&r, "WriteRequest", field, &v, WIRE_LEN))
            }
            _ => {}
        }
    }
    Ok(batch)
}

fn decode_series<'a>(r: &mut Reader<'a>, batch: &mut WriteBatch<'a>) -> Result<(), ProtoError> {
    let labels_start = batch.labels.len();
    let samples_start = batch.samples.len();
    let unsupported_before = batch.unsupported;
    let index = batch.timeseries;
    batch.timeseries += 1;
    while let Some((field, v)) = r.next_field()? {
        match (field, v) {
            (TIMESERIES_LABELS, Value::Len(l)) => {
                if let Some(pair) = label_fast(l) {
                    batch.labels.push(pair);
                    continue;
                }
                let mut lr = r.nested(l);
                let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
                while let Some((f, v)) = lr.next_field()? {
                    match (f, v) {
                        (LABEL_NAME, Value::Len(b)) => name = b,
                        (LABEL_VALUE, Value::Len(b)) => value = b,
                        (LABEL_NAME | LABEL_VALUE, v) => {
                            return Err(wrong_type(&lr, "Label", f, &v, WIRE_LEN))
                        }
                        _ => {}
                    }
                }
                batch.labels.push((name, value));
            }
            (TIMESERIES_SAMPLES, Value::Len(s)) => {
                if let Some(sample) = sample_fast(s) {
                    batch.samples.push(sample);
                    continue;
                }
                let mut sr = r.nested(s);
                let mut sample = Sample { t: 0, v: 0.0 };
                while let Some((f, v)) = sr.next_field()? {
                    match (f, v) {
                        (SAMPLE_VALUE, Value::Fixed64(bits)) => sample.v = f64::from_bits(bits),
                        (SAMPLE_TIMESTAMP, Value::Varint(t)) => sample.t = t as i64,
                        (SAMPLE_VALUE, v) => {
                            return Err(wrong_type(&sr, "Sample", f, &v, WIRE_FIXED64))
                        }
                        (SAMPLE_TIMESTAMP, v) => {
                            return Err(wrong_type(&sr, "Sample", f, &v, WIRE_VARINT))
                        }
                        _ => {}
                    }
                }
                batch.samples.push(sample);
            }
            // Counted only: a request carrying any is answered 400 (module docs).
            (TIMESERIES_EXEMPLARS, Value::Len(_)) => batch.unsupported.exemplars += 1,
            (TIMESERIES_HISTOGRAMS, Value::Len(_)) => batch.unsupported.histograms += 1,
            (
                TIMESERIES_LABELS
                | TIMESERIES_SAMPLES
                | TIMESERIES_EXEMPLARS
                | TIMESERIES_HISTOGRAMS,
                v,
            ) => return Err(wrong_type(r, "TimeSeries", field, &v, WIRE_LEN)),
            _ => {}
        }
    }
    if batch.first_unsupported.is_none() && batch.unsupported != unsupported_before {
        let labels = format_raw_labels(&batch.labels[labels_start..]);
        batch.first_unsupported = Some((index, labels));
    }
    if batch.samples.len() == samples_start {
        batch.labels.truncate(labels_start);
        return Ok(());
    }
    let to_u32 = |n: usize| u32::try_from(n).map_err(|_| r.error("too many labels or samples"));
    batch.series.push(RawSeries {
        labels: (to_u32(labels_start)?, to_u32(batch.labels.len())?),
        samples: (to_u32(samples_start)?, to_u32(batch.samples.len())?),
        index: to_u32(index)?,
    });
    Ok(())
}

/// The layout every encoder produces for a `Label` with name and value shorter than 128 bytes:
/// `0x0a len name 0x12 len value`. Anything else takes the general path.
#[inline]
fn label_fast(l: &[u8]) -> Option<RawLabel<'_>> {
    let (&[0x0a, n], rest) = l.split_first_chunk::<2>()? else {
        return None;
    };
    if n >= 0x80 {
        return None;
    }
    let (name, rest) = rest.split_at_checked(n as usize)?;
    let (&[0x12, m], value) = rest.split_first_chunk::<2>()? else {
        return None;
    };
    (m < 0x80 && value.len() == m as usize).then_some((name, value))
}

/// The layout of a `Sample` with both fields present: `0x09 value(8) 0x10 varint`.
#[inline]
fn sample_fast(s: &[u8]) -> Option<Sample> {
    let (&[0x09], rest) = s.split_first_chunk::<1>()? else {
        return None;
    };
    let (v, rest) = rest.split_first_chunk::<8>()?;
    let (&[0x10], varint) = rest.split_first_chunk::<1>()? else {
        return None;
    };
    if varint.is_empty() || varint.len() > 10 {
        return None;
    }
    let mut t: u64 = 0;
    for (i, &b) in varint.iter().enumerate() {
        let last = i + 1 == varint.len();
        // Every byte but the last has the continuation bit; the 10th may only carry 1 bit.
        if (b >= 0x80) == last || (i == 9 && b > 1) {
            return None;
        }
        t |= u64::from(b & 0x7f) << (7 * i);
    }
    Some(Sample {
        t: t as i64,
        v: f64::from_bits(u64::from_le_bytes(*v)),
    })
}

/// `b` as `&str` if it is valid UTF-8. Label names and values are nearly always ASCII, and
/// `str::from_utf8`'s fixed cost on such short strings was a third of decode + normalise
/// (measured, `benches/remote.rs`), so ASCII takes a cheaper check first.
#[inline]
fn utf8(b: &[u8]) -> Option<&str> {
    if b.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        std::str::from_utf8(b).ok()
    }
}

/// Per-series label limits (clear 400s instead of unbounded label sets).
#[derive(Debug, Clone, Copy)]
pub struct LabelLimits {
    /// Labels per series, after empty values are dropped.
    pub max_labels: usize,
    pub max_name_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        LabelLimits {
            max_labels: 64,
            max_name_bytes: 1024,
            max_value_bytes: 16 * 1024,
        }
    }
}

/// Normalise one series' labels into `out` as Prometheus tolerates them: labels with an empty
/// value are dropped (an empty value means "absent"), the rest sorted by name. Fails for
/// invalid UTF-8, no labels left, an empty name, or a repeated name. On failure `out` is left
/// as it was.
pub fn normalize_labels<'a>(
    raw: &[RawLabel<'a>],
    out: &mut Vec<(&'a str, &'a str)>,
    limits: &LabelLimits,
) -> Result<(), InvalidLabels> {
    let start = out.len();
    let res = (|| {
        for &(n, v) in raw {
            if n.len() > limits.max_name_bytes {
                return Err(InvalidLabels::NameTooLong);
            }
            if v.len() > limits.max_value_bytes {
                return Err(InvalidLabels::ValueTooLong);
            }
            let (Some(n), Some(v)) = (utf8(n), utf8(v)) else {
                return Err(InvalidLabels::InvalidUtf8);
            };
            if !v.is_empty() {
                out.push((n, v));
            }
        }
        let ls = &mut out[start..];
        if ls.len() > limits.max_labels {
            return Err(InvalidLabels::TooManyLabels);
        }
        // Senders sort already; only sort when they did not.
        if !ls.is_sorted_by(|a, b| a.0 <= b.0) {
            ls.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        match ls.first() {
            None => return Err(InvalidLabels::NoLabels),
            Some(("", _)) => return Err(InvalidLabels::EmptyName),
            _ => {}
        }
        if ls.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(InvalidLabels::DuplicateName);
        }
        Ok(())
    })();
    if res.is_err() {
        out.truncate(start);
    }
    res
}

/// Store a decoded request. Returns the summary when every sample was stored (or was an exact
/// duplicate); [`WriteError::Rejected`] when some could never be stored (the valid rest was);
/// [`WriteError::Storage`] when nothing was stored and a retry may work.
pub fn store(
    db: &Db,
    batch: &WriteBatch<'_>,
    limits: &LabelLimits,
) -> Result<WriteSummary, WriteError> {
    let n = batch.num_series();
    let mut norm: Vec<(&str, &str)> = Vec::with_capacity(batch.labels.len());
    let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(n); // (request index, start, end)
    let mut counts = RejectCounts::default();
    let mut first_bad: Option<(usize, InvalidLabels)> = None;
    for i in 0..n {
        let (raw, samples) = batch.series(i);
        let start = norm.len();
        match normalize_labels(raw, &mut norm, limits) {
            Ok(()) => spans.push((i, start, norm.len())),
            Err(why) => {
                counts.add(RejectReason::InvalidLabels(why), samples.len() as u64);
                first_bad.get_or_insert((i, why));
            }
        }
    }
    let append: Vec<AppendSeries<'_>> = spans
        .iter()
        .map(|&(i, a, b)| AppendSeries {
            labels: &norm[a..b],
            samples: batch.series(i).1,
        })
        .collect();
    let report = db.append(&append)?;

    let summary = WriteSummary {
        samples: report.accepted,
        duplicates: report.duplicates_ignored,
        new_series: report.new_series,
        metadata: batch.metadata,
    };
    // The offender earliest in the request, whichever check found it: (request index,
    // labels, reason).
    let with_labels = |i: usize, why: String| {
        let s = batch.series[i];
        (s.index as usize, format_raw_labels(batch.series(i).0), why)
    };
    let bad = first_bad.map(|(i, why)| with_labels(i, describe_invalid(why, limits)));
    let engine = report
        .first_rejection
        .map(|r| with_labels(spans[r.series].0, describe_rejection(db, r.reason, r.t)));
    let unsupported = batch.first_unsupported.clone().map(|(i, labels)| {
        let Unsupported {
            histograms,
            exemplars,
        } = batch.unsupported;
        let what = match (histograms > 0, exemplars > 0) {
            (true, true) => "native histogram samples and exemplars",
            (true, false) => "native histogram samples",
            _ => "exemplars",
        };
        (
            i,
            labels,
            format!("carries {what}, which are not stored yet"),
        )
    });
    let Some((first_series, first_labels, first_reason)) = [bad, engine, unsupported]
        .into_iter()
        .flatten()
        .min_by_key(|x| x.0)
    else {
        return Ok(summary);
    };
    counts.merge(&report.rejected);
    Err(WriteError::Rejected(Box::new(Rejections {
        counts,
        unsupported: batch.unsupported,
        stored: report.accepted + report.duplicates_ignored,
        first_series,
        first_labels,
        first_reason,
    })))
}

/// A label-set problem, naming the limit that was crossed.
fn describe_invalid(why: InvalidLabels, l: &LabelLimits) -> String {
    match why {
        InvalidLabels::TooManyLabels => format!(
            "more than {} labels (--storage.remote.write-label-limit)",
            l.max_labels
        ),
        InvalidLabels::NameTooLong => format!(
            "label name longer than {} bytes (--storage.remote.write-label-name-length-limit)",
            l.max_name_bytes
        ),
        InvalidLabels::ValueTooLong => format!(
            "label value longer than {} bytes (--storage.remote.write-label-value-length-limit)",
            l.max_value_bytes
        ),
        other => other.describe().to_string(),
    }
}

/// Prometheus's wording (operators grep their logs for it), with the timestamp.
fn describe_rejection(db: &Db, reason: RejectReason, t: i64) -> String {
    match reason {
        RejectReason::SeriesLimit => format!(
            "series limit of {} reached (--storage.tsdb.max-series); new series are refused",
            db.head().options().max_series
        ),
        RejectReason::InvalidLabels(why) => why.describe().to_string(),
        RejectReason::OutOfOrder => format!("out of order sample (timestamp {t})"),
        RejectReason::Duplicate => {
            format!("duplicate sample for timestamp {t} with a different value")
        }
        RejectReason::OutOfBounds => {
            format!("out of bounds: timestamp {t} is too old for the head")
        }
        RejectReason::TooFarInFuture => format!("timestamp {t} is too far in the future"),
    }
}

/// `{name="value", …}` from raw label bytes as received (invalid UTF-8 shown lossily).
fn format_raw_labels(raw: &[RawLabel<'_>]) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in raw.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(
            s,
            "{}={}",
            String::from_utf8_lossy(n),
            go_quote(&String::from_utf8_lossy(v))
        );
    }
    s.push('}');
    s
}
