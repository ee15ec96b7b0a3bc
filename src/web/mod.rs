//! The admin's web page (`[http]`), served by `eingang run` as one more supervised task: the
//! error queue (`/fehler`), the stored documents (`/dokumente`), the sources (`/quellen`),
//! plus `/healthz`, `/readyz` and `/metrics` for monitoring.
//!
//! Every action runs the code the commands run, through the daemon's `Control`: reprocess is
//! `source::reprocess`, "sync now" is a pass of the source's own task, "test connection" is
//! `cli::source_checks`. The page never moves an item or writes the ledger itself.
//!
//! Who may act is `auth`: one admin password, server-side sessions, a login rate limit, and
//! on every POST a same-origin check plus the session's CSRF token. Outside text reaches the
//! HTML only through askama's escaping; htmx is served from the binary (no CDN).

pub mod auth;
mod pages;
pub mod settings;
pub mod text;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::config::Config;
use crate::daemon::Control;
use crate::notify::text::Language;
use crate::stop::Stop;

/// htmx 2.0.11 (`npm pack htmx.org@2.0.11`, `dist/htmx.min.js`, 0BSD licence), served by
/// eingang itself.
const HTMX: &[u8] = include_bytes!("../../static/htmx.min.js");
const CSS: &[u8] = include_bytes!("../../static/eingang.css");
/// A form or query larger than this is refused (the page's forms are a few hundred bytes).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long `/readyz` waits for the store to open.
const PROBE_LIMIT: Duration = Duration::from_secs(3);
/// Every page answer forbids framing, sniffing, caching and any script or style not ours.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The bound listener and what the page keeps across restarts of its task (sessions, the
/// login limiter, the metrics recorder).
pub struct Web {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    hash: Option<String>,
    /// The configured connectors: name and kind.
    connectors: Vec<(String, &'static str)>,
    lang: Language,
    store_path: crate::store::Location,
    sessions: auth::Sessions,
    limiter: auth::Limiter,
    recorder: PrometheusRecorder,
}

/// What every handler gets.
#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    control: Control,
}

