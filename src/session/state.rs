//! What the session set up on the primary that routing depends on: the transaction state
//! from the primary's status flags, the history of session-changing commands that replica
//! connections replay, and the things only the primary has (temporary tables, locks, user
//! variables assigned inside queries).

use tracing::info;

use crate::classify::{Flags, Kind, Statement, XaKind};
use crate::protocol::response::ResponseKind;
use crate::router::SessionView;

/// The most bytes of session commands a session keeps for replay.
const MAX_HISTORY_BYTES: usize = 1 << 20;

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
    history_bytes: usize,
    /// The last `USE` / COM_INIT_DB: the server keeps the database across
    /// COM_RESET_CONNECTION, so replicas must get it again after one.
    schema: Option<HistoryEntry>,
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
    /// Changes the default database (remembered, and kept across a reset).
    ChangeSchema,
    /// Sets user variables to values a replica would compute differently (`UUID()`,
    /// `NOW()`, a subquery): not replayed, reads using user variables go to the primary.
    UserVarsOnPrimary,
    /// Changes the session in a way replicas cannot mirror: stay on the primary.
    Pin(&'static str),
}

impl SessionState {
    pub fn new(primary_status: u16, history_limit: usize) -> Self {
        Self {
            primary_status,
            history: Vec::new(),
            history_limit,
            history_bytes: 0,
            schema: None,
            pinned: false,
            tables_locked: false,
            xa_active: false,
            temporary_tables: false,
            user_vars_on_primary_only: false,
            previous: None,
        }
    }

    /// Back to a fresh session (COM_RESET_CONNECTION), which keeps its database.
    pub fn reset(&mut self, primary_status: u16) {
        let schema = self.schema.take();
        *self = Self::new(primary_status, self.history_limit);
        if let Some(entry) = schema {
            self.apply(SessionEffect::ChangeSchema, &entry.payload, entry.kind);
        }
    }

