//! A connector's `fields` and `defaults`: what the ERP gets instead of eingang's own names.
//! Pure: a document's JSON in, the JSON to send out.
//!
//! The path language is small on purpose (RECIPES.md §5, open risks): no templates, nothing
//! that runs. A source path is dotted from the document's top (`number`, `origin.file`,
//! `ship_to.city`, `order_refs.0` for the first entry of a list), or `lines[].<path>` for a
//! field of every line. A target is a field name in the sent JSON, or `lines[].<name>` for a
//! field in every line. A rename moves the value (the old name is gone; a list entry is
//! copied); a missing value arrives as `null`. A default fills a field that is missing or
//! `null` and leaves a value the document has.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The prefix of a path into every line.
const LINES: &str = "lines[].";

/// Where a value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A top-level field of the sent JSON.
    Top(String),
    /// A field in every line.
    Line(String),
}

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A dotted path from the document's top.
    Doc(Vec<String>),
    /// A dotted path from each line.
    Line(Vec<String>),
}

/// A connector's renames and fixed values, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    renames: Vec<(Target, Source)>,
    defaults: Vec<(Target, Value)>,
}

fn target(name: &str) -> Result<Target, String> {
    let (line, field) = match name.strip_prefix(LINES) {
        Some(field) => (true, field),
        None => (false, name),
    };
    if field.trim().is_empty() || field.contains("[]") {
        return Err(format!("{name:?} is not a field name"));
    }
    if !line && (field == "type" || field == "lines") {
        return Err(format!(
            "{name:?}: `{field}` is eingang's own in the sent JSON (the event, the lines)"
        ));
    }
    Ok(if line {
        Target::Line(field.to_owned())
    } else {
        Target::Top(field.to_owned())
    })
}

