//! The relay's per-packet work, without sockets: deciding where a response ends, and framing.
//! Report figures as ratios to a baseline measured in the same run (the `touch_every_byte_baseline`
//! case: a plain pass over the same bytes).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rwsplit::protocol::packet::{HEADER_LEN, MAX_FRAME, encode_packet, frame_header};
use rwsplit::protocol::response::{PREFIX_LEN, ResponseKind, ResponseTracker};

/// A text result set as a server sends it with deprecate-EOF: `rows` rows of `width` bytes.
fn result_set(rows: usize, width: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut seq = encode_packet(&mut wire, 1, &[2]);
    for _ in 0..2 {
        seq = encode_packet(
            &mut wire,
            seq,
            b"\x03def\x03app\x01t\x01t\x01c\x01c\x0c\x21\x00",
        );
    }
    let mut row = vec![(width / 2 - 1) as u8];
    row.resize(width / 2, b'x');
    let row = [row.clone(), row].concat();
    for _ in 0..rows {
        seq = encode_packet(&mut wire, seq, &row);
    }
    encode_packet(&mut wire, seq, &[0xfe, 0, 0, 2, 0, 0, 0]);
    wire
}

/// What the relay does per frame: read the header, show the tracker the prefix, skip on.
fn scan(wire: &[u8]) -> usize {
    let mut tracker = ResponseTracker::new(ResponseKind::Query, true);
    let mut at = 0;
    let mut frames = 0;
    while let Some((len, _)) = frame_header(&wire[at..]) {
        let prefix = &wire[at + HEADER_LEN..at + HEADER_LEN + len.min(PREFIX_LEN)];
        tracker.on_frame(prefix, len).expect("well-formed");
        at += HEADER_LEN + len;
        frames += 1;
    }
    assert!(tracker.is_done());
    frames
}

fn benches(c: &mut Criterion) {
    let wire = result_set(1000, 100);
    let mut group = c.benchmark_group("result_set_1000x100B");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("response_tracker", |b| b.iter(|| scan(black_box(&wire))));
    group.bench_function("touch_every_byte_baseline", |b| {
        b.iter(|| black_box(&wire).iter().filter(|&&b| b == 0xfe).count())
    });
    group.finish();

    let payload = vec![7u8; MAX_FRAME + 1000];
    let mut group = c.benchmark_group("encode_17MiB_packet");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("encode_packet", |b| {
        let mut out = Vec::with_capacity(payload.len() + 16);
        b.iter(|| {
            out.clear();
            encode_packet(&mut out, 0, black_box(&payload))
        })
    });
    group.finish();
}

criterion_group!(protocol, benches);
criterion_main!(protocol);
