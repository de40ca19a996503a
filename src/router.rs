//! Where a statement goes, from what the classifier found and what the session is in. Pure
//! decisions, no I/O: the rules of the routing design, in order, and "when in doubt, the
//! primary" — a read on the primary is slower at worst, a write on a replica is an error.

use crate::classify::{Flags, Hint, Kind, Statement};
use crate::protocol::codes::{SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS};

/// Where to send a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Primary,
    /// Any eligible replica (the balancer picks), or the primary when none is.
    Replica,
    /// The backend that ran the previous statement (`SHOW WARNINGS` and friends).
    Previous,
}

/// Why a statement goes where it goes; for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Hint,
    Transaction,
    Pinned,
    /// Locked tables or an XA transaction.
    SessionLock,
    Write,
    /// A read that must see this session's own doing: locking, `INTO`, session-bound
    /// functions, temporary tables, user variables only the primary has.
    SessionBound,
    SessionCommand,
    Diagnostics,
    Read,
}

/// What routing needs to know about the session.
#[derive(Debug, Clone, Copy)]
pub struct SessionView {
    /// Status flags of the primary's last OK/EOF.
    pub primary_status: u16,
    /// Everything stays on the primary (history too long, state replicas cannot have).
    pub pinned: bool,
    /// `LOCK TABLES` or an XA transaction is open.
    pub locked: bool,
    /// The session created a temporary table (only the primary has it).
    pub temporary_tables: bool,
    /// A user variable was assigned where replicas cannot learn it (`SELECT @x := ...`).
    pub user_vars_on_primary_only: bool,
}

impl SessionView {
    /// Inside a transaction, explicit or implicit (autocommit off).
    pub fn in_transaction(&self) -> bool {
        self.primary_status & SERVER_STATUS_IN_TRANS != 0
            || self.primary_status & SERVER_STATUS_AUTOCOMMIT == 0
    }
}

/// Flags that make a read belong on the primary wherever the session stands.
const PRIMARY_ONLY_FLAGS: Flags = Flags(
    Flags::LOCKING.0
        | Flags::INTO.0
        | Flags::SESSION_FUNCTION.0
        | Flags::USER_VAR_ASSIGN.0
        | Flags::MULTI.0,
);

