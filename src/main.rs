//! The `eingang` binary (being written). `parse-sheet` is the hidden child that reads one
//! spreadsheet from stdin under resource limits.

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("parse-sheet") {
        std::process::exit(eingang::format::xlsx_table::child_main());
    }
}
