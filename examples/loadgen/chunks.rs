//! Cutting samples into XOR chunks the way Prometheus 2.42's head does, for the examples that
//! write blocks directly (readbench, mergebench). Included with `#[path]`.

use cairn::tsdb::chunkenc::{XorChunk, SAMPLES_PER_CHUNK};
use cairn::tsdb::head::{compute_chunk_end_time, range_for_timestamp};

/// One chunk as the head would have closed it.
pub struct CutChunk {
    pub mint: i64,
    pub maxt: i64,
    pub data: Vec<u8>,
}

/// Cut time-ordered samples into XOR chunks the way Prometheus 2.42's head does
/// (`memSeries.append` with `chunkRange`): a new chunk at the first sample, when a sample
/// reaches `next_at` — the end of the sample's block range, moved earlier by
/// `computeChunkEndTime` once the chunk holds a quarter of 120 samples, so chunks even out at
/// about 120 samples — or after 240 samples. No chunk crosses a block boundary.
pub fn cut_chunks(samples: impl Iterator<Item = (i64, f64)>, chunk_range: i64) -> Vec<CutChunk> {
    let mut out: Vec<CutChunk> = Vec::new();
    let mut cur: Option<(XorChunk, i64, i64)> = None;
    let mut next_at = i64::MIN;
    for (t, v) in samples {
        let cut = match &cur {
            None => true,
            Some((c, mint, maxt)) => {
                let n = usize::from(c.num_samples());
                if n == SAMPLES_PER_CHUNK / 4 {
                    next_at = compute_chunk_end_time(*mint, *maxt, next_at);
                }
                t >= next_at || n >= SAMPLES_PER_CHUNK * 2
            }
        };
        if cut {
            if let Some((c, mint, maxt)) = cur.take() {
                out.push(CutChunk {
                    mint,
                    maxt,
                    data: c.into_bytes(),
                });
            }
            cur = Some((XorChunk::new(), t, t));
            next_at = range_for_timestamp(t, chunk_range);
        }
        if let Some((c, _, maxt)) = cur.as_mut() {
            c.append(t, v);
            *maxt = t;
        }
    }
    if let Some((c, mint, maxt)) = cur {
        out.push(CutChunk {
            mint,
            maxt,
            data: c.into_bytes(),
        });
    }
    out
}
