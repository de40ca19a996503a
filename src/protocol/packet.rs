//! Packet framing: a 3-byte little-endian payload length and a 1-byte sequence id before every
//! payload. A payload of 2^24-1 bytes or more is split into frames of 0xFFFFFF bytes followed by
//! a shorter one (possibly empty) — MySQL Internals, "MySQL Packets".
//!
//! `PacketReader` buffers a socket and exposes both views the proxy needs: whole logical packets
//! (client commands, handshake) with their total length checked against a limit before anything
//! is allocated for them, and raw buffered bytes (the relay, which forwards frames unchanged).

use std::task::Poll;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload one frame can carry; a frame this long is continued by the next one.
pub const MAX_FRAME: usize = 0xFF_FFFF;
pub const HEADER_LEN: usize = 4;
const READ_CHUNK: usize = 16 * 1024;
/// A buffer that grew past this for one large packet is given back once the packet is
/// through: otherwise a session that sent or received one 60 MiB statement would hold
/// 60 MiB for the rest of its life.
const SHRINK_ABOVE: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The peer closed the connection between packets.
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("packet of {len} bytes or more exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("sequence id {got} where {expected} was expected")]
    OutOfOrder { expected: u8, got: u8 },
}

/// One logical packet: the sequence id of its first frame, of its last frame, and the payload
/// with the frames joined.
#[derive(Debug)]
pub struct Packet {
    pub seq: u8,
    pub last_seq: u8,
    pub payload: BytesMut,
}

/// Reads a frame header at the front of `buf`: (payload length, sequence id).
pub fn frame_header(buf: &[u8]) -> Option<(usize, u8)> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = buf[0] as usize | (buf[1] as usize) << 8 | (buf[2] as usize) << 16;
    Some((len, buf[3]))
}

pub struct PacketReader<R> {
    inner: R,
    buf: BytesMut,
    /// How long a read for a packet that is due (`fill`, `read_packet`) may go without a
    /// byte arriving (MySQL's `net_read_timeout`); `read_more`, the wait for a peer that
    /// owes nothing, is not bounded by it. `None`: forever.
    read_timeout: Option<std::time::Duration>,
    /// Sequence id of the last frame of the last packet `read_packet` returned.
    last_seq: Option<u8>,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            read_timeout: None,
            last_seq: None,
        }
    }

    pub fn set_read_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.read_timeout = timeout;
    }

    /// Sequence id of the last frame of the last packet read whole, if any.
    pub fn last_seq(&self) -> Option<u8> {
        self.last_seq
    }

    /// For a reader taking over a connection on which a packet was already read.
    pub fn set_last_seq(&mut self, seq: u8) {
        self.last_seq = Some(seq);
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The bytes read from the socket and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The same bytes, for patching a frame in place before it is forwarded.
    pub fn buffered_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }

    /// Reads once from the socket into the buffer; `Ok(0)` means end of stream.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        self.inner.read_buf(&mut self.buf).await
    }

    /// Makes at least `n` bytes available in the buffer. An end of stream with nothing
    /// buffered is `Closed`; one in the middle of a packet is an `UnexpectedEof` error.
    pub async fn fill(&mut self, n: usize) -> Result<(), PacketError> {
        if self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
        }
        while self.buf.len() < n {
            let read = self.inner.read_buf(&mut self.buf);
            let read = match self.read_timeout {
                Some(limit) => tokio::time::timeout(limit, read)
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
                None => read.await,
            };
            if read? == 0 {
                return Err(if self.buf.is_empty() {
                    PacketError::Closed
                } else {
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
                });
            }
        }
        Ok(())
    }

    /// Reads one whole logical packet. `max_len` bounds the joined payload and is checked
    /// against each frame's announced length before the frame is buffered.
    pub async fn read_packet(&mut self, max_len: usize) -> Result<Packet, PacketError> {
        self.fill(HEADER_LEN).await?;
        let (len, seq) = frame_header(&self.buf).expect("header buffered");
        let mut total = len;
        check_len(total, max_len)?;
        self.fill(HEADER_LEN + len).await?;
        self.buf.advance(HEADER_LEN);
        let mut payload = self.buf.split_to(len);
        let mut last_seq = seq;
        let mut frame_len = len;
        while frame_len == MAX_FRAME {
            // The packet goes on, so an end of stream here cuts it short, even though it
            // falls between frames with nothing buffered.
            self.fill(HEADER_LEN).await.map_err(|e| match e {
                PacketError::Closed => {
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
                }
                e => e,
            })?;
            let (len, next_seq) = frame_header(&self.buf).expect("header buffered");
            let expected = last_seq.wrapping_add(1);
            if next_seq != expected {
                return Err(PacketError::OutOfOrder {
                    expected,
                    got: next_seq,
                });
            }
            total += len;
            check_len(total, max_len)?;
            self.fill(HEADER_LEN + len).await?;
            self.buf.advance(HEADER_LEN);
            payload.extend_from_slice(&self.buf[..len]);
            self.buf.advance(len);
            last_seq = next_seq;
            frame_len = len;
        }
        self.last_seq = Some(last_seq);
        if total > SHRINK_ABOVE {
            // The payload was split off the buffer's allocation and shares it; a fresh
            // buffer lets the allocation go with the payload.
            let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(self.buf.len()));
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        Ok(Packet {
            seq,
            last_seq,
            payload,
        })
    }

    /// Like `read_packet`, but the first frame must carry `expected` as its sequence id.
    pub async fn read_packet_seq(
        &mut self,
        expected: u8,
        max_len: usize,
    ) -> Result<Packet, PacketError> {
        let packet = self.read_packet(max_len).await?;
        if packet.seq != expected {
            return Err(PacketError::OutOfOrder {
                expected,
                got: packet.seq,
            });
        }
        Ok(packet)
    }
}

