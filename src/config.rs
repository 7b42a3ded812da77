//! Flags and the YAML config file, Prometheus-style.
//!
//! One table, [`SETTINGS`], lists every setting once: its dotted flag name, value syntax,
//! default and help line, and how a value is parsed and validated. The flag parser, `--help`
//! ([`help`]) and the config file all go through it, so they cannot drift apart.
//!
//! A setting's config-file key is its flag name with `-` turned into `_`
//! (`--storage.tsdb.wal-sync` ⇔ `storage: { tsdb: { wal_sync: … } } }`). Values in the file are
//! written as on the command line and validated by the same code.
//!
//! Precedence: a flag wins over the file, the file wins over the default. A setting given twice
//! on the command line takes the last value.
//!
//! Parsing reads no file but `--config.file`: `--web.config.file` yields a path, and
//! [`Config::load_web_config`] loads and checks that file afterwards.
//!
//! Reload (SIGHUP, `/-/reload`): each setting says in [`Setting::reload`] whether a new value
//! takes effect at once or after a restart. [`restart_needed`] names the restart settings whose
//! value differs between two configs, comparing what the table parsed from each one's raw
//! values ([`Config::given`]), so a setting cannot be left out of the comparison.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::log::{Format, Level};
use crate::server::ServerConfig;
use crate::tsdb::wal::SyncPolicy;
use crate::tsdb::{parse_duration, Options};

/// Everything the binary needs to start, after flags, file and defaults are combined.
#[derive(Debug, Clone)]
pub struct Config {
    pub log_level: Level,
    pub log_format: Format,
    /// `--web.listen-address`; `:PORT` means every interface.
    pub listen: String,
    /// `--storage.tsdb.path`.
    pub path: String,
    pub opts: Options,
    /// `--storage.tsdb.housekeeping-interval`: how often head compaction is considered.
    pub housekeeping: std::time::Duration,
    /// Server settings; `server.web` stays `None` until [`Config::load_web_config`].
    pub server: ServerConfig,
    /// The config file that was loaded, if any.
    pub config_file: Option<String>,
    /// `--web.config.file`, loaded into `server.web` by [`Config::load_web_config`].
    pub web_config_file: Option<String>,
    /// The raw value of every setting a flag or the config file gave, by flag name (the one in
    /// force: flag over file); settings not in it have their default.
    pub given: BTreeMap<&'static str, String>,
}

impl Default for Config {
    /// The defaults [`SETTINGS`] documents (a unit test checks every default string parses to
    /// exactly these values).
    fn default() -> Self {
        Config {
            log_level: Level::Info,
            log_format: Format::Logfmt,
            listen: ":9201".into(),
            path: "data/".into(),
            opts: Options::default(),
            housekeeping: std::time::Duration::from_secs(60),
            server: ServerConfig::default(),
            config_file: None,
            web_config_file: None,
            given: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Load and check `--web.config.file` (TLS and basic auth) into `server.web`; without
    /// the flag, nothing. The error names the flag, the file and the key, for exit code 2.
    pub fn load_web_config(&mut self) -> Result<(), String> {
        if let Some(path) = &self.web_config_file {
            let web = crate::server::web::WebConfig::load(path)
                .map_err(|e| format!("--{WEB_CONFIG_FILE}: {e}"))?;
            self.server.web = Some(Arc::new(web));
        }
        Ok(())
    }

    /// The raw value of `s` in force: given by a flag or the file, else its default.
    pub fn raw(&self, s: &Setting) -> Option<&str> {
        self.given.get(s.flag).map(String::as_str).or(s.default)
    }

    /// Parse `value` for `s` into this config and remember it as given.
    fn set(&mut self, s: &'static Setting, value: &str) -> Result<(), String> {
        (s.apply)(self, value)?;
        self.given.insert(s.flag, value.to_string());
        Ok(())
    }

    /// What a reload of this (new) config puts in force: every [`Reload::Restart`] setting at
    /// its value in `running`, every other one as given here. `server.web` is left `None`.
    pub fn keeping_restart_settings(&self, running: &Config) -> Result<Config, String> {
        let mut out = Config::default();
        for s in SETTINGS {
            let from = match s.reload {
                Reload::Live => self,
                Reload::Restart => running,
            };
            if let Some(v) = from.given.get(s.flag) {
                out.set(s, v).map_err(|e| format!("--{}: {e}", s.flag))?;
            }
        }
        Ok(out)
    }
}

/// Whether a new value of a setting takes effect on reload (SIGHUP, `/-/reload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Put in force by the reload.
    Live,
    /// Read at start only: a reload keeps the running value and names the setting in a
    /// warning.
    Restart,
}

/// The [`Reload::Restart`] settings whose value differs between `running` and `new`, by flag
/// name in table order. Values are compared as parsed (`128MB` equals `134217728`).
pub fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    SETTINGS
        .iter()
        .filter(|s| s.reload == Reload::Restart)
        .filter(|s| s.parsed(running.raw(s)) != s.parsed(new.raw(s)))
        .map(|s| s.flag)
        .collect()
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// `-h` / `--help`: print [`help`] and exit 0.
    Help,
    /// Run with this configuration.
    Run(Box<Config>),
}

