//! Relaying one response from a backend to the client. Bytes are forwarded straight from the
//! read buffer, one write per read, as soon as they form whole frames; only frame headers and
//! a short prefix of each packet are looked at (`ResponseTracker`), so a result set of any size
//! streams through in bounded memory, at the client's pace.
//!
//! Frames up to `STREAM_ABOVE` bytes are forwarded whole, so that if the backend dies the
//! client can still be sent a well-formed ERR packet in place of the rest. Larger frames (big
//! BLOBs) are streamed in pieces to keep memory bounded; a failure in the middle of one can
//! only close the client's connection.

use tokio::io::{AsyncRead, AsyncWrite};

use super::BackendConn;
use crate::protocol::packet::{HEADER_LEN, PacketError, PacketReader, PacketWriter, frame_header};
use crate::protocol::response::{PREFIX_LEN, ResponseError, ResponseKind, ResponseTracker, Step};

/// Frames longer than this are forwarded piece by piece instead of whole.
const STREAM_ABOVE: usize = 64 * 1024;

/// How a response ended.
#[derive(Debug, Clone, Copy)]
pub struct RelayOutcome {
    /// Status flags of the response's last OK/EOF packet.
    pub status_flags: Option<u16>,
    /// The response was (or ended with) an ERR packet.
    pub error: bool,
    /// Bytes relayed to the client.
    pub bytes: u64,
    /// A COM_STMT_PREPARE succeeded: what the server's PREPARE_OK said.
    pub prepared: Option<PrepareOk>,
}

/// The fixed part of COM_STMT_PREPARE_OK (MySQL Internals, "COM_STMT_PREPARE Response"):
/// `00`, statement id (4), column count (2), parameter count (2), filler, warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    /// The id the backend gave the statement.
    pub statement_id: u32,
    pub params: u16,
}

impl PrepareOk {
    const LEN: usize = 12;

