//! The pages and their actions: login, the error queue, the documents, the sources, and the
//! download of an original. Each handler reads through the store or acts through `Control`;
//! outside text goes to the templates as it is and is escaped there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::auth::{self, Refusal};
use super::text::{self, Words};
use super::{App, is_htmx, plain, see_other};
use crate::config::SourceKind;
use crate::daemon::NextPass;
use crate::notify::text::Language;
use crate::store::{DocumentQuery, ItemFilter, LedgerItem};

/// Rows of the error queue and of a document search shown at once.
const PAGE_ROWS: usize = 200;
/// Items one selection may act on.
const MAX_SELECTED: usize = 500;
/// How long "sync now" waits for the pass before it answers that it still runs.
const SYNC_WAIT: Duration = Duration::from_secs(120);
/// How long "test connection" may take.
const CHECK_WAIT: Duration = Duration::from_secs(90);
/// An original read from a drop folder's archive is not larger than this.
const MAX_FILE_ORIGINAL_BYTES: u64 = 64 * 1024 * 1024;

/// A line of feedback above the page.
struct Notice {
    kind: &'static str,
    text: String,
}

impl Notice {
    fn ok(text: String) -> Notice {
        Notice { kind: "ok", text }
    }
    fn error(text: String) -> Notice {
        Notice {
            kind: "error",
            text,
        }
    }
}

/// What every page around its content shows.
struct Frame {
    w: &'static Words,
    csrf: String,
    nav: &'static str,
    notices: Vec<Notice>,
    open_failures: i64,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    w: &'static Words,
    message: Option<String>,
    can_login: bool,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    f: Frame,
    title: String,
    text: String,
    back: &'static str,
}

struct FailedRow {
    id: i64,
    when: String,
    what: String,
    source: String,
    supplier: String,
    label: String,
    reason: String,
    lies: String,
}

#[derive(Template)]
#[template(path = "fehler.html")]
struct ErrorsPage {
    f: Frame,
    rows: Vec<FailedRow>,
    more: Option<String>,
}

#[derive(Default)]
struct SearchForm {
    number: String,
    supplier: String,
    kind: String,
    from: String,
    to: String,
}

struct DocumentView {
    id: i64,
    number: String,
    kind: String,
    supplier: String,
    date: String,
    lines: i64,
    stored: String,
    source: String,
    superseded: bool,
}

#[derive(Template)]
#[template(path = "dokumente.html")]
struct DocumentsPage {
    f: Frame,
    q: SearchForm,
    suppliers: Vec<String>,
    rows: Vec<DocumentView>,
    more: Option<String>,
}

struct LineView {
    line_no: String,
    part: String,
    gtin: String,
    description: String,
    quantity: String,
    unit: String,
    unit_price: String,
    order_ref: String,
}

struct DetailView {
    item_id: i64,
    number: String,
    kind: String,
    supplier: String,
    date: String,
    order_refs: String,
    format: String,
    superseded_by: Option<i64>,
    priced: bool,
    lines: Vec<LineView>,
    source: String,
    sender: Option<String>,
    subject: Option<String>,
    message_id: Option<String>,
    file: String,
    received: String,
    lies: String,
    sha256: String,
}

#[derive(Template)]
#[template(path = "dokument.html")]
struct DocumentPage {
    f: Frame,
    d: DetailView,
}

struct CheckView {
    ok: bool,
    text: String,
}

struct SourceView {
    name: String,
    slug: String,
    kind: &'static str,
    up: bool,
    state: String,
    last_ok: String,
    error: Option<String>,
    error_plain: Option<&'static str>,
    pending: i64,
    next: String,
    notes: Vec<String>,
    checks: Vec<CheckView>,
}

#[derive(Template)]
#[template(path = "quellen.html")]
struct SourcesPage {
    f: Frame,
    rows: Vec<SourceView>,
    connectors: Vec<ConnectorView>,
    daemons: Vec<DaemonView>,
}

/// One daemon on a shared store, on the sources page: where it runs, since when, which
/// sources it works.
struct DaemonView {
    name: String,
    since: String,
    sources: String,
    here: bool,
}

/// One connector on the sources page: what waits, what went, what was given up.
struct ConnectorView {
    name: String,
    kind: &'static str,
    pending: i64,
    delivered: i64,
    dead: i64,
    error: Option<String>,
}

/// A page as an answer; a template that fails to render is a plain 500.
fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "http: a page did not render");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// A form body, its fields in order (repeated names kept).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A logged-in request.
struct Session {
    token: String,
    csrf: String,
}

