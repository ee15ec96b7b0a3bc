//! The store's schema, migrated step by step along `PRAGMA user_version` (SQLite) or the
//! `schema_version` table (PostgreSQL). The steps are written for SQLite; PostgreSQL takes the
//! same steps in its own types (`postgres_ddl`), and a step it spells otherwise (a trigger)
//! in its own words (`POSTGRES_STEPS`).

use super::Error;
use super::db::{Connection, TransactionBehavior};

/// Each entry moves the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the ledger of items, the documents with their lines, the outbox, source health.
    "CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        location TEXT NOT NULL,
        file_name TEXT,
        size INTEGER NOT NULL,
        received_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        message_id TEXT,
        sender TEXT,
        subject TEXT,
        supplier TEXT,
        outcome TEXT CHECK (outcome IN ('imported', 'rejected')),
        label TEXT,
        reason TEXT,
        decided_at TEXT,
        disposed_at TEXT,
        archived TEXT,
        archived_ref TEXT,
        reprocessed_at TEXT
    );
    CREATE INDEX items_by_sha ON items(sha256);
    CREATE INDEX items_by_source ON items(source);
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items(id),
        kind TEXT NOT NULL,
        format TEXT NOT NULL,
        supplier TEXT,
        number TEXT NOT NULL,
        business_key TEXT NOT NULL,
        payload_id TEXT,
        operation TEXT,
        date TEXT,
        file TEXT NOT NULL,
        json TEXT NOT NULL,
        superseded_by INTEGER REFERENCES documents(id),
        stored_at TEXT NOT NULL
    );
    CREATE INDEX documents_by_key ON documents(business_key);
    CREATE INDEX documents_by_payload ON documents(payload_id) WHERE payload_id IS NOT NULL;
    CREATE TABLE lines (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id),
        position INTEGER NOT NULL,
        line_no TEXT NOT NULL,
        supplier_part_id TEXT,
        buyer_part_id TEXT,
        gtin TEXT,
        description TEXT,
        quantity TEXT,
        manufacturer_part_id TEXT,
        unit TEXT,
        unit_price TEXT,
        line_total TEXT,
        order_ref TEXT,
        order_line TEXT,
        serial_number TEXT,
        comment TEXT
    );
    CREATE INDEX lines_by_document ON lines(document_id);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        item_id INTEGER REFERENCES items(id),
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        created_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_attempt_at TEXT,
        sent_at TEXT,
        message_id TEXT
    );
    CREATE TABLE source_state (
        source TEXT PRIMARY KEY,
        last_ok TEXT,
        last_error TEXT,
        last_error_at TEXT,
        failing_since TEXT
    );",
    // 2: notices. A burst summary stands in for its members (`summary_id`); a source outage
    // notice carries its start and last error; the rejected item is kept for its attachment
    // until its notice is sent; a random store id keeps Message-IDs unique across stores.
    "ALTER TABLE outbox ADD COLUMN summary_id INTEGER REFERENCES outbox(id);
    ALTER TABLE outbox ADD COLUMN outage_since TEXT;
    ALTER TABLE outbox ADD COLUMN last_error TEXT;
    CREATE INDEX outbox_by_state ON outbox(state, source);
    CREATE TABLE outbox_original (
        item_id INTEGER PRIMARY KEY REFERENCES items(id),
        bytes BLOB NOT NULL
    );
    CREATE TABLE store_identity (id TEXT NOT NULL);
    INSERT INTO store_identity (id) SELECT lower(hex(randomblob(8)));",
    // 3: a standing note per source for `status` (an IMAP server without UIDPLUS).
    "ALTER TABLE source_state ADD COLUMN note TEXT;",
    // 4: what lies in an inbox that eingang leaves alone (a link, a FIFO, a folder), told once;
    // a notice's own text (`detail`) for notices about something other than an item.
    "CREATE TABLE strays (
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        why TEXT NOT NULL,
        seen_at TEXT NOT NULL,
        PRIMARY KEY (source, name)
    );
    ALTER TABLE outbox ADD COLUMN detail TEXT;",
    // 5: OAuth2 logins (store/oauth.rs), one row per account (token URL, client id, user,
    // scope): the newest refresh token, the fingerprint of the configured one it descends
    // from, and why a person must sign in again. Access tokens are never stored.
    "CREATE TABLE oauth_account (
        account TEXT PRIMARY KEY,
        login TEXT NOT NULL,
        refresh_token TEXT,
        seed TEXT,
        updated_at TEXT NOT NULL,
        needs_login TEXT
    );",
    // 6: what a command asks of the running daemon (a pass now, an item put back), and the
    // answer it waits for.
    "CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        source TEXT,
        item_id INTEGER,
        created_at TEXT NOT NULL,
        taken_at TEXT,
        done_at TEXT,
        result TEXT
    );",
    // 7: items found in an archive that the ledger does not know (a store restored from an
    // older copy), told once until `eingang recover` puts them back.
    "CREATE TABLE unrecorded (
        source TEXT NOT NULL,
        at TEXT NOT NULL,
        reference TEXT NOT NULL DEFAULT '',
        seen_at TEXT NOT NULL,
        PRIMARY KEY (source, at, reference)
    );",
    // 8: the ERP hand-off (store/handoff.rs): one row per (connector, document), written in
    // the same transaction as the document, moved along `pending → delivered | dead`; the body
    // fixed at the first attempt; the notice that tells of a dead one. (Which connectors a
    // process has configured is a TEMP table of its connection, not part of the file.)
    "CREATE TABLE handoff (
        connector TEXT NOT NULL,
        document_id INTEGER NOT NULL REFERENCES documents(id),
        event TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        next_at TEXT NOT NULL,
        last_attempt_at TEXT,
        delivered_at TEXT,
        last_error TEXT,
        body TEXT,
        notice_id INTEGER REFERENCES outbox(id),
        PRIMARY KEY (connector, document_id)
    );
    CREATE INDEX handoff_due ON handoff(connector, state, next_at);",
    // 9: the admin's page (store/ledger.rs): a failed item closed by hand without reprocessing,
    // the start of a source's run of good passes, the originals of imported items kept for
    // download (size-bounded), and documents searched by date.
    "ALTER TABLE items ADD COLUMN handled_at TEXT;
    ALTER TABLE source_state ADD COLUMN up_since TEXT;
    CREATE TABLE item_original (
        item_id INTEGER PRIMARY KEY REFERENCES items(id),
        size INTEGER NOT NULL,
        kept_at TEXT NOT NULL,
        bytes BLOB NOT NULL
    );
    CREATE INDEX documents_by_date ON documents(date);",
    // 10: a rejection's parts (the `Reject` as JSON) beside its English reason, so that a
    // notice can say it in the admins' language.
    "ALTER TABLE items ADD COLUMN reject TEXT;",
    // 11: sender authenticity (auth/). The verdict about a message's sender, as JSON, taken at
    // first sight and kept for a reprocess; a message left in its inbox because DNS failed
    // (its supplier requires authentication) is "not decided" until `deferred_until`, its
    // tries counted apart from the crash attempts; and who sent each document (an
    // authenticated domain, or the source a file came from), for conflicts and cXML updates.
    "ALTER TABLE items ADD COLUMN sender_auth TEXT;
    ALTER TABLE items ADD COLUMN deferred_until TEXT;
    ALTER TABLE items ADD COLUMN deferrals INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE documents ADD COLUMN sender_identity TEXT;",
    // 12: standard documents are matched by number (and format, and a supplier that does not
    // differ), not only by their business key: an index for that look-up.
    "CREATE INDEX documents_by_number ON documents(kind, number);",
    // 13: the cXML receiver answers a repeated payloadID from the ledger (store/receiver.rs):
    // items found by source (the partner) and location (its payloadID).
    "CREATE INDEX items_by_location ON items(source, location);",
    // 14: a document is stored once (issue 16). Its lines are the `lines` rows, now with an
    // order line's SupplierPartAuxiliaryID too; `json` keeps the rest (`"lines": []`), and
    // `export` puts the rows back in its place (`lines_apart = 1`). Documents stored before
    // keep their whole JSON (`lines_apart = 0`), exported as stored. The bytes of the kept
    // originals are summed as they come and go, so that keeping one more does not read them
    // all.
    "ALTER TABLE lines ADD COLUMN supplier_part_aux_id TEXT;
    ALTER TABLE documents ADD COLUMN lines_apart INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE item_original_total (bytes INTEGER NOT NULL);
    INSERT INTO item_original_total (bytes) SELECT COALESCE(SUM(size), 0) FROM item_original;
    CREATE TRIGGER item_original_added AFTER INSERT ON item_original
    BEGIN UPDATE item_original_total SET bytes = bytes + NEW.size; END;
    CREATE TRIGGER item_original_dropped AFTER DELETE ON item_original
    BEGIN UPDATE item_original_total SET bytes = bytes - OLD.size; END;
    CREATE TRIGGER item_original_resized AFTER UPDATE OF size ON item_original
    BEGIN UPDATE item_original_total SET bytes = bytes - OLD.size + NEW.size; END;",
    // 15: one owner per source on a store that several daemons share (store/lease.rs): the
    // owner (host and process id) and the epoch it took the source at, which fences every
    // write for the source. Unused on a store of one daemon.
    "CREATE TABLE source_leases (
        source TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        epoch INTEGER NOT NULL
    );",
    // 16: a notice and a hand-off are claimed by one process before it sends them, on a store
    // that several daemons share (store/outbox.rs `claim_notice`, store/handoff.rs
    // `claim_handoffs`): who claimed it (host and process id), and until when the claim holds
    // (longer than its attempt can take; a claimer that died loses it then).
    "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claimed_until TEXT;
    ALTER TABLE handoff ADD COLUMN claimed_by TEXT;
    ALTER TABLE handoff ADD COLUMN claimed_until TEXT;",
];

