//! The ledger's part in sender authenticity, on a real store file: messages left waiting for
//! DNS, stored verdicts, and who sent a document (duplicate, conflict, cXML update).

use super::*;
use crate::auth::{DecidedBy, Status};
use crate::item::{ItemKind, Origin};
use crate::model::{DeliveryNote, Order};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_at(&crate::store::test_location(dir.path())).unwrap();
    (dir, store)
}

fn message(bytes: &str, source: &str) -> Item {
    Item::new(
        bytes.as_bytes().to_vec(),
        ItemKind::Message,
        Origin {
            source: source.into(),
            location: format!("{source}/1:{}", bytes.len()),
            file_name: None,
        },
    )
}

/// A process id that no process has now: a child that ran and was reaped.
pub(super) fn ended_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child.id()
}

pub(super) fn file(bytes: &str, source: &str) -> Item {
    Item::new(
        bytes.as_bytes().to_vec(),
        ItemKind::File,
        Origin {
            source: source.into(),
            location: format!("{source}/in/{bytes}.xml"),
            file_name: Some(format!("{bytes}.xml")),
        },
    )
}

fn verdict(status: Status, domain: &str) -> auth::Verdict {
    auth::Verdict {
        status,
        from_domain: Some(domain.into()),
        aligned_domain: (status == Status::Pass).then(|| domain.into()),
        policy: None,
        decided_by: DecidedBy::Eingang,
        authserv_id: None,
        text: format!("dmarc={status}"),
    }
}

fn note(number: &str) -> Document {
    Document::DeliveryNote(DeliveryNote {
        format: "opentrans-2.1".into(),
        supplier: Some("acme".into()),
        number: number.into(),
        date: None,
        order_refs: Vec::new(),
        lines: Vec::new(),
        file: "ls.xml".into(),
        date_text: None,
    })
}

fn order(id: &str, payload: &str, operation: Operation) -> Document {
    Document::Order(Order {
        format: "cxml-order-request".into(),
        supplier: None,
        payload_id: Some(payload.into()),
        order_id: Some(id.into()),
        operation,
        date: None,
        currency: None,
        total: None,
        buyer_cookie: None,
        ship_to: None,
        document_ref: None,
        lines: Vec::new(),
        file: "po.xml".into(),
    })
}

fn fresh(store: &Store, item: &Item) -> i64 {
    match store.begin(&[item], DUE_NOW).unwrap().remove(0) {
        Prior::Fresh { item_id } => item_id,
        other => panic!("not fresh: {other:?}"),
    }
}

/// Commits `documents` for `item` as sent by `sender` (with `auth` for a message).
fn store_docs(
    store: &Store,
    item: &Item,
    documents: Vec<Document>,
    auth: Option<auth::Verdict>,
) -> Outcome {
    let item_id = fresh(store, item);
    let sender = match item.kind {
        ItemKind::Message => Sender::of_message(auth.as_ref()),
        ItemKind::File => Sender::of_file(&item.origin.source),
    };
    store
        .commit(vec![Verdict {
            item_id,
            envelope: Envelope {
                sender: Some("lager@supplier.example".into()),
                ..Envelope::default()
            },
            supplier: Some("acme".into()),
            result: Ok(documents),
            sender_auth: auth,
            sender,
        }])
        .unwrap()
        .remove(0)
}

fn rejected(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Rejected { reason, .. } => reason,
        other => panic!("not rejected: {other:?}"),
    }
}

fn held(item_id: i64) -> Held {
    Held {
        item_id,
        envelope: Envelope::default(),
        supplier: Some("acme".into()),
        sender_auth: Some(verdict(Status::TempError, "supplier.example")),
        reason: "dns failed".into(),
    }
}

#[test]
fn the_wait_of_a_deferred_message_doubles_from_5_s_to_10_min() {
    let waits: Vec<u64> = (1..=9).map(|n| retry_wait(n).as_secs()).collect();
    assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
    assert_eq!(retry_wait(u32::MAX), RETRY_CAP);
}

