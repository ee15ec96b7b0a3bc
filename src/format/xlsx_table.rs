//! Step 3 of the flow for spreadsheet supplier tables (XLSX, XLSM, XLS, ODS): bytes → rows of
//! typed cells.
//!
//! calamine can abort the whole process on a 2 KB hostile workbook (CRATES.md: a sharedStrings
//! `uniqueCount="4000000000"` ends in SIGABRT). So the parent first pre-scans the container from
//! its metadata, without inflating it (the zip checks are `archive::scan`, shared with ZIP
//! attachments), and then lets a child process (`eingang parse-sheet`,
//! under `setrlimit` and a timeout) run calamine and send the rows back as JSON lines. A child
//! that dies is a rejection of the file, never the end of eingang. Cells are interpreted by
//! `table`, not here.

use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use calamine::{Data, DataType, Range, Reader, Sheets};
use zip::ZipArchive;

use super::archive::{self, Container, Scanned, ZIP_MAGIC};
use super::table::{Cell, RowSink, SheetChoice};
use super::{Attachment, Limits};
use crate::error::Reject;

/// XLS (and a password-protected XLSX) is a Compound File Binary container.
const CFB_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
/// How much of sharedStrings.xml and each sheet is inflated to read their first start tags.
const HEAD_BYTES: u64 = 4096;
/// The smallest shared string, `<si/>`: a uniqueCount above size / 5 cannot be true.
const MIN_SHARED_STRING_BYTES: u64 = 5;
/// The smallest reference to a shared string, `<c t="s"><v>0</v></c>`, is 20 bytes; half of
/// that leaves room for any generator.
const MIN_STRING_CELL_BYTES: u64 = 10;
/// calamine builds a dense range of 32-byte cells: 10 million is 320 MB, well inside the child.
const MAX_SHEET_CELLS: u64 = 10_000_000;
/// The child's one-line error message; the rest of its stderr is drained unread.
const MAX_STDERR_BYTES: u64 = 4096;
/// Rows in flight between the reading thread and the parent, so a fast child waits for us.
const ROW_BUFFER: usize = 256;
/// How often the parent looks whether the child has exited after its output ended.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// Reads the chosen sheet of a workbook attachment and hands each row to `on_row` with its
/// 1-based row number. Blocks for up to `limits.sheet_timeout`.
pub(crate) fn read_rows(
    attachment: &Attachment,
    sheet: &SheetChoice,
    limits: &Limits,
    on_row: &mut RowSink,
) -> Result<(), Reject> {
    let file = attachment.name.as_str();
    prescan(&attachment.bytes, file, limits)?;
    let mut args = vec!["parse-sheet".to_owned()];
    match sheet {
        SheetChoice::Index(n) => args.extend(["--sheet-index".to_owned(), n.to_string()]),
        SheetChoice::Name(name) => args.extend(["--sheet-name".to_owned(), name.clone()]),
    }
    // The CPU limit backs up the wall-clock timeout if the parent itself dies and cannot kill.
    let cpu_seconds = limits.sheet_timeout.as_secs() + 1;
    args.extend([
        "--memory-bytes".to_owned(),
        limits.sheet_memory_bytes.to_string(),
        "--cpu-seconds".to_owned(),
        cpu_seconds.to_string(),
    ]);
    run_child(&attachment.bytes, &args, file, limits, on_row)
}

/// Checks the container from its metadata and a few kilobytes of two kinds of entries, before
/// any parser inflates it.
fn prescan(bytes: &[u8], file: &str, limits: &Limits) -> Result<(), Reject> {
    if bytes.starts_with(ZIP_MAGIC) {
        prescan_zip(bytes, file, limits)
    } else if bytes.starts_with(CFB_MAGIC) {
        // An encrypted OOXML workbook is a CFB file with an "EncryptedPackage" stream
        // (MS-OFFCRYPTO); directory entry names are UTF-16LE.
        let needle: Vec<u8> = "EncryptedPackage"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
            Err(Container::Workbook.protected(file))
        } else {
            Ok(())
        }
    } else {
        Err(Reject::malformed(
            file,
            "is not a spreadsheet: neither an XLSX/ODS zip container nor an XLS file",
        ))
    }
}

