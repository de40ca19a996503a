//! The bench's database: opensrv-mysql answering at once, so that what the bench measures is
//! the relay and not a server. It knows sysbench's point select (text and prepared) and
//! what the proxy's health checks ask; anything else gets an error, so that a statement
//! the bench did not expect fails loudly instead of being timed.
//!
//! Its answers have opensrv's shape (PROTOCOL-NOTES.md): minimal column definitions, and
//! status flags 0 in every result-set terminator and in the login OK. Only the OKs the shim
//! builds itself carry flags; see `on_query`'s `SET`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use mysql_common::scramble::scramble_native;
use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind, InitWriter,
    OkResponse, ParamParser, QueryResultWriter, StatementMetaWriter, StatusFlags, ValueInner,
};
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::net::TcpListener;

/// sysbench's `oltp_point_select`, as it prepares it.
pub const POINT_SELECT: &str = "SELECT c FROM sbtest1 WHERE id=?";
/// The same statement as the text protocol sends it, before the id.
pub const POINT_SELECT_TEXT: &str = "SELECT c FROM sbtest1 WHERE id=";

/// Accounts the backend accepts: the application's and the health checks'.
pub const USERS: [(&str, &str); 2] = [("sbtest", "sbtest"), ("monitor", "monitor")];

/// MySQL's default net_buffer_length: a server collects a response in a buffer this size and
/// writes it at once. opensrv writes every packet with its own syscall; without the buffer
/// each row would reach the proxy as its own segment, which no real server does.
const NET_BUFFER: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// sysbench's `c`: CHAR(120) of digit groups, here the column's full width.
pub static C_VALUE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut value: Vec<u8> = (0..11u64)
        .flat_map(|i| format!("{:011}-", 83868641912 + i * 1_000_000_007).into_bytes())
        .collect();
    value.truncate(120);
    value
});

fn column(table: &str, name: &str, coltype: ColumnType, colflags: ColumnFlags) -> Column {
    Column {
        table: table.to_owned(),
        column: name.to_owned(),
        coltype,
        colflags,
    }
}

static POINT_COLUMNS: LazyLock<[Column; 1]> = LazyLock::new(|| {
    [column(
        "sbtest1",
        "c",
        ColumnType::MYSQL_TYPE_STRING,
        ColumnFlags::NOT_NULL_FLAG,
    )]
});

static POINT_PARAMS: LazyLock<[Column; 1]> = LazyLock::new(|| {
    [column(
        "",
        "?",
        ColumnType::MYSQL_TYPE_LONGLONG,
        ColumnFlags::empty(),
    )]
});

/// What mysql_async asks right after logging in (the health checks' connections).
static SETTINGS_COLUMNS: LazyLock<[Column; 2]> = LazyLock::new(|| {
    ["@@max_allowed_packet", "@@wait_timeout"].map(|name| {
        column(
            "",
            name,
            ColumnType::MYSQL_TYPE_LONGLONG,
            ColumnFlags::UNSIGNED_FLAG,
        )
    })
});

static READ_ONLY_COLUMNS: LazyLock<[Column; 1]> = LazyLock::new(|| {
    [column(
        "",
        "@@global.read_only",
        ColumnType::MYSQL_TYPE_LONGLONG,
        ColumnFlags::empty(),
    )]
});

/// The `SHOW REPLICA STATUS` columns `topology::monitor` reads (MySQL 8.0.22+ names).
static REPLICA_STATUS_COLUMNS: LazyLock<[Column; 5]> = LazyLock::new(|| {
    let text = |name| {
        column(
            "",
            name,
            ColumnType::MYSQL_TYPE_VAR_STRING,
            ColumnFlags::empty(),
        )
    };
    [
        text("Replica_IO_Running"),
        text("Replica_SQL_Running"),
        column(
            "",
            "Seconds_Behind_Source",
            ColumnType::MYSQL_TYPE_LONGLONG,
            ColumnFlags::UNSIGNED_FLAG,
        ),
        text("Last_IO_Error"),
        text("Last_SQL_Error"),
    ]
});

/// Starts a backend on a loopback port of its own, on the current runtime.
pub async fn start(role: Role) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        let connection_ids = AtomicU32::new(1);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shim = Fake {
                role,
                connection_id: connection_ids.fetch_add(1, Ordering::Relaxed),
                next_statement: 1,
            };
            let (read, write) = stream.into_split();
            let read = OneFrameAtATime::new(read);
            let write = BufWriter::with_capacity(NET_BUFFER, write);
            // Ends with an error for peers that leave during the handshake (the proxy's
            // probe of the greeting): nothing to report.
            tokio::spawn(AsyncMysqlIntermediary::run_on(shim, read, write));
        }
    });
    addr
}

/// One connection's server side.
struct Fake {
    role: Role,
    connection_id: u32,
    next_statement: u32,
}

impl Fake {
    fn read_only(&self) -> i64 {
        i64::from(self.role == Role::Replica)
    }
}

#[async_trait]
impl<W: AsyncWrite + Send + Unpin> AsyncMysqlShim<W> for Fake {
    type Error = io::Error;

    fn version(&self) -> String {
        "8.0.36-opensrv-bench".to_owned()
    }

    fn connect_id(&self) -> u32 {
        self.connection_id
    }

