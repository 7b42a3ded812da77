//! The `cairn` binary as a user runs it: help, start on a data directory, SIGTERM → clean close,
//! a second process on the same directory refused, bad flags rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn cairn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let out = cairn().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--web.listen-address",
        "--web.enable-lifecycle",
        "--web.config.file",
        "--storage.tsdb.max-series",
        "--storage.remote.write-label-limit",
        "--storage.remote.write-label-name-length-limit",
        "--storage.remote.write-label-value-length-limit",
        "--storage.remote.read-sample-limit",
        "--storage.remote.read-concurrent-limit",
        "--storage.remote.read-max-bytes-in-frame",
        "--storage.tsdb.path",
        "--storage.tsdb.wal-sync",
        "--storage.tsdb.min-block-duration",
        "--storage.tsdb.wal-segment-size",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    assert!(help.contains("[default: always]"));
    assert!(help.contains("[default: :9201]"));
}

/// The whole `--help` text is a golden file: a flag change shows up in review. To update it
/// deliberately: `CAIRN_UPDATE_GOLDEN=1 cargo nextest run --test cli help_matches_the_golden`.
#[test]
fn help_matches_the_golden() {
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/help.txt");
    let out = cairn().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    if std::env::var_os("CAIRN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &help).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert!(
        help == want,
        "--help differs from {} (update it deliberately, see this test's docs):\n{help}",
        golden.display()
    );
}

