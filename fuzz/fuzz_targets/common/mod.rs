//! What several targets share: a socket stand-in that hands out its bytes a few at a time,
//! a way to run the proxy's async readers on it, and a plain reference reader that says what
//! `PacketReader` must make of any byte stream.

// Each target uses only some of these.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use rwsplit::protocol::packet::{HEADER_LEN, MAX_FRAME, Packet, PacketError, frame_header};
use tokio::io::{AsyncRead, ReadBuf};

/// An in-memory socket that returns at most `chunk` bytes per read, so that packets arrive
/// split at every possible point, as they do over TCP.
pub struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl<'a> Trickle<'a> {
    pub fn new(data: &'a [u8], chunk: usize) -> Self {
        Self {
            data,
            chunk: chunk.max(1),
        }
    }
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (head, rest) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future over in-memory input, which never has to wait.
pub fn ready<F: Future>(future: F) -> F::Output {
    future
        .now_or_never()
        .expect("a read from memory never waits")
}

/// What reading one packet must give, as the reference reader sees it.
#[derive(PartialEq, Eq)]
pub enum Expected {
    Packet {
        seq: u8,
        last_seq: u8,
        payload: Vec<u8>,
    },
    Closed,
    UnexpectedEof,
    TooLarge {
        len: usize,
        max: usize,
    },
    OutOfOrder {
        expected: u8,
        got: u8,
    },
}

/// Payloads of 16 MiB make a useless failure message; their length and start tell enough.
impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Packet {
                seq,
                last_seq,
                payload,
            } => write!(
                f,
                "Packet {{ seq: {seq}, last_seq: {last_seq}, len: {}, starts: {:?} }}",
                payload.len(),
                &payload[..payload.len().min(16)]
            ),
            Expected::Closed => write!(f, "Closed"),
            Expected::UnexpectedEof => write!(f, "UnexpectedEof"),
            Expected::TooLarge { len, max } => write!(f, "TooLarge {{ len: {len}, max: {max} }}"),
            Expected::OutOfOrder { expected, got } => {
                write!(f, "OutOfOrder {{ expected: {expected}, got: {got} }}")
            }
        }
    }
}

impl Expected {
    pub fn of(result: Result<Packet, PacketError>) -> Self {
        match result {
            Ok(p) => Expected::Packet {
                seq: p.seq,
                last_seq: p.last_seq,
                payload: p.payload.to_vec(),
            },
            Err(PacketError::Closed) => Expected::Closed,
            Err(PacketError::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
                Expected::UnexpectedEof
            }
            Err(PacketError::TooLarge { len, max }) => Expected::TooLarge { len, max },
            Err(PacketError::OutOfOrder { expected, got }) => {
                Expected::OutOfOrder { expected, got }
            }
        }
    }
}

/// The reference reader: MySQL Internals, "MySQL Packets", over a whole byte slice at once.
/// Returns what `read_packet(max)` must give for each packet, ending with the first error
/// (a clean close included), and the bytes each successful packet took from the stream.
pub fn expected_packets(wire: &[u8], max: usize) -> Vec<(Expected, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        if at == wire.len() {
            out.push((Expected::Closed, 0));
            return out;
        }
        let start = at;
        let mut payload = Vec::new();
        let mut first_seq = None;
        let mut last_seq = 0u8;
        loop {
            let Some((len, seq)) = frame_header(&wire[at..]) else {
                out.push((Expected::UnexpectedEof, 0));
                return out;
            };
            if first_seq.is_some() {
                let expected = last_seq.wrapping_add(1);
                if seq != expected {
                    out.push((Expected::OutOfOrder { expected, got: seq }, 0));
                    return out;
                }
            }
            let total = payload.len() + len;
            if total > max {
                out.push((Expected::TooLarge { len: total, max }, 0));
                return out;
            }
            let Some(frame) = wire.get(at + HEADER_LEN..at + HEADER_LEN + len) else {
                out.push((Expected::UnexpectedEof, 0));
                return out;
            };
            payload.extend_from_slice(frame);
            at += HEADER_LEN + len;
            first_seq.get_or_insert(seq);
            last_seq = seq;
            if len < MAX_FRAME {
                break;
            }
        }
        let packet = Expected::Packet {
            seq: first_seq.expect("one frame read"),
            last_seq,
            payload,
        };
        out.push((packet, at - start));
    }
}
