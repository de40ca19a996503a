//! Packets framed with `encode_packet` and read back with `PacketReader`, sizes included
//! where the 16 MiB continuation rules apply (a payload of exactly 0xFFFFFF bytes, or a
//! multiple, ends with an empty frame). Intact streams must come back as they were sent;
//! cut, limited or renumbered ones must fail as the reference reader says.
#![no_main]

mod common;

use common::{Expected, Trickle, expected_packets, ready};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rwsplit::protocol::packet::{HEADER_LEN, MAX_FRAME, PacketReader, encode_packet};

/// Payload lengths near the frame boundaries; one large packet per input keeps a run fast.
fn payload_len(u: &mut Unstructured<'_>, large_left: &mut bool) -> Result<usize> {
    let class: u8 = u.int_in_range(0..=15)?;
    if class < 14 || !*large_left {
        return u.int_in_range(0..=300);
    }
    *large_left = false;
    let frames: usize = u.int_in_range(1..=2)?;
    let delta: usize = u.int_in_range(0..=2)?;
    Ok(frames * MAX_FRAME + delta - 1)
}

struct Sent {
    seq: u8,
    last_seq: u8,
    payload: Vec<u8>,
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let count: usize = u.int_in_range(1..=4)?;
    let mut large_left = true;
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..count {
        let seq: u8 = u.arbitrary()?;
        let len = payload_len(u, &mut large_left)?;
        let pattern_len = u.int_in_range(1..=16)?;
        let pattern = u.bytes(pattern_len)?;
        let pattern = if pattern.is_empty() {
            &[0][..]
        } else {
            pattern
        };
        let mut payload = pattern.repeat(len / pattern.len() + 1);
        payload.truncate(len);
        let next = encode_packet(&mut wire, seq, &payload);
        let frames = len / MAX_FRAME + 1;
        assert_eq!(next, seq.wrapping_add(frames as u8));
        sent.push(Sent {
            seq,
            last_seq: next.wrapping_sub(1),
            payload,
        });
    }
    // Damage, each with small probability: a lower limit, a cut, a renumbered frame.
    let mut damaged = false;
    let mut max = 64 << 20;
    if u.ratio(1, 4)? {
        damaged = true;
        max = u.int_in_range(0..=2 * MAX_FRAME + 4)?;
    }
    // Where each frame starts: cuts and renumbering aim at frame boundaries, where a reader
    // has to tell a clean close from a packet cut short.
    let mut frames = Vec::new();
    let mut at = 0;
    while at + HEADER_LEN <= wire.len() {
        frames.push(at);
        at += HEADER_LEN + u32::from_le_bytes([wire[at], wire[at + 1], wire[at + 2], 0]) as usize;
    }
    if u.ratio(1, 8)? {
        damaged = true;
        let at = frames[u.choose_index(frames.len())?];
        wire[at + 3] ^= u.int_in_range(1..=255)?;
    }
    if u.ratio(1, 4)? {
        damaged = true;
        let cut = if u.arbitrary()? {
            let at = frames[u.choose_index(frames.len())?];
            (at + u.int_in_range(0..=5)?).saturating_sub(1)
        } else {
            u.int_in_range(0..=wire.len())?
        };
        wire.truncate(cut.min(wire.len()));
    }
    // Reads of 1 byte to 64 KiB for small streams; large ones in at most 256 reads.
    let chunk = u.int_in_range(1..=65536)?.max(wire.len() / 256);
    let mut reader = PacketReader::new(Trickle::new(&wire, chunk));
    let expected = expected_packets(&wire, max);
    if !damaged {
        // An intact stream is every packet as sent, then a clean close.
        assert_eq!(expected.len(), sent.len() + 1);
        for (i, sent) in sent.iter().enumerate() {
            let Expected::Packet {
                seq,
                last_seq,
                payload,
            } = &expected[i].0
            else {
                panic!("packet {i}: {:?}", expected[i].0);
            };
            assert_eq!((*seq, *last_seq), (sent.seq, sent.last_seq), "packet {i}");
            assert!(*payload == sent.payload, "packet {i} changed");
        }
    }
    for (i, (expected, _)) in expected.into_iter().enumerate() {
        let got = Expected::of(ready(reader.read_packet(max)));
        assert_eq!(got, expected, "packet {i}");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
