//! Dependencies point down the layers and never up (ARCHITECTURE.md § Layers):
//! `config → server → metrics → remote → engine → tsdb → model`, `log` below everything, and
//! inside `tsdb`: `db → querier → error → compact/retention → head/block → wal → index →
//! postings → chunkenc/encoding/fileutil/u64map → the tsdb root (Retry, durations)`.
//!
//! Every `crate::…` and `super::…` path in `src/` (comments and unit-test modules left out) is
//! resolved to the module it names, re-exports of `tsdb/mod.rs` followed to where the item
//! lives; an edge to a module of the same or a higher layer than its user fails the test,
//! naming the file and the path. A module new to `src/` fails it too until it has a layer here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Module → layer; a module may use only modules of a strictly lower layer (or itself).
const LAYERS: &[(&str, u32)] = &[
    ("main", 100),
    ("config", 90),
    ("server", 80),
    ("metrics", 70),
    ("remote", 60),
    ("engine", 55),
    ("tsdb::db", 50),
    ("tsdb::querier", 45),
    ("tsdb::error", 44),
    ("tsdb::compact", 42),
    ("tsdb::retention", 42),
    ("tsdb::head", 40),
    ("tsdb::block", 40),
    ("tsdb::wal", 35),
    ("tsdb::index", 30),
    ("tsdb::postings", 25),
    ("tsdb::chunkenc", 20),
    ("tsdb::encoding", 20),
    ("tsdb::fileutil", 20),
    ("tsdb::u64map", 20),
    ("tsdb", 15),
    ("model", 5),
    ("log", 0),
    ("lib", 0),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/tsdb/head/chunks.rs` → ["tsdb", "head", "chunks"]; `mod.rs` names its directory.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The layer key of a module path: the top module, or `tsdb::<child>`.
fn unit(path: &[String]) -> String {
    match path {
        [top, child, ..] if top == "tsdb" => format!("tsdb::{child}"),
        [top, ..] => top.clone(),
        [] => "lib".into(),
    }
}

/// Source without comments, string literals' contents and `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i + 1 < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            // Skip a string literal (escapes included); raw strings hold no paths we use.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Names `tsdb/mod.rs` re-exports → the child module they come from.
fn tsdb_reexports(src: &Path) -> BTreeMap<String, String> {
    let text = code_of(&std::fs::read_to_string(src.join("tsdb/mod.rs")).unwrap());
    let re = regex::Regex::new(r"pub use (\w+)::(?:\{([^}]*)\}|(\w+));").unwrap();
    let mut out = BTreeMap::new();
    for c in re.captures_iter(&text) {
        let module = c[1].to_string();
        let names = c.get(2).or(c.get(3)).unwrap().as_str();
        for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            out.insert(n.to_string(), module.clone());
        }
    }
    out
}

#[test]
fn dependencies_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let reexports = tsdb_reexports(&src);
    let path_re = regex::Regex::new(r"\b(crate|super)((?:::\w+)+)").unwrap();
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    let mut edges = 0;
    for file in &files {
        let me = module_path(&src, file);
        let my_unit = unit(&me);
        let Some(my_layer) = layer(&my_unit) else {
            unknown.push(format!("{} (module {my_unit})", file.display()));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for c in path_re.captures_iter(&code) {
            let segs: Vec<String> = c[2]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            // Resolve to an absolute module path below the crate.
            let mut target: Vec<String> = if &c[1] == "crate" {
                Vec::new()
            } else {
                // `super` from a `mod.rs` or a file module: the parent of this module.
                let mut p = me.clone();
                p.pop();
                p
            };
            let mut segs = segs.into_iter();
            // Further `super`s climb on; the macro exporter `crate::log_*!` lives in `log`.
            let mut first = segs.next();
            while first.as_deref() == Some("super") {
                target.pop();
                first = segs.next();
            }
            let Some(first) = first else { continue };
            if target.is_empty() && first.starts_with("log_") {
                target.push("log".into());
            } else {
                target.push(first);
                if let Some(second) = segs.next() {
                    target.push(second);
                }
            }
            // `crate::tsdb::Name`: where the re-export comes from.
            if target.len() == 2 && target[0] == "tsdb" {
                if let Some(m) = reexports.get(&target[1]) {
                    target[1] = m.clone();
                }
            }
            let to = unit(&target);
            if to == my_unit {
                continue;
            }
            // A name defined in `tsdb/mod.rs` itself (not a child module): the tsdb root.
            let to = match layer(&to) {
                Some(_) => to,
                None if to.starts_with("tsdb::") => "tsdb".into(),
                None => {
                    unknown.push(format!("{}: {}{}", file.display(), &c[1], &c[2]));
                    continue;
                }
            };
            edges += 1;
            let to_layer = layer(&to).unwrap();
            if to_layer >= my_layer && to != my_unit {
                violations.push(format!(
                    "{}: `{}{}` ({my_unit} → {to}) goes up or sideways",
                    file.strip_prefix(&src).unwrap().display(),
                    &c[1],
                    &c[2]
                ));
            }
        }
    }
    assert!(
        edges > 50,
        "only {edges} cross-module paths found: the scan is broken"
    );
    assert!(
        unknown.is_empty(),
        "modules without a layer in tests/layering.rs (add them to LAYERS):\n{}",
        unknown.join("\n")
    );
    assert!(
        violations.is_empty(),
        "{} dependencies against the layering:\n{}",
        violations.len(),
        violations.join("\n")
    );
}
