//! The cXML receiver of `[cxml]`: procurement systems POST their OrderRequests here and get a
//! synchronous cXML Status back (CONTRACT.md, HTTP); a PunchOut cart comes back to
//! `/cxml/punchout` as a browser's form POST. It runs under the daemon's supervisor as one
//! more task, on a listener bound before the daemon starts.
//!
//! One request, in the order the promises rest on:
//!
//! 1. the body, within its size limit (a `Content-Length` over it is refused before any of it
//!    is read) and its deadline; the headers had theirs, and the TLS handshake too;
//! 2. the document (`envelope`): well-formed cXML, no entity ever resolved, else 406;
//! 3. the sender (`auth`): the Header's Sender credential and SharedSecret against every
//!    `[[cxml.partner]]` in constant time, else 401, the same for an unknown partner and a
//!    wrong secret; only then does anything reach the store or a log line with its name;
//! 4. the request type: `ProfileRequest` is answered with the transactions taken, anything
//!    but an OrderRequest or ShipNoticeRequest (a PunchOutOrderMessage on `/cxml/punchout`)
//!    gets 450;
//! 5. the payloadID: a repeated one gets the first answer again, rebuilt from the ledger
//!    (`store::receiver`); the same payloadID of one partner is handled one at a time;
//! 6. the intake, like every item: ledger, parse, validate, commit (documents, the outcome,
//!    the notice of a rejection, the connectors' hand-off rows) in one transaction. The
//!    requests of many connections are committed together (`commit_batches`), so one fsync
//!    serves them all; the answer goes out only after that commit, and a store that fails
//!    answers HTTP 500, for the buyer to retry with the same payloadID;
//! 7. the item's place is recorded at once: there is nothing to move.
//!
//! Each connection is its own task; the number of them is capped (more are answered 503 and
//! closed), so no client, slow or flooding, holds up the others. The partner's SharedSecret
//! is blanked out of the stored original.

pub mod answer;
pub mod auth;
pub mod envelope;
pub mod punchout;
pub mod settings;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::intake::Intake;
use crate::item::{Item, ItemKind, Origin};
use crate::stop::Stop;
use crate::store::Place;
use answer::Answer;
use envelope::Body;
use settings::{CxmlConfig, Partner};

/// Requests committed in one transaction at most.
const MAX_BATCH: usize = 64;
/// Requests waiting for their commit; more wait for a place in the queue.
const QUEUE: usize = 1024;
/// Connections over the limit that are still told so (503) at once; beyond, they are closed.
const MAX_REFUSALS: usize = 64;
/// The read buffer of a connection, and so the largest request head (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long connections get to finish the request in hand after a stop.
const DRAIN: Duration = Duration::from_secs(30);
/// How long an over-the-limit connection gets to send its request head before it is closed.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// A payloadID longer than this is not one (the recommended form is about 60 characters).
const MAX_PAYLOAD_ID_CHARS: usize = 250;

/// The bound listener and its settings.
pub struct Receiver {
    listener: std::net::TcpListener,
    config: CxmlConfig,
    max_xml_depth: usize,
}

