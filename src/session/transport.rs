//! The start of the connection phase, before anything is buffered: the greeting, and the
//! client's first answer, which is either its handshake response or an SSL request after
//! which the connection continues in TLS (MySQL Internals, "Connection Phase: SSL").

use mysql_common::constants::CapabilityFlags;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::net;
use crate::protocol::handshake::{greeting_payload, is_ssl_request};
use crate::protocol::packet::{Packet, PacketError, encode_packet, read_packet_exact};
use crate::server::Shared;

use super::login::MAX_HANDSHAKE_PACKET;

/// What the client answered the greeting with.
pub(super) enum FirstAnswer {
    /// It switched to TLS; its handshake response comes next, with sequence id 2.
    Tls,
    /// Its handshake response in plaintext, or the reason it could not be read.
    Plain(Result<Packet, PacketError>),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum TransportError {
    #[error("connection failed before the login: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// Greets the client (offering TLS when it is configured) and reads its answer, switching
/// to TLS when asked.
pub(super) async fn open(
    mut stream: TcpStream,
    shared: &Shared,
    connection_id: u32,
    scramble: &[u8; 20],
) -> Result<(net::Reader, net::Writer, FirstAnswer), TransportError> {
    let config = shared.config();
    let mut identity = shared.identity().await;
    if config.tls.is_some() {
        identity.capabilities |= CapabilityFlags::CLIENT_SSL;
    }
    let greeting = greeting_payload(
        &identity,
        connection_id,
        scramble,
        config.auth_plugin.name(),
    );
    let mut framed = Vec::with_capacity(greeting.len() + 4);
    encode_packet(&mut framed, 0, &greeting);
    stream.write_all(&framed).await?;

    let answer = read_packet_exact(&mut stream, MAX_HANDSHAKE_PACKET).await;
    if let (Ok(packet), Some(tls)) = (&answer, &config.tls)
        && packet.seq == 1
        && is_ssl_request(&packet.payload)
    {
        let stream = tls
            .acceptor
            .accept(stream)
            .await
            .map_err(TransportError::Tls)?;
        let (read, write) = net::tls(stream);
        return Ok((read, write, FirstAnswer::Tls));
    }
    let (read, write) = net::plain(stream);
    Ok((read, write, FirstAnswer::Plain(answer)))
}
