//! cargo-fuzz target: see fuzz/src/checks.rs (`config_parse`) and docs/fuzzing.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    termphone_fuzz::config_parse(data);
});
