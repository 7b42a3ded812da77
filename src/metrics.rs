//! Self-metrics for `GET /metrics`, with the official `prometheus-client` crate, namespace
//! `cairn_`.
//!
//! Two kinds of metric live here:
//! - request metrics the server updates once per request (never per sample): counters and
//!   histograms of `prometheus-client`, in [`Metrics`];
//! - engine and process state read at scrape time from the engine's own relaxed atomics
//!   ([`crate::tsdb::head::HeadStats`], [`crate::tsdb::wal::WalStats`]) and from `/proc`, by
//!   the collectors at the end of this file — so the engine knows nothing of metrics and a
//!   scrape takes no lock on the write path.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::remote::write::Rejections;
use crate::tsdb::head::RejectCounts;
use crate::tsdb::wal::FSYNC_BUCKETS;
use crate::tsdb::Db;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    pub r#type: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 1 ms … ~33 s.
    exponential_buckets(0.001, 2.0, 16)
}

/// Request metrics, updated once per request.
#[derive(Debug)]
pub struct Metrics {
    pub write_requests: Family<CodeLabel, Counter>,
    pub write_samples: Counter,
    pub write_rejected: Family<ReasonLabel, Counter>,
    pub write_histograms_rejected: Family<ReasonLabel, Counter>,
    pub write_exemplars_rejected: Family<ReasonLabel, Counter>,
    pub write_duration: Histogram,
    pub write_bytes: Counter,
    pub read_requests: Family<ReadLabels, Counter>,
    pub read_duration: Family<TypeLabel, Histogram>,
    pub read_series: Counter,
    pub read_chunks: Counter,
    pub read_samples: Counter,
}

/// The reason of histograms and exemplars refused because cairn does not store them yet.
const UNSUPPORTED: &str = "unsupported";

impl Metrics {
    /// Count a remote-write request's rejected samples, histograms and exemplars by reason.
    pub fn rejected(&self, r: &Rejections) {
        for (reason, n) in r.counts.by_reason() {
            if n > 0 {
                self.write_rejected
                    .get_or_create(&ReasonLabel { reason })
                    .inc_by(n);
            }
        }
        let reason = UNSUPPORTED;
        for (family, n) in [
            (&self.write_histograms_rejected, r.unsupported.histograms),
            (&self.write_exemplars_rejected, r.unsupported.exemplars),
        ] {
            if n > 0 {
                family.get_or_create(&ReasonLabel { reason }).inc_by(n);
            }
        }
    }
}

/// The registry and the request metrics registered in it.
#[derive(Debug)]
pub struct MetricsRegistry {
    registry: Registry,
    pub m: Arc<Metrics>,
}

impl MetricsRegistry {
    /// Register everything; `db` is read at scrape time once the data directory is open.
    pub fn new(db: Arc<OnceLock<Arc<Db>>>) -> MetricsRegistry {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("cairn");
        let m = Arc::new(Metrics {
            write_requests: Family::default(),
            write_samples: Counter::default(),
            write_rejected: Family::default(),
            write_histograms_rejected: Family::default(),
            write_exemplars_rejected: Family::default(),
            write_duration: Histogram::new(latency_buckets()),
            write_bytes: Counter::default(),
            read_requests: Family::default(),
            read_duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            read_series: Counter::default(),
            read_chunks: Counter::default(),
            read_samples: Counter::default(),
        });
        // Touch the reasons so every series exists from the start (rate() needs a zero).
        for (reason, _) in RejectCounts::default().by_reason() {
            let _ = m.write_rejected.get_or_create(&ReasonLabel { reason });
        }
        for family in [&m.write_histograms_rejected, &m.write_exemplars_rejected] {
            let _ = family.get_or_create(&ReasonLabel {
                reason: UNSUPPORTED,
            });
        }
        r.register(
            "remote_write_requests",
            "Remote-write requests by HTTP status code",
            m.write_requests.clone(),
        );
        r.register(
            "remote_write_samples",
            "Samples accepted by remote write (stored, or exact duplicates of stored ones)",
            m.write_samples.clone(),
        );
        r.register(
            "remote_write_samples_rejected",
            "Samples remote write refused for good, by reason",
            m.write_rejected.clone(),
        );
        r.register(
            "remote_write_histograms_rejected",
            "Native histogram samples remote write refused for good, by reason \
             (unsupported: not stored by this version)",
            m.write_histograms_rejected.clone(),
        );
        r.register(
            "remote_write_exemplars_rejected",
            "Exemplars remote write refused for good, by reason \
             (unsupported: not stored by this version)",
            m.write_exemplars_rejected.clone(),
        );
        r.register(
            "remote_write_request_duration_seconds",
            "Time to answer a remote-write request",
            m.write_duration.clone(),
        );
        r.register(
            "remote_write_received_bytes",
            "Compressed remote-write request bytes received",
            m.write_bytes.clone(),
        );
        r.register(
            "remote_read_requests",
            "Remote-read requests by response type and HTTP status code",
            m.read_requests.clone(),
        );
        r.register(
            "remote_read_request_duration_seconds",
            "Time to answer a remote-read request (streamed: until the last frame)",
            m.read_duration.clone(),
        );
        r.register(
            "remote_read_series",
            "Series sent by remote read",
            m.read_series.clone(),
        );
        r.register(
            "remote_read_chunks",
            "Chunks sent by streamed remote read",
            m.read_chunks.clone(),
        );
        r.register(
            "remote_read_samples",
            "Samples sent by SAMPLES remote read",
            m.read_samples.clone(),
        );
        r.register_collector(Box::new(BuildInfo));
        r.register_collector(Box::new(EngineCollector { db }));
        // Process metrics are unprefixed, as every Prometheus client names them.
        root.register_collector(Box::new(ProcessCollector::new()));
        MetricsRegistry { registry: root, m }
    }

