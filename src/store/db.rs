//! The store's one door to its database, SQLite (the embedded default) or PostgreSQL (a store
//! that several daemons share), in rusqlite's shape, so that the store's SQL and its steps are
//! written once whatever database holds them.
//!
//! The SQL is SQLite's, in the spellings both share where there is one (`ON CONFLICT DO
//! NOTHING`, `IS NOT DISTINCT FROM`, `string_agg`, `CASE` instead of summed comparisons); for
//! PostgreSQL, `postgres::translate` rewrites the few that differ. Values cross as rusqlite's
//! `Value` both ways. A write transaction (`Immediate`) has the store to itself on both:
//! SQLite's `BEGIN IMMEDIATE`, and on PostgreSQL a transaction-scoped advisory lock taken
//! first, so that the store's read-then-write steps keep one meaning whichever database holds
//! them, and however many processes share it.
//!
//! Every module of the store reaches the database through `Connection`, `Transaction`,
//! `Savepoint`, `Statement` and `Row` here, never through rusqlite itself; only what is
//! SQLite's alone (opening the file, its pragmas, the online backup) asks for the SQLite
//! connection underneath (`Connection::as_sqlite`). Parameters are given as rusqlite's
//! `params!`, arrays and `[]` give them, and rows read with rusqlite's `FromSql`.

use std::cell::{Cell, RefCell};
use std::ops::Deref;

use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlError, ToSqlOutput, Value, ValueRef};
pub use rusqlite::{TransactionBehavior, params};

use super::Error;
use super::postgres::Session;

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

/// A parameter's value, for PostgreSQL.
fn value_of(param: &dyn ToSql) -> rusqlite::Result<Value> {
    match param.to_sql()? {
        ToSqlOutput::Borrowed(v) => Ok(match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Integer(n),
            ValueRef::Real(x) => Value::Real(x),
            ValueRef::Text(t) => Value::Text(
                String::from_utf8(t.to_vec())
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            ),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }),
        ToSqlOutput::Owned(v) => Ok(v),
        _ => Err(rusqlite::Error::ToSqlConversionFailure(
            "a parameter of a kind the store does not write".into(),
        )),
    }
}

fn values<P: Params>(params: &P) -> rusqlite::Result<Vec<Value>> {
    params.refs().into_iter().map(value_of).collect()
}

/// One row of a result.
pub enum Row<'a> {
    /// A row of SQLite's, read in place.
    Sqlite(&'a rusqlite::Row<'a>),
    /// A row of PostgreSQL's, its values in column order.
    Values(&'a [Value]),
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
    pub fn get<I: ColumnIndex, T: FromSql>(&self, index: I) -> rusqlite::Result<T> {
        let at = index.position();
        let values = match self {
            Row::Sqlite(row) => return row.get(at),
            Row::Values(values) => values,
        };
        let value = values
            .get(at)
            .ok_or(rusqlite::Error::InvalidColumnIndex(at))?;
        let raw = ValueRef::from(value);
        T::column_result(raw).map_err(|e| match e {
            FromSqlError::InvalidType => {
                rusqlite::Error::InvalidColumnType(at, String::new(), raw.data_type())
            }
            FromSqlError::OutOfRange(n) => rusqlite::Error::IntegralValueOutOfRange(at, n),
            other => {
                rusqlite::Error::FromSqlConversionFailure(at, raw.data_type(), Box::new(other))
            }
        })
    }
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Session>),
}

/// A connection to the store's database.
pub struct Connection {
    backend: Backend,
    /// Open savepoints, for their names.
    depth: Cell<u32>,
    /// The connectors registered on this connection, with the kinds of document each takes:
    /// what this process queues hand-offs for (`handoff::queue`).
    connectors: RefCell<Vec<(String, Vec<String>)>>,
}

impl Connection {
    /// A connection over an open SQLite database.
    pub fn sqlite(conn: rusqlite::Connection) -> Connection {
        Connection::over(Backend::Sqlite(conn))
    }

    /// A connection over a PostgreSQL session.
    pub(super) fn postgres(session: Session) -> Connection {
        Connection::over(Backend::Postgres(Box::new(session)))
    }

    fn over(backend: Backend) -> Connection {
        Connection {
            backend,
            depth: Cell::new(0),
            connectors: RefCell::new(Vec::new()),
        }
    }

    /// The SQLite connection underneath, for what only SQLite has (pragmas, online backup).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    /// Whether the database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Registers the connectors of this connection's process, replacing earlier ones.
    pub fn set_connectors(&self, connectors: Vec<(String, Vec<String>)>) {
        *self.connectors.borrow_mut() = connectors;
    }

