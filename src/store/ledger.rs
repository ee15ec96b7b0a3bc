//! The ledger as people read it: `eingang items` and the admin page (`web`). Lists items
//! newest first with their state and where they lie now, the open error queue, an item closed
//! "handled by hand", stored documents found by number, supplier and date with their lines
//! and origin, and the originals of imported items kept for download.
//!
//! Reads only, apart from `mark_handled` and `keep_originals`; it never decides an
//! outcome (that is `commit`).

use super::db::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;

use super::{Error, Store, now};

/// An imported item's bytes up to this size are kept in the store for download; a larger one
/// is found where it lies (a drop folder's archive) or not at all.
pub const ORIGINAL_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// The kept originals of imported items together stay under this size: the oldest go first.
pub const ORIGINALS_TOTAL_BYTES: u64 = 1024 * 1024 * 1024;

/// An open failure: rejected, moved to its error folder, neither put back nor closed by hand.
const OPEN_FAILURE: &str = "i.outcome = 'rejected' AND i.disposed_at IS NOT NULL
     AND i.reprocessed_at IS NULL AND i.handled_at IS NULL";

/// Where an item stands, as `items`, `status` and the page name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// Not decided or not moved yet.
    Pending,
    /// Imported and moved to its archive.
    Archived,
    /// Rejected and lying in its error folder: the error queue.
    Failed,
    /// Rejected, then closed by a person without reprocessing ("handled by hand").
    Handled,
    /// Rejected, then put back into its inbox; its next arrival is an item of its own.
    Reprocessed,
    /// Left its inbox before it was decided (someone else took it).
    Vanished,
}

impl ItemState {
    /// The word `items` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Archived => "archived",
            ItemState::Failed => "failed",
            ItemState::Handled => "handled",
            ItemState::Reprocessed => "reprocessed",
            ItemState::Vanished => "vanished",
        }
    }
}

/// One ledger row as people read it. Every text field comes from outside: escape it for a
/// terminal, let the template escape it for HTML.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LedgerItem {
    /// The ledger row (what `eingang reprocess` takes).
    pub id: i64,
    /// When it arrived (RFC 3339, UTC).
    pub received_at: String,
    /// The source it came from (`import` for the one-shot command).
    pub source: String,
    /// `message` or `file`.
    pub kind: String,
    /// The From address of a message.
    pub sender: Option<String>,
    /// The Subject of a message.
    pub subject: Option<String>,
    /// The file name (a file, or a dropped `.eml`).
    pub file_name: Option<String>,
    /// The Message-ID of a message.
    pub message_id: Option<String>,
    /// The supplier routing found.
    pub supplier: Option<String>,
    /// `imported` or `rejected`, once decided.
    pub outcome: Option<String>,
    /// The short label of a rejection ("unknown sender").
    pub label: Option<String>,
    /// The full reason of a rejection.
    pub reason: Option<String>,
    /// Where it was found.
    pub location: String,
    /// Where its source moved it (a path, a folder), once moved.
    pub archived: Option<String>,
    /// Where it lies within that place (an IMAP folder's `UIDVALIDITY:UID`).
    pub archived_ref: Option<String>,
    /// When it was put back into its inbox.
    pub reprocessed_at: Option<String>,
    /// When a person closed it by hand.
    pub handled_at: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// The sha256 of its bytes.
    pub sha256: String,
    /// The documents stored from it.
    pub documents: Vec<i64>,
    #[serde(skip)]
    disposed: bool,
}

impl LedgerItem {
    /// Where it stands.
    pub fn state(&self) -> ItemState {
        match (self.outcome.as_deref(), self.disposed) {
            (_, false) => ItemState::Pending,
            (Some("imported"), true) => ItemState::Archived,
            (Some(_), true) if self.reprocessed_at.is_some() => ItemState::Reprocessed,
            (Some(_), true) if self.handled_at.is_some() => ItemState::Handled,
            (Some(_), true) => ItemState::Failed,
            (None, true) => ItemState::Vanished,
        }
    }

