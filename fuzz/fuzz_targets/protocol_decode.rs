//! cargo-fuzz target: see fuzz/src/checks.rs (`protocol_decode`) and docs/fuzzing.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    termphone_fuzz::protocol_decode(data);
});