    /// The exposition (OpenMetrics text, `# EOF` included).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Content-Type of [`MetricsRegistry::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content-Type of [`to_text_format`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The OpenMetrics exposition rewritten in Prometheus's classic text format (0.0.4), for
/// clients that do not ask for OpenMetrics (`promtool check metrics`, curl, older scrapers):
/// a counter family `x` becomes `x_total` in its `# HELP`/`# TYPE` lines, as its samples are
/// named, and `# UNIT`/`# EOF` lines go.
pub fn to_text_format(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut lines = om.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            let counter = lines
                .peek()
                .is_some_and(|t| *t == format!("# TYPE {name} counter"));
            if counter && !name.ends_with("_total") {
                out.push_str(&format!("# HELP {name}_total{}\n", &rest[name.len()..]));
                lines.next();
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn counter_f64(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Info {
            version: &'static str,
        }
        let g = ConstGauge::new(1i64);
        let mut m = enc.encode_descriptor(
            "build_info",
            "A metric with a constant 1 labelled by cairn's version.",
            None,
            MetricType::Gauge,
        )?;
        g.encode(m.encode_family(&Info {
            version: env!("CARGO_PKG_VERSION"),
        })?)
    }
}

fn cairn_now_ms() -> i64 {
    crate::tsdb::head::now_ms()
}

/// Head and WAL state, read from the engine's atomics at scrape time.
struct EngineCollector {
    db: Arc<OnceLock<Arc<Db>>>,
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineCollector")
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(db) = self.db.get() else {
            return Ok(());
        };
        let head = db.head();
        let hs = &head.stats;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut enc,
            "tsdb_head_series",
            "Series in the head.",
            ld(&hs.series) as f64,
        )?;
        counter(
            &mut enc,
            "tsdb_head_series_created",
            "Series created in the head.",
            ld(&hs.series_created),
        )?;
        counter(
            &mut enc,
            "tsdb_head_chunks_created",
            "Head chunks created.",
            ld(&hs.chunks_created),
        )?;
        counter(
            &mut enc,
            "tsdb_head_samples_appended",
            "Samples appended to the head.",
            ld(&hs.samples_appended),
        )?;
        counter(
            &mut enc,
            "tsdb_head_chunk_write_errors",
            "Full head chunks that could not be written to chunks_head/ (kept in memory).",
            ld(&hs.chunk_write_errors),
        )?;
        if head.min_time() <= head.max_time() {
            gauge(
                &mut enc,
                "tsdb_head_min_time_seconds",
                "Oldest sample time in the head.",
                head.min_time() as f64 / 1000.0,
            )?;
            gauge(
                &mut enc,
                "tsdb_head_max_time_seconds",
                "Newest sample time in the head.",
                head.max_time() as f64 / 1000.0,
            )?;
        }

        let ws = db.wal().stats();
        let mut buckets: Vec<(f64, u64)> = FSYNC_BUCKETS
            .iter()
            .zip(&ws.fsync_buckets)
            .map(|(&b, n)| (b, ld(n)))
            .collect();
        buckets.push((f64::MAX, ws.fsync_buckets.last().map_or(0, ld)));
        let mut m = enc.encode_descriptor(
            "tsdb_wal_fsync_duration_seconds",
            "Duration of WAL fsyncs (one per group commit).",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            Duration::from_nanos(ld(&ws.fsync_nanos)).as_secs_f64(),
            ld(&ws.fsyncs),
            &buckets,
            None,
        )?;
        gauge(
            &mut enc,
            "tsdb_wal_segment_current",
            "Index of the WAL segment being written.",
            ld(&ws.segment) as f64,
        )?;
        counter(
            &mut enc,
            "tsdb_wal_writes_failed",
            "WAL writes that failed (each poisons the writer until a fresh segment opens).",
            ld(&ws.writes_failed),
        )?;
        counter(
            &mut enc,
            "tsdb_wal_records_written",
            "WAL records written.",
            ld(&ws.records_written),
        )?;
        counter(
            &mut enc,
            "tsdb_wal_written_bytes",
            "Bytes written to WAL segments.",
            ld(&ws.bytes_written),
        )?;
        let ds = &db.stats;
        let blocks = db.blocks();
        gauge(
            &mut enc,
            "tsdb_blocks_loaded",
            "Blocks readers see.",
            blocks.blocks.len() as f64,
        )?;
        let lowest = blocks
            .blocks
            .iter()
            .map(|b| b.meta().min_time)
            .chain((head.min_time() <= head.max_time()).then(|| head.min_time()))
            .min()
            .unwrap_or_else(cairn_now_ms);
        gauge(
            &mut enc,
            "tsdb_lowest_timestamp_seconds",
            "Oldest sample time stored (blocks and head); the current time while there is none.",
            lowest as f64 / 1000.0,
        )?;
        counter(
            &mut enc,
            "tsdb_compactions",
            "Head compaction runs (most find nothing to do).",
            ld(&ds.compactions),
        )?;
        counter(
            &mut enc,
            "tsdb_compactions_failed",
            "Head compaction runs that failed (retried at the next housekeeping interval).",
            ld(&ds.compaction_failures),
        )?;
        counter_f64(
            &mut enc,
            "tsdb_compaction_duration_seconds",
            "Time spent in head compaction runs.",
            Duration::from_nanos(ld(&ds.compaction_nanos)).as_secs_f64(),
        )?;
        counter(
            &mut enc,
            "tsdb_blocks_written",
            "Blocks written from the head.",
            ld(&ds.blocks_written),
        )?;
        counter(
            &mut enc,
            "tsdb_blocks_merged",
            "Leveled compactions: blocks merged into a larger one.",
            ld(&ds.blocks_merged),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "tsdb_retention_deleted_blocks",
                "Blocks deleted by retention, by reason (time or size).",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in [("time", &ds.retention_time), ("size", &ds.retention_size)] {
                let labels = [("reason", reason)];
                let e = m.encode_family(&labels)?;
                ConstCounter::new(ld(v)).encode(e)?;
            }
        }
        let block_bytes: u64 = blocks.blocks.iter().map(|b| b.size()).sum();
        let other_bytes = db.wal_and_head_bytes();
        gauge(
            &mut enc,
            "tsdb_storage_blocks_bytes",
            "Bytes of the blocks on disk.",
            block_bytes as f64,
        )?;
        gauge(
            &mut enc,
            "tsdb_storage_bytes",
            "Bytes on disk counted by retention.size: blocks, WAL (with checkpoints), head chunks.",
            (block_bytes + other_bytes) as f64,
        )?;
        gauge(
            &mut enc,
            "tsdb_tombstones",
            "Deleted intervals waiting in blocks (clean_tombstones or compaction removes them).",
            blocks
                .blocks
                .iter()
                .map(|b| b.tombstones().len())
                .sum::<usize>() as f64,
        )?;
        let highest = blocks
            .blocks
            .iter()
            .map(|b| b.meta().max_time - 1)
            .chain((head.min_time() <= head.max_time()).then(|| head.max_time()))
            .max()
            .unwrap_or_else(cairn_now_ms);
        gauge(
            &mut enc,
            "tsdb_highest_timestamp_seconds",
            "Newest sample time stored (blocks and head); the current time while there is none.",
            highest as f64 / 1000.0,
        )?;
        gauge(
            &mut enc,
            "tsdb_retention_limit_seconds",
            "--storage.tsdb.retention.time (0: no time limit).",
            db.retention().retention_ms as f64 / 1000.0,
        )?;
        gauge(
            &mut enc,
            "tsdb_retention_limit_bytes",
            "--storage.tsdb.retention.size (0: no size limit).",
            db.retention().retention_bytes as f64,
        )?;
        counter(
            &mut enc,
            "tsdb_head_truncations",
            "Head truncations after a block was written.",
            ld(&hs.truncations),
        )?;
        counter(
            &mut enc,
            "tsdb_head_series_removed",
            "Series removed from the head by truncation (no data left in it).",
            ld(&hs.series_removed),
        )?;
        for (name, help, v) in [
            (
                "tsdb_checkpoint_creations",
                "WAL checkpoints started.",
                &ws.checkpoint_creations,
            ),
            (
                "tsdb_checkpoint_creations_failed",
                "WAL checkpoints that failed (retried at the next compaction).",
                &ws.checkpoint_creations_failed,
            ),
            (
                "tsdb_checkpoint_deletions",
                "Old WAL checkpoints deleted.",
                &ws.checkpoint_deletions,
            ),
            (
                "tsdb_checkpoint_deletions_failed",
                "Old WAL checkpoints that could not be deleted.",
                &ws.checkpoint_deletions_failed,
            ),
            (
                "tsdb_wal_truncations",
                "WAL truncations (segments covered by a checkpoint deleted).",
                &ws.truncations,
            ),
            (
                "tsdb_wal_truncations_failed",
                "WAL truncations that failed.",
                &ws.truncations_failed,
            ),
        ] {
            counter(&mut enc, name, help, ld(v))?;
        }
        let report = db.open_report();
        counter(
            &mut enc,
            "tsdb_wal_corruptions",
            "Torn or corrupt WAL tails repaired (at open).",
            ld(&ws.corruptions_repaired),
        )?;
        gauge(
            &mut enc,
            "tsdb_data_replay_duration_seconds",
            "Time the last start spent recovering the data directory (chunks_head and WAL).",
            report.duration.as_secs_f64(),
        )?;
        Ok(())
    }
}

