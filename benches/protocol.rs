//! The relay's per-packet work, without sockets: deciding where a response ends, framing,
//! reading commands and writing packets through the buffered reader and writer.
//! Report figures as ratios to a baseline measured in the same run (the `touch_every_byte_baseline`
//! case: a plain pass over the same bytes).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rwsplit::protocol::packet::{
    HEADER_LEN, MAX_FRAME, PacketReader, PacketWriter, encode_packet, frame_header,
};
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

    commands(c);

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

/// Reading client commands: 1,000 sysbench point selects back to back, as a pipelining
/// client or a busy socket delivers them, and one 17 MiB statement split over two frames.
fn commands(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut small = Vec::new();
    for id in 0..1000 {
        encode_packet(
            &mut small,
            0,
            format!("\x03SELECT c FROM sbtest1 WHERE id={id}").as_bytes(),
        );
    }
    let mut large = Vec::new();
    encode_packet(&mut large, 0, &vec![b'x'; MAX_FRAME + 1000]);

    let mut group = c.benchmark_group("read_commands");
    for (name, wire, count) in [
        ("point_selects_x1000", &small, 1000),
        ("one_17MiB_statement", &large, 1),
    ] {
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut reader = PacketReader::new(black_box(&wire[..]));
                    for _ in 0..count {
                        let packet = reader.read_packet(64 << 20).await.expect("well-formed");
                        black_box(&packet.payload);
                    }
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("write_responses");
    let row = [vec![120u8], vec![b'7'; 120]].concat();
    group.throughput(Throughput::Elements(1000));
    group.bench_function("point_select_results_x1000", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut writer = PacketWriter::new(tokio::io::sink());
                for _ in 0..1000 {
                    // A one-column, one-row result as the proxy frames it for the client.
                    writer.push(1, &[1]);
                    writer.push(
                        2,
                        b"\x03def\x03app\x07sbtest1\x07sbtest1\x01c\x01c\x0c\x21\x00",
                    );
                    writer.push(3, black_box(&row));
                    writer.push(4, &[0xfe, 0, 0, 2, 0, 0, 0]);
                    writer.flush().await.expect("sink");
                }
            })
        })
    });
    group.finish();
}

criterion_group!(protocol, benches);
criterion_main!(protocol);
