//! Prepared statements under proxy-owned ids (D5). A client's statement may be prepared on
//! several backends, each with its own id; the client sees one id, the proxy's, and every
//! COM_STMT_* it sends is rewritten to the id of the backend that runs it. A statement is
//! prepared on a backend the first time it runs there.

use rustc_hash::FxHashMap;

use crate::classify::Statement;
use crate::protocol::statement::bound_types;

/// MariaDB lets a client name "the statement prepared last" with this id, so that it can
/// send a prepare and its execute without waiting (MariaDB's COM_STMT_EXECUTE docs).
const LAST_PREPARED: u32 = u32::MAX;

/// A statement as prepared on one backend.
#[derive(Debug, Clone, Copy)]
pub(super) struct OnBackend {
    pub backend: u32,
    pub id: u32,
    /// Which version of the client's parameter types this backend last received.
    pub types_version: Option<u32>,
}

#[derive(Debug)]
pub(super) struct PreparedStatement {
    /// The client's COM_STMT_PREPARE payload, to prepare it on more backends.
    pub prepare: Vec<u8>,
    pub class: Statement,
    pub params: u16,
    /// The parameter types the client last bound (two bytes per parameter).
    pub types: Option<Vec<u8>>,
    /// Bumped whenever the client binds different types.
    pub types_version: u32,
    pub on: Vec<OnBackend>,
    /// The backend that ran the last execute: a cursor it opened is fetched from there.
    pub executed_on: Option<u32>,
    /// Long data was sent to the primary for the next execute.
    pub long_data: bool,
}

impl PreparedStatement {
    pub fn on(&self, backend: u32) -> Option<OnBackend> {
        self.on.iter().copied().find(|on| on.backend == backend)
    }

    pub fn set_on(&mut self, entry: OnBackend) {
        match self.on.iter_mut().find(|on| on.backend == entry.backend) {
            Some(existing) => *existing = entry,
            None => self.on.push(entry),
        }
    }

    /// Whether an execute for `backend` must carry the parameter types the client bound
    /// earlier (the backend has not received them).
    pub fn needs_types(&self, backend: &OnBackend) -> bool {
        self.types.is_some() && backend.types_version != Some(self.types_version)
    }

    /// Learns the types a COM_STMT_EXECUTE binds, if it binds any.
    pub fn learn_types(&mut self, execute: &[u8]) -> bool {
        let Some(types) = bound_types(execute, self.params) else {
            return false;
        };
        if self.types.as_deref() != Some(types) {
            self.types = Some(types.to_vec());
            self.types_version = self.types_version.wrapping_add(1);
        }
        true
    }

    /// The execute with the types the client bound earlier put in, for a backend that has
    /// not received them; `None` when the packet can go as it is.
    pub fn with_types(&self, execute: &[u8]) -> Option<Vec<u8>> {
        crate::protocol::statement::with_types(execute, self.params, self.types.as_deref()?)
    }
}

/// The session's statements.
#[derive(Debug, Default)]
pub(super) struct Statements {
    /// Keyed by ids the proxy hands out in sequence, so no client can pick keys that
    /// collide, and a multiplicative hash is enough. The default SipHash cost about 110
    /// instructions on each of the five lookups an execute makes, some 6% of the proxy's
    /// work per prepared point select (callgrind, `benches/callgrind.sh`).
    by_id: FxHashMap<u32, PreparedStatement>,
    next_id: u32,
    last: Option<u32>,
}

impl Statements {
    /// Reserves the id the client will know the next statement by. Until the prepare
    /// succeeds there is no "last prepared" statement: an execute naming it must fail, as on
    /// the server, rather than run the one before.
    pub fn next_id(&mut self) -> u32 {
        self.last = None;
        self.next_id = match self.next_id.wrapping_add(1) {
            0 | LAST_PREPARED => 1,
            id => id,
        };
        self.next_id
    }

    pub fn insert(&mut self, id: u32, statement: PreparedStatement) {
        self.by_id.insert(id, statement);
        self.last = Some(id);
    }