    /// Where it lies now: the place its source moved it to (with the UID in an IMAP folder),
    /// else where it was found. A reprocessed item lies in its inbox again.
    pub fn lies_in(&self) -> String {
        match (&self.archived, self.reprocessed_at.is_some()) {
            (Some(_), true) | (None, _) => self.location.clone(),
            (Some(at), false) => match self.archived_ref.as_deref().and_then(|r| r.split_once(':'))
            {
                Some((_, uid)) => format!("{at} (UID {uid})"),
                None => at.clone(),
            },
        }
    }

    /// How people recognize it: the sender of a message (with its subject), else its file.
    pub fn what(&self) -> String {
        match (&self.sender, &self.subject, &self.file_name) {
            (Some(sender), Some(subject), _) if !subject.trim().is_empty() => {
                format!("{sender}: {subject}")
            }
            (Some(sender), _, _) => sender.clone(),
            (None, _, Some(file)) => file.clone(),
            (None, _, None) => self.location.clone(),
        }
    }
}

const ITEM_SELECT: &str = "SELECT i.id, i.received_at, i.source, i.kind, i.sender, i.subject,
        i.file_name, i.message_id, i.supplier, i.outcome, i.label, i.reason, i.location,
        i.archived, i.archived_ref, i.reprocessed_at, i.handled_at, i.size, i.sha256,
        i.disposed_at IS NOT NULL,
        (SELECT string_agg(CAST(d.id AS TEXT), ',') FROM documents d WHERE d.item_id = i.id)
     FROM items i";

fn ledger_item(r: &Row<'_>) -> rusqlite::Result<LedgerItem> {
    let documents: Option<String> = r.get(20)?;
    Ok(LedgerItem {
        id: r.get(0)?,
        received_at: r.get(1)?,
        source: r.get(2)?,
        kind: r.get(3)?,
        sender: r.get(4)?,
        subject: r.get(5)?,
        file_name: r.get(6)?,
        message_id: r.get(7)?,
        supplier: r.get(8)?,
        outcome: r.get(9)?,
        label: r.get(10)?,
        reason: r.get(11)?,
        location: r.get(12)?,
        archived: r.get(13)?,
        archived_ref: r.get(14)?,
        reprocessed_at: r.get(15)?,
        handled_at: r.get(16)?,
        size: u64::try_from(r.get::<_, i64>(17)?).unwrap_or(0),
        sha256: r.get(18)?,
        disposed: r.get(19)?,
        documents: documents
            .unwrap_or_default()
            .split(',')
            .filter_map(|id| id.parse().ok())
            .collect(),
    })
}

/// Which items `items` lists.
#[derive(Debug, Clone, Default)]
pub struct ItemFilter {
    /// Only the open failures (the error queue).
    pub failed: bool,
    /// Only this source's items.
    pub source: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Stored documents to find.
#[derive(Debug, Clone, Default)]
pub struct DocumentQuery {
    /// A part of the document number (delivery note number, order id), any case.
    pub number: Option<String>,
    /// The supplier, exactly.
    pub supplier: Option<String>,
    /// `delivery_note` or `order`.
    pub kind: Option<String>,
    /// Documents dated on or after this day (`YYYY-MM-DD`).
    pub from: Option<String>,
    /// Documents dated on or before this day (`YYYY-MM-DD`).
    pub to: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// A stored document in a list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DocumentRow {
    /// The store id.
    pub id: i64,
    /// `delivery_note` or `order`.
    pub kind: String,
    /// The format it was read with.
    pub format: String,
    /// The supplier.
    pub supplier: Option<String>,
    /// The delivery note number or order id.
    pub number: String,
    /// The document's own date.
    pub date: Option<String>,
    /// When it was stored (RFC 3339, UTC).
    pub stored_at: String,
    /// The item it came from.
    pub item_id: i64,
    /// How many lines it has.
    pub lines: i64,
    /// The document that replaced it (a cXML update or delete).
    pub superseded_by: Option<i64>,
    /// The attachment it was read from.
    pub file: String,
    /// The source its item came from.
    pub source: String,
}

const DOCUMENT_SELECT: &str = "SELECT d.id, d.kind, d.format, d.supplier, d.number, d.date,
        d.stored_at, d.item_id, (SELECT COUNT(*) FROM lines l WHERE l.document_id = d.id),
        d.superseded_by, d.file, i.source
     FROM documents d JOIN items i ON i.id = d.item_id";

fn document_row(r: &Row<'_>) -> rusqlite::Result<DocumentRow> {
    Ok(DocumentRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        format: r.get(2)?,
        supplier: r.get(3)?,
        number: r.get(4)?,
        date: r.get(5)?,
        stored_at: r.get(6)?,
        item_id: r.get(7)?,
        lines: r.get(8)?,
        superseded_by: r.get(9)?,
        file: r.get(10)?,
        source: r.get(11)?,
    })
}

