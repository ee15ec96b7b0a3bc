//! The words of the admin page, German and English (`[notify] language`), in one file: the
//! fixed words of the templates, times, and source errors in plain words with what to do.

use chrono::{DateTime, Local, NaiveDateTime};

use crate::notify::text::Language;

/// The fixed words of the pages.
#[derive(Debug)]
pub struct Words {
    /// The `lang` attribute.
    pub lang: &'static str,
    pub nav_errors: &'static str,
    pub nav_documents: &'static str,
    pub nav_sources: &'static str,
    pub logout: &'static str,
    pub login_title: &'static str,
    pub password: &'static str,
    pub login: &'static str,
    pub errors_title: &'static str,
    pub errors_intro: &'static str,
    pub errors_empty: &'static str,
    pub col_id: &'static str,
    pub col_when: &'static str,
    pub col_what: &'static str,
    pub col_source: &'static str,
    pub col_supplier: &'static str,
    pub col_reason: &'static str,
    pub col_lies: &'static str,
    pub reprocess: &'static str,
    pub handled: &'static str,
    pub reprocess_selected: &'static str,
    pub handled_selected: &'static str,
    pub select: &'static str,
    pub original: &'static str,
    pub documents_title: &'static str,
    pub number: &'static str,
    pub supplier: &'static str,
    pub all_suppliers: &'static str,
    pub kind: &'static str,
    pub all_kinds: &'static str,
    pub delivery_note: &'static str,
    pub order: &'static str,
    pub date_from: &'static str,
    pub date_to: &'static str,
    pub search: &'static str,
    pub date: &'static str,
    pub lines: &'static str,
    pub stored: &'static str,
    pub no_documents: &'static str,
    pub superseded: &'static str,
    pub order_refs: &'static str,
    pub format: &'static str,
    pub line_no: &'static str,
    pub part: &'static str,
    pub gtin: &'static str,
    pub description: &'static str,
    pub quantity: &'static str,
    pub unit: &'static str,
    pub unit_price: &'static str,
    pub order_ref: &'static str,
    pub origin: &'static str,
    pub source: &'static str,
    pub sender: &'static str,
    pub subject: &'static str,
    pub message_id: &'static str,
    pub file: &'static str,
    pub received: &'static str,
    pub lies_in: &'static str,
    pub checksum: &'static str,
    pub download: &'static str,
    pub back_to_search: &'static str,
    pub sources_title: &'static str,
    pub state: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    pub last_ok: &'static str,
    pub last_error: &'static str,
    pub pending: &'static str,
    pub next_run: &'static str,
    pub sync_now: &'static str,
    pub test_connection: &'static str,
    pub never: &'static str,
    pub none: &'static str,
    pub running_now: &'static str,
    pub raw_error: &'static str,
    pub note: &'static str,
    pub not_found: &'static str,
    pub back: &'static str,
    pub connectors_title: &'static str,
    pub delivered: &'static str,
    pub dead: &'static str,
    pub daemons_title: &'static str,
    pub daemon_since: &'static str,
    pub daemon_sources: &'static str,
}

const DE: Words = Words {
    lang: "de",
    nav_errors: "Fehler",
    nav_documents: "Lieferscheine / Bestellungen",
    nav_sources: "Quellen",
    logout: "Abmelden",
    login_title: "Anmelden",
    password: "Passwort",
    login: "Anmelden",
    errors_title: "Fehler",
    errors_intro: "Posten, die eingang nicht verbuchen konnte. Ursache beheben (z. B. das Format des Lieferanten), dann neu verarbeiten; oder, wenn von Hand erledigt, als erledigt schließen.",
    errors_empty: "Keine offenen Fehler.",
    col_id: "Nr.",
    col_when: "Eingegangen",
    col_what: "Absender / Datei",
    col_source: "Quelle",
    col_supplier: "Lieferant",
    col_reason: "Grund",
    col_lies: "Liegt in",
    reprocess: "Neu verarbeiten",
    handled: "Von Hand erledigt",
    reprocess_selected: "Auswahl neu verarbeiten",
    handled_selected: "Auswahl von Hand erledigt",
    select: "auswählen",
    original: "Original",
    documents_title: "Lieferscheine / Bestellungen",
    number: "Nummer",
    supplier: "Lieferant",
    all_suppliers: "alle Lieferanten",
    kind: "Art",
    all_kinds: "alle",
    delivery_note: "Lieferschein",
    order: "Bestellung",
    date_from: "Datum von",
    date_to: "bis",
    search: "Suchen",
    date: "Datum",
    lines: "Positionen",
    stored: "Gespeichert",
    no_documents: "Keine Dokumente gefunden.",
    superseded: "Ersetzt durch",
    order_refs: "Bestellbezug",
    format: "Format",
    line_no: "Pos.",
    part: "Artikel",
    gtin: "GTIN",
    description: "Beschreibung",
    quantity: "Menge",
    unit: "Einheit",
    unit_price: "Preis",
    order_ref: "Bestellung / Zeile",
    origin: "Herkunft",
    source: "Quelle",
    sender: "Absender",
    subject: "Betreff",
    message_id: "Message-ID",
    file: "Datei",
    received: "Eingegangen",
    lies_in: "Liegt in",
    checksum: "SHA-256",
    download: "Original herunterladen",
    back_to_search: "Zurück zur Suche",
    sources_title: "Quellen",
    state: "Zustand",
    up: "läuft",
    down: "gestört",
    last_ok: "Letzter Erfolg",
    last_error: "Letzter Fehler",
    pending: "Wartend",
    next_run: "Nächster Abruf",
    sync_now: "Jetzt abrufen",
    test_connection: "Verbindung testen",
    never: "noch nie",
    none: "keiner",
    running_now: "läuft gerade",
    raw_error: "Meldung",
    note: "Hinweis",
    not_found: "Nicht gefunden.",
    back: "Zurück",
    connectors_title: "Weitergabe an die Warenwirtschaft",
    delivered: "Übergeben",
    dead: "Aufgegeben",
    daemons_title: "Dienste an dieser Datenbank",
    daemon_since: "läuft seit",
    daemon_sources: "bearbeitet",
};