/// The container checks every zip gets (`archive::scan`), then the two kinds of OOXML part
/// whose first start tags tell how much calamine would allocate.
fn prescan_zip(bytes: &[u8], file: &str, limits: &Limits) -> Result<(), Reject> {
    let Scanned {
        mut archive,
        entries,
        inflated,
    } = archive::scan(
        bytes,
        file,
        Container::Workbook,
        limits.max_inflated_bytes,
        0,
    )?;
    let mut shared_strings = Vec::new();
    let mut sheets = Vec::new();
    for entry in entries {
        // Part names are found through relationships and compared without case, so look at
        // every entry that could be one (ECMA-376 Part 2, 9.1.1).
        let lower = entry.name.to_ascii_lowercase();
        if lower.ends_with("sharedstrings.xml") {
            shared_strings.push((entry.index, entry.name, entry.size));
        } else if lower.contains("worksheets/") && lower.ends_with(".xml") {
            sheets.push((entry.index, entry.name));
        }
    }
    for (index, name, size) in shared_strings {
        let head = entry_head(&mut archive, index, &name, file)?;
        let tag = start_tag(&head, "sst", None).ok_or_else(|| {
            Reject::malformed(file, format!("{name} does not begin with an <sst> element"))
        })?;
        let bounds = [
            (
                "uniqueCount",
                size / MIN_SHARED_STRING_BYTES,
                format!("its {size} bytes"),
            ),
            (
                "count",
                inflated / MIN_STRING_CELL_BYTES,
                format!("the workbook's {inflated} bytes"),
            ),
        ];
        for (attr, most, room) in bounds {
            if let Some(raw) = attribute(tag, attr)
                && raw.trim().parse::<u64>().map_or(true, |n| n > most)
            {
                return Err(Reject::too_large(
                    file,
                    format!("{name} declares {attr}=\"{raw}\", more than {room} can hold"),
                ));
            }
        }
    }
    for (index, name) in sheets {
        let head = entry_head(&mut archive, index, &name, file)?;
        check_dimension(&head, &name, file, limits)?;
    }
    Ok(())
}

/// The first few kilobytes of one entry, inflating nothing more.
fn entry_head(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    name: &str,
    file: &str,
) -> Result<String, Reject> {
    let broken = |why: String| Reject::malformed(file, format!("{name}: {why}"));
    let entry = archive.by_index(index).map_err(|e| broken(e.to_string()))?;
    let mut head = Vec::new();
    entry
        .take(HEAD_BYTES)
        .read_to_end(&mut head)
        .map_err(|e| broken(e.to_string()))?;
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Rejects a sheet whose `<dimension ref>` spans more rows or cells than eingang reads;
/// calamine would allocate the whole rectangle.
fn check_dimension(head: &str, name: &str, file: &str, limits: &Limits) -> Result<(), Reject> {
    // The dimension comes before the cells (ECMA-376 Part 1, 18.3.1.99); none is fine.
    let Some(reference) =
        start_tag(head, "dimension", Some("sheetData")).and_then(|tag| attribute(tag, "ref"))
    else {
        return Ok(());
    };
    let (first, last) = reference.split_once(':').unwrap_or((reference, reference));
    let (Some((first_col, first_row)), Some((last_col, last_row))) =
        (cell_ref(first), cell_ref(last))
    else {
        return Err(Reject::malformed(
            file,
            format!("{name} has a broken <dimension ref=\"{reference}\">"),
        ));
    };
    let max_rows = u64::try_from(limits.max_rows).unwrap_or(u64::MAX);
    if last_row > max_rows {
        return Err(Reject::too_large(
            file,
            format!(
                "{name} reaches row {last_row} (dimension {reference}); the limit is {max_rows} rows"
            ),
        ));
    }
    let rows = last_row.abs_diff(first_row) + 1;
    let cells = rows.saturating_mul(last_col.abs_diff(first_col) + 1);
    if cells > MAX_SHEET_CELLS {
        return Err(Reject::too_large(
            file,
            format!(
                "{name} spans {cells} cells (dimension {reference}); the limit is {MAX_SHEET_CELLS}"
            ),
        ));
    }
    Ok(())
}

/// Column and row (both 1-based) of an A1-style reference such as `XFD1048576`.
fn cell_ref(text: &str) -> Option<(u64, u64)> {
    let text = text.trim();
    let (letters, digits) = text.split_at(text.find(|c: char| c.is_ascii_digit())?);
    if letters.is_empty() || letters.len() > 3 || !letters.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return None;
    }
    let column = letters.bytes().fold(0, |column, b| {
        column * 26 + u64::from(b.to_ascii_uppercase() - b'A' + 1)
    });
    let row: u64 = digits.parse().ok()?;
    (row >= 1).then_some((column, row))
}

