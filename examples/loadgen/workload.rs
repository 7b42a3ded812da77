//! The load generator's workload: node_exporter-like series scraped on a schedule and sharded
//! the way Prometheus's remote-write queue manager does it.
//!
//! Pure: no I/O, no threads, no clock. Deterministic from [`Config::seed`]. A criterion bench
//! can reuse it with `#[path = "../examples/loadgen/workload.rs"] mod workload;`; the
//! including crate root must also declare `#[path = "…/tests/common/proto.rs"] mod proto;`.
#![allow(dead_code)]

use crate::proto::{encode_write, Label, Sample, TimeSeries, WriteRequest};

/// Workload parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Total number of series.
    pub series: usize,
    /// Scrape interval in milliseconds.
    pub interval_ms: i64,
    /// Number of scrape rounds (one sample per series per round).
    pub rounds: usize,
    /// Timestamp of the start of round 0, in milliseconds.
    pub start_ms: i64,
    /// Number of remote-write shards (concurrent senders).
    pub shards: usize,
    /// Samples per write request.
    pub per_request: usize,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            series: 100_000,
            interval_ms: 15_000,
            rounds: 10,
            start_ms: 0,
            shards: 8,
            per_request: 2000,
            seed: 1,
        }
    }
}

/// SplitMix64: tiny, fast, good enough for synthetic data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(seed);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); n > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Mix a seed with a stream number so per-series/per-target streams are independent.
fn substream(seed: u64, domain: u64, n: u64) -> Rng {
    Rng::new(
        seed ^ domain.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// How a series' value evolves from round to round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Increases by a random increment in [0, scale) each round (rounded to an integer if `integer`).
    Counter { scale: f64, integer: bool },
    /// Random walk of ±`step` (snapped to multiples of `quantum`), kept in [0, max].
    Gauge { max: f64, step: f64, quantum: f64 },
    /// Never changes.
    Constant(f64),
    /// The scrape timestamp in seconds (`node_time_seconds`).
    Time,
}

/// The Prometheus metric type a family would carry in metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Counter,
    Gauge,
}

/// One series of the workload.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesDef {
    /// Sorted by name, `__name__` first.
    pub labels: Vec<Label>,
    /// Index of the scrape target this series belongs to.
    pub target: usize,
    pub kind: Kind,
    /// Remote-write shard: `hash(labels) % shards`.
    pub shard: usize,
}

impl SeriesDef {
    pub fn name(&self) -> &str {
        self.labels
            .iter()
            .find(|l| l.name == "__name__")
            .map(|l| l.value.as_str())
            .unwrap_or("")
    }
}

/// One planned write request: which (series, round) samples it carries, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub shard: usize,
    /// (series index, round) per sample; one TimeSeries per sample, as Prometheus 2.42 sends.
    pub entries: Vec<(u32, u32)>,
}

impl Batch {
    /// Round of the first sample (rounds are sent in order within a shard).
    pub fn first_round(&self) -> usize {
        self.entries.first().map(|e| e.1 as usize).unwrap_or(0)
    }
}

/// A ready-to-send request body.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// snappy(protobuf(WriteRequest)).
    pub body: Vec<u8>,
    pub samples: usize,
    pub first_round: usize,
}

/// The whole workload: series, schedule, values.
#[derive(Clone, Debug)]
pub struct Workload {
    pub cfg: Config,
    pub series: Vec<SeriesDef>,
    /// Per-target scrape offset in [0, interval).
    pub offsets: Vec<i64>,
    /// Value of series i at round k: `values[i * rounds + k]`.
    pub values: Vec<f64>,
}

const MODES: &[&str] = &[
    "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
];
const REGIONS: &[&str] = &["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1"];
const ENVS: &[&str] = &["prod", "prod", "prod", "staging", "dev"];
const FILESYSTEMS: &[(&str, &str, &str)] = &[
    ("/dev/sda1", "ext4", "/"),
    ("/dev/sda2", "ext4", "/var"),
    ("/dev/nvme0n1p1", "xfs", "/data"),
    ("tmpfs", "tmpfs", "/run"),
];
const NET_DEVICES: &[&str] = &["eth0", "eth1", "lo"];
const DISKS: &[&str] = &["nvme0n1", "sda"];
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One series of a target's catalog before the target labels are added.
struct Proto {
    name: &'static str,
    extra: Vec<(&'static str, String)>,
    kind: Kind,
}

fn p(name: &'static str, extra: Vec<(&'static str, String)>, kind: Kind) -> Proto {
    Proto { name, extra, kind }
}

