//! The wording of every notice, German and English, in one file. Pure functions from the
//! facts of a notice to a subject and a plain-text body; no I/O.
//!
//! Every value that came from outside (sender, subject, file name, reason, paths) passes
//! `one_line` before it is written anywhere, so no CR, LF or other control character from an
//! item can start a header line of its own (RELIABILITY.md scenario 28).

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Local};

use crate::error::Reject;
use crate::store::handoff::DeadDocument;
use crate::store::outbox::RejectedItem;

/// The language of the notices (`[notify] language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// German, the default.
    De,
    /// English.
    En,
}

impl Language {
    /// `en` is English; anything else (the config allows only `de` and `en`) German.
    pub fn of(code: &str) -> Language {
        if code == "en" {
            Language::En
        } else {
            Language::De
        }
    }
}

/// A notice's subject and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The Subject, one line, sanitized.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

/// What became of the item's bytes for the attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// Attached under this file name.
    Yes(String),
    /// Not kept: larger than the attachment limit (in bytes).
    TooLarge(u64),
    /// Not kept for another reason (e.g. written by an older eingang).
    No,
    /// Kept back: the message's sender is not authenticated, and eingang does not relay what
    /// an unauthenticated sender wrote as if it said it (a phishing mail would reach the
    /// staff from eingang's own address).
    Untrusted,
}

/// The facts of one rejected item beyond its ledger row: what was read from its kept bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// The attachments of a message (or the file itself), by name.
    pub files: Vec<String>,
    /// The Date header of a message (RFC 3339).
    pub date: Option<String>,
}

/// The longest piece of outside text put into a subject, in characters.
const SUBJECT_PART_CHARS: usize = 60;
/// The longest piece of outside text (a sender's subject or address) quoted in a body line.
const QUOTED_CHARS: usize = 120;

/// Text taken from the item, as the sender wrote it: on one line, shortened, in quotes, so
/// that it never reads as eingang's own words.
fn quoted(value: &str) -> String {
    format!("»{}«", short(value, QUOTED_CHARS))
}