    /// The client's id, with MariaDB's "last prepared" resolved.
    pub fn resolve(&self, id: u32) -> u32 {
        match (id, self.last) {
            (LAST_PREPARED, Some(last)) => last,
            _ => id,
        }
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut PreparedStatement> {
        self.by_id.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<PreparedStatement> {
        if self.last == Some(id) {
            self.last = None;
        }
        self.by_id.remove(&id)
    }

    /// A backend connection closed: its statement ids are gone with it.
    pub fn forget_backend(&mut self, backend: u32) {
        for statement in self.by_id.values_mut() {
            statement.on.retain(|on| on.backend != backend);
            if statement.executed_on == Some(backend) {
                statement.executed_on = None;
            }
        }
    }

    pub fn clear(&mut self) {
        self.by_id.clear();
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Flags, Kind};

    fn statement(params: u16) -> PreparedStatement {
        PreparedStatement {
            prepare: b"\x16SELECT ?".to_vec(),
            class: Statement {
                kind: Kind::Read,
                flags: Flags::default(),
                hint: None,
            },
            params,
            types: None,
            types_version: 0,
            on: Vec::new(),
            executed_on: None,
            long_data: false,
        }
    }

    /// COM_STMT_EXECUTE for statement 7 with two parameters, types bound or not.
    fn execute(bound: bool) -> Vec<u8> {
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0b00];
        if bound {
            p.extend_from_slice(&[1, 0x08, 0x00, 0xfe, 0x00]);
        } else {
            p.push(0);
        }
        p.extend_from_slice(&[42, 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        p
    }

    #[test]
    fn types_are_learned_once_and_put_back_for_a_new_backend() {
        let mut s = statement(2);
        assert!(s.learn_types(&execute(true)));
        assert_eq!(s.types.as_deref(), Some(&[0x08, 0x00, 0xfe, 0x00][..]));
        assert_eq!(s.types_version, 1);
        assert!(s.learn_types(&execute(true)));
        assert_eq!(s.types_version, 1, "the same types are no new version");
        assert!(!s.learn_types(&execute(false)));

        let rebuilt = s.with_types(&execute(false)).expect("types inserted");
        assert_eq!(rebuilt, execute(true));
        assert!(s.with_types(&execute(true)).is_none());
    }

    #[test]
    fn statements_without_parameters_bind_nothing() {
        let mut s = statement(0);
        assert!(!s.learn_types(&[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0]));
        assert!(s.with_types(&[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0]).is_none());
    }

    #[test]
    fn short_packets_are_left_to_the_server() {
        let mut s = statement(9);
        assert!(!s.learn_types(&[0x17, 1, 0]));
        s.types = Some(vec![0; 18]);
        assert!(s.with_types(&[0x17, 1, 0]).is_none());
    }

    #[test]
    fn ids_skip_zero_and_the_last_prepared_alias() {
        let mut statements = Statements::default();
        assert_eq!(statements.next_id(), 1);
        statements.next_id = u32::MAX - 1;
        assert_eq!(statements.next_id(), 1);
        statements.insert(5, statement(0));
        assert_eq!(statements.resolve(LAST_PREPARED), 5);
        assert_eq!(statements.resolve(3), 3);
        statements.next_id();
        assert_eq!(
            statements.resolve(LAST_PREPARED),
            LAST_PREPARED,
            "a failed prepare"
        );
        statements.insert(6, statement(0));
        statements.remove(6);
        assert_eq!(statements.resolve(LAST_PREPARED), LAST_PREPARED, "closed");
    }

    #[test]
    fn a_closed_backend_takes_its_ids_along() {
        let mut statements = Statements::default();
        let mut s = statement(0);
        s.set_on(OnBackend {
            backend: 0,
            id: 1,
            types_version: None,
        });
        s.set_on(OnBackend {
            backend: 2,
            id: 9,
            types_version: Some(0),
        });
        s.executed_on = Some(2);
        statements.insert(1, s);
        statements.forget_backend(2);
        let s = statements.get_mut(1).unwrap();
        assert!(s.on(2).is_none() && s.on(0).is_some());
        assert_eq!(s.executed_on, None);
    }
}
