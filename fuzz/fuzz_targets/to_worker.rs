#![no_main]
//! The `to_worker` decoder: see `zask_fuzz::checks::to_worker` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::to_worker(data);
});
