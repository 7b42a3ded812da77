#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Golden tests against the block promtool 2.42 wrote from `metrics.om` (see
//! `tests/chunk_golden.rs` for how the fixture was made):
//!
//! - **read**: our reader returns exactly its 5 series, their labels, chunk metas and chunk
//!   bytes, and the decoded samples equal the OpenMetrics input bit for bit;
//! - **write**: writing the same series and chunks with our block writer gives an `index`,
//!   `chunks/000001` and `meta.json` byte-identical to promtool's, and the 9-byte empty
//!   `tombstones` promtool writes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use cairn::model::{Labels, MatchType, Matcher};
use cairn::tsdb::block::{Block, BlockMeta, BlockWriter, ChunkData, NewSeries, Ulid};
use cairn::tsdb::chunkenc::{Encoding, XorIterator};
use cairn::tsdb::index::IndexReader;
use common::om::{fixture, fixture_series};

const ULID: &str = "01M7ZSK21PFE020YB522RYFSCY";

/// The fixture laid out as a block directory `<tmp>/<ULID>/`.
fn fixture_block(tmp: &Path) -> PathBuf {
    let dir = tmp.join(ULID);
    fs::create_dir_all(dir.join("chunks")).unwrap();
    fs::copy(fixture("index"), dir.join("index")).unwrap();
    fs::copy(fixture("meta.json"), dir.join("meta.json")).unwrap();
    fs::copy(fixture("000001"), dir.join("chunks/000001")).unwrap();
    dir
}

