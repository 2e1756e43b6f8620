#![no_main]
//! The `legacy_message` decoder: see `zask_fuzz::checks::legacy_message` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::legacy_message(data);
});
