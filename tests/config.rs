//! Every config fixture through the library loader: `tests/fixtures/config/good/*.yml` must load;
//! each `bad/NAME.yml` must fail with an error naming the file and containing `bad/NAME.err`.
//! `examples/cairn.yml` must load and spell out every key with its default; README.md's flag
//! table must list exactly the settings, with their defaults and reload behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn::config::{file_keys, load_file, Config, Reload, SETTINGS};
use cairn::log::{Format, Level};
use cairn::tsdb::wal::SyncPolicy;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn load(path: &Path) -> Result<Config, String> {
    let mut cfg = Config::default();
    load_file(path, &mut cfg).map(|()| cfg)
}

#[test]
fn good_fixtures_load() {
    for path in fixtures("good") {
        let cfg = load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            cfg.config_file.as_deref(),
            Some(&*path.display().to_string())
        );
    }
}

#[test]
fn bad_fixtures_fail_naming_the_file_and_the_problem() {
    for path in fixtures("bad") {
        let want = std::fs::read_to_string(path.with_extension("err"))
            .unwrap_or_else(|e| panic!("{}: no .err file: {e}", path.display()));
        let want = want.trim_end_matches('\n');
        assert!(!want.is_empty(), "{}: empty .err", path.display());
        let err = match load(&path) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(e) => e,
        };
        assert!(
            err.starts_with(&format!("config file {}: ", path.display())),
            "{err}"
        );
        assert!(
            err.contains(want),
            "{}: want {want:?} in\n{err}",
            path.display()
        );
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn flow_style_fixture_sets_every_group() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/good");
    let c = load(&dir.join("flow_style.yml")).unwrap();
    assert_eq!(c.listen, "127.0.0.1:9300");
    assert!(c.server.enable_lifecycle);
    assert_eq!(c.path, "/var/lib/cairn");
    assert_eq!(
        c.opts.wal.sync,
        SyncPolicy::Interval(std::time::Duration::from_millis(100))
    );
    assert_eq!(c.opts.block_range_ms, 3_600_000);
    assert_eq!(c.opts.wal.segment_size, 64 << 20);
    assert_eq!(c.opts.max_series, 1_000_000);
    assert_eq!(c.server.read_sample_limit, u64::MAX);
    assert_eq!(c.server.read_concurrent_limit, 4);
    assert_eq!(c.server.read_max_bytes_in_frame, 2 << 20);
    assert_eq!(c.server.labels.max_labels, 30);
    assert_eq!(c.server.labels.max_name_bytes, 256);
    assert_eq!(c.server.labels.max_value_bytes, 4096);
    assert_eq!(c.log_level, Level::Debug);
    assert_eq!(c.log_format, Format::Json);

    let c = load(&dir.join("quoted_and_long_durations.yml")).unwrap();
    assert_eq!(c.opts.block_range_ms, 365 * 86_400_000);
    assert_eq!(c.opts.wal.segment_size, 1 << 30);
}

#[test]
fn the_example_config_loads_and_spells_out_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cairn.yml");
    let mut c = load(&path).unwrap();
    // Every key is there, written as the table writes its default.
    let keys = file_keys();
    for s in SETTINGS.iter().filter(|s| keys.contains(&s.key())) {
        assert_eq!(
            c.given.get(s.flag).map(String::as_str),
            s.default,
            "examples/cairn.yml: {}",
            s.key()
        );
    }
    assert_eq!(c.given.len(), keys.len(), "{:?}", c.given);
    // ... and they parse to exactly the defaults.
    c.config_file = None;
    c.given.clear();
    assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
}

/// README.md's "## Flags" table: flag → (default cell, reload cell).
fn readme_flags() -> BTreeMap<String, (String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(path).unwrap();
    let section = text
        .split("\n## Flags\n")
        .nth(1)
        .expect("no ## Flags section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let flag = cells[0].trim_start_matches("| `--").trim_end_matches('`');
        let row = (cells[1].to_string(), cells[2].to_string());
        assert!(
            rows.insert(flag.to_string(), row).is_none(),
            "twice: {line}"
        );
    }
    rows
}

#[test]
fn the_readme_flag_table_lists_every_setting_with_its_default_and_reload() {
    let rows = readme_flags();
    let table: BTreeMap<String, (String, String)> = SETTINGS
        .iter()
        .map(|s| {
            let default = match s.default {
                None => "none".to_string(),
                Some("false") => "off".to_string(),
                Some(d) => format!("`{d}`"),
            };
            let reload = match s.reload {
                Reload::Live => "live",
                Reload::Restart => "restart",
            };
            (s.flag.to_string(), (default, reload.to_string()))
        })
        .collect();
    assert_eq!(
        rows, table,
        "README.md ## Flags (left) vs config::SETTINGS (right)"
    );
}