impl Receiver {
    /// Binds `[cxml] listen`, if `[cxml]` is set. Binding before the daemon starts makes a
    /// taken port a start-up error (exit 2), not a task that keeps dying.
    pub fn bind(config: &Config) -> Result<Option<Receiver>, String> {
        let Some(cxml) = &config.cxml else {
            return Ok(None);
        };
        let bound = crate::daemon::listen("cxml", cxml.listen)?;
        Ok(Some(Receiver {
            listener: bound,
            config: cxml.clone(),
            max_xml_depth: config.max_xml_depth,
        }))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop`; the requests in hand are answered first.
    pub async fn serve(&self, intake: &Intake, stop: Stop) {
        let listener = match self
            .listener
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std)
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cxml: cannot use the listener");
                stop.wait().await;
                return;
            }
        };
        let (commits, queue) = mpsc::channel(QUEUE);
        let committer = tokio::spawn(commit_batches(intake.clone(), queue));
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            tls: self.config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            max_xml_depth: self.max_xml_depth,
            intake: intake.clone(),
            commits,
            turns: std::sync::Mutex::new(HashMap::new()),
        });
        let addr = listener.local_addr().ok();
        tracing::info!(addr = ?addr, tls = shared.tls.is_some(), partners = shared.config.partners.len(), "cxml receiver listening");
        let served = Arc::new(Semaphore::new(self.config.max_connections));
        let refused = Arc::new(Semaphore::new(MAX_REFUSALS));
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = stop.wait() => break,
                Some(_) = connections.join_next() => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        let _ = tcp.set_nodelay(true);
                        let (shared, stop) = (shared.clone(), stop.clone());
                        if let Ok(permit) = served.clone().try_acquire_owned() {
                            connections.spawn(async move {
                                connection(tcp, &shared, stop, false).await;
                                drop(permit);
                            });
                        } else if let Ok(permit) = refused.clone().try_acquire_owned() {
                            tracing::warn!(limit = shared.config.max_connections, "cxml: too many connections; answering 503");
                            connections.spawn(async move {
                                connection(tcp, &shared, stop, true).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before accept.
                        tracing::warn!(error = %e, "cxml: accept failed");
                        if stop.sleep(Duration::from_millis(100)).await {
                            break;
                        }
                    }
                },
            }
        }
        while connections.join_next().await.is_some() {}
        drop(shared);
        let _ = committer.await;
    }
}

/// What every connection shares.
struct Shared {
    config: CxmlConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_xml_depth: usize,
    intake: Intake,
    commits: mpsc::Sender<Commit>,
    /// One lock per payloadID in hand: a retry that overtakes its first attempt waits for it.
    turns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The right to handle one payloadID now; the others wait until it is dropped.
struct Turn<'a> {
    shared: &'a Shared,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Shared {
    async fn turn(&self, key: &str) -> Turn<'_> {
        let lock = {
            let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
            turns.entry(key.to_owned()).or_default().clone()
        };
        Turn {
            shared: self,
            key: key.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.shared.turns.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it now: nobody waits for this payloadID.
        if turns
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            turns.remove(&self.key);
        }
    }
}

/// One connection: TLS (within the header deadline), then HTTP/1.1 requests until the client
/// closes, a deadline passes or the daemon stops. `busy`: over the limit, every request is
/// answered 503 and the connection closed.
async fn connection(tcp: tokio::net::TcpStream, shared: &Arc<Shared>, stop: Stop, busy: bool) {
    let deadline = if busy {
        REFUSAL_TIMEOUT
    } else {
        shared.config.header_timeout
    };
    match &shared.tls {
        Some(acceptor) => match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => serve_http(TokioIo::new(tls), shared, stop, busy).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "cxml: TLS handshake failed"),
            Err(_) => tracing::debug!("cxml: TLS handshake not done within the header deadline"),
        },
        None => serve_http(TokioIo::new(tcp), shared, stop, busy).await,
    }
}

async fn serve_http<I>(io: I, shared: &Arc<Shared>, stop: Stop, busy: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let for_service = shared.clone();
    let service = service_fn(move |request| {
        let shared = for_service.clone();
        async move {
            Ok::<_, Infallible>(if busy {
                render(
                    Reply::Answer(Answer::refusal(
                        503,
                        "too many connections; try again shortly",
                    )),
                    false,
                )
            } else {
                handle(request, &shared).await
            })
        }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(if busy {
            REFUSAL_TIMEOUT
        } else {
            shared.config.header_timeout
        })
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(!busy);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cxml: connection ended");
            }
        }
        () = stop.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn).await;
        }
    }
}

/// Which endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `POST /cxml`: a cXML request document.
    Request,
    /// `POST /cxml/punchout`: a cart as an HTML form.
    Punchout,
}

/// What a request is answered with.
enum Reply {
    Answer(Answer),
    /// A whole cXML document (the ProfileResponse).
    Document(String),
}

async fn handle(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let route = match request.uri().path() {
        "/cxml" => Route::Request,
        "/cxml/punchout" => Route::Punchout,
        _ => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    if request.method() != Method::POST {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "this address takes POST only\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let html = route == Route::Punchout && wants_html(request.headers());
    render(receive(request, route, shared).await, html)
}

async fn receive(request: Request<Incoming>, route: Route, shared: &Shared) -> Reply {
    let limits = &shared.config;
    let headers = request.headers().clone();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_request_bytes) {
        return Reply::Answer(too_large(limits.max_request_bytes));
    }
    let max = usize::try_from(limits.max_request_bytes).unwrap_or(usize::MAX);
    let body = Limited::new(request.into_body(), max).collect();
    let body = match tokio::time::timeout(limits.body_timeout, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Reply::Answer(too_large(limits.max_request_bytes));
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cxml: the body broke off");
            return Reply::Answer(Answer::refusal(400, "the body broke off"));
        }
        Err(_) => {
            return Reply::Answer(Answer::refusal(
                408,
                format!(
                    "the body did not arrive within {} s",
                    limits.body_timeout.as_secs()
                ),
            ));
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let document = match route {
        Route::Request if is_media_type(content_type, &["text/xml", "application/xml"]) => {
            body.to_vec()
        }
        Route::Request => {
            return Reply::Answer(Answer::status(
                406,
                "a cXML request is sent as text/xml (or application/xml)",
            ));
        }
        Route::Punchout if is_media_type(content_type, &["application/x-www-form-urlencoded"]) => {
            match punchout::cart(&body) {
                Ok(document) => document,
                Err(why) => return Reply::Answer(Answer::status(406, why)),
            }
        }
        Route::Punchout => {
            return Reply::Answer(Answer::status(
                406,
                "a PunchOut cart is sent as an HTML form (application/x-www-form-urlencoded) with the field cxml-urlencoded or cxml-base64",
            ));
        }
    };
    let depth = shared.max_xml_depth;
    let read = tokio::task::spawn_blocking(move || envelope::read(&document, depth)).await;
    let envelope = match read {
        Ok(Ok(envelope)) => envelope,
        Ok(Err(why)) => return Reply::Answer(Answer::status(406, why)),
        Err(e) => {
            tracing::error!(error = %e, "cxml: reading a request failed");
            return Reply::Answer(Answer::status(406, "the document could not be read"));
        }
    };
    let (credentials, secret) = match route {
        Route::Request => (envelope.sender.clone(), auth::Secret::Required),
        // A shop that writes no Sender is known by its From.
        Route::Punchout if envelope.sender.is_empty() => {
            (envelope.from.clone(), auth::Secret::IfPresent)
        }
        Route::Punchout => (envelope.sender.clone(), auth::Secret::IfPresent),
    };
    let Some(partner) = auth::partner(&limits.partners, &credentials, secret) else {
        let claimed = credentials.first().map_or_else(
            || "(none)".to_owned(),
            |c| format!("{}/{}", c.domain, c.identity),
        );
        tracing::warn!(credential = %crate::escape::text(&claimed), "cxml: unknown sender or wrong shared secret; answered 401");
        return Reply::Answer(Answer::status(
            401,
            "unknown sender or wrong SharedSecret (Header/Sender/Credential)",
        ));
    };
    match (route, &envelope.body) {
        (Route::Request, Body::Request(name)) if name == "ProfileRequest" => {
            return Reply::Document(answer::profile(&profile_url(&headers, shared)));
        }
        (Route::Request, Body::Request(name))
            if name == "OrderRequest" || name == "ShipNoticeRequest" => {}
        (Route::Punchout, Body::Message(name)) if name == "PunchOutOrderMessage" => {}
        (route, body) => {
            let takes = match route {
                Route::Request => "OrderRequest, ShipNoticeRequest and ProfileRequest",
                Route::Punchout => "PunchOutOrderMessage",
            };
            return Reply::Answer(Answer::status(
                450,
                format!(
                    "eingang does not take {} here: it takes {takes}",
                    body.name()
                ),
            ));
        }
    }
    let payload_id = match envelope.payload_id.as_deref() {
        None => {
            return Reply::Answer(Answer::status(400, "the cXML element has no payloadID"));
        }
        Some(id)
            if id.chars().count() > MAX_PAYLOAD_ID_CHARS || id.chars().any(char::is_control) =>
        {
            return Reply::Answer(Answer::status(
                400,
                format!(
                    "the payloadID is not one: longer than {MAX_PAYLOAD_ID_CHARS} characters or with control characters"
                ),
            ));
        }
        Some(id) => id.to_owned(),
    };
    Reply::Answer(take(shared, partner, &payload_id, envelope.redacted).await)
}

/// Hands an authenticated document to the intake, or answers a repeated payloadID as the
/// first time.
async fn take(shared: &Shared, partner: &Partner, payload_id: &str, text: String) -> Answer {
    let source = partner.source();
    let location = format!("{source}:{payload_id}");
    let _turn = shared.turn(&location).await;
    let known = {
        let (source, location) = (source.clone(), location.clone());
        shared
            .intake
            .store()
            .call(move |store| store.answered(&source, &location))
            .await
    };
    match known {
        Ok(Some(first)) => {
            let answer = Answer::for_outcome(
                first.item_id,
                first.label.as_deref(),
                first.reason.as_deref(),
            );
            tracing::info!(partner = %partner.name, payload_id = %crate::escape::text(payload_id), code = answer.code, item = first.item_id, "cxml: payloadID seen before; the first answer again");
            return answer;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(partner = %partner.name, error = %e, "cxml: the store cannot be read; answered 500");
            return Answer::transient(TRANSIENT);
        }
    }
    let item = Item::new(
        text.into_bytes(),
        ItemKind::File,
        Origin {
            source,
            location,
            file_name: None,
        },
    )
    .with_sender(partner.name.clone());
    let (reply, answered) = oneshot::channel();
    if shared.commits.send(Commit { item, reply }).await.is_err() {
        return Answer::transient("eingang is stopping; send it again with the same payloadID");
    }
    let answer = answered
        .await
        .unwrap_or_else(|_| Answer::transient(TRANSIENT));
    tracing::info!(partner = %partner.name, payload_id = %crate::escape::text(payload_id), code = answer.code, "cxml: request answered");
    answer
}

const TRANSIENT: &str =
    "eingang cannot store the document now; send it again later with the same payloadID";

/// A document to commit, and where its answer goes.
struct Commit {
    item: Item,
    reply: oneshot::Sender<Answer>,
}

/// Commits what the connections hand over, as many at a time as are waiting (up to
/// `MAX_BATCH`): one transaction, one fsync for all of them. Ends when every connection is
/// gone.
async fn commit_batches(intake: Intake, mut queue: mpsc::Receiver<Commit>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (items, replies): (Vec<Item>, Vec<oneshot::Sender<Answer>>) =
            batch.into_iter().map(|c| (c.item, c.reply)).unzip();
        for (reply, answer) in replies.into_iter().zip(commit(&intake, items).await) {
            let _ = reply.send(answer);
        }
    }
}

/// One batch through the intake; an answer per item, in order.
async fn commit(intake: &Intake, items: Vec<Item>) -> Vec<Answer> {
    let n = items.len();
    let outcomes = match intake.accept(items, None).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::error!(error = %e, items = n, "cxml: the store failed; answered 500");
            return vec![Answer::transient(TRANSIENT); n];
        }
    };
    let ids: Vec<i64> = outcomes.iter().map(|o| o.item_id()).collect();
    let decided = {
        let ids = ids.clone();
        intake.store().call(move |store| store.answers(&ids)).await
    };
    let decided = match decided {
        Ok(decided) => decided,
        Err(e) => {
            // Committed, but the answer cannot be read back: the retry will find it.
            tracing::error!(error = %e, items = n, "cxml: committed, but the outcome cannot be read back; answered 500");
            return vec![Answer::transient(TRANSIENT); n];
        }
    };
    let mut answers = Vec::with_capacity(n);
    let mut places = Vec::with_capacity(n);
    for id in ids {
        let answer = match decided.iter().find(|d| d.item_id == id) {
            Some(d) => {
                let answer = Answer::for_outcome(id, d.label.as_deref(), d.reason.as_deref());
                places.push((
                    id,
                    Place::at(format!(
                        "cXML receiver: answered {} {}",
                        answer.code, answer.text
                    )),
                ));
                answer
            }
            // Not decided (held back by the intake): the buyer tries again.
            None => Answer::transient(TRANSIENT),
        };
        answers.push(answer);
    }
    if let Err(e) = intake.placed(places).await {
        // The outcomes stand; a place not recorded only keeps the items listed as pending.
        tracing::warn!(error = %e, "cxml: cannot record the items' place");
    }
    answers
}

fn too_large(max: u64) -> Answer {
    Answer::refusal(
        413,
        format!(
            "the request is larger than {} bytes ([cxml] max_request_mib)",
            max
        ),
    )
}

/// Whether a Content-Type header names one of these media types (parameters such as
/// `charset` aside, in any case).
fn is_media_type(value: &str, types: &[&str]) -> bool {
    let media = value.split(';').next().unwrap_or_default().trim();
    types.iter().any(|t| media.eq_ignore_ascii_case(t))
}

/// A browser asks for HTML; a program (a test, a procurement system) gets cXML.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.to_ascii_lowercase().contains("text/html"))
}

/// Where `POST /cxml` is reached, as the ProfileResponse names it: the Host the client used,
/// when it is a plain host name or address, else the listening address.
fn profile_url(headers: &HeaderMap, shared: &Shared) -> String {
    let scheme = if shared.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .map_or_else(|| shared.config.listen.to_string(), str::to_owned);
    format!("{scheme}://{host}/cxml")
}

fn render(reply: Reply, html: bool) -> Response<Full<Bytes>> {
    let (status, content_type, body, close) = match reply {
        Reply::Document(document) => (200, "text/xml; charset=UTF-8", document, false),
        Reply::Answer(answer) if html => {
            let status = match answer.code {
                200 => 200,
                450 => 501,
                code if answer.http == 200 => code,
                _ => answer.http,
            };
            (
                status,
                "text/html; charset=utf-8",
                page(&answer),
                answer.http != 200 && answer.http != 500,
            )
        }
        Reply::Answer(answer) => (
            answer.http,
            "text/xml; charset=UTF-8",
            answer.document(),
            answer.http != 200 && answer.http != 500,
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'"),
    );
    if close {
        // The body may be unread (too large, too slow): the connection cannot go on.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The page the buyer's browser shows after a PunchOut cart came back.
fn page(answer: &Answer) -> String {
    let (title, lead) = if answer.is_success() {
        ("Warenkorb übernommen", "The cart was received.")
    } else {
        ("Warenkorb nicht übernommen", "The cart was not received.")
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"de\"><head><meta charset=\"utf-8\"><title>eingang: {title}</title></head>\
         <body><h1>{title}</h1><p>{lead}</p><p>cXML {} {}: {}</p></body></html>\n",
        answer.code,
        answer::escape(answer.text),
        answer::escape(&answer.detail)
    )
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_matched_without_parameters_and_case() {
        assert!(is_media_type("text/xml", &["text/xml"]));
        assert!(is_media_type("Text/XML; charset=UTF-8", &["text/xml"]));
        assert!(!is_media_type(
            "text/html",
            &["text/xml", "application/xml"]
        ));
        assert!(!is_media_type("", &["text/xml"]));
    }
}
