#![no_main]
//! The `pickle` decoder: see `zask_fuzz::checks::pickle` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::pickle(data);
});
