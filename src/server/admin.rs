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

/// Form pairs of the query string and, for a form-encoded body, the body, in order (so a
/// repeated `match[]` keeps every value). `+` is a space, `%XX` a byte; a `%` that starts no
/// valid escape stays as it is; bytes that are not UTF-8 become U+FFFD.
fn form(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    // A body that is not UTF-8 is not a form.
    let body: &[u8] = if is_form && std::str::from_utf8(body).is_ok() {
        body
    } else {
        b""
    };
    let query = uri.query().unwrap_or_default().as_bytes();
    form_urlencoded::parse(query)
        .chain(form_urlencoded::parse(body))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn first<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// RFC 3339 (`2026-11-21T22:18:00.123Z`, `…+01:00`; Go's `time.RFC3339Nano`, so `T` between
/// date and time) to ms since the epoch, sub-millisecond digits dropped (toward the past, as
/// Prometheus's `timestamp.FromTime`).
fn parse_rfc3339(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    // The parser takes any separator (RFC 3339 allows a space); Go takes only `T`.
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    let t = time::OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
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
    let ns = i128::from(crate::tsdb::head::now_ms()) * 1_000_000;
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(ns).map_err(std::io::Error::other)?;
    let r = getrandom::u64().map_err(std::io::Error::from)? >> 1;
    Ok(format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{r:x}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
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
        assert_eq!(parse_time("1970-01-01t00:00:00z").unwrap(), 0);
        assert_eq!(
            parse_time("2026-11-21T13:18:00.123456789-09:00").unwrap(),
            1_795_299_480_123
        );
        // Sub-millisecond digits are dropped toward the past, before 1970 too.
        assert_eq!(parse_time("1970-01-01T00:00:00.0009Z").unwrap(), 0);
        assert_eq!(parse_time("1969-12-31T23:59:59.9995Z").unwrap(), -1);
        assert_eq!(parse_time("2000-02-29T00:00:00Z").unwrap(), 951_782_400_000);
        for bad in [
            "",
            "now",
            "2026-11-21",
            "2026-13-01T00:00:00Z",
            // Dates that do not exist, as Go refuses them.
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-21 22:18:00Z",
            "2026-11-21T22:18:00",
            "2026-11-21T22:18:00.Z",
            "2026-11-21T22:18:00+0100",
            "1e999",
            "NaN",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_time("yesterday").unwrap_err(),
            "cannot parse \"yesterday\" to a valid timestamp"
        );
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
        // Bad escapes stay as written; a key without `=` has an empty value; a body that is
        // not a form is ignored.
        let uri: Uri = "/x?a=%zz%4&b&&c=%41".parse().unwrap();
        let f = form(&uri, &h, b"d=\xff");
        assert_eq!(
            f,
            vec![
                ("a".into(), "%zz%4".into()),
                ("b".into(), String::new()),
                ("c".into(), "A".into())
            ]
        );
        let f = form(&uri, &HeaderMap::new(), b"d=1");
        assert_eq!(f.len(), 3);
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