#[test]
fn a_message_deferred_for_dns_is_never_counted_as_a_crash() {
    let (_dir, store) = store();
    let item = message("From: a@supplier.example\r\n\r\nx", "mail");
    let id = fresh(&store, &item);
    // Deferred many more times than MAX_ATTEMPTS: each try is a fresh one on the same row.
    for round in 1..=5 {
        let outcome = store.defer(vec![held(id)]).unwrap().remove(0);
        let Outcome::Deferred { until, .. } = outcome else {
            panic!("deferred");
        };
        // Not due yet: waiting, untouched.
        assert!(matches!(
            store.begin(&[&item], &due_now()).unwrap()[0],
            Prior::Waiting { item_id, .. } if item_id == id
        ));
        let probe = Probe {
            sha256: item.key().as_str().into(),
            source: "mail".into(),
            location: item.origin.location.clone(),
        };
        assert_eq!(
            store.sender_checks(&[probe], &due_now()).unwrap(),
            [Known::Waiting]
        );
        // Due (or a person runs `sync`): taken up again on its own row.
        assert_eq!(
            store.begin(&[&item], &until).unwrap(),
            [Prior::Fresh { item_id: id }],
            "round {round}"
        );
    }
    store.defer(vec![held(id)]).unwrap();
    let (attempts, deferrals): (u32, u32) = store
        .lock()
        .query_row(
            "SELECT attempts, deferrals FROM items WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((attempts, deferrals), (1, 6));
    // Not decided, so not moved: reconcile sees it as undecided and leaves it for the pass.
    let left = store.unfinished("mail").unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].outcome.is_none());
    assert_eq!(store.auth_by_source().unwrap()["mail"].waiting, 1);
}

#[test]
fn a_deferred_message_that_crashes_the_parser_still_goes_to_error_after_three_attempts() {
    let (_dir, store) = store();
    let item = message("From: a@supplier.example\r\n\r\ny", "mail");
    let id = fresh(&store, &item);
    store.defer(vec![held(id)]).unwrap();
    assert_eq!(
        store.begin(&[&item], DUE_NOW).unwrap(),
        [Prior::Fresh { item_id: id }]
    );
    // The process dies while parsing it, twice more: then it is set aside.
    let died = || {
        store.started.lock().unwrap().clear();
        store.begin(&[&item], DUE_NOW).unwrap().remove(0)
    };
    assert_eq!(died(), Prior::Retry { item_id: id });
    store.count_attempt(id).unwrap();
    assert_eq!(died(), Prior::Retry { item_id: id });
    store.count_attempt(id).unwrap();
    assert!(matches!(died(), Prior::Poison { attempts: 3, .. }));
}

#[test]
fn a_stored_verdict_is_reused_for_the_same_bytes_but_a_temperror_is_not() {
    let (_dir, store) = store();
    let item = message("From: a@supplier.example\r\n\r\nz", "mail");
    let probe = || Probe {
        sha256: item.key().as_str().into(),
        source: "mail".into(),
        location: item.origin.location.clone(),
    };
    assert_eq!(
        store.sender_checks(&[probe()], &due_now()).unwrap(),
        [Known::Unknown]
    );
    // Rejected for another reason, moved, and put back by `eingang reprocess`.
    let reject_and_put_back = |auth: auth::Verdict| {
        let item_id = fresh(&store, &item);
        store
            .commit(vec![Verdict {
                item_id,
                envelope: Envelope::default(),
                supplier: None,
                result: Err(Reject::NoDocuments { why: "none".into() }),
                sender: Sender::of_message(Some(&auth)),
                sender_auth: Some(auth),
            }])
            .unwrap();
        store
            .mark_placed(&[(item_id, Place::at("fehler"))])
            .unwrap();
        store.mark_reprocessed(item_id).unwrap();
    };
    reject_and_put_back(verdict(Status::TempError, "supplier.example"));
    assert_eq!(
        store.sender_checks(&[probe()], &due_now()).unwrap(),
        [Known::Unknown],
        "a temperror is never final"
    );
    let pass = verdict(Status::Pass, "supplier.example");
    reject_and_put_back(pass.clone());
    assert_eq!(
        store.sender_checks(&[probe()], &due_now()).unwrap(),
        [Known::Stored(pass)]
    );
    // The same bytes from another source are checked as that source sees them.
    let elsewhere = Probe {
        source: "other".into(),
        ..probe()
    };
    assert_eq!(
        store.sender_checks(&[elsewhere], &due_now()).unwrap(),
        [Known::Unknown]
    );
}

