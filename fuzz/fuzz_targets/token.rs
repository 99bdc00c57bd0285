#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dtca_fuzzing::token::run(data));
