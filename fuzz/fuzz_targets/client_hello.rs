//! A client's first packet: the handshake response, or an SSL request (MySQL Internals,
//! "Protocol::HandshakeResponse41", "Protocol::SSLRequest"). Whatever the client sends, the
//! parser answers without panicking, and what it accepts is consistent with the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mysql_common::constants::CapabilityFlags;
use rwsplit::protocol::handshake::{HelloError, parse_client_hello};

fuzz_target!(|data: &[u8]| {
    match parse_client_hello(data) {
        Ok(hello) => {
            assert!(
                hello
                    .capabilities
                    .contains(CapabilityFlags::CLIENT_PROTOCOL_41)
            );
            let max_packet = u32::from_le_bytes(data[4..8].try_into().unwrap());
            assert_eq!(hello.max_packet_size, max_packet);
            // Everything comes from the packet: nothing can be longer than it.
            assert!(hello.auth_response.len() < data.len());
            assert!(!hello.user.contains('\0'), "the user name ends at a NUL");
            assert!(hello.database.as_ref().is_none_or(|db| !db.is_empty()));
        }
        Err(HelloError::TlsRequested) => {
            assert_eq!(data.len(), 32, "an SSL request is exactly 32 bytes");
            assert!(data[1] & 0x08 != 0, "CLIENT_SSL is 0x800");
        }
        Err(HelloError::OldProtocol) => {
            assert!(data[1] & 0x02 == 0, "CLIENT_PROTOCOL_41 is 0x200");
        }
        Err(e @ HelloError::Malformed(_)) => {
            let _ = e.to_string();
        }
    }
});
