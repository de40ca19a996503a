//! Where a server's response to a command ends, decided from the first bytes of each packet
//! (MySQL Internals: "Text Resultset", "Binary Protocol Resultset", "COM_STMT_PREPARE
//! Response", "COM_FIELD_LIST"). The tracker sees packets one frame at a time and never
//! needs more than a short prefix of each, so rows stream through without being decoded.

use super::codes::{SERVER_MORE_RESULTS_EXISTS, SERVER_STATUS_CURSOR_EXISTS};
use super::packet::MAX_FRAME;

/// How many payload bytes of a packet the tracker needs to see: enough for an OK packet's
/// header, two length-encoded integers of up to 9 bytes and the status flags.
pub const PREFIX_LEN: usize = 32;

/// The shape of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// COM_QUERY: text result sets, OK, ERR, LOCAL INFILE requests; several with multi-results.
    Query,
    /// COM_STMT_EXECUTE: binary result sets, OK or ERR; a cursor ends it after the metadata.
    Execute,
    /// COM_STMT_PREPARE: PREPARE_OK, then parameter and column definitions.
    Prepare,
    /// COM_FIELD_LIST: column definitions up to an EOF.
    FieldList,
    /// COM_STMT_FETCH: binary rows up to a terminator.
    Fetch,
    /// Everything else that is answered: exactly one packet.
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The response goes on.
    More,
    /// The server asked for a LOCAL INFILE upload: the client's file packets come next.
    LocalInfile,
    /// This packet is the last of the response.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed server response: {0}")]
pub struct ResponseError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ResultStart,
    ColumnDefs { remaining: u64 },
    MetadataEof,
    Rows,
    ParamDefs { remaining: u64, columns: u64 },
    ParamsEof { columns: u64 },
    PreparedColumnDefs { remaining: u64 },
    PreparedColumnsEof,
    FieldDefs,
    Done,
}

#[derive(Debug)]
pub struct ResponseTracker {
    kind: ResponseKind,
    deprecate_eof: bool,
    state: State,
    /// The previous frame was full, so the next one continues the same logical packet.
    continued: bool,
    status_flags: Option<u16>,
    error: bool,
    packets: u64,
}

impl ResponseTracker {
    pub fn new(kind: ResponseKind, deprecate_eof: bool) -> Self {
        let state = match kind {
            ResponseKind::Fetch => State::Rows,
            ResponseKind::FieldList => State::FieldDefs,
            _ => State::ResultStart,
        };
        Self {
            kind,
            deprecate_eof,
            state,
            continued: false,
            status_flags: None,
            error: false,
            packets: 0,
        }
    }

    /// Status flags of the last OK/EOF seen, the session's state after the command.
    pub fn status_flags(&self) -> Option<u16> {
        self.status_flags
    }