    /// opensrv accepts any password by default; checking it here makes a wrong scramble in
    /// the proxy's backend login fail the bench instead of passing unnoticed.
    async fn authenticate(
        &self,
        _plugin: &str,
        user: &[u8],
        salt: &[u8],
        auth_data: &[u8],
    ) -> bool {
        USERS.iter().any(|(name, password)| {
            name.as_bytes() == user
                && scramble_native(salt, password.as_bytes()).is_some_and(|s| s[..] == *auth_data)
        })
    }

    async fn on_init<'a>(
        &'a mut self,
        _schema: &'a str,
        writer: InitWriter<'a, W>,
    ) -> io::Result<()> {
        writer.ok().await
    }

    async fn on_prepare<'a>(
        &'a mut self,
        query: &'a str,
        info: StatementMetaWriter<'a, W>,
    ) -> io::Result<()> {
        if query != POINT_SELECT {
            return info
                .error(ErrorKind::ER_NOT_SUPPORTED_YET, unknown(query).as_bytes())
                .await;
        }
        let id = self.next_statement;
        self.next_statement += 1;
        info.reply(id, &POINT_PARAMS[..], &POINT_COLUMNS[..]).await
    }

    async fn on_execute<'a>(
        &'a mut self,
        _id: u32,
        params: ParamParser<'a>,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        // The id must arrive as the integer the client bound: the proxy rewrites the
        // statement id and may re-send the parameter types, never the value.
        let id = params.into_iter().next().map(|p| p.value.into_inner());
        if !matches!(id, Some(ValueInner::Int(1..))) {
            let message = format!("expected a positive integer id, got {id:?}");
            return results
                .error(ErrorKind::ER_WRONG_ARGUMENTS, message.as_bytes())
                .await;
        }
        let mut rows = results.start(&POINT_COLUMNS[..]).await?;
        rows.write_row([&C_VALUE[..]]).await?;
        rows.finish().await
    }

    async fn on_close(&mut self, _: u32) {}

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        if query.starts_with(POINT_SELECT_TEXT) {
            let mut rows = results.start(&POINT_COLUMNS[..]).await?;
            rows.write_row([&C_VALUE[..]]).await?;
            return rows.finish().await;
        }
        match query {
            "SELECT @@max_allowed_packet,@@wait_timeout" => {
                let mut rows = results.start(&SETTINGS_COLUMNS[..]).await?;
                rows.write_row([64u64 << 20, 28800]).await?;
                rows.finish().await
            }
            "SELECT @@global.read_only" => {
                let mut rows = results.start(&READ_ONLY_COLUMNS[..]).await?;
                rows.write_row([self.read_only()]).await?;
                rows.finish().await
            }
            "SHOW REPLICA STATUS" => {
                let mut rows = results.start(&REPLICA_STATUS_COLUMNS[..]).await?;
                if self.role == Role::Replica {
                    // Both threads running, caught up.
                    rows.write_col("Yes")?;
                    rows.write_col("Yes")?;
                    rows.write_col(0u64)?;
                    rows.write_col("")?;
                    rows.write_col("")?;
                    rows.end_row().await?;
                }
                rows.finish().await
            }
            // opensrv's login OK says status 0, which a server sends when autocommit is off:
            // the proxy then keeps every read on the primary, as it must inside a
            // transaction. Clients that set autocommit when they connect (Connector/J does)
            // get the flags of a server in autocommit mode, as MySQL sends them.
            _ if query.starts_with("SET ") => {
                let ok = OkResponse {
                    status_flags: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
                    ..OkResponse::default()
                };
                results.completed(ok).await
            }
            _ => {
                results
                    .error(ErrorKind::ER_NOT_SUPPORTED_YET, unknown(query).as_bytes())
                    .await
            }
        }
    }
}

fn unknown(query: &str) -> String {
    format!("the bench backend does not know this statement: {query}")
}

/// Gives opensrv at most one frame per read. opensrv-mysql 0.7.0's
/// `PacketReader::next_async` replaces its buffer when a read brought more than the packet
/// it returns, while that packet still points into the old buffer (a use-after-free behind
/// its `unsafe`): pipelined commands, or a COM_STMT_CLOSE and the next command in one
/// segment, reach the shim as garbage.
struct OneFrameAtATime<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Bytes read and not handed out yet are `buf[start..end]`.
    start: usize,
    end: usize,
    /// What is left of the frame being handed out, header included.
    left_in_frame: usize,
}

impl<R> OneFrameAtATime<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            left_in_frame: 0,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for OneFrameAtATime<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let buffered = &this.buf[this.start..this.end];
            if this.left_in_frame == 0 && buffered.len() >= 4 {
                let len = usize::from(buffered[0])
                    | usize::from(buffered[1]) << 8
                    | usize::from(buffered[2]) << 16;
                this.left_in_frame = 4 + len;
            }
            if this.left_in_frame > 0 && !buffered.is_empty() {
                let n = this.left_in_frame.min(buffered.len()).min(out.remaining());
                out.put_slice(&buffered[..n]);
                this.start += n;
                this.left_in_frame -= n;
                return Poll::Ready(Ok(()));
            }
            // Less than a header, or nothing, is buffered: read more.
            this.buf.copy_within(this.start..this.end, 0);
            this.end -= this.start;
            this.start = 0;
            let mut into = ReadBuf::new(&mut this.buf[this.end..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
            let read = into.filled().len();
            if read == 0 {
                // End of stream: whatever is left (a cut header) goes out as it is.
                let n = (this.end - this.start).min(out.remaining());
                out.put_slice(&this.buf[this.start..this.start + n]);
                this.start += n;
                return Poll::Ready(Ok(()));
            }
            this.end += read;
        }
    }
}
