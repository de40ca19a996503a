//! What the session set up on the primary that routing depends on: the transaction state
//! from the primary's status flags, the history of session-changing commands that replica
//! connections replay, and the things only the primary has (temporary tables, locks, user
//! variables assigned inside queries).

use tracing::info;

use crate::classify::{Flags, Kind, Statement, XaKind};
use crate::protocol::response::ResponseKind;
use crate::router::SessionView;

/// A command that changed the session, as the client sent it.
pub(super) struct HistoryEntry {
    /// The command packet's payload (command byte included).
    pub payload: Vec<u8>,
    pub kind: ResponseKind,
}

pub(super) struct SessionState {
    /// Status flags of the primary's last OK/EOF.
    pub primary_status: u16,
    /// Session commands in the order the primary ran them. Replica connections replay the
    /// ones they have not seen before they serve a read.
    pub history: Vec<HistoryEntry>,
    history_limit: usize,
    /// The session stays on the primary (see `pin`).
    pub pinned: bool,
    tables_locked: bool,
    xa_active: bool,
    temporary_tables: bool,
    user_vars_on_primary_only: bool,
    /// The backend that ran the previous command.
    pub previous: Option<u32>,
}

/// What a command did to the session, decided before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionEffect {
    None,
    /// Replayable on replicas: remember it.
    Remember,
    /// Changes the session in a way replicas cannot mirror: stay on the primary.
    Pin(&'static str),
}

impl SessionState {
    pub fn new(primary_status: u16, history_limit: usize) -> Self {
        Self {
            primary_status,
            history: Vec::new(),
            history_limit,
            pinned: false,
            tables_locked: false,
            xa_active: false,
            temporary_tables: false,
            user_vars_on_primary_only: false,
            previous: None,
        }
    }

    /// Back to a fresh session (COM_RESET_CONNECTION, COM_CHANGE_USER).
    pub fn reset(&mut self, primary_status: u16) {
        *self = Self::new(primary_status, self.history_limit);
    }

    pub fn view(&self) -> SessionView {
        SessionView {
            primary_status: self.primary_status,
            pinned: self.pinned,
            locked: self.tables_locked || self.xa_active,
            temporary_tables: self.temporary_tables,
            user_vars_on_primary_only: self.user_vars_on_primary_only,
        }
    }

    /// Learns from a statement the primary ran successfully.
    pub fn ran_on_primary(&mut self, statement: &Statement) {
        let flags = statement.flags;
        if flags.contains(Flags::TEMPORARY) {
            self.temporary_tables = true;
        }
        if flags.contains(Flags::USER_VAR_ASSIGN) {
            self.user_vars_on_primary_only = true;
        }
        match statement.kind {
            Kind::Lock => self.tables_locked = true,
            Kind::Unlock => self.tables_locked = false,
            Kind::Xa(XaKind::Start) => self.xa_active = true,
            Kind::Xa(XaKind::Finish) => self.xa_active = false,
            _ => {}
        }
    }

    /// Remembers a session command for replay, or pins the session when it
    /// cannot be replayed or the history is full.
    pub fn apply(&mut self, effect: SessionEffect, payload: &[u8], kind: ResponseKind) {
        match effect {
            SessionEffect::None => {}
            SessionEffect::Pin(why) => self.pin(why),
            SessionEffect::Remember if self.pinned => {}
            SessionEffect::Remember => {
                // Drivers repeat the same statement (`SET autocommit=1` per checkout): once
                // in a row is enough.
                if self
                    .history
                    .last()
                    .is_some_and(|last| last.payload == payload)
                {
                    return;
                }
                if self.history.len() >= self.history_limit {
                    self.pin("the session history is full");
                    return;
                }
                self.history.push(HistoryEntry {
                    payload: payload.to_vec(),
                    kind,
                });
            }
        }
    }

    fn pin(&mut self, why: &'static str) {
        if !self.pinned {
            info!(reason = why, "session pinned to the primary");
            self.pinned = true;
            self.history = Vec::new();
        }
    }
}

