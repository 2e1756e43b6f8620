//! The JSON graph format of the `zask` command (see README): parsing graphs, printing values.
//!
//! A graph file is a JSON object (`{"x": 1, "y": {"task": ["add", "x", 2]}}`) or, for keys that
//! are not strings, an array of `[key, value]` pairs (`[[["x", 1], 1], ["y", ...]]`). A key is a
//! string, an integer, or an array of keys (a tuple key such as `("x", 1)`).
//!
//! Values mirror what a Rust graph holds: `null`, booleans, integers (which must fit in `i64`),
//! other numbers (floats) and strings are literals, and a string naming a key is a reference to
//! it, as in dask; arrays are lists whose elements follow the same rules. Objects are reserved
//! for markers, each with exactly one field:
//!
//! - `{"task": [FUNCTION, ARGS...]}`: a task, `FUNCTION` being a non-empty string;
//! - `{"key": KEY}`: an explicit reference, e.g. to a tuple key;
//! - `{"str": "..."}`: a string that stays literal even if it names a key;
//! - `{"bytes": BASE64}`: raw bytes, in standard base64 with padding;
//! - `{"map": {...}}` or `{"map": [[K, V], ...]}`: a literal map (string keys, or any keys).
//!   Nothing inside a map is taken for a reference: its strings are plain strings, its nested
//!   maps and bytes use the markers above, and `task` and `key` markers are errors.
//!
//! Errors name where they are, e.g. `graph entry "y": argument 2: unknown object marker "foo"
//! (expected one of task, key, str, bytes, map)`; arguments, list items and pairs count from 1.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Number, Value as Json};

use super::{Graph, Key, Node};
use crate::value::Value;

const MARKERS: &str = "task, key, str, bytes, map";

/// A graph file that cannot be read, and where the problem is.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonGraphError {
    pub location: String,
    pub message: String,
}

impl fmt::Display for JsonGraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for JsonGraphError {}

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

/// How results are printed. `null`, booleans, numbers, strings and lists map naturally;
/// non-finite floats (NaN, infinities), which JSON cannot express, print as `null`; bytes print
/// as `{"bytes": BASE64}`; a map whose keys are distinct strings prints as a JSON object (its
/// names sorted), any other map as `{"map": [[KEY, VALUE], ...]}`, the form graph files use for
/// such maps. The output is for reading: a map such as `{"bytes": "AA=="}` prints the same as
/// the bytes `[0]`.
pub fn value_to_json(v: &Value) -> Json {
    value_json(v, Style::Output)
}

pub fn key_to_json(k: &Key) -> Json {
    match k {
        Key::Str(s) => Json::String(s.clone()),
        Key::Int(i) => Json::from(*i),
        Key::Tuple(parts) => Json::Array(parts.iter().map(key_to_json).collect()),
    }
}

/// Writes a graph in the file format: as an object when every key is a string and the keys are
/// in sorted order (the order serde_json objects keep), otherwise as an array of `[key, value]`
/// pairs, so that the order of entries survives; maps inside follow the same rule. Reading the
/// result back gives the same graph for any graph read from JSON. Graphs built in Rust read back
/// equivalent (they resolve to the same expressions), though not always equal: e.g. a list value
/// comes back as a list node, a quoted integer as a plain one. Non-finite floats become `null`.
pub fn graph_to_json(g: &Graph) -> Json {
    object_form(g.iter().map(|(k, n)| (k.as_str(), node_json(n))), true).map_or_else(
        || pairs_json(g.iter().map(|(k, n)| (key_to_json(k), node_json(n)))),
        Json::Object,
    )
}

// ---- reading ----

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

// ---- writing ----

/// Where a value is written, which decides how strings and maps look.
#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// A result for a reader: maps with string keys are plain objects.
    Output,
    /// A graph file, where a plain string means what its place says: a key name if it names a
    /// key, unless it is inside a literal map.
    Graph,
    /// A graph file, with strings marked so that they stay literal wherever they are.
    Quoted,
}

fn value_json(v: &Value, style: Style) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(x) => Number::from_f64(*x).map_or(Json::Null, Json::Number),
        Value::Str(s) if style == Style::Quoted => marker("str", Json::String(s.clone())),
        Value::Str(s) => Json::String(s.clone()),
        Value::Bytes(b) => marker("bytes", Json::String(BASE64.encode(b))),
        Value::List(items) => Json::Array(items.iter().map(|i| value_json(i, style)).collect()),
        Value::Map(entries) => map_json(entries, style),
    }
}