    /// A new login (COM_CHANGE_USER) names its own database.
    pub fn restart(&mut self, primary_status: u16) {
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

    /// What the primary's connection holds that a new connection would not have; `None`
    /// when the session can continue on a new one (its history replayed).
    /// A transaction (or table locks, an XA transaction) is open: ending the session now
    /// would roll back what the client has not committed yet.
    pub fn holds_transaction(&self) -> bool {
        self.view().in_transaction() || self.tables_locked || self.xa_active
    }

    pub fn primary_only_state(&self) -> Option<&'static str> {
        let view = self.view();
        if view.in_transaction() {
            Some("an open transaction")
        } else if self.tables_locked || self.xa_active {
            Some("table locks or an XA transaction")
        } else if self.temporary_tables {
            Some("temporary tables")
        } else if self.user_vars_on_primary_only {
            Some("user variables only the primary knows")
        } else if self.pinned {
            Some("session state that cannot be replayed")
        } else {
            None
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
            // Procedures and SQL-level prepared statements run SQL the scanner cannot see:
            // OUT parameters, variables and temporary tables they create are the primary's.
            Kind::Call | Kind::SqlPrepared => {
                self.user_vars_on_primary_only = true;
                self.temporary_tables = true;
            }
            Kind::Other => self.user_vars_on_primary_only = true,
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
            SessionEffect::UserVarsOnPrimary => self.user_vars_on_primary_only = true,
            SessionEffect::Remember | SessionEffect::ChangeSchema if self.pinned => {}
            SessionEffect::Remember | SessionEffect::ChangeSchema => {
                let entry = HistoryEntry {
                    payload: payload.to_vec(),
                    kind,
                };
                if effect == SessionEffect::ChangeSchema {
                    self.schema = Some(HistoryEntry {
                        payload: entry.payload.clone(),
                        kind,
                    });
                }
                // Drivers repeat the same statement (`SET NAMES` per checkout): once in a
                // row is enough. (Statements with user variables are not idempotent.)
                if self
                    .history
                    .last()
                    .is_some_and(|last| last.payload == payload)
                    && !mentions_user_variable(payload)
                {
                    return;
                }
                if self.history.len() >= self.history_limit
                    || self.history_bytes + payload.len() > MAX_HISTORY_BYTES
                {
                    self.pin("the session history is full");
                    return;
                }
                self.history_bytes += payload.len();
                self.history.push(entry);
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

/// What a text-protocol statement (`sql`, the text after the command byte) does to the
/// session.
pub(super) fn query_effect(statement: &Statement, sql: &[u8]) -> SessionEffect {
    let flags = statement.flags;
    if flags.contains(Flags::MULTI) {
        // What the statements after the first set up cannot be told apart.
        return SessionEffect::Pin("a multi-statement query");
    }
    match statement.kind {
        Kind::Use => SessionEffect::ChangeSchema,
        Kind::Set => set_effect(flags, sql),
        _ => SessionEffect::None,
    }
}

fn set_effect(flags: Flags, sql: &[u8]) -> SessionEffect {
    // Reads never go to a replica while autocommit is off, so replicas need not follow it
    // (drivers toggle it around every transaction, which would fill the history).
    let replayed = Flags(Flags::SET_SESSION_VAR.0 | Flags::SET_NAMES.0 | Flags::SET_USER_VAR.0);
    let only_autocommit =
        flags.contains(Flags::SET_AUTOCOMMIT) && !outside_quotes(sql).any(|b| b == b',');
    if !flags.intersects(replayed) || only_autocommit {
        // SET GLOBAL, SET TRANSACTION (the next one, which runs on the primary), autocommit.
        return SessionEffect::None;
    }
    if flags.contains(Flags::SET_GLOBAL) {
        return SessionEffect::Pin("a SET of global and session variables together");
    }
    if flags.contains(Flags::SESSION_FUNCTION) {
        // `SET @id = LAST_INSERT_ID()` would give another value on a replica.
        return SessionEffect::Pin("a SET whose value only the primary knows");
    }
    if flags.contains(Flags::SET_USER_VAR) && calls_something(sql) {
        // `SET @batch = UUID()` would give each replica its own value.
        return if flags.intersects(Flags(Flags::SET_SESSION_VAR.0 | Flags::SET_NAMES.0)) {
            SessionEffect::Pin("a SET of computed user variables and session variables")
        } else {
            SessionEffect::UserVarsOnPrimary
        };
    }
    SessionEffect::Remember
}

/// Whether SQL text has a `(` outside quotes: a function call or a subquery.
fn calls_something(sql: &[u8]) -> bool {
    outside_quotes(sql).any(|b| b == b'(')
}

fn mentions_user_variable(payload: &[u8]) -> bool {
    let mut bytes = outside_quotes(payload).peekable();
    while let Some(b) = bytes.next() {
        if b == b'@' && bytes.peek() != Some(&b'@') {
            return true;
        }
        if b == b'@' {
            bytes.next();
        }
    }
    false
}

/// The bytes of SQL text that are not inside '...', "..." or `...`.
fn outside_quotes(sql: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut quote = None;
    let mut escaped = false;
    sql.iter().copied().filter(move |&b| match quote {
        Some(_) if escaped => {
            escaped = false;
            false
        }
        Some(q) => {
            if b == b'\\' && q != b'`' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
            false
        }
        None if matches!(b, b'\'' | b'"' | b'`') => {
            quote = Some(b);
            false
        }
        None => true,
    })
}

/// What an execute of a prepared statement does to the session: prepared session commands
/// are not replayed (their parameters are in the execute packet), so they pin.
pub(super) fn execute_effect(statement: &Statement) -> SessionEffect {
    match query_effect(statement, b"") {
        SessionEffect::Remember | SessionEffect::ChangeSchema => {
            SessionEffect::Pin("a prepared session command")
        }
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

    fn remember(state: &mut SessionState, statement: &Statement, sql: &[u8]) {
        let mut payload = vec![0x03];
        payload.extend_from_slice(sql);
        state.apply(query_effect(statement, sql), &payload, ResponseKind::Query);
    }

    #[test]
    fn session_commands_are_remembered_once_in_a_row() {
        let mut state = SessionState::new(2, 3);
        let names = stmt(Kind::Set, Flags::SET_NAMES);
        let var = stmt(Kind::Set, Flags::SET_USER_VAR | Flags::USER_VAR);
        remember(&mut state, &names, b"SET NAMES utf8mb4");
        remember(&mut state, &names, b"SET NAMES utf8mb4");
        assert_eq!(state.history.len(), 1);
        remember(&mut state, &var, b"SET @n = @n + 1");
        remember(&mut state, &var, b"SET @n = @n + 1");
        assert_eq!(state.history.len(), 3, "not idempotent: both kept");
        assert!(!state.pinned);
        remember(&mut state, &var, b"SET @c = 1");
        assert!(state.pinned, "past the limit the session is pinned");
        assert!(state.history.is_empty());
    }

    #[test]
    fn autocommit_and_global_settings_are_not_replayed() {
        let autocommit = stmt(Kind::Set, Flags::SET_AUTOCOMMIT | Flags::SET_SESSION_VAR);
        assert_eq!(
            query_effect(&autocommit, b"SET autocommit=0"),
            SessionEffect::None
        );
        let global = stmt(Kind::Set, Flags::SET_GLOBAL);
        assert_eq!(
            query_effect(&global, b"SET GLOBAL x=1"),
            SessionEffect::None
        );
        let next_trx = stmt(Kind::Set, Flags::SET_NEXT_TRANSACTION);
        assert_eq!(
            query_effect(&next_trx, b"SET TRANSACTION READ ONLY"),
            SessionEffect::None
        );
        let mixed = stmt(Kind::Set, Flags::SET_GLOBAL | Flags::SET_USER_VAR);
        assert!(matches!(
            query_effect(&mixed, b"SET @a=1, GLOBAL x=2"),
            SessionEffect::Pin(_)
        ));
    }

    #[test]
    fn what_replicas_cannot_mirror_pins_or_stays_on_the_primary() {
        let last_id = stmt(Kind::Set, Flags::SET_USER_VAR | Flags::SESSION_FUNCTION);
        assert!(matches!(
            query_effect(&last_id, b"SET @id = LAST_INSERT_ID()"),
            SessionEffect::Pin(_)
        ));
        let computed = stmt(Kind::Set, Flags::SET_USER_VAR | Flags::USER_VAR);
        assert_eq!(
            query_effect(&computed, b"SET @b = UUID()"),
            SessionEffect::UserVarsOnPrimary
        );
        assert_eq!(
            query_effect(&computed, b"SET @b = 'UUID()'"),
            SessionEffect::Remember
        );
        let multi = stmt(Kind::Read, Flags::MULTI);
        assert!(matches!(
            query_effect(&multi, b"SELECT 1; SELECT 2"),
            SessionEffect::Pin(_)
        ));
        let names = stmt(Kind::Set, Flags::SET_NAMES);
        assert!(matches!(execute_effect(&names), SessionEffect::Pin(_)));
        let use_db = stmt(Kind::Use, Flags::default());
        assert_eq!(
            query_effect(&use_db, b"USE app"),
            SessionEffect::ChangeSchema
        );
    }

    #[test]
    fn a_reset_keeps_the_database() {
        let mut state = SessionState::new(2, 10);
        remember(&mut state, &stmt(Kind::Use, Flags::default()), b"USE other");
        remember(
            &mut state,
            &stmt(Kind::Set, Flags::SET_NAMES),
            b"SET NAMES latin1",
        );
        state.reset(2);
        assert_eq!(state.history.len(), 1);
        assert_eq!(state.history[0].payload, b"\x03USE other");
        state.restart(2);
        assert!(state.history.is_empty());
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
