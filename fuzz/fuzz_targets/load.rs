//! Arbitrary bytes as a whole checkpoint file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| fulgur_fuzz::check_decode(file));
