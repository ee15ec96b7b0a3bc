//! `eingang store copy --to URL`: a SQLite store into an empty PostgreSQL store, for a site
//! that grows from one daemon to several (CONTRACT.md, "Several daemons on PostgreSQL").
//!
//! The target is migrated to this build's schema first (opening it does that), and the source
//! too, so both have the same tables. Then, in ONE PostgreSQL write transaction: every table
//! of the target must be empty (else nothing is written), the rows of every table go over
//! with their ids, parents before children, each value as SQLite holds it (text, integers and
//! bytes cross unchanged: timestamps and JSON are text in both), the identity sequences are
//! moved past the largest id, and the row counts are compared with the source's. Either the
//! whole store arrives, or nothing does.
//!
//! Which tables there are is read from the source's schema, not listed here, so a migration
//! that adds a table needs no change here. Two tables the migration fills itself are the
//! exceptions: `store_identity` takes the source's id (it is in the Message-IDs of the notices
//! and the `webhook-id`s of the hand-offs already out, which must stay the same), and
//! `item_original_total` is kept by the target's own triggers as the originals arrive, and is
//! compared. This module only copies; it never changes the source.

use rusqlite::ToSql;
use rusqlite::types::Value;

use super::db::{Connection, TransactionBehavior};
use super::{Location, Store, Target};

/// Filled by the migration with the store's random id; the copy replaces it with the source's.
const IDENTITY: &str = "store_identity";
/// Filled by the migration and kept by triggers; compared after the copy, never written.
const DERIVED: &str = "item_original_total";
/// Rows per `INSERT` at most (PostgreSQL takes up to 65535 parameters in one statement).
const BATCH_ROWS: usize = 500;
/// Bytes of values per `INSERT` at most: kept originals are up to megabytes each.
const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// One table as copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The table's name.
    pub table: String,
    /// Its rows, in the source and now in the copy.
    pub rows: i64,
}

/// Why a copy was refused or failed; nothing was written to the target in either case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target holds rows already: the copy writes only into an empty store.
    #[error(
        "the target is not empty (table {table} holds {rows} rows): store copy writes only into a new, empty database"
    )]
    NotEmpty {
        /// The first table found with rows.
        table: String,
        /// Its rows.
        rows: i64,
    },
    /// The two schemas differ (the target was migrated by a newer eingang, say).
    #[error("table {table}: {why}")]
    Schema {
        /// The table.
        table: String,
        /// How it differs.
        why: String,
    },
    /// The copy does not hold what the source holds.
    #[error("table {table}: the copy has {copied} rows, the source {source_rows}")]
    Count {
        /// The table.
        table: String,
        /// Its rows in the copy.
        copied: i64,
        /// Its rows in the source.
        source_rows: i64,
    },
    /// The store to copy is not a SQLite one.
    #[error("store copy reads a SQLite store; this one is PostgreSQL already")]
    NotSqlite,
    /// Reading the source or writing the target failed.
    #[error(transparent)]
    Store(#[from] super::Error),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Store(e.into())
    }
}

impl Error {
    /// Whether the copy was refused before anything was tried (the target is not empty, the
    /// source is no SQLite store): a usage error, not a failure.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::NotEmpty { .. } | Error::NotSqlite)
    }
}