/// Parses one value and stores it in a [`Config`]; the error says what is wrong with the value
/// (the caller names the flag or key).
type Apply = fn(&mut Config, &str) -> Result<(), String>;

/// One setting: a flag, and (unless it is `--config.file` or `--web.config.file`) a config-file key.
pub struct Setting {
    /// Dotted flag name without the leading `--`.
    pub flag: &'static str,
    /// Placeholder for the value in `--help`; empty for a boolean flag, which may stand alone.
    pub value: &'static str,
    /// Default as written on the command line; `None` for "unset".
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// Whether a reload puts a new value in force.
    pub reload: Reload,
    apply: Apply,
}

impl Setting {
    /// The config-file key path (`storage.tsdb.wal_sync`).
    pub fn key(&self) -> String {
        self.flag.replace('-', "_")
    }

    fn is_bool(&self) -> bool {
        self.value.is_empty()
    }

    /// `raw` as this setting parses it, rendered: applied alone to the defaults (`None` for
    /// unset). Equal renderings mean equal values, whatever the spelling.
    fn parsed(&self, raw: Option<&str>) -> Option<String> {
        raw.map(|v| {
            let mut c = Config::default();
            match (self.apply)(&mut c, v) {
                Ok(()) => format!("{c:?}"),
                // Not from a parsed config (which holds only valid values); compare as text.
                Err(_) => format!("invalid {v:?}"),
            }
        })
    }
}

const CONFIG_FILE: &str = "config.file";
const WEB_CONFIG_FILE: &str = "web.config.file";

/// Settings only a flag can set: the config file itself, and the web config file (as in
/// Prometheus, where `--web.config.file` is not part of prometheus.yml).
fn flag_only(s: &Setting) -> bool {
    s.flag == CONFIG_FILE || s.flag == WEB_CONFIG_FILE
}