impl App {
    fn lang(&self) -> Language {
        self.shared.lang
    }

    fn words(&self) -> &'static Words {
        text::words(self.shared.lang)
    }

    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let token = auth::session_cookie(headers)?;
        let csrf = self.shared.sessions.csrf_of(token)?;
        Some(Session {
            token: token.to_owned(),
            csrf,
        })
    }

    /// The checks of every state change: a same-origin request, a live session, its CSRF
    /// token (header `X-CSRF-Token` from htmx, or the form field `csrf`).
    fn guard(&self, headers: &HeaderMap, body: &[u8]) -> Result<(Session, Form), Box<Response>> {
        auth::same_origin(headers).map_err(|why| Box::new(self.refused(why)))?;
        let Some(session) = self.session(headers) else {
            return Err(Box::new(to_login(headers)));
        };
        let form = Form::parse(body);
        let given = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| form.get("csrf"));
        if !auth::token_matches(&session.csrf, given) {
            return Err(Box::new(self.refused(Refusal::Token)));
        }
        Ok((session, form))
    }

    fn refused(&self, why: Refusal) -> Response {
        tracing::warn!(?why, "http: a request to change something was refused");
        let text = match (self.lang(), why) {
            (Language::De, Refusal::Token) => {
                "Abgelehnt: die Anfrage trägt nicht das Zeichen dieser Sitzung. Seite neu laden und noch einmal versuchen.\n"
            }
            (Language::De, _) => "Abgelehnt: die Anfrage kam nicht von dieser Seite.\n",
            (Language::En, Refusal::Token) => {
                "Refused: the request does not carry this session's token. Reload the page and try again.\n"
            }
            (Language::En, _) => "Refused: the request did not come from this page.\n",
        };
        plain(StatusCode::FORBIDDEN, text)
    }

    async fn frame(&self, csrf: String, nav: &'static str, notices: Vec<Notice>) -> Frame {
        let open = self
            .control
            .store()
            .call(|s| {
                s.items(&ItemFilter {
                    failed: true,
                    limit: 0,
                    ..ItemFilter::default()
                })
            })
            .await
            .map_or(0, |(_, total)| total);
        Frame {
            w: self.words(),
            csrf,
            nav,
            notices,
            open_failures: open,
        }
    }

    /// The page for an id that names nothing (or is no number), with its way back.
    async fn not_found(&self, session: &Session, back: &'static str) -> Response {
        let title = self.words().not_found;
        self.message(session, StatusCode::NOT_FOUND, title, String::new(), back)
            .await
    }

    async fn message(
        &self,
        session: &Session,
        status: StatusCode,
        title: &str,
        text: String,
        back: &'static str,
    ) -> Response {
        let page = MessagePage {
            f: self.frame(session.csrf.clone(), "", Vec::new()).await,
            title: title.to_owned(),
            text,
            back,
        };
        html(status, &page)
    }

    async fn store_failed(&self, session: &Session, e: crate::store::Error) -> Response {
        let title = match self.lang() {
            Language::De => "Speicher nicht erreichbar",
            Language::En => "The store cannot be read",
        };
        self.message(
            session,
            StatusCode::SERVICE_UNAVAILABLE,
            title,
            e.to_string(),
            "/",
        )
        .await
    }
}

/// To the login: a redirect, or for htmx the header that makes it follow one.
fn to_login(headers: &HeaderMap) -> Response {
    if is_htmx(headers) {
        (StatusCode::OK, [("hx-redirect", "/login")]).into_response()
    } else {
        see_other("/login")
    }
}

/// The answer to an action: the page, with the address bar showing the page itself.
fn after_action(mut response: Response, page: &'static str) -> Response {
    response
        .headers_mut()
        .insert("hx-push-url", HeaderValue::from_static(page));
    response
}

pub(super) async fn login_form(State(app): State<App>, headers: HeaderMap) -> Response {
    if app.session(&headers).is_some() {
        return see_other("/fehler");
    }
    html(StatusCode::OK, &login_page(&app, None))
}

fn login_page(app: &App, message: Option<String>) -> LoginPage {
    let can_login = app.shared.hash.is_some();
    let message = message.or_else(|| {
        (!can_login).then(|| match app.lang() {
            Language::De => "Anmelden ist nicht eingerichtet: in [http] fehlt admin_password_hash. Mit `eingang hash-password` erzeugen, eintragen und eingang neu starten.".to_owned(),
            Language::En => "Logging in is not set up: [http] has no admin_password_hash. Make one with `eingang hash-password`, add it and restart eingang.".to_owned(),
        })
    });
    LoginPage {
        w: app.words(),
        message,
        can_login,
    }
}

