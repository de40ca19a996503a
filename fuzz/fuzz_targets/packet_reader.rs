//! Client and server bytes as `PacketReader` frames them, with a small packet limit: every
//! packet, error and clean close must be what the reference reader says, the limit must hold
//! before anything is buffered for a packet, and the reader's buffer must always be the
//! stream's unread bytes.
#![no_main]

mod common;

use common::{Expected, Trickle, expected_packets, ready};
use libfuzzer_sys::fuzz_target;
use rwsplit::protocol::packet::{PacketReader, frame_header};

fuzz_target!(|data: &[u8]| {
    let [limit, chunk, wire @ ..] = data else {
        return;
    };
    // Limits up to 2 KiB: small enough that libFuzzer's inputs exceed them. Larger packets and
    // their continuation frames are `packet_round_trip`'s.
    let max = *limit as usize * 8;
    let header = frame_header(wire);
    assert_eq!(header.is_some(), wire.len() >= 4);

    let mut reader = PacketReader::new(Trickle::new(wire, *chunk as usize));
    let mut at = 0;
    for (expected, used) in expected_packets(wire, max) {
        let got = Expected::of(ready(reader.read_packet(max)));
        assert_eq!(got, expected, "packet at byte {at}");
        let Expected::Packet { payload, .. } = got else {
            return;
        };
        assert!(payload.len() <= max);
        at += used;
        let buffered = reader.buffered();
        assert_eq!(buffered, &wire[at..at + buffered.len()]);
    }
});
