//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream` for tests and tools.
//!
//! One [`Client`] holds one keep-alive connection. It understands `Content-Length` and
//! `Transfer-Encoding: chunked` bodies, `Connection: close`, read-to-EOF bodies, and the
//! responses that never carry a body (1xx, 204, 304, answers to HEAD). A response header
//! block above 64 KiB or a body above 1 GiB is refused with an `io::Error`.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest accepted response header block (status line included).
const MAX_HEADER_BYTES: usize = 64 << 10;
/// Largest accepted response body.
const MAX_BODY_BYTES: usize = 1 << 30;

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection to `addr` ("127.0.0.1:9201"). Reconnects transparently when
/// the server closed a reused connection: the request is retried once, and only if nothing
/// of it can have been processed (the write failed, or the read hit EOF / a reset before
/// any byte of the response).
pub struct Client {
    addr: String,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// How an attempt on a connection failed.
enum Failure {
    /// Nothing of the request can have been processed: safe to retry on a new connection.
    Retryable(io::Error),
    /// Anything else.
    Fatal(io::Error),
}

impl Client {
    pub fn new(addr: impl Into<String>) -> Client {
        Client {
            addr: addr.into(),
            timeout: Duration::from_secs(30),
            conn: None,
        }
    }

    /// Connect, read and write timeouts (default 30 s).
    pub fn set_timeout(&mut self, d: Duration) {
        self.timeout = d;
        if let Some(c) = &self.conn {
            let _ = c.get_ref().set_read_timeout(Some(d));
            let _ = c.get_ref().set_write_timeout(Some(d));
        }
    }

    pub fn get(&mut self, path_and_query: &str) -> io::Result<Response> {
        self.request("GET", path_and_query, &[], &[])
    }

    pub fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.request("POST", path, headers, body)
    }

