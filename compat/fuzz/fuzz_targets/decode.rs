#![no_main]
//! Decodes arbitrary bytes under small limits; whatever decodes must re-encode to a graph that
//! decodes the same (the property tests/pickle_fuzz.rs checks on seeded inputs).

use libfuzzer_sys::fuzz_target;
use zask_compat::pickle::{decode_with, encode_with, Limits, PickleError};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_input_bytes: 1 << 20,
        max_nodes: 50_000,
        max_depth: 100,
        max_memo: 10_000,
        max_alloc: 1 << 16,
        max_int_digits: 300,
    };
    let Ok((p, _)) = decode_with(data, &limits) else {
        return;
    };
    match encode_with(&p, p.root, &limits) {
        Ok(bytes) => {
            let big = Limits {
                max_depth: 10_000,
                ..limits
            };
            let (q, _) = decode_with(&bytes, &big).expect("re-encoded pickle decodes");
            assert!(p.isomorphic(p.root, &q, q.root));
        }
        Err(PickleError::TooDeep { .. }) | Err(PickleError::UnencodableCycle { .. }) => {}
        Err(e) => panic!("unexpected encode error {e}"),
    }
});
