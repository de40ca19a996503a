//! A server's side of a login as the proxy reads it: the greeting (or the error sent in its
//! place), then auth switch requests, caching_sha2_password's messages and its public key,
//! up to the OK (MySQL Internals, "Connection Phase"). A server that is not MySQL, or a broken
//! one, must give a `BackendError`, never a panic.
#![no_main]

mod common;

use common::{Trickle, ready};
use libfuzzer_sys::fuzz_target;
use mysql_common::packets::AuthPlugin;
use rwsplit::auth::{backend_auth_data, sha2_rsa_encrypt};
use rwsplit::backend::{LoginReply, parse_login_reply, read_greeting};
use rwsplit::protocol::handshake::{ServerIdentity, relayable_capabilities, server_version};
use rwsplit::protocol::packet::PacketReader;

const PASSWORD: &str = "secret";
/// As `backend`'s own bound on handshake packets.
const MAX_PACKET: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let [chunk, wire @ ..] = data else {
        return;
    };
    let mut stream = Trickle::new(wire, *chunk as usize);
    let (_, greeting) = match ready(read_greeting(&mut stream)) {
        Ok(greeting) => greeting,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let identity = ServerIdentity::from_greeting(&greeting);
    assert!(relayable_capabilities().contains(identity.capabilities));
    let _ = server_version(greeting.server_version_ref());
    let mut nonce = greeting.nonce();
    let mut plugin = greeting
        .auth_plugin()
        .map(AuthPlugin::into_owned)
        .unwrap_or(AuthPlugin::MysqlNativePassword);
    if backend_auth_data(&plugin, &nonce, PASSWORD).is_none() {
        plugin = AuthPlugin::MysqlNativePassword;
        assert!(backend_auth_data(&plugin, &nonce, PASSWORD).is_some());
    }
    let mut reader = PacketReader::new(stream);
    loop {
        let Ok(packet) = ready(reader.read_packet(MAX_PACKET)) else {
            return;
        };
        match parse_login_reply(&packet.payload, &plugin) {
            Ok(LoginReply::Ok) => return,
            Ok(LoginReply::Switch {
                plugin: switched,
                nonce: switched_nonce,
            }) => {
                plugin = switched;
                nonce = switched_nonce;
                let _ = backend_auth_data(&plugin, &nonce, PASSWORD);
            }
            Ok(LoginReply::FastAuthOk) => {}
            Ok(LoginReply::FullAuth) => {
                let Ok(key) = ready(reader.read_packet(MAX_PACKET)) else {
                    return;
                };
                let pem = key.payload.get(1..).unwrap_or_default();
                let _ = sha2_rsa_encrypt(PASSWORD, &nonce, pem);
            }
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    }
});
