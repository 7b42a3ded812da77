//! The real Prometheus releases the tests run against: 2.42 (Debian 12's `prometheus` package)
//! and 3.x ≥ 3.5 (Debian sid's `prometheus` and `promtool`, unpacked by `scripts/install-peers`
//! under `target/peers/`). Every test that runs a Prometheus or promtool runs once per peer;
//! [`peer_tests!`](crate::peer_tests) turns `fn name(peer: Peer)` into the tests
//! `name::prometheus_2` and `name::prometheus_3`.
//!
//! Where a peer is: `$CAIRN_PEER_2_DIR` / `$CAIRN_PEER_3_DIR` (a directory holding `prometheus`
//! and `promtool`; `scripts/test` sets both), else `/usr/bin` for 2.x and
//! `target/peers/prometheus-3/usr/bin` for 3.x. A missing peer, or one of the wrong version,
//! panics with how to install it: these tests never skip.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// A Prometheus release line the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Prometheus 2.x (Debian 12: 2.42).
    V2,
    /// Prometheus 3.x, at least 3.5 (the long-term-support line).
    V3,
}

const INSTALL: &str = "run scripts/install-peers (as root on Debian 12; it installs Debian's \
                       prometheus 2.42 and unpacks Prometheus 3.x from Debian sid under \
                       target/peers/), or set CAIRN_PEER_2_DIR / CAIRN_PEER_3_DIR to a directory \
                       holding prometheus and promtool";

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::V2, Peer::V3];

    /// The major version: 2 or 3.
    pub fn major(self) -> u32 {
        match self {
            Peer::V2 => 2,
            Peer::V3 => 3,
        }
    }

    /// The directory with this peer's `prometheus` and `promtool`.
    pub fn dir(self) -> PathBuf {
        let (env, default) = match self {
            Peer::V2 => ("CAIRN_PEER_2_DIR", PathBuf::from("/usr/bin")),
            Peer::V3 => (
                "CAIRN_PEER_3_DIR",
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers/prometheus-3/usr/bin"),
            ),
        };
        std::env::var_os(env).map_or(default, PathBuf::from)
    }

    /// The `prometheus` binary, checked to be of this peer's version.
    pub fn prometheus(self) -> PathBuf {
        self.checked("prometheus");
        self.dir().join("prometheus")
    }

    /// The `promtool` binary, checked to be of this peer's version (the same as its
    /// `prometheus`).
    pub fn promtool(self) -> PathBuf {
        let v = self.checked("promtool");
        assert_eq!(
            v,
            self.version(),
            "{} is {v}, but prometheus next to it is {}",
            self.dir().join("promtool").display(),
            self.version()
        );
        self.dir().join("promtool")
    }

    /// The version of this peer's Prometheus, e.g. "3.5.3"; panics (with how to install it)
    /// when it is missing or not of this major version (3.x must be ≥ 3.5).
    pub fn version(self) -> &'static str {
        self.checked("prometheus")
    }

    /// The version `tool --version` prints, checked once per peer and tool.
    fn checked(self, tool: &'static str) -> &'static str {
        type Cell = OnceLock<Result<String, String>>;
        static CELLS: [[Cell; 2]; 2] = [
            [OnceLock::new(), OnceLock::new()],
            [OnceLock::new(), OnceLock::new()],
        ];
        let cell = &CELLS[usize::from(self == Peer::V3)][usize::from(tool == "promtool")];
        let path = self.dir().join(tool);
        let res = cell.get_or_init(|| {
            let out = Command::new(&path)
                .arg("--version")
                .output()
                .map_err(|e| format!("{} cannot be run ({e}): {INSTALL}", path.display()))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            // "prometheus, version 3.5.3+ds1 (branch: …)"
            let v = text
                .split_whitespace()
                .skip_while(|w| *w != "version")
                .nth(1)
                .map(|v| v.split(['+', '-']).next().unwrap_or(v).to_string())
                .ok_or_else(|| {
                    format!("{} --version printed no version: {text}", path.display())
                })?;
            let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            if major != self.major() || (major == 3 && minor < 5) {
                let want = if self == Peer::V3 {
                    "3.x >= 3.5"
                } else {
                    "2.x"
                };
                return Err(format!(
                    "{} is version {v}, but the {want} peer is needed: {INSTALL}",
                    path.display()
                ));
            }
            Ok(v)
        });
        match res {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prometheus {}", self.version())
    }
}

/// `peer_tests!(a, b)`: for each `fn a(peer: Peer)`, the tests `a::prometheus_2` and
/// `a::prometheus_3`, each calling it with that peer.
#[macro_export]
macro_rules! peer_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn prometheus_2() {
                super::$name($crate::common::peer::Peer::V2)
            }
            #[test]
            fn prometheus_3() {
                super::$name($crate::common::peer::Peer::V3)
            }
        }
    )+};
}
