//! A minimal client that speaks the protocol packet by packet, for what a driver hides:
//! byte-exact responses, cursors, long data, and deliberately broken input.

use std::net::SocketAddr;

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket};
use mysql_common::proto::MyDeserialize;
use mysql_common::scramble::scramble_native;
use rwsplit::protocol::codes::{self, SqlError};
use rwsplit::protocol::handshake::{BackendLogin, backend_hello_payload, relayable_capabilities};
use rwsplit::protocol::packet::{PacketReader, PacketWriter};
use rwsplit::protocol::response::{PREFIX_LEN, ResponseKind, ResponseTracker, Step};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub struct RawClient {
    pub reader: PacketReader<OwnedReadHalf>,
    pub writer: PacketWriter<OwnedWriteHalf>,
    pub capabilities: CapabilityFlags,
    pub connection_id: u32,
}

/// One packet of a response: sequence id and payload.
pub type Frame = (u8, Vec<u8>);

impl RawClient {
    /// Logs in with mysql_native_password, following an auth switch if one comes.
    pub async fn connect(
        addr: SocketAddr,
        user: &str,
        password: &str,
        db: Option<&str>,
    ) -> Result<Self, SqlError> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (read, write) = stream.into_split();
        let mut reader = PacketReader::new(read);
        let mut writer = PacketWriter::new(write);
        let greeting = reader.read_packet(1 << 20).await.expect("greeting");
        if let Some(err) = SqlError::from_payload(&greeting.payload) {
            return Err(err);
        }
        let handshake =
            HandshakePacket::deserialize((), &mut ParseBuf(&greeting.payload)).expect("greeting");
        // What a typical driver asks for: not CLIENT_NO_SCHEMA (which forbids db.table
        // names) nor CLIENT_IGNORE_SPACE (which changes how the server parses functions).
        let unusual = CapabilityFlags::CLIENT_NO_SCHEMA
            | CapabilityFlags::CLIENT_IGNORE_SPACE
            | CapabilityFlags::CLIENT_ODBC
            | CapabilityFlags::CLIENT_INTERACTIVE;
        let capabilities = (relayable_capabilities() - unusual) & handshake.capabilities()
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let login = BackendLogin {
            user: user.into(),
            password: password.into(),
            database: db.map(Into::into),
            capabilities,
            collation: 45,
            max_packet_size: 1 << 30,
            connect_attributes: None,
        };
        let scramble = scramble_native(&handshake.nonce(), password.as_bytes()).unwrap_or([0; 20]);
        let hello = backend_hello_payload(
            &login,
            (10, 11, 0),
            AuthPlugin::MysqlNativePassword,
            &scramble,
            false,
        );
        writer.send(1, &hello).await.expect("send hello");
        loop {
            let reply = reader.read_packet(1 << 20).await.expect("login reply");
            let seq = reply.seq.wrapping_add(1);
            match reply.payload.first() {
                Some(0x00) => break,
                Some(0xff) => return Err(SqlError::from_payload(&reply.payload).unwrap()),
                Some(0xfe) => {
                    let name_end = 1 + reply.payload[1..].iter().position(|&b| b == 0).unwrap();
                    let nonce = &reply.payload[name_end + 1..];
                    let nonce = nonce.strip_suffix(&[0]).unwrap_or(nonce);
                    let answer = scramble_native(nonce, password.as_bytes()).unwrap_or([0; 20]);
                    writer.send(seq, &answer).await.expect("auth switch answer");
                }
                other => panic!("unexpected login packet {other:?}"),
            }
        }
        Ok(Self {
            reader,
            writer,
            capabilities,
            connection_id: handshake.connection_id(),
        })
    }

    /// Sends a command and reads its whole response.
    pub async fn command(&mut self, payload: &[u8]) -> Vec<Frame> {
        self.writer.send(0, payload).await.expect("send command");
        self.read_response(kind_of(payload[0])).await
    }

    pub async fn query(&mut self, sql: &str) -> Vec<Frame> {
        let mut payload = vec![codes::COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        self.command(&payload).await
    }

    /// Reads one response of the given shape.
    pub async fn read_response(&mut self, kind: ResponseKind) -> Vec<Frame> {
        let deprecate_eof = self
            .capabilities
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let mut tracker = ResponseTracker::new(kind, deprecate_eof);
        let mut frames = Vec::new();
        loop {
            let packet = self
                .reader
                .read_packet(1 << 30)
                .await
                .expect("response packet");
            let payload = packet.payload.to_vec();
            let len = payload.len().min(rwsplit::protocol::packet::MAX_FRAME - 1);
            let step = tracker
                .on_frame(&payload[..payload.len().min(PREFIX_LEN)], len)
                .expect("well-formed response");
            frames.push((packet.seq, payload));
            if step == Step::Done {
                return frames;
            }
            assert_eq!(step, Step::More, "this client does not upload files");
        }
    }
}

fn kind_of(command: u8) -> ResponseKind {
    match command {
        codes::COM_QUERY => ResponseKind::Query,
        codes::COM_STMT_PREPARE => ResponseKind::Prepare,
        codes::COM_STMT_EXECUTE => ResponseKind::Execute,
        codes::COM_STMT_FETCH => ResponseKind::Fetch,
        codes::COM_FIELD_LIST => ResponseKind::FieldList,
        _ => ResponseKind::Single,
    }
}

/// The error in a response, if it is one.
pub fn error_of(frames: &[Frame]) -> Option<SqlError> {
    frames.last().and_then(|(_, p)| SqlError::from_payload(p))
}
