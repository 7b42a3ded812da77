//! Crash test: a child process appends batches and reports each acknowledged one on stdout (`CAIRN-ACK k`);
//! the parent kills it with SIGKILL at a random moment, reopens the data directory (no manual
//! step) and checks that every acknowledged sample is there bit-exact, that nothing is doubled,
//! and that what survived is a gap-free prefix of what was written. Then the next child goes on
//! from there, on the same directory.
//!
//! The child also runs head compaction in a loop, with a 10 s block range (10 batches), so
//! kills land in every step of block writing, head truncation and WAL checkpointing too.
//!
//! `CAIRN_CRASH_ITERATIONS` (default 30) sets the number of kills; `CAIRN_CRASH_SEED` replays a
//! run. The child is this same test binary, re-run with `CAIRN_CRASH_CHILD_DIR` set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::tsdb::wal::WalOptions;
use cairn::tsdb::{Db, Options, Sample};
use common::{append, dump, label_text, value};

const TEST_NAME: &str = "sigkill_at_random_points_loses_nothing_acknowledged";
const SERIES: usize = 200;
const STEP_MS: i64 = 1000;

fn options() -> Options {
    // Small WAL segments and head-chunk files so kills land around rotations too.
    Options {
        wal: WalOptions {
            segment_size: 256 * 1024,
            ..WalOptions::default()
        },
        head_chunk_file_size: 64 * 1024,
        block_range_ms: 10 * STEP_MS,
        ..Options::default()
    }
}

fn batch(k: i64, t0: i64) -> Vec<(usize, Vec<Sample>)> {
    let t = t0 + k * STEP_MS;
    (0..SERIES)
        .map(|i| (i, vec![Sample { t, v: value(i, t) }]))
        .collect()
}

/// Child: append batches `start..` forever, printing `ACK k` after each acknowledgement.
fn child(dir: &Path) {
    let start: i64 = std::env::var("CAIRN_CRASH_START").unwrap().parse().unwrap();
    let t0: i64 = std::env::var("CAIRN_CRASH_T0").unwrap().parse().unwrap();
    let db = Arc::new(Db::open(dir, options()).unwrap());
    {
        let db = Arc::clone(&db);
        std::thread::spawn(move || loop {
            if let Err(e) = db.compact() {
                eprintln!("CAIRN-COMPACT-ERROR {e}");
            }
            std::thread::sleep(Duration::from_millis(2));
        });
    }
    let mut out = std::io::stdout().lock();
    // The test harness may have left a partial line on stdout: markers are found anywhere in a line.
    writeln!(out, "\nCAIRN-READY").unwrap();
    out.flush().unwrap();
    for k in start.. {
        let r = append(&db, &batch(k, t0)).unwrap();
        assert_eq!(r.accepted as usize, SERIES, "{r:?}");
        writeln!(out, "CAIRN-ACK {k}").unwrap();
        out.flush().unwrap();
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_at_random_points_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var("CAIRN_CRASH_CHILD_DIR") {
        child(Path::new(&dir));
        return;
    }
    let iterations: usize = std::env::var("CAIRN_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("CAIRN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {iterations} iterations, CAIRN_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // A day back: batches advance 1 s each but take ~1 ms, and must stay behind now + 10 min.
    let t0 = (cairn::tsdb::head::now_ms() - 86_400_000) / 1000 * 1000;
    let mut next: i64 = 0;
    let mut total_acked = 0i64;

    let child_log = dir.path().join("child-stderr.log");
    for it in 0..iterations {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env("CAIRN_CRASH_CHILD_DIR", dir.path())
            .env("CAIRN_CRASH_START", next.to_string())
            .env("CAIRN_CRASH_T0", t0.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&child_log).unwrap()))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Nothing new acknowledged yet: what survived the previous round stands.
        let last_ack = Arc::new(AtomicI64::new(next - 1));
        let ready = Arc::new(AtomicI64::new(0));
        let reader = {
            let (last_ack, ready) = (Arc::clone(&last_ack), Arc::clone(&ready));
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("CAIRN-READY") {
                        ready.store(1, Ordering::SeqCst);
                    } else if let Some(pos) = line.find("CAIRN-ACK ") {
                        last_ack.store(line[pos + 10..].trim().parse().unwrap(), Ordering::SeqCst);
                    }
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while ready.load(Ordering::SeqCst) == 0 {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&child_log).unwrap_or_default();
                panic!("iteration {it}: child never became ready:\n{log}");
            }
            if child.try_wait().unwrap().is_some() {
                child.wait().unwrap();
                let log = std::fs::read_to_string(&child_log).unwrap_or_default();
                panic!("iteration {it}: child exited before becoming ready:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Kill at a random point: sometimes right away, sometimes after a few hundred batches.
        std::thread::sleep(Duration::from_micros(rng.below(300_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = last_ack.load(Ordering::SeqCst);
        let log = std::fs::read_to_string(&child_log).unwrap_or_default();
        assert!(
            !log.contains("CAIRN-COMPACT-ERROR"),
            "iteration {it}: compaction failed in the child:\n{log}"
        );

        // Reopen: no manual step, every acknowledged batch present, a gap-free prefix.
        let db = Db::open(dir.path(), options()).unwrap();
        let got = dump(&db);
        let mut survived: Option<i64> = None;
        for i in 0..SERIES {
            let samples = got
                .get(&label_text(i))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let n = samples.len() as i64;
            for (j, &(t, bits)) in samples.iter().enumerate() {
                let want_t = t0 + j as i64 * STEP_MS;
                assert_eq!(
                    t, want_t,
                    "iteration {it}, series {i}: gap or duplicate at sample {j}"
                );
                assert_eq!(
                    bits,
                    value(i, t).to_bits(),
                    "iteration {it}, series {i}: value at {t}"
                );
            }
            match survived {
                None => survived = Some(n),
                Some(m) => assert_eq!(
                    m, n,
                    "iteration {it}: series {i} differs (a batch is one WAL entry)"
                ),
            }
        }
        let survived = survived.unwrap_or(0);
        assert!(
            survived > acked,
            "iteration {it}: acknowledged batch {acked} lost, only {survived} batches survived"
        );
        assert!(
            survived <= acked + 2,
            "iteration {it}: more than one unacknowledged batch can't exist"
        );
        total_acked = acked.max(total_acked);
        next = survived;
        db.close().unwrap();
        drop(db);
    }
    let blocks = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("meta.json").exists())
        .count();
    eprintln!(
        "crash test: {iterations} kills, {} batches of {SERIES} samples survived, {blocks} blocks",
        next
    );
    assert!(
        blocks > 0,
        "the children's compactions must have written blocks"
    );
    assert!(total_acked > 0, "children must have acknowledged something");
}