#[test]
fn the_same_note_from_the_same_authenticated_domain_is_a_duplicate_from_another_a_conflict() {
    let (_dir, store) = store();
    let pass = || Some(verdict(Status::Pass, "supplier.example"));
    let first = message("1", "mail");
    assert!(matches!(
        store_docs(&store, &first, vec![note("LS-1")], pass()),
        Outcome::Imported { .. }
    ));
    let again = store_docs(&store, &message("2", "mail"), vec![note("LS-1")], pass());
    assert!(
        rejected(&again).starts_with("duplicate delivery note LS-1 from acme: already stored"),
        "{again:?}"
    );
    let forged = store_docs(
        &store,
        &message("3", "mail"),
        vec![note("LS-1")],
        Some(verdict(Status::Fail, "supplier.example")),
    );
    let reason = rejected(&forged);
    assert!(
        reason.starts_with("duplicate delivery note LS-1 from acme from another sender: document 1 was stored first, from lager@supplier.example (authenticated for supplier.example), item 1 of the source mail"),
        "{reason}"
    );
    assert!(
        reason.contains(
            "this one is from lager@supplier.example (not authenticated: fail); this one cannot replace it"
        ),
        "{reason}"
    );
    // Two unauthenticated senders are never the same one.
    let unsigned = || Some(verdict(Status::None, "supplier.example"));
    store_docs(
        &store,
        &message("4", "mail"),
        vec![note("LS-2")],
        unsigned(),
    );
    let second = store_docs(
        &store,
        &message("5", "mail"),
        vec![note("LS-2")],
        unsigned(),
    );
    assert!(
        rejected(&second).contains("from another sender"),
        "{second:?}"
    );
    // Files of one source are one sender.
    store_docs(&store, &file("a", "drop"), vec![note("LS-3")], None);
    let copy = store_docs(&store, &file("b", "drop"), vec![note("LS-3")], None);
    assert!(rejected(&copy).starts_with("duplicate delivery note LS-3 from acme: already"));
}

