//! The COM_STMT_* packets a client sends, as the proxy reads and rewrites them: the
//! statement id (replaced by each backend's), and an execute's parameter types (learned, and
//! put back for a backend that has not seen them). Input: the statement's parameter count
//! (two bytes), then the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwsplit::protocol::statement::{bound_types, set_statement_id, statement_id, with_types};

fuzz_target!(|data: &[u8]| {
    let [lo, hi, packet @ ..] = data else {
        return;
    };
    // Up to 1023 parameters: enough for every bitmap width, and packets libFuzzer can reach.
    let params = u16::from_le_bytes([*lo, *hi]) & 0x3ff;

    let id = statement_id(packet);
    assert_eq!(id.is_some(), packet.len() >= 5);
    if id.is_some() {
        let mut rewritten = packet.to_vec();
        set_statement_id(&mut rewritten, 0xdead_beef);
        assert_eq!(statement_id(&rewritten), Some(0xdead_beef));
        assert_eq!(rewritten[0], packet[0]);
        assert_eq!(rewritten[5..], packet[5..]);
    }

    let flag = 10 + (params as usize).div_ceil(8);
    if let Some(types) = bound_types(packet, params) {
        assert!(params > 0 && packet[flag] == 1);
        assert_eq!(types.len(), 2 * params as usize);
    }

    // The types a client bound in an earlier execute: any bytes, one pair per parameter.
    let types: Vec<u8> = (0..2 * params)
        .map(|i| (i as u8).wrapping_mul(31))
        .collect();
    match with_types(packet, params, &types) {
        Some(bound) => {
            assert_eq!(
                packet[flag], 0,
                "only an execute that binds nothing is rebuilt"
            );
            assert_eq!(bound.len(), packet.len() + types.len());
            assert_eq!(bound[..flag], packet[..flag]);
            assert_eq!(bound[flag], 1);
            assert_eq!(bound[flag + 1 + types.len()..], packet[flag + 1..]);
            assert_eq!(statement_id(&bound), statement_id(packet));
            if params > 0 {
                assert_eq!(bound_types(&bound, params), Some(&types[..]));
            }
        }
        None => assert_ne!(packet.get(flag), Some(&0)),
    }
});