/// The node_exporter catalog of target `j` (its size varies with the host's CPU count).
fn catalog(j: usize, rng: &mut Rng, interval_s: f64, start_s: f64) -> Vec<Proto> {
    let ncpu = [2usize, 4, 4, 8, 8, 8, 16][rng.below(7) as usize];
    let mem_total = [8.0, 16.0, 32.0, 64.0][rng.below(4) as usize] * GIB;
    let mut v = Vec::with_capacity(16 * ncpu + 80);
    let cnt = |scale: f64| Kind::Counter {
        scale,
        integer: true,
    };
    let mem = |frac: f64| Kind::Gauge {
        max: mem_total,
        step: mem_total * frac,
        quantum: 4096.0,
    };

    for cpu in 0..ncpu {
        for &mode in MODES {
            let share = match mode {
                "idle" => 0.7,
                "user" => 0.15,
                "system" => 0.08,
                _ => 0.01,
            };
            v.push(p(
                "node_cpu_seconds_total",
                vec![("cpu", cpu.to_string()), ("mode", mode.to_string())],
                Kind::Counter {
                    scale: 2.0 * share * interval_s,
                    integer: false,
                },
            ));
        }
    }
    v.push(p(
        "node_memory_MemTotal_bytes",
        vec![],
        Kind::Constant(mem_total),
    ));
    v.push(p(
        "node_memory_SwapTotal_bytes",
        vec![],
        Kind::Constant(2.0 * GIB),
    ));
    for name in [
        "node_memory_MemFree_bytes",
        "node_memory_MemAvailable_bytes",
        "node_memory_Buffers_bytes",
        "node_memory_Cached_bytes",
        "node_memory_Active_bytes",
        "node_memory_Inactive_bytes",
        "node_memory_Dirty_bytes",
        "node_memory_SwapFree_bytes",
    ] {
        v.push(p(name, vec![], mem(0.002)));
    }
    for &(device, fstype, mountpoint) in FILESYSTEMS {
        let size = if fstype == "tmpfs" {
            mem_total / 10.0
        } else {
            [50.0, 100.0, 500.0, 2000.0][rng.below(4) as usize] * GIB
        };
        let fl = || {
            vec![
                ("device", device.to_string()),
                ("fstype", fstype.to_string()),
                ("mountpoint", mountpoint.to_string()),
            ]
        };
        v.push(p("node_filesystem_size_bytes", fl(), Kind::Constant(size)));
        for name in ["node_filesystem_avail_bytes", "node_filesystem_free_bytes"] {
            v.push(p(
                name,
                fl(),
                Kind::Gauge {
                    max: size,
                    step: size * 0.0005,
                    quantum: 4096.0,
                },
            ));
        }
    }
    for &dev in NET_DEVICES {
        for (name, scale) in [
            ("node_network_receive_bytes_total", 2e6),
            ("node_network_transmit_bytes_total", 1e6),
            ("node_network_receive_packets_total", 2e3),
            ("node_network_transmit_packets_total", 1e3),
        ] {
            v.push(p(name, vec![("device", dev.to_string())], cnt(scale)));
        }
    }
    for &dev in DISKS {
        for (name, kind) in [
            ("node_disk_read_bytes_total", cnt(4e6)),
            ("node_disk_written_bytes_total", cnt(8e6)),
            ("node_disk_reads_completed_total", cnt(400.0)),
            ("node_disk_writes_completed_total", cnt(800.0)),
            (
                "node_disk_io_time_seconds_total",
                Kind::Counter {
                    scale: 0.2 * interval_s,
                    integer: false,
                },
            ),
        ] {
            v.push(p(name, vec![("device", dev.to_string())], kind));
        }
    }
    for name in ["node_load1", "node_load5", "node_load15"] {
        v.push(p(
            name,
            vec![],
            Kind::Gauge {
                max: ncpu as f64 * 2.0,
                step: 0.3,
                quantum: 0.01,
            },
        ));
    }
    v.push(p(
        "node_uname_info",
        vec![
            ("domainname", "(none)".to_string()),
            ("machine", "x86_64".to_string()),
            ("nodename", format!("host-{j:04}")),
            ("release", "5.10.0-21-amd64".to_string()),
            ("sysname", "Linux".to_string()),
            (
                "version",
                "#1 SMP Debian 5.10.162-1 (2023-01-21)".to_string(),
            ),
        ],
        Kind::Constant(1.0),
    ));
    v.push(p(
        "node_boot_time_seconds",
        vec![],
        Kind::Constant((start_s - rng.below(30 * 86_400) as f64).floor()),
    ));
    v.push(p("node_time_seconds", vec![], Kind::Time));
    v.push(p("node_context_switches_total", vec![], cnt(1e5)));
    v.push(p("node_intr_total", vec![], cnt(5e4)));
    v.push(p("node_forks_total", vec![], cnt(200.0)));
    v.push(p(
        "node_procs_running",
        vec![],
        Kind::Gauge {
            max: 64.0,
            step: 2.0,
            quantum: 1.0,
        },
    ));
    v.push(p(
        "node_procs_blocked",
        vec![],
        Kind::Gauge {
            max: 8.0,
            step: 1.0,
            quantum: 1.0,
        },
    ));
    v.push(p(
        "node_filefd_allocated",
        vec![],
        Kind::Gauge {
            max: 1e5,
            step: 50.0,
            quantum: 1.0,
        },
    ));
    v.push(p(
        "node_entropy_available_bits",
        vec![],
        Kind::Gauge {
            max: 4096.0,
            step: 64.0,
            quantum: 1.0,
        },
    ));
    for chip in ["platform_coretemp_0", "platform_coretemp_1"] {
        for sensor in ["temp1", "temp2"] {
            v.push(p(
                "node_hwmon_temp_celsius",
                vec![("chip", chip.to_string()), ("sensor", sensor.to_string())],
                Kind::Gauge {
                    max: 100.0,
                    step: 1.0,
                    quantum: 0.5,
                },
            ));
        }
    }
    v
}

