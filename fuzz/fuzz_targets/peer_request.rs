#![no_main]
//! The `peer_request` decoder: see `zask_fuzz::checks::peer_request` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::peer_request(data);
});
