//! The parts of the COM_STMT_* commands the proxy reads or rewrites (MySQL Internals,
//! "COM_STMT_EXECUTE" and the commands after it): the statement id, bytes 1..5 of every one
//! of them, and an execute's parameter types. The rest of a packet is the server's business
//! and passes unchanged.

/// The statement id of a COM_STMT_* packet; `None` if the packet is too short to have one.
pub fn statement_id(payload: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(payload.get(1..5)?.try_into().ok()?))
}

/// Replaces the statement id of a packet that has one (`statement_id` said so).
pub fn set_statement_id(payload: &mut [u8], id: u32) {
    payload[1..5].copy_from_slice(&id.to_le_bytes());
}

/// Offset of COM_STMT_EXECUTE's new-params-bound flag: command, id (4), flags, iteration
/// count (4), then a NULL bitmap of (params + 7) / 8 bytes.
fn bound_flag_offset(params: u16) -> usize {
    10 + (params as usize).div_ceil(8)
}

/// The parameter types (two bytes per parameter) an execute of a statement with `params`
/// parameters binds, when its new-params-bound flag is set.
pub fn bound_types(execute: &[u8], params: u16) -> Option<&[u8]> {
    if params == 0 {
        return None;
    }
    let flag = bound_flag_offset(params);
    if execute.get(flag) != Some(&1) {
        return None;
    }
    execute.get(flag + 1..flag + 1 + 2 * params as usize)
}

/// The execute with `types` bound: for a backend that has not seen the types a client bound
/// in an earlier execute and does not send again. `None` when the packet binds types itself
/// (or is too short to say), and so can go as it is.
pub fn with_types(execute: &[u8], params: u16, types: &[u8]) -> Option<Vec<u8>> {
    let flag = bound_flag_offset(params);
    if execute.get(flag) != Some(&0) {
        return None;
    }
    let mut out = Vec::with_capacity(execute.len() + 1 + types.len());
    out.extend_from_slice(&execute[..flag]);
    out.push(1);
    out.extend_from_slice(types);
    out.extend_from_slice(&execute[flag + 1..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_ids_are_read_and_replaced_in_place() {
        let mut close = vec![0x19, 7, 0, 0, 0];
        assert_eq!(statement_id(&close), Some(7));
        set_statement_id(&mut close, 0x0102_0304);
        assert_eq!(close, [0x19, 4, 3, 2, 1]);
        assert_eq!(statement_id(&close[..4]), None);
    }

    #[test]
    fn types_go_after_the_null_bitmap() {
        // Nine parameters: a two-byte NULL bitmap, so the flag is at 12.
        let mut execute = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let types = [0x08, 0x00].repeat(9);
        let bound = with_types(&execute, 9, &types).expect("flag is 0");
        assert_eq!(bound[12], 1);
        assert_eq!(bound_types(&bound, 9), Some(&types[..]));
        execute[12] = 1;
        assert_eq!(with_types(&execute, 9, &types), None);
        assert_eq!(bound_types(&execute, 9), None, "flag set, types missing");
    }
}
