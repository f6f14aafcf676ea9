//! Response parser throughput: a typical small response, a pipelined batch of 16, a chunked
//! body, and a head split across two receives.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use loadgen::parse::ResponseParser;

const SMALL: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringd\r\nDate: Mon, 24 Nov 2025 01:02:03 GMT\r\n\
Content-Type: text/plain\r\nContent-Length: 13\r\nLast-Modified: Mon, 24 Nov 2025 00:00:00 GMT\r\n\
ETag: \"5f-d\"\r\n\r\nHello, world!";

const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
10\r\n0123456789abcdef\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n";

fn feed_all(p: &mut ResponseParser, mut data: &[u8]) -> u64 {
    let mut n = 0;
    while !data.is_empty() {
        let fed = p.feed(data).expect("valid");
        data = &data[fed.consumed..];
        n += u64::from(fed.done.is_some());
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let mut p = ResponseParser::new(false);
    g.throughput(Throughput::Elements(1));
    g.bench_function("small_response", |b| {
        b.iter(|| feed_all(&mut p, black_box(SMALL)))
    });
    let batch: Vec<u8> = SMALL.repeat(16);
    g.throughput(Throughput::Elements(16));
    g.bench_function("pipelined_16", |b| {
        b.iter(|| feed_all(&mut p, black_box(&batch)))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("chunked", |b| {
        b.iter(|| feed_all(&mut p, black_box(CHUNKED)))
    });
    let (a, rest) = SMALL.split_at(40);
    g.bench_function("split_head", |b| {
        b.iter(|| feed_all(&mut p, black_box(a)) + feed_all(&mut p, black_box(rest)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
