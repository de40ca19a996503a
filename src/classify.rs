//! Statement classification for routing: a single pass over the statement's bytes that finds
//! what kind of statement it is and the facts the router needs (locking clauses, functions
//! bound to the session, user variables, temporary tables, routing hints). No allocation, no
//! parse tree: when the scanner cannot tell, the statement is `Other`, which goes to the
//! primary.
//!
//! The lexical rules are the servers' own: MySQL's "Comment Syntax", "String Literals",
//! "Schema Object Names" and "User-Defined Variables", and MariaDB's "Comment Syntax" and
//! "Executable Comments". Executable comments (`/*! ... */`, `/*!50110 ... */`, `/*M! ... */`)
//! are read as statement text whatever version they name, because a server of that version
//! runs them. Where the two servers or their SQL modes read a text differently, the scanner
//! takes the reading that sends the statement to the primary.

/// What a statement is, by its leading keyword(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A query that only reads: `SELECT`, `WITH ... SELECT`, `(SELECT ...) UNION ...`,
    /// `VALUES`, `TABLE t`, `HELP`, `CHECKSUM TABLE`, `ANALYZE SELECT`/`EXPLAIN` of a read.
    Read,
    /// `SHOW` that reads the data dictionary and means the same on every server
    /// (`SHOW TABLES`, `SHOW COLUMNS`, `SHOW CREATE TABLE`, `SHOW DATABASES`, ...).
    /// Any other `SHOW` (replication state, processes, status counters) is `Other`.
    Show,
    /// `SHOW WARNINGS`, `SHOW ERRORS`, `SHOW PROFILE(S)`, `GET DIAGNOSTICS`: about the
    /// statement before, so they go where that one went.
    Diagnostics,
    /// Changes data: `INSERT`, `UPDATE`, `DELETE`, `REPLACE`, `ANALYZE`/`EXPLAIN ANALYZE` of
    /// a write, `WITH ... UPDATE`, `SET PASSWORD`, `SET DEFAULT ROLE`, ...
    Write,
    /// Schema and account changes: `CREATE`, `ALTER`, `DROP`, `RENAME`, `TRUNCATE`,
    /// `GRANT`, `REVOKE`, `ANALYZE TABLE`, `OPTIMIZE`, `REPAIR`, `FLUSH`, ... (but
    /// `FLUSH TABLES ... WITH READ LOCK | FOR EXPORT`, which holds locks, is `Lock`).
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
    /// `LOCK TABLES`, `LOCK TABLE`, `LOCK INSTANCE FOR BACKUP`, MariaDB `BACKUP STAGE` and
    /// `BACKUP LOCK`, `FLUSH TABLES ... WITH READ LOCK | FOR EXPORT`.
    Lock,
    /// `UNLOCK TABLES`, `UNLOCK INSTANCE`, MariaDB `BACKUP UNLOCK`.
    Unlock,
    /// SQL-level prepared statements: `PREPARE`, `EXECUTE`, `DEALLOCATE|DROP PREPARE`.
    SqlPrepared,
    /// `HANDLER t OPEN|READ|CLOSE`.
    Handler,
    /// Anything else (including an empty statement, `DO`, `BEGIN NOT ATOMIC`, replication
    /// administration, `SIGNAL`, `CHECK TABLE`, `EXECUTE IMMEDIATE`, `EXPLAIN FOR
    /// CONNECTION`): the primary.
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
    /// as a function when `(` follows it (spaces and comments allowed between), and not when
    /// it is qualified (`db.last_insert_id()` is a stored function). MySQL's newer names for
    /// the replication waits, `SOURCE_POS_WAIT()` and `WAIT_FOR_EXECUTED_GTID_SET()`, count
    /// too.
    pub const SESSION_FUNCTION: Flags = Flags(1 << 2);
    /// Refers to a user variable (`@name`, `@'name'`, `` @`name` ``; not `@@system`, and
    /// not the host part of a quoted account name such as `'user'@'host'`).
    pub const USER_VAR: Flags = Flags(1 << 3);
    /// Assigns a user variable outside `SET`: `@x := ...`, `INTO @x`,
    /// `GET DIAGNOSTICS @x = ...`.
    pub const USER_VAR_ASSIGN: Flags = Flags(1 << 4);
    /// `CREATE [OR REPLACE] TEMPORARY TABLE`, `DROP TEMPORARY TABLE`.
    pub const TEMPORARY: Flags = Flags(1 << 5);
    /// More than one statement (a `;` followed by anything but spaces, comments and more
    /// `;`). The `;` inside the body of a stored program (`CREATE PROCEDURE | FUNCTION |
    /// TRIGGER | EVENT`, `ALTER EVENT`, `BEGIN NOT ATOMIC`) does not count: the body is part
    /// of one statement.
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
///
/// When the text holds several statements, `kind` is the first one's, `flags` gather what
/// all of them do (with `MULTI`), and the first routing hint found anywhere wins.
pub fn classify(sql: &[u8]) -> Statement {
    let mut scanner = Scanner::new(sql);
    let kind = scanner.statement();
    scanner.finish_statement();
    scanner.following_statements();
    Statement {
        kind,
        flags: scanner.flags,
        hint: scanner.lexer.hint,
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// An unquoted name, keyword or number.
    Word(&'a [u8]),
    /// A string literal or a quoted identifier: nothing inside it counts.
    Quoted,
    UserVariable,
    /// `@@name` or `@@scope.name`: the text after `@@`.
    SystemVariable(&'a [u8]),
    /// `:=`
    Assign,
    Semicolon,
    Punct(u8),
    End,
}

/// Splits the text into tokens, stepping over spaces and comments and noting the first
/// routing hint on the way.
struct Lexer<'a> {
    sql: &'a [u8],
    at: usize,
    /// Inside `/*! ... */` or `/*M! ... */`, whose closing `*/` is just a separator.
    in_executable_comment: bool,
    /// Where the last quoted token ended. An `@` right there joins the user and host of an
    /// account name (`'user'@'host'`); it is not a user variable.
    quoted_end: usize,
    hint: Option<Hint>,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a [u8]) -> Self {
        Lexer {
            sql,
            at: 0,
            in_executable_comment: false,
            quoted_end: usize::MAX,
            hint: None,
        }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.sql.get(at).copied()
    }

    #[inline(always)]
    fn token(&mut self) -> Token<'a> {
        self.skip_spaces_and_comments();
        let start = self.at;
        let Some(byte) = self.byte(start) else {
            return Token::End;
        };
        self.at += 1;
        match byte {
            b'\'' | b'"' => self.quoted(byte, true),
            b'`' => self.quoted(byte, false),
            b'@' => self.variable(start),
            b';' => Token::Semicolon,
            b':' if self.byte(self.at) == Some(b'=') => {
                self.at += 1;
                Token::Assign
            }
            // A number keeps its decimal point, so `1.` is not taken for a qualifier.
            b'0'..=b'9' => self.word(start, is_variable_byte),
            _ if is_name_byte(byte) => self.word(start, is_name_byte),
            _ => Token::Punct(byte),
        }
    }

    fn word(&mut self, start: usize, part_of_word: fn(u8) -> bool) -> Token<'a> {
        self.at = end_of_run(self.sql, self.at, part_of_word);
        Token::Word(&self.sql[start..self.at])
    }

    fn quoted(&mut self, quote: u8, backslash_escapes: bool) -> Token<'a> {
        self.skip_quoted(quote, backslash_escapes);
        self.quoted_end = self.at;
        Token::Quoted
    }

    /// Steps past the closing quote. A doubled quote stands for itself ("String Literals");
    /// backslash escapes are assumed on (without `NO_BACKSLASH_ESCAPES`), as servers default.
    fn skip_quoted(&mut self, quote: u8, backslash_escapes: bool) {
        let len = self.sql.len();
        loop {
            let rest = &self.sql[self.at..];
            let special = if backslash_escapes {
                memchr::memchr2(quote, b'\\', rest)
            } else {
                memchr::memchr(quote, rest)
            };
            let Some(offset) = special else {
                self.at = len;
                return;
            };
            let found = self.at + offset;
            if self.sql[found] != quote {
                self.at = (found + 2).min(len);
            } else if self.byte(found + 1) == Some(quote) {
                self.at = found + 2;
            } else {
                self.at = found + 1;
                return;
            }
        }
    }

    /// `@name`, `@'name'`, `@@name` ("User-Defined Variables", "Using System Variables").
    fn variable(&mut self, start: usize) -> Token<'a> {
        if start == self.quoted_end {
            return Token::Punct(b'@');
        }
        match self.byte(self.at) {
            Some(b'@') => {
                let name_start = self.at + 1;
                self.at = end_of_run(self.sql, name_start, is_variable_byte);
                Token::SystemVariable(&self.sql[name_start..self.at])
            }
            Some(quote @ (b'\'' | b'"' | b'`')) => {
                self.at += 1;
                self.skip_quoted(quote, quote != b'`');
                Token::UserVariable
            }
            _ => {
                self.at = end_of_run(self.sql, self.at, is_variable_byte);
                Token::UserVariable
            }
        }
    }

    #[inline(always)]
    fn skip_spaces_and_comments(&mut self) {
        while let Some(byte) = self.byte(self.at) {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.at += 1,
                b'#' => self.line_comment(self.at + 1),
                b'-' if self.opens_dash_comment() => self.line_comment(self.at + 2),
                b'/' if self.byte(self.at + 1) == Some(b'*') => self.block_comment(),
                b'*' if self.in_executable_comment && self.byte(self.at + 1) == Some(b'/') => {
                    self.in_executable_comment = false;
                    self.at += 2;
                }
                _ => return,
            }
        }
    }

    /// "Comment Syntax": `--` opens a comment only when a space or control character (or the
    /// end) follows, so `1--1` stays arithmetic.
    fn opens_dash_comment(&self) -> bool {
        self.byte(self.at + 1) == Some(b'-')
            && self
                .byte(self.at + 2)
                .is_none_or(|b| b <= b' ' || b == 0x7f)
    }

    fn line_comment(&mut self, text_start: usize) {
        let end = memchr::memchr(b'\n', &self.sql[text_start..])
            .map_or(self.sql.len(), |offset| text_start + offset);
        self.note_hint(text_start, end);
        self.at = end;
    }

    fn block_comment(&mut self) {
        let body = self.at + 2;
        match (self.byte(body), self.byte(body + 1)) {
            (Some(b'!'), _) => self.open_executable_comment(body + 1),
            (Some(b'M'), Some(b'!')) => self.open_executable_comment(body + 2),
            _ => {
                let end = comment_end(self.sql, body);
                self.note_hint(body, end);
                self.at = (end + 2).min(self.sql.len());
            }
        }
    }

    /// The version number after `!` is skipped; the rest is statement text.
    fn open_executable_comment(&mut self, after_bang: usize) {
        self.at = end_of_run(self.sql, after_bang, |b| b.is_ascii_digit());
        self.in_executable_comment = true;
    }

    fn note_hint(&mut self, text_start: usize, text_end: usize) {
        if self.hint.is_none() {
            self.hint = routing_hint(&self.sql[text_start..text_end]);
        }
    }
}