    /// The registered connectors that take documents of `kind`.
    pub fn connectors_for(&self, kind: &str) -> Vec<String> {
        self.connectors
            .borrow()
            .iter()
            .filter(|(_, kinds)| kinds.iter().any(|k| k == kind))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether a commit waits for the disk (the default) or only for the database's memory
    /// (`false`: a commit that a power loss, and only that, may forget).
    pub fn set_durable(&self, durable: bool) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(c) => {
                Ok(c.pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })?)
            }
            Backend::Postgres(s) => s.batch(if durable {
                "SET synchronous_commit = on"
            } else {
                "SET synchronous_commit = off"
            }),
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
            Backend::Postgres(s) => s.insert(sql, values(&params)?),
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
            Backend::Postgres(s) => Ok(Statement::Postgres(s, sql.to_owned())),
        }
    }

    /// A statement run rarely (its plan is not kept).
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>, Error> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(Statement::Once(c.prepare(sql)?)),
            Backend::Postgres(s) => Ok(Statement::Postgres(s, sql.to_owned())),
        }
    }

    /// Runs statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(s) => s.batch(sql),
        }
    }

    /// Starts a transaction; `Immediate` makes it the store's one writer until it ends.
    pub fn transaction_with_behavior(
        &self,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'_>, Error> {
        match &self.backend {
            Backend::Sqlite(c) => c.execute_batch(match behavior {
                TransactionBehavior::Deferred => "BEGIN DEFERRED",
                TransactionBehavior::Immediate => "BEGIN IMMEDIATE",
                _ => "BEGIN EXCLUSIVE",
            })?,
            Backend::Postgres(s) => s.begin(!matches!(behavior, TransactionBehavior::Deferred))?,
        }
        Ok(Transaction {
            conn: self,
            open: Cell::new(true),
        })
    }

    /// Ends a transaction (`COMMIT` or `ROLLBACK`).
    fn end(&self, sql: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(s) => s.end(sql),
        }
    }
}

/// A statement of a connection.
pub enum Statement<'c> {
    /// A statement whose plan stays in the connection's cache.
    Sqlite(rusqlite::CachedStatement<'c>),
    /// A statement prepared for this once.
    Once(rusqlite::Statement<'c>),
    /// A statement of a PostgreSQL session (which keeps every plan).
    Postgres(&'c Session, String),
}

impl<'c> Statement<'c> {
    /// The SQLite statement, or the PostgreSQL session with the SQL.
    fn inner(&mut self) -> Result<&mut rusqlite::Statement<'c>, (&'c Session, &str)> {
        match self {
            Statement::Sqlite(s) => Ok(s),
            Statement::Once(s) => Ok(s),
            Statement::Postgres(session, sql) => Err((*session, sql.as_str())),
        }
    }

    /// Runs it, returning how many rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize, Error> {
        match self.inner() {
            Ok(stmt) => Ok(stmt.execute(rusqlite::params_from_iter(params.refs()))?),
            Err((session, sql)) => session.execute(sql, values(&params)?),
        }
    }

    /// The first row made into `T`; `QueryReturnedNoRows` when there is none.
    pub fn query_row<T, P: Params>(
        &mut self,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        match self.inner() {
            Ok(stmt) => Ok(
                stmt.query_row(rusqlite::params_from_iter(params.refs()), |row| {
                    f(&Row::Sqlite(row))
                })?,
            ),
            Err((session, sql)) => {
                let rows = session.query(sql, values(&params)?)?;
                let first = rows.first().ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                Ok(f(&Row::Values(first))?)
            }
        }
    }

    /// Every row, each made into `T`, in order.
    pub fn query_map<T, P: Params>(
        &mut self,
        params: P,
        mut f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<std::vec::IntoIter<rusqlite::Result<T>>, Error> {
        let mut out = Vec::new();
        match self.inner() {
            Ok(stmt) => {
                let mut rows = stmt.query(rusqlite::params_from_iter(params.refs()))?;
                while let Some(row) = rows.next()? {
                    out.push(f(&Row::Sqlite(row)));
                }
            }
            Err((session, sql)) => {
                for values in session.query(sql, values(&params)?)? {
                    out.push(f(&Row::Values(&values)));
                }
            }
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
        self.conn.end("COMMIT")
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
            let _ = self.conn.end("ROLLBACK");
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
