//! Building blocks from plain samples in tests.

use cairn::model::Labels;
use cairn::tsdb::block::{ChunkData, NewSeries};
use cairn::tsdb::chunkenc::{Encoding, XorChunk};

/// One series as the tests describe it: labels and its chunks (mint, maxt, XOR bytes).
#[derive(Debug, Clone)]
pub struct TestSeries {
    pub labels: Labels,
    pub chunks: Vec<(i64, i64, Vec<u8>)>,
}

impl TestSeries {
    /// Cut `samples` (time-ordered) into XOR chunks of at most `per_chunk` samples.
    pub fn from_samples(labels: Labels, samples: &[(i64, f64)], per_chunk: usize) -> TestSeries {
        let chunks = samples
            .chunks(per_chunk)
            .map(|part| {
                let mut c = XorChunk::new();
                for &(t, v) in part {
                    c.append(t, v);
                }
                (part[0].0, part[part.len() - 1].0, c.bytes().to_vec())
            })
            .collect();
        TestSeries { labels, chunks }
    }

    pub fn as_new(&self) -> NewSeries<'_> {
        NewSeries {
            labels: &self.labels,
            chunks: self
                .chunks
                .iter()
                .map(|(mint, maxt, data)| ChunkData {
                    mint: *mint,
                    maxt: *maxt,
                    encoding: Encoding::Xor.as_u8(),
                    data,
                })
                .collect(),
        }
    }
}
