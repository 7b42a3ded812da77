//! Maps keyed by `u64`s that are already well spread (label-set hashes, sequential refs):
//! the head's series indexes and the index writer's symbol table use them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for `u64` keys (label-set hashes, sequential refs): a multiply and a fold, so every
/// output bit depends on every input bit. (A bare multiply would not do: the stripes are chosen
/// by the key's low bits, and hashbrown picks buckets with the low bits of this hash, which after
/// a multiply depend only on the key's low bits — every key of a stripe would probe the same
/// few buckets.)
#[derive(Default)]
pub struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        let m = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = m ^ (m >> 29);
    }
}

pub type U64BuildHasher = BuildHasherDefault<U64Hasher>;
pub type U64Map<V> = HashMap<u64, V, U64BuildHasher>;
