#!/usr/bin/env python3
"""The Python reference for `eingang import` (issue 16), standard library only: the same
`.eml` files, the same job, written the way the library documents it.

For every message: sha256 of the bytes (seen before: skipped), the sender's address from From
(`email` with `policy.default`, the API the library documents for new code; `--policy compat32`
takes the older, faster one), looked up in `suppliers.txt`; the first attachment whose file
name ends in `.csv` or `.xml`; a CSV is decoded as Windows-1252 and read with `csv` (`;`, header
row, German numbers `1.234,56`, dates `dd.mm.yyyy`), a cXML OrderRequest with
`xml.etree.ElementTree` (orderID, orderDate, total, ship-to, every ItemOut). The documents and
their lines go into SQLite (WAL, `synchronous=FULL`), one transaction per batch of 256 like
eingang's import, a business key (supplier, kind, number) stored once; every message gets an
outcome row (imported, or rejected with its reason).

Not done here and done by eingang: DKIM/DMARC, routing by format files, validation beyond
"the numbers and dates parse", notices, kept originals, the hand-off rows.

Usage: stdlib_import.py --suppliers suppliers.txt --store out.db [--policy compat32] MSGDIR
Prints one line: "imported N, rejected M".
"""

import argparse
import csv
import email
import email.header
import email.policy
import email.utils
import hashlib
import io
import os
import sqlite3
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from decimal import Decimal, InvalidOperation

BATCH = 256
CXML_NS = ""  # cXML 1.2 has no namespace

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE,
    file TEXT NOT NULL, sender TEXT, subject TEXT, message_id TEXT, outcome TEXT NOT NULL,
    reason TEXT);