/// The steps PostgreSQL takes in words of its own, by the version they lead to.
const POSTGRES_STEPS: &[(usize, &str)] = &[(
    14,
    "ALTER TABLE lines ADD COLUMN supplier_part_aux_id TEXT;
    ALTER TABLE documents ADD COLUMN lines_apart BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE item_original_total (bytes BIGINT NOT NULL);
    INSERT INTO item_original_total (bytes) SELECT COALESCE(SUM(size), 0) FROM item_original;
    CREATE FUNCTION item_original_counted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            UPDATE item_original_total SET bytes = bytes - OLD.size;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            UPDATE item_original_total SET bytes = bytes + NEW.size;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER item_original_counted AFTER INSERT OR DELETE OR UPDATE OF size
    ON item_original FOR EACH ROW EXECUTE FUNCTION item_original_counted();",
)];

/// Brings the schema to the newest version, one transaction per step.
/// A store written by a newer eingang is refused (`Error::TooNew`).
pub fn migrate(conn: &Connection) -> Result<(), Error> {
    if conn.is_postgres() {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
        tx.commit()?;
    }
    let current = version(conn)?;
    if current > latest() as i64 {
        return Err(Error::TooNew {
            found: current,
            known: latest(),
        });
    }
    for (before, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process opening the same new store (a `status` beside a starting daemon)
        // may have taken this step since the version was read: read it again under the lock.
        if version(&tx)? > before as i64 {
            continue;
        }
        if tx.is_postgres() {
            tx.execute_batch(&postgres_ddl(before + 1, sql))?;
            tx.execute_batch(&format!(
                "DELETE FROM schema_version; INSERT INTO schema_version VALUES ({})",
                before + 1
            ))?;
        } else {
            tx.execute_batch(sql)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", before + 1))?;
        }
        tx.commit()?;
    }
    Ok(())
}

