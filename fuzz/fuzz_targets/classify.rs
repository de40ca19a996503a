//! The statement classifier and the router over any bytes, as COM_QUERY and COM_STMT_PREPARE
//! carry them: no panic, the same answer every time, a routing hint in a leading comment
//! always found, and never a replica for a statement that is not a plain read, in any
//! session state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwsplit::classify::{Flags, Hint, Kind, classify};
use rwsplit::router::{Route, SessionView, route};

/// Flags that keep a read on the primary wherever the session stands (as the router's).
const PRIMARY_ONLY: Flags = Flags(
    Flags::LOCKING.0
        | Flags::INTO.0
        | Flags::SESSION_FUNCTION.0
        | Flags::USER_VAR_ASSIGN.0
        | Flags::MULTI.0,
);

fuzz_target!(|data: &[u8]| {
    let statement = classify(data);
    assert_eq!(classify(data), statement, "deterministic");
    assert_eq!(statement.flags.0 >> 15, 0, "only the defined flags");

    for bits in 0..32u8 {
        let session = SessionView {
            primary_status: if bits & 1 != 0 { 0x0003 } else { 0x0002 },
            pinned: bits & 2 != 0,
            locked: bits & 4 != 0,
            temporary_tables: bits & 8 != 0,
            user_vars_on_primary_only: bits & 16 != 0,
        };
        let (to, _) = route(&statement, &session);
        if to == Route::Replica {
            assert!(
                matches!(statement.kind, Kind::Read | Kind::Show),
                "{:?} on a replica",
                statement.kind
            );
            assert!(!statement.flags.intersects(PRIMARY_ONLY));
        }
    }

    let mut hinted = b"/* rwsplit:primary */ ".to_vec();
    hinted.extend_from_slice(data);
    let with_hint = classify(&hinted);
    assert_eq!(with_hint.hint, Some(Hint::Primary));
    assert_eq!(
        (with_hint.kind, with_hint.flags),
        (statement.kind, statement.flags),
        "a leading comment changes nothing else"
    );
});
