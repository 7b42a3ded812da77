//! Child processes for end-to-end tests: free loopback ports, a [`Proc`] guard that captures
//! stdout+stderr to a log file and always kills (SIGKILL + wait) on drop, readiness polling, and
//! a Prometheus launcher with a `prometheus.yml` writer.
//!
//! A guard dropped while the thread is panicking prints the tail of its log, so a failing test
//! shows what every process it started had to say. Keep guards of processes that already exited
//! (e.g. earlier generations of a restarted server) alive until the end of the test for that.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http;
use super::peer::Peer;

/// How many lines of a log a failure prints.
pub const LOG_TAIL_LINES: usize = 40;

/// `n` distinct free TCP ports on 127.0.0.1. All listeners are held until every port is picked,
/// so the ports differ from each other; another process could still grab one before we bind it.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// The last `lines` lines of the file at `path` (reads at most the last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("<cannot open {}: {e}>", path.display()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 << 10);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return format!("<cannot read {}>", path.display());
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A child process whose stdout and stderr go to `<log_dir>/<name>.log`. Dropping the guard
/// SIGKILLs the process (if still running) and reaps it.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
    /// An error message already carried the log tail; don't print it again on drop.
    tail_reported: bool,
}

impl Proc {
    /// Spawn `cmd` with stdin closed and stdout+stderr appended to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> io::Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {name} ({:?}): {e}", cmd.get_program()),
            )
        })?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
            exited: None,
            tail_reported: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last [`LOG_TAIL_LINES`] lines of the log, with a header naming the process.
    pub fn log_tail(&self) -> String {
        format!(
            "----- {} (pid {}) log tail: {} -----\n{}\n----- end of {} -----",
            self.name,
            self.pid(),
            self.log.display(),
            log_tail(&self.log, LOG_TAIL_LINES),
            self.name
        )
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    fn signal(&mut self, sig: i32) -> io::Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: sending a signal to our own, not yet reaped child.
        if unsafe { libc::kill(self.child.id() as i32, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait up to `timeout` for the exit. On timeout the process is SIGKILLed and an
    /// error returned.
    pub fn kill_term(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        match self.wait_timeout(timeout)? {
            Some(s) => Ok(s),
            None => {
                let _ = self.kill_9();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not exit within {timeout:?} of SIGTERM (SIGKILLed)",
                        self.name
                    ),
                ))
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill_9(&mut self) -> io::Result<ExitStatus> {
        self.signal(libc::SIGKILL)?;
        if let Some(s) = self.exited {
            return Ok(s);
        }
        let s = self.child.wait()?;
        self.exited = Some(s);
        Ok(s)
    }

    /// [`wait_ready`], but fails at once (with the exit status) if the process exits meanwhile;
    /// the error message includes the log tail.
    pub fn wait_ready(&mut self, addr: &str, path: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self
                .try_wait()
                .map_err(|e| format!("{}: try_wait: {e}", self.name))?;
            if let Some(status) = exited {
                self.tail_reported = true;
                return Err(format!(
                    "{} exited ({status}) before becoming ready at {addr}{path}\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            let last = match probe(addr, path) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.tail_reported = true;
                return Err(format!(
                    "{} did not become ready at {addr} within {timeout:?} (GET {path}: {last})\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill_9();
        if std::thread::panicking() && !self.tail_reported {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// One readiness probe: `Ok` iff `GET path` answers 200.
fn probe(addr: &str, path: &str) -> Result<(), String> {
    let mut c = http::Client::new(addr);
    c.set_timeout(Duration::from_secs(2));
    match c.get(path) {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!("status {}: {}", r.status, r.text().trim())),
        Err(e) => Err(e.to_string()),
    }
}

/// Poll `GET path` on `addr` every 100 ms until it answers 200, for at most `timeout`.
pub fn wait_ready(addr: &str, path: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe(addr, path) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{addr} did not become ready within {timeout:?} (GET {path}: {last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Prometheus configuration. No external labels, ever: they would be added to remote-written
/// series and filtered from remote reads, which is not what these tests compare.
#[derive(Debug, Clone, Default)]
pub struct PromConfig {
    /// `global.scrape_interval` and `evaluation_interval`, e.g. "1s". Default "15s".
    pub scrape_interval: Option<String>,
    /// `(job name, target host:port)`; each job scrapes `/metrics` of its one target.
    pub scrape_targets: Vec<(String, String)>,
    /// Full `remote_write` entries, YAML as it goes under `remote_write:` (one list item each,
    /// starting with "- url: ...").
    pub remote_write: Vec<String>,
    /// Full `remote_read` entries, as above.
    pub remote_read: Vec<String>,
}

impl PromConfig {
    pub fn to_yaml(&self) -> String {
        let interval = self.scrape_interval.as_deref().unwrap_or("15s");
        let mut y = String::new();
        let _ = writeln!(y, "global:");
        let _ = writeln!(y, "  scrape_interval: {interval}");
        let _ = writeln!(y, "  scrape_timeout: {interval}");
        let _ = writeln!(y, "  evaluation_interval: {interval}");
        let _ = writeln!(y, "scrape_configs:");
        if self.scrape_targets.is_empty() {
            let _ = writeln!(y, "  []");
        }
        for (job, target) in &self.scrape_targets {
            let _ = writeln!(y, "  - job_name: {job:?}");
            let _ = writeln!(y, "    static_configs:");
            let _ = writeln!(y, "      - targets: [{target:?}]");
        }
        for (key, entries) in [
            ("remote_write", &self.remote_write),
            ("remote_read", &self.remote_read),
        ] {
            if entries.is_empty() {
                continue;
            }
            let _ = writeln!(y, "{key}:");
            for e in entries {
                for line in e.lines() {
                    let _ = writeln!(y, "  {line}");
                }
            }
        }
        y
    }
}

/// Write `yaml` to `<dir>/<name>` and check it with the peer's `promtool check config` (a typo
/// then fails here, not as a silent startup error).
pub fn write_prometheus_yml(peer: Peer, dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, yaml).expect("write prometheus config");
    let out = Command::new(peer.promtool())
        .args(["check", "config"])
        .arg(&path)
        .output()
        .expect("run promtool check config");
    assert!(
        out.status.success(),
        "{peer}: promtool check config {} failed:\n{}{}\n--- config ---\n{yaml}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Start the peer's Prometheus on 127.0.0.1:`port` with `config` and data directory `data`, plus `extra`
/// flags; its log is `<log_dir>/<name>.log`. Does not wait for readiness.
pub fn start_prometheus(
    peer: Peer,
    name: &str,
    config: &Path,
    data: &Path,
    port: u16,
    extra: &[&str],
    log_dir: &Path,
) -> io::Result<Proc> {
    let mut cmd = Command::new(peer.prometheus());
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra);
    Proc::spawn(name, cmd, log_dir)
}