/// The inside of the first start tag with this local name (any namespace prefix), if it
/// appears whole in `xml` before an element named `before`.
fn start_tag<'x>(xml: &'x str, local: &str, before: Option<&str>) -> Option<&'x str> {
    let mut rest = xml;
    while let Some((_, after)) = rest.split_once('<') {
        let (tag, tail) = after.split_once('>')?;
        rest = tail;
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let name = name.rsplit(':').next().unwrap_or(name);
        if name == local {
            return Some(tag);
        }
        if Some(name) == before {
            return None;
        }
    }
    None
}

/// The value of one attribute inside a start tag, as written.
fn attribute<'t>(tag: &'t str, name: &str) -> Option<&'t str> {
    let (_, mut rest) = tag.split_once(char::is_whitespace)?;
    loop {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let (value, tail) = after.strip_prefix(quote)?.split_once(quote)?;
        if key.trim() == name {
            return Some(value);
        }
        rest = tail;
    }
}

/// What the thread reading the child's stdout passes on.
enum Message {
    Row(Vec<Cell>),
    TooMuch,
    Bad(String),
}

/// Why the parent stopped taking rows.
enum Stop {
    /// The child closed its output.
    Eof,
    /// `limits.sheet_timeout` passed.
    Timeout,
    /// The rows themselves were rejected (a bad cell, too many rows, too much output).
    Verdict(Reject),
    /// The output was not rows.
    BadOutput(String),
}

/// Runs `limits.sheet_reader` with `args`, feeds it the workbook and hands on its rows; kills
/// it on a rejection or at the deadline.
fn run_child(
    bytes: &[u8],
    args: &[String],
    file: &str,
    limits: &Limits,
    on_row: &mut RowSink,
) -> Result<(), Reject> {
    let reader = &limits.sheet_reader;
    let mut child = Command::new(reader)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Reject::Unsupported {
            file: file.to_owned(),
            why: format!(
                "cannot start the spreadsheet reader {}: {e}",
                reader.display()
            ),
        })?;
    let deadline = Instant::now() + limits.sheet_timeout;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    thread::scope(|scope| {
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                // A child that dies early closes the pipe; its exit status says why.
                let _ = stdin.write_all(bytes);
            }
        });
        let error_line = scope.spawn(move || stderr.map(first_line).unwrap_or_default());
        let (sender, receiver) = mpsc::sync_channel(ROW_BUFFER);
        let max_output = limits.max_inflated_bytes;
        scope.spawn(move || {
            if let Some(stdout) = stdout {
                send_rows(stdout, &sender, max_output);
            }
        });
        let stop = receive_rows(&receiver, deadline, file, on_row);
        drop(receiver); // unblocks the reading thread if it waits to send
        let status = match stop {
            Stop::Eof => wait_until(&mut child, deadline),
            _ => {
                let _ = child.kill();
                child.wait().ok()
            }
        };
        let error_line = error_line.join().unwrap_or_default();
        verdict(stop, status, &error_line, file, limits)
    })
}

