//! XOR chunk encode/decode throughput on 120-sample chunks.
//!
//! Run: `cargo bench --bench chunkenc -- --warm-up-time 1 --measurement-time 3`
//! Throughput is reported per sample (`Throughput::Elements(120)`).

use std::hint::black_box;

use cairn::tsdb::chunkenc::{XorChunk, XorIterator, SAMPLES_PER_CHUNK};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Small deterministic xorshift generator (no dependency on `rand`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn timestamps(rng: &mut Rng) -> Vec<i64> {
    // 15s scrape interval with a few milliseconds of jitter.
    let mut t = 1_672_531_200_000i64;
    (0..SAMPLES_PER_CHUNK)
        .map(|_| {
            t += 15_000 + (rng.next() % 7) as i64 - 3;
            t
        })
        .collect()
}

fn series() -> Vec<(&'static str, Vec<(i64, f64)>)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let ts = timestamps(&mut rng);

    let mut c = 1000.0;
    let counter = ts
        .iter()
        .map(|&t| {
            c += (rng.next() % 100) as f64;
            (t, c)
        })
        .collect();

    let gauge = ts
        .iter()
        .map(|&t| {
            let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            (t, (x - 0.3) * 1234.5678)
        })
        .collect();

    let constant = ts.iter().map(|&t| (t, 42.0)).collect();

    vec![
        ("counter", counter),
        ("gauge", gauge),
        ("constant", constant),
    ]
}

fn encode(samples: &[(i64, f64)]) -> XorChunk {
    let mut c = XorChunk::new();
    for &(t, v) in samples {
        c.append(t, v);
    }
    c
}

fn bench(c: &mut Criterion) {
    let all = series();

    let mut g = c.benchmark_group("xor_encode");
    g.throughput(Throughput::Elements(SAMPLES_PER_CHUNK as u64));
    for (name, samples) in &all {
        g.bench_with_input(BenchmarkId::from_parameter(name), samples, |b, s| {
            b.iter(|| encode(black_box(s)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("xor_decode");
    g.throughput(Throughput::Elements(SAMPLES_PER_CHUNK as u64));
    for (name, samples) in &all {
        let chunk = encode(samples);
        let bytes = chunk.bytes().to_vec();
        eprintln!(
            "{name}: {} bytes for {} samples ({:.2} bytes/sample)",
            bytes.len(),
            samples.len(),
            bytes.len() as f64 / samples.len() as f64
        );
        g.bench_with_input(BenchmarkId::from_parameter(name), &bytes, |b, bytes| {
            b.iter(|| {
                let mut sum_t = 0i64;
                let mut sum_v = 0u64;
                if let Ok(it) = XorIterator::new(black_box(bytes)) {
                    for (t, v) in it {
                        sum_t = sum_t.wrapping_add(t);
                        sum_v = sum_v.wrapping_add(v.to_bits());
                    }
                }
                (sum_t, sum_v)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
