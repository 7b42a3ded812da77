//! Prometheus's TSDB admin API (`web/api/v1/api.go`), served with `--web.enable-admin-api`:
//!
//! - `POST|PUT /api/v1/admin/tsdb/delete_series?match[]=<selector>&start=&end=` → 204
//! - `POST|PUT /api/v1/admin/tsdb/clean_tombstones` → 204
//! - `POST|PUT /api/v1/admin/tsdb/snapshot?skip_head=<bool>` → 200 `{"status":"success",
//!   "data":{"name":"20261121T221800Z-1a2b…"}}`, the snapshot in `<data dir>/snapshots/<name>`
//!
//! Parameters come from the query string or an `application/x-www-form-urlencoded` body, as
//! Go's `Request.ParseForm` reads them. Errors are Prometheus's JSON envelope
//! (`{"status":"error","errorType":"bad_data","error":"…"}`): 400 for bad parameters, 403
//! without the flag (a retry cannot help), 503 while the data directory is recovered, 500
//! for storage failures.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::model::selector::parse_selector;
use crate::tsdb::Db;

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, kind: &str, msg: impl std::fmt::Display) -> Response {
    if status.is_server_error() {
        crate::log_warn!("admin request failed", status = status.as_u16(), err = msg);
    }
    json(
        status,
        serde_json::json!({"status": "error", "errorType": kind, "error": msg.to_string()}),
    )
}

/// Why the admin API cannot serve a request now.
enum Refused {
    Disabled,
    NotReady,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Disabled => error(
                StatusCode::FORBIDDEN,
                "unavailable",
                "admin APIs disabled (start cairn with --web.enable-admin-api)",
            ),
            Refused::NotReady => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "not ready: the data directory is still being recovered",
            ),
        }
    }
}

/// The database, or why there is none to use.
fn admin_db(st: &AppState) -> Result<Arc<Db>, Refused> {
    if !st.cfg().enable_admin_api {
        return Err(Refused::Disabled);
    }
    st.db().cloned().ok_or(Refused::NotReady)
}

/// `%XX` and `+` decoding of one form component (invalid escapes are kept as they are, as
/// Go keeps no such leniency but refuses; refusing would gain nothing here).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Form pairs of the query string and, for a form-encoded body, the body.
fn form(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let mut raw = uri.query().unwrap_or_default().to_string();
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        if let Ok(b) = std::str::from_utf8(body) {
            if !raw.is_empty() {
                raw.push('&');
            }
            raw.push_str(b);
        }
    }
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn first<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 (`2026-11-21T22:18:00.123Z`, `…+01:00`) to ms since the epoch.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |a: usize, b: usize| -> Option<i64> {
        let t = s.get(a..b)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let b = s.as_bytes();
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (
        num(0, 4)?,
        num(5, 7)?,
        num(8, 10)?,
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return None;
        }
        let frac = s.get(start..end)?;
        let padded = format!("{:0<3}", frac.get(..frac.len().min(3))?);
        ms = padded.parse().ok()?;
        i = end;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let v = num(i + 1, i + 3)? * 60 + num(i + 4, i + 6)?;
            if sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    secs.checked_mul(1000)?.checked_add(ms)
}

/// Prometheus `parseTime`: float seconds since the epoch (rounded to ms) or RFC 3339.
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            let ms = (f * 1000.0).round();
            if ms >= i64::MIN as f64 && ms <= i64::MAX as f64 {
                return Ok(ms as i64);
            }
        }
    }
    parse_rfc3339(s).ok_or_else(|| format!("cannot parse {s:?} to a valid timestamp"))
}