/// Reads JSON rows, one per line, and sends them on until the output ends or goes wrong.
fn send_rows(stdout: ChildStdout, sender: &SyncSender<Message>, max_bytes: u64) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let mut total: u64 = 0;
    loop {
        line.clear();
        let room = max_bytes.saturating_sub(total).saturating_add(1);
        let message = match (&mut reader).take(room).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(n) => {
                total = total.saturating_add(n as u64);
                if total > max_bytes {
                    Message::TooMuch
                } else {
                    serde_json::from_slice(&line)
                        .map(Message::Row)
                        .unwrap_or_else(|e| Message::Bad(format!("its output is not rows: {e}")))
                }
            }
            Err(e) => Message::Bad(format!("its output could not be read: {e}")),
        };
        let last = !matches!(message, Message::Row(_));
        if sender.send(message).is_err() || last {
            return;
        }
    }
}

fn receive_rows(
    receiver: &Receiver<Message>,
    deadline: Instant,
    file: &str,
    on_row: &mut RowSink,
) -> Stop {
    let mut row = 0;
    loop {
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Message::Row(cells)) => {
                row += 1;
                if let Err(reject) = on_row(row, &cells) {
                    return Stop::Verdict(reject);
                }
            }
            Ok(Message::TooMuch) => {
                return Stop::Verdict(Reject::too_large(
                    file,
                    "the spreadsheet reader's output exceeds the inflated-size limit",
                ));
            }
            Ok(Message::Bad(why)) => return Stop::BadOutput(why),
            Err(RecvTimeoutError::Timeout) => return Stop::Timeout,
            Err(RecvTimeoutError::Disconnected) => return Stop::Eof,
        }
    }
}

/// The child's exit status once it exits, or `None` after killing it at the deadline.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(EXIT_POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The first non-empty line the child wrote on stderr, draining the rest.
fn first_line(mut stderr: ChildStderr) -> String {
    let mut head = Vec::new();
    let _ = (&mut stderr).take(MAX_STDERR_BYTES).read_to_end(&mut head);
    // Keep draining, so that a chatty child never blocks on a full pipe.
    let _ = io::copy(&mut stderr, &mut io::sink());
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    line.unwrap_or("").chars().take(300).collect()
}

/// Turns how the child ended into the result of the read.
fn verdict(
    stop: Stop,
    status: Option<ExitStatus>,
    error_line: &str,
    file: &str,
    limits: &Limits,
) -> Result<(), Reject> {
    let timed_out = || {
        Reject::too_large(
            file,
            format!(
                "the spreadsheet reader took longer than {:?}",
                limits.sheet_timeout
            ),
        )
    };
    let bad_output = match stop {
        Stop::Verdict(reject) => return Err(reject),
        Stop::Timeout => return Err(timed_out()),
        Stop::Eof => None,
        Stop::BadOutput(why) => Some(why),
    };
    let Some(status) = status else {
        return Err(timed_out());
    };
    let stopped =
        |why: String| Reject::malformed(file, format!("the spreadsheet reader stopped: {why}"));
    match (status.signal(), status.code()) {
        // After bad output the parent killed the child itself: that signal tells nothing.
        (Some(libc::SIGKILL), _) if bad_output.is_some() => {}
        (Some(signal), _) => {
            let mut why = format!("killed by signal {signal} ({})", signal_name(signal));
            if !error_line.is_empty() {
                why = format!("{why}: {error_line}");
            }
            return Err(stopped(why));
        }
        (None, Some(code)) if code != 0 => {
            return Err(if error_line.is_empty() {
                stopped(format!("exit code {code}"))
            } else {
                Reject::malformed(file, error_line)
            });
        }
        _ => {}
    }
    match bad_output {
        Some(why) => Err(stopped(why)),
        None => Ok(()),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => "abort",
        libc::SIGKILL => "kill",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGBUS => "bus error",
        libc::SIGXCPU => "CPU time limit",
        _ => "signal",
    }
}