/// FNV-1a over the label pairs (0xff separators), like hashing a label set.
pub fn hash_labels(labels: &[Label]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for l in labels {
        for b in l
            .name
            .bytes()
            .chain([0xff])
            .chain(l.value.bytes())
            .chain([0xff])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn quantize(x: f64, q: f64) -> f64 {
    (x / q).round() * q
}

impl Workload {
    /// Build the series catalog, schedule and all values.
    pub fn new(cfg: Config) -> Workload {
        let shards = cfg.shards.max(1);
        let interval = cfg.interval_ms.max(1);
        let interval_s = interval as f64 / 1000.0;
        let start_s = (cfg.start_ms / 1000) as f64;
        let mut series = Vec::with_capacity(cfg.series);
        let mut offsets = Vec::new();
        let mut j = 0usize;
        while series.len() < cfg.series {
            let mut rng = substream(cfg.seed, 1, j as u64);
            offsets.push(rng.below(interval as u64) as i64);
            let region = rng.pick(REGIONS);
            let zone = format!("{region}{}", ["a", "b", "c"][rng.below(3) as usize]);
            let env = rng.pick(ENVS);
            let cluster = format!("{env}-{}", rng.below(6));
            let instance = format!("host-{j:04}:9100");
            for proto in catalog(j, &mut rng, interval_s, start_s) {
                if series.len() == cfg.series {
                    break;
                }
                let mut labels: Vec<Label> = vec![
                    Label::new("__name__", proto.name),
                    Label::new("cluster", cluster.clone()),
                    Label::new("env", env),
                    Label::new("instance", instance.clone()),
                    Label::new("job", "node"),
                    Label::new("region", region),
                    Label::new("zone", zone.clone()),
                ];
                labels.extend(proto.extra.into_iter().map(|(n, v)| Label::new(n, v)));
                labels.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
                let shard = (hash_labels(&labels) % shards as u64) as usize;
                series.push(SeriesDef {
                    labels,
                    target: j,
                    kind: proto.kind,
                    shard,
                });
            }
            j += 1;
        }
        let mut w = Workload {
            cfg,
            series,
            offsets,
            values: Vec::new(),
        };
        w.values = w.compute_values();
        w
    }

    pub fn targets(&self) -> usize {
        self.offsets.len()
    }

    /// Timestamp (ms) of round `k` of target `j`.
    pub fn timestamp(&self, round: usize, target: usize) -> i64 {
        self.cfg.start_ms + round as i64 * self.cfg.interval_ms + self.offsets[target]
    }

    /// Largest timestamp of the run.
    pub fn last_timestamp(&self) -> i64 {
        let r = self.cfg.rounds.saturating_sub(1);
        (0..self.targets())
            .map(|j| self.timestamp(r, j))
            .max()
            .unwrap_or(self.cfg.start_ms)
    }

    pub fn value(&self, series: usize, round: usize) -> f64 {
        self.values[series * self.cfg.rounds + round]
    }

    fn compute_values(&self) -> Vec<f64> {
        let rounds = self.cfg.rounds;
        let mut out = Vec::with_capacity(self.series.len() * rounds);
        for (i, s) in self.series.iter().enumerate() {
            let mut rng = substream(self.cfg.seed, 2, i as u64);
            let mut v = match s.kind {
                Kind::Counter { scale, integer } => {
                    // Accumulated since boot: a few hours' worth of increments.
                    let x = rng.f64() * scale * 1000.0;
                    if integer {
                        x.floor()
                    } else {
                        x
                    }
                }
                Kind::Gauge { max, quantum, .. } => quantize(rng.f64() * max, quantum),
                Kind::Constant(c) => c,
                Kind::Time => 0.0,
            };
            for k in 0..rounds {
                if k > 0 {
                    match s.kind {
                        Kind::Counter { scale, integer } => {
                            let inc = rng.f64() * scale;
                            v += if integer { inc.floor() } else { inc };
                        }
                        Kind::Gauge { max, step, quantum } => {
                            let d = quantize((rng.f64() * 2.0 - 1.0) * step, quantum);
                            v = (v + d).clamp(0.0, max);
                        }
                        Kind::Constant(_) | Kind::Time => {}
                    }
                }
                if s.kind == Kind::Time {
                    v = self.timestamp(k, s.target) as f64 / 1000.0;
                }
                out.push(v);
            }
        }
        out
    }

    /// Average number of labels per series (including `__name__`).
    pub fn avg_labels(&self) -> f64 {
        let n: usize = self.series.iter().map(|s| s.labels.len()).sum();
        n as f64 / self.series.len().max(1) as f64
    }

    /// Metric family names, sorted and distinct.
    pub fn families(&self) -> Vec<String> {
        let mut f: Vec<String> = self.series.iter().map(|s| s.name().to_string()).collect();
        f.sort();
        f.dedup();
        f
    }

    /// The requests of every shard, in send order: each shard's stream of samples (round by
    /// round, series in index order) cut every `per_request` samples.
    pub fn plan(&self) -> Vec<Vec<Batch>> {
        let shards = self.cfg.shards.max(1);
        let per = self.cfg.per_request.max(1);
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); shards];
        for (i, s) in self.series.iter().enumerate() {
            members[s.shard].push(i as u32);
        }
        members
            .iter()
            .enumerate()
            .map(|(shard, m)| {
                let mut batches = Vec::new();
                let mut cur = Vec::with_capacity(per);
                for k in 0..self.cfg.rounds as u32 {
                    for &i in m {
                        cur.push((i, k));
                        if cur.len() == per {
                            batches.push(Batch {
                                shard,
                                entries: std::mem::replace(&mut cur, Vec::with_capacity(per)),
                            });
                        }
                    }
                }
                if !cur.is_empty() {
                    batches.push(Batch {
                        shard,
                        entries: cur,
                    });
                }
                batches
            })
            .collect()
    }

    /// The WriteRequest for one batch: one TimeSeries per sample, as Prometheus 2.42's queue
    /// manager builds them.
    pub fn write_request(&self, batch: &Batch) -> WriteRequest {
        WriteRequest {
            timeseries: batch
                .entries
                .iter()
                .map(|&(i, k)| {
                    let s = &self.series[i as usize];
                    TimeSeries {
                        labels: s.labels.clone(),
                        samples: vec![Sample {
                            value: self.value(i as usize, k as usize),
                            timestamp: self.timestamp(k as usize, s.target),
                        }],
                        ..Default::default()
                    }
                })
                .collect(),
            metadata: Vec::new(),
        }
    }

    /// Build and snappy-encode one batch.
    pub fn encode(&self, batch: &Batch) -> Encoded {
        Encoded {
            body: encode_write(&self.write_request(batch)),
            samples: batch.entries.len(),
            first_round: batch.first_round(),
        }
    }
}