const EN: Words = Words {
    lang: "en",
    nav_errors: "Errors",
    nav_documents: "Delivery notes / orders",
    nav_sources: "Sources",
    logout: "Log out",
    login_title: "Log in",
    password: "Password",
    login: "Log in",
    errors_title: "Errors",
    errors_intro: "Items eingang could not book. Fix the cause (e.g. the supplier's format), then reprocess; or, when handled by hand, close them.",
    errors_empty: "No open errors.",
    col_id: "No.",
    col_when: "Received",
    col_what: "Sender / file",
    col_source: "Source",
    col_supplier: "Supplier",
    col_reason: "Reason",
    col_lies: "Lies in",
    reprocess: "Reprocess",
    handled: "Handled by hand",
    reprocess_selected: "Reprocess selected",
    handled_selected: "Selected handled by hand",
    select: "select",
    original: "Original",
    documents_title: "Delivery notes / orders",
    number: "Number",
    supplier: "Supplier",
    all_suppliers: "all suppliers",
    kind: "Kind",
    all_kinds: "all",
    delivery_note: "Delivery note",
    order: "Order",
    date_from: "Date from",
    date_to: "to",
    search: "Search",
    date: "Date",
    lines: "Lines",
    stored: "Stored",
    no_documents: "No documents found.",
    superseded: "Superseded by",
    order_refs: "Order reference",
    format: "Format",
    line_no: "Line",
    part: "Part",
    gtin: "GTIN",
    description: "Description",
    quantity: "Quantity",
    unit: "Unit",
    unit_price: "Price",
    order_ref: "Order / line",
    origin: "Origin",
    source: "Source",
    sender: "Sender",
    subject: "Subject",
    message_id: "Message-ID",
    file: "File",
    received: "Received",
    lies_in: "Lies in",
    checksum: "SHA-256",
    download: "Download the original",
    back_to_search: "Back to the search",
    sources_title: "Sources",
    state: "State",
    up: "up",
    down: "down",
    last_ok: "Last success",
    last_error: "Last error",
    pending: "Pending",
    next_run: "Next run",
    sync_now: "Sync now",
    test_connection: "Test connection",
    never: "never",
    none: "none",
    running_now: "running now",
    raw_error: "Message",
    note: "Note",
    not_found: "Not found.",
    connectors_title: "Hand-off to the ERP",
    delivered: "Delivered",
    dead: "Given up",
    daemons_title: "Daemons on this database",
    daemon_since: "running since",
    daemon_sources: "works",
    back: "Back",
};

/// The words in a language.
pub fn words(lang: Language) -> &'static Words {
    match lang {
        Language::De => &DE,
        Language::En => &EN,
    }
}

/// A stored time (RFC 3339) in local time, to the minute.
pub fn when(lang: Language, rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => local(lang, t.with_timezone(&Local).naive_local()),
        Err(_) => rfc3339.to_owned(),
    }
}

/// A local time, to the minute.
pub fn local(lang: Language, t: NaiveDateTime) -> String {
    match lang {
        Language::De => t.format("%d.%m.%Y %H:%M").to_string(),
        Language::En => t.format("%Y-%m-%d %H:%M").to_string(),
    }
}

/// A document date (`YYYY-MM-DD`) as people write it.
pub fn day(lang: Language, date: &str) -> String {
    match (lang, chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")) {
        (Language::De, Ok(d)) => d.format("%d.%m.%Y").to_string(),
        _ => date.to_owned(),
    }
}