pub(super) async fn delete_series(
    State(st): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let db = match admin_db(&st) {
        Ok(db) => db,
        Err(r) => return r.into_response(),
    };
    let form = form(&uri, &headers, &body);
    let selectors: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "match[]")
        .map(|(_, v)| v.as_str())
        .collect();
    if selectors.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "no match[] parameter provided",
        );
    }
    let time = |key: &str, default: i64| match first(&form, key) {
        None | Some("") => Ok(default),
        Some(v) => parse_time(v).map_err(|e| format!("invalid time value for '{key}': {e}")),
    };
    let (start, end) = match (time("start", i64::MIN), time("end", i64::MAX)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    let mut all = Vec::with_capacity(selectors.len());
    for sel in selectors {
        match parse_selector(sel) {
            Ok(m) => all.push(m),
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e),
        }
    }
    let res = tokio::task::spawn_blocking(move || {
        for matchers in &all {
            db.delete(matchers, start, end)?;
        }
        Ok::<(), crate::tsdb::DbError>(())
    })
    .await;
    match res {
        Ok(Ok(())) => {
            crate::log_info!("series deleted", start = start, end = end);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

pub(super) async fn clean_tombstones(State(st): State<Arc<AppState>>) -> Response {
    let db = match admin_db(&st) {
        Ok(db) => db,
        Err(r) => return r.into_response(),
    };
    match tokio::task::spawn_blocking(move || db.clean_tombstones()).await {
        Ok(Ok(done)) => {
            crate::log_info!("tombstones cleaned", blocks_rewritten = done.len());
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

/// Prometheus's snapshot name: UTC time as `20060102T150405Z0700`, `-`, a random 63-bit
/// number in hex.
fn snapshot_name() -> std::io::Result<String> {
    let ms = crate::tsdb::head::now_ms();
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil_from_days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut rnd = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut rnd)?;
    let r = u64::from_le_bytes(rnd) >> 1;
    Ok(format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{r:x}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    ))
}

pub(super) async fn snapshot(
    State(st): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let db = match admin_db(&st) {
        Ok(db) => db,
        Err(r) => return r.into_response(),
    };
    let form = form(&uri, &headers, &body);
    let skip_head = match first(&form, "skip_head") {
        None | Some("") => false,
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                "unable to parse boolean 'skip_head' argument",
            )
        }
    };
    let name = match snapshot_name() {
        Ok(n) => n,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    };
    let dir = db.dir().join("snapshots").join(&name);
    let res = tokio::task::spawn_blocking(move || db.snapshot(&dir, !skip_head)).await;
    match res {
        Ok(Ok(())) => {
            crate::log_info!("snapshot created", name = name, with_head = !skip_head);
            json(
                StatusCode::OK,
                serde_json::json!({"status": "success", "data": {"name": name}}),
            )
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_parse_like_prometheus() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1700000000.1234").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time("-1.5").unwrap(), -1500);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time("2026-11-21T22:18:00.5Z").unwrap(),
            1_795_299_480_500
        );
        assert_eq!(
            parse_time("2026-11-21T23:18:00+01:00").unwrap(),
            1_795_299_480_000
        );
        for bad in [
            "",
            "now",
            "2026-11-21",
            "2026-13-01T00:00:00Z",
            "1e999",
            "NaN",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn form_reads_query_and_form_body() {
        let uri: Uri = "/x?match%5B%5D=up%7Bjob%3D%22a%22%7D&start=1"
            .parse()
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let f = form(&uri, &h, b"match[]=down+x&end=2");
        assert_eq!(
            f,
            vec![
                ("match[]".into(), "up{job=\"a\"}".into()),
                ("start".into(), "1".into()),
                ("match[]".into(), "down x".into()),
                ("end".into(), "2".into())
            ]
        );
    }

    #[test]
    fn snapshot_names_look_like_prometheus() {
        let n = snapshot_name().unwrap();
        let (t, r) = n.split_once('-').unwrap();
        assert_eq!(t.len(), 16);
        assert!(t.ends_with('Z') && t.as_bytes()[8] == b'T');
        assert!(!r.is_empty() && r.len() <= 16 && u64::from_str_radix(r, 16).is_ok());
    }
}