/// Reads one packet of at most `max_len` bytes (less than a frame) straight from `stream`
/// without reading a byte past its end: the packet after which a connection may switch to
/// TLS, whose first bytes must stay in the socket for the TLS handshake.
pub async fn read_packet_exact<R: AsyncRead + Unpin>(
    stream: &mut R,
    max_len: usize,
) -> Result<Packet, PacketError> {
    debug_assert!(max_len < MAX_FRAME);
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match stream.read(&mut header[got..]).await? {
            0 if got == 0 => return Err(PacketError::Closed),
            0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            n => got += n,
        }
    }
    let (len, seq) = frame_header(&header).expect("header read");
    check_len(len, max_len)?;
    let mut payload = BytesMut::zeroed(len);
    stream.read_exact(&mut payload).await?;
    Ok(Packet {
        seq,
        last_seq: seq,
        payload,
    })
}

fn check_len(len: usize, max: usize) -> Result<(), PacketError> {
    if len > max {
        Err(PacketError::TooLarge { len, max })
    } else {
        Ok(())
    }
}

/// Appends `payload` to `out` as frames starting at sequence id `seq`; returns the sequence id
/// the next packet continues with.
pub fn encode_packet(out: &mut Vec<u8>, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let chunk = rest.len().min(MAX_FRAME);
        let len = (chunk as u32).to_le_bytes();
        out.extend_from_slice(&[len[0], len[1], len[2], seq]);
        out.extend_from_slice(&rest[..chunk]);
        seq = seq.wrapping_add(1);
        rest = &rest[chunk..];
        // A payload that is an exact multiple of MAX_FRAME ends with an empty frame.
        if chunk < MAX_FRAME {
            return seq;
        }
    }
}

/// Buffers outgoing packets and writes them with one syscall per `flush`.
pub struct PacketWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// How long a write may go without the peer taking a byte (MySQL's
    /// `net_write_timeout`); `None`: forever.
    write_timeout: Option<std::time::Duration>,
    /// The sequence id after the last packet queued with `push`.
    next_seq: u8,
}

impl<W: AsyncWrite + Unpin> PacketWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            // Grown on first use: the relay writes responses straight from the server's
            // read buffer, so this holds only commands and the proxy's own packets, and an
            // idle session should not hold 16 KiB per connection for them.
            buf: Vec::new(),
            write_timeout: None,
            next_seq: 0,
        }
    }

    pub fn set_write_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.write_timeout = timeout;
    }

    /// The sequence id that follows the last packet queued with `push` (0 before any).
    pub fn next_seq(&self) -> u8 {
        self.next_seq
    }

    /// For a writer taking over a connection on which packets were already sent.
    pub fn set_next_seq(&mut self, seq: u8) {
        self.next_seq = seq;
    }

    /// Queues one packet; returns the next sequence id.
    pub fn push(&mut self, seq: u8, payload: &[u8]) -> u8 {
        self.next_seq = encode_packet(&mut self.buf, seq, payload);
        self.next_seq
    }

    /// Queues bytes that are already framed.
    pub fn push_raw(&mut self, framed: &[u8]) {
        self.buf.extend_from_slice(framed);
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Writes what is queued. The stream is flushed too: TLS keeps records it could not
    /// send yet in its own buffer, which only a flush pushes out (on TCP it costs nothing).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            write_within(&mut self.inner, &self.buf, self.write_timeout).await?;
            self.buf.clear();
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf = Vec::new();
            }
        }
        Ok(())
    }

    /// Writes already-framed bytes straight through, after anything queued.
    pub async fn write_through(&mut self, framed: &[u8]) -> std::io::Result<()> {
        self.flush().await?;
        write_within(&mut self.inner, framed, self.write_timeout).await
    }

    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.inner.shutdown().await
    }

    /// Sends one packet immediately.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<u8> {
        let next = self.push(seq, payload);
        self.flush().await?;
        Ok(next)
    }
}