/// Makes outside text safe for a header or a body line: control characters (CR, LF, TAB,
/// ESC, ...) and the bidirectional overrides that can disguise a file name become spaces,
/// runs of spaces collapse, and the ends are trimmed.
pub fn one_line(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_control() || is_bidi_control(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// U+202A..U+202E and U+2066..U+2069: embedding, override and isolate controls.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `one_line`, cut to `max` characters with an ellipsis.
fn short(value: &str, max: usize) -> String {
    let line = one_line(value);
    if line.chars().count() <= max {
        return line;
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

fn time(lang: Language, rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => {
            let local = t.with_timezone(&Local);
            match lang {
                Language::De => local.format("%d.%m.%Y %H:%M:%S %:z").to_string(),
                Language::En => local.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
            }
        }
        Err(_) => one_line(rfc3339),
    }
}

/// A duration in words: "5 Minuten", "1 hour", "90 seconds".
fn span(lang: Language, d: Duration) -> String {
    let secs = d.as_secs();
    let (de, en) = (lang == Language::De, lang == Language::En);
    let (n, one, many) = match secs {
        s if s > 0 && s % 3600 == 0 && de => (s / 3600, "Stunde", "Stunden"),
        s if s > 0 && s % 3600 == 0 && en => (s / 3600, "hour", "hours"),
        s if s > 0 && s % 60 == 0 && de => (s / 60, "Minute", "Minuten"),
        s if s > 0 && s % 60 == 0 && en => (s / 60, "minute", "minutes"),
        s if de => (s, "Sekunde", "Sekunden"),
        s => (s, "second", "seconds"),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The reason's label in the notice's language (also the admin page's).
pub fn label(lang: Language, label: Option<&str>) -> String {
    let label = label.unwrap_or("rejected");
    let de = match label {
        "missing field" => "Pflichtfeld fehlt",
        "bad value" => "ungültiger Wert",
        "unreadable file" => "Datei unlesbar",
        "unsupported format" => "Format unbekannt",
        "too large" => "zu groß",
        "unknown sender" => "unbekannter Absender",
        "unknown file" => "unbekannter Dateiname",
        "no document" => "kein Dokument gefunden",
        "duplicate" => "Duplikat",
        "conflict" => "Konflikt mit einem gespeicherten Dokument",
        "sender not authenticated" => "Absender nicht bestätigt",
        "not the original sender" => "nicht vom Absender der Bestellung",
        "already imported" => "schon importiert",
        "crashed the parser" => "bringt eingang zum Absturz",
        _ => "abgelehnt",
    };
    match lang {
        Language::De => de.to_owned(),
        Language::En => one_line(label),
    }
}

/// The format file a reason names (`formats/acme.toml`), for the advice.
fn format_file(reason: &str) -> Option<&str> {
    reason
        .split(|c: char| c.is_whitespace() || c == '"' || c == '`' || c == '(' || c == ')')
        .find(|word| word.ends_with(".toml"))
}

/// The reason in the notice's language. eingang's own words are translated; what a library or
/// a server said (why an XML file is broken) stays as it was said.
fn reason(lang: Language, item: &RejectedItem) -> String {
    match (lang, &item.reject) {
        (Language::De, Some(reject)) => german(reject),
        _ => item.reason.clone(),
    }
}

/// A rejection in German.
fn german(reject: &Reject) -> String {
    let line = |line: &Option<String>| match line {
        Some(l) if l.starts_with("row ") => format!("Zeile {}: ", l.trim_start_matches("row ")),
        Some(l) => format!("Position {l}: "),
        None => String::new(),
    };
    match reject {
        Reject::Missing {
            file,
            line: at,
            field,
        } => {
            format!("{file}: {}{field} fehlt", line(at))
        }
        Reject::BadValue {
            file,
            line: at,
            field,
            value,
            why,
        } => format!("{file}: {}{field} {value:?} {}", line(at), german_why(why)),
        Reject::Malformed { file, why } => format!("{file}: nicht lesbar: {}", german_why(why)),
        Reject::Unsupported { file, why } => format!("{file}: {}", german_why(why)),
        Reject::TooLarge { file, why } => format!("{file}: zu groß: {why}"),
        Reject::UnknownSender { sender, file, hint } => format!(
            "unbekannter Absender {sender} für {file}: {sender:?} unter `senders` in {} eintragen",
            german_hint(hint)
        ),
        Reject::UnknownFile { file, hint } => format!(
            "kein Lieferantenformat passt zum Dateinamen {file}: ein Muster dafür unter `files` in {} eintragen",
            german_hint(hint)
        ),
        Reject::NoDocuments { why } => {
            format!(
                "kein Lieferschein und keine Bestellung gefunden: {}",
                german_why(why)
            )
        }
        Reject::Duplicate {
            kind,
            number,
            supplier,
            existing,
        } => format!(
            "doppelt: {} {number}{} ist schon als Dokument {existing} gespeichert",
            match kind.as_str() {
                "delivery note" => "Lieferschein",
                "order" => "Bestellung",
                other => other,
            },
            supplier
                .as_deref()
                .map(|s| format!(" von {s}"))
                .unwrap_or_default()
        ),
        Reject::AlreadyImported { existing } => {
            format!("schon eingelesen: dieselbe Datei kam schon als Eintrag {existing}")
        }
        Reject::Poison { attempts } => format!(
            "diese Lieferung hat eingang {attempts}-mal angehalten; sie ist beiseitegelegt, damit die anderen weiterkommen"
        ),
        other => other.to_string(),
    }
}

/// eingang's own phrases in a reason, in German; anything else (a library's words) as it is.
/// The format file a hint names, with its English remark in German.
fn german_hint(hint: &str) -> String {
    hint.replace("(a new supplier file)", "(neue Lieferantendatei)")
}

fn german_why(why: &str) -> String {
    const PHRASES: &[(&str, &str)] = &[
        ("is not a decimal number", "ist keine Dezimalzahl"),
        ("is not a date in the format", "ist kein Datum im Format"),
        (
            "the message has no attachment",
            "die Nachricht hat keinen Anhang",
        ),
        ("found only", "nur gefunden:"),
        ("not well-formed XML", "kein wohlgeformtes XML"),
        ("not readable as CSV", "nicht als CSV lesbar"),
        (
            "has no data rows (they start at row",
            "hat keine Datenzeilen (sie beginnen in Zeile",
        ),
        (
            "is not new, update or delete",
            "ist weder new noch update noch delete",
        ),
        (
            "the workbook is password-protected; ask the supplier for an unprotected file",
            "die Arbeitsmappe ist kennwortgeschützt; beim Lieferanten eine ungeschützte Datei erbitten",
        ),
        (
            ", not a delivery note or order",
            ", kein Lieferschein und keine Bestellung",
        ),
        (
            "is XML with the root element",
            "ist XML mit dem Wurzelelement",
        ),
    ];
    PHRASES
        .iter()
        .fold(why.to_owned(), |text, (en, de)| text.replace(en, de))
}

/// The verdict about a message's sender in words: `bestätigt (dkim=pass header.d=…, dmarc=pass)`.
fn sender_check(lang: Language, verdict: &crate::auth::Verdict) -> String {
    use crate::auth::Status;
    let word = match (verdict.status, lang) {
        (Status::Pass, Language::De) => "bestätigt",
        (Status::Fail, Language::De) => "nicht bestätigt",
        (Status::None, Language::De) => "nicht prüfbar (die Domain veröffentlicht nichts dazu)",
        (Status::TempError, Language::De) => "nicht geprüft (DNS hat nicht geantwortet)",
        (Status::Pass, Language::En) => "authenticated",
        (Status::Fail, Language::En) => "not authenticated",
        (Status::None, Language::En) => "nothing to check it by (the domain publishes nothing)",
        (Status::TempError, Language::En) => "not checked (DNS did not answer)",
    };
    format!(
        "{word}: {} ({})",
        verdict.status,
        short(&verdict.text, 2 * QUOTED_CHARS)
    )
}

/// Whether a new try of this item can replace the stored document it conflicts with: its
/// sender is known (an authenticated message, or a file of a source).
fn can_replace(item: &RejectedItem) -> bool {
    !item.is_message
        || item
            .sender_auth
            .as_ref()
            .is_some_and(|v| v.status == crate::auth::Status::Pass)
}

/// How people recognize the item: a message's subject, else its file name, else where it was.
fn what(item: &RejectedItem) -> String {
    item.subject
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .or(item.file_name.as_deref())
        .unwrap_or(&item.location)
        .to_owned()
}

/// The mail for one rejected item.
pub fn rejected(
    lang: Language,
    source: &str,
    item: &RejectedItem,
    details: &Details,
    attached: &Attached,
) -> Mail {
    let supplier = item.supplier.as_deref().map(one_line);
    let subject = match lang {
        Language::De => format!(
            "eingang: {} – {}: {} – »{}«",
            one_line(source),
            supplier.as_deref().unwrap_or("Lieferant unbekannt"),
            label(lang, item.label.as_deref()),
            short(&what(item), SUBJECT_PART_CHARS)
        ),
        Language::En => format!(
            "eingang: {} – {}: {} – »{}«",
            one_line(source),
            supplier.as_deref().unwrap_or("unknown supplier"),
            label(lang, item.label.as_deref()),
            short(&what(item), SUBJECT_PART_CHARS)
        ),
    };
    let none = "—".to_owned();
    let value = |v: Option<&str>| v.map(one_line).unwrap_or_else(|| none.clone());
    let words = |v: Option<&str>| v.map(quoted).unwrap_or_else(|| none.clone());
    let theirs = match lang {
        Language::De => "(Wortlaut des Absenders)",
        Language::En => "(the sender's words)",
    };
    let mut files = details.files.clone();
    if files.is_empty()
        && let Some(name) = &item.file_name
    {
        files.push(name.clone());
    }
    let files = if files.is_empty() {
        none.clone()
    } else {
        one_line(&files.join(", "))
    };
    let date = details
        .date
        .as_deref()
        .map(|d| time(lang, d))
        .unwrap_or_else(|| none.clone());
    let (intro, rows) = match lang {
        Language::De => (
            format!(
                "eingang hat eine Lieferung aus der Quelle \"{}\" abgelehnt.",
                one_line(source)
            ),
            [
                "Grund",
                "Absender",
                "Echtheit",
                "Betreff",
                "Message-ID",
                "Datum",
                "Eingegangen",
                "Datei(en)",
                "Lieferant",
                "Liegt jetzt",
                "Eintrag",
            ],
        ),
        Language::En => (
            format!(
                "eingang rejected an item from the source \"{}\".",
                one_line(source)
            ),
            [
                "Reason",
                "Sender",
                "Sender auth",
                "Subject",
                "Message-ID",
                "Date",
                "Received",
                "File(s)",
                "Supplier",
                "Lies now in",
                "Item",
            ],
        ),
    };
    let place = match (&item.archived, lang) {
        (Some(place), _) => one_line(place),
        (None, Language::De) => format!(
            "noch in {} (das Verschieben ist bisher nicht gelungen)",
            one_line(&item.location)
        ),
        (None, Language::En) => format!(
            "still in {} (moving it has not worked so far)",
            one_line(&item.location)
        ),
    };
    let values = [
        one_line(&reason(lang, item)),
        words(item.sender.as_deref()),
        item.sender_auth
            .as_ref()
            .map(|v| sender_check(lang, v))
            .unwrap_or_else(|| none.clone()),
        item.subject
            .as_deref()
            .map(|s| format!("{} {theirs}", quoted(s)))
            .unwrap_or_else(|| none.clone()),
        value(item.message_id.as_deref()),
        date,
        time(lang, &item.received_at),
        files,
        supplier.unwrap_or_else(|| match lang {
            Language::De => "unbekannt".to_owned(),
            Language::En => "unknown".to_owned(),
        }),
        place,
        item.item_id.to_string(),
    ];
    let mut body = format!("{intro}\n\n");
    let width = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0) + 2;
    for (name, value) in rows.iter().zip(values) {
        if !item.is_message
            && matches!(
                *name,
                "Absender"
                    | "Sender"
                    | "Echtheit"
                    | "Sender auth"
                    | "Betreff"
                    | "Subject"
                    | "Message-ID"
                    | "Datum"
                    | "Date"
            )
        {
            continue; // a file has no envelope
        }
        let _ = writeln!(body, "{:width$}{value}", format!("{name}:"));
    }
    body.push('\n');
    body.push_str(&advice(lang, item));
    body.push('\n');
    body.push_str(&match (attached, lang) {
        (Attached::Yes(name), Language::De) => {
            format!("Die abgelehnte Lieferung hängt an ({}).\n", one_line(name))
        }
        (Attached::Yes(name), Language::En) => {
            format!("The rejected item is attached ({}).\n", one_line(name))
        }
        (Attached::TooLarge(limit), Language::De) => format!(
            "Die Lieferung hängt nicht an: sie ist größer als {} MiB.\n",
            limit / (1024 * 1024)
        ),
        (Attached::TooLarge(limit), Language::En) => format!(
            "The item is not attached: it is larger than {} MiB.\n",
            limit / (1024 * 1024)
        ),
        (Attached::No, Language::De) => {
            "Die Lieferung hängt nicht an; sie liegt wie oben angegeben.\n".to_owned()
        }
        (Attached::No, Language::En) => {
            "The item is not attached; it lies where shown above.\n".to_owned()
        }
        (Attached::Untrusted, Language::De) => {
            "Die Lieferung hängt nicht an: ihr Absender ist nicht bestätigt, und eingang leitet nicht weiter, was ein Unbekannter geschrieben hat. Sie liegt wie oben angegeben.\n".to_owned()
        }
        (Attached::Untrusted, Language::En) => {
            "The item is not attached: its sender is not authenticated, and eingang does not pass on what an unknown sender wrote. It lies where shown above.\n".to_owned()
        }
    });
    body.push_str(signature(lang));
    Mail { subject, body }
}

/// What to do next, by the reason's label, ending with the reprocess command where a fix
/// makes a new try worthwhile.
fn advice(lang: Language, item: &RejectedItem) -> String {
    let id = item.item_id;
    let format_file = format_file(&item.reason).map(str::to_owned);
    let sender = item.sender.as_deref().map(one_line);
    let (text, retry) = match (item.label.as_deref().unwrap_or(""), lang) {
        ("unknown sender", Language::De) => (
            format!(
                "Den Absender {} unter `senders` in {} eintragen (für einen neuen Lieferanten eine neue Datei anlegen, siehe formats/README.md).",
                sender.unwrap_or_default(),
                format_file.unwrap_or_else(|| "die Formatdatei des Lieferanten in formats/".to_owned())
            ),
            true,
        ),
        ("unknown sender", Language::En) => (
            format!(
                "Add the sender {} to `senders` in {} (a new supplier needs a new file, see formats/README.md).",
                sender.unwrap_or_default(),
                format_file.unwrap_or_else(|| "the supplier's format file in formats/".to_owned())
            ),
            true,
        ),
        ("unknown file", Language::De) => (
            format!(
                "Ein Muster für den Dateinamen unter `files` in {} eintragen.",
                format_file.unwrap_or_else(|| "die Formatdatei des Lieferanten in formats/".to_owned())
            ),
            true,
        ),
        ("unknown file", Language::En) => (
            format!(
                "Add a glob for the file name to `files` in {}.",
                format_file.unwrap_or_else(|| "the supplier's format file in formats/".to_owned())
            ),
            true,
        ),
        ("sender not authenticated", Language::De) => (
            format!(
                "Den Inhalt nicht verwenden: es ist nicht bestätigt, dass die Nachricht vom Lieferanten stammt (sie kann gefälscht sein). Ist sie doch echt, muss der Mailserver des Lieferanten sie mit DKIM für seine Domain signieren; ist die Einstellung `authenticate` in {} zu streng, sie dort ändern. Eine neue Verarbeitung behält das gespeicherte Prüfergebnis.",
                format_file.unwrap_or_else(|| "der Formatdatei des Lieferanten in formats/".to_owned())
            ),
            true,
        ),
        ("sender not authenticated", Language::En) => (
            format!(
                "Do not use its content: nothing confirms that the message comes from the supplier (it may be forged). If it is genuine after all, the supplier's mail server must sign it with DKIM for its domain; if the `authenticate` setting in {} is too strict, change it there. A new try keeps the stored verdict.",
                format_file.unwrap_or_else(|| "the supplier's format file in formats/".to_owned())
            ),
            true,
        ),
        ("conflict", Language::De) if can_replace(item) => (
            "Mit dem Lieferanten klären, welches der beiden Dokumente echt ist; das zuerst gespeicherte ist womöglich schon weitergegeben (Warenwirtschaft prüfen). Ist das gespeicherte falsch, diese Lieferung neu verarbeiten: sie tritt an seine Stelle, das alte bleibt als ersetzt gespeichert.".to_owned(),
            true,
        ),
        ("conflict", Language::En) if can_replace(item) => (
            "Ask the supplier which of the two documents is genuine; the one stored first may have been passed on already (check the ERP). If the stored one is false, run this item again: it takes the stored one's place, which stays in the store, marked as superseded.".to_owned(),
            true,
        ),
        ("conflict", Language::De) => (
            "Der Absender dieser Lieferung ist nicht bestätigt: sie kann das gespeicherte Dokument nicht ersetzen und ist womöglich eine Fälschung. Ist sie echt, den Lieferanten bitten, sie signiert (DKIM) noch einmal zu schicken, und mit ihm klären, welches Dokument gilt.".to_owned(),
            false,
        ),
        ("conflict", Language::En) => (
            "The sender of this item is not authenticated: it cannot replace the stored document, and it may be a forgery. If it is genuine, ask the supplier to send it again signed (DKIM), and settle with them which document counts.".to_owned(),
            false,
        ),
        ("not the original sender", Language::De) => (
            "Eine Änderung oder Stornierung wird nur vom Absender der Bestellung angenommen; diese kann gefälscht sein. Kommt sie wirklich vom Besteller, ihn bitten, sie auf demselben Weg zu schicken wie die Bestellung.".to_owned(),
            false,
        ),
        ("not the original sender", Language::En) => (
            "An update or a cancellation is taken only from the sender of the order; this one may be forged. If it really comes from the buyer, ask them to send it the same way as the order.".to_owned(),
            false,
        ),
        ("duplicate" | "already imported", Language::De) => (
            "Nichts zu tun, wenn der Lieferant dasselbe Dokument noch einmal geschickt hat: es ist schon gespeichert. Trägt ein anderes Dokument dieselbe Nummer, mit dem Lieferanten klären.".to_owned(),
            false,
        ),
        ("duplicate" | "already imported", Language::En) => (
            "Nothing to do if the supplier sent the same document again: it is stored already. If a different document carries the same number, ask the supplier.".to_owned(),
            false,
        ),
        ("too large", Language::De) => (
            "Ist die Datei echt, die Grenze `max_item_mib` unter [limits] in eingang.toml anheben.".to_owned(),
            true,
        ),
        ("too large", Language::En) => (
            "If the file is genuine, raise `max_item_mib` under [limits] in eingang.toml.".to_owned(),
            true,
        ),
        ("crashed the parser", Language::De) => (
            "Die Datei den Entwicklern von eingang melden; nach einem Update erneut versuchen.".to_owned(),
            true,
        ),
        ("crashed the parser", Language::En) => (
            "Report the file to the developers of eingang; try again after an update.".to_owned(),
            true,
        ),
        (_, Language::De) => (
            "Beim Lieferanten eine korrigierte Datei anfordern oder, wenn die Datei stimmt, seine Formatdatei in formats/ anpassen.".to_owned(),
            true,
        ),
        (_, Language::En) => (
            "Ask the supplier for a corrected file or, if the file is right, adjust its format file in formats/.".to_owned(),
            true,
        ),
    };
    let mut out = match lang {
        Language::De => format!("Was tun:\n  {text}\n"),
        Language::En => format!("What to do:\n  {text}\n"),
    };
    if retry {
        let _ = match lang {
            Language::De => writeln!(
                out,
                "  Danach neu verarbeiten:\n    {cmd} reprocess {id}",
                cmd = crate::config::invocation()
            ),
            Language::En => writeln!(
                out,
                "  Then run it again:\n    {cmd} reprocess {id}",
                cmd = crate::config::invocation()
            ),
        };
    }
    out
}

/// One summary mail standing in for a burst of rejections from one source.
pub fn summary(lang: Language, source: &str, items: &[RejectedItem], window: Duration) -> Mail {
    let n = items.len();
    let window = span(lang, window);
    let subject = match (lang, n) {
        (Language::De, 1) => format!(
            "eingang: {} – 1 Lieferung abgelehnt (Sammelmeldung)",
            one_line(source)
        ),
        (Language::De, _) => format!(
            "eingang: {} – {n} Lieferungen abgelehnt (Sammelmeldung)",
            one_line(source)
        ),
        (Language::En, 1) => format!("eingang: {} – 1 item rejected (summary)", one_line(source)),
        (Language::En, _) => format!(
            "eingang: {} – {n} items rejected (summary)",
            one_line(source)
        ),
    };
    let mut body = match (lang, n) {
        (Language::De, 1) => format!(
            "Die Quelle \"{}\" hat mehr Lieferungen abgelehnt, als innerhalb von {window} einzeln gemeldet werden; diese eine kommt in der Liste:\n\n",
            one_line(source)
        ),
        (Language::De, _) => format!(
            "Die Quelle \"{}\" hat mehr Lieferungen abgelehnt, als innerhalb von {window} einzeln gemeldet werden. Statt {n} Einzelmeldungen kommt diese Liste:\n\n",
            one_line(source)
        ),
        (Language::En, 1) => format!(
            "The source \"{}\" rejected more items than are reported one by one within {window}; this one comes in the list:\n\n",
            one_line(source)
        ),
        (Language::En, _) => format!(
            "The source \"{}\" rejected more items than are reported one by one within {window}. Instead of {n} notices, here is the list:\n\n",
            one_line(source)
        ),
    };
    for item in items {
        let supplier = item
            .supplier
            .as_deref()
            .map(one_line)
            .unwrap_or_else(|| "—".to_owned());
        let place = item
            .archived
            .as_deref()
            .map(one_line)
            .unwrap_or_else(|| one_line(&item.location));
        let from = item
            .sender
            .as_deref()
            .map(|s| match &item.sender_auth {
                Some(v) => format!(" ({}, {})", one_line(s), v.status),
                None => format!(" ({})", one_line(s)),
            })
            .unwrap_or_default();
        let _ = writeln!(
            body,
            "#{} {}{from} – {supplier} – {}: {}\n    {} {place}",
            item.item_id,
            one_line(&what(item)),
            label(lang, item.label.as_deref()),
            one_line(&reason(lang, item)),
            match lang {
                Language::De => "liegt in",
                Language::En => "lies in",
            },
        );
    }
    let ids: Vec<String> = items.iter().map(|i| i.item_id.to_string()).collect();
    let _ = match lang {
        Language::De => write!(
            body,
            "\nWas tun:\n  Oft haben solche Häufungen eine gemeinsame Ursache (ein neuer Absender, ein geändertes Format). Die Ursache beheben, dann alle neu verarbeiten:\n    {} reprocess {}\n\n",
            crate::config::invocation(),
            ids.join(" ")
        ),
        Language::En => write!(
            body,
            "\nWhat to do:\n  Such bursts often share one cause (a new sender, a changed format). Fix it, then run them all again:\n    {} reprocess {}\n\n",
            crate::config::invocation(),
            ids.join(" ")
        ),
    };
    body.push_str(signature(lang));
    Mail { subject, body }
}

/// The one mail for a source that has failed for longer than `down_after`.
pub fn down(lang: Language, source: &str, since: &str, error: &str, down_after: Duration) -> Mail {
    let (source, since_text) = (one_line(source), time(lang, since));
    match lang {
        Language::De => Mail {
            subject: format!(
                "eingang: Quelle {source} ausgefallen seit {since_text}: {}",
                short(error, SUBJECT_PART_CHARS)
            ),
            body: format!(
                "Die Quelle \"{source}\" ist seit {since_text} nicht erreichbar (länger als {}).\n\nLetzter Fehler:\n  {}\n\neingang versucht es weiter. Lieferungen bleiben, wo sie sind; keine geht verloren. Sobald die Quelle wieder funktioniert, kommt eine Nachricht; bis dahin keine weitere.\n\nPrüfen:\n    {} check\n\n{}",
                span(lang, down_after),
                one_line(error),
                crate::config::invocation(),
                signature(lang)
            ),
        },
        Language::En => Mail {
            subject: format!(
                "eingang: source {source} is down since {since_text}: {}",
                short(error, SUBJECT_PART_CHARS)
            ),
            body: format!(
                "The source \"{source}\" has failed since {since_text} (longer than {}).\n\nLast error:\n  {}\n\neingang keeps trying. Items stay where they are; none is lost. You get one message when the source works again, and none before.\n\nTo check:\n    {} check\n\n{}",
                span(lang, down_after),
                one_line(error),
                crate::config::invocation(),
                signature(lang)
            ),
        },
    }
}

/// The one mail about an entry of an inbox that eingang leaves alone (a link, a FIFO, a
/// folder). The name is the uploader's: quoted and shortened.
pub fn stray(lang: Language, source: &str, stray: &crate::store::Stray) -> Mail {
    let (source, name) = (one_line(source), short(&stray.name, SUBJECT_PART_CHARS));
    match lang {
        Language::De => Mail {
            subject: format!(
                "eingang: {source} – im Eingang liegt etwas, das kein Lieferschein ist: »{name}«"
            ),
            body: format!(
                "Im Eingang der Quelle \"{source}\" liegt ein Eintrag, den eingang nicht liest und liegen lässt:\n\n  Name (vom Absender): »{}«\n  Was es ist:          {}\n\nDiese Nachricht kommt einmal; solange der Eintrag liegt, keine weitere. Andere Lieferungen gehen weiter.\n\n{}",
                one_line(&stray.name),
                one_line(&stray.why),
                signature(lang)
            ),
        },
        Language::En => Mail {
            subject: format!(
                "eingang: {source} – something in the inbox is not a delivery note: »{name}«"
            ),
            body: format!(
                "The inbox of the source \"{source}\" holds an entry that eingang does not read and leaves alone:\n\n  Name (the sender's): »{}«\n  What it is:          {}\n\nThis message comes once; no other while the entry stays. Other items go on.\n\n{}",
                one_line(&stray.name),
                one_line(&stray.why),
                signature(lang)
            ),
        },
    }
}

/// The one mail about items in a source's archive that the store does not know: it was
/// restored from a copy older than the folders, and their documents are missing from it.
pub fn unrecorded(lang: Language, source: &str, places: &[String]) -> Mail {
    const LISTED: usize = 50;
    let cmd = crate::config::invocation();
    let source = one_line(source);
    let mut list: String = places
        .iter()
        .take(LISTED)
        .map(|p| format!("  {}\n", one_line(p)))
        .collect();
    let more = places.len().saturating_sub(LISTED);
    match lang {
        Language::De => {
            if more > 0 {
                list.push_str(&format!("  … und {more} weitere\n"));
            }
            Mail {
                subject: format!(
                    "eingang: {source} – {} Lieferungen im Archiv fehlen im Bestand",
                    places.len()
                ),
                body: format!(
                    "Im Archiv der Quelle \"{source}\" liegen Lieferungen, die der Bestand von eingang nicht kennt. Meist wurde der Bestand aus einer älteren Sicherung zurückgespielt; ihre Dokumente fehlen dann:\n\n{list}\nSie neu einlesen (Doppeltes wird an der Belegnummer erkannt):\n    {cmd} recover {source}\n\n{}",
                    signature(lang)
                ),
            }
        }
        Language::En => {
            if more > 0 {
                list.push_str(&format!("  … and {more} more\n"));
            }
            Mail {
                subject: format!(
                    "eingang: {source} – {} archived items are missing from the store",
                    places.len()
                ),
                body: format!(
                    "The archive of the source \"{source}\" holds items the eingang store does not know. Usually the store was restored from an older backup; their documents are missing then:\n\n{list}\nTo import them again (duplicates are caught by their number):\n    {cmd} recover {source}\n\n{}",
                    signature(lang)
                ),
            }
        }
    }
}

/// The one mail for a source that works again after a down notice.
pub fn up(lang: Language, source: &str, since: &str, now: &str) -> Mail {
    let (source, since_text, now_text) = (one_line(source), time(lang, since), time(lang, now));
    match lang {
        Language::De => Mail {
            subject: format!("eingang: Quelle {source} funktioniert wieder"),
            body: format!(
                "Die Quelle \"{source}\" war seit {since_text} ausgefallen und funktioniert seit {now_text} wieder. Was in der Zwischenzeit eingegangen ist, wird jetzt verarbeitet.\n\n{}",
                signature(lang)
            ),
        },
        Language::En => Mail {
            subject: format!("eingang: source {source} works again"),
            body: format!(
                "The source \"{source}\" had failed since {since_text} and works again since {now_text}. What arrived meanwhile is being handled now.\n\n{}",
                signature(lang)
            ),
        },
    }
}

/// The one mail for an OAuth2 login whose refresh token the identity provider refused
/// (expired, revoked, reused): `login` is the source's name, or `notify` for `[notify]`.
pub fn reauthorize(lang: Language, login: &str, error: &str, at: &str) -> Mail {
    let cmd = crate::config::invocation();
    let (login, at_text) = (one_line(login), time(lang, at));
    let what_de = if login == crate::config::NOTIFY_LOGIN {
        "Der Mailversand von eingang ([notify])".to_owned()
    } else {
        format!("Die Quelle \"{login}\"")
    };
    let what_en = if login == crate::config::NOTIFY_LOGIN {
        "eingang's mail submission ([notify])".to_owned()
    } else {
        format!("The source \"{login}\"")
    };
    match lang {
        Language::De => Mail {
            subject: format!("eingang: {login} muss neu angemeldet werden (OAuth2)"),
            body: format!(
                "{what_de} kann sich seit {at_text} nicht mehr anmelden: der Identitätsanbieter nimmt das gespeicherte Refresh-Token nicht mehr an.\n\nAntwort des Anbieters:\n  {}\n\nLieferungen bleiben, wo sie sind; keine geht verloren. Bis zur neuen Anmeldung kommt keine weitere Nachricht dazu.\n\nNeu anmelden (ein Code wird angezeigt, der im Browser eingegeben wird):\n    {cmd} oauth login {login}\n\n{}",
                one_line(error),
                signature(lang)
            ),
        },
        Language::En => Mail {
            subject: format!("eingang: {login} must sign in again (OAuth2)"),
            body: format!(
                "{what_en} cannot log in since {at_text}: the identity provider no longer takes the stored refresh token.\n\nThe provider said:\n  {}\n\nItems stay where they are; none is lost. You get no further message about this until someone signs in again.\n\nTo sign in again (it shows a code to enter in a browser):\n    {cmd} oauth login {login}\n\n{}",
                one_line(error),
                signature(lang)
            ),
        },
    }
}

/// The one mail for the documents an ERP connector gave up on after its last attempt: which
/// ones, why, and how to queue them again once the receiver works.
pub fn undelivered(lang: Language, connector: &str, documents: &[DeadDocument]) -> Mail {
    let (connector, n) = (one_line(connector), documents.len());
    let mut list = String::new();
    for d in documents {
        let supplier = d.supplier.as_deref().map(one_line);
        let _ = writeln!(
            list,
            "#{} {} {} ({}) – {}: {}",
            d.document_id,
            match (d.kind.as_str(), lang) {
                ("delivery_note", Language::De) => "Lieferschein",
                ("order", Language::De) => "Bestellung",
                ("delivery_note", Language::En) => "delivery note",
                (_, Language::En) => "order",
                (_, Language::De) => "Dokument",
            },
            quoted(&d.number),
            supplier.as_deref().unwrap_or("—"),
            match lang {
                Language::De => format!("{} Versuche", d.attempts),
                Language::En => format!("{} attempts", d.attempts),
            },
            one_line(&d.error),
        );
    }
    match lang {
        Language::De => Mail {
            subject: format!(
                "eingang: Übergabe an {connector} gescheitert – {n} {} nicht zugestellt",
                if n == 1 { "Dokument" } else { "Dokumente" }
            ),
            body: format!(
                "eingang hat {n} {} nach dem letzten Versuch nicht an den Connector \"{connector}\" übergeben können:\n\n{list}\nDie Dokumente bleiben gespeichert; eingang versucht es nicht weiter. Andere Dokumente gehen weiter an \"{connector}\".\n\nWas tun:\n  Den Empfänger prüfen (eingang check), dann die Dokumente erneut übergeben:\n    eingang connector replay {connector} --dead\n\n{}",
                if n == 1 { "Dokument" } else { "Dokumente" },
                signature(lang)
            ),
        },
        Language::En => Mail {
            subject: format!(
                "eingang: hand-off to {connector} failed – {n} {} not delivered",
                if n == 1 { "document" } else { "documents" }
            ),
            body: format!(
                "eingang could not hand {n} {} to the connector \"{connector}\", and has made its last attempt:\n\n{list}\nThe documents stay stored; eingang does not try again. Other documents still go to \"{connector}\".\n\nWhat to do:\n  Check the receiver (eingang check), then hand the documents off again:\n    eingang connector replay {connector} --dead\n\n{}",
                if n == 1 { "document" } else { "documents" },
                signature(lang)
            ),
        },
    }
}

/// The one mail for the rejected requests of a cXML partner (`source` is `cxml:<partner>`)
/// within a burst. The partner was told each rejection in its answer already; people get one
/// list, and the way on is a corrected request from the partner, not a reprocess.
pub fn receiver_summary(
    lang: Language,
    source: &str,
    items: &[RejectedItem],
    window: Duration,
) -> Mail {
    let partner = one_line(source.strip_prefix("cxml:").unwrap_or(source));
    let (n, window) = (items.len(), span(lang, window));
    let (subject, mut body) = match lang {
        Language::De => (
            format!("eingang: cXML-Partner {partner} – {n} Anfrage(n) abgelehnt"),
            format!(
                "eingang hat {n} Anfrage(n) des cXML-Partners \"{partner}\" abgelehnt. Der Partner hat jede Ablehnung schon mit der Antwort auf seine Anfrage erfahren (cXML-Status); diese Nachricht fasst die Ablehnungen zusammen, höchstens eine je Partner in {window}:\n\n"
            ),
        ),
        Language::En => (
            format!("eingang: cXML partner {partner} – {n} request(s) rejected"),
            format!(
                "eingang rejected {n} request(s) of the cXML partner \"{partner}\". The partner was told each rejection in the answer to its request (the cXML status); this message sums them up, at most one per partner in {window}:\n\n"
            ),
        ),
    };
    for item in items {
        let payload = item
            .location
            .strip_prefix(source)
            .and_then(|rest| rest.strip_prefix(':'))
            .unwrap_or(&item.location);
        let _ = writeln!(
            body,
            "#{} payloadID {} – {}: {}",
            item.item_id,
            one_line(payload),
            label(lang, item.label.as_deref()),
            one_line(&item.reason),
        );
    }
    let _ = match lang {
        Language::De => write!(
            body,
            "\nWas tun:\n  Eine abgelehnte Anfrage kann eingang nicht neu verarbeiten: der Partner schickt sie berichtigt noch einmal, mit einer neuen payloadID. Die Liste:\n    {} items --source {} --failed\n\n",
            crate::config::invocation(),
            one_line(source)
        ),
        Language::En => write!(
            body,
            "\nWhat to do:\n  eingang cannot reprocess a rejected request: the partner sends it again, corrected, with a new payloadID. The list:\n    {} items --source {} --failed\n\n",
            crate::config::invocation(),
            one_line(source)
        ),
    };
    body.push_str(signature(lang));
    Mail { subject, body }
}

fn signature(lang: Language) -> &'static str {
    match lang {
        Language::De => "-- \neingang hat diese Nachricht automatisch geschrieben.\n",
        Language::En => "-- \neingang wrote this message automatically.\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> RejectedItem {
        RejectedItem {
            item_id: 42,
            is_message: true,
            sender: Some("versand@acme-neu.de".into()),
            subject: Some("Lieferschein 4711\r\nBcc: attacker@example.invalid".into()),
            message_id: Some("m-7@acme-neu.de".into()),
            file_name: Some("mail.eml".into()),
            location: "/srv/drop/in/mail.eml".into(),
            supplier: None,
            reason: "unknown sender versand@acme-neu.de for export.csv: add \"versand@acme-neu.de\" to `senders` in formats/acme.toml".into(),
            label: Some("unknown sender".into()),
            archived: Some("/srv/drop/fehler/mail.eml".into()),
            received_at: "2026-11-20T09:00:00.000Z".into(),
            size: 1234,
            reject: None,
            sender_auth: None,
        }
    }

    #[test]
    fn outside_text_becomes_one_line() {
        assert_eq!(one_line("a\r\nBcc: x\t\u{1b}[2J b"), "a Bcc: x [2J b");
        assert_eq!(one_line("rechnung\u{202e}fdp.exe"), "rechnung fdp.exe");
        assert_eq!(short(&"x".repeat(100), 10).chars().count(), 10);
    }

    #[test]
    fn a_rejection_in_german_names_source_reason_place_and_next_step() {
        let details = Details {
            files: vec!["export.csv".into()],
            date: Some("2026-11-20T10:00:00+01:00".into()),
        };
        let mail = rejected(
            Language::De,
            "drop",
            &item(),
            &details,
            &Attached::Yes("mail.eml".into()),
        );
        assert!(!mail.subject.contains(['\r', '\n']), "{}", mail.subject);
        assert!(
            mail.subject.starts_with(
                "eingang: drop – Lieferant unbekannt: unbekannter Absender – »Lieferschein 4711 Bcc:"
            ),
            "{}",
            mail.subject
        );
        for needle in [
            "Absender:    »versand@acme-neu.de«",
            "Betreff:     »Lieferschein 4711 Bcc: attacker@example.invalid« (Wortlaut des Absenders)",
            "Datei(en):   export.csv",
            "Liegt jetzt: /srv/drop/fehler/mail.eml",
            "unter `senders` in formats/acme.toml",
            "eingang reprocess 42",
            "hängt an (mail.eml)",
        ] {
            assert!(
                mail.body.contains(needle),
                "{needle:?} missing in:\n{}",
                mail.body
            );
        }
        assert!(mail.body.lines().all(|l| !l.contains('\r')));
    }

    #[test]
    fn english_switches_every_word() {
        let mut file = item();
        file.is_message = false;
        file.label = Some("duplicate".into());
        file.archived = None;
        let mail = rejected(
            Language::En,
            "drop",
            &file,
            &Details::default(),
            &Attached::TooLarge(5 * 1024 * 1024),
        );
        assert!(
            mail.subject.contains("unknown supplier: duplicate"),
            "{}",
            mail.subject
        );
        assert!(
            mail.body.contains("still in /srv/drop/in/mail.eml"),
            "{}",
            mail.body
        );
        assert!(mail.body.contains("larger than 5 MiB"), "{}", mail.body);
        assert!(
            !mail.body.contains("Sender:"),
            "a file has no sender: {}",
            mail.body
        );
        assert!(
            !mail.body.contains("reprocess"),
            "a duplicate needs no new try: {}",
            mail.body
        );
    }

    fn verdict(status: crate::auth::Status) -> crate::auth::Verdict {
        crate::auth::Verdict {
            status,
            from_domain: Some("acme-neu.de".into()),
            aligned_domain: None,
            policy: None,
            decided_by: crate::auth::DecidedBy::Eingang,
            authserv_id: None,
            text: "dkim=none, dmarc=fail (p=reject) header.from=acme-neu.de".into(),
        }
    }

    #[test]
    fn a_message_shows_its_sender_verdict_and_a_conflict_says_whether_it_can_replace() {
        use crate::auth::Status;
        let conflict = |status| RejectedItem {
            label: Some("conflict".into()),
            reason: "duplicate delivery note LS-1 from another sender: …".into(),
            sender_auth: Some(verdict(status)),
            ..item()
        };
        let mail = rejected(
            Language::De,
            "mail",
            &conflict(Status::Fail),
            &Details::default(),
            &Attached::Untrusted,
        );
        assert!(
            mail.body.contains(
                "Echtheit:    nicht bestätigt: fail (dkim=none, dmarc=fail (p=reject) header.from=acme-neu.de)"
            ),
            "{}",
            mail.body
        );
        assert!(mail.subject.contains("Konflikt"), "{}", mail.subject);
        assert!(
            mail.body
                .contains("kann das gespeicherte Dokument nicht ersetzen")
        );
        assert!(!mail.body.contains("reprocess"), "{}", mail.body);
        let mail = rejected(
            Language::En,
            "mail",
            &conflict(Status::Pass),
            &Details::default(),
            &Attached::No,
        );
        assert!(
            mail.body.contains("Sender auth: authenticated: pass"),
            "{}",
            mail.body
        );
        assert!(
            mail.body.contains("it takes the stored one's place"),
            "{}",
            mail.body
        );
        assert!(mail.body.contains("eingang reprocess 42"), "{}", mail.body);
        // A file has no sender to check: no such line.
        let file = RejectedItem {
            is_message: false,
            ..conflict(Status::Pass)
        };
        let mail = rejected(
            Language::En,
            "drop",
            &file,
            &Details::default(),
            &Attached::No,
        );
        assert!(!mail.body.contains("Sender auth"), "{}", mail.body);
        assert!(mail.body.contains("eingang reprocess 42"), "{}", mail.body);
    }

    #[test]
    fn an_unauthenticated_sender_is_told_not_to_be_trusted() {
        let forged = RejectedItem {
            label: Some("sender not authenticated".into()),
            reason: "sender not authenticated: DMARC fails for acme-neu.de, which publishes p=reject (…)".into(),
            sender_auth: Some(verdict(crate::auth::Status::Fail)),
            ..item()
        };
        let mail = rejected(
            Language::De,
            "mail",
            &forged,
            &Details::default(),
            &Attached::Untrusted,
        );
        assert!(
            mail.subject.contains("Absender nicht bestätigt"),
            "{}",
            mail.subject
        );
        assert!(
            mail.body.contains("Den Inhalt nicht verwenden"),
            "{}",
            mail.body
        );
        assert!(
            mail.body.contains("ihr Absender ist nicht bestätigt"),
            "{}",
            mail.body
        );
    }

    #[test]
    fn a_summary_lists_every_item_and_one_reprocess_command() {
        let items: Vec<RejectedItem> = (1..=3)
            .map(|i| RejectedItem {
                item_id: i,
                file_name: Some(format!("f{i}.xml")),
                ..item()
            })
            .collect();
        let mail = summary(Language::De, "drop", &items, Duration::from_secs(300));
        assert!(
            mail.subject.contains("3 Lieferungen abgelehnt"),
            "{}",
            mail.subject
        );
        assert!(
            mail.body.contains("eingang reprocess 1 2 3"),
            "{}",
            mail.body
        );
        assert_eq!(
            mail.body
                .matches("liegt in /srv/drop/fehler/mail.eml")
                .count(),
            3
        );
    }

    #[test]
    fn a_summary_of_one_item_says_so_in_the_singular() {
        let one = [item()];
        let de = summary(Language::De, "drop", &one, Duration::from_secs(300));
        assert!(
            de.subject.contains("1 Lieferung abgelehnt"),
            "{}",
            de.subject
        );
        assert!(!de.subject.contains("Lieferungen"), "{}", de.subject);
        let en = summary(Language::En, "drop", &one, Duration::from_secs(300));
        assert!(en.subject.contains("1 item rejected"), "{}", en.subject);
    }

    #[test]
    fn eingangs_own_reasons_are_told_in_the_notice_language() {
        let reject = Reject::BadValue {
            file: "ls.csv".into(),
            line: Some("row 7".into()),
            field: "quantity".into(),
            value: "zwölf".into(),
            why: "is not a decimal number".into(),
        };
        let item = RejectedItem {
            reason: reject.to_string(),
            reject: Some(reject),
            ..item()
        };
        let de = rejected(
            Language::De,
            "drop",
            &item,
            &Details::default(),
            &Attached::No,
        );
        assert!(
            de.body
                .contains("ls.csv: Zeile 7: quantity \"zwölf\" ist keine Dezimalzahl"),
            "{}",
            de.body
        );
        let en = rejected(
            Language::En,
            "drop",
            &item,
            &Details::default(),
            &Attached::No,
        );
        assert!(
            en.body
                .contains("ls.csv: row 7: quantity \"zwölf\" is not a decimal number"),
            "{}",
            en.body
        );
        let duplicate = Reject::Duplicate {
            kind: "delivery note".into(),
            number: "LS-8".into(),
            supplier: Some("acme".into()),
            existing: 3,
        };
        assert_eq!(
            german(&duplicate),
            "doppelt: Lieferschein LS-8 von acme ist schon als Dokument 3 gespeichert"
        );
    }

    #[test]
    fn undelivered_documents_are_listed_with_the_replay_command() {
        let dead = DeadDocument {
            document_id: 7,
            kind: "delivery_note".into(),
            number: "LS-4711\r\nBcc: x@example.invalid".into(),
            supplier: Some("acme".into()),
            attempts: 8,
            error: "HTTP 503: busy".into(),
        };
        let de = undelivered(Language::De, "erp", std::slice::from_ref(&dead));
        assert_eq!(
            de.subject,
            "eingang: Übergabe an erp gescheitert – 1 Dokument nicht zugestellt"
        );
        assert!(
            de.body.contains("#7 Lieferschein »LS-4711 Bcc: x@example.invalid« (acme) – 8 Versuche: HTTP 503: busy"),
            "{}",
            de.body
        );
        assert!(
            de.body.contains("eingang connector replay erp --dead"),
            "{}",
            de.body
        );
        let en = undelivered(Language::En, "erp", &[dead.clone(), dead]);
        assert!(
            en.subject.ends_with("2 documents not delivered"),
            "{}",
            en.subject
        );
        assert!(en.body.contains("8 attempts: HTTP 503"), "{}", en.body);
    }

    #[test]
    fn down_and_up_name_the_source_and_the_last_error() {
        let d = down(
            Language::En,
            "lieferscheine",
            "2026-11-21T06:00:00.000Z",
            "imap.example.com:993: connection refused",
            Duration::from_secs(900),
        );
        assert!(
            d.subject
                .starts_with("eingang: source lieferscheine is down since 2026-11-21"),
            "{}",
            d.subject
        );
        assert!(
            d.subject
                .ends_with(": imap.example.com:993: connection refused"),
            "{}",
            d.subject
        );
        assert!(d.body.contains("longer than 15 minutes"), "{}", d.body);
        assert_eq!(span(Language::De, Duration::from_secs(2)), "2 Sekunden");
        assert_eq!(span(Language::De, Duration::from_secs(60)), "1 Minute");
        assert_eq!(span(Language::En, Duration::from_secs(7200)), "2 hours");
        let u = up(
            Language::De,
            "lieferscheine",
            "2026-11-21T06:00:00.000Z",
            "2026-11-21T07:00:00.000Z",
        );
        assert_eq!(
            u.subject,
            "eingang: Quelle lieferscheine funktioniert wieder"
        );
    }
}
