//! The store's one door to its database, in rusqlite's shape, so that the store's SQL and its
//! steps are written once whatever database holds them.
//!
//! Every module of the store reaches the database through `Connection`, `Transaction`,
//! `Savepoint`, `Statement` and `Row` here, never through rusqlite itself; only what is
//! SQLite's alone (opening the file, its pragmas, the online backup) asks for the SQLite
//! connection underneath (`Connection::as_sqlite`). Parameters are given as rusqlite's
//! `params!`, arrays and `[]` give them, and rows read with rusqlite's `FromSql`.

use std::cell::Cell;
use std::ops::Deref;

use rusqlite::ToSql;
pub use rusqlite::{TransactionBehavior, params};

use super::Error;

/// The values of a statement's parameters, as `params!`, arrays and `[]` give them.
pub trait Params {
    /// The values, in order.
    fn refs(&self) -> Vec<&dyn ToSql>;
}

impl Params for [&(dyn ToSql + Send + Sync); 0] {
    fn refs(&self) -> Vec<&dyn ToSql> {
        Vec::new()
    }
}

impl Params for &[&dyn ToSql] {
    fn refs(&self) -> Vec<&dyn ToSql> {
        self.to_vec()
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn refs(&self) -> Vec<&dyn ToSql> {
                self.iter().map(|p| p as &dyn ToSql).collect()
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8);

/// One row of a result.
pub struct Row<'a> {
    row: &'a rusqlite::Row<'a>,
}

/// A column of a row, by its position (from 0).
pub trait ColumnIndex: Copy {
    /// The position.
    fn position(self) -> usize;
}

impl ColumnIndex for usize {
    fn position(self) -> usize {
        self
    }
}

impl Row<'_> {
    /// The value of a column, as `T`.
    pub fn get<I: ColumnIndex, T: rusqlite::types::FromSql>(
        &self,
        index: I,
    ) -> rusqlite::Result<T> {
        self.row.get(index.position())
    }
}

enum Backend {
    Sqlite(rusqlite::Connection),
}

/// A connection to the store's database.
pub struct Connection {
    backend: Backend,
    /// Open savepoints, for their names.
    depth: Cell<u32>,
}

impl Connection {
    /// A connection over an open SQLite database.
    pub fn sqlite(conn: rusqlite::Connection) -> Connection {
        Connection {
            backend: Backend::Sqlite(conn),
            depth: Cell::new(0),
        }
    }

    /// The SQLite connection underneath, for what only SQLite has (pragmas, online backup).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(c) => Some(c),
        }
    }

    /// Whether a commit waits for the disk (the default) or only for the database's memory
    /// (`false`: a commit that a power loss, and only that, may forget).
    pub fn set_durable(&self, durable: bool) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(c) => {
                Ok(c.pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })?)
            }
        }
    }

    /// Runs one statement, returning how many rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize, Error> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Runs an `INSERT` into a table with an `id` key, returning the new row's id.
    pub fn insert<P: Params>(&self, sql: &str, params: P) -> Result<i64, Error> {
        match &self.backend {
            Backend::Sqlite(c) => {
                c.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(params.refs()))?;
                Ok(c.last_insert_rowid())
            }
        }
    }

    /// The first row of a query made into `T`; `QueryReturnedNoRows` when there is none.
    pub fn query_row<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// A statement, its plan kept for the next time the same SQL is prepared.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>, Error> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(Statement::Sqlite(c.prepare_cached(sql)?)),
        }
    }

    /// A statement run rarely (its plan is not kept).
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>, Error> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(Statement::Once(c.prepare(sql)?)),
        }
    }

    /// Runs statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
        }
    }

    /// Starts a transaction; `Immediate` makes it the store's one writer until it ends.
    pub fn transaction_with_behavior(
        &self,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'_>, Error> {
        self.execute_batch(match behavior {
            TransactionBehavior::Deferred => "BEGIN DEFERRED",
            TransactionBehavior::Immediate => "BEGIN IMMEDIATE",
            _ => "BEGIN EXCLUSIVE",
        })?;
        Ok(Transaction {
            conn: self,
            open: Cell::new(true),
        })
    }
}

