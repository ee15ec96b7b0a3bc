//! `[[connector]]` as written → `ConnectorConfig`, checked: the kinds of document, the
//! mapping, the retry schedule, and per kind the webhook's URL, key, timeout and trust, or the
//! folder and file format. Every problem is reported at once, as for sources.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::mapping::Mapping;
use super::sign::SigningKey;
use crate::schedule::parse_duration;

/// The document kinds a connector takes when `documents` is left out.
pub const ALL_DOCUMENTS: [&str; 2] = ["delivery_note", "order"];
/// Svix's schedule (docs.svix.com/retries): after the first attempt fails, again after 5 s,
/// 5 min, 30 min, 2 h, 5 h, 10 h and 10 h; eight attempts over about 27 hours.
pub const DEFAULT_RETRY: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// Svix counts only an answer within 15 s.
const DEFAULT_TIMEOUT: &str = "15s";

/// One `[[connector]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnector {
    name: Option<String>,
    kind: Option<String>,
    documents: Option<Vec<String>>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(default)]
    defaults: BTreeMap<String, toml::Value>,
    retry: Option<Vec<String>>,
    url: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<String>,
    secret: Option<String>,
    timeout: Option<String>,
    ca_file: Option<String>,
    path: Option<String>,
    format: Option<String>,
    csv_delimiter: Option<String>,
    decimal_comma: Option<bool>,
}

/// One connector, checked.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// The name, as `status`, notices and `eingang connector replay` show it.
    pub name: String,
    /// The document kinds it takes (`delivery_note`, `order`).
    pub documents: Vec<String>,
    /// `fields` and `defaults`.
    pub mapping: Mapping,
    /// The waits after each failed attempt; one attempt more than entries, then dead.
    pub retry: Vec<Duration>,
    /// Where documents go.
    pub kind: ConnectorKind,
}

/// Where a connector hands documents to.
#[derive(Debug, Clone)]
pub enum ConnectorKind {
    /// Signed POSTs to an HTTP endpoint.
    Webhook(WebhookConfig),
    /// One file per document in a folder.
    Dir(DirConfig),
}

/// A webhook endpoint.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The URL (https, or http to a loopback host).
    pub url: String,
    /// The signing key (`whsec_…`).
    pub key: SigningKey,
    /// One attempt, connect to the end of the answer.
    pub timeout: Duration,
    /// An extra trust anchor beside the system roots.
    pub ca_file: Option<PathBuf>,
}

/// The file format of a dir connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// The sent JSON, one document per file.
    Json,
    /// A header row, then one row per document line.
    Csv,
}

/// A folder an ERP imports from.
#[derive(Debug, Clone)]
pub struct DirConfig {
    /// The folder.
    pub path: PathBuf,
    /// `json` or `csv`.
    pub format: FileFormat,
    /// The CSV field delimiter (default `,`).
    pub delimiter: u8,
    /// CSV decimals with a comma (`1,5`), for German ERPs.
    pub decimal_comma: bool,
}

impl ConnectorConfig {
    /// The kind as the config writes it.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ConnectorKind::Webhook(_) => "webhook",
            ConnectorKind::Dir(_) => "dir",
        }
    }
}

/// Checks every `[[connector]]`; problems are prefixed `config: connector[i] "name": `.
pub fn check_all(
    raw: Vec<RawConnector>,
    resolve: &dyn Fn(&str) -> PathBuf,
    problems: &mut Vec<String>,
) -> Vec<ConnectorConfig> {
    let mut names = HashSet::new();
    let mut connectors = Vec::new();
    for (i, connector) in raw.into_iter().enumerate() {
        let label = format!(
            "config: connector[{i}] {:?}",
            connector.name.as_deref().unwrap_or("")
        );
        match check(connector, resolve) {
            Ok(c) => {
                if !names.insert(c.name.clone()) {
                    problems.push(format!("{label}: the name is used twice"));
                }
                connectors.push(c);
            }
            Err(errs) => problems.extend(errs.into_iter().map(|e| format!("{label}: {e}"))),
        }
    }
    connectors
}