/// The hint a comment's text carries: `rwsplit:primary` or `rwsplit:replica` at its start,
/// after an optional `+` (an optimizer-hint comment) and spaces.
fn routing_hint(comment: &[u8]) -> Option<Hint> {
    let text = comment.trim_ascii_start();
    let text = text.strip_prefix(b"+").unwrap_or(text).trim_ascii_start();
    let (prefix, rest) = text.split_at_checked(8)?;
    if !prefix.eq_ignore_ascii_case(b"rwsplit:") {
        return None;
    }
    let role = rest.get(..7)?;
    if role.eq_ignore_ascii_case(b"primary") {
        Some(Hint::Primary)
    } else if role.eq_ignore_ascii_case(b"replica") {
        Some(Hint::Replica)
    } else {
        None
    }
}

/// Where `*/` starts, or the end of the text for an unterminated comment.
fn comment_end(sql: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(offset) = memchr::memchr(b'*', &sql[at..]) {
        let star = at + offset;
        if sql.get(star + 1) == Some(&b'/') {
            return star;
        }
        at = star + 1;
    }
    sql.len()
}

fn end_of_run(sql: &[u8], from: usize, part_of_run: fn(u8) -> bool) -> usize {
    sql[from..]
        .iter()
        .position(|&b| !part_of_run(b))
        .map_or(sql.len(), |offset| from + offset)
}

/// "Schema Object Names": unquoted names are letters, digits, `_`, `$` and any non-ASCII
/// byte (the servers accept UTF-8 letters without quotes).
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        byte += 1;
    }
    table
};

#[derive(Clone, Copy)]
enum TailClass {
    /// Starts a word that may be a keyword or a function name.
    Name,
    /// Starts a number, which never completes a fact.
    Digit,
    /// A one-byte operator that ends what the previous tokens were building and nothing
    /// more. (`-`, `/` and `*` reach the scanner only once comments have been skipped.)
    Operator,
    /// Quotes, variables, `:=`, `;`, parentheses, `.`: the lexer's full path.
    Other,
}

const TAIL_CLASS: [TailClass; 256] = {
    let mut table = [TailClass::Other; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = match b {
            b'0'..=b'9' => TailClass::Digit,
            _ if NAME_BYTES[byte] => TailClass::Name,
            b',' | b'=' | b'+' | b'-' | b'*' | b'/' | b'<' | b'>' | b'!' | b'%' | b'^' | b'&'
            | b'|' | b'~' | b'?' | b'{' | b'}' | b'[' | b']' | b'(' | b')' => TailClass::Operator,
            _ => TailClass::Other,
        };
        byte += 1;
    }
    table
};

#[inline(always)]
fn is_name_byte(b: u8) -> bool {
    NAME_BYTES[b as usize]
}

/// User variable names may also hold `.`; system variables use it for the scope.
fn is_variable_byte(b: u8) -> bool {
    is_name_byte(b) || b == b'.'
}

#[inline]
fn is(word: &[u8], keyword: &[u8]) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

fn is_any(word: &[u8], keywords: &[&[u8]]) -> bool {
    keywords.iter().any(|keyword| is(word, keyword))
}

// ---------------------------------------------------------------------------------------------
// Facts found anywhere in a statement

const SESSION_VARIABLES: &[&[u8]] = &[b"LAST_INSERT_ID", b"IDENTITY", b"INSERT_ID", b"LAST_GTID"];

/// What a word does on its own, before the words after it are seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    For,
    Lock,
    Into,
    /// `NEXT` or `PREVIOUS`, which may begin `NEXT VALUE FOR seq`.
    Sequence,
    CalcFoundRows,
    /// A name that, called as a function, ties the answer or an effect to the connection.
    SessionFunction,
}

/// Every word with a role. A word is looked up here only when `ROLE_LENGTHS` lets it through.
const ROLES: &[(&[u8], Role)] = {
    use Role::SessionFunction as Session;
    &[
        (b"CONNECTION_ID", Session),
        (b"FOR", Role::For),
        (b"FOUND_ROWS", Session),
        (b"GET_LOCK", Session),
        (b"INTO", Role::Into),
        (b"IS_FREE_LOCK", Session),
        (b"IS_USED_LOCK", Session),
        (b"LOCK", Role::Lock),
        (b"LAST_INSERT_ID", Session),
        (b"LASTVAL", Session),
        (b"MASTER_POS_WAIT", Session),
        (b"MASTER_GTID_WAIT", Session),
        (b"NEXT", Role::Sequence),
        (b"NEXTVAL", Session),
        (b"PREVIOUS", Role::Sequence),
        (b"ROW_COUNT", Session),
        (b"RELEASE_LOCK", Session),
        (b"RELEASE_ALL_LOCKS", Session),
        (b"SETVAL", Session),
        (b"SOURCE_POS_WAIT", Session),
        (b"SQL_CALC_FOUND_ROWS", Role::CalcFoundRows),
        (b"WAIT_FOR_EXECUTED_GTID_SET", Session),
    ]
};

/// By byte (either case), a bit for each length of a word with a role that begins with it
/// (`.0`) and that ends with it (`.1`). Every word of every statement is looked up, and these
/// two loads turn away nearly all of them, `SELECT` included.
const ROLE_LENGTHS: [(u32, u32); 256] = {
    let mut table = [(0u32, 0u32); 256];
    let mut i = 0;
    while i < ROLES.len() {
        let word = ROLES[i].0;
        assert!(word.len() < 32);
        let bit = 1 << word.len();
        let first = word[0];
        let last = word[word.len() - 1];
        table[first as usize].0 |= bit;
        table[first.to_ascii_lowercase() as usize].0 |= bit;
        table[last as usize].1 |= bit;
        table[last.to_ascii_lowercase() as usize].1 |= bit;
        i += 1;
    }
    table
};

#[inline(always)]
fn role(word: &[u8]) -> Role {
    let (Some(&first), Some(&last)) = (word.first(), word.last()) else {
        return Role::Plain;
    };
    let candidates = ROLE_LENGTHS[first as usize].0 & ROLE_LENGTHS[last as usize].1;
    if word.len() >= 32 || candidates & (1 << word.len()) == 0 {
        return Role::Plain;
    }
    ROLES
        .iter()
        .find(|(name, _)| is(word, name))
        .map_or(Role::Plain, |&(_, role)| role)
}

/// The part of a token sequence seen so far that may still complete a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Previous {
    Nothing,
    /// A `.`: the next word is a qualified name, never a keyword or a built-in function.
    Dot,
    For,
    Lock,
    LockIn,
    LockInShare,
    Sequence,
    SequenceValue,
    SessionFunction,
    Into,
    UserVariable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Session,
    Global,
}

/// `session.name`, `global.name` or `name` as written after `@@`.
fn split_scope(name: &[u8]) -> (Scope, &[u8]) {
    let Some(dot) = name.iter().position(|&b| b == b'.') else {
        return (Scope::Session, name);
    };
    let (prefix, variable) = (&name[..dot], &name[dot + 1..]);
    if is_any(prefix, &[b"GLOBAL", b"PERSIST", b"PERSIST_ONLY"]) {
        (Scope::Global, variable)
    } else if is_any(prefix, &[b"SESSION", b"LOCAL"]) {
        (Scope::Session, variable)
    } else {
        (Scope::Session, name)
    }
}

fn is_session_function_variable(name: &[u8]) -> bool {
    match split_scope(name) {
        (Scope::Session, variable) => is_any(variable, SESSION_VARIABLES),
        (Scope::Global, _) => false,
    }
}

/// What assigning `variable` in `scope` changes.
fn assignment_flags(scope: Scope, variable: &[u8]) -> Flags {
    match scope {
        Scope::Global => Flags::SET_GLOBAL,
        Scope::Session if is(variable, b"AUTOCOMMIT") => {
            Flags::SET_SESSION_VAR | Flags::SET_AUTOCOMMIT
        }
        Scope::Session => Flags::SET_SESSION_VAR,
    }
}

// ---------------------------------------------------------------------------------------------
// Statements

/// How a statement that wraps another runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// As written (also under `WITH` or `SET STATEMENT ... FOR`).
    Runs,
    /// `EXPLAIN stmt`: planned, not run, so it only reads.
    Planned,
    /// `ANALYZE stmt` (MariaDB), `EXPLAIN ANALYZE stmt` (MySQL): run, then the plan shown.
    Analyzed,
}

impl Mode {
    fn apply(self, kind: Kind) -> Kind {
        match self {
            Mode::Planned => Kind::Read,
            Mode::Runs | Mode::Analyzed => kind,
        }
    }
}

/// What a statement's leading keyword says.
enum Lead {
    Is(Kind),
    /// The statement that follows decides, run as the mode says.
    Wraps(Mode),
}

const LOCK_TARGETS: &[&[u8]] = &[b"TABLE", b"TABLES", b"INSTANCE"];

const STATEMENT_STARTS: &[&[u8]] = &[
    b"SELECT", b"WITH", b"TABLE", b"VALUES", b"INSERT", b"UPDATE", b"DELETE", b"REPLACE",
];

const DICTIONARY_SHOWS: &[&[u8]] = &[
    b"TABLES",
    b"COLUMNS",
    b"FIELDS",
    b"DATABASES",
    b"SCHEMAS",
    b"INDEX",
    b"INDEXES",
    b"KEYS",
    b"CREATE",
    b"TRIGGERS",
    b"EVENTS",
    b"PLUGINS",
    b"ENGINES",
    b"PRIVILEGES",
    b"GRANTS",
    b"VARIABLES",
    b"COLLATION",
    b"CHARSET",
];

const DIAGNOSTIC_SHOWS: &[&[u8]] = &[b"WARNINGS", b"ERRORS", b"COUNT", b"PROFILE", b"PROFILES"];

/// Reads the statements one token at a time. Every token taken with `next` is also looked at
/// for the facts that may appear anywhere (`note`); the leading keywords are read on the way.
struct Scanner<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    flags: Flags,
    previous: Previous,
    depth: usize,
    /// The current statement is a read, so `INTO` stores its result somewhere.
    reading: bool,
    /// The statement holds a stored program body, whose `;` end inner statements only.
    stored_program: bool,
    /// Tests read the tail through `Lexer::token` and `note` alone, the reference that the
    /// fast path of `finish_statement` must agree with.
    #[cfg(test)]
    tail_by_tokens: bool,
}

impl<'a> Scanner<'a> {
    fn new(sql: &'a [u8]) -> Self {
        Scanner {
            lexer: Lexer::new(sql),
            peeked: None,
            flags: Flags::default(),
            previous: Previous::Nothing,
            depth: 0,
            reading: false,
            stored_program: false,
            #[cfg(test)]
            tail_by_tokens: false,
        }
    }

