//! The client both arms share: a blocking socket, requests framed once before the timing
//! starts, and responses followed in the read buffer with the proxy's own `ResponseTracker`,
//! nothing decoded or allocated. Its cost per statement is small and the same whichever
//! server it talks to, so the difference between the arms is the proxy's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket};
use mysql_common::proto::MyDeserialize;
use mysql_common::scramble::scramble_native;
use rwsplit::protocol::codes::{self, SqlError};
use rwsplit::protocol::handshake::{BackendLogin, backend_hello_payload};
use rwsplit::protocol::packet::{HEADER_LEN, encode_packet, frame_header};
use rwsplit::protocol::response::{PREFIX_LEN, ResponseKind, ResponseTracker, Step};

/// Large enough for any answer the bench backend gives, a batch of them included.
const READ_BUFFER: usize = 64 * 1024;

pub struct Client {
    stream: TcpStream,
    /// Bytes read and not yet consumed are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    deprecate_eof: bool,
}

impl Client {
    /// Logs in with mysql_native_password and the capabilities a driver usually asks for,
    /// as far as the server offers them.
    pub fn connect(addr: SocketAddr, user: &str, password: &str) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut client = Self {
            stream,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            deprecate_eof: false,
        };
        let (seq, greeting) = client.read_packet();
        let handshake = HandshakePacket::deserialize((), &mut ParseBuf(&greeting))
            .unwrap_or_else(|e| panic!("greeting from {addr}: {e}"));
        let wanted = CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CapabilityFlags::CLIENT_DEPRECATE_EOF;
        let capabilities = wanted & handshake.capabilities();
        client.deprecate_eof = capabilities.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let login = BackendLogin {
            user: user.into(),
            password: password.into(),
            database: None,
            capabilities,
            collation: 45,
            max_packet_size: 1 << 24,
            connect_attributes: None,
        };
        let scramble = scramble_native(&handshake.nonce(), password.as_bytes()).unwrap_or([0; 20]);
        let hello = backend_hello_payload(
            &login,
            (8, 0, 36),
            AuthPlugin::MysqlNativePassword,
            &scramble,
            false,
        );
        let mut out = Vec::new();
        encode_packet(&mut out, seq.wrapping_add(1), &hello);
        client.send(&out);
        loop {
            let (seq, reply) = client.read_packet();
            match reply.first() {
                Some(0x00) => return client,
                Some(0xfe) => {
                    // Auth switch: plugin name, NUL, nonce (NUL-terminated).
                    let name_end = 1 + reply[1..].iter().position(|&b| b == 0).expect("name");
                    let nonce = &reply[name_end + 1..];
                    let nonce = nonce.strip_suffix(&[0]).unwrap_or(nonce);
                    let answer = scramble_native(nonce, password.as_bytes()).unwrap_or([0; 20]);
                    let mut out = Vec::new();
                    encode_packet(&mut out, seq.wrapping_add(1), &answer);
                    client.send(&out);
                }
                _ => panic!("login to {addr} failed: {}", describe(&reply)),
            }
        }
    }

    /// Writes framed bytes as they are.
    pub fn send(&mut self, framed: &[u8]) {
        self.stream.write_all(framed).expect("send");
    }

    /// Sends framed requests and reads `responses` answers of `kind`; returns how many
    /// packets they had. An error answer fails the bench with its message.
    pub fn exchange(&mut self, framed: &[u8], kind: ResponseKind, responses: usize) -> usize {
        self.send(framed);
        (0..responses).map(|_| self.read_response(kind)).sum()
    }

    /// Runs one statement outside the timing (set-up), returning every packet's payload.
    pub fn query(&mut self, sql: &str) -> Vec<Vec<u8>> {
        let mut payload = vec![codes::COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        self.command(&payload, ResponseKind::Query)
    }

    /// Prepares a statement; returns its id.
    pub fn prepare(&mut self, sql: &str) -> u32 {
        let mut payload = vec![codes::COM_STMT_PREPARE];
        payload.extend_from_slice(sql.as_bytes());
        let answer = self.command(&payload, ResponseKind::Prepare);
        let ok = &answer[0];
        u32::from_le_bytes(ok[1..5].try_into().expect("PREPARE_OK has a statement id"))
    }

    /// Says goodbye, so that the server side ends its session at once.
    pub fn quit(mut self) {
        let mut out = Vec::new();
        encode_packet(&mut out, 0, &[codes::COM_QUIT]);
        let _ = self.stream.write_all(&out);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn command(&mut self, payload: &[u8], kind: ResponseKind) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        encode_packet(&mut out, 0, payload);
        self.send(&out);
        let mut tracker = ResponseTracker::new(kind, self.deprecate_eof);
        let mut packets = Vec::new();
        loop {
            let (_, payload) = self.read_packet();
            let step = tracker
                .on_frame(&payload[..payload.len().min(PREFIX_LEN)], payload.len())
                .expect("well-formed response");
            if tracker.is_error() {
                panic!("{}", describe(&payload));
            }
            packets.push(payload);
            if step == Step::Done {
                return packets;
            }
        }
    }

    /// Follows one response to its end in the read buffer; returns its packet count.
    fn read_response(&mut self, kind: ResponseKind) -> usize {
        let mut tracker = ResponseTracker::new(kind, self.deprecate_eof);
        let mut packets = 0;
        loop {
            let len = self.frame_len();
            let payload = &self.buf[self.start + HEADER_LEN..self.start + HEADER_LEN + len];
            let step = tracker
                .on_frame(&payload[..len.min(PREFIX_LEN)], len)
                .expect("well-formed response");
            if tracker.is_error() {
                panic!("{}", describe(payload));
            }
            self.start += HEADER_LEN + len;
            packets += 1;
            if step == Step::Done {
                return packets;
            }
        }
    }

    /// Makes sure a whole frame is buffered at `start`; returns its payload length.
    fn frame_len(&mut self) -> usize {
        self.fill(HEADER_LEN);
        let (len, _) = frame_header(&self.buf[self.start..self.end]).expect("header buffered");
        assert!(
            HEADER_LEN + len <= READ_BUFFER,
            "a {len}-byte packet: the bench backend sends none this large"
        );
        self.fill(HEADER_LEN + len);
        len
    }

    fn read_packet(&mut self) -> (u8, Vec<u8>) {
        let len = self.frame_len();
        let seq = self.buf[self.start + 3];
        let payload = self.buf[self.start + HEADER_LEN..self.start + HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        (seq, payload)
    }

    /// Reads until `need` bytes are buffered from `start` on.
    fn fill(&mut self, need: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < need {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => panic!("the server closed the connection"),
                Ok(n) => self.end += n,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

fn describe(payload: &[u8]) -> String {
    match SqlError::from_payload(payload) {
        Some(e) => format!(
            "error {} ({}): {}",
            e.code,
            String::from_utf8_lossy(&e.state),
            e.message
        ),
        None => format!("unexpected packet {payload:02x?}"),
    }
}
