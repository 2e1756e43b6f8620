#![no_main]
//! The `to_client` decoder: see `zask_fuzz::checks::to_client` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::to_client(data);
});
