//! Decoding the committed fixtures (written by fixtures/make.py with CPython 3.11, protocols
//! 0-4), re-encoding them, and the samples quoted in legacy-protocol.md.

use std::fs;
use std::path::{Path, PathBuf};

use serde_pickle::{HashableValue, Value};
use zask_compat::pickle::{decode, encode, to_value, Node, NodeId, Opaque, Pickle, PickleError};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> Vec<u8> {
    fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pkl"))
        .collect();
    v.sort();
    assert!(v.len() > 100, "fixtures missing: {}", v.len());
    v.into_iter().map(|n| (n.clone(), fixture(&n))).collect()
}

/// The canonical rendering fixtures/make.py writes to `<case>.expect`.
fn canon(v: &Value) -> String {
    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
    fn seq(items: impl Iterator<Item = String>) -> String {
        items.map(|s| s + ",").collect()
    }
    fn sorted(mut items: Vec<String>) -> String {
        items.sort();
        seq(items.into_iter())
    }
    fn h(v: &HashableValue) -> String {
        canon(&v.clone().into_value())
    }
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::I64(i) => i.to_string(),
        Value::Int(i) => i.to_string(),
        Value::F64(f) => format!("f{}", hex(&f.to_be_bytes())),
        Value::String(s) => format!("s{}", hex(s.as_bytes())),
        Value::Bytes(b) => format!("b{}", hex(b)),
        Value::Tuple(v) => format!("({})", seq(v.iter().map(canon))),
        Value::List(v) => format!("[{}]", seq(v.iter().map(canon))),
        Value::Set(s) => format!("set{{{}}}", sorted(s.iter().map(h).collect())),
        Value::FrozenSet(s) => format!("frozenset{{{}}}", sorted(s.iter().map(h).collect())),
        Value::Dict(m) => format!(
            "{{{}}}",
            sorted(
                m.iter()
                    .map(|(k, v)| format!("{}:{}", h(k), canon(v)))
                    .collect()
            )
        ),
    }
}

