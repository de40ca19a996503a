//! A server's response to a command, as the relay tracks it: frame headers and at most
//! `PREFIX_LEN` bytes of each payload go to `ResponseTracker`, which must say where the
//! response ends without panicking, whatever the server sends. The single-packet parsers the
//! proxy applies to server packets (OK status, ERR, PREPARE_OK, length-encoded integers) run
//! on every payload too.
//!
//! Input: a byte choosing the command's response kind and CLIENT_DEPRECATE_EOF, then frames:
//! a 4-byte header and the first `min(len, PREFIX_LEN)` bytes of the payload. The rest of a
//! frame is not in the input (the tracker never sees it), so a frame can claim 16 MiB and
//! continuation frames cost nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwsplit::backend::PrepareOk;
use rwsplit::protocol::codes::SqlError;
use rwsplit::protocol::handshake::ok_status_flags;
use rwsplit::protocol::packet::{HEADER_LEN, MAX_FRAME, frame_header};
use rwsplit::protocol::response::{
    PREFIX_LEN, ResponseKind, ResponseTracker, Step, lenenc_int, ok_status,
};

const KINDS: [ResponseKind; 6] = [
    ResponseKind::Query,
    ResponseKind::Execute,
    ResponseKind::Prepare,
    ResponseKind::FieldList,
    ResponseKind::Fetch,
    ResponseKind::Single,
];

/// The parsers that read a whole (short) server packet.
fn single_packet(payload: &[u8]) {
    if let Some(flags) = ok_status_flags(payload) {
        assert_eq!(payload[0], 0x00);
        assert_eq!(ok_status(payload), Some(flags));
    }
    if let Some((_, used)) = lenenc_int(payload) {
        assert!([1, 3, 4, 9].contains(&used) && used <= payload.len());
    }
    if let Some(err) = SqlError::from_payload(payload) {
        assert_eq!(payload[0], 0xff);
        // A 4.1 ERR packet with a text message is rebuilt byte for byte.
        let marked = payload.get(3) == Some(&b'#') && payload.len() >= 9;
        if marked && std::str::from_utf8(&payload[9..]).is_ok() {
            assert_eq!(err.to_payload(), payload);
        }
    }
    if PrepareOk::parse(payload).is_some() {
        assert!(payload.len() >= 12 && payload[0] == 0x00);
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    single_packet(rest);
    let mut rest = rest;
    let kind = KINDS[(*mode % 6) as usize];
    let deprecate_eof = mode & 0x80 != 0;
    let mut tracker = ResponseTracker::new(kind, deprecate_eof);
    while let Some((len, _)) = frame_header(rest) {
        let Some(prefix) = rest.get(HEADER_LEN..HEADER_LEN + len.min(PREFIX_LEN)) else {
            return;
        };
        rest = &rest[HEADER_LEN + prefix.len()..];
        single_packet(prefix);
        let _ = tracker.can_end_with_error();
        match tracker.on_frame(prefix, len) {
            Ok(Step::Done) => {
                assert!(len < MAX_FRAME, "a response never ends inside a packet");
                assert!(tracker.is_done());
                assert!(
                    tracker.on_frame(prefix, len).is_err(),
                    "nothing after the end"
                );
                return;
            }
            Ok(Step::LocalInfile) => assert_eq!(kind, ResponseKind::Query),
            Ok(Step::More) => assert!(!tracker.is_done()),
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    }
});
