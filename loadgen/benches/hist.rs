//! The per-response recording path: three histogram records (corrected, uncorrected, ttfb)
//! plus counters, as the engine does for every response, and a single raw record.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use loadgen::hist::{new_hist, record};
use loadgen::record::Recorder;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("hist");
    g.throughput(Throughput::Elements(1));
    let mut h = new_hist();
    let mut v = 12_345u64;
    g.bench_function("record_one", |b| {
        b.iter(|| {
            v = v
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            record(&mut h, black_box((v >> 40) + 1000));
        })
    });
    let mut rec = Recorder::new(true);
    rec.begin(0, 0);
    let mut now = 1_000u64;
    g.bench_function("response_path", |b| {
        b.iter(|| {
            now += 997;
            let lat = 20_000 + (now & 0xfff);
            rec.ttfb(now, lat - 100);
            rec.bytes(now, 180);
            rec.response(black_box(now - lat), 200, 13, lat, lat, None);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