pub(super) async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(why) = auth::same_origin(&headers) {
        return app.refused(why);
    }
    let Some(hash) = app.shared.hash.clone() else {
        return html(StatusCode::FORBIDDEN, &login_page(&app, None));
    };
    if let Err(wait) = app.shared.limiter.attempt(peer.ip()) {
        let secs = wait.as_secs().max(1);
        let text = match app.lang() {
            Language::De => format!(
                "Zu viele Fehlversuche. Bitte in {} erneut versuchen.",
                text::span(Language::De, Duration::from_secs(secs))
            ),
            Language::En => format!(
                "Too many failed attempts. Please try again in {}.",
                text::span(Language::En, Duration::from_secs(secs))
            ),
        };
        let mut response = html(StatusCode::TOO_MANY_REQUESTS, &login_page(&app, Some(text)));
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).expect("digits are a header value"),
        );
        return response;
    }
    let password = Form::parse(&body)
        .get("password")
        .unwrap_or_default()
        .to_owned();
    let right = tokio::task::spawn_blocking(move || auth::verify(&hash, &password))
        .await
        .unwrap_or(false);
    if !right {
        tracing::warn!(peer = %peer.ip(), "http: wrong admin password");
        let text = match app.lang() {
            Language::De => "Falsches Passwort.",
            Language::En => "Wrong password.",
        };
        return html(
            StatusCode::UNAUTHORIZED,
            &login_page(&app, Some(text.to_owned())),
        );
    }
    app.shared.limiter.succeeded(peer.ip());
    let (token, _) = app.shared.sessions.start();
    tracing::info!(peer = %peer.ip(), "http: admin logged in");
    let cookie = auth::cookie_for(&token, &headers);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/fehler".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

pub(super) async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (session, _) = match app.guard(&headers, &body) {
        Ok(ok) => ok,
        Err(response) => return *response,
    };
    app.shared.sessions.end(&session.token);
    let mut response = to_login(&headers);
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&auth::cookie_gone()).expect("the cookie is ASCII"),
    );
    response
}

pub(super) async fn not_found(State(app): State<App>) -> Response {
    plain(
        StatusCode::NOT_FOUND,
        format!("{}\n", app.words().not_found),
    )
}

pub(super) async fn errors(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(session) = app.session(&headers) else {
        return to_login(&headers);
    };
    errors_page(&app, &session, Vec::new()).await
}

async fn errors_page(app: &App, session: &Session, notices: Vec<Notice>) -> Response {
    let lang = app.lang();
    let found = app
        .control
        .store()
        .call(|s| {
            s.items(&ItemFilter {
                failed: true,
                limit: PAGE_ROWS,
                ..ItemFilter::default()
            })
        })
        .await;
    let (items, total) = match found {
        Ok(found) => found,
        Err(e) => return app.store_failed(session, e).await,
    };
    let rows = items
        .iter()
        .map(|i| FailedRow {
            id: i.id,
            when: text::when(lang, &i.received_at),
            what: i.what(),
            source: i.source.clone(),
            supplier: i.supplier.clone().unwrap_or_else(|| "–".to_owned()),
            label: text::label(lang, i.label.as_deref()),
            reason: i.reason.clone().unwrap_or_default(),
            lies: i.lies_in(),
        })
        .collect();
    let more = (total > PAGE_ROWS as i64).then(|| match lang {
        Language::De => format!(
            "Die neuesten {PAGE_ROWS} von {total} Fehlern; alle mit `eingang items --failed --limit {total}`."
        ),
        Language::En => format!(
            "The newest {PAGE_ROWS} of {total} errors; all with `eingang items --failed --limit {total}`."
        ),
    });
    let page = ErrorsPage {
        f: app.frame(session.csrf.clone(), "fehler", notices).await,
        rows,
        more,
    };
    html(StatusCode::OK, &page)
}