    pub fn request(
        &mut self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let head = self.build_head(method, path_and_query, headers, body.len());
        let reused = self.conn.is_some();
        match self.attempt(method, &head, body) {
            Ok(r) => Ok(r),
            Err(Failure::Retryable(_)) if reused => {
                self.conn = None;
                match self.attempt(method, &head, body) {
                    Ok(r) => Ok(r),
                    Err(Failure::Retryable(e)) | Err(Failure::Fatal(e)) => {
                        self.conn = None;
                        Err(e)
                    }
                }
            }
            Err(Failure::Retryable(e)) | Err(Failure::Fatal(e)) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    fn build_head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_len: usize,
    ) -> Vec<u8> {
        let path = if path.is_empty() { "/" } else { path };
        let mut h = format!("{method} {path} HTTP/1.1\r\n");
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !has("host") {
            h.push_str(&format!("Host: {}\r\n", self.addr));
        }
        let bodyless_method = matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS");
        if !has("content-length") && !has("transfer-encoding") && (body_len > 0 || !bodyless_method)
        {
            h.push_str(&format!("Content-Length: {body_len}\r\n"));
        }
        for (n, v) in headers {
            h.push_str(n);
            h.push_str(": ");
            h.push_str(v);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    fn connect(&self) -> io::Result<BufReader<TcpStream>> {
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("no address for {}", self.addr),
        );
        for sa in self.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, self.timeout) {
                Ok(s) => {
                    s.set_read_timeout(Some(self.timeout))?;
                    s.set_write_timeout(Some(self.timeout))?;
                    s.set_nodelay(true)?;
                    return Ok(BufReader::with_capacity(64 << 10, s));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn attempt(&mut self, method: &str, head: &[u8], body: &[u8]) -> Result<Response, Failure> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().map_err(Failure::Fatal)?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Fatal(io::Error::other("no connection")));
        };
        // Write the whole request; any failure here means the server cannot have answered it.
        let write = |s: &mut TcpStream| -> io::Result<()> {
            if body.len() <= 64 << 10 {
                let mut buf = Vec::with_capacity(head.len() + body.len());
                buf.extend_from_slice(head);
                buf.extend_from_slice(body);
                s.write_all(&buf)?;
            } else {
                s.write_all(head)?;
                s.write_all(body)?;
            }
            s.flush()
        };
        write(conn.get_mut()).map_err(Failure::Retryable)?;

        let (resp, keep_alive) = read_response(conn, method)?;
        if !keep_alive {
            self.conn = None;
        }
        Ok(resp)
    }
}

/// Is `e` the kind of error a server closing an idle connection produces?
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Read one line (through `\n`) into `line`, charging it to `budget`.
fn read_line_limited<R: BufRead>(
    r: &mut R,
    line: &mut Vec<u8>,
    budget: &mut usize,
) -> io::Result<usize> {
    line.clear();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', line)?;
    if n > *budget {
        return Err(invalid(format!(
            "response header block exceeds {MAX_HEADER_BYTES} bytes"
        )));
    }
    *budget -= n;
    Ok(n)
}

fn trim_crlf(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Read a response; returns it and whether the connection can be reused.
fn read_response<R: BufRead>(r: &mut R, method: &str) -> Result<(Response, bool), Failure> {
    let mut first = true;
    loop {
        let mut budget = MAX_HEADER_BYTES;
        let mut line = Vec::new();
        match read_line_limited(r, &mut line, &mut budget) {
            Ok(0) if first => {
                return Err(Failure::Retryable(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before any response byte",
                )))
            }
            Ok(0) => {
                return Err(Failure::Fatal(invalid(
                    "connection closed before the status line",
                )))
            }
            Ok(_) => {}
            Err(e) if first && is_closed(&e) => return Err(Failure::Retryable(e)),
            Err(e) => return Err(Failure::Fatal(e)),
        }
        first = false;
        let status_line = String::from_utf8_lossy(trim_crlf(&line)).into_owned();
        if !line.ends_with(b"\n") {
            return Err(Failure::Fatal(invalid(format!(
                "truncated status line {status_line:?}"
            ))));
        }
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| Failure::Fatal(invalid(format!("bad status line {status_line:?}"))))?;

        let mut headers = Vec::new();
        loop {
            let n = read_line_limited(r, &mut line, &mut budget).map_err(Failure::Fatal)?;
            if n == 0 || !line.ends_with(b"\n") {
                return Err(Failure::Fatal(invalid(
                    "connection closed inside the header block",
                )));
            }
            let l = trim_crlf(&line);
            if l.is_empty() {
                break;
            }
            let l = String::from_utf8_lossy(l);
            let Some((n, v)) = l.split_once(':') else {
                return Err(Failure::Fatal(invalid(format!("bad header line {l:?}"))));
            };
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        // Interim responses (100 Continue, 103 Early Hints): skip, read the final one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let conn_hdr = resp.header("connection").map(|s| s.to_ascii_lowercase());
        let mut keep_alive = if version == "HTTP/1.0" {
            conn_hdr
                .as_deref()
                .is_some_and(|c| c.contains("keep-alive"))
        } else {
            !conn_hdr.as_deref().is_some_and(|c| c.contains("close"))
        };
        if method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304 {
            return Ok((resp, keep_alive && status != 101));
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            resp.body = read_chunked(r).map_err(Failure::Fatal)?;
        } else if let Some(cl) = resp.header("content-length") {
            let len: usize = cl
                .trim()
                .parse()
                .map_err(|_| Failure::Fatal(invalid(format!("bad Content-Length {cl:?}"))))?;
            if len > MAX_BODY_BYTES {
                return Err(Failure::Fatal(invalid(format!(
                    "response body of {len} bytes exceeds {MAX_BODY_BYTES}"
                ))));
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).map_err(Failure::Fatal)?;
            resp.body = body;
        } else {
            // No framing: the body runs to EOF and the connection is done.
            let mut body = Vec::new();
            let n = r
                .by_ref()
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut body)
                .map_err(Failure::Fatal)?;
            if n > MAX_BODY_BYTES {
                return Err(Failure::Fatal(invalid(format!(
                    "response body exceeds {MAX_BODY_BYTES} bytes"
                ))));
            }
            resp.body = body;
            keep_alive = false;
        }
        return Ok((resp, keep_alive));
    }
}

fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        let mut budget = 4096;
        let n = read_line_limited(r, &mut line, &mut budget)
            .map_err(|e| invalid(format!("reading chunk size: {e}")))?;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(invalid("connection closed inside a chunked body"));
        }
        let l = String::from_utf8_lossy(trim_crlf(&line)).into_owned();
        let hex = l.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| invalid(format!("bad chunk size line {l:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            let mut budget = MAX_HEADER_BYTES;
            loop {
                let n = read_line_limited(r, &mut line, &mut budget)?;
                if n == 0 || !line.ends_with(b"\n") {
                    return Err(invalid("connection closed inside chunked trailers"));
                }
                if trim_crlf(&line).is_empty() {
                    return Ok(body);
                }
            }
        }
        if size > MAX_BODY_BYTES - body.len() {
            return Err(invalid(format!(
                "response body exceeds {MAX_BODY_BYTES} bytes"
            )));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

/// One-shot GET on a fresh connection.
pub fn get(addr: &str, path_and_query: &str) -> io::Result<Response> {
    Client::new(addr).get(path_and_query)
}

/// Percent-encode `s` for use as a query parameter name or value (RFC 3986 unreserved
/// characters are kept, everything else — including space, `+`, `&`, `=` — becomes `%XX`).
pub fn urlencode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

/// Read one response to a `method` request from any stream (a TLS one, say).
pub fn read_response_from<R: BufRead>(r: &mut R, method: &str) -> io::Result<Response> {
    match read_response(r, method) {
        Ok((resp, _)) => Ok(resp),
        Err(Failure::Retryable(e)) | Err(Failure::Fatal(e)) => Err(e),
    }
}