fn map_json(entries: &[(Value, Value)], style: Style) -> Json {
    // Nothing inside a literal map is taken for a key, so its strings need no marking.
    let inner = match style {
        Style::Quoted => Style::Graph,
        other => other,
    };
    // A graph file must read back to the same map, order included; a reader only needs every
    // entry.
    let keep_order = style != Style::Output;
    match object_form(
        entries
            .iter()
            .map(|(k, v)| (k.as_str(), value_json(v, inner))),
        keep_order,
    ) {
        Some(object) if style == Style::Output => Json::Object(object),
        Some(object) => marker("map", Json::Object(object)),
        None => marker(
            "map",
            pairs_json(
                entries
                    .iter()
                    .map(|(k, v)| (value_json(k, inner), value_json(v, inner))),
            ),
        ),
    }
}

fn node_json(n: &Node) -> Json {
    match n {
        Node::Value(v) => value_json(v, Style::Graph),
        Node::Quoted(v) => value_json(v, Style::Quoted),
        Node::List(items) => Json::Array(items.iter().map(node_json).collect()),
        Node::Ref(k) => marker("key", key_to_json(k)),
        Node::Task(function, args) => marker(
            "task",
            Json::Array(
                std::iter::once(Json::String(function.clone()))
                    .chain(args.iter().map(node_json))
                    .collect(),
            ),
        ),
    }
}

fn marker(name: &str, body: Json) -> Json {
    Json::Object(Map::from_iter([(name.to_owned(), body)]))
}

/// The entries as a JSON object, if every name is a string and the object keeps them all (and,
/// with `keep_order`, in their order: serde_json objects sort their names).
fn object_form<'a>(
    entries: impl Iterator<Item = (Option<&'a str>, Json)>,
    keep_order: bool,
) -> Option<Map<String, Json>> {
    let mut names = Vec::new();
    let object = entries
        .map(|(name, value)| {
            let name = name?;
            names.push(name);
            Some((name.to_owned(), value))
        })
        .collect::<Option<Map<_, _>>>()?;
    let faithful = object.len() == names.len()
        && (!keep_order || object.keys().map(String::as_str).eq(names.iter().copied()));
    faithful.then_some(object)
}