/// One line of a stored document, as stored (decimals in canonical form).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LineRow {
    /// The line number the document gives.
    pub line_no: String,
    /// The supplier's part number.
    pub supplier_part_id: Option<String>,
    /// The buyer's part number.
    pub buyer_part_id: Option<String>,
    /// The GTIN.
    pub gtin: Option<String>,
    /// The description.
    pub description: Option<String>,
    /// The quantity.
    pub quantity: Option<String>,
    /// The unit.
    pub unit: Option<String>,
    /// The unit price (orders).
    pub unit_price: Option<String>,
    /// The order the line refers to.
    pub order_ref: Option<String>,
    /// The order line it refers to.
    pub order_line: Option<String>,
}

/// A stored document with its lines and the item it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentDetail {
    /// The document.
    pub row: DocumentRow,
    /// Its JSON as `export` prints it, without the origin.
    pub json: Value,
    /// Its lines, in order.
    pub lines: Vec<LineRow>,
    /// The item it came from.
    pub item: LedgerItem,
}

/// Per source and outcome, how many items the ledger holds (for `/metrics`: only ever grows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeCount {
    /// The source.
    pub source: String,
    /// `imported`, `rejected`, or `pending` for items not decided yet.
    pub outcome: String,
    /// How many.
    pub count: i64,
}

/// A source's recorded health, for the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceHealth {
    /// When its last pass succeeded.
    pub last_ok: Option<String>,
    /// Its last error, if it failed since its last success.
    pub last_error: Option<String>,
    /// When that error was recorded.
    pub last_error_at: Option<String>,
    /// When its current outage began; `None` while it works.
    pub failing_since: Option<String>,
    /// The first success after its last failure.
    pub up_since: Option<String>,
    /// The standing note about its server.
    pub note: Option<String>,
}

impl Store {
    /// The ledger newest first, filtered; also how many items the filter matches in all.
    pub fn items(&self, filter: &ItemFilter) -> Result<(Vec<LedgerItem>, i64), Error> {
        let conn = self.lock();
        let mut clauses = vec!["(?1 IS NULL OR i.source = ?1)"];
        if filter.failed {
            clauses.push(OPEN_FAILURE);
        }
        let filter_sql = clauses.join(" AND ");
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare(&format!(
            "{ITEM_SELECT} WHERE {filter_sql} ORDER BY i.id DESC LIMIT ?2"
        ))?;
        let items = stmt
            .query_map(params![filter.source, limit], ledger_item)?
            .collect::<Result<Vec<_>, _>>()?;
        let total = conn.query_row(
            &format!("SELECT COUNT(*) FROM items i WHERE {filter_sql}"),
            params![filter.source],
            |r| r.get(0),
        )?;
        Ok((items, total))
    }

    /// One ledger row.
    pub fn item(&self, id: i64) -> Result<Option<LedgerItem>, Error> {
        let conn = self.lock();
        item_by_id(&conn, id)
    }