/// A statement of a connection.
pub enum Statement<'c> {
    /// A statement whose plan stays in the connection's cache.
    Sqlite(rusqlite::CachedStatement<'c>),
    /// A statement prepared for this once.
    Once(rusqlite::Statement<'c>),
}

impl<'c> Statement<'c> {
    fn inner(&mut self) -> &mut rusqlite::Statement<'c> {
        match self {
            Statement::Sqlite(s) => s,
            Statement::Once(s) => s,
        }
    }

    /// Runs it, returning how many rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize, Error> {
        Ok(self
            .inner()
            .execute(rusqlite::params_from_iter(params.refs()))?)
    }

    /// The first row made into `T`; `QueryReturnedNoRows` when there is none.
    pub fn query_row<T, P: Params>(
        &mut self,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        Ok(self
            .inner()
            .query_row(rusqlite::params_from_iter(params.refs()), |row| {
                f(&Row { row })
            })?)
    }

    /// Every row, each made into `T`, in order.
    pub fn query_map<T, P: Params>(
        &mut self,
        params: P,
        mut f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<std::vec::IntoIter<rusqlite::Result<T>>, Error> {
        let mut rows = self
            .inner()
            .query(rusqlite::params_from_iter(params.refs()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(f(&Row { row }));
        }
        Ok(out.into_iter())
    }
}

/// A transaction: rolled back when dropped without `commit`.
pub struct Transaction<'c> {
    conn: &'c Connection,
    open: Cell<bool>,
}

impl Transaction<'_> {
    /// Makes its writes durable.
    pub fn commit(self) -> Result<(), Error> {
        self.open.set(false);
        self.conn.execute_batch("COMMIT")
    }

    /// A savepoint inside it: rolled back alone when dropped without `commit`.
    pub fn savepoint(&self) -> Result<Savepoint<'_>, Error> {
        let depth = self.conn.depth.get() + 1;
        let name = format!("sp{depth}");
        self.conn.execute_batch(&format!("SAVEPOINT {name}"))?;
        self.conn.depth.set(depth);
        Ok(Savepoint {
            conn: self.conn,
            name,
            open: Cell::new(true),
        })
    }
}

impl Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open.get() {
            // A rollback that fails leaves the database as it was before the transaction:
            // the database ends a failed transaction itself.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A savepoint of a transaction.
pub struct Savepoint<'c> {
    conn: &'c Connection,
    name: String,
    open: Cell<bool>,
}

impl Savepoint<'_> {
    /// Keeps its writes in the transaction.
    pub fn commit(self) -> Result<(), Error> {
        self.open.set(false);
        self.conn.depth.set(self.conn.depth.get().saturating_sub(1));
        self.conn
            .execute_batch(&format!("RELEASE SAVEPOINT {}", self.name))
    }
}

impl Deref for Savepoint<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if self.open.get() {
            self.conn.depth.set(self.conn.depth.get().saturating_sub(1));
            // A failure here fails the enclosing transaction's next statement, which rolls
            // the whole transaction back: nothing half-written survives.
            let _ = self.conn.execute_batch(&format!(
                "ROLLBACK TO SAVEPOINT {0}; RELEASE SAVEPOINT {0}",
                self.name
            ));
        }
    }
}

/// `Option` for a query that may find no row, as rusqlite's `OptionalExtension` does.
pub trait OptionalExtension<T> {
    /// `None` for no row, the error for any other failure.
    fn optional(self) -> Result<Option<T>, Error>;
}

impl<T> OptionalExtension<T> for Result<T, Error> {
    fn optional(self) -> Result<Option<T>, Error> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(Error::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