#[test]
fn reader_returns_exactly_the_promtool_block() {
    let tmp = tempfile::tempdir().unwrap();
    let block = Block::open(&fixture_block(tmp.path())).unwrap();
    let meta = block.meta();
    assert_eq!(meta.ulid.to_string(), ULID);
    assert_eq!(
        (meta.min_time, meta.max_time),
        (1672531200000, 1672536440932)
    );
    assert_eq!(
        (
            meta.stats.num_samples,
            meta.stats.num_series,
            meta.stats.num_chunks
        ),
        (1500, 5, 14)
    );
    assert_eq!(meta.compaction.level, 1);
    assert_eq!(meta.compaction.sources, vec![meta.ulid]);
    assert!(block.tombstones().is_empty(), "a missing file is empty");

    let want = fixture_series();
    let series: Vec<_> = block.series().unwrap().map(Result::unwrap).collect();
    assert_eq!(series.len(), 5);
    let chunk_file = fs::read(fixture("000001")).unwrap();
    let mut total_chunks = 0;
    for (s, (labels, samples)) in series.iter().zip(&want) {
        let want_labels = Labels::from_pairs(labels.iter().cloned());
        assert_eq!(s.labels, want_labels);
        let mut got = Vec::new();
        let mut prev_maxt = i64::MIN;
        for c in &s.chunks {
            assert_eq!(Encoding::from_u8(c.encoding), Some(Encoding::Xor));
            // The bytes are the stored ones, at the place the ref names.
            assert_eq!(c.meta.cref >> 32, 0);
            let off = (c.meta.cref & 0xffff_ffff) as usize;
            let start = off + cairn::tsdb::encoding::uvarint_len(c.data.len() as u64) + 1;
            assert_eq!(chunk_file[start - 1], c.encoding);
            assert_eq!(&chunk_file[start..start + c.data.len()], c.data);
            let mut it = XorIterator::new(c.data).unwrap();
            let decoded: Vec<(i64, u64)> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
            assert_eq!(it.err(), None);
            assert_eq!(c.meta.mint, decoded.first().unwrap().0);
            assert_eq!(c.meta.maxt, decoded.last().unwrap().0);
            assert!(c.meta.mint > prev_maxt);
            prev_maxt = c.meta.maxt;
            got.extend(decoded);
        }
        total_chunks += s.chunks.len();
        assert_eq!(&got, samples, "{}", s.labels);
    }
    assert_eq!(total_chunks, 14);

    // Index lookups.
    let ix = block.index();
    assert_eq!(ix.label_names(), vec!["__name__", "job"]);
    assert_eq!(
        ix.label_values("__name__"),
        vec![
            "a_requests_total",
            "b_temperature",
            "c_constant",
            "d_irregular",
            "e_special"
        ]
    );
    assert_eq!(ix.label_values("job"), vec!["api"]);
    assert!(ix.label_values("nope").is_empty());
    let ids: Vec<u32> = series.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![7, 10, 13, 16, 18]);
    assert_eq!(ix.all_postings().unwrap(), ids);
    assert_eq!(ix.postings("job", "api").unwrap(), ids);
    assert_eq!(ix.postings("__name__", "c_constant").unwrap(), vec![13]);
    assert!(ix.postings("__name__", "zzz").unwrap().is_empty());
    assert_eq!(
        ix.symbols().next(),
        Some(""),
        "promtool's symbols include \"\""
    );
    let m = |k, n: &str, v: &str| Matcher::new(k, n, v).unwrap();
    let sel = ix
        .postings_for_matchers(&[
            m(MatchType::Regex, "__name__", "[a-c]_.*"),
            m(MatchType::NotEqual, "__name__", "b_temperature"),
        ])
        .unwrap();
    assert_eq!(sel, vec![7, 13]);
    let none = ix
        .postings_for_matchers(&[m(MatchType::Equal, "job", "")])
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn writer_reproduces_promtool_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Block::open(&fixture_block(tmp.path())).unwrap();
    // Input: the fixture's series and chunk bytes (the read test checks them against
    // metrics.om independently of the writer).
    let read: Vec<_> = src.series().unwrap().map(Result::unwrap).collect();
    let input: Vec<NewSeries<'_>> = read
        .iter()
        .map(|s| NewSeries {
            labels: &s.labels,
            chunks: s
                .chunks
                .iter()
                .map(|c| ChunkData {
                    mint: c.meta.mint,
                    maxt: c.meta.maxt,
                    encoding: c.encoding,
                    data: c.data,
                })
                .collect(),
        })
        .collect();
    let meta = src.meta().clone();
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let written = BlockWriter::default()
        .write(
            &out,
            meta.ulid,
            meta.min_time,
            meta.max_time,
            meta.compaction.clone(),
            &input,
        )
        .unwrap();
    assert_eq!(written, meta);
    let dir = out.join(ULID);
    let same = |ours: &Path, theirs: &Path| {
        let (a, b) = (fs::read(ours).unwrap(), fs::read(theirs).unwrap());
        if a != b {
            let at = a.iter().zip(&b).position(|(x, y)| x != y);
            panic!(
                "{} differs from promtool's: {} vs {} bytes, first difference at {at:?}",
                ours.display(),
                a.len(),
                b.len()
            );
        }
    };
    same(&dir.join("index"), &fixture("index"));
    same(&dir.join("chunks/000001"), &fixture("000001"));
    same(&dir.join("meta.json"), &fixture("meta.json"));
    assert_eq!(
        fs::read(dir.join("tombstones")).unwrap(),
        [0x01, 0x30, 0xba, 0x30, 0x01, 0, 0, 0, 0]
    );
    assert_eq!(
        fs::read_dir(dir.join("chunks")).unwrap().count(),
        1,
        "one segment file"
    );
    assert!(!out.join(format!("{ULID}.tmp-for-creation")).exists());
    // And it reads back.
    let again = Block::open(&dir).unwrap();
    let back: Vec<_> = again.series().unwrap().map(Result::unwrap).collect();
    assert_eq!(back, read);
    let parsed = BlockMeta::from_json(&fs::read(fixture("meta.json")).unwrap()).unwrap();
    assert_eq!(parsed.ulid, ULID.parse::<Ulid>().unwrap());
}

#[test]
fn index_reader_opens_the_fixture_file_directly() {
    let ix = IndexReader::open(&fixture("index")).unwrap();
    let toc = ix.toc();
    // Section starts as promtool recorded them (before padding).
    assert_eq!(
        (toc.symbols, toc.series, toc.label_indices, toc.postings),
        (5, 0x63, 0x144, 0x17c)
    );
    assert_eq!(ix.series(7).unwrap().chunks.len(), 3);
    assert!(ix.series(8).is_err(), "8 is not the start of an entry");
    assert!(matches!(
        ix.series(0),
        Err(cairn::tsdb::index::IndexError::NoSuchSeries { id: 0, .. })
    ));
}