/// Reprocess or close one item (its row's button) or the selection.
pub(super) async fn errors_action(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (session, form) = match app.guard(&headers, &body) {
        Ok(ok) => ok,
        Err(response) => return *response,
    };
    let lang = app.lang();
    let selected = || -> Vec<&str> { form.all("id").take(MAX_SELECTED).collect() };
    let (reprocess, ids) = if let Some(id) = form.get("reprocess") {
        (true, vec![id])
    } else if let Some(id) = form.get("handled") {
        (false, vec![id])
    } else if form.get("reprocess_selected").is_some() {
        (true, selected())
    } else if form.get("handled_selected").is_some() {
        (false, selected())
    } else {
        (true, Vec::new())
    };
    let mut notices = Vec::new();
    if ids.is_empty() {
        notices.push(Notice::error(
            match lang {
                Language::De => "Nichts ausgewählt.",
                Language::En => "Nothing selected.",
            }
            .to_owned(),
        ));
    }
    for text in ids {
        let Ok(id) = text.trim().parse::<i64>() else {
            notices.push(Notice::error(match lang {
                Language::De => "Keine Postennummer.".to_owned(),
                Language::En => "Not an item number.".to_owned(),
            }));
            continue;
        };
        notices.push(if reprocess {
            // The same code as `eingang reprocess`.
            match app.control.reprocess(id).await {
                Ok(place) => Notice::ok(match lang {
                    Language::De => format!(
                        "Posten {id} liegt wieder im Eingang ({place}) und wird beim nächsten Abruf neu verarbeitet."
                    ),
                    Language::En => format!(
                        "Item {id} is back in its inbox ({place}) and is processed again on the next run."
                    ),
                }),
                Err(e) => Notice::error(match lang {
                    Language::De => format!("Posten {id}: nicht neu verarbeitet: {e}"),
                    Language::En => format!("Item {id}: not reprocessed: {e}"),
                }),
            }
        } else {
            match app.control.mark_handled(id).await {
                Ok(()) => Notice::ok(match lang {
                    Language::De => format!(
                        "Posten {id} ist als von Hand erledigt geschlossen; die Datei bleibt, wo sie liegt."
                    ),
                    Language::En => format!(
                        "Item {id} is closed as handled by hand; it stays where it lies."
                    ),
                }),
                Err(e) => Notice::error(match lang {
                    Language::De => format!("Posten {id}: nicht geschlossen: {e}"),
                    Language::En => format!("Item {id}: not closed: {e}"),
                }),
            }
        });
    }
    after_action(errors_page(&app, &session, notices).await, "/fehler")
}

pub(super) async fn documents(
    State(app): State<App>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(session) = app.session(&headers) else {
        return to_login(&headers);
    };
    let lang = app.lang();
    let field = |name: &str| {
        params
            .get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let q = SearchForm {
        number: field("number"),
        supplier: field("supplier"),
        kind: field("kind"),
        from: field("from"),
        to: field("to"),
    };
    let mut notices = Vec::new();
    let mut day = |text: &str| -> Option<String> {
        if text.is_empty() {
            return None;
        }
        match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            Ok(d) => Some(d.to_string()),
            Err(_) => {
                notices.push(Notice::error(match lang {
                    Language::De => format!("{text:?} ist kein Datum (JJJJ-MM-TT)."),
                    Language::En => format!("{text:?} is not a date (YYYY-MM-DD)."),
                }));
                None
            }
        }
    };
    let query = DocumentQuery {
        number: Some(q.number.clone()).filter(|n| !n.is_empty()),
        supplier: Some(q.supplier.clone()).filter(|s| !s.is_empty()),
        kind: Some(q.kind.clone()).filter(|k| k == "delivery_note" || k == "order"),
        from: day(&q.from),
        to: day(&q.to),
        limit: PAGE_ROWS + 1,
    };
    let found = app
        .control
        .store()
        .call(move |s| Ok((s.find_documents(&query)?, s.document_suppliers()?)))
        .await;
    let (mut found, suppliers) = match found {
        Ok(found) => found,
        Err(e) => return app.store_failed(&session, e).await,
    };
    let more = (found.len() > PAGE_ROWS).then(|| match lang {
        Language::De => format!("Die neuesten {PAGE_ROWS} Treffer; die Suche eingrenzen."),
        Language::En => format!("The newest {PAGE_ROWS} matches; narrow the search."),
    });
    found.truncate(PAGE_ROWS);
    let rows = found
        .into_iter()
        .map(|d| DocumentView {
            id: d.id,
            kind: kind_word(app.words(), &d.kind),
            supplier: d.supplier.unwrap_or_else(|| "–".to_owned()),
            date: d
                .date
                .as_deref()
                .map_or_else(String::new, |t| text::day(lang, t)),
            lines: d.lines,
            stored: text::when(lang, &d.stored_at),
            source: d.source,
            superseded: d.superseded_by.is_some(),
            number: d.number,
        })
        .collect();
    let page = DocumentsPage {
        f: app.frame(session.csrf.clone(), "dokumente", notices).await,
        q,
        suppliers,
        rows,
        more,
    };
    html(StatusCode::OK, &page)
}