/// The store's schema version.
fn version(conn: &Connection) -> Result<i64, Error> {
    let sql = if conn.is_postgres() {
        "SELECT COALESCE(MAX(version), 0) FROM schema_version"
    } else {
        "PRAGMA user_version"
    };
    conn.query_row(sql, [], |r| r.get(0))
}

/// The step to `version` as PostgreSQL takes it: its own words where it has them, else
/// SQLite's in its types (64-bit integers, identity keys, `bytea`) and its own random store id.
fn postgres_ddl(version: usize, sql: &str) -> String {
    if let Some((_, own)) = POSTGRES_STEPS.iter().find(|(v, _)| *v == version) {
        return (*own).to_owned();
    }
    sql.replace(
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
    .replace("INTEGER", "BIGINT")
    .replace("BLOB", "BYTEA")
    .replace(
        "lower(hex(randomblob(8)))",
        "substr(md5(random()::text || clock_timestamp()::text), 1, 16)",
    )
}

/// The schema version this build writes.
pub fn latest() -> usize {
    MIGRATIONS.len()
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    /// A store written before schema 14 kept each document whole, its lines inside its JSON:
    /// after the upgrade `export` and the document page show that JSON as it was stored (not
    /// rebuilt from the rows), and the kept originals' total is what they hold.
    #[test]
    fn an_old_form_document_keeps_its_stored_json_after_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eingang.db");
        let whole = r#"{"kind":"delivery_note","format":"csv:acme","supplier":"acme","number":"LS-1","date":"2026-11-20","order_refs":["PO-1"],"lines":[{"line_no":"1","supplier_part_id":"A-1","buyer_part_id":null,"gtin":null,"description":"Käse","quantity":"1.5","unit":"KGM","order_ref":null,"order_line":null,"serial_number":"S-9"}]}"#;
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &super::MIGRATIONS[..13] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 13).unwrap();
            tx.execute(
                "INSERT INTO items (sha256, source, kind, location, size, received_at, outcome)
                 VALUES ('00', 'drop', 'file', 'in/ls.csv', 3, '2026-11-20T10:00:00Z', 'imported')",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO documents (item_id, kind, format, supplier, number, business_key, file,
                                        json, stored_at)
                 VALUES (1, 'delivery_note', 'csv:acme', 'acme', 'LS-1', 'acme|LS-1', 'ls.csv', ?1,
                         '2026-11-20T10:00:00Z')",
                params![whole],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO item_original (item_id, size, kept_at, bytes)
                 VALUES (1, 3, '2026-11-20T10:00:00Z', x'616263')",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = super::super::Store::open(&path).unwrap();
        let whole: serde_json::Value = serde_json::from_str(whole).unwrap();
        let exported = store.export(0).unwrap().remove(0);
        let mut got = exported.json.as_object().unwrap().clone();
        got.shift_remove("id");
        got.shift_remove("origin");
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            serde_json::to_string(&whole).unwrap()
        );
        let detail = store.document(exported.id).unwrap().unwrap();
        assert_eq!(detail.json, whole);
        let total: i64 = store
            .lock()
            .query_row("SELECT bytes FROM item_original_total", [], |r| r.get(0))
            .unwrap();
        assert_eq!(total, 3);
    }

    #[test]
    fn two_processes_opening_a_new_store_at_once_both_get_it_migrated() {
        for _ in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("eingang.db");
            let open = || {
                let path = path.clone();
                std::thread::spawn(move || super::super::Store::open(&path).map(|_| ()))
            };
            let (a, b) = (open(), open());
            a.join().unwrap().unwrap();
            b.join().unwrap().unwrap();
        }
    }
}