fn decoded(name: &str) -> Pickle {
    decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn render(name: &str) -> String {
    let p = decoded(name);
    p.render(p.root)
}

#[test]
fn every_fixture_decodes_and_survives_re_encoding() {
    let out = std::env::var_os("ZASK_PICKLE_ROUNDTRIP_DIR").map(PathBuf::from);
    for (name, data) in all_fixtures() {
        let p = decode(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes = encode(&p, p.root).unwrap_or_else(|e| panic!("{name}: encode: {e}"));
        let q = decode(&bytes).unwrap_or_else(|e| panic!("{name}: re-decode: {e}"));
        assert!(
            p.isomorphic(p.root, &q, q.root),
            "{name}: {} != {}",
            p.render(p.root),
            q.render(q.root)
        );
        // Encoding is deterministic and a fixed point after one round.
        assert_eq!(encode(&q, q.root).unwrap(), bytes, "{name}");
        if let Some(dir) = &out {
            fs::create_dir_all(dir).unwrap();
            fs::write(dir.join(&name), &bytes).unwrap();
        }
    }
}

#[test]
fn plain_fixtures_convert_to_the_values_python_pickled() {
    let mut checked = 0;
    for (name, data) in all_fixtures() {
        let case = name.split('.').next().unwrap();
        let Ok(expect) = fs::read_to_string(dir().join(format!("{case}.expect"))) else {
            continue;
        };
        let p = decode(&data).unwrap();
        let v = to_value(&p, p.root, Opaque::Error).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(canon(&v), expect.trim_end(), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 12 * 5);
}

#[test]
fn a_tuple_used_as_key_and_argument_stays_one_node() {
    // legacy-protocol.md §7.2: k=('x',0); {k:1,'y':(add,k,k)} breaks serde_pickle.
    for proto in 0..5 {
        let p = decoded(&format!("shared_tuple_key.p{proto}.pkl"));
        let Some(Node::Dict(pairs)) = p.root_node() else {
            panic!("not a dict")
        };
        let k = pairs[0].0;
        assert_eq!(p.render(k), r#"("x", 0)"#);
        let task = p.tuple_of(pairs[1].1).unwrap();
        assert_eq!(task[1], k, "protocol {proto}");
        assert_eq!(task[2], k, "protocol {proto}");
        assert_eq!(
            p.get(task[0]),
            Some(&Node::Global {
                module: "_operator".into(),
                name: "add".into()
            })
        );
        assert_eq!(
            p.render(p.root),
            r#"{#0=("x", 0): 1, "y": (Global(_operator add), #0#, #0#)}"#
        );
    }
}

#[test]
fn recursive_structures_are_back_references() {
    for proto in 0..5 {
        assert_eq!(
            render(&format!("recursive_list.p{proto}.pkl")),
            "#0=[1, #0#]"
        );
        assert_eq!(
            render(&format!("recursive_dict.p{proto}.pkl")),
            r#"#0={"name": "d", "self": #0#}"#
        );
        assert_eq!(
            render(&format!("recursive_tuple.p{proto}.pkl")),
            "#0=([#0#], 2)"
        );
        assert_eq!(
            render(&format!("shared_list.p{proto}.pkl")),
            r#"[#0=[1, 2], #0#, {"a": #0#}]"#
        );
    }
    let p = decoded("recursive_instance.p4.pkl");
    assert_eq!(
        p.render(p.root),
        r#"#0=Build(NewObj(Global(__main__ Point), ()), {"x": 1, "y": #0#})"#
    );
    // A cycle is not plain data.
    let l = decoded("recursive_list.p2.pkl");
    assert!(matches!(
        to_value(&l, l.root, Opaque::AsNone),
        Err(PickleError::NotPlainData { what: "cycle", .. })
    ));
}

#[test]
fn instances_keep_their_class_and_state() {
    let reconstructor = r#"Build(Reduce(Global(copy_reg _reconstructor), (Global(__main__ Point), Global(__builtin__ object), None)), {"x": 1, "y": "two"})"#;
    assert_eq!(render("instance.p0.pkl"), reconstructor);
    assert_eq!(render("instance.p1.pkl"), reconstructor);
    let newobj = r#"Build(NewObj(Global(__main__ Point), ()), {"x": 1, "y": "two"})"#;
    for proto in 2..5 {
        assert_eq!(render(&format!("instance.p{proto}.pkl")), newobj);
    }
    assert_eq!(
        render("slotted.p4.pkl"),
        r#"Build(NewObj(Global(__main__ Slotted), ()), (None, {"a": 1, "b": [2]}))"#
    );
    assert_eq!(
        render("reduced.p3.pkl"),
        r#"Reduce(Global(__main__ Reduced), ("v",))"#
    );
    assert_eq!(
        render("kwnew.p4.pkl"),
        r#"Build(NewObj(Global(__main__ KwNew), (1,), {#0="b": 2}), {"a": 1, #0#: 2})"#
    );
    assert_eq!(
        render("my_list.p4.pkl"),
        r#"Build(Appends(NewObj(Global(__main__ MyList), ()); 1, 2, 3), {"tag": "t"})"#
    );
    assert_eq!(
        render("my_dict.p3.pkl"),
        r#"SetItems(NewObj(Global(__main__ MyDict), ()); "a": 1)"#
    );
    assert_eq!(
        render("exception.p3.pkl"),
        r#"Reduce(Global(builtins ZeroDivisionError), ("division by zero",))"#
    );
}

#[test]
fn globals_extensions_and_persistent_ids_are_opaque_nodes() {
    assert_eq!(
        render("globals.p3.pkl"),
        "[Global(_operator add), Global(builtins len), Global(__main__ Point), Global(_pickle loads)]"
    );
    assert_eq!(
        render("globals.p2.pkl"),
        "[Global(_operator add), Global(__builtin__ len), Global(__main__ Point), Global(pickle loads)]"
    );
    for proto in 2..5 {
        assert_eq!(
            render(&format!("ext.p{proto}.pkl")),
            format!("[Ext({}), Ext({}), Ext({})]", 0x42, 0x1234, 0x12345678)
        );
    }
    for proto in 0..5 {
        assert_eq!(
            render(&format!("persistent.p{proto}.pkl")),
            r#"["before", PersistentId("ext-42"), "after"]"#
        );
    }
}

#[test]
fn hand_assembled_protocol_0_opcodes() {
    assert_eq!(
        render("raw_inst.p0.pkl"),
        r#"Build(Reduce(Global(__main__ Point), ()), {"x": 1, "y": None})"#
    );
    assert_eq!(
        render("raw_obj.p0.pkl"),
        r#"Reduce(Global(__main__ Reduced), ("v",))"#
    );
    assert_eq!(render("raw_dup_pop.p0.pkl"), "[#0=7, #0#]");
    assert_eq!(
        render("raw_py2_strings.p0.pkl"),
        "(\"a\\nbA\", \"abc\", \"hi\", b\"\u{fffd}\")"
    );
    assert_eq!(
        render("raw_persid.p0.pkl"),
        r#"(PersistentId("ext-1"), 123456789012345678901234567890)"#
    );
    assert_eq!(render("raw_int_bools.p0.pkl"), "(True, False, -5, 2.5)");
}

#[test]
fn headers_keep_datetimes_and_dill_loads() {
    for proto in [3, 4] {
        let p = decoded(&format!("legacy_header.p{proto}.pkl"));
        let ts = p.dict_get(p.root, "timestamp").unwrap();
        let dt = p.datetime_of(ts).unwrap();
        assert_eq!((dt.year, dt.month, dt.day), (2026, 11, 25));
        assert_eq!(
            (dt.hour, dt.minute, dt.second, dt.microsecond),
            (15, 6, 24, 454878)
        );
        let loads = p.dict_get(p.root, "loads").unwrap();
        assert_eq!(
            p.get(loads),
            Some(&Node::Global {
                module: "dill._dill".into(),
                name: "loads".into()
            })
        );
        // serde_pickle's replace_unresolved_globals behaviour, without serde_pickle's decoder.
        let v = to_value(&p, p.root, Opaque::AsNone).unwrap();
        let Value::Dict(m) = v else { panic!() };
        assert_eq!(
            m.get(&HashableValue::String("function".into())),
            Some(&Value::String("schedule".into()))
        );
        assert_eq!(
            m.get(&HashableValue::String("loads".into())),
            Some(&Value::None)
        );
        assert!(to_value(&p, p.root, Opaque::Error).is_err());
    }
}

#[test]
fn samples_quoted_in_the_legacy_protocol_notes() {
    // §3.1: the status reply 'OK' and the empty payload {} (protocol 3).
    let ok = [0x80, 0x03, 0x58, 2, 0, 0, 0, b'O', b'K', 0x71, 0x00, 0x2e];
    let p = decode(&ok).unwrap();
    assert_eq!(p.root_node(), Some(&Node::Str("OK".into())));
    let empty = [0x80, 0x03, 0x7d, 0x71, 0x00, 0x2e];
    let p = decode(&empty).unwrap();
    assert_eq!(p.root_node(), Some(&Node::Dict(vec![])));

    // §7.1: how dill 0.3.4 writes operator.add (protocol 3 with BINPUTs).
    let mut b = vec![0x80, 3];
    b.extend(b"cdill._dill\n_get_attr\nq\x00");
    b.extend(b"cdill._dill\n_import_module\nq\x01");
    b.extend(b"X\x09\x00\x00\x00_operatorq\x02\x85q\x03Rq\x04");
    b.extend(b"X\x03\x00\x00\x00addq\x05\x86q\x06Rq\x07.");
    let p = decode(&b).unwrap();
    assert_eq!(
        p.render(p.root),
        r#"Reduce(Global(dill._dill _get_attr), (Reduce(Global(dill._dill _import_module), ("_operator",)), "add"))"#
    );
    let again = encode(&p, p.root).unwrap();
    let q = decode(&again).unwrap();
    assert!(p.isomorphic(p.root, &q, q.root));

    // §2: the timestamp GLOBAL datetime + SHORT_BINBYTES(10) + TUPLE1 + REDUCE.
    let mut t = vec![0x80, 3];
    t.extend(b"cdatetime\ndatetime\nq\x00C\x0a");
    t.extend([0x07, 0xea, 0x0b, 0x19, 0x0f, 0x06, 0x18, 0x06, 0xf0, 0xde]);
    t.extend(b"q\x01\x85q\x02Rq\x03.");
    let p = decode(&t).unwrap();
    let dt = p.datetime_of(p.root).unwrap();
    assert_eq!((dt.year, dt.microsecond), (2026, 454878));
}

#[test]
fn built_trees_encode_to_what_python_would_load() {
    // A reply payload {'keys': 'x', 'result': KeyError('x')} with a dill.loads-embedded blob.
    let mut p = Pickle::new();
    let exc = p.add_exception("builtins", "KeyError", "x");
    let inner = {
        let mut q = Pickle::new();
        q.root = q.add(Node::Int(5));
        encode(&q, q.root).unwrap()
    };
    let emb = p.add_embedded_pickle(inner.clone());
    let k1 = p.add(Node::Str("result".into()));
    let k2 = p.add(Node::Str("blob".into()));
    p.root = p.add(Node::Dict(vec![(k1, exc), (k2, emb)]));
    let bytes = encode(&p, p.root).unwrap();
    let q = decode(&bytes).unwrap();
    assert!(p.isomorphic(p.root, &q, q.root));
    assert_eq!(
        q.render(q.root),
        format!(
            r#"{{"result": Reduce(Global(builtins KeyError), ("x",)), "blob": Reduce(Global(dill loads), (b{:?},))}}"#,
            String::from_utf8_lossy(&inner)
        )
    );
    // Plain data from serde_pickle round-trips through the tree.
    let v = Value::Dict(
        [(
            HashableValue::Tuple(vec![
                HashableValue::String("x".into()),
                HashableValue::I64(0),
            ]),
            Value::List(vec![
                Value::F64(1.5),
                Value::Bytes(b"b".to_vec()),
                Value::None,
            ]),
        )]
        .into_iter()
        .collect(),
    );
    let t = Pickle::from_value(&v);
    let back = to_value(&t, t.root, Opaque::Error).unwrap();
    assert_eq!(back, v);
    let via_python_format = serde_pickle::value_from_slice(
        &encode(&t, t.root).unwrap(),
        serde_pickle::DeOptions::new(),
    )
    .unwrap();
    assert_eq!(via_python_format, v);
}

#[test]
fn trees_no_pickle_can_express_are_encoding_errors() {
    // A tuple that contains itself: no object exists before its contents.
    let mut p = Pickle::new();
    let t = p.add(Node::Tuple(vec![]));
    p.nodes[t.index()] = Node::Tuple(vec![t]);
    assert_eq!(
        encode(&p, t),
        Err(PickleError::UnencodableCycle { node: t.0 })
    );
    // The same cycle through a list is fine: the list exists first.
    let l = p.add(Node::List(vec![]));
    let u = p.add(Node::Tuple(vec![l]));
    p.nodes[l.index()] = Node::List(vec![u]);
    let q = decode(&encode(&p, u).unwrap()).unwrap();
    assert!(p.isomorphic(u, &q, q.root));
    assert_eq!(q.render(q.root), "#0=([#0#],)");
    // A dangling id.
    let bad = p.add(Node::List(vec![NodeId(999)]));
    assert_eq!(encode(&p, bad), Err(PickleError::InvalidNode { node: 999 }));
    assert_eq!(
        to_value(&p, bad, Opaque::AsNone),
        Err(PickleError::InvalidNode { node: 999 })
    );
}