fn kind_word(w: &Words, kind: &str) -> String {
    match kind {
        "delivery_note" => w.delivery_note.to_owned(),
        "order" => w.order.to_owned(),
        other => other.to_owned(),
    }
}

pub(super) async fn document(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(session) = app.session(&headers) else {
        return to_login(&headers);
    };
    let lang = app.lang();
    let w = app.words();
    let Ok(id) = id.parse::<i64>() else {
        return app.not_found(&session, "/dokumente").await;
    };
    let found = app.control.store().call(move |s| s.document(id)).await;
    let detail = match found {
        Ok(Some(detail)) => detail,
        Ok(None) => {
            return app.not_found(&session, "/dokumente").await;
        }
        Err(e) => return app.store_failed(&session, e).await,
    };
    let text_of = |v: &Option<String>| v.clone().unwrap_or_default();
    let order_refs = detail.json["order_refs"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let lines: Vec<LineView> = detail
        .lines
        .iter()
        .map(|l| LineView {
            line_no: l.line_no.clone(),
            part: text_of(&l.supplier_part_id),
            gtin: text_of(&l.gtin),
            description: text_of(&l.description),
            quantity: text_of(&l.quantity),
            unit: text_of(&l.unit),
            unit_price: text_of(&l.unit_price),
            order_ref: match (&l.order_ref, &l.order_line) {
                (Some(order), Some(line)) => format!("{order} / {line}"),
                (Some(order), None) => order.clone(),
                (None, _) => String::new(),
            },
        })
        .collect();
    let item = &detail.item;
    let d = DetailView {
        item_id: item.id,
        number: detail.row.number.clone(),
        kind: kind_word(w, &detail.row.kind),
        supplier: detail
            .row
            .supplier
            .clone()
            .unwrap_or_else(|| "–".to_owned()),
        date: detail
            .row
            .date
            .as_deref()
            .map_or_else(String::new, |t| text::day(lang, t)),
        order_refs,
        format: detail.row.format.clone(),
        superseded_by: detail.row.superseded_by,
        priced: detail.lines.iter().any(|l| l.unit_price.is_some()),
        lines,
        source: item.source.clone(),
        sender: item.sender.clone(),
        subject: item.subject.clone(),
        message_id: item.message_id.as_ref().map(|m| format!("<{m}>")),
        file: detail.row.file.clone(),
        received: text::when(lang, &item.received_at),
        lies: item.lies_in(),
        sha256: item.sha256.clone(),
    };
    let page = DocumentPage {
        f: app
            .frame(session.csrf.clone(), "dokumente", Vec::new())
            .await,
        d,
    };
    html(StatusCode::OK, &page)
}

/// The original of an item as a download, never shown inline (a supplier's HTML must not
/// run on this page's origin).
pub(super) async fn original(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(session) = app.session(&headers) else {
        return to_login(&headers);
    };
    let Ok(id) = id.parse::<i64>() else {
        return app.not_found(&session, "/").await;
    };
    let found = app
        .control
        .store()
        .call(move |s| Ok((s.item(id)?, s.kept_original(id)?)))
        .await;
    let (item, kept) = match found {
        Ok((Some(item), kept)) => (item, kept),
        Ok((None, _)) => {
            return app.not_found(&session, "/").await;
        }
        Err(e) => return app.store_failed(&session, e).await,
    };
    let bytes = match kept {
        Some(bytes) => Some(bytes),
        None => {
            let (app, item) = (app.clone(), item.clone());
            tokio::task::spawn_blocking(move || from_drop_folder(&app, &item))
                .await
                .ok()
                .flatten()
        }
    };
    let Some(bytes) = bytes else {
        let title = match app.lang() {
            Language::De => "Original nicht verfügbar",
            Language::En => "Original not available",
        };
        let text = match app.lang() {
            Language::De => format!(
                "eingang hat das Original von Posten {id} nicht aufbewahrt. Es liegt in: {}",
                item.lies_in()
            ),
            Language::En => format!(
                "eingang did not keep the original of item {id}. It lies in: {}",
                item.lies_in()
            ),
        };
        return app
            .message(&session, StatusCode::NOT_FOUND, title, text, "/")
            .await;
    };
    let name = download_name(&item);
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"; filename*=UTF-8''{}",
                    ascii_name(&name),
                    percent_encoded(&name)
                ),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// An item's bytes from a drop folder's archive or error folder, when eingang did not keep
/// them: only a regular file (never through a link) whose sha256 is the item's.
fn from_drop_folder(app: &App, item: &LedgerItem) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;

    let placed = item
        .archived
        .as_deref()
        .filter(|_| item.reprocessed_at.is_none())?;
    let source = app
        .control
        .sources()
        .iter()
        .find(|s| s.name() == item.source)?;
    let SourceKind::Dir(dir) = &source.config.kind else {
        return None;
    };
    let (folder, name) = [&dir.archive, &dir.error].into_iter().find_map(|folder| {
        let shown = crate::escape::text(&folder.display().to_string()).into_owned();
        let name = placed.strip_prefix(&shown)?.strip_prefix('/')?;
        Some((folder, crate::escape::unescape(name)?))
    })?;
    if name.is_empty() || name.contains(&b'/') {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(folder.join(std::ffi::OsStr::from_bytes(&name)))
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_ORIGINAL_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_ORIGINAL_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    (hex == item.sha256).then_some(bytes)
}

/// The file name a download gets: the item's file name, else `item-<id>.eml` for a message.
fn download_name(item: &LedgerItem) -> String {
    let name = item
        .file_name
        .as_deref()
        .map(crate::notify::text::one_line)
        .filter(|n| !n.is_empty());
    match name {
        Some(n) => n.rsplit('/').next().unwrap_or(&n).to_owned(),
        None if item.kind == "message" => format!("item-{}.eml", item.id),
        None => format!("item-{}", item.id),
    }
}

/// A name for the plain `filename=` parameter: ASCII letters, digits, `.`, `-`, `_`.
fn ascii_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// RFC 8187 percent-encoding of UTF-8, for `filename*=`.
fn percent_encoded(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) async fn sources(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(session) = app.session(&headers) else {
        return to_login(&headers);
    };
    sources_page(&app, &session, Vec::new(), None).await
}

async fn sources_page(
    app: &App,
    session: &Session,
    notices: Vec<Notice>,
    checked: Option<(String, Vec<CheckView>)>,
) -> Response {
    let lang = app.lang();
    let w = app.words();
    let counts = match app.control.store().call(|s| s.source_counts()).await {
        Ok(counts) => counts,
        Err(e) => return app.store_failed(session, e).await,
    };
    let mut checked = checked;
    let mut rows = Vec::new();
    for source in app.control.sources() {
        let name = source.name().to_owned();
        let (health, strays) = {
            let name = name.clone();
            app.control
                .store()
                .call(move |s| Ok((s.source_health(&name)?, s.strays(&name)?)))
                .await
                .unwrap_or_default()
        };
        let task = app.control.tasks().get(&name);
        let alive = task.as_ref().is_some_and(|t| t.alive);
        let in_flight = counts
            .iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.in_flight);
        let waiting = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || source.waiting_in_inbox())
                .await
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let (up, state) = match (&task, &health.failing_since) {
            (Some(t), _) if !t.alive => (
                false,
                match lang {
                    Language::De => format!(
                        "gestört: die Aufgabe ist seit {} angehalten, eingang startet sie neu",
                        text::when(lang, &crate::store::outbox::stamp(t.since))
                    ),
                    Language::En => format!(
                        "down: its task stopped at {}, eingang restarts it",
                        text::when(lang, &crate::store::outbox::stamp(t.since))
                    ),
                },
            ),
            (_, Some(since)) => (
                false,
                match lang {
                    Language::De => format!("{} seit {}", w.down, text::when(lang, since)),
                    Language::En => format!("{} since {}", w.down, text::when(lang, since)),
                },
            ),
            (_, None) => match &health.up_since {
                Some(since) => (
                    true,
                    match lang {
                        Language::De => format!("{} seit {}", w.up, text::when(lang, since)),
                        Language::En => format!("{} since {}", w.up, text::when(lang, since)),
                    },
                ),
                None => (
                    alive,
                    match lang {
                        Language::De => "noch kein Abruf".to_owned(),
                        Language::En => "no run yet".to_owned(),
                    },
                ),
            },
        };
        let next = match task.as_ref().and_then(|t| t.next.clone()) {
            Some(NextPass::Running) => w.running_now.to_owned(),
            Some(NextPass::At(at)) => text::local(lang, at),
            Some(NextPass::OnNews(limit)) => match lang {
                Language::De => format!(
                    "sobald etwas eingeht, spätestens nach {}",
                    text::span(lang, limit)
                ),
                Language::En => format!(
                    "as soon as something arrives, at the latest after {}",
                    text::span(lang, limit)
                ),
            },
            Some(NextPass::Elsewhere(owner)) => match (lang, owner) {
                (Language::De, Some(owner)) => format!("von einem anderen Dienst ({owner})"),
                (Language::De, None) => "von einem anderen Dienst".to_owned(),
                (Language::En, Some(owner)) => format!("by another daemon ({owner})"),
                (Language::En, None) => "by another daemon".to_owned(),
            },
            None => "–".to_owned(),
        };
        let mut notes: Vec<String> = health.note.iter().cloned().collect();
        notes.extend(strays.into_iter().map(|s| match lang {
            Language::De => format!(
                "liegt im Eingang und wird nicht gelesen: {} ({})",
                s.name, s.why
            ),
            Language::En => format!("lies in the inbox and is not read: {} ({})", s.name, s.why),
        }));
        let checks = match &checked {
            Some((checked_name, _)) if *checked_name == name => {
                checked.take().map(|(_, c)| c).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        rows.push(SourceView {
            slug: slug(&name),
            kind: match source.config.kind {
                SourceKind::Dir(_) => "dir",
                SourceKind::Ftp(_) => "ftp",
                SourceKind::Imap(_) => "imap",
            },
            up,
            state,
            last_ok: health
                .last_ok
                .as_deref()
                .map_or_else(|| w.never.to_owned(), |t| text::when(lang, t)),
            error_plain: health
                .last_error
                .as_deref()
                .and_then(|e| text::explain(lang, e)),
            error: health.last_error,
            pending: in_flight + waiting as i64,
            next,
            notes,
            checks,
            name,
        });
    }
    let handoffs = app
        .control
        .store()
        .call(|s| s.handoff_counts())
        .await
        .unwrap_or_default();
    let connectors = app
        .shared
        .connectors
        .iter()
        .map(|(name, kind)| {
            let counts = handoffs
                .iter()
                .find(|h| h.name == *name)
                .cloned()
                .unwrap_or_default();
            ConnectorView {
                name: name.clone(),
                kind,
                pending: counts.pending,
                delivered: counts.delivered,
                dead: counts.dead,
                error: counts.last_error,
            }
        })
        .collect();
    let page = SourcesPage {
        f: app.frame(session.csrf.clone(), "quellen", notices).await,
        rows,
        connectors,
        daemons: daemon_views(app.control.store(), lang).await,
    };
    html(StatusCode::OK, &page)
}

/// The daemons of a shared store and the sources each works (none on a SQLite store).
async fn daemon_views(
    store: &std::sync::Arc<crate::store::Store>,
    lang: Language,
) -> Vec<DaemonView> {
    let found = store.call(|s| Ok((s.daemons()?, s.source_owners()?))).await;
    let (daemons, owners) = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "http: cannot list the daemons");
            return Vec::new();
        }
    };
    let me = crate::lock::daemon_name();
    daemons
        .into_iter()
        .map(|d| {
            let name = format!("{} {}", d.host, d.pid);
            let mut sources: Vec<&str> = owners
                .iter()
                .filter(|(_, owner)| **owner == name)
                .map(|(source, _)| source.as_str())
                .collect();
            sources.sort_unstable();
            DaemonView {
                since: text::when(lang, &d.since),
                sources: if sources.is_empty() {
                    "–".to_owned()
                } else {
                    sources.join(", ")
                },
                here: name == me,
                name,
            }
        })
        .collect()
}