#[test]
fn a_bad_config_file_is_rejected_with_exit_code_2() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/bad");
    for (name, want) in [
        ("unknown_key.yml", "unknown field `retention_time`"),
        (
            "bad_wal_sync.yml",
            "storage.tsdb.wal_sync: invalid WAL sync policy",
        ),
    ] {
        let file = dir.join(name);
        let out = cairn()
            .arg(format!("--config.file={}", file.display()))
            .arg("--storage.tsdb.path=/nonexistent/never-created")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(
            msg.starts_with(&format!("cairn: config file {}: ", file.display())),
            "{msg}"
        );
        assert!(msg.contains(want), "{name}: {msg}");
    }
    let out = cairn()
        .arg("--config.file=/nonexistent/cairn.yml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn starts_from_a_config_file_and_flags_win_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("cairn.yml");
    std::fs::write(
        &file,
        format!(
            "web:\n  listen_address: 127.0.0.1:0\nstorage:\n  tsdb:\n    path: {}\n    \
             wal_sync: never\n    wal_segment_size: 1MB\nlog:\n  level: warn\n",
            data.display()
        ),
    )
    .unwrap();
    let config = format!("--config.file={}", file.display());
    // The file says warn (which would hide "data directory ready"); the flag says info.
    let run = spawn(&[&config, "--log.level=info"]);
    run.ready
        .recv_timeout(Duration::from_secs(30))
        .expect("cairn never reported ready");
    let log = run.stop();
    assert!(
        log.contains("level=info msg=listening address=127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains("wal_sync=Never"), "{log}");
    assert!(log.contains(&format!("path={}", data.display())), "{log}");
    assert!(data.join("wal/00000000").exists());
}

#[test]
fn bad_flags_are_rejected_with_exit_code_2() {
    for args in [
        &["--nope=1"][..],
        &["--storage.tsdb.wal-sync=sometimes"],
        &["--storage.tsdb.min-block-duration=0s"],
        &["--storage.remote.read-concurrent-limit=0"],
        &["--storage.remote.write-label-limit=0"],
        &["--storage.tsdb.max-series=-1"],
        &["--web.enable-lifecycle=yes"],
        &["--storage.remote.read-max-bytes-in-frame=12"],
    ] {
        let out = cairn().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

/// A running `cairn` whose stderr is collected; `ready` fires on "data directory ready".
struct Running {
    child: std::process::Child,
    ready: mpsc::Receiver<()>,
    /// The bound address, from the "listening" log line.
    addr: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<String>,
}

fn start(path: &str) -> Running {
    start_with(path, &[])
}

fn start_with(path: &str, extra: &[&str]) -> Running {
    let mut args = vec![path, "--web.listen-address=127.0.0.1:0"];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// Start `cairn` with exactly `args`.
fn spawn(args: &[&str]) -> Running {
    let mut child = cairn().args(args).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, ready) = mpsc::channel();
    let (addr_tx, addr) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("data directory ready") {
                let _ = tx.send(());
            }
            if let Some(a) = line.split("msg=listening address=").nth(1) {
                let _ = addr_tx.send(a.trim().to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    Running {
        child,
        ready,
        addr,
        reader,
    }
}

impl Running {
    /// SIGTERM, wait, and return the log; the exit must be clean.
    fn stop(mut self) -> String {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let status = self.child.wait().unwrap();
        let log = self.reader.join().unwrap();
        assert!(status.success(), "exit {status:?}\n{log}");
        assert!(log.contains("closed cleanly"), "{log}");
        log
    }
}

#[test]
fn starts_refuses_a_second_instance_and_closes_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("--storage.tsdb.path={}", dir.path().display());
    let first = start(&path);
    first
        .ready
        .recv_timeout(Duration::from_secs(30))
        .expect("cairn never reported ready");

    let second = cairn()
        .args([&path, "--web.listen-address=127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("in use by another process"), "{msg}");

    let log = first.stop();
    assert!(
        log.contains("level=info msg=listening address=127.0.0.1:"),
        "{log}"
    );
    assert!(dir.path().join("wal/00000000").exists());

    // A restart replays the segment the first run left and logs its progress.
    let again = start(&path);
    again
        .ready
        .recv_timeout(Duration::from_secs(30))
        .expect("cairn never reported ready after a restart");
    let log = again.stop();
    assert!(
        log.contains("msg=\"WAL replay\" segments=1/1 percent=100"),
        "{log}"
    );
}

#[test]
fn quit_endpoint_needs_the_lifecycle_flag_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("--storage.tsdb.path={}", dir.path().display());

    let plain = start(&path);
    plain.ready.recv_timeout(Duration::from_secs(30)).unwrap();
    let addr = plain.addr.recv_timeout(Duration::from_secs(5)).unwrap();
    let r = common::http::Client::new(addr)
        .post("/-/quit", &[], &[])
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("--web.enable-lifecycle"));
    plain.stop();

    let mut life = start_with(&path, &["--web.enable-lifecycle"]);
    life.ready.recv_timeout(Duration::from_secs(30)).unwrap();
    let addr = life.addr.recv_timeout(Duration::from_secs(5)).unwrap();
    let r = common::http::Client::new(addr)
        .post("/-/quit", &[], &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let status = life.child.wait().unwrap();
    let log = life.reader.join().unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("stop requested through /-/quit"), "{log}");
    assert!(log.contains("closed cleanly"), "{log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("--storage.tsdb.path={}", dir.path().display());
    let run = start_with(&path, &["--log.format=json", "--log.level=info"]);
    run.ready.recv_timeout(Duration::from_secs(30)).unwrap();
    let log = run.stop();
    let mut msgs = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        assert_eq!(v["level"], "info", "{line}");
        msgs.push(v["msg"].as_str().unwrap().to_string());
    }
    for want in ["listening", "data directory ready", "closed cleanly"] {
        assert!(
            msgs.iter().any(|m| m == want),
            "{want} missing from {msgs:?}"
        );
    }

    // warn hides info: a clean run logs nothing.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("--web.listen-address=127.0.0.1:{port}");
    let mut run = start_with(&path, &["--log.level=warn", &listen]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while common::http::get(&format!("127.0.0.1:{port}"), "/-/ready")
        .map_or(true, |r| r.status != 200)
    {
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: sending a signal to our own child process.
    assert_eq!(
        unsafe { libc::kill(run.child.id() as i32, libc::SIGTERM) },
        0
    );
    assert!(run.child.wait().unwrap().success());
    let log = run.reader.join().unwrap();
    assert_eq!(log, "", "--log.level=warn printed info lines");
}

/// Scrape one gauge's value from `/metrics`.
fn metric(addr: &str, name: &str) -> f64 {
    let text = common::http::get(addr, "/metrics").unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn sighup_and_reload_endpoint_put_a_changed_config_file_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("cairn.yml");
    let yml = |retention: &str, label_limit: &str, max_series: &str| {
        format!(
            "web:\n  listen_address: 127.0.0.1:0\n  enable_lifecycle: true\nstorage:\n  tsdb:\n    \
             path: {}\n    wal_sync: never\n    max_series: {max_series}\n    retention:\n      \
             time: {retention}\n  remote:\n    write_label_limit: {label_limit}\n",
            data.display()
        )
    };
    std::fs::write(&file, yml("15d", "64", "0")).unwrap();
    let config = format!("--config.file={}", file.display());
    let run = spawn(&[&config]);
    run.ready.recv_timeout(Duration::from_secs(30)).unwrap();
    let addr = run.addr.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        metric(&addr, "cairn_tsdb_retention_limit_seconds"),
        15.0 * 86400.0
    );

    // SIGHUP: the new retention is in force.
    std::fs::write(&file, yml("1d", "64", "0")).unwrap();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(
        unsafe { libc::kill(run.child.id() as i32, libc::SIGHUP) },
        0
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&addr, "cairn_tsdb_retention_limit_seconds") != 86400.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // /-/reload: a broken file is refused (500, the reason), the running config stays.
    std::fs::write(&file, "storage: { tsdb: { retention: { time: soon } } }\n").unwrap();
    let mut c = common::http::Client::new(addr.clone());
    let r = c.post("/-/reload", &[], &[]).unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("retention"), "{}", r.text());
    assert_eq!(metric(&addr, "cairn_tsdb_retention_limit_seconds"), 86400.0);

    // A valid file again, with a lower label limit (live: writes with more labels get 400)
    // and a series limit (restart: named in a warning, not in force).
    std::fs::write(&file, yml("1d", "2", "1")).unwrap();
    let r = c.post("/-/reload", &[], &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let req = common::proto::WriteRequest {
        timeseries: vec![common::proto::series(
            &[("__name__", "m"), ("a", "1"), ("b", "2")],
            &[(cairn::tsdb::head::now_ms(), 1.0)],
        )],
        ..Default::default()
    };
    let body = common::proto::snappy(&prost::Message::encode_to_vec(&req));
    let r = c
        .post("/api/v1/write", &common::server::write_headers(), &body)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("more than 2 labels"), "{}", r.text());
    let req = common::proto::WriteRequest {
        timeseries: ["a", "b"]
            .map(|v| {
                common::proto::series(
                    &[("__name__", "m"), ("a", v)],
                    &[(cairn::tsdb::head::now_ms(), 1.0)],
                )
            })
            .into(),
        ..Default::default()
    };
    let body = common::proto::snappy(&prost::Message::encode_to_vec(&req));
    let r = c
        .post("/api/v1/write", &common::server::write_headers(), &body)
        .unwrap();
    assert_eq!(
        r.status,
        204,
        "the series limit of 1 was put in force: {}",
        r.text()
    );
    let log = run.stop();
    assert!(
        log.contains(
            "msg=\"changed settings take effect after a restart; the running values stay\" \
             settings=storage.tsdb.max-series\n"
        ),
        "{log}"
    );
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("configuration not reloaded"), "{log}");
}