/// What a text-protocol statement does to the session.
pub(super) fn query_effect(statement: &Statement) -> SessionEffect {
    let flags = statement.flags;
    if flags.contains(Flags::MULTI) {
        // Only the first statement is classified; what the others set up is unknown.
        return SessionEffect::Pin("a multi-statement query");
    }
    match statement.kind {
        Kind::Use => SessionEffect::Remember,
        Kind::Set => {
            let session = Flags(
                Flags::SET_SESSION_VAR.0
                    | Flags::SET_NAMES.0
                    | Flags::SET_AUTOCOMMIT.0
                    | Flags::SET_USER_VAR.0,
            );
            if !flags.intersects(session) {
                // SET GLOBAL, SET TRANSACTION (the next one, which runs on the primary).
                SessionEffect::None
            } else if flags.contains(Flags::SESSION_FUNCTION) {
                // `SET @id = LAST_INSERT_ID()` would give another value on a replica.
                SessionEffect::Pin("a SET whose value only the primary knows")
            } else {
                SessionEffect::Remember
            }
        }
        _ => SessionEffect::None,
    }
}

/// What an execute of a prepared statement does to the session: prepared session commands
/// are not replayed (their parameters are in the execute packet), so they pin.
pub(super) fn execute_effect(statement: &Statement) -> SessionEffect {
    match query_effect(statement) {
        SessionEffect::Remember => SessionEffect::Pin("a prepared session command"),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Hint;

    fn stmt(kind: Kind, flags: Flags) -> Statement {
        Statement {
            kind,
            flags,
            hint: None::<Hint>,
        }
    }

    #[test]
    fn session_commands_are_remembered_once_in_a_row() {
        let mut state = SessionState::new(2, 3);
        let set = stmt(Kind::Set, Flags::SET_NAMES);
        for sql in [
            &b"\x03SET NAMES utf8mb4"[..],
            b"\x03SET NAMES utf8mb4",
            b"\x03SET @a=1",
        ] {
            state.apply(query_effect(&set), sql, ResponseKind::Query);
        }
        assert_eq!(state.history.len(), 2);
        assert!(!state.pinned);
        state.apply(query_effect(&set), b"\x03SET @b=1", ResponseKind::Query);
        state.apply(query_effect(&set), b"\x03SET @c=1", ResponseKind::Query);
        assert!(state.pinned, "past the limit the session is pinned");
        assert!(state.history.is_empty());
    }

    #[test]
    fn what_replicas_cannot_mirror_pins() {
        let last_id = stmt(Kind::Set, Flags::SET_USER_VAR | Flags::SESSION_FUNCTION);
        assert!(matches!(query_effect(&last_id), SessionEffect::Pin(_)));
        let multi = stmt(Kind::Read, Flags::MULTI);
        assert!(matches!(query_effect(&multi), SessionEffect::Pin(_)));
        let global = stmt(Kind::Set, Flags::SET_GLOBAL);
        assert_eq!(query_effect(&global), SessionEffect::None);
        let next_trx = stmt(Kind::Set, Flags::SET_NEXT_TRANSACTION);
        assert_eq!(query_effect(&next_trx), SessionEffect::None);
        let names = stmt(Kind::Set, Flags::SET_NAMES);
        assert!(matches!(execute_effect(&names), SessionEffect::Pin(_)));
        assert_eq!(
            query_effect(&stmt(Kind::Use, Flags::default())),
            SessionEffect::Remember
        );
    }

    #[test]
    fn locks_and_temporary_tables_keep_reads_on_the_primary() {
        let mut state = SessionState::new(2, 10);
        state.ran_on_primary(&stmt(Kind::Lock, Flags::default()));
        assert!(state.view().locked);
        state.ran_on_primary(&stmt(Kind::Unlock, Flags::default()));
        assert!(!state.view().locked);
        state.ran_on_primary(&stmt(Kind::Xa(XaKind::Start), Flags::default()));
        state.ran_on_primary(&stmt(Kind::Xa(XaKind::End), Flags::default()));
        assert!(state.view().locked);
        state.ran_on_primary(&stmt(Kind::Xa(XaKind::Finish), Flags::default()));
        assert!(!state.view().locked);
        state.ran_on_primary(&stmt(Kind::Ddl, Flags::TEMPORARY));
        assert!(state.view().temporary_tables);
        state.reset(2);
        assert!(!state.view().temporary_tables);
    }
}
