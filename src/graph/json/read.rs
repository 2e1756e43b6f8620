//! Reading the JSON graph format (see the parent module): graphs, keys, the command line's key
//! arguments, with every error located on the way down.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Number, Value as Json};

use super::{JsonGraphError, MARKERS};
use crate::graph::{Graph, Key, Node};
use crate::value::Value;

/// Parses the text of a graph file. Invalid JSON is an error located by line and column.
pub fn parse_graph(text: &str) -> Result<Graph, JsonGraphError> {
    let json: Json = serde_json::from_str(text).map_err(|e| {
        let position = format!(" at line {} column {}", e.line(), e.column());
        let full = e.to_string();
        JsonGraphError {
            location: format!("line {}, column {}", e.line(), e.column()),
            message: format!(
                "invalid JSON: {}",
                full.strip_suffix(&position).unwrap_or(&full)
            ),
        }
    })?;
    graph_from_json(&json)
}

/// Reads a graph from parsed JSON (see the module documentation for the format).
pub fn graph_from_json(json: &Json) -> Result<Graph, JsonGraphError> {
    let mut graph = Graph::new();
    match json {
        Json::Object(entries) => {
            for (name, value) in entries {
                let key = Key::Str(name.clone());
                let node = node_from_json(value, &Loc::root(Step::Entry(&key)))?;
                graph.insert(key, node);
            }
        }
        Json::Array(pairs) => {
            for (i, pair) in pairs.iter().enumerate() {
                let loc = Loc::root(Step::GraphPair(i + 1));
                let (key, value) = pair_from_json(pair, &loc)?;
                let key = key_at(key, &loc.then(Step::Named("key")))?;
                // A repeated key is most likely a mistake in a generated file: say so rather
                // than silently keep one of the two.
                if graph.contains(&key) {
                    return Err(loc.error(format!("key {key:?} is given twice")));
                }
                let node = node_from_json(value, &Loc::root(Step::Entry(&key)))?;
                graph.insert(key, node);
            }
        }
        other => {
            return Err(Loc::root(Step::Named("graph")).error(format!(
                "expected an object or an array of [key, value] pairs, got {}",
                kind(other)
            )))
        }
    }
    Ok(graph)
}

/// Reads a key: a string, an integer or an array of keys (a tuple key).
pub fn key_from_json(json: &Json) -> Result<Key, JsonGraphError> {
    key_at(json, &Loc::root(Step::Named("key")))
}

/// Reads a literal value (`zask scatter`): nothing in it is a reference, so a string stays
/// a string; the `str`, `bytes` and `map` markers are read as in a graph.
pub fn value_from_json(json: &Json) -> Result<Value, JsonGraphError> {
    literal_from_json(json, &Loc::root(Step::Named("value")))
}

/// Reads a `KEY` argument of the command line: a JSON array such as `["x", 1]` is a tuple key;
/// anything else, including text that merely looks like JSON, is the string key it spells.
pub fn parse_key_arg(arg: &str) -> Key {
    if arg.starts_with('[') {
        if let Some(key) = serde_json::from_str(arg)
            .ok()
            .and_then(|json| key_from_json(&json).ok())
        {
            return key;
        }
    }
    Key::Str(arg.to_owned())
}

/// One step of the path to a JSON value, for error messages. Counts are 1-based.
#[derive(Clone, Copy)]
enum Step<'a> {
    Named(&'static str),
    Entry(&'a Key),
    GraphPair(usize),
    Argument(usize),
    Item(usize),
    KeyPart(usize),
    MapEntry(&'a str),
    MapPair(usize),
}

/// Where a JSON value sits in the file, built on the way down and rendered only on error, so
/// that reading a large valid graph allocates nothing for it.
struct Loc<'a> {
    parent: Option<&'a Loc<'a>>,
    step: Step<'a>,
}

impl<'a> Loc<'a> {
    fn root(step: Step<'a>) -> Loc<'a> {
        Loc { parent: None, step }
    }

    fn then(&'a self, step: Step<'a>) -> Loc<'a> {
        Loc {
            parent: Some(self),
            step,
        }
    }

    fn error(&self, message: impl Into<String>) -> JsonGraphError {
        JsonGraphError {
            location: self.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}: ")?;
        }
        match self.step {
            Step::Named(name) => write!(f, "{name}"),
            Step::Entry(key) => write!(f, "graph entry {key:?}"),
            Step::GraphPair(i) => write!(f, "graph pair {i}"),
            Step::Argument(i) => write!(f, "argument {i}"),
            Step::Item(i) => write!(f, "list item {i}"),
            Step::KeyPart(i) => write!(f, "key part {i}"),
            Step::MapEntry(name) => write!(f, "map entry {name:?}"),
            Step::MapPair(i) => write!(f, "map pair {i}"),
        }
    }
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a float",
        Json::Number(_) => "an integer",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// An integer, which must fit in `i64`, or a float.
fn number(n: &Number, loc: &Loc) -> Result<Value, JsonGraphError> {
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Ok(Value::Int(i)),
        (None, Some(x)) if n.is_f64() => Ok(Value::Float(x)),
        _ => Err(loc.error(format!(
            "integer {n} is out of range (at most {})",
            i64::MAX
        ))),
    }
}

fn key_at(json: &Json, loc: &Loc) -> Result<Key, JsonGraphError> {
    match json {
        Json::String(s) => Ok(Key::Str(s.clone())),
        Json::Number(n) => match number(n, loc)? {
            Value::Int(i) => Ok(Key::Int(i)),
            _ => Err(not_a_key(json, loc)),
        },
        Json::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| key_at(part, &loc.then(Step::KeyPart(i + 1))))
            .collect::<Result<_, _>>()
            .map(Key::Tuple),
        other => Err(not_a_key(other, loc)),
    }
}