/// `write_all`, failing with `TimedOut` when it takes longer than `timeout`. Callers write
/// at most a read buffer's worth (or one client packet) at a time, so this bounds how long
/// the peer may take nothing.
async fn write_within<W: AsyncWrite + Unpin>(
    inner: &mut W,
    bytes: &[u8],
    timeout: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let write = async {
        inner.write_all(bytes).await?;
        inner.flush().await
    };
    let mut write = std::pin::pin!(write);
    // Nearly every write fits the socket buffer at once. Only one that has to wait gets a
    // timer: making one costs a clock read and a reference to the runtime's timer on each
    // of the two writes a statement makes.
    let first_try = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(done) = first_try {
        return done;
    }
    match timeout {
        Some(limit) => tokio::time::timeout(limit, write)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
        None => write.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Packet, PacketError>> {
        let mut reader = PacketReader::new(&bytes[..]);
        let mut out = Vec::new();
        loop {
            match reader.read_packet(max).await {
                Err(PacketError::Closed) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
                ok => out.push(ok),
            }
        }
    }

    /// A stream that holds written bytes until flushed, as TLS does when the socket is full:
    /// a packet sent must not stay there.
    #[tokio::test]
    async fn sent_packets_do_not_wait_in_the_stream_for_a_flush() {
        let mut writer = PacketWriter::new(tokio::io::BufWriter::new(Vec::new()));
        writer
            .send(0, b"\x00\x00\x00\x02\x00\x00\x00")
            .await
            .unwrap();
        writer.write_through(&[1, 0, 0, 1, 0xfe]).await.unwrap();
        let delivered = writer.into_inner().into_inner();
        assert_eq!(
            delivered,
            b"\x07\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x01\xfe"
        );
    }

    #[tokio::test]
    async fn an_exact_read_leaves_what_follows_the_packet() {
        let mut wire = Vec::new();
        encode_packet(&mut wire, 1, &[0xAB; 32]);
        wire.extend_from_slice(b"\x16\x03\x01 TLS client hello");
        let mut stream = &wire[..];
        let packet = read_packet_exact(&mut stream, 1024).await.unwrap();
        assert_eq!((packet.seq, packet.payload.len()), (1, 32));
        assert_eq!(stream, b"\x16\x03\x01 TLS client hello");

        let mut huge = &[0xFF, 0xFF, 0xFF, 0x01][..];
        assert!(matches!(
            read_packet_exact(&mut huge, 1024).await,
            Err(PacketError::TooLarge {
                len: MAX_FRAME,
                max: 1024
            })
        ));
        let mut empty = &[][..];
        assert!(matches!(
            read_packet_exact(&mut empty, 1024).await,
            Err(PacketError::Closed)
        ));
        let mut cut = &[10, 0, 0, 1, b'x'][..];
        assert!(matches!(
            read_packet_exact(&mut cut, 1024).await,
            Err(PacketError::Io(_))
        ));
    }

    #[tokio::test]
    async fn small_packets_round_trip() {
        let mut wire = Vec::new();
        let next = encode_packet(&mut wire, 0, b"\x03SELECT 1");
        assert_eq!(next, 1);
        encode_packet(&mut wire, 7, b"");
        assert_eq!(&wire[..4], &[9, 0, 0, 0]);
        let packets = read_all(wire, 1 << 20).await;
        let packets: Vec<_> = packets.into_iter().map(Result::unwrap).collect();
        assert_eq!(packets.len(), 2);
        assert_eq!(&packets[0].payload[..], b"\x03SELECT 1");
        assert_eq!((packets[1].seq, packets[1].payload.len()), (7, 0));
    }

    #[tokio::test]
    async fn payload_of_exactly_one_frame_gets_an_empty_trailer() {
        let payload = vec![0xabu8; MAX_FRAME];
        let mut wire = Vec::new();
        let next = encode_packet(&mut wire, 0, &payload);
        assert_eq!(next, 2, "a full frame and an empty one");
        assert_eq!(wire.len(), 2 * HEADER_LEN + MAX_FRAME);
        let packets = read_all(wire, 64 << 20).await;
        let packet = packets.into_iter().next().unwrap().unwrap();
        assert_eq!((packet.seq, packet.last_seq), (0, 1));
        assert_eq!(packet.payload.len(), MAX_FRAME);
    }

    #[tokio::test]
    async fn large_payload_is_split_and_joined() {
        let payload: Vec<u8> = (0..(MAX_FRAME * 2 + 10)).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        assert_eq!(encode_packet(&mut wire, 254, &payload), 1, "ids wrap");
        let packet = read_all(wire, 64 << 20).await.remove(0).unwrap();
        assert_eq!((packet.seq, packet.last_seq), (254, 0));
        assert!(packet.payload[..] == payload[..]);
    }

    #[tokio::test]
    async fn oversized_packet_is_refused_from_its_header() {
        // Only the header of a 1 GiB-ish frame chain: refused before any payload is read.
        let wire = vec![0xff, 0xff, 0xff, 0];
        let result = read_all(wire, 1 << 20).await.remove(0);
        assert!(matches!(
            result,
            Err(PacketError::TooLarge {
                len: MAX_FRAME,
                max: 1048576
            })
        ));
    }

    #[tokio::test]
    async fn continuation_with_wrong_sequence_is_refused() {
        let mut wire = Vec::new();
        encode_packet(&mut wire, 0, &vec![1u8; MAX_FRAME]);
        wire[HEADER_LEN + MAX_FRAME + 3] = 5;
        let result = read_all(wire, 64 << 20).await.remove(0);
        assert!(matches!(
            result,
            Err(PacketError::OutOfOrder {
                expected: 1,
                got: 5
            })
        ));
    }

    #[tokio::test]
    async fn stream_ending_after_a_full_frame_is_cut_short_not_closed() {
        // Found by fuzzing: a 0xFFFFFF-byte frame promises another; the stream ending right
        // after it was taken for a clean close between packets.
        let mut wire = Vec::new();
        encode_packet(&mut wire, 0, &vec![7u8; MAX_FRAME]);
        wire.truncate(HEADER_LEN + MAX_FRAME);
        let result = read_all(wire, 64 << 20).await.remove(0);
        match result {
            Err(PacketError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("expected an unexpected EOF, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_packet_is_an_error_not_a_clean_close() {
        let wire = vec![10, 0, 0, 0, b'x'];
        let result = read_all(wire, 1024).await.remove(0);
        match result {
            Err(PacketError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("expected an unexpected EOF, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_packet_that_stalls_times_out_but_waiting_for_one_does_not() {
        use std::time::Duration;
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader = PacketReader::new(server);
        reader.set_read_timeout(Some(Duration::from_millis(50)));
        // Waiting between packets is not bounded by the read timeout.
        let idle = tokio::time::timeout(Duration::from_millis(150), reader.read_more()).await;
        assert!(idle.is_err(), "still waiting");
        client.write_all(&[10, 0, 0, 0, b'x']).await.unwrap();
        match reader.read_packet(1024).await {
            Err(PacketError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_peer_that_takes_nothing_times_out_a_write() {
        use std::time::Duration;
        let (_peer, ours) = tokio::io::duplex(64);
        let mut writer = PacketWriter::new(ours);
        writer.set_write_timeout(Some(Duration::from_millis(50)));
        let err = writer.write_through(&[0u8; 1000]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn buffers_shrink_after_a_large_packet() {
        let mut wire = Vec::new();
        encode_packet(&mut wire, 0, &vec![7u8; 4 << 20]);
        encode_packet(&mut wire, 0, b"\x03SELECT 1");
        let mut reader = PacketReader::new(&wire[..]);
        let big = reader.read_packet(64 << 20).await.unwrap();
        assert_eq!(big.payload.len(), 4 << 20);
        drop(big);
        assert!(
            reader.buf.capacity() <= SHRINK_ABOVE,
            "{}",
            reader.buf.capacity()
        );
        let small = reader.read_packet(64 << 20).await.unwrap();
        assert_eq!(&small.payload[..], b"\x03SELECT 1");
        assert_eq!(reader.last_seq(), Some(0));

        let mut writer = PacketWriter::new(Vec::new());
        assert_eq!(writer.push(3, &vec![1u8; 1 << 20]), 4);
        assert_eq!(writer.next_seq(), 4);
        writer.flush().await.unwrap();
        assert!(writer.buf.capacity() <= SHRINK_ABOVE);
        assert_eq!(writer.into_inner().len(), HEADER_LEN + (1 << 20));
    }
}