/// Every flag, in `--help` order.
pub static SETTINGS: &[Setting] = &[
    Setting {
        flag: CONFIG_FILE,
        value: "PATH",
        default: None,
        help: "YAML file that may set every other flag, grouped by the dotted name with `_` for \
               `-` (see the end of this help). Flags win over the file, the file over defaults.",
        reload: Reload::Live,
        apply: |c, v| {
            c.config_file = Some(v.to_string());
            Ok(())
        },
    },
    Setting {
        flag: "web.listen-address",
        value: "ADDR",
        default: Some(":9201"),
        help: "Address to serve HTTP on; `:PORT` means every interface.",
        reload: Reload::Restart,
        apply: |c, v| {
            if v.is_empty() {
                return Err("want an address such as :9201 or 127.0.0.1:9201".into());
            }
            c.listen = v.to_string();
            Ok(())
        },
    },
    Setting {
        flag: WEB_CONFIG_FILE,
        value: "FILE",
        default: None,
        help: "TLS and basic auth, in Prometheus's web config format (tls_server_config, \
               basic_auth_users); re-read when it changes.",
        reload: Reload::Restart,
        apply: |c, v| {
            if v.is_empty() {
                return Err("want a file".into());
            }
            c.web_config_file = Some(v.to_string());
            Ok(())
        },
    },
    Setting {
        flag: "storage.tsdb.path",
        value: "DIR",
        default: Some("data/"),
        help: "Data directory.",
        reload: Reload::Restart,
        apply: |c, v| {
            if v.is_empty() {
                return Err("want a directory".into());
            }
            c.path = v.to_string();
            Ok(())
        },
    },
    Setting {
        flag: "storage.tsdb.wal-sync",
        value: "POLICY",
        default: Some("always"),
        help: "When the WAL fsyncs: `always` (before every acknowledgement; concurrent writers \
               share one fsync), a duration such as `100ms` (at most that often), or `never` \
               (the OS decides).",
        reload: Reload::Restart,
        apply: |c, v| {
            c.opts.wal.sync = v.parse::<SyncPolicy>()?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.tsdb.min-block-duration",
        value: "DUR",
        default: Some("2h"),
        help: "Block range; head chunks never cross it.",
        reload: Reload::Restart,
        apply: |c, v| {
            let ms = duration(v)?.as_millis();
            c.opts.block_range_ms =
                i64::try_from(ms).map_err(|_| format!("duration {v:?} is too long"))?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.tsdb.max-block-duration",
        value: "DUR",
        default: Some("0"),
        help: "Largest block leveled compaction makes (blocks of 1, 3, 9, … block ranges). \
               0 means min(31d, retention time / 10).",
        reload: Reload::Live,
        apply: |c, v| {
            c.opts.max_block_duration_ms = if v == "0" || v == "0s" {
                None
            } else {
                let ms = duration(v)?.as_millis();
                Some(i64::try_from(ms).map_err(|_| format!("duration {v:?} is too long"))?)
            };
            Ok(())
        },
    },
    Setting {
        flag: "storage.tsdb.retention.time",
        value: "DUR",
        default: Some("15d"),
        help: "How long to keep data: blocks ending longer than this before the newest data \
               are deleted. 0s keeps everything (unless the size limit applies).",
        reload: Reload::Live,
        apply: |c, v| {
            let ms = if v == "0" || v == "0s" {
                0
            } else {
                duration(v)?.as_millis()
            };
            c.opts.retention_ms =
                i64::try_from(ms).map_err(|_| format!("duration {v:?} is too long"))?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.tsdb.retention.size",
        value: "SIZE",
        default: Some("0"),
        help: "Most bytes of blocks, WAL and head chunks; the oldest blocks are deleted \
               beyond it. 0 means no limit. Sizes are powers of 1024 (512MB = 512 MiB).",
        reload: Reload::Live,
        apply: |c, v| {
            c.opts.retention_bytes = if v == "0" { 0 } else { size(v, 1)? };
            Ok(())
        },
    },
    Setting {
        flag: "storage.tsdb.housekeeping-interval",
        value: "DUR",
        default: Some("1m"),
        help: "How often to compact the head: once it spans more than 1.5 block ranges, its \
               oldest range becomes a block, then the head and the WAL are truncated.",
        reload: Reload::Restart,
        apply: |c, v| {
            c.housekeeping = duration(v)?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.tsdb.wal-segment-size",
        value: "SIZE",
        default: Some("128MB"),
        help: "WAL segment size, at least 64KB.",
        reload: Reload::Restart,
        apply: |c, v| {
            c.opts.wal.segment_size = usize_of(size(v, 64 << 10)?)?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.tsdb.max-series",
        value: "N",
        default: Some("0"),
        help: "Most series the head may hold; samples of new series beyond it get 400 naming \
               the limit. 0 means no limit.",
        reload: Reload::Restart,
        apply: |c, v| {
            c.opts.max_series = int(v, 0)?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.remote.write-label-limit",
        value: "N",
        default: Some("64"),
        help: "Most labels per series (400 beyond).",
        reload: Reload::Live,
        apply: |c, v| {
            c.server.labels.max_labels = usize_of(int(v, 1)?)?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.remote.write-label-name-length-limit",
        value: "SIZE",
        default: Some("1KB"),
        help: "Longest label name (400 beyond).",
        reload: Reload::Live,
        apply: |c, v| {
            c.server.labels.max_name_bytes = usize_of(size(v, 1)?)?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.remote.write-label-value-length-limit",
        value: "SIZE",
        default: Some("16KB"),
        help: "Longest label value (400 beyond).",
        reload: Reload::Live,
        apply: |c, v| {
            c.server.labels.max_value_bytes = usize_of(size(v, 1)?)?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.remote.read-sample-limit",
        value: "N",
        default: Some("50000000"),
        help: "Most samples one SAMPLES remote-read response may hold; 0 means no limit.",
        reload: Reload::Live,
        apply: |c, v| {
            c.server.read_sample_limit = match int(v, 0)? {
                0 => u64::MAX,
                n => n,
            };
            Ok(())
        },
    },
    Setting {
        flag: "storage.remote.read-concurrent-limit",
        value: "N",
        default: Some("10"),
        help: "Remote reads served at once; more wait for a slot.",
        reload: Reload::Restart,
        apply: |c, v| {
            c.server.read_concurrent_limit = usize_of(int(v, 1)?)?;
            Ok(())
        },
    },
    Setting {
        flag: "storage.remote.read-max-bytes-in-frame",
        value: "SIZE",
        default: Some("1MB"),
        help: "Budget of one streamed remote-read frame, at least 1KB.",
        reload: Reload::Live,
        apply: |c, v| {
            c.server.read_max_bytes_in_frame = usize_of(size(v, 1024)?)?;
            Ok(())
        },
    },
    Setting {
        flag: "web.enable-lifecycle",
        value: "",
        default: Some("false"),
        help: "Serve POST /-/quit (graceful stop, as SIGTERM).",
        reload: Reload::Live,
        apply: |c, v| {
            c.server.enable_lifecycle = boolean(v)?;
            Ok(())
        },
    },
    Setting {
        flag: "web.read-timeout",
        value: "DUR",
        default: Some("5m"),
        help: "Longest wait for a request's headers; idle keep-alive connections close after \
               it, and a streamed read whose client takes nothing for this long is abandoned.",
        reload: Reload::Restart,
        apply: |c, v| {
            c.server.read_timeout = duration(v)?;
            Ok(())
        },
    },
    Setting {
        flag: "web.max-connections",
        value: "N",
        default: Some("512"),
        help: "Connections served at once; further clients wait to be accepted.",
        reload: Reload::Restart,
        apply: |c, v| {
            c.server.max_connections = usize_of(int(v, 1)?)?;
            Ok(())
        },
    },
    Setting {
        flag: "web.enable-admin-api",
        value: "",
        default: Some("false"),
        help: "Serve the TSDB admin API: POST /api/v1/admin/tsdb/{delete_series, \
               clean_tombstones, snapshot}. Without it they answer 403.",
        reload: Reload::Live,
        apply: |c, v| {
            c.server.enable_admin_api = boolean(v)?;
            Ok(())
        },
    },
    Setting {
        flag: "log.level",
        value: "LEVEL",
        default: Some("info"),
        help: "debug, info, warn or error.",
        reload: Reload::Live,
        apply: |c, v| {
            c.log_level = v.parse()?;
            Ok(())
        },
    },
    Setting {
        flag: "log.format",
        value: "FORMAT",
        default: Some("logfmt"),
        help: "logfmt or json.",
        reload: Reload::Live,
        apply: |c, v| {
            c.log_format = v.parse()?;
            Ok(())
        },
    },
];

fn setting_by_flag(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.flag == name)
}

fn setting_by_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| !flag_only(s) && s.key() == key)
}

// ---- value syntax ------------------------------------------------------------------------

/// Parse a size in Prometheus's syntax (`units.Base2Bytes`): an integer followed by `B`, `KB`,
/// `MB`, `GB`, `TB`, `PB` or `EB` (powers of 1024; `KiB`, `MiB`, … mean the same), or a plain
/// integer meaning bytes. Fractions are not accepted. `None` for anything else or on overflow.
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s.get(..digits)?.parse().ok()?;
    let shift = match s.get(digits..)? {
        "" | "B" => 0,
        "KB" | "KiB" => 10,
        "MB" | "MiB" => 20,
        "GB" | "GiB" => 30,
        "TB" | "TiB" => 40,
        "PB" | "PiB" => 50,
        "EB" | "EiB" => 60,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

fn int(v: &str, min: u64) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|&n| n >= min)
        .ok_or_else(|| format!("invalid value {v:?}: want an integer >= {min}"))
}

fn size(v: &str, min: u64) -> Result<u64, String> {
    let n = parse_size(v).ok_or_else(|| {
        format!("invalid size {v:?}: want bytes, or an integer with a unit such as 512KB or 128MB")
    })?;
    if n < min {
        return Err(format!("size {v:?} is below the minimum of {min} bytes"));
    }
    Ok(n)
}

fn usize_of(n: u64) -> Result<usize, String> {
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

fn duration(v: &str) -> Result<std::time::Duration, String> {
    parse_duration(v).filter(|d| !d.is_zero()).ok_or_else(|| {
        format!("invalid duration {v:?}: want a positive Prometheus duration such as 2h or 15d")
    })
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("invalid value {v:?}: want true or false")),
    }
}

// ---- command line --------------------------------------------------------------------------

/// Parse the arguments (without the program name), load `--config.file` if given, and combine
/// them: flag > file > default. Errors are one line, ready for `cairn: {err}` and exit code 2.
/// `--web.config.file` is only named here: [`Config::load_web_config`] loads it.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut given: Vec<(&'static Setting, String)> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(format!(
                "unexpected argument {arg:?} (flags look like --name=value; see --help)"
            ));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let setting =
            setting_by_flag(name).ok_or_else(|| format!("unknown flag --{name} (see --help)"))?;
        let value = match value {
            Some(v) => v,
            // Boolean flags stand alone, as in Prometheus (`--web.enable-lifecycle`).
            None if setting.is_bool() => "true".to_string(),
            None => args
                .next()
                .ok_or_else(|| format!("flag --{name} needs a value"))?,
        };
        given.push((setting, value));
    }

    let mut cfg = Config::default();
    let file = given
        .iter()
        .rev()
        .find(|(s, _)| s.flag == CONFIG_FILE)
        .map(|(_, v)| v.clone());
    if let Some(path) = &file {
        load_file(Path::new(path), &mut cfg)?;
    }
    for (setting, value) in &given {
        cfg.set(setting, value)
            .map_err(|e| format!("--{}: {e}", setting.flag))?;
    }
    Ok(Command::Run(Box::new(cfg)))
}