/// A span in words, roughly: "5 Minuten", "2 hours".
pub fn span(lang: Language, d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (n, de, en) = match secs {
        s if s >= 3600 => (s / 3600, ("Stunde", "Stunden"), ("hour", "hours")),
        s if s >= 60 => (s / 60, ("Minute", "Minuten"), ("minute", "minutes")),
        s => (s, ("Sekunde", "Sekunden"), ("second", "seconds")),
    };
    let (one, many) = match lang {
        Language::De => de,
        Language::En => en,
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The label of a rejection in the page's language.
pub fn label(lang: Language, label: Option<&str>) -> String {
    crate::notify::text::label(lang, label)
}

/// What a source's error means and what to do, in plain words; `None` when eingang does not
/// recognize it (the page then shows the message alone).
pub fn explain(lang: Language, error: &str) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| e.contains(w));
    let (de, en) = if has(&[
        "the task failed",
        "the task ended",
        "the task was cancelled",
    ]) {
        (
            "Die Aufgabe dieser Quelle ist abgebrochen; eingang startet sie von selbst neu. Kommt das wieder, bitte mit dem Protokoll melden.",
            "The task of this source stopped; eingang restarts it by itself. If it recurs, please report it with the log.",
        )
    } else if has(&["oauth", "refresh token", "oauth login"]) {
        (
            "Die OAuth2-Anmeldung gilt nicht mehr: einmal `eingang oauth login <Quelle>` ausführen.",
            "The OAuth2 sign-in is no longer valid: run `eingang oauth login <source>` once.",
        )
    } else if has(&["certificate", "unknownissuer", "tls", "handshake"]) {
        (
            "Die sichere Verbindung (TLS) kam nicht zustande: Zertifikat des Servers prüfen; für ein eigenes Zertifikat `ca_file` angeben.",
            "The secure connection (TLS) failed: check the server's certificate; for a certificate of your own set `ca_file`.",
        )
    } else if has(&[
        "authenticationfailed",
        "authentication failed",
        "login failed",
        "login refused",
        "invalid credentials",
        "530 ",
        "535",
    ]) {
        (
            "Der Server hat die Anmeldung abgelehnt: Benutzername und Passwort der Quelle prüfen.",
            "The server refused the login: check the source's user and password.",
        )
    } else if has(&["connection refused"]) {
        (
            "Der Server nimmt keine Verbindung an: läuft er, und stimmen host und port?",
            "The server refuses connections: is it running, and are host and port right?",
        )
    } else if has(&["timed out", "timeout", "deadline"]) {
        (
            "Der Server antwortet nicht rechtzeitig: Netzwerk, Firewall oder Server prüfen. eingang versucht es weiter.",
            "The server does not answer in time: check the network, a firewall or the server. eingang keeps trying.",
        )
    } else if has(&[
        "failed to lookup",
        "name or service not known",
        "no such host",
        "dns",
        "nodename nor servname",
    ]) {
        (
            "Der Servername lässt sich nicht auflösen: Schreibweise von host und die Namensauflösung prüfen.",
            "The server's name does not resolve: check the spelling of host and the DNS.",
        )
    } else if has(&[
        "no such mailbox",
        "doesn't exist",
        "does not exist",
        "nonexistent",
        "no such file or directory",
        "os error 2)",
    ]) {
        (
            "Ein Ordner der Quelle fehlt: anlegen, oder `eingang check --create-folders` ausführen.",
            "A folder of the source is missing: create it, or run `eingang check --create-folders`.",
        )
    } else if has(&["permission denied", "os error 13"]) {
        (
            "Keine Berechtigung für einen Ordner: die Rechte des Benutzers prüfen, unter dem eingang läuft.",
            "No permission for a folder: check the rights of the user eingang runs as.",
        )
    } else if has(&["not moved"]) {
        (
            "Posten ließen sich nicht verschieben; sie bleiben im Eingang und werden beim nächsten Abruf erneut verschoben.",
            "Items could not be moved; they stay in the inbox and are moved again on the next run.",
        )
    } else if has(&["store:", "database is locked", "disk"]) {
        (
            "Der Speicher (SQLite) ist gerade nicht beschreibbar: Plattenplatz und Rechte prüfen. Die Posten bleiben im Eingang.",
            "The store (SQLite) cannot be written now: check disk space and rights. The items stay in the inbox.",
        )
    } else {
        return None;
    };
    Some(match lang {
        Language::De => de,
        Language::En => en,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_source_errors_are_told_in_plain_words() {
        let told = |e: &str| explain(Language::De, e).unwrap_or("");
        assert!(told("imap.example.com:993: connection refused").contains("host und port"));
        assert!(told("ftp: 530 Login incorrect").contains("Passwort"));
        assert!(told("in: No such file or directory (os error 2)").contains("create-folders"));
        assert!(told("the task failed: fault point mid_pass").contains("neu"));
        assert!(explain(Language::En, "timed out after 30s").is_some());
        assert_eq!(explain(Language::De, "something new"), None);
    }

    #[test]
    fn times_and_days_read_as_people_write_them() {
        assert_eq!(day(Language::De, "2026-11-20"), "20.11.2026");
        assert_eq!(day(Language::En, "2026-11-20"), "2026-11-20");
        assert_eq!(when(Language::De, "kaputt"), "kaputt");
        assert_eq!(
            span(Language::De, std::time::Duration::from_secs(90)),
            "1 Minute"
        );
        assert_eq!(
            span(Language::En, std::time::Duration::from_secs(7200)),
            "2 hours"
        );
    }
}
