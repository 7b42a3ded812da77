//! `meta.json` (Prometheus `tsdb/block.go` `BlockMeta`, format digest §4.2).
//!
//! Written as Go's `json.MarshalIndent(meta, "", "\t")` writes it: tab indentation, fields in
//! the struct's order, no trailing newline; `stats` is always present (Go's `omitempty` has no
//! effect on a struct), zero counters and empty or false compaction fields are left out.
//! Reading ignores unknown fields and rejects any `version` other than 1.

use serde::{Deserialize, Serialize};

use super::ulid::Ulid;

/// The only meta.json version there is.
pub const META_VERSION: u32 = 1;
/// Largest meta.json we read (a heavily compacted block lists many sources, but not this many).
pub const MAX_META_SIZE: u64 = 64 << 20;

fn is_zero(x: &u64) -> bool {
    *x == 0
}

fn is_false(x: &bool) -> bool {
    !*x
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub ulid: Ulid,
    /// First millisecond of the block (inclusive).
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// End of the block (exclusive).
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    #[serde(default)]
    pub stats: BlockStats,
    #[serde(default)]
    pub compaction: Compaction,
    #[serde(default)]
    pub version: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BlockStats {
    #[serde(rename = "numSamples", default, skip_serializing_if = "is_zero")]
    pub num_samples: u64,
    #[serde(rename = "numSeries", default, skip_serializing_if = "is_zero")]
    pub num_series: u64,
    #[serde(rename = "numChunks", default, skip_serializing_if = "is_zero")]
    pub num_chunks: u64,
    #[serde(rename = "numTombstones", default, skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Compaction {
    #[serde(default)]
    pub level: u32,
    /// ULIDs of the head blocks this block's data came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Ulid>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deletable: bool,
    /// The blocks compacted into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<BlockDesc>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub failed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

impl Compaction {
    /// A block written from the head: level 1, its own ULID as the only source.
    pub fn level1(ulid: Ulid) -> Compaction {
        Compaction {
            level: 1,
            sources: vec![ulid],
            ..Compaction::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDesc {
    pub ulid: Ulid,
    #[serde(rename = "minTime")]
    pub min_time: i64,
    #[serde(rename = "maxTime")]
    pub max_time: i64,
}

impl BlockMeta {
    /// The file's bytes, as Prometheus writes them.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        // Serializing these plain structs into a Vec cannot fail.
        let _ = self.serialize(&mut ser);
        out
    }

    /// Parse and check the version.
    pub fn from_json(b: &[u8]) -> Result<BlockMeta, String> {
        let m: BlockMeta = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        if m.version != META_VERSION {
            return Err(format!("unexpected meta file version {}", m.version));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn writes_like_go_and_reads_leniently() {
        let u: Ulid = "01M7ZSK21PFE020YB522RYFSCY".parse().unwrap();
        let m = BlockMeta {
            ulid: u,
            min_time: 1,
            max_time: 2,
            stats: BlockStats::default(),
            compaction: Compaction::level1(u),
            version: 1,
        };
        let s = String::from_utf8(m.to_json()).unwrap();
        assert_eq!(
            s,
            "{\n\t\"ulid\": \"01M7ZSK21PFE020YB522RYFSCY\",\n\t\"minTime\": 1,\n\t\"maxTime\": 2,\n\t\"stats\": {},\n\t\"compaction\": {\n\t\t\"level\": 1,\n\t\t\"sources\": [\n\t\t\t\"01M7ZSK21PFE020YB522RYFSCY\"\n\t\t]\n\t},\n\t\"version\": 1\n}"
        );
        assert_eq!(BlockMeta::from_json(s.as_bytes()).unwrap(), m);
        let extra = s.replace("\"version\": 1", "\"future\": [1, {}],\n\t\"version\": 1");
        assert_eq!(BlockMeta::from_json(extra.as_bytes()).unwrap(), m);
        let v2 = s.replace("\"version\": 1", "\"version\": 2");
        assert!(BlockMeta::from_json(v2.as_bytes())
            .unwrap_err()
            .contains("version 2"));
        let none = s.replace(",\n\t\"version\": 1", "");
        assert!(BlockMeta::from_json(none.as_bytes()).is_err());
        assert!(BlockMeta::from_json(b"{\"ulid\": \"nope\"}").is_err());
    }
}
