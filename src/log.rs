//! Structured logs on stderr, as Prometheus writes them: logfmt (default) or JSON, with a
//! level filter (`--log.level`, `--log.format`).
//!
//! ```text
//! ts=2026-11-21T21:01:30.123Z level=info msg="data directory ready" head_series=100000
//! {"ts":"2026-11-21T21:01:30.123Z","level":"info","msg":"data directory ready","head_series":"100000"}
//! ```
//!
//! Use the macros: `log_info!("msg", key = value, …)`; values are anything `Display`.

use std::fmt::{Display, Write as _};
use std::io::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s {
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(format!(
                "invalid log level {s:?}: want debug, info, warn or error"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Logfmt,
    Json,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "logfmt" => Ok(Format::Logfmt),
            "json" => Ok(Format::Json),
            _ => Err(format!("invalid log format {s:?}: want logfmt or json")),
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JSON: AtomicU8 = AtomicU8::new(0);

/// Set the level filter and format (call once at start; later calls win).
pub fn init(level: Level, format: Format) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    JSON.store(u8::from(format == Format::Json), Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// Write one record (the macros call this).
pub fn log(level: Level, msg: &str, fields: &[(&str, &dyn Display)]) {
    if !enabled(level) {
        return;
    }
    let line = format_line(
        JSON.load(Ordering::Relaxed) == 1,
        &timestamp(SystemTime::now()),
        level,
        msg,
        fields,
    );
    // One write per record, so concurrent records do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// One record as a line (with its newline).
pub fn format_line(
    json: bool,
    ts: &str,
    level: Level,
    msg: &str,
    fields: &[(&str, &dyn Display)],
) -> String {
    let mut out = String::with_capacity(128);
    let all = [("ts", ts), ("level", level.as_str()), ("msg", msg)];
    if json {
        out.push('{');
        let mut first = true;
        let mut put = |k: &str, v: &str, out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
            json_str(out, k);
            out.push(':');
            json_str(out, v);
        };
        for (k, v) in all {
            put(k, v, &mut out);
        }
        for (k, v) in fields {
            put(k, &v.to_string(), &mut out);
        }
        out.push('}');
    } else {
        for (i, (k, v)) in all.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            logfmt_value(&mut out, v);
        }
        for (k, v) in fields {
            out.push(' ');
            out.push_str(k);
            out.push('=');
            logfmt_value(&mut out, &v.to_string());
        }
    }
    out.push('\n');
    out
}

fn logfmt_value(out: &mut String, v: &str) {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c > ' ' && c != '"' && c != '=' && c != '\\' && c != '\u{7f}');
    if plain {
        out.push_str(v);
    } else {
        json_str(out, v);
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 UTC with milliseconds (`2026-11-21T21:01:30.123Z`); times before 1970 as the
/// epoch, after 9999 as its last millisecond.
pub fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = i128::try_from(since.as_nanos())
        .ok()
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $msg:expr $(, $k:ident = $v:expr)* $(,)?) => {
        if $crate::log::enabled($level) {
            $crate::log::log($level, $msg, &[$((stringify!($k), &$v as &dyn ::std::fmt::Display)),*]);
        }
    };
}

#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($t)*) }; }
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($t)*) }; }
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log_at!($crate::log::Level::Warn, $($t)*) }; }
#[macro_export]
macro_rules! log_error { ($($t:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($t)*) }; }

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_294_446_123);
        assert_eq!(timestamp(t), "2026-11-21T20:54:06.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
        let late = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
        assert_eq!(timestamp(late), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
        let far = UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(timestamp(far), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn logfmt_quotes_what_needs_it_and_json_escapes() {
        let n = 42;
        let err = "disk \"full\"\nnow";
        let line = format_line(
            false,
            "T",
            Level::Warn,
            "it broke",
            &[("n", &n), ("err", &err), ("empty", &"")],
        );
        assert_eq!(
            line,
            "ts=T level=warn msg=\"it broke\" n=42 err=\"disk \\\"full\\\"\\nnow\" empty=\"\"\n"
        );
        let line = format_line(true, "T", Level::Info, "ok", &[("n", &n), ("err", &err)]);
        assert_eq!(
            line,
            "{\"ts\":\"T\",\"level\":\"info\",\"msg\":\"ok\",\"n\":\"42\",\"err\":\"disk \\\"full\\\"\\nnow\"}\n"
        );
    }

    #[test]
    fn levels_parse_and_order() {
        assert!(Level::Debug < Level::Error);
        assert_eq!("warn".parse::<Level>(), Ok(Level::Warn));
        assert!("loud".parse::<Level>().is_err());
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert!("xml".parse::<Format>().is_err());
    }
}
