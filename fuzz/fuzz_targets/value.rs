#![no_main]
//! The `value` decoder: see `zask_fuzz::checks::value` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::value(data);
});