    /// Closes an open failure without reprocessing it ("handled by hand": a person booked it
    /// or told the supplier). `false` when the id names no open failure.
    pub fn mark_handled(&self, id: i64) -> Result<bool, Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            &format!("UPDATE items AS i SET handled_at = ?2 WHERE i.id = ?1 AND {OPEN_FAILURE}"),
            params![id, now()],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Keeps a batch's originals, in one transaction: the bytes of rejected items for their
    /// notices (`rejected`), and those of imported items for download (`imported`), each up
    /// to `ORIGINAL_MAX_BYTES`, dropping the oldest kept ones beyond `ORIGINALS_TOTAL_BYTES`.
    /// Keeping one again is a no-op, so a batch resumed after a crash may repeat it.
    pub fn keep_originals(
        &self,
        rejected: &[(i64, &[u8])],
        imported: &[(i64, &[u8])],
    ) -> Result<(), Error> {
        let kept: Vec<&(i64, &[u8])> = imported
            .iter()
            .filter(|(_, bytes)| !bytes.is_empty() && bytes.len() as u64 <= ORIGINAL_MAX_BYTES)
            .collect();
        if kept.is_empty() && rejected.is_empty() {
            return Ok(());
        }
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        super::outbox::keep_notice_originals(&tx, rejected)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO item_original (item_id, size, kept_at, bytes)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?;
            let at = now();
            for (item_id, bytes) in kept {
                insert.execute(params![item_id, bytes.len() as i64, at, bytes])?;
            }
        }
        // The total is kept by triggers (schema 14): reading it costs one page, where summing
        // the sizes read a page per kept original, every batch.
        let total: i64 = tx.query_row("SELECT bytes FROM item_original_total", [], |r| r.get(0))?;
        let mut over = total - ORIGINALS_TOTAL_BYTES as i64;
        if over > 0 {
            let mut oldest = tx.prepare_cached(
                "SELECT item_id, size FROM item_original ORDER BY item_id LIMIT 256",
            )?;
            let mut forget = tx.prepare_cached("DELETE FROM item_original WHERE item_id = ?1")?;
            while over > 0 {
                let rows = oldest
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                if rows.is_empty() {
                    break;
                }
                for (item_id, size) in rows {
                    if over <= 0 {
                        break;
                    }
                    forget.execute([item_id])?;
                    over -= size;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The bytes of an item kept in the store: an imported item's original, or a rejected
    /// one's until its notice is sent.
    pub fn kept_original(&self, item_id: i64) -> Result<Option<Vec<u8>>, Error> {
        let conn = self.lock();
        let imported: Option<Vec<u8>> = conn
            .query_row(
                "SELECT bytes FROM item_original WHERE item_id = ?1",
                [item_id],
                |r| r.get(0),
            )
            .optional()?;
        match imported {
            Some(bytes) => Ok(Some(bytes)),
            None => Ok(conn
                .query_row(
                    "SELECT bytes FROM outbox_original WHERE item_id = ?1",
                    [item_id],
                    |r| r.get(0),
                )
                .optional()?),
        }
    }

    /// Stored documents matching the query, newest first.
    pub fn find_documents(&self, query: &DocumentQuery) -> Result<Vec<DocumentRow>, Error> {
        let conn = self.lock();
        let number = query
            .number
            .as_deref()
            .map(|n| format!("%{}%", like_escaped(n.trim())));
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare(&format!(
            "{DOCUMENT_SELECT}
             WHERE (?1 IS NULL OR d.number LIKE ?1 ESCAPE '\\')
               AND (?2 IS NULL OR d.supplier = ?2)
               AND (?3 IS NULL OR d.kind = ?3)
               AND (?4 IS NULL OR d.date >= ?4)
               AND (?5 IS NULL OR d.date <= ?5)
             ORDER BY d.id DESC LIMIT ?6"
        ))?;
        let rows = stmt.query_map(
            params![
                number,
                query.supplier,
                query.kind,
                query.from,
                query.to,
                limit
            ],
            document_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The suppliers of stored documents, by name.
    pub fn document_suppliers(&self) -> Result<Vec<String>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT supplier FROM documents WHERE supplier IS NOT NULL ORDER BY supplier",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One stored document with its lines and its item.
    pub fn document(&self, id: i64) -> Result<Option<DocumentDetail>, Error> {
        let conn = self.lock();
        let found = conn
            .query_row(
                &format!("{DOCUMENT_SELECT} WHERE d.id = ?1"),
                [id],
                document_row,
            )
            .optional()?;
        let Some(row) = found else {
            return Ok(None);
        };
        let (json, kind, lines_apart): (String, String, bool) = conn.query_row(
            "SELECT json, kind, lines_apart FROM documents WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let mut json: Value = serde_json::from_str(&json).unwrap_or_default();
        if let Value::Object(map) = &mut json {
            super::lines::complete(&conn, id, &kind, lines_apart, map)?;
        }
        let mut stmt = conn.prepare_cached(
            "SELECT line_no, supplier_part_id, buyer_part_id, gtin, description, quantity, unit,
                    unit_price, order_ref, order_line
             FROM lines WHERE document_id = ?1 ORDER BY position",
        )?;
        let lines = stmt
            .query_map([id], |r| {
                Ok(LineRow {
                    line_no: r.get(0)?,
                    supplier_part_id: r.get(1)?,
                    buyer_part_id: r.get(2)?,
                    gtin: r.get(3)?,
                    description: r.get(4)?,
                    quantity: r.get(5)?,
                    unit: r.get(6)?,
                    unit_price: r.get(7)?,
                    order_ref: r.get(8)?,
                    order_line: r.get(9)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let item = item_by_id(&conn, row.item_id)?.expect("a document's item exists (foreign key)");
        Ok(Some(DocumentDetail {
            json,
            row,
            lines,
            item,
        }))
    }

    /// How many items the ledger holds per source and outcome.
    pub fn outcome_counts(&self) -> Result<Vec<OutcomeCount>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT source, COALESCE(outcome, 'pending'), COUNT(*) FROM items
             GROUP BY source, COALESCE(outcome, 'pending') ORDER BY 1, 2",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(OutcomeCount {
                source: r.get(0)?,
                outcome: r.get(1)?,
                count: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A source's recorded health; the default when it never ran.
    pub fn source_health(&self, source: &str) -> Result<SourceHealth, Error> {
        Ok(self
            .lock()
            .query_row(
                "SELECT last_ok, CASE WHEN last_error_at > COALESCE(last_ok, '') THEN last_error END,
                        CASE WHEN last_error_at > COALESCE(last_ok, '') THEN last_error_at END,
                        failing_since, up_since, note
                 FROM source_state WHERE source = ?1",
                [source],
                |r| {
                    Ok(SourceHealth {
                        last_ok: r.get(0)?,
                        last_error: r.get(1)?,
                        last_error_at: r.get(2)?,
                        failing_since: r.get(3)?,
                        up_since: r.get(4)?,
                        note: r.get(5)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }
}

/// Whether the store at `path` opens and answers, on a connection of its own (read-only, so
/// that a long write of the daemon does not make it look broken).
pub fn probe(location: &super::Location) -> Result<(), Error> {
    let path = match location {
        super::Location::File(path) => path,
        super::Location::Postgres(target) => {
            let conn = Connection::postgres(super::postgres::Session::open(target)?);
            conn.query_row("SELECT id FROM store_identity", [], |r| {
                r.get::<_, String>(0)
            })?;
            return Ok(());
        }
    };
    let sqlite = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    sqlite.busy_timeout(std::time::Duration::from_secs(2))?;
    let conn = Connection::sqlite(sqlite);
    conn.query_row("SELECT id FROM store_identity", [], |r| {
        r.get::<_, String>(0)
    })?;
    Ok(())
}

fn item_by_id(conn: &Connection, id: i64) -> Result<Option<LedgerItem>, Error> {
    conn.query_row(&format!("{ITEM_SELECT} WHERE i.id = ?1"), [id], ledger_item)
        .optional()
}

/// `%`, `_` and `\` taken literally in a LIKE pattern (with `ESCAPE '\'`).
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at(&crate::store::test_location(dir.path())).unwrap();
        (dir, store)
    }

    fn insert(store: &Store, source: &str, outcome: Option<&str>, disposed: bool) -> i64 {
        let conn = store.lock();
        conn.insert(
            "INSERT INTO items (sha256, source, kind, location, file_name, size, received_at,
                                outcome, reason, label, disposed_at, archived)
             VALUES ('x', ?1, 'file', '/in/a.csv', 'a.csv', 3, '2026-12-01T08:00:00.000Z', ?2,
                     CASE WHEN ?2 = 'rejected' THEN 'a.csv: bad' END,
                     CASE WHEN ?2 = 'rejected' THEN 'bad value' END,
                     CASE WHEN ?3 THEN '2026-12-01T08:00:01.000Z' END,
                     CASE WHEN ?3 THEN '/fehler/a.csv' END)",
            params![source, outcome, disposed],
        )
        .unwrap()
    }

    #[test]
    fn items_come_newest_first_with_their_state_and_the_failed_filter() {
        let (_dir, store) = store();
        let archived = insert(&store, "drop", Some("imported"), true);
        let failed = insert(&store, "drop", Some("rejected"), true);
        let pending = insert(&store, "mail", None, false);
        let handled = insert(&store, "drop", Some("rejected"), true);
        assert!(store.mark_handled(handled).unwrap());
        assert!(!store.mark_handled(handled).unwrap(), "closed twice");
        assert!(!store.mark_handled(archived).unwrap(), "not a failure");
        let all = ItemFilter {
            limit: 10,
            ..ItemFilter::default()
        };
        let (items, total) = store.items(&all).unwrap();
        assert_eq!(total, 4);
        let states: Vec<(i64, ItemState)> = items.iter().map(|i| (i.id, i.state())).collect();
        assert_eq!(
            states,
            [
                (handled, ItemState::Handled),
                (pending, ItemState::Pending),
                (failed, ItemState::Failed),
                (archived, ItemState::Archived)
            ]
        );
        let (queue, total) = store
            .items(&ItemFilter {
                failed: true,
                ..all.clone()
            })
            .unwrap();
        assert_eq!((queue.len(), total), (1, 1));
        assert_eq!(queue[0].id, failed);
        assert_eq!(queue[0].lies_in(), "/fehler/a.csv");
        let (mail, _) = store
            .items(&ItemFilter {
                source: Some("mail".into()),
                ..all.clone()
            })
            .unwrap();
        assert_eq!(mail.iter().map(|i| i.id).collect::<Vec<_>>(), [pending]);
        let (two, total) = store.items(&ItemFilter { limit: 2, ..all }).unwrap();
        assert_eq!((two.len(), total), (2, 4));
        // A handled item is no longer a failure to put back.
        assert!(store.failed_item(handled).unwrap().is_none());
    }

    #[test]
    fn an_imap_item_lies_in_its_folder_under_its_uid_and_a_reprocessed_one_in_its_inbox() {
        let (_dir, store) = store();
        let id = insert(&store, "mail", Some("rejected"), true);
        store
            .lock()
            .execute(
                "UPDATE items SET archived = 'Fehler', archived_ref = '7:42' WHERE id = ?1",
                [id],
            )
            .unwrap();
        assert_eq!(
            store.item(id).unwrap().unwrap().lies_in(),
            "Fehler (UID 42)"
        );
        store.mark_reprocessed(id).unwrap();
        let item = store.item(id).unwrap().unwrap();
        assert_eq!(item.state(), ItemState::Reprocessed);
        assert_eq!(item.lies_in(), "/in/a.csv");
    }

    #[test]
    fn kept_originals_stay_under_their_bounds_oldest_dropped_first() {
        let (_dir, store) = store();
        let a = insert(&store, "drop", Some("imported"), true);
        let b = insert(&store, "drop", Some("imported"), true);
        let big = vec![0u8; ORIGINAL_MAX_BYTES as usize + 1];
        store
            .keep_originals(&[], &[(a, b"first"), (b, &big)])
            .unwrap();
        assert_eq!(
            store.kept_original(a).unwrap().as_deref(),
            Some(&b"first"[..])
        );
        assert_eq!(store.kept_original(b).unwrap(), None);
        // Kept again after a crash: the first bytes stay.
        store.keep_originals(&[], &[(a, b"other")]).unwrap();
        assert_eq!(
            store.kept_original(a).unwrap().as_deref(),
            Some(&b"first"[..])
        );
        // What lies beyond the total is dropped, oldest first.
        store
            .lock()
            .execute(
                "UPDATE item_original SET size = ?1",
                [ORIGINALS_TOTAL_BYTES as i64],
            )
            .unwrap();
        store.keep_originals(&[], &[(b, b"second")]).unwrap();
        assert_eq!(store.kept_original(a).unwrap(), None);
        assert_eq!(
            store.kept_original(b).unwrap().as_deref(),
            Some(&b"second"[..])
        );
    }

    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(like_escaped("LS_4%\\"), "LS\\_4\\%\\\\");
    }
}
