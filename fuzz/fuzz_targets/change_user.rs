//! COM_CHANGE_USER as a client sends it, under any capabilities (MySQL Internals,
//! "COM_CHANGE_USER"): the parser never panics, and what it accepts, written out again,
//! reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mysql_common::constants::CapabilityFlags;
use rwsplit::protocol::change_user::ChangeUser;

/// The packet `change` was read from, minus what the parser ignores: the layout again.
fn write(change: &ChangeUser, capabilities: CapabilityFlags) -> Vec<u8> {
    let mut out = vec![0x11];
    out.extend_from_slice(change.user.as_bytes());
    out.push(0);
    if capabilities.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        out.push(change.auth_response.len() as u8);
        out.extend_from_slice(&change.auth_response);
    } else {
        out.extend_from_slice(&change.auth_response);
        out.push(0);
    }
    out.extend_from_slice(change.database.as_deref().unwrap_or_default().as_bytes());
    out.push(0);
    let more = change.collation.is_some()
        || change.auth_plugin.is_some()
        || change.connect_attributes.is_some();
    if !more {
        return out;
    }
    // A collation id above 255 reads as `None`.
    let collation = change.collation.map_or(0x100, u16::from);
    out.extend_from_slice(&collation.to_le_bytes());
    if let Some(plugin) = &change.auth_plugin {
        out.extend_from_slice(plugin.as_bytes());
        out.push(0);
    }
    if let Some(attributes) = &change.connect_attributes {
        let mut block = Vec::new();
        for (key, value) in attributes {
            lenenc_str(&mut block, key.as_bytes());
            lenenc_str(&mut block, value.as_bytes());
        }
        lenenc_str(&mut out, &block);
    }
    out
}

fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    match s.len() {
        n @ 0..=250 => out.push(n as u8),
        n @ 251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        n => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
    }
    out.extend_from_slice(s);
}

fuzz_target!(|data: &[u8]| {
    let [flags, payload @ ..] = data else {
        return;
    };
    // The three capabilities the layout depends on, in every combination.
    let mut capabilities = CapabilityFlags::CLIENT_PROTOCOL_41;
    for (bit, flag) in [
        CapabilityFlags::CLIENT_SECURE_CONNECTION,
        CapabilityFlags::CLIENT_PLUGIN_AUTH,
        CapabilityFlags::CLIENT_CONNECT_ATTRS,
    ]
    .into_iter()
    .enumerate()
    {
        if flags & (1 << bit) != 0 {
            capabilities |= flag;
        }
    }
    let Some(change) = ChangeUser::parse(payload, capabilities) else {
        return;
    };
    assert!(!change.user.contains('\0'));
    assert!(change.auth_response.len() < payload.len());
    let again = write(&change, capabilities);
    assert_eq!(ChangeUser::parse(&again, capabilities), Some(change));
});