fn source(path: &str) -> Result<Source, String> {
    let (line, rest) = match path.strip_prefix(LINES) {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    let segments: Vec<String> = rest.split('.').map(str::to_owned).collect();
    if segments
        .iter()
        .any(|s| s.trim().is_empty() || s.contains("[]"))
    {
        return Err(format!(
            "{path:?} is not a path (e.g. \"number\", \"origin.file\", \"lines[].quantity\")"
        ));
    }
    Ok(if line {
        Source::Line(segments)
    } else {
        Source::Doc(segments)
    })
}

impl Mapping {
    /// Checks `fields` (target = source path) and `defaults` (target = value); every problem
    /// is reported.
    pub fn new(
        fields: &BTreeMap<String, String>,
        defaults: &BTreeMap<String, toml::Value>,
    ) -> Result<Mapping, Vec<String>> {
        let mut problems = Vec::new();
        let mut mapping = Mapping::default();
        for (to, from) in fields {
            match (target(to), source(from)) {
                (Ok(Target::Top(_)), Ok(Source::Line(_))) => problems.push(format!(
                    "fields: {to:?} = {from:?}: a line's field goes into every line: name it \"lines[].{to}\""
                )),
                (Ok(t), Ok(s)) => mapping.renames.push((t, s)),
                (t, s) => problems.extend(
                    [t.err(), s.err()]
                        .into_iter()
                        .flatten()
                        .map(|e| format!("fields: {e}")),
                ),
            }
        }
        for (to, value) in defaults {
            match (target(to), serde_json::to_value(value)) {
                (Ok(t), Ok(v)) => mapping.defaults.push((t, v)),
                (Err(e), _) => problems.push(format!("defaults: {e}")),
                (_, Err(e)) => problems.push(format!("defaults: {to:?}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(mapping)
        } else {
            Err(problems)
        }
    }

    /// The document after the renames, then the defaults.
    pub fn apply(&self, document: Value) -> Value {
        let Value::Object(mut doc) = document else {
            return document;
        };
        let line_count = lines(&doc).map_or(0, Vec::len);
        // Read every value first, so that two renames of one field both get it.
        let mut top: Vec<(String, Value)> = Vec::new();
        let mut per_line: Vec<(String, Vec<Value>)> = Vec::new();
        for (to, from) in &self.renames {
            let values: Vec<Value> = match from {
                Source::Doc(path) => {
                    let v = get(&doc, path).cloned().unwrap_or(Value::Null);
                    vec![v; line_count.max(1)]
                }
                Source::Line(path) => lines(&doc)
                    .into_iter()
                    .flatten()
                    .map(|l| match l {
                        Value::Object(l) => get(l, path).cloned().unwrap_or(Value::Null),
                        _ => Value::Null,
                    })
                    .collect(),
            };
            match to {
                Target::Top(name) => top.push((
                    name.clone(),
                    values.into_iter().next().unwrap_or(Value::Null),
                )),
                Target::Line(name) => per_line.push((name.clone(), values)),
            }
        }
        for (_, from) in &self.renames {
            match from {
                Source::Doc(path) => remove(&mut doc, path),
                Source::Line(path) => {
                    for line in lines_mut(&mut doc) {
                        remove(line, path);
                    }
                }
            }
        }
        for (name, value) in top {
            doc.insert(name, value);
        }
        for (name, values) in per_line {
            for (line, value) in lines_mut(&mut doc).into_iter().zip(values) {
                line.insert(name.clone(), value);
            }
        }
        for (to, value) in &self.defaults {
            match to {
                Target::Top(name) => fill(&mut doc, name, value),
                Target::Line(name) => {
                    for line in lines_mut(&mut doc) {
                        fill(line, name, value);
                    }
                }
            }
        }
        Value::Object(doc)
    }

    /// The name a document-level field (a dotted path, as a CSV column names it) is sent
    /// under: the rename's target, `None` when it is renamed into the lines, else its own.
    pub fn column_of(&self, path: &str) -> Option<String> {
        self.renamed(path, false)
    }

    /// The same for a field of a line.
    pub fn line_column_of(&self, path: &str) -> Option<String> {
        self.renamed(path, true)
    }

    fn renamed(&self, path: &str, in_line: bool) -> Option<String> {
        let wanted: Vec<&str> = path.split('.').collect();
        let mut moved = false;
        for (to, from) in &self.renames {
            let (segments, from_line) = match from {
                Source::Doc(s) => (s, false),
                Source::Line(s) => (s, true),
            };
            if from_line != in_line
                || segments
                    .iter()
                    .map(String::as_str)
                    .ne(wanted.iter().copied())
            {
                continue;
            }
            match to {
                Target::Top(name) if !in_line => return Some(name.clone()),
                Target::Line(name) if in_line => return Some(name.clone()),
                _ => moved = true,
            }
        }
        if moved { None } else { Some(path.to_owned()) }
    }
}

fn lines(doc: &Map<String, Value>) -> Option<&Vec<Value>> {
    doc.get("lines").and_then(Value::as_array)
}

fn lines_mut(doc: &mut Map<String, Value>) -> Vec<&mut Map<String, Value>> {
    match doc.get_mut("lines") {
        Some(Value::Array(lines)) => lines.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => Vec::new(),
    }
}

fn get<'a>(map: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut at = map.get(first)?;
    for segment in rest {
        at = match at {
            Value::Object(m) => m.get(segment)?,
            Value::Array(a) => a.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// Removes the field at `path`; an entry of a list stays (a rename copies it).
fn remove(map: &mut Map<String, Value>, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = map;
    for segment in parents {
        match at.get_mut(segment) {
            Some(Value::Object(m)) => at = m,
            _ => return,
        }
    }
    at.remove(last);
}

fn fill(map: &mut Map<String, Value>, name: &str, value: &Value) {
    if map.get(name).is_none_or(Value::is_null) {
        map.insert(name.to_owned(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(fields: &[(&str, &str)], defaults: &str) -> Result<Mapping, Vec<String>> {
        let fields = fields
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let defaults: BTreeMap<String, toml::Value> = toml::from_str(defaults).unwrap();
        Mapping::new(&fields, &defaults)
    }

    fn note() -> Value {
        json!({
            "type": "document.stored", "id": 3, "kind": "delivery_note", "number": "LS-1",
            "supplier": "acme", "order_refs": ["PO-1", "PO-2"],
            "lines": [{"line_no": "1", "quantity": "2"}, {"line_no": "2", "quantity": "1.5"}],
            "origin": {"source": "drop", "file": "LS.xml"}
        })
    }

    #[test]
    fn fields_rename_top_level_nested_and_line_fields() {
        let m = mapping(
            &[
                ("Belegnummer", "number"),
                ("Datei", "origin.file"),
                ("Bestellung", "order_refs.0"),
                ("Fehlt", "ship_to.city"),
                ("lines[].Menge", "lines[].quantity"),
                ("lines[].Beleg", "number"),
            ],
            "",
        )
        .unwrap();
        let out = m.apply(note());
        assert_eq!(out["Belegnummer"], "LS-1");
        assert_eq!(out.get("number"), None, "a rename moves the value");
        assert_eq!(out["Datei"], "LS.xml");
        assert_eq!(out["origin"], json!({"source": "drop"}));
        assert_eq!(out["Bestellung"], "PO-1");
        assert_eq!(
            out["order_refs"],
            json!(["PO-1", "PO-2"]),
            "a list entry is copied"
        );
        assert_eq!(out["Fehlt"], Value::Null);
        assert_eq!(out["lines"][1]["Menge"], "1.5");
        assert_eq!(out["lines"][1].get("quantity"), None);
        assert_eq!(out["lines"][0]["Beleg"], "LS-1");
        assert_eq!(m.column_of("origin.file").as_deref(), Some("Datei"));
        assert_eq!(m.column_of("supplier").as_deref(), Some("supplier"));
        assert_eq!(m.column_of("number").as_deref(), Some("Belegnummer"));
        assert_eq!(m.line_column_of("quantity").as_deref(), Some("Menge"));
    }

    #[test]
    fn defaults_fill_what_is_missing_or_null_and_keep_what_is_there() {
        let m = mapping(
            &[],
            "warehouse = \"HAUPT\"\nsupplier = \"x\"\npriority = 2\n\"lines[].Lager\" = \"L1\"\n",
        )
        .unwrap();
        let mut doc = note();
        doc["supplier"] = Value::Null;
        doc["number"] = json!("LS-1");
        let out = m.apply(doc);
        assert_eq!(out["warehouse"], "HAUPT");
        assert_eq!(out["supplier"], "x", "null is filled");
        assert_eq!(out["priority"], 2);
        assert_eq!(out["lines"][0]["Lager"], "L1");
        let kept = m.apply(note());
        assert_eq!(kept["supplier"], "acme", "a value of the document stays");
    }

    #[test]
    fn bad_names_and_paths_are_all_reported() {
        let errs = mapping(
            &[
                ("type", "number"),
                ("x", "a..b"),
                ("Menge", "lines[].quantity"),
            ],
            "lines = 1\n",
        )
        .unwrap_err()
        .join("\n");
        for expected in [
            "fields: \"type\": `type` is eingang's own",
            "fields: \"a..b\" is not a path",
            "name it \"lines[].Menge\"",
            "defaults: \"lines\": `lines` is eingang's own",
        ] {
            assert!(errs.contains(expected), "{expected:?} missing in\n{errs}");
        }
    }
}