/// A source name as an element id: letters and digits, everything else `-`.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// "Sync now" (a pass of the source's own task) or "test connection" (`eingang check`'s checks
/// of the source).
pub(super) async fn sources_action(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (session, form) = match app.guard(&headers, &body) {
        Ok(ok) => ok,
        Err(response) => return *response,
    };
    let lang = app.lang();
    let mut notices = Vec::new();
    let mut checked = None;
    if let Some(name) = form.get("sync") {
        let pass = tokio::time::timeout(SYNC_WAIT, app.control.sync(name)).await;
        notices.push(match pass {
            Ok(Ok((report, None))) => Notice::ok(match lang {
                Language::De => format!(
                    "{name}: abgerufen; {} verbucht, {} abgelehnt.",
                    report.imported, report.rejected
                ),
                Language::En => format!(
                    "{name}: synced; {} imported, {} rejected.",
                    report.imported, report.rejected
                ),
            }),
            Ok(Ok((report, Some(error)))) => Notice::error(match lang {
                Language::De => format!(
                    "{name}: Abruf mit Fehler beendet ({} verbucht, {} abgelehnt): {error}",
                    report.imported, report.rejected
                ),
                Language::En => format!(
                    "{name}: the run ended with an error ({} imported, {} rejected): {error}",
                    report.imported, report.rejected
                ),
            }),
            Ok(Err(error)) => Notice::error(format!("{name}: {error}")),
            Err(_) => Notice::ok(match lang {
                Language::De => format!(
                    "{name}: der Abruf läuft noch; das Ergebnis steht nachher hier und unter Fehler."
                ),
                Language::En => format!(
                    "{name}: the run goes on; its result shows here and under Errors afterwards."
                ),
            }),
        });
    } else if let Some(name) = form.get("check") {
        match app.control.sources().iter().find(|s| s.name() == name) {
            None => notices.push(Notice::error(format!(
                "{name}: {}",
                match lang {
                    Language::De => "keine solche Quelle",
                    Language::En => "no such source",
                }
            ))),
            Some(source) => {
                // The same checks as `eingang check`, without creating folders.
                let lines =
                    tokio::time::timeout(CHECK_WAIT, crate::cli::source_checks(source, false))
                        .await
                        .unwrap_or_else(|_| {
                            vec![("connection".to_owned(), Err("no answer in time".to_owned()))]
                        });
                let failed = lines.iter().filter(|(_, r)| r.is_err()).count();
                notices.push(if failed == 0 {
                    Notice::ok(match lang {
                        Language::De => format!("{name}: Verbindung in Ordnung."),
                        Language::En => format!("{name}: the connection works."),
                    })
                } else {
                    Notice::error(match lang {
                        Language::De => format!("{name}: {failed} Prüfung(en) fehlgeschlagen."),
                        Language::En => format!("{name}: {failed} check(s) failed."),
                    })
                });
                let views = lines
                    .into_iter()
                    .map(|(what, result)| match result {
                        Ok(()) => CheckView {
                            ok: true,
                            text: format!("{what}: ok"),
                        },
                        Err(e) => CheckView {
                            ok: false,
                            text: match text::explain(lang, &e) {
                                Some(plain) => format!("{what}: FAILED: {e} — {plain}"),
                                None => format!("{what}: FAILED: {e}"),
                            },
                        },
                    })
                    .collect();
                checked = Some((name.to_owned(), views));
            }
        }
    }
    after_action(
        sources_page(&app, &session, notices, checked).await,
        "/quellen",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_safe_in_both_forms() {
        assert_eq!(ascii_name("Lieferschein März.csv"), "Lieferschein_M_rz.csv");
        assert_eq!(percent_encoded("a b\"ä.csv"), "a%20b%22%C3%A4.csv");
        assert_eq!(ascii_name("x\"; evil=1"), "x___evil_1");
    }

    #[test]
    fn repeated_fields_are_all_kept() {
        let form = Form::parse(b"csrf=abc&id=1&id=2&reprocess_selected=1");
        assert_eq!(form.get("csrf"), Some("abc"));
        assert_eq!(form.all("id").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(form.get("handled"), None);
    }

    #[test]
    fn outside_text_is_escaped_in_the_error_queue() {
        let page = ErrorsPage {
            f: Frame {
                w: text::words(Language::De),
                csrf: "t".into(),
                nav: "fehler",
                notices: vec![Notice::error("<b>x</b>".into())],
                open_failures: 1,
            },
            rows: vec![FailedRow {
                id: 7,
                when: "heute".into(),
                what: "<script>alert(1)</script>".into(),
                source: "drop".into(),
                supplier: "\"acme\"".into(),
                label: "Format unbekannt".into(),
                reason: "<img src=x onerror=alert(1)>".into(),
                lies: "/fehler/a.csv".into(),
            }],
            more: None,
        };
        let body = page.render().unwrap();
        assert!(!body.contains("<script>alert"), "{body}");
        assert!(!body.contains("<img src=x"), "{body}");
        assert!(!body.contains("<b>x</b>"), "{body}");
        assert!(body.contains("&#60;script&#62;"), "{body}");
        assert!(body.contains("id=\"item-7\""), "{body}");
    }
}
