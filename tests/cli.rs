//! The `cairn` binary as a user runs it: help, start on a data directory, SIGTERM → clean close,
//! a second process on the same directory refused, bad flags rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

#[test]
fn bad_flags_are_rejected_with_exit_code_2() {
    for args in [
        &["--nope=1"][..],
        &["--storage.tsdb.wal-sync=sometimes"],
        &["--storage.tsdb.min-block-duration=0s"],
        &["--storage.remote.read-concurrent-limit=0"],
        &["--storage.remote.write-label-limit=0"],
        &["--storage.tsdb.max-series=-1"],
        &["--storage.remote.read-max-bytes-in-frame=12"],
    ] {
        let out = cairn().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn starts_refuses_a_second_instance_and_closes_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("--storage.tsdb.path={}", dir.path().display());
    let mut child = cairn()
        .args([&path, "--web.listen-address=127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("data directory ready") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("cairn never reported ready");

    let second = cairn()
        .args([&path, "--web.listen-address=127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("in use by another process"), "{msg}");

    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("closed cleanly"), "{log}");
    assert!(dir.path().join("wal/00000000").exists());
}
