//! The one table from errors to HTTP statuses.
//!
//! Prometheus's remote-write sender retries 5xx (with backoff) and drops the data on any other
//! 4xx, 429 included unless `retry_on_http_429` is set. So: 4xx only for requests that can
//! never succeed; everything a retry can fix is 5xx, and overload is 503 with `Retry-After`.

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::remote::read::ReadError;
use crate::remote::write::WriteError;
use crate::remote::BodyError;
use crate::tsdb::wal::WalError;
use crate::tsdb::AppendError;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("not ready: the data directory is still being recovered")]
    NotReady,
    #[error("overloaded: too many remote-write bytes in flight; retry later")]
    Overloaded,
    #[error(transparent)]
    Body(BodyError),
    #[error("cannot read request body: {0}")]
    BodyRead(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error(transparent)]
    Write(WriteError),
    #[error(transparent)]
    Read(ReadError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Seconds a sender is asked to wait after a 503.
const RETRY_AFTER_SECS: &str = "5";

impl ApiError {
    /// The table.
    pub fn status(&self) -> StatusCode {
        use StatusCode as S;
        let body_status = |b: &BodyError| match b {
            BodyError::TooLarge { .. } | BodyError::DecodedTooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            BodyError::Snappy(_) => S::BAD_REQUEST,
        };
        match self {
            ApiError::Unauthorized => S::UNAUTHORIZED,
            ApiError::NotReady | ApiError::Overloaded => S::SERVICE_UNAVAILABLE,
            ApiError::Body(b) => body_status(b),
            ApiError::BodyRead(_) => S::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => S::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Write(w) => match w {
                WriteError::Body(b) => body_status(b),
                WriteError::UnsupportedMediaType(_) => S::UNSUPPORTED_MEDIA_TYPE,
                WriteError::Proto(_) | WriteError::Rejected(_) => S::BAD_REQUEST,
                WriteError::Storage(AppendError::Wal(e)) => match e {
                    // The writer heals itself (fresh segment) or is shutting down: retry soon.
                    WalError::Poisoned { .. } | WalError::EpochChanged | WalError::Closed => {
                        S::SERVICE_UNAVAILABLE
                    }
                    WalError::Io { .. } | WalError::Gap(_) => S::INTERNAL_SERVER_ERROR,
                },
            },
            ApiError::Read(r) => match r {
                ReadError::Body(b) => body_status(b),
                ReadError::Proto(_) | ReadError::BadRequest(_) | ReadError::SampleLimit { .. } => {
                    S::BAD_REQUEST
                }
                ReadError::Storage(_) => S::INTERNAL_SERVER_ERROR,
            },
            ApiError::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            crate::log_warn!("request failed", status = status.as_u16(), err = self);
        }
        let mut resp = (status, format!("{self}\n")).into_response();
        let h = resp.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cairn\""),
            );
        }
        resp
    }
}