/// A table of the source, as the copy needs it.
struct Table {
    name: String,
    columns: Vec<String>,
    /// The single-column primary key, if it has one.
    key: Option<usize>,
    /// The columns that reference the table itself (a summary notice, a superseding
    /// document): written in a second step, once every row they may point at is there.
    self_references: Vec<usize>,
    /// The other tables it references.
    parents: Vec<String>,
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Table {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quoted(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The tables of the SQLite store, parents before children (and by name among equals).
fn source_tables(sqlite: &rusqlite::Connection) -> Result<Vec<Table>, Error> {
    let names: Vec<String> = sqlite
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let mut columns = Vec::new();
        let mut keys = Vec::new();
        let mut info = sqlite.prepare(&format!("PRAGMA table_info({})", quoted(&name)))?;
        let mut rows = info.query([])?;
        while let Some(row) = rows.next()? {
            let column: String = row.get(1)?;
            if row.get::<_, i64>(5)? > 0 {
                keys.push(columns.len());
            }
            columns.push(column);
        }
        let mut self_references = Vec::new();
        let mut parents = Vec::new();
        let mut foreign = sqlite.prepare(&format!("PRAGMA foreign_key_list({})", quoted(&name)))?;
        let mut rows = foreign.query([])?;
        while let Some(row) = rows.next()? {
            let (parent, from): (String, String) = (row.get(2)?, row.get(3)?);
            if parent == name {
                self_references.extend(columns.iter().position(|c| *c == from));
            } else if !parents.contains(&parent) {
                parents.push(parent);
            }
        }
        tables.push(Table {
            key: match keys.as_slice() {
                [one] => Some(*one),
                _ => None,
            },
            name,
            columns,
            self_references,
            parents,
        });
    }
    let mut ordered: Vec<Table> = Vec::with_capacity(tables.len());
    while !tables.is_empty() {
        let ready = tables
            .iter()
            .position(|t| {
                t.parents
                    .iter()
                    .all(|p| ordered.iter().any(|o| o.name == *p))
            })
            .ok_or_else(|| Error::Schema {
                table: tables
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                why: "these tables of the source reference each other in a circle".to_owned(),
            })?;
        ordered.push(tables.remove(ready));
    }
    Ok(ordered)
}

/// Checks that the target has `table` with the same columns.
fn check_columns(tx: &Connection, table: &Table) -> Result<(), Error> {
    let mut stmt = tx.prepare(
        "SELECT column_name FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = ?1",
    )?;
    let mut found: Vec<String> = stmt
        .query_map([&table.name], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut wanted = table.columns.clone();
    found.sort();
    wanted.sort();
    if found == wanted {
        return Ok(());
    }
    let why = if found.is_empty() {
        "the target has no such table: is it a store of another eingang version?".to_owned()
    } else {
        format!(
            "the target's columns ({}) are not the source's ({})",
            found.join(", "),
            wanted.join(", ")
        )
    };
    Err(Error::Schema {
        table: table.name.clone(),
        why,
    })
}

fn count(conn: &Connection, table: &str) -> Result<i64, super::Error> {
    conn.query_row(
        &format!("SELECT COUNT(*) FROM {}", quoted(table)),
        [],
        |r| r.get(0),
    )
}

/// The size of a value, for `BATCH_BYTES`.
fn size_of(value: &Value) -> usize {
    match value {
        Value::Text(t) => t.len(),
        Value::Blob(b) => b.len(),
        _ => 8,
    }
}

/// The rows waiting for one `INSERT` into a table.
struct Batch<'t> {
    table: &'t Table,
    values: Vec<Value>,
    bytes: usize,
}

impl Batch<'_> {
    fn rows(&self) -> usize {
        self.values.len() / self.table.columns.len()
    }

    fn is_full(&self) -> bool {
        self.rows() >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }

    fn flush(&mut self, tx: &Connection) -> Result<(), super::Error> {
        if self.values.is_empty() {
            return Ok(());
        }
        let row = format!("({})", vec!["?"; self.table.columns.len()].join(", "));
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            quoted(&self.table.name),
            self.table.column_list(),
            vec![row; self.rows()].join(", ")
        );
        let params: Vec<&dyn ToSql> = self.values.iter().map(|v| v as &dyn ToSql).collect();
        tx.execute(&sql, params.as_slice())?;
        self.values.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// Copies the rows of `table` from `sqlite` into `tx`; returns how many.
fn copy_rows(sqlite: &rusqlite::Connection, tx: &Connection, table: &Table) -> Result<i64, Error> {
    let mut read = sqlite.prepare(&format!(
        "SELECT {} FROM {}",
        table.column_list(),
        quoted(&table.name)
    ))?;
    let mut rows = read.query([])?;
    let mut batch = Batch {
        table,
        values: Vec::new(),
        bytes: 0,
    };
    // (key, column, value) of the references to the table's own rows, set once all are in.
    let mut later: Vec<(Value, usize, Value)> = Vec::new();
    let mut copied = 0;
    while let Some(row) = rows.next()? {
        for at in 0..table.columns.len() {
            let mut value: Value = row.get(at)?;
            if table.self_references.contains(&at) && value != Value::Null {
                let key = table.key.ok_or_else(|| Error::Schema {
                    table: table.name.clone(),
                    why: "it references itself but has no single-column key".to_owned(),
                })?;
                later.push((
                    row.get(key)?,
                    at,
                    std::mem::replace(&mut value, Value::Null),
                ));
            }
            batch.bytes += size_of(&value);
            batch.values.push(value);
        }
        copied += 1;
        if batch.is_full() {
            batch.flush(tx)?;
        }
    }
    batch.flush(tx)?;
    if let Some(key) = table.key {
        for (id, at, value) in later {
            tx.execute(
                &format!(
                    "UPDATE {} SET {} = ?1 WHERE {} = ?2",
                    quoted(&table.name),
                    quoted(&table.columns[at]),
                    quoted(&table.columns[key])
                ),
                [value, id],
            )?;
        }
    }
    Ok(copied)
}

/// Moves every identity sequence of the target past its column's largest value, so that the
/// next row written gets a fresh id.
fn advance_sequences(tx: &Connection) -> Result<(), super::Error> {
    let identities: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT table_name, column_name FROM information_schema.columns
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    for (table, column) in identities {
        tx.query_row(
            &format!(
                "SELECT setval(pg_get_serial_sequence(?1, ?2), COALESCE(MAX({}), 0) + 1, false)
                 FROM {}",
                quoted(&column),
                quoted(&table)
            ),
            [quoted(&table), column.clone()],
            |r| r.get::<_, i64>(0),
        )?;
    }
    Ok(())
}

impl Store {
    /// Copies this store (a SQLite one) into the empty PostgreSQL store at `target`, in one
    /// transaction there (see the module's text); returns the tables in the order copied.
    pub fn copy_into(&self, target: &Target) -> Result<Vec<Copied>, Error> {
        let source = self.lock();
        let Some(sqlite) = source.as_sqlite() else {
            return Err(Error::NotSqlite);
        };
        let into = Store::open_at(&Location::Postgres(target.clone()))?;
        // One snapshot of the source, however long the copy takes.
        let read = source.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let tables = source_tables(sqlite)?;
        let conn = into.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for table in &tables {
            check_columns(&tx, table)?;
            let rows = count(&tx, &table.name)?;
            if rows > 0 && table.name != IDENTITY && table.name != DERIVED {
                return Err(Error::NotEmpty {
                    table: table.name.clone(),
                    rows,
                });
            }
        }
        tx.execute(&format!("DELETE FROM {}", quoted(IDENTITY)), [])?;
        let mut copied = Vec::with_capacity(tables.len());
        for table in tables.iter().filter(|t| t.name != DERIVED) {
            let rows = copy_rows(sqlite, &tx, table)?;
            copied.push(Copied {
                table: table.name.clone(),
                rows,
            });
        }
        advance_sequences(&tx)?;
        for table in &copied {
            let in_copy = count(&tx, &table.table)?;
            if in_copy != table.rows {
                return Err(Error::Count {
                    table: table.table.clone(),
                    copied: in_copy,
                    source_rows: table.rows,
                });
            }
        }
        let total = |conn: &Connection| {
            conn.query_row(&format!("SELECT bytes FROM {DERIVED}"), [], |r| {
                r.get::<_, i64>(0)
            })
        };
        let (kept, kept_in_copy) = (total(&read)?, total(&tx)?);
        if kept != kept_in_copy {
            return Err(Error::Schema {
                table: DERIVED.to_owned(),
                why: format!(
                    "the copy's originals add up to {kept_in_copy} bytes, the source's to {kept}"
                ),
            });
        }
        tx.commit()?;
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::super::db::params;
    use super::super::test_postgres::Postgres;
    use super::*;

    /// A reference to a row of the same table that arrives in a later `INSERT` (a summary
    /// written after more than a batch of rejections) is set once that row is there: nothing
    /// is refused by the foreign key, and every reference is the source's.
    #[test]
    fn a_reference_into_a_later_batch_survives_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("eingang.db")).unwrap();
        let members = BATCH_ROWS as i64 + 10;
        {
            let conn = store.lock();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            for _ in 0..members {
                tx.execute(
                    "INSERT INTO outbox (source, kind, created_at) VALUES ('drop', 'rejected', ?1)",
                    params!["2026-12-01T10:00:00.000Z"],
                )
                .unwrap();
            }
            let summary = tx
                .insert(
                    "INSERT INTO outbox (source, kind, created_at) VALUES ('drop', 'summary', ?1)",
                    params!["2026-12-01T10:05:00.000Z"],
                )
                .unwrap();
            tx.execute("UPDATE outbox SET summary_id = ?1 WHERE id < ?1", [summary])
                .unwrap();
            tx.commit().unwrap();
        }
        let url = Postgres::shared().fresh_database("copy_batches");
        let copied = store
            .copy_into(&Target::new(&url, None, None).unwrap())
            .unwrap();
        let outbox = copied.iter().find(|c| c.table == "outbox").unwrap();
        assert_eq!(outbox.rows, members + 1);
        let copy =
            Store::open_at(&Location::Postgres(Target::new(&url, None, None).unwrap())).unwrap();
        let linked: i64 = copy
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE summary_id = ?1",
                [members + 1],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(linked, members);
    }
}