/// `process_*` metrics from `/proc/self` (Linux); `prometheus-client` has none.
#[derive(Debug)]
struct ProcessCollector {
    start_time: f64,
}

impl ProcessCollector {
    fn new() -> Self {
        ProcessCollector {
            start_time: process_start_time().unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            }),
        }
    }
}

/// Clock ticks per second and page size, from sysconf.
fn ticks_and_page() -> (f64, f64) {
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (
        if ticks > 0 { ticks as f64 } else { 100.0 },
        if page > 0 { page as f64 } else { 4096.0 },
    )
}

/// Fields of `/proc/self/stat` after the command (which may contain spaces and parentheses).
fn proc_stat() -> Option<Vec<String>> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn process_start_time() -> Option<f64> {
    // Field 22 (starttime, in ticks since boot) is index 19 after the command.
    let start_ticks: f64 = proc_stat()?.get(19)?.parse().ok()?;
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + start_ticks / ticks_and_page().0)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (ticks, page) = ticks_and_page();
        if let Some(f) = proc_stat() {
            // utime, stime (fields 14, 15) and vsize, rss (23, 24), 1-based, minus 3.
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
            if let (Some(u), Some(s)) = (num(11), num(12)) {
                let c = ConstCounter::new((u + s) / ticks);
                c.encode(enc.encode_descriptor(
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds.",
                    None,
                    MetricType::Counter,
                )?)?;
            }
            if let Some(v) = num(20) {
                gauge(
                    &mut enc,
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                    v,
                )?;
            }
            if let Some(r) = num(21) {
                gauge(
                    &mut enc,
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                    r * page,
                )?;
            }
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut enc,
                "process_open_fds",
                "Number of open file descriptors.",
                d.count() as f64,
            )?;
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            gauge(
                &mut enc,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                lim.rlim_cur as f64,
            )?;
        }
        gauge(
            &mut enc,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            self.start_time,
        )
    }
}