    /// Reads a PREPARE_OK; `None` if the payload is not one (an ERR packet, say).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        if payload.len() < Self::LEN || payload[0] != 0x00 {
            return None;
        }
        Some(Self {
            statement_id: u32::from_le_bytes(payload[1..5].try_into().ok()?),
            params: u16::from_le_bytes([payload[7], payload[8]]),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client connection lost: {0}")]
    Client(std::io::Error),
    #[error("client broke the LOCAL INFILE exchange: {0}")]
    ClientProtocol(PacketError),
    #[error("backend connection lost: {0}")]
    Backend(std::io::Error),
    #[error("backend sent sequence id {got}, expected {expected}")]
    BackendSequence { expected: u8, got: u8 },
    #[error(transparent)]
    BackendResponse(#[from] ResponseError),
}

/// Where a relay stopped when it failed: the sequence id an ERR packet to the client would
/// carry, if the protocol allows one at that point.
#[derive(Debug)]
pub struct RelayFailure {
    pub error: RelayError,
    pub error_seq: Option<u8>,
    pub bytes: u64,
}

/// Where a relay stands: enough to say, if it fails, whether the client can still be sent
/// an ERR packet and with which sequence id.
struct RelayState {
    tracker: ResponseTracker,
    /// Sequence id of the last frame seen from the backend.
    last_seq: u8,
    /// Payload bytes of the current frame not yet forwarded.
    frame_left: usize,
    /// Bytes relayed to the client.
    bytes: u64,
}

impl RelayState {
    /// An ERR packet may end the response only between whole packets, at a point where the
    /// protocol allows one.
    fn failure(&self, error: RelayError) -> RelayFailure {
        RelayFailure {
            error,
            error_seq: (self.frame_left == 0 && self.tracker.can_end_with_error())
                .then_some(self.last_seq.wrapping_add(1)),
            bytes: self.bytes,
        }
    }
}

impl BackendConn {
    /// Relays the response to the command just sent, whose last packet had sequence id
    /// `command_seq`. A LOCAL INFILE request is answered by relaying the client's file
    /// packets to the server.
    ///
    /// For a COM_STMT_PREPARE, `client_statement_id` replaces the backend's statement id in
    /// the PREPARE_OK the client sees (the backend's is in the outcome).
    pub async fn relay_response<CR, CW>(
        &mut self,
        kind: ResponseKind,
        command_seq: u8,
        client_in: &mut PacketReader<CR>,
        client_out: &mut PacketWriter<CW>,
        client_statement_id: Option<u32>,
    ) -> Result<RelayOutcome, RelayFailure>
    where
        CR: AsyncRead + Unpin,
        CW: AsyncWrite + Unpin,
    {
        self.relay(
            kind,
            command_seq,
            client_in,
            client_out,
            client_statement_id,
            false,
        )
        .await
    }

    /// `internal`: the answer goes to the proxy, not a client, so it may be abandoned at
    /// any point; a client's answer only before its first byte.
    async fn relay<CR, CW>(
        &mut self,
        kind: ResponseKind,
        command_seq: u8,
        client_in: &mut PacketReader<CR>,
        client_out: &mut PacketWriter<CW>,
        client_statement_id: Option<u32>,
        internal: bool,
    ) -> Result<RelayOutcome, RelayFailure>
    where
        CR: AsyncRead + Unpin,
        CW: AsyncWrite + Unpin,
    {
        let deprecate_eof = self
            .capabilities
            .contains(mysql_common::constants::CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let mut state = RelayState {
            tracker: ResponseTracker::new(kind, deprecate_eof),
            last_seq: command_seq,
            frame_left: 0,
            bytes: 0,
        };
        // Bytes at the front of the read buffer that belong to the response and may be sent.
        let mut ready = 0usize;
        let mut step = Step::More;
        let mut prepared = None;
        loop {
            // Where a PREPARE_OK's payload starts in the buffer, to patch before forwarding.
            let mut patch_at = None;
            let buffered = self.reader.buffered();
            loop {
                if state.frame_left > 0 {
                    let take = state.frame_left.min(buffered.len() - ready);
                    ready += take;
                    state.frame_left -= take;
                    if state.frame_left > 0 {
                        break;
                    }
                }
                if step != Step::More {
                    break;
                }
                let Some((len, seq)) = frame_header(&buffered[ready..]) else {
                    break;
                };
                let prefix_end = ready + HEADER_LEN + len.min(PREFIX_LEN);
                let needed = if len > STREAM_ABOVE {
                    prefix_end
                } else {
                    ready + HEADER_LEN + len
                };
                if buffered.len() < needed {
                    break;
                }
                let expected = state.last_seq.wrapping_add(1);
                if seq != expected {
                    let error = RelayError::BackendSequence { expected, got: seq };
                    return Err(state.failure(error));
                }
                let prefix = &buffered[ready + HEADER_LEN..prefix_end];
                if kind == ResponseKind::Prepare
                    && state.bytes == 0
                    && ready == 0
                    && len <= STREAM_ABOVE
                {
                    // A frame this small is whole in the buffer.
                    prepared = PrepareOk::parse(&buffered[HEADER_LEN..HEADER_LEN + len]);
                    patch_at = prepared.map(|_| HEADER_LEN + 1);
                }
                step = match state.tracker.on_frame(prefix, len) {
                    Ok(step) => step,
                    Err(e) => return Err(state.failure(e.into())),
                };
                state.last_seq = seq;
                ready += HEADER_LEN;
                state.frame_left = len;
            }

            if let (Some(at), Some(id)) = (patch_at, client_statement_id) {
                self.reader.buffered_mut()[at..at + 4].copy_from_slice(&id.to_le_bytes());
            }
            let buffered = self.reader.buffered();
            if ready > 0 {
                if let Err(e) = client_out.write_through(&buffered[..ready]).await {
                    return Err(state.failure(RelayError::Client(e)));
                }
                state.bytes += ready as u64;
                self.reader.consume(ready);
                ready = 0;
            }
            if state.frame_left == 0 {
                match step {
                    Step::Done => {
                        return Ok(RelayOutcome {
                            status_flags: state.tracker.status_flags(),
                            error: state.tracker.is_error(),
                            bytes: state.bytes,
                            prepared,
                        });
                    }
                    Step::LocalInfile => {
                        let uploaded = self.upload_local_infile(state.last_seq, client_in).await;
                        state.last_seq = match uploaded {
                            Ok(seq) => seq,
                            Err(error) => return Err(state.failure(error)),
                        };
                        step = Step::More;
                        continue;
                    }
                    Step::More => {}
                }
            }
            let may_abandon = internal || state.bytes == 0;
            match self.read_more(may_abandon).await {
                Ok(0) => {
                    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    return Err(state.failure(RelayError::Backend(eof)));
                }
                Ok(_) => {}
                Err(e) => return Err(state.failure(RelayError::Backend(e))),
            }
        }
    }

    /// Runs a command of the proxy's own (a session statement replayed, a statement prepared
    /// on one more backend) and collects the response instead of relaying it.
    pub async fn run_internal(
        &mut self,
        payload: &[u8],
        kind: ResponseKind,
    ) -> Result<Collected, RelayFailure> {
        let next = self.send_command(payload).await.map_err(|e| RelayFailure {
            error: RelayError::Backend(e),
            error_seq: None,
            bytes: 0,
        })?;
        let mut sink = PacketWriter::new(Vec::new());
        let mut no_input = PacketReader::new(tokio::io::empty());
        let outcome = self
            .relay(
                kind,
                next.wrapping_sub(1),
                &mut no_input,
                &mut sink,
                None,
                true,
            )
            .await?;
        Ok(Collected {
            outcome,
            framed: sink.into_inner(),
        })
    }

    /// Relays the client's file packets, up to and including the empty one that ends the
    /// upload; returns the sequence id of that last packet.
    async fn upload_local_infile<CR: AsyncRead + Unpin>(
        &mut self,
        request_seq: u8,
        client_in: &mut PacketReader<CR>,
    ) -> Result<u8, RelayError> {
        let mut seq = request_seq;
        loop {
            let expected = seq.wrapping_add(1);
            let frame = async {
                client_in.fill(HEADER_LEN).await?;
                let (len, got) = frame_header(client_in.buffered()).expect("header buffered");
                if got != expected {
                    return Err(PacketError::OutOfOrder { expected, got });
                }
                client_in.fill(HEADER_LEN + len).await?;
                Ok(len)
            };
            let len = frame.await.map_err(RelayError::ClientProtocol)?;
            self.writer
                .write_through(&client_in.buffered()[..HEADER_LEN + len])
                .await
                .map_err(RelayError::Backend)?;
            client_in.consume(HEADER_LEN + len);
            seq = expected;
            if len == 0 {
                return Ok(seq);
            }
        }
    }
}

/// A response the proxy read for itself.
#[derive(Debug)]
pub struct Collected {
    pub outcome: RelayOutcome,
    /// The response's frames as the server sent them.
    pub framed: Vec<u8>,
}

impl Collected {
    /// The first packet's payload (the ERR packet of a failed command, for one).
    pub fn first_payload(&self) -> &[u8] {
        match frame_header(&self.framed) {
            Some((len, _)) => &self.framed[HEADER_LEN..(HEADER_LEN + len).min(self.framed.len())],
            None => &[],
        }
    }
}

impl std::fmt::Display for RelayFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}
