//! Deterministic mutation fuzzing of the decoder (and of the encoder on whatever decodes):
//! seeded bit flips, truncations, splices, random opcode streams, huge length prefixes and deep
//! nesting over the committed fixtures. Every input must give a value or a typed error, never a
//! panic, within the limits; whatever decodes must re-encode to a graph that decodes the same.

use std::fs;
use std::path::Path;

use zask_compat::pickle::{
    decode_with, encode_with, ops, to_value_with, Limit, Limits, Node, Opaque, Pickle, PickleError,
};

/// xorshift64*: a small, seeded, dependency-free generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The seed and the number of inputs: fixed for CI; `ZASK_FUZZ_SEED` / `ZASK_FUZZ_ITERS`
/// override them for longer local runs.
fn seed_and_count(seed: u64, count: usize) -> (u64, usize) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    (
        env("ZASK_FUZZ_SEED").unwrap_or(seed),
        env("ZASK_FUZZ_ITERS").map_or(count, |n: u64| n as usize),
    )
}

fn limits() -> Limits {
    Limits {
        max_input_bytes: 1 << 20,
        max_nodes: 50_000,
        max_depth: 100,
        max_memo: 10_000,
        max_alloc: 1 << 16,
        max_int_digits: 300,
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pkl"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| fs::read(p).unwrap())
        // The biggest fixtures only slow the loop down; their opcodes are in smaller ones too.
        .filter(|d| d.len() < 4096)
        .collect()
}

/// Opcodes with a plausible operand, for random opcode streams and insertions.
fn random_op(rng: &mut Rng, out: &mut Vec<u8>) {
    const NO_ARG: &[u8] = &[
        ops::MARK,
        ops::STOP,
        ops::POP,
        ops::POP_MARK,
        ops::DUP,
        ops::NONE,
        ops::NEWTRUE,
        ops::NEWFALSE,
        ops::REDUCE,
        ops::APPEND,
        ops::APPENDS,
        ops::BUILD,
        ops::DICT,
        ops::EMPTY_DICT,
        ops::LIST,
        ops::EMPTY_LIST,
        ops::OBJ,
        ops::SETITEM,
        ops::SETITEMS,
        ops::TUPLE,
        ops::EMPTY_TUPLE,
        ops::TUPLE1,
        ops::TUPLE2,
        ops::TUPLE3,
        ops::NEWOBJ,
        ops::NEWOBJ_EX,
        ops::EMPTY_SET,
        ops::ADDITEMS,
        ops::FROZENSET,
        ops::STACK_GLOBAL,
        ops::MEMOIZE,
        ops::BINPERSID,
    ];
    match rng.below(12) {
        0..=5 => out.push(NO_ARG[rng.below(NO_ARG.len())]),
        6 => out.extend([ops::BININT1, rng.byte()]),
        7 => out.extend([ops::BINGET, rng.byte() % 8]),
        8 => out.extend([ops::BINPUT, rng.byte() % 8]),
        9 => out.extend([ops::SHORT_BINUNICODE, 1, b'a' + rng.byte() % 26]),
        10 => out.extend(b"cmod\nname\n"),
        _ => out.extend([ops::SHORT_BINBYTES, 2, rng.byte(), rng.byte()]),
    }
}

/// A length-prefixed opcode claiming far more data than there is.
fn huge_prefix(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    match rng.below(8) {
        0 => v.extend([ops::BINUNICODE, 0xff, 0xff, 0xff, 0xff]),
        1 => {
            v.push(ops::BINBYTES8);
            v.extend(u64::MAX.to_le_bytes());
        }
        2 => {
            v.push(ops::BINUNICODE8);
            v.extend((1u64 << 40).to_le_bytes());
        }
        3 => v.extend([ops::LONG4, 0xff, 0xff, 0xff, 0x7f]),
        4 => v.extend([ops::BINSTRING, 0x00, 0x00, 0x00, 0x40]),
        5 => {
            v.push(ops::FRAME);
            v.extend(u64::MAX.to_le_bytes());
        }
        6 => v.extend([ops::BINBYTES, 0x00, 0x00, 0x01, 0x00]),
        _ => {
            v.push(ops::LONG_BINPUT);
            v.extend(u32::MAX.to_le_bytes());
        }
    }
    v
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut d = corpus[rng.below(corpus.len())].clone();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let at = rng.below(d.len() + 1);
        match rng.below(9) {
            0 | 1 => {
                if !d.is_empty() {
                    let i = rng.below(d.len());
                    d[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                if !d.is_empty() {
                    let i = rng.below(d.len());
                    d[i] = rng.byte();
                }
            }
            3 => d.truncate(at),
            4 => {
                let mut ins = Vec::new();
                for _ in 0..1 + rng.below(6) {
                    random_op(rng, &mut ins);
                }
                d.splice(at..at, ins);
            }
            5 => {
                let ins = huge_prefix(rng);
                d.splice(at..at, ins);
            }
            6 => {
                // splice a piece of another fixture
                let o = &corpus[rng.below(corpus.len())];
                let s = rng.below(o.len());
                let e = s + rng.below(o.len() - s + 1);
                d.splice(at..at, o[s..e].iter().copied());
            }
            7 => {
                if !d.is_empty() {
                    let s = rng.below(d.len());
                    let e = (s + rng.below(16)).min(d.len());
                    d.drain(s..e);
                }
            }
            _ => {
                let n = rng.below(d.len() + 1);
                let i = rng.below(d.len().saturating_sub(n) + 1);
                let dup = d[i..i + n].to_vec();
                d.splice(at..at, dup);
            }
        }
    }
    d
}

fn random_stream(rng: &mut Rng) -> Vec<u8> {
    let mut d = vec![ops::PROTO, rng.byte() % 6];
    for _ in 0..rng.below(200) {
        random_op(rng, &mut d);
    }
    d.push(ops::STOP);
    d
}

/// Checks one input; returns whether it decoded.
fn check(data: &[u8], limits: &Limits) -> bool {
    let (p, used) = match decode_with(data, limits) {
        Ok(r) => r,
        Err(e) => {
            // Every error renders, and names a position inside the input.
            let _ = e.to_string();
            assert!(!e.retry_may_help());
            return false;
        }
    };
    assert!(used <= data.len());
    assert!(p.nodes.len() <= limits.max_nodes);
    assert!(
        p.nodes.len() <= 3 * used,
        "{} nodes from {used} bytes",
        p.nodes.len()
    );
    assert!(p.get(p.root).is_some());
    let _ = to_value_with(&p, p.root, Opaque::AsNone, limits);
    let _ = p.render(p.root);
    match encode_with(&p, p.root, limits) {
        Ok(bytes) => {
            assert!(
                bytes.len() <= 16 * used + 16,
                "{} bytes encoded from {used}",
                bytes.len()
            );
            let big = Limits {
                max_depth: 10_000,
                ..limits.clone()
            };
            let (q, _) = decode_with(&bytes, &big)
                .unwrap_or_else(|e| panic!("re-decode failed: {e} for input {data:02x?}"));
            assert!(
                p.isomorphic(p.root, &q, q.root),
                "re-encoding changed the graph for input {data:02x?}: {} vs {}",
                p.render(p.root),
                q.render(q.root)
            );
        }
        Err(PickleError::TooDeep { .. }) | Err(PickleError::UnencodableCycle { .. }) => {}
        Err(e) => panic!("unexpected encode error {e} for input {data:02x?}"),
    }
    true
}

#[test]
fn mutated_fixtures_never_panic_and_re_encode_faithfully() {
    let corpus = corpus();
    let limits = limits();
    let (seed, n) = seed_and_count(0x5eed_1234_abcd_0001, 100_000);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut ok = 0;
    for _ in 0..n {
        let d = mutate(&mut rng, &corpus);
        ok += usize::from(check(&d, &limits));
    }
    eprintln!("{ok} of {n} mutated inputs decoded");
    // The mutations must leave a fair share decodable, or the encoder side is not exercised.
    assert!(ok > n / 50, "only {ok} of {n} mutated inputs decoded");
}

#[test]
fn random_opcode_streams_never_panic() {
    let limits = limits();
    let (seed, n) = seed_and_count(0x0bad_cafe_f00d_0002, 100_000);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut ok = 0;
    for _ in 0..n {
        let d = random_stream(&mut rng);
        ok += usize::from(check(&d, &limits));
    }
    eprintln!("{ok} of {n} random streams decoded");
    assert!(ok > 0, "no random stream decoded");
}

#[test]
fn every_truncation_of_every_small_fixture_is_an_error() {
    let limits = limits();
    let mut count = 0;
    for d in corpus().iter().filter(|d| d.len() < 600) {
        for cut in 0..d.len() - 1 {
            // Only a cut right after a STOP could decode; fixtures have one STOP, at the end.
            assert!(decode_with(&d[..cut], &limits).is_err());
            count += 1;
        }
    }
    assert!(count > 5000, "{count}");
}

#[test]
fn huge_length_prefixes_fail_before_allocating() {
    let limits = Limits::default();
    let cases: Vec<(Vec<u8>, Limit)> = vec![
        (
            [ops::BINBYTES8]
                .into_iter()
                .chain(u64::MAX.to_le_bytes())
                .collect(),
            Limit::Alloc,
        ),
        (
            [ops::BINUNICODE8]
                .into_iter()
                .chain((1u64 << 40).to_le_bytes())
                .collect(),
            Limit::Alloc,
        ),
        (vec![ops::BINUNICODE, 0xff, 0xff, 0xff, 0xff], Limit::Alloc),
    ];
    for (d, limit) in cases {
        assert!(matches!(
            decode_with(&d, &limits),
            Err(PickleError::LimitExceeded { limit: l, .. }) if l == limit
        ));
    }
    // Under the allocation limit but beyond the input: truncated, nothing allocated.
    let d = [ops::BINBYTES, 0, 0, 0, 1];
    assert!(matches!(
        decode_with(&d, &limits),
        Err(PickleError::Truncated { .. })
    ));
    let d = [ops::LONG4, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        decode_with(&d, &limits),
        Err(PickleError::Malformed { .. })
    ));
    // A text integer with more digits than allowed.
    let mut d = b"I".to_vec();
    d.extend(std::iter::repeat_n(b'9', 5000));
    d.extend(b"\n.");
    assert!(matches!(
        decode_with(&d, &limits),
        Err(PickleError::LimitExceeded {
            limit: Limit::IntDigits,
            ..
        })
    ));
    // A memo index far beyond the memo: no table of that size is made.
    let d = [
        ops::NONE,
        ops::LONG_BINPUT,
        0xff,
        0xff,
        0xff,
        0xff,
        ops::STOP,
    ];
    assert!(decode_with(&d, &limits).is_ok());
    // More input than allowed at all.
    let small = Limits {
        max_input_bytes: 4,
        ..Limits::default()
    };
    assert!(matches!(
        decode_with(b"N....", &small),
        Err(PickleError::LimitExceeded {
            limit: Limit::InputBytes,
            ..
        })
    ));
}

#[test]
fn deep_nesting_is_refused_not_overflowing() {
    let limits = Limits::default();
    let depth_err = |d: &[u8]| {
        matches!(
            decode_with(d, &limits),
            Err(PickleError::LimitExceeded {
                limit: Limit::Depth,
                ..
            })
        )
    };
    // A million MARKs.
    assert!(depth_err(&vec![ops::MARK; 1_000_000]));
    // Tuples nested 100 000 deep.
    let mut d = vec![ops::NONE];
    d.extend(std::iter::repeat_n(ops::TUPLE1, 100_000));
    d.push(ops::STOP);
    assert!(depth_err(&d));
    // Lists nested through the memo: each new list holds the previous one.
    let mut d = vec![ops::EMPTY_LIST, ops::BINPUT, 0];
    for _ in 0..100_000 {
        d.extend([ops::EMPTY_LIST, ops::BINGET, 0, ops::APPEND, ops::BINPUT, 0]);
    }
    d.push(ops::STOP);
    assert!(depth_err(&d));
    // Just under the limit decodes, encodes (in a test thread's stack) and decodes again.
    let mut d = vec![ops::NONE];
    d.extend(std::iter::repeat_n(ops::TUPLE1, limits.max_depth));
    d.push(ops::STOP);
    let (p, _) = decode_with(&d, &limits).unwrap();
    let bytes = encode_with(&p, p.root, &limits).unwrap();
    let (q, _) = decode_with(&bytes, &limits).unwrap();
    assert!(p.isomorphic(p.root, &q, q.root));
    // A built tree deeper than the limit is refused by the encoder.
    let mut t = Pickle::new();
    let mut id = t.add(Node::None);
    for _ in 0..5000 {
        id = t.add(Node::List(vec![id]));
    }
    assert!(matches!(
        encode_with(&t, id, &limits),
        Err(PickleError::TooDeep { .. })
    ));
    assert!(to_value_with(&t, id, Opaque::Error, &limits).is_err());
}

#[test]
fn protocol_5_is_refused_clearly() {
    let limits = Limits::default();
    for d in [
        vec![ops::PROTO, 5, ops::NONE, ops::STOP],
        vec![
            ops::PROTO,
            4,
            ops::BYTEARRAY8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            ops::STOP,
        ],
        vec![ops::PROTO, 4, ops::NEXT_BUFFER, ops::STOP],
        vec![ops::PROTO, 4, ops::READONLY_BUFFER, ops::STOP],
    ] {
        let e = decode_with(&d, &limits).unwrap_err();
        assert!(matches!(e, PickleError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("unsupported"));
    }
    let e = decode_with(&[0xff], &limits).unwrap_err();
    assert!(matches!(e, PickleError::UnknownOpcode { .. }));
    assert_eq!(
        e.to_string(),
        "unknown pickle opcode at byte 0 (opcode 0xff unknown)"
    );
}