fn not_a_key(json: &Json, loc: &Loc) -> JsonGraphError {
    loc.error(format!(
        "expected a key (a string, an integer or an array of those), got {}",
        kind(json)
    ))
}

fn pair_from_json<'j>(json: &'j Json, loc: &Loc) -> Result<(&'j Json, &'j Json), JsonGraphError> {
    match json.as_array().map(Vec::as_slice) {
        Some([key, value]) => Ok((key, value)),
        Some(items) => Err(loc.error(format!(
            "expected a [key, value] pair, got an array of {} items",
            items.len()
        ))),
        None => Err(loc.error(format!("expected a [key, value] pair, got {}", kind(json)))),
    }
}

/// The name and body of a marker object, which has exactly one field.
fn marker_of<'j>(
    fields: &'j Map<String, Json>,
    loc: &Loc,
) -> Result<(&'j str, &'j Json), JsonGraphError> {
    let mut iter = fields.iter();
    match (iter.next(), iter.next()) {
        (Some((name, body)), None) => Ok((name, body)),
        (None, _) => Err(loc.error(format!(
            "empty object: objects are markers with one field, one of {MARKERS}"
        ))),
        (Some(_), Some(_)) => {
            let names: Vec<&String> = fields.keys().collect();
            Err(loc.error(format!(
                "object with {} fields {names:?}: objects are markers with one field, one of \
                 {MARKERS}",
                names.len()
            )))
        }
    }
}

fn node_from_json(json: &Json, loc: &Loc) -> Result<Node, JsonGraphError> {
    match json {
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| node_from_json(item, &loc.then(Step::Item(i + 1))))
            .collect::<Result<_, _>>()
            .map(Node::List),
        Json::Object(fields) => match marker_of(fields, loc)? {
            ("task", body) => task_from_json(body, loc),
            ("key", body) => key_at(body, loc).map(Node::Ref),
            (name, body) => literal_marker(name, body, loc).map(Node::Quoted),
        },
        // A scalar means the same here as in a literal; only strings differ, later, when they
        // are resolved against the graph's keys.
        scalar => literal_from_json(scalar, loc).map(Node::Value),
    }
}

fn task_from_json(body: &Json, loc: &Loc) -> Result<Node, JsonGraphError> {
    let Json::Array(items) = body else {
        return Err(loc.error(format!(
            "\"task\" must be an array, a function name then its arguments; got {}",
            kind(body)
        )));
    };
    let Some((function, args)) = items.split_first() else {
        return Err(loc.error("\"task\" is empty: it needs a function name then its arguments"));
    };
    let function = match function {
        Json::String(f) if !f.is_empty() => f,
        Json::String(_) => return Err(loc.error("the task's function name is empty")),
        other => {
            return Err(loc.error(format!(
                "the task's function name must be a string, got {}",
                kind(other)
            )))
        }
    };
    let args = args
        .iter()
        .enumerate()
        .map(|(i, arg)| node_from_json(arg, &loc.then(Step::Argument(i + 1))))
        .collect::<Result<_, _>>()?;
    Ok(Node::Task(function.clone(), args))
}

/// A value inside a literal map, where nothing is a reference.
fn literal_from_json(json: &Json, loc: &Loc) -> Result<Value, JsonGraphError> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => number(n, loc)?,
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(items) => Value::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| literal_from_json(item, &loc.then(Step::Item(i + 1))))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(fields) => {
            let (name, body) = marker_of(fields, loc)?;
            literal_marker(name, body, loc)?
        }
    })
}

/// The value of a `str`, `bytes` or `map` marker.
fn literal_marker(name: &str, body: &Json, loc: &Loc) -> Result<Value, JsonGraphError> {
    match (name, body) {
        ("str", Json::String(s)) => Ok(Value::Str(s.clone())),
        ("bytes", Json::String(b64)) => BASE64
            .decode(b64)
            .map(Value::Bytes)
            .map_err(|e| loc.error(format!("\"bytes\" is not valid standard base64: {e}"))),
        ("map", Json::Object(entries)) => entries
            .iter()
            .map(|(k, v)| {
                let value = literal_from_json(v, &loc.then(Step::MapEntry(k)))?;
                Ok((Value::Str(k.clone()), value))
            })
            .collect::<Result<_, _>>()
            .map(Value::Map),
        ("map", Json::Array(pairs)) => pairs
            .iter()
            .enumerate()
            .map(|(i, pair)| {
                let loc = loc.then(Step::MapPair(i + 1));
                let (k, v) = pair_from_json(pair, &loc)?;
                Ok((
                    literal_from_json(k, &loc.then(Step::Named("key")))?,
                    literal_from_json(v, &loc.then(Step::Named("value")))?,
                ))
            })
            .collect::<Result<_, _>>()
            .map(Value::Map),
        ("str", other) => Err(loc.error(format!("\"str\" must be a string, got {}", kind(other)))),
        ("bytes", other) => Err(loc.error(format!(
            "\"bytes\" must be a base64 string, got {}",
            kind(other)
        ))),
        ("map", other) => Err(loc.error(format!(
            "\"map\" must be an object or an array of [key, value] pairs, got {}",
            kind(other)
        ))),
        ("task" | "key", _) => Err(loc.error(format!(
            "a \"{name}\" marker cannot be inside a literal map, whose values are never evaluated"
        ))),
        (other, _) => Err(loc.error(format!(
            "unknown object marker {other:?} (expected one of {MARKERS})"
        ))),
    }
}