fn check(
    raw: RawConnector,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<ConnectorConfig, Vec<String>> {
    let mut problems = Vec::new();
    let name = raw.name.clone().filter(|n| !n.trim().is_empty());
    if name.is_none() {
        problems.push("`name` is required".to_owned());
    }
    let documents = raw
        .documents
        .clone()
        .unwrap_or_else(|| ALL_DOCUMENTS.map(str::to_owned).to_vec());
    for kind in &documents {
        if !ALL_DOCUMENTS.contains(&kind.as_str()) {
            problems.push(format!(
                "documents: unknown kind {kind:?}: use \"delivery_note\" or \"order\""
            ));
        }
    }
    if documents.is_empty() {
        problems.push("documents: name at least one kind, or leave it out for all".to_owned());
    }
    let mapping = Mapping::new(&raw.fields, &raw.defaults).unwrap_or_else(|errs| {
        problems.extend(errs);
        Mapping::default()
    });
    let retry = match &raw.retry {
        None => DEFAULT_RETRY.to_vec(),
        Some(list) => list
            .iter()
            .filter_map(|d| {
                parse_duration(d)
                    .map_err(|e| problems.push(format!("retry: {e}")))
                    .ok()
            })
            .collect(),
    };
    let kind = match raw.kind.as_deref() {
        Some("webhook") => check_webhook(&raw, resolve, &mut problems).map(ConnectorKind::Webhook),
        Some("dir") => check_dir(&raw, resolve, &mut problems).map(ConnectorKind::Dir),
        Some(other) => {
            problems.push(format!("unknown kind {other:?}: use webhook or dir"));
            None
        }
        None => {
            problems.push("`kind` is required: webhook or dir".to_owned());
            None
        }
    };
    match (name, kind) {
        (Some(name), Some(kind)) if problems.is_empty() => Ok(ConnectorConfig {
            name,
            documents,
            mapping,
            retry,
            kind,
        }),
        _ => Err(problems),
    }
}

fn refuse(keys: &[(&str, bool)], kind: &str, problems: &mut Vec<String>) {
    for (key, _) in keys.iter().filter(|(_, set)| *set) {
        problems.push(format!("`{key}` does not apply to a {kind} connector"));
    }
}

fn check_webhook(
    raw: &RawConnector,
    resolve: &dyn Fn(&str) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<WebhookConfig> {
    refuse(
        &[
            ("path", raw.path.is_some()),
            ("format", raw.format.is_some()),
            ("csv_delimiter", raw.csv_delimiter.is_some()),
            ("decimal_comma", raw.decimal_comma.is_some()),
        ],
        "webhook",
        problems,
    );
    let url = match raw.url.as_deref() {
        None => {
            problems.push("`url` is required for a webhook connector".to_owned());
            None
        }
        Some(url) => match crate::config::check_url(url) {
            Ok(()) => Some(url.to_owned()),
            Err(e) => {
                problems.push(format!("url {:?}: {e}", super::webhook::shown(url)));
                None
            }
        },
    };
    let key = crate::config::read_secret(
        "secret",
        &raw.secret_env,
        &raw.secret_file,
        &raw.secret,
        resolve,
    )
    .and_then(|s| SigningKey::parse(s.expose()))
    .map_err(|e| problems.push(e))
    .ok();
    let timeout = parse_duration(raw.timeout.as_deref().unwrap_or(DEFAULT_TIMEOUT))
        .map_err(|e| problems.push(format!("timeout: {e}")))
        .ok();
    let ca_file = raw.ca_file.as_deref().map(resolve);
    if let Some(ca) = ca_file.as_ref().filter(|ca| !ca.is_file()) {
        problems.push(format!("ca_file {}: no such file", ca.display()));
    }
    Some(WebhookConfig {
        url: url?,
        key: key?,
        timeout: timeout?,
        ca_file,
    })
}

fn check_dir(
    raw: &RawConnector,
    resolve: &dyn Fn(&str) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<DirConfig> {
    refuse(
        &[
            ("url", raw.url.is_some()),
            ("secret_env", raw.secret_env.is_some()),
            ("secret_file", raw.secret_file.is_some()),
            ("secret", raw.secret.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("ca_file", raw.ca_file.is_some()),
        ],
        "dir",
        problems,
    );
    let format = match raw.format.as_deref().unwrap_or("json") {
        "json" => FileFormat::Json,
        "csv" => FileFormat::Csv,
        other => {
            problems.push(format!("unknown format {other:?}: use json or csv"));
            FileFormat::Json
        }
    };
    if format == FileFormat::Json {
        for (key, set) in [
            ("csv_delimiter", raw.csv_delimiter.is_some()),
            ("decimal_comma", raw.decimal_comma.is_some()),
        ] {
            if set {
                problems.push(format!(
                    "`{key}` applies to format = \"csv\" (JSON keeps its numbers canonical)"
                ));
            }
        }
    }
    let delimiter = match raw.csv_delimiter.as_deref().unwrap_or(",") {
        "\\t" | "\t" => b'\t',
        d if d.len() == 1 && !matches!(d, "\"" | "\r" | "\n") => d.as_bytes()[0],
        other => {
            problems.push(format!(
                "csv_delimiter {other:?}: use one character such as \";\", \",\" or \"\\t\""
            ));
            b','
        }
    };
    let decimal_comma = raw.decimal_comma.unwrap_or(false);
    if decimal_comma && delimiter == b',' {
        problems.push(
            "decimal_comma needs another csv_delimiter than \",\" (German ERPs take \";\")"
                .to_owned(),
        );
    }
    let path = match raw.path.as_deref() {
        Some(p) => resolve(p),
        None => {
            problems.push("`path` (the folder the ERP imports from) is required".to_owned());
            return None;
        }
    };
    Some(DirConfig {
        path,
        format,
        delimiter,
        decimal_comma,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Result<Vec<ConnectorConfig>, String> {
        #[derive(Deserialize)]
        struct Doc {
            connector: Vec<RawConnector>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        let resolve = |p: &str| Path::new("/etc/eingang").join(p);
        let c = check_all(doc.connector, &resolve, &mut problems);
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(problems.join("\n"))
        }
    }

    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_webhook_takes_every_kind_on_the_svix_schedule_by_default() {
        let c = load(&format!(
            "[[connector]]\nname = \"erp\"\nkind = \"webhook\"\nurl = \"https://erp.example.com/in\"\nsecret = \"{KEY}\"\n"
        ))
        .unwrap();
        assert_eq!(c[0].documents, ["delivery_note", "order"]);
        assert_eq!(c[0].retry.len(), 7);
        let ConnectorKind::Webhook(w) = &c[0].kind else {
            panic!("a webhook");
        };
        assert_eq!(w.timeout, Duration::from_secs(15));
        assert!(!format!("{c:?}").contains("MfKQ"), "Debug shows no key");
    }

    #[test]
    fn connector_mistakes_are_all_reported_without_the_secret() {
        let errs = load(
            "[[connector]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://erp.example.com/in?token=s3cret\"\n\
             secret = \"whsec_tooshort\"\ndocuments = [\"invoice\"]\npath = \"x\"\n\
             [[connector]]\nname = \"b\"\nkind = \"dir\"\nformat = \"csv\"\ndecimal_comma = true\nretry = [\"soon\"]\n\
             [[connector]]\nname = \"b\"\nkind = \"ftp\"\n",
        )
        .unwrap_err();
        for expected in [
            "connector[0] \"a\": url \"http://erp.example.com/in\": plain http is allowed only to loopback hosts",
            "connector[0] \"a\": the secret holds 6 bytes; a Standard Webhooks key holds 24 to 64",
            "connector[0] \"a\": documents: unknown kind \"invoice\"",
            "connector[0] \"a\": `path` does not apply to a webhook connector",
            "connector[1] \"b\": decimal_comma needs another csv_delimiter",
            "connector[1] \"b\": `path` (the folder the ERP imports from) is required",
            "connector[1] \"b\": retry: ",
            "connector[2] \"b\": unknown kind \"ftp\"",
        ] {
            assert!(errs.contains(expected), "{expected:?} missing in\n{errs}");
        }
        assert!(!errs.contains("s3cret"), "{errs}");
        assert!(!errs.contains("tooshort"), "{errs}");
    }

    #[test]
    fn a_csv_dir_for_german_erps() {
        let c = load(
            "[[connector]]\nname = \"f\"\nkind = \"dir\"\npath = \"export\"\nformat = \"csv\"\n\
             csv_delimiter = \";\"\ndecimal_comma = true\ndocuments = [\"delivery_note\"]\n",
        )
        .unwrap();
        let ConnectorKind::Dir(d) = &c[0].kind else {
            panic!("a dir");
        };
        assert_eq!(d.path, Path::new("/etc/eingang/export"));
        assert_eq!(
            (d.format, d.delimiter, d.decimal_comma),
            (FileFormat::Csv, b';', true)
        );
    }
}