    fn peek(&mut self) -> Token<'a> {
        if let Some(token) = self.peeked {
            return token;
        }
        let token = self.lexer.token();
        self.peeked = Some(token);
        token
    }

    /// Takes the next token without noting it. A `;` or the end is never taken, so a
    /// statement's reader cannot run into the next statement. (A token is stored only when it
    /// must stay: reading one back right after storing it stalls the processor.)
    fn take(&mut self) -> Token<'a> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.token(),
        };
        if matches!(token, Token::Semicolon | Token::End) {
            self.peeked = Some(token);
        }
        token
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.take();
        self.note(token);
        token
    }

    fn peek_is(&mut self, keyword: &[u8]) -> bool {
        matches!(self.peek(), Token::Word(word) if is(word, keyword))
    }

    fn peek_is_any(&mut self, keywords: &[&[u8]]) -> bool {
        matches!(self.peek(), Token::Word(word) if is_any(word, keywords))
    }

    fn accept(&mut self, keyword: &[u8]) -> bool {
        let found = self.peek_is(keyword);
        if found {
            self.next();
        }
        found
    }

    fn accept_any(&mut self, keywords: &[&[u8]]) -> bool {
        let found = self.peek_is_any(keywords);
        if found {
            self.next();
        }
        found
    }

    fn accept_punct(&mut self, punct: u8) -> bool {
        let found = self.peek() == Token::Punct(punct);
        if found {
            self.next();
        }
        found
    }

    /// `kind` when `keyword` comes next, else `Other`.
    fn kind_after(&mut self, keywords: &[&[u8]], kind: Kind) -> Kind {
        if self.accept_any(keywords) {
            kind
        } else {
            Kind::Other
        }
    }

    /// Notes the rest of the statement: every token of every statement passes through this
    /// loop, so the lexer and `note` are inlined into it (a third of the cost per token was
    /// the calls between them), and words, numbers and operators skip the token altogether:
    /// building one and dispatching on its kind again cost a mispredicted jump per token
    /// (1,490 → 1,070 instructions and 121 → 75 ns per sysbench point select).
    fn finish_statement(&mut self) {
        #[cfg(test)]
        if self.tail_by_tokens {
            let mut token = self.peeked.take().unwrap_or_else(|| self.lexer.token());
            while !matches!(token, Token::Semicolon | Token::End) {
                self.note(token);
                token = self.lexer.token();
            }
            self.peeked = Some(token);
            return;
        }
        if let Some(token) = self.peeked.take() {
            if matches!(token, Token::Semicolon | Token::End) {
                self.peeked = Some(token);
                return;
            }
            self.note(token);
        }
        loop {
            self.lexer.skip_spaces_and_comments();
            let at = self.lexer.at;
            let Some(&byte) = self.lexer.sql.get(at) else {
                self.peeked = Some(Token::End);
                return;
            };
            // Words, numbers and plain operators are most of a statement's tokens: they are
            // handled here, without building a token and dispatching on it again.
            match TAIL_CLASS[byte as usize] {
                TailClass::Name => {
                    self.lexer.at = end_of_run(self.lexer.sql, at + 1, is_name_byte);
                    let word = &self.lexer.sql[at..self.lexer.at];
                    let previous = std::mem::replace(&mut self.previous, Previous::Nothing);
                    self.note_word(word, previous);
                }
                TailClass::Digit => {
                    self.lexer.at = end_of_run(self.lexer.sql, at + 1, is_variable_byte);
                    self.previous = Previous::Nothing;
                }
                TailClass::Operator => {
                    self.lexer.at = at + 1;
                    let previous = std::mem::replace(&mut self.previous, Previous::Nothing);
                    if byte == b'(' {
                        self.depth += 1;
                        if previous == Previous::SessionFunction {
                            self.flags |= Flags::SESSION_FUNCTION;
                        }
                    } else if byte == b')' {
                        self.depth = self.depth.saturating_sub(1);
                    }
                }
                TailClass::Other => {
                    let token = self.lexer.token();
                    if matches!(token, Token::Semicolon | Token::End) {
                        self.peeked = Some(token);
                        return;
                    }
                    self.note(token);
                }
            }
        }
    }

    fn following_statements(&mut self) {
        loop {
            while self.peek() == Token::Semicolon {
                self.peeked = None;
            }
            if self.peek() == Token::End {
                return;
            }
            if !self.stored_program {
                self.flags |= Flags::MULTI;
                self.previous = Previous::Nothing;
                self.depth = 0;
                self.statement();
            }
            self.finish_statement();
        }
    }

    /// Reads a statement's leading keywords and returns its kind; the rest is left to
    /// `finish_statement`.
    fn statement(&mut self) -> Kind {
        self.reading = false;
        let mut mode = Mode::Runs;
        loop {
            while self.accept_punct(b'(') {}
            let Token::Word(word) = self.next() else {
                return Kind::Other;
            };
            match self.lead(word) {
                Lead::Is(kind) => {
                    self.reading = kind == Kind::Read;
                    return mode.apply(kind);
                }
                Lead::Wraps(inner) => mode = mode.max(inner),
            }
        }
    }

    fn lead(&mut self, word: &[u8]) -> Lead {
        let Some(first) = word.first() else {
            return Lead::Is(Kind::Other);
        };
        let word_is = |keyword: &[u8]| is(word, keyword);
        let kind = match first.to_ascii_uppercase() {
            b'S' if word_is(b"SELECT") => Kind::Read,
            b'S' if word_is(b"SET") => return self.set(),
            b'S' if word_is(b"SHOW") => self.show(),
            b'S' if word_is(b"START") => self.start(),
            b'S' if word_is(b"SAVEPOINT") => Kind::Savepoint,
            b'I' if word_is(b"INSERT") => Kind::Write,
            b'I' if word_is(b"INSTALL") || word_is(b"IMPORT") => Kind::Ddl,
            b'U' if word_is(b"UPDATE") => Kind::Write,
            b'U' if word_is(b"USE") => Kind::Use,
            b'U' if word_is(b"UNLOCK") => self.kind_after(LOCK_TARGETS, Kind::Unlock),
            b'U' if word_is(b"UNINSTALL") => Kind::Ddl,
            b'D' if word_is(b"DELETE") => Kind::Write,
            b'D' if word_is(b"DROP") => self.drop(),
            b'D' if word_is(b"DESCRIBE") || word_is(b"DESC") => return self.explain(),
            b'D' if word_is(b"DEALLOCATE") => self.kind_after(&[b"PREPARE"], Kind::SqlPrepared),
            b'B' if word_is(b"BEGIN") => self.begin(),
            b'B' if word_is(b"BACKUP") => self.backup(),
            b'C' if word_is(b"COMMIT") => Kind::Commit,
            b'C' if word_is(b"CREATE") => self.object_header(),
            b'C' if word_is(b"CALL") => Kind::Call,
            b'C' if word_is(b"CHECKSUM") => Kind::Read,
            b'R' if word_is(b"REPLACE") => Kind::Write,
            b'R' if word_is(b"ROLLBACK") => self.rollback(),
            b'R' if word_is(b"RELEASE") => self.kind_after(&[b"SAVEPOINT"], Kind::Savepoint),
            b'R' if word_is(b"RENAME") || word_is(b"REVOKE") || word_is(b"REPAIR") => Kind::Ddl,
            b'W' if word_is(b"WITH") => {
                self.with_clause();
                return Lead::Wraps(Mode::Runs);
            }
            b'A' if word_is(b"ALTER") => self.object_header(),
            b'A' if word_is(b"ANALYZE") => return self.analyze(),
            b'E' if word_is(b"EXPLAIN") => return self.explain(),
            b'E' if word_is(b"EXECUTE") => self.execute(),
            b'V' if word_is(b"VALUES") => Kind::Read,
            b'T' if word_is(b"TABLE") => Kind::Read,
            b'T' if word_is(b"TRUNCATE") => Kind::Ddl,
            b'G' if word_is(b"GRANT") => Kind::Ddl,
            b'G' if word_is(b"GET") => self.diagnostics(),
            b'H' if word_is(b"HELP") => Kind::Read,
            b'H' if word_is(b"HANDLER") => Kind::Handler,
            b'L' if word_is(b"LOCK") => self.kind_after(LOCK_TARGETS, Kind::Lock),
            b'L' if word_is(b"LOAD") => self.kind_after(&[b"DATA", b"XML"], Kind::LoadData),
            b'K' if word_is(b"KILL") => Kind::Kill,
            b'P' if word_is(b"PREPARE") => Kind::SqlPrepared,
            b'O' if word_is(b"OPTIMIZE") => Kind::Ddl,
            b'F' if word_is(b"FLUSH") => self.flush(),
            b'X' if word_is(b"XA") => self.xa(),
            _ => Kind::Other,
        };
        Lead::Is(kind)
    }

    /// `WITH [RECURSIVE] name [(columns)] AS (query) [CYCLE ... RESTRICT] [, ...]`: the
    /// statement after the common table expressions decides.
    fn with_clause(&mut self) {
        self.accept(b"RECURSIVE");
        loop {
            if !matches!(self.next(), Token::Word(_) | Token::Quoted) {
                return;
            }
            if self.peek() == Token::Punct(b'(') {
                self.skip_parenthesized();
            }
            if !self.accept(b"AS") || self.peek() != Token::Punct(b'(') {
                return;
            }
            self.skip_parenthesized();
            if self.accept(b"CYCLE") {
                while !matches!(self.next(), Token::Word(w) if is(w, b"RESTRICT"))
                    && !self.at_statement_end()
                {}
            }
            if !self.accept_punct(b',') {
                return;
            }
        }
    }

    fn at_statement_end(&mut self) -> bool {
        matches!(self.peek(), Token::Semicolon | Token::End)
    }

    /// Steps over `( ... )`, noting what is inside.
    fn skip_parenthesized(&mut self) {
        let depth = self.depth;
        self.next();
        loop {
            match self.next() {
                Token::Semicolon | Token::End => return,
                Token::Punct(b')') if self.depth == depth => return,
                _ => {}
            }
        }
    }

    /// The words between `CREATE`/`ALTER` and the object type: `TEMPORARY` is noted, and a
    /// stored program's body ("Compound Statements") is one statement even with `;` inside.
    fn object_header(&mut self) -> Kind {
        while let Token::Word(word) = self.peek() {
            if is_any(
                word,
                &[b"OR", b"REPLACE", b"AGGREGATE", b"SQL", b"SECURITY"],
            ) {
                self.next();
            } else if is(word, b"TEMPORARY") {
                self.next();
                self.flags |= Flags::TEMPORARY;
            } else if is(word, b"DEFINER") {
                self.next();
                if self.accept_punct(b'=') {
                    self.skip_account();
                }
            } else if is(word, b"ALGORITHM") {
                self.next();
                if self.accept_punct(b'=') {
                    self.next();
                }
            } else {
                let program: &[&[u8]] =
                    &[b"PROCEDURE", b"FUNCTION", b"TRIGGER", b"EVENT", b"PACKAGE"];
                self.stored_program = is_any(word, program);
                break;
            }
        }
        Kind::Ddl
    }

    /// `user`, `'user'@'host'`, `user@host` or `CURRENT_USER[()]`: names, not variables.
    fn skip_account(&mut self) {
        if let Token::Word(word) = self.take()
            && is(word, b"CURRENT_USER")
        {
            if self.accept_punct(b'(') {
                self.accept_punct(b')');
            }
            return;
        }
        if self.peek() == Token::Punct(b'@') {
            self.take();
            self.take();
        } else if self.peek() == Token::UserVariable {
            self.take();
        }
    }

    fn drop(&mut self) -> Kind {
        if self.accept(b"TEMPORARY") {
            self.flags |= Flags::TEMPORARY;
            Kind::Ddl
        } else if self.accept(b"PREPARE") {
            Kind::SqlPrepared
        } else {
            Kind::Ddl
        }
    }

    /// MariaDB's `BEGIN NOT ATOMIC` opens a compound statement, not a transaction.
    fn begin(&mut self) -> Kind {
        if self.accept(b"NOT") {
            self.stored_program = true;
            Kind::Other
        } else {
            Kind::Begin { read_only: false }
        }
    }

    fn backup(&mut self) -> Kind {
        if self.accept_any(&[b"STAGE", b"LOCK"]) {
            Kind::Lock
        } else {
            self.kind_after(&[b"UNLOCK"], Kind::Unlock)
        }
    }

    /// `START TRANSACTION [characteristic, ...]`; `START SLAVE | REPLICA` is administration.
    fn start(&mut self) -> Kind {
        if !self.accept(b"TRANSACTION") {
            return Kind::Other;
        }
        let [read_only, snapshot] =
            self.adjacent_words([(b"READ", b"ONLY"), (b"CONSISTENT", b"SNAPSHOT")]);
        if snapshot {
            self.flags |= Flags::CONSISTENT_SNAPSHOT;
        }
        Kind::Begin { read_only }
    }

    /// `FLUSH TABLES ... WITH READ LOCK` and `... FOR EXPORT` hold their locks until
    /// `UNLOCK TABLES`, like `LOCK TABLES`.
    fn flush(&mut self) -> Kind {
        let found = self.adjacent_words([(b"READ", b"LOCK"), (b"FOR", b"EXPORT")]);
        if found.contains(&true) {
            Kind::Lock
        } else {
            Kind::Ddl
        }
    }

    /// Reads to the end of the statement and tells which word pairs appeared in it.
    fn adjacent_words<const N: usize>(&mut self, pairs: [(&[u8], &[u8]); N]) -> [bool; N] {
        let mut found = [false; N];
        let mut before: &[u8] = b"";
        loop {
            match self.next() {
                Token::Word(word) => {
                    for (seen, (first, second)) in found.iter_mut().zip(pairs) {
                        *seen |= is(before, first) && is(word, second);
                    }
                    before = word;
                }
                Token::Semicolon | Token::End => return found,
                _ => before = b"",
            }
        }
    }

    fn rollback(&mut self) -> Kind {
        self.accept(b"WORK");
        if self.peek_is(b"TO") {
            Kind::Savepoint
        } else {
            Kind::Rollback
        }
    }

    fn xa(&mut self) -> Kind {
        let Token::Word(word) = self.next() else {
            return Kind::Other;
        };
        let xa = if is_any(word, &[b"START", b"BEGIN"]) {
            XaKind::Start
        } else if is_any(word, &[b"END", b"PREPARE"]) {
            XaKind::End
        } else if is_any(word, &[b"COMMIT", b"ROLLBACK"]) {
            XaKind::Finish
        } else if is(word, b"RECOVER") {
            XaKind::Recover
        } else {
            return Kind::Other;
        };
        Kind::Xa(xa)
    }

    /// MariaDB's `EXECUTE IMMEDIATE 'text'` runs text the scanner cannot see.
    fn execute(&mut self) -> Kind {
        if self.peek_is(b"IMMEDIATE") {
            Kind::Other
        } else {
            Kind::SqlPrepared
        }
    }

    /// `GET [CURRENT | STACKED] DIAGNOSTICS target = item, ...`, whose user-variable targets
    /// are assigned.
    fn diagnostics(&mut self) -> Kind {
        if !self.accept(b"CURRENT") {
            self.accept(b"STACKED");
        }
        if !self.accept(b"DIAGNOSTICS") {
            return Kind::Other;
        }
        let mut after_user_variable = false;
        loop {
            match self.next() {
                Token::Semicolon | Token::End => return Kind::Diagnostics,
                Token::Punct(b'=') if after_user_variable => {
                    self.flags |= Flags::USER_VAR_ASSIGN;
                }
                token => after_user_variable = token == Token::UserVariable,
            }
        }
    }

    fn show(&mut self) -> Kind {
        loop {
            let Token::Word(word) = self.next() else {
                return Kind::Other;
            };
            if is_any(
                word,
                &[b"FULL", b"EXTENDED", b"SESSION", b"LOCAL", b"GLOBAL"],
            ) {
                continue;
            }
            if is_any(word, DIAGNOSTIC_SHOWS) {
                return Kind::Diagnostics;
            }
            if is_any(word, DICTIONARY_SHOWS) {
                return Kind::Show;
            }
            let second: &[u8] = if is_any(word, &[b"TABLE", b"PROCEDURE", b"FUNCTION"]) {
                b"STATUS"
            } else if is(word, b"CHARACTER") {
                b"SET"
            } else if is(word, b"OPEN") {
                b"TABLES"
            } else if is(word, b"STORAGE") {
                b"ENGINES"
            } else {
                return Kind::Other;
            };
            return self.kind_after(&[second], Kind::Show);
        }
    }

    /// `EXPLAIN`, `DESCRIBE`, `DESC`: of a table, a read; of a statement, a plan, unless
    /// `ANALYZE` runs it.
    fn explain(&mut self) -> Lead {
        let mut analyze = false;
        loop {
            if self.accept(b"ANALYZE") {
                analyze = true;
            } else if self.peek_is(b"FOR") {
                // The plan of another connection, which lives on one server.
                return Lead::Is(Kind::Other);
            } else if self.accept(b"INTO") {
                self.next();
            } else if !self.accept_any(&[b"EXTENDED", b"PARTITIONS"]) && !self.format_option() {
                break;
            }
        }
        if self.peek() == Token::Punct(b'(') || self.peek_is_any(STATEMENT_STARTS) {
            Lead::Wraps(if analyze {
                Mode::Analyzed
            } else {
                Mode::Planned
            })
        } else {
            Lead::Is(Kind::Read)
        }
    }

    fn format_option(&mut self) -> bool {
        let found = self.accept(b"FORMAT");
        if found {
            self.accept_punct(b'=');
            self.next();
        }
        found
    }

    /// `ANALYZE TABLE` updates statistics; MariaDB's `ANALYZE stmt` runs the statement.
    fn analyze(&mut self) -> Lead {
        if self.peek_is_any(&[b"TABLE", b"TABLES", b"LOCAL", b"NO_WRITE_TO_BINLOG"]) {
            return Lead::Is(Kind::Ddl);
        }
        self.format_option();
        Lead::Wraps(Mode::Analyzed)
    }

    /// `SET`: "SET Syntax for Variable Assignment", `SET TRANSACTION`, `SET PASSWORD`,
    /// `SET [DEFAULT] ROLE`, `SET NAMES`, `SET CHARACTER SET` and MariaDB's `SET STATEMENT`.
    fn set(&mut self) -> Lead {
        let kind = if self.accept(b"TRANSACTION") {
            self.flags |= Flags::SET_NEXT_TRANSACTION;
            Kind::Set
        } else if self.peek_is_any(&[b"PASSWORD", b"DEFAULT"]) {
            // Both change rows of the mysql schema.
            Kind::Write
        } else if self.peek_is(b"ROLE") {
            self.flags |= Flags::SET_SESSION_VAR;
            Kind::Set
        } else if self.accept(b"STATEMENT") {
            return self.set_statement();
        } else {
            while self.assignment() {}
            Kind::Set
        };
        Lead::Is(kind)
    }

    /// One `target = value` of a `SET` list; false when the list has ended.
    fn assignment(&mut self) -> bool {
        let scope = self.scope();
        match (self.peek(), scope) {
            (Token::Word(word), Some(scope)) if is(word, b"TRANSACTION") => {
                self.next();
                self.flags |= match scope {
                    Scope::Global => Flags::SET_GLOBAL,
                    Scope::Session => Flags::SET_SESSION_VAR,
                };
                return false;
            }
            (Token::Word(word), None) if is_any(word, &[b"NAMES", b"CHARSET"]) => {
                self.next();
                self.flags |= Flags::SET_NAMES;
            }
            (Token::Word(word), None) if is(word, b"CHARACTER") => {
                self.next();
                self.accept(b"SET");
                self.flags |= Flags::SET_NAMES;
            }
            // The target is taken without noting it: `SET @x := 1` is the SET's own assignment
            // and `SET insert_id = 5` calls nothing.
            (Token::Word(variable), scope) => {
                self.take();
                self.flags |= assignment_flags(scope.unwrap_or(Scope::Session), variable);
            }
            (Token::UserVariable, _) => {
                self.take();
                self.flags |= Flags::SET_USER_VAR | Flags::USER_VAR;
            }
            (Token::SystemVariable(name), _) => {
                self.take();
                let (scope, variable) = split_scope(name);
                self.flags |= assignment_flags(scope, variable);
            }
            _ => return false,
        }
        self.skip_value()
    }

    fn scope(&mut self) -> Option<Scope> {
        if self.accept_any(&[b"GLOBAL", b"PERSIST", b"PERSIST_ONLY"]) {
            Some(Scope::Global)
        } else if self.accept_any(&[b"SESSION", b"LOCAL"]) {
            Some(Scope::Session)
        } else {
            None
        }
    }

    /// Reads a value up to the comma that ends it; false at the end of the statement.
    fn skip_value(&mut self) -> bool {
        let depth = self.depth;
        loop {
            match self.next() {
                Token::Semicolon | Token::End => return false,
                Token::Punct(b',') if self.depth == depth => return true,
                _ => {}
            }
        }
    }

    /// MariaDB's `SET STATEMENT var = value [, ...] FOR statement`: the variables last for
    /// that one statement, so the statement decides.
    fn set_statement(&mut self) -> Lead {
        let depth = self.depth;
        loop {
            match self.peek() {
                Token::Semicolon | Token::End => return Lead::Is(Kind::Other),
                Token::Word(word) if self.depth == depth && is(word, b"FOR") => {
                    self.take();
                    self.flags |= Flags::SET_STATEMENT_FOR;
                    return Lead::Wraps(Mode::Runs);
                }
                _ => {
                    self.next();
                }
            }
        }
    }

    /// Looks at one token for the facts that may appear anywhere in a statement.
    #[inline(always)]
    fn note(&mut self, token: Token<'a>) {
        let previous = std::mem::replace(&mut self.previous, Previous::Nothing);
        match token {
            Token::Word(word) => self.note_word(word, previous),
            Token::UserVariable => {
                self.flags |= Flags::USER_VAR;
                if previous == Previous::Into {
                    self.flags |= Flags::USER_VAR_ASSIGN;
                }
                self.previous = Previous::UserVariable;
            }
            Token::Assign if previous == Previous::UserVariable => {
                self.flags |= Flags::USER_VAR_ASSIGN;
            }
            Token::SystemVariable(name) if is_session_function_variable(name) => {
                self.flags |= Flags::SESSION_FUNCTION;
            }
            Token::Punct(b'(') => {
                self.depth += 1;
                if previous == Previous::SessionFunction {
                    self.flags |= Flags::SESSION_FUNCTION;
                }
            }
            Token::Punct(b')') => self.depth = self.depth.saturating_sub(1),
            Token::Punct(b'.') => self.previous = Previous::Dot,
            _ => {}
        }
    }

    #[inline(always)]
    fn note_word(&mut self, word: &[u8], previous: Previous) {
        match previous {
            Previous::Dot => return,
            Previous::For if is(word, b"UPDATE") || is(word, b"SHARE") => {
                return self.flags |= Flags::LOCKING;
            }
            Previous::Lock if is(word, b"IN") => return self.previous = Previous::LockIn,
            Previous::LockIn if is(word, b"SHARE") => return self.previous = Previous::LockInShare,
            Previous::LockInShare if is(word, b"MODE") => return self.flags |= Flags::LOCKING,
            Previous::Sequence if is(word, b"VALUE") => {
                return self.previous = Previous::SequenceValue;
            }
            Previous::SequenceValue if is(word, b"FOR") => {
                return self.flags |= Flags::SESSION_FUNCTION;
            }
            _ => {}
        }
        self.previous = match role(word) {
            Role::Plain => Previous::Nothing,
            Role::For => Previous::For,
            Role::Lock => Previous::Lock,
            Role::Sequence => Previous::Sequence,
            Role::SessionFunction => Previous::SessionFunction,
            Role::Into => {
                if self.reading {
                    self.flags |= Flags::INTO;
                }
                Previous::Into
            }
            Role::CalcFoundRows => {
                self.flags |= Flags::SESSION_FUNCTION;
                Previous::Nothing
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::Kind::*;
    use super::*;

    const NO: Flags = Flags(0);
    const LOCKING: Flags = Flags::LOCKING;
    const INTO: Flags = Flags::INTO;
    const SESSION_FN: Flags = Flags::SESSION_FUNCTION;
    const USER_VAR: Flags = Flags::USER_VAR;
    const VAR_ASSIGN: Flags = Flags::USER_VAR_ASSIGN;
    const TEMPORARY: Flags = Flags::TEMPORARY;
    const MULTI: Flags = Flags::MULTI;
    const SESSION_VAR: Flags = Flags::SET_SESSION_VAR;
    const NAMES: Flags = Flags::SET_NAMES;
    const AUTOCOMMIT: Flags = Flags(Flags::SET_AUTOCOMMIT.0 | Flags::SET_SESSION_VAR.0);
    const SET_USER_VAR: Flags = Flags(Flags::SET_USER_VAR.0 | Flags::USER_VAR.0);
    const NEXT_TRX: Flags = Flags::SET_NEXT_TRANSACTION;
    const GLOBAL: Flags = Flags::SET_GLOBAL;
    const STMT_FOR: Flags = Flags::SET_STATEMENT_FOR;
    const SNAPSHOT: Flags = Flags::CONSISTENT_SNAPSHOT;
    const ASSIGNS: Flags = Flags(Flags::USER_VAR.0 | Flags::USER_VAR_ASSIGN.0);
    const SELECT_INTO_VAR: Flags = Flags(INTO.0 | ASSIGNS.0);

    const BEGIN: Kind = Begin { read_only: false };
    const BEGIN_RO: Kind = Begin { read_only: true };

    const PRIMARY: Option<Hint> = Some(Hint::Primary);
    const REPLICA: Option<Hint> = Some(Hint::Replica);

    type Row = (&'static str, Kind, Flags, Option<Hint>);

    #[rustfmt::skip]
    const ROWS: &[Row] = &[
        // sysbench
        ("SELECT c FROM sbtest1 WHERE id=?", Read, NO, None),
        ("SELECT c FROM sbtest1 WHERE id BETWEEN ? AND ?", Read, NO, None),
        ("SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN ? AND ?", Read, NO, None),
        ("SELECT c FROM sbtest1 WHERE id BETWEEN ? AND ? ORDER BY c", Read, NO, None),
        ("SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN ? AND ? ORDER BY c", Read, NO, None),
        ("UPDATE sbtest1 SET k=k+1 WHERE id=?", Write, NO, None),
        ("UPDATE sbtest1 SET c=? WHERE id=?", Write, NO, None),
        ("DELETE FROM sbtest1 WHERE id=?", Write, NO, None),
        ("INSERT INTO sbtest1 (id, k, c, pad) VALUES (?, ?, ?, ?)", Write, NO, None),
        ("BEGIN", BEGIN, NO, None),
        ("COMMIT", Commit, NO, None),
        // reads, case, leading space and parentheses
        ("select 1", Read, NO, None),
        ("SeLeCt * FrOm t", Read, NO, None),
        ("  \n\t\r SELECT 1", Read, NO, None),
        ("sElEcT\t*\r\nFROM t", Read, NO, None),
        ("(SELECT 1) UNION (SELECT 2)", Read, NO, None),
        ("((SELECT 1))", Read, NO, None),
        ("( ( select a from t ) )", Read, NO, None),
        ("(SELECT a FROM t) UNION ALL (SELECT b FROM u) ORDER BY 1 LIMIT 2", Read, NO, None),
        ("SELECT a FROM t WHERE b = 1 UNION SELECT c FROM u", Read, NO, None),
        ("SELECT 1 FROM DUAL", Read, NO, None),
        ("VALUES (1),(2)", Read, NO, None),
        ("VALUES ROW(1, 2), ROW(3, 4)", Read, NO, None),
        ("TABLE t", Read, NO, None),
        ("TABLE t ORDER BY a LIMIT 1", Read, NO, None),
        ("HELP 'contents'", Read, NO, None),
        ("CHECKSUM TABLE t", Read, NO, None),
        ("CHECK TABLE t", Other, NO, None),
        ("SELECT COUNT(*) FROM t WHERE a = ? AND b LIKE 'x%'", Read, NO, None),
        ("SELECT email FROM users WHERE email = 'bob@example.com'", Read, NO, None),
        // INTO and user variables
        ("SELECT a INTO @x FROM t", Read, SELECT_INTO_VAR, None),
        ("SELECT 1 FROM t INTO @x", Read, SELECT_INTO_VAR, None),
        ("SELECT 1 INTO @x", Read, SELECT_INTO_VAR, None),
        ("SELECT a, b INTO @a, @b FROM t WHERE id = 1", Read, SELECT_INTO_VAR, None),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", Read, INTO, None),
        ("SELECT a FROM t INTO DUMPFILE '/tmp/x'", Read, INTO, None),
        ("SELECT @x", Read, USER_VAR, None),
        ("SELECT @x := 1", Read, ASSIGNS, None),
        ("SELECT @x:=@x+1 FROM t", Read, ASSIGNS, None),
        ("SELECT @x = 1", Read, USER_VAR, None),
        ("SELECT @`weird name`", Read, USER_VAR, None),
        ("SELECT @'q'", Read, USER_VAR, None),
        ("SELECT @\"q\"", Read, USER_VAR, None),
        ("SELECT @a.b", Read, USER_VAR, None),
        ("SELECT @@version", Read, NO, None),
        ("SELECT @@global.gtid_current_pos", Read, NO, None),
        // session functions
        ("SELECT @@last_insert_id", Read, SESSION_FN, None),
        ("SELECT @@session.last_insert_id", Read, SESSION_FN, None),
        ("SELECT @@IDENTITY", Read, SESSION_FN, None),
        ("SELECT @@insert_id", Read, SESSION_FN, None),
        ("SELECT @@last_gtid", Read, SESSION_FN, None),
        ("SELECT LAST_INSERT_ID()", Read, SESSION_FN, None),
        ("select last_insert_id ()", Read, SESSION_FN, None),
        ("SELECT LAST_INSERT_ID /* why */ ()", Read, SESSION_FN, None),
        ("SELECT LAST_INSERT_ID -- why\n()", Read, SESSION_FN, None),
        ("SELECT last_insert_id FROM t", Read, NO, None),
        ("SELECT last_insert_id, (1) FROM t", Read, NO, None),
        ("SELECT last_insert_id_x() FROM t", Read, NO, None),
        ("SELECT t.last_insert_id FROM t", Read, NO, None),
        ("SELECT db.last_insert_id() FROM t", Read, NO, None),
        ("SELECT my_get_lock('a', 1)", Read, NO, None),
        ("SELECT 'LAST_INSERT_ID()'", Read, NO, None),
        ("SELECT `last_insert_id`()", Read, NO, None),
        ("SELECT GET_LOCK('a', 10)", Read, SESSION_FN, None),
        ("SELECT RELEASE_LOCK('a')", Read, SESSION_FN, None),
        ("SELECT RELEASE_ALL_LOCKS()", Read, SESSION_FN, None),
        ("SELECT IS_FREE_LOCK('a'), IS_USED_LOCK('a')", Read, SESSION_FN, None),
        ("SELECT FOUND_ROWS()", Read, SESSION_FN, None),
        ("SELECT ROW_COUNT()", Read, SESSION_FN, None),
        ("SELECT connection_id()", Read, SESSION_FN, None),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", Read, SESSION_FN, None),
        ("SELECT NEXTVAL(s)", Read, SESSION_FN, None),
        ("SELECT LASTVAL(s)", Read, SESSION_FN, None),
        ("SELECT SETVAL(s, 10)", Read, SESSION_FN, None),
        ("SELECT NEXT VALUE FOR s", Read, SESSION_FN, None),
        ("SELECT previous value for s", Read, SESSION_FN, None),
        ("INSERT INTO t (id) VALUES (NEXT VALUE FOR s)", Write, SESSION_FN, None),
        ("SELECT MASTER_POS_WAIT('bin.000001', 4)", Read, SESSION_FN, None),
        ("SELECT MASTER_GTID_WAIT('0-1-1')", Read, SESSION_FN, None),
        ("SELECT SOURCE_POS_WAIT('bin.000001', 4)", Read, SESSION_FN, None),
        ("SELECT * FROM t WHERE next = 1", Read, NO, None),
        // locking clauses
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE", Read, LOCKING, None),
        ("select * from t for update", Read, LOCKING, None),
        ("SELECT * FROM t FOR SHARE", Read, LOCKING, None),
        ("SELECT * FROM t LOCK IN SHARE MODE", Read, LOCKING, None),
        ("SELECT * FROM t lock /* a */ in -- b\n share # c\n mode", Read, LOCKING, None),
        ("SELECT * FROM t FOR /* c */ UPDATE", Read, LOCKING, None),
        ("SELECT * FROM t FOR\nSHARE", Read, LOCKING, None),
        ("SELECT * FROM t FOR UPDATE WAIT 5", Read, LOCKING, None),
        ("SELECT * FROM t FOR UPDATE NOWAIT", Read, LOCKING, None),
        ("SELECT * FROM t FOR UPDATE SKIP LOCKED", Read, LOCKING, None),
        ("SELECT * FROM t FOR SHARE OF t NOWAIT", Read, LOCKING, None),
        ("SELECT 1 FROM t WHERE a = 1 FOR UPDATE OF t", Read, LOCKING, None),
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) x", Read, LOCKING, None),
        ("SELECT * FROM t WHERE a IN (SELECT b FROM u LOCK IN SHARE MODE)", Read, LOCKING, None),
        ("SELECT * FROM t WHERE a = 'x' FOR UPDATE", Read, LOCKING, None),
        ("SELECT 1.5e10 FOR UPDATE", Read, LOCKING, None),
        ("SELECT 1. FOR UPDATE", Read, LOCKING, None),
        ("INSERT INTO t SELECT * FROM s FOR UPDATE", Write, LOCKING, None),
        ("SELECT 'FOR UPDATE'", Read, NO, None),
        ("SELECT \"FOR UPDATE\"", Read, NO, None),
        ("SELECT 1 /* FOR UPDATE */", Read, NO, None),
        ("SELECT 1 -- FOR UPDATE", Read, NO, None),
        ("SELECT 1 # FOR UPDATE", Read, NO, None),
        ("SELECT `for` FROM t", Read, NO, None),
        ("SELECT `for` `update` FROM t", Read, NO, None),
        ("SELECT t.`for` FROM t", Read, NO, None),
        ("SELECT for_update FROM t", Read, NO, None),
        ("SELECT lock_in_share_mode FROM t", Read, NO, None),
        ("SELECT * FROM t FOR SYSTEM_TIME AS OF '2020-01-01'", Read, NO, None),
        // strings, escapes, unterminated text
        ("SELECT 'it\\'s' FROM t FOR UPDATE", Read, LOCKING, None),
        ("SELECT 'it''s', @x", Read, USER_VAR, None),
        ("SELECT \"it\"\"s\" FROM t FOR UPDATE", Read, LOCKING, None),
        ("SELECT \"a\\\"b; FOR UPDATE\"", Read, NO, None),
        ("SELECT `a``b` FROM t LOCK IN SHARE MODE", Read, LOCKING, None),
        ("SELECT 'a\\\\' FROM t WHERE @x", Read, USER_VAR, None),
        ("SELECT N'abc', X'41', B'01', _utf8mb4'x' COLLATE utf8mb4_bin FROM t FOR SHARE", Read, LOCKING, None),
        ("SELECT 'unterminated FOR UPDATE", Read, NO, None),
        ("SELECT \"unterminated @x", Read, NO, None),
        ("SELECT `unterminated", Read, NO, None),
        ("SELECT @x, 'unterminated\\", Read, USER_VAR, None),
        ("SELECT 1 /* unterminated FOR UPDATE", Read, NO, None),
        ("SELECT @'unterminated", Read, USER_VAR, None),
        ("UPDATE t SET a = 'unterminated", Write, NO, None),
        ("/* unterminated SELECT", Other, NO, None),
        ("/*!40101 SET NAMES utf8", Set, NAMES, None),
        // comments
        ("SELECT 1--1", Read, NO, None),
        ("SELECT 1--1 FOR UPDATE", Read, LOCKING, None),
        ("-- comment\nSELECT 1", Read, NO, None),
        ("--\nSELECT 1 FOR UPDATE", Read, LOCKING, None),
        ("--\tSELECT 1", Other, NO, None),
        ("SELECT 1 --", Read, NO, None),
        ("# comment\nSELECT 1", Read, NO, None),
        ("#\nSELECT 1 FOR UPDATE", Read, LOCKING, None),
        ("/* leading */ SELECT 1", Read, NO, None),
        ("/**/SELECT/**/1", Read, NO, None),
        ("/* controller:users,action:index */ SELECT * FROM users WHERE id = 1", Read, NO, None),
        ("/* application:Blog,controller:posts,action:index,db_host:localhost,line:/app/controllers/posts_controller.rb:12:in `index' */ SELECT posts.* FROM posts ORDER BY created_at DESC LIMIT 10", Read, NO, None),
        ("/*+ MAX_EXECUTION_TIME(1000) */ SELECT * FROM t", Read, NO, None),
        ("SELECT /*+ BKA(t) */ LAST_INSERT_ID()", Read, SESSION_FN, None),
        ("", Other, NO, None),
        ("   \n ", Other, NO, None),
        ("/* only a comment */", Other, NO, None),
        ("-- only", Other, NO, None),
        (";", Other, NO, None),
        (";SELECT 1", Other, MULTI, None),
        ("1", Other, NO, None),
        ("foo bar", Other, NO, None),
        // executable comments
        ("/*!40101 SET NAMES utf8 */", Set, NAMES, None),
        ("/*!40101 SET NAMES utf8mb4 */;", Set, NAMES, None),
        ("/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */", Set, SET_USER_VAR, None),
        ("/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */", Set, Flags(SESSION_VAR.0 | USER_VAR.0), None),
        ("/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */", Set, Flags(SET_USER_VAR.0 | SESSION_VAR.0), None),
        ("/*!40103 SET TIME_ZONE='+00:00' */", Set, SESSION_VAR, None),
        ("/*!50001 DROP VIEW IF EXISTS `v`*/", Ddl, NO, None),
        ("SELECT /*!40001 SQL_NO_CACHE */ * FROM t", Read, NO, None),
        ("SELECT * FROM t /*!50000 FOR UPDATE */", Read, LOCKING, None),
        ("SELECT * FROM t /*!50000 FOR */ UPDATE", Read, LOCKING, None),
        ("/*!*/ SELECT 1", Read, NO, None),
        ("/*M!100100 SET STATEMENT max_statement_time=1 FOR */ SELECT 1", Read, STMT_FOR, None),
        ("/*M!*/SELECT /*M! NEXTVAL(s) */", Read, SESSION_FN, None),
        ("/*m!100100 SELECT 1 */", Other, NO, None),
        ("/*!50000 SELECT '*/' */ FOR UPDATE", Read, LOCKING, None),
        ("/*!50110 KEY_BLOCK_SIZE=1024 */", Other, NO, None),
        ("/*!50003 CREATE*/ /*!50020 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1 */", Ddl, NO, None),
        // routing hints
        ("/* rwsplit:primary */ SELECT 1", Read, NO, PRIMARY),
        ("/*+ rwsplit:replica */ SELECT 1", Read, NO, REPLICA),
        ("/*+rwsplit:replica*/ SELECT 1", Read, NO, REPLICA),
        ("SELECT 1 /* RWSPLIT:PRIMARY */", Read, NO, PRIMARY),
        ("SELECT /* RwSplit:Replica */ 1", Read, NO, REPLICA),
        ("-- rwsplit:primary\nSELECT 1", Read, NO, PRIMARY),
        ("-- +rwsplit:replica\nSELECT 1", Read, NO, REPLICA),
        ("# rwsplit:replica\nSELECT 1", Read, NO, REPLICA),
        ("SELECT 1 -- rwsplit:replica", Read, NO, REPLICA),
        ("SELECT 1 #rwsplit:primary", Read, NO, PRIMARY),
        ("SELECT 1; /* rwsplit:primary */", Read, NO, PRIMARY),
        ("UPDATE t SET a = 1 /* rwsplit:replica */", Write, NO, REPLICA),
        ("/*+ rwsplit:replica */ SELECT * FROM t FOR UPDATE", Read, LOCKING, REPLICA),
        ("/* rwsplit:primary */ /* rwsplit:replica */ SELECT 1", Read, NO, PRIMARY),
        ("/* rwsplit:primary */", Other, NO, PRIMARY),
        ("SELECT 'rwsplit:primary'", Read, NO, None),
        ("SELECT '/* rwsplit:primary */'", Read, NO, None),
        ("SELECT `/* rwsplit:primary */`", Read, NO, None),
        ("SELECT \"-- rwsplit:primary\"", Read, NO, None),
        ("/* note: rwsplit:primary */ SELECT 1", Read, NO, None),
        ("/* rwsplit:master */ SELECT 1", Read, NO, None),
        ("/* rwsplit: primary */ SELECT 1", Read, NO, None),
        ("#\nrwsplit:primary", Other, NO, None),
        // WITH
        ("WITH cte AS (SELECT 1) SELECT * FROM cte", Read, NO, None),
        ("WITH RECURSIVE r (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r", Read, NO, None),
        ("with recursive t(n) as (select 1 union select n+1 from t where n<3) cycle n restrict select * from t", Read, NO, None),
        ("WITH x AS (SELECT 1) UPDATE t, x SET t.a = 1", Write, NO, None),
        ("WITH x AS (SELECT id FROM s) DELETE FROM t WHERE id IN (SELECT id FROM x)", Write, NO, None),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", Write, NO, None),
        ("WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b", Read, NO, None),
        ("WITH `my cte` AS (SELECT 1) SELECT * FROM `my cte`", Read, NO, None),
        ("WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", Read, LOCKING, None),
        ("WITH x AS (SELECT LAST_INSERT_ID()) SELECT * FROM x", Read, SESSION_FN, None),
        ("WITH x AS (SELECT 1) (SELECT * FROM x)", Read, NO, None),
        ("WITH x AS (SELECT 1) SELECT a INTO @v FROM x", Read, SELECT_INTO_VAR, None),
        ("WITH x AS (SELECT '(' ) SELECT 1", Read, NO, None),
        ("WITH x AS (SELECT 1", Other, NO, None),
        // writes
        ("INSERT INTO t VALUES (1)", Write, NO, None),
        ("insert into t select * from s", Write, NO, None),
        ("INSERT t SET a = 1", Write, NO, None),
        ("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = a + 1", Write, NO, None),
        ("INSERT INTO t VALUES (1) RETURNING id", Write, NO, None),
        ("DELETE FROM t WHERE id = 1 RETURNING *", Write, NO, None),
        ("REPLACE INTO t VALUES (1)", Write, NO, None),
        ("INSERT INTO t VALUES (LAST_INSERT_ID())", Write, SESSION_FN, None),
        ("INSERT INTO t VALUES (@x)", Write, USER_VAR, None),
        ("UPDATE t SET a = @x := 1", Write, ASSIGNS, None),
        ("INSERT INTO `select` VALUES (1)", Write, NO, None),
        ("UPDATE t SET `for` = 1 WHERE `update` = 2", Write, NO, None),
        ("UPDATE t SET a = 1 WHERE b = 'x; y'", Write, NO, None),
        ("DELETE t1 FROM t1 JOIN t2 USING (id)", Write, NO, None),
        // SET
        ("SET autocommit=0", Set, AUTOCOMMIT, None),
        ("SET autocommit = 1", Set, AUTOCOMMIT, None),
        ("set AutoCommit=1", Set, AUTOCOMMIT, None),
        ("SET @@autocommit=0", Set, AUTOCOMMIT, None),
        ("SET SESSION autocommit=0", Set, AUTOCOMMIT, None),
        ("SET @@session.autocommit = 0", Set, AUTOCOMMIT, None),
        ("SET @@SESSION.AUTOCOMMIT=1", Set, AUTOCOMMIT, None),
        ("SET LOCAL autocommit=0", Set, AUTOCOMMIT, None),
        ("SET @@local.autocommit=0", Set, AUTOCOMMIT, None),
        ("SET autocommit := 0", Set, AUTOCOMMIT, None),
        ("SET GLOBAL autocommit=0", Set, GLOBAL, None),
        ("SET @@global.autocommit=0", Set, GLOBAL, None),
        ("SET PERSIST max_connections=10", Set, GLOBAL, None),
        ("SET PERSIST_ONLY max_connections=10", Set, GLOBAL, None),
        ("SET @@persist.max_connections=10", Set, GLOBAL, None),
        ("SET GLOBAL max_connections = 100, SESSION wait_timeout = 10", Set, Flags(GLOBAL.0 | SESSION_VAR.0), None),
        ("SET @a=1, SESSION sql_mode='', autocommit=0", Set, Flags(SET_USER_VAR.0 | AUTOCOMMIT.0), None),
        ("SET @x = LAST_INSERT_ID()", Set, Flags(SET_USER_VAR.0 | SESSION_FN.0), None),
        ("SET @x = @@last_insert_id", Set, Flags(SET_USER_VAR.0 | SESSION_FN.0), None),
        ("SET @x = GET_LOCK('l', 0)", Set, Flags(SET_USER_VAR.0 | SESSION_FN.0), None),
        ("SET @x := 1", Set, SET_USER_VAR, None),
        ("SET @x = (@y := 2)", Set, Flags(SET_USER_VAR.0 | VAR_ASSIGN.0), None),
        ("SET @x = (SELECT a FROM t WHERE id = 1 FOR UPDATE)", Set, Flags(SET_USER_VAR.0 | LOCKING.0), None),
        ("SET sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), @y = 2", Set, Flags(SESSION_VAR.0 | SET_USER_VAR.0), None),
        ("SET @x = 'a', @y = 'b,c'", Set, SET_USER_VAR, None),
        ("set @`q` = 1", Set, SET_USER_VAR, None),
        ("SET @@session.sql_mode = 'ANSI'", Set, SESSION_VAR, None),
        ("SET sql_log_bin = 0", Set, SESSION_VAR, None),
        ("SET time_zone = '+00:00'", Set, SESSION_VAR, None),
        ("SET insert_id = 5", Set, SESSION_VAR, None),
        ("SET character_set_results = NULL", Set, SESSION_VAR, None),
        ("SET NAMES utf8mb4", Set, NAMES, None),
        ("SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'", Set, NAMES, None),
        ("SET CHARACTER SET utf8", Set, NAMES, None),
        ("SET CHARSET utf8", Set, NAMES, None),
        ("SET NAMES utf8, autocommit = 1", Set, Flags(NAMES.0 | AUTOCOMMIT.0), None),
        ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", Set, NEXT_TRX, None),
        ("SET TRANSACTION READ ONLY", Set, NEXT_TRX, None),
        ("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", Set, SESSION_VAR, None),
        ("SET LOCAL TRANSACTION READ WRITE", Set, SESSION_VAR, None),
        ("SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED", Set, GLOBAL, None),
        ("SET PASSWORD = 'secret'", Write, NO, None),
        ("SET PASSWORD FOR 'bob'@'%' = PASSWORD('x')", Write, NO, None),
        ("SET DEFAULT ROLE ALL TO 'bob'@'localhost'", Write, NO, None),
        ("SET ROLE reporting", Set, SESSION_VAR, None),
        ("SET ROLE NONE", Set, SESSION_VAR, None),
        ("SET STATEMENT max_statement_time=10 FOR SELECT * FROM t", Read, STMT_FOR, None),
        ("SET STATEMENT sort_buffer_size=100000, max_statement_time=1 FOR UPDATE t SET a = 1", Write, STMT_FOR, None),
        ("SET STATEMENT max_statement_time=1 FOR SELECT * FROM t FOR UPDATE", Read, Flags(STMT_FOR.0 | LOCKING.0), None),
        ("SET STATEMENT max_statement_time=1 FOR SELECT a INTO @x FROM t", Read, Flags(STMT_FOR.0 | SELECT_INTO_VAR.0), None),
        ("SET STATEMENT max_statement_time=1", Other, NO, None),
        ("SET", Set, NO, None),
        // transactions
        ("BEGIN WORK", BEGIN, NO, None),
        ("begin;", BEGIN, NO, None),
        ("BEGIN NOT ATOMIC SELECT 1; SELECT 2; END", Other, NO, None),
        ("START TRANSACTION", BEGIN, NO, None),
        ("START TRANSACTION READ ONLY", BEGIN_RO, NO, None),
        ("START TRANSACTION READ WRITE", BEGIN, NO, None),
        ("START TRANSACTION WITH CONSISTENT SNAPSHOT", BEGIN, SNAPSHOT, None),
        ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", BEGIN_RO, SNAPSHOT, None),
        ("start transaction read only, with consistent snapshot", BEGIN_RO, SNAPSHOT, None),
        ("START SLAVE", Other, NO, None),
        ("START REPLICA", Other, NO, None),
        ("COMMIT WORK AND NO CHAIN NO RELEASE", Commit, NO, None),
        ("ROLLBACK", Rollback, NO, None),
        ("ROLLBACK WORK", Rollback, NO, None),
        ("ROLLBACK AND CHAIN", Rollback, NO, None),
        ("ROLLBACK TO SAVEPOINT sp1", Savepoint, NO, None),
        ("ROLLBACK WORK TO sp1", Savepoint, NO, None),
        ("rollback to sp1", Savepoint, NO, None),
        ("SAVEPOINT sp1", Savepoint, NO, None),
        ("RELEASE SAVEPOINT sp1", Savepoint, NO, None),
        ("XA START 'x'", Xa(XaKind::Start), NO, None),
        ("XA BEGIN 'x'", Xa(XaKind::Start), NO, None),
        ("XA END 'x'", Xa(XaKind::End), NO, None),
        ("XA PREPARE 'x'", Xa(XaKind::End), NO, None),
        ("XA COMMIT 'x'", Xa(XaKind::Finish), NO, None),
        ("xa commit 'x' one phase", Xa(XaKind::Finish), NO, None),
        ("XA ROLLBACK 'x'", Xa(XaKind::Finish), NO, None),
        ("XA RECOVER", Xa(XaKind::Recover), NO, None),
        ("XA RECOVER CONVERT XID", Xa(XaKind::Recover), NO, None),
        ("XA", Other, NO, None),
        // EXPLAIN, DESCRIBE, ANALYZE
        ("EXPLAIN SELECT * FROM t", Read, NO, None),
        ("EXPLAIN t", Read, NO, None),
        ("DESCRIBE t", Read, NO, None),
        ("DESC t", Read, NO, None),
        ("describe t a", Read, NO, None),
        ("EXPLAIN FORMAT=JSON SELECT 1", Read, NO, None),
        ("EXPLAIN FORMAT = TREE SELECT 1", Read, NO, None),
        ("EXPLAIN EXTENDED SELECT 1", Read, NO, None),
        ("EXPLAIN UPDATE t SET a = 1", Read, NO, None),
        ("EXPLAIN DELETE FROM t", Read, NO, None),
        ("EXPLAIN INSERT INTO t VALUES (1)", Read, NO, None),
        ("EXPLAIN (SELECT 1)", Read, NO, None),
        ("EXPLAIN WITH x AS (SELECT 1) SELECT * FROM x", Read, NO, None),
        ("EXPLAIN SELECT * FROM t FOR UPDATE", Read, LOCKING, None),
        ("EXPLAIN ANALYZE SELECT * FROM t", Read, NO, None),
        ("EXPLAIN ANALYZE UPDATE t SET a = 1", Write, NO, None),
        ("EXPLAIN ANALYZE FORMAT=TREE DELETE FROM t", Write, NO, None),
        ("EXPLAIN ANALYZE WITH x AS (SELECT 1) UPDATE t SET a = 1", Write, NO, None),
        ("EXPLAIN FOR CONNECTION 12", Other, NO, None),
        ("ANALYZE SELECT * FROM t", Read, NO, None),
        ("ANALYZE FORMAT=JSON SELECT 1", Read, NO, None),
        ("ANALYZE UPDATE t SET a = 1", Write, NO, None),
        ("ANALYZE DELETE FROM t", Write, NO, None),
        ("ANALYZE INSERT INTO t VALUES (1)", Write, NO, None),
        ("ANALYZE REPLACE INTO t VALUES (1)", Write, NO, None),
        ("ANALYZE TABLE t", Ddl, NO, None),
        ("ANALYZE NO_WRITE_TO_BINLOG TABLE t", Ddl, NO, None),
        ("ANALYZE LOCAL TABLE t", Ddl, NO, None),
        // SHOW and diagnostics
        ("SHOW WARNINGS", Diagnostics, NO, None),
        ("SHOW WARNINGS LIMIT 10", Diagnostics, NO, None),
        ("SHOW ERRORS", Diagnostics, NO, None),
        ("SHOW COUNT(*) WARNINGS", Diagnostics, NO, None),
        ("show count(*) errors", Diagnostics, NO, None),
        ("SHOW PROFILE", Diagnostics, NO, None),
        ("SHOW PROFILE CPU FOR QUERY 2", Diagnostics, NO, None),
        ("SHOW PROFILES", Diagnostics, NO, None),
        ("GET DIAGNOSTICS @n = NUMBER", Diagnostics, ASSIGNS, None),
        ("GET CURRENT DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT", Diagnostics, ASSIGNS, None),
        ("GET STACKED DIAGNOSTICS CONDITION 1 @s = RETURNED_SQLSTATE, @m = MESSAGE_TEXT", Diagnostics, ASSIGNS, None),
        ("GET something", Other, NO, None),
        ("SHOW TABLES", Show, NO, None),
        ("SHOW FULL TABLES FROM db LIKE 'a%'", Show, NO, None),
        ("SHOW COLUMNS FROM t", Show, NO, None),
        ("SHOW FULL COLUMNS FROM t", Show, NO, None),
        ("show extended full columns from t", Show, NO, None),
        ("SHOW FIELDS FROM t", Show, NO, None),
        ("SHOW DATABASES", Show, NO, None),
        ("SHOW SCHEMAS", Show, NO, None),
        ("SHOW INDEX FROM t", Show, NO, None),
        ("SHOW INDEXES FROM t", Show, NO, None),
        ("SHOW KEYS FROM t", Show, NO, None),
        ("SHOW CREATE TABLE t", Show, NO, None),
        ("SHOW CREATE VIEW v", Show, NO, None),
        ("SHOW TABLE STATUS", Show, NO, None),
        ("SHOW CHARACTER SET", Show, NO, None),
        ("SHOW CHARSET", Show, NO, None),
        ("SHOW COLLATION", Show, NO, None),
        ("SHOW TRIGGERS", Show, NO, None),
        ("SHOW EVENTS", Show, NO, None),
        ("SHOW PROCEDURE STATUS", Show, NO, None),
        ("SHOW FUNCTION STATUS", Show, NO, None),
        ("SHOW OPEN TABLES", Show, NO, None),
        ("SHOW PLUGINS", Show, NO, None),
        ("SHOW ENGINES", Show, NO, None),
        ("SHOW STORAGE ENGINES", Show, NO, None),
        ("SHOW PRIVILEGES", Show, NO, None),
        ("SHOW GRANTS", Show, NO, None),
        ("SHOW GRANTS FOR 'u'@'h'", Show, NO, None),
        ("SHOW VARIABLES LIKE 'x'", Show, NO, None),
        ("SHOW SESSION VARIABLES", Show, NO, None),
        ("SHOW GLOBAL VARIABLES", Show, NO, None),
        ("SHOW MASTER STATUS", Other, NO, None),
        ("SHOW BINARY LOG STATUS", Other, NO, None),
        ("SHOW SLAVE STATUS", Other, NO, None),
        ("SHOW REPLICA STATUS", Other, NO, None),
        ("SHOW PROCESSLIST", Other, NO, None),
        ("SHOW FULL PROCESSLIST", Other, NO, None),
        ("SHOW STATUS", Other, NO, None),
        ("SHOW SESSION STATUS", Other, NO, None),
        ("SHOW GLOBAL STATUS", Other, NO, None),
        ("SHOW ENGINE INNODB STATUS", Other, NO, None),
        ("SHOW BINLOG EVENTS", Other, NO, None),
        ("SHOW BINARY LOGS", Other, NO, None),
        ("SHOW PROCEDURE CODE p", Other, NO, None),
        ("SHOW", Other, NO, None),
        // DDL
        ("CREATE TABLE t (a INT)", Ddl, NO, None),
        ("CREATE TEMPORARY TABLE t (a INT)", Ddl, TEMPORARY, None),
        ("CREATE OR REPLACE TEMPORARY TABLE t (a INT)", Ddl, TEMPORARY, None),
        ("create temporary table if not exists t like s", Ddl, TEMPORARY, None),
        ("CREATE TEMPORARY SEQUENCE s", Ddl, TEMPORARY, None),
        ("CREATE TABLE t SELECT * FROM s", Ddl, NO, None),
        ("CREATE TABLE t AS SELECT LAST_INSERT_ID() AS id", Ddl, SESSION_FN, None),
        ("CREATE INDEX i ON t (a)", Ddl, NO, None),
        ("CREATE DATABASE d", Ddl, NO, None),
        ("CREATE SEQUENCE s", Ddl, NO, None),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", Ddl, NO, None),
        ("CREATE ALGORITHM=MERGE DEFINER=`root`@`%` SQL SECURITY DEFINER VIEW v AS SELECT 1", Ddl, NO, None),
        ("CREATE USER 'bob'@'%' IDENTIFIED BY 'x'", Ddl, NO, None),
        ("CREATE DEFINER=root@localhost PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", Ddl, NO, None),
        ("CREATE DEFINER = CURRENT_USER() FUNCTION f() RETURNS INT BEGIN RETURN 1; END", Ddl, NO, None),
        ("CREATE PROCEDURE p() BEGIN UPDATE t SET a = 1; END", Ddl, NO, None),
        ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW UPDATE s SET a = 1", Ddl, NO, None),
        ("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO BEGIN DELETE FROM t; END", Ddl, NO, None),
        ("CREATE TABLE event (id INT); SELECT 1", Ddl, MULTI, None),
        ("ALTER TABLE t ADD COLUMN b INT", Ddl, NO, None),
        ("ALTER EVENT e DO BEGIN SELECT 1; END", Ddl, NO, None),
        ("DROP TABLE t", Ddl, NO, None),
        ("DROP TEMPORARY TABLE IF EXISTS t", Ddl, TEMPORARY, None),
        ("DROP PREPARE s", SqlPrepared, NO, None),
        ("DROP VIEW v", Ddl, NO, None),
        ("RENAME TABLE a TO b", Ddl, NO, None),
        ("TRUNCATE TABLE t", Ddl, NO, None),
        ("TRUNCATE t", Ddl, NO, None),
        ("GRANT SELECT ON db.* TO 'u'@'%'", Ddl, NO, None),
        ("REVOKE ALL ON *.* FROM 'u'@'%'", Ddl, NO, None),
        ("OPTIMIZE TABLE t", Ddl, NO, None),
        ("REPAIR TABLE t", Ddl, NO, None),
        ("FLUSH PRIVILEGES", Ddl, NO, None),
        ("FLUSH TABLES", Ddl, NO, None),
        ("FLUSH TABLES WITH READ LOCK", Lock, NO, None),
        ("FLUSH TABLES t FOR EXPORT", Lock, NO, None),
        ("INSTALL PLUGIN p SONAME 'p.so'", Ddl, NO, None),
        ("UNINSTALL PLUGIN p", Ddl, NO, None),
        ("IMPORT TABLE FROM '/tmp/t.sdi'", Ddl, NO, None),
        // locks, prepared statements, handlers and the rest
        ("LOCK TABLES t READ", Lock, NO, None),
        ("LOCK TABLE t WRITE", Lock, NO, None),
        ("lock tables t1 read local, t2 write", Lock, NO, None),
        ("LOCK INSTANCE FOR BACKUP", Lock, NO, None),
        ("UNLOCK TABLES", Unlock, NO, None),
        ("UNLOCK TABLE", Unlock, NO, None),
        ("UNLOCK INSTANCE", Unlock, NO, None),
        ("BACKUP STAGE START", Lock, NO, None),
        ("BACKUP STAGE BLOCK_COMMIT", Lock, NO, None),
        ("BACKUP LOCK t", Lock, NO, None),
        ("BACKUP UNLOCK", Unlock, NO, None),
        ("PREPARE s FROM 'SELECT 1'", SqlPrepared, NO, None),
        ("PREPARE s FROM @sql", SqlPrepared, USER_VAR, None),
        ("EXECUTE s", SqlPrepared, NO, None),
        ("EXECUTE s USING @a, @b", SqlPrepared, USER_VAR, None),
        ("DEALLOCATE PREPARE s", SqlPrepared, NO, None),
        ("EXECUTE IMMEDIATE 'SELECT 1'", Other, NO, None),
        ("HANDLER t OPEN", Handler, NO, None),
        ("HANDLER t READ FIRST", Handler, NO, None),
        ("HANDLER t READ `PRIMARY` NEXT", Handler, NO, None),
        ("HANDLER t CLOSE", Handler, NO, None),
        ("KILL 5", Kill, NO, None),
        ("KILL QUERY 5", Kill, NO, None),
        ("KILL CONNECTION 5", Kill, NO, None),
        ("CALL p()", Call, NO, None),
        ("CALL p(@x, LAST_INSERT_ID())", Call, Flags(USER_VAR.0 | SESSION_FN.0), None),
        ("call db.p", Call, NO, None),
        ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", LoadData, NO, None),
        ("LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t FIELDS TERMINATED BY ','", LoadData, NO, None),
        ("LOAD XML LOCAL INFILE 'x.xml' INTO TABLE t", LoadData, NO, None),
        ("LOAD INDEX INTO CACHE t", Other, NO, None),
        ("USE db", Use, NO, None),
        ("use `my db`", Use, NO, None),
        ("DO GET_LOCK('a', 1)", Other, SESSION_FN, None),
        ("DO RELEASE_LOCK('a')", Other, SESSION_FN, None),
        ("DO SLEEP(1)", Other, NO, None),
        ("DO @x := 1", Other, ASSIGNS, None),
        ("SIGNAL SQLSTATE '45000'", Other, NO, None),
        ("CHANGE MASTER TO MASTER_HOST='h'", Other, NO, None),
        ("RESET MASTER", Other, NO, None),
        ("PURGE BINARY LOGS TO 'x'", Other, NO, None),
        // several statements
        ("SELECT 1;", Read, NO, None),
        ("SELECT 1 ; ; ", Read, NO, None),
        ("SELECT 1; SELECT 2", Read, MULTI, None),
        ("SELECT ';'", Read, NO, None),
        ("SELECT 1 /* ; */", Read, NO, None),
        ("SELECT 1 -- ;\n", Read, NO, None),
        ("SELECT 1; -- done", Read, NO, None),
        ("SELECT 1;\n-- trailing\n# more\n/* and more */ ;", Read, NO, None),
        ("SELECT 1;\nUPDATE t SET a=1", Read, MULTI, None),
        ("SELECT 1; SELECT LAST_INSERT_ID()", Read, Flags(MULTI.0 | SESSION_FN.0), None),
        ("SELECT 1; INSERT INTO t VALUES (1)", Read, MULTI, None),
        ("UPDATE t SET a=1; SELECT a INTO @x FROM t", Write, Flags(MULTI.0 | SELECT_INTO_VAR.0), None),
        ("SET autocommit=0; SELECT 1", Set, Flags(AUTOCOMMIT.0 | MULTI.0), None),
        ("BEGIN; SELECT 1; COMMIT", BEGIN, MULTI, None),
        ("SELECT '\\\\'; SELECT 2", Read, MULTI, None),
        ("SELECT 'a\\'; SELECT 2", Read, NO, None),
        ("SELECT 1 FOR; UPDATE t SET a = 1", Read, MULTI, None),
    ];

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for &(sql, kind, flags, hint) in ROWS {
            let expected = Statement { kind, flags, hint };
            let got = classify(sql.as_bytes());
            if got != expected {
                failures.push(format!(
                    "{sql:?}\n    expected {expected:?}\n    got      {got:?}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} statements misclassified:\n{}",
            failures.len(),
            ROWS.len(),
            failures.join("\n")
        );
    }

    fn classify_by_tokens(sql: &[u8]) -> Statement {
        let mut scanner = Scanner::new(sql);
        scanner.tail_by_tokens = true;
        let kind = scanner.statement();
        scanner.finish_statement();
        scanner.following_statements();
        Statement {
            kind,
            flags: scanner.flags,
            hint: scanner.lexer.hint,
        }
    }

    /// The tail loop handles words, numbers and operators itself; it must read every text as
    /// the lexer does. Texts: the table's rows, and pseudo-random strings of the pieces
    /// whose reading depends on what came before.
    #[test]
    fn the_tail_fast_path_agrees_with_the_lexer() {
        const PIECES: &[&str] = &[
            "FOR",
            "UPDATE",
            "LOCK",
            "IN",
            "SHARE",
            "MODE",
            "INTO",
            "NEXT",
            "VALUE",
            "nextval",
            "SELECT",
            "@a",
            ":=",
            ":",
            "@@last_insert_id",
            "/*!",
            "*/",
            "/* rwsplit:primary */",
            "-- x\n",
            "(",
            ")",
            ";",
            "'",
            "`",
            ".",
            ",",
            "-",
            "*",
            "1",
            "t1",
            "\\",
        ];
        let mut texts: Vec<String> = ROWS.iter().map(|row| row.0.to_string()).collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..100_000 {
            let mut text = String::new();
            for _ in 0..2 + random() % 7 {
                text.push_str(PIECES[(random() % PIECES.len() as u64) as usize]);
                if random() % 4 != 0 {
                    text.push(' ');
                }
            }
            texts.push(text);
        }
        for text in &texts {
            assert_eq!(
                classify(text.as_bytes()),
                classify_by_tokens(text.as_bytes()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_statement_after_a_diagnostics_one_is_seen() {
        for sql in [
            "SHOW WARNINGS; DELETE FROM t",
            "GET DIAGNOSTICS @n = NUMBER; DELETE FROM t",
        ] {
            let statement = classify(sql.as_bytes());
            assert_eq!(statement.kind, Kind::Diagnostics, "{sql}");
            assert!(statement.flags.contains(Flags::MULTI), "{sql}");
        }
    }

    #[test]
    fn table_is_large_enough() {
        assert!(ROWS.len() >= 220, "{} rows", ROWS.len());
    }

    #[test]
    fn every_prefix_is_classified_without_panicking() {
        for &(sql, ..) in ROWS {
            for end in 0..=sql.len() {
                classify(&sql.as_bytes()[..end]);
            }
        }
    }

    /// Bytes that matter to the scanner, so random text often opens strings and comments.
    const ALPHABET: &[u8] =
        b"'\"`\\/*!+M-#@;:=(),. \n\tselctforupdatINTOlockSHARE0123456789\x80\xff\x00";

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_bytes_are_classified_without_panicking() {
        let mut random = XorShift(0x2545_f491_4f6c_dd1d);
        let mut text = Vec::new();
        for round in 0..5000 {
            text.clear();
            let len = (random.next() % 64) as usize;
            for _ in 0..len {
                let r = random.next();
                let byte = if round % 2 == 0 {
                    ALPHABET[(r % ALPHABET.len() as u64) as usize]
                } else {
                    r as u8
                };
                text.push(byte);
            }
            classify(&text);
        }
    }

    #[test]
    fn invalid_utf8_is_read_as_bytes() {
        let statement = classify(b"SELECT \xff\xfe FROM t WHERE x = '\xc3' FOR UPDATE");
        assert_eq!(statement.kind, Read);
        assert_eq!(statement.flags, LOCKING);
    }

    #[test]
    fn deep_nesting_is_classified_without_recursion() {
        let mut sql = "(".repeat(100_000);
        sql.push_str("SELECT 1");
        assert_eq!(classify(sql.as_bytes()).kind, Read);
        let explains = "EXPLAIN ".repeat(10_000) + "SELECT 1";
        assert_eq!(classify(explains.as_bytes()).kind, Read);
    }
}