pub fn route(statement: &Statement, session: &SessionView) -> (Route, Reason) {
    let is_read = matches!(statement.kind, Kind::Read | Kind::Show);
    match statement.hint {
        Some(Hint::Primary) => return (Route::Primary, Reason::Hint),
        // A replica hint can only move a read: a write there would fail as read-only.
        Some(Hint::Replica) if is_read && !statement.flags.intersects(PRIMARY_ONLY_FLAGS) => {
            return (Route::Replica, Reason::Hint);
        }
        _ => {}
    }
    if session.in_transaction() {
        return (Route::Primary, Reason::Transaction);
    }
    if session.pinned {
        return (Route::Primary, Reason::Pinned);
    }
    if session.locked {
        return (Route::Primary, Reason::SessionLock);
    }
    match statement.kind {
        Kind::Read | Kind::Show => {
            // `SHOW COLUMNS` of a temporary table needs it as much as a `SELECT` does.
            let bound = statement.flags.intersects(PRIMARY_ONLY_FLAGS)
                || session.temporary_tables
                || (session.user_vars_on_primary_only && statement.flags.contains(Flags::USER_VAR));
            if bound {
                (Route::Primary, Reason::SessionBound)
            } else {
                (Route::Replica, Reason::Read)
            }
        }
        // `SHOW WARNINGS; DELETE ...` must not follow a read to its replica.
        Kind::Diagnostics if statement.flags.intersects(PRIMARY_ONLY_FLAGS) => {
            (Route::Primary, Reason::SessionBound)
        }
        Kind::Diagnostics => (Route::Previous, Reason::Diagnostics),
        Kind::Set | Kind::Use => (Route::Primary, Reason::SessionCommand),
        _ => (Route::Primary, Reason::Write),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::XaKind;

    const AUTOCOMMIT: u16 = SERVER_STATUS_AUTOCOMMIT;

    fn idle() -> SessionView {
        SessionView {
            primary_status: AUTOCOMMIT,
            pinned: false,
            locked: false,
            temporary_tables: false,
            user_vars_on_primary_only: false,
        }
    }

    fn stmt(kind: Kind, flags: Flags, hint: Option<Hint>) -> Statement {
        Statement { kind, flags, hint }
    }

    fn read() -> Statement {
        stmt(Kind::Read, Flags::default(), None)
    }

    #[test]
    fn plain_reads_go_to_replicas_and_everything_else_to_the_primary() {
        let s = idle();
        assert_eq!(route(&read(), &s), (Route::Replica, Reason::Read));
        let show = stmt(Kind::Show, Flags::default(), None);
        assert_eq!(route(&show, &s).0, Route::Replica);
        for kind in [
            Kind::Write,
            Kind::Ddl,
            Kind::Begin { read_only: true },
            Kind::Commit,
            Kind::Rollback,
            Kind::Savepoint,
            Kind::Xa(XaKind::Start),
            Kind::Call,
            Kind::LoadData,
            Kind::Kill,
            Kind::Lock,
            Kind::Unlock,
            Kind::SqlPrepared,
            Kind::Handler,
            Kind::Other,
        ] {
            assert_eq!(
                route(&stmt(kind, Flags::default(), None), &s).0,
                Route::Primary,
                "{kind:?}"
            );
        }
        assert_eq!(
            route(&stmt(Kind::Set, Flags::SET_NAMES, None), &s),
            (Route::Primary, Reason::SessionCommand)
        );
        assert_eq!(
            route(&stmt(Kind::Diagnostics, Flags::default(), None), &s).0,
            Route::Previous
        );
        let then_write = stmt(Kind::Diagnostics, Flags::MULTI, None);
        assert_eq!(route(&then_write, &s).0, Route::Primary);
    }

    #[test]
    fn session_bound_reads_stay_on_the_primary() {
        let s = idle();
        for flags in [
            Flags::LOCKING,
            Flags::INTO,
            Flags::SESSION_FUNCTION,
            Flags::USER_VAR_ASSIGN,
            Flags::MULTI,
        ] {
            assert_eq!(
                route(&stmt(Kind::Read, flags, None), &s),
                (Route::Primary, Reason::SessionBound),
                "{flags:?}"
            );
        }
        let mut temp = idle();
        temp.temporary_tables = true;
        assert_eq!(route(&read(), &temp).0, Route::Primary);
        let show = stmt(Kind::Show, Flags::default(), None);
        assert_eq!(route(&show, &temp).0, Route::Primary);

        let mut vars = idle();
        vars.user_vars_on_primary_only = true;
        assert_eq!(route(&read(), &vars).0, Route::Replica);
        let uses_var = stmt(Kind::Read, Flags::USER_VAR, None);
        assert_eq!(route(&uses_var, &vars).0, Route::Primary);
        assert_eq!(route(&uses_var, &idle()).0, Route::Replica);
    }

    #[test]
    fn transactions_keep_reads_on_the_primary() {
        let mut s = idle();
        s.primary_status = AUTOCOMMIT | SERVER_STATUS_IN_TRANS;
        assert_eq!(route(&read(), &s), (Route::Primary, Reason::Transaction));
        s.primary_status = 0;
        assert_eq!(route(&read(), &s), (Route::Primary, Reason::Transaction));
        let mut pinned = idle();
        pinned.pinned = true;
        assert_eq!(route(&read(), &pinned), (Route::Primary, Reason::Pinned));
        let mut locked = idle();
        locked.locked = true;
        assert_eq!(
            route(&read(), &locked),
            (Route::Primary, Reason::SessionLock)
        );
    }

    #[test]
    fn hints_win_but_never_send_a_write_to_a_replica() {
        let mut in_trans = idle();
        in_trans.primary_status = AUTOCOMMIT | SERVER_STATUS_IN_TRANS;
        let to_replica = stmt(Kind::Read, Flags::default(), Some(Hint::Replica));
        assert_eq!(
            route(&to_replica, &in_trans),
            (Route::Replica, Reason::Hint)
        );
        let to_primary = stmt(Kind::Read, Flags::default(), Some(Hint::Primary));
        assert_eq!(route(&to_primary, &idle()), (Route::Primary, Reason::Hint));
        let write = stmt(Kind::Write, Flags::default(), Some(Hint::Replica));
        assert_eq!(route(&write, &idle()).0, Route::Primary);
        let locking = stmt(Kind::Read, Flags::LOCKING, Some(Hint::Replica));
        assert_eq!(route(&locking, &idle()).0, Route::Primary);
    }
}
