#![no_main]
//! The `peer_reply` decoder: see `zask_fuzz::checks::peer_reply` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::peer_reply(data);
});