#[test]
fn a_reprocessed_conflict_from_an_authenticated_sender_takes_the_place_of_the_stored_note() {
    let (_dir, store) = store();
    let forged = message("forged", "mail");
    store_docs(
        &store,
        &forged,
        vec![note("LS-9")],
        Some(verdict(Status::None, "supplier.example")),
    );
    let genuine = message("genuine", "mail");
    let pass = || Some(verdict(Status::Pass, "supplier.example"));
    let conflict = store_docs(&store, &genuine, vec![note("LS-9")], pass());
    let reason = rejected(&conflict).to_owned();
    assert!(
        reason.contains("if document 1 is the false one, reprocessing this item (2) stores this one in its place"),
        "{reason}"
    );
    // `eingang reprocess 2`: the item was put back, and comes again.
    {
        let conn = store.lock();
        conn.execute(
            "UPDATE items SET disposed_at = 'x', reprocessed_at = 'y' WHERE id = 2",
            [],
        )
        .unwrap();
    }
    let Outcome::Imported { documents, .. } =
        store_docs(&store, &genuine, vec![note("LS-9")], pass())
    else {
        panic!("the genuine note replaces the forged one");
    };
    let superseded: Option<i64> = store
        .lock()
        .query_row(
            "SELECT superseded_by FROM documents WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(superseded, Some(documents[0]));
}

#[test]
fn a_cxml_delete_from_another_sender_does_not_supersede_the_order() {
    let (_dir, store) = store();
    let buyer = || Some(verdict(Status::Pass, "buyer.example"));
    store_docs(
        &store,
        &message("po", "mail"),
        vec![order("PO-1", "p1@buyer", Operation::New)],
        buyer(),
    );
    let delete = store_docs(
        &store,
        &message("forged delete", "mail"),
        vec![order("PO-1", "p2@buyer", Operation::Delete)],
        Some(verdict(Status::Pass, "attacker.example")),
    );
    let reason = rejected(&delete);
    assert!(
        reason.starts_with("delete of order PO-1 not accepted: an update or delete is accepted only from the sender of the order it changes; the order (document 1) came from lager@supplier.example (authenticated for buyer.example)"),
        "{reason}"
    );
    assert!(
        reason.contains(
            "this one is from lager@supplier.example (authenticated for attacker.example)"
        ),
        "{reason}"
    );
    let update = store_docs(
        &store,
        &message("update", "mail"),
        vec![order("PO-1", "p3@buyer", Operation::Update)],
        buyer(),
    );
    assert!(matches!(update, Outcome::Imported { .. }), "{update:?}");
    let active: i64 = store
        .lock()
        .query_row(
            "SELECT COUNT(*) FROM documents WHERE superseded_by IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(active, 1);
}

#[test]
fn export_tells_the_sender_auth_of_every_document() {
    let (_dir, store) = store();
    store_docs(
        &store,
        &message("a", "mail"),
        vec![note("LS-1")],
        Some(verdict(Status::Pass, "supplier.example")),
    );
    store_docs(
        &store,
        &message("b", "mail"),
        vec![note("LS-2")],
        Some(verdict(Status::TempError, "supplier.example")),
    );
    store_docs(&store, &file("c", "drop"), vec![note("LS-3")], None);
    let origins: Vec<Value> = store
        .export(0)
        .unwrap()
        .into_iter()
        .map(|d| d.json["origin"].clone())
        .collect();
    assert_eq!(origins[0]["sender_auth"], "pass");
    assert_eq!(origins[0]["auth_domain"], "supplier.example");
    assert_eq!(origins[0]["auth_verdict"], "pass");
    assert_eq!(origins[1]["sender_auth"], "none");
    assert_eq!(origins[1]["auth_verdict"], "temperror");
    assert!(origins[1].get("auth_domain").is_none());
    assert_eq!(origins[2]["sender_auth"], "none");
    assert!(origins[2].get("auth_verdict").is_none());
}

#[test]
fn a_stored_verdict_is_found_by_the_bytes_key_not_by_reading_the_whole_source() {
    // SQLite's query plan: on PostgreSQL the `+source` of the query is translated away.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("eingang.db")).unwrap();
    let conn = store.lock();
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {STORED_VERDICT}"))
        .unwrap()
        .query_map(params!["k", "s"], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(plan, ["SEARCH items USING INDEX items_by_sha (sha256=?)"]);
}

#[test]
fn counting_an_attempt_leaves_every_other_commit_waiting_for_the_disk() {
    let (_dir, store) = store();
    let item = file("<x/>", "drop");
    let Prior::Fresh { item_id } = store.begin(&[&item], &due_now()).unwrap().remove(0) else {
        panic!("a new item is fresh");
    };
    store.count_attempt(item_id).unwrap();
    let conn = store.lock();
    let attempts: u32 = conn
        .query_row("SELECT attempts FROM items WHERE id = ?1", [item_id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(attempts, 2);
    if conn.is_postgres() {
        let synchronous: String = conn
            .query_row("SHOW synchronous_commit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, "on");
    } else {
        let synchronous: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
    }
}

/// Every line field set, and none: what `export` prints is what the parsed document serializes
/// to, though the store keeps its lines only as rows (schema 14).
#[test]
fn a_document_is_stored_once_and_exported_as_it_was_parsed() {
    use crate::model::{Address, DeliveryLine, OrderLine};
    let d = |s: &str| crate::model::Decimal::parse(s);
    let full = DeliveryLine {
        line_no: "10".into(),
        supplier_part_id: Some("A-1".into()),
        buyer_part_id: Some("B-1".into()),
        gtin: Some("4012345678901".into()),
        manufacturer_part_id: Some("M-1".into()),
        description: Some("Käse „Gouda“ \"48%\"; \\ \u{1}".into()),
        quantity: d("-1234567.125"),
        unit: Some("C62".into()),
        order_ref: Some("PO-1".into()),
        order_line: Some("3".into()),
        unit_price: d("0"),
        line_total: d("99999999999999.99"),
        serial_number: Some(String::new()),
        comment: Some("ok".into()),
    };
    let mut note = note("LS-9");
    if let Document::DeliveryNote(n) = &mut note {
        n.date = chrono::NaiveDate::from_ymd_opt(2026, 11, 20);
        n.order_refs = vec!["PO-1".into(), "PO-2".into()];
        n.lines = vec![full, DeliveryLine::default()];
    }
    let mut order = order("PO-9", "p9@x", Operation::New);
    if let Document::Order(o) = &mut order {
        o.currency = Some("EUR".into());
        o.total = d("12.5");
        o.ship_to = Some(Address {
            name: Some("Lager".into()),
            ..Address::default()
        });
        o.lines = vec![
            OrderLine {
                line_no: "1".into(),
                supplier_part_id: Some("S-1".into()),
                supplier_part_aux_id: Some("7".into()),
                description: Some("Schraube".into()),
                quantity: d("3"),
                unit: Some("EA".into()),
                unit_price: d("1.05"),
            },
            OrderLine::default(),
        ];
    }
    let (_dir, store) = store();
    let documents = vec![note, order];
    store_docs(&store, &file("x", "drop"), documents.clone(), None);
    let exported = store.export(0).unwrap();
    for (document, exported) in documents.iter().zip(&exported) {
        let mut expected = serde_json::to_value(document).unwrap();
        let mut got = exported.json.clone();
        got.as_object_mut().unwrap().shift_remove("id");
        got.as_object_mut().unwrap().shift_remove("origin");
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        let detail = store.document(exported.id).unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&detail.json).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        // Stored once: the JSON in the store has no line in it.
        expected["lines"] = Value::Array(Vec::new());
        let stored: String = store
            .lock()
            .query_row(
                "SELECT json FROM documents WHERE id = ?1",
                [exported.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, serde_json::to_string(&expected).unwrap());
    }
}