impl Web {
    /// Binds `[http] listen`, if `[http]` is set. Binding before the daemon starts makes a
    /// taken port a start-up error, not a task that keeps dying.
    pub fn bind(config: &Config) -> Result<Option<Web>, String> {
        let Some(http) = &config.http else {
            return Ok(None);
        };
        let listener = crate::daemon::listen("http", http.listen)?;
        let lang = config
            .notify
            .as_ref()
            .map_or(Language::De, |n| Language::of(&n.language));
        Ok(Some(Web {
            listener,
            shared: Arc::new(Shared {
                hash: http.admin_password_hash.clone(),
                connectors: config
                    .connectors
                    .iter()
                    .map(|c| (c.name.clone(), c.kind_name()))
                    .collect(),
                lang,
                store_path: config.store.clone(),
                sessions: auth::Sessions::default(),
                limiter: auth::Limiter::default(),
                recorder: PrometheusBuilder::new().build_recorder(),
            }),
        }))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop`; requests in hand are finished first.
    pub async fn serve(&self, control: Control, stop: Stop) {
        let listener = match self
            .listener
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std)
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "http: cannot use the listener");
                stop.wait().await;
                return;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin page listening");
        }
        let app = router(App {
            shared: self.shared.clone(),
            control,
        });
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.wait().await })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "http: the listener failed");
        }
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(|| async { see_other("/fehler") }))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/fehler", get(pages::errors).post(pages::errors_action))
        .route("/dokumente", get(pages::documents))
        .route("/dokumente/{id}", get(pages::document))
        .route("/original/{id}", get(pages::original))
        .route("/quellen", get(pages::sources).post(pages::sources_action))
        .route("/healthz", get(|| async { plain(StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/static/htmx.min.js",
            get(|| async { asset(HTMX, "text/javascript") }),
        )
        .route(
            "/static/eingang.css",
            get(|| async { asset(CSS, "text/css") }),
        )
        .fallback(pages::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(harden))
        .with_state(app)
}

/// The headers every answer carries.
async fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn asset(bytes: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        bytes,
    )
        .into_response()
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into(),
    )
        .into_response()
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// 200 when the store opens and every source task (and the cXML receiver's) runs; else 503,
/// saying what is wrong.
async fn readyz(State(app): State<App>) -> Response {
    let mut problems = Vec::new();
    let path = app.shared.store_path.clone();
    let probe = tokio::time::timeout(
        PROBE_LIMIT,
        tokio::task::spawn_blocking(move || crate::store::ledger::probe(&path)),
    )
    .await;
    match probe {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => problems.push(format!("store: {e}")),
        Ok(Err(e)) => problems.push(format!("store: {e}")),
        Err(_) => problems.push("store: no answer within 3 s".to_owned()),
    }
    for source in app.control.sources() {
        if !app
            .control
            .tasks()
            .get(source.name())
            .is_some_and(|h| h.alive)
        {
            problems.push(format!(
                "source {}: its task is not running",
                crate::escape::text(source.name())
            ));
        }
    }
    if app.control.tasks().get("cxml").is_some_and(|h| !h.alive) {
        problems.push("cxml receiver: its task is not running".to_owned());
    }
    if problems.is_empty() {
        plain(StatusCode::OK, "ready\n")
    } else {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", problems.join("\n")),
        )
    }
}

/// The Prometheus text: the ledger's counts, each source's health, the outbox.
async fn metrics(State(app): State<App>) -> Response {
    let store = app.control.store().clone();
    let facts = store
        .call(|s| {
            Ok((
                s.outcome_counts()?,
                s.source_counts()?,
                s.pending_notifications()?,
            ))
        })
        .await;
    let (outcomes, counts, outbox) = match facts {
        Ok(facts) => facts,
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    };
    let mut health = Vec::new();
    for source in app.control.sources() {
        let name = source.name().to_owned();
        let recorded = {
            let name = name.clone();
            store.call(move |s| s.source_health(&name)).await
        };
        health.push((name, recorded.unwrap_or_default()));
    }
    let shared = app.shared.clone();
    metrics::with_local_recorder(&shared.recorder, || {
        metrics::describe_counter!(
            "eingang_items_total",
            "Items the ledger holds, by source and outcome (imported, rejected)"
        );
        metrics::describe_gauge!(
            "eingang_items_failed",
            "Failed items lying in the error folder, not reprocessed nor handled by hand"
        );
        metrics::describe_gauge!(
            "eingang_source_up",
            "1 while the source's task runs and its last pass succeeded"
        );
        metrics::describe_gauge!(
            "eingang_source_last_success_timestamp_seconds",
            "When the source's last pass succeeded (Unix time)"
        );
        metrics::describe_gauge!("eingang_outbox_pending", "Notices waiting to be sent");
        for (source, _) in &health {
            for outcome in ["imported", "rejected"] {
                let n = outcomes
                    .iter()
                    .find(|c| &c.source == source && c.outcome == outcome)
                    .map_or(0, |c| c.count);
                metrics::counter!("eingang_items_total", "source" => source.clone(), "outcome" => outcome)
                    .absolute(u64::try_from(n).unwrap_or(0));
            }
        }
        for c in &counts {
            metrics::gauge!("eingang_items_failed", "source" => c.name.clone())
                .set(c.failed as f64);
        }
        for (source, h) in &health {
            let alive = app.control.tasks().get(source).is_some_and(|t| t.alive);
            let up = alive && h.failing_since.is_none() && h.last_ok.is_some();
            metrics::gauge!("eingang_source_up", "source" => source.clone()).set(if up {
                1.0
            } else {
                0.0
            });
            if let Some(at) = h
                .last_ok
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                metrics::gauge!("eingang_source_last_success_timestamp_seconds", "source" => source.clone())
                    .set(at.timestamp_millis() as f64 / 1000.0);
            }
        }
        metrics::gauge!("eingang_outbox_pending").set(outbox as f64);
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.recorder.handle().render(),
    )
        .into_response()
}

/// Whether the request came from htmx (it swaps the answer in, and follows `HX-Redirect`).
fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}
