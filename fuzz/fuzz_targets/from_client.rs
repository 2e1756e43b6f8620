#![no_main]
//! The `from_client` decoder: see `zask_fuzz::checks::from_client` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::from_client(data);
});
