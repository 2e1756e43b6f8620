//! Writing the JSON graph format (see the parent module): graphs as files, keys, and values as
//! the `zask` command prints them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Number, Value as Json};

use crate::graph::{Graph, Key, Node};
use crate::value::Value;

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