    /// The response ended with an ERR packet.
    pub fn is_error(&self) -> bool {
        self.error
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether everything the server sent so far forms whole packets at a point where an
    /// ERR packet may stand in for the rest: before the first packet, or between rows.
    pub fn can_end_with_error(&self) -> bool {
        !self.continued && matches!(self.state, State::ResultStart | State::Rows)
            || self.packets == 0
    }

    /// Feeds one frame: `prefix` is the start of its payload (at least `min(len, PREFIX_LEN)`
    /// bytes), `frame_len` its full payload length.
    pub fn on_frame(&mut self, prefix: &[u8], frame_len: usize) -> Result<Step, ResponseError> {
        if self.state == State::Done {
            return Err(ResponseError("packet after the end of the response"));
        }
        let was_continued = self.continued;
        self.continued = frame_len == MAX_FRAME;
        if was_continued {
            return Ok(Step::More);
        }
        self.packets += 1;
        let step = self.on_packet(prefix, frame_len)?;
        if step == Step::Done {
            if self.continued {
                return Err(ResponseError("final packet longer than one frame"));
            }
            self.state = State::Done;
        }
        Ok(step)
    }

    fn on_packet(&mut self, p: &[u8], len: usize) -> Result<Step, ResponseError> {
        let first = *p.first().ok_or(ResponseError("empty packet"))?;
        match self.state {
            State::ResultStart => self.result_start(p, first),
            State::ColumnDefs { remaining } => {
                self.state = match (remaining - 1, self.deprecate_eof) {
                    (0, true) => State::Rows,
                    (0, false) => State::MetadataEof,
                    (left, _) => State::ColumnDefs { remaining: left },
                };
                Ok(Step::More)
            }
            State::MetadataEof => {
                if !self.is_terminator(first, len) {
                    return Err(ResponseError("column definitions not followed by EOF"));
                }
                let status = eof_status(p);
                self.status_flags = Some(status);
                if status & SERVER_STATUS_CURSOR_EXISTS != 0 {
                    return Ok(Step::Done);
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            State::Rows => {
                if first == 0xff {
                    self.error = true;
                    return Ok(Step::Done);
                }
                if !self.is_terminator(first, len) {
                    return Ok(Step::More);
                }
                let status = self.terminator_status(p);
                self.status_flags = Some(status);
                if self.kind != ResponseKind::Fetch && status & SERVER_MORE_RESULTS_EXISTS != 0 {
                    self.state = State::ResultStart;
                    return Ok(Step::More);
                }
                Ok(Step::Done)
            }
            State::ParamDefs { remaining, columns } => {
                self.state = match (remaining - 1, self.deprecate_eof) {
                    (0, false) => State::ParamsEof { columns },
                    (0, true) => prepared_columns(columns),
                    (left, _) => State::ParamDefs {
                        remaining: left,
                        columns,
                    },
                };
                Ok(self.step_for_state())
            }
            State::ParamsEof { columns } => {
                self.expect_eof(first, len)?;
                self.state = prepared_columns(columns);
                Ok(self.step_for_state())
            }
            State::PreparedColumnDefs { remaining } => {
                self.state = match (remaining - 1, self.deprecate_eof) {
                    (0, false) => State::PreparedColumnsEof,
                    (0, true) => State::Done,
                    (left, _) => State::PreparedColumnDefs { remaining: left },
                };
                Ok(self.step_for_state())
            }
            State::PreparedColumnsEof => {
                self.expect_eof(first, len)?;
                Ok(Step::Done)
            }
            State::FieldDefs => {
                if first == 0xff {
                    self.error = true;
                    return Ok(Step::Done);
                }
                if self.is_terminator(first, len) {
                    self.status_flags = Some(self.terminator_status(p));
                    return Ok(Step::Done);
                }
                Ok(Step::More)
            }
            State::Done => unreachable!("checked in on_frame"),
        }
    }

    fn result_start(&mut self, p: &[u8], first: u8) -> Result<Step, ResponseError> {
        if self.kind == ResponseKind::Single {
            if first == 0xff {
                self.error = true;
            } else if first == 0x00 || first == 0xfe {
                self.status_flags = ok_status(p).or(self.status_flags);
            }
            return Ok(Step::Done);
        }
        match first {
            0xff => {
                self.error = true;
                Ok(Step::Done)
            }
            0x00 if self.kind == ResponseKind::Prepare => {
                let columns = u16_at(p, 5).ok_or(ResponseError("short PREPARE_OK"))? as u64;
                let params = u16_at(p, 7).ok_or(ResponseError("short PREPARE_OK"))? as u64;
                self.state = if params > 0 {
                    State::ParamDefs {
                        remaining: params,
                        columns,
                    }
                } else {
                    prepared_columns(columns)
                };
                Ok(self.step_for_state())
            }
            0x00 => {
                let status = ok_status(p).ok_or(ResponseError("short OK packet"))?;
                self.status_flags = Some(status);
                if status & SERVER_MORE_RESULTS_EXISTS != 0 {
                    Ok(Step::More)
                } else {
                    Ok(Step::Done)
                }
            }
            0xfb if self.kind == ResponseKind::Query => Ok(Step::LocalInfile),
            _ if self.kind == ResponseKind::Prepare => Err(ResponseError(
                "unexpected first packet of a PREPARE response",
            )),
            _ => {
                let columns = lenenc_int(p)
                    .map(|(n, _)| n)
                    .filter(|&n| n > 0)
                    .ok_or(ResponseError("bad column count"))?;
                self.state = State::ColumnDefs { remaining: columns };
                Ok(Step::More)
            }
        }
    }

    fn step_for_state(&self) -> Step {
        if self.state == State::Done {
            Step::Done
        } else {
            Step::More
        }
    }

    fn expect_eof(&self, first: u8, len: usize) -> Result<(), ResponseError> {
        if self.deprecate_eof || !self.is_terminator(first, len) {
            return Err(ResponseError("definitions not followed by EOF"));
        }
        Ok(())
    }

    /// An EOF packet, or with CLIENT_DEPRECATE_EOF the OK packet that replaces it. A row can
    /// start with 0xFE too (a length-encoded integer of 8 bytes), so the length decides.
    fn is_terminator(&self, first: u8, len: usize) -> bool {
        first == 0xfe
            && if self.deprecate_eof {
                len < MAX_FRAME
            } else {
                len < 9
            }
    }

    fn terminator_status(&self, p: &[u8]) -> u16 {
        if self.deprecate_eof {
            ok_status(p).unwrap_or(0)
        } else {
            eof_status(p)
        }
    }
}

fn prepared_columns(columns: u64) -> State {
    if columns > 0 {
        State::PreparedColumnDefs { remaining: columns }
    } else {
        State::Done
    }
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Status flags of an old-style EOF packet: header, warnings, status.
fn eof_status(p: &[u8]) -> u16 {
    u16_at(p, 3).unwrap_or(0)
}

/// Status flags of an OK packet (header 0x00, or 0xFE as a terminator): they follow the
/// affected-rows and last-insert-id length-encoded integers.
pub fn ok_status(p: &[u8]) -> Option<u16> {
    let mut at = 1;
    for _ in 0..2 {
        let (_, used) = lenenc_int(p.get(at..)?)?;
        at += used;
    }
    u16_at(p, at)
}

/// A length-encoded integer at the start of `p`: (value, bytes used).
pub fn lenenc_int(p: &[u8]) -> Option<(u64, usize)> {
    let first = *p.first()?;
    let width = match first {
        0..=0xfa => return Some((first as u64, 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = p.get(1..1 + width)?;
    let value = bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | b as u64);
    Some((value, 1 + width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codes::{SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS};

    fn ok(status: u16) -> Vec<u8> {
        let mut p = vec![0x00, 0x01, 0x00];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        p
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }

    fn ok_terminator(status: u16) -> Vec<u8> {
        let mut p = ok(status);
        p[0] = 0xfe;
        p
    }

    const COLUMN: &[u8] = b"\x03def\x04test\x01t\x01t\x01a\x01a\x0c\x21\x00";
    const ROW: &[u8] = b"\x011";
    const ERR: &[u8] = b"\xff\x28\x04#42000oops";

    /// Feeds whole small packets; returns the step of each.
    fn feed(tracker: &mut ResponseTracker, packets: &[&[u8]]) -> Vec<Step> {
        packets
            .iter()
            .map(|p| {
                tracker
                    .on_frame(&p[..p.len().min(PREFIX_LEN)], p.len())
                    .unwrap()
            })
            .collect()
    }

    use Step::{Done, LocalInfile, More};

    #[test]
    fn ok_and_err_end_a_query() {
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        assert_eq!(feed(&mut t, &[&ok(SERVER_STATUS_AUTOCOMMIT)]), [Done]);
        assert_eq!(t.status_flags(), Some(SERVER_STATUS_AUTOCOMMIT));
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        assert_eq!(feed(&mut t, &[ERR]), [Done]);
        assert!(t.is_error());
    }

    #[test]
    fn text_result_set_with_and_without_deprecate_eof() {
        let mut t = ResponseTracker::new(ResponseKind::Query, false);
        let steps = feed(
            &mut t,
            &[b"\x02", COLUMN, COLUMN, &eof(2), ROW, ROW, &eof(3)],
        );
        assert_eq!(steps, [More, More, More, More, More, More, Done]);
        assert_eq!(t.status_flags(), Some(3));

        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        let term = ok_terminator(SERVER_STATUS_IN_TRANS);
        let steps = feed(&mut t, &[b"\x01", COLUMN, ROW, &term]);
        assert_eq!(steps, [More, More, More, Done]);
        assert_eq!(t.status_flags(), Some(SERVER_STATUS_IN_TRANS));
    }

    #[test]
    fn row_starting_with_fe_is_not_a_terminator() {
        // A 9-byte row whose first column is an 8-byte length-encoded length.
        let row = [0xfe, 1, 0, 0, 0, 0, 0, 0, 0];
        let mut t = ResponseTracker::new(ResponseKind::Query, false);
        let steps = feed(&mut t, &[b"\x01", COLUMN, &eof(2), &row, &eof(2)]);
        assert_eq!(steps, [More, More, More, More, Done]);
        // With deprecate-EOF a row that starts with 0xFE is always a full frame.
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        assert_eq!(feed(&mut t, &[b"\x01", COLUMN]), [More, More]);
        assert_eq!(t.on_frame(&[0xfe; PREFIX_LEN], MAX_FRAME), Ok(More));
        assert_eq!(t.on_frame(&[7; PREFIX_LEN], 100), Ok(More), "continuation");
        assert_eq!(feed(&mut t, &[&ok_terminator(2)]), [Done]);
    }

    #[test]
    fn multi_results_continue_until_no_more_results_flag() {
        let more = SERVER_MORE_RESULTS_EXISTS | SERVER_STATUS_AUTOCOMMIT;
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        let steps = feed(
            &mut t,
            &[
                b"\x01",
                COLUMN,
                ROW,
                &ok_terminator(more),
                &ok(more),
                b"\x01",
                COLUMN,
                &ok_terminator(more),
                &ok(SERVER_STATUS_AUTOCOMMIT),
            ],
        );
        assert_eq!(
            steps,
            [More, More, More, More, More, More, More, More, Done]
        );
    }

    #[test]
    fn error_in_the_middle_of_rows_ends_the_response() {
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        assert_eq!(
            feed(&mut t, &[b"\x01", COLUMN, ROW, ERR]),
            [More, More, More, Done]
        );
        assert!(t.is_error());
    }

    #[test]
    fn local_infile_request_then_ok() {
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        assert_eq!(feed(&mut t, &[b"\xfb/tmp/data.csv"]), [LocalInfile]);
        assert_eq!(feed(&mut t, &[&ok(2)]), [Done]);
    }

    #[test]
    fn binary_rows_start_with_zero_and_are_not_ok_packets() {
        let mut t = ResponseTracker::new(ResponseKind::Execute, true);
        let row = b"\x00\x00\x01\x00\x00\x00";
        let steps = feed(&mut t, &[b"\x01", COLUMN, row, row, &ok_terminator(2)]);
        assert_eq!(steps, [More, More, More, More, Done]);
    }

    #[test]
    fn cursor_ends_execute_after_metadata() {
        let cursor = SERVER_STATUS_CURSOR_EXISTS | SERVER_STATUS_AUTOCOMMIT;
        let mut t = ResponseTracker::new(ResponseKind::Execute, false);
        assert_eq!(
            feed(&mut t, &[b"\x01", COLUMN, &eof(cursor)]),
            [More, More, Done]
        );
        let mut t = ResponseTracker::new(ResponseKind::Execute, true);
        let steps = feed(&mut t, &[b"\x01", COLUMN, &ok_terminator(cursor)]);
        assert_eq!(steps, [More, More, Done]);
        let mut t = ResponseTracker::new(ResponseKind::Fetch, true);
        let row = b"\x00\x00\x01";
        assert_eq!(
            feed(&mut t, &[row, row, &ok_terminator(0x80)]),
            [More, More, Done]
        );
    }

    fn prepare_ok(columns: u16, params: u16) -> Vec<u8> {
        let mut p = vec![0x00, 1, 0, 0, 0];
        p.extend_from_slice(&columns.to_le_bytes());
        p.extend_from_slice(&params.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0]);
        p
    }

    #[test]
    fn prepare_response_shapes() {
        for deprecate in [false, true] {
            let mut t = ResponseTracker::new(ResponseKind::Prepare, deprecate);
            assert_eq!(feed(&mut t, &[&prepare_ok(0, 0)]), [Done]);

            let mut t = ResponseTracker::new(ResponseKind::Prepare, deprecate);
            let mut packets: Vec<&[u8]> = vec![];
            let head = prepare_ok(2, 1);
            let e = eof(2);
            packets.push(&head);
            packets.push(COLUMN);
            if !deprecate {
                packets.push(&e);
            }
            packets.extend([COLUMN, COLUMN]);
            if !deprecate {
                packets.push(&e);
            }
            let steps = feed(&mut t, &packets);
            assert_eq!(steps.last(), Some(&Done), "deprecate_eof={deprecate}");
            assert!(steps[..steps.len() - 1].iter().all(|s| *s == More));

            let mut t = ResponseTracker::new(ResponseKind::Prepare, deprecate);
            let head = prepare_ok(0, 2);
            let mut packets: Vec<&[u8]> = vec![&head, COLUMN, COLUMN];
            if !deprecate {
                packets.push(&e);
            }
            assert_eq!(feed(&mut t, &packets).last(), Some(&Done));
        }
        let mut t = ResponseTracker::new(ResponseKind::Prepare, true);
        assert_eq!(feed(&mut t, &[ERR]), [Done]);
    }

    #[test]
    fn field_list_and_single_packet_commands() {
        let mut t = ResponseTracker::new(ResponseKind::FieldList, false);
        assert_eq!(feed(&mut t, &[COLUMN, COLUMN, &eof(2)]), [More, More, Done]);
        let mut t = ResponseTracker::new(ResponseKind::Single, true);
        assert_eq!(feed(&mut t, &[b"Uptime: 5  Threads: 1"]), [Done]);
        let mut t = ResponseTracker::new(ResponseKind::Single, true);
        assert_eq!(feed(&mut t, &[&eof(2)]), [Done]);
    }

    #[test]
    fn garbage_is_reported_not_trusted() {
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        assert!(t.on_frame(&[], 0).is_err());
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        assert!(
            t.on_frame(&[0xff_u8 - 0x02], 1).is_err(),
            "0xFD with no length bytes"
        );
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        assert_eq!(feed(&mut t, &[&ok(0)]), [Done]);
        assert!(t.on_frame(&ok(0), 7).is_err(), "nothing may follow the end");
    }

    #[test]
    fn lenenc_integers() {
        assert_eq!(lenenc_int(&[0xfa]), Some((250, 1)));
        assert_eq!(lenenc_int(&[0xfc, 0x01, 0x02]), Some((0x0201, 3)));
        assert_eq!(lenenc_int(&[0xfd, 1, 2, 3]), Some((0x030201, 4)));
        assert_eq!(
            lenenc_int(&[0xfe, 1, 0, 0, 0, 0, 0, 0, 1]),
            Some((1 | 1 << 56, 9))
        );
        assert_eq!(lenenc_int(&[0xfc, 1]), None);
        assert_eq!(lenenc_int(&[0xff]), None);
    }
}