/// The `--help` text, generated from [`SETTINGS`].
pub fn help() -> String {
    const INDENT: usize = 44;
    const WIDTH: usize = 96;
    let mut out = String::from(
        "cairn — Prometheus remote-storage sidecar with a Prometheus-format TSDB\n\n\
         USAGE:\n    cairn [FLAGS]\n\nFLAGS:\n",
    );
    // `text` is a list of words; a word may hold spaces (`[default: …]` is kept whole).
    let mut entry = |left: String, text: Vec<String>| {
        let mut line = format!("    {left}");
        if line.chars().count() + 2 > INDENT {
            out.push_str(&line);
            out.push('\n');
            line = String::new();
        }
        let mut width = line.chars().count();
        line.push_str(&" ".repeat(INDENT - width));
        width = INDENT;
        let mut first = true;
        for word in &text {
            let w = word.chars().count();
            if !first && width + 1 + w > WIDTH {
                out.push_str(line.trim_end());
                out.push('\n');
                line = " ".repeat(INDENT);
                width = INDENT;
                first = true;
            }
            if !first {
                line.push(' ');
                width += 1;
            }
            line.push_str(word);
            width += w;
            first = false;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    for s in SETTINGS {
        let left = if s.is_bool() {
            format!("--{}", s.flag)
        } else {
            format!("--{}={}", s.flag, s.value)
        };
        let mut text: Vec<String> = s.help.split_whitespace().map(String::from).collect();
        if let Some(d) = s.default {
            text.push(format!("[default: {d}]"));
        }
        entry(left, text);
    }
    entry("-h, --help".into(), vec!["Print this help.".into()]);
    out.push_str(
        "\nDurations use Prometheus syntax: 100ms, 15s, 2h, 15d, 1y (= 365d). Sizes: bytes, or an\n\
         integer with B, KB, MB, GB or TB (powers of 1024: 512MB = 512 MiB).\n\
         Boolean flags stand alone (--web.enable-lifecycle) or take =true / =false.\n\n\
         CONFIG FILE (--config.file):\n    \
         web: { listen_address: \":9201\", enable_lifecycle: false }\n    \
         storage:\n      \
         tsdb: { path: data/, wal_sync: always, min_block_duration: 2h, wal_segment_size: 128MB }\n      \
         remote: { read_sample_limit: 50000000, write_label_limit: 64 }\n    \
         log: { level: info, format: logfmt }\n\
         Every key is a flag's dotted name with `_` for `-`; unknown keys are errors.\n",
    );
    out
}

// ---- config file -----------------------------------------------------------------------------

/// A scalar as written in the file, kept as text so that the file and the flags share one
/// parser ([`Setting::apply`]): `128MB`, `2h`, `64`, `true` and `":9201"` all arrive as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar (string, number or boolean)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The file's layout. Each leaf is one [`SETTINGS`] entry; [`FileConfig::values`] lists them
/// under their key paths (a unit test checks the two agree both ways).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    web: WebFile,
    storage: StorageFile,
    log: LogFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WebFile {
    listen_address: Option<Scalar>,
    enable_lifecycle: Option<Scalar>,
    enable_admin_api: Option<Scalar>,
    read_timeout: Option<Scalar>,
    max_connections: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StorageFile {
    tsdb: TsdbFile,
    remote: RemoteFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TsdbFile {
    path: Option<Scalar>,
    wal_sync: Option<Scalar>,
    min_block_duration: Option<Scalar>,
    max_block_duration: Option<Scalar>,
    retention: RetentionFile,
    housekeeping_interval: Option<Scalar>,
    wal_segment_size: Option<Scalar>,
    max_series: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetentionFile {
    time: Option<Scalar>,
    size: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RemoteFile {
    read_sample_limit: Option<Scalar>,
    read_concurrent_limit: Option<Scalar>,
    read_max_bytes_in_frame: Option<Scalar>,
    write_label_limit: Option<Scalar>,
    write_label_name_length_limit: Option<Scalar>,
    write_label_value_length_limit: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogFile {
    level: Option<Scalar>,
    format: Option<Scalar>,
}

impl FileConfig {
    /// Every value the file sets, with its key path.
    fn values(&self) -> Vec<(&'static str, &Scalar)> {
        let (w, t, r, l) = (
            &self.web,
            &self.storage.tsdb,
            &self.storage.remote,
            &self.log,
        );
        [
            ("web.listen_address", &w.listen_address),
            ("web.enable_lifecycle", &w.enable_lifecycle),
            ("web.enable_admin_api", &w.enable_admin_api),
            ("web.read_timeout", &w.read_timeout),
            ("web.max_connections", &w.max_connections),
            ("storage.tsdb.path", &t.path),
            ("storage.tsdb.wal_sync", &t.wal_sync),
            ("storage.tsdb.min_block_duration", &t.min_block_duration),
            ("storage.tsdb.max_block_duration", &t.max_block_duration),
            ("storage.tsdb.retention.time", &t.retention.time),
            ("storage.tsdb.retention.size", &t.retention.size),
            (
                "storage.tsdb.housekeeping_interval",
                &t.housekeeping_interval,
            ),
            ("storage.tsdb.wal_segment_size", &t.wal_segment_size),
            ("storage.tsdb.max_series", &t.max_series),
            ("storage.remote.read_sample_limit", &r.read_sample_limit),
            (
                "storage.remote.read_concurrent_limit",
                &r.read_concurrent_limit,
            ),
            (
                "storage.remote.read_max_bytes_in_frame",
                &r.read_max_bytes_in_frame,
            ),
            ("storage.remote.write_label_limit", &r.write_label_limit),
            (
                "storage.remote.write_label_name_length_limit",
                &r.write_label_name_length_limit,
            ),
            (
                "storage.remote.write_label_value_length_limit",
                &r.write_label_value_length_limit,
            ),
            ("log.level", &l.level),
            ("log.format", &l.format),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect()
    }
}

/// Read the YAML config file at `path` into `cfg` (only the keys it sets change).
pub fn load_file(path: &Path, cfg: &mut Config) -> Result<(), String> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {name}: cannot read: {e}"))?;
    apply_yaml(&text, cfg).map_err(|e| format!("config file {name}: {e}"))?;
    cfg.config_file = Some(path.display().to_string());
    Ok(())
}

/// Apply a YAML document to `cfg`. Errors name the key path (`storage.tsdb.wal_sync: …`) or,
/// for YAML and layout errors (unknown key, a mapping where a value belongs), the parser's
/// message with its line and column.
pub fn apply_yaml(text: &str, cfg: &mut Config) -> Result<(), String> {
    // An empty document (or one holding only comments) sets nothing.
    let file: Option<FileConfig> =
        serde_saphyr::from_str(text).map_err(|e| one_line(&e.without_snippet().to_string()))?;
    let Some(file) = file else {
        return Ok(());
    };
    for (key, value) in file.values() {
        let setting =
            setting_by_key(key).ok_or_else(|| format!("{key}: no such setting (internal)"))?;
        cfg.set(setting, &value.0)
            .map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}

/// Parser messages may span lines (a snippet of the input); keep them on one line for logs.
fn one_line(s: &str) -> String {
    let s = s.strip_prefix("error: ").unwrap_or(s);
    // The parser's advice is for programmers embedding it, not for operators.
    let s = s.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every config-file key path, from [`SETTINGS`].
pub fn file_keys() -> BTreeSet<String> {
    SETTINGS
        .iter()
        .filter(|s| !flag_only(s))
        .map(Setting::key)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Command::Run(c) => Ok(*c),
            Command::Help => panic!("help"),
        }
    }

    fn yaml(text: &str) -> Result<Config, String> {
        let mut c = Config::default();
        apply_yaml(text, &mut c).map(|()| c)
    }

    fn write_tmp(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn sizes_parse_like_prometheus_base2_bytes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("134217728"), Some(134_217_728));
        assert_eq!(parse_size("17B"), Some(17));
        assert_eq!(parse_size("1KB"), Some(1024));
        assert_eq!(parse_size("16KiB"), Some(16 << 10));
        assert_eq!(parse_size("512MB"), Some(512 << 20));
        assert_eq!(parse_size("128MiB"), Some(128 << 20));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size("3TB"), Some(3 << 40));
        assert_eq!(parse_size("1PB"), Some(1 << 50));
        assert_eq!(parse_size("15EB"), Some(15 << 60));
        for bad in [
            "",
            "MB",
            "1.5GB",
            "-1",
            "1 MB",
            "1mb",
            "1Kb",
            "1K",
            "1MBB",
            "1XB",
            "16EB",
            "18446744073709551616",
            "1GB512MB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations_are_prometheus_durations_and_positive() {
        assert_eq!(duration("15d").unwrap().as_secs(), 15 * 86_400);
        assert_eq!(duration("1y").unwrap().as_secs(), 365 * 86_400);
        for bad in ["0s", "", "2x", "1.5h", "-2h", "2H"] {
            let e = duration(bad).unwrap_err();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
        let c = yaml("storage: { tsdb: { min_block_duration: 1y } }").unwrap();
        assert_eq!(c.opts.block_range_ms, 365 * 86_400_000);
        let e = yaml("storage: { tsdb: { min_block_duration: 0s } }").unwrap_err();
        assert!(e.contains("storage.tsdb.min_block_duration"), "{e}");
    }

    #[test]
    fn every_default_string_parses_to_the_built_in_default() {
        let mut c = Config::default();
        for s in SETTINGS {
            if let Some(d) = s.default {
                (s.apply)(&mut c, d).unwrap();
            }
        }
        let d = Config::default();
        // Compare through Debug: Options holds trait objects without PartialEq.
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn file_layout_and_table_agree_both_ways() {
        // A file setting every key the table knows, each to its default: every key must be
        // accepted, and the file must report exactly those keys back.
        let mut doc = String::new();
        for s in SETTINGS.iter().filter(|s| !flag_only(s)) {
            let key = s.key();
            let parts: Vec<&str> = key.split('.').collect();
            let (leaf, groups) = parts.split_last().unwrap();
            let mut line = String::new();
            for g in groups {
                line.push_str(&format!("{{ {g}: "));
            }
            line.push_str(&format!("{{ {leaf}: {:?} }}", s.default.unwrap()));
            line.push_str(&" }".repeat(groups.len()));
            let file: FileConfig = serde_saphyr::from_str(&line).unwrap();
            let keys: Vec<_> = file.values().into_iter().map(|(k, _)| k).collect();
            assert_eq!(keys, [key.as_str()], "{line}");
            doc.push_str(&line);
        }
        assert!(!doc.is_empty());
        assert_eq!(file_keys().len(), SETTINGS.len() - 2);

        // The other way: the example file sets every key the layout has, and each is a setting.
        let full: FileConfig =
            serde_saphyr::from_str(include_str!("../examples/cairn.yml")).unwrap();
        let keys: BTreeSet<String> = full.values().iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, file_keys());
    }

    #[test]
    fn precedence_is_flag_then_file_then_default() {
        let f = write_tmp(
            "web:\n  listen_address: 127.0.0.1:1234\n  enable_lifecycle: true\n\
             storage:\n  tsdb:\n    wal_sync: never\n    wal_segment_size: 1MB\n\
             \x20   path: /from/file\n  remote:\n    read_sample_limit: 0\n\
             log:\n  level: warn\n",
        );
        let file = format!("--config.file={}", f.path().display());

        // Defaults only.
        let d = run(&[]).unwrap();
        assert_eq!(d.listen, ":9201");
        assert_eq!(d.path, "data/");
        assert_eq!(d.opts.wal.segment_size, 128 << 20);
        assert!(!d.server.enable_lifecycle);
        assert_eq!(d.log_level, Level::Info);

        // File over defaults; what the file does not set stays default.
        let c = run(&[&file]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:1234");
        assert_eq!(c.path, "/from/file");
        assert_eq!(c.opts.wal.sync, SyncPolicy::Never);
        assert_eq!(c.opts.wal.segment_size, 1 << 20);
        assert_eq!(c.server.read_sample_limit, u64::MAX);
        assert!(c.server.enable_lifecycle);
        assert_eq!(c.log_level, Level::Warn);
        assert_eq!(c.log_format, Format::Logfmt);
        assert_eq!(c.server.read_concurrent_limit, 10);
        assert_eq!(
            c.config_file.as_deref(),
            Some(&*f.path().display().to_string())
        );

        // Flags over the file, wherever they stand relative to --config.file.
        let c = run(&[
            "--web.listen-address=:9999",
            &file,
            "--storage.tsdb.wal-segment-size=65536",
            "--web.enable-lifecycle=false",
            "--log.level",
            "debug",
            "--storage.tsdb.path=/from/flag",
        ])
        .unwrap();
        assert_eq!(c.listen, ":9999");
        assert_eq!(c.path, "/from/flag");
        assert_eq!(c.opts.wal.segment_size, 65536);
        assert!(!c.server.enable_lifecycle);
        assert_eq!(c.log_level, Level::Debug);
        // ... and the file still sets what no flag does.
        assert_eq!(c.opts.wal.sync, SyncPolicy::Never);
        assert_eq!(c.server.read_sample_limit, u64::MAX);
    }

    #[test]
    fn flags_keep_their_syntax_and_validation() {
        let c = run(&["--web.enable-lifecycle", "--storage.tsdb.wal-sync", "100ms"]).unwrap();
        assert!(c.server.enable_lifecycle);
        assert_eq!(
            c.opts.wal.sync,
            SyncPolicy::Interval(std::time::Duration::from_millis(100))
        );
        // Byte flags still take plain integers, and now units too.
        let c = run(&[
            "--storage.tsdb.wal-segment-size=134217728",
            "--storage.remote.read-max-bytes-in-frame=2MB",
        ])
        .unwrap();
        assert_eq!(c.opts.wal.segment_size, 128 << 20);
        assert_eq!(c.server.read_max_bytes_in_frame, 2 << 20);
        assert!(matches!(
            parse_args(["--help".to_string()]),
            Ok(Command::Help)
        ));
        for (args, want) in [
            (&["--nope=1"][..], "unknown flag --nope"),
            (&["--storage.tsdb.path"], "needs a value"),
            (&["plain"], "unexpected argument"),
            (
                &["--storage.tsdb.wal-sync=sometimes"],
                "--storage.tsdb.wal-sync: invalid WAL sync",
            ),
            (
                &["--storage.tsdb.min-block-duration=0s"],
                "invalid duration",
            ),
            (
                &["--storage.remote.read-concurrent-limit=0"],
                "integer >= 1",
            ),
            (&["--storage.tsdb.max-series=-1"], "integer >= 0"),
            (&["--web.enable-lifecycle=yes"], "want true or false"),
            (
                &["--storage.remote.read-max-bytes-in-frame=12"],
                "below the minimum of 1024",
            ),
            (
                &["--storage.tsdb.wal-segment-size=1KB"],
                "below the minimum of 65536",
            ),
            (&["--log.level=loud"], "--log.level: invalid log level"),
            (
                &["--config.file=/nonexistent/cairn.yml"],
                "config file /nonexistent/cairn.yml: cannot read",
            ),
        ] {
            let e = run(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn file_errors_name_the_key_and_the_problem() {
        for (doc, want) in [
            (
                "storage: { tsdb: { wal_sync: sometimes } }",
                "storage.tsdb.wal_sync: invalid WAL sync policy \"sometimes\"",
            ),
            ("storage: { tsdb: { wal_sink: always } }", "wal_sink"),
            ("nope: 1", "nope"),
            (
                "storage: { remote: { read_max_bytes_in_frame: 1.5MB } }",
                "storage.remote.read_max_bytes_in_frame: invalid size",
            ),
            (
                "storage: { remote: { write_label_limit: 0 } }",
                "storage.remote.write_label_limit: invalid value \"0\"",
            ),
            ("web: { enable_lifecycle: maybe } ", "web.enable_lifecycle"),
            ("web: { listen_address: [1, 2] }", "scalar"),
            ("- a\n- b\n", ""),
        ] {
            let e = yaml(doc).unwrap_err();
            assert!(e.contains(want), "{doc}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        // Empty and comment-only documents set nothing.
        for doc in ["", "# nothing\n", "web: {}\n"] {
            let c = yaml(doc).unwrap();
            assert_eq!(c.listen, ":9201", "{doc:?}");
        }
        // Numbers, booleans and quoted strings all arrive as the text the flag would take.
        let c = yaml("web: { enable_lifecycle: true }\nstorage: { tsdb: { max_series: 5, wal_segment_size: \"65536\" } }").unwrap();
        assert!(c.server.enable_lifecycle);
        assert_eq!(c.opts.max_series, 5);
        assert_eq!(c.opts.wal.segment_size, 65536);
    }

    #[test]
    fn reload_puts_in_force_exactly_the_live_settings() {
        // Today's split; README.md's flag table says the same (tests/config.rs checks it).
        let live: BTreeSet<&str> = SETTINGS
            .iter()
            .filter(|s| s.reload == Reload::Live)
            .map(|s| s.flag)
            .collect();
        let want: BTreeSet<&str> = [
            "config.file",
            "log.level",
            "log.format",
            "storage.remote.write-label-limit",
            "storage.remote.write-label-name-length-limit",
            "storage.remote.write-label-value-length-limit",
            "storage.remote.read-sample-limit",
            "storage.remote.read-max-bytes-in-frame",
            "web.enable-admin-api",
            "web.enable-lifecycle",
            "storage.tsdb.retention.time",
            "storage.tsdb.retention.size",
            "storage.tsdb.max-block-duration",
        ]
        .into();
        assert_eq!(live, want);
    }

    /// A valid value other than the default, for every setting.
    fn other_value(flag: &str, empty_file: &Path) -> String {
        match flag {
            CONFIG_FILE => empty_file.display().to_string(),
            WEB_CONFIG_FILE => "/etc/cairn/web.yml".into(),
            "web.listen-address" => ":9999".into(),
            "storage.tsdb.path" => "/var/lib/cairn".into(),
            "storage.tsdb.wal-sync" => "never".into(),
            "storage.tsdb.min-block-duration" => "1h".into(),
            "storage.tsdb.max-block-duration" => "1d".into(),
            "storage.tsdb.retention.time" => "1d".into(),
            "storage.tsdb.retention.size" => "1GB".into(),
            "storage.tsdb.housekeeping-interval" => "2m".into(),
            "storage.tsdb.wal-segment-size" => "1MB".into(),
            "storage.tsdb.max-series" => "5".into(),
            "storage.remote.write-label-limit" => "5".into(),
            "storage.remote.write-label-name-length-limit" => "2KB".into(),
            "storage.remote.write-label-value-length-limit" => "2KB".into(),
            "storage.remote.read-sample-limit" => "5".into(),
            "storage.remote.read-concurrent-limit" => "5".into(),
            "storage.remote.read-max-bytes-in-frame" => "2MB".into(),
            "web.enable-lifecycle" | "web.enable-admin-api" => "true".into(),
            "web.read-timeout" => "1m".into(),
            "web.max-connections" => "5".into(),
            "log.level" => "debug".into(),
            "log.format" => "json".into(),
            other => panic!("--{other}: add a non-default value here"),
        }
    }

    /// Debug without the raw values, to compare what two configs put in force.
    fn in_force(c: &Config) -> String {
        let mut c = c.clone();
        c.given.clear();
        format!("{c:?}")
    }

    #[test]
    fn a_reload_names_each_changed_restart_setting_and_keeps_its_running_value() {
        let empty = write_tmp("");
        let running = run(&[]).unwrap();
        for s in SETTINGS {
            let arg = format!("--{}={}", s.flag, other_value(s.flag, empty.path()));
            let new = run(&[&arg]).unwrap();
            assert_ne!(in_force(&new), in_force(&running), "{arg} changes nothing");
            let kept = new.keeping_restart_settings(&running).unwrap();
            match s.reload {
                Reload::Restart => {
                    assert_eq!(restart_needed(&running, &new), [s.flag], "{arg}");
                    assert_eq!(
                        in_force(&kept),
                        in_force(&running),
                        "{arg} was put in force"
                    );
                }
                Reload::Live => {
                    assert!(restart_needed(&running, &new).is_empty(), "{arg}");
                    assert_eq!(
                        in_force(&kept),
                        in_force(&new),
                        "{arg} was not put in force"
                    );
                }
            }
            // And back: the same answer from the other side.
            assert_eq!(
                restart_needed(&new, &running),
                restart_needed(&running, &new)
            );
        }
        // Several at once, in table order; the same value spelled otherwise is no change.
        let a = run(&[
            "--storage.tsdb.wal-segment-size=128MB",
            "--web.listen-address=:9201",
            "--storage.tsdb.max-series=0",
        ])
        .unwrap();
        assert!(restart_needed(&running, &a).is_empty());
        let b = run(&[
            "--storage.tsdb.wal-segment-size=134217728",
            "--web.max-connections=7",
            "--web.listen-address=:1",
            "--log.level=debug",
        ])
        .unwrap();
        assert_eq!(
            restart_needed(&a, &b),
            ["web.listen-address", "web.max-connections"]
        );
    }

    #[test]
    fn the_web_config_file_is_named_while_parsing_and_loaded_after() {
        let mut c = run(&["--web.config.file=/nonexistent/web.yml"]).unwrap();
        assert_eq!(c.web_config_file.as_deref(), Some("/nonexistent/web.yml"));
        assert!(c.server.web.is_none());
        let e = c.load_web_config().unwrap_err();
        assert!(
            e.starts_with("--web.config.file: web config file /nonexistent/web.yml"),
            "{e}"
        );
        let f = write_tmp("basic_auth_users: {}\n");
        let path = f.path().display().to_string();
        let mut c = run(&[&format!("--web.config.file={path}")]).unwrap();
        c.load_web_config().unwrap();
        let web = c.server.web.as_ref().unwrap();
        assert_eq!(web.path(), f.path());
        assert!(!web.tls_enabled());
        // Without the flag there is nothing to load.
        let mut c = run(&[]).unwrap();
        c.load_web_config().unwrap();
        assert!(c.server.web.is_none());
        // The file is not a config-file key.
        assert!(yaml("web: { config_file: x }").is_err());
    }

    #[test]
    fn help_lists_every_setting_once_with_its_default() {
        let h = help();
        for s in SETTINGS {
            assert!(h.contains(&format!("--{}", s.flag)), "{}", s.flag);
            if let Some(d) = s.default {
                assert!(h.contains(&format!("[default: {d}]")), "{}", s.flag);
            }
        }
        for line in h.lines() {
            assert!(line.chars().count() <= 100, "{line}");
        }
    }
}