CREATE TABLE IF NOT EXISTS documents (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL,
    kind TEXT NOT NULL, supplier TEXT NOT NULL, number TEXT NOT NULL, date TEXT,
    total TEXT, business_key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS lines (id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL,
    position INTEGER NOT NULL, line_no TEXT, part_id TEXT, description TEXT,
    quantity TEXT, unit TEXT, unit_price TEXT, line_total TEXT);
CREATE INDEX IF NOT EXISTS lines_by_document ON lines(document_id);
"""


class Rejected(Exception):
    pass


def de_decimal(text):
    """A German number (1.234,56) as a Decimal."""
    text = text.strip()
    try:
        return Decimal(text.replace(".", "").replace(",", "."))
    except InvalidOperation:
        raise Rejected(f"not a number: {text!r}")


def parse_csv(data):
    text = data.decode("cp1252")
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=";")
    header = next(rows, None)
    if not header:
        raise Rejected("empty CSV")
    col = {name: i for i, name in enumerate(header)}
    try:
        c_no, c_date, c_pos = col["Lieferschein-Nr"], col["Lieferdatum"], col["Pos"]
        c_art, c_desc, c_qty = col["Artikel-Nr"], col["Bezeichnung"], col["Menge"]
        c_unit, c_price, c_total = col["Einheit"], col["Einzelpreis"], col["Gesamtpreis"]
    except KeyError as e:
        raise Rejected(f"no column {e}")
    number = date = None
    lines = []
    for row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if number is None:
            number = row[c_no].strip()
            date = datetime.strptime(row[c_date].strip(), "%d.%m.%Y").date().isoformat()
        lines.append((row[c_pos], row[c_art], row[c_desc], str(de_decimal(row[c_qty])),
                      row[c_unit], str(de_decimal(row[c_price])), str(de_decimal(row[c_total]))))
    if not lines:
        raise Rejected("no data rows")
    total = sum(Decimal(line[6]) for line in lines)
    return "delivery_note", number, date, str(total), lines


def parse_cxml(data):
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise Rejected(f"not well-formed XML: {e}")
    header = root.find("./Request/OrderRequest/OrderRequestHeader")
    if header is None:
        raise Rejected("not a cXML OrderRequest")
    number = header.get("orderID")
    date = (header.get("orderDate") or "")[:10]
    total = header.findtext("./Total/Money")
    ship_to = header.find("./ShipTo/Address")
    if ship_to is not None:  # read like eingang does, though not stored here
        ship_to.findtext("./Name"), ship_to.findtext("./PostalAddress/City")
    lines = []
    for item in root.iterfind("./Request/OrderRequest/ItemOut"):
        try:
            quantity = Decimal(item.get("quantity"))
            price = Decimal(item.findtext("./ItemDetail/UnitPrice/Money"))
        except (InvalidOperation, TypeError):
            raise Rejected("bad quantity or price")
        lines.append((item.get("lineNumber"), item.findtext("./ItemID/SupplierPartID"),
                      item.findtext("./ItemDetail/Description"), str(quantity),
                      item.findtext("./ItemDetail/UnitOfMeasure"), str(price),
                      str(quantity * price)))
    if not number or not lines:
        raise Rejected("no orderID or no items")
    return "order", number, date, total, lines


def envelope_default(msg):
    from_ = msg["From"]
    sender = from_.addresses[0].addr_spec.lower() if from_ and from_.addresses else None
    return (sender, str(msg["Subject"] or ""), msg["Message-ID"]), msg.iter_attachments()


def envelope_compat32(msg):
    sender = email.utils.parseaddr(msg["From"] or "")[1].lower() or None
    subject = str(email.header.make_header(email.header.decode_header(msg["Subject"] or "")))
    parts = (p for p in msg.walk() if p.get_content_disposition() == "attachment")
    return (sender, subject, msg["Message-ID"]), parts


POLICIES = {
    "default": (email.policy.default, envelope_default),
    "compat32": (email.policy.compat32, envelope_compat32),
}


def handle(raw, suppliers, policy):
    """(envelope, document or None, reason or None) of one message."""
    policy, read_envelope = POLICIES[policy]
    msg = email.message_from_bytes(raw, policy=policy)
    envelope, attachments = read_envelope(msg)
    sender = envelope[0]
    if sender not in suppliers:
        return envelope, None, f"unknown sender {sender}"
    for part in attachments:
        name = (part.get_filename() or "").lower()
        if name.endswith(".csv"):
            parse = parse_csv
        elif name.endswith(".xml"):
            parse = parse_cxml
        else:
            continue
        try:
            return envelope, (sender,) + parse(part.get_payload(decode=True)), None
        except (Rejected, ValueError, UnicodeDecodeError) as e:
            return envelope, None, str(e)
    return envelope, None, "no attachment"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suppliers", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--policy", choices=sorted(POLICIES), default="default")
    ap.add_argument("folder")
    args = ap.parse_args()
    with open(args.suppliers, encoding="utf-8") as f:
        suppliers = {l.strip().lower() for l in f if l.strip() and not l.startswith("#")}
    db = sqlite3.connect(args.store, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    files = sorted(os.path.join(args.folder, n) for n in os.listdir(args.folder))
    imported = rejected = 0
    for start in range(0, len(files), BATCH):
        db.execute("BEGIN IMMEDIATE")
        for path in files[start:start + BATCH]:
            with open(path, "rb") as f:
                raw = f.read()
            key = hashlib.sha256(raw).hexdigest()
            if db.execute("SELECT 1 FROM items WHERE sha256 = ?", (key,)).fetchone():
                continue
            envelope, doc, reason = handle(raw, suppliers, args.policy)
            if doc is not None:
                sender, kind, number, date, total, lines = doc
                business_key = f"{kind}|{sender}|{number}"
                if db.execute("SELECT 1 FROM documents WHERE business_key = ?",
                              (business_key,)).fetchone():
                    doc, reason = None, f"duplicate {kind} {number}"
            outcome = "imported" if doc is not None else "rejected"
            item_id = db.execute(
                "INSERT INTO items (sha256, file, sender, subject, message_id, outcome, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, os.path.basename(path)) + envelope + (outcome, reason)).lastrowid
            if doc is None:
                rejected += 1
                continue
            document_id = db.execute(
                "INSERT INTO documents (item_id, kind, supplier, number, date, total, business_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (item_id, kind, sender, number, date, total, business_key)).lastrowid
            db.executemany(
                "INSERT INTO lines (document_id, position, line_no, part_id, description,"
                " quantity, unit, unit_price, line_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(document_id, i + 1) + line for i, line in enumerate(lines)])
            imported += 1
        db.execute("COMMIT")
    db.close()
    print(f"imported {imported}, rejected {rejected}")


if __name__ == "__main__":
    sys.exit(main())