fn pairs_json(pairs: impl Iterator<Item = (Json, Json)>) -> Json {
    Json::Array(pairs.map(|(k, v)| Json::Array(vec![k, v])).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::graph::{key, literal, task};

    fn error(json: Json) -> String {
        graph_from_json(&json).unwrap_err().to_string()
    }

    #[test]
    fn the_seed_example_reads_like_the_graph_macro() {
        let g = parse_graph(r#"{"x": 1, "y": {"task": ["add", "x", 2]}}"#).unwrap();
        assert_eq!(g, crate::graph! { "x" => 1, "y" => ("add", "x", 2) });
    }

    #[test]
    fn pairs_allow_tuple_and_integer_keys() {
        let g = graph_from_json(&json!([
            [["x", 1], 1],
            [3, "three"],
            ["y", {"task": ["inc", {"key": ["x", 1]}]}],
        ]))
        .unwrap();
        let expected = crate::graph! {
            ("x", 1) => 1,
            Key::Int(3) => "three",
            "y" => ("inc", key(("x", 1))),
        };
        assert_eq!(g, expected);
    }

    #[test]
    fn every_marker_reads() {
        let g = graph_from_json(&json!({
            "k": {"key": [["a", 1], 2]},
            "s": {"str": "k"},
            "b": {"bytes": "AAH/"},
            "m": {"map": {"n": 1, "s": "k", "b": {"bytes": "AA=="}, "l": [1.5, null, true]}},
            "p": {"map": [[1, "one"], [{"str": "two"}, {"map": {}}]]},
        }))
        .unwrap();
        let tuple_key = Key::Tuple(vec![("a", 1).into(), Key::Int(2)]);
        let expected_map = Value::Map(vec![
            ("b".into(), Value::Bytes(vec![0])),
            (
                "l".into(),
                Value::List(vec![1.5.into(), Value::Null, true.into()]),
            ),
            ("n".into(), 1.into()),
            ("s".into(), "k".into()),
        ]);
        let pairs = Value::Map(vec![
            (1.into(), "one".into()),
            ("two".into(), Value::Map(vec![])),
        ]);
        assert_eq!(g.get(&"k".into()), Some(&Node::Ref(tuple_key)));
        assert_eq!(g.get(&"s".into()), Some(&literal("k")));
        assert_eq!(
            g.get(&"b".into()),
            Some(&Node::Quoted(Value::Bytes(vec![0, 1, 255])))
        );
        assert_eq!(g.get(&"m".into()), Some(&Node::Quoted(expected_map)));
        assert_eq!(g.get(&"p".into()), Some(&Node::Quoted(pairs)));
    }

    #[test]
    fn scalars_nested_tasks_and_lists_read() {
        let g = graph_from_json(&json!({
            "v": [null, false, -7, 2.5, "x", [1, {"task": ["f"]}]],
            "t": {"task": ["sum", ["x", {"task": ["inc", {"task": ["inc", 1]}]}], {"str": "x"}]},
        }))
        .unwrap();
        let v = Node::List(vec![
            ().into(),
            false.into(),
            (-7).into(),
            2.5.into(),
            "x".into(),
            Node::List(vec![1.into(), task("f", [])]),
        ]);
        let t = task(
            "sum",
            [
                Node::List(vec!["x".into(), ("inc", ("inc", 1)).into()]),
                literal("x"),
            ],
        );
        assert_eq!(g, crate::graph! { "t" => t, "v" => v });
    }

    #[test]
    fn errors_name_where_they_are() {
        let cases = [
            (
                json!({"y": {"task": ["add", "x", {"foo": 1}]}}),
                "graph entry \"y\": argument 2: unknown object marker \"foo\" \
                 (expected one of task, key, str, bytes, map)",
            ),
            (
                json!({"y": [1, {}]}),
                "graph entry \"y\": list item 2: empty object: objects are markers with one \
                 field, one of task, key, str, bytes, map",
            ),
            (
                json!({"y": {"str": "a", "key": "b"}}),
                "graph entry \"y\": object with 2 fields [\"key\", \"str\"]: objects are markers \
                 with one field, one of task, key, str, bytes, map",
            ),
            (
                json!({"y": {"task": []}}),
                "graph entry \"y\": \"task\" is empty: it needs a function name then its arguments",
            ),
            (
                json!({"y": {"task": [3, 4]}}),
                "graph entry \"y\": the task's function name must be a string, got an integer",
            ),
            (
                json!({"y": {"task": [""]}}),
                "graph entry \"y\": the task's function name is empty",
            ),
            (
                json!({"y": {"task": "inc"}}),
                "graph entry \"y\": \"task\" must be an array, a function name then its \
                 arguments; got a string",
            ),
            (
                json!({"y": {"task": ["f", {"bytes": "not base64!"}]}}),
                "graph entry \"y\": argument 1: \"bytes\" is not valid standard base64: \
                 Invalid symbol 32, offset 3.",
            ),
            (
                json!({"y": {"bytes": 1}}),
                "graph entry \"y\": \"bytes\" must be a base64 string, got an integer",
            ),
            (
                json!({"y": {"str": null}}),
                "graph entry \"y\": \"str\" must be a string, got null",
            ),
            (
                json!({"y": {"key": ["x", 1.5]}}),
                "graph entry \"y\": key part 2: expected a key (a string, an integer or an array \
                 of those), got a float",
            ),
            (
                json!({"y": [{"task": ["f", 18446744073709551615u64]}]}),
                "graph entry \"y\": list item 1: argument 1: integer 18446744073709551615 is out \
                 of range (at most 9223372036854775807)",
            ),
            (
                json!({"y": {"map": {"a": [{"task": ["f"]}]}}}),
                "graph entry \"y\": map entry \"a\": list item 1: a \"task\" marker cannot be \
                 inside a literal map, whose values are never evaluated",
            ),
            (
                json!({"y": {"map": [[1, 2], [3]]}}),
                "graph entry \"y\": map pair 2: expected a [key, value] pair, got an array of 1 \
                 items",
            ),
            (
                json!({"y": {"map": [[{"key": "x"}, 2]]}}),
                "graph entry \"y\": map pair 1: key: a \"key\" marker cannot be inside a literal \
                 map, whose values are never evaluated",
            ),
            (
                json!({"y": {"map": "a"}}),
                "graph entry \"y\": \"map\" must be an object or an array of [key, value] pairs, \
                 got a string",
            ),
            (
                json!([["x", 1], "y"]),
                "graph pair 2: expected a [key, value] pair, got a string",
            ),
            (
                json!([[{"a": 1}, 1]]),
                "graph pair 1: key: expected a key (a string, an integer or an array of those), \
                 got an object",
            ),
            (
                json!([[["x", 1], 1], [["x", 1], 2]]),
                "graph pair 2: key ('x', 1) is given twice",
            ),
            (
                json!([[["x", 1], {"foo": 1}]]),
                "graph entry ('x', 1): unknown object marker \"foo\" \
                 (expected one of task, key, str, bytes, map)",
            ),
            (
                json!("x"),
                "graph: expected an object or an array of [key, value] pairs, got a string",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(error(json), expected);
        }
    }

    #[test]
    fn invalid_json_is_located_by_line_and_column() {
        let err = parse_graph("{\"x\": 1,\n \"y\": }").unwrap_err();
        assert_eq!(err.location, "line 2, column 7");
        assert_eq!(err.message, "invalid JSON: expected value");
    }

    #[test]
    fn keys_read_from_json_and_command_line_arguments() {
        assert_eq!(
            key_from_json(&json!(["x", [1, "y"]])),
            Ok(("x", (1, "y")).into())
        );
        assert_eq!(key_from_json(&json!(-4)), Ok(Key::Int(-4)));
        assert_eq!(
            key_from_json(&json!(null)).unwrap_err().to_string(),
            "key: expected a key (a string, an integer or an array of those), got null"
        );
        assert_eq!(parse_key_arg("y"), Key::from("y"));
        assert_eq!(parse_key_arg("[\"x\", 1]"), Key::from(("x", 1)));
        assert_eq!(parse_key_arg("3"), Key::from("3"));
        assert_eq!(parse_key_arg("[oops"), Key::from("[oops"));
        assert_eq!(parse_key_arg("[1.5]"), Key::from("[1.5]"));
        let k = Key::from(("x", (1, "y")));
        assert_eq!(key_from_json(&key_to_json(&k)), Ok(k));
    }

    #[test]
    fn values_print_naturally() {
        let v = Value::List(vec![
            Value::Null,
            true.into(),
            (-3).into(),
            0.5.into(),
            f64::NAN.into(),
            f64::INFINITY.into(),
            "s".into(),
            Value::Bytes(vec![0, 1, 255]),
            Value::map([("b", Value::from(1)), ("a", Value::from(2))]),
            Value::Map(vec![(1.into(), "one".into()), ("two".into(), 2.into())]),
            Value::Map(vec![("d".into(), 1.into()), ("d".into(), 2.into())]),
        ]);
        assert_eq!(
            value_to_json(&v),
            json!([
                null,
                true,
                -3,
                0.5,
                null,
                null,
                "s",
                {"bytes": "AAH/"},
                {"a": 2, "b": 1},
                {"map": [[1, "one"], ["two", 2]]},
                {"map": [["d", 1], ["d", 2]]},
            ])
        );
    }

    #[test]
    fn graphs_read_from_json_round_trip() {
        let files = [
            json!({"x": 1, "y": {"task": ["add", "x", 2]}}),
            json!({
                "a": [null, true, 1.5, "x", [{"str": "x"}, {"key": ["x", 1]}]],
                "b": {"task": ["f", {"task": ["g"]}, {"bytes": "AAH/"}]},
                "m": {"map": {"b": {"bytes": ""}, "l": ["x"], "m": {"map": [[1, 2]]}}},
                "u": {"map": [["b", 1], ["a", 2]]},
            }),
            json!([["b", 1], ["a", {"task": ["inc", "b"]}]]),
            json!([[["x", 1], 1], [2, {"key": ["x", 1]}]]),
        ];
        for file in files {
            let g = graph_from_json(&file).unwrap();
            let printed = graph_to_json(&g);
            assert_eq!(printed, file);
            assert_eq!(graph_from_json(&printed), Ok(g));
        }
    }

    #[test]
    fn graphs_built_in_rust_print_readably() {
        let g = crate::graph! {
            "x" => Value::List(vec!["a".into(), Value::Bytes(vec![1])]),
            "q" => literal(vec!["x"]),
            "n" => literal(Value::map([("x", Value::from("x"))])),
        };
        assert_eq!(
            graph_to_json(&g),
            json!([
                ["x", ["a", {"bytes": "AQ=="}]],
                ["q", [{"str": "x"}]],
                ["n", {"map": {"x": "x"}}],
            ])
        );
    }
}
