//! Spreadsheets in a child process (placeholder being written).

/// The body of the hidden `parse-sheet` command.
pub fn child_main() -> i32 {
    todo!("table helper")
}
