#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Corruption matrix: flip bytes at every offset (two masks) and truncate at every length of
//! each file of a small block (index, two chunk files, meta.json, tombstones). Opening and
//! reading everything must give a typed corruption error or — for bytes no checksum covers
//! (padding, the chunk header's reserved bytes) — exactly the original content. Never a panic.

mod common;

use std::fs;
use std::path::Path;

use cairn::model::Labels;
use cairn::tsdb::block::{Block, BlockError, BlockMeta, BlockWriter, Compaction, NewSeries, Ulid};
use cairn::tsdb::index::ChunkMeta;
use common::blocks::TestSeries;

type Content = Vec<(
    Labels,
    Vec<(ChunkMeta, u8, Vec<u8>)>,
    Vec<(String, Vec<u32>)>,
)>;

/// Everything a reader can see: meta and, per series, labels, chunks and the postings of each
/// of its label pairs.
fn snapshot(dir: &Path) -> Result<(BlockMeta, Content), BlockError> {
    let b = Block::open(dir)?;
    let mut out = Vec::new();
    for s in b.series()? {
        let s = s?;
        let chunks = s
            .chunks
            .iter()
            .map(|c| (c.meta, c.encoding, c.data.to_vec()))
            .collect();
        let mut postings = Vec::new();
        for (n, v) in s.labels.iter() {
            postings.push((format!("{n}={v}"), b.index().postings(n, v)?));
        }
        out.push((s.labels, chunks, postings));
    }
    let mut names = Vec::new();
    for n in b.index().label_names() {
        names.push((n.to_string(), b.index().label_values(n).len() as u32));
    }
    out.push((
        Labels::new(),
        Vec::new(),
        names.into_iter().map(|(n, c)| (n, vec![c])).collect(),
    ));
    Ok((b.meta().clone(), out))
}

fn check(dir: &Path, file: &str, what: &str, orig: &(BlockMeta, Content)) {
    match std::panic::catch_unwind(|| snapshot(dir)) {
        Err(_) => panic!("{file}: {what}: reader panicked"),
        Ok(Ok(got)) => {
            if file == "meta.json" {
                // A flipped digit or ULID character can still be a valid meta file.
                assert_eq!(got.1, orig.1, "{file}: {what}: content changed");
            } else {
                assert_eq!(
                    &got, orig,
                    "{file}: {what}: read different data without an error"
                );
            }
        }
        Ok(Err(e)) => assert!(
            e.is_corruption(),
            "{file}: {what}: not a corruption error: {e}"
        ),
    }
}

#[test]
fn every_flipped_or_truncated_byte_is_a_typed_error_or_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let series: Vec<TestSeries> = (0..3)
        .map(|i| {
            let labels = Labels::from_pairs([
                ("__name__", format!("m{i}")),
                ("job", ["a", "b"][i % 2].to_string()),
            ]);
            let samples: Vec<(i64, f64)> = (0..10)
                .map(|j| (j * 1000 + i as i64, j as f64 * 1.5))
                .collect();
            TestSeries::from_samples(labels, &samples, 5)
        })
        .collect();
    let ulid = Ulid::new(1_700_000_000_000, [1; 10]);
    let input: Vec<NewSeries<'_>> = series.iter().map(TestSeries::as_new).collect();
    BlockWriter { segment_size: 120 }
        .write(
            tmp.path(),
            ulid,
            0,
            20_000,
            Compaction::level1(ulid),
            &input,
        )
        .unwrap();
    let dir = tmp.path().join(ulid.to_string());
    let orig = snapshot(&dir).unwrap();
    assert_eq!(orig.1.len(), 4);

    let files = [
        "index",
        "chunks/000001",
        "chunks/000002",
        "meta.json",
        "tombstones",
    ];
    assert!(
        dir.join("chunks/000002").exists(),
        "small segments: two chunk files"
    );
    let mut errors = 0;
    for file in files {
        let path = dir.join(file);
        let bytes = fs::read(&path).unwrap();
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                fs::write(&path, &b).unwrap();
                check(&dir, file, &format!("byte {i} ^ {mask:#x}"), &orig);
                errors += usize::from(snapshot(&dir).is_err());
            }
        }
        for len in 0..bytes.len() {
            fs::write(&path, &bytes[..len]).unwrap();
            check(&dir, file, &format!("truncated to {len}"), &orig);
            assert!(
                snapshot(&dir).is_err(),
                "{file} truncated to {len} went unnoticed"
            );
        }
        fs::write(&path, &bytes).unwrap();
        assert_eq!(snapshot(&dir).unwrap(), orig);
    }
    assert!(errors > 1000, "only {errors} corruptions detected");

    // A missing file: index and meta.json are required; tombstones are not.
    for (file, required) in [("index", true), ("meta.json", true), ("tombstones", false)] {
        let path = dir.join(file);
        let bytes = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(snapshot(&dir).is_err(), required, "{file} missing");
        fs::write(&path, &bytes).unwrap();
    }
}
