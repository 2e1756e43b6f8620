#![no_main]
//! The `from_worker` decoder: see `zask_fuzz::checks::from_worker` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::from_worker(data);
});