/// The body of the hidden `parse-sheet` command: reads a workbook from stdin under memory and
/// CPU limits and prints the chosen sheet's rows as JSON lines; on failure prints one line on
/// stderr and returns 1.
pub fn child_main() -> i32 {
    // A panic in calamine or its inflater (such as an allocation refused under the memory
    // limit) reaches the parent as its one-line reason, without source paths.
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("no message");
        let first_line = message.lines().next().unwrap_or("");
        eprintln!("the spreadsheet reader panicked: {first_line}");
    }));
    match print_sheet_rows() {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("{why}");
            1
        }
    }
}

/// The child's arguments, as `read_rows` passes them.
struct ChildArgs {
    sheet: SheetChoice,
    memory_bytes: u64,
    cpu_seconds: u64,
}

fn child_args() -> Result<ChildArgs, String> {
    let mut args = std::env::args_os().skip(2); // the program and `parse-sheet`
    let mut sheet = SheetChoice::Index(1);
    let (mut memory_bytes, mut cpu_seconds) = (None, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .and_then(|v| v.into_string().ok())
            .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
        let number = |value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{}: {value:?} is not a number", flag.to_string_lossy()))
        };
        match flag.to_str() {
            Some("--sheet-index") => sheet = SheetChoice::Index(number(&value)? as usize),
            Some("--sheet-name") => sheet = SheetChoice::Name(value),
            Some("--memory-bytes") => memory_bytes = Some(number(&value)?),
            Some("--cpu-seconds") => cpu_seconds = Some(number(&value)?),
            _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
        }
    }
    // Both limits are required, so the child never runs unlimited by mistake.
    Ok(ChildArgs {
        sheet,
        memory_bytes: memory_bytes.ok_or("--memory-bytes is required")?,
        cpu_seconds: cpu_seconds.ok_or("--cpu-seconds is required")?,
    })
}

fn print_sheet_rows() -> Result<(), String> {
    let args = child_args()?;
    limit_resources(args.memory_bytes, args.cpu_seconds)?;
    let mut bytes = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the workbook: {e}"))?;
    let mut workbook = calamine::open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|e| format!("not a readable workbook: {e}"))?;
    let range = sheet_range(&mut workbook, &args.sheet)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    write_rows(&range, &mut out)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot send the rows: {e}"))
}

