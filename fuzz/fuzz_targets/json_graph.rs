#![no_main]
//! The `json_graph` decoder: see `zask_fuzz::checks::json_graph` for what must hold.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zask_fuzz::checks::json_graph(data);
});