/// Applies the address-space and CPU limits to this process.
fn limit_resources(memory_bytes: u64, cpu_seconds: u64) -> Result<(), String> {
    for (resource, value, what) in [
        (libc::RLIMIT_AS, memory_bytes, "memory"),
        (libc::RLIMIT_CPU, cpu_seconds, "CPU time"),
    ] {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the rlimit struct it is given.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            return Err(format!(
                "cannot read the {what} limit: {}",
                io::Error::last_os_error()
            ));
        }
        // An unprivileged process cannot raise its hard limit: never ask for more than it has.
        let value = (value as libc::rlim_t).min(current.rlim_max);
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit only reads the rlimit struct it is given.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(format!(
                "cannot set the {what} limit: {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn sheet_range(
    workbook: &mut Sheets<Cursor<Vec<u8>>>,
    choice: &SheetChoice,
) -> Result<Range<Data>, String> {
    let names = workbook.sheet_names();
    let name = match choice {
        SheetChoice::Index(n) => names
            .get(n.saturating_sub(1))
            .ok_or_else(|| format!("the workbook has no sheet {n}; it has {}", names.len()))?,
        SheetChoice::Name(wanted) => names
            .iter()
            .find(|name| *name == wanted)
            .or_else(|| {
                names
                    .iter()
                    .find(|name| name.to_lowercase() == wanted.to_lowercase())
            })
            .ok_or_else(|| format!("the workbook has no sheet {wanted:?}; it has {names:?}"))?,
    }
    .clone();
    workbook
        .worksheet_range(&name)
        .map_err(|e| format!("cannot read sheet {name:?}: {e}"))
}

/// Prints the range as JSON lines, one per sheet row, starting at row 1.
fn write_rows(range: &Range<Data>, out: &mut impl Write) -> io::Result<()> {
    let Some((first_row, first_column)) = range.start() else {
        return Ok(()); // an empty sheet
    };
    // calamine's range starts at the first used cell; the rows and columns before it are sent
    // empty, so that row numbers and positions match what the supplier sees in the sheet.
    for _ in 0..first_row {
        out.write_all(b"[]\n")?;
    }
    let padding = vec![Cell::Empty; first_column as usize];
    let mut cells = Vec::new();
    for row in range.rows() {
        cells.clear();
        cells.extend(padding.iter().cloned());
        cells.extend(row.iter().map(cell_of));
        while cells.last() == Some(&Cell::Empty) {
            cells.pop();
        }
        serde_json::to_writer(&mut *out, &cells)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A calamine cell as a typed cell: numbers without any locale, dates as `YYYY-MM-DD`.
fn cell_of(data: &Data) -> Cell {
    match data {
        Data::Empty => Cell::Empty,
        Data::String(text) => Cell::Text(text.clone()),
        Data::Int(n) => Cell::Number(n.to_string()),
        Data::Float(n) => number_cell(*n),
        Data::DateTime(_) | Data::DateTimeIso(_) => match data.as_date() {
            Some(date) => Cell::Date(date.format("%Y-%m-%d").to_string()),
            None => Cell::Text(data.to_string()),
        },
        Data::Bool(b) => Cell::Text(if *b { "TRUE" } else { "FALSE" }.to_owned()),
        Data::DurationIso(text) => Cell::Text(text.clone()),
        Data::Error(e) => Cell::Text(e.to_string()),
    }
}

/// A number cell in shortest decimal form, rounded to the 15 significant digits Excel keeps:
/// the digits past them are binary noise of formulas (`=0.1+0.2` is stored as
/// 0.30000000000000004 and shown as 0.3).
fn number_cell(value: f64) -> Cell {
    if !value.is_finite() {
        return Cell::Text(value.to_string());
    }
    let rounded = rust_decimal::Decimal::from_scientific(&format!("{value:.14e}"))
        .map(|d| d.normalize().to_string());
    Cell::Number(rounded.unwrap_or_else(|_| value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_excels_fifteen_digits() {
        let number = |n: f64| match number_cell(n) {
            Cell::Number(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(number(0.1 + 0.2), "0.3");
        assert_eq!(number(1234.5), "1234.5");
        assert_eq!(number(4012345678901.0), "4012345678901");
        assert_eq!(number(-0.000125), "-0.000125");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(0.0), "0");
        assert!(matches!(number_cell(f64::NAN), Cell::Text(_)));
    }

    #[test]
    fn cell_references_read_column_and_row() {
        assert_eq!(cell_ref("A1"), Some((1, 1)));
        assert_eq!(cell_ref("XFD1048576"), Some((16_384, 1_048_576)));
        assert_eq!(cell_ref("ab12"), Some((28, 12)));
        for bad in ["", "A", "12", "A0", "ABCD1", "A1B", "Ä1"] {
            assert_eq!(cell_ref(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn start_tags_and_attributes_are_found_in_a_head() {
        let head = "<?xml version=\"1.0\"?>\n<x:sst xmlns:x=\"urn:x\" count='12' \
                    uniqueCount=\"4000000000\">";
        let tag = start_tag(head, "sst", None).unwrap();
        assert_eq!(attribute(tag, "uniqueCount"), Some("4000000000"));
        assert_eq!(attribute(tag, "count"), Some("12"));
        assert_eq!(attribute(tag, "ref"), None);

        let sheet = "<worksheet><sheetData><dimension ref=\"A1:B2\"/>";
        assert_eq!(start_tag(sheet, "dimension", Some("sheetData")), None);
        assert_eq!(start_tag("<sst count=\"1", "sst", None), None, "a cut tag");
    }
}
